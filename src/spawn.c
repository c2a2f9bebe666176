/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Starting a worker: clone(CLONE_VM | CLONE_VFORK) then execve, which
 * copies neither the caller's page tables nor touches its memory (fork()
 * copied both, at a cost growing with every live relay).  Used by the
 * spawner for every worker, and by the parent for the spawner itself and
 * when there is no spawner (docs/pool.md).
 */
#include "config.h"

#include <sys/types.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "pyrelayd.h"
#include "spawn.h"

#define SPAWN_STACK_SIZE	(64 * 1024)	/* the spawn child's, until execve */

/* What the spawn child needs; on the parent's memory (CLONE_VM). */
struct spawn_req {
	const char	*path;
	char		**argv;
	int		 fd;		/* the child's channel, to become fd 3 */
	int		 output;	/* fd is its stdout and stderr instead */
	const sigset_t	*reset;		/* signals whose disposition is not SIG_DFL */
	char		**envp;
	int		 opts;		/* SPAWN_* */
};

#if defined(__x86_64__)
#define SPAWN_AUDIT_ARCH	AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SPAWN_AUDIT_ARCH	AUDIT_ARCH_AARCH64
#endif

#ifdef SPAWN_AUDIT_ARCH
/*
 * SPAWN_NO_BRK's program: brk fails with ENOMEM, everything else is
 * left to the program's own sandbox.  Written by hand, read-only: the
 * spawn child may not allocate (libseccomp would).  It is a layout
 * hint, not a rule: a process that goes round it costs more memory,
 * nothing else.
 */
static const struct sock_filter	spawn_no_brk_insns[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SPAWN_AUDIT_ARCH, 0, 3),
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_brk, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOMEM),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};
static const struct sock_fprog	spawn_no_brk = {
	sizeof(spawn_no_brk_insns) / sizeof(spawn_no_brk_insns[0]),
	(struct sock_filter *)spawn_no_brk_insns
};
#endif

/*
 * The child of clone(CLONE_VM | CLONE_VFORK): it runs on the parent's
 * memory, on its own small stack, while the parent waits for the execve.
 * So only async-signal-safe calls, nothing written but its own stack, and
 * no sanitizer bookkeeping on that stack (docs/pool.md).
 */
__attribute__((no_sanitize_address))
static int
spawn_child(void *arg)
{
	const struct spawn_req	*rq = arg;
	struct sigaction	 sa;
	sigset_t		 none;
	int			 sig;

	/* the child's channel is fd 3 (or what it says goes to fd) */
	if (rq->output) {
		if (dup2(rq->fd, 1) == -1 || dup2(rq->fd, 2) == -1)
			_exit(127);
	} else if (rq->fd == 3) {
		if (fcntl(3, F_SETFD, 0) == -1)
			_exit(127);
	} else if (dup2(rq->fd, 3) == -1)
		_exit(127);
	/*
	 * The caller blocked every signal; its handlers must never run here.
	 * Only the few it set are reset: one sigaction each, not one per
	 * signal number (64 system calls in every spawn).
	 */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (sig = 1; sig < NSIG; sig++)
		if (sigismember(rq->reset, sig) == 1)
			(void)sigaction(sig, &sa, NULL);
	/* nothing else crosses the exec (the caller's fds are close-on-exec too) */
	(void)close_range(rq->output ? 3 : 4, ~0U, 0);
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
#ifdef SPAWN_AUDIT_ARCH
	/*
	 * This task's alone, not the caller's whose memory it shares.  Without
	 * privilege the kernel takes a program only after no_new_privs, which
	 * the worker's sandbox sets anyway.  If it is refused, the worker
	 * starts with its heap where the kernel puts it.
	 */
	if (rq->opts & SPAWN_NO_BRK &&
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &spawn_no_brk) == -1 &&
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)
		(void)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0,
		    &spawn_no_brk);
#endif
	execve(rq->path, rq->argv, rq->envp);
	_exit(127);
}

static pid_t	spawn_start(struct spawn_req *, int);

/*
 * SPAWN_NO_BRK's environment: the caller's, and glibc's malloc told to
 * map each block it makes before main() on its own.  With brk refused it
 * would otherwise map a megabyte and fill it from the bottom, a megabyte
 * away from the image (and from the thread block, which glibc maps
 * beside it); block by block, the kernel puts each mapping next to the
 * last.  The zygote sets the threshold back once it is set up
 * (zygote_run).  Without room for the copy, the program starts with the
 * caller's environment.
 */
#define SPAWN_TUNABLES	"GLIBC_TUNABLES=glibc.malloc.mmap_threshold=0"

static pid_t
spawn_no_brk_start(struct spawn_req *rq, int flags)
{
	char	**env, **envp = rq->envp;
	size_t	  i, n = 0;
	pid_t	  pid;
	int	  saved;

	for (i = 0; envp[i] != NULL; i++)
		;
	if ((env = calloc(i + 2, sizeof(*env))) == NULL)
		return spawn_start(rq, flags);
	for (i = 0; envp[i] != NULL; i++)
		if (strncmp(envp[i], "GLIBC_TUNABLES=",
		    strlen("GLIBC_TUNABLES=")) != 0)
			env[n++] = envp[i];
	env[n++] = (char *)SPAWN_TUNABLES;
	env[n] = NULL;
	rq->envp = env;
	pid = spawn_start(rq, flags);
	saved = errno;
	free(env);
	errno = saved;
	return pid;
}

pid_t
spawn_process(const char *path, char **argv, char **envp, int fd,
    int flags, int opts)
{
	struct spawn_req	rq;

	memset(&rq, 0, sizeof(rq));
	rq.path = path;
	rq.argv = argv;
	rq.fd = fd;
	rq.envp = envp;
	rq.opts = opts;
	if (opts & SPAWN_NO_BRK)
		return spawn_no_brk_start(&rq, flags);
	return spawn_start(&rq, flags);
}

pid_t
spawn_command(const char *path, char **argv, char **envp, int outfd)
{
	struct spawn_req	rq;

	memset(&rq, 0, sizeof(rq));
	rq.path = path;
	rq.argv = argv;
	rq.fd = outfd;
	rq.output = 1;
	rq.envp = envp;
	return spawn_start(&rq, 0);
}

static pid_t
spawn_start(struct spawn_req *rq, int flags)
{
	static void		*stack;
	static sigset_t		 reset;
	static int		 reset_known;
	struct sigaction	 sa;
	sigset_t		 all, old;
	pid_t			 pid;
	int			 saved, sig;

	if (stack == NULL) {
		stack = mmap(NULL, SPAWN_STACK_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
		if (stack == MAP_FAILED) {
			stack = NULL;
			return -1;
		}
	}
	/*
	 * Which signals have a handler or are ignored: set up once, before
	 * the first start (the parent's and the spawner's handlers are all
	 * set by then), and not changed after.
	 */
	if (!reset_known) {
		sigemptyset(&reset);
		for (sig = 1; sig < NSIG; sig++)
			if (sigaction(sig, NULL, &sa) == 0 &&
			    sa.sa_handler != SIG_DFL)
				sigaddset(&reset, sig);
		reset_known = 1;
	}
	rq->reset = &reset;
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	/* CLONE_VFORK: back here once the child has exec'd or exited */
	pid = clone(spawn_child, (char *)stack + SPAWN_STACK_SIZE,
	    CLONE_VM | CLONE_VFORK | flags | SIGCHLD, rq);
	saved = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return pid;
}
