/*
 * deliver.c — one incoming message into a user's Maildir (see deliver.h).
 *
 * The steps, and what a crash (SIGKILL, power loss) after each leaves:
 *   begin   mkdir the Maildir and tmp/ new/ cur/ if missing; quota scan;
 *           create tmp/<base> exclusively; write the header lines
 *                                                 -> nothing, or tmp/<base>
 *   write   convert CRLF to LF, count disk and wire bytes, write() in
 *           64 KiB pieces                          -> a partial tmp/<base>
 *   commit  fsync the file, close, rename it into new/<base>,S=<n>,W=<m>
 *           (renameat2 RENAME_NOREPLACE: never over another message),
 *           fsync new/                             -> tmp/<base> whole, or
 *                                                     new/<name> whole
 * Readers ignore tmp/, so new/ only ever holds whole, fsynced messages.
 * A tmp/ file left by a crash is removed by a later delivery once it is
 * 36 hours old (the Maildir convention), or by the admin.
 *
 * commit is two steps, prepare (everything up to the rename) and publish
 * (the rename, and the fsync of new/ unless the caller syncs a group of
 * renames at once with deliver_dir_sync).  The directories live in a
 * struct deliver_dir: deliver_begin makes one per message inside its
 * struct deliver and closes it with it; popbox-fetch opens one for a whole
 * session (deliver_dir_open) and its deliveries borrow it, so that a
 * message costs only openat, write, fsync, fstat, close and renameat2:
 * host name, pid and the random seed of the names are taken once per
 * deliver_dir, and tmp/ is cleaned once per deliver_dir.
 *
 * Names: "<sec>.M<usec>P<pid>R<32 random bits in hex>.<host>" (the
 * Maildir convention of time, process, randomness and host; the random
 * bits are a bijective mix of a per-deliver_dir getrandom seed plus a
 * counter, so the names one deliver_dir makes never repeat), then
 * ",S=<bytes on disk>,W=<bytes on the POP3 wire>".  With both in the
 * name, popboxd lists a new message without opening it (maildrop.c takes
 * ,W= when it agrees with ,S=); the sizes come from lib/mail-lines, which
 * counts the wire size with lib/wire.c's own rule.
 *
 * The maildrop cache (popbox.cache) is not touched.  Appending the new
 * message to it would need the maildrop lock (its temp file name is
 * fixed), which a POP3 session holds for as long as it is logged in, and
 * delivery must never wait for a session.  It would also buy nothing: our
 * rename changes new/'s mtime, and maildrop.c trusts a cache without
 * readdir only when the directories' mtimes are at least 2 s older than
 * the scan that wrote it, so the next login rescans anyway.  That rescan
 * is readdir of new/ and cur/ only: sizes come from the cache for known
 * messages and from ,W= for ours; no message is opened.
 *
 * Quota: the usage of new/ + cur/ (",S=" from names, fstatat otherwise)
 * is counted once, at begin; writing stops as soon as the message would
 * not fit.  Deliveries running at the same time each see the usage from
 * before the others, so together they may go over by what is in flight
 * (as Maildir++ quota does).
 */
#include "deliver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mail-lines.h"
#include "maildir-dir.h"
#include "maildir-name.h"

/* Write buffer: a few large writes instead of one per line. */
#define DELIVER_BUF_SIZE (64 * 1024)
/* An envelope address longer than this is refused: RFC 5321 4.5.3.1.3
   allows 256 octets for a path; the header line stays well under the
   998-octet line limit of RFC 5322 2.1.1. */
#define DELIVER_ADDR_MAX 512
/* Characters of the host name kept in a file name: enough to tell hosts
   apart, and short, so that names often stay within the 70 characters of
   a direct UIDL (maildir-name.h). */
#define DELIVER_HOST_MAX 24
/* New names tried when one is taken (never happens in practice). */
#define DELIVER_NAME_TRIES 8
/* tmp/ files older than this are left over from a crash (Maildir rule). */
#define DELIVER_TMP_STALE_S (36 * 3600)
/* tmp/ entries looked at per delivery: bounds the cost of a full tmp/. */
#define DELIVER_TMP_SCAN_MAX 1000
#define DELIVER_ERROR_MAX 256

/* What every message into one Maildir shares. */
struct deliver_dir {
	int dir_fd;                   /* the Maildir (a delivery's own: during
					 deliver_begin only) */
	int tmp_fd, new_fd;
	int pid;                      /* name parts, taken once */
	char host[DELIVER_HOST_MAX + 1];
	uint32_t seed, counter;       /* the R part of names */
};

struct deliver {
	struct deliver_dir *dir;      /* &own, or borrowed (deliver_begin_in:
					 never closed here) */
	struct deliver_dir own;       /* deliver_begin's; all -1 otherwise */
	int fd;                       /* the file, until prepared */
	bool prepared;                /* durable in tmp/, fd closed */
	char base[DELIVER_NAME_MAX];  /* the name in tmp/ */
	struct mail_lines lines;
	uint64_t received;            /* message bytes fed (size limit) */
	uint64_t size_limit;
	uint64_t quota_storage, quota_messages;
	uint64_t used_bytes, used_count;
	bool failed;                  /* a write failed: only abort is left */
	enum deliver_status fail_status;
	char fail_error[DELIVER_ERROR_MAX];
};

/*
 * The bytes of one call (deliver_begin's headers, one deliver_write, the
 * end in deliver_commit) on their way to d's file.  The buffer is the
 * thread's and is empty again when the call returns, so an open delivery
 * holds no buffer of its own: the LMTP listener keeps one per recipient
 * open for as long as the MTA takes to send the message.
 */
struct deliver_out {
	struct deliver *d;
	size_t len;
	uint8_t *buf;                 /* DELIVER_BUF_SIZE bytes */
};

static _Thread_local uint8_t deliver_wbuf[DELIVER_BUF_SIZE];
static _Thread_local char deliver_errbuf[DELIVER_ERROR_MAX];
static atomic_uint deliver_counter;

/* ---- errors ------------------------------------------------------------ */

static const char *deliver_errno_text(const char *what, int err)
{
	char eb[128];

	snprintf(deliver_errbuf, sizeof(deliver_errbuf), "%s: %s", what,
		 strerror_r(err, eb, sizeof(eb)));
	return deliver_errbuf;
}

/* Errors opening the Maildir that retrying will not fix. */
static enum deliver_status deliver_open_status(int err)
{
	switch (err) {
	case EACCES:
	case EPERM:
	case ENOTDIR:
	case ELOOP:
	case EROFS:
	case ENAMETOOLONG:
		return DELIVER_PERMFAIL;
	default:
		return DELIVER_TEMPFAIL;
	}
}

static int deliver_fail(enum deliver_status status, const char *error,
			enum deliver_status *status_r, const char **error_r)
{
	*status_r = status;
	*error_r = error;
	return -1;
}

static int deliver_fail_errno(int err, const char *what, bool opening,
			      enum deliver_status *status_r,
			      const char **error_r)
{
	return deliver_fail(opening ? deliver_open_status(err) :
				      DELIVER_TEMPFAIL,
			    deliver_errno_text(what, err), status_r, error_r);
}

/* ---- the Maildir ------------------------------------------------------- */

/* mkdir -p path (mode 0700 for what it creates). */
static int deliver_mkdirs(const char *path)
{
	char buf[4096];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -1;
		buf[i] = c;
	}
	return 0;
}

static int deliver_open_maildir(const char *path)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
	int fd = open(path, flags);

	if (fd >= 0 || errno != ENOENT)
		return fd;
	if (deliver_mkdirs(path) < 0)
		return -1;
	return open(path, flags);
}

/* Opens (creating it if missing) subdirectory name of the Maildir. */
static int deliver_open_subdir(int dir_fd, const char *name)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	int fd = openat(dir_fd, name, flags);

	if (fd >= 0 || errno != ENOENT)
		return fd;
	if (mkdirat(dir_fd, name, 0700) < 0 && errno != EEXIST)
		return -1;
	return openat(dir_fd, name, flags);
}

static int deliver_open_dirs(struct deliver_dir *dir, const char *path,
			     enum deliver_status *status_r,
			     const char **error_r)
{
	int cur_fd;

	dir->dir_fd = deliver_open_maildir(path);
	if (dir->dir_fd < 0)
		return deliver_fail_errno(errno, "open Maildir", true,
					  status_r, error_r);
	dir->tmp_fd = deliver_open_subdir(dir->dir_fd, "tmp");
	if (dir->tmp_fd < 0)
		return deliver_fail_errno(errno, "tmp/", true, status_r,
					  error_r);
	dir->new_fd = deliver_open_subdir(dir->dir_fd, "new");
	if (dir->new_fd < 0)
		return deliver_fail_errno(errno, "new/", true, status_r,
					  error_r);
	/* Readers expect cur/ too. */
	cur_fd = deliver_open_subdir(dir->dir_fd, "cur");
	if (cur_fd < 0)
		return deliver_fail_errno(errno, "cur/", true, status_r,
					  error_r);
	close(cur_fd);
	return 0;
}

/* cur/, for reading (-1 with errno). */
static int deliver_open_cur(const struct deliver_dir *dir)
{
	return openat(dir->dir_fd, "cur",
		      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* ---- quota ------------------------------------------------------------- */

/* Adds a message (as the maildrop lists them) to the usage: its size
   from the listing, else from ",S=", else from fstatat. */
static void deliver_usage_add(int dir_fd, const struct dirent *de,
			      int64_t size, uint64_t *bytes, uint64_t *count)
{
	struct maildir_name mn;
	struct stat st;

	maildir_name_parse(de->d_name, strlen(de->d_name), &mn);
	if (size < 0 && mn.has_size)
		size = (int64_t)mn.size; /* at most MAILDIR_NAME_SIZE_MAX */
	if (size < 0) {
		if (fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			return; /* gone since readdir, or not a message */
		size = st.st_size;
	}
	*bytes += (uint64_t)size;
	(*count)++;
}

/* Calls each(dir_fd, entry, size, ctx) for every message of directory
   dir_fd (maildir_dir_is_msg: size from d_type/statx or -1).  -1 with
   errno if it cannot be read. */
static int deliver_each_msg(int dir_fd,
			    void (*each)(int dir_fd, const struct dirent *de,
					 int64_t size, void *ctx),
			    void *ctx)
{
	DIR *dir = maildir_dir_open(dir_fd);
	struct dirent *de;
	int64_t size;

	if (dir == NULL)
		return -1;
	for (;;) {
		errno = 0;
		if ((de = readdir(dir)) == NULL)
			break;
		if (maildir_dir_is_msg(dir_fd, de, &size))
			each(dir_fd, de, size, ctx);
	}
	int err = errno;
	closedir(dir);
	errno = err;
	return err == 0 ? 0 : -1;
}

struct deliver_usage_ctx {
	uint64_t *bytes, *count;
};

static void deliver_usage_each(int dir_fd, const struct dirent *de,
			       int64_t size, void *ctx)
{
	const struct deliver_usage_ctx *u = ctx;

	deliver_usage_add(dir_fd, de, size, u->bytes, u->count);
}


static int deliver_usage(struct deliver *d, enum deliver_status *status_r,
			 const char **error_r)
{
	int cur_fd = deliver_open_cur(d->dir);

	d->used_bytes = d->used_count = 0;
	if (cur_fd < 0)
		return deliver_fail_errno(errno, "cur/", true, status_r,
					  error_r);
	/* What new/ and cur/ hold. */
	struct deliver_usage_ctx u = { .bytes = &d->used_bytes,
				       .count = &d->used_count };
	int ret = deliver_each_msg(d->dir->new_fd, deliver_usage_each, &u);
	if (ret == 0)
		ret = deliver_each_msg(cur_fd, deliver_usage_each, &u);
	int err = errno;
	close(cur_fd);
	if (ret < 0)
		return deliver_fail_errno(err, "quota scan", false, status_r,
					  error_r);
	return 0;
}

/* Would a message of size bytes (on disk) fit? */
static int deliver_quota_check(const struct deliver *d, uint64_t size,
			       enum deliver_status *status_r,
			       const char **error_r)
{
	if (d->quota_storage > 0 && size > d->quota_storage)
		return deliver_fail(DELIVER_TOO_BIG,
				    "message is larger than the quota",
				    status_r, error_r);
	if (d->quota_storage > 0 && d->used_bytes + size > d->quota_storage)
		return deliver_fail(DELIVER_OVER_QUOTA,
				    "mailbox is over its storage quota",
				    status_r, error_r);
	if (d->quota_messages > 0 && d->used_count + 1 > d->quota_messages)
		return deliver_fail(DELIVER_OVER_QUOTA,
				    "mailbox is over its message quota",
				    status_r, error_r);
	return 0;
}

/* ---- tmp/ -------------------------------------------------------------- */

/* Removes tmp/ files a crash left behind (older than 36 hours). */
static void deliver_clean_tmp(int tmp_fd)
{
	DIR *dir = maildir_dir_open(tmp_fd);
	struct dirent *de;
	struct stat st;
	time_t now = time(NULL);
	int64_t size;

	if (dir == NULL)
		return;
	for (int n = 0; n < DELIVER_TMP_SCAN_MAX; n++) {
		if ((de = readdir(dir)) == NULL)
			break;
		if (!maildir_dir_is_msg(tmp_fd, de, &size))
			continue;
		if (fstatat(tmp_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) &&
		    st.st_mtime < now - DELIVER_TMP_STALE_S)
			(void)unlinkat(tmp_fd, de->d_name, 0);
	}
	closedir(dir);
}

/* The host name as it goes into a file name: [A-Za-z0-9.-] only (no '/',
   ':' or ',', which mean something in a Maildir name), short. */
static void deliver_host(char out[DELIVER_HOST_MAX + 1])
{
	char host[256];
	size_t n = 0;

	if (gethostname(host, sizeof(host)) < 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	for (const char *p = host; *p != '\0' && n < DELIVER_HOST_MAX; p++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '.';
		if (!ok)
			c = '_';
		out[n++] = c;
	}
	if (n == 0)
		out[n++] = 'x';
	out[n] = '\0';
}

/* 32 random bits, once per deliver_dir (a clock and counter mix if the
   kernel has no randomness to give yet). */
static uint32_t deliver_seed(void)
{
	struct timespec ts;
	uint32_t rnd;

	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) == (ssize_t)sizeof(rnd))
		return rnd;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint32_t)ts.tv_nsec ^
	       (atomic_fetch_add(&deliver_counter, 1) << 20);
}

/* A bijection of the 32-bit values (MurmurHash3's finaliser): distinct
   counters give distinct, random-looking R parts. */
static uint32_t deliver_mix32(uint32_t h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* The parts of every name made in dir: host, pid, seed. */
static void deliver_dir_name_parts(struct deliver_dir *dir)
{
	deliver_host(dir->host);
	dir->pid = (int)getpid();
	dir->seed = deliver_seed();
	dir->counter = 0;
}

/* A new unique base name into out (no system call: the clock is the
   vDSO's). */
static void deliver_make_base(struct deliver_dir *dir,
			      char out[DELIVER_NAME_MAX])
{
	struct timespec ts;
	/* Unsigned: wraps around after 2^32 names, which is fine. */
	uint32_t rnd = deliver_mix32(dir->seed + dir->counter++);

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(out, DELIVER_NAME_MAX, "%lld.M%06ldP%dR%08x.%s",
		 (long long)ts.tv_sec, ts.tv_nsec / 1000, dir->pid,
		 (unsigned int)rnd, dir->host);
}

static int deliver_create_tmp(struct deliver *d, enum deliver_status *status_r,
			      const char **error_r)
{
	const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
			  O_NOCTTY | O_CLOEXEC;

	for (int tries = 0; tries < DELIVER_NAME_TRIES; tries++) {
		deliver_make_base(d->dir, d->base);
		d->fd = openat(d->dir->tmp_fd, d->base, flags, 0600);
		if (d->fd >= 0)
			return 0;
		int err = errno;
		d->base[0] = '\0'; /* not ours: never to be removed */
		if (err != EEXIST)
			return deliver_fail_errno(err, "create in tmp/", true,
						  status_r, error_r);
	}
	return deliver_fail(DELIVER_TEMPFAIL, "no unique name in tmp/",
			    status_r, error_r);
}

/* ---- writing ----------------------------------------------------------- */

static void deliver_out_start(struct deliver_out *o, struct deliver *d)
{
	o->d = d;
	o->len = 0;
	o->buf = deliver_wbuf;
}

/* Writes the buffer out. */
static int deliver_flush(struct deliver_out *o, enum deliver_status *status_r,
			 const char **error_r)
{
	size_t off = 0;

	while (off < o->len) {
		ssize_t n = write(o->d->fd, o->buf + off, o->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return deliver_fail_errno(errno, "write", false,
						  status_r, error_r);
		if (n == 0)
			return deliver_fail(DELIVER_TEMPFAIL,
					    "write: no progress", status_r,
					    error_r);
		off += (size_t)n;
	}
	o->len = 0;
	return 0;
}

/* Converts in[0..len) into the buffer, flushing as it fills. */
static int deliver_put(struct deliver_out *o, const uint8_t *in, size_t len,
		       enum deliver_status *status_r, const char **error_r)
{
	while (len > 0) {
		size_t room = DELIVER_BUF_SIZE - o->len;

		if (room < 2) {
			if (deliver_flush(o, status_r, error_r) < 0)
				return -1;
			continue;
		}
		/* MAIL_LINES_OUT_MAX(n) = n + 1 <= room. */
		size_t n = len < room - 1 ? len : room - 1;
		o->len += mail_lines_convert(&o->d->lines, in, n,
					     o->buf + o->len);
		in += n;
		len -= n;
	}
	return 0;
}

/* An address fit for a header line: no control bytes, not too long. */
static bool deliver_addr_ok(const char *addr)
{
	size_t len = strnlen(addr, DELIVER_ADDR_MAX + 1);

	if (len > DELIVER_ADDR_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)addr[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* "<a>" -> "a": the envelope's brackets, if the caller left them on. */
static void deliver_unbracket(const char *addr, const char **p_r,
			      size_t *len_r)
{
	size_t len = strlen(addr);

	if (len >= 2 && addr[0] == '<' && addr[len - 1] == '>') {
		addr++;
		len -= 2;
	}
	*p_r = addr;
	*len_r = len;
}

/* Return-Path and Delivered-To, through the same conversion and counts as
   the message. */
static int deliver_headers(struct deliver *d, const struct deliver_envelope *env,
			   enum deliver_status *status_r, const char **error_r)
{
	char line[DELIVER_ADDR_MAX + 32];
	struct deliver_out o;
	const char *p;
	size_t len;
	int n;

	if (env == NULL)
		return 0;
	deliver_out_start(&o, d);
	if (env->return_path != NULL) {
		deliver_unbracket(env->return_path, &p, &len);
		n = snprintf(line, sizeof(line), "Return-Path: <%.*s>\n",
			     (int)len, p);
		if (deliver_put(&o, (const uint8_t *)line, (size_t)n, status_r,
				error_r) < 0)
			return -1;
	}
	if (env->delivered_to != NULL && env->delivered_to[0] != '\0') {
		deliver_unbracket(env->delivered_to, &p, &len);
		n = snprintf(line, sizeof(line), "Delivered-To: %.*s\n",
			     (int)len, p);
		if (deliver_put(&o, (const uint8_t *)line, (size_t)n, status_r,
				error_r) < 0)
			return -1;
	}
	return deliver_flush(&o, status_r, error_r);
}

/* ---- the directories ------------------------------------------------- */

static void deliver_dir_reset(struct deliver_dir *dir)
{
	memset(dir, 0, sizeof(*dir));
	dir->dir_fd = dir->tmp_fd = dir->new_fd = -1;
}

/* Closes what is open; a reset dir is fine. */
static void deliver_dir_release(struct deliver_dir *dir)
{
	if (dir->tmp_fd >= 0)
		close(dir->tmp_fd);
	if (dir->new_fd >= 0)
		close(dir->new_fd);
	if (dir->dir_fd >= 0)
		close(dir->dir_fd);
	deliver_dir_reset(dir);
}

/* Opens (making what is missing) the Maildir at path into a reset dir. */
static int deliver_dir_setup(struct deliver_dir *dir, const char *path,
			     enum deliver_status *status_r,
			     const char **error_r)
{
	if (deliver_open_dirs(dir, path, status_r, error_r) < 0)
		return -1;
	deliver_dir_name_parts(dir);
	return 0;
}

int deliver_dir_open(const char *path, struct deliver_dir **dir_r,
		     enum deliver_status *status_r, const char **error_r)
{
	struct deliver_dir *dir = malloc(sizeof(*dir));

	*dir_r = NULL;
	if (dir == NULL)
		return deliver_fail(DELIVER_TEMPFAIL, "out of memory",
				    status_r, error_r);
	deliver_dir_reset(dir);
	if (deliver_dir_setup(dir, path, status_r, error_r) < 0) {
		deliver_dir_release(dir);
		free(dir);
		return -1;
	}
	deliver_clean_tmp(dir->tmp_fd);
	*dir_r = dir;
	return 0;
}

void deliver_dir_close(struct deliver_dir **dirp)
{
	struct deliver_dir *dir = *dirp;

	if (dir == NULL)
		return;
	*dirp = NULL;
	deliver_dir_release(dir);
	free(dir);
}

int deliver_dir_sync(struct deliver_dir *dir, enum deliver_status *status_r,
		     const char **error_r)
{
	if (fsync(dir->new_fd) < 0)
		return deliver_fail_errno(errno, "fsync new/", false, status_r,
					  error_r);
	return 0;
}

/* ---- the interface ----------------------------------------------------- */

static struct deliver *deliver_new(const struct user_policy *policy,
				   uint64_t size_limit)
{
	struct deliver *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return NULL;
	deliver_dir_reset(&d->own);
	d->dir = &d->own;
	d->fd = -1;
	d->size_limit = size_limit;
	d->quota_storage = policy != NULL && policy->quota_storage > 0 ?
			   (uint64_t)policy->quota_storage : 0;
	d->quota_messages = policy != NULL && policy->quota_messages > 0 ?
			    (uint64_t)policy->quota_messages : 0;
	mail_lines_init(&d->lines);
	return d;
}

/* Closes the file and the delivery's own directories (never borrowed
   ones), removes the tmp/ file if asked and there is one, frees. */
static void deliver_free(struct deliver *d, bool remove_tmp)
{
	if (d->fd >= 0)
		close(d->fd);
	if (remove_tmp && d->dir->tmp_fd >= 0 && d->base[0] != '\0')
		(void)unlinkat(d->dir->tmp_fd, d->base, 0);
	deliver_dir_release(&d->own);
	free(d);
}

bool deliver_envelope_valid(const struct deliver_envelope *env)
{
	return env == NULL ||
	       ((env->return_path == NULL || deliver_addr_ok(env->return_path)) &&
		(env->delivered_to == NULL || deliver_addr_ok(env->delivered_to)));
}

static int deliver_check_envelope(const struct deliver_envelope *env,
				  enum deliver_status *status_r,
				  const char **error_r)
{
	if (!deliver_envelope_valid(env))
		return deliver_fail(DELIVER_PERMFAIL,
				    "envelope address too long or with "
				    "control characters", status_r, error_r);
	return 0;
}

/* The file in tmp/ and its added headers: what both begins share. */
static int deliver_start_file(struct deliver *d,
			      const struct deliver_envelope *env,
			      enum deliver_status *status_r,
			      const char **error_r)
{
	if (deliver_create_tmp(d, status_r, error_r) < 0)
		return -1;
	return deliver_headers(d, env, status_r, error_r);
}

static int deliver_start(struct deliver *d, const char *path,
			 const struct deliver_envelope *env,
			 uint64_t size_hint, enum deliver_status *status_r,
			 const char **error_r)
{
	if (deliver_check_envelope(env, status_r, error_r) < 0)
		return -1;
	if (d->size_limit > 0 && size_hint > d->size_limit)
		return deliver_fail(DELIVER_TOO_BIG,
				    "message is larger than message_size_limit",
				    status_r, error_r);
	if (deliver_dir_setup(&d->own, path, status_r, error_r) < 0)
		return -1;
	if ((d->quota_storage > 0 || d->quota_messages > 0) &&
	    (deliver_usage(d, status_r, error_r) < 0 ||
	     deliver_quota_check(d, size_hint, status_r, error_r) < 0))
		return -1;
	deliver_clean_tmp(d->own.tmp_fd);
	return deliver_start_file(d, env, status_r, error_r);
}

int deliver_begin(const char *path, const struct deliver_envelope *env,
		  const struct user_policy *policy, uint64_t size_hint,
		  uint64_t size_limit, struct deliver **d_r,
		  enum deliver_status *status_r, const char **error_r)
{
	struct deliver *d = deliver_new(policy, size_limit);

	*d_r = NULL;
	if (d == NULL)
		return deliver_fail(DELIVER_TEMPFAIL, "out of memory",
				    status_r, error_r);
	if (deliver_start(d, path, env, size_hint, status_r, error_r) < 0) {
		deliver_free(d, true);
		return -1;
	}
	/* Not needed any more: an open delivery holds DELIVER_OPEN_FDS
	   (tmp/, new/ and the file). */
	close(d->own.dir_fd);
	d->own.dir_fd = -1;
	*d_r = d;
	return 0;
}

int deliver_begin_in(struct deliver_dir *dir, const struct deliver_envelope *env,
		     struct deliver **d_r, enum deliver_status *status_r,
		     const char **error_r)
{
	struct deliver *d;

	*d_r = NULL;
	if (deliver_check_envelope(env, status_r, error_r) < 0)
		return -1;
	d = deliver_new(NULL, 0);
	if (d == NULL)
		return deliver_fail(DELIVER_TEMPFAIL, "out of memory",
				    status_r, error_r);
	d->dir = dir;
	if (deliver_start_file(d, env, status_r, error_r) < 0) {
		deliver_free(d, true);
		return -1;
	}
	*d_r = d;
	return 0;
}

const char *deliver_base(const struct deliver *d)
{
	return d == NULL ? "" : d->base;
}

/* The limits, checked while the message grows: stop before the disk
   fills with something that will be refused anyway. */
static int deliver_limits(const struct deliver *d,
			  enum deliver_status *status_r, const char **error_r)
{
	if (d->size_limit > 0 && d->received > d->size_limit)
		return deliver_fail(DELIVER_TOO_BIG,
				    "message is larger than message_size_limit",
				    status_r, error_r);
	return deliver_quota_check(d, mail_lines_disk_size(&d->lines),
				   status_r, error_r);
}

/* After a failure: the tmp/ file goes at once (a full disk gets its space
   back), and every later call reports the same failure. */
static int deliver_set_failed(struct deliver *d, enum deliver_status status,
			      const char *error)
{
	d->failed = true;
	d->fail_status = status;
	/* Copied: the thread-local text is overwritten by the next error. */
	snprintf(d->fail_error, sizeof(d->fail_error), "%s", error);
	if (d->fd >= 0) {
		close(d->fd);
		d->fd = -1;
	}
	if (d->base[0] != '\0')
		(void)unlinkat(d->dir->tmp_fd, d->base, 0);
	d->base[0] = '\0';
	return -1;
}

/* The failure recorded by deliver_set_failed, in the thread-local buffer
   (d may be freed before the caller reads it). */
static int deliver_fail_again(const struct deliver *d,
			      enum deliver_status *status_r,
			      const char **error_r)
{
	snprintf(deliver_errbuf, sizeof(deliver_errbuf), "%s", d->fail_error);
	return deliver_fail(d->fail_status, deliver_errbuf, status_r, error_r);
}

int deliver_write(struct deliver *d, const void *data, size_t len,
		  enum deliver_status *status_r, const char **error_r)
{
	struct deliver_out o;

	if (d->failed)
		return deliver_fail_again(d, status_r, error_r);
	if (d->prepared)
		return deliver_fail(DELIVER_TEMPFAIL,
				    "deliver_write after deliver_prepare",
				    status_r, error_r);
	d->received += len;
	deliver_out_start(&o, d);
	/* The size limit is known before writing; the quota needs the
	   converted size, so it is checked after (one chunk later). */
	if (deliver_limits(d, status_r, error_r) < 0 ||
	    deliver_put(&o, data, len, status_r, error_r) < 0 ||
	    deliver_flush(&o, status_r, error_r) < 0 ||
	    deliver_limits(d, status_r, error_r) < 0)
		return deliver_set_failed(d, *status_r, *error_r);
	return 0;
}

/* tmp/from into new/to without ever replacing a file there: renameat2
   RENAME_NOREPLACE, or where the file system lacks it link() (which never
   replaces either) and unlink of the tmp/ name.  -1 with errno (EEXIST:
   to is taken). */
static int deliver_move(const struct deliver_dir *dir, const char *from,
			const char *to)
{
	int ret = renameat2(dir->tmp_fd, from, dir->new_fd, to,
			    RENAME_NOREPLACE);

	if (ret < 0 && (errno == EINVAL || errno == ENOSYS)) {
		ret = linkat(dir->tmp_fd, from, dir->new_fd, to, 0);
		if (ret == 0)
			(void)unlinkat(dir->tmp_fd, from, 0);
	}
	return ret;
}

/* Moves the file into new/ under its final name (into name_r). */
static int deliver_rename(struct deliver *d, char *name_r, size_t size,
			  enum deliver_status *status_r, const char **error_r)
{
	char base[DELIVER_NAME_MAX];
	int ret = -1;

	snprintf(base, sizeof(base), "%s", d->base);
	for (int tries = 0; tries < DELIVER_NAME_TRIES && ret < 0; tries++) {
		if (tries > 0)
			deliver_make_base(d->dir, base);
		snprintf(name_r, size, "%s,S=%llu,W=%llu", base,
			 (unsigned long long)mail_lines_disk_size(&d->lines),
			 (unsigned long long)mail_lines_wire_size(&d->lines));
		ret = deliver_move(d->dir, d->base, name_r);
		if (ret < 0 && errno != EEXIST)
			return deliver_fail_errno(errno, "rename into new/",
						  false, status_r, error_r);
	}
	if (ret < 0)
		return deliver_fail(DELIVER_TEMPFAIL, "no unique name in new/",
				    status_r, error_r);
	d->base[0] = '\0'; /* nothing left in tmp/ */
	return 0;
}

/* Everything up to the rename: the whole file durable in tmp/. */
static int deliver_finish_file(struct deliver *d,
			       enum deliver_status *status_r,
			       const char **error_r)
{
	struct deliver_out o;
	struct stat st;
	int fd;

	deliver_out_start(&o, d);
	o.len = mail_lines_finish(&d->lines, o.buf);
	if (deliver_limits(d, status_r, error_r) < 0 ||
	    deliver_flush(&o, status_r, error_r) < 0)
		return -1;
	if (fsync(d->fd) < 0)
		return deliver_fail_errno(errno, "fsync", false, status_r,
					  error_r);
	if (fstat(d->fd, &st) < 0)
		return deliver_fail_errno(errno, "fstat", false, status_r,
					  error_r);
	if ((uint64_t)st.st_size != mail_lines_disk_size(&d->lines))
		return deliver_fail(DELIVER_TEMPFAIL,
				    "file size differs from bytes written",
				    status_r, error_r);
	fd = d->fd;
	d->fd = -1;
	/* close() can report a write error (NFS). */
	if (close(fd) < 0)
		return deliver_fail_errno(errno, "close", false, status_r,
					  error_r);
	return 0;
}

int deliver_prepare(struct deliver *d, enum deliver_status *status_r,
		    const char **error_r)
{
	if (d->failed)
		return deliver_fail_again(d, status_r, error_r);
	if (d->prepared)
		return 0;
	if (deliver_finish_file(d, status_r, error_r) < 0)
		return deliver_set_failed(d, *status_r, *error_r);
	d->prepared = true;
	return 0;
}

/* fsync of new/ after name went in.  Not durable, so not a success: the
   file is taken back out, so that a retry (the sender's, or the POP3
   server still holding the message) does not make a second copy. */
static int deliver_sync_new(const struct deliver_dir *dir, const char *name,
			    enum deliver_status *status_r,
			    const char **error_r)
{
	if (fsync(dir->new_fd) == 0)
		return 0;
	deliver_fail_errno(errno, "fsync new/", false, status_r, error_r);
	(void)unlinkat(dir->new_fd, name, 0);
	(void)fsync(dir->new_fd);
	return -1;
}

int deliver_publish(struct deliver **dp, bool sync_dir, char **name_r,
		    enum deliver_status *status_r, const char **error_r)
{
	struct deliver *d = *dp;
	char name[DELIVER_NAME_MAX + 64];

	*dp = NULL;
	if (name_r != NULL)
		*name_r = NULL;
	if (deliver_prepare(d, status_r, error_r) < 0 ||
	    deliver_rename(d, name, sizeof(name), status_r, error_r) < 0) {
		deliver_free(d, true);
		return -1;
	}
	if (sync_dir && deliver_sync_new(d->dir, name, status_r, error_r) < 0) {
		deliver_free(d, false);
		return -1;
	}
	deliver_free(d, false);
	/* Out of memory here leaves *name_r NULL: the message is delivered
	   all the same, only its name is not reported. */
	if (name_r != NULL)
		*name_r = strdup(name);
	*status_r = DELIVER_OK;
	return 0;
}

int deliver_commit(struct deliver **dp, char **name_r,
		   enum deliver_status *status_r, const char **error_r)
{
	return deliver_publish(dp, true, name_r, status_r, error_r);
}

void deliver_abort(struct deliver **dp)
{
	struct deliver *d = *dp;

	if (d == NULL)
		return;
	*dp = NULL;
	deliver_free(d, true);
}

/* ---- recovery ---------------------------------------------------------- */

/* One base name looked for by deliver_dir_locate, and its index. */
struct deliver_key {
	const char *base;
	size_t index;
};

static int deliver_key_cmp(const void *a, const void *b)
{
	const struct deliver_key *ka = a, *kb = b;

	return strcmp(ka->base, kb->base);
}

/* strcmp(base, name[0..len)) as if name ended at len (len <= strlen). */
static int deliver_prefix_cmp(const char *base, const char *name, size_t len)
{
	int c = strncmp(base, name, len);

	if (c != 0)
		return c;
	return base[len] == '\0' ? 0 : 1; /* base is longer: after */
}

/* Every key equal to name[0..len) (there may be duplicates) is at least
   at where. */
static void deliver_locate_mark(const struct deliver_key *keys, size_t n,
				const char *name, size_t len,
				enum deliver_where where,
				enum deliver_where *where_r)
{
	size_t lo = 0, hi = n;

	if (len == 0)
		return;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (deliver_prefix_cmp(keys[mid].base, name, len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < n && deliver_prefix_cmp(keys[lo].base, name, len) == 0;
	     lo++) {
		if (where_r[keys[lo].index] < where)
			where_r[keys[lo].index] = where;
	}
}

/* One directory entry: in tmp/ the name is the base; in new/ or cur/ it
   is the base, or the base followed by ',' or ':' and more. */
static void deliver_locate_name(const struct deliver_key *keys, size_t n,
				const char *name, enum deliver_where where,
				enum deliver_where *where_r)
{
	size_t len = strlen(name);

	if (where == DELIVER_WHERE_TMP) {
		deliver_locate_mark(keys, n, name, len, where, where_r);
		return;
	}
	for (size_t i = 1; i <= len; i++) {
		if (i == len || name[i] == ',' || name[i] == ':')
			deliver_locate_mark(keys, n, name, i, where, where_r);
	}
}

struct deliver_locate_ctx {
	const struct deliver_key *keys;
	size_t n;
	enum deliver_where where;
	enum deliver_where *where_r;
};

static void deliver_locate_each(int dir_fd, const struct dirent *de,
				int64_t size, void *ctx)
{
	const struct deliver_locate_ctx *l = ctx;

	(void)dir_fd;
	(void)size;
	deliver_locate_name(l->keys, l->n, de->d_name, l->where, l->where_r);
}

/* One pass over the messages of directory dir_fd as where.  -1 with
   errno. */
static int deliver_locate_dir(int dir_fd, struct deliver_locate_ctx *l,
			      enum deliver_where where)
{
	l->where = where;
	return deliver_each_msg(dir_fd, deliver_locate_each, l);
}

/* tmp/, new/ and cur/ in turn. */
static int deliver_locate_all(struct deliver_dir *dir,
			      struct deliver_locate_ctx *l,
			      enum deliver_status *status_r,
			      const char **error_r)
{
	int cur_fd, ret;

	if (deliver_locate_dir(dir->tmp_fd, l, DELIVER_WHERE_TMP) < 0)
		return deliver_fail_errno(errno, "read tmp/", false, status_r,
					  error_r);
	if (deliver_locate_dir(dir->new_fd, l, DELIVER_WHERE_STORED) < 0)
		return deliver_fail_errno(errno, "read new/", false, status_r,
					  error_r);
	cur_fd = deliver_open_cur(dir);
	if (cur_fd < 0)
		return deliver_fail_errno(errno, "cur/", false, status_r,
					  error_r);
	ret = deliver_locate_dir(cur_fd, l, DELIVER_WHERE_STORED);
	int err = errno;
	close(cur_fd);
	if (ret < 0)
		return deliver_fail_errno(err, "read cur/", false, status_r,
					  error_r);
	return 0;
}

int deliver_dir_locate(struct deliver_dir *dir, const char *const *bases,
		       size_t n, enum deliver_where *where_r,
		       enum deliver_status *status_r, const char **error_r)
{
	struct deliver_key *keys;
	int ret;

	for (size_t i = 0; i < n; i++)
		where_r[i] = DELIVER_WHERE_NONE;
	if (n == 0)
		return 0;
	/* calloc checks n * size for overflow. */
	keys = calloc(n, sizeof(*keys));
	if (keys == NULL)
		return deliver_fail(DELIVER_TEMPFAIL, "out of memory",
				    status_r, error_r);
	for (size_t i = 0; i < n; i++) {
		keys[i].base = bases[i];
		keys[i].index = i;
	}
	qsort(keys, n, sizeof(*keys), deliver_key_cmp);
	struct deliver_locate_ctx l = { .keys = keys, .n = n,
					.where_r = where_r };
	ret = deliver_locate_all(dir, &l, status_r, error_r);
	free(keys);
	return ret;
}

/* A name that can only mean a file right in tmp/: not empty, no '/', no
   leading '.' ("." and "..", and files readers skip), printable ASCII
   without space, not too long. */
static bool deliver_plain_base(const char *base)
{
	size_t len = strnlen(base, DELIVER_NAME_MAX + 1);

	if (len == 0 || len > DELIVER_NAME_MAX || base[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)base[i];
		if (c <= 0x20 || c >= 0x7f || c == '/')
			return false;
	}
	return true;
}

int deliver_dir_publish_tmp(struct deliver_dir *dir, const char *base,
			    enum deliver_status *status_r,
			    const char **error_r)
{
	char name[DELIVER_NAME_MAX + 32];
	struct stat st;

	if (!deliver_plain_base(base))
		return deliver_fail(DELIVER_PERMFAIL,
				    "not a plain tmp/ file name", status_r,
				    error_r);
	if (fstatat(dir->tmp_fd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return deliver_fail_errno(errno, "tmp/ file", false, status_r,
					  error_r);
	if (!S_ISREG(st.st_mode))
		return deliver_fail(DELIVER_PERMFAIL,
				    "tmp/ entry is not a regular file",
				    status_r, error_r);
	snprintf(name, sizeof(name), "%s,S=%llu", base,
		 (unsigned long long)st.st_size);
	if (deliver_move(dir, base, name) < 0)
		return deliver_fail_errno(errno, "rename into new/", false,
					  status_r, error_r);
	if (fsync(dir->new_fd) < 0) {
		int err = errno;
		/* The only copy: back where it was, not removed. */
		(void)renameat(dir->new_fd, name, dir->tmp_fd, base);
		return deliver_fail_errno(err, "fsync new/", false, status_r,
					  error_r);
	}
	return 0;
}
