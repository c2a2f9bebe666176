/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The parent's check of the sandbox settings at start and before a reload:
 * the user exists and is neither root nor of group root, the chroot is an
 * absolute, root-owned directory nobody else may write.  Apart from
 * sandbox.c, so that the relay executable (linked statically,
 * docs/relay-executable.md) carries no getpwnam(), which would need the
 * shared NSS modules.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sandbox.h"

int
sandbox_check(const struct config *conf, uid_t *uid, gid_t *gid,
    char *errbuf, size_t errlen)
{
	struct passwd	*pw;
	struct stat	 st;

	if (geteuid() != 0) {
		*uid = getuid();
		*gid = getgid();
		return 0;
	}

	errno = 0;
	if ((pw = getpwnam(conf->user)) == NULL) {
		if (errno != 0 && errno != ENOENT && errno != ESRCH)
			snprintf(errbuf, errlen, "user \"%s\": %s", conf->user,
			    strerror(errno));
		else
			snprintf(errbuf, errlen, "user \"%s\": no such user",
			    conf->user);
		return -1;
	}
	/* a worker running as root would have gained nothing from the drop */
	if (pw->pw_uid == 0) {
		snprintf(errbuf, errlen, "user \"%s\": must not be uid 0",
		    conf->user);
		return -1;
	}
	/* nor as group root, which owns files a worker must not reach */
	if (pw->pw_gid == 0) {
		snprintf(errbuf, errlen, "user \"%s\": its group must not be "
		    "gid 0", conf->user);
		return -1;
	}

	if (conf->chroot[0] != '/') {
		snprintf(errbuf, errlen, "chroot \"%s\": must be an absolute "
		    "path", conf->chroot);
		return -1;
	}
	if (stat(conf->chroot, &st) == -1) {
		snprintf(errbuf, errlen, "chroot \"%s\": %s", conf->chroot,
		    strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(errbuf, errlen, "chroot \"%s\": %s", conf->chroot,
		    strerror(ENOTDIR));
		return -1;
	}
	/* the worker's uid must not be able to plant files in its own root */
	if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		snprintf(errbuf, errlen, "chroot \"%s\": must be owned by root "
		    "and not writable by group or others", conf->chroot);
		return -1;
	}

	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}
