/*
 * sasl.c — server side of PLAIN, LOGIN and SCRAM-SHA-256 (see sasl.h).
 *
 * An exchange is an explicit state; sasl_server_step() checks the common
 * rules (exchange over, message present and not too long) and hands the
 * message to the handler of the current state (a table).  The first
 * step's handler is the mechanism's own.  Any status but SASL_CONTINUE
 * moves to SASL_STATE_DONE, which answers SASL_MALFORMED for ever.
 *
 * PLAIN and LOGIN end in passdb_verify_plain(), which does the equal-work
 * dance for unknown users.  SCRAM asks the passdb for credentials (real or
 * fake, always one PBKDF2) at the client-first message, checks the proof
 * itself, and only consults the passdb again (passdb_user_lookup()) after
 * a good proof made against usable credentials.
 *
 * Every client message is parsed from (pointer, length) and never read
 * past its length; fixed buffers are sized from SASL_CLIENT_MAX.
 */
#include "sasl.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "base64.h"
#include "password.h"

/* Random bytes in the server's half of the SCRAM nonce (RFC 5802 asks for
   a fresh, unpredictable value): 192 bits, 32 base64 characters. */
#define SASL_SCRAM_NONCE_BYTES 24
/* Longest server nonce part a test may force. */
#define SASL_SCRAM_TEST_NONCE_MAX 64
#define SASL_SCRAM_SNONCE_MAX SASL_SCRAM_TEST_NONCE_MAX
_Static_assert((SASL_SCRAM_NONCE_BYTES + 2) / 3 * 4 <= SASL_SCRAM_SNONCE_MAX,
	       "a random server nonce fits the buffer");

#define SASL_B64_LEN(n) (((n) + 2) / 3 * 4)

/* "r=" c-nonce s-nonce ",s=" salt ",i=" iter: the client nonce is part of
   a client message, so shorter than SASL_CLIENT_MAX. */
#define SASL_SCRAM_SERVER_FIRST_MAX                                          \
	(sizeof("r=,s=,i=") + SASL_CLIENT_MAX + SASL_SCRAM_SNONCE_MAX +     \
	 SASL_B64_LEN(PASSWORD_SCRAM_SALT_MAX) + sizeof("1000000"))

/* "v=" ServerSignature */
#define SASL_SCRAM_SERVER_FINAL_MAX \
	(sizeof("v=") + SASL_B64_LEN(PASSWORD_SCRAM_KEY_LEN))

enum sasl_state {
	SASL_STATE_START,
	SASL_STATE_PLAIN_MESSAGE,
	SASL_STATE_LOGIN_USER,
	SASL_STATE_LOGIN_PASSWORD,
	SASL_STATE_SCRAM_CLIENT_FIRST,
	SASL_STATE_SCRAM_CLIENT_FINAL,
	SASL_STATE_SCRAM_ACK,
	SASL_STATE_DONE,
	SASL_STATE_COUNT
};

struct sasl_scram {
	char gs2_header[SASL_CLIENT_MAX + 1];
	size_t gs2_len;
	char client_first_bare[SASL_CLIENT_MAX + 1];
	size_t bare_len;
	char server_first[SASL_SCRAM_SERVER_FIRST_MAX];
	size_t server_first_len;
	size_t nonce_len;       /* the full nonce is server_first + 2 */
	char server_final[SASL_SCRAM_SERVER_FINAL_MAX];
	char test_nonce[SASL_SCRAM_TEST_NONCE_MAX + 1];
	struct password_scram cred;
	bool usable;
};

struct sasl_server {
	enum sasl_mech mech;
	enum sasl_state state;
	/* The authentication identity as the client gave it (decoded, no
	   NUL inside), and its first USERNAME_MAX bytes for the logs. */
	char authcid[SASL_CLIENT_MAX + 1];
	bool authcid_set;
	char user_log[USERNAME_MAX + 1];
	struct sasl_scram scram;
};

/* What a state handler returns besides the status: the challenge. */
struct sasl_reply {
	const uint8_t *out;
	size_t out_len;
};

typedef enum sasl_status sasl_handler(struct sasl_server *server,
				      struct passdb *db, const uint8_t *in,
				      size_t in_len, struct sasl_reply *reply,
				      struct passdb_user *user_r);

/* ---- common ---- */

static void sasl_reply_text(struct sasl_reply *reply, const char *text)
{
	reply->out = (const uint8_t *)text;
	reply->out_len = strlen(text);
}

/* Records the authentication identity (len bytes, no NUL inside). */
static void sasl_set_authcid(struct sasl_server *server, const char *name,
			     size_t len)
{
	size_t log_len = len < USERNAME_MAX ? len : USERNAME_MAX;

	memcpy(server->authcid, name, len);
	server->authcid[len] = '\0';
	memcpy(server->user_log, name, log_len);
	server->user_log[log_len] = '\0';
	server->authcid_set = true;
}

static enum sasl_status sasl_from_passdb(enum passdb_result r)
{
	switch (r) {
	case PASSDB_OK:
		return SASL_OK;
	case PASSDB_FAIL:
		return SASL_FAIL;
	case PASSDB_TEMPFAIL:
		break;
	}
	return SASL_TEMPFAIL;
}

/* passdb_verify_plain() with the password copied out of the message so
   it is NUL-terminated; the copy is wiped. */
static enum sasl_status sasl_verify_password(struct sasl_server *server,
					     struct passdb *db,
					     const uint8_t *pw, size_t pw_len,
					     struct passdb_user *user_r)
{
	char password[SASL_CLIENT_MAX + 1];
	enum passdb_result r;

	memcpy(password, pw, pw_len); /* pw_len <= SASL_CLIENT_MAX */
	password[pw_len] = '\0';
	r = passdb_verify_plain(db, server->authcid, password, user_r);
	explicit_bzero(password, sizeof(password));
	return sasl_from_passdb(r);
}

/* ---- PLAIN (RFC 4616): [authzid] NUL authcid NUL passwd ---- */

static enum sasl_status sasl_plain_message(struct sasl_server *server,
					   struct passdb *db, const uint8_t *in,
					   size_t in_len, struct sasl_reply *reply,
					   struct passdb_user *user_r)
{
	const uint8_t *sep1 = memchr(in, '\0', in_len);

	(void)reply;
	if (sep1 == NULL)
		return SASL_MALFORMED;
	/* Each part's length follows from the one before: no part reaches
	   past in_len. */
	size_t authzid_len = (size_t)(sep1 - in);
	const uint8_t *authcid = sep1 + 1;
	size_t rest = in_len - authzid_len - 1;
	const uint8_t *sep2 = memchr(authcid, '\0', rest);
	if (sep2 == NULL)
		return SASL_MALFORMED;
	size_t authcid_len = (size_t)(sep2 - authcid);
	const uint8_t *pw = sep2 + 1;
	size_t pw_len = rest - authcid_len - 1;
	if (memchr(pw, '\0', pw_len) != NULL || authcid_len == 0 || pw_len == 0)
		return SASL_MALFORMED;
	sasl_set_authcid(server, (const char *)authcid, authcid_len);
	/* No proxy authorization: an authzid must name the same user. */
	if (authzid_len != 0 && (authzid_len != authcid_len ||
				 memcmp(in, authcid, authcid_len) != 0))
		return SASL_FAIL;
	return sasl_verify_password(server, db, pw, pw_len, user_r);
}

static enum sasl_status sasl_plain_start(struct sasl_server *server,
					 struct passdb *db, const uint8_t *in,
					 size_t in_len, struct sasl_reply *reply,
					 struct passdb_user *user_r)
{
	if (in != NULL)
		return sasl_plain_message(server, db, in, in_len, reply, user_r);
	server->state = SASL_STATE_PLAIN_MESSAGE;
	sasl_reply_text(reply, "");
	return SASL_CONTINUE;
}

/* ---- LOGIN: "Username:", then "Password:" ---- */

static enum sasl_status sasl_login_user(struct sasl_server *server,
					struct passdb *db, const uint8_t *in,
					size_t in_len, struct sasl_reply *reply,
					struct passdb_user *user_r)
{
	(void)db;
	(void)user_r;
	if (memchr(in, '\0', in_len) != NULL)
		return SASL_MALFORMED;
	sasl_set_authcid(server, (const char *)in, in_len);
	server->state = SASL_STATE_LOGIN_PASSWORD;
	sasl_reply_text(reply, "Password:");
	return SASL_CONTINUE;
}

static enum sasl_status sasl_login_password(struct sasl_server *server,
					    struct passdb *db, const uint8_t *in,
					    size_t in_len, struct sasl_reply *reply,
					    struct passdb_user *user_r)
{
	(void)reply;
	if (memchr(in, '\0', in_len) != NULL)
		return SASL_MALFORMED;
	return sasl_verify_password(server, db, in, in_len, user_r);
}

static enum sasl_status sasl_login_start(struct sasl_server *server,
					 struct passdb *db, const uint8_t *in,
					 size_t in_len, struct sasl_reply *reply,
					 struct passdb_user *user_r)
{
	if (in != NULL)
		return sasl_login_user(server, db, in, in_len, reply, user_r);
	server->state = SASL_STATE_LOGIN_USER;
	sasl_reply_text(reply, "Username:");
	return SASL_CONTINUE;
}

/* ---- SCRAM-SHA-256 (RFC 5802, RFC 7677): message syntax ---- */

/*
 * A read position in one SCRAM message (no NUL inside, checked first).
 * Attributes are "<letter>=<value>" separated by ','.
 */
struct scram_text {
	const char *s;
	size_t len;
	size_t pos;
};

/*
 * Reads attribute `name` at the position: sets *value_r and *value_len_r to
 * its value (up to the next ',' or the end) and leaves the position at
 * that ',' or the end.  False if the attribute there is not `name`.
 */
static bool scram_attr(struct scram_text *t, char name, const char **value_r,
		       size_t *value_len_r)
{
	size_t start = t->pos + 2;

	if (t->len - t->pos < 2 || t->s[t->pos] != name || t->s[t->pos + 1] != '=')
		return false;
	const char *comma = memchr(t->s + start, ',', t->len - start);
	size_t end = comma != NULL ? (size_t)(comma - t->s) : t->len;

	*value_r = t->s + start;
	*value_len_r = end - start;
	t->pos = end;
	return true;
}

/* Consumes one ',' at the position. */
static bool scram_comma(struct scram_text *t)
{
	if (t->pos >= t->len || t->s[t->pos] != ',')
		return false;
	t->pos++;
	return true;
}

static bool scram_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The optional tail: *("," ALPHA "=" 1*value-char).  Extensions are
   ignored; the position ends at the end of the text. */
static bool scram_extensions(struct scram_text *t)
{
	while (t->pos < t->len) {
		const char *value;
		size_t value_len;

		if (!scram_comma(t) || t->pos >= t->len ||
		    !scram_is_alpha(t->s[t->pos]) ||
		    !scram_attr(t, t->s[t->pos], &value, &value_len) ||
		    value_len == 0)
			return false;
	}
	return true;
}

/*
 * Un-escapes a saslname ("=2C" is ',', "=3D" is '='; any other '=' is an
 * error) into out (room for len + 1 bytes, NUL-terminated).  Empty is an
 * error too (RFC 5802: 1*(value-safe-char / "=2C" / "=3D")).
 */
static bool scram_saslname(const char *in, size_t len, char *out,
			   size_t *out_len_r)
{
	size_t o = 0;

	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (in[i] != '=') {
			out[o++] = in[i];
			continue;
		}
		if (len - i < 3)
			return false;
		if (in[i + 1] == '2' && in[i + 2] == 'C')
			out[o++] = ',';
		else if (in[i + 1] == '3' && in[i + 2] == 'D')
			out[o++] = '=';
		else
			return false;
		i += 2;
	}
	out[o] = '\0';
	*out_len_r = o;
	return true;
}

/* printable = %x21-2B / %x2D-7E (RFC 5802), non-empty. */
static bool scram_nonce_valid(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	}
	return true;
}

/* The parts of a client-first message. */
struct scram_client_first {
	size_t gs2_len;               /* the header, with its final ',' */
	char authzid[SASL_CLIENT_MAX + 1];
	size_t authzid_len;           /* 0: none given */
	char user[SASL_CLIENT_MAX + 1];
	size_t user_len;
	const char *cnonce;
	size_t cnonce_len;
};

/*
 * gs2-header = gs2-cbind-flag "," [ authzid ] ","
 * with gs2-cbind-flag "n" or "y" ("p=..." asks for channel binding, which
 * is not offered) and authzid = "a=" saslname.
 */
static bool scram_parse_gs2(struct scram_text *t, struct scram_client_first *cf)
{
	const char *value;
	size_t value_len;

	if (t->len < 2 || (t->s[0] != 'n' && t->s[0] != 'y') || t->s[1] != ',')
		return false;
	t->pos = 2;
	cf->authzid_len = 0;
	if (t->pos < t->len && t->s[t->pos] != ',') {
		if (!scram_attr(t, 'a', &value, &value_len) ||
		    !scram_saslname(value, value_len, cf->authzid,
				    &cf->authzid_len))
			return false;
	}
	if (!scram_comma(t))
		return false;
	cf->gs2_len = t->pos;
	return true;
}

/*
 * client-first-message-bare = [reserved-mext ","] username "," nonce
 * ["," extensions]: "m=" (a mandatory extension) is refused, as RFC 5802
 * requires of a server that knows none.
 */
static bool scram_parse_bare(struct scram_text *t, struct scram_client_first *cf)
{
	const char *value;
	size_t value_len;

	if (!scram_attr(t, 'n', &value, &value_len) ||
	    !scram_saslname(value, value_len, cf->user, &cf->user_len) ||
	    !scram_comma(t) ||
	    !scram_attr(t, 'r', &cf->cnonce, &cf->cnonce_len) ||
	    !scram_nonce_valid(cf->cnonce, cf->cnonce_len))
		return false;
	return scram_extensions(t);
}

static bool scram_parse_client_first(const char *s, size_t len,
				     struct scram_client_first *cf)
{
	struct scram_text t = { s, len, 0 };

	if (memchr(s, '\0', len) != NULL)
		return false;
	return scram_parse_gs2(&t, cf) && scram_parse_bare(&t, cf);
}

/* The parts of a client-final message. */
struct scram_client_final {
	size_t without_proof_len;     /* client-final-message-without-proof */
	const char *cbind;            /* c= value (base64 of the gs2 header) */
	size_t cbind_len;
	const char *nonce;
	size_t nonce_len;
	uint8_t proof[PASSWORD_SCRAM_KEY_LEN];
};

/*
 * client-final-message = "c=" base64 "," "r=" nonce ["," extensions]
 * "," "p=" base64, the proof last (so it is after the last ',').
 */
static bool scram_parse_client_final(const char *s, size_t len,
				     struct scram_client_final *cf)
{
	const char *last_comma = memrchr(s, ',', len);
	const char *proof;
	size_t proof_len, proof_bytes;

	if (memchr(s, '\0', len) != NULL || last_comma == NULL)
		return false;
	cf->without_proof_len = (size_t)(last_comma - s);
	struct scram_text tail = { s, len, cf->without_proof_len + 1 };
	if (!scram_attr(&tail, 'p', &proof, &proof_len) ||
	    base64_decode(proof, proof_len, cf->proof, sizeof(cf->proof),
			  &proof_bytes) < 0 ||
	    proof_bytes != sizeof(cf->proof))
		return false;

	struct scram_text t = { s, cf->without_proof_len, 0 };
	return scram_attr(&t, 'c', &cf->cbind, &cf->cbind_len) &&
	       scram_comma(&t) &&
	       scram_attr(&t, 'r', &cf->nonce, &cf->nonce_len) &&
	       scram_extensions(&t);
}

/* ---- SCRAM-SHA-256: the exchange ---- */

/* Writes the server's nonce part (a forced test value, or 24 random bytes
   in base64) into out (SASL_SCRAM_SNONCE_MAX + 1 bytes). */
static int scram_server_nonce(const struct sasl_scram *scram, char *out)
{
	uint8_t rnd[SASL_SCRAM_NONCE_BYTES];

	if (scram->test_nonce[0] != '\0') {
		/* Fits: out and test_nonce are both TEST_NONCE_MAX + 1 bytes.
		   NOLINTNEXTLINE(clang-analyzer-security.insecureAPI.strcpy) */
		strcpy(out, scram->test_nonce);
		return 0;
	}
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -1;
	base64_encode(rnd, sizeof(rnd), out);
	return 0;
}

/* server-first-message = "r=" c-nonce s-nonce ",s=" salt ",i=" iter */
static int scram_build_server_first(struct sasl_scram *scram,
				    const char *cnonce, size_t cnonce_len)
{
	char snonce[SASL_SCRAM_SNONCE_MAX + 1];
	char salt[SASL_B64_LEN(PASSWORD_SCRAM_SALT_MAX) + 1];

	if (scram_server_nonce(scram, snonce) < 0)
		return -1;
	base64_encode(scram->cred.salt, scram->cred.salt_len, salt);
	int n = snprintf(scram->server_first, sizeof(scram->server_first),
			 "r=%.*s%s,s=%s,i=%u", (int)cnonce_len, cnonce, snonce,
			 salt, scram->cred.iter);
	if (n < 0 || (size_t)n >= sizeof(scram->server_first))
		return -1; /* cannot happen: the buffer is sized for it */
	scram->server_first_len = (size_t)n;
	scram->nonce_len = cnonce_len + strlen(snonce);
	return 0;
}

/* Saves what the client-final step needs of the client-first message. */
static void scram_keep_client_first(struct sasl_scram *scram,
				    const char *s, size_t len,
				    const struct scram_client_first *cf)
{
	memcpy(scram->gs2_header, s, cf->gs2_len);
	scram->gs2_header[cf->gs2_len] = '\0';
	scram->gs2_len = cf->gs2_len;
	scram->bare_len = len - cf->gs2_len;
	memcpy(scram->client_first_bare, s + cf->gs2_len, scram->bare_len);
	scram->client_first_bare[scram->bare_len] = '\0';
}

static enum sasl_status sasl_scram_client_first(struct sasl_server *server,
						struct passdb *db,
						const uint8_t *in, size_t in_len,
						struct sasl_reply *reply,
						struct passdb_user *user_r)
{
	struct sasl_scram *scram = &server->scram;
	const char *s = (const char *)in;
	struct scram_client_first cf;

	(void)user_r;
	if (!scram_parse_client_first(s, in_len, &cf))
		return SASL_MALFORMED;
	sasl_set_authcid(server, cf.user, cf.user_len);
	/* No proxy authorization: an authzid must name the same user. */
	if (cf.authzid_len != 0 &&
	    (cf.authzid_len != cf.user_len ||
	     memcmp(cf.authzid, cf.user, cf.user_len) != 0))
		return SASL_FAIL;
	scram_keep_client_first(scram, s, in_len, &cf);
	if (passdb_scram_lookup(db, server->authcid, &scram->cred,
				&scram->usable) != PASSDB_OK ||
	    scram_build_server_first(scram, cf.cnonce, cf.cnonce_len) < 0)
		return SASL_TEMPFAIL;
	server->state = SASL_STATE_SCRAM_CLIENT_FINAL;
	reply->out = (const uint8_t *)scram->server_first;
	reply->out_len = scram->server_first_len;
	return SASL_CONTINUE;
}

static enum sasl_status sasl_scram_start(struct sasl_server *server,
					 struct passdb *db, const uint8_t *in,
					 size_t in_len, struct sasl_reply *reply,
					 struct passdb_user *user_r)
{
	if (in != NULL)
		return sasl_scram_client_first(server, db, in, in_len, reply,
					       user_r);
	server->state = SASL_STATE_SCRAM_CLIENT_FIRST;
	sasl_reply_text(reply, "");
	return SASL_CONTINUE;
}

/* True if the c= value is the base64 of the gs2 header the client sent
   (no channel binding data: "n" and "y" carry none). */
static bool scram_cbind_ok(const struct sasl_scram *scram,
			   const struct scram_client_final *cf)
{
	char want[SASL_B64_LEN(SASL_CLIENT_MAX) + 1];

	base64_encode(scram->gs2_header, scram->gs2_len, want);
	return cf->cbind_len == strlen(want) &&
	       memcmp(cf->cbind, want, cf->cbind_len) == 0;
}

static bool scram_nonce_ok(const struct sasl_scram *scram,
			   const struct scram_client_final *cf)
{
	return cf->nonce_len == scram->nonce_len &&
	       memcmp(cf->nonce, scram->server_first + 2, cf->nonce_len) == 0;
}

/*
 * mac_r = HMAC-SHA-256(key, AuthMessage), where AuthMessage =
 * client-first-message-bare "," server-first-message ","
 * client-final-message-without-proof.  -1 if OpenSSL fails.
 */
static int scram_auth_hmac(const struct sasl_scram *scram,
			   const uint8_t key[PASSWORD_SCRAM_KEY_LEN],
			   const char *final_wp, size_t final_wp_len,
			   uint8_t mac_r[PASSWORD_SCRAM_KEY_LEN])
{
	const void *parts[] = { scram->client_first_bare, ",",
				scram->server_first, ",", final_wp };
	const size_t lens[] = { scram->bare_len, 1, scram->server_first_len,
				1, final_wp_len };
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
	size_t out_len = 0;
	int ok = ctx != NULL &&
		 EVP_MAC_init(ctx, key, PASSWORD_SCRAM_KEY_LEN, params) == 1;

	for (size_t i = 0; ok && i < sizeof(parts) / sizeof(parts[0]); i++)
		ok = EVP_MAC_update(ctx, parts[i], lens[i]) == 1;
	ok = ok && EVP_MAC_final(ctx, mac_r, &out_len,
				 PASSWORD_SCRAM_KEY_LEN) == 1 &&
	     out_len == PASSWORD_SCRAM_KEY_LEN;
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	return ok ? 0 : -1;
}

/*
 * Checks the proof: ClientKey = proof XOR HMAC(StoredKey, AuthMessage),
 * and SHA-256(ClientKey) must be StoredKey.  1 on a match, 0 on a
 * mismatch, -1 if OpenSSL fails.  Intermediate keys are wiped.
 */
static int scram_proof_ok(const struct sasl_scram *scram,
			  const char *final_wp, size_t final_wp_len,
			  const uint8_t proof[PASSWORD_SCRAM_KEY_LEN])
{
	uint8_t client_key[PASSWORD_SCRAM_KEY_LEN];
	uint8_t stored_key[EVP_MAX_MD_SIZE];
	unsigned int stored_len = 0;
	int ret = -1;

	if (scram_auth_hmac(scram, scram->cred.stored_key, final_wp,
			    final_wp_len, client_key) == 0) {
		for (size_t i = 0; i < sizeof(client_key); i++)
			client_key[i] ^= proof[i];
		if (EVP_Digest(client_key, sizeof(client_key), stored_key,
			       &stored_len, EVP_sha256(), NULL) == 1 &&
		    stored_len == PASSWORD_SCRAM_KEY_LEN)
			ret = CRYPTO_memcmp(stored_key, scram->cred.stored_key,
					    PASSWORD_SCRAM_KEY_LEN) == 0;
	}
	explicit_bzero(client_key, sizeof(client_key));
	explicit_bzero(stored_key, sizeof(stored_key));
	return ret;
}

/* server-final-message = "v=" base64(HMAC(ServerKey, AuthMessage)) */
static int scram_build_server_final(struct sasl_scram *scram,
				    const char *final_wp, size_t final_wp_len)
{
	uint8_t signature[PASSWORD_SCRAM_KEY_LEN];

	if (scram_auth_hmac(scram, scram->cred.server_key, final_wp,
			    final_wp_len, signature) < 0)
		return -1;
	memcpy(scram->server_final, "v=", 2);
	base64_encode(signature, sizeof(signature), scram->server_final + 2);
	return 0;
}

static enum sasl_status sasl_scram_client_final(struct sasl_server *server,
						struct passdb *db,
						const uint8_t *in, size_t in_len,
						struct sasl_reply *reply,
						struct passdb_user *user_r)
{
	struct sasl_scram *scram = &server->scram;
	const char *s = (const char *)in;
	struct scram_client_final cf;

	(void)db;
	(void)user_r;
	if (!scram_parse_client_final(s, in_len, &cf) ||
	    !scram_cbind_ok(scram, &cf) || !scram_nonce_ok(scram, &cf))
		return SASL_MALFORMED;
	int r = scram_proof_ok(scram, s, cf.without_proof_len, cf.proof);
	if (r < 0)
		return SASL_TEMPFAIL;
	/* Fake credentials never succeed, whatever the proof. */
	if (r == 0 || !scram->usable)
		return SASL_FAIL;
	if (scram_build_server_final(scram, s, cf.without_proof_len) < 0)
		return SASL_TEMPFAIL;
	server->state = SASL_STATE_SCRAM_ACK;
	sasl_reply_text(reply, scram->server_final);
	return SASL_CONTINUE;
}

/* The client's answer to the server-final message must be empty. */
static enum sasl_status sasl_scram_ack(struct sasl_server *server,
				       struct passdb *db, const uint8_t *in,
				       size_t in_len, struct sasl_reply *reply,
				       struct passdb_user *user_r)
{
	(void)in;
	(void)reply;
	if (in_len != 0)
		return SASL_MALFORMED;
	return sasl_from_passdb(passdb_user_lookup(db, server->authcid, user_r));
}

/* ---- the tables and the public functions ---- */

/* The first step of each mechanism (their names: sasl-mech.c). */
static sasl_handler *const sasl_starts[SASL_MECH_COUNT] = {
	[SASL_MECH_PLAIN] = sasl_plain_start,
	[SASL_MECH_LOGIN] = sasl_login_start,
	[SASL_MECH_SCRAM_SHA_256] = sasl_scram_start,
};

/* Handlers of the later steps; START goes through sasl_starts, DONE has
   none. */
static sasl_handler *const sasl_handlers[SASL_STATE_COUNT] = {
	[SASL_STATE_PLAIN_MESSAGE] = sasl_plain_message,
	[SASL_STATE_LOGIN_USER] = sasl_login_user,
	[SASL_STATE_LOGIN_PASSWORD] = sasl_login_password,
	[SASL_STATE_SCRAM_CLIENT_FIRST] = sasl_scram_client_first,
	[SASL_STATE_SCRAM_CLIENT_FINAL] = sasl_scram_client_final,
	[SASL_STATE_SCRAM_ACK] = sasl_scram_ack,
};

struct sasl_server *sasl_server_new(enum sasl_mech mech)
{
	struct sasl_server *server;

	if ((unsigned int)mech >= SASL_MECH_COUNT)
		return NULL;
	if ((server = calloc(1, sizeof(*server))) == NULL)
		return NULL;
	server->mech = mech;
	server->state = SASL_STATE_START;
	return server;
}

void sasl_server_free(struct sasl_server **serverp)
{
	struct sasl_server *server = *serverp;

	if (server == NULL)
		return;
	explicit_bzero(server, sizeof(*server));
	free(server);
	*serverp = NULL;
}

/* The exchange is over: nothing secret is needed any more. */
static void sasl_server_finish(struct sasl_server *server)
{
	server->state = SASL_STATE_DONE;
	explicit_bzero(&server->scram.cred, sizeof(server->scram.cred));
	server->scram.usable = false;
}

enum sasl_status sasl_server_step(struct sasl_server *server, struct passdb *db,
				  const uint8_t *in, size_t in_len,
				  const uint8_t **out_r, size_t *out_len_r,
				  struct passdb_user *user_r)
{
	struct sasl_reply reply = { (const uint8_t *)"", 0 };
	enum sasl_status status;

	memset(user_r, 0, sizeof(*user_r));
	if (server->state == SASL_STATE_DONE ||
	    (in == NULL && server->state != SASL_STATE_START) ||
	    (in != NULL && in_len > SASL_CLIENT_MAX))
		status = SASL_MALFORMED;
	else if (server->state == SASL_STATE_START)
		status = sasl_starts[server->mech](server, db, in, in_len,
						   &reply, user_r);
	else
		status = sasl_handlers[server->state](server, db, in, in_len,
						      &reply, user_r);
	if (status != SASL_CONTINUE) {
		sasl_server_finish(server);
		reply.out = (const uint8_t *)"";
		reply.out_len = 0;
	}
	*out_r = reply.out;
	*out_len_r = reply.out_len;
	return status;
}

const char *sasl_server_user(const struct sasl_server *server)
{
	return server->authcid_set ? server->user_log : NULL;
}

void sasl_server_set_nonce_for_test(struct sasl_server *server,
				    const char *server_nonce_part)
{
	size_t len = strnlen(server_nonce_part, SASL_SCRAM_TEST_NONCE_MAX + 1);

	if (len > SASL_SCRAM_TEST_NONCE_MAX ||
	    !scram_nonce_valid(server_nonce_part, len))
		return;
	memcpy(server->scram.test_nonce, server_nonce_part, len + 1);
}
