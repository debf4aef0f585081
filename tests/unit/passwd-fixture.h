/*
 * passwd-fixture.h — shared by the unit tests that need a passwd-file on
 * disk (test-passdb, test-sasl): a temp directory, the file in it, the
 * passdb opened on it, and an atomic rewrite as an admin's editor does.
 * Include after <cmocka.h>.
 */
#ifndef POPBOX_TEST_PASSWD_FIXTURE_H
#define POPBOX_TEST_PASSWD_FIXTURE_H

#include <stdio.h>

#include "passdb.h"

struct fixture {
	char dir[64];
	char path[96];
	struct passdb *db;
};

/* Replaces path with text atomically (write a .tmp, rename). */
static inline void write_file(const char *path, const char *text)
{
	char tmp[128];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	assert_non_null(f = fopen(tmp, "w"));
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, path), 0);
}

#endif
