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
 * What the header lines leave for the checks made once the head is whole.
 * Offsets into the buffer, not pointers: the caller may move it between
 * reads.
 */
struct http_head_scan {
	int	sid_count;	/* X-Pyrycode-Server headers */
	size_t	sid_off;	/* value of the first one */
	size_t	sid_len;
	int	wsver_count;	/* Sec-WebSocket-Version headers */
	int	wsver_is_13;	/* the first one is exactly "13" */
	size_t	key_off;	/* first Sec-WebSocket-Key value */
	size_t	key_len;
	int	device_seen;	/* X-Pyrycode-Device-Name headers */
};

/*
 * One request head parsed as it arrives (a connection keeps one): each call
 * goes on where the last one stopped, so every byte is looked at a bounded
 * number of times however the head is split into reads.
 */
struct http_parser {
	struct http_request	req;	/* what the lines so far said */
	size_t			max;	/* "max header size" for this head */
	size_t			line;	/* where the line being read starts */
	size_t			scan;	/* where the search for its LF resumes */
	int			in_headers;	/* the request line is done */
	enum http_parse_result	result;	/* HTTP_INCOMPLETE until decided */
	struct http_head_scan	hs;
};

/*
 * Starts a head.  max is the "max header size" limit: a head (request line,
 * headers and the final empty line) longer than max is HTTP_TOO_LARGE, as
 * soon as more than max bytes are there with no end of head in the first
 * max.
 */
void	http_parser_init(struct http_parser *, size_t max);

/*
 * Parses what buf[0..len) holds past what earlier calls saw: buf is every
 * byte of the connection so far (it may have moved; its first bytes are the
 * ones the earlier calls were given, and len never shrinks).  Once the
 * result is not HTTP_INCOMPLETE it stays, and hp->req holds the request
 * (req.head_len its length when HTTP_COMPLETE).
 * Lines end in CRLF (a bare LF is accepted too). Header names are
 * case-insensitive; obs-fold, NUL bytes, a missing ':' or a bad request line
 * are HTTP_BAD, as soon as the line is complete.
 */
enum http_parse_result	http_parse_more(struct http_parser *hp,
			    const char *buf, size_t len);

/* The head at buf[0..len) parsed at once: http_parse_more in one call. */
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
