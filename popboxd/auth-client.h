/*
 * auth-client.h — a login or mail process's line to the auth process.
 *
 * One SOCK_SEQPACKET connection, made on first use and again after the
 * auth process restarts.  Each request gets exactly one callback: the
 * reply, or NULL when the auth process could not answer (it died, or could
 * not be reached): the caller then answers [SYS/TEMP].  A request can be
 * cancelled (its callback then never runs), e.g. when the client left.
 */
#ifndef POPBOX_AUTH_CLIENT_H
#define POPBOX_AUTH_CLIENT_H

#include <stdint.h>

#include "ipc.h"

struct event_base;
struct auth_client;

typedef void auth_reply_fn(const struct ipc_msg *reply, void *context);

/* socket_name is an abstract AF_UNIX name (without the leading NUL). */
struct auth_client *auth_client_new(struct event_base *base,
				    const char *socket_name);
void auth_client_free(struct auth_client **client);

/*
 * Sends the message in w (its id is set here) and arranges for cb.
 * Returns a handle for auth_client_cancel(), or 0 when the request could
 * not be sent at all (then cb is never called).
 */
uint32_t auth_client_request(struct auth_client *client, struct ipc_writer *w,
			     auth_reply_fn *cb, void *context);
void auth_client_cancel(struct auth_client *client, uint32_t handle);
/* Sends a message that has no reply (AUTH_MSG_FORGET); best effort. */
void auth_client_notify(struct auth_client *client, struct ipc_writer *w);

#endif
