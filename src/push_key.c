/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The push settings' files and values (docs/push.md): the Google
 * service-account key, read by the parent as root (at start, for -n, on
 * SIGHUP and for every push process it starts) and never by a worker;
 * the CA bundle; the endpoint and token URLs and the project id.
 */
#include "config.h"

#include <arpa/inet.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "json.h"
#include "push.h"
#include "pyrelayd.h"

#define KW	"push fcm credentials"

/* A key with a passphrase is refused, never prompted for. */
static int
no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	return 0;
}

EVP_PKEY *
push_key_pkey(const char *pem, size_t len, char *err, size_t errlen)
{
	BIO		*bio;
	EVP_PKEY	*pkey = NULL;

	if ((bio = BIO_new_mem_buf(pem, (int)len)) != NULL)
		pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	ERR_clear_error();
	if (pkey == NULL) {
		snprintf(err, errlen, "private_key is not a PEM private key "
		    "(or has a passphrase)");
		return NULL;
	}
	if (!EVP_PKEY_is_a(pkey, "RSA")) {
		snprintf(err, errlen, "private_key is not an RSA key (%s)",
		    EVP_PKEY_get0_type_name(pkey) != NULL ?
		    EVP_PKEY_get0_type_name(pkey) : "unknown type");
		EVP_PKEY_free(pkey);
		return NULL;
	}
	if (EVP_PKEY_get_bits(pkey) < PUSH_RSA_BITS_MIN) {
		snprintf(err, errlen, "private_key has %d bits, fewer than %d",
		    EVP_PKEY_get_bits(pkey), PUSH_RSA_BITS_MIN);
		EVP_PKEY_free(pkey);
		return NULL;
	}
	return pkey;
}

/* Printable ASCII without blanks: what goes into a JWT claim as is. */
static int
printable(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return 0;
	return 1;
}

/* The members of the key file; the key itself goes to key->pem. */
static const char *
push_key_parse(const unsigned char *buf, size_t len, struct push_key *key)
{
	struct json_members	 m;
	const unsigned char	*v;
	char			 name[32], type[32];
	size_t			 n, vlen;
	int			 rv, have_type = 0, have_email = 0, have_pem = 0,
				 have_uri = 0;

	if (json_object_begin(&m, buf, len) == -1)
		return "not a JSON object";
	while ((rv = json_object_next(&m, name, sizeof(name), &n, &v,
	    &vlen)) == 1) {
		if (n == strlen("type") && strcmp(name, "type") == 0)
			have_type = json_string_value(v, vlen, type,
			    sizeof(type)) != (size_t)-1 &&
			    strcmp(type, "service_account") == 0;
		else if (n == strlen("client_email") &&
		    strcmp(name, "client_email") == 0)
			have_email = json_string_value(v, vlen,
			    key->client_email, sizeof(key->client_email)) !=
			    (size_t)-1 && printable(key->client_email);
		else if (n == strlen("private_key") &&
		    strcmp(name, "private_key") == 0) {
			key->pem_len = json_string_value(v, vlen, key->pem,
			    sizeof(key->pem));
			have_pem = key->pem_len != (size_t)-1;
		} else if (n == strlen("token_uri") &&
		    strcmp(name, "token_uri") == 0)
			have_uri = json_string_value(v, vlen, key->token_uri,
			    sizeof(key->token_uri)) != (size_t)-1;
		else if (n == strlen("project_id") &&
		    strcmp(name, "project_id") == 0 &&
		    json_string_value(v, vlen, key->project_id,
		    sizeof(key->project_id)) == (size_t)-1)
			key->project_id[0] = '\0';
	}
	if (rv == -1)
		return "not a JSON object";
	if (!have_type)
		return "not a service-account key (\"type\" is not "
		    "\"service_account\")";
	if (!have_email)
		return "no usable \"client_email\"";
	if (!have_pem)
		return "no usable \"private_key\"";
	if (!have_uri)
		return "no usable \"token_uri\"";
	return NULL;
}

int
push_key_load(const char *path, struct push_key *key, char *err,
    size_t errlen)
{
	unsigned char		*buf;
	struct push_url		 u;
	EVP_PKEY		*pkey;
	const char		*why;
	char			 detail[256];
	size_t			 len;
	int			 rv = -1;

	memset(key, 0, sizeof(*key));
	buf = xmalloc(PUSH_KEY_FILE_MAX);
	if (config_read_file(KW, path, 1, buf, PUSH_KEY_FILE_MAX, &len, err,
	    errlen) == -1)
		goto done;
	if ((why = push_key_parse(buf, len, key)) != NULL) {
		snprintf(err, errlen, KW " \"%s\": %s", path, why);
		goto done;
	}
	if (push_url_parse(key->token_uri, 1, &u, detail,
	    sizeof(detail)) == -1) {
		snprintf(err, errlen, KW " \"%s\": token_uri: %s", path, detail);
		goto done;
	}
	if ((pkey = push_key_pkey(key->pem, key->pem_len, detail,
	    sizeof(detail))) == NULL) {
		snprintf(err, errlen, KW " \"%s\": %s", path, detail);
		goto done;
	}
	EVP_PKEY_free(pkey);
	rv = 0;
 done:
	freezero(buf, PUSH_KEY_FILE_MAX);
	if (rv == -1)
		explicit_bzero(key, sizeof(*key));
	return rv;
}

/* RFC 3986 characters of a path and query; no '#', quote or blank */
static int
url_path_char(unsigned char c)
{
	return isalnum(c) || strchr("-._~!$&'()*+,;=:@/%?", c) != NULL;
}

int
push_url_parse(const char *url, int with_path, struct push_url *u, char *err,
    size_t errlen)
{
	const char	*p = url, *h, *e;
	unsigned char	 addr[16];
	long		 port = 443;
	char		*end;
	size_t		 n;

	memset(u, 0, sizeof(*u));
	if (strncmp(p, "https://", 8) != 0) {
		snprintf(err, errlen, "\"%s\": not an https:// URL", url);
		return -1;
	}
	p += 8;
	if (*p == '[') {
		h = p + 1;
		if ((e = strchr(h, ']')) == NULL || (n = e - h) == 0 ||
		    n >= sizeof(u->host))
			goto bad_host;
		memcpy(u->host, h, n);
		if (inet_pton(AF_INET6, u->host, addr) != 1)
			goto bad_host;
		u->host_is_ip = 1;
		p = e + 1;
	} else {
		for (n = 0; isalnum((unsigned char)p[n]) || p[n] == '-' ||
		    p[n] == '.'; n++)
			;
		if (n == 0 || n >= sizeof(u->host))
			goto bad_host;
		memcpy(u->host, p, n);
		u->host_is_ip = inet_pton(AF_INET, u->host, addr) == 1;
		p += n;
	}
	if (*p == ':') {
		if (!isdigit((unsigned char)p[1]))
			goto bad_port;
		port = strtol(p + 1, &end, 10);
		if (port < 1 || port > 65535)
			goto bad_port;
		p = end;
	}
	u->port = (uint16_t)port;
	if (*p != '\0' && *p != '/') {
		snprintf(err, errlen, "\"%s\": unexpected \"%c\" after the host",
		    url, *p);
		return -1;
	}
	if (!with_path) {
		if (*p != '\0' && strcmp(p, "/") != 0) {
			snprintf(err, errlen, "\"%s\": no path allowed", url);
			return -1;
		}
		return 0;
	}
	for (n = 0; p[n] != '\0'; n++)
		if (!url_path_char((unsigned char)p[n])) {
			snprintf(err, errlen, "\"%s\": bad character in the path",
			    url);
			return -1;
		}
	if (strlcpy(u->path, *p == '\0' ? "/" : p, sizeof(u->path)) >=
	    sizeof(u->path)) {
		snprintf(err, errlen, "\"%s\": too long", url);
		return -1;
	}
	return 0;
 bad_host:
	snprintf(err, errlen, "\"%s\": bad host", url);
	return -1;
 bad_port:
	snprintf(err, errlen, "\"%s\": bad port", url);
	return -1;
}

int
push_project_valid(const char *s)
{
	size_t	n;

	for (n = 0; s[n] != '\0'; n++)
		if (!isalnum((unsigned char)s[n]) && strchr("-._:", s[n]) == NULL)
			return 0;
	return n > 0 && n < PUSH_PROJECT_MAX;
}

int
push_ca_check(const char *path, char *err, size_t errlen)
{
	X509_STORE	*store;
	int		 ok;

	if ((store = X509_STORE_new()) == NULL)
		fatalx("X509_STORE_new");
	ok = X509_STORE_load_file(store, path) == 1;
	X509_STORE_free(store);
	ERR_clear_error();
	if (!ok)
		snprintf(err, errlen, "push ca \"%s\": no certificate could be "
		    "read from it", path);
	return ok ? 0 : -1;
}
