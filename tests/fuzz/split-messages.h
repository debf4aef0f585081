/*
 * split-messages.h — shared by the SASL fuzz harnesses (fuzz-sasl,
 * fuzz-sasl-client): cuts one fuzz input into the messages of an exchange.
 * Define FUZZ_SEPARATOR and FUZZ_MAX_MESSAGES before including it.
 */
#ifndef POPBOX_FUZZ_SPLIT_MESSAGES_H
#define POPBOX_FUZZ_SPLIT_MESSAGES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct fuzz_msg {
	const uint8_t *data;
	size_t len;
};

/* Splits data on FUZZ_SEPARATOR into at most FUZZ_MAX_MESSAGES pieces
   (the last takes the rest, separators included); returns how many. */
static inline size_t fuzz_split(const uint8_t *data, size_t size,
				struct fuzz_msg msgs[FUZZ_MAX_MESSAGES])
{
	size_t n = 0, pos = 0;

	while (n + 1 < FUZZ_MAX_MESSAGES) {
		const uint8_t *sep = memchr(data + pos, FUZZ_SEPARATOR,
					    size - pos);

		if (sep == NULL)
			break;
		msgs[n].data = data + pos;
		msgs[n].len = (size_t)(sep - (data + pos));
		pos += msgs[n].len + 1;
		n++;
	}
	msgs[n].data = data + pos;
	msgs[n].len = size - pos;
	return n + 1;
}

#endif
