/*
 * pop3-session.h — the POP3 protocol core (RFC 1939, 2449, 3206), sans I/O.
 *
 * A session is a state machine fed with the bytes a client sent.  It writes
 * response bytes through an output callback and, when it needs the outside
 * world, it raises one action (verify a login and open the maildrop, stream
 * a message, commit deletions, close) and consumes no more input until the
 * caller reports the action's result.  It never touches a socket, a file or
 * a clock, so unit tests and fuzzers drive it alone.
 *
 * Invariants:
 *   - At most one command line is held: pop3_session_input() consumes at
 *     most one line per call, so pipelined commands wait in the caller's
 *     buffer, in order, and backpressure is the caller's to apply.
 *   - A line longer than POP3_LINE_MAX (POP3_SASL_LINE_MAX for an answer
 *     inside an AUTH exchange) is discarded as it arrives (never buffered
 *     whole) and answered with one -ERR.
 *   - Deletions are only marks until QUIT in TRANSACTION raises
 *     POP3_ACTION_COMMIT; any other end of the session deletes nothing.
 *   - Message numbers are fixed for the session; a deleted message is left
 *     out of STAT/LIST/UIDL and refused by RETR/TOP/DELE until RSET.
 */
#ifndef POPBOX_POP3_SESSION_H
#define POPBOX_POP3_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "mailmsg.h"
#include "pop3-parse.h"
#include "sasl.h"

/* Longest client answer inside an AUTH exchange (RFC 5034), CRLF
   included: the base64 form of the longest SASL message we accept. */
#define POP3_SASL_LINE_MAX (((SASL_CLIENT_MAX + 2) / 3) * 4 + 2)
/* The longest line the core ever needs to see at once: a caller offering
   input hands over at least this much when that much is buffered. */
#define POP3_INPUT_MAX (POP3_SASL_LINE_MAX > POP3_LINE_MAX ? \
			POP3_SASL_LINE_MAX : POP3_LINE_MAX)

enum pop3_state {
	POP3_STATE_AUTHORIZATION,
	POP3_STATE_TRANSACTION,
	POP3_STATE_UPDATE,
	POP3_STATE_CLOSED,      /* no more input is read; flush and close */
};

struct pop3_config {
	bool apop;                  /* offer APOP (needs apop_timestamp) */
	const char *apop_timestamp; /* "<unique@host>", unique per greeting */
	unsigned int login_delay;   /* CAPA LOGIN-DELAY; 0 = not advertised */
	/* CAPA EXPIRE: the site's default, -1 = NEVER.  Before login a
	   number is announced with USER (an account may have its own);
	   after login, the account's value (pop3_session_set_expire). */
	int expire_days;
	unsigned int max_auth_failures;  /* failed logins, then close */
	unsigned int max_bad_commands;   /* bad commands in a row, then close */
	const char *implementation;      /* CAPA IMPLEMENTATION */
	bool stls;           /* STLS (RFC 2595) can be offered on this connection */
	bool tls;            /* the connection is already encrypted (implicit TLS) */
	/* USER/PASS may be used before TLS (trusted network, or the admin
	   allowed cleartext).  Otherwise USER is refused, so the password is
	   never sent, and CAPA does not list USER until TLS is up. */
	bool cleartext_ok;
	/* SASL mechanisms offered by AUTH: bit (1u << enum sasl_mech) each.
	   PLAIN and LOGIN carry the password, so they follow cleartext_ok
	   like USER; SCRAM-SHA-256 never reveals it and is offered always. */
	unsigned int sasl_mechs;
};

enum pop3_action_type {
	POP3_ACTION_NONE,
	/* Verify user + password (or APOP digest), then lock and open the
	   maildrop; answer with pop3_session_login_done(). */
	POP3_ACTION_LOGIN,
	/* Open message `index`; then pop3_session_message_begin(), stream its
	   wire form (lib/wire.h) with max_body_lines, and
	   pop3_session_message_done(). */
	POP3_ACTION_SEND_MESSAGE,
	/* UPDATE: remove every message whose deleted[] byte is set, make it
	   durable, then pop3_session_commit_done(). */
	POP3_ACTION_COMMIT,
	/* Flush what was written, then close the connection. */
	POP3_ACTION_CLOSE,
	/* STLS was accepted ("+OK" is written): throw away every byte the
	   client sent after the STLS line, start the TLS handshake, then
	   pop3_session_tls_started(). */
	POP3_ACTION_START_TLS,
	/* One step of an AUTH exchange (RFC 5034): hand sasl_data to the
	   mechanism, then answer with pop3_session_auth_challenge() (the
	   exchange goes on) or pop3_session_auth_done() (it ended). */
	POP3_ACTION_AUTH_STEP,
};

struct pop3_action {
	enum pop3_action_type type;
	/* LOGIN: user is NUL-terminated; exactly one of password (USER/PASS)
	   and apop_digest (APOP, 32 hex digits) is set.  Valid until
	   login_done, and wiped then.  All three are NULL for a session made
	   by pop3_session_new_authenticated(). */
	const char *user;
	const char *password;
	const char *apop_digest;
	/* SEND_MESSAGE */
	size_t index;              /* 0-based */
	int64_t max_body_lines;    /* -1 for RETR */
	/* COMMIT: one byte per message, count bytes */
	const uint8_t *deleted;
	size_t count;
	/* AUTH_STEP: sasl_first starts a new exchange of sasl_mech;
	   sasl_data is the decoded client message (NULL on a first step
	   without initial response), valid until the answer, wiped then. */
	enum sasl_mech sasl_mech;
	bool sasl_first;
	const uint8_t *sasl_data;
	size_t sasl_len;
};

enum pop3_login_result {
	POP3_LOGIN_OK,
	POP3_LOGIN_AUTH_FAILED,   /* [AUTH]: unknown user or wrong secret */
	POP3_LOGIN_IN_USE,        /* [IN-USE] */
	POP3_LOGIN_DELAYED,       /* [LOGIN-DELAY] */
	POP3_LOGIN_SYS_TEMP,      /* [SYS/TEMP] */
	POP3_LOGIN_SYS_PERM,      /* [SYS/PERM] */
	POP3_LOGIN_MALFORMED,     /* the SASL exchange broke the mechanism */
	POP3_LOGIN_DISABLED,      /* [AUTH]: right credential, but the account
				     may not use POP3 (passwd-file pop3=no) */
};

enum pop3_send_result {
	POP3_SEND_OK,        /* streamed whole */
	POP3_SEND_GONE,      /* before begin: the message no longer exists */
	POP3_SEND_TEMPFAIL,  /* before begin: could not be opened */
	POP3_SEND_ABORTED,   /* after begin: a read failed mid-way: close */
};

/* Counters for the logout log line. */
struct pop3_session_stats {
	unsigned int retrieved;    /* RETR and TOP answered +OK */
	unsigned int marked;       /* messages marked deleted at QUIT time */
	size_t removed;            /* messages removed in UPDATE */
	unsigned int auth_failures;
};

typedef void pop3_output_fn(void *context, const void *data, size_t len);

struct pop3_session;

/* Creates a session and writes the greeting.  cfg and its strings must
   outlive the session. */
struct pop3_session *pop3_session_new(const struct pop3_config *cfg,
				      pop3_output_fn *output, void *context);
/* A session whose client has authenticated in another process (a login
   process handed the connection over): no greeting; its first action is
   LOGIN with user and secrets NULL, which the caller answers, after
   checking the hand-over and opening the maildrop, with
   pop3_session_auth_done(). */
struct pop3_session *pop3_session_new_authenticated(const struct pop3_config *cfg,
						   pop3_output_fn *output,
						   void *context);
void pop3_session_free(struct pop3_session **session);

/*
 * Feeds received bytes.  Consumes at most one command line (or, while
 * discarding an over-long line, everything up to its end) and returns how
 * many bytes it consumed; 0 means "need more bytes" or "an action is
 * pending or the session is closed": check pop3_session_action() and
 * pop3_session_state().  Bytes not consumed must be offered again later.
 */
size_t pop3_session_input(struct pop3_session *session, const void *data,
			  size_t len);

/* The pending action (type POP3_ACTION_NONE if none). */
const struct pop3_action *pop3_session_action(const struct pop3_session *session);

/* LOGIN's result; on POP3_LOGIN_OK msgs[0..count) is the maildrop
   listing, which must stay valid until the session is freed. */
void pop3_session_login_done(struct pop3_session *session,
			     enum pop3_login_result result,
			     const struct mailmsg *msgs, size_t count);
/* The logged-in account's own expire_days (-1 = NEVER) for CAPA EXPIRE
   in TRANSACTION state; call before login_done/auth_done.  Without it,
   cfg->expire_days is announced. */
void pop3_session_set_expire(struct pop3_session *session, int expire_days);
/* AUTH_STEP: the exchange goes on; writes "+ " and the challenge in
   base64, and the next line the client sends is its answer. */
void pop3_session_auth_challenge(struct pop3_session *session,
				 const void *challenge, size_t len);
/* AUTH_STEP: the exchange ended.  Like login_done; on POP3_LOGIN_OK user
   is the authenticated name (pop3_session_user()), else may be NULL. */
void pop3_session_auth_done(struct pop3_session *session,
			    enum pop3_login_result result, const char *user,
			    const struct mailmsg *msgs, size_t count);
/* True while an AUTH exchange is open (between AUTH and its end, however
   it ends: result, cancel, bad input, abort). */
bool pop3_session_in_auth(const struct pop3_session *session);
/* SEND_MESSAGE: the message is open; writes the +OK line. */
void pop3_session_message_begin(struct pop3_session *session);
/* SEND_MESSAGE's end.  After begin, the caller has written the whole wire
   form including ".\r\n" for POP3_SEND_OK. */
void pop3_session_message_done(struct pop3_session *session,
			       enum pop3_send_result result);
/* COMMIT's result: ok when every marked message is durably removed. */
void pop3_session_commit_done(struct pop3_session *session, bool ok,
			      size_t removed);
/* START_TLS's end: the connection is now under TLS.  The session forgets
   any USER given before (RFC 2595 section 4). */
void pop3_session_tls_started(struct pop3_session *session);
/* Ends the session from outside (idle timeout, shutdown): writes
   "-ERR <reason>" (nothing if reason is NULL) and closes.  Deletes
   nothing. */
void pop3_session_abort(struct pop3_session *session, const char *reason);

enum pop3_state pop3_session_state(const struct pop3_session *session);
/* The logged-in user, or NULL before login. */
const char *pop3_session_user(const struct pop3_session *session);
const struct pop3_session_stats *pop3_session_stats(const struct pop3_session *session);
const char *pop3_state_name(enum pop3_state state);

#endif
