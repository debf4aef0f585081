/*
 * passwd-fixture.h — shared by the unit tests that need a passwd-file on
 * disk (test-passdb, test-sasl, test-sasl-client): a temp directory, the file in it, the
 * passdb opened on it, and an atomic rewrite as an admin's editor does.
 * Include after <cmocka.h>.
 */
#ifndef POPBOX_TEST_PASSWD_FIXTURE_H
#define POPBOX_TEST_PASSWD_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/*
 * cmocka setup: a fresh directory from dir_template ("/tmp/NAME-XXXXXX"),
 * users written to a passwd-file in it, the passdb opened on it.
 */
static inline int passwd_fixture_setup(void **state, const char *dir_template,
				       const char *users)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	const char *error;

	if (fx == NULL || strlen(dir_template) >= sizeof(fx->dir)) {
		free(fx);
		return -1;
	}
	strcpy(fx->dir, dir_template);
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/users", fx->dir);
	write_file(fx->path, users);
	if (passdb_open(fx->path, &fx->db, &error) < 0)
		return -1;
	*state = fx;
	return 0;
}

static inline int passwd_fixture_teardown(void **state)
{
	struct fixture *fx = *state;

	passdb_close(&fx->db);
	unlink(fx->path);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

#endif
