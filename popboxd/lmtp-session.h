/*
 * lmtp-session.h — the LMTP protocol core (RFC 2033, on RFC 5321), sans I/O.
 *
 * Like pop3-session.h: a state machine fed with the bytes the MTA sent.  It
 * writes replies through an output callback and, when it needs the outside
 * world, raises one action and consumes no more input until the caller
 * reports the action's result.  It never touches a socket, a file or a
 * clock, so unit tests and the fuzzer drive it alone.
 *
 *   LHLO, MAIL FROM:<a> [SIZE=n] [BODY=7BIT|8BITMIME], RCPT TO:<a>, DATA,
 *   RSET, NOOP, QUIT, VRFY (252); PIPELINING, 8BITMIME,
 *   ENHANCEDSTATUSCODES and SIZE advertised.
 *
 * Recipients.  The caller looks each one up (LMTP_ACTION_RCPT) and opens
 * its delivery then, so unknown users and full mailboxes are refused at
 * RCPT, one reply each.  The user name tried is, in this order, the first
 * of these that the user database knows (and that passes username_valid()):
 *   1. the whole address               alice+lists@example.org
 *   2. the same without "+detail"      alice@example.org
 *   3. the local part                  alice+lists
 *   4. the local part without detail   alice
 * (duplicates and names that cannot be user names are skipped).  So a
 * passwd-file may name users by address (virtual domains) or by local part,
 * and "+detail" addresses reach their user.  Which domains are ours is the
 * MTA's decision; the domain is not checked here.
 *
 * DATA.  The body is dot-unstuffed and ends at CRLF.CRLF (a bare LF line end
 * is tolerated: ".\n" ends it too).  It leaves in LMTP_CHUNK_MAX pieces
 * (LMTP_ACTION_DATA_CHUNK), as received otherwise (CRLF kept), so the core
 * holds at most one piece.  Then LMTP_ACTION_DATA_END: the caller commits
 * each accepted recipient's copy and reports one result per recipient, in
 * RCPT order, each answered at once with its own reply.  A message larger
 * than size_limit is read to its end without being passed on, and every
 * recipient gets 552 5.3.4.
 *
 * Invariants:
 *   - At most one command line is held; a line longer than LMTP_LINE_MAX is
 *     discarded as it arrives and answered once (500 5.5.2).
 *   - At most LMTP_MAX_RECIPIENTS accepted recipients per transaction.
 *   - Never more final DATA replies than accepted recipients, and never a
 *     2xx for a recipient the caller did not report LMTP_RESULT_OK.
 *   - Every reply carries an enhanced status code (RFC 2034), except the
 *     greeting and the reply to LHLO, which RFC 2034 section 4 exempts.
 */
#ifndef POPBOX_LMTP_SESSION_H
#define POPBOX_LMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 section 4.5.3.1.4: a command line is at most 512 octets with its
   CRLF.  Longer ones are refused whole, never cut into two commands. */
#define LMTP_LINE_MAX 512
/* RFC 5321 section 4.5.3.1.3: a path is at most 256 octets with its <>. */
#define LMTP_ADDRESS_MAX 254
/* RFC 5321 section 4.5.3.1.8: a server must take at least 100 recipients;
   more get 452 4.5.3 (the MTA sends them in another transaction). */
#define LMTP_MAX_RECIPIENTS 100
/* Body bytes handed to the caller at once: bounded memory per session. */
#define LMTP_CHUNK_MAX 65536
/* The most user names tried for one recipient (see above). */
#define LMTP_CANDIDATES_MAX 4

enum lmtp_state {
	LMTP_STATE_GREETED,   /* before LHLO */
	LMTP_STATE_READY,     /* after LHLO, no transaction */
	LMTP_STATE_MAIL,      /* MAIL accepted: RCPT, DATA */
	LMTP_STATE_DATA,      /* reading the message */
	LMTP_STATE_CLOSED,    /* no more input is read; flush and close */
};

struct lmtp_config {
	const char *hostname;          /* in the greeting and LHLO reply */
	uint64_t size_limit;           /* largest message; 0 = no limit */
	unsigned int max_bad_commands; /* errors in a row, then 421 and close */
};

enum lmtp_action_type {
	LMTP_ACTION_NONE,
	/* Look up user; if known, open the delivery of the coming message to
	   it (quota checked with size_hint), then lmtp_session_rcpt_done().
	   index is the recipient's place among the accepted ones if the result
	   is LMTP_RESULT_OK (0, 1, ...: DATA's results come in that order). */
	LMTP_ACTION_RCPT,
	/* "354" is written: the message follows.  lmtp_session_action_done(). */
	LMTP_ACTION_DATA_BEGIN,
	/* Append data[0..len) to every accepted recipient's copy, then
	   lmtp_session_action_done().  data stays valid until then. */
	LMTP_ACTION_DATA_CHUNK,
	/* The message is complete (size bytes): commit each of the count
	   accepted recipients' copies, reporting each result in order with
	   lmtp_session_data_result(); the last one ends the transaction. */
	LMTP_ACTION_DATA_END,
	/* The transaction was dropped (RSET, LHLO, a message over the size
	   limit): abort every open delivery, then lmtp_session_action_done(). */
	LMTP_ACTION_RESET,
	/* Flush what was written, then close the connection (and abort any
	   delivery still open). */
	LMTP_ACTION_CLOSE,
};

struct lmtp_action {
	enum lmtp_action_type type;
	/* RCPT, DATA_BEGIN, DATA_END: the reverse path ("" for <>) */
	const char *sender;
	/* RCPT */
	const char *address;       /* the recipient as given, without <> */
	const char *user;          /* the user name to try */
	size_t index;
	uint64_t size_hint;        /* MAIL's SIZE=, 0 if not given */
	/* DATA_CHUNK */
	const uint8_t *data;
	size_t len;
	/* DATA_END */
	size_t count;
	uint64_t size;
};

enum lmtp_result {
	LMTP_RESULT_OK,
	LMTP_RESULT_UNKNOWN_USER,  /* RCPT: try the next name, else 550 5.1.1 */
	LMTP_RESULT_OVER_QUOTA,    /* mailbox full: 452 4.2.2 */
	LMTP_RESULT_TOO_BIG,       /* larger than the quota allows: 552 5.2.2 */
	LMTP_RESULT_TEMPFAIL,      /* anything transient: 451 4.3.0 */
	LMTP_RESULT_CONFIG,        /* the mailbox cannot be used: 451 4.3.5 */
};

typedef void lmtp_output_fn(void *context, const void *data, size_t len);

struct lmtp_session;

/* Creates a session and writes the greeting.  cfg and its strings must
   outlive the session.  NULL when out of memory. */
struct lmtp_session *lmtp_session_new(const struct lmtp_config *cfg,
				      lmtp_output_fn *output, void *context);
void lmtp_session_free(struct lmtp_session **session);

/*
 * Feeds received bytes.  Consumes at most one command line, or in DATA as
 * much of the message as fits the current piece, and returns how many bytes
 * it consumed; 0 means "need more bytes" or "an action is pending or the
 * session is closed": check lmtp_session_action() and lmtp_session_state().
 * Bytes not consumed must be offered again later.
 */
size_t lmtp_session_input(struct lmtp_session *session, const void *data,
			  size_t len);

/* The pending action (type LMTP_ACTION_NONE if none). */
const struct lmtp_action *lmtp_session_action(const struct lmtp_session *session);

/* RCPT's result.  LMTP_RESULT_UNKNOWN_USER raises RCPT again with the next
   user name while there is one. */
void lmtp_session_rcpt_done(struct lmtp_session *session,
			    enum lmtp_result result);
/* DATA_BEGIN, DATA_CHUNK or RESET is done. */
void lmtp_session_action_done(struct lmtp_session *session);
/* DATA_END: the result for the next recipient in RCPT order; writes its
   reply.  Ignored when every recipient already has one. */
void lmtp_session_data_result(struct lmtp_session *session,
			      enum lmtp_result result);
/* Ends the session from outside (idle timeout, shutdown): writes "421
   <reason>" (nothing if reason is NULL; it starts with its enhanced code,
   "4.4.2 idle for too long") and closes.  Any pending action is dropped:
   the caller aborts whatever it had open. */
void lmtp_session_abort(struct lmtp_session *session, const char *reason);

enum lmtp_state lmtp_session_state(const struct lmtp_session *session);
const char *lmtp_state_name(enum lmtp_state state);

/*
 * The user names to try for a recipient address (see the top of this
 * file), into names[0..LMTP_CANDIDATES_MAX), in the order to try them.
 * Returns how many (0: none could be a user name).  Pure.
 */
size_t lmtp_user_candidates(const char *address,
			    char names[][LMTP_ADDRESS_MAX + 1]);

#endif
