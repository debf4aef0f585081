/*
 * base64.h — RFC 4648 base64 (standard alphabet, '=' padding), strict.
 *
 * Used for SASL exchanges (RFC 5034 AUTH lines, RFC 5802 SCRAM attributes)
 * and for stored SCRAM keys.  Decoding accepts only the canonical form, so
 * every byte string has exactly one accepted encoding:
 *   - the length is a multiple of 4 (padding is required);
 *   - only A-Z a-z 0-9 + / appear, then at most two '=' at the very end;
 *   - no whitespace, line breaks, NULs or any other byte;
 *   - the unused low bits of the last character before padding are zero.
 * The empty string encodes and decodes to nothing.
 *
 * Pure functions: no allocation, no I/O, no state.
 */
#ifndef POPBOX_BASE64_H
#define POPBOX_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Characters base64_encode() writes for n bytes, without the NUL.  n must
   be below SIZE_MAX / 4 * 3 (any object in memory is). */
size_t base64_encoded_len(size_t n);

/* Encodes in[0..n) into out: base64_encoded_len(n) characters and a NUL,
   so out must hold base64_encoded_len(n) + 1 bytes. */
void base64_encode(const void *in, size_t n, char *out);

/* Largest number of bytes len base64 characters can decode to (a buffer
   of this size always suffices for base64_decode()). */
size_t base64_decoded_max(size_t len);

/*
 * Decodes in[0..len) (need not be NUL-terminated) into out.  Returns 0 and
 * the byte count in *out_len_r, or -1 if the input is not canonical base64
 * (see above) or would decode to more than out_max bytes.  Never writes
 * past out[out_max - 1]; on -1, out may hold a partial result.
 */
int base64_decode(const char *in, size_t len, uint8_t *out, size_t out_max,
		  size_t *out_len_r);

#endif
