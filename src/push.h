/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Push wakes (docs/protocol.md §6, docs/push.md): the service-account key
 * and the push settings (push_key.c, read by the parent and checked with
 * the configuration), the OAuth2 JWT grant and the FCM request and
 * replies (push_oauth.c), and the push process that sends them (push.c
 * over the HTTPS client of push_http.c).  All in libpush.a, which only
 * pyrelayd links; the parent calls push_key.c's functions and
 * push_token_hash alone (docs/build.md, rule 3).
 */
#ifndef PUSH_H
#define PUSH_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "msg.h"
#include "proto.h"
#include "pyrelayd.h"

#define PUSH_KEY_FILE_MAX	(64 * 1024)	/* a key file is about 2.4 KiB */
#define PUSH_RSA_BITS_MIN	2048
#define PUSH_SCOPE		"https://www.googleapis.com/auth/firebase.messaging"
#define PUSH_JWT_LIFE_S		3600		/* exp - iat */
#define PUSH_ACCESS_MAX		2048		/* an OAuth2 access token, NUL included */
#define PUSH_ID_MAX		256		/* a message id, NUL included */
#define PUSH_CODE_MAX		64		/* an error status or code */
#define PUSH_HASH_LEN		8		/* hex digits of SHA-256(token) logged */

/* What the push process needs from a service-account key. */
struct push_key {
	char	client_email[PUSH_EMAIL_MAX];
	char	token_uri[PUSH_URL_MAX];
	char	project_id[PUSH_PROJECT_MAX];	/* "" when the key has none */
	size_t	pem_len;
	char	pem[PUSH_KEY_MAX];		/* the private key, PEM */
};

/* https://host[:port][/path], as the push process connects to it. */
struct push_url {
	char		host[256];	/* a name, or an address without [] */
	int		host_is_ip;
	uint16_t	port;
	char		path[PUSH_URL_MAX];	/* "" when none */
};

/* push_key.c */
/*
 * Reads and checks a Google service-account key file: not accessible by
 * group or others, a JSON object with "type" "service_account", a
 * "client_email", a "private_key" that is RSA (PKCS#8 or PKCS#1 PEM, at
 * least PUSH_RSA_BITS_MIN bits, not encrypted) and an https "token_uri";
 * "project_id" is optional here.  Returns 0, or -1 with err saying why
 * ("push fcm credentials \"path\": ...").  The caller wipes key after use.
 */
int	 push_key_load(const char *path, struct push_key *key, char *err,
	    size_t errlen);
/* The RSA private key of a PEM text, or NULL with err set. */
EVP_PKEY *push_key_pkey(const char *pem, size_t len, char *err,
	    size_t errlen);
/*
 * Parses an https URL: a host name or address (IPv6 in brackets), an
 * optional port (443), and a path only when with_path (the endpoint may
 * end in one "/").  Returns 0, or -1 with err saying why.
 */
int	 push_url_parse(const char *url, int with_path, struct push_url *,
	    char *err, size_t errlen);
/* A Google Cloud project id as it may appear in a URL path. */
int	 push_project_valid(const char *);
/*
 * The CA bundle at path holds a certificate OpenSSL can read: 0, or -1
 * with err saying why ("push ca \"path\": ...").
 */
int	 push_ca_check(const char *path, char *err, size_t errlen);

/* push_oauth.c */
/* "sent", "unregistered", "send_failed", "token_fetch_failed", "dropped" */
const char *push_outcome_name(enum push_outcome);
/* The first PUSH_HASH_LEN hex digits of SHA-256(token): all a log shows. */
void	 push_token_hash(const char *token, char hex[PUSH_HASH_LEN + 1]);
/*
 * The body of the JWT-bearer grant (RFC 7523) for the key: an RS256 JWT
 * with iss, scope, aud (the token_uri), iat = now_s and exp = iat + 3600.
 * Returns its length, or -1 when it does not fit in size or signing fails.
 */
int	 push_grant_body(EVP_PKEY *, const char *client_email,
	    const char *token_uri, int64_t now_s, char *out, size_t size);
/* {"message":{"token":"<t>","android":{"priority":"HIGH"}}}, or -1. */
int	 push_send_body(const char *token, char *out, size_t size);
/*
 * A token endpoint's 2xx reply: the access token (printable ASCII, no
 * space) and its lifetime.  NULL, or why the reply is not usable.
 */
const char *push_token_reply(const unsigned char *body, size_t len,
	    char *access, size_t accesssize, uint64_t *expires_in_s);

/* What a send's reply says. */
struct push_result {
	int	status;				/* HTTP status; 0: none */
	char	message_id[PUSH_ID_MAX];	/* 2xx: the reply's "name" */
	char	error_status[PUSH_CODE_MAX];	/* error.status */
	char	error_code[PUSH_CODE_MAX];	/* FcmError errorCode */
};
/*
 * Reads an FCM reply into res (status already set): the message id of a
 * 2xx, or an error's status and FcmError errorCode.  Fields that are
 * missing, or not plain identifiers, stay "" (a reply body is never
 * logged, so nothing else of it is kept).  Returns the outcome:
 * PUSH_SENT, PUSH_UNREGISTERED or PUSH_SEND_FAILED.
 */
enum push_outcome push_fcm_reply(const unsigned char *body, size_t len,
	    struct push_result *res);

/* push.c: the push process, on its channel (proc.c's start-up) */
extern const struct msg_rules	push_from_parent;
void	 push_main(void) __attribute__((__noreturn__));

#endif
