/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The parent's control socket (control.h has the protocol): one command
 * line per connection from pyrelayctl(8), answered with text and closed.
 * Only the socket's file mode decides who may connect (0600: root).
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "parent.h"
#include "upgrade_state.h"

struct ctl_client {
	TAILQ_ENTRY(ctl_client)	 entry;
	struct parent		*p;
	int			 fd;
	struct event		*ev_read;
	struct event		*ev_write;
	struct event		*ev_timer;
	char			 in[CTL_LINE_MAX];
	size_t			 inlen;
	char			*out;
	size_t			 outlen, outcap, outoff;
	int			 failed;	/* an "error:" line was written */
	struct worker		*waiting;	/* relay asked for its phones */
	uint64_t		 req;
};

static void	ctl_client_write(evutil_socket_t, short, void *);

static void
ctl_printf(struct ctl_client *c, const char *fmt, ...)
	__attribute__((__format__(printf, 2, 3)));

static void
ctl_printf(struct ctl_client *c, const char *fmt, ...)
{
	va_list	ap;
	int	n;
	size_t	ncap;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(c->out + c->outlen, c->outcap - c->outlen, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if ((size_t)n < c->outcap - c->outlen) {
			c->outlen += n;
			return;
		}
		ncap = c->outcap ? c->outcap * 2 : 1024;
		while (ncap < c->outlen + n + 1)
			ncap *= 2;
		if (ncap > CTL_OUT_MAX)
			return;
		c->out = xreallocarray(c->out, 1, ncap);
		c->outcap = ncap;
	}
}

static void
ctl_client_free(struct ctl_client *c)
{
	TAILQ_REMOVE(&c->p->ctl_clients, c, entry);
	event_free(c->ev_read);
	event_free(c->ev_write);
	event_free(c->ev_timer);
	close(c->fd);
	free(c->out);
	free(c);
}

/* The answer is complete: write it, then close. */
static void
ctl_client_finish(struct ctl_client *c)
{
	c->waiting = NULL;
	event_del(c->ev_read);
	evtimer_del(c->ev_timer);
	ctl_client_write(c->fd, EV_WRITE, c);
}

static void
ctl_client_write(evutil_socket_t fd, short ev, void *arg)
{
	struct ctl_client	*c = arg;
	ssize_t			 n;

	while (c->outoff < c->outlen) {
		n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				event_add(c->ev_write, NULL);
				return;
			}
			break;
		}
		c->outoff += n;
	}
	ctl_client_free(c);
}

static void
ctl_error(struct ctl_client *c, const char *msg)
{
	c->outlen = 0;
	ctl_printf(c, "error: %s\n", msg);
	c->failed = 1;
}

/* A reload's file:line errors follow its "error:" line. */
void
parent_ctl_error_line(struct ctl_client *c, const char *msg)
{
	if (!c->failed) {
		ctl_error(c, "configuration has errors, keeping the running one");
	}
	ctl_printf(c, "%s\n", msg);
}

static const char *
binary_state(const struct worker *r)
{
	if (r->retired || !r->in_map)
		return "retiring";
	if (r->probing)
		return "probe";
	return r->binaries ? "connected" : "grace";
}

static void
ctl_show_summary(struct parent *p, struct ctl_client *c)
{
	struct worker	*w;
	int		 relays = 0, fronts = 0;

	parent_drain_relays(p);
	TAILQ_FOREACH(w, &p->workers, entry) {
		if (w->role == ROLE_RELAY && !w->pooled)
			relays++;
		else if (w->role == ROLE_FRONT && !w->dead && !w->finishing &&
		    !w->replaced)
			fronts++;
	}
	ctl_printf(c, "ok\nversion %s\nuptime_seconds %lld\nconnections %u\n"
	    "binaries %llu\nphones %llu\nrelays %d\nrelays_pooled %d\n"
	    "relay_processes %u\nmax_relays %u\n"
	    "fronts %d\naddresses %llu\n"
	    "ktls %s\ntls_handoffs_ktls %llu\ntls_handoffs_pump %llu\n"
	    "draining %s\n",
	    pyrelayd_version, (long long)(now_ms() - p->started_ms) / 1000,
	    p->live, (unsigned long long)p->binaries,
	    (unsigned long long)p->phones, relays, p->npool_ready,
	    p->nrelays, p->conf->max_relays, fronts,
	    (unsigned long long)p->nips,
	    !p->tls ? "unused" : p->tls_handoffs[TLS_MODE_KTLS] ? "active" :
	    p->tls_handoffs[TLS_MODE_PUMP] ? "unavailable" : "unknown",
	    (unsigned long long)p->tls_handoffs[TLS_MODE_KTLS],
	    (unsigned long long)p->tls_handoffs[TLS_MODE_PUMP],
	    p->draining ? "yes" : "no");
}

static void
ctl_show_servers(struct parent *p, struct ctl_client *c)
{
	struct worker	*r;
	int64_t		 now = now_ms();

	parent_drain_relays(p);
	ctl_printf(c, "ok\n# server_id pid binary phones age_seconds\n");
	/* the map is ordered by server-id */
	RB_FOREACH(r, relay_map, &p->relays)
		ctl_printf(c, "%s %d %s %u %lld\n", r->sid, (int)r->pid,
		    binary_state(r), r->phones,
		    (long long)(now - r->started_ms) / 1000);
}

static void
ctl_show_server(struct parent *p, struct ctl_client *c, const char *sid)
{
	struct worker		*r;
	struct msg_empty	 e = { 0 };

	parent_drain_relays(p);
	if ((r = parent_find_relay(p, sid)) == NULL || r->dead) {
		ctl_error(c, "no such server-id");
		ctl_client_finish(c);
		return;
	}
	ctl_printf(c, "ok\nserver_id %s\npid %d\nbinary %s\nphones %u\n"
	    "age_seconds %lld\n# conn_id device age_seconds bytes_in bytes_out\n",
	    r->sid, (int)r->pid, binary_state(r), r->phones,
	    (long long)(now_ms() - r->started_ms) / 1000);
	/* the phones come from the relay; answer when its list ends */
	c->waiting = r;
	c->req = ++p->ctl_next_req;
	msg_compose(&r->chan, MSG_CTL_SHOW, c->req, &e, sizeof(e), -1);
	parent_worker_flush(r);
}

/* Device names are client-chosen: quote them and escape anything odd. */
static void
ctl_quoted(struct ctl_client *c, const char *s)
{
	const unsigned char	*u;

	ctl_printf(c, "\"");
	for (u = (const unsigned char *)s; *u != '\0'; u++) {
		if (*u == '"' || *u == '\\')
			ctl_printf(c, "\\%c", *u);
		else if (*u < 0x20 || *u >= 0x7f)
			ctl_printf(c, "\\x%02x", *u);
		else
			ctl_printf(c, "%c", *u);
	}
	ctl_printf(c, "\"");
}

void
parent_ctl_relay_phone(struct parent *p, struct worker *r, struct msg *m)
{
	struct msg_ctl_phone	*ph = (struct msg_ctl_phone *)m->body;
	struct ctl_client	*c;

	/*
	 * What reaches the operator's terminal: a conn id exactly as relays
	 * make them (the body's check ended its strings), a device name
	 * quoted and escaped (ctl_quoted).
	 */
	if (m->hdr.id == 0 || m->hdr.id > p->ctl_next_req ||
	    (!ph->last && !parent_check_conn_id(ph->conn_id, r->sid))) {
		parent_worker_kill(p, r, "bad CTL_PHONE");
		return;
	}
	TAILQ_FOREACH(c, &p->ctl_clients, entry)
		if (c->waiting == r && c->req == m->hdr.id)
			break;
	if (c == NULL)
		return;	/* the client went away */
	if (ph->last) {
		ctl_client_finish(c);
		return;
	}
	ctl_printf(c, "%s ", ph->conn_id);
	ctl_quoted(c, ph->device);
	ctl_printf(c, " %llu %llu %llu\n", (unsigned long long)ph->age_s,
	    (unsigned long long)ph->bytes_in, (unsigned long long)ph->bytes_out);
}

void
parent_ctl_relay_gone(struct parent *p, struct worker *r)
{
	struct ctl_client	*c, *next;

	TAILQ_FOREACH_SAFE(c, &p->ctl_clients, entry, next) {
		if (c->waiting != r)
			continue;
		ctl_error(c, "the relay process exited");
		ctl_client_finish(c);
	}
}

static void
ctl_kick(struct parent *p, struct ctl_client *c, const char *sid)
{
	struct worker		*r;
	struct msg_empty	 e = { 0 };

	if ((r = parent_find_relay(p, sid)) == NULL || r->dead) {
		ctl_error(c, "no such server-id");
		return;
	}
	/* out of the map now: the next client for this id starts afresh */
	RB_REMOVE(relay_map, &p->relays, r);
	r->in_map = 0;
	log_info("event=server_kick server_id=%s pid=%d", r->sid, (int)r->pid);
	msg_compose(&r->chan, MSG_CTL_KICK, 0, &e, sizeof(e), -1);
	parent_worker_flush(r);
	ctl_printf(c, "ok\n");
}

/*
 * docs/scaling.md: a draining host tells the balancer to send it no new
 * server-ids (/healthz "draining", agent weight 0%), refuses a binary for
 * one it does not hold (parent_route), and serves everything of those it
 * holds until their clients leave.
 */
static void
ctl_drain(struct parent *p, struct ctl_client *c, int on)
{
	if (p->draining != on)
		log_info("event=%s binaries=%llu phones=%llu",
		    on ? "drain" : "undrain", (unsigned long long)p->binaries,
		    (unsigned long long)p->phones);
	p->draining = on;
	ctl_printf(c, "ok\n");
}

static void
ctl_execute(struct parent *p, struct ctl_client *c)
{
	struct ctl_cmd	 cmd;
	const char	*errstr;

	if (ctl_parse(c->in, c->inlen, &cmd, &errstr) == -1) {
		ctl_error(c, errstr);
		ctl_client_finish(c);
		return;
	}
	switch (cmd.verb) {
	case CTL_SHOW_SUMMARY:
		ctl_show_summary(p, c);
		break;
	case CTL_SHOW_SERVERS:
		ctl_show_servers(p, c);
		break;
	case CTL_SHOW_SERVER:
		ctl_show_server(p, c, cmd.server_id);
		return;		/* finishes when the relay answers */
	case CTL_RELOAD:
		if (parent_reload_config(p, c) == 0 && !c->failed)
			ctl_printf(c, "ok\n");
		break;
	case CTL_LOG_VERBOSE:
		parent_set_verbose(p, 1);
		ctl_printf(c, "ok\n");
		break;
	case CTL_LOG_BRIEF:
		parent_set_verbose(p, 0);
		ctl_printf(c, "ok\n");
		break;
	case CTL_KICK_SERVER:
		ctl_kick(p, c, cmd.server_id);
		break;
	case CTL_DRAIN:
	case CTL_UNDRAIN:
		ctl_drain(p, c, cmd.verb == CTL_DRAIN);
		break;
	case CTL_UPGRADE:
		/* answered when the upgrade is done or refused, maybe by the next image */
		evtimer_del(c->ev_timer);
		parent_upgrade_start(p, c);
		return;
	}
	ctl_client_finish(c);
}

void
parent_ctl_answer(struct ctl_client *c, const char *first, const char *rest)
{
	c->outlen = 0;
	ctl_printf(c, "%s\n%s", first, rest != NULL ? rest : "");
	ctl_client_finish(c);
}

static void
ctl_client_read(evutil_socket_t fd, short ev, void *arg)
{
	struct ctl_client	*c = arg;
	ssize_t			 n;
	char			*nl;

	n = recv(fd, c->in + c->inlen, sizeof(c->in) - c->inlen, MSG_DONTWAIT);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		ctl_client_free(c);
		return;
	}
	c->inlen += n;
	if ((nl = memchr(c->in, '\n', c->inlen)) != NULL) {
		c->inlen = nl - c->in + 1;
		event_del(c->ev_read);
		ctl_execute(c->p, c);
		return;
	}
	if (c->inlen == sizeof(c->in)) {
		ctl_error(c, "command too long");
		ctl_client_finish(c);
	}
}

static void
ctl_client_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct ctl_client	*c = arg;

	if (c->waiting != NULL)
		ctl_error(c, "the relay did not answer");
	else
		ctl_error(c, "timeout");
	ctl_client_finish(c);
}

static struct ctl_client *
ctl_client_new(struct parent *p, int fd)
{
	struct ctl_client	*c;

	c = xcalloc(1, sizeof(*c));
	c->p = p;
	c->fd = fd;
	c->ev_read = event_new(p->base, fd, EV_READ | EV_PERSIST, ctl_client_read, c);
	c->ev_write = event_new(p->base, fd, EV_WRITE, ctl_client_write, c);
	c->ev_timer = evtimer_new(p->base, ctl_client_timeout, c);
	if (c->ev_read == NULL || c->ev_write == NULL || c->ev_timer == NULL)
		fatalx("control: event_new");
	TAILQ_INSERT_TAIL(&p->ctl_clients, c, entry);
	return c;
}

static void
ctl_accept(evutil_socket_t lfd, short ev, void *arg)
{
	struct parent		*p = arg;
	struct ctl_client	*c;
	struct timeval		 tv = ms_timeval(CTL_TIMEOUT_MS);
	int			 fd;

	if ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) == -1) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			log_warn("event=control_accept_failed");
		return;
	}
	c = ctl_client_new(p, fd);
	event_add(c->ev_read, NULL);
	evtimer_add(c->ev_timer, &tv);
}

/*
 * The upgrade (docs/upgrade.md): each client as it stands.  One that
 * waited for a relay's answer gets an error from the next image; the
 * client that asked for the upgrade, its answer.
 */
void
parent_ctl_save(struct parent *p, struct ustate *us,
    const struct ctl_client *upgrader)
{
	struct ctl_client	*c;
	struct us_ctl_client	 r;
	const char		*tail;

	TAILQ_FOREACH(c, &p->ctl_clients, entry) {
		memset(&r, 0, sizeof(r));
		tail = NULL;
		r.fd = c->fd;
		if (c == upgrader)
			r.what = US_CTL_UPGRADER;
		else if (c->waiting != NULL)
			r.what = US_CTL_WAITING;
		else if (event_pending(c->ev_read, EV_READ, NULL)) {
			r.what = US_CTL_READING;
			r.inlen = c->inlen;
			tail = c->in;
		} else {
			r.what = US_CTL_WRITING;
			r.outlen = c->outlen - c->outoff;
			tail = c->out + c->outoff;
		}
		ustate_add(us, US_CTL_CLIENT, &r, sizeof(r), tail,
		    (size_t)r.inlen + r.outlen);
		ustate_keep(us, c->fd);
	}
}

struct ctl_client *
parent_ctl_adopt(struct parent *p, const struct us_ctl_client *r,
    const unsigned char *tail)
{
	struct ctl_client	*c;
	struct timeval		 tv = ms_timeval(CTL_TIMEOUT_MS);

	c = ctl_client_new(p, r->fd);
	switch (r->what) {
	case US_CTL_READING:
		memcpy(c->in, tail, r->inlen);
		c->inlen = r->inlen;
		event_add(c->ev_read, NULL);
		evtimer_add(c->ev_timer, &tv);
		break;
	case US_CTL_WRITING:
		if (r->outlen > 0) {
			c->out = xmalloc(r->outlen);
			memcpy(c->out, tail, r->outlen);
			c->outlen = c->outcap = r->outlen;
		}
		event_add(c->ev_write, NULL);
		break;
	case US_CTL_WAITING:
		ctl_error(c, "the daemon was upgraded meanwhile: ask again");
		event_add(c->ev_write, NULL);
		break;
	default:
		/* the upgrader: answered once the new image serves */
		break;
	}
	return c;
}

/*
 * The control socket: the image before's, after an upgrade, or a new one.
 * -1 with the reason in err.
 */
int
parent_ctl_open(struct parent *p, char *err, size_t errlen)
{
	struct sockaddr_un	 sun;
	struct stat		 st;
	const char		*path = p->conf->control_socket;
	mode_t			 old;
	int			 fd;

	p->ctl_fd = -1;
	if ((fd = parent_upgrade_control(path)) != -1)
		goto listening;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlcpy(sun.sun_path, path, sizeof(sun.sun_path)) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control socket \"%s\": path too long", path);
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errlen, "control socket: %s", strerror(errno));
		return -1;
	}
	/* a live daemon answers on it; a stale socket file is replaced */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		snprintf(err, errlen, "control socket \"%s\": in use by a running "
		    "pyrelayd", path);
		close(fd);
		return -1;
	}
	close(fd);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "control socket \"%s\": exists and is "
			    "not a socket", path);
			return -1;
		}
		unlink(path);
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errlen, "control socket: %s", strerror(errno));
		return -1;
	}
	/* created 0600 from the start: no window where others may connect */
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		umask(old);
		snprintf(err, errlen, "control socket \"%s\": %s", path,
		    strerror(errno));
		close(fd);
		return -1;
	}
	umask(old);
	if (listen(fd, 16) == -1) {
		snprintf(err, errlen, "control socket \"%s\": %s", path,
		    strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
 listening:
	p->ctl_fd = fd;
	p->ev_ctl = event_new(p->base, fd, EV_READ | EV_PERSIST, ctl_accept, p);
	if (p->ev_ctl == NULL)
		fatalx("control: event_new");
	event_add(p->ev_ctl, NULL);
	return 0;
}

void
parent_ctl_close(struct parent *p)
{
	if (p->ctl_fd == -1)
		return;
	event_del(p->ev_ctl);
	close(p->ctl_fd);
	p->ctl_fd = -1;
	unlink(p->conf->control_socket);
}
