/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The worker threads: one epoll loop each, over the connections the
 * main thread gave them.  A connection is only ever touched by its own
 * thread; the only data shared between threads is the receive count of
 * a fanout stream (the phone's thread writes it, the binary's thread
 * reads it) and the phase the main thread sets.
 *
 * Reads go into one buffer per thread; only a partial frame left at
 * the end of a read is copied into the connection's own buffer.
 * Writes are appended to the connection's output buffer and sent once
 * per loop iteration.  Buffers only grow, so the steady state does no
 * allocation.
 */
#define _GNU_SOURCE

#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define OP_CONT		0x0
#define OP_TEXT		0x1
#define OP_BINARY	0x2
#define OP_CLOSE	0x8
#define OP_PING		0x9
#define OP_PONG		0xa

#define NEVENTS		512
#define MAX_BATCH	4096	/* --rate ticks served per wake-up */
#define LATE_NS		(1000 * 1000ULL)
#define IN_ROOM		16384
#define VERBOSE_LINES	20

#define ENV_HEAD	"{\"conn_id\":"
#define ENV_MID		",\"frame\":"

static void	 vlog(struct thr *, const char *, ...)
		    __attribute__((__format__ (printf, 2, 3)));
static void	 conn_connect(struct thr *, struct conn *);
static void	 conn_kill(struct conn *);
static void	 conn_fail(struct conn *);
static void	 conn_close(struct conn *, uint16_t);
static void	 conn_event(struct conn *, uint32_t);
static void	 conn_read(struct conn *);
static int	 conn_handshake(struct conn *);
static size_t	 conn_frames(struct conn *, const uint8_t *, size_t);
static void	 conn_frame(struct conn *, uint8_t, const uint8_t *, size_t);
static void	 conn_opened(struct conn *);
static int	 conn_flush(struct conn *);
static void	 conn_dirty(struct conn *);
static uint8_t	*out_reserve(struct conn *, size_t);
static uint8_t	*frame_begin(struct conn *, int, size_t, uint8_t *);
static void	 put_msg(uint8_t *, size_t, uint64_t, uint64_t);
static void	 binary_message(struct conn *, const uint8_t *, size_t);
static void	 phone_message(struct conn *, const uint8_t *, size_t);
static int	 stream_try_send(struct thr *, struct stream *);
static void	 setup_done(struct conn *);
static void	 slot_start(struct thr *, struct slot *);
static void	 slot_fail(struct slot *);
static void	 slot_done(struct thr *, struct slot *);
static void	 slot_served(struct thr *, struct slot *);
static int	 sending(const struct thr *);
static int	 thr_pump(struct thr *);
static void	 thr_flush(struct thr *);
static void	 thr_sweep(struct thr *);
static void	 thr_phase(struct thr *, enum phase);
static void	 thr_stop(struct thr *);
static void	 thr_wake_others(struct thr *);

static void
vlog(struct thr *t, const char *fmt, ...)
{
	static _Atomic int	 lines;
	va_list			 ap;

	if (!cfg.verbose || atomic_fetch_add(&lines, 1) >= VERBOSE_LINES)
		return;
	va_start(ap, fmt);
	flockfile(stderr);
	fprintf(stderr, "pyrelay-bench: thread %d: ", t->id);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	va_end(ap);
}

void
thr_kick(struct thr *t)
{
	uint64_t	 one = 1;

	if (write(t->evfd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		vlog(t, "eventfd write: %s", strerror(errno));
}

static int
sending(const struct thr *t)
{
	return t->phase == PH_WARMUP || t->phase == PH_MEASURE;
}

static void
setup_done(struct conn *c)
{
	if (c->counted || c->slot != NULL)
		return;
	c->counted = 1;
	c->thr->inflight--;
	atomic_fetch_add(&g_done, 1);
}

/* ---------------------------------------------------------------- buffers */

static void
conn_dirty(struct conn *c)
{
	struct thr	*t = c->thr;
	void		*p;

	if (c->dirty)
		return;
	if (t->nflush == t->flushcap) {
		p = reallocarray(t->flush, (size_t)t->flushcap * 2 + 16,
		    sizeof(*t->flush));
		if (p == NULL) {
			perror("pyrelay-bench: reallocarray");
			exit(2);
		}
		t->flush = p;
		t->flushcap = t->flushcap * 2 + 16;
	}
	c->dirty = 1;
	t->flush[t->nflush++] = c;
}

static uint8_t *
out_reserve(struct conn *c, size_t n)
{
	size_t	 ncap;
	void	*p;

	if (c->outcap - c->outlen >= n)
		return c->out + c->outlen;
	if (c->outoff > 0) {
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
		if (c->outcap - c->outlen >= n)
			return c->out + c->outlen;
	}
	ncap = c->outcap ? c->outcap * 2 : 1024;
	while (ncap < c->outlen + n)
		ncap *= 2;
	if ((p = realloc(c->out, ncap)) == NULL) {
		perror("pyrelay-bench: realloc");
		exit(2);
	}
	c->out = p;
	c->outcap = ncap;
	return c->out + c->outlen;
}

/*
 * Appends a masked client frame header for a payload of len bytes and
 * returns where the payload goes; the caller writes it in clear and
 * masks it with key.
 */
static uint8_t *
frame_begin(struct conn *c, int op, size_t len, uint8_t *key)
{
	uint8_t		*b;
	size_t		 hl;
	uint64_t	 r;
	int		 i;

	b = out_reserve(c, len + 14);
	b[0] = 0x80 | (uint8_t)op;
	if (len < 126) {
		b[1] = 0x80 | (uint8_t)len;
		hl = 2;
	} else if (len < 65536) {
		b[1] = 0x80 | 126;
		b[2] = (uint8_t)(len >> 8);
		b[3] = (uint8_t)len;
		hl = 4;
	} else {
		b[1] = 0x80 | 127;
		for (i = 0; i < 8; i++)
			b[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
		hl = 10;
	}
	r = rng_next(&c->thr->rng);
	memcpy(b + hl, &r, 4);
	memcpy(key, b + hl, 4);
	hl += 4;
	c->outlen += hl + len;
	conn_dirty(c);
	return b + hl;
}

static void
send_control(struct conn *c, int op, const uint8_t *data, size_t len)
{
	uint8_t		 key[4], *p;

	p = frame_begin(c, op, len, key);
	if (len > 0) {
		memcpy(p, data, len);
		ws_mask(p, len, key);
	}
}

/*
 * The phone message: {"s":SEQ,"t":NS,"p":"xxx..."} padded to exactly
 * len bytes, so that any relay accepts it as JSON.
 */
static void
put_msg(uint8_t *p, size_t len, uint64_t seq, uint64_t ts)
{
	size_t	 o = 0, pad;

	memcpy(p, "{\"s\":", 5);
	o = 5;
	o += fmt_u64((char *)p + o, seq);
	memcpy(p + o, ",\"t\":", 5);
	o += 5;
	o += fmt_u64((char *)p + o, ts);
	memcpy(p + o, ",\"p\":\"", 6);
	o += 6;
	pad = len - o - 2;
	memset(p + o, 'x', pad);
	o += pad;
	p[o] = '"';
	p[o + 1] = '}';
}

/* ---------------------------------------------------------------- connect */

static void
conn_connect(struct thr *t, struct conn *c)
{
	struct epoll_event	 ev;
	char			 req[1024];
	uint8_t			*p;
	int			 fd, one = 1, n, e;

	c->state = CS_CONNECTING;
	c->t_start = t->now;
	c->closing = 0;
	c->pings = 0;
	c->inlen = 0;
	c->outoff = c->outlen = 0;
	c->pollout = 0;
	fd = socket(cfg.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1) {
		e = errno;
		goto fail;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&cfg.addr, cfg.addrlen) == -1 &&
	    errno != EINPROGRESS) {
		e = errno;
		close(fd);
		goto fail;
	}
	c->fd = fd;
	b64_key(&t->rng, c->key);
	n = snprintf(req, sizeof(req),
	    "GET %s HTTP/1.1\r\n"
	    "Host: %s\r\n"
	    "Upgrade: websocket\r\n"
	    "Connection: Upgrade\r\n"
	    "Sec-WebSocket-Key: %s\r\n"
	    "Sec-WebSocket-Version: 13\r\n"
	    "User-Agent: pyrelay-bench/" BENCH_VERSION "\r\n"
	    "X-Pyrycode-Server: %s\r\n"
	    "%s\r\n"
	    "\r\n",
	    c->role == ROLE_BINARY ? "/v1/server" : "/v1/client",
	    cfg.hostport, c->key, c->sid,
	    c->role == ROLE_BINARY ?
	    "X-Pyrycode-Version: pyrelay-bench/" BENCH_VERSION :
	    "X-Pyrycode-Token: pyrelay-bench");
	if (n < 0 || (size_t)n >= sizeof(req)) {
		fprintf(stderr, "pyrelay-bench: request too long\n");
		exit(2);
	}
	p = out_reserve(c, (size_t)n);
	memcpy(p, req, (size_t)n);
	c->outlen += (size_t)n;
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.ptr = c;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
		perror("pyrelay-bench: epoll_ctl");
		exit(2);
	}
	c->pollout = 1;
	return;
 fail:
	t->c.errnos[e < NERRNO ? e : 0]++;
	vlog(t, "connect %s: %s", c->sid, strerror(e));
	c->fd = -1;
	conn_fail(c);
}

/* Closes the socket; nothing more happens on this connection. */
static void
conn_kill(struct conn *c)
{
	if (c->state == CS_DEAD || c->state == CS_UNUSED)
		return;
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	c->state = CS_DEAD;
	c->pollout = 0;
	c->inlen = 0;
	c->outoff = c->outlen = 0;
	setup_done(c);
}

/* An error the caller has counted: kill, and fail the claim cycle. */
static void
conn_fail(struct conn *c)
{
	if (c->state == CS_OPEN)
		c->thr->c.lost++;
	conn_kill(c);
	if (c->slot != NULL)
		slot_fail(c->slot);
}

/* Our own close: a close frame, one attempt to send it, then the fd. */
static void
conn_close(struct conn *c, uint16_t code)
{
	uint8_t	 b[2];

	if (c->state != CS_OPEN) {
		conn_kill(c);
		return;
	}
	b[0] = (uint8_t)(code >> 8);
	b[1] = (uint8_t)code;
	send_control(c, OP_CLOSE, b, 2);
	c->closing = 1;
	(void)send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
	    MSG_NOSIGNAL | MSG_DONTWAIT);
	conn_kill(c);
}

static int
conn_flush(struct conn *c)
{
	struct epoll_event	 ev;
	ssize_t			 n;

	if (c->state != CS_HANDSHAKE && c->state != CS_OPEN)
		return 0;
	while (c->outoff < c->outlen) {
		n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (!c->pollout) {
					ev.events = EPOLLIN | EPOLLOUT;
					ev.data.ptr = c;
					(void)epoll_ctl(c->thr->epfd,
					    EPOLL_CTL_MOD, c->fd, &ev);
					c->pollout = 1;
				}
				return 0;
			}
			c->thr->c.err_eof++;
			vlog(c->thr, "send %s: %s", c->sid, strerror(errno));
			conn_fail(c);
			return -1;
		}
		c->outoff += (size_t)n;
	}
	c->outoff = c->outlen = 0;
	if (c->pollout) {
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		(void)epoll_ctl(c->thr->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->pollout = 0;
	}
	/* idle connections keep no buffers */
	if (cfg.mode == MODE_IDLE && c->out != NULL) {
		free(c->out);
		c->out = NULL;
		c->outcap = 0;
	}
	return 0;
}

static void
conn_event(struct conn *c, uint32_t events)
{
	struct thr	*t = c->thr;
	socklen_t	 sl = sizeof(int);
	int		 err = 0;

	if (c->state == CS_CONNECTING) {
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) == -1)
			err = errno;
		if (err != 0) {
			t->c.errnos[err < NERRNO ? err : 0]++;
			vlog(t, "connect %s: %s", c->sid, strerror(err));
			conn_fail(c);
			return;
		}
		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		c->state = CS_HANDSHAKE;
		conn_flush(c);
		return;
	}
	if (c->state != CS_HANDSHAKE && c->state != CS_OPEN)
		return;
	if ((events & EPOLLOUT) && c->pollout && conn_flush(c) == -1)
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_read(c);
}

/* ---------------------------------------------------------------- input */

static int
in_room(struct conn *c, size_t n)
{
	size_t	 ncap;
	void	*p;

	if (c->incap - c->inlen >= n)
		return 0;
	ncap = c->incap ? c->incap * 2 : IN_ROOM;
	while (ncap < c->inlen + n)
		ncap *= 2;
	if ((p = realloc(c->in, ncap)) == NULL) {
		perror("pyrelay-bench: realloc");
		exit(2);
	}
	c->in = p;
	c->incap = ncap;
	return 0;
}

static void
conn_read(struct conn *c)
{
	struct thr	*t = c->thr;
	ssize_t		 n;
	size_t		 used;
	uint8_t		*buf;

	if (c->state == CS_HANDSHAKE || c->inlen > 0) {
		in_room(c, IN_ROOM);
		buf = c->in + c->inlen;
		n = recv(c->fd, buf, c->incap - c->inlen, MSG_DONTWAIT);
	} else {
		buf = t->rbuf;
		n = recv(c->fd, buf, RBUF_SIZE, MSG_DONTWAIT);
	}
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n <= 0) {
		t->c.err_eof++;
		vlog(t, "%s %s: %s", c->role == ROLE_BINARY ? "binary" :
		    "phone", c->sid, n == 0 ? "connection closed without a "
		    "close frame" : strerror(errno));
		conn_fail(c);
		return;
	}
	if (buf == t->rbuf) {
		used = conn_frames(c, buf, (size_t)n);
		if (c->state == CS_OPEN && used < (size_t)n) {
			in_room(c, (size_t)n - used);
			memcpy(c->in, buf + used, (size_t)n - used);
			c->inlen = (size_t)n - used;
		}
		return;
	}
	c->inlen += (size_t)n;
	if (c->state == CS_HANDSHAKE && conn_handshake(c) == -1)
		return;
	if (c->state != CS_OPEN)
		return;
	used = conn_frames(c, c->in, c->inlen);
	if (c->state != CS_OPEN)
		return;
	if (used > 0) {
		memmove(c->in, c->in + used, c->inlen - used);
		c->inlen -= used;
	}
	if (cfg.mode == MODE_IDLE && c->inlen == 0 && c->in != NULL) {
		free(c->in);
		c->in = NULL;
		c->incap = 0;
	}
}

/*
 * The response head: a 101 with the right Sec-WebSocket-Accept.  Any
 * other status is counted by its number.  Bytes after the head stay in
 * c->in for the frame parser.
 */
static int
conn_handshake(struct conn *c)
{
	struct thr	*t = c->thr;
	const char	*h = (const char *)c->in, *line, *eol, *colon, *v;
	const char	*end;
	char		 want[32];
	size_t		 headlen, vlen;
	int		 status, ok = 0;
	uint8_t		*e;

	e = memmem(c->in, c->inlen, "\r\n\r\n", 4);
	if (e == NULL) {
		if (c->inlen > MAX_HEAD) {
			t->c.err_http++;
			vlog(t, "%s: response head too long", c->sid);
			conn_fail(c);
			return -1;
		}
		return 0;
	}
	headlen = (size_t)(e - c->in) + 4;
	end = h + headlen - 2;
	if (headlen < 16 || memcmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ' ||
	    h[9] < '1' || h[9] > '5' || h[10] < '0' || h[10] > '9' ||
	    h[11] < '0' || h[11] > '9') {
		t->c.err_http++;
		vlog(t, "%s: malformed response", c->sid);
		conn_fail(c);
		return -1;
	}
	status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
	if (status != 101) {
		t->c.status[status]++;
		vlog(t, "%s %s: HTTP %d", c->role == ROLE_BINARY ? "binary" :
		    "phone", c->sid, status);
		conn_fail(c);
		return -1;
	}
	ws_accept(c->key, want);
	line = (const char *)memchr(h, '\n', headlen) + 1;
	while (line < end) {
		eol = memchr(line, '\r', (size_t)(end - line));
		if (eol == NULL)
			eol = end;
		colon = memchr(line, ':', (size_t)(eol - line));
		if (colon != NULL && colon - line == 20 &&
		    strncasecmp(line, "Sec-WebSocket-Accept", 20) == 0) {
			v = colon + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			vlen = (size_t)(eol - v);
			while (vlen > 0 && (v[vlen - 1] == ' ' ||
			    v[vlen - 1] == '\t'))
				vlen--;
			ok = vlen == strlen(want) &&
			    memcmp(v, want, vlen) == 0;
		}
		line = eol + 2;
	}
	if (!ok) {
		t->c.err_accept++;
		vlog(t, "%s: missing or wrong Sec-WebSocket-Accept", c->sid);
		conn_fail(c);
		return -1;
	}
	memmove(c->in, c->in + headlen, c->inlen - headlen);
	c->inlen -= headlen;
	c->state = CS_OPEN;
	t->c.opened++;
	conn_opened(c);
	return 0;
}

static void
conn_opened(struct conn *c)
{
	struct slot	*s = c->slot;
	struct thr	*t = c->thr;
	uint8_t		 key[4], *p;

	if (s == NULL) {
		atomic_fetch_add(&g_opened, 1);
		setup_done(c);
		return;
	}
	if (c == &s->bin && s->state == SL_BINARY) {
		s->state = SL_PHONE;
		conn_connect(t, &s->phone);
	} else if (c == &s->phone && s->state == SL_PHONE) {
		s->state = SL_MESSAGE;
		p = frame_begin(c, cfg.opcode, cfg.bytes, key);
		put_msg(p, cfg.bytes, 1, now_ns());
		ws_mask(p, cfg.bytes, key);
	}
}

/* Complete frames in p; returns the bytes used. */
static size_t
conn_frames(struct conn *c, const uint8_t *p, size_t n)
{
	struct thr	*t = c->thr;
	size_t		 off = 0, hl, avail;
	uint64_t	 len;
	int		 i;

	while (c->state == CS_OPEN && n - off >= 2) {
		avail = n - off;
		if (p[off + 1] & 0x80) {
			t->c.err_proto++;
			vlog(t, "%s: masked frame from the relay", c->sid);
			conn_fail(c);
			return off;
		}
		len = p[off + 1] & 0x7f;
		hl = 2;
		if (len == 126) {
			if (avail < 4)
				break;
			len = (uint64_t)p[off + 2] << 8 | p[off + 3];
			hl = 4;
		} else if (len == 127) {
			if (avail < 10)
				break;
			len = 0;
			for (i = 0; i < 8; i++)
				len = len << 8 | p[off + 2 + i];
			hl = 10;
		}
		if (len > MAX_FRAME) {
			t->c.err_proto++;
			vlog(t, "%s: frame of %llu bytes", c->sid,
			    (unsigned long long)len);
			conn_fail(c);
			return off;
		}
		if (avail - hl < len) {
			in_room(c, hl + (size_t)len);
			break;
		}
		conn_frame(c, p[off], p + off + hl, (size_t)len);
		off += hl + (size_t)len;
	}
	return off;
}

static void
conn_frame(struct conn *c, uint8_t b0, const uint8_t *p, size_t len)
{
	struct thr	*t = c->thr;
	int		 op = b0 & 0x0f, code;
	uint8_t		 b[2];

	if ((b0 & 0x70) != 0) {
		t->c.err_proto++;
		vlog(t, "%s: RSV bits set", c->sid);
		conn_fail(c);
		return;
	}
	switch (op) {
	case OP_PING:
		if (len > 125)
			break;
		t->c.pings++;
		c->pings++;
		send_control(c, OP_PONG, p, len);
		return;
	case OP_PONG:
		return;
	case OP_CLOSE:
		code = len >= 2 ? (p[0] << 8 | p[1]) : 1005;
		if (!c->closing) {
			t->c.close[code < NCLOSE ? code : 0]++;
			vlog(t, "%s %s: close %d \"%.*s\"",
			    c->role == ROLE_BINARY ? "binary" : "phone",
			    c->sid, code, len > 2 ? (int)len - 2 : 0,
			    len > 2 ? (const char *)p + 2 : "");
			if (code == 1005)
				send_control(c, OP_CLOSE, NULL, 0);
			else {
				b[0] = (uint8_t)(code >> 8);
				b[1] = (uint8_t)code;
				send_control(c, OP_CLOSE, b, 2);
			}
			c->closing = 1;
			conn_flush(c);
		}
		conn_fail(c);
		return;
	case OP_TEXT:
	case OP_BINARY:
		if (!(b0 & 0x80))
			break;	/* relays send unfragmented messages (§4) */
		if (c->role == ROLE_BINARY)
			binary_message(c, p, len);
		else
			phone_message(c, p, len);
		return;
	default:
		break;
	}
	t->c.err_proto++;
	vlog(t, "%s: unexpected frame, opcode %d", c->sid, op);
	conn_fail(c);
}

/* ---------------------------------------------------------------- messages */

static void
binary_message(struct conn *c, const uint8_t *p, size_t n)
{
	struct thr	*t = c->thr;
	struct srv	*srv = c->srv;
	struct stream	*st;
	size_t		 cs, ce, fs, fe, hs, he, len, o;
	uint64_t	 idx;
	uint8_t		 key[4], *d;
	int		 r;

	if (json_find(p, n, "conn_id", &cs, &ce) != 1 || p[cs] != '"') {
		t->c.err_msg++;
		vlog(t, "binary %s: envelope without conn_id", c->sid);
		return;
	}
	if ((r = json_find(p, n, "frame", &fs, &fe)) != 1) {
		if (r == 0 && json_find(p, n, "close_code", &hs, &he) == 1)
			t->c.notices++;
		else {
			t->c.err_msg++;
			vlog(t, "binary %s: envelope without frame", c->sid);
		}
		return;
	}
	switch (cfg.mode) {
	case MODE_STORM:
		if (c->slot->state != SL_MESSAGE)
			break;
		/* the message goes back to the phone, as in up */
		/* FALLTHROUGH */
	case MODE_UP:
		/* echo: {"conn_id":<id>,"frame":<frame>} */
		len = sizeof(ENV_HEAD) - 1 + (ce - cs) + sizeof(ENV_MID) - 1 +
		    (fe - fs) + 1;
		d = frame_begin(c, cfg.opcode, len, key);
		o = sizeof(ENV_HEAD) - 1;
		memcpy(d, ENV_HEAD, o);
		memcpy(d + o, p + cs, ce - cs);
		o += ce - cs;
		memcpy(d + o, ENV_MID, sizeof(ENV_MID) - 1);
		o += sizeof(ENV_MID) - 1;
		memcpy(d + o, p + fs, fe - fs);
		o += fe - fs;
		d[o] = '}';
		ws_mask(d, len, key);
		return;
	case MODE_FANOUT:
		if (json_find(p + fs, fe - fs, "hello", &hs, &he) != 1 ||
		    json_u64(p + fs, fe - fs, hs, &idx) == -1 ||
		    idx >= (uint64_t)srv->nphones || ce - cs > CID_MAX)
			break;
		st = &srv->streams[idx];
		if (st->cidlen == 0) {
			memcpy(st->cid, p + cs, ce - cs);
			st->cidlen = ce - cs;
			srv->nlearned++;
			atomic_fetch_add(&g_learned, 1);
		}
		return;
	case MODE_CLAIM:
		if (c->slot->state == SL_MESSAGE) {
			slot_done(t, c->slot);
			return;
		}
		break;
	case MODE_IDLE:
		break;
	}
	t->c.err_msg++;
	vlog(t, "binary %s: unexpected message", c->sid);
}

static void
phone_message(struct conn *c, const uint8_t *p, size_t n)
{
	struct thr	*t = c->thr;
	struct stream	*st = c->st;
	size_t		 vs, ve;
	uint64_t	 seq, ts, now, recv;

	if (cfg.mode == MODE_STORM && c->slot->state == SL_MESSAGE &&
	    n == cfg.bytes) {
		slot_served(t, c->slot);
		return;
	}
	if (st == NULL || n != cfg.bytes ||
	    json_find(p, n, "s", &vs, &ve) != 1 ||
	    json_u64(p, n, vs, &seq) == -1 ||
	    json_find(p, n, "t", &vs, &ve) != 1 ||
	    json_u64(p, n, vs, &ts) == -1) {
		t->c.err_msg++;
		vlog(t, "phone %s: unexpected message of %zu bytes", c->sid,
		    n);
		return;
	}
	now = now_ns();
	recv = atomic_load_explicit(&st->recv, memory_order_relaxed) + 1;
	if (seq != recv)
		t->c.err_order++;
	if (t->phase == PH_MEASURE) {
		t->c.ops++;
		t->c.bytes += n;
		hist_add(&t->h, now > ts ? now - ts : 0);
	}
	if (st->src->thr == t) {
		atomic_store_explicit(&st->recv, recv, memory_order_relaxed);
		stream_try_send(t, st);
	} else {
		/* seq_cst: pairs with the sender's store to sleeping */
		atomic_store(&st->recv, recv);
		t->wake |= 1ULL << st->src->thr->id;
	}
}

/* Sends on st while its window and its --rate credits allow. */
static int
stream_try_send(struct thr *t, struct stream *st)
{
	struct conn	*c = st->src;
	uint8_t		 key[4], *d;
	size_t		 len, o;
	int		 n = 0;

	if (c->state != CS_OPEN || !sending(t))
		return 0;
	if (cfg.mode == MODE_FANOUT && st->cidlen == 0)
		return 0;
	while (st->sent - atomic_load_explicit(&st->recv,
	    memory_order_acquire) < (uint64_t)cfg.window) {
		if (cfg.rate > 0) {
			if (st->owed == 0)
				break;
			st->owed--;
		}
		st->sent++;
		if (cfg.mode == MODE_UP) {
			d = frame_begin(c, cfg.opcode, cfg.bytes, key);
			put_msg(d, cfg.bytes, st->sent, now_ns());
			ws_mask(d, cfg.bytes, key);
		} else {
			len = sizeof(ENV_HEAD) - 1 + st->cidlen +
			    sizeof(ENV_MID) - 1 + cfg.bytes + 1;
			d = frame_begin(c, cfg.opcode, len, key);
			o = sizeof(ENV_HEAD) - 1;
			memcpy(d, ENV_HEAD, o);
			memcpy(d + o, st->cid, st->cidlen);
			o += st->cidlen;
			memcpy(d + o, ENV_MID, sizeof(ENV_MID) - 1);
			o += sizeof(ENV_MID) - 1;
			put_msg(d + o, cfg.bytes, st->sent, now_ns());
			d[len - 1] = '}';
			ws_mask(d, len, key);
		}
		n++;
	}
	return n;
}

/* ---------------------------------------------------------------- claim */

static void
slot_start(struct thr *t, struct slot *s)
{
	int	 n;

	s->n++;
	if (cfg.mode == MODE_STORM) {
		t->c.attempts++;
		n = snprintf(s->bin.sid, sizeof(s->bin.sid), "%s-%d",
		    cfg.prefix, s->id);
	} else
		n = snprintf(s->bin.sid, sizeof(s->bin.sid), "%s-c%d-%llu",
		    cfg.prefix, s->id, (unsigned long long)s->n);
	if (n < 0 || (size_t)n >= sizeof(s->bin.sid)) {
		fprintf(stderr, "pyrelay-bench: server-id too long\n");
		exit(2);
	}
	memcpy(s->phone.sid, s->bin.sid, sizeof(s->phone.sid));
	s->t_start = now_ns();
	s->state = SL_BINARY;
	conn_connect(t, &s->bin);
}

static void
slot_fail(struct slot *s)
{
	struct thr	*t = s->bin.thr;
	uint64_t	 w;

	if (s->state == SL_BACKOFF || s->state == SL_IDLE)
		return;
	if (s->state == SL_SERVED) {
		t->c.relost++;
		atomic_fetch_sub(&g_served, 1);
		s->backoff = 0;
	}
	s->state = SL_BACKOFF;
	if (cfg.mode == MODE_STORM) {
		/*
		 * Like a binary: exponential backoff from 100 ms to 5 s,
		 * each wait drawn from its upper half so that the retries
		 * of a storm spread out.
		 */
		w = s->backoff ? s->backoff * 2 : STORM_BACKOFF_MIN_NS;
		if (w > STORM_BACKOFF_MAX_NS)
			w = STORM_BACKOFF_MAX_NS;
		s->backoff = w;
		s->t_retry = t->now + w / 2 + rng_next(&t->rng) % (w / 2);
	} else
		s->t_retry = t->now + BACKOFF_NS;
	conn_kill(&s->phone);
	conn_kill(&s->bin);
}

static void
slot_done(struct thr *t, struct slot *s)
{
	uint64_t	 now = now_ns();

	if (t->phase == PH_MEASURE) {
		t->c.ops++;
		hist_add(&t->h, now - s->t_start);
	}
	s->state = SL_IDLE;
	conn_close(&s->phone, 1000);
	conn_close(&s->bin, 1000);
}

/* storm: the phone got its message back through the binary. */
static void
slot_served(struct thr *t, struct slot *s)
{
	uint64_t	 now = now_ns();

	s->state = SL_SERVED;
	hist_add(&t->h, now > g_storm_t0 ? now - g_storm_t0 : 0);
	atomic_fetch_add(&g_served, 1);
}

/* ---------------------------------------------------------------- loop */

/* Everything due now: connects, --rate ticks, fanout sends, claims. */
static int
thr_pump(struct thr *t)
{
	struct stream	*st;
	struct slot	*s;
	uint64_t	 lag;
	int		 i, n = 0, batch = 0;

	if (t->phase == PH_BINARIES) {
		while (t->next_conn < t->nbinaries &&
		    t->inflight < cfg.connects) {
			t->inflight++;
			conn_connect(t, t->conns[t->next_conn++]);
		}
	} else if (t->phase == PH_PHONES) {
		while (t->next_conn < t->nconns &&
		    t->inflight < cfg.connects) {
			t->inflight++;
			conn_connect(t, t->conns[t->next_conn++]);
		}
	}
	if (!sending(t))
		return 0;
	if (cfg.rate > 0 && t->nstreams > 0) {
		while (t->tick_next <= t->now && batch++ < MAX_BATCH) {
			lag = t->now - t->tick_next;
			if (t->phase == PH_MEASURE) {
				if (lag > LATE_NS)
					t->c.late++;
				if (lag > t->c.lag_max)
					t->c.lag_max = lag;
			}
			st = t->streams[t->tick_k % (uint64_t)t->nstreams];
			st->owed++;
			n += stream_try_send(t, st);
			t->tick_k++;
			t->tick_next = t->tick0 +
			    (uint64_t)((double)t->tick_k * t->tick_ns);
		}
	}
	if (cfg.mode == MODE_FANOUT)
		for (i = 0; i < t->nstreams; i++)
			n += stream_try_send(t, t->streams[i]);
	if (cfg.mode == MODE_CLAIM || cfg.mode == MODE_STORM) {
		for (i = 0; i < t->nslots; i++) {
			s = &t->slots[i];
			if (s->state == SL_IDLE ||
			    (s->state == SL_BACKOFF && s->t_retry <= t->now))
				slot_start(t, s);
		}
	}
	return n;
}

static void
thr_flush(struct thr *t)
{
	struct conn	*c;
	int		 i;

	for (i = 0; i < t->nflush; i++) {
		c = t->flush[i];
		c->dirty = 0;
		conn_flush(c);
	}
	t->nflush = 0;
}

/* Handshakes and claim cycles that take longer than -T fail. */
static void
thr_sweep(struct thr *t)
{
	struct conn	*c;
	struct slot	*s;
	int		 i;

	t->next_sweep = t->now + SWEEP_NS;
	for (i = 0; i < t->nconns; i++) {
		c = t->conns[i];
		if ((c->state == CS_CONNECTING || c->state == CS_HANDSHAKE) &&
		    t->now - c->t_start > cfg.timeout_ns) {
			t->c.err_timeout++;
			vlog(t, "%s: no 101 within the timeout", c->sid);
			conn_fail(c);
		}
	}
	for (i = 0; i < t->nslots; i++) {
		s = &t->slots[i];
		if (s->state != SL_IDLE && s->state != SL_BACKOFF &&
		    s->state != SL_SERVED &&
		    t->now - s->t_start > cfg.timeout_ns) {
			t->c.err_timeout++;
			vlog(t, "%s: claim cycle timed out", s->bin.sid);
			slot_fail(s);
		}
	}
}

static void
thr_phase(struct thr *t, enum phase ph)
{
	struct conn	*c;
	uint8_t		 key[4], *p;
	char		 hello[40];
	int		 i, n, was_sending = sending(t);

	t->phase = ph;
	if (ph == PH_MEASURE)
		/* a backlog from the warm-up would inflate the paced rate */
		for (i = 0; i < t->nstreams; i++)
			t->streams[i]->owed = 0;
	if (ph == PH_HELLO) {
		/* the binary learns each phone's conn id from this */
		for (i = t->nbinaries; i < t->nconns; i++) {
			c = t->conns[i];
			if (c->state != CS_OPEN || c->st == NULL)
				continue;
			n = snprintf(hello, sizeof(hello), "{\"hello\":%d}",
			    (int)(c->st - c->srv->streams));
			p = frame_begin(c, OP_TEXT, (size_t)n, key);
			memcpy(p, hello, (size_t)n);
			ws_mask(p, (size_t)n, key);
		}
	}
	if (!sending(t) || was_sending)
		return;
	/* traffic starts */
	if (cfg.rate > 0) {
		t->tick0 = t->now + (uint64_t)(t->tick_ns * t->id / g_nthr);
		t->tick_k = 0;
		t->tick_next = t->tick0;
	} else if (cfg.mode == MODE_UP) {
		for (i = 0; i < t->nstreams; i++)
			stream_try_send(t, t->streams[i]);
	}
}

/* Counts what is still open, then closes everything with 1000. */
static void
thr_stop(struct thr *t)
{
	int	 i;

	t->pings_min = UINT64_MAX;
	for (i = 0; i < t->nconns; i++) {
		if (t->conns[i]->state == CS_OPEN) {
			t->open_at_end++;
			if (t->conns[i]->pings < t->pings_min)
				t->pings_min = t->conns[i]->pings;
		}
		conn_close(t->conns[i], 1000);
	}
	for (i = 0; i < t->nslots; i++) {
		if (t->slots[i].state == SL_SERVED)
			t->open_at_end++;
		t->slots[i].state = SL_IDLE;
		conn_close(&t->slots[i].phone, 1000);
		conn_close(&t->slots[i].bin, 1000);
	}
}

static void
thr_wake_others(struct thr *t)
{
	int	 i;

	for (i = 0; t->wake != 0 && i < g_nthr; i++) {
		if (!(t->wake & (1ULL << i)))
			continue;
		t->wake &= ~(1ULL << i);
		if (atomic_load(&g_thr[i].sleeping) &&
		    atomic_exchange(&g_thr[i].sleeping, 0))
			thr_kick(&g_thr[i]);
	}
}

void *
thr_main(void *arg)
{
	struct thr		*t = arg;
	struct epoll_event	 ev[NEVENTS];
	struct timespec		 ts;
	uint64_t		 deadline, drain;
	enum phase		 ph;
	int			 i, n, fanout_sender;

	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	fanout_sender = cfg.mode == MODE_FANOUT && t->nstreams > 0;
	t->now = now_ns();
	t->next_sweep = t->now + SWEEP_NS;
	for (;;) {
		ph = (enum phase)atomic_load(&g_phase);
		if (ph != t->phase) {
			if (ph == PH_STOP)
				break;
			thr_phase(t, ph);
		}
		thr_pump(t);
		thr_flush(t);

		deadline = t->next_sweep;
		if (cfg.rate > 0 && t->nstreams > 0 && sending(t) &&
		    t->tick_next < deadline)
			deadline = t->tick_next;
		if (cfg.mode == MODE_CLAIM || cfg.mode == MODE_STORM)
			for (i = 0; i < t->nslots; i++)
				if (t->slots[i].state == SL_BACKOFF &&
				    t->slots[i].t_retry < deadline)
					deadline = t->slots[i].t_retry;
		if (fanout_sender) {
			/* Dekker with thr_wake_others(): flag, then recheck */
			atomic_store(&t->sleeping, 1);
			if (thr_pump(t) > 0) {
				thr_flush(t);
				deadline = 0;
			}
		}
		t->now = now_ns();
		deadline = deadline > t->now ? deadline - t->now : 0;
		ts.tv_sec = (time_t)(deadline / 1000000000ULL);
		ts.tv_nsec = (long)(deadline % 1000000000ULL);
		n = epoll_pwait2(t->epfd, ev, NEVENTS, &ts, NULL);
		if (fanout_sender)
			atomic_store(&t->sleeping, 0);
		if (n == -1 && errno != EINTR) {
			perror("pyrelay-bench: epoll_pwait2");
			exit(2);
		}
		t->now = now_ns();
		for (i = 0; i < n; i++) {
			if (ev[i].data.ptr == NULL) {
				if (read(t->evfd, &drain, sizeof(drain)) ==
				    -1 && errno != EAGAIN)
					vlog(t, "eventfd: %s",
					    strerror(errno));
				continue;
			}
			conn_event(ev[i].data.ptr, ev[i].events);
		}
		if (t->wake != 0)
			thr_wake_others(t);
		if (t->now >= t->next_sweep)
			thr_sweep(t);
	}
	t->phase = PH_STOP;
	thr_stop(t);
	return NULL;
}
