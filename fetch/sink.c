/*
 * sink.c — a downloaded message into a Maildir, an mbox or an MDA (see
 * sink.h): the common part, the spool file and the Maildir kind.
 *
 * Maildir messages go straight through popboxd/deliver.c (no envelope,
 * so no header of its own, no quota, no size limit): its tmp/ file is the
 * spool, and commit is its rename into new/.  mbox and MDA messages are
 * converted (CRLF -> LF, lib/mail-lines) into an unlinked spool file,
 * which sink-mbox.c or sink-mda.c takes at commit (an mbox also at
 * prepare: the append named and locked, then written at publish).  After any failure the
 * message keeps the first error and every later call reports it.
 */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "deliver.h"
#include "mbox-format.h"
#include "sink-private.h"

static _Thread_local char sink_errbuf[SINK_ERROR_MAX];

/* ---- errors and small helpers ----------------------------------------- */

int sink_fail(enum sink_status status, enum sink_status *status_r,
	      const char **error_r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sink_errbuf, sizeof(sink_errbuf), fmt, ap);
	va_end(ap);
	*status_r = status;
	*error_r = sink_errbuf;
	return -1;
}

int sink_fail_errno(enum sink_status status, int err,
		    enum sink_status *status_r, const char **error_r,
		    const char *what)
{
	char eb[128];

	return sink_fail(status, status_r, error_r, "%s: %s", what,
			 strerror_r(err, eb, sizeof(eb)));
}

enum sink_status sink_open_status(int err)
{
	switch (err) {
	case EACCES:
	case EPERM:
	case ENOENT:
	case ENOTDIR:
	case EISDIR:
	case ELOOP:
	case EROFS:
	case ENAMETOOLONG:
		return SINK_PERMFAIL;
	default:
		return SINK_TEMPFAIL;
	}
}

int sink_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int64_t sink_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool sink_wait_step(int64_t deadline_ms, unsigned int *step_ms)
{
	int64_t left = deadline_ms - sink_now_ms();
	struct timespec ts;

	if (left <= 0)
		return false;
	if (*step_ms < 10)
		*step_ms = 10;
	int64_t ms = left < *step_ms ? left : *step_ms;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	if (*step_ms < 250)
		*step_ms *= 2;
	return true;
}

const char *sink_kind_name(enum sink_kind kind)
{
	switch (kind) {
	case SINK_MAILDIR:
		return "maildir";
	case SINK_MBOX:
		return "mbox";
	case SINK_MDA:
		return "mda";
	}
	return "?";
}

/* A trace header fit to put before a message: one line, no control
   bytes but TAB, not too long, and a "Name:" start. */
static bool sink_trace_valid(const char *h)
{
	size_t len = strnlen(h, SINK_TRACE_MAX + 1);

	if (len == 0 || len > SINK_TRACE_MAX || memchr(h, ':', len) == NULL)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)h[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return false;
	}
	return h[0] != ' ' && h[0] != '\t' && h[0] != ':';
}

/* ---- the spool (mbox, MDA) --------------------------------------------- */

/* An unlinked file for the message in dir: O_TMPFILE, else a named one
   removed at once.  -1 with errno. */
static int sink_spool_in(const char *dir)
{
	char path[4096];
	int fd = open(dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);

	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR &&
			errno != EINVAL))
		return fd;
	if ((size_t)snprintf(path, sizeof(path), "%s/.popbox-fetch.XXXXXX",
			     dir) >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		(void)unlink(path);
	return fd;
}

/* The directory of path ("." if it has none) into buf. */
static void sink_dirname(const char *path, char *buf, size_t size)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		snprintf(buf, size, ".");
	else if (slash == path)
		snprintf(buf, size, "/");
	else
		snprintf(buf, size, "%.*s", (int)(slash - path), path);
}

static int sink_spool_open(struct sink_msg *m, const struct sink_config *cfg,
			   enum sink_status *status_r, const char **error_r)
{
	char dir[4096];
	const char *tmp = cfg->spool_dir;

	m->spool_fd = -1;
	/* Next to the mbox: the same file system (and quota) as where the
	   message goes; not possible in a directory like /var/mail. */
	if (m->kind == SINK_MBOX) {
		sink_dirname(m->target, dir, sizeof(dir));
		m->spool_fd = sink_spool_in(dir);
	}
	if (m->spool_fd < 0) {
		if (tmp == NULL || tmp[0] == '\0')
			tmp = getenv("TMPDIR");
		if (tmp == NULL || tmp[0] == '\0')
			tmp = "/tmp";
		m->spool_fd = sink_spool_in(tmp);
	}
	if (m->spool_fd < 0)
		return sink_fail_errno(SINK_TEMPFAIL, errno, status_r, error_r,
				       "spool file");
	/* 0..2 are the MDA's stdin and outputs: never one of ours. */
	if (m->spool_fd <= 2) {
		int fd = fcntl(m->spool_fd, F_DUPFD_CLOEXEC, 3);
		int err = errno;
		close(m->spool_fd);
		m->spool_fd = fd;
		if (fd < 0)
			return sink_fail_errno(SINK_TEMPFAIL, err, status_r,
					       error_r, "spool file");
	}
	mail_lines_init(&m->lines);
	return 0;
}

/* Converts data into the spool. */
static int sink_spool_write(struct sink_msg *m, const uint8_t *data,
			    size_t len, enum sink_status *status_r,
			    const char **error_r)
{
	while (len > 0) {
		/* MAIL_LINES_OUT_MAX(n) = n + 1 <= SINK_BUF_SIZE. */
		size_t n = len < SINK_BUF_SIZE - 1 ? len : SINK_BUF_SIZE - 1;
		size_t out = mail_lines_convert(&m->lines, data, n, m->buf);

		if (sink_write_all(m->spool_fd, m->buf, out) < 0)
			return sink_fail_errno(SINK_TEMPFAIL, errno, status_r,
					       error_r, "write spool file");
		m->spool_size += out;
		data += n;
		len -= n;
	}
	return 0;
}

static int sink_spool_finish(struct sink_msg *m, enum sink_status *status_r,
			     const char **error_r)
{
	size_t out = mail_lines_finish(&m->lines, m->buf);

	if (sink_write_all(m->spool_fd, m->buf, out) < 0)
		return sink_fail_errno(SINK_TEMPFAIL, errno, status_r, error_r,
				       "write spool file");
	m->spool_size += out;
	return 0;
}

void sink_spool_sender(const struct sink_msg *m,
		       char sender_r[MBOX_SENDER_MAX + 1])
{
	uint8_t head[SINK_HEAD_MAX];
	ssize_t n;

	sender_r[0] = '\0';
	do
		n = pread(m->spool_fd, head, sizeof(head), 0);
	while (n < 0 && errno == EINTR);
	if (n > 0)
		(void)mbox_return_path(head, (size_t)n, sender_r);
}

/* ---- Maildir (popboxd/deliver.c) --------------------------------------- */

static enum sink_status sink_deliver_status(enum deliver_status st)
{
	return st == DELIVER_PERMFAIL ? SINK_PERMFAIL : SINK_TEMPFAIL;
}

static int sink_maildir_begin(struct sink_msg *m, uint64_t size_hint,
			      enum sink_status *status_r, const char **error_r)
{
	enum deliver_status st;
	const char *err;

	/* No envelope: nothing added; no policy: no quota; no size limit. */
	if (m->dir != NULL ?
	    deliver_begin_in(m->dir, NULL, &m->deliver, &st, &err) < 0 :
	    deliver_begin(m->target, NULL, NULL, size_hint, 0, &m->deliver,
			  &st, &err) < 0)
		return sink_fail(sink_deliver_status(st), status_r, error_r,
				 "Maildir %s: %s", m->target, err);
	return 0;
}

static int sink_maildir_write(struct sink_msg *m, const void *data,
			      size_t len, enum sink_status *status_r,
			      const char **error_r)
{
	enum deliver_status st;
	const char *err;

	if (deliver_write(m->deliver, data, len, &st, &err) < 0)
		return sink_fail(sink_deliver_status(st), status_r, error_r,
				 "Maildir %s: %s", m->target, err);
	return 0;
}

static int sink_maildir_commit(struct sink_msg *m, enum sink_status *status_r,
			       const char **error_r)
{
	enum deliver_status st;
	const char *err;

	if (deliver_commit(&m->deliver, NULL, &st, &err) < 0)
		return sink_fail(sink_deliver_status(st), status_r, error_r,
				 "Maildir %s: %s", m->target, err);
	return 0;
}

/* ---- the interface ----------------------------------------------------- */

static void sink_free(struct sink_msg *m)
{
	sink_mbox_release(m);
	deliver_abort(&m->deliver);
	if (m->spool_fd >= 0)
		close(m->spool_fd);
	free(m->buf);
	free(m->target);
	free(m->uidl);
	free(m->account);
	free(m);
}

/* A copy of s, or NULL for NULL; *ok cleared if out of memory. */
static char *sink_strdup(const char *s, bool *ok)
{
	char *copy;

	if (s == NULL)
		return NULL;
	copy = strdup(s);
	if (copy == NULL)
		*ok = false;
	return copy;
}

static struct sink_msg *sink_new(const struct sink_config *cfg,
				 const struct sink_msg_info *info)
{
	struct sink_msg *m = calloc(1, sizeof(*m));
	bool ok = true;

	if (m == NULL)
		return NULL;
	m->spool_fd = -1;
	m->kind = cfg->kind;
	m->lock_timeout_ms = cfg->lock_timeout_ms > 0 ?
			     cfg->lock_timeout_ms : SINK_LOCK_TIMEOUT_MS_DEFAULT;
	m->mda_timeout_ms = cfg->mda_timeout_ms > 0 ?
			    cfg->mda_timeout_ms : SINK_MDA_TIMEOUT_MS_DEFAULT;
	m->no_dotlock = cfg->no_dotlock;
	m->target = sink_strdup(cfg->target, &ok);
	m->uidl = sink_strdup(info != NULL ? info->uidl : NULL, &ok);
	m->account = sink_strdup(info != NULL ? info->account : NULL, &ok);
	if (cfg->kind != SINK_MAILDIR && (m->buf = malloc(SINK_BUF_SIZE)) == NULL)
		ok = false;
	if (!ok) {
		sink_free(m);
		return NULL;
	}
	return m;
}

/* Records the first failure (kept for every later call) and returns -1. */
static int sink_set_failed(struct sink_msg *m, enum sink_status status,
			   const char *error)
{
	m->failed = true;
	m->fail_status = status;
	snprintf(m->fail_error, sizeof(m->fail_error), "%s", error);
	return -1;
}

static int sink_fail_again(const struct sink_msg *m, enum sink_status *status_r,
			   const char **error_r)
{
	return sink_fail(m->fail_status, status_r, error_r, "%s",
			 m->fail_error);
}

static int sink_start(struct sink_msg *m, const struct sink_config *cfg,
		      const struct sink_msg_info *info,
		      enum sink_status *status_r, const char **error_r)
{
	const char *trace = info != NULL ? info->trace_header : NULL;
	uint64_t hint = info != NULL ? info->size_hint : 0;

	if (cfg->target == NULL || cfg->target[0] == '\0')
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "no %s given", sink_kind_name(cfg->kind));
	if (trace != NULL && !sink_trace_valid(trace))
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "trace header is not one header line");
	if (cfg->kind == SINK_MAILDIR) {
		if (sink_maildir_begin(m, hint, status_r, error_r) < 0)
			return -1;
	} else if (sink_spool_open(m, cfg, status_r, error_r) < 0) {
		return -1;
	}
	if (trace == NULL)
		return 0;
	if (sink_write(m, trace, strlen(trace), status_r, error_r) < 0 ||
	    sink_write(m, "\n", 1, status_r, error_r) < 0)
		return -1;
	return 0;
}

/* sink_begin, with the Maildir dir opened by sink_open (or NULL). */
static int sink_begin_at(const struct sink_config *cfg,
			 struct deliver_dir *dir,
			 const struct sink_msg_info *info,
			 struct sink_msg **msg_r, enum sink_status *status_r,
			 const char **error_r)
{
	struct sink_msg *m;

	*msg_r = NULL;
	if (cfg->kind != SINK_MAILDIR && cfg->kind != SINK_MBOX &&
	    cfg->kind != SINK_MDA)
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "unknown destination kind");
	m = sink_new(cfg, info);
	if (m == NULL)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "out of memory");
	m->dir = dir;
	if (sink_start(m, cfg, info, status_r, error_r) < 0) {
		sink_free(m);
		return -1;
	}
	*msg_r = m;
	return 0;
}

int sink_begin(const struct sink_config *cfg, const struct sink_msg_info *info,
	       struct sink_msg **msg_r, enum sink_status *status_r,
	       const char **error_r)
{
	return sink_begin_at(cfg, NULL, info, msg_r, status_r, error_r);
}

int sink_write(struct sink_msg *m, const void *data, size_t len,
	       enum sink_status *status_r, const char **error_r)
{
	int ret;

	if (m->failed)
		return sink_fail_again(m, status_r, error_r);
	if (m->kind == SINK_MAILDIR)
		ret = sink_maildir_write(m, data, len, status_r, error_r);
	else
		ret = sink_spool_write(m, data, len, status_r, error_r);
	if (ret < 0)
		return sink_set_failed(m, *status_r, *error_r);
	return 0;
}

static int sink_finish(struct sink_msg *m, enum sink_status *status_r,
		       const char **error_r)
{
	if (m->failed)
		return sink_fail_again(m, status_r, error_r);
	switch (m->kind) {
	case SINK_MAILDIR:
		return sink_maildir_commit(m, status_r, error_r);
	case SINK_MBOX:
		if (sink_spool_finish(m, status_r, error_r) < 0)
			return -1;
		return sink_mbox_commit(m, status_r, error_r);
	case SINK_MDA:
		if (sink_spool_finish(m, status_r, error_r) < 0)
			return -1;
		return sink_mda_commit(m, status_r, error_r);
	}
	return sink_fail(SINK_PERMFAIL, status_r, error_r, "bad sink");
}

int sink_commit(struct sink_msg **mp, enum sink_status *status_r,
		const char **error_r)
{
	struct sink_msg *m = *mp;
	int ret;

	*mp = NULL;
	ret = sink_finish(m, status_r, error_r);
	if (ret == 0)
		*status_r = SINK_OK;
	sink_free(m);
	return ret;
}

void sink_abort(struct sink_msg **mp)
{
	struct sink_msg *m = *mp;

	if (m == NULL)
		return;
	*mp = NULL;
	sink_free(m);
}

/* ---- one destination for many messages ---------------------------------- */

struct sink {
	struct sink_config cfg;   /* target copied */
	struct deliver_dir *dir;  /* Maildir */
};

int sink_open(const struct sink_config *cfg, struct sink **sink_r,
	      enum sink_status *status_r, const char **error_r)
{
	struct sink *sink = calloc(1, sizeof(*sink));
	enum deliver_status st;
	const char *err;

	*sink_r = NULL;
	if (sink == NULL)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "out of memory");
	sink->cfg = *cfg;
	sink->cfg.target = cfg->target != NULL ? strdup(cfg->target) : NULL;
	sink->cfg.spool_dir = NULL;
	if (cfg->target != NULL && sink->cfg.target == NULL) {
		sink_close(&sink);
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "out of memory");
	}
	if (cfg->spool_dir != NULL &&
	    (sink->cfg.spool_dir = strdup(cfg->spool_dir)) == NULL) {
		sink_close(&sink);
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "out of memory");
	}
	if (cfg->kind == SINK_MAILDIR && cfg->target != NULL &&
	    cfg->target[0] != '\0' &&
	    deliver_dir_open(cfg->target, &sink->dir, &st, &err) < 0) {
		sink_close(&sink);
		return sink_fail(sink_deliver_status(st), status_r, error_r,
				 "Maildir %s: %s", cfg->target, err);
	}
	*sink_r = sink;
	return 0;
}

void sink_close(struct sink **sinkp)
{
	struct sink *sink = *sinkp;

	if (sink == NULL)
		return;
	*sinkp = NULL;
	deliver_dir_close(&sink->dir);
	free((char *)sink->cfg.target);
	free((char *)sink->cfg.spool_dir);
	free(sink);
}

int sink_begin_in(struct sink *sink, const struct sink_msg_info *info,
		  struct sink_msg **msg_r, enum sink_status *status_r,
		  const char **error_r)
{
	return sink_begin_at(&sink->cfg, sink->dir, info, msg_r, status_r,
			     error_r);
}

bool sink_can_prepare(const struct sink *sink)
{
	return sink->dir != NULL ||
	       (sink->cfg.kind == SINK_MBOX && sink->cfg.target != NULL &&
		sink->cfg.target[0] != '\0');
}

bool sink_can_batch(const struct sink *sink)
{
	return sink->dir != NULL;
}

static int sink_maildir_prepare(struct sink_msg *m, const char **name_r,
				enum sink_status *status_r,
				const char **error_r)
{
	enum deliver_status st;
	const char *err;

	if (deliver_prepare(m->deliver, &st, &err) < 0)
		return sink_fail(sink_deliver_status(st), status_r, error_r,
				 "Maildir %s: %s", m->target, err);
	*name_r = deliver_base(m->deliver);
	return 0;
}

int sink_prepare(struct sink_msg *m, const char **name_r,
		 enum sink_status *status_r, const char **error_r)
{
	int ret;

	if (m->failed)
		return sink_fail_again(m, status_r, error_r);
	if (m->prepared || (m->kind == SINK_MAILDIR ? m->dir == NULL :
			    m->kind != SINK_MBOX))
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "sink_prepare: not an mbox or a Maildir of "
				 "sink_open's, or prepared twice");
	if (m->kind == SINK_MAILDIR)
		ret = sink_maildir_prepare(m, name_r, status_r, error_r);
	else if ((ret = sink_spool_finish(m, status_r, error_r)) == 0)
		ret = sink_mbox_prepare(m, name_r, status_r, error_r);
	if (ret < 0)
		return sink_set_failed(m, *status_r, *error_r);
	m->prepared = true;
	return 0;
}

int sink_publish(struct sink_msg **mp, enum sink_status *status_r,
		 const char **error_r)
{
	struct sink_msg *m = *mp;
	enum deliver_status st;
	const char *err;
	int ret = 0;

	*mp = NULL;
	if (m->failed)
		ret = sink_fail_again(m, status_r, error_r);
	else if (!m->prepared)
		ret = sink_fail(SINK_PERMFAIL, status_r, error_r,
				"sink_publish before sink_prepare");
	else if (m->kind == SINK_MBOX)
		ret = sink_mbox_publish(m, status_r, error_r);
	else if (deliver_publish(&m->deliver, false, NULL, &st, &err) < 0)
		ret = sink_fail(sink_deliver_status(st), status_r, error_r,
				"Maildir %s: %s", m->target, err);
	if (ret == 0)
		*status_r = SINK_OK;
	sink_free(m);
	return ret;
}

int sink_sync(struct sink *sink, enum sink_status *status_r,
	      const char **error_r)
{
	enum deliver_status st;
	const char *err;

	if (sink->dir == NULL)
		return 0;
	if (deliver_dir_sync(sink->dir, &st, &err) < 0)
		return sink_fail(sink_deliver_status(st), status_r, error_r,
				 "Maildir %s: %s", sink->cfg.target, err);
	return 0;
}

int sink_locate(struct sink *sink, const char *const *names, size_t n,
		bool *stored_r, enum sink_status *status_r,
		const char **error_r)
{
	enum deliver_where *where;
	enum deliver_status st;
	const char *err;

	for (size_t i = 0; i < n; i++)
		stored_r[i] = false;
	if (n > 0 && sink->cfg.kind == SINK_MBOX && sink_can_prepare(sink))
		return sink_mbox_locate(sink->cfg.target, names, n, stored_r,
					status_r, error_r);
	if (sink->dir == NULL || n == 0)
		return 0;
	if ((where = calloc(n, sizeof(*where))) == NULL)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "out of memory");
	if (deliver_dir_locate(sink->dir, names, n, where, &st, &err) < 0) {
		free(where);
		return sink_fail(sink_deliver_status(st), status_r, error_r,
				 "Maildir %s: %s", sink->cfg.target, err);
	}
	for (size_t i = 0; i < n; i++) {
		if (where[i] == DELIVER_WHERE_TMP &&
		    deliver_dir_publish_tmp(sink->dir, names[i], &st,
					    &err) < 0) {
			free(where);
			return sink_fail(sink_deliver_status(st), status_r,
					 error_r, "Maildir %s: %s: %s",
					 sink->cfg.target, names[i], err);
		}
		stored_r[i] = where[i] != DELIVER_WHERE_NONE;
	}
	free(where);
	return 0;
}

/* ---- the trace line ------------------------------------------------------ */

/* s with bytes outside 0x21-0x7E as '?', cut to max bytes, into out. */
static void sink_clean_word(const char *s, char *out, size_t max)
{
	size_t n = 0;

	for (; s != NULL && *s != '\0' && n < max; s++) {
		unsigned char c = (unsigned char)*s;
		char ch = *s;
		if (c < 0x21 || c > 0x7e)
			ch = '?';
		out[n++] = ch;
	}
	if (n == 0)
		out[n++] = '?';
	out[n] = '\0';
}

/* An RFC 5322 date-time (English names whatever the locale). */
static void sink_rfc5322_date(time_t t, char *out, size_t size)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed",
					 "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr",
					    "May", "Jun", "Jul", "Aug",
					    "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;
	long off;

	if (localtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	off = tm.tm_gmtoff / 60;
	snprintf(out, size, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld",
		 days[(unsigned int)tm.tm_wday % 7], tm.tm_mday,
		 months[(unsigned int)tm.tm_mon % 12], tm.tm_year + 1900,
		 tm.tm_hour, tm.tm_min, tm.tm_sec, off < 0 ? '-' : '+',
		 labs(off) / 60, labs(off) % 60);
}

size_t sink_format_received(char *buf, size_t size, const char *server,
			    const char *user, time_t now)
{
	/* Each word at most 255 bytes: the line stays under SINK_TRACE_MAX. */
	char srv[256], usr[256], host[256], date[128];
	int n;

	sink_clean_word(server, srv, sizeof(srv) - 1);
	sink_clean_word(user, usr, sizeof(usr) - 1);
	if (gethostname(host, sizeof(host)) < 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	sink_clean_word(host, host, sizeof(host) - 1);
	sink_rfc5322_date(now, date, sizeof(date));
	n = snprintf(buf, size,
		     "Received: from %s by %s (popbox-fetch) with POP3 "
		     "for <%s>; %s", srv, host, usr, date);
	if (n < 0 || (size_t)n >= size)
		return 0;
	return (size_t)n;
}
