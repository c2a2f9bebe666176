/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of src/relay_chan.c, a relay's side of its channel: a real
 * relay (relay_forked) runs in a child, and the test is its parent, with
 * stream socketpairs for clients.  What is checked is what the parent
 * hears and when: the counts a client's 101 or close changes are in the
 * channel before that client reads them (docs/messages.md, /healthz), and
 * the changes of one loop turn make one RELAY_STATE, with the connections
 * closed in that turn told together after it.  Every wait is bounded.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "msg.h"
#include "parent.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "relay.h"
#include "unit.h"

#define WAIT_MS		5000
#define SID		"turn-test"
#define ACCEPT_KEY	"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static struct msg	 rm;		/* what the test reads from the relay */

/* A relay for SID in a child; *pc is the test's end of its channel. */
static pid_t
relay_start(struct msg_chan *pc)
{
	static struct msg	 m;
	static char		 title[64];
	struct msg_setup	*setup;
	struct msg_hello	 parent;
	int			 sv[2];
	pid_t			 pid;

	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK,
	    0, sv) == 0);
	if ((pid = fork()) == 0) {
		close(sv[0]);
		proc_title_buffer(title, sizeof(title));
		if ((setup = calloc(1, sizeof(*setup))) == NULL)
			_exit(2);
		strlcpy(setup->server_id, SID, sizeof(setup->server_id));
		setup->lim.grace_ms = 30000;
		setup->lim.heartbeat_ms = 30000;
		setup->lim.heartbeat_timeout_ms = 30000;
		setup->lim.conflict_probe_ms = 10000;
		setup->lim.handshake_timeout_ms = 5000;
		setup->lim.write_timeout_ms = 10000;
		setup->lim.message_timeout_ms = 30000;
		setup->lim.close_timeout_ms = 5000;
		setup->lim.message_size = 256 * 1024;
		setup->lim.outbox = 4 * 1024 * 1024;
		setup->lim.grace_queue = 1024 * 1024;
		setup->lim.phones_per_server = 16;
		setup->lim.rate_burst = 20;
		setup->lim.rate_refill_ms = 6000;
		parent.version = msg_version;
		parent.role = ROLE_PARENT;
		parent.pid = (uint32_t)getppid();
		relay_forked(sv[1], setup, &parent, &m);
		_exit(3);
	}
	CU_ASSERT_FATAL(pid != -1);
	close(sv[1]);
	/* no HELLO either way: the zygote's stands for it (relay_forked) */
	msg_chan_init(pc, sv[0], &parent_from_relay);
	msg_hello_known(pc, msg_version, ROLE_RELAY, (uint32_t)pid);
	/* as the parent: a relay's batches come packed (msg.h MSG_PACK) */
	pc->pack_in = 1;
	return pid;
}

static void
relay_stop(pid_t pid, struct msg_chan *pc)
{
	int	status;

	kill(pid, SIGKILL);
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	msg_chan_clear(pc);
}

/* Waits for fd to be readable: 1, or 0 after WAIT_MS. */
static int
wait_readable(int fd)
{
	struct pollfd	pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, WAIT_MS) == 1;
}

/* a CONN_CLOSED read with more of its pack waiting (msg.h MSG_PACK) */
static int	closed_packed;

/* The relay's next message, waited for; its type, or 0 when none came. */
static uint32_t
recv_wait(struct msg_chan *pc)
{
	int	rv;

	if ((rv = msg_recv(pc, &rm)) == 0 && wait_readable(pc->fd))
		rv = msg_recv(pc, &rm);
	if (rv != 1)
		return 0;
	if (rm.hdr.type == MSG_CONN_CLOSED && msg_pending(pc))
		closed_packed = 1;
	if (rm.fd != -1)
		close(rm.fd);
	return rm.hdr.type;
}

/*
 * The relay's messages already in the channel, not waited for, counted by
 * type in got[]; the last state report in *last (its increments zeroed
 * when it had none), its length in *lastlen.
 */
static void
recv_ready(struct msg_chan *pc, int got[MSG_TYPE_MAX],
    struct msg_relay_report *last, size_t *lastlen)
{
	int	rv;

	memset(got, 0, sizeof(int) * MSG_TYPE_MAX);
	/* a relay says no HELLO (a second one would end this: -2) */
	while ((rv = msg_recv(pc, &rm)) == 1) {
		if (rm.fd != -1)
			close(rm.fd);
		if (rm.hdr.type < MSG_TYPE_MAX)
			got[rm.hdr.type]++;
		if (rm.hdr.type == MSG_CONN_CLOSED && msg_pending(pc))
			closed_packed = 1;
		if (rm.hdr.type == MSG_RELAY_STATE) {
			memset(last, 0, sizeof(*last));
			memcpy(last, rm.body, rm.hdr.len);
			*lastlen = rm.hdr.len;
		}
	}
	CU_ASSERT_EQUAL(rv, 0);
}

/* Hands the relay a client of kind (CONN_ATTACH); *client is its end. */
static void
attach(struct msg_chan *pc, uint64_t id, uint32_t kind, int *client)
{
	struct msg_conn_upgrade	*up;
	int			 sv[2];

	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	CU_ASSERT_FATAL((up = calloc(1, sizeof(*up))) != NULL);
	up->kind = kind;
	strlcpy(up->server_id, SID, sizeof(up->server_id));
	strlcpy(up->device_name, "test phone", sizeof(up->device_name));
	strlcpy(up->ws_accept, ACCEPT_KEY, sizeof(up->ws_accept));
	CU_ASSERT_FATAL(msg_compose(pc, MSG_CONN_ATTACH, id, up,
	    CONN_UPGRADE_LEN(up), sv[1]) == 0);
	CU_ASSERT_FATAL(msg_flush(pc) == 1);
	free(up);
	*client = sv[0];
}

/* Reads the 101's head from a client's end. */
static void
read_101(int fd)
{
	char	buf[1024];
	size_t	have = 0;
	ssize_t	n;

	while (have < sizeof(buf) - 1) {
		CU_ASSERT_FATAL(wait_readable(fd));
		/* one byte at a time: nothing after the head is taken */
		n = read(fd, buf + have, 1);
		CU_ASSERT_FATAL(n == 1);
		have++;
		buf[have] = '\0';
		if (strstr(buf, "\r\n\r\n") != NULL)
			break;
	}
	CU_ASSERT(strncmp(buf, "HTTP/1.1 101 ", 13) == 0);
}

/* Reads from a client's end until the relay closed it; 1 at EOF. */
static int
read_to_eof(int fd)
{
	char	buf[4096];
	ssize_t	n;

	for (;;) {
		if (!wait_readable(fd))
			return 0;
		if ((n = read(fd, buf, sizeof(buf))) <= 0)
			return n == 0;
	}
}

/* A client's close frame, 1000, masked with a zero key. */
static void
send_close(int fd)
{
	static const unsigned char	close1000[] = {
		0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8
	};

	CU_ASSERT_FATAL(write(fd, close1000, sizeof(close1000)) ==
	    (ssize_t)sizeof(close1000));
}

/*
 * A binary, then a phone: each one's state is in the channel before its
 * 101 can be read, with the claim counted in it (one RELAY_STATE with its
 * increments: message version 3).  Then both close in one loop
 * turn (the relay stopped while they do): the parent hears one
 * RELAY_STATE for the two changes, no binary and no phone, before the
 * phone can read its close, and both CONN_CLOSED after.
 */
static void
test_reports_once_per_turn(void)
{
	struct msg_chan		pc;
	struct msg_relay_report	rep;
	struct msg_relay_state	*st = &rep.st;
	size_t			len;
	pid_t			pid;
	int			bin, phone, status, i, closed;
	int			got[MSG_TYPE_MAX];

	pid = relay_start(&pc);

	attach(&pc, 1, CONN_BINARY, &bin);
	read_101(bin);
	/* the state and the claim counted, in one message, before the 101 */
	memset(&rep, 0xff, sizeof(rep));
	len = 0;
	recv_ready(&pc, got, &rep, &len);
	CU_ASSERT_EQUAL(got[MSG_RELAY_COUNTERS], 0);
	CU_ASSERT_EQUAL(got[MSG_RELAY_STATE], 1);
	CU_ASSERT_EQUAL(len, sizeof(rep));
	CU_ASSERT_EQUAL(rep.cnt.upgrades[EP_SERVER][OUT_ACCEPT], 1);
	CU_ASSERT_EQUAL(st->binary_connected, 1);
	CU_ASSERT_EQUAL(st->phones, 0);

	attach(&pc, 2, CONN_PHONE, &phone);
	read_101(phone);
	memset(&rep, 0xff, sizeof(rep));
	len = 0;
	recv_ready(&pc, got, &rep, &len);
	CU_ASSERT_EQUAL(got[MSG_RELAY_COUNTERS], 0);
	CU_ASSERT_EQUAL(got[MSG_RELAY_STATE], 1);
	CU_ASSERT_EQUAL(len, sizeof(rep));
	CU_ASSERT_EQUAL(rep.cnt.upgrades[EP_CLIENT][OUT_ACCEPT], 1);
	CU_ASSERT_EQUAL(st->binary_connected, 1);
	CU_ASSERT_EQUAL(st->phones, 1);

	/* both closes readable when the relay next looks: one turn */
	CU_ASSERT_FATAL(kill(pid, SIGSTOP) == 0);
	CU_ASSERT_FATAL(waitpid(pid, &status, WUNTRACED) == pid &&
	    WIFSTOPPED(status));
	send_close(phone);
	send_close(bin);
	CU_ASSERT_FATAL(kill(pid, SIGCONT) == 0);

	/* the phone saw its close: the parent's counts are there already */
	CU_ASSERT_FATAL(read_to_eof(phone));
	memset(&rep, 0xff, sizeof(rep));
	recv_ready(&pc, got, &rep, &len);
	CU_ASSERT_EQUAL(got[MSG_RELAY_STATE], 1);
	CU_ASSERT_EQUAL(st->binary_connected, 0);
	CU_ASSERT_EQUAL(st->phones, 0);
	/* one state for the two changes, and the two CONN_CLOSED */
	closed = got[MSG_CONN_CLOSED];
	CU_ASSERT_FATAL(read_to_eof(bin));
	for (i = 0; i < 4 && closed < 2; i++)
		if (recv_wait(&pc) == MSG_CONN_CLOSED)
			closed++;
		else
			CU_FAIL("a message other than CONN_CLOSED");
	CU_ASSERT_EQUAL(closed, 2);
	/* the two in one packet, the turn's batch packed */
	CU_ASSERT_EQUAL(closed_packed, 1);
	recv_ready(&pc, got, &rep, &len);
	CU_ASSERT_EQUAL(got[MSG_RELAY_STATE], 0);
	CU_ASSERT_EQUAL(got[MSG_CONN_CLOSED], 0);

	close(bin);
	close(phone);
	relay_stop(pid, &pc);
}

static CU_TestInfo relay_chan_tests[] = {
	{ "reports: before the client sees them, once per turn",
	    test_reports_once_per_turn },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "relay_chan", NULL, NULL, NULL, NULL, relay_chan_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	return unit_run(suites);
}
