/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The parent's admission (protocol.md §2, pyrelayd.conf(5)): per client
 * address bucket (addr_bucket.h, an IPv4 address or an IPv6 /64) a count
 * of live connections and a rate-limit token bucket; the per-address cap,
 * applied at accept; the rate limit and the connection caps of an
 * upgrade; the cap on relay processes (`max relays`); a draining host's
 * refusal of new server-ids (docs/scaling.md); and the refusals these
 * make, counted and logged at most once a second, so that a flood cannot
 * flood the log too.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "addr_bucket.h"
#include "parent.h"
#include "pyrelayd.h"
#include "upgrade_state.h"

#define IP_SWEEP_MS		5000	/* how often idle addresses are forgotten */
#define IP_IDLE_MAX		65536	/* idle addresses kept at most (see ip_sweep) */
#define REFUSAL_LOG_MS		1000	/* one line per kind of refusal at most */

static int
ip_cmp(struct ip_rec *a, struct ip_rec *b)
{
	return addr_bucket_cmp(&a->key, &b->key);
}
RB_GENERATE_STATIC(ip_tree, ip_rec, entry, ip_cmp)

/* The tokens ip's bucket holds at now (protocol.md §2: one per refill period). */
static double
ip_tokens(const struct parent *p, const struct ip_rec *ip, int64_t now)
{
	return ip->tokens + (double)(now - ip->refill_ms) /
	    p->conf->lim.rate_refill_ms;
}

static void
ip_forget(struct parent *p, struct ip_rec *ip)
{
	RB_REMOVE(ip_tree, &p->ips, ip);
	free(ip);
	p->nips--;
}

/*
 * Forgets addresses with no live connection: those whose bucket is full
 * hold nothing worth keeping.  Under a flood of distinct addresses the
 * table holds at most one entry per live connection plus IP_IDLE_MAX idle
 * ones (about 64 bytes each): past that, idle entries go even with tokens
 * spent, which only ever helps the address that is forgotten.
 */
static void
ip_sweep(evutil_socket_t fd, short ev, void *arg)
{
	struct parent	*p = arg;
	struct ip_rec	*ip, *next;
	int64_t		 now = now_ms();
	uint64_t	 idle = 0;

	RB_FOREACH_SAFE(ip, ip_tree, &p->ips, next) {
		if (ip->live > 0)
			continue;
		if (ip_tokens(p, ip, now) >= p->conf->lim.rate_burst ||
		    idle >= IP_IDLE_MAX)
			ip_forget(p, ip);
		else
			idle++;
	}
}

static struct ip_rec *
ip_get(struct parent *p, const struct sockaddr_storage *ss)
{
	struct ip_rec	 key, *ip;

	addr_bucket_of(ss, &key.key);
	if ((ip = RB_FIND(ip_tree, &p->ips, &key)) != NULL)
		return ip;
	ip = xcalloc(1, sizeof(*ip));
	ip->key = key.key;
	ip->tokens = p->conf->lim.rate_burst;
	ip->refill_ms = now_ms();
	RB_INSERT(ip_tree, &p->ips, ip);
	p->nips++;
	return ip;
}

/* A connection of ip's ended; an address with none and a full bucket goes. */
void
admit_ip_release(struct parent *p, struct ip_rec *ip)
{
	ip->live--;
	if (ip->live > 0 || ip_tokens(p, ip, now_ms()) < p->conf->lim.rate_burst)
		return;
	ip_forget(p, ip);
}

/*
 * Behind a PROXY listener the client is the address the header carried
 * (the front parsed it): the connection moves to that address's bucket.
 */
struct ip_rec *
admit_rekey(struct parent *p, struct ip_rec *ip,
    const struct sockaddr_storage *ss)
{
	struct ip_rec	*nip;

	if ((nip = ip_get(p, ss)) == ip)
		return ip;
	nip->live++;
	admit_ip_release(p, ip);
	return nip;
}

/* protocol.md §2 step 2: token bucket per client address. */
static int
admit_take_token(struct parent *p, struct ip_rec *ip)
{
	int64_t	now = now_ms();

	ip->tokens = ip_tokens(p, ip, now);
	if (ip->tokens > p->conf->lim.rate_burst)
		ip->tokens = p->conf->lim.rate_burst;
	ip->refill_ms = now;
	if (ip->tokens < 1.0)
		return -1;
	ip->tokens -= 1.0;
	return 0;
}

/* ---- refusals ------------------------------------------------------------- */

/* The line for the refusals of one kind since the last one, if any. */
static void
refusal_log(struct parent *p, enum refusal_kind kind)
{
	struct refusals	*r = &p->refused[kind];
	char		 addr[64];

	if (r->unlogged == 0)
		return;
	switch (kind) {
	case REFUSED_RELAY_CAP:
		log_warnx("event=relay_cap_reached refused=%llu max_relays=%u "
		    "relay_processes=%u", (unsigned long long)r->unlogged,
		    p->conf->max_relays, p->nrelays);
		break;
	case REFUSED_ADDRESS_CAP:
		log_warnx("event=address_cap_reached refused=%llu "
		    "max_connections_per_ip=%u last=%s",
		    (unsigned long long)r->unlogged,
		    p->conf->lim.max_connections_per_ip,
		    addr_bucket_str(&r->last, addr, sizeof(addr)));
		break;
	/*
	 * The client address whose limit was reached (ip=, its bucket: behind
	 * a proxy-protocol listener the header's source), so that an operator
	 * behind a balancer sees who is refused; of the last one refused.
	 */
	case REFUSED_RATE_LIMIT:
		log_info("event=rate_limited refused=%llu endpoint=%s ip=%s",
		    (unsigned long long)r->unlogged,
		    r->endpoint == EP_SERVER ? "server" : "client",
		    addr_bucket_str(&r->last, addr, sizeof(addr)));
		break;
	case REFUSED_CONN_CAP:
		log_info("event=conn_cap_reached refused=%llu live=%u ip_live=%u "
		    "ip=%s", (unsigned long long)r->unlogged, r->live,
		    r->ip_live, addr_bucket_str(&r->last, addr, sizeof(addr)));
		break;
	case REFUSED_DRAIN:
		log_info("event=drain_refused refused=%llu server_id=%s",
		    (unsigned long long)r->unlogged, r->server_id);
		break;
	default:
		break;
	}
	r->unlogged = 0;
	r->logged_ms = now_ms();
}

static void
refusal_tick(evutil_socket_t fd, short ev, void *arg)
{
	struct refusals	*r = arg;

	refusal_log(r->p, r->kind);
}

/*
 * Counts a refusal.  The first after a quiet second is logged at once; the
 * others of that second together when it ends, with their number.
 */
static void
refusal(struct parent *p, enum refusal_kind kind)
{
	struct refusals	*r = &p->refused[kind];
	struct timeval	 tv;
	int64_t		 wait;

	r->total++;
	r->unlogged++;
	wait = r->logged_ms + REFUSAL_LOG_MS - now_ms();
	if (r->logged_ms == 0 || wait <= 0) {
		refusal_log(p, kind);
		return;
	}
	if (evtimer_pending(r->ev, NULL))
		return;
	tv = ms_timeval(wait);
	evtimer_add(r->ev, &tv);
}

/* ---- the caps --------------------------------------------------------------- */

/*
 * A connection just accepted: the bucket of its address, counted, or NULL
 * when that address already holds `max connections per ip` connections
 * (upgraded or not): the caller closes it, with nothing handed to a front.
 * So idle connections from one address cannot fill the global cap.
 * Behind a PROXY listener the peer is the proxy, which speaks for many
 * clients: until the front has read the header the connection counts in
 * a bucket of no address, uncapped, and the upgrade moves it to its
 * client's, where the cap applies (503).  The proxy's own address is left
 * to its own connections, the metrics scraper's on loopback say.
 * refuse: 0 to ask first, without counting a refusal (the caller may
 * read the releases on their way and ask again), 1 to refuse for good.
 */
struct ip_rec *
admit_accept(struct parent *p, const struct sockaddr_storage *ss,
    int listen_flags, int refuse)
{
	static const struct sockaddr_storage	unknown;	/* AF_UNSPEC */
	struct ip_rec				*ip;

	if (listen_flags & LISTEN_PROXY) {
		ip = ip_get(p, &unknown);
		ip->live++;
		return ip;
	}
	ip = ip_get(p, ss);
	if (ip->live >= p->conf->lim.max_connections_per_ip) {
		if (!refuse)
			return NULL;
		p->refused[REFUSED_ADDRESS_CAP].last = ip->key;
		refusal(p, REFUSED_ADDRESS_CAP);
		return NULL;
	}
	ip->live++;
	return ip;
}

/*
 * protocol.md §2 steps 2 and 3 for an upgrade from ip's client: 0 when it
 * may go on, else the status that refuses it, counted and logged: 429 for
 * the rate limit, 503 for the connection caps (`max connections`, and
 * `max connections per ip` where the accept could not apply it: behind a
 * proxy-protocol listener).
 */
int
admit_upgrade(struct parent *p, struct ip_rec *ip, int kind)
{
	const struct limits	*lim = &p->conf->lim;
	struct refusals		*r;
	int			 ep = kind == CONN_BINARY ? EP_SERVER : EP_CLIENT;

	if (admit_take_token(p, ip) == -1) {
		p->cnt.upgrades[ep][OUT_REJECT_RATE_LIMIT]++;
		p->cnt.register_failures[REG_RATELIMIT]++;
		r = &p->refused[REFUSED_RATE_LIMIT];
		r->last = ip->key;
		r->endpoint = ep;
		refusal(p, REFUSED_RATE_LIMIT);
		return 429;
	}
	if (p->live > lim->max_connections ||
	    ip->live > lim->max_connections_per_ip) {
		r = &p->refused[REFUSED_CONN_CAP];
		r->last = ip->key;
		r->live = p->live;
		r->ip_live = ip->live;
		refusal(p, REFUSED_CONN_CAP);
		return 503;
	}
	return 0;
}

/*
 * A binary for a server-id no relay here holds.  A draining host
 * (pyrelayctl drain, docs/scaling.md) refuses it with 503 before the
 * upgrade, which a balancer retries on another host; else 0: claim it.
 */
int
admit_claim(struct parent *p, const char *sid)
{
	struct refusals	*r = &p->refused[REFUSED_DRAIN];

	if (!p->draining)
		return 0;
	strlcpy(r->server_id, sid, sizeof(r->server_id));
	refusal(p, REFUSED_DRAIN);
	return 503;
}

/*
 * Room for one more relay process under `max relays`, which counts them
 * all: pooled, starting, serving, in grace and retiring, until reaped.
 * A claim that finds none is refused (claim != 0): counted and logged.
 */
int
admit_relay(struct parent *p, int claim)
{
	if (p->nrelays < p->conf->max_relays)
		return 1;
	if (claim)
		refusal(p, REFUSED_RELAY_CAP);
	return 0;
}

/* ---- the upgrade (docs/upgrade.md) ---------------------------------------- */

/* Each bucket's rate limit; the live counts follow from the connections. */
void
admit_save(struct parent *p, struct ustate *us)
{
	struct ip_rec		*ip;
	struct us_address	 a;

	RB_FOREACH(ip, ip_tree, &p->ips) {
		memset(&a, 0, sizeof(a));
		a.key = ip->key;
		a.tokens = ip->tokens;
		a.refill_ms = ip->refill_ms;
		ustate_add(us, US_ADDRESS, &a, sizeof(a), NULL, 0);
	}
}

/*
 * The refusals of each kind: their counts (which /metrics shows, and
 * which never go back) and what the next line of the kind says.
 */
void
admit_save_refusals(const struct parent *p, struct us_refusal *out)
{
	const struct refusals	*r;
	int			 i;

	_Static_assert(US_REFUSAL_KINDS == REFUSED_MAX, "one record a kind");
	for (i = 0; i < REFUSED_MAX; i++) {
		r = &p->refused[i];
		memset(&out[i], 0, sizeof(out[i]));
		out[i].total = r->total;
		out[i].unlogged = r->unlogged;
		out[i].logged_ms = r->logged_ms;
		out[i].last = r->last;
		out[i].endpoint = r->endpoint;
		out[i].live = r->live;
		out[i].ip_live = r->ip_live;
		strlcpy(out[i].server_id, r->server_id,
		    sizeof(out[i].server_id));
	}
}

/*
 * Back from the state (checked: adopt_read_parent).  The refusals not yet
 * logged get their line when their second ends, from this image: the
 * timer is armed now, and nothing is logged before the commit.
 */
void
admit_adopt_refusals(struct parent *p, const struct us_refusal *in)
{
	struct refusals	*r;
	struct timeval	 tv;
	int64_t		 wait;
	int		 i;

	for (i = 0; i < REFUSED_MAX; i++) {
		r = &p->refused[i];
		r->total = in[i].total;
		r->unlogged = in[i].unlogged;
		r->logged_ms = in[i].logged_ms;
		r->last = in[i].last;
		r->endpoint = in[i].endpoint;
		r->live = in[i].live;
		r->ip_live = in[i].ip_live;
		strlcpy(r->server_id, in[i].server_id, sizeof(r->server_id));
		if (r->unlogged == 0)
			continue;
		wait = r->logged_ms + REFUSAL_LOG_MS - now_ms();
		/* (below 0: at once) */
		tv = ms_timeval(wait > REFUSAL_LOG_MS ? REFUSAL_LOG_MS : wait);
		evtimer_add(r->ev, &tv);
	}
}

const char *
admit_adopt(struct parent *p, const struct us_address *a)
{
	struct ip_rec	*ip;

	ip = xcalloc(1, sizeof(*ip));
	ip->key = a->key;
	ip->tokens = a->tokens;
	ip->refill_ms = a->refill_ms;
	if (RB_INSERT(ip_tree, &p->ips, ip) != NULL) {
		free(ip);
		return "two records of one address";
	}
	p->nips++;
	return NULL;
}

struct ip_rec *
admit_find(struct parent *p, const struct addr_bucket *key)
{
	struct ip_rec	k;

	k.key = *key;
	return RB_FIND(ip_tree, &p->ips, &k);
}

void
admit_init(struct parent *p)
{
	struct timeval	 tv = { IP_SWEEP_MS / 1000, 0 };
	int		 i;

	RB_INIT(&p->ips);
	p->ev_ip_sweep = event_new(p->base, -1, EV_PERSIST, ip_sweep, p);
	if (p->ev_ip_sweep == NULL)
		fatalx("parent: event_new");
	event_add(p->ev_ip_sweep, &tv);
	for (i = 0; i < REFUSED_MAX; i++) {
		p->refused[i].p = p;
		p->refused[i].kind = i;
		if ((p->refused[i].ev = evtimer_new(p->base, refusal_tick,
		    &p->refused[i])) == NULL)
			fatalx("parent: evtimer_new");
	}
}
