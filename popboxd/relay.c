/*
 * relay.c — plaintext relay between a TLS client and its mail process
 * (see relay.h).
 */
#include "relay.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct relay {
	struct bufferevent *client;
	struct bufferevent *mail;
	relay_end_fn *on_end;
	void *context;
	bool closing;       /* one side ended: flushing to the other */
};

static void relay_free(struct relay *r)
{
	SSL *ssl = bufferevent_openssl_get_ssl(r->client);

	if (ssl != NULL && r->closing)
		SSL_shutdown(ssl);
	bufferevent_free(r->client);
	bufferevent_free(r->mail);
	if (r->on_end != NULL)
		r->on_end(r->context);
	free(r);
}

static struct bufferevent *relay_other(struct relay *r, struct bufferevent *bev)
{
	return bev == r->client ? r->mail : r->client;
}

static void relay_read(struct bufferevent *bev, void *arg)
{
	struct relay *r = arg;
	struct bufferevent *to = relay_other(r, bev);
	struct evbuffer *out = bufferevent_get_output(to);

	evbuffer_add_buffer(out, bufferevent_get_input(bev));
	if (evbuffer_get_length(out) > RELAY_HIGH)
		bufferevent_disable(bev, EV_READ);
}

/* Output drained: resume reading from the side that fills it, or finish
   closing once everything is out. */
static void relay_write(struct bufferevent *bev, void *arg)
{
	struct relay *r = arg;

	if (r->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			relay_free(r);
		return;
	}
	bufferevent_enable(relay_other(r, bev), EV_READ);
}

static void relay_event(struct bufferevent *bev, short what, void *arg)
{
	struct relay *r = arg;
	struct bufferevent *to = relay_other(r, bev);
	(void)what;

	if (r->closing) {
		relay_free(r);
		return;
	}
	/* Pass on what was read before the end, then close after it. */
	evbuffer_add_buffer(bufferevent_get_output(to), bufferevent_get_input(bev));
	r->closing = true;
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	bufferevent_disable(to, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(to)) == 0)
		relay_free(r);
}

int relay_start(struct event_base *base, struct bufferevent *client,
		int mail_fd, unsigned int write_timeout_s, relay_end_fn *on_end,
		void *context)
{
	struct relay *r = calloc(1, sizeof(*r));
	struct timeval wt = { write_timeout_s, 0 };

	if (r == NULL) {
		bufferevent_free(client);
		close(mail_fd);
		return -1;
	}
	r->client = client;
	r->on_end = on_end;
	r->context = context;
	r->mail = bufferevent_socket_new(base, mail_fd, BEV_OPT_CLOSE_ON_FREE);
	if (r->mail == NULL) {
		close(mail_fd);
		bufferevent_free(client);
		free(r);
		return -1;
	}
	bufferevent_setcb(client, relay_read, relay_write, relay_event, r);
	bufferevent_setcb(r->mail, relay_read, relay_write, relay_event, r);
	bufferevent_setwatermark(client, EV_READ, 0, 0);
	/* The write callback runs after each write that leaves the output at
	   or below RELAY_HIGH / 4: time to read the other side again. */
	bufferevent_setwatermark(client, EV_WRITE, RELAY_HIGH / 4, 0);
	bufferevent_setwatermark(r->mail, EV_WRITE, RELAY_HIGH / 4, 0);
	bufferevent_set_timeouts(client, NULL, &wt);
	bufferevent_set_timeouts(r->mail, NULL, &wt);
	bufferevent_enable(client, EV_READ | EV_WRITE);
	bufferevent_enable(r->mail, EV_READ | EV_WRITE);
	/* Bytes the client sent after its login already went with the
	   hand-over; anything still buffered here is relayed at once. */
	if (evbuffer_get_length(bufferevent_get_input(client)) > 0)
		relay_read(client, r);
	return 0;
}
