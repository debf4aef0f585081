/*
 * fuzz-base64.c — libFuzzer harness for the strict base64 module.
 *
 * Two properties on every input:
 *   - as text: if it decodes, encoding the result gives the input back
 *     byte for byte (only the canonical form is accepted), the result fits
 *     base64_decoded_max(), and a buffer one byte short is refused without
 *     being overrun;
 *   - as bytes: encoding then decoding gives the input back.
 * Buffers are malloc'ed at their exact sizes so ASan sees any overrun.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_decode(const uint8_t *data, size_t size)
{
	size_t max = base64_decoded_max(size), len = 0;
	char *text = malloc(size + 1);
	uint8_t *out = malloc(max + 1);

	if (text == NULL || out == NULL)
		abort();
	memcpy(text, data, size);
	if (base64_decode(text, size, out, max, &len) == 0) {
		char *again = malloc(base64_encoded_len(len) + 1);

		if (again == NULL || len > max)
			abort();
		base64_encode(out, len, again);
		if (strlen(again) != size || memcmp(again, text, size) != 0)
			abort();
		free(again);
		if (len > 0) {
			uint8_t *short_buf = malloc(len - 1 + 1);
			size_t short_len = 0;

			if (short_buf == NULL ||
			    base64_decode(text, size, short_buf, len - 1,
					  &short_len) != -1)
				abort();
			free(short_buf);
		}
	}
	free(out);
	free(text);
}

static void check_encode(const uint8_t *data, size_t size)
{
	size_t enc_len = base64_encoded_len(size), len = 0;
	char *text = malloc(enc_len + 1);
	uint8_t *back = malloc(size + 1);

	if (text == NULL || back == NULL)
		abort();
	base64_encode(data, size, text);
	if (strlen(text) != enc_len || enc_len % 4 != 0 ||
	    base64_decode(text, enc_len, back, size, &len) != 0 ||
	    len != size || memcmp(back, data, size) != 0)
		abort();
	free(back);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_decode(data, size);
	check_encode(data, size);
	return 0;
}
