/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#include "config.h"

#include <string.h>

#include "control.h"
#include "pyrelayd.h"
#include "valid.h"

#define CTL_WORDS_MAX	4

static const struct {
	const char	*words[3];
	int		 nwords;	/* fixed words */
	int		 takes_id;	/* a server-id follows */
	enum ctl_verb	 verb;
} ctl_table[] = {
	{ { "show", "summary" }, 2, 0, CTL_SHOW_SUMMARY },
	{ { "show", "servers" }, 2, 0, CTL_SHOW_SERVERS },
	{ { "show", "server" }, 2, 1, CTL_SHOW_SERVER },
	{ { "reload" }, 1, 0, CTL_RELOAD },
	{ { "log", "verbose" }, 2, 0, CTL_LOG_VERBOSE },
	{ { "log", "brief" }, 2, 0, CTL_LOG_BRIEF },
	{ { "kick", "server" }, 2, 1, CTL_KICK_SERVER },
	{ { "drain" }, 1, 0, CTL_DRAIN },
	{ { "undrain" }, 1, 0, CTL_UNDRAIN },
	{ { "upgrade" }, 1, 0, CTL_UPGRADE },
};

int
ctl_parse(const char *line, size_t len, struct ctl_cmd *cmd, const char **errstr)
{
	const char	*word[CTL_WORDS_MAX];
	size_t		 wlen[CTL_WORDS_MAX], i, j;
	int		 n = 0, k, match;

	memset(cmd, 0, sizeof(*cmd));
	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	for (i = 0; i < len; ) {
		if (line[i] == ' ' || line[i] == '\t') {
			i++;
			continue;
		}
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) {
			*errstr = "unknown command";
			return -1;
		}
		if (n == CTL_WORDS_MAX) {
			*errstr = "too many arguments";
			return -1;
		}
		word[n] = line + i;
		for (j = i; j < len && line[j] != ' ' && line[j] != '\t'; j++)
			;
		wlen[n++] = j - i;
		i = j;
	}
	if (n == 0) {
		*errstr = "empty command";
		return -1;
	}
	for (i = 0; i < sizeof(ctl_table) / sizeof(ctl_table[0]); i++) {
		if (n < ctl_table[i].nwords)
			continue;
		match = 1;
		for (k = 0; k < ctl_table[i].nwords; k++)
			if (strlen(ctl_table[i].words[k]) != wlen[k] ||
			    memcmp(ctl_table[i].words[k], word[k], wlen[k]) != 0)
				match = 0;
		if (!match)
			continue;
		if (ctl_table[i].takes_id) {
			if (n == ctl_table[i].nwords) {
				*errstr = "server-id expected";
				return -1;
			}
			k = ctl_table[i].nwords;
			if (!server_id_valid(word[k], wlen[k])) {
				*errstr = "invalid server-id";
				return -1;
			}
			memcpy(cmd->server_id, word[k], wlen[k]);
			cmd->server_id[wlen[k]] = '\0';
			if (n > k + 1) {
				*errstr = "too many arguments";
				return -1;
			}
		} else if (n > ctl_table[i].nwords) {
			*errstr = "too many arguments";
			return -1;
		}
		cmd->verb = ctl_table[i].verb;
		return 0;
	}
	*errstr = "unknown command";
	return -1;
}
