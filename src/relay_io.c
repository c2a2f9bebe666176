/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * A relay's connections (relay_io.h, docs/relay-core.md): each socket in
 * the relay's loop (relay_loop.c), the WebSocket codec fed from it,
 * output written at the end of the loop turn, and each connection's
 * deadlines: heartbeats (docs/protocol.md §5), the close handshake, write
 * progress and message completion (§4).
 * What a message, a pong or a close means is the core's to decide; this
 * file hands them over and does what the core asks.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_response.h"
#include "json.h"
#include "pyrelayd.h"
#include "relay_core.h"
#include "relay_alloc.h"
#include "relay_io.h"
#include "ws.h"

#define READ_CHUNK	65536

static unsigned char	 readbuf[READ_CHUNK] RELAY_LARGE_BSS;
_Static_assert(PREREAD_MAX <= READ_CHUNK, "a preread fits the read buffer");

static void	 io_conn_write(struct conn *);
static void	 io_conn_schedule(struct conn *);

static const char *
role_name(enum relay_role role)
{
	switch (role) {
	case RELAY_BINARY:
		return "binary";
	case RELAY_NEWCOMER:
		return "newcomer";
	case RELAY_PHONE:
		return "phone";
	case RELAY_REJECTED:
		return "rejected";
	case RELAY_OLD_BINARY:
		return "old_binary";
	}
	return "?";
}

/* The connection has output for the end of this loop turn. */
static void
io_mark_dirty(struct conn *c)
{
	struct relay_io	*io = c->io;

	if (c->state == CS_DEAD || c->on_dirty)
		return;
	c->on_dirty = 1;
	TAILQ_INSERT_TAIL(&io->dirty, c, dirty);
	rloop_wake(&io->loop);
}

/* Writes what the loop turn queued (the loop's turn end, after its events). */
static void
io_flush(struct rloop *loop)
{
	struct relay_io	*io = CONTAINER_OF(loop, struct relay_io, loop);
	struct conn	*c;

	io->hooks->flush(io, 1);
	while ((c = TAILQ_FIRST(&io->dirty)) != NULL) {
		TAILQ_REMOVE(&io->dirty, c, dirty);
		c->on_dirty = 0;
		io_conn_write(c);
	}
}

void
relay_io_wake(struct relay_io *io)
{
	rloop_wake(&io->loop);
}

/*
 * What the loop watches on the socket: reading once attached and while
 * not paused, writing while output waits for room.  Should epoll refuse
 * (it has no reason to, for a TCP or AF_UNIX stream), the line says so
 * and the connection's deadlines still end it.
 */
static void
io_conn_watch(struct conn *c)
{
	uint32_t	want = 0;

	if (c->state == CS_DEAD)
		return;
	if (c->reading && !c->read_paused)
		want |= EPOLLIN;
	if (c->write_armed)
		want |= EPOLLOUT;
	if (rloop_watch(&c->io->loop, &c->watch, want) == -1)
		log_warn("relay %s: epoll_ctl", c->io->core.sid);
}

/* Starts reading a connection again if nothing holds it back. */
static void
io_conn_resume(struct conn *c)
{
	if (c->state == CS_DEAD || !c->read_paused)
		return;
	c->read_paused = 0;
	io_conn_watch(c);
}

static void
io_conn_pause(struct conn *c)
{
	if (c->state == CS_DEAD || c->read_paused)
		return;
	c->read_paused = 1;
	io_conn_watch(c);
}

/* Closes the fd and frees the connection, which the core has forgotten. */
static void
io_conn_free(struct conn *c)
{
	struct relay_io	*io = c->io;
	uint64_t	 id = c->id;
	enum relay_role	 role = c->peer.role;

	if (c->on_dirty)
		TAILQ_REMOVE(&io->dirty, c, dirty);
	rloop_forget(&io->loop, &c->watch);
	rloop_timer_stop(&io->loop, &c->timer);
	ws_free(&c->ws);
	if (c->fd != -1) {
		/* a client that sees its close sees the parent told */
		io->hooks->flush(io, 0);
		close(c->fd);
	}
	ra_free(c);
	io->hooks->closed(io, id, role);
}

/* Closes the TCP connection now; no close handshake. */
static void
io_conn_drop(struct conn *c, const char *why)
{
	if (c->state == CS_DEAD)
		return;
	log_debug("event=conn_dropped server_id=%s role=%s conn_id=%s "
	    "reason=\"%s\"", c->io->core.sid, role_name(c->peer.role),
	    c->peer.conn_id[0] ? c->peer.conn_id : "-", why);
	c->state = CS_DEAD;
	relay_core_gone(&c->io->core, &c->peer);
	io_conn_free(c);
}

/*
 * An open connection enters its close handshake (our close frame is
 * queued, or the peer's arrived) and has the close timeout to finish.
 * Returns 1 when it was open.
 */
static int
io_conn_closing(struct conn *c)
{
	if (c->state != CS_OPEN)
		return 0;
	c->state = CS_CLOSING;
	c->close_deadline_ms = now_ms() + c->io->core.lim->close_timeout_ms;
	return 1;
}

/* Starts our side of the close handshake (docs/protocol.md §5: 5 s for the peer's close). */
static void
io_conn_close(struct conn *c, uint16_t code, const char *reason)
{
	if (c->state != CS_OPEN)
		return;
	ws_send_close(&c->ws, code, reason);
	io_conn_closing(c);
	/* keep reading: the peer's close frame ends the handshake */
	io_conn_resume(c);
	io_mark_dirty(c);
	io_conn_schedule(c);
}

/* The connection broke the protocol: ws queued the close (1002/1007/1009). */
static void
io_conn_failed(struct conn *c)
{
	if (io_conn_closing(c))
		relay_core_closing(&c->io->core, &c->peer, 1001);
}

static void
io_ws_message(void *arg, int binary, unsigned char *buf, size_t len)
{
	struct conn	*c = arg;

	c->msg_started_ms = 0;
	c->bytes_in += len;
	if (c->state == CS_OPEN)
		relay_core_message(&c->io->core, &c->peer, buf, len);
}

/* Text: the core checks its UTF-8 as it parses it (relay_core_text). */
static int
io_ws_text(void *arg, unsigned char *buf, size_t len)
{
	struct conn	*c = arg;

	c->msg_started_ms = 0;
	c->bytes_in += len;
	if (c->state != CS_OPEN)
		return utf8_valid(buf, len) ? 0 : -1;
	return relay_core_text(&c->io->core, &c->peer, buf, len);
}

static void
io_ws_pong(void *arg)
{
	struct conn	*c = arg;

	c->pong_deadline_ms = 0;
	relay_core_pong(&c->io->core, &c->peer);
}

static void
io_ws_close(void *arg, uint16_t code)
{
	struct conn	*c = arg;

	/* the peer started the close: its code is the notice's */
	if (io_conn_closing(c))
		relay_core_closing(&c->io->core, &c->peer, code);
	io_mark_dirty(c);
}

static const struct ws_handler io_ws_handler = {
	.message = io_ws_message,
	.pong = io_ws_pong,
	.close = io_ws_close,
	.text = io_ws_text,
};

/*
 * Feeds the codec what was read.  A message left unfinished by it starts
 * the message timeout (docs/protocol.md §4) now: most messages end in the
 * read that starts them, and those never read the clock.
 */
static void
io_conn_feed(struct conn *c, unsigned char *buf, size_t len)
{
	if (ws_feed(&c->ws, buf, len, &io_ws_handler, c) != 0)
		io_conn_failed(c);
	if (c->state != CS_DEAD && c->ws.msgop != 0 && c->msg_started_ms == 0)
		c->msg_started_ms = now_ms();
}

/* -1 when the connection is gone (freed). */
static int
io_conn_read(struct conn *c)
{
	ssize_t		 n;

	n = recv(c->fd, readbuf, sizeof(readbuf), MSG_DONTWAIT);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return 0;
		io_conn_drop(c, "read error");
		return -1;
	}
	if (n == 0) {
		io_conn_drop(c, "eof");
		return -1;
	}
	io_conn_feed(c, readbuf, n);
	if (c->state == CS_DEAD)
		return -1;
	/* write only what the read queued (a pong, a close) or a closing conn */
	if (ws_pending(&c->ws) > 0 || c->state != CS_OPEN)
		io_mark_dirty(c);
	io_conn_schedule(c);
	return 0;
}

static void
io_conn_write(struct conn *c)
{
	ssize_t		 n = 0;

	if (c->state == CS_DEAD)
		return;
	/* what the parent must hear first (hooks->flush) */
	c->io->hooks->flush(c->io, 0);
	if (ws_pending(&c->ws) > 0 && (n = ws_write(&c->ws, c->fd)) == -1) {
		io_conn_drop(c, "write error");
		return;
	}
	if (ws_pending(&c->ws) > 0) {
		/*
		 * The write timeout runs from the last progress; a write that
		 * leaves nothing behind needs no time, so most never read it.
		 */
		if (n > 0 || c->progress_ms == 0)
			c->progress_ms = now_ms();
		if (!c->write_armed) {
			c->write_armed = 1;
			io_conn_watch(c);
		}
	} else {
		if (c->write_armed) {
			c->write_armed = 0;
			io_conn_watch(c);
		}
		c->progress_ms = 0;
		/* both close frames exchanged: the connection is over */
		if (c->state == CS_CLOSING && c->ws.close_rcvd && c->ws.close_sent) {
			shutdown(c->fd, SHUT_WR);
			io_conn_drop(c, "closed");
			return;
		}
		/*
		 * RFC 6455 §7.1.7: after a protocol failure (1002/1007/1009) the
		 * stream is not read any more; half-close once our close frame
		 * is out and drop at the peer's EOF (or the close deadline).
		 */
		if (c->state == CS_CLOSING && c->ws.failed && !c->wr_shut) {
			c->wr_shut = 1;
			shutdown(c->fd, SHUT_WR);
		}
	}
	relay_core_output(&c->io->core, &c->peer);
	io_conn_schedule(c);
}

/* Arms the connection's timer for its nearest deadline. */
static void
io_conn_schedule(struct conn *c)
{
	const struct limits	*lim = c->io->core.lim;
	int64_t			 next = INT64_MAX, t;

	if (c->state == CS_DEAD)
		return;
	if (c->state == CS_OPEN)
		next = c->next_ping_ms;
	if (c->pong_deadline_ms && c->pong_deadline_ms < next)
		next = c->pong_deadline_ms;
	if (c->state == CS_CLOSING && c->close_deadline_ms < next)
		next = c->close_deadline_ms;
	if (c->progress_ms && (t = c->progress_ms + lim->write_timeout_ms) < next)
		next = t;
	if (c->msg_started_ms &&
	    (t = c->msg_started_ms + lim->message_timeout_ms) < next)
		next = t;
	/*
	 * Most calls (one per read and per write) find the deadline
	 * unchanged: leave the timer where it is in the heap.
	 */
	if (next == c->timer.at && rloop_timer_pending(&c->timer))
		return;
	rloop_timer_at(&c->io->loop, &c->timer, next);
}

/* A ping, and the pong deadline it starts unless one runs already. */
static void
io_conn_ping(struct conn *c, int64_t now)
{
	ws_send_ping(&c->ws);
	if (c->pong_deadline_ms == 0)
		c->pong_deadline_ms = now + c->io->core.lim->heartbeat_timeout_ms;
	io_mark_dirty(c);
}

static void
io_conn_timer(struct rl_timer *t)
{
	struct conn		*c = CONTAINER_OF(t, struct conn, timer);
	const struct limits	*lim = c->io->core.lim;
	int64_t			 now = now_ms();

	if (c->progress_ms && now >= c->progress_ms + lim->write_timeout_ms) {
		io_conn_drop(c, "write timeout");
		return;
	}
	if (c->msg_started_ms && now >= c->msg_started_ms + lim->message_timeout_ms) {
		io_conn_drop(c, "message timeout");
		return;
	}
	if (c->state == CS_CLOSING && now >= c->close_deadline_ms) {
		io_conn_drop(c, "close timeout");
		return;
	}
	if (c->pong_deadline_ms && now >= c->pong_deadline_ms) {
		c->pong_deadline_ms = 0;
		if (c->state == CS_OPEN) {
			io_conn_close(c, 1011, "heartbeat timeout");
			relay_core_closing(&c->io->core, &c->peer, 1001);
		} else
			io_conn_drop(c, "heartbeat timeout");
		return;
	}
	if (c->state == CS_OPEN && now >= c->next_ping_ms) {
		io_conn_ping(c, now);
		c->next_ping_ms = now + lim->heartbeat_ms;
	}
	io_conn_schedule(c);
}

/*
 * The socket is ready.  An error or hang-up goes to what the connection
 * watches for (a read or a write then finds it), as libevent did.
 */
static void
io_conn_ready(struct rl_watch *w, uint32_t revents)
{
	struct conn	*c = CONTAINER_OF(w, struct conn, watch);
	uint32_t	 asked = w->events;

	if ((asked & EPOLLIN) &&
	    (revents & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))) {
		if (io_conn_read(c) == -1)
			return;
	}
	if ((asked & EPOLLOUT) && (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		io_conn_write(c);
}

static struct conn *
io_conn_new(struct relay_io *io, int fd, uint64_t id)
{
	struct conn	*c;

	if ((c = ra_calloc(1, sizeof(*c))) == NULL)
		fatal("relay: calloc");
	c->io = io;
	c->fd = fd;
	c->id = id;
	c->created_ms = now_ms();
	c->next_ping_ms = c->created_ms + io->core.lim->heartbeat_ms;
	if (ws_init(&c->ws, io->core.lim->message_size) == -1)
		fatalx("relay %s: ws_init", io->core.sid);
	/*
	 * No TCP_NODELAY to set: the socket has it from the parent's
	 * listener and the front (parent_listen, front_conn_accepted), over TLS
	 * too (kTLS keeps the socket; else this is the pump's AF_UNIX end).
	 */
	c->watch.fd = fd;
	c->watch.cb = io_conn_ready;
	c->timer.cb = io_conn_timer;
	return c;
}

/*
 * The 101, queued on c.  Its buffer is gone from the stack before the
 * core decides on the connection, which may log a line: vsnprintf's
 * frames then still fit in the relay's first page of stack (zygote_mm.c).
 */
static void __attribute__((__noinline__))
io_queue_101(struct conn *c, const char *ws_accept)
{
	char	resp[256];
	int	n;

	n = http_switching_response(resp, sizeof(resp), ws_accept);
	if (n < 0)
		fatalx("relay: 101 does not fit");
	ws_send_raw(&c->ws, resp, n);
}

/*
 * The 101 goes first; the core then takes the connection (and may have
 * queued a close frame, frames from the grace queue, or paused it); then
 * reading starts, with what the front read past the head.
 */
void
relay_io_attach(struct relay_io *io, int fd, uint64_t id,
    const struct msg_conn_upgrade *up)
{
	struct conn	*c;

	c = io_conn_new(io, fd, id);
	io_queue_101(c, up->ws_accept);
	io_mark_dirty(c);
	if (up->kind == CONN_BINARY)
		relay_core_attach_binary(&io->core, &c->peer);
	else
		relay_core_attach_phone(&io->core, &c->peer, up->device_name);
	c->reading = 1;
	io_conn_watch(c);
	if (up->preread_len > 0) {
		/* ws_feed unmasks in place: feed a copy, in the read buffer */
		memcpy(readbuf, up->preread, up->preread_len);
		io_conn_feed(c, readbuf, up->preread_len);
	}
	io_conn_schedule(c);
}

static void
io_grace_fired(struct rl_timer *t)
{
	struct relay_io	*io = CONTAINER_OF(t, struct relay_io,
	    timer[RELAY_TIMER_GRACE]);

	relay_core_timer(&io->core, RELAY_TIMER_GRACE);
}

static void
io_probe_fired(struct rl_timer *t)
{
	struct relay_io	*io = CONTAINER_OF(t, struct relay_io,
	    timer[RELAY_TIMER_PROBE]);

	relay_core_timer(&io->core, RELAY_TIMER_PROBE);
}

static void
io_sigterm(struct rloop *loop)
{
	struct relay_io	*io = CONTAINER_OF(loop, struct relay_io, loop);

	io->hooks->sigterm(io);
}

void
relay_io_init(struct relay_io *io, const struct relay_io_hooks *hooks)
{
	io->hooks = hooks;
	TAILQ_INIT(&io->dirty);
	if (rloop_init(&io->loop, io_flush, io_sigterm) == -1)
		fatal("relay: its loop");
	io->timer[RELAY_TIMER_GRACE].cb = io_grace_fired;
	io->timer[RELAY_TIMER_PROBE].cb = io_probe_fired;
}

/* --- the core's actions (relay_core.h ops) ------------------------------ */

void
relay_io_send(struct relay_core *core, struct relay_peer *p, const void *a,
    size_t alen, const void *b, size_t blen, const void *c, size_t clen)
{
	struct conn	*conn = RELAY_CONN(p);

	ws_send_text(&conn->ws, a, alen, b, blen, c, clen);
	conn->bytes_out += alen + blen + clen;
	io_mark_dirty(conn);
}

void
relay_io_close(struct relay_core *core, struct relay_peer *p, uint16_t code,
    const char *reason)
{
	io_conn_close(RELAY_CONN(p), code, reason);
}

void
relay_io_ping(struct relay_core *core, struct relay_peer *p)
{
	io_conn_ping(RELAY_CONN(p), now_ms());
}

void
relay_io_pause(struct relay_core *core, struct relay_peer *p)
{
	io_conn_pause(RELAY_CONN(p));
}

void
relay_io_resume(struct relay_core *core, struct relay_peer *p)
{
	io_conn_resume(RELAY_CONN(p));
}

size_t
relay_io_cost(struct relay_core *core, struct relay_peer *p)
{
	return ws_cost(&RELAY_CONN(p)->ws);
}

void
relay_io_timer_start(struct relay_core *core, enum relay_timer t, int64_t ms)
{
	struct relay_io	*io = RELAY_IO(core);

	rloop_timer_at(&io->loop, &io->timer[t], now_ms() + ms);
}

void
relay_io_timer_stop(struct relay_core *core, enum relay_timer t)
{
	struct relay_io	*io = RELAY_IO(core);

	rloop_timer_stop(&io->loop, &io->timer[t]);
}

int64_t
relay_io_now(struct relay_core *core)
{
	return now_ms();
}
