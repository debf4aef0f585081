/*
 * auth-server.c — the auth process (see auth-server.h).
 *
 * Requests run on the job pool (hashing is slow on purpose); replies go
 * back on the loop.  A request from an address with recent failures first
 * waits its penalty; a failed one is answered no sooner than
 * auth_failure_delay_ms after it came in, whatever the reason, so unknown
 * users and wrong passwords look alike.
 */
#include "auth-server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth-penalty.h"
#include "auth-proto.h"
#include "user-policy.h"
#include "ipc-conn.h"
#include "ipc.h"
#include "jobs.h"
#include "log.h"
#include "passdb.h"
#include "password.h"
#include "sasl.h"
#include "userdb-lookup.h"

/* Open SASL exchanges one login process may hold. */
#define AUTH_EXCHANGES_MAX 8192
#define AUTH_EXCHANGE_BUCKETS 1024
/* Tokens waiting to be redeemed, and how far a lookup probes. */
#define AUTH_TOKEN_SLOTS 8192
#define AUTH_TOKEN_PROBES 64
/* Longest challenge any mechanism sends (SCRAM's server-first). */
#define AUTH_CHALLENGE_MAX 512
/* Exchanges idle this long are dropped (the client is long gone). */
#define AUTH_EXCHANGE_IDLE_SECONDS 3600
#define AUTH_SWEEP_SECONDS 60

/* PEER_USERDB: a peer on userdb_socket (popbox-deliver), which may only
   look recipients up. */
enum peer_role { PEER_LOGIN = 1, PEER_MAIL = 2, PEER_USERDB = 4 };

struct exchange {
	struct exchange *next;     /* bucket chain */
	uint32_t conn;
	struct sasl_server *sasl;
	bool busy;                 /* a step is on the job pool */
	bool forget;               /* drop when the step returns */
	time_t last_used;
};

struct peer {
	struct peer *prev, *next;
	struct auth_server *srv;
	struct ipc_conn *conn;
	unsigned int roles;
	unsigned int refs;         /* requests in flight */
	bool gone;
	unsigned int exchange_count;
	struct exchange *buckets[AUTH_EXCHANGE_BUCKETS];
};

struct token_entry {
	uint8_t token[AUTH_TOKEN_LEN];
	time_t expires;            /* 0: free */
	struct passdb_user user;
};

struct auth_server {
	const struct auth_server_params *params;
	struct event_base *base;
	struct passdb *passdb;
	struct jobs *jobs;
	struct auth_penalty *penalty;
	struct peer *peers;
	struct token_entry tokens[AUTH_TOKEN_SLOTS];
	struct event *sweep;
};

struct request {
	struct job job;            /* first: job callbacks cast back */
	struct peer *peer;
	uint16_t type;
	uint32_t id;
	struct auth_penalty_key key;
	char rip[64];
	char user[USERNAME_MAX * 4 + 1];
	char password[PASSWORD_MAX + 1];
	char timestamp[256];
	char digest[64];
	struct exchange *ex;
	bool have_data;
	uint8_t data[SASL_CLIENT_MAX];
	size_t data_len;
	struct timespec start;
	struct event *timer;
	bool answering;            /* the timer is the failure delay */
	/* results, filled on the pool thread */
	int status;                /* enum auth_status */
	uint8_t challenge[AUTH_CHALLENGE_MAX];
	size_t challenge_len;
	struct passdb_user record;
};

/* ---- replies ---- */

static struct ipc_writer reply_writer;

static void reply_send(struct peer *p, struct ipc_writer *w)
{
	if (p->gone || w->overflow)
		return;
	if (ipc_conn_send(p->conn, w->buf, w->len) < 0)
		log_warn("event=auth-reply-dropped");
}

static void reply_status(struct peer *p, uint32_t id, int status)
{
	ipc_writer_init(&reply_writer, AUTH_MSG_REPLY, id);
	ipc_put_u32(&reply_writer, AUTH_TAG_STATUS, (uint32_t)status);
	reply_send(p, &reply_writer);
}

/* ---- tokens ---- */

static size_t token_home(const uint8_t *token)
{
	uint32_t h;
	memcpy(&h, token, sizeof(h));
	return h % AUTH_TOKEN_SLOTS;
}

static void token_clear(struct token_entry *t)
{
	passdb_user_clear(&t->user);
	OPENSSL_cleanse(t->token, sizeof(t->token));
	t->expires = 0;
}

/* Stores record (moved in) under a fresh token; false if no room. */
static bool token_issue(struct auth_server *srv, struct passdb_user *record,
			uint8_t token_r[AUTH_TOKEN_LEN])
{
	time_t now = time(NULL);

	if (RAND_bytes(token_r, AUTH_TOKEN_LEN) != 1)
		return false;
	size_t home = token_home(token_r);
	for (size_t i = 0; i < AUTH_TOKEN_PROBES; i++) {
		struct token_entry *t = &srv->tokens[(home + i) % AUTH_TOKEN_SLOTS];
		if (t->expires != 0 && t->expires >= now)
			continue;
		if (t->expires != 0)
			token_clear(t);
		memcpy(t->token, token_r, AUTH_TOKEN_LEN);
		t->user = *record;
		memset(record, 0, sizeof(*record));
		t->expires = now + AUTH_TOKEN_TTL;
		return true;
	}
	return false;
}

/* Takes the token's record out (the token is then spent). */
static bool token_redeem(struct auth_server *srv, const uint8_t *token,
			 struct passdb_user *record_r)
{
	time_t now = time(NULL);
	size_t home = token_home(token);

	for (size_t i = 0; i < AUTH_TOKEN_PROBES; i++) {
		struct token_entry *t = &srv->tokens[(home + i) % AUTH_TOKEN_SLOTS];
		if (t->expires == 0 ||
		    CRYPTO_memcmp(t->token, token, AUTH_TOKEN_LEN) != 0)
			continue;
		bool live = t->expires >= now;
		*record_r = t->user;
		memset(&t->user, 0, sizeof(t->user));
		token_clear(t);
		if (!live)
			passdb_user_clear(record_r);
		return live;
	}
	return false;
}

/* ---- exchanges ---- */

static struct exchange **exchange_slot(struct peer *p, uint32_t conn)
{
	struct exchange **e = &p->buckets[conn % AUTH_EXCHANGE_BUCKETS];
	while (*e != NULL && (*e)->conn != conn)
		e = &(*e)->next;
	return e;
}

static void exchange_drop(struct peer *p, struct exchange *ex)
{
	struct exchange **e = exchange_slot(p, ex->conn);
	if (*e == ex)
		*e = ex->next;
	sasl_server_free(&ex->sasl);
	free(ex);
	p->exchange_count--;
}

static void peer_unref(struct peer *p);

/* ---- requests ---- */

static void request_free(struct request *r)
{
	struct peer *p = r->peer;

	if (r->timer != NULL)
		event_free(r->timer);
	passdb_user_clear(&r->record);
	job_deinit(&r->job);
	OPENSSL_cleanse(r, sizeof(*r));
	free(r);
	peer_unref(p);
}

static long request_age_ms(const struct request *r)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - r->start.tv_sec) * 1000 +
	       (now.tv_nsec - r->start.tv_nsec) / 1000000;
}

static void request_timer_arm(struct request *r, long ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	evtimer_add(r->timer, &tv);
}

static bool request_failed(const struct request *r)
{
	return r->status == AUTH_STATUS_FAIL || r->status == AUTH_STATUS_MALFORMED;
}

static void request_reply(struct request *r)
{
	struct peer *p = r->peer;
	uint8_t token[AUTH_TOKEN_LEN];

	ipc_writer_init(&reply_writer, AUTH_MSG_REPLY, r->id);
	if (r->status == AUTH_STATUS_OK &&
	    !token_issue(p->srv, &r->record, token)) {
		log_error("event=auth-token-table-full");
		r->status = AUTH_STATUS_TEMPFAIL;
	}
	ipc_put_u32(&reply_writer, AUTH_TAG_STATUS, (uint32_t)r->status);
	if (r->status == AUTH_STATUS_OK) {
		ipc_put(&reply_writer, AUTH_TAG_TOKEN, token, sizeof(token));
		ipc_put_str(&reply_writer, AUTH_TAG_USER, r->user);
		OPENSSL_cleanse(token, sizeof(token));
	} else if (r->status == AUTH_STATUS_CONTINUE) {
		ipc_put(&reply_writer, AUTH_TAG_CHALLENGE, r->challenge,
			r->challenge_len);
	} else if (r->user[0] != '\0') {
		/* The name the client gave, for the login process's log. */
		ipc_put_str(&reply_writer, AUTH_TAG_USER, r->user);
	}
	reply_send(p, &reply_writer);
	request_free(r);
}

/* USERDB_REPLY: the record, or FAIL (unknown user) or TEMPFAIL. */
static void userdb_reply(struct request *r)
{
	struct peer *p = r->peer;
	uint32_t status = r->status == AUTH_STATUS_OK ||
			  r->status == AUTH_STATUS_FAIL ?
			  (uint32_t)r->status : AUTH_STATUS_TEMPFAIL;
	char name[LOG_ESCAPE_MAX + 1];

	userdb_lookup_reply_put(&reply_writer, r->id, status, &r->record);
	if (reply_writer.overflow) {
		status = AUTH_STATUS_TEMPFAIL; /* paths too long to carry */
		userdb_lookup_reply_put(&reply_writer, r->id, status, NULL);
	}
	log_debug("event=userdb-lookup user=%s status=%u",
		  log_escape(name, r->user, strlen(r->user)), status);
	reply_send(p, &reply_writer);
	request_free(r);
}

static void request_timer_done(evutil_socket_t fd, short what, void *arg);

/* Back on the loop after the job. */
static void request_job_done(struct job *job)
{
	struct request *r = (struct request *)job;
	struct peer *p = r->peer;

	if (r->ex != NULL) {
		struct exchange *ex = r->ex;
		ex->busy = false;
		ex->last_used = time(NULL);
		if (r->status != AUTH_STATUS_CONTINUE || ex->forget || p->gone)
			exchange_drop(p, ex);
		r->ex = NULL;
	}
	if (p->gone) {
		request_free(r);
		return;
	}
	if (r->type == AUTH_MSG_USERDB_LOOKUP) {
		userdb_reply(r); /* no password: no penalty, no delay */
		return;
	}
	if (request_failed(r)) {
		auth_penalty_failed(p->srv->penalty, &r->key, time(NULL));
		long wait = (long)p->srv->params->set->auth_failure_delay_ms -
			    request_age_ms(r);
		if (wait > 0) {
			r->answering = true;
			request_timer_arm(r, wait);
			return;
		}
	}
	request_reply(r);
}

static int status_from_passdb(enum passdb_result result)
{
	switch (result) {
	case PASSDB_OK:
		return AUTH_STATUS_OK;
	case PASSDB_FAIL:
		return AUTH_STATUS_FAIL;
	default:
		return AUTH_STATUS_TEMPFAIL;
	}
}

static int status_from_sasl(enum sasl_status status)
{
	switch (status) {
	case SASL_CONTINUE:
		return AUTH_STATUS_CONTINUE;
	case SASL_OK:
		return AUTH_STATUS_OK;
	case SASL_FAIL:
		return AUTH_STATUS_FAIL;
	case SASL_MALFORMED:
		return AUTH_STATUS_MALFORMED;
	default:
		return AUTH_STATUS_TEMPFAIL;
	}
}

/* On a pool thread. */
static void request_job_run(struct job *job)
{
	struct request *r = (struct request *)job;
	struct passdb *db = r->peer->srv->passdb;

	switch (r->type) {
	case AUTH_MSG_PASS:
		r->status = status_from_passdb(
			passdb_verify_plain(db, r->user, r->password, &r->record));
		break;
	case AUTH_MSG_APOP:
		r->status = status_from_passdb(
			passdb_verify_apop(db, r->user, r->timestamp, r->digest,
					   &r->record));
		break;
	case AUTH_MSG_USERDB_LOOKUP:
		r->status = status_from_passdb(
			passdb_user_lookup(db, r->user, &r->record));
		break;
	case AUTH_MSG_SASL: {
		const uint8_t *out = NULL;
		size_t out_len = 0;
		enum sasl_status st = sasl_server_step(
			r->ex->sasl, db, r->have_data ? r->data : NULL,
			r->data_len, &out, &out_len, &r->record);
		r->status = status_from_sasl(st);
		if (st == SASL_CONTINUE) {
			if (out_len > sizeof(r->challenge)) {
				r->status = AUTH_STATUS_TEMPFAIL;
			} else {
				if (out_len > 0)
					memcpy(r->challenge, out, out_len);
				r->challenge_len = out_len;
			}
		}
		const char *name = sasl_server_user(r->ex->sasl);
		if (r->status == AUTH_STATUS_OK && r->record.name != NULL)
			name = r->record.name;
		snprintf(r->user, sizeof(r->user), "%s", name != NULL ? name : "");
		break;
	}
	}
	OPENSSL_cleanse(r->password, sizeof(r->password));
	OPENSSL_cleanse(r->data, sizeof(r->data));
	if (r->status == AUTH_STATUS_OK && r->record.name != NULL)
		snprintf(r->user, sizeof(r->user), "%s", r->record.name);
}

static void request_submit(struct request *r)
{
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	jobs_submit(r->peer->srv->jobs, &r->job);
}

static void request_timer_done(evutil_socket_t fd, short what, void *arg)
{
	struct request *r = arg;
	(void)fd;
	(void)what;
	if (r->peer->gone) {
		if (r->ex != NULL) {
			r->ex->busy = false;
			exchange_drop(r->peer, r->ex);
			r->ex = NULL;
		}
		request_free(r);
	} else if (r->answering) {
		request_reply(r);
	} else {
		request_submit(r);
	}
}

/* Parses the address text into the penalty key (unknown: all share one,
   and the text is replaced, since it will be logged). */
static void request_key(struct request *r)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };

	if (inet_pton(AF_INET, r->rip, &sin.sin_addr) == 1) {
		auth_penalty_key_from((struct sockaddr *)&sin, &r->key);
	} else if (inet_pton(AF_INET6, r->rip, &sin6.sin6_addr) == 1) {
		auth_penalty_key_from((struct sockaddr *)&sin6, &r->key);
	} else {
		/* Not an address: it goes into no log line as it came. */
		memset(&r->key, 0, sizeof(r->key));
		snprintf(r->rip, sizeof(r->rip), "unknown");
	}
}

/* A new attempt waits out its address's penalty, then runs. */
static void request_start(struct request *r, bool attempt)
{
	struct auth_server *srv = r->peer->srv;
	unsigned int ms = attempt ?
		auth_penalty_delay_ms(srv->penalty, &r->key, time(NULL)) : 0;

	if (ms > 0) {
		log_info("event=auth-penalty rip=%s delay_ms=%u", r->rip, ms);
		request_timer_arm(r, ms);
		clock_gettime(CLOCK_MONOTONIC, &r->start);
		return;
	}
	request_submit(r);
}

static struct request *request_new(struct peer *p, const struct ipc_msg *msg)
{
	struct request *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->peer = p;
	r->type = msg->type;
	r->id = msg->id;
	r->job.run = request_job_run;
	r->job.done = request_job_done;
	r->timer = evtimer_new(p->srv->base, request_timer_done, r);
	if (r->timer == NULL || job_init(&r->job, p->srv->base) < 0) {
		if (r->timer != NULL)
			event_free(r->timer);
		free(r);
		return NULL;
	}
	p->refs++;
	if (!ipc_get_str(msg, AUTH_TAG_RIP, r->rip, sizeof(r->rip)))
		snprintf(r->rip, sizeof(r->rip), "unknown");
	request_key(r);
	return r;
}

/* Fields of PASS / APOP; false if the login side sent something no client
   could have caused. */
static bool request_fill_login(struct request *r, const struct ipc_msg *msg)
{
	if (!ipc_get_str(msg, AUTH_TAG_USER, r->user, sizeof(r->user)))
		return false;
	if (r->type == AUTH_MSG_PASS)
		return ipc_get_str(msg, AUTH_TAG_PASSWORD, r->password,
				   sizeof(r->password));
	return ipc_get_str(msg, AUTH_TAG_TIMESTAMP, r->timestamp,
			   sizeof(r->timestamp)) &&
	       ipc_get_str(msg, AUTH_TAG_DIGEST, r->digest, sizeof(r->digest));
}

static void handle_login(struct peer *p, const struct ipc_msg *msg)
{
	struct request *r = request_new(p, msg);

	if (r == NULL) {
		reply_status(p, msg->id, AUTH_STATUS_TEMPFAIL);
		return;
	}
	if (!request_fill_login(r, msg)) {
		r->status = AUTH_STATUS_MALFORMED;
		request_reply(r);
		return;
	}
	request_start(r, true);
}

/* Finds or (on a first step) opens the exchange a SASL step belongs to. */
static struct exchange *exchange_for(struct peer *p, uint32_t conn,
				     bool first, uint32_t mech)
{
	struct exchange **slot = exchange_slot(p, conn);
	struct exchange *ex = *slot;

	if (!first)
		return ex != NULL && !ex->busy ? ex : NULL;
	if (ex != NULL) {
		if (ex->busy)
			return NULL;
		exchange_drop(p, ex);
		slot = exchange_slot(p, conn);
	}
	if (mech >= SASL_MECH_COUNT || p->exchange_count >= AUTH_EXCHANGES_MAX)
		return NULL;
	ex = calloc(1, sizeof(*ex));
	if (ex == NULL)
		return NULL;
	ex->sasl = sasl_server_new((enum sasl_mech)mech);
	if (ex->sasl == NULL) {
		free(ex);
		return NULL;
	}
	ex->conn = conn;
	ex->next = NULL;
	*slot = ex;
	p->exchange_count++;
	return ex;
}

static void handle_sasl(struct peer *p, const struct ipc_msg *msg)
{
	uint32_t conn = 0, mech = SASL_MECH_COUNT;
	bool first = msg->fields[AUTH_TAG_FIRST].present;
	const struct ipc_field *data = &msg->fields[AUTH_TAG_DATA];

	if (!ipc_get_u32(msg, AUTH_TAG_CONN, &conn) ||
	    (first && !ipc_get_u32(msg, AUTH_TAG_MECH, &mech)) ||
	    (!first && !data->present) || data->len > SASL_CLIENT_MAX) {
		reply_status(p, msg->id, AUTH_STATUS_MALFORMED);
		return;
	}
	struct exchange *ex = exchange_for(p, conn, first, mech);
	if (ex == NULL) {
		reply_status(p, msg->id, first ? AUTH_STATUS_TEMPFAIL :
					       AUTH_STATUS_MALFORMED);
		return;
	}
	struct request *r = request_new(p, msg);
	if (r == NULL) {
		exchange_drop(p, ex);
		reply_status(p, msg->id, AUTH_STATUS_TEMPFAIL);
		return;
	}
	ex->busy = true;
	ex->last_used = time(NULL);
	r->ex = ex;
	r->have_data = data->present;
	r->data_len = data->len;
	if (data->len > 0)
		memcpy(r->data, data->data, data->len);
	request_start(r, first);
}

static void handle_forget(struct peer *p, const struct ipc_msg *msg)
{
	uint32_t conn;

	if (!ipc_get_u32(msg, AUTH_TAG_CONN, &conn))
		return;
	struct exchange *ex = *exchange_slot(p, conn);
	if (ex == NULL)
		return;
	if (ex->busy)
		ex->forget = true;
	else
		exchange_drop(p, ex);
}

static void handle_token_check(struct peer *p, const struct ipc_msg *msg)
{
	uint8_t token[AUTH_TOKEN_LEN];
	struct passdb_user rec;

	ipc_writer_init(&reply_writer, AUTH_MSG_TOKEN_REPLY, msg->id);
	if (!ipc_get_fixed(msg, AUTH_TAG_TOKEN, token, sizeof(token)) ||
	    !token_redeem(p->srv, token, &rec)) {
		log_warn("event=auth-token-refused");
		ipc_put_u32(&reply_writer, AUTH_TAG_STATUS, AUTH_STATUS_FAIL);
		reply_send(p, &reply_writer);
		return;
	}
	ipc_put_u32(&reply_writer, AUTH_TAG_STATUS, AUTH_STATUS_OK);
	userdb_record_put(&reply_writer, &rec);
	reply_send(p, &reply_writer);
	passdb_user_clear(&rec);
	OPENSSL_cleanse(token, sizeof(token));
}

/* A recipient's record for delivery: no password, so no penalty and no
   failure delay (an unknown recipient is an ordinary answer). */
static void handle_userdb_lookup(struct peer *p, const struct ipc_msg *msg)
{
	struct request *r = request_new(p, msg);

	if (r == NULL) {
		userdb_lookup_reply_put(&reply_writer, msg->id,
					AUTH_STATUS_TEMPFAIL, NULL);
		reply_send(p, &reply_writer);
		return;
	}
	if (!ipc_get_str(msg, AUTH_TAG_USER, r->user, sizeof(r->user))) {
		/* A name too long or with a NUL names nobody: unknown, as
		   for any other name that cannot be a user. */
		r->status = msg->fields[AUTH_TAG_USER].present ?
			    AUTH_STATUS_FAIL : AUTH_STATUS_MALFORMED;
		userdb_reply(r);
		return;
	}
	request_submit(r);
}

/* ---- peers ---- */

static void peer_free(struct peer *p)
{
	struct auth_server *srv = p->srv;

	for (size_t i = 0; i < AUTH_EXCHANGE_BUCKETS; i++) {
		while (p->buckets[i] != NULL)
			exchange_drop(p, p->buckets[i]);
	}
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		srv->peers = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	free(p);
}

static void peer_unref(struct peer *p)
{
	if (--p->refs == 0 && p->gone)
		peer_free(p);
}

static void peer_packet(struct ipc_conn *conn, const uint8_t *buf, size_t len,
			void *context)
{
	struct peer *p = context;
	struct ipc_msg msg;
	(void)conn;

	if (ipc_parse(buf, len, &msg) < 0) {
		log_warn("event=auth-bad-message error=\"unparsable\"");
		return;
	}
	unsigned int need = msg.type == AUTH_MSG_TOKEN_CHECK ? PEER_MAIL :
			    msg.type == AUTH_MSG_USERDB_LOOKUP ?
			    PEER_MAIL | PEER_USERDB : PEER_LOGIN;
	if ((p->roles & need) == 0 ||
	    (msg.type != AUTH_MSG_PASS && msg.type != AUTH_MSG_APOP &&
	     msg.type != AUTH_MSG_SASL && msg.type != AUTH_MSG_FORGET &&
	     msg.type != AUTH_MSG_TOKEN_CHECK &&
	     msg.type != AUTH_MSG_USERDB_LOOKUP)) {
		log_warn("event=auth-bad-message type=%u roles=%u", msg.type,
			 p->roles);
		reply_status(p, msg.id, AUTH_STATUS_MALFORMED);
		return;
	}
	switch (msg.type) {
	case AUTH_MSG_PASS:
	case AUTH_MSG_APOP:
		handle_login(p, &msg);
		break;
	case AUTH_MSG_SASL:
		handle_sasl(p, &msg);
		break;
	case AUTH_MSG_FORGET:
		handle_forget(p, &msg);
		break;
	case AUTH_MSG_TOKEN_CHECK:
		handle_token_check(p, &msg);
		break;
	case AUTH_MSG_USERDB_LOOKUP:
		handle_userdb_lookup(p, &msg);
		break;
	}
}

static void peer_closed(struct ipc_conn *conn, void *context)
{
	struct peer *p = context;

	p->gone = true;
	ipc_conn_free(conn);
	p->conn = NULL;
	/* Exchanges whose step is running go when it returns. */
	for (size_t i = 0; i < AUTH_EXCHANGE_BUCKETS; i++) {
		struct exchange *ex = p->buckets[i];
		while (ex != NULL) {
			struct exchange *next = ex->next;
			if (!ex->busy)
				exchange_drop(p, ex);
			ex = next;
		}
	}
	p->refs++;
	peer_unref(p);
}

/* A new peer with these roles on fd (taken over). */
static void peer_add(struct auth_server *srv, int fd, unsigned int roles,
		     pid_t pid)
{
	struct peer *p = calloc(1, sizeof(*p));
	if (p == NULL) {
		close(fd);
		return;
	}
	p->srv = srv;
	p->roles = roles;
	p->refs = 0;
	p->conn = ipc_conn_new(srv->base, fd, peer_packet, peer_closed, p);
	if (p->conn == NULL) {
		free(p);
		return;
	}
	p->next = srv->peers;
	if (srv->peers != NULL)
		srv->peers->prev = p;
	srv->peers = p;
	log_debug("event=auth-peer pid=%d roles=%u", (int)pid, roles);
}

static void accept_peer(struct evconnlistener *l, evutil_socket_t fd,
			struct sockaddr *addr, int len, void *arg)
{
	struct auth_server *srv = arg;
	const struct auth_server_params *params = srv->params;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	unsigned int roles = PEER_LOGIN | PEER_MAIL;
	(void)l;
	(void)addr;
	(void)len;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
		close(fd);
		return;
	}
	if (params->uid_checks) {
		roles = cred.uid == params->login_uid ? PEER_LOGIN :
			cred.uid == params->mail_uid ? PEER_MAIL : 0;
		if (roles == 0) {
			log_warn("event=auth-peer-refused uid=%u pid=%d",
				 (unsigned)cred.uid, (int)cred.pid);
			close(fd);
			return;
		}
	}
	peer_add(srv, fd, roles, cred.pid);
}

/* popbox-deliver on userdb_socket: mail_user only (the socket's mode
   already keeps others out; this holds even if it were changed). */
static void accept_userdb_peer(struct evconnlistener *l, evutil_socket_t fd,
			       struct sockaddr *addr, int len, void *arg)
{
	struct auth_server *srv = arg;
	const struct auth_server_params *params = srv->params;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	(void)l;
	(void)addr;
	(void)len;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
		close(fd);
		return;
	}
	if (cred.uid != (params->uid_checks ? params->mail_uid : geteuid())) {
		log_warn("event=userdb-peer-refused uid=%u pid=%d",
			 (unsigned)cred.uid, (int)cred.pid);
		close(fd);
		return;
	}
	peer_add(srv, fd, PEER_USERDB, cred.pid);
}

/* Drops exchanges nobody has touched for long: a login process that
   forgot to say FORGET must not grow this process without end. */
static void sweep_callback(evutil_socket_t fd, short what, void *arg)
{
	struct auth_server *srv = arg;
	time_t now = time(NULL);
	(void)fd;
	(void)what;

	for (struct peer *p = srv->peers; p != NULL; p = p->next) {
		for (size_t i = 0; i < AUTH_EXCHANGE_BUCKETS; i++) {
			struct exchange *ex = p->buckets[i];
			while (ex != NULL) {
				struct exchange *next = ex->next;
				if (!ex->busy &&
				    now - ex->last_used > AUTH_EXCHANGE_IDLE_SECONDS)
					exchange_drop(p, ex);
				ex = next;
			}
		}
	}
	for (size_t i = 0; i < AUTH_TOKEN_SLOTS; i++) {
		if (srv->tokens[i].expires != 0 && srv->tokens[i].expires < now)
			token_clear(&srv->tokens[i]);
	}
}

void auth_server_run(const struct auth_server_params *params)
{
	static struct auth_server srv;
	const char *error;

	srv.params = params;
	evthread_use_pthreads();
	srv.base = event_base_new();
	if (srv.base == NULL)
		fatal("event=startup role=auth error=\"cannot create event loop\"");
	if (passdb_open(params->set->passdb_file, &srv.passdb, &error) < 0)
		fatal("event=startup role=auth passdb=%s error=\"%s\"",
		      params->set->passdb_file, error);
	if (jobs_start(params->set->auth_workers, &srv.jobs, &error) < 0)
		fatal("event=startup role=auth error=\"%s\"", error);
	srv.penalty = auth_penalty_new(params->set->auth_penalty_max_ms);
	if (srv.penalty == NULL)
		fatal("event=startup role=auth error=\"out of memory\"");
	struct evconnlistener *l = evconnlistener_new(
		srv.base, accept_peer, &srv, LEV_OPT_CLOSE_ON_EXEC, 0,
		params->listen_fd);
	srv.sweep = event_new(srv.base, -1, EV_PERSIST, sweep_callback, &srv);
	if (l == NULL || srv.sweep == NULL)
		fatal("event=startup role=auth error=\"cannot listen\"");
	if (params->userdb_fd >= 0 &&
	    evconnlistener_new(srv.base, accept_userdb_peer, &srv,
			       LEV_OPT_CLOSE_ON_EXEC, 0,
			       params->userdb_fd) == NULL)
		fatal("event=startup role=auth error=\"cannot listen on "
		      "userdb_socket\"");
	struct timeval tv = { AUTH_SWEEP_SECONDS, 0 };
	event_add(srv.sweep, &tv);
	log_info("event=started role=auth workers=%u", params->set->auth_workers);
	event_base_dispatch(srv.base);
	fatal("event=stopped role=auth error=\"event loop ended\"");
}
