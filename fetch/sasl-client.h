/*
 * sasl-client.h — popbox-fetch's side of POP3 authentication: which method
 * to use, the SASL mechanisms of AUTH (RFC 5034) — SCRAM-SHA-256 (RFC 5802,
 * RFC 7677), PLAIN (RFC 4616), LOGIN, XOAUTH2 (Google's and Microsoft's)
 * and OAUTHBEARER (RFC 7628) — and the APOP digest (RFC 1939 section 7).
 * USER/PASS needs nothing from here but the choice.
 *
 * Sans I/O, and base64 is done here, both ways: the caller passes the text
 * of each "+ " challenge line as it came (base64) and sends the returned
 * text as one line; it never sees the raw SASL messages.
 *
 * One exchange:
 *   sasl_client_new(method, user, secret)
 *   sasl_client_start()  -> the initial response for "AUTH MECH <ir>",
 *                           or NULL: send "AUTH MECH" alone
 *   for each "+ <challenge>" from the server:
 *       sasl_client_step() -> 0: send the response line (may be empty);
 *                            -1: send "*" (cancel, RFC 5034) and fail
 *   on "+OK": accept it only if sasl_client_done() — for SCRAM that means
 *             the server proved it knows the password (its signature
 *             verified); a +OK before that is a failure
 *   on "-ERR": failed; sasl_client_server_error() may say more (SCRAM's
 *              e= attribute, the OAuth JSON error)
 *   sasl_client_free()
 *
 * Invariants:
 *   - The secret (password or OAuth token) is copied at new() and wiped
 *     (OPENSSL_cleanse) as soon as the message that needs it is built; the
 *     SCRAM keys and every buffer that held a secret-bearing message are
 *     wiped before being freed or reused.  The caller's own copy of the
 *     secret, and its output buffer, are its to wipe.
 *   - Every server message is bounded (SASL_CLIENT_CHALLENGE_MAX decoded),
 *     must be canonical base64, and is parsed strictly; the SCRAM
 *     iteration count is bounded so a hostile server cannot make us hash
 *     for minutes.  Nothing the server sends is echoed unescaped:
 *     sasl_client_server_error() is printable ASCII.
 *   - The choice (sasl_client_choose()) never picks a method that sends a
 *     password or token in the clear over a connection without TLS unless
 *     the policy explicitly allows it; OAuth mechanisms only when
 *     configured.
 *
 * SASLprep (RFC 4013) for SCRAM: names and passwords are used as their
 * UTF-8 bytes.  For printable ASCII that IS the SASLprep result.  ASCII
 * control characters, which SASLprep prohibits, are refused.  Non-ASCII
 * text is NOT normalised (no NFKC, no mapping of non-ASCII spaces): such
 * a password works when the server does the same (popboxd, Dovecot) or
 * when it is already in normal form (most typed text); otherwise use
 * PLAIN over TLS.
 */
#ifndef POPBOX_SASL_CLIENT_H
#define POPBOX_SASL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest user name, and longest secret: an OAuth2 access token (a JWT
   from Microsoft) runs to a few KiB. */
#define SASL_CLIENT_USER_MAX 512
#define SASL_CLIENT_SECRET_MAX 8192
/* Longest server message (decoded) accepted: SCRAM's are ~100 bytes, an
   OAuth JSON error a few hundred. */
#define SASL_CLIENT_CHALLENGE_MAX 4096
/* RFC 2449 section 4: a command line is at most 255 octets with CRLF; an
   initial response that would not fit waits for the first challenge
   (RFC 5034 section 4). */
#define SASL_CLIENT_COMMAND_MAX 255
/* SCRAM iteration counts accepted from the server: RFC 7677 section 4
   asks for at least 4096; 10 million PBKDF2-SHA-256 rounds take a few
   seconds, more would let a hostile server burn minutes of our CPU. */
#define SASL_CLIENT_SCRAM_ITER_MIN 4096
#define SASL_CLIENT_SCRAM_ITER_MAX 10000000
/* Longest SCRAM salt accepted (decoded); servers use 16 to 32 bytes. */
#define SASL_CLIENT_SCRAM_SALT_MAX 128
/* Longest SCRAM nonce (client and server parts) accepted. */
#define SASL_CLIENT_SCRAM_NONCE_MAX 256
/* Longest copy of a server's error text kept (printable ASCII). */
#define SASL_CLIENT_SERVER_ERROR_MAX 200
/* MD5 in hex. */
#define SASL_CLIENT_APOP_DIGEST_LEN 32

/* The ways to log in, strongest first: sasl_client_choose() tries the
   automatic ones in this order. */
enum sasl_client_method {
	SASL_CLIENT_AUTO,            /* configuration only: let choose() pick */
	SASL_CLIENT_SCRAM_SHA_256,   /* SASL; the password never crosses */
	SASL_CLIENT_APOP,            /* RFC 1939 digest; never the password */
	SASL_CLIENT_PLAIN,           /* SASL; the password, base64'd */
	SASL_CLIENT_USER,            /* USER/PASS (RFC 1939) */
	SASL_CLIENT_LOGIN,           /* SASL; for servers without USER */
	SASL_CLIENT_XOAUTH2,         /* SASL; OAuth2 token, when configured */
	SASL_CLIENT_OAUTHBEARER,     /* SASL; OAuth2 token, when configured */
	SASL_CLIENT_METHOD_COUNT
};

#define SASL_CLIENT_BIT(method) (1u << (unsigned int)(method))

/*
 * Configuration names, case-insensitive: "auto", "scram-sha-256", "apop",
 * "plain", "user", "login", "xoauth2", "oauthbearer".  Returns 0 and
 * *method_r, or -1 for an unknown name.
 */
int sasl_client_method_from_name(const char *name,
				 enum sasl_client_method *method_r);
/* The name for messages and, for a SASL method, for "AUTH <name>"
   ("SCRAM-SHA-256", "APOP", "USER", ...). */
const char *sasl_client_method_name(enum sasl_client_method method);
/* True for the methods that go through AUTH (a struct sasl_client). */
bool sasl_client_method_is_sasl(enum sasl_client_method method);
/* True for the methods that send the password or token itself. */
bool sasl_client_method_is_cleartext(enum sasl_client_method method);

/*
 * The SASL mechanisms we know among a CAPA "SASL" line's arguments
 * (list[0..len): names separated by spaces or tabs, case-insensitive,
 * unknown ones ignored), as SASL_CLIENT_BIT()s.  Pure.
 */
unsigned int sasl_client_parse_mechs(const char *list, size_t len);

/* What the server offers, as the caller learnt it. */
struct sasl_client_offer {
	unsigned int sasl;  /* sasl_client_parse_mechs() of CAPA's SASL line */
	bool apop;          /* the greeting carried a valid APOP timestamp */
	bool user;          /* CAPA lists USER, or the server has no CAPA */
	bool tls;           /* the connection is TLS (implicit or STLS) */
};

struct sasl_client_policy {
	enum sasl_client_method method;  /* configured, or SASL_CLIENT_AUTO */
	/* Explicit opt-in: a password or token may cross a connection without
	   TLS (the account says so). */
	bool allow_cleartext;
	/* SASL_CLIENT_BIT()s of methods that already failed in this session:
	   AUTO passes over them.  A driver that falls back (say, a SCRAM
	   refused because the server stores the password as a crypt hash)
	   calls choose() again with the failed method added. */
	unsigned int exclude;
};

/*
 * Picks the method: the configured one if the server offers it, or, for
 * AUTO, the first of SCRAM-SHA-256, APOP, PLAIN, USER, LOGIN the server
 * offers.  A method that sends the secret itself (PLAIN, USER, LOGIN,
 * XOAUTH2, OAUTHBEARER) is only chosen with TLS or allow_cleartext; a
 * configured one that would need it is an error, never a silent switch.
 * Returns 0 and *method_r, or -1 with *error_r (static text).
 */
int sasl_client_choose(const struct sasl_client_offer *offer,
		       const struct sasl_client_policy *policy,
		       enum sasl_client_method *method_r, const char **error_r);

struct sasl_client;

/*
 * A new exchange for a SASL method.  secret is the password, or the OAuth2
 * access token for XOAUTH2 and OAUTHBEARER (RFC 6750 b64token characters
 * only: a trailing newline from a token command must be cut first).  Both
 * strings are copied.  Refused (-1, *error_r): a method that is not SASL,
 * an empty or too long user or secret, a user or token with bytes the
 * mechanism cannot carry, control characters for SCRAM (SASLprep).
 * Returns 0 and *client_r, or -1.
 */
int sasl_client_new(enum sasl_client_method method, const char *user,
		    const char *secret, struct sasl_client **client_r,
		    const char **error_r);
/* Wipes and frees; sets *client to NULL.  NULL is fine. */
void sasl_client_free(struct sasl_client **client);

/*
 * Begins the exchange.  *ir_r is the initial response to put on the
 * command line ("AUTH MECH <ir>", "=" for an empty one), or NULL: send
 * "AUTH MECH" alone — LOGIN has no initial response, and one that would
 * make the line longer than SASL_CLIENT_COMMAND_MAX is given by
 * sasl_client_step() at the server's first, empty, challenge.  The text
 * is valid until the next call.  Returns 0, or -1 (called twice, or the
 * random source failed).
 */
int sasl_client_start(struct sasl_client *client, const char **ir_r,
		      const char **error_r);

/*
 * Answers a challenge: challenge[0..len) is the base64 text after "+ "
 * (empty for "+" or "+ ").  Returns 0 and *response_r, the base64 line to
 * send ("" for an empty response), valid until the next call; or -1 with
 * *error_r: send "*" to cancel, the exchange has failed.  Failures: a
 * challenge that is not canonical base64 or too long, one the mechanism
 * does not expect at this point, a malformed SCRAM message, a SCRAM nonce
 * not extending ours, an iteration count out of bounds, a wrong server
 * signature, a SCRAM e= error.  The OAuth mechanisms answer the server's
 * JSON error challenge as RFC 7628 and Google ask ("\x01", or empty for
 * XOAUTH2), keep the JSON for sasl_client_server_error(), and are then
 * not done: the server's -ERR follows.
 */
int sasl_client_step(struct sasl_client *client, const char *challenge,
		     size_t len, const char **response_r, const char **error_r);

/*
 * True when a +OK from the server may end the exchange: every message of
 * ours is out and, for SCRAM, the server's signature has been verified.
 * A +OK while this is false must be treated as a failure.
 */
bool sasl_client_done(const struct sasl_client *client);

/* What the server said went wrong (SCRAM e=, OAuth JSON), printable ASCII
   (others as '?'), at most SASL_CLIENT_SERVER_ERROR_MAX bytes; "" if
   nothing. */
const char *sasl_client_server_error(const struct sasl_client *client);

/* Lowers (or raises) the SCRAM iteration bound for this exchange: values
   below SASL_CLIENT_SCRAM_ITER_MIN count as that.  For a fuzzer, or a
   configuration that wants a tighter bound. */
void sasl_client_set_iter_max(struct sasl_client *client, unsigned int max);

/*
 * Tests only: the SCRAM client nonce to use instead of a random one, to
 * replay a published exchange (RFC 7677 section 3).  Call before
 * sasl_client_start().  Ignored unless 1..64 printable ASCII characters
 * without ','.
 */
void sasl_client_set_nonce_for_test(struct sasl_client *client,
				    const char *nonce);

/*
 * The APOP digest (RFC 1939 section 7): MD5 of the timestamp (brackets
 * included) followed by the secret, in lower-case hex.  timestamp[0..len)
 * must be "<...>" of 3..255 printable ASCII characters (see
 * pop3c_apop_timestamp() for the full check on the greeting).  Writes 32
 * digits and a NUL into digest_r.  Returns 0, or -1 with *error_r.
 */
int sasl_client_apop_digest(const char *timestamp, size_t len,
			    const char *secret,
			    char digest_r[SASL_CLIENT_APOP_DIGEST_LEN + 1],
			    const char **error_r);

#endif
