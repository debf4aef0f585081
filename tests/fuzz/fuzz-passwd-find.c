/*
 * fuzz-passwd-find.c — passwd_file_find() on arbitrary file texts, checked
 * against the plain way: every line parsed with passwd_file_parse_line()
 * in order, the first entry of the user's taken (what passdb.c's table
 * holds).  The find only parses lines that begin "user:"; this checks the
 * shortcut loses and gains nothing: the same entry (or none), and the
 * first line of the user's it skipped.
 *
 * Input: the first byte picks the user (one of a few names that are
 * prefixes of each other), the rest is the file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "passwd-file.h"

static const char *const fuzz_users[] = { "a", "ab", "a.b", "abc" };

/* The plain way: 1 with *found_r (the entry), 0, or -1 out of memory. */
static int reference_find(const char *text, size_t len, const char *user,
			  struct passwd_file_entry *found_r,
			  unsigned int *skipped_r)
{
	size_t pos = 0, ulen = strlen(user);
	unsigned int lineno = 0;

	*skipped_r = 0;
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t linelen = nl != NULL ? (size_t)(nl - text) - pos : len - pos;
		enum passwd_file_error err;
		int r = passwd_file_parse_line(text + pos, linelen, found_r, &err);
		bool users = linelen > ulen && text[pos + ulen] == ':' &&
			     memcmp(text + pos, user, ulen) == 0;

		lineno++;
		pos += linelen + 1;
		if (r < 0 && err == PASSWD_FILE_ERR_NOMEM)
			return -1;
		if (r > 0 && strcmp(found_r->user, user) == 0)
			return 1;
		if (r > 0)
			passwd_file_entry_free(found_r);
		if (r < 0 && users && *skipped_r == 0)
			*skipped_r = lineno;
	}
	return 0;
}

static bool same_entry(const struct passwd_file_entry *a,
		       const struct passwd_file_entry *b)
{
	return strcmp(a->user, b->user) == 0 &&
	       strcmp(a->password, b->password) == 0 &&
	       a->uid == b->uid && a->gid == b->gid &&
	       strcmp(a->home, b->home) == 0 &&
	       (a->mail == NULL ? b->mail == NULL :
		b->mail != NULL && strcmp(a->mail, b->mail) == 0) &&
	       memcmp(&a->policy, &b->policy, sizeof(a->policy)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct passwd_file_entry got, want;
	struct passwd_file_skipped skipped;
	unsigned int want_skipped;

	if (size < 1)
		return 0;
	const char *user = fuzz_users[data[0] % 4];
	const char *text = (const char *)data + 1;
	int r = passwd_file_find(text, size - 1, user, &got, &skipped);
	int w = reference_find(text, size - 1, user, &want, &want_skipped);

	if (r < 0 || w < 0) /* out of memory: nothing to compare */
		abort();
	if (r != w || skipped.lineno != want_skipped ||
	    (r == 1 && !same_entry(&got, &want)) || (r == 0 && got.user != NULL))
		abort();
	passwd_file_entry_free(&got);
	if (w == 1)
		passwd_file_entry_free(&want);
	return 0;
}
