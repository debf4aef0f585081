/*
 * base64.c — strict RFC 4648 base64 (see base64.h).
 *
 * Decoding works on whole 4-character groups.  The output size is known
 * from the input length and the padding before anything is written, so
 * the bound check against out_max happens once, up front.
 */
#include "base64.h"

#include <stdbool.h>

static const char base64_alphabet[64] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of one alphabet character, or -1 ('=' included). */
static int base64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

size_t base64_encoded_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

void base64_encode(const void *in, size_t n, char *out)
{
	const uint8_t *p = in;
	size_t o = 0;

	for (; n >= 3; n -= 3, p += 3) {
		uint32_t v = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];

		out[o++] = base64_alphabet[v >> 18];
		out[o++] = base64_alphabet[(v >> 12) & 63];
		out[o++] = base64_alphabet[(v >> 6) & 63];
		out[o++] = base64_alphabet[v & 63];
	}
	if (n > 0) {
		uint32_t v = (uint32_t)p[0] << 16;

		if (n == 2)
			v |= (uint32_t)p[1] << 8;

		out[o++] = base64_alphabet[v >> 18];
		out[o++] = base64_alphabet[(v >> 12) & 63];
		out[o++] = (char)(n == 2 ? base64_alphabet[(v >> 6) & 63] : '=');
		out[o++] = '=';
	}
	out[o] = '\0';
}

size_t base64_decoded_max(size_t len)
{
	return len / 4 * 3;
}

/* Number of '=' at the end of a group-aligned input (0, 1 or 2 when
   valid; a third one is left to fail as a non-alphabet character). */
static size_t base64_padding(const char *in, size_t len)
{
	if (len == 0 || in[len - 1] != '=')
		return 0;
	return in[len - 2] == '=' ? 2 : 1;
}

/*
 * Decodes one group of 4 characters, of which the last pad are '=', into
 * 3 - pad bytes.  False for a character outside the alphabet or for
 * non-zero bits below the last byte (a non-canonical encoding).
 */
static bool base64_decode_group(const char *in, size_t pad, uint8_t *out)
{
	uint32_t v = 0;

	for (size_t i = 0; i < 4 - pad; i++) {
		int d = base64_value((unsigned char)in[i]);

		if (d < 0)
			return false;
		v = v << 6 | (uint32_t)d;
	}
	v <<= 6 * pad;
	if ((pad == 1 && (v & 0xff) != 0) || (pad == 2 && (v & 0xffff) != 0))
		return false;
	out[0] = (uint8_t)(v >> 16);
	if (pad < 2)
		out[1] = (uint8_t)(v >> 8);
	if (pad < 1)
		out[2] = (uint8_t)v;
	return true;
}

int base64_decode(const char *in, size_t len, uint8_t *out, size_t out_max,
		  size_t *out_len_r)
{
	if (len % 4 != 0)
		return -1;
	size_t pad = base64_padding(in, len);
	/* len is a multiple of 4 and pad <= 2 only when len >= 4. */
	size_t out_len = len / 4 * 3 - pad;

	if (out_len > out_max)
		return -1;
	for (size_t i = 0, o = 0; i < len; i += 4, o += 3) {
		size_t group_pad = i + 4 == len ? pad : 0;

		if (!base64_decode_group(in + i, group_pad, out + o))
			return -1;
	}
	*out_len_r = out_len;
	return 0;
}
