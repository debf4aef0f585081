/*
 * test-pop3-session.c — the protocol core driven alone: bytes in, bytes and
 * actions out, with canned results standing in for storage and passdb.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pop3-session.h"

struct capture {
	char buf[65536];
	size_t len;
};

static void capture_output(void *context, const void *data, size_t len)
{
	struct capture *c = context;
	assert_true(c->len + len < sizeof(c->buf));
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	c->buf[c->len] = '\0';
}

static const struct mailmsg three_msgs[] = {
	{ 120, "uid-one" },
	{ 2000, "uid-two" },
	{ 35, "uid-three" },
};

struct fixture {
	struct pop3_config cfg;
	struct capture out;
	struct pop3_session *s;
};

static struct fixture *fixture_new(bool apop)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->cfg = (struct pop3_config){
		.apop = apop,
		.apop_timestamp = "<1.2@test>",
		.login_delay = 0,
		.expire_days = -1,
		.max_auth_failures = 3,
		.max_bad_commands = 5,
		.implementation = "popbox",
		.cleartext_ok = true,
	};
	f->s = pop3_session_new(&f->cfg, capture_output, &f->out);
	assert_non_null(f->s);
	return f;
}

static void fixture_free(struct fixture *f)
{
	pop3_session_free(&f->s);
	assert_null(f->s);
	free(f);
}

/* Feeds all of input, as a network layer would, stopping at an action. */
static size_t feed(struct fixture *f, const char *input, size_t len)
{
	size_t done = 0;
	while (done < len) {
		size_t n = pop3_session_input(f->s, input + done, len - done);
		if (n == 0)
			break;
		done += n;
	}
	return done;
}

static void feed_str(struct fixture *f, const char *input)
{
	feed(f, input, strlen(input));
}

/* Asserts the output since the last call and clears it. */
static void expect(struct fixture *f, const char *want)
{
	if (strcmp(f->out.buf, want) != 0)
		fail_msg("output\n  got:  [%s]\n  want: [%s]", f->out.buf, want);
	f->out.len = 0;
	f->out.buf[0] = '\0';
}

static void expect_prefix(struct fixture *f, const char *want)
{
	if (strncmp(f->out.buf, want, strlen(want)) != 0)
		fail_msg("output\n  got:  [%s]\n  want prefix: [%s]", f->out.buf, want);
	f->out.len = 0;
	f->out.buf[0] = '\0';
}

static struct fixture *logged_in(void)
{
	struct fixture *f = fixture_new(false);
	expect(f, "+OK popbox ready\r\n");
	feed_str(f, "USER alice\r\nPASS secret\r\n");
	expect(f, "+OK send PASS\r\n");
	const struct pop3_action *a = pop3_session_action(f->s);
	assert_int_equal(a->type, POP3_ACTION_LOGIN);
	assert_string_equal(a->user, "alice");
	assert_string_equal(a->password, "secret");
	pop3_session_login_done(f->s, POP3_LOGIN_OK, three_msgs, 3);
	expect(f, "+OK maildrop has 3 messages (2155 octets)\r\n");
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_TRANSACTION);
	assert_string_equal(pop3_session_user(f->s), "alice");
	return f;
}

static void test_greeting(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(false);
	expect(f, "+OK popbox ready\r\n");
	fixture_free(f);
	f = fixture_new(true);
	expect(f, "+OK popbox ready <1.2@test>\r\n");
	fixture_free(f);
}

static void test_login_and_listing(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	feed_str(f, "STAT\r\n");
	expect(f, "+OK 3 2155\r\n");
	feed_str(f, "LIST\r\n");
	expect(f, "+OK 3 messages (2155 octets)\r\n1 120\r\n2 2000\r\n3 35\r\n.\r\n");
	feed_str(f, "LIST 2\r\n");
	expect(f, "+OK 2 2000\r\n");
	feed_str(f, "UIDL\r\n");
	expect(f, "+OK unique-id listing follows\r\n1 uid-one\r\n2 uid-two\r\n3 uid-three\r\n.\r\n");
	feed_str(f, "UIDL 3\r\n");
	expect(f, "+OK 3 uid-three\r\n");
	feed_str(f, "NOOP\r\n");
	expect(f, "+OK\r\n");
	fixture_free(f);
}

static void test_case_insensitive_and_bare_lf(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	feed_str(f, "stat\nStAt\r\nlist 1\r\n");
	expect(f, "+OK 3 2155\r\n+OK 3 2155\r\n+OK 1 120\r\n");
	fixture_free(f);
}

struct bad_case {
	const char *line;
	const char *reply;
};

/* Each of these gets exactly one -ERR and changes nothing. */
static const struct bad_case transaction_bad[] = {
	{ "RETR 0\r\n", "-ERR no such message\r\n" },
	{ "RETR 4\r\n", "-ERR no such message\r\n" },
	{ "RETR -1\r\n", "-ERR invalid message number\r\n" },
	{ "RETR +1\r\n", "-ERR invalid message number\r\n" },
	{ "RETR 1x\r\n", "-ERR invalid message number\r\n" },
	{ "RETR x\r\n", "-ERR invalid message number\r\n" },
	{ "RETR 99999999999999999999999\r\n", "-ERR invalid message number\r\n" },
	{ "RETR 18446744073709551617\r\n", "-ERR invalid message number\r\n" },
	{ "RETR\r\n", "-ERR wrong number of arguments\r\n" },
	{ "RETR 1 2\r\n", "-ERR wrong number of arguments\r\n" },
	{ "LIST 1 2\r\n", "-ERR wrong number of arguments\r\n" },
	{ "DELE\r\n", "-ERR wrong number of arguments\r\n" },
	{ "TOP 1\r\n", "-ERR wrong number of arguments\r\n" },
	{ "TOP 1 -1\r\n", "-ERR invalid line count\r\n" },
	{ "TOP 1 2 3\r\n", "-ERR too many arguments\r\n" },
	{ "STAT 1\r\n", "-ERR wrong number of arguments\r\n" },
	{ "NOOP x\r\n", "-ERR wrong number of arguments\r\n" },
	{ "USER bob\r\n", "-ERR command not valid after login\r\n" },
	{ "PASS x\r\n", "-ERR command not valid after login\r\n" },
	{ "XTND\r\n", "-ERR unknown command\r\n" },
	{ "RETRX 1\r\n", "-ERR unknown command\r\n" },
	{ "\r\n", "-ERR empty command\r\n" },
	{ "   \r\n", "-ERR empty command\r\n" },
	{ "ST\x01T\r\n", "-ERR invalid byte in command\r\n" },
	{ "RETR 1234567890123456789012345678901234567890123\r\n", "-ERR argument too long\r\n" },
};

static void test_transaction_bad_input(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(transaction_bad) / sizeof(transaction_bad[0]); i++) {
		struct fixture *f = logged_in();
		feed_str(f, transaction_bad[i].line);
		expect(f, transaction_bad[i].reply);
		assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_NONE);
		feed_str(f, "STAT\r\n");
		expect(f, "+OK 3 2155\r\n");
		feed_str(f, "QUIT\r\n");
		fixture_free(f);
	}
}

static void test_nul_byte(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	feed(f, "STAT\0\r\nSTAT\r\n", 13);
	expect(f, "-ERR invalid byte in command\r\n+OK 3 2155\r\n");
	fixture_free(f);
}

static const struct bad_case authorization_bad[] = {
	{ "STAT\r\n", "-ERR command not valid before login\r\n" },
	{ "LIST\r\n", "-ERR command not valid before login\r\n" },
	{ "RETR 1\r\n", "-ERR command not valid before login\r\n" },
	{ "DELE 1\r\n", "-ERR command not valid before login\r\n" },
	{ "PASS secret\r\n", "-ERR send USER first\r\n" },
	{ "PASS\r\n", "-ERR wrong number of arguments\r\n" },
	{ "USER\r\n", "-ERR wrong number of arguments\r\n" },
	{ "USER a b\r\n", "-ERR wrong number of arguments\r\n" },
	{ "APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n", "-ERR APOP is not enabled here\r\n" },
};

static void test_authorization_bad_input(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(authorization_bad) / sizeof(authorization_bad[0]); i++) {
		struct fixture *f = fixture_new(false);
		expect(f, "+OK popbox ready\r\n");
		feed_str(f, authorization_bad[i].line);
		expect(f, authorization_bad[i].reply);
		assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_NONE);
		assert_int_equal(pop3_session_state(f->s), POP3_STATE_AUTHORIZATION);
		fixture_free(f);
	}
}

static void test_password_with_spaces(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(false);
	expect(f, "+OK popbox ready\r\n");
	feed_str(f, "user alice\r\npass  two words \r\n");
	expect(f, "+OK send PASS\r\n");
	assert_string_equal(pop3_session_action(f->s)->password, " two words ");
	fixture_free(f);
}

static void test_dele_rset(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	feed_str(f, "DELE 2\r\n");
	expect(f, "+OK message 2 deleted\r\n");
	/* Four errors: under max_bad_commands (5) in a row. */
	feed_str(f, "DELE 2\r\nRETR 2\r\nTOP 2 0\r\nLIST 2\r\n");
	expect(f, "-ERR message already deleted\r\n-ERR message already deleted\r\n"
		  "-ERR message already deleted\r\n-ERR message already deleted\r\n");
	feed_str(f, "NOOP\r\nUIDL 2\r\n");
	expect(f, "+OK\r\n-ERR message already deleted\r\n");
	feed_str(f, "STAT\r\nLIST\r\nUIDL\r\n");
	expect(f, "+OK 2 155\r\n"
		  "+OK 2 messages (155 octets)\r\n1 120\r\n3 35\r\n.\r\n"
		  "+OK unique-id listing follows\r\n1 uid-one\r\n3 uid-three\r\n.\r\n");
	feed_str(f, "RSET\r\n");
	expect(f, "+OK maildrop has 3 messages (2155 octets)\r\n");
	feed_str(f, "LIST 2\r\n");
	expect(f, "+OK 2 2000\r\n");
	fixture_free(f);
}

static void test_quit_commits_only_marked(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	feed_str(f, "DELE 1\r\nDELE 3\r\nQUIT\r\nNOOP\r\n");
	expect(f, "+OK message 1 deleted\r\n+OK message 3 deleted\r\n");
	const struct pop3_action *a = pop3_session_action(f->s);
	assert_int_equal(a->type, POP3_ACTION_COMMIT);
	assert_int_equal(a->count, 3);
	assert_int_equal(a->deleted[0], 1);
	assert_int_equal(a->deleted[1], 0);
	assert_int_equal(a->deleted[2], 1);
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_UPDATE);
	/* Nothing more is read while UPDATE runs. */
	assert_int_equal(pop3_session_input(f->s, "NOOP\r\n", 6), 0);
	pop3_session_commit_done(f->s, true, 2);
	expect(f, "+OK popbox signing off (2 messages deleted)\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_CLOSE);
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
	assert_int_equal(pop3_session_stats(f->s)->removed, 2);
	assert_int_equal(pop3_session_stats(f->s)->marked, 2);
	fixture_free(f);
}

static void test_quit_commit_failure(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	feed_str(f, "DELE 1\r\nQUIT\r\n");
	expect(f, "+OK message 1 deleted\r\n");
	pop3_session_commit_done(f->s, false, 0);
	expect(f, "-ERR [SYS/TEMP] some deleted messages were not removed\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_CLOSE);
	fixture_free(f);
}

static void test_quit_without_deletions_or_login(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	feed_str(f, "QUIT\r\n");
	expect(f, "+OK popbox signing off (3 messages left)\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_CLOSE);
	fixture_free(f);

	f = fixture_new(false);
	expect(f, "+OK popbox ready\r\n");
	feed_str(f, "quit\r\n");
	expect(f, "+OK popbox signing off\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_CLOSE);
	fixture_free(f);
}

static void test_abort_deletes_nothing(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	feed_str(f, "DELE 1\r\n");
	expect(f, "+OK message 1 deleted\r\n");
	pop3_session_abort(f->s, "idle for too long, closing");
	expect(f, "-ERR idle for too long, closing\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_CLOSE);
	assert_int_equal(pop3_session_stats(f->s)->removed, 0);
	fixture_free(f);
}

static void test_pipelining_in_order(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(false);
	expect(f, "+OK popbox ready\r\n");
	const char *batch = "CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nNOOP\r\nQUIT\r\n";
	size_t used = feed(f, batch, strlen(batch));
	/* Stopped at PASS: the rest waits in the caller's buffer. */
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_LOGIN);
	expect_prefix(f, "+OK capability list follows\r\n");
	pop3_session_login_done(f->s, POP3_LOGIN_OK, three_msgs, 3);
	used += feed(f, batch + used, strlen(batch) - used);
	expect(f, "+OK maildrop has 3 messages (2155 octets)\r\n+OK 3 2155\r\n");
	const struct pop3_action *a = pop3_session_action(f->s);
	assert_int_equal(a->type, POP3_ACTION_SEND_MESSAGE);
	assert_int_equal(a->index, 0);
	assert_int_equal(a->max_body_lines, -1);
	pop3_session_message_begin(f->s);
	pop3_session_message_done(f->s, POP3_SEND_OK);
	expect(f, "+OK 120 octets\r\n");
	used += feed(f, batch + used, strlen(batch) - used);
	assert_int_equal(used, strlen(batch));
	expect(f, "+OK\r\n+OK popbox signing off (3 messages left)\r\n");
	assert_int_equal(pop3_session_stats(f->s)->retrieved, 1);
	fixture_free(f);
}

static void test_top_and_send_failures(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	feed_str(f, "TOP 2 5\r\n");
	const struct pop3_action *a = pop3_session_action(f->s);
	assert_int_equal(a->type, POP3_ACTION_SEND_MESSAGE);
	assert_int_equal(a->index, 1);
	assert_int_equal(a->max_body_lines, 5);
	pop3_session_message_begin(f->s);
	pop3_session_message_done(f->s, POP3_SEND_OK);
	expect(f, "+OK top of message follows\r\n");

	feed_str(f, "RETR 3\r\n");
	pop3_session_message_done(f->s, POP3_SEND_GONE);
	expect(f, "-ERR [SYS/PERM] message was removed by another program\r\n");
	feed_str(f, "RETR 3\r\n");
	pop3_session_message_done(f->s, POP3_SEND_TEMPFAIL);
	expect(f, "-ERR [SYS/TEMP] message could not be read, try later\r\n");
	feed_str(f, "TOP 1 0\r\n");
	assert_int_equal(pop3_session_action(f->s)->max_body_lines, 0);
	pop3_session_message_begin(f->s);
	pop3_session_message_done(f->s, POP3_SEND_ABORTED);
	expect(f, "+OK top of message follows\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_CLOSE);
	assert_int_equal(pop3_session_stats(f->s)->retrieved, 1);
	fixture_free(f);
}

static void test_login_failures(void **state)
{
	(void)state;
	static const struct {
		enum pop3_login_result result;
		const char *reply;
	} cases[] = {
		{ POP3_LOGIN_IN_USE, "-ERR [IN-USE] maildrop is in use by another session\r\n" },
		{ POP3_LOGIN_DELAYED, "-ERR [LOGIN-DELAY] logged in too recently, wait 0 seconds\r\n" },
		{ POP3_LOGIN_SYS_TEMP, "-ERR [SYS/TEMP] maildrop temporarily unavailable, try later\r\n" },
		{ POP3_LOGIN_SYS_PERM, "-ERR [SYS/PERM] maildrop unavailable, contact the administrator\r\n" },
		{ POP3_LOGIN_AUTH_FAILED, "-ERR [AUTH] invalid user name or password\r\n" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fixture *f = fixture_new(false);
		expect(f, "+OK popbox ready\r\n");
		feed_str(f, "USER alice\r\nPASS x\r\n");
		expect(f, "+OK send PASS\r\n");
		pop3_session_login_done(f->s, cases[i].result, NULL, 0);
		expect(f, cases[i].reply);
		assert_int_equal(pop3_session_state(f->s), POP3_STATE_AUTHORIZATION);
		assert_null(pop3_session_user(f->s));
		/* USER must be given again after a failed PASS. */
		feed_str(f, "PASS x\r\n");
		expect(f, "-ERR send USER first\r\n");
		fixture_free(f);
	}
}

static void test_auth_failures_close(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(false);
	expect(f, "+OK popbox ready\r\n");
	for (int i = 0; i < 3; i++) {
		assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_NONE);
		feed_str(f, "USER alice\r\nPASS wrong\r\n");
		assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_LOGIN);
		pop3_session_login_done(f->s, POP3_LOGIN_AUTH_FAILED, NULL, 0);
	}
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_CLOSE);
	assert_int_equal(pop3_session_stats(f->s)->auth_failures, 3);
	fixture_free(f);
}

static void test_bad_commands_close(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	/* A good command resets the count. */
	feed_str(f, "X\r\nX\r\nX\r\nX\r\nNOOP\r\nX\r\nX\r\nX\r\nX\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_NONE);
	feed_str(f, "X\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_CLOSE);
	assert_int_equal(pop3_session_input(f->s, "NOOP\r\n", 6), 0);
	fixture_free(f);
}

static void test_long_line_discarded(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	char big[3000];
	memset(big, 'A', sizeof(big));
	/* Only the first POP3_LINE_MAX bytes: what follows may be the end of
	   the line and the next command. */
	assert_int_equal(pop3_session_input(f->s, big, 600), 512);
	assert_int_equal(pop3_session_input(f->s, big, 88), 88);
	assert_int_equal(pop3_session_input(f->s, big, 1), 1);
	assert_int_equal(pop3_session_input(f->s, big, sizeof(big)), sizeof(big));
	expect(f, "");
	feed_str(f, "AAAA\r\nSTAT\r\n");
	expect(f, "-ERR line too long\r\n+OK 3 2155\r\n");

	/* A line just within the limit is parsed, not refused for length. */
	char edge[512]; /* POP3_LINE_MAX, CRLF included */
	memset(edge, ' ', sizeof(edge));
	memcpy(edge, "NOOP", 4);
	edge[sizeof(edge) - 2] = '\r';
	edge[sizeof(edge) - 1] = '\n';
	assert_int_equal(feed(f, edge, sizeof(edge)), sizeof(edge));
	expect(f, "+OK\r\n");
	fixture_free(f);
}

static void test_long_line_then_pipelined_command(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	char buf[1100];
	size_t n = 0;
	memset(buf, 'N', 511);
	n = 511;
	memcpy(buf + n, "\r\nNOOP\r\nSTAT\r\n", 14);
	n += 14;
	assert_int_equal(feed(f, buf, n), n);
	expect(f, "-ERR line too long\r\n+OK\r\n+OK 3 2155\r\n");
	fixture_free(f);
}

static void test_partial_line_waits(void **state)
{
	(void)state;
	struct fixture *f = logged_in();
	assert_int_equal(pop3_session_input(f->s, "STA", 3), 0);
	expect(f, "");
	assert_int_equal(pop3_session_input(f->s, "STAT\r\n", 6), 6);
	expect(f, "+OK 3 2155\r\n");
	fixture_free(f);
}

static void test_capa(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(false);
	expect(f, "+OK popbox ready\r\n");
	feed_str(f, "CAPA\r\n");
	expect(f, "+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\n"
		  "IMPLEMENTATION popbox\r\n.\r\n");
	fixture_free(f);

	f = fixture_new(false);
	f->cfg.expire_days = 30;
	f->cfg.login_delay = 900;
	expect(f, "+OK popbox ready\r\n");
	feed_str(f, "USER a\r\nPASS b\r\n");
	pop3_session_login_done(f->s, POP3_LOGIN_OK, three_msgs, 3);
	f->out.len = 0;
	feed_str(f, "capa\r\n");
	expect(f, "+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE 30\r\n"
		  "LOGIN-DELAY 900\r\nIMPLEMENTATION popbox\r\n.\r\n");
	fixture_free(f);
}

static void test_apop(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(true);
	expect(f, "+OK popbox ready <1.2@test>\r\n");
	feed_str(f, "APOP mrose c4c9334bac560ecc979e58001b3e22f\r\n");
	expect(f, "-ERR APOP digest must be 32 hex digits\r\n");
	feed_str(f, "APOP mrose c4c9334bac560ecc979e58001b3e22fz\r\n");
	expect(f, "-ERR APOP digest must be 32 hex digits\r\n");
	feed_str(f, "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n");
	const struct pop3_action *a = pop3_session_action(f->s);
	assert_int_equal(a->type, POP3_ACTION_LOGIN);
	assert_string_equal(a->user, "mrose");
	assert_null(a->password);
	assert_string_equal(a->apop_digest, "c4c9334bac560ecc979e58001b3e22fb");
	pop3_session_login_done(f->s, POP3_LOGIN_OK, three_msgs, 0);
	expect(f, "+OK maildrop has 0 messages (0 octets)\r\n");
	feed_str(f, "LIST\r\nRETR 1\r\n");
	expect(f, "+OK 0 messages (0 octets)\r\n.\r\n-ERR no such message\r\n");
	fixture_free(f);
}

static void test_stls(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(false);
	f->cfg.stls = true;
	expect(f, "+OK popbox ready\r\n");
	feed_str(f, "CAPA\r\n");
	expect(f, "+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n"
		  "EXPIRE NEVER\r\nIMPLEMENTATION popbox\r\n.\r\n");
	/* A USER given in clear does not survive STLS. */
	const char *batch = "USER alice\r\nSTLS\r\nCAPA\r\n";
	size_t used = feed(f, batch, strlen(batch));
	assert_int_equal(used, strlen("USER alice\r\nSTLS\r\n"));
	expect(f, "+OK send PASS\r\n+OK begin TLS negotiation\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_START_TLS);
	/* Nothing after STLS is consumed: the caller throws it away. */
	assert_int_equal(pop3_session_input(f->s, "CAPA\r\n", 6), 0);
	pop3_session_tls_started(f->s);
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_NONE);
	feed_str(f, "PASS secret\r\n");
	expect(f, "-ERR send USER first\r\n");
	feed_str(f, "CAPA\r\n");
	expect(f, "+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
		  "EXPIRE NEVER\r\nIMPLEMENTATION popbox\r\n.\r\n");
	feed_str(f, "STLS\r\n");
	expect(f, "-ERR TLS is already active\r\n");
	fixture_free(f);
}

static void test_stls_refused(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(false);
	expect(f, "+OK popbox ready\r\n");
	feed_str(f, "STLS\r\n");
	expect(f, "-ERR STLS is not available here\r\n");
	fixture_free(f);

	/* Implicit TLS: never offered, refused. */
	f = fixture_new(false);
	f->cfg.stls = true;
	f->cfg.tls = true;
	pop3_session_free(&f->s);
	f->s = pop3_session_new(&f->cfg, capture_output, &f->out);
	f->out.len = 0;
	feed_str(f, "STLS\r\n");
	expect(f, "-ERR TLS is already active\r\n");
	fixture_free(f);

	f = logged_in();
	f->cfg.stls = true;
	feed_str(f, "STLS\r\n");
	expect(f, "-ERR command not valid after login\r\n");
	fixture_free(f);
}

static void test_cleartext_refused_until_tls(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(false);
	expect(f, "+OK popbox ready\r\n");
	f->cfg.cleartext_ok = false;
	f->cfg.stls = true;
	pop3_session_free(&f->s);
	f->s = pop3_session_new(&f->cfg, capture_output, &f->out);
	expect(f, "+OK popbox ready\r\n");
	feed_str(f, "CAPA\r\n");
	expect(f, "+OK capability list follows\r\nTOP\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n"
		  "EXPIRE NEVER\r\nIMPLEMENTATION popbox\r\n.\r\n");
	/* Refused at USER: a client never gets to send the password. */
	feed_str(f, "USER alice\r\nPASS secret\r\n");
	expect(f, "-ERR [AUTH] plaintext login refused here: use STLS first\r\n"
		  "-ERR send USER first\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_NONE);
	feed_str(f, "STLS\r\n");
	expect(f, "+OK begin TLS negotiation\r\n");
	pop3_session_tls_started(f->s);
	feed_str(f, "USER alice\r\nPASS secret\r\n");
	expect(f, "+OK send PASS\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_LOGIN);
	fixture_free(f);

	/* Implicit TLS: allowed from the start. */
	f = fixture_new(false);
	f->cfg.cleartext_ok = false;
	f->cfg.tls = true;
	pop3_session_free(&f->s);
	f->s = pop3_session_new(&f->cfg, capture_output, &f->out);
	f->out.len = 0;
	feed_str(f, "USER alice\r\n");
	expect(f, "+OK send PASS\r\n");
	fixture_free(f);
}

#define ALL_MECHS ((1u << SASL_MECH_PLAIN) | (1u << SASL_MECH_LOGIN) | \
		   (1u << SASL_MECH_SCRAM_SHA_256))

static struct fixture *sasl_fixture(bool cleartext_ok, unsigned int mechs)
{
	struct fixture *f = fixture_new(false);
	f->cfg.cleartext_ok = cleartext_ok;
	f->cfg.stls = true;
	f->cfg.sasl_mechs = mechs;
	pop3_session_free(&f->s);
	f->out.len = 0;
	f->s = pop3_session_new(&f->cfg, capture_output, &f->out);
	expect(f, "+OK popbox ready\r\n");
	return f;
}

static const struct pop3_action *expect_step(struct fixture *f, bool first,
					     const void *data, size_t len)
{
	const struct pop3_action *a = pop3_session_action(f->s);
	assert_int_equal(a->type, POP3_ACTION_AUTH_STEP);
	assert_int_equal(a->sasl_first, first);
	if (data == NULL) {
		assert_null(a->sasl_data);
	} else {
		assert_non_null(a->sasl_data);
		assert_int_equal(a->sasl_len, len);
		assert_memory_equal(a->sasl_data, data, len);
	}
	assert_true(pop3_session_in_auth(f->s));
	return a;
}

static void test_auth_mechanism_lists(void **state)
{
	(void)state;
	struct fixture *f = sasl_fixture(true, ALL_MECHS);
	feed_str(f, "CAPA\r\n");
	expect(f, "+OK capability list follows\r\nTOP\r\nUSER\r\n"
		  "SASL PLAIN LOGIN SCRAM-SHA-256\r\nUIDL\r\n"
		  "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n"
		  "EXPIRE NEVER\r\nIMPLEMENTATION popbox\r\n.\r\n");
	feed_str(f, "AUTH\r\n");
	expect(f, "+OK supported mechanisms follow\r\nPLAIN\r\nLOGIN\r\n"
		  "SCRAM-SHA-256\r\n.\r\n");
	/* After login there is nothing to authenticate. */
	feed_str(f, "USER a\r\nPASS b\r\n");
	pop3_session_login_done(f->s, POP3_LOGIN_OK, three_msgs, 3);
	f->out.len = 0;
	feed_str(f, "CAPA\r\n");
	assert_null(strstr(f->out.buf, "SASL"));
	f->out.len = 0;
	feed_str(f, "AUTH\r\n");
	expect(f, "-ERR command not valid after login\r\n");
	fixture_free(f);

	/* Before TLS off a trusted network: only the mechanism that never
	   sends the password. */
	f = sasl_fixture(false, ALL_MECHS);
	feed_str(f, "AUTH\r\n");
	expect(f, "+OK supported mechanisms follow\r\nSCRAM-SHA-256\r\n.\r\n");
	feed_str(f, "AUTH PLAIN AGEAYg==\r\nAUTH login\r\n");
	expect(f, "-ERR [AUTH] plaintext authentication refused here: use STLS first\r\n"
		  "-ERR [AUTH] plaintext authentication refused here: use STLS first\r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_NONE);
	feed_str(f, "STLS\r\n");
	expect(f, "+OK begin TLS negotiation\r\n");
	pop3_session_tls_started(f->s);
	feed_str(f, "AUTH\r\n");
	expect(f, "+OK supported mechanisms follow\r\nPLAIN\r\nLOGIN\r\n"
		  "SCRAM-SHA-256\r\n.\r\n");
	fixture_free(f);

	/* Only what the configuration offers; none at all: no SASL line. */
	f = sasl_fixture(true, 1u << SASL_MECH_SCRAM_SHA_256);
	feed_str(f, "AUTH PLAIN AGEAYg==\r\n");
	expect(f, "-ERR unsupported authentication mechanism\r\n");
	fixture_free(f);
	f = sasl_fixture(true, 0);
	feed_str(f, "CAPA\r\n");
	assert_null(strstr(f->out.buf, "SASL"));
	f->out.len = 0;
	feed_str(f, "AUTH\r\nAUTH X-UNKNOWN\r\n");
	expect(f, "+OK supported mechanisms follow\r\n.\r\n"
		  "-ERR unsupported authentication mechanism\r\n");
	fixture_free(f);
}

static void test_auth_plain_initial_response(void **state)
{
	(void)state;
	struct fixture *f = sasl_fixture(true, ALL_MECHS);
	feed_str(f, "AUTH plain AGFsaWNlAHNlY3JldA==\r\nSTAT\r\n");
	const struct pop3_action *a = expect_step(f, true, "\0alice\0secret", 13);
	assert_int_equal(a->sasl_mech, SASL_MECH_PLAIN);
	expect(f, "");
	/* Pipelined STAT waits for the end of the exchange. */
	pop3_session_auth_done(f->s, POP3_LOGIN_OK, "alice", three_msgs, 3);
	expect(f, "+OK maildrop has 3 messages (2155 octets)\r\n");
	assert_false(pop3_session_in_auth(f->s));
	assert_string_equal(pop3_session_user(f->s), "alice");
	feed_str(f, "STAT\r\n");
	expect(f, "+OK 3 2155\r\n");
	fixture_free(f);

	/* "=" is an empty initial response, not an absent one. */
	f = sasl_fixture(true, ALL_MECHS);
	feed_str(f, "AUTH PLAIN =\r\n");
	expect_step(f, true, "", 0);
	pop3_session_auth_done(f->s, POP3_LOGIN_MALFORMED, NULL, NULL, 0);
	expect(f, "-ERR [AUTH] authentication exchange failed\r\n");
	assert_false(pop3_session_in_auth(f->s));
	fixture_free(f);
}

static void test_auth_challenges(void **state)
{
	(void)state;
	struct fixture *f = sasl_fixture(true, ALL_MECHS);
	feed_str(f, "AUTH SCRAM-SHA-256\r\n");
	const struct pop3_action *a = expect_step(f, true, NULL, 0);
	assert_int_equal(a->sasl_mech, SASL_MECH_SCRAM_SHA_256);
	pop3_session_auth_challenge(f->s, "", 0);
	expect(f, "+ \r\n");
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_NONE);
	/* A line is an answer now, even one that looks like a command. */
	feed_str(f, "QUIT\r\n");
	a = expect_step(f, false, "AB\x13", 3);
	assert_int_equal(a->sasl_mech, SASL_MECH_SCRAM_SHA_256);
	pop3_session_auth_challenge(f->s, "v=xyz", 5);
	expect(f, "+ dj14eXo=\r\n");
	feed_str(f, "\r\n");
	expect_step(f, false, "", 0);
	pop3_session_auth_done(f->s, POP3_LOGIN_OK, "bob", three_msgs, 1);
	expect(f, "+OK maildrop has 1 messages (120 octets)\r\n");
	assert_string_equal(pop3_session_user(f->s), "bob");
	fixture_free(f);
}

static void test_auth_cancel_and_bad_answers(void **state)
{
	(void)state;
	struct fixture *f = sasl_fixture(true, ALL_MECHS);
	feed_str(f, "AUTH LOGIN\r\n");
	expect_step(f, true, NULL, 0);
	pop3_session_auth_challenge(f->s, "Username:", 9);
	expect(f, "+ VXNlcm5hbWU6\r\n");
	feed_str(f, "*\r\n");
	expect(f, "-ERR authentication cancelled\r\n");
	assert_false(pop3_session_in_auth(f->s));
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_AUTHORIZATION);
	feed_str(f, "USER alice\r\n");
	expect(f, "+OK send PASS\r\n");

	/* Not canonical base64: the exchange ends with -ERR. */
	feed_str(f, "AUTH PLAIN AGE!Yg==\r\n");
	expect(f, "-ERR invalid base64 in authentication exchange\r\n");
	assert_false(pop3_session_in_auth(f->s));
	feed_str(f, "AUTH LOGIN\r\n");
	pop3_session_auth_challenge(f->s, "Username:", 9);
	f->out.len = 0;
	feed_str(f, "YWxpY2U\r\n");
	expect(f, "-ERR invalid base64 in authentication exchange\r\n");
	assert_false(pop3_session_in_auth(f->s));

	/* An answer longer than any mechanism accepts is dropped as it
	   comes, and the command after it is read normally. */
	feed_str(f, "AUTH LOGIN\r\n");
	pop3_session_auth_challenge(f->s, "Username:", 9);
	f->out.len = 0;
	size_t big = POP3_SASL_LINE_MAX + 100;
	char *line = malloc(big + 8);
	memset(line, 'A', big);
	memcpy(line + big, "\r\nNOOP\r\n", 8);
	feed(f, line, big + 8);
	free(line);
	expect(f, "-ERR authentication answer too long\r\n"
		  "-ERR command not valid before login\r\n");
	assert_false(pop3_session_in_auth(f->s));
	fixture_free(f);
}

static void test_auth_failures_count(void **state)
{
	(void)state;
	struct fixture *f = sasl_fixture(true, ALL_MECHS);
	for (int i = 0; i < 3; i++) {
		feed_str(f, "AUTH PLAIN AGFsaWNlAHdyb25n\r\n");
		expect_step(f, true, "\0alice\0wrong", 12);
		pop3_session_auth_done(f->s, POP3_LOGIN_AUTH_FAILED, NULL, NULL, 0);
		expect(f, "-ERR [AUTH] invalid user name or password\r\n");
	}
	/* max_auth_failures (3) reached: closed. */
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
	assert_int_equal(pop3_session_action(f->s)->type, POP3_ACTION_CLOSE);
	fixture_free(f);

	/* Aborted mid-exchange (timeout): closed, nothing pending. */
	f = sasl_fixture(true, ALL_MECHS);
	feed_str(f, "AUTH LOGIN\r\n");
	pop3_session_auth_challenge(f->s, "Username:", 9);
	f->out.len = 0;
	pop3_session_abort(f->s, "login took too long, closing");
	expect(f, "-ERR login took too long, closing\r\n");
	assert_false(pop3_session_in_auth(f->s));
	fixture_free(f);
}

/* The EXPIRE line of a CAPA answer, for the state the session is in. */
static const char *capa_expire_line(struct fixture *f)
{
	static char line[64];
	const char *p, *end;

	f->out.len = 0;
	f->out.buf[0] = '\0';
	feed_str(f, "CAPA\r\n");
	p = strstr(f->out.buf, "\r\nEXPIRE ");
	assert_non_null(p);
	p += 2;
	end = strstr(p, "\r\n");
	assert_non_null(end);
	snprintf(line, sizeof(line), "%.*s", (int)(end - p), p);
	f->out.len = 0;
	f->out.buf[0] = '\0';
	return line;
}

/* RFC 2449 section 6.7: a number with USER before login (an account may
   have its own), never "NEVER USER"; after login the account's value. */
static void test_capa_expire(void **state)
{
	static const struct {
		int site, own;          /* own: -2 = not set at login */
		const char *before, *after;
	} cases[] = {
		{ -1, -2, "EXPIRE NEVER", "EXPIRE NEVER" },
		{ -1, 7, "EXPIRE NEVER", "EXPIRE 7" },
		{ 30, -2, "EXPIRE 30 USER", "EXPIRE 30" },
		{ 30, 7, "EXPIRE 30 USER", "EXPIRE 7" },
		{ 30, -1, "EXPIRE 30 USER", "EXPIRE NEVER" },
		{ 1, 3650, "EXPIRE 1 USER", "EXPIRE 3650" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fixture *f = fixture_new(false);
		f->cfg.expire_days = cases[i].site;
		assert_string_equal(capa_expire_line(f), cases[i].before);
		feed_str(f, "USER alice\r\nPASS secret\r\n");
		if (cases[i].own != -2)
			pop3_session_set_expire(f->s, cases[i].own);
		/* Still AUTHORIZATION while the login is pending. */
		pop3_session_login_done(f->s, POP3_LOGIN_OK, three_msgs, 3);
		assert_string_equal(capa_expire_line(f), cases[i].after);
		fixture_free(f);
	}
}

/* pop3=no: its own [AUTH] text, counted like a failed login. */
static void test_login_disabled(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(false);
	f->cfg.max_auth_failures = 2;
	expect(f, "+OK popbox ready\r\n");
	feed_str(f, "USER carol\r\nPASS right\r\n");
	expect(f, "+OK send PASS\r\n");
	pop3_session_login_done(f->s, POP3_LOGIN_DISABLED, NULL, 0);
	expect(f, "-ERR [AUTH] POP access is disabled for this account\r\n");
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_AUTHORIZATION);
	assert_null(pop3_session_user(f->s));
	assert_int_equal(pop3_session_stats(f->s)->auth_failures, 1);
	fixture_free(f);
	/* Through AUTH, the same; the second one reaches max_auth_failures. */
	f = sasl_fixture(true, ALL_MECHS);
	f->cfg.max_auth_failures = 2;
	for (int i = 0; i < 2; i++) {
		feed_str(f, "AUTH PLAIN AGNhcm9sAHJpZ2h0\r\n");
		expect_step(f, true, "\0carol\0right", 12);
		pop3_session_auth_done(f->s, POP3_LOGIN_DISABLED, NULL, NULL, 0);
		expect(f, "-ERR [AUTH] POP access is disabled for this account\r\n");
	}
	assert_int_equal(pop3_session_state(f->s), POP3_STATE_CLOSED);
	fixture_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting),
		cmocka_unit_test(test_login_and_listing),
		cmocka_unit_test(test_case_insensitive_and_bare_lf),
		cmocka_unit_test(test_transaction_bad_input),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_authorization_bad_input),
		cmocka_unit_test(test_password_with_spaces),
		cmocka_unit_test(test_dele_rset),
		cmocka_unit_test(test_quit_commits_only_marked),
		cmocka_unit_test(test_quit_commit_failure),
		cmocka_unit_test(test_quit_without_deletions_or_login),
		cmocka_unit_test(test_abort_deletes_nothing),
		cmocka_unit_test(test_pipelining_in_order),
		cmocka_unit_test(test_top_and_send_failures),
		cmocka_unit_test(test_login_failures),
		cmocka_unit_test(test_auth_failures_close),
		cmocka_unit_test(test_bad_commands_close),
		cmocka_unit_test(test_long_line_discarded),
		cmocka_unit_test(test_long_line_then_pipelined_command),
		cmocka_unit_test(test_partial_line_waits),
		cmocka_unit_test(test_capa),
		cmocka_unit_test(test_apop),
		cmocka_unit_test(test_stls),
		cmocka_unit_test(test_stls_refused),
		cmocka_unit_test(test_cleartext_refused_until_tls),
		cmocka_unit_test(test_auth_mechanism_lists),
		cmocka_unit_test(test_auth_plain_initial_response),
		cmocka_unit_test(test_auth_challenges),
		cmocka_unit_test(test_auth_cancel_and_bad_answers),
		cmocka_unit_test(test_auth_failures_count),
		cmocka_unit_test(test_capa_expire),
		cmocka_unit_test(test_login_disabled),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
