/*
 * fuzz-pop3-session.c — libFuzzer harness for a whole POP3 session.
 *
 * The input is the client's byte stream, delivered in pieces whose sizes
 * come from the stream itself.  Actions get canned answers: PASS "ok" (or
 * any APOP) logs in to a three-message maildrop; other passwords fail;
 * an AUTH step whose decoded data starts with 'o' logs in, 'f' fails, 'm'
 * is malformed, anything else is echoed back as the next challenge;
 * messages "stream"; commits succeed.  Invariants checked: every reply
 * starts with "+OK" or "-ERR" and ends in CRLF; the core never consumes
 * more than it was given; nothing is consumed while an action is pending
 * or after the session closed; a COMMIT only ever happens from QUIT with
 * the session in UPDATE; an AUTH step only comes before login, with data
 * within SASL_CLIENT_MAX and present on every step but a first one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pop3-session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct mailmsg fuzz_msgs[] = {
	{ 10, "a" }, { 20, "b" }, { 30, "c" },
};

struct fuzz_out {
	size_t total;
	int ended_crlf;
	int started_ok;
	int first;
};

static void fuzz_output(void *context, const void *data, size_t len)
{
	struct fuzz_out *o = context;
	const char *p = data;
	if (len == 0)
		return;
	if (o->first) {
		o->started_ok = len >= 3 && (memcmp(p, "+OK", 3) == 0 ||
					     memcmp(p, "-ER", 3) == 0);
		o->first = 0;
	}
	o->ended_crlf = len >= 2 && p[len - 2] == '\r' && p[len - 1] == '\n';
	o->total += len;
}

static void answer_action(struct pop3_session *s)
{
	const struct pop3_action *a = pop3_session_action(s);
	switch (a->type) {
	case POP3_ACTION_LOGIN:
		if (a->apop_digest != NULL || strcmp(a->password, "ok") == 0)
			pop3_session_login_done(s, POP3_LOGIN_OK, fuzz_msgs, 3);
		else
			pop3_session_login_done(s, POP3_LOGIN_AUTH_FAILED, NULL, 0);
		break;
	case POP3_ACTION_SEND_MESSAGE:
		if (a->index >= 3)
			abort();
		pop3_session_message_begin(s);
		pop3_session_message_done(s, POP3_SEND_OK);
		break;
	case POP3_ACTION_COMMIT:
		if (pop3_session_state(s) != POP3_STATE_UPDATE || a->count != 3)
			abort();
		pop3_session_commit_done(s, true, 1);
		break;
	case POP3_ACTION_AUTH_STEP:
		if (pop3_session_state(s) != POP3_STATE_AUTHORIZATION ||
		    a->sasl_len > SASL_CLIENT_MAX ||
		    (a->sasl_data == NULL && !a->sasl_first) ||
		    a->sasl_mech >= SASL_MECH_COUNT)
			abort();
		if (a->sasl_data != NULL && a->sasl_len > 0 && a->sasl_data[0] == 'o')
			pop3_session_auth_done(s, POP3_LOGIN_OK, "fuzzuser", fuzz_msgs, 3);
		else if (a->sasl_data != NULL && a->sasl_len > 0 && a->sasl_data[0] == 'f')
			pop3_session_auth_done(s, POP3_LOGIN_AUTH_FAILED, NULL, NULL, 0);
		else if (a->sasl_data != NULL && a->sasl_len > 0 && a->sasl_data[0] == 'm')
			pop3_session_auth_done(s, POP3_LOGIN_MALFORMED, NULL, NULL, 0);
		else if (a->sasl_data != NULL)
			pop3_session_auth_challenge(s, a->sasl_data, a->sasl_len);
		else
			pop3_session_auth_challenge(s, "", 0);
		break;
	case POP3_ACTION_START_TLS:
		if (pop3_session_state(s) != POP3_STATE_AUTHORIZATION)
			abort();
		pop3_session_tls_started(s);
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pop3_config cfg = {
		.apop = size > 0 && (data[0] & 1),
		.apop_timestamp = "<1.2@fuzz>",
		.expire_days = -1,
		.max_auth_failures = 3,
		.max_bad_commands = 20,
		.implementation = "popbox",
		.stls = size > 0 && (data[0] & 2),
		.cleartext_ok = size == 0 || !(data[0] & 4),
		.sasl_mechs = size > 0 && (data[0] & 8) ? 1u << SASL_MECH_SCRAM_SHA_256 :
			      (1u << SASL_MECH_COUNT) - 1,
	};
	struct fuzz_out out = { 0, 0, 0, 1 };
	struct pop3_session *s = pop3_session_new(&cfg, fuzz_output, &out);
	size_t pos = 0;

	if (s == NULL)
		return 0;
	while (pos < size) {
		/* Piece size from the data: exercises every split point. */
		size_t piece = 1 + data[pos] % 64;
		if (piece > size - pos)
			piece = size - pos;
		size_t used = pop3_session_input(s, data + pos, piece);
		if (used > piece)
			abort();
		if (used == 0) {
			const struct pop3_action *a = pop3_session_action(s);
			if (a->type == POP3_ACTION_CLOSE)
				break;
			if (a->type == POP3_ACTION_NONE) {
				/* Needs more: offer everything that is left. */
				used = pop3_session_input(s, data + pos, size - pos);
				if (used == 0)
					break;
				pos += used;
				continue;
			}
			answer_action(s);
			continue;
		}
		pos += used;
		answer_action(s);
	}
	if (out.total > 0 && (!out.ended_crlf || !out.started_ok))
		abort();
	pop3_session_free(&s);
	return 0;
}
