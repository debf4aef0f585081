/*
 * settings.h — popboxd's configuration: parse, check, print.
 *
 * The file is `key = value` lines; '#' starts a comment; blank lines are
 * ignored; keys may not repeat except `listen` and `tls_listen`.  Unknown
 * keys, bad values and over-long lines are errors with the line number: a
 * typo must never silently fall back to a default.  docs/configuration.md lists every key.
 */
#ifndef POPBOX_SETTINGS_H
#define POPBOX_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SETTINGS_MAX_LISTEN 16

struct popboxd_settings {
	char *listen[SETTINGS_MAX_LISTEN]; /* "127.0.0.1:110", "[::1]:110", "*:110" */
	size_t listen_count;               /* default: one, "127.0.0.1:110" */
	bool listen_none;       /* "listen = none": no plain listener at all */
	/* RFC 8314 implicit TLS: addresses where the connection starts with
	   a TLS handshake (POP3S, 995).  Default: none. */
	char *tls_listen[SETTINGS_MAX_LISTEN];
	size_t tls_listen_count;
	/* PEM certificate chain and private key.  Both or neither; needed by
	   tls_listen and by STLS (offered on plain ports when they are set). */
	char *tls_cert_file;
	char *tls_key_file;
	char *tls_min_version;  /* "TLSv1.2" (default) or "TLSv1.3" */
	/* USER/PASS without TLS is refused unless the client is on one of
	   these networks ("none": nowhere) or allow_cleartext is set. */
	char *trusted_networks;       /* default "127.0.0.0/8 ::1/128" */
	bool allow_cleartext;         /* default no */
	char *passdb_file;                 /* required */
	char *mail_location;   /* Maildir path template: %u user, %h home, %d domain,
				  %n local part, %% percent; default "%h/Maildir" */
	char *mail_user;       /* mail processes' user when started as root; default "popbox" */
	char *login_user;      /* login processes' user; default "popbox-login" */
	char *auth_user;       /* the auth process's user; default "popbox-auth" */
	/* SASL mechanisms offered: a list, "none", or "auto" (the default;
	   see settings_sasl_mechs()) */
	char *auth_mechanisms;
	/* LMTP (RFC 2033) for the MTA: "unix:/path" or "127.0.0.1:24"; NULL = off. */
	char *lmtp_listen;
	/* Where popbox-deliver asks the auth process for a user's record. */
	char *userdb_socket;
	bool apop;             /* offer APOP; default off (needs {PLAIN} secrets) */
	unsigned int login_delay;   /* RFC 2449 LOGIN-DELAY, seconds; 0 = off */
	int expire_days;            /* RFC 2449 EXPIRE; -1 = NEVER (the default) */
	unsigned int keep_days;     /* DELEted messages kept out of sight N days; 0 = none */
	uint64_t quota_storage;     /* bytes per maildrop; 0 = no limit */
	unsigned int quota_messages; /* messages per maildrop; 0 = no limit */
	uint64_t message_size_limit; /* largest message accepted for delivery */
	unsigned int login_timeout; /* seconds for the whole pre-auth phase; default 60 */
	unsigned int idle_timeout;  /* seconds idle after login; >= 600 (RFC 1939) */
	unsigned int auth_failure_delay_ms; /* before every failed-login reply; default 2000 */
	unsigned int auth_penalty_max_ms;   /* cap of the per-address wait; default 15000 */
	unsigned int max_auth_failures;     /* per connection, then close; default 3 */
	unsigned int max_bad_commands;      /* in a row, then close; default 10 */
	unsigned int max_connections;             /* all processes; 0 = no cap */
	unsigned int max_connections_per_address; /* IPv6 per /64; 0 = no cap */
	unsigned int max_preauth_connections;     /* not logged in; oldest goes */
	unsigned int output_timeout;  /* seconds replies may wait unread */
	unsigned int workers;       /* login and mail processes; 0 = one per core */
	unsigned int auth_workers;  /* threads for hashing and disk work; default 4 */
	bool log_syslog;            /* log = syslog | stderr; default stderr */
	char *hostname;             /* for the APOP timestamp; default gethostname() */
};

/* Fills set with the defaults (listen stays empty until finalised). */
void settings_init(struct popboxd_settings *set);

/*
 * Parses a whole config text (pure: no I/O, text need not be NUL-terminated)
 * on top of what set holds.  Returns 0, or -1 with *error_r a thread-local
 * text naming the line ("line 7: unknown key 'lsiten'").
 */
int settings_parse(struct popboxd_settings *set, const char *text, size_t len,
		   const char **error_r);

/* Reads path (at most 1 MiB), parses it and checks it (settings_check). */
int settings_load(struct popboxd_settings *set, const char *path,
		  const char **error_r);

/* Checks cross-field rules and required keys; fills in the listen default. */
int settings_check(struct popboxd_settings *set, const char **error_r);

/* Prints the effective settings as a config file that would load; a
   setting that loads but is likely not what the admin meant is followed by
   a "# warning: ..." comment (settings_lmtp_warning). */
void settings_print(const struct popboxd_settings *set, FILE *out);

/*
 * A TCP lmtp_listen on an address other than loopback while
 * trusted_networks holds loopback networks only: LMTP will refuse every
 * peer but this host (lmtp-conn.h).  Returns that warning as a
 * thread-local text, or NULL when there is nothing to say.  A warning,
 * not an error: such a listener still serves a local MTA, safely.
 */
const char *settings_lmtp_warning(const struct popboxd_settings *set);

void settings_free(struct popboxd_settings *set);

/*
 * Parses an auth_mechanisms value into a mask, bit (1u << enum sasl_mech)
 * per mechanism; "none" is 0.  "auto" is PLAIN and LOGIN with
 * *scram_auto_r set: SCRAM-SHA-256 is to be added when the passdb has an
 * entry that can use it (passdb_file_can_scram(), decided by the master).
 * An explicit list means what it says (*scram_auto_r false).  Returns -1
 * for an unknown name.
 */
int settings_sasl_mechs(const char *value, unsigned int *mask_r,
			bool *scram_auto_r);

/*
 * Expands a mail_location template for a user.  home may be "" (then %h is
 * an error).  Returns 0 and a malloc'ed path, or -1 with *error_r.
 * The user name must already have passed username_valid().
 */
int settings_expand_mail_location(const char *tmpl, const char *user,
				  const char *home, char **path_r,
				  const char **error_r);

/*
 * The Maildir of a user: mail (the passwd-file's mail= field) when set and
 * not empty, else mail_location expanded.  Returns 0 and a malloc'ed path,
 * or -1 with *error_r (NULL path: out of memory).
 */
int settings_user_maildir(const struct popboxd_settings *set, const char *user,
			  const char *home, const char *mail, char **path_r,
			  const char **error_r);

#endif
