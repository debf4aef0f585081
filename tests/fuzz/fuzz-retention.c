/*
 * fuzz-retention.c — the kept-message names of retention.h on arbitrary
 * bytes (a name in .Kept is chosen by whoever can write into the Maildir).
 *
 * Input: 8 bytes of "now" (big-endian), then the file name.  Checks:
 *   - retention_kept_since() only accepts a value within range;
 *   - retention_kept_name() either refuses or writes a name of at most
 *     NAME_MAX bytes that reads back as exactly `now`, keeps the info part
 *     and the unique part, and contains no NUL;
 *   - retention_due() never removes when the time is unknown or in the
 *     future, nor anything under a NEVER policy.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "retention.h"
#include "user-policy.h"

static int64_t fuzz_now(const uint8_t *data)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | data[i];
	return (int64_t)v;
}

static void check_since(const char *name, size_t len)
{
	int64_t since = -1;

	if (retention_kept_since(name, len, &since) &&
	    (since < 0 || since > RETENTION_SINCE_MAX))
		abort();
}

static void check_name(const char *name, size_t len, int64_t now)
{
	char out[RETENTION_NAME_MAX + 1];
	const char *colon = memchr(name, ':', len);
	size_t info = colon == NULL ? 0 : len - (size_t)(colon - name);
	ssize_t n = retention_kept_name(name, len, now, out, sizeof(out));
	int64_t since;

	if (n < 0)
		return;
	if (n > RETENTION_NAME_MAX || out[n] != '\0' ||
	    memchr(out, '\0', (size_t)n) != NULL)
		abort();
	if (!retention_kept_since(out, (size_t)n, &since) || since != now)
		abort();
	/* The info part is carried over byte for byte, at the end. */
	if ((size_t)n < info ||
	    (info > 0 && memcmp(out + n - info, colon, info) != 0))
		abort();
	/* So is the unique part, at the start. */
	const char *comma = memchr(name, ',', len - info);
	size_t unique = comma == NULL ? len - info : (size_t)(comma - name);
	if ((size_t)n < unique || memcmp(out, name, unique) != 0)
		abort();
}

static void check_due(int64_t since, int64_t now)
{
	struct user_policy p;

	user_policy_init(&p);
	p.keep_days = (int32_t)((uint64_t)since % (USER_POLICY_DAYS_MAX + 1));
	p.expire_days = USER_POLICY_NEVER;
	if (retention_due(RETENTION_MAILDROP, since, now, &p) ||
	    retention_due(RETENTION_KEPT, RETENTION_SINCE_UNKNOWN, now, &p))
		abort();
	if (since >= now && retention_due(RETENTION_KEPT, since, now, &p))
		abort();
	p.expire_days = 1;
	if (since >= now && retention_due(RETENTION_MAILDROP, since, now, &p))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 8)
		return 0;
	int64_t now = fuzz_now(data);
	const char *name = (const char *)data + 8;
	size_t len = size - 8;

	check_since(name, len);
	check_name(name, len, now);
	check_name(name, len, now & (RETENTION_SINCE_MAX - 1));
	check_due(now, (int64_t)len * 86400);
	check_due((int64_t)len, now);
	return 0;
}
