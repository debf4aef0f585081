/*
 * wire.c — the RFC 1939 wire form of a stored message (see wire.h).
 *
 * Both state machines work on runs: memchr finds the next LF and the bytes
 * before it are counted or copied in one go, so plain text costs about one
 * memchr and one memcpy per line.  The only cross-chunk state is whether the
 * previous byte was a CR (an LF after it needs no CR of its own) and, for the
 * encoder, where in the line we are.
 *
 * Encoder invariants:
 *   - every byte fed is written exactly once, in order, except that an LF
 *     not preceded by CR is written as CRLF and a '.' that starts a line is
 *     written twice; nothing is written after enc->done;
 *   - a CR is written as soon as it is seen (it is the same byte whether or
 *     not an LF follows); enc->pending_cr only remembers that the last byte
 *     consumed was a CR.  This keeps wire_encode_finish() within
 *     WIRE_FINISH_MAX: a message ending in a bare CR needs CRLF + ".\r\n";
 *   - enc->line_empty is true while the current line holds nothing, or only
 *     one CR (which, if an LF follows, is the line ending, so the line is
 *     the empty header/body separator).
 */
#include "wire.h"

#include <string.h>

void wire_size_init(struct wire_size *ws)
{
	ws->size = 0;
	ws->last_was_cr = false;
	ws->last_was_lf = false;
	ws->empty = true;
}

void wire_size_update(struct wire_size *ws, const void *data, size_t len)
{
	const uint8_t *p = data, *end = p + len, *lf;
	bool prev_cr = ws->last_was_cr;

	if (len == 0)
		return;
	ws->size += len;
	while ((lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		if (!(lf == p ? prev_cr : lf[-1] == '\r'))
			ws->size++; /* LF becomes CRLF */
		prev_cr = false;
		p = lf + 1;
	}
	ws->last_was_cr = end[-1] == '\r';
	ws->last_was_lf = end[-1] == '\n';
	ws->empty = false;
}

uint64_t wire_size_final(const struct wire_size *ws)
{
	if (ws->empty)
		return 0;
	return ws->last_was_lf ? ws->size : ws->size + 2;
}

void wire_encoder_init(struct wire_encoder *enc, int64_t max_body_lines)
{
	enc->body_lines_left = max_body_lines < 0 ? -1 : max_body_lines;
	enc->at_line_start = true;
	enc->pending_cr = false;
	enc->in_body = false;
	enc->line_empty = true;
	enc->done = false;
	enc->empty = true;
}

/* A line has just ended (its LF written): count it for TOP. */
static void wire_line_end(struct wire_encoder *enc)
{
	if (!enc->in_body) {
		if (enc->line_empty) {
			enc->in_body = true;
			if (enc->body_lines_left == 0)
				enc->done = true;
		}
	} else if (enc->body_lines_left > 0) {
		if (--enc->body_lines_left == 0)
			enc->done = true;
	}
	enc->at_line_start = true;
	enc->line_empty = true;
	enc->pending_cr = false;
}

/*
 * Copies a run of n > 0 bytes holding no LF.  Output: n bytes, plus one if
 * the run starts a line with '.'.
 */
static uint8_t *wire_copy_run(struct wire_encoder *enc, const uint8_t *p,
			      size_t n, uint8_t *o)
{
	if (enc->at_line_start && p[0] == '.')
		*o++ = '.';
	/* The line stays "empty" only if all it holds is a single CR. */
	enc->line_empty = enc->line_empty && !enc->pending_cr && n == 1 &&
			  p[0] == '\r';
	enc->at_line_start = false;
	enc->pending_cr = p[n - 1] == '\r';
	memcpy(o, p, n);
	return o + n;
}

/*
 * Output bound: each input byte yields at most two output bytes (an LF
 * becomes CRLF, a leading '.' is doubled; the two never apply to the same
 * byte), so the total is at most 2 * len <= WIRE_ENCODE_MAX(len).
 */
size_t wire_encode(struct wire_encoder *enc, const void *in, size_t len,
		   uint8_t *out)
{
	const uint8_t *p = in, *end = p + len, *lf;
	uint8_t *o = out;

	if (enc->done || len == 0)
		return 0;
	enc->empty = false;
	while (p < end && !enc->done) {
		lf = memchr(p, '\n', (size_t)(end - p));
		if (lf == NULL) {
			o = wire_copy_run(enc, p, (size_t)(end - p), o);
			break;
		}
		if (lf > p)
			o = wire_copy_run(enc, p, (size_t)(lf - p), o);
		if (!enc->pending_cr)
			*o++ = '\r';
		*o++ = '\n';
		wire_line_end(enc);
		p = lf + 1;
	}
	return (size_t)(o - out);
}

size_t wire_encode_finish(struct wire_encoder *enc, uint8_t *out)
{
	uint8_t *o = out;

	if (!enc->empty && !enc->at_line_start) {
		/* The last line lacked its LF (a trailing CR is data). */
		*o++ = '\r';
		*o++ = '\n';
	}
	*o++ = '.';
	*o++ = '\r';
	*o++ = '\n';
	enc->done = true;
	enc->at_line_start = true;
	return (size_t)(o - out);
}
