/*
 * conn.c — one client connection (see conn.h).
 *
 * Input is handed to the protocol core one line at a time; while the core
 * has an action pending, or while more than CONN_OUT_HIGH bytes wait to be
 * sent, input stays in the bufferevent (which stops reading from the socket
 * at CONN_IN_HIGH), so a client that pipelines without reading costs
 * bounded memory.  A message is streamed from its file through the wire
 * encoder in LOOP_SCRATCH_SIZE pieces, refilled as the socket drains.
 */
#include "conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <event2/event.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth-penalty.h"
#include "jobs.h"
#include "log.h"
#include "pop3-parse.h"
#include "sasl.h"
#include "wire.h"

/* Stop feeding commands while this much output waits (backpressure). */
#define CONN_OUT_HIGH (256 * 1024)
/* Refill a streamed message when output drops to this. */
#define CONN_OUT_LOW (64 * 1024)
/* Stop reading from the socket once this much input waits unprocessed. */
#define CONN_IN_HIGH (64 * 1024)
/* Bytes offered to the core at once: more than its longest line. */
#define CONN_PULL_MAX (2 * POP3_INPUT_MAX)
/* While a job runs, timers that fire are retried after this long. */
#define CONN_RETRY_MS 1000

enum conn_job_kind {
	CONN_JOB_NONE,
	CONN_JOB_LOGIN,       /* USER/PASS or APOP: verify, open the maildrop */
	CONN_JOB_AUTH,        /* one SASL step; the last opens the maildrop */
	CONN_JOB_COMMIT,
};

/* What c->delay is waiting for. */
enum conn_delay_kind {
	CONN_DELAY_PENALTY,   /* an address with failed logins waits to try */
	CONN_DELAY_ANSWER,    /* a failed login's answer waits */
};

struct conn {
	struct job job;                 /* first: job callbacks cast back */
	struct loop *loop;
	struct bufferevent *bev;
	struct pop3_session *session;
	struct pop3_config pop3;
	struct event *timer;            /* pre-auth deadline, then idle */
	struct event *delay;            /* penalty or failed-login delay */
	enum conn_delay_kind delay_kind;
	enum conn_job_kind job_kind;
	bool job_running;
	bool dead;                      /* peer gone: free when the job returns */
	bool closing;
	bool peer_eof;                  /* client half-closed: finish, then close */
	bool stls_pending;              /* STLS's +OK is being sent */
	bool handshaking;               /* TLS handshake not finished yet */
	bool streaming;
	bool logged_in;
	int msg_fd;
	struct wire_encoder enc;
	struct maildrop *md;
	struct passdb_user user;
	struct sasl_server *sasl;       /* the AUTH exchange in progress */
	enum sasl_status sasl_status;   /* the last step's, from the job */
	const uint8_t *sasl_out;        /* its challenge */
	size_t sasl_out_len;
	struct auth_penalty_key penalty_key;
	uint64_t bytes_out;
	struct timespec job_start;
	/* Results handed from a job thread to the loop. */
	enum pop3_login_result login_result;
	const char *job_error;
	bool commit_ok;
	size_t removed;
	char id[20];
	char peer[INET6_ADDRSTRLEN + 8];
	char apop_timestamp[128];
};

static void conn_process(struct conn *c);
static void conn_free(struct conn *c, const char *reason);
static int conn_start_tls(struct conn *c);
static void conn_bev_setup(struct conn *c, bool tls);
static const char *conn_error_reason(struct conn *c);

static atomic_uint_fast64_t conn_counter;

static long ms_since(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000 +
	       (now.tv_nsec - start->tv_nsec) / 1000000;
}

static void timer_arm(struct event *ev, long ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	evtimer_add(ev, &tv);
}

static void conn_output(void *context, const void *data, size_t len)
{
	struct conn *c = context;
	evbuffer_add(bufferevent_get_output(c->bev), data, len);
	c->bytes_out += len;
}

/* ---- streaming a message ---- */

static void stream_end(struct conn *c, enum pop3_send_result result)
{
	close(c->msg_fd);
	c->msg_fd = -1;
	c->streaming = false;
	pop3_session_message_done(c->session, result);
}

/* Fills the output up to CONN_OUT_HIGH; the write callback calls again. */
static void conn_stream(struct conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	uint8_t *in = c->loop->scratch;

	while (evbuffer_get_length(out) < CONN_OUT_HIGH) {
		ssize_t n = c->enc.done ? 0 : read(c->msg_fd, in, LOOP_SCRATCH_SIZE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_error("event=read-failed session=%s error=\"%s\"",
				  c->id, strerror(errno));
			stream_end(c, POP3_SEND_ABORTED);
			return;
		}
		size_t cap = n == 0 ? WIRE_FINISH_MAX : WIRE_ENCODE_MAX(n);
		struct evbuffer_iovec v;
		if (evbuffer_reserve_space(out, (ev_ssize_t)cap, &v, 1) < 1) {
			stream_end(c, POP3_SEND_ABORTED);
			return;
		}
		if (n == 0)
			v.iov_len = wire_encode_finish(&c->enc, v.iov_base);
		else
			v.iov_len = wire_encode(&c->enc, in, (size_t)n, v.iov_base);
		evbuffer_commit_space(out, &v, 1);
		c->bytes_out += v.iov_len;
		if (n == 0) {
			stream_end(c, POP3_SEND_OK);
			return;
		}
	}
}

static void conn_start_send(struct conn *c, const struct pop3_action *a)
{
	enum maildrop_status status;
	const char *error;

	if (maildrop_open_message(c->md, a->index, &c->msg_fd, &status,
				  &error) < 0) {
		log_warn("event=message-unavailable session=%s msg=%zu error=\"%s\"",
			 c->id, a->index + 1, error);
		pop3_session_message_done(c->session,
					  status == MAILDROP_PERMFAIL ?
					  POP3_SEND_GONE : POP3_SEND_TEMPFAIL);
		return;
	}
	wire_encoder_init(&c->enc, a->max_body_lines);
	pop3_session_message_begin(c->session);
	c->streaming = true;
	conn_stream(c);
}

/* ---- login ---- */

static enum pop3_login_result login_open_maildrop(struct conn *c)
{
	const struct popboxd_settings *set = c->loop->ctx->set;
	enum maildrop_status status;
	char *path = NULL;

	if (c->user.mail != NULL && c->user.mail[0] != '\0')
		path = strdup(c->user.mail);
	else if (settings_expand_mail_location(set->mail_location,
					       c->user.name, c->user.home,
					       &path, &c->job_error) < 0)
		return POP3_LOGIN_SYS_PERM;
	if (path == NULL) {
		c->job_error = "out of memory";
		return POP3_LOGIN_SYS_TEMP;
	}
	int ret = maildrop_open(path, &c->loop->ctx->maildrop, &c->md,
				&status, &c->job_error);
	free(path);
	if (ret == 0)
		return POP3_LOGIN_OK;
	switch (status) {
	case MAILDROP_IN_USE:
		return POP3_LOGIN_IN_USE;
	case MAILDROP_LOGIN_DELAY:
		return POP3_LOGIN_DELAYED;
	case MAILDROP_PERMFAIL:
		return POP3_LOGIN_SYS_PERM;
	default:
		return POP3_LOGIN_SYS_TEMP;
	}
}

/* On a pool thread: the session is parked on the LOGIN action, so its
   user and secret strings stay put until login_done. */
static void login_run(struct job *job)
{
	struct conn *c = (struct conn *)job;
	const struct pop3_action *a = pop3_session_action(c->session);
	struct passdb *db = c->loop->ctx->passdb;
	enum passdb_result result;

	c->job_error = NULL;
	if (a->apop_digest != NULL)
		result = passdb_verify_apop(db, a->user, c->apop_timestamp,
					    a->apop_digest, &c->user);
	else
		result = passdb_verify_plain(db, a->user, a->password, &c->user);
	if (result == PASSDB_FAIL) {
		c->login_result = POP3_LOGIN_AUTH_FAILED;
		return;
	}
	if (result != PASSDB_OK) {
		c->job_error = "password database unavailable";
		c->login_result = POP3_LOGIN_SYS_TEMP;
		return;
	}
	c->login_result = login_open_maildrop(c);
	if (c->login_result != POP3_LOGIN_OK)
		passdb_user_clear(&c->user);
}

/* On a pool thread: one step of the SASL exchange; the session is parked
   on AUTH_STEP, so its data stays put until the answer. */
static void auth_run(struct job *job)
{
	struct conn *c = (struct conn *)job;
	const struct pop3_action *a = pop3_session_action(c->session);

	c->job_error = NULL;
	c->login_result = POP3_LOGIN_SYS_TEMP;
	if (a->sasl_first) {
		sasl_server_free(&c->sasl);
		c->sasl = sasl_server_new(a->sasl_mech);
		if (c->sasl == NULL) {
			c->sasl_status = SASL_TEMPFAIL;
			c->job_error = "out of memory";
			return;
		}
	}
	c->sasl_status = sasl_server_step(c->sasl, c->loop->ctx->passdb,
					  a->sasl_data, a->sasl_len,
					  &c->sasl_out, &c->sasl_out_len,
					  &c->user);
	switch (c->sasl_status) {
	case SASL_CONTINUE:
		return;
	case SASL_OK:
		c->login_result = login_open_maildrop(c);
		if (c->login_result != POP3_LOGIN_OK)
			passdb_user_clear(&c->user);
		return;
	case SASL_FAIL:
		c->login_result = POP3_LOGIN_AUTH_FAILED;
		return;
	case SASL_MALFORMED:
		c->login_result = POP3_LOGIN_MALFORMED;
		return;
	case SASL_TEMPFAIL:
		c->job_error = "password database unavailable";
		return;
	}
}

static bool login_failed(enum pop3_login_result result)
{
	return result == POP3_LOGIN_AUTH_FAILED || result == POP3_LOGIN_MALFORMED;
}

static time_t monotonic_seconds(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec;
}

static void login_finish(struct conn *c)
{
	char user[LOG_ESCAPE_MAX + 1];
	const struct pop3_action *a = pop3_session_action(c->session);
	const struct mailmsg *msgs = NULL;
	size_t count = 0;
	const char *name = a->user;

	if (c->job_kind == CONN_JOB_AUTH)
		name = c->sasl != NULL ? sasl_server_user(c->sasl) : NULL;
	if (name == NULL)
		name = "";
	log_escape(user, name, strlen(name));
	if (login_failed(c->login_result))
		auth_penalty_failed(c->loop->ctx->penalty, &c->penalty_key,
				    monotonic_seconds());
	if (c->login_result == POP3_LOGIN_OK) {
		msgs = maildrop_list(c->md, &count);
		log_info("event=login session=%s user=%s rip=%s messages=%zu",
			 c->id, user, c->peer, count);
	} else if (login_failed(c->login_result)) {
		log_info("event=auth-failed session=%s user=%s rip=%s%s%s",
			 c->id, user, c->peer,
			 c->job_kind == CONN_JOB_AUTH ? " mech=" : "",
			 c->job_kind == CONN_JOB_AUTH ?
			 sasl_mech_name(a->sasl_mech) : "");
	} else {
		log_warn("event=login-refused session=%s user=%s rip=%s reason=\"%s\"",
			 c->id, user, c->peer,
			 c->job_error != NULL ? c->job_error : "?");
	}
	if (c->job_kind == CONN_JOB_AUTH) {
		pop3_session_auth_done(c->session, c->login_result,
				       c->login_result == POP3_LOGIN_OK ?
				       c->user.name : NULL, msgs, count);
		sasl_server_free(&c->sasl);
	} else {
		pop3_session_login_done(c->session, c->login_result, msgs,
					count);
	}
	if (pop3_session_state(c->session) == POP3_STATE_TRANSACTION) {
		long idle_ms = (long)c->loop->ctx->set->idle_timeout * 1000;
		c->logged_in = true;
		timer_arm(c->timer, idle_ms);
	} else if (c->md != NULL) {
		maildrop_close(&c->md);
		passdb_user_clear(&c->user);
	}
	conn_process(c);
}

static void conn_run_job(struct conn *c);

static void delay_callback(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	c->job_running = false;
	if (c->delay_kind == CONN_DELAY_PENALTY)
		conn_run_job(c);
	else
		login_finish(c);
}

/* Parks the connection on c->delay for ms; false if no timer could be
   made (then the caller goes on at once). */
static bool conn_delay(struct conn *c, enum conn_delay_kind kind, long ms)
{
	if (c->delay == NULL)
		c->delay = evtimer_new(c->loop->base, delay_callback, c);
	if (c->delay == NULL)
		return false;
	c->delay_kind = kind;
	c->job_running = true; /* the session stays parked until it fires */
	timer_arm(c->delay, ms);
	return true;
}

static void job_done(struct job *job)
{
	struct conn *c = (struct conn *)job;

	c->job_running = false;
	if (c->dead) {
		conn_free(c, "disconnected");
		return;
	}
	if (c->job_kind == CONN_JOB_COMMIT) {
		if (!c->commit_ok)
			log_error("event=update-failed session=%s error=\"%s\"",
				  c->id, c->job_error);
		pop3_session_commit_done(c->session, c->commit_ok, c->removed);
		conn_process(c);
		return;
	}
	if (c->job_kind == CONN_JOB_AUTH && c->sasl_status == SASL_CONTINUE) {
		pop3_session_auth_challenge(c->session, c->sasl_out,
					    c->sasl_out_len);
		conn_process(c);
		return;
	}
	/* A failed login is answered after the same delay whatever the
	   reason, measured from when the request came in. */
	long wait = 0;
	if (login_failed(c->login_result))
		wait = (long)c->loop->ctx->set->auth_failure_delay_ms -
		       ms_since(&c->job_start);
	if (wait <= 0 || !conn_delay(c, CONN_DELAY_ANSWER, wait))
		login_finish(c);
}

static void commit_run(struct job *job)
{
	struct conn *c = (struct conn *)job;
	const struct pop3_action *a = pop3_session_action(c->session);

	c->job_error = NULL;
	c->removed = 0;
	c->commit_ok = maildrop_commit(c->md, a->deleted, &c->removed,
				       &c->job_error) == 0;
}

static void conn_run_job(struct conn *c)
{
	static void (*const runs[])(struct job *) = {
		[CONN_JOB_LOGIN] = login_run,
		[CONN_JOB_AUTH] = auth_run,
		[CONN_JOB_COMMIT] = commit_run,
	};

	c->job_running = true;
	c->job.run = runs[c->job_kind];
	clock_gettime(CLOCK_MONOTONIC, &c->job_start);
	jobs_submit(c->loop->ctx->jobs, &c->job);
}

/* A login attempt (PASS, APOP, or the start of an AUTH exchange) from an
   address with recent failures waits first, before any verification. */
static void conn_start_job(struct conn *c, enum conn_job_kind kind)
{
	const struct pop3_action *a = pop3_session_action(c->session);
	bool attempt = kind == CONN_JOB_LOGIN ||
		       (kind == CONN_JOB_AUTH && a->sasl_first);

	c->job_kind = kind;
	if (attempt) {
		unsigned int ms = auth_penalty_delay_ms(c->loop->ctx->penalty,
							&c->penalty_key,
							monotonic_seconds());
		if (ms > 0) {
			log_info("event=auth-penalty session=%s rip=%s delay_ms=%u",
				 c->id, c->peer, ms);
			if (conn_delay(c, CONN_DELAY_PENALTY, ms))
				return;
		}
	}
	conn_run_job(c);
}

/* ---- closing ---- */

/* A session that ended because the client stopped sending, not by QUIT or
   a limit, is logged as "disconnected". */
static const char *conn_close_reason(const struct conn *c)
{
	return c->peer_eof && pop3_session_state(c->session) != POP3_STATE_CLOSED ?
	       "disconnected" : "closed";
}

static void conn_start_close(struct conn *c)
{
	c->closing = true;
	/* Unlock before the last reply leaves: a client that reconnects as
	   soon as it reads QUIT's +OK must not find its maildrop [IN-USE]. */
	maildrop_close(&c->md);
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_free(c, conn_close_reason(c));
}

static void conn_free(struct conn *c, const char *reason)
{
	if (c->job_running) {
		/* The job (or the failed-login delay) still uses c. */
		if (c->delay != NULL && evtimer_pending(c->delay, NULL)) {
			evtimer_del(c->delay);
			c->job_running = false;
		} else {
			c->dead = true;
			bufferevent_disable(c->bev, EV_READ | EV_WRITE);
			return;
		}
	}
	if (c->logged_in) {
		const struct pop3_session_stats *st = pop3_session_stats(c->session);
		char user[LOG_ESCAPE_MAX + 1];
		log_escape(user, c->user.name, strlen(c->user.name));
		log_info("event=logout session=%s user=%s rip=%s retrieved=%u "
			 "deleted=%zu bytes=%" PRIu64 " reason=%s",
			 c->id, user, c->peer, st->retrieved, st->removed,
			 c->bytes_out, reason);
	}
	if (c->msg_fd >= 0)
		close(c->msg_fd);
	maildrop_close(&c->md);
	passdb_user_clear(&c->user);
	sasl_server_free(&c->sasl);
	pop3_session_free(&c->session);
	/* NULL only when STLS failed half-way and the socket is closed. */
	if (c->bev != NULL) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
		if (ssl != NULL && c->closing)
			/* All replies are out: say close_notify, so the
			   client can tell the end from a truncation. */
			SSL_shutdown(ssl);
		bufferevent_free(c->bev);
	}
	event_free(c->timer);
	if (c->delay != NULL)
		event_free(c->delay);
	job_deinit(&c->job);
	free(c);
}

/* ---- the driver ---- */

static void conn_process(struct conn *c)
{
	while (!c->job_running && !c->streaming && !c->closing) {
		const struct pop3_action *a = pop3_session_action(c->session);
		switch (a->type) {
		case POP3_ACTION_NONE:
			break;
		case POP3_ACTION_LOGIN:
			conn_start_job(c, CONN_JOB_LOGIN);
			return;
		case POP3_ACTION_COMMIT:
			conn_start_job(c, CONN_JOB_COMMIT);
			return;
		case POP3_ACTION_AUTH_STEP:
			conn_start_job(c, CONN_JOB_AUTH);
			return;
		case POP3_ACTION_SEND_MESSAGE:
			conn_start_send(c, a);
			continue;
		case POP3_ACTION_CLOSE:
			conn_start_close(c);
			return;
		case POP3_ACTION_START_TLS:
			if (conn_start_tls(c) != 0)
				return;
			continue;
		}
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) > CONN_OUT_HIGH)
			return; /* the write callback resumes */
		struct evbuffer *in = bufferevent_get_input(c->bev);
		size_t avail = evbuffer_get_length(in);
		size_t used = 0;
		if (avail > 0) {
			size_t n = avail < CONN_PULL_MAX ? avail : CONN_PULL_MAX;
			const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)n);
			used = pop3_session_input(c->session, p, n);
			evbuffer_drain(in, used);
		}
		/* An exchange the client cancelled or broke: forget it now. */
		if (c->sasl != NULL && !pop3_session_in_auth(c->session))
			sasl_server_free(&c->sasl);
		if (used > 0 ||
		    pop3_session_action(c->session)->type != POP3_ACTION_NONE)
			continue;
		/* No complete line left.  A client that half-closed has sent
		   all it will: everything it sent is answered, now close. */
		if (c->peer_eof)
			conn_start_close(c);
		return;
	}
}

static void read_callback(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	(void)bev;
	if (c->logged_in)
		timer_arm(c->timer, (long)c->loop->ctx->set->idle_timeout * 1000);
	conn_process(c);
}

static void write_callback(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_free(c, conn_close_reason(c));
		return;
	}
	if (c->logged_in)
		timer_arm(c->timer, (long)c->loop->ctx->set->idle_timeout * 1000);
	if (c->stls_pending && conn_start_tls(c) != 0)
		return;
	if (c->streaming)
		conn_stream(c);
	conn_process(c);
}

static void event_callback(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		c->handshaking = false; /* the TLS handshake is done */
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		conn_free(c, "write-timeout");
	} else if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING) &&
		   !c->closing && !c->dead) {
		/* Half-close: answer what was pipelined before the EOF (a
		   QUIT among it still commits), then close. */
		c->peer_eof = true;
		conn_process(c);
	} else if (what & BEV_EVENT_EOF) {
		conn_free(c, c->closing ? "closed" : "disconnected");
	} else {
		conn_free(c, conn_error_reason(c));
	}
}

/* TLS errors (a failed handshake, garbage after STLS) are logged: they are
   what an attack or a misconfigured client looks like. */
static const char *conn_error_reason(struct conn *c)
{
	unsigned long code = bufferevent_get_openssl_error(c->bev);
	char text[160];

	if (code == 0)
		return "connection-error";
	ERR_error_string_n(code, text, sizeof(text));
	log_info("event=tls-error session=%s rip=%s error=\"%s\"", c->id,
		 c->peer, text);
	while (bufferevent_get_openssl_error(c->bev) != 0)
		;
	return "tls-error";
}

static void timer_callback(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	if (c->job_running || c->streaming) {
		timer_arm(c->timer, CONN_RETRY_MS);
		return;
	}
	if (c->closing) {
		conn_free(c, "close-timeout");
		return;
	}
	if (c->handshaking) {
		/* No reply can be sent without a handshake: just close. */
		log_info("event=timeout session=%s rip=%s state=tls-handshake",
			 c->id, c->peer);
		conn_free(c, "handshake-timeout");
		return;
	}
	pop3_session_abort(c->session, c->logged_in ?
			   "idle for too long, closing" :
			   "login took too long, closing");
	log_info("event=timeout session=%s rip=%s state=%s", c->id, c->peer,
		 c->logged_in ? "transaction" : "authorization");
	/* Do not wait long for a client that does not read. */
	timer_arm(c->timer, CONN_RETRY_MS * 10);
	conn_process(c);
}

/* Timeouts, watermarks and callbacks of c->bev (plain, TLS, or the TLS
   filter that STLS puts on top of the plain one). */
static void conn_bev_setup(struct conn *c, bool tls)
{
	struct timeval write_timeout = { c->loop->ctx->set->idle_timeout, 0 };

	c->handshaking = tls;
	if (tls)
		/* A client that closes without close_notify just ends. */
		bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	bufferevent_set_timeouts(c->bev, NULL, &write_timeout);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_IN_HIGH);
	bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUT_LOW, 0);
	bufferevent_setcb(c->bev, read_callback, write_callback, event_callback, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/*
 * STLS accepted.  Once "+OK" has left, the plain bufferevent is replaced by
 * an OpenSSL one on the same socket.  Every byte already received after
 * the STLS line is thrown away, never executed (the STARTTLS
 * command-injection class, CVE-2011-0411); bytes still in the kernel reach
 * OpenSSL as handshake garbage and end the connection.  Returns 0 when the
 * switch is done, 1 while "+OK" is still being sent (the write callback
 * calls again), -1 when the connection was freed.
 */
static int conn_start_tls(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t junk = evbuffer_get_length(in);
	int fd = bufferevent_getfd(c->bev);
	SSL *ssl;

	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
		c->stls_pending = true;
		return 1;
	}
	c->stls_pending = false;
	if (junk > 0)
		log_warn("event=stls-discarded session=%s rip=%s bytes=%zu",
			 c->id, c->peer, junk);
	ssl = tls_server_ssl_new(c->loop->ctx->tls);
	if (ssl == NULL) {
		conn_free(c, "tls-setup-failed");
		return -1;
	}
	/* Keep the socket open while its plain bufferevent goes. */
	bufferevent_setfd(c->bev, -1);
	bufferevent_free(c->bev);
	c->bev = bufferevent_openssl_socket_new(c->loop->base, fd, ssl,
						BUFFEREVENT_SSL_ACCEPTING,
						BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		SSL_free(ssl);
		close(fd);
		conn_free(c, "tls-setup-failed");
		return -1;
	}
	conn_bev_setup(c, true);
	pop3_session_tls_started(c->session);
	return 0;
}

/* ---- accept ---- */

static void peer_name(const struct sockaddr *addr, char *buf, size_t size)
{
	const void *ip = NULL;

	if (addr->sa_family == AF_INET)
		ip = &((const struct sockaddr_in *)addr)->sin_addr;
	else if (addr->sa_family == AF_INET6)
		ip = &((const struct sockaddr_in6 *)addr)->sin6_addr;
	if (ip == NULL || inet_ntop(addr->sa_family, ip, buf, (socklen_t)size) == NULL)
		snprintf(buf, size, "unknown");
}

static int conn_setup(struct conn *c, struct loop *loop, int fd, bool tls,
		      const struct sockaddr *addr)
{
	const struct server_context *ctx = loop->ctx;
	uint64_t serial = atomic_fetch_add(&conn_counter, 1);

	snprintf(c->id, sizeof(c->id), "%x-%" PRIx64, loop->index, serial);
	c->pop3 = ctx->pop3;
	if (ctx->pop3.apop) {
		/* RFC 1939 section 7: unique per greeting. */
		snprintf(c->apop_timestamp, sizeof(c->apop_timestamp),
			 "<%ld.%" PRIu64 ".%ld@%s>", (long)getpid(), serial,
			 (long)time(NULL), ctx->hostname);
		c->pop3.apop_timestamp = c->apop_timestamp;
	}
	c->pop3.stls = ctx->tls != NULL && !tls;
	c->pop3.tls = tls;
	c->pop3.cleartext_ok = ctx->set->allow_cleartext ||
			       netmask_list_contains(&ctx->trusted, addr);
	if (tls) {
		SSL *ssl = tls_server_ssl_new(ctx->tls);
		if (ssl == NULL)
			return -1;
		c->bev = bufferevent_openssl_socket_new(loop->base, fd, ssl,
							BUFFEREVENT_SSL_ACCEPTING,
							BEV_OPT_CLOSE_ON_FREE);
		if (c->bev == NULL) {
			SSL_free(ssl);
			return -1;
		}
	} else {
		c->bev = bufferevent_socket_new(loop->base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (c->bev == NULL)
			return -1;
	}
	c->timer = evtimer_new(loop->base, timer_callback, c);
	if (c->timer == NULL || job_init(&c->job, loop->base) < 0)
		return -1;
	c->job.done = job_done;
	c->session = pop3_session_new(&c->pop3, conn_output, c);
	if (c->session == NULL)
		return -1;
	conn_bev_setup(c, tls);
	timer_arm(c->timer, (long)ctx->set->login_timeout * 1000);
	return 0;
}

void conn_accept(struct loop *loop, int fd, const struct sockaddr *addr,
		 socklen_t addrlen, bool tls)
{
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1;
	(void)addrlen;

	if (c == NULL) {
		close(fd);
		return;
	}
	c->loop = loop;
	c->msg_fd = -1;
	peer_name(addr, c->peer, sizeof(c->peer));
	auth_penalty_key_from(addr, &c->penalty_key);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (conn_setup(c, loop, fd, tls, addr) < 0) {
		log_error("event=accept-failed error=\"out of memory\"");
		if (c->bev == NULL)
			close(fd);
		if (c->session != NULL)
			pop3_session_free(&c->session);
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		if (c->timer != NULL)
			event_free(c->timer);
		job_deinit(&c->job);
		free(c);
		return;
	}
	log_debug("event=connect session=%s rip=%s", c->id, c->peer);
}
