/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * pyrelayd [-dnvV] [-f file] [-D macro=value]   (docs/protocol.md §10)
 * Fronts and the push process are this same program started by the parent
 * as `pyrelayd -P front [-d]` and `pyrelayd -P push [-d]`, relays the
 * smaller pyrelayd-relay(8 in libexec), all with their channel on fd 3.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

#include "front.h"
#include "parent.h"
#include "proc.h"
#include "push.h"
#include "pyrelayd.h"
#include "spawn.h"

static void __attribute__((__noreturn__))
usage(void)
{
	fprintf(stderr, "usage: pyrelayd [-dnvV] [-D macro=value] [-f file]\n");
	exit(1);
}

static void __attribute__((__noreturn__))
worker_main(const char *name, int foreground)
{
	int	role = proc_role_from_name(name);

	if (role != ROLE_FRONT && role != ROLE_PUSH && role != ROLE_SPAWNER)
		usage();
	/* a worker only runs on the channel its parent gave it */
	if (!proc_has_channel()) {
		fprintf(stderr, "pyrelayd: -P is for processes started by pyrelayd\n");
		exit(1);
	}
	log_init(foreground, 0, name);
	if (role == ROLE_FRONT)
		front_main();
	if (role == ROLE_PUSH)
		push_main();
	spawner_main();
}

int
main(int argc, char *argv[])
{
	struct config		*conf;
	struct parent_opts	 opts;
	const char		*role = NULL;
	char			**macros;
	int			 ch, nmacros = 0, noaction = 0, upgrade;

	/* libbsd rewrites argv's memory for the process titles ps(1) shows */
	setproctitle_init(argc, argv, environ);
	memset(&opts, 0, sizeof(opts));
	opts.conffile = PYRELAYD_CONF;
	macros = xcalloc(argc + 1, sizeof(*macros));

	while ((ch = getopt(argc, argv, "dD:f:nP:vV")) != -1) {
		switch (ch) {
		case 'd':
			opts.foreground = 1;
			break;
		case 'D':
			if (strchr(optarg, '=') == NULL) {
				fprintf(stderr, "pyrelayd: -D %s: expected macro=value\n",
				    optarg);
				exit(1);
			}
			macros[nmacros++] = optarg;
			break;
		case 'f':
			opts.conffile = optarg;
			opts.conffile_given = 1;
			break;
		case 'n':
			noaction = 1;
			break;
		case 'P':
			role = optarg;
			break;
		case 'v':
			opts.verbose++;
			break;
		case 'V':
			printf("pyrelayd %s\n", pyrelayd_version);
			exit(0);
		default:
			usage();
		}
	}
	argc -= optind;
	if (argc != 0)
		usage();

	if (role != NULL)
		worker_main(role, opts.foreground);

	opts.macros = macros;
	opts.nmacros = nmacros;
	/* executed by an upgrade (docs/upgrade.md): the state is read first */
	upgrade = noaction ? UPGRADE_NONE : parent_upgrade_begin(&opts);
	if (upgrade == UPGRADE_BACK)
		conf = parent_upgrade_config();
	/* docs/protocol.md §10: only a missing default file means built-in defaults */
	else if (!opts.conffile_given && config_default_file_missing(opts.conffile))
		conf = config_new_default();
	else
		conf = config_parse(opts.conffile, macros, nmacros);
	/*
	 * The key and CA files of the push statements, checked as read; the
	 * way back's configuration was checked when it was read first.
	 */
	if (conf == NULL || (upgrade != UPGRADE_BACK &&
	    config_check_push(conf) == -1)) {
		if (upgrade == UPGRADE_IN)
			parent_upgrade_back("the configuration has errors");
		exit(1);
	}
	if (noaction) {
		if (opts.verbose)
			config_print(conf, stdout);
		else
			fprintf(stderr, "configuration OK\n");
		exit(0);
	}
	/* errors until the daemon detaches go to stderr, then to syslog */
	if (upgrade == UPGRADE_NONE)
		log_init(1, opts.verbose, "pyrelayd");
	parent_main(conf, &opts);
}
