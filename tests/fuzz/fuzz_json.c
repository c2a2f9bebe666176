/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * libFuzzer harness for json_compact and utf8_valid.  Besides the
 * sanitizers it checks that compact output is valid, no longer than the
 * input, compacts to itself, equals in-place compaction, and that the
 * envelope parser agrees on what is JSON.  The push process's readers of
 * token and FCM replies (hostile input from the network) get the same
 * bytes: what they keep is a printable token or plain identifiers.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "push.h"

#define CHECK(e)	do { if (!(e)) abort(); } while (0)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope	 env;
	unsigned char	*out, *again, *inplace;
	ssize_t		 r, r2;
	size_t		 alloc = size ? size : 1;

	/* exact sizes, so ASan catches a write past len */
	if ((out = malloc(alloc)) == NULL || (again = malloc(alloc)) == NULL ||
	    (inplace = malloc(alloc)) == NULL)
		abort();

	r = json_compact(data, size, out);
	CHECK(r >= -1);
	CHECK((envelope_parse(data, size, &env) == ENVELOPE_NOT_JSON) ==
	    (r == -1));
	if (r >= 0) {
		CHECK((size_t)r <= size);
		CHECK(r > 0);
		/* JSON text is UTF-8 (RFC 8259 §8.1) */
		CHECK(utf8_valid(data, size));
		CHECK(utf8_valid(out, r));
		/* the output is valid and compacts to itself */
		r2 = json_compact(out, r, again);
		CHECK(r2 == r);
		CHECK(memcmp(out, again, r) == 0);
		/* in place gives the same bytes */
		memcpy(inplace, data, size);
		r2 = json_compact(inplace, size, inplace);
		CHECK(r2 == r);
		CHECK(memcmp(out, inplace, r) == 0);
	} else
		(void)utf8_valid(data, size);

	{
		struct push_result	 res;
		char			 access[PUSH_ACCESS_MAX];
		uint64_t		 exp;
		const char		*why;
		size_t			 i;

		why = push_token_reply(data, size, access, sizeof(access), &exp);
		if (r == -1)
			CHECK(why != NULL);
		for (i = 0; why == NULL && access[i] != '\0'; i++)
			CHECK(access[i] > 0x20 && access[i] < 0x7f);
		memset(&res, 0, sizeof(res));
		res.status = size > 0 && (data[0] & 1) ? 200 : 404;
		(void)push_fcm_reply(data, size, &res);
		CHECK(strlen(res.message_id) < sizeof(res.message_id));
		CHECK(strspn(res.error_code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "abcdefghijklmnopqrstuvwxyz0123456789-_./:") ==
		    strlen(res.error_code));
	}

	free(inplace);
	free(again);
	free(out);
	return 0;
}
