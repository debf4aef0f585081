/*
 * fuzz-sasl-client.c — libFuzzer harness for popbox-fetch's authentication
 * client: hostile server challenges fed to every SASL mechanism, plus the
 * CAPA mechanism-list parser and the APOP timestamp check.
 *
 * Input layout: byte 0 picks the exchange, the rest is split on 0xff into
 * up to 4 server messages (0xff never occurs in the text of a real one):
 *   bits 0-2  mechanism: SCRAM-SHA-256, PLAIN, LOGIN, XOAUTH2, OAUTHBEARER
 *             (5-7 wrap to SCRAM)
 *   bit 3     raw: pass each message as the challenge text itself instead
 *             of its base64 (fuzzes the base64 check)
 *   bit 4     long user: the initial response does not fit the command
 *             line, so the first message waits for an empty challenge
 * The SCRAM client nonce is forced to "fuzz" (seeds start "r=fuzz...")
 * and the iteration bound lowered to 4096, so a server-first message
 * costs at most one cheap PBKDF2 run.
 *
 * Checked: a step returns 0 with a response that is canonical base64, or
 * -1 with an error and no response; after -1 every step fails; the
 * server's error text is printable and bounded; the whole input through
 * sasl_client_parse_mechs() and sasl_client_apop_digest() never crashes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "sasl-client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SEPARATOR 0xff
#define FUZZ_MAX_MESSAGES 4
#include "split-messages.h"

static const enum sasl_client_method fuzz_mechs[8] = {
	SASL_CLIENT_SCRAM_SHA_256, SASL_CLIENT_PLAIN, SASL_CLIENT_LOGIN,
	SASL_CLIENT_XOAUTH2, SASL_CLIENT_OAUTHBEARER,
	SASL_CLIENT_SCRAM_SHA_256, SASL_CLIENT_SCRAM_SHA_256,
	SASL_CLIENT_SCRAM_SHA_256,
};

static void fuzz_check_b64(const char *text)
{
	size_t len = strlen(text), n = 0;
	uint8_t *raw = malloc(base64_decoded_max(len) + 1);

	if (raw == NULL ||
	    base64_decode(text, len, raw, base64_decoded_max(len) + 1, &n) < 0)
		abort();
	free(raw);
}

/* One step with the message as challenge text (an exact-size heap copy,
   so ASan sees any read past it). */
static int fuzz_step(struct sasl_client *c, const struct fuzz_msg *m, bool raw)
{
	size_t text_len = raw ? m->len : base64_encoded_len(m->len);
	char *text = malloc(text_len + 1);
	const char *resp = "unset", *error = NULL;
	int r;

	if (text == NULL)
		abort();
	if (raw)
		memcpy(text, m->data, m->len);
	else
		base64_encode(m->data, m->len, text);
	r = sasl_client_step(c, text, text_len, &resp, &error);
	free(text);
	if (r == 0) {
		if (resp == NULL)
			abort();
		fuzz_check_b64(resp);
	} else if (r != -1 || resp != NULL || error == NULL) {
		abort();
	}
	return r;
}

static void fuzz_check_server_error(const struct sasl_client *c)
{
	const char *e = sasl_client_server_error(c);
	size_t len = strlen(e);

	if (len > SASL_CLIENT_SERVER_ERROR_MAX)
		abort();
	for (size_t i = 0; i < len; i++) {
		if (e[i] < 0x20 || e[i] > 0x7e)
			abort();
	}
}

static void fuzz_side_parsers(const uint8_t *data, size_t size)
{
	char digest[SASL_CLIENT_APOP_DIGEST_LEN + 1];
	const char *error;

	(void)sasl_client_parse_mechs((const char *)data, size);
	if (sasl_client_apop_digest((const char *)data, size, "secret", digest,
				    &error) == 0 &&
	    strlen(digest) != SASL_CLIENT_APOP_DIGEST_LEN)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char long_user[300];
	struct fuzz_msg msgs[FUZZ_MAX_MESSAGES];
	struct sasl_client *c = NULL;
	const char *ir, *error;
	bool raw, failed = false;
	size_t n;

	if (size == 0)
		return 0;
	fuzz_side_parsers(data + 1, size - 1);
	raw = (data[0] & 8) != 0;
	if (long_user[0] == '\0')
		memset(long_user, 'u', sizeof(long_user) - 1);
	if (sasl_client_new(fuzz_mechs[data[0] & 7],
			    (data[0] & 16) != 0 ? long_user : "user",
			    "pencil", &c, &error) < 0)
		abort();
	sasl_client_set_nonce_for_test(c, "fuzz");
	sasl_client_set_iter_max(c, SASL_CLIENT_SCRAM_ITER_MIN);
	if (sasl_client_start(c, &ir, &error) < 0)
		abort();
	if (ir != NULL)
		fuzz_check_b64(strcmp(ir, "=") == 0 ? "" : ir);
	n = fuzz_split(data + 1, size - 1, msgs);
	for (size_t i = 0; i < n; i++) {
		int r = fuzz_step(c, &msgs[i], raw);

		if (failed && r != -1)
			abort();
		if (r < 0) {
			failed = true;
			if (sasl_client_done(c))
				abort();
		}
		fuzz_check_server_error(c);
	}
	sasl_client_free(&c);
	if (c != NULL)
		abort();
	return 0;
}
