/*
 * test-deliver.c — delivery into real temporary Maildirs (deliver.h).
 *
 * Each test gets a fresh directory under /tmp (removed afterwards) and
 * checks what lands on disk: the bytes (added headers, CRLF -> LF, bare
 * CRs, no final newline), the name (,S= and ,W= that lib/maildir-name.c
 * parses and that equal the file size and the wire size), what a POP3
 * session sees of it (maildrop_open: LIST sizes, no message opened), the
 * quota (bytes, messages, a message larger than the quota), the size
 * limit (stopped while writing), and that abort and every failure leave
 * nothing in new/ or tmp/.
 *
 * The group commit of popbox-fetch (struct deliver_dir): many messages
 * through one open Maildir, publish without sync then one deliver_dir_sync,
 * abort after prepare, and the crash recovery (deliver_dir_locate in tmp/,
 * new/ and cur/, deliver_dir_publish_tmp and the names it refuses).
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "deliver.h"
#include "maildir-name.h"
#include "maildrop.h"
#include "user-policy.h"
#include "wire.h"

#include "tmpdir-fixture.h"

struct fixture {
	char root[64];
	char path[96];    /* root/Maildir: does not exist before a test */
	char buf[512];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->root, sizeof(f->root), "popbox-deliver");
	snprintf(f->path, sizeof(f->path), "%s/Maildir", f->root);
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

/* f->path + "/" + rel, in f->buf. */
static const char *P(struct fixture *f, const char *rel)
{
	snprintf(f->buf, sizeof(f->buf), "%s/%s", f->path, rel);
	return f->buf;
}

/* Entries of a subdirectory (not "." or ".."); the first one's name in
   name_r if not NULL. */
static int count_in(struct fixture *f, const char *sub, char *name_r,
		    size_t size)
{
	DIR *d = opendir(P(f, sub));
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n++ == 0 && name_r != NULL)
			snprintf(name_r, size, "%s", de->d_name);
	}
	closedir(d);
	return n;
}

static uint8_t *read_all(const char *path, size_t *len_r)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	uint8_t *buf;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len_r = (size_t)st.st_size;
	return buf;
}

static struct user_policy no_quota(void)
{
	struct user_policy pol;

	user_policy_init(&pol);
	pol.quota_storage = 0;
	pol.quota_messages = 0;
	return pol;
}

/* Delivers msg in pieces of chunk bytes; returns 0 or -1 with *status_r. */
static int deliver_msg(struct fixture *f, const struct deliver_envelope *env,
		       const struct user_policy *pol, uint64_t limit,
		       const void *msg, size_t len, size_t chunk,
		       enum deliver_status *status_r, char **name_r)
{
	struct deliver *d;
	const char *error;

	if (deliver_begin(f->path, env, pol, 0, limit, &d, status_r,
			  &error) < 0)
		return -1;
	for (size_t pos = 0; pos < len; pos += chunk) {
		size_t n = len - pos < chunk ? len - pos : chunk;
		if (deliver_write(d, (const uint8_t *)msg + pos, n, status_r,
				  &error) < 0) {
			deliver_abort(&d);
			assert_null(d);
			return -1;
		}
	}
	return deliver_commit(&d, name_r, status_r, &error);
}

static const struct deliver_envelope test_env = {
	.return_path = "sender@example.org",
	.delivered_to = "alice@example.test",
};

/* The bytes on disk, byte for byte, whatever the pieces. */
static void test_content_exact(void **state)
{
	struct fixture *f = *state;
	static const char msg[] = "Subject: t\r\n\r\nline 1\r\nbare\rcr\n"
				  "lf only\n.dot\r\nno final newline\r";
	static const char want[] = "Return-Path: <sender@example.org>\n"
				   "Delivered-To: alice@example.test\n"
				   "Subject: t\n\nline 1\nbare\rcr\n"
				   "lf only\n.dot\nno final newline\r";
	struct user_policy pol = no_quota();
	enum deliver_status status;
	char *name, rel[300];
	size_t len;

	for (size_t chunk = 1; chunk <= sizeof(msg); chunk += 3) {
		assert_int_equal(deliver_msg(f, &test_env, &pol, 0, msg,
					     sizeof(msg) - 1, chunk, &status,
					     &name), 0);
		assert_int_equal(status, DELIVER_OK);
		assert_non_null(name);
		snprintf(rel, sizeof(rel), "new/%s", name);
		uint8_t *got = read_all(P(f, rel), &len);
		assert_int_equal(len, sizeof(want) - 1);
		assert_memory_equal(got, want, len);
		free(got);
		assert_int_equal(unlink(P(f, rel)), 0);
		free(name);
	}
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
}

/* The name parses, its ,S= is the file size and its ,W= the wire size. */
static void test_name_sizes(void **state)
{
	struct fixture *f = *state;
	static const char msg[] = "A: b\r\n\r\nx\ny\r\nz";
	struct user_policy pol = no_quota();
	enum deliver_status status;
	struct maildir_name mn;
	struct wire_size ws;
	struct stat st;
	char *name, rel[300];
	size_t len;

	assert_int_equal(deliver_msg(f, &test_env, &pol, 0, msg,
				     sizeof(msg) - 1, 5, &status, &name), 0);
	maildir_name_parse(name, strlen(name), &mn);
	assert_true(mn.has_size);
	assert_true(mn.has_wire_size);
	assert_int_equal(mn.base_len, strlen(name)); /* no ':' yet */
	assert_true(maildir_name_uidl_is_direct(name, mn.base_len) ||
		    mn.base_len > MAILDIR_NAME_UIDL_DIRECT_MAX);
	snprintf(rel, sizeof(rel), "new/%s", name);
	assert_int_equal(stat(P(f, rel), &st), 0);
	assert_int_equal(mn.size, (uint64_t)st.st_size);
	assert_int_equal(st.st_mode & 0777, 0600);
	uint8_t *got = read_all(P(f, rel), &len);
	wire_size_init(&ws);
	wire_size_update(&ws, got, len);
	assert_int_equal(mn.wire_size, wire_size_final(&ws));
	free(got);
	free(name);
}

/* A POP3 session lists exactly those sizes (and need not open a file:
   the names carry them). */
static void test_maildrop_view(void **state)
{
	struct fixture *f = *state;
	static const char *const msgs[] = {
		"S: 1\r\n\r\nbody\r\n", "S: 2\n\nno newline",
		"S: 3\r\n\r\n\r\r\n..\r\n", "",
	};
	uint64_t want[4];
	struct user_policy pol = no_quota();
	enum deliver_status status;
	enum maildrop_status mstatus;
	struct maildrop *md;
	const char *error;
	size_t count;

	for (size_t i = 0; i < 4; i++) {
		char *name;
		struct maildir_name mn;

		assert_int_equal(deliver_msg(f, &test_env, &pol, 0, msgs[i],
					     strlen(msgs[i]), 7, &status,
					     &name), 0);
		maildir_name_parse(name, strlen(name), &mn);
		want[i] = mn.wire_size;
		free(name);
	}
	assert_int_equal(maildrop_open(f->path, NULL, &md, &mstatus, &error), 0);
	const struct mailmsg *list = maildrop_list(md, &count);
	assert_int_equal(count, 4);
	uint64_t seen = 0;
	for (size_t i = 0; i < count; i++) {
		for (size_t k = 0; k < 4; k++) {
			if (list[i].wire_size == want[k])
				seen |= 1u << k;
		}
		/* The listed size is the size of what RETR sends. */
		int fd;
		assert_int_equal(maildrop_open_message(md, i, &fd, &mstatus,
						       &error), 0);
		uint8_t buf[512];
		ssize_t n = read(fd, buf, sizeof(buf));
		close(fd);
		struct wire_size ws;
		wire_size_init(&ws);
		wire_size_update(&ws, buf, (size_t)n);
		assert_int_equal(list[i].wire_size, wire_size_final(&ws));
	}
	assert_int_equal(seen, 0xf);
	maildrop_close(&md);
}

/* The Maildir and its subdirectories are made, mode 0700, parents too. */
static void test_creates_maildir(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	enum deliver_status status;
	struct stat st;

	snprintf(f->path, sizeof(f->path), "%s/deep/er/Maildir", f->root);
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "x\n", 2, 2, &status,
				     NULL), 0);
	static const char *const subs[] = { "", "tmp", "new", "cur" };
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(stat(P(f, subs[i]), &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 0777, 0700);
	}
	/* No envelope: no added header, just the message. */
	char name[300], rel[310];
	size_t len;
	assert_int_equal(count_in(f, "new", name, sizeof(name)), 1);
	snprintf(rel, sizeof(rel), "new/%s", name);
	uint8_t *got = read_all(P(f, rel), &len);
	assert_int_equal(len, 2);
	assert_memory_equal(got, "x\n", 2);
	free(got);
}

/* "" and "<>" are the null sender; brackets given are not doubled. */
static void test_null_sender(void **state)
{
	struct fixture *f = *state;
	static const char *const senders[] = { "", "<>", "<a@b>" };
	static const char *const want[] = {
		"Return-Path: <>\nDelivered-To: u\nX\n",
		"Return-Path: <>\nDelivered-To: u\nX\n",
		"Return-Path: <a@b>\nDelivered-To: u\nX\n",
	};
	struct user_policy pol = no_quota();
	enum deliver_status status;

	for (size_t i = 0; i < 3; i++) {
		struct deliver_envelope env = { senders[i], "u" };
		char *name, rel[300];
		size_t len;

		assert_int_equal(deliver_msg(f, &env, &pol, 0, "X\r\n", 3, 3,
					     &status, &name), 0);
		snprintf(rel, sizeof(rel), "new/%s", name);
		uint8_t *got = read_all(P(f, rel), &len);
		assert_int_equal(len, strlen(want[i]));
		assert_memory_equal(got, want[i], len);
		free(got);
		free(name);
	}
}

/* Header injection through the envelope is refused. */
static void test_bad_envelope(void **state)
{
	struct fixture *f = *state;
	struct deliver_envelope env = { "a@b\r\nX-Evil: 1", "u" };
	struct user_policy pol = no_quota();
	enum deliver_status status;
	struct deliver *d;
	const char *error;
	char longaddr[600];

	assert_false(deliver_envelope_valid(&env));
	assert_int_equal(deliver_begin(f->path, &env, &pol, 0, 0, &d, &status,
				       &error), -1);
	assert_int_equal(status, DELIVER_PERMFAIL);
	assert_null(d);
	memset(longaddr, 'a', sizeof(longaddr) - 1);
	longaddr[sizeof(longaddr) - 1] = '\0';
	env.return_path = "ok@example.org";
	env.delivered_to = longaddr;
	assert_false(deliver_envelope_valid(&env));
	env.delivered_to = "u";
	assert_true(deliver_envelope_valid(&env));
	assert_true(deliver_envelope_valid(NULL));
}

static void assert_nothing_left(struct fixture *f)
{
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
	assert_int_equal(count_in(f, "new", NULL, 0), 0);
}

/* Storage quota: what fits goes in, the next one is refused, and a
   message larger than the whole quota is TOO_BIG (permanent). */
static void test_quota_storage(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	enum deliver_status status;
	char msg[400];

	memset(msg, 'q', sizeof(msg));
	msg[sizeof(msg) - 1] = '\n';
	pol.quota_storage = 1000;
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, msg, sizeof(msg), 100,
				     &status, NULL), 0);
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, msg, sizeof(msg), 100,
				     &status, NULL), 0);
	/* 800 used: a third 400 does not fit; stopped while writing. */
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, msg, sizeof(msg), 100,
				     &status, NULL), -1);
	assert_int_equal(status, DELIVER_OVER_QUOTA);
	assert_int_equal(count_in(f, "new", NULL, 0), 2);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
	/* A small one still fits. */
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "s\n", 2, 2, &status,
				     NULL), 0);
	/* Larger than the quota itself (in an empty Maildir). */
	snprintf(f->path, sizeof(f->path), "%s/Maildir2", f->root);
	pol.quota_storage = 300;
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, msg, sizeof(msg), 100,
				     &status, NULL), -1);
	assert_int_equal(status, DELIVER_TOO_BIG);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
}

/* A size hint over the quota is refused before any file is made. */
static void test_quota_size_hint(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	enum deliver_status status;
	struct deliver *d;
	const char *error;

	pol.quota_storage = 1000;
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "abc\n", 4, 4, &status,
				     NULL), 0);
	assert_int_equal(deliver_begin(f->path, NULL, &pol, 999, 0, &d,
				       &status, &error), -1);
	assert_int_equal(status, DELIVER_OVER_QUOTA);
	assert_int_equal(deliver_begin(f->path, NULL, &pol, 1001, 0, &d,
				       &status, &error), -1);
	assert_int_equal(status, DELIVER_TOO_BIG);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
}

/* Message quota; files without ,S= are counted by their size too. */
static void test_quota_messages(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	enum deliver_status status;
	int fd;

	pol.quota_messages = 2;
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "1\n", 2, 2, &status,
				     NULL), 0);
	/* One put there by another agent, in cur/, without sizes in its
	   name; and things that are not messages. */
	fd = open(P(f, "cur/other:2,S"), O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "12345", 5), 5);
	close(fd);
	assert_int_equal(mkdir(P(f, "new/adir"), 0700), 0);
	assert_int_equal(symlink("/etc/passwd", P(f, "new/alink")), 0);
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "2\n", 2, 2, &status,
				     NULL), -1);
	assert_int_equal(status, DELIVER_OVER_QUOTA);
	/* Storage counts the foreign file by stat: 2 + 5 + 2 > 8. */
	pol.quota_messages = 0;
	pol.quota_storage = 8;
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "2\n", 2, 2, &status,
				     NULL), -1);
	assert_int_equal(status, DELIVER_OVER_QUOTA);
	pol.quota_storage = 9;
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "2\n", 2, 2, &status,
				     NULL), 0);
}

/* message_size_limit: refused while writing, nothing left. */
static void test_size_limit(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	enum deliver_status status;
	struct deliver *d;
	const char *error;
	char msg[300];

	memset(msg, 'z', sizeof(msg));
	assert_int_equal(deliver_msg(f, &test_env, &pol, 200, msg, 200, 50,
				     &status, NULL), 0);
	assert_int_equal(deliver_msg(f, &test_env, &pol, 200, msg, 201, 50,
				     &status, NULL), -1);
	assert_int_equal(status, DELIVER_TOO_BIG);
	assert_int_equal(count_in(f, "new", NULL, 0), 1);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
	/* Every later call says the same; commit frees and reports it. */
	assert_int_equal(deliver_begin(f->path, NULL, &pol, 0, 10, &d, &status,
				       &error), 0);
	assert_int_equal(deliver_write(d, msg, 11, &status, &error), -1);
	assert_int_equal(deliver_write(d, msg, 1, &status, &error), -1);
	assert_int_equal(status, DELIVER_TOO_BIG);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
	assert_int_equal(deliver_commit(&d, NULL, &status, &error), -1);
	assert_null(d);
	assert_int_equal(status, DELIVER_TOO_BIG);
	assert_non_null(strstr(error, "message_size_limit"));
	/* A hint over the limit: refused at begin. */
	assert_int_equal(deliver_begin(f->path, NULL, &pol, 11, 10, &d,
				       &status, &error), -1);
	assert_int_equal(status, DELIVER_TOO_BIG);
}

/* Abort, at any point, leaves nothing. */
static void test_abort(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	enum deliver_status status;
	struct deliver *d;
	const char *error;

	assert_int_equal(deliver_begin(f->path, &test_env, &pol, 0, 0, &d,
				       &status, &error), 0);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 1);
	assert_int_equal(deliver_write(d, "a\r\nb", 4, &status, &error), 0);
	deliver_abort(&d);
	assert_null(d);
	assert_nothing_left(f);
	deliver_abort(&d); /* NULL is fine */
	/* Abort right after begin, and with more than a buffer written. */
	assert_int_equal(deliver_begin(f->path, NULL, &pol, 0, 0, &d, &status,
				       &error), 0);
	deliver_abort(&d);
	assert_int_equal(deliver_begin(f->path, NULL, &pol, 0, 0, &d, &status,
				       &error), 0);
	char *big = malloc(200000);
	assert_non_null(big);
	memset(big, 'b', 200000);
	assert_int_equal(deliver_write(d, big, 200000, &status, &error), 0);
	free(big);
	deliver_abort(&d);
	assert_nothing_left(f);
}

/* ASan's count of live heap bytes (NULL in a build without it). */
size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

#define MANY_OPEN 40

/*
 * The LMTP listener holds one open delivery per recipient while the MTA
 * sends the message: each must stay small (DELIVER_OPEN_FDS descriptors,
 * no buffer of its own: 64 KiB each once let a client pin gigabytes), and
 * copies written in turn, piece by piece, must not mix.
 */
static void test_open_deliveries_are_small(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	struct deliver *d[MANY_OPEN];
	enum deliver_status status;
	const char *error;
	char piece[64], name[256];
	size_t heap = 0;
	int fds;

	/* The Maildir and this thread's write buffer exist before counting. */
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "x\n", 2, 2, &status,
				     NULL), 0);
	fds = open_fds();
	if (__sanitizer_get_current_allocated_bytes != NULL)
		heap = __sanitizer_get_current_allocated_bytes();
	for (int i = 0; i < MANY_OPEN; i++) {
		assert_int_equal(deliver_begin(f->path, NULL, &pol, 0, 0, &d[i],
					       &status, &error), 0);
		snprintf(piece, sizeof(piece), "copy %d\r\n", i);
		assert_int_equal(deliver_write(d[i], piece, strlen(piece),
					       &status, &error), 0);
	}
	assert_true(open_fds() - fds <= MANY_OPEN * DELIVER_OPEN_FDS);
	if (__sanitizer_get_current_allocated_bytes != NULL)
		assert_true(__sanitizer_get_current_allocated_bytes() - heap <
			    MANY_OPEN * 2048);
	for (int i = 0; i < MANY_OPEN; i++) {
		snprintf(piece, sizeof(piece), "end %d\r\n", i);
		assert_int_equal(deliver_write(d[i], piece, strlen(piece),
					       &status, &error), 0);
	}
	for (int i = 0; i < MANY_OPEN; i++) {
		char *file = NULL;
		uint8_t *data;
		size_t len;

		assert_int_equal(deliver_commit(&d[i], &file, &status, &error),
				 0);
		snprintf(name, sizeof(name), "new/%s", file);
		data = read_all(P(f, name), &len);
		snprintf(piece, sizeof(piece), "copy %d\nend %d\n", i, i);
		assert_int_equal(len, strlen(piece));
		assert_memory_equal(data, piece, len);
		free(data);
		free(file);
	}
	assert_int_equal(open_fds(), fds);
}

/* f->path: a Maildir whose parent is a plain file (cannot be made). */
static void maildir_under_a_file(struct fixture *f)
{
	int fd;

	snprintf(f->buf, sizeof(f->buf), "%s/afile", f->root);
	fd = open(f->buf, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(f->path, sizeof(f->path), "%s/afile/Maildir", f->root);
}

/* A Maildir that cannot be made is PERMFAIL, with nothing made. */
static void test_permfail(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	enum deliver_status status;
	struct deliver *d;
	const char *error;

	maildir_under_a_file(f);
	assert_int_equal(deliver_begin(f->path, NULL, &pol, 0, 0, &d, &status,
				       &error), -1);
	assert_int_equal(status, DELIVER_PERMFAIL);
	/* new/ is a symlink: never followed. */
	snprintf(f->path, sizeof(f->path), "%s/Maildir", f->root);
	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_int_equal(symlink("/tmp", P(f, "new")), 0);
	assert_int_equal(deliver_begin(f->path, NULL, &pol, 0, 0, &d, &status,
				       &error), -1);
	assert_int_equal(status, DELIVER_PERMFAIL);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
}

/* tmp/ files older than 36 hours go; fresh ones (a delivery running
   right now) stay. */
static void test_stale_tmp_cleaned(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	enum deliver_status status;
	struct timespec old[2] = { { 0, 0 }, { 0, 0 } };
	int fd;

	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "1\n", 2, 2, &status,
				     NULL), 0);
	fd = open(P(f, "tmp/stale"), O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	old[0].tv_sec = old[1].tv_sec = time(NULL) - 37 * 3600;
	assert_int_equal(futimens(fd, old), 0);
	close(fd);
	fd = open(P(f, "tmp/fresh"), O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(deliver_msg(f, NULL, &pol, 0, "2\n", 2, 2, &status,
				     NULL), 0);
	assert_int_equal(access(P(f, "tmp/stale"), F_OK), -1);
	assert_int_equal(access(P(f, "tmp/fresh"), F_OK), 0);
}

/* ---- many messages into one Maildir (struct deliver_dir) ---------------- */

static struct deliver_dir *dir_open(struct fixture *f)
{
	struct deliver_dir *dir;
	enum deliver_status status;
	const char *error;

	assert_int_equal(deliver_dir_open(f->path, &dir, &status, &error), 0);
	assert_non_null(dir);
	return dir;
}

/* begin_in + write + prepare: a message durable in tmp/, its base in
   base_r. */
static struct deliver *dir_prepared(struct deliver_dir *dir,
				    const struct deliver_envelope *env,
				    const char *msg, char *base_r, size_t size)
{
	struct deliver *d;
	enum deliver_status status;
	const char *error;

	assert_int_equal(deliver_begin_in(dir, env, &d, &status, &error), 0);
	assert_non_null(d);
	assert_int_equal(deliver_write(d, msg, strlen(msg), &status, &error),
			 0);
	assert_int_equal(deliver_prepare(d, &status, &error), 0);
	assert_true(strlen(deliver_base(d)) > 0);
	if (base_r != NULL)
		snprintf(base_r, size, "%s", deliver_base(d));
	return d;
}

/* One whole message through dir; its final name (malloc'ed). */
static char *dir_store(struct deliver_dir *dir, const char *msg,
		       bool sync_dir, char *base_r, size_t size)
{
	struct deliver *d = dir_prepared(dir, NULL, msg, base_r, size);
	enum deliver_status status;
	const char *error;
	char *name;

	assert_int_equal(deliver_publish(&d, sync_dir, &name, &status, &error),
			 0);
	assert_null(d);
	assert_int_equal(status, DELIVER_OK);
	assert_non_null(name);
	return name;
}

static void assert_file_is(struct fixture *f, const char *rel,
			   const char *want)
{
	size_t len;
	uint8_t *got = read_all(P(f, rel), &len);

	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	free(got);
}

#define MANY_MSGS 60

/* Many messages through one open dir: each lands whole under its own
   name (base + ,S= ,W=), the dir's descriptors stay the same, every
   message leaves none open, and closing gives all back. */
static void test_dir_many_messages(void **state)
{
	struct fixture *f = *state;
	int fds = open_fds();
	struct deliver_dir *dir = dir_open(f);
	int fds_open = open_fds();
	char base[DELIVER_NAME_MAX], rel[300], msg[64], want[64];

	/* The directory, tmp/ and new/. */
	assert_int_equal(fds_open - fds, 3);
	for (int i = 0; i < MANY_MSGS; i++) {
		struct maildir_name mn;
		struct stat st;

		snprintf(msg, sizeof(msg), "Subject: %d\r\n\r\nbody %d\r\n", i,
			 i);
		snprintf(want, sizeof(want), "Subject: %d\n\nbody %d\n", i, i);
		char *name = dir_store(dir, msg, i % 2 == 0, base,
				       sizeof(base));
		assert_int_equal(open_fds(), fds_open);
		/* The final name is the base, then the sizes. */
		assert_memory_equal(name, base, strlen(base));
		assert_memory_equal(name + strlen(base), ",S=", 3);
		maildir_name_parse(name, strlen(name), &mn);
		assert_true(mn.has_size && mn.has_wire_size);
		snprintf(rel, sizeof(rel), "new/%s", name);
		assert_int_equal(stat(P(f, rel), &st), 0);
		assert_int_equal(mn.size, (uint64_t)st.st_size);
		assert_file_is(f, rel, want);
		free(name);
	}
	assert_int_equal(count_in(f, "new", NULL, 0), MANY_MSGS);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
	deliver_dir_close(&dir);
	assert_null(dir);
	deliver_dir_close(&dir); /* NULL is fine */
	assert_int_equal(open_fds(), fds);
}

/* The group commit: each prepared (durable in tmp/, no descriptor held),
   then all published without sync, then one deliver_dir_sync. */
static void test_dir_publish_without_sync(void **state)
{
	struct fixture *f = *state;
	struct deliver_dir *dir = dir_open(f);
	struct deliver *d[5];
	char base[5][DELIVER_NAME_MAX], rel[300];
	enum deliver_status status;
	const char *error;
	int fds;

	for (int i = 0; i < 5; i++) {
		fds = open_fds();
		d[i] = dir_prepared(dir, &test_env, "m\r\n", base[i],
				    sizeof(base[i]));
		/* Prepared: no descriptor of its own. */
		assert_int_equal(open_fds(), fds);
		snprintf(rel, sizeof(rel), "tmp/%s", base[i]);
		assert_file_is(f, rel, "Return-Path: <sender@example.org>\n"
			       "Delivered-To: alice@example.test\nm\n");
		/* Prepare again: nothing to do. */
		assert_int_equal(deliver_prepare(d[i], &status, &error), 0);
	}
	assert_int_equal(count_in(f, "tmp", NULL, 0), 5);
	assert_int_equal(count_in(f, "new", NULL, 0), 0);
	for (int i = 0; i < 5; i++) {
		/* name_r NULL is fine. */
		assert_int_equal(deliver_publish(&d[i], false, NULL, &status,
						 &error), 0);
		assert_null(d[i]);
	}
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
	assert_int_equal(count_in(f, "new", NULL, 0), 5);
	assert_int_equal(deliver_dir_sync(dir, &status, &error), 0);
	/* Publish without prepare first: it prepares. */
	struct deliver *one;
	char *name;
	assert_int_equal(deliver_begin_in(dir, NULL, &one, &status, &error), 0);
	assert_int_equal(deliver_write(one, "x", 1, &status, &error), 0);
	assert_int_equal(deliver_publish(&one, false, &name, &status, &error),
			 0);
	snprintf(rel, sizeof(rel), "new/%s", name);
	assert_file_is(f, rel, "x");
	free(name);
	deliver_dir_close(&dir);
}

/* Abort after begin_in or after prepare: nothing left; a write after
   prepare is refused and leaves the prepared file as it was. */
static void test_dir_abort(void **state)
{
	struct fixture *f = *state;
	struct deliver_dir *dir = dir_open(f);
	enum deliver_status status;
	const char *error;
	struct deliver *d;
	char base[DELIVER_NAME_MAX], rel[300];

	assert_int_equal(deliver_begin_in(dir, NULL, &d, &status, &error), 0);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 1);
	deliver_abort(&d);
	assert_null(d);
	assert_nothing_left(f);
	d = dir_prepared(dir, NULL, "abc\n", base, sizeof(base));
	assert_int_equal(deliver_write(d, "more", 4, &status, &error), -1);
	snprintf(rel, sizeof(rel), "tmp/%s", base);
	assert_file_is(f, rel, "abc\n");
	deliver_abort(&d);
	assert_null(d);
	assert_nothing_left(f);
	/* The dir's descriptors were not closed by the abort: it still
	   works. */
	char *name = dir_store(dir, "after\n", true, NULL, 0);
	free(name);
	assert_int_equal(count_in(f, "new", NULL, 0), 1);
	deliver_dir_close(&dir);
}

/* deliver_begin's deliveries take the same two steps. */
static void test_begin_prepare_commit(void **state)
{
	struct fixture *f = *state;
	struct user_policy pol = no_quota();
	enum deliver_status status;
	const char *error;
	struct deliver *d;
	char base[DELIVER_NAME_MAX], *name;

	assert_int_equal(deliver_begin(f->path, NULL, &pol, 0, 0, &d, &status,
				       &error), 0);
	assert_int_equal(deliver_write(d, "q\r\n", 3, &status, &error), 0);
	assert_int_equal(deliver_prepare(d, &status, &error), 0);
	snprintf(base, sizeof(base), "%s", deliver_base(d));
	assert_int_equal(deliver_commit(&d, &name, &status, &error), 0);
	assert_int_equal(strncmp(name, base, strlen(base)), 0);
	free(name);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
	assert_int_equal(count_in(f, "new", NULL, 0), 1);
	assert_string_equal(deliver_base(NULL), "");
}

/* Opening cleans stale tmp/ files once; deliveries in the dir do not
   scan tmp/ again.  A bad envelope is refused, leaving nothing. */
static void test_dir_open_cleans_once(void **state)
{
	struct fixture *f = *state;
	struct timespec old[2] = { { 0, 0 }, { 0, 0 } };
	struct deliver_dir *dir = dir_open(f); /* makes the Maildir */
	struct deliver_envelope bad = { "a\nb", "u" };
	enum deliver_status status;
	const char *error;
	struct deliver *d;
	struct stat st;
	int fd;

	assert_int_equal(stat(P(f, "cur"), &st), 0);
	deliver_dir_close(&dir);
	old[0].tv_sec = old[1].tv_sec = time(NULL) - 37 * 3600;
	fd = open(P(f, "tmp/stale1"), O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(futimens(fd, old), 0);
	close(fd);
	dir = dir_open(f);
	assert_int_equal(access(P(f, "tmp/stale1"), F_OK), -1);
	fd = open(P(f, "tmp/stale2"), O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(futimens(fd, old), 0);
	close(fd);
	free(dir_store(dir, "x\n", true, NULL, 0));
	assert_int_equal(access(P(f, "tmp/stale2"), F_OK), 0);
	assert_int_equal(deliver_begin_in(dir, &bad, &d, &status, &error), -1);
	assert_int_equal(status, DELIVER_PERMFAIL);
	assert_null(d);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 1); /* stale2 */
	deliver_dir_close(&dir);
}

static void test_dir_open_permfail(void **state)
{
	struct fixture *f = *state;
	struct deliver_dir *dir;
	enum deliver_status status;
	const char *error;

	maildir_under_a_file(f);
	assert_int_equal(deliver_dir_open(f->path, &dir, &status, &error), -1);
	assert_int_equal(status, DELIVER_PERMFAIL);
	assert_null(dir);
}

/* A file of the given content at f->path/rel. */
static void put_file(struct fixture *f, const char *rel, const char *text)
{
	int fd = open(P(f, rel), O_WRONLY | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* Recovery: tmp/ (prepared, never published), new/, cur/ with the flags
   a reader adds; a longer base with the same start is another message;
   missing names, non-files and n = 0. */
static void test_dir_locate(void **state)
{
	struct fixture *f = *state;
	struct deliver_dir *dir = dir_open(f);
	enum deliver_status status;
	const char *error;
	char tmp_base[DELIVER_NAME_MAX], new_base[DELIVER_NAME_MAX];
	char cur_base[DELIVER_NAME_MAX], from[300], to[300];

	struct deliver *d = dir_prepared(dir, NULL, "t\n", tmp_base,
					 sizeof(tmp_base));
	char *new_name = dir_store(dir, "n\n", true, new_base,
				   sizeof(new_base));
	char *cur_name = dir_store(dir, "c\n", true, cur_base,
				   sizeof(cur_base));
	/* A mail reader moves it into cur/, adding flags. */
	snprintf(from, sizeof(from), "%s/new/%s", f->path, cur_name);
	snprintf(to, sizeof(to), "%s/cur/%s:2,S", f->path, cur_name);
	assert_int_equal(rename(from, to), 0);
	put_file(f, "new/123.M12,S=5", "12345");
	put_file(f, "cur/plain", "p");        /* the base itself */
	put_file(f, "cur/colon:2,", "p");     /* base then ':' */
	put_file(f, "new/both,S=1", "b");     /* in new/ and tmp/ */
	put_file(f, "tmp/both", "b");
	assert_int_equal(mkdir(P(f, "new/adir"), 0700), 0);
	assert_int_equal(symlink("/etc/passwd", P(f, "cur/alink")), 0);

	const char *const bases[] = {
		tmp_base, new_base, cur_base, "123.M1", "123.M12", "missing",
		"plain", "colon", "both", "adir", "alink", "123", new_base, "",
	};
	const enum deliver_where want[] = {
		DELIVER_WHERE_TMP, DELIVER_WHERE_STORED, DELIVER_WHERE_STORED,
		DELIVER_WHERE_NONE, DELIVER_WHERE_STORED, DELIVER_WHERE_NONE,
		DELIVER_WHERE_STORED, DELIVER_WHERE_STORED,
		DELIVER_WHERE_STORED, DELIVER_WHERE_NONE, DELIVER_WHERE_NONE,
		DELIVER_WHERE_NONE, DELIVER_WHERE_STORED, DELIVER_WHERE_NONE,
	};
	const size_t n = sizeof(bases) / sizeof(bases[0]);
	enum deliver_where where[sizeof(bases) / sizeof(bases[0])];

	assert_int_equal(deliver_dir_locate(dir, bases, n, where, &status,
					    &error), 0);
	for (size_t i = 0; i < n; i++) {
		if (where[i] != want[i])
			fail_msg("base %zu \"%s\": %d, want %d", i, bases[i],
				 (int)where[i], (int)want[i]);
	}
	/* n = 0: nothing read, nothing written. */
	assert_int_equal(deliver_dir_locate(dir, NULL, 0, NULL, &status,
					    &error), 0);
	deliver_abort(&d);
	assert_int_equal(deliver_dir_locate(dir, bases, 1, where, &status,
					    &error), 0);
	assert_int_equal(where[0], DELIVER_WHERE_NONE);
	free(new_name);
	free(cur_name);
	deliver_dir_close(&dir);
}

#define LOCATE_MANY 3000
#define LOCATE_FILES 300

/* A few thousand bases against a few hundred files: every answer right
   (and fast enough under ASan, which an n*m scan would not be at scale). */
static void test_dir_locate_many(void **state)
{
	struct fixture *f = *state;
	struct deliver_dir *dir = dir_open(f);
	enum deliver_status status;
	const char *error;
	static char names[LOCATE_MANY][32];
	static const char *bases[LOCATE_MANY];
	static enum deliver_where where[LOCATE_MANY];
	char rel[64];

	for (int i = 0; i < LOCATE_MANY; i++) {
		/* Reversed order, so that sorting matters. */
		snprintf(names[i], sizeof(names[i]), "%d.Mx",
			 LOCATE_MANY - i);
		bases[i] = names[i];
	}
	for (int i = 0; i < LOCATE_FILES; i++) {
		int k = i * (LOCATE_MANY / LOCATE_FILES);
		const char *sub = i % 3 == 0 ? "tmp" : i % 3 == 1 ? "new" :
						       "cur";
		snprintf(rel, sizeof(rel), "%s/%s%s", sub, names[k],
			 i % 3 == 0 ? "" : i % 3 == 1 ? ",S=1" : ":2,S");
		put_file(f, rel, "x");
	}
	assert_int_equal(deliver_dir_locate(dir, bases, LOCATE_MANY, where,
					    &status, &error), 0);
	for (int i = 0; i < LOCATE_MANY; i++) {
		enum deliver_where want = DELIVER_WHERE_NONE;
		int step = LOCATE_MANY / LOCATE_FILES;
		if (i % step == 0)
			want = (i / step) % 3 == 0 ? DELIVER_WHERE_TMP :
						     DELIVER_WHERE_STORED;
		assert_int_equal(where[i], want);
	}
	deliver_dir_close(&dir);
}

/* Recovery: a prepared tmp/ file goes into new/ as <base>,S=<size>, its
   bytes unchanged; names that are not plain file names in tmp/, and
   entries that are not regular files, are refused and left alone. */
static void test_dir_publish_tmp(void **state)
{
	struct fixture *f = *state;
	struct deliver_dir *dir = dir_open(f);
	enum deliver_status status;
	const char *error;
	char base[DELIVER_NAME_MAX], rel[310], name[300];
	char longname[DELIVER_NAME_MAX + 2];
	struct maildir_name mn;

	struct deliver *d = dir_prepared(dir, &test_env, "body\r\n", base,
					 sizeof(base));
	/* The crash: the delivery is never published nor aborted. */
	struct deliver *lost = d;
	d = NULL;
	assert_int_equal(deliver_dir_publish_tmp(dir, base, &status, &error),
			 0);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 0);
	assert_int_equal(count_in(f, "new", name, sizeof(name)), 1);
	assert_int_equal(strncmp(name, base, strlen(base)), 0);
	maildir_name_parse(name, strlen(name), &mn);
	assert_true(mn.has_size);
	snprintf(rel, sizeof(rel), "new/%s", name);
	static const char want[] = "Return-Path: <sender@example.org>\n"
				   "Delivered-To: alice@example.test\nbody\n";
	assert_int_equal(mn.size, sizeof(want) - 1);
	assert_file_is(f, rel, want);
	const char *const one[] = { base };
	enum deliver_where where;
	assert_int_equal(deliver_dir_locate(dir, one, 1, &where, &status,
					    &error), 0);
	assert_int_equal(where, DELIVER_WHERE_STORED);
	/* Freeing the stale delivery now removes nothing (its file moved). */
	deliver_abort(&lost);
	assert_int_equal(count_in(f, "new", NULL, 0), 1);

	/* Refused. */
	put_file(f, "x", "outside tmp/");
	put_file(f, "tmp/.hidden", "h");
	assert_int_equal(mkdir(P(f, "tmp/adir"), 0700), 0);
	assert_int_equal(symlink("/etc/passwd", P(f, "tmp/alink")), 0);
	memset(longname, 'l', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	static const char *const bad[] = {
		"../x", "a/b", "", ".", "..", ".hidden", "adir", "alink",
		"missing", "sp ace", "ctl\x01", "hi\xff", "/etc/passwd",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (deliver_dir_publish_tmp(dir, bad[i], &status, &error) != -1)
			fail_msg("\"%s\" was published", bad[i]);
		assert_non_null(error);
	}
	assert_int_equal(deliver_dir_publish_tmp(dir, longname, &status,
						 &error), -1);
	assert_int_equal(count_in(f, "new", NULL, 0), 1);
	assert_int_equal(count_in(f, "tmp", NULL, 0), 3);
	assert_int_equal(access(P(f, "x"), F_OK), 0);
	deliver_dir_close(&dir);
}

int main(void)
{
#define T(x) cmocka_unit_test_setup_teardown(x, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_content_exact),
		T(test_name_sizes),
		T(test_maildrop_view),
		T(test_creates_maildir),
		T(test_null_sender),
		T(test_bad_envelope),
		T(test_quota_storage),
		T(test_quota_size_hint),
		T(test_quota_messages),
		T(test_size_limit),
		T(test_abort),
		T(test_permfail),
		T(test_stale_tmp_cleaned),
		T(test_open_deliveries_are_small),
		T(test_dir_many_messages),
		T(test_dir_publish_without_sync),
		T(test_dir_abort),
		T(test_begin_prepare_commit),
		T(test_dir_open_cleans_once),
		T(test_dir_open_permfail),
		T(test_dir_locate),
		T(test_dir_locate_many),
		T(test_dir_publish_tmp),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
