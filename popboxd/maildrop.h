/*
 * maildrop.h — the POP3 view of one user's Maildir: lock, list, read, commit.
 *
 * A maildrop is a snapshot taken at login: the messages found in new/ and
 * cur/ (tmp/ is ignored), in a stable order, each with its wire size and a
 * UIDL that never changes (it survives restarts, the loss of the cache, and
 * the move from new/ to cur/ with any flags).  Mail delivered after the
 * snapshot is not part of it and is never touched.
 *
 * While open, the maildrop holds an exclusive lock (flock on a lock file in
 * the Maildir) that works across processes and dies with its holder; a
 * second open gets MAILDROP_IN_USE.  A lock file that is not a regular file
 * (a symlink, FIFO, directory, device) refuses the open (MAILDROP_PERMFAIL)
 * without touching what it points to.
 *
 * Only regular files are messages: symlinks, FIFOs, directories, sockets
 * and devices in new/ and cur/ are never listed, opened through, waited on
 * or removed in a message's place.
 *
 * Sizes and UIDLs come from a small per-maildrop cache file (popbox.cache in
 * the Maildir) when it is current, so that a 100,000-message maildrop opens
 * without opening every message.  The cache is only a cache: a missing,
 * truncated, hostile or stale one is detected and rebuilt (and, unless
 * merely missing or stale, logged as event=cache-rejected).
 *
 * All functions block (directory scans, fsync): call them off the event loop.
 * A struct maildrop is used by one thread at a time.
 */
#ifndef POPBOX_MAILDROP_H
#define POPBOX_MAILDROP_H

#include <stddef.h>
#include <stdint.h>
#include "mailmsg.h"

struct maildrop;

enum maildrop_status {
	MAILDROP_OK,
	MAILDROP_IN_USE,       /* another session holds the lock: [IN-USE] */
	MAILDROP_LOGIN_DELAY,  /* last login was less than login_delay ago */
	MAILDROP_TEMPFAIL,     /* I/O error, try later: [SYS/TEMP] */
	MAILDROP_PERMFAIL,     /* not a Maildir, no permission: [SYS/PERM] */
};

struct maildrop_settings {
	/* RFC 2449 LOGIN-DELAY: seconds that must pass between two logins;
	   0 disables the check.  The time of the last login is the lock
	   file's mtime, set on each successful open. */
	unsigned int login_delay;
};

/*
 * Locks and lists the Maildir at path (the directory that holds new/ cur/
 * tmp/; new/ and cur/ are created if missing, as Maildir readers do).
 * Returns 0 with *md_r set, or -1 with *status_r saying why and *error_r a
 * static or thread-local text for the log.
 */
int maildrop_open(const char *path, const struct maildrop_settings *set,
		  struct maildrop **md_r, enum maildrop_status *status_r,
		  const char **error_r);

/* The snapshot: messages [0..*count_r), valid until maildrop_close(). */
const struct mailmsg *maildrop_list(const struct maildrop *md, size_t *count_r);

/*
 * Opens message index for reading (O_RDONLY|O_NOFOLLOW|O_CLOEXEC, regular
 * files only), finding it again if another agent renamed it (new/ -> cur/,
 * flags changed).  Returns 0 and the descriptor, or -1: *status_r is
 * MAILDROP_PERMFAIL if the message is gone, MAILDROP_TEMPFAIL otherwise.
 */
int maildrop_open_message(struct maildrop *md, size_t index, int *fd_r,
			  enum maildrop_status *status_r, const char **error_r);

/*
 * UPDATE state: removes every message i with deleted[i] != 0 (deleted has
 * one byte per listed message), fsyncs new/ and cur/, and updates the cache.
 * A message already gone counts as removed.  Returns 0 if all are removed
 * and durable, -1 otherwise (some may have been removed; none that was not
 * marked is ever touched).  *removed_r is the number removed either way.
 */
int maildrop_commit(struct maildrop *md, const uint8_t *deleted,
		    size_t *removed_r, const char **error_r);

/* Unlocks and frees; deletes nothing.  Sets *md to NULL. */
void maildrop_close(struct maildrop **md);

#endif
