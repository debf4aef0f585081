/*
 * test-userdb-lookup.c — the USERDB_LOOKUP / USERDB_REPLY codec and the
 * blocking client popbox-deliver uses (userdb-lookup.h).
 *
 * The codec: a record goes through put, parse and get unchanged (with and
 * without mail=); FAIL is an unknown user; TEMPFAIL, a refused request's
 * plain REPLY, a missing or malformed field, a bad user name, an
 * out-of-range policy and no reply at all are TEMPFAIL with nothing
 * filled.  The client, against a fake auth process on a socket in a temp
 * directory (a forked child): an answer, an unknown user, silence (the
 * timeout), a closed connection and no listener at all.  The direct read
 * of a passwd-file: the first line of the user's that parses, unknown and
 * refused users, no file; and the same record as the passdb table gives.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth-proto.h"
#include "ipc.h"
#include "passdb.h"
#include "user-policy.h"
#include "userdb-lookup.h"

static struct ipc_writer w;

static struct passdb_user sample_user(bool with_mail)
{
	struct passdb_user u;

	memset(&u, 0, sizeof(u));
	u.name = "alice";
	u.uid = 1001;
	u.gid = 1002;
	u.home = "/home/alice";
	u.mail = with_mail ? "/var/mail/alice/Maildir" : NULL;
	user_policy_init(&u.policy);
	u.policy.quota_storage = 1 << 20;
	u.policy.quota_messages = 50;
	return u;
}

/* put -> parse -> get. */
static enum passdb_result round_trip(const struct ipc_writer *wr,
				     struct passdb_user *out)
{
	struct ipc_msg msg;

	assert_false(wr->overflow);
	assert_int_equal(ipc_parse(wr->buf, wr->len, &msg), 0);
	return userdb_lookup_reply_get(&msg, out);
}

static void test_request(void **state)
{
	struct ipc_msg msg;
	char user[USERNAME_MAX + 1];

	(void)state;
	userdb_lookup_request(&w, "bob@example.org");
	assert_int_equal(ipc_parse(w.buf, w.len, &msg), 0);
	assert_int_equal(msg.type, AUTH_MSG_USERDB_LOOKUP);
	assert_true(ipc_get_str(&msg, AUTH_TAG_USER, user, sizeof(user)));
	assert_string_equal(user, "bob@example.org");
}

static void test_reply_ok(void **state)
{
	(void)state;
	for (int with_mail = 0; with_mail < 2; with_mail++) {
		struct passdb_user in = sample_user(with_mail), out;

		userdb_lookup_reply_put(&w, 7, AUTH_STATUS_OK, &in);
		assert_int_equal(round_trip(&w, &out), PASSDB_OK);
		assert_string_equal(out.name, "alice");
		assert_int_equal(out.uid, 1001);
		assert_int_equal(out.gid, 1002);
		assert_string_equal(out.home, "/home/alice");
		if (with_mail)
			assert_string_equal(out.mail, "/var/mail/alice/Maildir");
		else
			assert_null(out.mail);
		assert_int_equal(out.policy.quota_storage, 1 << 20);
		assert_int_equal(out.policy.quota_messages, 50);
		assert_int_equal(out.policy.keep_days, USER_POLICY_UNSET);
		passdb_user_clear(&out);
	}
}

static void test_reply_fail_and_tempfail(void **state)
{
	struct passdb_user out;

	(void)state;
	userdb_lookup_reply_put(&w, 1, AUTH_STATUS_FAIL, NULL);
	assert_int_equal(round_trip(&w, &out), PASSDB_FAIL);
	assert_null(out.name);
	userdb_lookup_reply_put(&w, 1, AUTH_STATUS_TEMPFAIL, NULL);
	assert_int_equal(round_trip(&w, &out), PASSDB_TEMPFAIL);
	userdb_lookup_reply_put(&w, 1, AUTH_STATUS_MALFORMED, NULL);
	assert_int_equal(round_trip(&w, &out), PASSDB_TEMPFAIL);
	assert_int_equal(userdb_lookup_reply_get(NULL, &out), PASSDB_TEMPFAIL);
	assert_null(out.name);
	/* A refused request gets a plain AUTH_MSG_REPLY: not an answer. */
	ipc_writer_init(&w, AUTH_MSG_REPLY, 1);
	ipc_put_u32(&w, AUTH_TAG_STATUS, AUTH_STATUS_OK);
	assert_int_equal(round_trip(&w, &out), PASSDB_TEMPFAIL);
}

/* An OK reply with one field broken: TEMPFAIL, nothing returned. */
static void broken_reply(int broken)
{
	struct passdb_user in = sample_user(true), out;
	uint8_t pol[28];

	ipc_writer_init(&w, AUTH_MSG_USERDB_REPLY, 3);
	ipc_put_u32(&w, AUTH_TAG_STATUS, AUTH_STATUS_OK);
	if (broken != 0)
		ipc_put_str(&w, AUTH_TAG_USER, broken == 1 ? "../etc" : "alice");
	if (broken != 2)
		ipc_put_u32(&w, AUTH_TAG_UID, in.uid);
	if (broken == 3)
		ipc_put(&w, AUTH_TAG_GID, "ab", 2);
	else
		ipc_put_u32(&w, AUTH_TAG_GID, in.gid);
	if (broken != 4)
		ipc_put_str(&w, AUTH_TAG_HOME, in.home);
	if (broken == 5)
		ipc_put(&w, AUTH_TAG_MAIL, "a\0b", 3);
	if (broken == 6) {
		memset(pol, 0x7f, sizeof(pol)); /* out of range */
		ipc_put(&w, AUTH_TAG_POLICY, pol, sizeof(pol));
	} else {
		user_policy_ipc_put(&w, &in.policy);
	}
	assert_int_equal(round_trip(&w, &out), PASSDB_TEMPFAIL);
	assert_null(out.name);
	assert_null(out.home);
	assert_null(out.mail);
}

static void test_reply_malformed(void **state)
{
	(void)state;
	for (int broken = 0; broken <= 6; broken++)
		broken_reply(broken);
}

/* ---- the client against a fake auth process ----------------------------- */

enum fake_mode { FAKE_ANSWER, FAKE_UNKNOWN, FAKE_SILENT, FAKE_CLOSE };

struct fake {
	char dir[64];
	char path[96];
	pid_t pid;
};

/* The child: accepts one connection and behaves as mode says. */
static void fake_serve(int lfd, enum fake_mode mode)
{
	uint8_t buf[IPC_MSG_MAX];
	struct ipc_msg msg;
	char user[USERNAME_MAX + 1];
	int cfd = accept(lfd, NULL, NULL), passed;

	if (cfd < 0)
		_exit(1);
	ssize_t n = ipc_recv(cfd, buf, sizeof(buf), &passed);
	if (n <= 0 || ipc_parse(buf, (size_t)n, &msg) < 0 ||
	    msg.type != AUTH_MSG_USERDB_LOOKUP ||
	    !ipc_get_str(&msg, AUTH_TAG_USER, user, sizeof(user)))
		_exit(2);
	if (mode == FAKE_SILENT) {
		pause();
		_exit(0);
	}
	if (mode == FAKE_CLOSE)
		_exit(0);
	struct passdb_user u = sample_user(false);
	u.name = user;
	userdb_lookup_reply_put(&w, msg.id, mode == FAKE_ANSWER ?
				AUTH_STATUS_OK : AUTH_STATUS_FAIL, &u);
	ipc_send(cfd, w.buf, w.len, -1);
	_exit(0);
}

static void fake_start(struct fake *fk, enum fake_mode mode)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int lfd;

	strcpy(fk->dir, "/tmp/popbox-userdb-XXXXXX");
	assert_non_null(mkdtemp(fk->dir));
	snprintf(fk->path, sizeof(fk->path), "%s/userdb", fk->dir);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", fk->path);
	lfd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	fk->pid = fork();
	assert_true(fk->pid >= 0);
	if (fk->pid == 0)
		fake_serve(lfd, mode);
	close(lfd);
}

static void fake_stop(struct fake *fk)
{
	kill(fk->pid, SIGKILL);
	waitpid(fk->pid, NULL, 0);
	unlink(fk->path);
	rmdir(fk->dir);
}

static void test_client_answer(void **state)
{
	struct passdb_user u;
	struct fake fk;
	const char *error = NULL;

	(void)state;
	fake_start(&fk, FAKE_ANSWER);
	assert_int_equal(userdb_lookup_socket(fk.path, "carol", 5000, &u,
					      &error), PASSDB_OK);
	assert_string_equal(u.name, "carol");
	assert_string_equal(u.home, "/home/alice");
	passdb_user_clear(&u);
	fake_stop(&fk);
	fake_start(&fk, FAKE_UNKNOWN);
	assert_int_equal(userdb_lookup_socket(fk.path, "nobody-here", 5000, &u,
					      &error), PASSDB_FAIL);
	assert_null(u.name);
	fake_stop(&fk);
}

static void test_client_failures(void **state)
{
	struct passdb_user u;
	struct fake fk;
	const char *error = NULL;
	struct timespec t0, t1;

	(void)state;
	fake_start(&fk, FAKE_SILENT);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(userdb_lookup_socket(fk.path, "carol", 300, &u,
					      &error), PASSDB_TEMPFAIL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 +
		  (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(ms >= 250 && ms < 5000);
	assert_non_null(strstr(error, "in time"));
	fake_stop(&fk);

	fake_start(&fk, FAKE_CLOSE);
	assert_int_equal(userdb_lookup_socket(fk.path, "carol", 5000, &u,
					      &error), PASSDB_TEMPFAIL);
	assert_null(u.name);
	fake_stop(&fk);

	/* Nobody listening. */
	assert_int_equal(userdb_lookup_socket(fk.path, "carol", 5000, &u,
					      &error), PASSDB_TEMPFAIL);
	assert_non_null(strstr(error, "connect"));
}

/* ---- the passwd-file read directly (userdb_lookup_file) ------------------ */

static const char file_text[] =
	"# users\n"
	"bob:{PLAIN}b:1001:1001::/home/bob\n"
	"alice:{PLAIN}a:0:1:g:/home/alice\n"   /* uid 0: refused, skipped */
	"alice:{PLAIN}a:1002:1003:g:/home/alice::mail=/srv/mail/alice "
	"quota_rule=*:storage=1M:messages=9 keep_days=3\n"
	"alice:{PLAIN}dup:1004:1004\n"
	"carol:{SHA512-CRYPT}$6$saltsalt$rD9fW1Bw\n"
	"dave:{PLAIN}d:::::: pop3=no\n"
	"erin:{PLAIN}e:::::: deny=yes\n";

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void assert_same_user(const struct passdb_user *a,
			     const struct passdb_user *b)
{
	assert_string_equal(a->name, b->name);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_string_equal(a->home, b->home);
	if (a->mail == NULL || b->mail == NULL)
		assert_ptr_equal(a->mail, b->mail);
	else
		assert_string_equal(a->mail, b->mail);
	assert_memory_equal(&a->policy, &b->policy, sizeof(a->policy));
}

static void test_file_lookup(void **state)
{
	char dir[64], path[96];
	struct passdb_user u;
	const char *error = NULL;

	(void)state;
	strcpy(dir, "/tmp/popbox-userdb-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/passwd", dir);
	write_file(path, file_text);
	assert_int_equal(userdb_lookup_file(path, "alice", &u, &error),
			 PASSDB_OK);
	assert_string_equal(u.name, "alice");
	assert_int_equal(u.uid, 1002);
	assert_int_equal(u.gid, 1003);
	assert_string_equal(u.home, "/home/alice");
	assert_string_equal(u.mail, "/srv/mail/alice");
	assert_int_equal(u.policy.quota_storage, 1 << 20);
	assert_int_equal(u.policy.quota_messages, 9);
	assert_int_equal(u.policy.keep_days, 3);
	passdb_user_clear(&u);
	assert_int_equal(userdb_lookup_file(path, "dave", &u, &error),
			 PASSDB_OK);
	assert_int_equal(u.policy.pop3, 0);
	assert_null(u.mail);
	passdb_user_clear(&u);
	/* Unknown, and a user whose only line is refused. */
	assert_int_equal(userdb_lookup_file(path, "zoe", &u, &error),
			 PASSDB_FAIL);
	assert_null(u.name);
	assert_int_equal(userdb_lookup_file(path, "erin", &u, &error),
			 PASSDB_FAIL);
	assert_null(u.name);
	/* No file, and a directory: TEMPFAIL, with the path in the error. */
	unlink(path);
	assert_int_equal(userdb_lookup_file(path, "alice", &u, &error),
			 PASSDB_TEMPFAIL);
	assert_null(u.name);
	assert_non_null(strstr(error, path));
	assert_int_equal(userdb_lookup_file(dir, "alice", &u, &error),
			 PASSDB_TEMPFAIL);
	assert_non_null(strstr(error, dir));
	rmdir(dir);
}

/* The direct read and the passdb table give every user the same record. */
static void test_file_lookup_as_passdb(void **state)
{
	static const char *const users[] = {
		"alice", "bob", "carol", "dave", "erin", "zoe", "alic",
	};
	char dir[64], path[96];
	struct passdb *db;
	const char *error = NULL;

	(void)state;
	strcpy(dir, "/tmp/popbox-userdb-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/passwd", dir);
	write_file(path, file_text);
	assert_int_equal(passdb_open(path, &db, &error), 0);
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		struct passdb_user a, b;
		enum passdb_result ra = userdb_lookup_file(path, users[i], &a,
							   &error);
		enum passdb_result rb = passdb_user_lookup(db, users[i], &b);

		if (ra != rb)
			fail_msg("%s: direct %d, passdb %d", users[i], ra, rb);
		if (ra == PASSDB_OK)
			assert_same_user(&a, &b);
		passdb_user_clear(&a);
		passdb_user_clear(&b);
	}
	passdb_close(&db);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request),
		cmocka_unit_test(test_reply_ok),
		cmocka_unit_test(test_reply_fail_and_tempfail),
		cmocka_unit_test(test_reply_malformed),
		cmocka_unit_test(test_client_answer),
		cmocka_unit_test(test_client_failures),
		cmocka_unit_test(test_file_lookup),
		cmocka_unit_test(test_file_lookup_as_passdb),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
