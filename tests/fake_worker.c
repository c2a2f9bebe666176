/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * A worker that lies, for tests/integration/test_hostile_workers.py.  It
 * takes the place of a front or of the relay zygote: the test puts a
 * script that runs it where the parent starts that worker from
 * (docs/messages.md, "Fake workers in the tests"), so nothing in pyrelayd
 * itself serves tests.  It speaks msg.c's protocol on fd 3 as the real
 * worker does up to its HELLO, then does the one wrong thing its case
 * names, says so on stderr (the daemon's log under -d), and waits for its
 * end.  A relay-* case is a zygote that forks one fake relay, as the
 * real one forks relays, and exits: the parent starts a real zygote
 * again.  A zygote-* case answers the parent's first MSG_FORK wrong, or
 * (zygote-silent) never.
 *
 *	fake_worker case [restore-from restore-to [worker arguments]]
 *
 * restore-from is first renamed to restore-to: the real executable is
 * back for the next start, so one worker only is fake.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msg.h"
#include "proto.h"
#include "pyrelayd.h"
#include "sandbox.h"

#define CHAN_FD		3

static struct msg_chan	 chan;
static struct msg	 m;
static const char	*name;
static struct msg_setup	 setup;
static struct msg_rule	 rules[MSG_TYPE_MAX];
static struct msg_rules	 table;

/* One line in one write(2), so that it is not mixed with the daemon's. */
static void
say(const char *fmt, ...)
{
	char	line[512];
	va_list	ap;
	int	n;

	n = snprintf(line, sizeof(line), "fake_worker[%d]: case=%s ",
	    (int)getpid(), name);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	strlcat(line, "\n", sizeof(line));
	if (write(STDERR_FILENO, line, strlen(line)) == -1)
		return;
}

/*
 * Whatever the parent sends, up to the largest body, with an fd for the
 * types that carry one: the fake judges nothing it is told.
 */
static void
rules_init(void)
{
	uint32_t	t;

	for (t = MSG_SETUP; t < MSG_TYPE_MAX; t++) {
		rules[t].type = t;
		rules[t].len = MSG_MAX_BODY;
		rules[t].minlen = 1;
		rules[t].name = "any";
		rules[t].fd = t == MSG_CONN_NEW || t == MSG_CONN_VERDICT ||
		    t == MSG_CONN_ATTACH || t == MSG_FORK ? MSG_FD_REQUIRED :
		    MSG_FD_NONE;
	}
}


/* Sends what is queued, waiting for room. */
static void
flush_all(void)
{
	struct pollfd	pfd;
	int		rv;

	while ((rv = msg_flush(&chan)) == 0) {
		pfd.fd = chan.fd;
		pfd.events = POLLOUT;
		poll(&pfd, 1, -1);
	}
	if (rv == -1)
		fatalx("fake_worker: send: %s", chan.errstr);
}

static void
send_msg(uint32_t type, uint64_t id, const void *body, size_t len, int fd)
{
	if (msg_compose(&chan, type, id, body, len, fd) == -1)
		fatalx("fake_worker: compose: %s", chan.errstr);
	flush_all();
}

/* The next message of this type (others passed over); m holds it. */
static void *
wait_for(uint32_t type)
{
	return msg_wait(&chan, &m, type, "fake_worker");
}

/*
 * As the zygote: the parent's first MSG_FORK, and a child of the parent
 * (CLONE_PARENT) on the channel end that came with it.  In the child,
 * returns that end with the channel now on it, the parent's HELLO known;
 * in the zygote, answers the pid and exits.
 */
static void
fork_one(void)
{
	struct msg_spawned	rep;
	pid_t			pid;
	int			fd;

	wait_for(MSG_FORK);
	fd = m.fd;
	if ((pid = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, NULL,
	    NULL, 0)) == -1)
		fatal("fake_worker: clone");
	if (pid == 0) {
		struct msg_hello	parent = chan.peer;

		close(CHAN_FD);
		log_init(1, 0, "fake_worker");
		table.to = ROLE_RELAY;
		msg_chan_init(&chan, fd, &table);
		/* no HELLO on a relay's channel: the zygote's stands for it */
		msg_hello_known(&chan, parent.version, parent.role, parent.pid);
		return;
	}
	memset(&rep, 0, sizeof(rep));
	rep.pid = pid;
	/* the test lets it go on once the parent has dealt with the relay */
	if (strcmp(name, "relay-state-unnamed") == 0) {
		say("stops before SPAWNED");
		raise(SIGSTOP);
	}
	send_msg(MSG_SPAWNED, m.hdr.id, &rep, sizeof(rep), -1);
	exit(0);
}

/* Reads and drops whatever comes, until the parent closes the channel. */
static void __attribute__((__noreturn__))
idle(void)
{
	for (;;)
		wait_for(MSG_TYPE_MAX);
}

/* A /v1/server request a front could have parsed, for server-id sid. */
static void
valid_upgrade(struct msg_conn_upgrade *up, const char *sid)
{
	memset(up, 0, sizeof(*up));
	up->peer.ss_family = AF_INET;
	up->kind = CONN_BINARY;
	strlcpy(up->server_id, sid, sizeof(up->server_id));
	memset(up->ws_accept, 'A', WS_ACCEPT_LEN - 1);
	up->ws_accept[WS_ACCEPT_LEN - 1] = '=';
}

static int
tcp_socket(void)
{
	int	fd;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		fatal("fake_worker: socket");
	return fd;
}

static int
pipe_end(void)
{
	int	fds[2];

	if (pipe(fds) == -1)
		fatal("fake_worker: pipe");
	close(fds[1]);
	return fds[0];
}

/* A front hands a connection it was given on as an upgrade, with fd. */
static void
front_upgrade_with(int fd, const char *what)
{
	struct msg_conn_upgrade	up;
	uint64_t		id;

	wait_for(MSG_CONN_NEW);
	id = m.hdr.id;
	close(m.fd);
	valid_upgrade(&up, "fake-front");
	send_msg(MSG_CONN_UPGRADE, id, &up, CONN_UPGRADE_LEN(&up), fd);
	say("sent CONN_UPGRADE conn=%llu with %s", (unsigned long long)id, what);
}

/* A relay retires, then hands its binary back changed as asked. */
static void
relay_reroute(const char *sid, int fd, const char *what)
{
	struct msg_conn_upgrade	up;
	struct msg_empty	e = { 0 };
	uint64_t		id;
	int			conn;

	memcpy(&up, wait_for(MSG_CONN_ATTACH), CONN_UPGRADE_MIN);
	id = m.hdr.id;
	conn = m.fd;
	up.preread_len = 0;
	send_msg(MSG_RETIRE, 0, &e, sizeof(e), -1);
	wait_for(MSG_RETIRE_OK);
	strlcpy(up.server_id, sid, sizeof(up.server_id));
	if (fd == -1)
		fd = conn;
	else
		close(conn);
	send_msg(MSG_CONN_REROUTE, id, &up, CONN_UPGRADE_LEN(&up), fd);
	say("sent CONN_REROUTE conn=%llu server_id=%s with %s",
	    (unsigned long long)id, sid, what);
}

/*
 * Enters the role's seccomp program from SETUP as the real worker would,
 * then sets an option its role uses and one it does not.  The second
 * should never return.
 */
static void
setsockopt_case(void)
{
	int	fd = tcp_socket(), one = 1, size = 65536;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("fake_worker: PR_SET_NO_NEW_PRIVS");
	sandbox_load(name, &setup.filter);
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1)
		say("TCP_NODELAY failed: %s", strerror(errno));
	say("TCP_NODELAY allowed; now SO_RCVBUF");
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	say("SO_RCVBUF allowed");
	exit(3);
}

int
main(int argc, char *argv[])
{
	struct msg_relay_state	 st;
	struct msg_conn_closed	 cc;
	struct msg_ctl_phone	 ph;
	struct msg_spawned	 rep;
	char			 sid[SERVER_ID_MAX + 1];
	int			 relay, zygote;

	if (argc < 2) {
		fprintf(stderr, "usage: fake_worker case [from to [args]]\n");
		return 2;
	}
	name = argv[1];
	relay = strncmp(name, "relay-", 6) == 0;
	zygote = relay || strncmp(name, "zygote-", 7) == 0;
	log_init(1, 0, "fake_worker");
	if (argc >= 4 && rename(argv[2], argv[3]) == -1)
		fatal("fake_worker: rename %s %s", argv[2], argv[3]);
	rules_init();
	table.from = ROLE_PARENT;
	table.to = zygote ? ROLE_ZYGOTE : ROLE_FRONT;
	table.rule = rules + MSG_SETUP;
	table.nrules = MSG_TYPE_MAX - MSG_SETUP;
	msg_chan_init(&chan, CHAN_FD, &table);
	wait_for(MSG_SETUP);
	if (m.hdr.len > sizeof(setup))
		fatalx("fake_worker: SETUP of %u bytes", m.hdr.len);
	memcpy(&setup, m.body, m.hdr.len);
	msg_hello(&chan, zygote ? ROLE_ZYGOTE : ROLE_FRONT);
	flush_all();
	sid[0] = '\0';
	if (relay) {
		/* a relay forked by this zygote, given its server-id */
		fork_one();
		wait_for(MSG_ASSIGN);
		strlcpy(sid, ((struct msg_assign *)m.body)->server_id,
		    sizeof(sid));
		if (memchr(sid, '\0', sizeof(sid)) == NULL)
			fatalx("fake_worker: ASSIGN without a server-id");
	}
	say("ready server_id=%s", sid[0] ? sid : "-");

	memset(&rep, 0, sizeof(rep));
	if (strcmp(name, "zygote-pid-foreign") == 0) {
		/* init: not the parent's child, and never to be signalled */
		wait_for(MSG_FORK);
		close(m.fd);
		rep.pid = 1;
		send_msg(MSG_SPAWNED, m.hdr.id, &rep, sizeof(rep), -1);
		say("sent SPAWNED pid=1");
		idle();
	} else if (strcmp(name, "zygote-silent") == 0) {
		/* asked for a relay, it never answers: the start stays due */
		wait_for(MSG_FORK);
		say("got FORK, answers nothing");
		idle();
	} else if (strcmp(name, "zygote-relays-fail") == 0) {
		/* every relay it forks fails its start: exits 127 at once */
		for (;;) {
			pid_t	pid;

			wait_for(MSG_FORK);
			close(m.fd);
			if ((pid = (pid_t)syscall(SYS_clone, CLONE_PARENT |
			    SIGCHLD, 0, NULL, NULL, 0)) == -1)
				fatal("fake_worker: clone");
			if (pid == 0)
				_exit(127);
			rep.pid = pid;
			send_msg(MSG_SPAWNED, m.hdr.id, &rep, sizeof(rep), -1);
		}
	} else if (strcmp(name, "zygote-out-of-order") == 0) {
		wait_for(MSG_FORK);
		close(m.fd);
		rep.pid = -1;
		rep.error = EAGAIN;
		send_msg(MSG_SPAWNED, m.hdr.id + 1, &rep, sizeof(rep), -1);
		say("sent SPAWNED for a request it was not asked");
		idle();
	}

	memset(&cc, 0, sizeof(cc));
	if (strcmp(name, "front-upgrade-foreign") == 0) {
		struct msg_conn_upgrade	up;

		/* a real TCP socket: only the connection id is wrong */
		valid_upgrade(&up, "fake-front");
		send_msg(MSG_CONN_UPGRADE, UINT64_MAX, &up,
		    CONN_UPGRADE_LEN(&up), tcp_socket());
		say("sent CONN_UPGRADE for a connection it does not hold");
	} else if (strcmp(name, "front-closed-foreign") == 0 ||
	    strcmp(name, "relay-closed-foreign") == 0) {
		send_msg(MSG_CONN_CLOSED, UINT64_MAX, &cc, sizeof(cc), -1);
		say("sent CONN_CLOSED for a connection it does not hold");
	} else if (strcmp(name, "front-upgrade-pipe") == 0)
		front_upgrade_with(pipe_end(), "a pipe");
	else if (strcmp(name, "front-upgrade-channel") == 0)
		front_upgrade_with(dup(CHAN_FD), "its own channel");
	else if (strcmp(name, "front-setsockopt") == 0 ||
	    strcmp(name, "relay-setsockopt") == 0)
		setsockopt_case();
	else if (strcmp(name, "relay-pack-hello") == 0) {
		struct msg_hello	h;
		struct msg_hdr		hdr;
		unsigned char		pk[sizeof(hdr) + sizeof(h) + 8];

		/* a pack (msg.h MSG_PACK) that holds a HELLO */
		memset(pk, 0, sizeof(pk));
		memset(&hdr, 0, sizeof(hdr));
		memset(&h, 0, sizeof(h));
		hdr.type = MSG_HELLO;
		hdr.len = sizeof(h);
		memcpy(pk, &hdr, sizeof(hdr));
		memcpy(pk + sizeof(hdr), &h, sizeof(h));
		send_msg(MSG_PACK, 0, pk, (sizeof(hdr) + sizeof(h) + 7) &
		    ~(size_t)7, -1);
		say("sent a pack with a HELLO in it");
	} else if (strcmp(name, "relay-state-bad") == 0 ||
	    strcmp(name, "relay-state-unnamed") == 0) {
		memset(&st, 0, sizeof(st));
		st.binary_connected = 1;
		st.phones = PHONES_PER_SERVER_MAX + 1;
		send_msg(MSG_RELAY_STATE, 0, &st, sizeof(st), -1);
		say("sent RELAY_STATE phones=%u", st.phones);
	} else if (strcmp(name, "relay-reroute-foreign") == 0)
		relay_reroute("someone-else", -1, "its binary");
	else if (strcmp(name, "relay-reroute-pipe") == 0)
		relay_reroute(sid, pipe_end(), "a pipe");
	else if (strcmp(name, "relay-ctl-esc") == 0) {
		wait_for(MSG_CTL_SHOW);
		memset(&ph, 0, sizeof(ph));
		snprintf(ph.conn_id, sizeof(ph.conn_id), "client-%s-\033[2J1", sid);
		strlcpy(ph.device, "\033]0;owned\007", sizeof(ph.device));
		send_msg(MSG_CTL_PHONE, m.hdr.id, &ph, sizeof(ph), -1);
		memset(&ph, 0, sizeof(ph));
		ph.last = 1;
		send_msg(MSG_CTL_PHONE, m.hdr.id, &ph, sizeof(ph), -1);
		say("sent CTL_PHONE with an escape sequence");
	} else if (strcmp(name, "relay-stop-reading") == 0) {
		/* the parent's messages pile up until it gives up on us */
		say("stops reading its channel");
		for (;;)
			pause();
	} else
		fatalx("fake_worker: no case %s", name);
	idle();
}
