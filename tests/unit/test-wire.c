/*
 * test-wire.c — the wire size counter and the RETR/TOP encoder.
 *
 * A table of messages with their exact expected wire output, each checked
 * whole, in 1-byte pieces and split at every position; then random messages
 * over a hostile alphabet against a slow, obviously-correct reference model.
 * Invariant checked everywhere: wire_size_final() equals the length of the
 * RETR output with the terminator removed and the dots un-stuffed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wire.h"

struct wire_case {
	const char *in;
	size_t in_len;
	int64_t top;         /* -1: RETR */
	const char *out;     /* including ".\r\n" */
	size_t out_len;
};

#define S(x) x, sizeof(x) - 1
static const struct wire_case cases[] = {
	/* RETR */
	{ S(""), -1, S(".\r\n") },
	{ S("a"), -1, S("a\r\n.\r\n") },
	{ S("a\n"), -1, S("a\r\n.\r\n") },
	{ S("a\r\n"), -1, S("a\r\n.\r\n") },
	{ S("\n"), -1, S("\r\n.\r\n") },
	{ S("\r"), -1, S("\r\r\n.\r\n") },
	{ S("a\r"), -1, S("a\r\r\n.\r\n") },
	{ S("a\rb\n"), -1, S("a\rb\r\n.\r\n") },
	{ S("x\r\r\n"), -1, S("x\r\r\n.\r\n") },
	{ S("\r\r\r"), -1, S("\r\r\r\r\n.\r\n") },
	{ S("a\r\nb\nc"), -1, S("a\r\nb\r\nc\r\n.\r\n") },
	{ S("\n\n\r\n\n"), -1, S("\r\n\r\n\r\n\r\n.\r\n") },
	{ S(".x\n..\n.\n"), -1, S("..x\r\n...\r\n..\r\n.\r\n") },
	{ S("."), -1, S("..\r\n.\r\n") },
	{ S("a\n.b"), -1, S("a\r\n..b\r\n.\r\n") },
	{ S("a.\n b.\r\n.\r\n"), -1, S("a.\r\n b.\r\n..\r\n.\r\n") },
	{ S("\r.\n"), -1, S("\r.\r\n.\r\n") },
	{ S("a\0b\n\0"), -1, S("a\0b\r\n\0\r\n.\r\n") },
	{ S("\0\0\n"), -1, S("\0\0\r\n.\r\n") },
	{ S("\xff\x80\n"), -1, S("\xff\x80\r\n.\r\n") },
	/* TOP */
	{ S("H: 1\n\nb1\nb2\n"), 0, S("H: 1\r\n\r\n.\r\n") },
	{ S("H: 1\n\nb1\nb2\n"), 1, S("H: 1\r\n\r\nb1\r\n.\r\n") },
	{ S("H: 1\n\nb1\nb2\n"), 2, S("H: 1\r\n\r\nb1\r\nb2\r\n.\r\n") },
	{ S("H: 1\n\nb1\nb2\n"), 5, S("H: 1\r\n\r\nb1\r\nb2\r\n.\r\n") },
	{ S("H: 1\nH: 2\n"), 0, S("H: 1\r\nH: 2\r\n.\r\n") },
	{ S("H: 1\nH: 2"), 3, S("H: 1\r\nH: 2\r\n.\r\n") },
	{ S("H\r\n\r\nb\r\n"), 0, S("H\r\n\r\n.\r\n") },
	{ S("H\n\r\r\nb\n"), 0, S("H\r\n\r\r\nb\r\n.\r\n") },
	{ S("\nbody\n"), 0, S("\r\n.\r\n") },
	{ S("\nbody\n"), 1, S("\r\nbody\r\n.\r\n") },
	{ S("H\n\n.a\nb\n"), 1, S("H\r\n\r\n..a\r\n.\r\n") },
	{ S("H\n\nb"), 1, S("H\r\n\r\nb\r\n.\r\n") },
	{ S("H\n\nb\r"), 1, S("H\r\n\r\nb\r\r\n.\r\n") },
	{ S("H\n\nb1\n"), 2, S("H\r\n\r\nb1\r\n.\r\n") },
	{ S("H\n\n\n\nx\n"), 1, S("H\r\n\r\n\r\n.\r\n") },
	{ S("H\n\n"), 0, S("H\r\n\r\n.\r\n") },
	{ S("H\n\r"), 0, S("H\r\n\r\r\n.\r\n") },
	{ S(""), 0, S(".\r\n") },
	{ S(".H\n\n.\n"), 1, S("..H\r\n\r\n..\r\n.\r\n") },
};

/* Encodes in[0..len) in pieces cut at cuts[0..ncuts) (ascending). */
static size_t encode_split(const uint8_t *in, size_t len, int64_t top,
			   const size_t *cuts, size_t ncuts, uint8_t *out)
{
	struct wire_encoder enc;
	size_t pos = 0, o = 0;

	wire_encoder_init(&enc, top);
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : len;
		size_t n = wire_encode(&enc, in + pos, end - pos, out + o);

		assert_true(n <= WIRE_ENCODE_MAX(end - pos));
		o += n;
		pos = end;
	}
	size_t n = wire_encode_finish(&enc, out + o);
	assert_true(n <= WIRE_FINISH_MAX);
	return o + n;
}

static uint64_t size_split(const uint8_t *in, size_t len, const size_t *cuts,
			   size_t ncuts)
{
	struct wire_size ws;
	size_t pos = 0;

	wire_size_init(&ws);
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : len;

		wire_size_update(&ws, in + pos, end - pos);
		pos = end;
	}
	return wire_size_final(&ws);
}

/* Length of RETR output without ".\r\n" and with dots un-stuffed. */
static size_t unstuffed_len(const uint8_t *out, size_t len)
{
	size_t n = 0;

	assert_true(len >= 3);
	assert_memory_equal(out + len - 3, ".\r\n", 3);
	len -= 3;
	for (size_t i = 0; i < len; i++) {
		bool line_start = i == 0 || out[i - 1] == '\n';

		if (line_start && out[i] == '.') {
			assert_true(i + 1 < len && out[i + 1] == '.');
			continue; /* the stuffed dot */
		}
		n++;
	}
	return n;
}

/* Checks one message in every way it can be cut. */
static void check_message(const uint8_t *in, size_t len, int64_t top,
			  const uint8_t *want, size_t want_len)
{
	size_t cap = WIRE_ENCODE_MAX(len) + WIRE_FINISH_MAX + 16;
	uint8_t *out = malloc(cap);
	size_t *cuts = malloc((len + 1) * sizeof(*cuts));
	size_t n;

	assert_non_null(out);
	assert_non_null(cuts);
	/* whole */
	n = encode_split(in, len, top, NULL, 0, out);
	assert_int_equal(n, want_len);
	assert_memory_equal(out, want, want_len);
	/* one byte at a time */
	for (size_t i = 0; i < len; i++)
		cuts[i] = i;
	n = encode_split(in, len, top, cuts, len, out);
	assert_int_equal(n, want_len);
	assert_memory_equal(out, want, want_len);
	if (top < 0)
		assert_int_equal(size_split(in, len, cuts, len),
				 unstuffed_len(want, want_len));
	/* two pieces, split at every position */
	for (size_t k = 0; k <= len; k++) {
		n = encode_split(in, len, top, &k, 1, out);
		assert_int_equal(n, want_len);
		assert_memory_equal(out, want, want_len);
		if (top < 0)
			assert_int_equal(size_split(in, len, &k, 1),
					 unstuffed_len(want, want_len));
	}
	free(cuts);
	free(out);
}

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct wire_case *c = &cases[i];

		check_message((const uint8_t *)c->in, c->in_len, c->top,
			      (const uint8_t *)c->out, c->out_len);
	}
}

/*
 * The reference: split into lines at LF; a terminated line drops one CR
 * before its LF; each line is sent with a dot doubled and CRLF.  TOP keeps
 * the lines up to and including the first empty terminated line, then top
 * more lines.
 */
static size_t reference(const uint8_t *in, size_t len, int64_t top,
			uint8_t *out)
{
	size_t o = 0, start = 0;
	bool in_body = false;
	int64_t left = top;

	while (start < len) {
		size_t end = start;
		while (end < len && in[end] != '\n')
			end++;
		bool term = end < len;
		size_t clen = end - start;
		if (term && clen > 0 && in[end - 1] == '\r')
			clen--;
		if (top >= 0 && in_body && left-- == 0)
			break;
		if (clen > 0 && in[start] == '.')
			out[o++] = '.';
		memcpy(out + o, in + start, clen);
		o += clen;
		out[o++] = '\r';
		out[o++] = '\n';
		if (!in_body && term && clen == 0)
			in_body = true;
		start = term ? end + 1 : end;
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}

static void test_random_vs_reference(void **state)
{
	static const uint8_t alphabet[] = { 'a', '.', '\r', '\n', '\0', 'H' };
	uint8_t in[80], want[2 * sizeof(in) + 8];

	(void)state;
	srandom(12345);
	for (int iter = 0; iter < 20000; iter++) {
		size_t len = (size_t)random() % sizeof(in);
		int64_t top = (int64_t)(random() % 5) - 1;

		for (size_t i = 0; i < len; i++)
			in[i] = alphabet[random() % sizeof(alphabet)];
		size_t n = reference(in, len, top, want);
		check_message(in, len, top, want, n);
	}
}

/* After the TOP limit the encoder ignores input, even many more chunks. */
static void test_top_done_ignores_input(void **state)
{
	struct wire_encoder enc;
	uint8_t out[64];

	(void)state;
	wire_encoder_init(&enc, 0);
	assert_int_equal(wire_encode(&enc, "H\n\n", 3, out), 5);
	assert_true(enc.done);
	assert_int_equal(wire_encode(&enc, "more\n", 5, out), 0);
	assert_int_equal(wire_encode_finish(&enc, out), 3);
	assert_memory_equal(out, ".\r\n", 3);
}

/* The worst case for the bounds: every byte expands. */
static void test_bounds(void **state)
{
	static const char *worst[] = { "\n\n\n\n", ".\n.\n.\n", "\r", "a\r" };
	uint8_t out[64];
	struct wire_encoder enc;

	(void)state;
	for (size_t i = 0; i < sizeof(worst) / sizeof(worst[0]); i++) {
		size_t len = strlen(worst[i]);

		wire_encoder_init(&enc, -1);
		assert_true(wire_encode(&enc, worst[i], len, out) <=
			    WIRE_ENCODE_MAX(len));
		assert_true(wire_encode_finish(&enc, out) <= WIRE_FINISH_MAX);
	}
	/* "a\r" ends in a bare CR: finish writes CRLF and ".\r\n" = 5. */
	wire_encoder_init(&enc, -1);
	wire_encode(&enc, "a\r", 2, out);
	assert_int_equal(wire_encode_finish(&enc, out), 5);
}

/* A big plain message through the encoder in 64 KiB pieces. */
static void test_large(void **state)
{
	const size_t len = 1 << 20, chunk = 65536;
	uint8_t *in = malloc(len), *out = malloc(WIRE_ENCODE_MAX(chunk));
	struct wire_encoder enc;
	struct wire_size ws;
	size_t total = 0;

	(void)state;
	assert_non_null(in);
	assert_non_null(out);
	for (size_t i = 0; i < len; i++)
		in[i] = i % 73 == 72 ? '\n' : (uint8_t)('a' + i % 26);
	wire_encoder_init(&enc, -1);
	wire_size_init(&ws);
	for (size_t pos = 0; pos < len; pos += chunk) {
		total += wire_encode(&enc, in + pos, chunk, out);
		wire_size_update(&ws, in + pos, chunk);
	}
	total += wire_encode_finish(&enc, out);
	/* 1 MiB with one LF per 73 bytes: 14364 LFs, each gains a CR; the
	   message ends mid-line so it gets CRLF; then ".\r\n". */
	assert_int_equal(wire_size_final(&ws), len + len / 73 + 2);
	assert_int_equal(total, len + len / 73 + 2 + 3);
	free(in);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_random_vs_reference),
		cmocka_unit_test(test_top_done_ignores_input),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
