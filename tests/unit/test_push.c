/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of the push wake texts and files (src/push_key.c,
 * src/push_oauth.c): service-account keys accepted and refused (RSA as
 * PKCS#8 and PKCS#1; group-readable, not a service account, EC, short,
 * encrypted), the push statements' checks with file:line errors, URLs and
 * project ids, the JWT-bearer grant (its RS256 signature checked with the
 * key's public half, its claims byte for byte), the FCM send body, and
 * what is kept of token and FCM replies.  Keys are made here.
 */
#include "config.h"

#include <sys/stat.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "json.h"
#include "push.h"
#include "pyrelayd.h"
#include "unit.h"

#define EMAIL	"relay@test-project.iam.gserviceaccount.com"
#define URI	"https://oauth2.example.com/token"

static char		 dir[] = "/tmp/test_push.XXXXXX";
static EVP_PKEY		*rsa, *rsa_short, *ec;
static char		 errors[8192];

static void
capture(const char *msg)
{
	strlcat(errors, msg, sizeof(errors));
	strlcat(errors, "\n", sizeof(errors));
}

/* The PEM of a key: PKCS#8, PKCS#1 ("traditional"), or PKCS#8 encrypted. */
enum pem_form { PKCS8, PKCS1, ENCRYPTED };

static char *
pem_of(EVP_PKEY *k, enum pem_form form)
{
	BIO	*bio = BIO_new(BIO_s_mem());
	char	*data, *out;
	long	 n;

	if (form == PKCS8)
		CU_ASSERT_FATAL(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0,
		    NULL, NULL) == 1);
	if (form == PKCS1)
		CU_ASSERT_FATAL(PEM_write_bio_PrivateKey_traditional(bio, k,
		    NULL, NULL, 0, NULL, NULL) == 1);
	if (form == ENCRYPTED)
		CU_ASSERT_FATAL(PEM_write_bio_PKCS8PrivateKey(bio, k,
		    EVP_aes_128_cbc(), NULL, 0, NULL, "secret") == 1);
	n = BIO_get_mem_data(bio, &data);
	out = calloc(1, n + 1);
	memcpy(out, data, n);
	BIO_free(bio);
	return out;
}

/* A JSON string with \n escapes, as Google writes private_key. */
static void
json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++)
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	fputc('"', f);
}

/* Writes a key file: type, the key's PEM, extra members; returns its path. */
static const char *
key_file(const char *name, mode_t mode, const char *type, const char *pem,
    const char *extra)
{
	static char	path[256];
	FILE		*f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	CU_ASSERT_FATAL((f = fopen(path, "w")) != NULL);
	fprintf(f, "{\n  \"type\": \"%s\",\n  \"project_id\": \"test-project\",\n"
	    "  \"private_key_id\": \"abc\",\n  \"private_key\": ", type);
	json_string(f, pem);
	fprintf(f, ",\n  \"client_email\": \"" EMAIL "\",\n"
	    "  \"token_uri\": \"" URI "\"%s\n}\n", extra);
	fclose(f);
	chmod(path, mode);
	return path;
}

static void
test_key_accepted(void)
{
	struct push_key	 k;
	char		 err[512], *pem;
	EVP_PKEY	*p;

	pem = pem_of(rsa, PKCS8);
	CU_ASSERT_EQUAL(push_key_load(key_file("p8.json", 0600,
	    "service_account", pem, ""), &k, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(k.client_email, EMAIL);
	CU_ASSERT_STRING_EQUAL(k.token_uri, URI);
	CU_ASSERT_STRING_EQUAL(k.project_id, "test-project");
	CU_ASSERT_EQUAL(k.pem_len, strlen(pem));
	CU_ASSERT(memcmp(k.pem, pem, k.pem_len) == 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p = push_key_pkey(k.pem, k.pem_len, err,
	    sizeof(err)));
	CU_ASSERT(EVP_PKEY_eq(p, rsa) == 1);
	EVP_PKEY_free(p);
	free(pem);

	/* PKCS#1, a readable-by-owner-only 0400, unknown members */
	pem = pem_of(rsa, PKCS1);
	CU_ASSERT(strncmp(pem, "-----BEGIN RSA PRIVATE KEY-----", 31) == 0);
	CU_ASSERT_EQUAL(push_key_load(key_file("p1.json", 0400,
	    "service_account", pem, ",\n  \"universe_domain\": \"x\""), &k,
	    err, sizeof(err)), 0);
	free(pem);
}

static void
expect_refused(const char *path, const char *why)
{
	struct push_key	k;
	char		err[512], want[512];

	memset(&k, 0xa5, sizeof(k));
	CU_ASSERT_EQUAL(push_key_load(path, &k, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "push fcm credentials \"%s\": %s", path,
	    why);
	CU_ASSERT_STRING_EQUAL(err, want);
	if (strcmp(err, want) != 0)
		fprintf(stderr, "\n  got:  %s\n  want: %s\n", err, want);
	/* nothing of a refused key is left behind */
	CU_ASSERT(k.pem[0] == '\0' && k.client_email[0] == '\0');
}

static void
test_key_refused(void)
{
	char	*pem = pem_of(rsa, PKCS8), *pem_ec = pem_of(ec, PKCS8);
	char	*pem_short = pem_of(rsa_short, PKCS8);
	char	*pem_enc = pem_of(rsa, ENCRYPTED), path[300];

	expect_refused(key_file("group.json", 0640, "service_account", pem, ""),
	    "must not be readable by group or others (chmod 600)");
	expect_refused(key_file("other.json", 0604, "service_account", pem, ""),
	    "must not be readable by group or others (chmod 600)");
	expect_refused(key_file("user.json", 0600, "authorized_user", pem, ""),
	    "not a service-account key (\"type\" is not \"service_account\")");
	expect_refused(key_file("ec.json", 0600, "service_account", pem_ec, ""),
	    "private_key is not an RSA key (EC)");
	expect_refused(key_file("short.json", 0600, "service_account",
	    pem_short, ""), "private_key has 1024 bits, fewer than 2048");
	expect_refused(key_file("enc.json", 0600, "service_account", pem_enc,
	    ""), "private_key is not a PEM private key (or has a passphrase)");
	expect_refused(key_file("notpem.json", 0600, "service_account",
	    "MIIE...", ""),
	    "private_key is not a PEM private key (or has a passphrase)");
	/* the last token_uri wins, and it must be https */
	expect_refused(key_file("http.json", 0600, "service_account", pem,
	    ",\n  \"token_uri\": \"http://oauth2.example.com/token\""),
	    "token_uri: \"http://oauth2.example.com/token\": not an https:// URL");
	expect_refused(key_file("email.json", 0600, "service_account", pem,
	    ",\n  \"client_email\": 7"), "no usable \"client_email\"");

	snprintf(path, sizeof(path), "%s/notjson.json", dir);
	{
		FILE	*f = fopen(path, "w");

		fputs("type = service_account\n", f);
		fclose(f);
		chmod(path, 0600);
	}
	expect_refused(path, "not a JSON object");
	snprintf(path, sizeof(path), "%s/missing.json", dir);
	expect_refused(path, "No such file or directory");
	free(pem);
	free(pem_ec);
	free(pem_short);
	free(pem_enc);
}

/* config_parse + config_check_push on a file of these lines */
static struct config *
conf_of(const char *text, int *check)
{
	struct config	*c;
	char		 path[300];
	FILE		*f;

	snprintf(path, sizeof(path), "%s/pyrelayd.conf", dir);
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	errors[0] = '\0';
	if ((c = config_parse(path, NULL, 0)) != NULL)
		*check = config_check_push(c);
	return c;
}

static void
test_config_push(void)
{
	struct config	*c;
	char		 text[2048], want[1024], *pem = pem_of(rsa, PKCS8);
	char		 good[300], bad[300], ca[300];
	int		 check = 99;
	FILE		*f;

	config_error_hook = capture;
	strlcpy(good, key_file("good.json", 0600, "service_account", pem, ""),
	    sizeof(good));
	strlcpy(bad, key_file("bad.json", 0640, "service_account", pem, ""),
	    sizeof(bad));
	/* any PEM certificate makes a CA bundle here */
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	{
		X509	*x = X509_new();

		X509_set_version(x, 2);
		ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
		X509_gmtime_adj(X509_getm_notBefore(x), 0);
		X509_gmtime_adj(X509_getm_notAfter(x), 3600);
		X509_set_pubkey(x, ec);
		X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
		    MBSTRING_ASC, (const unsigned char *)"test", -1, -1, 0);
		X509_set_issuer_name(x, X509_get_subject_name(x));
		X509_sign(x, ec, EVP_sha256());
		f = fopen(ca, "w");
		PEM_write_X509(f, x);
		fclose(f);
		X509_free(x);
	}

	snprintf(text, sizeof(text), "listen on 127.0.0.1 port 1\n"
	    "push fcm credentials \"%s\"\npush fcm project \"p-1:x.y_z\"\n"
	    "push fcm endpoint \"https://[::1]:8443/\"\npush ca \"%s\"\n",
	    good, ca);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c = conf_of(text, &check));
	CU_ASSERT_EQUAL(check, 0);
	CU_ASSERT_STRING_EQUAL(errors, "");
	CU_ASSERT_STRING_EQUAL(c->fcm_project, "p-1:x.y_z");
	CU_ASSERT_STRING_EQUAL(c->fcm_endpoint, "https://[::1]:8443/");
	CU_ASSERT_STRING_EQUAL(c->push_ca, ca);
	CU_ASSERT_EQUAL(c->lim.fcm_configured, 1);
	/* -nv prints them, and what it prints parses back the same */
	{
		char	*buf = NULL;
		size_t	 len = 0;
		FILE	*mf = open_memstream(&buf, &len);

		config_print(c, mf);
		fclose(mf);
		snprintf(want, sizeof(want), "push fcm credentials \"%s\"\n"
		    "push fcm project \"p-1:x.y_z\"\n"
		    "push fcm endpoint \"https://[::1]:8443/\"\n"
		    "push ca \"%s\"\n", good, ca);
		CU_ASSERT_PTR_NOT_NULL(strstr(buf, want));
		free(buf);
	}
	config_free(c);

	/* the key's file refused, with the file and line of the statement */
	snprintf(text, sizeof(text), "listen on 127.0.0.1 port 1\n\n"
	    "push fcm credentials \"%s\"\npush ca \"%s\"\n", bad, ca);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c = conf_of(text, &check));
	CU_ASSERT_EQUAL(check, -1);
	snprintf(want, sizeof(want), "%s/pyrelayd.conf:3: push fcm credentials "
	    "\"%s\": must not be readable by group or others (chmod 600)\n",
	    dir, bad);
	CU_ASSERT_STRING_EQUAL(errors, want);
	config_free(c);

	/* no project anywhere; a CA bundle without a certificate */
	strlcpy(good, key_file("noproject.json", 0600, "service_account", pem,
	    ",\n  \"project_id\": \"a/b\""), sizeof(good));
	snprintf(text, sizeof(text), "listen on 127.0.0.1 port 1\n"
	    "push fcm credentials \"%s\"\npush ca \"%s\"\n", good, good);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c = conf_of(text, &check));
	CU_ASSERT_EQUAL(check, -1);
	snprintf(want, sizeof(want), "%s/pyrelayd.conf:2: push fcm credentials "
	    "\"%s\": no usable \"project_id\" in it; set \"push fcm project\"\n"
	    "%s/pyrelayd.conf:3: push ca \"%s\": no certificate could be read "
	    "from it\n", dir, good, dir, good);
	CU_ASSERT_STRING_EQUAL(errors, want);
	config_free(c);

	/* values refused by the parser itself */
	snprintf(text, sizeof(text), "listen on 127.0.0.1 port 1\n"
	    "push fcm endpoint \"http://fcm.example\"\n"
	    "push fcm project \"a b\"\n"
	    "push ca \"relative.pem\"\n");
	CU_ASSERT_PTR_NULL(c = conf_of(text, &check));
	snprintf(want, sizeof(want),
	    "%s/pyrelayd.conf:2: push fcm endpoint \"http://fcm.example\": not "
	    "an https:// URL\n"
	    "%s/pyrelayd.conf:3: push fcm project \"a b\": not a project id "
	    "(letters, digits, - . _ :, at most 127)\n"
	    "%s/pyrelayd.conf:4: push ca \"relative.pem\": not an absolute path\n"
	    "%s/pyrelayd.conf:3: push fcm project: no \"push fcm credentials\" "
	    "statement\n"
	    "%s/pyrelayd.conf:2: push fcm endpoint: no \"push fcm credentials\" "
	    "statement\n"
	    "%s/pyrelayd.conf:4: push ca: no \"push fcm credentials\" "
	    "statement\n",
	    dir, dir, dir, dir, dir, dir);
	CU_ASSERT_STRING_EQUAL(errors, want);
	if (strcmp(errors, want) != 0)
		fprintf(stderr, "\n%s---\n%s", errors, want);
	config_error_hook = NULL;
	free(pem);
}

static void
test_url(void)
{
	struct push_url	u;
	char		err[256];

	CU_ASSERT_EQUAL(push_url_parse("https://fcm.googleapis.com", 0, &u,
	    err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(u.host, "fcm.googleapis.com");
	CU_ASSERT_EQUAL(u.port, 443);
	CU_ASSERT_EQUAL(u.host_is_ip, 0);
	CU_ASSERT_STRING_EQUAL(u.path, "");
	CU_ASSERT_EQUAL(push_url_parse("https://127.0.0.1:8443/", 0, &u, err,
	    sizeof(err)), 0);
	CU_ASSERT_EQUAL(u.host_is_ip, 1);
	CU_ASSERT_EQUAL(u.port, 8443);
	CU_ASSERT_EQUAL(push_url_parse("https://[2001:db8::1]:9/token?a=b", 1,
	    &u, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(u.host, "2001:db8::1");
	CU_ASSERT_EQUAL(u.host_is_ip, 1);
	CU_ASSERT_STRING_EQUAL(u.path, "/token?a=b");
	CU_ASSERT_EQUAL(push_url_parse("https://oauth2.googleapis.com", 1, &u,
	    err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(u.path, "/");

	CU_ASSERT_EQUAL(push_url_parse("http://a", 0, &u, err, sizeof(err)), -1);
	CU_ASSERT_STRING_EQUAL(err, "\"http://a\": not an https:// URL");
	CU_ASSERT_EQUAL(push_url_parse("https://", 0, &u, err, sizeof(err)), -1);
	CU_ASSERT_EQUAL(push_url_parse("https://a:0", 0, &u, err, sizeof(err)),
	    -1);
	CU_ASSERT_STRING_EQUAL(err, "\"https://a:0\": bad port");
	CU_ASSERT_EQUAL(push_url_parse("https://a:65536", 0, &u, err,
	    sizeof(err)), -1);
	CU_ASSERT_EQUAL(push_url_parse("https://a:", 0, &u, err, sizeof(err)),
	    -1);
	CU_ASSERT_EQUAL(push_url_parse("https://a/v1", 0, &u, err,
	    sizeof(err)), -1);
	CU_ASSERT_STRING_EQUAL(err, "\"https://a/v1\": no path allowed");
	CU_ASSERT_EQUAL(push_url_parse("https://u@a", 0, &u, err, sizeof(err)),
	    -1);
	CU_ASSERT_EQUAL(push_url_parse("https://[zz]", 0, &u, err, sizeof(err)),
	    -1);
	CU_ASSERT_STRING_EQUAL(err, "\"https://[zz]\": bad host");
	CU_ASSERT_EQUAL(push_url_parse("https://a/t\"k", 1, &u, err,
	    sizeof(err)), -1);
	CU_ASSERT_EQUAL(push_url_parse("https://a/t k", 1, &u, err,
	    sizeof(err)), -1);

	CU_ASSERT(push_project_valid("pyrelayd-test"));
	CU_ASSERT(push_project_valid("example.com:my-project"));
	CU_ASSERT(!push_project_valid(""));
	CU_ASSERT(!push_project_valid("a/b"));
	CU_ASSERT(!push_project_valid("a%2e"));
}

static void
test_send_body(void)
{
	char	out[4096];

	CU_ASSERT_EQUAL(push_send_body("abc:APA91b-_x", out, sizeof(out)),
	    (int)strlen(out));
	CU_ASSERT_STRING_EQUAL(out, "{\"message\":{\"token\":\"abc:APA91b-_x\","
	    "\"android\":{\"priority\":\"HIGH\"}}}");
	/* a token is only a string: what JSON needs escaped is */
	push_send_body("q\"b\\n\x01\xc3\xa9", out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "{\"message\":{\"token\":\"q\\\"b\\\\n"
	    "\\u0001\xc3\xa9\",\"android\":{\"priority\":\"HIGH\"}}}");
	CU_ASSERT_EQUAL(push_send_body("abc", out, 40), -1);
}

/* base64url without padding, decoded */
static size_t
unb64url(const char *s, size_t len, unsigned char *out)
{
	char	buf[4096];
	size_t	i;
	int	n;

	CU_ASSERT_FATAL(len + 4 < sizeof(buf));
	for (i = 0; i < len; i++)
		buf[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
	while (i % 4 != 0)
		buf[i++] = '=';
	n = EVP_DecodeBlock(out, (unsigned char *)buf, (int)i);
	CU_ASSERT_FATAL(n >= 0);
	while (len % 4 != 0 && len++ % 4 != 0)
		n--;	/* EVP_DecodeBlock counts the padding */
	return (size_t)n;
}

static void
test_grant(void)
{
	static const char	 head[] = "grant_type=urn%3Aietf%3Aparams%3Aoauth"
	    "%3Agrant-type%3Ajwt-bearer&assertion=";
	char			 out[4096], *jwt, *dot1, *dot2;
	unsigned char		 dec[2048], sig[1024];
	size_t			 n, siglen;
	EVP_MD_CTX		*ctx;
	int			 len;

	len = push_grant_body(rsa, EMAIL, URI, 1700000000, out, sizeof(out));
	CU_ASSERT_FATAL(len > 0 && (size_t)len == strlen(out));
	CU_ASSERT_FATAL(strncmp(out, head, sizeof(head) - 1) == 0);
	jwt = out + sizeof(head) - 1;
	CU_ASSERT(strspn(jwt, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-_.") == strlen(jwt));
	CU_ASSERT_FATAL((dot1 = strchr(jwt, '.')) != NULL);
	CU_ASSERT_FATAL((dot2 = strchr(dot1 + 1, '.')) != NULL);
	CU_ASSERT(strchr(dot2 + 1, '.') == NULL);

	n = unb64url(jwt, dot1 - jwt, dec);
	CU_ASSERT(n == strlen("{\"alg\":\"RS256\",\"typ\":\"JWT\"}") &&
	    memcmp(dec, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}", n) == 0);
	n = unb64url(dot1 + 1, dot2 - dot1 - 1, dec);
	dec[n] = '\0';
	CU_ASSERT_STRING_EQUAL((char *)dec, "{\"iss\":\"" EMAIL "\",\"scope\":"
	    "\"https://www.googleapis.com/auth/firebase.messaging\",\"aud\":\""
	    URI "\",\"iat\":1700000000,\"exp\":1700003600}");

	/* RS256 over "header.claims", checked with the public half */
	siglen = unb64url(dot2 + 1, strlen(dot2 + 1), sig);
	CU_ASSERT_EQUAL(siglen, 256);
	ctx = EVP_MD_CTX_new();
	CU_ASSERT(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, rsa) == 1);
	CU_ASSERT(EVP_DigestVerify(ctx, sig, siglen, (unsigned char *)jwt,
	    dot2 - jwt) == 1);
	/* and not over anything else */
	EVP_MD_CTX_reset(ctx);
	EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, rsa);
	CU_ASSERT(EVP_DigestVerify(ctx, sig, siglen, (unsigned char *)jwt,
	    dot2 - jwt - 1) != 1);
	EVP_MD_CTX_free(ctx);

	CU_ASSERT_EQUAL(push_grant_body(rsa, EMAIL, URI, 1700000000, out,
	    200), -1);
}

#define LIT(s)	(const unsigned char *)(s), sizeof(s) - 1

static void
test_token_reply(void)
{
	static const struct {
		const char	*reply, *why;
	} bad[] = {
		{ "{\"access_token\":\"t\",\"expires_in\":1,\"token_type\":\"mac\"}",
		    "token_type is not Bearer" },
		{ "{\"access_token\":\"a b\",\"expires_in\":1}",
		    "no usable access_token" },
		{ "{\"access_token\":\"a\\r\\nX-Evil: 1\",\"expires_in\":1}",
		    "no usable access_token" },
		{ "{\"access_token\":\"\",\"expires_in\":1}",
		    "no usable access_token" },
		{ "{\"expires_in\":1}", "no usable access_token" },
		{ "{\"access_token\":\"t\",\"expires_in\":\"3599\"}",
		    "no usable expires_in" },
		{ "{\"access_token\":\"t\",\"expires_in\":-1}",
		    "no usable expires_in" },
		{ "{\"access_token\":\"t\",\"expires_in\":1.5}",
		    "no usable expires_in" },
		{ "<html>", "reply is not a JSON object" },
		{ "{\"access_token\":\"t\"}x", "reply is not a JSON object" },
	};
	char		 access[PUSH_ACCESS_MAX];
	uint64_t	 exp = 0;
	size_t		 i;

	CU_ASSERT_PTR_NULL(push_token_reply(LIT("{\"access_token\":\"ya29.a-b_c\","
	    "\"expires_in\":3599,\"token_type\":\"Bearer\"}"), access,
	    sizeof(access), &exp));
	CU_ASSERT_STRING_EQUAL(access, "ya29.a-b_c");
	CU_ASSERT_EQUAL(exp, 3599);
	CU_ASSERT_PTR_NULL(push_token_reply(LIT(" {\"expires_in\" : 60 ,"
	    "\"access_token\":\"t\", \"extra\": [1, {}]} "), access,
	    sizeof(access), &exp));
	CU_ASSERT_EQUAL(exp, 60);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CU_ASSERT_STRING_EQUAL(push_token_reply((const unsigned char *)
		    bad[i].reply, strlen(bad[i].reply), access, sizeof(access),
		    &exp), bad[i].why);
	CU_ASSERT_STRING_EQUAL(push_token_reply(LIT("{\"access_token\":\"tttt\","
	    "\"expires_in\":1}"), access, 4, &exp), "no usable access_token");
}

static void
test_fcm_reply(void)
{
	struct push_result	r;

	memset(&r, 0, sizeof(r));
	r.status = 200;
	CU_ASSERT_EQUAL(push_fcm_reply(LIT("{\n  \"name\": \"projects/p/messages/"
	    "0:1500415314455276%31bd1c9631bd1c96\"\n}\n"), &r), PUSH_SENT);
	CU_ASSERT_STRING_EQUAL(r.message_id, "");	/* '%' is not kept */
	CU_ASSERT_EQUAL(push_fcm_reply(LIT("{\"name\":\"projects/p/messages/"
	    "0:15\"}"), &r), PUSH_SENT);
	CU_ASSERT_STRING_EQUAL(r.message_id, "projects/p/messages/0:15");
	CU_ASSERT_EQUAL(push_fcm_reply(LIT(""), &r), PUSH_SENT);
	CU_ASSERT_STRING_EQUAL(r.message_id, "");

	r.status = 404;
	CU_ASSERT_EQUAL(push_fcm_reply(LIT("{\"error\":{\"code\":404,\"message\":"
	    "\"Requested entity was not found.\",\"status\":\"NOT_FOUND\","
	    "\"details\":[{\"@type\":\"type.googleapis.com/google.firebase.fcm."
	    "v1.FcmError\",\"errorCode\":\"UNREGISTERED\"}]}}"), &r),
	    PUSH_UNREGISTERED);
	CU_ASSERT_STRING_EQUAL(r.error_status, "NOT_FOUND");
	CU_ASSERT_STRING_EQUAL(r.error_code, "UNREGISTERED");

	r.status = 400;
	CU_ASSERT_EQUAL(push_fcm_reply(LIT("{\"error\":{\"status\":"
	    "\"INVALID_ARGUMENT\",\"details\":[{\"@type\":\"type.googleapis.com/"
	    "google.rpc.BadRequest\",\"errorCode\":\"UNREGISTERED\"},{\"@type\":"
	    "\"type.googleapis.com/google.firebase.fcm.v1.FcmError\","
	    "\"errorCode\":\"INVALID_ARGUMENT\"}]}}"), &r), PUSH_SEND_FAILED);
	CU_ASSERT_STRING_EQUAL(r.error_status, "INVALID_ARGUMENT");
	CU_ASSERT_STRING_EQUAL(r.error_code, "INVALID_ARGUMENT");

	/* what is not a plain identifier is not kept (it would be logged) */
	r.status = 500;
	CU_ASSERT_EQUAL(push_fcm_reply(LIT("{\"error\":{\"status\":\"x y\\n\"}}"),
	    &r), PUSH_SEND_FAILED);
	CU_ASSERT_STRING_EQUAL(r.error_status, "");
	CU_ASSERT_EQUAL(push_fcm_reply(LIT("<html>Internal</html>"), &r),
	    PUSH_SEND_FAILED);
	CU_ASSERT_STRING_EQUAL(r.error_status, "");
	CU_ASSERT_STRING_EQUAL(r.error_code, "");
	/* a 2xx is success whatever its body, an error never is */
	r.status = 204;
	CU_ASSERT_EQUAL(push_fcm_reply(LIT("{\"error\":{}}"), &r), PUSH_SENT);
	r.status = 302;
	CU_ASSERT_EQUAL(push_fcm_reply(LIT("{\"name\":\"x\"}"), &r),
	    PUSH_SEND_FAILED);
	CU_ASSERT_STRING_EQUAL(r.message_id, "");
}

static void
test_names(void)
{
	char	hex[PUSH_HASH_LEN + 1];

	push_token_hash("tok", hex);
	CU_ASSERT_STRING_EQUAL(hex, "1a7674eb");
	push_token_hash("tok-SECRET-push", hex);
	CU_ASSERT_STRING_EQUAL(hex, "44b25736");
	CU_ASSERT_STRING_EQUAL(push_outcome_name(PUSH_SENT), "sent");
	CU_ASSERT_STRING_EQUAL(push_outcome_name(PUSH_UNREGISTERED),
	    "unregistered");
	CU_ASSERT_STRING_EQUAL(push_outcome_name(PUSH_SEND_FAILED),
	    "send_failed");
	CU_ASSERT_STRING_EQUAL(push_outcome_name(PUSH_TOKEN_FETCH_FAILED),
	    "token_fetch_failed");
	CU_ASSERT_STRING_EQUAL(push_outcome_name(PUSH_DROPPED), "dropped");
}

static int
setup(void)
{
	if (mkdtemp(dir) == NULL)
		return -1;
	rsa = EVP_RSA_gen(2048);
	rsa_short = EVP_RSA_gen(1024);
	ec = EVP_EC_gen("P-256");
	return rsa == NULL || rsa_short == NULL || ec == NULL ? -1 : 0;
}

static int
teardown(void)
{
	char	cmd[64];

	EVP_PKEY_free(rsa);
	EVP_PKEY_free(rsa_short);
	EVP_PKEY_free(ec);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static CU_TestInfo push_tests[] = {
	{ "service-account keys accepted", test_key_accepted },
	{ "service-account keys refused", test_key_refused },
	{ "push statements, file:line errors", test_config_push },
	{ "URLs and project ids", test_url },
	{ "FCM send body", test_send_body },
	{ "JWT-bearer grant", test_grant },
	{ "token endpoint replies", test_token_reply },
	{ "FCM replies", test_fcm_reply },
	{ "token hash, outcome names", test_names },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "push", setup, teardown, NULL, NULL, push_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
