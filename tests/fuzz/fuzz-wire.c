/*
 * fuzz-wire.c — libFuzzer harness for the wire size counter and encoder.
 *
 * Input: byte 0 picks the mode (RETR or TOP 0..6), byte 1 the chunk size
 * the rest is fed in.  Invariants checked (abort on violation):
 *   - output of each call fits WIRE_ENCODE_MAX / WIRE_FINISH_MAX;
 *   - chunked output equals one-shot output;
 *   - RETR: the output ends in ".\r\n", every line ends in CRLF, and the
 *     un-stuffed output without the terminator is wire_size_final() long;
 *   - TOP output is a prefix of RETR output up to a line end, plus ".\r\n".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

static size_t encode(const uint8_t *in, size_t len, int64_t top, size_t chunk,
		     uint8_t *out)
{
	struct wire_encoder enc;
	size_t o = 0, n;

	wire_encoder_init(&enc, top);
	for (size_t pos = 0; pos < len; pos += chunk) {
		size_t piece = len - pos < chunk ? len - pos : chunk;

		n = wire_encode(&enc, in + pos, piece, out + o);
		if (n > WIRE_ENCODE_MAX(piece))
			abort();
		o += n;
	}
	n = wire_encode_finish(&enc, out + o);
	if (n > WIRE_FINISH_MAX)
		abort();
	return o + n;
}

static void check_retr(const uint8_t *in, size_t len, const uint8_t *out,
		       size_t o, size_t chunk)
{
	struct wire_size ws;
	size_t un = 0;

	if (o < 3 || memcmp(out + o - 3, ".\r\n", 3) != 0)
		abort();
	for (size_t i = 0; i + 3 < o; i++) {
		if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r'))
			abort(); /* a bare LF on the wire */
		if (out[i] == '.' && (i == 0 || out[i - 1] == '\n')) {
			if (out[i + 1] != '.')
				abort(); /* unstuffed leading dot */
			continue;
		}
		un++;
	}
	wire_size_init(&ws);
	for (size_t pos = 0; pos < len; pos += chunk)
		wire_size_update(&ws, in + pos,
				 len - pos < chunk ? len - pos : chunk);
	if (wire_size_final(&ws) != un)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *a, *b, *c;
	size_t chunk, len, na, nb, nr;
	int64_t top;

	if (size < 2)
		return 0;
	top = (int64_t)(data[0] % 8) - 1;
	chunk = (size_t)data[1] % 17 + 1;
	data += 2;
	len = size - 2;
	a = malloc(WIRE_ENCODE_MAX(len) + WIRE_FINISH_MAX);
	b = malloc(WIRE_ENCODE_MAX(len) + WIRE_FINISH_MAX);
	c = malloc(WIRE_ENCODE_MAX(len) + WIRE_FINISH_MAX);
	if (a == NULL || b == NULL || c == NULL)
		abort();
	nr = encode(data, len, -1, len + 1, a);
	check_retr(data, len, a, nr, chunk);
	nb = encode(data, len, -1, chunk, b);
	if (nb != nr || memcmp(a, b, nr) != 0)
		abort();
	if (top >= 0) {
		na = encode(data, len, top, len + 1, c);
		nb = encode(data, len, top, chunk, b);
		if (na != nb || memcmp(b, c, nb) != 0 || nb > nr ||
		    memcmp(a, b, nb - 3) != 0 ||
		    (nb > 3 && b[nb - 4] != '\n'))
			abort();
	}
	free(a);
	free(b);
	free(c);
	return 0;
}
