/*
 * fuzz-passwd-file.c — passwd_file_parse_line() on arbitrary bytes.
 *
 * Checks the invariants passwd-file.h promises for every entry it returns:
 * a valid user name, a non-empty password, an absolute (or empty) home and
 * an absolute (or absent) mail path, and policy fields (user-policy.h)
 * that are unset or within their bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "passdb.h"
#include "passwd-file.h"

static bool policy_in_range(const struct user_policy *p)
{
	return (p->quota_storage == USER_POLICY_UNSET ||
		(p->quota_storage >= 0 &&
		 p->quota_storage <= USER_POLICY_STORAGE_MAX)) &&
	       (p->quota_messages == USER_POLICY_UNSET ||
		(p->quota_messages >= 0 &&
		 p->quota_messages <= USER_POLICY_MESSAGES_MAX)) &&
	       (p->keep_days == USER_POLICY_UNSET ||
		(p->keep_days >= 0 && p->keep_days <= USER_POLICY_DAYS_MAX)) &&
	       (p->expire_days == USER_POLICY_UNSET ||
		p->expire_days == USER_POLICY_NEVER ||
		(p->expire_days >= 1 && p->expire_days <= USER_POLICY_DAYS_MAX)) &&
	       (p->pop3 == USER_POLICY_UNSET || p->pop3 == 0 || p->pop3 == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct passwd_file_entry e;
	enum passwd_file_error err;
	int r = passwd_file_parse_line((const char *)data, size, &e, &err);

	if (r == 1) {
		if (!username_valid(e.user, strlen(e.user)) ||
		    e.password[0] == '\0' ||
		    (e.home[0] != '\0' && e.home[0] != '/') ||
		    (e.mail != NULL && e.mail[0] != '/') ||
		    e.uid == (uid_t)-1 || e.gid == (gid_t)-1 ||
		    !policy_in_range(&e.policy))
			abort();
		passwd_file_entry_free(&e);
	} else if (r == -1) {
		if (err == PASSWD_FILE_ERR_NONE || e.user != NULL ||
		    passwd_file_strerror(err)[0] == '\0')
			abort();
	} else if (r != 0) {
		abort();
	}
	return 0;
}
