/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Worker sandbox: chroot to an empty directory, drop to the unprivileged
 * user, rlimits, PR_SET_NO_NEW_PRIVS and the role's seccomp program, which
 * the parent compiled (sandbox_filter.c) and sent in SETUP.
 * docs/sandbox.md says what each role may do and why.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <linux/seccomp.h>

#include <errno.h>
#include <signal.h>
#include <ucontext.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"
#include "sandbox.h"

/* siginfo's si_code for a SIGSYS from SECCOMP_RET_TRAP (linux/signal.h) */
#ifndef SYS_SECCOMP
#define SYS_SECCOMP	1
#endif

/*
 * Loads the program from SETUP, with this process's pid put where the
 * tgkill rule compares it.  PR_SET_NO_NEW_PRIVS is already set.  The
 * program's length and pid slot were checked on receipt (msg_setup_check).
 */
void
sandbox_load(const char *role, struct sandbox_prog *prog)
{
	struct sock_fprog	fprog;

	if (prog->pid_at != SANDBOX_PID_NONE)
		prog->insns[prog->pid_at].k = (uint32_t)getpid();
	fprog.len = (unsigned short)prog->len;
	fprog.filter = prog->insns;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) == -1)
		fatal("sandbox: role=%s seccomp load", role);
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
sandbox_enter(enum proc_role role, struct msg_setup *setup, rlim_t maxfds)
{
	const char	*name = proc_role_name(role);
	struct rlimit	 rl, want;
	struct stat	 st;
	const char	*skipped = NULL;
	int		 root = setup->root != 0;
	const char	*nproc;
	uid_t		 uid;
	gid_t		 gid;
	int		 chrooted = 0, limit_fsize = 1;

	if (role != ROLE_FRONT && role != ROLE_RELAY && role != ROLE_PUSH &&
	    role != ROLE_ZYGOTE)
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
	 * First use that would otherwise open a file: the time zone for
	 * syslog's timestamps (/etc/localtime, gone after chroot).
	 */
	tzset();

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

	/*
	 * The zygote forks every relay: fork() checks the number of the
	 * user's processes against its RLIMIT_NPROC, so it has the most it
	 * may have (max relays bounds them).  Each relay sets 0 for itself
	 * after the fork (sandbox_forked).
	 */
	if (role == ROLE_ZYGOTE) {
		if (getrlimit(RLIMIT_NPROC, &rl) == -1)
			fatal("sandbox: role=%s getrlimit nproc", name);
		if (rl.rlim_cur != rl.rlim_max)
			sandbox_setrlimit(name, RLIMIT_NPROC, "nproc",
			    rl.rlim_max);
	}

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
	if (role != ROLE_ZYGOTE) {
		sandbox_setrlimit(name, RLIMIT_NPROC, "nproc", 0);
		nproc = "0";
	} else
		nproc = "the hard limit (forks relays)";
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
	if (role == ROLE_ZYGOTE)
		sandbox_abort_trap();
	sandbox_load(name, &setup->filter);

	if (skipped != NULL)
		log_info("event=sandbox role=%s uid=%u skipped=\"%s\"",
		    name, (unsigned)uid, skipped);
	log_debug("event=sandbox role=%s uid=%u gid=%u chroot=\"%s\" nofile=%llu "
	    "nproc=\"%s\" core=0 fsize=\"%s\" no_new_privs=1 seccomp=kill_process",
	    name, (unsigned)uid, (unsigned)gid,
	    chrooted ? setup->chroot : "no", (unsigned long long)maxfds,
	    nproc, limit_fsize ? "0" : "unchanged (stderr is a file)");
}

/*
 * abort() in a forked relay.  glibc raises SIGABRT with tgkill(getpid(),
 * gettid(), SIGABRT); a front's program allows exactly that call with its
 * own pid in it, but relays share the zygote's program, which cannot name
 * each relay's pid.  So the relay program traps every tgkill
 * (SECCOMP_RET_TRAP: SIGSYS, caught here) and allows only kill(0,
 * SIGABRT), which reaches the caller's process group, and each relay is
 * the only process of its own (sandbox_forked).  A tgkill at ourselves
 * with SIGABRT becomes that kill, and the relay dies of SIGABRT as
 * before; any other tgkill dies of SIGSYS, as every call the program
 * refuses does.
 */
static void
sandbox_sigsys(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t		*uc = ctx;
	long long		 pid = -1, signo = -1;
	struct sigaction	 sa;
	sigset_t		 abrt;

#if defined(__x86_64__)
	pid = uc->uc_mcontext.gregs[REG_RDI];
	signo = uc->uc_mcontext.gregs[REG_RDX];
#elif defined(__aarch64__)
	pid = (long long)uc->uc_mcontext.regs[0];
	signo = (long long)uc->uc_mcontext.regs[2];
#endif
	if (si->si_code == SYS_SECCOMP && si->si_syscall == SYS_tgkill &&
	    pid == (long long)getpid() && signo == SIGABRT) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_DFL;
		(void)sigaction(SIGABRT, &sa, NULL);
		sigemptyset(&abrt);
		sigaddset(&abrt, SIGABRT);
		(void)sigprocmask(SIG_UNBLOCK, &abrt, NULL);
		(void)kill(0, SIGABRT);
	}
	/* a call the program refuses: killed with SIGSYS */
	(void)syscall(SYS_kill, getpid(), SIGSYS);
	_exit(127);
}

void
sandbox_abort_trap(void)
{
#ifndef PYRELAYD_SANITIZERS
	struct sigaction	sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sandbox_sigsys;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGSYS, &sa, NULL) == -1)
		fatal("sandbox: SIGSYS handler");
#endif
}

void
sandbox_forked(void)
{
	/* its own process group: kill(0, SIGABRT) reaches no one else */
	if (setpgid(0, 0) == -1)
		_exit(127);
#ifndef PYRELAYD_SANITIZERS
	struct rlimit	rl;

	/*
	 * A relay never forks: its filter allows the zygote's clone, and
	 * this makes that fail (EAGAIN) for a user with any process at all;
	 * hard and soft, so it cannot be raised again.
	 */
	rl.rlim_cur = rl.rlim_max = 0;
	if (setrlimit(RLIMIT_NPROC, &rl) == -1)
		_exit(127);
#endif
}
