/*
 * test-account.c — popbox-fetch's configuration parser and quick-form URL
 * (fetch/account.h): a full file with every key, the defaults, a table of
 * bad files each refused with the right line, the value parsers (sizes,
 * keep, deliver), URLs good and bad, the default UIDL path, and "~/"
 * expansion.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "account.h"

static int parse(const char *text, struct account_list *list,
		 unsigned int *line_r, const char **error_r)
{
	return account_parse_config(text, strlen(text), list, line_r, error_r);
}

static void test_full_file(void **state)
{
	static const char text[] =
		"# popbox-fetch accounts\n"
		"\n"
		"[account work]\n"
		"host = pop.example.org\n"
		"port = 1995\n"
		"tls = implicit\n"
		"user = me@example.org\n"
		"password = p#ss word = x\n"
		"auth = scram-sha-256\n"
		"ca_file = /etc/ssl/ca.pem\n"
		"fingerprint = "
		"AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
		"AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\n"
		"deliver = maildir:/home/me/Mail/work\n"
		"keep = 14\n"
		"only_new = yes\n"
		"size_limit = 10M\n"
		"oversize = headers\n"
		"max_messages = 500\n"
		"timeout = 30\n"
		"uidl_file = /home/me/.work.uidl\n"
		"  [ account   gmail ]  \r\n"
		"\thost=pop.gmail.com\r\n"
		"user = me@gmail.com\n"
		"auth = xoauth2\n"
		"oauth_token_command = oauth2-helper --account me\n"
		"deliver = mda:procmail -d me\n";
	struct account_list list;
	unsigned int line;
	const char *error = NULL;
	const struct account *a;

	(void)state;
	assert_int_equal(parse(text, &list, &line, &error), 0);
	assert_int_equal(list.count, 2);
	a = account_find(&list, "work");
	assert_non_null(a);
	assert_int_equal(a->line, 3);
	assert_string_equal(a->host, "pop.example.org");
	assert_int_equal(account_port(a), 1995);
	assert_int_equal(a->tls, ACCOUNT_TLS_IMPLICIT);
	assert_string_equal(a->user, "me@example.org");
	assert_string_equal(a->password, "p#ss word = x");
	assert_int_equal(a->auth, SASL_CLIENT_SCRAM_SHA_256);
	assert_string_equal(a->ca_file, "/etc/ssl/ca.pem");
	assert_true(a->has_fingerprint);
	assert_int_equal(a->fingerprint[0], 0xAB);
	assert_int_equal(a->fingerprint[31], 0x89);
	assert_int_equal(a->deliver_kind, SINK_MAILDIR);
	assert_string_equal(a->deliver_target, "/home/me/Mail/work");
	assert_int_equal(a->keep, PLAN_KEEP_DAYS);
	assert_int_equal(a->keep_days, 14);
	assert_true(a->only_new);
	assert_int_equal(a->size_limit, 10 * 1024 * 1024);
	assert_int_equal(a->oversize, PLAN_OVERSIZE_HEADERS);
	assert_int_equal(a->max_messages, 500);
	assert_int_equal(a->timeout_s, 30);
	assert_string_equal(a->uidl_file, "/home/me/.work.uidl");

	a = account_find(&list, "gmail");
	assert_non_null(a);
	assert_int_equal(a->line, 20);
	assert_string_equal(a->host, "pop.gmail.com");
	assert_int_equal(a->auth, SASL_CLIENT_XOAUTH2);
	assert_string_equal(a->oauth_token_command,
			    "oauth2-helper --account me");
	assert_int_equal(a->deliver_kind, SINK_MDA);
	assert_string_equal(a->deliver_target, "procmail -d me");
	assert_null(account_find(&list, "other"));
	account_list_free(&list);
	assert_int_equal(list.count, 0);
	assert_null(list.accounts);
}

static void test_defaults(void **state)
{
	static const char text[] = "[account a]\nhost = h\nuser = u\n"
				   "deliver = mbox:/var/mail/u\n";
	struct account_list list;
	unsigned int line;
	const char *error;
	const struct account *a;

	(void)state;
	assert_int_equal(parse(text, &list, &line, &error), 0);
	a = &list.accounts[0];
	assert_int_equal(a->tls, ACCOUNT_TLS_IMPLICIT);
	assert_int_equal(account_port(a), 995);
	assert_null(a->password);
	assert_null(a->password_command);
	assert_int_equal(a->auth, SASL_CLIENT_AUTO);
	assert_false(a->has_fingerprint);
	assert_int_equal(a->deliver_kind, SINK_MBOX);
	assert_int_equal(a->keep, PLAN_DELETE);
	assert_true(a->only_new);
	assert_int_equal(a->size_limit, 0);
	assert_int_equal(a->oversize, PLAN_OVERSIZE_SKIP);
	assert_int_equal(a->max_messages, 0);
	assert_int_equal(a->timeout_s, ACCOUNT_TIMEOUT_DEFAULT);
	assert_null(a->uidl_file);
	account_list_free(&list);

	/* STLS and plain default to 110. */
	assert_int_equal(parse("[account b]\nhost = h\nuser = u\ntls = stls\n"
			       "deliver = maildir:/m\n", &list, &line, &error),
			 0);
	assert_int_equal(account_port(&list.accounts[0]), 110);
	account_list_free(&list);
	assert_int_equal(parse("[account b]\nhost = h\nuser = u\ntls = none\n"
			       "deliver = maildir:/m\nkeep = 0\n", &list,
			       &line, &error), 0);
	assert_int_equal(account_port(&list.accounts[0]), 110);
	assert_int_equal(list.accounts[0].keep, PLAN_DELETE);
	account_list_free(&list);

	/* An empty file is no error here (the program says so). */
	assert_int_equal(parse("# nothing\n\n", &list, &line, &error), 0);
	assert_int_equal(list.count, 0);
	account_list_free(&list);
}

#define OK_ACCOUNT "[account a]\nhost = h\nuser = u\ndeliver = maildir:/m\n"

static const struct {
	const char *text;
	unsigned int line;
	const char *error_part;
} bad_files[] = {
	{ OK_ACCOUNT "foo = 1\n", 5, "unknown key 'foo'" },
	{ OK_ACCOUNT "Host = h\n", 5, "unknown key" },
	{ "host = h\n", 1, "before the first" },
	{ OK_ACCOUNT "host = other\n", 5, "given twice" },
	{ "[account a]\nhost = h\nuser = u\n", 1, "no deliver" },
	{ "[account a]\nuser = u\ndeliver = maildir:/m\n", 1, "no host" },
	{ "[account a]\nhost = h\ndeliver = maildir:/m\n", 1, "no user" },
	{ OK_ACCOUNT "[account b]\nhost = h\n", 5, "no user" },
	{ OK_ACCOUNT OK_ACCOUNT, 5, "defined twice" },
	{ "[accounts a]\n", 1, "unknown section" },
	{ "[account]\n", 1, "unknown section" },
	{ "[account a b]\n", 1, "account name" },
	{ "[account .hidden]\n", 1, "account name" },
	{ "[account a/b]\n", 1, "account name" },
	{ "[account a\n", 1, "end with ']'" },
	{ OK_ACCOUNT "port = 0\n", 5, "port" },
	{ OK_ACCOUNT "port = 65536\n", 5, "port" },
	{ OK_ACCOUNT "port = 99x\n", 5, "port" },
	{ OK_ACCOUNT "tls = starttls\n", 5, "tls" },
	{ OK_ACCOUNT "tls = \n", 5, "tls" },
	{ OK_ACCOUNT "auth = cram-md5\n", 5, "auth" },
	{ OK_ACCOUNT "auth = xoauth2\n", 1, "needs oauth_token_command" },
	{ OK_ACCOUNT "oauth_token_command = x\n", 1, "only for auth" },
	{ OK_ACCOUNT "fingerprint = AB:CD\n", 5, "fingerprint" },
	{ OK_ACCOUNT "keep = maybe\n", 5, "keep" },
	{ OK_ACCOUNT "keep = 3651\n", 5, "keep" },
	{ OK_ACCOUNT "keep = -1\n", 5, "keep" },
	{ OK_ACCOUNT "only_new = true\n", 5, "only_new" },
	{ OK_ACCOUNT "size_limit = 10T\n", 5, "size_limit" },
	{ OK_ACCOUNT "size_limit = 2000G\n", 5, "size_limit" },
	{ OK_ACCOUNT "size_limit = k\n", 5, "size_limit" },
	{ OK_ACCOUNT "oversize = truncate\n", 5, "oversize" },
	{ OK_ACCOUNT "max_messages = 4294967296\n", 5, "max_messages" },
	{ OK_ACCOUNT "timeout = 0\n", 5, "timeout" },
	{ OK_ACCOUNT "timeout = 3601\n", 5, "timeout" },
	{ "[account a]\nhost = h\nuser = u\ndeliver = pipe:x\n", 4,
	  "deliver must be" },
	{ "[account a]\nhost = h\nuser = u\ndeliver = maildir:\n", 4,
	  "empty" },
	{ "[account a]\nhost = h h\n", 2, "host" },
	{ "[account a]\nuser = u v\n", 2, "user" },
	{ "[account a]\nhost\n", 2, "key = value" },
	{ "[account a]\nhost = \n", 2, "empty value" },
	{ "[account a]\npassword = a\x01" "b\n", 2, "control" },
	{ "[account a]\n\0host = h\n", 2, "NUL" },
};

static void test_bad_files(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
		struct account_list list = { (struct account *)1, 99 };
		const char *text = bad_files[i].text;
		size_t len = strlen(text);
		unsigned int line = 0;
		const char *error = NULL;

		/* The NUL case: the text goes on after the NUL. */
		if (strcmp(text, "[account a]\n") == 0)
			len = sizeof("[account a]\n\0host = h\n") - 1;
		if (account_parse_config(text, len, &list, &line, &error) != -1)
			fail_msg("case %zu accepted", i);
		if (line != bad_files[i].line)
			fail_msg("case %zu: line %u, not %u (%s)", i, line,
				 bad_files[i].line, error);
		if (error == NULL || strstr(error, bad_files[i].error_part) ==
				     NULL)
			fail_msg("case %zu: error '%s' lacks '%s'", i,
				 error != NULL ? error : "(null)",
				 bad_files[i].error_part);
		assert_int_equal(list.count, 0);
		assert_null(list.accounts);
	}
}

static void test_long_line(void **state)
{
	size_t n = ACCOUNT_LINE_MAX + 100;
	char *text = malloc(n + 32);
	struct account_list list;
	unsigned int line;
	const char *error;

	(void)state;
	assert_non_null(text);
	size_t head = (size_t)snprintf(text, n + 32, "[account a]\n"
				       "password = ");
	memset(text + head, 'x', n - head);
	text[n] = '\0';
	assert_int_equal(account_parse_config(text, strlen(text), &list,
					      &line, &error), -1);
	assert_int_equal(line, 2);
	assert_non_null(strstr(error, "too long"));
	free(text);
}

static void test_sizes(void **state)
{
	static const struct {
		const char *text;
		uint64_t value;
	} good[] = {
		{ "0", 0 }, { "123", 123 }, { "10k", 10240 }, { "10K", 10240 },
		{ "5m", 5242880 }, { "5M", 5242880 }, { "1G", 1073741824 },
		{ "1024G", (uint64_t)1 << 40 },
	};
	static const char *const bad[] = {
		"", "k", "1.5M", "-1", " 1", "1 M", "1T", "1025G", "0x10",
	};
	uint64_t v;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(account_parse_size(good[i].text, &v), 0);
		assert_int_equal(v, good[i].value);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (account_parse_size(bad[i], &v) != -1)
			fail_msg("size '%s' accepted", bad[i]);
	}
}

static void test_keep(void **state)
{
	enum plan_keep k;
	uint32_t d;

	(void)state;
	assert_int_equal(account_parse_keep("no", &k, &d), 0);
	assert_int_equal(k, PLAN_DELETE);
	assert_int_equal(account_parse_keep("yes", &k, &d), 0);
	assert_int_equal(k, PLAN_KEEP);
	assert_int_equal(account_parse_keep("7", &k, &d), 0);
	assert_int_equal(k, PLAN_KEEP_DAYS);
	assert_int_equal(d, 7);
	assert_int_equal(account_parse_keep("0", &k, &d), 0);
	assert_int_equal(k, PLAN_DELETE);
	assert_int_equal(account_parse_keep("3650", &k, &d), 0);
	assert_int_equal(account_parse_keep("YES", &k, &d), -1);
	assert_int_equal(account_parse_keep("7d", &k, &d), -1);
	assert_int_equal(account_parse_keep("", &k, &d), -1);
}

static void test_url(void **state)
{
	static const struct {
		const char *url;
		const char *user, *host, *name;
		uint16_t port;
		enum account_tls tls;
	} good[] = {
		{ "pop3s://me@pop.example.org", "me", "pop.example.org",
		  "me@pop.example.org:995", 995, ACCOUNT_TLS_IMPLICIT },
		{ "pop3://me@pop.example.org:1110/", "me", "pop.example.org",
		  "me@pop.example.org:1110", 1110, ACCOUNT_TLS_STLS },
		{ "POP3S://me%40example.org@[::1]:2995", "me@example.org",
		  "::1", "me@example.org@::1:2995", 2995,
		  ACCOUNT_TLS_IMPLICIT },
		{ "pop3://a@b@127.0.0.1", "a@b", "127.0.0.1",
		  "a@b@127.0.0.1:110", 110, ACCOUNT_TLS_STLS },
		{ "pop3s://u@[fe80::1]", "u", "fe80::1", "u@fe80::1:995", 995,
		  ACCOUNT_TLS_IMPLICIT },
	};
	static const char *const bad[] = {
		"imap://u@h", "pop3s://h", "pop3s://@h", "pop3s://u@",
		"pop3s://u@h:0", "pop3s://u@h:70000", "pop3s://u@h:x",
		"pop3s://u@h/INBOX", "pop3s://u@h?x", "pop3s://u@[::1",
		"pop3s://u@[::1]x", "pop3s://u%4@h", "pop3s://u%zz@h",
		"pop3s://u%20v@h", "pop3s://u v@h", "pop3s://u@h h",
		"pop3s://u%0a@h", "pop3s://u@:995", "pop3s://u@h\nx",
		"pop3s://u@h\x7f", "pop3s://u@[::1]:", "pop3s://u@h:",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct account a = { 0 };
		const char *error;

		if (account_from_url(good[i].url, &a, &error) != 0)
			fail_msg("'%s' refused: %s", good[i].url, error);
		assert_string_equal(a.user, good[i].user);
		assert_string_equal(a.host, good[i].host);
		assert_string_equal(a.name, good[i].name);
		assert_int_equal(account_port(&a), good[i].port);
		assert_int_equal(a.tls, good[i].tls);
		assert_true(a.only_new);
		/* --tls none on a pop3s:// URL: the name follows the port. */
		a.tls = ACCOUNT_TLS_NONE;
		assert_int_equal(account_set_quick_name(&a), 0);
		account_clear(&a);
		assert_null(a.name);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct account a = { 0 };
		const char *error = NULL;

		if (account_from_url(bad[i], &a, &error) != -1)
			fail_msg("'%s' accepted", bad[i]);
		assert_non_null(error);
		assert_null(a.user);
		assert_null(a.host);
		assert_null(a.name);
	}
}

static void test_quick_name_follows_tls(void **state)
{
	struct account a = { 0 };
	const char *error;

	(void)state;
	assert_int_equal(account_from_url("pop3s://u@h", &a, &error), 0);
	assert_string_equal(a.name, "u@h:995");
	a.tls = ACCOUNT_TLS_STLS;
	assert_int_equal(account_set_quick_name(&a), 0);
	assert_string_equal(a.name, "u@h:110");
	account_clear(&a);
}

static void test_default_uidl_file(void **state)
{
	char *p;

	(void)state;
	p = account_default_uidl_file("work", "/state", "/home/me");
	assert_string_equal(p, "/state/popbox/uidl/work");
	free(p);
	p = account_default_uidl_file("a/b@h:995", NULL, "/home/me");
	assert_string_equal(p, "/home/me/.local/state/popbox/uidl/a_b@h:995");
	free(p);
	/* A relative XDG_STATE_HOME is ignored (XDG spec). */
	p = account_default_uidl_file("w", "state", "/home/me");
	assert_string_equal(p, "/home/me/.local/state/popbox/uidl/w");
	free(p);
	assert_null(account_default_uidl_file("w", NULL, NULL));
	assert_null(account_default_uidl_file("w", "", "relative"));
}

static void test_expand_home(void **state)
{
	struct account_list list;
	unsigned int line;
	const char *error;
	struct account *a;

	(void)state;
	assert_int_equal(parse("[account a]\nhost = h\nuser = u\n"
			       "deliver = maildir:~/Mail\nca_file = ~/ca.pem\n"
			       "uidl_file = /abs\n[account b]\nhost = h\n"
			       "user = u\ndeliver = mda:~/bin/filter\n",
			       &list, &line, &error), 0);
	a = &list.accounts[0];
	assert_int_equal(account_expand_home(a, "/home/me"), 0);
	assert_string_equal(a->deliver_target, "/home/me/Mail");
	assert_string_equal(a->ca_file, "/home/me/ca.pem");
	assert_string_equal(a->uidl_file, "/abs");
	assert_int_equal(account_expand_home(&list.accounts[1], NULL), 0);
	assert_string_equal(list.accounts[1].deliver_target, "~/bin/filter");
	account_list_free(&list);
	assert_int_equal(parse("[account a]\nhost = h\nuser = u\n"
			       "deliver = mbox:~/mbox\n", &list, &line,
			       &error), 0);
	assert_int_equal(account_expand_home(&list.accounts[0], NULL), -1);
	account_list_free(&list);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_keep),
		cmocka_unit_test(test_url),
		cmocka_unit_test(test_quick_name_follows_tls),
		cmocka_unit_test(test_default_uidl_file),
		cmocka_unit_test(test_expand_home),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
