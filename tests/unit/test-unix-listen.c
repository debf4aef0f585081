/*
 * test-unix-listen.c — making a listening unix socket at a path
 * (lib/unix-listen.h): mode and owner, stale and live sockets, files that
 * are not sockets, and the race where the socket file is swapped for a
 * symlink right after bind() (a directory another user can write: an
 * MTA's queue directory).
 *
 * bind() is wrapped here (the test program's own definition wins over
 * libc's for the library it links): when `swap_to` is set, the wrapper
 * binds, then puts a symlink to swap_to where the socket was, so
 * whatever unix_listen() does to the path next lands on the symlink.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "unix-listen.h"

#include "tmpdir-fixture.h"

static const char *swap_to;   /* set: the bind wrapper swaps in a symlink */

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	int (*real_bind)(int, const struct sockaddr *, socklen_t) =
		(int (*)(int, const struct sockaddr *, socklen_t))
		dlsym(RTLD_NEXT, "bind");
	int ret = real_bind(fd, addr, len);

	if (ret == 0 && swap_to != NULL && addr->sa_family == AF_UNIX) {
		const char *path = ((const struct sockaddr_un *)addr)->sun_path;
		char moved[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];

		snprintf(moved, sizeof(moved), "%s.moved", path);
		if (rename(path, moved) < 0 || symlink(swap_to, path) < 0)
			fail_msg("swap: %s", strerror(errno));
	}
	return ret;
}

struct fixture {
	char dir[64];
	char path[96];     /* dir/sock/s: its directory does not exist yet */
	char canary[96];   /* dir/canary: mode 0600, owned by us */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int fd;

	assert_non_null(f);
	tmpdir_make(f->dir, sizeof(f->dir), "popbox-ulisten");
	snprintf(f->path, sizeof(f->path), "%s/sock/s", f->dir);
	snprintf(f->canary, sizeof(f->canary), "%s/canary", f->dir);
	fd = open(f->canary, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, 0600), 0);
	close(fd);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	swap_to = NULL;
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static struct unix_listen_params params(mode_t mode)
{
	struct unix_listen_params p = {
		.type = SOCK_STREAM, .mode = mode, .backlog = 8,
	};
	return p;
}

static bool can_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	bool ok;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	ok = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
	close(fd);
	return ok;
}

/* The mode comes out exact whatever the process's umask. */
static void test_mode_and_directory(void **state)
{
	struct fixture *f = *state;
	const mode_t modes[] = { 0600, 0666 };
	struct unix_listen_id id;
	const char *error;
	struct stat st;

	for (size_t i = 0; i < 2; i++) {
		struct unix_listen_params p = params(modes[i]);
		mode_t old = umask(i == 0 ? 0 : 0077);
		int fd = unix_listen(f->path, &p, &id, &error);

		umask(old);
		assert_true(fd >= 0);
		assert_true(id.made);
		assert_int_equal(lstat(f->path, &st), 0);
		assert_true(S_ISSOCK(st.st_mode));
		assert_int_equal(st.st_mode & 07777, modes[i]);
		assert_true(can_connect(f->path));
		close(fd);
		/* Nobody listens now: the next round replaces it. */
	}
}

static void test_live_socket_left_alone(void **state)
{
	struct fixture *f = *state;
	struct unix_listen_params p = params(0600);
	struct unix_listen_id id, id2;
	const char *error;
	int fd = unix_listen(f->path, &p, &id, &error);

	assert_true(fd >= 0);
	assert_int_equal(unix_listen(f->path, &p, &id2, &error), -1);
	assert_false(id2.made);
	assert_non_null(strstr(error, "listening"));
	assert_true(can_connect(f->path));
	close(fd);
}

static void test_not_a_socket_left_alone(void **state)
{
	struct fixture *f = *state;
	struct unix_listen_params p = params(0600);
	struct unix_listen_id id;
	const char *error;
	struct stat st;

	assert_int_equal(unix_listen(f->canary, &p, &id, &error), -1);
	assert_non_null(strstr(error, "not a socket"));
	assert_int_equal(lstat(f->canary, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

/* Removed at the end only while it is still the socket that was made. */
static void test_unlink_only_ours(void **state)
{
	struct fixture *f = *state;
	struct unix_listen_params p = params(0600);
	struct unix_listen_id id;
	const char *error;
	struct stat st;
	int fd = unix_listen(f->path, &p, &id, &error);

	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(unlink(f->path), 0);
	assert_int_equal(link(f->canary, f->path), 0);
	unix_listen_unlink(f->path, &id);
	assert_int_equal(lstat(f->path, &st), 0);   /* not ours: kept */
	assert_int_equal(unlink(f->path), 0);

	fd = unix_listen(f->path, &p, &id, &error);
	assert_true(fd >= 0);
	close(fd);
	unix_listen_unlink(f->path, &id);
	assert_int_equal(lstat(f->path, &st), -1);
	assert_int_equal(errno, ENOENT);
}

/*
 * The socket swapped for a symlink to another file right after bind: that
 * file's mode must not change (a chmod of the path after bind made it
 * 0666), nor its owner (a chown that follows links gave it away).
 */
static void test_swapped_for_symlink(void **state)
{
	struct fixture *f = *state;
	struct unix_listen_params p = params(0666);
	struct unix_listen_id id;
	const char *error;
	struct stat st;
	int fd;

	if (geteuid() == 0) {
		p.set_owner = true;
		p.uid = 65534;
		p.gid = 65534;
	}
	swap_to = f->canary;
	fd = unix_listen(f->path, &p, &id, &error);
	swap_to = NULL;
	/* Refused: what is at the path now is not the socket. */
	assert_int_equal(fd, -1);
	assert_false(id.made);
	assert_int_equal(stat(f->canary, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(st.st_gid, getegid());
}

static void test_path_too_long(void **state)
{
	struct unix_listen_params p = params(0600);
	struct unix_listen_id id;
	const char *error;
	char path[200];
	(void)state;

	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(unix_listen(path, &p, &id, &error), -1);
	assert_non_null(strstr(error, "too long"));
}

#define T(x) cmocka_unit_test_setup_teardown(x, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_mode_and_directory),
		T(test_live_socket_left_alone),
		T(test_not_a_socket_left_alone),
		T(test_unlink_only_ours),
		T(test_swapped_for_symlink),
		T(test_path_too_long),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
