/*
 * mbox-format.h — the bytes of one message in an mbox file, mboxrd style:
 * the "From " separator line, the quoting of ">*From " lines, and the
 * sender the separator names (taken from the message's Return-Path).
 *
 * An mbox file is messages one after the other; each starts with a line
 * "From <sender> <date in asctime form>" and ends with an empty line.  A
 * body line that itself starts with "From " would look like a new
 * message, so mboxrd quoting adds one '>' to every line matching
 * ^>*From  (the '>' run included, so that readers can undo it exactly:
 * remove one '>' from every line matching ^>+From ).  Message lines end
 * in LF here (the sink converts CRLF first).
 *
 * Pure: no I/O, no allocation; the quoting takes input split anywhere.
 * Everything here reads untrusted message bytes: fuzzed by
 * tests/fuzz/fuzz-mbox-format.c.
 */
#ifndef POPBOX_MBOX_FORMAT_H
#define POPBOX_MBOX_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Longest sender put in a "From " line: RFC 5321 4.5.3.1.3 allows a
   256-octet path; anything longer (or odd) is replaced by the default. */
#define MBOX_SENDER_MAX 256
/* The sender of a message without a usable Return-Path (the convention
   of every mbox writer for bounces and unknown senders). */
#define MBOX_SENDER_DEFAULT "MAILER-DAEMON"
/* "From " + sender + " " + "Www Mmm dd hh:mm:ss yyyy" (24, or more for a
   year past 9999) + "\n" and a NUL. */
#define MBOX_FROM_LINE_MAX (5 + MBOX_SENDER_MAX + 1 + 32 + 2)

/* The longest prefix of a line held back while it may still turn out to
   be "From " ("From" without its space). */
#define MBOX_QUOTE_HELD_MAX 4

/*
 * The most mbox_quote() writes for len input bytes: every input byte
 * once, the (at most 4) bytes held from the previous call, and one added
 * '>' per quoted line.  Each quoted line needs its own 5 bytes "From "
 * out of those len + 4, so there are at most (len + 4) / 5 <= len / 5 + 1
 * of them: len + 4 + len / 5 + 1 in all (one more, to spare).
 */
#define MBOX_QUOTE_OUT_MAX(len) \
	((size_t)(len) + (size_t)(len) / 5 + MBOX_QUOTE_HELD_MAX + 2)

struct mbox_quote {
	bool at_prefix;  /* in the ">*From " part of a line, undecided */
	uint8_t matched; /* bytes of "From " matched and held (0..4) */
	uint8_t last;    /* the last byte written ('\n' before any) */
	uint64_t written;
};

void mbox_quote_init(struct mbox_quote *q);

/*
 * Quotes in[0..len) into out (which must hold MBOX_QUOTE_OUT_MAX(len)
 * bytes).  Returns the number of bytes written.
 */
size_t mbox_quote(struct mbox_quote *q, const void *in, size_t len,
		  uint8_t *out);

/*
 * Ends the message: writes the held bytes (at most MBOX_QUOTE_HELD_MAX)
 * into out and returns their number.  After it, mbox_quote_last() is
 * the message's last byte.
 */
size_t mbox_quote_finish(struct mbox_quote *q, uint8_t *out);

/* The last byte written so far ('\n' if nothing was: an empty message
   needs no newline of its own). */
uint8_t mbox_quote_last(const struct mbox_quote *q);

/*
 * Looks for the message's first Return-Path header field in head[0..len)
 * (the start of the message, LF or CRLF line ends; only lines before the
 * first empty line, and only complete ones, count).  Writes the address
 * (without <>) and a NUL into sender_r and returns its length, if it is
 * 1..MBOX_SENDER_MAX bytes of 0x21-0x7E other than '<' and '>'; returns 0
 * for a null sender ("<>"), no Return-Path, or one not fit for a "From "
 * line.
 */
size_t mbox_return_path(const void *head, size_t len,
			char sender_r[MBOX_SENDER_MAX + 1]);

/*
 * Writes the separator line "From <sender> <date>\n" for a message
 * stored at time t (local time, asctime form, English names whatever the
 * locale) into buf.  sender NULL or "" means MBOX_SENDER_DEFAULT; a
 * sender that is not 1..MBOX_SENDER_MAX bytes of 0x21-0x7E is replaced by
 * it too.  Returns the length (without the NUL).
 */
size_t mbox_from_line(char buf[MBOX_FROM_LINE_MAX], const char *sender,
		      time_t t);

/* True if s[0..len) may stand as the sender in a "From " line. */
bool mbox_sender_valid(const char *s, size_t len);

#endif
