/*
 * retention.c — the retention decision and kept-message names
 * (see retention.h).
 *
 * Invariants: no I/O, no allocation, never reads outside name[0..len) nor
 * writes outside out[0..size); a name is hostile input (anyone who can
 * write into the Maildir, an IMAP client included, chooses it).
 */
#include "retention.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "user-policy.h"

/* 2^40 has 13 digits; 20 is what any uint64_t needs. */
#define RETENTION_DIGITS_MAX 20

bool retention_older_than(int64_t since, int64_t now, int32_t days)
{
	if (days < 0 || since >= now)
		return false;
	/* since < now, so the difference is positive and fits in uint64_t
	   even for since near INT64_MIN; days * 86400 fits easily. */
	uint64_t age = (uint64_t)now - (uint64_t)since;
	return age > (uint64_t)days * RETENTION_DAY_SECONDS;
}

bool retention_due(enum retention_place where, int64_t since, int64_t now,
		   const struct user_policy *eff)
{
	if (where == RETENTION_KEPT) {
		if (since == RETENTION_SINCE_UNKNOWN ||
		    eff->keep_days > USER_POLICY_DAYS_MAX)
			return false;
		return retention_older_than(since, now, eff->keep_days);
	}
	if (eff->expire_days < 1 || eff->expire_days > USER_POLICY_DAYS_MAX)
		return false; /* never, or not a resolved policy */
	return retention_older_than(since, now, eff->expire_days);
}

/* The base name's length: up to the first ':' (all of it if none). */
static size_t retention_base_len(const char *name, size_t len)
{
	const char *colon = memchr(name, ':', len);

	return colon == NULL ? len : (size_t)(colon - name);
}

/* Is field f[0..flen) (after its comma) a ",K=" field? */
static bool retention_is_k_field(const char *f, size_t flen)
{
	return flen >= 2 && f[0] == 'K' && f[1] == '=';
}

/* Digits only, 1..RETENTION_DIGITS_MAX of them, at most the maximum. */
static bool retention_number(const char *s, size_t len, int64_t *value_r)
{
	uint64_t v = 0;

	if (len == 0 || len > RETENTION_DIGITS_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		/* v <= 2^40 before this step: no overflow. */
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > (uint64_t)RETENTION_SINCE_MAX)
			return false;
	}
	*value_r = (int64_t)v;
	return true;
}

/*
 * The fields of a base name: the parts after each comma.  The part before
 * the first comma is the unique part of the name, never a field.
 */
struct retention_fields {
	const char *next;     /* the next field's comma, or NULL */
	const char *end;      /* the end of the base name */
};

static void retention_fields_init(struct retention_fields *it,
				  const char *base, size_t blen)
{
	it->next = memchr(base, ',', blen);
	it->end = base + blen;
}

/* The next field, without its comma: false when there is none left. */
static bool retention_fields_next(struct retention_fields *it,
				  const char **f_r, size_t *flen_r)
{
	if (it->next == NULL)
		return false;
	const char *f = it->next + 1;
	it->next = memchr(f, ',', (size_t)(it->end - f));
	*f_r = f;
	*flen_r = (size_t)((it->next != NULL ? it->next : it->end) - f);
	return true;
}

bool retention_kept_since(const char *name, size_t len, int64_t *since_r)
{
	size_t blen = retention_base_len(name, len);
	struct retention_fields it;
	unsigned int seen = 0;
	const char *f;
	size_t flen;
	int64_t v = 0;
	bool ok = false;

	retention_fields_init(&it, name, blen);
	while (retention_fields_next(&it, &f, &flen)) {
		if (!retention_is_k_field(f, flen))
			continue;
		seen++;
		ok = retention_number(f + 2, flen - 2, &v);
	}
	if (seen != 1 || !ok)
		return false;
	*since_r = v;
	return true;
}

/* Appends src[0..n) at out[*pos], if it fits below limit. */
static bool retention_put(char *out, size_t limit, size_t *pos,
			  const char *src, size_t n)
{
	if (n > limit - *pos)
		return false;
	memcpy(out + *pos, src, n);
	*pos += n;
	return true;
}

ssize_t retention_kept_name(const char *name, size_t len, int64_t now,
			    char *out, size_t size)
{
	size_t blen = retention_base_len(name, len);
	const char *first_comma = memchr(name, ',', blen);
	size_t unique_len = first_comma == NULL ? blen :
			    (size_t)(first_comma - name);
	/* Room for the name and its NUL, within NAME_MAX. */
	size_t limit = size == 0 ? 0 : size - 1;
	struct retention_fields it;
	char field[32];
	const char *f;
	size_t flen, pos = 0;

	if (limit > RETENTION_NAME_MAX)
		limit = RETENTION_NAME_MAX;
	if (now < 0 || now > RETENTION_SINCE_MAX || size == 0 || len == 0 ||
	    memchr(name, '\0', len) != NULL || memchr(name, '/', len) != NULL)
		return -1; /* never a file name */
	if (!retention_put(out, limit, &pos, name, unique_len))
		return -1;
	retention_fields_init(&it, name, blen);
	while (retention_fields_next(&it, &f, &flen)) {
		if (retention_is_k_field(f, flen))
			continue;
		if (!retention_put(out, limit, &pos, f - 1, flen + 1))
			return -1;
	}
	int n = snprintf(field, sizeof(field), ",K=%" PRId64, now);
	if (n < 0 || !retention_put(out, limit, &pos, field, (size_t)n) ||
	    !retention_put(out, limit, &pos, name + blen, len - blen))
		return -1;
	out[pos] = '\0';
	return (ssize_t)pos;
}
