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
 *
 * Invariants: every crypt verification runs libxcrypt's crypt_rn() on a
 * heap-allocated struct crypt_data (thread-safe, and too big for a worker
 * thread's stack) that is wiped before it is freed; every comparison of
 * secret-derived bytes is constant-time over equal lengths; no copy of a
 * password or of a hash computed from one outlives the call.
 */
#ifndef POPBOX_PASSWORD_H
#define POPBOX_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

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
 * MD5-CRYPT and CRYPT cannot be used for new hashes.  PLAIN/CLEAR store the
 * password itself and refuse ':' and control bytes (they would break the
 * passwd-file line).
 */
int password_hash(const char *scheme, const char *password, char **hash_r,
		  const char **error_r);

/*
 * Builds a dummy stored password for unknown users: same scheme, cost and
 * salt form as stored (a crypt entry from the same file), but the hash of a
 * random password nobody knows.  stored == NULL, or a stored entry that is
 * not a usable crypt hash, gives a SHA512-CRYPT dummy.  Returns 0 and a
 * malloc'ed "{SCHEME}hash" in *dummy_r, or -1 with *error_r.
 */
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
 * How many times this process has called crypt_rn() for a verification.
 * Lets tests prove that a path (the unknown-user dummy) really hashes.
 */
unsigned long password_crypt_count(void);

#endif
