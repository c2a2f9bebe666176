/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "pyrelayd.h"
#include "tls.h"

/* TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 keeps its defaults */
#define TLS12_CIPHERS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

int
tls_load_files(const char *cert, const char *key, struct msg_tls *out,
    char *err, size_t errlen)
{
	size_t	clen, klen;

	memset(out, 0, sizeof(*out));
	if (config_read_file("tls certificate chain", cert, 0, out->pem,
	    sizeof(out->pem), &clen, err, errlen) == -1)
		return -1;
	if (config_read_file("tls certificate key", key, 1, out->pem + clen,
	    sizeof(out->pem) - clen, &klen, err, errlen) == -1) {
		explicit_bzero(out, sizeof(*out));
		return -1;
	}
	out->cert_len = clen;
	out->key_len = klen;
	return 0;
}

static void
ssl_error(char *err, size_t errlen, const char *what)
{
	unsigned long	e = ERR_get_error();
	char		buf[256];

	ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s: %s", what, e ? buf : "failed");
	ERR_clear_error();
}

/* docs/protocol.md: SNI that does not match the domain is refused at the handshake */
static int
tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
	const char	*domain = arg, *name;

	if (domain == NULL || domain[0] == '\0')
		return SSL_TLSEXT_ERR_OK;
	name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (name == NULL)
		return SSL_TLSEXT_ERR_OK;	/* no SNI: the Host check decides */
	if (strcasecmp(name, domain) == 0)
		return SSL_TLSEXT_ERR_OK;
	*alert = SSL_AD_UNRECOGNIZED_NAME;
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int
tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char	 http11[] = "\x08http/1.1";
	unsigned char			*sel;

	if (SSL_select_next_proto(&sel, outlen, http11, sizeof(http11) - 1, in,
	    inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *
tls_ctx_new(const struct msg_tls *m, const char *domain, char *err,
    size_t errlen)
{
	SSL_CTX		*ctx;
	BIO		*bio = NULL;
	X509		*x509 = NULL;
	EVP_PKEY	*pkey = NULL;
	const char	*why;

	/* a front's copy passed this check on receipt; the parent's own, here */
	if ((why = msg_tls_check(m, sizeof(*m))) != NULL) {
		snprintf(err, errlen, "tls material: %s", why);
		return NULL;
	}
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		ssl_error(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
	    SSL_OP_ENABLE_KTLS);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
		ssl_error(err, errlen, "cipher list");
		goto fail;
	}
	SSL_CTX_set_tlsext_servername_callback(ctx, tls_sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, (void *)domain);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);

	/* the chain: first the leaf, then every intermediate */
	if ((bio = BIO_new_mem_buf(m->pem, m->cert_len)) == NULL ||
	    (x509 = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL)) == NULL) {
		ssl_error(err, errlen, "tls certificate: no certificate in the chain file");
		goto fail;
	}
	if (SSL_CTX_use_certificate(ctx, x509) != 1) {
		ssl_error(err, errlen, "tls certificate");
		goto fail;
	}
	X509_free(x509);
	x509 = NULL;
	SSL_CTX_clear_chain_certs(ctx);
	while ((x509 = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, x509) != 1) {
			ssl_error(err, errlen, "tls certificate chain");
			goto fail;
		}
		x509 = NULL;
	}
	ERR_clear_error();	/* the end of the chain reads as an error */
	BIO_free(bio);

	if ((bio = BIO_new_mem_buf(m->pem + m->cert_len, m->key_len)) == NULL ||
	    (pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL) {
		ssl_error(err, errlen, "tls certificate key");
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ssl_error(err, errlen, "tls certificate key does not match the certificate");
		goto fail;
	}
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	return ctx;
fail:
	X509_free(x509);
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	SSL_CTX_free(ctx);
	return NULL;
}

int
tls_host_matches(const char *host, const char *domain)
{
	size_t	 len = strlen(host);
	const char *colon;

	/* strip a port: host:port, or [v6]:port */
	if (host[0] == '[') {
		if ((colon = strchr(host, ']')) == NULL)
			return 0;
		len = colon - host + 1;
	} else if ((colon = strrchr(host, ':')) != NULL)
		len = colon - host;
	return strlen(domain) == len && strncasecmp(host, domain, len) == 0;
}

int
tls_ktls_both(SSL *ssl)
{
	return BIO_get_ktls_send(SSL_get_wbio(ssl)) &&
	    BIO_get_ktls_recv(SSL_get_rbio(ssl));
}

void
tls_preload(void)
{
	SSL_CTX	*ctx;
	SSL	*ssl;

	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL);
	if ((ctx = SSL_CTX_new(TLS_server_method())) != NULL) {
		SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
		if ((ssl = SSL_new(ctx)) != NULL)
			SSL_free(ssl);
		SSL_CTX_free(ctx);
	}
	ERR_clear_error();
}
