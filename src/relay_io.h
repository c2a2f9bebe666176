/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The relay's connections (docs/relay-core.md): sockets in its own loop,
 * the WebSocket codec, write scheduling, liveness (docs/protocol.md §4-§5
 * timeouts, heartbeats, the close handshake) and the core's two timers.
 * It feeds the decision core (relay_core.h) its events and carries out
 * the actions that touch a connection; the parent channel (relay_chan.c)
 * sits around it.
 */
#ifndef RELAY_IO_H
#define RELAY_IO_H

#include <sys/types.h>
#include <sys/queue.h>

#include "proto.h"
#include "pyrelayd.h"
#include "relay_core.h"
#include "relay_loop.h"
#include "ws.h"

/*
 * The large buffers (readbuf in relay_io.c, the allocator's arena in
 * relay_alloc.c, the stack, message buffer and vDSO room in zygote_mm.c)
 * go to .lbss, which the linker places after .bss: placed among the small
 * variables of libc and libevent, they spread those over more pages, and
 * every relay dirties each of those pages.
 */
#define RELAY_LARGE_BSS	__attribute__((section(".lbss.relay")))

enum conn_state {
	CS_OPEN = 0,		/* data flows */
	CS_CLOSING,		/* our close frame is queued; waiting for the peer's */
	CS_DEAD,		/* fd closed; the connection is freed at once */
};

struct relay_io;

struct conn {
	struct relay_peer	 peer;		/* the core's part */
	TAILQ_ENTRY(conn)	 dirty;		/* io->dirty, output to flush */
	int			 on_dirty;
	struct relay_io		*io;
	uint64_t		 id;		/* parent's connection id */
	int			 fd;
	enum conn_state		 state;
	struct rl_watch		 watch;		/* the socket in the loop */
	struct rl_timer		 timer;		/* its nearest deadline */
	int			 reading;	/* attached: reads unless paused */
	int			 read_paused;
	int			 write_armed;
	int			 wr_shut;	/* SHUT_WR done after a failure close */
	struct ws		 ws;
	int64_t			 created_ms;
	int64_t			 next_ping_ms;
	int64_t			 pong_deadline_ms;	/* 0 when no ping is out */
	int64_t			 close_deadline_ms;	/* CS_CLOSING */
	int64_t			 progress_ms;		/* last write progress */
	int64_t			 msg_started_ms;	/* 0 when no message is partial */
	uint64_t		 bytes_in, bytes_out;
};
TAILQ_HEAD(conn_list, conn);

/* The connection a peer of the core is part of. */
#define RELAY_CONN(p)	CONTAINER_OF(p, struct conn, peer)

/* What the layer around tells the parent. */
struct relay_io_hooks {
	/* a connection is gone, its fd closed: id, and its role then */
	void	(*closed)(struct relay_io *, uint64_t id, enum relay_role);
	/*
	 * Output to a client is about to leave (a write or a close;
	 * turn_end 0), or the loop turn ends, before its writes (1)
	 */
	void	(*flush)(struct relay_io *, int turn_end);
	/* SIGTERM: the operator's, or the service manager's */
	void	(*sigterm)(struct relay_io *);
};

struct relay_io {
	struct relay_core	 core;
	struct rloop		 loop;
	struct rl_timer		 timer[RELAY_TIMER_MAX];
	struct conn_list	 dirty;
	const struct relay_io_hooks *hooks;
};

/* The I/O layer around a core. */
#define RELAY_IO(rc)	CONTAINER_OF(rc, struct relay_io, core)

/* The loop (relay_loop.h) and the core's timers; fatal if epoll fails. */
void	relay_io_init(struct relay_io *, const struct relay_io_hooks *);
/* Runs the end of this loop turn (hooks->flush, then the writes) soon. */
void	relay_io_wake(struct relay_io *);
/* A connection from the parent (CONN_ATTACH): the 101, then the core decides. */
void	relay_io_attach(struct relay_io *, int fd, uint64_t id,
	    const struct msg_conn_upgrade *);

/* The core's actions on connections and timers (relay_core.h ops). */
void	relay_io_send(struct relay_core *, struct relay_peer *, const void *,
	    size_t, const void *, size_t, const void *, size_t);
void	relay_io_close(struct relay_core *, struct relay_peer *, uint16_t,
	    const char *);
void	relay_io_ping(struct relay_core *, struct relay_peer *);
void	relay_io_pause(struct relay_core *, struct relay_peer *);
void	relay_io_resume(struct relay_core *, struct relay_peer *);
size_t	relay_io_cost(struct relay_core *, struct relay_peer *);
void	relay_io_timer_start(struct relay_core *, enum relay_timer, int64_t);
void	relay_io_timer_stop(struct relay_core *, enum relay_timer);
int64_t	relay_io_now(struct relay_core *);

#endif
