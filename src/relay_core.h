/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The relay's decisions for its one server-id (docs/protocol.md §3-§4): who
 * holds it (the binary, the newcomers of a conflict probe, the grace
 * period and its queue, reclaim, takeover, expiry), the phones and their
 * cap, envelopes both ways, close notices and directives,
 * backpressure, and which push wakes go to the parent.  No socket, no event loop, no parent channel: the layer
 * around it (relay_io.c) feeds it events, and it answers with actions
 * through the ops table, so that a unit test can script both
 * (tests/unit/test_relay_core.c; docs/relay-core.md).
 */
#ifndef RELAY_CORE_H
#define RELAY_CORE_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include "msgq.h"
#include "pyrelayd.h"

/*
 * Binaries waiting for the conflict probe of one server-id; the next is
 * refused 4409 at once.  Each holds up to a grace queue of messages, so
 * this bounds what one server-id can make a relay keep.
 */
#define RELAY_NEWCOMERS_MAX	4

enum relay_role {
	RELAY_BINARY = 1,	/* holds the server-id */
	RELAY_NEWCOMER,		/* binary waiting for the conflict probe */
	RELAY_PHONE,
	RELAY_REJECTED,		/* got 101 + a close code, never registered */
	RELAY_OLD_BINARY,	/* displaced or closed binary, finishing its close */
};

enum relay_timer {
	RELAY_TIMER_GRACE = 0,	/* the server-id's grace period */
	RELAY_TIMER_PROBE,	/* the conflict probe */
	RELAY_TIMER_MAX
};

/* What the parent counts for /metrics (docs/protocol.md §2). */
enum relay_count {
	RELAY_COUNT_FRAME_P2B = 0,
	RELAY_COUNT_FRAME_B2P,
	RELAY_COUNT_GRACE_EXPIRY,
	RELAY_COUNT_CLAIM,		/* claim, reclaim or takeover */
	RELAY_COUNT_PHONE,		/* phone registered */
	RELAY_COUNT_NO_SERVER,		/* 4404 */
	RELAY_COUNT_IN_USE,		/* 4409 */
	RELAY_COUNT_AT_CAP,		/* 4429 */
};

/*
 * One connection as the core sees it.  The I/O layer embeds it in its own
 * connection (one allocation per connection) and hands it to every event.
 */
struct relay_peer {
	TAILQ_ENTRY(relay_peer)	 entry;		/* core->peers */
	enum relay_role		 role;
	int			 open;		/* 0 once its close began */
	int			 notice_done;	/* close notice sent or not owed */
	struct msgq		 held;		/* a newcomer's, before it owns */
	size_t			 conn_id_len;
	int			 envhead_len;	/* 0 until first built */
	char			 conn_id[CONN_ID_MAX + 1];	/* phones */
	char			 envhead[32 + CONN_ID_MAX];	/* {"conn_id":"..","frame": */
	char			 device[DEVICE_NAME_MAX + 1];
};
TAILQ_HEAD(relay_peers, relay_peer);

struct relay_core;

/*
 * The core's actions.  Each is done at once, in the order the core asks;
 * none calls back into the core.
 */
struct relay_core_ops {
	/* queue one text message made of up to three pieces (0-length: none) */
	void	(*send)(struct relay_core *, struct relay_peer *, const void *,
		    size_t, const void *, size_t, const void *, size_t);
	/* start the close handshake with this code and reason (NULL: none) */
	void	(*close)(struct relay_core *, struct relay_peer *, uint16_t,
		    const char *);
	void	(*ping)(struct relay_core *, struct relay_peer *);
	void	(*pause)(struct relay_core *, struct relay_peer *);
	void	(*resume)(struct relay_core *, struct relay_peer *);
	/* the peer's queued output: bytes + WS_MSG_OVERHEAD per message */
	size_t	(*cost)(struct relay_core *, struct relay_peer *);
	void	(*timer_start)(struct relay_core *, enum relay_timer, int64_t ms);
	void	(*timer_stop)(struct relay_core *, enum relay_timer);
	void	(*count)(struct relay_core *, enum relay_count);
	/* binary, phones or probing changed (or may have): tell the parent */
	void	(*report)(struct relay_core *);
	/* give the server-id up: leave the parent's map (once) */
	void	(*retire)(struct relay_core *);
	/* a push wake admitted (docs/protocol.md §6): the parent sends it */
	void	(*push_wake)(struct relay_core *, const char *token);
	int64_t	(*now)(struct relay_core *);	/* milliseconds, monotonic */
};

/* Slots of the phone lookup's cache (a power of two). */
#define RELAY_PHONE_HINTS	32

struct relay_core {
	const struct relay_core_ops *ops;
	const struct limits	*lim;
	char			 sid[SERVER_ID_MAX + 1];	/* "" while pooled */
	struct relay_peers	 peers;		/* every connection */
	struct relay_peer	*binary;	/* NULL: none (grace) */
	int			 nphones;
	int			 in_grace;
	int			 probing;
	int			 phones_paused;	/* binary output over budget */
	int			 retiring;	/* the server-id is given up */
	struct msgq		 gq;		/* the grace queue: envelopes */
	uint32_t		 push_tokens;	/* push wake requests allowed now */
	int64_t			 push_ms;	/* push_tokens counted up to here */
	uint32_t		 push_limited;	/* dropped over the limit, unlogged */
	int			 push_off_logged;	/* a wake found push off */
	/*
	 * The phone last found for a conn_id ending in these bytes: an
	 * envelope's phone without walking the list of connections.  A
	 * peer leaves it before it is freed (relay_core_gone).
	 */
	struct relay_peer	*phone_hint[RELAY_PHONE_HINTS];
};

void	relay_core_init(struct relay_core *, const struct relay_core_ops *,
	    const struct limits *);

/* Events.  A new connection: its 101 is queued already. */
void	relay_core_attach_binary(struct relay_core *, struct relay_peer *);
void	relay_core_attach_phone(struct relay_core *, struct relay_peer *,
	    const char *device);
/* A whole message from the peer (the bytes may be changed in place). */
void	relay_core_message(struct relay_core *, struct relay_peer *,
	    unsigned char *, size_t);
/*
 * A whole text message whose UTF-8 is not checked yet: -1, having done
 * nothing, when it is not UTF-8 (the caller closes 1007).  A binary's
 * envelope is checked by its parse, which reads every byte anyway.
 */
int	relay_core_text(struct relay_core *, struct relay_peer *,
	    unsigned char *, size_t);
void	relay_core_pong(struct relay_core *, struct relay_peer *);
/*
 * The peer's close began without the core asking: its close frame came
 * (notice_code is its code), or the I/O layer closed it (1001).
 */
void	relay_core_closing(struct relay_core *, struct relay_peer *,
	    int notice_code);
/* The peer's connection is gone; the core forgets it. */
void	relay_core_gone(struct relay_core *, struct relay_peer *);
/* The peer's output was written to, or grew: backpressure may change. */
void	relay_core_output(struct relay_core *, struct relay_peer *);
void	relay_core_timer(struct relay_core *, enum relay_timer);
/* A binary's connection was lost on its way here (its fd never came). */
void	relay_core_binary_lost(struct relay_core *);
/* Give the server-id up now: retire, every connection closed 1001 reason. */
void	relay_core_leave(struct relay_core *, const char *reason);

#endif
