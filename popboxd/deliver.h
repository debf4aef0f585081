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
 * Never a half message in new/ (it appears there by one rename of a file
 * already fsynced), never success before the rename and the directory are
 * durable.  Blocking (disk I/O, fsync): call from a job thread or a
 * command-line tool, never an event loop.  One struct deliver per message
 * and recipient; different ones may be used from different threads.
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

#endif
