/*
 * killshim.c — an LD_PRELOAD shim for fault-injection tests: the process
 * kills itself with SIGKILL at a chosen file-system call.
 *
 * No test hook lives in popboxd: this library wraps the libc calls that
 * change files (unlink, rename, fsync, creating or writable opens, writes
 * to and closes of regular files), numbers the ones made after it is armed,
 * and raises SIGKILL at the one asked for, before or after it runs.  A test
 * runs the daemon once per step N = 1, 2, ... until a run completes without
 * being killed, which proves a kill at every step has been tried.
 *
 * Environment:
 *   POPBOX_KILL_AT     "N": the Nth counted call of any kind;
 *                      "kind:N": the Nth of one kind (unlink, rename,
 *                      fsync, open, write, close); unset: count only.
 *   POPBOX_KILL_WHEN   "before" (default: the call never happens) or
 *                      "after" (it happens, then the kill).
 *   POPBOX_KILL_ARM    a path: nothing is counted until it exists (the test
 *                      creates it just before the operation under test, so
 *                      start-up and login do not count).  Unset: armed.
 *   POPBOX_KILL_TRACE  a file, opened at start-up (before privileges are
 *                      dropped; the test makes it writable for all, for
 *                      processes that start as another user): one line
 *                      per counted call, "<pid> <seq> <kind> <call>
 *                      <path>" (the descriptor's path, then "/<name>" for
 *                      calls that take one), and "kill <pid> <seq>" just
 *                      before the kill.
 *
 * Counts are per process (each process that maps the shim has its own), so
 * once popboxd runs mail sessions in processes of their own the kill still
 * lands on the process doing the work; the pid in the trace tells which.
 *
 * Built by the test itself: cc -shared -fPIC -o killshim.so killshim.c -ldl.
 * Calls inside libc (stdio, opendir) do not go through these wrappers.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum kind { K_UNLINK, K_RENAME, K_FSYNC, K_OPEN, K_WRITE, K_CLOSE, K_COUNT };

static const char *const kind_names[K_COUNT] = {
	"unlink", "rename", "fsync", "open", "write", "close",
};

static struct {
	long at;              /* kill at this count; 0: never */
	int at_kind;          /* -1: count every kind */
	bool after;
	const char *arm_path;
	int trace_fd;
} cfg = { 0, -1, false, NULL, -1 };

static bool armed;
static long seq_all;
static long seq_kind[K_COUNT];

static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *,
			     unsigned int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static int (*real_close)(int);

static void *next(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (p == NULL) {
		fprintf(stderr, "killshim: no %s\n", name);
		abort();
	}
	return p;
}

static void bad_config(const char *what, const char *value)
{
	fprintf(stderr, "killshim: bad %s: %s\n", what, value);
	abort();
}

/* "N" or "kind:N" into cfg.at and cfg.at_kind. */
static void parse_at(const char *at)
{
	const char *colon = strchr(at, ':'), *num = at;
	char *end;

	if (colon != NULL) {
		size_t len = (size_t)(colon - at);

		for (int k = 0; k < K_COUNT; k++) {
			if (strlen(kind_names[k]) == len &&
			    strncmp(at, kind_names[k], len) == 0)
				cfg.at_kind = k;
		}
		if (cfg.at_kind < 0)
			bad_config("POPBOX_KILL_AT", at);
		num = colon + 1;
	}
	cfg.at = strtol(num, &end, 10);
	if (cfg.at <= 0 || *end != '\0')
		bad_config("POPBOX_KILL_AT", at);
}

__attribute__((constructor)) static void shim_init(void)
{
	const char *at = getenv("POPBOX_KILL_AT");
	const char *when = getenv("POPBOX_KILL_WHEN");
	const char *trace = getenv("POPBOX_KILL_TRACE");

	real_unlink = next("unlink");
	real_unlinkat = next("unlinkat");
	real_rename = next("rename");
	real_renameat = next("renameat");
	real_renameat2 = next("renameat2");
	real_fsync = next("fsync");
	real_fdatasync = next("fdatasync");
	real_open = next("open");
	real_openat = next("openat");
	real_write = next("write");
	real_pwrite = next("pwrite");
	real_close = next("close");

	if (at != NULL && at[0] != '\0')
		parse_at(at);
	if (when != NULL && strcmp(when, "before") != 0 &&
	    strcmp(when, "after") != 0)
		bad_config("POPBOX_KILL_WHEN", when);
	cfg.after = when != NULL && strcmp(when, "after") == 0;
	cfg.arm_path = getenv("POPBOX_KILL_ARM");
	armed = cfg.arm_path == NULL || cfg.arm_path[0] == '\0';
	if (trace != NULL && trace[0] != '\0')
		cfg.trace_fd = real_open(trace, O_WRONLY | O_APPEND | O_CREAT |
					 O_CLOEXEC, 0666);
}

static bool is_armed(void)
{
	if (!__atomic_load_n(&armed, __ATOMIC_ACQUIRE) &&
	    access(cfg.arm_path, F_OK) == 0)
		__atomic_store_n(&armed, true, __ATOMIC_RELEASE);
	return __atomic_load_n(&armed, __ATOMIC_ACQUIRE);
}

/* The path of an open descriptor, for the trace ("?" if unknown). */
static void fd_path(int fd, char *out, size_t size)
{
	char link[64];
	ssize_t n;

	if (fd == AT_FDCWD) {
		snprintf(out, size, ".");
		return;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, out, size - 1);
	if (n < 0)
		n = snprintf(out, size, "?fd%d", fd);
	out[n] = '\0';
}

__attribute__((format(printf, 1, 2)))
static void trace_line(const char *fmt, ...)
{
	char line[2 * PATH_MAX + 128];
	va_list ap;
	int n;

	if (cfg.trace_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	line[n - 1] = '\n';
	(void)real_write(cfg.trace_fd, line, (size_t)n);
}

/* Kills the whole process now (SIGKILL cannot be caught or delayed). */
static void die(long seq)
{
	trace_line("kill %ld %ld\n", (long)getpid(), seq);
	kill(getpid(), SIGKILL);
	for (;;)
		pause();
}

/*
 * Counts one call; kills before it if it is the chosen one and mode is
 * "before".  Returns the sequence number to hand to after() (0: not
 * counted or not the chosen one).
 */
static long step(enum kind k, const char *call, int dirfd, const char *name)
{
	char dir[PATH_MAX];
	long all, mine, s;

	if (!is_armed())
		return 0;
	all = __atomic_add_fetch(&seq_all, 1, __ATOMIC_SEQ_CST);
	mine = __atomic_add_fetch(&seq_kind[k], 1, __ATOMIC_SEQ_CST);
	fd_path(dirfd, dir, sizeof(dir));
	trace_line("%ld %ld %s %s %s%s%s\n", (long)getpid(), all,
		   kind_names[k], call, dir, name != NULL ? "/" : "",
		   name != NULL ? name : "");
	s = cfg.at_kind < 0 ? all : (cfg.at_kind == (int)k ? mine : 0);
	if (cfg.at == 0 || s != cfg.at)
		return 0;
	if (!cfg.after)
		die(all);
	return all;
}

static void after(long seq)
{
	if (seq != 0)
		die(seq);
}

/* Is fd a regular file (open for writing, if writable is set)? */
static bool fd_is_file(int fd, bool writable)
{
	struct stat st;
	int fl;

	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return false;
	if (!writable)
		return true;
	fl = fcntl(fd, F_GETFL);
	return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY;
}

/* Does this open carry a mode argument?  (O_TMPFILE includes the
   O_DIRECTORY bit, so test all of its bits.) */
static bool takes_mode(int flags)
{
	return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

static bool open_counts(int flags)
{
	return (flags & O_CREAT) != 0 || (flags & O_ACCMODE) != O_RDONLY;
}

int unlink(const char *path)
{
	long s = step(K_UNLINK, "unlink", AT_FDCWD, path);
	int r = real_unlink(path), e = errno;

	after(s);
	errno = e;
	return r;
}

int unlinkat(int dirfd, const char *path, int flags)
{
	long s = step(K_UNLINK, "unlinkat", dirfd, path);
	int r = real_unlinkat(dirfd, path, flags), e = errno;

	after(s);
	errno = e;
	return r;
}

int rename(const char *from, const char *to)
{
	long s = step(K_RENAME, "rename", AT_FDCWD, to);
	int r = real_rename(from, to), e = errno;

	after(s);
	errno = e;
	return r;
}

int renameat(int fromfd, const char *from, int tofd, const char *to)
{
	long s = step(K_RENAME, "renameat", tofd, to);
	int r = real_renameat(fromfd, from, tofd, to), e = errno;

	(void)fromfd;
	after(s);
	errno = e;
	return r;
}

int renameat2(int fromfd, const char *from, int tofd, const char *to,
	      unsigned int flags)
{
	long s = step(K_RENAME, "renameat2", tofd, to);
	int r = real_renameat2(fromfd, from, tofd, to, flags), e = errno;

	after(s);
	errno = e;
	return r;
}

int fsync(int fd)
{
	long s = step(K_FSYNC, "fsync", fd, NULL);
	int r = real_fsync(fd), e = errno;

	after(s);
	errno = e;
	return r;
}

int fdatasync(int fd)
{
	long s = step(K_FSYNC, "fdatasync", fd, NULL);
	int r = real_fdatasync(fd), e = errno;

	after(s);
	errno = e;
	return r;
}

int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	long s = 0;
	int r, e;

	if (takes_mode(flags)) {
		va_list ap;

		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	if (open_counts(flags))
		s = step(K_OPEN, "open", AT_FDCWD, path);
	r = real_open(path, flags, mode);
	e = errno;
	after(s);
	errno = e;
	return r;
}

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	long s = 0;
	int r, e;

	if (takes_mode(flags)) {
		va_list ap;

		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	if (open_counts(flags))
		s = step(K_OPEN, "openat", dirfd, path);
	r = real_openat(dirfd, path, flags, mode);
	e = errno;
	after(s);
	errno = e;
	return r;
}

ssize_t write(int fd, const void *buf, size_t len)
{
	long s = 0;
	ssize_t r;
	int e;

	/* Sockets, pipes and the log are not file-system steps. */
	if (fd > 2 && is_armed() && fd_is_file(fd, false))
		s = step(K_WRITE, "write", fd, NULL);
	r = real_write(fd, buf, len);
	e = errno;
	after(s);
	errno = e;
	return r;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	long s = 0;
	ssize_t r;
	int e;

	if (fd > 2 && is_armed() && fd_is_file(fd, false))
		s = step(K_WRITE, "pwrite", fd, NULL);
	r = real_pwrite(fd, buf, len, off);
	e = errno;
	after(s);
	errno = e;
	return r;
}

int close(int fd)
{
	long s = 0;
	int r, e;

	/* Only closes that end a write to a file (the cache's temp file):
	   closing a message after RETR is not a step. */
	if (fd > 2 && fd != cfg.trace_fd && is_armed() && fd_is_file(fd, true))
		s = step(K_CLOSE, "close", fd, NULL);
	r = real_close(fd);
	e = errno;
	after(s);
	errno = e;
	return r;
}
