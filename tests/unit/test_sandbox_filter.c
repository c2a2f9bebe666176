/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of src/sandbox_filter.c's argument rules, run by the
 * kernel: each case forks a child that loads the role's program exactly
 * as a worker does (sandbox_load, after PR_SET_NO_NEW_PRIVS) and makes
 * one call: setsockopt, the push process's socket, or one of the calls
 * the relay program allows only with the zygote's arguments (clone and
 * the rest).  An allowed call returns, whatever the kernel then says of
 * it; any other kills the child with SIGSYS.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>

#include <linux/tls.h>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "sandbox.h"
#include "unit.h"

#ifndef SOL_TLS
#define SOL_TLS		282
#endif

static struct sandbox_prog	prog_front, prog_relay, prog_push;

/*
 * 0 when syscall(nr, a0..a4) returned under the program, SIGSYS when the
 * program killed the caller, -1 for anything else.  A clone that the
 * program lets through makes a child of the test (CLONE_PARENT) that
 * exits at once.
 */
static int
try_call(const struct sandbox_prog *prog, long nr, long a0, long a1, long a2,
    long a3, long a4)
{
	struct sandbox_prog	copy = *prog;
	pid_t			pid;
	int			status;

	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
			_exit(2);
		sandbox_load("test", &copy);
		/* the call, as libc makes it: its result does not matter */
		syscall(nr, a0, a1, a2, a3, a4);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		return WTERMSIG(status);
	return -1;
}

/*
 * setsockopt(level, optname) on a TCP socket under the role's program,
 * as try_call.  level is passed as a long: the upper 32 bits are not the
 * kernel's.
 */
static int
try_sockopt(const struct sandbox_prog *prog, long level, int optname)
{
	int	fd, one = 1, rv;

	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return -1;
	rv = try_call(prog, SYS_setsockopt, fd, level, optname, (long)&one,
	    sizeof(one));
	close(fd);
	return rv;
}

/* socket(domain, type, protocol) under the role's program */
static int
try_socket(const struct sandbox_prog *prog, int domain, int type,
    int protocol)
{
	return try_call(prog, SYS_socket, domain, type, protocol, 0, 0);
}

static int
setup(void)
{
	sandbox_filter_build(ROLE_FRONT, &prog_front);
	sandbox_filter_build(ROLE_RELAY, &prog_relay);
	sandbox_filter_build(ROLE_PUSH, &prog_push);
	return 0;
}

/*
 * Options no worker sets, refused in every role: buffer sizes, a socket
 * filter, binding to a device, keep-alive, lingering, congestion control,
 * TCP repair, the segment size, the IP TOS, kTLS zero-copy sendfile.
 */
static const struct {
	long	level;
	int	optname;
} never[] = {
	{ SOL_SOCKET, SO_RCVBUF }, { SOL_SOCKET, SO_SNDBUF },
	{ SOL_SOCKET, SO_ATTACH_FILTER }, { SOL_SOCKET, SO_BINDTODEVICE },
	{ SOL_SOCKET, SO_REUSEADDR }, { SOL_SOCKET, SO_KEEPALIVE },
	{ SOL_SOCKET, SO_LINGER }, { IPPROTO_TCP, TCP_CONGESTION },
	{ IPPROTO_TCP, TCP_REPAIR }, { IPPROTO_TCP, TCP_MAXSEG },
	{ IPPROTO_IP, IP_TOS }, { SOL_TLS, TLS_TX_ZEROCOPY_RO },
	/* TCP_NODELAY's number at another level */
	{ SOL_SOCKET, TCP_NODELAY },
};

static void
assert_never(const struct sandbox_prog *p)
{
	size_t	i;

	for (i = 0; i < sizeof(never) / sizeof(never[0]); i++)
		CU_ASSERT_EQUAL(try_sockopt(p, never[i].level,
		    never[i].optname), SIGSYS);
}

/* TCP_NODELAY allowed, and nothing else: not kTLS either */
static void
assert_nodelay_only(const struct sandbox_prog *p)
{
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_NODELAY), 0);
	assert_never(p);
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_ULP), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_TLS, TLS_TX), SIGSYS);
}

/*
 * The relay program is the zygote's, and every relay keeps it: clone only
 * with the zygote's flags (a relay's RLIMIT_NPROC 0 then stops it), and
 * the calls a relay makes once after its fork, each with the arguments
 * it makes them with.
 */
static void
test_relay_zygote_calls(void)
{
	const struct sandbox_prog	*p = &prog_relay;

	/* the zygote's fork of a relay */
	CU_ASSERT_EQUAL(try_call(p, SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0,
	    0, 0), 0);
	/* its child is the test's (CLONE_PARENT): reaped here */
	while (waitpid(-1, NULL, 0) > 0)
		;
#ifndef PYRELAYD_SANITIZERS
	/*
	 * glibc's fork(), threads, vfork, and clone with any other flags
	 * (sanitizer builds allow clone, ptrace and tgkill: their runtime's)
	 */
	CU_ASSERT_EQUAL(try_call(p, SYS_clone, SIGCHLD, 0, 0, 0, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_clone, CLONE_CHILD_SETTID |
	    CLONE_CHILD_CLEARTID | SIGCHLD, 0, 0, 0, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_clone, CLONE_PARENT | CLONE_VM |
	    SIGCHLD, 0, 0, 0, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_clone, CLONE_VM | CLONE_FS |
	    CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD, 0, 0, 0, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_clone, CLONE_PARENT | SIGCHLD |
	    (1L << 32), 0, 0, 0, 0), SIGSYS);
#ifdef SYS_fork
	CU_ASSERT_EQUAL(try_call(p, SYS_fork, 0, 0, 0, 0, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_vfork, 0, 0, 0, 0, 0), SIGSYS);
#endif
	CU_ASSERT_EQUAL(try_call(p, SYS_tgkill, 1, 1, SIGABRT, 0, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_ptrace, 0, 0, 0, 0, 0), SIGSYS);
#endif
#ifdef SYS_clone3
	CU_ASSERT_EQUAL(try_call(p, SYS_clone3, 0, 0, 0, 0, 0), SIGSYS);
#endif
	CU_ASSERT_EQUAL(try_call(p, SYS_execve, 0, 0, 0, 0, 0), SIGSYS);
	/* its own RLIMIT_NPROC, and no other limit (a read included) */
	CU_ASSERT_EQUAL(try_call(p, SYS_prlimit64, 0, RLIMIT_NPROC, 0, 0, 0),
	    0);
	CU_ASSERT_EQUAL(try_call(p, SYS_prlimit64, 0, RLIMIT_NOFILE, 0, 0, 0),
	    SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_prlimit64, 1, RLIMIT_NPROC, 0, 0, 0),
	    SIGSYS);
	/* its own process group, no one else's */
	CU_ASSERT_EQUAL(try_call(p, SYS_setpgid, 0, 0, 0, 0, 0), 0);
	CU_ASSERT_EQUAL(try_call(p, SYS_setpgid, 1, 0, 0, 0, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_setpgid, 0, 1, 0, 0, 0), SIGSYS);
	/* its loop's epoll instance (relay_loop.c), and nothing else new */
	CU_ASSERT_EQUAL(try_call(p, SYS_epoll_create1, EPOLL_CLOEXEC, 0, 0, 0,
	    0), 0);
	CU_ASSERT_EQUAL(try_call(p, SYS_epoll_create1, 0, 0, 0, 0, 0), SIGSYS);
	/* no pipe, no signalfd: SIGTERM is taken in epoll_pwait */
	CU_ASSERT_EQUAL(try_call(p, SYS_pipe2, 0, O_NONBLOCK | O_CLOEXEC, 0, 0,
	    0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_signalfd4, -1, 0, 8,
	    SFD_NONBLOCK | SFD_CLOEXEC, 0), SIGSYS);
	/* nor what libevent's base asked (evutil_issetugid) */
	CU_ASSERT_EQUAL(try_call(p, SYS_getuid, 0, 0, 0, 0, 0), SIGSYS);
	/* signals: kill only (0, SIGABRT); tgkill is trapped (SIGSYS) */
	CU_ASSERT_EQUAL(try_call(p, SYS_kill, 1, SIGABRT, 0, 0, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_kill, 0, SIGKILL, 0, 0, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_call(p, SYS_tkill, 1, SIGABRT, 0, 0, 0), SIGSYS);
	/* still no files (sanitizer builds open some), sockets or processes */
#ifndef PYRELAYD_SANITIZERS
	CU_ASSERT_EQUAL(try_call(p, SYS_openat, AT_FDCWD, 0, 0, 0, 0), SIGSYS);
#endif
	CU_ASSERT_EQUAL(try_call(p, SYS_socketpair, AF_UNIX, SOCK_STREAM, 0,
	    0, 0), SIGSYS);
	/* a front's program has none of this */
#ifndef PYRELAYD_SANITIZERS
	CU_ASSERT_EQUAL(try_call(&prog_front, SYS_clone, CLONE_PARENT |
	    SIGCHLD, 0, 0, 0, 0), SIGSYS);
#endif
	CU_ASSERT_EQUAL(try_call(&prog_front, SYS_epoll_create1,
	    EPOLL_CLOEXEC, 0, 0, 0, 0), SIGSYS);
}

static void
test_relay(void)
{
	/*
	 * Nagle: the option every worker's program allows (relays find it
	 * set on their sockets, and no longer set it)
	 */
	assert_nodelay_only(&prog_relay);
}

/*
 * Every worker sends its channel's messages with sendmsg, and several at
 * once with sendmmsg (msg_flush, msg_batch_send): a relay's report is
 * one sendmmsg.  Called on no descriptor: the program decides first.
 */
static void
test_channel_sends(void)
{
	const struct sandbox_prog	*progs[] = {
		&prog_relay, &prog_front, &prog_push,
	};
	size_t				 i;

	for (i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
		CU_ASSERT_EQUAL(try_call(progs[i], SYS_sendmsg, -1, 0, 0, 0,
		    0), 0);
		CU_ASSERT_EQUAL(try_call(progs[i], SYS_sendmmsg, -1, 0, 0, 0,
		    0), 0);
	}
}

static void
test_front(void)
{
	const struct sandbox_prog	*p = &prog_front;

	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_NODELAY), 0);
	/* kernel TLS, as OpenSSL 3.0 sets it up */
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_ULP), 0);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_TLS, TLS_TX), 0);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_TLS, TLS_RX), 0);
	assert_never(p);
	/* TLS_RX's number at the TCP level is TCP_MAXSEG: not allowed */
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TLS_RX), SIGSYS);
}

/*
 * The push process (docs/push.md): TCP_NODELAY on its connections, as
 * libevent's evhttp and OpenSSL's client set no other option (strace of
 * test_push.py), and TCP sockets toward the endpoints; no kernel TLS, no
 * other family or type.
 */
static void
test_push(void)
{
	const struct sandbox_prog	*p = &prog_push;

	assert_nodelay_only(p);

	/* what evhttp opens: TCP over IPv4 or IPv6, with its flags */
	CU_ASSERT_EQUAL(try_socket(p, AF_INET, SOCK_STREAM, 0), 0);
	CU_ASSERT_EQUAL(try_socket(p, AF_INET, SOCK_STREAM | SOCK_NONBLOCK,
	    0), 0);
	CU_ASSERT_EQUAL(try_socket(p, AF_INET6, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, IPPROTO_TCP), 0);
	/* no UDP (no DNS), no raw socket, no other family */
	CU_ASSERT_EQUAL(try_socket(p, AF_INET, SOCK_DGRAM, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_socket(p, AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK,
	    IPPROTO_UDP), SIGSYS);
	CU_ASSERT_EQUAL(try_socket(p, AF_INET, SOCK_RAW, IPPROTO_TCP), SIGSYS);
	CU_ASSERT_EQUAL(try_socket(p, AF_INET, SOCK_STREAM, IPPROTO_SCTP),
	    SIGSYS);
	CU_ASSERT_EQUAL(try_socket(p, AF_UNIX, SOCK_STREAM, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_socket(p, AF_NETLINK, SOCK_RAW, 0), SIGSYS);
	CU_ASSERT_EQUAL(try_socket(p, AF_PACKET, SOCK_RAW, 0), SIGSYS);
	/* glibc's syslog reconnect fails with EACCES, as in every worker */
	CU_ASSERT_EQUAL(try_socket(p, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0),
	    0);

	/* the other workers open no socket of their own */
	CU_ASSERT_EQUAL(try_socket(&prog_relay, AF_INET, SOCK_STREAM, 0),
	    SIGSYS);
	CU_ASSERT_EQUAL(try_socket(&prog_front, AF_INET6, SOCK_STREAM, 0),
	    SIGSYS);
}

static void
test_int_arguments(void)
{
	long	high = (long)1 << 32;

	/*
	 * The kernel reads level as an int: bits above 32 do not change
	 * which option is set, so they do not change the verdict either.
	 */
	CU_ASSERT_EQUAL(try_sockopt(&prog_relay, high | IPPROTO_TCP,
	    TCP_NODELAY), 0);
	CU_ASSERT_EQUAL(try_sockopt(&prog_relay, high | SOL_SOCKET,
	    SO_RCVBUF), SIGSYS);
}

static CU_TestInfo sandbox_setsockopt_tests[] = {
	{ "relay: TCP_NODELAY only", test_relay },
	{ "every worker: sendmsg and sendmmsg", test_channel_sends },
	{ "relay: the zygote's clone and a relay's first calls",
	    test_relay_zygote_calls },
	{ "front: TCP_NODELAY and kernel TLS only", test_front },
	{ "push: TCP_NODELAY and TCP sockets only", test_push },
	{ "level and optname compared as int", test_int_arguments },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "sandbox_setsockopt", setup, NULL, NULL, NULL,
	    sandbox_setsockopt_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
