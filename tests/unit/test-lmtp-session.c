/*
 * test-lmtp-session.c — the LMTP core driven alone: bytes in, replies and
 * actions out, with a scripted caller standing in for the user database
 * and the storage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "lmtp-session.h"

#define MAX_LOOKUPS 512

struct fixture {
	struct lmtp_config cfg;
	struct lmtp_session *s;
	char out[131072];
	size_t out_len;
	/* the scripted caller */
	const char *known[4];                 /* users that exist */
	enum lmtp_result known_result[4];     /* RCPT result for each */
	enum lmtp_result commit_result[LMTP_MAX_RECIPIENTS + 1];
	char lookups[MAX_LOOKUPS][LMTP_ADDRESS_MAX + 1];
	size_t lookup_count;
	uint8_t *body;                        /* what DATA_CHUNK passed on */
	size_t body_len;
	size_t max_chunk;
	unsigned int chunks, begins, ends, resets, closes;
	uint64_t end_size;
	size_t end_count;
	char end_sender[LMTP_ADDRESS_MAX + 1];
	size_t rcpt_accepted;                 /* RCPT OKs reported */
};

static void capture_output(void *context, const void *data, size_t len)
{
	struct fixture *f = context;
	assert_true(f->out_len + len < sizeof(f->out));
	memcpy(f->out + f->out_len, data, len);
	f->out_len += len;
	f->out[f->out_len] = '\0';
}

static struct fixture *fixture_new(uint64_t size_limit)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->cfg = (struct lmtp_config){
		.hostname = "mx.test",
		.size_limit = size_limit,
		.max_bad_commands = 5,
	};
	f->known[0] = "alice";
	f->known[1] = "bob";
	f->known[2] = "full";
	f->known_result[2] = LMTP_RESULT_OVER_QUOTA;
	f->known[3] = "tiny";
	f->known_result[3] = LMTP_RESULT_TOO_BIG;
	f->s = lmtp_session_new(&f->cfg, capture_output, f);
	assert_non_null(f->s);
	return f;
}

static void fixture_free(struct fixture *f)
{
	lmtp_session_free(&f->s);
	assert_null(f->s);
	free(f->body);
	free(f);
}

static enum lmtp_result lookup(struct fixture *f, const char *user)
{
	for (size_t i = 0; i < 4; i++) {
		if (f->known[i] != NULL && strcmp(f->known[i], user) == 0)
			return f->known_result[i];
	}
	return LMTP_RESULT_UNKNOWN_USER;
}

/* Answers the pending action as a caller would; false if there is none. */
static bool answer(struct fixture *f)
{
	const struct lmtp_action *a = lmtp_session_action(f->s);

	switch (a->type) {
	case LMTP_ACTION_NONE:
		return false;
	case LMTP_ACTION_RCPT: {
		assert_true(f->lookup_count < MAX_LOOKUPS);
		snprintf(f->lookups[f->lookup_count++], LMTP_ADDRESS_MAX + 1, "%s",
			 a->user);
		enum lmtp_result r = lookup(f, a->user);
		if (r == LMTP_RESULT_OK) {
			assert_int_equal(a->index, f->rcpt_accepted);
			f->rcpt_accepted++;
		}
		lmtp_session_rcpt_done(f->s, r);
		return true;
	}
	case LMTP_ACTION_DATA_BEGIN:
		f->begins++;
		lmtp_session_action_done(f->s);
		return true;
	case LMTP_ACTION_DATA_CHUNK:
		assert_true(a->len > 0 && a->len <= LMTP_CHUNK_MAX);
		f->chunks++;
		if (a->len > f->max_chunk)
			f->max_chunk = a->len;
		f->body = realloc(f->body, f->body_len + a->len + 1);
		assert_non_null(f->body);
		memcpy(f->body + f->body_len, a->data, a->len);
		f->body_len += a->len;
		lmtp_session_action_done(f->s);
		return true;
	case LMTP_ACTION_DATA_END:
		f->ends++;
		f->end_size = a->size;
		f->end_count = a->count;
		snprintf(f->end_sender, sizeof(f->end_sender), "%s", a->sender);
		assert_int_equal(a->count, f->rcpt_accepted);
		for (size_t i = 0; i < a->count; i++)
			lmtp_session_data_result(f->s, f->commit_result[i]);
		f->rcpt_accepted = 0;
		return true;
	case LMTP_ACTION_RESET:
		f->resets++;
		f->rcpt_accepted = 0;
		lmtp_session_action_done(f->s);
		return true;
	case LMTP_ACTION_CLOSE:
		f->closes++;
		return false;
	}
	return false;
}

/* Feeds input in pieces of at most step bytes (0: all at once), as a
   network layer would, answering every action. */
static size_t feed_step(struct fixture *f, const void *input, size_t len,
			size_t step)
{
	const char *p = input;
	size_t done = 0;
	size_t avail = step == 0 ? len : 0;

	for (;;) {
		while (answer(f))
			;
		if (lmtp_session_state(f->s) == LMTP_STATE_CLOSED)
			break;
		size_t n = lmtp_session_input(f->s, p + done, avail - done);
		if (n > 0) {
			assert_true(n <= avail - done);
			done += n;
			continue;
		}
		if (lmtp_session_action(f->s)->type != LMTP_ACTION_NONE)
			continue;
		if (avail == len)
			break;
		avail = avail + step < len ? avail + step : len;
	}
	return done;
}

static size_t feed_bytes(struct fixture *f, const void *input, size_t len)
{
	return feed_step(f, input, len, 0);
}

static void feed(struct fixture *f, const char *input)
{
	assert_int_equal(feed_bytes(f, input, strlen(input)), strlen(input));
}

/* Asserts the output since the last call and clears it. */
static void expect(struct fixture *f, const char *want)
{
	if (strcmp(f->out, want) != 0)
		fail_msg("output\n  got:  [%s]\n  want: [%s]", f->out, want);
	f->out_len = 0;
	f->out[0] = '\0';
}

static const char lhlo_reply[] =
	"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
	"250-ENHANCEDSTATUSCODES\r\n250 SIZE 1000\r\n";

static struct fixture *greeted(uint64_t size_limit)
{
	struct fixture *f = fixture_new(size_limit);
	expect(f, "220 mx.test LMTP popbox ready\r\n");
	feed(f, "LHLO mta.test\r\n");
	f->out_len = 0;
	f->out[0] = '\0';
	return f;
}

static void test_greeting_and_lhlo(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(1000);
	expect(f, "220 mx.test LMTP popbox ready\r\n");
	assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_GREETED);
	feed(f, "lhlo mta.test\r\n");
	expect(f, lhlo_reply);
	assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_READY);
	fixture_free(f);

	f = fixture_new(0);
	feed(f, "LHLO x\r\n");
	assert_non_null(strstr(f->out, "250 SIZE\r\n"));
	fixture_free(f);
}

static void test_two_recipients(void **state)
{
	(void)state;
	struct fixture *f = greeted(1000);
	feed(f, "MAIL FROM:<sender@example.org> BODY=8BITMIME SIZE=40\r\n");
	expect(f, "250 2.1.0 sender <sender@example.org> OK\r\n");
	feed(f, "RCPT TO:<alice@example.org>\r\n");
	expect(f, "250 2.1.5 <alice@example.org> recipient OK\r\n");
	feed(f, "RCPT TO:<bob@example.org>\r\n");
	expect(f, "250 2.1.5 <bob@example.org> recipient OK\r\n");
	feed(f, "DATA\r\n");
	expect(f, "354 send the message, end with <CRLF>.<CRLF>\r\n");
	assert_int_equal(f->begins, 1);
	assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_DATA);
	feed(f, "Subject: hi\r\n\r\n..dotted\r\n...two\r\n.x\r\nend\r\n.\r\n");
	expect(f, "250 2.0.0 <alice@example.org> delivered\r\n"
		  "250 2.0.0 <bob@example.org> delivered\r\n");
	static const char body[] = "Subject: hi\r\n\r\n.dotted\r\n..two\r\nx\r\nend\r\n";
	assert_int_equal(f->body_len, strlen(body));
	assert_memory_equal(f->body, body, strlen(body));
	assert_int_equal(f->end_size, strlen(body));
	assert_int_equal(f->end_count, 2);
	assert_string_equal(f->end_sender, "sender@example.org");
	assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_READY);
	/* The next transaction starts clean. */
	feed(f, "RCPT TO:<alice@example.org>\r\n");
	expect(f, "503 5.5.1 send MAIL first\r\n");
	feed(f, "QUIT\r\n");
	expect(f, "221 2.0.0 mx.test closing connection\r\n");
	assert_int_equal(f->closes, 1);
	assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_CLOSED);
	fixture_free(f);
}

static void test_unknown_user_and_quota(void **state)
{
	(void)state;
	struct fixture *f = greeted(1000);
	feed(f, "MAIL FROM:<>\r\n");
	expect(f, "250 2.1.0 sender <> OK\r\n");
	feed(f, "RCPT TO:<nobody@example.org>\r\n");
	expect(f, "550 5.1.1 <nobody@example.org> no such user here\r\n");
	feed(f, "RCPT TO:<full@example.org>\r\n");
	expect(f, "452 4.2.2 <full@example.org> mailbox full\r\n");
	feed(f, "RCPT TO:<tiny@example.org>\r\n");
	expect(f, "552 5.2.2 <tiny@example.org> message larger than the mailbox quota\r\n");
	feed(f, "RCPT TO:<\"quoted\"@example.org>\r\n");
	expect(f, "550 5.1.1 <\"quoted\"@example.org> no such user here\r\n");
	feed(f, "DATA\r\n");
	expect(f, "503 5.5.1 no valid recipients\r\n");
	feed(f, "RCPT TO:<bob@example.org>\r\nDATA\r\nhello\r\n.\r\n");
	expect(f, "250 2.1.5 <bob@example.org> recipient OK\r\n"
		  "354 send the message, end with <CRLF>.<CRLF>\r\n"
		  "250 2.0.0 <bob@example.org> delivered\r\n");
	assert_string_equal(f->end_sender, "");
	assert_int_equal(f->end_count, 1);
	fixture_free(f);
}

static void test_commit_results(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	f->commit_result[0] = LMTP_RESULT_TEMPFAIL;
	f->commit_result[1] = LMTP_RESULT_OK;
	f->commit_result[2] = LMTP_RESULT_OVER_QUOTA;
	f->commit_result[3] = LMTP_RESULT_TOO_BIG;
	f->commit_result[4] = LMTP_RESULT_CONFIG;
	f->commit_result[5] = LMTP_RESULT_UNKNOWN_USER;
	feed(f, "MAIL FROM:<s@x>\r\n");
	for (int i = 0; i < 6; i++)
		feed(f, "RCPT TO:<alice@x>\r\n");
	f->out_len = 0;
	feed(f, "DATA\r\nbody\r\n.\r\n");
	expect(f, "354 send the message, end with <CRLF>.<CRLF>\r\n"
		  "451 4.3.0 <alice@x> temporary failure, try later\r\n"
		  "250 2.0.0 <alice@x> delivered\r\n"
		  "452 4.2.2 <alice@x> mailbox full\r\n"
		  "552 5.2.2 <alice@x> message larger than the mailbox quota\r\n"
		  "451 4.3.5 <alice@x> mailbox unavailable, try later\r\n"
		  "451 4.3.0 <alice@x> temporary failure, try later\r\n");
	/* A result beyond the last recipient is ignored. */
	lmtp_session_data_result(f->s, LMTP_RESULT_OK);
	expect(f, "");
	fixture_free(f);
}

static void test_user_candidates(void **state)
{
	(void)state;
	static const struct {
		const char *address;
		const char *want[LMTP_CANDIDATES_MAX];
	} cases[] = {
		{ "alice@example.org", { "alice@example.org", "alice" } },
		{ "alice+lists@example.org", { "alice+lists@example.org",
			"alice@example.org", "alice+lists", "alice" } },
		{ "postmaster", { "postmaster" } },
		{ "a+b", { "a+b", "a" } },
		{ "+x@example.org", { "+x@example.org", "+x" } },
		{ "../etc@example.org", { NULL } },
		{ "\"q\"@example.org", { NULL } },
		{ "x@y@z", { "x@y@z", "x@y" } },
		{ "", { NULL } },
	};
	char names[LMTP_CANDIDATES_MAX][LMTP_ADDRESS_MAX + 1];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = lmtp_user_candidates(cases[i].address, names);
		size_t want_n = 0;
		while (want_n < LMTP_CANDIDATES_MAX && cases[i].want[want_n] != NULL)
			want_n++;
		if (n != want_n)
			fail_msg("%s: %zu candidates, want %zu", cases[i].address,
				 n, want_n);
		for (size_t j = 0; j < n; j++)
			assert_string_equal(names[j], cases[i].want[j]);
	}
	/* 65 bytes: too long for a user name whole, not its local part. */
	char addr[80];
	memset(addr, 'a', 53);
	strcpy(addr + 53, "@example.org");
	assert_int_equal(strlen(addr), 65);
	assert_int_equal(lmtp_user_candidates(addr, names), 1);
	assert_int_equal(strlen(names[0]), 53);
}

static void test_candidates_tried_in_order(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	feed(f, "MAIL FROM:<s@x>\r\nRCPT TO:<alice+lists@example.org>\r\n");
	expect(f, "250 2.1.0 sender <s@x> OK\r\n"
		  "250 2.1.5 <alice+lists@example.org> recipient OK\r\n");
	assert_int_equal(f->lookup_count, 4);
	assert_string_equal(f->lookups[0], "alice+lists@example.org");
	assert_string_equal(f->lookups[1], "alice@example.org");
	assert_string_equal(f->lookups[2], "alice+lists");
	assert_string_equal(f->lookups[3], "alice");
	/* A source route is dropped. */
	f->lookup_count = 0;
	feed(f, "RCPT TO:<@relay.example,@b.example:bob@example.org>\r\n");
	expect(f, "250 2.1.5 <bob@example.org> recipient OK\r\n");
	assert_int_equal(f->lookup_count, 2);
	fixture_free(f);
}

static void test_sequence_errors(void **state)
{
	(void)state;
	struct fixture *f = fixture_new(1000);
	f->out_len = 0;
	feed(f, "MAIL FROM:<a@b>\r\n");
	expect(f, "503 5.5.1 send LHLO first\r\n");
	feed(f, "RCPT TO:<alice@b>\r\n");
	expect(f, "503 5.5.1 send LHLO first\r\n");
	feed(f, "NOOP\r\nRSET\r\nVRFY alice\r\n");
	expect(f, "250 2.0.0 OK\r\n250 2.0.0 OK\r\n"
		  "252 2.0.0 cannot VRFY, but will take a message and try\r\n");
	feed(f, "LHLO x\r\nRCPT TO:<alice@b>\r\nDATA\r\n");
	expect(f, "250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
		  "250-ENHANCEDSTATUSCODES\r\n250 SIZE 1000\r\n"
		  "503 5.5.1 send MAIL first\r\n503 5.5.1 send MAIL first\r\n");
	feed(f, "MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n");
	expect(f, "250 2.1.0 sender <a@b> OK\r\n503 5.5.1 MAIL already given\r\n");
	fixture_free(f);
}

static void test_syntax_errors(void **state)
{
	(void)state;
	struct fixture *f = greeted(1000);
	static const struct {
		const char *line;
		const char *reply;
	} cases[] = {
		{ "MAIL\r\n", "501 5.5.4 syntax: MAIL FROM:<address>\r\n" },
		{ "MAIL TO:<a@b>\r\n", "501 5.5.4 syntax: MAIL FROM:<address>\r\n" },
		{ "MAIL FROM:a@b\r\n", "501 5.1.7 bad sender address syntax\r\n" },
		{ "MAIL FROM:<a@b\r\n", "501 5.1.7 bad sender address syntax\r\n" },
		{ "MAIL FROM:<a b@c>\r\n", "501 5.1.7 bad sender address syntax\r\n" },
		{ "MAIL FROM:<a@b>x\r\n", "501 5.1.7 bad sender address syntax\r\n" },
		{ "MAIL FROM:<a@b> SIZE=x\r\n", "501 5.5.4 bad MAIL parameter\r\n" },
		{ "MAIL FROM:<a@b> SIZE=1 SIZE=2\r\n", "501 5.5.4 bad MAIL parameter\r\n" },
		{ "MAIL FROM:<a@b> SIZE=99999999999999999999999\r\n",
		  "501 5.5.4 bad MAIL parameter\r\n" },
		{ "MAIL FROM:<a@b> BODY=BINARYMIME\r\n", "501 5.5.4 bad MAIL parameter\r\n" },
		{ "MAIL FROM:<a@b> RET=HDRS\r\n", "555 5.5.4 MAIL parameter not supported\r\n" },
		{ "MAIL FROM:<a@b> SIZE=1001\r\n",
		  "552 5.3.4 message size exceeds the fixed maximum of 1000 bytes\r\n" },
		{ "HELO x\r\n", "500 5.5.1 this is LMTP: use LHLO\r\n" },
		{ "EXPN list\r\n", "502 5.5.1 command not implemented\r\n" },
		{ "STARTTLS\r\n", "502 5.5.1 command not implemented\r\n" },
		{ "XYZZY\r\n", "500 5.5.1 command not recognized\r\n" },
		{ "\r\n", "500 5.5.1 command not recognized\r\n" },
		{ "LHLO\r\n", "501 5.5.4 LHLO needs a host name\r\n" },
		{ "RSET now\r\n", "501 5.5.4 RSET takes no arguments\r\n" },
		{ "VRFY\r\n", "501 5.5.4 VRFY needs an argument\r\n" },
		{ "NOOP \xc3\xa4\r\n", "500 5.5.2 invalid character in command\r\n" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		feed(f, cases[i].line);
		expect(f, cases[i].reply);
		/* Successes reset the count of errors in a row. */
		feed(f, "NOOP\r\n");
		expect(f, "250 2.0.0 OK\r\n");
		assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_READY);
	}
	feed(f, "MAIL FROM:<a@b> size=1000 body=7bit\r\n");
	expect(f, "250 2.1.0 sender <a@b> OK\r\n");
	static const struct {
		const char *line;
		const char *reply;
	} rcpt_cases[] = {
		{ "RCPT TO:<>\r\n", "501 5.1.3 bad recipient address syntax\r\n" },
		{ "RCPT TO:alice\r\n", "501 5.1.3 bad recipient address syntax\r\n" },
		{ "RCPT FROM:<alice@b>\r\n", "501 5.5.4 syntax: RCPT TO:<address>\r\n" },
		{ "RCPT TO:<alice@b> NOTIFY=NEVER\r\n",
		  "555 5.5.4 RCPT parameters not supported\r\n" },
		{ "DATA now\r\n", "501 5.5.4 DATA takes no arguments\r\n" },
	};
	for (size_t i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
		feed(f, rcpt_cases[i].line);
		expect(f, rcpt_cases[i].reply);
		feed(f, "NOOP\r\n");
		expect(f, "250 2.0.0 OK\r\n");
	}
	/* Spaces after the colon and trailing spaces are tolerated. */
	feed(f, "rcpt to: <alice@b>  \r\n");
	expect(f, "250 2.1.5 <alice@b> recipient OK\r\n");
	fixture_free(f);
}

static void test_nul_byte(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	static const char line[] = "NOOP\0x\r\n";
	assert_int_equal(feed_bytes(f, line, sizeof(line) - 1), sizeof(line) - 1);
	expect(f, "500 5.5.2 invalid character in command\r\n");
	fixture_free(f);
}

static void test_bad_commands_close(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	feed(f, "X\r\nX\r\nX\r\nX\r\n");
	assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_READY);
	f->out_len = 0;
	const char *rest = "X\r\nNOOP\r\n";
	size_t used = feed_bytes(f, rest, strlen(rest));
	assert_int_equal(used, 3);
	expect(f, "500 5.5.1 command not recognized\r\n"
		  "421 4.7.0 mx.test too many errors, closing\r\n");
	assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_CLOSED);
	assert_int_equal(lmtp_session_action(f->s)->type, LMTP_ACTION_CLOSE);
	assert_int_equal(lmtp_session_input(f->s, "NOOP\r\n", 6), 0);
	fixture_free(f);
}

static void test_too_big(void **state)
{
	(void)state;
	struct fixture *f = greeted(100);
	char msg[400];
	memset(msg, 'a', sizeof(msg));
	for (size_t i = 49; i < sizeof(msg); i += 50) {
		msg[i - 1] = '\r';
		msg[i] = '\n';
	}
	feed(f, "MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\n");
	f->out_len = 0;
	assert_int_equal(feed_bytes(f, msg, sizeof(msg)), sizeof(msg));
	feed(f, ".\r\nNOOP\r\n");
	expect(f, "552 5.3.4 <alice@x> message exceeds the fixed maximum of 100 bytes\r\n"
		  "552 5.3.4 <bob@x> message exceeds the fixed maximum of 100 bytes\r\n"
		  "250 2.0.0 OK\r\n");
	assert_int_equal(f->ends, 0);
	assert_int_equal(f->resets, 1);
	/* Nothing beyond the limit was passed on. */
	assert_true(f->body_len <= 100);
	assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_READY);
	/* Exactly the limit is fine. */
	feed(f, "MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\n");
	free(f->body);
	f->body = NULL;
	f->body_len = 0;
	f->out_len = 0;
	memset(msg, 'b', 98);
	memcpy(msg + 98, "\r\n.\r\n", 5);
	assert_int_equal(feed_bytes(f, msg, 103), 103);
	expect(f, "250 2.0.0 <alice@x> delivered\r\n");
	assert_int_equal(f->body_len, 100);
	fixture_free(f);
}

static void test_too_many_recipients(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	feed(f, "MAIL FROM:<s@x>\r\n");
	for (int i = 0; i < LMTP_MAX_RECIPIENTS; i++) {
		f->out_len = 0;
		feed(f, "RCPT TO:<alice@x>\r\n");
		expect(f, "250 2.1.5 <alice@x> recipient OK\r\n");
	}
	feed(f, "RCPT TO:<bob@x>\r\n");
	expect(f, "452 4.5.3 too many recipients\r\n");
	feed(f, "DATA\r\nx\r\n.\r\n");
	assert_int_equal(f->end_count, LMTP_MAX_RECIPIENTS);
	fixture_free(f);
}

static void test_pipelining_in_order(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	const char *all = "MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\n"
			  "RCPT TO:<ghost@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\n";
	/* Stops at the first action, having consumed only up to it. */
	size_t used = 0, n;
	while ((n = lmtp_session_input(f->s, all + used, strlen(all) - used)) > 0)
		used += n;
	assert_int_equal(lmtp_session_action(f->s)->type, LMTP_ACTION_RCPT);
	assert_int_equal(used, strlen("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\n"));
	assert_int_equal(lmtp_session_input(f->s, all + used, strlen(all) - used), 0);
	feed(f, all + used);
	feed(f, "one\r\n.\r\nQUIT\r\n");
	expect(f, "250 2.1.0 sender <s@x> OK\r\n"
		  "250 2.1.5 <alice@x> recipient OK\r\n"
		  "550 5.1.1 <ghost@x> no such user here\r\n"
		  "250 2.1.5 <bob@x> recipient OK\r\n"
		  "354 send the message, end with <CRLF>.<CRLF>\r\n"
		  "250 2.0.0 <alice@x> delivered\r\n"
		  "250 2.0.0 <bob@x> delivered\r\n"
		  "221 2.0.0 mx.test closing connection\r\n");
	fixture_free(f);
}

/* The same message fed whole and one byte at a time gives the same body. */
static void test_data_splits_and_line_ends(void **state)
{
	(void)state;
	static const char msg[] =
		".leading dot\r\nbare lf\nbare cr\rstill\r\n.\rX\r\n..\r\n"
		"\r\n\xc3\xa4\x00\xff 8-bit\r\n.\n";
	static const char want[] =
		"leading dot\r\nbare lf\nbare cr\rstill\r\n\rX\r\n.\r\n"
		"\r\n\xc3\xa4\x00\xff 8-bit\r\n";
	for (size_t step = 0; step <= 3; step++) {
		struct fixture *f = greeted(0);
		feed(f, "MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\n");
		f->out_len = 0;
		assert_int_equal(feed_step(f, msg, sizeof(msg) - 1, step),
				 sizeof(msg) - 1);
		expect(f, "250 2.0.0 <alice@x> delivered\r\n");
		assert_int_equal(f->body_len, sizeof(want) - 1);
		assert_memory_equal(f->body, want, sizeof(want) - 1);
		fixture_free(f);
	}
}

static void test_empty_message(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	feed(f, "MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\n.\r\n");
	assert_int_equal(f->ends, 1);
	assert_int_equal(f->chunks, 0);
	assert_int_equal(f->end_size, 0);
	fixture_free(f);
}

static void test_large_message_in_pieces(void **state)
{
	(void)state;
	size_t lines = 5000, line_len = 100;
	size_t total = lines * line_len;
	char *msg = malloc(total + 3);
	assert_non_null(msg);
	for (size_t i = 0; i < lines; i++) {
		char *l = msg + i * line_len;
		memset(l, 'a' + (char)(i % 26), line_len - 2);
		l[0] = '.';    /* every line stuffed */
		l[line_len - 2] = '\r';
		l[line_len - 1] = '\n';
	}
	memcpy(msg + total, ".\r\n", 3);
	struct fixture *f = greeted(0);
	feed(f, "MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\n");
	assert_int_equal(feed_bytes(f, msg, total + 3), total + 3);
	assert_int_equal(f->body_len, total - lines);
	assert_true(f->chunks >= (total - lines) / LMTP_CHUNK_MAX);
	assert_true(f->max_chunk <= LMTP_CHUNK_MAX);
	for (size_t i = 0; i < lines; i++) {
		const uint8_t *l = f->body + i * (line_len - 1);
		assert_int_equal(l[0], 'a' + (char)(i % 26));
		assert_int_equal(l[line_len - 2], '\n');
	}
	free(msg);
	fixture_free(f);
}

static void test_long_line_discarded(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	size_t len = 3 * LMTP_LINE_MAX;
	char *line = malloc(len + 20);
	assert_non_null(line);
	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'x', len - 5);
	memcpy(line + len, "\r\nNOOP\r\n", 8);
	assert_int_equal(feed_bytes(f, line, len + 8), len + 8);
	expect(f, "500 5.5.2 line too long\r\n250 2.0.0 OK\r\n");
	/* Just under the limit is a line. */
	memset(line + 5, 'y', LMTP_LINE_MAX - 7);
	memcpy(line + LMTP_LINE_MAX - 2, "\r\n", 2);
	assert_int_equal(feed_bytes(f, line, LMTP_LINE_MAX), LMTP_LINE_MAX);
	expect(f, "250 2.0.0 OK\r\n");
	free(line);
	fixture_free(f);
}

static void test_rset_and_lhlo_reset(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	feed(f, "MAIL FROM:<s@x>\r\nRSET\r\n");
	assert_int_equal(f->resets, 0);   /* no delivery was open */
	feed(f, "MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nRSET\r\n");
	assert_int_equal(f->resets, 1);
	assert_int_equal(lmtp_session_state(f->s), LMTP_STATE_READY);
	feed(f, "MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nLHLO again\r\n");
	assert_int_equal(f->resets, 2);
	f->out_len = 0;
	feed(f, "DATA\r\n");
	expect(f, "503 5.5.1 send MAIL first\r\n");
	fixture_free(f);
}

static void test_abort(void **state)
{
	(void)state;
	struct fixture *f = greeted(0);
	feed(f, "MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\npart of it\r\n");
	f->out_len = 0;
	/* The caller holds a piece when the timeout fires. */
	lmtp_session_abort(f->s, "4.4.2 mx.test idle for too long");
	expect(f, "421 4.4.2 mx.test idle for too long\r\n");
	assert_int_equal(lmtp_session_action(f->s)->type, LMTP_ACTION_CLOSE);
	lmtp_session_action_done(f->s);
	lmtp_session_data_result(f->s, LMTP_RESULT_OK);
	lmtp_session_rcpt_done(f->s, LMTP_RESULT_OK);
	expect(f, "");
	assert_int_equal(lmtp_session_action(f->s)->type, LMTP_ACTION_CLOSE);
	lmtp_session_abort(f->s, "again");
	expect(f, "");
	fixture_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_and_lhlo),
		cmocka_unit_test(test_two_recipients),
		cmocka_unit_test(test_unknown_user_and_quota),
		cmocka_unit_test(test_commit_results),
		cmocka_unit_test(test_user_candidates),
		cmocka_unit_test(test_candidates_tried_in_order),
		cmocka_unit_test(test_sequence_errors),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_bad_commands_close),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_too_many_recipients),
		cmocka_unit_test(test_pipelining_in_order),
		cmocka_unit_test(test_data_splits_and_line_ends),
		cmocka_unit_test(test_empty_message),
		cmocka_unit_test(test_large_message_in_pieces),
		cmocka_unit_test(test_long_line_discarded),
		cmocka_unit_test(test_rset_and_lhlo_reset),
		cmocka_unit_test(test_abort),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
