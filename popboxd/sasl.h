/*
 * sasl.h — the server side of the SASL mechanisms popboxd offers
 * (RFC 4422): PLAIN (RFC 4616), LOGIN (the Outlook-era mechanism of
 * draft-murchison-sasl-login) and SCRAM-SHA-256 (RFC 5802, RFC 7677).
 *
 * Transport-neutral and sans I/O: the protocol front end (POP3 AUTH,
 * RFC 5034) decodes the client's base64 and passes raw bytes in; a step
 * returns raw challenge bytes (the front end base64-encodes them) or the
 * outcome.  This is the code that sees secrets and consults the passdb, so
 * it runs on the authentication side (a worker thread today, the auth
 * process later), never on an event loop: a step may hash.
 *
 * Invariants:
 *   - An unknown user, a user whose stored secret cannot serve the
 *     mechanism, and a wrong password all end in SASL_FAIL after the same
 *     work (a dummy salt and iteration count for SCRAM, the passdb's dummy
 *     hash for PLAIN and LOGIN).
 *   - Every buffer that held a password or a key is wiped before it is
 *     freed; sasl_server_free() wipes the exchange.
 *   - The authorization identity, when given, must equal the
 *     authentication identity; proxy authorization is refused (FAIL).
 *   - SCRAM channel binding is not offered: a "p=" GS2 header is
 *     MALFORMED, "n" and "y" are accepted.  Passwords are used as the
 *     client sends them (UTF-8 bytes, no SASLprep normalisation).
 */
#ifndef POPBOX_SASL_H
#define POPBOX_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "passdb.h"
#include "sasl-mech.h" /* enum sasl_mech, sasl_mech_from_name, sasl_mech_name */

/* Longest client message any mechanism accepts, decoded.  PLAIN's
   authzid NUL authcid NUL password with a 64-byte name and a PASSWORD_MAX
   password fits. */
#define SASL_CLIENT_MAX 1024

enum sasl_status {
	SASL_CONTINUE,   /* send *out_r as a challenge, then feed the answer */
	SASL_OK,         /* authenticated; *user_r is filled */
	SASL_FAIL,       /* unknown user or wrong credential: [AUTH] */
	SASL_MALFORMED,  /* the client broke the mechanism's syntax or order */
	SASL_TEMPFAIL,   /* the passdb or the crypto library failed */
};

struct sasl_server;

/* A new exchange for mech; NULL when out of memory (or mech is not one). */
struct sasl_server *sasl_server_new(enum sasl_mech mech);
/* Wipes and frees; *server becomes NULL. */
void sasl_server_free(struct sasl_server **server);

/*
 * One step of the exchange.  in/in_len is the client's decoded message;
 * on the first step, in == NULL means "no initial response was given"
 * (the mechanism then starts with a challenge, empty for PLAIN and
 * SCRAM), while in != NULL with in_len 0 is an empty initial response.
 * Later steps always have in != NULL.  Messages longer than
 * SASL_CLIENT_MAX are MALFORMED.
 *
 * SASL_CONTINUE: *out_r (*out_len_r bytes) is the challenge to send (valid until
 * the next call or free).  For SCRAM the server-final message ("v=...")
 * comes as a challenge too (RFC 5034 has no success data), and the exchange
 * ends with SASL_OK on the client's empty answer.
 * SASL_OK: *user_r is filled (passdb_user_clear() it); on every other
 * status it is zeroed.  Any status other than CONTINUE ends the exchange
 * (its keys are wiped at once); further steps return SASL_MALFORMED.
 *
 * Which status when:
 *   MALFORMED  syntax: PLAIN without exactly two NULs or with an empty
 *              authcid or password; a NUL in a LOGIN answer or any SCRAM
 *              message; SCRAM "p=" or "m=", a bad saslname escape, a bad
 *              nonce, c= not the base64 of the client's own gs2 header,
 *              r= not the full nonce, a proof that is not 32 bytes of
 *              base64, a non-empty answer to the server-final message.
 *   FAIL       authzid differs from authcid; unknown user; wrong
 *              password or proof; an entry that cannot serve the
 *              mechanism (SCRAM against a crypt hash).
 * Each SCRAM exchange that gets past the client-first message costs one
 * PBKDF2 run in the passdb (passdb_scram_lookup()).
 */
enum sasl_status sasl_server_step(struct sasl_server *server, struct passdb *db,
				  const uint8_t *in, size_t in_len,
				  const uint8_t **out_r, size_t *out_len_r,
				  struct passdb_user *user_r);

/* The authentication identity once the client has named it (for logs),
   else NULL.  NUL-terminated, at most USERNAME_MAX bytes are kept.  It is
   the client's text (any bytes but NUL, not necessarily a valid user
   name): pass it through log_escape() before logging it. */
const char *sasl_server_user(const struct sasl_server *server);

/*
 * Tests only: makes the next SCRAM server-first message use
 * server_nonce_part instead of 24 random bytes, so a test can replay a
 * published exchange (RFC 7677 section 3).  Ignored unless it is 1..64
 * printable characters without ','.  Never call it in the server.
 */
void sasl_server_set_nonce_for_test(struct sasl_server *server,
				    const char *server_nonce_part);

#endif
