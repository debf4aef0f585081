/*
 * test-maildir-name.c — Maildir file name parsing and UIDL derivation.
 *
 * Tables of real-world names (Postfix, Dovecot, Courier, qmail) and hostile
 * ones, with the expected base name, ",S=" and ",W=" values and UIDL form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "maildir-name.h"

struct name_case {
	const char *name;
	const char *base;
	int has_s;           /* -1: absent, else the expected value below */
	uint64_t s;
	int has_w;
	uint64_t w;
};

static const struct name_case name_cases[] = {
	{ "1700000000.V801I1a2bM345678.mail.example.org",
	  "1700000000.V801I1a2bM345678.mail.example.org", -1, 0, -1, 0 },
	{ "1700000000.M123456P789.host,S=1234,W=1260:2,S",
	  "1700000000.M123456P789.host,S=1234,W=1260", 1, 1234, 1, 1260 },
	{ "1700000000.M123456P789.host,S=1234,W=1260",
	  "1700000000.M123456P789.host,S=1234,W=1260", 1, 1234, 1, 1260 },
	{ "1700000000.M1P2.host,W=99,S=50:2,RS", "1700000000.M1P2.host,W=99,S=50",
	  1, 50, 1, 99 },
	/* Courier: sizes after the host. */
	{ "1700000000.M1P2_3.host,S=2048:2,", "1700000000.M1P2_3.host,S=2048", 1,
	  2048, -1, 0 },
	/* qmail, no info. */
	{ "1700000000.12345.host", "1700000000.12345.host", -1, 0, -1, 0 },
	/* Fields after ':' are flags, not sizes. */
	{ "base:2,S=5", "base", -1, 0, -1, 0 },
	/* Strict numbers: signs, spaces, hex, empty, letters are rejected. */
	{ "b,S=+5,W=-1", "b,S=+5,W=-1", 0, 0, 0, 0 },
	{ "b,S= 5,W=0x10", "b,S= 5,W=0x10", 0, 0, 0, 0 },
	{ "b,S=,W=12a", "b,S=,W=12a", 0, 0, 0, 0 },
	{ "b,S=007,W=0", "b,S=007,W=0", 1, 7, 1, 0 },
	/* Too large or overflowing: absent. */
	{ "b,S=99999999999999999999999,W=281474976710657", "", 0, 0, 0, 0 },
	{ "b,S=281474976710656", "b,S=281474976710656", 1, 281474976710656ULL,
	  -1, 0 },
	/* Duplicate fields: neither is trusted. */
	{ "b,S=1,S=2,W=3,W=3", "b,S=1,S=2,W=3,W=3", 0, 0, 0, 0 },
	/* Keys are exact. */
	{ "b,SS=1,w=2,S", "b,SS=1,w=2,S", -1, 0, -1, 0 },
	{ ":2,S", "", -1, 0, -1, 0 },
	{ "", "", -1, 0, -1, 0 },
	{ "a::b", "a", -1, 0, -1, 0 },
	{ ",", ",", -1, 0, -1, 0 },
	{ "x,S=3,", "x,S=3,", 1, 3, -1, 0 },
};

static void test_parse_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(name_cases) / sizeof(name_cases[0]); i++) {
		const struct name_case *c = &name_cases[i];
		struct maildir_name mn;
		size_t want_base = strlen(c->base);

		maildir_name_parse(c->name, strlen(c->name), &mn);
		/* "" as expected base means: the part before ':' is the name. */
		if (want_base == 0 && strchr(c->name, ':') == NULL)
			want_base = strlen(c->name);
		assert_int_equal(mn.base_len, want_base);
		assert_int_equal(mn.has_size, c->has_s == 1);
		assert_int_equal(mn.has_wire_size, c->has_w == 1);
		if (c->has_s == 1)
			assert_int_equal(mn.size, c->s);
		if (c->has_w == 1)
			assert_int_equal(mn.wire_size, c->w);
	}
}

/* Parsing never looks past len, even if the buffer goes on. */
static void test_parse_respects_len(void **state)
{
	struct maildir_name mn;

	(void)state;
	maildir_name_parse("abc,S=12:2,", 7, &mn);
	assert_int_equal(mn.base_len, 7);
	assert_true(mn.has_size);
	assert_int_equal(mn.size, 1);
	maildir_name_parse("abc:def", 2, &mn);
	assert_int_equal(mn.base_len, 2);
}

struct uidl_case {
	const char *base;
	const char *uidl;    /* NULL: hashed form expected */
};

static const struct uidl_case uidl_cases[] = {
	{ "1700000000.V801I1a2bM345678.mail.example.org",
	  "1700000000.V801I1a2bM345678.mail.example.org" },
	{ "1700000000.M123456P789.host,S=1234,W=1260",
	  "1700000000.M123456P789.host,S=1234,W=1260" },
	{ "a", "a" },
	{ "A-Z_a.z,0=9", "A-Z_a.z,0=9" },
	/* exactly 70 characters: direct */
	{ "0123456789012345678901234567890123456789012345678901234567890123456789",
	  "0123456789012345678901234567890123456789012345678901234567890123456789" },
	/* 71 characters: hashed */
	{ "01234567890123456789012345678901234567890123456789012345678901234567890",
	  NULL },
	{ "", NULL },
	{ "host\\057name", NULL },
	{ "a b", NULL },
	{ "a~b", NULL },
	{ "caf\xc3\xa9", NULL },
	{ "line\nbreak", NULL },
};

static bool all_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (strchr("0123456789abcdef", s[i]) == NULL || s[i] == '\0')
			return false;
	}
	return true;
}

static void test_uidl_table(void **state)
{
	char uidl[MAILDIR_NAME_UIDL_SIZE];
	const char *error;
	size_t len;

	(void)state;
	for (size_t i = 0; i < sizeof(uidl_cases) / sizeof(uidl_cases[0]); i++) {
		const struct uidl_case *c = &uidl_cases[i];
		size_t blen = strlen(c->base);

		assert_int_equal(maildir_name_uidl(c->base, blen, uidl, &len,
						   &error), 0);
		assert_int_equal(len, strlen(uidl));
		assert_int_equal(len, maildir_name_uidl_len(c->base, blen));
		assert_int_equal(maildir_name_uidl_is_direct(c->base, blen),
				 c->uidl != NULL);
		if (c->uidl != NULL) {
			assert_string_equal(uidl, c->uidl);
			continue;
		}
		assert_int_equal(len, 41);
		assert_int_equal(uidl[0], '~');
		assert_true(all_hex(uidl + 1, 40));
	}
}

/* The hashed form is pinned: it must never change (UIDLs are forever).
   SHA-256("") = e3b0c442 98fc1c14 9afbf4c8 996fb924 27ae41e4 ... */
static void test_uidl_hash_pinned(void **state)
{
	char uidl[MAILDIR_NAME_UIDL_SIZE];
	const char *error;
	size_t len;

	(void)state;
	assert_int_equal(maildir_name_uidl("", 0, uidl, &len, &error), 0);
	assert_string_equal(uidl, "~e3b0c44298fc1c149afbf4c8996fb92427ae41e4");
	/* SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a3 96177a9c... */
	assert_int_equal(maildir_name_uidl("abc", 3, uidl, &len, &error), 0);
	assert_string_equal(uidl, "abc");
	assert_int_equal(maildir_name_uidl("a~c", 3, uidl, &len, &error), 0);
	assert_int_equal(uidl[0], '~');
	/* Different names give different hashed UIDLs. */
	char other[MAILDIR_NAME_UIDL_SIZE];
	assert_int_equal(maildir_name_uidl("a~d", 3, other, &len, &error), 0);
	assert_string_not_equal(uidl, other);
}

/* Every UIDL is 1..70 characters in 0x21-0x7E (RFC 1939). */
static void test_uidl_charset(void **state)
{
	char base[100], uidl[MAILDIR_NAME_UIDL_SIZE];
	const char *error;
	size_t len;

	(void)state;
	for (int b = 0; b < 256; b++) {
		base[0] = 'x';
		base[1] = (char)b;
		assert_int_equal(maildir_name_uidl(base, 2, uidl, &len, &error),
				 0);
		assert_true(len >= 1 && len <= 70);
		for (size_t i = 0; i < len; i++)
			assert_true(uidl[i] >= 0x21 && uidl[i] <= 0x7e);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_parse_respects_len),
		cmocka_unit_test(test_uidl_table),
		cmocka_unit_test(test_uidl_hash_pinned),
		cmocka_unit_test(test_uidl_charset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
