/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * What pyrelay-bench reads of the relay and the machine in /proc: the
 * processes of the relay's tree (CPU time, context switches, faults,
 * PSS, and what kind of process each is) and the machine's memory
 * figures.  Reading /proc/PID makes the kernel allocate inodes and
 * dentries (slab), so callers take the machine's figures before they
 * walk the processes, or measure what the walk cost.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define MAX_PROCS	65536
#define MAX_DEPTH	64	/* a tree deeper than this is not a relay's */

/* by enum pkind; PK_MAIN and PK_CHILD name no pyrelayd title */
const char *const proc_kind_names[PK_N] = { "main", "child", "parent",
    "front", "zygote", "relay", "pooled", "spawner", "push", "other" };

static int	 by_pid(const void *, const void *);
static ssize_t	 read_small(const char *, pid_t, char *, size_t);
static int	 proc_stat(pid_t, struct proc *);
static uint64_t	 proc_cswitch_of(pid_t);
static uint64_t	 proc_cpu_ns_of(pid_t);
static enum pkind proc_kind_of(pid_t, pid_t);

long long
meminfo_kib(const char *path, const char *key)
{
	FILE		*f;
	char		 line[256];
	size_t		 klen = strlen(key);
	long long	 v = -1;

	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, key, klen) == 0) {
			v = strtoll(line + klen, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

/*
 * One read of /proc/meminfo: MemAvailable, and the sum of the kernel's
 * and processes' memory that grows with each idle server-id (anonymous
 * pages, page tables, kernel stacks, slab).  -1 where a line is missing.
 */
void
meminfo_read(struct meminfo *m)
{
	static const char	*sum_keys[] = { "AnonPages:", "PageTables:",
				    "KernelStack:", "Slab:" };
	FILE			*f;
	char			 line[256];
	size_t			 i;
	long long		 v;
	int			 found = 0;

	m->available = m->sum = m->slab = -1;
	if ((f = fopen("/proc/meminfo", "r")) == NULL)
		return;
	m->sum = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "MemAvailable:", 13) == 0)
			m->available = strtoll(line + 13, NULL, 10);
		for (i = 0; i < sizeof(sum_keys) / sizeof(sum_keys[0]); i++)
			if (strncmp(line, sum_keys[i], strlen(sum_keys[i])) ==
			    0) {
				v = strtoll(line + strlen(sum_keys[i]), NULL,
				    10);
				m->sum += v;
				if (i == 3)
					m->slab = v;
				found++;
			}
	}
	fclose(f);
	if (found != (int)(sizeof(sum_keys) / sizeof(sum_keys[0])))
		m->sum = -1;
}

static int
by_pid(const void *a, const void *b)
{
	const struct proc	*x = a, *y = b;

	return x->pid < y->pid ? -1 : x->pid > y->pid;
}

/*
 * The start of /proc/PID/file, NUL-terminated, in one read: these files
 * are small, and a relay's tree may hold 20,000 processes.  The length
 * read, or -1 if the process is gone.
 */
static ssize_t
read_small(const char *file, pid_t pid, char *buf, size_t size)
{
	char		 path[64];
	ssize_t		 len;
	int		 fd;

	(void)snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	len = read(fd, buf, size - 1);
	close(fd);
	if (len < 0)
		return -1;
	buf[len] = '\0';
	return len;
}

/* pid, ppid, CPU ticks and faults of one process; -1 if it is gone. */
static int
proc_stat(pid_t pid, struct proc *p)
{
	char		 buf[1024], *s;
	int		 f;

	if (read_small("stat", pid, buf, sizeof(buf)) <= 0)
		return -1;
	/* the command name may hold spaces and parentheses */
	if ((s = strrchr(buf, ')')) == NULL)
		return -1;
	memset(p, 0, sizeof(*p));
	p->pid = pid;
	/*
	 * Fields after the name, from 3 (state): ppid 4, minflt 10 (not
	 * cminflt: what a process's reaped children did is theirs), utime
	 * 14, stime 15, and cutime 16, cstime 17: the time of children
	 * already reaped, so that a relay process that lived and died
	 * between two snapshots is still counted.
	 */
	for (f = 3, s++; *s != '\0' && f <= 17; f++) {
		while (*s == ' ')
			s++;
		if (f == 4)
			p->ppid = (pid_t)strtol(s, NULL, 10);
		else if (f == 10)
			p->minflt = strtoull(s, NULL, 10);
		else if (f >= 14 && f <= 17)
			p->ticks += strtoull(s, NULL, 10);
		while (*s != ' ' && *s != '\0')
			s++;
	}
	return 0;
}

/* Voluntary and involuntary context switches of one process so far. */
static uint64_t
proc_cswitch_of(pid_t pid)
{
	char		 path[64];
	long long	 v, n;

	(void)snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	v = meminfo_kib(path, "voluntary_ctxt_switches:");
	n = meminfo_kib(path, "nonvoluntary_ctxt_switches:");
	return (uint64_t)(v > 0 ? v : 0) + (uint64_t)(n > 0 ? n : 0);
}

/*
 * Nanoseconds on CPU so far (the first field of schedstat): one relay
 * process spends far less than a clock tick on a connection, which
 * the ticks of stat cannot tell from nothing.
 */
static uint64_t
proc_cpu_ns_of(pid_t pid)
{
	char	 buf[128];

	if (read_small("schedstat", pid, buf, sizeof(buf)) <= 0)
		return 0;
	return strtoull(buf, NULL, 10);
}

/*
 * pyrelayd titles its processes ("pyrelayd: relay <sid> (...)", "pyrelayd:
 * pooled relay"): the word after "pyrelayd: " is the kind.  Other relays
 * do not, and their processes are told apart by place only.
 */
static enum pkind
proc_kind_of(pid_t pid, pid_t root)
{
	static const char	 prefix[] = "pyrelayd: ";
	char			 buf[64], *w;
	size_t			 len;
	int			 k;

	if (read_small("cmdline", pid, buf, sizeof(buf)) <= 0 ||
	    strncmp(buf, prefix, sizeof(prefix) - 1) != 0)
		return pid == root ? PK_MAIN : PK_CHILD;
	w = buf + sizeof(prefix) - 1;
	len = strcspn(w, " (");
	for (k = PK_PARENT; k < PK_OTHER; k++)
		if (strlen(proc_kind_names[k]) == len &&
		    strncmp(w, proc_kind_names[k], len) == 0)
			return (enum pkind)k;
	return PK_OTHER;
}

/*
 * Reads /proc: every process of the tree rooted at root, with what
 * flags (PS_*) ask for besides its stat, read for the tree's processes
 * only.  Sorted by pid, so that each process finds its parent by a
 * binary search: a relay of 20,000 processes is walked in one pass.
 */
void
proc_snap(pid_t root, struct snap *s, int flags)
{
	DIR		*d;
	struct dirent	*de;
	struct proc	*all, key, *up;
	unsigned char	*in;	/* 0 not known yet, 1 in the tree, 2 not */
	size_t		 n = 0, i, k, chain[MAX_DEPTH];
	int		 depth, v;
	pid_t		 pid;
	char		*end;

	s->t = now_ns();
	s->n = 0;
	if (s->p == NULL)
		s->p = xcalloc(MAX_PROCS, sizeof(*s->p));
	all = xcalloc(MAX_PROCS, sizeof(*all));
	if ((d = opendir("/proc")) == NULL) {
		free(all);
		return;
	}
	while ((de = readdir(d)) != NULL && n < MAX_PROCS) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		pid = (pid_t)strtol(de->d_name, &end, 10);
		if (*end == '\0' && proc_stat(pid, &all[n]) == 0)
			n++;
	}
	closedir(d);
	qsort(all, n, sizeof(*all), by_pid);
	in = xcalloc(n, 1);
	for (i = 0; i < n; i++) {
		/* up the parents until one is known, then mark the way */
		depth = 0;
		k = i;
		for (;;) {
			if (in[k] != 0) {
				v = in[k];
				break;
			}
			if (all[k].pid == root) {
				v = 1;
				in[k] = 1;
				break;
			}
			key.pid = all[k].ppid;
			if (depth == MAX_DEPTH || (up = bsearch(&key, all, n,
			    sizeof(*all), by_pid)) == NULL) {
				v = 2;
				break;
			}
			chain[depth++] = k;
			k = (size_t)(up - all);
		}
		while (depth > 0)
			in[chain[--depth]] = (unsigned char)v;
		if (in[i] == 0)
			in[i] = (unsigned char)v;
	}
	for (i = 0; i < n; i++) {
		if (in[i] != 1)
			continue;
		if (flags & PS_CSWITCH)
			all[i].cswitch = proc_cswitch_of(all[i].pid);
		if (flags & PS_KIND) {
			all[i].cpu_ns = proc_cpu_ns_of(all[i].pid);
			all[i].kind = proc_kind_of(all[i].pid, root);
		}
		s->p[s->n++] = all[i];
	}
	free(in);
	free(all);
}

/* The process pid in a snapshot, or NULL. */
static const struct proc *
snap_find(const struct snap *s, pid_t pid)
{
	struct proc	 key;

	key.pid = pid;
	return bsearch(&key, s->p, s->n, sizeof(*s->p), by_pid);
}

/* CPU of the tree between two snapshots, in % of one core. */
double
proc_cpu(const struct snap *a, const struct snap *b)
{
	const struct proc	*was;
	uint64_t		 ticks = 0, before;
	size_t			 i;
	long			 hz = sysconf(_SC_CLK_TCK);

	if (b->t <= a->t || hz <= 0)
		return -1;
	for (i = 0; i < b->n; i++) {
		before = (was = snap_find(a, b->p[i].pid)) != NULL ?
		    was->ticks : 0;
		if (b->p[i].ticks > before)
			ticks += b->p[i].ticks - before;
	}
	return 100.0 * (double)ticks / (double)hz /
	    ((double)(b->t - a->t) / 1e9);
}

/*
 * Context switches of the tree between two snapshots: those of the
 * processes alive at the second (a process gone meanwhile takes its own
 * with it).
 */
uint64_t
proc_cswitch(const struct snap *a, const struct snap *b)
{
	const struct proc	*was;
	uint64_t		 sum = 0, before;
	size_t			 i;

	for (i = 0; i < b->n; i++) {
		before = (was = snap_find(a, b->p[i].pid)) != NULL ?
		    was->cswitch : 0;
		if (b->p[i].cswitch > before)
			sum += b->p[i].cswitch - before;
	}
	return sum;
}

/*
 * What each kind of process did between two snapshots taken with
 * PS_KIND: a process counts as the kind it is at the second (a pooled
 * relay that got its server-id is a relay), from 0 if it was not in
 * the first.  A process gone meanwhile takes its time with it.
 */
void
proc_kinds(const struct snap *a, const struct snap *b, struct kindsum *k)
{
	const struct proc	*was, *p;
	size_t			 i;

	memset(k, 0, PK_N * sizeof(*k));
	for (i = 0; i < b->n; i++) {
		p = &b->p[i];
		was = snap_find(a, p->pid);
		k[p->kind].procs++;
		if (was == NULL || p->cpu_ns > was->cpu_ns)
			k[p->kind].cpu_ns += p->cpu_ns - (was != NULL ?
			    was->cpu_ns : 0);
		if (was == NULL || p->minflt > was->minflt)
			k[p->kind].minflt += p->minflt - (was != NULL ?
			    was->minflt : 0);
	}
}

/* The PSS of every process of the tree, summed. */
long long
proc_pss_kib(pid_t root)
{
	struct snap	 s = { 0 };
	char		 path[64];
	long long	 v, sum = 0;
	size_t		 i;

	proc_snap(root, &s, 0);
	for (i = 0; i < s.n; i++) {
		(void)snprintf(path, sizeof(path), "/proc/%d/smaps_rollup",
		    (int)s.p[i].pid);
		if ((v = meminfo_kib(path, "Pss:")) > 0)
			sum += v;
	}
	free(s.p);
	return sum;
}
