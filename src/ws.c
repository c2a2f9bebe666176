/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#include "config.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "pyrelayd.h"
#include "ws.h"

/* Fixed reasons (protocol.md §8): never echo client input. */
#define REASON_PROTOCOL		"protocol error"
#define REASON_TOO_BIG		"message too big"
#define REASON_UTF8		"invalid UTF-8"

/* A buffer this large or more is given back once it drains. */
#define OBUF_KEEP		16384
#define MSG_KEEP		16384

static ssize_t
ws_recv_cb(uint8_t *buf, size_t len, int flags, void *arg)
{
	struct ws	*ws = arg;
	size_t		 n;

	if (ws->inlen == 0)
		return -1;	/* wslay turns this into WSLAY_ERR_WANT_READ */
	n = len < ws->inlen ? len : ws->inlen;
	memcpy(buf, ws->in, n);
	ws->in += n;
	ws->inlen -= n;
	return n;
}

static int
obuf_reserve(struct ws_obuf *o, size_t n)
{
	size_t	 need, ncap;
	void	*p;

	if (o->cap - o->len >= n)
		return 0;
	/* slide the unsent part to the front before growing */
	if (o->off > 0) {
		memmove(o->buf, o->buf + o->off, o->len - o->off);
		o->len -= o->off;
		o->off = 0;
		if (o->cap - o->len >= n)
			return 0;
	}
	need = o->len + n;
	ncap = o->cap ? o->cap : 1024;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return -1;
		ncap *= 2;
	}
	if ((p = realloc(o->buf, ncap)) == NULL)
		return -1;
	o->buf = p;
	o->cap = ncap;
	return 0;
}

static ssize_t
ws_send_cb(const uint8_t *data, size_t len, int flags, void *arg)
{
	struct ws	*ws = arg;
	struct ws_obuf	*o = &ws->out;

	if (obuf_reserve(o, len) == -1)
		return -1;
	memcpy(o->buf + o->len, data, len);
	o->len += len;
	o->appended += len;
	return len;
}

static int
ws_genmask_cb(uint8_t *buf, size_t len, void *arg)
{
	/* server frames are never masked */
	return -1;
}

int
ws_init(struct ws *ws, uint64_t max_msg)
{
	struct wslay_frame_callbacks cb = {
		.send_callback = ws_send_cb,
		.recv_callback = ws_recv_cb,
		.genmask_callback = ws_genmask_cb,
	};

	memset(ws, 0, sizeof(*ws));
	ws->max_msg = max_msg;
	if (wslay_frame_context_init(&ws->fctx, &cb, ws) != 0)
		return -1;
	return 0;
}

void
ws_free(struct ws *ws)
{
	if (ws->fctx != NULL)
		wslay_frame_context_free(ws->fctx);
	free(ws->out.buf);
	free(ws->out.ends);
	free(ws->msg);
	memset(ws, 0, sizeof(*ws));
}

/* Records that a message ends at the current end of the stream. */
static int
obuf_mark_end(struct ws_obuf *o)
{
	uint64_t	*p;
	size_t		 i, ncap;

	if (o->ends_count == o->ends_cap) {
		ncap = o->ends_cap ? o->ends_cap * 2 : 8;
		if ((p = reallocarray(NULL, ncap, sizeof(*p))) == NULL)
			return -1;
		/* unroll the ring into the new array */
		for (i = 0; i < o->ends_count; i++)
			p[i] = o->ends[(o->ends_head + i) % o->ends_cap];
		free(o->ends);
		o->ends = p;
		o->ends_head = 0;
		o->ends_cap = ncap;
	}
	o->ends[(o->ends_head + o->ends_count) % o->ends_cap] = o->appended;
	o->ends_count++;
	return 0;
}

static int
ws_frame(struct ws *ws, uint8_t op, const void *a, size_t alen,
    const void *b, size_t blen, const void *c, size_t clen)
{
	struct wslay_frame_iocb	 iocb;
	const void		*piece[3] = { a, b, c };
	size_t			 plen[3] = { alen, blen, clen };
	size_t			 total = alen + blen + clen;
	int			 i;

	memset(&iocb, 0, sizeof(iocb));
	iocb.fin = 1;
	iocb.opcode = op;
	iocb.payload_length = total;
	if (obuf_reserve(&ws->out, total + 14) == -1)
		return -1;
	if (total == 0) {
		if (wslay_frame_send(ws->fctx, &iocb) < 0)
			return -1;
	}
	for (i = 0; i < 3; i++) {
		if (plen[i] == 0)
			continue;
		iocb.data = piece[i];
		iocb.data_length = plen[i];
		/* our send callback takes everything, so one call per piece */
		if (wslay_frame_send(ws->fctx, &iocb) != (ssize_t)plen[i])
			return -1;
	}
	return obuf_mark_end(&ws->out);
}

int
ws_send_text(struct ws *ws, const void *a, size_t alen, const void *b,
    size_t blen, const void *c, size_t clen)
{
	if (ws->close_sent)
		return -1;
	return ws_frame(ws, WS_OP_TEXT, a, alen, b, blen, c, clen);
}

int
ws_send_raw(struct ws *ws, const void *data, size_t len)
{
	if (ws_send_cb(data, len, 0, ws) != (ssize_t)len)
		return -1;
	return 0;
}

int
ws_send_ping(struct ws *ws)
{
	if (ws->close_sent)
		return -1;
	return ws_frame(ws, WS_OP_PING, NULL, 0, NULL, 0, NULL, 0);
}

static int
ws_send_pong(struct ws *ws, const unsigned char *data, size_t len)
{
	if (ws->close_sent)
		return -1;
	return ws_frame(ws, WS_OP_PONG, data, len, NULL, 0, NULL, 0);
}

int
ws_send_close(struct ws *ws, uint16_t code, const char *reason)
{
	unsigned char	 payload[125];
	size_t		 rlen = 0;
	uint16_t	 ncode;

	if (ws->close_sent)
		return -1;
	ws->close_sent = 1;
	if (code == 0)
		return ws_frame(ws, WS_OP_CLOSE, NULL, 0, NULL, 0, NULL, 0);
	ncode = htons(code);
	memcpy(payload, &ncode, 2);
	if (reason != NULL) {
		rlen = strlen(reason);
		if (rlen > sizeof(payload) - 2)
			rlen = sizeof(payload) - 2;
		memcpy(payload + 2, reason, rlen);
	}
	return ws_frame(ws, WS_OP_CLOSE, payload, 2 + rlen, NULL, 0, NULL, 0);
}

size_t
ws_close_frame(unsigned char *out, size_t outsz, uint16_t code,
    const char *reason)
{
	size_t	rlen = reason ? strlen(reason) : 0;

	if (rlen > 123)
		rlen = 123;
	if (outsz < 4 + rlen)
		return 0;
	out[0] = 0x80 | WS_OP_CLOSE;
	out[1] = 2 + rlen;
	out[2] = code >> 8;
	out[3] = code & 0xff;
	memcpy(out + 4, reason, rlen);
	return 4 + rlen;
}

int
ws_code_sendable(int code)
{
	/* RFC 6455 §7.4: 1004-1006 and 1015 are reserved, 1016-2999 unassigned */
	if (code >= 1000 && code <= 1003)
		return 1;
	if (code >= 1007 && code <= 1014)
		return 1;
	if (code >= 3000 && code <= 4999)
		return 1;
	return 0;
}

size_t
ws_pending(const struct ws *ws)
{
	return ws->out.len - ws->out.off;
}

size_t
ws_cost(const struct ws *ws)
{
	return ws_pending(ws) + WS_MSG_OVERHEAD * ws->out.ends_count;
}

ssize_t
ws_write(struct ws *ws, int fd)
{
	struct ws_obuf	*o = &ws->out;
	ssize_t		 n;
	uint64_t	 written;

	if (o->len == o->off)
		return 0;
	n = send(fd, o->buf + o->off, o->len - o->off, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return 0;
		return -1;
	}
	o->off += n;
	written = o->appended - (o->len - o->off);
	while (o->ends_count > 0 && o->ends[o->ends_head] <= written) {
		o->ends_head = (o->ends_head + 1) % o->ends_cap;
		o->ends_count--;
	}
	if (o->off == o->len) {
		o->off = o->len = 0;
		/* an idle connection keeps no large buffer */
		if (o->cap >= OBUF_KEEP) {
			free(o->buf);
			o->buf = NULL;
			o->cap = 0;
		}
	}
	return n;
}

/* Marks a protocol failure: queue the close and stop. */
static int
ws_fail(struct ws *ws, uint16_t code, const char *reason)
{
	ws->failed = 1;
	ws_send_close(ws, code, reason);
	return code;
}

static int
ws_msg_append(struct ws *ws, const unsigned char *data, size_t len)
{
	size_t	 ncap;
	void	*p;

	if (len == 0)
		return 0;
	if (ws->msgcap - ws->msglen < len) {
		ncap = ws->msgcap ? ws->msgcap : 1024;
		while (ncap < ws->msglen + len)
			ncap *= 2;
		if ((p = realloc(ws->msg, ncap)) == NULL)
			return -1;
		ws->msg = p;
		ws->msgcap = ncap;
	}
	memcpy(ws->msg + ws->msglen, data, len);
	ws->msglen += len;
	return 0;
}

static void
ws_msg_reset(struct ws *ws)
{
	ws->msgop = 0;
	ws->msglen = 0;
	if (ws->msgcap > MSG_KEEP) {
		free(ws->msg);
		ws->msg = NULL;
		ws->msgcap = 0;
	}
}

/* A control frame is complete in ws->ctrl[0..flen). */
static int
ws_control(struct ws *ws, const struct ws_handler *h, void *arg)
{
	uint16_t	code;
	size_t		len = ws->flen;

	switch (ws->fop) {
	case WS_OP_PING:
		ws_send_pong(ws, ws->ctrl, len);
		break;
	case WS_OP_PONG:
		if (h->pong)
			h->pong(arg);
		break;
	case WS_OP_CLOSE:
		if (len == 1)
			return ws_fail(ws, 1002, REASON_PROTOCOL);
		code = 1005;
		if (len >= 2) {
			code = (ws->ctrl[0] << 8) | ws->ctrl[1];
			/* RFC 6455 §7.4.1: codes a peer may not send */
			if (!ws_code_sendable(code))
				return ws_fail(ws, 1002, REASON_PROTOCOL);
			if (!utf8_valid(ws->ctrl + 2, len - 2))
				return ws_fail(ws, 1007, REASON_UTF8);
		}
		ws->close_rcvd = 1;
		ws->close_code_rcvd = code;
		/* echo the code (RFC 6455 §5.5.1) unless we closed first */
		if (!ws->close_sent)
			ws_send_close(ws, code == 1005 ? 0 : code, NULL);
		if (h->close)
			h->close(arg, code);
		break;
	}
	return 0;
}

int
ws_feed(struct ws *ws, const unsigned char *data, size_t len,
    const struct ws_handler *h, void *arg)
{
	struct wslay_frame_iocb	iocb;
	ssize_t			r;
	int			ctrl;

	if (ws->failed || ws->close_rcvd)
		return 0;
	ws->in = data;
	ws->inlen = len;
	for (;;) {
		memset(&iocb, 0, sizeof(iocb));
		r = wslay_frame_recv(ws->fctx, &iocb);
		if (r == WSLAY_ERR_WANT_READ)
			break;
		if (r < 0)
			return ws_fail(ws, 1002, REASON_PROTOCOL);
		if (!ws->in_frame) {
			/* first chunk of a frame: check its header */
			ws->in_frame = 1;
			ws->fop = iocb.opcode;
			ws->ffin = iocb.fin;
			ws->flen = iocb.payload_length;
			ws->foff = 0;
			/* clients must mask (RFC 6455 §5.1); no extension is agreed */
			if (!iocb.mask || iocb.rsv != 0)
				return ws_fail(ws, 1002, REASON_PROTOCOL);
			ctrl = ws->fop >= 0x8;
			if (ctrl) {
				if (ws->fop != WS_OP_CLOSE && ws->fop != WS_OP_PING &&
				    ws->fop != WS_OP_PONG)
					return ws_fail(ws, 1002, REASON_PROTOCOL);
			} else if (ws->fop == WS_OP_CONT) {
				if (ws->msgop == 0)
					return ws_fail(ws, 1002, REASON_PROTOCOL);
			} else if (ws->fop == WS_OP_TEXT || ws->fop == WS_OP_BINARY) {
				if (ws->msgop != 0)
					return ws_fail(ws, 1002, REASON_PROTOCOL);
				ws->msgop = ws->fop;
				ws->msglen = 0;
				if (h->message_start)
					h->message_start(arg);
			} else
				return ws_fail(ws, 1002, REASON_PROTOCOL);
			if (!ctrl && ws->msglen + ws->flen > ws->max_msg)
				return ws_fail(ws, 1009, REASON_TOO_BIG);
		}
		if (ws->fop >= 0x8)
			memcpy(ws->ctrl + ws->foff, iocb.data, iocb.data_length);
		else if (!ws->close_sent &&
		    ws_msg_append(ws, iocb.data, iocb.data_length) == -1)
			return ws_fail(ws, 1011, "out of memory");
		ws->foff += iocb.data_length;
		if (ws->foff < ws->flen)
			continue;
		/* frame complete */
		ws->in_frame = 0;
		if (ws->fop >= 0x8) {
			if ((r = ws_control(ws, h, arg)) != 0)
				return r;
			if (ws->close_rcvd)
				break;
			continue;
		}
		if (!ws->ffin)
			continue;
		/* message complete */
		if (!ws->close_sent) {
			if (ws->msgop == WS_OP_TEXT &&
			    !utf8_valid(ws->msg, ws->msglen)) {
				ws_msg_reset(ws);
				return ws_fail(ws, 1007, REASON_UTF8);
			}
			h->message(arg, ws->msgop == WS_OP_BINARY,
			    ws->msglen ? ws->msg : (const unsigned char *)"",
			    ws->msglen);
		}
		ws_msg_reset(ws);
		if (ws->failed)
			break;
	}
	ws->in = NULL;
	ws->inlen = 0;
	return 0;
}
