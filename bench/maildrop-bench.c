/*
 * maildrop-bench.c — how long maildrop_open() takes on a big Maildir.
 *
 *   maildrop-bench [--no-wire-field] [--drop-caches] DIR N
 *   maildrop-bench [--threads N] [--drop-caches] --existing DIR ROUNDS
 *
 * Creates the Maildir DIR (which must not exist) with N messages of about
 * 4 KB, half in new/ and half in cur/ with ":2,S", named Dovecot-style with
 * ",S=" and ",W=" (or, with --no-wire-field, without them, so sizes must be
 * computed by reading every file).  Waits until the directories are more
 * than 2 s old (so the cache may be trusted without readdir), then times
 * open-to-listing for:
 *   first      no cache yet: readdir both directories, sizes from names
 *   cached     the cache is current: no readdir at all
 *   delivery   one new message arrived: readdir, sizes from the cache
 *   no-cache   popbox.cache deleted: as first, dentries may be cached
 * With --drop-caches the page cache is dropped before each case (needs
 * root and a writable /proc/sys/vm/drop_caches; says so if not).
 * Prints one line per case: "case ms messages".  DIR is left in place.
 *
 * With --existing, DIR is a Maildir already there (bench/corpus.py's, or
 * one bench/bigdrop.sh kept): ROUNDS times, popbox.cache is removed and
 * the maildrop opened ("first" each time: every message without ",W=" is
 * read), then once more with the cache it wrote ("cached", which takes
 * the fast path only if the directories are more than 2 s old).  For
 * profiling the first login alone: perf record -g maildrop-bench ...
 * --threads N reads with N threads (maildrop_set_sizing; 1: serial).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "maildrop.h"

/* Lines of the generated message body and their length: ~4 KB. */
#define BENCH_LINES 60
#define BENCH_LINE_LEN 66
/* More than the maildrop's 2 s timestamp slack. */
#define BENCH_AGE_NS 2200000000L

static double bench_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void bench_die(const char *what)
{
	fprintf(stderr, "maildrop-bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The message text: headers, a blank line, BENCH_LINES lines of text. */
static size_t bench_message(char *buf, size_t cap, unsigned long i)
{
	size_t n = (size_t)snprintf(buf, cap,
		"From: bench@example.org\nTo: user@example.org\n"
		"Subject: message %lu\n\n", i);

	for (int l = 0; l < BENCH_LINES && n + BENCH_LINE_LEN + 1 < cap; l++) {
		for (int c = 0; c < BENCH_LINE_LEN; c++)
			buf[n++] = (char)('a' + (c + l + (int)i) % 26);
		buf[n++] = '\n';
	}
	return n;
}

static void bench_deliver(const char *dir, unsigned long i, bool wire_field)
{
	char msg[8192], name[4200];
	size_t len = bench_message(msg, sizeof(msg), i);
	bool cur = i % 2 == 1;
	int fd;

	/* Every line ends in a bare LF: the wire form adds one CR each;
	   the headers have 4 lines (incl. the blank one). */
	snprintf(name, sizeof(name), "%s/%s/%lu.M%luP%lu.bench%s", dir,
		 cur ? "cur" : "new", 1700000000UL + i / 100, i % 1000000,
		 (unsigned long)getpid(), "");
	if (wire_field)
		snprintf(name + strlen(name), sizeof(name) - strlen(name),
			 ",S=%zu,W=%zu", len, len + 4 + BENCH_LINES);
	if (cur)
		strcat(name, ":2,S");
	fd = open(name, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, msg, len) != (ssize_t)len || close(fd) < 0)
		bench_die(name);
}

static void bench_drop_caches(bool drop)
{
	static bool warned;
	FILE *f;

	if (!drop)
		return;
	sync();
	f = fopen("/proc/sys/vm/drop_caches", "w");
	if (f == NULL || fputs("3\n", f) < 0 || fclose(f) != 0) {
		if (!warned)
			fprintf(stderr, "maildrop-bench: cannot drop the page "
					"cache (%s); figures are warm\n",
				strerror(errno));
		warned = true;
	}
}

static void bench_case(const char *label, const char *dir, bool drop)
{
	enum maildrop_status st;
	struct maildrop *md;
	const char *error;
	double t0;
	size_t n;

	bench_drop_caches(drop);
	t0 = bench_now_ms();
	if (maildrop_open(dir, NULL, &md, &st, &error) < 0) {
		fprintf(stderr, "maildrop-bench: open: %s\n", error);
		exit(1);
	}
	maildrop_list(md, &n);
	printf("%-9s %9.1f ms %8zu messages\n", label, bench_now_ms() - t0, n);
	fflush(stdout);
	maildrop_close(&md);
}

/* --existing: first logins on DIR, cache removed before each. */
static int bench_existing(const char *dir, unsigned long rounds, bool drop)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/popbox.cache", dir);
	for (unsigned long r = 0; r < rounds; r++) {
		if (unlink(path) < 0 && errno != ENOENT)
			bench_die(path);
		bench_case("first", dir, drop);
	}
	bench_case("cached", dir, drop);
	return 0;
}

int main(int argc, char **argv)
{
	bool wire_field = true, drop = false, existing = false;
	char path[4200];
	unsigned long n;
	int a = 1;

	for (; a < argc && argv[a][0] == '-'; a++) {
		if (strcmp(argv[a], "--no-wire-field") == 0)
			wire_field = false;
		else if (strcmp(argv[a], "--drop-caches") == 0)
			drop = true;
		else if (strcmp(argv[a], "--existing") == 0)
			existing = true;
		else if (strcmp(argv[a], "--threads") == 0 && a + 1 < argc)
			maildrop_set_sizing((unsigned int)strtoul(argv[++a],
								  NULL, 10),
					    0);
		else
			break;
	}
	if (argc - a != 2 || (n = strtoul(argv[a + 1], NULL, 10)) == 0) {
		fprintf(stderr, "usage: maildrop-bench [--no-wire-field] "
				"[--drop-caches] DIR N\n"
				"       maildrop-bench [--threads N] "
				"[--drop-caches] --existing DIR ROUNDS\n");
		return 2;
	}
	const char *dir = argv[a];
	if (existing)
		return bench_existing(dir, n, drop);
	if (mkdir(dir, 0700) < 0)
		bench_die(dir);
	for (const char *sub = "new\0cur\0tmp\0"; *sub; sub += 4) {
		snprintf(path, sizeof(path), "%s/%s", dir, sub);
		if (mkdir(path, 0700) < 0)
			bench_die(path);
	}
	for (unsigned long i = 0; i < n; i++)
		bench_deliver(dir, i, wire_field);
	struct timespec wait = { BENCH_AGE_NS / 1000000000L,
				 BENCH_AGE_NS % 1000000000L };
	nanosleep(&wait, NULL);
	bench_case("first", dir, drop);
	bench_case("cached", dir, drop);
	bench_deliver(dir, n, wire_field);
	bench_case("delivery", dir, drop);
	snprintf(path, sizeof(path), "%s/popbox.cache", dir);
	if (unlink(path) < 0)
		bench_die(path);
	bench_case("no-cache", dir, drop);
	return 0;
}
