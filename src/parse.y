/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * pyrelayd.conf(5) parser.  An own lexer with a sorted keyword table,
 * macros ("name = value" in the file, "$name" to use one, -D name=value
 * from the command line overriding the file), one statement per line,
 * "#" comments.  Every error is reported as "file:line: message" and the
 * whole file is read before config_parse() fails, so that one run shows
 * every mistake.  The grammar is docs/protocol.md §10.
 *
 * config_parse() keeps its state in file-scope variables: it is not
 * reentrant, which a daemon that parses in one process never needs.
 */

%{
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push.h"
#include "pyrelayd.h"

/* config.c: shared with config_print() so that errors use its units */

/*
 * Where parse errors go: NULL writes them to stderr, one per line.
 * The daemon may point it at log_warnx for a SIGHUP reload in the
 * background; the unit tests capture the messages with it.
 */
void		(*config_error_hook)(const char *);

#define STRING_MAX	8192		/* longest word or quoted string */
#define EXPAND_MAX	64		/* macro expansions per statement */

#define SECOND_MS	1000LL
#define MINUTE_MS	(60 * SECOND_MS)
#define DAY_MS		(24 * 60 * MINUTE_MS)
#define HOUR_MS		(60 * MINUTE_MS)
#define TIMER_MIN_MS	100LL
#define KILO		1024ULL
#define MEGA		(1024 * KILO)
#define GIGA		(1024 * MEGA)

/* A word or number as the lexer saw it; n is set for NUMBER only. */
struct value {
	int		 isnum;
	long long	 n;
	char		*s;
};

/* Statements that may appear once; seen[] keeps the line of the first. */
enum setting {
	SET_USER,
	SET_CHROOT,
	SET_WORKERS,
	SET_CONTROL,
	SET_DOMAIN,
	SET_TLS,
	SET_KTLS,
	SET_ACME,
	SET_GRACE,
	SET_PHONES,
	SET_MAXCONN,
	SET_PERIP,
	SET_RATE,
	SET_MSGSIZE,
	SET_OUTBOX,
	SET_GRACEQ,
	SET_HEARTBEAT,
	SET_CONFLICT,
	SET_HANDSHAKE,
	SET_HEADER,
	SET_WRITE,
	SET_FCM,
	SET_FCM_PROJECT,
	SET_FCM_ENDPOINT,
	SET_PUSH_CA,
	SET_POOL,
	SET_MAXRELAYS,
	SET_ZRENEW_RELAYS,
	SET_ZRENEW_TIME,
	SET_COUNT
};

struct sym {
	TAILQ_ENTRY(sym)	 entry;
	char			*name;
	char			*value;
	int			 persist;	/* -D: not redefined */
};
TAILQ_HEAD(symlist, sym);

/* A listener and the line that declared it, for later messages. */
struct listen_line {
	struct listen_addr	*la;
	int			 line;
};

static struct config		*conf;
static FILE			*pfile;
static const char		*pname;
static int			 nerrors;
static int			 seen[SET_COUNT];
static struct symlist		 symbols = TAILQ_HEAD_INITIALIZER(symbols);
static struct listen_line	*llines;
static size_t			 nllines;

/* lexer state; pushback: characters read before the file (macros, ungot) */
static unsigned char		*pushback;
static size_t			 npushback, pushbacksize;
/* every string handed to the grammar, freed after the parse */
static char			**pool;
static size_t			 npool, poolsize;
static int			 lex_line;	/* line the lexer is reading */
static int			 tok_line;	/* line of the last token */
static int			 stmt_line;	/* where a statement starts */
static int			 tok_count;	/* tokens of the statement */
static int			 tok_last;	/* the last token */
static int			 at_bol;	/* next token starts one */
static int			 expansions;
static int			 lex_failed;	/* lexer reported an error */
static char			 tok_text[64];
static char			 first_word[64];

int		 yylex(void);
void		 yyerror(const char *);

static void	 emit(const char *, ...)
		    __attribute__((__format__(printf, 1, 2)));
static void	 errat(int, const char *, ...)
		    __attribute__((__format__(printf, 2, 3)));
static void	 stmt_err(const char *, ...)
		    __attribute__((__format__(printf, 1, 2)));
static int	 once(enum setting, const char *);
static int	 get_number(const char *, const struct value *, long long,
		    long long, long long *);
static int	 get_duration(const char *, const struct value *, int64_t,
		    int64_t, int64_t *);
static int	 get_size(const char *, const struct value *, uint64_t,
		    uint64_t, uint64_t *);
static void	 set_path(const char *, const struct value *, char *, size_t);
static void	 set_user(const struct value *);
static void	 set_control(const struct value *);
static void	 set_domain(const struct value *);
static void	 add_listener(const struct value *, const struct value *, int);
static int	 macro_set(const char *, const char *, int);
%}

%union {
	struct value	 v;
	int		 flags;
}

%token	ACME AGENT BURST CA CERTIFICATE CHROOT CONFLICT CONNECTIONS CONTROL
%token	CREDENTIALS DOMAIN ENDPOINT FCM GRACE HANDSHAKE HEADER HEARTBEAT IP KEY
%token	KTLS LIMIT LISTEN MAX MESSAGE METRICS ON OUTBOX PER PHONES POOL PORT
%token	PROBE PROJECT PROXYPROTO PUSH QUEUE RATE REFILL RELAY RELAYS RENEW
%token	SERVER SIZE SOCKET
%token	TIMEOUT TLS
%token	USER WEBROOT WORKERS WRITE ZYGOTE
%token	ERROR
%token	<v>	STRING NUMBER
%type	<v>	value
%type	<flags>	lflags lflag

%%

grammar	: /* empty */
	| grammar '\n'
	| grammar varset '\n'
	| grammar main '\n'
	| grammar error '\n'		{ yyerrok; }
	;

value	: STRING			{ $$ = $1; }
	| NUMBER			{ $$ = $1; }
	;

varset	: STRING '=' value		{
			if (macro_set($1.s, $3.s, 0) == -1)
				stmt_err("invalid macro name \"%s\": use "
				    "letters, digits and _", $1.s);
		}
	;

main	: USER value			{ set_user(&$2); }
	| CHROOT value			{
			if (once(SET_CHROOT, "chroot"))
				set_path("chroot", &$2, conf->chroot,
				    sizeof(conf->chroot));
		}
	| WORKERS value			{
			long long	n;

			if (once(SET_WORKERS, "workers") &&
			    get_number("workers", &$2, 1, 64, &n) == 0)
				conf->workers = n;
		}
	| LISTEN ON value PORT value lflags {
			add_listener(&$3, &$5, $6);
		}
	| METRICS ON value PORT value	{
			add_listener(&$3, &$5, LISTEN_METRICS);
		}
	| AGENT ON value PORT value	{
			add_listener(&$3, &$5, LISTEN_AGENT);
		}
	| CONTROL SOCKET value		{ set_control(&$3); }
	| DOMAIN value			{ set_domain(&$2); }
	| TLS CERTIFICATE value KEY value {
			if (once(SET_TLS, "tls certificate")) {
				set_path("tls certificate", &$3,
				    conf->tls_cert, sizeof(conf->tls_cert));
				set_path("tls key", &$5,
				    conf->tls_key, sizeof(conf->tls_key));
			}
		}
	| TLS KTLS value		{
			/* an operator's way out of kernel TLS, and the tests' */
			if (once(SET_KTLS, "tls ktls")) {
				if ($3.s != NULL && strcmp($3.s, "yes") == 0)
					conf->lim.ktls_off = 0;
				else if ($3.s != NULL && strcmp($3.s, "no") == 0)
					conf->lim.ktls_off = 1;
				else
					stmt_err("tls ktls: expected yes or no");
			}
		}
	| ACME WEBROOT value		{
			if (once(SET_ACME, "acme webroot"))
				set_path("acme webroot", &$3,
				    conf->acme_webroot,
				    sizeof(conf->acme_webroot));
		}
	| RELAY POOL value		{
			long long	n;

			/* relays started ahead of claims; 0: none (docs/pool.md) */
			if (once(SET_POOL, "relay pool") &&
			    get_number("relay pool", &$3, 0, RELAY_POOL_MAX,
			    &n) == 0)
				conf->relay_pool = n;
		}
	| RELAY ZYGOTE RENEW value RELAYS {
			long long	n;

			/* a freshly exec'd zygote after so many forks (docs/pool.md) */
			if (once(SET_ZRENEW_RELAYS, "relay zygote renew relays") &&
			    get_number("relay zygote renew", &$4, 1,
			    ZYGOTE_RENEW_RELAYS_MAX, &n) == 0)
				conf->zygote_renew_relays = n;
		}
	| RELAY ZYGOTE RENEW value	{
			/* ... or after so long */
			if (once(SET_ZRENEW_TIME, "relay zygote renew"))
				get_duration("relay zygote renew", &$4, SECOND_MS,
				    DAY_MS, &conf->zygote_renew_ms);
		}
	| GRACE value			{
			/* 0 turns the grace off: phones go with their binary */
			if (once(SET_GRACE, "grace"))
				get_duration("grace", &$2, 0, DAY_MS,
				    &conf->lim.grace_ms);
		}
	| PHONES PER SERVER value	{
			long long	n;

			if (once(SET_PHONES, "phones per server") &&
			    get_number("phones per server", &$4, 1,
			    PHONES_PER_SERVER_MAX,
			    &n) == 0)
				conf->lim.phones_per_server = n;
		}
	| MAX CONNECTIONS value		{
			long long	n;

			if (once(SET_MAXCONN, "max connections") &&
			    get_number("max connections", &$3, 1, 1000000,
			    &n) == 0)
				conf->lim.max_connections = n;
		}
	| MAX CONNECTIONS PER IP value	{
			long long	n;

			/* its bound, max connections, is checked at the end */
			if (once(SET_PERIP, "max connections per ip") &&
			    get_number("max connections per ip", &$5, 1,
			    1000000, &n) == 0)
				conf->lim.max_connections_per_ip = n;
		}
	| MAX RELAYS value		{
			long long	n;

			/* relay processes of every kind, pooled ones too */
			if (once(SET_MAXRELAYS, "max relays") &&
			    get_number("max relays", &$3, 1, MAX_RELAYS_LIMIT,
			    &n) == 0)
				conf->max_relays = n;
		}
	| RATE LIMIT BURST value REFILL value {
			long long	n;

			if (once(SET_RATE, "rate limit")) {
				if (get_number("rate limit burst", &$4, 1,
				    100000, &n) == 0)
					conf->lim.rate_burst = n;
				get_duration("rate limit refill", &$6,
				    TIMER_MIN_MS, DAY_MS,
				    &conf->lim.rate_refill_ms);
			}
		}
	| MESSAGE SIZE value		{
			if (once(SET_MSGSIZE, "message size"))
				get_size("message size", &$3, KILO, 16 * MEGA,
				    &conf->lim.message_size);
		}
	| OUTBOX value			{
			if (once(SET_OUTBOX, "outbox"))
				get_size("outbox", &$2, 64 * KILO, GIGA,
				    &conf->lim.outbox);
		}
	| GRACE QUEUE value		{
			if (once(SET_GRACEQ, "grace queue"))
				get_size("grace queue", &$3, 0, 64 * MEGA,
				    &conf->lim.grace_queue);
		}
	| HEARTBEAT value TIMEOUT value	{
			if (once(SET_HEARTBEAT, "heartbeat")) {
				get_duration("heartbeat", &$2, TIMER_MIN_MS,
				    DAY_MS, &conf->lim.heartbeat_ms);
				get_duration("heartbeat timeout", &$4,
				    TIMER_MIN_MS, DAY_MS,
				    &conf->lim.heartbeat_timeout_ms);
			}
		}
	| CONFLICT PROBE value		{
			if (once(SET_CONFLICT, "conflict probe"))
				get_duration("conflict probe", &$3,
				    TIMER_MIN_MS, DAY_MS,
				    &conf->lim.conflict_probe_ms);
		}
	| HANDSHAKE TIMEOUT value	{
			if (once(SET_HANDSHAKE, "handshake timeout"))
				get_duration("handshake timeout", &$3,
				    TIMER_MIN_MS, DAY_MS,
				    &conf->lim.handshake_timeout_ms);
		}
	| MAX HEADER SIZE value		{
			if (once(SET_HEADER, "max header size"))
				get_size("max header size", &$4, KILO,
				    HEAD_MAX_LIMIT, &conf->lim.max_header_size);
		}
	| WRITE TIMEOUT value		{
			if (once(SET_WRITE, "write timeout"))
				get_duration("write timeout", &$3,
				    TIMER_MIN_MS, HOUR_MS,
				    &conf->lim.write_timeout_ms);
		}
	| PUSH FCM CREDENTIALS value	{
			/* the file is read by config_check_push() */
			if (once(SET_FCM, "push fcm credentials")) {
				set_path("push fcm credentials", &$4,
				    conf->fcm_credentials,
				    sizeof(conf->fcm_credentials));
				conf->fcm_line = stmt_line;
			}
		}
	| PUSH FCM PROJECT value	{
			if (!once(SET_FCM_PROJECT, "push fcm project"))
				;
			else if ($4.s == NULL || !push_project_valid($4.s))
				stmt_err("push fcm project \"%s\": not a project "
				    "id (letters, digits, - . _ :, at most %d)",
				    $4.s, PUSH_PROJECT_MAX - 1);
			else
				strlcpy(conf->fcm_project, $4.s,
				    sizeof(conf->fcm_project));
		}
	| PUSH FCM ENDPOINT value	{
			struct push_url	u;
			char		err[PUSH_URL_MAX + 64];

			if (!once(SET_FCM_ENDPOINT, "push fcm endpoint"))
				;
			else if (strlen($4.s) >= sizeof(conf->fcm_endpoint))
				stmt_err("push fcm endpoint: too long (at most "
				    "%zu bytes)", sizeof(conf->fcm_endpoint) - 1);
			else if (push_url_parse($4.s, 0, &u, err,
			    sizeof(err)) == -1)
				stmt_err("push fcm endpoint %s", err);
			else
				strlcpy(conf->fcm_endpoint, $4.s,
				    sizeof(conf->fcm_endpoint));
		}
	| PUSH CA value			{
			if (once(SET_PUSH_CA, "push ca")) {
				set_path("push ca", &$3, conf->push_ca,
				    sizeof(conf->push_ca));
				conf->push_ca_line = stmt_line;
			}
		}
	;

lflags	: /* empty */			{ $$ = 0; }
	| lflags lflag			{ $$ = $1 | $2; }
	;

lflag	: TLS				{ $$ = LISTEN_TLS; }
	| ACME				{ $$ = LISTEN_ACME; }
	| PROXYPROTO			{ $$ = LISTEN_PROXY; }
	;

%%

/* Sorted for bsearch(); config_parse() checks the order. */
static const struct keyword {
	const char	*name;
	int		 token;
} keywords[] = {
	{ "acme",		ACME },
	{ "agent",		AGENT },
	{ "burst",		BURST },
	{ "ca",			CA },
	{ "certificate",	CERTIFICATE },
	{ "chroot",		CHROOT },
	{ "conflict",		CONFLICT },
	{ "connections",	CONNECTIONS },
	{ "control",		CONTROL },
	{ "credentials",	CREDENTIALS },
	{ "domain",		DOMAIN },
	{ "endpoint",		ENDPOINT },
	{ "fcm",		FCM },
	{ "grace",		GRACE },
	{ "handshake",		HANDSHAKE },
	{ "header",		HEADER },
	{ "heartbeat",		HEARTBEAT },
	{ "ip",			IP },
	{ "key",		KEY },
	{ "ktls",		KTLS },
	{ "limit",		LIMIT },
	{ "listen",		LISTEN },
	{ "max",		MAX },
	{ "message",		MESSAGE },
	{ "metrics",		METRICS },
	{ "on",			ON },
	{ "outbox",		OUTBOX },
	{ "per",		PER },
	{ "phones",		PHONES },
	{ "pool",		POOL },
	{ "port",		PORT },
	{ "probe",		PROBE },
	{ "project",		PROJECT },
	{ "proxy-protocol",	PROXYPROTO },
	{ "push",		PUSH },
	{ "queue",		QUEUE },
	{ "rate",		RATE },
	{ "refill",		REFILL },
	{ "relay",		RELAY },
	{ "relays",		RELAYS },
	{ "renew",		RENEW },
	{ "server",		SERVER },
	{ "size",		SIZE },
	{ "socket",		SOCKET },
	{ "timeout",		TIMEOUT },
	{ "tls",		TLS },
	{ "user",		USER },
	{ "webroot",		WEBROOT },
	{ "workers",		WORKERS },
	{ "write",		WRITE },
	{ "zygote",		ZYGOTE },
};

static int
keyword_cmp(const void *k, const void *e)
{
	return strcmp(k, ((const struct keyword *)e)->name);
}

static int
keyword_lookup(const char *s)
{
	const struct keyword	*kw;

	kw = bsearch(s, keywords, sizeof(keywords) / sizeof(keywords[0]),
	    sizeof(keywords[0]), keyword_cmp);
	return kw == NULL ? STRING : kw->token;
}

/* --- error reporting --------------------------------------------------- */

static void
emit(const char *fmt, ...)
{
	char	buf[PATH_MAX + 1024];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (config_error_hook != NULL)
		config_error_hook(buf);
	else
		fprintf(stderr, "%s\n", buf);
}

static void
errat(int line, const char *fmt, ...)
{
	char	msg[1024];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	nerrors++;
	emit("%s:%d: %s", pname, line, msg);
}

/* An error in the meaning of a statement: it belongs to its first line. */
static void
stmt_err(const char *fmt, ...)
{
	char	msg[1024];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	errat(stmt_line, "%s", msg);
}

void
config_error_at(const char *file, int line, const char *fmt, ...)
{
	char	msg[1024];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	emit("%s:%d: %s", file, line, msg);
}

void
yyerror(const char *msg)
{
	if (lex_failed) {
		/* the lexer already said what is wrong with this token */
		lex_failed = 0;
		return;
	}
	if (strcmp(msg, "syntax error") != 0)
		errat(tok_line, "%s", msg);
	else if (tok_count == 2 && first_word[0] != '\0')
		errat(stmt_line, "syntax error: unknown keyword \"%s\"",
		    first_word);
	else if (tok_last == '\n')
		errat(tok_line, "syntax error at end of line");
	else
		errat(tok_line, "syntax error at \"%s\"", tok_text);
}

/* --- lexer ------------------------------------------------------------- */

static char *
pool_strdup(const char *s)
{
	if (npool == poolsize) {
		poolsize = poolsize == 0 ? 64 : poolsize * 2;
		pool = xreallocarray(pool, poolsize, sizeof(*pool));
	}
	return pool[npool++] = xstrdup(s);
}

static int
lgetc(void)
{
	if (npushback > 0)
		return pushback[--npushback];
	return getc(pfile);
}

static void
lungetc(int c)
{
	if (c == EOF)
		return;
	if (npushback == pushbacksize) {
		pushbacksize = pushbacksize == 0 ? 256 : pushbacksize * 2;
		pushback = xreallocarray(pushback, pushbacksize, 1);
	}
	pushback[npushback++] = c;
}

/* After a lexical error: drop the rest of the line but not its newline. */
static int
findeol(void)
{
	int	c;

	while ((c = lgetc()) != EOF && c != '\n')
		;
	lungetc(c);
	lex_failed = 1;
	return ERROR;
}

static int
lex_error(const char *msg, const char *arg)
{
	if (arg != NULL)
		errat(lex_line, "%s \"%s\"", msg, arg);
	else
		errat(lex_line, "%s", msg);
	return findeol();
}

static int
is_word_char(int c)
{
	if (c == EOF || !isgraph(c))
		return 0;
	return strchr("\"'#=\\{}()<>!,;", c) == NULL;
}

static int
is_number(const char *s)
{
	if (*s == '-')
		s++;
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (!isdigit((unsigned char)*s))
			return 0;
	return 1;
}

static const char *
macro_get(const char *name)
{
	struct sym	*sym;

	TAILQ_FOREACH(sym, &symbols, entry)
		if (strcmp(sym->name, name) == 0)
			return sym->value;
	return NULL;
}

/* Every token goes out through here: it keeps what error messages need. */
static int
token(int t, const char *text)
{
	if (at_bol) {
		stmt_line = tok_line;
		tok_count = 0;
		first_word[0] = '\0';
		if (t == STRING)
			strlcpy(first_word, text, sizeof(first_word));
	}
	tok_count++;
	tok_last = t;
	strlcpy(tok_text, text, sizeof(tok_text));
	at_bol = t == '\n';
	if (t == '\n') {
		expansions = 0;
		lex_failed = 0;
	}
	return t;
}

int
yylex(void)
{
	char		 buf[STRING_MAX];
	const char	*val;
	size_t		 len, i;
	int		 c, next, quote, t;

top:
	len = 0;
	while ((c = lgetc()) == ' ' || c == '\t' || c == '\r')
		;
	tok_line = lex_line;
	if (c == '#')
		while ((c = lgetc()) != '\n' && c != EOF)
			;
	if (c == '\\') {
		if ((next = lgetc()) == '\n') {
			lex_line++;	/* a line continued */
			goto top;
		}
		lungetc(next);
	}

	if (c == '$') {
		while ((c = lgetc()) != EOF && (isalnum(c) || c == '_')) {
			if (len == sizeof(buf) - 1)
				return token(lex_error("macro name too long",
				    NULL), "");
			buf[len++] = c;
		}
		lungetc(c);
		buf[len] = '\0';
		if (len == 0)
			return token(lex_error("missing macro name after \"$\"",
			    NULL), "$");
		if ((val = macro_get(buf)) == NULL)
			return token(lex_error("undefined macro", buf), buf);
		if (++expansions > EXPAND_MAX)
			return token(lex_error("too many macro expansions at",
			    buf), buf);
		/* the value is read again as if written here */
		for (i = strlen(val); i > 0; i--)
			lungetc((unsigned char)val[i - 1]);
		goto top;
	}

	if (c == '\n') {
		lex_line++;
		return token('\n', "end of line");
	}
	if (c == EOF) {
		/* a last line without its newline still ends a statement */
		if (!at_bol)
			return token('\n', "end of line");
		return 0;
	}
	if (c == '\0')
		return token(lex_error("NUL byte in file", NULL), "");

	if (c == '"' || c == '\'') {
		quote = c;
		for (;;) {
			if ((c = lgetc()) == EOF || c == '\n') {
				lungetc(c);
				return token(lex_error("unterminated quoted "
				    "string", NULL), "");
			}
			if (c == '\0')
				return token(lex_error("NUL byte in file",
				    NULL), "");
			if (c == '\\') {
				next = lgetc();
				if (next == '\n') {
					lex_line++;
					continue;
				}
				if (next == quote || next == '\\')
					c = next;
				else
					lungetc(next);
			} else if (c == quote)
				break;
			if (len == sizeof(buf) - 1)
				return token(lex_error("string too long",
				    NULL), "");
			buf[len++] = c;
		}
		buf[len] = '\0';
		yylval.v.isnum = 0;
		yylval.v.n = 0;
		yylval.v.s = pool_strdup(buf);
		return token(STRING, buf);
	}

	if (is_word_char(c)) {
		do {
			if (len == sizeof(buf) - 1)
				return token(lex_error("word too long", NULL),
				    "");
			buf[len++] = c;
		} while (is_word_char(c = lgetc()));
		lungetc(c);
		buf[len] = '\0';
		yylval.v.isnum = 0;
		yylval.v.n = 0;
		yylval.v.s = pool_strdup(buf);
		if (is_number(buf)) {
			/* out of range numbers saturate; the checks say so */
			yylval.v.isnum = 1;
			yylval.v.n = strtoll(buf, NULL, 10);
			return token(NUMBER, buf);
		}
		t = keyword_lookup(buf);
		return token(t, buf);
	}

	buf[0] = c;
	buf[1] = '\0';
	return token(c, buf);
}

/* --- macros -------------------------------------------------------------- */

static int
macro_name_valid(const char *name)
{
	if (*name == '\0')
		return 0;
	for (; *name != '\0'; name++)
		if (!isalnum((unsigned char)*name) && *name != '_')
			return 0;
	return 1;
}

static int
macro_set(const char *name, const char *value, int persist)
{
	struct sym	*sym;

	if (!macro_name_valid(name))
		return -1;
	TAILQ_FOREACH(sym, &symbols, entry)
		if (strcmp(sym->name, name) == 0)
			break;
	if (sym != NULL) {
		/* -D wins over the file */
		if (sym->persist && !persist)
			return 0;
		free(sym->value);
		sym->value = xstrdup(value);
		sym->persist = persist;
		return 0;
	}
	sym = xcalloc(1, sizeof(*sym));
	sym->name = xstrdup(name);
	sym->value = xstrdup(value);
	sym->persist = persist;
	TAILQ_INSERT_TAIL(&symbols, sym, entry);
	return 0;
}

static int
macro_cmdline(const char *def)
{
	const char	*eq;
	char		*name;
	int		 rv = 0;

	if ((eq = strchr(def, '=')) == NULL) {
		emit("-D %s: expected name=value", def);
		return -1;
	}
	name = xcalloc(1, eq - def + 1);
	memcpy(name, def, eq - def);
	if (strchr(eq + 1, '\n') != NULL) {
		emit("-D %s: newline in value", name);
		rv = -1;
	} else if (macro_set(name, eq + 1, 1) == -1) {
		emit("-D %s: invalid macro name: use letters, digits and _",
		    name);
		rv = -1;
	}
	free(name);
	return rv;
}

/* --- values -------------------------------------------------------------- */

static int
once(enum setting s, const char *what)
{
	if (seen[s] != 0) {
		stmt_err("%s already set on line %d", what, seen[s]);
		return 0;
	}
	seen[s] = stmt_line;
	return 1;
}

static int
get_number(const char *kw, const struct value *v, long long lo, long long hi,
    long long *n)
{
	if (!v->isnum) {
		stmt_err("%s %s: not a number", kw, v->s);
		return -1;
	}
	if (v->n < lo || v->n > hi) {
		stmt_err("%s %s: out of range (%lld to %lld)", kw, v->s, lo,
		    hi);
		return -1;
	}
	*n = v->n;
	return 0;
}

/* A decimal prefix of s; *end is what follows.  -1 when there is none. */
static int
leading_number(const char *s, long long *n, const char **end)
{
	char	*e;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	*n = strtoll(s, &e, 10);
	if (errno == ERANGE)
		*n = LLONG_MAX;
	*end = e;
	return 0;
}

static int
get_duration(const char *kw, const struct value *v, int64_t lo, int64_t hi,
    int64_t *dst)
{
	const char	*unit;
	long long	 n;
	int64_t		 mult;
	char		 l[32], h[32];

	if (v->isnum) {
		stmt_err("%s %s: a duration needs a unit (ms, s or m)", kw,
		    v->s);
		return -1;
	}
	if (leading_number(v->s, &n, &unit) == -1)
		goto bad;
	if (strcmp(unit, "ms") == 0)
		mult = 1;
	else if (strcmp(unit, "s") == 0)
		mult = SECOND_MS;
	else if (strcmp(unit, "m") == 0)
		mult = MINUTE_MS;
	else
		goto bad;
	if (n > hi / mult || n * mult < lo) {
		config_fmt_duration(lo, l, sizeof(l));
		config_fmt_duration(hi, h, sizeof(h));
		stmt_err("%s %s: out of range (%s to %s)", kw, v->s, l, h);
		return -1;
	}
	*dst = n * mult;
	return 0;
bad:
	stmt_err("%s %s: invalid duration, use a number with ms, s or m", kw,
	    v->s);
	return -1;
}

static int
get_size(const char *kw, const struct value *v, uint64_t lo, uint64_t hi,
    uint64_t *dst)
{
	const char	*unit;
	long long	 n;
	uint64_t	 mult;
	char		 l[32], h[32];

	if (leading_number(v->s, &n, &unit) == -1)
		goto bad;
	if (*unit == '\0')
		mult = 1;
	else if (strcmp(unit, "K") == 0)
		mult = KILO;
	else if (strcmp(unit, "M") == 0)
		mult = MEGA;
	else
		goto bad;
	if ((uint64_t)n > hi / mult || (uint64_t)n * mult < lo) {
		config_fmt_size(lo, l, sizeof(l));
		config_fmt_size(hi, h, sizeof(h));
		stmt_err("%s %s: out of range (%s to %s)", kw, v->s, l, h);
		return -1;
	}
	*dst = (uint64_t)n * mult;
	return 0;
bad:
	stmt_err("%s %s: invalid size, use a number with an optional K or M",
	    kw, v->s);
	return -1;
}

static void
set_path(const char *kw, const struct value *v, char *dst, size_t len)
{
	if (v->s[0] != '/') {
		stmt_err("%s \"%s\": not an absolute path", kw, v->s);
		return;
	}
	if (strlen(v->s) >= len) {
		stmt_err("%s: path too long (at most %zu bytes)", kw, len - 1);
		return;
	}
	strlcpy(dst, v->s, len);
}

static void
set_user(const struct value *v)
{
	if (!once(SET_USER, "user"))
		return;
	if (v->s[0] == '\0') {
		stmt_err("user: empty name");
		return;
	}
	if (strlen(v->s) >= sizeof(conf->user)) {
		stmt_err("user: name too long (at most %zu bytes)",
		    sizeof(conf->user) - 1);
		return;
	}
	strlcpy(conf->user, v->s, sizeof(conf->user));
}

static void
set_control(const struct value *v)
{
	struct sockaddr_un	sun;

	if (!once(SET_CONTROL, "control socket"))
		return;
	/* it must fit a sockaddr_un, not only the array */
	if (strlen(v->s) >= sizeof(sun.sun_path)) {
		stmt_err("control socket: path too long (at most %zu bytes)",
		    sizeof(sun.sun_path) - 1);
		return;
	}
	set_path("control socket", v, conf->control_socket,
	    sizeof(conf->control_socket));
}

/* RFC 1123 host name: dot-separated labels of letters, digits, hyphens. */
static int
hostname_valid(const char *s)
{
	size_t	len = 0, label = 0;
	int	prev = '.';

	for (; *s != '\0'; s++, len++) {
		if (*s == '.') {
			if (label == 0 || prev == '-')
				return 0;
			label = 0;
		} else if (isalnum((unsigned char)*s) || *s == '-') {
			if (*s == '-' && label == 0)
				return 0;
			if (++label > 63)
				return 0;
		} else
			return 0;
		prev = *s;
	}
	return len > 0 && len <= 253 && label > 0 && prev != '-';
}

static void
set_domain(const struct value *v)
{
	size_t	i;

	if (!once(SET_DOMAIN, "domain"))
		return;
	if (!hostname_valid(v->s)) {
		stmt_err("domain \"%s\": not a valid host name", v->s);
		return;
	}
	/* the Host check compares case-insensitively against this */
	for (i = 0; v->s[i] != '\0'; i++)
		conf->lim.domain[i] = tolower((unsigned char)v->s[i]);
	conf->lim.domain[i] = '\0';
}

/* --- listeners ------------------------------------------------------------ */

static int
addr_parse(const char *s, struct listen_addr *la)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)&la->ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&la->ss;

	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		la->sslen = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		la->sslen = sizeof(*sin6);
		return 0;
	}
	return -1;
}

static void
addr_set_port(struct listen_addr *la, in_port_t port)
{
	if (la->ss.ss_family == AF_INET)
		((struct sockaddr_in *)&la->ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&la->ss)->sin6_port = htons(port);
}

static in_port_t
addr_port(const struct listen_addr *la)
{
	if (la->ss.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&la->ss)->sin_port;
	return ((const struct sockaddr_in6 *)&la->ss)->sin6_port;
}

static const void *
addr_bytes(const struct listen_addr *la, size_t *len)
{
	if (la->ss.ss_family == AF_INET) {
		*len = sizeof(struct in_addr);
		return &((const struct sockaddr_in *)&la->ss)->sin_addr;
	}
	*len = sizeof(struct in6_addr);
	return &((const struct sockaddr_in6 *)&la->ss)->sin6_addr;
}

static int
addr_is_wildcard(const struct listen_addr *la)
{
	static const unsigned char	zero[sizeof(struct in6_addr)];
	const void			*a;
	size_t				 len;

	a = addr_bytes(la, &len);
	return memcmp(a, zero, len) == 0;
}

/* 127.0.0.0/8, ::1, and 127.0.0.0/8 mapped into IPv6 */
static int
addr_is_loopback(const struct listen_addr *la)
{
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;

	if (la->ss.ss_family == AF_INET) {
		sin = (const struct sockaddr_in *)&la->ss;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	sin6 = (const struct sockaddr_in6 *)&la->ss;
	if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
		return 1;
	return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) &&
	    sin6->sin6_addr.s6_addr[12] == 127;
}

static void
add_listener(const struct value *addr, const struct value *port, int flags)
{
	struct listen_addr	*la, *other;
	const char		*what;
	const void		*a, *b;
	char			 name[128], oname[128];
	long long		 n;
	size_t			 i, alen, blen;
	int			 bad = 0;

	what = (flags & LISTEN_METRICS) ? "metrics on" :
	    (flags & LISTEN_AGENT) ? "agent on" : "listen on";
	la = xcalloc(1, sizeof(*la));
	la->fd = -1;
	la->flags = flags;
	if (addr_parse(addr->s, la) == -1) {
		stmt_err("%s %s: not a numeric IPv4 or IPv6 address", what,
		    addr->s);
		bad = 1;
	}
	if (get_number("port", port, 1, 65535, &n) == -1)
		bad = 1;
	if (bad) {
		free(la);
		return;
	}
	addr_set_port(la, n);
	listen_addr_print(la, name, sizeof(name));

	if ((flags & LISTEN_METRICS) && !addr_is_loopback(la)) {
		stmt_err("metrics on %s: not a loopback address "
		    "(127.0.0.0/8 or ::1)", name);
		bad = 1;
	}
	if ((flags & LISTEN_TLS) && (flags & LISTEN_ACME)) {
		stmt_err("listen on %s: tls and acme cannot be combined", name);
		bad = 1;
	}
	/* both would fail at bind(): the same address, or a wildcard */
	a = addr_bytes(la, &alen);
	for (i = 0; i < nllines && !bad; i++) {
		other = llines[i].la;
		if (other->ss.ss_family != la->ss.ss_family ||
		    addr_port(other) != addr_port(la))
			continue;
		b = addr_bytes(other, &blen);
		if (memcmp(a, b, alen) == 0) {
			stmt_err("%s %s: already used on line %d", what, name,
			    llines[i].line);
			bad = 1;
		} else if (addr_is_wildcard(la) || addr_is_wildcard(other)) {
			listen_addr_print(other, oname, sizeof(oname));
			stmt_err("%s %s: overlaps %s on line %d", what, name,
			    oname, llines[i].line);
			bad = 1;
		}
	}
	if (bad) {
		free(la);
		return;
	}
	if (flags & LISTEN_METRICS)
		TAILQ_INSERT_TAIL(&conf->metrics, la, entry);
	else if (flags & LISTEN_AGENT)
		TAILQ_INSERT_TAIL(&conf->agents, la, entry);
	else
		TAILQ_INSERT_TAIL(&conf->listeners, la, entry);
	llines = xreallocarray(llines, nllines + 1, sizeof(*llines));
	llines[nllines].la = la;
	llines[nllines].line = stmt_line;
	nllines++;
}

/* --- entry points ------------------------------------------------------- */

/* What can only be checked once the whole file is read. */
static void
check_end(void)
{
	struct limits	*lim = &conf->lim;
	char		 name[128];
	size_t		 i;

	for (i = 0; i < nllines; i++) {
		if (!(llines[i].la->flags & LISTEN_TLS) || seen[SET_TLS])
			continue;
		listen_addr_print(llines[i].la, name, sizeof(name));
		errat(llines[i].line, "listen on %s tls: no \"tls certificate "
		    "... key ...\" statement", name);
	}
	lim->fcm_configured = conf->fcm_credentials[0] != '\0';
	/* the other push statements mean nothing without a key */
	for (i = SET_FCM_PROJECT; i <= SET_PUSH_CA; i++)
		if (seen[i] != 0 && !lim->fcm_configured)
			errat(seen[i], "%s: no \"push fcm credentials\" statement",
			    i == SET_FCM_PROJECT ? "push fcm project" :
			    i == SET_FCM_ENDPOINT ? "push fcm endpoint" : "push ca");
	/* the global cap bounds the per-address one, set or not */
	if (lim->max_connections_per_ip > lim->max_connections)
		lim->max_connections_per_ip = lim->max_connections;
}

static void
parse_reset(void)
{
	struct sym	*sym;
	size_t		 i;

	while ((sym = TAILQ_FIRST(&symbols)) != NULL) {
		TAILQ_REMOVE(&symbols, sym, entry);
		free(sym->name);
		free(sym->value);
		free(sym);
	}
	for (i = 0; i < npool; i++)
		free(pool[i]);
	free(pool);
	pool = NULL;
	npool = poolsize = 0;
	free(pushback);
	pushback = NULL;
	npushback = pushbacksize = 0;
	free(llines);
	llines = NULL;
	nllines = 0;
	memset(seen, 0, sizeof(seen));
	nerrors = 0;
	lex_line = tok_line = stmt_line = 1;
	tok_count = tok_last = 0;
	at_bol = 1;
	expansions = 0;
	lex_failed = 0;
	tok_text[0] = first_word[0] = '\0';
}

static void
listen_list_clear(struct listen_list *list)
{
	struct listen_addr	*la;

	while ((la = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, la, entry);
		free(la);
	}
}

struct config *
config_parse(const char *file, char *const *macros, int nmacros)
{
	struct config	*c;
	struct stat	 st;
	size_t		 i;
	int		 j, bad = 0;

	if (file == NULL)
		file = PYRELAYD_CONF;
	for (i = 1; i < sizeof(keywords) / sizeof(keywords[0]); i++)
		if (strcmp(keywords[i - 1].name, keywords[i].name) >= 0)
			fatalx("%s: keyword table not sorted at \"%s\"",
			    __func__, keywords[i].name);

	parse_reset();
	pname = file;
	for (j = 0; j < nmacros; j++)
		if (macro_cmdline(macros[j]) == -1)
			bad = 1;
	if (bad) {
		parse_reset();
		return NULL;
	}

	if ((pfile = fopen(file, "r")) == NULL) {
		emit("%s: %s", file, strerror(errno));
		parse_reset();
		return NULL;
	}
	if (fstat(fileno(pfile), &st) == -1) {
		emit("%s: %s", file, strerror(errno));
		bad = 1;
	} else if (S_ISDIR(st.st_mode)) {
		emit("%s: %s", file, strerror(EISDIR));
		bad = 1;
	} else if (st.st_mode & S_IWOTH) {
		/* anyone could choose our listeners and paths */
		emit("%s: world-writable, refusing to use it", file);
		bad = 1;
	}
	if (bad) {
		fclose(pfile);
		pfile = NULL;
		parse_reset();
		return NULL;
	}

	conf = config_new_default();
	/* a file says where to listen; the built-in listeners are not kept */
	listen_list_clear(&conf->listeners);
	listen_list_clear(&conf->metrics);
	if (strlcpy(conf->path, file, sizeof(conf->path)) >=
	    sizeof(conf->path)) {
		emit("%s: path too long", file);
		nerrors++;
	}

	yyparse();
	if (ferror(pfile)) {
		emit("%s: %s", file, strerror(errno));
		nerrors++;
	}
	check_end();

	fclose(pfile);
	pfile = NULL;
	c = conf;
	conf = NULL;
	if (nerrors > 0) {
		config_free(c);
		c = NULL;
	}
	parse_reset();
	return c;
}

int
config_default_file_missing(const char *file)
{
	struct stat	st;

	if (file != NULL && strcmp(file, PYRELAYD_CONF) != 0)
		return 0;
	return stat(PYRELAYD_CONF, &st) == -1 && errno == ENOENT;
}
