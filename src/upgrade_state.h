/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The state a parent hands the program it executes in its own place
 * (docs/upgrade.md): a sealed memfd holding a head and a sequence of typed
 * records, each of the exact length its type has (some followed by bytes
 * whose count the record gives).  The reader trusts nothing it has not
 * checked: the magic, the format, the total length against the file's,
 * the number of records, and each record's type and length against the
 * caller's table; the meaning of what a record says is the caller's to
 * check (parent_adopt.c).
 *
 * USTATE_FORMAT changes whenever a record's layout or meaning does; a
 * program reads its own format and the one before it, so that an upgrade
 * from the previous release works and one from further back is refused
 * cleanly, naming both formats.
 */
#ifndef UPGRADE_STATE_H
#define UPGRADE_STATE_H

#include <sys/types.h>
#include <sys/socket.h>

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "addr_bucket.h"
#include "proto.h"
#include "pyrelayd.h"

#define USTATE_MAGIC		"pyrelayd state"	/* 15 bytes and a NUL */
#define USTATE_FORMAT		1
#define USTATE_MAX		(1024UL * 1024 * 1024)	/* bytes, whole state */

struct ustate_head {
	char		magic[16];
	uint32_t	format;
	uint32_t	records;	/* that follow */
	uint64_t	length;		/* of the whole state, this head included */
};

/* Each record: this, then len bytes of body, then zeros up to 8-byte alignment. */
struct ustate_rec {
	uint32_t	type;
	uint32_t	len;
};

/* The writer: records gathered in memory, and the fds they name. */
struct ustate {
	unsigned char	*buf;
	size_t		 len, cap;
	uint32_t	 records;
	int		*fds;		/* to keep open across the exec */
	size_t		 nfds, fdcap;
};

void	ustate_init(struct ustate *);
/* Appends a record: body (its struct), then tail (may be NULL/0). */
void	ustate_add(struct ustate *, uint32_t type, const void *body, size_t len,
	    const void *tail, size_t tlen);
/* fd must stay open across the exec (not -1). */
void	ustate_keep(struct ustate *, int fd);
/* Sets (1) or clears (0) FD_CLOEXEC on every kept fd; -1 if one failed. */
int	ustate_cloexec(const struct ustate *, int on);
/* A sealed memfd holding the state, close-on-exec; -1 with errno. */
int	ustate_memfd(struct ustate *);
void	ustate_free(struct ustate *);

/* What a record type must look like: its body's size, and whether bytes follow. */
struct ustate_rule {
	uint32_t	type;
	uint32_t	len;		/* exact size of the body's struct */
	int		tail;		/* 1: more bytes may follow it */
};

struct ustate_reader {
	unsigned char		*buf;
	size_t			 len, off;
	uint32_t		 format;	/* the head's */
	uint32_t		 left;		/* records not yet read */
	const struct ustate_rule *rules;
	size_t			 nrules;
};

/*
 * Reads the whole state from fd (from offset 0, however far it was read
 * before) and checks its head: 0, or -1 with *why.  oldest: the oldest
 * format the caller reads (up to USTATE_FORMAT).
 */
int	ustate_read(int fd, uint32_t oldest, struct ustate_reader *,
	    const char **why);
/* The table of record types the caller reads (kept, not copied). */
void	ustate_reader_rules(struct ustate_reader *,
	    const struct ustate_rule *, size_t);
/*
 * The next record: 1 with its type, body (its struct's size) and tail;
 * 0 after the last one (the length the head gave is then all used);
 * -1 with *why.  The body is copied to `body`, whose size is its rule's.
 */
int	ustate_next(struct ustate_reader *, uint32_t *type, void *body,
	    size_t bodysize, const unsigned char **tail, size_t *tlen,
	    const char **why);
void	ustate_reader_free(struct ustate_reader *);

/* ---- the parent's records (docs/upgrade.md, "What crosses") ---------- */

enum ustate_type {
	US_PARENT = 1,		/* counters and the parent's own values */
	US_CONFIG,		/* the running configuration, for a way back */
	US_LISTENER,		/* a listening socket, main or metrics */
	US_CONTROL,		/* the control socket */
	US_CTL_CLIENT,		/* a pyrelayctl connection; tail: in, then out */
	US_WORKER,		/* a worker: role, pid, channel, version, ... */
	US_OUTMSG,		/* a message queued for a worker; tail: the packet */
	US_ADDRESS,		/* an address bucket: rate limit */
	US_CONN,		/* a connection record */
	US_PUSH,		/* after a push process's US_WORKER: its part */
	US_TYPE_MAX
};

#define US_VERSION_MAX		32
#define US_REFUSAL_KINDS	5	/* REFUSED_MAX (parent.h; asserted there) */

/*
 * The refusals of one kind (enum refusal_kind, parent.h): the count, and
 * what the next line of the kind will say, so that the refusals of the
 * second the exec fell in are logged, once, by the image after.
 */
struct us_refusal {
	uint64_t		total;
	uint64_t		unlogged;	/* since the last line */
	int64_t			logged_ms;	/* that line's time (0: none) */
	struct addr_bucket	last;
	int32_t			endpoint;	/* EP_SERVER, EP_CLIENT */
	uint32_t		live, ip_live;
	char			server_id[SERVER_ID_MAX + 1];
	char			pad[3];
};

/* The push wakes (parent_push.c): what is not one push process's. */
struct us_push_values {
	uint64_t		seq;		/* the last wake id given */
	uint64_t		outcomes[PUSH_OUTCOME_MAX];
	int64_t			started_ms;	/* the last push process's start */
	int64_t			backoff_ms;
	uint32_t		again;		/* settings changed while starting */
	uint32_t		drop_logged;
};

struct us_parent {
	char			version[US_VERSION_MAX];	/* the writer's */
	uint32_t		msg_version;	/* the writer's msg_version */
	uint32_t		verbose;
	int64_t			started_ms;
	int64_t			commit_ms;	/* when the writer executed */
	uint64_t		next_conn_id;
	uint64_t		ctl_next_req;
	uint64_t		accepted;
	uint64_t		relays_started;
	uint64_t		assignments;
	uint64_t		conns_lost;
	uint64_t		relay_exits[EXIT_CAUSE_MAX];
	uint64_t		front_outcomes[FRONT_OUTCOME_MAX];
	uint64_t		tls_handoffs[3];
	struct us_refusal	refusals[US_REFUSAL_KINDS];
	struct relay_counters	cnt;
	struct us_push_values	push;
	uint32_t		draining;	/* pyrelayctl drain (0 or 1) */
	uint32_t		pad0;
	uint32_t		uid, gid;	/* the workers' user */
	uint32_t		sizeof_config;	/* of the writer's struct config */
	uint32_t		pad;
	char			self[PATH_MAX];	/* the program's path */
};

struct us_listener {
	int32_t			fd;
	uint32_t		flags;		/* LISTEN_* */
	uint32_t		sslen;
	uint32_t		pad;
	struct sockaddr_storage	ss;
};

struct us_control {
	int32_t		fd;
	uint32_t	pad;
	char		path[PATH_MAX];
};

enum us_ctl_what {
	US_CTL_READING = 1,	/* the command line so far is the tail */
	US_CTL_WRITING,		/* the answer not yet written is the tail */
	US_CTL_WAITING,		/* it waited for a relay's answer */
	US_CTL_UPGRADER,	/* it asked for this upgrade */
};

struct us_ctl_client {
	int32_t		fd;
	uint32_t	what;		/* enum us_ctl_what */
	uint32_t	inlen;
	uint32_t	outlen;
};

#define US_W_DEAD		0x01	/* killed or its channel ended: reap only */
#define US_W_KILLED		0x02
#define US_W_IN_MAP		0x04
#define US_W_RETIRED		0x08
#define US_W_POOLED		0x10
#define US_W_FINISHING		0x20	/* a front told to finish */
#define US_W_CNT_LISTED		0x40
#define US_W_POOL_STOPPED	0x80	/* a pooled relay told to stop */
#define US_W_REPLACED		0x100	/* a front serving until new ones are up */
#define US_W_FLAGS		0x1ff

struct us_worker {
	uint32_t	role;		/* enum proc_role */
	int32_t		pid;
	int32_t		fd;		/* its channel; -1 when dead */
	uint32_t	version;	/* its HELLO's; 0 before HELLO */
	uint32_t	flags;		/* US_W_* */
	int32_t		front_slot;
	uint32_t	binaries, phones, probing, pad;
	int64_t		started_ms;
	int64_t		cnt_ms;
	char		sid[SERVER_ID_MAX + 1];
	char		pad2[7];
};

struct us_outmsg {
	uint32_t	worker;		/* index among US_WORKER records */
	int32_t		fd;		/* sent with it, or -1 */
};

struct us_address {
	struct addr_bucket	key;
	uint32_t		pad;
	double			tokens;
	int64_t			refill_ms;
};

struct us_conn {
	uint64_t		id;
	struct addr_bucket	key;		/* its US_ADDRESS record's */
	uint32_t		owner;		/* index among US_WORKER records */
	uint32_t		listen_flags;
	uint32_t		pad;
};

/* A push wake in flight (parent_push.c), held by one push process. */
#define US_PUSH_HASH_MAX	16	/* the token's hash logged, NUL included */
struct us_push_wake {
	uint64_t		id;		/* MSG_PUSH_SEND's hdr.id */
	int64_t			started_ms;
	char			sid[SERVER_ID_MAX + 1];
	char			hash[US_PUSH_HASH_MAX];
	char			pad[7];
};

/*
 * What only a push process has, after its US_WORKER: which one it is, and
 * the wakes it holds, whose PUSH_DONE the next image counts.
 */
enum us_push_part {
	US_PUSH_RETIRING = 0,	/* told PUSH_RETIRE, or replaced meanwhile */
	US_PUSH_CURRENT,	/* new wakes go to it */
	US_PUSH_NEXT,		/* starting, to replace the current one */
};
struct us_push {
	uint32_t		worker;		/* index of its US_WORKER */
	uint32_t		part;		/* enum us_push_part */
	uint32_t		nwakes;
	uint32_t		pad;
	struct us_push_wake	wakes[PUSH_IN_FLIGHT_MAX];
};

#endif
