/*
 * test-password.c — password schemes: known vectors from an independent
 * implementation (openssl passwd; Python's hashlib/hmac for SCRAM),
 * hash+verify per scheme, refused entries, the plaintext accessor, the
 * dummy hash, the crypt and slow-hash counters, and the SCRAM parser and
 * key derivation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "password.h"

struct verify_case {
	const char *stored;
	const char *password;
	int expect;
};

#define SCRAM_RFC7677_TAIL                                   \
	"W22ZaJ0SNY7soEsUEjb6gQ==,"                          \
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"      \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
#define SCRAM_RFC7677_DATA "4096," SCRAM_RFC7677_TAIL
#define SCRAM_RFC7677 "{SCRAM-SHA-256}" SCRAM_RFC7677_DATA

/* The same entry as bytes (hex from Python). */
static const uint8_t rfc7677_salt[16] = {
	0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
	0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81,
};
static const uint8_t rfc7677_stored_key[32] = {
	0x58, 0x6e, 0x5d, 0xf2, 0x83, 0xe6, 0xdc, 0xeb, 0x5c, 0x3e, 0x79,
	0x1d, 0x8b, 0x85, 0x28, 0xec, 0x19, 0x1e, 0x66, 0x40, 0x45, 0xce,
	0x97, 0x17, 0x92, 0xe2, 0xe6, 0xb5, 0xbb, 0x13, 0xe2, 0xa6,
};
static const uint8_t rfc7677_server_key[32] = {
	0xc1, 0xf3, 0xcb, 0xc1, 0xc1, 0x3a, 0x9d, 0x35, 0xa1, 0x4c, 0x09,
	0x90, 0xee, 0xd9, 0x76, 0x29, 0xea, 0x22, 0x58, 0x63, 0xe5, 0x66,
	0xa4, 0x31, 0x4a, 0xb9, 0x9f, 0x3f, 0x00, 0xe5, 0xd9, 0xd5,
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
	/* SCRAM-SHA-256, Dovecot's stored form.  Keys computed with Python's
	   hashlib.pbkdf2_hmac and hmac for RFC 7677 section 3's user:
	   password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations. */
	{ SCRAM_RFC7677, "pencil", 1 },
	{ SCRAM_RFC7677, "Pencil", 0 },
	{ SCRAM_RFC7677, "pencil ", 0 },
	{ SCRAM_RFC7677, "", 0 },
	{ "{scram-sha-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", "pencil", 1 },
	{ "{SCRAM-SHA-256}4097,W22ZaJ0SNY7soEsUEjb6gQ==,sdt05isWsRhzHfFDCiwaaMa8LoSaM5Z/LeTC4U4ZU/A=,3n+hspa+IoQPK0KU41yOewwLA7QonR6nXC4CY9mCuTc=", "pencil", 1 },
	{ "{SCRAM-SHA-256}10000,c2FsdHNhbHRzYWx0c2FsdA==,4w60l+Eb+LpUeUxlc28zsvV2xdgaYHOhxdWv8OmtduA=,4QmYtQ48SomchFlqzUjNZmPCitB0MGdrO84FLPMst44=", "pencil", 1 },
	/* 64-byte salt (the longest) and 1-byte salt with an empty password. */
	{ "{SCRAM-SHA-256}4096,AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg==,GkfF/ka2Ap1B6u+pai7+hEzGIdhwIAVmyVX2rup4IS4=,UC3ycX7HjMCuST0NjrvY0GB1DfmW24Bb03hwSsZW23I=", "pencil", 1 },
	{ "{SCRAM-SHA-256}4096,Bw==,7gfVGUFWw34PqI9480EbbnOmCRmAjXWcXCYAuItT2XM=,uMG4nITQ2q66rObBOtK11Hek1nH4ojxHB17tFGItWyI=", "", 1 },
	/* A right StoredKey with another entry's ServerKey never verifies. */
	{ "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,3n+hspa+IoQPK0KU41yOewwLA7QonR6nXC4CY9mCuTc=", "pencil", 0 },
};

/* Unusable SCRAM entries: every one is refused without hashing. */
static const char *const scram_refused[] = {
	/* Iteration counts out of [4096, 1000000] or not plain decimal. */
	"{SCRAM-SHA-256}0," SCRAM_RFC7677_TAIL,
	"{SCRAM-SHA-256}4095," SCRAM_RFC7677_TAIL,
	"{SCRAM-SHA-256}1000001," SCRAM_RFC7677_TAIL,
	"{SCRAM-SHA-256}18446744073709551617," SCRAM_RFC7677_TAIL,
	"{SCRAM-SHA-256}-4096," SCRAM_RFC7677_TAIL,
	"{SCRAM-SHA-256}+4096," SCRAM_RFC7677_TAIL,
	"{SCRAM-SHA-256} 4096," SCRAM_RFC7677_TAIL,
	"{SCRAM-SHA-256}0x1000," SCRAM_RFC7677_TAIL,
	"{SCRAM-SHA-256}," SCRAM_RFC7677_TAIL,
	/* Bad base64 in the salt: unpadded, non-canonical, space, empty,
	   longer than 64 bytes. */
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gR==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	"{SCRAM-SHA-256}4096, W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	"{SCRAM-SHA-256}4096,,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	"{SCRAM-SHA-256}4096,AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=,GkfF/ka2Ap1B6u+pai7+hEzGIdhwIAVmyVX2rup4IS4=,UC3ycX7HjMCuST0NjrvY0GB1DfmW24Bb03hwSsZW23I=",
	/* Keys of 31 and 33 bytes, bad base64 in a key, an empty key. */
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ==,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ==",
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,",
	/* Missing, extra and empty fields. */
	"{SCRAM-SHA-256}",
	"{SCRAM-SHA-256}4096",
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==",
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
	"{SCRAM-SHA-256}" SCRAM_RFC7677_DATA ",",
	"{SCRAM-SHA-256}" SCRAM_RFC7677_DATA ",extra",
	"{SCRAM-SHA-256},,,",
	/* Not the SCRAM scheme at all. */
	"{SCRAM-SHA-1}" SCRAM_RFC7677_DATA,
	SCRAM_RFC7677_DATA,
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
	{ "SCRAM-SHA-256", "{SCRAM-SHA-256}4096," },
	{ "scram-sha-256", "{SCRAM-SHA-256}4096," },
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
		    strcmp(c->scheme, "yescrypt") == 0 ||
		    strncasecmp(c->scheme, "SCRAM", 5) == 0)
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
	assert_false(password_is_crypt(SCRAM_RFC7677));
}

/* Slow: usable crypt and SCRAM entries; not plaintext nor unusable ones. */
static void test_is_slow(void **state)
{
	(void)state;
	assert_true(password_is_slow(SCRAM_RFC7677));
	assert_true(password_is_slow("{BLF-CRYPT}$2b$10$x"));
	assert_true(password_is_slow("$y$j9T$saltsaltsalt$GXprhDM3oVIKhFhAJf/udtdAwaP7GuZghybRfeHA.oA"));
	assert_false(password_is_slow("{PLAIN}x"));
	assert_false(password_is_slow("abJnggxhB/yWI"));
	for (size_t i = 0; i < sizeof(scram_refused) / sizeof(scram_refused[0]); i++)
		assert_false(password_is_slow(scram_refused[i]));
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
	/* A SCRAM model keeps its iteration count (the salt is new). */
	{ "{SCRAM-SHA-256}4097,W22ZaJ0SNY7soEsUEjb6gQ==,sdt05isWsRhzHfFDCiwaaMa8LoSaM5Z/LeTC4U4ZU/A=,3n+hspa+IoQPK0KU41yOewwLA7QonR6nXC4CY9mCuTc=",
	  "{SCRAM-SHA-256}4097," },
	/* An unusable SCRAM entry is no model. */
	{ "{SCRAM-SHA-256}4095," SCRAM_RFC7677_TAIL, "{SHA512-CRYPT}$6$" },
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
		/* Usable (runs one slow hash) and matches no ordinary
		   password. */
		unsigned long before = password_slow_count();
		assert_int_equal(password_verify(dummy, "pencil"), 0);
		assert_int_equal(password_slow_count(), before + 1);
		assert_true(password_is_slow(dummy));
		if (c->model != NULL && password_is_crypt(c->model))
			assert_string_not_equal(strchr(dummy, '}') + 1,
						strchr(c->model, '$'));
		if (c->model != NULL && password_is_slow(c->model) &&
		    !password_is_crypt(c->model))
			assert_int_equal(strlen(dummy), strlen(c->model));
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

/* One PBKDF2 per SCRAM verification; none for a refused entry or an
   over-long password; crypt counts as slow too. */
static void test_slow_count(void **state)
{
	char long_pw[PASSWORD_MAX + 2];
	unsigned long crypt_n = password_crypt_count();
	unsigned long n = password_slow_count();

	(void)state;
	memset(long_pw, 'p', sizeof(long_pw) - 1);
	long_pw[sizeof(long_pw) - 1] = '\0';
	assert_int_equal(password_verify(SCRAM_RFC7677, "x"), 0);
	assert_int_equal(password_slow_count(), n + 1);
	assert_int_equal(password_verify(SCRAM_RFC7677, long_pw), -1);
	for (size_t i = 0; i < sizeof(scram_refused) / sizeof(scram_refused[0]); i++)
		assert_int_equal(password_verify(scram_refused[i], "pencil"), -1);
	assert_int_equal(password_slow_count(), n + 1);
	assert_int_equal(password_crypt_count(), crypt_n);
	password_verify("{SHA256-CRYPT}$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/", "x");
	assert_int_equal(password_slow_count(), n + 2);
}

static void test_scram_parse(void **state)
{
	struct password_scram cred;

	(void)state;
	assert_int_equal(password_scram_parse(SCRAM_RFC7677, &cred), 0);
	assert_int_equal(cred.iter, 4096);
	assert_int_equal(cred.salt_len, sizeof(rfc7677_salt));
	assert_memory_equal(cred.salt, rfc7677_salt, sizeof(rfc7677_salt));
	assert_memory_equal(cred.stored_key, rfc7677_stored_key, 32);
	assert_memory_equal(cred.server_key, rfc7677_server_key, 32);
	assert_int_equal(password_scram_parse("{SCRAM-SHA-256}1000000,"
					      SCRAM_RFC7677_TAIL, &cred), 0);
	assert_int_equal(cred.iter, 1000000);
	assert_int_equal(password_scram_parse("{SCRAM-SHA-256}004096,"
					      SCRAM_RFC7677_TAIL, &cred), 0);
	assert_int_equal(cred.iter, 4096);
	for (size_t i = 0; i < sizeof(scram_refused) / sizeof(scram_refused[0]); i++) {
		memset(&cred, 0x55, sizeof(cred));
		if (password_scram_parse(scram_refused[i], &cred) != -1)
			fail_msg("parsed: %s", scram_refused[i]);
		assert_int_equal(cred.iter, 0); /* zeroed on failure */
		assert_int_equal(cred.salt_len, 0);
	}
	assert_int_equal(password_scram_parse("{PLAIN}pencil", &cred), -1);
	assert_int_equal(password_scram_parse("$6$saltsalt$x", &cred), -1);
}

/* password_scram_derive() gives the independent implementation's keys. */
static void test_scram_derive(void **state)
{
	struct password_scram cred;
	uint8_t salt[65] = { 0 };
	char long_pw[PASSWORD_MAX + 2];

	(void)state;
	assert_int_equal(password_scram_derive("pencil", rfc7677_salt,
					       sizeof(rfc7677_salt), 4096, &cred), 0);
	assert_int_equal(cred.iter, 4096);
	assert_int_equal(cred.salt_len, 16);
	assert_memory_equal(cred.salt, rfc7677_salt, 16);
	assert_memory_equal(cred.stored_key, rfc7677_stored_key, 32);
	assert_memory_equal(cred.server_key, rfc7677_server_key, 32);

	assert_int_equal(password_scram_derive("pencil", salt, 0, 4096, &cred), -1);
	assert_int_equal(password_scram_derive("pencil", salt, 65, 4096, &cred), -1);
	assert_int_equal(password_scram_derive("pencil", salt, 64, 4096, &cred), 0);
	assert_int_equal(password_scram_derive("pencil", salt, 16, 4095, &cred), -1);
	assert_int_equal(password_scram_derive("pencil", salt, 16, 1000001, &cred), -1);
	assert_int_equal(password_scram_derive("pencil", salt, 16, 0, &cred), -1);
	assert_int_equal(cred.iter, 0);
	memset(long_pw, 'p', sizeof(long_pw) - 1);
	long_pw[sizeof(long_pw) - 1] = '\0';
	assert_int_equal(password_scram_derive(long_pw, salt, 16, 4096, &cred), -1);
	long_pw[PASSWORD_MAX] = '\0';
	assert_int_equal(password_scram_derive(long_pw, salt, 16, 4096, &cred), 0);
}

/* A new SCRAM entry: 16 salt bytes, 4096 iterations, and it verifies. */
static void test_scram_hash(void **state)
{
	struct password_scram cred;
	char *hash = NULL;
	const char *error;

	(void)state;
	assert_int_equal(password_hash("SCRAM-SHA-256", "tr0ub4dor&3", &hash,
				       &error), 0);
	assert_int_equal(password_scram_parse(hash, &cred), 0);
	assert_int_equal(cred.iter, PASSWORD_SCRAM_ITER_DEFAULT);
	assert_int_equal(cred.salt_len, PASSWORD_SCRAM_SALT_LEN);
	assert_int_equal(password_verify(hash, "tr0ub4dor&3"), 1);
	assert_null(strchr(hash, ':')); /* fits a passwd-file field */
	free(hash);
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
		cmocka_unit_test(test_is_slow),
		cmocka_unit_test(test_dummy),
		cmocka_unit_test(test_crypt_count),
		cmocka_unit_test(test_slow_count),
		cmocka_unit_test(test_scram_parse),
		cmocka_unit_test(test_scram_derive),
		cmocka_unit_test(test_scram_hash),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
