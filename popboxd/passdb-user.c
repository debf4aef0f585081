/*
 * passdb-user.c — a user's account record (see passdb-user.h).
 */
#include "passdb-user.h"

#include <stdlib.h>
#include <string.h>

int passdb_user_from_entry(const struct passwd_file_entry *entry,
			   struct passdb_user *user_r)
{
	user_r->name = strdup(entry->user);
	user_r->uid = entry->uid;
	user_r->gid = entry->gid;
	user_r->policy = entry->policy;
	user_r->home = strdup(entry->home);
	user_r->mail = entry->mail != NULL ? strdup(entry->mail) : NULL;
	if (user_r->name == NULL || user_r->home == NULL ||
	    (entry->mail != NULL && user_r->mail == NULL)) {
		passdb_user_clear(user_r);
		return -1;
	}
	return 0;
}

void passdb_user_clear(struct passdb_user *user)
{
	free(user->name);
	free(user->home);
	free(user->mail);
	memset(user, 0, sizeof(*user));
	user_policy_init(&user->policy);
}
