/*
 * test-password.c — password schemes: known vectors from an independent
 * implementation (openssl passwd), hash+verify per scheme, refused entries,
 * the plaintext accessor, the dummy hash and the crypt counter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "password.h"

struct verify_case {
	const char *stored;
	const char *password;
	int expect;
};

/* $6$/$5$/$1$ vectors made by `openssl passwd`, $2y$ from PHP's manual. */
static const struct verify_case verify_cases[] = {
	{ "{SHA512-CRYPT}$6$saltsalt$rD9fW1BwIrjB90WCgCTdIQc3phTBhf04I6Iw/XlgKD9E9aEbzqGZipjiFxGo/4wWXDA6jV6/vZO.kKdDSfUJb0", "pencil", 1 },
	{ "{SHA512-CRYPT}$6$saltsalt$rD9fW1BwIrjB90WCgCTdIQc3phTBhf04I6Iw/XlgKD9E9aEbzqGZipjiFxGo/4wWXDA6jV6/vZO.kKdDSfUJb0", "Pencil", 0 },
	{ "{sha512-crypt}$6$saltsalt$rD9fW1BwIrjB90WCgCTdIQc3phTBhf04I6Iw/XlgKD9E9aEbzqGZipjiFxGo/4wWXDA6jV6/vZO.kKdDSfUJb0", "pencil", 1 },
	{ "{SHA512-CRYPT}$6$rounds=6000$abcdefgh$VJ6N1EIawf/rHrxwRoMtgA4whrLwdLmrR4wZQV5339RchWgNDWH37VBvRrpRbkWJU/VXGL7gy033koLeZQmPC1", "pencil", 1 },
	{ "{SHA256-CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/", "pencil", 1 },
	{ "{SHA256-CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/", "pencil2", 0 },
	{ "{MD5-CRYPT}$1$saltsalt$wCrc3hcrR95SV83Xh8Z.41", "pencil", 1 },
	{ "{MD5-CRYPT}$1$saltsalt$wCrc3hcrR95SV83Xh8Z.41", "pen", 0 },
	{ "{BLF-CRYPT}$2y$07$BCryptRequires22Chrcte/VlQH0piJtjXl.0t1XkA8pw9dMXTpOq", "rasmuslerdorf", 1 },
	{ "{BLF-CRYPT}$2y$07$BCryptRequires22Chrcte/VlQH0piJtjXl.0t1XkA8pw9dMXTpOq", "rasmus", 0 },
	{ "{YESCRYPT}$y$j9T$saltsaltsalt$GXprhDM3oVIKhFhAJf/udtdAwaP7GuZghybRfeHA.oA", "pencil", 1 },
	{ "{YESCRYPT}$y$j9T$saltsaltsalt$GXprhDM3oVIKhFhAJf/udtdAwaP7GuZghybRfeHA.oA", "", 0 },
	/* No {SCHEME}: CRYPT, any strong crypt format. */
	{ "$6$saltsalt$rD9fW1BwIrjB90WCgCTdIQc3phTBhf04I6Iw/XlgKD9E9aEbzqGZipjiFxGo/4wWXDA6jV6/vZO.kKdDSfUJb0", "pencil", 1 },
	{ "{CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/", "pencil", 1 },
	{ "{CRYPT}$1$saltsalt$wCrc3hcrR95SV83Xh8Z.41", "pencil", 1 },
	/* DES and other weak or unknown formats are refused. */
	{ "{CRYPT}abJnggxhB/yWI", "pencil", -1 },
	{ "abJnggxhB/yWI", "pencil", -1 },
	{ "{CRYPT}_J9..CCCCXBrJUJV154M", "pencil", -1 },
	{ "{CRYPT}$3$$8846f7eaee8fb117ad06bdd830b7586c", "password", -1 },
	{ "{CRYPT}$sha1$40000$jtNX3nZ2$hBNaIXkt4wBI2o5rsi8KejSjNqIq", "pencil", -1 },
	/* The hash prefix must match the scheme. */
	{ "{SHA512-CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/", "pencil", -1 },
	{ "{YESCRYPT}$6$saltsalt$rD9fW1BwIrjB90WCgCTdIQc3phTBhf04I6Iw/XlgKD9E9aEbzqGZipjiFxGo/4wWXDA6jV6/vZO.kKdDSfUJb0", "pencil", -1 },
	{ "{BLF-CRYPT}$2a$07$BCryptRequires22Chrcte/VlQH0piJtjXl.0t1XkA8pw9dMXTpOq", "rasmuslerdorf", -1 },
	/* Malformed entries. */
	{ "{SHA512-CRYPT}", "pencil", -1 },
	{ "{SHA512-CRYPT}$6$", "pencil", -1 },
	{ "{SHA512-CRYPT}$6$saltsalt$rD9fW1BwIrjB90WCgCTdIQc3phTBhf04I6Iw/XlgKD9E9aEbzqGZipjiFxGo/4wWXDA6jV6/vZO.kKdDSfUJb0XX", "pencil", -1 },
	{ "{SHA512-CRYPT$6$saltsalt$x", "pencil", -1 },
	{ "{FOO}bar", "bar", -1 },
	{ "{}bar", "bar", -1 },
	{ "{AVERYLONGSCHEMENAMETHATISLONGERTHANANYREALONE}x", "x", -1 },
	/* Plaintext: compared as digests, any length. */
	{ "{PLAIN}tanstaaf", "tanstaaf", 1 },
	{ "{CLEAR}tanstaaf", "tanstaaf", 1 },
	{ "{plain}tanstaaf", "tanstaaf", 1 },
	{ "{PLAIN}tanstaaf", "tanstaa", 0 },
	{ "{PLAIN}tanstaaf", "tanstaaff", 0 },
	{ "{PLAIN}tanstaaf", "", 0 },
	{ "{PLAIN}", "", 1 },
};

static void test_verify_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(verify_cases) / sizeof(verify_cases[0]); i++) {
		const struct verify_case *c = &verify_cases[i];
		int r = password_verify(c->stored, c->password);

		if (r != c->expect)
			fail_msg("case %zu: %s / %s: got %d, want %d", i,
				 c->stored, c->password, r, c->expect);
	}
}

/* The last byte of a good hash changed: same length, constant-time compare. */
static void test_verify_one_byte_off(void **state)
{
	char stored[] = "{SHA256-CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/";

	(void)state;
	assert_int_equal(password_verify(stored, "pencil"), 1);
	stored[strlen(stored) - 1] = '.';
	assert_int_equal(password_verify(stored, "pencil"), 0);
}

static void test_verify_too_long(void **state)
{
	char *pw = malloc(PASSWORD_MAX + 2);
	char *hash = NULL;
	const char *error;

	(void)state;
	assert_non_null(pw);
	memset(pw, 'a', PASSWORD_MAX);
	pw[PASSWORD_MAX] = '\0';
	assert_int_equal(password_hash("SHA256-CRYPT", pw, &hash, &error), 0);
	assert_int_equal(password_verify(hash, pw), 1);
	pw[PASSWORD_MAX] = 'a';
	pw[PASSWORD_MAX + 1] = '\0';
	assert_int_equal(password_verify(hash, pw), -1);
	free(hash);
	hash = NULL;
	assert_int_equal(password_hash("SHA256-CRYPT", pw, &hash, &error), -1);
	assert_string_equal(error, "password too long");
	free(hash);
	free(pw);
}

struct hash_case {
	const char *scheme;
	const char *prefix; /* of the result */
};

static const struct hash_case hash_cases[] = {
	{ "SHA512-CRYPT", "{SHA512-CRYPT}$6$" },
	{ "SHA256-CRYPT", "{SHA256-CRYPT}$5$" },
	{ "BLF-CRYPT", "{BLF-CRYPT}$2b$10$" },
	{ "YESCRYPT", "{YESCRYPT}$y$" },
	{ "yescrypt", "{YESCRYPT}$y$" },
	{ "PLAIN", "{PLAIN}correct horse" },
	{ "CLEAR", "{CLEAR}correct horse" },
};

static void test_hash_verify_each_scheme(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(hash_cases) / sizeof(hash_cases[0]); i++) {
		const struct hash_case *c = &hash_cases[i];
		char *hash = NULL, *hash2 = NULL;
		const char *error = NULL;

		assert_int_equal(password_hash(c->scheme, "correct horse", &hash,
					       &error), 0);
		if (strncmp(hash, c->prefix, strlen(c->prefix)) != 0)
			fail_msg("%s: %s lacks prefix %s", c->scheme, hash, c->prefix);
		assert_int_equal(password_verify(hash, "correct horse"), 1);
		assert_int_equal(password_verify(hash, "correct horsE"), 0);
		assert_int_equal(password_verify(hash, ""), 0);
		/* A fresh salt each time (plaintext has none). */
		assert_int_equal(password_hash(c->scheme, "correct horse", &hash2,
					       &error), 0);
		if (strstr(c->scheme, "CRYPT") != NULL ||
		    strcmp(c->scheme, "yescrypt") == 0)
			assert_string_not_equal(hash, hash2);
		free(hash);
		free(hash2);
	}
}

struct hash_error_case {
	const char *scheme;
	const char *password;
	const char *error;
};

static const struct hash_error_case hash_error_cases[] = {
	{ "MD5-CRYPT", "x", "this scheme can only verify old hashes; "
			    "choose YESCRYPT, SHA512-CRYPT or BLF-CRYPT" },
	{ "CRYPT", "x", "this scheme can only verify old hashes; "
			"choose YESCRYPT, SHA512-CRYPT or BLF-CRYPT" },
	{ "DES", "x", "unknown password scheme" },
	{ "", "x", "unknown password scheme" },
	{ "{PLAIN}", "x", "unknown password scheme" },
	{ "PLAIN", "a:b", "a plaintext password may not contain ':' or "
			  "control characters" },
	{ "PLAIN", "a\tb", "a plaintext password may not contain ':' or "
			   "control characters" },
	{ "CLEAR", "a\x7f", "a plaintext password may not contain ':' or "
			    "control characters" },
};

static void test_hash_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(hash_error_cases) / sizeof(hash_error_cases[0]); i++) {
		const struct hash_error_case *c = &hash_error_cases[i];
		char *hash = NULL;
		const char *error = NULL;

		assert_int_equal(password_hash(c->scheme, c->password, &hash,
					       &error), -1);
		assert_null(hash);
		assert_string_equal(error, c->error);
	}
}

static void test_plain_secret(void **state)
{
	(void)state;
	assert_string_equal(password_plain_secret("{PLAIN}tanstaaf"), "tanstaaf");
	assert_string_equal(password_plain_secret("{CLEAR}x:y"), "x:y");
	assert_string_equal(password_plain_secret("{PLAIN}"), "");
	assert_null(password_plain_secret("{SHA512-CRYPT}$6$a$b"));
	assert_null(password_plain_secret("tanstaaf"));
	assert_null(password_plain_secret("{FOO}x"));
}

static void test_is_crypt(void **state)
{
	(void)state;
	assert_true(password_is_crypt("$y$j9T$saltsaltsalt$GXprhDM3oVIKhFhAJf/udtdAwaP7GuZghybRfeHA.oA"));
	assert_true(password_is_crypt("{BLF-CRYPT}$2b$10$x"));
	assert_false(password_is_crypt("{BLF-CRYPT}$6$x"));
	assert_false(password_is_crypt("{PLAIN}x"));
	assert_false(password_is_crypt("abJnggxhB/yWI"));
}

struct dummy_case {
	const char *model;
	const char *prefix; /* the dummy keeps scheme, cost and salt form */
};

static const struct dummy_case dummy_cases[] = {
	{ NULL, "{SHA512-CRYPT}$6$" },
	{ "{PLAIN}x", "{SHA512-CRYPT}$6$" },
	{ "{CRYPT}abJnggxhB/yWI", "{SHA512-CRYPT}$6$" },
	{ "{SHA512-CRYPT}$6$rounds=6000$abcdefgh$VJ6N1EIawf/rHrxwRoMtgA4whrLwdLmrR4wZQV5339RchWgNDWH37VBvRrpRbkWJU/VXGL7gy033koLeZQmPC1",
	  "{SHA512-CRYPT}$6$rounds=6000$abcdefgh$" },
	{ "{BLF-CRYPT}$2y$07$BCryptRequires22Chrcte/VlQH0piJtjXl.0t1XkA8pw9dMXTpOq",
	  "{BLF-CRYPT}$2y$07$" },
	{ "$y$j9T$saltsaltsalt$GXprhDM3oVIKhFhAJf/udtdAwaP7GuZghybRfeHA.oA",
	  "{CRYPT}$y$j9T$saltsaltsalt$" },
};

static void test_dummy(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(dummy_cases) / sizeof(dummy_cases[0]); i++) {
		const struct dummy_case *c = &dummy_cases[i];
		char *dummy = NULL;
		const char *error;

		assert_int_equal(password_dummy_setting(c->model, &dummy, &error), 0);
		if (strncmp(dummy, c->prefix, strlen(c->prefix)) != 0)
			fail_msg("model %s: dummy %s lacks %s", c->model, dummy,
				 c->prefix);
		/* Usable (runs crypt) and matches no ordinary password. */
		unsigned long before = password_crypt_count();
		assert_int_equal(password_verify(dummy, "pencil"), 0);
		assert_int_equal(password_crypt_count(), before + 1);
		if (c->model != NULL && password_is_crypt(c->model))
			assert_string_not_equal(strchr(dummy, '}') + 1,
						strchr(c->model, '$'));
		free(dummy);
	}
}

/* One crypt per crypt verification, none for plaintext or refused entries. */
static void test_crypt_count(void **state)
{
	unsigned long n = password_crypt_count();

	(void)state;
	password_verify("{SHA256-CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/", "x");
	assert_int_equal(password_crypt_count(), n + 1);
	password_verify("{PLAIN}x", "x");
	password_verify("{CRYPT}abJnggxhB/yWI", "x");
	assert_int_equal(password_crypt_count(), n + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verify_table),
		cmocka_unit_test(test_verify_one_byte_off),
		cmocka_unit_test(test_verify_too_long),
		cmocka_unit_test(test_hash_verify_each_scheme),
		cmocka_unit_test(test_hash_errors),
		cmocka_unit_test(test_plain_secret),
		cmocka_unit_test(test_is_crypt),
		cmocka_unit_test(test_dummy),
		cmocka_unit_test(test_crypt_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
