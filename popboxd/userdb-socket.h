/*
 * userdb-socket.h — the filesystem socket (settings userdb_socket) where
 * popbox-deliver, running as mail_user, asks the auth process for a
 * recipient's record (userdb-lookup.h).  The master makes it, the auth
 * process accepts on it.
 *
 * Who may connect: the socket file belongs to mail_user and has mode 0600
 * (popboxd started as root), or to the user who started popboxd; the auth
 * process checks each peer's uid again (SO_PEERCRED).  How the file is
 * made (its directory, a stale socket replaced, no chmod or chown that
 * follows a symlink) is lib/unix-listen.h's.  None of this stops popboxd:
 * POP3 does not depend on it, so a problem is logged as an error and the
 * socket is simply not served.
 */
#ifndef POPBOX_USERDB_SOCKET_H
#define POPBOX_USERDB_SOCKET_H

#include <stdbool.h>
#include <sys/types.h>

#include "unix-listen.h"

/*
 * Makes the listening SOCK_SEQPACKET socket (non-blocking, close-on-exec)
 * at path.  With privileged, the file is given to uid:gid.  Returns the
 * descriptor, or -1 (logged) if there is none to serve.
 */
int userdb_socket_listen(const char *path, bool privileged, uid_t uid,
			 gid_t gid, struct unix_listen_id *id_r);

/* Removes the socket file at path if it is still the one we made. */
void userdb_socket_unlink(const char *path, const struct unix_listen_id *id);

#endif
