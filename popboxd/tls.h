/*
 * tls.h — the server's TLS contexts (OpenSSL 3): certificate chain, key,
 * protocol floor, and their replacement on SIGHUP.
 *
 * A tls_server holds the current SSL_CTX behind a lock.  New connections
 * take an SSL from whatever context is current; an SSL keeps a reference
 * to the context it came from, so a reload never disturbs a session that
 * is already open.  The session-ticket keys move to the new context, so
 * clients resume across a certificate change.
 *
 * The first context is built at start-up, before privileges are dropped,
 * so the key may be readable by root only.  A reload runs with the
 * privileges the process has then: until privilege separation gives the
 * files to a root master, a reload of a root-only key fails (logged), and
 * the old certificate stays in use.
 */
#ifndef POPBOX_TLS_H
#define POPBOX_TLS_H

#include <openssl/ssl.h>

struct tls_server;

/*
 * Loads cert_file (PEM chain) and key_file: TLS 1.2 or 1.3 only
 * (min_version "TLSv1.2" or "TLSv1.3"), forward-secret AEAD ciphers for
 * TLS 1.2, no renegotiation, no compression, session tickets on, buffers
 * released while a connection is idle.  The paths are kept for reloads.
 * Returns 0, or -1 with *error_r a thread-local text.
 */
int tls_server_create(const char *cert_file, const char *key_file,
		      const char *min_version, struct tls_server **server_r,
		      const char **error_r);
void tls_server_free(struct tls_server **server);

/* A new server-side SSL from the current context; NULL on failure.
   Thread-safe. */
SSL *tls_server_ssl_new(struct tls_server *server);

/* Re-reads the certificate and key files.  On success new connections use
   them; on failure nothing changes.  Returns 0, or -1 with *error_r. */
int tls_server_reload(struct tls_server *server, const char **error_r);

#endif
