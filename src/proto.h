/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The messages pyrelayd's processes exchange (see msg.h for the framing and
 * docs/messages.md for the flows).  Bodies are fixed-size structs; strings
 * are NUL-terminated inside their arrays and checked as such on receipt,
 * by the one check of each body below (proto.c).
 */
#ifndef PROTO_H
#define PROTO_H

#include <sys/socket.h>

#include <linux/filter.h>

#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "pyrelayd.h"

enum proto_type {
	/* MSG_HELLO = 1 is msg.h's */
	MSG_SETUP = 2,		/* parent -> worker, once after HELLO */
	MSG_LIMITS,		/* parent -> worker, on reload */
	MSG_CONN_NEW,		/* parent -> front, fd: accepted connection */
	MSG_CONN_UPGRADE,	/* front -> parent, fd: parsed /v1 request */
	MSG_CONN_VERDICT,	/* parent -> front, fd: write this answer and close */
	MSG_CONN_ATTACH,	/* parent -> relay, fd: a binary or phone */
	MSG_CONN_REROUTE,	/* relay -> parent, fd: retiring, route it again */
	MSG_CONN_CLOSED,	/* worker -> parent: connection hdr.id is gone */
	MSG_HEALTH_REQ,		/* front -> parent: hdr.id = request */
	MSG_HEALTH,		/* parent -> front: hdr.id = request */
	MSG_RELAY_STATE,	/* relay -> parent: binary and phone counts */
	MSG_RETIRE,		/* relay -> parent: I want to exit */
	MSG_RETIRE_OK,		/* parent -> relay: you are out of the map */
	MSG_RELAY_COUNTERS,	/* relay -> parent: counter increments since the last */
	MSG_METRICS_REQ,	/* front -> parent: hdr.id = request */
	MSG_METRICS,		/* parent -> front: hdr.id = request */
	MSG_VERBOSE,		/* parent -> worker: log verbosity */
	MSG_CTL_SHOW,		/* parent -> relay: list your phones, hdr.id = request */
	MSG_CTL_PHONE,		/* relay -> parent: one phone, or the end of the list */
	MSG_CTL_KICK,		/* parent -> relay: close everything 1001, retire */
	MSG_TLS,		/* parent -> front: certificate chain and key (PEM) */
	MSG_ACME_REQ,		/* front -> parent: challenge token, hdr.id = conn */
	MSG_ACME,		/* parent -> front: the file, or not found */
	MSG_ASSIGN,		/* parent -> pooled relay: serve this server-id */
	MSG_SPAWN,		/* parent -> spawner, fd: start this worker on it */
	MSG_SPAWNED,		/* spawner -> parent: its pid, or why not */
	MSG_COUNTERS_REQ,	/* parent -> relay: send RELAY_COUNTERS now */
	MSG_PUSH_WAKE,		/* relay -> parent: a push wake it admitted */
	MSG_PUSH_CONFIG,	/* parent -> push, fd: key, settings; the CA bundle */
	MSG_PUSH_SEND,		/* parent -> push: send this wake, hdr.id = wake */
	MSG_PUSH_DONE,		/* push -> parent: its outcome, hdr.id = wake */
	MSG_PUSH_RETIRE,	/* parent -> push: finish what you hold, then exit */
	MSG_PUSH_REFRESH,	/* push -> parent: my addresses fail, replace me */
	MSG_FINISH,		/* parent -> front: finish what you hold, then exit */
	MSG_FORK,		/* parent -> zygote, fd: fork a relay on it */
	MSG_TYPE_MAX
};

/*
 * MSG_SPAWN: the executable's path, then argv[0..argc-1], each ending in
 * NUL, in args[0..len-1]; the fd becomes the worker's fd 3 (docs/pool.md).
 * opts: SPAWN_*, no other bit.
 */
/*
 * SPAWN_NO_BRK: brk(2) fails with ENOMEM in the new program and in every
 * process it forks (a seccomp program set before the exec), so that glibc
 * puts its thread block and malloc's memory in mappings beside the image,
 * not in a heap the kernel places far from it: for the relay zygote, each
 * of whose relays would copy page tables for that heap
 * (docs/relay-executable.md).
 */
#define SPAWN_NO_BRK		0x1
#define SPAWN_OPTS		SPAWN_NO_BRK
#define SPAWN_ARGS_MAX		(PATH_MAX + 256)
#define SPAWN_ARGC_MAX		8
struct msg_spawn {
	uint32_t	argc;
	uint32_t	len;
	uint32_t	opts;
	char		args[SPAWN_ARGS_MAX];
};

/*
 * MSG_SPAWNED, the spawner's answer to MSG_SPAWN and the zygote's to
 * MSG_FORK: hdr.id is the request's
 */
struct msg_spawned {
	int32_t		pid;		/* -1: not started */
	int32_t		error;		/* errno when pid is -1 */
};

/*
 * A worker's seccomp program, compiled once by the parent (sandbox_filter.c)
 * and loaded by the worker itself (sandbox.c).  pid_at: the instruction
 * that compares tgkill's pid with SANDBOX_PID_PLACEHOLDER, which the
 * worker replaces with its own pid first (SANDBOX_PID_NONE: none).
 */
#define SANDBOX_PROG_MAX	1024		/* instructions */
#define SANDBOX_PID_NONE	UINT32_MAX
#define SANDBOX_PID_PLACEHOLDER	0x7ffffffeU	/* above any pid_max */
struct sandbox_prog {
	uint32_t		len;		/* instructions */
	uint32_t		pid_at;
	struct sock_filter	insns[SANDBOX_PROG_MAX];
};

struct msg_setup {
	uint32_t	role;
	uint32_t	verbose;
	uint32_t	root;		/* parent runs as root: chroot + setuid */
	uint32_t	uid;
	uint32_t	gid;
	uint32_t	pad;
	char		chroot[PATH_MAX];
	char		server_id[SERVER_ID_MAX + 1];	/* relays */
	char		pad2[7];
	struct limits	lim;
	struct sandbox_prog filter;	/* last: sent up to filter.len */
};
#define MSG_SETUP_MIN		offsetof(struct msg_setup, filter.insns)
#define MSG_SETUP_LEN(s)	(MSG_SETUP_MIN + \
	    (size_t)(s)->filter.len * sizeof(struct sock_filter))

/*
 * MSG_ASSIGN: a pooled relay (set up with an empty server-id, sandboxed,
 * waiting) is given its server-id, once, for the rest of its life.
 */
struct msg_assign {
	char		server_id[SERVER_ID_MAX + 1];
	char		pad[7];
	struct limits	lim;
};

struct msg_limits {
	struct limits	lim;
};

/* hdr.id carries the connection id the parent gave at accept time */
struct msg_conn_new {
	struct sockaddr_storage	peer;		/* client address */
	int64_t			accepted_ms;	/* CLOCK_MONOTONIC at accept */
	uint32_t		listen_flags;	/* LISTEN_* */
	uint32_t		pad;
};

enum conn_kind {
	CONN_BINARY = 1,	/* /v1/server */
	CONN_PHONE = 2,		/* /v1/client */
};

/* MSG_CONN_UPGRADE, MSG_CONN_ATTACH and MSG_CONN_REROUTE */
struct msg_conn_upgrade {
	struct sockaddr_storage	peer;
	int64_t			accepted_ms;
	uint32_t		kind;		/* enum conn_kind */
	uint32_t		status;		/* front's verdict: 0 = valid
						 * upgrade, else 400/405/426 */
	uint32_t		listen_flags;
	uint32_t		preread_len;
	uint32_t		ws_version_hdr;	/* a 400 adds Sec-WebSocket-Version: 13 */
	uint32_t		header_gate;	/* the 400 came from the header gate */
	uint32_t		tls_mode;	/* enum tls_mode */
	uint32_t		head_only;	/* HEAD: an answer has no body */
	char			server_id[SERVER_ID_MAX + 1];
	char			device_name[DEVICE_NAME_MAX + 1];
	char			ws_accept[WS_ACCEPT_LEN + 1];
	char			pad[3];
	unsigned char		preread[PREREAD_MAX];
};

/*
 * A msg_conn_upgrade travels up to the end of its preread: CONN_UPGRADE_MIN
 * bytes plus preread_len (the allow-lists accept that range), so that a
 * connection that sent nothing early costs a few hundred bytes to hand on,
 * not 16 KiB.
 */
#define CONN_UPGRADE_MIN	offsetof(struct msg_conn_upgrade, preread)
#define CONN_UPGRADE_LEN(up)	(CONN_UPGRADE_MIN + (size_t)(up)->preread_len)

enum tls_mode {
	TLS_MODE_NONE = 0,	/* plain listener */
	TLS_MODE_KTLS,		/* the kernel took the session: the fd is the socket */
	TLS_MODE_PUMP,		/* the front keeps the session: the fd is a socketpair end */
};

enum verdict_kind {
	VERDICT_HTTP = 1,	/* write HTTP status `code`, close */
	VERDICT_WS_CLOSE = 2,	/* write 101, then close frame `code`, close */
};

struct msg_conn_verdict {
	uint32_t		kind;		/* enum verdict_kind */
	uint32_t		code;		/* 429, 503, 400, 405, 426, 4404 */
	uint32_t		ws_version_hdr;
	uint32_t		head_only;	/* the request's */
	char			ws_accept[WS_ACCEPT_LEN + 1];
	char			pad[3];
};

/* how a front finished with a connection it did not hand on */
enum front_outcome {
	FRONT_HEALTHZ = 0,	/* answered /healthz */
	FRONT_METRICS,		/* answered /metrics */
	FRONT_HTTP_ERROR,	/* answered 400/404/405/426/431 itself */
	FRONT_TIMEOUT,		/* head not complete within the handshake timeout */
	FRONT_CLIENT_GONE,	/* the client closed or failed first */
	FRONT_VERDICT,		/* wrote a verdict the parent decided */
	FRONT_UPGRADE,		/* handed to the parent (counted by the parent) */
	FRONT_ACME,		/* answered an ACME HTTP-01 challenge */
	FRONT_OUTCOME_MAX
};

struct msg_conn_closed {
	uint32_t	kind;		/* 0 = not upgraded, else enum conn_kind */
	uint32_t	outcome;	/* fronts: enum front_outcome */
	uint32_t	fd_lost;	/* 1: its fd never arrived (RLIMIT_NOFILE) */
	uint32_t	pad;
};

/* docs/protocol.md §2 /metrics label values */
enum metric_endpoint { EP_SERVER = 0, EP_CLIENT, EP_MAX };
enum metric_outcome {
	OUT_ACCEPT = 0, OUT_REJECT_HEADERS, OUT_REJECT_409, OUT_REJECT_404,
	OUT_REJECT_429, OUT_REJECT_RATE_LIMIT, OUT_MAX
};
enum metric_register {
	REG_NO_SERVER = 0, REG_SERVER_IN_USE, REG_PHONES_AT_CAP, REG_RATELIMIT,
	REG_MAX
};
enum relay_exit_cause {
	EXIT_RETIRED = 0,	/* exit 0 after RETIRE_OK or at shutdown */
	EXIT_FAILED,		/* exit status other than 0 */
	EXIT_SIGNALED,		/* died of a signal it was not sent by us */
	EXIT_KILLED,		/* killed by the parent for a bad message */
	EXIT_CAUSE_MAX
};

/*
 * MSG_RELAY_COUNTERS: a relay sends an increment at once when its last
 * send is RELAY_COUNTERS_MS old or more, and otherwise when that much has
 * passed since, with those that followed it.  hdr.id is 1 in the answer
 * to MSG_COUNTERS_REQ (sent even when all are 0), 0 otherwise; an answer
 * is not a send for that schedule, so a relay quiet for two periods holds
 * nothing and a scrape need not ask it, however often scrapes come.
 */
#define RELAY_COUNTERS_MS	1000
struct relay_counters {
	uint64_t	frames_p2b;
	uint64_t	frames_b2p;
	uint64_t	grace_expiries;
	uint64_t	upgrades[EP_MAX][OUT_MAX];
	uint64_t	register_failures[REG_MAX];
};

/*
 * Push wakes (docs/protocol.md §6, docs/push.md).  A relay hands the
 * wakes it admitted to the parent (MSG_PUSH_WAKE), which applies the
 * relay-wide cap and forwards them to the push process (MSG_PUSH_SEND);
 * each comes back as one MSG_PUSH_DONE.
 */
enum push_outcome {
	PUSH_SENT = 0,
	PUSH_UNREGISTERED,		/* FCM: the token is no longer valid */
	PUSH_SEND_FAILED,
	PUSH_TOKEN_FETCH_FAILED,	/* no OAuth2 access token to send with */
	PUSH_DROPPED,			/* over the cap, or no push process */
	PUSH_OUTCOME_MAX
};

struct msg_push_wake {
	char		token[PUSH_TOKEN_MAX];	/* NUL-terminated, not empty */
};

struct msg_push_send {
	char		server_id[SERVER_ID_MAX + 1];
	char		pad[7];
	char		token[PUSH_TOKEN_MAX];
};

struct msg_push_done {
	uint32_t	outcome;		/* enum push_outcome, not DROPPED */
	uint32_t	pad;
};

/*
 * MSG_PUSH_CONFIG: what the push process needs from the service-account
 * key and the settings, the private key (PEM) only in it and the parent
 * (docs/push.md); its fd is the CA bundle, open for reading.
 */
#define PUSH_EMAIL_MAX		256
#define PUSH_KEY_MAX		8192	/* PEM; a 4096-bit RSA key is about 3.3 KiB */
struct msg_push_config {
	char		client_email[PUSH_EMAIL_MAX];
	char		token_uri[PUSH_URL_MAX];
	char		endpoint[PUSH_URL_MAX];
	char		project[PUSH_PROJECT_MAX];
	uint32_t	key_len;
	uint32_t	pad;
	char		key[PUSH_KEY_MAX];
};

struct msg_metrics {
	uint64_t		binaries;
	uint64_t		phones;
	uint64_t		uptime_s;
	uint64_t		connections;		/* live, all processes */
	uint64_t		accepted;		/* total accepted */
	uint64_t		relays_alive;
	uint64_t		addresses;		/* client addresses tracked */
	uint64_t		relay_exits[EXIT_CAUSE_MAX];
	uint64_t		relays_started;
	uint64_t		front_outcomes[FRONT_OUTCOME_MAX];
	uint64_t		relays_pooled;		/* started, waiting for a server-id */
	uint64_t		assignments;		/* pooled relays given a server-id */
	uint64_t		conns_lost;		/* fds lost in a hand-over */
	uint64_t		relays_all;		/* relay processes, every kind */
	uint64_t		max_relays;		/* their cap */
	uint64_t		relay_cap_refusals;	/* claims refused at that cap */
	uint64_t		address_cap_refusals;	/* closed at accept: per-address cap */
	struct relay_counters	c;
	uint64_t		push_wakes[PUSH_OUTCOME_MAX];
	uint32_t		push_configured;	/* the series are shown */
	uint32_t		pad;
};

struct msg_health {
	uint64_t	binaries;
	uint64_t	phones;
	uint64_t	uptime_s;
	uint32_t	draining;	/* 0 or 1: pyrelayctl drain */
	uint32_t	pad;
};

struct msg_relay_state {
	uint32_t	binary_connected;	/* 0 during grace */
	uint32_t	phones;
	uint32_t	probing;		/* a conflict probe is running */
	uint32_t	pad;
};

/*
 * MSG_RELAY_STATE with the counter increments that leave with it (message
 * version 3): one message where a report with increments was two.  The
 * body is the state alone, or the state and the increments; a relay of
 * version 2 sends only the first (docs/messages.md).
 */
struct msg_relay_report {
	struct msg_relay_state	st;
	struct relay_counters	cnt;
};

struct msg_verbose {
	uint32_t	verbose;
	uint32_t	pad;
};

struct msg_ctl_phone {
	uint32_t	last;		/* 1: end of the list, no phone in this one */
	uint32_t	pad;
	uint64_t	age_s;
	uint64_t	bytes_in;
	uint64_t	bytes_out;
	char		conn_id[CONN_ID_MAX + 1];
	char		device[DEVICE_NAME_MAX + 1];
	char		pad2[6];
};

#define TLS_PEM_MAX	30000	/* certificate chain + key, PEM */

struct msg_tls {
	uint32_t	cert_len;	/* pem[0..cert_len) is the chain */
	uint32_t	key_len;	/* then the key */
	unsigned char	pem[TLS_PEM_MAX];
};

#define ACME_TOKEN_MAX	128
#define ACME_FILE_MAX	4096	/* key authorizations are under 200 bytes */

struct msg_acme_req {
	char		token[ACME_TOKEN_MAX + 1];
	char		pad[7];
};

struct msg_acme {
	uint32_t	found;
	uint32_t	len;
	char		data[ACME_FILE_MAX];
};

struct msg_empty {
	uint64_t	reserved;
};

/*
 * proto.c: the check of each body that needs more than its length, named
 * by every receiver's table (struct msg_rule .check) and run by msg_recv().
 * NULL when the body is well formed, else why not.
 */
const char	*msg_setup_check(const void *, size_t);
const char	*msg_limits_check(const void *, size_t);
const char	*msg_assign_check(const void *, size_t);
/* CONN_UPGRADE: a front's verdict may be a refusal */
const char	*msg_conn_upgrade_check(const void *, size_t);
/* CONN_ATTACH, CONN_REROUTE: a valid upgrade only */
const char	*msg_conn_routed_check(const void *, size_t);
const char	*msg_conn_verdict_check(const void *, size_t);
const char	*msg_conn_closed_check(const void *, size_t);
const char	*msg_relay_state_check(const void *, size_t);
const char	*msg_health_check(const void *, size_t);
const char	*msg_relay_counters_check(const void *, size_t);
const char	*msg_ctl_phone_check(const void *, size_t);
const char	*msg_tls_check(const void *, size_t);
const char	*msg_acme_req_check(const void *, size_t);
const char	*msg_acme_check(const void *, size_t);
const char	*msg_spawn_check(const void *, size_t);
const char	*msg_spawned_check(const void *, size_t);
const char	*msg_push_wake_check(const void *, size_t);
const char	*msg_push_config_check(const void *, size_t);
const char	*msg_push_send_check(const void *, size_t);
const char	*msg_push_done_check(const void *, size_t);

/*
 * Each body's length rule and check (struct msg_rule's minlen, len and
 * check), written once per type for the rows of every table that takes
 * it; a row is MSG_RULE(type, fd rule, handler).
 */
#define MSG_BODY_EMPTY		0, sizeof(struct msg_empty), NULL
#define MSG_BODY_SETUP		MSG_SETUP_MIN, sizeof(struct msg_setup), \
				    msg_setup_check
#define MSG_BODY_LIMITS		0, sizeof(struct msg_limits), msg_limits_check
#define MSG_BODY_ASSIGN		0, sizeof(struct msg_assign), msg_assign_check
#define MSG_BODY_VERBOSE	0, sizeof(struct msg_verbose), NULL
#define MSG_BODY_TLS		0, sizeof(struct msg_tls), msg_tls_check
#define MSG_BODY_CONN_NEW	0, sizeof(struct msg_conn_new), NULL
#define MSG_BODY_CONN_UPGRADE	CONN_UPGRADE_MIN, \
				    sizeof(struct msg_conn_upgrade), \
				    msg_conn_upgrade_check
#define MSG_BODY_CONN_ATTACH	CONN_UPGRADE_MIN, \
				    sizeof(struct msg_conn_upgrade), \
				    msg_conn_routed_check
#define MSG_BODY_CONN_REROUTE	MSG_BODY_CONN_ATTACH
#define MSG_BODY_CONN_VERDICT	0, sizeof(struct msg_conn_verdict), \
				    msg_conn_verdict_check
#define MSG_BODY_CONN_CLOSED	0, sizeof(struct msg_conn_closed), \
				    msg_conn_closed_check
#define MSG_BODY_HEALTH_REQ	MSG_BODY_EMPTY
#define MSG_BODY_HEALTH		0, sizeof(struct msg_health), \
				msg_health_check
#define MSG_BODY_METRICS_REQ	MSG_BODY_EMPTY
#define MSG_BODY_METRICS	0, sizeof(struct msg_metrics), NULL
#define MSG_BODY_ACME_REQ	0, sizeof(struct msg_acme_req), \
				    msg_acme_req_check
#define MSG_BODY_ACME		0, sizeof(struct msg_acme), msg_acme_check
#define MSG_BODY_RELAY_STATE	sizeof(struct msg_relay_state), \
				    sizeof(struct msg_relay_report), \
				    msg_relay_state_check
#define MSG_BODY_RELAY_COUNTERS	0, sizeof(struct relay_counters), \
				    msg_relay_counters_check
#define MSG_BODY_COUNTERS_REQ	MSG_BODY_EMPTY
#define MSG_BODY_FINISH		MSG_BODY_EMPTY
#define MSG_BODY_RETIRE		MSG_BODY_EMPTY
#define MSG_BODY_RETIRE_OK	MSG_BODY_EMPTY
#define MSG_BODY_CTL_SHOW	MSG_BODY_EMPTY
#define MSG_BODY_CTL_PHONE	0, sizeof(struct msg_ctl_phone), \
				    msg_ctl_phone_check
#define MSG_BODY_CTL_KICK	MSG_BODY_EMPTY
#define MSG_BODY_SPAWN		offsetof(struct msg_spawn, args) + 1, \
				    sizeof(struct msg_spawn), msg_spawn_check
#define MSG_BODY_SPAWNED	0, sizeof(struct msg_spawned), \
				    msg_spawned_check
#define MSG_BODY_PUSH_WAKE	0, sizeof(struct msg_push_wake), \
				    msg_push_wake_check
#define MSG_BODY_PUSH_CONFIG	0, sizeof(struct msg_push_config), \
				    msg_push_config_check
#define MSG_BODY_PUSH_SEND	0, sizeof(struct msg_push_send), \
				    msg_push_send_check
#define MSG_BODY_PUSH_DONE	0, sizeof(struct msg_push_done), \
				    msg_push_done_check
#define MSG_BODY_PUSH_RETIRE	MSG_BODY_EMPTY
#define MSG_BODY_PUSH_REFRESH	MSG_BODY_EMPTY
#define MSG_BODY_FORK		MSG_BODY_EMPTY

/* One row: its name and type, which cannot differ, fd rule, body, handler */
#define MSG_RULE(t, fd, handle) \
	{ #t, MSG_##t, (fd), MSG_BODY_##t, (handle) }

#endif
