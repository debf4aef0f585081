/*
 * handover.c — passing a logged-in connection to a mail process
 * (see handover.h).
 */
#include "handover.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc.h"
#include "log.h"

/* A login process that starts a hand-over and stalls is dropped. */
#define HANDOVER_READ_TIMEOUT_S 10

/* After EMFILE, accepting pauses this long instead of spinning. */
#define HANDOVER_EMFILE_PAUSE_MS 100

struct handover_listener {
	struct event_base *base;
	struct evconnlistener *ev;
	struct event *resume;
	bool uid_checks;
	uid_t login_uid;
	handover_fn *cb;
	void *context;
};

/* One hand-over being read. */
struct handover_in {
	struct handover_listener *hl;
	int fd;
	int passed_fd;
	struct event *ev;
	size_t have;
	uint8_t buf[4 + IPC_MSG_MAX];
};

static struct ipc_writer handover_writer;
static uint8_t handover_frame[4 + IPC_MSG_MAX];

int handover_send(const char *socket_name, int client_fd,
		  const struct handover *h)
{
	struct ipc_writer *w = &handover_writer;

	ipc_writer_init(w, AUTH_MSG_HANDOVER, 0);
	ipc_put(w, AUTH_TAG_TOKEN, h->token, sizeof(h->token));
	ipc_put_str(w, AUTH_TAG_RIP, h->rip);
	ipc_put_str(w, AUTH_TAG_SESSION, h->session);
	if (h->tls)
		ipc_put(w, AUTH_TAG_TLS, "", 0);
	ipc_put(w, AUTH_TAG_INPUT, h->input, h->input_len);
	if (w->overflow)
		return -1;
	int fd = ipc_connect_abstract(socket_name, SOCK_STREAM);
	if (fd < 0) {
		log_error("event=handover-failed error=\"connect: %s\"", strerror(errno));
		return -1;
	}
	handover_frame[0] = (uint8_t)(w->len >> 24);
	handover_frame[1] = (uint8_t)(w->len >> 16);
	handover_frame[2] = (uint8_t)(w->len >> 8);
	handover_frame[3] = (uint8_t)w->len;
	memcpy(handover_frame + 4, w->buf, w->len);
	ssize_t n = ipc_send(fd, handover_frame, 4 + w->len, client_fd);
	if (n != (ssize_t)(4 + w->len)) {
		log_error("event=handover-failed error=\"send: %s\"",
			  n < 0 ? strerror(errno) : "short write");
		close(fd);
		return -1;
	}
	if (client_fd >= 0) {
		close(fd);
		return 0;
	}
	return fd;
}

static void handover_in_free(struct handover_in *in)
{
	if (in->ev != NULL)
		event_free(in->ev);
	if (in->fd >= 0)
		close(in->fd);
	if (in->passed_fd >= 0)
		close(in->passed_fd);
	free(in);
}

/* What a login process names goes into log lines as is: the address must
   be a numeric IPv4/IPv6 address and the session id hex digits and '-',
   or a compromised login process could forge log records. */
static bool handover_names_ok(const struct handover *h)
{
	struct in6_addr a6;
	struct in_addr a4;

	if (inet_pton(AF_INET, h->rip, &a4) != 1 &&
	    inet_pton(AF_INET6, h->rip, &a6) != 1)
		return false;
	if (h->session[0] == '\0')
		return false;
	for (const char *p = h->session; *p != '\0'; p++) {
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-'))
			return false;
	}
	return true;
}

/* The whole message is in: check it and give the connection away. */
static void handover_in_done(struct handover_in *in, size_t msg_len)
{
	struct ipc_msg msg;
	struct handover h;

	memset(&h, 0, sizeof(h));
	if (ipc_parse(in->buf + 4, msg_len, &msg) < 0 ||
	    msg.type != AUTH_MSG_HANDOVER ||
	    !ipc_get_fixed(&msg, AUTH_TAG_TOKEN, h.token, sizeof(h.token)) ||
	    !ipc_get_str(&msg, AUTH_TAG_RIP, h.rip, sizeof(h.rip)) ||
	    !ipc_get_str(&msg, AUTH_TAG_SESSION, h.session, sizeof(h.session)) ||
	    !msg.fields[AUTH_TAG_INPUT].present || !handover_names_ok(&h)) {
		log_error("event=handover-refused error=\"malformed\"");
		handover_in_free(in);
		return;
	}
	h.tls = msg.fields[AUTH_TAG_TLS].present;
	/* A plain client comes as a descriptor; a TLS one is this stream. */
	if (h.tls != (in->passed_fd < 0)) {
		log_error("event=handover-refused error=\"descriptor mismatch\"");
		handover_in_free(in);
		return;
	}
	/* Bytes past the message are the relay's first client bytes. */
	size_t extra = in->have - 4 - msg_len;
	const struct ipc_field *f = &msg.fields[AUTH_TAG_INPUT];
	h.input_len = f->len + extra;
	h.input = malloc(h.input_len + 1);
	if (h.input == NULL) {
		handover_in_free(in);
		return;
	}
	memcpy(h.input, f->data, f->len);
	memcpy(h.input + f->len, in->buf + 4 + msg_len, extra);
	int fd;
	if (h.tls) {
		fd = in->fd;
		in->fd = -1;
	} else {
		fd = in->passed_fd;
		in->passed_fd = -1;
	}
	struct handover_listener *hl = in->hl;
	handover_in_free(in);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	hl->cb(fd, &h, hl->context);
}

static void handover_in_read(evutil_socket_t fd, short what, void *arg)
{
	struct handover_in *in = arg;

	if (what & EV_TIMEOUT) {
		log_error("event=handover-refused error=\"timeout\"");
		handover_in_free(in);
		return;
	}
	int passed;
	ssize_t n = ipc_recv(fd, in->buf + in->have, sizeof(in->buf) - in->have,
			     &passed);
	if (passed >= 0) {
		if (in->passed_fd >= 0)
			close(passed);
		else
			in->passed_fd = passed;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		handover_in_free(in);
		return;
	}
	in->have += (size_t)n;
	if (in->have < 4)
		return;
	size_t need = ((size_t)in->buf[0] << 24) | ((size_t)in->buf[1] << 16) |
		      ((size_t)in->buf[2] << 8) | in->buf[3];
	if (need > IPC_MSG_MAX) {
		log_error("event=handover-refused error=\"too long\"");
		handover_in_free(in);
		return;
	}
	if (in->have >= 4 + need)
		handover_in_done(in, need);
}

static void handover_accept(struct evconnlistener *l, evutil_socket_t fd,
			    struct sockaddr *addr, int len, void *arg)
{
	struct handover_listener *hl = arg;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	(void)l;
	(void)addr;
	(void)len;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (hl->uid_checks && cred.uid != hl->login_uid)) {
		log_warn("event=handover-refused error=\"not a login process\"");
		close(fd);
		return;
	}
	struct handover_in *in = malloc(sizeof(*in));
	if (in == NULL) {
		close(fd);
		return;
	}
	in->hl = hl;
	in->fd = fd;
	in->passed_fd = -1;
	in->have = 0;
	in->ev = event_new(hl->base, fd, EV_READ | EV_PERSIST, handover_in_read, in);
	struct timeval tv = { HANDOVER_READ_TIMEOUT_S, 0 };
	if (in->ev == NULL || event_add(in->ev, &tv) < 0)
		handover_in_free(in);
}

static void handover_resume(evutil_socket_t fd, short what, void *arg)
{
	struct handover_listener *hl = arg;
	(void)fd;
	(void)what;
	evconnlistener_enable(hl->ev);
}

/* Out of descriptors: pause, log once per pause, do not spin. */
static void handover_accept_error(struct evconnlistener *ev, void *arg)
{
	struct handover_listener *hl = arg;
	int error = EVUTIL_SOCKET_ERROR();

	if (error != EMFILE && error != ENFILE && error != ENOBUFS &&
	    error != ENOMEM)
		return;
	log_warn("event=handover-paused error=\"%s\"", strerror(error));
	evconnlistener_disable(ev);
	struct timeval tv = { 0, HANDOVER_EMFILE_PAUSE_MS * 1000 };
	evtimer_add(hl->resume, &tv);
}

struct handover_listener *handover_listen(struct event_base *base,
					  int listen_fd, bool uid_checks,
					  uid_t login_uid, handover_fn *cb,
					  void *context)
{
	struct handover_listener *hl = calloc(1, sizeof(*hl));

	if (hl == NULL)
		return NULL;
	hl->base = base;
	hl->uid_checks = uid_checks;
	hl->login_uid = login_uid;
	hl->cb = cb;
	hl->context = context;
	hl->resume = evtimer_new(base, handover_resume, hl);
	hl->ev = evconnlistener_new(base, handover_accept, hl,
				    LEV_OPT_CLOSE_ON_EXEC, 0, listen_fd);
	if (hl->ev == NULL || hl->resume == NULL) {
		if (hl->resume != NULL)
			event_free(hl->resume);
		free(hl);
		return NULL;
	}
	evconnlistener_set_error_cb(hl->ev, handover_accept_error);
	return hl;
}
