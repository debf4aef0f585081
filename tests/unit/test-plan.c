/*
 * test-plan.c — the per-run decision (fetch/plan.h): every policy (delete,
 * keep, keep N days, new only / fetch all, size limit with skip or
 * header only, at most K per run), a server without UIDL, and the
 * listings a broken server sends (a UIDL listed twice, numbers 0 or
 * twice, gaps, a message in only one listing, an invalid UIDL, a
 * recorded UIDL with another size).  Then a model of the whole loop:
 * a server, a local store and the table, with a crash injected at every
 * step of a run followed by a clean run, checking that each message ends
 * stored exactly once (twice only for a crash in the documented window
 * between the store's commit and the record) and that nothing was
 * deleted on the server that was not stored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"
#include "uidl-db.h"

#define NOW ((int64_t)1700000000)
#define DAY PLAN_DAY_SECONDS

/* A listing built by the tests: message i+1 has size sizes[i] and UIDL
   uidls[i] (NULL: not in the UIDL listing). */
struct listing {
	struct plan_scan scan[64];
	struct plan_uid uids[64];
	size_t ns, nu;
};

static void add_msg(struct listing *l, uint32_t num, uint64_t size,
		    const char *uidl)
{
	l->scan[l->ns++] = (struct plan_scan){ .num = num, .size = size };
	if (uidl != NULL)
		l->uids[l->nu++] = (struct plan_uid){ .num = num, .uidl = uidl,
						      .len = strlen(uidl) };
}

static struct plan_input input(const struct listing *l,
			       const struct uidl_db *db)
{
	struct plan_input in = {
		.scan = l->scan, .scan_count = l->ns,
		.have_uidl = true, .uids = l->uids, .uid_count = l->nu,
		.db = db, .now = NOW,
	};
	return in;
}

static void put(struct uidl_db *db, const char *uidl, int64_t t,
		uint64_t size, enum uidl_db_state st)
{
	struct uidl_db_rec r = { .first_seen = t, .size = size, .state = st };
	const char *err;

	assert_int_equal(uidl_db_set(db, uidl, strlen(uidl), &r, &err), 0);
}

static void make(const struct plan_input *in, const struct plan_policy *pol,
		 struct plan *p)
{
	const char *err = NULL;

	if (plan_make(in, pol, p, &err) < 0)
		fail_msg("plan_make: %s", err);
}

static void assert_action(const struct plan *p, size_t i, uint32_t num,
			  enum plan_op op, enum plan_reason reason, bool dele)
{
	const struct plan_action *a = &p->actions[i];

	assert_true(i < p->count);
	if (a->num != num || a->op != op || a->reason != reason ||
	    a->dele_after != dele)
		fail_msg("action %zu: num %u %s %s dele %d, expected num %u "
			 "%s %s dele %d", i, a->num, plan_op_name(a->op),
			 plan_reason_name(a->reason), a->dele_after, num,
			 plan_op_name(op), plan_reason_name(reason), dele);
}

/* ---- delete, keep, keep N days ------------------------------------------ */

static void test_delete_new_and_known(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct listing l = { 0 };
	struct plan_policy pol = { .keep = PLAN_DELETE };
	struct plan p;

	(void)state;
	add_msg(&l, 1, 100, "new1");
	add_msg(&l, 2, 200, "old");
	add_msg(&l, 3, 300, "reused");
	put(db, "old", NOW - 10, 200, UIDL_DB_FULL);
	put(db, "reused", NOW - 10, 299, UIDL_DB_FULL);
	put(db, "gone", NOW - 10, 1, UIDL_DB_FULL);
	struct plan_input in = input(&l, db);
	make(&in, &pol, &p);
	assert_int_equal(p.count, 3);
	assert_action(&p, 0, 1, PLAN_OP_RETR, PLAN_R_NEW, true);
	/* Stored in an earlier run, still there (QUIT failed?): DELE only. */
	assert_action(&p, 1, 2, PLAN_OP_DELE, PLAN_R_STORED, false);
	/* Recorded with another size: a new message, never DELEd unseen. */
	assert_action(&p, 2, 3, PLAN_OP_RETR, PLAN_R_SIZE_CHANGED, true);
	assert_int_equal(p.actions[0].record.first_seen, NOW);
	assert_int_equal(p.actions[0].record.size, 100);
	assert_int_equal(p.actions[0].record.state, UIDL_DB_FULL);
	assert_int_equal(p.actions[0].uidl_len, 4);
	assert_memory_equal(p.actions[0].uidl, "new1", 4);
	assert_int_equal(p.actions[2].record.first_seen, NOW);
	assert_int_equal(p.actions[2].record.size, 300);
	assert_int_equal(p.fetch_count, 2);
	assert_int_equal(p.fetch_bytes, 400);
	assert_int_equal(p.dele_count, 3);
	assert_int_equal(p.skip_count, 0);

	/* The record of a message no longer listed goes. */
	assert_int_equal(plan_prune_db(db, &in), 1);
	assert_int_equal(uidl_db_count(db), 2);
	plan_free(&p);
	assert_null(p.actions);
	uidl_db_free(&db);
}

static void test_keep(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct listing l = { 0 };
	struct plan_policy pol = { .keep = PLAN_KEEP };
	struct plan p;

	(void)state;
	add_msg(&l, 1, 10, "a");
	add_msg(&l, 2, 20, "b");
	put(db, "b", 0, 20, UIDL_DB_FULL);
	struct plan_input in = input(&l, db);
	make(&in, &pol, &p);
	assert_action(&p, 0, 1, PLAN_OP_RETR, PLAN_R_NEW, false);
	assert_action(&p, 1, 2, PLAN_OP_SKIP, PLAN_R_KEPT, false);
	assert_int_equal(p.dele_count, 0);
	plan_free(&p);
	uidl_db_free(&db);
}

static void test_keep_days(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct listing l = { 0 };
	struct plan_policy pol = { .keep = PLAN_KEEP_DAYS, .keep_days = 7 };
	struct plan p;

	(void)state;
	add_msg(&l, 1, 10, "new");
	add_msg(&l, 2, 10, "eight-days");
	add_msg(&l, 3, 10, "six-days");
	add_msg(&l, 4, 10, "seven-days-exactly");
	add_msg(&l, 5, 10, "seven-days-less-1s");
	add_msg(&l, 6, 10, "future");
	put(db, "eight-days", NOW - 8 * DAY, 10, UIDL_DB_FULL);
	put(db, "six-days", NOW - 6 * DAY, 10, UIDL_DB_FULL);
	put(db, "seven-days-exactly", NOW - 7 * DAY, 10, UIDL_DB_FULL);
	put(db, "seven-days-less-1s", NOW - 7 * DAY + 1, 10, UIDL_DB_FULL);
	/* The clock went back: never due early. */
	put(db, "future", NOW + DAY, 10, UIDL_DB_FULL);
	struct plan_input in = input(&l, db);
	make(&in, &pol, &p);
	assert_action(&p, 0, 1, PLAN_OP_RETR, PLAN_R_NEW, false);
	assert_action(&p, 1, 2, PLAN_OP_DELE, PLAN_R_EXPIRED, false);
	assert_action(&p, 2, 3, PLAN_OP_SKIP, PLAN_R_KEPT, false);
	assert_action(&p, 3, 4, PLAN_OP_DELE, PLAN_R_EXPIRED, false);
	assert_action(&p, 4, 5, PLAN_OP_SKIP, PLAN_R_KEPT, false);
	assert_action(&p, 5, 6, PLAN_OP_SKIP, PLAN_R_KEPT, false);
	plan_free(&p);

	/* 0 days: deleted in the run that stores it. */
	pol.keep_days = 0;
	make(&in, &pol, &p);
	assert_action(&p, 0, 1, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_action(&p, 2, 3, PLAN_OP_DELE, PLAN_R_EXPIRED, false);
	plan_free(&p);
	uidl_db_free(&db);
}

static void test_fetch_all(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct listing l = { 0 };
	struct plan_policy pol = { .keep = PLAN_KEEP_DAYS, .keep_days = 7,
				   .fetch_all = true };
	struct plan p;

	(void)state;
	add_msg(&l, 1, 10, "recent");
	add_msg(&l, 2, 10, "old");
	put(db, "recent", NOW - DAY, 10, UIDL_DB_FULL);
	put(db, "old", NOW - 30 * DAY, 10, UIDL_DB_FULL);
	struct plan_input in = input(&l, db);
	make(&in, &pol, &p);
	/* Fetched again; the keep clock is the first download's. */
	assert_action(&p, 0, 1, PLAN_OP_RETR, PLAN_R_FETCH_ALL, false);
	assert_int_equal(p.actions[0].record.first_seen, NOW - DAY);
	assert_action(&p, 1, 2, PLAN_OP_RETR, PLAN_R_FETCH_ALL, true);
	assert_int_equal(p.actions[1].record.first_seen, NOW - 30 * DAY);
	plan_free(&p);
	uidl_db_free(&db);
}

/* ---- size limit ------------------------------------------------------------ */

static void test_size_limit_skip(void **state)
{
	struct listing l = { 0 };
	struct plan_policy pol = { .size_limit = 1000 };
	struct plan p;

	(void)state;
	add_msg(&l, 1, 1000, "fits");
	add_msg(&l, 2, 1001, "big");
	struct plan_input in = input(&l, NULL);
	make(&in, &pol, &p);
	assert_action(&p, 0, 1, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_action(&p, 1, 2, PLAN_OP_SKIP, PLAN_R_TOO_BIG, false);
	assert_int_equal(p.fetch_bytes, 1000);
	assert_int_equal(p.skip_count, 1);
	plan_free(&p);
}

static void test_size_limit_headers(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct listing l = { 0 };
	struct plan_policy pol = { .size_limit = 1000,
				   .oversize = PLAN_OVERSIZE_HEADERS,
				   .top_lines = 5 };
	struct plan p;

	(void)state;
	add_msg(&l, 1, 5000, "big-new");
	add_msg(&l, 2, 5000, "big-seen");
	add_msg(&l, 3, 900, "shrunk");   /* header only before; fits now */
	add_msg(&l, 4, 5000, "was-small");
	put(db, "big-seen", NOW - 100, 5000, UIDL_DB_HEADERS);
	put(db, "shrunk", NOW - 100, 900, UIDL_DB_HEADERS);
	put(db, "was-small", NOW - 100, 5000, UIDL_DB_FULL);
	struct plan_input in = input(&l, db);
	make(&in, &pol, &p);
	/* Header only: recorded 'H', never deleted. */
	assert_action(&p, 0, 1, PLAN_OP_TOP, PLAN_R_NEW, false);
	assert_int_equal(p.actions[0].top_lines, 5);
	assert_int_equal(p.actions[0].record.state, UIDL_DB_HEADERS);
	assert_int_equal(p.actions[0].record.size, 5000);
	/* Its header is stored already: not again. */
	assert_action(&p, 1, 2, PLAN_OP_SKIP, PLAN_R_HEADERS_KEPT, false);
	/* A header-only record that fits now: fetched whole, clock now. */
	assert_action(&p, 2, 3, PLAN_OP_RETR, PLAN_R_NOW_FITS, true);
	assert_int_equal(p.actions[2].record.state, UIDL_DB_FULL);
	assert_int_equal(p.actions[2].record.first_seen, NOW);
	/* Stored whole before (same size): the limit does not matter. */
	assert_action(&p, 3, 4, PLAN_OP_DELE, PLAN_R_STORED, false);
	plan_free(&p);

	/* The limit raised: the header-only one comes whole. */
	pol.size_limit = 0;
	make(&in, &pol, &p);
	assert_action(&p, 0, 1, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_action(&p, 1, 2, PLAN_OP_RETR, PLAN_R_NOW_FITS, true);
	plan_free(&p);

	/* fetch_all on a too big message stored whole: TOP, but the record
	   stays 'F' (never downgraded). */
	pol.size_limit = 1000;
	pol.fetch_all = true;
	make(&in, &pol, &p);
	assert_action(&p, 3, 4, PLAN_OP_TOP, PLAN_R_FETCH_ALL, false);
	assert_int_equal(p.actions[3].record.state, UIDL_DB_FULL);
	assert_int_equal(p.actions[3].record.first_seen, NOW - 100);
	assert_action(&p, 1, 2, PLAN_OP_TOP, PLAN_R_FETCH_ALL, false);
	plan_free(&p);
	uidl_db_free(&db);
}

/* ---- at most K per run --------------------------------------------------------- */

static void test_run_limit(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct listing l = { 0 };
	struct plan_policy pol = { .max_messages = 2 };
	struct plan p;

	(void)state;
	add_msg(&l, 1, 10, "known");
	add_msg(&l, 2, 10, "a");
	add_msg(&l, 3, 10, "b");
	add_msg(&l, 4, 10, "c");
	add_msg(&l, 5, 10, "d");
	put(db, "known", 0, 10, UIDL_DB_FULL);
	struct plan_input in = input(&l, db);
	make(&in, &pol, &p);
	assert_action(&p, 0, 1, PLAN_OP_DELE, PLAN_R_STORED, false);
	assert_action(&p, 1, 2, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_action(&p, 2, 3, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_action(&p, 3, 4, PLAN_OP_SKIP, PLAN_R_RUN_LIMIT, false);
	assert_action(&p, 4, 5, PLAN_OP_SKIP, PLAN_R_RUN_LIMIT, false);
	assert_int_equal(p.fetch_count, 2);
	assert_int_equal(p.dele_count, 3);
	plan_free(&p);
	uidl_db_free(&db);
}

/* ---- a server without UIDL -------------------------------------------------- */

static void test_no_uidl(void **state)
{
	struct listing l = { 0 };
	struct plan_policy pol = { .size_limit = 50, .max_messages = 2 };
	struct plan p;
	const char *err = NULL;

	(void)state;
	add_msg(&l, 1, 10, NULL);
	add_msg(&l, 2, 100, NULL);
	add_msg(&l, 3, 10, NULL);
	add_msg(&l, 4, 10, NULL);
	struct plan_input in = input(&l, NULL);
	in.have_uidl = false;
	make(&in, &pol, &p);
	assert_action(&p, 0, 1, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_null(p.actions[0].uidl);
	assert_action(&p, 1, 2, PLAN_OP_SKIP, PLAN_R_TOO_BIG, false);
	assert_action(&p, 2, 3, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_action(&p, 3, 4, PLAN_OP_SKIP, PLAN_R_RUN_LIMIT, false);
	plan_free(&p);

	/* Only "fetch all and delete" is safe. */
	pol.keep = PLAN_KEEP;
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
	assert_non_null(strstr(err, "no UIDL"));
	assert_null(p.actions);
	pol.keep = PLAN_KEEP_DAYS;
	pol.keep_days = 3;
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
	pol.keep_days = 0;
	make(&in, &pol, &p);
	plan_free(&p);
	pol.keep = PLAN_DELETE;
	pol.oversize = PLAN_OVERSIZE_HEADERS;
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
	assert_non_null(strstr(err, "header"));
	/* Nothing to prune without UIDL. */
	struct uidl_db *db = uidl_db_new();
	put(db, "x", 0, 0, UIDL_DB_FULL);
	assert_int_equal(plan_prune_db(db, &in), 0);
	assert_int_equal(uidl_db_count(db), 1);
	uidl_db_free(&db);
}

/* ---- broken listings ------------------------------------------------------------ */

static void test_duplicate_uidl(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct listing l = { 0 };
	struct plan_policy pol = { 0 };
	struct plan p;

	(void)state;
	add_msg(&l, 1, 10, "twice");
	add_msg(&l, 2, 10, "once");
	add_msg(&l, 3, 10, "twice");
	add_msg(&l, 4, 10, "known-twice");
	add_msg(&l, 5, 10, "known-twice");
	put(db, "known-twice", 0, 10, UIDL_DB_FULL);
	struct plan_input in = input(&l, db);
	make(&in, &pol, &p);
	/* Which one was stored is unknowable: neither is fetched nor
	   deleted. */
	assert_action(&p, 0, 1, PLAN_OP_SKIP, PLAN_R_DUP_UIDL, false);
	assert_action(&p, 1, 2, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_action(&p, 2, 3, PLAN_OP_SKIP, PLAN_R_DUP_UIDL, false);
	assert_action(&p, 3, 4, PLAN_OP_SKIP, PLAN_R_DUP_UIDL, false);
	assert_action(&p, 4, 5, PLAN_OP_SKIP, PLAN_R_DUP_UIDL, false);
	/* Listed (twice) is listed: the record stays. */
	assert_int_equal(plan_prune_db(db, &in), 0);
	plan_free(&p);
	uidl_db_free(&db);
}

static void test_gaps_order_mismatch(void **state)
{
	struct listing l = { 0 };
	struct plan_policy pol = { 0 };
	struct plan p;

	(void)state;
	/* Unsorted, with gaps; 5 has no UIDL line, 7 no LIST line. */
	l.scan[l.ns++] = (struct plan_scan){ .num = 9, .size = 90 };
	l.scan[l.ns++] = (struct plan_scan){ .num = 5, .size = 50 };
	l.scan[l.ns++] = (struct plan_scan){ .num = 2, .size = 20 };
	l.uids[l.nu++] = (struct plan_uid){ .num = 7, .uidl = "u7", .len = 2 };
	l.uids[l.nu++] = (struct plan_uid){ .num = 9, .uidl = "u9", .len = 2 };
	l.uids[l.nu++] = (struct plan_uid){ .num = 2, .uidl = "u2", .len = 2 };
	struct plan_input in = input(&l, NULL);
	make(&in, &pol, &p);
	assert_int_equal(p.count, 4);
	assert_action(&p, 0, 2, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_memory_equal(p.actions[0].uidl, "u2", 2);
	assert_int_equal(p.actions[0].size, 20);
	assert_action(&p, 1, 5, PLAN_OP_SKIP, PLAN_R_NO_UIDL, false);
	assert_action(&p, 2, 7, PLAN_OP_SKIP, PLAN_R_NO_SIZE, false);
	assert_action(&p, 3, 9, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_memory_equal(p.actions[3].uidl, "u9", 2);
	assert_int_equal(p.actions[3].size, 90);
	plan_free(&p);
}

static void test_invalid_uidl(void **state)
{
	static const char long_uidl[] =
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	struct listing l = { 0 };
	struct plan_policy pol = { 0 };
	struct plan p;

	(void)state;
	add_msg(&l, 1, 10, "has space");
	add_msg(&l, 2, 10, long_uidl);
	add_msg(&l, 3, 10, "ok");
	l.scan[l.ns++] = (struct plan_scan){ .num = 4, .size = 10 };
	l.uids[l.nu++] = (struct plan_uid){ .num = 4, .uidl = "", .len = 0 };
	struct plan_input in = input(&l, NULL);
	make(&in, &pol, &p);
	assert_action(&p, 0, 1, PLAN_OP_SKIP, PLAN_R_NO_UIDL, false);
	assert_action(&p, 1, 2, PLAN_OP_SKIP, PLAN_R_NO_UIDL, false);
	assert_action(&p, 2, 3, PLAN_OP_RETR, PLAN_R_NEW, true);
	assert_action(&p, 3, 4, PLAN_OP_SKIP, PLAN_R_NO_UIDL, false);
	plan_free(&p);
}

static void test_bad_listings_and_policies(void **state)
{
	struct listing l = { 0 };
	struct plan_policy pol = { 0 };
	struct plan p;
	const char *err = NULL;

	(void)state;
	add_msg(&l, 1, 10, "a");
	add_msg(&l, 1, 10, "b");
	struct plan_input in = input(&l, NULL);
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
	assert_non_null(strstr(err, "message 1 twice (LIST)"));

	memset(&l, 0, sizeof(l));
	add_msg(&l, 1, 10, "a");
	add_msg(&l, 2, 10, "b");
	l.uids[1].num = 1;
	in = input(&l, NULL);
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
	assert_non_null(strstr(err, "message 1 twice (UIDL)"));

	memset(&l, 0, sizeof(l));
	add_msg(&l, 0, 10, "a");
	in = input(&l, NULL);
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
	assert_non_null(strstr(err, "number 0"));

	memset(&l, 0, sizeof(l));
	add_msg(&l, 1, 10, "a");
	in = input(&l, NULL);
	pol.keep_days = PLAN_KEEP_DAYS_MAX + 1;
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
	pol.keep_days = 0;
	pol.keep = (enum plan_keep)7;
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
	pol.keep = PLAN_DELETE;
	pol.oversize = (enum plan_oversize)7;
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
	pol.oversize = PLAN_OVERSIZE_HEADERS;
	pol.top_lines = PLAN_TOP_LINES_MAX + 1;
	assert_int_equal(plan_make(&in, &pol, &p, &err), -1);
}

static void test_empty(void **state)
{
	struct listing l = { 0 };
	struct plan_policy pol = { 0 };
	struct plan p;

	(void)state;
	struct plan_input in = input(&l, NULL);
	make(&in, &pol, &p);
	assert_int_equal(p.count, 0);
	assert_int_equal(p.fetch_count, 0);
	plan_free(&p);
}

#define BIG 100000

static void test_big_listing(void **state)
{
	struct uidl_db *db = uidl_db_new();
	struct plan_scan *scan = calloc(BIG, sizeof(*scan));
	struct plan_uid *uids = calloc(BIG, sizeof(*uids));
	char (*names)[16] = calloc(BIG, 16);
	struct plan_policy pol = { .keep = PLAN_KEEP };
	struct plan p;

	(void)state;
	assert_non_null(scan);
	assert_non_null(uids);
	assert_non_null(names);
	for (uint32_t i = 0; i < BIG; i++) {
		/* Listed backwards, to make the sort work. */
		uint32_t num = BIG - i;
		int n = snprintf(names[i], 16, "m%u", num);
		scan[i] = (struct plan_scan){ .num = num, .size = num };
		uids[i] = (struct plan_uid){ .num = num, .uidl = names[i],
					     .len = (size_t)n };
		if (num % 2 == 0)
			put(db, names[i], 0, num, UIDL_DB_FULL);
	}
	struct plan_input in = {
		.scan = scan, .scan_count = BIG, .have_uidl = true,
		.uids = uids, .uid_count = BIG, .db = db, .now = NOW,
	};
	make(&in, &pol, &p);
	assert_int_equal(p.count, BIG);
	assert_int_equal(p.fetch_count, BIG / 2);
	for (size_t i = 0; i < p.count; i++) {
		assert_int_equal(p.actions[i].num, i + 1);
		assert_int_equal(p.actions[i].op, (i + 1) % 2 == 0 ?
				 PLAN_OP_SKIP : PLAN_OP_RETR);
	}
	plan_free(&p);
	assert_int_equal(plan_prune_db(db, &in), 0);
	free(scan);
	free(uids);
	free(names);
	uidl_db_free(&db);
}

/* ---- the whole loop, with crashes ------------------------------------------- */

#define SIM_MSGS 5

struct sim {
	/* The server: message k (0-based) has UIDL "m<k>" and size 100+k. */
	bool on_server[SIM_MSGS];
	bool marked[SIM_MSGS];       /* DELE in this session */
	int stored[SIM_MSGS];        /* copies in the local store */
	bool ever_deleted_unstored;
	struct uidl_db *db;          /* set() = durable: the model's record */
	int steps;                   /* steps taken in this run */
	int crash_at;                /* step number to crash at; 0 = none */
	int window_crashes;          /* crashes between commit and record */
};

static const char *sim_uidl(int k, char buf[16])
{
	snprintf(buf, 16, "m%d", k);
	return buf;
}

/* One step; false if the run crashes here (the step does not happen). */
static bool sim_step(struct sim *s)
{
	return s->crash_at == 0 || ++s->steps < s->crash_at;
}

/* Builds the listing as the server shows it now: numbers 1..n over the
   messages still there. */
static size_t sim_listing(const struct sim *s, struct listing *l,
			  int map[SIM_MSGS], char names[SIM_MSGS][16])
{
	memset(l, 0, sizeof(*l));
	for (int k = 0; k < SIM_MSGS; k++) {
		if (!s->on_server[k])
			continue;
		map[l->ns] = k;
		add_msg(l, (uint32_t)l->ns + 1, 100 + (uint64_t)k,
			sim_uidl(k, names[k]));
	}
	return l->ns;
}

/* Executes one action; false if the run crashed in it. */
static bool sim_action(struct sim *s, const struct plan_action *a, int k)
{
	const char *err;

	if (a->op == PLAN_OP_RETR) {
		if (!sim_step(s))          /* crash during RETR or store */
			return false;
		s->stored[k]++;            /* the commit returned */
		if (!sim_step(s)) {        /* crash before the record */
			s->window_crashes++;
			return false;
		}
		assert_int_equal(uidl_db_set(s->db, a->uidl, a->uidl_len,
					     &a->record, &err), 0);
	}
	if (a->op == PLAN_OP_DELE || a->dele_after) {
		if (!sim_step(s))
			return false;
		s->marked[k] = true;
	}
	return true;
}

/* One session; returns false if it crashed (then nothing is deleted). */
static bool sim_run(struct sim *s, const struct plan_policy *pol, int64_t now)
{
	struct listing l;
	char names[SIM_MSGS][16];
	int map[SIM_MSGS];
	struct plan p;

	s->steps = 0;
	memset(s->marked, 0, sizeof(s->marked));
	sim_listing(s, &l, map, names);
	struct plan_input in = input(&l, s->db);
	in.now = now;
	make(&in, pol, &p);
	plan_prune_db(s->db, &in);
	for (size_t i = 0; i < p.count; i++) {
		if (!sim_action(s, &p.actions[i], map[p.actions[i].num - 1])) {
			plan_free(&p);
			return false;
		}
	}
	plan_free(&p);
	if (!sim_step(s))                  /* crash before QUIT */
		return false;
	for (int k = 0; k < SIM_MSGS; k++) {
		if (!s->marked[k])
			continue;
		if (s->stored[k] == 0)
			s->ever_deleted_unstored = true;
		s->on_server[k] = false;       /* UPDATE */
	}
	return true;
}

static void sim_init(struct sim *s)
{
	memset(s, 0, sizeof(*s));
	for (int k = 0; k < SIM_MSGS; k++)
		s->on_server[k] = true;
	s->db = uidl_db_new();
	assert_non_null(s->db);
}

static void test_crash_anywhere_delete(void **state)
{
	struct plan_policy pol = { .keep = PLAN_DELETE };

	(void)state;
	/* A run of 5 new messages has 3 steps each and QUIT: crash at each
	   of them (and past the end: no crash). */
	for (int crash = 1; crash <= 3 * SIM_MSGS + 2; crash++) {
		struct sim s;

		sim_init(&s);
		s.crash_at = crash;
		bool done = sim_run(&s, &pol, NOW);
		assert_true(done == (crash > 3 * SIM_MSGS + 1));
		s.crash_at = 0;
		assert_true(sim_run(&s, &pol, NOW + 60));
		/* A third run finds nothing to do. */
		assert_true(sim_run(&s, &pol, NOW + 120));
		for (int k = 0; k < SIM_MSGS; k++) {
			assert_false(s.on_server[k]);
			assert_true(s.stored[k] >= 1);
		}
		int extra = 0;
		for (int k = 0; k < SIM_MSGS; k++)
			extra += s.stored[k] - 1;
		/* A second copy only from a crash inside the window. */
		assert_int_equal(extra, s.window_crashes);
		assert_false(s.ever_deleted_unstored);
		assert_int_equal(uidl_db_count(s.db), 0); /* all pruned */
		uidl_db_free(&s.db);
	}
}

static void test_crash_anywhere_keep_days(void **state)
{
	struct plan_policy pol = { .keep = PLAN_KEEP_DAYS, .keep_days = 7 };

	(void)state;
	for (int crash = 1; crash <= 2 * SIM_MSGS + 2; crash++) {
		struct sim s;

		sim_init(&s);
		s.crash_at = crash;
		(void)sim_run(&s, &pol, NOW);
		s.crash_at = 0;
		/* Days 1 and 6: nothing new, nothing deleted. */
		assert_true(sim_run(&s, &pol, NOW + 1 * DAY));
		assert_true(sim_run(&s, &pol, NOW + 6 * DAY));
		for (int k = 0; k < SIM_MSGS; k++)
			assert_true(s.on_server[k]);
		/* Day 8: a crash during the DELEs, then a clean run. */
		s.crash_at = 3;
		(void)sim_run(&s, &pol, NOW + 8 * DAY);
		s.crash_at = 0;
		assert_true(sim_run(&s, &pol, NOW + 8 * DAY + 60));
		int extra = 0;
		for (int k = 0; k < SIM_MSGS; k++) {
			assert_false(s.on_server[k]);
			assert_true(s.stored[k] >= 1);
			extra += s.stored[k] - 1;
		}
		assert_int_equal(extra, s.window_crashes);
		assert_false(s.ever_deleted_unstored);
		uidl_db_free(&s.db);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_delete_new_and_known),
		cmocka_unit_test(test_keep),
		cmocka_unit_test(test_keep_days),
		cmocka_unit_test(test_fetch_all),
		cmocka_unit_test(test_size_limit_skip),
		cmocka_unit_test(test_size_limit_headers),
		cmocka_unit_test(test_run_limit),
		cmocka_unit_test(test_no_uidl),
		cmocka_unit_test(test_duplicate_uidl),
		cmocka_unit_test(test_gaps_order_mismatch),
		cmocka_unit_test(test_invalid_uidl),
		cmocka_unit_test(test_bad_listings_and_policies),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_big_listing),
		cmocka_unit_test(test_crash_anywhere_delete),
		cmocka_unit_test(test_crash_anywhere_keep_days),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
