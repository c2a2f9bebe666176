/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The message contract: docs/messages.md's table of types against the
 * tables the processes dispatch with (struct msg_rules, beside each
 * handler), both ways, so that neither can change without the other; the
 * tables' own consistency (one length and one check per type); and the
 * body checks of src/proto.c on bodies that must pass and bodies that
 * must not.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "front.h"
#include "msg.h"
#include "parent.h"
#include "proc.h"
#include "proto.h"
#include "push.h"
#include "pyrelayd.h"
#include "relay.h"
#include "spawn.h"
#include "unit.h"

static const struct msg_rules *const tables[] = {
	&parent_from_front, &parent_from_relay, &parent_from_spawner,
	&parent_from_push, &parent_from_zygote, &front_from_parent,
	&relay_from_parent, &spawner_from_parent, &push_from_parent,
	&zygote_from_parent,
};
#define NTABLES	(sizeof(tables) / sizeof(tables[0]))

/* one row of docs/messages.md's `| type | direction | fd | meaning |` */
struct doc_row {
	char	type[32];
	char	direction[64];
	char	fd[8];
	int	line;
};
#define DOC_ROWS_MAX	128
static struct doc_row	doc[DOC_ROWS_MAX];
static int		ndoc;

#define HELLO_DIRECTION	"every channel, both ways"

/* Copies cell n (0: the first) of a `| a | b |` line, trimmed, into out. */
static int
cell(const char *line, int n, char *out, size_t size)
{
	const char	*p = line, *end;
	size_t		 len;

	if (*p++ != '|')
		return -1;
	for (; n > 0; n--)
		if ((p = strchr(p, '|')) == NULL)
			return -1;
		else
			p++;
	if ((end = strchr(p, '|')) == NULL)
		return -1;
	while (p < end && *p == ' ')
		p++;
	while (end > p && end[-1] == ' ')
		end--;
	len = (size_t)(end - p);
	if (len >= size)
		return -1;
	memcpy(out, p, len);
	out[len] = '\0';
	return 0;
}

/* Reads the table of types; 0, or -1 when the file or the table is missing. */
static int
doc_read(void)
{
	const char	*top = getenv("TOP_SRCDIR");
	char		 path[4096], line[1024];
	FILE		*f;
	int		 in_table = 0, lineno = 0;

	snprintf(path, sizeof(path), "%s/docs/messages.md",
	    top != NULL ? top : "../..");
	if ((f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "%s: cannot open (set TOP_SRCDIR)\n", path);
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		if (!in_table) {
			in_table = strncmp(line,
			    "| type | direction | fd | meaning |", 35) == 0;
			continue;
		}
		if (line[0] != '|')
			break;
		if (strncmp(line, "|---", 4) == 0)
			continue;
		if (ndoc == DOC_ROWS_MAX ||
		    cell(line, 0, doc[ndoc].type, sizeof(doc[ndoc].type)) ||
		    cell(line, 1, doc[ndoc].direction,
		    sizeof(doc[ndoc].direction)) ||
		    cell(line, 2, doc[ndoc].fd, sizeof(doc[ndoc].fd))) {
			fprintf(stderr, "messages.md:%d: not a row of the "
			    "table\n", lineno);
			fclose(f);
			return -1;
		}
		doc[ndoc++].line = lineno;
	}
	fclose(f);
	return in_table && ndoc > 0 ? 0 : -1;
}

static int
suite_init(void)
{
	return doc_read();
}

static const char *
fd_word(const struct msg_rule *r)
{
	return r->fd == MSG_FD_REQUIRED ? "yes" : "no";
}

static void
direction_of(const struct msg_rules *t, char *out, size_t size)
{
	snprintf(out, size, "%s -> %s", proc_role_name(t->from),
	    proc_role_name(t->to));
}

/* Every row of every table is in the document, with its fd rule. */
static void
test_code_in_doc(void)
{
	const struct msg_rule	*r;
	char			 dir[64];
	size_t			 t, i;
	int			 d, found;

	for (t = 0; t < NTABLES; t++) {
		direction_of(tables[t], dir, sizeof(dir));
		for (i = 0; i < tables[t]->nrules; i++) {
			r = &tables[t]->rule[i];
			found = 0;
			for (d = 0; d < ndoc; d++) {
				if (strcmp(doc[d].type, r->name) != 0 ||
				    strcmp(doc[d].direction, dir) != 0)
					continue;
				found = 1;
				if (strcmp(doc[d].fd, fd_word(r)) != 0)
					fprintf(stderr, "\n  messages.md:%d: "
					    "%s %s: fd %s, the code says %s",
					    doc[d].line, r->name, dir,
					    doc[d].fd, fd_word(r));
				CU_ASSERT_STRING_EQUAL(doc[d].fd, fd_word(r));
			}
			if (!found)
				fprintf(stderr, "\n  %s %s: not in "
				    "docs/messages.md", r->name, dir);
			CU_ASSERT(found);
		}
	}
}

/* Every row of the document is in the code, once, with its fd rule. */
static void
test_doc_in_code(void)
{
	const struct msg_rule	*r;
	char			 dir[64];
	size_t			 t, i;
	int			 d, e, found;

	for (d = 0; d < ndoc; d++) {
		for (e = 0; e < d; e++)
			if (strcmp(doc[e].type, doc[d].type) == 0 &&
			    strcmp(doc[e].direction, doc[d].direction) == 0) {
				fprintf(stderr, "\n  messages.md:%d: the row "
				    "of line %d again", doc[d].line,
				    doc[e].line);
				CU_FAIL("a row twice");
			}
		/* msg.c takes HELLO on every channel, never with an fd */
		if (strcmp(doc[d].type, "HELLO") == 0) {
			CU_ASSERT_STRING_EQUAL(doc[d].direction,
			    HELLO_DIRECTION);
			CU_ASSERT_STRING_EQUAL(doc[d].fd, "no");
			continue;
		}
		found = 0;
		for (t = 0; t < NTABLES; t++) {
			direction_of(tables[t], dir, sizeof(dir));
			if (strcmp(doc[d].direction, dir) != 0)
				continue;
			for (i = 0; i < tables[t]->nrules; i++) {
				r = &tables[t]->rule[i];
				if (strcmp(r->name, doc[d].type) != 0)
					continue;
				found = 1;
				CU_ASSERT_STRING_EQUAL(doc[d].fd, fd_word(r));
			}
		}
		if (!found)
			fprintf(stderr, "\n  messages.md:%d: %s %s: no such "
			    "row in the code", doc[d].line, doc[d].type,
			    doc[d].direction);
		CU_ASSERT(found);
	}
}

/* Every type of proto.h is taken by some process. */
static void
test_every_type_used(void)
{
	size_t		t, i;
	uint32_t	type;
	int		found;

	for (type = MSG_SETUP; type < MSG_TYPE_MAX; type++) {
		found = 0;
		for (t = 0; t < NTABLES; t++)
			for (i = 0; i < tables[t]->nrules; i++)
				if (tables[t]->rule[i].type == type)
					found = 1;
		if (!found)
			fprintf(stderr, "\n  type %u: in no table", type);
		CU_ASSERT(found);
	}
}

/*
 * A type is one body wherever it goes: the same name, length and check in
 * every table; a type once per table; a variable length has a check; a
 * row has a handler (SETUP alone is taken before the loop, by msg_wait).
 */
static void
test_one_rule_per_type(void)
{
	const struct msg_rule	*a, *b;
	size_t			 t, u, i, j;

	for (t = 0; t < NTABLES; t++) {
		for (i = 0; i < tables[t]->nrules; i++) {
			a = &tables[t]->rule[i];
			CU_ASSERT(a->type > MSG_HELLO &&
			    a->type < MSG_TYPE_MAX);
			CU_ASSERT(a->len <= MSG_MAX_BODY &&
			    a->minlen <= a->len);
			CU_ASSERT(a->minlen == 0 || a->check != NULL);
			CU_ASSERT(a->handle != NULL || a->type == MSG_SETUP);
			for (u = 0; u < NTABLES; u++)
				for (j = 0; j < tables[u]->nrules; j++) {
					b = &tables[u]->rule[j];
					if (a == b || a->type != b->type)
						continue;
					CU_ASSERT(t != u);
					CU_ASSERT_STRING_EQUAL(a->name,
					    b->name);
					CU_ASSERT_EQUAL(a->len, b->len);
					CU_ASSERT_EQUAL(a->minlen, b->minlen);
					CU_ASSERT_PTR_EQUAL(a->check, b->check);
				}
		}
	}
}

/* ---- the body checks (src/proto.c) --------------------------------------- */

static struct msg_conn_upgrade	up;

static size_t
good_upgrade(uint32_t preread)
{
	memset(&up, 0, sizeof(up));
	up.kind = CONN_BINARY;
	strlcpy(up.server_id, "sid-1", sizeof(up.server_id));
	memset(up.ws_accept, 'a', WS_ACCEPT_LEN);
	up.preread_len = preread;
	up.tls_mode = TLS_MODE_PUMP;
	return CONN_UPGRADE_LEN(&up);
}

static void
test_check_upgrade(void)
{
	/* each string of the body, filled to the end of its array */
	static const struct {
		size_t	off, size;
	} strs[] = {
		{ offsetof(struct msg_conn_upgrade, server_id),
		    sizeof(up.server_id) },
		{ offsetof(struct msg_conn_upgrade, device_name),
		    sizeof(up.device_name) },
		{ offsetof(struct msg_conn_upgrade, ws_accept),
		    sizeof(up.ws_accept) },
	};
	size_t	len, i;

	len = good_upgrade(5);
	CU_ASSERT_PTR_NULL(msg_conn_upgrade_check(&up, len));
	CU_ASSERT_PTR_NULL(msg_conn_routed_check(&up, len));
	/* the length must end at the preread */
	CU_ASSERT_PTR_NOT_NULL(msg_conn_upgrade_check(&up, len + 1));
	CU_ASSERT_PTR_NOT_NULL(msg_conn_upgrade_check(&up, len - 1));
	up.preread_len = PREREAD_MAX + 1;
	CU_ASSERT_PTR_NOT_NULL(msg_conn_upgrade_check(&up,
	    CONN_UPGRADE_LEN(&up)));
	/* every string ends in its array */
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		len = good_upgrade(0);
		memset((char *)&up + strs[i].off, 'a', strs[i].size);
		CU_ASSERT_PTR_NOT_NULL(msg_conn_upgrade_check(&up, len));
	}
	/* a valid upgrade names a valid server-id and a whole accept key */
	len = good_upgrade(0);
	strlcpy(up.server_id, "a b", sizeof(up.server_id));
	CU_ASSERT_PTR_NOT_NULL(msg_conn_upgrade_check(&up, len));
	good_upgrade(0);
	up.ws_accept[WS_ACCEPT_LEN - 1] = '\0';
	CU_ASSERT_PTR_NOT_NULL(msg_conn_upgrade_check(&up, len));
	/* a refused one need not; it reaches no relay */
	up.status = 426;
	up.server_id[0] = '\0';
	CU_ASSERT_PTR_NULL(msg_conn_upgrade_check(&up, len));
	CU_ASSERT_PTR_NOT_NULL(msg_conn_routed_check(&up, len));
	up.status = 404;
	CU_ASSERT_PTR_NOT_NULL(msg_conn_upgrade_check(&up, len));
	good_upgrade(0);
	up.kind = 3;
	CU_ASSERT_PTR_NOT_NULL(msg_conn_upgrade_check(&up, len));
	good_upgrade(0);
	up.tls_mode = TLS_MODE_PUMP + 1;
	CU_ASSERT_PTR_NOT_NULL(msg_conn_upgrade_check(&up, len));
}

static struct msg_setup	setup;

static size_t
good_setup(void)
{
	memset(&setup, 0, sizeof(setup));
	setup.role = ROLE_RELAY;
	strlcpy(setup.chroot, "/var/empty", sizeof(setup.chroot));
	strlcpy(setup.server_id, "sid", sizeof(setup.server_id));
	setup.filter.len = 3;
	setup.filter.pid_at = 1;
	setup.filter.insns[1].k = SANDBOX_PID_PLACEHOLDER;
	return MSG_SETUP_LEN(&setup);
}

static void
test_check_setup(void)
{
	size_t	len = good_setup();

	CU_ASSERT_PTR_NULL(msg_setup_check(&setup, len));
	CU_ASSERT_PTR_NOT_NULL(msg_setup_check(&setup, len - 1));
	setup.server_id[0] = '\0';	/* a pooled relay, or a front */
	CU_ASSERT_PTR_NULL(msg_setup_check(&setup, len));
	memset(setup.chroot, 'c', sizeof(setup.chroot));
	CU_ASSERT_PTR_NOT_NULL(msg_setup_check(&setup, len));
	good_setup();
	strlcpy(setup.server_id, "../x", sizeof(setup.server_id));
	CU_ASSERT_PTR_NOT_NULL(msg_setup_check(&setup, len));
	good_setup();
	memset(setup.lim.domain, 'd', sizeof(setup.lim.domain));
	CU_ASSERT_PTR_NOT_NULL(msg_setup_check(&setup, len));
	good_setup();
	setup.role = ROLE_PARENT;
	CU_ASSERT_PTR_NOT_NULL(msg_setup_check(&setup, len));
	/* the pid slot lies in the program and holds the placeholder */
	good_setup();
	setup.filter.pid_at = 3;
	CU_ASSERT_PTR_NOT_NULL(msg_setup_check(&setup, len));
	good_setup();
	setup.filter.insns[1].k = 0;
	CU_ASSERT_PTR_NOT_NULL(msg_setup_check(&setup, len));
	good_setup();
	setup.filter.pid_at = SANDBOX_PID_NONE;
	CU_ASSERT_PTR_NULL(msg_setup_check(&setup, len));
	setup.filter.len = 0;
	CU_ASSERT_PTR_NOT_NULL(msg_setup_check(&setup, MSG_SETUP_LEN(&setup)));
	setup.filter.len = SANDBOX_PROG_MAX + 1;
	CU_ASSERT_PTR_NOT_NULL(msg_setup_check(&setup, sizeof(setup)));
}

/*
 * RELAY_STATE: the state alone (message version 2), or the state and the
 * increments that left with it (3); nothing between, each part checked.
 */
static void
test_check_relay_state(void)
{
	struct msg_relay_report	rep;

	memset(&rep, 0, sizeof(rep));
	rep.st.binary_connected = 1;
	rep.st.phones = 2;
	rep.cnt.upgrades[EP_SERVER][OUT_ACCEPT] = 1;
	CU_ASSERT_PTR_NULL(msg_relay_state_check(&rep, sizeof(rep.st)));
	CU_ASSERT_PTR_NULL(msg_relay_state_check(&rep, sizeof(rep)));
	CU_ASSERT_PTR_NOT_NULL(msg_relay_state_check(&rep,
	    sizeof(rep.st) + 8));
	CU_ASSERT_PTR_NOT_NULL(msg_relay_state_check(&rep, sizeof(rep) - 8));
	/* an increment out of range, in the long form only */
	rep.cnt.frames_p2b = (uint64_t)1 << 41;
	CU_ASSERT_PTR_NULL(msg_relay_state_check(&rep, sizeof(rep.st)));
	CU_ASSERT_PTR_NOT_NULL(msg_relay_state_check(&rep, sizeof(rep)));
	rep.cnt.frames_p2b = 0;
	rep.st.binary_connected = 2;
	CU_ASSERT_PTR_NOT_NULL(msg_relay_state_check(&rep, sizeof(rep.st)));
	CU_ASSERT_PTR_NOT_NULL(msg_relay_state_check(&rep, sizeof(rep)));
}

/* SPAWN's args: the path, then argc strings, nothing after */
static void
test_check_spawn(void)
{
	static const char	args[] = "/usr/sbin/pyrelayd\0pyrelayd\0-d";
	static struct msg_spawn	sp;
	size_t			base = offsetof(struct msg_spawn, args);

	memcpy(sp.args, args, sizeof(args));
	sp.len = sizeof(args);
	sp.argc = 2;
	CU_ASSERT_PTR_NULL(msg_spawn_check(&sp, base + sizeof(args)));
	/* the length field disagrees with the body */
	CU_ASSERT_PTR_NOT_NULL(msg_spawn_check(&sp, base + sizeof(args) - 1));
	sp.argc = 3;
	CU_ASSERT_PTR_NOT_NULL(msg_spawn_check(&sp, base + sizeof(args)));
	sp.argc = 1;
	CU_ASSERT_PTR_NOT_NULL(msg_spawn_check(&sp, base + sizeof(args)));
	sp.argc = SPAWN_ARGC_MAX + 1;
	CU_ASSERT_PTR_NOT_NULL(msg_spawn_check(&sp, base + sizeof(args)));
	sp.argc = 2;
	/* options: the one there is, and none the spawner does not know */
	sp.opts = SPAWN_NO_BRK;
	CU_ASSERT_PTR_NULL(msg_spawn_check(&sp, base + sizeof(args)));
	sp.opts = SPAWN_NO_BRK << 1;
	CU_ASSERT_PTR_NOT_NULL(msg_spawn_check(&sp, base + sizeof(args)));
	sp.opts = 0;
	sp.args[0] = 'u';
	CU_ASSERT_PTR_NOT_NULL(msg_spawn_check(&sp, base + sizeof(args)));
}

static void
test_check_small(void)
{
	struct msg_acme_req	ar;
	struct msg_spawned	rep;
	struct msg_conn_closed	mc;
	struct msg_ctl_phone	ph;
	struct msg_health	h;
	struct msg_tls		*t;

	memset(&ar, 0, sizeof(ar));
	strlcpy(ar.token, "aB-_9", sizeof(ar.token));
	CU_ASSERT_PTR_NULL(msg_acme_req_check(&ar, sizeof(ar)));
	strlcpy(ar.token, "../etc", sizeof(ar.token));
	CU_ASSERT_PTR_NOT_NULL(msg_acme_req_check(&ar, sizeof(ar)));
	memset(ar.token, 'a', sizeof(ar.token));
	CU_ASSERT_PTR_NOT_NULL(msg_acme_req_check(&ar, sizeof(ar)));

	rep.pid = 42;
	rep.error = 0;
	CU_ASSERT_PTR_NULL(msg_spawned_check(&rep, sizeof(rep)));
	rep.pid = -1;
	CU_ASSERT_PTR_NOT_NULL(msg_spawned_check(&rep, sizeof(rep)));
	rep.error = 11;
	CU_ASSERT_PTR_NULL(msg_spawned_check(&rep, sizeof(rep)));
	rep.pid = 0;
	CU_ASSERT_PTR_NOT_NULL(msg_spawned_check(&rep, sizeof(rep)));

	memset(&mc, 0, sizeof(mc));
	CU_ASSERT_PTR_NULL(msg_conn_closed_check(&mc, sizeof(mc)));
	mc.fd_lost = 2;
	CU_ASSERT_PTR_NOT_NULL(msg_conn_closed_check(&mc, sizeof(mc)));
	mc.fd_lost = 0;
	mc.outcome = FRONT_OUTCOME_MAX;
	CU_ASSERT_PTR_NOT_NULL(msg_conn_closed_check(&mc, sizeof(mc)));

	memset(&ph, 0, sizeof(ph));
	CU_ASSERT_PTR_NULL(msg_ctl_phone_check(&ph, sizeof(ph)));
	memset(ph.device, 'x', sizeof(ph.device));
	CU_ASSERT_PTR_NOT_NULL(msg_ctl_phone_check(&ph, sizeof(ph)));

	memset(&h, 0, sizeof(h));
	CU_ASSERT_PTR_NULL(msg_health_check(&h, sizeof(h)));
	h.draining = 1;
	CU_ASSERT_PTR_NULL(msg_health_check(&h, sizeof(h)));
	h.draining = 2;
	CU_ASSERT_PTR_NOT_NULL(msg_health_check(&h, sizeof(h)));

	t = xcalloc(1, sizeof(*t));
	t->cert_len = 10;
	t->key_len = 10;
	CU_ASSERT_PTR_NULL(msg_tls_check(t, sizeof(*t)));
	t->key_len = TLS_PEM_MAX;
	CU_ASSERT_PTR_NOT_NULL(msg_tls_check(t, sizeof(*t)));
	t->key_len = 0;
	CU_ASSERT_PTR_NOT_NULL(msg_tls_check(t, sizeof(*t)));
	free(t);
}

/* The push process's messages: strings end in their arrays, counts fit. */
static void
test_check_push(void)
{
	struct msg_push_wake	 pw;
	struct msg_push_send	 ps;
	struct msg_push_done	 d;
	struct msg_push_config	*mc;

	memset(&pw, 0, sizeof(pw));
	strlcpy(pw.token, "tok", sizeof(pw.token));
	CU_ASSERT_PTR_NULL(msg_push_wake_check(&pw, sizeof(pw)));
	pw.token[0] = '\0';
	CU_ASSERT_PTR_NOT_NULL(msg_push_wake_check(&pw, sizeof(pw)));
	memset(pw.token, 't', sizeof(pw.token));
	CU_ASSERT_PTR_NOT_NULL(msg_push_wake_check(&pw, sizeof(pw)));

	memset(&ps, 0, sizeof(ps));
	strlcpy(ps.server_id, "sid-1", sizeof(ps.server_id));
	strlcpy(ps.token, "tok", sizeof(ps.token));
	CU_ASSERT_PTR_NULL(msg_push_send_check(&ps, sizeof(ps)));
	memset(ps.token, 't', sizeof(ps.token));
	CU_ASSERT_PTR_NOT_NULL(msg_push_send_check(&ps, sizeof(ps)));
	strlcpy(ps.token, "tok", sizeof(ps.token));
	strlcpy(ps.server_id, "a b", sizeof(ps.server_id));
	CU_ASSERT_PTR_NOT_NULL(msg_push_send_check(&ps, sizeof(ps)));
	ps.server_id[0] = '\0';
	CU_ASSERT_PTR_NOT_NULL(msg_push_send_check(&ps, sizeof(ps)));

	memset(&d, 0, sizeof(d));
	d.outcome = PUSH_TOKEN_FETCH_FAILED;
	CU_ASSERT_PTR_NULL(msg_push_done_check(&d, sizeof(d)));
	/* dropped is the parent's outcome, never the push process's */
	d.outcome = PUSH_DROPPED;
	CU_ASSERT_PTR_NOT_NULL(msg_push_done_check(&d, sizeof(d)));
	d.outcome = PUSH_OUTCOME_MAX + 7;
	CU_ASSERT_PTR_NOT_NULL(msg_push_done_check(&d, sizeof(d)));

	mc = xcalloc(1, sizeof(*mc));
	mc->key_len = 100;
	CU_ASSERT_PTR_NULL(msg_push_config_check(mc, sizeof(*mc)));
	mc->key_len = 0;
	CU_ASSERT_PTR_NOT_NULL(msg_push_config_check(mc, sizeof(*mc)));
	mc->key_len = sizeof(mc->key) + 1;
	CU_ASSERT_PTR_NOT_NULL(msg_push_config_check(mc, sizeof(*mc)));
	mc->key_len = 100;
	memset(mc->endpoint, 'e', sizeof(mc->endpoint));
	CU_ASSERT_PTR_NOT_NULL(msg_push_config_check(mc, sizeof(*mc)));
	free(mc);
}

static CU_TestInfo contract_tests[] = {
	{ "every row of the code is in the doc", test_code_in_doc },
	{ "every row of the doc is in the code", test_doc_in_code },
	{ "every type is taken", test_every_type_used },
	{ "one length and one check per type", test_one_rule_per_type },
	CU_TEST_INFO_NULL
};

static CU_TestInfo check_tests[] = {
	{ "CONN_UPGRADE, ATTACH, REROUTE", test_check_upgrade },
	{ "SETUP", test_check_setup },
	{ "SPAWN", test_check_spawn },
	{ "RELAY_STATE, with and without increments", test_check_relay_state },
	{ "ACME_REQ, SPAWNED, CONN_CLOSED, CTL_PHONE, HEALTH, TLS", test_check_small },
	{ "PUSH_WAKE, PUSH_SEND, PUSH_DONE, PUSH_CONFIG", test_check_push },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "docs/messages.md against the tables", suite_init, NULL, NULL, NULL,
	    contract_tests },
	{ "body checks", NULL, NULL, NULL, NULL, check_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
