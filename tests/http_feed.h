/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Test helper shared by tests/unit/test_http.c and the fuzzer
 * tests/fuzz/fuzz_http_incremental.c: feeds a request head to the
 * incremental parser (http_parse_more) in the reads a front would see.
 */
#ifndef HTTP_FEED_H
#define HTTP_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"

#define HTTP_FEED_DISAGREE	(-1)	/* a call after the result changed it */

/*
 * Feeds buf[0..len) to a new parser (limit max) in reads ending at ends[0],
 * ends[1], ... (increasing, at most len; len itself is fed last), as a
 * front does after every read.  Every call gets a fresh allocation holding
 * exactly the bytes so far, the last one freed: a parser that kept a pointer
 * into an earlier buffer or read past the end shows under AddressSanitizer.
 * Stops at the first result other than HTTP_INCOMPLETE, then checks that
 * feeding every byte leaves that result and the request as they were
 * (HTTP_FEED_DISAGREE if not).  *req gets the parser's request.
 */
int	http_feed(const char *buf, size_t len, size_t max, const size_t *ends,
	    size_t nends, struct http_request *req);

/*
 * Fills ends with increasing random read ends in [1, len) from seed (a
 * small xorshift, so a seed always gives the same split); reads are 1 to
 * maxread bytes.  Returns how many it wrote (at most cap).
 */
size_t	http_feed_split(uint32_t seed, size_t len, size_t maxread,
	    size_t *ends, size_t cap);

#endif
