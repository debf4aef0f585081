/*
 * passdb-user.h — a user's account record: what a login or a delivery
 * needs to know about a user (name, ids, home, Maildir, policy), never a
 * password.
 *
 * passdb lookups, the auth process's replies (userdb-lookup.h) and
 * popbox-deliver's direct read of the passwd-file all hand one out.  On
 * its own, apart from passdb.c, so that code that only carries records
 * does not link the password code (and OpenSSL and libcrypt with it).
 */
#ifndef POPBOX_PASSDB_USER_H
#define POPBOX_PASSDB_USER_H

#include <sys/types.h>

#include "passwd-file.h"
#include "user-policy.h"

/* Strings are owned; free with passdb_user_clear(). */
struct passdb_user {
	char *name;
	uid_t uid;
	gid_t gid;
	char *home;        /* may be empty */
	char *mail;        /* the "mail=" extra field (a Maildir path), or NULL */
	struct user_policy policy; /* the passwd-file's overrides (unresolved) */
};

/*
 * Fills *user_r with copies of entry's account fields (not its password).
 * Returns 0, or -1 when out of memory, with *user_r cleared.
 */
int passdb_user_from_entry(const struct passwd_file_entry *entry,
			   struct passdb_user *user_r);

/* Frees the strings and zeroes the record (its policy: all defaults). */
void passdb_user_clear(struct passdb_user *user);

#endif
