/*
 * lmtp-conn.c — one LMTP connection in a mail process (see lmtp-conn.h).
 *
 * The driver (lmtp_process) hands input to the core while no job or auth
 * request is in flight (`busy`) and not too much output waits; the
 * bufferevent stops reading from the socket once LMTP_IN_HIGH bytes wait,
 * so a busy connection holds at most that much input plus the core's one
 * piece of message.  Every file-system call (deliver_*) runs on the job
 * pool; the loop never blocks.  A connection whose job is in flight is
 * freed only when the job returns; one that ends with deliveries still
 * open runs one last job that aborts them (their tmp/ files go).
 */
#include "lmtp-conn.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth-client.h"
#include "conn.h"
#include "deliver.h"
#include "jobs.h"
#include "lmtp-session.h"
#include "log.h"
#include "netmask.h"
#include "settings.h"
#include "userdb-lookup.h"

/* Stop reading from the socket once this much input waits: one piece of
   message for the core and change. */
#define LMTP_IN_HIGH (LMTP_CHUNK_MAX + 16 * 1024)
/* Stop feeding commands while this much output waits (a client that
   pipelines without reading). */
#define LMTP_OUT_HIGH (64 * 1024)
/* Bytes offered to the core at once outside DATA: more than a line. */
#define LMTP_PULL_MAX (2 * LMTP_LINE_MAX)
/* While a job runs, a timer that fires is retried after this long. */
#define LMTP_RETRY_MS 1000
/* Failure texts kept per recipient for the log. */
#define LMTP_ERROR_MAX 160
/* The refusal line: the host name (at most 255 bytes) and the text. */
#define LMTP_REFUSAL_MAX 320
/* The share of the process's descriptors that open copies may take (one
   in LMTP_COPIES_FD_SHARE): the rest stay for POP3 sessions. */
#define LMTP_COPIES_FD_SHARE 4

enum lmtp_job_kind {
	LMTP_JOB_OPEN,     /* RCPT: deliver_begin */
	LMTP_JOB_WRITE,    /* DATA: one piece to every open copy */
	LMTP_JOB_COMMIT,   /* after the final dot: one recipient's copy */
	LMTP_JOB_ABORT,    /* RSET, too big, the end: drop every open copy */
};

/* An accepted recipient and its copy of the message. */
struct lmtp_rcpt {
	struct deliver *d;           /* NULL once committed, aborted or failed */
	char *user;                  /* the user name found, for the log */
	char *address;               /* as the MTA gave it, for the log */
	bool failed;                 /* a write failed: status and error say why */
	enum deliver_status status;
	char error[LMTP_ERROR_MAX];
};

struct lmtp_conn {
	struct job job;                 /* first: job callbacks cast back */
	struct loop *loop;
	struct bufferevent *bev;
	struct lmtp_session *session;
	struct event *timer;            /* idle deadline */
	enum lmtp_job_kind job_kind;
	bool busy;                      /* a job or an auth request in flight */
	bool dead;                      /* ended: free when the job returns */
	bool closing;                   /* flushing the last replies */
	bool peer_eof;                  /* the MTA half-closed */
	bool copy_reserved;             /* RCPT in progress holds a copy slot */
	uint32_t auth_handle;           /* pending lookup, 0 if none */
	struct passdb_user user;        /* RCPT: the record being opened */
	/* A job's result, handed from the pool thread to the loop. */
	struct deliver *opened;
	bool job_ok;
	enum deliver_status job_status;
	char job_error[LMTP_ERROR_MAX];
	char *job_name;                 /* COMMIT: the new file's name */
	struct lmtp_rcpt rcpts[LMTP_MAX_RECIPIENTS];
	size_t rcpt_count;
	size_t commit_next;             /* DATA_END: the next copy to commit */
	uint64_t msg_size;
	unsigned int delivered;         /* copies committed, for the last log */
	char id[32];
	char peer[64];
};

static struct lmtp_config lmtp_cfg;
static unsigned int lmtp_open_count;
/* Copies (open deliveries) in this process: every accepted recipient of a
   transaction not yet ended, and every RCPT being opened.  Each may hold
   DELIVER_OPEN_FDS descriptors, so a client (LMTP has no login) cannot
   take them all: past lmtp_copies_max, RCPT is answered 451 until others
   finish.  Per connection, LMTP_MAX_RECIPIENTS bounds them as well. */
static size_t lmtp_copies, lmtp_copies_max;
static atomic_uint_fast64_t lmtp_counter;
static struct ipc_writer lmtp_writer;   /* loops are single-threaded */

static void lmtp_process(struct lmtp_conn *c);
static void lmtp_free(struct lmtp_conn *c, const char *reason);
static void lmtp_start_job(struct lmtp_conn *c, enum lmtp_job_kind kind);

static void timer_arm(struct event *ev, long ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	evtimer_add(ev, &tv);
}

static void lmtp_arm_idle(struct lmtp_conn *c)
{
	timer_arm(c->timer, LMTP_IDLE_TIMEOUT_S * 1000L);
}

static void lmtp_output(void *context, const void *data, size_t len)
{
	struct lmtp_conn *c = context;
	evbuffer_add(bufferevent_get_output(c->bev), data, len);
}

static enum lmtp_result result_of(enum deliver_status status)
{
	switch (status) {
	case DELIVER_OK:
		return LMTP_RESULT_OK;
	case DELIVER_OVER_QUOTA:
		return LMTP_RESULT_OVER_QUOTA;
	case DELIVER_TOO_BIG:
		return LMTP_RESULT_TOO_BIG;
	case DELIVER_PERMFAIL:
		return LMTP_RESULT_CONFIG;
	case DELIVER_TEMPFAIL:
	default:
		return LMTP_RESULT_TEMPFAIL;
	}
}

static const char *status_name(enum deliver_status status)
{
	switch (status) {
	case DELIVER_OK:
		return "ok";
	case DELIVER_OVER_QUOTA:
		return "over-quota";
	case DELIVER_TOO_BIG:
		return "too-big";
	case DELIVER_PERMFAIL:
		return "maildir-unusable";
	case DELIVER_TEMPFAIL:
	default:
		return "tempfail";
	}
}

static bool rcpts_open(const struct lmtp_conn *c)
{
	for (size_t i = 0; i < c->rcpt_count; i++) {
		if (c->rcpts[i].d != NULL)
			return true;
	}
	return c->opened != NULL;
}

/* A slot for the copy RCPT is about to open; false if none is left. */
static bool copy_reserve(struct lmtp_conn *c)
{
	if (lmtp_copies >= lmtp_copies_max)
		return false;
	lmtp_copies++;
	c->copy_reserved = true;
	return true;
}

/* The RCPT in progress ended without a recipient: its slot is free. */
static void copy_release(struct lmtp_conn *c)
{
	if (c->copy_reserved)
		lmtp_copies--;
	c->copy_reserved = false;
}

/* Forgets the recipients (and frees their slots); their copies must be
   committed or aborted. */
static void rcpts_clear(struct lmtp_conn *c)
{
	for (size_t i = 0; i < c->rcpt_count; i++) {
		free(c->rcpts[i].user);
		free(c->rcpts[i].address);
		memset(&c->rcpts[i], 0, sizeof(c->rcpts[i]));
	}
	lmtp_copies -= c->rcpt_count;
	c->rcpt_count = 0;
	c->commit_next = 0;
}

/* ---- jobs: on a pool thread ---- */

static void job_failed(struct lmtp_conn *c, enum deliver_status status,
		       const char *error)
{
	c->job_ok = false;
	c->job_status = status;
	snprintf(c->job_error, sizeof(c->job_error), "%s", error);
}

/* RCPT: the user's Maildir, policy and quota; the tmp/ file is made. */
static void open_run(struct job *job)
{
	struct lmtp_conn *c = (struct lmtp_conn *)job;
	const struct popboxd_settings *set = c->loop->ctx->set;
	const struct lmtp_action *a = lmtp_session_action(c->session);
	struct deliver_envelope env = { a->sender, a->address };
	struct user_policy policy;
	enum deliver_status status;
	const char *error;
	char *path = NULL;

	c->opened = NULL;
	c->job_ok = false;
	if (settings_user_maildir(set, c->user.name, c->user.home, c->user.mail,
				  &path, &error) < 0) {
		/* A template that cannot expand is the admin's to fix. */
		job_failed(c, strcmp(error, "out of memory") == 0 ?
			   DELIVER_TEMPFAIL : DELIVER_PERMFAIL, error);
		return;
	}
	user_policy_resolve(&c->user.policy, set, &policy);
	if (deliver_begin(path, &env, &policy, a->size_hint,
			  set->message_size_limit, &c->opened, &status,
			  &error) < 0)
		job_failed(c, status, error);
	else
		c->job_ok = true;
	free(path);
}

/* DATA: the piece to every copy still good; a copy that fails is dropped
   at once (its tmp/ file goes) and answered with the failure at the end. */
static void write_run(struct job *job)
{
	struct lmtp_conn *c = (struct lmtp_conn *)job;
	const struct lmtp_action *a = lmtp_session_action(c->session);
	enum deliver_status status;
	const char *error;

	for (size_t i = 0; i < c->rcpt_count; i++) {
		struct lmtp_rcpt *r = &c->rcpts[i];
		if (r->d == NULL)
			continue;
		if (deliver_write(r->d, a->data, a->len, &status, &error) < 0) {
			r->failed = true;
			r->status = status;
			snprintf(r->error, sizeof(r->error), "%s", error);
			deliver_abort(&r->d);
		}
	}
}

/* After the final dot: one copy made durable and visible in new/. */
static void commit_run(struct job *job)
{
	struct lmtp_conn *c = (struct lmtp_conn *)job;
	struct lmtp_rcpt *r = &c->rcpts[c->commit_next];
	enum deliver_status status;
	const char *error;

	c->job_name = NULL;
	c->job_ok = false;
	if (r->d == NULL) {
		job_failed(c, r->failed ? r->status : DELIVER_TEMPFAIL,
			   r->failed ? r->error : "delivery not open");
		return;
	}
	if (deliver_commit(&r->d, &c->job_name, &status, &error) < 0)
		job_failed(c, status, error);
	else
		c->job_ok = true;
}

static void abort_run(struct job *job)
{
	struct lmtp_conn *c = (struct lmtp_conn *)job;

	for (size_t i = 0; i < c->rcpt_count; i++)
		deliver_abort(&c->rcpts[i].d);
	deliver_abort(&c->opened);
}

/* ---- jobs: back on the loop ---- */

static void log_refused(const struct lmtp_conn *c, const char *address,
			const char *user, const char *reason, const char *error)
{
	char rcpt[LOG_ESCAPE_MAX + 1], name[LOG_ESCAPE_MAX + 1];
	char err[LOG_ESCAPE_MAX + 1];

	log_escape(rcpt, address, strlen(address));
	log_escape(name, user, strlen(user));
	log_escape(err, error, strlen(error));
	log_info("event=lmtp-rcpt-refused session=%s rcpt=%s user=%s reason=%s "
		 "error=\"%s\"", c->id, rcpt, name, reason, err);
}

static void open_done(struct lmtp_conn *c)
{
	const struct lmtp_action *a = lmtp_session_action(c->session);

	if (c->job_ok && a->index != c->rcpt_count) {
		/* Cannot happen: the core numbers accepted recipients. */
		deliver_abort(&c->opened);
		job_failed(c, DELIVER_TEMPFAIL, "recipient out of order");
	}
	if (!c->job_ok) {
		log_refused(c, a->address, c->user.name, status_name(c->job_status),
			    c->job_error);
		passdb_user_clear(&c->user);
		copy_release(c);
		lmtp_session_rcpt_done(c->session, result_of(c->job_status));
		return;
	}
	/* The slot passes to the recipient (rcpts_clear frees it). */
	c->copy_reserved = false;
	struct lmtp_rcpt *r = &c->rcpts[c->rcpt_count];
	r->user = c->user.name;     /* taken over */
	c->user.name = NULL;
	r->address = strdup(a->address);
	r->d = c->opened;
	c->opened = NULL;
	c->rcpt_count++;
	passdb_user_clear(&c->user);
	lmtp_session_rcpt_done(c->session, LMTP_RESULT_OK);
}

/* One copy's end, delivered or not, in the log. */
static void log_commit(const struct lmtp_conn *c, const struct lmtp_rcpt *r)
{
	char rcpt[LOG_ESCAPE_MAX + 1], name[LOG_ESCAPE_MAX + 1];
	char from[LOG_ESCAPE_MAX + 1], text[LOG_ESCAPE_MAX + 1];
	const char *sender = lmtp_session_action(c->session)->sender;
	const char *address = r->address != NULL ? r->address : "";
	const char *user = r->user != NULL ? r->user : "";

	log_escape(rcpt, address, strlen(address));
	log_escape(name, user, strlen(user));
	log_escape(from, sender != NULL ? sender : "",
		   sender != NULL ? strlen(sender) : 0);
	if (c->job_ok) {
		log_escape(text, c->job_name != NULL ? c->job_name : "",
			   c->job_name != NULL ? strlen(c->job_name) : 0);
		log_info("event=lmtp-delivered session=%s user=%s rcpt=%s from=%s "
			 "size=%" PRIu64 " file=%s", c->id, name, rcpt, from,
			 c->msg_size, text);
	} else {
		log_escape(text, c->job_error, strlen(c->job_error));
		log_warn("event=lmtp-delivery-failed session=%s user=%s rcpt=%s "
			 "from=%s size=%" PRIu64 " reason=%s error=\"%s\"", c->id,
			 name, rcpt, from, c->msg_size, status_name(c->job_status),
			 text);
	}
}

static void commit_done(struct lmtp_conn *c)
{
	struct lmtp_rcpt *r = &c->rcpts[c->commit_next++];

	log_commit(c, r);
	if (c->job_ok)
		c->delivered++;
	free(c->job_name);
	c->job_name = NULL;
	lmtp_session_data_result(c->session, c->job_ok ? LMTP_RESULT_OK :
				 result_of(c->job_status));
	if (c->commit_next < c->rcpt_count)
		lmtp_start_job(c, LMTP_JOB_COMMIT);
	else
		rcpts_clear(c);
}

static void job_done(struct job *job)
{
	struct lmtp_conn *c = (struct lmtp_conn *)job;

	c->busy = false;
	if (c->dead) {
		/* A copy made durable after the MTA left: it is in new/, and
		   the MTA, without its 250, will send it again. */
		if (c->job_kind == LMTP_JOB_COMMIT)
			log_commit(c, &c->rcpts[c->commit_next]);
		/* Whatever the job was, nothing may stay open in tmp/. */
		lmtp_free(c, NULL);
		return;
	}
	switch (c->job_kind) {
	case LMTP_JOB_OPEN:
		open_done(c);
		break;
	case LMTP_JOB_WRITE:
		lmtp_session_action_done(c->session);
		break;
	case LMTP_JOB_COMMIT:
		commit_done(c);
		break;
	case LMTP_JOB_ABORT:
		rcpts_clear(c);
		lmtp_session_action_done(c->session);
		break;
	}
	lmtp_arm_idle(c);
	lmtp_process(c);
}

static void lmtp_start_job(struct lmtp_conn *c, enum lmtp_job_kind kind)
{
	static void (*const runs[])(struct job *) = {
		[LMTP_JOB_OPEN] = open_run,
		[LMTP_JOB_WRITE] = write_run,
		[LMTP_JOB_COMMIT] = commit_run,
		[LMTP_JOB_ABORT] = abort_run,
	};

	c->job_kind = kind;
	c->busy = true;
	c->job.run = runs[kind];
	jobs_submit(c->loop->ctx->jobs, &c->job);
}

/* ---- RCPT: the lookup with auth ---- */

static void lookup_reply(const struct ipc_msg *reply, void *context)
{
	struct lmtp_conn *c = context;
	const struct lmtp_action *a = lmtp_session_action(c->session);
	/* Copied: the core frees them with a refused recipient. */
	char address[LMTP_ADDRESS_MAX + 1], user[LMTP_ADDRESS_MAX + 1];

	c->auth_handle = 0;
	c->busy = false;
	snprintf(address, sizeof(address), "%s", a->address);
	snprintf(user, sizeof(user), "%s", a->user);
	switch (userdb_lookup_reply_get(reply, &c->user)) {
	case PASSDB_OK:
		lmtp_start_job(c, LMTP_JOB_OPEN);
		return;
	case PASSDB_FAIL:
		copy_release(c);
		lmtp_session_rcpt_done(c->session, LMTP_RESULT_UNKNOWN_USER);
		/* That was the last name to try: the recipient is refused. */
		if (lmtp_session_action(c->session)->type != LMTP_ACTION_RCPT)
			log_refused(c, address, user, "unknown-user",
				    "no such user");
		break;
	default:
		log_refused(c, address, a->user, "tempfail",
			    reply == NULL ? "auth process unavailable" :
			    "user database unavailable");
		copy_release(c);
		lmtp_session_rcpt_done(c->session, LMTP_RESULT_TEMPFAIL);
		break;
	}
	lmtp_process(c);
}

/* Asks auth for the recipient's record; answers at once if it cannot. */
static void lmtp_lookup(struct lmtp_conn *c, const struct lmtp_action *a)
{
	if (!copy_reserve(c)) {
		log_refused(c, a->address, a->user, "busy",
			    "too many deliveries open in this process");
		lmtp_session_rcpt_done(c->session, LMTP_RESULT_TEMPFAIL);
		return;
	}
	userdb_lookup_request(&lmtp_writer, a->user);
	c->auth_handle = auth_client_request(c->loop->ctx->auth, &lmtp_writer,
					     lookup_reply, c);
	if (c->auth_handle == 0) {
		log_refused(c, a->address, a->user, "tempfail",
			    "auth process unavailable");
		copy_release(c);
		lmtp_session_rcpt_done(c->session, LMTP_RESULT_TEMPFAIL);
		return;
	}
	c->busy = true;
}

/* ---- closing ---- */

static void lmtp_start_close(struct lmtp_conn *c)
{
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		lmtp_free(c, c->peer_eof ? "disconnected" : "closed");
}

/*
 * Ends the connection (reason NULL: the last job of a dead one returned).
 * The socket goes at once, so the MTA sees the end; the memory goes once
 * no job is in flight and no copy is open.
 */
static void lmtp_free(struct lmtp_conn *c, const char *reason)
{
	if (reason != NULL && !c->dead) {
		log_info("event=lmtp-disconnect session=%s rip=%s delivered=%u "
			 "reason=%s", c->id, c->peer, c->delivered, reason);
		c->dead = true;
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		c->bev = NULL;
		event_del(c->timer);
		if (c->auth_handle != 0) {
			auth_client_cancel(c->loop->ctx->auth, c->auth_handle);
			c->auth_handle = 0;
			c->busy = false;
		}
	}
	if (c->busy)
		return;             /* job_done() calls again */
	if (rcpts_open(c)) {
		lmtp_start_job(c, LMTP_JOB_ABORT);
		return;
	}
	rcpts_clear(c);
	copy_release(c);
	passdb_user_clear(&c->user);
	free(c->job_name);
	lmtp_session_free(&c->session);
	event_free(c->timer);
	job_deinit(&c->job);
	lmtp_open_count--;
	free(c);
}

/* ---- the driver ---- */

/* Offers buffered input to the core; returns what it consumed. */
static size_t lmtp_feed(struct lmtp_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t avail = evbuffer_get_length(in);
	size_t used = 0;

	if (avail == 0)
		return 0;
	if (lmtp_session_state(c->session) == LMTP_STATE_DATA) {
		/* The message: the first contiguous part, without copying. */
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) >= 1 && v.iov_len > 0)
			used = lmtp_session_input(c->session, v.iov_base, v.iov_len);
	} else {
		size_t n = avail < LMTP_PULL_MAX ? avail : LMTP_PULL_MAX;
		const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)n);
		if (p != NULL)
			used = lmtp_session_input(c->session, p, n);
	}
	evbuffer_drain(in, used);
	return used;
}

/* Carries out the core's pending action but CLOSE; false if there is
   none. */
static bool lmtp_act(struct lmtp_conn *c)
{
	const struct lmtp_action *a = lmtp_session_action(c->session);

	switch (a->type) {
	case LMTP_ACTION_NONE:
		return false;
	case LMTP_ACTION_RCPT:
		lmtp_lookup(c, a);
		return true;
	case LMTP_ACTION_DATA_BEGIN:
		lmtp_session_action_done(c->session);
		return true;
	case LMTP_ACTION_DATA_CHUNK:
		lmtp_start_job(c, LMTP_JOB_WRITE);
		return true;
	case LMTP_ACTION_DATA_END:
		c->msg_size = a->size;
		c->commit_next = 0;
		lmtp_start_job(c, LMTP_JOB_COMMIT);
		return true;
	case LMTP_ACTION_RESET:
		if (rcpts_open(c))
			lmtp_start_job(c, LMTP_JOB_ABORT);
		else {
			rcpts_clear(c);
			lmtp_session_action_done(c->session);
		}
		return true;
	case LMTP_ACTION_CLOSE:
		break;          /* lmtp_process's, since it may free c */
	}
	return false;
}

static void lmtp_process(struct lmtp_conn *c)
{
	while (!c->busy && !c->closing && !c->dead) {
		if (lmtp_session_action(c->session)->type == LMTP_ACTION_CLOSE) {
			lmtp_start_close(c);    /* c may be gone */
			return;
		}
		if (lmtp_act(c))
			continue;
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) > LMTP_OUT_HIGH)
			return; /* the write callback resumes */
		if (lmtp_feed(c) > 0 ||
		    lmtp_session_action(c->session)->type != LMTP_ACTION_NONE)
			continue;
		/* Nothing complete left.  An MTA that half-closed has said
		   all it will: what it sent is answered, now close (copies of
		   a message cut short are aborted). */
		if (c->peer_eof)
			lmtp_start_close(c);
		return;
	}
}

static void read_callback(struct bufferevent *bev, void *arg)
{
	struct lmtp_conn *c = arg;
	(void)bev;
	lmtp_arm_idle(c);
	lmtp_process(c);
}

static void write_callback(struct bufferevent *bev, void *arg)
{
	struct lmtp_conn *c = arg;

	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			lmtp_free(c, c->peer_eof ? "disconnected" : "closed");
		return;
	}
	lmtp_process(c);
}

static void event_callback(struct bufferevent *bev, short what, void *arg)
{
	struct lmtp_conn *c = arg;
	(void)bev;

	if (what & BEV_EVENT_TIMEOUT) {
		lmtp_free(c, "write-timeout");
	} else if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING) &&
		   !c->closing) {
		c->peer_eof = true;
		lmtp_process(c);
	} else {
		lmtp_free(c, (what & BEV_EVENT_EOF) ? "disconnected" :
			  "connection-error");
	}
}

static void timer_callback(evutil_socket_t fd, short what, void *arg)
{
	struct lmtp_conn *c = arg;
	char reason[128];
	(void)fd;
	(void)what;

	if (c->closing) {
		lmtp_free(c, "close-timeout");
		return;
	}
	if (c->auth_handle != 0) {
		/* The auth process has not answered in all this time. */
		log_error("event=auth-timeout session=%s rip=%s", c->id, c->peer);
		auth_client_cancel(c->loop->ctx->auth, c->auth_handle);
		c->auth_handle = 0;
		c->busy = false;
	} else if (c->busy) {
		timer_arm(c->timer, LMTP_RETRY_MS);
		return;
	}
	log_info("event=timeout session=%s rip=%s state=%s", c->id, c->peer,
		 lmtp_state_name(lmtp_session_state(c->session)));
	snprintf(reason, sizeof(reason), "4.4.2 %s idle for too long, closing",
		 lmtp_cfg.hostname);
	lmtp_session_abort(c->session, reason);
	/* Do not wait long for an MTA that does not read. */
	timer_arm(c->timer, LMTP_RETRY_MS * 10);
	lmtp_process(c);
}

/* ---- accept ---- */

static void lmtp_peer_name(int fd, const struct sockaddr *addr, char *buf,
			   size_t size)
{
	const void *ip = NULL;

	if (addr->sa_family == AF_UNIX) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
			snprintf(buf, size, "unix:uid=%u", (unsigned)cred.uid);
		else
			snprintf(buf, size, "unix");
		return;
	}
	if (addr->sa_family == AF_INET)
		ip = &((const struct sockaddr_in *)addr)->sin_addr;
	else if (addr->sa_family == AF_INET6)
		ip = &((const struct sockaddr_in6 *)addr)->sin6_addr;
	if (ip == NULL || inet_ntop(addr->sa_family, ip, buf, (socklen_t)size) == NULL)
		snprintf(buf, size, "unknown");
}

void lmtp_conn_setup(struct loop *loop)
{
	const struct server_context *ctx = loop->ctx;
	struct rlimit rl;

	/* No more than the connections can hold, and no more than their
	   share of the descriptors. */
	lmtp_copies_max = (size_t)LMTP_CONN_MAX * LMTP_MAX_RECIPIENTS;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur / LMTP_COPIES_FD_SHARE / DELIVER_OPEN_FDS < lmtp_copies_max)
		lmtp_copies_max = rl.rlim_cur / LMTP_COPIES_FD_SHARE /
				  DELIVER_OPEN_FDS;
	if (lmtp_copies_max < 1)
		lmtp_copies_max = 1;
	log_info("event=lmtp-setup copies_max=%zu", lmtp_copies_max);

	lmtp_cfg = (struct lmtp_config){
		.hostname = ctx->hostname,
		.size_limit = ctx->set->message_size_limit,
		.max_bad_commands = ctx->set->max_bad_commands,
	};
}

/* Loopback is this host: always served (lmtp-conn.h). */
static const struct netmask_list lmtp_loopback = {
	.nets = {
		{ .family = AF_INET, .addr = { 127 }, .prefix = 8 },
		{ .family = AF_INET6, .addr = { [15] = 1 }, .prefix = 128 },
	},
	.count = 2,
};

bool lmtp_peer_allowed(const struct sockaddr *addr,
		       const struct netmask_list *trusted)
{
	if (addr->sa_family == AF_UNIX)
		return true;
	return netmask_list_contains(&lmtp_loopback, addr) ||
	       netmask_list_contains(trusted, addr);
}

/* A connection not taken: the one reply line, then the close. */
static void lmtp_refuse(int fd, const char *rip, const char *line,
			const char *reason)
{
	(void)!send(fd, line, strlen(line), MSG_DONTWAIT | MSG_NOSIGNAL);
	log_warn("event=lmtp-refused rip=%s reason=%s", rip, reason);
	close(fd);
}

/* A peer outside loopback and trusted_networks: LMTP would let it deliver
   to anyone, so it is not served (421: see lmtp-conn.h). */
static void lmtp_refuse_untrusted(int fd, const char *rip)
{
	char line[LMTP_REFUSAL_MAX];

	snprintf(line, sizeof(line), "421 4.7.0 %s LMTP is not offered to this "
		 "address\r\n", lmtp_cfg.hostname);
	lmtp_refuse(fd, rip, line, "untrusted-address");
}

static int lmtp_setup(struct lmtp_conn *c, int fd)
{
	struct timeval write_timeout = { c->loop->ctx->set->output_timeout, 0 };

	c->bev = bufferevent_socket_new(c->loop->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL)
		return -1;
	c->timer = evtimer_new(c->loop->base, timer_callback, c);
	if (c->timer == NULL || job_init(&c->job, c->loop->base) < 0)
		return -1;
	c->job.done = job_done;
	c->session = lmtp_session_new(&lmtp_cfg, lmtp_output, c);
	if (c->session == NULL)
		return -1;
	bufferevent_set_timeouts(c->bev, NULL, &write_timeout);
	bufferevent_setwatermark(c->bev, EV_READ, 0, LMTP_IN_HIGH);
	bufferevent_setcb(c->bev, read_callback, write_callback, event_callback, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	lmtp_arm_idle(c);
	return 0;
}

void lmtp_conn_accept(struct loop *loop, int fd, const struct sockaddr *addr,
		      socklen_t addrlen)
{
	char rip[64];
	int one = 1;
	(void)addrlen;

	lmtp_peer_name(fd, addr, rip, sizeof(rip));
	if (!lmtp_peer_allowed(addr, &loop->ctx->trusted)) {
		lmtp_refuse_untrusted(fd, rip);
		return;
	}
	if (lmtp_open_count >= LMTP_CONN_MAX) {
		lmtp_refuse(fd, rip, "421 4.3.2 too many connections, try later\r\n",
			    "connection-cap");
		return;
	}
	struct lmtp_conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		log_error("event=accept-failed error=\"out of memory\"");
		close(fd);
		return;
	}
	c->loop = loop;
	snprintf(c->peer, sizeof(c->peer), "%s", rip);
	snprintf(c->id, sizeof(c->id), "%x-l%" PRIx64, (unsigned)getpid(),
		 (uint64_t)atomic_fetch_add(&lmtp_counter, 1));
	if (addr->sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (lmtp_setup(c, fd) < 0) {
		log_error("event=accept-failed error=\"out of memory\"");
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->timer != NULL)
			event_free(c->timer);
		job_deinit(&c->job);
		lmtp_session_free(&c->session);
		free(c);
		return;
	}
	lmtp_open_count++;
	log_info("event=lmtp-connect session=%s rip=%s", c->id, c->peer);
}
