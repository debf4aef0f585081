/*
 * test-sink.c — where fetched messages go (fetch/sink.h, mbox-format.h),
 * on real files in a temporary directory.
 *
 *   Maildir  byte-exact storage (CRLF -> LF only, bare CR, NUL, "From "
 *            untouched, no final newline added, split anywhere), the
 *            trace header, abort leaving nothing, fsync of the file before
 *            the fsync of new/;
 *   mbox     the exact bytes of two appends ("From " line with the
 *            Return-Path or MAILER-DAEMON, mboxrd quoting, final newline,
 *            separator), appending after a file that does not end in an
 *            empty line, locking (an OFD lock held past the timeout, one
 *            released while waiting, a classic POSIX lock in another
 *            process, a fresh and a stale dot-lock), and all-or-nothing:
 *            a write over RLIMIT_FSIZE (in a child) and a failing fsync
 *            both leave the file as it was; a dot-lock whose holder died
 *            on this host broken at once; the pending-record steps:
 *            prepare and publish write exactly what sink_commit writes
 *            (one write() for a small message), the name says where, how
 *            many bytes and their hash, prepare holds both locks and
 *            writes nothing, abort releases them, publish refuses a file
 *            changed behind the locks and cuts back on a failing fsync,
 *            and locate counts only the exact bytes at the exact place;
 *   MDA      the message and environment it gets, the exit statuses
 *            (0, 75, others, a signal, exec failure), the timeout killing
 *            its process group, a flood of output, a large message, and
 *            message data never reaching the shell as code.
 * Plus the pure pieces: quoting split at every byte, Return-Path
 * parsing, the From line, the Received line, SipHash-2-4 (the paper's
 * vectors, fed in every split).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mbox-format.h"
#include "sink-private.h"
#include "siphash.h"
#include "sink.h"

#include "durability-fixture.h"
#include "tmpdir-fixture.h"

struct fixture {
	char root[64];
	char real[128];    /* root as /proc/self/fd shows it */
	char path[128];    /* root/dest: does not exist before a test */
	char buf[512];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->root, sizeof(f->root), "popbox-sink");
	assert_non_null(realpath(f->root, f->real));
	snprintf(f->path, sizeof(f->path), "%s/dest", f->root);
	dur_reset();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	tmpdir_remove(f->root);
	free(f);
	return 0;
}

static const char *P(struct fixture *f, const char *rel)
{
	snprintf(f->buf, sizeof(f->buf), "%s/%s", f->root, rel);
	return f->buf;
}

/* The whole file, malloc'ed and NUL-terminated, its size in *len_r. */
static char *slurp(const char *path, size_t *len_r)
{
	FILE *fp = fopen(path, "rb");
	char *buf;
	long n;

	if (fp == NULL)
		fail_msg("cannot open %s", path);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = '\0';
	fclose(fp);
	if (len_r != NULL)
		*len_r = (size_t)n;
	return buf;
}

static void spit(const char *path, const char *text)
{
	FILE *fp = fopen(path, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(text, 1, strlen(text), fp), strlen(text));
	assert_int_equal(fclose(fp), 0);
}

/* Entries of dir (not "." or ".."); the first one's name into name_r. */
static int count_in(const char *dir, char *name_r, size_t size)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n++ == 0 && name_r != NULL)
			snprintf(name_r, size, "%s", de->d_name);
	}
	closedir(d);
	return n;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Stores data[0..len) in pieces of 1, 2, 3... bytes (so CR LF pairs get
   split too).  Returns sink_commit's result. */
static int store(const struct sink_config *cfg, const struct sink_msg_info *info,
		 const void *data, size_t len, enum sink_status *st,
		 const char **err)
{
	struct sink_msg *m;
	const uint8_t *p = data;
	size_t piece = 1;

	if (sink_begin(cfg, info, &m, st, err) < 0)
		return -1;
	while (len > 0) {
		size_t n = piece < len ? piece : len;
		if (sink_write(m, p, n, st, err) < 0) {
			sink_abort(&m);
			return -1;
		}
		p += n;
		len -= n;
		piece = piece % 7 + 1;
	}
	return sink_commit(&m, st, err);
}

static void store_ok(const struct sink_config *cfg,
		     const struct sink_msg_info *info, const char *data)
{
	enum sink_status st = SINK_PERMFAIL;
	const char *err = NULL;

	if (store(cfg, info, data, strlen(data), &st, &err) < 0)
		fail_msg("store: %s", err);
	assert_int_equal(st, SINK_OK);
}

static const char msg_crlf[] =
	"Return-Path: <alice@example.org>\r\n"
	"Subject: test\r\n"
	"\r\n"
	"From the start\r\n"
	">From quoted\r\n"
	"bare\rcr\r\n"
	"\r\r\n"
	"no newline at the end";
static const char msg_lf[] =
	"Return-Path: <alice@example.org>\n"
	"Subject: test\n"
	"\n"
	"From the start\n"
	">From quoted\n"
	"bare\rcr\n"
	"\r\n"
	"no newline at the end";

/* ---- Maildir --------------------------------------------------------------- */

static void test_maildir_exact(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MAILDIR, .target = f->path };
	char name[256], path[512];
	static const char with_nul[] = "a\r\n\0b\r\n";
	enum sink_status st;
	const char *err;
	size_t len;

	store_ok(&cfg, NULL, msg_crlf);
	assert_int_equal(count_in(P(f, "dest/tmp"), NULL, 0), 0);
	assert_int_equal(count_in(P(f, "dest/new"), name, sizeof(name)), 1);
	snprintf(path, sizeof(path), "%s/dest/new/%s", f->root, name);
	char *text = slurp(path, &len);
	assert_int_equal(len, strlen(msg_lf));
	assert_memory_equal(text, msg_lf, len);
	free(text);
	assert_int_equal(unlink(path), 0);

	/* A NUL is data too. */
	assert_int_equal(store(&cfg, NULL, with_nul, sizeof(with_nul) - 1, &st,
			       &err), 0);
	assert_int_equal(count_in(P(f, "dest/new"), name, sizeof(name)), 1);
	snprintf(path, sizeof(path), "%s/dest/new/%s", f->root, name);
	text = slurp(path, &len);
	assert_int_equal(len, 5);
	assert_memory_equal(text, "a\n\0b\n", 5);
	free(text);
}

static void test_maildir_trace_and_abort(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MAILDIR, .target = f->path };
	struct sink_msg_info info = {
		.trace_header = "Received: from pop.example.org by here; x",
	};
	char name[256], path[512];
	struct sink_msg *m;
	enum sink_status st;
	const char *err;

	store_ok(&cfg, &info, "Subject: s\r\n\r\nbody\r\n");
	assert_int_equal(count_in(P(f, "dest/new"), name, sizeof(name)), 1);
	snprintf(path, sizeof(path), "%s/dest/new/%s", f->root, name);
	char *text = slurp(path, NULL);
	assert_string_equal(text, "Received: from pop.example.org by here; x\n"
				  "Subject: s\n\nbody\n");
	free(text);

	/* Abort: nothing in new/ or tmp/. */
	assert_int_equal(sink_begin(&cfg, NULL, &m, &st, &err), 0);
	assert_int_equal(sink_write(m, "half a mess", 11, &st, &err), 0);
	sink_abort(&m);
	assert_null(m);
	sink_abort(&m);
	assert_int_equal(count_in(P(f, "dest/new"), NULL, 0), 1);
	assert_int_equal(count_in(P(f, "dest/tmp"), NULL, 0), 0);

	/* A trace header that is not one header line is refused. */
	static const char *const bad[] = { "no colon here", "A: b\nC: d",
					   " Folded: x", "A: \x01", "" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		info.trace_header = bad[i];
		assert_int_equal(sink_begin(&cfg, &info, &m, &st, &err), -1);
		assert_int_equal(st, SINK_PERMFAIL);
		assert_null(m);
	}
}

static void test_maildir_durability(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MAILDIR, .target = f->path };
	char line[600];
	int i_file = -1, i_dir;

	store_ok(&cfg, NULL, "x\r\n");
	for (int i = 0; i < dur.n && i_file < 0; i++)
		if (strncmp(dur.lines[i], "fsync ", 6) == 0 &&
		    strstr(dur.lines[i], "/dest/tmp/") != NULL)
			i_file = i;
	snprintf(line, sizeof(line), "fsync %s/dest/new", f->real);
	i_dir = dur_find(0, line);
	assert_true(i_file >= 0);
	assert_true(i_dir > i_file);
}

static void test_maildir_unusable(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MAILDIR };
	struct sink_msg *m;
	enum sink_status st;
	const char *err;
	char target[256];

	spit(P(f, "file"), "x");
	snprintf(target, sizeof(target), "%s/file/Maildir", f->root);
	cfg.target = target;
	assert_int_equal(sink_begin(&cfg, NULL, &m, &st, &err), -1);
	assert_int_equal(st, SINK_PERMFAIL);
	assert_non_null(strstr(err, "Maildir"));
	cfg.target = "";
	assert_int_equal(sink_begin(&cfg, NULL, &m, &st, &err), -1);
	assert_int_equal(st, SINK_PERMFAIL);
}

/* ---- one destination, group commit -------------------------------------- */

/* A message through sink_begin_in and sink_prepare; its tmp/ name into
   name_r. */
static struct sink_msg *prepared(struct sink *sink, const char *text,
				 char *name_r, size_t size)
{
	struct sink_msg *m;
	enum sink_status st;
	const char *err, *name;

	assert_int_equal(sink_begin_in(sink, NULL, &m, &st, &err), 0);
	assert_int_equal(sink_write(m, text, strlen(text), &st, &err), 0);
	assert_int_equal(sink_prepare(m, &name, &st, &err), 0);
	snprintf(name_r, size, "%s", name);
	return m;
}

static void test_maildir_group_commit(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MAILDIR, .target = f->path };
	struct sink *sink;
	struct sink_msg *m[3];
	char names[3][256], line[700], path[600];
	enum sink_status st;
	const char *err;

	assert_int_equal(sink_open(&cfg, &sink, &st, &err), 0);
	assert_true(sink_can_batch(sink));
	for (int i = 0; i < 3; i++)
		m[i] = prepared(sink, "Subject: g\r\n\r\nbody\r\n", names[i],
				sizeof(names[i]));
	/* Prepared: whole and fsynced in tmp/, nothing in new/. */
	assert_int_equal(count_in(P(f, "dest/tmp"), NULL, 0), 3);
	assert_int_equal(count_in(P(f, "dest/new"), NULL, 0), 0);
	snprintf(path, sizeof(path), "%s/dest/tmp/%s", f->real, names[0]);
	snprintf(line, sizeof(line), "fsync %s", path);
	assert_true(dur_find(0, line) >= 0);
	dur_reset();
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sink_publish(&m[i], &st, &err), 0);
		assert_null(m[i]);
	}
	/* Renamed without a sync of new/ yet; then one for all three. */
	snprintf(line, sizeof(line), "fsync %s/dest/new", f->real);
	assert_int_equal(dur_find(0, line), -1);
	assert_int_equal(sink_sync(sink, &st, &err), 0);
	assert_true(dur_find(0, line) >= 0);
	assert_int_equal(dur.syncs, 1);
	assert_int_equal(count_in(P(f, "dest/tmp"), NULL, 0), 0);
	assert_int_equal(count_in(P(f, "dest/new"), NULL, 0), 3);

	/* An aborted prepared message leaves nothing. */
	m[0] = prepared(sink, "x\r\n", names[0], sizeof(names[0]));
	sink_abort(&m[0]);
	assert_int_equal(count_in(P(f, "dest/tmp"), NULL, 0), 0);
	/* publish before prepare is refused, and frees the message. */
	assert_int_equal(sink_begin_in(sink, NULL, &m[0], &st, &err), 0);
	assert_int_equal(sink_publish(&m[0], &st, &err), -1);
	assert_null(m[0]);
	assert_int_equal(count_in(P(f, "dest/tmp"), NULL, 0), 0);
	assert_int_equal(count_in(P(f, "dest/new"), NULL, 0), 3);
	sink_close(&sink);
	assert_null(sink);
	sink_close(&sink);
}

static void test_maildir_locate(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MAILDIR, .target = f->path };
	struct sink *sink;
	struct sink_msg *m[2];
	char names[2][256], path[600], moved[600];
	const char *list[4];
	bool stored[4];
	enum sink_status st;
	const char *err;

	assert_int_equal(sink_open(&cfg, &sink, &st, &err), 0);
	/* One published and then moved to cur/ by a mail reader; one left
	   prepared in tmp/ (a crash before its rename). */
	m[0] = prepared(sink, "one\r\n", names[0], sizeof(names[0]));
	m[1] = prepared(sink, "two\r\n", names[1], sizeof(names[1]));
	assert_int_equal(sink_publish(&m[0], &st, &err), 0);
	assert_int_equal(sink_sync(sink, &st, &err), 0);
	char newname[256];
	assert_int_equal(count_in(P(f, "dest/new"), newname, sizeof(newname)), 1);
	snprintf(path, sizeof(path), "%s/dest/new/%s", f->root, newname);
	snprintf(moved, sizeof(moved), "%s/dest/cur/%s:2,S", f->root, newname);
	assert_int_equal(rename(path, moved), 0);
	/* Leak the prepared one as a crash would: its file stays in tmp/. */
	list[0] = names[0];
	list[1] = names[1];
	list[2] = "1700000000.M1P1R1.nowhere";
	list[3] = names[1];
	assert_int_equal(sink_locate(sink, list, 3, stored, &st, &err), 0);
	assert_true(stored[0]);
	assert_true(stored[1]);
	assert_false(stored[2]);
	/* The tmp/ one was moved into new/, whole. */
	assert_int_equal(count_in(P(f, "dest/tmp"), NULL, 0), 0);
	assert_int_equal(count_in(P(f, "dest/new"), newname, sizeof(newname)), 1);
	assert_int_equal(strncmp(newname, names[1], strlen(names[1])), 0);
	snprintf(path, sizeof(path), "%s/dest/new/%s", f->root, newname);
	char *text = slurp(path, NULL);
	assert_string_equal(text, "two\n");
	free(text);
	/* Looked up again: now in new/. */
	assert_int_equal(sink_locate(sink, list + 3, 1, stored, &st, &err), 0);
	assert_true(stored[0]);
	/* The delivery whose file was moved away: aborting it removes
	   nothing that is not its own (its tmp/ name is gone). */
	sink_abort(&m[1]);
	assert_int_equal(count_in(P(f, "dest/new"), NULL, 0), 1);
	sink_close(&sink);
}

/* ---- mbox ---------------------------------------------------------------- */

/*
 * Checks that text[*pos..] starts with a "From <sender> <date>\n" line
 * (asctime date: "Www Mmm dd hh:mm:ss yyyy") and moves *pos past it.
 */
static void expect_from_line(const char *text, size_t *pos, const char *sender)
{
	char want[300];
	const char *p = text + *pos;
	const char *lf = strchr(p, '\n');
	char day[4], mon[4];
	int d, h, mi, s, y, n = 0;

	snprintf(want, sizeof(want), "From %s ", sender);
	if (strncmp(p, want, strlen(want)) != 0)
		fail_msg("no \"%s\" at %zu: \"%.60s\"", want, *pos, p);
	assert_non_null(lf);
	p += strlen(want);
	assert_int_equal(lf - p, 24);
	assert_int_equal(sscanf(p, "%3s %3s %2d %2d:%2d:%2d %4d%n", day, mon,
				&d, &h, &mi, &s, &y, &n), 7);
	assert_int_equal(n, 24);
	*pos = (size_t)(lf + 1 - text);
}

static void expect_bytes(const char *text, size_t *pos, const char *want)
{
	if (strncmp(text + *pos, want, strlen(want)) != 0)
		fail_msg("at %zu: \"%s\", expected \"%s\"", *pos, text + *pos,
			 want);
	*pos += strlen(want);
}

static void test_mbox_two_messages(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path };
	struct stat st;
	size_t pos = 0, len;

	store_ok(&cfg, NULL, msg_crlf);
	/* The missing final newline and the separator, by this append
	   itself (not left for the next one to repair). */
	char *first = slurp(f->path, &len);
	assert_true(len > 23);
	assert_string_equal(first + len - 23, "no newline at the end\n\n");
	free(first);
	store_ok(&cfg, NULL,
		 "Subject: two\r\n\r\nFrom here\r\n>From there\r\n"
		 ">>From everywhere\r\nFromage\r\n From not\r\nFrom\r\n");
	char *text = slurp(f->path, &len);
	expect_from_line(text, &pos, "alice@example.org");
	expect_bytes(text, &pos,
		     "Return-Path: <alice@example.org>\n"
		     "Subject: test\n"
		     "\n"
		     ">From the start\n"
		     ">>From quoted\n"
		     "bare\rcr\n"
		     "\r\n"
		     "no newline at the end\n"
		     "\n");
	expect_from_line(text, &pos, MBOX_SENDER_DEFAULT);
	expect_bytes(text, &pos,
		     "Subject: two\n\n>From here\n>>From there\n"
		     ">>>From everywhere\nFromage\n From not\nFrom\n\n");
	assert_int_equal(pos, len);
	free(text);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* No lock or spool file left next to it. */
	assert_int_equal(count_in(f->root, NULL, 0), 1);
}

static void test_mbox_append_after_unterminated(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path };
	static const char *const before[] = { "From x\nbody", "From x\nbody\n",
					      "From x\nbody\n\n" };
	static const char *const glue[] = { "\n\n", "\n", "" };

	for (size_t i = 0; i < 3; i++) {
		size_t pos = 0;
		spit(f->path, before[i]);
		store_ok(&cfg, NULL, "m\r\n");
		char *text = slurp(f->path, NULL);
		expect_bytes(text, &pos, before[i]);
		expect_bytes(text, &pos, glue[i]);
		expect_from_line(text, &pos, MBOX_SENDER_DEFAULT);
		expect_bytes(text, &pos, "m\n\n");
		assert_int_equal(text[pos], '\0');
		free(text);
	}

	/* An empty message is a From line and the separator. */
	assert_int_equal(unlink(f->path), 0);
	store_ok(&cfg, NULL, "");
	char *text = slurp(f->path, NULL);
	size_t pos = 0;
	expect_from_line(text, &pos, MBOX_SENDER_DEFAULT);
	expect_bytes(text, &pos, "\n");
	assert_int_equal(text[pos], '\0');
	free(text);
}

static void test_mbox_not_a_file(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path };
	enum sink_status st;
	const char *err;

	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_int_equal(store(&cfg, NULL, "x", 1, &st, &err), -1);
	assert_int_equal(st, SINK_PERMFAIL);
	assert_int_equal(rmdir(f->path), 0);
	assert_int_equal(mkfifo(f->path, 0600), 0);
	assert_int_equal(store(&cfg, NULL, "x", 1, &st, &err), -1);
	assert_int_equal(st, SINK_PERMFAIL);
	assert_non_null(strstr(err, "not a regular file"));
}

/* An OFD write lock on path, on a descriptor of its own. */
static int hold_ofd_lock(const char *path)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	int fd = open(path, O_RDWR | O_CREAT, 0600);

	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
	return fd;
}

static void test_mbox_lock_timeout(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path,
				   .lock_timeout_ms = 300 };
	enum sink_status st;
	const char *err;
	int fd = hold_ofd_lock(f->path);
	int64_t t0 = now_ms();

	assert_int_equal(store(&cfg, NULL, "x\r\n", 3, &st, &err), -1);
	assert_true(now_ms() - t0 >= 290);
	assert_int_equal(st, SINK_TEMPFAIL);
	assert_non_null(strstr(err, "locked by another program (fcntl)"));
	char *text = slurp(f->path, NULL);
	assert_string_equal(text, "");
	free(text);
	close(fd);
}

static void *release_later(void *arg)
{
	const struct timespec ts = { .tv_nsec = 300 * 1000000L };

	nanosleep(&ts, NULL);
	close(*(int *)arg);
	return NULL;
}

static void test_mbox_lock_waits(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path,
				   .lock_timeout_ms = 10000 };
	pthread_t th;
	int fd = hold_ofd_lock(f->path);
	int64_t t0 = now_ms();

	/* Held when the commit starts, released while it waits. */
	assert_int_equal(pthread_create(&th, NULL, release_later, &fd), 0);
	store_ok(&cfg, NULL, "x\r\n");
	assert_true(now_ms() - t0 >= 290);
	pthread_join(th, NULL);
	char *text = slurp(f->path, NULL);
	assert_non_null(strstr(text, "\nx\n\n"));
	free(text);
}

static void test_mbox_posix_lock_other_process(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path,
				   .lock_timeout_ms = 300 };
	int ready[2], go[2];
	enum sink_status st;
	const char *err;
	char c;
	pid_t pid;
	int status;

	spit(f->path, "");
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* A classic POSIX lock, as mutt or procmail take. */
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		int fd = open(f->path, O_RDWR);
		close(go[1]); /* so that the parent's close is an EOF */
		if (fd < 0 || fcntl(fd, F_SETLK, &fl) < 0)
			_exit(1);
		if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(go[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(store(&cfg, NULL, "x\r\n", 3, &st, &err), -1);
	assert_int_equal(st, SINK_TEMPFAIL);
	close(go[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	store_ok(&cfg, NULL, "x\r\n");
	close(ready[0]);
	close(ready[1]);
}

static void test_mbox_dotlock(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path,
				   .lock_timeout_ms = 300 };
	char lock[256];
	struct timespec old[2];
	enum sink_status st;
	const char *err;

	snprintf(lock, sizeof(lock), "%s.lock", f->path);
	/* A fresh one belongs to someone at work: wait, then give up. */
	spit(lock, "12345\n");
	assert_int_equal(store(&cfg, NULL, "x\r\n", 3, &st, &err), -1);
	assert_int_equal(st, SINK_TEMPFAIL);
	assert_non_null(strstr(err, ".lock"));
	assert_int_equal(access(lock, F_OK), 0);
	char *text = slurp(f->path, NULL);
	assert_string_equal(text, "");
	free(text);
	/* Our own link()'s file is not left behind. */
	assert_int_equal(count_in(f->root, NULL, 0), 2);

	/* fcntl only, when asked. */
	cfg.no_dotlock = true;
	store_ok(&cfg, NULL, "y\r\n");
	assert_int_equal(access(lock, F_OK), 0);
	cfg.no_dotlock = false;

	/* A stale one (a crash) is broken. */
	clock_gettime(CLOCK_REALTIME, &old[0]);
	old[0].tv_sec -= SINK_DOTLOCK_STALE_S + 60;
	old[1] = old[0];
	assert_int_equal(utimensat(AT_FDCWD, lock, old, 0), 0);
	store_ok(&cfg, NULL, "z\r\n");
	assert_int_equal(access(lock, F_OK), -1);
	text = slurp(f->path, NULL);
	assert_non_null(strstr(text, "\ny\n\n"));
	assert_non_null(strstr(text, "\nz\n\n"));
	free(text);
}

/* In a child: an mbox append that crosses RLIMIT_FSIZE must fail and cut
   the file back.  Exits 0 if it did. */
static void rlimit_child(const struct sink_config *cfg, off_t old_size)
{
	struct rlimit rl = { .rlim_cur = (rlim_t)old_size + 200,
			     .rlim_max = RLIM_INFINITY };
	char msg[10000];
	enum sink_status st = SINK_OK;
	const char *err = NULL;
	struct stat sb;

	signal(SIGXFSZ, SIG_IGN);
	if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
		_exit(2);
	memset(msg, 'a', sizeof(msg));
	for (size_t i = 99; i < sizeof(msg); i += 100)
		msg[i] = '\n';
	if (store(cfg, NULL, msg, sizeof(msg), &st, &err) == 0)
		_exit(3);
	if (st != SINK_TEMPFAIL || strstr(err, "write") == NULL)
		_exit(4);
	if (stat(cfg->target, &sb) < 0 || sb.st_size != old_size)
		_exit(5);
	_exit(0);
}

static void test_mbox_truncated_on_write_error(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path };
	char *before, *after;
	size_t len_before, len_after;
	int status;
	pid_t pid;

	/* Existing mail larger than the message: the spool file (which
	   starts empty) stays under the limit, only the mbox crosses it. */
	for (int i = 0; i < 300; i++)
		store_ok(&cfg, NULL, "Subject: filler\r\n\r\nsome text here\r\n");
	before = slurp(f->path, &len_before);
	assert_true(len_before > 10000);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		rlimit_child(&cfg, (off_t)len_before);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	after = slurp(f->path, &len_after);
	assert_int_equal(len_after, len_before);
	assert_memory_equal(after, before, len_before);
	free(before);
	free(after);
}

static void test_mbox_truncated_on_fsync_error(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path };
	enum sink_status st;
	const char *err;
	char line[600];

	store_ok(&cfg, NULL, "first\r\n");
	char *before = slurp(f->path, NULL);
	dur_reset();
	dur.fail_sync_at = 1;
	assert_int_equal(store(&cfg, NULL, "second\r\n", 8, &st, &err), -1);
	assert_int_equal(st, SINK_TEMPFAIL);
	assert_non_null(strstr(err, "fsync"));
	char *after = slurp(f->path, NULL);
	assert_string_equal(after, before);
	/* The failed fsync, then the one after the ftruncate. */
	snprintf(line, sizeof(line), "fsync %s/dest", f->real);
	int i1 = dur_find(0, line);
	assert_true(i1 >= 0);
	assert_true(dur_find(i1 + 1, line) > i1);
	free(before);
	free(after);
}

static void test_mbox_new_file_durable(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path };
	char line[600];

	store_ok(&cfg, NULL, "x\r\n");
	/* The file, then its directory (it was created). */
	snprintf(line, sizeof(line), "fsync %s/dest", f->real);
	int i_file = dur_find(0, line);
	snprintf(line, sizeof(line), "fsync %s", f->real);
	int i_dir = dur_find(0, line);
	assert_true(i_file >= 0 && i_dir > i_file);
	/* An existing one: no directory fsync. */
	dur_reset();
	store_ok(&cfg, NULL, "y\r\n");
	assert_int_equal(dur_find(0, line), -1);
}

/* ---- mbox: pending records (prepare, publish, locate) ---------------------- */

/* write() calls on one file (its path as /proc/self/fd shows it) are
   counted: a small message's append must be a single one. */
static struct {
	char path[256];
	int writes;
} wr;

ssize_t write(int fd, const void *buf, size_t n)
{
	ssize_t (*real)(int, const void *, size_t) =
		(ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
	char path[256];

	if (wr.path[0] != '\0') {
		dur_fd_path(fd, path, sizeof(path));
		if (strcmp(path, wr.path) == 0)
			wr.writes++;
	}
	return real(fd, buf, n);
}

/* A name of sink_mbox_prepare's, taken apart by the test's own reading
   of sink.h. */
struct parsed_name {
	unsigned long long off, len;
	uint8_t key[16];
	uint64_t hash;
};

static void parse_name(const char *name, struct parsed_name *pn)
{
	char key[33], hash[17];
	int n = 0;

	if (sscanf(name, "mbox.%llu.%llu.%32[0-9a-f].%16[0-9a-f]%n", &pn->off,
		   &pn->len, key, hash, &n) != 4 || name[n] != '\0' ||
	    strlen(key) != 32 || strlen(hash) != 16)
		fail_msg("not an mbox name: \"%s\"", name);
	for (int i = 0; i < 16; i++) {
		unsigned int b;
		assert_int_equal(sscanf(key + 2 * i, "%2x", &b), 1);
		pn->key[i] = (uint8_t)b;
	}
	pn->hash = strtoull(hash, NULL, 16);
}


/* Overwrites the date of every "From " line (24 characters before its
   LF) with 'X': two appends a second apart differ only there. */
static void blank_from_dates(char *text)
{
	for (char *p = text; p != NULL && *p != '\0';) {
		char *lf = strchr(p, '\n');
		if (lf == NULL)
			break;
		if (strncmp(p, "From ", 5) == 0 && lf - p > 5 + 24)
			memset(lf - 24, 'X', 24);
		p = lf + 1;
	}
}

/* A message through sink_begin_in, sink_write in pieces, sink_prepare;
   its name into name_r. */
static struct sink_msg *mbox_prepared(struct sink *sink, const char *text,
				      size_t len, char *name_r, size_t size)
{
	struct sink_msg *m;
	enum sink_status st;
	const char *err, *name;

	assert_int_equal(sink_begin_in(sink, NULL, &m, &st, &err), 0);
	for (size_t off = 0; off < len; off += 1000) {
		size_t n = len - off < 1000 ? len - off : 1000;
		assert_int_equal(sink_write(m, text + off, n, &st, &err), 0);
	}
	if (sink_prepare(m, &name, &st, &err) < 0)
		fail_msg("sink_prepare: %s", err);
	assert_true(strlen(name) <= SINK_MBOX_NAME_MAX);
	snprintf(name_r, size, "%s", name);
	return m;
}

static off_t file_size(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -1;
	return st.st_size;
}

/* A message of about len bytes with CRLF lines, some of them "From "
   lines placed across the 48 KiB pieces the append reads. */
static char *big_message(size_t len)
{
	char *text = malloc(len + 1);
	size_t n = 0;

	assert_non_null(text);
	n += (size_t)snprintf(text, len + 1,
			      "Return-Path: <big@example.org>\r\n"
			      "Subject: big\r\n\r\n");
	for (int i = 0; n + 100 < len; i++)
		n += (size_t)snprintf(text + n, len + 1 - n, "%s line %d\r\n",
				      i % 7 == 0 ? "From" : "text", i);
	text[n] = '\0';
	return text;
}

/*
 * prepare and publish write exactly what sink_commit writes (the From
 * lines' dates aside): into an empty file, after a file that does not end
 * in an empty line, a message without a final newline, one over 48 KiB;
 * the name says where, how many and the hash; prepare writes nothing;
 * a small message is one write().
 */
static void test_mbox_prepare_publish_exact(void **state)
{
	struct fixture *f = *state;
	char by_commit[256], by_publish[256], name[SINK_MBOX_NAME_MAX + 1];
	struct sink_config cfg = { .kind = SINK_MBOX, .target = by_commit };
	char *big = big_message(150 * 1024);
	const char *msgs[] = { msg_crlf, "Subject: two\r\n\r\nFrom x\r\n", big };
	struct sink *sink;
	struct sink_msg *m;
	struct parsed_name pn;
	enum sink_status st;
	const char *err;

	snprintf(by_commit, sizeof(by_commit), "%s/commit", f->root);
	snprintf(by_publish, sizeof(by_publish), "%s/publish", f->root);
	spit(by_commit, "From x\nno empty line at the end\n");
	spit(by_publish, "From x\nno empty line at the end\n");
	for (size_t i = 0; i < 3; i++)
		store_ok(&cfg, NULL, msgs[i]);
	cfg.target = by_publish;
	assert_int_equal(sink_open(&cfg, &sink, &st, &err), 0);
	assert_true(sink_can_prepare(sink));
	assert_false(sink_can_batch(sink));
	for (size_t i = 0; i < 3; i++) {
		off_t before = file_size(by_publish);
		size_t len;

		m = mbox_prepared(sink, msgs[i], strlen(msgs[i]), name,
				  sizeof(name));
		assert_int_equal(file_size(by_publish), before);
		parse_name(name, &pn);
		assert_int_equal(pn.off, before);
		snprintf(wr.path, sizeof(wr.path), "%s/publish", f->real);
		wr.writes = 0;
		dur_reset();
		assert_int_equal(sink_publish(&m, &st, &err), 0);
		assert_null(m);
		wr.path[0] = '\0';
		if (i < 2)
			assert_int_equal(wr.writes, 1);
		else
			assert_true(wr.writes > 1);
		snprintf(f->buf, sizeof(f->buf), "fsync %s/publish", f->real);
		assert_true(dur_find(0, f->buf) >= 0);
		char *text = slurp(by_publish, &len);
		assert_int_equal(pn.len, len - (size_t)before);
		assert_int_equal(siphash24(pn.key, text + before, pn.len),
				 pn.hash);
		free(text);
	}
	sink_close(&sink);
	char *a = slurp(by_commit, NULL), *b = slurp(by_publish, NULL);
	blank_from_dates(a);
	blank_from_dates(b);
	assert_string_equal(a, b);
	free(a);
	free(b);
	free(big);
}

/* A new file: created at prepare, its directory fsynced at publish. */
static void test_mbox_publish_new_file(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path };
	char name[SINK_MBOX_NAME_MAX + 1];
	struct sink *sink;
	struct sink_msg *m;
	enum sink_status st;
	const char *err;
	size_t pos = 0;

	assert_int_equal(sink_open(&cfg, &sink, &st, &err), 0);
	m = mbox_prepared(sink, "x\r\n", 3, name, sizeof(name));
	assert_int_equal(strncmp(name, "mbox.0.", 7), 0);
	dur_reset();
	assert_int_equal(sink_publish(&m, &st, &err), 0);
	snprintf(f->buf, sizeof(f->buf), "fsync %s/dest", f->real);
	int i_file = dur_find(0, f->buf);
	snprintf(f->buf, sizeof(f->buf), "fsync %s", f->real);
	assert_true(i_file >= 0 && dur_find(0, f->buf) > i_file);
	char *text = slurp(f->path, NULL);
	expect_from_line(text, &pos, MBOX_SENDER_DEFAULT);
	expect_bytes(text, &pos, "x\n\n");
	free(text);
	sink_close(&sink);
}

/* Can another program take the fcntl lock now? */
static bool ofd_lock_free(const char *path)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	int fd = open(path, O_RDWR);
	bool got;

	assert_true(fd >= 0);
	got = fcntl(fd, F_OFD_SETLK, &fl) == 0;
	close(fd);
	return got;
}

/* Both locks are held from prepare on; abort releases them and writes
   nothing; publish after a write that ignored the locks, or with a
   failing fsync, leaves the file as it was. */
static void test_mbox_prepare_abort_and_refusals(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path,
				   .lock_timeout_ms = 200 };
	char name[SINK_MBOX_NAME_MAX + 1], lock[256];
	struct sink *sink;
	struct sink_msg *m, *m2;
	enum sink_status st;
	const char *err, *name2;

	snprintf(lock, sizeof(lock), "%s.lock", f->path);
	store_ok(&cfg, NULL, "first\r\n");
	char *before = slurp(f->path, NULL);
	assert_int_equal(sink_open(&cfg, &sink, &st, &err), 0);
	m = mbox_prepared(sink, "second\r\n", 8, name, sizeof(name));
	assert_false(ofd_lock_free(f->path));
	assert_int_equal(access(lock, F_OK), 0);
	/* A second message of ours waits for the lock, and gives up. */
	assert_int_equal(sink_begin_in(sink, NULL, &m2, &st, &err), 0);
	assert_int_equal(sink_write(m2, "x\r\n", 3, &st, &err), 0);
	assert_int_equal(sink_prepare(m2, &name2, &st, &err), -1);
	assert_int_equal(st, SINK_TEMPFAIL);
	assert_int_equal(sink_publish(&m2, &st, &err), -1);
	assert_null(m2);
	sink_abort(&m);
	assert_null(m);
	assert_true(ofd_lock_free(f->path));
	assert_int_equal(access(lock, F_OK), -1);
	char *after = slurp(f->path, NULL);
	assert_string_equal(after, before);
	free(after);

	/* Someone who ignores the locks appends between prepare and
	   publish: the name would be wrong, so nothing is appended. */
	m = mbox_prepared(sink, "second\r\n", 8, name, sizeof(name));
	int fd = open(f->path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "rogue\n\n", 7), 7);
	close(fd);
	assert_int_equal(sink_publish(&m, &st, &err), -1);
	assert_int_equal(st, SINK_TEMPFAIL);
	assert_non_null(strstr(err, "in spite of the locks"));
	after = slurp(f->path, NULL);
	assert_int_equal(strlen(after), strlen(before) + 7);
	assert_true(ofd_lock_free(f->path));
	free(after);

	/* A failing fsync: cut back, unlocked. */
	free(before);
	before = slurp(f->path, NULL);
	m = mbox_prepared(sink, "third\r\n", 7, name, sizeof(name));
	dur_reset();
	dur.fail_sync_at = 1;
	assert_int_equal(sink_publish(&m, &st, &err), -1);
	assert_non_null(strstr(err, "fsync"));
	after = slurp(f->path, NULL);
	assert_string_equal(after, before);
	assert_true(ofd_lock_free(f->path));
	assert_int_equal(access(lock, F_OK), -1);
	free(after);
	free(before);
	sink_close(&sink);
}

static bool locate_one(struct sink *sink, const char *name)
{
	enum sink_status st;
	const char *err;
	bool stored = true;

	if (sink_locate(sink, &name, 1, &stored, &st, &err) < 0)
		fail_msg("sink_locate: %s", err);
	return stored;
}

/* The file's bytes back as they were. */
static void restore(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_TRUNC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
}

/* Only the exact bytes at the exact place count as stored. */
static void test_mbox_locate(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path };
	char name[SINK_MBOX_NAME_MAX + 1], bad[300];
	struct sink *sink;
	struct sink_msg *m;
	struct parsed_name pn;
	enum sink_status st;
	const char *err;
	size_t len;

	assert_int_equal(sink_open(&cfg, &sink, &st, &err), 0);
	/* No mbox yet: nothing stored, no error. */
	assert_false(locate_one(sink, "mbox.0.10.00000000000000000000000000000000."
				      "0000000000000000"));
	store_ok(&cfg, NULL, "before\r\n");
	m = mbox_prepared(sink, msg_crlf, strlen(msg_crlf), name, sizeof(name));
	/* Prepared, not appended: a crash here leaves it not stored. */
	assert_false(locate_one(sink, name));
	assert_int_equal(sink_publish(&m, &st, &err), 0);
	assert_true(locate_one(sink, name));
	/* Another message after it changes nothing. */
	store_ok(&cfg, NULL, "after\r\n");
	assert_true(locate_one(sink, name));
	parse_name(name, &pn);
	char *text = slurp(f->path, &len);

	/* Cut back to where it started (a crash before the append, or
	   the append cut back), or torn in the middle of it. */
	assert_int_equal(truncate(f->path, (off_t)pn.off), 0);
	assert_false(locate_one(sink, name));
	assert_int_equal(truncate(f->path, (off_t)(pn.off + pn.len - 1)), 0);
	assert_false(locate_one(sink, name));
	restore(f->path, text, len);
	assert_true(locate_one(sink, name));
	/* One byte inside changed (first, middle, last). */
	size_t at[] = { pn.off, pn.off + pn.len / 2, pn.off + pn.len - 1 };
	for (size_t i = 0; i < 3; i++) {
		text[at[i]] ^= 0x20;
		restore(f->path, text, len);
		assert_false(locate_one(sink, name));
		text[at[i]] ^= 0x20;
	}
	/* A mail reader that deleted the message before it: the bytes are
	   there, elsewhere; not stored (a second copy, never a loss). */
	restore(f->path, text + 3, len - 3);
	assert_false(locate_one(sink, name));
	restore(f->path, text, len);
	assert_true(locate_one(sink, name));

	/* Names that are not of this form, or not canonical. */
	const char *key = strchr(strchr(name + 5, '.') + 1, '.') + 1;
	const char *garbage[] = {
		"", "mbox", "mbox.", "mbox.1.2", "mbox.1.2.3.4",
		"1700000000.M1P1R1.host", "x/../mbox.0.1.2.3",
	};
	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
		assert_false(locate_one(sink, garbage[i]));
	/* Leading zeros, uppercase hex, a trailing dot, too big numbers,
	   a length of 0, beyond the end of the file. */
	snprintf(bad, sizeof(bad), "mbox.0%llu.%llu.%s", pn.off, pn.len, key);
	assert_false(locate_one(sink, bad));
	snprintf(bad, sizeof(bad), "%s.", name);
	assert_false(locate_one(sink, bad));
	snprintf(bad, sizeof(bad), "%s", name);
	for (char *p = bad + strlen(bad) - 16; *p != '\0'; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	if (strcmp(bad, name) != 0)
		assert_false(locate_one(sink, bad));
	snprintf(bad, sizeof(bad), "mbox.18446744073709551615.%llu.%s", pn.len,
		 key);
	assert_false(locate_one(sink, bad));
	snprintf(bad, sizeof(bad), "mbox.%llu.0.%s", pn.off, key);
	assert_false(locate_one(sink, bad));
	snprintf(bad, sizeof(bad), "mbox.%llu.%zu.%s", pn.off, len, key);
	assert_false(locate_one(sink, bad));
	snprintf(bad, sizeof(bad), "mbox.%zu.%llu.%s", len, pn.len, key);
	assert_false(locate_one(sink, bad));
	/* Several at once, in order. */
	const char *list[3] = { "garbage", name, "mbox.1.1.x.y" };
	bool stored[3] = { true, false, true };
	assert_int_equal(sink_locate(sink, list, 3, stored, &st, &err), 0);
	assert_false(stored[0]);
	assert_true(stored[1]);
	assert_false(stored[2]);
	sink_close(&sink);

	/* The mbox's name means nothing to a Maildir or an MDA. */
	struct sink_config md = { .kind = SINK_MAILDIR, .target = P(f, "md") };
	char target[256];
	snprintf(target, sizeof(target), "%s", md.target);
	md.target = target;
	assert_int_equal(sink_open(&md, &sink, &st, &err), 0);
	assert_false(locate_one(sink, name));
	sink_close(&sink);
	struct sink_config mda = { .kind = SINK_MDA, .target = "cat" };
	assert_int_equal(sink_open(&mda, &sink, &st, &err), 0);
	assert_false(sink_can_prepare(sink));
	assert_false(locate_one(sink, name));
	sink_close(&sink);
	/* An mbox that is not a file: an error, not a guess. */
	cfg.target = P(f, "md");
	char dir_target[256];
	snprintf(dir_target, sizeof(dir_target), "%s", cfg.target);
	cfg.target = dir_target;
	assert_int_equal(sink_open(&cfg, &sink, &st, &err), 0);
	assert_int_equal(sink_locate(sink, list, 3, stored, &st, &err), -1);
	assert_int_equal(st, SINK_PERMFAIL);
	sink_close(&sink);
	free(text);
}

/* A pid that was a process of ours and is no more. */
static pid_t dead_pid(void)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return pid;
}

/* A dot-lock left by a crash on this host ("<pid> <host>" of a dead
   process) is broken at once; one of another host, of a live process or
   without a host is waited for.  Ours says "<our pid> <host>". */
static void test_mbox_dotlock_dead_holder(void **state)
{
	struct fixture *f = *state;
	struct sink_config cfg = { .kind = SINK_MBOX, .target = f->path,
				   .lock_timeout_ms = 300 };
	char lock[256], host[256], text[600], want[600], name[SINK_MBOX_NAME_MAX + 1];
	pid_t dead = dead_pid();
	enum sink_status st;
	const char *err;
	struct sink *sink;
	struct sink_msg *m;

	assert_int_equal(gethostname(host, sizeof(host)), 0);
	host[sizeof(host) - 1] = '\0';
	snprintf(lock, sizeof(lock), "%s.lock", f->path);
	snprintf(text, sizeof(text), "%d %s\n", (int)dead, host);
	spit(lock, text);
	int64_t t0 = now_ms();
	store_ok(&cfg, NULL, "x\r\n");
	assert_true(now_ms() - t0 < 250);
	assert_int_equal(access(lock, F_OK), -1);

	const char *kept[3];
	char other[300], live[300], bare[300];
	snprintf(other, sizeof(other), "%d other-host.example\n", (int)dead);
	snprintf(live, sizeof(live), "%d %s\n", (int)getppid(), host);
	snprintf(bare, sizeof(bare), "%d\n", (int)dead);
	kept[0] = other;
	kept[1] = live;
	kept[2] = bare;
	for (int i = 0; i < 3; i++) {
		spit(lock, kept[i]);
		assert_int_equal(store(&cfg, NULL, "y\r\n", 3, &st, &err), -1);
		assert_int_equal(st, SINK_TEMPFAIL);
		assert_int_equal(access(lock, F_OK), 0);
	}
	assert_int_equal(unlink(lock), 0);

	/* Ours, held from prepare to publish. */
	assert_int_equal(sink_open(&cfg, &sink, &st, &err), 0);
	m = mbox_prepared(sink, "z\r\n", 3, name, sizeof(name));
	char *held = slurp(lock, NULL);
	snprintf(want, sizeof(want), "%d %s\n", (int)getpid(), host);
	assert_string_equal(held, want);
	free(held);
	assert_int_equal(sink_publish(&m, &st, &err), 0);
	assert_int_equal(access(lock, F_OK), -1);
	/* No file of ours left next to the mbox. */
	assert_int_equal(count_in(f->root, NULL, 0), 1);
	sink_close(&sink);
}

/* ---- MDA ----------------------------------------------------------------- */

static void test_mda_gets_message_and_env(void **state)
{
	struct fixture *f = *state;
	char cmd[512];
	struct sink_config cfg = { .kind = SINK_MDA, .target = cmd };
	struct sink_msg_info info = { .uidl = "UID-1", .account = "work mail" };
	size_t len;

	snprintf(cmd, sizeof(cmd),
		 "cat > '%s/out' && printf '%%s|%%s|%%s|%%s' "
		 "\"$POPBOX_FETCH_UIDL\" \"$POPBOX_FETCH_SENDER\" "
		 "\"$POPBOX_FETCH_ACCOUNT\" \"$POPBOX_FETCH_SIZE\" > '%s/env'",
		 f->root, f->root);
	/* A stale variable of ours in the environment is not passed on. */
	setenv("POPBOX_FETCH_UIDL", "stale", 1);
	store_ok(&cfg, &info, msg_crlf);
	unsetenv("POPBOX_FETCH_UIDL");
	char *text = slurp(P(f, "out"), &len);
	assert_int_equal(len, strlen(msg_lf));
	assert_memory_equal(text, msg_lf, len);
	free(text);
	text = slurp(P(f, "env"), NULL);
	snprintf(cmd, sizeof(cmd), "UID-1|alice@example.org|work mail|%zu",
		 strlen(msg_lf));
	assert_string_equal(text, cmd);
	free(text);
}

static void test_mda_no_injection(void **state)
{
	struct fixture *f = *state;
	char cmd[512];
	struct sink_config cfg = { .kind = SINK_MDA, .target = cmd };
	static const char evil[] = "x;touch${IFS}pwned`touch${IFS}pwned2`$(id)'\"";
	struct sink_msg_info info = { .uidl = evil };

	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && printf %%s \"$POPBOX_FETCH_UIDL\" > uidl && "
		 "printf %%s \"$POPBOX_FETCH_SENDER\" > sender", f->root);
	store_ok(&cfg, &info,
		 "Return-Path: <$(touch${IFS}pwned3)@x>\r\n\r\nbody\r\n");
	char *text = slurp(P(f, "uidl"), NULL);
	assert_string_equal(text, evil);
	free(text);
	text = slurp(P(f, "sender"), NULL);
	assert_string_equal(text, "$(touch${IFS}pwned3)@x");
	free(text);
	assert_int_equal(access(P(f, "pwned"), F_OK), -1);
	assert_int_equal(access(P(f, "pwned2"), F_OK), -1);
	assert_int_equal(access(P(f, "pwned3"), F_OK), -1);
}

static const struct {
	const char *cmd;
	int ret;
	enum sink_status status;
	const char *error; /* a part of it, or NULL */
} mda_cases[] = {
	{ "cat > /dev/null", 0, SINK_OK, NULL },
	{ "true", 0, SINK_OK, NULL },  /* the exit status decides */
	{ "cat > /dev/null; exit 75", -1, SINK_TEMPFAIL, "status 75" },
	{ "echo 'over quota, sorry' >&2; exit 1", -1, SINK_PERMFAIL,
	  "status 1: over quota, sorry" },
	{ "printf 'a\\033[2Jb\\nsecond line'; exit 67", -1, SINK_PERMFAIL,
	  "status 67: a\\x1b[2Jb" },
	{ "kill -9 $$", -1, SINK_TEMPFAIL, "signal 9" },
	{ "/nonexistent/mda", -1, SINK_PERMFAIL, "status 127" },
	{ "exit 0", 0, SINK_OK, NULL },
};

static void test_mda_exit_status(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(mda_cases) / sizeof(mda_cases[0]); i++) {
		struct sink_config cfg = { .kind = SINK_MDA,
					   .target = mda_cases[i].cmd };
		enum sink_status st = SINK_OK;
		const char *err = NULL;
		int ret = store(&cfg, NULL, "m\r\n", 3, &st, &err);

		if (ret != mda_cases[i].ret || st != mda_cases[i].status)
			fail_msg("case %zu (%s): ret %d status %d (%s)", i,
				 mda_cases[i].cmd, ret, st,
				 err != NULL ? err : "");
		if (mda_cases[i].error != NULL &&
		    strstr(err, mda_cases[i].error) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err,
				 mda_cases[i].error);
	}
}

/* Is process pid gone (or a zombie nobody reaps)? */
static bool process_dead(pid_t pid)
{
	char path[64], buf[256];
	FILE *fp;
	bool dead = true;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fp = fopen(path, "r");
	if (fp == NULL)
		return true;
	if (fgets(buf, sizeof(buf), fp) != NULL) {
		const char *rp = strrchr(buf, ')');
		dead = rp != NULL && (rp[2] == 'Z' || rp[2] == 'X');
	}
	fclose(fp);
	return dead;
}

static void test_mda_timeout_kills_group(void **state)
{
	struct fixture *f = *state;
	char cmd[512];
	struct sink_config cfg = { .kind = SINK_MDA, .target = cmd,
				   .mda_timeout_ms = 1500 };
	enum sink_status st;
	const char *err;
	int64_t t0 = now_ms();

	snprintf(cmd, sizeof(cmd),
		 "sleep 30 & echo $! > '%s/pid'; wait", f->root);
	assert_int_equal(store(&cfg, NULL, "m\r\n", 3, &st, &err), -1);
	assert_int_equal(st, SINK_TEMPFAIL);
	assert_non_null(strstr(err, "timed out"));
	assert_true(now_ms() - t0 < 10000);
	char *text = slurp(P(f, "pid"), NULL);
	pid_t pid = (pid_t)atoi(text);
	free(text);
	assert_true(pid > 0);
	/* SIGKILL to the group is synchronous enough that the sleep is
	   dying; wait for it to be gone (bounded). */
	for (int i = 0; i < 200 && !process_dead(pid); i++) {
		const struct timespec ts = { .tv_nsec = 10 * 1000000L };
		nanosleep(&ts, NULL);
	}
	assert_true(process_dead(pid));
}

static void test_mda_output_flood_and_big_message(void **state)
{
	struct fixture *f = *state;
	char cmd[512];
	struct sink_config cfg = {
		.kind = SINK_MDA,
		.target = "head -c 2000000 /dev/zero | tr '\\0' x; exit 3",
	};
	enum sink_status st;
	const char *err;
	size_t big = 3 * 1000 * 1000;
	char *msg = malloc(big);

	/* 2 MB of output, far over the pipe's buffer: read and dropped. */
	assert_int_equal(store(&cfg, NULL, "m\r\n", 3, &st, &err), -1);
	assert_int_equal(st, SINK_PERMFAIL);
	assert_non_null(strstr(err, "status 3: xxxx"));
	assert_true(strlen(err) < 400);

	/* 3 MB in: stdin is the spool file, read whole. */
	assert_non_null(msg);
	for (size_t i = 0; i < big; i++)
		msg[i] = i % 80 == 79 ? '\n' : (char)('a' + i % 26);
	snprintf(cmd, sizeof(cmd), "wc -c > '%s/n'", f->root);
	cfg.target = cmd;
	assert_int_equal(store(&cfg, NULL, msg, big, &st, &err), 0);
	char *text = slurp(P(f, "n"), NULL);
	assert_int_equal(atol(text), (long)big);
	free(text);
	free(msg);
}

/* ---- the pure pieces -------------------------------------------------------- */

static void test_quote_split_everywhere(void **state)
{
	static const char in[] = "From a\n>From b\n>>From c\nFrom\nFro\n"
				 ">Fromx\nFromFrom \n>\n>>>\nx From y\n"
				 "From ";
	static const char want[] = ">From a\n>>From b\n>>>From c\nFrom\nFro\n"
				   ">Fromx\nFromFrom \n>\n>>>\nx From y\n"
				   ">From ";
	uint8_t out[256];

	(void)state;
	for (size_t chunk = 1; chunk <= sizeof(in); chunk++) {
		struct mbox_quote q;
		size_t n = 0;

		mbox_quote_init(&q);
		for (size_t pos = 0; pos < sizeof(in) - 1; pos += chunk) {
			size_t len = sizeof(in) - 1 - pos;
			if (len > chunk)
				len = chunk;
			size_t w = mbox_quote(&q, in + pos, len, out + n);
			assert_true(w <= MBOX_QUOTE_OUT_MAX(len));
			n += w;
		}
		n += mbox_quote_finish(&q, out + n);
		assert_int_equal(n, sizeof(want) - 1);
		assert_memory_equal(out, want, n);
		assert_int_equal(mbox_quote_last(&q), ' ');
	}
	/* A message that ends held: "Fro" comes out at the end. */
	struct mbox_quote q;
	size_t n;
	mbox_quote_init(&q);
	assert_int_equal(mbox_quote_last(&q), '\n');
	n = mbox_quote(&q, "x\nFro", 5, out);
	assert_int_equal(n, 2);
	assert_int_equal(mbox_quote_finish(&q, out + n), 3);
	assert_memory_equal(out, "x\nFro", 5);
	assert_int_equal(mbox_quote_last(&q), 'o');
}

static const struct {
	const char *head;
	const char *sender; /* "" = none */
} return_paths[] = {
	{ "Return-Path: <a@b.example>\n", "a@b.example" },
	{ "return-path:<a@b>\r\nX: y\r\n", "a@b" },
	{ "RETURN-PATH: \t a@b \t\n", "a@b" },
	{ "Return-Path: <>\n", "" },
	{ "Return-Path: <a b@c>\n", "" },
	{ "Return-Path: <a@b\n", "" },
	{ "Return-Path: <a@b>", "" },                 /* incomplete line */
	{ "X: y\nReturn-Path: <late@x>\n", "late@x" },
	{ "X: y\n\nReturn-Path: <body@x>\n", "" },    /* in the body */
	{ "Return-Path: <first@x>\nReturn-Path: <second@x>\n", "first@x" },
	{ "Return-Path: <\x80@x>\n", "" },
	{ "Return-Pathology: <a@b>\n", "" },
	{ "", "" },
};

static void test_return_path(void **state)
{
	char sender[MBOX_SENDER_MAX + 1];
	char longer[400];

	(void)state;
	for (size_t i = 0; i < sizeof(return_paths) / sizeof(return_paths[0]);
	     i++) {
		size_t n = mbox_return_path(return_paths[i].head,
					    strlen(return_paths[i].head),
					    sender);
		if (strcmp(sender, return_paths[i].sender) != 0 ||
		    n != strlen(return_paths[i].sender))
			fail_msg("case %zu: \"%s\" (%zu)", i, sender, n);
	}
	/* 256 characters are fine, 257 are not. */
	snprintf(longer, sizeof(longer), "Return-Path: <%0256d>\n", 0);
	assert_int_equal(mbox_return_path(longer, strlen(longer), sender), 256);
	snprintf(longer, sizeof(longer), "Return-Path: <%0257d>\n", 0);
	assert_int_equal(mbox_return_path(longer, strlen(longer), sender), 0);
}

static void test_from_line_and_received(void **state)
{
	char line[MBOX_FROM_LINE_MAX];
	char rcv[SINK_TRACE_MAX + 1];
	size_t n;

	(void)state;
	setenv("TZ", "UTC", 1);
	tzset();
	n = mbox_from_line(line, "a@b", 0);
	assert_string_equal(line, "From a@b Thu Jan  1 00:00:00 1970\n");
	assert_int_equal(n, strlen(line));
	mbox_from_line(line, NULL, 1700000000);
	assert_string_equal(line, "From MAILER-DAEMON Tue Nov 14 22:13:20 2023\n");
	mbox_from_line(line, "has space", 1700000000);
	assert_string_equal(line, "From MAILER-DAEMON Tue Nov 14 22:13:20 2023\n");

	n = sink_format_received(rcv, sizeof(rcv), "pop.example.org",
				 "me\n@x", 1700000000);
	assert_int_equal(n, strlen(rcv));
	assert_non_null(strstr(rcv, "Received: from pop.example.org by "));
	assert_non_null(strstr(rcv, " (popbox-fetch) with POP3 for <me?@x>; "
				    "Tue, 14 Nov 2023 22:13:20 +0000"));
	assert_int_equal(sink_format_received(rcv, 10, "a", "b", 0), 0);
	unsetenv("TZ");
	tzset();
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_maildir_exact),
		T(test_maildir_trace_and_abort),
		T(test_maildir_durability),
		T(test_maildir_unusable),
		T(test_maildir_group_commit),
		T(test_maildir_locate),
		T(test_mbox_two_messages),
		T(test_mbox_append_after_unterminated),
		T(test_mbox_not_a_file),
		T(test_mbox_lock_timeout),
		T(test_mbox_lock_waits),
		T(test_mbox_posix_lock_other_process),
		T(test_mbox_dotlock),
		T(test_mbox_truncated_on_write_error),
		T(test_mbox_truncated_on_fsync_error),
		T(test_mbox_new_file_durable),
		T(test_mbox_prepare_publish_exact),
		T(test_mbox_publish_new_file),
		T(test_mbox_prepare_abort_and_refusals),
		T(test_mbox_locate),
		T(test_mbox_dotlock_dead_holder),
		T(test_mda_gets_message_and_env),
		T(test_mda_no_injection),
		T(test_mda_exit_status),
		T(test_mda_timeout_kills_group),
		T(test_mda_output_flood_and_big_message),
		cmocka_unit_test(test_quote_split_everywhere),
		cmocka_unit_test(test_return_path),
		cmocka_unit_test(test_from_line_and_received),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
