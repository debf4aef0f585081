/*
 * account.h — popbox-fetch's accounts: the configuration file
 * (docs/fetch.md), and the quick form's URL (pop3s://USER@HOST[:PORT]).
 *
 * The file is INI-like:
 *
 *   # a comment (only at the start of a line: a password may hold '#')
 *   [account NAME]
 *   key = value
 *
 * Each "[account NAME]" starts an account; every key = value line after it
 * belongs to it.  The value is the rest of the line with the spaces around
 * it removed (no quoting: a command is written as it is).  Parsing is pure
 * (text in, accounts out, no file or environment access) and strict: an
 * unknown key, a key given twice, a bad value, a missing required key, a
 * duplicate account name is an error naming its line; nothing is guessed.
 * Defaults that depend on the environment (the UIDL file's directory) are
 * the program's to fill in: account_default_uidl_file().
 *
 * Secrets: a password from the file is kept in the struct and wiped by
 * account_list_free(); the parser never copies it elsewhere.
 */
#ifndef POPBOX_ACCOUNT_H
#define POPBOX_ACCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"
#include "plan.h"
#include "sasl-client.h"
#include "sink.h"

/* A config line longer than this is an error (a JWT goes through a token
   command, never the file). */
#define ACCOUNT_LINE_MAX 4096
/* An account name: 1-64 of A-Z a-z 0-9 . _ - @ + (it names the UIDL file
   and prefixes every output line). */
#define ACCOUNT_NAME_MAX 64
/* The config file is read whole; larger is refused. */
#define ACCOUNT_FILE_MAX (1024 * 1024)
/* Accounts in one file. */
#define ACCOUNT_COUNT_MAX 1000
/* timeout = SECONDS: 1 second to 1 hour per wait. */
#define ACCOUNT_TIMEOUT_DEFAULT 60
#define ACCOUNT_TIMEOUT_MAX 3600
/* size_limit = SIZE, with k/M/G: at most 1 TiB. */
#define ACCOUNT_SIZE_MAX ((uint64_t)1 << 40)

enum account_tls {
	ACCOUNT_TLS_IMPLICIT,  /* pop3s: TLS from the first byte (995) */
	ACCOUNT_TLS_STLS,      /* STLS after the greeting (110); required */
	ACCOUNT_TLS_NONE,      /* plain text, only when written explicitly */
};

struct account {
	char *name;
	unsigned int line;             /* of "[account NAME]", for errors */
	char *host;
	uint16_t port;                 /* 0: 995 for implicit TLS, else 110 */
	enum account_tls tls;
	char *user;
	char *password;                /* NULL if not in the file */
	char *password_command;
	enum sasl_client_method auth;  /* SASL_CLIENT_AUTO by default */
	char *oauth_token_command;
	char *ca_file;
	bool has_fingerprint;
	uint8_t fingerprint[NET_FINGERPRINT_LEN];
	enum sink_kind deliver_kind;
	char *deliver_target;          /* path or command */
	enum plan_keep keep;
	uint32_t keep_days;
	bool only_new;
	uint64_t size_limit;           /* 0: none */
	enum plan_oversize oversize;
	uint32_t max_messages;         /* 0: none */
	unsigned int timeout_s;
	char *uidl_file;               /* NULL: account_default_uidl_file() */
};

struct account_list {
	struct account *accounts;
	size_t count;
};

/*
 * Parses a whole config file text[0..len) into *list (which it
 * overwrites).  Returns 0, or -1 with *line_r (1-based, 0 if the error is
 * not about one line) and *error_r (thread-local text, valid until the next
 * call) and *list empty.
 */
int account_parse_config(const char *text, size_t len,
			 struct account_list *list, unsigned int *line_r,
			 const char **error_r);

/* Frees every account (wiping passwords) and empties *list. */
void account_list_free(struct account_list *list);

/* The account called name, or NULL. */
struct account *account_find(const struct account_list *list,
			     const char *name);

/*
 * The quick form: fills *a from "pop3s://USER@HOST[:PORT]" (implicit TLS)
 * or "pop3://USER@HOST[:PORT]" (STLS); HOST may be "[IPv6]"; USER may be
 * percent-encoded; a trailing "/" is allowed, nothing else after the
 * authority.  The name becomes "USER@HOST:PORT".  Only the connection
 * fields are set (the caller sets delivery and the rest); *a must be
 * zeroed first.  Returns 0, or -1 with *error_r (static text).
 */
int account_from_url(const char *url, struct account *a, const char **error_r);

/* Sets a->name to "USER@HOST:PORT" again (after the port or TLS mode
   changed).  0, or -1 out of memory. */
int account_set_quick_name(struct account *a);

/* Replaces a leading "~/" in the paths (ca_file, uidl_file, a Maildir or
   mbox target; never an MDA command) with home.  0, or -1 (no home, out
   of memory). */
int account_expand_home(struct account *a, const char *home);

/* Frees the fields of one account (wiping the password); *a is zeroed. */
void account_clear(struct account *a);

/* The port to connect to: a->port, or the default for a->tls. */
uint16_t account_port(const struct account *a);

/*
 * Value parsers, shared by the file and the command-line options.  Each
 * returns 0 and the value, or -1 (with *error_r where there is one).
 */
int account_parse_tls(const char *s, enum account_tls *tls_r);
int account_parse_keep(const char *s, enum plan_keep *keep_r,
		       uint32_t *days_r);
/* "12345", "10k", "5M", "1G" (powers of 1024; k/K, m/M, g/G). */
int account_parse_size(const char *s, uint64_t *size_r);
/* "maildir:PATH", "mbox:PATH", "mda:COMMAND"; *target_r is malloc'ed. */
int account_parse_deliver(const char *s, enum sink_kind *kind_r,
			  char **target_r, const char **error_r);

/*
 * The default UIDL file of an account called name: state_home (the
 * caller's $XDG_STATE_HOME, or NULL) + "/popbox/uidl/" + name, or with
 * home ($HOME) + "/.local/state/popbox/uidl/" + name.  '/' in name
 * becomes '_'.  Returns a malloc'ed path, or NULL (no usable directory,
 * out of memory).
 */
char *account_default_uidl_file(const char *name, const char *state_home,
				const char *home);

#endif
