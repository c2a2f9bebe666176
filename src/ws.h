/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * RFC 6455, server side, over our own buffers: the frame codec (header
 * checks, unmasking in place, frame headers out), message reassembly with a
 * hard size bound, UTF-8 checks, control frames, the close handshake with
 * fixed reasons, and an output buffer whose cost is accounted per message.
 * docs/ws-codec.md says why this is not wslay any more.
 */
#ifndef WS_H
#define WS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WS_OP_CONT	0x0
#define WS_OP_TEXT	0x1
#define WS_OP_BINARY	0x2
#define WS_OP_CLOSE	0x8
#define WS_OP_PING	0x9
#define WS_OP_PONG	0xa

#define WS_MSG_OVERHEAD	64	/* docs/protocol.md §4: each queued message costs len + 64 */

/* Output: a linear buffer plus the stream offsets where messages end. */
struct ws_obuf {
	unsigned char	*buf;
	size_t		 off;		/* first unsent byte */
	size_t		 len;		/* end of data */
	size_t		 cap;
	uint64_t	 appended;	/* stream offset of buf[len] */
	uint64_t	*ends;		/* ring of message end offsets */
	size_t		 ends_head, ends_count, ends_cap;
};

struct ws {
	struct ws_obuf		 out;

	/* the data message being reassembled */
	unsigned char		*msg;
	size_t			 msglen, msgcap;
	int			 msgop;		/* 0 when none */
	uint64_t		 max_msg;

	/* the frame being received */
	unsigned char		 hdr[14];	/* a header split across reads */
	uint8_t			 hdrlen;
	int			 in_frame;	/* its header is decoded */
	uint8_t			 fop, ffin;
	unsigned char		 fmask[4];
	uint64_t		 flen, foff;
	unsigned char		 ctrl[125];

	int			 close_sent;
	int			 close_rcvd;
	uint16_t		 close_code_rcvd;	/* 1005 when the frame had none */
	int			 failed;		/* protocol error seen */
};

struct ws_handler {
	/* a complete data message; binary = 1 for opcode 2.  The bytes are
	 * the codec's (the fed buffer or its own) and may be changed in place. */
	void	(*message)(void *, int binary, unsigned char *, size_t);
	void	(*pong)(void *);
	/* the peer's close frame arrived; the echo is queued already when needed */
	void	(*close)(void *, uint16_t code);
	/* a data message began (its first frame header arrived) */
	void	(*message_start)(void *);
	/*
	 * Optional: a complete text message whose UTF-8 is not checked, for
	 * a handler that validates the bytes anyway (a JSON parser) and so
	 * need not have them read twice.  It returns -1, having acted on
	 * nothing, when they are not UTF-8: the codec then fails the
	 * connection 1007 as it would have itself.  Without it, text goes
	 * to message once checked.
	 */
	int	(*text)(void *, unsigned char *, size_t);
};

int	 ws_init(struct ws *, uint64_t max_msg);
/* Where the codec's buffers come from (default: realloc and free). */
void	 ws_set_allocator(void *(*)(void *, size_t), void (*)(void *));
void	 ws_free(struct ws *);
/*
 * Decodes bytes from the peer and calls the handler for what they hold.
 * Returns 0, or the close code when the peer broke the protocol (a close
 * frame with that code and a fixed reason is queued; stop reading).
 * Data messages that arrive after we sent a close are discarded.
 * The bytes are unmasked in place: a message that lies whole in them is
 * handed to the handler where it is, without a copy.
 */
int	 ws_feed(struct ws *, unsigned char *, size_t,
	    const struct ws_handler *, void *arg);

/* Queue one unfragmented text frame whose payload is the concatenation of
 * up to three pieces (NULL/0 pieces are skipped).  -1 after close. */
int	 ws_send_text(struct ws *, const void *, size_t, const void *, size_t,
	    const void *, size_t);
int	 ws_send_ping(struct ws *);
/* Queue raw bytes (the 101 response) ahead of any frame. */
int	 ws_send_raw(struct ws *, const void *, size_t);
/* Queue a close frame (code 0: empty payload); only the first one counts. */
int	 ws_send_close(struct ws *, uint16_t code, const char *reason);

/* Bytes waiting to be written, and their cost (len + 64 per message). */
size_t	 ws_pending(const struct ws *);
size_t	 ws_cost(const struct ws *);
/*
 * Writes what is pending to fd.  Returns bytes written (0 if nothing could
 * be written), or -1 on a socket error (errno set).
 */
ssize_t	 ws_write(struct ws *, int fd);

/* A complete server->client close frame (for verdicts written by a front). */
size_t	 ws_close_frame(unsigned char *out, size_t outsz, uint16_t code,
	    const char *reason);
/* 1 when a code may be sent in a close frame (RFC 6455 §7.4). */
int	 ws_code_sendable(int code);
/* XORs len bytes with the 4-byte key, starting at key offset koff (0-3). */
void	 ws_unmask(unsigned char *, size_t, const unsigned char key[4],
	    size_t koff);

#endif
