/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The parent and the system's limits (pyrelayd(8), CAPACITY): the
 * descriptors it may hold, the listen backlog, and which limit a failed
 * socketpair(), accept() or fork() ran into, for the log line that says
 * what to raise.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/resource.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "parent.h"
#include "pyrelayd.h"

/* A number from a /proc or /sys file, or -1. */
static long long
read_figure(const char *path)
{
	FILE		*f;
	long long	 v = -1;

	if ((f = fopen(path, "re")) == NULL)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* This process's cgroup (v2) has pids.max tasks already: systemd TasksMax=. */
static int
cgroup_pids_full(void)
{
	FILE		*f;
	char		 line[512], path[600];
	long long	 max, cur;
	size_t		 len;

	if ((f = fopen("/proc/self/cgroup", "re")) == NULL)
		return 0;
	path[0] = '\0';
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "0::", 3) == 0) {
			len = strcspn(line + 3, "\n");
			line[3 + len] = '\0';
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/pids.max",
			    line + 3);
		}
	fclose(f);
	if (path[0] == '\0' || (max = read_figure(path)) <= 0)
		return 0;	/* no file, or "max" */
	len = strlen(path);
	strlcpy(path + len - strlen("max"), "current", sizeof(path) - len + 3);
	return (cur = read_figure(path)) >= 0 && cur >= max;
}

/*
 * Which limit a failed socketpair(), accept() or fork() ran into, by its
 * errno (CAPACITY in pyrelayd(8) says what to raise).  fork() says EAGAIN
 * for several: the figures that can be read tell which one is full.
 */
const char *
limit_name(int err)
{
	struct rlimit	rl;
	char		buf[128];
	long long	tasks = -1, v;
	FILE		*f;

	switch (err) {
	case EMFILE:
		return "RLIMIT_NOFILE";
	case ENFILE:
		return "fs.file-max";
	case ENOMEM:
		return "memory";
	case EAGAIN:
		break;
	default:
		return "none";
	}
	if (cgroup_pids_full())
		return "pids.max";
	/* the fourth field of /proc/loadavg: running/total tasks */
	if ((f = fopen("/proc/loadavg", "re")) != NULL) {
		if (fgets(buf, sizeof(buf), f) != NULL &&
		    sscanf(buf, "%*s %*s %*s %*d/%lld", &tasks) != 1)
			tasks = -1;
		fclose(f);
	}
	if (tasks > 0 && (v = read_figure("/proc/sys/kernel/threads-max")) > 0 &&
	    tasks + 16 >= v)
		return "kernel.threads-max";
	if (tasks > 0 && (v = read_figure("/proc/sys/kernel/pid_max")) > 0 &&
	    tasks + 300 >= v)
		return "kernel.pid_max";
	/* root (CAP_SYS_RESOURCE) is not held to RLIMIT_NPROC */
	if (geteuid() != 0 && getrlimit(RLIMIT_NPROC, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY)
		return "RLIMIT_NPROC";
	return "unknown";
}

/*
 * RLIMIT_NOFILE: the soft limit up to the hard one, for the parent holds
 * about one descriptor per server-id (pyrelayd(8), CAPACITY).  Workers
 * inherit it; each sets its own (sandbox.c).
 */
void
parent_raise_nofile(struct parent *p)
{
	struct rlimit	rl;
	long long	nr_open;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	p->nofile_was = rl.rlim_cur;
	if (rl.rlim_max == RLIM_INFINITY) {
		/* the kernel refuses more than fs.nr_open */
		nr_open = read_figure("/proc/sys/fs/nr_open");
		rl.rlim_cur = nr_open > 0 ? (rlim_t)nr_open : 1048576;
	} else
		rl.rlim_cur = rl.rlim_max;
	if (rl.rlim_cur > p->nofile_was && setrlimit(RLIMIT_NOFILE, &rl) == -1)
		rl.rlim_cur = p->nofile_was;
	p->nofile = rl.rlim_cur;
	p->nofile_max = rl.rlim_max;
}

/* The listen backlog: the kernel's ceiling, net.core.somaxconn. */
int
listen_backlog(void)
{
	long long	v;

	/* unreadable (systemd ProcSubset=pid): the kernel caps INT_MAX to it */
	if ((v = read_figure("/proc/sys/net/core/somaxconn")) <= 0 || v > INT_MAX)
		return INT_MAX;
	return (int)v;
}
