/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * pyrelayctl upgrade and SIGUSR2 (docs/upgrade.md): the parent executes
 * the pyrelayd program installed at its own path again, in its own
 * process, and hands the new image its state.
 *
 * In the running image: the new program checks the configuration first
 * (`pyrelayd -n`, run beside the event loop, which goes on serving); a
 * refusal changes nothing.  Then the state goes into a sealed memfd, the
 * descriptors it names lose FD_CLOEXEC, the signals the parent handles
 * are blocked (a SIGTERM in the gap must wait for the new image, not
 * kill it), and the parent calls execve.  Relays never notice: they talk
 * to the parent's ends of their channels, which stay open.
 *
 * In the image an upgrade executed: everything is read and checked
 * before anything is built, and built before anything is sent; until
 * then any refusal, and any fatal(), goes back to the program that ran,
 * through the descriptor it opened on itself (/proc/self/exe) before the
 * exec, so that the way back works when the file on disk was replaced.
 * The image that goes back reads the same state, with the reason.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "parent.h"
#include "parent_upgrade.h"
#include "pyrelayd.h"
#include "spawn.h"
#include "upgrade_state.h"

#define CHECK_WAIT_MS		10000	/* for the new program's pyrelayd -n */
#define CHECK_OUT_MAX		2048	/* of what it says */
#define UPGRADE_REASON_MAX	(PATH_MAX + 512)
#define UPGRADE_ARGV_MAX	8	/* pyrelayd -d -f file, then -D pairs */
#define UPGRADE_READY_MS	10000	/* for the new fronts to be up */

/* How an image learns it was executed by an upgrade: set by pyrelayd only. */
#define ENV_STATE	"PYRELAYD_UPGRADE_STATE"	/* the state's fd */
#define ENV_PROGRAM	"PYRELAYD_UPGRADE_PROGRAM"	/* the way back's fd */
#define ENV_FAILED	"PYRELAYD_UPGRADE_FAILED"	/* the way back: why */

extern char **environ;

/* The running image's upgrade, from the request to the exec. */
static struct {
	int			 busy;
	struct ctl_client	*ctl;		/* who asked, or NULL (SIGUSR2) */
	pid_t			 pid;		/* the new program's check */
	int			 fd;		/* what it says */
	struct event		*ev_out;
	struct event		*ev_timer;
	char			 out[CHECK_OUT_MAX];
	size_t			 outlen;
	int			 eof, exited, status;
} U = { .fd = -1 };

/* The image an upgrade executed, until its fronts are up. */
static struct {
	int			 waiting;
	struct ctl_client	*ctl;		/* who asked, answered then */
	char			 previous[US_VERSION_MAX];
	int64_t			 commit_ms;	/* the image before's exec */
	int64_t			 served_ms;	/* listeners watched again */
	struct event		*ev;		/* late: they are not up */
} R;

/* The image an upgrade executed, until it serves. */
static struct {
	int			 mode;		/* UPGRADE_NONE, _IN, _BACK */
	const struct parent_opts *opts;
	int			 state_fd, program_fd;
	char			 reason[UPGRADE_REASON_MAX];	/* the way back: why */
	char			 previous[US_VERSION_MAX];
	int64_t			 commit_ms;
	struct ctl_client	*upgrader;
} I;

int
parent_upgrade_mode(void)
{
	return I.mode;
}

/* Signals the parent handles: held from the exec until the new image handles them. */
static void
upgrade_sigset(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR2);
	sigaddset(set, SIGCHLD);
}

/*
 * The command line of the next image (or, check: of `pyrelayd -n`), the
 * one the daemon was started with but -v, whose level the state carries.
 */
static char **
upgrade_argv(const struct parent_opts *o, int check)
{
	char	**argv;
	int	  i, n = 0;

	argv = xcalloc(UPGRADE_ARGV_MAX + 2 * (size_t)o->nmacros,
	    sizeof(*argv));
	argv[n++] = "pyrelayd";
	if (check)
		argv[n++] = "-n";
	else if (o->foreground)
		argv[n++] = "-d";
	if (o->conffile_given) {
		argv[n++] = "-f";
		argv[n++] = (char *)o->conffile;
	}
	for (i = 0; i < o->nmacros; i++) {
		argv[n++] = "-D";
		argv[n++] = o->macros[i];
	}
	argv[n] = NULL;
	return argv;
}

static int
upgrade_env_ours(const char *kv)
{
	return strncmp(kv, "PYRELAYD_UPGRADE_", strlen("PYRELAYD_UPGRADE_")) == 0;
}

/*
 * This environment, and where the state is (failed: the way back's
 * reason); its own strings are static, for an exec that follows at once.
 */
static char **
upgrade_env(int state_fd, int program_fd, const char *failed)
{
	static char	  st[64], pr[64], fa[UPGRADE_REASON_MAX + 64];
	char		**env;
	size_t		  i, n = 0;

	for (i = 0; environ[i] != NULL; i++)
		;
	env = xcalloc(i + 4, sizeof(*env));
	for (i = 0; environ[i] != NULL; i++)
		if (!upgrade_env_ours(environ[i]))
			env[n++] = environ[i];
	snprintf(st, sizeof(st), "%s=%d", ENV_STATE, state_fd);
	env[n++] = st;
	snprintf(pr, sizeof(pr), "%s=%d", ENV_PROGRAM, program_fd);
	env[n++] = pr;
	if (failed != NULL) {
		snprintf(fa, sizeof(fa), "%s=%s", ENV_FAILED, failed);
		env[n++] = fa;
	}
	env[n] = NULL;
	return env;
}

/* ---- the running image -------------------------------------------------- */

static void
upgrade_reset(void)
{
	if (U.ev_out != NULL)
		event_free(U.ev_out);
	if (U.ev_timer != NULL)
		event_free(U.ev_timer);
	if (U.fd != -1)
		close(U.fd);
	memset(&U, 0, sizeof(U));
	U.fd = -1;
}

/* A refusal before the exec: nothing changed.  One line says why. */
static void
upgrade_fail(struct ctl_client *ctl, const char *reason, const char *output)
{
	char	q[UPGRADE_REASON_MAX], first[UPGRADE_REASON_MAX + 32];

	log_warnx("event=upgrade_failed reason=\"%s\"",
	    log_quotable(reason, q, sizeof(q)));
	if (ctl != NULL) {
		snprintf(first, sizeof(first), "error: upgrade failed: %s",
		    reason);
		parent_ctl_answer(ctl, first, output);
	}
}

static void	upgrade_exec(struct parent *);

/* The check's output is complete and its status known: on, or refuse. */
static void
upgrade_checked(struct parent *p)
{
	struct ctl_client	*ctl = U.ctl;
	char			 reason[UPGRADE_REASON_MAX], out[CHECK_OUT_MAX + 1];
	size_t			 len;

	if (!U.eof || !U.exited)
		return;
	if (p->stopping) {
		upgrade_reset();
		upgrade_fail(ctl, "the daemon is stopping", NULL);
		return;
	}
	if (WIFEXITED(U.status) && WEXITSTATUS(U.status) == 0) {
		upgrade_exec(p);
		return;
	}
	memcpy(out, U.out, U.outlen);
	out[U.outlen] = '\0';
	len = strcspn(out, "\n");
	if (WIFSIGNALED(U.status))
		snprintf(reason, sizeof(reason), "%s -n died of signal %d",
		    p->self, WTERMSIG(U.status));
	else if (WEXITSTATUS(U.status) == 127 && U.outlen == 0)
		snprintf(reason, sizeof(reason), "cannot execute %s", p->self);
	else
		snprintf(reason, sizeof(reason), "%s -n refused the "
		    "configuration: %.*s", p->self, (int)len, out);
	upgrade_reset();
	upgrade_fail(ctl, reason, out);
}

static void
upgrade_check_read(evutil_socket_t fd, short ev, void *arg)
{
	char	buf[512];
	ssize_t	n;
	size_t	take;

	n = read(fd, buf, sizeof(buf));
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0) {
		take = (size_t)n;
		if (take > sizeof(U.out) - U.outlen)
			take = sizeof(U.out) - U.outlen;
		memcpy(U.out + U.outlen, buf, take);
		U.outlen += take;
		return;
	}
	U.eof = 1;
	event_del(U.ev_out);
	upgrade_checked(arg);
}

static void
upgrade_check_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct parent		*p = arg;
	struct ctl_client	*ctl = U.ctl;
	char			 reason[UPGRADE_REASON_MAX];

	/* reaped later as a process the parent does not know */
	kill(U.pid, SIGKILL);
	snprintf(reason, sizeof(reason), "%s -n did not finish within %d s",
	    p->self, CHECK_WAIT_MS / 1000);
	upgrade_reset();
	upgrade_fail(ctl, reason, NULL);
}

int
parent_upgrade_reaped(struct parent *p, pid_t pid, int status)
{
	if (!U.busy || pid != U.pid)
		return 0;
	U.exited = 1;
	U.status = status;
	upgrade_checked(p);
	return 1;
}

void
parent_upgrade_start(struct parent *p, struct ctl_client *ctl)
{
	struct timeval	 tv = ms_timeval(CHECK_WAIT_MS);
	struct stat	 st;
	char		 reason[UPGRADE_REASON_MAX];
	char		**argv;
	int		 pfd[2];
	pid_t		 pid;

	if (p->stopping || U.busy || R.waiting) {
		upgrade_fail(ctl, p->stopping ? "the daemon is stopping" :
		    U.busy ? "an upgrade is already under way" :
		    "the fronts of the last upgrade are not up yet", NULL);
		return;
	}
	/* what execve would say, said plainly (the check only sees status 127) */
	if (stat(p->self, &st) == -1 || access(p->self, X_OK) == -1 ||
	    (!S_ISREG(st.st_mode) && (errno = EACCES))) {
		snprintf(reason, sizeof(reason), "cannot execute %s: %s",
		    p->self, strerror(errno));
		upgrade_fail(ctl, reason, NULL);
		return;
	}
	if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) == -1) {
		snprintf(reason, sizeof(reason), "pipe: %s", strerror(errno));
		upgrade_fail(ctl, reason, NULL);
		return;
	}
	/* the new program reads the configuration as the next image will */
	argv = upgrade_argv(&p->opts, 1);
	pid = spawn_command(p->self, argv, environ, pfd[1]);
	free(argv);
	close(pfd[1]);
	if (pid == -1) {
		close(pfd[0]);
		snprintf(reason, sizeof(reason), "cannot start %s -n: %s",
		    p->self, strerror(errno));
		upgrade_fail(ctl, reason, NULL);
		return;
	}
	U.busy = 1;
	U.pid = pid;
	U.ctl = ctl;
	U.fd = pfd[0];
	U.ev_out = event_new(p->base, U.fd, EV_READ | EV_PERSIST,
	    upgrade_check_read, p);
	U.ev_timer = evtimer_new(p->base, upgrade_check_timeout, p);
	if (U.ev_out == NULL || U.ev_timer == NULL)
		fatalx("parent: event_new");
	event_add(U.ev_out, NULL);
	evtimer_add(U.ev_timer, &tv);
	log_info("event=upgrade program=\"%s\" step=check pid=%d", p->self,
	    (int)U.pid);
}

void
parent_upgrade_signal(evutil_socket_t sig, short ev, void *arg)
{
	parent_upgrade_start(arg, NULL);
}

/* The state into a memfd, then the new program in this process. */
static void
upgrade_exec(struct parent *p)
{
	struct ustate		 us;
	struct ctl_client	*ctl = U.ctl;
	sigset_t		 set, old;
	char			 reason[UPGRADE_REASON_MAX];
	char			**argv, **envp;
	int			 sfd, pfd, saved;

	upgrade_reset();
	/* the way back, should the new image refuse: this very program */
	if ((pfd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(reason, sizeof(reason), "cannot open the running "
		    "program: %s", strerror(errno));
		upgrade_fail(ctl, reason, NULL);
		return;
	}
	/* /metrics scrapes waiting for relays are answered with what is known */
	parent_metrics_flush(p);
	/* the state carries workers with a pid, and no zygote (replaced) */
	parent_starts_settle(p);
	ustate_init(&us);
	adopt_save(p, &us, ctl);
	if ((sfd = ustate_memfd(&us)) == -1) {
		snprintf(reason, sizeof(reason), "cannot write the state: %s",
		    strerror(errno));
		close(pfd);
		ustate_free(&us);
		upgrade_fail(ctl, reason, NULL);
		return;
	}
	ustate_keep(&us, sfd);
	ustate_keep(&us, pfd);
	argv = upgrade_argv(&p->opts, 0);
	envp = upgrade_env(sfd, pfd, NULL);
	log_info("event=upgrade program=\"%s\" step=exec descriptors=%zu "
	    "state_bytes=%zu", p->self, us.nfds, us.len);
	upgrade_sigset(&set);
	sigprocmask(SIG_BLOCK, &set, &old);
	if (ustate_cloexec(&us, 0) == 0)
		execve(p->self, argv, envp);
	/* still this image, and nothing it holds has changed */
	saved = errno;
	ustate_cloexec(&us, 1);
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(sfd);
	close(pfd);
	ustate_free(&us);
	free(argv);
	free(envp);
	snprintf(reason, sizeof(reason), "cannot execute %s: %s", p->self,
	    strerror(saved));
	upgrade_fail(ctl, reason, NULL);
}

/* ---- the image an upgrade executed ---------------------------------------- */

static int
upgrade_env_fd(const char *name)
{
	const char	*s, *errstr;
	long long	 v;

	if ((s = getenv(name)) == NULL)
		return -1;
	v = strtonum(s, 3, INT_MAX, &errstr);
	return errstr != NULL ? -1 : (int)v;
}

/* fatal() before the point of no return: back, with its message as the reason. */
static void
upgrade_fatal(const char *msg)
{
	parent_upgrade_back(msg);
}

int
parent_upgrade_begin(const struct parent_opts *opts)
{
	const char	*failed, *why;
	struct stat	 st;

	if (getenv(ENV_STATE) == NULL)
		return UPGRADE_NONE;
	I.opts = opts;
	I.state_fd = upgrade_env_fd(ENV_STATE);
	I.program_fd = upgrade_env_fd(ENV_PROGRAM);
	failed = getenv(ENV_FAILED);
	I.mode = failed != NULL ? UPGRADE_BACK : UPGRADE_IN;
	if (failed != NULL)
		strlcpy(I.reason, failed, sizeof(I.reason));
	/* not for the processes this one starts, nor for the next exec */
	unsetenv(ENV_STATE);
	unsetenv(ENV_PROGRAM);
	unsetenv(ENV_FAILED);
	if (I.program_fd == -1 || fstat(I.program_fd, &st) == -1 ||
	    !S_ISREG(st.st_mode))
		fatalx("upgrade: %s names no program to go back to",
		    ENV_PROGRAM);
	if (I.mode == UPGRADE_IN)
		log_fatal_hook = upgrade_fatal;
	if (I.state_fd == -1)
		parent_upgrade_back("no state to adopt (" ENV_STATE ")");
	/*
	 * Before anything here opens a descriptor (syslog's socket): one that
	 * took the number of a descriptor the state names, and lost, would
	 * hide the loss.
	 */
	if (adopt_read(I.state_fd, I.mode == UPGRADE_BACK, &why) == -1)
		parent_upgrade_back(why);
	log_init(opts->foreground, opts->verbose, "pyrelayd");
	strlcpy(I.previous, adopt_parent()->version, sizeof(I.previous));
	I.commit_ms = adopt_parent()->commit_ms;
	return I.mode;
}

struct config *
parent_upgrade_config(void)
{
	struct config	*conf;
	const char	*why;

	if ((conf = adopt_config(&why)) == NULL)
		fatalx("upgrade: the way back: %s", why);
	return conf;
}

void
parent_upgrade_back(const char *reason)
{
	char	**argv, **envp;

	if (I.mode != UPGRADE_IN)
		fatalx("upgrade: %s; there is no way back from here", reason);
	log_fatal_hook = NULL;
	/* what the state names crosses this exec too, and the two of ours */
	adopt_keep_all();
	fcntl(I.state_fd, F_SETFD, 0);
	fcntl(I.program_fd, F_SETFD, 0);
	argv = upgrade_argv(I.opts, 0);
	envp = upgrade_env(I.state_fd, I.program_fd, reason);
	syscall(SYS_execveat, I.program_fd, "", argv, envp, AT_EMPTY_PATH);
	fatal("upgrade: %s; going back to the program before failed too",
	    reason);
}

void
parent_start_failed(const char *err)
{
	char	q[UPGRADE_REASON_MAX];

	switch (I.mode) {
	case UPGRADE_IN:
		parent_upgrade_back(err);
	case UPGRADE_BACK:
		log_warnx("event=upgrade_back_without reason=\"%s\"",
		    log_quotable(err, q, sizeof(q)));
		return;
	default:
		fprintf(stderr, "pyrelayd: %s\n", err);
		exit(1);
	}
}

int
parent_upgrade_self(struct parent *p)
{
	if (I.mode == UPGRADE_NONE)
		return 0;
	strlcpy(p->self, adopt_parent()->self, sizeof(p->self));
	if (I.mode == UPGRADE_BACK) {
		/* the way back skips the checks the program before made */
		p->uid = adopt_parent()->uid;
		p->gid = adopt_parent()->gid;
	}
	return 1;
}

int
parent_upgrade_listener(const struct listen_addr *la)
{
	return I.mode == UPGRADE_NONE ? -1 : adopt_listener(la);
}

int
parent_upgrade_control(const char *path)
{
	return I.mode == UPGRADE_NONE ? -1 : adopt_control(path);
}

void
parent_upgrade_adopt(struct parent *p)
{
	const char	*why;
	sigset_t	 set;

	if (I.mode == UPGRADE_NONE)
		return;
	if (adopt_build(p, &I.upgrader, &why) == -1)
		parent_upgrade_back(why);
	/* the point of no return */
	log_fatal_hook = NULL;
	adopt_commit(p, I.mode == UPGRADE_BACK);
	close(I.state_fd);
	close(I.program_fd);
	upgrade_sigset(&set);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	/* children that ended meanwhile are reaped first */
	event_active(p->ev_sigchld, EV_SIGNAL, 1);
}

/* Answers who asked; the new fronts are up, or it is late. */
static void
upgrade_answer(struct parent *p, int late)
{
	char	rest[2 * US_VERSION_MAX + 64], line[3 * US_VERSION_MAX + 128];

	if (R.ev != NULL)
		event_free(R.ev);
	R.ev = NULL;
	R.waiting = 0;
	if (late) {
		log_warnx("event=upgrade_fronts_late version=%s previous=%s "
		    "waited_ms=%d reason=\"the new fronts are not up; the "
		    "replaced ones go on serving\"", pyrelayd_version,
		    R.previous, UPGRADE_READY_MS);
		if (R.ctl != NULL) {
			snprintf(line, sizeof(line), "error: upgraded to %s, "
			    "but its fronts are not up after %d s: those of %s "
			    "go on serving", pyrelayd_version,
			    UPGRADE_READY_MS / 1000, R.previous);
			parent_ctl_answer(R.ctl, line, NULL);
		}
	} else {
		log_info("event=upgraded version=%s previous=%s pid=%d "
		    "relays=%u connections=%u paused_ms=%lld ready_ms=%lld",
		    pyrelayd_version, R.previous, (int)getpid(), p->nrelays,
		    p->live, (long long)(R.served_ms - R.commit_ms),
		    (long long)(now_ms() - R.commit_ms));
		if (R.ctl != NULL) {
			snprintf(rest, sizeof(rest), "version %s\n"
			    "previous_version %s\n", pyrelayd_version,
			    R.previous);
			parent_ctl_answer(R.ctl, "ok", rest);
		}
	}
	R.ctl = NULL;
}

static void
upgrade_ready_late(evutil_socket_t fd, short ev, void *arg)
{
	upgrade_answer(arg, 1);
}

void
parent_upgrade_done(struct parent *p)
{
	char		q[UPGRADE_REASON_MAX], line[UPGRADE_REASON_MAX + 32];
	struct timeval	tv = ms_timeval(UPGRADE_READY_MS);

	if (I.mode == UPGRADE_NONE)
		return;
	if (I.mode == UPGRADE_BACK) {
		log_warnx("event=upgrade_failed reason=\"%s\"",
		    log_quotable(I.reason, q, sizeof(q)));
		if (I.upgrader != NULL) {
			snprintf(line, sizeof(line), "error: upgrade failed: %s",
			    I.reason);
			parent_ctl_answer(I.upgrader, line, NULL);
		}
	} else {
		/* answered when the new fronts are up (parent_upgrade_ready) */
		R.waiting = 1;
		R.ctl = I.upgrader;
		log_quotable(I.previous, R.previous, sizeof(R.previous));
		R.commit_ms = I.commit_ms;
		R.served_ms = now_ms();
		if ((R.ev = evtimer_new(p->base, upgrade_ready_late, p)) == NULL)
			fatalx("parent: evtimer_new");
		evtimer_add(R.ev, &tv);
	}
	memset(&I, 0, sizeof(I));
	/* the fronts may be up already */
	if (p->ready)
		parent_upgrade_ready(p);
}

void
parent_upgrade_ready(struct parent *p)
{
	if (R.waiting)
		upgrade_answer(p, 0);
}
