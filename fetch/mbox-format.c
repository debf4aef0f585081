/*
 * mbox-format.c — mboxrd quoting, the "From " line and its sender (see
 * mbox-format.h).
 *
 * The quoting is a two-state machine per line.  At a line start it is in
 * the prefix: '>' bytes are written at once (the added '>' may go
 * anywhere in the run, so it can go last, just before "From "), and the
 * bytes of "From" are held until the fifth byte decides: a space means a
 * quoted line ('>' then the held "From" and the space), anything else
 * releases the held bytes unchanged.  After that, bytes are copied as
 * they are until the next LF.
 */
#include "mbox-format.h"

#include <stdio.h>
#include <string.h>

static const char mbox_from_word[] = "From ";
#define MBOX_FROM_WORD_LEN 5

void mbox_quote_init(struct mbox_quote *q)
{
	q->at_prefix = true; /* the message starts a line */
	q->matched = 0;
	q->last = '\n';
	q->written = 0;
}

/* One byte in the prefix of a line; returns the bytes written to o. */
static size_t mbox_quote_prefix_byte(struct mbox_quote *q, uint8_t c,
				     uint8_t *o)
{
	size_t n = 0;

	if (q->matched == 0 && c == '>') {
		o[n++] = c;
		return n;
	}
	if (c == (uint8_t)mbox_from_word[q->matched]) {
		if (++q->matched < MBOX_FROM_WORD_LEN)
			return 0; /* held */
		o[n++] = '>';
		memcpy(o + n, mbox_from_word, MBOX_FROM_WORD_LEN);
		n += MBOX_FROM_WORD_LEN;
		q->matched = 0;
		q->at_prefix = false;
		return n;
	}
	/* Not "From ": the held bytes go out as they were, then c. */
	memcpy(o, mbox_from_word, q->matched);
	n = q->matched;
	q->matched = 0;
	o[n++] = c;
	q->at_prefix = c == '\n';
	return n;
}

size_t mbox_quote(struct mbox_quote *q, const void *in, size_t len,
		  uint8_t *out)
{
	const uint8_t *p = in, *end = p + len;
	uint8_t *o = out;

	while (p < end) {
		if (q->at_prefix) {
			o += mbox_quote_prefix_byte(q, *p++, o);
			continue;
		}
		/* The rest of the line in one copy. */
		const uint8_t *lf = memchr(p, '\n', (size_t)(end - p));
		size_t n = lf == NULL ? (size_t)(end - p) : (size_t)(lf - p) + 1;
		memcpy(o, p, n);
		o += n;
		p += n;
		q->at_prefix = lf != NULL;
	}
	if (o > out) {
		q->last = o[-1];
		q->written += (uint64_t)(o - out);
	}
	return (size_t)(o - out);
}

size_t mbox_quote_finish(struct mbox_quote *q, uint8_t *out)
{
	size_t n = q->matched;

	memcpy(out, mbox_from_word, n);
	q->matched = 0;
	if (n > 0) {
		q->last = out[n - 1];
		q->written += n;
	}
	return n;
}

uint8_t mbox_quote_last(const struct mbox_quote *q)
{
	return q->last;
}

bool mbox_sender_valid(const char *s, size_t len)
{
	if (len == 0 || len > MBOX_SENDER_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x21 || c > 0x7e || c == '<' || c == '>')
			return false;
	}
	return true;
}

/* The value of a "Return-Path:" field, line[0..len) (no line end), as a
   sender; 0 if there is none fit for a "From " line. */
static size_t mbox_path_value(const char *v, size_t len,
			      char sender_r[MBOX_SENDER_MAX + 1])
{
	const char *end = v + len, *close;
	size_t n;

	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (v < end && *v == '<') {
		close = memchr(v, '>', (size_t)(end - v));
		if (close == NULL)
			return 0;
		v++;
		end = close;
	}
	n = (size_t)(end - v);
	if (!mbox_sender_valid(v, n))
		return 0;
	memcpy(sender_r, v, n);
	sender_r[n] = '\0';
	return n;
}

size_t mbox_return_path(const void *head, size_t len,
			char sender_r[MBOX_SENDER_MAX + 1])
{
	static const char name[] = "return-path:";
	const size_t name_len = sizeof(name) - 1;
	const char *p = head, *end = p + len;

	sender_r[0] = '\0';
	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		if (lf == NULL)
			return 0; /* an incomplete line: not trusted */
		size_t n = (size_t)(lf - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n == 0)
			return 0; /* the end of the header */
		if (n >= name_len && strncasecmp(p, name, name_len) == 0)
			return mbox_path_value(p + name_len, n - name_len,
					       sender_r);
		p = lf + 1;
	}
	return 0;
}

size_t mbox_from_line(char buf[MBOX_FROM_LINE_MAX], const char *sender,
		      time_t t)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed",
					 "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr",
					    "May", "Jun", "Jul", "Aug",
					    "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;
	int n;

	if (sender == NULL || !mbox_sender_valid(sender, strlen(sender)))
		sender = MBOX_SENDER_DEFAULT;
	if (localtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof(tm)); /* a year past INT_MAX */
	n = snprintf(buf, MBOX_FROM_LINE_MAX,
		     "From %s %s %s %2d %02d:%02d:%02d %d\n", sender,
		     days[(unsigned int)tm.tm_wday % 7],
		     months[(unsigned int)tm.tm_mon % 12], tm.tm_mday,
		     tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_year + 1900);
	/* Never cut: the sender is at most MBOX_SENDER_MAX bytes and the
	   date at most 8 + 2 + 1 + 8 + 1 + 11 (an int year) = 31 bytes, in
	   the 32 the buffer allows. */
	if (n < 0 || n >= MBOX_FROM_LINE_MAX)
		return 0;
	return (size_t)n;
}
