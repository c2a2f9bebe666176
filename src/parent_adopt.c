/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * What crosses the exec of an upgrade (docs/upgrade.md, "What crosses"):
 * the running parent writes its state as records (adopt_save); the next
 * image reads all of it and checks every record and every descriptor it
 * names before it builds anything (adopt_read), then builds the parent's
 * structures from it without sending or signalling anything
 * (adopt_build), so that a refusal at any point can still go back to the
 * program before, which reads the same state again.  adopt_commit is the
 * point of no return.
 *
 * The image that adopts is the same program or the next release: it
 * trusts the state no more than a message, though it comes from the
 * same trust level; a worker of a message version it does not serve, a
 * descriptor that is not what the record says, a record of a type or
 * length it does not know, are refusals that name what they found.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <netinet/in.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "msg.h"
#include "parent.h"
#include "parent_upgrade.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "upgrade_state.h"
#include "valid.h"

/* The records this program reads, each with its exact size. */
static const struct ustate_rule adopt_rules[] = {
	{ US_PARENT, sizeof(struct us_parent), 0 },
	/* the writer's struct config: read only on the way back, by the writer */
	{ US_CONFIG, 0, 1 },
	{ US_LISTENER, sizeof(struct us_listener), 0 },
	{ US_CONTROL, sizeof(struct us_control), 0 },
	{ US_CTL_CLIENT, sizeof(struct us_ctl_client), 1 },
	{ US_WORKER, sizeof(struct us_worker), 0 },
	{ US_OUTMSG, sizeof(struct us_outmsg), 1 },
	{ US_ADDRESS, sizeof(struct us_address), 0 },
	{ US_CONN, sizeof(struct us_conn), 0 },
	{ US_PUSH, sizeof(struct us_push), 0 },
};

/*
 * The roles this program adopts, each with the flags its record may carry
 * and whether it may hold a server-id; a new role is one more row, and
 * parent_worker_rules has its table.  The relay zygote has none: it is
 * replaced at an upgrade, as the spawner is, and its relays are relays.
 */
static const struct {
	enum proc_role	role;
	uint32_t	flags;		/* US_W_* */
	int		sid;		/* 1: it may hold a server-id */
} adopt_roles[] = {
	{ ROLE_FRONT, US_W_DEAD | US_W_KILLED | US_W_FINISHING |
	    US_W_REPLACED, 0 },
	{ ROLE_RELAY, US_W_DEAD | US_W_KILLED | US_W_IN_MAP | US_W_RETIRED |
	    US_W_POOLED | US_W_POOL_STOPPED | US_W_CNT_LISTED, 1 },
	{ ROLE_PUSH, US_W_DEAD | US_W_KILLED | US_W_RETIRED, 0 },
};

struct rec_ctl {
	struct us_ctl_client	 r;
	const unsigned char	*tail;
};

struct rec_out {
	struct us_outmsg	 r;
	const unsigned char	*pkt;
	size_t			 len;
};

/* What was read, until adopt_commit. */
static struct {
	struct ustate_reader	 rd;
	int			 back;
	struct us_parent	 parent;
	const unsigned char	*config;
	size_t			 configlen;
	struct us_listener	*lis;
	int			*lis_used;
	size_t			 nlis, caplis;
	struct us_control	 control;
	int			 have_control;
	struct rec_ctl		*ctls;
	size_t			 nctls, capctls;
	struct us_worker	*ws;
	size_t			 nws, capws;
	struct worker		**built;	/* ws[i] once built */
	struct rec_out		*outs;
	size_t			 nouts, capouts;
	struct us_address	*addrs;
	size_t			 naddrs, capaddrs;
	struct us_conn		*conns;
	size_t			 nconns, capconns;
	struct us_push		*pushes;
	size_t			 npushes, cappushes;
	int			 push_parts[US_PUSH_NEXT + 1];
	uint64_t		 push_ids[PUSH_IN_FLIGHT_MAX];	/* their wakes */
	size_t			 npush_ids;
	int			*fds;		/* every fd the state names */
	size_t			 nfds, capfds;
} A;

static char	adopt_whybuf[256];

static const char *
adopt_why(const char *, ...) __attribute__((__format__(printf, 1, 2)));

static const char *
adopt_why(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(adopt_whybuf, sizeof(adopt_whybuf), fmt, ap);
	va_end(ap);
	return adopt_whybuf;
}

/* One more element at the end of *arr (n elements of size, cap room); it. */
static void *
adopt_push(void *arrp, size_t *n, size_t *cap, size_t size)
{
	void	**arr = arrp;

	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*arr = xreallocarray(*arr, *cap, size);
	}
	return (char *)*arr + (*n)++ * size;
}

/* ---- the running image writes ---------------------------------------------- */

/*
 * The parent's counters and values into the state (save) or out of it:
 * one list, so that what crosses cannot differ from what comes back.
 */
static void
adopt_values(struct parent *p, struct us_parent *up, int save)
{
#define ADOPT_VALUE(rec, var) do {					\
	_Static_assert(sizeof(up->rec) == sizeof(var), #rec);		\
	if (save)							\
		memcpy(&up->rec, &(var), sizeof(up->rec));		\
	else								\
		memcpy(&(var), &up->rec, sizeof(up->rec));		\
} while (0)
	ADOPT_VALUE(started_ms, p->started_ms);
	ADOPT_VALUE(next_conn_id, p->next_conn_id);
	ADOPT_VALUE(ctl_next_req, p->ctl_next_req);
	ADOPT_VALUE(accepted, p->accepted);
	ADOPT_VALUE(relays_started, p->relays_started);
	ADOPT_VALUE(assignments, p->assignments);
	ADOPT_VALUE(conns_lost, p->conns_lost);
	ADOPT_VALUE(relay_exits, p->relay_exits);
	ADOPT_VALUE(front_outcomes, p->front_outcomes);
	ADOPT_VALUE(tls_handoffs, p->tls_handoffs);
	ADOPT_VALUE(cnt, p->cnt);
	/* an operator who drained the host expects it to stay drained */
	ADOPT_VALUE(draining, p->draining);
#undef ADOPT_VALUE
	/* and what the other files keep: refusals, push wakes */
	if (save) {
		admit_save_refusals(p, up->refusals);
		parent_push_save_values(p, &up->push);
	} else {
		admit_adopt_refusals(p, up->refusals);
		parent_push_adopt_values(p, &up->push);
	}
}

void
adopt_save(struct parent *p, struct ustate *us,
    const struct ctl_client *upgrader)
{
	struct us_parent	*up;
	struct config		*conf;
	struct us_listener	 ul;
	struct us_control	 uc;
	struct us_worker	 uw;
	struct us_outmsg	 uo;
	struct us_conn		 un;
	struct listener		*l;
	struct worker		*w;
	struct msg_out		*mo;
	struct conn_rec		*c;
	uint32_t		 i = 0;

	up = xcalloc(1, sizeof(*up));
	strlcpy(up->version, pyrelayd_version, sizeof(up->version));
	up->msg_version = msg_version;
	up->verbose = p->opts.verbose;
	up->commit_ms = now_ms();
	adopt_values(p, up, 1);
	up->uid = p->uid;
	up->gid = p->gid;
	up->sizeof_config = sizeof(struct config);
	strlcpy(up->self, p->self, sizeof(up->self));
	ustate_add(us, US_PARENT, up, sizeof(*up), NULL, 0);
	free(up);

	/* for the way back only: its lists are the listener records */
	conf = xmalloc(sizeof(*conf));
	*conf = *p->conf;
	TAILQ_INIT(&conf->listeners);
	TAILQ_INIT(&conf->metrics);
	TAILQ_INIT(&conf->agents);
	ustate_add(us, US_CONFIG, NULL, 0, conf, sizeof(*conf));
	free(conf);

	TAILQ_FOREACH(l, &p->listeners, entry) {
		memset(&ul, 0, sizeof(ul));
		ul.fd = l->la->fd;
		ul.flags = l->la->flags;
		ul.sslen = l->la->sslen;
		ul.ss = l->la->ss;
		ustate_add(us, US_LISTENER, &ul, sizeof(ul), NULL, 0);
		ustate_keep(us, ul.fd);
	}
	if (p->ctl_fd != -1) {
		memset(&uc, 0, sizeof(uc));
		uc.fd = p->ctl_fd;
		strlcpy(uc.path, p->conf->control_socket, sizeof(uc.path));
		ustate_add(us, US_CONTROL, &uc, sizeof(uc), NULL, 0);
		ustate_keep(us, uc.fd);
	}
	parent_ctl_save(p, us, upgrader);
	admit_save(p, us);

	/*
	 * A worker's messages and connections follow it, naming its index.
	 * The relay zygote is not carried: it holds no connection, and the
	 * next image starts its own (docs/upgrade.md); nor is a worker whose
	 * start was never answered (parent_starts_settle): it exits when its
	 * channel closes with the exec.
	 */
	TAILQ_FOREACH(w, &p->workers, entry) {
		if (w->role == ROLE_ZYGOTE || w->pid <= 0)
			continue;
		memset(&uw, 0, sizeof(uw));
		uw.role = w->role;
		uw.pid = w->pid;
		uw.fd = w->dead ? -1 : w->chan.fd;
		uw.version = w->chan.hello_seen ? w->chan.peer.version : 0;
		uw.flags = (w->dead ? US_W_DEAD : 0) |
		    (w->killed ? US_W_KILLED : 0) |
		    (w->in_map ? US_W_IN_MAP : 0) |
		    (w->retired ? US_W_RETIRED : 0) |
		    (w->pooled ? US_W_POOLED : 0) |
		    (w->finishing ? US_W_FINISHING : 0) |
		    (w->cnt_listed ? US_W_CNT_LISTED : 0) |
		    (w->pool_stopped ? US_W_POOL_STOPPED : 0) |
		    (w->replaced ? US_W_REPLACED : 0);
		uw.front_slot = w->role == ROLE_FRONT && !w->finishing &&
		    !w->replaced ? w->front_slot : -1;
		uw.binaries = w->binaries;
		uw.phones = w->phones;
		uw.probing = w->probing;
		uw.started_ms = w->started_ms;
		uw.cnt_ms = w->cnt_ms;
		strlcpy(uw.sid, w->sid, sizeof(uw.sid));
		ustate_add(us, US_WORKER, &uw, sizeof(uw), NULL, 0);
		/* what only a role has follows its worker record */
		if (w->role == ROLE_PUSH)
			parent_push_save(p, w, i, us);
		if (!w->dead) {
			ustate_keep(us, uw.fd);
			TAILQ_FOREACH(mo, &w->chan.outq, entry) {
				memset(&uo, 0, sizeof(uo));
				uo.worker = i;
				uo.fd = mo->fd;
				ustate_add(us, US_OUTMSG, &uo, sizeof(uo),
				    mo->buf, mo->len);
				if (mo->fd != -1)
					ustate_keep(us, mo->fd);
			}
		}
		TAILQ_FOREACH(c, &w->conns, owned) {
			memset(&un, 0, sizeof(un));
			un.id = c->id;
			un.key = c->ip->key;
			un.owner = i;
			un.listen_flags = c->listen_flags;
			ustate_add(us, US_CONN, &un, sizeof(un), NULL, 0);
		}
		i++;
	}
}

/* ---- the next image reads and checks --------------------------------------- */

/*
 * NULL when fd is a socket of that type, of that domain (-1: any) and
 * listening or not (-1: either); else what it is not.
 */
static const char *
adopt_fd_is(int fd, int type, int domain, int listening)
{
	struct stat	st;
	socklen_t	len;
	int		v;

	if (fd < 3)
		return "not a descriptor past stdio";
	if (fstat(fd, &st) == -1)
		return "not open";
	if (!S_ISSOCK(st.st_mode))
		return "not a socket";
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) == -1 || v != type)
		return "a socket of another type";
	len = sizeof(v);
	if (domain != -1 && (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v,
	    &len) == -1 || v != domain))
		return "a socket of another domain";
	len = sizeof(v);
	if (listening != -1 && (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v,
	    &len) == -1 || !v != !listening))
		return listening ? "not listening" : "listening";
	return NULL;
}

/* The same IPv4 or IPv6 address and port. */
static int
adopt_same_addr(const struct sockaddr_storage *a,
    const struct sockaddr_storage *b)
{
	const struct sockaddr_in	*a4 = (const void *)a, *b4 = (const void *)b;
	const struct sockaddr_in6	*a6 = (const void *)a, *b6 = (const void *)b;

	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return a4->sin_port == b4->sin_port &&
		    a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	if (a->ss_family == AF_INET6)
		return a6->sin6_port == b6->sin6_port &&
		    memcmp(&a6->sin6_addr, &b6->sin6_addr,
		    sizeof(a6->sin6_addr)) == 0 &&
		    a6->sin6_scope_id == b6->sin6_scope_id;
	return 0;
}

static void
adopt_fd(int fd)
{
	*(int *)adopt_push(&A.fds, &A.nfds, &A.capfds, sizeof(int)) = fd;
}

/*
 * A record whose descriptor is wrong (why): the refusal, or NULL on the
 * way back, which takes what can be had again instead (logged): a lost
 * listening or control socket is opened again from the configuration, a
 * lost client or queued message dropped, a worker killed.
 */
static const char *
adopt_lost(const char *what, int fd, const char *why)
{
	if (!A.back)
		return adopt_why("%s (fd %d): %s", what, fd, why);
	log_warnx("event=upgrade_lost what=\"%s\" fd=%d reason=\"%s\"", what,
	    fd, why);
	return NULL;
}

/* An address bucket's key: a known family, nothing past its prefix. */
static int
adopt_bucket_valid(const struct addr_bucket *key)
{
	static const unsigned char	zero[16];
	size_t				prefix;

	switch (key->family) {
	case 0:
		prefix = 0;
		break;
	case AF_INET:
		prefix = 4;
		break;
	case AF_INET6:
		prefix = ADDR_BUCKET_V6_PREFIX / 8;
		break;
	default:
		return 0;
	}
	return memcmp(key->addr + prefix, zero, sizeof(zero) - prefix) == 0;
}

static const char *
adopt_read_parent(const struct us_parent *up)
{
	const struct us_refusal	*r;
	size_t			 i;

	if (memchr(up->version, '\0', sizeof(up->version)) == NULL ||
	    memchr(up->self, '\0', sizeof(up->self)) == NULL ||
	    up->self[0] != '/')
		return "the parent record's strings are not strings";
	if (up->next_conn_id == 0 || up->verbose > 16 || up->draining > 1)
		return "the parent record's values are out of range";
	for (i = 0; i < US_REFUSAL_KINDS; i++) {
		r = &up->refusals[i];
		if (r->unlogged > r->total || !adopt_bucket_valid(&r->last) ||
		    (r->endpoint != EP_SERVER && r->endpoint != EP_CLIENT) ||
		    memchr(r->server_id, '\0', sizeof(r->server_id)) == NULL)
			return "the parent record's refusals are out of range";
	}
	A.parent = *up;
	return NULL;
}

static const char *
adopt_read_listener(const struct us_listener *ul)
{
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);
	const char		*why;
	size_t			 i;

	if ((ul->ss.ss_family != AF_INET && ul->ss.ss_family != AF_INET6) ||
	    ul->sslen > sizeof(ul->ss) || (ul->flags & ~LISTEN_FLAGS) != 0 ||
	    (ul->flags & LISTEN_METRICS && ul->flags & LISTEN_AGENT))
		return "a listener record out of range";
	for (i = 0; i < A.nlis; i++)
		if (adopt_same_addr(&A.lis[i].ss, &ul->ss))
			return "two listeners of one address";
	if ((why = adopt_fd_is(ul->fd, SOCK_STREAM, ul->ss.ss_family, 1)) ==
	    NULL && (getsockname(ul->fd, (struct sockaddr *)&ss, &len) == -1 ||
	    !adopt_same_addr(&ss, &ul->ss)))
		why = "bound to another address";
	if (why != NULL &&
	    adopt_lost("a listening socket", ul->fd, why) != NULL)
		return adopt_whybuf;
	/* a lost one stays in the configuration, to be opened again */
	*(struct us_listener *)adopt_push(&A.lis, &A.nlis, &A.caplis,
	    sizeof(*A.lis)) = *ul;
	if (why != NULL)
		A.lis[A.nlis - 1].fd = -1;
	else
		adopt_fd(ul->fd);
	return NULL;
}

static const char *
adopt_read_control(const struct us_control *uc)
{
	const char	*why;

	if (A.have_control || memchr(uc->path, '\0', sizeof(uc->path)) == NULL)
		return "a control socket record out of range";
	if ((why = adopt_fd_is(uc->fd, SOCK_STREAM, AF_UNIX, 1)) != NULL)
		return adopt_lost("the control socket", uc->fd, why);
	A.control = *uc;
	A.have_control = 1;
	adopt_fd(uc->fd);
	return NULL;
}

static const char *
adopt_read_ctl(const struct us_ctl_client *r, const unsigned char *tail,
    size_t tlen)
{
	struct rec_ctl	*rc;
	const char	*why;

	if (r->what < US_CTL_READING || r->what > US_CTL_UPGRADER ||
	    r->inlen >= CTL_LINE_MAX || r->outlen > CTL_OUT_MAX ||
	    tlen != (size_t)r->inlen + r->outlen)
		return "a control client record out of range";
	if ((why = adopt_fd_is(r->fd, SOCK_STREAM, AF_UNIX, 0)) != NULL)
		return adopt_lost("a pyrelayctl connection", r->fd, why);
	rc = adopt_push(&A.ctls, &A.nctls, &A.capctls, sizeof(*A.ctls));
	rc->r = *r;
	rc->tail = tail;
	adopt_fd(r->fd);
	return NULL;
}

/* pid is a child of this process (a zombie not yet reaped counts). */
static int
adopt_our_child(pid_t pid)
{
	siginfo_t	si;

	memset(&si, 0, sizeof(si));
	return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

static const char *
adopt_read_worker(struct us_worker *uw)
{
	const char	*why, *role = proc_role_name(uw->role);
	size_t		 sidlen, r;

	for (r = 0; r < sizeof(adopt_roles) / sizeof(adopt_roles[0]); r++)
		if (adopt_roles[r].role == uw->role)
			break;
	if (r == sizeof(adopt_roles) / sizeof(adopt_roles[0]))
		return adopt_why("a worker of role %u, which this program "
		    "does not know", uw->role);
	if (uw->pid <= 1 || (uw->flags & ~US_W_FLAGS) != 0 ||
	    ((uw->flags & US_W_DEAD) != 0) != (uw->fd == -1) ||
	    uw->front_slot < -1 || uw->front_slot >= 1024 ||
	    memchr(uw->sid, '\0', sizeof(uw->sid)) == NULL)
		return adopt_why("the record of %s pid %d is out of range",
		    role, (int)uw->pid);
	sidlen = strlen(uw->sid);
	if ((uw->flags & ~adopt_roles[r].flags) != 0 ||
	    (sidlen != 0 && (!adopt_roles[r].sid ||
	    !server_id_valid(uw->sid, sidlen))) ||
	    ((uw->flags & US_W_IN_MAP) && sidlen == 0) ||
	    ((uw->flags & (US_W_POOLED | US_W_POOL_STOPPED)) && sidlen != 0))
		return adopt_why("the record of %s pid %d does not hold "
		    "together", role, (int)uw->pid);
	if (!adopt_our_child(uw->pid))
		return adopt_why("%s pid %d is not a child of this process",
		    role, (int)uw->pid);
	if (uw->flags & US_W_DEAD)
		return NULL;
	/* docs/upgrade.md, "Versions": this one's, or the one before */
	if (uw->version != 0 && (uw->version > msg_version ||
	    uw->version < MSG_VERSION_OLDEST(msg_version)))
		return adopt_why("%s pid %d speaks message version %u; this "
		    "program serves %u to %u", role, (int)uw->pid, uw->version,
		    MSG_VERSION_OLDEST(msg_version), msg_version);
	if ((why = adopt_fd_is(uw->fd, SOCK_SEQPACKET, AF_UNIX, -1)) != NULL) {
		if (adopt_lost("a worker's channel", uw->fd, why) != NULL)
			return adopt_whybuf;
		/* the way back kills it, and reaping releases what it held */
		log_warnx("event=worker_killed role=%s pid=%d server_id=%s "
		    "reason=\"its channel was lost in an upgrade\"", role,
		    (int)uw->pid, uw->sid[0] ? uw->sid : "-");
		kill(uw->pid, SIGKILL);
		uw->flags |= US_W_DEAD | US_W_KILLED;
		uw->fd = -1;
		return NULL;
	}
	adopt_fd(uw->fd);
	return NULL;
}

static const char *
adopt_read_outmsg(const struct us_outmsg *uo, const unsigned char *pkt,
    size_t len)
{
	struct rec_out	*ro;
	struct msg_hdr	 hdr;
	struct stat	 st;

	if (uo->worker >= A.nws || len < sizeof(hdr) ||
	    len > sizeof(hdr) + MSG_MAX_BODY)
		return "a queued message record out of range";
	memcpy(&hdr, pkt, sizeof(hdr));
	if (hdr.len != len - sizeof(hdr) || hdr.type == MSG_HELLO ||
	    hdr.type >= MSG_TYPE_MAX)
		return "a queued message that is not one";
	if (A.ws[uo->worker].flags & US_W_DEAD) {
		/* its worker was lost on the way back: so is the message */
		if (uo->fd != -1)
			close(uo->fd);
		return NULL;
	}
	if (uo->fd != -1 && (uo->fd < 3 || fstat(uo->fd, &st) == -1))
		return adopt_lost("a queued message's descriptor", uo->fd,
		    "not open");
	ro = adopt_push(&A.outs, &A.nouts, &A.capouts, sizeof(*A.outs));
	ro->r = *uo;
	ro->pkt = pkt;
	ro->len = len;
	if (uo->fd != -1)
		adopt_fd(uo->fd);
	return NULL;
}

static const char *
adopt_read_address(const struct us_address *ua)
{
	if (!adopt_bucket_valid(&ua->key) || !isfinite(ua->tokens) ||
	    ua->tokens < 0)
		return "an address record out of range";
	*(struct us_address *)adopt_push(&A.addrs, &A.naddrs, &A.capaddrs,
	    sizeof(*A.addrs)) = *ua;
	return NULL;
}

static const char *
adopt_read_conn(const struct us_conn *un)
{
	if (un->owner >= A.nws || un->id == 0 ||
	    un->id > A.parent.next_conn_id ||
	    (un->listen_flags & ~(uint32_t)LISTEN_FLAGS) != 0)
		return "a connection record out of range";
	*(struct us_conn *)adopt_push(&A.conns, &A.nconns, &A.capconns,
	    sizeof(*A.conns)) = *un;
	return NULL;
}

/* A token's hash as the push log lines show it: hex digits, not empty. */
static int
adopt_hash_valid(const char *hash, size_t size)
{
	size_t	len;

	if ((len = strnlen(hash, size)) == 0 || len == size)
		return 0;
	return strspn(hash, "0123456789abcdef") == len;
}

/*
 * A push process's part and its wakes in flight: right after its worker
 * record, once; one current and one next at most; each wake a valid
 * server-id's, an id the parent gave and no other wake has.
 */
static const char *
adopt_read_push(const struct us_push *up)
{
	const struct us_push_wake	*w;
	size_t				 i, j;

	if (A.nws == 0 || up->worker != A.nws - 1 ||
	    A.ws[up->worker].role != ROLE_PUSH || (A.npushes > 0 &&
	    A.pushes[A.npushes - 1].worker == up->worker))
		return "a push record that does not follow its push process's";
	if (up->part > US_PUSH_NEXT || up->nwakes > PUSH_IN_FLIGHT_MAX ||
	    (up->part != US_PUSH_RETIRING && A.push_parts[up->part]++ > 0) ||
	    (up->part == US_PUSH_NEXT && up->nwakes > 0) ||
	    A.npush_ids + up->nwakes > PUSH_IN_FLIGHT_MAX)
		return "a push record that does not hold together";
	for (i = 0; i < up->nwakes; i++) {
		w = &up->wakes[i];
		if (w->id == 0 || w->id > A.parent.push.seq ||
		    memchr(w->sid, '\0', sizeof(w->sid)) == NULL ||
		    !server_id_valid(w->sid, strlen(w->sid)) ||
		    !adopt_hash_valid(w->hash, sizeof(w->hash)))
			return "a push wake out of range";
		for (j = 0; j < A.npush_ids; j++)
			if (A.push_ids[j] == w->id)
				return adopt_why("push wake %llu is held twice",
				    (unsigned long long)w->id);
		A.push_ids[A.npush_ids++] = w->id;
	}
	*(struct us_push *)adopt_push(&A.pushes, &A.npushes, &A.cappushes,
	    sizeof(*A.pushes)) = *up;
	return NULL;
}

/* Forgets what was read (and the fds it names: they stay open). */
static void
adopt_free(void)
{
	ustate_reader_free(&A.rd);
	free(A.lis);
	free(A.lis_used);
	free(A.ctls);
	free(A.ws);
	free(A.built);
	free(A.outs);
	free(A.addrs);
	free(A.conns);
	free(A.pushes);
	free(A.fds);
	memset(&A, 0, sizeof(A));
}

static int
adopt_fd_cmp(const void *a, const void *b)
{
	int	x = *(const int *)a, y = *(const int *)b;

	return x < y ? -1 : x > y;
}

int
adopt_read(int fd, int back, const char **why)
{
	union {
		struct us_parent	p;
		struct us_listener	l;
		struct us_control	c;
		struct us_ctl_client	cc;
		struct us_worker	w;
		struct us_outmsg	o;
		struct us_address	a;
		struct us_conn		n;
		struct us_push		u;
	}			*b;
	const unsigned char	*tail;
	size_t			 tlen, i;
	uint32_t		 type, n = 0;
	int			 rv;

	adopt_free();
	A.back = back;
	if (ustate_read(fd, USTATE_FORMAT, &A.rd, why) == -1)
		return -1;
	ustate_reader_rules(&A.rd, adopt_rules,
	    sizeof(adopt_rules) / sizeof(adopt_rules[0]));
	b = xmalloc(sizeof(*b));
	while ((rv = ustate_next(&A.rd, &type, b, sizeof(*b), &tail, &tlen,
	    why)) == 1) {
		*why = NULL;
		/* the parent's record first, and only there */
		if ((n++ == 0) != (type == US_PARENT))
			*why = "the parent record is not the first";
		else
			switch (type) {
			case US_PARENT:
				*why = adopt_read_parent(&b->p);
				break;
			case US_CONFIG:
				A.config = tail;
				A.configlen = tlen;
				break;
			case US_LISTENER:
				*why = adopt_read_listener(&b->l);
				break;
			case US_CONTROL:
				*why = adopt_read_control(&b->c);
				break;
			case US_CTL_CLIENT:
				*why = adopt_read_ctl(&b->cc, tail, tlen);
				break;
			case US_WORKER:
				*why = adopt_read_worker(&b->w);
				*(struct us_worker *)adopt_push(&A.ws, &A.nws,
				    &A.capws, sizeof(*A.ws)) = b->w;
				break;
			case US_OUTMSG:
				*why = adopt_read_outmsg(&b->o, tail, tlen);
				break;
			case US_ADDRESS:
				*why = adopt_read_address(&b->a);
				break;
			case US_CONN:
				*why = adopt_read_conn(&b->n);
				break;
			case US_PUSH:
				*why = adopt_read_push(&b->u);
				break;
			}
		if (*why != NULL)
			break;
	}
	free(b);
	if (rv == -1 || *why != NULL)
		return -1;
	if (n == 0) {
		*why = "the state is empty";
		return -1;
	}
	/* each descriptor is one thing (none: A.fds is NULL, not for qsort) */
	if (A.nfds > 1)
		qsort(A.fds, A.nfds, sizeof(*A.fds), adopt_fd_cmp);
	for (i = 1; i < A.nfds; i++)
		if (A.fds[i] == A.fds[i - 1]) {
			*why = adopt_why("fd %d is named twice", A.fds[i]);
			return -1;
		}
	A.lis_used = xcalloc(A.nlis + 1, sizeof(*A.lis_used));
	return 0;
}

const struct us_parent *
adopt_parent(void)
{
	return &A.parent;
}

struct config *
adopt_config(const char **why)
{
	struct config		*conf;
	struct listen_addr	*la;
	size_t			 i;

	/* written by this very program: the way back reads its own */
	if (A.config == NULL || A.configlen != sizeof(*conf) ||
	    A.parent.sizeof_config != sizeof(*conf) ||
	    A.parent.msg_version != msg_version ||
	    strcmp(A.parent.version, pyrelayd_version) != 0) {
		*why = "the state's configuration is not this program's";
		return NULL;
	}
	conf = xmalloc(sizeof(*conf));
	memcpy(conf, A.config, sizeof(*conf));
	TAILQ_INIT(&conf->listeners);
	TAILQ_INIT(&conf->metrics);
	TAILQ_INIT(&conf->agents);
	if (memchr(conf->path, '\0', sizeof(conf->path)) == NULL ||
	    memchr(conf->user, '\0', sizeof(conf->user)) == NULL ||
	    memchr(conf->chroot, '\0', sizeof(conf->chroot)) == NULL ||
	    memchr(conf->control_socket, '\0', sizeof(conf->control_socket)) ==
	    NULL || memchr(conf->tls_cert, '\0', sizeof(conf->tls_cert)) ==
	    NULL || memchr(conf->tls_key, '\0', sizeof(conf->tls_key)) == NULL ||
	    memchr(conf->acme_webroot, '\0', sizeof(conf->acme_webroot)) ==
	    NULL || memchr(conf->fcm_credentials, '\0',
	    sizeof(conf->fcm_credentials)) == NULL ||
	    memchr(conf->fcm_project, '\0', sizeof(conf->fcm_project)) ==
	    NULL || memchr(conf->fcm_endpoint, '\0',
	    sizeof(conf->fcm_endpoint)) == NULL ||
	    memchr(conf->push_ca, '\0', sizeof(conf->push_ca)) == NULL) {
		free(conf);
		*why = "the state's configuration has no strings";
		return NULL;
	}
	/* its listeners are those the state carries (a lost one is opened again) */
	for (i = 0; i < A.nlis; i++) {
		la = xcalloc(1, sizeof(*la));
		la->ss = A.lis[i].ss;
		la->sslen = A.lis[i].sslen;
		la->flags = A.lis[i].flags;
		la->fd = -1;
		if (la->flags & LISTEN_METRICS)
			TAILQ_INSERT_TAIL(&conf->metrics, la, entry);
		else if (la->flags & LISTEN_AGENT)
			TAILQ_INSERT_TAIL(&conf->agents, la, entry);
		else
			TAILQ_INSERT_TAIL(&conf->listeners, la, entry);
	}
	return conf;
}

int
adopt_listener(const struct listen_addr *la)
{
	size_t	i;

	for (i = 0; i < A.nlis; i++)
		if (!A.lis_used[i] && adopt_same_addr(&A.lis[i].ss, &la->ss)) {
			A.lis_used[i] = 1;
			return A.lis[i].fd;
		}
	return -1;
}

int
adopt_control(const char *path)
{
	if (!A.have_control || strcmp(A.control.path, path) != 0)
		return -1;
	A.have_control = 2;	/* taken */
	return A.control.fd;
}

/* ---- and builds ---------------------------------------------------------- */

static int
adopt_cnt_cmp(const void *a, const void *b)
{
	const struct worker	*x = *(struct worker *const *)a;
	const struct worker	*y = *(struct worker *const *)b;

	return x->cnt_ms < y->cnt_ms ? -1 : x->cnt_ms > y->cnt_ms;
}

static const char *
adopt_build_worker(struct parent *p, const struct us_worker *uw,
    struct worker **out)
{
	struct worker	*w;

	w = parent_worker_new(p, uw->role, uw->pid, uw->fd, uw->sid, 0);
	*out = w;
	w->started_ms = uw->started_ms;
	w->killed = (uw->flags & US_W_KILLED) != 0;
	w->retired = (uw->flags & US_W_RETIRED) != 0;
	w->finishing = (uw->flags & US_W_FINISHING) != 0;
	w->pool_stopped = (uw->flags & US_W_POOL_STOPPED) != 0;
	w->binaries = uw->binaries;
	w->phones = uw->phones;
	w->probing = uw->probing;
	w->cnt_ms = uw->cnt_ms;
	w->front_slot = -1;
	if (w->role == ROLE_RELAY) {
		p->binaries += w->binaries;
		p->phones += w->phones;
	}
	if (!w->dead) {
		/* it said HELLO to the parent before; one still starting may yet */
		w->hello = w->chan.hello_seen = uw->version != 0;
		/* its pid is known: said HELLO, it is announced already */
		w->ready = w->hello;
		w->chan.peer.version = uw->version;
		w->chan.peer.role = uw->role;
		w->chan.peer.pid = (uint32_t)uw->pid;
		w->chan.hello_min = MSG_VERSION_OLDEST(msg_version);
		if (uw->version != 0)
			w->chan.rules = parent_worker_rules(uw->role,
			    uw->version);
	}
	if (uw->flags & US_W_IN_MAP) {
		if (RB_INSERT(relay_map, &p->relays, w) != NULL)
			return adopt_why("two relays for server-id %s", w->sid);
		w->in_map = 1;
	}
	if (uw->flags & US_W_POOLED) {
		w->pooled = 1;
		TAILQ_INSERT_TAIL(&p->pool, w, pool_entry);
		p->npool++;
		if (w->hello)
			p->npool_ready++;
	}
	if (w->role == ROLE_FRONT && !w->finishing) {
		/*
		 * The way back keeps its fronts; the next program starts its
		 * own, and until they are up the old ones take the
		 * connections (parent_stand_in), then finish.
		 */
		if (A.back && uw->front_slot >= 0 &&
		    uw->front_slot < p->nfronts &&
		    p->fronts[uw->front_slot] == NULL &&
		    !(uw->flags & US_W_REPLACED)) {
			p->fronts[uw->front_slot] = w;
			w->front_slot = uw->front_slot;
		} else if (!w->dead) {
			w->replaced = 1;
			p->stand_ins = xreallocarray(p->stand_ins,
			    p->nstand_ins + 1, sizeof(*p->stand_ins));
			p->stand_ins[p->nstand_ins++] = w;
		} else
			w->finishing = 1;	/* only to be reaped */
	}
	/*
	 * A front in no slot is read as the relays are, before a connection
	 * is refused at accept (its CONN_CLOSED may free the address's slot)
	 * and before /healthz is answered.
	 */
	if (w->role == ROLE_FRONT && w->front_slot == -1 && !w->dead)
		parent_relay_watch(p, w);
	return NULL;
}

int
adopt_build(struct parent *p, struct ctl_client **upgrader, const char **why)
{
	const struct us_parent	*up = &A.parent;
	struct worker		**listed, *w;
	struct conn_rec		*c;
	struct ctl_client	*cc;
	struct msg_hdr		 hdr;
	size_t			 i, nlisted = 0;

	*upgrader = NULL;
	adopt_values(p, &A.parent, 0);
	p->opts.verbose = (int)up->verbose;
	log_setverbose(p->opts.verbose);

	for (i = 0; i < A.naddrs; i++)
		if ((*why = admit_adopt(p, &A.addrs[i])) != NULL)
			return -1;
	A.built = xcalloc(A.nws + 1, sizeof(*A.built));
	listed = xcalloc(A.nws + 1, sizeof(*listed));
	for (i = 0; i < A.nws; i++) {
		if ((*why = adopt_build_worker(p, &A.ws[i], &A.built[i])) !=
		    NULL)
			goto fail;
		if ((A.ws[i].flags & US_W_CNT_LISTED) && !A.built[i]->dead)
			listed[nlisted++] = A.built[i];
	}
	/* the relays that counted lately, in the order they counted */
	qsort(listed, nlisted, sizeof(*listed), adopt_cnt_cmp);
	for (i = 0; i < nlisted; i++) {
		TAILQ_INSERT_TAIL(&p->cnt_recent, listed[i], cnt_entry);
		listed[i]->cnt_listed = 1;
	}
	free(listed);
	listed = NULL;
	/* queued, in their order; sent once committed */
	for (i = 0; i < A.nouts; i++) {
		w = A.built[A.outs[i].r.worker];
		memcpy(&hdr, A.outs[i].pkt, sizeof(hdr));
		msg_compose(&w->chan, hdr.type, hdr.id, A.outs[i].pkt +
		    sizeof(hdr), hdr.len, A.outs[i].r.fd);
	}
	for (i = 0; i < A.nconns; i++) {
		c = xcalloc(1, sizeof(*c));
		c->id = A.conns[i].id;
		c->listen_flags = (int)A.conns[i].listen_flags;
		if ((c->ip = admit_find(p, &A.conns[i].key)) == NULL) {
			free(c);
			*why = "a connection of an address the state does not have";
			return -1;
		}
		if (RB_INSERT(conn_tree, &p->conns, c) != NULL) {
			free(c);
			*why = adopt_why("two connections %llu",
			    (unsigned long long)A.conns[i].id);
			return -1;
		}
		c->ip->live++;
		p->live++;
		conn_set_owner(c, A.built[A.conns[i].owner]);
	}
	for (i = 0; i < A.npushes; i++)
		parent_push_adopt(p, A.built[A.pushes[i].worker], &A.pushes[i],
		    A.back);
	for (i = 0; i < A.nctls; i++)
		if ((cc = parent_ctl_adopt(p, &A.ctls[i].r, A.ctls[i].tail)) !=
		    NULL && A.ctls[i].r.what == US_CTL_UPGRADER)
			*upgrader = cc;
	return 0;
 fail:
	free(listed);
	return -1;
}

void
adopt_commit(struct parent *p, int back)
{
	struct worker		*w, *next;
	size_t			 i;

	for (i = 0; i < A.nfds; i++)
		if (fcntl(A.fds[i], F_SETFD, FD_CLOEXEC) == -1)
			log_warn("event=upgrade_cloexec fd=%d", A.fds[i]);
	/* listeners the configuration dropped, and a control socket it moved */
	for (i = 0; i < A.nlis; i++)
		if (!A.lis_used[i] && A.lis[i].fd != -1)
			close(A.lis[i].fd);
	if (A.have_control == 1) {
		close(A.control.fd);
		unlink(A.control.path);
	}
	for (i = 0; i < A.nws; i++)
		if (A.built != NULL && A.built[i] != NULL && !A.built[i]->dead)
			parent_worker_flush(A.built[i]);
	/* new relays, the pool's too, start from the program installed now */
	TAILQ_FOREACH_SAFE(w, &p->workers, entry, next)
		if (!back && !w->dead && w->pooled)
			pool_stop(p, w);
	adopt_free();
}

/* Every fd the state named: for the way back, none may close at the exec. */
int
adopt_keep_all(void)
{
	size_t	i;
	int	rv = 0;

	for (i = 0; i < A.nfds; i++)
		if (fcntl(A.fds[i], F_SETFD, 0) == -1)
			rv = -1;
	return rv;
}
