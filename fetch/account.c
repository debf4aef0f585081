/*
 * account.c — popbox-fetch's configuration file and quick-form URL (see
 * account.h).  Pure: no file, no environment.
 */
#include "account.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "strnum.h"

static _Thread_local char account_errbuf[256];

static const char *account_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static const char *account_error(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(account_errbuf, sizeof(account_errbuf), fmt, args);
	va_end(args);
	return account_errbuf;
}

static void wipe_free(char **s)
{
	if (*s != NULL) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

void account_clear(struct account *a)
{
	free(a->name);
	free(a->host);
	free(a->user);
	wipe_free(&a->password);
	free(a->password_command);
	free(a->oauth_token_command);
	free(a->ca_file);
	free(a->deliver_target);
	free(a->uidl_file);
	explicit_bzero(a, sizeof(*a));
}

void account_list_free(struct account_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		account_clear(&list->accounts[i]);
	free(list->accounts);
	list->accounts = NULL;
	list->count = 0;
}

struct account *account_find(const struct account_list *list,
			     const char *name)
{
	for (size_t i = 0; i < list->count; i++) {
		if (strcmp(list->accounts[i].name, name) == 0)
			return &list->accounts[i];
	}
	return NULL;
}

uint16_t account_port(const struct account *a)
{
	if (a->port != 0)
		return a->port;
	return a->tls == ACCOUNT_TLS_IMPLICIT ? 995 : 110;
}

/* ---- values ---------------------------------------------------------- */

int account_parse_tls(const char *s, enum account_tls *tls_r)
{
	if (strcmp(s, "implicit") == 0)
		*tls_r = ACCOUNT_TLS_IMPLICIT;
	else if (strcmp(s, "stls") == 0)
		*tls_r = ACCOUNT_TLS_STLS;
	else if (strcmp(s, "none") == 0)
		*tls_r = ACCOUNT_TLS_NONE;
	else
		return -1;
	return 0;
}

int account_parse_keep(const char *s, enum plan_keep *keep_r,
		       uint32_t *days_r)
{
	uint64_t days;

	*days_r = 0;
	if (strcmp(s, "no") == 0) {
		*keep_r = PLAN_DELETE;
		return 0;
	}
	if (strcmp(s, "yes") == 0) {
		*keep_r = PLAN_KEEP;
		return 0;
	}
	if (strnum_parse_u64(s, strlen(s), PLAN_KEEP_DAYS_MAX, &days) < 0)
		return -1;
	/* keep = 0: kept for no time, i.e. deleted once stored. */
	*keep_r = days == 0 ? PLAN_DELETE : PLAN_KEEP_DAYS;
	*days_r = (uint32_t)days;
	return 0;
}

int account_parse_size(const char *s, uint64_t *size_r)
{
	size_t len = strlen(s);
	uint64_t unit = 1, value;

	if (len > 0) {
		switch (s[len - 1]) {
		case 'k': case 'K': unit = 1024; break;
		case 'm': case 'M': unit = 1024 * 1024; break;
		case 'g': case 'G': unit = 1024 * 1024 * 1024; break;
		default: break;
		}
		if (unit != 1)
			len--;
	}
	/* value <= ACCOUNT_SIZE_MAX / unit, so the product cannot wrap. */
	if (strnum_parse_u64(s, len, ACCOUNT_SIZE_MAX / unit, &value) < 0)
		return -1;
	*size_r = value * unit;
	return 0;
}

static int parse_bool(const char *s, bool *b_r)
{
	if (strcmp(s, "yes") == 0)
		*b_r = true;
	else if (strcmp(s, "no") == 0)
		*b_r = false;
	else
		return -1;
	return 0;
}

/* Printable text without control bytes (a path or a command). */
static bool text_ok(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	}
	return true;
}

int account_parse_deliver(const char *s, enum sink_kind *kind_r,
			  char **target_r, const char **error_r)
{
	static const struct {
		const char *prefix;
		enum sink_kind kind;
	} kinds[] = {
		{ "maildir:", SINK_MAILDIR },
		{ "mbox:", SINK_MBOX },
		{ "mda:", SINK_MDA },
	};

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		size_t n = strlen(kinds[i].prefix);

		if (strncmp(s, kinds[i].prefix, n) != 0)
			continue;
		if (!text_ok(s + n)) {
			*error_r = "deliver: the path or command is empty or "
				   "has control characters";
			return -1;
		}
		if ((*target_r = strdup(s + n)) == NULL) {
			*error_r = "out of memory";
			return -1;
		}
		*kind_r = kinds[i].kind;
		return 0;
	}
	*error_r = "deliver must be maildir:PATH, mbox:PATH or mda:COMMAND";
	return -1;
}

/* ---- the file -------------------------------------------------------- */

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || strchr("._-@+", c) != NULL;
}

static bool name_ok(const char *s, size_t len)
{
	if (len == 0 || len > ACCOUNT_NAME_MAX || s[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!name_char(s[i]))
			return false;
	}
	return true;
}

/* The parser's state across lines. */
struct parser {
	struct account_list *list;
	struct account *cur;
	/* keys seen in the current account, one bit per table row */
	uint32_t seen;
	unsigned int line;
};

/* One key: its name and how its value is stored. */
struct key {
	const char *name;
	int (*set)(struct account *a, const char *value, const char **error_r);
};

static int set_string(char **field, const char *value, const char **error_r)
{
	if (!text_ok(value)) {
		*error_r = "empty value or control characters";
		return -1;
	}
	if ((*field = strdup(value)) == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

static int set_host(struct account *a, const char *v, const char **error_r)
{
	if (strpbrk(v, " \t/") != NULL) {
		*error_r = "host: a name or an address, without spaces or '/'";
		return -1;
	}
	return set_string(&a->host, v, error_r);
}

static int set_port(struct account *a, const char *v, const char **error_r)
{
	uint64_t port;

	if (strnum_parse_u64(v, strlen(v), 65535, &port) < 0 || port == 0) {
		*error_r = "port: a number from 1 to 65535";
		return -1;
	}
	a->port = (uint16_t)port;
	return 0;
}

static int set_tls(struct account *a, const char *v, const char **error_r)
{
	if (account_parse_tls(v, &a->tls) < 0) {
		*error_r = "tls: implicit, stls or none";
		return -1;
	}
	return 0;
}

static int set_user(struct account *a, const char *v, const char **error_r)
{
	if (strpbrk(v, " \t") != NULL) {
		*error_r = "user: no spaces";
		return -1;
	}
	return set_string(&a->user, v, error_r);
}

static int set_password(struct account *a, const char *v,
			const char **error_r)
{
	return set_string(&a->password, v, error_r);
}

static int set_password_command(struct account *a, const char *v,
				const char **error_r)
{
	return set_string(&a->password_command, v, error_r);
}

static int set_auth(struct account *a, const char *v, const char **error_r)
{
	if (sasl_client_method_from_name(v, &a->auth) < 0) {
		*error_r = "auth: auto, scram-sha-256, apop, plain, login, "
			   "user, oauthbearer or xoauth2";
		return -1;
	}
	return 0;
}

static int set_token_command(struct account *a, const char *v,
			     const char **error_r)
{
	return set_string(&a->oauth_token_command, v, error_r);
}

static int set_ca_file(struct account *a, const char *v,
		       const char **error_r)
{
	return set_string(&a->ca_file, v, error_r);
}

static int set_fingerprint(struct account *a, const char *v,
			   const char **error_r)
{
	if (net_fingerprint_parse(v, a->fingerprint) < 0) {
		*error_r = "fingerprint: the SHA-256 of the certificate, 64 "
			   "hex digits, with or without colons";
		return -1;
	}
	a->has_fingerprint = true;
	return 0;
}

static int set_deliver(struct account *a, const char *v,
		       const char **error_r)
{
	return account_parse_deliver(v, &a->deliver_kind, &a->deliver_target,
				     error_r);
}

static int set_keep(struct account *a, const char *v, const char **error_r)
{
	if (account_parse_keep(v, &a->keep, &a->keep_days) < 0) {
		*error_r = "keep: no, yes, or a number of days (at most 3650)";
		return -1;
	}
	return 0;
}

static int set_only_new(struct account *a, const char *v,
			const char **error_r)
{
	if (parse_bool(v, &a->only_new) < 0) {
		*error_r = "only_new: yes or no";
		return -1;
	}
	return 0;
}

static int set_size_limit(struct account *a, const char *v,
			  const char **error_r)
{
	if (account_parse_size(v, &a->size_limit) < 0) {
		*error_r = "size_limit: a size in bytes, with k, M or G (at "
			   "most 1024G); 0 for none";
		return -1;
	}
	return 0;
}

static int set_oversize(struct account *a, const char *v,
			const char **error_r)
{
	if (strcmp(v, "skip") == 0)
		a->oversize = PLAN_OVERSIZE_SKIP;
	else if (strcmp(v, "headers") == 0)
		a->oversize = PLAN_OVERSIZE_HEADERS;
	else {
		*error_r = "oversize: skip or headers";
		return -1;
	}
	return 0;
}

static int set_max_messages(struct account *a, const char *v,
			    const char **error_r)
{
	uint64_t n;

	if (strnum_parse_u64(v, strlen(v), UINT32_MAX, &n) < 0) {
		*error_r = "max_messages: a number (0 for no limit)";
		return -1;
	}
	a->max_messages = (uint32_t)n;
	return 0;
}

static int set_timeout(struct account *a, const char *v,
		       const char **error_r)
{
	uint64_t n;

	if (strnum_parse_u64(v, strlen(v), ACCOUNT_TIMEOUT_MAX, &n) < 0 ||
	    n == 0) {
		*error_r = "timeout: seconds, from 1 to 3600";
		return -1;
	}
	a->timeout_s = (unsigned int)n;
	return 0;
}

static int set_uidl_file(struct account *a, const char *v,
			 const char **error_r)
{
	return set_string(&a->uidl_file, v, error_r);
}

static const struct key keys[] = {
	{ "host", set_host },
	{ "port", set_port },
	{ "tls", set_tls },
	{ "user", set_user },
	{ "password", set_password },
	{ "password_command", set_password_command },
	{ "auth", set_auth },
	{ "oauth_token_command", set_token_command },
	{ "ca_file", set_ca_file },
	{ "fingerprint", set_fingerprint },
	{ "deliver", set_deliver },
	{ "keep", set_keep },
	{ "only_new", set_only_new },
	{ "size_limit", set_size_limit },
	{ "oversize", set_oversize },
	{ "max_messages", set_max_messages },
	{ "timeout", set_timeout },
	{ "uidl_file", set_uidl_file },
};

/* Checks the account just finished: required keys, combinations. */
static int account_check(const struct account *a, const char **error_r)
{
	bool oauth = a->auth == SASL_CLIENT_XOAUTH2 ||
		     a->auth == SASL_CLIENT_OAUTHBEARER;

	if (a->host == NULL)
		*error_r = account_error("account %s: no host", a->name);
	else if (a->user == NULL)
		*error_r = account_error("account %s: no user", a->name);
	else if (a->deliver_target == NULL)
		*error_r = account_error("account %s: no deliver", a->name);
	else if (oauth && a->oauth_token_command == NULL)
		*error_r = account_error("account %s: auth = %s needs "
					 "oauth_token_command", a->name,
					 sasl_client_method_name(a->auth));
	else if (!oauth && a->oauth_token_command != NULL)
		*error_r = account_error("account %s: oauth_token_command is "
					 "only for auth = xoauth2 or "
					 "oauthbearer", a->name);
	else
		return 0;
	return -1;
}

/* "[account NAME]" (spaces allowed inside the brackets, around). */
static int start_account(struct parser *p, const char *s, size_t len,
			 const char **error_r)
{
	struct account *a;

	if (len < 2 || s[len - 1] != ']') {
		*error_r = "a section line must end with ']'";
		return -1;
	}
	s++;
	len -= 2;
	while (len > 0 && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len < 8 || strncmp(s, "account", 7) != 0 ||
	    (s[7] != ' ' && s[7] != '\t')) {
		*error_r = "unknown section (only [account NAME])";
		return -1;
	}
	s += 8;
	len -= 8;
	while (len > 0 && (*s == ' ' || *s == '\t'))
		s++, len--;
	if (!name_ok(s, len)) {
		*error_r = "account name: 1-64 of A-Z a-z 0-9 . _ - @ +, not "
			   "starting with '.'";
		return -1;
	}
	for (size_t i = 0; i < p->list->count; i++) {
		const char *other = p->list->accounts[i].name;
		if (strlen(other) == len && memcmp(other, s, len) == 0) {
			*error_r = account_error("account %.*s is defined "
						 "twice", (int)len, s);
			return -1;
		}
	}
	if (p->list->count == ACCOUNT_COUNT_MAX) {
		*error_r = "too many accounts";
		return -1;
	}
	/* count < ACCOUNT_COUNT_MAX: the size cannot overflow. */
	a = realloc(p->list->accounts,
		    (p->list->count + 1) * sizeof(*p->list->accounts));
	if (a == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	p->list->accounts = a;
	p->cur = &a[p->list->count];
	memset(p->cur, 0, sizeof(*p->cur));
	p->list->count++;
	p->cur->line = p->line;
	p->cur->only_new = true;
	p->cur->timeout_s = ACCOUNT_TIMEOUT_DEFAULT;
	p->seen = 0;
	if ((p->cur->name = strndup(s, len)) == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

/* "key = value" in the current account. */
static int set_key(struct parser *p, const char *s, size_t len,
		   const char **error_r)
{
	const char *eq = memchr(s, '=', len);
	size_t klen, vstart, vlen;
	char value[ACCOUNT_LINE_MAX + 1];

	if (eq == NULL) {
		*error_r = "expected key = value";
		return -1;
	}
	klen = (size_t)(eq - s);
	while (klen > 0 && (s[klen - 1] == ' ' || s[klen - 1] == '\t'))
		klen--;
	vstart = (size_t)(eq - s) + 1;
	while (vstart < len && (s[vstart] == ' ' || s[vstart] == '\t'))
		vstart++;
	vlen = len - vstart;
	/* len <= ACCOUNT_LINE_MAX (checked by the caller). */
	memcpy(value, s + vstart, vlen);
	value[vlen] = '\0';
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (strlen(keys[i].name) != klen ||
		    memcmp(keys[i].name, s, klen) != 0)
			continue;
		if (p->cur == NULL) {
			*error_r = "a key before the first [account NAME]";
			return -1;
		}
		if (p->seen & (1u << i)) {
			*error_r = account_error("%s is given twice",
						 keys[i].name);
			return -1;
		}
		p->seen |= 1u << i;
		int ret = keys[i].set(p->cur, value, error_r);
		explicit_bzero(value, vlen);
		return ret;
	}
	explicit_bzero(value, vlen);
	*error_r = account_error("unknown key '%.*s'", (int)(klen > 40 ? 40 :
							      klen), s);
	return -1;
}

/* One line without its line end, spaces around trimmed. */
static int parse_line(struct parser *p, const char *s, size_t len,
		      const char **error_r)
{
	while (len > 0 && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' ||
			   s[len - 1] == '\r'))
		len--;
	if (len == 0 || s[0] == '#')
		return 0;
	if (memchr(s, '\0', len) != NULL) {
		*error_r = "a NUL byte";
		return -1;
	}
	if (s[0] == '[')
		return start_account(p, s, len, error_r);
	return set_key(p, s, len, error_r);
}

/* Ends the current account, if any. */
static int finish_account(struct parser *p, unsigned int *line_r,
			  const char **error_r)
{
	if (p->cur == NULL)
		return 0;
	if (account_check(p->cur, error_r) < 0) {
		*line_r = p->cur->line;
		return -1;
	}
	p->cur = NULL;
	return 0;
}

int account_parse_config(const char *text, size_t len,
			 struct account_list *list, unsigned int *line_r,
			 const char **error_r)
{
	struct parser p = { .list = list };
	size_t pos = 0;

	list->accounts = NULL;
	list->count = 0;
	*line_r = 0;
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl != NULL ? (size_t)(nl - text) : len;
		bool section = false;

		p.line++;
		if (end - pos > ACCOUNT_LINE_MAX) {
			*error_r = "line too long";
			goto fail;
		}
		for (size_t i = pos; i < end; i++) {
			if (text[i] == ' ' || text[i] == '\t')
				continue;
			section = text[i] == '[';
			break;
		}
		if (section && finish_account(&p, line_r, error_r) < 0)
			goto fail_line_set;
		if (parse_line(&p, text + pos, end - pos, error_r) < 0)
			goto fail;
		pos = end + 1;
	}
	if (finish_account(&p, line_r, error_r) < 0)
		goto fail_line_set;
	return 0;
fail:
	*line_r = p.line;
fail_line_set:
	account_list_free(list);
	return -1;
}

/* ---- the quick form -------------------------------------------------- */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes s[0..len) into a new string; NULL if malformed (or a
   control byte, a space, or out of memory). */
static char *percent_decode(const char *s, size_t len)
{
	char *out = malloc(len + 1);
	size_t n = 0;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= len)
				goto bad;
			hi = hex_value(s[i + 1]);
			lo = hex_value(s[i + 2]);
			if (hi < 0 || lo < 0)
				goto bad;
			c = (unsigned char)(hi * 16 + lo);
			i += 2;
		}
		if (c <= 0x20 || c == 0x7f)
			goto bad;
		out[n++] = (char)c;
	}
	out[n] = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

/* A host name or address: printable, no space, '@', '[' or ']'. */
static bool host_ok(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= 0x20 || c >= 0x7f || strchr("@[]", c) != NULL)
			return false;
	}
	return true;
}

/* HOST[:PORT] or [V6][:PORT] into a->host and a->port. */
static int parse_hostport(const char *s, size_t len, struct account *a,
			  const char **error_r)
{
	const char *host = s, *port = NULL;
	size_t hlen = len, plen = 0;
	uint64_t value;

	if (len > 0 && s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (close == NULL) {
			*error_r = "URL: '[' without ']' in the host";
			return -1;
		}
		host = s + 1;
		hlen = (size_t)(close - host);
		if ((size_t)(close - s) + 1 < len) {
			if (close[1] != ':') {
				*error_r = "URL: junk after ']'";
				return -1;
			}
			port = close + 2;
			plen = len - (size_t)(port - s);
		}
	} else {
		const char *colon = memchr(s, ':', len);
		if (colon != NULL) {
			hlen = (size_t)(colon - s);
			port = colon + 1;
			plen = len - hlen - 1;
		}
	}
	if (!host_ok(host, hlen)) {
		*error_r = "URL: no host, or a bad one";
		return -1;
	}
	if (port != NULL) {
		if (strnum_parse_u64(port, plen, 65535, &value) < 0 ||
		    value == 0) {
			*error_r = "URL: the port must be a number from 1 to "
				   "65535";
			return -1;
		}
		a->port = (uint16_t)value;
	}
	if ((a->host = strndup(host, hlen)) == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

int account_from_url(const char *url, struct account *a, const char **error_r)
{
	const char *rest, *at;
	size_t len;

	if (strncasecmp(url, "pop3s://", 8) == 0) {
		a->tls = ACCOUNT_TLS_IMPLICIT;
		rest = url + 8;
	} else if (strncasecmp(url, "pop3://", 7) == 0) {
		a->tls = ACCOUNT_TLS_STLS;
		rest = url + 7;
	} else {
		*error_r = "URL: must start with pop3s:// or pop3://";
		return -1;
	}
	len = strlen(rest);
	if (len > 0 && rest[len - 1] == '/')
		len--;
	if (memchr(rest, '/', len) != NULL || memchr(rest, '?', len) != NULL) {
		*error_r = "URL: nothing may follow HOST[:PORT]";
		return -1;
	}
	at = NULL;
	for (size_t i = len; i > 0; i--) {
		if (rest[i - 1] == '@') {
			at = rest + i - 1;
			break;
		}
	}
	if (at == NULL || at == rest) {
		*error_r = "URL: no user (pop3s://USER@HOST)";
		return -1;
	}
	if ((a->user = percent_decode(rest, (size_t)(at - rest))) == NULL) {
		*error_r = "URL: a bad user name (spaces, control bytes or "
			   "bad %-escapes)";
		return -1;
	}
	if (parse_hostport(at + 1, len - (size_t)(at + 1 - rest), a,
			   error_r) < 0) {
		account_clear(a);
		return -1;
	}
	a->only_new = true;
	a->timeout_s = ACCOUNT_TIMEOUT_DEFAULT;
	if (account_set_quick_name(a) < 0) {
		account_clear(a);
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

int account_set_quick_name(struct account *a)
{
	char *name;

	if (asprintf(&name, "%s@%s:%u", a->user, a->host,
		     (unsigned)account_port(a)) < 0)
		return -1;
	free(a->name);
	a->name = name;
	return 0;
}

/* "~/x" with home into a new string in *path; others stay. */
static int expand_one(char **path, const char *home)
{
	char *out;

	if (*path == NULL || strncmp(*path, "~/", 2) != 0)
		return 0;
	if (home == NULL || home[0] != '/')
		return -1;
	if (asprintf(&out, "%s%s", home, *path + 1) < 0)
		return -1;
	free(*path);
	*path = out;
	return 0;
}

int account_expand_home(struct account *a, const char *home)
{
	if (expand_one(&a->ca_file, home) < 0 ||
	    expand_one(&a->uidl_file, home) < 0)
		return -1;
	if (a->deliver_kind != SINK_MDA &&
	    expand_one(&a->deliver_target, home) < 0)
		return -1;
	return 0;
}

char *account_default_uidl_file(const char *name, const char *state_home,
				const char *home)
{
	char *path = NULL;
	int n;

	if (state_home != NULL && state_home[0] == '/')
		n = asprintf(&path, "%s/popbox/uidl/%s", state_home, name);
	else if (home != NULL && home[0] == '/')
		n = asprintf(&path, "%s/.local/state/popbox/uidl/%s", home,
			     name);
	else
		return NULL;
	if (n < 0)
		return NULL;
	/* Only the name's part: the directory may hold any character. */
	for (char *p = path + (size_t)n - strlen(name); *p != '\0'; p++) {
		if (*p == '/')
			*p = '_';
	}
	return path;
}
