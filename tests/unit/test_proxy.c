/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of src/proxy.c: every valid PROXY v1 and v2 form, fed whole
 * and byte by byte, with bytes after the header; every malformed form,
 * checked to turn PROXY_BAD at the first byte that rules it out and to
 * stay PROXY_BAD from there on.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "proxy.h"
#include "unit.h"

#define V2_SIG		"\r\n\r\n\0\r\nQUIT\n"
#define TAIL		"GET /v1/server HTTP/1.1\r\nHost: r.example\r\n\r\n"
#define LIT(s)		(const unsigned char *)(s), sizeof(s) - 1

static const unsigned char	zero_pi[sizeof(struct proxy_info)];

/* What a successful parse must give. */
struct expect {
	int		 version;
	int		 local;
	int		 af;	/* AF_INET, AF_INET6, 0 when local */
	const char	*addr;
	unsigned int	 port;
	size_t		 len;
};

/* proxy_parse on a copy of buf[0..len) in a buffer of exactly len bytes */
static enum proxy_result
parse_copy(const unsigned char *buf, size_t len, struct proxy_info *pi)
{
	enum proxy_result	 r;
	unsigned char		*copy;

	if ((copy = malloc(len ? len : 1)) == NULL)
		abort();
	memcpy(copy, buf, len);
	memset(pi, 0xa5, sizeof(*pi));
	r = proxy_parse(copy, len, pi);
	free(copy);
	return r;
}

static void
check_info(const struct proxy_info *pi, const struct expect *e)
{
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;

	CU_ASSERT_EQUAL(pi->version, e->version);
	CU_ASSERT_EQUAL(pi->local, e->local);
	CU_ASSERT_EQUAL(pi->len, e->len);
	if (e->local) {
		CU_ASSERT_EQUAL(pi->srclen, 0);
		CU_ASSERT_EQUAL(pi->src.ss_family, AF_UNSPEC);
		return;
	}
	CU_ASSERT_EQUAL(pi->src.ss_family, e->af);
	if (e->af == AF_INET) {
		CU_ASSERT_EQUAL(pi->srclen, sizeof(sin));
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons(e->port);
		CU_ASSERT_FATAL(inet_pton(AF_INET, e->addr, &sin.sin_addr) ==
		    1);
		CU_ASSERT(memcmp(&pi->src, &sin, sizeof(sin)) == 0);
	} else {
		CU_ASSERT_EQUAL(pi->srclen, sizeof(sin6));
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons(e->port);
		CU_ASSERT_FATAL(inet_pton(AF_INET6, e->addr, &sin6.sin6_addr) ==
		    1);
		CU_ASSERT(memcmp(&pi->src, &sin6, sizeof(sin6)) == 0);
	}
}

/*
 * hdr[0..len) is one valid header: every shorter prefix is incomplete,
 * the whole is e, and bytes after it change nothing.
 */
static void
check_valid(const unsigned char *hdr, size_t len, const struct expect *e)
{
	struct proxy_info	 pi;
	unsigned char	 buf[2 * PROXY_V2_MAX + sizeof(TAIL) + 128];
	size_t			 i, n;

	CU_ASSERT_FATAL(len == e->len);
	CU_ASSERT_FATAL(len + sizeof(TAIL) + 128 <= sizeof(buf));
	for (i = 0; i < len; i++) {
		CU_ASSERT_EQUAL(parse_copy(hdr, i, &pi), PROXY_INCOMPLETE);
		CU_ASSERT(memcmp(&pi, zero_pi, sizeof(pi)) == 0);
	}
	CU_ASSERT_EQUAL_FATAL(parse_copy(hdr, len, &pi), PROXY_OK);
	check_info(&pi, e);

	/* an HTTP request after it, fed a byte at a time */
	memcpy(buf, hdr, len);
	memcpy(buf + len, TAIL, sizeof(TAIL) - 1);
	for (n = len; n <= len + sizeof(TAIL) - 1; n++) {
		CU_ASSERT_EQUAL(parse_copy(buf, n, &pi), PROXY_OK);
		check_info(&pi, e);
	}

	/* a second header, or binary junk, after it is not ours to read */
	memcpy(buf + len, hdr, len);
	CU_ASSERT_EQUAL(parse_copy(buf, 2 * len, &pi), PROXY_OK);
	check_info(&pi, e);
	memset(buf + len, 0xff, 128);
	CU_ASSERT_EQUAL(parse_copy(buf, len + 128, &pi), PROXY_OK);
	check_info(&pi, e);
}

/*
 * buf[0..len) is malformed and the first bad_at bytes already say so:
 * shorter prefixes are incomplete, it and every longer one are bad.
 */
static void
check_bad_at(const unsigned char *buf, size_t len, size_t bad_at,
    const char *what)
{
	struct proxy_info	pi;
	enum proxy_result	r, want;
	size_t			i;

	CU_ASSERT_FATAL(bad_at >= 1 && bad_at <= len);
	for (i = 0; i <= len; i++) {
		want = i < bad_at ? PROXY_INCOMPLETE : PROXY_BAD;
		r = parse_copy(buf, i, &pi);
		CU_ASSERT_EQUAL(r, want);
		if (r != want) {
			fprintf(stderr, "\n  %s: prefix %zu gives %d, "
			    "want %d\n", what, i, r, want);
			break;
		}
		CU_ASSERT(memcmp(&pi, zero_pi, sizeof(pi)) == 0);
	}
}

/* A v2 header: signature, ver_cmd, fam, the 16-bit length, then body. */
static size_t
v2_build(unsigned char *buf, size_t bufsz, unsigned char ver_cmd,
    unsigned char fam, unsigned int plen, const unsigned char *body,
    size_t bodylen)
{
	CU_ASSERT_FATAL(16 + bodylen <= bufsz);
	memcpy(buf, V2_SIG, 12);
	buf[12] = ver_cmd;
	buf[13] = fam;
	buf[14] = plen >> 8;
	buf[15] = plen & 0xff;
	if (bodylen > 0)
		memcpy(buf + 16, body, bodylen);
	return 16 + bodylen;
}

static void
test_v1_valid(void)
{
	static const struct {
		const char	*hdr;
		struct expect	 e;
	} cases[] = {
		{ "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
		    { 1, 0, AF_INET, "192.0.2.1", 56324, 0 } },
		{ "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
		    { 1, 0, AF_INET, "255.255.255.255", 65535, 0 } },
		{ "PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
		    { 1, 0, AF_INET, "0.0.0.0", 0, 0 } },
		{ "PROXY TCP4 10.1.2.3 10.0.0.1 9 10\r\n",
		    { 1, 0, AF_INET, "10.1.2.3", 9, 0 } },
		{ "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n",
		    { 1, 0, AF_INET6, "2001:db8::1", 65535, 0 } },
		{ "PROXY TCP6 ::1 ::1 1 443\r\n",
		    { 1, 0, AF_INET6, "::1", 1, 0 } },
		{ "PROXY TCP6 2001:DB8:AbCd::Ff ::1 8080 443\r\n",
		    { 1, 0, AF_INET6, "2001:db8:abcd::ff", 8080, 0 } },
		{ "PROXY TCP6 ::ffff:192.0.2.7 ::ffff:192.0.2.8 1000 443\r\n",
		    { 1, 0, AF_INET6, "::ffff:192.0.2.7", 1000, 0 } },
		/* the longest TCP6 line: 104 bytes */
		{ "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
		    { 1, 0, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		    65535, 0 } },
		{ "PROXY UNKNOWN\r\n", { 1, 1, 0, NULL, 0, 0 } },
		{ "PROXY UNKNOWN \r\n", { 1, 1, 0, NULL, 0, 0 } },
		{ "PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
		    { 1, 1, 0, NULL, 0, 0 } },
		/* the spec's worst case: exactly PROXY_V1_MAX bytes */
		{ "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
		    { 1, 1, 0, NULL, 0, 0 } },
	};
	struct expect	e;
	size_t		i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		e = cases[i].e;
		e.len = strlen(cases[i].hdr);
		CU_ASSERT(e.len <= PROXY_V1_MAX);
		check_valid((const unsigned char *)cases[i].hdr, e.len, &e);
	}
	CU_ASSERT_EQUAL(strlen(cases[8].hdr), 104);
	CU_ASSERT_EQUAL(strlen(cases[12].hdr), PROXY_V1_MAX);
}

static void
test_v2_valid(void)
{
	static const unsigned char	a4[12] = {
		192, 0, 2, 1,  198, 51, 100, 2,  0xdc, 0x04,  0x01, 0xbb
	};
	static const unsigned char	a6[36] = {
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
		0xff, 0xff,	0x01, 0xbb
	};
	unsigned char	buf[PROXY_V2_MAX], body[PROXY_V2_MAX];
	struct expect	e4 = { 2, 0, AF_INET, "192.0.2.1", 56324, 0 };
	struct expect	e6 = { 2, 0, AF_INET6, "2001:db8::1", 65535, 0 };
	struct expect	el = { 2, 1, 0, NULL, 0, 0 };
	size_t		n, tlv;

	/* PROXY TCP4, TCP6 */
	e4.len = n = v2_build(buf, sizeof(buf), 0x21, 0x11, 12, a4, 12);
	check_valid(buf, n, &e4);
	e6.len = n = v2_build(buf, sizeof(buf), 0x21, 0x21, 36, a6, 36);
	check_valid(buf, n, &e6);

	/* LOCAL: no address block, or one that is skipped */
	el.len = n = v2_build(buf, sizeof(buf), 0x20, 0x00, 0, NULL, 0);
	check_valid(buf, n, &el);
	el.len = n = v2_build(buf, sizeof(buf), 0x20, 0x11, 12, a4, 12);
	check_valid(buf, n, &el);
	el.len = n = v2_build(buf, sizeof(buf), 0x20, 0x21, 36, a6, 36);
	check_valid(buf, n, &el);
	/* for LOCAL the family is ignored (spec §2.2), whatever it says */
	el.len = n = v2_build(buf, sizeof(buf), 0x20, 0x12, 0, NULL, 0);
	check_valid(buf, n, &el);
	el.len = n = v2_build(buf, sizeof(buf), 0x20, 0x31, 4, a4, 4);
	check_valid(buf, n, &el);
	el.len = n = v2_build(buf, sizeof(buf), 0x20, 0x11, 0, NULL, 0);
	check_valid(buf, n, &el);

	/* PROXY with UNSPEC: use the real connection endpoints */
	el.len = n = v2_build(buf, sizeof(buf), 0x21, 0x00, 0, NULL, 0);
	check_valid(buf, n, &el);
	el.len = n = v2_build(buf, sizeof(buf), 0x21, 0x00, 5, a4, 5);
	check_valid(buf, n, &el);

	/* TLVs after the addresses: ALPN "h2", then a NOOP */
	memcpy(body, a4, 12);
	tlv = 12;
	memcpy(body + tlv, "\x01\x00\x02h2", 5);
	tlv += 5;
	memcpy(body + tlv, "\x04\x00\x03\0\0\0", 6);
	tlv += 6;
	e4.len = n = v2_build(buf, sizeof(buf), 0x21, 0x11, tlv, body, tlv);
	check_valid(buf, n, &e4);
	memcpy(body, a6, 36);
	memcpy(body + 36, "\x01\x00\x02h2", 5);
	e6.len = n = v2_build(buf, sizeof(buf), 0x21, 0x21, 41, body, 41);
	check_valid(buf, n, &e6);

	/* the largest accepted: PROXY_V2_MAX in all, TLVs unread */
	memset(body, 0xee, sizeof(body));
	memcpy(body, a6, 36);
	e6.len = n = v2_build(buf, sizeof(buf), 0x21, 0x21,
	    PROXY_V2_MAX - 16, body, PROXY_V2_MAX - 16);
	CU_ASSERT_EQUAL(n, PROXY_V2_MAX);
	check_valid(buf, n, &e6);
	el.len = n = v2_build(buf, sizeof(buf), 0x20, 0x00,
	    PROXY_V2_MAX - 16, body, PROXY_V2_MAX - 16);
	check_valid(buf, n, &el);

	/*
	 * An IPv4 family with an IPv6-sized block: the 24 bytes past the
	 * 12 of addresses are TLV space, which we do not parse.
	 */
	memset(body, 0, sizeof(body));
	memcpy(body, a4, 12);
	e4.len = n = v2_build(buf, sizeof(buf), 0x21, 0x11, 36, body, 36);
	check_valid(buf, n, &e4);
}

static void
test_v1_bad(void)
{
	static const struct {
		const char	*s;
		size_t		 bad_at;	/* first BAD prefix */
	} cases[] = {
		/* not a PROXY header at all */
		{ "GET / HTTP/1.1\r\n", 1 },
		{ "\x16\x03\x01\x02\x00", 1 },
		{ "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 1 },
		{ "PROXx", 5 },
		{ "PROXY\r\n", 6 },
		{ " PROXY TCP4", 1 },
		/* protocol */
		{ "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 10 },
		{ "PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n", 10 },
		{ "PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n", 11 },
		{ "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 7 },
		{ "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 8 },
		{ "PROXY TCP4\r\n", 11 },
		{ "PROXY UNKNOWNX\r\n", 14 },
		{ "PROXY UNKNOWN\n", 14 },
		{ "PROXY UNKNOWN\r\r\n", 15 },
		{ "PROXY UNKNOW\r\n", 13 },
		{ "PROXY UNKNOWN foo\nbar\r\n", 18 },
		{ "PROXY UNKNOWN foo\rbar\r\n", 19 },
		/* spaces */
		{ "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 7 },
		{ "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 12 },
		{ "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", 20 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", 28 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", 30 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 31 },
		{ "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", 11 },
		{ "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", 19 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 31 },
		/* line ends */
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 31 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", 32 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET / HTTP/1.1\r\n", 32 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r", 31 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 29 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8\r\n", 27 },
		/* addresses */
		{ "PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n", 21 },
		{ "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 17 },
		{ "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", 21 },
		{ "PROXY TCP4 1.2.3. 5.6.7.8 1 2\r\n", 18 },
		{ "PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n", 18 },
		{ "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", 20 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.888 1 2\r\n", 29 },
		{ "PROXY TCP4 1.2.3.4 5.6.7 1 2\r\n", 25 },
		{ "PROXY TCP4 0000000000000000 5.6.7.8 1 2\r\n", 27 },
		{ "PROXY TCP4 ::1 ::1 1 2\r\n", 12 },
		{ "PROXY TCP4 a.b.c.d 5.6.7.8 1 2\r\n", 12 },
		{ "PROXY TCP4 -1.2.3.4 5.6.7.8 1 2\r\n", 12 },
		{ "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", 19 },
		{ "PROXY TCP6 2001:db8::g ::1 1 2\r\n", 22 },
		{ "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", 29 },
		{ "PROXY TCP6 1::2::3 ::1 1 2\r\n", 19 },
		{ "PROXY TCP6 ::1 :::1 1 2\r\n", 20 },
		{ "PROXY TCP6 ::1%eth0 ::1 1 2\r\n", 15 },
		{ "PROXY TCP6 [::1] ::1 1 2\r\n", 12 },
		{ "PROXY TCP6 "
		    "0000000000000000000000000000000000000000000000"
		    " ::1 1 2\r\n",
		    57 },
		/* ports */
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n", 32 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 99999 443\r\n", 32 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 443 65536\r\n", 36 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 123456 443\r\n", 33 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n", 29 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 00 443\r\n", 29 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 443 080\r\n", 33 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 +1 443\r\n", 28 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 -1 443\r\n", 28 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 0x10 443\r\n", 29 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1a 443\r\n", 29 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 44a\r\n", 32 },
		/* NUL bytes */
		{ "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 19 },
	};
	size_t	i, len;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		len = strlen(cases[i].s);
		if (cases[i].bad_at > len)	/* a NUL inside */
			len = cases[i].bad_at;
		check_bad_at((const unsigned char *)cases[i].s, len,
		    cases[i].bad_at, cases[i].s);
	}
}

static void
test_v1_length(void)
{
	struct proxy_info	pi;
	unsigned char		buf[300];
	size_t			n;

	/* 108 bytes with the CRLF: too long, known as soon as byte 107 */
	memcpy(buf, "PROXY UNKNOWN ", 14);
	n = 14;
	memset(buf + n, 'x', 108 - 2 - n);
	n = 106;
	memcpy(buf + n, "\r\n", 2);
	n += 2;
	check_bad_at(buf, n, PROXY_V1_MAX, "108-byte UNKNOWN");

	/* one byte shorter is fine */
	memcpy(buf + 105, "\r\n", 2);
	CU_ASSERT_EQUAL(proxy_parse(buf, 107, &pi), PROXY_OK);
	CU_ASSERT_EQUAL(pi.len, 107);

	/* no line end at all */
	memset(buf + 14, 'x', sizeof(buf) - 14);
	check_bad_at(buf, sizeof(buf), PROXY_V1_MAX, "endless UNKNOWN");

	/* a line ending in LF only, 107 bytes long */
	memset(buf + 14, 'x', sizeof(buf) - 14);
	buf[106] = '\n';
	check_bad_at(buf, 107, 107, "LF-only UNKNOWN");
}

static void
test_v2_bad(void)
{
	static const unsigned char	a6[36] = { 0x20, 0x01, 0x0d, 0xb8 };
	static const unsigned char	fams[] = {
		0x01, 0x02, 0x10, 0x12, 0x13, 0x20, 0x22, 0x23, 0x30, 0x31,
		0x32, 0x41, 0xff
	};
	static const unsigned char	vercmds[] = {
		0x00, 0x01, 0x10, 0x11, 0x30, 0x31, 0xf1, 0x22, 0x23, 0x2f
	};
	unsigned char	buf[PROXY_V2_MAX + 64], body[PROXY_V2_MAX + 64];
	size_t		i, n;

	memset(body, 0, sizeof(body));
	memcpy(body, a6, sizeof(a6));

	/* signature: wrong at each of its 12 bytes */
	for (i = 0; i < 12; i++) {
		n = v2_build(buf, sizeof(buf), 0x21, 0x11, 12, body, 12);
		buf[i] ^= 0x20;
		check_bad_at(buf, n, i + 1, "v2 signature");
	}
	/* "\r\n\r\n" then an HTTP request */
	check_bad_at(LIT("\r\n\r\nGET / HTTP/1.1\r\n"), 5, "CRLFCRLF GET");
	check_bad_at(LIT("\r\nGET / HTTP/1.1\r\n"), 3, "CRLF GET");

	/* version 0, 1, 3, 15; command 2, 3, 15 */
	for (i = 0; i < sizeof(vercmds); i++) {
		n = v2_build(buf, sizeof(buf), vercmds[i], 0x11, 12, body, 12);
		check_bad_at(buf, n, 13, "v2 version/command");
	}

	/* PROXY command: UDP, AF_UNIX, unassigned; never for LOCAL */
	for (i = 0; i < sizeof(fams); i++) {
		n = v2_build(buf, sizeof(buf), 0x21, fams[i], 36, body, 36);
		check_bad_at(buf, n, 14, "v2 family");
	}

	/* address block shorter than the family needs */
	for (i = 0; i < 12; i++) {
		n = v2_build(buf, sizeof(buf), 0x21, 0x11, i, body, i);
		check_bad_at(buf, 16 + 12, 16, "v2 short TCP4");
	}
	for (i = 0; i < 36; i++) {
		n = v2_build(buf, sizeof(buf), 0x21, 0x21, i, body, i);
		check_bad_at(buf, 16 + 36, 16, "v2 short TCP6");
	}
	/* an IPv6 family with an IPv4-sized block */
	n = v2_build(buf, sizeof(buf), 0x21, 0x21, 12, body, 12);
	check_bad_at(buf, n, 16, "v2 TCP6 with 12 bytes");

	/* over PROXY_V2_MAX: at the high byte when it alone says so */
	n = v2_build(buf, sizeof(buf), 0x21, 0x21, PROXY_V2_MAX - 16 + 1,
	    body, PROXY_V2_MAX - 16 + 1);
	check_bad_at(buf, n, 16, "v2 length 217");
	n = v2_build(buf, sizeof(buf), 0x20, 0x00, 255, body, 255);
	check_bad_at(buf, n, 16, "v2 LOCAL length 255");
	n = v2_build(buf, sizeof(buf), 0x21, 0x11, 256, body, 20);
	check_bad_at(buf, n, 15, "v2 length 256");
	n = v2_build(buf, sizeof(buf), 0x20, 0x00, 0xffff, body, 20);
	check_bad_at(buf, n, 15, "v2 length 65535");
}

/* Nothing is decided on too few bytes, and an empty buffer is fine. */
static void
test_edges(void)
{
	struct proxy_info	pi;

	memset(&pi, 0xa5, sizeof(pi));
	CU_ASSERT_EQUAL(proxy_parse(NULL, 0, &pi), PROXY_INCOMPLETE);
	CU_ASSERT(memcmp(&pi, zero_pi, sizeof(pi)) == 0);
	CU_ASSERT_EQUAL(proxy_parse(LIT("P"), &pi), PROXY_INCOMPLETE);
	CU_ASSERT_EQUAL(proxy_parse(LIT("\r"), &pi), PROXY_INCOMPLETE);
	CU_ASSERT_EQUAL(proxy_parse(LIT("\n"), &pi), PROXY_BAD);
	CU_ASSERT_EQUAL(proxy_parse(LIT("\0"), &pi), PROXY_BAD);
	CU_ASSERT_EQUAL(proxy_parse(LIT("PROXY TCP6 2001:db8::1 ::1 1 2"),
	    &pi), PROXY_INCOMPLETE);
	CU_ASSERT(memcmp(&pi, zero_pi, sizeof(pi)) == 0);
}

static CU_TestInfo proxy_valid_tests[] = {
	{ "v1 TCP4, TCP6, UNKNOWN", test_v1_valid },
	{ "v2 TCP4, TCP6, LOCAL, TLVs", test_v2_valid },
	CU_TEST_INFO_NULL
};

static CU_TestInfo proxy_malformed_tests[] = {
	{ "v1 syntax", test_v1_bad },
	{ "v1 length", test_v1_length },
	{ "v2", test_v2_bad },
	{ "edges", test_edges },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "proxy_valid", NULL, NULL, NULL, NULL, proxy_valid_tests },
	{ "proxy_malformed", NULL, NULL, NULL, NULL, proxy_malformed_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
