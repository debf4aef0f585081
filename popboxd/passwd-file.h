/*
 * passwd-file.h — parser of one line of a Dovecot-style passwd-file.
 *
 *   user:password:uid:gid:gecos:home:shell:extra_fields
 *
 * Trailing fields may be left out ("user:{SCHEME}hash" alone is a valid
 * line).  Everything after the seventh ':' is the extra fields,
 * space-separated key=value pairs.
 *
 * Pure: (buffer, length) in, a typed result or a typed error out; no I/O,
 * no globals, so it is fuzzed (tests/fuzz/fuzz-passwd-file.c).  The
 * reading of the file is the caller's: passdb.c (the whole table) or
 * userdb-lookup.c (one user, for popbox-deliver).
 *
 * Invariants of a parsed entry: the user passed username_valid(); the
 * password field is not empty; uid and gid are 0 when the field was empty
 * ("not set": the server then uses mail_user) and never 0 otherwise, since
 * an explicit root uid/gid is refused; home is "" or an absolute path;
 * mail is NULL or an absolute path.
 */
#ifndef POPBOX_PASSWD_FILE_H
#define POPBOX_PASSWD_FILE_H

#include <stddef.h>
#include <sys/types.h>

#include "user-policy.h"

/*
 * Longest line, without its newline.  A yescrypt or SHA-512-crypt hash is
 * about 120 bytes; 4 KiB leaves room for long gecos and extra fields while
 * bounding what one bad line can make us allocate.
 */
#define PASSWD_FILE_LINE_MAX 4096

/* Largest passwd-file read: about 300,000 users; bounds memory use. */
#define PASSWD_FILE_SIZE_MAX (64 * 1024 * 1024)

enum passwd_file_error {
	PASSWD_FILE_ERR_NONE = 0,
	PASSWD_FILE_ERR_TOO_LONG,      /* longer than PASSWD_FILE_LINE_MAX */
	PASSWD_FILE_ERR_CONTROL,       /* NUL or other control byte */
	PASSWD_FILE_ERR_USER,          /* user fails username_valid() */
	PASSWD_FILE_ERR_NO_PASSWORD,   /* no ':' after the user, or empty */
	PASSWD_FILE_ERR_UID,           /* not a number, or 0, or too big */
	PASSWD_FILE_ERR_GID,           /* not a number, or 0, or too big */
	PASSWD_FILE_ERR_HOME,          /* not absolute */
	PASSWD_FILE_ERR_MAIL,          /* mail= empty, relative or repeated */
	PASSWD_FILE_ERR_UNSUPPORTED,   /* an access-control extra field
					  (deny, nologin, nopassword,
					  allow_nets, ...) we cannot honour */
	PASSWD_FILE_ERR_POLICY,        /* quota_rule, keep_days, expire_days or
					  pop3 bad or repeated (user-policy.h) */
	PASSWD_FILE_ERR_NOMEM,
};

struct passwd_file_entry {
	char *user;
	char *password; /* "{SCHEME}data" or bare crypt data */
	uid_t uid;      /* 0 = not set */
	gid_t gid;      /* 0 = not set */
	char *home;     /* "" = not set */
	char *mail;     /* from "mail=" (or "userdb_mail="); NULL = not set */
	struct user_policy policy; /* quota, retention, POP access overrides */
};

/*
 * Parses line[0..len) (no newline; one trailing '\r' is ignored).
 * Returns 1 and fills *entry_r (free it with passwd_file_entry_free()),
 * 0 for a blank line or a '#' comment, or -1 with *error_r.
 */
int passwd_file_parse_line(const char *line, size_t len,
			   struct passwd_file_entry *entry_r,
			   enum passwd_file_error *error_r);

/* The first line of a user's that passwd_file_find() skipped. */
struct passwd_file_skipped {
	unsigned int lineno;         /* 1-based; 0: no line was skipped */
	enum passwd_file_error error;
};

/*
 * user's entry in a whole passwd-file text[0..len) ('\n'-separated lines,
 * the last one possibly without its newline), as a table of every line
 * would hold it: the first line for user that parses.  A line for user
 * that does not parse is skipped (the first one is reported in
 * *skipped_r), as any bad line is.  Only lines that begin "user:" are
 * parsed, so a lookup costs one scan of the text.  user must have passed
 * username_valid().  Returns 1 with *entry_r filled (free it with
 * passwd_file_entry_free()), 0 if no line for user parses, -1 when out of
 * memory.
 */
int passwd_file_find(const char *text, size_t len, const char *user,
		     struct passwd_file_entry *entry_r,
		     struct passwd_file_skipped *skipped_r);

/* A short English text for an error ("bad uid"). */
const char *passwd_file_strerror(enum passwd_file_error error);

/* Frees the strings (wiping the password field) and zeroes the entry. */
void passwd_file_entry_free(struct passwd_file_entry *entry);

#endif
