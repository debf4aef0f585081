/*
 * test-netmask.c — trusted-network lists: parsing and matching.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "netmask.h"

struct parse_case {
	const char *text;
	int ret;
	size_t count;
	const char *error;
};

static const struct parse_case parse_cases[] = {
	{ "127.0.0.0/8 ::1/128", 0, 2, NULL },
	{ "none", 0, 0, NULL },
	{ "10.1.2.3", 0, 1, NULL },
	{ "  192.168.0.0/16   fd00::/8 ", 0, 2, NULL },
	{ "0.0.0.0/0", 0, 1, NULL },
	{ "", -1, 0, "empty list (write \"none\" for no trusted network)" },
	{ "   ", -1, 0, "empty list (write \"none\" for no trusted network)" },
	{ "10.0.0.1/8", -1, 0, "host bits set below the prefix length" },
	{ "10.0.0.0/33", -1, 0, "bad prefix length" },
	{ "10.0.0.0/-1", -1, 0, "bad prefix length" },
	{ "10.0.0.0/", -1, 0, "bad prefix length" },
	{ "::1/129", -1, 0, "bad prefix length" },
	{ "localhost", -1, 0, "not a numeric IPv4 or IPv6 address" },
	{ "10.0.0", -1, 0, "not a numeric IPv4 or IPv6 address" },
	{ "none 10.0.0.0/8", -1, 0, "not a numeric IPv4 or IPv6 address" },
	{ "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc/128", -1, 0, "network too long" },
};

static void test_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct netmask_list list;
		const char *error = NULL;
		int ret = netmask_list_parse(c->text, strlen(c->text), &list, &error);
		if (ret != c->ret)
			fail_msg("'%s': ret %d, want %d (%s)", c->text, ret, c->ret,
				 error ? error : "");
		if (ret == 0)
			assert_int_equal(list.count, c->count);
		else
			assert_string_equal(error, c->error);
	}
}

static void test_too_many(void **state)
{
	(void)state;
	char text[33 * 16];
	size_t n = 0;
	struct netmask_list list;
	const char *error;
	for (int i = 0; i < 33; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "10.0.%d.0/24 ", i);
	assert_int_equal(netmask_list_parse(text, n, &list, &error), -1);
	assert_string_equal(error, "too many networks (max 32)");
}

static struct sockaddr_storage v4(const char *ip)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	memset(&ss, 0, sizeof(ss));
	in->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *in = (struct sockaddr_in6 *)&ss;
	memset(&ss, 0, sizeof(ss));
	in->sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, ip, &in->sin6_addr), 1);
	return ss;
}

static void test_contains(void **state)
{
	(void)state;
	struct netmask_list list;
	const char *error;
	const char *text = "127.0.0.0/8 ::1/128 192.168.4.0/22 2001:db8::/33";
	assert_int_equal(netmask_list_parse(text, strlen(text), &list, &error), 0);
	static const struct { const char *ip; int want; } cases[] = {
		{ "127.0.0.1", 1 }, { "127.255.1.2", 1 }, { "128.0.0.1", 0 },
		{ "192.168.4.1", 1 }, { "192.168.7.255", 1 }, { "192.168.8.0", 0 },
		{ "192.168.3.255", 0 }, { "::1", 1 }, { "::2", 0 },
		{ "::ffff:127.0.0.1", 1 }, { "::ffff:10.0.0.1", 0 },
		{ "2001:db8::1", 1 }, { "2001:db8:7fff::1", 1 },
		{ "2001:db8:8000::1", 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage ss = strchr(cases[i].ip, ':') ?
			v6(cases[i].ip) : v4(cases[i].ip);
		bool got = netmask_list_contains(&list, (struct sockaddr *)&ss);
		if (got != (cases[i].want != 0))
			fail_msg("%s: got %d want %d", cases[i].ip, got, cases[i].want);
	}
	assert_int_equal(netmask_list_parse("none", 4, &list, &error), 0);
	struct sockaddr_storage lo = v4("127.0.0.1");
	assert_false(netmask_list_contains(&list, (struct sockaddr *)&lo));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_too_many),
		cmocka_unit_test(test_contains),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
