/*
 * strnum.h — strict parsing of decimal numbers from untrusted text.
 *
 * Accepts only ASCII digits: no sign, no spaces, no "0x", no empty string.
 * Leading zeros are allowed ("007" is 7) as RFC 1939 numbers may carry them.
 */
#ifndef POPBOX_STRNUM_H
#define POPBOX_STRNUM_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parses s[0..len) as a decimal number not above max.  Returns 0 and sets
 * *value_r, or -1 for an empty string, a non-digit, or a value above max
 * (overflow included).  Never reads past len; s need not be NUL-terminated.
 */
int strnum_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *value_r);

#endif
