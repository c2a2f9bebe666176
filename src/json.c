/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * RFC 8259 JSON validation and compaction, and the routing envelope parser
 * (docs/protocol.md §4).  Every phone message goes through json_compact and
 * every binary message through envelope_parse, so both are one pass over
 * the bytes with no allocation and no recursion.
 *
 * Deliberate choices:
 * - Nesting is tracked in a bit stack on the C stack, JSON_MAX_DEPTH
 *   levels (8 KiB); deeper input is rejected as invalid.  Reaching it takes
 *   more than 128 KiB of brackets, and no client of ours nests that deep.
 * - A \uXXXX escape naming a lone UTF-16 surrogate (\ud800) is accepted:
 *   the RFC 8259 §7 grammar allows it, and we forward escapes unchanged.
 *   Raw bytes, in contrast, must be valid UTF-8 (RFC 3629, RFC 8259 §8.1).
 * - Compaction copies runs of input between insignificant whitespace with
 *   memmove, so it also works in place (out == in).
 */
#include "config.h"

#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "json.h"

#define JSON_MAX_DEPTH	65536

/* byte classes */
#define P	0x01	/* needs no special handling inside a string */
#define W	0x02	/* insignificant whitespace (RFC 8259 §2) */
#define H	0x04	/* hex digit */
#define D	0x08	/* decimal digit */
#define PW	(P | W)
#define PH	(P | H)
#define PD	(P | H | D)

static const unsigned char json_class[256] = {
	/* 00 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, W, W, 0, 0, W, 0, 0,
	/* 10 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 20 */ PW, P, 0, P, P, P, P, P, P, P, P, P, P, P, P, P,
	/* 30 */ PD, PD, PD, PD, PD, PD, PD, PD, PD, PD, P, P, P, P, P, P,
	/* 40 */ P, PH, PH, PH, PH, PH, PH, P, P, P, P, P, P, P, P, P,
	/* 50 */ P, P, P, P, P, P, P, P, P, P, P, P, 0, P, P, P,
	/* 60 */ P, PH, PH, PH, PH, PH, PH, P, P, P, P, P, P, P, P, P,
	/* 70 */ P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P,
	/* 80..ff: UTF-8, checked by utf8_seq */
};

#undef PD
#undef PH
#undef PW
#undef D
#undef H
#undef W
#undef P

#define IS_PLAIN(c)	(json_class[(c)] & 0x01)
#define IS_WS(c)	(json_class[(c)] & 0x02)
#define IS_HEX(c)	(json_class[(c)] & 0x04)
#define IS_DIGIT(c)	(json_class[(c)] & 0x08)

#define ONES	0x0101010101010101ULL
#define HIGHS	0x8080808080808080ULL

/*
 * Length of the valid UTF-8 sequence starting at p (whose lead byte is
 * >= 0x80), or 0.  The ranges are those of RFC 3629 §4: they exclude
 * overlongs, UTF-16 surrogates and code points past U+10FFFF.
 */
static inline size_t
utf8_seq(const unsigned char *p, const unsigned char *end)
{
	size_t		 avail = end - p;
	unsigned char	 c = p[0], lo = 0x80, hi = 0xbf;

	if (c < 0xc2)
		return 0;
	if (c < 0xe0) {
		if (avail < 2 || (p[1] & 0xc0) != 0x80)
			return 0;
		return 2;
	}
	if (c < 0xf0) {
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
		if (avail < 3 || p[1] < lo || p[1] > hi ||
		    (p[2] & 0xc0) != 0x80)
			return 0;
		return 3;
	}
	if (c < 0xf5) {
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
		if (avail < 4 || p[1] < lo || p[1] > hi ||
		    (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
			return 0;
		return 4;
	}
	return 0;
}

int
utf8_valid(const unsigned char *buf, size_t len)
{
	const unsigned char	*p, *end;
	uint64_t		 v;
	size_t			 n;

	/* an empty message may have no buffer, and NULL + 0 is undefined */
	if (len == 0)
		return 1;
	p = buf;
	end = buf + len;
	while (p < end) {
#ifdef __SSE2__
		/* sixteen ASCII bytes at a time: no byte has its top bit set */
		while (end - p >= 16 && _mm_movemask_epi8(_mm_loadu_si128(
		    (const __m128i *)(const void *)p)) == 0)
			p += 16;
#endif
		while (end - p >= 8) {
			memcpy(&v, p, sizeof(v));
			if (v & HIGHS)
				break;
			p += 8;
		}
		while (p < end && *p < 0x80)
			p++;
		if (p == end)
			break;
		if ((n = utf8_seq(p, end)) == 0)
			return 0;
		p += n;
	}
	return 1;
}

/*
 * p points at an opening quote.  Returns the byte after the closing quote,
 * or NULL if the string is invalid or unterminated.
 */
static inline const unsigned char *
scan_string(const unsigned char *p, const unsigned char *end)
{
	uint64_t	 v, t;
	size_t		 n;
	unsigned char	 c;
#ifdef __SSE2__
	const __m128i	 quote = _mm_set1_epi8('"');
	const __m128i	 bslash = _mm_set1_epi8('\\');
	const __m128i	 space = _mm_set1_epi8(0x20);
	__m128i		 x;
	int		 bits;
#endif

	p++;
	for (;;) {
#ifdef __SSE2__
		/*
		 * Sixteen bytes at a time (a frame's long strings dominate a
		 * binary's envelopes): the signed compare with 0x20 flags the
		 * control characters and every byte >= 0x80 at once, and the
		 * first flagged byte is exactly where the loops below go on.
		 */
#define STOPS(x)	_mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8((x), quote), \
			    _mm_cmpeq_epi8((x), bslash)), _mm_cmplt_epi8((x), space))
		/* 32 bytes a test while none stops, then 16 to find it */
		while (end - p >= 32 && _mm_movemask_epi8(_mm_or_si128(
		    STOPS(_mm_loadu_si128((const __m128i *)(const void *)p)),
		    STOPS(_mm_loadu_si128((const __m128i *)(const void *)
		    (p + 16))))) == 0)
			p += 32;
		while (end - p >= 16) {
			x = _mm_loadu_si128((const __m128i *)(const void *)p);
			if ((bits = _mm_movemask_epi8(STOPS(x))) != 0) {
				p += __builtin_ctz(bits);
				break;
			}
			p += 16;
		}
#undef STOPS
#endif
		/*
		 * Eight bytes at a time while none is a control character,
		 * '"', '\\' or non-ASCII.  The subtractions may flag a byte
		 * wrongly only above a byte that is truly flagged, and the
		 * byte loop below sorts that out.
		 */
		while (end - p >= 8) {
			memcpy(&v, p, sizeof(v));
			t = (v - 0x20 * ONES) | ((v ^ 0x22 * ONES) - ONES) |
			    ((v ^ 0x5c * ONES) - ONES) | v;
			if (t & HIGHS)
				break;
			p += 8;
		}
		while (p < end && IS_PLAIN(*p))
			p++;
		if (p == end)
			return NULL;
		c = *p;
		if (c == '"')
			return p + 1;
		if (c == '\\') {
			if (end - p < 2)
				return NULL;
			switch (p[1]) {
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				p += 2;
				break;
			case 'u':
				if (end - p < 6 || !IS_HEX(p[2]) ||
				    !IS_HEX(p[3]) || !IS_HEX(p[4]) ||
				    !IS_HEX(p[5]))
					return NULL;
				p += 6;
				break;
			default:
				return NULL;
			}
		} else if (c >= 0x80) {
			if ((n = utf8_seq(p, end)) == 0)
				return NULL;
			p += n;
		} else
			return NULL;	/* raw control character */
	}
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? (RFC 8259 §6) */
static inline const unsigned char *
scan_number(const unsigned char *p, const unsigned char *end)
{
	if (*p == '-' && ++p == end)
		return NULL;
	if (*p == '0')
		p++;
	else if (IS_DIGIT(*p)) {
		do
			p++;
		while (p < end && IS_DIGIT(*p));
	} else
		return NULL;
	if (p < end && *p == '.') {
		if (++p == end || !IS_DIGIT(*p))
			return NULL;
		do
			p++;
		while (p < end && IS_DIGIT(*p));
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || !IS_DIGIT(*p))
			return NULL;
		do
			p++;
		while (p < end && IS_DIGIT(*p));
	}
	return p;
}

/*
 * Scans one JSON value starting at p (no leading whitespace), with at most
 * maxdepth levels of arrays and objects.  Returns the byte after it, or
 * NULL if invalid.  With emit set, the value without its insignificant
 * whitespace is written at *outp and *outp is advanced.  emit is always a
 * constant, so the validate-only instance carries no copying code.
 */
static inline __attribute__((always_inline)) const unsigned char *
scan_value(const unsigned char *p, const unsigned char *end,
    unsigned char **outp, unsigned int maxdepth, const int emit)
{
	unsigned char		 stack[JSON_MAX_DEPTH / 8];	/* 1: object */
	const unsigned char	*run = p;	/* start of the uncopied run */
	unsigned char		*o = emit ? *outp : NULL;
	unsigned int		 depth = 0, bit;
	int			 in_object = 0;
	size_t			 n;

/* drops insignificant whitespace at p, flushing the run before it */
#define SKIP_WS() do {							\
	if (p < end && IS_WS(*p)) {					\
		if (emit) {						\
			n = p - run;					\
			memmove(o, run, n);				\
			o += n;						\
		}							\
		do							\
			p++;						\
		while (p < end && IS_WS(*p));				\
		run = p;						\
	}								\
} while (0)

/* enters an array (0) or object (1) */
#define PUSH(obj) do {							\
	if (depth == maxdepth)						\
		return NULL;						\
	bit = 1U << (depth & 7);					\
	if ((depth & 7) == 0)						\
		stack[depth >> 3] = (obj) ? bit : 0;			\
	else if (obj)							\
		stack[depth >> 3] |= bit;				\
	else								\
		stack[depth >> 3] &= ~bit;				\
	depth++;							\
	in_object = (obj);						\
} while (0)

/* leaves the innermost container */
#define POP() do {							\
	depth--;							\
	in_object = depth > 0 &&					\
	    (stack[(depth - 1) >> 3] >> ((depth - 1) & 7)) & 1;		\
} while (0)

value:
	if (p == end)
		return NULL;
	switch (*p) {
	case '{':
		PUSH(1);
		p++;
		SKIP_WS();
		if (p < end && *p == '}') {
			p++;
			POP();
			goto after;
		}
		goto key;
	case '[':
		PUSH(0);
		p++;
		SKIP_WS();
		if (p < end && *p == ']') {
			p++;
			POP();
			goto after;
		}
		goto value;
	case '"':
		if ((p = scan_string(p, end)) == NULL)
			return NULL;
		goto after;
	case 't':
		if (end - p < 4 || memcmp(p, "true", 4) != 0)
			return NULL;
		p += 4;
		goto after;
	case 'f':
		if (end - p < 5 || memcmp(p, "false", 5) != 0)
			return NULL;
		p += 5;
		goto after;
	case 'n':
		if (end - p < 4 || memcmp(p, "null", 4) != 0)
			return NULL;
		p += 4;
		goto after;
	default:
		if ((p = scan_number(p, end)) == NULL)
			return NULL;
		goto after;
	}

key:
	if (p == end || *p != '"' || (p = scan_string(p, end)) == NULL)
		return NULL;
	SKIP_WS();
	if (p == end || *p != ':')
		return NULL;
	p++;
	SKIP_WS();
	goto value;

after:
	if (depth == 0) {
		if (emit) {
			n = p - run;
			memmove(o, run, n);
			*outp = o + n;
		}
		return p;
	}
	SKIP_WS();
	if (p == end)
		return NULL;
	switch (*p++) {
	case ',':
		SKIP_WS();
		if (in_object)
			goto key;
		goto value;
	case '}':
		if (!in_object)
			return NULL;
		POP();
		goto after;
	case ']':
		if (in_object)
			return NULL;
		POP();
		goto after;
	default:
		return NULL;
	}

#undef POP
#undef PUSH
#undef SKIP_WS
}

static const unsigned char *
skip_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && IS_WS(*p))
		p++;
	return p;
}

ssize_t
json_compact(const unsigned char *in, size_t len, unsigned char *out)
{
	const unsigned char	*end = in + len, *p;
	unsigned char		*o = out;

	p = skip_ws(in, end);
	if ((p = scan_value(p, end, &o, JSON_MAX_DEPTH, 1)) == NULL)
		return -1;
	if (skip_ws(p, end) != end)
		return -1;
	return o - out;
}

/* validation only, for the envelope parser */
static __attribute__((noinline)) const unsigned char *
json_skip_value(const unsigned char *p, const unsigned char *end,
    unsigned int maxdepth)
{
	return scan_value(p, end, NULL, maxdepth, 0);
}

static unsigned int
hex4(const unsigned char *p)
{
	unsigned int	 v = 0, i;
	unsigned char	 c;

	for (i = 0; i < 4; i++) {
		c = p[i];
		if (c <= '9')
			c -= '0';
		else
			c = (c | 0x20) - 'a' + 10;
		v = (v << 4) | c;
	}
	return v;
}

/*
 * Decodes the string whose quotes are at p and end - 1, already validated
 * by scan_string, into dst (NUL-terminated).  Escaped lone surrogates
 * become U+FFFD.  Returns the decoded length, or (size_t)-1 when it needs
 * more than size - 1 bytes or contains a NUL (it cannot be a C string).
 */
static size_t
decode_string(const unsigned char *p, const unsigned char *end, char *dst,
    size_t size)
{
	const unsigned char	*e;
	unsigned char		 u[4];
	unsigned int		 cp, lo;
	size_t			 len = 0, n;

	p++;
	end--;
	while (p < end) {
		if (*p != '\\') {
			/*
			 * A run without escapes is copied whole (conn_ids and
			 * keys have none); scan_string let no raw NUL in.
			 */
			if ((e = memchr(p, '\\', end - p)) == NULL)
				e = end;
			n = e - p;
			if (n >= size - len)
				return (size_t)-1;
			memcpy(dst + len, p, n);
			len += n;
			p = e;
			continue;
		} else if (p[1] != 'u') {
			switch (p[1]) {
			case 'b':
				u[0] = '\b';
				break;
			case 'f':
				u[0] = '\f';
				break;
			case 'n':
				u[0] = '\n';
				break;
			case 'r':
				u[0] = '\r';
				break;
			case 't':
				u[0] = '\t';
				break;
			default:	/* '"', '\\', '/' */
				u[0] = p[1];
				break;
			}
			p += 2;
			n = 1;
		} else {
			cp = hex4(p + 2);
			p += 6;
			if (cp >= 0xd800 && cp <= 0xdbff && end - p >= 6 &&
			    p[0] == '\\' && p[1] == 'u' &&
			    (lo = hex4(p + 2)) >= 0xdc00 && lo <= 0xdfff) {
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				    (lo - 0xdc00);
				p += 6;
			} else if (cp >= 0xd800 && cp <= 0xdfff)
				cp = 0xfffd;
			if (cp < 0x80) {
				u[0] = cp;
				n = 1;
			} else if (cp < 0x800) {
				u[0] = 0xc0 | (cp >> 6);
				u[1] = 0x80 | (cp & 0x3f);
				n = 2;
			} else if (cp < 0x10000) {
				u[0] = 0xe0 | (cp >> 12);
				u[1] = 0x80 | ((cp >> 6) & 0x3f);
				u[2] = 0x80 | (cp & 0x3f);
				n = 3;
			} else {
				u[0] = 0xf0 | (cp >> 18);
				u[1] = 0x80 | ((cp >> 12) & 0x3f);
				u[2] = 0x80 | ((cp >> 6) & 0x3f);
				u[3] = 0x80 | (cp & 0x3f);
				n = 4;
			}
		}
		if (u[0] == '\0' || n >= size - len)
			return (size_t)-1;
		memcpy(dst + len, u, n);
		len += n;
	}
	dst[len] = '\0';
	return len;
}

/* close_code: digits only, so no sign, fraction or exponent; 0..65535 */
static int
parse_close_code(const unsigned char *p, const unsigned char *end)
{
	int	 v = 0;

	if (p == end)
		return -1;
	for (; p < end; p++) {
		if (!IS_DIGIT(*p))
			return -1;
		v = v * 10 + (*p - '0');
		if (v > 65535)
			return -1;
	}
	return v;
}

static void
members_start(struct json_members *m, const unsigned char *brace,
    const unsigned char *end, unsigned int depth)
{
	m->p = brace + 1;
	m->end = end;
	m->depth = depth;
	m->started = 0;
}

/*
 * The start of the next item of an object or array walk: 1 with *at on it
 * (past the ',' after the first item), 0 after the closing bracket (m->p
 * just past it, also for an empty one), -1 when the text is not JSON.
 */
static inline __attribute__((always_inline)) int
walk_next(struct json_members *m, unsigned char close,
    const unsigned char **at)
{
	const unsigned char	*p = skip_ws(m->p, m->end);

	if (p == m->end)
		return -1;
	if (*p == close) {
		m->p = p + 1;
		return 0;
	}
	if (m->started) {
		if (*p != ',')
			return -1;
		p = skip_ws(p + 1, m->end);
	}
	m->started = 1;
	*at = p;
	return 1;
}

/*
 * The next member: 1 with its key decoded into key (*klen is (size_t)-1
 * when the key does not fit) and its value at [*v, m->p); 0 after the
 * closing brace, with m->p just past it; -1 when the object is not JSON.
 */
static inline __attribute__((always_inline)) int
members_next(struct json_members *m, char *key, size_t keysize, size_t *klen,
    const unsigned char **v)
{
	const unsigned char	*p, *k;
	int			 rv;

	if ((rv = walk_next(m, '}', &p)) != 1)
		return rv;
	k = p;
	if (p == m->end || *p != '"' || (p = scan_string(p, m->end)) == NULL)
		return -1;
	*klen = decode_string(k, p, key, keysize);
	p = skip_ws(p, m->end);
	if (p == m->end || *p != ':')
		return -1;
	*v = skip_ws(p + 1, m->end);
	if ((m->p = json_skip_value(*v, m->end, m->depth)) == NULL)
		return -1;
	return 1;
}

#define KEY_IS(k, n, lit)	((n) == sizeof(lit) - 1 && \
				    memcmp((k), (lit), sizeof(lit) - 1) == 0)

enum envelope_result
envelope_parse(const unsigned char *buf, size_t len, struct envelope *env)
{
	const unsigned char	*end = buf + len, *p, *v;
	struct json_members	 m;
	char			 key[16];
	size_t			 n;
	/* bad_conn_id: the first byte of a conn_id that is not a string */
	int			 bad_conn_id = 0, bad_close_code = 0, more;

	memset(env, 0, sizeof(*env));
	p = skip_ws(buf, end);
	if (p == end || *p != '{') {
		if ((p = json_skip_value(p, end, JSON_MAX_DEPTH)) == NULL ||
		    skip_ws(p, end) != end)
			return ENVELOPE_NOT_JSON;
		return ENVELOPE_NOT_OBJECT;
	}

	/* the envelope object itself is one level */
	members_start(&m, p, end, JSON_MAX_DEPTH - 1);
	while ((more = members_next(&m, key, sizeof(key), &n, &v)) == 1) {
		p = m.p;
		if (KEY_IS(key, n, "conn_id")) {
			env->has_conn_id = 1;
			env->conn_id[0] = '\0';
			env->conn_id_len = 0;
			env->conn_id_too_long = 0;
			bad_conn_id = *v != '"' ? *v : 0;
			if (!bad_conn_id) {
				n = decode_string(v, p, env->conn_id,
				    sizeof(env->conn_id));
				if (n == (size_t)-1) {
					env->conn_id[0] = '\0';
					env->conn_id_too_long = 1;
				} else
					env->conn_id_len = n;
			}
		} else if (KEY_IS(key, n, "frame")) {
			env->has_frame = 1;
			env->frame = v;
			env->frame_len = p - v;
			env->frame_is_null = *v == 'n';
		} else if (KEY_IS(key, n, "close_code")) {
			env->has_close_code = 1;
			env->close_code = parse_close_code(v, p);
			bad_close_code = env->close_code < 0;
			if (bad_close_code)
				env->close_code = 0;
		} else if (KEY_IS(key, n, "push_wake")) {
			env->has_push_wake = 1;
			env->push_wake = v;
			env->push_wake_len = p - v;
		}
	}
	if (more == -1 || skip_ws(m.p, end) != end)
		return ENVELOPE_NOT_JSON;

	/* docs/protocol.md §6: push_wake with no, an empty or a null conn_id */
	if (env->has_push_wake && (!env->has_conn_id || bad_conn_id == 'n' ||
	    (!bad_conn_id && env->conn_id_len == 0 &&
	    !env->conn_id_too_long))) {
		env->has_conn_id = 0;
		return ENVELOPE_OK;
	}
	if (bad_conn_id)
		return ENVELOPE_BAD_CONN_ID;
	if (bad_close_code)
		return ENVELOPE_BAD_CLOSE_CODE;
	if (!env->has_conn_id)
		return ENVELOPE_NO_CONN_ID;
	if (!env->has_frame && !env->has_close_code)
		return ENVELOPE_NO_FRAME;
	return ENVELOPE_OK;
}

const char *
push_wake_parse(const unsigned char *buf, size_t len, char *token,
    size_t size)
{
	const unsigned char	*end = buf + len, *p, *v;
	struct json_members	 m;
	char			 key[16], platform[8];
	size_t			 n;
	int			 more, fcm = 0, have_token = 0, bad_token = 0;

	p = skip_ws(buf, end);
	if (p == end || *p != '{')
		return "not an object";
	/* inside the envelope: two levels */
	members_start(&m, p, end, JSON_MAX_DEPTH - 2);
	while ((more = members_next(&m, key, sizeof(key), &n, &v)) == 1) {
		if (KEY_IS(key, n, "platform"))
			fcm = *v == '"' && decode_string(v, m.p, platform,
			    sizeof(platform)) == 3 &&
			    memcmp(platform, "fcm", 3) == 0;
		else if (KEY_IS(key, n, "token")) {
			have_token = 1;
			n = *v == '"' ? decode_string(v, m.p, token, size) : 0;
			bad_token = n == 0 || n == (size_t)-1;
		}
	}
	if (more == -1 || skip_ws(m.p, end) != end)
		return "not an object";
	if (!fcm)
		return "platform not fcm";
	if (!have_token)
		return "no token";
	if (bad_token)
		return "bad token";
	return NULL;
}

/* buf is exactly one valid JSON value, opened by open ('{' or '[') */
static int
json_walk_begin(struct json_members *m, const unsigned char *buf, size_t len,
    unsigned char open)
{
	const unsigned char	*end = buf + len, *p = skip_ws(buf, end), *q;

	if (p == end || *p != open ||
	    (q = json_skip_value(p, end, JSON_MAX_DEPTH)) == NULL ||
	    skip_ws(q, end) != end)
		return -1;
	members_start(m, p, q, JSON_MAX_DEPTH - 1);
	return 0;
}

int
json_object_begin(struct json_members *m, const unsigned char *buf,
    size_t len)
{
	return json_walk_begin(m, buf, len, '{');
}

int
json_object_next(struct json_members *m, char *key, size_t keysize,
    size_t *klen, const unsigned char **v, size_t *vlen)
{
	int	rv;

	if ((rv = members_next(m, key, keysize, klen, v)) == 1)
		*vlen = m->p - *v;
	return rv;
}

int
json_array_begin(struct json_members *m, const unsigned char *buf,
    size_t len)
{
	return json_walk_begin(m, buf, len, '[');
}

int
json_array_next(struct json_members *m, const unsigned char **v,
    size_t *vlen)
{
	const unsigned char	*p;
	int			 rv;

	if ((rv = walk_next(m, ']', &p)) != 1)
		return rv;
	*v = p;
	if ((m->p = json_skip_value(p, m->end, m->depth)) == NULL)
		return -1;
	*vlen = m->p - p;
	return 1;
}

size_t
json_string_value(const unsigned char *v, size_t vlen, char *dst, size_t size)
{
	/* a value json_object_next or json_array_next found is valid JSON */
	if (vlen < 2 || *v != '"' || size == 0)
		return (size_t)-1;
	return decode_string(v, v + vlen, dst, size);
}

int
json_uint_value(const unsigned char *v, size_t vlen, uint64_t max,
    uint64_t *out)
{
	uint64_t	n = 0;
	size_t		i;

	if (vlen == 0)
		return -1;
	for (i = 0; i < vlen; i++) {
		if (!IS_DIGIT(v[i]) || n > (max - (v[i] - '0')) / 10)
			return -1;
		n = n * 10 + (v[i] - '0');
	}
	*out = n;
	return 0;
}

size_t
json_escape(const char *s, char *out, size_t size)
{
	static const char	 hex[] = "0123456789abcdef";
	size_t			 len = 0, n;
	unsigned char		 c;
	char			 e[7];

	for (; *s != '\0'; s++) {
		c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			e[0] = '\\';
			e[1] = (char)c;
			n = 2;
		} else if (c < 0x20) {
			memcpy(e, "\\u00", 4);
			e[4] = hex[c >> 4];
			e[5] = hex[c & 0xf];
			n = 6;
		} else {
			e[0] = (char)c;
			n = 1;
		}
		if (n >= size - len)
			return (size_t)-1;
		memcpy(out + len, e, n);
		len += n;
	}
	out[len] = '\0';
	return len;
}

const char *
envelope_strerror(enum envelope_result r)
{
	switch (r) {
	case ENVELOPE_OK:
		return "ok";
	case ENVELOPE_NOT_JSON:
		return "not json";
	case ENVELOPE_NOT_OBJECT:
		return "not an object";
	case ENVELOPE_BAD_CONN_ID:
		return "conn_id not a string";
	case ENVELOPE_BAD_CLOSE_CODE:
		return "bad close_code";
	case ENVELOPE_NO_CONN_ID:
		return "no conn_id";
	case ENVELOPE_NO_FRAME:
		return "no frame or close_code";
	}
	return "unknown envelope error";
}
