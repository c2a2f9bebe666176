/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of src/control.c: the command lines of the control protocol,
 * with every separator and line ending a client may send, and every error.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "control.h"
#include "unit.h"

#define ID64	"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._"
#define ID65	ID64 "-"

/* Parses the C string s; returns what ctl_parse returned. */
static int
parse(const char *s, struct ctl_cmd *cmd, const char **errstr)
{
	*errstr = NULL;
	return ctl_parse(s, strlen(s), cmd, errstr);
}

/* s must parse as verb (with server-id sid when not NULL). */
static void
ok(const char *s, enum ctl_verb verb, const char *sid)
{
	struct ctl_cmd	 cmd;
	const char	*errstr;

	memset(&cmd, 0xa5, sizeof(cmd));
	CU_ASSERT_EQUAL(parse(s, &cmd, &errstr), 0);
	CU_ASSERT_EQUAL(cmd.verb, verb);
	CU_ASSERT_STRING_EQUAL(cmd.server_id, sid != NULL ? sid : "");
	if (cmd.verb != verb)
		fprintf(stderr, "\n  %s: verb %d, expected %d\n", s,
		    (int)cmd.verb, (int)verb);
}

/* The len bytes at s must fail with exactly the message want. */
static void
bad_len(const char *s, size_t len, const char *want)
{
	struct ctl_cmd	 cmd;
	const char	*errstr = NULL;

	CU_ASSERT_EQUAL(ctl_parse(s, len, &cmd, &errstr), -1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(errstr);
	CU_ASSERT_STRING_EQUAL(errstr, want);
	if (strcmp(errstr, want) != 0)
		fprintf(stderr, "\n  %.*s: \"%s\", expected \"%s\"\n", (int)len,
		    s, errstr, want);
}

static void
bad(const char *s, const char *want)
{
	bad_len(s, strlen(s), want);
}

static void
test_every_command(void)
{
	ok("show summary", CTL_SHOW_SUMMARY, NULL);
	ok("show servers", CTL_SHOW_SERVERS, NULL);
	ok("show server sid-1", CTL_SHOW_SERVER, "sid-1");
	ok("reload", CTL_RELOAD, NULL);
	ok("log verbose", CTL_LOG_VERBOSE, NULL);
	ok("log brief", CTL_LOG_BRIEF, NULL);
	ok("kick server sid-1", CTL_KICK_SERVER, "sid-1");
	ok("drain", CTL_DRAIN, NULL);
	ok("undrain", CTL_UNDRAIN, NULL);
	ok("upgrade", CTL_UPGRADE, NULL);
	ok(" upgrade \r\n", CTL_UPGRADE, NULL);
	bad("upgrade now", "too many arguments");
}

static void
test_line_endings(void)
{
	ok("show summary\n", CTL_SHOW_SUMMARY, NULL);
	ok("show summary\r\n", CTL_SHOW_SUMMARY, NULL);
	ok("reload\n", CTL_RELOAD, NULL);
	ok("reload\r\n", CTL_RELOAD, NULL);
	ok("show server abc\n", CTL_SHOW_SERVER, "abc");
	ok("kick server abc\r\n", CTL_KICK_SERVER, "abc");
	ok("log brief\r\n", CTL_LOG_BRIEF, NULL);
	ok("drain\n", CTL_DRAIN, NULL);
	ok("undrain\r\n", CTL_UNDRAIN, NULL);
	/* one line ending only: a second one is a control byte */
	bad("reload\n\n", "unknown command");
	bad("reload\r\n\r\n", "unknown command");
	bad("reload\n\r", "unknown command");
	bad("\nreload\n", "unknown command");
}

static void
test_separators(void)
{
	ok("  show   summary  ", CTL_SHOW_SUMMARY, NULL);
	ok("\tshow\tservers\t", CTL_SHOW_SERVERS, NULL);
	ok(" \t show \t server \t x.y_z-1 \t \n", CTL_SHOW_SERVER, "x.y_z-1");
	ok("kick\t\tserver  abc\r\n", CTL_KICK_SERVER, "abc");
	ok("   reload   \r\n", CTL_RELOAD, NULL);
	ok("log  verbose \n", CTL_LOG_VERBOSE, NULL);
}

static void
test_server_ids(void)
{
	ok("show server " ID64, CTL_SHOW_SERVER, ID64);
	ok("kick server " ID64 "\n", CTL_KICK_SERVER, ID64);
	ok("show server a", CTL_SHOW_SERVER, "a");
	ok("show server -", CTL_SHOW_SERVER, "-");
	ok("kick server ...", CTL_KICK_SERVER, "...");
	ok("show server 6f1c2a3e-0b5d-4e7f-9a8b-1c2d3e4f5a6b", CTL_SHOW_SERVER,
	    "6f1c2a3e-0b5d-4e7f-9a8b-1c2d3e4f5a6b");

	bad("show server " ID65, "invalid server-id");
	bad("kick server " ID65 "\n", "invalid server-id");
	bad("show server a/b", "invalid server-id");
	bad("show server a:b", "invalid server-id");
	bad("kick server \"abc\"", "invalid server-id");
	bad("kick server abc!", "invalid server-id");
	bad("show server caf\xc3\xa9", "invalid server-id");
	bad("show server a\xff", "invalid server-id");
	bad("kick server a,b", "invalid server-id");
}

static void
test_empty(void)
{
	bad("", "empty command");
	bad("\n", "empty command");
	bad("\r\n", "empty command");
	bad("   ", "empty command");
	bad(" \t \r\n", "empty command");
	bad_len("x", 0, "empty command");
}

static void
test_unknown(void)
{
	bad("show", "unknown command");
	bad("show\n", "unknown command");
	bad("log", "unknown command");
	bad("kick", "unknown command");
	bad("show everything", "unknown command");
	bad("show servers2", "unknown command");
	bad("show summar", "unknown command");
	bad("SHOW SUMMARY", "unknown command");
	bad("Reload", "unknown command");
	bad("reloads", "unknown command");
	bad("log debug", "unknown command");
	bad("kick phone abc", "unknown command");
	bad("kick abc", "unknown command");
	bad("help", "unknown command");
	bad("summary show", "unknown command");
	bad("show,summary", "unknown command");
	bad("Drain", "unknown command");
	bad("drained", "unknown command");
	bad("un drain", "unknown command");
	bad("drain-off", "unknown command");
}

static void
test_missing_id(void)
{
	bad("show server", "server-id expected");
	bad("show server\n", "server-id expected");
	bad("show server   \r\n", "server-id expected");
	bad("kick server", "server-id expected");
	bad("kick  server \t\n", "server-id expected");
}

static void
test_too_many(void)
{
	bad("show summary now", "too many arguments");
	bad("show servers all", "too many arguments");
	bad("reload now", "too many arguments");
	bad("reload now\n", "too many arguments");
	bad("log verbose 2", "too many arguments");
	bad("log brief x", "too many arguments");
	bad("drain on", "too many arguments");
	bad("undrain now\n", "too many arguments");
	bad("show server a b", "too many arguments");
	bad("kick server a b\r\n", "too many arguments");
	bad("kick server a b c", "too many arguments");
	bad("show summary a b c d e f g", "too many arguments");
	bad("a b c d e", "too many arguments");
}

/*
 * A control byte (or NUL) is refused wherever it is: a command word that
 * holds one is unknown, a server-id that holds one is invalid.
 */
static void
test_control_chars(void)
{
	bad("show\001summary", "unknown command");
	bad("show summary\001", "unknown command");
	bad("show summary \001", "unknown command");
	bad("\033[2Jreload", "unknown command");
	bad("reload\rnow\n", "unknown command");
	bad("show\x7fsummary", "unknown command");
	bad("\x7f", "unknown command");
	bad("log\vbrief", "unknown command");
	bad("log\fbrief", "unknown command");
	bad("log \bbrief", "unknown command");
	bad_len("reload\0\n", 8, "unknown command");
	bad_len("show\0summary", 12, "unknown command");
	bad_len("\0", 1, "unknown command");
	bad("show server a\x7f", "invalid server-id");
	bad("show server a\nreload\n", "invalid server-id");
	bad("kick server a\001b", "invalid server-id");
	bad_len("kick server ab\0c", 16, "invalid server-id");
	bad("show server \001", "unknown command");
}

/* The parser reads only the len bytes it is given. */
static void
test_length_bound(void)
{
	struct ctl_cmd	 cmd;
	const char	*errstr;
	static const char	 line[] = "show summaryXXXX";

	CU_ASSERT_EQUAL(ctl_parse(line, 12, &cmd, &errstr), 0);
	CU_ASSERT_EQUAL(cmd.verb, CTL_SHOW_SUMMARY);
	CU_ASSERT_EQUAL(ctl_parse("show server abcdef", 14, &cmd, &errstr), 0);
	CU_ASSERT_EQUAL(cmd.verb, CTL_SHOW_SERVER);
	CU_ASSERT_STRING_EQUAL(cmd.server_id, "ab");
	bad_len("show server abcdef", 12, "server-id expected");
	CU_ASSERT_EQUAL(ctl_parse("reloadX", 6, &cmd, &errstr), 0);
	CU_ASSERT_EQUAL(cmd.verb, CTL_RELOAD);
}

/* A failed parse leaves no server-id of an earlier command behind. */
static void
test_reset(void)
{
	struct ctl_cmd	 cmd;
	const char	*errstr;

	CU_ASSERT_EQUAL(parse("kick server abc", &cmd, &errstr), 0);
	CU_ASSERT_STRING_EQUAL(cmd.server_id, "abc");
	CU_ASSERT_EQUAL(parse("reload", &cmd, &errstr), 0);
	CU_ASSERT_EQUAL(cmd.verb, CTL_RELOAD);
	CU_ASSERT_STRING_EQUAL(cmd.server_id, "");
}

/* The longest valid command fits a line with room to spare. */
static void
test_line_max(void)
{
	CU_ASSERT(strlen("kick server " ID64 "\r\n") <= CTL_LINE_MAX);
	CU_ASSERT_EQUAL(strlen(ID64), SERVER_ID_MAX);
	CU_ASSERT_EQUAL(strlen(ID65), SERVER_ID_MAX + 1);
}

static CU_TestInfo ctl_parse_tests[] = {
	{ "every command", test_every_command },
	{ "line endings", test_line_endings },
	{ "spaces and tabs", test_separators },
	{ "server-ids", test_server_ids },
	{ "empty command", test_empty },
	{ "unknown command", test_unknown },
	{ "server-id expected", test_missing_id },
	{ "too many arguments", test_too_many },
	{ "control characters", test_control_chars },
	{ "length bound", test_length_bound },
	{ "reset", test_reset },
	{ "line max", test_line_max },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "ctl_parse", NULL, NULL, NULL, NULL, ctl_parse_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
