/*
 * conn.h — one client connection: a socket, its buffers and timers, joined
 * to a pop3_session (the protocol core) and carrying out its actions.
 *
 * A connection lives on one loop thread for its whole life.  Blocking work
 * (password hashing, opening the maildrop, UPDATE) goes to the job pool; a
 * connection with a job in flight is never freed before the job returns.
 */
#ifndef POPBOX_CONN_H
#define POPBOX_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "maildrop.h"
#include "netmask.h"
#include "passdb.h"
#include "pop3-session.h"
#include "settings.h"
#include "tls.h"

struct auth_penalty;

struct event_base;
struct jobs;

/* What every connection of the process shares, read-only once running. */
struct server_context {
	const struct popboxd_settings *set;
	struct passdb *passdb;
	struct jobs *jobs;
	struct pop3_config pop3;          /* apop_timestamp is per connection */
	struct maildrop_settings maildrop;
	const char *hostname;
	struct tls_server *tls;           /* NULL: no TLS configured */
	struct auth_penalty *penalty;     /* failed logins per address */
	struct netmask_list trusted;      /* cleartext logins allowed from */
};

/* Size of the buffer a message is read through while streamed. */
#define LOOP_SCRATCH_SIZE 65536

/* One event loop thread. */
struct loop {
	struct server_context *ctx;
	struct event_base *base;
	unsigned int index;
	uint8_t scratch[LOOP_SCRATCH_SIZE];
};

/* Takes over fd, a freshly accepted socket, on loop; tls: the listener
   is an implicit-TLS one (the connection starts with a handshake). */
void conn_accept(struct loop *loop, int fd, const struct sockaddr *addr,
		 socklen_t addrlen, bool tls);

#endif
