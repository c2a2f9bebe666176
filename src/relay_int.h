/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef RELAY_INT_H
#define RELAY_INT_H

#include <sys/types.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "msg.h"
#include "msgq.h"
#include "proto.h"
#include "pyrelayd.h"
#include "ws.h"

/*
 * A relay process's state, shared by relay.c (its connections, and every
 * decision of protocol.md §3-§5) and relay_chan.c (its channel to the
 * parent: set-up, messages, reports, counters, the retire handshake).
 */

/*
 * The two large buffers (readbuf in relay.c, chanbuf in relay_chan.c) go
 * to .lbss, which the linker places after .bss: placed among the small
 * variables of libc and libevent, they spread those over more pages, and
 * every relay dirties each of those pages.
 */
#define RELAY_LARGE_BSS	__attribute__((section(".lbss.relay")))

enum conn_state {
	CS_OPEN = 0,		/* data flows */
	CS_CLOSING,		/* our close frame is queued; waiting for the peer's */
	CS_DEAD,		/* fd closed; freed at the end of the loop pass */
};

enum conn_role {
	CR_BINARY = 1,		/* holds the server-id */
	CR_NEWCOMER,		/* binary waiting for the conflict probe */
	CR_PHONE,
	CR_REJECTED,		/* got 101 + a close code, never registered */
	CR_OLD_BINARY,		/* displaced or closed binary, finishing its close */
};

struct conn {
	TAILQ_ENTRY(conn)	 entry;		/* r->conns */
	TAILQ_ENTRY(conn)	 dirty;		/* r->dirty, output to flush */
	int			 on_dirty;
	struct relay		*r;
	uint64_t		 id;		/* parent's connection id */
	int			 fd;
	enum conn_role		 role;
	enum conn_state		 state;
	struct event		*ev_read;
	struct event		*ev_write;
	struct event		*ev_timer;
	int			 read_paused;
	int			 write_armed;
	int			 wr_shut;	/* SHUT_WR done after a failure close */
	struct ws		 ws;
	char			 conn_id[CONN_ID_MAX + 1];
	char			 envhead[32 + CONN_ID_MAX];	/* {"conn_id":"..","frame": */
	int			 envhead_len;		/* 0 until first built */
	size_t			 conn_id_len;
	char			 device[DEVICE_NAME_MAX + 1];
	int64_t			 created_ms;
	int64_t			 next_ping_ms;
	int64_t			 pong_deadline_ms;	/* 0 when no ping is out */
	int64_t			 last_pong_ms;
	int64_t			 close_deadline_ms;	/* CS_CLOSING */
	int64_t			 progress_ms;		/* last write progress */
	int64_t			 msg_started_ms;	/* 0 when no message is partial */
	int64_t			 timer_at;		/* the deadline ev_timer is armed for */
	int			 notice_done;		/* close notice sent or not owed */
	int			 unregistered;
	uint64_t		 bytes_in, bytes_out;
	struct msgq		 held;		/* a newcomer's, before it owns */
};
TAILQ_HEAD(conn_list, conn);

struct relay {
	struct event_base	*base;
	struct msg_chan		 chan;
	struct event		*ev_chan;
	struct event		*ev_flush;
	struct event		*ev_grace;
	struct event		*ev_probe;
	struct event		*ev_sigterm;
	struct event		*ev_sigint;
	struct event		*ev_sighup;
	struct limits		 lim;
	char			 sid[SERVER_ID_MAX + 1];
	size_t			 sidlen;
	struct conn_list	 conns;		/* every connection */
	struct conn_list	 dirty;
	struct conn		*binary;	/* NULL: no binary (grace) */
	int			 nphones;
	int			 in_grace;
	int			 probing;
	int64_t			 probe_started_ms;
	int			 phones_paused;	/* binary output over budget */
	int			 retiring;	/* RETIRE sent */
	int			 retired;	/* RETIRE_OK received */
	int			 shutting_down;
	struct msgq		 gq;		/* the grace queue: envelopes */
	uint32_t		 reported_binary, reported_phones, reported_probing;
	int			 reported_once;
	struct relay_counters	 cnt;		/* increments not yet sent */
	int			 cnt_dirty;	/* cnt holds increments */
	int64_t			 cnt_sent_ms;	/* the last RELAY_COUNTERS */
	struct event		*ev_counters;
	uint32_t		 push_tokens;	/* push wake requests allowed now */
	int64_t			 push_ms;	/* push_tokens counted up to here */
	uint32_t		 push_limited;	/* dropped over the limit, unlogged */
	int			 push_off_logged;	/* a wake found push off */
};

/*
 * Counter increments reach the parent soon, without a message per frame
 * (proto.h RELAY_COUNTERS): the first increment a second or more after the
 * last send goes out at the end of its loop turn, before the frame it
 * counts is written, so a client that has seen a frame can scrape it
 * counted; later ones wait for the timer, which ends that second, and a
 * /metrics scrape asks for them sooner (MSG_COUNTERS_REQ).  The timer runs
 * only while increments wait: an idle relay is never woken (a per-second
 * tick in every relay cost most of a core at 20,000 server-ids).
 */
#define COUNT(r, field)	do {						\
	(r)->cnt.field++;						\
	if (!(r)->cnt_dirty)						\
		relay_counters_arm(r);					\
} while (0)

/* relay.c */
/* A new connection from the parent (CONN_ATTACH), counted before it is seen. */
void	relay_attach(struct relay *, struct msg *);
void	relay_close_all(struct relay *, const char *reason);
void	relay_flush(evutil_socket_t, short, void *);
void	relay_grace_expired(evutil_socket_t, short, void *);
void	relay_probe_expired(evutil_socket_t, short, void *);

/* relay_chan.c */
void	relay_counters_arm(struct relay *);
void	relay_counters_send(struct relay *, uint64_t id);
void	relay_counters_flush(struct relay *);
void	relay_chan_flush(struct relay *);
/* Tells the parent the counts /healthz reports, before any client can see them. */
void	relay_report(struct relay *);
/* Leaves the parent's map (architecture.md "The retire handshake"); once. */
void	relay_retire(struct relay *);
/* Exits the loop once the relay is out of the parent's map and has no connection. */
void	relay_check_exit(struct relay *);

#endif
