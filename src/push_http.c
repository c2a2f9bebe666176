/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The push process's HTTPS client: evhttp over OpenSSL bufferevents.
 *
 * Each connection carries one call at a time (HTTP/1.1, no pipelining)
 * and is kept open for the next one, so a burst of wakes shares one TLS
 * session.  Another connection to the same endpoint is opened only when
 * a call has waited PUSH_SPREAD_MS for one to be free, up to maxconns:
 * against a fast endpoint a burst stays on one connection, a slow one
 * gets a few.  A
 * connection is never reconnected (evhttp would reuse its spent SSL
 * object): once closed, by either side or by a failure, it is freed and
 * a new one made when needed.  Connections and calls are freed from
 * ev_run, never inside evhttp's callbacks.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "push_http.h"
#include "pyrelayd.h"

struct push_conn {
	TAILQ_ENTRY(push_conn)	 entry;
	struct push_host	*h;
	struct evhttp_connection *evcon;
	struct push_call	*call;		/* NULL: idle */
	int			 dead;		/* closed: freed by ev_run */
	struct event		*ev_idle;
};
TAILQ_HEAD(push_conn_list, push_conn);

struct push_call {
	TAILQ_ENTRY(push_call)	 entry;		/* h->queue, while waiting */
	struct push_host	*h;
	struct push_conn	*conn;		/* NULL while waiting */
	struct evhttp_request	*req;		/* on conn; evhttp frees it */
	struct event		*ev_deadline;
	int			 error;		/* evhttp's, 0 when none */
	int			 tries;		/* connections it failed to make */
	int64_t			 queued_ms;	/* waiting for a connection since */
	push_reply_cb		 cb;
	void			*arg;
	const char		*content_type;
	char			 path[PUSH_URL_MAX + 128];
	char			 auth[PUSH_ACCESS_MAX + 16];	/* "" or "Bearer ..." */
	size_t			 len;
	char			 body[];
};
TAILQ_HEAD(push_call_list, push_call);

struct push_host {
	struct event_base	*base;
	SSL_CTX			*ssl;
	struct push_url		 url;
	char			 hosthdr[sizeof(((struct push_url *)0)->host) + 8];
	char			 addrs[PUSH_ADDRS_MAX][INET6_ADDRSTRLEN];
	int			 families[PUSH_ADDRS_MAX];
	int			 naddrs, next_addr;
	int			 failed;	/* connections failed in a row */
	struct push_conn_list	 conns;
	int			 nconns, maxconns;
	struct push_call_list	 queue;
	struct event		*ev_run;
	struct event		*ev_spread;	/* the head call has waited enough */
};

static void	push_run(evutil_socket_t, short, void *);

SSL_CTX *
push_ssl_ctx(const unsigned char *ca, size_t len, char *err, size_t errlen)
{
	static const unsigned char	 alpn[] = "\x08http/1.1";
	SSL_CTX				*ctx;
	BIO				*bio;
	X509				*x;
	int				 n = 0;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		fatalx("push: SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* idle connections keep no read and write buffers */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
	if ((bio = BIO_new_mem_buf(ca, (int)len)) == NULL)
		fatalx("push: BIO_new_mem_buf");
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), x) == 1)
			n++;
		X509_free(x);
	}
	BIO_free(bio);
	ERR_clear_error();
	if (n == 0) {
		snprintf(err, errlen, "no certificate in the CA bundle");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct push_host *
push_host_new(struct event_base *base, SSL_CTX *ssl,
    const struct push_url *url, int maxconns, char *err, size_t errlen)
{
	struct push_host	*h;
	struct addrinfo		 hints, *res, *ai;
	int			 rv;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = AI_ADDRCONFIG;
	if ((rv = getaddrinfo(url->host, NULL, &hints, &res)) != 0) {
		snprintf(err, errlen, "%s: %s", url->host, gai_strerror(rv));
		return NULL;
	}
	h = xcalloc(1, sizeof(*h));
	for (ai = res; ai != NULL && h->naddrs < PUSH_ADDRS_MAX;
	    ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    getnameinfo(ai->ai_addr, ai->ai_addrlen,
		    h->addrs[h->naddrs], sizeof(h->addrs[0]), NULL, 0,
		    NI_NUMERICHOST) != 0)
			continue;
		h->families[h->naddrs++] = ai->ai_family;
	}
	freeaddrinfo(res);
	if (h->naddrs == 0) {
		snprintf(err, errlen, "%s: no IPv4 or IPv6 address", url->host);
		free(h);
		return NULL;
	}
	h->base = base;
	h->ssl = ssl;
	h->url = *url;
	h->maxconns = maxconns;
	/* Host: the name, with the port when it is not 443 */
	if (strchr(url->host, ':') != NULL)
		snprintf(h->hosthdr, sizeof(h->hosthdr), "[%s]", url->host);
	else
		strlcpy(h->hosthdr, url->host, sizeof(h->hosthdr));
	if (url->port != 443)
		snprintf(h->hosthdr + strlen(h->hosthdr), sizeof(h->hosthdr) -
		    strlen(h->hosthdr), ":%u", (unsigned)url->port);
	TAILQ_INIT(&h->conns);
	TAILQ_INIT(&h->queue);
	if ((h->ev_run = event_new(base, -1, 0, push_run, h)) == NULL ||
	    (h->ev_spread = evtimer_new(base, push_run, h)) == NULL)
		fatalx("push: event_new");
	log_debug("event=push_resolved host=%s addresses=%d first=%s",
	    url->host, h->naddrs, h->addrs[0]);
	return h;
}

static void
push_kick(struct push_host *h)
{
	event_active(h->ev_run, EV_TIMEOUT, 0);
}

static void
conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct push_conn	*c = arg;

	c->dead = 1;
	push_kick(c->h);
}

static void
conn_idle(evutil_socket_t fd, short ev, void *arg)
{
	struct push_conn	*c = arg;

	if (c->call == NULL) {
		c->dead = 1;
		push_kick(c->h);
	}
}

static void
conn_free(struct push_conn *c)
{
	struct push_host	*h = c->h;

	TAILQ_REMOVE(&h->conns, c, entry);
	h->nconns--;
	/* freeing a connected one would call closecb on freed memory */
	evhttp_connection_set_closecb(c->evcon, NULL, NULL);
	evhttp_connection_free(c->evcon);
	event_free(c->ev_idle);
	free(c);
}

static struct push_conn *
conn_new(struct push_host *h)
{
	struct push_conn	*c;
	struct bufferevent	*bev;
	SSL			*ssl;
	int			 i = h->next_addr;

	if ((ssl = SSL_new(h->ssl)) == NULL)
		return NULL;
	if (h->url.host_is_ip) {
		/* no SNI for an address (RFC 6066 §3); the certificate names it */
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
		    h->url.host) != 1) {
			SSL_free(ssl);
			return NULL;
		}
	} else if (SSL_set_tlsext_host_name(ssl, h->url.host) != 1 ||
	    SSL_set1_host(ssl, h->url.host) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	bev = bufferevent_openssl_socket_new(h->base, -1, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE |
	    BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	/* many servers close without close_notify; lengths are checked */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	c = xcalloc(1, sizeof(*c));
	c->h = h;
	if ((c->evcon = evhttp_connection_base_bufferevent_new(h->base, NULL,
	    bev, h->addrs[i], h->url.port)) == NULL ||
	    (c->ev_idle = evtimer_new(h->base, conn_idle, c)) == NULL)
		fatalx("push: evhttp_connection_base_bufferevent_new");
	evhttp_connection_set_family(c->evcon, h->families[i]);
	evhttp_connection_set_retries(c->evcon, 0);
	evhttp_connection_set_timeout(c->evcon, PUSH_CALL_MS / 1000);
	evhttp_connection_set_max_headers_size(c->evcon, PUSH_REPLY_MAX);
	evhttp_connection_set_max_body_size(c->evcon, PUSH_REPLY_MAX);
	evhttp_connection_set_closecb(c->evcon, conn_closed, c);
	TAILQ_INSERT_TAIL(&h->conns, c, entry);
	h->nconns++;
	return c;
}

static const char *
http_error_name(int error)
{
	switch (error) {
	case EVREQ_HTTP_TIMEOUT:
		return "timeout";
	case EVREQ_HTTP_EOF:
		return "connection closed before the reply ended";
	case EVREQ_HTTP_INVALID_HEADER:
		return "malformed reply";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "reply larger than 4096 bytes";
	default:
		return "connection error";
	}
}

/*
 * Why TLS failed on a connection, or NULL: its certificate not verified
 * (OpenSSL's words for the check that failed), or another TLS error.
 * OpenSSL's texts are fixed strings.
 */
static const char *
conn_tls_failure(struct push_conn *c, char *buf, size_t len)
{
	struct bufferevent	*bev = evhttp_connection_get_bufferevent(c->evcon);
	SSL			*ssl = bufferevent_openssl_get_ssl(bev);
	unsigned long		 e, tls = 0;
	long			 v;

	/* SSL_get_error()'s codes are there too: those have no library */
	while ((e = bufferevent_get_openssl_error(bev)) != 0)
		if (ERR_GET_LIB(e) != 0)
			tls = e;
	if (ssl != NULL && (v = SSL_get_verify_result(ssl)) != X509_V_OK)
		snprintf(buf, len, "TLS: certificate not verified: %s",
		    X509_verify_cert_error_string(v));
	else if (tls != 0)
		snprintf(buf, len, "TLS handshake failed: %s",
		    ERR_reason_error_string(tls) != NULL ?
		    ERR_reason_error_string(tls) : "unknown");
	else
		return NULL;
	return buf;
}

/* Hands the reply to the caller and frees the call. */
static void
call_finish(struct push_call *call, const struct push_reply *rep)
{
	push_reply_cb	 cb = call->cb;
	void		*arg = call->arg;

	event_free(call->ev_deadline);
	freezero(call, sizeof(*call) + call->len);
	cb(rep, arg);
}

/* evhttp's error callback, before call_done (never for a cancel we made) */
static void
call_error(enum evhttp_request_error error, void *arg)
{
	struct push_call	*call = arg;

	call->error = error;
}

static void
call_done(struct evhttp_request *req, void *arg)
{
	struct push_call	*call = arg;
	struct push_conn	*c = call->conn;
	struct push_host	*h = call->h;
	struct push_reply	 rep;
	struct evbuffer		*in;
	static char		 why[160];

	memset(&rep, 0, sizeof(rep));
	call->req = NULL;	/* evhttp frees it after this returns */
	c->call = NULL;
	if (req != NULL)
		rep.status = evhttp_request_get_response_code(req);
	if (rep.status == 0) {
		/*
		 * A reply that failed, or a connection that never got through:
		 * TLS refused (evhttp may call that the end of the reply), or
		 * no error from evhttp at all (TCP failed).
		 */
		c->dead = 1;
		rep.error = conn_tls_failure(c, why, sizeof(why));
		if (rep.error == NULL && call->error != 0)
			rep.error = http_error_name(call->error);
		else {
			if (rep.error == NULL)
				rep.error = "connection failed";
			h->next_addr = (h->next_addr + 1) % h->naddrs;
			rep.unreachable = ++h->failed >= h->naddrs;
			/* the next address, while the call has time left */
			if (++call->tries < h->naddrs) {
				call->conn = NULL;
				TAILQ_INSERT_HEAD(&h->queue, call, entry);
				push_kick(h);
				return;
			}
		}
	} else {
		h->failed = 0;
		in = evhttp_request_get_input_buffer(req);
		rep.len = evbuffer_get_length(in);
		rep.body = evbuffer_pullup(in, -1);
		if (!c->dead) {
			struct timeval	tv = { PUSH_IDLE_MS / 1000, 0 };

			evtimer_add(c->ev_idle, &tv);
		}
	}
	push_kick(h);
	call_finish(call, &rep);
}

/* Takes a call off its connection, which is closed, or off the queue. */
static void
call_detach(struct push_call *call)
{
	if (call->conn != NULL) {
		call->conn->dead = 1;
		call->conn->call = NULL;
		/* evhttp frees the request and resets the connection */
		evhttp_cancel_request(call->req);
	} else
		TAILQ_REMOVE(&call->h->queue, call, entry);
	call->req = NULL;
	push_kick(call->h);
}

static void
call_deadline(evutil_socket_t fd, short ev, void *arg)
{
	struct push_call	*call = arg;
	struct push_reply	 rep;

	memset(&rep, 0, sizeof(rep));
	rep.error = "timeout: no reply within 10 s";
	call_detach(call);
	call_finish(call, &rep);
}

void
push_call_cancel(struct push_call *call)
{
	call_detach(call);
	event_free(call->ev_deadline);
	freezero(call, sizeof(*call) + call->len);
}

/* Starts a waiting call on a connection, with a request made now. */
static void
call_start(struct push_conn *c, struct push_call *call)
{
	struct push_reply	 rep;
	struct evkeyvalq	*hdrs;
	evutil_socket_t		 fd;
	int			 one = 1;

	TAILQ_REMOVE(&c->h->queue, call, entry);
	evtimer_del(c->ev_idle);
	if ((call->req = evhttp_request_new(call_done, call)) == NULL)
		fatalx("push: evhttp_request_new");
	evhttp_request_set_error_cb(call->req, call_error);
	hdrs = evhttp_request_get_output_headers(call->req);
	evhttp_add_header(hdrs, "Host", c->h->hosthdr);
	evhttp_add_header(hdrs, "User-Agent", PACKAGE_NAME "/" PACKAGE_VERSION);
	evhttp_add_header(hdrs, "Content-Type", call->content_type);
	evhttp_add_header(hdrs, "Accept", "application/json");
	if (call->auth[0] != '\0')
		evhttp_add_header(hdrs, "Authorization", call->auth);
	evbuffer_add(evhttp_request_get_output_buffer(call->req), call->body,
	    call->len);
	call->error = 0;
	call->conn = c;
	c->call = call;
	if (evhttp_make_request(c->evcon, call->req, EVHTTP_REQ_POST,
	    call->path) == -1) {
		/* evhttp has dropped the request */
		memset(&rep, 0, sizeof(rep));
		rep.error = "could not send the request";
		call->req = NULL;
		c->call = NULL;
		c->dead = 1;
		call_finish(call, &rep);
		return;
	}
	/*
	 * The socket exists once the request is made (the address is
	 * numeric).  OpenSSL writes the head and the body as two records:
	 * without TCP_NODELAY the second waits for the ACK of the first,
	 * which the server delays by 40 ms.
	 */
	if ((fd = bufferevent_getfd(evhttp_connection_get_bufferevent(
	    c->evcon))) != -1)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/*
 * Frees closed connections, then starts waiting calls: on an idle
 * connection, else on a new one when none is being opened.
 */
static void
push_run(evutil_socket_t fd, short ev, void *arg)
{
	struct push_host	*h = arg;
	struct push_conn	*c, *next, *idle;
	struct push_call	*call;
	struct push_reply	 rep;
	int64_t			 wait;
	int			 live;

	TAILQ_FOREACH_SAFE(c, &h->conns, entry, next)
		if (c->dead && c->call == NULL)
			conn_free(c);
	evtimer_del(h->ev_spread);
	while ((call = TAILQ_FIRST(&h->queue)) != NULL) {
		idle = NULL;
		live = 0;
		TAILQ_FOREACH(c, &h->conns, entry) {
			if (c->dead)
				continue;
			live++;
			if (c->call == NULL && idle == NULL)
				idle = c;
		}
		if (idle == NULL) {
			if (h->nconns >= h->maxconns)
				break;
			/* one busy: a while for it, then one more */
			wait = call->queued_ms + PUSH_SPREAD_MS - now_ms();
			if (live > 0 && wait > 0) {
				struct timeval	tv = { 0, wait * 1000 };

				evtimer_add(h->ev_spread, &tv);
				break;
			}
			if ((idle = conn_new(h)) == NULL) {
				TAILQ_REMOVE(&h->queue, call, entry);
				memset(&rep, 0, sizeof(rep));
				rep.error = "could not set up a connection";
				call_finish(call, &rep);
				continue;
			}
		}
		call_start(idle, call);
	}
}

struct push_call *
push_post(struct push_host *h, const char *path, const char *bearer,
    const char *content_type, const char *body, size_t len, push_reply_cb cb,
    void *arg)
{
	struct push_call	*call;
	struct timeval		 tv = { PUSH_CALL_MS / 1000, 0 };

	call = xcalloc(1, sizeof(*call) + len);
	call->h = h;
	call->cb = cb;
	call->arg = arg;
	call->content_type = content_type;
	if (strlcpy(call->path, path, sizeof(call->path)) >= sizeof(call->path))
		fatalx("push: path too long");
	if (bearer != NULL)
		snprintf(call->auth, sizeof(call->auth), "Bearer %s", bearer);
	memcpy(call->body, body, len);
	call->len = len;
	call->queued_ms = now_ms();
	if ((call->ev_deadline = evtimer_new(h->base, call_deadline,
	    call)) == NULL)
		fatalx("push: evtimer_new");
	/* the call's time runs from now, waiting for a connection included */
	evtimer_add(call->ev_deadline, &tv);
	TAILQ_INSERT_TAIL(&h->queue, call, entry);
	push_kick(h);
	return call;
}
