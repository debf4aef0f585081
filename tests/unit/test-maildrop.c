/*
 * test-maildrop.c — the maildrop on real temporary Maildirs.
 *
 * Each test gets a fresh Maildir under /tmp (removed afterwards) and checks
 * what a POP3 session would see: listing, sizes, UIDLs, order, locking
 * (same process, forked child, killed holder), LOGIN-DELAY, reading and
 * committing while another agent moves mail, hostile cache files (every
 * truncation, out-of-bound lengths, garbage, symlinks, hard links, FIFOs,
 * sockets, devices, directories, other owners, oversize), and lock files
 * and message names that are not regular files.  Retention: UPDATE that
 * moves DELEted messages to .Kept, the file facts and the .Kept scan that
 * `popbox expire` uses, and the admin's open that is no login.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "maildrop-cache.h"
#include "maildrop.h"
#include "retention.h"
#include "wire.h"

#include "tmpdir-fixture.h"

struct fixture {
	char path[64];
	char buf[512];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->path, sizeof(f->path), "popbox-test");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	tmpdir_remove(f->path);
	free(f);
	return 0;
}

/* f->path + "/" + rel, in f->buf. */
static const char *P(struct fixture *f, const char *rel)
{
	snprintf(f->buf, sizeof(f->buf), "%s/%s", f->path, rel);
	return f->buf;
}

static void put_file(struct fixture *f, const char *rel, const void *data,
		     size_t len)
{
	int fd = open(P(f, rel), O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void put(struct fixture *f, const char *rel, const char *text)
{
	put_file(f, rel, text, strlen(text));
}

static bool exists(struct fixture *f, const char *rel)
{
	struct stat st;

	return lstat(P(f, rel), &st) == 0;
}

static void mkmaildir(struct fixture *f)
{
	assert_int_equal(mkdir(P(f, "new"), 0700), 0);
	assert_int_equal(mkdir(P(f, "cur"), 0700), 0);
	assert_int_equal(mkdir(P(f, "tmp"), 0700), 0);
}

static void mv(struct fixture *f, const char *from, const char *to)
{
	char a[512];

	snprintf(a, sizeof(a), "%s", P(f, from));
	assert_int_equal(rename(a, P(f, to)), 0);
}

/* Sets the mtimes of new/ and cur/ to secs_ago seconds in the past, so a
   cache written now is eligible for the fast path. */
static void age_dirs(struct fixture *f, int secs_ago)
{
	struct timespec ts[2];

	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= secs_ago;
	ts[1] = ts[0];
	assert_int_equal(utimensat(AT_FDCWD, P(f, "new"), ts, 0), 0);
	assert_int_equal(utimensat(AT_FDCWD, P(f, "cur"), ts, 0), 0);
}

static struct maildrop *md_open_ok(struct fixture *f, unsigned int delay)
{
	struct maildrop_settings set = { .login_delay = delay };
	enum maildrop_status st = MAILDROP_TEMPFAIL;
	struct maildrop *md = NULL;
	const char *error = NULL;

	if (maildrop_open(f->path, &set, &md, &st, &error) < 0)
		fail_msg("open failed: %d %s", st, error);
	assert_int_equal(st, MAILDROP_OK);
	return md;
}

static enum maildrop_status md_open_status(struct fixture *f,
					   unsigned int delay)
{
	struct maildrop_settings set = { .login_delay = delay };
	enum maildrop_status st = MAILDROP_OK;
	struct maildrop *md = NULL;
	const char *error = NULL;

	if (maildrop_open(f->path, &set, &md, &st, &error) == 0) {
		maildrop_close(&md);
		return MAILDROP_OK;
	}
	assert_null(md);
	assert_non_null(error);
	return st;
}

/* "uidl=size uidl=size ..." of the listing, in order. */
static char *listing(struct maildrop *md)
{
	static char out[8192];
	size_t n, o = 0;
	const struct mailmsg *msgs = maildrop_list(md, &n);

	out[0] = '\0';
	for (size_t i = 0; i < n; i++)
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s=%llu",
				      i ? " " : "", msgs[i].uidl,
				      (unsigned long long)msgs[i].wire_size);
	return out;
}

static char *read_msg(struct maildrop *md, size_t i)
{
	static char out[4096];
	enum maildrop_status st;
	const char *error;
	ssize_t n;
	int fd;

	assert_int_equal(maildrop_open_message(md, i, &fd, &st, &error), 0);
	n = read(fd, out, sizeof(out) - 1);
	assert_true(n >= 0);
	out[n] = '\0';
	close(fd);
	return out;
}

#define POSTFIX "1700000000.V801I1a2bM345678.mail.example.org"
#define DOVECOT "1700000001.M123456P789.host,S=12,W=15"
#define COURIER "1700000002.M1P2_3.host,S=5"

/* Three styles of names; sizes from the file, from ",W=", and both. */
static void test_list_styles(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/" POSTFIX, "a\nbb\n");                   /* 7 on the wire */
	put(f, "cur/" DOVECOT ":2,S", "Subj: x\n\nhi\n");    /* 12 bytes */
	put(f, "cur/" COURIER ":2,", "a\r\nb");              /* 6 */
	md = md_open_ok(f, 0);
	/* Sorted by base name on first sight; size from ,W= for Dovecot. */
	assert_string_equal(listing(md), POSTFIX "=7 " DOVECOT "=15 "
				 "1700000002.M1P2_3.host,S=5=6");
	assert_string_equal(read_msg(md, 1), "Subj: x\n\nhi\n");
	maildrop_close(&md);
	assert_null(md);
	/* Again from the cache the first open wrote. */
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), POSTFIX "=7 " DOVECOT "=15 "
				 "1700000002.M1P2_3.host,S=5=6");
	maildrop_close(&md);
}

/* ",W=" is trusted as is, unless it contradicts ",S=". */
static void test_wire_field(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/a,W=500", "x\n");             /* trusted: 500 */
	put(f, "new/b,S=10,W=5", "0123456789");   /* W < S: read: 12 */
	put(f, "new/c,S=2,W=4", "x\n");           /* consistent: 4 */
	put(f, "new/d,S=2,W=7", "x\n");           /* W > 2S+2: read: 3 */
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md),
			    "a,W=500=500 b,S=10,W=5=12 c,S=2,W=4=4 d,S=2,W=7=3");
	maildrop_close(&md);
}

static void test_empty_and_created_dirs(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;
	size_t n;

	/* No new/ cur/ tmp/ at all: created. */
	md = md_open_ok(f, 0);
	maildrop_list(md, &n);
	assert_int_equal(n, 0);
	maildrop_close(&md);
	assert_true(exists(f, "new") && exists(f, "cur") && exists(f, "tmp"));
	put(f, "new/m1", "");
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m1=0");
	maildrop_close(&md);
}

static void test_not_a_maildir(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md = NULL;
	enum maildrop_status st;
	const char *error;

	assert_int_equal(maildrop_open(P(f, "missing"), NULL, &md, &st, &error),
			 -1);
	assert_int_equal(st, MAILDROP_PERMFAIL);
	assert_null(md);
	put(f, "file", "x");
	assert_int_equal(maildrop_open(P(f, "file"), NULL, &md, &st, &error),
			 -1);
	assert_int_equal(st, MAILDROP_PERMFAIL);
}

/* UIDLs survive reopen, cache loss, new/ -> cur/ and flag changes. */
static void test_uidl_stable(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;
	char first[8192];

	mkmaildir(f);
	put(f, "new/" POSTFIX, "1\n");
	put(f, "new/" DOVECOT, "Subj: x\n\nhi\n");
	put(f, "new/weird name\twith tab", "3\n");
	put(f, "new/1700000003.x.host", "4\n");
	md = md_open_ok(f, 0);
	snprintf(first, sizeof(first), "%s", listing(md));
	maildrop_close(&md);
	assert_non_null(strstr(first, "~"));  /* the weird name is hashed */

	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), first);
	maildrop_close(&md);

	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), first);
	maildrop_close(&md);

	mv(f, "new/" POSTFIX, "cur/" POSTFIX ":2,S");
	mv(f, "new/weird name\twith tab", "cur/weird name\twith tab:2,RS");
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), first);
	maildrop_close(&md);

	mv(f, "cur/" POSTFIX ":2,S", "cur/" POSTFIX ":2,FS");
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), first);
	maildrop_close(&md);
}

/* Cache order is kept; new mail is appended sorted by name. */
static void test_order_stable(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m5", "5\n");
	put(f, "new/m3", "3\n");
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m3=3 m5=3");
	maildrop_close(&md);
	put(f, "new/m1", "1\n");
	put(f, "cur/m4:2,S", "4\n");
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m3=3 m5=3 m1=3 m4=3");
	maildrop_close(&md);
	assert_int_equal(unlink(P(f, "new/m5")), 0);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m3=3 m1=3 m4=3");
	maildrop_close(&md);
}

static void test_in_use_same_process(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;

	mkmaildir(f);
	md = md_open_ok(f, 0);
	assert_int_equal(md_open_status(f, 0), MAILDROP_IN_USE);
	maildrop_close(&md);
	md = md_open_ok(f, 0);
	maildrop_close(&md);
}

static void test_in_use_forked_child(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;
	int status;
	pid_t pid;

	mkmaildir(f);
	md = md_open_ok(f, 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(md_open_status(f, 0) == MAILDROP_IN_USE ? 0 : 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	maildrop_close(&md);
}

static void test_lock_dies_with_holder(void **state)
{
	struct fixture *f = *state;
	int status, p[2];
	pid_t pid;
	char c;

	mkmaildir(f);
	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct maildrop_settings set = { 0 };
		enum maildrop_status st;
		struct maildrop *md;
		const char *error;

		alarm(60); /* never outlive a failed test */
		if (maildrop_open(f->path, &set, &md, &st, &error) < 0)
			_exit(1);
		(void)write(p[1], "x", 1);
		for (;;)
			pause();
	}
	close(p[1]);
	assert_int_equal(read(p[0], &c, 1), 1);
	close(p[0]);
	assert_int_equal(md_open_status(f, 0), MAILDROP_IN_USE);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(md_open_status(f, 0), MAILDROP_OK);
}

static void set_lock_mtime(struct fixture *f, int secs_ago)
{
	struct timespec ts[2];

	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= secs_ago;
	ts[1] = ts[0];
	assert_int_equal(utimensat(AT_FDCWD, P(f, "popbox.lock"), ts, 0), 0);
}

static void test_login_delay(void **state)
{
	struct fixture *f = *state;

	mkmaildir(f);
	/* First login ever: no delay even though the lock file is new. */
	assert_int_equal(md_open_status(f, 60), MAILDROP_OK);
	assert_int_equal(md_open_status(f, 60), MAILDROP_LOGIN_DELAY);
	/* The refused attempt did not count as a login, nor unlock. */
	set_lock_mtime(f, 59);
	assert_int_equal(md_open_status(f, 60), MAILDROP_LOGIN_DELAY);
	set_lock_mtime(f, 61);
	assert_int_equal(md_open_status(f, 60), MAILDROP_OK);
	/* 0 disables the check. */
	assert_int_equal(md_open_status(f, 0), MAILDROP_OK);
	assert_int_equal(md_open_status(f, 0), MAILDROP_OK);
	/* A last login far in the future (clock stepped back) is ignored. */
	set_lock_mtime(f, -3600);
	assert_int_equal(md_open_status(f, 60), MAILDROP_OK);
}

static void commit(struct maildrop *md, const uint8_t *del, size_t want_removed,
		   int want_ret)
{
	size_t removed = 12345;
	const char *error = NULL;

	assert_int_equal(maildrop_commit(md, del, &removed, &error), want_ret);
	assert_int_equal(removed, want_removed);
}

static void test_commit_marked_only(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 0, 1, 0, 1, 0 };
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	put(f, "new/m1", "1\n");
	put(f, "cur/m2:2,S", "2\n");
	put(f, "cur/m3:2,S", "3\n");
	put(f, "new/m4", "4\n");
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=3 m1=3 m2=3 m3=3 m4=3");
	commit(md, del, 2, 0);
	maildrop_close(&md);
	assert_true(exists(f, "new/m0") && exists(f, "cur/m2:2,S") &&
		    exists(f, "new/m4"));
	assert_false(exists(f, "new/m1") || exists(f, "cur/m3:2,S"));
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=3 m2=3 m4=3");
	maildrop_close(&md);
}

/* Another agent moves marked and unmarked mail during the session. */
static void test_commit_follows_renames(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 1, 0, 1, 1 };
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	put(f, "new/m1", "1\n");
	put(f, "cur/m2:2,", "2\n");
	put(f, "new/m3", "3\n");
	md = md_open_ok(f, 0);
	mv(f, "new/m0", "cur/m0:2,S");         /* marked, moved */
	mv(f, "new/m1", "cur/m1:2,S");         /* unmarked, moved */
	mv(f, "cur/m2:2,", "cur/m2:2,RS");     /* marked, flags changed */
	assert_int_equal(unlink(P(f, "new/m3")), 0); /* marked, gone */
	commit(md, del, 3, 0);
	maildrop_close(&md);
	assert_false(exists(f, "cur/m0:2,S") || exists(f, "cur/m2:2,RS"));
	assert_true(exists(f, "cur/m1:2,S"));
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m1=3");
	maildrop_close(&md);
}

/* Mail delivered after open is neither listed nor touched. */
static void test_late_delivery(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 1, 1 };
	struct maildrop *md;
	size_t n;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	put(f, "new/m1", "1\n");
	md = md_open_ok(f, 0);
	put(f, "new/m2", "late\n");
	put(f, "new/m0x", "late, similar name\n");
	maildrop_list(md, &n);
	assert_int_equal(n, 2);
	commit(md, del, 2, 0);
	maildrop_close(&md);
	assert_true(exists(f, "new/m2") && exists(f, "new/m0x"));
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0x=20 m2=6");
	maildrop_close(&md);
}

static void test_open_message_follows(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;
	enum maildrop_status st;
	const char *error;
	int fd;

	mkmaildir(f);
	put(f, "new/m0", "zero\n");
	put(f, "new/m1", "one\n");
	md = md_open_ok(f, 0);
	mv(f, "new/m0", "cur/m0:2,S");
	assert_string_equal(read_msg(md, 0), "zero\n");
	mv(f, "cur/m0:2,S", "cur/m0:2,RS");
	assert_string_equal(read_msg(md, 0), "zero\n");
	assert_int_equal(unlink(P(f, "new/m1")), 0);
	assert_int_equal(maildrop_open_message(md, 1, &fd, &st, &error), -1);
	assert_int_equal(st, MAILDROP_PERMFAIL);
	assert_int_equal(maildrop_open_message(md, 2, &fd, &st, &error), -1);
	assert_int_equal(st, MAILDROP_PERMFAIL);
	/* Replaced by a symlink: refused. */
	assert_int_equal(unlink(P(f, "cur/m0:2,RS")), 0);
	assert_int_equal(symlink("/etc/passwd", P(f, "cur/m0:2,RS")), 0);
	assert_int_equal(maildrop_open_message(md, 0, &fd, &st, &error), -1);
	assert_int_equal(st, MAILDROP_PERMFAIL);
	maildrop_close(&md);
}

/* Symlinks, directories, dot files and tmp/ are not messages. */
static void test_skips_non_messages(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/real", "r\n");
	put(f, "outside", "secret\n");
	assert_int_equal(symlink("../outside", P(f, "new/link")), 0);
	/* A symlink whose name carries ",W=" (no read needed to size it). */
	assert_int_equal(symlink("../outside", P(f, "new/link2,S=7,W=8")), 0);
	assert_int_equal(symlink("../outside", P(f, "cur/link3,W=8:2,S")), 0);
	assert_int_equal(symlink("/nonexistent", P(f, "cur/dangling:2,")), 0);
	assert_int_equal(mkdir(P(f, "new/adir"), 0700), 0);
	assert_int_equal(mkdir(P(f, "cur/bdir:2,S"), 0700), 0);
	put(f, "cur/.hidden", "h\n");
	put(f, "tmp/intmp", "t\n");
	assert_int_equal(mkfifo(P(f, "new/fifo"), 0600), 0);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "real=3");
	maildrop_close(&md);
}

/* Two files with one base name: one is listed (UIDLs stay unique). */
static void test_duplicate_base(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/x", "1\n");
	put(f, "cur/x:2,S", "1\n");
	put(f, "cur/x:2,RS", "1\n");
	put(f, "cur/y:2,S", "22\n");
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "x=3 y=4");
	maildrop_close(&md);
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "x=3 y=4");
	maildrop_close(&md);
	/* One more copy while the cache knows x: still listed once. */
	put(f, "cur/x:2,FS", "1\n");
	put(f, "cur/y:2,RS", "22\n");
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "x=3 y=4");
	assert_string_equal(read_msg(md, 0), "1\n");
	maildrop_close(&md);
}

/* Writes a cache file with the given header and entries. */
static void write_cache(struct fixture *f, const struct maildrop_cache_header *h,
			const struct maildrop_cache_item *items, size_t n)
{
	const char *error;
	uint8_t *buf;
	size_t len;

	assert_int_equal(maildrop_cache_format(h, items, n, &buf, &len, &error),
			 0);
	put_file(f, "popbox.cache", buf, len);
	free(buf);
}

static int64_t mtime_ns(struct fixture *f, const char *rel)
{
	struct stat st;

	assert_int_equal(stat(P(f, rel), &st), 0);
	return (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

/* With current, aged mtimes the cache alone is the listing; otherwise the
   directories are read. */
static void test_fast_path_rules(void **state)
{
	struct fixture *f = *state;
	struct maildrop_cache_item items[] = {
		{ "m0", 2, 4242, MAILDROP_CACHE_DIR_NEW },
		{ "ghost:2,S", 9, 7, MAILDROP_CACHE_DIR_CUR },
	};
	struct maildrop_cache_header h;
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	age_dirs(f, 10);
	h.new_mtime_ns = mtime_ns(f, "new");
	h.cur_mtime_ns = mtime_ns(f, "cur");
	h.scan_ns = h.new_mtime_ns + 3000000000LL;
	write_cache(f, &h, items, 2);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=4242 ghost=7"); /* fast path */
	maildrop_close(&md);

	/* Scanned less than 2 s after the mtimes: not trusted. */
	h.scan_ns = h.new_mtime_ns + 1000000000LL;
	write_cache(f, &h, items, 2);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=4242");  /* sizes still reused */
	maildrop_close(&md);
	/* That scan rewrote the cache; it is now eligible: no ghost. */
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=4242");
	maildrop_close(&md);

	/* Only cur/ old enough: scanned. */
	h.scan_ns = h.cur_mtime_ns + 3000000000LL;
	h.new_mtime_ns = h.scan_ns - 1000000000LL;
	{
		struct timespec ts[2] = {
			{ h.new_mtime_ns / 1000000000LL,
			  h.new_mtime_ns % 1000000000LL },
			{ h.new_mtime_ns / 1000000000LL,
			  h.new_mtime_ns % 1000000000LL } };
		assert_int_equal(utimensat(AT_FDCWD, P(f, "new"), ts, 0), 0);
	}
	write_cache(f, &h, items, 2);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=4242");
	maildrop_close(&md);
	age_dirs(f, 10);
	h.new_mtime_ns = mtime_ns(f, "new");
	h.cur_mtime_ns = mtime_ns(f, "cur");

	/* mtimes differ: scanned. */
	h.scan_ns = h.new_mtime_ns + 3000000000LL;
	h.cur_mtime_ns -= 1;
	write_cache(f, &h, items, 2);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=4242");
	maildrop_close(&md);
}

/* A delivery changes new/'s mtime, so an old cache is not used blindly. */
static void test_fast_path_sees_delivery(void **state)
{
	struct fixture *f = *state;
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	age_dirs(f, 10);
	md = md_open_ok(f, 0);
	maildrop_close(&md);
	md = md_open_ok(f, 0);               /* fast path */
	assert_string_equal(listing(md), "m0=3");
	maildrop_close(&md);
	put(f, "new/m1", "11\n");
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=3 m1=4");
	maildrop_close(&md);
	mv(f, "new/m1", "cur/m1:2,S");
	age_dirs(f, 10);
	md = md_open_ok(f, 0);
	maildrop_close(&md);
	assert_int_equal(unlink(P(f, "cur/m1:2,S")), 0);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=3");
	maildrop_close(&md);
}

static const char valid_prefix[] = "popbox-cache 1\n1 1 9999999999999 2\n";

/* Hostile cache files: never trusted, rebuilt, listing right. */
static void test_hostile_caches(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
		"",
		"garbage\n",
		"popbox-cache 2\n1 1 9999999999999 0\nend 0\n",
		/* truncated: no end marker */
		"popbox-cache 1\n1 1 9999999999999 1\nN 7 5 ghost\n",
		/* huge length */
		"popbox-cache 1\n1 1 9999999999999 1\nN 7 99999999999 ghost\nend 1\n",
		"popbox-cache 1\n1 1 9999999999999 1\nN 7 300 ghost\nend 1\n",
		/* huge count */
		"popbox-cache 1\n1 1 9999999999999 4000000000\nend 4000000000\n",
		/* name with '/' */
		"popbox-cache 1\n1 1 9999999999999 1\nN 7 8 ../ghost\nend 1\n",
		"popbox-cache 1\n1 1 9999999999999 1\nN 7 7 a/ghost\nend 1\n",
		/* duplicate base names */
		"popbox-cache 1\n1 1 9999999999999 2\nN 7 5 ghost\nC 7 9 ghost:2,S\n"
		"end 2\n",
		/* count mismatch */
		"popbox-cache 1\n1 1 9999999999999 1\nN 7 5 ghost\nend 2\n",
		/* bad number */
		"popbox-cache 1\n1 1 9999999999999 1\nN -7 5 ghost\nend 1\n",
	};
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	put(f, "outside", valid_prefix);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		age_dirs(f, 10);
		put(f, "popbox.cache", bad[i]);
		md = md_open_ok(f, 0);
		assert_string_equal(listing(md), "m0=3");
		maildrop_close(&md);
	}
	/* A symlink to a file holding a cache listing a ghost. */
	struct maildrop_cache_item ghost = { "ghost", 5, 7, 0 };
	struct maildrop_cache_header h = { mtime_ns(f, "new"),
					   mtime_ns(f, "cur"), 0 };
	h.scan_ns = h.new_mtime_ns + 5000000000LL;
	write_cache(f, &h, &ghost, 1);
	mv(f, "popbox.cache", "outside");
	assert_int_equal(symlink("outside", P(f, "popbox.cache")), 0);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=3");
	maildrop_close(&md);
	/* Replaced by a real file, the symlink target untouched. */
	struct stat st;
	assert_int_equal(lstat(P(f, "popbox.cache"), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	/* An empty directory in its place: listing right, and rebuilt. */
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	assert_int_equal(mkdir(P(f, "popbox.cache"), 0700), 0);
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=3");
	maildrop_close(&md);
	assert_int_equal(lstat(P(f, "popbox.cache"), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	/* A planted symlink as the temp file is not written through. */
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	assert_int_equal(symlink("outside2", P(f, "popbox.cache.tmp")), 0);
	md = md_open_ok(f, 0);
	maildrop_close(&md);
	assert_false(exists(f, "outside2"));
}

/* ---- hostile caches, lock files and messages that are not files -------- */

/* Fails the test instead of hanging it if an open blocks (on a FIFO). */
#define NO_HANG_SECONDS 20

/*
 * "popbox-cache 1\n<new> <cur> <scan> " with the Maildir's real mtimes and
 * a scan time that makes the cache eligible for the fast path: a cache
 * built on it is listed as it stands if it is (wrongly) trusted, so a ghost
 * entry in it shows in the listing.
 */
static void trap_header(struct fixture *f, char *out, size_t size)
{
	int64_t n = mtime_ns(f, "new"), c = mtime_ns(f, "cur");

	snprintf(out, size, "popbox-cache 1\n%lld %lld %lld ", (long long)n,
		 (long long)c, (long long)((n > c ? n : c) + 5000000000LL));
}

/* The bytes of file rel (at most size - 1), NUL-terminated. */
static size_t slurp(struct fixture *f, const char *rel, char *out, size_t size)
{
	int fd = open(P(f, rel), O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, out, size - 1);
	assert_true(n >= 0);
	out[n] = '\0';
	close(fd);
	return (size_t)n;
}

/*
 * popbox.cache was rebuilt: a regular file of ours with one link that
 * maildrop_cache_read accepts and that lists exactly want (names separated
 * by spaces, in order); no temp file is left.
 */
static void assert_cache_rebuilt(struct fixture *f, const char *want)
{
	struct maildrop_cache c;
	const char *error;
	char got[1024];
	struct stat st;
	uint8_t *buf;
	size_t len, o = 0;
	int dfd;

	assert_int_equal(lstat(P(f, "popbox.cache"), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(st.st_uid, geteuid());
	dfd = open(f->path, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	if (maildrop_cache_read(dfd, &buf, &len, &error) < 0)
		fail_msg("rebuilt cache unreadable: %s", error);
	close(dfd);
	if (maildrop_cache_parse(buf, len, &c, &error) < 0)
		fail_msg("rebuilt cache does not parse: %s", error);
	got[0] = '\0';
	for (size_t i = 0; i < c.count; i++) {
		const struct maildrop_cache_entry *e = &c.entries[i];

		o += (size_t)snprintf(got + o, sizeof(got) - o, "%s%.*s",
				      i ? " " : "", (int)e->name_len,
				      (const char *)buf + e->name_off);
	}
	assert_string_equal(got, want);
	maildrop_cache_free(&c);
	free(buf);
	assert_false(exists(f, "popbox.cache.tmp"));
}

/* Opens, checks the listing and that the cache was rebuilt, closes. */
static void open_expect(struct fixture *f, const char *list, const char *cache)
{
	struct maildrop *md;

	alarm(NO_HANG_SECONDS);
	md = md_open_ok(f, 0);
	alarm(0);
	assert_string_equal(listing(md), list);
	maildrop_close(&md);
	if (cache != NULL)
		assert_cache_rebuilt(f, cache);
}

/* Every prefix of a good, fast-path cache: rejected, and rebuilt. */
static void test_cache_every_truncation(void **state)
{
	struct fixture *f = *state;
	char good[4096], want[1024];
	struct maildrop *md;
	size_t len;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	put(f, "new/m1,S=3,W=4", "11\n");
	put(f, "cur/m2:2,S", "222\n");
	put(f, "cur/m3:2,RS", "3333\n");
	age_dirs(f, 10);
	md = md_open_ok(f, 0);
	snprintf(want, sizeof(want), "%s", listing(md));
	maildrop_close(&md);
	assert_string_equal(want, "m0=3 m1,S=3,W=4=4 m2=5 m3=6");
	len = slurp(f, "popbox.cache", good, sizeof(good));
	for (size_t cut = 0; cut < len; cut++) {
		put_file(f, "popbox.cache", good, cut);
		open_expect(f, want, "m0 m1,S=3,W=4 m2:2,S m3:2,RS");
	}
}

/* Length and number fields out of every bound, on a fast-path header. */
static void test_cache_huge_lengths(void **state)
{
	struct fixture *f = *state;
	static const char ghost_ok[] = "1\nN 7 5 ghost\nend 1\n";
	static const struct { const char *s; size_t len; } bad[] = {
#define B(x) { x, sizeof(x) - 1 }
		B("1\nN 7 18446744073709551615 ghost\nend 1\n"),
		B("1\nN 7 18446744073709551616 ghost\nend 1\n"),
		B("1\nN 7 999999999999999999999999999999 ghost\nend 1\n"),
		B("1\nN 7 256 ghost\nend 1\n"),
		B("1\nN 7 200 ghost\nend 1\n"),
		B("1\nN 7 6 ghost\nend 1\n"),
		B("1\nN 7 4 ghost\nend 1\n"),
		B("1\nN 7 0 \nend 1\n"),
		B("1\nN 18446744073709551615 5 ghost\nend 1\n"),
		B("1\nN 18446744073709551616 5 ghost\nend 1\n"),
		B("1\nN 9999999999999999 5 ghost\nend 1\n"),
		B("1000001\nN 7 5 ghost\nend 1000001\n"),
		B("18446744073709551615\nN 7 5 ghost\n"
		  "end 18446744073709551615\n"),
		B("2\nN 7 5 ghost\nend 2\n"),
		B("0\nN 7 5 ghost\nend 0\n"),
		B("1\nN 7 5 ghost\nend 1\n\n"),
		B("1\nN 7 5 ghost\nend 01\nx"),
		B("1\nN 7 6 gh\0ost\nend 1\n"),
		B("1\nN 7 1 .\nend 1\n"),
		B("1\nN 7 8 ../ghost\nend 1\n"),
		B("1\nX 7 5 ghost\nend 1\n"),
		B("1\nN +7 5 ghost\nend 1\n"),
		B("1\nN 7  5 ghost\nend 1\n"),
		B(" 1\nN 7 5 ghost\nend 1\n"),
		B("1\r\nN 7 5 ghost\nend 1\n"),
		B("1\nN 7 5 ghost\r\nend 1\n"),
		B("1\nN 7 5 ghost\nend 1"),
#undef B
	};
	char hdr[128], buf[512];
	size_t hlen;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	age_dirs(f, 10);
	trap_header(f, hdr, sizeof(hdr));
	hlen = strlen(hdr);
	/* The trap works: this well-formed one is trusted, ghost and all. */
	snprintf(buf, sizeof(buf), "%s%s", hdr, ghost_ok);
	put(f, "popbox.cache", buf);
	open_expect(f, "ghost=7", NULL);
	/* Header numbers beyond int64_t. */
	put(f, "popbox.cache", "popbox-cache 1\n9223372036854775808 1 "
			       "9999999999999999999 0\nend 0\n");
	open_expect(f, "m0=3", "m0");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_true(hlen + bad[i].len < sizeof(buf));
		memcpy(buf, hdr, hlen);
		memcpy(buf + hlen, bad[i].s, bad[i].len);
		put_file(f, "popbox.cache", buf, hlen + bad[i].len);
		open_expect(f, "m0=3", "m0");
	}
}

/* Random bytes, some behind a good header: never trusted. */
static void test_cache_garbage(void **state)
{
	struct fixture *f = *state;
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	char hdr[128], buf[600];

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	age_dirs(f, 10);
	trap_header(f, hdr, sizeof(hdr));
	for (int round = 0; round < 200; round++) {
		size_t len = 0, n;

		if (round % 2 == 0) {
			len = strlen(hdr);
			memcpy(buf, hdr, len);
		}
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		n = (size_t)(x % 300);
		for (size_t i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			/* Mostly the cache's own alphabet, to get deeper. */
			buf[len++] = x % 4 == 0 ? (char)(x >> 8) :
				     "0123456789 \nNCend:ghost"[(x >> 8) % 23];
		}
		put_file(f, "popbox.cache", buf, len);
		open_expect(f, "m0=3", "m0");
	}
}

/* Writes a well-formed fast-path cache listing only "ghost" to rel. */
static void put_ghost_cache(struct fixture *f, const char *rel)
{
	char hdr[128], buf[256];

	trap_header(f, hdr, sizeof(hdr));
	snprintf(buf, sizeof(buf), "%s1\nN 7 5 ghost\nend 1\n", hdr);
	put(f, rel, buf);
}

/* maildrop_cache_read refuses the cache with error text containing why. */
static void assert_cache_refused(struct fixture *f, const char *why)
{
	const char *error = NULL;
	uint8_t *buf = NULL;
	size_t len;
	int dfd = open(f->path, O_RDONLY | O_DIRECTORY);

	assert_true(dfd >= 0);
	alarm(NO_HANG_SECONDS);
	errno = 0;
	assert_int_equal(maildrop_cache_read(dfd, &buf, &len, &error), -1);
	assert_int_not_equal(errno, ENOENT);
	alarm(0);
	close(dfd);
	assert_null(buf);
	if (strstr(error, why) == NULL)
		fail_msg("cache refused for \"%s\", expected \"%s\"", error,
			 why);
}

static bool same_file_text(struct fixture *f, const char *rel, const char *text)
{
	char buf[512];

	slurp(f, rel, buf, sizeof(buf));
	return strcmp(buf, text) == 0;
}

/* Anything but a regular file of ours with one link: never read, never
   written through, replaced by a fresh cache. */
static void test_cache_not_a_regular_file(void **state)
{
	struct fixture *f = *state;
	char ghost[256], other[600];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	age_dirs(f, 10);
	put_ghost_cache(f, "ghost-cache");
	slurp(f, "ghost-cache", ghost, sizeof(ghost));
	snprintf(other, sizeof(other), "%s", P(f, "ghost-cache"));

	/* A symlink to a well-formed cache, and to a system file. */
	assert_int_equal(symlink("ghost-cache", P(f, "popbox.cache")), 0);
	assert_cache_refused(f, "symlink");
	open_expect(f, "m0=3", "m0");
	assert_true(same_file_text(f, "ghost-cache", ghost));
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	assert_int_equal(symlink("/etc/passwd", P(f, "popbox.cache")), 0);
	assert_cache_refused(f, "symlink");
	open_expect(f, "m0=3", "m0");
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	assert_int_equal(symlink("nowhere", P(f, "popbox.cache")), 0);
	open_expect(f, "m0=3", "m0");
	assert_false(exists(f, "nowhere"));

	/* A hard link to the same well-formed cache. */
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	assert_int_equal(link(other, P(f, "popbox.cache")), 0);
	assert_cache_refused(f, "more than one link");
	open_expect(f, "m0=3", "m0");
	assert_true(same_file_text(f, "ghost-cache", ghost));
	assert_int_equal(stat(other, &st), 0);
	assert_int_equal(st.st_nlink, 1);

	/* A FIFO: neither the read nor the open may block. */
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	assert_int_equal(mkfifo(P(f, "popbox.cache"), 0600), 0);
	assert_cache_refused(f, "not a regular file");
	open_expect(f, "m0=3", "m0");

	/* A socket. */
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", P(f, "popbox.cache"));
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_cache_refused(f, "not a regular file");
	open_expect(f, "m0=3", "m0");

	/* An empty directory: removed and replaced. */
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	assert_int_equal(mkdir(P(f, "popbox.cache"), 0700), 0);
	assert_cache_refused(f, "not a regular file");
	open_expect(f, "m0=3", "m0");

	/* Larger than the limit (sparse): refused before reading. */
	put_ghost_cache(f, "popbox.cache");
	assert_int_equal(truncate(P(f, "popbox.cache"),
				  (off_t)MAILDROP_CACHE_FILE_MAX + 1), 0);
	assert_cache_refused(f, "larger than the limit");
	open_expect(f, "m0=3", "m0");

	if (geteuid() == 0) {
		/* Owned by someone else. */
		put_ghost_cache(f, "popbox.cache");
		assert_int_equal(chown(P(f, "popbox.cache"), 65534, 65534), 0);
		assert_cache_refused(f, "another user");
		open_expect(f, "m0=3", "m0");
		/* A device: not even opened (/dev/null's numbers). */
		assert_int_equal(unlink(P(f, "popbox.cache")), 0);
		assert_int_equal(mknod(P(f, "popbox.cache"), S_IFCHR | 0600,
				       makedev(1, 3)), 0);
		assert_cache_refused(f, "not a regular file");
		open_expect(f, "m0=3", "m0");
	}

	/* A non-empty directory is not ours to empty: listing still right,
	   its content untouched, no temp file left behind. */
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	assert_int_equal(mkdir(P(f, "popbox.cache"), 0700), 0);
	put(f, "popbox.cache/keep", "keep\n");
	open_expect(f, "m0=3", NULL);
	open_expect(f, "m0=3", NULL);
	assert_true(same_file_text(f, "popbox.cache/keep", "keep\n"));
	assert_false(exists(f, "popbox.cache.tmp"));
	assert_int_equal(unlink(P(f, "popbox.cache/keep")), 0);
	assert_int_equal(rmdir(P(f, "popbox.cache")), 0);

	/* The temp file's place: an empty directory or a FIFO is cleared. */
	assert_int_equal(mkdir(P(f, "popbox.cache.tmp"), 0700), 0);
	open_expect(f, "m0=3", "m0");
	assert_int_equal(unlink(P(f, "popbox.cache")), 0);
	assert_int_equal(mkfifo(P(f, "popbox.cache.tmp"), 0600), 0);
	open_expect(f, "m0=3", "m0");
}

/* popbox.lock must be a regular file: anything else refuses the login
   without blocking and without touching what it points to. */
static void test_lock_file_not_regular(void **state)
{
	struct fixture *f = *state;
	struct timespec old[2] = { { 1000000000, 0 }, { 1000000000, 0 } };
	struct stat st;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	put(f, "target", "target\n");
	assert_int_equal(utimensat(AT_FDCWD, P(f, "target"), old, 0), 0);
	assert_int_equal(symlink("target", P(f, "popbox.lock")), 0);
	alarm(NO_HANG_SECONDS);
	assert_int_equal(md_open_status(f, 0), MAILDROP_PERMFAIL);
	assert_int_equal(stat(P(f, "target"), &st), 0);
	assert_int_equal(st.st_mtim.tv_sec, 1000000000);
	assert_true(same_file_text(f, "target", "target\n"));
	assert_int_equal(unlink(P(f, "popbox.lock")), 0);

	assert_int_equal(symlink("nowhere", P(f, "popbox.lock")), 0);
	assert_int_equal(md_open_status(f, 0), MAILDROP_PERMFAIL);
	assert_false(exists(f, "nowhere"));
	assert_int_equal(unlink(P(f, "popbox.lock")), 0);

	assert_int_equal(mkfifo(P(f, "popbox.lock"), 0600), 0);
	assert_int_equal(md_open_status(f, 0), MAILDROP_PERMFAIL);
	assert_int_equal(unlink(P(f, "popbox.lock")), 0);

	assert_int_equal(mkdir(P(f, "popbox.lock"), 0700), 0);
	assert_int_equal(md_open_status(f, 0), MAILDROP_PERMFAIL);
	assert_int_equal(rmdir(P(f, "popbox.lock")), 0);

	if (geteuid() == 0) {
		assert_int_equal(mknod(P(f, "popbox.lock"), S_IFCHR | 0600,
				       makedev(1, 3)), 0);
		assert_int_equal(md_open_status(f, 0), MAILDROP_PERMFAIL);
		assert_int_equal(unlink(P(f, "popbox.lock")), 0);
	}
	alarm(0);
	/* Once the admin clears it, a fresh lock file is made. */
	assert_int_equal(md_open_status(f, 0), MAILDROP_OK);
	assert_int_equal(lstat(P(f, "popbox.lock"), &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

/* A message moved by another agent is found again among regular files
   only: a symlink, FIFO or directory with its base name neither hides it
   nor is removed in its place. */
static void test_refind_regular_only(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 1, 0 };
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "zero\n");
	put(f, "new/m1", "one\n");
	put(f, "outside", "secret\n");
	md = md_open_ok(f, 0);
	mv(f, "new/m0", "new/m0:2,S");
	/* Made after the real one, so a readdir may well list them first. */
	assert_int_equal(symlink("../outside", P(f, "cur/m0:2,T")), 0);
	assert_int_equal(mkfifo(P(f, "cur/m0:2,F"), 0600), 0);
	assert_int_equal(mkdir(P(f, "cur/m0:2,D"), 0700), 0);
	assert_int_equal(symlink("../outside", P(f, "new/m0:2,U")), 0);
	alarm(NO_HANG_SECONDS);
	assert_string_equal(read_msg(md, 0), "zero\n");
	mv(f, "new/m0:2,S", "new/m0:2,RS");  /* and again before UPDATE */
	commit(md, del, 1, 0);
	alarm(0);
	maildrop_close(&md);
	assert_false(exists(f, "new/m0:2,RS"));
	assert_true(exists(f, "cur/m0:2,T") && exists(f, "cur/m0:2,F") &&
		    exists(f, "cur/m0:2,D") && exists(f, "new/m0:2,U") &&
		    exists(f, "new/m1"));
	assert_true(same_file_text(f, "outside", "secret\n"));
}

/* On the fast path a cached name may have become a FIFO, a symlink or a
   directory since: listed (the cache is current), but never opened as a
   message, and nothing blocks. */
static void test_fast_path_name_not_a_file(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 1, 0 };
	struct timespec ts[2][2];
	enum maildrop_status st;
	struct maildrop *md;
	const char *error;
	int fd;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	put(f, "new/m1", "1\n");
	age_dirs(f, 10);
	md = md_open_ok(f, 0);
	maildrop_close(&md);
	for (int kind = 0; kind < 3; kind++) {
		struct stat sb;

		assert_int_equal(stat(P(f, "new"), &sb), 0);
		ts[0][0] = ts[0][1] = sb.st_mtim;
		assert_int_equal(stat(P(f, "cur"), &sb), 0);
		ts[1][0] = ts[1][1] = sb.st_mtim;
		assert_int_equal(unlink(P(f, "new/m1")), 0);
		if (kind == 0)
			assert_int_equal(mkfifo(P(f, "new/m1"), 0600), 0);
		else if (kind == 1)
			assert_int_equal(symlink("/etc/passwd", P(f, "new/m1")), 0);
		else
			assert_int_equal(mkdir(P(f, "new/m1"), 0700), 0);
		/* As if it had always been so: the cache stays current. */
		assert_int_equal(utimensat(AT_FDCWD, P(f, "new"), ts[0], 0), 0);
		assert_int_equal(utimensat(AT_FDCWD, P(f, "cur"), ts[1], 0), 0);
		alarm(NO_HANG_SECONDS);
		md = md_open_ok(f, 0);
		assert_string_equal(listing(md), "m0=3 m1=3");
		assert_int_equal(maildrop_open_message(md, 1, &fd, &st, &error),
				 -1);
		assert_int_equal(st, MAILDROP_PERMFAIL);
		assert_string_equal(read_msg(md, 0), "0\n");
		alarm(0);
		maildrop_close(&md);
		if (kind == 2)
			assert_int_equal(rmdir(P(f, "new/m1")), 0);
		else
			assert_int_equal(unlink(P(f, "new/m1")), 0);
		put(f, "new/m1", "1\n");
		age_dirs(f, 10);
		md = md_open_ok(f, 0);
		maildrop_close(&md);
	}
	/* And a commit in that state removes only what was marked. */
	md = md_open_ok(f, 0);
	commit(md, del, 1, 0);
	maildrop_close(&md);
	assert_false(exists(f, "new/m0"));
	assert_true(exists(f, "new/m1"));
}

/* The whole cache round trip, and every truncation of it is rejected. */
static void test_cache_format_parse(void **state)
{
	struct maildrop_cache_item items[] = {
		{ "a", 1, 0, MAILDROP_CACHE_DIR_NEW },
		{ "b:2,S", 5, 281474976710656ULL, MAILDROP_CACHE_DIR_CUR },
		{ "line\nbreak", 10, 12, MAILDROP_CACHE_DIR_CUR },
		{ "sp ace:2,", 9, 3, MAILDROP_CACHE_DIR_NEW },
	};
	struct maildrop_cache_header h = { 1700000000123456789LL, 1, 2 };
	struct maildrop_cache c;
	const char *error;
	uint8_t *buf;
	size_t len, idx;

	(void)state;
	assert_int_equal(maildrop_cache_format(&h, items, 4, &buf, &len, &error),
			 0);
	assert_int_equal(maildrop_cache_parse(buf, len, &c, &error), 0);
	assert_int_equal(c.count, 4);
	assert_int_equal(c.hdr.new_mtime_ns, h.new_mtime_ns);
	assert_int_equal(c.hdr.cur_mtime_ns, 1);
	assert_int_equal(c.hdr.scan_ns, 2);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(c.entries[i].name_len, items[i].name_len);
		assert_memory_equal(buf + c.entries[i].name_off, items[i].name,
				    items[i].name_len);
		assert_int_equal(c.entries[i].wire_size, items[i].wire_size);
		assert_int_equal(c.entries[i].dir, items[i].dir);
	}
	assert_int_equal(c.entries[1].base_len, 1);
	assert_true(maildrop_cache_lookup(&c, "sp ace", 6, &idx));
	assert_int_equal(idx, 3);
	assert_false(maildrop_cache_lookup(&c, "sp", 2, &idx));
	maildrop_cache_free(&c);
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(maildrop_cache_parse(buf, cut, &c, &error), -1);
	/* Trailing garbage too. */
	uint8_t *more = malloc(len + 1);
	memcpy(more, buf, len);
	more[len] = '\n';
	assert_int_equal(maildrop_cache_parse(more, len + 1, &c, &error), -1);
	free(more);
	free(buf);
	/* Bad items are refused by the formatter. */
	struct maildrop_cache_item slash = { "a/b", 3, 1, 0 };
	assert_int_equal(maildrop_cache_format(&h, &slash, 1, &buf, &len,
					       &error), -1);
}

/* The size computed from a file equals the encoder's un-stuffed output. */
static void test_size_matches_encoder(void **state)
{
	struct fixture *f = *state;
	static const char body[] = "H: x\r\n\n.dot\rcr\n\0nul\n\r";
	uint8_t out[WIRE_ENCODE_MAX(sizeof(body)) + WIRE_FINISH_MAX];
	struct wire_encoder enc;
	struct maildrop *md;
	size_t n, o, dots = 0;

	mkmaildir(f);
	put_file(f, "new/m", body, sizeof(body) - 1);
	md = md_open_ok(f, 0);
	const struct mailmsg *msgs = maildrop_list(md, &n);
	/* 21 bytes; 3 LFs without CR gain one each; the final bare CR gets
	   CRLF: 21 + 3 + 2 = 26 */
	assert_int_equal(msgs[0].wire_size, 26);
	wire_encoder_init(&enc, -1);
	o = wire_encode(&enc, body, sizeof(body) - 1, out);
	o += wire_encode_finish(&enc, out + o);
	for (size_t i = 0; i + 1 < o; i++)
		dots += out[i] == '.' && (i == 0 || out[i - 1] == '\n');
	/* one stuffed dot (".dot") plus the terminator's; minus ".\r\n" */
	assert_int_equal(dots, 2);
	assert_int_equal(msgs[0].wire_size, o - 3 - 1);
	maildrop_close(&md);
}

/* ---- retention: UPDATE into .Kept, file facts, the .Kept scan ---- */

#define KEEP_NOW 1700000123

static void commit_keep(struct maildrop *md, const uint8_t *del, int64_t now,
			size_t want_removed, int want_ret)
{
	size_t removed = 12345;
	const char *error = NULL;

	assert_int_equal(maildrop_commit_keep(md, del, now, &removed, &error),
			 want_ret);
	assert_int_equal(removed, want_removed);
	if (want_ret < 0)
		assert_non_null(error);
}

static time_t mtime_of(struct fixture *f, const char *rel)
{
	struct stat st;

	assert_int_equal(lstat(P(f, rel), &st), 0);
	return st.st_mtime;
}

static void set_mtime(struct fixture *f, const char *rel, time_t t)
{
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };

	assert_int_equal(utimensat(AT_FDCWD, P(f, rel), ts,
				   AT_SYMLINK_NOFOLLOW), 0);
}

static void test_commit_keep_moves_marked(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 0, 1, 0, 1 };
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	put(f, "new/m1,S=2", "1\n");
	put(f, "cur/m2:2,S", "2\n");
	put(f, "cur/m3:2,RS", "3\n");
	set_mtime(f, "new/m1,S=2", 1600000000);
	set_mtime(f, "cur/m3:2,RS", 1600000001);
	md = md_open_ok(f, 0);
	commit_keep(md, del, KEEP_NOW, 2, 0);
	maildrop_close(&md);
	/* Out of the maildrop, into the folder, K= added, mtime kept. */
	assert_false(exists(f, "new/m1,S=2") || exists(f, "cur/m3:2,RS"));
	assert_true(exists(f, "new/m0") && exists(f, "cur/m2:2,S"));
	assert_int_equal(mtime_of(f, ".Kept/new/m1,S=2,K=1700000123"),
			 1600000000);
	assert_int_equal(mtime_of(f, ".Kept/cur/m3,K=1700000123:2,RS"),
			 1600000001);
	assert_true(exists(f, ".Kept/tmp") && exists(f, ".Kept/maildirfolder"));
	md = md_open_ok(f, 0);
	assert_string_equal(listing(md), "m0=3 m2=3");
	maildrop_close(&md);
}

static void test_commit_keep_nothing_marked(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 0 };
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	md = md_open_ok(f, 0);
	commit_keep(md, del, KEEP_NOW, 0, 0);
	maildrop_close(&md);
	assert_false(exists(f, ".Kept"));
	assert_true(exists(f, "new/m0"));
}

/* Another agent moves mail during the session; one marked message is
   gone: it counts as removed, the moved one is followed. */
static void test_commit_keep_follows_renames(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 1, 0, 1 };
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "0\n");
	put(f, "new/m1", "1\n");
	put(f, "new/m2", "2\n");
	md = md_open_ok(f, 0);
	mv(f, "new/m0", "cur/m0:2,S");
	assert_int_equal(unlink(P(f, "new/m2")), 0);
	commit_keep(md, del, KEEP_NOW, 2, 0);
	maildrop_close(&md);
	assert_true(exists(f, ".Kept/cur/m0,K=1700000123:2,S"));
	assert_true(exists(f, "new/m1"));
}

/* A kept name already taken is never replaced: the next second's. */
static void test_commit_keep_name_taken(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 1 };
	struct maildrop *md;

	mkmaildir(f);
	assert_int_equal(mkdir(P(f, ".Kept"), 0700), 0);
	assert_int_equal(mkdir(P(f, ".Kept/new"), 0700), 0);
	put(f, ".Kept/new/m0,K=1700000123", "older A\n");
	put(f, ".Kept/new/m0,K=1700000124", "older B\n");
	put(f, "new/m0,K=99", "0\n"); /* an old K= is replaced, not kept */
	md = md_open_ok(f, 0);
	commit_keep(md, del, KEEP_NOW, 1, 0);
	maildrop_close(&md);
	assert_true(exists(f, ".Kept/new/m0,K=1700000125"));
	assert_true(exists(f, ".Kept/new/m0,K=1700000123") &&
		    exists(f, ".Kept/new/m0,K=1700000124"));
	assert_true(exists(f, ".Kept/cur") && exists(f, ".Kept/tmp"));
}

/* A name that cannot take ",K=" within NAME_MAX stays: never unlinked. */
static void test_commit_keep_name_too_long(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 1, 1 };
	char name[300];
	struct maildrop *md;

	mkmaildir(f);
	memset(name, 'a', sizeof(name));
	memcpy(name, "new/", 4);
	name[4 + 250] = '\0';
	put(f, name, "long\n");
	put(f, "new/short", "s\n");
	md = md_open_ok(f, 0);
	commit_keep(md, del, KEEP_NOW, 1, -1);
	maildrop_close(&md);
	assert_true(exists(f, name));
	assert_true(exists(f, ".Kept/new/short,K=1700000123"));
}

/* .Kept not a directory (a symlink, a file): nothing moves, nothing is
   written through the link. */
static void test_commit_keep_kept_not_a_dir(void **state)
{
	struct fixture *f = *state;
	static const uint8_t del[] = { 1 };
	char target[128];
	struct maildrop *md;

	for (int kind = 0; kind < 2; kind++) {
		mkmaildir(f);
		put(f, "new/m0", "0\n");
		snprintf(target, sizeof(target), "%s/elsewhere", f->path);
		assert_int_equal(mkdir(target, 0700), 0);
		if (kind == 0)
			assert_int_equal(symlink(target, P(f, ".Kept")), 0);
		else
			put(f, ".Kept", "a file\n");
		md = md_open_ok(f, 0);
		commit_keep(md, del, KEEP_NOW, 0, -1);
		maildrop_close(&md);
		assert_true(exists(f, "new/m0"));
		assert_false(exists(f, "elsewhere/new"));
		assert_int_equal(unlink(P(f, ".Kept")), 0);
		assert_int_equal(rmdir(target), 0);
		assert_int_equal(unlink(P(f, "new/m0")), 0);
		assert_int_equal(rmdir(P(f, "new")), 0);
		assert_int_equal(rmdir(P(f, "cur")), 0);
		assert_int_equal(rmdir(P(f, "tmp")), 0);
	}
}

static void test_file_info(void **state)
{
	struct fixture *f = *state;
	struct maildrop_file_info info[3];
	const char *error = NULL;
	struct maildrop *md;

	mkmaildir(f);
	put(f, "new/m0", "zero\n");
	put(f, "new/m1", "one one\n");
	put(f, "cur/m2:2,", "2\n");
	set_mtime(f, "new/m0", 1000);
	set_mtime(f, "new/m1", 2000);
	md = md_open_ok(f, 0);
	mv(f, "new/m1", "cur/m1:2,S");        /* followed */
	assert_int_equal(unlink(P(f, "cur/m2:2,")), 0);   /* gone */
	assert_int_equal(maildrop_file_info(md, info, &error), 0);
	assert_true(info[0].present && info[0].mtime == 1000 &&
		    info[0].size == 5);
	assert_true(info[1].present && info[1].mtime == 2000 &&
		    info[1].size == 8);
	assert_false(info[2].present);
	maildrop_close(&md);
}

static void test_expire_kept(void **state)
{
	struct fixture *f = *state;
	const int64_t now = 1700000000;
	struct maildrop_kept_counts c;
	const char *error = NULL;
	struct maildrop *md;

	mkmaildir(f);
	md = md_open_ok(f, 0);
	/* No folder: nothing to do. */
	assert_int_equal(maildrop_expire_kept(md, now, 3, false, &c, &error), 0);
	assert_int_equal(c.messages, 0);
	maildrop_close(&md);
	assert_int_equal(mkdir(P(f, ".Kept"), 0700), 0);
	assert_int_equal(mkdir(P(f, ".Kept/new"), 0700), 0);
	assert_int_equal(mkdir(P(f, ".Kept/cur"), 0700), 0);
	put(f, ".Kept/new/a,K=1699740000", "due, new\n");  /* 3 d + 800 s */
	put(f, ".Kept/cur/b,K=1699740000:2,S", "due\n");
	put(f, ".Kept/cur/c,K=1699740800:2,S", "exactly 3 d\n");
	put(f, ".Kept/cur/d,K=1699999999:2,S", "young\n");
	put(f, ".Kept/cur/e:2,S", "no K: forever\n");
	put(f, ".Kept/cur/f,K=1,K=2:2,S", "two K: forever\n");
	put(f, ".Kept/cur/.hidden,K=1", "not a message\n");
	assert_int_equal(mkdir(P(f, ".Kept/cur/g,K=1"), 0700), 0);
	set_mtime(f, ".Kept/cur/d,K=1699999999:2,S", 1); /* mtime ignored */
	md = md_open_ok(f, 0);
	/* Dry run: counts, removes nothing. */
	assert_int_equal(maildrop_expire_kept(md, now, 3, true, &c, &error), 0);
	assert_int_equal(c.messages, 2);
	assert_int_equal(c.bytes, 9 + 4);
	assert_true(exists(f, ".Kept/new/a,K=1699740000"));
	assert_int_equal(maildrop_expire_kept(md, now, 3, false, &c, &error), 0);
	assert_int_equal(c.messages, 2);
	assert_false(exists(f, ".Kept/new/a,K=1699740000") ||
		     exists(f, ".Kept/cur/b,K=1699740000:2,S"));
	assert_true(exists(f, ".Kept/cur/c,K=1699740800:2,S") &&
		    exists(f, ".Kept/cur/d,K=1699999999:2,S") &&
		    exists(f, ".Kept/cur/e:2,S") &&
		    exists(f, ".Kept/cur/f,K=1,K=2:2,S") &&
		    exists(f, ".Kept/cur/.hidden,K=1") &&
		    exists(f, ".Kept/cur/g,K=1"));
	/* keep_days 0: whatever has a K= in the past goes. */
	assert_int_equal(maildrop_expire_kept(md, now, 0, false, &c, &error), 0);
	assert_int_equal(c.messages, 2);
	assert_true(exists(f, ".Kept/cur/e:2,S"));
	maildrop_close(&md);
}

/* An admin's open (popbox expire) is no login: LOGIN-DELAY is neither
   checked nor reset. */
static void test_admin_open(void **state)
{
	struct fixture *f = *state;
	struct maildrop_settings set = { .login_delay = 60, .admin = true };
	enum maildrop_status st;
	const char *error = NULL;
	struct maildrop *md = NULL;

	mkmaildir(f);
	assert_int_equal(md_open_status(f, 60), MAILDROP_OK);
	set_lock_mtime(f, 10);
	time_t before = mtime_of(f, "popbox.lock");
	assert_int_equal(maildrop_open(f->path, &set, &md, &st, &error), 0);
	maildrop_close(&md);
	assert_int_equal(mtime_of(f, "popbox.lock"), before);
	set_lock_mtime(f, 61);
	assert_int_equal(maildrop_open(f->path, &set, &md, &st, &error), 0);
	maildrop_close(&md);
	assert_int_equal(md_open_status(f, 60), MAILDROP_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(x) cmocka_unit_test_setup_teardown(x, setup, teardown)
		T(test_list_styles),
		T(test_wire_field),
		T(test_empty_and_created_dirs),
		T(test_not_a_maildir),
		T(test_uidl_stable),
		T(test_order_stable),
		T(test_in_use_same_process),
		T(test_in_use_forked_child),
		T(test_lock_dies_with_holder),
		T(test_login_delay),
		T(test_commit_marked_only),
		T(test_commit_follows_renames),
		T(test_late_delivery),
		T(test_open_message_follows),
		T(test_skips_non_messages),
		T(test_duplicate_base),
		T(test_fast_path_rules),
		T(test_fast_path_sees_delivery),
		T(test_hostile_caches),
		T(test_cache_every_truncation),
		T(test_cache_huge_lengths),
		T(test_cache_garbage),
		T(test_cache_not_a_regular_file),
		T(test_lock_file_not_regular),
		T(test_refind_regular_only),
		T(test_fast_path_name_not_a_file),
		cmocka_unit_test(test_cache_format_parse),
		T(test_size_matches_encoder),
		T(test_commit_keep_moves_marked),
		T(test_commit_keep_nothing_marked),
		T(test_commit_keep_follows_renames),
		T(test_commit_keep_name_taken),
		T(test_commit_keep_name_too_long),
		T(test_commit_keep_kept_not_a_dir),
		T(test_file_info),
		T(test_expire_kept),
		T(test_admin_open),
#undef T
	};
	/* The rejected caches are logged by design (the integration tests
	   check those lines); here they would only bury the results. */
	log_set_level(LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
