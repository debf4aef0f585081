/*
 * file-read.h — reading a whole small file (config, passwd-file, cache)
 * into memory, refusing anything that is not a regular file of bounded size.
 */
#ifndef POPBOX_FILE_READ_H
#define POPBOX_FILE_READ_H

#include <stddef.h>
#include <sys/stat.h>

/*
 * Opens path relative to dir_fd (AT_FDCWD for a plain path) with O_RDONLY,
 * O_CLOEXEC, O_NOCTTY, O_NONBLOCK (a FIFO cannot hang us before fstat
 * refuses it) and extra_flags (e.g. O_NOFOLLOW), and reads it whole.
 * Returns 0 with a malloc'ed, NUL-terminated copy in *text_r, its length in
 * *len_r and the file's stat in *st_r (may be NULL); or -1 with errno set
 * (ENOENT, EACCES...; EINVAL for "not a regular file", EFBIG for "larger
 * than max") and *error_r a static text.  A file that shrinks while being
 * read yields what was there.
 */
int file_read_all(int dir_fd, const char *path, int extra_flags, size_t max,
		  char **text_r, size_t *len_r, struct stat *st_r,
		  const char **error_r);

#endif
