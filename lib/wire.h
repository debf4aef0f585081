/*
 * wire.h — the RFC 1939 wire form of a stored message.
 *
 * A message on disk may use LF, CRLF or a mix, may hold bare CRs, NULs and
 * 8-bit bytes, and may lack a final newline.  On the wire every line ends in
 * CRLF, so:
 *   - an LF not preceded by CR becomes CRLF; a CRLF stays CRLF;
 *   - a bare CR (not followed by LF) is an ordinary data byte, sent as is;
 *   - a non-empty message that does not end in LF gets a final CRLF;
 *   - an empty message stays empty.
 * The "wire size" is the size of that form, before byte-stuffing: the number
 * LIST announces and the number of octets a client has after un-stuffing.
 *
 * The encoder also byte-stuffs (a line starting with '.' gets one more '.'),
 * writes the ".\r\n" terminator, and can stop after the headers plus N body
 * lines for TOP (RFC 1939: the header/body separator is the first empty
 * line).  Both are streaming state machines: input may be split anywhere.
 */
#ifndef POPBOX_WIRE_H
#define POPBOX_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Counts the wire size of a message fed in pieces. */
struct wire_size {
	uint64_t size;
	bool last_was_cr;   /* last byte fed was CR */
	bool last_was_lf;   /* last byte fed was LF (message ends in newline) */
	bool empty;         /* nothing fed yet */
};

void wire_size_init(struct wire_size *ws);
void wire_size_update(struct wire_size *ws, const void *data, size_t len);
/* The total, including the final CRLF added to a message without one. */
uint64_t wire_size_final(const struct wire_size *ws);

/* The largest output wire_encode() can produce for len input bytes. */
#define WIRE_ENCODE_MAX(len) (2 * (size_t)(len) + 2)
/* The largest output wire_encode_finish() can produce. */
#define WIRE_FINISH_MAX 5

struct wire_encoder {
	int64_t body_lines_left; /* -1: no limit; else body lines still to send */
	bool at_line_start;      /* next byte starts a line */
	bool pending_cr;         /* the last byte was a CR (already written) */
	bool in_body;            /* the header/body separator has been passed */
	bool line_empty;         /* the current line has no bytes yet (for the separator) */
	bool done;               /* TOP limit reached: ignore further input */
	bool empty;              /* nothing written yet */
};

/* max_body_lines: -1 for RETR (whole message), else TOP's line count. */
void wire_encoder_init(struct wire_encoder *enc, int64_t max_body_lines);
/*
 * Encodes in[0..len) into out, which must hold WIRE_ENCODE_MAX(len) bytes.
 * Returns the number of bytes written.  Once the TOP limit is reached the
 * encoder is done (enc->done) and further input is ignored.
 */
size_t wire_encode(struct wire_encoder *enc, const void *in, size_t len, uint8_t *out);
/*
 * Ends the message: the final CRLF if the last line lacked one, then ".\r\n".
 * out must hold WIRE_FINISH_MAX bytes.  Returns the number of bytes written.
 */
size_t wire_encode_finish(struct wire_encoder *enc, uint8_t *out);

#endif
