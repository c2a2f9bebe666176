/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#include "config.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "json.h"
#include "pyrelayd.h"
#include "ws.h"

/* Fixed reasons (docs/protocol.md §8): never echo client input. */
#define REASON_PROTOCOL		"protocol error"
#define REASON_TOO_BIG		"message too big"
#define REASON_UTF8		"invalid UTF-8"

/* A reassembly buffer this large or more is given back once it is done. */
#define MSG_KEEP		16384
/*
 * The output buffer's first size: a 101 and a small frame fit, and with
 * the relay allocator's header it is one of its blocks (relay_alloc.c).
 */
#define OBUF_FIRST		240

/*
 * Where buffers come from: glibc's malloc, or the relay's allocator
 * (relay_alloc.c), which a relay sets before its first connection.
 */
static void	*(*ws_realloc)(void *, size_t) = realloc;
static void	 (*ws_free_fn)(void *) = free;

void
ws_set_allocator(void *(*re)(void *, size_t), void (*fr)(void *))
{
	ws_realloc = re;
	ws_free_fn = fr;
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
	if (n > SIZE_MAX - o->len)
		return -1;
	need = o->len + n;
	ncap = o->cap ? o->cap : OBUF_FIRST;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return -1;
		ncap *= 2;
	}
	if ((p = ws_realloc(o->buf, ncap)) == NULL)
		return -1;
	o->buf = p;
	o->cap = ncap;
	return 0;
}

static int
obuf_append(struct ws_obuf *o, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	if (obuf_reserve(o, len) == -1)
		return -1;
	memcpy(o->buf + o->len, data, len);
	o->len += len;
	o->appended += len;
	return 0;
}

int
ws_init(struct ws *ws, uint64_t max_msg)
{
	memset(ws, 0, sizeof(*ws));
	ws->max_msg = max_msg;
	return 0;
}

void
ws_free(struct ws *ws)
{
	ws_free_fn(ws->out.buf);
	ws_free_fn(ws->out.ends);
	ws_free_fn(ws->msg);
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
		if (ncap > SIZE_MAX / sizeof(*p) ||
		    (p = ws_realloc(NULL, ncap * sizeof(*p))) == NULL)
			return -1;
		/* unroll the ring into the new array */
		for (i = 0; i < o->ends_count; i++)
			p[i] = o->ends[(o->ends_head + i) % o->ends_cap];
		ws_free_fn(o->ends);
		o->ends = p;
		o->ends_head = 0;
		o->ends_cap = ncap;
	}
	o->ends[(o->ends_head + o->ends_count) % o->ends_cap] = o->appended;
	o->ends_count++;
	return 0;
}

/* Writes a frame header for an unmasked server frame; returns its length. */
static size_t
ws_frame_header(unsigned char *h, uint8_t op, uint64_t len)
{
	size_t	n = 0;
	int	i;

	h[n++] = 0x80 | op;
	if (len < 126)
		h[n++] = len;
	else if (len < 65536) {
		h[n++] = 126;
		h[n++] = len >> 8;
		h[n++] = len & 0xff;
	} else {
		h[n++] = 127;
		for (i = 7; i >= 0; i--)
			h[n++] = (len >> (8 * i)) & 0xff;
	}
	return n;
}

static int
ws_frame(struct ws *ws, uint8_t op, const void *a, size_t alen,
    const void *b, size_t blen, const void *c, size_t clen)
{
	unsigned char	 h[10];
	size_t		 hlen, total = alen + blen + clen;

	hlen = ws_frame_header(h, op, total);
	/* one reservation for the whole frame, so the appends cannot fail */
	if (total > SIZE_MAX - hlen || obuf_reserve(&ws->out, hlen + total) == -1)
		return -1;
	obuf_append(&ws->out, h, hlen);
	obuf_append(&ws->out, a, alen);
	obuf_append(&ws->out, b, blen);
	obuf_append(&ws->out, c, clen);
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
	return obuf_append(&ws->out, data, len);
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
		/*
		 * All written, every message's end with it: a connection
		 * keeps buffers only while it has unfinished output.
		 */
		o->off = o->len = 0;
		ws_free_fn(o->buf);
		o->buf = NULL;
		o->cap = 0;
		ws_free_fn(o->ends);
		o->ends = NULL;
		o->ends_cap = o->ends_head = 0;
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
		if ((p = ws_realloc(ws->msg, ncap)) == NULL)
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
		ws_free_fn(ws->msg);
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

void
ws_unmask(unsigned char *p, size_t len, const unsigned char key[4], size_t koff)
{
	unsigned char	k[8];
	uint64_t	km, w;
	size_t		i;

	for (i = 0; i < 8; i++)
		k[i] = key[(koff + i) & 3];
	memcpy(&km, k, sizeof(km));
	i = 0;
#ifdef __SSE2__
	/* sixteen bytes at a time: the key's phase repeats every 4 bytes */
	{
		const __m128i	kx = _mm_set1_epi64x((long long)km);
		__m128i		x;

		for (; i + 16 <= len; i += 16) {
			x = _mm_loadu_si128((const __m128i *)(void *)(p + i));
			_mm_storeu_si128((__m128i *)(void *)(p + i),
			    _mm_xor_si128(x, kx));
		}
	}
#endif
	/* eight bytes at a time; memcpy keeps unaligned loads defined */
	for (; i + 8 <= len; i += 8) {
		memcpy(&w, p + i, sizeof(w));
		w ^= km;
		memcpy(p + i, &w, sizeof(w));
	}
	for (; i < len; i++)
		p[i] ^= k[i & 7];
}

/*
 * Decodes a client frame header from p[0..n).  Returns its length, 0 when
 * more bytes are needed, -1 when it breaks RFC 6455 §5.2: a reserved bit
 * set (no extension is agreed), no mask (§5.1), a length not in its
 * shortest form or with the top bit set.
 */
static int
ws_header(struct ws *ws, const unsigned char *p, size_t n)
{
	size_t		need = 6, i;
	uint64_t	len;

	if (n < 2)
		return 0;
	if ((p[0] & 0x70) != 0 || (p[1] & 0x80) == 0)
		return -1;
	len = p[1] & 0x7f;
	if (len == 126)
		need += 2;
	else if (len == 127)
		need += 8;
	if (n < need)
		return 0;
	if (len == 126) {
		len = (p[2] << 8) | p[3];
		if (len < 126)
			return -1;
	} else if (len == 127) {
		for (len = 0, i = 2; i < 10; i++)
			len = (len << 8) | p[i];
		if (len < 65536 || (len >> 63) != 0)
			return -1;
	}
	ws->fop = p[0] & 0x0f;
	ws->ffin = (p[0] & 0x80) != 0;
	ws->flen = len;
	ws->foff = 0;
	memcpy(ws->fmask, p + need - 4, 4);
	return need;
}

/* The header of a frame is decoded: checks it against the message state. */
static int
ws_frame_start(struct ws *ws, const struct ws_handler *h, void *arg)
{
	if (ws->fop >= 0x8) {
		if (ws->fop != WS_OP_CLOSE && ws->fop != WS_OP_PING &&
		    ws->fop != WS_OP_PONG)
			return ws_fail(ws, 1002, REASON_PROTOCOL);
		/* §5.5: control frames are short and never fragmented */
		if (!ws->ffin || ws->flen > sizeof(ws->ctrl))
			return ws_fail(ws, 1002, REASON_PROTOCOL);
		return 0;
	}
	if (ws->fop == WS_OP_CONT) {
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
	/* checked before any byte is buffered: 2^62 announced allocates nothing */
	if (ws->flen > ws->max_msg || ws->msglen + ws->flen > ws->max_msg)
		return ws_fail(ws, 1009, REASON_TOO_BIG);
	return 0;
}

/* A data message is complete in buf[0..len). */
static int
ws_message_done(struct ws *ws, unsigned char *buf, size_t len,
    const struct ws_handler *h, void *arg)
{
	static unsigned char	empty[1];
	int			r = 0;

	if (ws->close_sent)
		;	/* after our close, data is discarded */
	else if (ws->msgop == WS_OP_TEXT && h->text != NULL) {
		if (h->text(arg, len ? buf : empty, len) == -1)
			r = ws_fail(ws, 1007, REASON_UTF8);
	} else if (ws->msgop == WS_OP_TEXT && !utf8_valid(buf, len))
		r = ws_fail(ws, 1007, REASON_UTF8);
	else
		h->message(arg, ws->msgop == WS_OP_BINARY, len ? buf : empty, len);
	/* buf may be ws->msg: reset only now */
	ws_msg_reset(ws);
	return r;
}

int
ws_feed(struct ws *ws, unsigned char *data, size_t len,
    const struct ws_handler *h, void *arg)
{
	size_t	n, have;
	int	hl, r;

	if (ws->failed || ws->close_rcvd)
		return 0;
	for (;;) {
		if (!ws->in_frame) {
			if (len == 0)
				break;
			if (ws->hdrlen == 0) {
				if ((hl = ws_header(ws, data, len)) == 0) {
					/* a header is at most 14 bytes: keep the part */
					memcpy(ws->hdr, data, len);
					ws->hdrlen = len;
					break;
				}
			} else {
				/* a header split across reads */
				have = ws->hdrlen;
				n = sizeof(ws->hdr) - have;
				if (n > len)
					n = len;
				memcpy(ws->hdr + have, data, n);
				if ((hl = ws_header(ws, ws->hdr, have + n)) == 0) {
					ws->hdrlen += n;
					break;
				}
				if (hl > 0) {
					ws->hdrlen = 0;
					hl -= have;
				}
			}
			if (hl < 0)
				return ws_fail(ws, 1002, REASON_PROTOCOL);
			data += hl;
			len -= hl;
			ws->in_frame = 1;
			if ((r = ws_frame_start(ws, h, arg)) != 0)
				return r;
			/* a whole one-frame message is used where it lies */
			if (ws->fop != WS_OP_CONT && ws->fop < 0x8 && ws->ffin &&
			    ws->flen <= len) {
				n = ws->flen;
				ws_unmask(data, n, ws->fmask, 0);
				ws->in_frame = 0;
				if ((r = ws_message_done(ws, data, n, h, arg)) != 0)
					return r;
				data += n;
				len -= n;
				if (ws->failed)
					break;
				continue;
			}
		}
		n = ws->flen - ws->foff < len ? ws->flen - ws->foff : len;
		ws_unmask(data, n, ws->fmask, ws->foff & 3);
		if (ws->fop >= 0x8)
			memcpy(ws->ctrl + ws->foff, data, n);
		else if (!ws->close_sent && ws_msg_append(ws, data, n) == -1)
			return ws_fail(ws, 1011, "out of memory");
		ws->foff += n;
		data += n;
		len -= n;
		if (ws->foff < ws->flen)
			break;		/* len is 0: wait for the rest */
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
		if ((r = ws_message_done(ws, ws->msg, ws->msglen, h, arg)) != 0)
			return r;
		if (ws->failed)
			break;
	}
	return 0;
}
