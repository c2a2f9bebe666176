/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The canned HTTP answers, apart from the parser: relay processes write
 * the 101 but never parse a request head or hash a key, so they link this
 * file alone (http_response.h).
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "http_response.h"
#include "pyrelayd.h"

const char *
http_reason(int status)
{
	switch (status) {
	case 101:
		return "Switching Protocols";
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 421:
		return "Misdirected Request";
	case 426:
		return "Upgrade Required";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}

/* snprintf result to the length, or -1 when it (and its NUL) did not fit */
static int
fit(int n, size_t outsz)
{
	if (n < 0 || (size_t)n >= outsz)
		return -1;
	return n;
}

/*
 * Error responses are only ever 4xx/5xx; out is NUL-terminated, and must
 * have room for that NUL too.
 */
int
http_error_response(char *out, size_t outsz, int status, int ws_version_hdr)
{
	const char	*reason, *extra = "";
	char		 body[64];
	int		 bodylen;

	if (status < 400 || status > 599)
		return -1;
	reason = http_reason(status);
	if (status == 421)
		body[0] = '\0';
	else
		(void)snprintf(body, sizeof(body), "%s\n", reason);
	bodylen = (int)strlen(body);

	if (status == 405)
		extra = "Allow: GET\r\n";
	else if (status == 400 && ws_version_hdr)
		extra = "Sec-WebSocket-Version: 13\r\n";

	if (status == 426)
		return fit(snprintf(out, outsz,
		    "HTTP/1.1 %d %s\r\n"
		    "Upgrade: websocket\r\n"
		    "Connection: Upgrade\r\n"
		    "Content-Type: text/plain; charset=utf-8\r\n"
		    "Content-Length: %d\r\n"
		    "\r\n"
		    "%s", status, reason, bodylen, body), outsz);
	if (bodylen == 0)
		return fit(snprintf(out, outsz,
		    "HTTP/1.1 %d %s\r\n"
		    "%s"
		    "Content-Length: 0\r\n"
		    "Connection: close\r\n"
		    "\r\n", status, reason, extra), outsz);
	return fit(snprintf(out, outsz,
	    "HTTP/1.1 %d %s\r\n"
	    "%s"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: %d\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "%s", status, reason, extra, bodylen, body), outsz);
}

int
http_switching_response(char *out, size_t outsz, const char *ws_accept)
{
	if (ws_accept == NULL || strlen(ws_accept) != WS_ACCEPT_LEN)
		return -1;
	return fit(snprintf(out, outsz,
	    "HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: websocket\r\n"
	    "Connection: Upgrade\r\n"
	    "Sec-WebSocket-Accept: %s\r\n"
	    "\r\n", ws_accept), outsz);
}

/* out is NUL-terminated after the body, so it needs bodylen + 1 room. */
int
http_ok_response(char *out, size_t outsz, const char *content_type,
    const char *body, size_t bodylen)
{
	int	n;

	/* a caller's content type must not open a header of its own */
	if (content_type == NULL || strpbrk(content_type, "\r\n") != NULL)
		return -1;
	if (body == NULL && bodylen > 0)
		return -1;
	n = snprintf(out, outsz,
	    "HTTP/1.1 200 OK\r\n"
	    "Content-Type: %s\r\n"
	    "Cache-Control: no-store\r\n"
	    "Content-Length: %zu\r\n"
	    "Connection: close\r\n"
	    "\r\n", content_type, bodylen);
	if (fit(n, outsz) == -1 || bodylen >= outsz - (size_t)n ||
	    bodylen > (size_t)(INT_MAX - n))
		return -1;
	if (bodylen > 0)
		memcpy(out + n, body, bodylen);
	out[n + bodylen] = '\0';
	return n + (int)bodylen;
}
