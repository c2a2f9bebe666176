/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Time: the monotonic clock in milliseconds, and the one blocking wait with
 * a deadline, for the few places that must block outside an event loop
 * (a worker's SETUP, the parent's spawner requests, the spawner itself,
 * pyrelayctl).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>

#include "pyrelayd.h"

int64_t
now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
fd_wait(int fd, short events, int64_t deadline)
{
	struct pollfd	pfd;
	int64_t		left = -1;
	int		rv;

	for (;;) {
		if (deadline >= 0 && (left = deadline - now_ms()) <= 0)
			return 0;
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		rv = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (rv > 0)
			return 1;
		if (rv == -1 && errno != EINTR)
			return -1;
		/* EINTR, or poll's timeout a little early: the clock decides */
	}
}
