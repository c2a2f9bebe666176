/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The push process (docs/push.md): `pyrelayd -P push`, started by the
 * parent and run by proc.c's start-up like every worker.  It gets the
 * service-account key and the settings (MSG_PUSH_CONFIG, the CA bundle as
 * its fd), resolves the token endpoint's and FCM's names, enters its
 * sandbox (which allows TCP connections and nothing else a relay may not
 * do), and then sends each wake the parent hands it (MSG_PUSH_SEND) as
 * one FCM HTTP v1 message, with an OAuth2 access token it fetches with a
 * JWT-bearer grant, keeps until a minute before it expires, and fetches
 * again once on a 401.  Every wake ends in one log line and one
 * MSG_PUSH_DONE.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/resource.h>

#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include "msg.h"
#include "proc.h"
#include "proto.h"
#include "push.h"
#include "push_http.h"
#include "pyrelayd.h"

#define PUSH_MAXFDS		64	/* channel, stdio, epoll, 2 x PUSH_CONNS_MAX */
#define PUSH_WAKES_MAX		(2 * PUSH_IN_FLIGHT_MAX)	/* the parent caps them */
#define PUSH_TOKEN_MARGIN_S	60	/* a token is not used in its last minute */
#define PUSH_CA_MAX		(8 * 1024 * 1024)
#define PUSH_GRANT_MAX		4096	/* the grant's body: a JWT of about 1 KiB */

struct wake {
	TAILQ_ENTRY(wake)	 entry;		/* P.wakes */
	TAILQ_ENTRY(wake)	 waiting;	/* P.token_wait */
	int			 is_waiting;
	uint64_t		 id;
	char			 sid[SERVER_ID_MAX + 1];
	char			 token[PUSH_TOKEN_MAX];
	char			 hash[PUSH_HASH_LEN + 1];
	int64_t			 started_ms;
	int			 retried;	/* sent again after a 401 */
	uint64_t		 token_gen;	/* the access token it was sent with */
	struct push_call	*call;
};
TAILQ_HEAD(wake_list, wake);

static struct {
	struct event_base	*base;
	struct msg_chan		 chan;
	struct event		*ev_chan, *ev_chan_write;
	EVP_PKEY		*pkey;
	char			 client_email[PUSH_EMAIL_MAX];
	char			 token_uri[PUSH_URL_MAX];
	char			 token_path[PUSH_URL_MAX];
	char			 send_path[PUSH_PROJECT_MAX + 64];
	struct push_host	*token_host, *fcm_host;
	/* the access token, and its generation (0: none yet) */
	char			 access[PUSH_ACCESS_MAX];
	int64_t			 access_until_ms;
	uint64_t		 access_gen;
	struct push_call	*fetch;		/* a token fetch in flight */
	int64_t			 fetch_started_ms;
	struct wake_list	 wakes;
	struct wake_list	 token_wait;
	int			 nwakes;
	int			 retiring;
	int			 stopping;	/* SIGTERM: leave once flushed */
} P;

static void	wake_start(struct wake *);

static void
push_chan_flush(void)
{
	int	rv;

	if ((rv = msg_flush(&P.chan)) == -1) {
		log_debug("event=parent_gone");
		exit(0);
	}
	if (rv == 0)
		event_add(P.ev_chan_write, NULL);
}

static int64_t
wall_s(void)
{
	struct timespec	ts;

	/* clock_gettime, not time(): the sandbox allows that one */
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec;
}

/* A retiring process leaves once it holds no wake. */
static void
push_check_exit(void)
{
	if (!P.retiring || P.nwakes > 0)
		return;
	log_debug("event=push_retired");
	event_base_loopexit(P.base, NULL);
}

/*
 * The wake's one line (its token only as PUSH_HASH_LEN hex digits of its
 * SHA-256, no reply body, no credential) and its MSG_PUSH_DONE.
 */
static void
wake_finish(struct wake *w, enum push_outcome o, const struct push_result *res,
    const char *error)
{
	struct msg_push_done	 d;
	long long		 ms = now_ms() - w->started_ms;

	/* first the parent's count, so that a scrape after the line has it */
	memset(&d, 0, sizeof(d));
	d.outcome = o;
	msg_compose(&P.chan, MSG_PUSH_DONE, w->id, &d, sizeof(d), -1);
	push_chan_flush();
	if (o == PUSH_SENT)
		log_info("event=push_wake_sent server_id=%s token=%s "
		    "duration_ms=%lld message_id=%s", w->sid, w->hash, ms,
		    res != NULL && res->message_id[0] != '\0' ?
		    res->message_id : "-");
	else
		log_info("event=push_wake_send_failed server_id=%s token=%s "
		    "duration_ms=%lld outcome=%s status=%d error_status=%s "
		    "error_code=%s error=\"%s\"", w->sid, w->hash, ms,
		    push_outcome_name(o), res != NULL ? res->status : 0,
		    res != NULL && res->error_status[0] != '\0' ?
		    res->error_status : "-",
		    res != NULL && res->error_code[0] != '\0' ?
		    res->error_code : "-", error);
	if (w->is_waiting)
		TAILQ_REMOVE(&P.token_wait, w, waiting);
	TAILQ_REMOVE(&P.wakes, w, entry);
	P.nwakes--;
	explicit_bzero(w, sizeof(*w));
	free(w);
	push_check_exit();
}

/* A reply without a status: the error of the transport. */
static void
push_transport_failed(const struct push_reply *rep)
{
	struct msg_empty	e = { 0 };

	if (!rep->unreachable)
		return;
	/* every address failed: a new push process resolves the name again */
	log_warnx("event=push_unreachable error=\"%s\" action=refresh",
	    rep->error);
	msg_compose(&P.chan, MSG_PUSH_REFRESH, 0, &e, sizeof(e), -1);
	push_chan_flush();
}

static void
send_done(const struct push_reply *rep, void *arg)
{
	struct wake		*w = arg;
	struct push_result	 res;
	enum push_outcome	 o;
	char			 why[64];

	w->call = NULL;
	memset(&res, 0, sizeof(res));
	res.status = rep->status;
	if (rep->status == 0) {
		push_transport_failed(rep);
		wake_finish(w, PUSH_SEND_FAILED, &res, rep->error);
		return;
	}
	if (rep->status == 401 && !w->retried) {
		/* once: the token may have been revoked before it expired */
		w->retried = 1;
		if (w->token_gen == P.access_gen)
			P.access_until_ms = 0;
		log_debug("event=push_token_refused server_id=%s token=%s",
		    w->sid, w->hash);
		wake_start(w);
		return;
	}
	o = push_fcm_reply(rep->body, rep->len, &res);
	if (o == PUSH_SENT)
		wake_finish(w, o, &res, NULL);
	else {
		snprintf(why, sizeof(why), rep->status >= 300 &&
		    rep->status <= 399 ? "redirect (HTTP %d), not followed" :
		    "HTTP %d", rep->status);
		wake_finish(w, o, &res, why);
	}
}

static void
wake_send(struct wake *w)
{
	char	body[6 * PUSH_TOKEN_MAX + 128];
	int	n;

	if ((n = push_send_body(w->token, body, sizeof(body))) < 0) {
		wake_finish(w, PUSH_SEND_FAILED, NULL, "token too long");
		return;
	}
	w->token_gen = P.access_gen;
	w->call = push_post(P.fcm_host, P.send_path, P.access,
	    "application/json", body, n, send_done, w);
}

static void
token_done(const struct push_reply *rep, void *arg)
{
	struct push_result	 res;
	struct wake		*w;
	uint64_t		 expires_in;
	const char		*why = NULL;
	char			 error[128];

	P.fetch = NULL;
	if (rep->status == 0) {
		push_transport_failed(rep);
		snprintf(error, sizeof(error), "token endpoint: %s", rep->error);
	} else if (rep->status < 200 || rep->status > 299)
		snprintf(error, sizeof(error), "token endpoint: HTTP %d%s",
		    rep->status, rep->status >= 300 && rep->status <= 399 ?
		    " (redirect, not followed)" : "");
	else if ((why = push_token_reply(rep->body, rep->len, P.access,
	    sizeof(P.access), &expires_in)) != NULL)
		snprintf(error, sizeof(error), "token endpoint: %s", why);
	else {
		P.access_gen++;
		P.access_until_ms = now_ms() + (int64_t)expires_in * 1000 -
		    PUSH_TOKEN_MARGIN_S * 1000;
		log_info("event=push_token_fetched expires_in=%llu "
		    "duration_ms=%lld", (unsigned long long)expires_in,
		    (long long)(now_ms() - P.fetch_started_ms));
		/* the waiting wakes go now, even with a token that lives < 60 s */
		while ((w = TAILQ_FIRST(&P.token_wait)) != NULL) {
			TAILQ_REMOVE(&P.token_wait, w, waiting);
			w->is_waiting = 0;
			wake_send(w);
		}
		return;
	}
	explicit_bzero(P.access, sizeof(P.access));
	P.access_until_ms = 0;
	log_warnx("event=push_token_fetch_failed duration_ms=%lld error=\"%s\"",
	    (long long)(now_ms() - P.fetch_started_ms), error);
	memset(&res, 0, sizeof(res));
	res.status = rep->status;
	while ((w = TAILQ_FIRST(&P.token_wait)) != NULL)
		wake_finish(w, PUSH_TOKEN_FETCH_FAILED, &res, error);
}

/* One grant at a time; the wakes that need a token wait for it. */
static void
token_fetch(void)
{
	char	*body;
	int	 n;

	if (P.fetch != NULL)
		return;
	body = xmalloc(PUSH_GRANT_MAX);
	n = push_grant_body(P.pkey, P.client_email, P.token_uri, wall_s(),
	    body, PUSH_GRANT_MAX);
	if (n < 0)
		fatalx("push: cannot sign the OAuth2 grant");
	P.fetch_started_ms = now_ms();
	P.fetch = push_post(P.token_host, P.token_path, NULL,
	    "application/x-www-form-urlencoded", body, n, token_done, NULL);
	freezero(body, PUSH_GRANT_MAX);
}

static void
wake_start(struct wake *w)
{
	if (P.access_until_ms > now_ms()) {
		wake_send(w);
		return;
	}
	TAILQ_INSERT_TAIL(&P.token_wait, w, waiting);
	w->is_waiting = 1;
	token_fetch();
}

/* A wake to send (checked: msg_push_send_check); hdr.id names it. */
static void
push_send(void *arg, struct msg *m)
{
	struct msg_push_send	*ps = (struct msg_push_send *)m->body;
	struct wake		*w;

	if (m->hdr.id == 0)
		fatalx("push: PUSH_SEND without a wake id");
	if (P.nwakes >= PUSH_WAKES_MAX)
		fatalx("push: more than %d wakes from parent", PUSH_WAKES_MAX);
	w = xcalloc(1, sizeof(*w));
	w->id = m->hdr.id;
	w->started_ms = now_ms();
	strlcpy(w->sid, ps->server_id, sizeof(w->sid));
	strlcpy(w->token, ps->token, sizeof(w->token));
	push_token_hash(w->token, w->hash);
	TAILQ_INSERT_TAIL(&P.wakes, w, entry);
	P.nwakes++;
	wake_start(w);
}

/* Finish the wakes held, then exit: a new push process takes the next. */
static void
push_retire(void *arg, struct msg *m)
{
	P.retiring = 1;
	push_check_exit();
}

/* Only before the sandbox (push_setup): a new process for new settings. */
static void
push_config_again(void *arg, struct msg *m)
{
	fatalx("push: a second PUSH_CONFIG");
}

/*
 * What the push process takes from the parent (docs/messages.md), each
 * with its handler; SETUP and the first PUSH_CONFIG only at start
 * (proc_worker_run, push_setup).
 */
static const struct msg_rule push_rows[] = {
	MSG_RULE(SETUP, MSG_FD_NONE, NULL),
	MSG_RULE(PUSH_CONFIG, MSG_FD_REQUIRED, push_config_again),
	MSG_RULE(VERBOSE, MSG_FD_NONE, proc_verbose),
	MSG_RULE(PUSH_SEND, MSG_FD_NONE, push_send),
	MSG_RULE(PUSH_RETIRE, MSG_FD_NONE, push_retire),
};
const struct msg_rules push_from_parent =
    MSG_RULES(ROLE_PARENT, ROLE_PUSH, push_rows);

static void
push_chan_writable(evutil_socket_t fd, short ev, void *arg)
{
	int	rv;

	if ((rv = msg_flush(&P.chan)) == -1)
		exit(0);
	if (rv == 1) {
		event_del(P.ev_chan_write);
		if (P.stopping)
			event_base_loopexit(P.base, NULL);
	}
}

/* SIGTERM: every send in flight is cancelled and logged as failed. */
static void
push_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	struct wake	*w;

	if (P.fetch != NULL) {
		push_call_cancel(P.fetch);
		P.fetch = NULL;
	}
	while ((w = TAILQ_FIRST(&P.wakes)) != NULL) {
		if (w->call != NULL)
			push_call_cancel(w->call);
		w->call = NULL;
		wake_finish(w, PUSH_SEND_FAILED, NULL, "cancelled: shutting down");
	}
	/* the outcomes go to the parent, which counts them, before we leave */
	P.stopping = 1;
	event_del(P.ev_chan);
	if (msg_flush(&P.chan) != 0)
		event_base_loopexit(P.base, NULL);
	else
		event_add(P.ev_chan_write, NULL);
}

/* Reads the CA bundle the parent opened for us. */
static unsigned char *
push_read_ca(int fd, size_t *len)
{
	unsigned char	*buf;
	size_t		 cap = 256 * 1024;
	ssize_t		 n;

	buf = xmalloc(cap);
	*len = 0;
	for (;;) {
		if (*len == cap) {
			if (cap >= PUSH_CA_MAX)
				fatalx("push: CA bundle over %d bytes", PUSH_CA_MAX);
			cap *= 2;
			buf = xreallocarray(buf, cap, 1);
		}
		if ((n = read(fd, buf + *len, cap - *len)) <= 0)
			break;
		*len += n;
	}
	if (n == -1)
		fatal("push: read CA bundle");
	close(fd);
	return buf;
}

/* Everything from PUSH_CONFIG that the process keeps; the message is wiped. */
static void
push_configure(struct msg_push_config *mc, int cafd, struct event_base *base)
{
	struct push_url	 token, fcm;
	unsigned char	*ca;
	SSL_CTX		*ssl;
	char		 err[512];
	size_t		 calen;

	/* strings and the key's length: msg_push_config_check */
	if (!push_project_valid(mc->project))
		fatalx("push: bad project in PUSH_CONFIG");
	if ((P.pkey = push_key_pkey(mc->key, mc->key_len, err,
	    sizeof(err))) == NULL)
		fatalx("push: %s", err);
	if (push_url_parse(mc->token_uri, 1, &token, err, sizeof(err)) == -1 ||
	    push_url_parse(mc->endpoint, 0, &fcm, err, sizeof(err)) == -1)
		fatalx("push: %s", err);
	strlcpy(P.client_email, mc->client_email, sizeof(P.client_email));
	strlcpy(P.token_uri, mc->token_uri, sizeof(P.token_uri));
	strlcpy(P.token_path, token.path, sizeof(P.token_path));
	snprintf(P.send_path, sizeof(P.send_path),
	    "/v1/projects/%s/messages:send", mc->project);
	explicit_bzero(mc, sizeof(*mc));

	ca = push_read_ca(cafd, &calen);
	ssl = push_ssl_ctx(ca, calen, err, sizeof(err));
	free(ca);
	if (ssl == NULL)
		fatalx("push: %s", err);
	/* names are resolved here, while the files they need can be read */
	if ((P.token_host = push_host_new(base, ssl, &token, 1, err,
	    sizeof(err))) == NULL ||
	    (P.fcm_host = push_host_new(base, ssl, &fcm, PUSH_CONNS_MAX, err,
	    sizeof(err))) == NULL) {
		log_warnx("event=push_resolve_failed error=\"%s\"", err);
		exit(1);
	}
}

/*
 * What OpenSSL and glibc do on first use, done while they may still open
 * files: providers and their configuration for RSA and SHA-256 signing,
 * a client TLS object, and getaddrinfo() of an address (what evhttp calls
 * to connect).
 */
static void
push_preload(void)
{
	struct addrinfo	 hints, *res;
	char		*body;
	unsigned char	 b;

	body = xmalloc(PUSH_GRANT_MAX);
	if (push_grant_body(P.pkey, P.client_email, P.token_uri, wall_s(),
	    body, PUSH_GRANT_MAX) < 0)
		fatalx("push: cannot sign the OAuth2 grant");
	freezero(body, PUSH_GRANT_MAX);
	RAND_bytes(&b, 1);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	if (getaddrinfo("127.0.0.1", "443", &hints, &res) == 0)
		freeaddrinfo(res);
}

/* libevent's own warnings go to our log, at debug level */
static void
push_libevent_log(int severity, const char *msg)
{
	char	q[256];

	log_debug("event=libevent severity=%d message=\"%s\"", severity,
	    log_quotable(msg, q, sizeof(q)));
}

/*
 * SETUP is in: the configuration (PUSH_CONFIG, which follows it), the
 * names resolved and the libraries' first use, while files can still be
 * read; then proc_worker_run enters the sandbox.
 */
static void
push_setup(struct proc_worker *pw, const struct msg_setup *setup)
{
	struct msg	*cm;

	P.base = pw->base;
	P.ev_chan = pw->ev_chan;
	setproctitle("push");
	cm = xmalloc(sizeof(*cm));
	msg_wait(&P.chan, cm, MSG_PUSH_CONFIG, "push");
	if (cm->fd_lost)
		fatalx("push: the CA bundle's descriptor was lost");
	event_set_log_callback(push_libevent_log);
	push_configure((struct msg_push_config *)cm->body, cm->fd, P.base);
	freezero(cm, sizeof(*cm));
	if ((P.ev_chan_write = event_new(P.base, P.chan.fd,
	    EV_WRITE | EV_PERSIST, push_chan_writable, NULL)) == NULL)
		fatalx("push: event_new");
	push_preload();
}

void
push_main(void)
{
	static struct msg	 m;
	struct proc_worker	 pw;

	TAILQ_INIT(&P.wakes);
	TAILQ_INIT(&P.token_wait);
	memset(&pw, 0, sizeof(pw));
	pw.role = ROLE_PUSH;
	pw.rules = &push_from_parent;
	pw.chan = &P.chan;
	pw.m = &m;
	pw.maxfds = PUSH_MAXFDS;
	pw.setup = push_setup;
	pw.sigterm = push_sigterm;
	proc_worker_run(&pw);
	exit(0);
}
