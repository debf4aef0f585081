/*
 * userdb-socket.c — the filesystem socket for popbox-deliver's lookups
 * (see userdb-socket.h).  Runs in the master, as root or as the user who
 * started popboxd, once at start-up and once at stop.
 */
#include "userdb-socket.h"

#include <sys/socket.h>

#include "log.h"

/* Connections waiting to be accepted: deliveries come in bursts. */
#define USERDB_SOCKET_BACKLOG 128

int userdb_socket_listen(const char *path, bool privileged, uid_t uid,
			 gid_t gid, struct unix_listen_id *id_r)
{
	const struct unix_listen_params params = {
		.type = SOCK_SEQPACKET,
		.mode = 0600,
		.set_owner = privileged,
		.uid = uid,
		.gid = gid,
		.backlog = USERDB_SOCKET_BACKLOG,
	};
	const char *error;
	int fd = unix_listen(path, &params, id_r, &error);

	if (fd < 0) {
		log_error("event=userdb-socket-failed path=%s error=\"%s\"",
			  path, error);
		return -1;
	}
	log_info("event=userdb-socket path=%s", path);
	return fd;
}

void userdb_socket_unlink(const char *path, const struct unix_listen_id *id)
{
	unix_listen_unlink(path, id);
}
