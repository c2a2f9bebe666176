/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * libFuzzer harness for json_compact and utf8_valid.  Besides the
 * sanitizers it checks that compact output is valid, no longer than the
 * input, compacts to itself, equals in-place compaction, and that the
 * envelope parser agrees on what is JSON.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

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

	free(inplace);
	free(again);
	free(out);
	return 0;
}
