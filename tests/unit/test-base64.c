/*
 * test-base64.c — strict base64: the RFC 4648 section 10 vectors both ways,
 * every kind of rejected input, the out_max bound (checked with a canary),
 * round trips of every length, and an exhaustive proof that each padded
 * final group decodes only in its one canonical spelling.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base64.h"

struct vector {
	const char *plain, *encoded;
};

/* RFC 4648 section 10. */
static const struct vector rfc_vectors[] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
};

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static void test_rfc_encode(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(rfc_vectors); i++) {
		const struct vector *v = &rfc_vectors[i];
		char out[16];

		assert_int_equal(base64_encoded_len(strlen(v->plain)),
				 strlen(v->encoded));
		memset(out, 'X', sizeof(out));
		base64_encode(v->plain, strlen(v->plain), out);
		assert_string_equal(out, v->encoded);
	}
}

static void test_rfc_decode(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(rfc_vectors); i++) {
		const struct vector *v = &rfc_vectors[i];
		uint8_t out[16];
		size_t len = 99;

		assert_int_equal(base64_decode(v->encoded, strlen(v->encoded), out,
					       sizeof(out), &len), 0);
		assert_int_equal(len, strlen(v->plain));
		assert_memory_equal(out, v->plain, len);
		assert_true(base64_decoded_max(strlen(v->encoded)) >= len);
	}
}

static void test_empty(void **state)
{
	size_t len = 99;
	char out[1] = { 'X' };

	(void)state;
	assert_int_equal(base64_decode("", 0, NULL, 0, &len), 0);
	assert_int_equal(len, 0);
	base64_encode("", 0, out);
	assert_string_equal(out, "");
	assert_int_equal(base64_decoded_max(0), 0);
}

struct bad_case {
	const char *text;
	size_t len; /* 0: strlen(text) */
	const char *why;
};

static const struct bad_case bad_cases[] = {
	{ "Z", 0, "length 1" },
	{ "Zg", 0, "length 2, no padding" },
	{ "Zg=", 0, "length 3" },
	{ "Zm9vY", 0, "length 5" },
	{ "Zm9vYg=", 0, "one pad short" },
	{ "Z===", 0, "three pads" },
	{ "====", 0, "only pads" },
	{ "Zg==Zg==", 0, "padding in the middle" },
	{ "Zg=a", 0, "pad before a character" },
	{ "Z=g=", 0, "pad between characters" },
	{ "=Zg=", 0, "pad first" },
	{ "Zh==", 0, "non-zero bits after one byte" },
	{ "Zm9=", 0, "non-zero bits after two bytes" },
	{ "Zm/=", 0, "non-zero bits after two bytes (/)" },
	{ "Z+==", 0, "non-zero bits after one byte (+)" },
	{ "Zm9v ", 0, "trailing space" },
	{ " Zm9", 0, "leading space" },
	{ "Zm9\n", 0, "newline" },
	{ "Zm\r\n", 0, "CRLF" },
	{ "Zm\t9", 0, "tab" },
	{ "Zg\0=", 4, "NUL inside" },
	{ "Zm9v\0\0\0\0", 8, "NULs after" },
	{ "-_==", 0, "URL-safe alphabet" },
	{ "Zm9v!A==", 0, "punctuation" },
	{ "Zm\xc3\xa9", 0, "non-ASCII" },
	{ "\xff\xff\xff\xff", 0, "high bytes" },
	{ "Zm9vYmFy=", 0, "pad after a full group" },
};

static void test_rejected(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->text);
		uint8_t out[16];
		size_t out_len = 99;

		if (base64_decode(c->text, len, out, sizeof(out), &out_len) != -1)
			fail_msg("case %zu (%s) decoded", i, c->why);
		assert_int_equal(out_len, 99);
	}
}

/* A result bigger than out_max fails and never touches out[out_max]. */
static void test_out_max(void **state)
{
	static const char *const texts[] = { "Zm9vYmFy", "Zm9vYmE=", "Zm9vYg==" };

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(texts); i++) {
		size_t need = 6 - i, len;

		for (size_t max = 0; max <= need; max++) {
			uint8_t buf[16];

			memset(buf, 0xAA, sizeof(buf));
			int r = base64_decode(texts[i], 8, buf, max, &len);
			assert_int_equal(r, max < need ? -1 : 0);
			for (size_t j = max; j < sizeof(buf); j++)
				assert_int_equal(buf[j], 0xAA);
		}
	}
}

static void test_decoded_max(void **state)
{
	(void)state;
	assert_int_equal(base64_decoded_max(4), 3);
	assert_int_equal(base64_decoded_max(8), 6);
	assert_int_equal(base64_decoded_max(1368), 1026);
	assert_int_equal(base64_encoded_len(1), 4);
	assert_int_equal(base64_encoded_len(3), 4);
	assert_int_equal(base64_encoded_len(4), 8);
	assert_int_equal(base64_encoded_len(32), 44);
}

/* Every length 0..300 of every byte value round-trips. */
static void test_round_trip(void **state)
{
	uint8_t in[300], back[300];
	char text[401];

	(void)state;
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 151 + 7);
	for (size_t n = 0; n <= sizeof(in); n++) {
		size_t len = 0;

		base64_encode(in, n, text);
		assert_int_equal(strlen(text), base64_encoded_len(n));
		assert_int_equal(base64_decode(text, strlen(text), back, n, &len), 0);
		assert_int_equal(len, n);
		assert_memory_equal(in, back, n);
	}
}

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/*
 * Every "xy==" and every "xyz=": it decodes exactly when re-encoding the
 * result gives the same text, i.e. only the canonical spelling is taken.
 */
static void test_padded_groups_canonical(void **state)
{
	size_t accepted = 0;

	(void)state;
	for (int a = 0; a < 64; a++) {
		for (int b = 0; b < 64; b++) {
			for (int c = -1; c < 64; c++) {
				char text[5] = { alphabet[a], alphabet[b],
						 c < 0 ? '=' : alphabet[c], '=', 0 };
				uint8_t out[3];
				char again[5];
				size_t len;

				if (base64_decode(text, 4, out, sizeof(out), &len) < 0)
					continue;
				accepted++;
				base64_encode(out, len, again);
				assert_string_equal(again, text);
			}
		}
	}
	/* One spelling per 1-byte and per 2-byte value. */
	assert_int_equal(accepted, 256 + 65536);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc_encode),
		cmocka_unit_test(test_rfc_decode),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_rejected),
		cmocka_unit_test(test_out_max),
		cmocka_unit_test(test_decoded_max),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_padded_groups_canonical),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
