/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The texts of push wakes (docs/push.md): the OAuth2 JWT-bearer grant
 * (RFC 7523, RS256) for a service-account key, the FCM HTTP v1 send body,
 * and what is kept of the replies: an access token and its lifetime, a
 * message id, an error's status and FcmError code.  Nothing else of a
 * reply is kept, so nothing else of it can reach a log.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "json.h"
#include "push.h"

/* base64url of {"alg":"RS256","typ":"JWT"} */
#define JWT_HEADER	"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
#define FCM_ERROR_TYPE	"type.googleapis.com/google.firebase.fcm.v1.FcmError"

const char *
push_outcome_name(enum push_outcome o)
{
	static const char *const names[PUSH_OUTCOME_MAX] = { "sent",
	    "unregistered", "send_failed", "token_fetch_failed", "dropped" };

	return o < PUSH_OUTCOME_MAX ? names[o] : "unknown";
}

void
push_token_hash(const char *token, char hex[PUSH_HASH_LEN + 1])
{
	unsigned char	md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)token, strlen(token), md);
	snprintf(hex, PUSH_HASH_LEN + 1, "%02x%02x%02x%02x", md[0], md[1],
	    md[2], md[3]);
}

/* Appends base64url (RFC 4648 §5, no padding) of in to out at *len. */
static int
b64url(const unsigned char *in, size_t inlen, char *out, size_t size,
    size_t *len)
{
	size_t	need = 4 * ((inlen + 2) / 3), i;
	int	n;

	if (need + 1 > size - *len)
		return -1;
	n = EVP_EncodeBlock((unsigned char *)out + *len, in, (int)inlen);
	for (i = *len; i < *len + (size_t)n; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	while (n > 0 && out[*len + n - 1] == '=')
		n--;
	*len += n;
	out[*len] = '\0';
	return 0;
}

/* Appends the JWT to out at *len: header.claims.signature, RS256 over
 * header.claims. */
static int
push_jwt(EVP_PKEY *pkey, const char *email, const char *aud, int64_t now_s,
    char *out, size_t size, size_t *len)
{
	EVP_MD_CTX	*ctx;
	unsigned char	 sig[1024];
	char		 claims[2 * PUSH_URL_MAX + 2 * PUSH_EMAIL_MAX + 256];
	char		 iss_esc[2 * PUSH_EMAIL_MAX], aud_esc[2 * PUSH_URL_MAX];
	size_t		 siglen = sizeof(sig), start = *len;
	int		 n, ok;

	if (json_escape(email, iss_esc, sizeof(iss_esc)) == (size_t)-1 ||
	    json_escape(aud, aud_esc, sizeof(aud_esc)) == (size_t)-1)
		return -1;
	n = snprintf(claims, sizeof(claims), "{\"iss\":\"%s\",\"scope\":\""
	    PUSH_SCOPE "\",\"aud\":\"%s\",\"iat\":%lld,\"exp\":%lld}",
	    iss_esc, aud_esc, (long long)now_s,
	    (long long)(now_s + PUSH_JWT_LIFE_S));
	if (n < 0 || (size_t)n >= sizeof(claims))
		return -1;
	if (sizeof(JWT_HEADER) + 1 > size - *len)
		return -1;
	memcpy(out + *len, JWT_HEADER ".", sizeof(JWT_HEADER));
	*len += sizeof(JWT_HEADER);
	if (b64url((unsigned char *)claims, n, out, size, len) == -1)
		return -1;
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return -1;
	ok = EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
	    EVP_DigestSign(ctx, NULL, &siglen, (unsigned char *)out + start,
	    *len - start) == 1 && siglen <= sizeof(sig) &&
	    EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)out + start,
	    *len - start) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok || *len + 2 > size)
		return -1;
	out[(*len)++] = '.';
	return b64url(sig, siglen, out, size, len);
}

int
push_grant_body(EVP_PKEY *pkey, const char *client_email,
    const char *token_uri, int64_t now_s, char *out, size_t size)
{
	static const char	 head[] = "grant_type=urn%3Aietf%3Aparams%3A"
	    "oauth%3Agrant-type%3Ajwt-bearer&assertion=";
	size_t			 len = sizeof(head) - 1;

	if (size <= len)
		return -1;
	memcpy(out, head, len);
	if (push_jwt(pkey, client_email, token_uri, now_s, out, size,
	    &len) == -1)
		return -1;
	return (int)len;
}

int
push_send_body(const char *token, char *out, size_t size)
{
	char	esc[6 * PUSH_TOKEN_MAX];
	int	n;

	if (json_escape(token, esc, sizeof(esc)) == (size_t)-1)
		return -1;
	n = snprintf(out, size, "{\"message\":{\"token\":\"%s\","
	    "\"android\":{\"priority\":\"HIGH\"}}}", esc);
	return n < 0 || (size_t)n >= size ? -1 : n;
}

#define KEY_IS(k, n, lit)	((n) == sizeof(lit) - 1 && strcmp((k), (lit)) == 0)

const char *
push_token_reply(const unsigned char *body, size_t len, char *access,
    size_t accesssize, uint64_t *expires_in_s)
{
	struct json_members	 m;
	const unsigned char	*v;
	char			 key[32], type[16];
	size_t			 n, vlen, i;
	int			 rv, have_access = 0, have_expiry = 0;

	if (json_object_begin(&m, body, len) == -1)
		return "reply is not a JSON object";
	while ((rv = json_object_next(&m, key, sizeof(key), &n, &v,
	    &vlen)) == 1) {
		if (KEY_IS(key, n, "access_token"))
			have_access = json_string_value(v, vlen, access,
			    accesssize) != (size_t)-1;
		else if (KEY_IS(key, n, "expires_in"))
			have_expiry = json_uint_value(v, vlen, 86400 * 365,
			    expires_in_s) == 0;
		else if (KEY_IS(key, n, "token_type") &&
		    (json_string_value(v, vlen, type, sizeof(type)) ==
		    (size_t)-1 || strcasecmp(type, "Bearer") != 0))
			return "token_type is not Bearer";
	}
	if (rv == -1)
		return "reply is not a JSON object";
	if (!have_access || access[0] == '\0')
		return "no usable access_token";
	/* it goes into an Authorization header as is */
	for (i = 0; access[i] != '\0'; i++)
		if (access[i] <= 0x20 || access[i] >= 0x7f)
			return "no usable access_token";
	if (!have_expiry)
		return "no usable expires_in";
	return NULL;
}

/* A string member kept only when it is a plain identifier (logged as is). */
static void
ident_value(const unsigned char *v, size_t vlen, char *dst, size_t size)
{
	size_t	i;

	if (json_string_value(v, vlen, dst, size) == (size_t)-1) {
		dst[0] = '\0';
		return;
	}
	for (i = 0; dst[i] != '\0'; i++)
		if (!((dst[i] >= 'a' && dst[i] <= 'z') ||
		    (dst[i] >= 'A' && dst[i] <= 'Z') ||
		    (dst[i] >= '0' && dst[i] <= '9') ||
		    strchr("-_./:", dst[i]) != NULL)) {
			dst[0] = '\0';
			return;
		}
}

/* error.details[]: the errorCode of the FcmError among them */
static void
fcm_details(const unsigned char *buf, size_t len, struct push_result *res)
{
	struct json_members	 a, m;
	const unsigned char	*e, *v;
	char			 key[16], type[sizeof(FCM_ERROR_TYPE)];
	char			 code[PUSH_CODE_MAX];
	size_t			 elen, vlen, n;
	int			 fcm;

	if (json_array_begin(&a, buf, len) == -1)
		return;
	while (json_array_next(&a, &e, &elen) == 1) {
		if (json_object_begin(&m, e, elen) == -1)
			continue;
		fcm = 0;
		code[0] = '\0';
		while (json_object_next(&m, key, sizeof(key), &n, &v,
		    &vlen) == 1) {
			if (KEY_IS(key, n, "@type"))
				fcm = json_string_value(v, vlen, type,
				    sizeof(type)) != (size_t)-1 &&
				    strcmp(type, FCM_ERROR_TYPE) == 0;
			else if (KEY_IS(key, n, "errorCode"))
				ident_value(v, vlen, code, sizeof(code));
		}
		if (fcm && code[0] != '\0')
			strlcpy(res->error_code, code, sizeof(res->error_code));
	}
}

enum push_outcome
push_fcm_reply(const unsigned char *body, size_t len, struct push_result *res)
{
	struct json_members	 m, em;
	const unsigned char	*v, *ev;
	char			 key[16];
	size_t			 n, vlen, evlen;
	int			 ok = res->status >= 200 && res->status <= 299;

	res->message_id[0] = res->error_status[0] = res->error_code[0] = '\0';
	if (json_object_begin(&m, body, len) == 0) {
		while (json_object_next(&m, key, sizeof(key), &n, &v,
		    &vlen) == 1) {
			if (ok && KEY_IS(key, n, "name"))
				ident_value(v, vlen, res->message_id,
				    sizeof(res->message_id));
			else if (!ok && KEY_IS(key, n, "error") &&
			    json_object_begin(&em, v, vlen) == 0)
				while (json_object_next(&em, key, sizeof(key),
				    &n, &ev, &evlen) == 1) {
					if (KEY_IS(key, n, "status"))
						ident_value(ev, evlen,
						    res->error_status,
						    sizeof(res->error_status));
					else if (KEY_IS(key, n, "details"))
						fcm_details(ev, evlen, res);
				}
		}
	}
	if (ok)
		return PUSH_SENT;
	if (strcmp(res->error_code, "UNREGISTERED") == 0)
		return PUSH_UNREGISTERED;
	return PUSH_SEND_FAILED;
}
