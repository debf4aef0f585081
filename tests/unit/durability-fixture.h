/*
 * durability-fixture.h — watching and breaking the calls that make data
 * durable, for the unit tests of code that writes files (test-sink,
 * test-uidl-db).
 *
 * The test program defines fsync(), fdatasync() and rename() itself;
 * being in the executable, these take the place of libc's for every
 * caller in the program, libpopbox.a included.  Each call is logged as
 * "fsync <path>", "fdatasync <path>" or "rename <from> <to>" (paths of
 * descriptors through /proc/self/fd) and then passed on to the real
 * function, unless the test asked for the n-th fsync or fdatasync to
 * fail with EIO.  Include once, after <cmocka.h>, in a test program.
 */
#ifndef POPBOX_TEST_DURABILITY_FIXTURE_H
#define POPBOX_TEST_DURABILITY_FIXTURE_H

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define DUR_LOG_MAX 256
#define DUR_LINE_MAX 512

static struct {
	char lines[DUR_LOG_MAX][DUR_LINE_MAX];
	int n;
	int syncs;          /* fsync + fdatasync calls so far */
	int fail_sync_at;   /* 1-based call number to fail; 0 = none */
} dur;

static void dur_reset(void)
{
	memset(&dur, 0, sizeof(dur));
}

static void dur_fd_path(int fd, char *buf, size_t size)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, size - 1);
	buf[n < 0 ? 0 : n] = '\0';
}

static void dur_log(const char *what, const char *a, const char *b)
{
	if (dur.n >= DUR_LOG_MAX)
		return;
	snprintf(dur.lines[dur.n++], DUR_LINE_MAX, "%s %s%s%s", what, a,
		 b != NULL ? " " : "", b != NULL ? b : "");
}

/* The index of the first log line from `from` on equal to text, or -1. */
static int dur_find(int from, const char *text)
{
	for (int i = from; i < dur.n; i++)
		if (strcmp(dur.lines[i], text) == 0)
			return i;
	return -1;
}

static int dur_sync(const char *name, int fd)
{
	char path[DUR_LINE_MAX / 2];
	int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);

	dur_fd_path(fd, path, sizeof(path));
	dur_log(name, path, NULL);
	if (++dur.syncs == dur.fail_sync_at) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}

int fsync(int fd)
{
	return dur_sync("fsync", fd);
}

int fdatasync(int fd)
{
	return dur_sync("fdatasync", fd);
}

int rename(const char *from, const char *to)
{
	int (*real)(const char *, const char *) =
		(int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");

	dur_log("rename", from, to);
	return real(from, to);
}

#endif
