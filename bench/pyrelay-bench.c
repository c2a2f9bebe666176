/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * pyrelay-bench: load generator for relays that speak docs/protocol.md.
 * This file: options, the connection plan, the phases the workers
 * follow, the relay's CPU and memory from /proc, and the report.
 * The workers are in bench_conn.c.
 */
#define _GNU_SOURCE

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

struct config		 cfg;
_Atomic int		 g_phase = PH_INIT;
_Atomic int		 g_done;
_Atomic int		 g_learned;
_Atomic int		 g_opened;
_Atomic int		 g_served;
uint64_t		 g_storm_t0;
struct thr		*g_thr;
int			 g_nthr;

static volatile sig_atomic_t	 g_interrupted;

struct result {
	struct counters	 c;
	struct hist	 h;
	double		 secs;
	uint64_t	 open_at_end;
	uint64_t	 expected;
	double		 connect_secs;
	double		 served_secs;	/* storm: until all were served */
	uint64_t	 pings_min;
	long long	 mem_drop_kib;
	long long	 memsum_kib;	/* AnonPages+PageTables+KernelStack+Slab */
	long long	 rss_kib;
	long long	 pss_kib;
	double		 relay_cpu;	/* % of one core, -1 if unknown */
	size_t		 relay_procs;
	uint64_t	 relay_cs;	/* context switches of its processes */
	double		 bench_cpu;
	uint64_t	 bench_cs;
	int		 setup_short;
	/* idle: CPU while the connections were opened */
	struct kindsum	 kinds[PK_N];	/* with -R */
	uint64_t	 connect_bench_ns;
	long long	 walk_slab_kib;	/* what connect_cpu's walk cost */
	long long	 walk_drop_kib;
};

static void __attribute__((__noreturn__))
		 usage(void);
static long long num_arg(const char *, const char *, long long, long long);
static double	 secs_arg(const char *, const char *, double);
static void	 set_addr(const char *, int);
static void	 plan(void);
static void	 set_phase(enum phase);
static int	 nap(double);
static void	 wait_count(_Atomic int *, int);
static uint64_t	 rusage_ns(const struct rusage *, const struct rusage *);
static double	 bench_cpu(const struct rusage *, const struct rusage *,
		    double);
static void	 connect_cpu(struct result *, const struct snap *,
		    const struct rusage *);
static void	 report_kinds(const struct result *);
static uint64_t	 errors_total(const struct result *, FILE *, int);
static void	 report(struct result *);
static void	 on_signal(int);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: pyrelay-bench [-bkv] [-B bytes] [-C connects] [-c slots] "
	    "[-d seconds]\n"
	    "\t[-H host] [-i prefix] [-P phones] [-p port] [-R pid] "
	    "[-r rate]\n"
	    "\t[-S servers] [-s seconds] [-T seconds] [-t threads] "
	    "[-W window]\n"
	    "\t[-w seconds] up | fanout | idle | claim | storm\n");
	exit(2);
}

static long long
num_arg(const char *s, const char *what, long long min, long long max)
{
	char		*end;
	long long	 v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "pyrelay-bench: %s \"%s\": not a number from "
		    "%lld to %lld\n", what, s, min, max);
		exit(2);
	}
	return v;
}

static double
secs_arg(const char *s, const char *what, double max)
{
	char	*end;
	double	 v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= 0) || v > max) {
		fprintf(stderr, "pyrelay-bench: %s \"%s\": not a number from "
		    "0 to %g\n", what, s, max);
		exit(2);
	}
	return v;
}

static void
set_addr(const char *host, int port)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)&cfg.addr;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&cfg.addr;

	memset(&cfg.addr, 0, sizeof(cfg.addr));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		cfg.addrlen = sizeof(*sin);
		(void)snprintf(cfg.hostport, sizeof(cfg.hostport), "%s:%d",
		    host, port);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		cfg.addrlen = sizeof(*sin6);
		(void)snprintf(cfg.hostport, sizeof(cfg.hostport), "[%s]:%d",
		    host, port);
	} else {
		fprintf(stderr, "pyrelay-bench: -H %s: not a numeric IPv4 or "
		    "IPv6 address\n", host);
		exit(2);
	}
}

static void
conn_init(struct conn *c, enum role role, struct thr *t, const char *sid)
{
	c->fd = -1;
	c->state = CS_UNUSED;
	c->role = role;
	c->thr = t;
	if (sid != NULL)
		(void)snprintf(c->sid, sizeof(c->sid), "%s", sid);
}

/*
 * Who goes where.  The binary of server i runs on thread i % T and its
 * phone j on thread (i + 1 + j) % T, so that one server's traffic is
 * spread over the threads.  Every thread lists its binaries first,
 * so that they connect before the phones.
 */
static void
plan(void)
{
	struct srv	*srvs;
	struct thr	*t;
	struct conn	*c;
	int		 i, j, k, nstreams_total = 0, cap;
	char		 sid[SID_MAX + 1];

	g_nthr = cfg.threads;
	g_thr = xcalloc((size_t)g_nthr, sizeof(*g_thr));
	for (i = 0; i < g_nthr; i++) {
		t = &g_thr[i];
		t->id = i;
		if (getrandom(&t->rng, sizeof(t->rng), 0) != sizeof(t->rng))
			t->rng = now_ns() * 2654435761ULL + (uint64_t)i;
		t->rng |= 1;
	}
	if (cfg.mode == MODE_STORM)
		cfg.slots = cfg.servers;
	if (cfg.mode == MODE_CLAIM || cfg.mode == MODE_STORM) {
		for (i = 0; i < cfg.slots; i++)
			g_thr[i % g_nthr].nslots++;
		for (i = 0; i < g_nthr; i++) {
			t = &g_thr[i];
			t->slots = xcalloc((size_t)t->nslots,
			    sizeof(*t->slots));
			t->nslots = 0;
		}
		for (i = 0; i < cfg.slots; i++) {
			t = &g_thr[i % g_nthr];
			k = t->nslots++;
			t->slots[k].id = i;
			t->slots[k].state = SL_IDLE;
			conn_init(&t->slots[k].bin, ROLE_BINARY, t, NULL);
			conn_init(&t->slots[k].phone, ROLE_PHONE, t, NULL);
			t->slots[k].bin.slot = &t->slots[k];
			t->slots[k].phone.slot = &t->slots[k];
		}
	} else {
		srvs = xcalloc((size_t)cfg.servers, sizeof(*srvs));
		for (i = 0; i < cfg.servers; i++) {
			g_thr[i % g_nthr].nbinaries++;
			for (j = 0; j < cfg.phones; j++) {
				g_thr[(i + 1 + j) % g_nthr].nconns++;
				k = cfg.mode == MODE_FANOUT ? i :
				    i + 1 + j;
				g_thr[k % g_nthr].nstreams++;
			}
		}
		for (i = 0; i < g_nthr; i++) {
			t = &g_thr[i];
			t->nconns += t->nbinaries;
			t->conns = xcalloc((size_t)t->nconns,
			    sizeof(*t->conns));
			t->streams = xcalloc((size_t)t->nstreams,
			    sizeof(*t->streams));
			nstreams_total += t->nstreams;
			/* fill again: binaries from 0, phones after them */
			t->next_conn = t->nbinaries;
			t->nconns = 0;
			t->nstreams = 0;
		}
		for (i = 0; i < cfg.servers; i++) {
			(void)snprintf(sid, sizeof(sid), "%s-%d", cfg.prefix,
			    i);
			srvs[i].nphones = cfg.phones;
			(void)snprintf(srvs[i].sid, sizeof(srvs[i].sid), "%s",
			    sid);
			t = &g_thr[i % g_nthr];
			srvs[i].bin = xcalloc(1, sizeof(struct conn));
			conn_init(srvs[i].bin, ROLE_BINARY, t, sid);
			srvs[i].bin->srv = &srvs[i];
			t->conns[t->nconns++] = srvs[i].bin;
		}
		for (i = 0; i < cfg.servers; i++) {
			srvs[i].phones = xcalloc((size_t)cfg.phones,
			    sizeof(struct conn));
			srvs[i].streams = xcalloc((size_t)cfg.phones,
			    sizeof(struct stream));
			for (j = 0; j < cfg.phones; j++) {
				t = &g_thr[(i + 1 + j) % g_nthr];
				c = &srvs[i].phones[j];
				conn_init(c, ROLE_PHONE, t, srvs[i].sid);
				c->srv = &srvs[i];
				c->st = &srvs[i].streams[j];
				t->conns[t->next_conn++] = c;
				c->st->dst = c;
				if (cfg.mode == MODE_FANOUT) {
					c->st->src = srvs[i].bin;
					t = srvs[i].bin->thr;
				} else
					c->st->src = c;
				t->streams[t->nstreams++] = c->st;
			}
		}
		for (i = 0; i < g_nthr; i++) {
			t = &g_thr[i];
			t->nconns = t->next_conn;
			t->next_conn = 0;
			if (cfg.rate > 0 && t->nstreams > 0)
				t->tick_ns = 1e9 * nstreams_total /
				    (cfg.rate * t->nstreams);
		}
	}
	for (i = 0; i < g_nthr; i++) {
		t = &g_thr[i];
		cap = t->nconns + 2 * t->nslots + 16;
		t->flush = xcalloc((size_t)cap, sizeof(*t->flush));
		t->flushcap = cap;
		if ((t->rbuf = malloc(RBUF_SIZE)) == NULL) {
			perror("pyrelay-bench: malloc");
			exit(2);
		}
		memset(t->rbuf, 0, RBUF_SIZE);
	}
}

static void
set_phase(enum phase ph)
{
	int	 i;

	atomic_store(&g_phase, ph);
	for (i = 0; i < g_nthr; i++)
		thr_kick(&g_thr[i]);
}

/* Sleeps; returns -1 at once on SIGINT or SIGTERM. */
static int
nap(double secs)
{
	uint64_t	 end = now_ns() + (uint64_t)(secs * 1e9), now;
	struct timespec	 ts;

	while (!g_interrupted && (now = now_ns()) < end) {
		ts.tv_sec = 0;
		ts.tv_nsec = end - now > 10000000 ? 10000000 :
		    (long)(end - now);
		nanosleep(&ts, NULL);
	}
	return g_interrupted ? -1 : 0;
}

/* Waits for *v to reach want, while it moves at least once per -T. */
static void
wait_count(_Atomic int *v, int want)
{
	uint64_t	 last = now_ns();
	int		 seen = atomic_load(v), cur;

	while ((cur = atomic_load(v)) < want && !g_interrupted) {
		if (cur != seen) {
			seen = cur;
			last = now_ns();
		} else if (now_ns() - last > cfg.timeout_ns + 1000000000ULL)
			return;
		nap(0.001);
	}
}

/* The CPU time of this process, user and system, from a to b. */
static uint64_t
rusage_ns(const struct rusage *a, const struct rusage *b)
{
	int64_t	 us;

	us = (int64_t)(b->ru_utime.tv_sec - a->ru_utime.tv_sec) * 1000000 +
	    (b->ru_utime.tv_usec - a->ru_utime.tv_usec) +
	    (int64_t)(b->ru_stime.tv_sec - a->ru_stime.tv_sec) * 1000000 +
	    (b->ru_stime.tv_usec - a->ru_stime.tv_usec);
	return us > 0 ? (uint64_t)us * 1000 : 0;
}

static double
bench_cpu(const struct rusage *a, const struct rusage *b, double secs)
{
	return secs >= 0.01 ? 100.0 * (double)rusage_ns(a, b) / 1e9 / secs :
	    0;
}

/*
 * idle: the CPU of the bench, and with -R of each kind of the relay's
 * processes, from before the binaries to the last phone's 101 (c0 and
 * ru0 were taken before).  Walking /proc/PID makes the kernel allocate
 * inodes and dentries for the thousands of processes the connections
 * made, within the window of the memory figures: the Slab and
 * MemAvailable the walk moved are given back to them.
 */
static void
connect_cpu(struct result *r, const struct snap *c0,
    const struct rusage *ru0)
{
	struct rusage	 ru1;
	struct snap	 c1 = { 0 };
	struct meminfo	 w0, w1;
	uint64_t	 t;

	getrusage(RUSAGE_SELF, &ru1);
	r->connect_bench_ns = rusage_ns(ru0, &ru1);
	if (cfg.relay_pid <= 0)
		return;
	meminfo_read(&w0);
	t = now_ns();
	proc_snap(cfg.relay_pid, &c1, PS_KIND);
	t = now_ns() - t;
	meminfo_read(&w1);
	proc_kinds(c0, &c1, r->kinds);
	if (w0.slab >= 0 && w1.slab >= 0)
		r->walk_slab_kib = w1.slab - w0.slab;
	if (w0.available >= 0 && w1.available >= 0)
		r->walk_drop_kib = w0.available - w1.available;
	if (cfg.verbose)
		fprintf(stderr, "pyrelay-bench: %zu processes read in %.1f ms "
		    "(Slab %+lld KiB, MemAvailable %+lld KiB)\n", c1.n,
		    (double)t / 1e6, r->walk_slab_kib, -r->walk_drop_kib);
	free(c1.p);
}

static const char *
errno_name(int e)
{
	const char	*s = e > 0 ? strerrorname_np(e) : NULL;

	return s != NULL ? s : "other";
}

/* Sums the errors; with f, lists them, one "what: count" each. */
static uint64_t
errors_total(const struct result *r, FILE *f, int keyval)
{
	const struct counters	*c = &r->c;
	uint64_t		 sum = 0, lost = 0;
	int			 i;

#define ERR(cond, v, ...) do {						\
	if ((v) > 0 && (cond)) {					\
		sum += (v);						\
		if (f != NULL) {					\
			fprintf(f, keyval ? " " : "\n    ");		\
			fprintf(f, __VA_ARGS__);			\
			fprintf(f, keyval ? "=%llu" : ": %llu",		\
			    (unsigned long long)(v));			\
		}							\
	}								\
} while (0)
	for (i = 100; i < NSTATUS; i++)
		ERR(1, c->status[i], keyval ? "http_%d" : "HTTP %d", i);
	for (i = 0; i < NCLOSE; i++)
		ERR(1, c->close[i], keyval ? "close_%d" : "close %d from "
		    "the relay", i);
	for (i = 0; i < NERRNO; i++)
		ERR(1, c->errnos[i], keyval ? "connect_%s" : "connect: %s",
		    errno_name(i));
	ERR(1, c->err_timeout, keyval ? "timeout" : "no 101 (or cycle) "
	    "within -T");
	ERR(1, c->err_accept, keyval ? "bad_accept" : "bad "
	    "Sec-WebSocket-Accept");
	ERR(1, c->err_http, keyval ? "bad_http" : "malformed HTTP response");
	ERR(1, c->err_eof, keyval ? "dropped" : "dropped without a close "
	    "frame");
	ERR(1, c->err_proto, keyval ? "protocol" : "WebSocket protocol "
	    "error");
	ERR(1, c->err_msg, keyval ? "bad_message" : "unexpected message");
	ERR(1, c->err_order, keyval ? "out_of_order" : "out of order");
	/* those that failed before their 101 are counted above already */
	if (cfg.mode == MODE_IDLE && c->opened > r->open_at_end)
		lost = c->opened - r->open_at_end;
	if (cfg.mode == MODE_STORM && r->expected > r->open_at_end)
		lost = r->expected - r->open_at_end;
	ERR(1, lost, keyval ? "not_open_at_end" : cfg.mode == MODE_STORM ?
	    "not served at the end" : "not open at the end");
	ERR(1, (uint64_t)r->setup_short, keyval ? "setup_incomplete" :
	    "setup incomplete");
#undef ERR
	return sum;
}

/*
 * idle: the CPU per server-id of each kind of process there was while
 * the connections were opened, of them all, and of the bench; and the
 * minor faults per process of each kind.
 */
static void
report_kinds(const struct result *r)
{
	const struct kindsum	*k;
	uint64_t		 total = 0;
	double			 per = 1000.0 * cfg.servers;
	int			 i, first = 1;

	if (cfg.keyval) {
		for (i = 0; i < PK_N; i++) {
			k = &r->kinds[i];
			total += k->cpu_ns;
			if (k->procs == 0)
				continue;
			printf(" cpu_us_per_sid_%s=%.1f faults_per_proc_%s=%.1f "
			    "procs_%s=%zu", proc_kind_names[i],
			    (double)k->cpu_ns / per, proc_kind_names[i],
			    (double)k->minflt / (double)k->procs,
			    proc_kind_names[i], k->procs);
		}
		if (cfg.relay_pid > 0)
			printf(" cpu_us_per_sid_total=%.1f walk_slab_kib=%lld",
			    (double)total / per, r->walk_slab_kib);
		printf(" cpu_us_per_sid_bench=%.1f",
		    (double)r->connect_bench_ns / per);
		return;
	}
	printf("  cpu per server-id   ");
	for (i = 0; i < PK_N; i++) {
		k = &r->kinds[i];
		total += k->cpu_ns;
		if (k->procs > 0) {
			printf("%s%s %.0f us", first ? "" : ", ",
			    proc_kind_names[i], (double)k->cpu_ns / per);
			first = 0;
		}
	}
	if (cfg.relay_pid > 0)
		printf("%sall %.0f us; ", first ? "" : ", ",
		    (double)total / per);
	printf("bench %.0f us (while connecting)\n",
	    (double)r->connect_bench_ns / per);
	if (cfg.relay_pid <= 0)
		return;
	printf("  faults per process ");
	for (i = 0, first = 1; i < PK_N; i++) {
		k = &r->kinds[i];
		if (k->procs > 0) {
			printf("%s %s %.0f (%zu)", first ? "" : ",",
			    proc_kind_names[i], (double)k->minflt /
			    (double)k->procs, k->procs);
			first = 0;
		}
	}
	printf("\n");
}

static void
report(struct result *r)
{
	const char	*what;
	double		 per_s, mbs, us = 1000.0;
	uint64_t	 nerr;
	char		 rate[32];

	per_s = r->secs > 0 ? (double)r->c.ops / r->secs : 0;
	mbs = r->secs > 0 ? (double)r->c.bytes / r->secs / 1e6 : 0;
	nerr = errors_total(r, NULL, 0);
	if (cfg.rate > 0)
		(void)snprintf(rate, sizeof(rate), "%g", cfg.rate);
	else
		(void)snprintf(rate, sizeof(rate), "0");
	if (cfg.keyval) {
		printf("mode=%s servers=%d phones=%d bytes=%zu window=%d "
		    "threads=%d rate=%s secs=%.3f", cfg.mode_name, cfg.servers,
		    cfg.phones, cfg.bytes, cfg.window, cfg.threads, rate,
		    r->secs);
		if (cfg.mode == MODE_IDLE) {
			printf(" conns=%llu connect_secs=%.3f "
			    "connect_per_s=%.1f open_at_end=%llu "
			    "mem_drop_kib=%lld mem_kib_per_sid=%.1f "
			    "memsum_kib=%lld memsum_kib_per_sid=%.1f "
			    "bench_rss_kib=%lld relay_pss_kib=%lld "
			    "relay_pss_kib_per_sid=%.1f",
			    (unsigned long long)r->c.opened, r->connect_secs,
			    r->connect_secs > 0 ? (double)r->c.opened /
			    r->connect_secs : 0,
			    (unsigned long long)r->open_at_end,
			    r->mem_drop_kib,
			    (double)r->mem_drop_kib / cfg.servers,
			    r->memsum_kib, (double)r->memsum_kib / cfg.servers,
			    r->rss_kib, r->pss_kib,
			    (double)r->pss_kib / cfg.servers);
			printf(" pings=%llu pings_min=%llu lost=%llu",
			    (unsigned long long)r->c.pings,
			    (unsigned long long)(r->open_at_end ?
			    r->pings_min : 0),
			    (unsigned long long)r->c.lost);
			report_kinds(r);
		} else if (cfg.mode == MODE_STORM) {
			printf(" served=%llu served_secs=%.3f attempts=%llu "
			    "relost=%llu p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f "
			    "max_ms=%.1f", (unsigned long long)r->open_at_end,
			    r->served_secs, (unsigned long long)r->c.attempts,
			    (unsigned long long)r->c.relost,
			    hist_pct(&r->h, 50) / 1e6, hist_pct(&r->h, 90) / 1e6,
			    hist_pct(&r->h, 99) / 1e6, r->h.max / 1e6);
		} else {
			printf(" ops=%llu per_s=%.1f mb_s=%.2f p50_us=%.1f "
			    "p90_us=%.1f p99_us=%.1f p999_us=%.1f "
			    "max_us=%.1f mean_us=%.1f late=%llu "
			    "lag_max_us=%.1f notices=%llu",
			    (unsigned long long)r->c.ops, per_s, mbs,
			    hist_pct(&r->h, 50) / us, hist_pct(&r->h, 90) / us,
			    hist_pct(&r->h, 99) / us,
			    hist_pct(&r->h, 99.9) / us, r->h.max / us,
			    r->h.n ? (double)r->h.sum / r->h.n / us : 0,
			    (unsigned long long)r->c.late,
			    r->c.lag_max / us,
			    (unsigned long long)r->c.notices);
			printf(" relay_cs_per_op=%.2f bench_cs_per_op=%.2f",
			    cfg.relay_pid > 0 && r->c.ops > 0 ?
			    (double)r->relay_cs / (double)r->c.ops : -1,
			    r->c.ops > 0 ? (double)r->bench_cs /
			    (double)r->c.ops : -1);
		}
		printf(" relay_cpu_pct=%.1f relay_procs=%zu "
		    "bench_cpu_pct=%.1f errors=%llu", r->relay_cpu,
		    r->relay_procs, r->bench_cpu, (unsigned long long)nerr);
		errors_total(r, stdout, 1);
		printf("\n");
		return;
	}

	printf("pyrelay-bench %s %s: S=%d P=%d B=%zu W=%d, %d thread%s, "
	    "%s\n", cfg.mode_name, cfg.hostport, cfg.servers, cfg.phones,
	    cfg.bytes, cfg.window, cfg.threads, cfg.threads == 1 ? "" : "s",
	    cfg.rate > 0 ? "paced" : "closed loop");
	if (cfg.mode == MODE_IDLE) {
		printf("  connected           %llu in %.2f s (%.0f/s)\n",
		    (unsigned long long)r->c.opened, r->connect_secs,
		    r->connect_secs > 0 ? (double)r->c.opened /
		    r->connect_secs : 0);
		report_kinds(r);
		printf("  open at the end     %llu of %llu after %.1f s\n",
		    (unsigned long long)r->open_at_end,
		    (unsigned long long)r->expected, cfg.duration);
		printf("  MemAvailable drop   %lld KiB, %.1f KiB per "
		    "server-id\n", r->mem_drop_kib,
		    (double)r->mem_drop_kib / cfg.servers);
		printf("  of which bench RSS  %lld KiB\n", r->rss_kib);
		printf("  AnonPages + PageTables + KernelStack + Slab grew "
		    "%lld KiB, %.1f KiB per server-id\n", r->memsum_kib,
		    (double)r->memsum_kib / cfg.servers);
		if (cfg.relay_pid > 0)
			printf("  relay PSS growth    %lld KiB, %.1f KiB per "
			    "server-id (%zu processes)\n", r->pss_kib,
			    (double)r->pss_kib / cfg.servers, r->relay_procs);
		printf("  pings answered      %llu (at least %llu on each "
		    "connection open at the end)\n",
		    (unsigned long long)r->c.pings,
		    (unsigned long long)(r->open_at_end ? r->pings_min : 0));
		printf("  connections lost    %llu\n",
		    (unsigned long long)r->c.lost);
	} else if (cfg.mode == MODE_STORM) {
		printf("  served              %llu of %d in %.2f s (binary "
		    "claimed, a phone message went round)\n",
		    (unsigned long long)r->open_at_end, cfg.servers,
		    r->served_secs);
		printf("  time to served (ms) p50 %.0f  p90 %.0f  p99 %.0f  "
		    "max %.0f\n", hist_pct(&r->h, 50) / 1e6,
		    hist_pct(&r->h, 90) / 1e6, hist_pct(&r->h, 99) / 1e6,
		    r->h.max / 1e6);
		printf("  binary connects     %llu (%llu retries)\n",
		    (unsigned long long)r->c.attempts,
		    (unsigned long long)(r->c.attempts > (uint64_t)cfg.servers ?
		    r->c.attempts - (uint64_t)cfg.servers : 0));
		if (r->c.relost > 0)
			printf("  lost after served   %llu (retried)\n",
			    (unsigned long long)r->c.relost);
		if (r->relay_cpu >= 0)
			printf("  relay cpu           %.1f%% of one core (%zu "
			    "processes)\n", r->relay_cpu, r->relay_procs);
		printf("  bench cpu           %.1f%% of one core\n",
		    r->bench_cpu);
	} else {
		what = cfg.mode == MODE_UP ? "round trips/s" :
		    cfg.mode == MODE_FANOUT ? "deliveries/s " : "cycles/s     ";
		printf("  measured            %.2f s, %llu %s\n", r->secs,
		    (unsigned long long)r->c.ops, cfg.mode == MODE_UP ?
		    "round trips" : cfg.mode == MODE_FANOUT ? "deliveries" :
		    "claim cycles");
		printf("  %s       %.0f", what, per_s);
		if (cfg.rate > 0)
			printf(" (asked for %s, %llu ticks late by more than "
			    "1 ms, worst %.0f us)", rate,
			    (unsigned long long)r->c.late, r->c.lag_max / us);
		printf("\n");
		if (cfg.mode != MODE_CLAIM)
			printf("  MB/s                %.1f (phone payload, "
			    "each way)\n", mbs);
		printf("  %s  p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  "
		    "max %.0f  mean %.0f\n", cfg.mode == MODE_CLAIM ?
		    "cycle time (us)  " : "latency (us)     ",
		    hist_pct(&r->h, 50) / us, hist_pct(&r->h, 90) / us,
		    hist_pct(&r->h, 99) / us, hist_pct(&r->h, 99.9) / us,
		    r->h.max / us,
		    r->h.n ? (double)r->h.sum / r->h.n / us : 0);
		if (r->relay_cpu >= 0)
			printf("  relay cpu           %.1f%% of one core (%zu "
			    "processes)\n", r->relay_cpu, r->relay_procs);
		if (r->relay_cpu >= 0 && r->c.ops > 0)
			printf("  relay switches      %.2f per %s\n",
			    (double)r->relay_cs / (double)r->c.ops,
			    cfg.mode == MODE_UP ? "round trip" :
			    cfg.mode == MODE_FANOUT ? "delivery" : "cycle");
		printf("  bench cpu           %.1f%% of one core\n",
		    r->bench_cpu);
		if (r->c.notices > 0)
			printf("  close notices       %llu\n",
			    (unsigned long long)r->c.notices);
	}
	printf(cfg.mode == MODE_STORM ? "  failures (retried)  " :
	    "  errors              ");
	if (nerr == 0)
		printf("none\n");
	else {
		printf("%llu", (unsigned long long)nerr);
		errors_total(r, stdout, 0);
		printf("\n");
	}
}

static void
on_signal(int sig)
{
	g_interrupted = 1;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "rate",		required_argument,	NULL, 'r' },
		{ "relay-pid",		required_argument,	NULL, 'R' },
		{ "threads",		required_argument,	NULL, 't' },
		{ "binary-frames",	no_argument,		NULL, 'b' },
		{ "keyval",		no_argument,		NULL, 'k' },
		{ NULL,			0,			NULL, 0 }
	};
	struct result		 r;
	struct rlimit		 rl;
	struct rusage		 ru0, ru1;
	struct snap		 s0 = { 0 }, s1 = { 0 }, c0 = { 0 };
	struct epoll_event	 ev;
	struct sigaction	 sa;
	const char		*host = "127.0.0.1";
	struct meminfo		 m0 = { 0 }, m1;
	long long		 rss0 = 0, pss0 = 0, need;
	uint64_t		 t0, t1, rnd;
	int			 ch, i, k, port = 8080, dset = 0;
	struct hist		*h;

	cfg.servers = 1;
	cfg.phones = 1;
	cfg.bytes = 1024;
	cfg.window = 1;
	cfg.threads = 1;
	cfg.slots = 16;
	cfg.connects = 64;
	cfg.duration = 5;
	cfg.warmup = 1;
	cfg.settle = 1;
	cfg.timeout = 10;
	cfg.opcode = 0x1;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = now_ns();
	(void)snprintf(cfg.prefix, sizeof(cfg.prefix), "pb%d-%06llx",
	    (int)getpid(), (unsigned long long)(rnd & 0xffffff));

	while ((ch = getopt_long(argc, argv,
	    "B:bc:C:d:H:i:kp:P:r:R:s:S:t:T:vW:w:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'B':
			cfg.bytes = (size_t)num_arg(optarg, "-B", MIN_BYTES,
			    MAX_BYTES);
			break;
		case 'b':
			cfg.opcode = 0x2;
			break;
		case 'c':
			cfg.slots = (int)num_arg(optarg, "-c", 1, 100000);
			break;
		case 'C':
			cfg.connects = (int)num_arg(optarg, "-C", 1, 100000);
			break;
		case 'd':
			cfg.duration = secs_arg(optarg, "-d", 86400);
			dset = 1;
			break;
		case 'H':
			host = optarg;
			break;
		case 'i':
			if (strlen(optarg) > 32 || strlen(optarg) == 0 ||
			    strspn(optarg, "abcdefghijklmnopqrstuvwxyz"
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
			    strlen(optarg)) {
				fprintf(stderr, "pyrelay-bench: -i: 1 to 32 "
				    "of [A-Za-z0-9._-]\n");
				exit(2);
			}
			(void)snprintf(cfg.prefix, sizeof(cfg.prefix), "%s",
			    optarg);
			break;
		case 'k':
			cfg.keyval = 1;
			break;
		case 'p':
			port = (int)num_arg(optarg, "-p", 1, 65535);
			break;
		case 'P':
			cfg.phones = (int)num_arg(optarg, "-P", 1, MAX_PHONES);
			break;
		case 'r':
			cfg.rate = secs_arg(optarg, "--rate", 1e9);
			break;
		case 'R':
			cfg.relay_pid = (pid_t)num_arg(optarg, "-R", 1,
			    4194304);
			break;
		case 's':
			cfg.settle = secs_arg(optarg, "-s", 3600);
			break;
		case 'S':
			cfg.servers = (int)num_arg(optarg, "-S", 1, 1000000);
			break;
		case 't':
			cfg.threads = (int)num_arg(optarg, "-t", 1,
			    MAX_THREADS);
			break;
		case 'T':
			cfg.timeout = secs_arg(optarg, "-T", 3600);
			break;
		case 'v':
			cfg.verbose = 1;
			break;
		case 'W':
			cfg.window = (int)num_arg(optarg, "-W", 1, 1000000);
			break;
		case 'w':
			cfg.warmup = secs_arg(optarg, "-w", 3600);
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1)
		usage();
	cfg.mode_name = argv[0];
	if (strcmp(argv[0], "up") == 0)
		cfg.mode = MODE_UP;
	else if (strcmp(argv[0], "fanout") == 0)
		cfg.mode = MODE_FANOUT;
	else if (strcmp(argv[0], "idle") == 0)
		cfg.mode = MODE_IDLE;
	else if (strcmp(argv[0], "claim") == 0)
		cfg.mode = MODE_CLAIM;
	else if (strcmp(argv[0], "storm") == 0) {
		cfg.mode = MODE_STORM;
		if (!dset)
			cfg.duration = STORM_DURATION;
	}
	else
		usage();
	if (cfg.rate > 0 && cfg.mode != MODE_UP && cfg.mode != MODE_FANOUT) {
		fprintf(stderr, "pyrelay-bench: --rate is for up and fanout\n");
		exit(2);
	}
	cfg.timeout_ns = (uint64_t)(cfg.timeout * 1e9);
	set_addr(host, port);

	/* every connection is an fd; ask for what the plan needs */
	need = cfg.mode == MODE_CLAIM ? 2LL * cfg.slots :
	    cfg.mode == MODE_STORM ? 2LL * cfg.servers :
	    (long long)cfg.servers * (1 + cfg.phones);
	need += 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)need) {
		if (rl.rlim_max < (rlim_t)need) {
			rl.rlim_max = (rlim_t)need;
			rl.rlim_cur = (rlim_t)need;
			if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
				(void)getrlimit(RLIMIT_NOFILE, &rl);
		}
		rl.rlim_cur = rl.rlim_max < (rlim_t)need ? rl.rlim_max :
		    (rlim_t)need;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < (rlim_t)need)
			fprintf(stderr, "pyrelay-bench: warning: %lld fds "
			    "needed, limit %llu\n", need,
			    (unsigned long long)rl.rlim_cur);
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	(void)sigaction(SIGPIPE, &sa, NULL);

	plan();
	for (i = 0; i < g_nthr; i++) {
		if ((g_thr[i].epfd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
		    (g_thr[i].evfd = eventfd(0, EFD_NONBLOCK |
		    EFD_CLOEXEC)) == -1) {
			perror("pyrelay-bench: epoll/eventfd");
			exit(2);
		}
		ev.events = EPOLLIN;
		ev.data.ptr = NULL;
		if (epoll_ctl(g_thr[i].epfd, EPOLL_CTL_ADD, g_thr[i].evfd,
		    &ev) == -1) {
			perror("pyrelay-bench: epoll_ctl");
			exit(2);
		}
	}
	for (i = 0; i < g_nthr; i++)
		if ((errno = pthread_create(&g_thr[i].tid, NULL, thr_main,
		    &g_thr[i])) != 0) {
			perror("pyrelay-bench: pthread_create");
			exit(2);
		}

	memset(&r, 0, sizeof(r));
	r.relay_cpu = -1;
	r.expected = cfg.mode == MODE_CLAIM ? 0 :
	    cfg.mode == MODE_STORM ? (uint64_t)cfg.servers :
	    (uint64_t)cfg.servers * (uint64_t)(1 + cfg.phones);
	if (cfg.mode != MODE_CLAIM && cfg.mode != MODE_STORM) {
		if (cfg.mode == MODE_IDLE) {
			nap(0.2);
			/* the machine's figures before /proc/PID is walked */
			meminfo_read(&m0);
			rss0 = meminfo_kib("/proc/self/status", "VmRSS:");
			if (cfg.relay_pid > 0) {
				pss0 = proc_pss_kib(cfg.relay_pid);
				proc_snap(cfg.relay_pid, &c0, PS_KIND);
			}
			getrusage(RUSAGE_SELF, &ru0);
		}
		t0 = now_ns();
		set_phase(PH_BINARIES);
		wait_count(&g_done, cfg.servers);
		set_phase(PH_PHONES);
		wait_count(&g_done, (int)r.expected);
		r.connect_secs = (double)(now_ns() - t0) / 1e9;
		if (cfg.mode == MODE_IDLE) {
			connect_cpu(&r, &c0, &ru0);
			free(c0.p);
		}
		if (atomic_load(&g_done) < (int)r.expected)
			r.setup_short = (int)r.expected -
			    atomic_load(&g_done);
		if (atomic_load(&g_opened) == 0) {
			/* nothing to measure: stop now, report the errors */
			fprintf(stderr, "pyrelay-bench: no connection was "
			    "upgraded\n");
			g_interrupted = 1;
		}
		if (cfg.mode == MODE_FANOUT && !g_interrupted) {
			set_phase(PH_HELLO);
			wait_count(&g_learned, cfg.servers * cfg.phones);
		}
	}
	if (cfg.mode == MODE_IDLE) {
		nap(cfg.settle);
		meminfo_read(&m1);
		r.mem_drop_kib = m0.available - m1.available -
		    r.walk_drop_kib;
		r.memsum_kib = m0.sum >= 0 && m1.sum >= 0 ? m1.sum - m0.sum -
		    r.walk_slab_kib : 0;
		r.rss_kib = meminfo_kib("/proc/self/status", "VmRSS:") - rss0;
		if (cfg.relay_pid > 0) {
			r.pss_kib = proc_pss_kib(cfg.relay_pid) - pss0;
			proc_snap(cfg.relay_pid, &s0, 0);
			r.relay_procs = s0.n;
		}
		set_phase(PH_HOLD);
		nap(cfg.duration);
	} else if (cfg.mode == MODE_STORM) {
		/* every server-id at once, as after a relay restart */
		if (cfg.relay_pid > 0)
			proc_snap(cfg.relay_pid, &s0, PS_CSWITCH);
		getrusage(RUSAGE_SELF, &ru0);
		t0 = g_storm_t0 = now_ns();
		set_phase(PH_MEASURE);
		while (atomic_load(&g_served) < cfg.servers && !g_interrupted &&
		    now_ns() - t0 < (uint64_t)(cfg.duration * 1e9))
			nap(0.001);
		t1 = now_ns();
		r.served_secs = (double)(t1 - t0) / 1e9;
		getrusage(RUSAGE_SELF, &ru1);
		if (cfg.relay_pid > 0) {
			proc_snap(cfg.relay_pid, &s1, PS_CSWITCH);
			r.relay_cpu = proc_cpu(&s0, &s1);
			r.relay_cs = proc_cswitch(&s0, &s1);
			r.relay_procs = s1.n;
		}
		r.secs = r.served_secs;
		r.bench_cpu = bench_cpu(&ru0, &ru1, r.secs);
		r.bench_cs = (uint64_t)((ru1.ru_nvcsw - ru0.ru_nvcsw) +
		    (ru1.ru_nivcsw - ru0.ru_nivcsw));
	} else {
		set_phase(PH_WARMUP);
		nap(cfg.warmup);
		if (cfg.relay_pid > 0)
			proc_snap(cfg.relay_pid, &s0, PS_CSWITCH);
		getrusage(RUSAGE_SELF, &ru0);
		t0 = now_ns();
		set_phase(PH_MEASURE);
		nap(cfg.duration);
		t1 = now_ns();
		set_phase(PH_WARMUP);	/* stop counting, keep answering */
		getrusage(RUSAGE_SELF, &ru1);
		if (cfg.relay_pid > 0) {
			proc_snap(cfg.relay_pid, &s1, PS_CSWITCH);
			r.relay_cpu = proc_cpu(&s0, &s1);
			r.relay_cs = proc_cswitch(&s0, &s1);
			r.relay_procs = s1.n;
		}
		r.secs = (double)(t1 - t0) / 1e9;
		r.bench_cpu = bench_cpu(&ru0, &ru1, r.secs);
		r.bench_cs = (uint64_t)((ru1.ru_nvcsw - ru0.ru_nvcsw) +
		    (ru1.ru_nivcsw - ru0.ru_nivcsw));
	}
	set_phase(PH_STOP);
	for (i = 0; i < g_nthr; i++)
		pthread_join(g_thr[i].tid, NULL);

	h = &r.h;
	for (i = 0; i < g_nthr; i++) {
		const struct counters	*c = &g_thr[i].c;

		r.c.ops += c->ops;
		r.c.bytes += c->bytes;
		r.c.notices += c->notices;
		r.c.late += c->late;
		if (c->lag_max > r.c.lag_max)
			r.c.lag_max = c->lag_max;
		r.c.opened += c->opened;
		r.c.pings += c->pings;
		r.c.lost += c->lost;
		r.c.attempts += c->attempts;
		r.c.relost += c->relost;
		if (i == 0 || g_thr[i].pings_min < r.pings_min)
			r.pings_min = g_thr[i].pings_min;
		r.c.err_timeout += c->err_timeout;
		r.c.err_accept += c->err_accept;
		r.c.err_http += c->err_http;
		r.c.err_eof += c->err_eof;
		r.c.err_proto += c->err_proto;
		r.c.err_msg += c->err_msg;
		r.c.err_order += c->err_order;
		for (k = 0; k < NSTATUS; k++)
			r.c.status[k] += c->status[k];
		for (k = 0; k < NCLOSE; k++)
			r.c.close[k] += c->close[k];
		for (k = 0; k < NERRNO; k++)
			r.c.errnos[k] += c->errnos[k];
		hist_merge(h, &g_thr[i].h);
		r.open_at_end += g_thr[i].open_at_end;
	}
	if (cfg.mode == MODE_IDLE)
		r.secs = cfg.duration;
	report(&r);
	if (cfg.mode == MODE_STORM)
		return g_interrupted ? 130 : r.open_at_end ==
		    (uint64_t)cfg.servers ? 0 : 1;
	if (g_interrupted && atomic_load(&g_opened) > 0)
		return 130;
	return errors_total(&r, NULL, 0) > 0 ? 1 : 0;
}
