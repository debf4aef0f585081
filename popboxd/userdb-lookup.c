/*
 * userdb-lookup.c — a recipient's record from the auth process (see
 * userdb-lookup.h).
 *
 * The blocking client is for popbox-deliver, which handles one message
 * and has nothing else to do while it waits; the event-driven path of the
 * mail processes goes through auth-client.c and only shares the codec.
 * So is the direct read of the passwd-file, which parses only the user's
 * own lines and links none of passdb.c's password code.
 */
#include "userdb-lookup.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "auth-proto.h"
#include "file-read.h"
#include "log.h"
#include "passwd-file.h"
#include "user-policy.h"

#define USERDB_ERROR_MAX 256
/* The request's id on the blocking client's own connection. */
#define USERDB_SOCKET_ID 1

static _Thread_local char userdb_errbuf[USERDB_ERROR_MAX];

static void userdb_request_fill(struct ipc_writer *w, const char *user,
				uint32_t id)
{
	ipc_writer_init(w, AUTH_MSG_USERDB_LOOKUP, id);
	ipc_put_str(w, AUTH_TAG_USER, user);
}

void userdb_lookup_request(struct ipc_writer *w, const char *user)
{
	userdb_request_fill(w, user, 0);
}

void userdb_record_put(struct ipc_writer *w, const struct passdb_user *user)
{
	ipc_put_str(w, AUTH_TAG_USER, user->name);
	ipc_put_u32(w, AUTH_TAG_UID, (uint32_t)user->uid);
	ipc_put_u32(w, AUTH_TAG_GID, (uint32_t)user->gid);
	ipc_put_str(w, AUTH_TAG_HOME, user->home != NULL ? user->home : "");
	if (user->mail != NULL)
		ipc_put_str(w, AUTH_TAG_MAIL, user->mail);
	user_policy_ipc_put(w, &user->policy);
}

int userdb_record_get(const struct ipc_msg *msg, struct passdb_user *user_r,
		      const char **error_r)
{
	char name[USERNAME_MAX + 1], home[USERDB_PATH_MAX];
	char mail[USERDB_PATH_MAX];
	uint32_t uid, gid;
	struct user_policy policy;

	memset(user_r, 0, sizeof(*user_r));
	user_policy_init(&user_r->policy);
	*error_r = "malformed user record";
	if (!ipc_get_str(msg, AUTH_TAG_USER, name, sizeof(name)) ||
	    !username_valid(name, strlen(name)) ||
	    !ipc_get_u32(msg, AUTH_TAG_UID, &uid) ||
	    !ipc_get_u32(msg, AUTH_TAG_GID, &gid) ||
	    !ipc_get_str(msg, AUTH_TAG_HOME, home, sizeof(home)) ||
	    !user_policy_ipc_get(msg, &policy))
		return -1;
	bool has_mail = msg->fields[AUTH_TAG_MAIL].present;
	if (has_mail && !ipc_get_str(msg, AUTH_TAG_MAIL, mail, sizeof(mail)))
		return -1;
	user_r->name = strdup(name);
	user_r->home = strdup(home);
	user_r->mail = has_mail ? strdup(mail) : NULL;
	user_r->uid = (uid_t)uid;
	user_r->gid = (gid_t)gid;
	user_r->policy = policy;
	if (user_r->name == NULL || user_r->home == NULL ||
	    (has_mail && user_r->mail == NULL)) {
		passdb_user_clear(user_r);
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

void userdb_lookup_reply_put(struct ipc_writer *w, uint32_t id,
			     uint32_t status, const struct passdb_user *user)
{
	ipc_writer_init(w, AUTH_MSG_USERDB_REPLY, id);
	ipc_put_u32(w, AUTH_TAG_STATUS, status);
	if (status == AUTH_STATUS_OK)
		userdb_record_put(w, user);
}

enum passdb_result userdb_lookup_reply_get(const struct ipc_msg *reply,
					   struct passdb_user *user_r)
{
	const char *error;
	uint32_t status;

	memset(user_r, 0, sizeof(*user_r));
	user_policy_init(&user_r->policy);
	if (reply == NULL || reply->type != AUTH_MSG_USERDB_REPLY ||
	    !ipc_get_u32(reply, AUTH_TAG_STATUS, &status))
		return PASSDB_TEMPFAIL;
	if (status == AUTH_STATUS_FAIL)
		return PASSDB_FAIL;
	if (status != AUTH_STATUS_OK ||
	    userdb_record_get(reply, user_r, &error) < 0)
		return PASSDB_TEMPFAIL;
	return PASSDB_OK;
}

/* ---- the blocking client ------------------------------------------------ */

static const char *userdb_errno_text(const char *what, int err)
{
	char eb[128];

	snprintf(userdb_errbuf, sizeof(userdb_errbuf), "%s: %s", what,
		 strerror_r(err, eb, sizeof(eb)));
	return userdb_errbuf;
}

/*
 * Connects to path; the listener must be root (popboxd's master, which
 * made the socket) or ourselves (popboxd not started as root), so that a
 * socket planted by someone else is never believed.
 */
static int userdb_connect(const char *path, const char **error_r)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	size_t len = strlen(path);
	int fd;

	if (len >= sizeof(sun.sun_path)) {
		*error_r = "userdb_socket path is too long";
		return -1;
	}
	memcpy(sun.sun_path, path, len + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*error_r = userdb_errno_text("socket", errno);
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		*error_r = userdb_errno_text("connect to userdb_socket", errno);
		close(fd);
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		*error_r = "userdb_socket is not popboxd's (wrong owner)";
		close(fd);
		return -1;
	}
	return fd;
}

static long userdb_ms_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000 +
	       (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

/* Waits for one packet into buf (IPC_MSG_MAX bytes); its length or -1. */
static ssize_t userdb_receive(int fd, uint8_t *buf, int timeout_ms,
			      const char **error_r)
{
	struct timespec deadline;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int passed_fd, r;
	ssize_t n;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	for (;;) {
		long left = userdb_ms_left(&deadline);
		if (left <= 0) {
			*error_r = "no answer from the auth process in time";
			return -1;
		}
		r = poll(&pfd, 1, (int)(left > 60000 ? 60000 : left));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			*error_r = userdb_errno_text("poll", errno);
			return -1;
		}
		if (r > 0)
			break;
	}
	n = ipc_recv(fd, buf, IPC_MSG_MAX, &passed_fd);
	if (passed_fd >= 0)
		close(passed_fd); /* none expected */
	if (n < 0)
		*error_r = userdb_errno_text("receive", errno);
	else if (n == 0)
		*error_r = "the auth process closed the connection";
	return n > 0 ? n : -1;
}

/* Sends the request, receives and decodes the reply. */
static enum passdb_result userdb_ask(int fd, const char *user, int timeout_ms,
				     struct passdb_user *user_r,
				     const char **error_r)
{
	struct ipc_writer *w = malloc(sizeof(*w));
	uint8_t *buf = malloc(IPC_MSG_MAX);
	enum passdb_result result = PASSDB_TEMPFAIL;
	struct ipc_msg msg;
	ssize_t n;

	if (w == NULL || buf == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	userdb_request_fill(w, user, USERDB_SOCKET_ID);
	if (w->overflow || ipc_send(fd, w->buf, w->len, -1) != (ssize_t)w->len) {
		*error_r = userdb_errno_text("send", errno);
		goto out;
	}
	n = userdb_receive(fd, buf, timeout_ms, error_r);
	if (n < 0)
		goto out;
	if (ipc_parse(buf, (size_t)n, &msg) < 0 || msg.id != USERDB_SOCKET_ID) {
		*error_r = "malformed reply from the auth process";
		goto out;
	}
	result = userdb_lookup_reply_get(&msg, user_r);
	if (result == PASSDB_TEMPFAIL)
		*error_r = "the auth process could not look the user up";
out:
	free(w);
	free(buf);
	return result;
}

enum passdb_result userdb_lookup_socket(const char *path, const char *user,
					int timeout_ms,
					struct passdb_user *user_r,
					const char **error_r)
{
	enum passdb_result result;
	int fd;

	memset(user_r, 0, sizeof(*user_r));
	user_policy_init(&user_r->policy);
	fd = userdb_connect(path, error_r);
	if (fd < 0)
		return PASSDB_TEMPFAIL;
	result = userdb_ask(fd, user, timeout_ms, user_r, error_r);
	close(fd);
	return result;
}

/* ---- the passwd-file, read directly -------------------------------------- */

/* Finds user in the file's text; logs a skipped line of user's. */
static enum passdb_result userdb_file_find(const char *path, const char *text,
					   size_t len, const char *user,
					   struct passdb_user *user_r,
					   const char **error_r)
{
	struct passwd_file_skipped skipped;
	struct passwd_file_entry entry;
	enum passdb_result result = PASSDB_FAIL;
	int r = passwd_file_find(text, len, user, &entry, &skipped);

	if (skipped.lineno != 0)
		log_warn("passdb file=%s line=%u: %s, line ignored", path,
			 skipped.lineno, passwd_file_strerror(skipped.error));
	if (r < 0) {
		*error_r = "out of memory";
		return PASSDB_TEMPFAIL;
	}
	if (r > 0) {
		result = PASSDB_OK;
		if (passdb_user_from_entry(&entry, user_r) < 0) {
			*error_r = "out of memory";
			result = PASSDB_TEMPFAIL;
		}
	}
	passwd_file_entry_free(&entry);
	return result;
}

enum passdb_result userdb_lookup_file(const char *path, const char *user,
				      struct passdb_user *user_r,
				      const char **error_r)
{
	enum passdb_result result;
	const char *error;
	char *text;
	size_t len;

	memset(user_r, 0, sizeof(*user_r));
	user_policy_init(&user_r->policy);
	/* Not O_NOFOLLOW: admins may symlink the file (as passdb.c). */
	if (file_read_all(AT_FDCWD, path, 0, PASSWD_FILE_SIZE_MAX, &text, &len,
			  NULL, &error) < 0) {
		if (errno == EFBIG)
			error = "file larger than 64 MiB";
		snprintf(userdb_errbuf, sizeof(userdb_errbuf), "%s: %s", path,
			 error);
		*error_r = userdb_errbuf;
		return PASSDB_TEMPFAIL;
	}
	result = userdb_file_find(path, text, len, user, user_r, error_r);
	explicit_bzero(text, len);
	free(text);
	return result;
}
