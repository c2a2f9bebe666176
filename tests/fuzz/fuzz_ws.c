/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * libFuzzer harness for the WebSocket codec (ws_feed).  The first input
 * byte picks a split point; the rest is fed once whole and once in two
 * pieces cut there.  Both runs must report the same messages (count and a
 * hash of their bytes), the same pongs and closes, the same return code and
 * the same queued output: how the bytes arrive must not change what they
 * mean.  ASan and UBSan check the memory accesses on the way.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define CHECK(e)	do { if (!(e)) abort(); } while (0)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

struct seen {
	unsigned	messages, pongs, closes, starts;
	uint16_t	code;
	uint64_t	hash;
};

static void
on_message(void *arg, int binary, unsigned char *buf, size_t len)
{
	struct seen	*s = arg;
	size_t		 i;

	s->messages++;
	s->hash = (s->hash ^ (uint64_t)binary) * 1099511628211u;
	s->hash = (s->hash ^ len) * 1099511628211u;
	for (i = 0; i < len; i++)
		s->hash = (s->hash ^ buf[i]) * 1099511628211u;
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
	s->code = code;
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

/* Feeds in[0..len) cut at `cut` (len + 1: whole); returns ws_feed's code. */
static int
run(struct ws *ws, struct seen *s, const uint8_t *in, size_t len, size_t cut)
{
	unsigned char	*buf;
	int		 r;

	memset(s, 0, sizeof(*s));
	s->hash = 14695981039346656037u;
	CHECK(ws_init(ws, 4096) == 0);
	/* an exact-size copy, so ASan sees any read past the end */
	if ((buf = malloc(len ? len : 1)) == NULL)
		abort();
	memcpy(buf, in, len);
	if (cut > len)
		r = ws_feed(ws, buf, len, &handler, s);
	else if ((r = ws_feed(ws, buf, cut, &handler, s)) == 0)
		r = ws_feed(ws, buf + cut, len - cut, &handler, s);
	free(buf);
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ws	a, b;
	struct seen	sa, sb;
	size_t		cut;
	int		ra, rb;

	if (size < 1)
		return 0;
	cut = data[0];
	data++;
	size--;
	if (cut > size)
		cut = size;
	ra = run(&a, &sa, data, size, size + 1);
	rb = run(&b, &sb, data, size, cut);
	CHECK(ra == rb);
	CHECK(sa.messages == sb.messages && sa.hash == sb.hash);
	CHECK(sa.pongs == sb.pongs && sa.closes == sb.closes &&
	    sa.code == sb.code && sa.starts == sb.starts);
	CHECK(ws_pending(&a) == ws_pending(&b));
	/* nothing queued: out.buf may be NULL, and NULL + 0 is undefined */
	CHECK(ws_pending(&a) == 0 || memcmp(a.out.buf + a.out.off,
	    b.out.buf + b.out.off, ws_pending(&a)) == 0);
	CHECK(ws_cost(&a) == ws_cost(&b));
	ws_free(&a);
	ws_free(&b);
	return 0;
}
