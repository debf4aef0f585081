/*
 * deliver.h — storing one incoming message in a user's Maildir, the
 * crash-safe way.  popbox-deliver (tools/popbox-deliver.c) and the LMTP
 * listener (lmtp-*.c) both go through here, so there is one storage path.
 *
 *   deliver_begin   checks the quota against what the maildrop holds, makes
 *                   a file in tmp/ (unique name), writes Return-Path and
 *                   Delivered-To
 *   deliver_write   appends message bytes (as received: LF or CRLF line
 *                   ends, already dot-unstuffed by the caller); stored with
 *                   LF line ends, as Postfix and Dovecot store them
 *   deliver_commit  fsync the file, check size limit and quota with the
 *                   final size, rename into new/ under a name carrying ,S=
 *                   (bytes on disk) and ,W= (bytes on the POP3 wire, what
 *                   LIST says), fsync new/; only then success
 *   deliver_abort   removes the tmp/ file
 *
 * popbox-fetch stores many messages into one Maildir and commits them in
 * groups: deliver_dir_open once, then per message deliver_begin_in,
 * deliver_write, deliver_prepare (durable in tmp/), and for the whole
 * group deliver_publish(..., false) each (rename into new/) and one
 * deliver_dir_sync (fsync new/).  deliver_commit is deliver_prepare +
 * deliver_publish(..., true): one code path for both.  After a crash,
 * deliver_dir_locate and deliver_dir_publish_tmp finish what was begun.
 *
 * Never a half message in new/ (it appears there by one rename of a file
 * already fsynced), never success before the rename and the directory are
 * durable.  Blocking (disk I/O, fsync): call from a job thread or a
 * command-line tool, never an event loop.  One struct deliver per message
 * and recipient; different ones may be used from different threads (but
 * those of one struct deliver_dir from one thread at a time).
 */
#ifndef POPBOX_DELIVER_H
#define POPBOX_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "user-policy.h"

enum deliver_status {
	DELIVER_OK = 0,
	DELIVER_TEMPFAIL,   /* I/O error, full disk, Maildir locked...: retry later */
	DELIVER_OVER_QUOTA, /* the user's quota (bytes or messages) is full */
	DELIVER_TOO_BIG,    /* larger than message_size_limit or than the quota itself */
	DELIVER_PERMFAIL,   /* the Maildir cannot be made or used: needs the admin */
};

struct deliver_envelope {
	const char *return_path;  /* MAIL FROM / -f address without <>; "" = null sender */
	const char *delivered_to; /* the recipient address as the MTA gave it */
};
/* A NULL field (or a NULL envelope) adds no header of its own: for an MTA
   that has added Return-Path and Delivered-To itself.  Addresses with
   control characters or longer than 512 bytes are refused (PERMFAIL). */

struct deliver;

/* Descriptors an open delivery holds (between deliver_begin and its
   commit or abort); it holds no buffer of its own, only a few hundred
   bytes.  For callers that keep many open at once (LMTP). */
#define DELIVER_OPEN_FDS 3

/* The longest base name: deliver_base is always shorter (it fits a
   char[DELIVER_NAME_MAX]); deliver_dir_publish_tmp takes at most this. */
#define DELIVER_NAME_MAX 128

/*
 * Starts a delivery into the Maildir at path (created with tmp/ new/ cur/
 * if missing).  policy is the user's resolved policy (user_policy_resolve):
 * quota_storage and quota_messages (0 = no limit) are checked here against
 * the maildrop's current contents plus size_hint (0 if unknown) and again
 * at commit.  size_limit is message_size_limit (0 = none).  Returns 0 with
 * *d_r, or -1 with *status_r and *error_r (static or thread-local text).
 */
int deliver_begin(const char *path, const struct deliver_envelope *env,
		  const struct user_policy *policy, uint64_t size_hint,
		  uint64_t size_limit, struct deliver **d_r,
		  enum deliver_status *status_r, const char **error_r);

/* Appends data[0..len).  Returns 0, or -1 with *status_r and *error_r
   (then only deliver_abort is left to call). */
int deliver_write(struct deliver *d, const void *data, size_t len,
		  enum deliver_status *status_r, const char **error_r);

/*
 * Makes the message durable and visible in new/.  Returns 0 (and, if
 * name_r is not NULL, the new file's base name, malloc'ed), or -1 with
 * *status_r and *error_r and no trace left in new/.  Frees d either way.
 */
int deliver_commit(struct deliver **d, char **name_r,
		   enum deliver_status *status_r, const char **error_r);

/* Removes the tmp/ file and frees *d; NULL is fine.  Sets *d to NULL. */
void deliver_abort(struct deliver **d);

/* True if deliver_begin would take env's addresses (see above). */
bool deliver_envelope_valid(const struct deliver_envelope *env);

/* ---- many messages into one Maildir (popbox-fetch) --------------------- */

/*
 * A Maildir opened once for many deliveries (popbox-fetch): the directory,
 * tmp/ and new/ stay open (cur/ is made if missing, as deliver_begin does),
 * and stale tmp/ files (older than 36 h) are removed once, here, not per
 * message. Blocking; one thread at a time uses it.
 */
struct deliver_dir;

int deliver_dir_open(const char *path, struct deliver_dir **dir_r,
		     enum deliver_status *status_r, const char **error_r);
/* NULL is fine; sets *dir to NULL. */
void deliver_dir_close(struct deliver_dir **dir);

/*
 * fsync of new/: makes every rename done by deliver_publish(..., false)
 * durable.
 */
int deliver_dir_sync(struct deliver_dir *dir, enum deliver_status *status_r,
		     const char **error_r);

/*
 * Starts a message in dir: a unique tmp/ file, env's headers as
 * deliver_begin (NULL env = no header added). No quota, no size limit (the
 * fetch client has none). The delivery holds one descriptor (the file) until
 * deliver_prepare; dir must outlive it.
 */
int deliver_begin_in(struct deliver_dir *dir,
		     const struct deliver_envelope *env, struct deliver **d_r,
		     enum deliver_status *status_r, const char **error_r);

/*
 * Step 1 of a commit: the whole file durable in tmp/ (flush, fsync, size
 * check, close). After it the delivery holds no descriptor of its own. 0, or
 * -1 with *status_r and *error_r (then only deliver_abort, which removes the
 * tmp/ file). Calling it again is a no-op; deliver_write after it fails.
 */
int deliver_prepare(struct deliver *d, enum deliver_status *status_r,
		    const char **error_r);

/*
 * The file's unique base name (its name in tmp/; its name in new/ is this
 * base followed by ",S=...,W=..."); valid until the delivery is freed. ""
 * before deliver_begin*, and after a failure (the tmp/ file is then gone).
 * Never contains '/', ',' or ':'.
 */
const char *deliver_base(const struct deliver *d);

/*
 * Step 2: rename into new/ (prepares first if not yet done). With sync_dir,
 * fsync new/ as deliver_commit does (on its failure the file is taken back
 * out, -1); without, the caller must deliver_dir_sync() the directory before
 * counting it durable. Returns 0 with *name_r (malloc'ed final name, if
 * name_r not NULL), or -1 with nothing left in new/ or tmp/. Frees *d either
 * way.
 */
int deliver_publish(struct deliver **d, bool sync_dir, char **name_r,
		    enum deliver_status *status_r, const char **error_r);

/*
 * Recovery after a crash: where is the message whose base name is bases[i]?
 * DELIVER_WHERE_NONE (nowhere), DELIVER_WHERE_TMP (tmp/<base> exists:
 * prepared, never published), DELIVER_WHERE_STORED (in new/ or cur/ under a
 * name that is the base, or the base followed by ',' or ':' -- a mail reader
 * moves new/ files into cur/ adding ":2,FLAGS"). One pass over each of tmp/,
 * new/, cur/ for all n bases (n up to a few thousand; sort+bsearch or a
 * hash, not n*m).  0, or -1 with *error_r if a directory cannot be read. Only
 * regular files count (as for the maildrop: no symlink, directory, or name
 * starting with '.'); STORED wins over TMP (a link+unlink fallback
 * interrupted leaves both).
 */
enum deliver_where {
	DELIVER_WHERE_NONE,
	DELIVER_WHERE_TMP,
	DELIVER_WHERE_STORED,
};
int deliver_dir_locate(struct deliver_dir *dir, const char *const *bases,
		       size_t n, enum deliver_where *where_r,
		       enum deliver_status *status_r, const char **error_r);

/*
 * Recovery: moves tmp/<base> (a file deliver_prepare made durable) into new/
 * as "<base>,S=<its size>" (RENAME_NOREPLACE, fallback link+unlink as
 * deliver_rename), then fsyncs new/. For a base that is not a plain name (no
 * '/', not "." or "..", printable, at most DELIVER_NAME_MAX) or not a
 * regular file: -1. 0, or -1 with *error_r. Stricter than "printable": no
 * space and no leading '.' either (readers skip dot files). If the fsync of
 * new/ fails, the file is moved back to tmp/<base> (best effort), -1.
 */
int deliver_dir_publish_tmp(struct deliver_dir *dir, const char *base,
			    enum deliver_status *status_r, const char **error_r);

#endif
