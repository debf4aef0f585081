/*
 * run.c — one popbox-fetch run for one account (see run.h): the driver
 * that moves bytes between fetch/net and the sans-I/O fetch/pop3-client
 * core, and acts on the core's events.
 *
 * The conversation is blocking and single-threaded: pump() sends what the
 * core has to send, reads once, and feeds what came; the core calls
 * on_event() for each reply, line and end of a multi-line reply.  Before
 * the transfer, each step queues its commands and pumps until the last of
 * them is complete (wait_for); during the transfer, the events themselves
 * queue the next commands (refill) and the DELEs.
 */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file-read.h"
#include "plan.h"
#include "pop3-client.h"
#include "sasl-client.h"
#include "secret.h"
#include "sink.h"
#include "uidl-db.h"

/* Read buffer: one TLS record is at most 16 KiB. */
#define RUN_READ_SIZE (64 * 1024)
/* Message bytes gathered before a sink_write. */
#define RUN_WRITE_SIZE (64 * 1024)
/* Messages in one listing: as many records as a UIDL table holds; a
   server listing more is broken or hostile (memory stays bounded). */
#define RUN_LISTING_MAX UIDL_DB_RECORDS_MAX
/* Messages prepared and not yet committed: fewer than RUN_WINDOW when a
   read begins (pump commits at RUN_WINDOW), plus at most the RUN_WINDOW
   commands in flight that one read can complete. */
#define RUN_STAGED_MAX (2 * RUN_WINDOW)
/* A line of output. */
#define RUN_LINE_MAX 1024

/* Server text shown in an error line: at most this much. */
#define RUN_SERVER_TEXT_MAX 160

/* A status line kept after its event (text escaped for printing). */
struct saved_reply {
	bool seen;
	enum pop3c_status status;
	enum pop3c_code code;
	char text[RUN_SERVER_TEXT_MAX * 4 + 4];
};

/* A message prepared (in the Maildir's tmp/, or an mbox append locked
   and named), waiting for its commit (commit_staged). */
struct staged_msg {
	const struct plan_action *a;
	struct sink_msg *msg;
	const char *name;                 /* its pending name (in msg) */
	uint64_t octets;
};

/* One UIDL line: the uid is NUL-terminated at pool + off. */
struct uid_entry {
	uint32_t num;
	uint32_t len;
	size_t off;
};

struct run {
	const struct account *a;
	const struct run_options *opt;
	const struct run_output *out;
	struct run_progress *progress;
	struct run_result *res;
	struct run *next;                 /* in the stop registry */

	struct net_conn *conn;
	struct pop3c *pop;
	unsigned char *buf;               /* RUN_READ_SIZE */
	uint64_t completed;               /* commands complete (greeting
					     included): id X is complete
					     when completed > X */
	struct saved_reply reply[POP3C_CMD_TYPE_COUNT];
	char apop_ts[POP3C_TIMESTAMP_MAX + 1];
	struct pop3c_caps caps, caps_next;

	struct sasl_client *sasl;
	char *secret;                     /* from a command; wiped */
	char sasl_error[128];

	struct plan_scan *scan;
	size_t nscan, scan_cap;
	struct uid_entry *uids;
	size_t nuid, uid_cap;
	char *pool;
	size_t pool_len, pool_cap;
	struct plan_uid *plan_uids;
	const char *listing_error;        /* static text */
	uint64_t listed_bytes;

	struct uidl_db *db;
	struct plan plan;
	size_t cursor;                    /* next action to queue */
	struct sink_config sink;
	struct sink *dest;                /* opened once per run */
	struct sink_msg *msg;             /* the message being received */
	const struct plan_action *cur;
	unsigned char *wbuf;              /* RUN_WRITE_SIZE: message bytes
					     for the sink */
	size_t wlen;
	const struct plan_action *pending[RUN_WINDOW];  /* stored, to
					     record (flush_records) */
	size_t npending;
	struct staged_msg staged[RUN_STAGED_MAX];  /* prepared, to commit
					     (commit_staged); an mbox: one */
	size_t nstaged;
	bool no_more_commit;              /* a group commit's outcome is
					     unknown: commit nothing more */
	uint64_t dele_ok;
	unsigned int window;

	bool perm_protocol;               /* protocol errors are
					     permanent (during STLS) */
	bool has_apop;
	bool have_caps;
	bool sasl_failed;
	bool transferring;                /* refill() may queue the plan */
	bool stop_fetching;               /* no more RETR/TOP */
	bool no_more_dele;                /* no more DELE */
};

/* ---- stopping -------------------------------------------------------- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct run *registry;
static atomic_bool stop_flag;

void run_request_stop(void)
{
	atomic_store(&stop_flag, true);
	pthread_mutex_lock(&registry_lock);
	for (struct run *r = registry; r != NULL; r = r->next) {
		if (r->conn != NULL)
			net_interrupt(r->conn);
	}
	pthread_mutex_unlock(&registry_lock);
}

bool run_stop_requested(void)
{
	return atomic_load(&stop_flag);
}

static void register_conn(struct run *r, struct net_conn *conn)
{
	pthread_mutex_lock(&registry_lock);
	r->conn = conn;
	r->next = registry;
	registry = r;
	pthread_mutex_unlock(&registry_lock);
}

static void close_conn(struct run *r)
{
	pthread_mutex_lock(&registry_lock);
	for (struct run **p = &registry; *p != NULL; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
	net_close(&r->conn);
	pthread_mutex_unlock(&registry_lock);
}

/* ---- output ---------------------------------------------------------- */

static void emit_line(struct run *r, enum run_line kind, const char *fmt,
		      va_list args) __attribute__((format(printf, 3, 0)));

static void emit_line(struct run *r, enum run_line kind, const char *fmt,
		      va_list args)
{
	char text[RUN_LINE_MAX];

	vsnprintf(text, sizeof(text), fmt, args);
	r->out->line(r->out->ctx, kind, r->a->name, text);
}

static void say(struct run *r, enum run_line kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say(struct run *r, enum run_line kind, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	emit_line(r, kind, fmt, args);
	va_end(args);
}

/* An error line; the run's status becomes at least severity. */
static void fail(struct run *r, enum run_status severity, const char *fmt,
		 ...) __attribute__((format(printf, 3, 4)));

static void fail(struct run *r, enum run_status severity, const char *fmt,
		 ...)
{
	va_list args;

	va_start(args, fmt);
	emit_line(r, RUN_LINE_ERROR, fmt, args);
	va_end(args);
	r->res->errors++;
	if (r->res->status != RUN_INTERRUPTED && severity > r->res->status)
		r->res->status = severity;
}

/* Stopped by a signal: one line, once. */
static int interrupted(struct run *r)
{
	if (r->res->status != RUN_INTERRUPTED) {
		say(r, RUN_LINE_ERROR, "interrupted: nothing more sent, the "
		    "server deletes nothing of this session");
		r->res->status = RUN_INTERRUPTED;
	}
	return -1;
}

/* The server's -ERR codes that mean "try again later". */
static bool code_is_temporary(enum pop3c_code code)
{
	return code == POP3C_CODE_IN_USE || code == POP3C_CODE_LOGIN_DELAY ||
	       code == POP3C_CODE_SYS_TEMP;
}

static const char *code_label(enum pop3c_code code)
{
	switch (code) {
	case POP3C_CODE_IN_USE: return "[IN-USE] ";
	case POP3C_CODE_LOGIN_DELAY: return "[LOGIN-DELAY] ";
	case POP3C_CODE_SYS_TEMP: return "[SYS/TEMP] ";
	case POP3C_CODE_SYS_PERM: return "[SYS/PERM] ";
	case POP3C_CODE_AUTH: return "[AUTH] ";
	default: return "";
	}
}

/* A refused command: temporary unless the server said otherwise. */
static int refused(struct run *r, enum pop3c_cmd_type type, const char *what)
{
	const struct saved_reply *rep = &r->reply[type];

	fail(r, rep->code == POP3C_CODE_SYS_PERM ? RUN_PERMFAIL : RUN_TEMPFAIL,
	     "%s refused by the server: %s%s", what, code_label(rep->code),
	     rep->text);
	return -1;
}

/* ---- the conversation ------------------------------------------------ */

static enum run_status net_severity(void)
{
	switch (net_last_error_kind()) {
	case NET_ERROR_USAGE:
	case NET_ERROR_TLS_VERIFY:
	case NET_ERROR_INJECTION:
		return RUN_PERMFAIL;
	default:
		return RUN_TEMPFAIL;
	}
}

static void flush_records(struct run *r);

/* Sends what the core has to send. */
static int flush(struct run *r)
{
	size_t len;
	const char *data = pop3c_output(r->pop, &len);
	const char *error;

	if (len == 0)
		return 0;
	if (run_stop_requested())
		return interrupted(r);
	if (net_write_all(r->conn, data, len, &error) < 0) {
		if (run_stop_requested())
			return interrupted(r);
		fail(r, RUN_TEMPFAIL, "sending to the server failed: %s",
		     error);
		return -1;
	}
	pop3c_output_sent(r->pop, len);
	return 0;
}

/* One round: send, read once, feed the core. */
static int pump(struct run *r)
{
	const char *error;
	size_t n;

	if (flush(r) < 0)
		return -1;
	if (run_stop_requested())
		return interrupted(r);
	if (net_read(r->conn, r->buf, RUN_READ_SIZE, &n, &error) < 0) {
		if (run_stop_requested())
			return interrupted(r);
		fail(r, RUN_TEMPFAIL, "reading from the server failed: %s",
		     error);
		return -1;
	}
	if (n == 0) {
		if (run_stop_requested())
			return interrupted(r);
		if (pop3c_eof(r->pop, &error) == 0)
			error = "the session was over";
		fail(r, RUN_TEMPFAIL, "the server closed the connection: %s",
		     error);
		return -1;
	}
	int ret = pop3c_input(r->pop, r->buf, n, &error);
	/* Before anything else, even an error: what was stored gets
	   recorded (its DELEs go out with the next flush).  The Maildir's
	   group commit waits while more input has already arrived (over TLS
	   a read gives one record, a message or two), up to RUN_WINDOW
	   messages: one commit for all that came together. */
	if (ret < 0 || r->nstaged >= RUN_WINDOW || !net_input_ready(r->conn))
		flush_records(r);
	if (ret < 0) {
		fail(r, r->perm_protocol ? RUN_PERMFAIL : RUN_TEMPFAIL,
		     "the server broke the protocol: %s", error);
		return -1;
	}
	/* After QUIT's +OK the deletions are done: report them. */
	if (run_stop_requested() && !pop3c_quit_done(r->pop))
		return interrupted(r);
	return 0;
}

/* Pumps until command id is complete. */
static int wait_for(struct run *r, uint64_t id)
{
	while (r->completed <= id) {
		if (pump(r) < 0)
			return -1;
	}
	return 0;
}

/* Queues a command without text; -1 (reported) on failure. */
static int queue(struct run *r, enum pop3c_cmd_type type, uint32_t msg,
		 uint32_t lines, uint64_t *id_r)
{
	const char *error;

	if (pop3c_queue(r->pop, type, msg, lines, id_r, &error) < 0) {
		fail(r, RUN_TEMPFAIL, "%s: %s", pop3c_cmd_name(type), error);
		return -1;
	}
	return 0;
}

/* Queues type and waits for its reply; 0 with the reply in r->reply. */
static int command(struct run *r, enum pop3c_cmd_type type)
{
	uint64_t id;

	if (queue(r, type, 0, 0, &id) < 0)
		return -1;
	return wait_for(r, id);
}

/* ---- events before the transfer -------------------------------------- */

/*
 * Server text for a line on the user's terminal: printable ASCII and
 * spaces kept, every other byte as \xNN (no terminal escapes, no second
 * line), cut at RUN_SERVER_TEXT_MAX bytes of input with "...".
 */
static void escape_text(char *out, const char *text, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	for (size_t i = 0; i < len && i < RUN_SERVER_TEXT_MAX; i++) {
		unsigned char c = (unsigned char)text[i];

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			out[n++] = (char)c;
			continue;
		}
		out[n++] = '\\';
		out[n++] = 'x';
		out[n++] = hex[c >> 4];
		out[n++] = hex[c & 15];
	}
	if (len > RUN_SERVER_TEXT_MAX) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

static void save_reply(struct run *r, const struct pop3c_event *ev)
{
	struct saved_reply *s = &r->reply[ev->cmd.type];

	s->seen = true;
	s->status = ev->reply->status;
	s->code = ev->reply->code;
	/* text holds 4 bytes per input byte, "..." and a NUL. */
	escape_text(s->text, ev->reply->text, ev->reply->text_len);
}

static void on_greeting(struct run *r, const struct pop3c_event *ev)
{
	size_t start, len;

	if (ev->reply->status == POP3C_OK &&
	    pop3c_apop_timestamp(ev->reply->text, ev->reply->text_len, &start,
				 &len) == 0 && len < sizeof(r->apop_ts)) {
		memcpy(r->apop_ts, ev->reply->text + start, len);
		r->apop_ts[len] = '\0';
		r->has_apop = true;
	}
}

static void on_capa(struct run *r, const struct pop3c_event *ev)
{
	const char *error;

	switch (ev->type) {
	case POP3C_EVENT_REPLY:
		memset(&r->caps_next, 0, sizeof(r->caps_next));
		break;
	case POP3C_EVENT_DATA:
		/* A malformed capability is ignored, as the core leaves
		   caps unchanged. */
		(void)pop3c_parse_capa_line(&r->caps_next, ev->data, ev->len,
					    &error);
		break;
	case POP3C_EVENT_END:
		r->caps = r->caps_next;
		r->have_caps = true;
		break;
	}
}

static void on_auth(struct run *r, const struct pop3c_event *ev)
{
	const char *response, *error;

	if (ev->type != POP3C_EVENT_REPLY ||
	    ev->reply->status != POP3C_CONTINUE)
		return;
	if (r->sasl == NULL || r->sasl_failed ||
	    sasl_client_step(r->sasl, ev->reply->text, ev->reply->text_len,
			     &response, &error) < 0) {
		if (r->sasl != NULL && !r->sasl_failed)
			snprintf(r->sasl_error, sizeof(r->sasl_error), "%s",
				 error);
		r->sasl_failed = true;
		(void)pop3c_sasl_cancel(r->pop, &error);
		return;
	}
	if (pop3c_sasl_respond(r->pop, response, strlen(response),
			       &error) < 0) {
		snprintf(r->sasl_error, sizeof(r->sasl_error), "%s", error);
		r->sasl_failed = true;
		(void)pop3c_sasl_cancel(r->pop, &error);
	}
}

/* array (of *cap elements of size) able to hold more than n: the same,
   or a larger copy; NULL if out of memory (array is then unchanged). */
static void *grow(void *array, size_t *cap, size_t n, size_t size)
{
	size_t want = *cap == 0 ? 256 : *cap * 2;
	void *p;

	if (n < *cap)
		return array;
	/* want <= 2 * RUN_LISTING_MAX elements of a few dozen bytes, or
	   twice the UIDL pool (RUN_LISTING_MAX * 71 bytes). */
	if ((p = realloc(array, want * size)) == NULL)
		return NULL;
	*cap = want;
	return p;
}

static void on_list_line(struct run *r, const struct pop3c_event *ev)
{
	uint32_t num;
	uint64_t size;
	struct plan_scan *p = NULL;

	if (r->listing_error != NULL)
		return;
	if (pop3c_parse_scan_listing(ev->data, ev->len, &num, &size) < 0)
		r->listing_error = "a malformed LIST line";
	else if (r->nscan >= RUN_LISTING_MAX)
		r->listing_error = "more messages listed than popbox-fetch "
				   "handles";
	else if ((p = grow(r->scan, &r->scan_cap, r->nscan,
			   sizeof(*r->scan))) == NULL)
		r->listing_error = "out of memory";
	else {
		r->scan = p;
		r->scan[r->nscan].num = num;
		r->scan[r->nscan++].size = size;
		r->listed_bytes += size;
	}
}

static void on_uidl_line(struct run *r, const struct pop3c_event *ev)
{
	char uid[POP3C_UID_MAX + 1], *pool;
	struct uid_entry *uids;
	size_t len;
	uint32_t num;

	if (r->listing_error != NULL)
		return;
	/* A line out of spec is left out: that message has no usable
	   UIDL, and the plan leaves it alone (no-uidl). */
	if (pop3c_parse_uid_listing(ev->data, ev->len, &num, uid, &len) < 0)
		return;
	if (r->nuid >= RUN_LISTING_MAX) {
		r->listing_error = "more messages listed than popbox-fetch "
				   "handles";
		return;
	}
	if ((uids = grow(r->uids, &r->uid_cap, r->nuid,
			 sizeof(*r->uids))) == NULL) {
		r->listing_error = "out of memory";
		return;
	}
	r->uids = uids;
	/* grow() doubles from 256: one doubling covers len + 1 <= 71. */
	if ((pool = grow(r->pool, &r->pool_cap, r->pool_len + len, 1)) ==
	    NULL) {
		r->listing_error = "out of memory";
		return;
	}
	r->pool = pool;
	memcpy(r->pool + r->pool_len, uid, len + 1);
	r->uids[r->nuid].num = num;
	r->uids[r->nuid].len = (uint32_t)len;
	r->uids[r->nuid++].off = r->pool_len;
	r->pool_len += len + 1;
}

/* ---- events of the transfer ------------------------------------------ */

static const struct plan_action *find_action(const struct run *r,
					     uint32_t num)
{
	size_t lo = 0, hi = r->plan.count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint32_t n = r->plan.actions[mid].num;

		if (n == num)
			return &r->plan.actions[mid];
		if (n < num)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static const char *uidl_text(const struct plan_action *a)
{
	return a->uidl != NULL ? a->uidl : "-";
}

static void store_failed(struct run *r, const struct plan_action *a,
			 enum sink_status st, const char *error)
{
	fail(r, st == SINK_PERMFAIL ? RUN_PERMFAIL : RUN_TEMPFAIL,
	     "message %" PRIu32 " (UIDL %s): not stored: %s; no more messages "
	     "are fetched this run", a->num, uidl_text(a), error);
	r->stop_fetching = true;
}

static void message_begin(struct run *r, const struct pop3c_event *ev)
{
	const struct plan_action *a = find_action(r, ev->cmd.msg);
	struct sink_msg_info info = { 0 };
	enum sink_status st;
	const char *error;

	r->cur = NULL;
	if (a == NULL)
		return;
	if (ev->reply->status != POP3C_OK) {
		fail(r, ev->reply->code == POP3C_CODE_SYS_PERM ? RUN_PERMFAIL :
		     RUN_TEMPFAIL, "message %" PRIu32 ": %s refused by the "
		     "server: %s", a->num, pop3c_cmd_name(ev->cmd.type),
		     r->reply[ev->cmd.type].text);
		return;
	}
	if (r->stop_fetching || run_stop_requested())
		return;
	info.uidl = a->uidl;
	info.account = r->a->name;
	info.size_hint = a->size;
	if (sink_begin_in(r->dest, &info, &r->msg, &st, &error) < 0) {
		store_failed(r, a, st, error);
		return;
	}
	r->cur = a;
}

/* Hands the buffered message bytes to the sink; -1 (reported, the
   message aborted) on failure. */
static int flush_message(struct run *r)
{
	enum sink_status st;
	const char *error;

	if (r->wlen == 0)
		return 0;
	if (sink_write(r->msg, r->wbuf, r->wlen, &st, &error) < 0) {
		r->wlen = 0;
		sink_abort(&r->msg);
		store_failed(r, r->cur, st, error);
		return -1;
	}
	r->wlen = 0;
	return 0;
}

/* A line (or piece) of the message: into the write buffer, so the sink
   sees few large writes rather than one per line. */
static void message_data(struct run *r, const struct pop3c_event *ev)
{
	size_t need = ev->len + (ev->line_end ? 2 : 0);

	atomic_fetch_add(&r->progress->bytes, need);
	if (r->msg == NULL)
		return;
	/* need <= POP3C_LINE_MAX + 2 < RUN_WRITE_SIZE. */
	if (RUN_WRITE_SIZE - r->wlen < need && flush_message(r) < 0)
		return;
	memcpy(r->wbuf + r->wlen, ev->data, ev->len);
	r->wlen += ev->len;
	if (ev->line_end) {
		memcpy(r->wbuf + r->wlen, "\r\n", 2);
		r->wlen += 2;
	}
}

/* Stored: record it, then (only then) its DELE. */
/* Recorded (or no UIDL to record): its DELE may go now. */
static void message_done(struct run *r, const struct plan_action *a)
{
	if (r->opt->verbose)
		say(r, RUN_LINE_INFO, "%" PRIu32 " %" PRIu64 " %s %s", a->num,
		    a->size, uidl_text(a),
		    a->op == PLAN_OP_TOP ? "headers stored" : "stored");
	if (a->op == PLAN_OP_RETR && a->dele_after) {
		if (!r->no_more_dele)
			(void)queue(r, POP3C_DELE, a->num, 0, NULL);
		return;
	}
	r->res->kept++;
}

static void count_stored(struct run *r, uint64_t octets)
{
	r->res->fetched++;
	r->res->fetched_bytes += octets;
	atomic_fetch_add(&r->progress->done, 1);
}

static void abort_staged(struct run *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sink_abort(&r->staged[i].msg);
}

/* The staged messages with a UIDL: their pending records (durable), and
   the index of each in items (the pending list's order). */
static int stage_records(struct run *r, size_t n, size_t *k_r)
{
	struct uidl_db_batch_item items[RUN_STAGED_MAX];
	const char *names[RUN_STAGED_MAX];
	const char *error;
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		const struct plan_action *a = r->staged[i].a;

		if (a->uidl == NULL)
			continue;
		items[k].uidl = a->uidl;
		items[k].len = a->uidl_len;
		items[k].rec = a->record;
		names[k++] = r->staged[i].name;
	}
	*k_r = k;
	if (k == 0 || uidl_db_record_pending(r->db, items, names, k,
					     &error) == 0)
		return 0;
	fail(r, RUN_TEMPFAIL, "%zu downloaded message%s not stored: the UIDL "
	     "table could not be written: %s; nothing more is deleted or "
	     "fetched this run", n, n > 1 ? "s" : "", error);
	return -1;
}

/*
 * The commit of the messages prepared since the last one: for a Maildir
 * the group of those that completed in what has arrived from the server
 * (pump commits when no more input is waiting, or at RUN_WINDOW; in its
 * tmp/), for an mbox the one message just prepared (the append's bytes
 * named, both locks held):
 *   1. their pending records, durable (one fdatasync, uidl-db.h);
 *   2. each renamed into new/, or appended to the mbox and fsynced;
 *   3. one fsync of new/ (nothing for an mbox);
 *   4. their records settled in memory, and their DELEs queued.
 * A crash before 1 completes leaves them in tmp/ unrecorded, or not
 * appended (not stored: fetched again); after it, the next run looks
 * each name up (recover) and finds it in tmp/ (then moves it) or new/,
 * or its bytes at their place in the mbox: stored once either way (a torn
 * mbox append does not match: fetched again, the torn part stays, sink.h).
 * So a crash never gives a second copy here, which a record written after
 * the rename or the append could not promise (fetch/plan.h).  Costs per
 * Maildir message: its file's fsync; per commit: one fdatasync and one
 * fsync of new/.  Per mbox message: one fdatasync and one fsync.
 */
static void commit_staged(struct run *r)
{
	size_t n = r->nstaged, k, ki = 0, published = 0;
	bool stored[RUN_STAGED_MAX] = { false };
	bool settle[RUN_STAGED_MAX] = { false };
	enum sink_status st;
	const char *error;

	if (n == 0)
		return;
	r->nstaged = 0;
	if (r->no_more_commit || stage_records(r, n, &k) < 0) {
		abort_staged(r, n);
		if (!r->no_more_commit && uidl_db_pending_count(r->db) > 0)
			(void)uidl_db_settle_pending(r->db, settle, &error);
		r->stop_fetching = true;
		r->no_more_dele = true;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct plan_action *a = r->staged[i].a;

		if (sink_publish(&r->staged[i].msg, &st, &error) < 0) {
			store_failed(r, a, st, error);
		} else {
			stored[i] = true;
			published++;
		}
		if (a->uidl != NULL)
			settle[ki++] = stored[i];
	}
	if (published > 0 && sink_sync(r->dest, &st, &error) < 0) {
		/* Renamed, maybe not durable: no DELE; they stay pending
		   (the final save writes them) for the next run to look up. */
		fail(r, RUN_TEMPFAIL, "%s; the last %zu messages may not be "
		     "stored: they are not deleted on the server, and nothing "
		     "more is fetched this run", error, published);
		r->no_more_commit = true;
		r->stop_fetching = true;
		r->no_more_dele = true;
		return;
	}
	if (k > 0 && uidl_db_settle_pending(r->db, settle, &error) < 0) {
		fail(r, RUN_TEMPFAIL, "%s; nothing more is deleted or fetched "
		     "this run", error);
		r->no_more_commit = true;
		r->stop_fetching = true;
		r->no_more_dele = true;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (!stored[i])
			continue;
		count_stored(r, r->staged[i].octets);
		message_done(r, r->staged[i].a);
	}
}

/*
 * Makes the records of the stored messages durable (one fdatasync), then
 * queues their DELEs: the Maildir's group commit (commit_staged), and for
 * an MDA the record of each message at once (message_stored): a group
 * commit there would widen the window in which a crash leaves stored
 * messages unrecorded (each one a duplicate at the next run, plan.h) from
 * one message to many, and an MDA cannot carry a pending record's name.
 * pump() and run_free() call it too, so nothing stored is ever left
 * unrecorded whatever path the run takes.
 */
static void flush_records(struct run *r)
{
	struct uidl_db_batch_item items[RUN_WINDOW];
	size_t n = r->npending;
	const char *error;

	commit_staged(r);
	if (n == 0)
		return;
	r->npending = 0;
	for (size_t i = 0; i < n; i++) {
		const struct plan_action *a = r->pending[i];

		items[i].uidl = a->uidl;
		items[i].len = a->uidl_len;
		items[i].rec = a->record;
	}
	if (uidl_db_record_batch(r->db, items, n, &error) < 0) {
		fail(r, RUN_TEMPFAIL, "%zu stored message%s (UIDL %s%s) not "
		     "recorded: %s; %s fetched again next run, and nothing "
		     "more is deleted or fetched this run", n, n > 1 ? "s" : "",
		     r->pending[0]->uidl, n > 1 ? ", ..." : "", error,
		     n > 1 ? "they will be" : "it will be");
		r->stop_fetching = true;
		r->no_more_dele = true;
		return;
	}
	for (size_t i = 0; i < n; i++)
		message_done(r, r->pending[i]);
}

/* Stored (MDA): recorded at once (flush_records), and only then its
   DELE. */
static void message_stored(struct run *r, const struct plan_action *a,
			   uint64_t octets)
{
	count_stored(r, octets);
	if (a->uidl == NULL) {
		/* No UIDL on this server: nothing to record (plan.h). */
		message_done(r, a);
		return;
	}
	r->pending[r->npending++] = a;
	flush_records(r);
}

/* Maildir: the message whole and fsynced in tmp/; mbox: both locks
   taken and the append named.  commit_staged does the rest. */
static void stage_message(struct run *r, const struct plan_action *a,
			  uint64_t octets)
{
	enum sink_status st;
	const char *name, *error;

	if (sink_prepare(r->msg, &name, &st, &error) < 0) {
		sink_abort(&r->msg);
		store_failed(r, a, st, error);
		return;
	}
	/* At most RUN_STAGED_MAX between two commits (pump). */
	r->staged[r->nstaged++] = (struct staged_msg){
		.a = a, .msg = r->msg, .name = name, .octets = octets,
	};
	r->msg = NULL;
}

/*
 * Did RETR bring the message LIST announced?  RFC 1939 wants the exact
 * size; Dovecot sends the CRLF that ends a message without a final
 * newline but does not count it, so LIST + 2 passes too.  Anything else
 * (a line lost to a server that does not stuff dots, a short or long
 * reply) is refused: the message is not stored, and not deleted.
 */
static bool size_matches(uint64_t octets, uint64_t listed)
{
	return octets == listed || octets == listed + 2;
}

static void message_end(struct run *r, const struct pop3c_event *ev)
{
	const struct plan_action *a = r->cur;
	enum sink_status st;
	const char *error;

	r->cur = NULL;
	if (r->msg == NULL || a == NULL)
		return;
	/* TOP's size is the header's, LIST's the whole message's. */
	if (a->op == PLAN_OP_RETR && !size_matches(ev->octets, a->size)) {
		r->wlen = 0;
		sink_abort(&r->msg);
		fail(r, RUN_TEMPFAIL, "message %" PRIu32 " (UIDL %s): %" PRIu64
		     " octets received, LIST said %" PRIu64 ": not stored",
		     a->num, uidl_text(a), ev->octets, a->size);
		return;
	}
	if (flush_message(r) < 0)
		return;
	if (sink_can_prepare(r->dest)) {
		stage_message(r, a, ev->octets);
		/* An mbox: its locks are held until the append; one message
		   at a time. */
		if (!sink_can_batch(r->dest))
			commit_staged(r);
		return;
	}
	if (sink_commit(&r->msg, &st, &error) < 0) {
		store_failed(r, a, st, error);
		return;
	}
	message_stored(r, a, ev->octets);
}

static void on_message(struct run *r, const struct pop3c_event *ev)
{
	switch (ev->type) {
	case POP3C_EVENT_REPLY:
		message_begin(r, ev);
		break;
	case POP3C_EVENT_DATA:
		message_data(r, ev);
		break;
	case POP3C_EVENT_END:
		message_end(r, ev);
		break;
	}
}

static void on_dele(struct run *r, const struct pop3c_event *ev)
{
	if (ev->reply->status == POP3C_OK)
		r->dele_ok++;
	else
		fail(r, RUN_TEMPFAIL, "message %" PRIu32 ": DELE refused by "
		     "the server: %s", ev->cmd.msg,
		     r->reply[POP3C_DELE].text);
}

/* Queues the next actions of the plan, as far as the window allows. */
static void refill(struct run *r)
{
	while (r->transferring && r->cursor < r->plan.count &&
	       pop3c_waiting(r->pop) < r->window) {
		const struct plan_action *a = &r->plan.actions[r->cursor++];

		switch (a->op) {
		case PLAN_OP_RETR:
		case PLAN_OP_TOP:
			if (r->stop_fetching)
				break;
			(void)queue(r, a->op == PLAN_OP_RETR ? POP3C_RETR :
				    POP3C_TOP, a->num, a->top_lines, NULL);
			break;
		case PLAN_OP_DELE:
			if (r->no_more_dele)
				break;
			if (r->opt->verbose)
				say(r, RUN_LINE_INFO, "%" PRIu32 " %" PRIu64
				    " %s delete", a->num, a->size,
				    uidl_text(a));
			(void)queue(r, POP3C_DELE, a->num, 0, NULL);
			break;
		case PLAN_OP_SKIP:
			if (r->opt->verbose)
				say(r, RUN_LINE_INFO, "%" PRIu32 " %" PRIu64
				    " %s skip %s", a->num, a->size,
				    uidl_text(a),
				    plan_reason_name(a->reason));
			break;
		}
	}
}

static bool event_completes(const struct pop3c_event *ev)
{
	if (ev->type == POP3C_EVENT_END)
		return true;
	return ev->type == POP3C_EVENT_REPLY &&
	       ev->reply->status != POP3C_CONTINUE && !ev->reply->multiline;
}

static void on_event(void *context, const struct pop3c_event *ev)
{
	struct run *r = context;

	if (ev->type == POP3C_EVENT_REPLY && ev->reply->status != POP3C_CONTINUE)
		save_reply(r, ev);
	switch (ev->cmd.type) {
	case POP3C_GREETING:
		on_greeting(r, ev);
		break;
	case POP3C_CAPA:
		on_capa(r, ev);
		break;
	case POP3C_AUTH:
		on_auth(r, ev);
		break;
	case POP3C_LIST:
		if (ev->type == POP3C_EVENT_DATA)
			on_list_line(r, ev);
		break;
	case POP3C_UIDL:
		if (ev->type == POP3C_EVENT_DATA)
			on_uidl_line(r, ev);
		break;
	case POP3C_RETR:
	case POP3C_TOP:
		on_message(r, ev);
		break;
	case POP3C_DELE:
		on_dele(r, ev);
		break;
	default:
		break;
	}
	if (event_completes(ev)) {
		r->completed++;
		refill(r);
	}
}

/* ---- connecting ------------------------------------------------------ */

static void tls_options(const struct account *a, struct net_tls_options *t)
{
	memset(t, 0, sizeof(*t));
	t->ca_file = a->ca_file;
	t->has_pin = a->has_fingerprint;
	memcpy(t->pin, a->fingerprint, sizeof(t->pin));
}

static int start_tls(struct run *r)
{
	struct net_tls_options t;
	const char *error;

	tls_options(r->a, &t);
	/* Every byte the core was given is consumed (a byte after +OK to
	   STLS fails pop3c_input), so nothing is unread. */
	if (net_start_tls(r->conn, &t, 0, &error) < 0) {
		if (run_stop_requested())
			return interrupted(r);
		fail(r, net_severity(), "TLS with %s failed: %s", r->a->host,
		     error);
		return -1;
	}
	return 0;
}

/* CAPA; without an answer the caps are cleared (a server without CAPA). */
static int capa(struct run *r)
{
	r->have_caps = false;
	memset(&r->caps, 0, sizeof(r->caps));
	if (command(r, POP3C_CAPA) < 0)
		return -1;
	pop3c_set_window(r->pop, r->have_caps && r->caps.pipelining ?
				 RUN_WINDOW : 1);
	return 0;
}

static int stls(struct run *r)
{
	if (!r->have_caps || !r->caps.stls) {
		fail(r, RUN_PERMFAIL, "the server does not offer STLS, and "
		     "tls = stls: refusing to go on without TLS");
		return -1;
	}
	r->perm_protocol = true;
	if (command(r, POP3C_STLS) < 0)
		return -1;
	if (r->reply[POP3C_STLS].status != POP3C_OK) {
		fail(r, RUN_PERMFAIL, "STLS refused by the server (%s): "
		     "refusing to go on without TLS",
		     r->reply[POP3C_STLS].text);
		return -1;
	}
	if (start_tls(r) < 0)
		return -1;
	pop3c_tls_started(r->pop);
	r->perm_protocol = false;
	/* RFC 2595 section 4: forget what was said before TLS. */
	r->has_apop = false;
	return capa(r);
}

static int connect_server(struct run *r)
{
	struct net_options no = {
		.connect_timeout_ms = r->a->timeout_s * 1000,
		.io_timeout_ms = r->a->timeout_s * 1000,
	};
	struct net_conn *conn;
	char port[8];
	const char *error;

	snprintf(port, sizeof(port), "%u", (unsigned)account_port(r->a));
	if (net_connect(r->a->host, port, &no, &conn, &error) < 0) {
		if (run_stop_requested())
			return interrupted(r);
		fail(r, net_severity(), "%s", error);
		return -1;
	}
	register_conn(r, conn);
	if (run_stop_requested())
		return interrupted(r);
	if (r->a->tls == ACCOUNT_TLS_IMPLICIT && start_tls(r) < 0)
		return -1;
	if ((r->pop = pop3c_new(on_event, r)) == NULL) {
		fail(r, RUN_TEMPFAIL, "out of memory");
		return -1;
	}
	if (wait_for(r, 0) < 0)
		return -1;
	if (r->reply[POP3C_GREETING].status != POP3C_OK)
		return refused(r, POP3C_GREETING, "the connection");
	if (capa(r) < 0)
		return -1;
	if (r->a->tls == ACCOUNT_TLS_STLS)
		return stls(r);
	return 0;
}

/* ---- logging in ------------------------------------------------------ */

static bool method_is_oauth(enum sasl_client_method m)
{
	return m == SASL_CLIENT_XOAUTH2 || m == SASL_CLIENT_OAUTHBEARER;
}

/* The password or token method m needs into *secret_r. */
static int get_secret(struct run *r, enum sasl_client_method m,
		      const char **secret_r)
{
	const char *command = r->a->password_command, *what = "password",
		   *error;
	bool temporary;

	if (method_is_oauth(m)) {
		command = r->a->oauth_token_command;
		what = "oauth_token";
	} else if (r->opt->password != NULL) {
		*secret_r = r->opt->password;
		return 0;
	}
	if (r->secret == NULL) {
		if (command == NULL) {
			fail(r, RUN_PERMFAIL, "no password");
			return -1;
		}
		if (secret_from_command(command, &r->secret, &temporary,
					&error) < 0) {
			fail(r, temporary ? RUN_TEMPFAIL : RUN_PERMFAIL,
			     "%s_command failed: %s", what, error);
			return -1;
		}
	}
	*secret_r = r->secret;
	return 0;
}

/* 0 logged in, 1 refused (r->reply[type]), -1 failed (reported). */
static int login_result(struct run *r, enum pop3c_cmd_type type)
{
	return r->reply[type].status == POP3C_OK ? 0 : 1;
}

static int login_user(struct run *r, const char *secret)
{
	const char *error;
	uint64_t id;

	if (pop3c_queue_user(r->pop, r->a->user, &id, &error) < 0 ||
	    wait_for(r, id) < 0)
		goto failed;
	if (login_result(r, POP3C_USER) != 0) {
		r->reply[POP3C_PASS] = r->reply[POP3C_USER];
		return 1;
	}
	if (pop3c_queue_pass(r->pop, secret, &id, &error) < 0 ||
	    wait_for(r, id) < 0)
		goto failed;
	return login_result(r, POP3C_PASS);
failed:
	if (r->res->status == RUN_OK)
		fail(r, RUN_PERMFAIL, "cannot log in: %s", error);
	return -1;
}

static int login_apop(struct run *r, const char *secret)
{
	char digest[SASL_CLIENT_APOP_DIGEST_LEN + 1];
	const char *error;
	uint64_t id;
	int ret;

	if (sasl_client_apop_digest(r->apop_ts, strlen(r->apop_ts), secret,
				    digest, &error) < 0 ||
	    pop3c_queue_apop(r->pop, r->a->user, digest, &id, &error) < 0) {
		explicit_bzero(digest, sizeof(digest));
		fail(r, RUN_PERMFAIL, "cannot log in with APOP: %s", error);
		return -1;
	}
	explicit_bzero(digest, sizeof(digest));
	ret = wait_for(r, id);
	return ret < 0 ? -1 : login_result(r, POP3C_APOP);
}

static int login_sasl(struct run *r, enum sasl_client_method m,
		      const char *secret)
{
	const char *ir, *error;
	uint64_t id;
	int ret;

	r->sasl_failed = false;
	r->sasl_error[0] = '\0';
	if (sasl_client_new(m, r->a->user, secret, &r->sasl, &error) < 0 ||
	    sasl_client_start(r->sasl, &ir, &error) < 0 ||
	    pop3c_queue_auth(r->pop, sasl_client_method_name(m), ir, &id,
			     &error) < 0) {
		sasl_client_free(&r->sasl);
		fail(r, RUN_PERMFAIL, "cannot log in with %s: %s",
		     sasl_client_method_name(m), error);
		return -1;
	}
	ret = wait_for(r, id);
	if (ret == 0 && login_result(r, POP3C_AUTH) == 0 &&
	    (r->sasl_failed || !sasl_client_done(r->sasl))) {
		fail(r, RUN_PERMFAIL, "the server accepted %s before the "
		     "exchange was complete (it did not prove it knows the "
		     "password): not going on", sasl_client_method_name(m));
		ret = -1;
	} else if (ret == 0) {
		ret = login_result(r, POP3C_AUTH);
		const char *said = sasl_client_server_error(r->sasl);
		if (ret == 1 && said[0] != '\0')
			snprintf(r->sasl_error, sizeof(r->sasl_error), "%s",
				 said);
	}
	sasl_client_free(&r->sasl);
	return ret;
}

static int try_method(struct run *r, enum sasl_client_method m)
{
	const char *secret;

	if (get_secret(r, m, &secret) < 0)
		return -1;
	switch (m) {
	case SASL_CLIENT_USER:
		return login_user(r, secret);
	case SASL_CLIENT_APOP:
		return login_apop(r, secret);
	default:
		return login_sasl(r, m, secret);
	}
}

static enum pop3c_cmd_type method_command(enum sasl_client_method m)
{
	switch (m) {
	case SASL_CLIENT_USER: return POP3C_PASS;
	case SASL_CLIENT_APOP: return POP3C_APOP;
	default: return POP3C_AUTH;
	}
}

static int login(struct run *r)
{
	struct sasl_client_policy policy = {
		.method = r->a->auth,
		.allow_cleartext = r->a->tls == ACCOUNT_TLS_NONE,
	};
	struct sasl_client_offer offer = {
		.sasl = sasl_client_parse_mechs(r->caps.sasl_mechs,
						strlen(r->caps.sasl_mechs)),
		.apop = r->has_apop,
		.user = r->caps.user || !r->have_caps,
		.tls = net_conn_is_tls(r->conn),
	};
	enum sasl_client_method m;
	const char *error;

	for (;;) {
		if (sasl_client_choose(&offer, &policy, &m, &error) < 0) {
			fail(r, RUN_PERMFAIL, "cannot log in: %s", error);
			return -1;
		}
		int ret = try_method(r, m);
		if (ret <= 0)
			return ret;
		const struct saved_reply *rep = &r->reply[method_command(m)];
		if (!sasl_client_method_is_cleartext(m) &&
		    policy.method == SASL_CLIENT_AUTO &&
		    !code_is_temporary(rep->code)) {
			/* A server may offer SCRAM and APOP to every user
			   but serve them only where it stores the password
			   in a form they need (popboxd does): try the next
			   method (one more failed-login delay when the
			   password is wrong). */
			policy.exclude |= SASL_CLIENT_BIT(m);
			continue;
		}
		fail(r, code_is_temporary(rep->code) ? RUN_TEMPFAIL :
		     RUN_PERMFAIL, "login as %s refused (%s): %s%s%s%s",
		     r->a->user, sasl_client_method_name(m),
		     code_label(rep->code), rep->text,
		     r->sasl_error[0] != '\0' ? "; " : "", r->sasl_error);
		return -1;
	}
}

/* ---- listing and planning -------------------------------------------- */

static int list_messages(struct run *r, bool *have_uidl_r)
{
	bool want_uidl = !r->have_caps || r->caps.uidl;
	uint64_t last;

	if ((r->have_caps && queue(r, POP3C_CAPA, 0, 0, NULL) < 0) ||
	    queue(r, POP3C_STAT, 0, 0, NULL) < 0 ||
	    queue(r, POP3C_LIST, 0, 0, &last) < 0 ||
	    (want_uidl && queue(r, POP3C_UIDL, 0, 0, &last) < 0) ||
	    wait_for(r, last) < 0)
		return -1;
	if (r->reply[POP3C_STAT].status != POP3C_OK)
		return refused(r, POP3C_STAT, "STAT");
	if (r->reply[POP3C_LIST].status != POP3C_OK)
		return refused(r, POP3C_LIST, "LIST");
	if (r->listing_error != NULL) {
		fail(r, RUN_TEMPFAIL, "the server's listing: %s",
		     r->listing_error);
		return -1;
	}
	/* A server that offers UIDL and then refuses it is in trouble right
	   now; going on without UIDLs would forget what is recorded and fetch
	   everything again: try later instead. */
	if (want_uidl && r->have_caps && r->caps.uidl &&
	    r->reply[POP3C_UIDL].status != POP3C_OK) {
		fail(r, RUN_TEMPFAIL, "the server offers UIDL but refused it: "
		     "not fetching without it (that would fetch recorded "
		     "messages again)");
		return -1;
	}
	*have_uidl_r = want_uidl && r->reply[POP3C_UIDL].status == POP3C_OK;
	if (r->a->keep != PLAN_DELETE && r->caps.expire == POP3C_EXPIRE_DAYS &&
	    r->caps.expire_days == 0)
		say(r, RUN_LINE_WARN, "the server deletes every message once "
		    "retrieved (EXPIRE 0): keep cannot work there");
	return 0;
}

/* --list and the first run of a read-only table: no lock, no write. */
static int load_db_readonly(struct run *r)
{
	const char *error;
	char *text;
	size_t len;

	if ((r->db = uidl_db_new()) == NULL) {
		fail(r, RUN_TEMPFAIL, "out of memory");
		return -1;
	}
	if (file_read_all(AT_FDCWD, r->opt->uidl_file, O_NOFOLLOW,
			  UIDL_DB_FILE_MAX, &text, &len, NULL, &error) < 0) {
		if (errno == ENOENT)
			return 0;
		fail(r, RUN_PERMFAIL, "%s: %s", r->opt->uidl_file, error);
		return -1;
	}
	int ret = uidl_db_parse(r->db, text, len, NULL, &error);
	free(text);
	if (ret < 0)
		fail(r, RUN_PERMFAIL, "%s is damaged: %s", r->opt->uidl_file,
		     error);
	return ret;
}

/* mkdir -p of path's directory (0700 for what it creates). */
static int make_parent_dirs(const char *path)
{
	char buf[4096];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -1;
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i < len; i++) {
		if (buf[i] != '/')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -1;
		buf[i] = '/';
	}
	return 0;
}

static int open_db(struct run *r)
{
	const char *error;

	if (r->opt->list)
		return load_db_readonly(r);
	if (make_parent_dirs(r->opt->uidl_file) < 0) {
		fail(r, RUN_PERMFAIL, "cannot make the directory of %s: %s",
		     r->opt->uidl_file, strerror(errno));
		return -1;
	}
	if (uidl_db_open(r->opt->uidl_file, &r->db, NULL, &error) < 0) {
		/* Locked by another run: later.  Damaged: the user's. */
		fail(r, strstr(error, "in use by another") != NULL ?
		     RUN_TEMPFAIL : RUN_PERMFAIL, "%s", error);
		return -1;
	}
	return 0;
}

/*
 * Messages an interrupted run left pending (uidl-db.h): each looked up by
 * its name in the destination (sink_locate): in the Maildir (found, or
 * moved from tmp/ into new/ now), or its append's bytes at their place in
 * the mbox: recorded as stored; nowhere (or torn): fetched again.  A
 * --list run changes nothing and opens no destination: it shows them as
 * not yet fetched.
 */
static int recover(struct run *r)
{
	size_t n = uidl_db_pending_count(r->db), found = 0;
	const char **names;
	bool *stored;
	enum sink_status st;
	const char *error;
	int ret = 0;

	if (n == 0)
		return 0;
	names = calloc(n, sizeof(*names));
	stored = calloc(n, sizeof(*stored));
	if (names == NULL || stored == NULL) {
		free(names);
		free(stored);
		fail(r, RUN_TEMPFAIL, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const char *uidl;
		size_t len;
		struct uidl_db_rec rec;

		uidl_db_pending_at(r->db, i, &uidl, &len, &rec, &names[i]);
	}
	if (!r->opt->list &&
	    sink_locate(r->dest, names, n, stored, &st, &error) < 0) {
		fail(r, st == SINK_PERMFAIL ? RUN_PERMFAIL : RUN_TEMPFAIL,
		     "cannot tell which messages an interrupted run stored: %s",
		     error);
		ret = -1;
	}
	for (size_t i = 0; i < n && ret == 0; i++)
		found += stored[i];
	if (ret == 0 && uidl_db_settle_pending(r->db, stored, &error) < 0) {
		fail(r, RUN_TEMPFAIL, "%s", error);
		ret = -1;
	}
	if (ret == 0 && r->opt->verbose)
		say(r, RUN_LINE_INFO, "an interrupted run left %zu message%s "
		    "pending: %zu stored, %zu to fetch again", n,
		    n > 1 ? "s" : "", found, n - found);
	free(names);
	free(stored);
	return ret;
}

/* The destination, opened once for the run (not for --list). */
static int open_dest(struct run *r)
{
	enum sink_status st;
	const char *error;

	if (r->opt->list)
		return 0;
	if (sink_open(&r->sink, &r->dest, &st, &error) < 0) {
		fail(r, st == SINK_PERMFAIL ? RUN_PERMFAIL : RUN_TEMPFAIL,
		     "%s", error);
		return -1;
	}
	return 0;
}

static bool policy_needs_uidl(const struct account *a)
{
	return a->keep != PLAN_DELETE ||
	       (a->size_limit > 0 && a->oversize == PLAN_OVERSIZE_HEADERS);
}

static int make_plan(struct run *r, bool have_uidl)
{
	struct plan_input in = {
		.scan = r->scan, .scan_count = r->nscan,
		.have_uidl = have_uidl, .db = r->db, .now = r->opt->now,
	};
	struct plan_policy pol = {
		.keep = r->a->keep, .keep_days = r->a->keep_days,
		.fetch_all = !r->a->only_new, .size_limit = r->a->size_limit,
		.oversize = r->a->oversize, .max_messages = r->a->max_messages,
	};
	const char *error;

	if (have_uidl) {
		r->plan_uids = calloc(r->nuid > 0 ? r->nuid : 1,
				      sizeof(*r->plan_uids));
		if (r->plan_uids == NULL) {
			fail(r, RUN_TEMPFAIL, "out of memory");
			return -1;
		}
		for (size_t i = 0; i < r->nuid; i++) {
			r->plan_uids[i].num = r->uids[i].num;
			r->plan_uids[i].uidl = r->pool + r->uids[i].off;
			r->plan_uids[i].len = r->uids[i].len;
		}
		in.uids = r->plan_uids;
		in.uid_count = r->nuid;
	}
	if (plan_make(&in, &pol, &r->plan, &error) < 0) {
		fail(r, !have_uidl && policy_needs_uidl(r->a) ? RUN_PERMFAIL :
		     RUN_TEMPFAIL, "%s", error);
		return -1;
	}
	if (!r->opt->list)
		plan_prune_db(r->db, &in);
	return 0;
}

/* --list: one line per message. */
static const char *list_action(const struct plan_action *a)
{
	switch (a->op) {
	case PLAN_OP_RETR:
		return a->dele_after ? "fetch+delete" : "fetch";
	case PLAN_OP_TOP:
		return "headers";
	case PLAN_OP_DELE:
		return "delete";
	default:
		return "skip";
	}
}

static void show_plan(struct run *r)
{
	say(r, RUN_LINE_LIST, "%zu messages (%" PRIu64 " bytes) on the server",
	    r->nscan, r->listed_bytes);
	for (size_t i = 0; i < r->plan.count; i++) {
		const struct plan_action *a = &r->plan.actions[i];
		say(r, RUN_LINE_LIST, "%" PRIu32 " %" PRIu64 " %s %s %s",
		    a->num, a->size, uidl_text(a), list_action(a),
		    plan_reason_name(a->reason));
	}
}

/* kept and skipped of the messages the plan leaves alone. */
static void count_skips(struct run *r)
{
	for (size_t i = 0; i < r->plan.count; i++) {
		const struct plan_action *a = &r->plan.actions[i];

		if (a->op != PLAN_OP_SKIP)
			continue;
		if (a->reason == PLAN_R_KEPT || a->reason == PLAN_R_HEADERS_KEPT)
			r->res->kept++;
		else
			r->res->skipped++;
	}
}

/* ---- the transfer ---------------------------------------------------- */

static int transfer(struct run *r)
{
	int ret = 0;

	r->window = r->have_caps && r->caps.pipelining ? RUN_WINDOW : 1;
	pop3c_set_window(r->pop, r->window);
	r->cursor = 0;
	r->transferring = true;
	for (;;) {
		refill(r);
		if (pop3c_waiting(r->pop) == 0 && pop3c_in_flight(r->pop) == 0)
			break;
		if (pump(r) < 0) {
			ret = -1;
			break;
		}
	}
	r->transferring = false;
	return ret;
}

static int quit(struct run *r)
{
	if (command(r, POP3C_QUIT) < 0)
		return -1;
	if (r->reply[POP3C_QUIT].status != POP3C_OK) {
		if (r->dele_ok > 0)
			fail(r, RUN_TEMPFAIL, "QUIT refused by the server (%s): "
			     "the deletions did not happen; the next run "
			     "deletes those messages", r->reply[POP3C_QUIT].text);
		else
			fail(r, RUN_TEMPFAIL, "QUIT refused by the server: %s",
			     r->reply[POP3C_QUIT].text);
		return -1;
	}
	r->res->deleted = r->dele_ok;
	return 0;
}

static int session(struct run *r)
{
	bool have_uidl = false;

	if (open_db(r) < 0 || open_dest(r) < 0 || recover(r) < 0 ||
	    connect_server(r) < 0 || login(r) < 0 ||
	    list_messages(r, &have_uidl) < 0 || make_plan(r, have_uidl) < 0)
		return -1;
	if (r->opt->list) {
		show_plan(r);
		return quit(r);
	}
	atomic_store(&r->progress->total, r->plan.fetch_count);
	atomic_store(&r->progress->total_bytes, r->plan.fetch_bytes);
	atomic_store(&r->progress->started, true);
	count_skips(r);
	if (transfer(r) < 0)
		return -1;
	return quit(r);
}

static void run_free(struct run *r)
{
	const char *error;

	sink_abort(&r->msg);
	/* No DELE can follow now; the records still must be written. */
	r->no_more_dele = true;
	flush_records(r);
	sink_close(&r->dest);
	sasl_client_free(&r->sasl);
	close_conn(r);
	pop3c_free(&r->pop);
	if (r->db != NULL && !r->opt->list && uidl_db_dirty(r->db) &&
	    uidl_db_save(r->db, &error) < 0)
		fail(r, RUN_TEMPFAIL, "%s", error);
	uidl_db_free(&r->db);
	plan_free(&r->plan);
	secret_free(&r->secret);
	free(r->scan);
	free(r->uids);
	free(r->pool);
	free(r->plan_uids);
	free(r->buf);
	free(r->wbuf);
	free(r);
}

void run_account(const struct account *a, const struct run_options *opt,
		 const struct run_output *out, struct run_progress *progress,
		 struct run_result *result)
{
	struct run *r = calloc(1, sizeof(*r));

	memset(result, 0, sizeof(*result));
	if (r == NULL || (r->buf = malloc(RUN_READ_SIZE)) == NULL ||
	    (r->wbuf = malloc(RUN_WRITE_SIZE)) == NULL) {
		if (r != NULL)
			free(r->buf);
		free(r);
		out->line(out->ctx, RUN_LINE_ERROR, a->name, "out of memory");
		result->status = RUN_TEMPFAIL;
		result->errors = 1;
		atomic_store(&progress->finished, true);
		return;
	}
	r->a = a;
	r->opt = opt;
	r->out = out;
	r->progress = progress;
	r->res = result;
	r->sink.kind = a->deliver_kind;
	r->sink.target = a->deliver_target;
	if (run_stop_requested())
		(void)interrupted(r);
	else
		(void)session(r);
	run_free(r);
	atomic_store(&progress->finished, true);
}
