/*
 * Copyright (c) 2026 The pyrelayd authors
 *
 * Permission to use, copy, modify, and distribute this software for any
 * purpose with or without fee is hereby granted, provided that the above
 * copyright notice and this permission notice appear in all copies.
 *
 * THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
 * WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF
 * MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR
 * ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
 * WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN
 * ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF
 * OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.
 */

#ifndef PYRELAYD_H
#define PYRELAYD_H

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The object of type whose member m is at p (a relay's watches and timers). */
#define CONTAINER_OF(p, type, m) \
	((type *)(void *)((char *)(p) - offsetof(type, m)))

#define PYRELAYD_CONF		"/etc/pyrelayd.conf"
#define PYRELAYD_CONTROL	"/run/pyrelayd.sock"

#define SERVER_ID_MAX		64	/* docs/protocol.md §2 */
#define DEVICE_NAME_MAX		128	/* longer names are truncated */
#define CONN_ID_MAX		(7 + SERVER_ID_MAX + 1 + 8)	/* client-<sid>-<8hex> */
#define WS_ACCEPT_LEN		28	/* base64 of a SHA-1 */
#define HEAD_MAX_LIMIT		16384	/* upper bound of "max header size" */
#define PREREAD_MAX		HEAD_MAX_LIMIT	/* bytes past the head handed on */

/* version.c: what /healthz, pyrelayctl and -V report */
extern const char	pyrelayd_version[];

enum proc_role {
	ROLE_PARENT = 0,
	ROLE_FRONT,
	ROLE_RELAY,
	ROLE_SPAWNER,		/* starts workers for the parent (docs/pool.md) */
	ROLE_PUSH,		/* sends FCM messages (docs/push.md) */
	ROLE_ZYGOTE,		/* forks relays, sandboxed (docs/pool.md) */
	ROLE_MAX
};

/* listener flags */
#define LISTEN_TLS		0x01
#define LISTEN_ACME		0x02
#define LISTEN_PROXY		0x04
#define LISTEN_METRICS		0x08
#define LISTEN_AGENT		0x10	/* HAProxy agent-check answers (drain) */
#define LISTEN_FLAGS		0x1f	/* every one of them */

struct listen_addr {
	TAILQ_ENTRY(listen_addr)	 entry;
	struct sockaddr_storage		 ss;	/* address with port set */
	socklen_t			 sslen;
	int				 flags;	/* LISTEN_* */
	int				 fd;	/* -1 until opened */
};
TAILQ_HEAD(listen_list, listen_addr);

/*
 * Numeric limits and timers.  This block is sent as is to every worker
 * (struct limits is part of MSG_SETUP / MSG_LIMITS), so it holds no pointers.
 * Durations are in milliseconds, sizes in bytes.
 */
struct limits {
	int64_t		grace_ms;		/* 30s */
	int64_t		rate_refill_ms;		/* 6s */
	int64_t		heartbeat_ms;		/* 30s */
	int64_t		heartbeat_timeout_ms;	/* 30s */
	int64_t		conflict_probe_ms;	/* 10s */
	int64_t		handshake_timeout_ms;	/* 5s */
	int64_t		write_timeout_ms;	/* 10s */
	int64_t		message_timeout_ms;	/* 30s, not configurable */
	int64_t		close_timeout_ms;	/* 5s, not configurable */
	uint64_t	message_size;		/* 256K */
	uint64_t	outbox;			/* 4M */
	uint64_t	grace_queue;		/* 1M */
	uint64_t	max_header_size;	/* 8K, at most HEAD_MAX_LIMIT */
	uint32_t	phones_per_server;	/* 16 */
	uint32_t	max_connections;	/* 10000 */
	uint32_t	max_connections_per_ip;	/* 256 */
	uint32_t	rate_burst;		/* 20 */
	uint32_t	ktls_off;		/* tls ktls no: always pump */
	uint32_t	fcm_configured;		/* push fcm credentials set */
	char		domain[256];		/* "" when unset */
};

/* push wake requests of one server-id (docs/protocol.md §6): a burst, then one a period */
#define PUSH_BURST		6
#define PUSH_REFILL_MS		10000
#define PUSH_TOKEN_MAX		512	/* bytes of a token, its NUL included (FCM: about 160) */
#define PUSH_IN_FLIGHT_MAX	32	/* in flight relay-wide (docs/protocol.md §6) */
#define PUSH_URL_MAX		512	/* push fcm endpoint, a key's token_uri */
#define PUSH_PROJECT_MAX	128	/* push fcm project, a key's project_id */
#define PUSH_DEFAULT_ENDPOINT	"https://fcm.googleapis.com"
#define PUSH_DEFAULT_CA		"/etc/ssl/certs/ca-certificates.crt"

#define RELAY_POOL_DEFAULT	16
#define RELAY_POOL_MAX		1024
#define MAX_RELAYS_DEFAULT	10000	/* relay processes of every kind */
/* a fresh relay zygote after this many relays or this long (docs/pool.md) */
#define ZYGOTE_RENEW_RELAYS_DEFAULT	10000
#define ZYGOTE_RENEW_MS_DEFAULT		(60 * 60 * 1000)
#define ZYGOTE_RENEW_RELAYS_MAX		100000000
#define MAX_RELAYS_LIMIT	1000000
#define PHONES_PER_SERVER_MAX	1024	/* the most "phones per server" allows */

struct config {
	char			 path[PATH_MAX];	/* file it came from, "" = built-in */
	char			 user[64];
	char			 chroot[PATH_MAX];
	int			 workers;		/* 0 = number of CPUs */
	int			 relay_pool;		/* idle relays kept started */
	uint32_t		 max_relays;		/* relay processes at most */
	uint32_t		 zygote_renew_relays;	/* relays one zygote forks */
	int64_t			 zygote_renew_ms;	/* a zygote's time at most */
	struct listen_list	 listeners;		/* listen on ... */
	struct listen_list	 metrics;		/* metrics on ... */
	struct listen_list	 agents;		/* agent on ... */
	char			 control_socket[PATH_MAX];
	char			 tls_cert[PATH_MAX];	/* "" when unset */
	char			 tls_key[PATH_MAX];
	char			 acme_webroot[PATH_MAX];
	char			 fcm_credentials[PATH_MAX];
	char			 fcm_project[PUSH_PROJECT_MAX];	/* "": the key's */
	char			 fcm_endpoint[PUSH_URL_MAX];	/* "": the default */
	char			 push_ca[PATH_MAX];		/* "": the system's */
	/* where the push statements are, for config_check_push() */
	int			 fcm_line, push_ca_line;
	struct limits		 lim;
};

/* config.c / parse.y */
struct config	*config_new_default(void);
void		 config_free(struct config *);
/*
 * Parses file into a new config.  Every error is reported on stderr (or
 * through log_warnx once logging is set up) as "file:line: message".
 * Returns NULL when the file has errors or cannot be read.
 * macros: "name=value" strings from -D, may be NULL/0.
 */
struct config	*config_parse(const char *file, char *const *macros, int nmacros);
/* -nv output; also used by the golden unit test */
void		 config_print(const struct config *, FILE *);
int		 listen_addr_print(const struct listen_addr *, char *, size_t);
int		 config_default_file_missing(const char *file);
/*
 * Reads the files the push statements name (the service-account key, the
 * CA bundle) and checks them; each error is reported like the parser's,
 * "file:line: message".  Returns 0, or -1 after reporting.
 */
int		 config_check_push(const struct config *);
/* Reports "file:line: message" where config_parse reports its errors. */
void		 config_error_at(const char *file, int line, const char *, ...)
		    __attribute__((__format__(printf, 3, 4)));
/*
 * Reads a file the configuration names into buf (room bytes at most):
 * a regular file, and for a secret (secret != 0) one that group and
 * others cannot access.  Errors name it: "<keyword> \"<path>\": why".
 */
int		 config_read_file(const char *keyword, const char *path,
		    int secret, unsigned char *buf, size_t room, size_t *len,
		    char *err, size_t errlen);
/* where config_parse reports "file:line: message" (NULL: stderr) */
extern void	(*config_error_hook)(const char *);
int		 config_fmt_duration(int64_t, char *, size_t);
int		 config_fmt_size(uint64_t, char *, size_t);

/* log.c */
void	log_init(int foreground, int verbose, const char *procname);
/* The zygote, once, for the relays it forks: lines are named procname. */
void	log_forked(const char *procname);
/*
 * A process forked without an exec (a relay, as it starts): its pid for
 * its lines, asked once.  log_init asks it in every other process.
 */
void	log_newpid(void);
/* This process's pid, as log_init or log_newpid asked it (or now). */
pid_t	log_getpid(void);
void	log_setverbose(int);
int	log_getverbose(void);
void	log_procname(const char *);
/* Text made safe inside a "quoted" log value ("->', controls->?); returns buf. */
const char *log_quotable(const char *text, char *buf, size_t size);
void	log_warn(const char *, ...) __attribute__((__format__(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((__format__(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((__format__(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((__format__(printf, 1, 2)));
void	fatal(const char *, ...) __attribute__((__format__(printf, 1, 2), __noreturn__));
/*
 * Set: fatal() and fatalx() hand it their message instead of logging it
 * and exiting (an upgrade's new image goes back to the program before).
 */
extern void	(*log_fatal_hook)(const char *);
void	fatalx(const char *, ...) __attribute__((__format__(printf, 1, 2), __noreturn__));

/* xmalloc.c */
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	 xrandom_buf(void *, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);

/* clock.c: CLOCK_MONOTONIC in ms */
int64_t	 now_ms(void);
/*
 * Blocks until fd is ready for events (POLLIN, POLLOUT; a hang-up or an
 * error counts as ready: the next read or write says which) or until the
 * deadline on now_ms()'s clock passes (-1: none).  Returns 1 when ready,
 * 0 at the deadline, -1 when poll fails (errno).
 */
int	 fd_wait(int fd, short events, int64_t deadline);

/* A duration in ms (below 0: none) as the timeval libevent's timers take. */
static inline struct timeval
ms_timeval(int64_t ms)
{
	struct timeval	tv;

	if (ms < 0)
		ms = 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	return tv;
}

#endif /* PYRELAYD_H */
