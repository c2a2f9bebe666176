/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef PARENT_H
#define PARENT_H

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/resource.h>
/* libbsd leaves __unused undefined on glibc; the tree macros need it */
#ifndef __unused
#define __unused __attribute__((__unused__))
#endif
#include <sys/tree.h>

#include <event2/event.h>

#include "addr_bucket.h"
#include "msg.h"
#include "proto.h"
#include "pyrelayd.h"

struct parent_opts {
	const char	*conffile;
	char		*const *macros;
	int		 nmacros;
	int		 foreground;
	int		 verbose;
	int		 conffile_given;	/* -f used */
};

/*
 * The parent's state, shared by parent.c (processes, accepting, routing),
 * parent_spawn.c (starting workers, the relay pool), parent_metrics.c
 * (/metrics and /healthz) and parent_ctl.c (the control socket).
 */
struct conn_rec;
struct worker;
struct ctl_client;
TAILQ_HEAD(ctl_client_list, ctl_client);

/*
 * One client address bucket (an IPv4 address, an IPv6 /64): live
 * connection count and rate-limit bucket.
 */
struct ip_rec {
	RB_ENTRY(ip_rec)	 entry;
	struct addr_bucket	 key;
	uint32_t		 live;
	double			 tokens;
	int64_t			 refill_ms;	/* last refill */
};
RB_HEAD(ip_tree, ip_rec);

/* One connection, from accept until some process reports it gone. */
struct conn_rec {
	RB_ENTRY(conn_rec)	 entry;
	TAILQ_ENTRY(conn_rec)	 owned;		/* owner's list */
	uint64_t		 id;
	struct ip_rec		*ip;
	struct worker		*owner;		/* NULL: in the parent */
	int			 listen_flags;	/* of the listener that accepted it */
};
RB_HEAD(conn_tree, conn_rec);
TAILQ_HEAD(conn_rec_list, conn_rec);

TAILQ_HEAD(worker_list, worker);
struct worker {
	TAILQ_ENTRY(worker)	 entry;		/* all workers */
	RB_ENTRY(worker)	 map;		/* relays in the map */
	RB_ENTRY(worker)	 bypid;		/* all workers, for reaping */
	enum proc_role		 role;
	pid_t			 pid;		/* 0 until its starter says it */
	int			 dead;		/* killed or channel gone; awaiting reap */
	int			 starting;	/* its start is not answered yet */
	struct worker		*starter;	/* then: the zygote, or NULL: the spawner */
	uint64_t		 start_seq;	/* the request's id */
	TAILQ_ENTRY(worker)	 start_entry;	/* in the starter's queue */
	int			 kill_sig;	/* to send once the pid is known */
	int			 in_map;	/* relays: reachable by server-id */
	int			 killed;	/* by us, for a bad message */
	char			 killed_why[128]; /* logged once the pid is known */
	int			 retired;	/* relays: RETIRE seen; push: PUSH_RETIRE sent */
	int			 pooled;	/* relays: in the pool, no server-id yet */
	int			 pool_stopped;	/* relays: stopped while pooled */
	TAILQ_ENTRY(worker)	 pool_entry;	/* the pool, while pooled */
	int			 hello;		/* its HELLO came (a relay: forked) */
	uint32_t		 unheard;	/* fronts: CONN_NEWs since it last spoke */
	int			 start_failed;	/* pooled relay: exited non-zero */
	int			 ready;		/* and its pid: announced */
	struct msg_chan		 chan;
	struct event		*ev_read;
	struct event		*ev_write;
	struct conn_rec_list	 conns;
	char			 sid[SERVER_ID_MAX + 1];
	uint32_t		 binaries;	/* relay's last report */
	uint32_t		 phones;
	uint32_t		 probing;	/* relay's last report */
	int			 front_slot;	/* fronts: index */
	int64_t			 started_ms;
	int64_t			 cnt_ms;	/* relays: last RELAY_COUNTERS */
	TAILQ_ENTRY(worker)	 cnt_entry;	/* relays: by cnt_ms, newest last */
	int			 cnt_listed;	/* in parent.cnt_recent */
	int			 cnt_asked;	/* relays: a scrape waits for it */
	TAILQ_ENTRY(worker)	 ask_entry;	/* in parent.cnt_asked, while so */
	int			 watched;	/* relays: channel in relay_ep */
	int			 finishing;	/* fronts: replaced, told MSG_FINISH */
	int			 replaced;	/* fronts: of the image before an
						 * upgrade, serving until the new
						 * ones are up (docs/upgrade.md) */
	/* zygotes (parent_zygote.c) */
	struct worker_list	 forks;		/* relays asked for, unanswered */
	uint64_t		 fork_seq;
	uint32_t		 nforked;	/* relays asked of it */
	int			 retiring;	/* renewed: asked nothing more */
};

/* A /metrics request waiting for the relays' latest counters. */
struct metrics_req {
	TAILQ_ENTRY(metrics_req) entry;
	struct worker		*front;
	uint64_t		 id;
};
TAILQ_HEAD(metrics_req_list, metrics_req);
RB_HEAD(relay_map, worker);
RB_HEAD(worker_pids, worker);
#define REAPED_EARLY_MAX	256

/* Refusals of one kind: counted for /metrics, logged once a second at most. */
enum refusal_kind {
	REFUSED_RELAY_CAP = 0,		/* a claim found `max relays` relays */
	REFUSED_ADDRESS_CAP,		/* closed at accept: per-address cap */
	REFUSED_RATE_LIMIT,		/* an upgrade's 429 */
	REFUSED_CONN_CAP,		/* an upgrade's 503 at the connection caps */
	REFUSED_DRAIN,			/* a new server-id, while draining */
	REFUSED_MAX
};
struct refusals {
	struct parent		*p;
	enum refusal_kind	 kind;
	uint64_t		 total;
	uint64_t		 unlogged;	/* since the last line */
	int64_t			 logged_ms;	/* when that line was */
	struct event		*ev;		/* the line for the rest of a second */
	/* what the line says of the last one refused, by kind */
	struct addr_bucket	 last;		/* its address (not relay cap) */
	int			 endpoint;	/* rate limit: EP_SERVER, EP_CLIENT */
	uint32_t		 live, ip_live;	/* connection caps: the counts */
	char			 server_id[SERVER_ID_MAX + 1];	/* drain */
};

struct listener {
	TAILQ_ENTRY(listener)	 entry;
	struct listen_addr	*la;
	struct event		*ev;
};
TAILQ_HEAD(listener_list, listener);

struct parent {
	/* the seccomp programs, by role: filters[ROLE_FRONT], [ROLE_RELAY], ... */
	struct sandbox_prog	*filters[ROLE_MAX];
	/* push wakes (parent_push.c, docs/push.md); NULL until set up */
	struct parent_push	*push;
	/* the spawner (docs/pool.md): workers are started through it */
	pid_t			 spawner_pid;	/* 0: none, start workers here */
	int64_t			 spawner_retry;	/* no new spawner before (ms) */
	struct event		*ev_spawner;	/* its restart */
	struct msg_chan		 spawner;
	struct event		*ev_spawner_read, *ev_spawner_write;
	uint64_t		 spawn_seq;
	struct worker_list	 spawns;	/* its unanswered starts, oldest first */
	/* the relay zygote (parent_zygote.c) */
	struct worker		*zygote;	/* relays are asked of it */
	int			 zygote_hold;	/* FORKs wait for one flush (pool_fill) */
	int64_t			 pool_fill_at;	/* when ev_pool_fill fires (ms) */
	int64_t			 pool_retry_at;	/* no refill before: a start failed */
	struct worker		*zygote_next;	/* its renewal, starting */
	int64_t			 zygote_retry;	/* no new zygote before (ms) */
	struct event		*ev_zygote;	/* restart, renewal by age */
	uint64_t		 zygote_renewals;
	/* children reaped before an answer named them (parent_reap.c) */
	int			 nstarting;	/* workers whose start is unanswered */
	struct {
		pid_t	pid;
		int	status;
	}			 reaped_early[REAPED_EARLY_MAX];
	int			 nreaped_early;
	struct event_base	*base;
	struct config		*conf;
	struct parent_opts	 opts;
	char			 self[PATH_MAX];
	char			 relay_exe[PATH_MAX];
	int			 root;
	uid_t			 uid;
	gid_t			 gid;
	struct listener_list	 listeners;
	struct event		*ev_accept_pause;
	int			 reserve_fd;
	rlim_t			 nofile, nofile_max, nofile_was;	/* RLIMIT_NOFILE */
	struct worker_list	 workers;
	struct relay_map	 relays;
	/* relays started ahead of claims (docs/pool.md) */
	struct worker_list	 pool;
	int			 npool;		/* in the pool, started or starting */
	int			 npool_ready;	/* of those, sandboxed and waiting */
	struct event		*ev_pool_fill;
	uint64_t		 assignments;	/* pooled relays given a server-id */
	uint64_t		 conns_lost;	/* fds lost in a hand-over */
	struct worker_pids	 pids;		/* all workers by pid */
	uint32_t		 nrelays;	/* relay processes of every kind,
						 * until reaped (max relays) */
	struct refusals		 refused[REFUSED_MAX];
	struct worker		**fronts;
	int			 nfronts;
	/* after an upgrade, until its own fronts are up: the replaced ones */
	struct worker		**stand_ins;
	int			 nstand_ins, next_stand_in;
	int			 next_front;
	struct worker		*last_front;	/* the last given a connection */
	int			 ready;
	struct conn_tree	 conns;
	struct ip_tree		 ips;
	uint64_t		 next_conn_id;
	uint64_t		 nips;		/* entries in ips */
	int			 tls;		/* a TLS listener is configured */
	uint64_t		 tls_handoffs[3];	/* by enum tls_mode */
	struct event		*ev_ip_sweep;
	uint32_t		 live;
	uint64_t		 binaries, phones;	/* sums of relay reports */
	int64_t			 started_ms;
	int			 stopping;
	int			 draining;	/* pyrelayctl drain (docs/scaling.md) */
	struct event		*ev_drain;
	struct event		*ev_sigchld, *ev_sigterm, *ev_sigint, *ev_sighup;
	struct event		*ev_sigusr2;	/* upgrade (docs/upgrade.md) */
	struct event		*ev_respawn;
	int64_t			 respawn_ms;	/* current backoff */
	/* /metrics: relays' counters summed, plus what the parent sees */
	struct relay_counters	 cnt;
	struct metrics_req_list	 metrics_reqs;	/* waiting for cnt_asking */
	int			 cnt_asking;	/* relays asked, not answered */
	struct worker_list	 cnt_recent;	/* relays that sent counters,
						 * oldest first (cnt_entry) */
	struct worker_list	 cnt_asked;	/* the relays asked (ask_entry) */
	int			 relay_ep;	/* epoll set of relay channels */
	struct event		*ev_cnt_wait;	/* answer without the rest */
	uint64_t		 accepted;
	uint64_t		 relays_started;
	uint64_t		 relay_exits[EXIT_CAUSE_MAX];
	uint64_t		 front_outcomes[FRONT_OUTCOME_MAX];
	/* control socket */
	int			 ctl_fd;
	struct event		*ev_ctl;
	struct ctl_client_list	 ctl_clients;
	uint64_t		 ctl_next_req;
};

struct ustate;
struct us_address;
struct us_ctl_client;
struct us_refusal;
struct us_push;
struct us_push_values;

int	conn_cmp(struct conn_rec *, struct conn_rec *);
RB_PROTOTYPE(conn_tree, conn_rec, entry, conn_cmp)
int	relay_cmp(struct worker *, struct worker *);
RB_PROTOTYPE(relay_map, worker, map, relay_cmp)
int	pid_cmp(struct worker *, struct worker *);
RB_PROTOTYPE(worker_pids, worker, bypid, pid_cmp)

/* parent_limits.c */
/* Which limit a failed socketpair(), accept() or fork() ran into (errno). */
const char	*limit_name(int);
/* RLIMIT_NOFILE's soft limit up to the hard one (pyrelayd(8), CAPACITY). */
void	parent_raise_nofile(struct parent *);
/* The listen backlog: net.core.somaxconn. */
int	listen_backlog(void);

/* parent.c */
/* What the parent takes from a front, from a relay (docs/messages.md). */
extern const struct msg_rules	parent_from_front, parent_from_relay;
/* The parent's state, for message handlers (their arg is the worker). */
struct parent	*parent_instance(void);
void	conn_release(struct parent *, struct conn_rec *);
void	parent_relay_counts(struct parent *, struct worker *, uint32_t,
	    uint32_t);
void	parent_relay_unwatch(struct parent *, struct worker *);
/* Reads what w has sent (its last words, when it is reaped). */
void	parent_worker_drain(struct parent *, struct worker *);
void	parent_worker_read(evutil_socket_t, short, void *);
void	parent_worker_write(evutil_socket_t, short, void *);
void	parent_worker_flush(struct worker *);
/* c's holder is w now (NULL: the parent itself). */
void	conn_set_owner(struct conn_rec *c, struct worker *w);
/* A worker broke the rules: SIGKILL, logged with why; reaping does the rest. */
void	parent_worker_kill(struct parent *, struct worker *, const char *why);
void	parent_worker_log_kill(const struct worker *);
/* Checks the certificate and key (w == NULL), or sends them to front w. */
int	parent_send_tls(struct parent *, struct worker *, char *, size_t);
/*
 * Reads the relays that hold unread messages (what /healthz and the other
 * answers read first): O(those relays), not O(relays).
 */
void	parent_drain_relays(struct parent *);
#define RELAY_DRAIN_BATCH	64
#define RELAY_DRAIN_ROUNDS	8
void	parent_relay_watch(struct parent *, struct worker *);
/* The relay in the map for a server-id, or NULL. */
struct worker	*parent_find_relay(struct parent *, const char *sid);
/* Re-reads the configuration; errors go to the log and to ctl (may be NULL). */
int	parent_reload_config(struct parent *, struct ctl_client *);
void	parent_set_verbose(struct parent *, int);

/* parent_spawn.c */
/* What the parent takes from the spawner (docs/messages.md). */
extern const struct msg_rules	parent_from_spawner;
void	parent_start_spawner(struct parent *);
void	parent_restart_spawner(evutil_socket_t, short, void *);
void	parent_spawner_close(struct parent *);
void	parent_spawner_exited(struct parent *);
/*
 * Starts a front, the relay zygote, or a relay forked by it (with no
 * server-id: parent_relay_assign or the pool gives it one).  The worker
 * is returned at once, its pid comes later; NULL if it cannot start.
 */
struct worker	*parent_spawn(struct parent *, enum proc_role, const char *sid);
/* A worker's HELLO: its start is over once its pid is known too. */
void	parent_worker_ready(struct parent *, struct worker *);
/*
 * A worker record for a child on its channel fd (-1: one only waiting to
 * be reaped), in the lists, its channel read: one just started (fresh:
 * our end of a new non-blocking, close-on-exec socketpair, taken with no
 * fcntl), or one adopted from the image before (parent_adopt.c).
 */
struct worker	*parent_worker_new(struct parent *, enum proc_role, pid_t,
	    int fd, const char *sid, int fresh);
/* What the parent takes from a worker of this role and message version. */
const struct msg_rules	*parent_worker_rules(enum proc_role, uint32_t version);
/*
 * Every front slot holds a front that said HELLO: the daemon is ready, and
 * the fronts an upgrade replaced are told to finish.
 */
void	parent_fronts_ready(struct parent *);
/*
 * Where a connection goes while a front slot's front is still starting
 * after an upgrade: a front of the image before, or NULL.
 */
struct worker	*parent_stand_in(struct parent *);
void	parent_stand_in_gone(struct parent *, struct worker *);
/* A pooled relay is stopped (SIGTERM), out of the pool. */
void	pool_stop(struct parent *, struct worker *);
void	parent_worker_announce(struct parent *, struct worker *);
/* w's start asked of zygote z (NULL: the spawner); answered, or w gone. */
void	parent_start_wait(struct parent *, struct worker *, struct worker *z);
void	parent_start_forget(struct parent *, struct worker *);
/* Reads the starters' answers still owed, for an upgrade (1 s at most). */
void	parent_starts_settle(struct parent *);

/* parent_zygote.c */
extern const struct msg_rules	parent_from_zygote;
void	parent_zygote_init(struct parent *);
/* The zygote to ask for a relay (started if need be), or NULL. */
struct worker	*parent_zygote_for_fork(struct parent *);
void	parent_zygote_fork(struct parent *, struct worker *z, struct worker *r,
	    int fd);
void	parent_zygote_ready(struct parent *, struct worker *);
void	parent_zygote_gone(struct parent *, struct worker *);

/* parent_reap.c */
void	parent_sigchld(evutil_socket_t, short, void *);
void	parent_respawn_fronts(evutil_socket_t, short, void *);
void	parent_check_stopped(struct parent *);
/* kill(2), or when w's pid is known */
void	parent_worker_signal(struct worker *, int sig);
void	parent_worker_free(struct parent *, struct worker *);
/* The starter said w's pid: 0, or -1 when it is not the parent's new child. */
int	parent_worker_started(struct parent *, struct worker *, pid_t);
/* w will never run (error: why) */
void	parent_worker_start_failed(struct parent *, struct worker *, int error);

/* parent_pool.c */
#define POOL_RETRY_MS		1000	/* after a pooled relay failed to start */
#define POOL_REFILL_MS		20	/* a take refills this soon, or at half */
void	pool_schedule(struct parent *, int64_t ms);
void	pool_fill(evutil_socket_t, short, void *);
void	pool_remove(struct parent *, struct worker *);
/* A pooled relay given sid, or NULL when the pool is empty. */
struct worker	*pool_take(struct parent *, const char *sid);
void	pool_resize(struct parent *);
/* Sends relay w its one server-id (MSG_ASSIGN). */
void	parent_relay_assign(struct parent *, struct worker *, const char *sid);

/* parent_check.c: what a worker hands the parent, beyond the allow-lists */
const char	*parent_check_conn(const struct conn_rec *,
	    const struct msg_conn_upgrade *, const struct msg *);
int	parent_check_conn_id(const char *id, const char *sid);
const char	*parent_check_outq(const struct worker *);

/* parent_admit.c: the caps, the rate limit, and the address buckets */
void	admit_init(struct parent *);
/*
 * the bucket of a new connection's address, or NULL: over the cap (refuse
 * 0: asked only; 1: refused, counted and logged: close it)
 */
struct ip_rec	*admit_accept(struct parent *, const struct sockaddr_storage *,
	    int listen_flags, int refuse);
struct ip_rec	*admit_rekey(struct parent *, struct ip_rec *,
	    const struct sockaddr_storage *);
void	admit_ip_release(struct parent *, struct ip_rec *);
/* protocol.md §2 steps 2-3: 0, or the HTTP status that refuses (logged) */
int	admit_upgrade(struct parent *, struct ip_rec *, int kind);
/* a new server-id: 0, or 503 while draining (logged) */
int	admit_claim(struct parent *, const char *sid);
/* 1 when one more relay process fits under max relays; claim: count a refusal */
int	admit_relay(struct parent *, int claim);
/* The upgrade (parent_adopt.c): the buckets into the state, and back. */
void	admit_save(struct parent *, struct ustate *);
void	admit_save_refusals(const struct parent *, struct us_refusal *);
void	admit_adopt_refusals(struct parent *, const struct us_refusal *);
const char	*admit_adopt(struct parent *, const struct us_address *);
struct ip_rec	*admit_find(struct parent *, const struct addr_bucket *);

/* parent_metrics.c */
void	parent_health(struct parent *, struct worker *, struct msg *);
void	parent_metrics(struct parent *, struct worker *, struct msg *);
void	parent_metrics_timeout(evutil_socket_t, short, void *);
/* a relay asked for its counters answered, or is gone */
void	parent_metrics_relay_done(struct parent *, struct worker *);
/* a relay sent RELAY_COUNTERS; a worker is gone */
void	parent_metrics_counted(struct parent *, struct worker *);
void	parent_metrics_relay_gone(struct parent *, struct worker *);
void	parent_metrics_front_gone(struct parent *, struct worker *);
/* Answers the /metrics requests waiting for relays with what is known now. */
void	parent_metrics_flush(struct parent *);
/* Adds a relay's RELAY_COUNTERS (checked: msg_relay_counters_check). */
void	parent_add_counters(struct parent *, const struct relay_counters *);

/* parent_push.c: the push process and the wakes in flight (docs/push.md) */
void	parent_push_init(struct parent *);
/* The first push process, or after an upgrade the next (docs/upgrade.md). */
void	parent_push_start(struct parent *);
/* After a reload: the running push settings become those of nc. */
void	parent_push_settings(struct config *running, const struct config *nc);
/* After a reload: a push process with the key and settings read again. */
void	parent_push_reload(struct parent *);
/* What the parent takes from a push process (docs/messages.md). */
extern const struct msg_rules	parent_from_push;
/* A push process's HELLO: it is sandboxed, and takes the wakes. */
void	parent_push_ready(struct parent *, struct worker *);
/* PUSH_WAKE, a row of parent_from_relay: a wake its relay admitted */
void	parent_push_wake(void *, struct msg *);
void	parent_push_exited(struct parent *, struct worker *);
void	parent_push_metrics(struct parent *, struct msg_metrics *);
/* The upgrade (parent_adopt.c): the counters, each push process and its wakes. */
void	parent_push_save_values(const struct parent *, struct us_push_values *);
void	parent_push_adopt_values(struct parent *, const struct us_push_values *);
void	parent_push_save(const struct parent *, const struct worker *,
	    uint32_t index, struct ustate *);
void	parent_push_adopt(struct parent *, struct worker *,
	    const struct us_push *, int back);

/* parent_ctl.c */
int	parent_ctl_open(struct parent *, char *err, size_t errlen);
void	parent_ctl_close(struct parent *);
void	parent_ctl_error_line(struct ctl_client *, const char *);
/* a relay's answer to MSG_CTL_SHOW, or its death (m == NULL) */
void	parent_ctl_relay_phone(struct parent *, struct worker *, struct msg *);
void	parent_ctl_relay_gone(struct parent *, struct worker *);
/* The answer to c: its first line ("ok", "error: ..."), then rest (or NULL). */
void	parent_ctl_answer(struct ctl_client *c, const char *first,
	    const char *rest);
/* The upgrade: the clients into the state (upgrader: the one that asked). */
void	parent_ctl_save(struct parent *, struct ustate *,
	    const struct ctl_client *upgrader);
/* A client from the state; NULL when it is dropped, else it, served. */
struct ctl_client	*parent_ctl_adopt(struct parent *,
	    const struct us_ctl_client *, const unsigned char *tail);

/* parent_upgrade.c: pyrelayctl upgrade and SIGUSR2 (docs/upgrade.md) */
/* ctl: who asked, answered when it fails or is done (NULL: SIGUSR2) */
void	parent_upgrade_start(struct parent *, struct ctl_client *ctl);
void	parent_upgrade_signal(evutil_socket_t, short, void *);
/* 1 when pid was the check of a new program this parent ran */
int	parent_upgrade_reaped(struct parent *, pid_t, int status);
/* What this image is: started, executed by an upgrade, or the way back. */
enum upgrade_mode { UPGRADE_NONE = 0, UPGRADE_IN, UPGRADE_BACK };
/* In main(): reads the state when this image is an upgrade's; its mode. */
int	parent_upgrade_begin(const struct parent_opts *);
int	parent_upgrade_mode(void);
/* The way back: the configuration that ran (the file may not parse now). */
struct config	*parent_upgrade_config(void);
/*
 * A start that cannot go on: exit 1 with the reason on stderr; in an
 * upgrade's new image, back to the program before; on the way back, on
 * without it (logged).
 */
void	parent_start_failed(const char *err);
/* Goes back to the program before, which logs reason; never returns. */
void	parent_upgrade_back(const char *reason) __attribute__((__noreturn__));
/* p->self (and on the way back the user) from the state: 1, or 0 */
int	parent_upgrade_self(struct parent *);
/* A listening socket of the image before for la's address, or -1. */
int	parent_upgrade_listener(const struct listen_addr *la);
/* The control socket of the image before, when it is at path, or -1. */
int	parent_upgrade_control(const char *path);
/* Takes over the workers, connections, admission state, counters, clients. */
void	parent_upgrade_adopt(struct parent *);
/* The fronts are started, the listeners on: the way back answers who asked. */
void	parent_upgrade_done(struct parent *);
/* The new fronts are up: answers who asked, logs. */
void	parent_upgrade_ready(struct parent *);

/* Runs the supervisor with a parsed configuration; never returns. */
void	parent_main(struct config *, const struct parent_opts *)
	    __attribute__((__noreturn__));

#endif
