/*
 * unix-listen.h — a listening unix socket at a file-system path, made by a
 * process that may be root, in a directory that someone else may be able
 * to write (an MTA's queue directory, for the LMTP socket).
 *
 * The one way popbox makes such a socket (the LMTP listener, the
 * userdb_socket for popbox-deliver), so that these rules hold for both:
 *   - The last directory of the path is made (0755) if missing.
 *   - A socket file nobody listens on (left by a killed popboxd) is
 *     replaced; a live one (another server) or a file that is not a
 *     socket is never touched.
 *   - The file gets its mode from the umask at bind() time, never from a
 *     chmod() afterwards, and its owner from lchown(): neither follows a
 *     symlink, so a root process never changes the mode or the owner of
 *     another file when someone swaps the socket for a symlink between
 *     bind() and the next call.  (Swapping in a hard link to a file they
 *     do not own is what the kernel's fs.protected_hardlinks refuses.)
 *   - unix_listen_unlink() removes the file only while it is still the one
 *     that was made (same device and inode).
 */
#ifndef POPBOX_UNIX_LISTEN_H
#define POPBOX_UNIX_LISTEN_H

#include <stdbool.h>
#include <sys/types.h>

struct unix_listen_params {
	int type;          /* SOCK_STREAM or SOCK_SEQPACKET */
	mode_t mode;       /* permission bits of the socket file, e.g. 0600 */
	bool set_owner;    /* lchown the file to uid:gid (needs root) */
	uid_t uid;
	gid_t gid;
	int backlog;       /* for listen() */
};

/* Which file was made, so that only it is ever removed. */
struct unix_listen_id {
	dev_t dev;
	ino_t ino;
	bool made;
};

/*
 * Makes the socket at path (non-blocking, close-on-exec) and listens.
 * Returns the descriptor with *id_r filled, or -1 with *error_r (a
 * thread-local text naming the step, e.g. "bind: Permission denied");
 * *id_r then says nothing was made.
 */
int unix_listen(const char *path, const struct unix_listen_params *p,
		struct unix_listen_id *id_r, const char **error_r);

/* Removes the socket file at path if it is still the one id names. */
void unix_listen_unlink(const char *path, const struct unix_listen_id *id);

#endif
