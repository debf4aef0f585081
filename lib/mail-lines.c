/*
 * mail-lines.c — received message to stored form (see mail-lines.h).
 *
 * Works on runs like wire.c: memchr finds the next CR, the bytes before it
 * are copied in one go.  Invariant: every input byte is written exactly
 * once, in order, except a CR directly followed by LF, which is dropped;
 * a CR is written only once the next byte shows it is not such a CR (or
 * at finish), so ml->held_cr is the only state carried between calls.
 */
#include "mail-lines.h"

#include <string.h>

void mail_lines_init(struct mail_lines *ml)
{
	ml->held_cr = false;
	ml->disk_size = 0;
	wire_size_init(&ml->wire);
}

/* Accounts for out[0..n) having been written. */
static void mail_lines_count(struct mail_lines *ml, const uint8_t *out,
			     size_t n)
{
	ml->disk_size += n;
	wire_size_update(&ml->wire, out, n);
}

size_t mail_lines_convert(struct mail_lines *ml, const void *in, size_t len,
			  uint8_t *out)
{
	const uint8_t *p = in, *end = p + len, *cr;
	uint8_t *o = out;

	if (len == 0)
		return 0;
	if (ml->held_cr) {
		/* A CR from the last call: dropped if this LF follows it. */
		if (p[0] != '\n')
			*o++ = '\r';
		ml->held_cr = false;
	}
	while (p < end) {
		cr = memchr(p, '\r', (size_t)(end - p));
		if (cr == NULL) {
			memcpy(o, p, (size_t)(end - p));
			o += end - p;
			break;
		}
		memcpy(o, p, (size_t)(cr - p));
		o += cr - p;
		if (cr + 1 == end) {
			ml->held_cr = true; /* decided by the next byte */
			break;
		}
		if (cr[1] != '\n')
			*o++ = '\r'; /* a bare CR is data */
		p = cr + 1;
	}
	mail_lines_count(ml, out, (size_t)(o - out));
	return (size_t)(o - out);
}

size_t mail_lines_finish(struct mail_lines *ml, uint8_t *out)
{
	if (!ml->held_cr)
		return 0;
	ml->held_cr = false;
	out[0] = '\r';
	mail_lines_count(ml, out, 1);
	return 1;
}

uint64_t mail_lines_disk_size(const struct mail_lines *ml)
{
	return ml->disk_size;
}

uint64_t mail_lines_wire_size(const struct mail_lines *ml)
{
	return wire_size_final(&ml->wire);
}
