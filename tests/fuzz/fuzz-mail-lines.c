/*
 * fuzz-mail-lines.c — libFuzzer harness for the received-to-stored
 * conversion and its size counts (lib/mail-lines).
 *
 * Input: byte 0 picks the piece size (1..16) the rest is fed in.
 * Invariants checked (abort on violation):
 *   - each call writes at most MAIL_LINES_OUT_MAX of its piece;
 *   - chunked output equals one-shot output;
 *   - the output is the input with every CR that precedes an LF removed;
 *   - the disk size is the output's length;
 *   - the wire size equals lib/wire.c's count over the output and the
 *     un-stuffed length of the RETR encoder's output for it (what LIST
 *     reports and what RETR sends for the stored file).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail-lines.h"
#include "wire.h"

static size_t convert(const uint8_t *in, size_t len, size_t chunk,
		      uint8_t *out, struct mail_lines *ml)
{
	size_t o = 0;

	mail_lines_init(ml);
	for (size_t pos = 0; pos < len; pos += chunk) {
		size_t piece = len - pos < chunk ? len - pos : chunk;
		size_t n = mail_lines_convert(ml, in + pos, piece, out + o);

		if (n > MAIL_LINES_OUT_MAX(piece))
			abort();
		o += n;
	}
	return o + mail_lines_finish(ml, out + o);
}

static void check_expected(const uint8_t *in, size_t len, const uint8_t *out,
			   size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
			continue;
		if (o >= n || out[o++] != in[i])
			abort();
	}
	if (o != n)
		abort();
}

static void check_wire(const struct mail_lines *ml, const uint8_t *out,
		       size_t n)
{
	struct wire_encoder enc;
	struct wire_size ws;
	uint8_t *w = malloc(WIRE_ENCODE_MAX(n) + WIRE_FINISH_MAX);
	size_t wn, un = 0;

	if (w == NULL)
		abort();
	wire_size_init(&ws);
	wire_size_update(&ws, out, n);
	if (mail_lines_disk_size(ml) != n ||
	    mail_lines_wire_size(ml) != wire_size_final(&ws))
		abort();
	wire_encoder_init(&enc, -1);
	wn = wire_encode(&enc, out, n, w);
	wn += wire_encode_finish(&enc, w + wn);
	for (size_t i = 0; i + 3 < wn; i++) {
		if (w[i] == '.' && (i == 0 || w[i - 1] == '\n'))
			continue; /* a stuffed dot */
		un++;
	}
	if (un != mail_lines_wire_size(ml))
		abort();
	free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mail_lines a, b;
	uint8_t *oa, *ob;
	size_t chunk, len, na, nb;

	if (size < 1)
		return 0;
	chunk = (size_t)data[0] % 16 + 1;
	data++;
	len = size - 1;
	oa = malloc(MAIL_LINES_OUT_MAX(len) + 1);
	ob = malloc(MAIL_LINES_OUT_MAX(len) + 1);
	if (oa == NULL || ob == NULL)
		abort();
	na = convert(data, len, len + 1, oa, &a);
	nb = convert(data, len, chunk, ob, &b);
	if (na != nb || memcmp(oa, ob, na) != 0 ||
	    mail_lines_wire_size(&a) != mail_lines_wire_size(&b))
		abort();
	check_expected(data, len, oa, na);
	check_wire(&a, oa, na);
	free(oa);
	free(ob);
	return 0;
}
