/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of the configuration: built-in defaults, every keyword,
 * every error message (exactly, with its file:line), macros and -D,
 * the -nv output against golden files, print -> parse round trips, and
 * the shipped etc/pyrelayd.conf.
 *
 * Data: $UNIT_DATA/config (UNIT_DATA is tests/unit/data), the shipped
 * example: $TOP_SRCDIR/etc/pyrelayd.conf.  Without the variables the
 * paths are taken relative to the current directory.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pyrelayd.h"
#include "unit.h"

/* parse.y: where error messages go (NULL: stderr) */

static char	errors[65536];		/* messages of the last parse */
/* half of PATH_MAX: a file name still fits after them */
static char	datadir[PATH_MAX / 2];	/* .../tests/unit/data/config */
static char	topdir[PATH_MAX / 2];

static void
capture(const char *msg)
{
	strlcat(errors, msg, sizeof(errors));
	strlcat(errors, "\n", sizeof(errors));
}

static void
data_path(char *buf, size_t len, const char *name)
{
	int	n;

	n = snprintf(buf, len, "%s/%s", datadir, name);
	if (n < 0 || (size_t)n >= len) {
		fprintf(stderr, "data_path: %s/%s: too long\n", datadir, name);
		exit(1);
	}
}

static char *
read_all(const char *path)
{
	FILE	*fp;
	char	*buf;
	long	 len;

	if ((fp = fopen(path, "r")) == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return NULL;
	}
	fseek(fp, 0, SEEK_END);
	len = ftell(fp);
	rewind(fp);
	buf = xcalloc(1, len + 1);
	if (len > 0 && fread(buf, 1, len, fp) != (size_t)len) {
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	return buf;
}

/* Writes text to a fresh temporary file; path receives its name. */
static int
write_temp(const char *text, char *path, size_t len)
{
	const char	*tmp;
	int		 fd;
	size_t		 n;

	if ((tmp = getenv("TMPDIR")) == NULL || *tmp == '\0')
		tmp = "/tmp";
	snprintf(path, len, "%s/test_config.XXXXXX", tmp);
	if ((fd = mkstemp(path)) == -1)
		return -1;
	n = strlen(text);
	if (write(fd, text, n) != (ssize_t)n) {
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

static struct config *
parse_file(const char *path, char *const *macros, int n)
{
	errors[0] = '\0';
	return config_parse(path, macros, n);
}

static struct config *
parse_text(const char *text, char *path, size_t len, char *const *macros,
    int n)
{
	struct config	*conf;

	errors[0] = '\0';
	if (write_temp(text, path, len) == -1) {
		CU_FAIL("cannot write a temporary file");
		return NULL;
	}
	conf = config_parse(path, macros, n);
	unlink(path);
	return conf;
}

/*
 * expected: "line: message" lines; each becomes "path:line: message".
 * Returns 1 when the captured messages are exactly those.
 */
static int
errors_match(const char *path, const char *expected)
{
	char		 want[sizeof(errors)];
	const char	*p, *nl;
	size_t		 len;

	want[0] = '\0';
	for (p = expected; *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			nl = p + strlen(p);
		len = strlen(want);
		snprintf(want + len, sizeof(want) - len, "%s:%.*s\n", path,
		    (int)(nl - p), p);
		if (*nl == '\0')
			break;
	}
	if (strcmp(want, errors) == 0)
		return 1;
	fprintf(stderr, "\n--- expected\n%s--- got\n%s---\n", want, errors);
	return 0;
}

static int
expect_errors(const char *text, const char *expected)
{
	struct config	*conf;
	char		 path[PATH_MAX];
	int		 ok;

	conf = parse_text(text, path, sizeof(path), NULL, 0);
	ok = conf == NULL && errors_match(path, expected);
	if (conf != NULL)
		fprintf(stderr, "\n--- parsed, but should not have:\n%s", text);
	config_free(conf);
	return ok;
}

static int
list_equal(const struct listen_list *a, const struct listen_list *b)
{
	const struct listen_addr	*x, *y;

	for (x = TAILQ_FIRST(a), y = TAILQ_FIRST(b); x != NULL && y != NULL;
	    x = TAILQ_NEXT(x, entry), y = TAILQ_NEXT(y, entry)) {
		if (x->sslen != y->sslen || x->flags != y->flags ||
		    x->fd != y->fd || memcmp(&x->ss, &y->ss, x->sslen) != 0)
			return 0;
	}
	return x == NULL && y == NULL;
}

/* Everything but the path the configuration came from. */
static int
config_equal(const struct config *a, const struct config *b)
{
	return strcmp(a->user, b->user) == 0 &&
	    strcmp(a->chroot, b->chroot) == 0 &&
	    a->workers == b->workers &&
	    list_equal(&a->listeners, &b->listeners) &&
	    list_equal(&a->metrics, &b->metrics) &&
	    strcmp(a->control_socket, b->control_socket) == 0 &&
	    strcmp(a->tls_cert, b->tls_cert) == 0 &&
	    strcmp(a->tls_key, b->tls_key) == 0 &&
	    strcmp(a->acme_webroot, b->acme_webroot) == 0 &&
	    strcmp(a->fcm_credentials, b->fcm_credentials) == 0 &&
	    memcmp(&a->lim, &b->lim, sizeof(a->lim)) == 0;
}

static char *
print_to_string(const struct config *conf)
{
	char	*buf = NULL;
	size_t	 len = 0;
	FILE	*fp;

	if ((fp = open_memstream(&buf, &len)) == NULL)
		return NULL;
	config_print(conf, fp);
	fclose(fp);
	return buf;
}

static char *
replace_all(const char *s, const char *from, const char *to)
{
	char		*out;
	const char	*p;
	size_t		 n = 0, len;

	for (p = s; (p = strstr(p, from)) != NULL; p += strlen(from))
		n++;
	len = strlen(s) + n * strlen(to) + 1;
	out = xcalloc(1, len);
	while ((p = strstr(s, from)) != NULL) {
		n = strlen(out);
		snprintf(out + n, len - n, "%.*s%s", (int)(p - s), s, to);
		s = p + strlen(from);
	}
	strlcat(out, s, len);
	return out;
}

/*
 * The golden files may say @PYRELAYD_USER@ and @PYRELAYD_CHROOT@ for
 * the defaults that configure chooses.
 */
static int
golden_match(const struct config *conf, const char *golden)
{
	char	 path[PATH_MAX];
	char	*raw, *tmp, *want, *got;
	int	 ok;

	data_path(path, sizeof(path), golden);
	if ((raw = read_all(path)) == NULL)
		return 0;
	tmp = replace_all(raw, "@PYRELAYD_USER@", PYRELAYD_USER);
	want = replace_all(tmp, "@PYRELAYD_CHROOT@", PYRELAYD_CHROOT);
	got = print_to_string(conf);
	ok = got != NULL && strcmp(want, got) == 0;
	if (!ok)
		fprintf(stderr, "\n--- %s\n%s--- got\n%s---\n", golden, want,
		    got != NULL ? got : "(null)\n");
	free(raw);
	free(tmp);
	free(want);
	free(got);
	return ok;
}

static const char *
addr_of(const struct listen_addr *la, char *buf, size_t len)
{
	if (listen_addr_print(la, buf, len) == -1)
		return "(error)";
	return buf;
}

/* la is a listener on addr ("127.0.0.1 port 8080") with flags, not open. */
static void
check_listener(const struct listen_addr *la, const char *addr, int flags)
{
	char	buf[128];

	CU_ASSERT_PTR_NOT_NULL_FATAL(la);
	CU_ASSERT_STRING_EQUAL(addr_of(la, buf, sizeof(buf)), addr);
	CU_ASSERT_EQUAL(la->flags, flags);
	CU_ASSERT_EQUAL(la->fd, -1);
}

/* --- defaults ------------------------------------------------------------ */

static void
test_defaults(void)
{
	struct config		*conf;
	struct listen_addr	*la;

	conf = config_new_default();
	CU_ASSERT_STRING_EQUAL(conf->path, "");
	CU_ASSERT_STRING_EQUAL(conf->user, PYRELAYD_USER);
	CU_ASSERT_STRING_EQUAL(conf->chroot, PYRELAYD_CHROOT);
	CU_ASSERT_EQUAL(conf->workers, 0);
	CU_ASSERT_EQUAL(conf->relay_pool, 16);
	CU_ASSERT_STRING_EQUAL(conf->control_socket, PYRELAYD_CONTROL);
	CU_ASSERT_STRING_EQUAL(conf->tls_cert, "");
	CU_ASSERT_STRING_EQUAL(conf->tls_key, "");
	CU_ASSERT_STRING_EQUAL(conf->acme_webroot, "");
	CU_ASSERT_STRING_EQUAL(conf->fcm_credentials, "");
	CU_ASSERT_EQUAL(conf->lim.grace_ms, 30000);
	CU_ASSERT_EQUAL(conf->lim.rate_refill_ms, 6000);
	CU_ASSERT_EQUAL(conf->lim.heartbeat_ms, 30000);
	CU_ASSERT_EQUAL(conf->lim.heartbeat_timeout_ms, 30000);
	CU_ASSERT_EQUAL(conf->lim.conflict_probe_ms, 10000);
	CU_ASSERT_EQUAL(conf->lim.handshake_timeout_ms, 5000);
	CU_ASSERT_EQUAL(conf->lim.write_timeout_ms, 10000);
	CU_ASSERT_EQUAL(conf->lim.message_timeout_ms, 30000);
	CU_ASSERT_EQUAL(conf->lim.close_timeout_ms, 5000);
	CU_ASSERT_EQUAL(conf->lim.message_size, 262144);
	CU_ASSERT_EQUAL(conf->lim.outbox, 4 * 1024 * 1024);
	CU_ASSERT_EQUAL(conf->lim.grace_queue, 1024 * 1024);
	CU_ASSERT_EQUAL(conf->lim.max_header_size, 8192);
	CU_ASSERT_EQUAL(conf->lim.phones_per_server, 16);
	CU_ASSERT_EQUAL(conf->lim.max_connections, 10000);
	CU_ASSERT_EQUAL(conf->lim.max_connections_per_ip, 256);
	CU_ASSERT_EQUAL(conf->lim.rate_burst, 20);
	CU_ASSERT_STRING_EQUAL(conf->lim.domain, "");

	la = TAILQ_FIRST(&conf->listeners);
	check_listener(la, "127.0.0.1 port 8080", 0);
	CU_ASSERT_EQUAL(la->sslen, sizeof(struct sockaddr_in));
	CU_ASSERT_PTR_NULL(TAILQ_NEXT(la, entry));
	la = TAILQ_FIRST(&conf->metrics);
	check_listener(la, "127.0.0.1 port 9090", LISTEN_METRICS);
	CU_ASSERT_PTR_NULL(TAILQ_NEXT(la, entry));
	config_free(conf);
}

static void
test_default_file_missing(void)
{
	CU_ASSERT_EQUAL(config_default_file_missing("/nonexistent/x.conf"), 0);
	CU_ASSERT_EQUAL(config_default_file_missing(PYRELAYD_CONF),
	    access(PYRELAYD_CONF, F_OK) == -1);
}

static void
test_listen_addr_print(void)
{
	struct listen_addr	 la;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&la.ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&la.ss;
	char			 buf[64];

	memset(&la, 0, sizeof(la));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(8080);
	inet_pton(AF_INET, "127.0.0.1", &sin->sin_addr);
	CU_ASSERT_EQUAL(listen_addr_print(&la, buf, sizeof(buf)), 19);
	CU_ASSERT_STRING_EQUAL(buf, "127.0.0.1 port 8080");
	CU_ASSERT_EQUAL(listen_addr_print(&la, buf, 19), -1);

	memset(&la, 0, sizeof(la));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(443);
	inet_pton(AF_INET6, "::1", &sin6->sin6_addr);
	CU_ASSERT(listen_addr_print(&la, buf, sizeof(buf)) > 0);
	CU_ASSERT_STRING_EQUAL(buf, "::1 port 443");

	la.ss.ss_family = AF_UNIX;
	CU_ASSERT_EQUAL(listen_addr_print(&la, buf, sizeof(buf)), -1);
}

/* --- keywords ------------------------------------------------------------- */

static void
test_every_keyword(void)
{
	struct config		*conf;
	struct listen_addr	*la;
	char			 path[PATH_MAX];

	data_path(path, sizeof(path), "full.conf");
	conf = parse_file(path, NULL, 0);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_STRING_EQUAL(conf->path, path);
	CU_ASSERT_STRING_EQUAL(conf->user, "_relay");
	CU_ASSERT_STRING_EQUAL(conf->chroot, "/var/empty");
	CU_ASSERT_EQUAL(conf->workers, 4);
	CU_ASSERT_EQUAL(conf->relay_pool, 4);
	CU_ASSERT_STRING_EQUAL(conf->control_socket,
	    "/run/pyrelayd/control.sock");
	CU_ASSERT_STRING_EQUAL(conf->lim.domain, "relay.example.com");
	CU_ASSERT_STRING_EQUAL(conf->tls_cert, "/etc/ssl/relay.pem");
	CU_ASSERT_STRING_EQUAL(conf->tls_key, "/etc/ssl/private/relay.key");
	CU_ASSERT_STRING_EQUAL(conf->acme_webroot, "/var/lib/pyrelayd/acme");
	CU_ASSERT_STRING_EQUAL(conf->fcm_credentials, "/etc/pyrelayd/fcm.json");
	CU_ASSERT_EQUAL(conf->lim.grace_ms, 120000);
	CU_ASSERT_EQUAL(conf->lim.phones_per_server, 32);
	CU_ASSERT_EQUAL(conf->lim.max_connections, 5000);
	CU_ASSERT_EQUAL(conf->lim.max_connections_per_ip, 64);
	CU_ASSERT_EQUAL(conf->lim.rate_burst, 40);
	CU_ASSERT_EQUAL(conf->lim.rate_refill_ms, 500);
	CU_ASSERT_EQUAL(conf->lim.message_size, 1048576);
	CU_ASSERT_EQUAL(conf->lim.outbox, 8 * 1024 * 1024);
	CU_ASSERT_EQUAL(conf->lim.grace_queue, 2 * 1024 * 1024);
	CU_ASSERT_EQUAL(conf->lim.heartbeat_ms, 15000);
	CU_ASSERT_EQUAL(conf->lim.heartbeat_timeout_ms, 20000);
	CU_ASSERT_EQUAL(conf->lim.conflict_probe_ms, 60000);
	CU_ASSERT_EQUAL(conf->lim.handshake_timeout_ms, 3000);
	CU_ASSERT_EQUAL(conf->lim.max_header_size, 12288);
	CU_ASSERT_EQUAL(conf->lim.write_timeout_ms, 2500);
	/* not configurable */
	CU_ASSERT_EQUAL(conf->lim.message_timeout_ms, 30000);
	CU_ASSERT_EQUAL(conf->lim.close_timeout_ms, 5000);

	la = TAILQ_FIRST(&conf->listeners);
	check_listener(la, "127.0.0.1 port 8443", LISTEN_PROXY);
	CU_ASSERT_EQUAL(la->sslen, sizeof(struct sockaddr_in));
	la = TAILQ_NEXT(la, entry);
	check_listener(la, "0.0.0.0 port 80", LISTEN_ACME);
	la = TAILQ_NEXT(la, entry);
	check_listener(la, ":: port 443", LISTEN_TLS | LISTEN_PROXY);
	CU_ASSERT_EQUAL(la->ss.ss_family, AF_INET6);
	CU_ASSERT_EQUAL(la->sslen, sizeof(struct sockaddr_in6));
	la = TAILQ_NEXT(la, entry);
	check_listener(la, "2001:db8::1 port 8080", 0);
	CU_ASSERT_PTR_NULL(TAILQ_NEXT(la, entry));

	la = TAILQ_FIRST(&conf->metrics);
	check_listener(la, "::1 port 9191", LISTEN_METRICS);
	la = TAILQ_NEXT(la, entry);
	check_listener(la, "127.0.0.2 port 9090", LISTEN_METRICS);
	CU_ASSERT_PTR_NULL(TAILQ_NEXT(la, entry));

	/* any address: the balancer asking is on another machine */
	la = TAILQ_FIRST(&conf->agents);
	check_listener(la, "10.0.0.11 port 9091", LISTEN_AGENT);
	CU_ASSERT_PTR_NULL(TAILQ_NEXT(la, entry));
	config_free(conf);
}

static void
test_limits_at_bounds(void)
{
	struct config	*conf;
	char		 path[PATH_MAX];

	conf = parse_text(
	    "workers 64\n"
	    "relay pool 1024\n"
	    "max relays 1000000\n"
	    "relay zygote renew 100000000 relays\n"
	    "relay zygote renew 1440m\n"
	    "phones per server 1024\n"
	    "max connections 1000000\n"
	    "max connections per ip 1000000\n"
	    "rate limit burst 100000 refill 1440m\n"
	    "message size 16M\n"
	    "outbox 1024M\n"
	    "grace queue 0\n"
	    "grace 0s\n"
	    "heartbeat 100ms timeout 1440m\n"
	    "conflict probe 100ms\n"
	    "handshake timeout 86400s\n"
	    "max header size 16K\n"
	    "write timeout 60m\n",
	    path, sizeof(path), NULL, 0);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_EQUAL(conf->workers, 64);
	CU_ASSERT_EQUAL(conf->relay_pool, 1024);
	CU_ASSERT_EQUAL(conf->max_relays, 1000000);
	CU_ASSERT_EQUAL(conf->zygote_renew_relays, 100000000);
	CU_ASSERT_EQUAL(conf->zygote_renew_ms, 86400000);
	CU_ASSERT_EQUAL(conf->lim.phones_per_server, 1024);
	CU_ASSERT_EQUAL(conf->lim.max_connections, 1000000);
	CU_ASSERT_EQUAL(conf->lim.max_connections_per_ip, 1000000);
	CU_ASSERT_EQUAL(conf->lim.rate_burst, 100000);
	CU_ASSERT_EQUAL(conf->lim.rate_refill_ms, 86400000);
	CU_ASSERT_EQUAL(conf->lim.message_size, 16 * 1024 * 1024);
	CU_ASSERT_EQUAL(conf->lim.outbox, 1024ULL * 1024 * 1024);
	CU_ASSERT_EQUAL(conf->lim.grace_queue, 0);
	CU_ASSERT_EQUAL(conf->lim.grace_ms, 0);
	CU_ASSERT_EQUAL(conf->lim.heartbeat_ms, 100);
	CU_ASSERT_EQUAL(conf->lim.heartbeat_timeout_ms, 86400000);
	CU_ASSERT_EQUAL(conf->lim.conflict_probe_ms, 100);
	CU_ASSERT_EQUAL(conf->lim.handshake_timeout_ms, 86400000);
	CU_ASSERT_EQUAL(conf->lim.max_header_size, HEAD_MAX_LIMIT);
	CU_ASSERT_EQUAL(conf->lim.write_timeout_ms, 3600000);
	config_free(conf);

	conf = parse_text(
	    "workers 1\n"
	    "relay pool 0\n"
	    "max relays 1\n"
	    "relay zygote renew 1 relays\n"
	    "relay zygote renew 1s\n"
	    "phones per server 1\n"
	    "max connections 1\n"
	    "max connections per ip 1\n"
	    "rate limit burst 1 refill 100ms\n"
	    "message size 1K\n"
	    "outbox 64K\n"
	    "grace queue 64M\n"
	    "grace 1440m\n"
	    "max header size 1024\n"
	    "write timeout 100ms\n",
	    path, sizeof(path), NULL, 0);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_EQUAL(conf->relay_pool, 0);
	CU_ASSERT_EQUAL(conf->max_relays, 1);
	CU_ASSERT_EQUAL(conf->zygote_renew_relays, 1);
	CU_ASSERT_EQUAL(conf->zygote_renew_ms, 1000);
	CU_ASSERT_EQUAL(conf->lim.message_size, 1024);
	CU_ASSERT_EQUAL(conf->lim.outbox, 65536);
	CU_ASSERT_EQUAL(conf->lim.grace_queue, 64 * 1024 * 1024);
	CU_ASSERT_EQUAL(conf->lim.grace_ms, 86400000);
	CU_ASSERT_EQUAL(conf->lim.max_header_size, 1024);
	CU_ASSERT_EQUAL(conf->lim.write_timeout_ms, 100);
	config_free(conf);
}

static void
test_no_listener(void)
{
	struct config	*conf;
	char		 path[PATH_MAX];

	/* a file without "listen on" has no listener: the daemon says so */
	conf = parse_text("workers 2\n", path, sizeof(path), NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT(TAILQ_EMPTY(&conf->listeners));
	CU_ASSERT(TAILQ_EMPTY(&conf->metrics));
	config_free(conf);

	/* an empty file is a valid file */
	conf = parse_text("", path, sizeof(path), NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT(TAILQ_EMPTY(&conf->listeners));
	config_free(conf);

	/* "listen on" without "metrics on": no metrics listener */
	conf = parse_text("listen on ::1 port 8080\n", path, sizeof(path),
	    NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT(!TAILQ_EMPTY(&conf->listeners));
	CU_ASSERT(TAILQ_EMPTY(&conf->metrics));
	config_free(conf);
}

static void
test_lexical(void)
{
	struct config	*conf;
	char		 path[PATH_MAX];

	/* no final newline, comments, blank lines, CRLF, continuation */
	conf = parse_text(
	    "\n# comment\n   \n"
	    "heartbeat 10s \\\n    timeout 5s   # trailing comment\n"
	    "user \"a \\\"quoted\\\" \\\\ name\"\r\n"
	    "workers 3", path, sizeof(path), NULL, 0);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_EQUAL(conf->lim.heartbeat_ms, 10000);
	CU_ASSERT_EQUAL(conf->lim.heartbeat_timeout_ms, 5000);
	CU_ASSERT_STRING_EQUAL(conf->user, "a \"quoted\" \\ name");
	CU_ASSERT_EQUAL(conf->workers, 3);
	config_free(conf);

	/* quoted words are never keywords */
	conf = parse_text("user \"tls\"\n", path, sizeof(path), NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_STRING_EQUAL(conf->user, "tls");
	config_free(conf);

	/* without max connections per ip, it follows a small max connections */
	conf = parse_text("max connections 100\n", path, sizeof(path), NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_EQUAL(conf->lim.max_connections_per_ip, 100);
	config_free(conf);

	/* a larger per-address cap is accepted; the global one bounds it */
	conf = parse_text("max connections per ip 20000\n", path, sizeof(path),
	    NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_EQUAL(conf->lim.max_connections, 10000);
	CU_ASSERT_EQUAL(conf->lim.max_connections_per_ip, 10000);
	config_free(conf);
	conf = parse_text("max connections 10\n# whichever comes first\n"
	    "max connections per ip 11\n", path, sizeof(path), NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_EQUAL(conf->lim.max_connections_per_ip, 10);
	config_free(conf);
}

/* --- errors -------------------------------------------------------------- */

static const struct bad_case {
	const char	*text;
	const char	*errors;	/* "line: message" lines */
} bad_cases[] = {
	{ "workers 0\n", "1: workers 0: out of range (1 to 64)" },
	{ "workers 65\n", "1: workers 65: out of range (1 to 64)" },
	{ "workers two\n", "1: workers two: not a number" },
	{ "workers 99999999999999999999999\n",
	  "1: workers 99999999999999999999999: out of range (1 to 64)" },
	{ "relay pool 1025\n", "1: relay pool 1025: out of range (0 to 1024)" },
	{ "relay pool -1\n", "1: relay pool -1: out of range (0 to 1024)" },
	{ "relay pool 2\nrelay pool 3\n", "2: relay pool already set on line 1" },
	{ "relay 2\n", "1: syntax error at \"2\"" },
	{ "max relays 0\n", "1: max relays 0: out of range (1 to 1000000)" },
	{ "max relays 1000001\n",
	  "1: max relays 1000001: out of range (1 to 1000000)" },
	{ "max relays many\n", "1: max relays many: not a number" },
	{ "max relays 5\nmax relays 6\n", "2: max relays already set on line 1" },
	{ "relay zygote renew 0 relays\n",
	  "1: relay zygote renew 0: out of range (1 to 100000000)" },
	{ "relay zygote renew 100000001 relays\n",
	  "1: relay zygote renew 100000001: out of range (1 to 100000000)" },
	{ "relay zygote renew many relays\n",
	  "1: relay zygote renew many: not a number" },
	{ "relay zygote renew 500ms\n",
	  "1: relay zygote renew 500ms: out of range (1s to 1440m)" },
	{ "relay zygote renew 1441m\n",
	  "1: relay zygote renew 1441m: out of range (1s to 1440m)" },
	{ "relay zygote renew 10\n",
	  "1: relay zygote renew 10: a duration needs a unit (ms, s or m)" },
	{ "relay zygote renew 5 relays\nrelay zygote renew 6 relays\n",
	  "2: relay zygote renew relays already set on line 1" },
	{ "relay zygote renew 5m\nrelay zygote renew 6m\n",
	  "2: relay zygote renew already set on line 1" },
	{ "relay zygote 5m\n", "1: syntax error at \"5m\"" },
	{ "phones per server 0\n",
	  "1: phones per server 0: out of range (1 to 1024)" },
	{ "phones per server 1025\n",
	  "1: phones per server 1025: out of range (1 to 1024)" },
	{ "max connections 0\n",
	  "1: max connections 0: out of range (1 to 1000000)" },
	{ "max connections 1000001\n",
	  "1: max connections 1000001: out of range (1 to 1000000)" },
	{ "max connections per ip 0\n",
	  "1: max connections per ip 0: out of range (1 to 1000000)" },
	{ "rate limit burst 0 refill 6s\n",
	  "1: rate limit burst 0: out of range (1 to 100000)" },
	{ "rate limit burst 100001 refill 6s\n",
	  "1: rate limit burst 100001: out of range (1 to 100000)" },
	{ "rate limit burst 20 refill 99ms\n",
	  "1: rate limit refill 99ms: out of range (100ms to 1440m)" },
	{ "rate limit burst 20 refill 6\n",
	  "1: rate limit refill 6: a duration needs a unit (ms, s or m)" },
	{ "rate limit burst x refill 6\n",
	  "1: rate limit burst x: not a number\n"
	  "1: rate limit refill 6: a duration needs a unit (ms, s or m)" },
	{ "message size 1023\n",
	  "1: message size 1023: out of range (1K to 16M)" },
	{ "message size 17M\n",
	  "1: message size 17M: out of range (1K to 16M)" },
	{ "message size 4G\n",
	  "1: message size 4G: invalid size, use a number with an optional "
	  "K or M" },
	{ "message size 256k\n",
	  "1: message size 256k: invalid size, use a number with an optional "
	  "K or M" },
	{ "message size 99999999999999999999M\n",
	  "1: message size 99999999999999999999M: out of range (1K to 16M)" },
	{ "outbox 63K\n", "1: outbox 63K: out of range (64K to 1024M)" },
	{ "outbox 1025M\n", "1: outbox 1025M: out of range (64K to 1024M)" },
	{ "grace queue 65M\n", "1: grace queue 65M: out of range (0 to 64M)" },
	{ "grace queue -1\n",
	  "1: grace queue -1: invalid size, use a number with an optional "
	  "K or M" },
	{ "max header size 512\n",
	  "1: max header size 512: out of range (1K to 16K)" },
	{ "max header size 17K\n",
	  "1: max header size 17K: out of range (1K to 16K)" },
	{ "grace 30\n", "1: grace 30: a duration needs a unit (ms, s or m)" },
	{ "grace 0\n", "1: grace 0: a duration needs a unit (ms, s or m)" },
	{ "grace 1441m\n", "1: grace 1441m: out of range (0s to 1440m)" },
	{ "grace 30x\n",
	  "1: grace 30x: invalid duration, use a number with ms, s or m" },
	{ "grace 1h\n",
	  "1: grace 1h: invalid duration, use a number with ms, s or m" },
	{ "grace -5s\n",
	  "1: grace -5s: invalid duration, use a number with ms, s or m" },
	{ "grace 1.5s\n",
	  "1: grace 1.5s: invalid duration, use a number with ms, s or m" },
	{ "grace 99999999999999999999m\n",
	  "1: grace 99999999999999999999m: out of range (0s to 1440m)" },
	{ "heartbeat 99ms timeout 30s\n",
	  "1: heartbeat 99ms: out of range (100ms to 1440m)" },
	{ "heartbeat 30s timeout 1441m\n",
	  "1: heartbeat timeout 1441m: out of range (100ms to 1440m)" },
	{ "heartbeat 30 timeout 30\n",
	  "1: heartbeat 30: a duration needs a unit (ms, s or m)\n"
	  "1: heartbeat timeout 30: a duration needs a unit (ms, s or m)" },
	{ "conflict probe 0s\n",
	  "1: conflict probe 0s: out of range (100ms to 1440m)" },
	{ "handshake timeout 50ms\n",
	  "1: handshake timeout 50ms: out of range (100ms to 1440m)" },
	{ "write timeout 61m\n",
	  "1: write timeout 61m: out of range (100ms to 60m)" },
	{ "write timeout 0s\n",
	  "1: write timeout 0s: out of range (100ms to 60m)" },
	{ "user \"\"\n", "1: user: empty name" },
	{ "user \"abcdefghijabcdefghijabcdefghij"
	  "abcdefghijabcdefghijabcdefghij1234\"\n",
	  "1: user: name too long (at most 63 bytes)" },
	{ "chroot \"var/empty\"\n",
	  "1: chroot \"var/empty\": not an absolute path" },
	{ "control socket run/pyrelayd.sock\n",
	  "1: control socket \"run/pyrelayd.sock\": not an absolute path" },
	{ "control socket \"/run/abcdefghijabcdefghijabcdefghijabcdefghij"
	  "abcdefghijabcdefghijabcdefghijabcdefghij"
	  "abcdefghijabcdefghij.sock\"\n",
	  "1: control socket: path too long (at most 107 bytes)" },
	{ "tls certificate cert.pem key key.pem\n",
	  "1: tls certificate \"cert.pem\": not an absolute path\n"
	  "1: tls key \"key.pem\": not an absolute path" },
	{ "acme webroot \"\"\n", "1: acme webroot \"\": not an absolute path" },
	{ "push fcm credentials fcm.json\n",
	  "1: push fcm credentials \"fcm.json\": not an absolute path" },
	{ "domain \"-relay.example.com\"\n",
	  "1: domain \"-relay.example.com\": not a valid host name" },
	{ "domain \"relay-.example.com\"\n",
	  "1: domain \"relay-.example.com\": not a valid host name" },
	{ "domain \"relay..example.com\"\n",
	  "1: domain \"relay..example.com\": not a valid host name" },
	{ "domain \"relay.example.com.\"\n",
	  "1: domain \"relay.example.com.\": not a valid host name" },
	{ "domain \"relay_1.example.com\"\n",
	  "1: domain \"relay_1.example.com\": not a valid host name" },
	{ "domain \"relay.example.com:443\"\n",
	  "1: domain \"relay.example.com:443\": not a valid host name" },
	{ "domain \"\"\n", "1: domain \"\": not a valid host name" },
	{ "domain a123456789a123456789a123456789"
	  "a123456789a123456789a123456789abcd.com\n",
	  "1: domain \"a123456789a123456789a123456789a123456789a123456789"
	  "a123456789abcd.com\": not a valid host name" },
	{ "listen on localhost port 8080\n",
	  "1: listen on localhost: not a numeric IPv4 or IPv6 address" },
	{ "listen on 127.1 port 8080\n",
	  "1: listen on 127.1: not a numeric IPv4 or IPv6 address" },
	{ "listen on [::1] port 8080\n",
	  "1: listen on [::1]: not a numeric IPv4 or IPv6 address" },
	{ "listen on 127.0.0.1 port 0\n",
	  "1: port 0: out of range (1 to 65535)" },
	{ "listen on 127.0.0.1 port 65536\n",
	  "1: port 65536: out of range (1 to 65535)" },
	{ "listen on 127.0.0.1 port https\n", "1: port https: not a number" },
	{ "listen on nowhere port 0\n",
	  "1: listen on nowhere: not a numeric IPv4 or IPv6 address\n"
	  "1: port 0: out of range (1 to 65535)" },
	{ "listen on 0.0.0.0 port 80 tls acme\n",
	  "1: listen on 0.0.0.0 port 80: tls and acme cannot be combined" },
	{ "listen on :: port 443 tls\n",
	  "1: listen on :: port 443 tls: no \"tls certificate ... key ...\" "
	  "statement" },
	{ "listen on 127.0.0.1 port 8080\nlisten on 127.0.0.1 port 8080 tls\n",
	  "2: listen on 127.0.0.1 port 8080: already used on line 1" },
	{ "listen on ::1 port 8080\nlisten on 0:0::1 port 8080\n",
	  "2: listen on ::1 port 8080: already used on line 1" },
	{ "listen on 0.0.0.0 port 9090\nmetrics on 127.0.0.1 port 9090\n",
	  "2: metrics on 127.0.0.1 port 9090: overlaps 0.0.0.0 port 9090 on "
	  "line 1" },
	{ "metrics on 127.0.0.1 port 9090\nlisten on 0.0.0.0 port 9090\n",
	  "2: listen on 0.0.0.0 port 9090: overlaps 127.0.0.1 port 9090 on "
	  "line 1" },
	{ "metrics on 192.0.2.1 port 9090\n",
	  "1: metrics on 192.0.2.1 port 9090: not a loopback address "
	  "(127.0.0.0/8 or ::1)" },
	{ "metrics on :: port 9090\n",
	  "1: metrics on :: port 9090: not a loopback address "
	  "(127.0.0.0/8 or ::1)" },
	{ "metrics on 0.0.0.0 port 9090\n",
	  "1: metrics on 0.0.0.0 port 9090: not a loopback address "
	  "(127.0.0.0/8 or ::1)" },
	{ "metrics on ::1 port 9090 tls\n", "1: syntax error at \"tls\"" },
	{ "agent on localhost port 9091\n",
	  "1: agent on localhost: not a numeric IPv4 or IPv6 address" },
	{ "agent on 10.0.0.11 port 70000\n",
	  "1: port 70000: out of range (1 to 65535)" },
	{ "listen on 10.0.0.11 port 9091\nagent on 10.0.0.11 port 9091\n",
	  "2: agent on 10.0.0.11 port 9091: already used on line 1" },
	{ "agent on 0.0.0.0 port 9091\nmetrics on 127.0.0.1 port 9091\n",
	  "2: metrics on 127.0.0.1 port 9091: overlaps 0.0.0.0 port 9091 on "
	  "line 1" },
	{ "agent on 10.0.0.11 port 9091 proxy-protocol\n",
	  "1: syntax error at \"proxy-protocol\"" },
	{ "agent 10.0.0.11 port 9091\n", "1: syntax error at \"10.0.0.11\"" },
	{ "grace 10s\ngrace 20s\n", "2: grace already set on line 1" },
	{ "workers 2\n\nworkers 2\n", "3: workers already set on line 1" },
	{ "bogus 5\n", "1: syntax error: unknown keyword \"bogus\"" },
	{ "bogus\n", "1: syntax error: unknown keyword \"bogus\"" },
	{ "listen on 127.0.0.1 port 8080 tsl\n", "1: syntax error at \"tsl\"" },
	{ "listen 127.0.0.1 port 8080\n", "1: syntax error at \"127.0.0.1\"" },
	{ "max connection 10\n", "1: syntax error at \"connection\"" },
	{ "workers\n", "1: syntax error at end of line" },
	{ "workers", "1: syntax error at end of line" },
	{ "port 80\n", "1: syntax error at \"port\"" },
	{ "workers 2 {\n", "1: syntax error at \"{\"" },
	{ "user \"abc\n", "1: unterminated quoted string" },
	{ "user \"abc", "1: unterminated quoted string" },
	{ "workers $nope\n", "1: undefined macro \"nope\"" },
	{ "workers $\n", "1: missing macro name after \"$\"" },
	{ "a-b = 1\n",
	  "1: invalid macro name \"a-b\": use letters, digits and _" },
	{ "loop = \"$loop\"\nworkers $loop\n",
	  "2: too many macro expansions at \"loop\"" },
};

static void
test_bad_values(void)
{
	size_t	i;

	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		if (!expect_errors(bad_cases[i].text, bad_cases[i].errors)) {
			fprintf(stderr, "bad_cases[%zu] failed\n", i);
			CU_FAIL("bad case");
		}
	}
}

/* A NUL byte cannot be written in a C string literal of the table. */
static void
test_nul_byte(void)
{
	struct config	*conf;
	char		 path[PATH_MAX];
	const char	 text[] = "workers 2\nuser \"a\0b\"\ngrace 5\n";
	int		 fd;

	if (write_temp("", path, sizeof(path)) == -1) {
		CU_FAIL("cannot write a temporary file");
		return;
	}
	fd = open(path, O_WRONLY | O_TRUNC);
	CU_ASSERT_FATAL(fd != -1);
	CU_ASSERT(write(fd, text, sizeof(text) - 1) ==
	    (ssize_t)sizeof(text) - 1);
	close(fd);
	errors[0] = '\0';
	conf = config_parse(path, NULL, 0);
	CU_ASSERT_PTR_NULL(conf);
	CU_ASSERT(errors_match(path, "2: NUL byte in file\n"
	    "3: grace 5: a duration needs a unit (ms, s or m)"));
	unlink(path);
	config_free(conf);
}

static void
test_multiple_errors(void)
{
	struct config	*conf;
	char		 path[PATH_MAX], errpath[PATH_MAX];
	char		*want;

	data_path(path, sizeof(path), "bad-multi.conf");
	data_path(errpath, sizeof(errpath), "bad-multi.err");
	conf = parse_file(path, NULL, 0);
	CU_ASSERT_PTR_NULL(conf);
	want = read_all(errpath);
	CU_ASSERT_PTR_NOT_NULL_FATAL(want);
	/* the .err file has "line: message" lines, without the path */
	if (*want != '\0' && want[strlen(want) - 1] == '\n')
		want[strlen(want) - 1] = '\0';
	CU_ASSERT(errors_match(path, want));
	free(want);
	config_free(conf);
}

static void
test_file_errors(void)
{
	struct config	*conf;
	char		 path[PATH_MAX], want[PATH_MAX + 64];

	conf = parse_file("/nonexistent/pyrelayd.conf", NULL, 0);
	CU_ASSERT_PTR_NULL(conf);
	CU_ASSERT_STRING_EQUAL(errors,
	    "/nonexistent/pyrelayd.conf: No such file or directory\n");

	conf = parse_file(datadir, NULL, 0);
	CU_ASSERT_PTR_NULL(conf);
	snprintf(want, sizeof(want), "%s: Is a directory\n", datadir);
	CU_ASSERT_STRING_EQUAL(errors, want);

	CU_ASSERT_FATAL(write_temp("workers 2\n", path, sizeof(path)) == 0);
	CU_ASSERT(chmod(path, 0666) == 0);
	conf = parse_file(path, NULL, 0);
	CU_ASSERT_PTR_NULL(conf);
	snprintf(want, sizeof(want), "%s: world-writable, refusing to use it\n",
	    path);
	CU_ASSERT_STRING_EQUAL(errors, want);
	CU_ASSERT(chmod(path, 0644) == 0);
	conf = parse_file(path, NULL, 0);
	CU_ASSERT_PTR_NOT_NULL(conf);
	CU_ASSERT_STRING_EQUAL(errors, "");
	config_free(conf);
	unlink(path);
}

/* Without the hook, errors go to stderr, one "file:line: message" a line. */
static void
test_stderr_output(void)
{
	struct config	*conf;
	char		 path[PATH_MAX], out[PATH_MAX];
	char		 want[2 * PATH_MAX + 128];
	char		*got;
	int		 fd, saved;

	CU_ASSERT_FATAL(write_temp("workers 0\nbogus\n", path,
	    sizeof(path)) == 0);
	CU_ASSERT_FATAL(write_temp("", out, sizeof(out)) == 0);
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	fd = open(out, O_WRONLY | O_TRUNC);
	CU_ASSERT_FATAL(saved != -1 && fd != -1);
	dup2(fd, STDERR_FILENO);
	close(fd);
	config_error_hook = NULL;
	conf = config_parse(path, NULL, 0);
	config_error_hook = capture;
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);

	CU_ASSERT_PTR_NULL(conf);
	got = read_all(out);
	snprintf(want, sizeof(want), "%s:1: workers 0: out of range (1 to 64)\n"
	    "%s:2: syntax error: unknown keyword \"bogus\"\n", path, path);
	CU_ASSERT_PTR_NOT_NULL_FATAL(got);
	CU_ASSERT_STRING_EQUAL(got, want);
	free(got);
	unlink(path);
	unlink(out);
}

/* --- macros --------------------------------------------------------------- */

static void
test_macros(void)
{
	struct config		*conf;
	struct listen_addr	*la;
	char			 path[PATH_MAX];
	char			*over[] = {
		"relayport=9000", "addr=::1", "extra=1"
	};

	data_path(path, sizeof(path), "macros.conf");
	conf = parse_file(path, NULL, 0);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	la = TAILQ_FIRST(&conf->listeners);
	check_listener(la, "127.0.0.1 port 8080", 0);
	la = TAILQ_NEXT(la, entry);
	check_listener(la, "127.0.0.3 port 8081", LISTEN_PROXY);
	CU_ASSERT_EQUAL(conf->lim.max_connections, 100);
	CU_ASSERT_EQUAL(conf->lim.grace_ms, 45000);
	CU_ASSERT_STRING_EQUAL(conf->acme_webroot, "/var/lib/pyrelayd/acme");
	/* no expansion inside quotes */
	CU_ASSERT_STRING_EQUAL(conf->user, "$dir");
	config_free(conf);

	/* -D wins over the definitions in the file */
	conf = parse_file(path, over, 3);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	la = TAILQ_FIRST(&conf->listeners);
	check_listener(la, "::1 port 9000", 0);
	CU_ASSERT_EQUAL(conf->lim.max_connections, 100);
	config_free(conf);
}

static void
test_macro_errors(void)
{
	struct config	*conf;
	char		 path[PATH_MAX];
	char		*noeq[] = { "port" };
	char		*badname[] = { "a-b=1" };
	char		*newline[] = { "a=1\n2" };
	char		*defined[] = { "n=3" };

	conf = parse_text("workers 2\n", path, sizeof(path), noeq, 1);
	CU_ASSERT_PTR_NULL(conf);
	CU_ASSERT_STRING_EQUAL(errors, "-D port: expected name=value\n");
	conf = parse_text("workers 2\n", path, sizeof(path), badname, 1);
	CU_ASSERT_PTR_NULL(conf);
	CU_ASSERT_STRING_EQUAL(errors,
	    "-D a-b: invalid macro name: use letters, digits and _\n");
	conf = parse_text("workers 2\n", path, sizeof(path), newline, 1);
	CU_ASSERT_PTR_NULL(conf);
	CU_ASSERT_STRING_EQUAL(errors, "-D a: newline in value\n");

	/* a macro that only -D defines */
	conf = parse_text("workers $n\n", path, sizeof(path), defined, 1);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_EQUAL(conf->workers, 3);
	config_free(conf);

	/* a file may redefine its own macro; the last value counts */
	conf = parse_text("n = 3\nn = 5\nworkers $n\n", path, sizeof(path),
	    NULL, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT_EQUAL(conf->workers, 5);
	config_free(conf);
}

/* --- -nv output ----------------------------------------------------------- */

static void
test_golden(void)
{
	static const char *const names[] = { "full", "minimal", "macros" };
	struct config	*conf;
	char		 path[PATH_MAX], golden[64];
	size_t		 i;

	conf = config_new_default();
	CU_ASSERT(golden_match(conf, "default.golden"));
	config_free(conf);

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(golden, sizeof(golden), "%s.conf", names[i]);
		data_path(path, sizeof(path), golden);
		conf = parse_file(path, NULL, 0);
		CU_ASSERT_PTR_NOT_NULL(conf);
		if (conf == NULL)
			continue;
		snprintf(golden, sizeof(golden), "%s.golden", names[i]);
		CU_ASSERT(golden_match(conf, golden));
		config_free(conf);
	}
}

static int
round_trip(const struct config *conf)
{
	struct config	*again;
	char		 path[PATH_MAX];
	char		*text;
	int		 ok;

	if ((text = print_to_string(conf)) == NULL)
		return 0;
	again = parse_text(text, path, sizeof(path), NULL, 0);
	ok = again != NULL && config_equal(conf, again);
	if (!ok)
		fprintf(stderr, "\n--- round trip failed:\n%s%s", text, errors);
	config_free(again);
	free(text);
	return ok;
}

static void
test_round_trip(void)
{
	static const char *const names[] = {
		"full.conf", "minimal.conf", "macros.conf"
	};
	struct config	*conf;
	char		 path[PATH_MAX];
	size_t		 i;

	conf = config_new_default();
	CU_ASSERT(round_trip(conf));
	config_free(conf);

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		data_path(path, sizeof(path), names[i]);
		conf = parse_file(path, NULL, 0);
		CU_ASSERT_PTR_NOT_NULL(conf);
		if (conf != NULL)
			CU_ASSERT(round_trip(conf));
		config_free(conf);
	}

	conf = parse_text("user \"odd \\\"name\\\" \\\\\"\nworkers 1\n"
	    "grace 1500ms\nmessage size 2000\ngrace queue 0\n"
	    "listen on ::ffff:127.0.0.1 port 1 tls acme proxy-protocol\n",
	    path, sizeof(path), NULL, 0);
	/* tls with acme is refused: take the flags one at a time */
	CU_ASSERT_PTR_NULL(conf);
	conf = parse_text("user \"odd \\\"name\\\" \\\\\"\nworkers 1\n"
	    "grace 1500ms\nmessage size 2000\ngrace queue 0\n"
	    "listen on ::ffff:127.0.0.1 port 1 acme proxy-protocol\n"
	    "tls certificate /c key /k\n"
	    "listen on fe80::1 port 2 tls\n", path, sizeof(path), NULL, 0);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT(round_trip(conf));
	config_free(conf);
}

/* The example shipped in etc/ parses and says what the defaults are. */
static void
test_shipped_example(void)
{
	struct config	*conf, *def;
	char		 path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/etc/pyrelayd.conf", topdir);
	conf = parse_file(path, NULL, 0);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	def = config_new_default();
	CU_ASSERT(list_equal(&conf->listeners, &def->listeners));
	CU_ASSERT(list_equal(&conf->metrics, &def->metrics));
	CU_ASSERT_STRING_EQUAL(conf->control_socket, def->control_socket);
	CU_ASSERT_EQUAL(conf->workers, def->workers);
	CU_ASSERT(memcmp(&conf->lim, &def->lim, sizeof(conf->lim)) == 0);
	CU_ASSERT_STRING_EQUAL(conf->tls_cert, "");
	CU_ASSERT_STRING_EQUAL(conf->acme_webroot, "");
	CU_ASSERT_STRING_EQUAL(conf->fcm_credentials, "");
	CU_ASSERT(round_trip(conf));
	config_free(def);
	config_free(conf);
}

/* --- main --------------------------------------------------------------- */

static void
find_dirs(void)
{
	const char	*s;

	if ((s = getenv("UNIT_DATA")) != NULL && *s != '\0')
		snprintf(datadir, sizeof(datadir), "%s/config", s);
	else if (access("tests/unit/data/config", F_OK) == 0)
		strlcpy(datadir, "tests/unit/data/config", sizeof(datadir));
	else
		strlcpy(datadir, "data/config", sizeof(datadir));
	if ((s = getenv("TOP_SRCDIR")) != NULL && *s != '\0')
		strlcpy(topdir, s, sizeof(topdir));
	else if (access("etc/pyrelayd.conf", F_OK) == 0)
		strlcpy(topdir, ".", sizeof(topdir));
	else
		strlcpy(topdir, "../..", sizeof(topdir));
}

static CU_TestInfo config_defaults_tests[] = {
	{ "built-in defaults", test_defaults },
	{ "default file missing", test_default_file_missing },
	{ "listen_addr_print", test_listen_addr_print },
	CU_TEST_INFO_NULL
};

static CU_TestInfo config_parse_tests[] = {
	{ "every keyword", test_every_keyword },
	{ "limits at their bounds", test_limits_at_bounds },
	{ "no listener", test_no_listener },
	{ "lexical details", test_lexical },
	CU_TEST_INFO_NULL
};

static CU_TestInfo config_errors_tests[] = {
	{ "each bad value", test_bad_values },
	{ "NUL byte", test_nul_byte },
	{ "every error reported", test_multiple_errors },
	{ "file errors", test_file_errors },
	{ "stderr output", test_stderr_output },
	CU_TEST_INFO_NULL
};

static CU_TestInfo config_macros_tests[] = {
	{ "file macros and -D", test_macros },
	{ "macro errors", test_macro_errors },
	CU_TEST_INFO_NULL
};

static CU_TestInfo config_print_tests[] = {
	{ "golden -nv output", test_golden },
	{ "print and parse again", test_round_trip },
	{ "shipped etc/pyrelayd.conf", test_shipped_example },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "config_defaults", NULL, NULL, NULL, NULL, config_defaults_tests },
	{ "config_parse", NULL, NULL, NULL, NULL, config_parse_tests },
	{ "config_errors", NULL, NULL, NULL, NULL, config_errors_tests },
	{ "config_macros", NULL, NULL, NULL, NULL, config_macros_tests },
	{ "config_print", NULL, NULL, NULL, NULL, config_print_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	find_dirs();
	config_error_hook = capture;
	return unit_run(suites);
}
