/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of src/http.c: request head parsing, docs/protocol.md §2 upgrade
 * checks in their order, the head size limit, and the canned responses.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "http.h"
#include "http_feed.h"
#include "unit.h"

#define MAXHEAD		8192

#define GET_SRV		"GET /v1/server HTTP/1.1\r\n"
#define GET_CLI		"GET /v1/client HTTP/1.1\r\n"
#define H_HOST		"Host: relay.example.com\r\n"
#define H_SID		\
	"X-Pyrycode-Server: 6f1c2a3e-0b5d-4e7f-9a8b-1c2d3e4f5a6b\r\n"
#define H_VER		"X-Pyrycode-Version: 0.9.1\r\n"
#define H_TOK		"X-Pyrycode-Token: s3cr3t-t0k3n-value\r\n"
#define H_UA		"User-Agent: pyry/0.9.1\r\n"
#define H_CONN		"Connection: Upgrade\r\n"
#define H_UPG		"Upgrade: websocket\r\n"
#define H_WSV		"Sec-WebSocket-Version: 13\r\n"
#define H_KEY		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define H_DEV		"X-Pyrycode-Device-Name: Pixel 8\r\n"
#define RFC_ACCEPT	"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* indices into the header lists, for skip masks */
enum { I_HOST, I_SID, I_VERTOK, I_UA, I_CONN, I_UPG, I_WSV, I_KEY, I_DEV };
#define SKIP(i)		(1u << (i))

static const char *const srv_hdrs[] = {
	H_HOST, H_SID, H_VER, H_UA, H_CONN, H_UPG, H_WSV, H_KEY, NULL
};
static const char *const cli_hdrs[] = {
	H_HOST, H_SID, H_TOK, H_UA, H_CONN, H_UPG, H_WSV, H_KEY, H_DEV, NULL
};

static char	 hbuf[MAXHEAD * 2];

/*
 * Builds a head in hbuf: line, the headers not in skip, extra, and the
 * empty line.  Returns its length.
 */
static size_t
build(const char *line, const char *const *hdrs, unsigned skip,
    const char *extra)
{
	size_t	n;
	int	i;

	hbuf[0] = '\0';
	strlcat(hbuf, line, sizeof(hbuf));
	for (i = 0; hdrs[i] != NULL; i++)
		if ((skip & SKIP(i)) == 0)
			strlcat(hbuf, hdrs[i], sizeof(hbuf));
	if (extra != NULL)
		strlcat(hbuf, extra, sizeof(hbuf));
	n = strlcat(hbuf, "\r\n", sizeof(hbuf));
	CU_ASSERT_FATAL(n < sizeof(hbuf));
	return n;
}

static enum http_parse_result
parse_str(const char *s, struct http_request *req)
{
	return http_parse_head(s, strlen(s), MAXHEAD, req);
}

/* Parses hbuf, which must be a complete head, and returns its status. */
static int
hbuf_status(struct http_request *req)
{
	size_t	len = strlen(hbuf);

	CU_ASSERT_EQUAL_FATAL(http_parse_head(hbuf, len, MAXHEAD, req),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req->head_len, len);
	return http_upgrade_status(req);
}

static int
srv_status(const char *line, unsigned skip, const char *extra)
{
	struct http_request	req;

	build(line, srv_hdrs, skip, extra);
	return hbuf_status(&req);
}

static int
cli_status(const char *line, unsigned skip, const char *extra)
{
	struct http_request	req;

	build(line, cli_hdrs, skip, extra);
	return hbuf_status(&req);
}

/* Does the memory at p[0..len) hold the bytes of s? */
static int
has_bytes(const void *p, size_t len, const char *s)
{
	const unsigned char	*b = p;
	size_t			 i, n = strlen(s);

	for (i = 0; i + n <= len; i++)
		if (memcmp(b + i, s, n) == 0)
			return 1;
	return 0;
}

/* ---- valid requests ---------------------------------------------------- */

static void
test_valid_server(void)
{
	struct http_request	req;
	size_t			len;

	len = build(GET_SRV, srv_hdrs, 0, NULL);
	CU_ASSERT_EQUAL(http_parse_head(hbuf, len, MAXHEAD, &req),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.head_len, len);
	CU_ASSERT_EQUAL(req.path, HTTP_PATH_SERVER);
	CU_ASSERT(req.method_get);
	CU_ASSERT_EQUAL(req.version_major, 1);
	CU_ASSERT_EQUAL(req.version_minor, 1);
	CU_ASSERT_STRING_EQUAL(req.host, "relay.example.com");
	CU_ASSERT_EQUAL(req.host_count, 1);
	CU_ASSERT_STRING_EQUAL(req.server_id,
	    "6f1c2a3e-0b5d-4e7f-9a8b-1c2d3e4f5a6b");
	CU_ASSERT(req.server_id_present);
	CU_ASSERT(req.server_id_valid);
	CU_ASSERT(req.version_present);
	CU_ASSERT(!req.token_present);
	CU_ASSERT(req.user_agent_present);
	CU_ASSERT(req.conn_upgrade);
	CU_ASSERT(req.upgrade_websocket);
	CU_ASSERT(req.ws_version_13);
	CU_ASSERT_EQUAL(req.ws_key_count, 1);
	CU_ASSERT(req.ws_key_valid);
	CU_ASSERT_STRING_EQUAL(req.ws_accept, RFC_ACCEPT);
	CU_ASSERT_STRING_EQUAL(req.device_name, "");
	CU_ASSERT_EQUAL(http_upgrade_status(&req), 0);
}

static void
test_valid_client(void)
{
	struct http_request	req;
	size_t			len;
	const char		*tok = "s3cr3t-t0k3n-value";

	len = build(GET_CLI, cli_hdrs, 0, NULL);
	CU_ASSERT_EQUAL(http_parse_head(hbuf, len, MAXHEAD, &req),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.path, HTTP_PATH_CLIENT);
	CU_ASSERT(req.token_present);
	CU_ASSERT(!req.version_present);
	CU_ASSERT_STRING_EQUAL(req.device_name, "Pixel 8");
	CU_ASSERT_EQUAL(http_upgrade_status(&req), 0);
	/* the token is never copied anywhere */
	CU_ASSERT(!has_bytes(&req, sizeof(req), tok));
	CU_ASSERT(!has_bytes(&req, sizeof(req), "s3cr3t"));

	/* device name is optional; the version header is not needed */
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_DEV), NULL), 0);
	/* and the server endpoint does not need a token */
	CU_ASSERT_EQUAL(srv_status(GET_SRV, 0, H_TOK), 0);
}

static void
test_rfc6455_accept(void)
{
	char	out[WS_ACCEPT_LEN + 1];
	const char *key = "dGhlIHNhbXBsZSBub25jZQ==";

	memset(out, 'x', sizeof(out));
	http_ws_accept(key, strlen(key), out);
	CU_ASSERT_STRING_EQUAL(out, RFC_ACCEPT);
	CU_ASSERT_EQUAL(strlen(out), WS_ACCEPT_LEN);
	/* the digest's context is kept between calls: nothing carries over */
	key = "x3JJHMbDL1EzLkh9GBhXDw==";
	http_ws_accept(key, strlen(key), out);
	CU_ASSERT_STRING_EQUAL(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
	key = "dGhlIHNhbXBsZSBub25jZQ==";
	http_ws_accept(key, strlen(key), out);
	CU_ASSERT_STRING_EQUAL(out, RFC_ACCEPT);
}

/* ---- header gate (step 4) ---------------------------------------------- */

static void
test_missing_headers(void)
{
	/* /v1/server: X-Pyrycode-Server, X-Pyrycode-Version, User-Agent */
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_SID), NULL), 400);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_VERTOK), NULL), 400);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_UA), NULL), 400);
	/* a token does not stand in for the version */
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_VERTOK), H_TOK), 400);
	/* Host is not part of the gate */
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_HOST), NULL), 0);

	/* /v1/client: X-Pyrycode-Server, X-Pyrycode-Token, User-Agent */
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_SID), NULL), 400);
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_VERTOK), NULL), 400);
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_UA), NULL), 400);
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_VERTOK), H_VER), 400);
}

static void
test_empty_headers(void)
{
	struct http_request	req;

	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_SID),
	    "X-Pyrycode-Server:\r\n"), 400);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_SID),
	    "X-Pyrycode-Server: \t \r\n"), 400);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_VERTOK),
	    "X-Pyrycode-Version:  \r\n"), 400);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_UA),
	    "User-Agent:\r\n"), 400);
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_SID),
	    "X-Pyrycode-Server: \r\n"), 400);
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_VERTOK),
	    "X-Pyrycode-Token:\r\n"), 400);
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_UA),
	    "User-Agent: \r\n"), 400);

	build(GET_SRV, srv_hdrs, SKIP(I_SID), "X-Pyrycode-Server:\r\n");
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
	CU_ASSERT(!req.server_id_present);
	CU_ASSERT(!req.server_id_valid);
	CU_ASSERT_STRING_EQUAL(req.server_id, "");
}

static void
test_server_ids(void)
{
	struct http_request	req;
	char			id[80], line[128];
	const char		*bad[] = {
		"a b", "a/b", "a:b", "a+b", "a*", "caf\xc3\xa9", "a,b",
		"\"ab\"", "a%20b", "a~b", "a@b", NULL
	};
	int			i;

	/* 64 bytes: accepted and copied */
	memset(id, 'a', 64);
	id[64] = '\0';
	snprintf(line, sizeof(line), "X-Pyrycode-Server: %s\r\n", id);
	build(GET_SRV, srv_hdrs, SKIP(I_SID), line);
	CU_ASSERT_EQUAL(hbuf_status(&req), 0);
	CU_ASSERT_STRING_EQUAL(req.server_id, id);

	/* 65 bytes: 400 */
	memset(id, 'a', 65);
	id[65] = '\0';
	snprintf(line, sizeof(line), "X-Pyrycode-Server: %s\r\n", id);
	build(GET_SRV, srv_hdrs, SKIP(I_SID), line);
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
	CU_ASSERT(req.server_id_present);
	CU_ASSERT(!req.server_id_valid);
	CU_ASSERT_STRING_EQUAL(req.server_id, "");
	build(GET_CLI, cli_hdrs, SKIP(I_SID), line);
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);

	/* one byte, and every allowed class */
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_SID),
	    "X-Pyrycode-Server: x\r\n"), 0);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_SID),
	    "X-Pyrycode-Server: AZaz09._-\r\n"), 0);

	for (i = 0; bad[i] != NULL; i++) {
		snprintf(line, sizeof(line), "X-Pyrycode-Server: %s\r\n",
		    bad[i]);
		CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_SID), line), 400);
		CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_SID), line), 400);
	}

	/* a duplicate header is an invalid server-id, even if both agree */
	build(GET_SRV, srv_hdrs, 0, H_SID);
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
	CU_ASSERT(req.server_id_present);
	CU_ASSERT(!req.server_id_valid);
	CU_ASSERT_STRING_EQUAL(req.server_id, "");
	CU_ASSERT_EQUAL(cli_status(GET_CLI, 0, "X-Pyrycode-Server: other\r\n"),
	    400);
	CU_ASSERT_EQUAL(cli_status(GET_CLI, 0, "x-pyrycode-server:\r\n"),
	    400);
}

static void
test_server_id_valid_fn(void)
{
	char	id[70];

	memset(id, 'Z', sizeof(id));
	CU_ASSERT(!server_id_valid("", 0));
	CU_ASSERT(server_id_valid("a", 1));
	CU_ASSERT(server_id_valid(id, 64));
	CU_ASSERT(!server_id_valid(id, 65));
	CU_ASSERT(server_id_valid("A-z_0.9", 7));
	CU_ASSERT(!server_id_valid("a\0b", 3));
	CU_ASSERT(!server_id_valid("a b", 3));
	CU_ASSERT(!server_id_valid("\xff", 1));
	/* only len bytes are looked at */
	CU_ASSERT(server_id_valid("ab!", 2));
}

/* ---- handshake (step 5) and the order of the checks -------------------- */

static void
test_426(void)
{
	struct http_request	req;

	build("GET /v1/server HTTP/1.0\r\n", srv_hdrs, 0, NULL);
	CU_ASSERT_EQUAL(hbuf_status(&req), 426);
	CU_ASSERT_EQUAL(req.version_major, 1);
	CU_ASSERT_EQUAL(req.version_minor, 0);
	CU_ASSERT_EQUAL(cli_status("GET /v1/client HTTP/1.0\r\n", 0, NULL),
	    426);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN), NULL), 426);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_UPG), NULL), 426);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN) | SKIP(I_UPG), NULL),
	    426);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN),
	    "Connection: keep-alive\r\n"), 426);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN),
	    "Connection: upgrades\r\n"), 426);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_UPG),
	    "Upgrade: h2c\r\n"), 426);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_UPG),
	    "Upgrade: websocket/13\r\n"), 426);
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_UPG),
	    "Upgrade:\r\n"), 426);
	/* HTTP/1.2 is a later HTTP/1.x: fine */
	CU_ASSERT_EQUAL(srv_status("GET /v1/server HTTP/1.2\r\n", 0, NULL), 0);
}

static void
test_405(void)
{
	CU_ASSERT_EQUAL(srv_status("POST /v1/server HTTP/1.1\r\n", 0, NULL),
	    405);
	CU_ASSERT_EQUAL(cli_status("HEAD /v1/client HTTP/1.1\r\n", 0, NULL),
	    405);
	/* methods are case-sensitive */
	CU_ASSERT_EQUAL(cli_status("get /v1/client HTTP/1.1\r\n", 0, NULL),
	    405);
	CU_ASSERT_EQUAL(cli_status("GETX /v1/client HTTP/1.1\r\n", 0, NULL),
	    405);
}

static void
test_ws_version(void)
{
	struct http_request	req;

	build(GET_SRV, srv_hdrs, SKIP(I_WSV), "Sec-WebSocket-Version: 12\r\n");
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
	CU_ASSERT(!req.ws_version_13);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_WSV), NULL), 400);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_WSV),
	    "Sec-WebSocket-Version: 13, 8\r\n"), 400);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_WSV),
	    "Sec-WebSocket-Version: 013\r\n"), 400);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_WSV),
	    "Sec-WebSocket-Version:\r\n"), 400);
	/* two headers, even both 13 */
	build(GET_CLI, cli_hdrs, 0, H_WSV);
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
	CU_ASSERT(!req.ws_version_13);
	/* OWS around the value is no part of it */
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_WSV),
	    "Sec-WebSocket-Version: \t13 \t\r\n"), 0);
}

static void
test_ws_key(void)
{
	struct http_request	req;
	const char		*bad[] = {
		"",
		"dGhlIHNhbXBsZQ==",			/* 10 bytes */
		"dGhlIHNhbXBsZSBub25jZQ=",		/* 23 chars */
		"dGhlIHNhbXBsZSBub25jZQ===",		/* 25 chars */
		"dGhlIHNhbXBsZSBub25jZQAA",		/* 18 bytes, no pad */
		"dGhlIHNhbXBsZSBub25jZ*==",		/* not base64 */
		"dGhlIHNhbXBsZSBub25j-Q==",		/* URL alphabet */
		"dGhlIHNhbXBsZSBub25j_Q==",
		"dGhlIHNhbXBsZSBub25jZQ=A",
		"dGhlIHNhbXBsZSBub2 jZQ==",
		"dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
		NULL
	};
	char			line[128];
	int			i;

	for (i = 0; bad[i] != NULL; i++) {
		snprintf(line, sizeof(line), "Sec-WebSocket-Key: %s\r\n",
		    bad[i]);
		build(GET_SRV, srv_hdrs, SKIP(I_KEY), line);
		CU_ASSERT_EQUAL(hbuf_status(&req), 400);
		CU_ASSERT(!req.ws_key_valid);
		CU_ASSERT_EQUAL(req.ws_key_count, 1);
		CU_ASSERT(req.ws_version_13);
		CU_ASSERT_STRING_EQUAL(req.ws_accept, "");
	}
	/* missing */
	build(GET_SRV, srv_hdrs, SKIP(I_KEY), NULL);
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
	CU_ASSERT_EQUAL(req.ws_key_count, 0);
	/* two keys, both valid */
	build(GET_CLI, cli_hdrs, 0,
	    "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n");
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
	CU_ASSERT_EQUAL(req.ws_key_count, 2);
	CU_ASSERT(!req.ws_key_valid);
	/* other valid keys, with OWS around them */
	build(GET_CLI, cli_hdrs, SKIP(I_KEY),
	    "Sec-WebSocket-Key:  x3JJHMbDL1EzLkh9GBhXDw==\t\r\n");
	CU_ASSERT_EQUAL(hbuf_status(&req), 0);
	CU_ASSERT_STRING_EQUAL(req.ws_accept, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_KEY),
	    "Sec-WebSocket-Key: ++++//////++++//////+w==\r\n"), 0);
}

/* Cases that only pass if the checks run in docs/protocol.md §2 order. */
static void
test_order(void)
{
	struct http_request	req;

	/* step 4 before step 5: header gate beats 426, 405 and the rest */
	CU_ASSERT_EQUAL(srv_status("POST /v1/server HTTP/1.0\r\n",
	    SKIP(I_UA) | SKIP(I_CONN) | SKIP(I_WSV) | SKIP(I_KEY), NULL), 400);
	CU_ASSERT_EQUAL(cli_status("PUT /v1/client HTTP/1.0\r\n",
	    SKIP(I_VERTOK), NULL), 400);
	/* an invalid server-id beats 426 */
	CU_ASSERT_EQUAL(srv_status("GET /v1/server HTTP/1.0\r\n", SKIP(I_SID),
	    "X-Pyrycode-Server: bad id\r\n"), 400);
	CU_ASSERT_EQUAL(cli_status(GET_CLI, SKIP(I_SID) | SKIP(I_UPG),
	    "X-Pyrycode-Server: bad/id\r\n"), 400);

	/* 426 beats 405, the version and the key */
	CU_ASSERT_EQUAL(srv_status("POST /v1/server HTTP/1.0\r\n", 0, NULL),
	    426);
	CU_ASSERT_EQUAL(srv_status("POST /v1/server HTTP/1.1\r\n",
	    SKIP(I_CONN) | SKIP(I_WSV) | SKIP(I_KEY), NULL), 426);
	CU_ASSERT_EQUAL(cli_status("DELETE /v1/client HTTP/1.1\r\n",
	    SKIP(I_UPG) | SKIP(I_KEY), "Sec-WebSocket-Version: 12\r\n"), 426);

	/* 405 beats the version and the key */
	CU_ASSERT_EQUAL(srv_status("POST /v1/server HTTP/1.1\r\n",
	    SKIP(I_WSV) | SKIP(I_KEY), "Sec-WebSocket-Version: 12\r\n"), 405);
	CU_ASSERT_EQUAL(cli_status("OPTIONS /v1/client HTTP/1.1\r\n",
	    SKIP(I_KEY), "Sec-WebSocket-Key: short\r\n"), 405);

	/* the version beats the key: the caller sees !ws_version_13 */
	build(GET_SRV, srv_hdrs, SKIP(I_WSV) | SKIP(I_KEY),
	    "Sec-WebSocket-Version: 12\r\nSec-WebSocket-Key: bad\r\n");
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
	CU_ASSERT(!req.ws_version_13);
	CU_ASSERT(!req.ws_key_valid);
	/* and a good version with a bad key is the plain 400 */
	build(GET_SRV, srv_hdrs, SKIP(I_KEY), "Sec-WebSocket-Key: bad\r\n");
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
	CU_ASSERT(req.ws_version_13);
	CU_ASSERT(!req.ws_key_valid);

	/* other paths never pass the gate */
	build("GET /healthz HTTP/1.1\r\n", srv_hdrs, 0, NULL);
	CU_ASSERT_EQUAL(hbuf_status(&req), 400);
}

/* ---- syntax ------------------------------------------------------------ */

static void
test_case_insensitive(void)
{
	struct http_request	req;
	const char		*head =
	    "GET /v1/client HTTP/1.1\r\n"
	    "HOST: Relay.Example.COM\r\n"
	    "x-pyrycode-server: abc\r\n"
	    "X-PYRYCODE-TOKEN: t\r\n"
	    "user-agent: ua\r\n"
	    "x-pyrycode-device-name: dev\r\n"
	    "CONNECTION: UPGRADE\r\n"
	    "upgrade: WebSocket\r\n"
	    "sec-websocket-version: 13\r\n"
	    "SEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	    "\r\n";

	CU_ASSERT_EQUAL(parse_str(head, &req), HTTP_COMPLETE);
	CU_ASSERT_EQUAL(http_upgrade_status(&req), 0);
	CU_ASSERT_STRING_EQUAL(req.host, "Relay.Example.COM");
	CU_ASSERT_STRING_EQUAL(req.server_id, "abc");
	CU_ASSERT_STRING_EQUAL(req.device_name, "dev");
	CU_ASSERT_STRING_EQUAL(req.ws_accept, RFC_ACCEPT);
}

static void
test_connection_lists(void)
{
	struct http_request	req;

	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN),
	    "Connection: keep-alive\r\nConnection: Upgrade\r\n"), 0);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN),
	    "Connection: upgrade\r\nConnection: close\r\n"), 0);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN),
	    "Connection: keep-alive, Upgrade\r\n"), 0);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN),
	    "Connection: keep-alive,upGRADE\r\n"), 0);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN),
	    "Connection: ,, \t upgrade \t,,\r\n"), 0);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN),
	    "Connection: keep-alive\r\nConnection: close\r\n"), 426);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_CONN),
	    "Connection: keep-alive upgrade\r\n"), 426);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_UPG),
	    "Upgrade: h2c, WEBSOCKET\r\n"), 0);
	CU_ASSERT_EQUAL(srv_status(GET_SRV, SKIP(I_UPG),
	    "Upgrade: h2c\r\nUpgrade: websocket\r\n"), 0);

	build(GET_SRV, srv_hdrs, SKIP(I_CONN), "Connection: close\r\n");
	CU_ASSERT_EQUAL(hbuf_status(&req), 426);
	CU_ASSERT(!req.conn_upgrade);
	CU_ASSERT(req.upgrade_websocket);
}

static void
test_paths(void)
{
	struct http_request	req;
	char			line[300], tok[200];
	const struct {
		const char	*target;
		enum http_path	 path;
	} t[] = {
		{ "/v1/server", HTTP_PATH_SERVER },
		{ "/v1/server?", HTTP_PATH_SERVER },
		{ "/v1/server?id=1&x=/v1/client", HTTP_PATH_SERVER },
		{ "/v1/client?a", HTTP_PATH_CLIENT },
		{ "/healthz", HTTP_PATH_HEALTHZ },
		{ "/healthz?verbose=1", HTTP_PATH_HEALTHZ },
		{ "/metrics", HTTP_PATH_METRICS },
		{ "/metrics?x", HTTP_PATH_METRICS },
		{ "/", HTTP_PATH_OTHER },
		{ "/v1/server/", HTTP_PATH_OTHER },
		{ "/v1/serverx", HTTP_PATH_OTHER },
		{ "/V1/server", HTTP_PATH_OTHER },
		{ "/v1//server", HTTP_PATH_OTHER },
		{ "/v1/%73erver", HTTP_PATH_OTHER },
		{ "//v1/server", HTTP_PATH_OTHER },
		{ "/healthz/", HTTP_PATH_OTHER },
		{ "/v1/client#x", HTTP_PATH_OTHER },
		{ "/.well-known/acme-challenge/", HTTP_PATH_OTHER },
		{ "/.well-known/acme-challenge", HTTP_PATH_OTHER },
		{ "/.well-known/acme-challenge/abc_-9", HTTP_PATH_ACME },
		{ "/.well-known/acme-challenge/a?b", HTTP_PATH_ACME },
		{ "/.well-known/acme-challenge/../x", HTTP_PATH_ACME },
		/* absolute-form (RFC 9112 §3.2.2) */
		{ "http://relay/v1/server", HTTP_PATH_SERVER },
		{ "HTTPS://relay.example:443/v1/client?x=1", HTTP_PATH_CLIENT },
		{ "http://relay:8080/healthz", HTTP_PATH_HEALTHZ },
		{ "http://relay", HTTP_PATH_OTHER },
		{ "http://relay?/v1/server", HTTP_PATH_OTHER },
		{ "http://relay/", HTTP_PATH_OTHER },
		{ "http://relay//v1/server", HTTP_PATH_OTHER },
		{ NULL, HTTP_PATH_OTHER }
	};
	int			i;

	for (i = 0; t[i].target != NULL; i++) {
		snprintf(line, sizeof(line), "GET %s HTTP/1.1\r\n\r\n",
		    t[i].target);
		CU_ASSERT_EQUAL(parse_str(line, &req), HTTP_COMPLETE);
		CU_ASSERT_EQUAL(req.path, t[i].path);
		if (req.path != t[i].path)
			fprintf(stderr, "path %s\n", t[i].target);
	}

	/* absolute-form: the authority is the Host, and a Host header ignored */
	CU_ASSERT_EQUAL(parse_str("GET https://Relay.Example:443/v1/server "
	    "HTTP/1.1\r\nHost: other\r\nHost: more\r\n\r\n", &req),
	    HTTP_COMPLETE);
	CU_ASSERT_STRING_EQUAL(req.host, "Relay.Example:443");
	CU_ASSERT_EQUAL(req.host_count, 1);
	CU_ASSERT_EQUAL(parse_str("GET /v1/server HTTP/1.1\r\nHost: a\r\n"
	    "Host: b\r\n\r\n", &req), HTTP_COMPLETE);
	CU_ASSERT_STRING_EQUAL(req.host, "a");
	CU_ASSERT_EQUAL(req.host_count, 2);

	/* the query string is no part of the token; the rest is raw */
	CU_ASSERT_EQUAL(parse_str("GET /.well-known/acme-challenge/a?b "
	    "HTTP/1.1\r\n\r\n", &req), HTTP_COMPLETE);
	CU_ASSERT_STRING_EQUAL(req.acme_token, "a");
	CU_ASSERT_EQUAL(parse_str("GET /.well-known/acme-challenge/../x "
	    "HTTP/1.1\r\n\r\n", &req), HTTP_COMPLETE);
	CU_ASSERT_STRING_EQUAL(req.acme_token, "../x");

	/* 128 bytes (the longest token, RFC 8555 allows no more here) fit, 129 do not */
	memset(tok, 'T', 128);
	tok[128] = '\0';
	snprintf(line, sizeof(line),
	    "GET /.well-known/acme-challenge/%s HTTP/1.1\r\n\r\n", tok);
	CU_ASSERT_EQUAL(parse_str(line, &req), HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.path, HTTP_PATH_ACME);
	CU_ASSERT_STRING_EQUAL(req.acme_token, tok);
	memset(tok, 'T', 129);
	tok[129] = '\0';
	snprintf(line, sizeof(line),
	    "GET /.well-known/acme-challenge/%s HTTP/1.1\r\n\r\n", tok);
	CU_ASSERT_EQUAL(parse_str(line, &req), HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.path, HTTP_PATH_OTHER);
	CU_ASSERT_STRING_EQUAL(req.acme_token, "");
}

static void
test_bad_syntax(void)
{
	struct http_request	req;
	const char		*bad[] = {
		/* request lines */
		"\r\n",
		"GET\r\n\r\n",
		"GET /v1/server\r\n\r\n",
		"GET /v1/server HTTP/1.1 \r\n\r\n",
		"GET  /v1/server HTTP/1.1\r\n\r\n",
		"GET /v1/server  HTTP/1.1\r\n\r\n",
		" GET /v1/server HTTP/1.1\r\n\r\n",
		"GET v1/server HTTP/1.1\r\n\r\n",
		"GET * HTTP/1.1\r\n\r\n",
		"GET http:///v1/server HTTP/1.1\r\n\r\n",
		"GET http:// HTTP/1.1\r\n\r\n",
		"GET http://user@relay/v1/server HTTP/1.1\r\n\r\n",
		"GET ftp://relay/v1/server HTTP/1.1\r\n\r\n",
		"GET relay/v1/server HTTP/1.1\r\n\r\n",
		"CONNECT relay:443 HTTP/1.1\r\n\r\n",
		"GET /v1/server HTTP/2.0\r\n\r\n",
		"GET /v1/server HTTP/0.9\r\n\r\n",
		"GET /v1/server HTTP/1\r\n\r\n",
		"GET /v1/server HTTP/1.10\r\n\r\n",
		"GET /v1/server HTTP/1.x\r\n\r\n",
		"GET /v1/server http/1.1\r\n\r\n",
		"GET /v1/server HTTP/1,1\r\n\r\n",
		"G(T /v1/server HTTP/1.1\r\n\r\n",
		"GET /v1/s\x7f rver HTTP/1.1\r\n\r\n",
		"GET /v1/s\xc3\xa9rver HTTP/1.1\r\n\r\n",
		"GET\t/v1/server HTTP/1.1\r\n\r\n",
		"GET /v1/server HTTP/1.1\r\r\n\r\n",
		"GET /v1/server\rHTTP/1.1\r\n\r\n",
		/* header lines */
		"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost x\r\n\r\n",
		"GET / HTTP/1.1\r\n: x\r\n\r\n",
		"GET / HTTP/1.1\r\n x: y\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n",
		"GET / HTTP/1.1\r\nA(b: c\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\r\n",
		"GET / HTTP/1.1\r\nX-\xc3\xa9: 1\r\n\r\n",
		NULL
	};
	/* NUL bytes, given with their lengths */
	const char	nul1[] = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
	const char	nul2[] = "GET /\0 HTTP/1.1\r\n\r\n";
	const char	nul3[] = "GET / HTTP/1.1\r\nA\0: b\r\n\r\n";
	int		i;

	for (i = 0; bad[i] != NULL; i++) {
		CU_ASSERT_EQUAL(parse_str(bad[i], &req), HTTP_BAD);
		if (parse_str(bad[i], &req) != HTTP_BAD)
			fprintf(stderr, "not bad: %d\n", i);
	}
	CU_ASSERT_EQUAL(http_parse_head(nul1, sizeof(nul1) - 1, MAXHEAD, &req),
	    HTTP_BAD);
	CU_ASSERT_EQUAL(http_parse_head(nul2, sizeof(nul2) - 1, MAXHEAD, &req),
	    HTTP_BAD);
	CU_ASSERT_EQUAL(http_parse_head(nul3, sizeof(nul3) - 1, MAXHEAD, &req),
	    HTTP_BAD);

	/* a bad line is reported without waiting for the rest of the head */
	CU_ASSERT_EQUAL(parse_str("GET /v1/server HTTP/3.0\r\n", &req),
	    HTTP_BAD);
	CU_ASSERT_EQUAL(parse_str("GET / HTTP/1.1\r\nbad line\r\nHost:", &req),
	    HTTP_BAD);

	/* allowed: obs-text and HT in values, tchar names, empty values */
	CU_ASSERT_EQUAL(parse_str("GET / HTTP/1.1\r\n"
	    "X-A: caf\xc3\xa9\tb\r\n"
	    "!#$%&'*+-.^_`|~09az: v\r\n"
	    "X-Empty:\r\n"
	    "\r\n", &req), HTTP_COMPLETE);
	/* any token is a method */
	CU_ASSERT_EQUAL(parse_str("M-SEARCH / HTTP/1.1\r\n\r\n", &req),
	    HTTP_COMPLETE);
	CU_ASSERT(!req.method_get);
}

static void
test_bare_lf(void)
{
	struct http_request	req;
	const char		*lf =
	    "GET /v1/server HTTP/1.1\n"
	    "X-Pyrycode-Server: s1\n"
	    "X-Pyrycode-Version: 1\n"
	    "User-Agent: ua\n"
	    "Connection: Upgrade\n"
	    "Upgrade: websocket\n"
	    "Sec-WebSocket-Version: 13\n"
	    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n"
	    "\n"
	    "after";
	const char		*mixed =
	    "GET /v1/client HTTP/1.1\r\n"
	    "X-Pyrycode-Server: s1\n"
	    "X-Pyrycode-Token: t\r\n"
	    "User-Agent: ua\n"
	    "Connection: Upgrade\r\n"
	    "Upgrade: websocket\n"
	    "Sec-WebSocket-Version: 13\r\n"
	    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n"
	    "\r\n";

	CU_ASSERT_EQUAL(parse_str(lf, &req), HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.head_len, strlen(lf) - strlen("after"));
	CU_ASSERT_EQUAL(http_upgrade_status(&req), 0);
	CU_ASSERT_STRING_EQUAL(req.server_id, "s1");
	CU_ASSERT_STRING_EQUAL(req.ws_accept, RFC_ACCEPT);

	CU_ASSERT_EQUAL(parse_str(mixed, &req), HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.head_len, strlen(mixed));
	CU_ASSERT_EQUAL(http_upgrade_status(&req), 0);

	CU_ASSERT_EQUAL(parse_str("GET / HTTP/1.1\n\n", &req), HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.head_len, 16);
	CU_ASSERT_EQUAL(parse_str("GET / HTTP/1.1\r\n\n", &req),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.head_len, 17);
}

static void
test_host_and_device(void)
{
	struct http_request	req;
	char			extra[600], val[400];
	size_t			n;

	build(GET_CLI, cli_hdrs, 0, "Host: second.example\r\n");
	CU_ASSERT_EQUAL(hbuf_status(&req), 0);
	CU_ASSERT_EQUAL(req.host_count, 2);
	CU_ASSERT_STRING_EQUAL(req.host, "relay.example.com");

	build(GET_CLI, cli_hdrs, SKIP(I_HOST), NULL);
	CU_ASSERT_EQUAL(hbuf_status(&req), 0);
	CU_ASSERT_EQUAL(req.host_count, 0);
	CU_ASSERT_STRING_EQUAL(req.host, "");

	/* a long Host is cut to the array */
	memset(val, 'h', 300);
	val[300] = '\0';
	snprintf(extra, sizeof(extra), "Host: %s\r\n", val);
	build(GET_CLI, cli_hdrs, SKIP(I_HOST), extra);
	CU_ASSERT_EQUAL(hbuf_status(&req), 0);
	CU_ASSERT_EQUAL(strlen(req.host), sizeof(req.host) - 1);

	/* device name: cut to DEVICE_NAME_MAX on a UTF-8 boundary */
	memset(val, 'd', DEVICE_NAME_MAX - 1);
	memcpy(val + DEVICE_NAME_MAX - 1, "\xc3\xa9xyz", 6);
	snprintf(extra, sizeof(extra), "X-Pyrycode-Device-Name: %s\r\n", val);
	build(GET_CLI, cli_hdrs, SKIP(I_DEV), extra);
	CU_ASSERT_EQUAL(hbuf_status(&req), 0);
	n = strlen(req.device_name);
	CU_ASSERT_EQUAL(n, DEVICE_NAME_MAX - 1);
	CU_ASSERT_EQUAL(memcmp(req.device_name, val, n), 0);

	memset(val, 'd', 200);
	val[200] = '\0';
	snprintf(extra, sizeof(extra), "X-Pyrycode-Device-Name: %s\r\n", val);
	build(GET_CLI, cli_hdrs, SKIP(I_DEV), extra);
	CU_ASSERT_EQUAL(hbuf_status(&req), 0);
	CU_ASSERT_EQUAL(strlen(req.device_name), DEVICE_NAME_MAX);
}

/* ---- limit, split reads, pipelining ------------------------------------ */

static void
test_limit(void)
{
	struct http_request	req;
	char			pad[MAXHEAD], extra[MAXHEAD + 64];
	size_t			len, base;

	/* a valid head of exactly MAXHEAD bytes */
	base = build(GET_SRV, srv_hdrs, 0, "X-Pad: \r\n");
	memset(pad, 'p', MAXHEAD - base);
	pad[MAXHEAD - base] = '\0';
	snprintf(extra, sizeof(extra), "X-Pad: %s\r\n", pad);
	len = build(GET_SRV, srv_hdrs, 0, extra);
	CU_ASSERT_EQUAL_FATAL(len, MAXHEAD);

	CU_ASSERT_EQUAL(http_parse_head(hbuf, len, MAXHEAD, &req),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.head_len, MAXHEAD);
	CU_ASSERT_EQUAL(http_upgrade_status(&req), 0);
	/* pipelined bytes past max do not matter once the head ended */
	memcpy(hbuf + len, "\x81\x80zzzz", 6);
	CU_ASSERT_EQUAL(http_parse_head(hbuf, len + 6, MAXHEAD, &req),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.head_len, MAXHEAD);
	/* one byte short of the head: still waiting */
	CU_ASSERT_EQUAL(http_parse_head(hbuf, len - 1, MAXHEAD, &req),
	    HTTP_INCOMPLETE);

	/* the same head against max - 1: it is one byte too many */
	CU_ASSERT_EQUAL(http_parse_head(hbuf, len - 1, MAXHEAD - 1, &req),
	    HTTP_INCOMPLETE);
	CU_ASSERT_EQUAL(http_parse_head(hbuf, len, MAXHEAD - 1, &req),
	    HTTP_TOO_LARGE);
	CU_ASSERT_EQUAL(http_parse_head(hbuf, len + 6, MAXHEAD - 1, &req),
	    HTTP_TOO_LARGE);

	/* a head of max + 1 bytes: 431 as soon as byte max + 1 is there */
	snprintf(extra, sizeof(extra), "X-Pad: %sp\r\n", pad);
	len = build(GET_SRV, srv_hdrs, 0, extra);
	CU_ASSERT_EQUAL_FATAL(len, MAXHEAD + 1);
	CU_ASSERT_EQUAL(http_parse_head(hbuf, MAXHEAD, MAXHEAD, &req),
	    HTTP_INCOMPLETE);
	CU_ASSERT_EQUAL(http_parse_head(hbuf, MAXHEAD + 1, MAXHEAD, &req),
	    HTTP_TOO_LARGE);
	/* the last LF alone past the limit is too much (CR at byte max) */
	CU_ASSERT_EQUAL(hbuf[MAXHEAD - 1], '\r');
	CU_ASSERT_EQUAL(hbuf[MAXHEAD], '\n');

	/* no line end at all */
	memset(hbuf, 'G', MAXHEAD + 1);
	CU_ASSERT_EQUAL(http_parse_head(hbuf, MAXHEAD, MAXHEAD, &req),
	    HTTP_INCOMPLETE);
	CU_ASSERT_EQUAL(http_parse_head(hbuf, MAXHEAD + 1, MAXHEAD, &req),
	    HTTP_TOO_LARGE);

	/* small limits */
	CU_ASSERT_EQUAL(http_parse_head("", 0, 0, &req), HTTP_INCOMPLETE);
	CU_ASSERT_EQUAL(http_parse_head("G", 1, 0, &req), HTTP_TOO_LARGE);
	CU_ASSERT_EQUAL(http_parse_head("GET / HTTP/1.1\r\n\r\n", 18, 18,
	    &req), HTTP_COMPLETE);
	CU_ASSERT_EQUAL(http_parse_head("GET / HTTP/1.1\r\n\r\n", 18, 17,
	    &req), HTTP_TOO_LARGE);
	CU_ASSERT_EQUAL(http_parse_head("GET / HTTP/1.1\n\n", 16, 16,
	    &req), HTTP_COMPLETE);
}

static void
test_split_reads(void)
{
	struct http_request	one, part;
	const char		*ws =
	    "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
	size_t			len, i;
	int			incomplete_ok = 1;

	len = build(GET_CLI, cli_hdrs, 0, NULL);
	memset(&one, 0, sizeof(one));
	CU_ASSERT_EQUAL_FATAL(http_parse_head(hbuf, len, MAXHEAD, &one),
	    HTTP_COMPLETE);
	for (i = 0; i < len; i++)
		if (http_parse_head(hbuf, i, MAXHEAD, &part) !=
		    HTTP_INCOMPLETE)
			incomplete_ok = 0;
	CU_ASSERT(incomplete_ok);
	memset(&part, 0, sizeof(part));
	CU_ASSERT_EQUAL(http_parse_head(hbuf, len, MAXHEAD, &part),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(memcmp(&one, &part, sizeof(one)), 0);
	CU_ASSERT_EQUAL(http_upgrade_status(&part), 0);

	/* pipelined WebSocket bytes arriving one by one change nothing */
	memcpy(hbuf + len, ws, strlen(ws));
	for (i = 1; i <= strlen(ws); i++) {
		memset(&part, 0, sizeof(part));
		CU_ASSERT_EQUAL(http_parse_head(hbuf, len + i, MAXHEAD, &part),
		    HTTP_COMPLETE);
		CU_ASSERT_EQUAL(memcmp(&one, &part, sizeof(one)), 0);
	}

	/* the same with bare LFs */
	len = strlen("GET /healthz HTTP/1.0\nHost: a\n\n");
	for (i = 0; i < len; i++)
		CU_ASSERT_EQUAL(http_parse_head("GET /healthz HTTP/1.0\n"
		    "Host: a\n\n", i, MAXHEAD, &part), HTTP_INCOMPLETE);
	CU_ASSERT_EQUAL(http_parse_head("GET /healthz HTTP/1.0\n"
	    "Host: a\n\n", len, MAXHEAD, &part), HTTP_COMPLETE);
	CU_ASSERT_EQUAL(part.path, HTTP_PATH_HEALTHZ);
}

static void
test_pipelined(void)
{
	struct http_request	req;
	char			copy[sizeof(hbuf)];
	/* a masked frame, then things a parser might choke on */
	const char		 tail[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f"
	    "\x4d\x51\x58\0\r\n\r\n \x01:GET / HTTP/9.9\r\n\r\n";
	size_t			 len, total;

	len = build(GET_SRV, srv_hdrs, 0, NULL);
	memcpy(hbuf + len, tail, sizeof(tail) - 1);
	total = len + sizeof(tail) - 1;
	memcpy(copy, hbuf, total);

	CU_ASSERT_EQUAL(http_parse_head(hbuf, total, MAXHEAD, &req),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.head_len, len);
	CU_ASSERT_EQUAL(memcmp(hbuf, copy, total), 0);
	CU_ASSERT_EQUAL(memcmp(hbuf + req.head_len, tail, sizeof(tail) - 1),
	    0);
	CU_ASSERT_EQUAL(http_upgrade_status(&req), 0);

	/* pipelined bytes longer than the limit itself */
	CU_ASSERT_EQUAL(http_parse_head(hbuf, total, len, &req),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(req.head_len, len);
}

/*
 * The incremental parser against the parse at once: buf[0..len) fed a byte
 * at a time and in random splits gives the same result and the same
 * request, for each limit.  Returns how many feeds disagreed.
 */
static int
splits_agree(const char *buf, size_t len)
{
	static const size_t	 maxes[] = { 17, 64, 512, MAXHEAD };
	struct http_request	 whole, part;
	enum http_parse_result	 r;
	size_t			*ones, *cuts, n, i, m;
	uint32_t		 seed;
	int			 bad = 0, got;

	ones = calloc(len + 1, sizeof(*ones));
	cuts = calloc(len + 1, sizeof(*cuts));
	CU_ASSERT_FATAL(ones != NULL && cuts != NULL);
	for (i = 0; i < len; i++)
		ones[i] = i + 1;
	for (m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++) {
		r = http_parse_head(buf, len, maxes[m], &whole);
		/* a byte per read */
		got = http_feed(buf, len, maxes[m], ones, len, &part);
		if (got != (int)r || memcmp(&whole, &part, sizeof(whole)) != 0)
			bad++;
		/* random reads of 1 to 40 bytes */
		for (seed = 1; seed <= 64; seed++) {
			n = http_feed_split(seed, len, 1 + seed % 40, cuts, len);
			got = http_feed(buf, len, maxes[m], cuts, n, &part);
			if (got != (int)r ||
			    memcmp(&whole, &part, sizeof(whole)) != 0)
				bad++;
		}
	}
	free(ones);
	free(cuts);
	return bad;
}

/* An "a:b" head of at least len bytes (GET /, the lines, the empty line). */
static size_t
ab_head(char *buf, size_t size, size_t len)
{
	size_t	n;

	n = strlcpy(buf, "GET / HTTP/1.1\r\n", size);
	while (n + 2 < len && n + 7 <= size) {
		memcpy(buf + n, "a:b\r\n", 5);
		n += 5;
	}
	CU_ASSERT_FATAL(n + 2 <= size);
	memcpy(buf + n, "\r\n", 2);
	return n + 2;
}

static void
test_incremental(void)
{
	static const char *const heads[] = {
		"GET /healthz HTTP/1.0\nHost: a\n\n",
		"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://relay.example.com/v1/server?x=1 HTTP/1.1\r\n"
		    "Host: ignored\r\n\r\n",
		"GET /.well-known/acme-challenge/tok_en-1 HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
		"GET / HTTP/1.1\r\nHost x\r\n\r\n",
		"GET /v1/server HTTP/2.0\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\r\n\r\n",
		"GET / HTTP/1.1\r\nno end yet: x\r\n",
		"",
		NULL
	};
	struct http_request	 req;
	char			 big[MAXHEAD + 64];
	size_t			 len, i;
	int			 bad;

	/* upgrade heads, with pipelined WebSocket bytes after one */
	len = build(GET_CLI, cli_hdrs, 0, "X-Pyrycode-Server: second\r\n");
	CU_ASSERT_EQUAL(splits_agree(hbuf, len), 0);
	len = build(GET_SRV, srv_hdrs, 0, NULL);
	memcpy(hbuf + len, "\x81\x85\x37\xfa\x21\x3d\x7f", 7);
	CU_ASSERT_EQUAL(splits_agree(hbuf, len + 7), 0);
	len = build(GET_CLI, cli_hdrs, SKIP(I_KEY),
	    "Sec-WebSocket-Key: x\r\nSec-WebSocket-Key: y\r\n");
	CU_ASSERT_EQUAL(splits_agree(hbuf, len), 0);
	for (i = 0; heads[i] != NULL; i++) {
		bad = splits_agree(heads[i], strlen(heads[i]));
		CU_ASSERT_EQUAL(bad, 0);
		if (bad != 0)
			fprintf(stderr, "head %zu: %d splits disagree\n", i, bad);
	}

	/* the largest "a:b" head that fits, and one line more: 431 */
	len = ab_head(big, sizeof(big), MAXHEAD - 4);
	CU_ASSERT_EQUAL(http_parse_head(big, len, MAXHEAD, &req),
	    HTTP_COMPLETE);
	CU_ASSERT_EQUAL(splits_agree(big, len), 0);
	len = ab_head(big, sizeof(big), MAXHEAD + 1);
	CU_ASSERT_EQUAL(http_parse_head(big, len, MAXHEAD, &req),
	    HTTP_TOO_LARGE);
	CU_ASSERT_EQUAL(splits_agree(big, len), 0);
}

/* The limit is the one the parser started with. */
static void
test_incremental_limit(void)
{
	struct http_parser	hp;
	const char		*h = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

	http_parser_init(&hp, 20);
	CU_ASSERT_EQUAL(http_parse_more(&hp, h, 10), HTTP_INCOMPLETE);
	CU_ASSERT_EQUAL(http_parse_more(&hp, h, 20), HTTP_INCOMPLETE);
	CU_ASSERT_EQUAL(http_parse_more(&hp, h, 21), HTTP_TOO_LARGE);
	/* decided: more bytes change nothing */
	CU_ASSERT_EQUAL(http_parse_more(&hp, h, strlen(h)), HTTP_TOO_LARGE);

	http_parser_init(&hp, MAXHEAD);
	CU_ASSERT_EQUAL(http_parse_more(&hp, h, 17), HTTP_INCOMPLETE);
	CU_ASSERT_EQUAL(http_parse_more(&hp, h, strlen(h)), HTTP_COMPLETE);
	CU_ASSERT_EQUAL(hp.req.head_len, strlen(h));
	CU_ASSERT_STRING_EQUAL(hp.req.host, "a");
}

/* ---- responses --------------------------------------------------------- */

static void
test_response_101(void)
{
	char		out[256];
	const char	*want =
	    "HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: websocket\r\n"
	    "Connection: Upgrade\r\n"
	    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	    "\r\n";
	int		n;

	n = http_switching_response(out, sizeof(out), RFC_ACCEPT);
	CU_ASSERT_EQUAL(n, (int)strlen(want));
	CU_ASSERT_STRING_EQUAL(out, want);
	CU_ASSERT_EQUAL(http_switching_response(out, strlen(want), RFC_ACCEPT),
	    -1);
	CU_ASSERT_EQUAL(http_switching_response(out, strlen(want) + 1,
	    RFC_ACCEPT), (int)strlen(want));
	CU_ASSERT_EQUAL(http_switching_response(out, sizeof(out), "short"),
	    -1);
	CU_ASSERT_EQUAL(http_switching_response(out, sizeof(out), NULL), -1);
}

static void
check_error(int status, int wsv, const char *want)
{
	char	out[512];
	int	n;

	memset(out, 'x', sizeof(out));
	n = http_error_response(out, sizeof(out), status, wsv);
	CU_ASSERT_EQUAL(n, (int)strlen(want));
	CU_ASSERT_STRING_EQUAL(out, want);
	if (strcmp(out, want) != 0)
		fprintf(stderr, "got:\n%s\nwant:\n%s\n", out, want);
	/* exactly the room it needs (and a NUL), or -1 */
	CU_ASSERT_EQUAL(http_error_response(out, strlen(want) + 1, status,
	    wsv), (int)strlen(want));
	CU_ASSERT_EQUAL(http_error_response(out, strlen(want), status, wsv),
	    -1);
}

static void
test_response_errors(void)
{
	char	out[64];

	check_error(400, 0,
	    "HTTP/1.1 400 Bad Request\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 12\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Bad Request\n");
	check_error(400, 1,
	    "HTTP/1.1 400 Bad Request\r\n"
	    "Sec-WebSocket-Version: 13\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 12\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Bad Request\n");
	check_error(404, 0,
	    "HTTP/1.1 404 Not Found\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 10\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Not Found\n");
	/* the version header belongs to 400 only */
	check_error(405, 1,
	    "HTTP/1.1 405 Method Not Allowed\r\n"
	    "Allow: GET\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 19\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Method Not Allowed\n");
	check_error(421, 0,
	    "HTTP/1.1 421 Misdirected Request\r\n"
	    "Content-Length: 0\r\n"
	    "Connection: close\r\n"
	    "\r\n");
	check_error(426, 0,
	    "HTTP/1.1 426 Upgrade Required\r\n"
	    "Upgrade: websocket\r\n"
	    "Connection: Upgrade\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 17\r\n"
	    "\r\n"
	    "Upgrade Required\n");
	check_error(429, 0,
	    "HTTP/1.1 429 Too Many Requests\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 18\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Too Many Requests\n");
	check_error(431, 0,
	    "HTTP/1.1 431 Request Header Fields Too Large\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 32\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Request Header Fields Too Large\n");
	check_error(503, 0,
	    "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 20\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Service Unavailable\n");
	check_error(500, 0,
	    "HTTP/1.1 500 Internal Server Error\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 22\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Internal Server Error\n");
	/* not an error status */
	CU_ASSERT_EQUAL(http_error_response(out, sizeof(out), 200, 0), -1);
	CU_ASSERT_EQUAL(http_error_response(out, sizeof(out), 101, 0), -1);
	CU_ASSERT_EQUAL(http_error_response(out, 0, 400, 0), -1);
}

static void
test_response_ok(void)
{
	char		out[512];
	const char	*body = "{\"status\":\"ok\"}";
	const char	*want =
	    "HTTP/1.1 200 OK\r\n"
	    "Content-Type: application/json; charset=utf-8\r\n"
	    "Cache-Control: no-store\r\n"
	    "Content-Length: 15\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "{\"status\":\"ok\"}";
	int		n;

	n = http_ok_response(out, sizeof(out),
	    "application/json; charset=utf-8", body, strlen(body));
	CU_ASSERT_EQUAL(n, (int)strlen(want));
	CU_ASSERT_STRING_EQUAL(out, want);
	CU_ASSERT_EQUAL(http_ok_response(out, strlen(want) + 1,
	    "application/json; charset=utf-8", body, strlen(body)),
	    (int)strlen(want));
	CU_ASSERT_EQUAL(http_ok_response(out, strlen(want),
	    "application/json; charset=utf-8", body, strlen(body)), -1);
	CU_ASSERT_EQUAL(http_ok_response(out, 20,
	    "application/json; charset=utf-8", body, strlen(body)), -1);

	n = http_ok_response(out, sizeof(out), "text/plain", "", 0);
	CU_ASSERT_STRING_EQUAL(out,
	    "HTTP/1.1 200 OK\r\n"
	    "Content-Type: text/plain\r\n"
	    "Cache-Control: no-store\r\n"
	    "Content-Length: 0\r\n"
	    "Connection: close\r\n"
	    "\r\n");
	CU_ASSERT_EQUAL(n, (int)strlen(out));
	CU_ASSERT_EQUAL(http_ok_response(out, sizeof(out),
	    "text/plain\r\nX-Evil: 1", "", 0), -1);
}

static void
test_reasons(void)
{
	CU_ASSERT_STRING_EQUAL(http_reason(101), "Switching Protocols");
	CU_ASSERT_STRING_EQUAL(http_reason(200), "OK");
	CU_ASSERT_STRING_EQUAL(http_reason(400), "Bad Request");
	CU_ASSERT_STRING_EQUAL(http_reason(404), "Not Found");
	CU_ASSERT_STRING_EQUAL(http_reason(405), "Method Not Allowed");
	CU_ASSERT_STRING_EQUAL(http_reason(421), "Misdirected Request");
	CU_ASSERT_STRING_EQUAL(http_reason(426), "Upgrade Required");
	CU_ASSERT_STRING_EQUAL(http_reason(429), "Too Many Requests");
	CU_ASSERT_STRING_EQUAL(http_reason(431),
	    "Request Header Fields Too Large");
	CU_ASSERT_STRING_EQUAL(http_reason(500), "Internal Server Error");
	CU_ASSERT_STRING_EQUAL(http_reason(503), "Service Unavailable");
	CU_ASSERT_PTR_NOT_NULL(http_reason(999));
}

static CU_TestInfo http_upgrade_tests[] = {
	{ "valid /v1/server", test_valid_server },
	{ "valid /v1/client", test_valid_client },
	{ "RFC 6455 accept", test_rfc6455_accept },
	{ "missing headers", test_missing_headers },
	{ "empty headers", test_empty_headers },
	{ "server ids", test_server_ids },
	{ "server_id_valid", test_server_id_valid_fn },
	{ "426", test_426 },
	{ "405", test_405 },
	{ "Sec-WebSocket-Version", test_ws_version },
	{ "Sec-WebSocket-Key", test_ws_key },
	{ "check order", test_order },
	CU_TEST_INFO_NULL
};

static CU_TestInfo http_syntax_tests[] = {
	{ "case-insensitive names", test_case_insensitive },
	{ "Connection/Upgrade lists", test_connection_lists },
	{ "paths and query strings", test_paths },
	{ "malformed heads", test_bad_syntax },
	{ "bare LF", test_bare_lf },
	{ "Host and device name", test_host_and_device },
	CU_TEST_INFO_NULL
};

static CU_TestInfo http_buffering_tests[] = {
	{ "head size limit", test_limit },
	{ "split reads", test_split_reads },
	{ "pipelined bytes", test_pipelined },
	{ "incremental: every split", test_incremental },
	{ "incremental: limit", test_incremental_limit },
	CU_TEST_INFO_NULL
};

static CU_TestInfo http_responses_tests[] = {
	{ "101", test_response_101 },
	{ "errors", test_response_errors },
	{ "200", test_response_ok },
	{ "reasons", test_reasons },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "http_upgrade", NULL, NULL, NULL, NULL, http_upgrade_tests },
	{ "http_syntax", NULL, NULL, NULL, NULL, http_syntax_tests },
	{ "http_buffering", NULL, NULL, NULL, NULL, http_buffering_tests },
	{ "http_responses", NULL, NULL, NULL, NULL, http_responses_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
