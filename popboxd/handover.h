/*
 * handover.h — a logged-in connection passing from its login process to a
 * mail process.
 *
 * The login process connects a local stream socket to the mail processes'
 * listening socket (whichever mail process accepts, takes it) and sends
 * one length-prefixed HANDOVER message (auth-proto.h).  A plain client's
 * socket goes along as a descriptor; a TLS client stays in the login
 * process, and this stream then carries its decrypted bytes (relay.h).
 *
 * The mail process trusts nothing in the message: the user comes from
 * redeeming the token with the auth process, not from here.
 */
#ifndef POPBOX_HANDOVER_H
#define POPBOX_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "auth-proto.h"

struct event_base;

struct handover {
	uint8_t token[AUTH_TOKEN_LEN];
	char rip[64];
	char session[32];
	bool tls;
	uint8_t *input;         /* what the client sent after its login */
	size_t input_len;
};

/*
 * Login side.  Sends h to a mail process; client_fd goes along unless it
 * is -1 (TLS).  Returns the connected stream (the TLS relay's mail side),
 * or for a plain client closes it and returns 0; -1 on failure.
 */
int handover_send(const char *socket_name, int client_fd,
		  const struct handover *h);

/* Mail side: fd is the client's channel (its socket, or for TLS the
   stream from the login process); h->input is the callee's to free. */
typedef void handover_fn(int fd, struct handover *h, void *context);

struct handover_listener;

/* Accepts hand-overs on listen_fd.  With uid_checks, only from login_uid. */
struct handover_listener *handover_listen(struct event_base *base,
					  int listen_fd, bool uid_checks,
					  uid_t login_uid, handover_fn *cb,
					  void *context);

#endif
