/*
 * test-user-policy.c — the per-account policy fields of the passwd-file
 * (quota_rule, keep_days, expire_days, pop3; with and without the
 * "userdb_" prefix), their sizes and bounds, repeats, the resolution
 * against the settings, and the inter-process form with its range checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth-proto.h"
#include "ipc.h"
#include "settings.h"
#include "user-policy.h"

#define UNSET USER_POLICY_UNSET

/* Parses one "key=value" (or a bare "key") into pol. */
static int field(struct user_policy *pol, const char *kv)
{
	const char *eq = strchr(kv, '=');

	if (eq == NULL)
		return user_policy_parse_field(pol, kv, strlen(kv), NULL, 0);
	return user_policy_parse_field(pol, kv, (size_t)(eq - kv), eq + 1,
				       strlen(eq + 1));
}

/* Field by field (the struct has padding). */
static void assert_same(const struct user_policy *a, const struct user_policy *b)
{
	assert_int_equal(a->quota_storage, b->quota_storage);
	assert_int_equal(a->quota_messages, b->quota_messages);
	assert_int_equal(a->keep_days, b->keep_days);
	assert_int_equal(a->expire_days, b->expire_days);
	assert_int_equal(a->pop3, b->pop3);
}

/* A fresh policy with one field parsed; *ret_r is the parser's result. */
static struct user_policy one(const char *kv, int *ret_r)
{
	struct user_policy pol;

	user_policy_init(&pol);
	*ret_r = field(&pol, kv);
	return pol;
}

static void test_init_and_unknown_keys(void **state)
{
	static const char *const others[] = {
		"mail=/x", "quota=1G", "userdb_quota=1G", "keep", "keep_day=1",
		"keep_days_=1", "Keep_days=1", "POP3=no", "pop=no", "userdb_",
		"userdb_=1", "userdb_userdb_pop3=no", "expire=1", "quota_rules=*:x",
		"", "=", "x=",
	};
	struct user_policy pol;
	int r;

	(void)state;
	user_policy_init(&pol);
	assert_int_equal(pol.quota_storage, UNSET);
	assert_int_equal(pol.quota_messages, UNSET);
	assert_int_equal(pol.keep_days, UNSET);
	assert_int_equal(pol.expire_days, UNSET);
	assert_int_equal(pol.pop3, UNSET);
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		struct user_policy p = one(others[i], &r);

		if (r != 0)
			fail_msg("%s: %d", others[i], r);
		assert_same(&p, &pol);
	}
}

struct quota_case {
	const char *kv;
	int64_t storage, messages;
};

static const struct quota_case quota_good[] = {
	{ "quota_rule=*:storage=0", 0, UNSET },
	{ "quota_rule=*:storage=1", 1, UNSET },
	{ "quota_rule=*:storage=1B", 1, UNSET },
	{ "quota_rule=*:storage=2k", 2048, UNSET },
	{ "quota_rule=*:storage=2K", 2048, UNSET },
	{ "quota_rule=*:storage=2kB", 2048, UNSET },
	{ "quota_rule=*:storage=3M", 3 << 20, UNSET },
	{ "quota_rule=*:storage=1G", (int64_t)1 << 30, UNSET },
	{ "quota_rule=*:storage=1g", (int64_t)1 << 30, UNSET },
	{ "quota_rule=*:storage=5T", (int64_t)5 << 40, UNSET },
	{ "quota_rule=*:storage=1024T", USER_POLICY_STORAGE_MAX, UNSET },
	{ "quota_rule=*:storage=1125899906842624", USER_POLICY_STORAGE_MAX, UNSET },
	{ "quota_rule=*:messages=0", UNSET, 0 },
	{ "quota_rule=*:messages=1000000", UNSET, USER_POLICY_MESSAGES_MAX },
	{ "quota_rule=*:storage=10M:messages=500", 10 << 20, 500 },
	{ "quota_rule=*:messages=7:storage=1k", 1024, 7 },
	{ "userdb_quota_rule=*:storage=1M", 1 << 20, UNSET },
};

static const char *const quota_bad[] = {
	"quota_rule", "quota_rule=", "quota_rule=*", "quota_rule=*:",
	"quota_rule=**:storage=1", "quota_rule=INBOX:storage=1",
	"quota_rule=*:storage", "quota_rule=*:storage=", "quota_rule=*:storage=k",
	"quota_rule=*:storage=B", "quota_rule=*:storage=1X",
	"quota_rule=*:storage=1P", "quota_rule=*:storage=-1",
	"quota_rule=*:storage= 1", "quota_rule=*:storage=1 ",
	"quota_rule=*:storage=0x10", "quota_rule=*:storage=1.5G",
	"quota_rule=*:storage=1kk", "quota_rule=*:storage=1025T",
	"quota_rule=*:storage=1125899906842625",
	"quota_rule=*:storage=18446744073709551615",
	"quota_rule=*:storage=99999999999999999999999999",
	"quota_rule=*:storage=17179869184G",  /* 2^64 by the suffix */
	"quota_rule=*:messages=1000001", "quota_rule=*:messages=1k",
	"quota_rule=*:messages=-1", "quota_rule=*:bytes=1",
	"quota_rule=*::storage=1", "quota_rule=*:storage=1:storage=2",
	"quota_rule=*:messages=1:messages=2", "quota_rule=*:STORAGE=1",
	"quota_rule=*:storage=1=2",
};

static void test_quota_rule(void **state)
{
	int r;

	(void)state;
	for (size_t i = 0; i < sizeof(quota_good) / sizeof(quota_good[0]); i++) {
		const struct quota_case *c = &quota_good[i];
		struct user_policy p = one(c->kv, &r);

		if (r != 1 || p.quota_storage != c->storage ||
		    p.quota_messages != c->messages)
			fail_msg("%s: r=%d storage=%lld messages=%lld", c->kv, r,
				 (long long)p.quota_storage,
				 (long long)p.quota_messages);
		assert_int_equal(p.keep_days, UNSET);
		assert_int_equal(p.expire_days, UNSET);
		assert_int_equal(p.pop3, UNSET);
	}
	for (size_t i = 0; i < sizeof(quota_bad) / sizeof(quota_bad[0]); i++) {
		(void)one(quota_bad[i], &r);
		if (r != -1)
			fail_msg("%s accepted (%d)", quota_bad[i], r);
	}
}

struct days_case {
	const char *kv;
	int ret;
	int32_t keep, expire;
};

static const struct days_case days_cases[] = {
	{ "keep_days=0", 1, 0, UNSET },
	{ "keep_days=1", 1, 1, UNSET },
	{ "keep_days=007", 1, 7, UNSET },
	{ "keep_days=3650", 1, 3650, UNSET },
	{ "userdb_keep_days=30", 1, 30, UNSET },
	{ "keep_days=3651", -1, UNSET, UNSET },
	{ "keep_days=-1", -1, UNSET, UNSET },
	{ "keep_days=never", -1, UNSET, UNSET },
	{ "keep_days=", -1, UNSET, UNSET },
	{ "keep_days", -1, UNSET, UNSET },
	{ "keep_days=1d", -1, UNSET, UNSET },
	{ "keep_days= 1", -1, UNSET, UNSET },
	{ "keep_days=99999999999999999999999", -1, UNSET, UNSET },
	{ "expire_days=1", 1, UNSET, 1 },
	{ "expire_days=3650", 1, UNSET, 3650 },
	{ "expire_days=never", 1, UNSET, USER_POLICY_NEVER },
	{ "userdb_expire_days=never", 1, UNSET, USER_POLICY_NEVER },
	{ "userdb_expire_days=12", 1, UNSET, 12 },
	{ "expire_days=0", -1, UNSET, UNSET },
	{ "expire_days=3651", -1, UNSET, UNSET },
	{ "expire_days=NEVER", -1, UNSET, UNSET },
	{ "expire_days=Never", -1, UNSET, UNSET },
	{ "expire_days=nevermore", -1, UNSET, UNSET },
	{ "expire_days=neve", -1, UNSET, UNSET },
	{ "expire_days=", -1, UNSET, UNSET },
	{ "expire_days", -1, UNSET, UNSET },
	{ "expire_days=-2", -1, UNSET, UNSET },
};

static void test_days(void **state)
{
	int r;

	(void)state;
	for (size_t i = 0; i < sizeof(days_cases) / sizeof(days_cases[0]); i++) {
		const struct days_case *c = &days_cases[i];
		struct user_policy p = one(c->kv, &r);

		if (r != c->ret || p.keep_days != c->keep ||
		    p.expire_days != c->expire)
			fail_msg("%s: r=%d keep=%d expire=%d", c->kv, r,
				 (int)p.keep_days, (int)p.expire_days);
		assert_int_equal(p.pop3, UNSET);
	}
}

static void test_pop3(void **state)
{
	static const char *const bad[] = {
		"pop3", "pop3=", "pop3=YES", "pop3=No", "pop3=1", "pop3=0",
		"pop3=true", "pop3=yes ", "pop3=y", "pop3=nope",
	};
	int r;

	(void)state;
	assert_int_equal(one("pop3=yes", &r).pop3, 1);
	assert_int_equal(r, 1);
	assert_int_equal(one("pop3=no", &r).pop3, 0);
	assert_int_equal(r, 1);
	assert_int_equal(one("userdb_pop3=no", &r).pop3, 0);
	assert_int_equal(r, 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(one(bad[i], &r).pop3, UNSET);
		if (r != -1)
			fail_msg("%s accepted", bad[i]);
	}
}

/* A field given twice, in any spelling, refuses the line. */
static void test_repeats(void **state)
{
	static const char *const pairs[][2] = {
		{ "keep_days=1", "keep_days=1" },
		{ "keep_days=1", "userdb_keep_days=2" },
		{ "userdb_expire_days=never", "expire_days=5" },
		{ "expire_days=5", "expire_days=never" },
		{ "pop3=yes", "pop3=yes" },
		{ "pop3=no", "userdb_pop3=yes" },
		{ "quota_rule=*:storage=1", "quota_rule=*:messages=1" },
		{ "quota_rule=*:messages=1", "userdb_quota_rule=*:storage=1" },
	};
	struct user_policy pol;

	(void)state;
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		user_policy_init(&pol);
		assert_int_equal(field(&pol, pairs[i][0]), 1);
		if (field(&pol, pairs[i][1]) != -1)
			fail_msg("%s then %s accepted", pairs[i][0], pairs[i][1]);
	}
	/* Different fields add up. */
	user_policy_init(&pol);
	assert_int_equal(field(&pol, "keep_days=3"), 1);
	assert_int_equal(field(&pol, "userdb_expire_days=9"), 1);
	assert_int_equal(field(&pol, "pop3=no"), 1);
	assert_int_equal(field(&pol, "quota_rule=*:storage=1k"), 1);
	assert_int_equal(field(&pol, "mail=/elsewhere"), 0);
	assert_int_equal(pol.keep_days, 3);
	assert_int_equal(pol.expire_days, 9);
	assert_int_equal(pol.pop3, 0);
	assert_int_equal(pol.quota_storage, 1024);
	assert_int_equal(pol.quota_messages, UNSET);
}

static void test_parse_size(void **state)
{
	uint64_t n = 77;

	(void)state;
	assert_int_equal(user_policy_parse_size("10", 2, 100, &n), 0);
	assert_int_equal(n, 10);
	assert_int_equal(user_policy_parse_size("1k", 2, 1024, &n), 0);
	assert_int_equal(n, 1024);
	assert_int_equal(user_policy_parse_size("1k", 2, 1023, &n), -1);
	assert_int_equal(user_policy_parse_size("4G", 2, UINT64_MAX, &n), 0);
	assert_int_equal(n, (uint64_t)4 << 30);
	/* 2^64 - 1 bytes is fine, 16777216T is not (it would wrap). */
	assert_int_equal(user_policy_parse_size("18446744073709551615", 20,
						UINT64_MAX, &n), 0);
	assert_int_equal(n, UINT64_MAX);
	n = 77;
	assert_int_equal(user_policy_parse_size("16777216T", 9, UINT64_MAX, &n), -1);
	assert_int_equal(user_policy_parse_size("16777215T", 9, UINT64_MAX, &n), 0);
	assert_int_equal(n, (uint64_t)16777215 << 40);
	n = 77;
	assert_int_equal(user_policy_parse_size("", 0, 100, &n), -1);
	assert_int_equal(user_policy_parse_size("B", 1, 100, &n), -1);
	assert_int_equal(user_policy_parse_size("M", 1, 100, &n), -1);
	assert_int_equal(user_policy_parse_size("1MB", 3, UINT64_MAX, &n), 0);
	assert_int_equal(n, 1 << 20);
	n = 77;
	assert_int_equal(user_policy_parse_size("1BM", 3, UINT64_MAX, &n), -1);
	assert_int_equal(user_policy_parse_size("+1", 2, 100, &n), -1);
	/* Only [0..len) counts. */
	assert_int_equal(user_policy_parse_size("12junk", 2, 100, &n), 0);
	assert_int_equal(n, 12);
}

static void test_resolve(void **state)
{
	struct popboxd_settings set;
	struct user_policy user, eff;

	(void)state;
	settings_init(&set);
	set.quota_storage = 5000;
	set.quota_messages = 40;
	set.keep_days = 2;
	set.expire_days = -1;
	user_policy_init(&user);
	user_policy_resolve(&user, &set, &eff);
	assert_int_equal(eff.quota_storage, 5000);
	assert_int_equal(eff.quota_messages, 40);
	assert_int_equal(eff.keep_days, 2);
	assert_int_equal(eff.expire_days, USER_POLICY_NEVER);
	assert_int_equal(eff.pop3, 1);
	set.expire_days = 30;
	user_policy_resolve(&user, &set, &eff);
	assert_int_equal(eff.expire_days, 30);
	/* The account's own values win, 0 and "never" included. */
	user.quota_storage = 0;
	user.quota_messages = 7;
	user.keep_days = 0;
	user.expire_days = USER_POLICY_NEVER;
	user.pop3 = 0;
	user_policy_resolve(&user, &set, &eff);
	assert_int_equal(eff.quota_storage, 0);
	assert_int_equal(eff.quota_messages, 7);
	assert_int_equal(eff.keep_days, 0);
	assert_int_equal(eff.expire_days, USER_POLICY_NEVER);
	assert_int_equal(eff.pop3, 0);
	user.expire_days = 9;
	user.pop3 = 1;
	user_policy_resolve(&user, &set, &eff);
	assert_int_equal(eff.expire_days, 9);
	assert_int_equal(eff.pop3, 1);
	/* Under a "never" site an account's own expire_days does not count:
	   CAPA promised EXPIRE NEVER before login. */
	set.expire_days = -1;
	user_policy_resolve(&user, &set, &eff);
	assert_int_equal(eff.expire_days, USER_POLICY_NEVER);
	settings_free(&set);
}

static struct ipc_writer wr;

/* Puts pol in a TOKEN_REPLY, parses it back: get's verdict and result. */
static bool round_trip(const struct user_policy *pol, struct user_policy *out)
{
	struct ipc_msg msg;

	ipc_writer_init(&wr, AUTH_MSG_TOKEN_REPLY, 7);
	user_policy_ipc_put(&wr, pol);
	assert_false(wr.overflow);
	assert_int_equal(ipc_parse(wr.buf, wr.len, &msg), 0);
	return user_policy_ipc_get(&msg, out);
}

static void test_ipc(void **state)
{
	struct user_policy pol, back;
	struct ipc_msg msg;

	(void)state;
	user_policy_init(&pol);
	assert_true(round_trip(&pol, &back));
	assert_same(&pol, &back);
	pol = (struct user_policy){ USER_POLICY_STORAGE_MAX,
				    USER_POLICY_MESSAGES_MAX,
				    USER_POLICY_DAYS_MAX, USER_POLICY_NEVER, 0 };
	assert_true(round_trip(&pol, &back));
	assert_same(&pol, &back);
	pol = (struct user_policy){ 0, 0, 0, 1, 1 };
	assert_true(round_trip(&pol, &back));
	assert_same(&pol, &back);
	pol = (struct user_policy){ 123456789, 42, 7, USER_POLICY_DAYS_MAX,
				    UNSET };
	assert_true(round_trip(&pol, &back));
	assert_same(&pol, &back);

	/* Out of range on the wire: refused, *out untouched. */
	static const struct user_policy bad[] = {
		{ USER_POLICY_STORAGE_MAX + 1, 0, 0, 1, 1 },
		{ -2, 0, 0, 1, 1 },
		{ INT64_MIN, 0, 0, 1, 1 },
		{ 0, USER_POLICY_MESSAGES_MAX + 1, 0, 1, 1 },
		{ 0, -2, 0, 1, 1 },
		{ 0, 0, USER_POLICY_DAYS_MAX + 1, 1, 1 },
		{ 0, 0, -2, 1, 1 },
		{ 0, 0, INT32_MIN, 1, 1 },
		{ 0, 0, 0, 0, 1 },
		{ 0, 0, 0, USER_POLICY_DAYS_MAX + 1, 1 },
		{ 0, 0, 0, -3, 1 },
		{ 0, 0, 0, 1, 2 },
		{ 0, 0, 0, 1, -2 },
		{ 0, 0, 0, 1, INT32_MAX },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&back, 0x5a, sizeof(back));
		struct user_policy untouched = back;
		if (round_trip(&bad[i], &back))
			fail_msg("bad policy %zu accepted", i);
		assert_same(&back, &untouched);
	}

	/* Missing, or of the wrong length. */
	ipc_writer_init(&wr, AUTH_MSG_TOKEN_REPLY, 7);
	ipc_put_u32(&wr, AUTH_TAG_STATUS, 0);
	assert_int_equal(ipc_parse(wr.buf, wr.len, &msg), 0);
	assert_false(user_policy_ipc_get(&msg, &back));
	static const uint8_t short_field[27] = { 0 };
	static const uint8_t long_field[29] = { 0 };
	ipc_writer_init(&wr, AUTH_MSG_TOKEN_REPLY, 7);
	ipc_put(&wr, AUTH_TAG_POLICY, short_field, sizeof(short_field));
	assert_int_equal(ipc_parse(wr.buf, wr.len, &msg), 0);
	assert_false(user_policy_ipc_get(&msg, &back));
	ipc_writer_init(&wr, AUTH_MSG_TOKEN_REPLY, 7);
	ipc_put(&wr, AUTH_TAG_POLICY, long_field, sizeof(long_field));
	assert_int_equal(ipc_parse(wr.buf, wr.len, &msg), 0);
	assert_false(user_policy_ipc_get(&msg, &back));
	/* All zero bytes are a valid wire form but expire_days 0 is not. */
	static const uint8_t zeros[28] = { 0 };
	ipc_writer_init(&wr, AUTH_MSG_TOKEN_REPLY, 7);
	ipc_put(&wr, AUTH_TAG_POLICY, zeros, sizeof(zeros));
	assert_int_equal(ipc_parse(wr.buf, wr.len, &msg), 0);
	assert_false(user_policy_ipc_get(&msg, &back));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_and_unknown_keys),
		cmocka_unit_test(test_quota_rule),
		cmocka_unit_test(test_days),
		cmocka_unit_test(test_pop3),
		cmocka_unit_test(test_repeats),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_ipc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
