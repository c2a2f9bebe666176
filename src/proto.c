/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The one check of each message body that its length cannot make
 * (docs/messages.md, "Checks"): every receiver's table (struct msg_rule)
 * names it, and msg_recv() runs it before a handler sees the body, so a
 * body that fails is a protocol violation exactly like a bad length.
 * Each returns NULL when the body is well formed, else why not.  The
 * length is already within the row's range when one is called.
 */
#include "config.h"

#include <stddef.h>
#include <string.h>

#include "proto.h"
#include "pyrelayd.h"
#include "valid.h"

/* s[0..size) holds a NUL: the string ends inside its array */
#define ENDS(s)		(memchr((s), '\0', sizeof(s)) != NULL)

static const char *
limits_check(const struct limits *lim)
{
	if (!ENDS(lim->domain))
		return "domain not terminated";
	if (lim->max_header_size > HEAD_MAX_LIMIT)
		return "max header size over its bound";
	return NULL;
}

/* the seccomp program ends where the body does, its pid slot in it */
static const char *
prog_check(const struct sandbox_prog *prog)
{
	if (prog->len == 0 || prog->len > SANDBOX_PROG_MAX)
		return "seccomp program length";
	if (prog->pid_at != SANDBOX_PID_NONE && (prog->pid_at >= prog->len ||
	    prog->insns[prog->pid_at].k != SANDBOX_PID_PLACEHOLDER))
		return "seccomp program pid slot";
	return NULL;
}

const char *
msg_setup_check(const void *body, size_t len)
{
	const struct msg_setup	*s = body;
	const char		*why;

	if (s->filter.len > SANDBOX_PROG_MAX || len != MSG_SETUP_LEN(s))
		return "length does not end at the program";
	if (!ENDS(s->chroot))
		return "chroot not terminated";
	/* an empty server-id: a pooled relay, or a front */
	if (!ENDS(s->server_id) || (s->server_id[0] != '\0' &&
	    !server_id_valid(s->server_id, strlen(s->server_id))))
		return "bad server-id";
	/* a relay's SETUP goes to the zygote, which forks every relay */
	if (s->role != ROLE_FRONT && s->role != ROLE_RELAY &&
	    s->role != ROLE_PUSH)
		return "not a worker's role";
	if (s->root > 1)
		return "bad root flag";
	if ((why = prog_check(&s->filter)) != NULL)
		return why;
	return limits_check(&s->lim);
}

const char *
msg_limits_check(const void *body, size_t len)
{
	return limits_check(&((const struct msg_limits *)body)->lim);
}

const char *
msg_assign_check(const void *body, size_t len)
{
	const struct msg_assign	*a = body;

	if (!ENDS(a->server_id) ||
	    !server_id_valid(a->server_id, strlen(a->server_id)))
		return "bad server-id";
	return limits_check(&a->lim);
}

const char *
msg_conn_upgrade_check(const void *body, size_t len)
{
	const struct msg_conn_upgrade	*up = body;

	if (up->preread_len > PREREAD_MAX || len != CONN_UPGRADE_LEN(up))
		return "length does not end at the preread";
	if (!ENDS(up->server_id) || !ENDS(up->device_name) ||
	    !ENDS(up->ws_accept))
		return "string not terminated";
	if (up->kind != CONN_BINARY && up->kind != CONN_PHONE)
		return "bad kind";
	if (up->status != 0 && up->status != 400 && up->status != 405 &&
	    up->status != 426)
		return "bad status";
	/* a valid upgrade has what a relay needs; a refused one may not */
	if (up->status == 0 && (strlen(up->ws_accept) != WS_ACCEPT_LEN ||
	    !server_id_valid(up->server_id, strlen(up->server_id))))
		return "valid upgrade without server-id or accept key";
	if (up->tls_mode > TLS_MODE_PUMP)
		return "bad tls_mode";
	return NULL;
}

const char *
msg_conn_routed_check(const void *body, size_t len)
{
	const char	*why;

	if ((why = msg_conn_upgrade_check(body, len)) != NULL)
		return why;
	/* only a valid upgrade reaches a relay, and comes back */
	if (((const struct msg_conn_upgrade *)body)->status != 0)
		return "not a valid upgrade";
	return NULL;
}

const char *
msg_conn_verdict_check(const void *body, size_t len)
{
	const struct msg_conn_verdict	*v = body;

	if (!ENDS(v->ws_accept))
		return "accept key not terminated";
	if (v->kind != VERDICT_HTTP && v->kind != VERDICT_WS_CLOSE)
		return "bad kind";
	return NULL;
}

const char *
msg_conn_closed_check(const void *body, size_t len)
{
	const struct msg_conn_closed	*mc = body;

	if (mc->kind > CONN_PHONE || mc->outcome >= FRONT_OUTCOME_MAX ||
	    mc->fd_lost > 1)
		return "bad kind, outcome or fd_lost";
	return NULL;
}

const char *
msg_relay_state_check(const void *body, size_t len)
{
	const struct msg_relay_state	*st = body;

	/* the state alone, or with the increments: nothing between */
	if (len != sizeof(struct msg_relay_state) &&
	    len != sizeof(struct msg_relay_report))
		return "neither the state nor the state and its increments";
	/* a relay serves one binary and at most `phones per server`: more is a lie */
	if (st->binary_connected > 1 || st->phones > PHONES_PER_SERVER_MAX ||
	    st->probing > 1)
		return "counts out of range";
	if (len == sizeof(struct msg_relay_report))
		return msg_relay_counters_check(
		    &((const struct msg_relay_report *)body)->cnt,
		    sizeof(struct relay_counters));
	return NULL;
}

/* the drain state is a flag: the front turns it into words and weights */
const char *
msg_health_check(const void *body, size_t len)
{
	const struct msg_health	*h = body;

	if (h->draining > 1)
		return "draining out of range";
	return NULL;
}

const char *
msg_relay_counters_check(const void *body, size_t len)
{
	const uint64_t	*v = body;
	size_t		 i;

	/* increments over a second or so: 2^40 is far beyond any */
	for (i = 0; i < sizeof(struct relay_counters) / sizeof(*v); i++)
		if (v[i] > ((uint64_t)1 << 40))
			return "increment out of range";
	return NULL;
}

const char *
msg_ctl_phone_check(const void *body, size_t len)
{
	const struct msg_ctl_phone	*ph = body;

	if (!ENDS(ph->conn_id) || !ENDS(ph->device) || ph->last > 1)
		return "string not terminated or bad last";
	return NULL;
}

const char *
msg_tls_check(const void *body, size_t len)
{
	const struct msg_tls	*t = body;

	if (t->cert_len == 0 || t->key_len == 0 ||
	    (size_t)t->cert_len + t->key_len > sizeof(t->pem))
		return "bad lengths";
	return NULL;
}

const char *
msg_acme_req_check(const void *body, size_t len)
{
	const struct msg_acme_req	*ar = body;

	if (!ENDS(ar->token) || !acme_token_valid(ar->token))
		return "bad token";
	return NULL;
}

const char *
msg_acme_check(const void *body, size_t len)
{
	const struct msg_acme	*a = body;

	if (a->found > 1 || a->len > sizeof(a->data))
		return "bad found or length";
	return NULL;
}

const char *
msg_spawn_check(const void *body, size_t len)
{
	const struct msg_spawn	*sp = body;
	size_t			 n, off = 0;
	uint32_t		 i;

	n = len - offsetof(struct msg_spawn, args);
	if (sp->len != n || n == 0 || sp->args[n - 1] != '\0' ||
	    sp->argc == 0 || sp->argc > SPAWN_ARGC_MAX)
		return "bad lengths";
	if (sp->opts & ~SPAWN_OPTS)
		return "unknown options";
	/* the path, then argc arguments, and nothing after them */
	for (i = 0; i <= sp->argc; i++) {
		if (off >= n)
			return "fewer strings than argc";
		off += strlen(sp->args + off) + 1;
	}
	if (off != n)
		return "more strings than argc";
	if (sp->args[0] != '/')
		return "path not absolute";
	return NULL;
}

const char *
msg_spawned_check(const void *body, size_t len)
{
	const struct msg_spawned	*rep = body;

	/* a pid and no error, or -1 and the errno */
	if ((rep->pid == -1) == (rep->error == 0) || rep->pid == 0 ||
	    rep->pid < -1)
		return "bad pid or error";
	return NULL;
}

const char *
msg_push_wake_check(const void *body, size_t len)
{
	const struct msg_push_wake	*pw = body;

	/* push_wake_parse's token: 1 to PUSH_TOKEN_MAX - 1 bytes, no NUL */
	if (!ENDS(pw->token) || pw->token[0] == '\0')
		return "token empty or not terminated";
	return NULL;
}

const char *
msg_push_config_check(const void *body, size_t len)
{
	const struct msg_push_config	*mc = body;

	if (!ENDS(mc->client_email) || !ENDS(mc->token_uri) ||
	    !ENDS(mc->endpoint) || !ENDS(mc->project))
		return "string not terminated";
	if (mc->key_len == 0 || mc->key_len > sizeof(mc->key))
		return "bad key length";
	return NULL;
}

const char *
msg_push_send_check(const void *body, size_t len)
{
	const struct msg_push_send	*ps = body;

	if (!ENDS(ps->server_id) ||
	    !server_id_valid(ps->server_id, strlen(ps->server_id)))
		return "bad server-id";
	if (!ENDS(ps->token) || ps->token[0] == '\0')
		return "token empty or not terminated";
	return NULL;
}

const char *
msg_push_done_check(const void *body, size_t len)
{
	const struct msg_push_done	*d = body;

	/* the push process sends what it tried: DROPPED is the parent's */
	if (d->outcome >= PUSH_DROPPED)
		return "bad outcome";
	return NULL;
}
