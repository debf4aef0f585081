/*
 * test-listen-addr.c — listen addresses: what parses, into which address.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "listen-addr.h"

struct addr_case {
	const char *spec;
	int family;        /* 0: must be refused */
	const char *host;  /* as inet_ntop prints it */
	unsigned port;
};

static const struct addr_case cases[] = {
	{ "127.0.0.1:110", AF_INET, "127.0.0.1", 110 },
	{ "0.0.0.0:0", AF_INET, "0.0.0.0", 0 },
	{ "[::1]:995", AF_INET6, "::1", 995 },
	{ "[2001:db8::2]:65535", AF_INET6, "2001:db8::2", 65535 },
	{ "*:1110", AF_INET6, "::", 1110 },
	{ "127.0.0.1:65536", 0, NULL, 0 },
	{ "127.0.0.1:0110", 0, NULL, 0 },
	{ "127.0.0.1:", 0, NULL, 0 },
	{ "127.0.0.1", 0, NULL, 0 },
	{ ":110", 0, NULL, 0 },
	{ "::1:110", 0, NULL, 0 },
	{ "[127.0.0.1]:110", 0, NULL, 0 },
	{ "[::1]110", 0, NULL, 0 },
	{ "[*]:110", 0, NULL, 0 },
	{ "localhost:110", 0, NULL, 0 },
	{ "127.0.0.1:-1", 0, NULL, 0 },
};

static void test_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct addr_case *c = &cases[i];
		struct sockaddr_storage ss;
		socklen_t len;
		const char *error = NULL;
		char host[INET6_ADDRSTRLEN];
		int ret = listen_addr_parse(c->spec, &ss, &len, &error);

		if (c->family == 0) {
			if (ret != -1)
				fail_msg("'%s' was accepted", c->spec);
			assert_non_null(error);
			continue;
		}
		if (ret != 0)
			fail_msg("'%s' refused: %s", c->spec, error);
		assert_int_equal(ss.ss_family, c->family);
		if (c->family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;
			assert_int_equal(len, sizeof(*in));
			inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
			assert_int_equal(ntohs(in->sin_port), c->port);
		} else {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			assert_int_equal(len, sizeof(*in6));
			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
			assert_int_equal(ntohs(in6->sin6_port), c->port);
		}
		assert_string_equal(host, c->host);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
