/*
 * maildrop.c — the POP3 view of one user's Maildir (see maildrop.h).
 *
 * Opening: lock popbox.lock (flock, so it dies with its holder), check
 * LOGIN-DELAY, then list.  Listing has two paths:
 *   fast: popbox.cache parses, and the mtimes of new/ and cur/ equal the
 *         ones it recorded, and those were at least MD_MTIME_SLACK_NS older
 *         than the scan that wrote it (so no rename can have hidden in the
 *         same timestamp tick): list straight from the cache, no readdir;
 *   slow: readdir new/ and cur/, take sizes from the cache by base name,
 *         else from ",W=" in the name, else by reading the file (many
 *         files: on every core, see md_size_files); keep the cache order
 *         and append new messages sorted by name; rewrite the cache if
 *         anything differs.
 *
 * Invariants:
 *   - the snapshot never changes after open: messages delivered later are
 *     neither listed nor touched; commit unlinks only marked messages, each
 *     found by its base name (which no Maildir reader ever changes);
 *   - two listed messages never share a base name, hence never a UIDL;
 *   - directory mtimes are taken before readdir, so a change during the
 *     scan makes the recorded mtimes stale and forces a rescan next time;
 *   - a cache written after commit records unknown mtimes: our own unlinks
 *     changed the directories and a delivery may have raced with them.
 *   - names and UIDLs live in two blocks (no malloc per message) except a
 *     name found again after a rename, which is malloc'd (name_owned);
 *   - only regular files count, for messages (scan and re-find), the lock
 *     and the cache; every open of a file in the Maildir is O_NOFOLLOW |
 *     O_NONBLOCK | O_NOCTTY and checked with fstat, so nothing is read
 *     through a symlink and no FIFO or device can make a session wait.
 *
 * UPDATE and crashes: commit unlinks the marked messages one by one (each
 * unlink is atomic: a message is there whole or gone), fsyncs new/ and cur/,
 * then writes the cache (temp file, rename).  A SIGKILL between any two of
 * these steps leaves every unmarked message untouched, and a cache that is
 * either still true (nothing removed yet) or not trusted by the next open
 * (the directory mtimes moved, or it records unknown ones), which rescans
 * and rewrites it; tests/integration/test_faults.py kills at each step.
 *
 * UPDATE with keep_days (maildrop_commit_keep): the same, with one rename
 * into .Kept (RENAME_NOREPLACE) in place of each unlink, after the folder
 * itself is made durable; a SIGKILL anywhere leaves each marked message in
 * exactly one of the two places (tests/integration/test_retention.py).
 */
#include "maildrop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "maildir-dir.h"
#include "maildir-name.h"
#include "maildrop-cache.h"
#include "retention.h"
#include "user-policy.h"
#include "wire.h"

#define MD_LOCK_FILE "popbox.lock"
/* Kernel file timestamps come from a clock that ticks every few ms (and
   some file systems keep whole seconds); 2 s covers both with margin. */
#define MD_MTIME_SLACK_NS (2LL * 1000000000LL)
/* Read size when a message must be read to learn its wire size. */
#define MD_READ_CHUNK (64 * 1024)
/* How often a message that keeps moving is looked for again before giving
   up; another agent renaming it three times in a row is not normal. */
#define MD_REFIND_TRIES 3
/* Length of the thread-local error text. */
#define MD_ERROR_MAX 256
/* Kept names tried for one message when the first is taken (one second
   later each time) before UPDATE gives up on it. */
#define MD_KEPT_NAME_TRIES 8
/* The Maildir++ marker file in a folder. */
#define MD_KEPT_MARKER "maildirfolder"

static const char *const md_subdir[2] = { "new", "cur" };

struct maildrop_msg {
	char *name;          /* NUL-terminated current file name */
	uint16_t base_len;   /* name[0..base_len) is the base name */
	uint8_t dir;         /* enum maildrop_cache_dir */
	bool name_owned;     /* malloc'd by a re-find, freed on close */
	bool removed;        /* unlinked (or found gone) by commit */
};

struct maildrop {
	int dir_fd;
	int sub_fd[2];       /* new/, cur/ */
	int lock_fd;
	size_t count;
	struct mailmsg *msgs;
	struct maildrop_msg *m;
	char *names;         /* block holding the names */
	char *uidls;         /* block holding the UIDLs */
	char log_path[LOG_ESCAPE_MAX + 1]; /* the Maildir, escaped for logs */
};

static _Thread_local char md_errbuf[MD_ERROR_MAX];

/* "what: strerror(errno)" in the thread-local buffer. */
static const char *md_errno_text(const char *what, int err)
{
	char eb[128];

	snprintf(md_errbuf, sizeof(md_errbuf), "%s: %s", what,
		 strerror_r(err, eb, sizeof(eb)));
	return md_errbuf;
}

/* Errors that retrying will not fix map to PERMFAIL. */
static enum maildrop_status md_errno_status(int err)
{
	switch (err) {
	case ENOENT:
	case ENOTDIR:
	case EACCES:
	case EPERM:
	case ELOOP:
	case EISDIR:
	case EROFS:
		return MAILDROP_PERMFAIL;
	default:
		return MAILDROP_TEMPFAIL;
	}
}

static int md_fail(int err, const char *what, enum maildrop_status *status_r,
		   const char **error_r)
{
	*status_r = md_errno_status(err);
	*error_r = md_errno_text(what, err);
	return -1;
}

static int64_t md_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

static int64_t md_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return md_ns(&ts);
}

/* ---- opening and locking ---------------------------------------------- */

/* Opens subdirectory d of the Maildir, creating it (and tmp/) if missing. */
static int md_open_subdir(struct maildrop *md, int d, const char **what_r)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

	*what_r = md_subdir[d];
	md->sub_fd[d] = openat(md->dir_fd, md_subdir[d], flags);
	if (md->sub_fd[d] >= 0 || errno != ENOENT)
		return md->sub_fd[d];
	*what_r = "mkdir";
	if (mkdirat(md->dir_fd, md_subdir[d], 0700) < 0 && errno != EEXIST)
		return -1;
	if (mkdirat(md->dir_fd, "tmp", 0700) < 0 && errno != EEXIST)
		return -1;
	*what_r = md_subdir[d];
	md->sub_fd[d] = openat(md->dir_fd, md_subdir[d], flags);
	return md->sub_fd[d];
}

/* Opens path and its new/ and cur/. */
static int md_open_dirs(struct maildrop *md, const char *path,
			enum maildrop_status *status_r, const char **error_r)
{
	const char *what;

	md->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (md->dir_fd < 0)
		return md_fail(errno, "open Maildir", status_r, error_r);
	for (int d = 0; d < 2; d++) {
		if (md_open_subdir(md, d, &what) < 0)
			return md_fail(errno, what, status_r, error_r);
	}
	return 0;
}

/*
 * Opens popbox.lock; a new one gets mtime 0 ("no login yet").  Never
 * through a symlink (ELOOP: refused, the target is not touched); O_NONBLOCK
 * and O_NOCTTY so a FIFO or device in its place cannot hang or adopt us
 * before md_lock() refuses it.
 */
static int md_open_lock_file(struct maildrop *md, const char **what_r)
{
	static const struct timespec never[2] = { { 0, 0 }, { 0, 0 } };
	const int flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
			  O_CLOEXEC;

	*what_r = "open " MD_LOCK_FILE;
	md->lock_fd = openat(md->dir_fd, MD_LOCK_FILE, flags);
	if (md->lock_fd >= 0 || errno != ENOENT)
		return md->lock_fd;
	md->lock_fd = openat(md->dir_fd, MD_LOCK_FILE,
			     flags | O_CREAT | O_EXCL, 0600);
	if (md->lock_fd < 0 && errno == EEXIST)
		md->lock_fd = openat(md->dir_fd, MD_LOCK_FILE, flags);
	else if (md->lock_fd >= 0 && futimens(md->lock_fd, never) < 0) {
		*what_r = "futimens " MD_LOCK_FILE;
		return -1;
	}
	return md->lock_fd;
}

static int md_lock(struct maildrop *md, const struct maildrop_settings *set,
		   enum maildrop_status *status_r, const char **error_r)
{
	const char *what;
	struct stat st;

	if (md_open_lock_file(md, &what) < 0)
		return md_fail(errno, what, status_r, error_r);
	if (fstat(md->lock_fd, &st) < 0)
		return md_fail(errno, "fstat " MD_LOCK_FILE, status_r, error_r);
	if (!S_ISREG(st.st_mode)) {
		*status_r = MAILDROP_PERMFAIL;
		*error_r = MD_LOCK_FILE " is not a regular file";
		return -1;
	}
	if (flock(md->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK)
			return md_fail(errno, "flock", status_r, error_r);
		*status_r = MAILDROP_IN_USE;
		*error_r = "maildrop is locked by another session";
		return -1;
	}
	/* Its mtime, read after the lock: the last login's time. */
	if (fstat(md->lock_fd, &st) < 0)
		return md_fail(errno, "fstat " MD_LOCK_FILE, status_r, error_r);
	if (set != NULL && set->login_delay > 0 && !set->admin) {
		int64_t last = md_ns(&st.st_mtim), now = md_now_ns();
		int64_t delay = (int64_t)set->login_delay * 1000000000LL;

		/* A last login in the future (clock stepped back) is ignored
		   rather than locking the user out until the clock catches up. */
		if (last > now - delay && last <= now + MD_MTIME_SLACK_NS) {
			*status_r = MAILDROP_LOGIN_DELAY;
			*error_r = "last login was less than LOGIN-DELAY ago";
			return -1;
		}
	}
	return 0;
}

/* ---- reading a message's wire size ------------------------------------- */

/*
 * Opens message name in dir_fd for sizing.  O_NOATIME: a first login does
 * not dirty the inode of every message it reads (refused with EPERM for a
 * file we do not own: *noatime is cleared and the open retried without).
 */
static int md_open_for_size(int dir_fd, const char *name, bool *noatime)
{
	const int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK |
			  O_NOCTTY;
	int fd;

	if (*noatime) {
		fd = openat(dir_fd, name, flags | O_NOATIME);
		if (fd >= 0 || errno != EPERM)
			return fd;
		*noatime = false;
	}
	return openat(dir_fd, name, flags);
}

/*
 * Feeds fd's bytes through ws.  A read that stops short once st_size bytes
 * are in is the end of the file (a delivered message never changes), which
 * saves the read that would return 0; a file that grew is read on.
 */
static int md_read_all(int fd, int64_t st_size, uint8_t *buf,
		       struct wire_size *ws)
{
	uint64_t total = 0;
	ssize_t n;

	for (;;) {
		n = read(fd, buf, MD_READ_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -1 : 0;
		wire_size_update(ws, buf, (size_t)n);
		total += (uint64_t)n;
		if (n < MD_READ_CHUNK && st_size >= 0 &&
		    total >= (uint64_t)st_size)
			return 0;
	}
}

/*
 * Reads name in dir_fd through wire_size; buf holds MD_READ_CHUNK bytes.
 * Returns 0 with *size_r, 1 if the file is gone or not a regular file
 * (skip it), -1 with errno on error.
 */
static int md_read_wire_size(int dir_fd, const char *name, uint8_t *buf,
			     bool *noatime, uint64_t *size_r)
{
	struct wire_size ws;
	struct stat st;
	int fd, err, ret;

	fd = md_open_for_size(dir_fd, name, noatime);
	if (fd < 0)
		return errno == ENOENT || errno == ELOOP ? 1 : -1;
	if (fstat(fd, &st) < 0) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return 1;
	}
	wire_size_init(&ws);
	ret = md_read_all(fd, (int64_t)st.st_size, buf, &ws);
	err = errno;
	close(fd);
	errno = err;
	if (ret == 0)
		*size_r = wire_size_final(&ws);
	return ret;
}

/*
 * The ",W=" field, if the name has one that is consistent with ",S=" (the
 * wire form is never smaller than the file nor more than twice it plus 2)
 * and with st_size when the caller already has it (-1 if not).
 */
static bool md_name_wire_size(const char *name, size_t len, int64_t st_size,
			      uint64_t *size_r)
{
	struct maildir_name mn;

	maildir_name_parse(name, len, &mn);
	if (!mn.has_wire_size)
		return false;
	if (mn.has_size) {
		if (mn.wire_size < mn.size || mn.wire_size > 2 * mn.size + 2)
			return false;
		if (st_size >= 0 && (uint64_t)st_size != mn.size)
			return false;
	}
	*size_r = mn.wire_size;
	return true;
}

/* ---- the snapshot ------------------------------------------------------ */

/* Allocates the per-message arrays and the UIDL block for count messages
   whose UIDLs need uidl_bytes in all. */
static int md_alloc_msgs(struct maildrop *md, size_t count, size_t uidl_bytes)
{
	md->count = count;
	md->msgs = calloc(count + 1, sizeof(*md->msgs));
	md->m = calloc(count + 1, sizeof(*md->m));
	md->uidls = malloc(uidl_bytes + 1);
	return md->msgs == NULL || md->m == NULL || md->uidls == NULL ? -1 : 0;
}

/* Sets message i; its UIDL goes at *uidl_pos, which is advanced. */
static int md_set_msg(struct maildrop *md, size_t i, char *name,
		      size_t base_len, uint8_t dir, uint64_t wire_size,
		      size_t *uidl_pos, const char **error_r)
{
	size_t ulen;

	md->m[i].name = name;
	md->m[i].base_len = (uint16_t)base_len;
	md->m[i].dir = dir;
	md->msgs[i].wire_size = wire_size;
	md->msgs[i].uidl = md->uidls + *uidl_pos;
	if (maildir_name_uidl(name, base_len, md->uidls + *uidl_pos, &ulen,
			      error_r) < 0)
		return -1;
	*uidl_pos += ulen + 1;
	return 0;
}

/* The fast path: the snapshot is the cache.  Takes ownership of buf. */
static int md_list_from_cache(struct maildrop *md,
			      const struct maildrop_cache *c, uint8_t *buf,
			      const char **error_r)
{
	size_t uidl_bytes = 0, pos = 0;

	md->names = (char *)buf;
	for (size_t i = 0; i < c->count; i++) {
		const struct maildrop_cache_entry *e = &c->entries[i];

		/* A bound, so the names need not be checked twice. */
		uidl_bytes += MAILDIR_NAME_UIDL_LEN_BOUND(e->base_len) + 1;
	}
	if (md_alloc_msgs(md, c->count, uidl_bytes) < 0) {
		*error_r = "out of memory";
		return -1;
	}
	for (size_t i = 0; i < c->count; i++) {
		const struct maildrop_cache_entry *e = &c->entries[i];
		char *name = (char *)buf + e->name_off;

		name[e->name_len] = '\0'; /* was the entry's '\n' */
		if (md_set_msg(md, i, name, e->base_len, e->dir, e->wire_size,
			       &pos, error_r) < 0)
			return -1;
	}
	return 0;
}

/* The snapshot as cache items, skipping removed messages. */
static int md_write_cache(struct maildrop *md,
			  const struct maildrop_cache_header *hdr,
			  const char **error_r)
{
	struct maildrop_cache_item *items;
	size_t n = 0, len;
	uint8_t *buf;
	int ret;

	items = calloc(md->count + 1, sizeof(*items));
	if (items == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	for (size_t i = 0; i < md->count; i++) {
		if (md->m[i].removed)
			continue;
		items[n].name = md->m[i].name;
		items[n].name_len = strlen(md->m[i].name);
		items[n].wire_size = md->msgs[i].wire_size;
		items[n].dir = md->m[i].dir;
		n++;
	}
	ret = maildrop_cache_format(hdr, items, n, &buf, &len, error_r);
	free(items);
	if (ret < 0)
		return -1;
	ret = maildrop_cache_write(md->dir_fd, buf, len, error_r);
	free(buf);
	return ret;
}

/* The cache was not written: the next open rescans; worth a line if it
   keeps happening (a directory in its place, a full disk). */
static void md_write_cache_logged(struct maildrop *md,
				  const struct maildrop_cache_header *hdr)
{
	const char *error;

	if (md_write_cache(md, hdr, &error) < 0)
		log_warn("event=cache-not-written maildrop=%s error=\"%s\"",
			 md->log_path, error);
}

/* True if a cache with this header may be listed without readdir. */
static bool md_cache_fast_ok(const struct maildrop_cache_header *h)
{
	return h->new_mtime_ns > 0 && h->cur_mtime_ns > 0 &&
	       h->new_mtime_ns <= h->scan_ns - MD_MTIME_SLACK_NS &&
	       h->cur_mtime_ns <= h->scan_ns - MD_MTIME_SLACK_NS;
}

/* The slow path, in maildrop-scan below. */
static int md_list_by_scan(struct maildrop *md,
			   const struct maildrop_cache *cache,
			   const struct maildrop_cache_header *now_hdr,
			   enum maildrop_status *status_r,
			   const char **error_r);

/* A cache that exists but cannot be used: damaged, hostile, or from
   another version.  Rebuilt; logged because it should not happen twice. */
static void md_log_cache_rejected(const struct maildrop *md, const char *why)
{
	log_warn("event=cache-rejected maildrop=%s error=\"%s\" "
		 "action=rebuild", md->log_path, why);
}

/* Takes the directory mtimes, then lists by the fast or the slow path. */
static int md_list(struct maildrop *md, enum maildrop_status *status_r,
		   const char **error_r)
{
	struct maildrop_cache_header now = { 0, 0, 0 };
	struct maildrop_cache cache;
	const char *cache_error;
	uint8_t *buf = NULL;
	size_t len;
	struct stat st;
	int ret;

	now.scan_ns = md_now_ns();
	for (int d = 0; d < 2; d++) {
		if (fstat(md->sub_fd[d], &st) < 0)
			return md_fail(errno, "fstat", status_r, error_r);
		*(d == 0 ? &now.new_mtime_ns : &now.cur_mtime_ns) =
			md_ns(&st.st_mtim);
	}
	memset(&cache, 0, sizeof(cache));
	/* An unusable cache is never trusted: rebuilt by the scan below. */
	if (maildrop_cache_read(md->dir_fd, &buf, &len, &cache_error) < 0) {
		if (errno != ENOENT)
			md_log_cache_rejected(md, cache_error);
	} else if (maildrop_cache_parse(buf, len, &cache, &cache_error) < 0) {
		md_log_cache_rejected(md, cache_error);
		free(buf);
		buf = NULL;
	} else if (md_cache_fast_ok(&cache.hdr) &&
		   cache.hdr.new_mtime_ns == now.new_mtime_ns &&
		   cache.hdr.cur_mtime_ns == now.cur_mtime_ns) {
		ret = md_list_from_cache(md, &cache, buf, error_r);
		maildrop_cache_free(&cache);
		if (ret < 0)
			*status_r = MAILDROP_TEMPFAIL;
		return ret;
	}
	ret = md_list_by_scan(md, &cache, &now, status_r, error_r);
	maildrop_cache_free(&cache);
	free(buf);
	return ret;
}

static void md_subdirs_close(struct maildrop *md);

static struct maildrop *md_new(void)
{
	struct maildrop *md = calloc(1, sizeof(*md));

	if (md != NULL)
		md->dir_fd = md->sub_fd[0] = md->sub_fd[1] = md->lock_fd = -1;
	return md;
}

int maildrop_open(const char *path, const struct maildrop_settings *set,
		  struct maildrop **md_r, enum maildrop_status *status_r,
		  const char **error_r)
{
	struct maildrop *md = md_new();

	*md_r = NULL;
	if (md == NULL) {
		*status_r = MAILDROP_TEMPFAIL;
		*error_r = "out of memory";
		return -1;
	}
	log_escape(md->log_path, path, strlen(path));
	if (md_open_dirs(md, path, status_r, error_r) < 0 ||
	    md_lock(md, set, status_r, error_r) < 0 ||
	    md_list(md, status_r, error_r) < 0) {
		maildrop_close(&md);
		return -1;
	}
	/* The time of this login, for the next LOGIN-DELAY check (an
	   admin's open is no login). */
	if ((set == NULL || !set->admin) && futimens(md->lock_fd, NULL) < 0) {
		md_fail(errno, "futimens " MD_LOCK_FILE, status_r, error_r);
		maildrop_close(&md);
		return -1;
	}
	md_subdirs_close(md);
	*status_r = MAILDROP_OK;
	*md_r = md;
	return 0;
}

const struct mailmsg *maildrop_list(const struct maildrop *md, size_t *count_r)
{
	*count_r = md->count;
	return md->msgs;
}

void maildrop_close(struct maildrop **mdp)
{
	struct maildrop *md = *mdp;

	if (md == NULL)
		return;
	*mdp = NULL;
	for (size_t i = 0; md->m != NULL && i < md->count; i++) {
		if (md->m[i].name_owned)
			free(md->m[i].name);
	}
	/* Closing the lock file's only descriptor releases the flock. */
	if (md->lock_fd >= 0)
		close(md->lock_fd);
	for (int d = 0; d < 2; d++) {
		if (md->sub_fd[d] >= 0)
			close(md->sub_fd[d]);
	}
	if (md->dir_fd >= 0)
		close(md->dir_fd);
	free(md->msgs);
	free(md->m);
	free(md->names);
	free(md->uidls);
	free(md);
}

/* ---- the slow path: scanning new/ and cur/ ----------------------------- */

struct md_scan_ent {
	uint32_t off;        /* name offset in the name block */
	uint16_t len;
	uint16_t base_len;
	uint8_t dir;
	bool skip;           /* duplicate base name, or vanished */
	bool unsized;        /* to be read for its wire size */
	int64_t st_size;     /* -1 unless fstatat was needed for the type */
	int64_t cache_idx;   /* matching cache entry, -1 if none */
	uint64_t wire_size;
};

struct md_scan {
	struct md_scan_ent *ents;
	size_t count, cap;
	char *names;         /* NUL-terminated names, one after the other */
	size_t names_len, names_cap;
};

/* Grows *p (of *cap elements of size sz) to hold need elements. */
static int md_grow(void *p, size_t *cap, size_t need, size_t sz)
{
	size_t ncap = *cap == 0 ? 1024 : *cap;
	void *n;

	if (need <= *cap)
		return 0;
	/* need is bounded by the entries limit times NAME_MAX + 1, so these
	   doublings stay far below SIZE_MAX. */
	while (ncap < need)
		ncap *= 2;
	n = realloc(*(void **)p, ncap * sz);
	if (n == NULL)
		return -1;
	*(void **)p = n;
	*cap = ncap;
	return 0;
}

static int md_scan_add(struct md_scan *s, const char *name, size_t len,
		       uint8_t dir, int64_t st_size)
{
	struct md_scan_ent *e;

	if (md_grow(&s->ents, &s->cap, s->count + 1, sizeof(*s->ents)) < 0 ||
	    md_grow(&s->names, &s->names_cap, s->names_len + len + 1, 1) < 0)
		return -1;
	memcpy(s->names + s->names_len, name, len + 1);
	e = &s->ents[s->count++];
	memset(e, 0, sizeof(*e));
	e->off = (uint32_t)s->names_len;
	e->len = (uint16_t)len;
	e->dir = dir;
	e->st_size = st_size;
	e->cache_idx = -1;
	s->names_len += len + 1;
	return 0;
}

/* Adds the messages of one directory; stops at the entries limit. */
static int md_scan_dir(struct md_scan *s, int dir_fd, uint8_t dir,
		       const char **what_r)
{
	struct dirent *de;
	int64_t st_size;
	DIR *d;

	*what_r = "opendir";
	if ((d = maildir_dir_open(dir_fd)) == NULL)
		return -1;
	*what_r = "readdir";
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL)
			break;
		if (!maildir_dir_is_msg(dir_fd, de, &st_size))
			continue;
		if (s->count >= MAILDROP_CACHE_ENTRIES_MAX)
			break; /* the listing is truncated; see maildrop_open */
		if (md_scan_add(s, de->d_name, strlen(de->d_name), dir,
				st_size) < 0) {
			closedir(d);
			errno = ENOMEM;
			*what_r = "scan";
			return -1;
		}
	}
	if (errno != 0) {
		int err = errno;

		closedir(d);
		errno = err;
		return -1;
	}
	closedir(d);
	return 0;
}

/* Orders new messages by base name, then directory, then full name. */
static int md_scan_cmp(const void *a, const void *b, void *ctx)
{
	const struct md_scan *s = ctx;
	const struct md_scan_ent *x = &s->ents[*(const uint32_t *)a];
	const struct md_scan_ent *y = &s->ents[*(const uint32_t *)b];
	size_t n = x->base_len < y->base_len ? x->base_len : y->base_len;
	int c = memcmp(s->names + x->off, s->names + y->off, n);

	if (c != 0)
		return c;
	if (x->base_len != y->base_len)
		return x->base_len < y->base_len ? -1 : 1;
	if (x->dir != y->dir)
		return x->dir < y->dir ? -1 : 1;
	return strcmp(s->names + x->off, s->names + y->off);
}

/*
 * Matches scanned entries with cache entries by base name.  Returns the
 * number of scanned entries that were not in the cache (or -1 for out of
 * memory); sets *changed if the cache differs from the directories.
 */
static ssize_t md_scan_match(struct md_scan *s,
			     const struct maildrop_cache *c, bool *changed)
{
	uint32_t *matched = calloc(c->count + 1, sizeof(*matched));
	size_t fresh = 0, idx, nmatched = 0;

	if (matched == NULL)
		return -1;
	for (size_t i = 0; i < s->count; i++) {
		struct md_scan_ent *e = &s->ents[i];
		const char *name = s->names + e->off;
		struct maildir_name mn;

		maildir_name_parse(name, e->len, &mn);
		e->base_len = (uint16_t)mn.base_len;
		if (!maildrop_cache_lookup(c, name, e->base_len, &idx)) {
			fresh++;
			continue;
		}
		if (matched[idx] != 0) {
			e->skip = true; /* a second file with this base name */
			continue;
		}
		matched[idx] = (uint32_t)i + 1;
		nmatched++;
		e->cache_idx = (int64_t)idx;
		/* The lookup found idx, so the cache is not empty.
		   NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
		e->wire_size = c->entries[idx].wire_size;
		if (c->entries[idx].dir != e->dir ||
		    c->entries[idx].name_len != e->len ||
		    memcmp(c->buf + c->entries[idx].name_off, name, e->len) != 0)
			*changed = true;
	}
	free(matched);
	if (fresh > 0 || nmatched != c->count)
		*changed = true;
	return (ssize_t)fresh;
}

/*
 * Builds the order: cache order for known messages, then new ones sorted.
 * Returns a malloc'd array of entry indices with *n_r elements.
 */
static uint32_t *md_scan_order(struct md_scan *s,
			       const struct maildrop_cache *c, size_t *n_r)
{
	uint32_t *order = malloc((s->count + 1) * sizeof(*order));
	uint32_t *by_cache = calloc(c->count + 1, sizeof(*by_cache));
	size_t n = 0, nf = 0;

	if (order == NULL || by_cache == NULL) {
		free(order);
		free(by_cache);
		return NULL;
	}
	for (size_t i = 0; i < s->count; i++) {
		if (s->ents[i].cache_idx >= 0)
			by_cache[s->ents[i].cache_idx] = (uint32_t)i + 1;
	}
	for (size_t k = 0; k < c->count; k++) {
		if (by_cache[k] != 0)
			order[n++] = by_cache[k] - 1;
	}
	free(by_cache);
	for (size_t i = 0; i < s->count; i++) {
		if (s->ents[i].cache_idx < 0 && !s->ents[i].skip)
			order[n + nf++] = (uint32_t)i;
	}
	qsort_r(order + n, nf, sizeof(*order), md_scan_cmp, s);
	*n_r = n + nf;
	return order;
}

static bool md_same_base(const struct md_scan *s, uint32_t a, uint32_t b)
{
	const struct md_scan_ent *x = &s->ents[a], *y = &s->ents[b];

	return x->base_len == y->base_len &&
	       memcmp(s->names + x->off, s->names + y->off, x->base_len) == 0;
}

/*
 * Wire sizes of the messages not in the cache (order[first..n)): from the
 * name when it carries ",W=", else by reading the file (md_size_files).
 * Marks duplicates of the previous base name as skipped.  Returns a
 * malloc'd list of the entries still to be read, in directory order, with
 * *todo_r elements (NULL with *todo_r = 0 if none or out of memory: then
 * *enomem is set).
 */
static uint32_t *md_scan_unsized(struct md_scan *s, const uint32_t *order,
				 size_t first, size_t n, size_t *todo_r,
				 bool *enomem)
{
	uint32_t *todo;
	size_t t = 0;

	*todo_r = 0;
	*enomem = false;
	for (size_t k = first; k < n; k++) {
		struct md_scan_ent *e = &s->ents[order[k]];

		if (k > first && md_same_base(s, order[k - 1], order[k]))
			e->skip = true;
		else if (!md_name_wire_size(s->names + e->off, e->len,
					    e->st_size, &e->wire_size))
			e->unsized = true;
		t += e->unsized;
	}
	if (t == 0)
		return NULL;
	if ((todo = malloc(t * sizeof(*todo))) == NULL) {
		*enomem = true;
		return NULL;
	}
	/* In directory order, as readdir returned them. */
	for (size_t i = 0, k = 0; i < s->count && k < t; i++) {
		if (s->ents[i].unsized)
			todo[k++] = (uint32_t)i;
	}
	*todo_r = t;
	return todo;
}

/* ---- sizing by reading, on all cores ----------------------------------- */

/*
 * A first login to a big maildrop without ",W=" in its names reads every
 * message once.  That is mostly system time spent per file (openat, fstat,
 * read, close) plus the LF count, and it spreads over cores: above
 * md_sizing.parallel_min files, the calling thread and up to threads - 1
 * helper threads (two per online CPU, so that a cold page cache has
 * several reads in flight; at most MD_SIZE_THREADS_MAX) take batches of
 * MD_SIZE_BATCH files from a shared counter.  Each thread writes only the
 * entries of its own batches, so the listing is the same as a serial
 * pass's: sizes and skipped (vanished) files do not depend on who read
 * what, and an error fails the open as it would serially (it stops every
 * thread at its next batch; which file's errno is reported may differ).
 * Helpers live only for the scan, with every signal blocked; if one
 * cannot be started the others (at least the caller) do its share.
 */
#define MD_SIZE_THREADS_MAX 4
#define MD_SIZE_BATCH 64
#define MD_PARALLEL_MIN 512

static struct {
	unsigned int threads;   /* 0: two per online CPU */
	size_t parallel_min;
} md_sizing = { 0, MD_PARALLEL_MIN };

void maildrop_set_sizing(unsigned int threads, size_t parallel_min)
{
	md_sizing.threads = threads;
	md_sizing.parallel_min = parallel_min;
}

struct md_sizer {
	const struct maildrop *md;
	struct md_scan *s;
	const uint32_t *todo;
	size_t count;
	atomic_size_t next;      /* first todo index of the next batch */
	atomic_int err;          /* errno of the first error, 0 if none */
};

/* Sizes todo[k..end); 0, or -1 with errno. */
static int md_size_batch(struct md_sizer *z, size_t k, size_t end,
			 uint8_t *buf, bool *noatime)
{
	for (; k < end; k++) {
		struct md_scan_ent *e = &z->s->ents[z->todo[k]];
		int r = md_read_wire_size(z->md->sub_fd[e->dir],
					  z->s->names + e->off, buf, noatime,
					  &e->wire_size);

		if (r < 0)
			return -1;
		if (r == 1)
			e->skip = true; /* gone or not a file since readdir */
	}
	return 0;
}

/* One thread's share: batches until none is left or one failed. */
static void md_size_work(struct md_sizer *z)
{
	uint8_t *buf = malloc(MD_READ_CHUNK);
	bool noatime = true;
	int expected = 0;

	if (buf == NULL) {
		atomic_compare_exchange_strong(&z->err, &expected, ENOMEM);
		return;
	}
	while (atomic_load(&z->err) == 0) {
		size_t k = atomic_fetch_add(&z->next, MD_SIZE_BATCH);

		if (k >= z->count)
			break;
		if (md_size_batch(z, k, z->count - k < MD_SIZE_BATCH ?
						z->count : k + MD_SIZE_BATCH,
				  buf, &noatime) < 0) {
			int err = errno != 0 ? errno : EIO;

			atomic_compare_exchange_strong(&z->err, &expected, err);
			break;
		}
	}
	free(buf);
}

static void *md_size_thread(void *arg)
{
	md_size_work(arg);
	return NULL;
}

/* How many threads should read count files. */
static unsigned int md_size_threads(size_t count)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned int n = md_sizing.threads;

	if (n == 0)
		n = cpus > 0 ? 2 * (unsigned int)cpus : 2;
	if (n > MD_SIZE_THREADS_MAX)
		n = MD_SIZE_THREADS_MAX;
	if (count < md_sizing.parallel_min || count < 2)
		n = 1;
	return n;
}

/* Starts up to want helpers with every signal blocked; returns how many
   started (tids[0..)). */
static unsigned int md_size_helpers(struct md_sizer *z, pthread_t *tids,
				    unsigned int want)
{
	sigset_t all, old;
	unsigned int started = 0;

	sigfillset(&all);
	if (pthread_sigmask(SIG_SETMASK, &all, &old) != 0)
		return 0;
	for (; started < want; started++) {
		if (pthread_create(&tids[started], NULL, md_size_thread, z) != 0)
			break; /* the others do its share */
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return started;
}

/* Reads the files todo[0..count) for their wire sizes.  0, or -1 with
   errno. */
static int md_size_files(const struct maildrop *md, struct md_scan *s,
			 const uint32_t *todo, size_t count)
{
	pthread_t tids[MD_SIZE_THREADS_MAX];
	struct md_sizer z = { .md = md, .s = s, .todo = todo, .count = count };
	unsigned int helpers = 0;
	int err;

	atomic_init(&z.next, 0);
	atomic_init(&z.err, 0);
	if (count == 0)
		return 0;
	helpers = md_size_helpers(&z, tids, md_size_threads(count) - 1);
	md_size_work(&z);
	for (unsigned int i = 0; i < helpers; i++)
		pthread_join(tids[i], NULL);
	if ((err = atomic_load(&z.err)) != 0) {
		errno = err;
		return -1;
	}
	return 0;
}

/* Sizes of the messages not in the cache: order[first..n). */
static int md_scan_sizes(struct maildrop *md, struct md_scan *s,
			 const uint32_t *order, size_t first, size_t n)
{
	size_t count;
	bool enomem;
	uint32_t *todo = md_scan_unsized(s, order, first, n, &count, &enomem);
	int ret;

	if (enomem) {
		errno = ENOMEM;
		return -1;
	}
	ret = md_size_files(md, s, todo, count);
	free(todo);
	return ret;
}

/* Fills the snapshot from order[0..n), taking ownership of s->names. */
static int md_scan_fill(struct maildrop *md, struct md_scan *s,
			const uint32_t *order, size_t n, const char **error_r)
{
	size_t count = 0, uidl_bytes = 0, pos = 0, i = 0;

	for (size_t k = 0; k < n; k++) {
		const struct md_scan_ent *e = &s->ents[order[k]];

		if (e->skip)
			continue;
		count++;
		uidl_bytes += maildir_name_uidl_len(s->names + e->off,
						    e->base_len) + 1;
	}
	md->names = s->names;
	s->names = NULL;
	if (md_alloc_msgs(md, count, uidl_bytes) < 0) {
		*error_r = "out of memory";
		return -1;
	}
	for (size_t k = 0; k < n; k++) {
		const struct md_scan_ent *e = &s->ents[order[k]];

		if (e->skip)
			continue;
		if (md_set_msg(md, i++, md->names + e->off, e->base_len,
			       e->dir, e->wire_size, &pos, error_r) < 0)
			return -1;
	}
	return 0;
}

/* Does the scan call for a new cache file? */
static bool md_cache_stale(const struct maildrop_cache *old,
			   const struct maildrop_cache_header *now,
			   bool changed)
{
	return changed || old->hdr.new_mtime_ns != now->new_mtime_ns ||
	       old->hdr.cur_mtime_ns != now->cur_mtime_ns ||
	       (!md_cache_fast_ok(&old->hdr) && md_cache_fast_ok(now));
}

static int md_list_by_scan(struct maildrop *md,
			   const struct maildrop_cache *cache,
			   const struct maildrop_cache_header *now_hdr,
			   enum maildrop_status *status_r,
			   const char **error_r)
{
	struct md_scan s = { 0 };
	bool changed = cache->entries == NULL;
	const char *what = "scan";
	uint32_t *order = NULL;
	size_t n = 0, skipped = 0;
	ssize_t fresh;
	int ret = -1;

	if (md_scan_dir(&s, md->sub_fd[0], MAILDROP_CACHE_DIR_NEW, &what) < 0 ||
	    md_scan_dir(&s, md->sub_fd[1], MAILDROP_CACHE_DIR_CUR, &what) < 0) {
		md_fail(errno, what, status_r, error_r);
		goto out;
	}
	if ((fresh = md_scan_match(&s, cache, &changed)) < 0 ||
	    (order = md_scan_order(&s, cache, &n)) == NULL) {
		md_fail(ENOMEM, "scan", status_r, error_r);
		goto out;
	}
	if (md_scan_sizes(md, &s, order, n - (size_t)fresh, n) < 0) {
		md_fail(errno, "read message", status_r, error_r);
		goto out;
	}
	for (size_t i = 0; i < s.count; i++)
		skipped += s.ents[i].skip;
	if (md_scan_fill(md, &s, order, n, error_r) < 0) {
		*status_r = MAILDROP_TEMPFAIL;
		goto out;
	}
	if (md_cache_stale(cache, now_hdr, changed || skipped > 0))
		md_write_cache_logged(md, now_hdr);
	ret = 0;
out:
	free(order);
	free(s.ents);
	free(s.names);
	return ret;
}

/* ---- finding a message again, reading, removing ------------------------ */

/* Does directory entry name belong to the message with this base name? */
static bool md_name_has_base(const char *name, const char *base, size_t len)
{
	return strncmp(name, base, len) == 0 &&
	       (name[len] == ':' || name[len] == '\0');
}

/*
 * Looks for message i under another name (new/ -> cur/, flags changed):
 * cur/ first, then new/.  Only regular files count, as in the scan: a
 * symlink, FIFO or directory that carries the base name is passed over, so
 * it can neither hide the message nor be removed in its place.  Returns 1
 * with the message's name and directory updated, 0 if no file has its base
 * name, -1 with errno on error.
 * Cost: one readdir per call; only taken when another agent moved mail.
 */
static int md_refind(struct maildrop *md, size_t i)
{
	static const uint8_t dirs[2] = { MAILDROP_CACHE_DIR_CUR,
					 MAILDROP_CACHE_DIR_NEW };
	struct maildrop_msg *m = &md->m[i];
	struct dirent *de;
	int64_t st_size;
	char *name;
	DIR *d;

	for (int k = 0; k < 2; k++) {
		if ((d = maildir_dir_open(md->sub_fd[dirs[k]])) == NULL)
			return -1;
		while ((de = readdir(d)) != NULL) {
			if (!md_name_has_base(de->d_name, m->name,
					      m->base_len) ||
			    !maildir_dir_is_msg(md->sub_fd[dirs[k]], de,
					      &st_size))
				continue;
			if ((name = strdup(de->d_name)) == NULL) {
				closedir(d);
				errno = ENOMEM;
				return -1;
			}
			closedir(d);
			if (m->name_owned)
				free(m->name);
			m->name = name;
			m->name_owned = true;
			m->dir = dirs[k];
			return 1;
		}
		closedir(d);
	}
	return 0;
}

/*
 * new/ and cur/ stay open only while they are used (the listing, opening
 * one message, UPDATE): a logged-in session holds two descriptors (the
 * Maildir and the lock) besides its socket, not four, which matters with
 * thousands of sessions per mail process.
 */
static void md_subdirs_close(struct maildrop *md)
{
	for (int d = 0; d < 2; d++) {
		if (md->sub_fd[d] >= 0)
			close(md->sub_fd[d]);
		md->sub_fd[d] = -1;
	}
}

static int md_subdirs_open(struct maildrop *md)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

	for (int d = 0; d < 2; d++) {
		if (md->sub_fd[d] >= 0)
			continue;
		md->sub_fd[d] = openat(md->dir_fd, md_subdir[d], flags);
		if (md->sub_fd[d] < 0) {
			int err = errno;
			md_subdirs_close(md);
			errno = err;
			return -1;
		}
	}
	return 0;
}

static int md_open_message_in(struct maildrop *md, size_t index, int *fd_r,
			      enum maildrop_status *status_r,
			      const char **error_r)
{
	struct maildrop_msg *m;
	struct stat st;
	int fd = -1, r;

	if (index >= md->count || md->m[index].removed) {
		*status_r = MAILDROP_PERMFAIL;
		*error_r = "no such message";
		return -1;
	}
	m = &md->m[index];
	for (int tries = 0; tries < MD_REFIND_TRIES && fd < 0; tries++) {
		fd = openat(md->sub_fd[m->dir], m->name,
			    O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK |
				    O_NOCTTY);
		if (fd >= 0 || errno != ENOENT)
			break;
		if ((r = md_refind(md, index)) < 0)
			return md_fail(errno, "find message", status_r, error_r);
		if (r == 0) {
			errno = ENOENT;
			break;
		}
	}
	if (fd < 0) {
		int err = errno;

		md_fail(err, "open message", status_r, error_r);
		if (err == ENOENT || err == ELOOP)
			*status_r = MAILDROP_PERMFAIL; /* gone, or a symlink */
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		*status_r = MAILDROP_PERMFAIL;
		*error_r = "message is not a regular file";
		return -1;
	}
	*fd_r = fd;
	return 0;
}

int maildrop_open_message(struct maildrop *md, size_t index, int *fd_r,
			  enum maildrop_status *status_r, const char **error_r)
{
	if (md_subdirs_open(md) < 0)
		return md_fail(errno, "open new/ or cur/", status_r, error_r);
	int ret = md_open_message_in(md, index, fd_r, status_r, error_r);
	md_subdirs_close(md);
	return ret;
}

/* ---- UPDATE: unlinking, or moving to .Kept ------------------------------ */

/* Unlinks message i, following it if it moved.  0 if it is gone now. */
static int md_remove_one(struct maildrop *md, size_t i)
{
	struct maildrop_msg *m = &md->m[i];
	int r;

	for (int tries = 0; tries < MD_REFIND_TRIES; tries++) {
		if (unlinkat(md->sub_fd[m->dir], m->name, 0) == 0)
			return 0;
		if (errno != ENOENT)
			return -1;
		if ((r = md_refind(md, i)) <= 0)
			return r; /* 0: already gone, counts as removed */
	}
	errno = EAGAIN; /* it keeps moving */
	return -1;
}

/* The .Kept folder while a commit moves messages into it. */
struct md_kept {
	int dir_fd;          /* .Kept */
	int sub_fd[2];       /* .Kept/new, .Kept/cur */
	bool used[2];        /* received a message: to be fsynced */
	int64_t now;         /* the ",K=" time */
};

static const char *const md_kept_subdirs[3] = { "tmp", "new", "cur" };

static void md_kept_close(struct md_kept *k)
{
	for (int d = 0; d < 2; d++) {
		if (k->sub_fd[d] >= 0)
			close(k->sub_fd[d]);
		k->sub_fd[d] = -1;
	}
	if (k->dir_fd >= 0)
		close(k->dir_fd);
	k->dir_fd = -1;
}

/* mkdirat() for which a directory entry already there is success;
   *created is set when it made one. */
static int md_mkdir(int dir_fd, const char *name, bool *created)
{
	if (mkdirat(dir_fd, name, 0700) == 0) {
		*created = true;
		return 0;
	}
	return errno == EEXIST ? 0 : -1;
}

/*
 * The Maildir++ marker ("maildirfolder": this is a folder, not a Maildir
 * of its own), for IMAP servers that read the same Maildir.  Best effort:
 * the messages do not depend on it.
 */
static void md_kept_marker(int kept_fd, bool *created)
{
	const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
			  O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	struct stat st;
	int fd;

	if (fstatat(kept_fd, MD_KEPT_MARKER, &st, AT_SYMLINK_NOFOLLOW) == 0 ||
	    errno != ENOENT)
		return;
	if ((fd = openat(kept_fd, MD_KEPT_MARKER, flags, 0600)) < 0)
		return;
	*created = true;
	close(fd);
}

/*
 * Opens .Kept and its new/ and cur/, creating what is missing (never
 * through a symlink: O_NOFOLLOW refuses one in the place of .Kept or of
 * its subdirectories).  Whatever it created is made durable (fsync of
 * .Kept and of the Maildir) before any message is renamed into it, so a
 * crash cannot take the folder, and the messages in it, away.
 */
static int md_kept_open(struct maildrop *md, struct md_kept *k,
			const char **what_r)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	bool created = false;

	*what_r = "mkdir " RETENTION_KEPT_FOLDER;
	if (md_mkdir(md->dir_fd, RETENTION_KEPT_FOLDER, &created) < 0)
		return -1;
	*what_r = "open " RETENTION_KEPT_FOLDER;
	k->dir_fd = openat(md->dir_fd, RETENTION_KEPT_FOLDER, flags);
	if (k->dir_fd < 0)
		return -1;
	*what_r = "mkdir in " RETENTION_KEPT_FOLDER;
	for (int i = 0; i < 3; i++) {
		if (md_mkdir(k->dir_fd, md_kept_subdirs[i], &created) < 0)
			return -1;
	}
	md_kept_marker(k->dir_fd, &created);
	*what_r = "open " RETENTION_KEPT_FOLDER "/new or cur";
	for (int d = 0; d < 2; d++) {
		k->sub_fd[d] = openat(k->dir_fd, md_subdir[d], flags);
		if (k->sub_fd[d] < 0)
			return -1;
	}
	*what_r = "fsync " RETENTION_KEPT_FOLDER;
	if (created && (fsync(k->dir_fd) < 0 || fsync(md->dir_fd) < 0))
		return -1;
	return 0;
}

/*
 * Renames message i into .Kept under its kept name for time `when`, never
 * over an existing file.  Returns 0 when done, 1 if that name is taken,
 * -1 with errno (ENOENT: the message, or the target directory, is gone).
 */
static int md_kept_rename(struct maildrop *md, size_t i, struct md_kept *k,
			  int64_t when)
{
	const struct maildrop_msg *m = &md->m[i];
	int from = md->sub_fd[m->dir], to = k->sub_fd[m->dir];
	char name[RETENTION_NAME_MAX + 1];
	struct stat st;

	if (retention_kept_name(m->name, strlen(m->name), when, name,
				sizeof(name)) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (renameat2(from, m->name, to, name, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno == EEXIST)
		return 1;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* A file system without RENAME_NOREPLACE: look first.  Only the
	   holder of the maildrop lock moves messages into .Kept. */
	if (fstatat(to, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	if (errno != ENOENT)
		return -1;
	return renameat(from, m->name, to, name);
}

/* Moves message i into .Kept, following it if another agent renamed it.
   0 if it is out of the maildrop now (moved, or already gone). */
static int md_keep_one(struct maildrop *md, size_t i, struct md_kept *k)
{
	int64_t when = k->now;
	int refinds = 0, r;

	for (int tries = 0; tries < MD_KEPT_NAME_TRIES + MD_REFIND_TRIES;
	     tries++) {
		r = md_kept_rename(md, i, k, when);
		if (r == 0) {
			k->used[md->m[i].dir] = true;
			return 0;
		}
		if (r == 1) {
			when++; /* the name is taken: the next second's */
			continue;
		}
		if (errno != ENOENT || ++refinds > MD_REFIND_TRIES)
			return -1;
		if ((r = md_refind(md, i)) <= 0)
			return r; /* 0: already gone, counts as removed */
	}
	errno = EAGAIN;
	return -1;
}

/* fsync of the directories that UPDATE changed: new/ and cur/ always, the
   .Kept ones that received messages. */
static int md_commit_sync(struct maildrop *md, const struct md_kept *kept,
			  const char **error_r)
{
	int ret = 0;

	for (int d = 0; d < 2; d++) {
		if (fsync(md->sub_fd[d]) < 0 && ret == 0) {
			*error_r = md_errno_text("fsync", errno);
			ret = -1;
		}
	}
	for (int d = 0; kept != NULL && d < 2; d++) {
		if (kept->used[d] && fsync(kept->sub_fd[d]) < 0 && ret == 0) {
			*error_r = md_errno_text("fsync " RETENTION_KEPT_FOLDER,
						 errno);
			ret = -1;
		}
	}
	return ret;
}

/* Removes (kept == NULL) or moves to .Kept every marked message. */
static int md_commit_in(struct maildrop *md, const uint8_t *deleted,
			struct md_kept *kept, size_t *removed_r,
			const char **error_r)
{
	struct maildrop_cache_header hdr = { 0, 0, 0 };
	size_t removed = 0;
	int ret = 0;

	for (size_t i = 0; i < md->count; i++) {
		if (deleted[i] == 0 || md->m[i].removed)
			continue;
		if ((kept != NULL ? md_keep_one(md, i, kept) :
				    md_remove_one(md, i)) < 0) {
			if (ret == 0)
				*error_r = md_errno_text(kept != NULL ?
					"move to " RETENTION_KEPT_FOLDER :
					"unlink", errno);
			ret = -1;
			continue;
		}
		md->m[i].removed = true;
		removed++;
	}
	*removed_r = removed;
	if (removed == 0)
		return ret;
	if (md_commit_sync(md, kept, error_r) < 0)
		ret = -1;
	/* Unknown mtimes: the next open rescans (our unlinks changed the
	   directories, and a delivery may have raced with them). */
	hdr.scan_ns = md_now_ns();
	md_write_cache_logged(md, &hdr);
	return ret;
}

int maildrop_commit(struct maildrop *md, const uint8_t *deleted,
		    size_t *removed_r, const char **error_r)
{
	*removed_r = 0;
	if (md_subdirs_open(md) < 0) {
		*error_r = md_errno_text("open new/ or cur/", errno);
		return -1;
	}
	int ret = md_commit_in(md, deleted, NULL, removed_r, error_r);
	md_subdirs_close(md);
	return ret;
}

static bool md_any_marked(const struct maildrop *md, const uint8_t *deleted)
{
	for (size_t i = 0; i < md->count; i++) {
		if (deleted[i] != 0 && !md->m[i].removed)
			return true;
	}
	return false;
}

int maildrop_commit_keep(struct maildrop *md, const uint8_t *deleted,
			 int64_t now, size_t *removed_r, const char **error_r)
{
	struct md_kept kept = { -1, { -1, -1 }, { false, false }, now };
	const char *what;
	int ret = -1;

	*removed_r = 0;
	if (!md_any_marked(md, deleted))
		return 0; /* no folder made for nothing */
	if (md_subdirs_open(md) < 0)
		*error_r = md_errno_text("open new/ or cur/", errno);
	else if (md_kept_open(md, &kept, &what) < 0)
		*error_r = md_errno_text(what, errno);
	else
		ret = md_commit_in(md, deleted, &kept, removed_r, error_r);
	md_kept_close(&kept);
	md_subdirs_close(md);
	return ret;
}

/* ---- what `popbox expire` reads and removes ---------------------------- */

/* Stats message i, following it if it moved: 0 with *st, 1 if it is gone
   or no regular file (then never removed), -1 with errno. */
static int md_stat_one(struct maildrop *md, size_t i, struct stat *st)
{
	const struct maildrop_msg *m = &md->m[i];
	int r;

	for (int tries = 0; tries < MD_REFIND_TRIES; tries++) {
		if (fstatat(md->sub_fd[m->dir], m->name, st,
			    AT_SYMLINK_NOFOLLOW) == 0)
			return S_ISREG(st->st_mode) ? 0 : 1;
		if (errno != ENOENT)
			return -1;
		if ((r = md_refind(md, i)) <= 0)
			return r < 0 ? -1 : 1;
	}
	return 1; /* it keeps moving: left alone */
}

int maildrop_file_info(struct maildrop *md, struct maildrop_file_info *info,
		       const char **error_r)
{
	struct stat st;
	int ret = 0, r;

	if (md_subdirs_open(md) < 0) {
		*error_r = md_errno_text("open new/ or cur/", errno);
		return -1;
	}
	for (size_t i = 0; i < md->count; i++) {
		memset(&info[i], 0, sizeof(info[i]));
		if (md->m[i].removed)
			continue;
		if ((r = md_stat_one(md, i, &st)) < 0) {
			*error_r = md_errno_text("stat message", errno);
			ret = -1;
			break;
		}
		if (r == 0) {
			info[i].present = true;
			info[i].mtime = (int64_t)st.st_mtim.tv_sec;
			info[i].size = (uint64_t)st.st_size;
		}
	}
	md_subdirs_close(md);
	return ret;
}

/* Is the kept file `name` due for removal? */
static bool md_kept_due(const char *name, size_t len, int64_t now,
			const struct user_policy *pol)
{
	int64_t since;

	return retention_kept_since(name, len, &since) &&
	       retention_due(RETENTION_KEPT, since, now, pol);
}

/* Removes the due files of one .Kept subdirectory (names collected first,
   so no directory is changed while it is read). */
static int md_expire_kept_dir(int dir_fd, int64_t now,
			      const struct user_policy *pol, bool dry_run,
			      struct maildrop_kept_counts *c,
			      const char **what_r)
{
	struct md_scan s = { 0 };
	size_t removed = 0;
	struct stat st;
	int ret = 0, err = 0;

	if (md_scan_dir(&s, dir_fd, 0, what_r) < 0) {
		err = errno;
		ret = -1;
	}
	for (size_t i = 0; i < s.count && ret == 0; i++) {
		const char *name = s.names + s.ents[i].off;

		if (!md_kept_due(name, s.ents[i].len, now, pol) ||
		    fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue; /* kept, or gone meanwhile */
		if (!dry_run && unlinkat(dir_fd, name, 0) < 0) {
			if (errno == ENOENT)
				continue;
			err = errno;
			*what_r = "unlink";
			ret = -1;
			break;
		}
		c->messages++;
		c->bytes += (uint64_t)st.st_size;
		removed++;
	}
	if (removed > 0 && !dry_run && fsync(dir_fd) < 0 && ret == 0) {
		err = errno;
		*what_r = "fsync";
		ret = -1;
	}
	free(s.ents);
	free(s.names);
	errno = err;
	return ret;
}

int maildrop_expire_kept(struct maildrop *md, int64_t now, int32_t keep_days,
			 bool dry_run, struct maildrop_kept_counts *counts_r,
			 const char **error_r)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	struct user_policy pol;
	const char *what = "open " RETENTION_KEPT_FOLDER;
	int kept_fd, fd, ret = 0;

	memset(counts_r, 0, sizeof(*counts_r));
	user_policy_init(&pol);
	pol.keep_days = keep_days;
	if ((kept_fd = openat(md->dir_fd, RETENTION_KEPT_FOLDER, flags)) < 0) {
		if (errno == ENOENT)
			return 0;
		*error_r = md_errno_text(what, errno);
		return -1;
	}
	for (int d = 0; d < 2 && ret == 0; d++) {
		what = "open " RETENTION_KEPT_FOLDER "/new or cur";
		if ((fd = openat(kept_fd, md_subdir[d], flags)) < 0) {
			if (errno == ENOENT)
				continue;
			ret = -1;
		} else {
			ret = md_expire_kept_dir(fd, now, &pol, dry_run,
						 counts_r, &what);
			int err = errno;
			close(fd);
			errno = err;
		}
		if (ret < 0)
			*error_r = md_errno_text(what, errno);
	}
	close(kept_fd);
	return ret;
}
