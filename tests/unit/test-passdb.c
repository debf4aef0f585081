/*
 * test-passdb.c — the passwd-file database: lookups and verification,
 * bad lines skipped with a warning, reload when the file changes, the last
 * good copy kept when it breaks, the dummy hash for unknown users (proved
 * by the slow-hash counter, not by timing), APOP with RFC 1939's example,
 * SCRAM credentials (stored, derived from {PLAIN}, fake) and the user
 * lookup after a SCRAM proof, passdb_file_can_scram() (checked against
 * what the lookups say), and a concurrency smoke test (run it under
 * ASan/TSan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "passwd-fixture.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "passdb.h"
#include "password.h"

/* "pencil" and "rasmuslerdorf" (see test-password.c for the vectors). */
#define ALICE_HASH "{SHA256-CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/"
#define ERIN_HASH "$2y$07$BCryptRequires22Chrcte/VlQH0piJtjXl.0t1XkA8pw9dMXTpOq"
/* "pencil", RFC 7677 section 3's salt and iterations (test-password.c). */
#define SCRAM_TAIL "W22ZaJ0SNY7soEsUEjb6gQ==,"                          \
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"                 \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
#define SAM_HASH "{SCRAM-SHA-256}4096," SCRAM_TAIL
#define SID_HASH "{SCRAM-SHA-256}4095," SCRAM_TAIL /* unusable */

static const char users_v1[] =
	"# popbox test users\n"
	"alice:" ALICE_HASH ":1000:1001::/home/alice:/bin/sh\n"
	"bob:{PLAIN}secret:1002:1002::/home/bob::mail=/srv/mail/bob\n"
	"\n"
	"bad line without password\n"                       /* line 5 */
	"carol:{SHA512-CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/\n"
	"dave:{PLAIN}x:notanumber\n"                         /* line 7 */
	"alice:{PLAIN}pencil2\n"                             /* line 8: dup */
	"mrose:{CLEAR}tanstaaf\r\n"
	"erin:" ERIN_HASH "\n"
	"sam:" SAM_HASH ":1003:1003::/home/sam\n"
	"sid:" SID_HASH "\n";


/* stderr into a temp file, logging at level, until capture_end. */
struct stderr_capture {
	char path[32];
	int fd, saved;
};

static void capture_begin(struct stderr_capture *c, enum log_level level)
{
	snprintf(c->path, sizeof(c->path), "/tmp/test-passdb-log-XXXXXX");
	c->fd = mkstemp(c->path);
	assert_true(c->fd >= 0);
	fflush(stderr);
	c->saved = dup(STDERR_FILENO);
	dup2(c->fd, STDERR_FILENO);
	log_set_level(level);
}

/* What was logged since capture_begin (malloc'ed); stderr back. */
static char *capture_end(struct stderr_capture *c)
{
	char *text;

	log_set_level(LOG_LEVEL_ERROR);
	fflush(stderr);
	dup2(c->saved, STDERR_FILENO);
	close(c->saved);
	off_t size = lseek(c->fd, 0, SEEK_END);
	text = calloc(1, (size_t)size + 1);
	assert_non_null(text);
	assert_int_equal(pread(c->fd, text, (size_t)size, 0), size);
	close(c->fd);
	unlink(c->path);
	return text;
}

/* Runs passdb_open() with stderr captured into log_r (malloc'ed). */
static int open_captured(const char *path, struct passdb **db_r,
			 const char **error_r, char **log_r)
{
	struct stderr_capture c;
	int ret;

	capture_begin(&c, LOG_LEVEL_WARN);
	ret = passdb_open(path, db_r, error_r);
	*log_r = capture_end(&c);
	return ret;
}

static int setup(void **state)
{
	return passwd_fixture_setup(state, "/tmp/test-passdb-XXXXXX", users_v1);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char tmp[128];

	passdb_close(&fx->db);
	assert_null(fx->db);
	unlink(fx->path);
	snprintf(tmp, sizeof(tmp), "%s.tmp", fx->path);
	unlink(tmp);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static void test_open_errors(void **state)
{
	struct fixture *fx = *state;
	struct passdb *db = NULL;
	const char *error;
	char path[128], want[192];

	snprintf(path, sizeof(path), "%s/missing", fx->dir);
	assert_int_equal(passdb_open(path, &db, &error), -1);
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	assert_string_equal(error, want);
	assert_null(db);

	assert_int_equal(passdb_open(fx->dir, &db, &error), -1);
	snprintf(want, sizeof(want), "%s: not a regular file", fx->dir);
	assert_string_equal(error, want);

	snprintf(path, sizeof(path), "%s/big", fx->dir);
	int fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 64 * 1024 * 1024 + 1), 0);
	close(fd);
	assert_int_equal(passdb_open(path, &db, &error), -1);
	snprintf(want, sizeof(want), "%s: file larger than 64 MiB", path);
	assert_string_equal(error, want);
	unlink(path);
}

/* Each bad line is named in a warning; the good lines still load. */
static void test_bad_lines_warned(void **state)
{
	struct fixture *fx = *state;
	struct passdb *db;
	const char *error;
	char *log;

	assert_int_equal(open_captured(fx->path, &db, &error, &log), 0);
	assert_non_null(strstr(log, "line=5: invalid user name"));
	assert_non_null(strstr(log, "line=7: bad uid"));
	assert_non_null(strstr(log, "line=8: duplicate user"));
	assert_null(strstr(log, "line=2"));
	assert_null(strstr(log, "line=9"));
	free(log);
	passdb_close(&db);
}

static enum passdb_result try_login(struct passdb *db, const char *user,
				    const char *password);

struct plain_case {
	const char *user, *password;
	enum passdb_result result;
	const char *home, *mail;
	uid_t uid;
};

static const struct plain_case plain_cases[] = {
	{ "alice", "pencil", PASSDB_OK, "/home/alice", NULL, 1000 },
	{ "alice", "Pencil", PASSDB_FAIL, NULL, NULL, 0 },
	{ "alice", "", PASSDB_FAIL, NULL, NULL, 0 },
	{ "alice", "pencil2", PASSDB_FAIL, NULL, NULL, 0 }, /* dup line lost */
	{ "Alice", "pencil", PASSDB_FAIL, NULL, NULL, 0 },
	{ "bob", "secret", PASSDB_OK, "/home/bob", "/srv/mail/bob", 1002 },
	{ "bob", "secreT", PASSDB_FAIL, NULL, NULL, 0 },
	{ "carol", "pencil", PASSDB_FAIL, NULL, NULL, 0 },  /* unusable */
	{ "dave", "x", PASSDB_FAIL, NULL, NULL, 0 },        /* bad line */
	{ "mrose", "tanstaaf", PASSDB_OK, "", NULL, 0 },
	{ "erin", "rasmuslerdorf", PASSDB_OK, "", NULL, 0 },
	{ "sam", "pencil", PASSDB_OK, "/home/sam", NULL, 1003 },
	{ "sam", "pencil2", PASSDB_FAIL, NULL, NULL, 0 },
	{ "sid", "pencil", PASSDB_FAIL, NULL, NULL, 0 },    /* unusable */
	{ "nobody", "pencil", PASSDB_FAIL, NULL, NULL, 0 },
	{ "../alice", "pencil", PASSDB_FAIL, NULL, NULL, 0 },
	{ "", "pencil", PASSDB_FAIL, NULL, NULL, 0 },
};

static void test_verify_plain(void **state)
{
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(plain_cases) / sizeof(plain_cases[0]); i++) {
		const struct plain_case *c = &plain_cases[i];
		struct passdb_user u;
		enum passdb_result r =
			passdb_verify_plain(fx->db, c->user, c->password, &u);

		if (r != c->result)
			fail_msg("case %zu (%s/%s): got %d want %d", i, c->user,
				 c->password, r, c->result);
		if (r != PASSDB_OK) {
			assert_null(u.name);
			continue;
		}
		assert_string_equal(u.name, c->user);
		assert_string_equal(u.home, c->home);
		assert_int_equal(u.uid, c->uid);
		if (c->mail == NULL)
			assert_null(u.mail);
		else
			assert_string_equal(u.mail, c->mail);
		passdb_user_clear(&u);
		assert_null(u.name);
	}
}

/*
 * Every attempt runs exactly one slow hash, whether the user is unknown,
 * the password wrong, the entry plaintext, crypt or SCRAM, or the name
 * invalid: the dummy hash is really verified, and never beside a SCRAM
 * entry's own PBKDF2.
 */
static void test_one_slow_hash_per_attempt(void **state)
{
	static const char *const attempts[][2] = {
		{ "alice", "pencil" }, { "alice", "wrong" }, { "nobody", "pencil" },
		{ "bob", "secret" }, { "bob", "wrong" }, { "mrose", "x" },
		{ "carol", "pencil" }, { "../x", "pencil" },
		{ "sam", "pencil" }, { "sam", "wrong" }, { "sid", "pencil" },
	};
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
		struct passdb_user u;
		unsigned long before = password_slow_count();

		passdb_verify_plain(fx->db, attempts[i][0], attempts[i][1], &u);
		passdb_user_clear(&u);
		if (password_slow_count() != before + 1)
			fail_msg("%s: %lu slow hashes", attempts[i][0],
				 password_slow_count() - before);
	}
}

/* With only SCRAM entries, the dummy is SCRAM too: still one slow hash
   (a PBKDF2, no crypt at all) for unknown and plaintext users. */
static void test_scram_only_file_dummy(void **state)
{
	static const char *const users[] = { "nobody", "bob", "sam", "sid" };
	struct fixture *fx = *state;

	write_file(fx->path, "sam:" SAM_HASH "\nbob:{PLAIN}secret\n"
			     "sid:" SID_HASH "\n");
	assert_int_equal(try_login(fx->db, "sam", "pencil"), PASSDB_OK);
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		unsigned long crypts = password_crypt_count();
		unsigned long slow = password_slow_count();

		assert_int_equal(try_login(fx->db, users[i], "wrong"), PASSDB_FAIL);
		assert_int_equal(password_slow_count(), slow + 1);
		assert_int_equal(password_crypt_count(), crypts);
	}
}

/* With only {PLAIN} entries no attempt runs a slow hash, for a known user
   (right or wrong password) or an unknown one alike; logins still work. */
static void test_plain_only_file_no_slow_hash(void **state)
{
	static const char *const attempts[][3] = {
		{ "bob", "secret", "ok" }, { "bob", "wrong", "fail" },
		{ "eve", "other", "ok" }, { "nobody", "secret", "fail" },
		{ "../x", "secret", "fail" },
	};
	struct fixture *fx = *state;

	write_file(fx->path, "bob:{PLAIN}secret\neve:{PLAIN}other\n");
	for (size_t i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
		unsigned long slow = password_slow_count();
		enum passdb_result want = strcmp(attempts[i][2], "ok") == 0 ?
					  PASSDB_OK : PASSDB_FAIL;

		assert_int_equal(try_login(fx->db, attempts[i][0],
					   attempts[i][1]), want);
		if (password_slow_count() != slow)
			fail_msg("%s: %lu slow hashes", attempts[i][0],
				 password_slow_count() - slow);
	}
	/* A slow entry added to the file brings the slow dummy back. */
	write_file(fx->path, "bob:{PLAIN}secret\nsam:" SAM_HASH "\n");
	/* (The first attempt re-reads the file and makes the new dummy.) */
	assert_int_equal(try_login(fx->db, "sam", "pencil"), PASSDB_OK);
	unsigned long slow = password_slow_count();
	assert_int_equal(try_login(fx->db, "nobody", "x"), PASSDB_FAIL);
	assert_int_equal(password_slow_count(), slow + 1);
}

static void test_password_too_long(void **state)
{
	struct fixture *fx = *state;
	char pw[PASSWORD_MAX + 2];
	struct passdb_user u;

	memset(pw, 'p', sizeof(pw) - 1);
	pw[sizeof(pw) - 1] = '\0';
	assert_int_equal(passdb_verify_plain(fx->db, "alice", pw, &u), PASSDB_FAIL);
	assert_null(u.name);
}

struct apop_case {
	const char *user, *timestamp, *digest;
	enum passdb_result result;
};

#define RFC_TS "<1896.697170952@dbc.mtview.ca.us>"
#define RFC_DIGEST "c4c9334bac560ecc979e58001b3e22fb"

static const struct apop_case apop_cases[] = {
	{ "mrose", RFC_TS, RFC_DIGEST, PASSDB_OK },
	{ "mrose", RFC_TS, "C4C9334BAC560ECC979E58001B3E22FB", PASSDB_OK },
	{ "mrose", RFC_TS, "c4c9334bac560ecc979e58001b3e22fc", PASSDB_FAIL },
	{ "mrose", RFC_TS, "c4c9334bac560ecc979e58001b3e22f", PASSDB_FAIL },
	{ "mrose", RFC_TS, RFC_DIGEST "0", PASSDB_FAIL },
	{ "mrose", RFC_TS, "g4c9334bac560ecc979e58001b3e22fb", PASSDB_FAIL },
	{ "mrose", "<1897.697170952@dbc.mtview.ca.us>", RFC_DIGEST, PASSDB_FAIL },
	{ "mrose", RFC_TS, "", PASSDB_FAIL },
	/* Only plaintext entries can do APOP. */
	{ "alice", RFC_TS, RFC_DIGEST, PASSDB_FAIL },
	{ "nobody", RFC_TS, RFC_DIGEST, PASSDB_FAIL },
	{ "../mrose", RFC_TS, RFC_DIGEST, PASSDB_FAIL },
};

static void test_verify_apop(void **state)
{
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(apop_cases) / sizeof(apop_cases[0]); i++) {
		const struct apop_case *c = &apop_cases[i];
		struct passdb_user u;
		enum passdb_result r = passdb_verify_apop(fx->db, c->user,
							  c->timestamp, c->digest, &u);

		if (r != c->result)
			fail_msg("case %zu: got %d want %d", i, r, c->result);
		if (r == PASSDB_OK) {
			assert_string_equal(u.name, c->user);
			passdb_user_clear(&u);
		}
		assert_null(u.name);
	}
}

/* A bob whose {PLAIN} secret is known can do APOP with his digest. */
static void test_apop_plain_user(void **state)
{
	struct fixture *fx = *state;
	struct passdb_user u;

	/* MD5("<1.2@h>secret") */
	assert_int_equal(passdb_verify_apop(fx->db, "bob", "<1.2@h>",
					    "c348ebb16b71cc519fd7c6e61d63a669", &u),
			 PASSDB_OK);
	assert_string_equal(u.mail, "/srv/mail/bob");
	passdb_user_clear(&u);
}

static void set_mtime(const char *path, time_t sec)
{
	struct timespec ts[2] = { { sec, 0 }, { sec, 0 } };

	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static enum passdb_result try_login(struct passdb *db, const char *user,
				    const char *password)
{
	struct passdb_user u;
	enum passdb_result r = passdb_verify_plain(db, user, password, &u);

	passdb_user_clear(&u);
	return r;
}

static void test_reload(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(try_login(fx->db, "bob", "secret"), PASSDB_OK);
	/* New inode (rename over): bob gone, frank there. */
	write_file(fx->path, "frank:{PLAIN}abc\n");
	assert_int_equal(try_login(fx->db, "bob", "secret"), PASSDB_FAIL);
	assert_int_equal(try_login(fx->db, "frank", "abc"), PASSDB_OK);

	/* Same inode, same size, only the mtime differs. */
	FILE *f = fopen(fx->path, "r+");
	assert_non_null(f);
	fputs("frank:{PLAIN}xyz\n", f);
	fclose(f);
	set_mtime(fx->path, 1000000000);
	assert_int_equal(try_login(fx->db, "frank", "abc"), PASSDB_FAIL);
	assert_int_equal(try_login(fx->db, "frank", "xyz"), PASSDB_OK);
}

/* A file that stops loading leaves the last good copy serving. */
static void test_reload_failure_keeps_old(void **state)
{
	struct fixture *fx = *state;

	assert_int_equal(try_login(fx->db, "alice", "pencil"), PASSDB_OK);
	assert_int_equal(truncate(fx->path, 64 * 1024 * 1024 + 1), 0);
	assert_int_equal(try_login(fx->db, "alice", "pencil"), PASSDB_OK);
	assert_int_equal(try_login(fx->db, "alice", "pencil"), PASSDB_OK);
	assert_int_equal(unlink(fx->path), 0);
	assert_int_equal(try_login(fx->db, "alice", "pencil"), PASSDB_OK);
	assert_int_equal(try_login(fx->db, "nobody", "pencil"), PASSDB_FAIL);
	/* And a good file comes back. */
	write_file(fx->path, "gina:{PLAIN}g\n");
	assert_int_equal(try_login(fx->db, "gina", "g"), PASSDB_OK);
	assert_int_equal(try_login(fx->db, "alice", "pencil"), PASSDB_FAIL);
}

struct thread_arg {
	struct passdb *db;
	int ok, bad;
};

static void *login_thread(void *p)
{
	struct thread_arg *a = p;

	for (int i = 0; i < 40; i++) {
		if (try_login(a->db, "bob", "secret") == PASSDB_OK)
			a->ok++;
		else
			a->bad++;
	}
	return NULL;
}

/* Logins keep working while the file is rewritten under them. */
static void test_concurrent_reload(void **state)
{
	struct fixture *fx = *state;
	struct thread_arg args[4];
	pthread_t th[4];

	for (int i = 0; i < 4; i++) {
		args[i] = (struct thread_arg){ fx->db, 0, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, login_thread, &args[i]), 0);
	}
	for (int i = 0; i < 20; i++) {
		char text[128];

		snprintf(text, sizeof(text), "bob:{PLAIN}secret\nu%d:{PLAIN}x\n", i);
		write_file(fx->path, text);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].ok, 40);
		assert_int_equal(args[i].bad, 0);
	}
	assert_int_equal(try_login(fx->db, "u19", "x"), PASSDB_OK);
}

/* The credentials of a stored {SCRAM-SHA-256} entry, as stored. */
static void test_scram_lookup_stored(void **state)
{
	struct fixture *fx = *state;
	struct password_scram cred, want;
	bool usable = false;

	assert_int_equal(password_scram_parse(SAM_HASH, &want), 0);
	unsigned long slow = password_slow_count();
	assert_int_equal(passdb_scram_lookup(fx->db, "sam", &cred, &usable),
			 PASSDB_OK);
	assert_int_equal(password_slow_count(), slow + 1);
	assert_true(usable);
	assert_memory_equal(&cred, &want, sizeof(cred));
}

/* A {PLAIN} user's keys are derived from the secret with a salt that
   stays the same for that user and differs between users. */
static void test_scram_lookup_plain(void **state)
{
	struct fixture *fx = *state;
	struct password_scram cred, again, other, want;
	bool usable = false;

	unsigned long slow = password_slow_count();
	assert_int_equal(passdb_scram_lookup(fx->db, "bob", &cred, &usable),
			 PASSDB_OK);
	assert_int_equal(password_slow_count(), slow + 1);
	assert_true(usable);
	assert_int_equal(cred.iter, PASSWORD_SCRAM_ITER_DEFAULT);
	assert_int_equal(cred.salt_len, PASSWORD_SCRAM_SALT_LEN);
	assert_int_equal(password_scram_derive("secret", cred.salt, cred.salt_len,
					       cred.iter, &want), 0);
	assert_memory_equal(&cred, &want, sizeof(cred));

	assert_int_equal(passdb_scram_lookup(fx->db, "bob", &again, &usable),
			 PASSDB_OK);
	assert_memory_equal(&again, &cred, sizeof(cred));
	assert_int_equal(passdb_scram_lookup(fx->db, "mrose", &other, &usable),
			 PASSDB_OK);
	assert_true(usable);
	assert_memory_not_equal(other.salt, cred.salt, cred.salt_len);
}

/*
 * Unknown users, invalid names, crypt entries and unusable entries get
 * fake credentials shaped like a {PLAIN} user's: same iterations, salt
 * length, a salt stable per name, fresh random keys, one PBKDF2 each.
 */
static void test_scram_lookup_fake(void **state)
{
	static const char *const users[] = {
		"nobody", "alice", "erin", "carol", "sid", "../x", "",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		struct password_scram cred, again;
		bool usable = true;
		unsigned long slow = password_slow_count();

		assert_int_equal(passdb_scram_lookup(fx->db, users[i], &cred,
						     &usable), PASSDB_OK);
		assert_int_equal(password_slow_count(), slow + 1);
		if (usable)
			fail_msg("%s: usable", users[i]);
		assert_int_equal(cred.iter, PASSWORD_SCRAM_ITER_DEFAULT);
		assert_int_equal(cred.salt_len, PASSWORD_SCRAM_SALT_LEN);
		assert_int_equal(passdb_scram_lookup(fx->db, users[i], &again,
						     &usable), PASSDB_OK);
		assert_false(usable);
		assert_memory_equal(again.salt, cred.salt, cred.salt_len);
		assert_memory_not_equal(again.stored_key, cred.stored_key, 32);
		assert_memory_not_equal(again.server_key, cred.server_key, 32);
	}
}

/* The salt key is drawn per passdb: another process (here another
   passdb) gives an unknown user another salt. */
static void test_scram_salt_key_per_db(void **state)
{
	struct fixture *fx = *state;
	struct password_scram a, b;
	struct passdb *db2;
	const char *error;
	bool usable;

	assert_int_equal(passdb_open(fx->path, &db2, &error), 0);
	assert_int_equal(passdb_scram_lookup(fx->db, "nobody", &a, &usable),
			 PASSDB_OK);
	assert_int_equal(passdb_scram_lookup(db2, "nobody", &b, &usable),
			 PASSDB_OK);
	assert_memory_not_equal(a.salt, b.salt, a.salt_len);
	passdb_close(&db2);
}

static void test_user_lookup(void **state)
{
	struct fixture *fx = *state;
	struct passdb_user u;

	assert_int_equal(passdb_user_lookup(fx->db, "bob", &u), PASSDB_OK);
	assert_string_equal(u.name, "bob");
	assert_string_equal(u.home, "/home/bob");
	assert_string_equal(u.mail, "/srv/mail/bob");
	assert_int_equal(u.uid, 1002);
	passdb_user_clear(&u);
	assert_int_equal(passdb_user_lookup(fx->db, "sam", &u), PASSDB_OK);
	assert_string_equal(u.home, "/home/sam");
	passdb_user_clear(&u);
	assert_int_equal(passdb_user_lookup(fx->db, "nobody", &u), PASSDB_FAIL);
	assert_null(u.name);
	assert_int_equal(passdb_user_lookup(fx->db, "../bob", &u), PASSDB_FAIL);
	/* Gone from the file since: FAIL. */
	write_file(fx->path, "frank:{PLAIN}abc\n");
	assert_int_equal(passdb_user_lookup(fx->db, "bob", &u), PASSDB_FAIL);
	assert_null(u.name);
	assert_int_equal(passdb_user_lookup(fx->db, "frank", &u), PASSDB_OK);
	passdb_user_clear(&u);
}

/* A {PLAIN} secret one byte over PASSWORD_MAX: no SCRAM keys from it. */
static char long_plain_line[sizeof("long:{PLAIN}\n") + PASSWORD_MAX + 1];

static const struct can_scram_case {
	const char *text;
	const char *users[4]; /* the names in text, for the cross-check */
	bool can;
} can_scram_cases[] = {
	{ "", { NULL }, false },
	{ "# only a comment\n\n", { NULL }, false },
	/* Crypt hashes only: what `popbox passwd` writes by default. */
	{ "alice:" ALICE_HASH "\nerin:" ERIN_HASH "\n"
	  "carol:{SHA512-CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/\n",
	  { "alice", "erin", "carol", NULL }, false },
	{ "alice:" ALICE_HASH "\nbob:{PLAIN}secret\n", { "alice", "bob", NULL },
	  true },
	{ "mrose:{CLEAR}tanstaaf\r\n", { "mrose", NULL }, true },
	{ "alice:" ALICE_HASH "\nsam:" SAM_HASH ":1003:1003::/home/sam\n",
	  { "alice", "sam", NULL }, true },
	/* Entries that look SCRAM-capable but that no lookup would use. */
	{ "sid:" SID_HASH "\n", { "sid", NULL }, false },
	{ "alice:" ALICE_HASH "\nalice:{PLAIN}pencil2\n", { "alice", NULL },
	  false },
	{ "dave:{PLAIN}x:notanumber\n../bob:{PLAIN}x\n", { "dave", NULL },
	  false },
	{ long_plain_line, { "long", NULL }, false },
	{ users_v1, { "alice", "bob", "sam", NULL }, true },
};

/* Whether any of users gets usable credentials from passdb_scram_lookup(). */
static bool any_lookup_usable(const char *path, const char *const *users)
{
	struct passdb *db;
	const char *error;
	bool any = false;

	assert_int_equal(passdb_open(path, &db, &error), 0);
	for (size_t i = 0; users[i] != NULL; i++) {
		struct password_scram cred;
		bool usable;

		assert_int_equal(passdb_scram_lookup(db, users[i], &cred, &usable),
				 PASSDB_OK);
		any = any || usable;
	}
	passdb_close(&db);
	return any;
}

/* Runs passdb_file_can_scram() with stderr captured into log_r. */
static int can_scram_captured(const char *path, bool *can_r,
			      const char **error_r, char **log_r)
{
	struct stderr_capture c;
	int ret;

	capture_begin(&c, LOG_LEVEL_INFO);
	ret = passdb_file_can_scram(path, can_r, error_r);
	*log_r = capture_end(&c);
	return ret;
}

/*
 * The site-wide question behind auth_mechanisms = auto: true exactly when
 * some user of the file gets usable SCRAM credentials from a lookup, and
 * asked without a word in the log (the auth process reports bad lines).
 */
static void test_file_can_scram(void **state)
{
	struct fixture *fx = *state;

	memset(long_plain_line, 0, sizeof(long_plain_line));
	strcpy(long_plain_line, "long:{PLAIN}");
	memset(long_plain_line + strlen(long_plain_line), 'x', PASSWORD_MAX + 1);
	strcat(long_plain_line, "\n");
	for (size_t i = 0; i < sizeof(can_scram_cases) / sizeof(can_scram_cases[0]);
	     i++) {
		const struct can_scram_case *c = &can_scram_cases[i];
		const char *error = NULL;
		bool can = !c->can;
		char *log;

		write_file(fx->path, c->text);
		assert_int_equal(can_scram_captured(fx->path, &can, &error, &log),
				 0);
		if (can != c->can)
			fail_msg("case %zu: %d, want %d", i, can, c->can);
		if (log[0] != '\0')
			fail_msg("case %zu logged: %s", i, log);
		free(log);
		if (any_lookup_usable(fx->path, c->users) != c->can)
			fail_msg("case %zu: the lookups disagree", i);
	}
}

/* A file that cannot be read is an error, never a silent "no"; a
   symlink is followed, as passdb_open() follows it. */
static void test_file_can_scram_errors(void **state)
{
	struct fixture *fx = *state;
	const char *error = NULL;
	char path[128];
	bool can = true;

	snprintf(path, sizeof(path), "%s/missing", fx->dir);
	assert_int_equal(passdb_file_can_scram(path, &can, &error), -1);
	assert_string_equal(error, "No such file or directory");
	assert_false(can);

	can = true;
	assert_int_equal(passdb_file_can_scram(fx->dir, &can, &error), -1);
	assert_string_equal(error, "not a regular file");
	assert_false(can);

	/* Root reads a mode-000 file anyway: only checked as another user. */
	write_file(fx->path, "bob:{PLAIN}secret\n");
	if (geteuid() != 0) {
		assert_int_equal(chmod(fx->path, 0), 0);
		assert_int_equal(passdb_file_can_scram(fx->path, &can, &error),
				 -1);
		assert_string_equal(error, "Permission denied");
		assert_int_equal(chmod(fx->path, 0600), 0);
	}

	snprintf(path, sizeof(path), "%s/link", fx->dir);
	assert_int_equal(symlink(fx->path, path), 0);
	assert_int_equal(passdb_file_can_scram(path, &can, &error), 0);
	assert_true(can);
	unlink(path);
}

static const struct username_case {
	const char *name;
	bool valid;
} username_cases[] = {
	{ "alice", true }, { "a", true }, { "a.b+c_d-e@example.org", true },
	{ "A0", true }, { "a.", true },
	{ "", false }, { ".a", false }, { "-a", false }, { "a..b", false },
	{ "a/b", false }, { "a b", false }, { "a:b", false }, { "a%b", false },
	{ "a\nb", false }, { "\xc3\xa9", false },
	{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true },
	{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false },
};

static void test_username_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(username_cases) / sizeof(username_cases[0]); i++) {
		const struct username_case *c = &username_cases[i];

		if (username_valid(c->name, strlen(c->name)) != c->valid)
			fail_msg("'%s' should be %s", c->name,
				 c->valid ? "valid" : "invalid");
	}
	/* An embedded NUL is not part of the set. */
	assert_false(username_valid("ab\0c", 4));
	assert_true(username_valid("ab\0c", 2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_lines_warned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_slow_hash_per_attempt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scram_only_file_dummy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plain_only_file_no_slow_hash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scram_lookup_stored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scram_lookup_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scram_lookup_fake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scram_salt_key_per_db, setup, teardown),
		cmocka_unit_test_setup_teardown(test_user_lookup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_password_too_long, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_apop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apop_plain_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_failure_keeps_old, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_can_scram, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_can_scram_errors, setup, teardown),
		cmocka_unit_test(test_username_valid),
	};

	/* The warnings are expected; test_bad_lines_warned checks them. */
	log_set_level(LOG_LEVEL_ERROR);

	return cmocka_run_group_tests(tests, NULL, NULL);
}
