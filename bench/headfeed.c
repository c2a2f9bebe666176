/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * headfeed: the request head parser alone, fed a head as a front gets it
 * when a client trickles it (bench/README, issue 14).  For counting
 * instructions with callgrind:
 *
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
 *       ./bench/headfeed -m incremental -n 8192 -s 1
 *
 * Modes: "incremental" calls http_parse_more after every read, as the
 * front does; "restart" parses the whole buffer again after every read
 * with http_parse_head, as the front did before http_parse_more; "whole"
 * parses the complete head once.  The head is a /healthz request of -n
 * bytes of "a:b" lines; -s is the read size.  Built with
 * -DHEADFEED_RESTART_ONLY it needs nothing but http_parse_head, to measure
 * a tree from before the incremental parser.
 */
#include "config.h"

#include <err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"

#define PREFIX	"GET /healthz HTTP/1.1\r\nHost: x\r\n"
#define LINE	"a:b\r\n"

static void
usage(void)
{
	fprintf(stderr, "usage: headfeed [-m incremental|restart|whole] "
	    "[-n bytes] [-s read size]\n");
	exit(2);
}

/* A head of exactly len bytes (at least 64): PREFIX, LINEs, the empty line. */
static char *
make_head(size_t len)
{
	char	*h;
	size_t	 off, pad;

	if (len < 64)
		errx(2, "-n: at least 64 bytes");
	if ((h = malloc(len)) == NULL)
		err(1, "malloc");
	off = strlcpy(h, PREFIX, len);
	while (off + strlen(LINE) + 2 <= len) {
		memcpy(h + off, LINE, strlen(LINE));
		off += strlen(LINE);
	}
	/* the last line takes up what is left: "b:" and a longer value */
	pad = len - off - 2;
	if (pad > 0) {
		off -= strlen(LINE);
		pad += strlen(LINE);
		memcpy(h + off, "b:", 2);
		memset(h + off + 2, 'x', pad - 4);
		memcpy(h + off + pad - 2, "\r\n", 2);
		off += pad;
	}
	memcpy(h + off, "\r\n", 2);
	return h;
}

int
main(int argc, char *argv[])
{
	struct http_request	 req;
	const char		*mode = "incremental", *errstr;
	enum http_parse_result	 r = HTTP_INCOMPLETE;
	size_t			 len = 8192, step = 1, have, calls = 0;
	char			*head;
	int			 ch;

	while ((ch = getopt(argc, argv, "m:n:s:")) != -1) {
		switch (ch) {
		case 'm':
			mode = optarg;
			break;
		case 'n':
			len = strtonum(optarg, 64, HEAD_MAX_LIMIT, &errstr);
			if (errstr != NULL)
				errx(2, "-n %s: %s", optarg, errstr);
			break;
		case 's':
			step = strtonum(optarg, 1, HEAD_MAX_LIMIT, &errstr);
			if (errstr != NULL)
				errx(2, "-s %s: %s", optarg, errstr);
			break;
		default:
			usage();
		}
	}
	head = make_head(len);
	if (strcmp(mode, "whole") == 0) {
		r = http_parse_head(head, len, HEAD_MAX_LIMIT, &req);
		calls = 1;
	} else if (strcmp(mode, "restart") == 0) {
		for (have = 0; have < len && r == HTTP_INCOMPLETE; calls++) {
			have = have + step < len ? have + step : len;
			r = http_parse_head(head, have, HEAD_MAX_LIMIT, &req);
		}
#ifndef HEADFEED_RESTART_ONLY
	} else if (strcmp(mode, "incremental") == 0) {
		struct http_parser	hp;

		http_parser_init(&hp, HEAD_MAX_LIMIT);
		for (have = 0; have < len && r == HTTP_INCOMPLETE; calls++) {
			have = have + step < len ? have + step : len;
			r = http_parse_more(&hp, head, have);
		}
		req = hp.req;
#endif
	} else
		usage();
	if (r != HTTP_COMPLETE || req.head_len != len ||
	    req.path != HTTP_PATH_HEALTHZ)
		errx(1, "%s: the head did not parse (result %d)", mode, r);
	printf("mode=%s bytes=%zu read=%zu calls=%zu\n", mode, len, step,
	    calls);
	free(head);
	return 0;
}
