/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The configuration outside the parser: the built-in defaults
 * (docs/protocol.md §10), the canonical printer behind -nv, and the check
 * of the files the push statements name.  What config_print() writes is
 * itself a pyrelayd.conf that parses back to the same configuration.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push.h"
#include "pyrelayd.h"

/* also used by parse.y for its error messages */
int	config_fmt_duration(int64_t, char *, size_t);
int	config_fmt_size(uint64_t, char *, size_t);

#define DEFAULT_PORT		8080
#define DEFAULT_METRICS_PORT	9090

static struct listen_addr *
listen_addr_loopback(in_port_t port, int flags)
{
	struct listen_addr	*la;
	struct sockaddr_in	*sin;

	la = xcalloc(1, sizeof(*la));
	sin = (struct sockaddr_in *)&la->ss;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	la->sslen = sizeof(*sin);
	la->flags = flags;
	la->fd = -1;
	return la;
}

struct config *
config_new_default(void)
{
	struct config		*conf;
	struct limits		*lim;
	struct listen_addr	*la;

	/* calloc: struct limits goes to the workers as is, padding included */
	conf = xcalloc(1, sizeof(*conf));
	TAILQ_INIT(&conf->listeners);
	TAILQ_INIT(&conf->metrics);
	TAILQ_INIT(&conf->agents);
	strlcpy(conf->user, PYRELAYD_USER, sizeof(conf->user));
	strlcpy(conf->chroot, PYRELAYD_CHROOT, sizeof(conf->chroot));
	strlcpy(conf->control_socket, PYRELAYD_CONTROL,
	    sizeof(conf->control_socket));
	conf->workers = 0;
	conf->relay_pool = RELAY_POOL_DEFAULT;
	conf->max_relays = MAX_RELAYS_DEFAULT;
	conf->zygote_renew_relays = ZYGOTE_RENEW_RELAYS_DEFAULT;
	conf->zygote_renew_ms = ZYGOTE_RENEW_MS_DEFAULT;

	lim = &conf->lim;
	lim->grace_ms = 30 * 1000;
	lim->rate_refill_ms = 6 * 1000;
	lim->heartbeat_ms = 30 * 1000;
	lim->heartbeat_timeout_ms = 30 * 1000;
	lim->conflict_probe_ms = 10 * 1000;
	lim->handshake_timeout_ms = 5 * 1000;
	lim->write_timeout_ms = 10 * 1000;
	lim->message_timeout_ms = 30 * 1000;
	lim->close_timeout_ms = 5 * 1000;
	lim->message_size = 256 * 1024;
	lim->outbox = 4 * 1024 * 1024;
	lim->grace_queue = 1024 * 1024;
	lim->max_header_size = 8 * 1024;
	lim->phones_per_server = 16;
	lim->max_connections = 10000;
	lim->max_connections_per_ip = 256;
	lim->rate_burst = 20;

	/* docs/protocol.md §10: what runs when /etc/pyrelayd.conf is missing */
	la = listen_addr_loopback(DEFAULT_PORT, 0);
	TAILQ_INSERT_TAIL(&conf->listeners, la, entry);
	la = listen_addr_loopback(DEFAULT_METRICS_PORT, LISTEN_METRICS);
	TAILQ_INSERT_TAIL(&conf->metrics, la, entry);
	return conf;
}

static void
listen_list_free(struct listen_list *list)
{
	struct listen_addr	*la;

	while ((la = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, la, entry);
		free(la);
	}
}

void
config_free(struct config *conf)
{
	if (conf == NULL)
		return;
	listen_list_free(&conf->listeners);
	listen_list_free(&conf->metrics);
	listen_list_free(&conf->agents);
	free(conf);
}

/*
 * "127.0.0.1 port 8080", "::1 port 443".  Returns the length written,
 * or -1 for an unknown family or a buffer that is too small.
 */
int
listen_addr_print(const struct listen_addr *la, char *buf, size_t len)
{
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;
	char				 host[INET6_ADDRSTRLEN];
	const void			*addr;
	in_port_t			 port;
	int				 n;

	switch (la->ss.ss_family) {
	case AF_INET:
		sin = (const struct sockaddr_in *)&la->ss;
		addr = &sin->sin_addr;
		port = sin->sin_port;
		break;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)&la->ss;
		addr = &sin6->sin6_addr;
		port = sin6->sin6_port;
		break;
	default:
		return -1;
	}
	if (inet_ntop(la->ss.ss_family, addr, host, sizeof(host)) == NULL)
		return -1;
	n = snprintf(buf, len, "%s port %u", host, (unsigned)ntohs(port));
	if (n < 0 || (size_t)n >= len)
		return -1;
	return n;
}

/* In the largest unit that is exact: 30s, 250ms, 5m, 0s. */
int
config_fmt_duration(int64_t ms, char *buf, size_t len)
{
	if (ms != 0 && ms % (60 * 1000) == 0)
		return snprintf(buf, len, "%lldm", (long long)(ms / 60000));
	if (ms % 1000 == 0)
		return snprintf(buf, len, "%llds", (long long)(ms / 1000));
	return snprintf(buf, len, "%lldms", (long long)ms);
}

/* In the largest unit that is exact: 4M, 256K, 1000, 0. */
int
config_fmt_size(uint64_t n, char *buf, size_t len)
{
	if (n != 0 && n % (1024 * 1024) == 0)
		return snprintf(buf, len, "%lluM",
		    (unsigned long long)(n / (1024 * 1024)));
	if (n != 0 && n % 1024 == 0)
		return snprintf(buf, len, "%lluK",
		    (unsigned long long)(n / 1024));
	return snprintf(buf, len, "%llu", (unsigned long long)n);
}

/* A quoted string as the lexer reads it back: \" and \\ escaped. */
static void
print_string(FILE *fp, const char *s)
{
	fputc('"', fp);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', fp);
		fputc(*s, fp);
	}
	fputc('"', fp);
}

static void
print_listeners(FILE *fp, const char *keyword, const struct listen_list *list)
{
	const struct listen_addr	*la;
	char				 name[128];

	TAILQ_FOREACH(la, list, entry) {
		if (listen_addr_print(la, name, sizeof(name)) == -1)
			continue;
		fprintf(fp, "%s on %s", keyword, name);
		if (la->flags & LISTEN_TLS)
			fputs(" tls", fp);
		if (la->flags & LISTEN_ACME)
			fputs(" acme", fp);
		if (la->flags & LISTEN_PROXY)
			fputs(" proxy-protocol", fp);
		fputc('\n', fp);
	}
}

static void
print_quoted(FILE *fp, const char *keyword, const char *value)
{
	fprintf(fp, "%s ", keyword);
	print_string(fp, value);
	fputc('\n', fp);
}

static void
print_duration(FILE *fp, const char *keyword, int64_t ms)
{
	char	buf[32];

	config_fmt_duration(ms, buf, sizeof(buf));
	fprintf(fp, "%s %s\n", keyword, buf);
}

static void
print_size(FILE *fp, const char *keyword, uint64_t n)
{
	char	buf[32];

	config_fmt_size(n, buf, sizeof(buf));
	fprintf(fp, "%s %s\n", keyword, buf);
}

/*
 * The -nv output: one statement per line in a fixed order, every
 * value spelled out; settings that are unset are left out.
 */
void
config_print(const struct config *conf, FILE *fp)
{
	const struct limits	*lim = &conf->lim;
	char			 a[32], b[32];

	print_quoted(fp, "user", conf->user);
	print_quoted(fp, "chroot", conf->chroot);
	if (conf->workers > 0)
		fprintf(fp, "workers %d\n", conf->workers);
	else
		fputs("# workers: one per CPU\n", fp);
	print_listeners(fp, "listen", &conf->listeners);
	print_listeners(fp, "metrics", &conf->metrics);
	print_listeners(fp, "agent", &conf->agents);
	print_quoted(fp, "control socket", conf->control_socket);
	if (lim->domain[0] != '\0')
		print_quoted(fp, "domain", lim->domain);
	if (conf->tls_cert[0] != '\0') {
		fputs("tls certificate ", fp);
		print_string(fp, conf->tls_cert);
		fputs(" key ", fp);
		print_string(fp, conf->tls_key);
		fputc('\n', fp);
	}
	if (lim->ktls_off)
		fputs("tls ktls no\n", fp);
	if (conf->acme_webroot[0] != '\0')
		print_quoted(fp, "acme webroot", conf->acme_webroot);
	fprintf(fp, "relay pool %d\n", conf->relay_pool);
	fprintf(fp, "max relays %u\n", conf->max_relays);
	fprintf(fp, "relay zygote renew %u relays\n", conf->zygote_renew_relays);
	print_duration(fp, "relay zygote renew", conf->zygote_renew_ms);
	print_duration(fp, "grace", lim->grace_ms);
	fprintf(fp, "phones per server %u\n", lim->phones_per_server);
	fprintf(fp, "max connections %u\n", lim->max_connections);
	fprintf(fp, "max connections per ip %u\n", lim->max_connections_per_ip);
	config_fmt_duration(lim->rate_refill_ms, a, sizeof(a));
	fprintf(fp, "rate limit burst %u refill %s\n", lim->rate_burst, a);
	print_size(fp, "message size", lim->message_size);
	print_size(fp, "outbox", lim->outbox);
	print_size(fp, "grace queue", lim->grace_queue);
	config_fmt_duration(lim->heartbeat_ms, a, sizeof(a));
	config_fmt_duration(lim->heartbeat_timeout_ms, b, sizeof(b));
	fprintf(fp, "heartbeat %s timeout %s\n", a, b);
	print_duration(fp, "conflict probe", lim->conflict_probe_ms);
	print_duration(fp, "handshake timeout", lim->handshake_timeout_ms);
	print_size(fp, "max header size", lim->max_header_size);
	print_duration(fp, "write timeout", lim->write_timeout_ms);
	if (conf->fcm_credentials[0] != '\0')
		print_quoted(fp, "push fcm credentials", conf->fcm_credentials);
	if (conf->fcm_project[0] != '\0')
		print_quoted(fp, "push fcm project", conf->fcm_project);
	if (conf->fcm_endpoint[0] != '\0')
		print_quoted(fp, "push fcm endpoint", conf->fcm_endpoint);
	if (conf->push_ca[0] != '\0')
		print_quoted(fp, "push ca", conf->push_ca);
}

/*
 * The push statements' files, read as the parent will read them for each
 * push process: the key (push_key.c) and the CA bundle.
 */
int
config_check_push(const struct config *conf)
{
	struct push_key	*key;
	char		 err[PATH_MAX + 256];
	int		 rv = 0;

	if (conf->fcm_credentials[0] == '\0')
		return 0;
	key = xmalloc(sizeof(*key));
	if (push_key_load(conf->fcm_credentials, key, err, sizeof(err)) == -1) {
		config_error_at(conf->path, conf->fcm_line, "%s", err);
		rv = -1;
	} else if (conf->fcm_project[0] == '\0' &&
	    !push_project_valid(key->project_id)) {
		config_error_at(conf->path, conf->fcm_line, "push fcm "
		    "credentials \"%s\": no usable \"project_id\" in it; set "
		    "\"push fcm project\"", conf->fcm_credentials);
		rv = -1;
	}
	freezero(key, sizeof(*key));
	if (push_ca_check(conf->push_ca[0] != '\0' ? conf->push_ca :
	    PUSH_DEFAULT_CA, err, sizeof(err)) == -1) {
		config_error_at(conf->path, conf->push_ca[0] != '\0' ?
		    conf->push_ca_line : conf->fcm_line, "%s", err);
		rv = -1;
	}
	return rv;
}
