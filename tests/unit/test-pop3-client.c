/*
 * test-pop3-client.c — the sans-I/O POP3 client core (fetch/pop3-client)
 * driven alone: commands queued, the bytes it would send checked, server
 * bytes fed in pieces of every size, and the events it reports written to
 * a text log compared with what they must be.  Then the pure parsers,
 * table-driven: good and bad status lines, CAPA, STAT, scan and unique-id
 * listings, APOP timestamps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pop3-client.h"

#define S(x) x, sizeof(x) - 1

/* The event log: one line per event, data escaped. */
struct recorder {
	struct pop3c *c;
	char *log;
	size_t len, cap;
	struct pop3c_caps caps;       /* CAPA lines parsed as they come */
	int capa_errors;
	const char *sasl_answer;      /* answered to each "+ " if set */
	bool refill;                  /* call pop3c_output() after events */
};

static void log_append(struct recorder *r, const char *s, size_t n)
{
	if (r->len + n + 1 > r->cap) {
		r->cap = (r->len + n + 1) * 2;
		r->log = realloc(r->log, r->cap);
		assert_non_null(r->log);
	}
	memcpy(r->log + r->len, s, n);
	r->len += n;
	r->log[r->len] = '\0';
}

static void log_printf(struct recorder *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void log_printf(struct recorder *r, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(buf));
	log_append(r, buf, (size_t)n);
}

static void log_escaped(struct recorder *r, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char b = (unsigned char)p[i];
		if (b == '\r')
			log_append(r, S("\\r"));
		else if (b == '\n')
			log_append(r, S("\\n"));
		else if (b < 0x20 || b > 0x7e || b == '\\')
			log_printf(r, "\\x%02x", b);
		else
			log_append(r, (const char *)&b, 1);
	}
}

static const char *const status_names[] = { "OK", "ERR", "CONT" };

static void record(void *context, const struct pop3c_event *ev)
{
	struct recorder *r = context;
	const char *error;

	switch (ev->type) {
	case POP3C_EVENT_REPLY:
		log_printf(r, "R%u %s %s", (unsigned)ev->cmd.id,
			   pop3c_cmd_name(ev->cmd.type),
			   status_names[ev->reply->status]);
		if (ev->reply->code != POP3C_CODE_NONE) {
			log_printf(r, " [%d:", (int)ev->reply->code);
			log_escaped(r, ev->reply->code_text, ev->reply->code_len);
			log_append(r, S("]"));
		}
		log_append(r, S(" '"));
		log_escaped(r, ev->reply->text, ev->reply->text_len);
		log_append(r, S("'"));
		if (ev->reply->multiline)
			log_append(r, S(" +"));
		log_append(r, S("\n"));
		if (ev->reply->status == POP3C_CONTINUE && r->sasl_answer != NULL)
			assert_int_equal(pop3c_sasl_respond(r->c, r->sasl_answer,
							    strlen(r->sasl_answer),
							    &error), 0);
		break;
	case POP3C_EVENT_DATA:
		log_printf(r, "D%u '", (unsigned)ev->cmd.id);
		log_escaped(r, ev->data, ev->len);
		if (ev->line_end)
			log_append(r, S("'\n"));
		else
			log_append(r, S("'...\n"));
		assert_true(ev->len <= POP3C_LINE_MAX);
		if (ev->cmd.type == POP3C_CAPA &&
		    pop3c_parse_capa_line(&r->caps, ev->data, ev->len, &error) < 0)
			r->capa_errors++;
		break;
	case POP3C_EVENT_END:
		log_printf(r, "E%u %llu %llu %llu\n", (unsigned)ev->cmd.id,
			   (unsigned long long)ev->octets,
			   (unsigned long long)ev->lines,
			   (unsigned long long)ev->bare_lf_lines);
		break;
	}
	if (r->refill) {
		size_t n;
		(void)pop3c_output(r->c, &n);
	}
}

static struct recorder *recorder_new(void)
{
	struct recorder *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	r->c = pop3c_new(record, r);
	assert_non_null(r->c);
	log_append(r, "", 0);
	return r;
}

static void recorder_free(struct recorder *r)
{
	pop3c_free(&r->c);
	assert_null(r->c);
	free(r->log);
	free(r);
}

/* Feeds data in pieces of chunk bytes; returns the first failure. */
static int feed(struct recorder *r, const char *data, size_t len, size_t chunk,
		const char **error_r)
{
	if (chunk == 0)
		chunk = len > 0 ? len : 1;
	for (size_t i = 0; i < len; i += chunk) {
		size_t n = len - i < chunk ? len - i : chunk;
		if (pop3c_input(r->c, data + i, n, error_r) < 0)
			return -1;
	}
	return 0;
}

static void feed_ok(struct recorder *r, const char *data)
{
	const char *error = NULL;

	if (feed(r, data, strlen(data), 0, &error) < 0)
		fail_msg("unexpected error: %s", error);
}

/* Takes everything the core would send, as a C string. */
static char *take_output(struct recorder *r)
{
	size_t n;
	const char *out = pop3c_output(r->c, &n);
	char *copy = malloc(n + 1);

	assert_non_null(copy);
	memcpy(copy, out, n);
	copy[n] = '\0';
	pop3c_output_sent(r->c, n);
	return copy;
}

static void expect_output(struct recorder *r, const char *want)
{
	char *got = take_output(r);

	assert_string_equal(got, want);
	free(got);
}

static void queue(struct recorder *r, enum pop3c_cmd_type type, uint32_t msg,
		  uint32_t lines)
{
	const char *error;

	if (pop3c_queue(r->c, type, msg, lines, NULL, &error) < 0)
		fail_msg("queue: %s", error);
}

/* A new core past the greeting. */
static struct recorder *greeted(void)
{
	struct recorder *r = recorder_new();

	feed_ok(r, "+OK ready\r\n");
	return r;
}

/* ---- the reply parser through the core ---- */

static void test_greeting_and_apop(void **state)
{
	struct recorder *r = recorder_new();
	size_t start, len;

	(void)state;
	assert_int_equal(pop3c_in_flight(r->c), 1);
	feed_ok(r, "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n");
	assert_string_equal(r->log, "R0 greeting OK 'POP3 server ready "
				    "<1896.697170952@dbc.mtview.ca.us>'\n");
	assert_int_equal(pop3c_in_flight(r->c), 0);
	const char *text = strchr(r->log, '\'') + 1;
	assert_int_equal(pop3c_apop_timestamp(text, strlen(text), &start, &len), 0);
	assert_int_equal(len, strlen("<1896.697170952@dbc.mtview.ca.us>"));
	assert_memory_equal(text + start, "<1896.", 6);
	recorder_free(r);
}

/* Nothing goes out before the greeting, nor with USER/PASS. */
static void test_alone_commands(void **state)
{
	struct recorder *r = recorder_new();
	const char *error;

	(void)state;
	pop3c_set_window(r->c, 10);
	assert_int_equal(pop3c_queue_user(r->c, "alice", NULL, &error), 0);
	assert_int_equal(pop3c_queue_pass(r->c, "pass word", NULL, &error), 0);
	queue(r, POP3C_STAT, 0, 0);
	queue(r, POP3C_UIDL, 0, 0);
	expect_output(r, "");
	feed_ok(r, "+OK hi\r\n");
	expect_output(r, "USER alice\r\n");
	expect_output(r, "");
	feed_ok(r, "+OK\r\n");
	expect_output(r, "PASS pass word\r\n");
	expect_output(r, "");
	feed_ok(r, "+OK logged in\r\n");
	/* Now pipelined: both at once. */
	expect_output(r, "STAT\r\nUIDL\r\n");
	assert_int_equal(pop3c_in_flight(r->c), 2);
	assert_int_equal(pop3c_waiting(r->c), 0);
	feed_ok(r, "+OK 2 30\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n");
	assert_string_equal(r->log, "R0 greeting OK 'hi'\n"
				    "R1 USER OK ''\n"
				    "R2 PASS OK 'logged in'\n"
				    "R3 STAT OK '2 30'\n"
				    "R4 UIDL OK '' +\n"
				    "D4 '1 a'\n"
				    "D4 '2 b'\n"
				    "E4 10 2 0\n");
	recorder_free(r);
}

static void test_retr_stuffing(void **state)
{
	struct recorder *r = greeted();
	static const char reply[] = "+OK 31 octets\r\n"
				    "Subject: x\r\n"
				    "\r\n"
				    "..dot\r\n"
				    "..\r\n"
				    ".not stuffed\r\n"
				    ". \r\n"
				    ".\r\n";

	(void)state;
	queue(r, POP3C_RETR, 7, 0);
	expect_output(r, "RETR 7\r\n");
	feed_ok(r, reply);
	assert_string_equal(r->log, "R0 greeting OK 'ready'\n"
				    "R1 RETR OK '31 octets' +\n"
				    "D1 'Subject: x'\n"
				    "D1 ''\n"
				    "D1 '.dot'\n"
				    "D1 '.'\n"
				    "D1 'not stuffed'\n"
				    "D1 ' '\n"
				    "E1 39 6 0\n");
	/* 10+0+4+1+11+1 data bytes, 6 line ends. */
	assert_int_equal(pop3c_in_flight(r->c), 0);
	recorder_free(r);
}

/* CRs not before an LF are data; bare LF ends lines and is counted. */
static void test_cr_and_bare_lf(void **state)
{
	struct recorder *r = greeted();

	(void)state;
	queue(r, POP3C_TOP, 3, 0);
	expect_output(r, "TOP 3 0\r\n");
	feed_ok(r, "+OK\na\rb\r\nx\r\r\n.\rx\n\r\n.\n");
	assert_string_equal(strchr(r->log, '\n') + 1,
			    "R1 TOP OK '' +\n"
			    "D1 'a\\rb'\n"
			    "D1 'x\\r'\n"
			    "D1 '\\rx'\n"
			    "D1 ''\n"
			    "E1 15 4 1\n");
	recorder_free(r);
}

/* The scripted sessions every chunking must agree on. */
static const char *const sessions[] = {
	"+OK hi <a@b>\r\n+OK 1 5\r\n+OK\r\nl1\r\n..\r\n.x\r\n\r\n.\r\n-ERR [SYS/TEMP] no\r\n+OK bye\r\n",
	"+OK\n+OK 1 5\n+OK\nl1\n\r\n.\r\r\n.\n-ERR\n+OK\n",
	"+OK\r\n+OK 2 9\r\n+OK x\r\na\rb\rc\r\r\r\n..\r\n.\r\n+OK\r\n+OK\r\n",
	"+OK\r\n-ERR [IN-USE] locked\r\n-ERR no such message\r\n-ERR\r\n+OK\r\n",
};

/* Queues STAT, RETR 1, DELE 1, QUIT with a window of 4. */
static struct recorder *session_client(void)
{
	struct recorder *r = recorder_new();

	pop3c_set_window(r->c, 4);
	r->refill = true;
	queue(r, POP3C_STAT, 0, 0);
	queue(r, POP3C_RETR, 1, 0);
	queue(r, POP3C_DELE, 1, 0);
	queue(r, POP3C_QUIT, 0, 0);
	return r;
}

static void test_chunking_does_not_matter(void **state)
{
	(void)state;
	for (size_t s = 0; s < sizeof(sessions) / sizeof(sessions[0]); s++) {
		const char *data = sessions[s];
		size_t len = strlen(data);
		struct recorder *whole = session_client();
		const char *error;

		assert_int_equal(feed(whole, data, len, 0, &error), 0);
		assert_true(pop3c_quit_done(whole->c));
		for (size_t chunk = 1; chunk <= len; chunk++) {
			struct recorder *r = session_client();
			assert_int_equal(feed(r, data, len, chunk, &error), 0);
			assert_string_equal(r->log, whole->log);
			recorder_free(r);
		}
		/* Random splits too. */
		srand((unsigned)s + 1);
		for (int round = 0; round < 200; round++) {
			struct recorder *r = session_client();
			for (size_t i = 0; i < len;) {
				size_t n = 1 + (size_t)rand() % 9;
				if (n > len - i)
					n = len - i;
				assert_int_equal(pop3c_input(r->c, data + i, n, &error), 0);
				i += n;
			}
			assert_string_equal(r->log, whole->log);
			recorder_free(r);
		}
		recorder_free(whole);
	}
}

static void test_pipelined_matching(void **state)
{
	struct recorder *r = greeted();
	uint64_t id;
	const char *error;

	(void)state;
	pop3c_set_window(r->c, 8);
	queue(r, POP3C_RETR, 1, 0);
	queue(r, POP3C_RETR, 2, 0);
	queue(r, POP3C_LIST_ONE, 3, 0);
	queue(r, POP3C_UIDL_ONE, 3, 0);
	assert_int_equal(pop3c_queue(r->c, POP3C_DELE, 1, 0, &id, &error), 0);
	assert_int_equal(id, 5);
	queue(r, POP3C_NOOP, 0, 0);
	queue(r, POP3C_QUIT, 0, 0);
	expect_output(r, "RETR 1\r\nRETR 2\r\nLIST 3\r\nUIDL 3\r\nDELE 1\r\n"
			 "NOOP\r\nQUIT\r\n");
	assert_int_equal(pop3c_in_flight(r->c), 7);
	/* -ERR to RETR is one line: the next line answers RETR 2's
	   successor, not RETR 2's data. */
	feed_ok(r, "+OK\r\nm1\r\n.\r\n"
		   "-ERR no such message\r\n"
		   "+OK 3 120\r\n"
		   "+OK 3 uid-3\r\n"
		   "+OK deleted\r\n"
		   "+OK\r\n"
		   "+OK bye\r\n"
		   "garbage after QUIT is ignored");
	assert_string_equal(strchr(r->log, '\n') + 1,
			    "R1 RETR OK '' +\n"
			    "D1 'm1'\n"
			    "E1 4 1 0\n"
			    "R2 RETR ERR 'no such message'\n"
			    "R3 LIST OK '3 120'\n"
			    "R4 UIDL OK '3 uid-3'\n"
			    "R5 DELE OK 'deleted'\n"
			    "R6 NOOP OK ''\n"
			    "R7 QUIT OK 'bye'\n");
	assert_true(pop3c_quit_done(r->c));
	assert_int_equal(pop3c_eof(r->c, &error), 0);
	assert_int_equal(pop3c_queue(r->c, POP3C_NOOP, 0, 0, NULL, &error), -1);
	recorder_free(r);
}

/* Window 1: one command at a time, the next once the reply is complete. */
static void test_window_one(void **state)
{
	struct recorder *r = greeted();

	(void)state;
	queue(r, POP3C_RETR, 1, 0);
	queue(r, POP3C_DELE, 1, 0);
	expect_output(r, "RETR 1\r\n");
	expect_output(r, "");
	feed_ok(r, "+OK\r\nx\r\n");
	expect_output(r, "");
	feed_ok(r, ".\r\n");
	expect_output(r, "DELE 1\r\n");
	recorder_free(r);
}

static void expect_error(struct recorder *r, const char *data, size_t len,
			 const char *error_part)
{
	const char *error = NULL;

	assert_int_equal(feed(r, data, len, 0, &error), -1);
	assert_non_null(error);
	assert_non_null(strstr(error, error_part));
	assert_true(pop3c_failed(r->c));
	/* Dead from now on, with the same error. */
	const char *again = NULL;
	assert_int_equal(pop3c_input(r->c, "+OK\r\n", 5, &again), -1);
	assert_ptr_equal(again, error);
	assert_int_equal(pop3c_queue(r->c, POP3C_NOOP, 0, 0, NULL, &again), -1);
}

static void test_protocol_errors(void **state)
{
	struct recorder *r;

	(void)state;
	/* More replies than commands. */
	r = greeted();
	expect_error(r, S("+OK extra\r\n"), "no command in flight");
	recorder_free(r);
	r = recorder_new();
	expect_error(r, S("+OK\r\n+OK\r\n"), "no command in flight");
	recorder_free(r);
	/* Not a status line. */
	r = recorder_new();
	expect_error(r, S("* OK IMAP\r\n"), "malformed");
	recorder_free(r);
	r = recorder_new();
	expect_error(r, S("\r\n"), "malformed");
	recorder_free(r);
	/* A challenge to anything but AUTH. */
	r = recorder_new();
	expect_error(r, S("+ abc\r\n"), "AUTH");
	recorder_free(r);
	/* -ERR to RETR is single-line: what follows is the next reply. */
	r = greeted();
	pop3c_set_window(r->c, 2);
	queue(r, POP3C_RETR, 1, 0);
	queue(r, POP3C_NOOP, 0, 0);
	expect_output(r, "RETR 1\r\nNOOP\r\n");
	expect_error(r, S("-ERR gone\r\nline\r\n.\r\n"), "malformed");
	recorder_free(r);
}

static void test_over_long_lines(void **state)
{
	size_t big = POP3C_LINE_MAX + 10;
	char *buf = malloc(big + 64);
	struct recorder *r;
	const char *error;

	(void)state;
	assert_non_null(buf);
	/* A status line of exactly POP3C_LINE_MAX is fine, with CRLF... */
	memcpy(buf, "+OK ", 4);
	memset(buf + 4, 'x', POP3C_LINE_MAX - 4);
	memcpy(buf + POP3C_LINE_MAX, "\r\n", 2);
	r = recorder_new();
	assert_int_equal(feed(r, buf, POP3C_LINE_MAX + 2, 1, &error), 0);
	recorder_free(r);
	/* ...one more byte is not, however it comes. */
	memset(buf + 4, 'x', POP3C_LINE_MAX - 3);
	memcpy(buf + POP3C_LINE_MAX + 1, "\r\n", 2);
	for (size_t chunk = 0; chunk < 3; chunk++) {
		r = recorder_new();
		assert_int_equal(feed(r, buf, POP3C_LINE_MAX + 3, chunk, &error), -1);
		assert_non_null(strstr(error, "too long"));
		recorder_free(r);
	}
	/* A status line that never ends fails once over the limit. */
	r = recorder_new();
	memset(buf, 'x', big);
	memcpy(buf, "+OK ", 4);
	assert_int_equal(feed(r, buf, big, 100, &error), -1);
	recorder_free(r);
	/* A listing line over the limit: error. */
	r = greeted();
	queue(r, POP3C_UIDL, 0, 0);
	expect_output(r, "UIDL\r\n");
	feed_ok(r, "+OK\r\n");
	memset(buf, '1', big);
	assert_int_equal(feed(r, buf, big, 7, &error), -1);
	assert_non_null(strstr(error, "listing line too long"));
	recorder_free(r);
	free(buf);
}

/* A message line of any length comes in pieces of POP3C_LINE_MAX. */
static void test_long_message_line(void **state)
{
	size_t len = 2 * POP3C_LINE_MAX + 100;
	char *msg = malloc(len + 32);
	char want[128];

	(void)state;
	assert_non_null(msg);
	memcpy(msg, "+OK\r\n", 5);
	memset(msg + 5, 'a', len);
	memcpy(msg + 5 + len, "\r\n.\r\n", 6);
	for (size_t chunk = 0; chunk < 4; chunk++) {
		struct recorder *r = greeted();
		const char *error;
		queue(r, POP3C_RETR, 1, 0);
		expect_output(r, "RETR 1\r\n");
		assert_int_equal(feed(r, msg, strlen(msg),
				      chunk == 0 ? 0 : chunk * 997, &error), 0);
		/* Three DATA events, the first two cut, then END. */
		const char *p = strstr(r->log, "R1 RETR OK '' +\n");
		assert_non_null(p);
		p = strchr(p, '\n') + 1;
		for (int piece = 0; piece < 3; piece++) {
			size_t n = piece < 2 ? POP3C_LINE_MAX : 100;
			assert_memory_equal(p, "D1 '", 4);
			assert_int_equal(strspn(p + 4, "a"), n);
			p += 4 + n;
			const char *tail = piece < 2 ? "'...\n" : "'\n";
			assert_memory_equal(p, tail, strlen(tail));
			p += strlen(tail);
		}
		snprintf(want, sizeof(want), "E1 %zu 1 0\n", len + 2);
		assert_string_equal(p, want);
		recorder_free(r);
	}
	free(msg);
}

/* The connection ends in the middle: never an END, always an error. */
static void test_truncated_replies(void **state)
{
	static const char *const cuts[] = {
		"+OK\r\nline\r\n",         /* no terminator */
		"+OK\r\nline\r\n.",        /* terminator without line end */
		"+OK\r\nline\r\n.\r",
		"+OK\r\nline.\r\n",        /* the "." glued to the last line */
		"+OK\r\nline",             /* the last line cut */
		"+OK",                     /* the status line cut */
		"",                        /* nothing at all */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		struct recorder *r = greeted();
		const char *error;
		queue(r, POP3C_RETR, 1, 0);
		expect_output(r, "RETR 1\r\n");
		feed_ok(r, cuts[i]);
		assert_int_equal(pop3c_eof(r->c, &error), -1);
		assert_non_null(strstr(error, "closed"));
		assert_null(strstr(r->log, "E1"));
		assert_true(pop3c_failed(r->c));
		recorder_free(r);
	}
	/* Clean: nothing outstanding. */
	struct recorder *r = greeted();
	const char *error;
	assert_int_equal(pop3c_eof(r->c, &error), 0);
	recorder_free(r);
	/* A greeting never finished. */
	r = recorder_new();
	feed_ok(r, "+OK hel");
	assert_int_equal(pop3c_eof(r->c, &error), -1);
	recorder_free(r);
}

static void test_response_codes(void **state)
{
	struct recorder *r = recorder_new();

	(void)state;
	feed_ok(r, "-ERR [IN-USE] mailbox locked\r\n");
	assert_string_equal(r->log, "R0 greeting ERR [2:IN-USE] 'mailbox locked'\n");
	recorder_free(r);
}

static void test_stls(void **state)
{
	struct recorder *r;
	const char *error;

	(void)state;
	/* Bytes after +OK to STLS, in the clear: refused. */
	r = greeted();
	queue(r, POP3C_STLS, 0, 0);
	queue(r, POP3C_CAPA, 0, 0);
	expect_output(r, "STLS\r\n");
	expect_output(r, "");
	expect_error(r, S("+OK begin TLS\r\n+OK injected\r\n"), "STLS");
	recorder_free(r);
	/* The same bytes in two reads: refused at the second. */
	r = greeted();
	queue(r, POP3C_STLS, 0, 0);
	queue(r, POP3C_CAPA, 0, 0);
	expect_output(r, "STLS\r\n");
	feed_ok(r, "+OK begin TLS\r\n");
	assert_true(pop3c_wants_tls(r->c));
	expect_output(r, "");
	assert_int_equal(pop3c_input(r->c, "+OK\r\n", 5, &error), -1);
	recorder_free(r);
	/* The normal way: handshake, then CAPA goes out. */
	r = greeted();
	queue(r, POP3C_STLS, 0, 0);
	queue(r, POP3C_CAPA, 0, 0);
	expect_output(r, "STLS\r\n");
	feed_ok(r, "+OK begin TLS\r\n");
	expect_output(r, "");
	assert_int_equal(pop3c_eof(r->c, &error), -1);
	recorder_free(r);
	r = greeted();
	queue(r, POP3C_STLS, 0, 0);
	queue(r, POP3C_CAPA, 0, 0);
	expect_output(r, "STLS\r\n");
	feed_ok(r, "+OK begin TLS\r\n");
	pop3c_tls_started(r->c);
	assert_false(pop3c_wants_tls(r->c));
	expect_output(r, "CAPA\r\n");
	feed_ok(r, "+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n");
	assert_true(r->caps.user);
	assert_true(pop3c_caps_has_mech(&r->caps, "plain"));
	/* -ERR to STLS leaves the core as it was (the driver decides). */
	queue(r, POP3C_STLS, 0, 0);
	expect_output(r, "STLS\r\n");
	feed_ok(r, "-ERR not now\r\n");
	assert_false(pop3c_wants_tls(r->c));
	recorder_free(r);
}

static void test_sasl_exchange(void **state)
{
	struct recorder *r = greeted();
	const char *error;

	(void)state;
	pop3c_set_window(r->c, 5);
	assert_int_equal(pop3c_sasl_respond(r->c, "eA==", 4, &error), -1);
	assert_int_equal(pop3c_queue_auth(r->c, "scram-sha-256", "biwsbj1h",
					  NULL, &error), 0);
	queue(r, POP3C_STAT, 0, 0);
	expect_output(r, "AUTH SCRAM-SHA-256 biwsbj1h\r\n");
	feed_ok(r, "+ cj1hYmM=\r\n");
	expect_output(r, "");
	assert_int_equal(pop3c_sasl_respond(r->c, "Yz1i\r\n", 6, &error), -1);
	assert_int_equal(pop3c_sasl_respond(r->c, "Yz1i", 4, &error), 0);
	assert_int_equal(pop3c_sasl_respond(r->c, "Yz1i", 4, &error), -1);
	expect_output(r, "Yz1i\r\n");
	feed_ok(r, "+\r\n");
	assert_int_equal(pop3c_sasl_cancel(r->c, &error), 0);
	expect_output(r, "*\r\n");
	feed_ok(r, "-ERR [AUTH] cancelled\r\n");
	expect_output(r, "STAT\r\n");
	assert_string_equal(strchr(r->log, '\n') + 1,
			    "R1 AUTH CONT 'cj1hYmM='\n"
			    "R1 AUTH CONT ''\n"
			    "R1 AUTH ERR [6:AUTH] 'cancelled'\n");
	recorder_free(r);
	/* A second challenge before the answer: protocol error. */
	r = greeted();
	assert_int_equal(pop3c_queue_auth(r->c, "PLAIN", NULL, NULL, &error), 0);
	expect_output(r, "AUTH PLAIN\r\n");
	expect_error(r, S("+ \r\n+ \r\n"), "second challenge");
	recorder_free(r);
	/* Answered from the callback, as a driver would. */
	r = greeted();
	r->sasl_answer = "AGEAYg==";
	assert_int_equal(pop3c_queue_auth(r->c, "PLAIN", NULL, NULL, &error), 0);
	expect_output(r, "AUTH PLAIN\r\n");
	feed_ok(r, "+ \r\n");
	expect_output(r, "AGEAYg==\r\n");
	feed_ok(r, "+OK\r\n");
	recorder_free(r);
}

static void test_queue_validation(void **state)
{
	struct recorder *r = recorder_new();
	const char *error;
	char long_arg[300];

	(void)state;
	memset(long_arg, 'a', sizeof(long_arg) - 1);
	long_arg[sizeof(long_arg) - 1] = '\0';
	assert_int_equal(pop3c_queue(r->c, POP3C_RETR, 0, 0, NULL, &error), -1);
	assert_int_equal(pop3c_queue(r->c, POP3C_DELE, 0, 0, NULL, &error), -1);
	assert_int_equal(pop3c_queue(r->c, POP3C_USER, 0, 0, NULL, &error), -1);
	assert_int_equal(pop3c_queue(r->c, POP3C_GREETING, 0, 0, NULL, &error), -1);
	assert_int_equal(pop3c_queue(r->c, POP3C_CMD_TYPE_COUNT, 0, 0, NULL, &error), -1);
	assert_int_equal(pop3c_queue_user(r->c, "a b", NULL, &error), -1);
	assert_int_equal(pop3c_queue_user(r->c, "", NULL, &error), -1);
	assert_int_equal(pop3c_queue_user(r->c, "a\r\nDELE 1", NULL, &error), -1);
	assert_int_equal(pop3c_queue_user(r->c, long_arg, NULL, &error), -1);
	assert_int_equal(pop3c_queue_pass(r->c, "x\nDELE 1", NULL, &error), -1);
	assert_int_equal(pop3c_queue_pass(r->c, long_arg, NULL, &error), -1);
	assert_int_equal(pop3c_queue_apop(r->c, "u", "ABCDEF0123456789abcdef0123456789",
					  NULL, &error), -1);
	assert_int_equal(pop3c_queue_apop(r->c, "u", "abc", NULL, &error), -1);
	assert_int_equal(pop3c_queue_auth(r->c, "PL AIN", NULL, NULL, &error), -1);
	assert_int_equal(pop3c_queue_auth(r->c, "", NULL, NULL, &error), -1);
	assert_int_equal(pop3c_queue_auth(r->c, "ABCDEFGHIJKLMNOPQRSTU", NULL,
					  NULL, &error), -1);
	assert_int_equal(pop3c_queue_auth(r->c, "PLAIN", "not base64!", NULL,
					  &error), -1);
	assert_int_equal(pop3c_queue_auth(r->c, "PLAIN", "", NULL, &error), -1);
	assert_int_equal(pop3c_queue_auth(r->c, "XOAUTH2", long_arg, NULL, &error), -1);
	assert_non_null(strstr(error, "challenge"));
	/* Nothing of that was queued. */
	assert_int_equal(pop3c_waiting(r->c), 0);
	assert_int_equal(pop3c_queue_apop(r->c, "u", "0123456789abcdef0123456789abcdef",
					  NULL, &error), 0);
	assert_int_equal(pop3c_queue_auth(r->c, "PLAIN", "=", NULL, &error), 0);
	assert_int_equal(pop3c_queue(r->c, POP3C_QUIT, 0, 0, NULL, &error), 0);
	assert_int_equal(pop3c_queue(r->c, POP3C_NOOP, 0, 0, NULL, &error), -1);
	assert_non_null(strstr(error, "after QUIT"));
	assert_int_equal(pop3c_waiting(r->c), 3);
	feed_ok(r, "+OK\r\n");
	expect_output(r, "APOP u 0123456789abcdef0123456789abcdef\r\n");
	recorder_free(r);
}

/* Many commands queued: the ring grows and keeps order. */
static void test_queue_grows(void **state)
{
	struct recorder *r = greeted();
	char *out, want[32];
	size_t pos = 0;

	(void)state;
	pop3c_set_window(r->c, 3);
	for (uint32_t i = 1; i <= 200; i++)
		queue(r, POP3C_DELE, i, 0);
	for (uint32_t i = 1; i <= 200; i++) {
		out = take_output(r);
		if (i <= 198) {
			snprintf(want, sizeof(want), "DELE %u\r\n", (unsigned)(i + 2));
			if (i == 1)
				assert_string_equal(out, "DELE 1\r\nDELE 2\r\nDELE 3\r\n");
			else
				assert_string_equal(out, want);
		}
		free(out);
		feed_ok(r, "+OK\r\n");
		pos++;
	}
	assert_int_equal(pop3c_in_flight(r->c), 0);
	assert_int_equal(pos, 200);
	recorder_free(r);
}

static void test_output_partial_send(void **state)
{
	struct recorder *r = greeted();
	const char *error;
	size_t n;

	(void)state;
	assert_int_equal(pop3c_queue_pass(r->c, "secret", NULL, &error), 0);
	const char *out = pop3c_output(r->c, &n);
	assert_int_equal(n, 13);
	assert_memory_equal(out, "PASS secret\r\n", 13);
	pop3c_output_sent(r->c, 5);
	out = pop3c_output(r->c, &n);
	assert_int_equal(n, 8);
	assert_memory_equal(out, "secret\r\n", 8);
	pop3c_output_sent(r->c, 100);
	(void)pop3c_output(r->c, &n);
	assert_int_equal(n, 0);
	recorder_free(r);
}

/* ---- pure parsers ---- */

struct reply_case {
	const char *line;
	int ret;
	enum pop3c_status status;
	enum pop3c_code code;
	const char *code_text;
	const char *text;
};

static const struct reply_case reply_cases[] = {
	{ "+OK", 0, POP3C_OK, POP3C_CODE_NONE, NULL, "" },
	{ "+OK ", 0, POP3C_OK, POP3C_CODE_NONE, NULL, "" },
	{ "+ok fine", 0, POP3C_OK, POP3C_CODE_NONE, NULL, "fine" },
	{ "+OK  two spaces", 0, POP3C_OK, POP3C_CODE_NONE, NULL, " two spaces" },
	{ "-ERR", 0, POP3C_ERR, POP3C_CODE_NONE, NULL, "" },
	{ "-err no", 0, POP3C_ERR, POP3C_CODE_NONE, NULL, "no" },
	{ "-ERR [IN-USE] locked", 0, POP3C_ERR, POP3C_CODE_IN_USE, "IN-USE", "locked" },
	{ "-ERR [LOGIN-DELAY] wait", 0, POP3C_ERR, POP3C_CODE_LOGIN_DELAY, "LOGIN-DELAY", "wait" },
	{ "-ERR [SYS/TEMP] later", 0, POP3C_ERR, POP3C_CODE_SYS_TEMP, "SYS/TEMP", "later" },
	{ "-ERR [sys/perm]", 0, POP3C_ERR, POP3C_CODE_SYS_PERM, "sys/perm", "" },
	{ "-ERR [SYS/TEMP/DISK] full", 0, POP3C_ERR, POP3C_CODE_SYS_TEMP, "SYS/TEMP/DISK", "full" },
	{ "-ERR [SYS/TEMPX] x", 0, POP3C_ERR, POP3C_CODE_OTHER, "SYS/TEMPX", "x" },
	{ "-ERR [AUTH] bad", 0, POP3C_ERR, POP3C_CODE_AUTH, "AUTH", "bad" },
	{ "-ERR [UTF8] x", 0, POP3C_ERR, POP3C_CODE_OTHER, "UTF8", "x" },
	{ "+OK [IN-USE]", 0, POP3C_OK, POP3C_CODE_IN_USE, "IN-USE", "" },
	/* Not codes: left in the text. */
	{ "-ERR [] x", 0, POP3C_ERR, POP3C_CODE_NONE, NULL, "[] x" },
	{ "-ERR [IN USE] x", 0, POP3C_ERR, POP3C_CODE_NONE, NULL, "[IN USE] x" },
	{ "-ERR [IN-USE]x", 0, POP3C_ERR, POP3C_CODE_NONE, NULL, "[IN-USE]x" },
	{ "-ERR [IN-USE", 0, POP3C_ERR, POP3C_CODE_NONE, NULL, "[IN-USE" },
	{ "+ ", 0, POP3C_CONTINUE, POP3C_CODE_NONE, NULL, "" },
	{ "+", 0, POP3C_CONTINUE, POP3C_CODE_NONE, NULL, "" },
	{ "+ [IN-USE]", 0, POP3C_CONTINUE, POP3C_CODE_NONE, NULL, "[IN-USE]" },
	{ "", -1, 0, 0, NULL, NULL },
	{ "OK", -1, 0, 0, NULL, NULL },
	{ "+O", -1, 0, 0, NULL, NULL },
	{ "+X", -1, 0, 0, NULL, NULL },
	{ "-ER", -1, 0, 0, NULL, NULL },
	{ "-", -1, 0, 0, NULL, NULL },
	{ " +OK", -1, 0, 0, NULL, NULL },
	{ "* OK", -1, 0, 0, NULL, NULL },
};

static void test_parse_reply_line(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		const struct reply_case *c = &reply_cases[i];
		struct pop3c_reply r;
		int ret = pop3c_parse_reply_line(c->line, strlen(c->line), &r);
		print_message("reply case %zu: %s\n", i, c->line);
		assert_int_equal(ret, c->ret);
		if (ret < 0)
			continue;
		assert_int_equal(r.status, c->status);
		assert_int_equal(r.code, c->code);
		assert_false(r.multiline);
		if (c->code_text == NULL) {
			assert_null(r.code_text);
		} else {
			assert_int_equal(r.code_len, strlen(c->code_text));
			assert_memory_equal(r.code_text, c->code_text, r.code_len);
		}
		assert_int_equal(r.text_len, strlen(c->text));
		assert_memory_equal(r.text, c->text, r.text_len);
	}
}

static void test_parse_capa(void **state)
{
	static const char *const good[] = {
		"TOP", "user", "UIDL", "PIPELINING", "STLS", "RESP-CODES",
		"AUTH-RESP-CODE", "SASL PLAIN  scram-sha-256 SCRAM-SHA-256 bad! "
		"XOAUTH2 ABCDEFGHIJKLMNOPQRSTUVWXYZ",
		"EXPIRE 31 USER", "LOGIN-DELAY 900", "IMPLEMENTATION popbox \x01 1.0",
		"X-UNKNOWN whatever", "", "   ",
	};
	static const char *const bad[] = {
		"EXPIRE", "EXPIRE soon", "EXPIRE 5 USER x", "EXPIRE 5 ADMIN",
		"EXPIRE -1", "EXPIRE 99999999999", "LOGIN-DELAY", "LOGIN-DELAY NEVER",
		"LOGIN-DELAY 5 5",
	};
	struct pop3c_caps caps = { 0 };
	const char *error;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		print_message("capa good %zu\n", i);
		assert_int_equal(pop3c_parse_capa_line(&caps, good[i],
						       strlen(good[i]), &error), 0);
	}
	assert_true(caps.top && caps.user && caps.uidl && caps.pipelining &&
		    caps.stls && caps.resp_codes && caps.auth_resp_code && caps.sasl);
	assert_string_equal(caps.sasl_mechs, "PLAIN SCRAM-SHA-256 XOAUTH2");
	assert_true(pop3c_caps_has_mech(&caps, "scram-sha-256"));
	assert_true(pop3c_caps_has_mech(&caps, "PLAIN"));
	assert_false(pop3c_caps_has_mech(&caps, "SCRAM-SHA-1"));
	assert_false(pop3c_caps_has_mech(&caps, "PLAI"));
	assert_false(pop3c_caps_has_mech(&caps, ""));
	assert_int_equal(caps.expire, POP3C_EXPIRE_DAYS);
	assert_int_equal(caps.expire_days, 31);
	assert_true(caps.expire_per_user);
	assert_true(caps.login_delay);
	assert_int_equal(caps.login_delay_seconds, 900);
	assert_false(caps.login_delay_per_user);
	assert_string_equal(caps.implementation, "popbox ? 1.0");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct pop3c_caps before = caps;
		print_message("capa bad %zu: %s\n", i, bad[i]);
		assert_int_equal(pop3c_parse_capa_line(&caps, bad[i],
						       strlen(bad[i]), &error), -1);
		assert_memory_equal(&before, &caps, sizeof(caps));
	}
	assert_int_equal(pop3c_parse_capa_line(&caps, S("expire never"), &error), 0);
	assert_int_equal(caps.expire, POP3C_EXPIRE_NEVER);
	assert_false(caps.expire_per_user);
	assert_int_equal(pop3c_parse_capa_line(&caps, S("EXPIRE 0"), &error), 0);
	assert_int_equal(caps.expire, POP3C_EXPIRE_DAYS);
	assert_int_equal(caps.expire_days, 0);
}

/* The mechanism list stops at its room, whole names only. */
static void test_capa_mechs_full(void **state)
{
	struct pop3c_caps caps = { 0 };
	char line[POP3C_LINE_MAX];
	size_t len = 0;
	const char *error;

	(void)state;
	len += (size_t)snprintf(line, sizeof(line), "SASL");
	for (int i = 0; i < 100; i++)
		len += (size_t)snprintf(line + len, sizeof(line) - len,
					" MECH-NUMBER-%03d", i);
	assert_int_equal(pop3c_parse_capa_line(&caps, line, len, &error), 0);
	size_t used = strlen(caps.sasl_mechs);
	assert_true(used < sizeof(caps.sasl_mechs));
	assert_true(used > sizeof(caps.sasl_mechs) - 20);
	assert_true(pop3c_caps_has_mech(&caps, "MECH-NUMBER-000"));
	assert_false(pop3c_caps_has_mech(&caps, "MECH-NUMBER-099"));
}

static void test_parse_stat_and_scan(void **state)
{
	uint32_t n;
	uint64_t size;

	(void)state;
	assert_int_equal(pop3c_parse_stat(S("2 320"), &n, &size), 0);
	assert_int_equal(n, 2);
	assert_int_equal(size, 320);
	assert_int_equal(pop3c_parse_stat(S("0 0"), &n, &size), 0);
	assert_int_equal(pop3c_parse_stat(S("2 320 octets"), &n, &size), 0);
	assert_int_equal(pop3c_parse_stat(S("4294967295 18446744073709551615"),
					  &n, &size), 0);
	assert_int_equal(n, UINT32_MAX);
	assert_int_equal(size, UINT64_MAX);
	static const char *const bad_stat[] = {
		"", "2", "2 ", " 2 320", "2  320", "2 x", "x 2", "2 320x",
		"-1 5", "4294967296 1", "1 18446744073709551616", "2\t320",
	};
	for (size_t i = 0; i < sizeof(bad_stat) / sizeof(bad_stat[0]); i++) {
		print_message("bad stat %zu\n", i);
		assert_int_equal(pop3c_parse_stat(bad_stat[i], strlen(bad_stat[i]),
						  &n, &size), -1);
	}
	assert_int_equal(pop3c_parse_scan_listing(S("1 120"), &n, &size), 0);
	assert_int_equal(n, 1);
	assert_int_equal(size, 120);
	assert_int_equal(pop3c_parse_scan_listing(S("7 0 extra info"), &n, &size), 0);
	assert_int_equal(pop3c_parse_scan_listing(S("0 120"), &n, &size), -1);
	assert_int_equal(pop3c_parse_scan_listing(S("1"), &n, &size), -1);
	assert_int_equal(pop3c_parse_scan_listing(S("1 -5"), &n, &size), -1);
	assert_int_equal(pop3c_parse_scan_listing(S("a 5"), &n, &size), -1);
	assert_int_equal(pop3c_parse_scan_listing(S(""), &n, &size), -1);
}

static void test_parse_uid_listing(void **state)
{
	char uid[POP3C_UID_MAX + 1], line[128];
	uint32_t n;
	size_t len;

	(void)state;
	assert_int_equal(pop3c_parse_uid_listing(S("1 whqtswO00WBw418f9t5JxYwZ"),
						 &n, uid, &len), 0);
	assert_int_equal(n, 1);
	assert_string_equal(uid, "whqtswO00WBw418f9t5JxYwZ");
	assert_int_equal(len, 24);
	assert_int_equal(pop3c_parse_uid_listing(S("12 !~  "), &n, uid, &len), 0);
	assert_string_equal(uid, "!~");
	/* 70 characters: the most. */
	memcpy(line, "3 ", 2);
	memset(line + 2, 'u', 70);
	assert_int_equal(pop3c_parse_uid_listing(line, 72, &n, uid, &len), 0);
	assert_int_equal(len, 70);
	line[72] = 'u';
	assert_int_equal(pop3c_parse_uid_listing(line, 73, &n, uid, &len), -1);
	static const char *const bad[] = {
		"", "1", "1 ", "0 abc", "x abc", "1 a b", "1  abc", " 1 abc",
		"1 a\x7f", "1 a\x01", "1 \xc3\xa9", "1 abc\t", "4294967296 a",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("bad uid %zu\n", i);
		assert_int_equal(pop3c_parse_uid_listing(bad[i], strlen(bad[i]),
							 &n, uid, &len), -1);
	}
	/* A NUL inside is refused, not taken as an end. */
	assert_int_equal(pop3c_parse_uid_listing("1 ab\0c", 6, &n, uid, &len), -1);
}

static void test_apop_timestamp(void **state)
{
	static const struct {
		const char *text;
		const char *want;
	} cases[] = {
		{ "ready <1.2@host>", "<1.2@host>" },
		{ "<a@b>", "<a@b>" },
		{ "x <no at> <ok@x> y", "<ok@x>" },
		{ "<a b@c> <d@e>", "<d@e>" },
		{ "<<a@b>", "<a@b>" },
		{ "ready", NULL },
		{ "<abc>", NULL },
		{ "<a@b", NULL },
		{ "<>", NULL },
		{ "<@>", "<@>" },
		{ "<a@\x80>", NULL },
		{ "a@b>", NULL },
	};
	size_t start, len;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *t = cases[i].text;
		int ret = pop3c_apop_timestamp(t, strlen(t), &start, &len);
		print_message("apop case %zu\n", i);
		if (cases[i].want == NULL) {
			assert_int_equal(ret, -1);
			continue;
		}
		assert_int_equal(ret, 0);
		assert_int_equal(len, strlen(cases[i].want));
		assert_memory_equal(t + start, cases[i].want, len);
	}
	/* Too long for a timestamp. */
	char big[POP3C_TIMESTAMP_MAX + 8];
	memset(big, 'a', sizeof(big));
	big[0] = '<';
	big[1] = '@';
	big[sizeof(big) - 1] = '>';
	assert_int_equal(pop3c_apop_timestamp(big, sizeof(big), &start, &len), -1);
	big[POP3C_TIMESTAMP_MAX - 1] = '>';
	assert_int_equal(pop3c_apop_timestamp(big, sizeof(big), &start, &len), 0);
	assert_int_equal(len, POP3C_TIMESTAMP_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_and_apop),
		cmocka_unit_test(test_alone_commands),
		cmocka_unit_test(test_retr_stuffing),
		cmocka_unit_test(test_cr_and_bare_lf),
		cmocka_unit_test(test_chunking_does_not_matter),
		cmocka_unit_test(test_pipelined_matching),
		cmocka_unit_test(test_window_one),
		cmocka_unit_test(test_protocol_errors),
		cmocka_unit_test(test_over_long_lines),
		cmocka_unit_test(test_long_message_line),
		cmocka_unit_test(test_truncated_replies),
		cmocka_unit_test(test_response_codes),
		cmocka_unit_test(test_stls),
		cmocka_unit_test(test_sasl_exchange),
		cmocka_unit_test(test_queue_validation),
		cmocka_unit_test(test_queue_grows),
		cmocka_unit_test(test_output_partial_send),
		cmocka_unit_test(test_parse_reply_line),
		cmocka_unit_test(test_parse_capa),
		cmocka_unit_test(test_capa_mechs_full),
		cmocka_unit_test(test_parse_stat_and_scan),
		cmocka_unit_test(test_parse_uid_listing),
		cmocka_unit_test(test_apop_timestamp),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
