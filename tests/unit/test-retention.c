/*
 * test-retention.c — the retention decision at every boundary (exactly N
 * days, one second either side, the future, the extremes of time, never,
 * unresolved policies) and the ",K=" names of kept messages: reading them
 * strictly and writing them within NAME_MAX.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "retention.h"
#include "user-policy.h"

#define DAY RETENTION_DAY_SECONDS
#define NOW ((int64_t)1700000000)

static struct user_policy policy(int32_t keep_days, int32_t expire_days)
{
	struct user_policy p;

	user_policy_init(&p);
	p.quota_storage = 0;
	p.quota_messages = 0;
	p.keep_days = keep_days;
	p.expire_days = expire_days;
	p.pop3 = 1;
	return p;
}

static void test_older_than(void **state)
{
	(void)state;
	/* Strictly more than N days. */
	assert_false(retention_older_than(NOW - 10 * DAY, NOW, 10));
	assert_true(retention_older_than(NOW - 10 * DAY - 1, NOW, 10));
	assert_false(retention_older_than(NOW - 10 * DAY + 1, NOW, 10));
	assert_false(retention_older_than(NOW, NOW, 0));
	assert_true(retention_older_than(NOW - 1, NOW, 0));
	/* The future, and a clock stepped back, keep. */
	assert_false(retention_older_than(NOW + 1, NOW, 0));
	assert_false(retention_older_than(INT64_MAX, NOW, 1));
	/* Negative days (never, unset) keep. */
	assert_false(retention_older_than(INT64_MIN, NOW, -1));
	assert_false(retention_older_than(0, NOW, USER_POLICY_NEVER));
	/* The extremes of time do not overflow. */
	assert_true(retention_older_than(INT64_MIN, NOW, USER_POLICY_DAYS_MAX));
	assert_true(retention_older_than(INT64_MIN, INT64_MAX, INT32_MAX));
	assert_true(retention_older_than(0, NOW, 1));
	assert_true(retention_older_than(-5, 0, 0));
	assert_false(retention_older_than(INT64_MAX - 1, INT64_MAX,
					  USER_POLICY_DAYS_MAX));
	assert_false(retention_older_than(NOW - (int64_t)INT32_MAX * DAY, NOW,
					  INT32_MAX));
	assert_true(retention_older_than(NOW - (int64_t)INT32_MAX * DAY - 1,
					 NOW, INT32_MAX));
}

static void test_due_in_maildrop(void **state)
{
	struct user_policy p = policy(0, 30);

	(void)state;
	assert_false(retention_due(RETENTION_MAILDROP, NOW - 30 * DAY, NOW, &p));
	assert_true(retention_due(RETENTION_MAILDROP, NOW - 30 * DAY - 1, NOW, &p));
	assert_false(retention_due(RETENTION_MAILDROP, NOW, NOW, &p));
	assert_false(retention_due(RETENTION_MAILDROP, NOW + DAY, NOW, &p));
	/* keep_days has no say in the maildrop. */
	p = policy(3650, 1);
	assert_true(retention_due(RETENTION_MAILDROP, NOW - 2 * DAY, NOW, &p));
	/* Never keeps everything, however old. */
	p = policy(0, USER_POLICY_NEVER);
	assert_false(retention_due(RETENTION_MAILDROP, INT64_MIN, NOW, &p));
	assert_false(retention_due(RETENTION_MAILDROP, 0, NOW, &p));
	/* A policy that was not resolved, or is out of range, keeps. */
	p = policy(0, USER_POLICY_UNSET);
	assert_false(retention_due(RETENTION_MAILDROP, 0, NOW, &p));
	p = policy(0, 0);
	assert_false(retention_due(RETENTION_MAILDROP, 0, NOW, &p));
	p = policy(0, USER_POLICY_DAYS_MAX + 1);
	assert_false(retention_due(RETENTION_MAILDROP, 0, NOW, &p));
	p = policy(0, USER_POLICY_DAYS_MAX);
	assert_true(retention_due(RETENTION_MAILDROP, 0, NOW, &p));
}

static void test_due_in_kept(void **state)
{
	struct user_policy p = policy(3, USER_POLICY_NEVER);

	(void)state;
	assert_false(retention_due(RETENTION_KEPT, NOW - 3 * DAY, NOW, &p));
	assert_true(retention_due(RETENTION_KEPT, NOW - 3 * DAY - 1, NOW, &p));
	assert_false(retention_due(RETENTION_KEPT, NOW + 5, NOW, &p));
	/* No ,K= time: never. */
	assert_false(retention_due(RETENTION_KEPT, RETENTION_SINCE_UNKNOWN, NOW,
				   &p));
	/* expire_days has no say in .Kept. */
	p = policy(3, 1);
	assert_false(retention_due(RETENTION_KEPT, NOW - 2 * DAY, NOW, &p));
	/* keep_days 0: due once a second has passed. */
	p = policy(0, USER_POLICY_NEVER);
	assert_false(retention_due(RETENTION_KEPT, NOW, NOW, &p));
	assert_true(retention_due(RETENTION_KEPT, NOW - 1, NOW, &p));
	/* Unresolved or out of range: keeps. */
	p = policy(USER_POLICY_UNSET, USER_POLICY_NEVER);
	assert_false(retention_due(RETENTION_KEPT, 0, NOW, &p));
	p = policy(USER_POLICY_DAYS_MAX + 1, USER_POLICY_NEVER);
	assert_false(retention_due(RETENTION_KEPT, 0, NOW, &p));
}

struct since_case {
	const char *name;
	bool ok;
	int64_t since;
};

static const struct since_case since_cases[] = {
	{ "m,K=1700000000", true, 1700000000 },
	{ "m,K=0", true, 0 },
	{ "m,K=00012", true, 12 },
	{ "1700.M1P2.host,S=10,W=12,K=5:2,S", true, 5 },
	{ "1700.M1P2.host,K=5,S=10:2,", true, 5 },
	{ "m,K=1099511627776", true, RETENTION_SINCE_MAX },
	{ "m,K=1099511627777", false, 0 },
	{ "m,K=99999999999999999999", false, 0 },
	{ "m,K=999999999999999999999", false, 0 },
	{ "m", false, 0 },
	{ "", false, 0 },
	{ "m,K=", false, 0 },
	{ "m,K", false, 0 },
	{ "m,k=5", false, 0 },
	{ "m,KK=5", false, 0 },
	{ "m,K=5x", false, 0 },
	{ "m,K=-5", false, 0 },
	{ "m,K=+5", false, 0 },
	{ "m,K= 5", false, 0 },
	{ "m,K=5,K=5", false, 0 },
	{ "m,K=5,K=x", false, 0 },
	{ "m,K=x,K=5", false, 0 },
	{ "K=5", false, 0 },               /* the unique part, not a field */
	{ "m:2,K=5", false, 0 },           /* in the info, not the base */
	{ "m,S=1:2,K=5", false, 0 },
	{ ",K=5", true, 5 },
	{ "m,,K=5,", true, 5 },
	{ "m,K=5:2,K=6", true, 5 },
};

static void test_kept_since(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(since_cases) / sizeof(since_cases[0]); i++) {
		const struct since_case *c = &since_cases[i];
		int64_t since = -77;
		bool ok = retention_kept_since(c->name, strlen(c->name), &since);

		if (ok != c->ok || (ok && since != c->since) ||
		    (!ok && since != -77))
			fail_msg("%s: ok=%d since=%lld", c->name, ok,
				 (long long)since);
	}
	/* Only [0..len) is read: a NUL or more text after it is not. */
	int64_t since;
	assert_true(retention_kept_since("m,K=12345", 7, &since));
	assert_int_equal(since, 123);
	assert_false(retention_kept_since("m,K=1\0,K=2", 11, &since));
	assert_false(retention_kept_since("m,K=1\0", 6, &since));
}

struct name_case {
	const char *name;
	int64_t now;
	const char *kept; /* NULL: refused */
};

static const struct name_case name_cases[] = {
	{ "m", 5, "m,K=5" },
	{ "m:2,S", 5, "m,K=5:2,S" },
	{ "m:2,", 1700000000, "m,K=1700000000:2," },
	{ "1700.M1P2.host,S=10,W=12:2,RS", 1700000000,
	  "1700.M1P2.host,S=10,W=12,K=1700000000:2,RS" },
	{ "1700.M1P2.host,S=10,K=1600000000,W=12:2,S", 1700000000,
	  "1700.M1P2.host,S=10,W=12,K=1700000000:2,S" },
	{ "m,K=1,K=2,K=x", 9, "m,K=9" },
	{ "m,K=", 9, "m,K=9" },
	{ "m,K", 9, "m,K,K=9" },
	{ "m,,S=1,", 9, "m,,S=1,,K=9" },
	{ "m:2,S,K=1", 9, "m,K=9:2,S,K=1" },
	{ "m", 0, "m,K=0" },
	{ "m", RETENTION_SINCE_MAX, "m,K=1099511627776" },
	{ "m", RETENTION_SINCE_MAX + 1, NULL },
	{ "m", -1, NULL },
	{ "", 5, NULL },
};

static void test_kept_name(void **state)
{
	char out[RETENTION_NAME_MAX + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(name_cases) / sizeof(name_cases[0]); i++) {
		const struct name_case *c = &name_cases[i];
		ssize_t n = retention_kept_name(c->name, strlen(c->name), c->now,
						out, sizeof(out));

		if (c->kept == NULL) {
			if (n != -1)
				fail_msg("%s accepted", c->name);
			continue;
		}
		if (n < 0 || strcmp(out, c->kept) != 0 ||
		    (size_t)n != strlen(c->kept))
			fail_msg("%s: %zd '%s', want '%s'", c->name, n,
				 n < 0 ? "" : out, c->kept);
		/* What it writes, it reads back. */
		int64_t since;
		assert_true(retention_kept_since(out, (size_t)n, &since));
		assert_int_equal(since, c->now);
	}
}

/* NAME_MAX and the caller's buffer both bound the result. */
static void test_kept_name_limits(void **state)
{
	char name[300], out[300];
	const int64_t now = 1700000000; /* ",K=1700000000": 13 bytes */

	(void)state;
	memset(name, 'a', sizeof(name));
	assert_int_equal(retention_kept_name(name, 242, now, out, sizeof(out)),
			 255);
	assert_int_equal(strlen(out), 255);
	assert_int_equal(retention_kept_name(name, 243, now, out, sizeof(out)),
			 -1);
	/* The info part counts too. */
	memcpy(name + 240, ":2,", 3);
	assert_int_equal(retention_kept_name(name, 242, now, out, sizeof(out)),
			 255);
	assert_int_equal(retention_kept_name(name, 243, now, out, sizeof(out)),
			 -1);
	/* A dropped ,K= field makes room. */
	memset(name, 'a', sizeof(name));
	memcpy(name + 200, ",K=1,", 5);
	assert_int_equal(retention_kept_name(name, 246, now, out, sizeof(out)),
			 255);
	/* A small buffer: refused, never overrun (ASan checks). */
	char *small = malloc(8);
	assert_non_null(small);
	assert_int_equal(retention_kept_name("m", 1, 5, small, 6), 5);
	assert_string_equal(small, "m,K=5");
	assert_int_equal(retention_kept_name("m", 1, 50, small, 6), -1);
	assert_int_equal(retention_kept_name("m", 1, 5, small, 0), -1);
	assert_int_equal(retention_kept_name("m:2,S", 5, 5, small, 8), -1);
	/* Never a file name: refused. */
	assert_int_equal(retention_kept_name("a/b", 3, 5, out, sizeof(out)), -1);
	assert_int_equal(retention_kept_name("a\0b", 3, 5, out, sizeof(out)), -1);
	free(small);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_older_than),
		cmocka_unit_test(test_due_in_maildrop),
		cmocka_unit_test(test_due_in_kept),
		cmocka_unit_test(test_kept_since),
		cmocka_unit_test(test_kept_name),
		cmocka_unit_test(test_kept_name_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
