/*
 * test-mail-lines.c — a received message turned into its stored form, and
 * the disk and wire sizes counted on the way (lib/mail-lines).
 *
 * A table of inputs with their exact stored bytes, each checked whole, in
 * 1-byte pieces and split at every position (a CR at the end of a piece is
 * the case that matters); then random messages over the alphabet
 * {CR, LF, '.', 'a', NUL} against a slow reference.  Invariants checked
 * everywhere: the disk size is the number of bytes written; the wire size
 * equals lib/wire.c's count over those bytes and the un-stuffed length of
 * the RETR encoder's output (what LIST says and what RETR sends).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mail-lines.h"
#include "wire.h"

struct lines_case {
	const char *in;
	size_t in_len;
	const char *out;
	size_t out_len;
	uint64_t wire;
};

#define S(x) x, sizeof(x) - 1
static const struct lines_case cases[] = {
	{ S(""), S(""), 0 },
	{ S("a"), S("a"), 3 },
	{ S("a\n"), S("a\n"), 3 },
	{ S("a\r\n"), S("a\n"), 3 },
	{ S("\r\n"), S("\n"), 2 },
	{ S("\r"), S("\r"), 3 },
	{ S("a\r"), S("a\r"), 4 },
	{ S("a\rb\r\n"), S("a\rb\n"), 5 },
	/* CR CR LF: the first CR is data, the second ends the line; on
	   disk "\r\n", which the wire reads as one line end. */
	{ S("x\r\r\n"), S("x\r\n"), 3 },
	{ S("\r\r\r"), S("\r\r\r"), 5 },
	{ S("a\r\nb\nc"), S("a\nb\nc"), 9 },
	{ S("\n\r\n\r\n\n"), S("\n\n\n\n"), 8 },
	{ S(".x\r\n..\r\n"), S(".x\n..\n"), 8 },
	{ S("a\0b\r\n\0"), S("a\0b\n\0"), 8 },
	{ S("\xff\r\x80\r\n"), S("\xff\r\x80\n"), 5 },
	{ S("H: 1\r\n\r\nbody\r\nno newline"),
	  S("H: 1\n\nbody\nno newline"), 26 },
};

/* Converts in[0..len) in pieces of chunk bytes (or split once at split,
   if split > 0).  Returns the malloc'd output and its length. */
static uint8_t *convert(const uint8_t *in, size_t len, size_t chunk,
			size_t split, size_t *out_len, struct mail_lines *ml)
{
	uint8_t *out = malloc(MAIL_LINES_OUT_MAX(len) + 1);
	size_t o = 0, pos = 0;

	assert_non_null(out);
	mail_lines_init(ml);
	while (pos < len) {
		size_t n = split > 0 ? (pos == 0 ? split : len - split) :
				       (len - pos < chunk ? len - pos : chunk);
		size_t w = mail_lines_convert(ml, in + pos, n, out + o);
		assert_true(w <= MAIL_LINES_OUT_MAX(n));
		o += w;
		pos += n;
	}
	o += mail_lines_finish(ml, out + o);
	*out_len = o;
	return out;
}

/* The RETR output's length without the terminator and the stuffing. */
static uint64_t encoded_len(const uint8_t *data, size_t len)
{
	struct wire_encoder enc;
	uint8_t *out = malloc(WIRE_ENCODE_MAX(len) + WIRE_FINISH_MAX);
	size_t n, dots = 0;

	assert_non_null(out);
	wire_encoder_init(&enc, -1);
	n = wire_encode(&enc, data, len, out);
	n += wire_encode_finish(&enc, out + n);
	assert_true(n >= 3);
	for (size_t i = 0; i + 3 < n; i++) {
		if (out[i] == '.' && (i == 0 || out[i - 1] == '\n'))
			dots++;
	}
	free(out);
	return n - 3 - dots;
}

static void check_invariants(const struct mail_lines *ml, const uint8_t *out,
			     size_t out_len)
{
	struct wire_size ws;

	assert_int_equal(mail_lines_disk_size(ml), out_len);
	wire_size_init(&ws);
	wire_size_update(&ws, out, out_len);
	assert_int_equal(mail_lines_wire_size(ml), wire_size_final(&ws));
	assert_int_equal(mail_lines_wire_size(ml), encoded_len(out, out_len));
}

static void check_case(const struct lines_case *c, size_t chunk, size_t split)
{
	struct mail_lines ml;
	size_t n;
	uint8_t *out = convert((const uint8_t *)c->in, c->in_len, chunk, split,
			       &n, &ml);

	assert_int_equal(n, c->out_len);
	assert_memory_equal(out, c->out, n);
	assert_int_equal(mail_lines_wire_size(&ml), c->wire);
	check_invariants(&ml, out, n);
	free(out);
}

static void test_table_whole(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(&cases[i], cases[i].in_len + 1, 0);
}

static void test_table_bytewise(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(&cases[i], 1, 0);
}

static void test_table_every_split(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (size_t split = 1; split < cases[i].in_len; split++)
			check_case(&cases[i], 0, split);
	}
}

/* A CR ending one piece and an LF starting the next make one LF. */
static void test_cr_at_piece_end(void **state)
{
	struct mail_lines ml;
	uint8_t out[8];
	size_t n;

	(void)state;
	mail_lines_init(&ml);
	n = mail_lines_convert(&ml, "ab\r", 3, out);
	assert_int_equal(n, 2); /* the CR is held back */
	n += mail_lines_convert(&ml, "\ncd", 3, out + n);
	n += mail_lines_finish(&ml, out + n);
	assert_int_equal(n, 5);
	assert_memory_equal(out, "ab\ncd", 5);
	/* A held CR followed by something else is written as data. */
	mail_lines_init(&ml);
	n = mail_lines_convert(&ml, "\r", 1, out);
	assert_int_equal(n, 0);
	n += mail_lines_convert(&ml, "\r", 1, out + n);
	assert_int_equal(n, 1);
	n += mail_lines_convert(&ml, "x", 1, out + n);
	n += mail_lines_finish(&ml, out + n);
	assert_int_equal(n, 3);
	assert_memory_equal(out, "\r\rx", 3);
	/* An empty piece changes nothing. */
	assert_int_equal(mail_lines_convert(&ml, "", 0, out), 0);
}

/* The slow reference: CR LF -> LF, everything else as it is. */
static size_t reference(const uint8_t *in, size_t len, uint8_t *out)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
			continue;
		out[o++] = in[i];
	}
	return o;
}

static void test_random_against_reference(void **state)
{
	static const uint8_t alphabet[] = { '\r', '\n', '.', 'a', '\0' };
	uint8_t in[64], want[64];
	struct mail_lines ml;

	(void)state;
	srand(5);
	for (int round = 0; round < 20000; round++) {
		size_t len = (size_t)rand() % sizeof(in), n;
		size_t chunk = (size_t)rand() % 7 + 1;

		for (size_t i = 0; i < len; i++)
			in[i] = alphabet[rand() % (int)sizeof(alphabet)];
		size_t wlen = reference(in, len, want);
		uint8_t *out = convert(in, len, chunk, 0, &n, &ml);
		assert_int_equal(n, wlen);
		assert_memory_equal(out, want, n);
		check_invariants(&ml, out, n);
		free(out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_whole),
		cmocka_unit_test(test_table_bytewise),
		cmocka_unit_test(test_table_every_split),
		cmocka_unit_test(test_cr_at_piece_end),
		cmocka_unit_test(test_random_against_reference),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
