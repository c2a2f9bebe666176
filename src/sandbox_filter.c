/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The workers' seccomp allow-lists, compiled by the parent (libseccomp)
 * once at start into BPF programs that travel in every worker's SETUP.
 * A worker loads its program itself (sandbox.c) and never runs the
 * compiler: docs/sandbox.md says what each role may do and why, and
 * what compiling once saves.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <linux/tls.h>

#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "proc.h"
#include "sandbox.h"

#ifndef SOL_TLS
#define SOL_TLS		282
#endif


/* mask that compares a whole argument, and one that compares an int */
#define SANDBOX_ALL	(~(scmp_datum_t)0)
#define SANDBOX_INT	((scmp_datum_t)UINT32_MAX)

struct sandbox_syscall {
	int		 nr;
	const char	*name;
};

#define SANDBOX_SYSCALL(name)	{ SCMP_SYS(name), #name }

/*
 * What a worker needs once its event base exists: the libevent epoll loop,
 * I/O on the fds it was given (its channel, and a relay's binary and
 * phones or a front's clients), memory, time, randomness, signals, and
 * exit.  No open, no socket, no connect, no accept, no execve, no fork.
 * A front parses PROXY headers and HTTP heads and terminates TLS (OpenSSL,
 * keys handed over by the parent): the same list, plus the few argument
 * rules of sandbox_filter_front().  The push process adds TCP sockets
 * and connect (sandbox_filter_push()).
 */
static const struct sandbox_syscall worker_syscalls[] = {
	/* libevent's epoll backend */
	SANDBOX_SYSCALL(epoll_wait),
	SANDBOX_SYSCALL(epoll_pwait),
	SANDBOX_SYSCALL(epoll_ctl),
	/* I/O on passed fds; send()/recv() are sendto/recvfrom */
	SANDBOX_SYSCALL(read),
	SANDBOX_SYSCALL(readv),
	SANDBOX_SYSCALL(write),
	SANDBOX_SYSCALL(writev),
	SANDBOX_SYSCALL(recvfrom),
	SANDBOX_SYSCALL(sendto),
	SANDBOX_SYSCALL(recvmsg),
	SANDBOX_SYSCALL(sendmsg),
	/* channel messages sent together (msg_flush, msg_batch_send) */
	SANDBOX_SYSCALL(sendmmsg),
	SANDBOX_SYSCALL(shutdown),
	SANDBOX_SYSCALL(close),
	SANDBOX_SYSCALL(getsockopt),
	SANDBOX_SYSCALL(getsockname),
	SANDBOX_SYSCALL(getpeername),
	/* malloc; mmap and mprotect are allowed without PROT_EXEC below */
	SANDBOX_SYSCALL(brk),
	SANDBOX_SYSCALL(munmap),
	SANDBOX_SYSCALL(mremap),
	SANDBOX_SYSCALL(madvise),
	/* time (normally the vDSO), randomness (connection ids, OpenSSL) */
	SANDBOX_SYSCALL(clock_gettime),
	SANDBOX_SYSCALL(gettimeofday),
	SANDBOX_SYSCALL(getrandom),
	/* signals, locks, exit */
	SANDBOX_SYSCALL(rt_sigaction),
	SANDBOX_SYSCALL(rt_sigprocmask),
	SANDBOX_SYSCALL(rt_sigreturn),
	SANDBOX_SYSCALL(sigaltstack),
	SANDBOX_SYSCALL(restart_syscall),
	SANDBOX_SYSCALL(futex),
	SANDBOX_SYSCALL(sched_yield),
	SANDBOX_SYSCALL(getpid),
	SANDBOX_SYSCALL(gettid),
	SANDBOX_SYSCALL(exit),
	SANDBOX_SYSCALL(exit_group),
};

/* The relay program's additions without arguments (sandbox_filter_relay). */
static const struct sandbox_syscall relay_syscalls[] = {
	SANDBOX_SYSCALL(poll),
	SANDBOX_SYSCALL(ppoll),
};

#ifdef PYRELAYD_SANITIZERS
/*
 * Sanitizer builds only: what the ASan/UBSan/LSan runtimes need to report
 * and to check for leaks at exit.  LSan clones a tracer task that ptraces
 * us and lists /proc/PID/task; reports read /proc/self/maps and the
 * binary's debug information; isatty() and stat calls.  If the tracer is
 * killed, the process spins forever at exit: keep this list complete.
 * socket, connect and execve stay forbidden so that the sandbox tests
 * still see SIGSYS.
 */
static const struct sandbox_syscall sanitizer_syscalls[] = {
	SANDBOX_SYSCALL(open),
	SANDBOX_SYSCALL(openat),
	SANDBOX_SYSCALL(readlink),
	SANDBOX_SYSCALL(getdents),
	SANDBOX_SYSCALL(getdents64),
	SANDBOX_SYSCALL(lseek),
	SANDBOX_SYSCALL(newfstatat),
	SANDBOX_SYSCALL(ioctl),
	SANDBOX_SYSCALL(sched_getaffinity),
	SANDBOX_SYSCALL(prctl),
	SANDBOX_SYSCALL(clone),
	SANDBOX_SYSCALL(ptrace),
	SANDBOX_SYSCALL(wait4),
	SANDBOX_SYSCALL(getppid),
	SANDBOX_SYSCALL(tgkill),
};
#endif

/* libseccomp returns -errno */
static void
sandbox_seccomp_check(int rc, const char *role, const char *what)
{
	if (rc < 0) {
		errno = -rc;
		fatal("sandbox: role=%s seccomp %s", role, what);
	}
}

static void
sandbox_allow_list(scmp_filter_ctx ctx, const char *role,
    const struct sandbox_syscall *list, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		/* a negative number is a syscall this architecture lacks */
		if (list[i].nr < 0)
			continue;
		sandbox_seccomp_check(seccomp_rule_add(ctx, SCMP_ACT_ALLOW,
		    list[i].nr, 0), role, list[i].name);
	}
}

/*
 * Allows syscall nr when argument arg, masked with mask, equals value.
 * Built by hand rather than with SCMP_A*() so that every field is set.
 */
static void
sandbox_allow_arg(scmp_filter_ctx ctx, const char *role, int nr,
    const char *name, unsigned int arg, scmp_datum_t mask, scmp_datum_t value)
{
	struct scmp_arg_cmp	cmp;

	memset(&cmp, 0, sizeof(cmp));
	cmp.arg = arg;
	cmp.op = SCMP_CMP_MASKED_EQ;
	cmp.datum_a = mask;
	cmp.datum_b = value;
	sandbox_seccomp_check(seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr,
	    1, &cmp), role, name);
}

/*
 * Allows setsockopt(fd, level, optname, ...) for this one pair: a worker
 * may set the options its code, libevent's and OpenSSL's set, and none
 * that would change what the kernel does for its sockets otherwise
 * (buffer sizes, SO_ATTACH_FILTER, SO_BINDTODEVICE...).  The kernel reads
 * both as int: only their low 32 bits are compared.
 */
static void
sandbox_allow_sockopt(scmp_filter_ctx ctx, const char *role, int level,
    int optname, const char *name)
{
	struct scmp_arg_cmp	cmp[2];

	memset(cmp, 0, sizeof(cmp));
	cmp[0].arg = 1;
	cmp[0].op = SCMP_CMP_MASKED_EQ;
	cmp[0].datum_a = SANDBOX_INT;
	cmp[0].datum_b = (uint32_t)level;
	cmp[1].arg = 2;
	cmp[1].op = SCMP_CMP_MASKED_EQ;
	cmp[1].datum_a = SANDBOX_INT;
	cmp[1].datum_b = (uint32_t)optname;
	sandbox_seccomp_check(seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW,
	    SCMP_SYS(setsockopt), 2, cmp), role, name);
}

/*
 * Rules with argument checks that every role shares.  Memory may be
 * mapped but never made executable, so an attacker who writes code into
 * our heap cannot run it.
 */
static void
sandbox_allow_common_args(scmp_filter_ctx ctx, const char *role)
{
	sandbox_allow_arg(ctx, role, SCMP_SYS(mmap), "mmap", 2, PROT_EXEC, 0);
	sandbox_allow_arg(ctx, role, SCMP_SYS(mprotect), "mprotect", 2,
	    PROT_EXEC, 0);

	/* O_NONBLOCK and FD_CLOEXEC on received fds, nothing else */
	sandbox_allow_arg(ctx, role, SCMP_SYS(fcntl), "fcntl F_GETFL", 1,
	    SANDBOX_ALL, F_GETFL);
	sandbox_allow_arg(ctx, role, SCMP_SYS(fcntl), "fcntl F_SETFL", 1,
	    SANDBOX_ALL, F_SETFL);
	sandbox_allow_arg(ctx, role, SCMP_SYS(fcntl), "fcntl F_GETFD", 1,
	    SANDBOX_ALL, F_GETFD);
	sandbox_allow_arg(ctx, role, SCMP_SYS(fcntl), "fcntl F_SETFD", 1,
	    SANDBOX_ALL, F_SETFD);

	/*
	 * Sanitizer builds allow ioctl and newfstatat without conditions
	 * (sanitizer_syscalls): no narrower rules then.
	 */
#ifndef PYRELAYD_SANITIZERS
	/* libevent's evbuffer_read() asks how many bytes are waiting */
	sandbox_allow_arg(ctx, role, SCMP_SYS(ioctl), "ioctl FIONREAD", 1,
	    SANDBOX_ALL, FIONREAD);

	/* glibc's fstat() is newfstatat(fd, "", buf, AT_EMPTY_PATH) */
	sandbox_allow_arg(ctx, role, SCMP_SYS(newfstatat), "newfstatat", 3,
	    AT_EMPTY_PATH, AT_EMPTY_PATH);
#endif

	/*
	 * fronts (TLS 1.2's last two records), relays and the push process
	 * (a request's head and body, two records) turn Nagle off
	 */
	sandbox_allow_sockopt(ctx, role, IPPROTO_TCP, TCP_NODELAY,
	    "setsockopt TCP_NODELAY");

}

/*
 * abort() (assert, stack protector, fortify) raises SIGABRT with
 * tgkill(getpid(), gettid(), SIGABRT); a front lets it, so that a crash
 * reads as SIGABRT, not SIGSYS.  Each front puts its own pid in the rule
 * before it loads the program (sandbox_load).  Sanitizer builds allow
 * tgkill without conditions (sanitizer_syscalls).
 */
static void
sandbox_allow_own_abort(scmp_filter_ctx ctx, const char *role)
{
#ifndef PYRELAYD_SANITIZERS
	struct scmp_arg_cmp	cmp[2];

	memset(cmp, 0, sizeof(cmp));
	cmp[0].arg = 0;
	cmp[0].op = SCMP_CMP_EQ;
	cmp[0].datum_a = SANDBOX_PID_PLACEHOLDER;
	cmp[1].arg = 2;
	cmp[1].op = SCMP_CMP_EQ;
	cmp[1].datum_a = SIGABRT;
	sandbox_seccomp_check(seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW,
	    SCMP_SYS(tgkill), 2, cmp), role, "tgkill");
#endif
}

/*
 * glibc's syslog() reconnects to /dev/log with socket(AF_UNIX, SOCK_DGRAM |
 * SOCK_CLOEXEC, 0) whenever it is not connected (no syslog daemon, journald
 * restarted, chroot).  Fail that one call with EACCES: a lost log line
 * rather than a worker killed by its own logging.  Every other socket()
 * is still killed.
 */
static void
sandbox_deny_syslog_reconnect(scmp_filter_ctx ctx, const char *role)
{
	struct scmp_arg_cmp	cmp[3];

	memset(cmp, 0, sizeof(cmp));
	cmp[0].arg = 0;
	cmp[0].op = SCMP_CMP_EQ;
	cmp[0].datum_a = AF_UNIX;
	cmp[1].arg = 1;
	cmp[1].op = SCMP_CMP_EQ;
	cmp[1].datum_a = SOCK_DGRAM | SOCK_CLOEXEC;
	cmp[2].arg = 2;
	cmp[2].op = SCMP_CMP_EQ;
	cmp[2].datum_a = 0;
	sandbox_seccomp_check(seccomp_rule_add_array(ctx,
	    SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 3, cmp), role,
	    "socket for syslog");
}

/* What every worker may do: the base of the relay's and the front's programs. */
static void
sandbox_filter_worker(scmp_filter_ctx ctx, const char *role)
{
	sandbox_allow_list(ctx, role, worker_syscalls,
	    sizeof(worker_syscalls) / sizeof(worker_syscalls[0]));
	sandbox_allow_common_args(ctx, role);
	sandbox_deny_syslog_reconnect(ctx, role);
}

/*
 * The relay program is loaded once, by the zygote, and every relay it
 * forks shares it (docs/sandbox.md, "The zygote").  To the worker's list
 * it adds what the zygote needs to wait and fork, and what a relay needs
 * once after its fork; nothing a relay could use to fork, open or reach
 * another process:
 *   poll, ppoll	the zygote waits for requests (ppoll: SIGTERM taken
 *			only there) and for room to answer (fd_wait)
 *   clone		with exactly the zygote's flags: CLONE_PARENT | SIGCHLD
 *			(a relay's RLIMIT_NPROC 0 makes even that fail)
 *   prlimit64		pid 0, RLIMIT_NPROC only: the relay's own 0
 *   setpgid		(0, 0): a relay's own process group
 *   epoll_create1	EPOLL_CLOEXEC: the relay's loop (relay_loop.c), which
 *			takes SIGTERM in epoll_pwait: no pipe, no signalfd
 *   tgkill		trapped, and kill only as (0, SIGABRT): abort() in a
 *			relay (sandbox.c, sandbox_abort_trap)
 */
static void
sandbox_filter_relay(scmp_filter_ctx ctx)
{
	const char		*role = "relay";
	struct scmp_arg_cmp	 cmp[2];

	sandbox_filter_worker(ctx, role);
	sandbox_allow_list(ctx, role, relay_syscalls,
	    sizeof(relay_syscalls) / sizeof(relay_syscalls[0]));
	sandbox_allow_arg(ctx, role, SCMP_SYS(clone), "clone", 0, SANDBOX_ALL,
	    ZYGOTE_CLONE_FLAGS);
	sandbox_allow_arg(ctx, role, SCMP_SYS(epoll_create1), "epoll_create1",
	    0, SANDBOX_INT, EPOLL_CLOEXEC);

	memset(cmp, 0, sizeof(cmp));
	cmp[0].arg = 0;
	cmp[0].op = SCMP_CMP_EQ;
	cmp[0].datum_a = 0;
	cmp[1].arg = 1;
	cmp[1].op = SCMP_CMP_MASKED_EQ;
	cmp[1].datum_a = SANDBOX_INT;
	cmp[1].datum_b = RLIMIT_NPROC;
	sandbox_seccomp_check(seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW,
	    SCMP_SYS(prlimit64), 2, cmp), role, "prlimit64 RLIMIT_NPROC");
	cmp[1].op = SCMP_CMP_EQ;
	cmp[1].datum_a = 0;
	sandbox_seccomp_check(seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW,
	    SCMP_SYS(setpgid), 2, cmp), role, "setpgid");
#ifndef PYRELAYD_SANITIZERS
	cmp[1].datum_a = SIGABRT;
	sandbox_seccomp_check(seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW,
	    SCMP_SYS(kill), 2, cmp), role, "kill 0 SIGABRT");
	sandbox_seccomp_check(seccomp_rule_add(ctx, SCMP_ACT_TRAP,
	    SCMP_SYS(tgkill), 0), role, "tgkill trap");
#endif
}

static void
sandbox_filter_front(scmp_filter_ctx ctx)
{
	sandbox_filter_worker(ctx, "front");
	sandbox_allow_own_abort(ctx, "front");
	/*
	 * kernel TLS: OpenSSL (3.0, ktls.h) sets TCP_ULP "tls", then TLS_TX
	 * and TLS_RX with the session's keys.  Its later options (zero-copy
	 * sendfile, RX_EXPECT_NO_PAD) are off unless asked for: not here.
	 */
	sandbox_allow_sockopt(ctx, "front", IPPROTO_TCP, TCP_ULP,
	    "setsockopt TCP_ULP");
	sandbox_allow_sockopt(ctx, "front", SOL_TLS, TLS_TX,
	    "setsockopt TLS_TX");
	sandbox_allow_sockopt(ctx, "front", SOL_TLS, TLS_RX,
	    "setsockopt TLS_RX");
	/* the TLS pump hands the relay one end of an AF_UNIX socketpair */
	sandbox_allow_arg(ctx, "front", SCMP_SYS(socketpair),
	    "socketpair AF_UNIX", 0, SANDBOX_ALL, AF_UNIX);
}

/*
 * The push process (docs/push.md): a worker that also opens TCP
 * connections, to the token endpoint and FCM, at addresses resolved before
 * it entered the sandbox: socket(AF_INET or AF_INET6, SOCK_STREAM, 0 or
 * IPPROTO_TCP) with any of the SOCK_NONBLOCK and SOCK_CLOEXEC flags, and
 * connect.  No other family (no AF_UNIX, no AF_NETLINK), no UDP, no bind,
 * listen or accept.
 */
static void
sandbox_filter_push(scmp_filter_ctx ctx)
{
	static const int	 families[] = { AF_INET, AF_INET6 };
	static const int	 protocols[] = { 0, IPPROTO_TCP };
	struct scmp_arg_cmp	 cmp[3];
	size_t			 i, j;

	sandbox_filter_worker(ctx, "push");
	for (i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		for (j = 0; j < sizeof(protocols) / sizeof(protocols[0]); j++) {
			memset(cmp, 0, sizeof(cmp));
			cmp[0].arg = 0;
			cmp[0].op = SCMP_CMP_EQ;
			cmp[0].datum_a = families[i];
			/* the type without its flags */
			cmp[1].arg = 1;
			cmp[1].op = SCMP_CMP_MASKED_EQ;
			cmp[1].datum_a = ~(scmp_datum_t)(SOCK_NONBLOCK |
			    SOCK_CLOEXEC) & 0xffffffff;
			cmp[1].datum_b = SOCK_STREAM;
			cmp[2].arg = 2;
			cmp[2].op = SCMP_CMP_EQ;
			cmp[2].datum_a = protocols[j];
			sandbox_seccomp_check(seccomp_rule_add_array(ctx,
			    SCMP_ACT_ALLOW, SCMP_SYS(socket), 3, cmp), "push",
			    "socket");
		}
	sandbox_seccomp_check(seccomp_rule_add(ctx, SCMP_ACT_ALLOW,
	    SCMP_SYS(connect), 0), "push", "connect");
}

/*
 * The program libseccomp generated, read back through a pipe (libseccomp
 * 2.5 exports only to an fd), and the instruction that compares with the
 * placeholder pid found.
 */
static void
sandbox_filter_export(scmp_filter_ctx ctx, const char *name,
    struct sandbox_prog *prog)
{
	unsigned char	*buf = (unsigned char *)prog->insns;
	size_t		 cap = sizeof(prog->insns), len = 0;
	ssize_t		 n;
	uint32_t	 i, found = 0;
	int		 fds[2];

	if (pipe2(fds, O_CLOEXEC) == -1)
		fatal("sandbox: role=%s seccomp export: pipe", name);
	if (fcntl(fds[1], F_SETPIPE_SZ, (int)cap + 4096) == -1 && errno != EPERM)
		fatal("sandbox: role=%s seccomp export: F_SETPIPE_SZ", name);
	sandbox_seccomp_check(seccomp_export_bpf(ctx, fds[1]), name, "export");
	close(fds[1]);
	while ((n = read(fds[0], buf + len, cap - len)) > 0) {
		len += (size_t)n;
		if (len == cap) {
			char	c;

			if (read(fds[0], &c, 1) > 0)
				fatalx("sandbox: role=%s seccomp program over "
				    "%d instructions", name, SANDBOX_PROG_MAX);
			break;
		}
	}
	if (n == -1)
		fatal("sandbox: role=%s seccomp export: read", name);
	close(fds[0]);
	if (len == 0 || len % sizeof(prog->insns[0]) != 0)
		fatalx("sandbox: role=%s seccomp export: %zu bytes", name, len);
	prog->len = len / sizeof(prog->insns[0]);
	prog->pid_at = SANDBOX_PID_NONE;
	for (i = 0; i < prog->len; i++) {
		if (prog->insns[i].code == (BPF_JMP | BPF_JEQ | BPF_K) &&
		    prog->insns[i].k == SANDBOX_PID_PLACEHOLDER) {
			prog->pid_at = i;
			found++;
		}
	}
	if (found > 1)
		fatalx("sandbox: role=%s seccomp program compares the pid "
		    "%u times", name, found);
}

void
sandbox_filter_build(enum proc_role role, struct sandbox_prog *prog)
{
	scmp_filter_ctx	 ctx;
	const char	*name = proc_role_name(role);

	memset(prog, 0, sizeof(*prog));
	if ((ctx = seccomp_init(SCMP_ACT_KILL_PROCESS)) == NULL)
		fatalx("sandbox: role=%s seccomp_init failed", name);
	/* syscalls of a foreign ABI (i386 int 0x80, x32) are killed too */
	sandbox_seccomp_check(seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH,
	    SCMP_ACT_KILL_PROCESS), name, "bad arch action");

	switch (role) {
	case ROLE_RELAY:
		sandbox_filter_relay(ctx);
		break;
	case ROLE_FRONT:
		sandbox_filter_front(ctx);
		break;
	case ROLE_PUSH:
		sandbox_filter_push(ctx);
		break;
	default:
		fatalx("sandbox: no seccomp filter for role %d", (int)role);
	}
#ifdef PYRELAYD_SANITIZERS
	sandbox_allow_list(ctx, name, sanitizer_syscalls,
	    sizeof(sanitizer_syscalls) / sizeof(sanitizer_syscalls[0]));
	/*
	 * compiler-rt looks for llvm-symbolizer with stat() and would then
	 * fork and execve it, which the filter kills: make it not find one,
	 * so that reports come out unsymbolized (module+offset) instead.
	 */
	if (SCMP_SYS(stat) >= 0)
		sandbox_seccomp_check(seccomp_rule_add(ctx,
		    SCMP_ACT_ERRNO(ENOENT), SCMP_SYS(stat), 0), name, "stat");
#endif
	sandbox_filter_export(ctx, name, prog);
	seccomp_release(ctx);
}
