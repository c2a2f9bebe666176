/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Logging the OpenBSD way: log_warn appends strerror(errno), fatal exits.
 * -d logs to stderr, otherwise syslog (the journal under systemd).
 * Event lines are "event=name key=value ..."; callers write them so.
 */
#include "config.h"

#include <sys/uio.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "pyrelayd.h"

/*
 * The zygote sets the relays' name once (log_forked), and no relay
 * forked from it writes a byte of this: a variable a relay writes is a
 * page it copies (docs/relay-executable.md).
 */
static int		 log_background;
static int		 log_verbose;
static const char	*log_name;	/* NULL: "pyrelayd" */

/*
 * A line, its head, and the pid the head names: asked of the kernel once
 * per process (log_init, log_newpid), not once a line.  Thread-local:
 * in the thread's block, right under its control block, whose page a
 * relay writes anyway as it starts (its stack protector's canary, and
 * errno), where in .bss the pid alone cost every relay a page; not on
 * the stack either, whose first page a relay shares with its title and
 * messages, and which vsnprintf's own frames fill
 * (docs/relay-executable.md).  A line is written before the next is
 * formatted.
 */
static __thread struct {
	pid_t	pid;
	char	head[64];
	char	line[2048];
} log_buf;

void			(*log_fatal_hook)(const char *);

void
log_init(int foreground, int verbose, const char *procname)
{
	log_background = !foreground;
	log_verbose = verbose;
	log_buf.pid = getpid();
	if (procname != NULL)
		log_name = procname;
	if (!foreground)
		openlog("pyrelayd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
log_forked(const char *procname)
{
	/* set before the forks: the relays forked from here write nothing */
	log_name = procname;
}

void
log_newpid(void)
{
	log_buf.pid = getpid();
}

pid_t
log_getpid(void)
{
	/* a program that never called log_init: the unit tests */
	if (log_buf.pid == 0)
		log_buf.pid = getpid();
	return log_buf.pid;
}

void
log_procname(const char *procname)
{
	log_name = procname;
}

void
log_setverbose(int v)
{
	log_verbose = v;
}

int
log_getverbose(void)
{
	return log_verbose;
}

const char *
log_quotable(const char *text, char *buf, size_t size)
{
	size_t	i;

	if (size == 0)
		return "";
	for (i = 0; text[i] != '\0' && i < size - 1; i++) {
		if (text[i] == '"')
			buf[i] = '\'';
		else if (text[i] == '\\' || (unsigned char)text[i] < 0x20 ||
		    text[i] == 0x7f)
			buf[i] = '?';
		else
			buf[i] = text[i];
	}
	buf[i] = '\0';
	return buf;
}

static void
log_line(int pri, const char *msg)
{
	char		*head = log_buf.head;
	struct iovec	 iov[3];
	int		 n;

	if (log_background) {
		syslog(pri, "%s: %s", log_name != NULL ? log_name : "pyrelayd",
		    msg);
		return;
	}
	n = snprintf(head, sizeof(log_buf.head), "%s[%d]: ",
	    log_name != NULL ? log_name : "pyrelayd", (int)log_getpid());
	if (n < 0)
		return;
	if (n > (int)sizeof(log_buf.head) - 1)
		n = sizeof(log_buf.head) - 1;
	/*
	 * One write per line, so that lines of several processes never
	 * interleave; gathered rather than copied into a line buffer, which
	 * kept 2 KiB more stack dirty in every relay.
	 */
	iov[0].iov_base = head;
	iov[0].iov_len = n;
	iov[1].iov_base = (void *)msg;
	iov[1].iov_len = strlen(msg);
	iov[2].iov_base = "\n";
	iov[2].iov_len = 1;
	if (writev(STDERR_FILENO, iov, 3) == -1) {
		/* nowhere left to report it */
	}
}

static void vlog(int, int, const char *, va_list)
    __attribute__((__format__(printf, 3, 0)));

/* The line is log_buf.line: see there. */
static void
vlog(int pri, int with_errno, const char *fmt, va_list ap)
{
	char	*buf = log_buf.line;
	int	 saved = errno;
	size_t	 len;

	vsnprintf(buf, sizeof(log_buf.line), fmt, ap);
	if (with_errno) {
		len = strlen(buf);
		/* key=value like every line: the cause is the error field */
		snprintf(buf + len, sizeof(log_buf.line) - len,
		    " error=\"%s\"", strerror(saved));
	}
	log_line(pri, buf);
	errno = saved;
}

void
log_warn(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, 1, fmt, ap);
	va_end(ap);
}

void
log_warnx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, 0, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vlog(LOG_INFO, 0, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list	ap;

	if (log_verbose < 1)
		return;
	va_start(ap, fmt);
	vlog(LOG_DEBUG, 0, fmt, ap);
	va_end(ap);
}

/* A fatal error, to the hook (which does not return) or to the log, then exit. */
static void __attribute__((__noreturn__))
vfatal(int with_errno, const char *fmt, va_list ap)
{
	char	buf[1024];
	int	saved = errno;
	size_t	len;

	if (log_fatal_hook == NULL) {
		errno = saved;
		vlog(LOG_CRIT, with_errno, fmt, ap);
		exit(1);
	}
	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (with_errno) {
		len = strlen(buf);
		snprintf(buf + len, sizeof(buf) - len, ": %s", strerror(saved));
	}
	log_fatal_hook(buf);
	exit(1);
}

void
fatal(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vfatal(1, fmt, ap);
}

void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vfatal(0, fmt, ap);
}
