/*
 * retention.h — how long mail is kept: the decision of `popbox expire` for
 * one message, and the names of kept messages.  Pure: no I/O, no clock (the
 * caller passes "now"), so every boundary is unit-tested and the name
 * parser is fuzzed (tests/fuzz/fuzz-retention.c).
 *
 * Two clocks, one per place a message can be:
 *   - in the maildrop (new/, cur/): a message is as old as its file's
 *     mtime.  Maildir writers set it at delivery, and renames (new/ to
 *     cur/, a flag change) keep it.  expire_days counts from there.
 *   - in the .Kept folder: a message a POP3 client DELEted while the
 *     account's keep_days was above 0.  It was renamed there at the QUIT
 *     with ",K=<unix seconds of that QUIT>" added to its base name (the
 *     mtime is not touched, so delivery time stays known).  keep_days
 *     counts from the ",K=" time.  A file in .Kept without a valid ",K="
 *     (a message an IMAP client put into the folder) is never removed:
 *     expiry only takes back what popbox put there.
 *
 * "Older than N days" is strict: a message goes when more than N * 86400
 * seconds have passed, never at exactly N days, never when its time is in
 * the future (a clock stepped back keeps mail, it does not lose it).
 */
#ifndef POPBOX_RETENTION_H
#define POPBOX_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct user_policy;

/* The Maildir++ folder (a subdirectory of the Maildir) of kept messages:
   IMAP servers that read the same Maildir show it as a folder "Kept". */
#define RETENTION_KEPT_FOLDER ".Kept"
#define RETENTION_DAY_SECONDS 86400
/* The largest ",K=" value accepted: far beyond any real clock (year
   36,812), small enough that no sum or product with it overflows. */
#define RETENTION_SINCE_MAX ((int64_t)1 << 40)
/* No kept-since time could be read from the name: never removed. */
#define RETENTION_SINCE_UNKNOWN INT64_MIN
/* A Maildir file name is at most NAME_MAX bytes. */
#define RETENTION_NAME_MAX 255

enum retention_place {
	RETENTION_MAILDROP,   /* new/ or cur/: since = the file's mtime */
	RETENTION_KEPT,       /* .Kept/: since = the ",K=" time */
};

/*
 * Is a message that has been in place `where` since `since` (unix seconds)
 * due for removal at `now` under the resolved policy `eff`
 * (user_policy_resolve)?  In the maildrop: expire_days (USER_POLICY_NEVER:
 * never).  In .Kept: keep_days (0: as soon as a second has passed); an
 * unknown since: never.  Days out of range (a policy that was not
 * resolved) never remove anything.
 */
bool retention_due(enum retention_place where, int64_t since, int64_t now,
		   const struct user_policy *eff);

/* The rule under both places: more than `days` whole days since `since`?
   days < 0 (never, unset): false. */
bool retention_older_than(int64_t since, int64_t now, int32_t days);

/*
 * The ",K=" time in name[0..len): only in the base name (before the first
 * ':'), exactly one such field, 1..20 decimal digits, at most
 * RETENTION_SINCE_MAX.  Returns true with *since_r set, else false (no
 * field, two of them, or a bad value).
 */
bool retention_kept_since(const char *name, size_t len, int64_t *since_r);

/*
 * The name a message gets in .Kept: its base name with every ",K=" field
 * left out, then ",K=<now>", then its info part (":2,<flags>") unchanged.
 * Writes it NUL-terminated into out[0..size) and returns its length, or -1
 * if it would be longer than RETENTION_NAME_MAX or size, now is outside
 * 0..RETENTION_SINCE_MAX, or name is empty or holds a NUL or a '/' (no
 * file name does).  ",S=" and ",W=" stay where they were, so
 * Dovecot-style readers still find the sizes.
 */
ssize_t retention_kept_name(const char *name, size_t len, int64_t now,
			    char *out, size_t size);

#endif
