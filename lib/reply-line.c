/*
 * reply-line.c — one CRLF-terminated reply line (see reply-line.h).
 */
#include "reply-line.h"

#include <stdio.h>
#include <string.h>

void reply_line_vprintf(reply_output_fn *output, void *context,
			const char *fmt, va_list args)
{
	char line[REPLY_LINE_MAX];
	int n = vsnprintf(line, sizeof(line) - 2, fmt, args);

	if (n < 0)
		return;
	/* vsnprintf wrote at most sizeof(line) - 3 characters. */
	if ((size_t)n > sizeof(line) - 3)
		n = (int)(sizeof(line) - 3);
	memcpy(line + n, "\r\n", 2);
	output(context, line, (size_t)n + 2);
}
