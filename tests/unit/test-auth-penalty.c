/*
 * test-auth-penalty.c — the per-address failed-login table: the growing
 * wait and its cap, forgetting, per-address (never per-user) counting,
 * IPv6 /64 grouping, the off switch, and bounded memory under many
 * addresses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "auth-penalty.h"

static struct auth_penalty_key v4(const char *text)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct auth_penalty_key key;
	assert_int_equal(inet_pton(AF_INET, text, &sin.sin_addr), 1);
	auth_penalty_key_from((const struct sockaddr *)&sin, &key);
	return key;
}

static struct auth_penalty_key v6(const char *text)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	struct auth_penalty_key key;
	assert_int_equal(inet_pton(AF_INET6, text, &sin6.sin6_addr), 1);
	auth_penalty_key_from((const struct sockaddr *)&sin6, &key);
	return key;
}

static void test_growing_capped_delay(void **state)
{
	(void)state;
	struct auth_penalty *p = auth_penalty_new(15000);
	struct auth_penalty_key a = v4("192.0.2.7");
	/* 0, 0, 0 (typos), then 1 s doubling to the 15 s cap. */
	static const unsigned int want[] = { 0, 0, 0, 1000, 2000, 4000, 8000,
					     15000, 15000, 15000 };
	time_t now = 1000;

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(auth_penalty_delay_ms(p, &a, now), want[i]);
		auth_penalty_failed(p, &a, now);
		now += 5;
	}
	/* Many more failures: still capped, no overflow. */
	for (int i = 0; i < 100; i++)
		auth_penalty_failed(p, &a, now);
	assert_int_equal(auth_penalty_delay_ms(p, &a, now), 15000);
	assert_int_equal(auth_penalty_failures(p, &a, now), 110);
	auth_penalty_free(&p);
	assert_null(p);
}

static void test_other_addresses_unaffected(void **state)
{
	(void)state;
	struct auth_penalty *p = auth_penalty_new(15000);
	struct auth_penalty_key attacker = v4("198.51.100.1");
	struct auth_penalty_key user = v4("198.51.100.2");

	for (int i = 0; i < 10; i++)
		auth_penalty_failed(p, &attacker, 50);
	assert_int_equal(auth_penalty_delay_ms(p, &attacker, 50), 15000);
	assert_int_equal(auth_penalty_delay_ms(p, &user, 50), 0);
	/* A v4-mapped IPv6 peer is the same host as its IPv4 form. */
	struct auth_penalty_key mapped = v6("::ffff:198.51.100.1");
	assert_int_equal(auth_penalty_delay_ms(p, &mapped, 50), 15000);
	auth_penalty_free(&p);
}

static void test_ipv6_counts_per_64(void **state)
{
	(void)state;
	struct auth_penalty *p = auth_penalty_new(15000);
	struct auth_penalty_key one = v6("2001:db8:1:2::1");
	struct auth_penalty_key same64 = v6("2001:db8:1:2:ffff::9");
	struct auth_penalty_key other64 = v6("2001:db8:1:3::1");

	for (int i = 0; i < 4; i++)
		auth_penalty_failed(p, &one, 10);
	assert_int_equal(auth_penalty_delay_ms(p, &same64, 10), 2000);
	assert_int_equal(auth_penalty_delay_ms(p, &other64, 10), 0);
	auth_penalty_free(&p);
}

static void test_forgotten_after_quiet_time(void **state)
{
	(void)state;
	struct auth_penalty *p = auth_penalty_new(15000);
	struct auth_penalty_key a = v4("203.0.113.9");

	for (int i = 0; i < 6; i++)
		auth_penalty_failed(p, &a, 100);
	assert_int_equal(auth_penalty_delay_ms(p, &a, 100), 8000);
	assert_int_equal(auth_penalty_delay_ms(p, &a, 100 + PENALTY_FORGET_SECONDS),
			 8000);
	assert_int_equal(auth_penalty_delay_ms(p, &a,
					       100 + PENALTY_FORGET_SECONDS + 1), 0);
	/* Counting starts again from one. */
	auth_penalty_failed(p, &a, 100 + PENALTY_FORGET_SECONDS + 2);
	assert_int_equal(auth_penalty_failures(p, &a, 100 + PENALTY_FORGET_SECONDS + 2), 1);
	auth_penalty_free(&p);
}

static void test_off_switch(void **state)
{
	(void)state;
	struct auth_penalty *p = auth_penalty_new(0);
	struct auth_penalty_key a = v4("192.0.2.1");

	for (int i = 0; i < 20; i++)
		auth_penalty_failed(p, &a, 1);
	assert_int_equal(auth_penalty_delay_ms(p, &a, 1), 0);
	auth_penalty_free(&p);
}

/* Far more addresses than slots: memory stays fixed, the newest failures
   are kept, and recent attackers are not all evicted by a flood. */
static void test_table_is_bounded(void **state)
{
	(void)state;
	struct auth_penalty *p = auth_penalty_new(15000);
	struct auth_penalty_key last;
	char text[64];
	unsigned int remembered = 0;

	for (unsigned int i = 0; i < 4 * AUTH_PENALTY_SLOTS; i++) {
		snprintf(text, sizeof(text), "10.%u.%u.%u", (i >> 16) & 255,
			 (i >> 8) & 255, i & 255);
		last = v4(text);
		for (int k = 0; k < 3; k++)
			auth_penalty_failed(p, &last, 1);
	}
	assert_int_equal(auth_penalty_failures(p, &last, 1), 3);
	for (unsigned int i = 0; i < 4 * AUTH_PENALTY_SLOTS; i++) {
		snprintf(text, sizeof(text), "10.%u.%u.%u", (i >> 16) & 255,
			 (i >> 8) & 255, i & 255);
		struct auth_penalty_key k = v4(text);
		remembered += auth_penalty_failures(p, &k, 1) > 0;
	}
	/* Every slot in use, none more: 16 candidates per slot fill each
	   bucket many times over. */
	assert_int_equal(remembered, AUTH_PENALTY_SLOTS);
	auth_penalty_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_growing_capped_delay),
		cmocka_unit_test(test_other_addresses_unaffected),
		cmocka_unit_test(test_ipv6_counts_per_64),
		cmocka_unit_test(test_forgotten_after_quiet_time),
		cmocka_unit_test(test_off_switch),
		cmocka_unit_test(test_table_is_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
