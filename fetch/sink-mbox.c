/*
 * sink-mbox.c — appending a spooled message to an mbox file, all or
 * nothing (see sink.h for the rules; mbox-format.h for the bytes), and
 * the pending-record steps that let a crash leave no second copy:
 * sink_mbox_prepare names the append before it happens, and
 * sink_mbox_locate tells after a crash whether it happened.
 *
 * The steps, and what each failure leaves:
 *   open    O_RDWR|O_APPEND, created 0600 if missing; must be a regular
 *           file                                  -> nothing changed
 *   lock    OFD write lock on the whole file, then "<mbox>.lock" (made
 *           by link() from a file of our own holding "<pid> <host>", so
 *           that a lock whose holder died on this host is seen stale at
 *           once); each tried until the deadline  -> nothing changed
 *   begin   old size noted; what goes before the message (a newline or
 *           two if the file does not end in an empty line, the "From "
 *           line) fixed
 *   (prepare: the bytes of the append counted and hashed, not written:
 *   the name; the locks stay held until publish or release)
 *   append  those bytes: the separator, the "From " line, the quoted
 *           message, its final newline if missing, the empty separator
 *           line, as few write()s as possible (one for a message of up to
 *           MBOX_COPY_CHUNK bytes, and the last always carries the
 *           message's end with its last bytes); fsync (and fsync the
 *           directory if the file was just created)
 *                                                 -> on error: ftruncate
 *                                                    to the old size,
 *                                                    fsync
 *   unlock  the dot-lock, then the fcntl lock (the reverse order)
 *
 * One function, mbox_produce(), makes the bytes of an append, into a
 * counter-and-hasher (prepare) or into the file (commit, publish): what a
 * name promises is what is written.  Publish hashes what it writes too
 * and refuses (cuts back) if it differs from the name.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mbox-format.h"
#include "sink-private.h"
#include "siphash.h"
#include "strnum.h"

/* The spool is read in pieces of this size; the quoted form of one
   piece fits in the output buffer (MBOX_QUOTE_OUT_MAX). */
#define MBOX_COPY_CHUNK (48 * 1024)
/* What goes before the "From " line: at most "\n\n". */
#define MBOX_SEP_MAX 2
/* The output buffer: a whole append of a message of up to
   MBOX_COPY_CHUNK bytes (separator, "From " line, the quoted piece,
   held bytes, final newline, empty line), so that it is one write(). */
#define MBOX_OUT_SIZE                                                    \
	(MBOX_SEP_MAX + MBOX_FROM_LINE_MAX +                              \
	 MBOX_QUOTE_OUT_MAX(MBOX_COPY_CHUNK) + MBOX_QUOTE_HELD_MAX + 2)
/* A dot-lock's text: "<pid> <host>\n" (a host name is at most 255). */
#define MBOX_DOTLOCK_TEXT_MAX 300
/* The mbox is read back in pieces of this size (sink_mbox_locate). */
#define MBOX_READ_CHUNK (64 * 1024)
#define MBOX_KEY_SIZE 16

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
	/* Fixed by mbox_begin: */
	const char *sep;       /* before the "From " line */
	char from[MBOX_FROM_LINE_MAX];
	size_t from_len;
	/* Fixed by sink_mbox_prepare: what publish must write. */
	uint8_t key[MBOX_KEY_SIZE];
	uint64_t len;
	uint64_t hash;
	char name[SINK_MBOX_NAME_MAX + 1];
};

/* Where the bytes of an append go (mbox_produce): counted, hashed if
   hashing, and written to fd unless it is -1. */
struct mbox_out {
	int fd;
	bool hashing;
	struct siphash sip;
	uint64_t len;
	uint8_t *buf;          /* MBOX_OUT_SIZE bytes */
	size_t used;
};

/* A pending name, parsed. */
struct mbox_name {
	uint64_t off;
	uint64_t len;
	uint8_t key[MBOX_KEY_SIZE];
	uint64_t hash;
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

/* The dot-lock's text, "<pid> <host>\n", into buf; its length, 0 if it
   does not fit.  Programs using liblockfile (and Dovecot) read a pid
   from the start of a lock; the host tells whether the pid can be
   checked here. */
static size_t mbox_dotlock_text(char *buf, size_t size)
{
	char host[256];
	int n;

	if (gethostname(host, sizeof(host)) < 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	n = snprintf(buf, size, "%d %s\n", (int)getpid(), host);
	return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

/* A file of our own next to the lock, with the lock's text, to link() to
   the lock's name.  -1 with errno. */
static int mbox_dotlock_tmp(const char *tmp)
{
	char text[MBOX_DOTLOCK_TEXT_MAX];
	size_t n = mbox_dotlock_text(text, sizeof(text));
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		      0600);

	if (fd < 0)
		return -1;
	/* Without its text the lock works all the same; only a crash of
	   ours is then recognised by the lock's age alone. */
	(void)sink_write_all(fd, text, n);
	close(fd);
	return 0;
}

/*
 * The lock's holder, as its text names it, is a process of this host
 * that no longer exists: a crash (a SIGKILL while an mbox commit was in
 * progress).  Asked only while we hold the fcntl lock, which the dead
 * process held too (the kernel released it), so no program that takes
 * fcntl locks can be at work.  Any other text (another host over NFS, a
 * program that writes no pid, one that runs) is not stale this way.
 */
static bool mbox_dotlock_holder_dead(const struct mbox_append *a)
{
	char text[MBOX_DOTLOCK_TEXT_MAX], mine[MBOX_DOTLOCK_TEXT_MAX];
	const char *sp, *my_sp;
	uint64_t pid;
	ssize_t n;
	int fd;

	if (mbox_dotlock_text(mine, sizeof(mine)) == 0)
		return false;
	fd = open(a->lock_path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return false;
	do
		n = read(fd, text, sizeof(text) - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return false;
	text[n] = '\0';
	sp = strchr(text, ' ');
	my_sp = strchr(mine, ' ');
	if (sp == NULL || my_sp == NULL || strcmp(sp, my_sp) != 0 ||
	    strnum_parse_u64(text, (size_t)(sp - text), INT_MAX, &pid) < 0 ||
	    pid == 0)
		return false;
	return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/* A lock file older than SINK_DOTLOCK_STALE_S, or whose holder died, was
   left by a crash: it is removed; true if so. */
static bool mbox_dotlock_break_stale(const struct mbox_append *a)
{
	struct stat st;

	if (lstat(a->lock_path, &st) < 0)
		return false;
	if (st.st_mtime >= time(NULL) - SINK_DOTLOCK_STALE_S &&
	    !mbox_dotlock_holder_dead(a))
		return false;
	return unlink(a->lock_path) == 0;
}

/* One attempt, through a file of our own made for it (and removed at
   once, so that a kill while waiting leaves none): 1 got it, 0 held by
   someone else, -1 error (errno). */
static int mbox_dotlock_try(const struct mbox_append *a, const char *tmp)
{
	struct stat st;
	bool got;
	int err;

	if (mbox_dotlock_tmp(tmp) < 0)
		return -1;
	got = link(tmp, a->lock_path) == 0;
	err = errno;
	/* NFS: the link may have been made though its reply was lost. */
	if (!got && stat(tmp, &st) == 0 && st.st_nlink == 2)
		got = true;
	(void)unlink(tmp);
	if (got)
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
	uint32_t rnd = 0;
	int got;

	if ((size_t)snprintf(a->lock_path, sizeof(a->lock_path), "%s.lock",
			     a->m->target) >= sizeof(a->lock_path))
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "%s: name too long", a->m->target);
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) < 0)
		rnd = (uint32_t)sink_now_ms();
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.%d.%08x", a->lock_path,
			     (int)getpid(), (unsigned int)rnd) >= sizeof(tmp))
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "%s: name too long", a->m->target);
	for (;;) {
		got = mbox_dotlock_try(a, tmp);
		if (got != 0)
			break;
		if (mbox_dotlock_break_stale(a))
			continue;
		if (!sink_wait_step(a->deadline_ms, &step))
			break;
	}
	if (got < 0) {
		enum sink_status st = sink_open_status(errno);
		char eb[128];
		return sink_fail(st, status_r, error_r,
				 "cannot create the dot-lock %s: %s%s",
				 a->lock_path, strerror_r(errno, eb, sizeof(eb)),
				 st == SINK_PERMFAIL ?
				 " (fcntl locking alone: no_dotlock)" : "");
	}
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


/* ---- the bytes of an append --------------------------------------------- */

/* Hands buf[0..used) on: counted, hashed, written.  -1 with errno. */
static int mbox_out_flush(struct mbox_out *o)
{
	if (o->used == 0)
		return 0;
	if (o->hashing)
		siphash_update(&o->sip, o->buf, o->used);
	o->len += o->used;
	if (o->fd >= 0 && sink_write_all(o->fd, o->buf, o->used) < 0)
		return -1;
	o->used = 0;
	return 0;
}

/* Room for need (<= MBOX_OUT_SIZE) more bytes, flushing first if there
   is not; NULL with errno. */
static uint8_t *mbox_out_room(struct mbox_out *o, size_t need)
{
	if (MBOX_OUT_SIZE - o->used < need && mbox_out_flush(o) < 0)
		return NULL;
	return o->buf + o->used;
}

static int mbox_out_put(struct mbox_out *o, const void *p, size_t n)
{
	uint8_t *dst = mbox_out_room(o, n);

	if (dst == NULL)
		return -1;
	memcpy(dst, p, n);
	o->used += n;
	return 0;
}

/*
 * Every byte of the append, in order, into o: the separator, the "From "
 * line, the quoted spool, the message's final newline if it has none,
 * the empty line.  The one place that knows them (prepare's count, the
 * writes of commit and publish).  0, or -1 with errno.
 */
static int mbox_produce(const struct mbox_append *a, struct mbox_out *o)
{
	struct sink_msg *m = a->m;
	struct mbox_quote q;
	uint64_t off = 0;
	uint8_t *dst;
	size_t n;

	if (mbox_out_put(o, a->sep, strlen(a->sep)) < 0 ||
	    mbox_out_put(o, a->from, a->from_len) < 0)
		return -1;
	mbox_quote_init(&q);
	for (;;) {
		ssize_t got = pread(m->spool_fd, m->buf, MBOX_COPY_CHUNK,
				    (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -1;
		if (got == 0)
			break;
		off += (uint64_t)got;
		dst = mbox_out_room(o, MBOX_QUOTE_OUT_MAX(got));
		if (dst == NULL)
			return -1;
		o->used += mbox_quote(&q, m->buf, (size_t)got, dst);
	}
	if (off != m->spool_size) {
		errno = EIO; /* the spool is ours alone: never happens */
		return -1;
	}
	dst = mbox_out_room(o, MBOX_QUOTE_HELD_MAX + 2);
	if (dst == NULL)
		return -1;
	n = mbox_quote_finish(&q, dst);
	if (mbox_quote_last(&q) != '\n')
		dst[n++] = '\n';
	dst[n++] = '\n';
	o->used += n;
	return mbox_out_flush(o);
}

/* mbox_produce() into fd (-1: nothing written), hashed under key if key
   is not NULL; the count and hash into *len_r and *hash_r. */
static int mbox_produce_to(const struct mbox_append *a, int fd,
			   const uint8_t *key, uint64_t *len_r,
			   uint64_t *hash_r)
{
	struct mbox_out o = { .fd = fd, .hashing = key != NULL };
	int ret;

	if ((o.buf = malloc(MBOX_OUT_SIZE)) == NULL)
		return -1;
	if (key != NULL)
		siphash_init(&o.sip, key);
	ret = mbox_produce(a, &o);
	free(o.buf);
	*len_r = o.len;
	*hash_r = key != NULL ? siphash_final(&o.sip) : 0;
	return ret;
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

/* Locked: the old size, the separator and the "From " line, fixed now
   for the append (and its name). */
static int mbox_begin(struct mbox_append *a, enum sink_status *status_r,
		      const char **error_r)
{
	struct stat st;

	if (fstat(a->fd, &st) < 0)
		return sink_fail_errno(SINK_TEMPFAIL, errno, status_r, error_r,
				       a->m->target);
	a->old_size = st.st_size;
	if (mbox_separator(a, &a->sep) < 0)
		return sink_fail_errno(SINK_TEMPFAIL, errno, status_r, error_r,
				       "read the mbox's end");
	a->from_len = mbox_from_line(a->from, a->sender, time(NULL));
	if (a->from_len == 0)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "%s: cannot make the From line", a->m->target);
	return 0;
}

/* Everything written and durable, or -1 with errno and *what_r.  With
   check, the bytes written must be the prepared ones. */
static int mbox_write_durable(struct mbox_append *a, bool check,
			      const char **what_r)
{
	uint64_t len, hash;

	*what_r = "write";
	if (mbox_produce_to(a, a->fd, check ? a->key : NULL, &len,
			    &hash) < 0)
		return -1;
	if (check && (len != a->len || hash != a->hash)) {
		*what_r = "the bytes written are not the prepared ones";
		errno = EIO;
		return -1;
	}
	*what_r = "fsync";
	if (fsync(a->fd) < 0)
		return -1;
	*what_r = "fsync the mbox's directory";
	if (a->created && mbox_fsync_dir(a->m->target) < 0)
		return -1;
	return 0;
}

/* The append, or nothing of it: cut back to the old size on error. */
static int mbox_append(struct mbox_append *a, bool check,
		       enum sink_status *status_r, const char **error_r)
{
	const char *what;
	char eb[128], eb2[128];

	if (mbox_write_durable(a, check, &what) == 0)
		return 0;
	int err = errno;
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

/* Opens the mbox and takes both locks (a->m, a->fd = -1 set). */
static int mbox_open_locked(struct mbox_append *a, enum sink_status *status_r,
			    const char **error_r)
{
	a->deadline_ms = sink_now_ms() + a->m->lock_timeout_ms;
	sink_spool_sender(a->m, a->sender);
	if (mbox_open(a, status_r, error_r) < 0 ||
	    mbox_lock_fcntl(a, status_r, error_r) < 0)
		return -1;
	if (!a->m->no_dotlock && mbox_lock_dot(a, status_r, error_r) < 0)
		return -1;
	return 0;
}

int sink_mbox_commit(struct sink_msg *m, enum sink_status *status_r,
		     const char **error_r)
{
	struct mbox_append a = { .m = m, .fd = -1 };
	int ret;

	ret = mbox_open_locked(&a, status_r, error_r);
	if (ret == 0)
		ret = mbox_begin(&a, status_r, error_r);
	if (ret == 0)
		ret = mbox_append(&a, false, status_r, error_r);
	mbox_unlock_close(&a);
	return ret;
}

/* ---- prepare, publish --------------------------------------------------- */

/* A fresh key for the hash of one append. */
static void mbox_random_key(uint8_t key[MBOX_KEY_SIZE])
{
	struct timespec ts;
	uint64_t x;

	if (getrandom(key, MBOX_KEY_SIZE, GRND_NONBLOCK) == MBOX_KEY_SIZE)
		return;
	/* No entropy yet (early boot): still different for every append,
	   only not secret. */
	clock_gettime(CLOCK_REALTIME, &ts);
	x = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	memcpy(key, &x, 8);
	x = (uint64_t)sink_now_ms() << 20 ^ (uint64_t)getpid();
	memcpy(key + 8, &x, 8);
}

static void mbox_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* The name of an append: "mbox.<off>.<len>.<key>.<hash>". */
static void mbox_format_name(const struct mbox_name *nm,
			     char out[SINK_MBOX_NAME_MAX + 1])
{
	char key[2 * MBOX_KEY_SIZE + 1];

	mbox_hex(nm->key, MBOX_KEY_SIZE, key);
	snprintf(out, SINK_MBOX_NAME_MAX + 1,
		 "mbox.%" PRIu64 ".%" PRIu64 ".%s.%016" PRIx64, nm->off,
		 nm->len, key, nm->hash);
}

int sink_mbox_prepare(struct sink_msg *m, const char **name_r,
		      enum sink_status *status_r, const char **error_r)
{
	struct mbox_append *a = calloc(1, sizeof(*a));
	struct mbox_name nm;

	if (a == NULL)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "out of memory");
	a->m = m;
	a->fd = -1;
	m->mbox = a;
	if (mbox_open_locked(a, status_r, error_r) < 0 ||
	    mbox_begin(a, status_r, error_r) < 0)
		goto fail;
	mbox_random_key(a->key);
	if (mbox_produce_to(a, -1, a->key, &a->len, &a->hash) < 0) {
		sink_fail_errno(SINK_TEMPFAIL, errno, status_r, error_r,
				"spool file");
		goto fail;
	}
	nm.off = (uint64_t)a->old_size;
	nm.len = a->len;
	memcpy(nm.key, a->key, MBOX_KEY_SIZE);
	nm.hash = a->hash;
	mbox_format_name(&nm, a->name);
	*name_r = a->name;
	return 0;
fail:
	sink_mbox_release(m);
	return -1;
}

int sink_mbox_publish(struct sink_msg *m, enum sink_status *status_r,
		      const char **error_r)
{
	struct mbox_append *a = m->mbox;
	struct stat st;
	int ret = 0;

	if (a == NULL)
		return sink_fail(SINK_PERMFAIL, status_r, error_r,
				 "mbox publish before prepare");
	/* Both locks were held since prepare: only a program that ignores
	   them could have written.  Then the name would be wrong: append
	   nothing. */
	if (fstat(a->fd, &st) < 0)
		ret = sink_fail_errno(SINK_TEMPFAIL, errno, status_r, error_r,
				      m->target);
	else if (st.st_size != a->old_size)
		ret = sink_fail(SINK_TEMPFAIL, status_r, error_r,
				"%s: changed by another program in spite of "
				"the locks", m->target);
	else
		ret = mbox_append(a, true, status_r, error_r);
	sink_mbox_release(m);
	return ret;
}

void sink_mbox_release(struct sink_msg *m)
{
	if (m->mbox == NULL)
		return;
	mbox_unlock_close(m->mbox);
	free(m->mbox);
	m->mbox = NULL;
}

/* ---- after a crash: was the append made? --------------------------------- */

static int mbox_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* s[0..2n) as n bytes; false unless all lowercase hex digits. */
static bool mbox_unhex(const char *s, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int hi = mbox_hex_digit(s[2 * i]), lo = mbox_hex_digit(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

/* The next field of a name, up to '.' or end: *field_r and its length;
   *p moves past it and its dot. */
static size_t mbox_name_field(const char **p, const char *end,
			      const char **field_r)
{
	const char *dot = memchr(*p, '.', (size_t)(end - *p));
	size_t n = (size_t)((dot != NULL ? dot : end) - *p);

	*field_r = *p;
	*p += n + (dot != NULL);
	return n;
}

static bool mbox_name_number(const char **p, const char *end, uint64_t *v)
{
	const char *f;
	size_t n = mbox_name_field(p, end, &f);

	return strnum_parse_u64(f, n, INT64_MAX, v) == 0;
}

static bool mbox_name_hex(const char **p, const char *end, uint8_t *out,
			  size_t size)
{
	const char *f;
	size_t n = mbox_name_field(p, end, &f);

	return n == 2 * size && mbox_unhex(f, out, size);
}

/* A name sink_mbox_prepare could have made, parsed; false for anything
   else (a Maildir's name, damage): only the canonical form counts. */
static bool mbox_name_parse(const char *name, struct mbox_name *nm)
{
	char again[SINK_MBOX_NAME_MAX + 1];
	uint8_t hash[8];
	size_t len = strnlen(name, SINK_MBOX_NAME_MAX + 1);
	const char *p = name + 5, *end = name + len;

	if (len > SINK_MBOX_NAME_MAX || strncmp(name, "mbox.", 5) != 0)
		return false;
	if (!mbox_name_number(&p, end, &nm->off) ||
	    !mbox_name_number(&p, end, &nm->len) ||
	    !mbox_name_hex(&p, end, nm->key, MBOX_KEY_SIZE) ||
	    !mbox_name_hex(&p, end, hash, sizeof(hash)) || p != end ||
	    nm->len == 0) /* an append has a "From " line at least */
		return false;
	nm->hash = 0;
	for (size_t i = 0; i < sizeof(hash); i++)
		nm->hash = nm->hash << 8 | hash[i];
	/* No leading zeros, no trailing dot: one name per append. */
	mbox_format_name(nm, again);
	return strcmp(again, name) == 0;
}

/* Does the mbox (fd, size bytes) hold the append nm names?  0 with
   *stored_r, or -1 with errno. */
static int mbox_holds(int fd, off_t size, const struct mbox_name *nm,
		      uint8_t *buf, bool *stored_r)
{
	struct siphash sip;
	uint64_t off = nm->off, left = nm->len;

	*stored_r = false;
	if (off > (uint64_t)size || left > (uint64_t)size - off)
		return 0;
	siphash_init(&sip, nm->key);
	while (left > 0) {
		size_t want = left < MBOX_READ_CHUNK ? (size_t)left :
			      MBOX_READ_CHUNK;
		ssize_t got = pread(fd, buf, want, (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -1;
		if (got == 0)
			return 0; /* cut shorter meanwhile: not there */
		siphash_update(&sip, buf, (size_t)got);
		off += (uint64_t)got;
		left -= (uint64_t)got;
	}
	*stored_r = siphash_final(&sip) == nm->hash;
	return 0;
}

/*
 * No lock is taken: the bytes looked at were written (if at all) by an
 * append that has ended, and nothing but a mail reader rewriting the
 * file changes them.  A rewrite seen half done can only make the bytes
 * differ (the message looks not stored: fetched again, a second copy);
 * they can only match if the message is there, since the key is secret
 * and random for each append: a false "stored", which would be a loss
 * under delete, needs a 64-bit hash to match by chance.
 */
/* The mbox opened for reading: 1 with *fd_r and *size_r, 0 if there is
   none, -1 with *status_r and *error_r. */
static int mbox_open_read(const char *path, int *fd_r, off_t *size_r,
			  enum sink_status *status_r, const char **error_r)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0) {
		sink_fail_errno(sink_open_status(errno), errno, status_r,
				error_r, path);
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		int err = errno;
		close(fd);
		sink_fail_errno(SINK_TEMPFAIL, err, status_r, error_r, path);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		sink_fail(SINK_PERMFAIL, status_r, error_r,
			  "%s: not a regular file", path);
		return -1;
	}
	*fd_r = fd;
	*size_r = st.st_size;
	return 1;
}

int sink_mbox_locate(const char *path, const char *const *names, size_t n,
		     bool *stored_r, enum sink_status *status_r,
		     const char **error_r)
{
	struct mbox_name nm;
	uint8_t *buf;
	off_t size;
	int fd, ret;

	for (size_t i = 0; i < n; i++)
		stored_r[i] = false;
	ret = mbox_open_read(path, &fd, &size, status_r, error_r);
	if (ret <= 0)
		return ret; /* no mbox: nothing of it stored */
	buf = malloc(MBOX_READ_CHUNK);
	if (buf == NULL) {
		close(fd);
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "out of memory");
	}
	ret = 0;
	for (size_t i = 0; i < n && ret == 0; i++) {
		if (!mbox_name_parse(names[i], &nm))
			continue;
		if (mbox_holds(fd, size, &nm, buf, &stored_r[i]) < 0)
			ret = sink_fail_errno(SINK_TEMPFAIL, errno, status_r,
					      error_r, path);
	}
	free(buf);
	close(fd);
	return ret;
}
