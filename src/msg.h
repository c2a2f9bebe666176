/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Typed messages between pyrelayd processes over SOCK_SEQPACKET socketpairs.
 * One message per packet: a fixed header, a body of exactly the length the
 * receiver's table names for that type, and at most one fd.
 * The first message on every channel, in each direction, is MSG_HELLO
 * carrying MSG_VERSION.  Anything else is a protocol violation and the
 * caller kills the peer.
 *
 * Each direction of each channel has one table (struct msg_rules), kept
 * beside the code that handles it: for every type the receiver accepts,
 * its length, whether an fd rides with it, the check of its body and its
 * handler.  msg_recv() applies the first three; msg_handle() calls the
 * fourth.  docs/messages.md lists the same rows, and a unit test
 * (tests/unit/test_contract.c) holds the two equal.
 */
#ifndef MSG_H
#define MSG_H

#include <sys/queue.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The version of the messages this source speaks, sent in HELLO.  2: the
 * first that a parent can hand to the next one (docs/upgrade.md), with
 * MSG_FINISH.  3: a relay's RELAY_STATE may carry its counter increments
 * (proto.h msg_relay_report); a parent of 3 takes 2's messages as they
 * are.  msg_version (version.c) is what a build speaks: the same,
 * but in the test builds that stand for the next release.  A channel takes
 * the peer's HELLO of a version from its hello_min to msg_version; a
 * parent that adopts the workers of the program before it serves those of
 * the version before its own (MSG_VERSION_OLDEST) for as long as they live.
 */
#define MSG_VERSION	3
#define MSG_VERSION_OLDEST(v)	((v) - 1)	/* the oldest a parent of v serves */
extern const uint32_t	msg_version;
#define MSG_MAX_BODY	(32 * 1024)
#define MSG_HELLO	1		/* reserved type, body struct msg_hello */
/*
 * Reserved: one packet holding a batch's messages, none with an fd, each
 * header and body as msg_batch lays them out (8-byte aligned), taken by
 * msg_recv one at a time as if each had come alone (message version 3;
 * docs/messages.md "Packs").  Sent only on a channel marked pack_out, to
 * a receiver that marks it pack_in.
 */
#define MSG_PACK	255

struct msg_hdr {
	uint32_t	type;
	uint32_t	len;		/* body length */
	uint64_t	id;		/* type dependent: conn id, request id */
};

struct msg_hello {
	uint32_t	version;
	uint32_t	role;		/* enum proc_role of the sender */
	uint32_t	pid;
	uint32_t	pad;
};

enum msg_fd_rule {
	MSG_FD_NONE = 0,		/* an fd with this type is a violation */
	MSG_FD_REQUIRED,		/* no fd with this type is a violation */
};

struct msg;

/*
 * One row of a direction's table: one type the receiver accepts.  Packed
 * (40 bytes): in a relay the table is relocated data, which every relay
 * dirties.
 */
struct msg_rule {
	const char		*name;	/* for logs and docs/messages.md */
	uint32_t		 type;
	enum msg_fd_rule	 fd;
	uint32_t		 minlen;	/* 0: exactly len; else minlen..len */
	uint32_t		 len;	/* exact body length, or the most */
	/*
	 * What the length cannot say (strings end in their arrays, counts
	 * fit, ...): NULL when the body is well formed, else why not.
	 * NULL: the length says all.  One check per body (proto.c).
	 */
	const char		*(*check)(const void *body, size_t len);
	/* NULL: passed over (its fd closed), as SETUP after msg_wait */
	void			 (*handle)(void *arg, struct msg *);
};

/* A direction's table: what `to` accepts from `from` (enum proc_role). */
struct msg_rules {
	uint32_t		 from;
	uint32_t		 to;
	const struct msg_rule	*rule;
	size_t			 nrules;
};
#define MSG_RULES(from, to, rows) \
	{ (from), (to), (rows), sizeof(rows) / sizeof((rows)[0]) }

struct msg {
	struct msg_hdr	hdr;
	int		fd;		/* -1 when none */
	/*
	 * 1 when the packet carried an fd the kernel could not install (this
	 * process is at RLIMIT_NOFILE): fd is -1, the connection it was is
	 * gone, and the message is otherwise valid.
	 */
	int		fd_lost;
	/* the row it passed (NULL for MSG_HELLO) */
	const struct msg_rule *rule;
	/* aligned so that bodies can be read through their struct types */
	unsigned char	body[MSG_MAX_BODY] __attribute__((__aligned__(16)));
};

struct msg_out {
	TAILQ_ENTRY(msg_out)	entry;
	int			fd;	/* sent with the packet, then closed */
	size_t			len;	/* header + body */
	unsigned char		buf[];
};
TAILQ_HEAD(msg_outq, msg_out);

/* the packets one sendmmsg(2) sends at most (msg_flush, msg_batch_send) */
#define MSG_SEND_BATCH		4

/* One packet to send: header and body, and the fd (or -1) riding with it. */
struct msg_pkt {
	const void	*buf;
	size_t		 len;
	int		 fd;
};

/*
 * A few small messages composed together and sent with one call, in
 * order, each its own packet with its fd (msg_batch_*).  On the caller's
 * stack, bodies copied in: what a relay sends touches no heap page.
 */
#define MSG_BATCH_MAX		4
#define MSG_BATCH_BYTES		320
struct msg_batch {
	int		 n;
	size_t		 used;
	struct msg_pkt	 pkt[MSG_BATCH_MAX];
	unsigned char	 buf[MSG_BATCH_BYTES] __attribute__((__aligned__(8)));
};

struct msg_chan {
	int			 fd;		/* our end, non-blocking */
	const struct msg_rules	*rules;		/* what we accept */
	int			 hello_seen;	/* peer's MSG_HELLO received */
	uint32_t		 hello_min;	/* oldest HELLO version taken */
	struct msg_hello	 peer;		/* its content */
	struct msg_outq		 outq;
	size_t			 outq_len;	/* packets queued */
	size_t			 outq_bytes;	/* their bytes, headers included */
	const char		*errstr;	/* why the last call failed */
	unsigned char		*pack;		/* a MSG_PACK's messages not read */
	uint16_t		 pack_len, pack_off;
	uint8_t			 pack_out;	/* batches without fds: one packet */
	uint8_t			 pack_in;	/* MSG_PACK taken */
};

/* Sets up chan on fd (made non-blocking) with the table of what we accept. */
void	msg_chan_init(struct msg_chan *, int fd, const struct msg_rules *);
/*
 * The same on an fd that is O_NONBLOCK and FD_CLOEXEC already, made so
 * (SOCK_NONBLOCK | SOCK_CLOEXEC, MSG_CMSG_CLOEXEC): no call to the kernel.
 */
void	msg_chan_ready(struct msg_chan *, int fd, const struct msg_rules *);
/* Frees the queue, closes queued fds and the channel fd. */
void	msg_chan_clear(struct msg_chan *);
/*
 * Sends a message, at once when nothing is queued ahead of it and the
 * socket takes it, else queues it; fd (or -1) is owned by the channel from
 * now on, even when the call fails, and closed once sent.  Returns 0, or
 * -1 (errstr set) when len > MSG_MAX_BODY.  Never blocks; call msg_flush()
 * (or wait for EV_WRITE) to send what is queued.
 */
int	msg_compose(struct msg_chan *, uint32_t type, uint64_t id,
	    const void *body, size_t len, int fd);
/*
 * Queues a message, as msg_compose would, without sending it: it leaves
 * with the next msg_flush(), in one sendmmsg(2) with those queued after
 * it (the parent's ASSIGN and the CONN_ATTACH that follows it).
 */
int	msg_defer(struct msg_chan *, uint32_t type, uint64_t id,
	    const void *body, size_t len, int fd);
/* An empty batch. */
void	msg_batch_init(struct msg_batch *);
/*
 * Adds a message to the batch, as msg_compose would send it: the batch is
 * sent first when the message does not fit, and one too large for any
 * batch goes by msg_compose.  fd is the channel's from now on.  Returns 0,
 * or -1 as msg_compose does.
 */
int	msg_batch_add(struct msg_chan *, struct msg_batch *, uint32_t type,
	    uint64_t id, const void *body, size_t len, int fd);
/*
 * Sends the batch with one sendmmsg(2) when nothing is queued ahead of it
 * and the socket takes it; what it does not take is queued, in order, as
 * msg_compose queues.  The batch is empty after.  Never blocks.
 */
void	msg_batch_send(struct msg_chan *, struct msg_batch *);
/* 1 while a MSG_PACK's messages wait to be read: msg_recv takes them. */
#define msg_pending(chan)	((chan)->pack != NULL)
/* Queues our MSG_HELLO. */
int	msg_hello(struct msg_chan *, uint32_t role);
/*
 * The peer's HELLO, known without one: the channel between a relay and
 * its parent, whose zygote said HELLO for both (docs/messages.md).  A
 * HELLO that comes after is a second one.
 */
void	msg_hello_known(struct msg_chan *, uint32_t version, uint32_t role,
	    uint32_t pid);
/*
 * Sends what is queued.  Returns 1 when the queue is empty, 0 when the
 * socket is full (wait for EV_WRITE), -1 on error (peer gone; errstr set).
 */
int	msg_flush(struct msg_chan *);
/*
 * Receives one message.  Returns 1 with *m filled (m->fd is ours to close),
 * 0 when nothing is pending, -1 on EOF or a socket error, -2 on a protocol
 * violation (unknown type, wrong length, fd where none is allowed or none
 * where one is required, a body its row's check refuses, truncated packet,
 * first message not a valid MSG_HELLO).  errstr says why.  m->rule is the
 * row the message passed.  MSG_HELLO itself is consumed by msg_recv and
 * reported as 1 with m->hdr.type == MSG_HELLO and m->rule NULL.
 * A type that requires an fd may come back as 1 with m->fd_lost set
 * (out of descriptors, not the peer's fault): the caller drops that one
 * connection, not the channel.
 */
int	msg_recv(struct msg_chan *, struct msg *m);
/*
 * Calls the handler of m's row with arg.  A message without one (MSG_HELLO,
 * a type whose row has no handler) is passed over and its fd closed.
 */
void	msg_handle(struct msg *m, void *arg);
/*
 * Blocks until a message of the given type arrives, as a worker waits for
 * its SETUP; the messages before it (MSG_HELLO) are passed over.  Exits,
 * naming who, when the channel fails.  Returns m->body.
 */
void	*msg_wait(struct msg_chan *, struct msg *m, uint32_t type,
	    const char *who);
/* Name of a type in chan's table, for logs. */
const char *msg_type_name(const struct msg_chan *, uint32_t type);

#endif
