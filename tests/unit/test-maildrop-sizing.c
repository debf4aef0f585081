/*
 * test-maildrop-sizing.c — the first login's sizing of messages by reading
 * them (names without ",W=", no cache), serial and on several threads.
 *
 * The parallel scan must list exactly what the serial one lists: the same
 * messages in the same order with the same UIDLs and wire sizes, over
 * files with bare LFs, CRLFs, bare CRs, no final newline, empty files,
 * NULs, files around the 64 KB read size (a CR LF split across two
 * reads), names with and without ",W=", flags in cur/, duplicate base
 * names.  Also: files removed while the scan runs (skipped, never an
 * error; every file that stays is listed), the atime of the messages left
 * alone (O_NOATIME), and the fallback for messages the reader does not
 * own (O_NOATIME refused: read anyway, same sizes).
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
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "maildrop.h"

#include "tmpdir-fixture.h"

/* Messages in the parallel-equals-serial Maildir. */
#define SZ_MESSAGES 600
/* The maildrop's read size (MD_READ_CHUNK in maildrop.c). */
#define SZ_CHUNK 65536
/* Files in the removal race, and how many of them are removed. */
#define SZ_RACE_FILES 3000
#define SZ_RACE_ROUNDS 6

struct fixture {
	char path[64];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->path, sizeof(f->path), "popbox-sizing");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	tmpdir_remove(f->path);
	free(f);
	maildrop_set_sizing(0, 512);
	return 0;
}

static void path_of(const struct fixture *f, const char *rel, char *out,
		    size_t size)
{
	assert_true((size_t)snprintf(out, size, "%s/%s", f->path, rel) < size);
}

static void mkmaildir(const struct fixture *f)
{
	static const char *const subs[] = { "new", "cur", "tmp" };
	char p[256];

	for (size_t i = 0; i < 3; i++) {
		path_of(f, subs[i], p, sizeof(p));
		assert_int_equal(mkdir(p, 0755), 0);
	}
}

static void put_file(const struct fixture *f, const char *rel,
		     const uint8_t *data, size_t len)
{
	char p[512];
	int fd;

	path_of(f, rel, p, sizeof(p));
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

/* RFC 1939's wire size, byte by byte: the reference the scan must meet. */
static uint64_t ref_wire_size(const uint8_t *p, size_t len)
{
	uint64_t n = len;

	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			n++;
	}
	if (len > 0 && p[len - 1] != '\n')
		n += 2;
	return n;
}

/*
 * Message i's bytes into buf (of SZ_CHUNK * 2 + 16): one of several
 * shapes, chosen by i, some long enough to take two or three reads.
 */
static size_t make_message(size_t i, uint8_t *buf)
{
	static const char *const shapes[] = {
		"Subject: lf\n\nbody\n",
		"Subject: crlf\r\n\r\nbody\r\n",
		"Subject: mixed\r\n\nbare\rcr\n\0nul\n",
		"Subject: no final newline\n\nlast line",
		"",
		"\n",
		"\r",
		"\r\n",
		"ends in cr\r",
		".\n..\n.\r\n",
	};
	size_t shape = i % 14, len, n = 0;

	if (shape < 10) {
		/* The NUL shape: its length, not strlen. */
		len = shape == 2 ? 31 : strlen(shapes[shape]);
		memcpy(buf, shapes[shape], len);
		return len;
	}
	/* Long ones: lines of i-dependent length, ending around the read
	   size; shape 13 puts a CR LF across the first read's end. */
	len = shape == 10 ? SZ_CHUNK - 1 :
	      shape == 11 ? SZ_CHUNK :
	      shape == 12 ? SZ_CHUNK + 1 : 2 * SZ_CHUNK + 7;
	while (n < len) {
		buf[n] = (uint8_t)('a' + (n + i) % 26);
		if ((n + i) % (40 + i % 50) == 0)
			buf[n] = (i & 1) ? '\n' : '\r';
		n++;
	}
	if (shape == 13) {
		buf[SZ_CHUNK - 1] = '\r';
		buf[SZ_CHUNK] = '\n';
	}
	return len;
}

/* Writes the test Maildir; expected[i] is message i's wire size. */
static void fill_maildir(const struct fixture *f, uint64_t *expected)
{
	uint8_t *buf = malloc(2 * SZ_CHUNK + 16);
	char name[256];

	assert_non_null(buf);
	mkmaildir(f);
	for (size_t i = 0; i < SZ_MESSAGES; i++) {
		size_t len = make_message(i, buf);

		expected[i] = ref_wire_size(buf, len);
		if (i % 5 == 4) /* ",W=" (true) in the name: not read */
			snprintf(name, sizeof(name),
				 "cur/%zu.M%zuP1.host,S=%zu,W=%llu:2,S",
				 1700000000 + i, i, len,
				 (unsigned long long)expected[i]);
		else if (i % 5 == 3)
			snprintf(name, sizeof(name), "cur/%zu.M%zuP1.host:2,",
				 1700000000 + i, i);
		else
			snprintf(name, sizeof(name), "new/%zu.M%zuP1.host",
				 1700000000 + i, i);
		put_file(f, name, buf, len);
	}
	/* A second file with message 0's base name: listed once. */
	put_file(f, "cur/1700000000.M0P1.host:2,S", (const uint8_t *)"x\n", 2);
	free(buf);
}

static void remove_cache(const struct fixture *f)
{
	char p[256];

	path_of(f, "popbox.cache", p, sizeof(p));
	assert_true(unlink(p) == 0 || errno == ENOENT);
}

/* Opens with the cache removed; the caller closes. */
static struct maildrop *open_fresh(const struct fixture *f)
{
	enum maildrop_status st;
	struct maildrop *md = NULL;
	const char *error = NULL;

	remove_cache(f);
	if (maildrop_open(f->path, NULL, &md, &st, &error) < 0)
		fail_msg("open failed: %d %s", st, error);
	return md;
}

/* The message number encoded in a UIDL-bearing name "<t>.M<i>P1...":
   the listing's UIDLs are the base names here (all safe characters). */
static size_t msg_number(const char *uidl)
{
	const char *m = strstr(uidl, ".M");

	assert_non_null(m);
	return (size_t)strtoul(m + 2, NULL, 10);
}

/* A listing copied out of a maildrop (which is then closed: the lock
   allows one open maildrop per Maildir). */
struct snapshot {
	size_t count;
	char (*uidl)[128];
	uint64_t *size;
};

static void snapshot_take(struct maildrop **md, struct snapshot *snap)
{
	const struct mailmsg *msgs = maildrop_list(*md, &snap->count);

	snap->uidl = calloc(snap->count + 1, sizeof(*snap->uidl));
	snap->size = calloc(snap->count + 1, sizeof(*snap->size));
	assert_non_null(snap->uidl);
	assert_non_null(snap->size);
	for (size_t i = 0; i < snap->count; i++) {
		assert_true((size_t)snprintf(snap->uidl[i], sizeof(snap->uidl[i]),
					     "%s", msgs[i].uidl) <
			    sizeof(snap->uidl[i]));
		snap->size[i] = msgs[i].wire_size;
	}
	maildrop_close(md);
}

static void snapshot_free(struct snapshot *snap)
{
	free(snap->uidl);
	free(snap->size);
}

static void assert_same(const struct snapshot *a, const struct snapshot *b)
{
	assert_int_equal(a->count, b->count);
	for (size_t i = 0; i < a->count; i++) {
		assert_string_equal(a->uidl[i], b->uidl[i]);
		assert_int_equal(a->size[i], b->size[i]);
	}
}

/* Every size is RFC 1939's for the file the UIDL names. */
static void assert_sizes(const struct snapshot *snap, const uint64_t *expected)
{
	for (size_t i = 0; i < snap->count; i++)
		assert_int_equal(snap->size[i],
				 expected[msg_number(snap->uidl[i])]);
}

/* Serial, two threads and four threads (from the first file on) list the
   same, every size is RFC 1939's, and what the parallel scan cached is
   what the next open lists. */
static void test_parallel_equals_serial(void **state)
{
	struct fixture *f = *state;
	uint64_t *expected = calloc(SZ_MESSAGES, sizeof(*expected));
	struct snapshot serial, two, four, cached;
	enum maildrop_status st;
	struct maildrop *md;
	const char *error;

	assert_non_null(expected);
	fill_maildir(f, expected);
	maildrop_set_sizing(1, 0);
	md = open_fresh(f);
	snapshot_take(&md, &serial);
	assert_int_equal(serial.count, SZ_MESSAGES);
	assert_sizes(&serial, expected);

	maildrop_set_sizing(2, 0);
	md = open_fresh(f);
	snapshot_take(&md, &two);
	maildrop_set_sizing(4, 0);
	md = open_fresh(f);
	snapshot_take(&md, &four);
	assert_same(&serial, &two);
	assert_same(&serial, &four);

	/* The cache four threads wrote. */
	assert_int_equal(maildrop_open(f->path, NULL, &md, &st, &error), 0);
	snapshot_take(&md, &cached);
	assert_same(&serial, &cached);

	snapshot_free(&serial);
	snapshot_free(&two);
	snapshot_free(&four);
	snapshot_free(&cached);
	free(expected);
}

/* ---- files removed while the scan runs --------------------------------- */

struct remover {
	const struct fixture *f;
	atomic_bool go;
	size_t removed;
};

/* Removes every odd-numbered message, from the last one down. */
static void *remover_run(void *arg)
{
	struct remover *r = arg;
	char p[256];

	while (!atomic_load(&r->go))
		; /* released right before the open */
	for (size_t i = SZ_RACE_FILES; i-- > 0;) {
		if (i % 2 == 0)
			continue;
		snprintf(p, sizeof(p), "%s/new/%zu.M%zuP1.host", r->f->path,
			 1700000000 + i, i);
		if (unlink(p) == 0)
			r->removed++;
	}
	return NULL;
}

static void race_fill(const struct fixture *f)
{
	char name[128], body[64];

	for (size_t i = 0; i < SZ_RACE_FILES; i++) {
		int len = snprintf(body, sizeof(body), "Subject: %zu\n\n%zu\n",
				   i, i);

		snprintf(name, sizeof(name), "new/%zu.M%zuP1.host",
			 1700000000 + i, i);
		put_file(f, name, (const uint8_t *)body, (size_t)len);
	}
}

/* A message removed between readdir and its read is left out, never an
   error; every message that stays is listed, with its size. */
static void test_removed_during_scan(void **state)
{
	struct fixture *f = *state;
	struct remover r = { .f = f };
	enum maildrop_status st;
	struct snapshot snap;
	struct maildrop *md;
	const char *error;
	pthread_t tid;
	int ret;

	mkmaildir(f);
	maildrop_set_sizing(2, 0);
	for (int round = 0; round < SZ_RACE_ROUNDS; round++) {
		bool seen[SZ_RACE_FILES] = { false };
		size_t kept = 0;

		race_fill(f);
		atomic_init(&r.go, false);
		r.removed = 0;
		remove_cache(f);
		assert_int_equal(pthread_create(&tid, NULL, remover_run, &r), 0);
		atomic_store(&r.go, true);
		ret = maildrop_open(f->path, NULL, &md, &st, &error);
		/* Joined before any assertion can leave the test. */
		assert_int_equal(pthread_join(tid, NULL), 0);
		if (ret < 0)
			fail_msg("open failed: %d %s", st, error);
		snapshot_take(&md, &snap);
		for (size_t i = 0; i < snap.count; i++) {
			size_t m = msg_number(snap.uidl[i]);
			char body[64];

			assert_true(m < SZ_RACE_FILES);
			assert_false(seen[m]);
			seen[m] = true;
			assert_int_equal(snap.size[i],
					 (uint64_t)snprintf(body, sizeof(body),
						"Subject: %zu\n\n%zu\n", m, m) + 3);
		}
		for (size_t m = 0; m < SZ_RACE_FILES; m += 2) {
			assert_true(seen[m]);
			kept++;
		}
		assert_int_equal(r.removed, SZ_RACE_FILES / 2);
		assert_true(snap.count >= kept);
		snapshot_free(&snap);
		/* Next round: the even ones go too, all are written again. */
		for (size_t m = 0; m < SZ_RACE_FILES; m += 2) {
			char p[256];

			snprintf(p, sizeof(p), "%s/new/%zu.M%zuP1.host",
				 f->path, 1700000000 + m, m);
			assert_int_equal(unlink(p), 0);
		}
	}
}

/* ---- atime -------------------------------------------------------------- */

static struct timespec atime_of(const char *p)
{
	struct stat st;

	assert_int_equal(stat(p, &st), 0);
	return st.st_atim;
}

/* Reading a message for its size leaves its atime alone: with relatime,
   a first read would otherwise dirty every message's inode. */
static void test_atime_untouched(void **state)
{
	struct fixture *f = *state;
	struct timespec old[2] = { { 1000000000, 0 }, { 0, UTIME_OMIT } };
	struct maildrop *md;
	char p[256];

	mkmaildir(f);
	put_file(f, "new/1700000000.M1P1.host",
		 (const uint8_t *)"Subject: a\n\nb\n", 14);
	path_of(f, "new/1700000000.M1P1.host", p, sizeof(p));
	/* An atime older than the mtime: relatime updates it on a read. */
	assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);
	maildrop_set_sizing(1, 0);
	md = open_fresh(f);
	maildrop_close(&md);
	assert_int_equal(atime_of(p).tv_sec, 1000000000);
}

/* ---- messages the reader does not own ----------------------------------- */

/*
 * In a child that runs as nobody: the messages belong to root, so
 * O_NOATIME is refused (EPERM); the scan reads them without it, and
 * serial and parallel agree with the sizes root's scan found.
 */
static void test_not_owner(void **state)
{
	struct fixture *f = *state;
	uint64_t *expected;
	struct snapshot root_snap;
	struct maildrop *md;
	int status;
	pid_t pid;

	if (geteuid() != 0)
		skip();
	expected = calloc(SZ_MESSAGES, sizeof(*expected));
	assert_non_null(expected);
	fill_maildir(f, expected);
	maildrop_set_sizing(1, 0);
	md = open_fresh(f);
	snapshot_take(&md, &root_snap);
	remove_cache(f);
	/* The Maildir and its lock are nobody's; the messages root's. */
	assert_int_equal(chown(f->path, 65534, 65534), 0);
	{
		char p[256];

		path_of(f, "popbox.lock", p, sizeof(p));
		assert_int_equal(chown(p, 65534, 65534), 0);
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct snapshot snap;
		enum maildrop_status st;
		const char *error;
		bool ok = true;

		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(2);
		for (unsigned int threads = 1; threads <= 4 && ok; threads *= 2) {
			char p[256];

			maildrop_set_sizing(threads, 0);
			snprintf(p, sizeof(p), "%s/popbox.cache", f->path);
			(void)unlink(p);
			if (maildrop_open(f->path, NULL, &md, &st, &error) < 0)
				_exit(3);
			snapshot_take(&md, &snap);
			ok = snap.count == root_snap.count;
			for (size_t i = 0; ok && i < snap.count; i++)
				ok = strcmp(snap.uidl[i], root_snap.uidl[i]) == 0 &&
				     snap.size[i] == root_snap.size[i];
			snapshot_free(&snap);
		}
		_exit(ok ? 0 : 4);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	snapshot_free(&root_snap);
	free(expected);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(x) cmocka_unit_test_setup_teardown(x, setup, teardown)
		T(test_parallel_equals_serial),
		T(test_removed_during_scan),
		T(test_atime_untouched),
		T(test_not_owner),
#undef T
	};
	log_set_level(LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
