/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * HTTP/1.x request head parser (docs/protocol.md §2, RFC 9112 §2-§5,
 * RFC 6455 §4.2); the answers are in http_response.c.  The parser is
 * incremental: a connection keeps a struct http_parser, and each read goes
 * on from the line the last one had not finished, so a head trickled a byte
 * at a time costs no more than one read at once (docs/protocol.md §2 limits it
 * to 16 KiB, but a restart per read made that 16 KiB cost its square).
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "http.h"

#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_B64LEN	24	/* base64 of the 16-byte nonce */
#define ACME_PREFIX	"/.well-known/acme-challenge/"

static int
is_tchar(unsigned char c)
{
	/* RFC 9110 §5.6.2 */
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int
is_ows(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static unsigned char
ascii_lower(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 'a';
	return c;
}

/* Case-insensitive compare of s[0..len) with the NUL-terminated lit. */
static int
ascii_ieq(const char *s, size_t len, const char *lit)
{
	size_t	i;

	if (len != strlen(lit))
		return 0;
	for (i = 0; i < len; i++)
		if (ascii_lower(s[i]) != ascii_lower(lit[i]))
			return 0;
	return 1;
}

/* Exact (case-sensitive) compare of s[0..len) with lit. */
static int
bytes_eq(const char *s, size_t len, const char *lit)
{
	return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/* Copies s[0..len) into dst, cut to fit, always NUL-terminated. */
static void
copy_bounded(char *dst, size_t dstsz, const char *s, size_t len)
{
	if (len >= dstsz)
		len = dstsz - 1;
	memcpy(dst, s, len);
	dst[len] = '\0';
}

/* Does the comma-separated list s[0..len) hold the token tok (any case)? */
static int
list_has_token(const char *s, size_t len, const char *tok)
{
	size_t	i, start, end;

	start = 0;
	for (i = 0; i <= len; i++) {
		if (i < len && s[i] != ',')
			continue;
		end = i;
		while (start < end && is_ows(s[start]))
			start++;
		while (end > start && is_ows(s[end - 1]))
			end--;
		if (ascii_ieq(s + start, end - start, tok))
			return 1;
		start = i + 1;
	}
	return 0;
}

static int
b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/*
 * RFC 6455 §4.1: the key is the base64 of a 16-byte nonce, so 22 alphabet
 * characters and "==".  The unused low bits of the last character are not
 * checked, like most decoders (Python's websockets among them).
 */
static int
ws_key_ok(const char *key, size_t len)
{
	size_t	i;

	if (len != WS_KEY_B64LEN)
		return 0;
	for (i = 0; i < WS_KEY_B64LEN - 2; i++)
		if (!b64_char(key[i]))
			return 0;
	return key[22] == '=' && key[23] == '=';
}

static enum http_path
match_path(const char *p, size_t len, struct http_request *req)
{
	size_t	plen = sizeof(ACME_PREFIX) - 1;

	if (bytes_eq(p, len, "/v1/server"))
		return HTTP_PATH_SERVER;
	if (bytes_eq(p, len, "/v1/client"))
		return HTTP_PATH_CLIENT;
	if (bytes_eq(p, len, "/healthz"))
		return HTTP_PATH_HEALTHZ;
	if (bytes_eq(p, len, "/metrics"))
		return HTTP_PATH_METRICS;
	/* the token is handed on raw; a token that does not fit is a 404 */
	if (len > plen && len - plen < sizeof(req->acme_token) &&
	    memcmp(p, ACME_PREFIX, plen) == 0) {
		copy_bounded(req->acme_token, sizeof(req->acme_token),
		    p + plen, len - plen);
		return HTTP_PATH_ACME;
	}
	return HTTP_PATH_OTHER;
}

/*
 * RFC 9112 §3.2.2: a server accepts the absolute-form ("http://host/path")
 * too, and its authority stands for the Host header, which is ignored.
 * Moves *target past the authority to the path ("/" when there is none);
 * -1 for an empty authority or one with userinfo.
 */
static int
absolute_form(const char **target, size_t *tlen, struct http_request *req)
{
	static const char	 root[] = "/";
	const char		*t = *target, *auth;
	size_t			 len = *tlen, skip, alen;

	if (len >= 7 && ascii_ieq(t, 7, "http://"))
		skip = 7;
	else if (len >= 8 && ascii_ieq(t, 8, "https://"))
		skip = 8;
	else
		return 0;
	auth = t + skip;
	for (alen = 0; skip + alen < len; alen++)
		if (auth[alen] == '/' || auth[alen] == '?' || auth[alen] == '#')
			break;
	if (alen == 0 || memchr(auth, '@', alen) != NULL)
		return -1;
	copy_bounded(req->host, sizeof(req->host), auth, alen);
	req->host_count = 1;
	req->host_in_target = 1;
	if (skip + alen == len || auth[alen] != '/') {
		/* no path: the root, and whatever query follows is ignored */
		*target = root;
		*tlen = 1;
		return 0;
	}
	*target = auth + alen;
	*tlen = len - skip - alen;
	return 0;
}

/* request-line = method SP request-target SP HTTP-version (RFC 9112 §3) */
static int
parse_request_line(const char *line, size_t len, struct http_request *req)
{
	const char	*sp1, *sp2, *target, *ver, *q;
	size_t		 i, tlen, rest;

	if ((sp1 = memchr(line, ' ', len)) == NULL || sp1 == line)
		return -1;
	for (i = 0; line + i < sp1; i++)
		if (!is_tchar(line[i]))
			return -1;
	req->method_get = bytes_eq(line, sp1 - line, "GET");
	req->method_head = bytes_eq(line, sp1 - line, "HEAD");

	target = sp1 + 1;
	rest = len - (target - line);
	if ((sp2 = memchr(target, ' ', rest)) == NULL)
		return -1;
	tlen = sp2 - target;
	for (i = 0; i < tlen; i++)
		if ((unsigned char)target[i] <= 0x20 ||
		    (unsigned char)target[i] >= 0x7f)
			return -1;
	if (absolute_form(&target, &tlen, req) == -1)
		return -1;
	if (tlen == 0 || target[0] != '/')
		return -1;

	ver = sp2 + 1;
	rest = len - (ver - line);
	if (rest != 8 || memcmp(ver, "HTTP/", 5) != 0 ||
	    ver[5] < '0' || ver[5] > '9' || ver[6] != '.' ||
	    ver[7] < '0' || ver[7] > '9')
		return -1;
	/* HTTP/0.9 and HTTP/2+ never arrive as an HTTP/1 request line */
	if (ver[5] != '1')
		return -1;
	req->version_major = 1;
	req->version_minor = ver[7] - '0';

	if ((q = memchr(target, '?', tlen)) != NULL)
		tlen = q - target;
	req->path = match_path(target, tlen, req);
	return 0;
}

/*
 * field-line = field-name ":" OWS field-value OWS (RFC 9112 §5); the line
 * is buf[off..off + len).
 */
static int
parse_header_line(const char *buf, size_t off, size_t len,
    struct http_request *req, struct http_head_scan *hs)
{
	const char	*line = buf + off, *colon, *v, *name;
	size_t		 i, nlen, vlen, cut;
	unsigned char	 c;

	/* obs-fold is rejected (RFC 9112 §5.2) */
	if (is_ows(line[0]))
		return -1;
	if ((colon = memchr(line, ':', len)) == NULL || colon == line)
		return -1;
	name = line;
	nlen = colon - line;
	/* no whitespace before the colon either (RFC 9112 §5.1) */
	for (i = 0; i < nlen; i++)
		if (!is_tchar(name[i]))
			return -1;
	v = colon + 1;
	vlen = len - nlen - 1;
	for (i = 0; i < vlen; i++) {
		c = v[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return -1;
	}
	while (vlen > 0 && is_ows(v[0])) {
		v++;
		vlen--;
	}
	while (vlen > 0 && is_ows(v[vlen - 1]))
		vlen--;

	if (ascii_ieq(name, nlen, "Host")) {
		if (req->host_in_target)
			;	/* ignored (RFC 9112 §3.2.2) */
		else if (req->host_count++ == 0)
			copy_bounded(req->host, sizeof(req->host), v, vlen);
	} else if (ascii_ieq(name, nlen, "X-Pyrycode-Server")) {
		if (hs->sid_count++ == 0) {
			hs->sid_off = v - buf;
			hs->sid_len = vlen;
		}
		if (vlen > 0)
			req->server_id_present = 1;
	} else if (ascii_ieq(name, nlen, "X-Pyrycode-Version")) {
		if (vlen > 0)
			req->version_present = 1;
	} else if (ascii_ieq(name, nlen, "X-Pyrycode-Token")) {
		/* docs/protocol.md §2: only its presence is ever looked at */
		if (vlen > 0)
			req->token_present = 1;
	} else if (ascii_ieq(name, nlen, "User-Agent")) {
		if (vlen > 0)
			req->user_agent_present = 1;
	} else if (ascii_ieq(name, nlen, "X-Pyrycode-Device-Name")) {
		if (hs->device_seen++ == 0) {
			/* cut on a UTF-8 character boundary */
			cut = vlen;
			if (cut > DEVICE_NAME_MAX) {
				cut = DEVICE_NAME_MAX;
				while (cut > 0 &&
				    ((unsigned char)v[cut] & 0xc0) == 0x80)
					cut--;
			}
			copy_bounded(req->device_name,
			    sizeof(req->device_name), v, cut);
		}
	} else if (ascii_ieq(name, nlen, "Connection")) {
		if (list_has_token(v, vlen, "upgrade"))
			req->conn_upgrade = 1;
	} else if (ascii_ieq(name, nlen, "Upgrade")) {
		if (list_has_token(v, vlen, "websocket"))
			req->upgrade_websocket = 1;
	} else if (ascii_ieq(name, nlen, "Sec-WebSocket-Version")) {
		if (hs->wsver_count++ == 0)
			hs->wsver_is_13 = bytes_eq(v, vlen, "13");
	} else if (ascii_ieq(name, nlen, "Sec-WebSocket-Key")) {
		if (req->ws_key_count++ == 0) {
			hs->key_off = v - buf;
			hs->key_len = vlen;
		}
	}
	return 0;
}

/* Decisions that need every header line. */
static void
finish_head(const char *buf, struct http_request *req,
    const struct http_head_scan *hs)
{
	const char	*sid = buf + hs->sid_off, *key = buf + hs->key_off;

	/*
	 * Two X-Pyrycode-Server headers name no single server-id: the
	 * request counts as one with an invalid server-id (400), whatever
	 * the values are.  server_id stays "" then.
	 */
	if (hs->sid_count == 1) {
		if (hs->sid_len >= 1 && hs->sid_len <= SERVER_ID_MAX)
			copy_bounded(req->server_id, sizeof(req->server_id),
			    sid, hs->sid_len);
		req->server_id_valid = server_id_valid(sid, hs->sid_len);
	}
	req->ws_version_13 = (hs->wsver_count == 1 && hs->wsver_is_13);
	if (req->ws_key_count == 1 && ws_key_ok(key, hs->key_len)) {
		req->ws_key_valid = 1;
		http_ws_accept(key, hs->key_len, req->ws_accept);
	}
}

void
http_parser_init(struct http_parser *hp, size_t max)
{
	memset(hp, 0, sizeof(*hp));
	hp->max = max;
	hp->result = HTTP_INCOMPLETE;
}

enum http_parse_result
http_parse_more(struct http_parser *hp, const char *buf, size_t len)
{
	const char	*nl;
	size_t		 window, linelen;

	if (hp->result != HTTP_INCOMPLETE)
		return hp->result;
	/* only the first max bytes can hold a head that is allowed */
	window = len < hp->max ? len : hp->max;
	/* bytes before scan hold no LF of the current line: never again */
	while (hp->scan < window &&
	    (nl = memchr(buf + hp->scan, '\n', window - hp->scan)) != NULL) {
		linelen = nl - (buf + hp->line);
		/* CRLF, or a bare LF (RFC 9112 §2.2) */
		if (linelen > 0 && buf[hp->line + linelen - 1] == '\r')
			linelen--;
		if (!hp->in_headers) {
			if (parse_request_line(buf + hp->line, linelen,
			    &hp->req) == -1)
				return hp->result = HTTP_BAD;
			hp->in_headers = 1;
		} else if (linelen == 0) {
			finish_head(buf, &hp->req, &hp->hs);
			hp->req.head_len = nl - buf + 1;
			return hp->result = HTTP_COMPLETE;
		} else if (parse_header_line(buf, hp->line, linelen, &hp->req,
		    &hp->hs) == -1)
			return hp->result = HTTP_BAD;
		hp->line = hp->scan = nl - buf + 1;
	}
	if (hp->scan < window)
		hp->scan = window;
	if (len > hp->max)
		return hp->result = HTTP_TOO_LARGE;
	return HTTP_INCOMPLETE;
}

enum http_parse_result
http_parse_head(const char *buf, size_t len, size_t max,
    struct http_request *req)
{
	struct http_parser	hp;
	enum http_parse_result	r;

	http_parser_init(&hp, max);
	r = http_parse_more(&hp, buf, len);
	memcpy(req, &hp.req, sizeof(*req));
	return r;
}

/*
 * docs/protocol.md §2 steps 4 (header gate) and 5 (handshake), in that order.
 * A bad Sec-WebSocket-Version and a bad key both give 400; the caller tells
 * them apart with !req->ws_version_13 to add "Sec-WebSocket-Version: 13".
 * Paths other than /v1/server and /v1/client fail the header gate.
 */
int
http_upgrade_status(const struct http_request *req)
{
	switch (req->path) {
	case HTTP_PATH_SERVER:
		if (!req->server_id_present || !req->version_present ||
		    !req->user_agent_present)
			return 400;
		break;
	case HTTP_PATH_CLIENT:
		if (!req->server_id_present || !req->token_present ||
		    !req->user_agent_present)
			return 400;
		break;
	default:
		return 400;
	}
	if (!req->server_id_valid)
		return 400;

	if (req->version_major < 1 ||
	    (req->version_major == 1 && req->version_minor < 1) ||
	    !req->conn_upgrade || !req->upgrade_websocket)
		return 426;
	if (!req->method_get)
		return 405;
	if (!req->ws_version_13)
		return 400;
	if (!req->ws_key_valid)
		return 400;
	return 0;
}

/*
 * SHA-1 is fetched from the provider once, and the context made once: an
 * implicit fetch (EVP_sha1() in EVP_DigestInit_ex) looks the algorithm up
 * under a lock for every handshake, and a context was allocated and freed
 * for each.
 */
void
http_ws_accept(const char *key, size_t keylen, char out[WS_ACCEPT_LEN + 1])
{
	static EVP_MD		*sha1;
	static EVP_MD_CTX	*ctx;
	unsigned char		 md[EVP_MAX_MD_SIZE];
	unsigned int		 mdlen;

	if (sha1 == NULL && (sha1 = EVP_MD_fetch(NULL, "SHA1", NULL)) == NULL)
		fatalx("http_ws_accept: no SHA-1");
	if (ctx == NULL && (ctx = EVP_MD_CTX_new()) == NULL)
		fatalx("http_ws_accept: EVP_MD_CTX_new failed");
	if (EVP_DigestInit_ex2(ctx, sha1, NULL) != 1 ||
	    EVP_DigestUpdate(ctx, key, keylen) != 1 ||
	    EVP_DigestUpdate(ctx, WS_GUID, strlen(WS_GUID)) != 1 ||
	    EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 20)
		fatalx("http_ws_accept: SHA-1 failed");
	/* 20 bytes give 28 base64 characters and a NUL */
	EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}
