/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Typed messages between pyrelayd processes: one message per SOCK_SEQPACKET
 * packet, at most one fd per packet as SCM_RIGHTS.  The receiving side trusts
 * nothing: type, exact length, fd presence and the body's own check are
 * applied from the channel's table, and every fd that arrives with a
 * rejected packet is closed before returning.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pyrelayd.h"
#include "msg.h"

/* room for one SCM_RIGHTS fd, aligned for struct cmsghdr */
union msg_cmsgbuf {
	struct cmsghdr	hdr;
	unsigned char	buf[CMSG_SPACE(sizeof(int))];
};

/*
 * errstr points here for formatted reasons.  One buffer per process is
 * enough: callers log errstr right after the failing call.
 */
static char	msg_errbuf[160];

static void	msg_seterr(struct msg_chan *, const char *, ...)
		    __attribute__((__format__(printf, 2, 3)));
static const struct msg_rule *msg_rule_find(const struct msg_chan *,
		    uint32_t);
static int	msg_take_fds(struct msghdr *, int *, int *);

static void
msg_seterr(struct msg_chan *chan, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(msg_errbuf, sizeof(msg_errbuf), fmt, ap);
	va_end(ap);
	chan->errstr = msg_errbuf;
}

void
msg_chan_ready(struct msg_chan *chan, int fd, const struct msg_rules *rules)
{
	memset(chan, 0, sizeof(*chan));
	chan->fd = fd;
	chan->rules = rules;
	chan->hello_min = msg_version;
	TAILQ_INIT(&chan->outq);
}

void
msg_chan_init(struct msg_chan *chan, int fd, const struct msg_rules *rules)
{
	int	flags;

	msg_chan_ready(chan, fd, rules);
	if ((flags = fcntl(fd, F_GETFL)) == -1)
		fatal("msg_chan_init: fcntl F_GETFL fd=%d", fd);
	if (fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1)
		fatal("msg_chan_init: fcntl F_SETFL fd=%d", fd);
	if ((flags = fcntl(fd, F_GETFD)) == -1)
		fatal("msg_chan_init: fcntl F_GETFD fd=%d", fd);
	if (fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == -1)
		fatal("msg_chan_init: fcntl F_SETFD fd=%d", fd);
}

void
msg_chan_clear(struct msg_chan *chan)
{
	struct msg_out	*mo;

	while ((mo = TAILQ_FIRST(&chan->outq)) != NULL) {
		TAILQ_REMOVE(&chan->outq, mo, entry);
		if (mo->fd != -1)
			close(mo->fd);
		/* packets may carry key material (MSG_TLS): wipe, then free */
		freezero(mo, sizeof(*mo) + mo->len);
	}
	chan->outq_len = 0;
	chan->outq_bytes = 0;
	free(chan->pack);
	chan->pack = NULL;
	chan->pack_len = chan->pack_off = 0;
	if (chan->fd != -1)
		close(chan->fd);
	chan->fd = -1;
	chan->hello_seen = 0;
}
/* fd, unless -1, attached to mh as SCM_RIGHTS, in cmsgbuf. */
static void
msg_attach_fd(struct msghdr *mh, union msg_cmsgbuf *cmsgbuf, int fd)
{
	struct cmsghdr	*cm;

	if (fd == -1)
		return;
	memset(cmsgbuf, 0, sizeof(*cmsgbuf));
	mh->msg_control = cmsgbuf->buf;
	mh->msg_controllen = sizeof(cmsgbuf->buf);
	cm = CMSG_FIRSTHDR(mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
}

/*
 * Sends one packet, header and body gathered, with fd; 1 when it went, 0
 * when the socket is full (queue it), -1 on another error (queue it too:
 * msg_flush will meet and report it).
 */
static int
msg_send_now(struct msg_chan *chan, const struct msg_hdr *hdr,
    const void *body, size_t len, int fd)
{
	union msg_cmsgbuf	 cmsgbuf;
	struct msghdr		 mh;
	struct iovec		 iov[2];
	ssize_t			 n;

	iov[0].iov_base = (void *)hdr;
	iov[0].iov_len = sizeof(*hdr);
	iov[1].iov_base = (void *)body;
	iov[1].iov_len = len;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = len > 0 ? 2 : 1;
	msg_attach_fd(&mh, &cmsgbuf, fd);
	/* never blocks, even on a channel msg_wait reads blocking */
	while ((n = sendmsg(chan->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT)) ==
	    -1 && errno == EINTR)
		;
	if (n == -1)
		return errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == ENOBUFS ? 0 : -1;
	/* SOCK_SEQPACKET sends whole packets or nothing */
	return (size_t)n == sizeof(*hdr) + len ? 1 : -1;
}

/* A copy of the packet, with its fd, at the end of the queue. */
static void
msg_queue(struct msg_chan *chan, const struct msg_hdr *hdr, const void *body,
    size_t len, int fd)
{
	struct msg_out	*mo;

	mo = xmalloc(sizeof(*mo) + sizeof(*hdr) + len);
	mo->fd = fd;
	mo->len = sizeof(*hdr) + len;
	memcpy(mo->buf, hdr, sizeof(*hdr));
	if (len > 0)
		memcpy(mo->buf + sizeof(*hdr), body, len);
	TAILQ_INSERT_TAIL(&chan->outq, mo, entry);
	chan->outq_len++;
	chan->outq_bytes += mo->len;
}

/*
 * msg_compose (now 1) and msg_defer (now 0): the message sent at once when
 * now and nothing waits ahead of it, else queued.
 */
static int
msg_put(struct msg_chan *chan, uint32_t type, uint64_t id, const void *body,
    size_t len, int fd, int now)
{
	struct msg_hdr	 hdr;

	if (len > MSG_MAX_BODY) {
		/* the fd was handed over with the call: do not leak it */
		if (fd != -1)
			close(fd);
		msg_seterr(chan, "compose type=%u: body of %zu bytes, max %d",
		    type, len, MSG_MAX_BODY);
		return -1;
	}

	memset(&hdr, 0, sizeof(hdr));
	hdr.type = type;
	hdr.len = (uint32_t)len;
	hdr.id = id;

	/*
	 * Nothing waiting ahead of it: sent at once, from here, when the
	 * socket takes it.  No copy to make and free: in a relay, a message
	 * to the parent touches no heap page, and no page of malloc's state
	 * (docs/relay-executable.md).
	 */
	if (now && TAILQ_EMPTY(&chan->outq) && chan->fd != -1 &&
	    msg_send_now(chan, &hdr, body, len, fd) == 1) {
		if (fd != -1)
			close(fd);
		return 0;
	}
	msg_queue(chan, &hdr, body, len, fd);
	return 0;
}

int
msg_compose(struct msg_chan *chan, uint32_t type, uint64_t id,
    const void *body, size_t len, int fd)
{
	return msg_put(chan, type, id, body, len, fd, 1);
}

int
msg_defer(struct msg_chan *chan, uint32_t type, uint64_t id,
    const void *body, size_t len, int fd)
{
	return msg_put(chan, type, id, body, len, fd, 0);
}

/*
 * Up to MSG_SEND_BATCH packets with one sendmmsg(2), each its own packet
 * (SOCK_SEQPACKET) with its fd: the number the socket took whole, or -1
 * (errno set) when it took none.  *cut is the length the kernel reported
 * for the first packet it did not take whole, -1 when there is none.  A
 * frame of its own, made only when there is something to send: a relay's
 * stack keeps to its first page (zygote_mm.c).
 */
static int __attribute__((__noinline__))
msg_sendmmsg(int sock, const struct msg_pkt *pkts, int n, ssize_t *cut)
{
	struct mmsghdr		 mm[MSG_SEND_BATCH];
	struct iovec		 iov[MSG_SEND_BATCH];
	union msg_cmsgbuf	 cmsg[MSG_SEND_BATCH];
	int			 i, k;

	*cut = -1;
	if (n > MSG_SEND_BATCH)
		n = MSG_SEND_BATCH;
	memset(mm, 0, sizeof(mm[0]) * n);
	for (i = 0; i < n; i++) {
		iov[i].iov_base = (void *)pkts[i].buf;
		iov[i].iov_len = pkts[i].len;
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		msg_attach_fd(&mm[i].msg_hdr, &cmsg[i], pkts[i].fd);
	}
	while ((k = sendmmsg(sock, mm, (unsigned int)n,
	    MSG_NOSIGNAL | MSG_DONTWAIT)) == -1 && errno == EINTR)
		;
	if (k == -1)
		return -1;
	/* SOCK_SEQPACKET sends whole packets or nothing */
	for (i = 0; i < k; i++)
		if (mm[i].msg_len != pkts[i].len) {
			*cut = mm[i].msg_len;
			return i;
		}
	return k;
}

void
msg_batch_init(struct msg_batch *b)
{
	b->n = 0;
	b->used = 0;
}

int
msg_batch_add(struct msg_chan *chan, struct msg_batch *b, uint32_t type,
    uint64_t id, const void *body, size_t len, int fd)
{
	struct msg_hdr	hdr;
	size_t		size = sizeof(hdr) + len;

	/* one that does not fit goes after those before it, as they would */
	if (b->n == MSG_BATCH_MAX || b->used + size > sizeof(b->buf))
		msg_batch_send(chan, b);
	if (size > sizeof(b->buf))
		return msg_compose(chan, type, id, body, len, fd);
	memset(&hdr, 0, sizeof(hdr));
	hdr.type = type;
	hdr.len = (uint32_t)len;
	hdr.id = id;
	memcpy(b->buf + b->used, &hdr, sizeof(hdr));
	if (len > 0)
		memcpy(b->buf + b->used + sizeof(hdr), body, len);
	b->pkt[b->n].buf = b->buf + b->used;
	b->pkt[b->n].len = size;
	b->pkt[b->n].fd = fd;
	b->n++;
	/* the next header aligned as the first */
	b->used += (size + 7) & ~(size_t)7;
	return 0;
}

void
msg_batch_send(struct msg_chan *chan, struct msg_batch *b)
{
	const struct msg_hdr	*hdr;
	ssize_t			 cut;
	int			 i = 0, k;

	/*
	 * Messages without fds to a receiver that takes packs: one packet,
	 * the batch's buffer as it is (one skb and one recvmsg for all).
	 */
	if (chan->pack_out && b->n > 1) {
		for (k = 0; k < b->n && b->pkt[k].fd == -1; k++)
			;
		if (k == b->n) {
			(void)msg_compose(chan, MSG_PACK, 0, b->buf, b->used, -1);
			msg_batch_init(b);
			return;
		}
	}

	/*
	 * Nothing waiting ahead of them: sent at once, all with one call,
	 * when the socket takes them.  What it does not take is queued, in
	 * order, as msg_compose queues (msg_flush meets any error).
	 */
	if (b->n > 0 && TAILQ_EMPTY(&chan->outq) && chan->fd != -1 &&
	    (k = msg_sendmmsg(chan->fd, b->pkt, b->n, &cut)) > 0)
		for (; i < k; i++)
			if (b->pkt[i].fd != -1)
				close(b->pkt[i].fd);
	for (; i < b->n; i++) {
		hdr = b->pkt[i].buf;
		msg_queue(chan, hdr, hdr + 1, hdr->len, b->pkt[i].fd);
	}
	msg_batch_init(b);
}

void
msg_hello_known(struct msg_chan *chan, uint32_t version, uint32_t role,
    uint32_t pid)
{
	memset(&chan->peer, 0, sizeof(chan->peer));
	chan->peer.version = version;
	chan->peer.role = role;
	chan->peer.pid = pid;
	chan->hello_seen = 1;
}

int
msg_hello(struct msg_chan *chan, uint32_t role)
{
	struct msg_hello	hello;

	memset(&hello, 0, sizeof(hello));
	hello.version = msg_version;
	hello.role = role;
	hello.pid = (uint32_t)log_getpid();
	return msg_compose(chan, MSG_HELLO, 0, &hello, sizeof(hello), -1);
}

int
msg_flush(struct msg_chan *chan)
{
	struct msg_pkt		 pkts[MSG_SEND_BATCH];
	struct msg_out		*mo;
	ssize_t			 cut;
	int			 i, n, k;

	while (!TAILQ_EMPTY(&chan->outq)) {
		/* what is queued, MSG_SEND_BATCH packets a call */
		n = 0;
		TAILQ_FOREACH(mo, &chan->outq, entry) {
			if (n == MSG_SEND_BATCH)
				break;
			pkts[n].buf = mo->buf;
			pkts[n].len = mo->len;
			pkts[n++].fd = mo->fd;
		}
		/* never blocks, whatever the fd's flags (msg_chan_ready) */
		if ((k = msg_sendmmsg(chan->fd, pkts, n, &cut)) == -1) {
			/* ENOBUFS is transient memory pressure: retry later */
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == ENOBUFS)
				return 0;
			msg_seterr(chan, "sendmsg: %s", strerror(errno));
			return -1;
		}
		for (i = 0; i < k; i++) {
			mo = TAILQ_FIRST(&chan->outq);
			TAILQ_REMOVE(&chan->outq, mo, entry);
			chan->outq_len--;
			chan->outq_bytes -= mo->len;
			if (mo->fd != -1)
				close(mo->fd);
			/* packets may carry key material (MSG_TLS): wipe, free */
			freezero(mo, sizeof(*mo) + mo->len);
		}
		if (cut != -1) {
			msg_seterr(chan, "sendmsg: sent %zd of %zu bytes",
			    cut, pkts[k].len);
			return -1;
		}
	}
	return 1;
}

/*
 * Moves every fd the kernel installed for this packet out of the control
 * data: the first into *fdp, any further ones closed at once.  Returns the
 * number of fds that arrived; *bad is set when a control message other than
 * SCM_RIGHTS was present.
 */
static int
msg_take_fds(struct msghdr *mh, int *fdp, int *bad)
{
	struct cmsghdr	*cm;
	unsigned char	*data, *end;
	size_t		 i, nfd;
	int		 fd, count = 0;

	*fdp = -1;
	*bad = 0;
	if (mh->msg_controllen == 0)
		return 0;
	end = (unsigned char *)mh->msg_control + mh->msg_controllen;
	for (cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET ||
		    cm->cmsg_type != SCM_RIGHTS) {
			*bad = 1;
			continue;
		}
		if (cm->cmsg_len < CMSG_LEN(0))
			continue;
		data = CMSG_DATA(cm);
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		/* never trust cmsg_len beyond what landed in our buffer */
		if (data + nfd * sizeof(int) > end)
			nfd = (size_t)(end - data) / sizeof(int);
		for (i = 0; i < nfd; i++) {
			memcpy(&fd, data + i * sizeof(int), sizeof(int));
			if (fd < 0)
				continue;
			if (*fdp == -1)
				*fdp = fd;
			else
				close(fd);
			count++;
		}
	}
	return count;
}

static const struct msg_rule *
msg_rule_find(const struct msg_chan *chan, uint32_t type)
{
	size_t	i;

	for (i = 0; i < chan->rules->nrules; i++)
		if (chan->rules->rule[i].type == type)
			return &chan->rules->rule[i];
	return NULL;
}

/*
 * A message read, after the channel's HELLO, against the channel's table:
 * 1 (m->rule, m->fd, m->fd_lost set), or -2 (errstr set; fd closed).
 */
static int
msg_judge(struct msg_chan *chan, struct msg *m, int fd, int lost)
{
	const struct msg_rule	*rule;
	const char		*why;

	if (m->hdr.type == MSG_HELLO) {
		chan->errstr = "second hello";
		goto fail;
	}
	if ((rule = msg_rule_find(chan, m->hdr.type)) == NULL) {
		msg_seterr(chan, "unknown type %u", m->hdr.type);
		goto fail;
	}
	if (rule->minlen == 0 && m->hdr.len != rule->len) {
		msg_seterr(chan, "type %u (%s): length %u, want %u",
		    m->hdr.type, msg_type_name(chan, m->hdr.type), m->hdr.len,
		    rule->len);
		goto fail;
	}
	if (rule->minlen != 0 &&
	    (m->hdr.len < rule->minlen || m->hdr.len > rule->len)) {
		msg_seterr(chan, "type %u (%s): length %u, want %u to %u",
		    m->hdr.type, msg_type_name(chan, m->hdr.type), m->hdr.len,
		    rule->minlen, rule->len);
		goto fail;
	}
	if (rule->fd == MSG_FD_NONE && (fd != -1 || lost)) {
		msg_seterr(chan, "type %u (%s): unexpected fd",
		    m->hdr.type, msg_type_name(chan, m->hdr.type));
		goto fail;
	}
	if (rule->fd == MSG_FD_REQUIRED && fd == -1 && !lost) {
		msg_seterr(chan, "type %u (%s): fd missing",
		    m->hdr.type, msg_type_name(chan, m->hdr.type));
		goto fail;
	}
	if (rule->check != NULL &&
	    (why = rule->check(m->body, m->hdr.len)) != NULL) {
		msg_seterr(chan, "type %u (%s): %s", m->hdr.type,
		    msg_type_name(chan, m->hdr.type), why);
		goto fail;
	}
	m->rule = rule;
	m->fd = fd;
	m->fd_lost = lost;
	return 1;

 fail:
	if (fd != -1)
		close(fd);
	return -2;
}

/* Drops what is left of a pack. */
static void
msg_pack_end(struct msg_chan *chan)
{
	free(chan->pack);
	chan->pack = NULL;
	chan->pack_len = chan->pack_off = 0;
}

/*
 * Whether a pack's len bytes hold together: headers and bodies end to end
 * as msg_batch_add lays them (each header 8-byte aligned, the last body
 * padded to 8 at most), none a pack or a HELLO.  NULL, or why not.  Its
 * messages are judged one by one as they are read (msg_unpack).
 */
static const char *
msg_pack_check(struct msg_chan *chan, const unsigned char *p, size_t len)
{
	struct msg_hdr	hdr;
	size_t		off = 0, size;

	while (off < len) {
		if (len - off < sizeof(hdr))
			return "pack: bytes after its last message";
		memcpy(&hdr, p + off, sizeof(hdr));
		if (hdr.len > len - off - sizeof(hdr)) {
			msg_seterr(chan, "pack: type %u: %u bytes past its end",
			    hdr.type, hdr.len);
			return chan->errstr;
		}
		if (hdr.type == MSG_PACK || hdr.type == MSG_HELLO) {
			msg_seterr(chan, "pack: type %u in a pack", hdr.type);
			return chan->errstr;
		}
		size = (sizeof(hdr) + hdr.len + 7) & ~(size_t)7;
		if (size > len - off && len - off != sizeof(hdr) + hdr.len)
			return "pack: bytes after its last message";
		off += size;
	}
	return NULL;
}

/*
 * The next message of the pack being read (msg_pack_check passed), into
 * m, judged as one that came alone, with no fd: 1, or -2 (the rest of
 * the pack dropped).
 */
static int
msg_unpack(struct msg_chan *chan, struct msg *m)
{
	size_t	size;

	m->fd = -1;
	m->fd_lost = 0;
	m->rule = NULL;
	memcpy(&m->hdr, chan->pack + chan->pack_off, sizeof(m->hdr));
	memcpy(m->body, chan->pack + chan->pack_off + sizeof(m->hdr),
	    m->hdr.len);
	/* the next header aligned as msg_batch_add lays it */
	size = (sizeof(m->hdr) + m->hdr.len + 7) & ~(size_t)7;
	if (size >= (size_t)chan->pack_len - chan->pack_off)
		msg_pack_end(chan);
	else
		chan->pack_off += (uint16_t)size;
	if (msg_judge(chan, m, -1, 0) == 1)
		return 1;
	msg_pack_end(chan);
	return -2;
}

int
msg_recv(struct msg_chan *chan, struct msg *m)
{
	union msg_cmsgbuf	 cmsgbuf;
	struct msghdr		 mh;
	struct iovec		 iov[2];
	struct msg_hello	 hello;
	const char		*why;
	ssize_t			 n;
	size_t			 blen;
	int			 fd, nfd, badcmsg, lost;

	if (chan->pack != NULL)
		return msg_unpack(chan, m);
	m->fd = -1;
	m->fd_lost = 0;
	m->rule = NULL;
	for (;;) {
		memset(&mh, 0, sizeof(mh));
		memset(&cmsgbuf, 0, sizeof(cmsgbuf));
		/* header and body land in place: sizeof(hdr) + MSG_MAX_BODY */
		iov[0].iov_base = &m->hdr;
		iov[0].iov_len = sizeof(m->hdr);
		iov[1].iov_base = m->body;
		iov[1].iov_len = sizeof(m->body);
		mh.msg_iov = iov;
		mh.msg_iovlen = 2;
		mh.msg_control = cmsgbuf.buf;
		mh.msg_controllen = sizeof(cmsgbuf.buf);

		n = recvmsg(chan->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n == -1 && errno == EINTR)
			continue;
		break;
	}
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		msg_seterr(chan, "recvmsg: %s", strerror(errno));
		return -1;
	}

	/* take ownership of whatever fds arrived before judging the packet */
	nfd = msg_take_fds(&mh, &fd, &badcmsg);

	if (n == 0) {
		chan->errstr = "connection closed";
		goto fail_eof;
	}
	if (mh.msg_flags & MSG_TRUNC) {
		msg_seterr(chan, "truncated packet: larger than %zu bytes",
		    sizeof(m->hdr) + sizeof(m->body));
		goto fail;
	}
	if (badcmsg) {
		chan->errstr = "unexpected control message";
		goto fail;
	}
	/*
	 * MSG_CTRUNC: more fds than the buffer holds (it holds two, so some
	 * arrived), or none could be installed (RLIMIT_NOFILE here): that fd
	 * is lost, which is our shortage, not a violation by the peer.
	 */
	lost = 0;
	if (mh.msg_flags & MSG_CTRUNC) {
		if (nfd > 0) {
			chan->errstr = "truncated control data";
			goto fail;
		}
		lost = 1;
	}
	if (nfd > 1) {
		msg_seterr(chan, "%d fds in one packet", nfd);
		goto fail;
	}
	if ((size_t)n < sizeof(m->hdr)) {
		msg_seterr(chan, "short packet: %zd bytes, header is %zu",
		    n, sizeof(m->hdr));
		goto fail;
	}
	blen = (size_t)n - sizeof(m->hdr);
	if (m->hdr.len != blen) {
		msg_seterr(chan,
		    "type %u: header says %u bytes, packet has %zu",
		    m->hdr.type, m->hdr.len, blen);
		goto fail;
	}

	if (!chan->hello_seen) {
		if (m->hdr.type != MSG_HELLO) {
			msg_seterr(chan, "type %u before hello", m->hdr.type);
			goto fail;
		}
		if (m->hdr.len != sizeof(hello)) {
			msg_seterr(chan, "hello: length %u, want %zu",
			    m->hdr.len, sizeof(hello));
			goto fail;
		}
		if (fd != -1 || lost) {
			chan->errstr = "hello: unexpected fd";
			goto fail;
		}
		memcpy(&hello, m->body, sizeof(hello));
		if (hello.version < chan->hello_min ||
		    hello.version > msg_version) {
			msg_seterr(chan, "hello: version mismatch: peer %u, "
			    "ours %u", hello.version, msg_version);
			goto fail;
		}
		chan->peer = hello;
		chan->hello_seen = 1;
		return 1;
	}

	if (m->hdr.type == MSG_PACK) {
		if (!chan->pack_in) {
			chan->errstr = "pack not taken on this channel";
			goto fail;
		}
		if (fd != -1 || lost) {
			chan->errstr = "pack: unexpected fd";
			goto fail;
		}
		if (m->hdr.len < sizeof(m->hdr) || m->hdr.len > MSG_BATCH_BYTES) {
			msg_seterr(chan, "pack: length %u, want %zu to %u",
			    m->hdr.len, sizeof(m->hdr), MSG_BATCH_BYTES);
			goto fail;
		}
		if ((why = msg_pack_check(chan, m->body, m->hdr.len)) != NULL) {
			chan->errstr = why;
			goto fail;
		}
		if ((chan->pack = malloc(m->hdr.len)) == NULL) {
			msg_seterr(chan, "pack: %s", strerror(errno));
			goto fail;
		}
		memcpy(chan->pack, m->body, m->hdr.len);
		chan->pack_len = (uint16_t)m->hdr.len;
		chan->pack_off = 0;
		return msg_unpack(chan, m);
	}
	return msg_judge(chan, m, fd, lost);

 fail:
	if (fd != -1)
		close(fd);
	return -2;
 fail_eof:
	if (fd != -1)
		close(fd);
	return -1;
}

void
msg_handle(struct msg *m, void *arg)
{
	if (m->rule != NULL && m->rule->handle != NULL)
		m->rule->handle(arg, m);
	else if (m->fd != -1)
		close(m->fd);
}

void *
msg_wait(struct msg_chan *chan, struct msg *m, uint32_t type, const char *who)
{
	int	 rv;

	while ((rv = msg_recv(chan, m)) >= 0) {
		if (rv == 0)
			(void)fd_wait(chan->fd, POLLIN, -1);
		else if (m->hdr.type == type)
			return m->body;
		else if (m->fd != -1)
			close(m->fd);
	}
	fatalx("%s: %s from parent: %s", who, msg_type_name(chan, type),
	    chan->errstr ? chan->errstr : "closed");
}

const char *
msg_type_name(const struct msg_chan *chan, uint32_t type)
{
	const struct msg_rule	*rule;

	if (type == MSG_HELLO)
		return "hello";
	if ((rule = msg_rule_find(chan, type)) == NULL || rule->name == NULL)
		return "unknown";
	return rule->name;
}
