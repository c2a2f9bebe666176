/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * HTTP/1.x request head parsing for the front (docs/protocol.md §2).  Pure code:
 * no sockets.  Only a front links it (docs/build.md); the answers it and
 * relays write are in http_response.h.
 */
#ifndef HTTP_H
#define HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "http_response.h"
#include "pyrelayd.h"
#include "valid.h"

enum http_path {
	HTTP_PATH_OTHER = 0,
	HTTP_PATH_SERVER,	/* /v1/server */
	HTTP_PATH_CLIENT,	/* /v1/client */
	HTTP_PATH_HEALTHZ,	/* /healthz */
	HTTP_PATH_METRICS,	/* /metrics */
	HTTP_PATH_ACME,		/* /.well-known/acme-challenge/<token> */
};

enum http_parse_result {
	HTTP_INCOMPLETE = 0,	/* need more bytes; head not yet over the limit */
	HTTP_COMPLETE,		/* head parsed; req->head_len is its length */
	HTTP_BAD,		/* malformed: answer 400 */
	HTTP_TOO_LARGE,		/* head over max: answer 431 */
};

struct http_request {
	size_t		head_len;		/* bytes up to and including the empty line */
	int		method_get;		/* method is exactly GET */
	int		method_head;		/* method is exactly HEAD: no body */
	int		version_minor;		/* HTTP/1.<minor> (HTTP/2+ never parses) */
	int		version_major;
	enum http_path	path;			/* query string ignored, exact match */
	char		acme_token[128 + 1];	/* when path == HTTP_PATH_ACME, raw (unchecked) */
	char		host[256];		/* Host header value, "" if none (truncated if longer) */
	int		host_count;
	int		host_in_target;		/* absolute-form: host is its authority */

	/* pyrycode headers */
	char		server_id[SERVER_ID_MAX + 1];	/* X-Pyrycode-Server if 1..64 bytes */
	int		server_id_present;	/* header present and non-empty */
	int		server_id_valid;	/* 1..64 of [A-Za-z0-9._-] */
	int		version_present;	/* X-Pyrycode-Version non-empty */
	int		token_present;		/* X-Pyrycode-Token non-empty; value never kept */
	int		user_agent_present;	/* User-Agent non-empty */
	char		device_name[DEVICE_NAME_MAX + 1]; /* X-Pyrycode-Device-Name, truncated */

	/* RFC 6455 §4.2.1 */
	int		conn_upgrade;		/* Connection has token "upgrade" (any case, comma list, any header count) */
	int		upgrade_websocket;	/* Upgrade contains "websocket" token (case-insensitive) */
	int		ws_version_13;		/* Sec-WebSocket-Version is exactly 13 (one header) */
	int		ws_key_count;		/* number of Sec-WebSocket-Key headers */
	int		ws_key_valid;		/* exactly one, base64 of 16 bytes */
	char		ws_accept[WS_ACCEPT_LEN + 1];	/* computed when ws_key_valid */
};

/*
 * Parses the request head at buf[0..len).  Call again with the grown buffer
 * after every read (the parser restarts; heads are at most 16 KiB).
 * max is the "max header size" limit: a head (request line, headers and the
 * final empty line) longer than max is HTTP_TOO_LARGE, as soon as len > max
 * with no end of head in the first max bytes.
 * Lines end in CRLF (a bare LF is accepted too). Header names are
 * case-insensitive; obs-fold, NUL bytes, a missing ':' or a bad request line
 * are HTTP_BAD.
 */
enum http_parse_result	http_parse_head(const char *buf, size_t len, size_t max,
			    struct http_request *req);

/*
 * The status code a /v1/server or /v1/client request gets from the checks
 * the front does itself (docs/protocol.md §2, steps 4 and 5 in that order),
 * or 0 when it is a valid upgrade.  Returns 400, 426, 405.
 */
int	http_upgrade_status(const struct http_request *req);

/* Sec-WebSocket-Accept of a client key (RFC 6455 §4.2.2). out gets 28 chars + NUL. */
void	http_ws_accept(const char *key, size_t keylen, char out[WS_ACCEPT_LEN + 1]);

#endif
