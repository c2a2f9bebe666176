/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/* Client-chosen names (valid.h): one check of each, for every process. */
#include "config.h"

#include <stddef.h>

#include "pyrelayd.h"
#include "valid.h"

int
server_id_valid(const char *s, size_t len)
{
	size_t		i;
	unsigned char	c;

	if (len < 1 || len > SERVER_ID_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int
acme_token_valid(const char *s)
{
	size_t	i;

	/* no '.', no '/': nothing in a token can leave the challenge directory */
	for (i = 0; s[i] != '\0'; i++) {
		if (i >= 128)
			return 0;
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return 0;
	}
	return i > 0;
}
