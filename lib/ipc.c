/*
 * ipc.c — messages between popboxd's processes (see ipc.h).
 */
#include "ipc.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

void ipc_writer_init(struct ipc_writer *w, uint16_t type, uint32_t id)
{
	put_be16(w->buf, type);
	put_be32(w->buf + 2, id);
	w->len = IPC_HEADER_LEN;
	w->overflow = false;
}

void ipc_put(struct ipc_writer *w, uint8_t tag, const void *data, size_t len)
{
	if (w->overflow || tag >= IPC_TAGS_MAX || len > UINT16_MAX ||
	    len > sizeof(w->buf) - w->len - 3) {
		w->overflow = true;
		return;
	}
	w->buf[w->len] = tag;
	put_be16(w->buf + w->len + 1, (uint16_t)len);
	if (len > 0)
		memcpy(w->buf + w->len + 3, data, len);
	w->len += 3 + len;
}

void ipc_put_str(struct ipc_writer *w, uint8_t tag, const char *s)
{
	ipc_put(w, tag, s, strlen(s));
}

void ipc_put_u32(struct ipc_writer *w, uint8_t tag, uint32_t value)
{
	uint8_t b[4];
	put_be32(b, value);
	ipc_put(w, tag, b, sizeof(b));
}

int ipc_parse(const uint8_t *buf, size_t len, struct ipc_msg *msg_r)
{
	size_t pos = IPC_HEADER_LEN;

	memset(msg_r, 0, sizeof(*msg_r));
	if (len < IPC_HEADER_LEN || len > IPC_MSG_MAX)
		return -1;
	msg_r->type = get_be16(buf);
	msg_r->id = get_be32(buf + 2);
	while (pos < len) {
		if (len - pos < 3)
			return -1;
		uint8_t tag = buf[pos];
		uint16_t flen = get_be16(buf + pos + 1);
		pos += 3;
		if (tag >= IPC_TAGS_MAX || flen > len - pos ||
		    msg_r->fields[tag].present)
			return -1;
		msg_r->fields[tag] = (struct ipc_field){ buf + pos, flen, true };
		pos += flen;
	}
	return 0;
}

static const struct ipc_field *field(const struct ipc_msg *msg, uint8_t tag)
{
	if (tag >= IPC_TAGS_MAX || !msg->fields[tag].present)
		return NULL;
	return &msg->fields[tag];
}

bool ipc_get_str(const struct ipc_msg *msg, uint8_t tag, char *out, size_t size)
{
	const struct ipc_field *f = field(msg, tag);

	if (f == NULL || size == 0 || f->len >= size ||
	    (f->len > 0 && memchr(f->data, '\0', f->len) != NULL))
		return false;
	if (f->len > 0)
		memcpy(out, f->data, f->len);
	out[f->len] = '\0';
	return true;
}

bool ipc_get_u32(const struct ipc_msg *msg, uint8_t tag, uint32_t *value_r)
{
	const struct ipc_field *f = field(msg, tag);

	if (f == NULL || f->len != 4)
		return false;
	*value_r = get_be32(f->data);
	return true;
}

bool ipc_get_fixed(const struct ipc_msg *msg, uint8_t tag, void *out, size_t len)
{
	const struct ipc_field *f = field(msg, tag);

	if (f == NULL || f->len != len)
		return false;
	if (len > 0)
		memcpy(out, f->data, len);
	return true;
}

ssize_t ipc_send(int sock, const void *buf, size_t len, int pass_fd)
{
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;

	if (pass_fd >= 0) {
		memset(&control, 0, sizeof(control));
		mh.msg_control = control.buf;
		mh.msg_controllen = sizeof(control.buf);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
	}
	ssize_t n;
	do {
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n;
}

/* Closes every descriptor in the control data except the first, which
   is returned (or -1). */
static int take_fds(struct msghdr *mh)
{
	int kept = -1;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm != NULL;
	     cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(0))
			continue;
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (kept < 0)
				kept = fd;
			else
				close(fd);
		}
	}
	return kept;
}

ssize_t ipc_recv(int sock, void *buf, size_t size, int *fd_r)
{
	struct iovec iov = { buf, size };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} control;
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = control.buf, .msg_controllen = sizeof(control.buf),
	};
	ssize_t n;

	*fd_r = -1;
	do {
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return n;
	int fd = take_fds(&mh);
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		if (fd >= 0)
			close(fd);
		errno = EMSGSIZE;
		return -1;
	}
	*fd_r = fd;
	return n;
}

/* The address of an abstract name; 0 if the name does not fit. */
static socklen_t abstract_addr(const char *name, struct sockaddr_un *sun)
{
	size_t nlen = strlen(name);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (nlen + 1 > sizeof(sun->sun_path))
		return 0;
	memcpy(sun->sun_path + 1, name, nlen); /* sun_path[0] stays NUL */
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + nlen);
}

int ipc_connect_abstract(const char *name, int type)
{
	struct sockaddr_un sun;
	socklen_t len = abstract_addr(name, &sun);
	int fd = len == 0 ? -1 : socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, len) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int ipc_listen_abstract(const char *name, int type)
{
	struct sockaddr_un sun;
	socklen_t len = abstract_addr(name, &sun);
	int fd = len == 0 ? -1 : socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sun, len) < 0 || listen(fd, 1024) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}
