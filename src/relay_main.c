/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * pyrelayd-relay: the relay process on its own (docs/architecture.md), started
 * by the parent with its channel on fd 3.  A separate executable so that a
 * process per server-id maps only what a relay uses: no OpenSSL, whose
 * relocations alone cost 460 KiB of private memory per process
 * (docs/relay-executable.md).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proc.h"
#include "pyrelayd.h"
#include "relay.h"

extern char **environ;

int
main(int argc, char *argv[])
{
	int	ch, foreground = 0;

	setproctitle_init(argc, argv, environ);
	while ((ch = getopt(argc, argv, "d")) != -1) {
		switch (ch) {
		case 'd':
			foreground = 1;
			break;
		default:
			fprintf(stderr, "usage: pyrelayd-relay [-d] (started by pyrelayd)\n");
			exit(1);
		}
	}
	/* it only runs on the channel its parent gave it */
	if (!proc_has_channel()) {
		fprintf(stderr, "pyrelayd-relay: is started by pyrelayd(8)\n");
		exit(1);
	}
	log_init(foreground, 0, proc_role_name(ROLE_RELAY));
	relay_main();
}
