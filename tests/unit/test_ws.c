/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * ws.c driven by scripted byte buffers: framing, reassembly, limits, UTF-8,
 * control frames, the close handshake and output cost accounting; the frame
 * codec: every header form, unmasking, input split at any offset.
 */
#include "config.h"

#include <sys/socket.h>

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "ws.h"

struct seen {
	int		 messages;
	int		 binary;
	unsigned char	 last[4096];
	size_t		 last_len;
	int		 pongs;
	int		 closes;
	uint16_t	 close_code;
	int		 starts;
	const unsigned char *last_ptr;	/* where the handler got the bytes */
	uint32_t	 sum;		/* FNV-1a of the last whole message */
};

static void
on_message(void *arg, int binary, unsigned char *buf, size_t len)
{
	struct seen	*s = arg;

	size_t		 i;

	s->messages++;
	s->binary = binary;
	s->last_ptr = buf;
	s->sum = 2166136261u;
	for (i = 0; i < len; i++)
		s->sum = (s->sum ^ buf[i]) * 16777619u;
	s->last_len = len < sizeof(s->last) ? len : sizeof(s->last);
	memcpy(s->last, buf, s->last_len);
}

static void
on_pong(void *arg)
{
	((struct seen *)arg)->pongs++;
}

static void
on_close(void *arg, uint16_t code)
{
	struct seen	*s = arg;

	s->closes++;
	s->close_code = code;
}

static void
on_start(void *arg)
{
	((struct seen *)arg)->starts++;
}

static const struct ws_handler handler = {
	.message = on_message,
	.pong = on_pong,
	.close = on_close,
	.message_start = on_start,
};

/* A handler that takes text unchecked (ws_handler.text). */
static int	text_verdict;
static int	texts;

static int
on_text(void *arg, unsigned char *buf, size_t len)
{
	texts++;
	on_message(arg, 0, buf, len);
	return text_verdict;
}

static const struct ws_handler text_handler = {
	.message = on_message,
	.pong = on_pong,
	.close = on_close,
	.message_start = on_start,
	.text = on_text,
};

/* Builds one client frame (masked unless mask == 0) into out. */
static size_t
client_frame(unsigned char *out, int fin, int op, const void *payload,
    size_t len, int mask)
{
	const unsigned char	 key[4] = { 0x12, 0x34, 0x56, 0x78 };
	const unsigned char	*p = payload;
	size_t			 n = 0, i;

	out[n++] = (fin ? 0x80 : 0) | op;
	if (len < 126)
		out[n++] = (mask ? 0x80 : 0) | len;
	else if (len < 65536) {
		out[n++] = (mask ? 0x80 : 0) | 126;
		out[n++] = len >> 8;
		out[n++] = len & 0xff;
	} else {
		out[n++] = (mask ? 0x80 : 0) | 127;
		for (i = 0; i < 8; i++)
			out[n++] = ((uint64_t)len >> (56 - 8 * i)) & 0xff;
	}
	if (mask) {
		memcpy(out + n, key, 4);
		n += 4;
	}
	for (i = 0; i < len; i++)
		out[n++] = mask ? p[i] ^ key[i % 4] : p[i];
	return n;
}

/* The close frame ws queued: code and reason. */
static void
queued_close(struct ws *ws, uint16_t *code, char *reason, size_t rsz)
{
	const unsigned char	*b = ws->out.buf + ws->out.off;
	size_t			 len = ws->out.len - ws->out.off, i = 0, plen;

	*code = 0;
	reason[0] = '\0';
	/* skip frames until the close */
	while (i + 2 <= len) {
		plen = b[i + 1] & 0x7f;
		if ((b[i] & 0x0f) == 0x8) {
			if (plen >= 2) {
				*code = (b[i + 2] << 8) | b[i + 3];
				memcpy(reason, b + i + 4, plen - 2 < rsz - 1 ?
				    plen - 2 : rsz - 1);
				reason[plen - 2 < rsz - 1 ? plen - 2 : rsz - 1] = '\0';
			}
			return;
		}
		i += 2 + plen;
	}
}

static void
test_text_message(void)
{
	struct ws	ws;
	struct seen	s = { 0 };
	unsigned char	f[256];
	size_t		n;

	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	n = client_frame(f, 1, WS_OP_TEXT, "{\"a\":1}", 7, 1);
	CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &handler, &s), 0);
	CU_ASSERT_EQUAL(s.messages, 1);
	CU_ASSERT_EQUAL(s.binary, 0);
	CU_ASSERT_EQUAL(s.last_len, 7);
	CU_ASSERT(memcmp(s.last, "{\"a\":1}", 7) == 0);
	CU_ASSERT_EQUAL(s.starts, 1);
	ws_free(&ws);
}

static void
test_split_feed(void)
{
	struct ws	ws;
	struct seen	s = { 0 };
	unsigned char	f[512];
	char		payload[300];
	size_t		n, i;

	memset(payload, 'x', sizeof(payload));
	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	n = client_frame(f, 1, WS_OP_BINARY, payload, sizeof(payload), 1);
	/* one byte at a time: the message arrives once, complete */
	for (i = 0; i < n; i++)
		CU_ASSERT_EQUAL(ws_feed(&ws, f + i, 1, &handler, &s), 0);
	CU_ASSERT_EQUAL(s.messages, 1);
	CU_ASSERT_EQUAL(s.binary, 1);
	CU_ASSERT_EQUAL(s.last_len, sizeof(payload));
	ws_free(&ws);
}

static void
test_fragments_with_ping_between(void)
{
	struct ws	ws;
	struct seen	s = { 0 };
	unsigned char	f[256];
	size_t		n = 0;

	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	n += client_frame(f + n, 0, WS_OP_TEXT, "[1,", 3, 1);
	n += client_frame(f + n, 1, WS_OP_PING, "hi", 2, 1);
	n += client_frame(f + n, 0, WS_OP_CONT, "2,", 2, 1);
	n += client_frame(f + n, 1, WS_OP_CONT, "3]", 2, 1);
	CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &handler, &s), 0);
	CU_ASSERT_EQUAL(s.messages, 1);
	CU_ASSERT_EQUAL(s.last_len, 7);
	CU_ASSERT(memcmp(s.last, "[1,2,3]", 7) == 0);
	/* the ping was answered with a pong carrying its payload */
	CU_ASSERT(ws_pending(&ws) == 4);
	CU_ASSERT_EQUAL(ws.out.buf[0], 0x8a);
	CU_ASSERT_EQUAL(ws.out.buf[1], 2);
	CU_ASSERT(memcmp(ws.out.buf + 2, "hi", 2) == 0);
	ws_free(&ws);
}

static void
expect_failure(unsigned char *f, size_t n, uint64_t max, int code,
    const char *reason)
{
	struct ws	ws;
	struct seen	s = { 0 };
	uint16_t	qc;
	char		qr[128];

	CU_ASSERT_FATAL(ws_init(&ws, max) == 0);
	CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &handler, &s), code);
	CU_ASSERT_EQUAL(s.messages, 0);
	queued_close(&ws, &qc, qr, sizeof(qr));
	CU_ASSERT_EQUAL(qc, code);
	CU_ASSERT_STRING_EQUAL(qr, reason);
	CU_ASSERT(ws.close_sent);
	ws_free(&ws);
}

static void
test_too_big(void)
{
	unsigned char	f[2048];
	char		payload[1025];
	size_t		n;

	memset(payload, 'a', sizeof(payload));
	n = client_frame(f, 1, WS_OP_TEXT, payload, sizeof(payload), 1);
	expect_failure(f, n, 1024, 1009, "message too big");
	/* exactly the limit passes */
	{
		struct ws	ws;
		struct seen	s = { 0 };

		CU_ASSERT_FATAL(ws_init(&ws, 1025) == 0);
		CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &handler, &s), 0);
		CU_ASSERT_EQUAL(s.messages, 1);
		ws_free(&ws);
	}
	/* the limit counts the whole message across fragments */
	n = client_frame(f, 0, WS_OP_TEXT, payload, 600, 1);
	n += client_frame(f + n, 1, WS_OP_CONT, payload, 600, 1);
	expect_failure(f, n, 1024, 1009, "message too big");
	/*
	 * A header announcing 2^62 bytes allocates nothing: the limit is
	 * checked against the header, before any payload byte is buffered.
	 */
	n = 0;
	f[n++] = 0x81;
	f[n++] = 0x80 | 127;
	memcpy(f + n, "\x40\0\0\0\0\0\0\0", 8);
	n += 8;
	memcpy(f + n, "\1\2\3\4", 4);
	n += 4;
	f[n++] = 'x';
	expect_failure(f, n, 262144, 1009, "message too big");
}

static void
test_bad_utf8(void)
{
	unsigned char	f[64];
	size_t		n;

	n = client_frame(f, 1, WS_OP_TEXT, "\"\xc0\x80\"", 4, 1);
	expect_failure(f, n, 1024, 1007, "invalid UTF-8");
	/* the same bytes in a binary message are not text: accepted here */
	{
		struct ws	ws;
		struct seen	s = { 0 };

		CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
		n = client_frame(f, 1, WS_OP_BINARY, "\"\xc0\x80\"", 4, 1);
		CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &handler, &s), 0);
		CU_ASSERT_EQUAL(s.messages, 1);
		ws_free(&ws);
	}
}

static void
test_protocol_errors(void)
{
	unsigned char	f[64];
	size_t		n;

	/* unmasked client frame (RFC 6455 §5.1) */
	n = client_frame(f, 1, WS_OP_TEXT, "{}", 2, 0);
	expect_failure(f, n, 1024, 1002, "protocol error");
	/* reserved opcode */
	n = client_frame(f, 1, 0x3, "{}", 2, 1);
	expect_failure(f, n, 1024, 1002, "protocol error");
	/* continuation without a message */
	n = client_frame(f, 1, WS_OP_CONT, "{}", 2, 1);
	expect_failure(f, n, 1024, 1002, "protocol error");
	/* a new message inside a fragmented one */
	n = client_frame(f, 0, WS_OP_TEXT, "[", 1, 1);
	n += client_frame(f + n, 1, WS_OP_TEXT, "]", 1, 1);
	expect_failure(f, n, 1024, 1002, "protocol error");
	/* RSV bit without an extension */
	n = client_frame(f, 1, WS_OP_TEXT, "{}", 2, 1);
	f[0] |= 0x40;
	expect_failure(f, n, 1024, 1002, "protocol error");
	/* fragmented control frame */
	n = client_frame(f, 0, WS_OP_PING, "", 0, 1);
	expect_failure(f, n, 1024, 1002, "protocol error");
	/* close code the peer may not send */
	n = client_frame(f, 1, WS_OP_CLOSE, "\x03\xed", 2, 1);	/* 1005 */
	expect_failure(f, n, 1024, 1002, "protocol error");
	/* one-byte close payload */
	n = client_frame(f, 1, WS_OP_CLOSE, "\x03", 1, 1);
	expect_failure(f, n, 1024, 1002, "protocol error");
}

static void
test_close_echo(void)
{
	struct ws	ws;
	struct seen	s = { 0 };
	unsigned char	f[64];
	size_t		n;
	uint16_t	qc;
	char		qr[64];

	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	n = client_frame(f, 1, WS_OP_CLOSE, "\x0f\xa1" "bye", 5, 1);	/* 4001 */
	/* data after the close is never delivered */
	n += client_frame(f + n, 1, WS_OP_TEXT, "{}", 2, 1);
	CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &handler, &s), 0);
	CU_ASSERT_EQUAL(s.closes, 1);
	CU_ASSERT_EQUAL(s.close_code, 4001);
	CU_ASSERT_EQUAL(s.messages, 0);
	queued_close(&ws, &qc, qr, sizeof(qr));
	CU_ASSERT_EQUAL(qc, 4001);
	CU_ASSERT_STRING_EQUAL(qr, "");
	ws_free(&ws);

	/* an empty close is echoed empty and reported as 1005 */
	memset(&s, 0, sizeof(s));
	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	n = client_frame(f, 1, WS_OP_CLOSE, "", 0, 1);
	CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &handler, &s), 0);
	CU_ASSERT_EQUAL(s.close_code, 1005);
	CU_ASSERT_EQUAL(ws_pending(&ws), 2);
	CU_ASSERT_EQUAL(ws.out.buf[0], 0x88);
	CU_ASSERT_EQUAL(ws.out.buf[1], 0);
	ws_free(&ws);
}

static void
test_after_our_close(void)
{
	struct ws	ws;
	struct seen	s = { 0 };
	unsigned char	f[64];
	size_t		n;

	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	CU_ASSERT_EQUAL(ws_send_close(&ws, 1007, "invalid JSON"), 0);
	/* nothing queues after a close; a second close is refused */
	CU_ASSERT_EQUAL(ws_send_text(&ws, "x", 1, NULL, 0, NULL, 0), -1);
	CU_ASSERT_EQUAL(ws_send_close(&ws, 1000, NULL), -1);
	n = client_frame(f, 1, WS_OP_TEXT, "{}", 2, 1);
	n += client_frame(f + n, 1, WS_OP_CLOSE, "\x03\xe8", 2, 1);
	CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &handler, &s), 0);
	CU_ASSERT_EQUAL(s.messages, 0);
	CU_ASSERT_EQUAL(s.closes, 1);
	CU_ASSERT(ws.close_rcvd);
	ws_free(&ws);
}

static void
test_output_and_cost(void)
{
	struct ws	 ws;
	int		 sv[2];
	unsigned char	 buf[256];
	ssize_t		 n;

	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	CU_ASSERT_EQUAL(ws_send_text(&ws, "{\"conn_id\":", 11, "\"c\"", 3, "}", 1), 0);
	/* 15 payload bytes, 2 header bytes, one message */
	CU_ASSERT_EQUAL(ws_pending(&ws), 17);
	CU_ASSERT_EQUAL(ws_cost(&ws), 17 + WS_MSG_OVERHEAD);
	CU_ASSERT_EQUAL(ws.out.buf[0], 0x81);
	CU_ASSERT_EQUAL(ws.out.buf[1], 15);
	CU_ASSERT(memcmp(ws.out.buf + 2, "{\"conn_id\":\"c\"}", 15) == 0);
	CU_ASSERT_EQUAL(ws_send_text(&ws, "[]", 2, NULL, 0, NULL, 0), 0);
	CU_ASSERT_EQUAL(ws_cost(&ws), 17 + 4 + 2 * WS_MSG_OVERHEAD);

	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	CU_ASSERT_EQUAL(ws_write(&ws, sv[0]), 21);
	CU_ASSERT_EQUAL(ws_pending(&ws), 0);
	CU_ASSERT_EQUAL(ws_cost(&ws), 0);
	n = read(sv[1], buf, sizeof(buf));
	CU_ASSERT_EQUAL(n, 21);
	/* a 200-byte payload takes the 16-bit length form */
	{
		char	big[200];

		memset(big, 'b', sizeof(big));
		CU_ASSERT_EQUAL(ws_send_text(&ws, big, sizeof(big), NULL, 0, NULL, 0), 0);
		CU_ASSERT_EQUAL(ws_pending(&ws), 204);
		CU_ASSERT_EQUAL(ws.out.buf[1], 126);
		CU_ASSERT_EQUAL((ws.out.buf[2] << 8) | ws.out.buf[3], 200);
	}
	close(sv[0]);
	close(sv[1]);
	ws_free(&ws);
}

/* the allocator ws_set_allocator installs: counts what it serves */
static int	alloc_live;

static void *
count_realloc(void *p, size_t n)
{
	if (p == NULL)
		alloc_live++;
	return realloc(p, n);
}

static void
count_free(void *p)
{
	if (p != NULL)
		alloc_live--;
	free(p);
}

/*
 * A connection keeps output buffers only while output waits: once all is
 * written, its buffer and its table of message ends are given back (to
 * the allocator set with ws_set_allocator).  A partial write keeps them.
 */
static void
test_output_given_back(void)
{
	struct ws	 ws;
	int		 sv[2], sz = 4096;
	char		 big[16384];
	unsigned char	 sink[65536];
	ssize_t		 n;

	ws_set_allocator(count_realloc, count_free);
	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	CU_ASSERT_FATAL(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz,
	    sizeof(sz)) == 0);
	CU_ASSERT_EQUAL(ws_send_text(&ws, "[1]", 3, NULL, 0, NULL, 0), 0);
	CU_ASSERT_EQUAL(alloc_live, 2);		/* the buffer and the ends */
	CU_ASSERT_EQUAL(ws_write(&ws, sv[0]), 5);
	CU_ASSERT_PTR_NULL(ws.out.buf);
	CU_ASSERT_PTR_NULL(ws.out.ends);
	CU_ASSERT_EQUAL(alloc_live, 0);
	CU_ASSERT_EQUAL(read(sv[1], sink, sizeof(sink)), 5);

	/* more than the socket takes: what is left keeps its buffer */
	memset(big, 'x', sizeof(big));
	CU_ASSERT_EQUAL(ws_send_text(&ws, big, sizeof(big), NULL, 0, NULL, 0),
	    0);
	n = ws_write(&ws, sv[0]);
	CU_ASSERT(n > 0 && (size_t)n < sizeof(big) + 4);
	CU_ASSERT_PTR_NOT_NULL(ws.out.buf);
	CU_ASSERT(ws_pending(&ws) > 0);
	/* drained in turns: then given back */
	while (ws_pending(&ws) > 0 &&
	    read(sv[1], sink, sizeof(sink)) > 0)
		if (ws_write(&ws, sv[0]) < 0)
			break;
	CU_ASSERT_EQUAL(ws_pending(&ws), 0);
	CU_ASSERT_PTR_NULL(ws.out.buf);
	CU_ASSERT_EQUAL(alloc_live, 0);
	close(sv[0]);
	close(sv[1]);
	ws_free(&ws);
	ws_set_allocator(realloc, free);
}

static void
test_code_sendable(void)
{
	int	ok[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4000, 4999 };
	int	bad[] = { 0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535 };
	size_t	i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		CU_ASSERT(ws_code_sendable(ok[i]));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CU_ASSERT(!ws_code_sendable(bad[i]));
}

static uint32_t
fnv(const unsigned char *p, size_t len)
{
	uint32_t	h = 2166136261u;
	size_t		i;

	for (i = 0; i < len; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

/*
 * Every length form (7-bit, 16-bit, 64-bit and their edges), fed whole and
 * split in two at many offsets (every one inside the header and near the
 * ends, and a stride through the payload): the handler sees each message
 * once, with the right bytes, and a frame that lies whole in one read is
 * handed over where it lies.
 */
static void
test_length_forms_and_splits(void)
{
	const size_t	 lens[] = { 0, 1, 7, 8, 9, 125, 126, 127, 1000,
			    65535, 65536, 70000 };
	unsigned char	*payload, *frame, *work;
	size_t		 li, len, n, cut, hl;
	struct ws	 ws;
	struct seen	 s;
	uint32_t	 want;

	payload = malloc(70000);
	frame = malloc(70000 + 14);
	work = malloc(70000 + 14);
	CU_ASSERT_FATAL(payload != NULL && frame != NULL && work != NULL);
	for (n = 0; n < 70000; n++)
		payload[n] = (n * 7 + 3) & 0xff;
	for (li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
		len = lens[li];
		want = fnv(payload, len);
		n = client_frame(frame, 1, WS_OP_BINARY, payload, len, 1);
		hl = n - len;
		CU_ASSERT_EQUAL(hl, len < 126 ? 6 : len < 65536 ? 8 : 14);
		for (cut = 0; cut <= n; cut++) {
			if (cut > 20 && cut + 20 < n && cut % 997 != 0)
				continue;
			memcpy(work, frame, n);
			memset(&s, 0, sizeof(s));
			CU_ASSERT_FATAL(ws_init(&ws, 70000) == 0);
			CU_ASSERT_EQUAL(ws_feed(&ws, work, cut, &handler, &s), 0);
			CU_ASSERT_EQUAL(ws_feed(&ws, work + cut, n - cut,
			    &handler, &s), 0);
			CU_ASSERT_EQUAL(s.messages, 1);
			CU_ASSERT_EQUAL(s.sum, want);
			if (len > 0 && (cut == 0 || cut == n))
				CU_ASSERT(s.last_ptr == work + hl);
			CU_ASSERT_EQUAL(ws_pending(&ws), 0);
			ws_free(&ws);
		}
	}
	free(payload);
	free(frame);
	free(work);
}

/* Lengths not in their shortest form, or over 2^63, are protocol errors. */
static void
test_length_not_shortest(void)
{
	unsigned char	f[32];
	size_t		n;

	/* 125 in the 16-bit form */
	n = 0;
	f[n++] = 0x82;
	f[n++] = 0x80 | 126;
	f[n++] = 0;
	f[n++] = 125;
	memcpy(f + n, "\1\2\3\4", 4);
	n += 4;
	expect_failure(f, n, 1024, 1002, "protocol error");
	/* 65535 in the 64-bit form */
	n = 0;
	f[n++] = 0x82;
	f[n++] = 0x80 | 127;
	memcpy(f + n, "\0\0\0\0\0\0\xff\xff", 8);
	n += 8;
	memcpy(f + n, "\1\2\3\4", 4);
	n += 4;
	expect_failure(f, n, 1 << 20, 1002, "protocol error");
	/* the top bit of the 64-bit length */
	n = 0;
	f[n++] = 0x82;
	f[n++] = 0x80 | 127;
	memcpy(f + n, "\x80\0\0\0\0\0\0\0", 8);
	n += 8;
	memcpy(f + n, "\1\2\3\4", 4);
	n += 4;
	expect_failure(f, n, 1 << 20, 1002, "protocol error");
	/* a control frame of 126 bytes */
	{
		unsigned char	big[160];
		char		p[126];

		memset(p, 'p', sizeof(p));
		n = client_frame(big, 1, WS_OP_PING, p, sizeof(p), 1);
		expect_failure(big, n, 1024, 1002, "protocol error");
	}
}

/* ws_unmask matches a byte-by-byte XOR for every length, offset and alignment. */
/*
 * With a text hook, text reaches it unchecked, and its -1 is the 1007
 * the codec would have sent itself; binary messages still go to message.
 */
static void
test_text_hook(void)
{
	struct ws	ws;
	struct seen	s = { 0 };
	unsigned char	f[64];
	uint16_t	qc;
	char		qr[128];
	size_t		n;

	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	texts = 0;
	text_verdict = 0;
	n = client_frame(f, 1, WS_OP_TEXT, "\"\xc0\x80\"", 4, 1);
	CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &text_handler, &s), 0);
	CU_ASSERT_EQUAL(texts, 1);
	CU_ASSERT_EQUAL(s.last_len, 4);
	CU_ASSERT(memcmp(s.last, "\"\xc0\x80\"", 4) == 0);
	CU_ASSERT(!ws.close_sent);
	n = client_frame(f, 1, WS_OP_BINARY, "\xff", 1, 1);
	CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &text_handler, &s), 0);
	CU_ASSERT_EQUAL(texts, 1);
	CU_ASSERT_EQUAL(s.messages, 2);
	CU_ASSERT(s.binary);
	text_verdict = -1;
	n = client_frame(f, 1, WS_OP_TEXT, "\"\xff\"", 3, 1);
	CU_ASSERT_EQUAL(ws_feed(&ws, f, n, &text_handler, &s), 1007);
	CU_ASSERT_EQUAL(texts, 2);
	queued_close(&ws, &qc, qr, sizeof(qr));
	CU_ASSERT_EQUAL(qc, 1007);
	CU_ASSERT_STRING_EQUAL(qr, "invalid UTF-8");
	CU_ASSERT(ws.failed);
	ws_free(&ws);
}

static void
test_unmask(void)
{
	const unsigned char	key[4] = { 0xa1, 0x5b, 0x3c, 0xd7 };
	unsigned char		buf[64], ref[64];
	size_t			len, koff, align, i;

	for (align = 0; align < 8; align++)
		for (koff = 0; koff < 4; koff++)
			for (len = 0; len + align <= sizeof(buf); len++) {
				for (i = 0; i < sizeof(buf); i++)
					buf[i] = ref[i] = i * 13 + 1;
				for (i = 0; i < len; i++)
					ref[align + i] ^= key[(koff + i) % 4];
				ws_unmask(buf + align, len, key, koff);
				CU_ASSERT(memcmp(buf, ref, sizeof(buf)) == 0);
			}
}

/* Two messages and a ping in one read; the second message split from its
 * header by the read boundary keeps the mask phase right. */
static void
test_several_in_one_read(void)
{
	struct ws	ws;
	struct seen	s = { 0 };
	unsigned char	f[512];
	char		p[200];
	size_t		n = 0, m;

	memset(p, 'q', sizeof(p));
	CU_ASSERT_FATAL(ws_init(&ws, 1024) == 0);
	n += client_frame(f + n, 1, WS_OP_TEXT, "{\"a\":1}", 7, 1);
	n += client_frame(f + n, 1, WS_OP_PING, "", 0, 1);
	m = n;
	n += client_frame(f + n, 1, WS_OP_TEXT, p, sizeof(p), 1);
	/* the read ends 3 bytes into the second message's payload */
	CU_ASSERT_EQUAL(ws_feed(&ws, f, m + 8 + 3, &handler, &s), 0);
	CU_ASSERT_EQUAL(s.messages, 1);
	CU_ASSERT(memcmp(s.last, "{\"a\":1}", 7) == 0);
	CU_ASSERT_EQUAL(ws_feed(&ws, f + m + 11, n - m - 11, &handler, &s), 0);
	CU_ASSERT_EQUAL(s.messages, 2);
	CU_ASSERT_EQUAL(s.last_len, sizeof(p));
	CU_ASSERT(memcmp(s.last, p, sizeof(p)) == 0);
	/* the pong went out */
	CU_ASSERT_EQUAL(ws_pending(&ws), 2);
	CU_ASSERT_EQUAL(ws.out.buf[0], 0x8a);
	ws_free(&ws);
}

static CU_TestInfo ws_tests[] = {
	{ "text message", test_text_message },
	{ "split feed", test_split_feed },
	{ "fragments with a ping between", test_fragments_with_ping_between },
	{ "1009 message too big", test_too_big },
	{ "1007 invalid UTF-8", test_bad_utf8 },
	{ "1002 protocol errors", test_protocol_errors },
	{ "close echo", test_close_echo },
	{ "after our close", test_after_our_close },
	{ "output and cost", test_output_and_cost },
	{ "output buffers given back once written", test_output_given_back },
	{ "sendable close codes", test_code_sendable },
	{ "length forms, split at any offset", test_length_forms_and_splits },
	{ "lengths not in shortest form", test_length_not_shortest },
	{ "unmask", test_unmask },
	{ "text hook: UTF-8 left to the handler", test_text_hook },
	{ "several frames in one read", test_several_in_one_read },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "ws", NULL, NULL, NULL, NULL, ws_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
