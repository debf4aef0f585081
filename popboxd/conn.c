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
#include <openssl/crypto.h>
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

#include "auth-client.h"
#include "auth-proto.h"
#include "conn-limits.h"
#include "handover.h"
#include "ipc.h"
#include "relay.h"
#include "jobs.h"
#include "log.h"
#include "pop3-parse.h"
#include "sasl.h"
#include "userdb-lookup.h"
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
	CONN_JOB_OPEN,        /* mail process: open the maildrop */
	CONN_JOB_COMMIT,      /* mail process: UPDATE */
};

struct conn {
	struct job job;                 /* first: job callbacks cast back */
	struct loop *loop;
	struct bufferevent *bev;
	struct pop3_session *session;
	struct pop3_config pop3;
	struct event *timer;            /* pre-auth deadline, then idle */
	enum conn_job_kind job_kind;
	bool job_running;               /* a job or an auth request in flight */
	bool dead;                      /* peer gone: free when it returns */
	bool closing;
	bool peer_eof;                  /* client half-closed: finish, then close */
	bool stls_pending;              /* STLS's +OK is being sent */
	bool handshaking;               /* TLS handshake not finished yet */
	bool streaming;
	bool logged_in;
	bool in_exchange;               /* auth holds a SASL exchange for us */
	bool limited;                   /* counted in the connection limits */
	int msg_fd;
	struct wire_encoder enc;
	struct maildrop *md;
	struct passdb_user user;
	struct user_policy policy;      /* mail process: the account's, resolved */
	uint32_t auth_handle;           /* pending auth request, 0 if none */
	uint32_t serial;                /* names our SASL exchange in auth */
	const char *auth_mech;          /* for the log line of a failure */
	uint8_t token[AUTH_TOKEN_LEN];  /* mail process: from the hand-over */
	uint64_t bytes_out;
	/* Results handed from a job thread to the loop. */
	enum pop3_login_result login_result;
	const char *job_error;
	bool commit_ok;
	size_t removed;
	struct sockaddr_storage addr;   /* the client's, for the limits */
	struct conn *pool_prev, *pool_next;  /* login: the pre-auth pool */
	bool in_pool;
	char id[32];
	char peer[64];                  /* the client address, as text */
	char apop_timestamp[128];
};

static void conn_process(struct conn *c);
static void peer_name(const struct sockaddr *addr, char *buf, size_t size);
static void conn_free(struct conn *c, const char *reason);
static void conn_detach(struct conn *c);
static void conn_start_job(struct conn *c, enum conn_job_kind kind);
static int conn_start_tls(struct conn *c);
static void conn_bev_setup(struct conn *c, bool tls);
static const char *conn_error_reason(struct conn *c);

static atomic_uint_fast64_t conn_counter;

/*
 * Login process: the pre-auth pool, every connection not yet handed over,
 * in accept order (the oldest at the head).  When it is full, the oldest
 * goes, so a flood of idle strangers cannot keep new clients out.
 */
static struct conn *pool_head, *pool_tail;
static unsigned int pool_count;

static void pool_add(struct conn *c)
{
	c->pool_prev = pool_tail;
	c->pool_next = NULL;
	if (pool_tail != NULL)
		pool_tail->pool_next = c;
	else
		pool_head = c;
	pool_tail = c;
	c->in_pool = true;
	pool_count++;
}

static void pool_remove(struct conn *c)
{
	if (!c->in_pool)
		return;
	if (c->pool_prev != NULL)
		c->pool_prev->pool_next = c->pool_next;
	else
		pool_head = c->pool_next;
	if (c->pool_next != NULL)
		c->pool_next->pool_prev = c->pool_prev;
	else
		pool_tail = c->pool_prev;
	c->in_pool = false;
	pool_count--;
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

/* ---- login: the login process asks auth; the mail process redeems ---- */

static struct ipc_writer conn_writer;   /* loops are single-threaded */

static bool login_failed(enum pop3_login_result result)
{
	return result == POP3_LOGIN_AUTH_FAILED || result == POP3_LOGIN_MALFORMED;
}

/* On a pool thread (mail process): open the maildrop of c->user. */
static void open_run(struct job *job)
{
	struct conn *c = (struct conn *)job;
	const struct popboxd_settings *set = c->loop->ctx->set;
	enum maildrop_status status;
	char *path = NULL;

	c->job_error = NULL;
	if (settings_user_maildir(set, c->user.name, c->user.home, c->user.mail,
				  &path, &c->job_error) < 0) {
		/* A template that cannot expand is the admin's to fix. */
		c->login_result = strcmp(c->job_error, "out of memory") == 0 ?
				  POP3_LOGIN_SYS_TEMP : POP3_LOGIN_SYS_PERM;
		return;
	}
	int ret = maildrop_open(path, &c->loop->ctx->maildrop, &c->md,
				&status, &c->job_error);
	free(path);
	if (ret == 0)
		c->login_result = POP3_LOGIN_OK;
	else if (status == MAILDROP_IN_USE)
		c->login_result = POP3_LOGIN_IN_USE;
	else if (status == MAILDROP_LOGIN_DELAY)
		c->login_result = POP3_LOGIN_DELAYED;
	else if (status == MAILDROP_PERMFAIL)
		c->login_result = POP3_LOGIN_SYS_PERM;
	else
		c->login_result = POP3_LOGIN_SYS_TEMP;
}

/* The end of a login attempt, in either process: log it, tell the core.
   The caller goes on with conn_process() (login_finish() does). */
static void login_report(struct conn *c, const char *name)
{
	char user[LOG_ESCAPE_MAX + 1];
	const struct mailmsg *msgs = NULL;
	size_t count = 0;
	bool mail_role = c->loop->ctx->role == CONN_ROLE_MAIL;

	log_escape(user, name != NULL ? name : "", name != NULL ? strlen(name) : 0);
	if (c->login_result == POP3_LOGIN_OK) {
		msgs = maildrop_list(c->md, &count);
		log_info("event=login session=%s user=%s rip=%s messages=%zu",
			 c->id, user, c->peer, count);
	} else if (c->login_result == POP3_LOGIN_DISABLED) {
		/* The credential was right: not an auth failure (no penalty,
		   nothing for a ban list), but no login either. */
		log_info("event=login-refused session=%s user=%s rip=%s "
			 "reason=pop-disabled", c->id, user, c->peer);
	} else if (login_failed(c->login_result)) {
		log_info("event=auth-failed session=%s user=%s rip=%s%s%s",
			 c->id, user, c->peer,
			 c->auth_mech != NULL ? " mech=" : "",
			 c->auth_mech != NULL ? c->auth_mech : "");
	} else {
		log_warn("event=login-refused session=%s user=%s rip=%s reason=\"%s\"",
			 c->id, user, c->peer,
			 c->job_error != NULL ? c->job_error : "?");
	}
	c->auth_mech = NULL;
	pop3_session_auth_done(c->session, c->login_result,
			       c->login_result == POP3_LOGIN_OK ? c->user.name : NULL,
			       msgs, count);
	if (pop3_session_state(c->session) == POP3_STATE_TRANSACTION) {
		long idle_ms = (long)c->loop->ctx->set->idle_timeout * 1000;
		c->logged_in = true;
		timer_arm(c->timer, idle_ms);
	} else {
		maildrop_close(&c->md);
		passdb_user_clear(&c->user);
		/* A handed-over session cannot log in again here: its -ERR
		   (IN-USE, LOGIN-DELAY, SYS/...) is said, then it closes. */
		if (mail_role)
			pop3_session_abort(c->session, NULL);
	}
}

/* login_report() from a callback (auth answered, a job ended). */
static void login_finish(struct conn *c, const char *name)
{
	login_report(c, name);
	conn_process(c);
}


/* Login process: auth said yes.  The connection goes to a mail process;
   false if it could not (the client then gets [SYS/TEMP]). */
static bool conn_hand_over(struct conn *c, const struct ipc_msg *reply)
{
	const struct server_context *ctx = c->loop->ctx;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct handover h;
	bool tls = c->pop3.tls || bufferevent_openssl_get_ssl(c->bev) != NULL;

	memset(&h, 0, sizeof(h));
	if (!ipc_get_fixed(reply, AUTH_TAG_TOKEN, h.token, sizeof(h.token)))
		return false;
	snprintf(h.rip, sizeof(h.rip), "%s", c->peer);
	snprintf(h.session, sizeof(h.session), "%s", c->id);
	h.tls = tls;
	h.input_len = evbuffer_get_length(in);
	h.input = evbuffer_pullup(in, -1);
	if (h.input_len > 0 && h.input == NULL)
		return false;
	/* The mail process counts the connection from now on: stop counting
	   it here first, or it would briefly count twice against the caps. */
	if (c->limited) {
		conn_limits_release(ctx->limits, ctx->limits_index,
				    (struct sockaddr *)&c->addr);
		c->limited = false;
	}
	/* Mail processes in turn, so each gets its share. */
	static unsigned int next_mail;
	const char *mail = ctx->mail_sockets[next_mail++ % ctx->mail_socket_count];
	int fd = handover_send(mail, tls ? -1 : bufferevent_getfd(c->bev), &h);
	OPENSSL_cleanse(h.token, sizeof(h.token));
	if (fd < 0) {
		c->limited = ctx->limits != NULL &&
			conn_limits_acquire(ctx->limits, ctx->limits_index,
					    (struct sockaddr *)&c->addr) == CONN_LIMIT_OK;
		return false;
	}
	evbuffer_drain(in, h.input_len);
	log_debug("event=handover session=%s tls=%d", c->id, tls);
	if (tls) {
		struct bufferevent *client = c->bev;
		struct event_base *base = c->loop->base;
		c->bev = NULL;
		bufferevent_setcb(client, NULL, NULL, NULL, NULL);
		conn_detach(c);
		c = NULL;
		/* The relay counts as an open connection of this process.  On
		   failure relay_start() closes both sides: the client sees the
		   connection end, as if the mail process had failed. */
		ctx->conn_started(ctx->conn_context);
		if (relay_start(base, client, fd, ctx->set->output_timeout,
				ctx->conn_ended, ctx->conn_context) < 0)
			ctx->conn_ended(ctx->conn_context);
		return true;
	}
	conn_detach(c);
	return true;
}

/* Login process: the auth process answered (reply NULL: it could not). */
static void conn_auth_reply(const struct ipc_msg *reply, void *context)
{
	struct conn *c = context;
	uint32_t status = AUTH_STATUS_TEMPFAIL;
	char name[USERNAME_MAX * 4 + 1] = "";

	c->auth_handle = 0;
	c->job_running = false;
	if (reply != NULL && !ipc_get_u32(reply, AUTH_TAG_STATUS, &status))
		status = AUTH_STATUS_TEMPFAIL;
	if (reply != NULL)
		(void)ipc_get_str(reply, AUTH_TAG_USER, name, sizeof(name));
	if (c->dead) {
		conn_free(c, "disconnected");
		return;
	}
	if (status == AUTH_STATUS_CONTINUE) {
		const struct ipc_field *ch = &reply->fields[AUTH_TAG_CHALLENGE];
		pop3_session_auth_challenge(c->session, ch->present ? ch->data : NULL,
					    ch->present ? ch->len : 0);
		conn_process(c);
		return;
	}
	c->in_exchange = false;
	const struct pop3_action *a = pop3_session_action(c->session);
	if (name[0] == '\0' && a->user != NULL)
		snprintf(name, sizeof(name), "%s", a->user);
	switch (status) {
	case AUTH_STATUS_OK:
		if (conn_hand_over(c, reply))
			return;
		c->job_error = "no mail process took the connection";
		c->login_result = POP3_LOGIN_SYS_TEMP;
		break;
	case AUTH_STATUS_FAIL:
		c->login_result = POP3_LOGIN_AUTH_FAILED;
		break;
	case AUTH_STATUS_MALFORMED:
		c->login_result = POP3_LOGIN_MALFORMED;
		break;
	default:
		c->job_error = reply == NULL ? "auth process unavailable" :
			       "password database unavailable";
		c->login_result = POP3_LOGIN_SYS_TEMP;
		break;
	}
	login_finish(c, name);
}

static void conn_auth_send(struct conn *c, struct ipc_writer *w)
{
	ipc_put_str(w, AUTH_TAG_RIP, c->peer);
	c->auth_handle = auth_client_request(c->loop->ctx->auth, w,
					     conn_auth_reply, c);
	if (c->auth_handle == 0) {
		c->job_error = "auth process unavailable";
		c->login_result = POP3_LOGIN_SYS_TEMP;
		c->in_exchange = false;
		login_report(c, pop3_session_action(c->session)->user);
		return;
	}
	c->job_running = true;
}

/* USER/PASS or APOP (login process). */
static void conn_auth_login(struct conn *c, const struct pop3_action *a)
{
	struct ipc_writer *w = &conn_writer;

	c->auth_mech = NULL;
	ipc_writer_init(w, a->apop_digest != NULL ? AUTH_MSG_APOP : AUTH_MSG_PASS, 0);
	ipc_put_str(w, AUTH_TAG_USER, a->user);
	if (a->apop_digest != NULL) {
		ipc_put_str(w, AUTH_TAG_TIMESTAMP, c->apop_timestamp);
		ipc_put_str(w, AUTH_TAG_DIGEST, a->apop_digest);
	} else {
		ipc_put_str(w, AUTH_TAG_PASSWORD, a->password);
	}
	conn_auth_send(c, w);
	OPENSSL_cleanse(w->buf, w->len);
}

/* One SASL step (login process); the exchange itself lives in auth. */
static void conn_auth_sasl(struct conn *c, const struct pop3_action *a)
{
	struct ipc_writer *w = &conn_writer;

	ipc_writer_init(w, AUTH_MSG_SASL, 0);
	ipc_put_u32(w, AUTH_TAG_CONN, c->serial);
	if (a->sasl_first) {
		ipc_put_u32(w, AUTH_TAG_MECH, (uint32_t)a->sasl_mech);
		ipc_put(w, AUTH_TAG_FIRST, "", 0);
		c->auth_mech = sasl_mech_name(a->sasl_mech);
	}
	if (a->sasl_data != NULL)
		ipc_put(w, AUTH_TAG_DATA, a->sasl_data, a->sasl_len);
	c->in_exchange = true;
	conn_auth_send(c, w);
	OPENSSL_cleanse(w->buf, w->len);
}

/* Tells auth to drop an exchange the client abandoned. */
static void conn_auth_forget(struct conn *c)
{
	struct ipc_writer *w = &conn_writer;

	c->in_exchange = false;
	ipc_writer_init(w, AUTH_MSG_FORGET, 0);
	ipc_put_u32(w, AUTH_TAG_CONN, c->serial);
	auth_client_notify(c->loop->ctx->auth, w);
}

/* Mail process: the token came back as a user record, or not. */
static void conn_token_reply(const struct ipc_msg *reply, void *context)
{
	struct conn *c = context;
	uint32_t status = AUTH_STATUS_TEMPFAIL;

	c->auth_handle = 0;
	c->job_running = false;
	if (c->dead) {
		conn_free(c, "disconnected");
		return;
	}
	if (reply == NULL || !ipc_get_u32(reply, AUTH_TAG_STATUS, &status) ||
	    status != AUTH_STATUS_OK ||
	    userdb_record_get(reply, &c->user, &c->job_error) < 0) {
		if (reply == NULL || status != AUTH_STATUS_OK)
			c->job_error = reply == NULL ? "auth process unavailable" :
				       "login token refused";
		c->login_result = POP3_LOGIN_SYS_TEMP;
		login_finish(c, NULL);
		return;
	}
	user_policy_resolve(&c->user.policy, c->loop->ctx->set, &c->policy);
	if (c->policy.pop3 == 0) {
		/* pop3=no: checked only now, after the credential, so a wrong
		   password looks like any other; the maildrop stays shut. */
		c->login_result = POP3_LOGIN_DISABLED;
		login_finish(c, c->user.name);
		return;
	}
	pop3_session_set_expire(c->session,
				c->policy.expire_days == USER_POLICY_NEVER ?
				-1 : c->policy.expire_days);
	conn_start_job(c, CONN_JOB_OPEN);
}

/* Mail process: redeem the hand-over's token with auth. */
static void conn_token_check(struct conn *c)
{
	struct ipc_writer *w = &conn_writer;

	ipc_writer_init(w, AUTH_MSG_TOKEN_CHECK, 0);
	ipc_put(w, AUTH_TAG_TOKEN, c->token, sizeof(c->token));
	OPENSSL_cleanse(c->token, sizeof(c->token));
	c->auth_handle = auth_client_request(c->loop->ctx->auth, w,
					     conn_token_reply, c);
	if (c->auth_handle == 0) {
		c->job_error = "auth process unavailable";
		c->login_result = POP3_LOGIN_SYS_TEMP;
		login_report(c, NULL);
		return;
	}
	c->job_running = true;
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
	if (c->login_result != POP3_LOGIN_OK)
		passdb_user_clear(&c->user);
	login_finish(c, c->user.name);
}

static void commit_run(struct job *job)
{
	struct conn *c = (struct conn *)job;
	const struct pop3_action *a = pop3_session_action(c->session);

	c->job_error = NULL;
	c->removed = 0;
	/* keep_days > 0: DELEted messages go to .Kept, for `popbox expire`
	   to remove keep_days later (retention.h). */
	if (c->policy.keep_days > 0)
		c->commit_ok = maildrop_commit_keep(c->md, a->deleted,
						    (int64_t)time(NULL),
						    &c->removed,
						    &c->job_error) == 0;
	else
		c->commit_ok = maildrop_commit(c->md, a->deleted, &c->removed,
					       &c->job_error) == 0;
}

static void conn_start_job(struct conn *c, enum conn_job_kind kind)
{
	c->job_kind = kind;
	c->job_running = true;
	c->job.run = kind == CONN_JOB_OPEN ? open_run : commit_run;
	jobs_submit(c->loop->ctx->jobs, &c->job);
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

/* Frees everything but the bufferevent and the count of open
   connections: the common end of conn_free() and conn_detach(). */
static void conn_teardown(struct conn *c)
{
	pool_remove(c);
	if (c->limited)
		conn_limits_release(c->loop->ctx->limits, c->loop->ctx->limits_index,
				    (struct sockaddr *)&c->addr);
	if (c->auth_handle != 0)
		auth_client_cancel(c->loop->ctx->auth, c->auth_handle);
	if (c->in_exchange)
		conn_auth_forget(c);
	if (c->msg_fd >= 0)
		close(c->msg_fd);
	maildrop_close(&c->md);
	passdb_user_clear(&c->user);
	pop3_session_free(&c->session);
	event_free(c->timer);
	job_deinit(&c->job);
	OPENSSL_cleanse(c->token, sizeof(c->token));
	c->loop->ctx->conn_ended(c->loop->ctx->conn_context);
	free(c);
}

static void conn_free(struct conn *c, const char *reason)
{
	if (c->job_running && c->auth_handle == 0) {
		/* A pool thread still uses c: free when it returns. */
		c->dead = true;
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		return;
	}
	if (c->logged_in) {
		const struct pop3_session_stats *st = pop3_session_stats(c->session);
		char user[LOG_ESCAPE_MAX + 1];
		log_escape(user, c->user.name, strlen(c->user.name));
		log_info("event=logout session=%s user=%s rip=%s retrieved=%u "
			 "deleted=%zu bytes=%" PRIu64 " reason=%s",
			 c->id, user, c->peer, st->retrieved, st->removed,
			 c->bytes_out, reason);
	} else {
		log_debug("event=disconnect session=%s rip=%s reason=%s", c->id,
			  c->peer, reason);
	}
	/* NULL only when STLS failed half-way and the socket is closed. */
	if (c->bev != NULL) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
		if (ssl != NULL && c->closing)
			/* All replies are out: say close_notify, so the
			   client can tell the end from a truncation. */
			SSL_shutdown(ssl);
		bufferevent_free(c->bev);
	}
	conn_teardown(c);
}

/* Login process: the connection now belongs to a mail process (and, for
   TLS, to a relay, which took c->bev): forget it here. */
static void conn_detach(struct conn *c)
{
	if (c->bev != NULL)
		bufferevent_free(c->bev); /* closes our copy of the socket */
	c->bev = NULL;
	conn_teardown(c);
}

/* ---- the driver ---- */

static void conn_process(struct conn *c)
{
	while (!c->job_running && !c->streaming && !c->closing) {
		const struct pop3_action *a = pop3_session_action(c->session);
		switch (a->type) {
		case POP3_ACTION_NONE:
			break;
		/* These park the connection until auth answers (the loop
		   then stops on job_running), or fail at once and the loop
		   goes on: no recursion through login_report(). */
		case POP3_ACTION_LOGIN:
			if (c->loop->ctx->role == CONN_ROLE_MAIL)
				conn_token_check(c);
			else
				conn_auth_login(c, a);
			continue;
		case POP3_ACTION_AUTH_STEP:
			if (c->loop->ctx->role == CONN_ROLE_MAIL) {
				pop3_session_abort(c->session, "not here");
				continue;
			}
			conn_auth_sasl(c, a);
			continue;
		case POP3_ACTION_COMMIT:
			conn_start_job(c, CONN_JOB_COMMIT);
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
		/* An exchange the client cancelled or broke: auth forgets it. */
		if (c->in_exchange && !pop3_session_in_auth(c->session))
			conn_auth_forget(c);
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
	if (c->auth_handle != 0) {
		/* The auth process has not answered in all this time (it may
		   be failing to start): stop waiting for it. */
		log_error("event=auth-timeout session=%s rip=%s", c->id, c->peer);
		auth_client_cancel(c->loop->ctx->auth, c->auth_handle);
		c->auth_handle = 0;
		c->job_running = false;
		c->in_exchange = false;
		pop3_session_abort(c->session, "[SYS/TEMP] authentication unavailable, try later");
		timer_arm(c->timer, CONN_RETRY_MS * 10);
		conn_process(c);
		return;
	}
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
	struct timeval write_timeout = { c->loop->ctx->set->output_timeout, 0 };

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

/* The parts of a new connection both roles share: c->bev is set. */
static int conn_init(struct conn *c, struct loop *loop)
{
	c->timer = evtimer_new(loop->base, timer_callback, c);
	if (c->timer == NULL || job_init(&c->job, loop->base) < 0)
		return -1;
	c->job.done = job_done;
	return 0;
}

/* Frees a connection that never got going. */
static void conn_abandon(struct conn *c, int fd)
{
	log_error("event=accept-failed error=\"out of memory\"");
	if (c->bev == NULL && fd >= 0)
		close(fd);
	if (c->session != NULL)
		pop3_session_free(&c->session);
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	if (c->timer != NULL)
		event_free(c->timer);
	job_deinit(&c->job);
	free(c);
}

static int conn_setup(struct conn *c, struct loop *loop, int fd, bool tls,
		      const struct sockaddr *addr)
{
	const struct server_context *ctx = loop->ctx;
	uint64_t serial = atomic_fetch_add(&conn_counter, 1);

	c->serial = (uint32_t)serial;
	snprintf(c->id, sizeof(c->id), "%x-%" PRIx64, (unsigned)getpid(), serial);
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
	if (conn_init(c, loop) < 0)
		return -1;
	c->session = pop3_session_new(&c->pop3, conn_output, c);
	if (c->session == NULL)
		return -1;
	conn_bev_setup(c, tls);
	timer_arm(c->timer, (long)ctx->set->login_timeout * 1000);
	return 0;
}

/*
 * The caps on connections per address and in total (all processes): over
 * them, a plain client hears why ([SYS/TEMP], RFC 3206) and is closed at
 * once; a TLS client is just closed (nothing can be said before the
 * handshake).  True if the connection was refused (fd closed).
 */
static bool conn_over_limits(struct loop *loop, int fd,
			     const struct sockaddr *addr, bool tls)
{
	static const char per_address[] =
		"-ERR [SYS/TEMP] too many connections from your address, try later\r\n";
	static const char total[] =
		"-ERR [SYS/TEMP] too many connections, try later\r\n";
	const struct server_context *ctx = loop->ctx;
	char rip[64];

	if (ctx->limits == NULL)
		return false;
	enum conn_limit_result r = conn_limits_acquire(ctx->limits,
						       ctx->limits_index, addr);
	if (r == CONN_LIMIT_OK)
		return false;
	if (!tls) {
		const char *text = r == CONN_LIMIT_ADDRESS ? per_address : total;
		(void)!send(fd, text, strlen(text), MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	peer_name(addr, rip, sizeof(rip));
	log_info("event=connection-refused rip=%s reason=%s", rip,
		 r == CONN_LIMIT_ADDRESS ? "per-address-cap" : "total-cap");
	close(fd);
	return true;
}

/* The pool is full: the oldest connection not yet logged in goes. */
static void pool_evict_oldest(void)
{
	struct conn *old = pool_head;

	pool_remove(old);
	log_info("event=preauth-evicted session=%s rip=%s", old->id, old->peer);
	if (old->job_running || old->handshaking || old->closing) {
		conn_free(old, "evicted");
		return;
	}
	pop3_session_abort(old->session, "[SYS/TEMP] too many clients, try again later");
	conn_process(old);
}

void conn_accept(struct loop *loop, int fd, const struct sockaddr *addr,
		 socklen_t addrlen, bool tls)
{
	struct conn *c;
	int one = 1;

	if (conn_over_limits(loop, fd, addr, tls))
		return;
	if (pool_count >= loop->ctx->preauth_limit && pool_head != NULL)
		pool_evict_oldest();
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		if (loop->ctx->limits != NULL)
			conn_limits_release(loop->ctx->limits, loop->ctx->limits_index,
					    addr);
		close(fd);
		return;
	}
	c->loop = loop;
	c->msg_fd = -1;
	c->limited = loop->ctx->limits != NULL;
	if (addrlen <= sizeof(c->addr))
		memcpy(&c->addr, addr, addrlen);
	peer_name(addr, c->peer, sizeof(c->peer));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (conn_setup(c, loop, fd, tls, addr) < 0) {
		if (c->limited)
			conn_limits_release(loop->ctx->limits, loop->ctx->limits_index,
					    addr);
		conn_abandon(c, fd);
		return;
	}
	loop->ctx->conn_started(loop->ctx->conn_context);
	pool_add(c);
	log_debug("event=connect session=%s rip=%s", c->id, c->peer);
}

/* Mail process: a handed-over connection counts here now (the login
   process stopped counting it).  Over the caps it is served anyway, since
   the client has logged in, but not counted. */
static void conn_count_adopted(struct conn *c)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&c->addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&c->addr;
	const struct server_context *ctx = c->loop->ctx;

	if (ctx->limits == NULL)
		return;
	memset(&c->addr, 0, sizeof(c->addr));
	if (inet_pton(AF_INET, c->peer, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, c->peer, &sin6->sin6_addr) == 1)
		sin6->sin6_family = AF_INET6;
	else
		return;
	c->limited = conn_limits_acquire(ctx->limits, ctx->limits_index,
					 (struct sockaddr *)&c->addr) == CONN_LIMIT_OK;
}

/* Puts bytes the client sent to the login process in front of what the
   socket will bring.  (libevent keeps a socket bufferevent's input frozen
   at its end, for itself; it is thawed for this.) */
static int conn_preload(struct bufferevent *bev, const uint8_t *data, size_t len)
{
	struct evbuffer *in = bufferevent_get_input(bev);

	if (len == 0)
		return 0;
	evbuffer_unfreeze(in, 0);
	int ret = evbuffer_add(in, data, len);
	evbuffer_freeze(in, 0);
	return ret;
}

void conn_adopt(struct loop *loop, int fd, struct handover *h)
{
	const struct server_context *ctx = loop->ctx;
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		free(h->input);
		return;
	}
	c->loop = loop;
	c->msg_fd = -1;
	snprintf(c->id, sizeof(c->id), "%s", h->session);
	snprintf(c->peer, sizeof(c->peer), "%s", h->rip);
	conn_count_adopted(c);
	memcpy(c->token, h->token, sizeof(c->token));
	OPENSSL_cleanse(h->token, sizeof(h->token));
	c->pop3 = ctx->pop3;
	c->pop3.tls = h->tls;
	c->bev = bufferevent_socket_new(loop->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL || conn_init(c, loop) < 0 ||
	    conn_preload(c->bev, h->input, h->input_len) < 0 ||
	    (c->session = pop3_session_new_authenticated(&c->pop3, conn_output,
							 c)) == NULL) {
		free(h->input);
		conn_abandon(c, fd);
		return;
	}
	free(h->input);
	conn_bev_setup(c, false);
	timer_arm(c->timer, (long)ctx->set->login_timeout * 1000);
	ctx->conn_started(ctx->conn_context);
	conn_process(c);
}
