/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * tests/pyrelayd-relay-crash: the real relay (src/relay_main.c, librelay.a,
 * the same sandbox and seccomp program) with three handlers added, one per
 * real-time signal, each doing one thing a relay must not survive
 * (test_process.py Crashes; docs/sandbox.md "Crashes in the tests"):
 *
 *   SIGRTMIN+1  socket(AF_INET, SOCK_STREAM): not on the relay's list, SIGSYS
 *   SIGRTMIN+2  abort(): tgkill at its own pid, allowed, SIGABRT
 *   SIGRTMIN+3  tgkill(parent, parent, SIGABRT): at another pid, SIGSYS
 *
 * The test sends the signal from outside with kill(2), so nothing attaches
 * to the relay and nothing runs in it but its own code and these handlers.
 * They are installed by a constructor, before main, so that main and all
 * it calls are the production relay's, unchanged; the relay neither
 * touches these signals nor blocks any (src/proc.c, src/spawn.c clears the
 * mask before exec), and a relay forked from a process of this program
 * inherits them.  If the forbidden call returns, the handler says so on
 * stderr and exits with CRASH_SURVIVED: the relay_exited line then shows
 * that status where the test expects a signal, and it fails.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/syscall.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CRASH_SURVIVED	70

/* getppid() is not on the relay's list: read before the sandbox */
static pid_t	crash_parent;

/* async-signal-safe: write(2) and _exit(2), both on the relay's list */
static void
crash_survived(const char *what)
{
	static const char	prefix[] = "pyrelayd-relay-crash: survived ";

	(void)write(STDERR_FILENO, prefix, sizeof(prefix) - 1);
	(void)write(STDERR_FILENO, what, strlen(what));
	(void)write(STDERR_FILENO, "\n", 1);
	_exit(CRASH_SURVIVED);
}

static void
crash_socket(int sig)
{
	(void)sig;
	(void)socket(AF_INET, SOCK_STREAM, 0);
	crash_survived("socket()");
}

static void
crash_abort(int sig)
{
	(void)sig;
	abort();
}

static void
crash_tgkill(int sig)
{
	(void)sig;
	(void)syscall(SYS_tgkill, crash_parent, crash_parent, SIGABRT);
	crash_survived("tgkill() at the parent");
}

__attribute__((constructor))
static void
crash_install(void)
{
	static void	(*const handlers[])(int) = {
		crash_socket, crash_abort, crash_tgkill
	};
	struct sigaction	sa;
	sigset_t		set;
	size_t			i;

	crash_parent = getppid();
	sigemptyset(&set);
	for (i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = handlers[i];
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGRTMIN + 1 + (int)i, &sa, NULL) == -1)
			abort();
		sigaddset(&set, SIGRTMIN + 1 + (int)i);
	}
	/* whatever mask it was started with, these reach the handlers */
	if (sigprocmask(SIG_UNBLOCK, &set, NULL) == -1)
		abort();
}
