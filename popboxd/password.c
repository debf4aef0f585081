/*
 * password.c — password schemes with Dovecot-compatible names (password.h).
 *
 * One table row per scheme: its name, whether it is a crypt(3) format or
 * plaintext, the hash prefixes it may carry, and the libxcrypt prefix used
 * to make new hashes (NULL: verify only).  Everything else is driven by it.
 *
 * SCRAM-SHA-256 entries are their own kind: parsed into struct
 * password_scram, verified by deriving the keys from the password with the
 * entry's salt and iteration count (one PBKDF2 run) and comparing both.
 *
 * Invariants: crypt_rn() always gets a heap struct crypt_data that is wiped
 * and freed before return; results are compared with CRYPTO_memcmp() over
 * equal lengths; plaintext secrets are compared as SHA-256 digests so the
 * comparison does not depend on where the first differing byte is; every
 * intermediate SCRAM key (SaltedPassword, ClientKey) is wiped.
 */
#include "password.h"

#include <crypt.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base64.h"
#include "strnum.h"

enum password_kind {
	PASSWORD_KIND_CRYPT,
	PASSWORD_KIND_PLAIN,
	PASSWORD_KIND_SCRAM,
};

/* A row has at most this many hash prefixes ({CRYPT} has the most). */
#define PASSWORD_MAX_PREFIXES 7

/* Longest scheme name between the braces ("SHA512-CRYPT" is 12). */
#define PASSWORD_SCHEME_NAME_MAX 32

struct password_scheme {
	const char *name;
	enum password_kind kind;
	/* Accepted hash prefixes, NULL-terminated.  Anything else (DES
	   without a prefix, "$3$" NT-hash, "$md5", "$sha1$", ...) is refused
	   as weak or unknown. */
	const char *prefixes[PASSWORD_MAX_PREFIXES + 1];
	const char *gensalt_prefix; /* for password_hash(); NULL: verify only */
	unsigned long cost;         /* for crypt_gensalt_rn(); 0: its default */
};

static const struct password_scheme password_schemes[] = {
	{ "SHA512-CRYPT", PASSWORD_KIND_CRYPT, { "$6$", NULL }, "$6$", 0 },
	{ "SHA256-CRYPT", PASSWORD_KIND_CRYPT, { "$5$", NULL }, "$5$", 0 },
	/* libxcrypt's bcrypt default is cost 5 (32 rounds), which is too
	   cheap today; 10 is the common recommendation (about 50 ms). */
	{ "BLF-CRYPT", PASSWORD_KIND_CRYPT, { "$2b$", "$2y$", NULL }, "$2b$",
	  10 },
	{ "YESCRYPT", PASSWORD_KIND_CRYPT, { "$y$", NULL }, "$y$", 0 },
	/* Legacy: still verified so old files keep working, never made. */
	{ "MD5-CRYPT", PASSWORD_KIND_CRYPT, { "$1$", NULL }, NULL, 0 },
	{ "CRYPT", PASSWORD_KIND_CRYPT,
	  { "$6$", "$5$", "$2b$", "$2y$", "$y$", "$1$", NULL }, NULL, 0 },
	{ "PLAIN", PASSWORD_KIND_PLAIN, { NULL }, NULL, 0 },
	{ "CLEAR", PASSWORD_KIND_PLAIN, { NULL }, NULL, 0 },
	{ "SCRAM-SHA-256", PASSWORD_KIND_SCRAM, { NULL }, NULL, 0 },
};
#define PASSWORD_SCHEME_COUNT \
	(sizeof(password_schemes) / sizeof(password_schemes[0]))

_Static_assert(PASSWORD_MAX < CRYPT_MAX_PASSPHRASE_SIZE,
	       "crypt_rn() refuses longer passphrases");

static atomic_ulong password_crypt_calls;
static atomic_ulong password_pbkdf2_calls;

unsigned long password_crypt_count(void)
{
	return atomic_load(&password_crypt_calls);
}

unsigned long password_slow_count(void)
{
	return atomic_load(&password_crypt_calls) +
	       atomic_load(&password_pbkdf2_calls);
}

static const struct password_scheme *password_scheme_find(const char *name,
							  size_t len)
{
	for (size_t i = 0; i < PASSWORD_SCHEME_COUNT; i++) {
		const char *s = password_schemes[i].name;

		if (strlen(s) == len && strncasecmp(s, name, len) == 0)
			return &password_schemes[i];
	}
	return NULL;
}

/* Splits stored into its scheme row and data; NULL if the scheme is unknown. */
static const struct password_scheme *password_split(const char *stored,
						    const char **data_r)
{
	if (stored[0] != '{') {
		*data_r = stored;
		return password_scheme_find("CRYPT", 5);
	}
	const char *end = strchr(stored, '}');
	if (end == NULL || (size_t)(end - stored - 1) > PASSWORD_SCHEME_NAME_MAX)
		return NULL;
	*data_r = end + 1;
	return password_scheme_find(stored + 1, (size_t)(end - stored - 1));
}

static bool password_prefix_ok(const struct password_scheme *scheme,
			       const char *data)
{
	for (size_t i = 0; scheme->prefixes[i] != NULL; i++) {
		const char *p = scheme->prefixes[i];

		if (strncmp(data, p, strlen(p)) == 0)
			return true;
	}
	return false;
}

/*
 * Runs crypt_rn(phrase, setting) on a heap crypt_data and copies the result
 * into out (CRYPT_OUTPUT_SIZE bytes).  Returns 0, or -1 if libxcrypt
 * refused the setting.  The crypt_data is wiped before it is freed.
 */
static int password_crypt(const char *phrase, const char *setting,
			  char out[CRYPT_OUTPUT_SIZE])
{
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	int ret = -1;
	size_t len;

	if (cd == NULL)
		return -1;
	atomic_fetch_add(&password_crypt_calls, 1);
	const char *res = crypt_rn(phrase, setting, cd, (int)sizeof(*cd));
	if (res != NULL && res[0] != '*' &&
	    (len = strlen(res)) < CRYPT_OUTPUT_SIZE) {
		memcpy(out, res, len + 1);
		ret = 0;
	}
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return ret;
}

static int password_verify_crypt(const struct password_scheme *scheme,
				 const char *data, const char *password)
{
	char out[CRYPT_OUTPUT_SIZE];
	size_t len = strlen(data);
	int ret;

	if (!password_prefix_ok(scheme, data) || len >= CRYPT_OUTPUT_SIZE)
		return -1;
	if (password_crypt(password, data, out) < 0)
		return -1;
	/* The output length follows from the setting alone, not the
	   password: a different length means the entry is malformed. */
	if (strlen(out) != len)
		ret = -1;
	else
		ret = CRYPTO_memcmp(out, data, len) == 0 ? 1 : 0;
	explicit_bzero(out, sizeof(out));
	return ret;
}

static int password_verify_plain(const char *secret, const char *password)
{
	unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
	unsigned int alen = 0, blen = 0;
	int ret = -1;

	/* Digests have one fixed length, so the comparison time depends on
	   neither the secret's length nor where it differs. */
	if (EVP_Digest(secret, strlen(secret), a, &alen, EVP_sha256(), NULL) &&
	    EVP_Digest(password, strlen(password), b, &blen, EVP_sha256(),
		       NULL) && alen == blen)
		ret = CRYPTO_memcmp(a, b, alen) == 0 ? 1 : 0;
	explicit_bzero(a, sizeof(a));
	explicit_bzero(b, sizeof(b));
	return ret;
}

/* Base64 length of n bytes, for array sizes (base64_encoded_len() is a
   function, and a VLA is not wanted). */
#define PASSWORD_B64_LEN(n) (((n) + 2) / 3 * 4)

/* The four comma-separated fields of a stored SCRAM entry. */
enum password_scram_field {
	PASSWORD_SCRAM_FIELD_ITER,
	PASSWORD_SCRAM_FIELD_SALT,
	PASSWORD_SCRAM_FIELD_STORED_KEY,
	PASSWORD_SCRAM_FIELD_SERVER_KEY,
	PASSWORD_SCRAM_FIELD_COUNT
};

/*
 * Splits data at its commas into exactly PASSWORD_SCRAM_FIELD_COUNT
 * fields (start and length each).  -1 for more or fewer fields.
 */
static int password_scram_split(const char *data,
				const char *start_r[PASSWORD_SCRAM_FIELD_COUNT],
				size_t len_r[PASSWORD_SCRAM_FIELD_COUNT])
{
	const char *p = data;

	for (size_t i = 0; i < PASSWORD_SCRAM_FIELD_COUNT; i++) {
		const char *comma = strchr(p, ',');
		bool last = i + 1 == PASSWORD_SCRAM_FIELD_COUNT;

		if ((comma == NULL) != last)
			return -1;
		start_r[i] = p;
		if (last) {
			len_r[i] = strlen(p);
			break;
		}
		len_r[i] = (size_t)(comma - p);
		p = comma + 1;
	}
	return 0;
}

/* Decodes one base64 field of exactly want bytes (or 1..want if !exact). */
static int password_scram_field(const char *b64, size_t b64_len, uint8_t *out,
				size_t want, bool exact, size_t *len_r)
{
	size_t len;

	if (base64_decode(b64, b64_len, out, want, &len) < 0 || len == 0 ||
	    (exact && len != want))
		return -1;
	*len_r = len;
	return 0;
}

static int password_scram_parse_data(const char *data,
				     struct password_scram *cred)
{
	const char *f[PASSWORD_SCRAM_FIELD_COUNT];
	size_t flen[PASSWORD_SCRAM_FIELD_COUNT], key_len;
	uint64_t iter;

	if (password_scram_split(data, f, flen) < 0 ||
	    strnum_parse_u64(f[PASSWORD_SCRAM_FIELD_ITER],
			     flen[PASSWORD_SCRAM_FIELD_ITER],
			     PASSWORD_SCRAM_ITER_MAX, &iter) < 0 ||
	    iter < PASSWORD_SCRAM_ITER_MIN)
		return -1;
	cred->iter = (unsigned int)iter;
	if (password_scram_field(f[PASSWORD_SCRAM_FIELD_SALT],
				 flen[PASSWORD_SCRAM_FIELD_SALT], cred->salt,
				 PASSWORD_SCRAM_SALT_MAX, false,
				 &cred->salt_len) < 0 ||
	    password_scram_field(f[PASSWORD_SCRAM_FIELD_STORED_KEY],
				 flen[PASSWORD_SCRAM_FIELD_STORED_KEY],
				 cred->stored_key, PASSWORD_SCRAM_KEY_LEN, true,
				 &key_len) < 0 ||
	    password_scram_field(f[PASSWORD_SCRAM_FIELD_SERVER_KEY],
				 flen[PASSWORD_SCRAM_FIELD_SERVER_KEY],
				 cred->server_key, PASSWORD_SCRAM_KEY_LEN, true,
				 &key_len) < 0)
		return -1;
	return 0;
}

int password_scram_parse(const char *stored, struct password_scram *cred_r)
{
	const char *data;
	const struct password_scheme *scheme = password_split(stored, &data);

	memset(cred_r, 0, sizeof(*cred_r));
	if (scheme == NULL || scheme->kind != PASSWORD_KIND_SCRAM ||
	    password_scram_parse_data(data, cred_r) < 0) {
		explicit_bzero(cred_r, sizeof(*cred_r));
		return -1;
	}
	return 0;
}

/* out = HMAC-SHA-256(key, text).  -1 if OpenSSL fails. */
static int password_hmac(const uint8_t key[PASSWORD_SCRAM_KEY_LEN],
			 const char *text, uint8_t out[PASSWORD_SCRAM_KEY_LEN])
{
	unsigned int len = 0;

	if (HMAC(EVP_sha256(), key, PASSWORD_SCRAM_KEY_LEN,
		 (const unsigned char *)text, strlen(text), out, &len) == NULL ||
	    len != PASSWORD_SCRAM_KEY_LEN)
		return -1;
	return 0;
}

/* StoredKey and ServerKey from SaltedPassword (RFC 5802 section 3). */
static int password_scram_keys(const uint8_t salted[PASSWORD_SCRAM_KEY_LEN],
			       struct password_scram *cred)
{
	uint8_t client_key[PASSWORD_SCRAM_KEY_LEN];
	unsigned int len = 0;
	int ret = -1;

	if (password_hmac(salted, "Client Key", client_key) == 0 &&
	    EVP_Digest(client_key, sizeof(client_key), cred->stored_key, &len,
		       EVP_sha256(), NULL) && len == PASSWORD_SCRAM_KEY_LEN &&
	    password_hmac(salted, "Server Key", cred->server_key) == 0)
		ret = 0;
	explicit_bzero(client_key, sizeof(client_key));
	return ret;
}

int password_scram_derive(const char *password, const uint8_t *salt,
			  size_t salt_len, unsigned int iter,
			  struct password_scram *cred_r)
{
	uint8_t salted[PASSWORD_SCRAM_KEY_LEN];
	size_t pw_len = strnlen(password, PASSWORD_MAX + 1);
	int ret = -1;

	memset(cred_r, 0, sizeof(*cred_r));
	if (pw_len > PASSWORD_MAX || salt_len == 0 ||
	    salt_len > PASSWORD_SCRAM_SALT_MAX ||
	    iter < PASSWORD_SCRAM_ITER_MIN || iter > PASSWORD_SCRAM_ITER_MAX)
		return -1;
	cred_r->iter = iter;
	cred_r->salt_len = salt_len;
	memcpy(cred_r->salt, salt, salt_len);
	atomic_fetch_add(&password_pbkdf2_calls, 1);
	/* The casts are safe: pw_len <= PASSWORD_MAX, salt_len <= 64 and
	   iter <= PASSWORD_SCRAM_ITER_MAX all fit an int. */
	if (PKCS5_PBKDF2_HMAC(password, (int)pw_len, salt, (int)salt_len,
			      (int)iter, EVP_sha256(), (int)sizeof(salted),
			      salted) == 1 &&
	    password_scram_keys(salted, cred_r) == 0)
		ret = 0;
	explicit_bzero(salted, sizeof(salted));
	if (ret < 0)
		explicit_bzero(cred_r, sizeof(*cred_r));
	return ret;
}

/* 1 if password derives entry's keys, 0 if not, -1 if unusable. */
static int password_verify_scram(const char *stored, const char *password)
{
	struct password_scram entry, derived;
	int ret = -1;

	if (password_scram_parse(stored, &entry) < 0)
		return -1;
	if (password_scram_derive(password, entry.salt, entry.salt_len,
				  entry.iter, &derived) == 0) {
		/* Both keys follow from SaltedPassword; compare both so a
		   half-edited entry never verifies. */
		int diff = CRYPTO_memcmp(entry.stored_key, derived.stored_key,
					 PASSWORD_SCRAM_KEY_LEN) |
			   CRYPTO_memcmp(entry.server_key, derived.server_key,
					 PASSWORD_SCRAM_KEY_LEN);
		ret = diff == 0 ? 1 : 0;
	}
	explicit_bzero(&entry, sizeof(entry));
	explicit_bzero(&derived, sizeof(derived));
	return ret;
}

int password_verify(const char *stored, const char *password)
{
	const char *data;
	const struct password_scheme *scheme = password_split(stored, &data);

	if (scheme == NULL || strnlen(password, PASSWORD_MAX + 1) > PASSWORD_MAX)
		return -1;
	if (scheme->kind == PASSWORD_KIND_PLAIN)
		return password_verify_plain(data, password);
	if (scheme->kind == PASSWORD_KIND_SCRAM)
		return password_verify_scram(stored, password);
	return password_verify_crypt(scheme, data, password);
}

bool password_is_crypt(const char *stored)
{
	const char *data;
	const struct password_scheme *scheme = password_split(stored, &data);

	return scheme != NULL && scheme->kind == PASSWORD_KIND_CRYPT &&
	       password_prefix_ok(scheme, data);
}

bool password_is_slow(const char *stored)
{
	struct password_scram cred;
	bool scram = password_scram_parse(stored, &cred) == 0;

	explicit_bzero(&cred, sizeof(cred));
	return scram || password_is_crypt(stored);
}

const char *password_plain_secret(const char *stored)
{
	const char *data;
	const struct password_scheme *scheme = password_split(stored, &data);

	if (scheme == NULL || scheme->kind != PASSWORD_KIND_PLAIN)
		return NULL;
	return data;
}

/* Joins "{name}" and hash into a new string; NULL when out of memory. */
static char *password_join(const char *name, const char *hash)
{
	char *s = NULL;

	if (asprintf(&s, "{%s}%s", name, hash) < 0)
		return NULL;
	return s;
}

static int password_hash_plain(const struct password_scheme *scheme,
			       const char *password, char **hash_r,
			       const char **error_r)
{
	for (const unsigned char *p = (const unsigned char *)password; *p; p++) {
		if (*p == ':' || *p < 0x20 || *p == 0x7f) {
			*error_r = "a plaintext password may not contain ':' "
				   "or control characters";
			return -1;
		}
	}
	if ((*hash_r = password_join(scheme->name, password)) == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

/* "{SCRAM-SHA-256}iter,salt,StoredKey,ServerKey"; NULL when out of memory. */
static char *password_scram_format(const struct password_scram *cred)
{
	char salt[PASSWORD_B64_LEN(PASSWORD_SCRAM_SALT_MAX) + 1];
	char stored_key[PASSWORD_B64_LEN(PASSWORD_SCRAM_KEY_LEN) + 1];
	char server_key[PASSWORD_B64_LEN(PASSWORD_SCRAM_KEY_LEN) + 1];
	char *s = NULL;

	base64_encode(cred->salt, cred->salt_len, salt);
	base64_encode(cred->stored_key, PASSWORD_SCRAM_KEY_LEN, stored_key);
	base64_encode(cred->server_key, PASSWORD_SCRAM_KEY_LEN, server_key);
	if (asprintf(&s, "{SCRAM-SHA-256}%u,%s,%s,%s", cred->iter, salt,
		     stored_key, server_key) < 0)
		s = NULL;
	explicit_bzero(stored_key, sizeof(stored_key));
	explicit_bzero(server_key, sizeof(server_key));
	return s;
}

/* A new SCRAM entry for password with salt_len random salt bytes. */
static int password_scram_make(const char *password, size_t salt_len,
			       unsigned int iter, char **hash_r,
			       const char **error_r)
{
	uint8_t salt[PASSWORD_SCRAM_SALT_MAX];
	struct password_scram cred;
	int ret = -1;

	if (salt_len > sizeof(salt) ||
	    getrandom(salt, salt_len, 0) != (ssize_t)salt_len) {
		*error_r = "cannot make a salt (no entropy?)";
		return -1;
	}
	if (password_scram_derive(password, salt, salt_len, iter, &cred) < 0)
		*error_r = "PBKDF2 failed";
	else if ((*hash_r = password_scram_format(&cred)) == NULL)
		*error_r = "out of memory";
	else
		ret = 0;
	explicit_bzero(&cred, sizeof(cred));
	return ret;
}

int password_hash(const char *scheme_name, const char *password,
		  char **hash_r, const char **error_r)
{
	const struct password_scheme *scheme =
		password_scheme_find(scheme_name, strlen(scheme_name));
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	char out[CRYPT_OUTPUT_SIZE];

	if (scheme == NULL) {
		*error_r = "unknown password scheme";
		return -1;
	}
	if (strlen(password) > PASSWORD_MAX) {
		*error_r = "password too long";
		return -1;
	}
	if (scheme->kind == PASSWORD_KIND_PLAIN)
		return password_hash_plain(scheme, password, hash_r, error_r);
	if (scheme->kind == PASSWORD_KIND_SCRAM)
		return password_scram_make(password, PASSWORD_SCRAM_SALT_LEN,
					   PASSWORD_SCRAM_ITER_DEFAULT, hash_r,
					   error_r);
	if (scheme->gensalt_prefix == NULL) {
		*error_r = "this scheme can only verify old hashes; "
			   "choose YESCRYPT, SHA512-CRYPT or BLF-CRYPT";
		return -1;
	}
	/* NULL entropy = libxcrypt's own (getrandom). */
	if (crypt_gensalt_rn(scheme->gensalt_prefix, scheme->cost, NULL, 0,
			     setting, sizeof(setting)) == NULL) {
		*error_r = "cannot make a salt (no entropy?)";
		return -1;
	}
	if (password_crypt(password, setting, out) < 0) {
		*error_r = "crypt failed";
		return -1;
	}
	*hash_r = password_join(scheme->name, out);
	explicit_bzero(out, sizeof(out));
	if (*hash_r == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

/* Fills buf (33 bytes) with 32 random hex digits: a password nobody knows. */
static int password_random(char buf[33])
{
	unsigned char rnd[16];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -1;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(buf + 2 * i, 3, "%02x", rnd[i]);
	explicit_bzero(rnd, sizeof(rnd));
	return 0;
}

/* A crypt dummy: phrase hashed with the model's own setting, so its
   scheme, cost and salt form carry over; SHA512-CRYPT without a model. */
static int password_dummy_crypt(const char *model, const char *phrase,
				char **dummy_r, const char **error_r)
{
	char out[CRYPT_OUTPUT_SIZE];
	const struct password_scheme *scheme = NULL;
	const char *data = NULL;
	int ret = 0;

	if (model != NULL && password_is_crypt(model))
		scheme = password_split(model, &data);
	if (scheme != NULL && password_crypt(phrase, data, out) == 0) {
		*dummy_r = password_join(scheme->name, out);
		if (*dummy_r == NULL) {
			*error_r = "out of memory";
			ret = -1;
		}
	} else {
		ret = password_hash("SHA512-CRYPT", phrase, dummy_r, error_r);
	}
	explicit_bzero(out, sizeof(out));
	return ret;
}

int password_dummy_plain(char **dummy_r, const char **error_r)
{
	char phrase[33];

	if (password_random(phrase) < 0) {
		*error_r = "no entropy for the dummy password";
		return -1;
	}
	if (asprintf(dummy_r, "{PLAIN}%s", phrase) < 0) {
		*dummy_r = NULL;
		*error_r = "out of memory";
	}
	explicit_bzero(phrase, sizeof(phrase));
	return *dummy_r != NULL ? 0 : -1;
}

int password_dummy_setting(const char *stored, char **dummy_r,
			   const char **error_r)
{
	char phrase[33];
	struct password_scram model;
	int ret;

	if (password_random(phrase) < 0) {
		*error_r = "no entropy for the dummy password";
		return -1;
	}
	if (stored != NULL && password_scram_parse(stored, &model) == 0)
		ret = password_scram_make(phrase, model.salt_len, model.iter,
					  dummy_r, error_r);
	else
		ret = password_dummy_crypt(stored, phrase, dummy_r, error_r);
	explicit_bzero(phrase, sizeof(phrase));
	explicit_bzero(&model, sizeof(model));
	return ret;
}
