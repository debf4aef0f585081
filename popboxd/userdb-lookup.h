/*
 * userdb-lookup.h — a recipient's record from the auth process, for
 * delivery: AUTH_MSG_USERDB_LOOKUP and its USERDB_REPLY (auth-proto.h).
 *
 * No password is involved: the question is only "does this user exist,
 * and where is its mail".  The auth process answers peers running as
 * mail_user: the mail processes (LMTP) over their usual auth connection
 * (auth_client_request with userdb_lookup_request, then
 * userdb_lookup_reply_get in the callback), and popbox-deliver over the
 * filesystem socket userdb_socket (userdb_lookup_socket, blocking).
 *
 * The reply is decoded as untrusted bytes: every field is checked (a user
 * name that passes username_valid, bounded paths, a policy in range), and
 * anything unexpected is a TEMPFAIL, never a guess.
 *
 * popbox-deliver reads the passwd-file itself when it may
 * (userdb_lookup_file): the same record, without the auth process and
 * without the password code.
 *
 * The record's fields (user, uid, gid, home, mail, policy: never a
 * password) travel the same way in the TOKEN_REPLY that gives a mail
 * process its logged-in user: userdb_record_put and userdb_record_get are
 * the one codec for both.
 */
#ifndef POPBOX_USERDB_LOOKUP_H
#define POPBOX_USERDB_LOOKUP_H

#include <stdint.h>

#include "ipc.h"
#include "passdb.h"

/* Longest home or mail path carried (PATH_MAX with its NUL). */
#define USERDB_PATH_MAX 4096
/* How long popbox-deliver waits for the auth process by default. */
#define USERDB_TIMEOUT_MS 30000

/* Appends user's record fields to w (after its STATUS). */
void userdb_record_put(struct ipc_writer *w, const struct passdb_user *user);

/*
 * Decodes the record fields of msg into *user_r (owned strings: free with
 * passdb_user_clear; the policy as sent, unresolved).  Returns 0, or -1
 * with *user_r cleared and *error_r "malformed user record" (a field
 * missing, too long or out of range) or "out of memory".
 */
int userdb_record_get(const struct ipc_msg *msg, struct passdb_user *user_r,
		      const char **error_r);

/* Fills w with a lookup of user (id 0: auth_client_request sets it). */
void userdb_lookup_request(struct ipc_writer *w, const char *user);

/*
 * The auth side: fills w with the reply to request id.  status is an enum
 * auth_status; user is used (and must be non-NULL) only for
 * AUTH_STATUS_OK.
 */
void userdb_lookup_reply_put(struct ipc_writer *w, uint32_t id,
			     uint32_t status, const struct passdb_user *user);

/*
 * Decodes a reply; NULL (the auth process could not answer) is a
 * TEMPFAIL.  Returns PASSDB_OK with *user_r filled (owned strings: free
 * with passdb_user_clear; the policy is the passwd-file's, unresolved),
 * PASSDB_FAIL for an unknown user, PASSDB_TEMPFAIL for anything else (the
 * auth side's TEMPFAIL, a refused or malformed reply, out of memory).
 * *user_r is zeroed unless the result is PASSDB_OK.
 */
enum passdb_result userdb_lookup_reply_get(const struct ipc_msg *reply,
					   struct passdb_user *user_r);

/*
 * Blocking client: connects to the SOCK_SEQPACKET socket at path (whose
 * listener must be root or this process's own user), asks for user and
 * waits at most timeout_ms for the answer.  Results as
 * userdb_lookup_reply_get; on PASSDB_TEMPFAIL *error_r says why.
 */
enum passdb_result userdb_lookup_socket(const char *path, const char *user,
					int timeout_ms,
					struct passdb_user *user_r,
					const char **error_r);

/*
 * Reads the passwd-file at path (passdb_file) and returns user's record
 * the way the auth process would: the first line for user that parses
 * (passwd_file_find; a skipped line of user's is logged as a warning).
 * No password is checked and no hash computed.  user must have passed
 * username_valid().  PASSDB_OK with *user_r filled (free with
 * passdb_user_clear), PASSDB_FAIL for an unknown user, PASSDB_TEMPFAIL
 * with *error_r when the file cannot be read (larger than
 * PASSWD_FILE_SIZE_MAX included) or out of memory.  *user_r is zeroed
 * unless the result is PASSDB_OK.
 */
enum passdb_result userdb_lookup_file(const char *path, const char *user,
				      struct passdb_user *user_r,
				      const char **error_r);

#endif
