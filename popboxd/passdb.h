/*
 * passdb.h — who may log in: look up a user, verify a credential.
 *
 * The only backend today is a passwd-file in Dovecot's format
 * (user:{SCHEME}hash:uid:gid:gecos:home:shell:extra), so sites can migrate
 * from Dovecot.  Verification is slow on purpose (yescrypt, bcrypt,
 * SHA-512-crypt): call it from a worker thread, never an event loop.
 * Functions are thread-safe.
 *
 * An unknown user and a wrong password give the same result and take the
 * same time: an unknown user is verified against a dummy hash of the same
 * scheme and cost as real entries.  Comparisons are constant-time.
 *
 * SCRAM (RFC 5802) needs keys, not a verdict: passdb_scram_lookup() hands
 * out a user's StoredKey/ServerKey (stored, or derived from a {PLAIN}
 * secret) or, for anyone else, fake keys that look the same, and every
 * lookup costs one PBKDF2 run at PASSWORD_SCRAM_ITER_DEFAULT iterations
 * whichever case it is.  The caller checks the client's proof itself and
 * then calls passdb_user_lookup().
 */
#ifndef POPBOX_PASSDB_H
#define POPBOX_PASSDB_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "passdb-user.h" /* struct passdb_user: what a successful login yields */
#include "password.h"
#include "user-policy.h"
#include "username.h" /* username_valid(): checked before any lookup */

struct passdb;

enum passdb_result {
	PASSDB_OK,
	PASSDB_FAIL,      /* unknown user or wrong credential: [AUTH] */
	PASSDB_TEMPFAIL,  /* the database could not be read: [SYS/TEMP] */
};

/* Opens the passwd-file at path; it is re-read when it changes on disk. */
int passdb_open(const char *path, struct passdb **db_r, const char **error_r);
void passdb_close(struct passdb **db);

/* USER/PASS, SASL PLAIN and LOGIN.  Exactly one slow hash per call
   (password_slow_count()), whoever the user; none at all when the file has
   no slow entry (every password {PLAIN}): the same for every user too. */
enum passdb_result passdb_verify_plain(struct passdb *db, const char *user,
				       const char *password,
				       struct passdb_user *user_r);
/*
 * APOP (RFC 1939 section 7): digest is 32 lowercase or uppercase hex digits
 * of MD5(timestamp password).  Only users with a plaintext-equivalent
 * secret ({PLAIN}) can use APOP; others fail like a wrong digest.
 */
enum passdb_result passdb_verify_apop(struct passdb *db, const char *user,
				      const char *timestamp, const char *digest,
				      struct passdb_user *user_r);

/*
 * SCRAM-SHA-256 credentials for user, in *cred_r (wipe it when done):
 *   - a {SCRAM-SHA-256} entry: its own salt, iterations and keys;
 *   - a {PLAIN}/{CLEAR} entry: keys derived from the secret with
 *     PASSWORD_SCRAM_ITER_DEFAULT iterations and a salt that is stable for
 *     this user while the process lives (HMAC of the name under a key
 *     drawn at passdb_open());
 *   - an unknown user, an invalid name, or an entry that cannot serve
 *     SCRAM (crypt hashes, unusable lines): fake credentials shaped like
 *     the {PLAIN} case (same salt rule, same iterations, random keys).
 * *usable_r is true only for the first two: a caller must fail a proof
 * made against fake credentials even if it happens to check out.  The
 * salt rule for {PLAIN} and fake credentials is the same so the two cannot
 * be told apart by asking twice.  Every call runs PBKDF2 exactly once.
 * Returns PASSDB_OK, or PASSDB_TEMPFAIL (out of memory, no entropy,
 * OpenSSL failure; then *cred_r is zeroed and *usable_r false).
 */
enum passdb_result passdb_scram_lookup(struct passdb *db, const char *user,
				       struct password_scram *cred_r,
				       bool *usable_r);

/*
 * The account of an existing user, without verifying anything: for a
 * caller that has already authenticated user (a SCRAM proof).  PASSDB_FAIL
 * if the user is unknown (removed from the file meanwhile), TEMPFAIL when
 * out of memory.
 */
enum passdb_result passdb_user_lookup(struct passdb *db, const char *user,
				      struct passdb_user *user_r);

/*
 * Whether the passwd-file at path has at least one user for whom
 * passdb_scram_lookup() would hand out usable credentials (*can_r): a
 * valid {SCRAM-SHA-256} entry or a {PLAIN}/{CLEAR} one, counted as a
 * lookup counts them (bad lines and a duplicate user's later lines do not
 * count).  A fact about the site, not about a user: popboxd's master asks
 * it to decide whether to offer SCRAM-SHA-256 at all (auth_mechanisms =
 * auto).  The file is read as passdb_open() reads it (symlinks followed,
 * same size limit), parsed by the same code without logging its bad lines
 * (the auth process reports them), and nothing is kept: every secret read
 * is wiped before returning.  Returns 0, or -1 with *error_r a static text
 * (the file cannot be read, out of memory) and *can_r false.
 */
int passdb_file_can_scram(const char *path, bool *can_r, const char **error_r);

#endif
