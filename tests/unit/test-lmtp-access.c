/*
 * test-lmtp-access.c — who the LMTP listener serves: the per-connection
 * decision (lmtp_peer_allowed: unix socket, loopback, trusted_networks)
 * and the startup warning for a TCP listener only loopback can use
 * (settings_lmtp_warning).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <cmocka.h>

#include "lmtp-conn.h"
#include "netmask.h"
#include "settings.h"

static struct sockaddr_storage address_of(const char *ip)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
	}
	return ss;
}

static struct netmask_list networks(const char *text)
{
	struct netmask_list list;
	const char *error = NULL;

	if (netmask_list_parse(text, strlen(text), &list, &error) < 0)
		fail_msg("'%s': %s", text, error);
	return list;
}

struct peer_case {
	const char *trusted;
	const char *ip;
	bool allowed;
};

static const struct peer_case peer_cases[] = {
	/* Loopback is served whatever trusted_networks says. */
	{ "none", "127.0.0.1", true },
	{ "none", "127.255.0.9", true },
	{ "none", "::1", true },
	{ "none", "::ffff:127.0.0.1", true },
	{ "192.0.2.0/24", "127.0.0.1", true },
	/* Anyone else only from trusted_networks. */
	{ "none", "192.0.2.2", false },
	{ "127.0.0.0/8 ::1/128", "192.0.2.2", false },
	{ "127.0.0.0/8 ::1/128", "10.0.0.1", false },
	{ "127.0.0.0/8 ::1/128", "fd00::2", false },
	{ "127.0.0.0/8 ::1/128", "::ffff:192.0.2.2", false },
	{ "127.0.0.0/8 ::1/128", "::", false },
	{ "127.0.0.0/8 ::1/128", "0.0.0.0", false },
	{ "192.0.2.0/24", "192.0.2.2", true },
	{ "192.0.2.0/24", "::ffff:192.0.2.200", true },
	{ "192.0.2.0/24", "192.0.3.1", false },
	{ "192.0.2.2", "192.0.2.3", false },
	{ "fd00::/64", "fd00::2", true },
	{ "fd00::/64", "fd00:0:0:1::2", false },
	{ "0.0.0.0/0", "198.51.100.7", true },
	{ "0.0.0.0/0", "2001:db8::1", false },
	/* ::2 is not loopback: only ::1 is. */
	{ "none", "::2", false },
	{ "none", "128.0.0.1", false },
};

static void test_peer_allowed(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(peer_cases) / sizeof(peer_cases[0]); i++) {
		const struct peer_case *c = &peer_cases[i];
		struct netmask_list trusted = networks(c->trusted);
		struct sockaddr_storage ss = address_of(c->ip);
		bool got = lmtp_peer_allowed((struct sockaddr *)&ss, &trusted);

		if (got != c->allowed)
			fail_msg("%s with trusted_networks = %s: %s, want %s",
				 c->ip, c->trusted, got ? "served" : "refused",
				 c->allowed ? "served" : "refused");
	}
}

static void test_unix_peer_always_allowed(void **state)
{
	struct netmask_list trusted = networks("none");
	struct sockaddr_un un;

	(void)state;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	assert_true(lmtp_peer_allowed((struct sockaddr *)&un, &trusted));
}

static void test_other_family_refused(void **state)
{
	struct netmask_list trusted = networks("0.0.0.0/0 ::/0");
	struct sockaddr_storage ss;

	(void)state;
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNSPEC;
	assert_false(lmtp_peer_allowed((struct sockaddr *)&ss, &trusted));
}

struct warning_case {
	const char *config;
	bool warns;
};

static const struct warning_case warning_cases[] = {
	{ "", false },                                  /* no LMTP */
	{ "lmtp_listen = unix:/run/popboxd/lmtp\n", false },
	{ "lmtp_listen = 127.0.0.1:24\n", false },
	{ "lmtp_listen = 127.0.0.2:24\n", false },
	{ "lmtp_listen = [::1]:24\n", false },
	/* Not loopback, and only loopback is trusted: the warning. */
	{ "lmtp_listen = 0.0.0.0:24\n", true },
	{ "lmtp_listen = *:24\n", true },
	{ "lmtp_listen = [::]:24\n", true },
	{ "lmtp_listen = 192.0.2.2:24\n", true },
	{ "lmtp_listen = 192.0.2.2:24\ntrusted_networks = none\n", true },
	{ "lmtp_listen = 192.0.2.2:24\ntrusted_networks = 127.0.0.1\n", true },
	{ "lmtp_listen = 192.0.2.2:24\n"
	  "trusted_networks = 127.0.0.0/16 ::1\n", true },
	/* trusted_networks names the MTA's network: nothing to say. */
	{ "lmtp_listen = 192.0.2.2:24\ntrusted_networks = 192.0.2.0/24\n",
	  false },
	{ "lmtp_listen = *:24\ntrusted_networks = 127.0.0.0/8 fd00::/8\n",
	  false },
	{ "lmtp_listen = *:24\ntrusted_networks = 126.0.0.0/7\n", false },
	{ "lmtp_listen = *:24\ntrusted_networks = ::/0\n", false },
};

static void test_listen_warning(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(warning_cases) / sizeof(warning_cases[0]);
	     i++) {
		const struct warning_case *c = &warning_cases[i];
		struct popboxd_settings set;
		const char *error = NULL;
		const char *warning;

		settings_init(&set);
		if (settings_parse(&set, c->config, strlen(c->config), &error) < 0)
			fail_msg("'%s': %s", c->config, error);
		warning = settings_lmtp_warning(&set);
		if ((warning != NULL) != c->warns)
			fail_msg("'%s': warning %s", c->config,
				 warning != NULL ? warning : "(none)");
		if (warning != NULL) {
			assert_non_null(strstr(warning, set.lmtp_listen));
			assert_non_null(strstr(warning, "trusted_networks"));
		}
		settings_free(&set);
	}
}

/* popboxd -t and popbox check-config show it, as a comment that loads. */
static void test_warning_printed(void **state)
{
	static const char config[] = "lmtp_listen = 0.0.0.0:24\n";
	struct popboxd_settings set, again;
	const char *error = NULL;
	char *text = NULL;
	size_t len = 0;
	FILE *out;

	(void)state;
	settings_init(&set);
	assert_int_equal(settings_parse(&set, config, strlen(config), &error), 0);
	out = open_memstream(&text, &len);
	assert_non_null(out);
	settings_print(&set, out);
	assert_int_equal(fclose(out), 0);
	assert_non_null(strstr(text, "\n# warning: lmtp_listen = 0.0.0.0:24 "));
	settings_init(&again);
	assert_int_equal(settings_parse(&again, text, len, &error), 0);
	assert_string_equal(again.lmtp_listen, "0.0.0.0:24");
	settings_free(&again);
	settings_free(&set);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_peer_allowed),
		cmocka_unit_test(test_unix_peer_always_allowed),
		cmocka_unit_test(test_other_family_refused),
		cmocka_unit_test(test_listen_warning),
		cmocka_unit_test(test_warning_printed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
