/*
 * ipc-conn.c — a SOCK_SEQPACKET connection on a libevent loop (ipc-conn.h).
 */
#include "ipc-conn.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc.h"

/* Packets read in one go before other events get a turn. */
#define IPC_CONN_READ_BURST 64

struct ipc_packet {
	struct ipc_packet *next;
	size_t len;
	uint8_t data[];
};

struct ipc_conn {
	int fd;
	struct event *read_ev;
	struct event *write_ev;
	struct event *closed_ev;        /* runs on_closed from the loop */
	ipc_conn_packet_fn *on_packet;
	ipc_conn_closed_fn *on_closed;
	void *context;
	struct ipc_packet *head, *tail;
	size_t queued;
	bool closed;
	bool in_callback;
	bool free_pending;
};

/* One receive buffer per process: loops are single-threaded. */
static uint8_t ipc_conn_buf[IPC_MSG_MAX];

static void ipc_conn_destroy(struct ipc_conn *c)
{
	while (c->head != NULL) {
		struct ipc_packet *p = c->head;
		c->head = p->next;
		free(p);
	}
	event_free(c->read_ev);
	event_free(c->write_ev);
	if (c->closed_ev != NULL)
		event_free(c->closed_ev);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* Marks the connection dead; on_closed runs later, from the loop, so that
   no caller of send() ever sees its conn freed under it. */
static void ipc_conn_fail(struct ipc_conn *c)
{
	if (c->closed)
		return;
	c->closed = true;
	event_del(c->read_ev);
	event_del(c->write_ev);
	event_active(c->closed_ev, EV_TIMEOUT, 0);
}

static void ipc_conn_closed(evutil_socket_t fd, short what, void *arg)
{
	struct ipc_conn *c = arg;
	(void)fd;
	(void)what;
	if (c->free_pending) {
		ipc_conn_destroy(c);
		return;
	}
	c->in_callback = true;
	c->on_closed(c, c->context);
	c->in_callback = false;
	if (c->free_pending)
		ipc_conn_destroy(c);
}

static void ipc_conn_read(evutil_socket_t fd, short what, void *arg)
{
	struct ipc_conn *c = arg;
	(void)what;

	c->in_callback = true;
	for (int i = 0; i < IPC_CONN_READ_BURST && !c->closed && !c->free_pending; i++) {
		int passed;
		ssize_t n = ipc_recv(fd, ipc_conn_buf, sizeof(ipc_conn_buf), &passed);
		if (passed >= 0)
			close(passed); /* nobody sends descriptors here */
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			ipc_conn_fail(c);
			break;
		}
		c->on_packet(c, ipc_conn_buf, (size_t)n, c->context);
	}
	c->in_callback = false;
	if (c->free_pending)
		ipc_conn_destroy(c);
}

static void ipc_conn_flush(struct ipc_conn *c)
{
	while (c->head != NULL) {
		struct ipc_packet *p = c->head;
		ssize_t n = send(c->fd, p->data, p->len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
			event_add(c->write_ev, NULL);
			return;
		}
		if (n < 0) {
			ipc_conn_fail(c);
			return;
		}
		c->head = p->next;
		if (c->head == NULL)
			c->tail = NULL;
		c->queued--;
		free(p);
	}
}

static void ipc_conn_write(evutil_socket_t fd, short what, void *arg)
{
	struct ipc_conn *c = arg;
	(void)fd;
	(void)what;
	ipc_conn_flush(c);
}

struct ipc_conn *ipc_conn_new(struct event_base *base, int fd,
			      ipc_conn_packet_fn *on_packet,
			      ipc_conn_closed_fn *on_closed, void *context)
{
	struct ipc_conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->on_packet = on_packet;
	c->on_closed = on_closed;
	c->context = context;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	c->read_ev = event_new(base, fd, EV_READ | EV_PERSIST, ipc_conn_read, c);
	c->write_ev = event_new(base, fd, EV_WRITE, ipc_conn_write, c);
	c->closed_ev = event_new(base, -1, 0, ipc_conn_closed, c);
	if (c->read_ev == NULL || c->write_ev == NULL || c->closed_ev == NULL) {
		ipc_conn_destroy(c);
		return NULL;
	}
	event_add(c->read_ev, NULL);
	return c;
}

int ipc_conn_send(struct ipc_conn *c, const void *buf, size_t len)
{
	if (c->closed || c->queued >= IPC_CONN_QUEUE_MAX)
		return -1;
	struct ipc_packet *p = malloc(sizeof(*p) + len);
	if (p == NULL)
		return -1;
	p->next = NULL;
	p->len = len;
	memcpy(p->data, buf, len);
	if (c->tail != NULL)
		c->tail->next = p;
	else
		c->head = p;
	c->tail = p;
	c->queued++;
	/* Try at once unless already waiting for the socket to drain. */
	if (!event_pending(c->write_ev, EV_WRITE, NULL))
		ipc_conn_flush(c);
	return c->closed ? -1 : 0;
}

int ipc_conn_fd(const struct ipc_conn *c)
{
	return c->fd;
}

void ipc_conn_free(struct ipc_conn *c)
{
	if (c == NULL)
		return;
	c->free_pending = true;
	if (c->in_callback)
		return; /* the running callback destroys it on return */
	if (c->closed && event_pending(c->closed_ev, EV_TIMEOUT, NULL)) {
		/* An on_closed is scheduled: never call it for a freed conn. */
		event_del(c->closed_ev);
	}
	ipc_conn_destroy(c);
}
