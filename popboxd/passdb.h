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
 */
#ifndef POPBOX_PASSDB_H
#define POPBOX_PASSDB_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct passdb;

enum passdb_result {
	PASSDB_OK,
	PASSDB_FAIL,      /* unknown user or wrong credential: [AUTH] */
	PASSDB_TEMPFAIL,  /* the database could not be read: [SYS/TEMP] */
};

/* What a successful login yields.  Strings are owned; free with passdb_user_clear(). */
struct passdb_user {
	char *name;
	uid_t uid;
	gid_t gid;
	char *home;        /* may be empty */
	char *mail;        /* the "mail=" extra field (a Maildir path), or NULL */
};

/* Opens the passwd-file at path; it is re-read when it changes on disk. */
int passdb_open(const char *path, struct passdb **db_r, const char **error_r);
void passdb_close(struct passdb **db);

/* USER/PASS (and later SASL PLAIN). */
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

void passdb_user_clear(struct passdb_user *user);

/*
 * User names are data, never paths: 1..64 bytes of [A-Za-z0-9._@+-], not
 * starting with '.' or '-', no "..".  Checked before any lookup.
 */
#define USERNAME_MAX 64
bool username_valid(const char *name, size_t len);

#endif
