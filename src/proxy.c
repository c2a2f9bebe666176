/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * PROXY protocol header parser, versions 1 (text) and 2 (binary), after
 * HAProxy's proxy-protocol.txt.  Restartable: it is handed the whole buffer
 * after every read, keeps no state between calls, and says PROXY_BAD as
 * soon as the bytes seen so far cannot begin a valid header, so a client
 * speaking plain HTTP to a proxy-protocol listener is dropped at once.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <string.h>

#include "proxy.h"

#define V1_SIG		"PROXY "
#define V2_SIG		"\r\n\r\n\0\r\nQUIT\n"
#define V2_SIGLEN	12
#define V2_HDRLEN	16	/* signature, ver_cmd, fam, len */
#define V2_PAYLOAD_MAX	(PROXY_V2_MAX - V2_HDRLEN)

#define V2_VERSION	0x20
#define V2_CMD_LOCAL	0x00
#define V2_CMD_PROXY	0x01
#define V2_FAM_UNSPEC	0x00
#define V2_FAM_TCP4	0x11
#define V2_FAM_TCP6	0x21
#define V2_ADDR_TCP4	12	/* src, dst addresses, src, dst ports */
#define V2_ADDR_TCP6	36

#define V1_ADDR4_MAX	15	/* "255.255.255.255" */
#define V1_ADDR6_MAX	45	/* INET6_ADDRSTRLEN - 1 */
#define V1_PORT_DIGITS	5

/*
 * Matches the literal lit at buf[*off]: PROXY_BAD at the first differing
 * byte, PROXY_INCOMPLETE if the buffer ends inside it, else advances *off.
 */
static enum proxy_result
match_lit(const unsigned char *buf, size_t len, size_t *off, const char *lit,
    size_t litlen)
{
	size_t	i;

	for (i = 0; i < litlen; i++) {
		if (*off + i >= len)
			return PROXY_INCOMPLETE;
		if (buf[*off + i] != (unsigned char)lit[i])
			return PROXY_BAD;
	}
	*off += litlen;
	return PROXY_OK;
}

static int
v1_addr_char(int af, unsigned char c)
{
	if (c >= '0' && c <= '9')
		return 1;
	if (c == '.')
		return 1;
	if (af == AF_INET)
		return 0;
	return c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * A v1 address ending in a space, which is consumed.  The text is checked
 * byte by byte (charset, length) so garbage fails early, then by inet_pton.
 */
static enum proxy_result
v1_addr(const unsigned char *buf, size_t len, size_t *off, int af, void *dst)
{
	char	 text[V1_ADDR6_MAX + 1];
	size_t	 i, max;

	max = af == AF_INET ? V1_ADDR4_MAX : V1_ADDR6_MAX;
	for (i = 0; *off + i < len; i++) {
		if (buf[*off + i] == ' ')
			break;
		if (i >= max || !v1_addr_char(af, buf[*off + i]))
			return PROXY_BAD;
		text[i] = buf[*off + i];
	}
	if (*off + i >= len)
		return PROXY_INCOMPLETE;
	if (i == 0)
		return PROXY_BAD;
	text[i] = '\0';
	if (inet_pton(af, text, dst) != 1)
		return PROXY_BAD;
	*off += i + 1;
	return PROXY_OK;
}

/*
 * A v1 port: 0..65535 in decimal with no leading zero, ending at the byte
 * term, which is consumed.
 */
static enum proxy_result
v1_port(const unsigned char *buf, size_t len, size_t *off, unsigned char term,
    in_port_t *port)
{
	unsigned int	 val = 0;
	size_t		 i;
	unsigned char	 c;

	for (i = 0; *off + i < len; i++) {
		c = buf[*off + i];
		if (c == term)
			break;
		if (c < '0' || c > '9' || i >= V1_PORT_DIGITS)
			return PROXY_BAD;
		/* "0" only as the whole port */
		if (i == 1 && val == 0)
			return PROXY_BAD;
		val = val * 10 + (c - '0');
		if (val > 65535)
			return PROXY_BAD;
	}
	if (*off + i >= len)
		return PROXY_INCOMPLETE;
	if (i == 0)
		return PROXY_BAD;
	*port = htons((in_port_t)val);
	*off += i + 1;
	return PROXY_OK;
}

/* "PROXY UNKNOWN" then CRLF, or a space and anything up to the CRLF. */
static enum proxy_result
v1_unknown(const unsigned char *buf, size_t len, size_t off,
    struct proxy_info *pi)
{
	enum proxy_result	r;

	if (off >= len)
		return PROXY_INCOMPLETE;
	if (buf[off] == ' ') {
		/* the spec has the receiver ignore what the sender put here */
		for (off++; off < len && buf[off] != '\r'; off++)
			if (buf[off] == '\n')
				return PROXY_BAD;
	} else if (buf[off] != '\r')
		return PROXY_BAD;
	if ((r = match_lit(buf, len, &off, "\r\n", 2)) != PROXY_OK)
		return r;
	pi->version = 1;
	pi->local = 1;
	pi->len = off;
	return PROXY_OK;
}

/*
 * "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n" with single spaces,
 * or "PROXY UNKNOWN ...\r\n", in buf[0..len) which the caller has cut
 * to PROXY_V1_MAX.
 */
static enum proxy_result
v1_parse(const unsigned char *buf, size_t len, struct proxy_info *pi)
{
	struct sockaddr_in	 sin;
	struct sockaddr_in6	 sin6;
	struct in6_addr		 dst6;
	struct in_addr		 dst4;
	enum proxy_result	 r;
	size_t			 off = 0;
	in_port_t		 sport, dport;
	int			 af;

	if ((r = match_lit(buf, len, &off, V1_SIG, strlen(V1_SIG))) !=
	    PROXY_OK)
		return r;

	/* "TCP4 ", "TCP6 " or "UNKNOWN", rejected at the first wrong byte */
	if (off >= len)
		return PROXY_INCOMPLETE;
	if (buf[off] == 'U') {
		if ((r = match_lit(buf, len, &off, "UNKNOWN", 7)) != PROXY_OK)
			return r;
		return v1_unknown(buf, len, off, pi);
	}
	if ((r = match_lit(buf, len, &off, "TCP", 3)) != PROXY_OK)
		return r;
	if (off >= len)
		return PROXY_INCOMPLETE;
	if (buf[off] == '4')
		af = AF_INET;
	else if (buf[off] == '6')
		af = AF_INET6;
	else
		return PROXY_BAD;
	off++;
	if ((r = match_lit(buf, len, &off, " ", 1)) != PROXY_OK)
		return r;

	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if ((r = v1_addr(buf, len, &off, af, af == AF_INET ?
	    (void *)&sin.sin_addr : (void *)&sin6.sin6_addr)) != PROXY_OK)
		return r;
	if ((r = v1_addr(buf, len, &off, af, af == AF_INET ?
	    (void *)&dst4 : (void *)&dst6)) != PROXY_OK)
		return r;
	if ((r = v1_port(buf, len, &off, ' ', &sport)) != PROXY_OK)
		return r;
	/* the line ends in CRLF; a bare LF or CR is not a line end */
	if ((r = v1_port(buf, len, &off, '\r', &dport)) != PROXY_OK)
		return r;
	if ((r = match_lit(buf, len, &off, "\n", 1)) != PROXY_OK)
		return r;

	pi->version = 1;
	pi->local = 0;
	pi->len = off;
	if (af == AF_INET) {
		sin.sin_family = AF_INET;
		sin.sin_port = sport;
		memcpy(&pi->src, &sin, sizeof(sin));
		pi->srclen = sizeof(sin);
	} else {
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = sport;
		memcpy(&pi->src, &sin6, sizeof(sin6));
		pi->srclen = sizeof(sin6);
	}
	/* the destination address and port are checked for syntax only */
	return PROXY_OK;
}

/*
 * The binary header: 12-byte signature, version/command, family/protocol,
 * 16-bit big-endian length of what follows (addresses, then TLVs, which
 * are skipped unread).
 */
static enum proxy_result
v2_parse(const unsigned char *buf, size_t len, struct proxy_info *pi)
{
	struct sockaddr_in	 sin;
	struct sockaddr_in6	 sin6;
	enum proxy_result	 r;
	size_t			 off = 0, alen, plen;
	int			 local;

	if ((r = match_lit(buf, len, &off, V2_SIG, V2_SIGLEN)) != PROXY_OK)
		return r;

	if (len <= 12)
		return PROXY_INCOMPLETE;
	if ((buf[12] & 0xf0) != V2_VERSION)
		return PROXY_BAD;
	switch (buf[12] & 0x0f) {
	case V2_CMD_LOCAL:
		local = 1;
		break;
	case V2_CMD_PROXY:
		local = 0;
		break;
	default:
		return PROXY_BAD;
	}

	if (len <= 13)
		return PROXY_INCOMPLETE;
	alen = 0;
	if (!local) {
		switch (buf[13]) {
		case V2_FAM_TCP4:
			alen = V2_ADDR_TCP4;
			break;
		case V2_FAM_TCP6:
			alen = V2_ADDR_TCP6;
			break;
		case V2_FAM_UNSPEC:
			/* spec: may be accepted, using the real endpoints */
			local = 1;
			break;
		default:
			/* UDP, AF_UNIX, and anything unassigned */
			return PROXY_BAD;
		}
	}
	/* for LOCAL the spec has the family ignored, address block and all */

	if (len <= 14)
		return PROXY_INCOMPLETE;
	if ((size_t)buf[14] << 8 > V2_PAYLOAD_MAX)
		return PROXY_BAD;
	if (len <= 15)
		return PROXY_INCOMPLETE;
	plen = (size_t)buf[14] << 8 | buf[15];
	if (plen > V2_PAYLOAD_MAX || plen < alen)
		return PROXY_BAD;
	if (len < V2_HDRLEN + plen)
		return PROXY_INCOMPLETE;

	pi->version = 2;
	pi->local = local;
	pi->len = V2_HDRLEN + plen;
	if (local)
		return PROXY_OK;
	off = V2_HDRLEN;
	if (alen == V2_ADDR_TCP4) {
		/* src addr 4, dst addr 4, src port 2, dst port 2 */
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		memcpy(&sin.sin_addr, buf + off, 4);
		memcpy(&sin.sin_port, buf + off + 8, 2);
		memcpy(&pi->src, &sin, sizeof(sin));
		pi->srclen = sizeof(sin);
	} else {
		/* src addr 16, dst addr 16, src port 2, dst port 2 */
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		memcpy(&sin6.sin6_addr, buf + off, 16);
		memcpy(&sin6.sin6_port, buf + off + 32, 2);
		memcpy(&pi->src, &sin6, sizeof(sin6));
		pi->srclen = sizeof(sin6);
	}
	return PROXY_OK;
}

enum proxy_result
proxy_parse(const unsigned char *buf, size_t len, struct proxy_info *pi)
{
	enum proxy_result	r;

	memset(pi, 0, sizeof(*pi));
	if (len == 0)
		return PROXY_INCOMPLETE;
	if (buf[0] == V1_SIG[0]) {
		/* a v1 line with no CRLF in its first 107 bytes never ends */
		r = v1_parse(buf, len < PROXY_V1_MAX ? len : PROXY_V1_MAX, pi);
		if (r == PROXY_INCOMPLETE && len >= PROXY_V1_MAX)
			r = PROXY_BAD;
	} else if (buf[0] == (unsigned char)V2_SIG[0])
		r = v2_parse(buf, len, pi);
	else
		r = PROXY_BAD;
	if (r != PROXY_OK)
		memset(pi, 0, sizeof(*pi));
	return r;
}
