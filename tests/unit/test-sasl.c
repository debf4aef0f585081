/*
 * test-sasl.c — the server side of PLAIN, LOGIN and SCRAM-SHA-256 against a
 * real passwd-file: success with and without an initial response, the
 * RFC 7677 section 3 exchange replayed byte for byte (server nonce forced
 * through the test hook), fresh SCRAM exchanges driven by a SCRAM client
 * written here from RFC 5802 with OpenSSL calls only, and every error path
 * with the status it must give.
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

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "log.h"
#include "passdb.h"
#include "password.h"
#include "sasl.h"

/* RFC 7677 section 3: user "user", password "pencil"; keys from Python. */
#define USER_HASH "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"       \
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"                 \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
/* "pencil" at 10000 iterations, salt "saltsaltsaltsalt". */
#define SAM_HASH "{SCRAM-SHA-256}10000,c2FsdHNhbHRzYWx0c2FsdA==,"      \
	"4w60l+Eb+LpUeUxlc28zsvV2xdgaYHOhxdWv8OmtduA=,"                 \
	"4QmYtQ48SomchFlqzUjNZmPCitB0MGdrO84FLPMst44="
/* "pencil" (openssl passwd -6). */
#define CAROL_HASH "{SHA512-CRYPT}$6$saltsalt$rD9fW1BwIrjB90WCgCTdIQc3phTBh" \
	"f04I6Iw/XlgKD9E9aEbzqGZipjiFxGo/4wWXDA6jV6/vZO.kKdDSfUJb0"

static const char users_file[] =
	"user:" USER_HASH ":1000:1000::/home/user\n"
	"bob:{PLAIN}secret:1002:1002::/home/bob::mail=/srv/mail/bob\n"
	"carol:" CAROL_HASH ":1003:1003::/home/carol\n"
	"sam:" SAM_HASH ":1004:1004::/home/sam\n";

#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SERVER_FIRST "r=" RFC_CNONCE RFC_SNONCE \
	",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_FINAL_WP "c=biws,r=" RFC_CNONCE RFC_SNONCE
#define RFC_CLIENT_FINAL RFC_FINAL_WP \
	",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


static int setup(void **state)
{
	return passwd_fixture_setup(state, "/tmp/test-sasl-XXXXXX", users_file);
}

static int teardown(void **state)
{
	return passwd_fixture_teardown(state);
}

/* ---- helpers ---- */

/* Last challenge, NUL-terminated for assert_string_equal. */
static char last_out[4096];

/*
 * Runs one step with msg (len bytes; msg NULL: no initial response),
 * checks the status, keeps the challenge in last_out, and clears *user.
 */
static enum sasl_status step_bytes(struct sasl_server *server, struct passdb *db,
				   const void *msg, size_t len,
				   struct passdb_user *user)
{
	const uint8_t *out = NULL;
	size_t out_len = 99;
	enum sasl_status st = sasl_server_step(server, db, msg, len, &out,
					       &out_len, user);

	assert_non_null(out);
	assert_true(out_len < sizeof(last_out));
	memcpy(last_out, out, out_len);
	last_out[out_len] = '\0';
	if (st != SASL_CONTINUE)
		assert_int_equal(out_len, 0);
	if (st != SASL_OK)
		assert_null(user->name);
	return st;
}

static enum sasl_status step(struct sasl_server *server, struct passdb *db,
			     const char *msg, struct passdb_user *user)
{
	return step_bytes(server, db, msg, msg == NULL ? 0 : strlen(msg), user);
}

/* A whole exchange from a list of messages: each but the last must
   CONTINUE; returns the last status.  The first may be NULL (no IR). */
static enum sasl_status run(struct passdb *db, enum sasl_mech mech,
			    const void *const *msgs, const size_t *lens,
			    size_t n, struct passdb_user *user)
{
	struct sasl_server *server = sasl_server_new(mech);
	enum sasl_status st = SASL_MALFORMED;

	assert_non_null(server);
	for (size_t i = 0; i < n; i++) {
		st = step_bytes(server, db, msgs[i], lens[i], user);
		if (i + 1 < n && st != SASL_CONTINUE)
			fail_msg("step %zu: status %d", i, st);
	}
	/* Whatever ended it, the exchange is over now. */
	if (st != SASL_CONTINUE) {
		struct passdb_user u2;
		assert_int_equal(step(server, db, "", &u2), SASL_MALFORMED);
	}
	sasl_server_free(&server);
	assert_null(server);
	return st;
}

/* One-message exchange (the message is the initial response). */
static enum sasl_status run1(struct passdb *db, enum sasl_mech mech,
			     const void *msg, size_t len)
{
	const void *msgs[] = { msg };
	size_t lens[] = { len };
	struct passdb_user u;
	enum sasl_status st = run(db, mech, msgs, lens, 1, &u);

	passdb_user_clear(&u);
	return st;
}

#define PLAIN_MSG(s) (s), sizeof(s) - 1

/* ---- mechanism names ---- */

static void test_mech_names(void **state)
{
	enum sasl_mech m;

	(void)state;
	assert_true(sasl_mech_from_name("PLAIN", 5, &m));
	assert_int_equal(m, SASL_MECH_PLAIN);
	assert_true(sasl_mech_from_name("login", 5, &m));
	assert_int_equal(m, SASL_MECH_LOGIN);
	assert_true(sasl_mech_from_name("Scram-Sha-256", 13, &m));
	assert_int_equal(m, SASL_MECH_SCRAM_SHA_256);
	assert_true(sasl_mech_from_name("PLAINX", 5, &m)); /* len counts */
	assert_false(sasl_mech_from_name("PLAI", 4, &m));
	assert_false(sasl_mech_from_name("PLAINX", 6, &m));
	assert_false(sasl_mech_from_name("SCRAM-SHA-1", 11, &m));
	assert_false(sasl_mech_from_name("SCRAM-SHA-256-PLUS", 18, &m));
	assert_false(sasl_mech_from_name("", 0, &m));
	assert_string_equal(sasl_mech_name(SASL_MECH_PLAIN), "PLAIN");
	assert_string_equal(sasl_mech_name(SASL_MECH_LOGIN), "LOGIN");
	assert_string_equal(sasl_mech_name(SASL_MECH_SCRAM_SHA_256),
			    "SCRAM-SHA-256");
	assert_null(sasl_server_new(SASL_MECH_COUNT));

	struct sasl_server *none = NULL;
	sasl_server_free(&none);
	assert_null(none);
}

/* ---- PLAIN ---- */

static void test_plain_ir(void **state)
{
	struct fixture *fx = *state;
	const void *msgs[] = { "\0bob\0secret" };
	size_t lens[] = { 11 };
	struct passdb_user u;

	assert_int_equal(run(fx->db, SASL_MECH_PLAIN, msgs, lens, 1, &u), SASL_OK);
	assert_string_equal(u.name, "bob");
	assert_string_equal(u.mail, "/srv/mail/bob");
	assert_int_equal(u.uid, 1002);
	passdb_user_clear(&u);
}

static void test_plain_no_ir(void **state)
{
	struct fixture *fx = *state;
	struct sasl_server *server = sasl_server_new(SASL_MECH_PLAIN);
	struct passdb_user u;

	assert_null(sasl_server_user(server));
	assert_int_equal(step(server, fx->db, NULL, &u), SASL_CONTINUE);
	assert_string_equal(last_out, "");
	assert_null(sasl_server_user(server));
	assert_int_equal(step_bytes(server, fx->db, "bob\0bob\0secret", 14, &u),
			 SASL_OK);
	assert_string_equal(u.name, "bob");
	assert_string_equal(sasl_server_user(server), "bob");
	passdb_user_clear(&u);
	/* Over: every further step is MALFORMED. */
	assert_int_equal(step_bytes(server, fx->db, "\0bob\0secret", 11, &u),
			 SASL_MALFORMED);
	assert_int_equal(step(server, fx->db, NULL, &u), SASL_MALFORMED);
	sasl_server_free(&server);
}

struct plain_case {
	const char *msg;
	size_t len;
	enum sasl_status status;
};

static const struct plain_case plain_cases[] = {
	{ PLAIN_MSG("\0bob\0secret"), SASL_OK },
	{ PLAIN_MSG("bob\0bob\0secret"), SASL_OK },
	{ PLAIN_MSG("\0carol\0pencil"), SASL_OK },       /* crypt entry */
	{ PLAIN_MSG("\0user\0pencil"), SASL_OK },        /* SCRAM entry */
	{ PLAIN_MSG("\0sam\0pencil"), SASL_OK },
	{ PLAIN_MSG("\0bob\0secreT"), SASL_FAIL },
	{ PLAIN_MSG("\0user\0pencil2"), SASL_FAIL },
	{ PLAIN_MSG("\0nobody\0secret"), SASL_FAIL },
	{ PLAIN_MSG("\0Bob\0secret"), SASL_FAIL },
	{ PLAIN_MSG("\0../bob\0secret"), SASL_FAIL },
	{ PLAIN_MSG("\0bob \0secret"), SASL_FAIL },
	/* Proxy authorization refused. */
	{ PLAIN_MSG("carol\0bob\0secret"), SASL_FAIL },
	{ PLAIN_MSG("bobx\0bob\0secret"), SASL_FAIL },
	{ PLAIN_MSG("bo\0bob\0secret"), SASL_FAIL },
	/* Separators and empty fields. */
	{ PLAIN_MSG(""), SASL_MALFORMED },
	{ PLAIN_MSG("bob"), SASL_MALFORMED },
	{ PLAIN_MSG("bob\0secret"), SASL_MALFORMED },
	{ PLAIN_MSG("\0bob\0sec\0ret"), SASL_MALFORMED },
	{ PLAIN_MSG("\0bob\0secret\0"), SASL_MALFORMED },
	{ PLAIN_MSG("\0\0secret"), SASL_MALFORMED },
	{ PLAIN_MSG("\0bob\0"), SASL_MALFORMED },
	{ PLAIN_MSG("\0\0"), SASL_MALFORMED },
	{ PLAIN_MSG("\0\0\0"), SASL_MALFORMED },
};

static void test_plain_cases(void **state)
{
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(plain_cases) / sizeof(plain_cases[0]); i++) {
		const struct plain_case *c = &plain_cases[i];
		enum sasl_status st = run1(fx->db, SASL_MECH_PLAIN, c->msg, c->len);

		if (st != c->status)
			fail_msg("case %zu: status %d, want %d", i, st, c->status);
	}
}

/* Lengths: the message, the name (kept for logs truncated, looked up
   whole) and the password. */
static void test_plain_lengths(void **state)
{
	struct fixture *fx = *state;
	uint8_t msg[SASL_CLIENT_MAX + 1];
	struct sasl_server *server;
	struct passdb_user u;

	/* One byte too long. */
	memset(msg, 'a', sizeof(msg));
	msg[0] = '\0';
	msg[4] = '\0';
	assert_int_equal(run1(fx->db, SASL_MECH_PLAIN, msg, sizeof(msg)),
			 SASL_MALFORMED);
	/* Exactly SASL_CLIENT_MAX: parsed, the 1019-byte password is too
	   long for the passdb. */
	memcpy(msg, "\0bob\0", 5);
	assert_int_equal(run1(fx->db, SASL_MECH_PLAIN, msg, SASL_CLIENT_MAX),
			 SASL_FAIL);
	/* A 65-byte name that starts with a real one is not that user. */
	char name[200];
	memset(name, 'x', sizeof(name));
	memcpy(name + 1, "bob", 3);
	name[0] = '\0';
	name[1 + 65] = '\0';
	memcpy(name + 1 + 65 + 1, "secret", 6);
	server = sasl_server_new(SASL_MECH_PLAIN);
	assert_int_equal(step_bytes(server, fx->db, name, 1 + 65 + 1 + 6, &u),
			 SASL_FAIL);
	assert_int_equal(strlen(sasl_server_user(server)), USERNAME_MAX);
	sasl_server_free(&server);
	/* The longest password accepted, and one byte more. */
	char pw[5 + PASSWORD_MAX + 1];
	memcpy(pw, "\0bob\0", 5);
	memset(pw + 5, 'p', sizeof(pw) - 5);
	assert_int_equal(run1(fx->db, SASL_MECH_PLAIN, pw, 5 + PASSWORD_MAX),
			 SASL_FAIL);
	assert_int_equal(run1(fx->db, SASL_MECH_PLAIN, pw, sizeof(pw)),
			 SASL_FAIL);
}

/* ---- LOGIN ---- */

static void test_login_no_ir(void **state)
{
	struct fixture *fx = *state;
	const void *msgs[] = { NULL, "bob", "secret" };
	size_t lens[] = { 0, 3, 6 };
	struct sasl_server *server = sasl_server_new(SASL_MECH_LOGIN);
	struct passdb_user u;

	assert_int_equal(step(server, fx->db, NULL, &u), SASL_CONTINUE);
	assert_string_equal(last_out, "Username:");
	assert_null(sasl_server_user(server));
	assert_int_equal(step(server, fx->db, "bob", &u), SASL_CONTINUE);
	assert_string_equal(last_out, "Password:");
	assert_string_equal(sasl_server_user(server), "bob");
	assert_int_equal(step(server, fx->db, "secret", &u), SASL_OK);
	assert_string_equal(u.name, "bob");
	passdb_user_clear(&u);
	assert_int_equal(step(server, fx->db, "secret", &u), SASL_MALFORMED);
	sasl_server_free(&server);

	assert_int_equal(run(fx->db, SASL_MECH_LOGIN, msgs, lens, 3, &u), SASL_OK);
	passdb_user_clear(&u);
}

static void test_login_ir(void **state)
{
	struct fixture *fx = *state;
	struct sasl_server *server = sasl_server_new(SASL_MECH_LOGIN);
	struct passdb_user u;

	assert_int_equal(step(server, fx->db, "carol", &u), SASL_CONTINUE);
	assert_string_equal(last_out, "Password:");
	assert_int_equal(step(server, fx->db, "pencil", &u), SASL_OK);
	assert_string_equal(u.name, "carol");
	passdb_user_clear(&u);
	sasl_server_free(&server);
}

struct login_case {
	const char *user;
	size_t user_len;
	const char *pw;
	size_t pw_len;
	enum sasl_status status;
};

static const struct login_case login_cases[] = {
	{ PLAIN_MSG("bob"), PLAIN_MSG("secret"), SASL_OK },
	{ PLAIN_MSG("user"), PLAIN_MSG("pencil"), SASL_OK },
	{ PLAIN_MSG("bob"), PLAIN_MSG("secret "), SASL_FAIL },
	{ PLAIN_MSG("bob"), PLAIN_MSG(""), SASL_FAIL },
	{ PLAIN_MSG("nobody"), PLAIN_MSG("secret"), SASL_FAIL },
	{ PLAIN_MSG(""), PLAIN_MSG("secret"), SASL_FAIL },
	{ PLAIN_MSG("bob\0"), PLAIN_MSG("secret"), SASL_MALFORMED },
	{ PLAIN_MSG("bob"), PLAIN_MSG("sec\0ret"), SASL_MALFORMED },
};

static void test_login_cases(void **state)
{
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(login_cases) / sizeof(login_cases[0]); i++) {
		const struct login_case *c = &login_cases[i];
		const void *msgs[] = { NULL, c->user, c->pw };
		size_t lens[] = { 0, c->user_len, c->pw_len };
		struct passdb_user u;
		struct sasl_server *server = sasl_server_new(SASL_MECH_LOGIN);
		enum sasl_status st = SASL_CONTINUE;

		for (size_t j = 0; j < 3 && st == SASL_CONTINUE; j++)
			st = step_bytes(server, fx->db, msgs[j], lens[j], &u);
		if (st != c->status)
			fail_msg("case %zu: status %d, want %d", i, st, c->status);
		passdb_user_clear(&u);
		sasl_server_free(&server);
	}
}

/* Only a first step may come without a message. */
static void test_later_step_without_message(void **state)
{
	struct fixture *fx = *state;
	struct sasl_server *server = sasl_server_new(SASL_MECH_LOGIN);
	struct passdb_user u;

	assert_int_equal(step(server, fx->db, NULL, &u), SASL_CONTINUE);
	assert_int_equal(step(server, fx->db, NULL, &u), SASL_MALFORMED);
	assert_int_equal(step(server, fx->db, "bob", &u), SASL_MALFORMED);
	sasl_server_free(&server);
}

/* ---- SCRAM: an independent client (RFC 5802 section 3) ---- */

static void b64_encode(const void *in, size_t len, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

static size_t b64_decode(const char *in, uint8_t *out)
{
	size_t len = strlen(in);
	int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);

	assert_true(n >= 0);
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	while (len > 0 && in[len - 1] == '=') {
		len--;
		n--;
	}
	return (size_t)n;
}

static void hmac(const uint8_t *key, size_t key_len, const void *data,
		 size_t len, uint8_t out[32])
{
	unsigned int out_len = 0;

	assert_non_null(HMAC(EVP_sha256(), key, (int)key_len, data, len, out,
			     &out_len));
	assert_int_equal(out_len, 32);
}

struct scram_client {
	char final[1200];        /* client-final-message */
	char verifier[80];       /* the server-final it must send */
};

/*
 * Builds the client-final message for password, given the client-first
 * message (gs2 header + bare) and the server-first message; ext is ""
 * or ",x=..." extensions placed before the proof.
 */
static void scram_client_final(const char *password, const char *client_first,
			       const char *server_first, const char *ext,
			       struct scram_client *c)
{
	const char *bare = strstr(client_first, ",n=") + 1;
	size_t gs2_len = (size_t)(bare - client_first);
	char nonce[512], salt_b64[128], gs2_b64[256], wp[1024], auth[4096];
	char proof_b64[48], sig_b64[48];
	uint8_t salt[96], salted[32], client_key[32], stored_key[32];
	uint8_t server_key[32], client_sig[32], proof[32], server_sig[32];
	unsigned int iter = 0, md_len = 0;

	assert_int_equal(sscanf(server_first, "r=%511[^,],s=%127[^,],i=%u",
				nonce, salt_b64, &iter), 3);
	size_t salt_len = b64_decode(salt_b64, salt);
	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt,
					   (int)salt_len, (int)iter,
					   EVP_sha256(), 32, salted), 1);
	hmac(salted, 32, "Client Key", 10, client_key);
	assert_int_equal(EVP_Digest(client_key, 32, stored_key, &md_len,
				    EVP_sha256(), NULL), 1);
	hmac(salted, 32, "Server Key", 10, server_key);

	char gs2[256];
	memcpy(gs2, client_first, gs2_len);
	b64_encode(gs2, gs2_len, gs2_b64);
	snprintf(wp, sizeof(wp), "c=%s,r=%s%s", gs2_b64, nonce, ext);
	snprintf(auth, sizeof(auth), "%s,%s,%s", bare, server_first, wp);
	hmac(stored_key, 32, auth, strlen(auth), client_sig);
	for (int i = 0; i < 32; i++)
		proof[i] = client_key[i] ^ client_sig[i];
	hmac(server_key, 32, auth, strlen(auth), server_sig);
	b64_encode(proof, 32, proof_b64);
	b64_encode(server_sig, 32, sig_b64);
	snprintf(c->final, sizeof(c->final), "%s,p=%s", wp, proof_b64);
	snprintf(c->verifier, sizeof(c->verifier), "v=%s", sig_b64);
}

/*
 * A whole SCRAM exchange with the client above.  Returns the status of
 * the client-final step; on CONTINUE checks the server-final and sends
 * the empty answer, returning that status.
 */
static enum sasl_status scram_exchange(struct passdb *db, const char *client_first,
				       const char *password, const char *ext,
				       struct passdb_user *u)
{
	struct sasl_server *server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
	struct scram_client c;
	enum sasl_status st;

	assert_int_equal(step(server, db, client_first, u), SASL_CONTINUE);
	scram_client_final(password, client_first, last_out, ext, &c);
	st = step(server, db, c.final, u);
	if (st == SASL_CONTINUE) {
		assert_string_equal(last_out, c.verifier);
		st = step(server, db, "", u);
	}
	sasl_server_free(&server);
	return st;
}

/* ---- SCRAM ---- */

/* RFC 7677 section 3, byte for byte, with the initial response. */
static void test_scram_rfc7677(void **state)
{
	struct fixture *fx = *state;
	struct sasl_server *server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
	struct passdb_user u;

	sasl_server_set_nonce_for_test(server, RFC_SNONCE);
	assert_int_equal(step(server, fx->db, RFC_CLIENT_FIRST, &u), SASL_CONTINUE);
	assert_string_equal(last_out, RFC_SERVER_FIRST);
	assert_string_equal(sasl_server_user(server), "user");
	assert_int_equal(step(server, fx->db, RFC_CLIENT_FINAL, &u), SASL_CONTINUE);
	assert_string_equal(last_out, RFC_SERVER_FINAL);
	assert_int_equal(step(server, fx->db, "", &u), SASL_OK);
	assert_string_equal(u.name, "user");
	assert_string_equal(u.home, "/home/user");
	passdb_user_clear(&u);
	assert_int_equal(step(server, fx->db, "", &u), SASL_MALFORMED);
	sasl_server_free(&server);
}

/* The same without an initial response: an empty first challenge. */
static void test_scram_rfc7677_no_ir(void **state)
{
	struct fixture *fx = *state;
	struct sasl_server *server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
	struct passdb_user u;

	sasl_server_set_nonce_for_test(server, RFC_SNONCE);
	assert_int_equal(step(server, fx->db, NULL, &u), SASL_CONTINUE);
	assert_string_equal(last_out, "");
	assert_int_equal(step(server, fx->db, RFC_CLIENT_FIRST, &u), SASL_CONTINUE);
	assert_string_equal(last_out, RFC_SERVER_FIRST);
	assert_int_equal(step(server, fx->db, RFC_CLIENT_FINAL, &u), SASL_CONTINUE);
	assert_string_equal(last_out, RFC_SERVER_FINAL);
	assert_int_equal(step(server, fx->db, "", &u), SASL_OK);
	passdb_user_clear(&u);
	sasl_server_free(&server);
}

/* Fresh nonces: the random server part is 32 base64 characters after the
   client's, different each time. */
static void test_scram_fresh_nonce(void **state)
{
	struct fixture *fx = *state;
	char first[2][256];

	for (int i = 0; i < 2; i++) {
		struct sasl_server *server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
		struct passdb_user u;

		/* An invalid forced nonce is ignored. */
		sasl_server_set_nonce_for_test(server, "a,b");
		assert_int_equal(step(server, fx->db, "n,,n=user,r=abc", &u),
				 SASL_CONTINUE);
		strcpy(first[i], last_out);
		const char *comma = strchr(last_out, ',');
		assert_int_equal(comma - last_out, (long)strlen("r=abc") + 32);
		assert_string_equal(comma, ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
		sasl_server_free(&server);
	}
	assert_string_not_equal(first[0], first[1]);
}

struct exchange_case {
	const char *client_first;
	const char *password;
	const char *ext;
	enum sasl_status status;
	const char *user; /* on SASL_OK */
};

static const struct exchange_case exchange_cases[] = {
	{ "n,,n=user,r=x", "pencil", "", SASL_OK, "user" },
	{ "y,,n=user,r=x", "pencil", "", SASL_OK, "user" },
	{ "n,a=user,n=user,r=x", "pencil", "", SASL_OK, "user" },
	{ "y,a=user,n=user,r=x", "pencil", "", SASL_OK, "user" },
	/* Extensions in both messages are ignored but signed. */
	{ "n,,n=user,r=x,x=ext=1,y=2", "pencil", ",z=abc=", SASL_OK, "user" },
	/* Nonce with every printable character but ','. */
	{ "n,,n=user,r=!\"#$%&'()*+-./09:;<=>?@AZ[\\]^_`az{|}~", "pencil", "",
	  SASL_OK, "user" },
	{ "n,,n=sam,r=x", "pencil", "", SASL_OK, "sam" },     /* 10000 iter */
	{ "n,,n=bob,r=x", "secret", "", SASL_OK, "bob" },     /* {PLAIN} */
	/* Wrong password, unknown user, a crypt entry, an invalid name: the
	   same steps, then FAIL at the proof. */
	{ "n,,n=user,r=x", "pencil2", "", SASL_FAIL, NULL },
	{ "n,,n=bob,r=x", "secreT", "", SASL_FAIL, NULL },
	{ "n,,n=nobody,r=x", "pencil", "", SASL_FAIL, NULL },
	{ "n,,n=nobody,r=x", "", "", SASL_FAIL, NULL },
	{ "n,,n=carol,r=x", "pencil", "", SASL_FAIL, NULL },
	{ "n,,n=bob=2Cx,r=x", "secret", "", SASL_FAIL, NULL },
	{ "n,,n=../bob,r=x", "secret", "", SASL_FAIL, NULL },
};

static void test_scram_exchanges(void **state)
{
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(exchange_cases) / sizeof(exchange_cases[0]); i++) {
		const struct exchange_case *c = &exchange_cases[i];
		struct passdb_user u;
		enum sasl_status st = scram_exchange(fx->db, c->client_first,
						     c->password, c->ext, &u);

		if (st != c->status)
			fail_msg("case %zu (%s): status %d, want %d", i,
				 c->client_first, st, c->status);
		if (st == SASL_OK)
			assert_string_equal(u.name, c->user);
		passdb_user_clear(&u);
	}
}

/* The user named in client-first, un-escaped, for the logs. */
static void test_scram_user_name(void **state)
{
	static const char *const cases[][2] = {
		{ "n,,n=user,r=x", "user" },
		{ "n,,n=bob=2Cx=3Dy,r=x", "bob,x=y" },
		{ "n,,n==3D=3D,r=x", "==" },
	};
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sasl_server *server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
		struct passdb_user u;

		assert_int_equal(step(server, fx->db, cases[i][0], &u),
				 SASL_CONTINUE);
		assert_string_equal(sasl_server_user(server), cases[i][1]);
		sasl_server_free(&server);
	}
}

struct first_case {
	const char *msg;
	size_t len; /* 0: strlen */
	enum sasl_status status;
};

static const struct first_case first_cases[] = {
	{ "", 0, SASL_MALFORMED },
	{ "n", 0, SASL_MALFORMED },
	{ "n,", 0, SASL_MALFORMED },
	{ "n,,", 0, SASL_MALFORMED },
	/* gs2 header */
	{ "p=tls-unique,,n=user,r=abc", 0, SASL_MALFORMED },
	{ "p,,n=user,r=abc", 0, SASL_MALFORMED },
	{ "x,,n=user,r=abc", 0, SASL_MALFORMED },
	{ "N,,n=user,r=abc", 0, SASL_MALFORMED },
	{ "nn,,n=user,r=abc", 0, SASL_MALFORMED },
	{ ",,n=user,r=abc", 0, SASL_MALFORMED },
	{ "n,n=user,r=abc", 0, SASL_MALFORMED },
	{ "n,a=,n=user,r=abc", 0, SASL_MALFORMED },
	{ "n,a=user", 0, SASL_MALFORMED },
	{ "n,b=user,n=user,r=abc", 0, SASL_MALFORMED },
	{ "n,a=us=er,n=user,r=abc", 0, SASL_MALFORMED },
	/* authzid differing from the user: refused. */
	{ "n,a=bob,n=user,r=abc", 0, SASL_FAIL },
	{ "n,a=use,n=user,r=abc", 0, SASL_FAIL },
	{ "n,a=user=2C,n=user,r=abc", 0, SASL_FAIL },
	/* reserved mandatory extension, order, missing attributes */
	{ "n,,m=ext,n=user,r=abc", 0, SASL_MALFORMED },
	{ "n,,m=,n=user,r=abc", 0, SASL_MALFORMED },
	{ "n,,r=abc,n=user", 0, SASL_MALFORMED },
	{ "n,,n=user", 0, SASL_MALFORMED },
	{ "n,,n=user,", 0, SASL_MALFORMED },
	{ "n,,n=user,r", 0, SASL_MALFORMED },
	{ "n,,user,r=abc", 0, SASL_MALFORMED },
	{ "n,,N=user,r=abc", 0, SASL_MALFORMED },
	/* saslname escapes */
	{ "n,,n=,r=abc", 0, SASL_MALFORMED },
	{ "n,,n=us=er,r=abc", 0, SASL_MALFORMED },
	{ "n,,n=user=,r=abc", 0, SASL_MALFORMED },
	{ "n,,n=user=2,r=abc", 0, SASL_MALFORMED },
	{ "n,,n=us=2cer,r=abc", 0, SASL_MALFORMED },
	{ "n,,n=us=3der,r=abc", 0, SASL_MALFORMED },
	{ "n,,n=us=41er,r=abc", 0, SASL_MALFORMED },
	/* client nonce */
	{ "n,,n=user,r=", 0, SASL_MALFORMED },
	{ "n,,n=user,r=a b", 0, SASL_MALFORMED },
	{ "n,,n=user,r=a\tb", 0, SASL_MALFORMED },
	{ "n,,n=user,r=a\x7f", 0, SASL_MALFORMED },
	{ "n,,n=user,r=a\xc3\xa9", 0, SASL_MALFORMED },
	/* extensions */
	{ "n,,n=user,r=abc,", 0, SASL_MALFORMED },
	{ "n,,n=user,r=abc,x", 0, SASL_MALFORMED },
	{ "n,,n=user,r=abc,x=", 0, SASL_MALFORMED },
	{ "n,,n=user,r=abc,1=x", 0, SASL_MALFORMED },
	{ "n,,n=user,r=abc,=x", 0, SASL_MALFORMED },
	{ "n,,n=user,r=abc,x=1,,y=2", 0, SASL_MALFORMED },
	/* NUL anywhere */
	{ "n,,n=user,r=abc\0", 16, SASL_MALFORMED },
	{ "n,,n=us\0er,r=abc", 16, SASL_MALFORMED },
	{ "\0,,n=user,r=abc", 15, SASL_MALFORMED },
};

static void test_scram_client_first_errors(void **state)
{
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(first_cases) / sizeof(first_cases[0]); i++) {
		const struct first_case *c = &first_cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->msg);
		enum sasl_status st = run1(fx->db, SASL_MECH_SCRAM_SHA_256,
					   c->msg, len);

		if (st != c->status)
			fail_msg("case %zu (%s): status %d, want %d", i, c->msg,
				 st, c->status);
	}
}

/* The RFC exchange's client-final, changed in each way: status wanted. */
struct final_case {
	const char *msg;
	enum sasl_status status;
};

static const struct final_case final_cases[] = {
	{ RFC_CLIENT_FINAL, SASL_CONTINUE },
	/* Wrong proof (last byte), wrong nonce, wrong binding. */
	{ RFC_FINAL_WP ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=", SASL_FAIL },
	{ "c=biws,r=" RFC_CNONCE RFC_SNONCE "x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "c=biws,r=" RFC_CNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "c=biws,r=" RFC_CNONCE RFC_SNONCE "0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "c=biws,r=,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "c=eSws,r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "c=biwsAA==,r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "c=,r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	/* Missing or misplaced attributes. */
	{ RFC_FINAL_WP, SASL_MALFORMED },
	{ RFC_FINAL_WP ",p=", SASL_MALFORMED },
	{ RFC_CLIENT_FINAL ",x=y", SASL_MALFORMED },
	{ RFC_CLIENT_FINAL ",", SASL_MALFORMED },
	{ "r=" RFC_CNONCE RFC_SNONCE ",c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "r=" RFC_CNONCE RFC_SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ RFC_FINAL_WP ",,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ RFC_FINAL_WP ",1=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
	{ "", SASL_MALFORMED },
	/* A valid extension changes the signed text: the proof no longer
	   fits. */
	{ RFC_FINAL_WP ",x=y,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_FAIL },
	/* Proofs that are not 32 bytes of canonical base64. */
	{ RFC_FINAL_WP ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndQ==", SASL_MALFORMED },
	{ RFC_FINAL_WP ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQAAA==", SASL_MALFORMED },
	{ RFC_FINAL_WP ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ", SASL_MALFORMED },
	{ RFC_FINAL_WP ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVR=", SASL_MALFORMED },
	{ RFC_FINAL_WP ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7And VQ=", SASL_MALFORMED },
	{ RFC_FINAL_WP ",p=dHzbZapWIk4jUhN-Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_MALFORMED },
};

/* Starts the RFC exchange up to the server-first message. */
static struct sasl_server *rfc_started(struct passdb *db)
{
	struct sasl_server *server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
	struct passdb_user u;

	sasl_server_set_nonce_for_test(server, RFC_SNONCE);
	assert_int_equal(step(server, db, RFC_CLIENT_FIRST, &u), SASL_CONTINUE);
	return server;
}

static void test_scram_client_final_errors(void **state)
{
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(final_cases) / sizeof(final_cases[0]); i++) {
		const struct final_case *c = &final_cases[i];
		struct sasl_server *server = rfc_started(fx->db);
		struct passdb_user u;
		enum sasl_status st = step(server, fx->db, c->msg, &u);

		if (st != c->status)
			fail_msg("case %zu (%s): status %d, want %d", i, c->msg,
				 st, c->status);
		if (st != SASL_CONTINUE)
			assert_int_equal(step(server, fx->db, "", &u),
					 SASL_MALFORMED);
		sasl_server_free(&server);
	}
	/* A NUL inside the client-final message. */
	struct sasl_server *server = rfc_started(fx->db);
	struct passdb_user u;
	char msg[] = RFC_CLIENT_FINAL;
	msg[3] = '\0';
	assert_int_equal(step_bytes(server, fx->db, msg, sizeof(msg) - 1, &u),
			 SASL_MALFORMED);
	sasl_server_free(&server);
}

/* c= must be the base64 of the very header the client sent. */
static void test_scram_binding_per_header(void **state)
{
	struct fixture *fx = *state;
	struct sasl_server *server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
	struct passdb_user u;
	struct scram_client c;

	/* Client sends "y,," but signs and binds "n,,". */
	assert_int_equal(step(server, fx->db, "y,,n=user,r=abc", &u), SASL_CONTINUE);
	scram_client_final("pencil", "n,,n=user,r=abc", last_out, "", &c);
	assert_int_equal(step(server, fx->db, c.final, &u), SASL_MALFORMED);
	sasl_server_free(&server);
	/* Header with authzid: "n,a=user," is bound, not "n,,". */
	server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
	assert_int_equal(step(server, fx->db, "n,a=user,n=user,r=abc", &u),
			 SASL_CONTINUE);
	scram_client_final("pencil", "n,,n=user,r=abc", last_out, "", &c);
	assert_int_equal(step(server, fx->db, c.final, &u), SASL_MALFORMED);
	sasl_server_free(&server);
}

/* The answer to the server-final message must be empty. */
static void test_scram_ack(void **state)
{
	struct fixture *fx = *state;
	static const struct {
		const char *msg;
		size_t len;
	} answers[] = { { "x", 1 }, { "v=x", 3 }, { "\0", 1 }, { RFC_CLIENT_FINAL, sizeof(RFC_CLIENT_FINAL) - 1 } };

	for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
		struct sasl_server *server = rfc_started(fx->db);
		struct passdb_user u;

		assert_int_equal(step(server, fx->db, RFC_CLIENT_FINAL, &u),
				 SASL_CONTINUE);
		assert_int_equal(step_bytes(server, fx->db, answers[i].msg,
					    answers[i].len, &u), SASL_MALFORMED);
		assert_int_equal(step(server, fx->db, "", &u), SASL_MALFORMED);
		sasl_server_free(&server);
	}
}

/* A user removed between the proof and the empty answer: FAIL. */
static void test_scram_user_removed(void **state)
{
	struct fixture *fx = *state;
	struct sasl_server *server = rfc_started(fx->db);
	struct passdb_user u;

	assert_int_equal(step(server, fx->db, RFC_CLIENT_FINAL, &u), SASL_CONTINUE);
	write_file(fx->path, "bob:{PLAIN}secret\n");
	assert_int_equal(step(server, fx->db, "", &u), SASL_FAIL);
	sasl_server_free(&server);
}

/* Lengths: a message over SASL_CLIENT_MAX is refused at any step; one
   of exactly SASL_CLIENT_MAX is parsed. */
static void test_scram_lengths(void **state)
{
	struct fixture *fx = *state;
	char msg[SASL_CLIENT_MAX + 2];
	struct sasl_server *server;
	struct passdb_user u;

	memset(msg, 'a', sizeof(msg));
	memcpy(msg, "n,,n=user,r=", 12);
	msg[SASL_CLIENT_MAX + 1] = '\0';
	assert_int_equal(run1(fx->db, SASL_MECH_SCRAM_SHA_256, msg,
			      SASL_CLIENT_MAX + 1), SASL_MALFORMED);
	msg[SASL_CLIENT_MAX] = '\0';
	server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
	assert_int_equal(step(server, fx->db, msg, &u), SASL_CONTINUE);
	/* The longest client nonce comes back whole, plus 32. */
	assert_int_equal(strchr(last_out, ',') - last_out,
			 2 + (SASL_CLIENT_MAX - 12) + 32);
	memset(msg, 'c', sizeof(msg));
	msg[SASL_CLIENT_MAX + 1] = '\0';
	assert_int_equal(step(server, fx->db, msg, &u), SASL_MALFORMED);
	sasl_server_free(&server);

	/* A very long user name: kept truncated, never a real user. */
	char name_first[200];
	snprintf(name_first, sizeof(name_first), "n,,n=user%0100d,r=x", 0);
	server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
	assert_int_equal(step(server, fx->db, name_first, &u), SASL_CONTINUE);
	assert_int_equal(strlen(sasl_server_user(server)), USERNAME_MAX);
	sasl_server_free(&server);
}

/* Each SCRAM exchange costs exactly one PBKDF2 in the passdb, whatever
   the user; the proof check adds none. */
static void test_scram_equal_work(void **state)
{
	static const char *const firsts[] = {
		"n,,n=user,r=x", "n,,n=sam,r=x", "n,,n=bob,r=x",
		"n,,n=carol,r=x", "n,,n=nobody,r=x", "n,,n=bob=2C,r=x",
	};
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(firsts) / sizeof(firsts[0]); i++) {
		struct sasl_server *server = sasl_server_new(SASL_MECH_SCRAM_SHA_256);
		struct passdb_user u;
		unsigned long before = password_slow_count();

		assert_int_equal(step(server, fx->db, firsts[i], &u), SASL_CONTINUE);
		char final[256];
		snprintf(final, sizeof(final), "c=biws,r=%.*s,p=%s",
			 (int)(strchr(last_out, ',') - last_out - 2), last_out + 2,
			 "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
		assert_int_equal(step(server, fx->db, final, &u), SASL_FAIL);
		if (password_slow_count() != before + 1)
			fail_msg("%s: %lu slow hashes", firsts[i],
				 password_slow_count() - before);
		sasl_server_free(&server);
	}
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mech_names),
		T(test_plain_ir),
		T(test_plain_no_ir),
		T(test_plain_cases),
		T(test_plain_lengths),
		T(test_login_no_ir),
		T(test_login_ir),
		T(test_login_cases),
		T(test_later_step_without_message),
		T(test_scram_rfc7677),
		T(test_scram_rfc7677_no_ir),
		T(test_scram_fresh_nonce),
		T(test_scram_exchanges),
		T(test_scram_user_name),
		T(test_scram_client_first_errors),
		T(test_scram_client_final_errors),
		T(test_scram_binding_per_header),
		T(test_scram_ack),
		T(test_scram_user_removed),
		T(test_scram_lengths),
		T(test_scram_equal_work),
	};
#undef T

	log_set_level(LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
