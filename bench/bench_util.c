/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Small pieces with no I/O: allocation, clock, random numbers, the latency
 * histogram, a JSON member scanner (enough to read envelopes and our
 * own frames), and the WebSocket key, accept and mask.
 */
#define _GNU_SOURCE

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "bench.h"

#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static long	json_skip_string(const uint8_t *, size_t, size_t);
static long	json_skip_value(const uint8_t *, size_t, size_t);
static size_t	json_ws(const uint8_t *, size_t, size_t);
static size_t	hist_index(uint64_t);
static uint64_t	hist_value(size_t);

/* calloc, or the end of the run: a benchmark short of memory measures nothing. */
void *
xcalloc(size_t n, size_t sz)
{
	void	*p;

	if ((p = calloc(n ? n : 1, sz)) == NULL) {
		perror("pyrelay-bench: calloc");
		exit(2);
	}
	return p;
}

uint64_t
now_ns(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: masks and keys need to be unpredictable, not secret. */
uint64_t
rng_next(uint64_t *s)
{
	uint64_t	 x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static size_t
hist_index(uint64_t v)
{
	int	 shift;

	if (v < HIST_SUB)
		return v;
	shift = 63 - __builtin_clzll(v) - HIST_SUB_BITS;
	return (size_t)(shift + 1) * HIST_SUB +
	    (size_t)((v >> shift) - HIST_SUB);
}

/* The middle of a bucket. */
static uint64_t
hist_value(size_t i)
{
	int	 shift;
	uint64_t lo;

	if (i < HIST_SUB)
		return i;
	shift = (int)(i / HIST_SUB) - 1;
	lo = (uint64_t)(HIST_SUB + i % HIST_SUB) << shift;
	return lo + ((1ULL << shift) >> 1);
}

void
hist_add(struct hist *h, uint64_t v)
{
	if (h->n == 0 || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->n++;
	h->sum += v;
	h->b[hist_index(v)]++;
}

void
hist_merge(struct hist *to, const struct hist *from)
{
	size_t	 i;

	if (from->n == 0)
		return;
	if (to->n == 0 || from->min < to->min)
		to->min = from->min;
	if (from->max > to->max)
		to->max = from->max;
	to->n += from->n;
	to->sum += from->sum;
	for (i = 0; i < HIST_BUCKETS; i++)
		to->b[i] += from->b[i];
}

/* The value at percentile p (0 < p <= 100), never above the true max. */
uint64_t
hist_pct(const struct hist *h, double p)
{
	uint64_t	 want, seen = 0, v;
	size_t		 i;

	if (h->n == 0)
		return 0;
	want = (uint64_t)(p / 100.0 * (double)h->n);
	if ((double)want < p / 100.0 * (double)h->n)
		want++;
	if (want == 0)
		want = 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			v = hist_value(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}

/* Decimal digits of v at dst (room for 20); returns their count. */
size_t
fmt_u64(char *dst, uint64_t v)
{
	char	 tmp[20];
	size_t	 n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (i = 0; i < n; i++)
		dst[i] = tmp[n - 1 - i];
	return n;
}

static size_t
json_ws(const uint8_t *p, size_t n, size_t i)
{
	while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' ||
	    p[i] == '\r'))
		i++;
	return i;
}

/* p[i] is a quote: the index after the closing quote, or -1. */
static long
json_skip_string(const uint8_t *p, size_t n, size_t i)
{
	const uint8_t	*q;
	size_t		 from = i + 1, k, bs;

	for (;;) {
		if (from >= n)
			return -1;
		q = memchr(p + from, '"', n - from);
		if (q == NULL)
			return -1;
		k = (size_t)(q - p);
		bs = 0;
		while (k - bs > i + 1 && p[k - bs - 1] == '\\')
			bs++;
		if (bs % 2 == 0)
			return (long)k + 1;
		from = k + 1;
	}
}

static long
json_skip_value(const uint8_t *p, size_t n, size_t i)
{
	size_t	 depth = 0, s = i;
	long	 r;

	if (i >= n)
		return -1;
	if (p[i] == '"')
		return json_skip_string(p, n, i);
	if (p[i] == '{' || p[i] == '[') {
		while (i < n) {
			switch (p[i]) {
			case '"':
				if ((r = json_skip_string(p, n, i)) == -1)
					return -1;
				i = (size_t)r;
				continue;
			case '{':
			case '[':
				depth++;
				break;
			case '}':
			case ']':
				if (--depth == 0)
					return (long)i + 1;
				break;
			}
			i++;
		}
		return -1;
	}
	while (i < n && p[i] != ',' && p[i] != '}' && p[i] != ']' &&
	    p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
		i++;
	return i > s ? (long)i : -1;
}

/*
 * Finds the top-level member "key" of the JSON object in p.  Its value
 * is p[*vs, *ve).  Returns 1 if found, 0 if not, -1 if p is not an
 * object this scanner can walk.
 */
int
json_find(const uint8_t *p, size_t n, const char *key, size_t *vs,
    size_t *ve)
{
	size_t	 i, klen = strlen(key), ks, ke;
	long	 r;

	i = json_ws(p, n, 0);
	if (i >= n || p[i] != '{')
		return -1;
	i = json_ws(p, n, i + 1);
	if (i < n && p[i] == '}')
		return 0;
	for (;;) {
		if (i >= n || p[i] != '"')
			return -1;
		ks = i + 1;
		if ((r = json_skip_string(p, n, i)) == -1)
			return -1;
		ke = (size_t)r - 1;	/* the closing quote */
		i = json_ws(p, n, (size_t)r);
		if (i >= n || p[i] != ':')
			return -1;
		i = json_ws(p, n, i + 1);
		if ((r = json_skip_value(p, n, i)) == -1)
			return -1;
		if (ke - ks == klen && memcmp(p + ks, key, klen) == 0) {
			*vs = i;
			*ve = (size_t)r;
			return 1;
		}
		i = json_ws(p, n, (size_t)r);
		if (i < n && p[i] == ',') {
			i = json_ws(p, n, i + 1);
			continue;
		}
		if (i < n && p[i] == '}')
			return 0;
		return -1;
	}
}

/* An unsigned decimal at p[vs..]: 0 and its value, or -1. */
int
json_u64(const uint8_t *p, size_t n, size_t vs, uint64_t *out)
{
	uint64_t	 v = 0;
	size_t		 i = vs;

	while (i < n && p[i] >= '0' && p[i] <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(p[i] - '0');
		i++;
	}
	if (i == vs)
		return -1;
	*out = v;
	return 0;
}

/* RFC 6455 §4.2.2: base64(SHA-1(key + GUID)); out has room for 29. */
void
ws_accept(const char *key, char *out)
{
	unsigned char	 in[64], md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0;
	size_t		 klen = strlen(key), glen = sizeof(WS_GUID) - 1;

	if (klen + glen > sizeof(in))
		klen = sizeof(in) - glen;
	memcpy(in, key, klen);
	memcpy(in + klen, WS_GUID, glen);
	if (EVP_Digest(in, klen + glen, md, &mdlen, EVP_sha1(), NULL) != 1 ||
	    mdlen != 20) {
		out[0] = '\0';
		return;
	}
	EVP_EncodeBlock((unsigned char *)out, md, 20);
}

/* A fresh Sec-WebSocket-Key: base64 of 16 random bytes, 24 chars + NUL. */
void
b64_key(uint64_t *rng, char *out)
{
	uint64_t	 r[2];

	r[0] = rng_next(rng);
	r[1] = rng_next(rng);
	EVP_EncodeBlock((unsigned char *)out, (unsigned char *)r, 16);
}

/* XOR with the 4-byte key, 8 bytes at a time (RFC 6455 §5.3). */
void
ws_mask(uint8_t *p, size_t n, const uint8_t *key)
{
	uint8_t		 k8[8];
	uint64_t	 k, v;
	size_t		 i = 0;

	memcpy(k8, key, 4);
	memcpy(k8 + 4, key, 4);
	memcpy(&k, k8, 8);
	for (; i + 8 <= n; i += 8) {
		memcpy(&v, p + i, 8);
		v ^= k;
		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++)
		p[i] ^= key[i & 3];
}
