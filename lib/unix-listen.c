/*
 * unix-listen.c — a listening unix socket at a path (see unix-listen.h).
 *
 * The umask is process-wide: this runs while the process has one thread
 * (popboxd's master at start-up).
 */
#include "unix-listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define UNIX_LISTEN_ERROR_MAX 256

static _Thread_local char unix_listen_errbuf[UNIX_LISTEN_ERROR_MAX];

static const char *unix_listen_errno(const char *what, int err)
{
	char eb[128];

	snprintf(unix_listen_errbuf, sizeof(unix_listen_errbuf), "%s: %s", what,
		 strerror_r(err, eb, sizeof(eb)));
	return unix_listen_errbuf;
}

static int unix_listen_fail(const char *text, const char **error_r)
{
	*error_r = text;
	return -1;
}

/* mkdir the path's last directory (0755) if it is missing. */
static int unix_listen_parent(const char *path, const char **error_r)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *slash = strrchr(path, '/');

	if (slash == NULL || slash == path)
		return 0;
	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return unix_listen_fail(unix_listen_errno("mkdir", errno),
					error_r);
	return 0;
}

/* Does a server accept on sun?  Anything but "refused" (or "gone") counts
   as yes: a socket is removed only when it is certainly dead. */
static bool unix_listen_live(const struct sockaddr_un *sun, int type)
{
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return true;
	live = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0 ||
	       (errno != ECONNREFUSED && errno != ENOENT);
	close(fd);
	return live;
}

/* Clears the way for bind: 0 if path is free now. */
static int unix_listen_clear(const char *path, const struct sockaddr_un *sun,
			     int type, const char **error_r)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return unix_listen_fail(unix_listen_errno("lstat", errno),
					error_r);
	}
	if (!S_ISSOCK(st.st_mode))
		return unix_listen_fail("the path exists and is not a socket",
					error_r);
	if (unix_listen_live(sun, type))
		return unix_listen_fail("another server is listening there",
					error_r);
	if (unlink(path) < 0 && errno != ENOENT)
		return unix_listen_fail(unix_listen_errno("unlink stale socket",
							  errno), error_r);
	return 0;
}

/* bind with the mode from the umask (the file never exists with wider
   permissions, and no chmod follows), listen, owner. */
static int unix_listen_bind(int fd, const char *path,
			    const struct sockaddr_un *sun,
			    const struct unix_listen_params *p,
			    const char **what_r)
{
	mode_t old = umask(~p->mode & 0777);
	int ret = bind(fd, (const struct sockaddr *)sun, sizeof(*sun));

	umask(old);
	*what_r = "bind";
	if (ret < 0)
		return -1;
	*what_r = "listen";
	if (listen(fd, p->backlog) < 0)
		return -1;
	*what_r = "lchown";
	if (p->set_owner &&
	    fchownat(AT_FDCWD, path, p->uid, p->gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	return 0;
}

int unix_listen(const char *path, const struct unix_listen_params *p,
		struct unix_listen_id *id_r, const char **error_r)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *what = "socket";
	struct stat st;
	int fd;

	id_r->made = false;
	if (strlen(path) >= sizeof(sun.sun_path))
		return unix_listen_fail("path too long for a unix socket",
					error_r);
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (unix_listen_parent(path, error_r) < 0 ||
	    unix_listen_clear(path, &sun, p->type, error_r) < 0)
		return -1;
	fd = socket(AF_UNIX, p->type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || unix_listen_bind(fd, path, &sun, p, &what) < 0) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		/* Ours only if bind went through (else it may be another's). */
		if (strcmp(what, "socket") != 0 && strcmp(what, "bind") != 0)
			(void)unlink(path);
		return unix_listen_fail(unix_listen_errno(what, err), error_r);
	}
	/* Still a socket (ours, then): remember which, for the unlink. */
	if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		close(fd);
		return unix_listen_fail("the socket was replaced while it was "
					"being made", error_r);
	}
	id_r->dev = st.st_dev;
	id_r->ino = st.st_ino;
	id_r->made = true;
	return fd;
}

void unix_listen_unlink(const char *path, const struct unix_listen_id *id)
{
	struct stat st;

	if (id->made && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == id->dev && st.st_ino == id->ino)
		(void)unlink(path);
}
