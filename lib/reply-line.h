/*
 * reply-line.h — one reply line of a line-based protocol (POP3, LMTP),
 * formatted printf-style, cut to fit and ended with CRLF, then handed to
 * the session's output callback.  Pure: the sans-I/O sessions
 * (pop3-session.c, lmtp-session.c) use it and stay free of I/O.
 */
#ifndef POPBOX_REPLY_LINE_H
#define POPBOX_REPLY_LINE_H

#include <stdarg.h>
#include <stddef.h>

/* The longest reply line with its CRLF: RFC 2449 section 4 (POP3) and
   RFC 5321 section 4.5.3.1.5 (SMTP, LMTP) both say 512 octets.  Longer
   text is cut; it never comes from a client except as a checked field
   that fits. */
#define REPLY_LINE_MAX 512

/* The sessions' output callback (pop3_output_fn, lmtp_output_fn). */
typedef void reply_output_fn(void *context, const void *data, size_t len);

/* Formats fmt with args into one line and passes it to output (nothing on
   a format error). */
void reply_line_vprintf(reply_output_fn *output, void *context,
			const char *fmt, va_list args)
	__attribute__((format(printf, 3, 0)));

#endif
