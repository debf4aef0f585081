/*
 * sasl-client.c — the client side of POP3 authentication (see
 * sasl-client.h).
 *
 * Each SASL mechanism is one row of mech_table: how to build the first
 * message, how to answer a challenge.  The exchange itself (phases,
 * base64, the 255-octet rule for the initial response, wiping) is common
 * code around those rows.
 */
#include "sasl-client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "base64.h"
#include "strnum.h"

#define SCRAM_KEY_LEN 32          /* SHA-256 */
#define SCRAM_NONCE_RANDOM 18     /* random bytes: 24 base64 characters */
#define SCRAM_TEST_NONCE_MAX 64
/* Attributes in one SCRAM server message: 3 required, the rest
   extensions we ignore. */
#define SCRAM_ATTRS_MAX 16
/* base64("n,,"): the GS2 header, no channel binding (RFC 5802 7). */
#define SCRAM_CBIND "biws"

/* ---- methods and the choice ---- */

struct method_info {
	const char *name;   /* for messages; the AUTH name of SASL ones */
	bool sasl;          /* goes through AUTH */
	bool cleartext;     /* sends the password or token itself */
	bool automatic;     /* AUTO may pick it */
};

static const struct method_info method_table[SASL_CLIENT_METHOD_COUNT] = {
	[SASL_CLIENT_AUTO] = { "AUTO", false, false, false },
	[SASL_CLIENT_SCRAM_SHA_256] = { "SCRAM-SHA-256", true, false, true },
	[SASL_CLIENT_APOP] = { "APOP", false, false, true },
	[SASL_CLIENT_PLAIN] = { "PLAIN", true, true, true },
	[SASL_CLIENT_USER] = { "USER", false, true, true },
	[SASL_CLIENT_LOGIN] = { "LOGIN", true, true, true },
	[SASL_CLIENT_XOAUTH2] = { "XOAUTH2", true, true, false },
	[SASL_CLIENT_OAUTHBEARER] = { "OAUTHBEARER", true, true, false },
};

static bool method_valid(enum sasl_client_method method)
{
	return (unsigned int)method < SASL_CLIENT_METHOD_COUNT;
}

int sasl_client_method_from_name(const char *name,
				 enum sasl_client_method *method_r)
{
	for (unsigned int m = 0; m < SASL_CLIENT_METHOD_COUNT; m++) {
		if (strcasecmp(name, method_table[m].name) == 0) {
			*method_r = (enum sasl_client_method)m;
			return 0;
		}
	}
	return -1;
}

const char *sasl_client_method_name(enum sasl_client_method method)
{
	return method_valid(method) ? method_table[method].name : "?";
}

bool sasl_client_method_is_sasl(enum sasl_client_method method)
{
	return method_valid(method) && method_table[method].sasl;
}

bool sasl_client_method_is_cleartext(enum sasl_client_method method)
{
	return method_valid(method) && method_table[method].cleartext;
}

/* The SASL method named name[0..len) (case-insensitive), or AUTO. */
static enum sasl_client_method sasl_method_by_name(const char *name,
						   size_t len)
{
	for (unsigned int m = 0; m < SASL_CLIENT_METHOD_COUNT; m++) {
		const char *known = method_table[m].name;

		if (method_table[m].sasl && strlen(known) == len &&
		    strncasecmp(name, known, len) == 0)
			return (enum sasl_client_method)m;
	}
	return SASL_CLIENT_AUTO;
}

unsigned int sasl_client_parse_mechs(const char *list, size_t len)
{
	unsigned int mechs = 0;
	size_t pos = 0;

	while (pos < len) {
		size_t start;
		enum sasl_client_method m;

		while (pos < len && (list[pos] == ' ' || list[pos] == '\t'))
			pos++;
		start = pos;
		while (pos < len && list[pos] != ' ' && list[pos] != '\t')
			pos++;
		if (pos == start)
			break;
		m = sasl_method_by_name(list + start, pos - start);
		if (m != SASL_CLIENT_AUTO)
			mechs |= SASL_CLIENT_BIT(m);
	}
	return mechs;
}

static bool method_offered(const struct sasl_client_offer *offer,
			   enum sasl_client_method m)
{
	if (method_table[m].sasl)
		return (offer->sasl & SASL_CLIENT_BIT(m)) != 0;
	if (m == SASL_CLIENT_APOP)
		return offer->apop;
	return m == SASL_CLIENT_USER && offer->user;
}

static bool method_safe(const struct sasl_client_offer *offer,
			const struct sasl_client_policy *policy,
			enum sasl_client_method m)
{
	return !method_table[m].cleartext || offer->tls ||
	       policy->allow_cleartext;
}

static int choose_configured(const struct sasl_client_offer *offer,
			     const struct sasl_client_policy *policy,
			     enum sasl_client_method m, const char **error_r)
{
	if ((policy->exclude & SASL_CLIENT_BIT(m)) != 0) {
		*error_r = "the configured authentication method already failed";
		return -1;
	}
	if (!method_offered(offer, m)) {
		*error_r = m == SASL_CLIENT_APOP ?
			   "the server does not offer APOP (no timestamp in its greeting)" :
			   m == SASL_CLIENT_USER ?
			   "the server does not offer USER/PASS" :
			   "the server does not offer the configured SASL mechanism";
		return -1;
	}
	if (!method_safe(offer, policy, m)) {
		*error_r = "the configured authentication method would send the "
			   "password in the clear on a connection without TLS: "
			   "refused (use TLS, or allow cleartext explicitly)";
		return -1;
	}
	return 0;
}

int sasl_client_choose(const struct sasl_client_offer *offer,
		       const struct sasl_client_policy *policy,
		       enum sasl_client_method *method_r, const char **error_r)
{
	bool unsafe_only = false, excluded = false;

	if (!method_valid(policy->method)) {
		*error_r = "unknown authentication method";
		return -1;
	}
	if (policy->method != SASL_CLIENT_AUTO) {
		if (choose_configured(offer, policy, policy->method, error_r) < 0)
			return -1;
		*method_r = policy->method;
		return 0;
	}
	for (unsigned int i = 0; i < SASL_CLIENT_METHOD_COUNT; i++) {
		enum sasl_client_method m = (enum sasl_client_method)i;

		if (!method_table[m].automatic || !method_offered(offer, m))
			continue;
		if ((policy->exclude & SASL_CLIENT_BIT(m)) != 0) {
			excluded = true;
			continue;
		}
		if (!method_safe(offer, policy, m)) {
			unsafe_only = true;
			continue;
		}
		*method_r = m;
		return 0;
	}
	*error_r = unsafe_only ?
		   "the server offers only authentication methods that send the "
		   "password in the clear, on a connection without TLS: refused "
		   "(use TLS, or allow cleartext explicitly)" :
		   excluded ? "no other authentication method left to try" :
		   "no authentication method in common with the server";
	return -1;
}

/* ---- the exchange ---- */

enum sc_phase {
	SC_NEW,            /* sasl_client_start() not called yet */
	SC_FIRST_PENDING,  /* the first message waits for an empty challenge */
	SC_RUNNING,        /* answering challenges; round counts them */
	SC_OVER,           /* failed: nothing more */
};

struct sasl_client;

struct mech_ops {
	/* Builds the first message into raw (NULL: the server speaks
	   first). */
	int (*first)(struct sasl_client *c, const char **error_r);
	/* Answers challenge number c->round (decoded) into raw; NULL: no
	   challenge is expected once the first message is out. */
	int (*next)(struct sasl_client *c, const uint8_t *in, size_t len,
		    const char **error_r);
	/* All done, as far as we are concerned, once the first message is
	   out (the single-message mechanisms). */
	bool done_after_first;
	/* Challenges are prompts to ignore, not data (LOGIN's "Username:"). */
	bool ignore_challenge;
};

struct sasl_client {
	enum sasl_client_method method;
	const struct mech_ops *ops;
	enum sc_phase phase;
	unsigned int round;
	bool done;
	char *user;
	char *secret;                 /* NULL once used */
	size_t secret_len;
	unsigned int iter_max;
	char nonce[SCRAM_TEST_NONCE_MAX + 1];   /* "" until chosen */
	char *first_bare;             /* SCRAM client-first-message-bare */
	uint8_t server_sig[SCRAM_KEY_LEN];
	/* The message being built, and its base64: both wiped. */
	uint8_t *raw;
	size_t raw_len, raw_cap;
	char *out;
	size_t out_size;
	char server_error[SASL_CLIENT_SERVER_ERROR_MAX + 1];
};

static void wipe_free(void *p, size_t len)
{
	if (p != NULL) {
		OPENSSL_cleanse(p, len);
		free(p);
	}
}

static void sc_forget_secret(struct sasl_client *c)
{
	wipe_free(c->secret, c->secret_len);
	c->secret = NULL;
	c->secret_len = 0;
}

static void sc_raw_clear(struct sasl_client *c)
{
	wipe_free(c->raw, c->raw_cap);
	c->raw = NULL;
	c->raw_len = c->raw_cap = 0;
}

/* A fresh raw message of room for cap bytes. */
static int sc_raw_begin(struct sasl_client *c, size_t cap,
			const char **error_r)
{
	sc_raw_clear(c);
	c->raw = malloc(cap > 0 ? cap : 1);
	if (c->raw == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	c->raw_cap = cap;
	return 0;
}

/* Appends to raw.  Callers size raw from bounded inputs (user and secret
   lengths are capped at new()), so this cannot overflow; it checks
   anyway and drops what would not fit, which a test would see. */
static void sc_raw_add(struct sasl_client *c, const void *data, size_t len)
{
	if (len > c->raw_cap - c->raw_len)
		return;
	memcpy(c->raw + c->raw_len, data, len);
	c->raw_len += len;
}

static void sc_raw_str(struct sasl_client *c, const char *s)
{
	sc_raw_add(c, s, strlen(s));
}

/* raw -> out (base64, NUL-terminated); raw is wiped. */
static int sc_encode(struct sasl_client *c, const char **error_r)
{
	size_t need = base64_encoded_len(c->raw_len) + 1;

	wipe_free(c->out, c->out_size);
	c->out = malloc(need);
	c->out_size = need;
	if (c->out == NULL) {
		c->out_size = 0;
		sc_raw_clear(c);
		*error_r = "out of memory";
		return -1;
	}
	base64_encode(c->raw, c->raw_len, c->out);
	sc_raw_clear(c);
	return 0;
}

/* Keeps a printable copy of what the server said went wrong. */
static void sc_record_error(struct sasl_client *c, const uint8_t *text,
			    size_t len)
{
	size_t n = len < SASL_CLIENT_SERVER_ERROR_MAX ? len :
		   SASL_CLIENT_SERVER_ERROR_MAX;

	for (size_t i = 0; i < n; i++) {
		if (text[i] >= 0x20 && text[i] < 0x7f)
			c->server_error[i] = (char)text[i];
		else
			c->server_error[i] = '?';
	}
	c->server_error[n] = '\0';
}

static bool has_control(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	}
	return false;
}

/* RFC 6750 section 2.1 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" /
   "~" / "+" / "/" ) *"=". */
static bool is_b64token(const char *s)
{
	size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			     "0123456789-._~+/");

	if (n == 0)
		return false;
	while (s[n] == '=')
		n++;
	return s[n] == '\0';
}

/* Room for a saslname (RFC 5802 5.1): ',' and '=' become three bytes. */
static size_t saslname_len(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == ',' || *s == '=' ? 3 : 1;
	return n;
}

static void sc_raw_saslname(struct sasl_client *c, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == ',')
			sc_raw_str(c, "=2C");
		else if (*s == '=')
			sc_raw_str(c, "=3D");
		else
			sc_raw_add(c, s, 1);
	}
}

/* ---- PLAIN (RFC 4616): "" NUL user NUL password ---- */

static int plain_first(struct sasl_client *c, const char **error_r)
{
	/* user and secret are capped at new(): the sum cannot overflow. */
	if (sc_raw_begin(c, strlen(c->user) + c->secret_len + 2, error_r) < 0)
		return -1;
	sc_raw_add(c, "", 1);
	sc_raw_str(c, c->user);
	sc_raw_add(c, "", 1);
	sc_raw_add(c, c->secret, c->secret_len);
	sc_forget_secret(c);
	return 0;
}

/* ---- LOGIN: the user, then the password, each at a prompt ---- */

static int login_next(struct sasl_client *c, const uint8_t *in, size_t len,
		      const char **error_r)
{
	(void)in;
	(void)len;
	if (c->round == 0) {
		if (sc_raw_begin(c, strlen(c->user), error_r) < 0)
			return -1;
		sc_raw_str(c, c->user);
		return 0;
	}
	if (c->round == 1 && c->secret != NULL) {
		if (sc_raw_begin(c, c->secret_len, error_r) < 0)
			return -1;
		sc_raw_add(c, c->secret, c->secret_len);
		sc_forget_secret(c);
		c->done = true;
		return 0;
	}
	*error_r = "the server asked LOGIN for more than a user and a password";
	return -1;
}

/* ---- XOAUTH2: "user=" U ^A "auth=Bearer " T ^A ^A ---- */

static int xoauth2_first(struct sasl_client *c, const char **error_r)
{
	if (sc_raw_begin(c, strlen(c->user) + c->secret_len + 32, error_r) < 0)
		return -1;
	sc_raw_str(c, "user=");
	sc_raw_str(c, c->user);
	sc_raw_str(c, "\001auth=Bearer ");
	sc_raw_add(c, c->secret, c->secret_len);
	sc_raw_str(c, "\001\001");
	sc_forget_secret(c);
	return 0;
}

/* The only challenge after an OAuth message is the server's JSON error
   (RFC 7628 section 3.2.2; Google's XOAUTH2 likewise): keep it, answer
   with dummy, and wait for the -ERR. */
static int oauth_error_challenge(struct sasl_client *c, const uint8_t *in,
				 size_t len, const char *dummy,
				 const char **error_r)
{
	if (c->round > 0) {
		*error_r = "the server sent another challenge after its OAuth error";
		return -1;
	}
	sc_record_error(c, in, len);
	c->done = false;
	if (sc_raw_begin(c, strlen(dummy), error_r) < 0)
		return -1;
	sc_raw_str(c, dummy);
	return 0;
}

static int xoauth2_next(struct sasl_client *c, const uint8_t *in, size_t len,
			const char **error_r)
{
	return oauth_error_challenge(c, in, len, "", error_r);
}

/* ---- OAUTHBEARER (RFC 7628): "n,a=" U "," ^A "auth=Bearer " T ^A ^A ---- */

static int oauthbearer_first(struct sasl_client *c, const char **error_r)
{
	if (sc_raw_begin(c, saslname_len(c->user) + c->secret_len + 32,
			 error_r) < 0)
		return -1;
	sc_raw_str(c, "n,a=");
	sc_raw_saslname(c, c->user);
	sc_raw_str(c, ",\001auth=Bearer ");
	sc_raw_add(c, c->secret, c->secret_len);
	sc_raw_str(c, "\001\001");
	sc_forget_secret(c);
	return 0;
}

static int oauthbearer_next(struct sasl_client *c, const uint8_t *in,
			    size_t len, const char **error_r)
{
	return oauth_error_challenge(c, in, len, "\001", error_r);
}

/* ---- SCRAM-SHA-256 (RFC 5802, RFC 7677) ---- */

struct scram_attr {
	char name;
	const uint8_t *value;
	size_t len;
};

/*
 * Splits a SCRAM message into its "a=value" attributes (RFC 5802 section
 * 7: a letter, '=', a non-empty value without ',' or NUL).  Returns the
 * count (1..SCRAM_ATTRS_MAX), or -1 if malformed.
 */
static int scram_split(const uint8_t *msg, size_t len,
		       struct scram_attr attrs[SCRAM_ATTRS_MAX])
{
	size_t pos = 0;
	int n = 0;

	if (len == 0 || memchr(msg, '\0', len) != NULL)
		return -1;
	for (;;) {
		const uint8_t *comma = memchr(msg + pos, ',', len - pos);
		size_t end = comma != NULL ? (size_t)(comma - msg) : len;
		uint8_t a = msg[pos];

		if (n == SCRAM_ATTRS_MAX || end - pos < 3 ||
		    msg[pos + 1] != '=' ||
		    !((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')))
			return -1;
		attrs[n].name = (char)a;
		attrs[n].value = msg + pos + 2;
		attrs[n].len = end - pos - 2;
		n++;
		if (comma == NULL)
			return n;
		pos = end + 1;
		if (pos == len)
			return -1;   /* a trailing ',' */
	}
}

/* What the server-first message says. */
struct scram_server_first {
	const uint8_t *nonce;
	size_t nonce_len;
	uint8_t salt[SASL_CLIENT_SCRAM_SALT_MAX];
	size_t salt_len;
	unsigned int iter;
};

static int scram_check_nonce(const struct sasl_client *c,
			     const struct scram_attr *r, const char **error_r)
{
	size_t ours = strlen(c->nonce);

	for (size_t i = 0; i < r->len; i++) {
		if (r->value[i] < 0x21 || r->value[i] > 0x7e) {
			*error_r = "SCRAM: the server's nonce has a "
				   "non-printable character";
			return -1;
		}
	}
	if (r->len <= ours || r->len > SASL_CLIENT_SCRAM_NONCE_MAX ||
	    memcmp(r->value, c->nonce, ours) != 0) {
		*error_r = "SCRAM: the server's nonce does not extend ours";
		return -1;
	}
	return 0;
}

static int scram_parse_iter(const struct sasl_client *c,
			    const struct scram_attr *i, unsigned int *iter_r,
			    const char **error_r)
{
	uint64_t v;

	for (size_t k = 0; k < i->len; k++) {
		if (i->value[k] < '0' || i->value[k] > '9') {
			*error_r = "SCRAM: the iteration count is not a number";
			return -1;
		}
	}
	if (strnum_parse_u64((const char *)i->value, i->len, c->iter_max,
			     &v) < 0) {
		*error_r = "SCRAM: the server asks for more iterations than we "
			   "allow (a hostile server could make us hash for "
			   "minutes): refused";
		return -1;
	}
	if (v < SASL_CLIENT_SCRAM_ITER_MIN) {
		*error_r = "SCRAM: the server asks for fewer than 4096 "
			   "iterations (RFC 7677 section 4): refused";
		return -1;
	}
	*iter_r = (unsigned int)v;
	return 0;
}

/* Parses server-first-message = [m=] r= s= i= [extensions]. */
static int scram_parse_server_first(struct sasl_client *c, const uint8_t *msg,
				    size_t len, struct scram_server_first *sf,
				    const char **error_r)
{
	struct scram_attr a[SCRAM_ATTRS_MAX];
	int n = scram_split(msg, len, a);

	if (n >= 1 && a[0].name == 'e') {
		sc_record_error(c, a[0].value, a[0].len);
		*error_r = "SCRAM: the server reported an error";
		return -1;
	}
	if (n >= 1 && a[0].name == 'm') {
		*error_r = "SCRAM: the server requires an extension we do not "
			   "know (m=)";
		return -1;
	}
	if (n < 3 || a[0].name != 'r' || a[1].name != 's' || a[2].name != 'i') {
		*error_r = "SCRAM: malformed server-first message";
		return -1;
	}
	if (scram_check_nonce(c, &a[0], error_r) < 0)
		return -1;
	sf->nonce = a[0].value;
	sf->nonce_len = a[0].len;
	if (base64_decode((const char *)a[1].value, a[1].len, sf->salt,
			  sizeof(sf->salt), &sf->salt_len) < 0 ||
	    sf->salt_len == 0) {
		*error_r = "SCRAM: the salt is not base64 of 1 to 128 bytes";
		return -1;
	}
	return scram_parse_iter(c, &a[2], &sf->iter, error_r);
}

static int scram_hmac(const uint8_t key[SCRAM_KEY_LEN], const void *data,
		      size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int n = 0;

	return HMAC(EVP_sha256(), key, SCRAM_KEY_LEN, data, len, out, &n) !=
		       NULL && n == SCRAM_KEY_LEN ? 0 : -1;
}

/*
 * The proof and the server signature we expect, over auth (RFC 5802
 * section 3).  The password is wiped once salted; every key is wiped
 * before returning.
 */
static int scram_keys(struct sasl_client *c,
		      const struct scram_server_first *sf, const uint8_t *auth,
		      size_t auth_len, uint8_t proof[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
	uint8_t stored_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	uint8_t client_sig[SCRAM_KEY_LEN];
	unsigned int n = 0;
	int ok;

	/* Lengths are capped (secret 8192, salt 128, iter <= INT_MAX by
	   sasl_client_set_iter_max()): the int casts are safe. */
	ok = c->secret != NULL &&
	     PKCS5_PBKDF2_HMAC(c->secret, (int)c->secret_len, sf->salt,
			       (int)sf->salt_len, (int)sf->iter, EVP_sha256(),
			       SCRAM_KEY_LEN, salted) == 1;
	sc_forget_secret(c);
	ok = ok && scram_hmac(salted, "Client Key", 10, client_key) == 0 &&
	     EVP_Digest(client_key, SCRAM_KEY_LEN, stored_key, &n,
			EVP_sha256(), NULL) == 1 && n == SCRAM_KEY_LEN &&
	     scram_hmac(stored_key, auth, auth_len, client_sig) == 0 &&
	     scram_hmac(salted, "Server Key", 10, server_key) == 0 &&
	     scram_hmac(server_key, auth, auth_len, c->server_sig) == 0;
	for (size_t i = 0; ok && i < SCRAM_KEY_LEN; i++)
		proof[i] = client_key[i] ^ client_sig[i];
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(stored_key, sizeof(stored_key));
	OPENSSL_cleanse(server_key, sizeof(server_key));
	OPENSSL_cleanse(client_sig, sizeof(client_sig));
	return ok ? 0 : -1;
}

static int scram_first(struct sasl_client *c, const char **error_r)
{
	size_t bare_len;

	if (c->nonce[0] == '\0') {
		uint8_t random[SCRAM_NONCE_RANDOM];

		if (RAND_bytes(random, sizeof(random)) != 1) {
			*error_r = "the random number generator failed";
			return -1;
		}
		/* 24 characters of A-Z a-z 0-9 + /: printable, no ','. */
		base64_encode(random, sizeof(random), c->nonce);
	}
	bare_len = 2 + saslname_len(c->user) + 3 + strlen(c->nonce);
	if (sc_raw_begin(c, 3 + bare_len, error_r) < 0)
		return -1;
	sc_raw_str(c, "n,,n=");
	sc_raw_saslname(c, c->user);
	sc_raw_str(c, ",r=");
	sc_raw_str(c, c->nonce);
	/* The bare message is raw after "n,,"; it has no NUL (user and
	   nonce are C strings). */
	c->first_bare = strndup((const char *)c->raw + 3, c->raw_len - 3);
	if (c->first_bare == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

/* Answers server-first with client-final (c= r= p=). */
static int scram_client_final(struct sasl_client *c, const uint8_t *in,
			      size_t len, const char **error_r)
{
	struct scram_server_first sf;
	uint8_t proof[SCRAM_KEY_LEN];
	char proof_b64[64];
	size_t bare = strlen(c->first_bare), wp_len, auth_len;
	uint8_t *auth;
	int r;

	if (scram_parse_server_first(c, in, len, &sf, error_r) < 0)
		return -1;
	/* client-final-message-without-proof = "c=biws,r=" nonce.  The
	   auth message is bare "," server-first "," without-proof: all
	   bounded by SASL_CLIENT_CHALLENGE_MAX and the user cap. */
	wp_len = 9 + sf.nonce_len;
	auth_len = bare + 1 + len + 1 + wp_len;
	auth = malloc(auth_len);
	if (auth == NULL || sc_raw_begin(c, wp_len + 3 + sizeof(proof_b64),
					 error_r) < 0) {
		free(auth);
		*error_r = "out of memory";
		return -1;
	}
	sc_raw_str(c, "c=" SCRAM_CBIND ",r=");
	sc_raw_add(c, sf.nonce, sf.nonce_len);
	memcpy(auth, c->first_bare, bare);
	auth[bare] = ',';
	memcpy(auth + bare + 1, in, len);
	auth[bare + 1 + len] = ',';
	memcpy(auth + bare + 2 + len, c->raw, wp_len);
	r = scram_keys(c, &sf, auth, auth_len, proof);
	free(auth);
	if (r < 0) {
		*error_r = "SCRAM: the crypto library failed";
		return -1;
	}
	base64_encode(proof, sizeof(proof), proof_b64);
	OPENSSL_cleanse(proof, sizeof(proof));
	sc_raw_str(c, ",p=");
	sc_raw_str(c, proof_b64);
	return 0;
}

/* Checks server-final: v= must be the signature we computed. */
static int scram_check_final(struct sasl_client *c, const uint8_t *in,
			     size_t len, const char **error_r)
{
	struct scram_attr a[SCRAM_ATTRS_MAX];
	int n = scram_split(in, len, a);
	uint8_t sig[SCRAM_KEY_LEN];
	size_t sig_len = 0;

	if (n >= 1 && a[0].name == 'e') {
		sc_record_error(c, a[0].value, a[0].len);
		*error_r = "SCRAM: the server reported an error";
		return -1;
	}
	if (n < 1 || a[0].name != 'v' ||
	    base64_decode((const char *)a[0].value, a[0].len, sig, sizeof(sig),
			  &sig_len) < 0 || sig_len != SCRAM_KEY_LEN) {
		*error_r = "SCRAM: malformed server-final message";
		return -1;
	}
	if (CRYPTO_memcmp(sig, c->server_sig, SCRAM_KEY_LEN) != 0) {
		*error_r = "SCRAM: the server's signature is wrong: it does not "
			   "know the password (a fake server?)";
		return -1;
	}
	c->done = true;
	return sc_raw_begin(c, 0, error_r);   /* an empty answer */
}

static int scram_next(struct sasl_client *c, const uint8_t *in, size_t len,
		      const char **error_r)
{
	if (c->round == 0)
		return scram_client_final(c, in, len, error_r);
	if (c->round == 1)
		return scram_check_final(c, in, len, error_r);
	*error_r = "SCRAM: a challenge after the server-final message";
	return -1;
}

/* One row per SASL method, indexed by enum sasl_client_method. */
static const struct mech_ops mech_table[SASL_CLIENT_METHOD_COUNT] = {
	[SASL_CLIENT_SCRAM_SHA_256] = { scram_first, scram_next, false, false },
	[SASL_CLIENT_PLAIN] = { plain_first, NULL, true, false },
	[SASL_CLIENT_LOGIN] = { NULL, login_next, false, true },
	[SASL_CLIENT_XOAUTH2] = { xoauth2_first, xoauth2_next, true, false },
	[SASL_CLIENT_OAUTHBEARER] = { oauthbearer_first, oauthbearer_next,
				      true, false },
};

/* ---- the exchange: common part ---- */

/* What new() refuses for the user and secret of method. */
static const char *sc_check_credentials(enum sasl_client_method method,
					const char *user, const char *secret)
{
	bool oauth = method == SASL_CLIENT_XOAUTH2 ||
		     method == SASL_CLIENT_OAUTHBEARER;

	if (user[0] == '\0' || strlen(user) > SASL_CLIENT_USER_MAX)
		return "the user name is empty or too long";
	if (secret[0] == '\0' || strlen(secret) > SASL_CLIENT_SECRET_MAX)
		return oauth ? "the access token is empty or too long" :
			       "the password is empty or too long";
	if (oauth && has_control(user))
		return "the user name has control characters";
	if (oauth && !is_b64token(secret))
		return "the access token has characters RFC 6750 does not "
		       "allow (a trailing newline? the whole JSON reply?)";
	if (method == SASL_CLIENT_SCRAM_SHA_256 &&
	    (has_control(user) || has_control(secret)))
		return "SCRAM: the user name or password has control "
		       "characters, which SASLprep prohibits";
	return NULL;
}

int sasl_client_new(enum sasl_client_method method, const char *user,
		    const char *secret, struct sasl_client **client_r,
		    const char **error_r)
{
	struct sasl_client *c;

	*client_r = NULL;
	if (!sasl_client_method_is_sasl(method) || user == NULL ||
	    secret == NULL) {
		*error_r = "not a SASL mechanism";
		return -1;
	}
	if ((*error_r = sc_check_credentials(method, user, secret)) != NULL)
		return -1;
	c = calloc(1, sizeof(*c));
	if (c == NULL || (c->user = strdup(user)) == NULL ||
	    (c->secret = strdup(secret)) == NULL) {
		if (c != NULL)
			free(c->user);
		free(c);
		*error_r = "out of memory";
		return -1;
	}
	c->secret_len = strlen(secret);
	c->method = method;
	c->ops = &mech_table[method];
	c->iter_max = SASL_CLIENT_SCRAM_ITER_MAX;
	*client_r = c;
	return 0;
}

void sasl_client_free(struct sasl_client **cp)
{
	struct sasl_client *c = *cp;

	if (c == NULL)
		return;
	*cp = NULL;
	sc_forget_secret(c);
	sc_raw_clear(c);
	wipe_free(c->out, c->out_size);
	wipe_free(c->user, strlen(c->user) + 1);
	if (c->first_bare != NULL)
		wipe_free(c->first_bare, strlen(c->first_bare) + 1);
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

/* The exchange failed: nothing more, and nothing secret kept. */
static int sc_fail(struct sasl_client *c)
{
	c->phase = SC_OVER;
	c->done = false;
	sc_forget_secret(c);
	sc_raw_clear(c);
	OPENSSL_cleanse(c->server_sig, sizeof(c->server_sig));
	return -1;
}

int sasl_client_start(struct sasl_client *c, const char **ir_r,
		      const char **error_r)
{
	size_t line;

	*ir_r = NULL;
	if (c->phase != SC_NEW) {
		*error_r = "the exchange has already started";
		return -1;
	}
	c->phase = SC_RUNNING;
	if (c->ops->first == NULL)
		return 0;
	if (c->ops->first(c, error_r) < 0 || sc_encode(c, error_r) < 0)
		return sc_fail(c);
	/* "AUTH " name " " ir CRLF must fit the command line. */
	line = 5 + strlen(method_table[c->method].name) + 1 + strlen(c->out) + 2;
	if (line > SASL_CLIENT_COMMAND_MAX) {
		c->phase = SC_FIRST_PENDING;
		return 0;
	}
	*ir_r = c->out[0] != '\0' ? c->out : "=";
	c->done = c->ops->done_after_first;
	return 0;
}

/* Decodes a challenge into buf (SASL_CLIENT_CHALLENGE_MAX bytes). */
static int sc_decode(const char *challenge, size_t len, uint8_t *buf,
		     size_t *n_r, const char **error_r)
{
	if (len > base64_encoded_len(SASL_CLIENT_CHALLENGE_MAX)) {
		*error_r = "the server's challenge is too long";
		return -1;
	}
	if (base64_decode(challenge, len, buf, SASL_CLIENT_CHALLENGE_MAX,
			  n_r) < 0) {
		*error_r = "the server's challenge is not valid base64";
		return -1;
	}
	return 0;
}

int sasl_client_step(struct sasl_client *c, const char *challenge,
		     size_t len, const char **response_r, const char **error_r)
{
	uint8_t in[SASL_CLIENT_CHALLENGE_MAX];
	size_t n = 0;

	*response_r = NULL;
	if (c->phase == SC_NEW || c->phase == SC_OVER) {
		*error_r = "no challenge was expected";
		return c->phase == SC_OVER ? -1 : sc_fail(c);
	}
	if (c->ops->ignore_challenge) {
		if (len > base64_encoded_len(SASL_CLIENT_CHALLENGE_MAX)) {
			*error_r = "the server's challenge is too long";
			return sc_fail(c);
		}
	} else if (sc_decode(challenge, len, in, &n, error_r) < 0) {
		return sc_fail(c);
	}
	if (c->phase == SC_FIRST_PENDING) {
		/* RFC 5034 section 4: the empty challenge asks for the
		   initial response we did not put on the command line. */
		if (n != 0) {
			*error_r = "the server sent data where it should ask "
				   "for our first message";
			return sc_fail(c);
		}
		c->phase = SC_RUNNING;
		c->done = c->ops->done_after_first;
		*response_r = c->out;
		return 0;
	}
	if (c->ops->next == NULL) {
		*error_r = "the server sent a challenge the mechanism does not "
			   "have";
		return sc_fail(c);
	}
	if (c->ops->next(c, in, n, error_r) < 0 || sc_encode(c, error_r) < 0)
		return sc_fail(c);
	c->round++;
	*response_r = c->out;
	return 0;
}

bool sasl_client_done(const struct sasl_client *c)
{
	return c->phase == SC_RUNNING && c->done;
}

const char *sasl_client_server_error(const struct sasl_client *c)
{
	return c->server_error;
}

void sasl_client_set_iter_max(struct sasl_client *c, unsigned int max)
{
	/* PKCS5_PBKDF2_HMAC takes an int. */
	if (max > (unsigned int)INT32_MAX)
		max = (unsigned int)INT32_MAX;
	c->iter_max = max < SASL_CLIENT_SCRAM_ITER_MIN ?
		      SASL_CLIENT_SCRAM_ITER_MIN : max;
}

void sasl_client_set_nonce_for_test(struct sasl_client *c, const char *nonce)
{
	size_t len = strlen(nonce);

	if (c->phase != SC_NEW || len == 0 || len > SCRAM_TEST_NONCE_MAX)
		return;
	for (size_t i = 0; i < len; i++) {
		if (nonce[i] < 0x21 || nonce[i] > 0x7e || nonce[i] == ',')
			return;
	}
	memcpy(c->nonce, nonce, len + 1);
}

/* ---- APOP (RFC 1939 section 7) ---- */

int sasl_client_apop_digest(const char *timestamp, size_t len,
			    const char *secret,
			    char digest_r[SASL_CLIENT_APOP_DIGEST_LEN + 1],
			    const char **error_r)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	EVP_MD_CTX *ctx;
	int ok;

	digest_r[0] = '\0';
	if (len < 3 || len > 255 || timestamp[0] != '<' ||
	    timestamp[len - 1] != '>') {
		*error_r = "APOP: the timestamp is not <...> of 3 to 255 characters";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		if (timestamp[i] < 0x21 || timestamp[i] > 0x7e) {
			*error_r = "APOP: the timestamp is not printable ASCII";
			return -1;
		}
	}
	ctx = EVP_MD_CTX_new();
	ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, timestamp, len) == 1 &&
	     EVP_DigestUpdate(ctx, secret, strlen(secret)) == 1 &&
	     EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 16;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		*error_r = "APOP: MD5 is not available";
		return -1;
	}
	for (size_t i = 0; i < 16; i++) {
		digest_r[2 * i] = hex[md[i] >> 4];
		digest_r[2 * i + 1] = hex[md[i] & 15];
	}
	digest_r[SASL_CLIENT_APOP_DIGEST_LEN] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
	return 0;
}
