/*
 * test-settings.c — config parsing, checking, printing and mail_location
 * expansion.  Tables of good texts (with a line the printed config must
 * contain), bad texts (with the exact error), and expansions; the
 * auth_mechanisms values as masks (auto included).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sasl-mech.h"
#include "settings.h"

/* settings_print() into a malloc'ed string. */
static char *print_to_string(const struct popboxd_settings *set)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	assert_non_null(f);
	settings_print(set, f);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static int parse_str(struct popboxd_settings *set, const char *text,
		     const char **error_r)
{
	return settings_parse(set, text, strlen(text), error_r);
}

static void test_defaults(void **state)
{
	struct popboxd_settings set;
	const char *error;

	(void)state;
	settings_init(&set);
	assert_int_equal(set.listen_count, 0);
	assert_int_equal(set.tls_listen_count, 0);
	assert_null(set.tls_cert_file);
	assert_null(set.tls_key_file);
	assert_string_equal(set.tls_min_version, "TLSv1.2");
	assert_null(set.passdb_file);
	assert_string_equal(set.mail_location, "%h/Maildir");
	assert_string_equal(set.mail_user, "popbox");
	assert_false(set.apop);
	assert_int_equal(set.login_delay, 0);
	assert_int_equal(set.expire_days, -1);
	assert_int_equal(set.login_timeout, 60);
	assert_int_equal(set.idle_timeout, 600);
	assert_int_equal(set.auth_failure_delay_ms, 2000);
	assert_int_equal(set.max_auth_failures, 3);
	assert_int_equal(set.auth_penalty_max_ms, 15000);
	assert_string_equal(set.auth_mechanisms, "auto");
	assert_int_equal(set.max_bad_commands, 10);
	assert_int_equal(set.workers, 0);
	assert_int_equal(set.auth_workers, 4);
	assert_false(set.log_syslog);
	assert_null(set.hostname);

	/* passdb_file is the one required key. */
	assert_int_equal(settings_check(&set, &error), -1);
	assert_string_equal(error, "passdb_file is required");
	assert_int_equal(parse_str(&set, "passdb_file = /etc/popbox/users\n",
				   &error), 0);
	assert_int_equal(settings_check(&set, &error), 0);
	assert_int_equal(set.listen_count, 1);
	assert_string_equal(set.listen[0], "127.0.0.1:110");
	assert_int_equal(set.tls_listen_count, 0); /* implicit TLS is opt-in */
	assert_non_null(set.hostname);
	settings_free(&set);
}

struct good_case {
	const char *text;
	const char *printed; /* a line settings_print() must then contain */
};

static const struct good_case good_cases[] = {
	{ "idle_timeout = 900", "idle_timeout = 900\n" },
	{ "trusted_networks = none", "trusted_networks = none\n" },
	{ "trusted_networks = 192.168.0.0/16  ::1",
	  "trusted_networks = 192.168.0.0/16  ::1\n" },
	{ "allow_cleartext = on", "allow_cleartext = yes\n" },
	{ "auth_mechanisms = scram-sha-256  PLAIN", "auth_mechanisms = scram-sha-256  PLAIN\n" },
	{ "auth_mechanisms = none", "auth_mechanisms = none\n" },
	{ "auth_mechanisms = auto", "auth_mechanisms = auto\n" },
	{ "auth_mechanisms = PLAIN LOGIN SCRAM-SHA-256",
	  "auth_mechanisms = PLAIN LOGIN SCRAM-SHA-256\n" },
	{ "auth_penalty_max_ms = 0", "auth_penalty_max_ms = 0\n" },
	{ "auth_penalty_max_ms = 60000", "auth_penalty_max_ms = 60000\n" },
	{ "idle_timeout=600", "idle_timeout = 600\n" },
	{ "  idle_timeout\t=\t86400  ", "idle_timeout = 86400\n" },
	{ "idle_timeout = 0900 # ten+5 minutes", "idle_timeout = 900\n" },
	{ "login_timeout = 5", "login_timeout = 5\n" },
	{ "login_timeout = 3600", "login_timeout = 3600\n" },
	{ "auth_failure_delay_ms = 0", "auth_failure_delay_ms = 0\n" },
	{ "auth_failure_delay_ms = 60000", "auth_failure_delay_ms = 60000\n" },
	{ "workers = 256", "workers = 256\n" },
	{ "auth_workers = 1", "auth_workers = 1\n" },
	{ "max_auth_failures = 100", "max_auth_failures = 100\n" },
	{ "max_bad_commands = 1000", "max_bad_commands = 1000\n" },
	{ "login_delay = 86400", "login_delay = 86400\n" },
	{ "expire_days = never", "expire_days = never\n" },
	{ "expire_days = 1", "expire_days = 1\n" },
	{ "expire_days = 3650", "expire_days = 3650\n" },
	{ "apop = yes", "apop = yes\n" },
	{ "apop = TRUE", "apop = yes\n" },
	{ "apop = on", "apop = yes\n" },
	{ "apop = off", "apop = no\n" },
	{ "apop = false", "apop = no\n" },
	{ "log = syslog", "log = syslog\n" },
	{ "log = stderr", "log = stderr\n" },
	{ "# only a comment\n\n   \n", "idle_timeout = 600\n" },
	{ "#apop = yes\napop = no", "apop = no\n" },
	{ "hostname = mail.example.org", "hostname = mail.example.org\n" },
	{ "mail_user = vmail", "mail_user = vmail\n" },
	{ "mail_location = /var/mail/%d/%n", "mail_location = /var/mail/%d/%n\n" },
	{ "mail_location = /srv/my mail/%u # spaces inside stay",
	  "mail_location = /srv/my mail/%u\n" },
	{ "passdb_file = /etc/pop#box", "passdb_file = /etc/pop#box\n" },
	{ "passdb_file = /etc/users\r\n", "passdb_file = /etc/users\n" },
	{ "listen = 0.0.0.0:995", "listen = 0.0.0.0:995\n" },
	{ "listen = *:110", "listen = *:110\n" },
	{ "listen = [::1]:110", "listen = [::1]:110\n" },
	{ "listen = [::]:0", "listen = [::]:0\n" },
	{ "listen = [2001:db8::1]:65535", "listen = [2001:db8::1]:65535\n" },
	{ "listen = 127.0.0.1:110\nlisten = [::1]:110",
	  "listen = 127.0.0.1:110\nlisten = [::1]:110\n" },
	{ "tls_listen = *:995", "tls_listen = *:995\n" },
	{ "tls_listen = [::]:995", "tls_listen = [::]:995\n" },
	{ "tls_listen = 0.0.0.0:0", "tls_listen = 0.0.0.0:0\n" },
	{ "tls_listen = 192.0.2.1:995\ntls_listen = [2001:db8::1]:995",
	  "tls_listen = 192.0.2.1:995\ntls_listen = [2001:db8::1]:995\n" },
	/* Interleaved lines keep their order per key. */
	{ "listen = *:110\ntls_listen = *:995\nlisten = [::]:110",
	  "listen = *:110\nlisten = [::]:110\ntls_listen = *:995\n" },
	/* One list never fills the other. */
	{ "tls_listen = *:995", "# listen is not set\n" },
	{ "listen = *:110", "# tls_listen is not set\n" },
	{ "tls_cert_file = /etc/popbox/cert.pem",
	  "tls_cert_file = /etc/popbox/cert.pem\n" },
	{ "tls_key_file = /etc/popbox/key.pem",
	  "tls_key_file = /etc/popbox/key.pem\n" },
	{ "tls_cert_file = /etc/my certs/pop.pem # spaces inside stay",
	  "tls_cert_file = /etc/my certs/pop.pem\n" },
	{ "tls_key_file = /", "tls_key_file = /\n" },
	{ "tls_min_version = TLSv1.2", "tls_min_version = TLSv1.2\n" },
	{ "tls_min_version = TLSv1.3", "tls_min_version = TLSv1.3\n" },
	{ "apop = no", "tls_min_version = TLSv1.2\n" },
};

static void test_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good_cases) / sizeof(good_cases[0]); i++) {
		struct popboxd_settings set;
		const char *error = NULL;

		settings_init(&set);
		if (parse_str(&set, good_cases[i].text, &error) < 0)
			fail_msg("case %zu (%s): %s", i, good_cases[i].text, error);
		char *out = print_to_string(&set);
		if (strstr(out, good_cases[i].printed) == NULL)
			fail_msg("case %zu: '%s' not in:\n%s", i,
				 good_cases[i].printed, out);
		free(out);
		settings_free(&set);
	}
}

struct bad_case {
	const char *text;
	const char *error;
};

#define LISTEN_ERR \
	"line 1: tls_listen: expected IPv4:port, [IPv6]:port or *:port " \
	"(port 0..65535)"

static const struct bad_case bad_cases[] = {
	{ "lsiten = *:110", "line 1: unknown key 'lsiten'" },
	{ "\n\n  idle_timeout 900", "line 3: missing '='" },
	{ "idle_timeout = 900\nidle_timeout = 900",
	  "line 2: 'idle_timeout' given twice (first on line 1)" },
	{ "apop =", "line 1: empty value for 'apop'" },
	{ "apop = # no value", "line 1: empty value for 'apop'" },
	{ "= yes", "line 1: unknown key ''" },
	{ "apop=#yes", "line 1: value for 'apop' may not start with '#'" },
	{ "apop = maybe", "line 1: apop: expected yes/no/true/false/on/off" },
	{ "apop = 1", "line 1: apop: expected yes/no/true/false/on/off" },
	{ "log = file", "line 1: log: expected stderr or syslog" },
	{ "idle_timeout = 599", "line 1: idle_timeout: expected a number 600..86400" },
	{ "idle_timeout = 86401", "line 1: idle_timeout: expected a number 600..86400" },
	{ "idle_timeout = -600", "line 1: idle_timeout: expected a number 600..86400" },
	{ "idle_timeout = +600", "line 1: idle_timeout: expected a number 600..86400" },
	{ "idle_timeout = 6 00", "line 1: idle_timeout: expected a number 600..86400" },
	{ "idle_timeout = 0x300", "line 1: idle_timeout: expected a number 600..86400" },
	{ "idle_timeout = 99999999999999999999999", "line 1: idle_timeout: expected a number 600..86400" },
	{ "login_timeout = 4", "line 1: login_timeout: expected a number 5..3600" },
	{ "login_timeout = 3601", "line 1: login_timeout: expected a number 5..3600" },
	{ "auth_failure_delay_ms = 60001", "line 1: auth_failure_delay_ms: expected a number 0..60000" },
	{ "workers = 257", "line 1: workers: expected a number 0..256" },
	{ "auth_workers = 0", "line 1: auth_workers: expected a number 1..256" },
	{ "max_auth_failures = 0", "line 1: max_auth_failures: expected a number 1..100" },
	{ "max_auth_failures = 101", "line 1: max_auth_failures: expected a number 1..100" },
	{ "max_bad_commands = 0", "line 1: max_bad_commands: expected a number 1..1000" },
	{ "login_delay = 86401", "line 1: login_delay: expected a number 0..86400" },
	{ "expire_days = 0", "line 1: expire_days: expected \"never\" or a number 1..3650" },
	{ "expire_days = 3651", "line 1: expire_days: expected \"never\" or a number 1..3650" },
	{ "expire_days = NEVER", "line 1: expire_days: expected \"never\" or a number 1..3650" },
	{ "hostname = mail example", "line 1: hostname: only letters, digits, '.', '-' and '_'" },
	{ "hostname = a>b", "line 1: hostname: only letters, digits, '.', '-' and '_'" },
	{ "mail_user = root:x", "line 1: mail_user: not a valid user name" },
	{ "mail_user = -x", "line 1: mail_user: not a valid user name" },
	{ "passdb_file = /a\x01", "line 1: control byte in line" },
	{ "# comment \x7f", "line 1: control byte in line" },
	{ "apop = yes\0", "line 1: control byte in line" },
	{ "apop = y\res", "line 1: control byte in line" },
	{ "listen = 127.0.0.1", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = 127.0.0.1:", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = 127.0.0.1:65536", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = 127.0.0.1:0110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = 127.0.0.1:-1", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = 127.0.0.256:110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = 127.0.0:110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = 127.000.0.1:110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = localhost:110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = ::1:110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = [::1]110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = [::1:110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = []:110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = [127.0.0.1]:110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = [fe80::1%eth0]:110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = *:", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = :110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = * :110", "line 1: listen: expected IPv4:port, [IPv6]:port or *:port (port 0..65535)" },
	{ "listen = *:1\nlisten = *:2\nlisten = *:3\nlisten = *:4\n"
	  "listen = *:5\nlisten = *:6\nlisten = *:7\nlisten = *:8\n"
	  "listen = *:9\nlisten = *:10\nlisten = *:11\nlisten = *:12\n"
	  "listen = *:13\nlisten = *:14\nlisten = *:15\nlisten = *:16\n"
	  "listen = *:17\n", "line 17: listen: too many listen addresses (max 16)" },
	{ "tls_listen = *:99999", LISTEN_ERR },
	{ "tls_listen = localhost:995", LISTEN_ERR },
	{ "tls_listen = [::1]995", LISTEN_ERR },
	{ "tls_listen = 995", LISTEN_ERR },
	{ "tls_listen =", "line 1: empty value for 'tls_listen'" },
	{ "tls_listen = *:1\ntls_listen = *:2\ntls_listen = *:3\n"
	  "tls_listen = *:4\ntls_listen = *:5\ntls_listen = *:6\n"
	  "tls_listen = *:7\ntls_listen = *:8\ntls_listen = *:9\n"
	  "tls_listen = *:10\ntls_listen = *:11\ntls_listen = *:12\n"
	  "tls_listen = *:13\ntls_listen = *:14\ntls_listen = *:15\n"
	  "tls_listen = *:16\ntls_listen = *:17\n",
	  "line 17: tls_listen: too many tls_listen addresses (max 16)" },
	{ "tls_cert_file = cert.pem",
	  "line 1: tls_cert_file: must be an absolute path" },
	{ "tls_cert_file = ./cert.pem",
	  "line 1: tls_cert_file: must be an absolute path" },
	{ "tls_key_file = ~/key.pem",
	  "line 1: tls_key_file: must be an absolute path" },
	{ "tls_key_file = key.pem",
	  "line 1: tls_key_file: must be an absolute path" },
	{ "tls_cert_file = /a.pem\ntls_cert_file = /b.pem",
	  "line 2: 'tls_cert_file' given twice (first on line 1)" },
	{ "tls_key_file = /a.pem\n\ntls_key_file = /a.pem",
	  "line 3: 'tls_key_file' given twice (first on line 1)" },
	{ "tls_min_version = TLSv1.1",
	  "line 1: tls_min_version: expected TLSv1.2 or TLSv1.3" },
	{ "trusted_networks = 10.0.0.1/8",
	  "line 1: trusted_networks: host bits set below the prefix length" },
	{ "auth_mechanisms = PLAIN CRAM-MD5",
	  "line 1: auth_mechanisms: unknown SASL mechanism: PLAIN, LOGIN, SCRAM-SHA-256, auto or none" },
	{ "auth_mechanisms = PLAIN none",
	  "line 1: auth_mechanisms: unknown SASL mechanism: PLAIN, LOGIN, SCRAM-SHA-256, auto or none" },
	/* auto stands alone, as none does, and is spelt in lower case. */
	{ "auth_mechanisms = auto SCRAM-SHA-256",
	  "line 1: auth_mechanisms: unknown SASL mechanism: PLAIN, LOGIN, SCRAM-SHA-256, auto or none" },
	{ "auth_mechanisms = AUTO",
	  "line 1: auth_mechanisms: unknown SASL mechanism: PLAIN, LOGIN, SCRAM-SHA-256, auto or none" },
	{ "auth_penalty_max_ms = 60001",
	  "line 1: auth_penalty_max_ms: expected a number 0..60000" },
	{ "trusted_networks = lan",
	  "line 1: trusted_networks: not a numeric IPv4 or IPv6 address" },
	{ "allow_cleartext = sometimes",
	  "line 1: allow_cleartext: expected yes/no/true/false/on/off" },
	{ "tls_min_version = TLSv1",
	  "line 1: tls_min_version: expected TLSv1.2 or TLSv1.3" },
	{ "tls_min_version = SSLv3",
	  "line 1: tls_min_version: expected TLSv1.2 or TLSv1.3" },
	{ "tls_min_version = tlsv1.3",
	  "line 1: tls_min_version: expected TLSv1.2 or TLSv1.3" },
	{ "tls_min_version = 1.3",
	  "line 1: tls_min_version: expected TLSv1.2 or TLSv1.3" },
	{ "tls_min_version = TLSv1.4",
	  "line 1: tls_min_version: expected TLSv1.2 or TLSv1.3" },
	{ "tls_min_version = TLSv1.2 TLSv1.3",
	  "line 1: tls_min_version: expected TLSv1.2 or TLSv1.3" },
	{ "tls_min_version = TLSv1.3\ntls_min_version = TLSv1.3",
	  "line 2: 'tls_min_version' given twice (first on line 1)" },
};
#undef LISTEN_ERR

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct popboxd_settings set;
		const char *error = NULL;
		/* "apop = yes\0" carries its NUL into the parsed text. */
		size_t len = strlen(c->text) +
			     (strcmp(c->text, "apop = yes") == 0 ? 1 : 0);

		settings_init(&set);
		if (settings_parse(&set, c->text, len, &error) != -1)
			fail_msg("case %zu (%s) parsed", i, c->text);
		if (strcmp(error, c->error) != 0)
			fail_msg("case %zu: got '%s', want '%s'", i, error, c->error);
		settings_free(&set);
	}
}

static void test_line_length(void **state)
{
	char line[1100];
	struct popboxd_settings set;
	const char *error;

	(void)state;
	/* A 1024-byte line is fine, 1025 is not. */
	memset(line, ' ', sizeof(line));
	memcpy(line, "apop = yes", 10);
	settings_init(&set);
	assert_int_equal(settings_parse(&set, line, 1024, &error), 0);
	assert_true(set.apop);
	settings_free(&set);
	settings_init(&set);
	assert_int_equal(settings_parse(&set, line, 1025, &error), -1);
	assert_string_equal(error, "line 1: line too long (max 1024 bytes)");
	settings_free(&set);
	/* A value is at most 1000 bytes, so its printed line fits. */
	memcpy(line, "passdb_file=/", 13);
	memset(line + 13, 'p', sizeof(line) - 13);
	settings_init(&set);
	assert_int_equal(settings_parse(&set, line, 12 + 1000, &error), 0);
	assert_int_equal(strlen(set.passdb_file), 1000);
	settings_free(&set);
	settings_init(&set);
	assert_int_equal(settings_parse(&set, line, 12 + 1001, &error), -1);
	assert_string_equal(error,
			    "line 1: value for 'passdb_file' too long (max 1000 bytes)");
	settings_free(&set);
}

/* The first listen of a text replaces what an earlier text set. */
static void test_listen_override(void **state)
{
	struct popboxd_settings set;
	const char *error;

	(void)state;
	settings_init(&set);
	assert_int_equal(parse_str(&set, "listen = *:1\nlisten = *:2", &error), 0);
	assert_int_equal(parse_str(&set, "listen = *:3", &error), 0);
	assert_int_equal(set.listen_count, 1);
	assert_string_equal(set.listen[0], "*:3");
	/* The same per key: tls_listen is replaced on its own. */
	assert_int_equal(parse_str(&set, "tls_listen = *:4\ntls_listen = *:5",
				   &error), 0);
	assert_int_equal(parse_str(&set, "listen = *:6", &error), 0);
	assert_int_equal(set.tls_listen_count, 2);
	assert_string_equal(set.tls_listen[1], "*:5");
	assert_int_equal(parse_str(&set, "tls_listen = *:7", &error), 0);
	assert_int_equal(set.tls_listen_count, 1);
	assert_string_equal(set.tls_listen[0], "*:7");
	assert_int_equal(set.listen_count, 1);
	assert_string_equal(set.listen[0], "*:6");
	/* Other keys may be set again by a later text. */
	assert_int_equal(parse_str(&set, "apop = yes", &error), 0);
	assert_int_equal(parse_str(&set, "apop = no", &error), 0);
	assert_false(set.apop);
	settings_free(&set);
}

/* "listen = none" makes a POP3S-only server; without a tls_listen it
   would serve nothing, which the check refuses. */
static void test_listen_none(void **state)
{
	struct popboxd_settings set;
	const char *error;
	char *printed;

	(void)state;
	settings_init(&set);
	assert_int_equal(parse_str(&set, "passdb_file = /p\nlisten = none\n"
				   "tls_listen = *:995\ntls_cert_file = /c\n"
				   "tls_key_file = /k\n", &error), 0);
	assert_int_equal(settings_check(&set, &error), 0);
	assert_int_equal(set.listen_count, 0);
	assert_int_equal(set.tls_listen_count, 1);
	printed = print_to_string(&set);
	assert_non_null(strstr(printed, "listen = none\n"));
	assert_null(strstr(printed, "# listen is not set"));
	free(printed);
	settings_free(&set);

	settings_init(&set);
	assert_int_equal(parse_str(&set, "passdb_file = /p\nlisten = none\n",
				   &error), 0);
	assert_int_equal(settings_check(&set, &error), -1);
	assert_string_equal(error, "listen = none needs a tls_listen: no address to serve");
	/* A later address undoes "none". */
	assert_int_equal(parse_str(&set, "listen = 127.0.0.1:110\n", &error), 0);
	assert_int_equal(settings_check(&set, &error), 0);
	assert_int_equal(set.listen_count, 1);
	settings_free(&set);
}

/* Each list holds SETTINGS_MAX_LISTEN on its own; they share no slots. */
static void test_listen_both_full(void **state)
{
	char text[2 * SETTINGS_MAX_LISTEN * 32];
	size_t len = 0;
	struct popboxd_settings set;
	const char *error;

	(void)state;
	for (int i = 0; i < SETTINGS_MAX_LISTEN; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
					"listen = *:%d\ntls_listen = *:%d\n",
					110 + i, 995 + i);
	assert_true(len < sizeof(text));
	settings_init(&set);
	assert_int_equal(settings_parse(&set, text, len, &error), 0);
	assert_int_equal(set.listen_count, SETTINGS_MAX_LISTEN);
	assert_int_equal(set.tls_listen_count, SETTINGS_MAX_LISTEN);
	assert_string_equal(set.listen[SETTINGS_MAX_LISTEN - 1], "*:125");
	assert_string_equal(set.tls_listen[SETTINGS_MAX_LISTEN - 1], "*:1010");
	settings_free(&set);
}

struct check_case {
	const char *text;
	const char *error; /* NULL: settings_check() accepts it */
};

static const struct check_case check_cases[] = {
	{ "apop = yes", "passdb_file is required" },
	{ "passdb_file = /u\nmail_location = /var/mail/shared",
	  "mail_location must contain %u, %n or %h, or all users would share "
	  "one maildrop" },
	{ "passdb_file = /u\nmail_location = /var/mail/%d",
	  "mail_location must contain %u, %n or %h, or all users would share "
	  "one maildrop" },
	{ "passdb_file = /u\nmail_location = /var/mail/%%u",
	  "mail_location must contain %u, %n or %h, or all users would share "
	  "one maildrop" },
	{ "passdb_file = /u\nmail_location = mail/%u",
	  "mail_location: mail path is not absolute" },
	{ "passdb_file = /u\nmail_location = /var/mail/%x/%u",
	  "mail_location: unknown variable '%x' in mail_location" },
	{ "passdb_file = /u\nmail_location = /var/../%u",
	  "mail_location: mail path has a '..' component" },
	{ "passdb_file = /u\nmail_location = /var/mail/%u%",
	  "mail_location: '%' at the end of mail_location" },
	{ "passdb_file = /u\ntls_cert_file = /c.pem",
	  "tls_cert_file is set but tls_key_file is not" },
	{ "passdb_file = /u\ntls_key_file = /k.pem",
	  "tls_key_file is set but tls_cert_file is not" },
	{ "passdb_file = /u\ntls_listen = *:995",
	  "tls_listen needs tls_cert_file and tls_key_file" },
	{ "passdb_file = /u\ntls_listen = *:995\ntls_cert_file = /c.pem",
	  "tls_cert_file is set but tls_key_file is not" },
	{ "passdb_file = /u\ntls_listen = *:995\ntls_key_file = /k.pem",
	  "tls_key_file is set but tls_cert_file is not" },
	{ "passdb_file = /u\ntls_min_version = TLSv1.3", NULL },
	/* A certificate alone: STLS on the plain listeners. */
	{ "passdb_file = /u\ntls_cert_file = /c.pem\ntls_key_file = /k.pem",
	  NULL },
	{ "passdb_file = /u\ntls_listen = *:995\ntls_cert_file = /c.pem\n"
	  "tls_key_file = /k.pem", NULL },
	{ "passdb_file = /u\nlisten = [::]:110\ntls_listen = [::]:995\n"
	  "tls_listen = *:995\ntls_cert_file = /c.pem\ntls_key_file = /k.pem",
	  NULL },
};

static void test_check(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
		struct popboxd_settings set;
		const char *error = NULL;

		settings_init(&set);
		assert_int_equal(parse_str(&set, check_cases[i].text, &error), 0);
		size_t tls_count = set.tls_listen_count;
		int r = settings_check(&set, &error);

		if (check_cases[i].error == NULL) {
			if (r != 0)
				fail_msg("case %zu: %s", i, error);
			/* Plain listen gets its default, tls_listen never. */
			assert_true(set.listen_count > 0);
			assert_int_equal(set.tls_listen_count, tls_count);
		} else {
			assert_int_equal(r, -1);
			if (strcmp(error, check_cases[i].error) != 0)
				fail_msg("case %zu: got '%s', want '%s'", i,
					 error, check_cases[i].error);
		}
		settings_free(&set);
	}
}

static const char full_config[] =
	"# every key, none at its default\n"
	"listen = 192.0.2.1:995\n"
	"listen = [2001:db8::2]:995\n"
	"listen = *:0\n"
	"tls_listen = 192.0.2.1:995\n"
	"tls_listen = [2001:db8::2]:995\n"
	"tls_cert_file = /etc/popbox/tls/fullchain.pem\n"
	"tls_key_file = /etc/popbox/tls/key.pem\n"
	"tls_min_version = TLSv1.3\n"
	"passdb_file = /etc/popbox/users\n"
	"mail_location = /var/mail/%d/%n/Maildir\n"
	"login_user = pop-login\n"
	"auth_user = pop-auth\n"
	"mail_user = vmail\n"
	"trusted_networks = 10.0.0.0/8 fd00::/8\n"
	"allow_cleartext = yes\n"
	"apop = yes\n"
	"login_delay = 300\n"
	"expire_days = 30\n"
	"keep_days = 7\n"
	"quota_storage = 1073741824\n"
	"quota_messages = 5000\n"
	"message_size_limit = 10485760\n"
	"lmtp_listen = unix:/run/popboxd/lmtp\n"
	"userdb_socket = /run/pb/userdb\n"
	"login_timeout = 30\n"
	"idle_timeout = 1800\n"
	"auth_failure_delay_ms = 500\n"
	"auth_penalty_max_ms = 5000\n"
	"auth_mechanisms = SCRAM-SHA-256 PLAIN\n"
	"max_auth_failures = 5\n"
	"max_bad_commands = 20\n"
	"max_connections = 500\n"
	"max_connections_per_address = 7\n"
	"max_preauth_connections = 100\n"
	"output_timeout = 120\n"
	"workers = 2\n"
	"auth_workers = 8\n"
	"log = syslog\n"
	"hostname = pop.example.org\n";

/* print -> parse -> print gives the same text; the defaults too. */
static void test_round_trip(void **state)
{
	static const char *const texts[] = { full_config, "passdb_file = /u\n" };

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct popboxd_settings a, b;
		const char *error;

		settings_init(&a);
		assert_int_equal(parse_str(&a, texts[i], &error), 0);
		assert_int_equal(settings_check(&a, &error), 0);
		char *out_a = print_to_string(&a);
		settings_init(&b);
		if (parse_str(&b, out_a, &error) < 0)
			fail_msg("reparse: %s\n%s", error, out_a);
		assert_int_equal(settings_check(&b, &error), 0);
		char *out_b = print_to_string(&b);
		assert_string_equal(out_a, out_b);
		assert_int_equal(memcmp(&a.apop, &b.apop,
					sizeof(a) - offsetof(struct popboxd_settings, apop) -
					sizeof(char *)), 0);
		if (i == 0)
			assert_string_equal(out_a, full_config +
					    strlen("# every key, none at its default\n"));
		free(out_a);
		free(out_b);
		settings_free(&a);
		settings_free(&b);
	}
}

static void test_print_unset(void **state)
{
	struct popboxd_settings set;

	(void)state;
	settings_init(&set);
	char *out = print_to_string(&set);
	assert_non_null(strstr(out, "# listen is not set\n"));
	assert_non_null(strstr(out, "# tls_listen is not set\n"));
	assert_non_null(strstr(out, "# tls_cert_file is not set\n"));
	assert_non_null(strstr(out, "# tls_key_file is not set\n"));
	assert_non_null(strstr(out, "tls_min_version = TLSv1.2\n"));
	assert_non_null(strstr(out, "# passdb_file is not set\n"));
	assert_non_null(strstr(out, "# hostname is not set\n"));
	free(out);
	settings_free(&set);
}

struct expand_case {
	const char *tmpl, *user, *home;
	const char *path;  /* NULL: expect error */
	const char *error;
};

static const struct expand_case expand_cases[] = {
	{ "%h/Maildir", "alice", "/home/alice", "/home/alice/Maildir", NULL },
	{ "/var/mail/%u", "a@example.org", "", "/var/mail/a@example.org", NULL },
	{ "/var/mail/%d/%n", "a@example.org", "", "/var/mail/example.org/a", NULL },
	{ "/var/mail/%d/%n", "alice", "", "/var/mail//alice", NULL },
	{ "/m/%n%%%d", "a@b", "", "/m/a%b", NULL },
	{ "/m/%n", "a@b@c", "", "/m/a", NULL },
	{ "/m/%u/../x", "a", "", NULL, "mail path has a '..' component" },
	{ "/m/..", "a", "", NULL, "mail path has a '..' component" },
	{ "/m/..x/%u", "a", "", "/m/..x/a", NULL },
	{ "%h/M", "a", "/home/../etc", NULL, "mail path has a '..' component" },
	{ "%h/Maildir", "alice", "", NULL,
	  "%h used but the user has no home directory" },
	{ "%h/Maildir", "alice", "relative", NULL, "mail path is not absolute" },
	{ "%u/Maildir", "alice", "", NULL, "mail path is not absolute" },
	{ "/m/%U", "a", "", NULL, "unknown variable '%U' in mail_location" },
	{ "/m/%", "a", "", NULL, "'%' at the end of mail_location" },
};

static void test_expand(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(expand_cases) / sizeof(expand_cases[0]); i++) {
		const struct expand_case *c = &expand_cases[i];
		char *path = NULL;
		const char *error = NULL;
		int r = settings_expand_mail_location(c->tmpl, c->user, c->home,
						      &path, &error);

		if (c->path != NULL) {
			if (r != 0)
				fail_msg("case %zu: %s", i, error);
			assert_string_equal(path, c->path);
			free(path);
		} else {
			assert_int_equal(r, -1);
			assert_null(path);
			assert_string_equal(error, c->error);
		}
	}
}

static void test_expand_too_long(void **state)
{
	char home[3000];
	char *path = NULL;
	const char *error;

	(void)state;
	home[0] = '/';
	memset(home + 1, 'h', sizeof(home) - 2);
	home[sizeof(home) - 1] = '\0';
	assert_int_equal(settings_expand_mail_location("%h%h", "a", home, &path,
						       &error), -1);
	assert_string_equal(error, "mail path too long");
	assert_int_equal(settings_expand_mail_location("%h/%u", "a", home, &path,
						       &error), 0);
	free(path);
}

#define MECH(m) (1u << SASL_MECH_##m)

static const struct mechs_case {
	const char *value;
	int ret;
	unsigned int mask;
	bool scram_auto;
} mechs_cases[] = {
	/* auto: PLAIN LOGIN always; SCRAM left to the master's passdb check. */
	{ "auto", 0, MECH(PLAIN) | MECH(LOGIN), true },
	{ "none", 0, 0, false },
	/* An explicit list means exactly what it says. */
	{ "PLAIN LOGIN SCRAM-SHA-256", 0,
	  MECH(PLAIN) | MECH(LOGIN) | MECH(SCRAM_SHA_256), false },
	{ "PLAIN SCRAM-SHA-256", 0, MECH(PLAIN) | MECH(SCRAM_SHA_256), false },
	{ "scram-sha-256", 0, MECH(SCRAM_SHA_256), false },
	{ "PLAIN \t LOGIN", 0, MECH(PLAIN) | MECH(LOGIN), false },
	{ "AUTO", -1, 0, false },
	{ "auto PLAIN", -1, 0, false },
	{ "PLAIN auto", -1, 0, false },
	{ "none PLAIN", -1, 0, false },
	{ "", -1, 0, false },
	{ "   ", -1, 0, false },
	{ "CRAM-MD5", -1, 0, false },
};

static void test_sasl_mechs(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(mechs_cases) / sizeof(mechs_cases[0]); i++) {
		const struct mechs_case *c = &mechs_cases[i];
		unsigned int mask = 0xff;
		bool scram_auto = true;
		int ret = settings_sasl_mechs(c->value, &mask, &scram_auto);

		if (ret != c->ret)
			fail_msg("'%s': returned %d, want %d", c->value, ret,
				 c->ret);
		if (ret == 0 && (mask != c->mask || scram_auto != c->scram_auto))
			fail_msg("'%s': mask %#x auto %d, want %#x auto %d",
				 c->value, mask, scram_auto, c->mask,
				 c->scram_auto);
	}
}

static void test_load(void **state)
{
	char dir[] = "/tmp/test-settings-XXXXXX", path[64];
	struct popboxd_settings set;
	const char *error;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/popboxd.conf", dir);

	settings_init(&set);
	assert_int_equal(settings_load(&set, path, &error), -1);
	char want[128];
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	assert_string_equal(error, want);
	assert_int_equal(settings_load(&set, dir, &error), -1);
	snprintf(want, sizeof(want), "%s: not a regular file", dir);
	assert_string_equal(error, want);

	assert_non_null(f = fopen(path, "w"));
	fputs(full_config, f);
	fclose(f);
	assert_int_equal(settings_load(&set, path, &error), 0);
	assert_int_equal(set.listen_count, 3);
	assert_int_equal(set.tls_listen_count, 2);
	assert_string_equal(set.tls_listen[1], "[2001:db8::2]:995");
	assert_string_equal(set.tls_key_file, "/etc/popbox/tls/key.pem");
	assert_string_equal(set.tls_min_version, "TLSv1.3");
	assert_int_equal(set.expire_days, 30);
	settings_free(&set);

	assert_non_null(f = fopen(path, "w"));
	fputs("apop = yes\nbogus = 1\n", f);
	fclose(f);
	settings_init(&set);
	assert_int_equal(settings_load(&set, path, &error), -1);
	snprintf(want, sizeof(want), "%s: line 2: unknown key 'bogus'", path);
	assert_string_equal(error, want);
	settings_free(&set);

	/* A valid parse still has to pass settings_check(). */
	assert_non_null(f = fopen(path, "w"));
	fputs("apop = yes\n", f);
	fclose(f);
	settings_init(&set);
	assert_int_equal(settings_load(&set, path, &error), -1);
	snprintf(want, sizeof(want), "%s: passdb_file is required", path);
	assert_string_equal(error, want);
	settings_free(&set);

	/* Over 1 MiB is refused before parsing. */
	assert_int_equal(truncate(path, 1024 * 1024 + 1), 0);
	settings_init(&set);
	assert_int_equal(settings_load(&set, path, &error), -1);
	snprintf(want, sizeof(want), "%s: larger than 1 MiB", path);
	assert_string_equal(error, want);
	settings_free(&set);

	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_line_length),
		cmocka_unit_test(test_listen_override),
		cmocka_unit_test(test_listen_none),
		cmocka_unit_test(test_listen_both_full),
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_sasl_mechs),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_print_unset),
		cmocka_unit_test(test_expand),
		cmocka_unit_test(test_expand_too_long),
		cmocka_unit_test(test_load),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
