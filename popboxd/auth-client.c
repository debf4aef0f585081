/*
 * auth-client.c — the line to the auth process (auth-client.h).
 *
 * Pending requests live in a fixed slot table; a request id is the slot
 * index in its low 16 bits and a generation count above, so a late reply
 * to a cancelled or failed request finds no owner and is dropped.
 */
#include "auth-client.h"

#include <errno.h>
#include <event2/event.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc-conn.h"
#include "log.h"

#define AUTH_CLIENT_SLOTS 65536

struct auth_slot {
	auth_reply_fn *cb;     /* NULL: free */
	void *context;
	uint16_t generation;
};

struct auth_client {
	struct event_base *base;
	char name[108];
	struct ipc_conn *conn;
	struct auth_slot *slots;
	uint32_t next;          /* where the search for a free slot starts */
	uint32_t pending;
};

static void client_fail_all(struct auth_client *ac)
{
	for (uint32_t i = 0; i < AUTH_CLIENT_SLOTS && ac->pending > 0; i++) {
		struct auth_slot *s = &ac->slots[i];
		if (s->cb == NULL)
			continue;
		auth_reply_fn *cb = s->cb;
		void *context = s->context;
		s->cb = NULL;
		s->generation++;
		ac->pending--;
		cb(NULL, context);
	}
}

static void client_closed(struct ipc_conn *conn, void *context)
{
	struct auth_client *ac = context;

	log_warn("event=auth-connection-lost pending=%u", ac->pending);
	ipc_conn_free(conn);
	ac->conn = NULL;
	client_fail_all(ac);
}

static void client_packet(struct ipc_conn *conn, const uint8_t *buf, size_t len,
			  void *context)
{
	struct auth_client *ac = context;
	struct ipc_msg msg;
	(void)conn;

	if (ipc_parse(buf, len, &msg) < 0) {
		log_error("event=auth-protocol-error error=\"unparsable reply\"");
		return;
	}
	struct auth_slot *s = &ac->slots[msg.id & 0xffff];
	if (s->cb == NULL || s->generation != (msg.id >> 16))
		return; /* cancelled, or a reply to nothing */
	auth_reply_fn *cb = s->cb;
	void *cb_context = s->context;
	s->cb = NULL;
	s->generation++;
	ac->pending--;
	cb(&msg, cb_context);
}

static int client_connect(struct auth_client *ac)
{
	int fd = ipc_connect_abstract(ac->name, SOCK_SEQPACKET);

	if (fd < 0) {
		log_warn("event=auth-connect-failed error=\"%s\"", strerror(errno));
		return -1;
	}
	ac->conn = ipc_conn_new(ac->base, fd, client_packet, client_closed, ac);
	return ac->conn != NULL ? 0 : -1;
}

struct auth_client *auth_client_new(struct event_base *base,
				    const char *socket_name)
{
	struct auth_client *ac = calloc(1, sizeof(*ac));

	if (ac == NULL)
		return NULL;
	ac->base = base;
	snprintf(ac->name, sizeof(ac->name), "%s", socket_name);
	ac->slots = calloc(AUTH_CLIENT_SLOTS, sizeof(*ac->slots));
	if (ac->slots == NULL) {
		free(ac);
		return NULL;
	}
	return ac;
}

void auth_client_free(struct auth_client **client)
{
	struct auth_client *ac = *client;

	if (ac == NULL)
		return;
	if (ac->conn != NULL)
		ipc_conn_free(ac->conn);
	free(ac->slots);
	free(ac);
	*client = NULL;
}

static int client_send(struct auth_client *ac, struct ipc_writer *w)
{
	if (w->overflow)
		return -1;
	if (ac->conn == NULL && client_connect(ac) < 0)
		return -1;
	return ipc_conn_send(ac->conn, w->buf, w->len);
}

uint32_t auth_client_request(struct auth_client *ac, struct ipc_writer *w,
			     auth_reply_fn *cb, void *context)
{
	if (ac->pending >= AUTH_CLIENT_SLOTS - 1)
		return 0;
	uint32_t i = ac->next;
	while (ac->slots[i].cb != NULL)
		i = (i + 1) % AUTH_CLIENT_SLOTS;
	ac->next = (i + 1) % AUTH_CLIENT_SLOTS;
	struct auth_slot *s = &ac->slots[i];
	uint32_t id = ((uint32_t)s->generation << 16) | i;
	/* Never 0: that is "no handle". */
	if (id == 0) {
		s->generation++;
		id = ((uint32_t)s->generation << 16) | i;
	}
	w->buf[2] = (uint8_t)(id >> 24);
	w->buf[3] = (uint8_t)(id >> 16);
	w->buf[4] = (uint8_t)(id >> 8);
	w->buf[5] = (uint8_t)id;
	if (client_send(ac, w) < 0)
		return 0;
	s->cb = cb;
	s->context = context;
	ac->pending++;
	return id;
}

void auth_client_cancel(struct auth_client *ac, uint32_t handle)
{
	struct auth_slot *s = &ac->slots[handle & 0xffff];

	if (handle == 0 || s->cb == NULL || s->generation != (handle >> 16))
		return;
	s->cb = NULL;
	s->generation++;
	ac->pending--;
}

void auth_client_notify(struct auth_client *ac, struct ipc_writer *w)
{
	(void)client_send(ac, w);
}
