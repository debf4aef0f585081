/*
 * mail-lines.h — a message as received (LF or CRLF line ends) turned into
 * the form it is stored in (LF line ends), with the two sizes the Maildir
 * name carries: bytes on disk (",S=") and bytes on the POP3 wire (",W=").
 *
 * The conversion:
 *   - CR LF becomes LF, also when the CR ends one chunk and the LF starts
 *     the next (the CR is held back until the next byte is known);
 *   - a bare CR (followed by anything but LF, or ending the message) stays;
 *   - every other byte (LF, NUL, 8-bit) is copied as it is;
 *   - nothing is added: a message without a final newline is stored
 *     without one.
 * The wire size is counted on the stored bytes by lib/wire.c's own rule
 * (wire_size_update), so it is by construction what popboxd's LIST says
 * for the file: every LF not preceded by CR counts two, a non-empty
 * message that does not end in LF gets a final CRLF (two more).
 *
 * One caveat of storing LF: "CR CR LF" is stored as "CR LF", which the
 * wire form reads as one line end, so such a line comes back one CR
 * shorter.  Every LF-storing delivery agent (Postfix local, Dovecot)
 * shares this; a lone CR anywhere else survives.
 *
 * Pure: no I/O, no allocation, input may be split anywhere.
 */
#ifndef POPBOX_MAIL_LINES_H
#define POPBOX_MAIL_LINES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

struct mail_lines {
	bool held_cr;           /* the last byte fed was a CR, not yet written */
	uint64_t disk_size;     /* bytes written so far */
	struct wire_size wire;  /* over the bytes written */
};

/* The most mail_lines_convert() writes for len input bytes: a CR held
   from the previous call, then at most every input byte. */
#define MAIL_LINES_OUT_MAX(len) ((size_t)(len) + 1)

void mail_lines_init(struct mail_lines *ml);

/*
 * Converts in[0..len) into out, which must hold MAIL_LINES_OUT_MAX(len)
 * bytes.  Returns the number of bytes written (which may be fewer than
 * len, or len + 1).
 */
size_t mail_lines_convert(struct mail_lines *ml, const void *in, size_t len,
			  uint8_t *out);

/* Ends the message: writes a held CR (at most 1 byte) into out. */
size_t mail_lines_finish(struct mail_lines *ml, uint8_t *out);

/* Bytes written so far (after finish: the file size). */
uint64_t mail_lines_disk_size(const struct mail_lines *ml);
/* The wire size of the bytes written so far (after finish: LIST's size). */
uint64_t mail_lines_wire_size(const struct mail_lines *ml);

#endif
