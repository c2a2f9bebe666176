/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * libFuzzer harness for the PROXY header parser (src/proxy.c).  Besides
 * memory errors it checks the parser's promises: a parsed header lies in
 * the input and has a source address of the right size, or none when
 * local, that agrees with the header's text (read again here with
 * strtok_r, inet_pton and strtonum) or bytes; the input cut at the
 * header's end parses the same; every prefix follows INCOMPLETE... then
 * one verdict that more bytes never change; and PROXY_V2_MAX bytes are
 * always enough for a verdict.  Each prefix
 * is parsed from its own buffer of exactly its size, so reading past the
 * length given is caught by AddressSanitizer.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define CHECK(e)	do { if (!(e)) abort(); } while (0)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static enum proxy_result
parse_exact(const uint8_t *data, size_t len, struct proxy_info *pi)
{
	enum proxy_result	 r;
	unsigned char		*copy;

	if ((copy = malloc(len ? len : 1)) == NULL)
		abort();
	memcpy(copy, data, len);
	r = proxy_parse(copy, len, pi);
	free(copy);
	return r;
}

static int
same_info(const struct proxy_info *a, const struct proxy_info *b)
{
	return a->version == b->version && a->local == b->local &&
	    a->srclen == b->srclen && a->len == b->len &&
	    memcmp(&a->src, &b->src, sizeof(a->src)) == 0;
}

static int
all_zero(const void *p, size_t len)
{
	const unsigned char	*c = p;
	size_t			 i;

	for (i = 0; i < len; i++)
		if (c[i] != 0)
			return 0;
	return 1;
}

/* A v1 port field: decimal, no leading zero, 0..65535. */
static long long
v1_port(const char *s)
{
	const char	*errstr;
	long long	 v;

	CHECK(strspn(s, "0123456789") == strlen(s));
	CHECK(s[0] != '0' || s[1] == '\0');
	v = strtonum(s, 0, 65535, &errstr);
	CHECK(errstr == NULL);
	return v;
}

/* The v1 line split on single spaces must say what the parser found. */
static void
check_v1_text(const uint8_t *data, const struct proxy_info *pi)
{
	char				 line[PROXY_V1_MAX + 1], *f[6];
	char				*p, *last;
	const struct sockaddr_in	*sin = (const void *)&pi->src;
	const struct sockaddr_in6	*sin6 = (const void *)&pi->src;
	unsigned char			 a[16];
	int				 n, af;

	CHECK(memchr(data, '\r', pi->len - 2) == NULL);
	CHECK(memchr(data, '\n', pi->len - 2) == NULL);
	if (pi->local) {
		/* after "UNKNOWN " anything but CR and LF, even NUL */
		CHECK(memcmp(data, "PROXY UNKNOWN", 13) == 0);
		CHECK(pi->len == 15 || data[13] == ' ');
		return;
	}
	memcpy(line, data, pi->len - 2);
	line[pi->len - 2] = '\0';
	CHECK(strlen(line) == pi->len - 2);	/* no NUL inside */
	CHECK(strstr(line, "  ") == NULL && line[strlen(line) - 1] != ' ');
	n = 0;
	for (p = strtok_r(line, " ", &last); p != NULL;
	    p = strtok_r(NULL, " ", &last)) {
		CHECK(n < 6);
		f[n++] = p;
	}
	CHECK(n == 6);
	CHECK(strcmp(f[0], "PROXY") == 0);
	if (strcmp(f[1], "TCP4") == 0)
		af = AF_INET;
	else {
		CHECK(strcmp(f[1], "TCP6") == 0);
		af = AF_INET6;
	}
	CHECK(pi->src.ss_family == af);
	CHECK(inet_pton(af, f[3], a) == 1);
	CHECK(inet_pton(af, f[2], a) == 1);
	(void)v1_port(f[5]);
	if (af == AF_INET) {
		CHECK(memcmp(&sin->sin_addr, a, 4) == 0);
		CHECK(ntohs(sin->sin_port) == v1_port(f[4]));
	} else {
		CHECK(memcmp(&sin6->sin6_addr, a, 16) == 0);
		CHECK(ntohs(sin6->sin6_port) == v1_port(f[4]));
	}
}

/* The v2 address block must be what the parser found. */
static void
check_v2_bytes(const uint8_t *data, const struct proxy_info *pi)
{
	const struct sockaddr_in	*sin = (const void *)&pi->src;
	const struct sockaddr_in6	*sin6 = (const void *)&pi->src;

	if (pi->local) {
		CHECK(data[12] == 0x20 || (data[12] == 0x21 && data[13] == 0));
		return;
	}
	CHECK(data[12] == 0x21);
	if (pi->src.ss_family == AF_INET) {
		CHECK(data[13] == 0x11 && pi->len >= 16 + 12);
		CHECK(memcmp(&sin->sin_addr, data + 16, 4) == 0);
		CHECK(memcmp(&sin->sin_port, data + 24, 2) == 0);
	} else {
		CHECK(data[13] == 0x21 && pi->len >= 16 + 36);
		CHECK(memcmp(&sin6->sin6_addr, data + 16, 16) == 0);
		CHECK(memcmp(&sin6->sin6_port, data + 48, 2) == 0);
	}
}

static void
check_ok(const uint8_t *data, size_t size, const struct proxy_info *pi)
{
	CHECK(pi->len > 0 && pi->len <= size);
	CHECK(pi->version == 1 || pi->version == 2);
	if (pi->version == 1) {
		CHECK(pi->len <= PROXY_V1_MAX);
		CHECK(memcmp(data, "PROXY ", 6) == 0);
		CHECK(data[pi->len - 2] == '\r' && data[pi->len - 1] == '\n');
	} else {
		CHECK(pi->len >= 16 && pi->len <= PROXY_V2_MAX);
		CHECK(memcmp(data, "\r\n\r\n\0\r\nQUIT\n", 12) == 0);
		CHECK(pi->len == 16 + ((size_t)data[14] << 8 | data[15]));
	}
	if (pi->local) {
		CHECK(pi->local == 1);
		CHECK(pi->srclen == 0);
		CHECK(all_zero(&pi->src, sizeof(pi->src)));
	} else if (pi->src.ss_family == AF_INET) {
		CHECK(pi->srclen == sizeof(struct sockaddr_in));
		CHECK(all_zero((const char *)&pi->src + pi->srclen,
		    sizeof(pi->src) - pi->srclen));
	} else {
		CHECK(pi->src.ss_family == AF_INET6);
		CHECK(pi->srclen == sizeof(struct sockaddr_in6));
		CHECK(all_zero((const char *)&pi->src + pi->srclen,
		    sizeof(pi->src) - pi->srclen));
	}
	if (pi->version == 1)
		check_v1_text(data, pi);
	else
		check_v2_bytes(data, pi);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_info	pi, pj;
	enum proxy_result	r, rp, seen;
	size_t			m, upto;

	r = proxy_parse(data, size, &pi);
	CHECK(r == PROXY_INCOMPLETE || r == PROXY_OK || r == PROXY_BAD);
	if (r != PROXY_OK)
		CHECK(all_zero(&pi, sizeof(pi)));
	else
		check_ok(data, size, &pi);
	/* a bounded header: a full buffer always has a verdict */
	if (size >= PROXY_V2_MAX)
		CHECK(r != PROXY_INCOMPLETE);

	/*
	 * Prefixes: INCOMPLETE up to a point, then the verdict of the whole,
	 * unchanged by more bytes.  An OK is reached at exactly pi.len.
	 */
	upto = size < PROXY_V2_MAX + 1 ? size : PROXY_V2_MAX + 1;
	seen = PROXY_INCOMPLETE;
	for (m = 0; m <= upto; m++) {
		rp = parse_exact(data, m, &pj);
		if (seen == PROXY_INCOMPLETE) {
			seen = rp;
			if (rp == PROXY_OK)
				CHECK(r == PROXY_OK && m == pi.len);
			if (rp == PROXY_BAD)
				CHECK(r == PROXY_BAD);
		} else
			CHECK(rp == seen);
		if (rp == PROXY_OK)
			CHECK(same_info(&pi, &pj));
		else
			CHECK(all_zero(&pj, sizeof(pj)));
	}
	CHECK(seen == r);
	return 0;
}
