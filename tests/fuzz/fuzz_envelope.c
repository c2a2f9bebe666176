/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * libFuzzer harness for envelope_parse and push_wake_parse.  Checks that
 * the spans it returns lie inside the input and are themselves valid JSON
 * values, that conn_id and a push token are proper C strings, and that the
 * result agrees with json_compact.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define CHECK(e)	do { if (!(e)) abort(); } while (0)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* a returned span: inside the input, one JSON value, no outer whitespace */
static void
check_span(const uint8_t *data, size_t size, const unsigned char *p,
    size_t len)
{
	unsigned char	*out;
	ssize_t		 r;

	CHECK(p != NULL && len > 0);
	CHECK(p >= data && p + len <= data + size);
	CHECK(p[0] != ' ' && p[0] != '\t' && p[0] != '\n' && p[0] != '\r');
	CHECK(p[len - 1] != ' ' && p[len - 1] != '\t' &&
	    p[len - 1] != '\n' && p[len - 1] != '\r');
	if ((out = malloc(len)) == NULL)
		abort();
	r = json_compact(p, len, out);
	CHECK(r > 0 && (size_t)r <= len);
	free(out);
}

/* a push token: 1 to sizeof(token) - 1 bytes, NUL-terminated, no NUL in it */
static void
check_push_wake(const unsigned char *p, size_t len)
{
	char		 token[32];
	const char	*why;
	size_t		 n;

	memset(token, 'Z', sizeof(token));
	if ((why = push_wake_parse(p, len, token, sizeof(token))) != NULL) {
		CHECK(strcmp(why, "not an object") == 0 ||
		    strcmp(why, "platform not fcm") == 0 ||
		    strcmp(why, "no token") == 0 ||
		    strcmp(why, "bad token") == 0);
		return;
	}
	n = strnlen(token, sizeof(token));
	CHECK(n > 0 && n < sizeof(token));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope		 env;
	enum envelope_result	 res;
	unsigned char		*out;
	ssize_t			 r;

	res = envelope_parse(data, size, &env);
	CHECK(envelope_strerror(res) != NULL);

	if ((out = malloc(size ? size : 1)) == NULL)
		abort();
	r = json_compact(data, size, out);
	CHECK((res == ENVELOPE_NOT_JSON) == (r == -1));
	free(out);
	if (res == ENVELOPE_NOT_JSON || res == ENVELOPE_NOT_OBJECT)
		return 0;

	if (env.has_frame) {
		check_span(data, size, env.frame, env.frame_len);
		CHECK(env.frame_is_null == (env.frame_len == 4 &&
		    memcmp(env.frame, "null", 4) == 0));
	} else
		CHECK(env.frame == NULL && !env.frame_is_null);
	if (env.has_push_wake) {
		check_span(data, size, env.push_wake, env.push_wake_len);
		check_push_wake(env.push_wake, env.push_wake_len);
	} else
		CHECK(env.push_wake == NULL);
	if (env.has_conn_id && res != ENVELOPE_BAD_CONN_ID) {
		CHECK(env.conn_id_len < sizeof(env.conn_id));
		CHECK(memchr(env.conn_id, '\0', sizeof(env.conn_id)) ==
		    env.conn_id + env.conn_id_len);
		CHECK(!env.conn_id_too_long || env.conn_id_len == 0);
	}
	CHECK(env.close_code >= 0 && env.close_code <= 65535);
	if (res == ENVELOPE_OK) {
		CHECK(env.has_conn_id || env.has_push_wake);
		CHECK(!env.has_conn_id || env.has_frame || env.has_close_code);
	}
	return 0;
}
