/*
 * maildir-dir.c — the entries of a Maildir directory (see maildir-dir.h).
 */
#include "maildir-dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

DIR *maildir_dir_open(int dir_fd)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir;

	if (fd < 0)
		return NULL;
	dir = fdopendir(fd);
	if (dir == NULL)
		close(fd);
	return dir;
}

bool maildir_dir_is_msg(int dir_fd, const struct dirent *de,
			int64_t *st_size_r)
{
	struct stat st;

	*st_size_r = -1;
	if (de->d_name[0] == '.')
		return false;
	if (de->d_type == DT_REG)
		return true;
	if (de->d_type != DT_UNKNOWN ||
	    fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(st.st_mode))
		return false;
	*st_size_r = st.st_size;
	return true;
}
