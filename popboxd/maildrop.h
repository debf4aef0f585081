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

#include <stdbool.h>
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
	/* An open by the admin's tools (`popbox expire`), not a login: no
	   LOGIN-DELAY check, and the time of the last login is left as it
	   is, so expiry never delays the user's next login. */
	bool admin;
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

/*
 * UPDATE with a keep period (the account's keep_days > 0): like
 * maildrop_commit(), but each marked message is renamed, not unlinked,
 * into the Maildir++ folder .Kept (RETENTION_KEPT_FOLDER; its new/ for a
 * message from new/, its cur/ for one from cur/), its base name given
 * ",K=<now>" (retention_kept_name) so `popbox expire` knows when it was
 * deleted.  The folder is created (tmp/ new/ cur/ and the "maildirfolder"
 * marker, made durable) if missing.
 *
 * Crash safety: a rename is atomic, so at every moment a marked message is
 * either still in the maildrop or in .Kept, whole, never in both and never
 * in neither; new/, cur/ and the .Kept directories that received messages
 * are fsynced before 0 is returned.  A name already taken in .Kept is
 * never replaced (RENAME_NOREPLACE; the ",K=" second is moved on).  A
 * message whose kept name would exceed NAME_MAX stays in the maildrop and
 * the commit fails (-1): it is never unlinked instead.
 */
int maildrop_commit_keep(struct maildrop *md, const uint8_t *deleted,
			 int64_t now, size_t *removed_r, const char **error_r);

/* What `popbox expire` needs to know of a listed message's file. */
struct maildrop_file_info {
	int64_t mtime;       /* seconds: the delivery time */
	uint64_t size;       /* bytes on disk */
	bool present;        /* false: gone (or not a file) since the listing */
};

/*
 * Fills info[0..count) for the listed messages (following a message that
 * another agent renamed).  Returns 0, or -1 with *error_r on an I/O error.
 */
int maildrop_file_info(struct maildrop *md, struct maildrop_file_info *info,
		       const char **error_r);

/* What a scan of .Kept found due (and, unless a dry run, removed). */
struct maildrop_kept_counts {
	size_t messages;
	uint64_t bytes;
};

/*
 * `popbox expire` for the .Kept folder: removes every regular file of
 * .Kept/new and .Kept/cur whose ",K=" time is more than keep_days days
 * before now (retention_due), then fsyncs the directories it changed.
 * Files without a valid ",K=" are never removed.  dry_run: only counts.
 * No .Kept folder: nothing to do.  Hold the maildrop (the lock) while
 * calling, so no QUIT moves messages in meanwhile.  Returns 0, or -1 with
 * *error_r (what was removed is counted either way).
 */
int maildrop_expire_kept(struct maildrop *md, int64_t now, int32_t keep_days,
			 bool dry_run, struct maildrop_kept_counts *counts_r,
			 const char **error_r);

/*
 * How a scan reads the messages whose wire size it must learn from their
 * bytes (no ",W=" in the name, not in the cache): with more than
 * parallel_min of them, threads threads at once (the caller and helpers
 * that live only for the scan; 0: two per online CPU; at most 4).  The
 * defaults (0, 512) suit popboxd; tests and benchmarks set other values to
 * compare serial and parallel scans.  Call before any maildrop_open().
 */
void maildrop_set_sizing(unsigned int threads, size_t parallel_min);

/* Unlocks and frees; deletes nothing.  Sets *md to NULL. */
void maildrop_close(struct maildrop **md);

#endif
