/*
 * relay.h — after a TLS client has logged in, its login process keeps the
 * TLS session and relays the plaintext to and from the mail process over
 * a local stream socket (the mail process never sees TLS keys).
 *
 * Each direction is bounded: reading from one side stops while more than
 * RELAY_HIGH bytes wait for the other.  When either side ends, what is
 * already buffered for the other side is delivered, then both close (the
 * client with a TLS close_notify).
 */
#ifndef POPBOX_RELAY_H
#define POPBOX_RELAY_H

struct bufferevent;
struct event_base;

#define RELAY_HIGH (256 * 1024)

/* Called when a relay ends, for the owner's count of open connections. */
typedef void relay_end_fn(void *context);

/* Takes over client (a TLS bufferevent; its callbacks are replaced) and
   mail_fd.  Returns 0, or -1 (both freed/closed) when out of memory. */
int relay_start(struct event_base *base, struct bufferevent *client,
		int mail_fd, unsigned int write_timeout_s, relay_end_fn *on_end,
		void *context);

#endif
