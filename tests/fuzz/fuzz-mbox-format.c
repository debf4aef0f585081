/*
 * fuzz-mbox-format.c — the mbox pieces of fetch/mbox-format.h on
 * arbitrary message bytes (a message is whatever the server sends).
 *
 * Input: byte 0 picks the piece size (1..64) the rest is quoted in.
 * Checks (abort on violation):
 *   - each mbox_quote() call writes at most MBOX_QUOTE_OUT_MAX of its
 *     piece, finish at most MBOX_QUOTE_HELD_MAX;
 *   - the output in pieces equals the output in one go;
 *   - no line of the output starts with "From " (so no message line can
 *     pass for a separator), and removing one '>' from each line that
 *     matches ^>+From  gives the input back exactly (mboxrd is lossless);
 *   - mbox_quote_last() is the output's last byte;
 *   - the Return-Path found, if any, is a valid sender and NUL-terminated;
 *   - the "From " line built with it is one line, starts with "From "
 *     and fits its buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mbox-format.h"

static size_t quote(const uint8_t *in, size_t len, size_t chunk, uint8_t *out,
		    struct mbox_quote *q)
{
	size_t o = 0, n;

	mbox_quote_init(q);
	for (size_t pos = 0; pos < len; pos += chunk) {
		size_t piece = len - pos < chunk ? len - pos : chunk;

		n = mbox_quote(q, in + pos, piece, out + o);
		if (n > MBOX_QUOTE_OUT_MAX(piece))
			abort();
		o += n;
	}
	n = mbox_quote_finish(q, out + o);
	if (n > MBOX_QUOTE_HELD_MAX)
		abort();
	return o + n;
}

/* Each line of out: never "From ", and unquoted it matches in. */
static void check_lines(const uint8_t *in, size_t len, const uint8_t *out,
			size_t n)
{
	size_t i = 0, o = 0;

	while (o < n) {
		const uint8_t *lf = memchr(out + o, '\n', n - o);
		size_t end = lf == NULL ? n : (size_t)(lf - out) + 1;
		size_t gt = 0;

		if (end - o >= 5 && memcmp(out + o, "From ", 5) == 0)
			abort();
		while (o + gt < end && out[o + gt] == '>')
			gt++;
		if (gt > 0 && end - o - gt >= 5 &&
		    memcmp(out + o + gt, "From ", 5) == 0)
			o++; /* the '>' quoting added */
		if (end - o > len - i || memcmp(out + o, in + i, end - o) != 0)
			abort();
		i += end - o;
		o = end;
	}
	if (i != len)
		abort();
}

static void check_sender(const uint8_t *data, size_t len)
{
	char sender[MBOX_SENDER_MAX + 1];
	char line[MBOX_FROM_LINE_MAX];
	size_t n = mbox_return_path(data, len, sender);
	size_t ln;

	if (n > MBOX_SENDER_MAX || sender[n] != '\0' || strlen(sender) != n)
		abort();
	if (n > 0 && !mbox_sender_valid(sender, n))
		abort();
	ln = mbox_from_line(line, sender, (time_t)len * 86400);
	if (ln == 0 || ln >= MBOX_FROM_LINE_MAX || strncmp(line, "From ", 5) != 0 ||
	    line[ln - 1] != '\n' || memchr(line, '\n', ln - 1) != NULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mbox_quote q1, q2;
	size_t chunk, len, n1, n2;
	uint8_t *o1, *o2;

	if (size < 1)
		return 0;
	chunk = (size_t)(data[0] % 64) + 1;
	data++;
	len = size - 1;
	o1 = malloc(MBOX_QUOTE_OUT_MAX(len) + MBOX_QUOTE_HELD_MAX);
	o2 = malloc(len * 2 + 64);
	if (o1 == NULL || o2 == NULL)
		abort();
	n1 = quote(data, len, len > 0 ? len : 1, o1, &q1);
	n2 = quote(data, len, chunk, o2, &q2);
	if (n1 != n2 || memcmp(o1, o2, n1) != 0)
		abort();
	if (mbox_quote_last(&q1) != (n1 > 0 ? o1[n1 - 1] : '\n'))
		abort();
	check_lines(data, len, o1, n1);
	check_sender(data, len);
	free(o1);
	free(o2);
	return 0;
}
