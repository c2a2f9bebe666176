/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The control protocol between pyrelayctl(8) and the parent, over the
 * `control socket` (AF_UNIX, SOCK_STREAM, mode 0600 by default).
 * The client writes one command line ending in "\n"; the parent answers
 * with text lines and closes.  The first line of the answer is "ok" or
 * "error: <message>"; what follows is the command's output.
 */
#ifndef CONTROL_H
#define CONTROL_H

#include <stddef.h>

#include "pyrelayd.h"

#define CTL_LINE_MAX	256	/* a command line, newline included */
#define CTL_TIMEOUT_MS	5000	/* a client must send its line within this */
#define CTL_OUT_MAX	(4 * 1024 * 1024)	/* an answer is bounded too */

enum ctl_verb {
	CTL_SHOW_SUMMARY = 1,	/* show summary */
	CTL_SHOW_SERVERS,	/* show servers */
	CTL_SHOW_SERVER,	/* show server ID */
	CTL_RELOAD,		/* reload */
	CTL_LOG_VERBOSE,	/* log verbose */
	CTL_LOG_BRIEF,		/* log brief */
	CTL_KICK_SERVER,	/* kick server ID */
	CTL_DRAIN,		/* drain */
	CTL_UNDRAIN,		/* undrain */
	CTL_UPGRADE,		/* upgrade (docs/upgrade.md) */
};

struct ctl_cmd {
	enum ctl_verb	verb;
	char		server_id[SERVER_ID_MAX + 1];	/* show server, kick server */
};

/*
 * Parses one command line (words separated by spaces or tabs; the final
 * "\n" may be present or not).  Returns 0, or -1 with *errstr set to a fixed
 * message ("empty command", "unknown command", "server-id expected",
 * "invalid server-id", "too many arguments").
 */
int	ctl_parse(const char *line, size_t len, struct ctl_cmd *cmd,
	    const char **errstr);

#endif
