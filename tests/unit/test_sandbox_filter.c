/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of src/sandbox_filter.c's setsockopt rules, run by the
 * kernel: each case forks a child that loads the role's program exactly
 * as a worker does (sandbox_load, after PR_SET_NO_NEW_PRIVS) and calls
 * setsockopt once.  An allowed (level, optname) pair returns, whatever
 * the kernel then says of it; any other kills the child with SIGSYS.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>

#include <linux/tls.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "sandbox.h"

#ifndef SOL_TLS
#define SOL_TLS		282
#endif

static struct sandbox_prog	prog_front, prog_relay;

/*
 * 0 when setsockopt(level, optname) returned under the role's program,
 * SIGSYS when the program killed the caller, -1 for anything else.
 * level is passed as a long: the upper 32 bits are not the kernel's.
 */
static int
try_sockopt(const struct sandbox_prog *prog, long level, int optname)
{
	struct sandbox_prog	copy = *prog;
	pid_t			pid;
	int			fd, one = 1, status;

	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return -1;
	if ((pid = fork()) == -1) {
		close(fd);
		return -1;
	}
	if (pid == 0) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
			_exit(2);
		sandbox_load("test", &copy);
		/* the call, as libc makes it: its result does not matter */
		syscall(SYS_setsockopt, fd, level, optname, &one, sizeof(one));
		_exit(0);
	}
	close(fd);
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFSIGNALED(status))
		return WTERMSIG(status);
	return -1;
}

static int
setup(void)
{
	sandbox_filter_build(ROLE_FRONT, &prog_front);
	sandbox_filter_build(ROLE_RELAY, &prog_relay);
	return 0;
}

static void
test_relay(void)
{
	const struct sandbox_prog	*p = &prog_relay;

	/* relay_io.c turns Nagle off on each connection it is given */
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_NODELAY), 0);
	/* nothing else: not the buffers, not a socket filter, not kTLS */
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, SO_RCVBUF), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, SO_SNDBUF), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, SO_ATTACH_FILTER), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, SO_REUSEADDR), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, SO_LINGER), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_ULP), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_CONGESTION), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_REPAIR), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_TLS, TLS_TX), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_IP, IP_TOS), SIGSYS);
	/* TCP_NODELAY's number at another level */
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, TCP_NODELAY), SIGSYS);
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
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_TLS, TLS_TX_ZEROCOPY_RO), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, SO_RCVBUF), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, SO_SNDBUF), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, SO_ATTACH_FILTER), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, SOL_SOCKET, SO_BINDTODEVICE), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_CONGESTION), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_IP, IP_TOS), SIGSYS);
	/* TLS_RX's number at the TCP level is TCP_MAXSEG: not allowed */
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TLS_RX), SIGSYS);
	CU_ASSERT_EQUAL(try_sockopt(p, IPPROTO_TCP, TCP_MAXSEG), SIGSYS);
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

int
main(void)
{
	CU_pSuite	s;
	unsigned int	failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return CU_get_error();
	s = CU_add_suite("sandbox_setsockopt", setup, NULL);
	CU_add_test(s, "relay: TCP_NODELAY only", test_relay);
	CU_add_test(s, "front: TCP_NODELAY and kernel TLS only", test_front);
	CU_add_test(s, "level and optname compared as int",
	    test_int_arguments);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures();
	CU_cleanup_registry();
	return failed != 0;
}
