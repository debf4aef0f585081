/*
 * file-read.c — reading a whole small file (see file-read.h).
 */
#include "file-read.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>

static int file_read_fd(int fd, size_t size, char **text_r, size_t *len_r)
{
	char *text = malloc(size + 1);
	size_t len = 0;

	if (text == NULL)
		return -1;
	while (len < size) {
		ssize_t n = read(fd, text + len, size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int saved = errno;
			free(text);
			errno = saved;
			return -1;
		}
		if (n == 0)
			break; /* shrank while reading */
		len += (size_t)n;
	}
	text[len] = '\0';
	*text_r = text;
	*len_r = len;
	return 0;
}

int file_read_all(int dir_fd, const char *path, int extra_flags, size_t max,
		  char **text_r, size_t *len_r, struct stat *st_r,
		  const char **error_r)
{
	struct stat st;
	int fd = openat(dir_fd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY |
			O_NONBLOCK | extra_flags);
	int ret = -1, saved;

	if (fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	/* Both system-call failures report errno: same body on purpose.
	   NOLINTNEXTLINE(bugprone-branch-clone) */
	if (fstat(fd, &st) < 0) {
		*error_r = strerror(errno);
	} else if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		*error_r = "not a regular file";
	} else if ((uint64_t)st.st_size > max) {
		errno = EFBIG;
		*error_r = "file too large";
	} else if (file_read_fd(fd, (size_t)st.st_size, text_r, len_r) < 0) {
		*error_r = strerror(errno);
	} else {
		ret = 0;
		if (st_r != NULL)
			*st_r = st;
	}
	saved = errno;
	close(fd);
	errno = saved;
	return ret;
}
