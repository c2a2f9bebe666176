/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Worker sandbox: chroot to an empty directory, drop to the unprivileged
 * user, rlimits, PR_SET_NO_NEW_PRIVS and a seccomp allow-list per role.
 * docs/sandbox.md says what each role may do and why.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

#ifndef SOL_TLS
#define SOL_TLS		282
#endif

/* mask that compares a whole argument */
#define SANDBOX_ALL	(~(scmp_datum_t)0)

struct sandbox_syscall {
	int		 nr;
	const char	*name;
};

#define SANDBOX_SYSCALL(name)	{ SCMP_SYS(name), #name }

/*
 * What a relay needs once its event base exists: the libevent epoll loop,
 * I/O on the fds it was given (its channel, binary and phones), memory,
 * time, randomness for connection ids, signals, and exit.  No open, no
 * socket, no connect, no accept, no execve, no fork.
 */
static const struct sandbox_syscall relay_syscalls[] = {
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
	/* time (normally the vDSO), randomness (arc4random, OpenSSL) */
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

/*
 * The front parses PROXY headers and HTTP heads and terminates TLS
 * (OpenSSL, keys handed over by the parent): the same needs as a relay.
 * Its own list so that the two can diverge.
 */
static const struct sandbox_syscall front_syscalls[] = {
	SANDBOX_SYSCALL(epoll_wait),
	SANDBOX_SYSCALL(epoll_pwait),
	SANDBOX_SYSCALL(epoll_ctl),
	SANDBOX_SYSCALL(read),
	SANDBOX_SYSCALL(readv),
	SANDBOX_SYSCALL(write),
	SANDBOX_SYSCALL(writev),
	SANDBOX_SYSCALL(recvfrom),
	SANDBOX_SYSCALL(sendto),
	SANDBOX_SYSCALL(recvmsg),
	SANDBOX_SYSCALL(sendmsg),
	SANDBOX_SYSCALL(shutdown),
	SANDBOX_SYSCALL(close),
	SANDBOX_SYSCALL(getsockopt),
	SANDBOX_SYSCALL(getsockname),
	SANDBOX_SYSCALL(getpeername),
	SANDBOX_SYSCALL(brk),
	SANDBOX_SYSCALL(munmap),
	SANDBOX_SYSCALL(mremap),
	SANDBOX_SYSCALL(madvise),
	SANDBOX_SYSCALL(clock_gettime),
	SANDBOX_SYSCALL(gettimeofday),
	SANDBOX_SYSCALL(getrandom),
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

static const char *
sandbox_role_name(enum proc_role role)
{
	switch (role) {
	case ROLE_FRONT:
		return "front";
	case ROLE_RELAY:
		return "relay";
	default:
		return "unknown";
	}
}

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
 * Rules with argument checks that every role shares.  Memory may be
 * mapped but never made executable, so an attacker who writes code into
 * our heap cannot run it.
 */
static void
sandbox_allow_common_args(scmp_filter_ctx ctx, const char *role)
{
#ifndef PYRELAYD_SANITIZERS
	struct scmp_arg_cmp	cmp[2];
#endif

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
	 * Sanitizer builds allow ioctl, newfstatat and tgkill without
	 * conditions (sanitizer_syscalls): no narrower rules then.
	 */
#ifndef PYRELAYD_SANITIZERS
	/* libevent's evbuffer_read() asks how many bytes are waiting */
	sandbox_allow_arg(ctx, role, SCMP_SYS(ioctl), "ioctl FIONREAD", 1,
	    SANDBOX_ALL, FIONREAD);

	/* glibc's fstat() is newfstatat(fd, "", buf, AT_EMPTY_PATH) */
	sandbox_allow_arg(ctx, role, SCMP_SYS(newfstatat), "newfstatat", 3,
	    AT_EMPTY_PATH, AT_EMPTY_PATH);
#endif

	/* socket options on our own sockets: SO_*, TCP_NODELAY */
	sandbox_allow_arg(ctx, role, SCMP_SYS(setsockopt),
	    "setsockopt SOL_SOCKET", 1, SANDBOX_ALL, SOL_SOCKET);
	sandbox_allow_arg(ctx, role, SCMP_SYS(setsockopt),
	    "setsockopt IPPROTO_TCP", 1, SANDBOX_ALL, IPPROTO_TCP);

#ifndef PYRELAYD_SANITIZERS
	/*
	 * abort() (assert, stack protector, fortify) raises SIGABRT with
	 * tgkill(getpid(), gettid(), SIGABRT); let it, so that a crash reads
	 * as SIGABRT, not SIGSYS.
	 */
	memset(cmp, 0, sizeof(cmp));
	cmp[0].arg = 0;
	cmp[0].op = SCMP_CMP_EQ;
	cmp[0].datum_a = (scmp_datum_t)getpid();
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

static void
sandbox_filter_relay(scmp_filter_ctx ctx)
{
	sandbox_allow_list(ctx, "relay", relay_syscalls,
	    sizeof(relay_syscalls) / sizeof(relay_syscalls[0]));
	sandbox_allow_common_args(ctx, "relay");
	sandbox_deny_syslog_reconnect(ctx, "relay");
}

static void
sandbox_filter_front(scmp_filter_ctx ctx)
{
	sandbox_allow_list(ctx, "front", front_syscalls,
	    sizeof(front_syscalls) / sizeof(front_syscalls[0]));
	sandbox_allow_common_args(ctx, "front");
	sandbox_deny_syslog_reconnect(ctx, "front");
	/* kernel TLS: OpenSSL sets TLS_TX/TLS_RX after TCP_ULP "tls" */
	sandbox_allow_arg(ctx, "front", SCMP_SYS(setsockopt),
	    "setsockopt SOL_TLS", 1, SANDBOX_ALL, SOL_TLS);
	/* the TLS pump hands the relay one end of an AF_UNIX socketpair */
	sandbox_allow_arg(ctx, "front", SCMP_SYS(socketpair),
	    "socketpair AF_UNIX", 0, SANDBOX_ALL, AF_UNIX);
}

static void
sandbox_seccomp(enum proc_role role)
{
	scmp_filter_ctx	 ctx;
	const char	*name = sandbox_role_name(role);

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

	sandbox_seccomp_check(seccomp_load(ctx), name, "load");
	seccomp_release(ctx);
}

static void
sandbox_setrlimit(const char *role, int resource, const char *what,
    rlim_t value)
{
	struct rlimit	rl;

	rl.rlim_cur = rl.rlim_max = value;
	if (setrlimit(resource, &rl) == -1)
		fatal("sandbox: role=%s setrlimit %s %llu", role, what,
		    (unsigned long long)value);
}

/* Drops to uid/gid for good and proves that root cannot come back. */
static void
sandbox_drop(const char *role, uid_t uid, gid_t gid)
{
	uid_t	ruid, euid, suid;
	gid_t	rgid, egid, sgid;

	if (setgroups(1, &gid) == -1)
		fatal("sandbox: role=%s setgroups %u", role, (unsigned)gid);
	if (setresgid(gid, gid, gid) == -1)
		fatal("sandbox: role=%s setresgid %u", role, (unsigned)gid);
	if (setresuid(uid, uid, uid) == -1)
		fatal("sandbox: role=%s setresuid %u", role, (unsigned)uid);

	if (getresuid(&ruid, &euid, &suid) == -1 ||
	    getresgid(&rgid, &egid, &sgid) == -1)
		fatal("sandbox: role=%s getresuid", role);
	if (ruid != uid || euid != uid || suid != uid ||
	    rgid != gid || egid != gid || sgid != gid)
		fatalx("sandbox: role=%s uid/gid did not change", role);
	if (setuid(0) != -1 || seteuid(0) != -1)
		fatalx("sandbox: role=%s could regain root", role);
	if (gid != 0 && (setgid(0) != -1 || setegid(0) != -1))
		fatalx("sandbox: role=%s could regain group 0", role);
}

void
sandbox_enter(enum proc_role role, const struct msg_setup *setup,
    rlim_t maxfds)
{
	const char	*name = sandbox_role_name(role);
	struct rlimit	 rl, want;
	struct stat	 st;
	unsigned char	 seed[16];
	const char	*skipped = NULL;
	int		 root = setup->root != 0;
	const char	*nproc;
	uid_t		 uid;
	gid_t		 gid;
	int		 chrooted = 0, limit_fsize = 1;

	if (role != ROLE_FRONT && role != ROLE_RELAY)
		fatalx("sandbox: role %d is not a worker", (int)role);
	/* a worker that cannot or will not drop root must not run at all */
	if (root && geteuid() != 0)
		fatalx("sandbox: role=%s setup says root but euid=%u", name,
		    (unsigned)geteuid());
	if (!root && geteuid() == 0)
		fatalx("sandbox: role=%s running as root without setup.root",
		    name);
	if (root && setup->uid == 0)
		fatalx("sandbox: role=%s refusing to run as uid 0", name);

	/*
	 * First uses that would otherwise open files or need a syscall the
	 * filter forbids: the time zone for syslog's timestamps
	 * (/etc/localtime, gone after chroot), and arc4random's first
	 * seeding and fork-detection set-up.
	 */
	tzset();
	arc4random_buf(seed, sizeof(seed));
	explicit_bzero(seed, sizeof(seed));

	if (root) {
		if (memchr(setup->chroot, '\0', sizeof(setup->chroot)) ==
		    NULL || setup->chroot[0] != '/')
			fatalx("sandbox: role=%s bad chroot path", name);
#ifdef PYRELAYD_SANITIZERS
		/*
		 * LeakSanitizer lists /proc/PID/task from a tracer at exit;
		 * there is no /proc in the empty directory.
		 */
		skipped = "chroot (sanitizer build)";
#else
		if (chroot(setup->chroot) == -1)
			fatal("sandbox: role=%s chroot \"%s\"", name,
			    setup->chroot);
		if (chdir("/") == -1)
			fatal("sandbox: role=%s chdir /", name);
		chrooted = 1;
#endif
	} else
		skipped = "chroot, setuid (not root)";

	/*
	 * RLIMIT_NOFILE before the uid change: raising the hard limit above
	 * what we inherited needs CAP_SYS_RESOURCE, which an ordinary user
	 * and root in many containers lack.  Then use the inherited limit.
	 */
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		fatal("sandbox: role=%s getrlimit nofile", name);
	if (rl.rlim_max != RLIM_INFINITY && maxfds > rl.rlim_max) {
		want.rlim_cur = want.rlim_max = maxfds;
		if (!root || setrlimit(RLIMIT_NOFILE, &want) == -1) {
			log_info("event=sandbox role=%s nofile_wanted=%llu "
			    "nofile=%llu reason=hard_limit", name,
			    (unsigned long long)maxfds,
			    (unsigned long long)rl.rlim_max);
			maxfds = rl.rlim_max;
		}
	}
	sandbox_setrlimit(name, RLIMIT_NOFILE, "nofile", maxfds);

	if (root)
		sandbox_drop(name, setup->uid, setup->gid);

#ifdef PYRELAYD_SANITIZERS
	/* LSan's tracer task would not be allowed to exist */
	nproc = "unchanged (sanitizer build)";
#else
	/*
	 * No processes.  After the uid change, so that it is the new user's
	 * count that fork() would check.  The limit binds only this process:
	 * as an ordinary user it stops our forks, not the user's others.
	 */
	sandbox_setrlimit(name, RLIMIT_NPROC, "nproc", 0);
	nproc = "0";
#endif
	sandbox_setrlimit(name, RLIMIT_CORE, "core", 0);
	/*
	 * Workers write no files.  But a -d run with stderr redirected to a
	 * file would then die of SIGXFSZ on its first log line.
	 */
	if (fstat(STDERR_FILENO, &st) == 0 && S_ISREG(st.st_mode))
		limit_fsize = 0;
	if (limit_fsize)
		sandbox_setrlimit(name, RLIMIT_FSIZE, "fsize", 0);

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("sandbox: role=%s PR_SET_NO_NEW_PRIVS", name);

	/* the filter forbids getuid() and getgid() */
	uid = getuid();
	gid = getgid();
	sandbox_seccomp(role);

	if (skipped != NULL)
		log_info("event=sandbox role=%s uid=%u skipped=\"%s\"",
		    name, (unsigned)uid, skipped);
	log_debug("event=sandbox role=%s uid=%u gid=%u chroot=\"%s\" nofile=%llu "
	    "nproc=\"%s\" core=0 fsize=\"%s\" no_new_privs=1 seccomp=kill_process",
	    name, (unsigned)uid, (unsigned)gid,
	    chrooted ? setup->chroot : "no", (unsigned long long)maxfds,
	    nproc, limit_fsize ? "0" : "unchanged (stderr is a file)");
}
