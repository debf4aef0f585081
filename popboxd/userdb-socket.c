/*
 * userdb-socket.c — the filesystem socket for popbox-deliver's lookups
 * (see userdb-socket.h).  Runs in the master, as root or as the user who
 * started popboxd, once at start-up and once at stop.
 */
#include "userdb-socket.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* Connections waiting to be accepted: deliveries come in bursts. */
#define USERDB_SOCKET_BACKLOG 128

/* mkdir the socket's directory (only the last level) if it is missing. */
static int userdb_socket_parent(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *slash = strrchr(path, '/');

	if (slash == NULL || slash == path)
		return 0;
	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		log_error("event=userdb-socket-failed path=%s error=\"mkdir %s: %s\"",
			  path, dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* True if someone accepts connections on sun. */
static bool userdb_socket_live(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return false;
	live = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0;
	close(fd);
	return live;
}

/* Clears the way for bind: 0 if path is free now, -1 (logged) if not. */
static int userdb_socket_clear(const char *path, const struct sockaddr_un *sun)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISSOCK(st.st_mode)) {
		log_error("event=userdb-socket-failed path=%s error=\"exists and "
			  "is not a socket\" note=\"not removed\"", path);
		return -1;
	}
	if (userdb_socket_live(sun)) {
		log_error("event=userdb-socket-failed path=%s error=\"in use by "
			  "another process\" note=\"popbox-deliver lookups go "
			  "there, not to this popboxd\"", path);
		return -1;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		log_error("event=userdb-socket-failed path=%s error=\"unlink "
			  "stale socket: %s\"", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* bind (created 0600 by the umask, never wider for a moment), listen,
   owner, mode. */
static int userdb_socket_bind(int fd, const char *path,
			      const struct sockaddr_un *sun, bool privileged,
			      uid_t uid, gid_t gid, const char **what_r)
{
	mode_t old = umask(0177);
	int ret = bind(fd, (const struct sockaddr *)sun, sizeof(*sun));

	umask(old);
	*what_r = "bind";
	if (ret < 0)
		return -1;
	*what_r = "listen";
	if (listen(fd, USERDB_SOCKET_BACKLOG) < 0)
		return -1;
	*what_r = "chown";
	if (privileged && chown(path, uid, gid) < 0)
		return -1;
	*what_r = "chmod";
	return chmod(path, 0600);
}

int userdb_socket_listen(const char *path, bool privileged, uid_t uid,
			 gid_t gid, struct userdb_socket_id *id_r)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *what = "socket";
	struct stat st;
	int fd;

	id_r->made = false;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_error("event=userdb-socket-failed path=%s error=\"path too "
			  "long for a unix socket\"", path);
		return -1;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (userdb_socket_parent(path) < 0 || userdb_socket_clear(path, &sun) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 ||
	    userdb_socket_bind(fd, path, &sun, privileged, uid, gid, &what) < 0 ||
	    lstat(path, &st) < 0) {
		log_error("event=userdb-socket-failed path=%s error=\"%s: %s\"",
			  path, what, strerror(errno));
		if (fd >= 0)
			close(fd);
		/* Ours only if bind went through (else it may be another's). */
		if (strcmp(what, "socket") != 0 && strcmp(what, "bind") != 0)
			(void)unlink(path);
		return -1;
	}
	id_r->dev = st.st_dev;
	id_r->ino = st.st_ino;
	id_r->made = true;
	log_info("event=userdb-socket path=%s", path);
	return fd;
}

void userdb_socket_unlink(const char *path, const struct userdb_socket_id *id)
{
	struct stat st;

	if (id->made && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == id->dev && st.st_ino == id->ino)
		(void)unlink(path);
}
