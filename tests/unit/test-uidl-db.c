/*
 * test-uidl-db.c — the downloaded-UIDL table (fetch/uidl-db.h): the
 * parser on good and damaged files (table-driven), the table itself
 * (set, replace, retain, 100,000 records), and the file in a temporary
 * directory: missing = empty, a damaged file is an error and stays
 * untouched, saves and appends round-trip, the torn last line of a
 * crashed append is ignored, the lock keeps a second run out, and the
 * durability calls come in the right order (tmp written, fsync, rename,
 * fsync of the directory; fdatasync per append) and their failures are
 * reported and leave the old file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "uidl-db.h"

#include "durability-fixture.h"
#include "tmpdir-fixture.h"

struct fixture {
	char root[64];
	char path[128];   /* root/acct.uidl: does not exist before a test */
	char tmp[160];
	char dir[128];    /* root, as /proc/self/fd shows it */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->root, sizeof(f->root), "popbox-uidl");
	snprintf(f->path, sizeof(f->path), "%s/acct.uidl", f->root);
	snprintf(f->tmp, sizeof(f->tmp), "%s.tmp", f->path);
	assert_non_null(realpath(f->root, f->dir));
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

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_int_equal(fwrite(text, 1, strlen(text), fp), strlen(text));
	assert_int_equal(fclose(fp), 0);
}

/* The whole file, malloc'ed, NUL-terminated. */
static char *read_file(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf;
	long n;

	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static void assert_file(const char *path, const char *expected)
{
	char *text = read_file(path);

	assert_string_equal(text, expected);
	free(text);
}

static struct uidl_db_rec rec(int64_t t, uint64_t size, enum uidl_db_state st)
{
	struct uidl_db_rec r = { .first_seen = t, .size = size, .state = st };
	return r;
}

static void assert_rec(const struct uidl_db *db, const char *uidl, int64_t t,
		       uint64_t size, enum uidl_db_state st)
{
	struct uidl_db_rec r;

	assert_true(uidl_db_get(db, uidl, strlen(uidl), &r));
	assert_int_equal(r.first_seen, t);
	assert_int_equal(r.size, size);
	assert_int_equal(r.state, st);
}

/* ---- the parser ------------------------------------------------------------ */

static void test_parse_good(void **state)
{
	static const char text[] =
		"popbox-fetch-uidl 1\n"
		"1700000000 1234 F 000000017a2b\n"
		"0 0 H !~\n"
		"1099511627776 281474976710656 F "
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
		"1700000100 99 H 000000017a2b\n";
	struct uidl_db *db = uidl_db_new();
	struct uidl_db_load_info info;
	const char *err = NULL;
	struct uidl_db_rec r;

	(void)state;
	assert_int_equal(uidl_db_parse(db, text, sizeof(text) - 1, &info, &err),
			 0);
	assert_int_equal(info.records, 3);
	assert_int_equal(info.torn_bytes, 0);
	assert_int_equal(uidl_db_count(db), 3);
	/* The later line for a UIDL wins. */
	assert_rec(db, "000000017a2b", 1700000100, 99, UIDL_DB_HEADERS);
	assert_rec(db, "!~", 0, 0, UIDL_DB_HEADERS);
	assert_rec(db,
		   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		   UIDL_DB_TIME_MAX, UIDL_DB_SIZE_MAX, UIDL_DB_FULL);
	assert_false(uidl_db_get(db, "000000017a2", 11, &r));
	assert_false(uidl_db_get(db, "", 0, &r));
	assert_false(uidl_db_dirty(db));
	uidl_db_free(&db);
	assert_null(db);
}

static void test_parse_header_only(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct uidl_db_load_info info;
	const char *err;

	(void)state;
	assert_int_equal(uidl_db_parse(db, UIDL_DB_HEADER,
				       strlen(UIDL_DB_HEADER), &info, &err), 0);
	assert_int_equal(info.records, 0);
	assert_int_equal(uidl_db_count(db), 0);
	uidl_db_free(&db);
}

static void test_parse_torn_tail(void **state)
{
	static const char text[] = "popbox-fetch-uidl 1\n"
				   "5 6 F abc\n"
				   "7 8 F de";
	static const char zeros[] = "popbox-fetch-uidl 1\n"
				    "5 6 F abc\n"
				    "\0\0\0\0\0\0\0";
	struct uidl_db *db = uidl_db_new();
	struct uidl_db_load_info info;
	struct uidl_db_rec r;
	const char *err;

	(void)state;
	assert_int_equal(uidl_db_parse(db, text, sizeof(text) - 1, &info, &err),
			 0);
	assert_int_equal(info.torn_bytes, 8);
	assert_int_equal(uidl_db_count(db), 1);
	assert_false(uidl_db_get(db, "de", 2, &r));
	uidl_db_free(&db);

	/* A crash may also leave zeros where the append did not land. */
	db = uidl_db_new();
	assert_int_equal(uidl_db_parse(db, zeros, sizeof(zeros) - 1, &info,
				       &err), 0);
	assert_int_equal(info.torn_bytes, 7);
	assert_int_equal(uidl_db_count(db), 1);
	uidl_db_free(&db);
}

static const struct {
	const char *text;
	const char *error;     /* a part of the message */
} damaged[] = {
	{ "", "line 1: empty file" },
	{ "popbox-fetch-uidl 1", "line 1: no complete header line" },
	{ "popbox-fetch-uidl 2\n", "line 1: a format version" },
	{ "popbox-fetch-uidl 1 \n", "line 1: a format version" },
	{ "mpop uidls\n", "line 1: not a popbox-fetch UIDL file" },
	{ "popbox-fetch-uidl 1\r\n", "line 1: a format version" },
	{ "popbox-fetch-uidl 1\n\n", "line 2: too few fields" },
	{ "popbox-fetch-uidl 1\n1 2 F\n", "line 2: too few fields" },
	{ "popbox-fetch-uidl 1\n1 2 F \n", "line 2: too few fields" },
	{ "popbox-fetch-uidl 1\n1 2 F a\n3 4 F b c\n", "line 3: bad UIDL" },
	{ "popbox-fetch-uidl 1\n1 2 F a\r\n", "line 2: bad UIDL" },
	{ "popbox-fetch-uidl 1\n1 2 F a\x7f\n", "line 2: bad UIDL" },
	{ "popbox-fetch-uidl 1\n1 2 F "
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
	  "line 2: bad UIDL" },
	{ "popbox-fetch-uidl 1\n-1 2 F a\n", "line 2: bad time" },
	{ "popbox-fetch-uidl 1\nx 2 F a\n", "line 2: bad time" },
	{ "popbox-fetch-uidl 1\n1099511627777 2 F a\n", "line 2: bad time" },
	{ "popbox-fetch-uidl 1\n00000000000001 2 F a\n", "line 2: bad time" },
	{ "popbox-fetch-uidl 1\n1  2 F a\n", "line 2: bad size" },
	{ "popbox-fetch-uidl 1\n1 281474976710657 F a\n", "line 2: bad size" },
	{ "popbox-fetch-uidl 1\n1 2 f a\n", "line 2: bad state" },
	{ "popbox-fetch-uidl 1\n1 2 FH a\n", "line 2: bad state" },
	{ "popbox-fetch-uidl 1\n 1 2 F a\n", "line 2: bad time" },
	/* Pending lines: P<state> <name> <uidl>. */
	{ "popbox-fetch-uidl 1\n1 2 P n a\n", "line 2: bad state" },
	{ "popbox-fetch-uidl 1\n1 2  PF n a\n", "line 2: bad state" },
	{ "popbox-fetch-uidl 1\n1 2 PX n a\n", "line 2: bad state" },
	{ "popbox-fetch-uidl 1\n1 2 PFF n a\n", "line 2: bad state" },
	{ "popbox-fetch-uidl 1\n1 2 FP n a\n", "line 2: bad state" },
	{ "popbox-fetch-uidl 1\n1 2 PF n\n", "line 2: too few fields" },
	{ "popbox-fetch-uidl 1\n1 2 PF\n", "line 2: bad file name" },
	{ "popbox-fetch-uidl 1\n1 2 PF  a\n", "line 2: bad file name" },
	{ "popbox-fetch-uidl 1\n1 2 PF n/x a\n", "line 2: bad file name" },
	{ "popbox-fetch-uidl 1\n1 2 PF n\x01 a\n", "line 2: bad file name" },
	{ "popbox-fetch-uidl 1\n1 2 PF n a b\n", "line 2: bad UIDL" },
	{ "popbox-fetch-uidl 1\nx 2 PF n a\n", "line 2: bad time" },
	{ "popbox-fetch-uidl 1\n1 2 PF "
	  "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"
	  " a\n", "line 2: bad file name" },
};

static void test_parse_damaged(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(damaged) / sizeof(damaged[0]); i++) {
		struct uidl_db *db = uidl_db_new();
		const char *err = NULL;

		assert_int_equal(uidl_db_parse(db, damaged[i].text,
					       strlen(damaged[i].text), NULL,
					       &err), -1);
		assert_non_null(err);
		if (strstr(err, damaged[i].error) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err,
				 damaged[i].error);
		/* Nothing half-loaded. */
		assert_int_equal(uidl_db_count(db), 0);
		uidl_db_free(&db);
	}
}

/* ---- the table ----------------------------------------------------------- */

static void test_set_replace_invalid(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct uidl_db_rec r = rec(10, 20, UIDL_DB_FULL);
	const char *err;
	char long_uidl[UIDL_DB_UIDL_MAX + 1];

	(void)state;
	assert_int_equal(uidl_db_set(db, "a", 1, &r, &err), 0);
	assert_true(uidl_db_dirty(db));
	r = rec(11, 21, UIDL_DB_HEADERS);
	assert_int_equal(uidl_db_set(db, "a", 1, &r, &err), 0);
	assert_int_equal(uidl_db_count(db), 1);
	assert_rec(db, "a", 11, 21, UIDL_DB_HEADERS);

	assert_int_equal(uidl_db_set(db, "a b", 3, &r, &err), -1);
	assert_int_equal(uidl_db_set(db, "", 0, &r, &err), -1);
	memset(long_uidl, 'x', sizeof(long_uidl));
	assert_int_equal(uidl_db_set(db, long_uidl, sizeof(long_uidl), &r,
				     &err), -1);
	assert_int_equal(uidl_db_set(db, long_uidl, UIDL_DB_UIDL_MAX, &r,
				     &err), 0);
	r = rec(-1, 0, UIDL_DB_FULL);
	assert_int_equal(uidl_db_set(db, "b", 1, &r, &err), -1);
	r = rec(0, UIDL_DB_SIZE_MAX + 1, UIDL_DB_FULL);
	assert_int_equal(uidl_db_set(db, "b", 1, &r, &err), -1);
	r = rec(0, 0, (enum uidl_db_state)'X');
	assert_int_equal(uidl_db_set(db, "b", 1, &r, &err), -1);
	assert_int_equal(uidl_db_count(db), 2);
	/* A table without a file cannot be saved. */
	assert_int_equal(uidl_db_save(db, &err), -1);
	uidl_db_free(&db);
}

static bool keep_even(const char *uidl, size_t len,
		      const struct uidl_db_rec *r, void *ctx)
{
	(void)uidl;
	(void)len;
	(*(int *)ctx)++;
	return r->size % 2 == 0;
}

#define MANY 100000

static void test_many_and_retain(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct timespec t0, t1;
	char uidl[32];
	const char *err;
	int calls = 0;

	(void)state;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < MANY; i++) {
		struct uidl_db_rec r = rec(i, (uint64_t)i, UIDL_DB_FULL);
		int n = snprintf(uidl, sizeof(uidl), "UID%08d", i);
		assert_int_equal(uidl_db_set(db, uidl, (size_t)n, &r, &err), 0);
	}
	for (int i = 0; i < MANY; i++) {
		struct uidl_db_rec r;
		int n = snprintf(uidl, sizeof(uidl), "UID%08d", i);
		assert_true(uidl_db_get(db, uidl, (size_t)n, &r));
		assert_int_equal(r.size, i);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* O(1) operations: far under a second even under ASan. */
	assert_true(t1.tv_sec - t0.tv_sec < 5);
	assert_int_equal(uidl_db_count(db), MANY);

	assert_int_equal(uidl_db_retain(db, keep_even, &calls), MANY / 2);
	assert_int_equal(calls, MANY);
	assert_int_equal(uidl_db_count(db), MANY / 2);
	for (int i = 0; i < MANY; i++) {
		struct uidl_db_rec r;
		int n = snprintf(uidl, sizeof(uidl), "UID%08d", i);
		assert_int_equal(uidl_db_get(db, uidl, (size_t)n, &r),
				 i % 2 == 0);
	}
	/* File order is kept: the survivors in their order. */
	for (size_t i = 0; i < uidl_db_count(db); i++) {
		const char *u;
		size_t len;
		struct uidl_db_rec r;
		uidl_db_at(db, i, &u, &len, &r);
		assert_int_equal(r.size, i * 2);
	}
	uidl_db_free(&db);
}

static void test_format_line(void **state)
{
	char line[UIDL_DB_LINE_MAX + 1];
	struct uidl_db_rec r = rec(UIDL_DB_TIME_MAX, UIDL_DB_SIZE_MAX,
				   UIDL_DB_HEADERS);
	char uidl[UIDL_DB_UIDL_MAX];
	size_t n;

	(void)state;
	memset(uidl, '~', sizeof(uidl));
	n = uidl_db_format_line(line, uidl, sizeof(uidl), &r);
	/* The longest line there can be. */
	assert_int_equal(n, UIDL_DB_LINE_MAX);
	assert_memory_equal(line, "1099511627776 281474976710656 H ~~", 34);
	assert_int_equal(line[n - 1], '\n');
}

/* ---- the file ------------------------------------------------------------- */

static void test_missing_file_then_record(void **state)
{
	struct fixture *f = *state;
	struct uidl_db *db;
	struct uidl_db_load_info info;
	struct uidl_db_rec r = rec(1700000000, 42, UIDL_DB_FULL);
	const char *err = NULL;

	assert_int_equal(uidl_db_open(f->path, &db, &info, &err), 0);
	assert_true(info.missing);
	assert_int_equal(uidl_db_count(db), 0);
	assert_int_equal(access(f->path, F_OK), -1);

	/* The first record of a run is a full save... */
	assert_int_equal(uidl_db_record(db, "m1", 2, &r, &err), 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n1700000000 42 F m1\n");
	/* ...the next ones appends. */
	r = rec(1700000001, 43, UIDL_DB_HEADERS);
	assert_int_equal(uidl_db_record(db, "m2", 2, &r, &err), 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n1700000000 42 F m1\n"
			     "1700000001 43 H m2\n");
	/* A replaced record is appended too; a reload takes the last. */
	r = rec(1700000002, 43, UIDL_DB_FULL);
	assert_int_equal(uidl_db_record(db, "m2", 2, &r, &err), 0);
	assert_false(uidl_db_dirty(db));
	uidl_db_free(&db);

	assert_int_equal(uidl_db_open(f->path, &db, &info, &err), 0);
	assert_false(info.missing);
	assert_int_equal(info.records, 2);
	assert_rec(db, "m1", 1700000000, 42, UIDL_DB_FULL);
	assert_rec(db, "m2", 1700000002, 43, UIDL_DB_FULL);
	/* A save writes each UIDL once. */
	assert_int_equal(uidl_db_save(db, &err), 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n1700000000 42 F m1\n"
			     "1700000002 43 F m2\n");
	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(access(f->tmp, F_OK), -1);
	uidl_db_free(&db);
}

static void test_damaged_file_untouched(void **state)
{
	struct fixture *f = *state;
	static const char text[] = "popbox-fetch-uidl 1\n"
				   "1 2 F good\n"
				   "1 2 F bad one\n";
	struct uidl_db *db = NULL;
	const char *err = NULL;

	write_file(f->path, text);
	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), -1);
	assert_null(db);
	assert_non_null(strstr(err, f->path));
	assert_non_null(strstr(err, "line 3: bad UIDL"));
	assert_non_null(strstr(err, "left as it is"));
	assert_file(f->path, text);
	/* The lock went with the failed open: the user can try again. */
	write_file(f->path, "popbox-fetch-uidl 1\n1 2 F good\n");
	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), 0);
	uidl_db_free(&db);
}

static void test_symlink_refused(void **state)
{
	struct fixture *f = *state;
	char target[160];
	struct uidl_db *db = NULL;
	const char *err = NULL;

	snprintf(target, sizeof(target), "%s/real", f->root);
	write_file(target, UIDL_DB_HEADER);
	assert_int_equal(symlink(target, f->path), 0);
	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), -1);
	assert_non_null(strstr(err, "symlink"));
}

static void test_torn_file_rewritten(void **state)
{
	struct fixture *f = *state;
	struct uidl_db *db;
	struct uidl_db_load_info info;
	struct uidl_db_rec r = rec(9, 9, UIDL_DB_FULL);
	const char *err;

	write_file(f->path, "popbox-fetch-uidl 1\n1 2 F a\n3 4 F b");
	assert_int_equal(uidl_db_open(f->path, &db, &info, &err), 0);
	assert_int_equal(info.torn_bytes, 7);
	/* The first record rewrites the file: the torn part goes, never
	   glued to the new line. */
	assert_int_equal(uidl_db_record(db, "c", 1, &r, &err), 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n1 2 F a\n9 9 F c\n");
	uidl_db_free(&db);
}

static void test_lock(void **state)
{
	struct fixture *f = *state;
	struct uidl_db *db1, *db2 = NULL;
	const char *err = NULL;

	assert_int_equal(uidl_db_open(f->path, &db1, NULL, &err), 0);
	/* OFD locks: a second open in the same process is kept out too. */
	assert_int_equal(uidl_db_open(f->path, &db2, NULL, &err), -1);
	assert_null(db2);
	assert_non_null(strstr(err, "in use by another popbox-fetch"));
	uidl_db_free(&db1);
	assert_int_equal(uidl_db_open(f->path, &db2, NULL, &err), 0);
	uidl_db_free(&db2);
}

static bool keep_none(const char *uidl, size_t len,
		      const struct uidl_db_rec *r, void *ctx)
{
	(void)uidl;
	(void)len;
	(void)r;
	(void)ctx;
	return false;
}

static void test_durability_order(void **state)
{
	struct fixture *f = *state;
	struct uidl_db *db;
	struct uidl_db_rec r = rec(5, 5, UIDL_DB_FULL);
	const char *err;
	char line[512];
	int i_sync, i_rename, i_dir;

	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), 0);
	dur_reset();
	assert_int_equal(uidl_db_record(db, "x", 1, &r, &err), 0);
	/* fsync of the temp file, rename, fsync of the directory. */
	snprintf(line, sizeof(line), "fsync %s/acct.uidl.tmp", f->dir);
	i_sync = dur_find(0, line);
	snprintf(line, sizeof(line), "rename %s %s", f->tmp, f->path);
	i_rename = dur_find(0, line);
	snprintf(line, sizeof(line), "fsync %s", f->dir);
	i_dir = dur_find(0, line);
	assert_true(i_sync >= 0 && i_rename > i_sync && i_dir > i_rename);

	/* An append: one fdatasync of the file itself. */
	dur_reset();
	assert_int_equal(uidl_db_record(db, "y", 1, &r, &err), 0);
	assert_int_equal(dur.n, 1);
	snprintf(line, sizeof(line), "fdatasync %s/acct.uidl", f->dir);
	assert_string_equal(dur.lines[0], line);

	/* After the table changed in memory (pruning), the next record is a
	   full save again, so the file never keeps what was removed. */
	assert_int_equal(uidl_db_retain(db, keep_none, NULL), 2);
	dur_reset();
	assert_int_equal(uidl_db_record(db, "z", 1, &r, &err), 0);
	snprintf(line, sizeof(line), "rename %s %s", f->tmp, f->path);
	assert_true(dur_find(0, line) >= 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n5 5 F z\n");
	uidl_db_free(&db);
}

static void test_save_fsync_fails(void **state)
{
	struct fixture *f = *state;
	static const char old[] = "popbox-fetch-uidl 1\n1 1 F old\n";
	struct uidl_db *db;
	struct uidl_db_rec r = rec(2, 2, UIDL_DB_FULL);
	const char *err = NULL;

	write_file(f->path, old);
	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), 0);
	dur_reset();
	dur.fail_sync_at = 1; /* the temp file's fsync */
	assert_int_equal(uidl_db_record(db, "new", 3, &r, &err), -1);
	assert_non_null(strstr(err, "fsync"));
	/* The old file as it was, no temp file left, nothing renamed. */
	assert_file(f->path, old);
	assert_int_equal(access(f->tmp, F_OK), -1);
	assert_true(uidl_db_dirty(db));
	/* The record stays in memory and goes with the next save. */
	dur_reset();
	assert_int_equal(uidl_db_save(db, &err), 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n1 1 F old\n2 2 F new\n");
	uidl_db_free(&db);
}

static void test_append_fdatasync_fails(void **state)
{
	struct fixture *f = *state;
	struct uidl_db *db;
	struct uidl_db_rec r = rec(3, 3, UIDL_DB_FULL);
	const char *err = NULL;

	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), 0);
	assert_int_equal(uidl_db_record(db, "a", 1, &r, &err), 0);
	dur_reset();
	dur.fail_sync_at = 1;
	assert_int_equal(uidl_db_record(db, "b", 1, &r, &err), -1);
	assert_non_null(strstr(err, "append"));
	/* The next record rewrites the whole file. */
	dur_reset();
	assert_int_equal(uidl_db_record(db, "c", 1, &r, &err), 0);
	assert_file(f->path,
		    "popbox-fetch-uidl 1\n3 3 F a\n3 3 F b\n3 3 F c\n");
	uidl_db_free(&db);
}

/* A group commit: one write and one fdatasync for several records; an
   invalid one or a failed fdatasync makes the whole batch fail. */
static void test_record_batch(void **state)
{
	struct fixture *f = *state;
	struct uidl_db *db;
	struct uidl_db_batch_item items[3] = {
		{ "b1", 2, rec(10, 1, UIDL_DB_FULL) },
		{ "b2", 2, rec(11, 2, UIDL_DB_HEADERS) },
		{ "b3", 2, rec(12, 3, UIDL_DB_FULL) },
	};
	const char *err = NULL;
	char line[512];

	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), 0);
	/* The first of a run: a full save. */
	assert_int_equal(uidl_db_record_batch(db, items, 1, &err), 0);
	dur_reset();
	assert_int_equal(uidl_db_record_batch(db, items + 1, 2, &err), 0);
	assert_int_equal(dur.n, 1);
	snprintf(line, sizeof(line), "fdatasync %s/acct.uidl", f->dir);
	assert_string_equal(dur.lines[0], line);
	assert_file(f->path, "popbox-fetch-uidl 1\n10 1 F b1\n11 2 H b2\n"
			     "12 3 F b3\n");
	assert_int_equal(uidl_db_record_batch(db, items, 0, &err), -1);
	assert_int_equal(uidl_db_record_batch(db, items,
					      UIDL_DB_BATCH_MAX + 1, &err),
			 -1);
	items[1].len = 0;
	assert_int_equal(uidl_db_record_batch(db, items, 2, &err), -1);
	items[1].len = 2;
	dur_reset();
	dur.fail_sync_at = 1;
	items[0].uidl = "b4";
	assert_int_equal(uidl_db_record_batch(db, items, 1, &err), -1);
	assert_non_null(strstr(err, "append"));
	assert_true(uidl_db_dirty(db));
	uidl_db_free(&db);
}

/* ---- pending records --------------------------------------------------- */

static void assert_pending(const struct uidl_db *db, size_t i,
			   const char *uidl, int64_t t, uint64_t size,
			   enum uidl_db_state st, const char *name)
{
	const char *u, *n;
	size_t len;
	struct uidl_db_rec r;

	assert_true(i < uidl_db_pending_count(db));
	uidl_db_pending_at(db, i, &u, &len, &r, &n);
	assert_int_equal(len, strlen(uidl));
	assert_memory_equal(u, uidl, len);
	assert_int_equal(r.first_seen, t);
	assert_int_equal(r.size, size);
	assert_int_equal(r.state, st);
	assert_string_equal(n, name);
}

static void test_parse_pending(void **state)
{
	static const char text[] =
		"popbox-fetch-uidl 1\n"
		"5 50 F old\n"
		"7 70 PF 1700000000.M1P2R3.host new1\n"
		"8 80 PH 1700000001.M1P2R3.host new2\n"
		"9 90 PF 1700000002.M1P2R3.host old\n";
	struct uidl_db *db = uidl_db_new();
	struct uidl_db_load_info info;
	const char *err = NULL;
	bool stored[3] = { true, false, true };

	(void)state;
	assert_int_equal(uidl_db_parse(db, text, strlen(text), &info, &err), 0);
	assert_int_equal(info.records, 1);
	assert_int_equal(info.pending, 3);
	/* A pending line is not a record, and leaves one that exists. */
	assert_int_equal(uidl_db_count(db), 1);
	assert_rec(db, "old", 5, 50, UIDL_DB_FULL);
	assert_false(uidl_db_get(db, "new1", 4, &(struct uidl_db_rec){ 0 }));
	assert_pending(db, 0, "new1", 7, 70, UIDL_DB_FULL,
		       "1700000000.M1P2R3.host");
	assert_pending(db, 1, "new2", 8, 80, UIDL_DB_HEADERS,
		       "1700000001.M1P2R3.host");
	assert_pending(db, 2, "old", 9, 90, UIDL_DB_FULL,
		       "1700000002.M1P2R3.host");
	assert_false(uidl_db_dirty(db));
	assert_int_equal(uidl_db_settle_pending(db, stored, &err), 0);
	assert_int_equal(uidl_db_pending_count(db), 0);
	assert_rec(db, "new1", 7, 70, UIDL_DB_FULL);
	assert_false(uidl_db_get(db, "new2", 4, &(struct uidl_db_rec){ 0 }));
	assert_rec(db, "old", 9, 90, UIDL_DB_FULL);
	assert_int_equal(uidl_db_count(db), 2);
	/* The file still has the pending lines: a save is due. */
	assert_true(uidl_db_dirty(db));
	uidl_db_free(&db);
}

static void test_record_pending(void **state)
{
	struct fixture *f = *state;
	struct uidl_db *db;
	struct uidl_db_batch_item items[2] = {
		{ "p1", 2, rec(10, 1, UIDL_DB_FULL) },
		{ "p2", 2, rec(11, 2, UIDL_DB_HEADERS) },
	};
	const char *names[2] = { "base1.host", "base2.host" };
	const char *bad_names[2] = { "base1.host", "../x" };
	bool stored[2] = { true, true };
	struct uidl_db_load_info info;
	const char *err = NULL;
	char line[512];

	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), 0);
	assert_int_equal(uidl_db_record(db, "r1", 2, &(struct uidl_db_rec){
		.first_seen = 1, .size = 2, .state = UIDL_DB_FULL }, &err), 0);
	dur_reset();
	/* After a save: one append, one fdatasync. */
	assert_int_equal(uidl_db_record_pending(db, items, names, 2, &err), 0);
	assert_int_equal(dur.n, 1);
	snprintf(line, sizeof(line), "fdatasync %s/acct.uidl", f->dir);
	assert_string_equal(dur.lines[0], line);
	assert_file(f->path, "popbox-fetch-uidl 1\n1 2 F r1\n"
			     "10 1 PF base1.host p1\n11 2 PH base2.host p2\n");
	assert_int_equal(uidl_db_pending_count(db), 2);
	/* Invalid input changes nothing. */
	assert_int_equal(uidl_db_record_pending(db, items, bad_names, 2, &err),
			 -1);
	assert_int_equal(uidl_db_record_pending(db, items, names, 0, &err), -1);
	assert_int_equal(uidl_db_pending_count(db), 2);
	/* Settled: in memory, nothing written; a save writes F lines. */
	dur_reset();
	assert_int_equal(uidl_db_settle_pending(db, stored, &err), 0);
	assert_int_equal(dur.n, 0);
	assert_rec(db, "p2", 11, 2, UIDL_DB_HEADERS);
	assert_true(uidl_db_dirty(db));
	/* An append after a settle stays an append. */
	items[0].uidl = "p3";
	assert_int_equal(uidl_db_record_pending(db, items, names, 1, &err), 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n1 2 F r1\n"
			     "10 1 PF base1.host p1\n11 2 PH base2.host p2\n"
			     "10 1 PF base1.host p3\n");
	/* A save: plain records and the unsettled pending one. */
	assert_int_equal(uidl_db_save(db, &err), 0);
	assert_false(uidl_db_dirty(db));
	assert_file(f->path, "popbox-fetch-uidl 1\n1 2 F r1\n10 1 F p1\n"
			     "11 2 H p2\n10 1 PF base1.host p3\n");
	uidl_db_free(&db);
	/* And it loads back the same. */
	assert_int_equal(uidl_db_open(f->path, &db, &info, &err), 0);
	assert_int_equal(info.records, 3);
	assert_int_equal(info.pending, 1);
	assert_pending(db, 0, "p3", 10, 1, UIDL_DB_FULL, "base1.host");
	uidl_db_free(&db);
}

/* When the table has changes only a save writes, the pending lines go in
   that save; when the append fails, they stay pending in memory. */
static void test_record_pending_save_and_failure(void **state)
{
	struct fixture *f = *state;
	struct uidl_db *db;
	struct uidl_db_batch_item item = { "q1", 2, rec(3, 4, UIDL_DB_FULL) };
	const char *name = "qbase";
	const char *err = NULL;

	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), 0);
	/* No file yet: a full save. */
	assert_int_equal(uidl_db_record_pending(db, &item, &name, 1, &err), 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n3 4 PF qbase q1\n");
	dur_reset();
	dur.fail_sync_at = 1;
	item.uidl = "q2";
	assert_int_equal(uidl_db_record_pending(db, &item, &name, 1, &err), -1);
	assert_non_null(strstr(err, "append"));
	assert_int_equal(uidl_db_pending_count(db), 2);
	assert_true(uidl_db_dirty(db));
	dur_reset();
	assert_int_equal(uidl_db_save(db, &err), 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n3 4 PF qbase q1\n"
			     "3 4 PF qbase q2\n");
	uidl_db_free(&db);
}

static void test_dir_fsync_fails(void **state)
{
	struct fixture *f = *state;
	char line[512];
	struct uidl_db *db;
	struct uidl_db_rec r = rec(3, 3, UIDL_DB_FULL);
	const char *err = NULL;

	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), 0);
	dur_reset();
	dur.fail_sync_at = 2; /* the directory's */
	assert_int_equal(uidl_db_record(db, "a", 1, &r, &err), -1);
	assert_non_null(strstr(err, "directory"));
	/* Not durable, so not reported as saved; the next one is again a
	   full save. */
	assert_true(uidl_db_dirty(db));
	dur_reset();
	assert_int_equal(uidl_db_record(db, "b", 1, &r, &err), 0);
	snprintf(line, sizeof(line), "rename %s %s", f->tmp, f->path);
	assert_true(dur_find(0, line) >= 0);
	assert_file(f->path, "popbox-fetch-uidl 1\n3 3 F a\n3 3 F b\n");
	uidl_db_free(&db);
}

static void test_big_file_round_trip(void **state)
{
	struct fixture *f = *state;
	struct uidl_db *db;
	struct uidl_db_load_info info;
	char uidl[80];
	const char *err;

	assert_int_equal(uidl_db_open(f->path, &db, NULL, &err), 0);
	for (int i = 0; i < MANY; i++) {
		struct uidl_db_rec r = rec(1700000000 + i, (uint64_t)i * 7,
					   i % 3 ? UIDL_DB_FULL :
						   UIDL_DB_HEADERS);
		int n = snprintf(uidl, sizeof(uidl),
				 "%08x-%s", i, "0123456789abcdef0123456789");
		assert_int_equal(uidl_db_set(db, uidl, (size_t)n, &r, &err), 0);
	}
	assert_int_equal(uidl_db_save(db, &err), 0);
	uidl_db_free(&db);
	assert_int_equal(uidl_db_open(f->path, &db, &info, &err), 0);
	assert_int_equal(info.records, MANY);
	for (int i = 0; i < MANY; i += 997) {
		int n = snprintf(uidl, sizeof(uidl),
				 "%08x-%s", i, "0123456789abcdef0123456789");
		struct uidl_db_rec r;
		assert_true(uidl_db_get(db, uidl, (size_t)n, &r));
		assert_int_equal(r.first_seen, 1700000000 + i);
		assert_int_equal(r.size, (uint64_t)i * 7);
		assert_int_equal(r.state, i % 3 ? UIDL_DB_FULL : UIDL_DB_HEADERS);
	}
	uidl_db_free(&db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_header_only),
		cmocka_unit_test(test_parse_torn_tail),
		cmocka_unit_test(test_parse_damaged),
		cmocka_unit_test(test_set_replace_invalid),
		cmocka_unit_test(test_many_and_retain),
		cmocka_unit_test(test_format_line),
		cmocka_unit_test(test_parse_pending),
		cmocka_unit_test_setup_teardown(test_record_pending, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_record_pending_save_and_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_file_then_record,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_file_untouched,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_torn_file_rewritten, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_durability_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_save_fsync_fails, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_append_fdatasync_fails,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_batch, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_dir_fsync_fails, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_big_file_round_trip, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
