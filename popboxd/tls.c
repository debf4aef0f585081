/*
 * tls.c — the server's TLS contexts (see tls.h).
 */
#include "tls.h"

#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenSSL 3's ticket key block: name, HMAC secret, AES key. */
#define TLS_TICKET_KEYS_LEN 80

struct tls_server {
	pthread_mutex_t lock;   /* guards ctx */
	SSL_CTX *ctx;
	char *cert_file;
	char *key_file;
	char *min_version;
};

/* TLS 1.2 suites: ECDHE (forward secrecy) with AEAD only.  TLS 1.3 suites
   are all AEAD and keep OpenSSL's defaults. */
#define TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"

static _Thread_local char tls_errbuf[256];

static const char *tls_error(const char *what)
{
	char detail[200];
	unsigned long code = ERR_get_error();

	if (code != 0)
		ERR_error_string_n(code, detail, sizeof(detail));
	else
		snprintf(detail, sizeof(detail), "unknown error");
	ERR_clear_error();
	snprintf(tls_errbuf, sizeof(tls_errbuf), "%s: %s", what, detail);
	return tls_errbuf;
}

static int tls_context_create(const char *cert_file, const char *key_file,
		       const char *min_version, SSL_CTX **ctx_r,
		       const char **error_r)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	int floor = min_version != NULL && strcmp(min_version, "TLSv1.3") == 0 ?
		    TLS1_3_VERSION : TLS1_2_VERSION;

	if (ctx == NULL) {
		*error_r = tls_error("SSL_CTX_new");
		return -1;
	}
	SSL_CTX_set_min_proto_version(ctx, floor);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
			    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
		*error_r = tls_error("cipher list");
	} else if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		*error_r = tls_error(cert_file);
	} else if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		*error_r = tls_error(key_file);
	} else if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = tls_error("key does not match certificate");
	} else {
		*ctx_r = ctx;
		return 0;
	}
	SSL_CTX_free(ctx);
	return -1;
}

int tls_server_create(const char *cert_file, const char *key_file,
		      const char *min_version, struct tls_server **server_r,
		      const char **error_r)
{
	struct tls_server *t = calloc(1, sizeof(*t));

	if (t == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->cert_file = strdup(cert_file);
	t->key_file = strdup(key_file);
	t->min_version = strdup(min_version != NULL ? min_version : "TLSv1.2");
	if (t->cert_file == NULL || t->key_file == NULL || t->min_version == NULL) {
		*error_r = "out of memory";
		tls_server_free(&t);
		return -1;
	}
	if (tls_context_create(cert_file, key_file, t->min_version, &t->ctx,
			       error_r) < 0) {
		tls_server_free(&t);
		return -1;
	}
	*server_r = t;
	return 0;
}

void tls_server_free(struct tls_server **server)
{
	struct tls_server *t = *server;

	if (t == NULL)
		return;
	SSL_CTX_free(t->ctx);
	pthread_mutex_destroy(&t->lock);
	free(t->cert_file);
	free(t->key_file);
	free(t->min_version);
	free(t);
	*server = NULL;
}

SSL *tls_server_ssl_new(struct tls_server *t)
{
	pthread_mutex_lock(&t->lock);
	SSL *ssl = SSL_new(t->ctx);
	pthread_mutex_unlock(&t->lock);
	return ssl;
}

int tls_server_reload(struct tls_server *t, const char **error_r)
{
	unsigned char keys[TLS_TICKET_KEYS_LEN];
	SSL_CTX *fresh, *old;

	if (tls_context_create(t->cert_file, t->key_file, t->min_version,
			       &fresh, error_r) < 0)
		return -1;
	pthread_mutex_lock(&t->lock);
	old = t->ctx;
	/* Same ticket keys: tickets issued before the reload still resume. */
	if (SSL_CTX_get_tlsext_ticket_keys(old, keys, sizeof(keys)) == 1)
		SSL_CTX_set_tlsext_ticket_keys(fresh, keys, sizeof(keys));
	t->ctx = fresh;
	pthread_mutex_unlock(&t->lock);
	OPENSSL_cleanse(keys, sizeof(keys));
	/* Open sessions hold their own references to the old context. */
	SSL_CTX_free(old);
	return 0;
}
