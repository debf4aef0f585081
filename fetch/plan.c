/*
 * plan.c — what to do with each listed message (see plan.h for the
 * policies and the argument for the order of steps).
 *
 * The two listings are copied and sorted by message number, checked (no
 * number 0, none twice in one listing), and merged into one row per
 * number.  UIDLs listed more than once are found by sorting the UIDL
 * listing by value.  Then each row is decided on its own (plan_decide,
 * a function of the row, its record and the policy), and the per-run
 * limit is applied in number order.  O(n log n) for n listed messages.
 */
#include "plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One listed message: both listings merged. */
struct plan_row {
	uint32_t num;
	bool has_size;
	uint64_t size;
	const struct plan_uid *uid;  /* NULL: not in the UIDL listing */
	bool dup_uidl;
};

static _Thread_local char plan_errbuf[256];

static void plan_format_error(const char **error_r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void plan_format_error(const char **error_r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(plan_errbuf, sizeof(plan_errbuf), fmt, ap);
	va_end(ap);
	*error_r = plan_errbuf;
}

/* Sets *error_r and is -1.  A macro so that the static analyzer, which
   does not follow what a variadic function returns, sees the -1. */
#define plan_fail(error_r, ...) (plan_format_error(error_r, __VA_ARGS__), -1)

/* ---- sorting and checking ------------------------------------------------ */

static int plan_cmp_scan(const void *a, const void *b)
{
	uint32_t x = ((const struct plan_scan *)a)->num;
	uint32_t y = ((const struct plan_scan *)b)->num;

	return (x > y) - (x < y);
}

static int plan_cmp_uid_num(const void *a, const void *b)
{
	uint32_t x = ((const struct plan_uid *)a)->num;
	uint32_t y = ((const struct plan_uid *)b)->num;

	return (x > y) - (x < y);
}

static int plan_cmp_bytes(const char *a, size_t alen, const char *b,
			  size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

/* A UIDL listing entry, sorted by value elsewhere. */
struct plan_uid_ref {
	const struct plan_uid *uid;
};

static int plan_cmp_uid_value(const void *a, const void *b)
{
	const struct plan_uid *x = ((const struct plan_uid_ref *)a)->uid;
	const struct plan_uid *y = ((const struct plan_uid_ref *)b)->uid;

	return plan_cmp_bytes(x->uidl, x->len, y->uidl, y->len);
}

/* A sorted copy of in's scan listing, checked. */
static int plan_sorted_scan(const struct plan_input *in,
			    struct plan_scan **scan_r, const char **error_r)
{
	struct plan_scan *s = calloc(in->scan_count > 0 ? in->scan_count : 1,
				     sizeof(*s));

	*scan_r = NULL;
	if (s == NULL)
		return plan_fail(error_r, "out of memory");
	if (in->scan_count > 0)
		memcpy(s, in->scan, in->scan_count * sizeof(*s));
	if (in->scan_count > 1)
		qsort(s, in->scan_count, sizeof(*s), plan_cmp_scan);
	for (size_t i = 0; i < in->scan_count; i++) {
		if (s[i].num == 0 || (i > 0 && s[i].num == s[i - 1].num)) {
			uint32_t num = s[i].num;
			free(s);
			if (num == 0)
				return plan_fail(error_r, "the server listed "
						 "message number 0");
			return plan_fail(error_r, "the server listed message "
					 "%u twice (LIST)", (unsigned int)num);
		}
	}
	*scan_r = s;
	return 0;
}

/* A sorted copy of the UIDL listing, checked, and which of its entries
   share their UIDL with another (dup[i] for the sorted entry i). */
static int plan_sorted_uids(const struct plan_input *in,
			    struct plan_uid **uids_r, bool **dup_r,
			    const char **error_r)
{
	size_t n = in->have_uidl ? in->uid_count : 0;
	struct plan_uid *u = calloc(n > 0 ? n : 1, sizeof(*u));
	struct plan_uid_ref *byval = calloc(n > 0 ? n : 1, sizeof(*byval));
	bool *dup = calloc(n > 0 ? n : 1, sizeof(*dup));

	*uids_r = NULL;
	*dup_r = NULL;
	if (u == NULL || byval == NULL || dup == NULL)
		goto oom;
	if (n > 0)
		memcpy(u, in->uids, n * sizeof(*u));
	if (n > 1)
		qsort(u, n, sizeof(*u), plan_cmp_uid_num);
	for (size_t i = 0; i < n; i++) {
		if (u[i].num == 0 || (i > 0 && u[i].num == u[i - 1].num)) {
			uint32_t num = u[i].num;
			free(u);
			free(byval);
			free(dup);
			if (num == 0)
				return plan_fail(error_r, "the server listed "
						 "message number 0");
			return plan_fail(error_r, "the server listed message "
					 "%u twice (UIDL)", (unsigned int)num);
		}
		byval[i].uid = &u[i];
	}
	if (n > 1)
		qsort(byval, n, sizeof(*byval), plan_cmp_uid_value);
	for (size_t i = 1; i < n; i++) {
		if (plan_cmp_uid_value(&byval[i - 1], &byval[i]) == 0)
			dup[byval[i - 1].uid - u] = dup[byval[i].uid - u] =
				true;
	}
	free(byval);
	*uids_r = u;
	*dup_r = dup;
	return 0;
oom:
	free(u);
	free(byval);
	free(dup);
	return plan_fail(error_r, "out of memory");
}

/* Both sorted listings into one row per message number (at most
   scan_count + uid_count rows). */
static size_t plan_merge(const struct plan_scan *s, size_t ns,
			 const struct plan_uid *u, const bool *dup, size_t nu,
			 struct plan_row *rows)
{
	size_t i = 0, j = 0, n = 0;

	while (i < ns || j < nu) {
		struct plan_row *r = &rows[n++];
		memset(r, 0, sizeof(*r));
		if (j >= nu || (i < ns && s[i].num < u[j].num)) {
			r->num = s[i].num;
			r->has_size = true;
			r->size = s[i++].size;
		} else if (i >= ns || u[j].num < s[i].num) {
			r->num = u[j].num;
			r->dup_uidl = dup[j];
			r->uid = &u[j++];
		} else {
			r->num = s[i].num;
			r->has_size = true;
			r->size = s[i++].size;
			r->dup_uidl = dup[j];
			r->uid = &u[j++];
		}
	}
	return n;
}

/* ---- one message ------------------------------------------------------- */

static int64_t plan_clamp_time(int64_t t)
{
	if (t < 0)
		return 0;
	return t > UIDL_DB_TIME_MAX ? UIDL_DB_TIME_MAX : t;
}

/* Is a message first downloaded at first_seen due for DELE? */
static bool plan_due(const struct plan_policy *pol, int64_t first_seen,
		     int64_t now)
{
	switch (pol->keep) {
	case PLAN_DELETE:
		return true;
	case PLAN_KEEP:
		return false;
	case PLAN_KEEP_DAYS:
		/* first_seen >= 0, so now - first_seen cannot overflow. */
		return now >= first_seen &&
		       now - first_seen >=
			       (int64_t)pol->keep_days * PLAN_DAY_SECONDS;
	}
	return false;
}

static void plan_set_skip(struct plan_action *a, enum plan_reason reason)
{
	a->op = PLAN_OP_SKIP;
	a->reason = reason;
	a->dele_after = false;
}

/* Fetch: whole if it fits, else per the oversize policy. rec is what to
   record afterwards for a whole message. */
static void plan_set_fetch(struct plan_action *a, const struct plan_policy *pol,
			   const struct plan_input *in, enum plan_reason reason,
			   int64_t first_seen)
{
	bool fits = pol->size_limit == 0 || a->size <= pol->size_limit;

	a->reason = reason;
	a->record.size = a->size;
	if (fits) {
		a->op = PLAN_OP_RETR;
		a->record.state = UIDL_DB_FULL;
		a->record.first_seen = first_seen;
		a->dele_after = plan_due(pol, first_seen, in->now);
	} else if (pol->oversize == PLAN_OVERSIZE_HEADERS) {
		a->op = PLAN_OP_TOP;
		a->top_lines = pol->top_lines;
		a->record.state = UIDL_DB_HEADERS;
		a->record.first_seen = first_seen;
	} else {
		plan_set_skip(a, PLAN_R_TOO_BIG);
	}
}

/* A message stored whole before, with the same size. */
static void plan_known_full(struct plan_action *a,
			    const struct plan_policy *pol,
			    const struct plan_input *in,
			    const struct uidl_db_rec *rec)
{
	if (pol->fetch_all) {
		plan_set_fetch(a, pol, in, PLAN_R_FETCH_ALL, rec->first_seen);
		if (a->op == PLAN_OP_TOP)
			a->record = *rec; /* never downgrade to 'H' */
		return;
	}
	if (!plan_due(pol, rec->first_seen, in->now)) {
		plan_set_skip(a, PLAN_R_KEPT);
		return;
	}
	a->op = PLAN_OP_DELE;
	a->reason = pol->keep == PLAN_DELETE ? PLAN_R_STORED : PLAN_R_EXPIRED;
}

/* A message whose header only was stored before, same size. */
static void plan_known_headers(struct plan_action *a,
			       const struct plan_policy *pol,
			       const struct plan_input *in,
			       const struct uidl_db_rec *rec)
{
	bool fits = pol->size_limit == 0 || a->size <= pol->size_limit;

	if (fits) {
		/* The clock of "keep N days" starts with the whole message. */
		plan_set_fetch(a, pol, in, PLAN_R_NOW_FITS,
			       plan_clamp_time(in->now));
	} else if (pol->fetch_all && pol->oversize == PLAN_OVERSIZE_HEADERS) {
		plan_set_fetch(a, pol, in, PLAN_R_FETCH_ALL, rec->first_seen);
	} else {
		plan_set_skip(a, PLAN_R_HEADERS_KEPT);
	}
}

static void plan_decide(struct plan_action *a, const struct plan_row *row,
			const struct plan_policy *pol,
			const struct plan_input *in)
{
	struct uidl_db_rec rec;
	int64_t now = plan_clamp_time(in->now);

	if (!row->has_size) {
		plan_set_skip(a, PLAN_R_NO_SIZE);
		return;
	}
	if (!in->have_uidl) {
		plan_set_fetch(a, pol, in, PLAN_R_NEW, now);
		a->dele_after = a->op == PLAN_OP_RETR; /* delete is the only policy */
		return;
	}
	if (row->uid == NULL || !uidl_db_uidl_valid(row->uid->uidl,
						    row->uid->len)) {
		plan_set_skip(a, PLAN_R_NO_UIDL);
		return;
	}
	a->uidl = row->uid->uidl;
	a->uidl_len = row->uid->len;
	if (row->dup_uidl) {
		plan_set_skip(a, PLAN_R_DUP_UIDL);
		return;
	}
	if (in->db == NULL || !uidl_db_get(in->db, a->uidl, a->uidl_len, &rec))
		plan_set_fetch(a, pol, in, PLAN_R_NEW, now);
	else if (rec.size != a->size)
		plan_set_fetch(a, pol, in, PLAN_R_SIZE_CHANGED, now);
	else if (rec.state == UIDL_DB_FULL)
		plan_known_full(a, pol, in, &rec);
	else
		plan_known_headers(a, pol, in, &rec);
}

/* ---- the plan ------------------------------------------------------------- */

static int plan_check_policy(const struct plan_input *in,
			     const struct plan_policy *pol,
			     const char **error_r)
{
	if (pol->keep != PLAN_DELETE && pol->keep != PLAN_KEEP &&
	    pol->keep != PLAN_KEEP_DAYS)
		return plan_fail(error_r, "unknown keep policy");
	if (pol->keep_days > PLAN_KEEP_DAYS_MAX)
		return plan_fail(error_r, "keep days above %d",
				 PLAN_KEEP_DAYS_MAX);
	if (pol->oversize != PLAN_OVERSIZE_SKIP &&
	    pol->oversize != PLAN_OVERSIZE_HEADERS)
		return plan_fail(error_r, "unknown size-limit policy");
	if (pol->top_lines > PLAN_TOP_LINES_MAX)
		return plan_fail(error_r, "more than %d TOP lines",
				 PLAN_TOP_LINES_MAX);
	if (in->have_uidl)
		return 0;
	if (pol->keep == PLAN_KEEP ||
	    (pol->keep == PLAN_KEEP_DAYS && pol->keep_days > 0))
		return plan_fail(error_r, "the server has no UIDL, so keeping "
				 "messages on it is not safe (they would be "
				 "downloaded again every run): only delete "
				 "after download works with this server");
	if (pol->size_limit > 0 && pol->oversize == PLAN_OVERSIZE_HEADERS)
		return plan_fail(error_r, "the server has no UIDL, so storing "
				 "only the header of large messages is not "
				 "safe (it would be stored again every run)");
	return 0;
}

/* The per-run limit, in number order, then the totals. */
static void plan_finish(struct plan *p, const struct plan_policy *pol)
{
	for (size_t i = 0; i < p->count; i++) {
		struct plan_action *a = &p->actions[i];
		bool fetch = a->op == PLAN_OP_RETR || a->op == PLAN_OP_TOP;

		if (fetch && pol->max_messages > 0 &&
		    p->fetch_count >= pol->max_messages) {
			plan_set_skip(a, PLAN_R_RUN_LIMIT);
			fetch = false;
		}
		if (fetch) {
			p->fetch_count++;
			p->fetch_bytes += a->size;
		}
		if (a->op == PLAN_OP_DELE || a->dele_after)
			p->dele_count++;
		if (a->op == PLAN_OP_SKIP)
			p->skip_count++;
	}
}

int plan_make(const struct plan_input *in, const struct plan_policy *pol,
	      struct plan *plan_r, const char **error_r)
{
	struct plan_scan *scan = NULL;
	struct plan_uid *uids = NULL;
	struct plan_row *rows = NULL;
	bool *dup = NULL;
	int ret = -1;

	memset(plan_r, 0, sizeof(*plan_r));
	size_t nu = in->have_uidl ? in->uid_count : 0;
	if (plan_check_policy(in, pol, error_r) < 0 ||
	    plan_sorted_scan(in, &scan, error_r) < 0 ||
	    plan_sorted_uids(in, &uids, &dup, error_r) < 0)
		goto out;
	/* scan_count and uid_count are sizes of arrays in memory. */
	size_t max_rows = in->scan_count + nu;
	rows = calloc(max_rows > 0 ? max_rows : 1, sizeof(*rows));
	plan_r->actions = calloc(max_rows > 0 ? max_rows : 1,
				 sizeof(*plan_r->actions));
	if (rows == NULL || plan_r->actions == NULL) {
		plan_free(plan_r);
		plan_format_error(error_r, "out of memory");
		goto out;
	}
	plan_r->count = plan_merge(scan, in->scan_count, uids, dup, nu, rows);
	for (size_t i = 0; i < plan_r->count; i++) {
		struct plan_action *a = &plan_r->actions[i];
		a->num = rows[i].num;
		a->size = rows[i].size;
		plan_decide(a, &rows[i], pol, in);
	}
	plan_finish(plan_r, pol);
	ret = 0;
out:
	free(scan);
	free(uids);
	free(dup);
	free(rows);
	return ret;
}

void plan_free(struct plan *plan)
{
	free(plan->actions);
	memset(plan, 0, sizeof(*plan));
}

/* ---- pruning the table ---------------------------------------------------- */

struct plan_listed {
	struct plan_uid_ref *byval;
	size_t n;
};

static bool plan_is_listed(const char *uidl, size_t len,
			   const struct uidl_db_rec *rec, void *ctx)
{
	const struct plan_listed *l = ctx;
	size_t lo = 0, hi = l->n;

	(void)rec;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = plan_cmp_bytes(uidl, len, l->byval[mid].uid->uidl,
				       l->byval[mid].uid->len);
		if (c == 0)
			return true;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return false;
}

size_t plan_prune_db(struct uidl_db *db, const struct plan_input *in)
{
	struct plan_listed l = { 0 };
	size_t removed;

	if (!in->have_uidl || db == NULL)
		return 0;
	l.byval = calloc(in->uid_count > 0 ? in->uid_count : 1,
			 sizeof(*l.byval));
	if (l.byval == NULL)
		return 0; /* nothing pruned: the table only stays larger */
	for (size_t i = 0; i < in->uid_count; i++)
		l.byval[l.n++].uid = &in->uids[i];
	if (l.n > 1)
		qsort(l.byval, l.n, sizeof(*l.byval), plan_cmp_uid_value);
	removed = uidl_db_retain(db, plan_is_listed, &l);
	free(l.byval);
	return removed;
}

const char *plan_op_name(enum plan_op op)
{
	static const char *const names[] = {
		[PLAN_OP_SKIP] = "skip", [PLAN_OP_RETR] = "retr",
		[PLAN_OP_TOP] = "top", [PLAN_OP_DELE] = "dele",
	};

	return (size_t)op < sizeof(names) / sizeof(names[0]) ? names[op] : "?";
}

const char *plan_reason_name(enum plan_reason reason)
{
	static const char *const names[] = {
		[PLAN_R_NEW] = "new",
		[PLAN_R_SIZE_CHANGED] = "size-changed",
		[PLAN_R_NOW_FITS] = "now-fits",
		[PLAN_R_FETCH_ALL] = "fetch-all",
		[PLAN_R_STORED] = "stored",
		[PLAN_R_EXPIRED] = "expired",
		[PLAN_R_KEPT] = "kept",
		[PLAN_R_HEADERS_KEPT] = "headers-kept",
		[PLAN_R_TOO_BIG] = "too-big",
		[PLAN_R_RUN_LIMIT] = "run-limit",
		[PLAN_R_NO_UIDL] = "no-uidl",
		[PLAN_R_DUP_UIDL] = "dup-uidl",
		[PLAN_R_NO_SIZE] = "no-size",
	};

	return (size_t)reason < sizeof(names) / sizeof(names[0]) ?
	       names[reason] : "?";
}
