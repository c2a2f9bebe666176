/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests for src/msg.c.  The module's contract is a SOCK_SEQPACKET
 * socketpair, so these tests use real socketpairs (and pipes as fds to
 * pass); no other sockets.  Hostile packets are crafted with raw sendmsg.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pyrelayd.h"
#include "msg.h"
#include "unit.h"

enum {
	T_PLAIN = 2,		/* 8 byte body, no fd */
	T_WITHFD = 3,		/* 4 byte body, fd required */
	T_EMPTY = 4,		/* empty body */
	T_BIG = 5,		/* MSG_MAX_BODY body */
	T_VAR = 6,		/* 4 to 16 byte body, no fd */
	T_CHECKED = 7,		/* 4 byte body its check refuses unless 0, fd required */
};

/* T_CHECKED's check: the body must be four zero bytes */
static const char *
check_zero(const void *body, size_t len)
{
	static const unsigned char	zero[4];

	return memcmp(body, zero, sizeof(zero)) == 0 ? NULL : "not zero";
}

/* T_CHECKED's handler: counts its calls and keeps the fd it was given */
static int	handled;
static int	handled_fd = -1;

static void
handle_checked(void *arg, struct msg *m)
{
	handled += *(int *)arg;
	handled_fd = m->fd;
}

static const struct msg_rule test_rows[] = {
	{ "plain", T_PLAIN, MSG_FD_NONE, 0, 8, NULL, NULL },
	{ "withfd", T_WITHFD, MSG_FD_REQUIRED, 0, 4, NULL, NULL },
	{ "empty", T_EMPTY, MSG_FD_NONE, 0, 0, NULL, NULL },
	{ "big", T_BIG, MSG_FD_NONE, 0, MSG_MAX_BODY, NULL, NULL },
	{ "var", T_VAR, MSG_FD_NONE, 4, 16, NULL, NULL },
	{ "checked", T_CHECKED, MSG_FD_REQUIRED, 0, 4, check_zero,
	    handle_checked },
};
static const struct msg_rules test_rules = MSG_RULES(0, 1, test_rows);

/* struct msg is 32K: keep it off the stack */
static struct msg	rm;

static int
count_fds(void)
{
	DIR		*d;
	struct dirent	*de;
	int		 n = 0;

	if ((d = opendir("/proc/self/fd")) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int
fd_is_closed(int fd)
{
	return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

static void
make_pair(int sv[2])
{
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
}

/*
 * Sends one raw packet: a header claiming type/hlen, then blen body bytes
 * (zeros unless body is given), with nfds fds as one SCM_RIGHTS message.
 */
static ssize_t
raw_send(int s, uint32_t type, uint32_t hlen, const void *body, size_t blen,
    const int *fds, int nfds)
{
	struct msghdr	 mh;
	struct iovec	 iov[2];
	struct msg_hdr	 hdr;
	struct cmsghdr	*cm;
	unsigned char	*zero = NULL;
	union {
		struct cmsghdr	hdr;
		unsigned char	buf[CMSG_SPACE(8 * sizeof(int))];
	} cbuf;
	ssize_t		 n;

	memset(&hdr, 0, sizeof(hdr));
	hdr.type = type;
	hdr.len = hlen;
	if (body == NULL && blen > 0) {
		zero = calloc(1, blen);
		body = zero;
	}
	memset(&mh, 0, sizeof(mh));
	iov[0].iov_base = &hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = (void *)body;
	iov[1].iov_len = blen;
	mh.msg_iov = iov;
	mh.msg_iovlen = 2;
	if (nfds > 0) {
		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	n = sendmsg(s, &mh, MSG_NOSIGNAL);
	free(zero);
	return n;
}

/* Sends arbitrary bytes as one packet, for headers shorter than msg_hdr. */
static ssize_t
raw_bytes(int s, const void *buf, size_t len, const int *fds, int nfds)
{
	struct msghdr	 mh;
	struct iovec	 iov;
	struct cmsghdr	*cm;
	union {
		struct cmsghdr	hdr;
		unsigned char	buf[CMSG_SPACE(sizeof(int))];
	} cbuf;

	memset(&mh, 0, sizeof(mh));
	iov.iov_base = (void *)buf;
	iov.iov_len = len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (nfds == 1) {
		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), fds, sizeof(int));
	}
	return sendmsg(s, &mh, MSG_NOSIGNAL);
}

static ssize_t
raw_hello(int s, uint32_t version)
{
	struct msg_hello	h;

	memset(&h, 0, sizeof(h));
	h.version = version;
	h.role = ROLE_FRONT;
	h.pid = (uint32_t)getpid();
	return raw_send(s, MSG_HELLO, sizeof(h), &h, sizeof(h), NULL, 0);
}

/*
 * Receiver chan on sv[1], raw sender sv[0].  With hello set, a valid
 * hello is already consumed so the channel is past its handshake.
 */
static void
raw_setup(int sv[2], struct msg_chan *rx, int hello)
{
	make_pair(sv);
	msg_chan_init(rx, sv[1], &test_rules);
	if (hello) {
		CU_ASSERT_FATAL(raw_hello(sv[0], MSG_VERSION) > 0);
		CU_ASSERT_FATAL(msg_recv(rx, &rm) == 1);
		CU_ASSERT_FATAL(rx->hello_seen == 1);
	}
}

/*
 * Expects msg_recv to reject what is pending with -2 for the reason named
 * by why (a substring of errstr), leaking no fd.
 */
static void
expect_violation(struct msg_chan *rx, int fds_before, const char *why)
{
	int	r;

	rx->errstr = NULL;
	r = msg_recv(rx, &rm);
	CU_ASSERT_EQUAL(r, -2);
	CU_ASSERT_EQUAL(rm.fd, -1);
	CU_ASSERT_EQUAL(count_fds(), fds_before);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rx->errstr);
	if (strstr(rx->errstr, why) == NULL)
		fprintf(stderr, "\n  errstr \"%s\", expected \"%s\"\n",
		    rx->errstr, why);
	CU_ASSERT_PTR_NOT_NULL(strstr(rx->errstr, why));
}

static void
test_init_flags(void)
{
	struct msg_chan	c;
	int		sv[2], fl;

	make_pair(sv);
	msg_chan_init(&c, sv[0], &test_rules);
	fl = fcntl(sv[0], F_GETFL);
	CU_ASSERT(fl != -1 && (fl & O_NONBLOCK));
	fl = fcntl(sv[0], F_GETFD);
	CU_ASSERT(fl != -1 && (fl & FD_CLOEXEC));
	CU_ASSERT_EQUAL(c.outq_len, 0);
	CU_ASSERT_EQUAL(c.hello_seen, 0);
	CU_ASSERT_PTR_NULL(TAILQ_FIRST(&c.outq));
	msg_chan_clear(&c);
	CU_ASSERT(fd_is_closed(sv[0]));
	close(sv[1]);
}

/*
 * b reads, a flushes, until ids from..to-1 arrived in that order and a's
 * queue is empty; then both are cleared.
 */
static void
drain_in_order(struct msg_chan *a, struct msg_chan *b, uint64_t from,
    uint64_t to)
{
	int	r, rounds;

	for (rounds = 0; from < to; rounds++) {
		CU_ASSERT_FATAL(rounds < 20000);
		while ((r = msg_recv(b, &rm)) == 1) {
			CU_ASSERT_EQUAL(rm.hdr.id, from);
			from++;
		}
		CU_ASSERT_FATAL(r == 0);
		CU_ASSERT_FATAL(msg_flush(a) >= 0);
	}
	CU_ASSERT_EQUAL(a->outq_len, 0);
	msg_chan_clear(a);
	msg_chan_clear(b);
}

/*
 * msg_chan_ready asks the kernel nothing, and a channel never blocks on a
 * full socket even where its fd was left blocking (a relay's, made so by
 * a parent that did not say SOCK_NONBLOCK): msg_flush reports it full.
 * The alarm turns a send that blocks into this test's failure.
 */
static void
test_ready_never_blocks(void)
{
	struct msg_chan	 a, b;
	unsigned char	*big;
	int		 sv[2], fl, r = 1;
	uint64_t	 queued = 0;

	big = calloc(1, MSG_MAX_BODY);
	CU_ASSERT_FATAL(big != NULL);
	make_pair(sv);
	msg_chan_ready(&a, sv[0], &test_rules);
	fl = fcntl(sv[0], F_GETFL);
	CU_ASSERT(fl != -1 && !(fl & O_NONBLOCK));
	fl = fcntl(sv[0], F_GETFD);
	CU_ASSERT(fl != -1 && !(fl & FD_CLOEXEC));
	CU_ASSERT_EQUAL(a.outq_len, 0);
	CU_ASSERT_EQUAL(a.hello_min, msg_version);
	alarm(10);
	while (r == 1 && queued < 10000) {
		CU_ASSERT_EQUAL(msg_compose(&a, T_BIG, queued, big,
		    MSG_MAX_BODY, -1), 0);
		queued++;
		r = msg_flush(&a);
	}
	alarm(0);
	CU_ASSERT_EQUAL(r, 0);
	CU_ASSERT(a.outq_len > 0);
	/* what was queued is all there, in order, once the peer reads */
	msg_chan_init(&b, sv[1], &test_rules);
	b.hello_seen = 1;
	drain_in_order(&a, &b, 0, queued);
	free(big);
}

/*
 * In a child: sendmsg(2) kills the process from now on (a seccomp
 * program), so that what sends several packets is seen to use one
 * sendmmsg(2).  0, or -1.
 */
static int
no_sendmsg(void)
{
	static struct sock_filter	 nosendmsg[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		    offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sendmsg, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog		 fprog = {
		.len = sizeof(nosendmsg) / sizeof(nosendmsg[0]),
		.filter = nosendmsg,
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) == -1)
		return -1;
	return 0;
}

/*
 * A batch goes with one sendmmsg: composed in a child whose seccomp
 * program kills sendmsg, two packets arrive in order, each with its own
 * body and the second with its fd.
 */
static void
test_batch_one_call(void)
{
	struct msg_chan			 a, b;
	struct msg_batch		 batch;
	unsigned char			 body[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	uint32_t			 v = 0xfeedface;
	int				 sv[2], p[2], status;
	pid_t				 pid;
	char				 c;

	make_pair(sv);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT_FATAL(write(p[1], "x", 1) == 1);
	if ((pid = fork()) == 0) {
		msg_chan_init(&a, sv[0], &test_rules);
		msg_batch_init(&batch);
		if (no_sendmsg() == -1)
			_exit(2);
		if (msg_batch_add(&a, &batch, T_PLAIN, 1, body, sizeof(body),
		    -1) != 0 || msg_batch_add(&a, &batch, T_WITHFD, 2, &v,
		    sizeof(v), p[0]) != 0 || batch.n != 2)
			_exit(3);
		msg_batch_send(&a, &batch);
		/* sent, not queued; the fd closed once it went */
		_exit(a.outq_len == 0 && batch.n == 0 &&
		    fcntl(p[0], F_GETFD) == -1 ? 0 : 4);
	}
	CU_ASSERT_FATAL(pid != -1);
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(p[0]);
	close(p[1]);
	msg_chan_init(&b, sv[1], &test_rules);
	b.hello_seen = 1;
	CU_ASSERT_EQUAL_FATAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_PLAIN);
	CU_ASSERT_EQUAL(rm.hdr.id, 1);
	CU_ASSERT_EQUAL(memcmp(rm.body, body, sizeof(body)), 0);
	CU_ASSERT_EQUAL(rm.fd, -1);
	CU_ASSERT_EQUAL_FATAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_WITHFD);
	CU_ASSERT_EQUAL(rm.hdr.id, 2);
	CU_ASSERT_EQUAL(memcmp(rm.body, &v, sizeof(v)), 0);
	CU_ASSERT_FATAL(rm.fd != -1);
	CU_ASSERT(read(rm.fd, &c, 1) == 1 && c == 'x');
	close(rm.fd);
	CU_ASSERT_EQUAL(msg_recv(&b, &rm), 0);
	close(sv[0]);
	msg_chan_clear(&b);
}

/*
 * msg_defer sends nothing: a deferred message and the one composed after
 * it leave together at msg_flush, in order, with one sendmmsg (in a child
 * whose seccomp program kills sendmsg, as above), the second with its fd.
 */
static void
test_defer(void)
{
	struct msg_chan			 a, b;
	unsigned char			 body[8] = { 8, 7, 6, 5, 4, 3, 2, 1 };
	uint32_t			 v = 0xabad1dea;
	int				 sv[2], p[2], status;
	pid_t				 pid;
	char				 c;

	make_pair(sv);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT_FATAL(write(p[1], "y", 1) == 1);
	msg_chan_init(&b, sv[1], &test_rules);
	b.hello_seen = 1;
	if ((pid = fork()) == 0) {
		msg_chan_init(&a, sv[0], &test_rules);
		if (no_sendmsg() == -1)
			_exit(2);
		if (msg_defer(&a, T_PLAIN, 1, body, sizeof(body), -1) != 0 ||
		    a.outq_len != 1)
			_exit(3);
		/* nothing sent yet */
		if (msg_recv(&b, &rm) != 0)
			_exit(4);
		/* composed behind it: queued, not sent ahead of it */
		if (msg_compose(&a, T_WITHFD, 2, &v, sizeof(v), p[0]) != 0 ||
		    a.outq_len != 2 || msg_recv(&b, &rm) != 0)
			_exit(5);
		if (msg_flush(&a) != 1)
			_exit(6);
		_exit(a.outq_len == 0 && fcntl(p[0], F_GETFD) == -1 ? 0 : 7);
	}
	CU_ASSERT_FATAL(pid != -1);
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(p[0]);
	close(p[1]);
	CU_ASSERT_EQUAL_FATAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_PLAIN);
	CU_ASSERT_EQUAL(rm.hdr.id, 1);
	CU_ASSERT_EQUAL(memcmp(rm.body, body, sizeof(body)), 0);
	CU_ASSERT_EQUAL_FATAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_WITHFD);
	CU_ASSERT_EQUAL(rm.hdr.id, 2);
	CU_ASSERT_FATAL(rm.fd != -1);
	CU_ASSERT(read(rm.fd, &c, 1) == 1 && c == 'y');
	close(rm.fd);
	CU_ASSERT_EQUAL(msg_recv(&b, &rm), 0);
	close(sv[0]);
	msg_chan_clear(&b);
}

/*
 * A batch keeps the order of composing: behind what is queued (a full
 * socket), and around a message too large for it, which msg_compose
 * sends; a body over MSG_MAX_BODY is refused and its fd closed.
 */
static void
test_batch_order(void)
{
	struct msg_chan	 a, b;
	struct msg_batch batch;
	unsigned char	*big;
	uint64_t	 i, queued = 0;
	int		 sv[2], p[2];

	big = calloc(1, MSG_MAX_BODY + 1);
	CU_ASSERT_FATAL(big != NULL);
	make_pair(sv);
	msg_chan_init(&a, sv[0], &test_rules);
	msg_chan_init(&b, sv[1], &test_rules);
	b.hello_seen = 1;
	msg_batch_init(&batch);

	/* small, large (sent by msg_compose after the small), small */
	CU_ASSERT_EQUAL(msg_batch_add(&a, &batch, T_VAR, queued++, big, 4,
	    -1), 0);
	CU_ASSERT_EQUAL(msg_batch_add(&a, &batch, T_BIG, queued++, big,
	    MSG_MAX_BODY, -1), 0);
	CU_ASSERT_EQUAL(batch.n, 0);
	CU_ASSERT_EQUAL(msg_batch_add(&a, &batch, T_VAR, queued++, big, 16,
	    -1), 0);
	CU_ASSERT_EQUAL(batch.n, 1);
	/* a fifth small one sends the four before it: MSG_BATCH_MAX */
	for (i = 0; i < MSG_BATCH_MAX - 1; i++)
		CU_ASSERT_EQUAL(msg_batch_add(&a, &batch, T_VAR, queued++,
		    big, 8, -1), 0);
	CU_ASSERT_EQUAL(batch.n, MSG_BATCH_MAX);
	CU_ASSERT_EQUAL(msg_batch_add(&a, &batch, T_VAR, queued++, big, 8,
	    -1), 0);
	CU_ASSERT_EQUAL(batch.n, 1);
	msg_batch_send(&a, &batch);
	CU_ASSERT_EQUAL(a.outq_len, 0);

	/* too long: refused, its fd closed, nothing of it sent */
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT_EQUAL(msg_batch_add(&a, &batch, T_BIG, 999, big,
	    MSG_MAX_BODY + 1, p[0]), -1);
	CU_ASSERT(fd_is_closed(p[0]));
	close(p[1]);
	CU_ASSERT_EQUAL(batch.n, 0);

	/* the socket full: a batch waits behind what is queued */
	do {
		CU_ASSERT_EQUAL(msg_compose(&a, T_BIG, queued++, big,
		    MSG_MAX_BODY, -1), 0);
	} while (a.outq_len == 0 && queued < 10000);
	CU_ASSERT_FATAL(a.outq_len == 1);
	for (i = 0; i < 2; i++)
		CU_ASSERT_EQUAL(msg_batch_add(&a, &batch, T_VAR, queued++,
		    big, 4, -1), 0);
	msg_batch_send(&a, &batch);
	CU_ASSERT_EQUAL(a.outq_len, 3);

	drain_in_order(&a, &b, 0, queued);
	free(big);
}

static void
test_roundtrip(void)
{
	struct msg_chan	a, b;
	int		sv[2], p[2], sent_fd;
	unsigned char	body[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	uint32_t	v = 0xdeadbeef;
	char		c;

	make_pair(sv);
	msg_chan_init(&a, sv[0], &test_rules);
	msg_chan_init(&b, sv[1], &test_rules);

	CU_ASSERT_EQUAL(msg_recv(&b, &rm), 0);	/* nothing pending */

	CU_ASSERT_EQUAL(msg_hello(&a, ROLE_PARENT), 0);
	CU_ASSERT_EQUAL(msg_hello(&b, ROLE_FRONT), 0);
	CU_ASSERT_EQUAL(msg_flush(&a), 1);
	CU_ASSERT_EQUAL(msg_flush(&b), 1);

	CU_ASSERT_EQUAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, MSG_HELLO);
	CU_ASSERT_EQUAL(rm.fd, -1);
	CU_ASSERT_EQUAL(b.hello_seen, 1);
	CU_ASSERT_EQUAL(b.peer.version, MSG_VERSION);
	CU_ASSERT_EQUAL(b.peer.role, ROLE_PARENT);
	CU_ASSERT_EQUAL(b.peer.pid, (uint32_t)getpid());

	CU_ASSERT_EQUAL(msg_recv(&a, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, MSG_HELLO);
	CU_ASSERT_EQUAL(a.peer.role, ROLE_FRONT);
	CU_ASSERT_EQUAL(msg_recv(&a, &rm), 0);

	/* plain message: nothing queued ahead of it, so it is sent at once */
	CU_ASSERT_EQUAL(msg_compose(&a, T_PLAIN, 42, body, sizeof(body), -1),
	    0);
	CU_ASSERT_EQUAL(a.outq_len, 0);
	CU_ASSERT_EQUAL(msg_flush(&a), 1);
	CU_ASSERT_EQUAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_PLAIN);
	CU_ASSERT_EQUAL(rm.hdr.len, sizeof(body));
	CU_ASSERT_EQUAL(rm.hdr.id, 42);
	CU_ASSERT_EQUAL(rm.fd, -1);
	CU_ASSERT(memcmp(rm.body, body, sizeof(body)) == 0);

	/* empty body */
	CU_ASSERT_EQUAL(msg_compose(&a, T_EMPTY, 7, NULL, 0, -1), 0);
	CU_ASSERT_EQUAL(msg_flush(&a), 1);
	CU_ASSERT_EQUAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_EMPTY);
	CU_ASSERT_EQUAL(rm.hdr.len, 0);
	CU_ASSERT_EQUAL(rm.hdr.id, 7);

	/* message with fd: the write end of a pipe */
	CU_ASSERT_FATAL(pipe(p) == 0);
	sent_fd = p[1];
	CU_ASSERT_EQUAL(msg_compose(&a, T_WITHFD, 9, &v, sizeof(v), sent_fd),
	    0);
	CU_ASSERT(fd_is_closed(sent_fd));	/* sent at once, our copy gone */
	CU_ASSERT_EQUAL(msg_flush(&a), 1);

	CU_ASSERT_EQUAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_WITHFD);
	CU_ASSERT_EQUAL(rm.hdr.id, 9);
	CU_ASSERT(memcmp(rm.body, &v, sizeof(v)) == 0);
	CU_ASSERT_FATAL(rm.fd >= 0);
	CU_ASSERT(fcntl(rm.fd, F_GETFD) & FD_CLOEXEC);
	CU_ASSERT_EQUAL(write(rm.fd, "x", 1), 1);
	CU_ASSERT_EQUAL(read(p[0], &c, 1), 1);
	CU_ASSERT_EQUAL(c, 'x');
	close(rm.fd);
	close(p[0]);

	CU_ASSERT_STRING_EQUAL(msg_type_name(&b, T_WITHFD), "withfd");
	CU_ASSERT_STRING_EQUAL(msg_type_name(&b, MSG_HELLO), "hello");
	CU_ASSERT_STRING_EQUAL(msg_type_name(&b, 999), "unknown");

	msg_chan_clear(&a);
	msg_chan_clear(&b);
}

static void
test_ordering(void)
{
	struct msg_chan	a, b;
	int		sv[2], r, fds_before;
	uint64_t	i, next = 0;
	const uint64_t	count = 2000;
	unsigned char	body[8];

	fds_before = count_fds();
	make_pair(sv);
	msg_chan_init(&a, sv[0], &test_rules);
	msg_chan_init(&b, sv[1], &test_rules);
	CU_ASSERT_EQUAL(msg_hello(&a, ROLE_PARENT), 0);
	for (i = 0; i < count; i++) {
		memcpy(body, &i, sizeof(body));
		CU_ASSERT_EQUAL(msg_compose(&a, T_PLAIN, i, body, sizeof(body),
		    -1), 0);
	}
	/*
	 * The first ones went at once; once the socket was full, the rest
	 * queued, and every later one queued behind them, never ahead.
	 */
	CU_ASSERT(a.outq_len > 0 && a.outq_len < count + 1);

	/* flush and drain in turns until everything arrived in order */
	for (;;) {
		r = msg_flush(&a);
		CU_ASSERT_FATAL(r >= 0);
		while ((r = msg_recv(&b, &rm)) == 1) {
			if (rm.hdr.type == MSG_HELLO) {
				CU_ASSERT_EQUAL(next, 0);
				continue;
			}
			CU_ASSERT_EQUAL(rm.hdr.type, T_PLAIN);
			CU_ASSERT_EQUAL(rm.hdr.id, next);
			CU_ASSERT(memcmp(rm.body, &next, sizeof(next)) == 0);
			next++;
		}
		CU_ASSERT_FATAL(r == 0);
		if (a.outq_len == 0)
			break;
	}
	CU_ASSERT_EQUAL(next, count);
	CU_ASSERT_EQUAL(msg_flush(&a), 1);
	msg_chan_clear(&a);
	msg_chan_clear(&b);
	CU_ASSERT_EQUAL(count_fds(), fds_before);
}

static void
test_flush_full(void)
{
	struct msg_chan	 a, b;
	unsigned char	*big;
	int		 sv[2], r, rounds = 0;
	uint64_t	 i, queued, next = 0;

	big = calloc(1, MSG_MAX_BODY);
	CU_ASSERT_FATAL(big != NULL);
	make_pair(sv);
	msg_chan_init(&a, sv[0], &test_rules);
	msg_chan_init(&b, sv[1], &test_rules);
	CU_ASSERT_EQUAL(msg_hello(&a, ROLE_PARENT), 0);
	CU_ASSERT_EQUAL(msg_flush(&a), 1);

	/* fill the socket until flush reports it full */
	queued = 0;
	do {
		for (i = 0; i < 8; i++) {
			big[0] = (unsigned char)queued;
			CU_ASSERT_EQUAL(msg_compose(&a, T_BIG, queued, big,
			    MSG_MAX_BODY, -1), 0);
			queued++;
		}
		r = msg_flush(&a);
		CU_ASSERT_FATAL(r >= 0);
	} while (r == 1 && queued < 10000);
	CU_ASSERT_EQUAL_FATAL(r, 0);
	CU_ASSERT(a.outq_len > 0);
	CU_ASSERT_EQUAL(msg_flush(&a), 0);	/* still full, nothing lost */

	/* the peer drains; flushing completes */
	CU_ASSERT_EQUAL(msg_recv(&b, &rm), 1);	/* hello */
	for (;;) {
		while ((r = msg_recv(&b, &rm)) == 1) {
			CU_ASSERT_EQUAL(rm.hdr.type, T_BIG);
			CU_ASSERT_EQUAL(rm.hdr.id, next);
			CU_ASSERT_EQUAL(rm.body[0], (unsigned char)next);
			next++;
		}
		CU_ASSERT_FATAL(r == 0);
		r = msg_flush(&a);
		CU_ASSERT_FATAL(r >= 0);
		if (r == 1)
			break;
		CU_ASSERT_FATAL(++rounds < 10000);
	}
	while ((r = msg_recv(&b, &rm)) == 1)
		next++;
	CU_ASSERT_EQUAL(r, 0);
	CU_ASSERT_EQUAL(next, queued);
	CU_ASSERT_EQUAL(a.outq_len, 0);
	msg_chan_clear(&a);
	msg_chan_clear(&b);
	free(big);
}

static void
test_clear_closes_queued_fds(void)
{
	struct msg_chan	a;
	int		sv[2], p[2], fds_before;
	uint32_t	v = 1;

	fds_before = count_fds();
	make_pair(sv);
	CU_ASSERT_FATAL(pipe(p) == 0);
	msg_chan_init(&a, sv[0], &test_rules);
	CU_ASSERT_EQUAL(msg_compose(&a, T_WITHFD, 0, &v, sizeof(v), p[0]), 0);
	CU_ASSERT_EQUAL(msg_compose(&a, T_WITHFD, 0, &v, sizeof(v), p[1]), 0);
	msg_chan_clear(&a);
	CU_ASSERT(fd_is_closed(p[0]));
	CU_ASSERT(fd_is_closed(p[1]));
	CU_ASSERT(fd_is_closed(sv[0]));
	CU_ASSERT_EQUAL(a.outq_len, 0);
	close(sv[1]);
	CU_ASSERT_EQUAL(count_fds(), fds_before);
}

static void
test_compose_too_long(void)
{
	struct msg_chan	 a;
	unsigned char	*big;
	int		 sv[2], p[2];

	big = calloc(1, MSG_MAX_BODY + 1);
	CU_ASSERT_FATAL(big != NULL);
	make_pair(sv);
	msg_chan_init(&a, sv[0], &test_rules);
	a.errstr = NULL;
	CU_ASSERT_EQUAL(msg_compose(&a, T_BIG, 0, big, MSG_MAX_BODY + 1, -1),
	    -1);
	CU_ASSERT_PTR_NOT_NULL(a.errstr);
	CU_ASSERT_EQUAL(a.outq_len, 0);
	/* ownership passed with the call: the fd is closed even on failure */
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT_EQUAL(msg_compose(&a, T_BIG, 0, big, MSG_MAX_BODY + 1, p[1]),
	    -1);
	CU_ASSERT(fd_is_closed(p[1]));
	CU_ASSERT_EQUAL(a.outq_len, 0);
	/* the limit itself is fine: it reaches the peer whole */
	CU_ASSERT_EQUAL(msg_compose(&a, T_BIG, 0, big, MSG_MAX_BODY, -1), 0);
	CU_ASSERT_EQUAL(msg_flush(&a), 1);
	CU_ASSERT_EQUAL(recv(sv[1], big, 1, MSG_TRUNC),
	    (ssize_t)(sizeof(struct msg_hdr) + MSG_MAX_BODY));
	close(p[0]);
	msg_chan_clear(&a);
	close(sv[1]);
	free(big);
}

static void
test_flush_closed_peer(void)
{
	struct msg_chan	a;
	int		sv[2], p[2], fds_before;
	uint32_t	v = 1;

	fds_before = count_fds();
	make_pair(sv);
	msg_chan_init(&a, sv[0], &test_rules);
	close(sv[1]);
	CU_ASSERT_EQUAL(msg_hello(&a, ROLE_PARENT), 0);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT_EQUAL(msg_compose(&a, T_WITHFD, 0, &v, sizeof(v), p[0]), 0);
	close(p[1]);
	a.errstr = NULL;
	CU_ASSERT_EQUAL(msg_flush(&a), -1);	/* EPIPE, no SIGPIPE */
	CU_ASSERT_PTR_NOT_NULL(a.errstr);
	CU_ASSERT_EQUAL(a.outq_len, 2);
	msg_chan_clear(&a);
	CU_ASSERT_EQUAL(count_fds(), fds_before);
}

static void
test_wait(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2], fds_before, status;
	unsigned char	body[8] = "waited!";
	void		*got;
	pid_t		pid;

	/* HELLO, then a message with an fd, then the one waited for */
	make_pair(sv);
	msg_chan_init(&rx, sv[1], &test_rules);
	CU_ASSERT_FATAL(raw_hello(sv[0], MSG_VERSION) > 0);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_send(sv[0], T_WITHFD, 4, NULL, 4, &p[0], 1) > 0);
	close(p[0]);
	close(p[1]);
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, body, 8, NULL, 0) > 0);
	fds_before = count_fds();
	got = msg_wait(&rx, &rm, T_PLAIN, "test");
	CU_ASSERT_PTR_EQUAL(got, rm.body);
	CU_ASSERT_EQUAL(rm.hdr.type, T_PLAIN);
	CU_ASSERT(memcmp(got, body, sizeof(body)) == 0);
	/* the fd that came with the message passed over was closed */
	CU_ASSERT_EQUAL(count_fds(), fds_before);

	/* nothing pending: it waits for the sender */
	fflush(NULL);	/* no copy of CUnit's buffered output in the child */
	if ((pid = fork()) == 0) {
		_exit(raw_send(sv[0], T_EMPTY, 0, NULL, 0, NULL, 0) > 0 ? 0 : 1);
	}
	CU_ASSERT_FATAL(pid > 0);
	msg_wait(&rx, &rm, T_EMPTY, "test");
	CU_ASSERT_EQUAL(rm.hdr.type, T_EMPTY);
	CU_ASSERT(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0);

	/* the channel ends first: the process exits 1 */
	close(sv[0]);
	fflush(NULL);
	if ((pid = fork()) == 0) {
		msg_wait(&rx, &rm, T_PLAIN, "test");
		_exit(0);
	}
	CU_ASSERT_FATAL(pid > 0);
	CU_ASSERT(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 1);
	msg_chan_clear(&rx);
}

static void
test_eof(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2], fds_before;

	/* before hello */
	raw_setup(sv, &rx, 0);
	close(sv[0]);
	rx.errstr = NULL;
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), -1);
	CU_ASSERT_PTR_NOT_NULL(rx.errstr);
	msg_chan_clear(&rx);

	/* after hello, with messages still pending: those come first */
	raw_setup(sv, &rx, 1);
	CU_ASSERT(raw_send(sv[0], T_EMPTY, 0, NULL, 0, NULL, 0) > 0);
	close(sv[0]);
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 1);
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), -1);
	msg_chan_clear(&rx);

	/* an empty packet reads as EOF; an fd riding on it is not leaked */
	raw_setup(sv, &rx, 1);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_bytes(sv[0], "", 0, &p[0], 1) == 0);
	close(p[0]);
	close(p[1]);
	fds_before = count_fds();
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), -1);
	CU_ASSERT_EQUAL(count_fds(), fds_before);
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_first_not_hello(void)
{
	struct msg_chan	rx;
	int		sv[2];

	raw_setup(sv, &rx, 0);
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, NULL, 8, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "before hello");
	CU_ASSERT_EQUAL(rx.hello_seen, 0);
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_hello_version(void)
{
	struct msg_chan	rx;
	int		sv[2];

	raw_setup(sv, &rx, 0);
	CU_ASSERT(raw_hello(sv[0], MSG_VERSION + 1) > 0);
	expect_violation(&rx, count_fds(), "version mismatch");
	CU_ASSERT_EQUAL(rx.hello_seen, 0);
	CU_ASSERT(raw_hello(sv[0], 0) > 0);
	expect_violation(&rx, count_fds(), "version mismatch");
	close(sv[0]);
	msg_chan_clear(&rx);
}

/*
 * A parent that adopted workers in an upgrade takes the HELLO of a worker
 * still starting from the version before its own (docs/upgrade.md): the
 * channel's hello_min, and nothing older or newer.
 */
static void
test_hello_version_range(void)
{
	struct msg_chan	rx;
	int		sv[2];

	CU_ASSERT_EQUAL(msg_version, MSG_VERSION);
	raw_setup(sv, &rx, 0);
	CU_ASSERT_EQUAL(rx.hello_min, MSG_VERSION);
	rx.hello_min = MSG_VERSION_OLDEST(MSG_VERSION);
	CU_ASSERT(raw_hello(sv[0], MSG_VERSION - 2) > 0);
	expect_violation(&rx, count_fds(), "version mismatch");
	CU_ASSERT(raw_hello(sv[0], MSG_VERSION + 1) > 0);
	expect_violation(&rx, count_fds(), "version mismatch");
	CU_ASSERT(raw_hello(sv[0], MSG_VERSION - 1) > 0);
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 1);
	CU_ASSERT_EQUAL(rx.hello_seen, 1);
	CU_ASSERT_EQUAL(rx.peer.version, MSG_VERSION - 1);
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_hello_length(void)
{
	struct msg_chan		rx;
	int			sv[2];
	unsigned char		buf[sizeof(struct msg_hello) + 4];
	struct msg_hello	h;

	memset(&h, 0, sizeof(h));
	h.version = MSG_VERSION;
	memset(buf, 0, sizeof(buf));
	memcpy(buf, &h, sizeof(h));

	raw_setup(sv, &rx, 0);
	/* one word short */
	CU_ASSERT(raw_send(sv[0], MSG_HELLO, sizeof(h) - 4, buf, sizeof(h) - 4,
	    NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "hello: length");
	/* one word long */
	CU_ASSERT(raw_send(sv[0], MSG_HELLO, sizeof(buf), buf, sizeof(buf),
	    NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "hello: length");
	CU_ASSERT_EQUAL(rx.hello_seen, 0);
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_hello_fd(void)
{
	struct msg_chan		rx;
	struct msg_hello	h;
	int			sv[2], p[2], before;

	memset(&h, 0, sizeof(h));
	h.version = MSG_VERSION;
	raw_setup(sv, &rx, 0);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_send(sv[0], MSG_HELLO, sizeof(h), &h, sizeof(h), &p[0],
	    1) > 0);
	close(p[0]);
	close(p[1]);
	before = count_fds();
	expect_violation(&rx, before, "hello: unexpected fd");
	CU_ASSERT_EQUAL(rx.hello_seen, 0);
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_second_hello(void)
{
	struct msg_chan	rx;
	int		sv[2];

	raw_setup(sv, &rx, 1);
	CU_ASSERT(raw_hello(sv[0], MSG_VERSION) > 0);
	expect_violation(&rx, count_fds(), "second hello");
	close(sv[0]);
	msg_chan_clear(&rx);
}

/*
 * A HELLO known without one (a relay's channel: the zygote's stands for
 * it): the first message is taken as any other, and a HELLO after is a
 * second one.
 */
static void
test_hello_known(void)
{
	struct msg_chan	rx;
	int		sv[2];
	unsigned char	body[8] = { 0 };

	raw_setup(sv, &rx, 0);
	msg_hello_known(&rx, MSG_VERSION, ROLE_RELAY, 4242);
	CU_ASSERT_EQUAL(rx.hello_seen, 1);
	CU_ASSERT_EQUAL(rx.peer.version, MSG_VERSION);
	CU_ASSERT_EQUAL(rx.peer.role, ROLE_RELAY);
	CU_ASSERT_EQUAL(rx.peer.pid, 4242);
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, body, 8, NULL, 0) > 0);
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_PLAIN);
	CU_ASSERT(raw_hello(sv[0], MSG_VERSION) > 0);
	expect_violation(&rx, count_fds(), "second hello");
	close(sv[0]);
	msg_chan_clear(&rx);
}

/*
 * A pack as msg_batch lays one out: each message's header and body, the
 * next header 8-byte aligned.  Returns its length.
 */
static size_t
pack_add(unsigned char *buf, size_t used, uint32_t type, uint64_t id,
    const void *body, uint32_t len)
{
	struct msg_hdr	hdr;

	memset(&hdr, 0, sizeof(hdr));
	hdr.type = type;
	hdr.len = len;
	hdr.id = id;
	memcpy(buf + used, &hdr, sizeof(hdr));
	if (len > 0)
		memcpy(buf + used + sizeof(hdr), body, len);
	return used + ((sizeof(hdr) + len + 7) & ~(size_t)7);
}

/*
 * A batch of messages without fds, on a channel marked pack_out: one
 * packet (MSG_PACK), which a receiver marked pack_in reads as the
 * messages, in order, each judged as if it came alone.  A batch of one,
 * or with an fd, goes as before.
 */
static void
test_pack(void)
{
	struct msg_chan		a, b;
	struct msg_batch	batch;
	struct msg_hdr		peek;
	unsigned char		body[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	unsigned char		var[12] = { 9 };
	int			sv[2];

	make_pair(sv);
	msg_chan_init(&a, sv[0], &test_rules);
	msg_chan_init(&b, sv[1], &test_rules);
	a.hello_seen = b.hello_seen = 1;
	a.pack_out = 1;
	b.pack_in = 1;
	msg_batch_init(&batch);
	CU_ASSERT(msg_batch_add(&a, &batch, T_PLAIN, 1, body, 8, -1) == 0);
	CU_ASSERT(msg_batch_add(&a, &batch, T_EMPTY, 2, NULL, 0, -1) == 0);
	CU_ASSERT(msg_batch_add(&a, &batch, T_VAR, 3, var, 12, -1) == 0);
	msg_batch_send(&a, &batch);
	CU_ASSERT_EQUAL(a.outq_len, 0);
	/* one packet in the socket, a pack */
	CU_ASSERT_EQUAL(recv(sv[1], &peek, sizeof(peek), MSG_PEEK |
	    MSG_DONTWAIT), (ssize_t)sizeof(peek));
	CU_ASSERT_EQUAL(peek.type, MSG_PACK);
	CU_ASSERT_EQUAL_FATAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_PLAIN);
	CU_ASSERT_EQUAL(rm.hdr.id, 1);
	CU_ASSERT_EQUAL(memcmp(rm.body, body, 8), 0);
	CU_ASSERT_EQUAL(rm.fd, -1);
	CU_ASSERT(msg_pending(&b));
	CU_ASSERT_EQUAL_FATAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_EMPTY);
	CU_ASSERT_EQUAL(rm.hdr.id, 2);
	CU_ASSERT_EQUAL_FATAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_VAR);
	CU_ASSERT_EQUAL(rm.hdr.len, 12);
	CU_ASSERT_EQUAL(rm.body[0], 9);
	CU_ASSERT(!msg_pending(&b));
	CU_ASSERT_EQUAL(msg_recv(&b, &rm), 0);

	/* one message alone: not packed */
	CU_ASSERT(msg_batch_add(&a, &batch, T_PLAIN, 4, body, 8, -1) == 0);
	msg_batch_send(&a, &batch);
	CU_ASSERT_EQUAL(recv(sv[1], &peek, sizeof(peek), MSG_PEEK |
	    MSG_DONTWAIT), (ssize_t)sizeof(peek));
	CU_ASSERT_EQUAL(peek.type, T_PLAIN);
	CU_ASSERT_EQUAL_FATAL(msg_recv(&b, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.id, 4);
	msg_chan_clear(&a);
	msg_chan_clear(&b);
}

/* A pack the receiver does not take, or that does not hold together. */
static void
test_reject_pack(void)
{
	struct msg_chan	rx;
	unsigned char	pk[MSG_BATCH_BYTES + 64], body[8] = { 0 };
	uint32_t	v = 0;
	size_t		n;
	int		sv[2], p[2];

	/* on a channel that takes none */
	raw_setup(sv, &rx, 1);
	n = pack_add(pk, 0, T_PLAIN, 1, body, 8);
	n = pack_add(pk, n, T_EMPTY, 2, NULL, 0);
	CU_ASSERT(raw_send(sv[0], MSG_PACK, n, pk, n, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "pack not taken");
	close(sv[0]);
	msg_chan_clear(&rx);

	/* before HELLO */
	raw_setup(sv, &rx, 0);
	rx.pack_in = 1;
	CU_ASSERT(raw_send(sv[0], MSG_PACK, n, pk, n, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "before hello");
	close(sv[0]);
	msg_chan_clear(&rx);

#define PACK_CASE(len, fds, nfds, why) do {				\
	raw_setup(sv, &rx, 1);						\
	rx.pack_in = 1;							\
	CU_ASSERT(raw_send(sv[0], MSG_PACK, (len), pk, (len), (fds),	\
	    (nfds)) > 0);						\
	expect_violation(&rx, count_fds(), (why));			\
	CU_ASSERT(!msg_pending(&rx));					\
	close(sv[0]);							\
	msg_chan_clear(&rx);						\
} while (0)

	/* with an fd */
	CU_ASSERT_FATAL(pipe(p) == 0);
	PACK_CASE(n, &p[0], 1, "pack: unexpected fd");
	/* longer than a batch */
	memset(pk, 0, sizeof(pk));
	PACK_CASE(MSG_BATCH_BYTES + 8, NULL, 0, "pack: length");
	/* a message past the pack's end */
	n = pack_add(pk, 0, T_PLAIN, 1, body, 8);
	PACK_CASE(n - 8, NULL, 0, "past its end");
	/* bytes after the last message */
	PACK_CASE(n + 8, NULL, 0, "after its last message");
	/* a pack in a pack, a HELLO in a pack */
	n = pack_add(pk, 0, MSG_PACK, 1, body, 8);
	PACK_CASE(n, NULL, 0, "in a pack");
	n = pack_add(pk, 0, MSG_HELLO, 1, body, 8);
	PACK_CASE(n, NULL, 0, "in a pack");
	/* a type that needs an fd, which a pack cannot carry */
	n = pack_add(pk, 0, T_WITHFD, 1, &v, sizeof(v));
	PACK_CASE(n, NULL, 0, "fd missing");
	/* the second of two is judged as the first: its length */
	n = pack_add(pk, 0, T_PLAIN, 1, body, 8);
	n = pack_add(pk, n, T_PLAIN, 2, body, 4);
	raw_setup(sv, &rx, 1);
	rx.pack_in = 1;
	CU_ASSERT(raw_send(sv[0], MSG_PACK, n, pk, n, NULL, 0) > 0);
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 1);
	expect_violation(&rx, count_fds(), "length 4, want 8");
	CU_ASSERT(!msg_pending(&rx));
	close(sv[0]);
	msg_chan_clear(&rx);
	close(p[0]);
	close(p[1]);
#undef PACK_CASE
}

static void
test_reject_unknown_type(void)
{
	struct msg_chan	rx;
	int		sv[2];

	raw_setup(sv, &rx, 1);
	CU_ASSERT(raw_send(sv[0], 99, 8, NULL, 8, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "unknown type 99");
	CU_ASSERT(raw_send(sv[0], 0, 0, NULL, 0, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "unknown type 0");
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_body_length(void)
{
	struct msg_chan	rx;
	int		sv[2];

	raw_setup(sv, &rx, 1);
	/* one short, header consistent with the packet */
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 7, NULL, 7, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "length 7, want 8");
	/* one long */
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 9, NULL, 9, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "length 9, want 8");
	/* body on a type that has none */
	CU_ASSERT(raw_send(sv[0], T_EMPTY, 1, NULL, 1, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "length 1, want 0");
	/* header length disagrees with the packet, either way */
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, NULL, 4, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "header says 8 bytes, packet has 4");
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, NULL, 12, NULL, 0) > 0);
	expect_violation(&rx, count_fds(),
	    "header says 8 bytes, packet has 12");
	/* a valid one still goes through afterwards */
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, NULL, 8, NULL, 0) > 0);
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 1);
	/* a type of variable length: minlen to len bytes, both ends in */
	CU_ASSERT(raw_send(sv[0], T_VAR, 3, NULL, 3, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "length 3, want 4 to 16");
	CU_ASSERT(raw_send(sv[0], T_VAR, 17, NULL, 17, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "length 17, want 4 to 16");
	CU_ASSERT(raw_send(sv[0], T_VAR, 4, NULL, 4, NULL, 0) > 0);
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.len, 4);
	CU_ASSERT(raw_send(sv[0], T_VAR, 16, NULL, 16, NULL, 0) > 0);
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.len, 16);
	close(sv[0]);
	msg_chan_clear(&rx);
}

/*
 * A body its row's check refuses is a violation like a bad length: -2,
 * the check's reason in errstr, its fd closed; a body it accepts comes
 * back with its row.
 */
static void
test_reject_body_check(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2];
	unsigned char	bad[4] = { 0, 0, 1, 0 }, good[4] = { 0 };

	raw_setup(sv, &rx, 1);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_send(sv[0], T_CHECKED, 4, bad, 4, &p[0], 1) > 0);
	close(p[0]);
	expect_violation(&rx, count_fds(), "type 7 (checked): not zero");
	/* the fd that came with it is closed: the pipe's reader is gone */
	CU_ASSERT(write(p[1], "x", 1) == -1 && errno == EPIPE);
	close(p[1]);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_send(sv[0], T_CHECKED, 4, good, 4, &p[0], 1) > 0);
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 1);
	CU_ASSERT_PTR_EQUAL(rm.rule, &test_rows[5]);
	CU_ASSERT(rm.fd != -1);
	close(rm.fd);
	close(p[0]);
	close(p[1]);
	close(sv[0]);
	msg_chan_clear(&rx);
}

/*
 * msg_handle calls the row's handler with arg, which owns the fd; a
 * message with no handler (HELLO, a row without one) has its fd closed.
 */
static void
test_handle(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2], one = 1, fds;
	unsigned char	zero[4] = { 0 };

	make_pair(sv);
	msg_chan_init(&rx, sv[1], &test_rules);
	CU_ASSERT_FATAL(raw_hello(sv[0], MSG_VERSION) > 0);
	CU_ASSERT_FATAL(msg_recv(&rx, &rm) == 1);
	CU_ASSERT_PTR_NULL(rm.rule);
	msg_handle(&rm, &one);		/* HELLO: nothing to call */
	CU_ASSERT_EQUAL(handled, 0);

	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_send(sv[0], T_CHECKED, 4, zero, 4, &p[0], 1) > 0);
	CU_ASSERT_FATAL(msg_recv(&rx, &rm) == 1);
	msg_handle(&rm, &one);
	CU_ASSERT_EQUAL(handled, 1);
	CU_ASSERT_EQUAL(handled_fd, rm.fd);
	CU_ASSERT(fcntl(handled_fd, F_GETFD) != -1);	/* the handler's now */
	close(handled_fd);

	/* no handler: the fd is closed, nothing is called */
	CU_ASSERT(raw_send(sv[0], T_WITHFD, 4, NULL, 4, &p[0], 1) > 0);
	close(p[0]);
	CU_ASSERT_FATAL(msg_recv(&rx, &rm) == 1);
	fds = count_fds();
	msg_handle(&rm, &one);
	CU_ASSERT_EQUAL(handled, 1);
	CU_ASSERT_EQUAL(count_fds(), fds - 1);
	CU_ASSERT(write(p[1], "x", 1) == -1 && errno == EPIPE);
	close(p[1]);
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_fd_not_allowed(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2];

	raw_setup(sv, &rx, 1);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, NULL, 8, &p[1], 1) > 0);
	close(p[0]);
	close(p[1]);
	expect_violation(&rx, count_fds(), "unexpected fd");
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_fd_missing(void)
{
	struct msg_chan	rx;
	int		sv[2];

	raw_setup(sv, &rx, 1);
	CU_ASSERT(raw_send(sv[0], T_WITHFD, 4, NULL, 4, NULL, 0) > 0);
	expect_violation(&rx, count_fds(), "fd missing");
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_many_fds(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2], q[2], fds[3];

	raw_setup(sv, &rx, 1);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT_FATAL(pipe(q) == 0);
	fds[0] = p[0];
	fds[1] = p[1];
	fds[2] = q[0];
	/* two fds fit the one-fd cmsg buffer on LP64: counted, not truncated */
	CU_ASSERT(raw_send(sv[0], T_WITHFD, 4, NULL, 4, fds, 2) > 0);
	/* three do not: MSG_CTRUNC, and the ones that arrived are closed */
	CU_ASSERT(raw_send(sv[0], T_WITHFD, 4, NULL, 4, fds, 3) > 0);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
	expect_violation(&rx, count_fds(), "2 fds");
	expect_violation(&rx, count_fds(), "truncated control data");
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_truncated(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2];
	int		sndbuf = 4 * MSG_MAX_BODY;

	raw_setup(sv, &rx, 1);
	CU_ASSERT(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf,
	    sizeof(sndbuf)) == 0);
	CU_ASSERT_FATAL(pipe(p) == 0);
	/* one byte more than the receive buffer, header consistent */
	CU_ASSERT(raw_send(sv[0], T_BIG, MSG_MAX_BODY + 1, NULL,
	    MSG_MAX_BODY + 1, NULL, 0) > 0);
	/* the same carrying an fd */
	CU_ASSERT(raw_send(sv[0], T_BIG, MSG_MAX_BODY + 1, NULL,
	    MSG_MAX_BODY + 1, &p[0], 1) > 0);
	close(p[0]);
	close(p[1]);
	expect_violation(&rx, count_fds(), "truncated packet");
	expect_violation(&rx, count_fds(), "truncated packet");
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 0);
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_short_header(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2];
	unsigned char	buf[sizeof(struct msg_hdr)];

	memset(buf, 0, sizeof(buf));
	buf[0] = MSG_HELLO;

	/* before hello */
	raw_setup(sv, &rx, 0);
	CU_ASSERT(raw_bytes(sv[0], buf, 8, NULL, 0) == 8);
	expect_violation(&rx, count_fds(), "short packet");
	close(sv[0]);
	msg_chan_clear(&rx);

	/* after hello, one byte short, with an fd */
	raw_setup(sv, &rx, 1);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_bytes(sv[0], buf, sizeof(buf) - 1, &p[0], 1) > 0);
	close(p[0]);
	close(p[1]);
	expect_violation(&rx, count_fds(), "short packet");
	close(sv[0]);
	msg_chan_clear(&rx);
}

/*
 * msg_recv() while this process has no descriptor free: RLIMIT_NOFILE is
 * lowered to the lowest free fd number for the call.
 */
static int
recv_without_fds(struct msg_chan *rx)
{
	struct rlimit	old, low;
	int		lowest, r;

	CU_ASSERT_FATAL((lowest = dup(0)) != -1);
	close(lowest);
	CU_ASSERT_FATAL(getrlimit(RLIMIT_NOFILE, &old) == 0);
	low = old;
	low.rlim_cur = lowest;
	CU_ASSERT_FATAL(setrlimit(RLIMIT_NOFILE, &low) == 0);
	rx->errstr = NULL;
	r = msg_recv(rx, &rm);
	CU_ASSERT_FATAL(setrlimit(RLIMIT_NOFILE, &old) == 0);
	return r;
}

static void
test_reject_fd_not_installed(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2], r, before;

	/*
	 * At RLIMIT_NOFILE the kernel drops the fd and sets MSG_CTRUNC: the
	 * packet must not pass as one that never carried an fd.
	 */
	raw_setup(sv, &rx, 1);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, NULL, 8, &p[0], 1) > 0);
	close(p[0]);
	close(p[1]);
	before = count_fds();
	r = recv_without_fds(&rx);
	CU_ASSERT_EQUAL(r, -2);
	CU_ASSERT_EQUAL(rm.fd, -1);
	/*
	 * Under valgrind, which only emulates RLIMIT_NOFILE, the fd does
	 * arrive and is rejected as unexpected instead.
	 */
	CU_ASSERT(rx.errstr != NULL &&
	    (strstr(rx.errstr, "truncated control data") != NULL ||
	    strstr(rx.errstr, "unexpected fd") != NULL));
	CU_ASSERT_EQUAL(count_fds(), before);
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_fd_lost(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2], r, before;
	uint32_t	v = 7, w = 8;

	/*
	 * A type that requires an fd, received at RLIMIT_NOFILE: the kernel
	 * drops the fd (MSG_CTRUNC, none installed).  That is our shortage,
	 * not the peer's fault: the message comes back marked fd_lost, and
	 * the channel goes on.
	 */
	raw_setup(sv, &rx, 1);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_send(sv[0], T_WITHFD, 4, &v, 4, &p[0], 1) > 0);
	CU_ASSERT(raw_send(sv[0], T_WITHFD, 4, &w, 4, &p[0], 1) > 0);
	close(p[0]);
	before = count_fds();
	r = recv_without_fds(&rx);
	CU_ASSERT_EQUAL(r, 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_WITHFD);
	CU_ASSERT_EQUAL(memcmp(rm.body, &v, 4), 0);
	/* under valgrind, which only emulates RLIMIT_NOFILE, it arrives */
	if (rm.fd != -1) {
		CU_ASSERT_EQUAL(rm.fd_lost, 0);
		close(rm.fd);
	} else
		CU_ASSERT_EQUAL(rm.fd_lost, 1);
	CU_ASSERT_EQUAL(count_fds(), before);
	/* the next message, with room again, arrives whole */
	CU_ASSERT_EQUAL(msg_recv(&rx, &rm), 1);
	CU_ASSERT_EQUAL(rm.hdr.type, T_WITHFD);
	CU_ASSERT_EQUAL(memcmp(rm.body, &w, 4), 0);
	CU_ASSERT(rm.fd >= 0);
	CU_ASSERT_EQUAL(rm.fd_lost, 0);
	if (rm.fd >= 0)
		close(rm.fd);
	close(p[1]);
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_reject_foreign_cmsg(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2], on = 1;

	/* SO_PASSCRED makes the kernel add SCM_CREDENTIALS: never expected */
	raw_setup(sv, &rx, 1);
	CU_ASSERT_FATAL(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on,
	    sizeof(on)) == 0);
	CU_ASSERT_FATAL(pipe(p) == 0);
	CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, NULL, 8, NULL, 0) > 0);
	CU_ASSERT(raw_send(sv[0], T_WITHFD, 4, NULL, 4, &p[0], 1) > 0);
	close(p[0]);
	close(p[1]);
	expect_violation(&rx, count_fds(), "unexpected control message");
	expect_violation(&rx, count_fds(), "unexpected control message");
	close(sv[0]);
	msg_chan_clear(&rx);
}

static void
test_no_leak_overall(void)
{
	struct msg_chan	rx;
	int		sv[2], p[2], i, before;

	/* many rejected packets with fds: the fd table must not grow */
	before = count_fds();
	raw_setup(sv, &rx, 1);
	for (i = 0; i < 64; i++) {
		CU_ASSERT_FATAL(pipe(p) == 0);
		CU_ASSERT(raw_send(sv[0], T_PLAIN, 8, NULL, 8, p, 2) > 0);
		close(p[0]);
		close(p[1]);
		CU_ASSERT_EQUAL(msg_recv(&rx, &rm), -2);
	}
	close(sv[0]);
	msg_chan_clear(&rx);
	CU_ASSERT_EQUAL(count_fds(), before);
}

static CU_TestInfo msg_tests[] = {
	{ "chan_init flags", test_init_flags },
	{ "chan_ready never blocks", test_ready_never_blocks },
	{ "batch: one sendmmsg", test_batch_one_call },
	{ "batch: order kept", test_batch_order },
	{ "defer: leaves with the next flush", test_defer },
	{ "pack: a batch without fds in one packet", test_pack },
	{ "round trip", test_roundtrip },
	{ "ordering", test_ordering },
	{ "flush when full", test_flush_full },
	{ "clear closes queued fds", test_clear_closes_queued_fds },
	{ "compose too long", test_compose_too_long },
	{ "flush to closed peer", test_flush_closed_peer },
	{ "eof", test_eof },
	{ "wait", test_wait },
	{ "handle", test_handle },
	CU_TEST_INFO_NULL
};

static CU_TestInfo msg_rejections_tests[] = {
	{ "first not hello", test_reject_first_not_hello },
	{ "hello version", test_reject_hello_version },
	{ "hello of the version before", test_hello_version_range },
	{ "hello length", test_reject_hello_length },
	{ "hello with fd", test_reject_hello_fd },
	{ "second hello", test_reject_second_hello },
	{ "hello known: none first, one after is a second",
	    test_hello_known },
	{ "unknown type", test_reject_unknown_type },
	{ "pack", test_reject_pack },
	{ "body length", test_reject_body_length },
	{ "body check", test_reject_body_check },
	{ "fd not allowed", test_reject_fd_not_allowed },
	{ "fd missing", test_reject_fd_missing },
	{ "several fds", test_reject_many_fds },
	{ "truncated packet", test_reject_truncated },
	{ "short header", test_reject_short_header },
	{ "fd lost at RLIMIT_NOFILE", test_fd_lost },
	{ "fd not installed", test_reject_fd_not_installed },
	{ "foreign control message", test_reject_foreign_cmsg },
	{ "no fd leak", test_no_leak_overall },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "msg", NULL, NULL, NULL, NULL, msg_tests },
	{ "msg rejections", NULL, NULL, NULL, NULL, msg_rejections_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	/* a write to a pipe whose reader was closed says EPIPE */
	signal(SIGPIPE, SIG_IGN);
	return unit_run(suites);
}
