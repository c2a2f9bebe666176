/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * pyrelay-bench: a WebSocket load generator for relays that speak
 * docs/protocol.md.  One epoll loop per thread; every connection belongs to
 * one thread for its whole life.  See pyrelay-bench(1).
 */
#ifndef BENCH_H
#define BENCH_H

#include <sys/types.h>
#include <sys/socket.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_VERSION		"1.0"

#define MAX_THREADS		64
#define MAX_PHONES		1024
#define MIN_BYTES		64	/* room for {"s":..,"t":..,"p":""} */
#define MAX_BYTES		(16 * 1024 * 1024)
#define MAX_HEAD		8192	/* HTTP response head */
#define MAX_FRAME		(64 * 1024 * 1024)
#define RBUF_SIZE		(256 * 1024)
#define CID_MAX			160	/* a conn id as JSON text, quoted */
#define SID_MAX			64
#define NSTATUS			600
#define NCLOSE			5000
#define NERRNO			160
#define SWEEP_NS		(100 * 1000 * 1000ULL)
#define BACKOFF_NS		(10 * 1000 * 1000ULL)
#define STORM_BACKOFF_MIN_NS	(100 * 1000 * 1000ULL)	/* first storm retry */
#define STORM_BACKOFF_MAX_NS	(5 * 1000 * 1000 * 1000ULL)
#define STORM_DURATION		600	/* storm: default -d, the deadline */

/* Histogram: 128 linear steps per power of two, so about 1% error. */
#define HIST_SUB_BITS		7
#define HIST_SUB		(1 << HIST_SUB_BITS)
#define HIST_BUCKETS		((64 - HIST_SUB_BITS + 1) * HIST_SUB)

enum mode {
	MODE_UP,
	MODE_FANOUT,
	MODE_IDLE,
	MODE_CLAIM,
	MODE_STORM
};

enum role {
	ROLE_BINARY,
	ROLE_PHONE
};

enum cstate {
	CS_UNUSED,		/* not connected yet, or reset for reuse */
	CS_CONNECTING,		/* TCP connect in progress */
	CS_HANDSHAKE,		/* request sent, waiting for the 101 */
	CS_OPEN,
	CS_DEAD			/* closed (claim slots reuse it) */
};

/* Phases are set by the main thread and followed by every worker. */
enum phase {
	PH_INIT,
	PH_BINARIES,		/* connect the binaries */
	PH_PHONES,		/* then the phones */
	PH_HELLO,		/* fanout: binaries learn conn ids */
	PH_WARMUP,		/* traffic, not counted */
	PH_MEASURE,		/* traffic, counted */
	PH_HOLD,		/* idle: hold the connections */
	PH_STOP
};

struct hist {
	uint64_t	 n;
	uint64_t	 sum;
	uint64_t	 min;
	uint64_t	 max;
	uint64_t	 b[HIST_BUCKETS];
};

struct thr;
struct srv;
struct slot;

/*
 * One direction of measured traffic.  up: a phone sends and gets its
 * echo back (src == dst).  fanout: the binary sends to one phone.
 * recv is written by the receiving thread only.
 */
struct stream {
	struct conn		*src;
	struct conn		*dst;
	uint64_t		 sent;
	_Atomic uint64_t	 recv;
	uint64_t		 owed;		/* unspent --rate credits */
	size_t			 cidlen;
	char			 cid[CID_MAX];	/* fanout: learned conn id */
};

struct conn {
	int			 fd;
	enum cstate		 state;
	enum role		 role;
	int			 counted;	/* setup outcome reported */
	int			 dirty;		/* on the flush list */
	int			 pollout;	/* EPOLLOUT armed */
	int			 closing;	/* we sent a close frame */
	uint32_t		 pings;		/* answered on this connection */
	struct thr		*thr;
	struct srv		*srv;
	struct slot		*slot;
	struct stream		*st;		/* phone: its stream */
	uint64_t		 t_start;
	uint8_t			*in;		/* head, partial frame */
	size_t			 inlen;
	size_t			 incap;
	uint8_t			*out;
	size_t			 outoff;
	size_t			 outlen;
	size_t			 outcap;
	char			 key[25];	/* Sec-WebSocket-Key */
	char			 sid[SID_MAX + 1];
};

struct srv {
	struct conn		*bin;
	struct conn		*phones;
	struct stream		*streams;
	int			 nphones;
	int			 nlearned;
	char			 sid[SID_MAX + 1];
};

enum slot_state {
	SL_IDLE,
	SL_BINARY,		/* binary connecting */
	SL_PHONE,		/* phone connecting */
	SL_MESSAGE,		/* phone sent its message */
	SL_BACKOFF,		/* failed; wait a little, then start over */
	SL_SERVED		/* storm: claimed, and a message went round */
};

/*
 * One claim cycle at a time: new server-id, binary, phone, message.
 * storm: one server-id for good, tried until served, then held.
 */
struct slot {
	struct conn		 bin;
	struct conn		 phone;
	enum slot_state		 state;
	uint64_t		 t_start;
	uint64_t		 t_retry;
	uint64_t		 backoff;	/* storm: the last wait */
	uint64_t		 n;
	int			 id;
};

struct counters {
	uint64_t	 ops;		/* round trips, deliveries, cycles */
	uint64_t	 bytes;		/* payload bytes received by phones */
	uint64_t	 notices;	/* close notices seen by binaries */
	uint64_t	 late;		/* --rate ticks over 1 ms late */
	uint64_t	 lag_max;
	uint64_t	 opened;	/* connections that got their 101 */
	uint64_t	 pings;		/* pings from the relay, answered */
	uint64_t	 lost;		/* open, then ended by the other side */
	uint64_t	 attempts;	/* storm: binary connects started */
	uint64_t	 relost;	/* storm: served, then lost again */
	uint64_t	 err_timeout;
	uint64_t	 err_accept;
	uint64_t	 err_http;
	uint64_t	 err_eof;
	uint64_t	 err_proto;
	uint64_t	 err_msg;
	uint64_t	 err_order;
	uint64_t	 status[NSTATUS];
	uint64_t	 close[NCLOSE];
	uint64_t	 errnos[NERRNO];
};

struct thr {
	int			 id;
	pthread_t		 tid;
	int			 epfd;
	int			 evfd;
	enum phase		 phase;
	uint64_t		 rng;
	uint64_t		 now;
	uint64_t		 next_sweep;

	struct conn		**conns;	/* binaries, then phones */
	int			 nconns;
	int			 nbinaries;
	int			 next_conn;	/* next one to connect */
	int			 inflight;	/* connects not yet answered */

	struct stream		**streams;	/* those it sends on */
	int			 nstreams;
	uint64_t		 tick0;
	uint64_t		 tick_k;
	uint64_t		 tick_next;
	double			 tick_ns;

	struct slot		*slots;
	int			 nslots;

	struct conn		**flush;
	int			 nflush;
	int			 flushcap;

	_Atomic int		 sleeping;	/* fanout: in epoll_wait */
	uint64_t		 wake;		/* bit i: wake thread i */

	uint64_t		 open_at_end;
	uint64_t		 pings_min;	/* fewest pings of those open */
	uint8_t			*rbuf;
	struct counters		 c;
	struct hist		 h;
};

struct config {
	enum mode		 mode;
	const char		*mode_name;
	struct sockaddr_storage	 addr;
	socklen_t		 addrlen;
	char			 hostport[128];
	int			 servers;
	int			 phones;
	size_t			 bytes;
	int			 window;
	int			 threads;
	int			 slots;
	int			 connects;	/* in flight per thread */
	double			 duration;
	double			 warmup;
	double			 settle;
	double			 rate;
	double			 timeout;
	uint64_t		 timeout_ns;
	int			 opcode;
	int			 keyval;
	int			 verbose;
	pid_t			 relay_pid;
	char			 prefix[33];
};

/*
 * The kinds of process of a relay's tree: pyrelayd's by their titles
 * ("pyrelayd: relay ..."), any other relay's by their place (the root,
 * or a child).  PK_OTHER: a pyrelayd title not known here.
 */
enum pkind {
	PK_MAIN,
	PK_CHILD,
	PK_PARENT,
	PK_FRONT,
	PK_ZYGOTE,
	PK_RELAY,
	PK_POOLED,
	PK_SPAWNER,
	PK_PUSH,
	PK_OTHER,
	PK_N
};

/* What proc_snap reads besides /proc/PID/stat, for the tree only. */
#define PS_CSWITCH	0x1	/* context switches (status) */
#define PS_KIND		0x2	/* ns on CPU (schedstat), kind (cmdline) */

/* A process of the relay's tree (bench_proc.c). */
struct proc {
	pid_t		 pid;
	pid_t		 ppid;
	uint64_t	 ticks;		/* utime, stime, cutime, cstime */
	uint64_t	 minflt;	/* its own minor faults */
	uint64_t	 cswitch;	/* context switches, if asked for */
	uint64_t	 cpu_ns;	/* on CPU, if asked for */
	enum pkind	 kind;		/* if asked for */
};

/* What the processes of one kind did between two snapshots. */
struct kindsum {
	uint64_t	 cpu_ns;
	uint64_t	 minflt;
	size_t		 procs;		/* of the kind at the second */
};

/* The relay's processes at one moment, sorted by pid. */
struct snap {
	struct proc	*p;
	size_t		 n;
	uint64_t	 t;		/* when it was taken */
};

struct meminfo {
	long long	 available;	/* MemAvailable */
	long long	 sum;		/* AnonPages+PageTables+KernelStack+Slab */
	long long	 slab;		/* Slab */
};

extern struct config		 cfg;
extern _Atomic int		 g_phase;
extern _Atomic int		 g_done;	/* setup outcomes */
extern _Atomic int		 g_learned;	/* fanout conn ids learned */
extern _Atomic int		 g_opened;	/* setup connections upgraded */
extern _Atomic int		 g_served;	/* storm: server-ids served now */
extern uint64_t			 g_storm_t0;	/* storm: when it started */
extern struct thr		*g_thr;
extern int			 g_nthr;

/* bench_conn.c */
void		*thr_main(void *);
void		 thr_kick(struct thr *);

/* bench_proc.c */
long long	 meminfo_kib(const char *, const char *);
void		 meminfo_read(struct meminfo *);
extern const char *const proc_kind_names[PK_N];
void		 proc_snap(pid_t, struct snap *, int);
double		 proc_cpu(const struct snap *, const struct snap *);
uint64_t	 proc_cswitch(const struct snap *, const struct snap *);
void		 proc_kinds(const struct snap *, const struct snap *,
		    struct kindsum *);
long long	 proc_pss_kib(pid_t);

/* bench_util.c */
void		*xcalloc(size_t, size_t);
uint64_t	 now_ns(void);
uint64_t	 rng_next(uint64_t *);
void		 hist_add(struct hist *, uint64_t);
void		 hist_merge(struct hist *, const struct hist *);
uint64_t	 hist_pct(const struct hist *, double);
size_t		 fmt_u64(char *, uint64_t);
int		 json_find(const uint8_t *, size_t, const char *, size_t *,
		    size_t *);
int		 json_u64(const uint8_t *, size_t, size_t, uint64_t *);
void		 ws_accept(const char *, char *);
void		 b64_key(uint64_t *, char *);
void		 ws_mask(uint8_t *, size_t, const uint8_t *);

#endif /* BENCH_H */
