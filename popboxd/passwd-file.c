/*
 * passwd-file.c — parser of one passwd-file line (see passwd-file.h).
 *
 * The line is first checked as a whole (length, control bytes), then cut at
 * the first seven ':' into fields; the remainder is the extra fields.  Each
 * field has its own small check.  passwd_file_find() picks one user's line
 * out of a whole file's text.  Nothing here touches the file system.
 */
#include "passwd-file.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strnum.h"
#include "username.h"

/* user:password:uid:gid:gecos:home:shell — then the extra fields. */
enum passwd_file_field {
	PF_USER, PF_PASSWORD, PF_UID, PF_GID, PF_GECOS, PF_HOME, PF_SHELL,
	PF_EXTRA, PF_COUNT
};

/*
 * Largest uid/gid accepted: (uid_t)-1 means "unchanged" to setuid() and
 * setgid(), so it can never be a real id.
 */
#define PASSWD_FILE_ID_MAX ((uint64_t)UINT32_MAX - 1)

/*
 * Extra fields that restrict or redirect a login in Dovecot.  We cannot
 * honour them, and ignoring them would let in a user the admin meant to
 * keep out, so a line carrying one is refused (fail closed).
 */
static const char *const passwd_file_unsupported[] = {
	"deny", "nologin", "nopassword", "noauthenticate", "allow_nets",
	"allow_real_nets", "proxy", "proxy_maybe", NULL
};

static const char *const passwd_file_errors[] = {
	[PASSWD_FILE_ERR_NONE] = "no error",
	[PASSWD_FILE_ERR_TOO_LONG] = "line too long",
	[PASSWD_FILE_ERR_CONTROL] = "control byte in line",
	[PASSWD_FILE_ERR_USER] = "invalid user name",
	[PASSWD_FILE_ERR_NO_PASSWORD] = "missing or empty password field",
	[PASSWD_FILE_ERR_UID] = "bad uid (a number 1..4294967294, or empty)",
	[PASSWD_FILE_ERR_GID] = "bad gid (a number 1..4294967294, or empty)",
	[PASSWD_FILE_ERR_HOME] = "home is not an absolute path",
	[PASSWD_FILE_ERR_MAIL] = "mail= must be one absolute path",
	[PASSWD_FILE_ERR_UNSUPPORTED] =
		("unsupported access-control extra field (deny, nologin, "
		 "nopassword, allow_nets, proxy, ...)"),
	[PASSWD_FILE_ERR_POLICY] =
		("bad or repeated quota_rule, keep_days, expire_days or pop3 "
		 "field"),
	[PASSWD_FILE_ERR_NOMEM] = "out of memory",
};

const char *passwd_file_strerror(enum passwd_file_error error)
{
	if ((size_t)error >= sizeof(passwd_file_errors) /
				     sizeof(passwd_file_errors[0]))
		return "unknown error";
	return passwd_file_errors[error];
}

void passwd_file_entry_free(struct passwd_file_entry *entry)
{
	if (entry->password != NULL)
		explicit_bzero(entry->password, strlen(entry->password));
	free(entry->user);
	free(entry->password);
	free(entry->home);
	free(entry->mail);
	memset(entry, 0, sizeof(*entry));
	user_policy_init(&entry->policy);
}

struct passwd_file_slice {
	const char *p;
	size_t len;
};

static bool passwd_file_blank(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (line[i] != ' ' && line[i] != '\t')
			return false;
	}
	return true;
}

/* Only tab is allowed below 0x20; DEL is refused too. */
static bool passwd_file_has_control(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return true;
	}
	return false;
}

/* Cuts line into PF_COUNT slices; missing trailing fields are empty. */
static void passwd_file_split(const char *line, size_t len,
			      struct passwd_file_slice f[PF_COUNT])
{
	size_t start = 0, n = 0;

	memset(f, 0, sizeof(f[0]) * PF_COUNT);
	for (size_t i = 0; i < len && n < PF_EXTRA; i++) {
		if (line[i] == ':') {
			f[n].p = line + start;
			f[n].len = i - start;
			n++;
			start = i + 1;
		}
	}
	f[n].p = line + start;
	f[n].len = len - start;
}

/* Empty -> 0 ("not set"); else 1..PASSWD_FILE_ID_MAX. */
static int passwd_file_id(struct passwd_file_slice s, uint64_t *id_r)
{
	if (s.len == 0) {
		*id_r = 0;
		return 0;
	}
	if (strnum_parse_u64(s.p, s.len, PASSWD_FILE_ID_MAX, id_r) < 0 ||
	    *id_r == 0)
		return -1;
	return 0;
}

static bool passwd_file_key_is(const char *tok, size_t keylen, const char *key)
{
	return strlen(key) == keylen && memcmp(tok, key, keylen) == 0;
}

/* Handles one "key=value" (or bare "flag") extra field. */
static enum passwd_file_error
passwd_file_extra_one(const char *tok, size_t len, struct passwd_file_slice *mail,
		      struct user_policy *policy)
{
	const char *eq = memchr(tok, '=', len);
	size_t keylen = eq != NULL ? (size_t)(eq - tok) : len;

	for (size_t i = 0; passwd_file_unsupported[i] != NULL; i++) {
		if (passwd_file_key_is(tok, keylen, passwd_file_unsupported[i]))
			return PASSWD_FILE_ERR_UNSUPPORTED;
	}
	int pol = user_policy_parse_field(policy, tok, keylen,
					  eq != NULL ? eq + 1 : NULL,
					  eq != NULL ? len - keylen - 1 : 0);
	if (pol != 0)
		return pol > 0 ? PASSWD_FILE_ERR_NONE : PASSWD_FILE_ERR_POLICY;
	if (!passwd_file_key_is(tok, keylen, "mail") &&
	    !passwd_file_key_is(tok, keylen, "userdb_mail"))
		return PASSWD_FILE_ERR_NONE; /* others are ignored */
	if (eq == NULL || mail->p != NULL || keylen + 1 == len ||
	    eq[1] != '/')
		return PASSWD_FILE_ERR_MAIL;
	mail->p = eq + 1;
	mail->len = len - keylen - 1;
	return PASSWD_FILE_ERR_NONE;
}

static enum passwd_file_error
passwd_file_extra(struct passwd_file_slice s, struct passwd_file_slice *mail,
		  struct user_policy *policy)
{
	size_t i = 0;

	while (i < s.len) {
		size_t start = i;

		while (i < s.len && s.p[i] != ' ' && s.p[i] != '\t')
			i++;
		if (i > start) {
			enum passwd_file_error err =
				passwd_file_extra_one(s.p + start, i - start, mail,
						      policy);
			if (err != PASSWD_FILE_ERR_NONE)
				return err;
		}
		i++;
	}
	return PASSWD_FILE_ERR_NONE;
}

/* Checks every field; fills the ids and the mail slice. */
static enum passwd_file_error
passwd_file_check(const struct passwd_file_slice f[PF_COUNT], uint64_t *uid_r,
		  uint64_t *gid_r, struct passwd_file_slice *mail_r,
		  struct user_policy *policy_r)
{
	if (!username_valid(f[PF_USER].p, f[PF_USER].len))
		return PASSWD_FILE_ERR_USER;
	if (f[PF_PASSWORD].p == NULL || f[PF_PASSWORD].len == 0)
		return PASSWD_FILE_ERR_NO_PASSWORD;
	if (passwd_file_id(f[PF_UID], uid_r) < 0)
		return PASSWD_FILE_ERR_UID;
	if (passwd_file_id(f[PF_GID], gid_r) < 0)
		return PASSWD_FILE_ERR_GID;
	if (f[PF_HOME].len > 0 && f[PF_HOME].p[0] != '/')
		return PASSWD_FILE_ERR_HOME;
	return passwd_file_extra(f[PF_EXTRA], mail_r, policy_r);
}

int passwd_file_parse_line(const char *line, size_t len,
			   struct passwd_file_entry *entry_r,
			   enum passwd_file_error *error_r)
{
	struct passwd_file_slice f[PF_COUNT], mail = { NULL, 0 };
	uint64_t uid = 0, gid = 0;

	memset(entry_r, 0, sizeof(*entry_r));
	user_policy_init(&entry_r->policy);
	if (len > 0 && line[len - 1] == '\r')
		len--;
	*error_r = PASSWD_FILE_ERR_NONE;
	if (len > PASSWD_FILE_LINE_MAX)
		*error_r = PASSWD_FILE_ERR_TOO_LONG;
	else if (passwd_file_has_control(line, len))
		*error_r = PASSWD_FILE_ERR_CONTROL;
	if (*error_r != PASSWD_FILE_ERR_NONE)
		return -1;
	if (passwd_file_blank(line, len) || line[0] == '#')
		return 0;

	passwd_file_split(line, len, f);
	*error_r = passwd_file_check(f, &uid, &gid, &mail, &entry_r->policy);
	if (*error_r != PASSWD_FILE_ERR_NONE)
		return -1;

	entry_r->user = strndup(f[PF_USER].p, f[PF_USER].len);
	/* passwd_file_check refused a missing password field (p == NULL).
	   NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
	entry_r->password = strndup(f[PF_PASSWORD].p, f[PF_PASSWORD].len);
	entry_r->home = strndup(f[PF_HOME].len > 0 ? f[PF_HOME].p : "",
				f[PF_HOME].len);
	if (mail.p != NULL)
		entry_r->mail = strndup(mail.p, mail.len);
	entry_r->uid = (uid_t)uid;
	entry_r->gid = (gid_t)gid;
	if (entry_r->user == NULL || entry_r->password == NULL ||
	    entry_r->home == NULL || (mail.p != NULL && entry_r->mail == NULL)) {
		passwd_file_entry_free(entry_r);
		*error_r = PASSWD_FILE_ERR_NOMEM;
		return -1;
	}
	return 1;
}

/* True if line[0..len) begins with user and a ':' (user's own line). */
static bool passwd_file_is_users(const char *line, size_t len,
				 const char *user, size_t user_len)
{
	return len > user_len && line[user_len] == ':' &&
	       memcmp(line, user, user_len) == 0;
}

int passwd_file_find(const char *text, size_t len, const char *user,
		     struct passwd_file_entry *entry_r,
		     struct passwd_file_skipped *skipped_r)
{
	size_t user_len = strlen(user), pos = 0;
	unsigned int lineno = 0;

	memset(entry_r, 0, sizeof(*entry_r));
	user_policy_init(&entry_r->policy);
	memset(skipped_r, 0, sizeof(*skipped_r));
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t linelen = nl != NULL ? (size_t)(nl - text) - pos : len - pos;
		const char *line = text + pos;
		enum passwd_file_error err;

		lineno++;
		pos += linelen + 1;
		if (!passwd_file_is_users(line, linelen, user, user_len))
			continue;
		int r = passwd_file_parse_line(line, linelen, entry_r, &err);
		if (r > 0)
			return 1;
		if (r < 0 && err == PASSWD_FILE_ERR_NOMEM)
			return -1;
		if (r < 0 && skipped_r->lineno == 0) {
			skipped_r->lineno = lineno;
			skipped_r->error = err;
		}
	}
	return 0;
}
