/*
 * fuzz-sasl.c — libFuzzer harness for the SASL server (PLAIN, LOGIN,
 * SCRAM-SHA-256) against a real passwd-file made once in a temp dir.
 *
 * Input layout: byte 0 picks the exchange, the rest is split on 0xff into
 * up to 4 client messages (0xff never occurs in UTF-8 text, so the
 * separator costs the fuzzer nothing it needs):
 *   bits 0-1  mechanism (3 wraps to PLAIN)
 *   bit 2     no initial response: the first step gets NULL
 *   bit 3     SCRAM helper: force the server nonce part to "fuzz" and
 *             append a correct proof for user/pencil to the second message
 *             (the client-final without its proof), so the fuzzer can get
 *             past the proof to the server-final and the last step.
 * Each message is copied into a buffer of its exact size, so ASan catches
 * any read past a message.  Checked: statuses are in range, a challenge
 * is present and bounded, an ended exchange stays ended (MALFORMED), and
 * SASL_OK names a user identical to sasl_server_user().
 *
 * Cost: an exchange that reaches the passdb runs one slow hash (a
 * SHA512-CRYPT dummy at 1000 rounds, the first entry, for PLAIN and LOGIN;
 * PBKDF2 at 4096 iterations for SCRAM), well under a millisecond or two.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base64.h"
#include "log.h"
#include "passdb.h"
#include "sasl.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SEPARATOR 0xff
#define FUZZ_MAX_MESSAGES 4
#include "split-messages.h"
#define FUZZ_SNONCE "fuzz"

/* RFC 7677 section 3's user: "user", "pencil", 4096 iterations. */
#define FUZZ_SCRAM_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
static const char fuzz_users[] =
	"carol:{SHA512-CRYPT}$6$rounds=1000$saltsalt$bbY.T.ZpN43KapLdmlSbP6Mmx"
	"BlkMSbhrh.Y1rmY0fYaRO/t.4sKqUiU.Z8byKf8Oa1yagMn/0fncuHSYrb9h.\n"
	"user:{SCRAM-SHA-256}4096," FUZZ_SCRAM_SALT ","
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\n"
	"bob:{PLAIN}secret:1002:1002::/home/bob::mail=/srv/mail/bob\n"
	"a:{PLAIN}b\n";

static struct passdb *fuzz_db;
/* ClientKey and StoredKey of user/pencil, for the SCRAM helper. */
static uint8_t fuzz_client_key[32], fuzz_stored_key[32];

static void fuzz_scram_keys(void)
{
	uint8_t salt[32], salted[32];
	size_t salt_len;
	unsigned int len;

	if (base64_decode(FUZZ_SCRAM_SALT, strlen(FUZZ_SCRAM_SALT), salt,
			  sizeof(salt), &salt_len) < 0 ||
	    PKCS5_PBKDF2_HMAC("pencil", 6, salt, (int)salt_len, 4096,
			      EVP_sha256(), 32, salted) != 1 ||
	    HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10,
		 fuzz_client_key, &len) == NULL ||
	    EVP_Digest(fuzz_client_key, 32, fuzz_stored_key, &len,
		       EVP_sha256(), NULL) != 1)
		abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/fuzz-sasl-XXXXXX", path[64];
	const char *error;
	FILE *f;

	(void)argc;
	(void)argv;
	log_set_level(LOG_LEVEL_ERROR);
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/users", dir);
	if ((f = fopen(path, "w")) == NULL || fputs(fuzz_users, f) < 0 ||
	    fclose(f) != 0 || passdb_open(path, &fuzz_db, &error) < 0)
		abort();
	/* The passdb keeps its table; the file can go.  Reloads on a missing
	   file keep the loaded table (one warning, below our log level). */
	unlink(path);
	rmdir(dir);
	fuzz_scram_keys();
	return 0;
}

/*
 * The SCRAM helper: client-final = wp ",p=" proof, with the proof for
 * user/pencil over bare "," server_first "," wp.  bare is the first
 * message after its gs2 header (after its second ',').  Returns a malloc'ed
 * message and its length in *len_r.
 */
static uint8_t *fuzz_scram_final(const struct fuzz_msg *first,
				 const char *server_first,
				 const struct fuzz_msg *wp, size_t *len_r)
{
	const uint8_t *end = first->data + first->len;
	const uint8_t *c1 = memchr(first->data, ',', first->len);
	const uint8_t *c2 = c1 == NULL ? NULL :
			    memchr(c1 + 1, ',', (size_t)(end - (c1 + 1)));
	const uint8_t *bare = c2 != NULL ? c2 + 1 : end;
	size_t bare_len = (size_t)(end - bare);
	uint8_t sig[32], proof[32];
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	size_t out_len = 0;

	if (ctx == NULL || EVP_MAC_init(ctx, fuzz_stored_key, 32, params) != 1 ||
	    EVP_MAC_update(ctx, bare, bare_len) != 1 ||
	    EVP_MAC_update(ctx, (const uint8_t *)",", 1) != 1 ||
	    EVP_MAC_update(ctx, (const uint8_t *)server_first,
			   strlen(server_first)) != 1 ||
	    EVP_MAC_update(ctx, (const uint8_t *)",", 1) != 1 ||
	    EVP_MAC_update(ctx, wp->data, wp->len) != 1 ||
	    EVP_MAC_final(ctx, sig, &out_len, sizeof(sig)) != 1)
		abort();
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	for (size_t i = 0; i < sizeof(proof); i++)
		proof[i] = fuzz_client_key[i] ^ sig[i];

	uint8_t *msg = malloc(wp->len + 3 + base64_encoded_len(32) + 1);
	if (msg == NULL)
		abort();
	memcpy(msg, wp->data, wp->len);
	memcpy(msg + wp->len, ",p=", 3);
	base64_encode(proof, sizeof(proof), (char *)msg + wp->len + 3);
	*len_r = wp->len + 3 + base64_encoded_len(32);
	return msg;
}

/* One step with the message in an exact-size heap copy; checks what
   sasl.h promises about the result. */
static enum sasl_status fuzz_step(struct sasl_server *server,
				  const uint8_t *msg, size_t len, bool present,
				  char *out_copy, size_t out_copy_size)
{
	uint8_t *copy = present ? malloc(len > 0 ? len : 1) : NULL;
	const uint8_t *out = NULL;
	size_t out_len = 0;
	struct passdb_user user;

	if (present && copy == NULL)
		abort();
	if (present)
		memcpy(copy, msg, len);
	enum sasl_status st = sasl_server_step(server, fuzz_db, copy, len,
					       &out, &out_len, &user);
	free(copy);
	if ((unsigned int)st > SASL_TEMPFAIL || out == NULL ||
	    out_len >= out_copy_size)
		abort();
	memcpy(out_copy, out, out_len);
	out_copy[out_len] = '\0';
	if (st == SASL_OK) {
		const char *name = sasl_server_user(server);
		if (user.name == NULL || name == NULL ||
		    strcmp(user.name, name) != 0)
			abort();
	} else if (user.name != NULL) {
		abort();
	}
	passdb_user_clear(&user);
	return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_msg msgs[FUZZ_MAX_MESSAGES];
	char out[4 * SASL_CLIENT_MAX];
	enum sasl_mech mech;

	if (size == 0)
		return 0;
	(void)sasl_mech_from_name((const char *)data + 1, size - 1, &mech);
	mech = (enum sasl_mech)((data[0] & 3) % SASL_MECH_COUNT);
	bool no_ir = (data[0] & 4) != 0;
	bool helper = (data[0] & 8) != 0 && mech == SASL_MECH_SCRAM_SHA_256;
	size_t n = fuzz_split(data + 1, size - 1, msgs);
	struct sasl_server *server = sasl_server_new(mech);
	enum sasl_status st = SASL_CONTINUE;

	if (server == NULL)
		abort();
	if (helper)
		sasl_server_set_nonce_for_test(server, FUZZ_SNONCE);
	if (no_ir)
		st = fuzz_step(server, NULL, 0, false, out, sizeof(out));
	for (size_t i = 0; i < n && st == SASL_CONTINUE; i++) {
		if (helper && i == 1) {
			size_t len;
			uint8_t *final = fuzz_scram_final(&msgs[0], out,
							  &msgs[1], &len);
			st = fuzz_step(server, final, len, true, out,
				       sizeof(out));
			free(final);
		} else {
			st = fuzz_step(server, msgs[i].data, msgs[i].len, true,
				       out, sizeof(out));
		}
	}
	/* Over is over. */
	if (st != SASL_CONTINUE &&
	    fuzz_step(server, (const uint8_t *)"", 0, true, out,
		      sizeof(out)) != SASL_MALFORMED)
		abort();
	sasl_server_free(&server);
	return 0;
}
