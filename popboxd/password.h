/*
 * password.h — password schemes with Dovecot-compatible names.
 *
 * A stored password is "{SCHEME}data"; without a "{SCHEME}" prefix it is
 * {CRYPT} (Dovecot's passwd-file default).  Scheme names are matched
 * case-insensitively.  Supported:
 *   {SHA512-CRYPT} $6$   {SHA256-CRYPT} $5$   {BLF-CRYPT} $2b$ / $2y$
 *   {YESCRYPT} $y$       {MD5-CRYPT} $1$ (legacy: verify only)
 *   {CRYPT} any of the crypt formats above; DES and unknown prefixes refused
 *   {PLAIN} and {CLEAR}  plaintext (the only form APOP can use)
 *   {SCRAM-SHA-256}      Dovecot's form "iter,salt,StoredKey,ServerKey"
 *                        (base64 fields, RFC 5802/7677); serves USER/PASS
 *                        and PLAIN (by deriving the keys) and SCRAM itself
 *
 * "Slow" schemes are the crypt ones and SCRAM (PBKDF2 at 4096 or more
 * iterations); {PLAIN} is fast.  The passdb uses the distinction to run
 * exactly one slow hash per login attempt.
 *
 * Invariants: every crypt verification runs libxcrypt's crypt_rn() on a
 * heap-allocated struct crypt_data (thread-safe, and too big for a worker
 * thread's stack) that is wiped before it is freed; every comparison of
 * secret-derived bytes is constant-time over equal lengths; no copy of a
 * password or of a hash computed from one outlives the call, except the
 * SCRAM keys password_scram_parse() and _derive() hand to their caller,
 * who wipes them (explicit_bzero) when done.
 */
#ifndef POPBOX_PASSWORD_H
#define POPBOX_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Longest password accepted, in bytes: libxcrypt's own limit
 * (CRYPT_MAX_PASSPHRASE_SIZE, 512, with the NUL).  Far above any real
 * password and above a POP3 command line (255 octets, RFC 2449).
 */
#define PASSWORD_MAX 511

/* The scheme `popbox passwd` uses by default: Debian 12's own default. */
#define PASSWORD_DEFAULT_SCHEME "YESCRYPT"

/*
 * Verifies password against a stored "{SCHEME}data" string.
 * Returns 1 on a match, 0 on a mismatch, -1 if the stored entry is unusable
 * (unknown or weak scheme, prefix not matching the scheme, malformed hash)
 * or the password is longer than PASSWORD_MAX.
 */
int password_verify(const char *stored, const char *password);

/*
 * Hashes password with scheme (a name such as "SHA512-CRYPT", without
 * braces) at libxcrypt's default cost (bcrypt: 10, as libxcrypt's 5 is
 * too cheap) and a fresh random salt.  Returns 0
 * and a malloc'ed "{SCHEME}hash" in *hash_r, or -1 with *error_r.
 * SCRAM-SHA-256 uses PASSWORD_SCRAM_SALT_LEN random salt bytes and
 * PASSWORD_SCRAM_ITER_DEFAULT iterations.
 * MD5-CRYPT and CRYPT cannot be used for new hashes.  PLAIN/CLEAR store the
 * password itself and refuse ':' and control bytes (they would break the
 * passwd-file line).
 */
int password_hash(const char *scheme, const char *password, char **hash_r,
		  const char **error_r);

/*
 * Builds a dummy stored password for unknown users: same scheme, cost and
 * salt form as stored (a slow entry from the same file: crypt, or SCRAM
 * with the same iteration count and salt length), but the hash of a
 * random password nobody knows.  stored == NULL, or a stored entry that is
 * not slow (password_is_slow()), gives a SHA512-CRYPT dummy.  Returns 0 and a
 * malloc'ed "{SCHEME}hash" in *dummy_r, or -1 with *error_r.
 */
/*
 * A "{PLAIN}" dummy holding a random secret nobody knows: for a passwd-file
 * without any slow entry, where no login runs a slow hash, so an unknown
 * user must not either.  Returns 0, or -1 with *error_r.
 */
int password_dummy_plain(char **dummy_r, const char **error_r);

int password_dummy_setting(const char *stored, char **dummy_r,
			   const char **error_r);

/*
 * For {PLAIN} and {CLEAR} entries returns a pointer into stored at the
 * plaintext secret (for APOP); NULL for any other scheme.
 */
const char *password_plain_secret(const char *stored);

/* True if stored uses a crypt scheme (slow hash), false otherwise. */
bool password_is_crypt(const char *stored);

/*
 * True if verifying a password against stored runs a slow hash: a usable
 * crypt entry or a usable {SCRAM-SHA-256} entry.  False for plaintext and
 * for unusable entries (which password_verify() refuses without hashing).
 */
bool password_is_slow(const char *stored);

/*
 * How many times this process has called crypt_rn() for a verification.
 * Lets tests prove that a path (the unknown-user dummy) really hashes.
 */
unsigned long password_crypt_count(void);

/*
 * How many slow hashes this process has run: crypt_rn() calls plus
 * PBKDF2 runs (SCRAM).  Lets tests prove "exactly one slow hash per
 * attempt" whatever the schemes involved.
 */
unsigned long password_slow_count(void);

/*
 * SCRAM-SHA-256 credentials (RFC 5802 section 3, RFC 7677).
 *
 *   SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iter)
 *   StoredKey      = SHA-256(HMAC(SaltedPassword, "Client Key"))
 *   ServerKey      = HMAC(SaltedPassword, "Server Key")
 *
 * Iteration counts outside [PASSWORD_SCRAM_ITER_MIN, _MAX] are refused:
 * below is weaker than RFC 7677 allows, above lets one passwd-file line
 * cost a login seconds of CPU.
 */
#define PASSWORD_SCRAM_KEY_LEN 32            /* SHA-256 output */
#define PASSWORD_SCRAM_SALT_MAX 64           /* longest stored salt, bytes */
#define PASSWORD_SCRAM_SALT_LEN 16           /* salt of new entries */
#define PASSWORD_SCRAM_ITER_MIN 4096         /* RFC 7677 section 4 */
#define PASSWORD_SCRAM_ITER_MAX 1000000
#define PASSWORD_SCRAM_ITER_DEFAULT 4096     /* also Dovecot's default */

struct password_scram {
	unsigned int iter;
	size_t salt_len;                     /* 1..PASSWORD_SCRAM_SALT_MAX */
	uint8_t salt[PASSWORD_SCRAM_SALT_MAX];
	uint8_t stored_key[PASSWORD_SCRAM_KEY_LEN];
	uint8_t server_key[PASSWORD_SCRAM_KEY_LEN];
};

/*
 * Parses a stored "{SCRAM-SHA-256}iter,salt,StoredKey,ServerKey" (scheme
 * name case-insensitive, fields strict base64, keys exactly 32 bytes,
 * salt 1..64 bytes, iter decimal in range).  Returns 0 and fills *cred_r,
 * or -1 (then *cred_r is zeroed) for anything else.  No hashing.
 */
int password_scram_parse(const char *stored, struct password_scram *cred_r);

/*
 * Computes the credentials for password (at most PASSWORD_MAX bytes) with
 * salt (1..PASSWORD_SCRAM_SALT_MAX bytes) and iter (within the limits
 * above): one PBKDF2 run.  Returns 0, or -1 (then *cred_r is zeroed) for
 * bad arguments or when OpenSSL fails.
 */
int password_scram_derive(const char *password, const uint8_t *salt,
			  size_t salt_len, unsigned int iter,
			  struct password_scram *cred_r);

#endif
