/*
 * tmpdir-fixture.h — a fresh directory under /tmp for the unit tests that
 * work on real files (test-maildrop, test-deliver, test-unix-listen):
 * made in each test's setup, removed with everything in it (never
 * following a symlink out of it) in its teardown.  Include after
 * <cmocka.h>.
 */
#ifndef POPBOX_TEST_TMPDIR_FIXTURE_H
#define POPBOX_TEST_TMPDIR_FIXTURE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Makes "/tmp/<prefix>-XXXXXX" into dir[0..size). */
static inline void tmpdir_make(char *dir, size_t size, const char *prefix)
{
	assert_true((size_t)snprintf(dir, size, "/tmp/%s-XXXXXX", prefix) < size);
	assert_non_null(mkdtemp(dir));
}

static inline int tmpdir_remove_one(const char *p, const struct stat *st,
				    int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

/* Removes dir and all it holds. */
static inline void tmpdir_remove(const char *dir)
{
	nftw(dir, tmpdir_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
