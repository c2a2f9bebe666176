/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * pyrelayctl(8): sends one command line to the pyrelayd parent over its
 * control socket and prints the answer (control.h has the protocol).
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "pyrelayd.h"

#define CTL_ANSWER_TIMEOUT_MS	30000	/* the whole exchange */
#define CTL_FIRST_LINE_MAX	1024	/* "ok" or "error: <message>" */

static const char	*ctl_path = PYRELAYD_CONTROL;

static void __attribute__((__noreturn__))
usage(void)
{
	fprintf(stderr, "usage: pyrelayctl [-s socket] command [argument ...]\n");
	exit(1);
}

/* Waits until fd is ready for events or exits when the deadline passes. */
static void
ctl_wait(int fd, short events, int64_t deadline)
{
	switch (fd_wait(fd, events, deadline)) {
	case 0:
		errx(1, "%s: no answer within %d seconds", ctl_path,
		    CTL_ANSWER_TIMEOUT_MS / 1000);
	case -1:
		err(1, "poll");
	}
}

/*
 * Joins the command words with single spaces and a final "\n" into line.
 * Returns its length, or exits with the usage when it is no valid command:
 * what is checked here is exactly what is sent.
 */
static size_t
ctl_line(int argc, char *argv[], char *line, size_t size)
{
	struct ctl_cmd	 cmd;
	const char	*errstr;
	size_t		 len;
	int		 i;

	line[0] = '\0';
	for (i = 0; i < argc; i++) {
		if (i > 0)
			(void)strlcat(line, " ", size);
		(void)strlcat(line, argv[i], size);
	}
	if ((len = strlcat(line, "\n", size)) >= size) {
		warnx("command too long");
		usage();
	}
	if (ctl_parse(line, len, &cmd, &errstr) == -1) {
		warnx("%s", errstr);
		usage();
	}
	return len;
}

static int
ctl_connect(void)
{
	struct sockaddr_un	sun;
	int			fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlcpy(sun.sun_path, ctl_path, sizeof(sun.sun_path)) >=
	    sizeof(sun.sun_path))
		errx(1, "%s: %s", ctl_path, strerror(ENAMETOOLONG));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		err(1, "socket");
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		err(1, "%s", ctl_path);
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == -1)
		err(1, "fcntl");
	return fd;
}

static void
ctl_send(int fd, const char *line, size_t len, int64_t deadline)
{
	ssize_t	n;

	while (len > 0) {
		ctl_wait(fd, POLLOUT, deadline);
		/* MSG_NOSIGNAL: a daemon gone away is an error, not SIGPIPE */
		n = send(fd, line, len, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			err(1, "%s", ctl_path);
		}
		line += n;
		len -= (size_t)n;
	}
}

/*
 * Judges the first line of the answer; returns the stream the rest goes
 * to and sets *status to the exit status.
 */
static FILE *
ctl_first_line(char *first, int *status)
{
	char	*p;

	if (strcmp(first, "ok") == 0) {
		*status = 0;
		return stdout;
	}
	if (strncmp(first, "error: ", 7) == 0) {
		/* the message goes to a terminal: show no control bytes */
		for (p = first + 7; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
		warnx("%s", first + 7);
		*status = 1;
		return stderr;
	}
	errx(1, "bad answer from pyrelayd");
}

/* Reads the answer until the daemon closes; returns the exit status. */
static int
ctl_answer(int fd, int64_t deadline)
{
	char	 buf[8192], first[CTL_FIRST_LINE_MAX];
	char	*p, *nl;
	size_t	 flen = 0, take, left;
	ssize_t	 n;
	FILE	*out = NULL;
	int	 status = 1;

	for (;;) {
		ctl_wait(fd, POLLIN, deadline);
		n = read(fd, buf, sizeof(buf));
		if (n == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			err(1, "%s", ctl_path);
		}
		if (n == 0)
			break;
		p = buf;
		left = (size_t)n;
		if (out == NULL) {
			nl = memchr(buf, '\n', (size_t)n);
			take = nl != NULL ? (size_t)(nl - buf) : (size_t)n;
			if (take >= sizeof(first) - flen)
				errx(1, "bad answer from pyrelayd");
			memcpy(first + flen, buf, take);
			flen += take;
			if (nl == NULL)
				continue;
			first[flen] = '\0';
			out = ctl_first_line(first, &status);
			p = nl + 1;
			left = (size_t)n - take - 1;
		}
		if (left > 0 && fwrite(p, 1, left, out) != left)
			err(1, "write");
	}
	if (out == NULL) {
		/* the daemon closed without a newline after the first line */
		if (flen == 0)
			errx(1, "bad answer from pyrelayd");
		first[flen] = '\0';
		(void)ctl_first_line(first, &status);
	}
	return status;
}

int
main(int argc, char *argv[])
{
	char	line[CTL_LINE_MAX + 1];	/* the line and its NUL */
	size_t	len;
	int64_t	deadline;
	int	ch, fd, status;

	/* "+": stop at the command, so that a server-id may start with '-' */
	while ((ch = getopt(argc, argv, "+s:")) != -1) {
		switch (ch) {
		case 's':
			ctl_path = optarg;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0)
		usage();

	len = ctl_line(argc, argv, line, sizeof(line));
	fd = ctl_connect();
	deadline = now_ms() + CTL_ANSWER_TIMEOUT_MS;
	ctl_send(fd, line, len, deadline);
	status = ctl_answer(fd, deadline);
	close(fd);
	if (fflush(stdout) == EOF || ferror(stdout))
		err(1, "stdout");
	return status;
}
