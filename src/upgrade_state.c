/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The framing of the state one parent image hands the next
 * (upgrade_state.h): written into memory, then into a sealed memfd; read
 * back whole and checked, record by record, against the reader's table.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pyrelayd.h"
#include "upgrade_state.h"

#define USTATE_ALIGN(n)	(((n) + 7) & ~(size_t)7)

static void
ustate_grow(struct ustate *us, size_t more)
{
	size_t	cap = us->cap ? us->cap : 65536;

	if (more > USTATE_MAX || us->len + more > USTATE_MAX)
		fatalx("upgrade: the state is over %lu bytes", USTATE_MAX);
	while (cap < us->len + more)
		cap *= 2;
	if (cap != us->cap) {
		us->buf = xreallocarray(us->buf, 1, cap);
		us->cap = cap;
	}
}

void
ustate_init(struct ustate *us)
{
	struct ustate_head	head;

	memset(us, 0, sizeof(*us));
	memset(&head, 0, sizeof(head));
	ustate_grow(us, sizeof(head));
	memcpy(us->buf, &head, sizeof(head));
	us->len = sizeof(head);
}

void
ustate_add(struct ustate *us, uint32_t type, const void *body, size_t len,
    const void *tail, size_t tlen)
{
	struct ustate_rec	rec;
	size_t			n = len + tlen;

	if (n > UINT32_MAX)
		fatalx("upgrade: a record of %zu bytes", n);
	ustate_grow(us, sizeof(rec) + USTATE_ALIGN(n));
	rec.type = type;
	rec.len = (uint32_t)n;
	memcpy(us->buf + us->len, &rec, sizeof(rec));
	us->len += sizeof(rec);
	/* NULL + 0 is undefined behaviour, memcpy's too */
	if (len > 0)
		memcpy(us->buf + us->len, body, len);
	if (tlen > 0)
		memcpy(us->buf + us->len + len, tail, tlen);
	memset(us->buf + us->len + n, 0, USTATE_ALIGN(n) - n);
	us->len += USTATE_ALIGN(n);
	us->records++;
}

void
ustate_keep(struct ustate *us, int fd)
{
	if (us->nfds == us->fdcap) {
		us->fdcap = us->fdcap ? us->fdcap * 2 : 256;
		us->fds = xreallocarray(us->fds, us->fdcap, sizeof(*us->fds));
	}
	us->fds[us->nfds++] = fd;
}

int
ustate_cloexec(const struct ustate *us, int on)
{
	size_t	i;
	int	rv = 0;

	for (i = 0; i < us->nfds; i++)
		if (fcntl(us->fds[i], F_SETFD, on ? FD_CLOEXEC : 0) == -1)
			rv = -1;
	return rv;
}

int
ustate_memfd(struct ustate *us)
{
	struct ustate_head	head;
	size_t			off = 0;
	ssize_t			n;
	int			fd, saved;

	memset(&head, 0, sizeof(head));
	memcpy(head.magic, USTATE_MAGIC, sizeof(USTATE_MAGIC));
	head.format = USTATE_FORMAT;
	head.records = us->records;
	head.length = us->len;
	memcpy(us->buf, &head, sizeof(head));
	if ((fd = memfd_create("pyrelayd-state", MFD_CLOEXEC |
	    MFD_ALLOW_SEALING)) == -1)
		return -1;
	while (off < us->len) {
		if ((n = write(fd, us->buf + off, us->len - off)) == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += (size_t)n;
	}
	/* read only from now on: the image that reads it cannot change it */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
	    F_SEAL_SEAL) == -1)
		goto fail;
	return fd;
 fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

void
ustate_free(struct ustate *us)
{
	free(us->buf);
	free(us->fds);
	memset(us, 0, sizeof(*us));
}

int
ustate_read(int fd, uint32_t oldest, struct ustate_reader *rd,
    const char **why)
{
	struct ustate_head	head;
	struct stat		st;
	size_t			off = 0;
	ssize_t			n;

	memset(rd, 0, sizeof(*rd));
	if (fstat(fd, &st) == -1) {
		*why = "the state's fd is not open";
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(head) ||
	    (uint64_t)st.st_size > USTATE_MAX) {
		*why = "the state's fd is not a state";
		return -1;
	}
	rd->len = (size_t)st.st_size;
	rd->buf = xmalloc(rd->len);
	while (off < rd->len) {
		n = pread(fd, rd->buf + off, rd->len - off, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			*why = "the state cannot be read";
			return -1;
		}
		off += (size_t)n;
	}
	memcpy(&head, rd->buf, sizeof(head));
	if (memcmp(head.magic, USTATE_MAGIC, sizeof(USTATE_MAGIC)) != 0) {
		*why = "the state has no magic";
		return -1;
	}
	if (head.format < oldest || head.format > USTATE_FORMAT) {
		static char	whybuf[96];

		snprintf(whybuf, sizeof(whybuf), "the state is of format %u; "
		    "this program reads %u to %u", head.format, oldest,
		    USTATE_FORMAT);
		*why = whybuf;
		return -1;
	}
	if (head.length != rd->len) {
		*why = "the state's length is not its file's";
		return -1;
	}
	rd->format = head.format;
	rd->left = head.records;
	rd->off = sizeof(head);
	return 0;
}

void
ustate_reader_rules(struct ustate_reader *rd, const struct ustate_rule *rules,
    size_t nrules)
{
	rd->rules = rules;
	rd->nrules = nrules;
}

int
ustate_next(struct ustate_reader *rd, uint32_t *type, void *body,
    size_t bodysize, const unsigned char **tail, size_t *tlen,
    const char **why)
{
	static char		 whybuf[128];
	struct ustate_rec	 rec;
	const struct ustate_rule *rule = NULL;
	size_t			 i;

	if (rd->left == 0) {
		if (rd->off != rd->len) {
			*why = "bytes after the last record";
			return -1;
		}
		return 0;
	}
	if (rd->len - rd->off < sizeof(rec)) {
		*why = "the state ends inside a record";
		return -1;
	}
	memcpy(&rec, rd->buf + rd->off, sizeof(rec));
	rd->off += sizeof(rec);
	if (rec.len > rd->len - rd->off ||
	    USTATE_ALIGN(rec.len) > rd->len - rd->off) {
		*why = "the state ends inside a record";
		return -1;
	}
	for (i = 0; i < rd->nrules; i++)
		if (rd->rules[i].type == rec.type)
			rule = &rd->rules[i];
	if (rule == NULL) {
		snprintf(whybuf, sizeof(whybuf), "a record of type %u, which "
		    "this program does not know", rec.type);
		*why = whybuf;
		return -1;
	}
	if (rule->len > bodysize || rec.len < rule->len ||
	    (!rule->tail && rec.len != rule->len)) {
		snprintf(whybuf, sizeof(whybuf), "a record of type %u and %u "
		    "bytes, where this program has %u", rec.type, rec.len,
		    rule->len);
		*why = whybuf;
		return -1;
	}
	memset(body, 0, bodysize);
	memcpy(body, rd->buf + rd->off, rule->len);
	*type = rec.type;
	*tail = rd->buf + rd->off + rule->len;
	*tlen = rec.len - rule->len;
	rd->off += USTATE_ALIGN(rec.len);
	rd->left--;
	return 1;
}

void
ustate_reader_free(struct ustate_reader *rd)
{
	free(rd->buf);
	memset(rd, 0, sizeof(*rd));
}
