/*
 * tls.h — the server's TLS context (OpenSSL 3): certificate chain, key,
 * protocol floor.  Built once at start-up, before privileges are dropped,
 * so the key file may be readable by root only.
 */
#ifndef POPBOX_TLS_H
#define POPBOX_TLS_H

#include <openssl/ssl.h>

/*
 * Creates a server context: TLS 1.2 or 1.3 only (min_version "TLSv1.2" or
 * "TLSv1.3"), forward-secret AEAD ciphers for TLS 1.2, no renegotiation,
 * no compression, session tickets on (a returning client skips the full
 * handshake), buffers released while a connection is idle.
 * Returns 0, or -1 with *error_r a thread-local text.
 */
int tls_context_create(const char *cert_file, const char *key_file,
		       const char *min_version, SSL_CTX **ctx_r,
		       const char **error_r);

#endif
