/*
 * test-pop3-parse.c — the command-line splitter, table-driven, plus strict
 * number parsing and log escaping, the other pure helpers it relies on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "log.h"
#include "pop3-parse.h"
#include "strnum.h"

struct parse_case {
	const char *line;
	enum pop3_parse_error error;
	enum pop3_cmd cmd;
	unsigned int argc;
	const char *arg0, *arg1;
};

static const struct parse_case parse_cases[] = {
	{ "STAT", POP3_PARSE_OK, POP3_CMD_STAT, 0, NULL, NULL },
	{ "stat", POP3_PARSE_OK, POP3_CMD_STAT, 0, NULL, NULL },
	{ "sTaT", POP3_PARSE_OK, POP3_CMD_STAT, 0, NULL, NULL },
	{ "top 1 10", POP3_PARSE_OK, POP3_CMD_TOP, 2, "1", "10" },
	{ "TOP  1   10  ", POP3_PARSE_OK, POP3_CMD_TOP, 2, "1", "10" },
	{ "  NOOP", POP3_PARSE_OK, POP3_CMD_NOOP, 0, NULL, NULL },
	{ "USER alice@example.org", POP3_PARSE_OK, POP3_CMD_USER, 1, "alice@example.org", NULL },
	{ "PASS a b  c ", POP3_PARSE_OK, POP3_CMD_PASS, 1, NULL, NULL },
	{ "PASS", POP3_PARSE_OK, POP3_CMD_PASS, 0, NULL, NULL },
	{ "UIDL 3", POP3_PARSE_OK, POP3_CMD_UIDL, 1, "3", NULL },
	{ "CAPA", POP3_PARSE_OK, POP3_CMD_CAPA, 0, NULL, NULL },
	{ "", POP3_PARSE_EMPTY, 0, 0, NULL, NULL },
	{ "    ", POP3_PARSE_EMPTY, 0, 0, NULL, NULL },
	{ "STATS", POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL },
	{ "ST", POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL },
	{ "ST4T", POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL },
	{ "\xc3\xa9TAT", POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL },
	{ "LIST 1 2 3", POP3_PARSE_TOO_MANY_ARGS, 0, 0, NULL, NULL },
	{ "RETR 12345678901234567890123456789012345678901", POP3_PARSE_ARG_TOO_LONG, 0, 0, NULL, NULL },
	{ "RETR\t1", POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL },
	{ "RETR 1\x7f", POP3_PARSE_BAD_BYTE, 0, 0, NULL, NULL },
	{ "RETR \x1b[1m", POP3_PARSE_BAD_BYTE, 0, 0, NULL, NULL },
};

static void test_parse_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct pop3_command cmd;
		enum pop3_parse_error e = pop3_parse_line(c->line, strlen(c->line), &cmd);
		if (e != c->error)
			fail_msg("'%s': error %d, want %d", c->line, e, c->error);
		if (e != POP3_PARSE_OK)
			continue;
		assert_int_equal(cmd.cmd, c->cmd);
		assert_int_equal(cmd.argc, c->argc);
		if (c->arg0 != NULL) {
			assert_int_equal(cmd.arglen[0], strlen(c->arg0));
			assert_memory_equal(cmd.argv[0], c->arg0, cmd.arglen[0]);
		}
		if (c->arg1 != NULL) {
			assert_int_equal(cmd.arglen[1], strlen(c->arg1));
			assert_memory_equal(cmd.argv[1], c->arg1, cmd.arglen[1]);
		}
	}
}

static void test_parse_nul_and_pass_rest(void **state)
{
	(void)state;
	struct pop3_command cmd;
	assert_int_equal(pop3_parse_line("NOOP\0", 5, &cmd), POP3_PARSE_BAD_BYTE);
	assert_int_equal(pop3_parse_line("PASS  sp ace ", 13, &cmd), POP3_PARSE_OK);
	assert_int_equal(cmd.rest_len, 8);
	assert_memory_equal(cmd.rest, " sp ace ", 8);
	assert_string_equal(pop3_cmd_name(POP3_CMD_UIDL), "UIDL");
}

struct num_case {
	const char *text;
	uint64_t max;
	int ret;
	uint64_t value;
};

static const struct num_case num_cases[] = {
	{ "0", 10, 0, 0 },
	{ "007", 10, 0, 7 },
	{ "10", 10, 0, 10 },
	{ "11", 10, -1, 0 },
	{ "", 10, -1, 0 },
	{ "-1", 10, -1, 0 },
	{ "+1", 10, -1, 0 },
	{ " 1", 10, -1, 0 },
	{ "1 ", 10, -1, 0 },
	{ "0x1", 10, -1, 0 },
	{ "18446744073709551615", UINT64_MAX, 0, UINT64_MAX },
	{ "18446744073709551616", UINT64_MAX, -1, 0 },
	{ "99999999999999999999999", UINT64_MAX, -1, 0 },
	{ "5", 0, -1, 0 },
	{ "0", 0, 0, 0 },
};

static void test_strnum(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(num_cases) / sizeof(num_cases[0]); i++) {
		const struct num_case *c = &num_cases[i];
		uint64_t v = 12345;
		int ret = strnum_parse_u64(c->text, strlen(c->text), c->max, &v);
		if (ret != c->ret)
			fail_msg("'%s' max %ju: got %d want %d", c->text,
				 (uintmax_t)c->max, ret, c->ret);
		if (ret == 0)
			assert_int_equal(v, c->value);
		else
			assert_int_equal(v, 12345);
	}
	/* Length, not NUL, bounds the read. */
	uint64_t v;
	assert_int_equal(strnum_parse_u64("12abc", 2, 100, &v), 0);
	assert_int_equal(v, 12);
}

static void test_log_escape(void **state)
{
	(void)state;
	char buf[LOG_ESCAPE_MAX + 1];
	assert_string_equal(log_escape(buf, "alice", 5), "alice");
	assert_string_equal(log_escape(buf, "a b\nc\"\\", 7), "a\\x20b\\x0ac\\x22\\x5c");
	assert_string_equal(log_escape(buf, "\0\xff", 2), "\\x00\\xff");
	char longname[400];
	memset(longname, 'x', sizeof(longname));
	log_escape(buf, longname, sizeof(longname));
	assert_true(strlen(buf) <= LOG_ESCAPE_MAX);
	assert_memory_equal(buf + strlen(buf) - 3, "...", 3);
	/* A cut never splits an escape sequence. */
	memset(longname, '\n', sizeof(longname));
	log_escape(buf, longname, sizeof(longname));
	assert_true(strlen(buf) <= LOG_ESCAPE_MAX);
	assert_memory_equal(buf + strlen(buf) - 7, "\\x0a...", 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_parse_nul_and_pass_rest),
		cmocka_unit_test(test_strnum),
		cmocka_unit_test(test_log_escape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
