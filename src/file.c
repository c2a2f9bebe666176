/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Reading a file the configuration names (a certificate, its key, the
 * push service-account key): the parent reads them, as root, and hands
 * their content to the workers, which never open a file.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pyrelayd.h"

int
config_read_file(const char *keyword, const char *path, int secret,
    unsigned char *buf, size_t room, size_t *len, char *err, size_t errlen)
{
	struct stat	st;
	ssize_t		n = 0;
	int		fd;

	/* symlinks are fine: certbot's live/ files point into archive/ */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s \"%s\": %s", keyword, path,
		    strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s \"%s\": not a regular file", keyword,
		    path);
		close(fd);
		return -1;
	}
	if (secret && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		snprintf(err, errlen, "%s \"%s\": must not be readable by "
		    "group or others (chmod 600)", keyword, path);
		close(fd);
		return -1;
	}
	if ((size_t)st.st_size > room) {
		snprintf(err, errlen, "%s \"%s\": larger than %zu bytes",
		    keyword, path, room);
		close(fd);
		return -1;
	}
	*len = 0;
	while (*len < room && (n = read(fd, buf + *len, room - *len)) > 0)
		*len += n;
	close(fd);
	if (n == -1) {
		snprintf(err, errlen, "%s \"%s\": %s", keyword, path,
		    strerror(errno));
		return -1;
	}
	return 0;
}
