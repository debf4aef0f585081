/*
 * sink-mbox.c — appending a spooled message to an mbox file, all or
 * nothing (see sink.h for the rules; mbox-format.h for the bytes).
 *
 * The steps, and what each failure leaves:
 *   open    O_RDWR|O_APPEND, created 0600 if missing; must be a regular
 *           file                                  -> nothing changed
 *   lock    OFD write lock on the whole file, then "<mbox>.lock"; each
 *           tried until the deadline              -> nothing changed
 *   append  old size noted; a newline or two if the file does not end
 *           in an empty line; "From " line; the quoted message; its
 *           final newline if missing; the empty separator line; fsync
 *           (and fsync the directory if the file was just created)
 *                                                 -> on error: ftruncate
 *                                                    to the old size,
 *                                                    fsync
 *   unlock  the dot-lock, then the fcntl lock (the reverse order)
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mbox-format.h"
#include "sink-private.h"

/* The spool is read in pieces of this size; the quoted form of one
   piece fits in the output buffer (MBOX_QUOTE_OUT_MAX). */
#define MBOX_COPY_CHUNK (48 * 1024)

struct mbox_append {
	struct sink_msg *m;
	int fd;
	bool created;          /* the file did not exist before */
	bool fcntl_locked;
	bool dot_locked;
	char lock_path[PATH_MAX];
	int64_t deadline_ms;
	off_t old_size;
	char sender[MBOX_SENDER_MAX + 1];
};

/* ---- open and lock ------------------------------------------------------ */

static int mbox_open(struct mbox_append *a, enum sink_status *status_r,
		     const char **error_r)
{
	const int flags = O_RDWR | O_APPEND | O_NOCTTY | O_CLOEXEC | O_NONBLOCK;
	struct stat st;

	a->fd = open(a->m->target, flags | O_CREAT | O_EXCL, 0600);
	a->created = a->fd >= 0;
	if (a->fd < 0 && errno == EEXIST)
		a->fd = open(a->m->target, flags);
	if (a->fd < 0)
		return sink_fail_errno(sink_open_status(errno), errno, status_r,
				       error_r, a->m->target);
	if (fstat(a->fd, &st) < 0)
		return sink_fail_errno(SINK_TEMPFAIL, errno, status_r, error_r,
				       a->m->target);
	if (!S_ISREG(st.st_mode))
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "%s: not a regular file", a->m->target);
	return 0;
}

static int mbox_lock_fcntl(struct mbox_append *a, enum sink_status *status_r,
			   const char **error_r)
{
	unsigned int step = 0;

	for (;;) {
		/* An OFD lock: l_pid must be 0. */
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

		if (fcntl(a->fd, F_OFD_SETLK, &fl) == 0) {
			a->fcntl_locked = true;
			return 0;
		}
		if (errno != EAGAIN && errno != EACCES && errno != EINTR)
			return sink_fail_errno(SINK_TEMPFAIL, errno, status_r,
					       error_r, "fcntl lock on mbox");
		if (!sink_wait_step(a->deadline_ms, &step))
			return sink_fail(SINK_TEMPFAIL, status_r, error_r,
					 "%s: locked by another program "
					 "(fcntl)", a->m->target);
	}
}

/* A file of our own next to the lock, to link() to the lock's name. */
static int mbox_dotlock_tmp(struct mbox_append *a, char *tmp, size_t size,
			    enum sink_status *status_r, const char **error_r)
{
	uint32_t rnd = 0;
	int fd;

	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) < 0)
		rnd = (uint32_t)sink_now_ms();
	if ((size_t)snprintf(tmp, size, "%s.%d.%08x", a->lock_path,
			     (int)getpid(), (unsigned int)rnd) >= size)
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "%s: name too long", a->m->target);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  0600);
	if (fd < 0) {
		enum sink_status st = sink_open_status(errno);
		char eb[128];
		return sink_fail(st, status_r, error_r,
				 "cannot create the dot-lock %s: %s%s",
				 a->lock_path, strerror_r(errno, eb, sizeof(eb)),
				 st == SINK_PERMFAIL ?
				 " (fcntl locking alone: no_dotlock)" : "");
	}
	close(fd);
	return 0;
}

/* A lock file older than SINK_DOTLOCK_STALE_S is removed; true if so. */
static bool mbox_dotlock_break_stale(const struct mbox_append *a)
{
	struct stat st;

	if (lstat(a->lock_path, &st) < 0 ||
	    st.st_mtime >= time(NULL) - SINK_DOTLOCK_STALE_S)
		return false;
	return unlink(a->lock_path) == 0;
}

/* One attempt: 1 got it, 0 held by someone else, -1 error (errno). */
static int mbox_dotlock_try(const struct mbox_append *a, const char *tmp)
{
	struct stat st;

	if (link(tmp, a->lock_path) == 0)
		return 1;
	int err = errno;
	/* NFS: the link may have been made though its reply was lost. */
	if (stat(tmp, &st) == 0 && st.st_nlink == 2)
		return 1;
	if (err == EEXIST)
		return 0;
	errno = err;
	return -1;
}

static int mbox_lock_dot(struct mbox_append *a, enum sink_status *status_r,
			 const char **error_r)
{
	char tmp[PATH_MAX];
	unsigned int step = 0;
	int got;

	if ((size_t)snprintf(a->lock_path, sizeof(a->lock_path), "%s.lock",
			     a->m->target) >= sizeof(a->lock_path))
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "%s: name too long", a->m->target);
	if (mbox_dotlock_tmp(a, tmp, sizeof(tmp), status_r, error_r) < 0)
		return -1;
	for (;;) {
		got = mbox_dotlock_try(a, tmp);
		if (got != 0)
			break;
		if (mbox_dotlock_break_stale(a))
			continue;
		if (!sink_wait_step(a->deadline_ms, &step))
			break;
	}
	int err = errno;
	(void)unlink(tmp);
	if (got < 0)
		return sink_fail_errno(sink_open_status(err), err, status_r,
				       error_r, a->lock_path);
	if (got == 0)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "%s: locked by another program (%s)",
				 a->m->target, a->lock_path);
	a->dot_locked = true;
	return 0;
}

static void mbox_unlock_close(struct mbox_append *a)
{
	if (a->dot_locked)
		(void)unlink(a->lock_path);
	if (a->fcntl_locked) {
		struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
		(void)fcntl(a->fd, F_OFD_SETLK, &fl);
	}
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
}

/* ---- append -------------------------------------------------------------- */

/* What goes before the "From " line so that it follows an empty line:
   nothing for an empty file or one ending in "\n\n". */
static int mbox_separator(const struct mbox_append *a, const char **sep_r)
{
	char tail[2];
	off_t n = a->old_size < 2 ? a->old_size : 2;
	ssize_t got;

	*sep_r = "";
	if (n == 0)
		return 0;
	do
		got = pread(a->fd, tail, (size_t)n, a->old_size - n);
	while (got < 0 && errno == EINTR);
	if (got != (ssize_t)n)
		return -1;
	if (tail[n - 1] != '\n')
		*sep_r = "\n\n";
	else if (n == 2 && tail[0] != '\n')
		*sep_r = "\n";
	return 0;
}

/* The quoted spool, then the message's end. */
static int mbox_copy(struct mbox_append *a, uint8_t *out)
{
	struct sink_msg *m = a->m;
	struct mbox_quote q;
	off_t off = 0;
	size_t n;

	mbox_quote_init(&q);
	for (;;) {
		ssize_t got = pread(m->spool_fd, m->buf, MBOX_COPY_CHUNK, off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -1;
		if (got == 0)
			break;
		off += got;
		n = mbox_quote(&q, m->buf, (size_t)got, out);
		if (sink_write_all(a->fd, out, n) < 0)
			return -1;
	}
	if ((uint64_t)off != m->spool_size) {
		errno = EIO; /* the spool is ours alone: never happens */
		return -1;
	}
	n = mbox_quote_finish(&q, out);
	if (mbox_quote_last(&q) != '\n')
		out[n++] = '\n';
	out[n++] = '\n';
	return sink_write_all(a->fd, out, n);
}

/* fsync of the directory holding path. */
static int mbox_fsync_dir(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd, ret;

	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s",
			 slash == path ? 1 : (int)(slash - path), path);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ret = fsync(fd);
	int err = errno;
	close(fd);
	errno = err;
	return ret;
}

/* Everything written and durable, or -1 with errno and *what_r. */
static int mbox_write_all(struct mbox_append *a, uint8_t *out,
			  const char **what_r)
{
	char from[MBOX_FROM_LINE_MAX];
	const char *sep;
	size_t from_len = mbox_from_line(from, a->sender, time(NULL));

	*what_r = "write";
	if (from_len == 0) {
		errno = EINVAL;
		return -1;
	}
	if (mbox_separator(a, &sep) < 0) {
		*what_r = "read the mbox's end";
		return -1;
	}
	if (sink_write_all(a->fd, sep, strlen(sep)) < 0 ||
	    sink_write_all(a->fd, from, from_len) < 0 ||
	    mbox_copy(a, out) < 0)
		return -1;
	*what_r = "fsync";
	if (fsync(a->fd) < 0)
		return -1;
	*what_r = "fsync the mbox's directory";
	if (a->created && mbox_fsync_dir(a->m->target) < 0)
		return -1;
	return 0;
}

static int mbox_append(struct mbox_append *a, enum sink_status *status_r,
		       const char **error_r)
{
	uint8_t *out = malloc(MBOX_QUOTE_OUT_MAX(MBOX_COPY_CHUNK));
	struct stat st;
	const char *what;
	char eb[128], eb2[128];

	if (out == NULL)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "out of memory");
	if (fstat(a->fd, &st) < 0) {
		free(out);
		return sink_fail_errno(SINK_TEMPFAIL, errno, status_r, error_r,
				       a->m->target);
	}
	a->old_size = st.st_size;
	if (mbox_write_all(a, out, &what) == 0) {
		free(out);
		return 0;
	}
	int err = errno;
	free(out);
	/* Never half a message: back to the size before. */
	if (ftruncate(a->fd, a->old_size) < 0 || fsync(a->fd) < 0)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "%s: %s: %s; and could not cut it back to "
				 "%lld bytes: %s", a->m->target, what,
				 strerror_r(err, eb, sizeof(eb)),
				 (long long)a->old_size,
				 strerror_r(errno, eb2, sizeof(eb2)));
	return sink_fail(SINK_TEMPFAIL, status_r, error_r, "%s: %s: %s",
			 a->m->target, what, strerror_r(err, eb, sizeof(eb)));
}

int sink_mbox_commit(struct sink_msg *m, enum sink_status *status_r,
		     const char **error_r)
{
	struct mbox_append a = { .m = m, .fd = -1 };
	int ret;

	a.deadline_ms = sink_now_ms() + m->lock_timeout_ms;
	sink_spool_sender(m, a.sender);
	ret = mbox_open(&a, status_r, error_r);
	if (ret == 0)
		ret = mbox_lock_fcntl(&a, status_r, error_r);
	if (ret == 0 && !m->no_dotlock)
		ret = mbox_lock_dot(&a, status_r, error_r);
	if (ret == 0)
		ret = mbox_append(&a, status_r, error_r);
	mbox_unlock_close(&a);
	return ret;
}
