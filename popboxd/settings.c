/*
 * settings.c — popboxd's configuration: parse, check, print (settings.h).
 *
 * One table row per key drives everything: parsing (type, bounds), the
 * defaults (settings_init() feeds each row's default text through the same
 * parser as the file) and settings_print(); docs/configuration.md follows
 * the same rows.
 *
 * Invariants: settings_parse() is pure (no I/O, no globals besides the
 * thread-local error text); every stored string is non-empty and free of
 * control bytes, does not start with '#' and contains no whitespace+'#', so
 * settings_print() output parses back to the same settings.
 */
#include "settings.h"

#include "file-read.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "listen-addr.h"
#include "netmask.h"
#include "sasl-mech.h"
#include "strnum.h"
#include "user-policy.h"

/* Longest config line without its newline; longer lines are an error. */
#define SETTINGS_LINE_MAX 1024
/*
 * Longest value: with the longest key and " = " a printed line still fits
 * in SETTINGS_LINE_MAX, so settings_print() output always loads again.
 */
#define SETTINGS_VALUE_MAX 1000
/* Largest config file settings_load() reads: far above any real config. */
#define SETTINGS_FILE_MAX (1024 * 1024)
/* Longest expanded mail path: PATH_MAX on Linux. */
#define SETTINGS_PATH_MAX 4096
/* Longest host name (RFC 1035 section 2.3.4: 255 octets on the wire). */
#define SETTINGS_HOSTNAME_MAX 253
/* How much of a bad key or value an error message quotes. */
#define SETTINGS_QUOTE_MAX 64

enum settings_type {
	SET_STRING, SET_BOOL, SET_UINT, SET_EXPIRE, SET_LISTEN, SET_LOG,
	SET_SIZE,   /* uint64_t bytes, k/M/G/T suffix; bounds in MiB (min, max) */
};

struct settings_def {
	const char *name;
	enum settings_type type;
	size_t offset;
	unsigned int min, max;  /* SET_UINT and SET_EXPIRE bounds */
	const char *def;        /* default as config text; NULL: none */
	const char *why;        /* one line for the docs */
	/* Extra check for SET_STRING; returns an error text or NULL. */
	const char *(*check)(const char *value);
	/* SET_LISTEN: the array of SETTINGS_MAX_LISTEN strings is at offset,
	   its size_t count at count_offset.  0 for every other type. */
	size_t count_offset;
};

static const char *settings_check_hostname(const char *value);
static const char *settings_check_mail_user(const char *value);
static const char *settings_check_abs_path(const char *value);
static const char *settings_check_tls_version(const char *value);
static const char *settings_check_networks(const char *value);
static const char *settings_check_mechanisms(const char *value);
static const char *settings_check_lmtp_listen(const char *value);
static bool settings_listen_valid(const char *value);

#define OFF(field) offsetof(struct popboxd_settings, field)

static const struct settings_def settings_defs[] = {
	{ "listen", SET_LISTEN, OFF(listen), 0, 0, NULL,
	  "address:port to accept POP3 on (repeatable); loopback unless told",
	  NULL, OFF(listen_count) },
	{ "tls_listen", SET_LISTEN, OFF(tls_listen), 0, 0, NULL,
	  "address:port for RFC 8314 implicit TLS (repeatable); none by default",
	  NULL, OFF(tls_listen_count) },
	{ "tls_cert_file", SET_STRING, OFF(tls_cert_file), 0, 0, NULL,
	  "PEM certificate chain; with tls_key_file enables TLS and STLS",
	  settings_check_abs_path, 0 },
	{ "tls_key_file", SET_STRING, OFF(tls_key_file), 0, 0, NULL,
	  "PEM private key for tls_cert_file", settings_check_abs_path, 0 },
	{ "tls_min_version", SET_STRING, OFF(tls_min_version), 0, 0, "TLSv1.2",
	  "oldest TLS version accepted: TLSv1.2 or TLSv1.3",
	  settings_check_tls_version, 0 },
	{ "passdb_file", SET_STRING, OFF(passdb_file), 0, 0, NULL,
	  "passwd-file with the users: required, there is no safe default",
	  NULL, 0 },
	{ "mail_location", SET_STRING, OFF(mail_location), 0, 0, "%h/Maildir",
	  "Maildir template; must contain %u, %n or %h so users never share one",
	  NULL, 0 },
	{ "login_user", SET_STRING, OFF(login_user), 0, 0, "popbox-login",
	  "unprivileged user of the login processes (network, TLS, login)",
	  settings_check_mail_user, 0 },
	{ "auth_user", SET_STRING, OFF(auth_user), 0, 0, "popbox-auth",
	  "user of the auth process: the only one that reads passdb_file",
	  settings_check_mail_user, 0 },
	{ "mail_user", SET_STRING, OFF(mail_user), 0, 0, "popbox",
	  "unprivileged user for mail access when started as root",
	  settings_check_mail_user, 0 },
	{ "trusted_networks", SET_STRING, OFF(trusted_networks), 0, 0,
	  "127.0.0.0/8 ::1/128",
	  "where USER/PASS may come without TLS, and who besides loopback may"
	  " use a TCP lmtp_listen (space-separated, or none)",
	  settings_check_networks, 0 },
	{ "allow_cleartext", SET_BOOL, OFF(allow_cleartext), 0, 0, "no",
	  "allow passwords without TLS from anywhere: legacy sites only",
	  NULL, 0 },
	{ "apop", SET_BOOL, OFF(apop), 0, 0, "no",
	  "offer APOP; needs {PLAIN} secrets on disk, so off by default",
	  NULL, 0 },
	{ "login_delay", SET_UINT, OFF(login_delay), 0, 86400, "0",
	  "RFC 2449 LOGIN-DELAY seconds to announce; 0 announces nothing",
	  NULL, 0 },
	{ "expire_days", SET_EXPIRE, OFF(expire_days), 1, 3650, "never",
	  "RFC 2449 EXPIRE to announce; 0 is refused: it means delete on RETR",
	  NULL, 0 },
	{ "keep_days", SET_UINT, OFF(keep_days), 0, 3650, "0",
	  "days DELEted messages stay out of sight before `popbox expire`"
	  " removes them; 0: removed at QUIT", NULL, 0 },
	{ "quota_storage", SET_SIZE, OFF(quota_storage), 0, 1u << 30, "0",
	  "bytes a maildrop may hold (k/M/G/T suffixes); 0: no limit;"
	  " per user: quota_rule", NULL, 0 },
	{ "quota_messages", SET_UINT, OFF(quota_messages), 0, 1000000, "0",
	  "messages a maildrop may hold; 0: no limit", NULL, 0 },
	{ "message_size_limit", SET_SIZE, OFF(message_size_limit), 0, 1024,
	  "64M", "largest message delivery accepts (LMTP SIZE); bytes with"
	  " k/M/G suffix", NULL, 0 },
	{ "lmtp_listen", SET_STRING, OFF(lmtp_listen), 0, 0, NULL,
	  "LMTP for the MTA: unix:/path or address:port (TCP peers: loopback"
	  " and trusted_networks only); off unless set",
	  settings_check_lmtp_listen, 0 },
	{ "userdb_socket", SET_STRING, OFF(userdb_socket), 0, 0,
	  "/run/popboxd/userdb", "where popbox-deliver asks the auth process"
	  " for a user's record", settings_check_abs_path, 0 },
	{ "login_timeout", SET_UINT, OFF(login_timeout), 5, 3600, "60",
	  "seconds a client may take to log in; bounds idle strangers",
	  NULL, 0 },
	{ "idle_timeout", SET_UINT, OFF(idle_timeout), 600, 86400, "600",
	  "seconds idle after login; RFC 1939 requires at least 10 minutes",
	  NULL, 0 },
	{ "auth_failure_delay_ms", SET_UINT, OFF(auth_failure_delay_ms), 0,
	  60000, "2000", "pause before every failed-login reply; slows guessing",
	  NULL, 0 },
	{ "auth_penalty_max_ms", SET_UINT, OFF(auth_penalty_max_ms), 0, 60000,
	  "15000", "cap of the growing wait for an address with failed logins;"
	  " 0 turns it off", NULL, 0 },
	{ "auth_mechanisms", SET_STRING, OFF(auth_mechanisms), 0, 0, "auto",
	  "SASL mechanisms AUTH offers (space-separated, auto or none); auto:"
	  " PLAIN LOGIN, and SCRAM-SHA-256 if a passdb entry can use it",
	  settings_check_mechanisms, 0 },
	{ "max_auth_failures", SET_UINT, OFF(max_auth_failures), 1, 100, "3",
	  "failed logins per connection before it is closed", NULL, 0 },
	{ "max_bad_commands", SET_UINT, OFF(max_bad_commands), 1, 1000, "10",
	  "bad commands in a row before the connection is closed", NULL, 0 },
	{ "max_connections", SET_UINT, OFF(max_connections), 0, 1000000, "20000",
	  "connections at once, all processes together; 0: no cap", NULL, 0 },
	{ "max_connections_per_address", SET_UINT,
	  OFF(max_connections_per_address), 0, 1000000, "50",
	  "connections at once from one address (IPv6: one /64); 0: no cap",
	  NULL, 0 },
	{ "max_preauth_connections", SET_UINT, OFF(max_preauth_connections), 1,
	  1000000, "1000",
	  "connections not yet logged in; when full the oldest goes first",
	  NULL, 0 },
	{ "output_timeout", SET_UINT, OFF(output_timeout), 10, 86400, "600",
	  "seconds a client may leave replies unread before it is dropped",
	  NULL, 0 },
	{ "workers", SET_UINT, OFF(workers), 0, 256, "0",
	  "event-loop threads; 0 means one per CPU core", NULL, 0 },
	{ "auth_workers", SET_UINT, OFF(auth_workers), 1, 256, "4",
	  "threads for password hashing and disk work, off the event loops",
	  NULL, 0 },
	{ "log", SET_LOG, OFF(log_syslog), 0, 0, "stderr",
	  "where log records go: stderr or syslog (facility mail)", NULL, 0 },
	{ "hostname", SET_STRING, OFF(hostname), 0, 0, NULL,
	  "name in the APOP timestamp; default: the system host name",
	  settings_check_hostname, 0 },
};
#define SETTINGS_COUNT (sizeof(settings_defs) / sizeof(settings_defs[0]))

static _Thread_local char settings_errbuf[SETTINGS_LINE_MAX + 256];

static const char *settings_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* Formats into the thread-local error buffer and returns it. */
static const char *settings_error(const char *fmt, ...)
{
	char tmp[sizeof(settings_errbuf)];
	va_list args;

	/* Via tmp, so an argument may point into settings_errbuf itself. */
	va_start(args, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, args);
	va_end(args);
	memcpy(settings_errbuf, tmp, sizeof(tmp));
	return settings_errbuf;
}

int settings_sasl_mechs(const char *value, unsigned int *mask_r,
			bool *scram_auto_r)
{
	const char *p = value;

	*mask_r = 0;
	*scram_auto_r = false;
	if (strcmp(value, "none") == 0)
		return 0;
	if (strcmp(value, "auto") == 0) {
		*mask_r = 1u << SASL_MECH_PLAIN | 1u << SASL_MECH_LOGIN;
		*scram_auto_r = true;
		return 0;
	}
	while (*p != '\0') {
		size_t len = strcspn(p, " \t");
		enum sasl_mech mech;

		if (len > 0) {
			if (!sasl_mech_from_name(p, len, &mech))
				return -1;
			*mask_r |= 1u << mech;
		}
		p += len;
		p += strspn(p, " \t");
	}
	return *mask_r != 0 ? 0 : -1;
}

static const char *settings_check_mechanisms(const char *value)
{
	unsigned int mask;
	bool scram_auto;

	if (settings_sasl_mechs(value, &mask, &scram_auto) < 0)
		return "unknown SASL mechanism: PLAIN, LOGIN, SCRAM-SHA-256, "
		       "auto or none";
	return NULL;
}

static const char *settings_check_networks(const char *value)
{
	struct netmask_list list;
	const char *error = NULL;

	if (netmask_list_parse(value, strlen(value), &list, &error) < 0)
		return error;
	return NULL;
}

static const char *settings_check_hostname(const char *value)
{
	size_t len = strlen(value);

	if (len > SETTINGS_HOSTNAME_MAX)
		return "too long";
	for (size_t i = 0; i < len; i++) {
		char c = value[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
			return "only letters, digits, '.', '-' and '_'";
	}
	return NULL;
}

/* A login name as useradd accepts it: [A-Za-z0-9._-], at most 32. */
static const char *settings_check_mail_user(const char *value)
{
	size_t len = strlen(value);

	if (len > 32 || value[0] == '-')
		return "not a valid user name";
	for (size_t i = 0; i < len; i++) {
		char c = value[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
			return "not a valid user name";
	}
	return NULL;
}

/* "unix:/absolute/path" or an address:port the listener parser takes. */
static const char *settings_check_lmtp_listen(const char *value)
{
	if (strncmp(value, "unix:", 5) == 0)
		return value[5] == '/' ? NULL : "unix: needs an absolute path";
	return settings_listen_valid(value) ? NULL :
	       "expected unix:/path or address:port";
}

/* A path that names the same file whatever the working directory is. */
static const char *settings_check_abs_path(const char *value)
{
	return value[0] == '/' ? NULL : "must be an absolute path";
}

/* The names OpenSSL's MinProtocol uses; nothing below TLS 1.2. */
static const char *settings_check_tls_version(const char *value)
{
	if (strcmp(value, "TLSv1.2") != 0 && strcmp(value, "TLSv1.3") != 0)
		return "expected TLSv1.2 or TLSv1.3";
	return NULL;
}

/* The listener's own parser: what passes here is what the server binds. */
static bool settings_listen_valid(const char *value)
{
	struct sockaddr_storage ss;
	socklen_t len;
	const char *error;

	return listen_addr_parse(value, &ss, &len, &error) == 0;
}

/* A SET_LISTEN row's address array and count inside set. */
struct settings_list {
	char **addrs;   /* SETTINGS_MAX_LISTEN entries */
	size_t *count;
};

static struct settings_list settings_list(struct popboxd_settings *set,
					  const struct settings_def *def)
{
	return (struct settings_list){
		.addrs = (char **)((char *)set + def->offset),
		.count = (size_t *)((char *)set + def->count_offset),
	};
}

/* Frees every address of def's list and empties it. */
static void settings_list_clear(struct popboxd_settings *set,
				const struct settings_def *def)
{
	struct settings_list list = settings_list(set, def);

	for (size_t i = 0; i < *list.count; i++) {
		free(list.addrs[i]);
		list.addrs[i] = NULL;
	}
	*list.count = 0;
}

/* Appends a checked address to def's list; an error text or NULL. */
static const char *settings_set_listen(struct popboxd_settings *set,
				       const struct settings_def *def,
				       const char *value)
{
	struct settings_list list = settings_list(set, def);

	/* "listen = none": no plain listener (a POP3S-only server). */
	if (def->offset == OFF(listen) && strcmp(value, "none") == 0) {
		settings_list_clear(set, def);
		set->listen_none = true;
		return NULL;
	}
	if (def->offset == OFF(listen))
		set->listen_none = false;
	if (*list.count >= SETTINGS_MAX_LISTEN)
		return settings_error("too many %s addresses (max %d)",
				      def->name, SETTINGS_MAX_LISTEN);
	if (!settings_listen_valid(value))
		return "expected IPv4:port, [IPv6]:port or *:port "
		       "(port 0..65535)";
	if ((list.addrs[*list.count] = strdup(value)) == NULL)
		return "out of memory";
	(*list.count)++;
	return NULL;
}

static const char *settings_set_uint(const struct settings_def *def,
				     const char *value, unsigned int *out)
{
	uint64_t v;

	if (strnum_parse_u64(value, strlen(value), def->max, &v) < 0 ||
	    v < def->min)
		return settings_error("expected a number %u..%u", def->min,
				      def->max);
	*out = (unsigned int)v;
	return NULL;
}

static const char *settings_set_bool(const char *value, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on" };
	static const char *const no[] = { "no", "false", "off" };

	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
			*out = strcasecmp(value, yes[i]) == 0;
			return NULL;
		}
	}
	return "expected yes/no/true/false/on/off";
}

static const char *settings_set_string(const struct settings_def *def,
				       const char *value, char **out)
{
	const char *err = def->check != NULL ? def->check(value) : NULL;
	char *copy;

	if (err != NULL)
		return err;
	if ((copy = strdup(value)) == NULL)
		return "out of memory";
	free(*out);
	*out = copy;
	return NULL;
}

/* Stores value (NUL-terminated, trimmed, non-empty) for def; error or NULL. */
static const char *settings_set(struct popboxd_settings *set,
				const struct settings_def *def,
				const char *value)
{
	void *field = (char *)set + def->offset;
	unsigned int n = 0;

	switch (def->type) {
	case SET_STRING:
		return settings_set_string(def, value, field);
	case SET_BOOL:
		return settings_set_bool(value, field);
	case SET_UINT:
		return settings_set_uint(def, value, field);
	case SET_EXPIRE:
		if (strcmp(value, "never") == 0) {
			*(int *)field = -1;
			return NULL;
		}
		if (settings_set_uint(def, value, &n) != NULL)
			return settings_error("expected \"never\" or a number "
					      "%u..%u", def->min, def->max);
		*(int *)field = (int)n;
		return NULL;
	case SET_LISTEN:
		return settings_set_listen(set, def, value);
	case SET_SIZE: {
		uint64_t bytes;
		if (user_policy_parse_size(value, strlen(value),
					   (uint64_t)def->max << 20, &bytes) < 0 ||
		    bytes < ((uint64_t)def->min << 20))
			return settings_error("expected a size in bytes (k, M, G"
					      " or T suffix) up to %u MiB",
					      def->max);
		*(uint64_t *)field = bytes;
		return NULL;
	}
	case SET_LOG:
		if (strcmp(value, "stderr") != 0 && strcmp(value, "syslog") != 0)
			return "expected stderr or syslog";
		*(bool *)field = strcmp(value, "syslog") == 0;
		return NULL;
	}
	return "impossible setting type";
}

void settings_init(struct popboxd_settings *set)
{
	memset(set, 0, sizeof(*set));
	for (size_t i = 0; i < SETTINGS_COUNT; i++) {
		const struct settings_def *def = &settings_defs[i];

		/* A default the parser refuses is a bug in the table; only
		   strdup() can fail otherwise. */
		if (def->def != NULL && settings_set(set, def, def->def) != NULL)
			abort();
	}
}

void settings_free(struct popboxd_settings *set)
{
	for (size_t i = 0; i < SETTINGS_COUNT; i++) {
		const struct settings_def *def = &settings_defs[i];

		if (def->type == SET_LISTEN) {
			settings_list_clear(set, def);
		} else if (def->type == SET_STRING) {
			char **p = (char **)((char *)set + def->offset);

			free(*p);
			*p = NULL;
		}
	}
}

static const struct settings_def *settings_find(const char *key)
{
	for (size_t i = 0; i < SETTINGS_COUNT; i++) {
		if (strcmp(settings_defs[i].name, key) == 0)
			return &settings_defs[i];
	}
	return NULL;
}

static bool settings_is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* Trims s in place and returns the first non-blank byte. */
static char *settings_trim(char *s)
{
	size_t len = strlen(s);

	while (len > 0 && settings_is_space(s[len - 1]))
		s[--len] = '\0';
	while (settings_is_space(*s))
		s++;
	return s;
}

/* Cuts a comment: '#' at the start of the line or after a blank. */
static void settings_strip_comment(char *s)
{
	for (size_t i = 0; s[i] != '\0'; i++) {
		if (s[i] == '#' && (i == 0 || settings_is_space(s[i - 1]))) {
			s[i] = '\0';
			return;
		}
	}
}

struct settings_parse_state {
	struct popboxd_settings *set;
	unsigned int lineno;
	unsigned int seen_line[SETTINGS_COUNT]; /* 0: not yet in this text */
};

/* Handles one line of at most SETTINGS_LINE_MAX bytes, no newline. */
static const char *settings_parse_line(struct settings_parse_state *ps,
				       const char *line, size_t len)
{
	char buf[SETTINGS_LINE_MAX + 1];

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return "control byte in line";
	}
	memcpy(buf, line, len);
	buf[len] = '\0';
	settings_strip_comment(buf);
	char *key = settings_trim(buf);
	if (*key == '\0')
		return NULL;
	char *eq = strchr(key, '=');
	if (eq == NULL)
		return "missing '='";
	*eq = '\0';
	key = settings_trim(key);
	char *value = settings_trim(eq + 1);

	const struct settings_def *def = settings_find(key);
	if (def == NULL)
		return settings_error("unknown key '%.*s'", SETTINGS_QUOTE_MAX, key);
	size_t idx = (size_t)(def - settings_defs);
	if (ps->seen_line[idx] != 0 && def->type != SET_LISTEN)
		return settings_error("'%s' given twice (first on line %u)",
				      def->name, ps->seen_line[idx]);
	if (*value == '\0')
		return settings_error("empty value for '%s'", def->name);
	if (*value == '#')
		return settings_error("value for '%s' may not start with '#'",
				      def->name);
	if (strlen(value) > SETTINGS_VALUE_MAX)
		return settings_error("value for '%s' too long (max %d bytes)",
				      def->name, SETTINGS_VALUE_MAX);
	/* The first listen (tls_listen) of a text replaces the earlier ones
	   of that key, e.g. the ones a previous text set. */
	if (def->type == SET_LISTEN && ps->seen_line[idx] == 0)
		settings_list_clear(ps->set, def);
	ps->seen_line[idx] = ps->lineno;
	const char *err = settings_set(ps->set, def, value);
	if (err != NULL)
		return settings_error("%s: %s", def->name, err);
	return NULL;
}

int settings_parse(struct popboxd_settings *set, const char *text, size_t len,
		   const char **error_r)
{
	struct settings_parse_state ps;
	size_t pos = 0;

	memset(&ps, 0, sizeof(ps));
	ps.set = set;
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t linelen = nl != NULL ? (size_t)(nl - text) - pos : len - pos;
		const char *line = text + pos, *err;

		pos += linelen + 1;
		ps.lineno++;
		if (linelen > 0 && line[linelen - 1] == '\r')
			linelen--;
		if (linelen > SETTINGS_LINE_MAX)
			err = settings_error("line too long (max %d bytes)",
					     SETTINGS_LINE_MAX);
		else
			err = settings_parse_line(&ps, line, linelen);
		if (err != NULL) {
			*error_r = settings_error("line %u: %s", ps.lineno, err);
			return -1;
		}
	}
	return 0;
}

struct settings_path {
	char buf[SETTINGS_PATH_MAX + 1];
	size_t len;
	bool overflow;
};

static void settings_path_add(struct settings_path *p, const char *s, size_t n)
{
	if (n > SETTINGS_PATH_MAX - p->len) {
		p->overflow = true;
		return;
	}
	memcpy(p->buf + p->len, s, n);
	p->len += n;
	p->buf[p->len] = '\0';
}

/* True if path has a ".." component. */
static bool settings_path_has_dotdot(const char *path)
{
	for (const char *c = path; *c != '\0';) {
		size_t n = strcspn(c, "/");

		if (n == 2 && c[0] == '.' && c[1] == '.')
			return true;
		c += n;
		if (*c == '/')
			c++;
	}
	return false;
}

/* Appends the value of %c for user/home; an error text or NULL. */
static const char *settings_expand_one(struct settings_path *p, char c,
				       const char *user, const char *home)
{
	const char *at = strchr(user, '@');

	switch (c) {
	case 'u':
		settings_path_add(p, user, strlen(user));
		return NULL;
	case 'n':
		settings_path_add(p, user, at != NULL ? (size_t)(at - user)
						      : strlen(user));
		return NULL;
	case 'd':
		if (at != NULL)
			settings_path_add(p, at + 1, strlen(at + 1));
		return NULL;
	case 'h':
		if (home[0] == '\0')
			return "%h used but the user has no home directory";
		settings_path_add(p, home, strlen(home));
		return NULL;
	case '%':
		settings_path_add(p, "%", 1);
		return NULL;
	case '\0':
		return "'%' at the end of mail_location";
	}
	return settings_error("unknown variable '%%%c' in mail_location", c);
}

int settings_expand_mail_location(const char *tmpl, const char *user,
				  const char *home, char **path_r,
				  const char **error_r)
{
	struct settings_path p = { .len = 0, .overflow = false };
	const char *err = NULL;

	p.buf[0] = '\0';
	for (const char *t = tmpl; *t != '\0' && err == NULL; t++) {
		if (*t != '%')
			settings_path_add(&p, t, 1);
		else if ((err = settings_expand_one(&p, t[1], user, home)) == NULL)
			t++;
	}
	if (err == NULL && p.overflow)
		err = "mail path too long";
	else if (err == NULL && p.buf[0] != '/')
		err = "mail path is not absolute";
	else if (err == NULL && settings_path_has_dotdot(p.buf))
		err = "mail path has a '..' component";
	if (err == NULL && (*path_r = strdup(p.buf)) == NULL)
		err = "out of memory";
	if (err != NULL) {
		*error_r = err;
		return -1;
	}
	return 0;
}

/* True if tmpl uses a per-user variable (%u, %n or %h). */
static bool settings_template_per_user(const char *tmpl)
{
	for (const char *t = tmpl; *t != '\0'; t++) {
		if (*t != '%' || t[1] == '\0')
			continue;
		if (t[1] == 'u' || t[1] == 'n' || t[1] == 'h')
			return true;
		t++; /* skip "%%" and the like */
	}
	return false;
}

static int settings_check_mail_location(const char *tmpl, const char **error_r)
{
	char *path;
	const char *err;

	if (!settings_template_per_user(tmpl)) {
		*error_r = "mail_location must contain %u, %n or %h, "
			   "or all users would share one maildrop";
		return -1;
	}
	/* A trial expansion finds bad variables, relative paths and "..". */
	if (settings_expand_mail_location(tmpl, "user@example.org", "/home/user",
					  &path, &err) < 0) {
		*error_r = settings_error("mail_location: %s", err);
		return -1;
	}
	free(path);
	return 0;
}

static int settings_default_hostname(struct popboxd_settings *set,
				     const char **error_r)
{
	char name[SETTINGS_HOSTNAME_MAX + 2];

	if (gethostname(name, sizeof(name)) < 0 ||
	    memchr(name, '\0', sizeof(name)) == NULL || name[0] == '\0' ||
	    settings_check_hostname(name) != NULL) {
		*error_r = "hostname: the system host name is not usable, "
			   "set hostname";
		return -1;
	}
	if ((set->hostname = strdup(name)) == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

/* Certificate and key come as a pair, and tls_listen needs the pair. */
static int settings_check_tls(const struct popboxd_settings *set,
			      const char **error_r)
{
	bool cert = set->tls_cert_file != NULL, key = set->tls_key_file != NULL;

	if (cert && !key) {
		*error_r = "tls_cert_file is set but tls_key_file is not";
		return -1;
	}
	if (key && !cert) {
		*error_r = "tls_key_file is set but tls_cert_file is not";
		return -1;
	}
	if (set->tls_listen_count > 0 && !cert) {
		*error_r = "tls_listen needs tls_cert_file and tls_key_file";
		return -1;
	}
	return 0;
}

int settings_check(struct popboxd_settings *set, const char **error_r)
{
	if (set->passdb_file == NULL) {
		*error_r = "passdb_file is required";
		return -1;
	}
	if (set->mail_location == NULL || set->mail_user == NULL) {
		*error_r = "mail_location and mail_user are required";
		return -1;
	}
	if (settings_check_mail_location(set->mail_location, error_r) < 0)
		return -1;
	if (set->hostname == NULL && settings_default_hostname(set, error_r) < 0)
		return -1;
	if (settings_check_tls(set, error_r) < 0)
		return -1;
	if (set->listen_none && set->tls_listen_count == 0) {
		*error_r = "listen = none needs a tls_listen: no address to serve";
		return -1;
	}
	/* Only plain listen has a default: implicit TLS is opt-in. */
	if (set->listen_count == 0 && !set->listen_none) {
		if ((set->listen[0] = strdup("127.0.0.1:110")) == NULL) {
			*error_r = "out of memory";
			return -1;
		}
		set->listen_count = 1;
	}
	return 0;
}

static void settings_print_one(const struct popboxd_settings *set,
			       const struct settings_def *def, FILE *out)
{
	const void *field = (const char *)set + def->offset;
	const char *s;

	switch (def->type) {
	case SET_STRING:
		s = *(char *const *)field;
		if (s == NULL)
			fprintf(out, "# %s is not set\n", def->name);
		else
			fprintf(out, "%s = %s\n", def->name, s);
		break;
	case SET_BOOL:
		fprintf(out, "%s = %s\n", def->name,
			*(const bool *)field ? "yes" : "no");
		break;
	case SET_UINT:
		fprintf(out, "%s = %u\n", def->name, *(const unsigned int *)field);
		break;
	case SET_EXPIRE:
		if (*(const int *)field < 0)
			fprintf(out, "%s = never\n", def->name);
		else
			fprintf(out, "%s = %d\n", def->name, *(const int *)field);
		break;
	case SET_LISTEN: {
		char *const *addrs = field;
		size_t count = *(const size_t *)((const char *)set +
						 def->count_offset);

		if (count == 0 && def->offset == OFF(listen) && set->listen_none)
			fprintf(out, "%s = none\n", def->name);
		else if (count == 0)
			fprintf(out, "# %s is not set\n", def->name);
		for (size_t i = 0; i < count; i++)
			fprintf(out, "%s = %s\n", def->name, addrs[i]);
		break;
	}
	case SET_SIZE:
		fprintf(out, "%s = %llu\n", def->name,
			(unsigned long long)*(const uint64_t *)field);
		break;
	case SET_LOG:
		fprintf(out, "%s = %s\n", def->name,
			*(const bool *)field ? "syslog" : "stderr");
		break;
	}
}

/* The loopback networks: LMTP serves them whatever trusted_networks says. */
static const struct netmask_list settings_loopback = {
	.nets = {
		{ .family = AF_INET, .addr = { 127 }, .prefix = 8 },
		{ .family = AF_INET6, .addr = { [15] = 1 }, .prefix = 128 },
	},
	.count = 2,
};

/* Whether every address in net is a loopback one. */
static bool settings_net_is_loopback(const struct netmask *net)
{
	static const uint8_t v6_loopback[16] = { [15] = 1 };

	if (net->family == AF_INET)
		return net->prefix >= 8 && net->addr[0] == 127;
	return net->prefix == 128 && memcmp(net->addr, v6_loopback, 16) == 0;
}

/* Whether trusted_networks names anything beyond loopback. */
static bool settings_trusts_beyond_loopback(const struct popboxd_settings *set)
{
	struct netmask_list trusted;
	const char *error;

	if (set->trusted_networks == NULL ||
	    netmask_list_parse(set->trusted_networks,
			       strlen(set->trusted_networks), &trusted,
			       &error) < 0)
		return false;
	for (size_t i = 0; i < trusted.count; i++) {
		if (!settings_net_is_loopback(&trusted.nets[i]))
			return true;
	}
	return false;
}

const char *settings_lmtp_warning(const struct popboxd_settings *set)
{
	static _Thread_local char text[SETTINGS_LINE_MAX + 256];
	struct sockaddr_storage ss;
	socklen_t len;
	const char *error;

	if (set->lmtp_listen == NULL || strncmp(set->lmtp_listen, "unix:", 5) == 0)
		return NULL;
	/* A value that does not parse never got past settings_parse(). */
	if (listen_addr_parse(set->lmtp_listen, &ss, &len, &error) < 0 ||
	    netmask_list_contains(&settings_loopback, (struct sockaddr *)&ss) ||
	    settings_trusts_beyond_loopback(set))
		return NULL;
	snprintf(text, sizeof(text), "lmtp_listen = %s is not a loopback "
		 "address but trusted_networks holds loopback only: LMTP will "
		 "refuse every peer but this host's loopback (add the MTA's "
		 "network to trusted_networks, or listen on 127.0.0.1 or a unix "
		 "socket)", set->lmtp_listen);
	return text;
}

void settings_print(const struct popboxd_settings *set, FILE *out)
{
	const char *warning = settings_lmtp_warning(set);

	for (size_t i = 0; i < SETTINGS_COUNT; i++)
		settings_print_one(set, &settings_defs[i], out);
	if (warning != NULL)
		fprintf(out, "# warning: %s\n", warning);
}

/* Reads a regular file of at most SETTINGS_FILE_MAX bytes. */
static int settings_read(const char *path, char **text_r, size_t *len_r,
			 const char **error_r)
{
	if (file_read_all(AT_FDCWD, path, 0, SETTINGS_FILE_MAX, text_r, len_r,
			  NULL, error_r) < 0) {
		if (errno == EFBIG)
			*error_r = "larger than 1 MiB";
		return -1;
	}
	return 0;
}

int settings_load(struct popboxd_settings *set, const char *path,
		  const char **error_r)
{
	const char *err;
	char *text;
	size_t len;
	int ret;

	if (settings_read(path, &text, &len, &err) < 0) {
		*error_r = settings_error("%s: %s", path, err);
		return -1;
	}
	ret = settings_parse(set, text, len, &err);
	free(text);
	if (ret == 0)
		ret = settings_check(set, &err);
	if (ret < 0)
		*error_r = settings_error("%s: %s", path, err);
	return ret;
}

int settings_user_maildir(const struct popboxd_settings *set, const char *user,
			  const char *home, const char *mail, char **path_r,
			  const char **error_r)
{
	if (mail == NULL || mail[0] == '\0')
		return settings_expand_mail_location(set->mail_location, user,
						     home, path_r, error_r);
	if ((*path_r = strdup(mail)) == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}
