/*
 * strnum.c — strict parsing of decimal numbers from untrusted text.
 */
#include "strnum.h"

int strnum_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *value_r)
{
	uint64_t value = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned digit = (unsigned)(s[i] - '0');
		/* value * 10 + digit <= max, checked without overflow. */
		if (digit > max || value > (max - digit) / 10)
			return -1;
		value = value * 10 + digit;
	}
	*value_r = value;
	return 0;
}
