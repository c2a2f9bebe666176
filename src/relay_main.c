/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * pyrelayd-relay: the relay zygote (docs/pool.md), started by the spawner
 * with its channel to the parent on fd 3; every relay is a fork of it.  A
 * separate executable so that a process per server-id maps only what a
 * relay uses: no OpenSSL, whose relocations alone cost 460 KiB of private
 * memory per process (docs/relay-executable.md).
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
	while ((ch = getopt(argc, argv, "dP:")) != -1) {
		switch (ch) {
		case 'd':
			foreground = 1;
			break;
		case 'P':
			/* its one role, named as the parent names every worker's */
			if (proc_role_from_name(optarg) == ROLE_ZYGOTE)
				break;
			/* FALLTHROUGH */
		default:
			fprintf(stderr, "usage: pyrelayd-relay -P zygote [-d] "
			    "(started by pyrelayd)\n");
			exit(1);
		}
	}
	/* it only runs on the channel its parent gave it */
	if (!proc_has_channel()) {
		fprintf(stderr, "pyrelayd-relay: is started by pyrelayd(8)\n");
		exit(1);
	}
	log_init(foreground, 0, proc_role_name(ROLE_ZYGOTE));
	zygote_main();
}
