/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * libFuzzer harness for the request head parser (src/http.c).  Besides
 * memory errors it checks the parser's promises: the result agrees with
 * the limit, head_len points just past an LF inside the first max bytes,
 * a complete head parses the same when cut at head_len and is incomplete
 * one byte before, and the strings in the request are NUL-terminated.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const size_t	limits[] = { 0, 1, 24, 512, 8192, HEAD_MAX_LIMIT };

static void
check(int ok)
{
	if (!ok)
		abort();
}

static void
check_string(const char *s, size_t sz)
{
	check(memchr(s, '\0', sz) != NULL);
}

static void
check_complete(const char *buf, size_t max, const struct http_request *req)
{
	struct http_request	again;
	char			out[512];
	int			status;

	check(req->head_len >= 1 && req->head_len <= max);
	check(buf[req->head_len - 1] == '\n');
	check(req->version_major == 1);
	check(req->version_minor >= 0 && req->version_minor <= 9);
	check_string(req->acme_token, sizeof(req->acme_token));
	check_string(req->host, sizeof(req->host));
	check_string(req->server_id, sizeof(req->server_id));
	check_string(req->device_name, sizeof(req->device_name));
	check_string(req->ws_accept, sizeof(req->ws_accept));
	if (req->server_id_valid)
		check(req->server_id_present &&
		    server_id_valid(req->server_id, strlen(req->server_id)));
	if (req->ws_key_valid)
		check(req->ws_key_count == 1 &&
		    strlen(req->ws_accept) == WS_ACCEPT_LEN);
	else
		check(req->ws_accept[0] == '\0');

	/* bytes after the head are never looked at */
	memset(&again, 0, sizeof(again));
	check(http_parse_head(buf, req->head_len, max, &again) ==
	    HTTP_COMPLETE);
	check(memcmp(&again, req, sizeof(again)) == 0);
	check(http_parse_head(buf, req->head_len - 1, max, &again) ==
	    HTTP_INCOMPLETE);

	status = http_upgrade_status(req);
	check(status == 0 || status == 400 || status == 405 || status == 426);
	if (status == 0) {
		check(req->path == HTTP_PATH_SERVER ||
		    req->path == HTTP_PATH_CLIENT);
		check(http_switching_response(out, sizeof(out),
		    req->ws_accept) > 0);
	} else
		check(http_error_response(out, sizeof(out), status,
		    !req->ws_version_13) > 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request	 req;
	const char		*buf = (const char *)data;
	char			 accept[WS_ACCEPT_LEN + 1];
	size_t			 i;

	for (i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
		memset(&req, 0, sizeof(req));
		switch (http_parse_head(buf, size, limits[i], &req)) {
		case HTTP_COMPLETE:
			check_complete(buf, limits[i], &req);
			break;
		case HTTP_INCOMPLETE:
			check(size <= limits[i]);
			break;
		case HTTP_TOO_LARGE:
			check(size > limits[i]);
			break;
		case HTTP_BAD:
			break;
		default:
			check(0);
		}
	}

	if (size <= 64) {
		http_ws_accept(buf, size, accept);
		check(strlen(accept) == WS_ACCEPT_LEN);
	}
	return 0;
}
