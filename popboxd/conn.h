/*
 * conn.h — one client connection: a socket, its buffers and timers, joined
 * to a pop3_session (the protocol core) and carrying out its actions.
 *
 * The same code serves two processes.  In a login process a connection is
 * accepted, does TLS and the AUTHORIZATION state, asks the auth process to
 * verify credentials, and on success is handed over to a mail process
 * (handover.h; a TLS one stays as a relay, relay.h).  In a mail process a
 * connection is adopted from a hand-over, redeems its token with the auth
 * process, opens the maildrop and serves TRANSACTION and UPDATE.
 *
 * Blocking work (opening the maildrop, UPDATE) goes to the job pool; a
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


struct event_base;
struct jobs;

enum conn_role { CONN_ROLE_LOGIN, CONN_ROLE_MAIL };

struct auth_client;
struct conn_limits;
struct handover;

/* What every connection of the process shares, read-only once running. */
struct server_context {
	const struct popboxd_settings *set;
	enum conn_role role;
	struct auth_client *auth;         /* the line to the auth process */
	const char *const *mail_sockets;  /* login: where each mail process listens */
	unsigned int mail_socket_count;
	struct jobs *jobs;                /* mail: the job pool */
	unsigned int preauth_limit;       /* login: this process's pool size */
	struct conn_limits *limits;       /* connection caps, or NULL */
	unsigned int limits_index;        /* this process's column */
	/* Called as connections (and relays) start and end, for the
	   process's count (a retiring login process exits at zero). */
	void (*conn_started)(void *context);
	void (*conn_ended)(void *context);
	void *conn_context;
	struct pop3_config pop3;          /* apop_timestamp is per connection */
	struct maildrop_settings maildrop;
	const char *hostname;
	struct tls_server *tls;           /* NULL: no TLS configured */
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
/* Mail process: takes over fd, the channel of a handed-over client, and
   h->input (freed here). */
void conn_adopt(struct loop *loop, int fd, struct handover *h);

#endif
