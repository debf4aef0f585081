/*
 * fuzz-uidl-db.c — the UIDL table's file parser (fetch/uidl-db.h) on
 * arbitrary bytes (the file is on the user's disk, but it may be damaged
 * or edited by hand, and every UIDL in it came from a server).
 *
 * Checks (abort on violation):
 *   - a refused file leaves the table empty and names a line;
 *   - an accepted file gives records that are all valid, one per UIDL,
 *     each found by lookup, and torn_bytes is what follows the last LF;
 *   - pending records (a file name with the UIDL) are all valid too;
 *   - writing the table back (the header, uidl_db_format_line for each
 *     record and uidl_db_format_pending for each pending one) and parsing
 *     that gives the same table and pending list: a save loses nothing
 *     and adds nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "uidl-db.h"

static int rec_equal(const struct uidl_db_rec *a, const struct uidl_db_rec *b)
{
	return a->first_seen == b->first_seen && a->size == b->size &&
	       a->state == b->state;
}

static void check_records(const struct uidl_db *db)
{
	for (size_t i = 0; i < uidl_db_count(db); i++) {
		const char *uidl;
		size_t len;
		struct uidl_db_rec rec, found;

		uidl_db_at(db, i, &uidl, &len, &rec);
		if (!uidl_db_uidl_valid(uidl, len) || rec.first_seen < 0 ||
		    rec.first_seen > UIDL_DB_TIME_MAX ||
		    rec.size > UIDL_DB_SIZE_MAX ||
		    (rec.state != UIDL_DB_FULL && rec.state != UIDL_DB_HEADERS))
			abort();
		if (!uidl_db_get(db, uidl, len, &found) ||
		    !rec_equal(&found, &rec))
			abort();
	}
}

static void check_pending(const struct uidl_db *db)
{
	for (size_t i = 0; i < uidl_db_pending_count(db); i++) {
		const char *uidl, *name;
		size_t len;
		struct uidl_db_rec rec;

		uidl_db_pending_at(db, i, &uidl, &len, &rec, &name);
		if (!uidl_db_uidl_valid(uidl, len) ||
		    !uidl_db_name_valid(name, strlen(name)) ||
		    rec.first_seen < 0 || rec.first_seen > UIDL_DB_TIME_MAX ||
		    rec.size > UIDL_DB_SIZE_MAX ||
		    (rec.state != UIDL_DB_FULL && rec.state != UIDL_DB_HEADERS))
			abort();
	}
}

/* The table as a save writes it, malloc'ed. */
static char *write_back(const struct uidl_db *db, size_t *len_r)
{
	size_t n = uidl_db_count(db), np = uidl_db_pending_count(db);
	char *text = malloc(sizeof(UIDL_DB_HEADER) + n * UIDL_DB_LINE_MAX +
			    np * UIDL_DB_PENDING_LINE_MAX + 1);
	size_t used = sizeof(UIDL_DB_HEADER) - 1;

	if (text == NULL)
		abort();
	memcpy(text, UIDL_DB_HEADER, used);
	for (size_t i = 0; i < n; i++) {
		const char *uidl;
		size_t len;
		struct uidl_db_rec rec;
		char line[UIDL_DB_LINE_MAX + 1];
		size_t ln;

		uidl_db_at(db, i, &uidl, &len, &rec);
		ln = uidl_db_format_line(line, uidl, len, &rec);
		if (ln == 0 || ln > UIDL_DB_LINE_MAX || line[ln - 1] != '\n')
			abort();
		memcpy(text + used, line, ln);
		used += ln;
	}
	for (size_t i = 0; i < np; i++) {
		const char *uidl, *name;
		size_t len, ln;
		struct uidl_db_rec rec;
		char line[UIDL_DB_PENDING_LINE_MAX + 1];

		uidl_db_pending_at(db, i, &uidl, &len, &rec, &name);
		ln = uidl_db_format_pending(line, uidl, len, &rec, name);
		if (ln == 0 || line[ln - 1] != '\n')
			abort();
		memcpy(text + used, line, ln);
		used += ln;
	}
	*len_r = used;
	return text;
}

static void check_round_trip(const struct uidl_db *db)
{
	struct uidl_db *db2 = uidl_db_new();
	struct uidl_db_load_info info;
	const char *err;
	size_t len;
	char *text = write_back(db, &len);

	if (db2 == NULL)
		abort();
	if (uidl_db_parse(db2, text, len, &info, &err) < 0 ||
	    info.torn_bytes != 0 || info.records != uidl_db_count(db) ||
	    uidl_db_count(db2) != uidl_db_count(db) ||
	    info.pending != uidl_db_pending_count(db) ||
	    uidl_db_pending_count(db2) != uidl_db_pending_count(db))
		abort();
	for (size_t i = 0; i < uidl_db_pending_count(db); i++) {
		const char *u1, *u2, *n1, *n2;
		size_t l1, l2;
		struct uidl_db_rec r1, r2;

		uidl_db_pending_at(db, i, &u1, &l1, &r1, &n1);
		uidl_db_pending_at(db2, i, &u2, &l2, &r2, &n2);
		if (l1 != l2 || memcmp(u1, u2, l1) != 0 ||
		    !rec_equal(&r1, &r2) || strcmp(n1, n2) != 0)
			abort();
	}
	for (size_t i = 0; i < uidl_db_count(db); i++) {
		const char *u1, *u2;
		size_t l1, l2;
		struct uidl_db_rec r1, r2;

		uidl_db_at(db, i, &u1, &l1, &r1);
		uidl_db_at(db2, i, &u2, &l2, &r2);
		if (l1 != l2 || memcmp(u1, u2, l1) != 0 ||
		    !rec_equal(&r1, &r2))
			abort();
	}
	free(text);
	uidl_db_free(&db2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct uidl_db *db = uidl_db_new();
	struct uidl_db_load_info info;
	const char *text = (const char *)data;
	const char *err = NULL;

	if (db == NULL)
		abort();
	if (uidl_db_parse(db, text, size, &info, &err) < 0) {
		if (uidl_db_count(db) != 0 || err == NULL ||
		    strncmp(err, "line ", 5) != 0)
			abort();
		uidl_db_free(&db);
		return 0;
	}
	const char *last_lf = NULL;
	for (size_t i = size; i > 0; i--)
		if (text[i - 1] == '\n') {
			last_lf = text + i - 1;
			break;
		}
	if (last_lf == NULL ||
	    info.torn_bytes != size - (size_t)(last_lf - text) - 1 ||
	    info.records != uidl_db_count(db))
		abort();
	check_records(db);
	check_pending(db);
	check_round_trip(db);
	uidl_db_free(&db);
	return 0;
}
