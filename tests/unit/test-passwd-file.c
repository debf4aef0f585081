/*
 * test-passwd-file.c — the passwd-file line parser: one table of good
 * lines with the fields they yield, one of bad lines with their error;
 * and passwd_file_find, one table of whole files with the line it picks
 * and the first line of the user's it skips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "passwd-file.h"

#define H "{SHA512-CRYPT}$6$saltsalt$rD9fW1Bw"

struct good_case {
	const char *line;
	const char *user, *password;
	uid_t uid;
	gid_t gid;
	const char *home;
	const char *mail; /* NULL: none */
};

static const struct good_case good_cases[] = {
	{ "alice:" H, "alice", H, 0, 0, "", NULL },
	{ "alice:" H ":", "alice", H, 0, 0, "", NULL },
	{ "alice:" H "\r", "alice", H, 0, 0, "", NULL },
	{ "alice:" H ":1000:1001", "alice", H, 1000, 1001, "", NULL },
	{ "alice:" H ":1000:1001:Alice A.:/home/alice:/bin/sh",
	  "alice", H, 1000, 1001, "/home/alice", NULL },
	{ "alice:" H ":::::", "alice", H, 0, 0, "", NULL },
	{ "alice:" H "::::/home/a::mail=/srv/mail/alice",
	  "alice", H, 0, 0, "/home/a", "/srv/mail/alice" },
	{ "a@example.org:{PLAIN}tanstaaf:4294967294:1::/h::quota=1G  "
	  "userdb_mail=/m/a:b other",
	  "a@example.org", "{PLAIN}tanstaaf", 4294967294u, 1, "/h", "/m/a:b" },
	{ "bob:$y$j9T$abc$def:007:08:", "bob", "$y$j9T$abc$def", 7, 8, "", NULL },
	{ "u:x:1:2:g:/h:/s:flag\tkey=val mail=/x", "u", "x", 1, 2, "/h", "/x" },
};

static void test_good_lines(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good_cases) / sizeof(good_cases[0]); i++) {
		const struct good_case *c = &good_cases[i];
		struct passwd_file_entry e;
		enum passwd_file_error err = PASSWD_FILE_ERR_NOMEM;
		int r = passwd_file_parse_line(c->line, strlen(c->line), &e, &err);

		if (r != 1)
			fail_msg("case %zu (%s): r=%d %s", i, c->line, r,
				 passwd_file_strerror(err));
		assert_int_equal(err, PASSWD_FILE_ERR_NONE);
		assert_string_equal(e.user, c->user);
		assert_string_equal(e.password, c->password);
		assert_int_equal(e.uid, c->uid);
		assert_int_equal(e.gid, c->gid);
		assert_string_equal(e.home, c->home);
		if (c->mail == NULL)
			assert_null(e.mail);
		else
			assert_string_equal(e.mail, c->mail);
		passwd_file_entry_free(&e);
		assert_null(e.user);
	}
}

static const char *const skip_cases[] = {
	"", "   ", "\t", "\r", "# a comment", "#alice:x", " \t \r",
};

static void test_skipped_lines(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(skip_cases) / sizeof(skip_cases[0]); i++) {
		struct passwd_file_entry e;
		enum passwd_file_error err;

		assert_int_equal(passwd_file_parse_line(skip_cases[i],
				 strlen(skip_cases[i]), &e, &err), 0);
		assert_null(e.user);
	}
}

struct bad_case {
	const char *line;
	size_t len; /* 0: strlen */
	enum passwd_file_error error;
	const char *text;
};

static const struct bad_case bad_cases[] = {
	{ "alice", 0, PASSWD_FILE_ERR_NO_PASSWORD, "missing or empty password field" },
	{ "alice:", 0, PASSWD_FILE_ERR_NO_PASSWORD, "missing or empty password field" },
	{ "alice::1:1", 0, PASSWD_FILE_ERR_NO_PASSWORD, "missing or empty password field" },
	{ ":x", 0, PASSWD_FILE_ERR_USER, "invalid user name" },
	{ " alice:x", 0, PASSWD_FILE_ERR_USER, "invalid user name" },
	{ "../etc:x", 0, PASSWD_FILE_ERR_USER, "invalid user name" },
	{ "a/b:x", 0, PASSWD_FILE_ERR_USER, "invalid user name" },
	{ "-a:x", 0, PASSWD_FILE_ERR_USER, "invalid user name" },
	{ "a..b:x", 0, PASSWD_FILE_ERR_USER, "invalid user name" },
	{ "a\tb:x", 0, PASSWD_FILE_ERR_USER, "invalid user name" },
	{ "a\xc3\xa9:x", 0, PASSWD_FILE_ERR_USER, "invalid user name" },
	{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:x",
	  0, PASSWD_FILE_ERR_USER, "invalid user name" },
	{ "a:x:0:1", 0, PASSWD_FILE_ERR_UID, "bad uid (a number 1..4294967294, or empty)" },
	{ "a:x:-1:1", 0, PASSWD_FILE_ERR_UID, "bad uid (a number 1..4294967294, or empty)" },
	{ "a:x:4294967295:1", 0, PASSWD_FILE_ERR_UID, "bad uid (a number 1..4294967294, or empty)" },
	{ "a:x: 1:1", 0, PASSWD_FILE_ERR_UID, "bad uid (a number 1..4294967294, or empty)" },
	{ "a:x:1x:1", 0, PASSWD_FILE_ERR_UID, "bad uid (a number 1..4294967294, or empty)" },
	{ "a:x:1:0", 0, PASSWD_FILE_ERR_GID, "bad gid (a number 1..4294967294, or empty)" },
	{ "a:x:1:99999999999999999999", 0, PASSWD_FILE_ERR_GID, "bad gid (a number 1..4294967294, or empty)" },
	{ "a:x:1:1::home", 0, PASSWD_FILE_ERR_HOME, "home is not an absolute path" },
	{ "a:x:::: /home", 0, PASSWD_FILE_ERR_HOME, "home is not an absolute path" },
	{ "a:x::::::mail=rel/path", 0, PASSWD_FILE_ERR_MAIL, "mail= must be one absolute path" },
	{ "a:x::::::mail=", 0, PASSWD_FILE_ERR_MAIL, "mail= must be one absolute path" },
	{ "a:x::::::mail", 0, PASSWD_FILE_ERR_MAIL, "mail= must be one absolute path" },
	{ "a:x::::::mail=/a mail=/b", 0, PASSWD_FILE_ERR_MAIL, "mail= must be one absolute path" },
	{ "a:x::::::mail=/a userdb_mail=/b", 0, PASSWD_FILE_ERR_MAIL, "mail= must be one absolute path" },
	{ "a:x::::::nopassword", 0, PASSWD_FILE_ERR_UNSUPPORTED, NULL },
	{ "a:x::::::deny=yes", 0, PASSWD_FILE_ERR_UNSUPPORTED, NULL },
	{ "a:x::::::x=1 allow_nets=10.0.0.0/8", 0, PASSWD_FILE_ERR_UNSUPPORTED, NULL },
	{ "a:x::::::nologin", 0, PASSWD_FILE_ERR_UNSUPPORTED, NULL },
	{ "a:x::::::proxy host=x", 0, PASSWD_FILE_ERR_UNSUPPORTED, NULL },
	{ "a:x\x01y", 0, PASSWD_FILE_ERR_CONTROL, "control byte in line" },
	{ "a:x\x7f", 0, PASSWD_FILE_ERR_CONTROL, "control byte in line" },
	{ "a:x\ny", 0, PASSWD_FILE_ERR_CONTROL, "control byte in line" },
	{ "a:x\0y", 5, PASSWD_FILE_ERR_CONTROL, "control byte in line" },
	{ "#comment\0", 9, PASSWD_FILE_ERR_CONTROL, "control byte in line" },
};

static void test_bad_lines(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->line);
		struct passwd_file_entry e;
		enum passwd_file_error err = PASSWD_FILE_ERR_NONE;
		int r = passwd_file_parse_line(c->line, len, &e, &err);

		if (r != -1 || err != c->error)
			fail_msg("case %zu (%s): r=%d err=%d want %d", i,
				 c->line, r, err, c->error);
		assert_null(e.user);
		if (c->text != NULL)
			assert_string_equal(passwd_file_strerror(err), c->text);
	}
}

static void test_line_length(void **state)
{
	char *line = malloc(PASSWD_FILE_LINE_MAX + 2);
	struct passwd_file_entry e;
	enum passwd_file_error err;

	(void)state;
	assert_non_null(line);
	memcpy(line, "a:", 2);
	memset(line + 2, 'x', PASSWD_FILE_LINE_MAX);
	assert_int_equal(passwd_file_parse_line(line, PASSWD_FILE_LINE_MAX, &e,
						&err), 1);
	passwd_file_entry_free(&e);
	/* One '\r' more is still fine; one real byte more is not. */
	line[PASSWD_FILE_LINE_MAX] = '\r';
	assert_int_equal(passwd_file_parse_line(line, PASSWD_FILE_LINE_MAX + 1,
						&e, &err), 1);
	passwd_file_entry_free(&e);
	line[PASSWD_FILE_LINE_MAX] = 'x';
	assert_int_equal(passwd_file_parse_line(line, PASSWD_FILE_LINE_MAX + 1,
						&e, &err), -1);
	assert_int_equal(err, PASSWD_FILE_ERR_TOO_LONG);
	assert_string_equal(passwd_file_strerror(err), "line too long");
	free(line);
}

/* The policy fields (user-policy.h) among the extra fields. */
static void test_policy_fields(void **state)
{
	static const char *const bad[] = {
		"a:x::::::keep_days=3651",
		"a:x::::::keep_days=1 keep_days=1",
		"a:x::::::keep_days",
		"a:x::::::expire_days=0",
		"a:x::::::userdb_expire_days=forever",
		"a:x::::::pop3=off",
		"a:x::::::pop3=no userdb_pop3=no",
		"a:x::::::quota_rule=*:storage=1Q",
		"a:x::::::quota_rule=*:storage=1G quota_rule=*:messages=2",
		"a:x::::::mail=/m quota_rule=*:storage=99999999999999999999",
	};
	struct passwd_file_entry e;
	enum passwd_file_error err;
	const char *line = "alice:" H "::::/h::mail=/m/a keep_days=3 "
			   "userdb_expire_days=never pop3=no "
			   "quota_rule=*:storage=2G:messages=100 other=1";

	(void)state;
	assert_int_equal(passwd_file_parse_line(line, strlen(line), &e, &err), 1);
	assert_string_equal(e.mail, "/m/a");
	assert_int_equal(e.policy.keep_days, 3);
	assert_int_equal(e.policy.expire_days, USER_POLICY_NEVER);
	assert_int_equal(e.policy.pop3, 0);
	assert_int_equal(e.policy.quota_storage, (int64_t)2 << 30);
	assert_int_equal(e.policy.quota_messages, 100);
	passwd_file_entry_free(&e);
	/* No policy fields: everything unset. */
	line = "bob:" H "::::::mail=/m/b";
	assert_int_equal(passwd_file_parse_line(line, strlen(line), &e, &err), 1);
	assert_int_equal(e.policy.keep_days, USER_POLICY_UNSET);
	assert_int_equal(e.policy.expire_days, USER_POLICY_UNSET);
	assert_int_equal(e.policy.pop3, USER_POLICY_UNSET);
	assert_int_equal(e.policy.quota_storage, USER_POLICY_UNSET);
	assert_int_equal(e.policy.quota_messages, USER_POLICY_UNSET);
	passwd_file_entry_free(&e);
	/* A bad or repeated one refuses the whole line. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = PASSWD_FILE_ERR_NONE;
		if (passwd_file_parse_line(bad[i], strlen(bad[i]), &e, &err) != -1 ||
		    err != PASSWD_FILE_ERR_POLICY)
			fail_msg("%s: err=%d", bad[i], err);
		assert_null(e.user);
	}
	assert_non_null(strstr(passwd_file_strerror(PASSWD_FILE_ERR_POLICY),
			       "keep_days"));
}

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(passwd_file_strerror(PASSWD_FILE_ERR_NOMEM), "out of memory");
	assert_string_equal(passwd_file_strerror(PASSWD_FILE_ERR_NONE), "no error");
	assert_string_equal(passwd_file_strerror((enum passwd_file_error)999),
			    "unknown error");
}

/* ---- passwd_file_find: one user's line out of a whole file ---- */

#define T(s) s, sizeof(s) - 1 /* a text with its length, NULs and all */

struct find_case {
	const char *text;
	size_t len;
	const char *user;
	int result;                  /* what passwd_file_find returns */
	uid_t uid;                   /* of the line found (its identity) */
	unsigned int skipped_lineno; /* first skipped line of user's; 0: none */
	enum passwd_file_error skipped_error;
};

static const struct find_case find_cases[] = {
	{ T("alice:x:1\n"), "alice", 1, 1, 0, PASSWD_FILE_ERR_NONE },
	/* The last line needs no newline; CRLF line ends. */
	{ T("bob:x:1\nalice:x:2"), "alice", 1, 2, 0, PASSWD_FILE_ERR_NONE },
	{ T("bob:x:1\r\nalice:x:2\r\n"), "alice", 1, 2, 0,
	  PASSWD_FILE_ERR_NONE },
	/* Names that share a prefix, or differ in case, are other users. */
	{ T("alicex:x:1\nalic:x:2\nALICE:x:3\nalice:x:4\n"), "alice", 1, 4, 0,
	  PASSWD_FILE_ERR_NONE },
	{ T("alicex:x:1\nalic:x:2\n"), "alice", 0, 0, 0, PASSWD_FILE_ERR_NONE },
	/* A duplicate: the first line counts. */
	{ T("alice:x:5\nalice:x:6\n"), "alice", 1, 5, 0, PASSWD_FILE_ERR_NONE },
	/* A bad line of alice's is skipped and reported; a later one counts. */
	{ T("\n# alice:x:1\n\nalice:x:0\nalice:x:7\nalice:x:bad\n"), "alice",
	  1, 7, 4, PASSWD_FILE_ERR_UID },
	{ T("alice:x:1:2:g:relative\nalice:\n"), "alice", 0, 0, 1,
	  PASSWD_FILE_ERR_HOME },
	{ T("alice:x:1:::::deny\nalice:x:2::::: nologin=y\n"), "alice", 0, 0, 1,
	  PASSWD_FILE_ERR_UNSUPPORTED },
	/* Control bytes: in someone else's line nothing to alice; in hers
	   the line is skipped. */
	{ T("bob:x\0y:1\nalice:x:8\n"), "alice", 1, 8, 0, PASSWD_FILE_ERR_NONE },
	{ T("alice:x\0y:1\nalice:x:9\n"), "alice", 1, 9, 1,
	  PASSWD_FILE_ERR_CONTROL },
	/* A bare name without ':' is not the user's line. */
	{ T("alice\nalice:"), "alice", 0, 0, 2, PASSWD_FILE_ERR_NO_PASSWORD },
	{ T(""), "alice", 0, 0, 0, PASSWD_FILE_ERR_NONE },
	{ T("\n\n\n"), "alice", 0, 0, 0, PASSWD_FILE_ERR_NONE },
	{ T("a@example.org:{PLAIN}x:10\n"), "a@example.org", 1, 10, 0,
	  PASSWD_FILE_ERR_NONE },
};

static void test_find(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(find_cases) / sizeof(find_cases[0]); i++) {
		const struct find_case *c = &find_cases[i];
		struct passwd_file_skipped skipped;
		struct passwd_file_entry e;
		int r = passwd_file_find(c->text, c->len, c->user, &e, &skipped);

		if (r != c->result || skipped.lineno != c->skipped_lineno ||
		    (skipped.lineno != 0 && skipped.error != c->skipped_error))
			fail_msg("case %zu: r=%d skipped line %u (%s)", i, r,
				 skipped.lineno,
				 passwd_file_strerror(skipped.error));
		if (r == 1) {
			assert_string_equal(e.user, c->user);
			assert_int_equal(e.uid, c->uid);
		} else {
			assert_null(e.user);
		}
		passwd_file_entry_free(&e);
	}
}

/* A line of the user's over PASSWD_FILE_LINE_MAX is skipped, not cut. */
static void test_find_long_line(void **state)
{
	size_t len = 2 * PASSWD_FILE_LINE_MAX + 64, n;
	char *text = malloc(len);
	struct passwd_file_skipped skipped;
	struct passwd_file_entry e;

	(void)state;
	assert_non_null(text);
	n = (size_t)snprintf(text, len, "alice:x:1:2::/h::");
	memset(text + n, 'k', PASSWD_FILE_LINE_MAX);
	n += PASSWD_FILE_LINE_MAX;
	n += (size_t)snprintf(text + n, len - n, "\nalice:x:3\n");
	assert_int_equal(passwd_file_find(text, n, "alice", &e, &skipped), 1);
	assert_int_equal(e.uid, 3);
	assert_int_equal(skipped.lineno, 1);
	assert_int_equal(skipped.error, PASSWD_FILE_ERR_TOO_LONG);
	passwd_file_entry_free(&e);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_lines),
		cmocka_unit_test(test_skipped_lines),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_line_length),
		cmocka_unit_test(test_policy_fields),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_find_long_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
