/*
 * log.c — one-line log records to stderr or syslog (see log.h).
 *
 * A record is formatted into a fixed buffer first, then any byte that would
 * break the one-line rule (a newline from a caller's format) is replaced, so
 * a record is always exactly one line however it was built.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* One record: long enough for a login line, short enough for syslog. */
#define LOG_RECORD_MAX 1024

static const char *log_ident = "popbox";
static bool log_to_syslog;
static enum log_level log_min_level = LOG_LEVEL_INFO;

void log_init(const char *ident, bool use_syslog)
{
	log_ident = ident;
	log_to_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void log_set_level(enum log_level level)
{
	log_min_level = level;
}

static void log_emit(enum log_level level, const char *fmt, va_list args)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	static const int priorities[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR };
	char line[LOG_RECORD_MAX];

	if (level < log_min_level)
		return;
	vsnprintf(line, sizeof(line), fmt, args);
	for (char *p = line; *p != '\0'; p++) {
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	}
	if (log_to_syslog) {
		syslog(priorities[level], "%s", line);
		return;
	}
	struct timespec now;
	struct tm tm;
	char stamp[32];
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One fprintf call: stdio locks the stream, so threads never interleave. */
	fprintf(stderr, "%s.%03ldZ %s[%ld]: %s: %s\n", stamp,
		now.tv_nsec / 1000000, log_ident, (long)getpid(), names[level],
		line);
}

#define LOG_FUNCTION(name, level)                 \
	void name(const char *fmt, ...)           \
	{                                         \
		va_list args;                     \
		va_start(args, fmt);              \
		log_emit(level, fmt, args);       \
		va_end(args);                     \
	}

LOG_FUNCTION(log_debug, LOG_LEVEL_DEBUG)
LOG_FUNCTION(log_info, LOG_LEVEL_INFO)
LOG_FUNCTION(log_warn, LOG_LEVEL_WARN)
LOG_FUNCTION(log_error, LOG_LEVEL_ERROR)

void fatal(const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	log_emit(LOG_LEVEL_ERROR, fmt, args);
	va_end(args);
	exit(1);
}

const char *log_escape(char buf[LOG_ESCAPE_MAX + 1], const void *data, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *in = data;
	size_t out = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = in[i];
		bool plain = c >= 0x21 && c <= 0x7e && c != '"' && c != '\\';
		size_t need = plain ? 1 : 4;
		/* Keep room for "..." so a cut value is visibly cut. */
		if (out + need > LOG_ESCAPE_MAX - 3 && i + 1 < len) {
			memcpy(buf + out, "...", 3);
			out += 3;
			break;
		}
		if (out + need > LOG_ESCAPE_MAX)
			break;
		if (plain) {
			buf[out++] = (char)c;
		} else {
			buf[out++] = '\\';
			buf[out++] = 'x';
			buf[out++] = hex[c >> 4];
			buf[out++] = hex[c & 0xf];
		}
	}
	buf[out] = '\0';
	return buf;
}
