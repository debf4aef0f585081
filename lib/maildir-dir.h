/*
 * maildir-dir.h — reading the entries of a Maildir directory (new/, cur/,
 * tmp/) the way every popbox reader does: a fresh directory stream on a
 * descriptor the caller keeps, and one rule for which entries are
 * messages.  Used by the maildrop (popboxd/maildrop.c) and by delivery
 * (popboxd/deliver.c: the quota count, the tmp/ clean-up), so that what a
 * delivery counts against the quota is exactly what POP3 lists.
 */
#ifndef POPBOX_MAILDIR_DIR_H
#define POPBOX_MAILDIR_DIR_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * A directory stream from the start of the directory dir_fd names (dir_fd
 * stays open and its own offset is not touched).  NULL with errno.
 */
DIR *maildir_dir_open(int dir_fd);

/*
 * Is this entry of dir_fd a message?  Regular files only (never a symlink,
 * a directory or a device), never a name starting with '.'.  fstatat runs
 * only when the file system gives no d_type; then *st_size_r is the size
 * it found, else -1.
 */
bool maildir_dir_is_msg(int dir_fd, const struct dirent *de,
			int64_t *st_size_r);

#endif
