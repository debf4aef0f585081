/*
 * fuzz-passwd-file.c — passwd_file_parse_line() on arbitrary bytes.
 *
 * Checks the invariants passwd-file.h promises for every entry it returns:
 * a valid user name, a non-empty password, an absolute (or empty) home and
 * an absolute (or absent) mail path.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "passdb.h"
#include "passwd-file.h"

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
		    e.uid == (uid_t)-1 || e.gid == (gid_t)-1)
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
