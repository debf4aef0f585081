/*
 * user-policy.c — quota, retention and POP access per account (user-policy.h).
 *
 * The passwd-file fields are parsed strictly: a value that does not parse
 * refuses the whole line (passwd-file.c), since a quota or a retention
 * period silently ignored would keep or lose mail against the admin's will.
 */
#include "user-policy.h"

#include <string.h>

#include "auth-proto.h"
#include "ipc.h"
#include "settings.h"
#include "strnum.h"

void user_policy_init(struct user_policy *pol)
{
	pol->quota_storage = USER_POLICY_UNSET;
	pol->quota_messages = USER_POLICY_UNSET;
	pol->keep_days = USER_POLICY_UNSET;
	pol->expire_days = USER_POLICY_UNSET;
	pol->pop3 = USER_POLICY_UNSET;
}

int user_policy_parse_size(const char *s, size_t len, uint64_t max,
			   uint64_t *bytes_r)
{
	unsigned int shift = 0;

	if (len > 0 && (s[len - 1] == 'B' || s[len - 1] == 'b'))
		len--;
	if (len > 0) {
		switch (s[len - 1]) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		case 't': case 'T': shift = 40; break;
		default: break;
		}
		if (shift > 0)
			len--;
	}
	uint64_t n;
	if (strnum_parse_u64(s, len, max >> shift, &n) < 0)
		return -1;
	*bytes_r = n << shift;
	return 0;
}

static bool user_policy_key_is(const char *key, size_t keylen, const char *name)
{
	return strlen(name) == keylen && memcmp(key, name, keylen) == 0;
}

/* "*:storage=SIZE:messages=N" (either part may be left out, not both). */
static int user_policy_quota_rule(struct user_policy *pol, const char *v,
				  size_t vlen)
{
	if (vlen < 2 || v[0] != '*' || v[1] != ':' ||
	    pol->quota_storage != USER_POLICY_UNSET ||
	    pol->quota_messages != USER_POLICY_UNSET)
		return -1;
	size_t i = 2;
	while (i < vlen) {
		size_t end = i;
		while (end < vlen && v[end] != ':')
			end++;
		const char *part = v + i, *eq = memchr(part, '=', end - i);
		if (eq == NULL)
			return -1;
		size_t klen = (size_t)(eq - part), plen = end - i - klen - 1;
		uint64_t n;
		if (user_policy_key_is(part, klen, "storage") &&
		    pol->quota_storage == USER_POLICY_UNSET) {
			if (user_policy_parse_size(eq + 1, plen,
						   USER_POLICY_STORAGE_MAX, &n) < 0)
				return -1;
			pol->quota_storage = (int64_t)n;
		} else if (user_policy_key_is(part, klen, "messages") &&
			   pol->quota_messages == USER_POLICY_UNSET) {
			if (strnum_parse_u64(eq + 1, plen,
					     USER_POLICY_MESSAGES_MAX, &n) < 0)
				return -1;
			pol->quota_messages = (int64_t)n;
		} else {
			return -1;
		}
		i = end + 1;
	}
	return pol->quota_storage != USER_POLICY_UNSET ||
	       pol->quota_messages != USER_POLICY_UNSET ? 1 : -1;
}

static int user_policy_days(int32_t *field, const char *v, size_t vlen,
			    bool allow_never, uint64_t min)
{
	uint64_t n;

	if (*field != USER_POLICY_UNSET)
		return -1;
	if (allow_never && vlen == 5 && memcmp(v, "never", 5) == 0) {
		*field = USER_POLICY_NEVER;
		return 1;
	}
	if (strnum_parse_u64(v, vlen, USER_POLICY_DAYS_MAX, &n) < 0 || n < min)
		return -1;
	*field = (int32_t)n;
	return 1;
}

int user_policy_parse_field(struct user_policy *pol, const char *key,
			    size_t keylen, const char *value, size_t vlen)
{
	/* Dovecot's passwd-file prefixes userdb fields with "userdb_". */
	if (keylen > 7 && memcmp(key, "userdb_", 7) == 0) {
		key += 7;
		keylen -= 7;
	}
	bool known = user_policy_key_is(key, keylen, "quota_rule") ||
		     user_policy_key_is(key, keylen, "keep_days") ||
		     user_policy_key_is(key, keylen, "expire_days") ||
		     user_policy_key_is(key, keylen, "pop3");
	if (!known)
		return 0;
	if (value == NULL)
		return -1;
	if (user_policy_key_is(key, keylen, "quota_rule"))
		return user_policy_quota_rule(pol, value, vlen);
	if (user_policy_key_is(key, keylen, "keep_days"))
		return user_policy_days(&pol->keep_days, value, vlen, false, 0);
	if (user_policy_key_is(key, keylen, "expire_days"))
		return user_policy_days(&pol->expire_days, value, vlen, true, 1);
	if (pol->pop3 != USER_POLICY_UNSET)
		return -1;
	if (vlen == 3 && memcmp(value, "yes", 3) == 0)
		pol->pop3 = 1;
	else if (vlen == 2 && memcmp(value, "no", 2) == 0)
		pol->pop3 = 0;
	else
		return -1;
	return 1;
}

void user_policy_resolve(const struct user_policy *user,
			 const struct popboxd_settings *set,
			 struct user_policy *effective_r)
{
	*effective_r = *user;
	if (user->quota_storage == USER_POLICY_UNSET)
		effective_r->quota_storage = (int64_t)set->quota_storage;
	if (user->quota_messages == USER_POLICY_UNSET)
		effective_r->quota_messages = (int64_t)set->quota_messages;
	if (user->keep_days == USER_POLICY_UNSET)
		effective_r->keep_days = (int32_t)set->keep_days;
	/*
	 * A site whose expire_days is "never" promises every client, before
	 * login, that nothing expires (RFC 2449 section 6.7: "EXPIRE NEVER",
	 * which takes no USER tag).  So an account's own expire_days counts
	 * only under a numeric site value ("EXPIRE n USER"); under "never" it
	 * is ignored, and `popbox expire` says so.
	 */
	if (user->expire_days == USER_POLICY_UNSET || set->expire_days < 0)
		effective_r->expire_days = set->expire_days < 0 ?
			USER_POLICY_NEVER : set->expire_days;
	if (user->pop3 == USER_POLICY_UNSET)
		effective_r->pop3 = 1;
}

/* Wire form: five big-endian fields, 8+8+4+4+4 bytes. */
#define USER_POLICY_WIRE_LEN 28

static void put_be(uint8_t *p, uint64_t v, unsigned int bytes)
{
	for (unsigned int i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

static uint64_t get_be(const uint8_t *p, unsigned int bytes)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < bytes; i++)
		v = v << 8 | p[i];
	return v;
}

void user_policy_ipc_put(struct ipc_writer *w, const struct user_policy *pol)
{
	uint8_t b[USER_POLICY_WIRE_LEN];

	put_be(b, (uint64_t)pol->quota_storage, 8);
	put_be(b + 8, (uint64_t)pol->quota_messages, 8);
	put_be(b + 16, (uint32_t)pol->keep_days, 4);
	put_be(b + 20, (uint32_t)pol->expire_days, 4);
	put_be(b + 24, (uint32_t)pol->pop3, 4);
	ipc_put(w, AUTH_TAG_POLICY, b, sizeof(b));
}

bool user_policy_ipc_get(const struct ipc_msg *msg, struct user_policy *pol_r)
{
	uint8_t b[USER_POLICY_WIRE_LEN];
	struct user_policy p;

	if (!ipc_get_fixed(msg, AUTH_TAG_POLICY, b, sizeof(b)))
		return false;
	p.quota_storage = (int64_t)get_be(b, 8);
	p.quota_messages = (int64_t)get_be(b + 8, 8);
	p.keep_days = (int32_t)(uint32_t)get_be(b + 16, 4);
	p.expire_days = (int32_t)(uint32_t)get_be(b + 20, 4);
	p.pop3 = (int32_t)(uint32_t)get_be(b + 24, 4);
	if (p.quota_storage < USER_POLICY_UNSET ||
	    p.quota_storage > USER_POLICY_STORAGE_MAX ||
	    p.quota_messages < USER_POLICY_UNSET ||
	    p.quota_messages > USER_POLICY_MESSAGES_MAX ||
	    p.keep_days < USER_POLICY_UNSET || p.keep_days > USER_POLICY_DAYS_MAX ||
	    p.expire_days < USER_POLICY_NEVER || p.expire_days == 0 ||
	    p.expire_days > USER_POLICY_DAYS_MAX ||
	    p.pop3 < USER_POLICY_UNSET || p.pop3 > 1)
		return false;
	*pol_r = p;
	return true;
}
