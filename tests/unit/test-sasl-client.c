/*
 * test-sasl-client.c — popbox-fetch's authentication client: the RFC 7677
 * section 3 SCRAM exchange replayed byte for byte (client nonce injected),
 * a wrong or missing server signature refused, every kind of malformed
 * server-first message refused, the iteration bounds, the exact bytes of
 * PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER (and their error challenges), the
 * 255-octet rule for initial responses, RFC 1939's APOP example, the
 * mechanism choice as a table, and whole exchanges against popboxd's own
 * SASL server (a second, independent implementation) with fresh nonces.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "passwd-fixture.h"

#include <unistd.h>

#include "base64.h"
#include "log.h"
#include "passdb.h"
#include "sasl-client.h"
#include "sasl.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* RFC 7677 section 3. */
#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SERVER_FIRST "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_CNONCE RFC_SNONCE \
	",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* ---- helpers ---- */

static char b64_buf[16384];

/* base64 of data[0..len), in a static buffer. */
static const char *b64n(const void *data, size_t len)
{
	assert_true(base64_encoded_len(len) < sizeof(b64_buf));
	base64_encode(data, len, b64_buf);
	return b64_buf;
}

static const char *b64(const char *text)
{
	return b64n(text, strlen(text));
}

/* Decodes text and checks it is exactly want[0..want_len). */
static void assert_b64_bytes(const char *text, const void *want,
			     size_t want_len)
{
	static uint8_t raw[16384];
	size_t n = 0;

	assert_non_null(text);
	assert_int_equal(base64_decode(text, strlen(text), raw, sizeof(raw), &n),
			 0);
	assert_int_equal(n, want_len);
	assert_memory_equal(raw, want, want_len);
}

static void assert_b64_text(const char *text, const char *want)
{
	assert_b64_bytes(text, want, strlen(want));
}

static struct sasl_client *new_client(enum sasl_client_method m,
				      const char *user, const char *secret)
{
	struct sasl_client *c = NULL;
	const char *error = NULL;

	if (sasl_client_new(m, user, secret, &c, &error) < 0)
		fail_msg("sasl_client_new: %s", error);
	return c;
}

/* A SCRAM client for user/pencil with RFC 7677's nonce, started. */
static struct sasl_client *rfc_client(void)
{
	struct sasl_client *c = new_client(SASL_CLIENT_SCRAM_SHA_256, "user",
					   "pencil");
	const char *ir, *error;

	sasl_client_set_nonce_for_test(c, RFC_CNONCE);
	assert_int_equal(sasl_client_start(c, &ir, &error), 0);
	assert_b64_text(ir, RFC_CLIENT_FIRST);
	assert_false(sasl_client_done(c));
	return c;
}

/* One step with text as the decoded challenge; returns the result. */
static int step_text(struct sasl_client *c, const char *text,
		     const char **response_r, const char **error_r)
{
	const char *challenge = b64(text);

	return sasl_client_step(c, challenge, strlen(challenge), response_r,
				error_r);
}

/* ---- SCRAM-SHA-256 ---- */

static void test_scram_rfc7677(void **state)
{
	struct sasl_client *c = rfc_client();
	const char *resp, *error;

	(void)state;
	assert_int_equal(step_text(c, RFC_SERVER_FIRST, &resp, &error), 0);
	assert_b64_text(resp, RFC_CLIENT_FINAL);
	/* Proof sent, server not verified yet: a +OK now is no success. */
	assert_false(sasl_client_done(c));
	assert_int_equal(step_text(c, RFC_SERVER_FINAL, &resp, &error), 0);
	assert_string_equal(resp, "");
	assert_true(sasl_client_done(c));
	assert_string_equal(sasl_client_server_error(c), "");
	/* Nothing may follow the server-final message. */
	assert_int_equal(step_text(c, "x=1", &resp, &error), -1);
	assert_null(resp);
	assert_false(sasl_client_done(c));
	sasl_client_free(&c);
	assert_null(c);
	sasl_client_free(&c);
}

static void test_scram_wrong_signature(void **state)
{
	static const char *const finals[] = {
		/* one bit off */
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5=",
		/* the client proof echoed back */
		"v=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		/* too short, too long, not base64, empty, other attribute */
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl9",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4AAAA=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
		"v=",
		"",
		"x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,",
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(finals); i++) {
		struct sasl_client *c = rfc_client();
		const char *resp, *error = NULL;

		assert_int_equal(step_text(c, RFC_SERVER_FIRST, &resp, &error), 0);
		if (step_text(c, finals[i], &resp, &error) != -1)
			fail_msg("accepted server-final '%s'", finals[i]);
		assert_non_null(error);
		assert_false(sasl_client_done(c));
		sasl_client_free(&c);
	}
}

static void test_scram_server_error(void **state)
{
	struct sasl_client *c = rfc_client();
	const char *resp, *error = NULL;

	(void)state;
	assert_int_equal(step_text(c, RFC_SERVER_FIRST, &resp, &error), 0);
	assert_int_equal(step_text(c, "e=invalid-proof", &resp, &error), -1);
	assert_non_null(strstr(error, "error"));
	assert_string_equal(sasl_client_server_error(c), "invalid-proof");
	assert_false(sasl_client_done(c));
	/* Over is over. */
	assert_int_equal(step_text(c, RFC_SERVER_FINAL, &resp, &error), -1);
	sasl_client_free(&c);

	/* An e= in place of the server-first message, with bytes that must
	   not reach a log unescaped. */
	c = rfc_client();
	assert_int_equal(step_text(c, "e=other-error\x1b[2J", &resp, &error), -1);
	assert_string_equal(sasl_client_server_error(c), "other-error?[2J");
	sasl_client_free(&c);
}

static void test_scram_server_first_malformed(void **state)
{
	static const char *const msgs[] = {
		"",
		"r=",
		"r=" RFC_CNONCE RFC_SNONCE,
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT,
		"r=" RFC_CNONCE RFC_SNONCE ",i=4096,s=" RFC_SALT,
		"s=" RFC_SALT ",r=" RFC_CNONCE RFC_SNONCE ",i=4096",
		/* nonce: not ours, ours alone, a prefix of ours, not printable */
		"r=xOprNGfwEbeRWgbNEkqO" RFC_SNONCE ",s=" RFC_SALT ",i=4096",
		"r=" RFC_CNONCE ",s=" RFC_SALT ",i=4096",
		"r=rOprNG,s=" RFC_SALT ",i=4096",
		"r=" RFC_CNONCE "ab\x7f" ",s=" RFC_SALT ",i=4096",
		"r=" RFC_CNONCE "ab\xc3\xa9" ",s=" RFC_SALT ",i=4096",
		/* salt: not base64, not canonical, empty */
		"r=" RFC_CNONCE RFC_SNONCE ",s=W22ZaJ0SNY7soEsUEjb6g,i=4096",
		"r=" RFC_CNONCE RFC_SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gR==,i=4096",
		"r=" RFC_CNONCE RFC_SNONCE ",s=,i=4096",
		/* iterations: not a number, signed, empty, below, above */
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4096x",
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=-4096",
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=",
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=0",
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4095",
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=10000001",
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4294967297",
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT
			",i=99999999999999999999999999",
		/* structure: mandatory extension, trailing comma, empty
		   attribute, no '=', a non-letter name */
		"m=ext,r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4096",
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4096,",
		"r=" RFC_CNONCE RFC_SNONCE ",,s=" RFC_SALT ",i=4096",
		"r" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4096",
		"1=x,r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4096",
		/* too many attributes */
		"r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT ",i=4096,a=1,b=2,c=3,"
			"d=4,e=5,f=6,g=7,h=8,j=9,k=10,l=11,n=12,o=13,p=14",
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(msgs); i++) {
		struct sasl_client *c = rfc_client();
		const char *resp = "x", *error = NULL;

		if (step_text(c, msgs[i], &resp, &error) != -1)
			fail_msg("accepted server-first '%s'", msgs[i]);
		assert_null(resp);
		assert_non_null(error);
		assert_false(sasl_client_done(c));
		sasl_client_free(&c);
	}
}

/* A NUL inside the message, which a C string cannot carry. */
static void test_scram_server_first_nul(void **state)
{
	static const char msg[] = "r=" RFC_CNONCE RFC_SNONCE "\0,s=" RFC_SALT
				  ",i=4096";
	struct sasl_client *c = rfc_client();
	const char *challenge = b64n(msg, sizeof(msg) - 1), *resp, *error;

	(void)state;
	assert_int_equal(sasl_client_step(c, challenge, strlen(challenge),
					  &resp, &error), -1);
	sasl_client_free(&c);
}

/* Extensions after i= are ignored; the result is still RFC 7677's
   (the AuthMessage includes them, so the proof differs: check by
   running the exchange to a wrong-signature failure only). */
static void test_scram_extension_ignored(void **state)
{
	struct sasl_client *c = rfc_client();
	const char *resp, *error;

	(void)state;
	assert_int_equal(step_text(c, RFC_SERVER_FIRST ",x=extension", &resp,
				   &error), 0);
	assert_non_null(resp);
	assert_false(sasl_client_done(c));
	sasl_client_free(&c);
}

static void test_scram_iteration_bound(void **state)
{
	struct sasl_client *c = rfc_client();
	const char *resp, *error = NULL;

	(void)state;
	/* A tighter configured bound refuses 6000 without hashing. */
	sasl_client_set_iter_max(c, 5000);
	assert_int_equal(step_text(c, "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT
				   ",i=6000", &resp, &error), -1);
	assert_non_null(strstr(error, "iterations"));
	sasl_client_free(&c);

	/* 5000 itself passes. */
	c = rfc_client();
	sasl_client_set_iter_max(c, 5000);
	assert_int_equal(step_text(c, "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT
				   ",i=5000", &resp, &error), 0);
	sasl_client_free(&c);

	/* A bound below the minimum is the minimum. */
	c = rfc_client();
	sasl_client_set_iter_max(c, 10);
	assert_int_equal(step_text(c, RFC_SERVER_FIRST, &resp, &error), 0);
	assert_b64_text(resp, RFC_CLIENT_FINAL);
	sasl_client_free(&c);
}

static void test_scram_bad_challenges(void **state)
{
	struct sasl_client *c = rfc_client();
	const char *resp, *error = NULL;
	char *big;

	(void)state;
	/* Not canonical base64. */
	assert_int_equal(sasl_client_step(c, "cj0=x", 5, &resp, &error), -1);
	assert_non_null(strstr(error, "base64"));
	sasl_client_free(&c);

	/* Longer than SASL_CLIENT_CHALLENGE_MAX decoded. */
	c = rfc_client();
	big = malloc(SASL_CLIENT_CHALLENGE_MAX + 2);
	assert_non_null(big);
	memset(big, 'a', SASL_CLIENT_CHALLENGE_MAX + 1);
	big[SASL_CLIENT_CHALLENGE_MAX + 1] = '\0';
	assert_int_equal(step_text(c, big, &resp, &error), -1);
	free(big);
	sasl_client_free(&c);

	/* An empty challenge where server-first is due. */
	c = rfc_client();
	assert_int_equal(sasl_client_step(c, "", 0, &resp, &error), -1);
	sasl_client_free(&c);

	/* step() before start(). */
	c = new_client(SASL_CLIENT_SCRAM_SHA_256, "user", "pencil");
	assert_int_equal(sasl_client_step(c, "", 0, &resp, &error), -1);
	sasl_client_free(&c);
}

static void test_scram_fresh_nonce(void **state)
{
	char first[2][128];

	(void)state;
	for (int i = 0; i < 2; i++) {
		struct sasl_client *c = new_client(SASL_CLIENT_SCRAM_SHA_256,
						   "user", "pencil");
		const char *ir, *error;
		uint8_t raw[128];
		size_t n = 0;

		assert_int_equal(sasl_client_start(c, &ir, &error), 0);
		assert_int_equal(base64_decode(ir, strlen(ir), raw, sizeof(raw) - 1,
					       &n), 0);
		raw[n] = '\0';
		/* "n,,n=user,r=" and 24 printable characters, no ','. */
		assert_int_equal(n, 12 + 24);
		assert_memory_equal(raw, "n,,n=user,r=", 12);
		for (size_t k = 12; k < n; k++)
			assert_true(raw[k] > 0x20 && raw[k] < 0x7f && raw[k] != ',');
		strcpy(first[i], (const char *)raw);
		/* Calling start() twice is a usage error. */
		assert_int_equal(sasl_client_start(c, &ir, &error), -1);
		sasl_client_free(&c);
	}
	assert_string_not_equal(first[0], first[1]);
}

static void test_scram_saslname(void **state)
{
	struct sasl_client *c = new_client(SASL_CLIENT_SCRAM_SHA_256, "a,b=c",
					   "pencil");
	const char *ir, *error;

	(void)state;
	sasl_client_set_nonce_for_test(c, "abc");
	/* Ignored: a ',' in the nonce, and an empty one. */
	sasl_client_set_nonce_for_test(c, "x,y");
	sasl_client_set_nonce_for_test(c, "");
	assert_int_equal(sasl_client_start(c, &ir, &error), 0);
	assert_b64_text(ir, "n,,n=a=2Cb=3Dc,r=abc");
	sasl_client_free(&c);
}

/* ---- PLAIN, LOGIN, XOAUTH2, OAUTHBEARER ---- */

static void test_plain_bytes(void **state)
{
	static const char want[] = "\0tim\0tanstaaftanstaaf";
	struct sasl_client *c = new_client(SASL_CLIENT_PLAIN, "tim",
					   "tanstaaftanstaaf");
	const char *ir, *resp, *error;

	(void)state;
	assert_int_equal(sasl_client_start(c, &ir, &error), 0);
	assert_b64_bytes(ir, want, sizeof(want) - 1);
	assert_true(sasl_client_done(c));
	/* PLAIN has no challenge after its message. */
	assert_int_equal(sasl_client_step(c, "", 0, &resp, &error), -1);
	assert_false(sasl_client_done(c));
	sasl_client_free(&c);
}

/* An initial response that would make "AUTH PLAIN <ir>" longer than 255
   octets waits for the server's empty challenge (RFC 5034 section 4). */
static void test_plain_long_waits_for_challenge(void **state)
{
	char password[300], want[320];
	struct sasl_client *c;
	const char *ir, *resp, *error;
	size_t fits;

	(void)state;
	/* "AUTH PLAIN " + base64(NUL u NUL pw) + CRLF: the longest fitting
	   base64 is 242 characters, 180 bytes, so a password of 177 bytes
	   with user "u" fits and 178 does not (base64 grows by 4 per 3). */
	for (fits = 176; fits <= 179; fits++) {
		memset(password, 'p', fits);
		password[fits] = '\0';
		c = new_client(SASL_CLIENT_PLAIN, "u", password);
		assert_int_equal(sasl_client_start(c, &ir, &error), 0);
		if (fits <= 177) {
			assert_non_null(ir);
			assert_true(11 + strlen(ir) + 2 <= 255);
		} else {
			assert_null(ir);
			assert_false(sasl_client_done(c));
			/* A non-empty challenge is not the invitation. */
			if (fits == 179) {
				assert_int_equal(step_text(c, "hi", &resp, &error),
						 -1);
				sasl_client_free(&c);
				continue;
			}
			assert_int_equal(sasl_client_step(c, "", 0, &resp,
							  &error), 0);
			want[0] = '\0';
			want[1] = 'u';
			want[2] = '\0';
			memcpy(want + 3, password, fits);
			assert_b64_bytes(resp, want, fits + 3);
			assert_true(sasl_client_done(c));
		}
		sasl_client_free(&c);
	}
}

static void test_login(void **state)
{
	struct sasl_client *c = new_client(SASL_CLIENT_LOGIN, "bob",
					   "secret pass");
	const char *ir = "x", *resp, *error;

	(void)state;
	assert_int_equal(sasl_client_start(c, &ir, &error), 0);
	assert_null(ir);
	assert_false(sasl_client_done(c));
	/* The prompts are not checked (servers word them differently). */
	assert_int_equal(sasl_client_step(c, "VXNlcm5hbWU6", 12, &resp, &error),
			 0);
	assert_b64_text(resp, "bob");
	assert_false(sasl_client_done(c));
	assert_int_equal(sasl_client_step(c, "Password:", 9, &resp, &error), 0);
	assert_b64_text(resp, "secret pass");
	assert_true(sasl_client_done(c));
	assert_int_equal(sasl_client_step(c, "", 0, &resp, &error), -1);
	sasl_client_free(&c);
}

/* Tokens from Google's XOAUTH2 documentation and RFC 7628 section 4.1. */
#define GOOGLE_TOKEN "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
#define RFC7628_TOKEN "vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg=="
#define JSON_ERROR "{\"status\":\"invalid_token\",\"scope\":\"example_scope\"," \
	"\"openid-configuration\":\"https://example.com/.well-known/openid-configuration\"}"

static void test_xoauth2_bytes(void **state)
{
	static const char want[] = "user=someuser@example.com\001auth=Bearer "
				   GOOGLE_TOKEN "\001\001";
	struct sasl_client *c = new_client(SASL_CLIENT_XOAUTH2,
					   "someuser@example.com", GOOGLE_TOKEN);
	const char *ir, *resp, *error;

	(void)state;
	assert_int_equal(sasl_client_start(c, &ir, &error), 0);
	assert_b64_bytes(ir, want, sizeof(want) - 1);
	assert_true(sasl_client_done(c));
	/* The error challenge: answered with an empty line, then -ERR. */
	assert_int_equal(step_text(c, "{\"status\":\"401\",\"schemes\":\"bearer\"}",
				   &resp, &error), 0);
	assert_string_equal(resp, "");
	assert_false(sasl_client_done(c));
	assert_string_equal(sasl_client_server_error(c),
			    "{\"status\":\"401\",\"schemes\":\"bearer\"}");
	assert_int_equal(step_text(c, "again", &resp, &error), -1);
	sasl_client_free(&c);
}

static void test_oauthbearer_bytes(void **state)
{
	static const char want[] = "n,a=user@example.com,\001auth=Bearer "
				   RFC7628_TOKEN "\001\001";
	struct sasl_client *c = new_client(SASL_CLIENT_OAUTHBEARER,
					   "user@example.com", RFC7628_TOKEN);
	const char *ir, *resp, *error;

	(void)state;
	assert_int_equal(sasl_client_start(c, &ir, &error), 0);
	assert_b64_bytes(ir, want, sizeof(want) - 1);
	assert_true(sasl_client_done(c));
	/* RFC 7628 section 3.2.3: the client answers the JSON error with
	   a single ^A, and the server then fails the exchange. */
	assert_int_equal(step_text(c, JSON_ERROR, &resp, &error), 0);
	assert_string_equal(resp, "AQ==");
	assert_false(sasl_client_done(c));
	assert_non_null(strstr(sasl_client_server_error(c), "invalid_token"));
	assert_int_equal(strlen(sasl_client_server_error(c)) <=
			 SASL_CLIENT_SERVER_ERROR_MAX, 1);
	assert_int_equal(step_text(c, JSON_ERROR, &resp, &error), -1);
	sasl_client_free(&c);

	/* The user is a saslname: ',' and '=' escaped. */
	c = new_client(SASL_CLIENT_OAUTHBEARER, "a,b=c", "tok");
	assert_int_equal(sasl_client_start(c, &ir, &error), 0);
	assert_b64_text(ir, "n,a=a=2Cb=3Dc,\001auth=Bearer tok\001\001");
	sasl_client_free(&c);
}

/* A long token does not fit the command line: AUTH XOAUTH2 alone, the
   message at the empty challenge. */
static void test_oauth_long_token(void **state)
{
	char token[3001];
	struct sasl_client *c;
	const char *ir, *resp, *error;

	(void)state;
	memset(token, 'T', sizeof(token) - 1);
	token[sizeof(token) - 1] = '\0';
	c = new_client(SASL_CLIENT_XOAUTH2, "u@example.com", token);
	assert_int_equal(sasl_client_start(c, &ir, &error), 0);
	assert_null(ir);
	assert_int_equal(sasl_client_step(c, "", 0, &resp, &error), 0);
	assert_true(strlen(resp) > 4000);
	assert_true(sasl_client_done(c));
	sasl_client_free(&c);
}

static void test_new_refusals(void **state)
{
	static const struct {
		enum sasl_client_method m;
		const char *user, *secret;
	} rows[] = {
		{ SASL_CLIENT_AUTO, "u", "p" },
		{ SASL_CLIENT_APOP, "u", "p" },
		{ SASL_CLIENT_USER, "u", "p" },
		{ SASL_CLIENT_METHOD_COUNT, "u", "p" },
		{ SASL_CLIENT_PLAIN, "", "p" },
		{ SASL_CLIENT_PLAIN, "u", "" },
		{ SASL_CLIENT_SCRAM_SHA_256, "u", "pass\tword" },
		{ SASL_CLIENT_SCRAM_SHA_256, "u\001", "password" },
		{ SASL_CLIENT_XOAUTH2, "u", "token\n" },
		{ SASL_CLIENT_XOAUTH2, "u", "tok en" },
		{ SASL_CLIENT_XOAUTH2, "u", "=token" },
		{ SASL_CLIENT_XOAUTH2, "u", "tok=en" },
		{ SASL_CLIENT_XOAUTH2, "u\001auth=x", "token" },
		{ SASL_CLIENT_OAUTHBEARER, "u", "{\"access_token\":\"x\"}" },
	};
	char *long_user = malloc(SASL_CLIENT_USER_MAX + 2);
	char *long_secret = malloc(SASL_CLIENT_SECRET_MAX + 2);
	struct sasl_client *c = NULL;
	const char *error = NULL;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(rows); i++) {
		if (sasl_client_new(rows[i].m, rows[i].user, rows[i].secret, &c,
				    &error) != -1)
			fail_msg("row %zu accepted", i);
		assert_null(c);
		assert_non_null(error);
	}
	assert_non_null(long_user);
	assert_non_null(long_secret);
	memset(long_user, 'u', SASL_CLIENT_USER_MAX + 1);
	long_user[SASL_CLIENT_USER_MAX + 1] = '\0';
	memset(long_secret, 's', SASL_CLIENT_SECRET_MAX + 1);
	long_secret[SASL_CLIENT_SECRET_MAX + 1] = '\0';
	assert_int_equal(sasl_client_new(SASL_CLIENT_PLAIN, long_user, "p", &c,
					 &error), -1);
	assert_int_equal(sasl_client_new(SASL_CLIENT_PLAIN, "u", long_secret, &c,
					 &error), -1);
	/* At the limits: accepted. */
	long_user[SASL_CLIENT_USER_MAX] = '\0';
	long_secret[SASL_CLIENT_SECRET_MAX] = '\0';
	assert_int_equal(sasl_client_new(SASL_CLIENT_XOAUTH2, long_user,
					 long_secret, &c, &error), 0);
	sasl_client_free(&c);
	/* Non-ASCII SCRAM passwords are used as their UTF-8 bytes. */
	assert_int_equal(sasl_client_new(SASL_CLIENT_SCRAM_SHA_256, "u",
					 "p\xc3\xa4ssw\xc3\xb6rd", &c, &error), 0);
	sasl_client_free(&c);
	free(long_user);
	free(long_secret);
}

/* ---- APOP ---- */

static void test_apop_rfc1939(void **state)
{
	static const char ts[] = "<1896.697170952@dbc.mtview.ca.us>";
	static const char *const bad[] = {
		"", "<>", "1896.697170952@dbc.mtview.ca.us",
		"<1896.697170952@dbc.mtview.ca.us", "<a b@c>", "<a\x01@b>",
		"<a\xc3\xa9@b>",
	};
	char digest[SASL_CLIENT_APOP_DIGEST_LEN + 1], longts[300];
	const char *error = NULL;

	(void)state;
	assert_int_equal(sasl_client_apop_digest(ts, strlen(ts), "tanstaaf",
						 digest, &error), 0);
	assert_string_equal(digest, "c4c9334bac560ecc979e58001b3e22fb");
	for (size_t i = 0; i < N_ELEMENTS(bad); i++) {
		if (sasl_client_apop_digest(bad[i], strlen(bad[i]), "x", digest,
					    &error) != -1)
			fail_msg("accepted timestamp '%s'", bad[i]);
		assert_string_equal(digest, "");
	}
	memset(longts, 'a', sizeof(longts));
	longts[0] = '<';
	longts[255] = '>';
	assert_int_equal(sasl_client_apop_digest(longts, 256, "x", digest,
						 &error), -1);
	longts[254] = '>';
	assert_int_equal(sasl_client_apop_digest(longts, 255, "x", digest,
						 &error), 0);
}

/* ---- names and the choice ---- */

static void test_method_names(void **state)
{
	static const char *const names[] = {
		"auto", "SCRAM-SHA-256", "apop", "Plain", "user", "login",
		"xoauth2", "OAUTHBEARER",
	};
	enum sasl_client_method m;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(names); i++) {
		assert_int_equal(sasl_client_method_from_name(names[i], &m), 0);
		assert_int_equal(m, (enum sasl_client_method)i);
	}
	assert_int_equal(sasl_client_method_from_name("scram-sha-1", &m), -1);
	assert_int_equal(sasl_client_method_from_name("", &m), -1);
	assert_string_equal(sasl_client_method_name(SASL_CLIENT_SCRAM_SHA_256),
			    "SCRAM-SHA-256");
	assert_true(sasl_client_method_is_sasl(SASL_CLIENT_LOGIN));
	assert_false(sasl_client_method_is_sasl(SASL_CLIENT_APOP));
	assert_false(sasl_client_method_is_sasl(SASL_CLIENT_USER));
	assert_true(sasl_client_method_is_cleartext(SASL_CLIENT_USER));
	assert_true(sasl_client_method_is_cleartext(SASL_CLIENT_OAUTHBEARER));
	assert_false(sasl_client_method_is_cleartext(SASL_CLIENT_APOP));
	assert_false(sasl_client_method_is_cleartext(SASL_CLIENT_SCRAM_SHA_256));
}

#define B(m) SASL_CLIENT_BIT(SASL_CLIENT_##m)

static void test_parse_mechs(void **state)
{
	static const struct {
		const char *list;
		unsigned int want;
	} rows[] = {
		{ "", 0 },
		{ "   ", 0 },
		{ "PLAIN", B(PLAIN) },
		{ " plain\tLOGIN  scram-sha-256 ", B(PLAIN) | B(LOGIN) |
						   B(SCRAM_SHA_256) },
		{ "SCRAM-SHA-256-PLUS SCRAM-SHA-1 PLAINX CRAM-MD5", 0 },
		{ "XOAUTH2 OAUTHBEARER GSSAPI", B(XOAUTH2) | B(OAUTHBEARER) },
		/* APOP and USER are not SASL mechanisms. */
		{ "APOP USER AUTO", 0 },
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(rows); i++)
		assert_int_equal(sasl_client_parse_mechs(rows[i].list,
							 strlen(rows[i].list)),
				 rows[i].want);
	/* The length is respected: "PLAIN" cut to "PLAI". */
	assert_int_equal(sasl_client_parse_mechs("PLAIN", 4), 0);
}

#define FAIL_ ((enum sasl_client_method)-1)

static void test_choose_table(void **state)
{
	static const struct {
		unsigned int sasl;
		bool apop, user, tls;
		enum sasl_client_method configured;
		bool allow_cleartext;
		unsigned int exclude;
		enum sasl_client_method want;   /* FAIL_: an error */
	} rows[] = {
		/* AUTO over TLS: strongest first. */
		{ B(PLAIN) | B(LOGIN) | B(SCRAM_SHA_256), true, true, true,
		  SASL_CLIENT_AUTO, false, 0, SASL_CLIENT_SCRAM_SHA_256 },
		{ B(PLAIN) | B(LOGIN), true, true, true,
		  SASL_CLIENT_AUTO, false, 0, SASL_CLIENT_APOP },
		{ B(PLAIN) | B(LOGIN), false, true, true,
		  SASL_CLIENT_AUTO, false, 0, SASL_CLIENT_PLAIN },
		{ B(LOGIN), false, true, true,
		  SASL_CLIENT_AUTO, false, 0, SASL_CLIENT_USER },
		{ B(LOGIN), false, false, true,
		  SASL_CLIENT_AUTO, false, 0, SASL_CLIENT_LOGIN },
		{ 0, false, true, true,
		  SASL_CLIENT_AUTO, false, 0, SASL_CLIENT_USER },
		{ 0, false, false, true,
		  SASL_CLIENT_AUTO, false, 0, FAIL_ },
		/* OAuth only when configured. */
		{ B(XOAUTH2) | B(OAUTHBEARER), false, false, true,
		  SASL_CLIENT_AUTO, false, 0, FAIL_ },
		{ B(XOAUTH2) | B(OAUTHBEARER) | B(PLAIN), false, false, true,
		  SASL_CLIENT_AUTO, false, 0, SASL_CLIENT_PLAIN },
		{ B(XOAUTH2) | B(OAUTHBEARER), false, false, true,
		  SASL_CLIENT_XOAUTH2, false, 0, SASL_CLIENT_XOAUTH2 },
		{ B(XOAUTH2) | B(OAUTHBEARER), false, false, true,
		  SASL_CLIENT_OAUTHBEARER, false, 0, SASL_CLIENT_OAUTHBEARER },
		{ B(PLAIN), false, true, true,
		  SASL_CLIENT_XOAUTH2, false, 0, FAIL_ },
		/* Without TLS: no cleartext secret unless allowed. */
		{ B(PLAIN) | B(LOGIN) | B(SCRAM_SHA_256), true, true, false,
		  SASL_CLIENT_AUTO, false, 0, SASL_CLIENT_SCRAM_SHA_256 },
		{ B(PLAIN) | B(LOGIN), true, true, false,
		  SASL_CLIENT_AUTO, false, 0, SASL_CLIENT_APOP },
		{ B(PLAIN) | B(LOGIN), false, true, false,
		  SASL_CLIENT_AUTO, false, 0, FAIL_ },
		{ B(PLAIN) | B(LOGIN), false, true, false,
		  SASL_CLIENT_AUTO, true, 0, SASL_CLIENT_PLAIN },
		{ 0, false, true, false,
		  SASL_CLIENT_AUTO, true, 0, SASL_CLIENT_USER },
		{ B(PLAIN), false, true, false,
		  SASL_CLIENT_PLAIN, false, 0, FAIL_ },
		{ 0, false, true, false,
		  SASL_CLIENT_USER, false, 0, FAIL_ },
		{ 0, false, true, false,
		  SASL_CLIENT_USER, true, 0, SASL_CLIENT_USER },
		{ B(XOAUTH2), false, false, false,
		  SASL_CLIENT_XOAUTH2, false, 0, FAIL_ },
		{ B(SCRAM_SHA_256), false, false, false,
		  SASL_CLIENT_SCRAM_SHA_256, false, 0, SASL_CLIENT_SCRAM_SHA_256 },
		{ 0, true, false, false,
		  SASL_CLIENT_APOP, false, 0, SASL_CLIENT_APOP },
		/* Configured but not offered. */
		{ B(PLAIN), false, true, true,
		  SASL_CLIENT_SCRAM_SHA_256, false, 0, FAIL_ },
		{ B(PLAIN), false, true, true,
		  SASL_CLIENT_APOP, false, 0, FAIL_ },
		{ B(PLAIN), false, false, true,
		  SASL_CLIENT_USER, false, 0, FAIL_ },
		/* Fallback: what failed is passed over. */
		{ B(PLAIN) | B(SCRAM_SHA_256), false, true, true,
		  SASL_CLIENT_AUTO, false, B(SCRAM_SHA_256), SASL_CLIENT_PLAIN },
		{ B(PLAIN) | B(SCRAM_SHA_256), false, true, false,
		  SASL_CLIENT_AUTO, false, B(SCRAM_SHA_256), FAIL_ },
		{ B(SCRAM_SHA_256), false, false, true,
		  SASL_CLIENT_AUTO, false, B(SCRAM_SHA_256), FAIL_ },
		{ B(PLAIN), false, false, true,
		  SASL_CLIENT_PLAIN, false, B(PLAIN), FAIL_ },
		/* Not a method. */
		{ B(PLAIN), false, true, true,
		  SASL_CLIENT_METHOD_COUNT, false, 0, FAIL_ },
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(rows); i++) {
		struct sasl_client_offer offer = {
			.sasl = rows[i].sasl, .apop = rows[i].apop,
			.user = rows[i].user, .tls = rows[i].tls,
		};
		struct sasl_client_policy policy = {
			.method = rows[i].configured,
			.allow_cleartext = rows[i].allow_cleartext,
			.exclude = rows[i].exclude,
		};
		enum sasl_client_method got = FAIL_;
		const char *error = NULL;
		int r = sasl_client_choose(&offer, &policy, &got, &error);

		if (rows[i].want == FAIL_) {
			if (r != -1)
				fail_msg("row %zu: chose %s", i,
					 sasl_client_method_name(got));
			assert_non_null(error);
		} else if (r != 0 || got != rows[i].want) {
			fail_msg("row %zu: want %s, got r=%d %s (%s)", i,
				 sasl_client_method_name(rows[i].want), r,
				 sasl_client_method_name(got),
				 error != NULL ? error : "");
		}
	}
}

/* The error text tells why nothing was chosen. */
static void test_choose_error_texts(void **state)
{
	struct sasl_client_offer offer = { .sasl = B(PLAIN), .user = true };
	struct sasl_client_policy policy = { .method = SASL_CLIENT_AUTO };
	enum sasl_client_method got;
	const char *error = NULL;

	(void)state;
	assert_int_equal(sasl_client_choose(&offer, &policy, &got, &error), -1);
	assert_non_null(strstr(error, "in the clear"));
	offer.sasl = 0;
	offer.user = false;
	assert_int_equal(sasl_client_choose(&offer, &policy, &got, &error), -1);
	assert_non_null(strstr(error, "in common"));
}

/* ---- against popboxd's SASL server ---- */

/* RFC 7677's user/pencil as popboxd stores it; bob in plaintext (the
   server derives SCRAM keys from it); carol with a crypt hash, which
   SCRAM cannot serve. */
static const char users_file[] =
	"user:{SCRAM-SHA-256}4096," RFC_SALT ","
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=:1000:1000::/home/user\n"
	"bob:{PLAIN}secret word:1002:1002::/home/bob\n"
	"carol:{SHA512-CRYPT}$6$saltsalt$rD9fW1BwIrjB90WCgCTdIQc3phTBhf04I6Iw/"
	"XlgKD9E9aEbzqGZipjiFxGo/4wWXDA6jV6/vZO.kKdDSfUJb0:1003:1003::/home/carol\n";

static int setup(void **state)
{
	return passwd_fixture_setup(state, "/tmp/test-sasl-client-XXXXXX", users_file);
}

static int teardown(void **state)
{
	return passwd_fixture_teardown(state);
}

/* The decoded form of a client line, for the server. */
static const uint8_t *decode_line(const char *line, size_t *len_r)
{
	static uint8_t raw[16384];

	if (strcmp(line, "=") == 0) {
		*len_r = 0;
		return raw;
	}
	assert_int_equal(base64_decode(line, strlen(line), raw, sizeof(raw),
				       len_r), 0);
	return raw;
}

/*
 * Runs a whole exchange of method between our client and popboxd's
 * server, as a POP3 driver would: SASL_OK from the server counts only if
 * the client is done.  Returns the server's final status, or
 * SASL_MALFORMED when the client gave up.
 */
static enum sasl_status interop(struct passdb *db, enum sasl_client_method m,
				const char *user, const char *password)
{
	enum sasl_mech mech;
	struct sasl_client *c = new_client(m, user, password);
	struct sasl_server *server;
	struct passdb_user pu;
	const char *line, *error;
	const uint8_t *in = NULL, *out;
	size_t in_len = 0, out_len;
	enum sasl_status st;

	assert_true(sasl_mech_from_name(sasl_client_method_name(m),
					strlen(sasl_client_method_name(m)),
					&mech));
	assert_non_null(server = sasl_server_new(mech));
	assert_int_equal(sasl_client_start(c, &line, &error), 0);
	if (line != NULL)
		in = decode_line(line, &in_len);
	for (;;) {
		st = sasl_server_step(server, db, in, in_len, &out, &out_len,
				      &pu);
		if (st != SASL_CONTINUE)
			break;
		const char *challenge = b64n(out, out_len);

		if (sasl_client_step(c, challenge, strlen(challenge), &line,
				     &error) < 0) {
			print_message("client gave up: %s\n", error);
			st = SASL_MALFORMED;
			break;
		}
		in = decode_line(line, &in_len);
	}
	if (st == SASL_OK)
		assert_true(sasl_client_done(c));
	passdb_user_clear(&pu);
	sasl_server_free(&server);
	sasl_client_free(&c);
	return st;
}

static void test_interop_popboxd(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(interop(fx->db, SASL_CLIENT_SCRAM_SHA_256, "user",
				 "pencil"), SASL_OK);
	assert_int_equal(interop(fx->db, SASL_CLIENT_SCRAM_SHA_256, "user",
				 "pencil2"), SASL_FAIL);
	assert_int_equal(interop(fx->db, SASL_CLIENT_SCRAM_SHA_256, "bob",
				 "secret word"), SASL_OK);
	assert_int_equal(interop(fx->db, SASL_CLIENT_SCRAM_SHA_256, "carol",
				 "pencil"), SASL_FAIL);
	assert_int_equal(interop(fx->db, SASL_CLIENT_PLAIN, "carol", "pencil"),
			 SASL_OK);
	assert_int_equal(interop(fx->db, SASL_CLIENT_PLAIN, "bob", "secret"),
			 SASL_FAIL);
	assert_int_equal(interop(fx->db, SASL_CLIENT_LOGIN, "bob",
				 "secret word"), SASL_OK);
	assert_int_equal(interop(fx->db, SASL_CLIENT_LOGIN, "user", "pencil"),
			 SASL_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scram_rfc7677),
		cmocka_unit_test(test_scram_wrong_signature),
		cmocka_unit_test(test_scram_server_error),
		cmocka_unit_test(test_scram_server_first_malformed),
		cmocka_unit_test(test_scram_server_first_nul),
		cmocka_unit_test(test_scram_extension_ignored),
		cmocka_unit_test(test_scram_iteration_bound),
		cmocka_unit_test(test_scram_bad_challenges),
		cmocka_unit_test(test_scram_fresh_nonce),
		cmocka_unit_test(test_scram_saslname),
		cmocka_unit_test(test_plain_bytes),
		cmocka_unit_test(test_plain_long_waits_for_challenge),
		cmocka_unit_test(test_login),
		cmocka_unit_test(test_xoauth2_bytes),
		cmocka_unit_test(test_oauthbearer_bytes),
		cmocka_unit_test(test_oauth_long_token),
		cmocka_unit_test(test_new_refusals),
		cmocka_unit_test(test_apop_rfc1939),
		cmocka_unit_test(test_method_names),
		cmocka_unit_test(test_parse_mechs),
		cmocka_unit_test(test_choose_table),
		cmocka_unit_test(test_choose_error_texts),
		cmocka_unit_test_setup_teardown(test_interop_popboxd, setup,
						teardown),
	};

	log_set_level(LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
