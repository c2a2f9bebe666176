/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The canned HTTP answers a front and a relay write (a relay writes the
 * 101), apart from the request parser (http.h), which a relay never links.
 */
#ifndef HTTP_RESPONSE_H
#define HTTP_RESPONSE_H

#include <stddef.h>

/*
 * Canned responses, written to out (size outsz); return the length, or -1
 * if it does not fit.  Every error response has Content-Length, Connection:
 * close, and a short plain-text body (the reason phrase) except 421 which
 * has an empty body.  426 adds "Upgrade: websocket" and "Connection: Upgrade";
 * 400 for a bad Sec-WebSocket-Version adds "Sec-WebSocket-Version: 13"
 * (pass ws_version_hdr = 1).
 */
int	http_error_response(char *out, size_t outsz, int status, int ws_version_hdr);
/* 101 with Upgrade, Connection, Sec-WebSocket-Accept; no subprotocol, no extension */
int	http_switching_response(char *out, size_t outsz, const char *ws_accept);
/* 200 with the given content type, Cache-Control: no-store, and body */
int	http_ok_response(char *out, size_t outsz, const char *content_type,
	    const char *body, size_t bodylen);
const char *http_reason(int status);

#endif
