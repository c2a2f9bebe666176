/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * TLS material and contexts (docs/architecture.md "TLS"): the parent reads the
 * certificate chain and key files as root and sends their bytes to the
 * fronts (MSG_TLS); a front builds its SSL_CTX from memory.  Workers never
 * open files, relays never hold keys or TLS state.
 */
#ifndef TLS_H
#define TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "proto.h"

/*
 * Parent: reads cert (PEM chain) and key (PEM) into out.  Refuses a key
 * file readable by group or others, a file that is not regular, or
 * material larger than TLS_PEM_MAX.  Returns 0, or -1 with a message that
 * names the keyword in err.
 */
int	 tls_load_files(const char *cert, const char *key, struct msg_tls *out,
	    char *err, size_t errlen);

/*
 * Front: an SSL_CTX for TLS 1.2 and 1.3, modern ciphers, ALPN http/1.1,
 * kernel TLS offload allowed, SNI checked against *domain (when domain is
 * not "" at handshake time; the pointer must stay valid).  NULL with err
 * set on failure.
 */
SSL_CTX	*tls_ctx_new(const struct msg_tls *, const char *domain, char *err,
	    size_t errlen);

/* Host header value (port stripped, case-insensitive) equals domain. */
int	 tls_host_matches(const char *host, const char *domain);

/* Kernel TLS is on in both directions for this connection. */
int	 tls_ktls_both(SSL *);

/* Makes OpenSSL load what it loads lazily, before the sandbox. */
void	 tls_preload(void);

#endif
