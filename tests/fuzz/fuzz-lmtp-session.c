/*
 * fuzz-lmtp-session.c — libFuzzer harness for a whole LMTP session.
 *
 * The input is the MTA's byte stream, delivered in pieces whose sizes come
 * from the stream itself; each action's result is taken from the byte at
 * the current position too (a recipient known or not, over quota, a commit
 * that fails...), and so is how many DATA results the caller reports.
 * Invariants checked:
 *   - every output call is one reply line "DDD[ -]text\r\n"; 2xx, 4xx and
 *     5xx lines carry an enhanced code of their class, except the greeting
 *     and the LHLO reply (RFC 2034);
 *   - the core never consumes more than it was given, and nothing while
 *     an action is pending or after it closed;
 *   - RCPT names a valid user and the index the next accepted recipient
 *     gets; no more than LMTP_MAX_RECIPIENTS are accepted;
 *   - DATA pieces are 1..LMTP_CHUNK_MAX bytes and never pass the size limit;
 *     DATA_END's count is the number of accepted recipients;
 *   - never more final DATA replies than accepted recipients, one per
 *     result at most, and never a 2xx for a result that is not OK.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lmtp-session.h"
#include "passdb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SIZE_LIMIT 300

struct fuzz_state {
	struct lmtp_session *s;
	size_t accepted;        /* recipients of the open transaction */
	uint64_t data_bytes;    /* passed on in this message */
	size_t lines;           /* reply lines written so far */
	char last_code;         /* first digit of the last reply */
};

static void check_line(const char *p, size_t len)
{
	if (len < 6 || p[len - 2] != '\r' || p[len - 1] != '\n')
		abort();
	if (memchr(p, '\n', len - 1) != NULL)
		abort();
	for (int i = 0; i < 3; i++) {
		if (p[i] < '0' || p[i] > '9')
			abort();
	}
	if (p[3] != ' ' && p[3] != '-')
		abort();
	if (p[0] == '3' || memcmp(p, "220 ", 4) == 0 || memcmp(p, "250-", 4) == 0 ||
	    (len >= 8 && memcmp(p, "250 SIZE", 8) == 0))
		return;
	/* RFC 2034: class "." subject "." detail, the class matching. */
	if (len < 10 || p[4] != p[0] || p[5] != '.')
		abort();
}

static void fuzz_output(void *context, const void *data, size_t len)
{
	struct fuzz_state *st = context;

	check_line(data, len);
	st->lines++;
	st->last_code = ((const char *)data)[0];
}

static enum lmtp_result result_from(uint8_t b)
{
	return (enum lmtp_result)(b % (LMTP_RESULT_CONFIG + 1));
}

static void answer_rcpt(struct fuzz_state *st, const struct lmtp_action *a,
			uint8_t b)
{
	if (a->user == NULL || !username_valid(a->user, strlen(a->user)) ||
	    a->address == NULL || a->index != st->accepted ||
	    st->accepted >= LMTP_MAX_RECIPIENTS)
		abort();
	enum lmtp_result r = result_from(b);
	lmtp_session_rcpt_done(st->s, r);
	if (r == LMTP_RESULT_OK &&
	    lmtp_session_action(st->s)->type == LMTP_ACTION_NONE)
		st->accepted++;
}

static void answer_data_end(struct fuzz_state *st, const struct lmtp_action *a,
			    uint8_t b)
{
	size_t count = a->count;

	if (count != st->accepted || count == 0 || a->size != st->data_bytes)
		abort();
	/* Sometimes a result too many: it must be ignored. */
	size_t calls = count + (b & 1);
	for (size_t i = 0; i < calls; i++) {
		enum lmtp_result r = result_from((uint8_t)(b >> 1) + (uint8_t)i);
		size_t before = st->lines;
		lmtp_session_data_result(st->s, r);
		size_t written = st->lines - before;
		if (i < count ? written != 1 : written != 0)
			abort();
		if (written == 1 && r != LMTP_RESULT_OK && st->last_code == '2')
			abort();
	}
	if (lmtp_session_action(st->s)->type != LMTP_ACTION_NONE)
		abort();
	st->accepted = 0;
	st->data_bytes = 0;
}

/* Answers the pending action; false if there is none to answer. */
static bool answer_action(struct fuzz_state *st, uint8_t b)
{
	const struct lmtp_action *a = lmtp_session_action(st->s);

	switch (a->type) {
	case LMTP_ACTION_NONE:
	case LMTP_ACTION_CLOSE:
		return false;
	case LMTP_ACTION_RCPT:
		answer_rcpt(st, a, b);
		return true;
	case LMTP_ACTION_DATA_BEGIN:
		st->data_bytes = 0;
		lmtp_session_action_done(st->s);
		return true;
	case LMTP_ACTION_DATA_CHUNK:
		if (a->len == 0 || a->len > LMTP_CHUNK_MAX || a->data == NULL)
			abort();
		st->data_bytes += a->len;
		if (st->data_bytes > FUZZ_SIZE_LIMIT)
			abort();
		lmtp_session_action_done(st->s);
		return true;
	case LMTP_ACTION_DATA_END:
		answer_data_end(st, a, b);
		return true;
	case LMTP_ACTION_RESET:
		st->accepted = 0;
		st->data_bytes = 0;
		lmtp_session_action_done(st->s);
		return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lmtp_config cfg = {
		.hostname = "fuzz.test",
		.size_limit = FUZZ_SIZE_LIMIT,
		.max_bad_commands = 20,
	};
	struct fuzz_state st = { 0 };
	size_t pos = 0;

	st.s = lmtp_session_new(&cfg, fuzz_output, &st);
	if (st.s == NULL)
		return 0;
	while (pos < size && lmtp_session_state(st.s) != LMTP_STATE_CLOSED) {
		uint8_t b = data[pos];
		if (answer_action(&st, b))
			continue;
		/* Piece size from the data: exercises every split point. */
		size_t piece = 1 + b % 64;
		if (piece > size - pos)
			piece = size - pos;
		size_t used = lmtp_session_input(st.s, data + pos, piece);
		if (used > piece)
			abort();
		if (used == 0 && lmtp_session_action(st.s)->type == LMTP_ACTION_NONE) {
			/* Needs more: offer everything that is left. */
			used = lmtp_session_input(st.s, data + pos, size - pos);
			if (used == 0 &&
			    lmtp_session_action(st.s)->type == LMTP_ACTION_NONE)
				break;
		}
		pos += used;
	}
	/* Nothing is consumed while an action waits or once closed. */
	if (lmtp_session_action(st.s)->type != LMTP_ACTION_NONE &&
	    pos < size && lmtp_session_input(st.s, data + pos, size - pos) != 0)
		abort();
	lmtp_session_free(&st.s);
	return 0;
}
