/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The state an upgrade hands the next image (docs/upgrade.md): its framing
 * (src/upgrade_state.c) read back as written, and refused, with a reason,
 * when it is cut short, too long, of another format, or holds a record of
 * a type or length the reader does not know; and the checks the next image
 * makes of what the records say before it builds anything
 * (src/parent_adopt.c adopt_read): a worker that is not its child, one of
 * a message version it does not serve, a channel that is not a SEQPACKET
 * socket, a descriptor named twice, a listening socket bound elsewhere, a
 * role it does not know, a record whose flags its role cannot have; a push
 * process's record and the wakes it holds (one current, a wake held once,
 * right after its worker); the parent's drain flag and refusals.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "parent_upgrade.h"
#include "proc.h"
#include "unit.h"
#include "upgrade_state.h"

struct rec_a {
	uint32_t	x, y;
};
struct rec_b {
	uint64_t	z;
};

static const struct ustate_rule rules[] = {
	{ 1, sizeof(struct rec_a), 0 },
	{ 2, sizeof(struct rec_b), 1 },
};

/* A memfd holding exactly these bytes. */
static int
bytes_fd(const void *buf, size_t len)
{
	int	fd = memfd_create("test", MFD_CLOEXEC);

	CU_ASSERT_FATAL(fd != -1);
	CU_ASSERT_FATAL(write(fd, buf, len) == (ssize_t)len);
	return fd;
}

/* A state of three records: a, b with a tail of 5 bytes, a. */
static void
sample(struct ustate *us)
{
	struct rec_a	a = { 7, 8 };
	struct rec_b	b = { 99 };

	ustate_init(us);
	ustate_add(us, 1, &a, sizeof(a), NULL, 0);
	ustate_add(us, 2, &b, sizeof(b), "hello", 5);
	a.x = 9;
	ustate_add(us, 1, &a, sizeof(a), NULL, 0);
}

/* Reads fd to the end with rules; the reason of the first refusal or NULL. */
static const char *
read_all(int fd, int *records)
{
	struct ustate_reader	 rd;
	union { struct rec_a a; struct rec_b b; } body;
	const unsigned char	*tail;
	const char		*why = NULL;
	size_t			 tlen;
	uint32_t		 type;
	int			 rv;

	*records = 0;
	if (ustate_read(fd, USTATE_FORMAT, &rd, &why) == -1) {
		ustate_reader_free(&rd);
		return why;
	}
	ustate_reader_rules(&rd, rules, sizeof(rules) / sizeof(rules[0]));
	while ((rv = ustate_next(&rd, &type, &body, sizeof(body), &tail, &tlen,
	    &why)) == 1)
		(*records)++;
	ustate_reader_free(&rd);
	return rv == 0 ? NULL : why;
}

static void
test_round_trip(void)
{
	struct ustate		 us;
	struct ustate_reader	 rd;
	union { struct rec_a a; struct rec_b b; } body;
	const unsigned char	*tail;
	const char		*why;
	size_t			 tlen;
	uint32_t		 type;
	int			 fd;

	sample(&us);
	fd = ustate_memfd(&us);
	CU_ASSERT_FATAL(fd != -1);
	/* sealed: the image that reads it cannot change it */
	CU_ASSERT(write(fd, "x", 1) == -1 && errno == EPERM);
	CU_ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* read from the start, however far the fd was read or written */
	CU_ASSERT_FATAL(ustate_read(fd, USTATE_FORMAT, &rd, &why) == 0);
	ustate_reader_rules(&rd, rules, sizeof(rules) / sizeof(rules[0]));
	CU_ASSERT_EQUAL(ustate_next(&rd, &type, &body, sizeof(body), &tail,
	    &tlen, &why), 1);
	CU_ASSERT_EQUAL(type, 1);
	CU_ASSERT_EQUAL(body.a.x, 7);
	CU_ASSERT_EQUAL(body.a.y, 8);
	CU_ASSERT_EQUAL(tlen, 0);
	CU_ASSERT_EQUAL(ustate_next(&rd, &type, &body, sizeof(body), &tail,
	    &tlen, &why), 1);
	CU_ASSERT_EQUAL(type, 2);
	CU_ASSERT_EQUAL(body.b.z, 99);
	CU_ASSERT_EQUAL(tlen, 5);
	CU_ASSERT(memcmp(tail, "hello", 5) == 0);
	CU_ASSERT_EQUAL(ustate_next(&rd, &type, &body, sizeof(body), &tail,
	    &tlen, &why), 1);
	CU_ASSERT_EQUAL(body.a.x, 9);
	CU_ASSERT_EQUAL(ustate_next(&rd, &type, &body, sizeof(body), &tail,
	    &tlen, &why), 0);
	ustate_reader_free(&rd);
	close(fd);
	ustate_free(&us);
}

/* The sample state as bytes, its head filled in as ustate_memfd does. */
static unsigned char *
sample_bytes(size_t *len)
{
	struct ustate	 us;
	unsigned char	*buf;
	int		 fd;

	sample(&us);
	fd = ustate_memfd(&us);
	CU_ASSERT_FATAL(fd != -1);
	close(fd);
	*len = us.len;
	buf = malloc(us.len + 64);
	CU_ASSERT_FATAL(buf != NULL);
	memcpy(buf, us.buf, us.len);
	memset(buf + us.len, 0, 64);
	ustate_free(&us);
	return buf;
}

/* The sample changed by edit, then read: the refusal's reason. */
static const char *
edited(void (*edit)(unsigned char *, size_t *), int *records)
{
	static char	 why[160];
	unsigned char	*buf;
	const char	*w;
	size_t		 len;
	int		 fd;

	buf = sample_bytes(&len);
	edit(buf, &len);
	fd = bytes_fd(buf, len);
	w = read_all(fd, records);
	snprintf(why, sizeof(why), "%s", w != NULL ? w : "(none)");
	close(fd);
	free(buf);
	return why;
}

static struct ustate_head *
head(unsigned char *buf)
{
	return (struct ustate_head *)(void *)buf;
}

static void edit_none(unsigned char *b, size_t *len) { }
static void edit_magic(unsigned char *b, size_t *len) { b[0] ^= 1; }
static void edit_format(unsigned char *b, size_t *len)
{ head(b)->format = USTATE_FORMAT + 1; }
static void edit_cut(unsigned char *b, size_t *len) { *len -= 8; }
static void edit_cut_and_say(unsigned char *b, size_t *len)
{ *len -= 8; head(b)->length = *len; }
static void edit_longer(unsigned char *b, size_t *len)
{ *len += 8; head(b)->length = *len; }
static void edit_more_records(unsigned char *b, size_t *len)
{ head(b)->records++; }
static void edit_fewer_records(unsigned char *b, size_t *len)
{ head(b)->records--; }

/* the first record, right after the head */
static struct ustate_rec *
first(unsigned char *b)
{
	return (struct ustate_rec *)(void *)(b + sizeof(struct ustate_head));
}
static void edit_type(unsigned char *b, size_t *len) { first(b)->type = 77; }
static void edit_reclen(unsigned char *b, size_t *len) { first(b)->len = 16; }
static void edit_huge(unsigned char *b, size_t *len)
{ first(b)->len = 0xffffff00U; }

static void
test_framing_refused(void)
{
	int	n;

	CU_ASSERT_STRING_EQUAL(edited(edit_none, &n), "(none)");
	CU_ASSERT_EQUAL(n, 3);
	CU_ASSERT_STRING_EQUAL(edited(edit_magic, &n),
	    "the state has no magic");
	CU_ASSERT(strstr(edited(edit_format, &n), "this program reads") !=
	    NULL);
	CU_ASSERT_STRING_EQUAL(edited(edit_cut, &n),
	    "the state's length is not its file's");
	CU_ASSERT_STRING_EQUAL(edited(edit_cut_and_say, &n),
	    "the state ends inside a record");
	CU_ASSERT_STRING_EQUAL(edited(edit_longer, &n),
	    "bytes after the last record");
	CU_ASSERT_STRING_EQUAL(edited(edit_more_records, &n),
	    "the state ends inside a record");
	CU_ASSERT_STRING_EQUAL(edited(edit_fewer_records, &n),
	    "bytes after the last record");
	CU_ASSERT_STRING_EQUAL(edited(edit_type, &n), "a record of type 77, "
	    "which this program does not know");
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_STRING_EQUAL(edited(edit_reclen, &n), "a record of type 1 "
	    "and 16 bytes, where this program has 8");
	CU_ASSERT_STRING_EQUAL(edited(edit_huge, &n),
	    "the state ends inside a record");
}

static void
test_not_a_state(void)
{
	const char	*why;
	int		 n, p[2], fd;

	CU_ASSERT_FATAL(pipe(p) == 0);
	why = read_all(p[0], &n);
	CU_ASSERT_STRING_EQUAL(why, "the state's fd is not a state");
	close(p[0]);
	close(p[1]);
	why = read_all(p[0], &n);
	CU_ASSERT_STRING_EQUAL(why, "the state's fd is not open");
	fd = bytes_fd("", 0);
	why = read_all(fd, &n);
	CU_ASSERT_STRING_EQUAL(why, "the state's fd is not a state");
	close(fd);
}

/* ---- what the records say (adopt_read) ------------------------------------ */

static pid_t	child;

static void
parent_record(struct ustate *us)
{
	struct us_parent	*up = calloc(1, sizeof(*up));

	CU_ASSERT_FATAL(up != NULL);
	strlcpy(up->version, "test", sizeof(up->version));
	up->msg_version = msg_version;
	up->next_conn_id = 10;
	up->push.seq = 5;
	strlcpy(up->self, "/usr/sbin/pyrelayd", sizeof(up->self));
	ustate_init(us);
	ustate_add(us, US_PARENT, up, sizeof(*up), NULL, 0);
	free(up);
}

static void
worker_record(struct ustate *us, uint32_t role, pid_t pid, int fd,
    uint32_t version)
{
	struct us_worker	w;

	memset(&w, 0, sizeof(w));
	w.role = role;
	w.pid = pid;
	w.fd = fd;
	w.version = version;
	w.front_slot = -1;
	if (role == ROLE_RELAY)
		strlcpy(w.sid, "sid-1", sizeof(w.sid));
	ustate_add(us, US_WORKER, &w, sizeof(w), NULL, 0);
}

/* A push process's part, holding the wake id (0: none). */
static void
push_record(struct ustate *us, uint32_t worker, uint32_t part, uint64_t id,
    const char *hash)
{
	struct us_push	*r = calloc(1, sizeof(*r));

	CU_ASSERT_FATAL(r != NULL);
	r->worker = worker;
	r->part = part;
	if (id != 0) {
		r->nwakes = 1;
		r->wakes[0].id = id;
		strlcpy(r->wakes[0].sid, "sid-1", sizeof(r->wakes[0].sid));
		strlcpy(r->wakes[0].hash, hash, sizeof(r->wakes[0].hash));
	}
	ustate_add(us, US_PUSH, r, sizeof(*r), NULL, 0);
	free(r);
}

/* adopt_read of the state: NULL when taken, else why not. */
static const char *
adopt(struct ustate *us)
{
	static char	 why[256];
	const char	*w = NULL;
	int		 fd = ustate_memfd(us);

	CU_ASSERT_FATAL(fd != -1);
	if (adopt_read(fd, 0, &w) == 0)
		w = NULL;
	snprintf(why, sizeof(why), "%s", w != NULL ? w : "(taken)");
	close(fd);
	ustate_free(us);
	return why;
}

static void
test_adopt_refused(void)
{
	struct ustate		 us;
	struct us_listener	 ul;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ul.ss;
	socklen_t		 len = sizeof(struct sockaddr_in);
	const char		*why;
	int			 sv[2], p[2], ls;

	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
	CU_ASSERT_FATAL(pipe(p) == 0);

	/* a relay this process started, on its channel: taken */
	parent_record(&us);
	worker_record(&us, ROLE_RELAY, child, sv[0], msg_version);
	CU_ASSERT_STRING_EQUAL(adopt(&us), "(taken)");
	/* of the message version before: taken, that is what it serves */
	parent_record(&us);
	worker_record(&us, ROLE_RELAY, child, sv[0], msg_version - 1);
	CU_ASSERT_STRING_EQUAL(adopt(&us), "(taken)");
	/* of a newer one: refused (0 is a worker that has not said HELLO) */
	parent_record(&us);
	worker_record(&us, ROLE_RELAY, child, sv[0], msg_version + 1);
	why = adopt(&us);
	CU_ASSERT(strstr(why, "speaks message version") != NULL);
	parent_record(&us);
	worker_record(&us, ROLE_FRONT, child, sv[0], msg_version + 2);
	CU_ASSERT(strstr(adopt(&us), "front pid") != NULL);
	/* not a child of this process */
	parent_record(&us);
	worker_record(&us, ROLE_RELAY, getppid(), sv[0], msg_version);
	CU_ASSERT(strstr(adopt(&us), "is not a child of this process") != NULL);
	/* a channel that is a pipe */
	parent_record(&us);
	worker_record(&us, ROLE_RELAY, child, p[0], msg_version);
	CU_ASSERT(strstr(adopt(&us), "not a socket") != NULL);
	/* a role it does not know */
	parent_record(&us);
	worker_record(&us, ROLE_SPAWNER, child, sv[0], msg_version);
	CU_ASSERT(strstr(adopt(&us), "which this program does not know") !=
	    NULL);
	/* nor the relay zygote: replaced at an upgrade, as the spawner is */
	parent_record(&us);
	worker_record(&us, ROLE_ZYGOTE, child, sv[0], msg_version);
	CU_ASSERT(strstr(adopt(&us), "which this program does not know") !=
	    NULL);
	/* one fd, two workers */
	parent_record(&us);
	worker_record(&us, ROLE_RELAY, child, sv[0], msg_version);
	worker_record(&us, ROLE_FRONT, child, sv[0], msg_version);
	CU_ASSERT(strstr(adopt(&us), "is named twice") != NULL);
	/* the parent's record, first and only first */
	ustate_init(&us);
	worker_record(&us, ROLE_RELAY, child, sv[0], msg_version);
	CU_ASSERT_STRING_EQUAL(adopt(&us), "the parent record is not the first");

	/* a listening socket: bound where the record says, and listening */
	CU_ASSERT_FATAL((ls = socket(AF_INET, SOCK_STREAM, 0)) != -1);
	memset(&ul, 0, sizeof(ul));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CU_ASSERT_FATAL(bind(ls, (struct sockaddr *)sin, len) == 0);
	ul.fd = ls;
	ul.sslen = len;
	parent_record(&us);
	ustate_add(&us, US_LISTENER, &ul, sizeof(ul), NULL, 0);
	CU_ASSERT(strstr(adopt(&us), "not listening") != NULL);
	CU_ASSERT_FATAL(listen(ls, 4) == 0);
	CU_ASSERT_FATAL(getsockname(ls, (struct sockaddr *)sin, &len) == 0);
	parent_record(&us);
	ustate_add(&us, US_LISTENER, &ul, sizeof(ul), NULL, 0);
	CU_ASSERT_STRING_EQUAL(adopt(&us), "(taken)");
	sin->sin_port = htons(ntohs(sin->sin_port) ^ 1);
	parent_record(&us);
	ustate_add(&us, US_LISTENER, &ul, sizeof(ul), NULL, 0);
	CU_ASSERT(strstr(adopt(&us), "bound to another address") != NULL);

	close(ls);
	close(sv[0]);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
}

/* One or two push processes, each with its US_PUSH record. */
static const struct push_case {
	int		 n;
	uint32_t	 part[2];
	uint64_t	 id[2];		/* the wake each holds (0: none) */
	const char	*hash;
	int		 twice;		/* its US_PUSH twice */
	const char	*want;		/* in the refusal, or "(taken)" */
} push_cases[] = {
	{ 1, { US_PUSH_CURRENT }, { 3 }, "0a1b2c3d", 0, "(taken)" },
	{ 2, { US_PUSH_RETIRING, US_PUSH_NEXT }, { 3, 0 }, "0a1b2c3d", 0,
	    "(taken)" },
	{ 1, { US_PUSH_RETIRING }, { 0 }, "", 1, "does not follow" },
	{ 2, { US_PUSH_CURRENT, US_PUSH_CURRENT }, { 0, 0 }, "", 0,
	    "does not hold together" },
	{ 1, { US_PUSH_NEXT }, { 2 }, "0a1b2c3d", 0, "does not hold together" },
	{ 2, { US_PUSH_RETIRING, US_PUSH_CURRENT }, { 4, 4 }, "0a1b2c3d", 0,
	    "push wake 4 is held twice" },
	/* past the last id the parent gave (5); not a hash */
	{ 1, { US_PUSH_CURRENT }, { 6 }, "0a1b2c3d", 0,
	    "a push wake out of range" },
	{ 1, { US_PUSH_CURRENT }, { 1 }, "a token", 0,
	    "a push wake out of range" },
};

/* A push process and the wakes it holds; the parent's drain and refusals. */
static void
test_adopt_push_drain(void)
{
	const struct push_case	*c;
	struct ustate		 us;
	struct us_parent	*up;
	struct us_worker	 w;
	const char		*why;
	size_t			 i;
	int			 sv[2], sv2[2], k;

	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv2) == 0);

	for (i = 0; i < sizeof(push_cases) / sizeof(push_cases[0]); i++) {
		c = &push_cases[i];
		parent_record(&us);
		for (k = 0; k < c->n; k++) {
			worker_record(&us, ROLE_PUSH, child, k ? sv2[0] : sv[0],
			    c->part[k] == US_PUSH_NEXT ? 0 : msg_version);
			push_record(&us, k, c->part[k], c->id[k], c->hash);
			if (c->twice)
				push_record(&us, k, c->part[k], 0, "");
		}
		why = adopt(&us);
		if (strstr(why, c->want) == NULL)
			fprintf(stderr, "\n  push case %zu: %s", i, why);
		CU_ASSERT(strstr(why, c->want) != NULL);
	}
	/* after a relay's record */
	parent_record(&us);
	worker_record(&us, ROLE_RELAY, child, sv[0], msg_version);
	push_record(&us, 0, US_PUSH_CURRENT, 0, "");
	CU_ASSERT(strstr(adopt(&us), "does not follow") != NULL);
	/* a push process with a server-id, or pooled: not one */
	parent_record(&us);
	memset(&w, 0, sizeof(w));
	w.role = ROLE_PUSH;
	w.pid = child;
	w.fd = sv[0];
	w.front_slot = -1;
	strlcpy(w.sid, "sid-1", sizeof(w.sid));
	ustate_add(&us, US_WORKER, &w, sizeof(w), NULL, 0);
	CU_ASSERT(strstr(adopt(&us), "does not hold together") != NULL);
	parent_record(&us);
	w.sid[0] = '\0';
	w.flags = US_W_POOLED;
	ustate_add(&us, US_WORKER, &w, sizeof(w), NULL, 0);
	CU_ASSERT(strstr(adopt(&us), "does not hold together") != NULL);

	/* the drain flag is 0 or 1; a refusal's unlogged count is of its total */
	up = calloc(1, sizeof(*up));
	CU_ASSERT_FATAL(up != NULL);
	strlcpy(up->version, "test", sizeof(up->version));
	up->next_conn_id = 1;
	strlcpy(up->self, "/usr/sbin/pyrelayd", sizeof(up->self));
	up->draining = 1;
	up->refusals[0].total = 3;
	up->refusals[0].unlogged = 2;
	ustate_init(&us);
	ustate_add(&us, US_PARENT, up, sizeof(*up), NULL, 0);
	CU_ASSERT_STRING_EQUAL(adopt(&us), "(taken)");
	up->draining = 2;
	ustate_init(&us);
	ustate_add(&us, US_PARENT, up, sizeof(*up), NULL, 0);
	CU_ASSERT(strstr(adopt(&us), "out of range") != NULL);
	up->draining = 1;
	up->refusals[0].unlogged = 4;
	ustate_init(&us);
	ustate_add(&us, US_PARENT, up, sizeof(*up), NULL, 0);
	CU_ASSERT_STRING_EQUAL(adopt(&us),
	    "the parent record's refusals are out of range");
	free(up);

	close(sv[0]);
	close(sv[1]);
	close(sv2[0]);
	close(sv2[1]);
}

/* An agent listener is a listener like the others; flags are LISTEN_*. */
static void
test_adopt_agent_listener(void)
{
	struct ustate		 us;
	struct us_listener	 ul;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ul.ss;
	socklen_t		 len = sizeof(struct sockaddr_in);
	int			 ls;

	CU_ASSERT_FATAL((ls = socket(AF_INET, SOCK_STREAM, 0)) != -1);
	memset(&ul, 0, sizeof(ul));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CU_ASSERT_FATAL(bind(ls, (struct sockaddr *)sin, len) == 0);
	CU_ASSERT_FATAL(listen(ls, 4) == 0);
	CU_ASSERT_FATAL(getsockname(ls, (struct sockaddr *)sin, &len) == 0);
	ul.fd = ls;
	ul.sslen = len;
	ul.flags = LISTEN_AGENT;
	parent_record(&us);
	ustate_add(&us, US_LISTENER, &ul, sizeof(ul), NULL, 0);
	CU_ASSERT_STRING_EQUAL(adopt(&us), "(taken)");
	ul.flags = LISTEN_AGENT | LISTEN_METRICS;
	parent_record(&us);
	ustate_add(&us, US_LISTENER, &ul, sizeof(ul), NULL, 0);
	CU_ASSERT_STRING_EQUAL(adopt(&us), "a listener record out of range");
	ul.flags = LISTEN_FLAGS + 1;
	parent_record(&us);
	ustate_add(&us, US_LISTENER, &ul, sizeof(ul), NULL, 0);
	CU_ASSERT_STRING_EQUAL(adopt(&us), "a listener record out of range");
	close(ls);
}

static CU_TestInfo upgrade_state_tests[] = {
	{ "round trip, sealed", test_round_trip },
	{ "framing refused", test_framing_refused },
	{ "not a state", test_not_a_state },
	{ "records refused", test_adopt_refused },
	{ "push processes, drain, refusals", test_adopt_push_drain },
	{ "agent listeners", test_adopt_agent_listener },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "upgrade state", NULL, NULL, NULL, NULL, upgrade_state_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	int	failed;

	/* a child of this process, for the workers of the records */
	if ((child = fork()) == 0) {
		pause();
		_exit(0);
	}
	if (child == -1)
		return 1;
	failed = unit_run(suites);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return failed;
}
