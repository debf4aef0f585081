/*
 * user-policy.h — what an account may do and how its mail is kept: quota,
 * retention, POP access.  Global defaults come from the settings; a user's
 * passwd-file extra fields override them:
 *
 *   quota_rule=*:storage=SIZE[:messages=N]   (also userdb_quota_rule;
 *                    Dovecot's syntax, only the "*" rule; SIZE is bytes
 *                    with an optional k, M, G or T suffix; 0 = no limit)
 *   keep_days=N      DELEted messages are kept out of sight for N days
 *                    before `popbox expire` removes them (0: removed at QUIT)
 *   expire_days=N|never   messages older than N days (since delivery) are
 *                    removed by `popbox expire`; CAPA EXPIRE announces it.
 *                    Honoured only when the site's expire_days is a number:
 *                    a site set to "never" announces EXPIRE NEVER before
 *                    login, a promise no account may break
 *   pop3=yes|no      POP access on or off ("no": the login fails with [AUTH])
 *
 * Pure: no I/O, no globals.  The parser of the extra fields is fuzzed with
 * the passwd-file parser (tests/fuzz/fuzz-passwd-file.c).
 */
#ifndef POPBOX_USER_POLICY_H
#define POPBOX_USER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ipc_writer;
struct ipc_msg;
struct popboxd_settings;

#define USER_POLICY_UNSET (-1)
/* expire_days "never" (RFC 2449 EXPIRE NEVER). */
#define USER_POLICY_NEVER (-2)
/* Bounds of the day counts (ten years) and of a quota. */
#define USER_POLICY_DAYS_MAX 3650
#define USER_POLICY_STORAGE_MAX ((int64_t)1 << 50)   /* 1 PiB */
#define USER_POLICY_MESSAGES_MAX 1000000             /* a maildrop's cap */

/* Per-user overrides: USER_POLICY_UNSET where the passwd-file says nothing. */
struct user_policy {
	int64_t quota_storage;  /* bytes; 0 = no limit */
	int64_t quota_messages; /* 0 = no limit */
	int32_t keep_days;      /* 0..USER_POLICY_DAYS_MAX */
	int32_t expire_days;    /* 1..USER_POLICY_DAYS_MAX or USER_POLICY_NEVER */
	int32_t pop3;           /* 1 allowed, 0 refused */
};

/* Every field USER_POLICY_UNSET. */
void user_policy_init(struct user_policy *pol);

/*
 * If key[0..keylen) is one of the policy's passwd-file extra fields, parses
 * value[0..vlen) into pol and returns 1 (or -1 if the value is bad or the key
 * repeats); returns 0 for any other key.  value is NULL for a bare flag.
 */
int user_policy_parse_field(struct user_policy *pol, const char *key,
			    size_t keylen, const char *value, size_t vlen);

/* The user's overrides on top of the settings' defaults: no field unset. */
void user_policy_resolve(const struct user_policy *user,
			 const struct popboxd_settings *set,
			 struct user_policy *effective_r);

/* Carries a policy (resolved or not) between processes (auth-proto.h). */
void user_policy_ipc_put(struct ipc_writer *w, const struct user_policy *pol);
/* False if a field is missing or out of range. */
bool user_policy_ipc_get(const struct ipc_msg *msg, struct user_policy *pol_r);

/*
 * Parses a size with an optional k/M/G/T suffix (powers of 1024; "B" or
 * nothing: bytes) into *bytes_r, at most max.  Returns 0 or -1.
 */
int user_policy_parse_size(const char *s, size_t len, uint64_t max,
			   uint64_t *bytes_r);

#endif
