/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * JSON (RFC 8259) validation and compaction for phone messages, and the
 * routing envelope parser for binary messages (docs/protocol.md §4).
 * Pure code, no allocation, no recursion.  Nesting deeper than 65536 levels
 * is treated as invalid (an 8 KiB bit stack on the C stack tracks it).
 */
#ifndef JSON_H
#define JSON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* 1 when buf[0..len) is valid UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF) */
int	utf8_valid(const unsigned char *buf, size_t len);

/*
 * Validates that in[0..len) is exactly one JSON value with optional
 * insignificant whitespace around and inside it, and valid UTF-8.
 * Writes the value with insignificant whitespace removed to out, which must
 * have room for len bytes (compaction never grows). Strings are copied byte
 * for byte (escapes kept as written).  Returns the compact length, or -1
 * if the input is not valid JSON.
 */
ssize_t	json_compact(const unsigned char *in, size_t len, unsigned char *out);

struct envelope {
	int		 has_conn_id;
	char		 conn_id[128];	/* decoded string value, NUL-terminated */
	size_t		 conn_id_len;
	int		 conn_id_too_long; /* did not fit: matches no phone */

	int		 has_frame;
	int		 frame_is_null;	/* "frame":null */
	const unsigned char *frame;	/* exact bytes of the value inside the input */
	size_t		 frame_len;

	int		 has_close_code;
	int		 close_code;	/* 0..65535 */

	int		 has_push_wake;
	const unsigned char *push_wake;	/* exact bytes of the push_wake value */
	size_t		 push_wake_len;
};

enum envelope_result {
	ENVELOPE_OK = 0,
	ENVELOPE_NOT_JSON,		/* not exactly one valid JSON value */
	ENVELOPE_NOT_OBJECT,
	ENVELOPE_BAD_CONN_ID,		/* conn_id present but not a string */
	ENVELOPE_BAD_CLOSE_CODE,	/* not an integer 0..65535 without fraction/exponent */
	ENVELOPE_NO_CONN_ID,		/* and no push_wake */
	ENVELOPE_NO_FRAME,		/* neither frame nor close_code */
};

/*
 * Parses a binary's routing envelope.  The whole message must be valid JSON
 * and UTF-8.  Unknown keys are ignored.  When a key appears more than once,
 * the last one wins.  An envelope with push_wake and no, an empty or a
 * null conn_id is a push request: ENVELOPE_OK with has_push_wake set and
 * has_conn_id clear, whatever its other keys hold.
 */
enum envelope_result	envelope_parse(const unsigned char *buf, size_t len,
			    struct envelope *env);
const char		*envelope_strerror(enum envelope_result);

/*
 * Reads the push_wake value of an envelope (docs/protocol.md §6), as found by
 * envelope_parse: an object with "platform":"fcm" and a "token" string
 * of 1 to size - 1 bytes without NUL (other keys are ignored, and the last
 * of a duplicate key wins).  The token is decoded into token.  Returns
 * NULL, or a fixed reason why the request is malformed: "not an object",
 * "platform not fcm", "no token" or "bad token".
 */
const char		*push_wake_parse(const unsigned char *buf, size_t len,
			    char *token, size_t size);

/*
 * A walk over the members of one JSON object, or the elements of one
 * array: the service-account key, OAuth2 and FCM replies (docs/push.md).
 * json_object_begin and json_array_begin check that buf[0..len) is
 * exactly one valid JSON value of that kind (0), else -1.
 */
struct json_members {
	const unsigned char	*p, *end;	/* p: after the bracket or a value */
	unsigned int		 depth;		/* levels left for a value */
	int			 started;
};
int		 json_object_begin(struct json_members *,
		    const unsigned char *buf, size_t len);
/*
 * The next member: 1 with its key decoded into key (*klen is (size_t)-1
 * when it did not fit) and its value at [*v, *v + *vlen); 0 at the end.
 */
int		 json_object_next(struct json_members *, char *key,
		    size_t keysize, size_t *klen, const unsigned char **v,
		    size_t *vlen);
int		 json_array_begin(struct json_members *,
		    const unsigned char *buf, size_t len);
/* The next element: 1 with the value at [*v, *v + *vlen); 0 at the end. */
int		 json_array_next(struct json_members *,
		    const unsigned char **v, size_t *vlen);
/*
 * A string value decoded into dst (NUL-terminated): its length, or
 * (size_t)-1 when it is not a string, needs more than size - 1 bytes, or
 * holds a NUL.
 */
size_t		 json_string_value(const unsigned char *v, size_t vlen,
		    char *dst, size_t size);
/* A value of digits only, at most max: 0 with *out set, else -1. */
int		 json_uint_value(const unsigned char *v, size_t vlen,
		    uint64_t max, uint64_t *out);
/*
 * s as the inside of a JSON string (", \\ and control characters
 * escaped) in out, NUL-terminated: its length, or (size_t)-1 when it
 * needs more than size - 1 bytes.
 */
size_t		 json_escape(const char *s, char *out, size_t size);

#endif
