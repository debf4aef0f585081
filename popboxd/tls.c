/*
 * tls.c — the server's TLS context (see tls.h).
 */
#include "tls.h"

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

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

int tls_context_create(const char *cert_file, const char *key_file,
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
