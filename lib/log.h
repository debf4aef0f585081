/*
 * log.h — one-line log records to stderr or syslog.
 *
 * Every record is a single line of `key=value` pairs.  Anything that comes
 * from the network or from disk goes through log_escape() first, so a
 * hostile user name can neither forge a second record nor smuggle control
 * bytes into a terminal.  Passwords are never passed to this module.
 */
#ifndef POPBOX_LOG_H
#define POPBOX_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Longest escaped value log_escape() produces, without the NUL. */
#define LOG_ESCAPE_MAX 128

/* Sends records to syslog (facility mail) instead of stderr when use_syslog. */
void log_init(const char *ident, bool use_syslog);
/* Records below this level are dropped; the default is LOG_LEVEL_INFO. */
void log_set_level(enum log_level level);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Logs and exits with status 1.  Only for start-up and impossible states. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Writes a printable copy of data[0..len) into buf (which must hold at least
 * LOG_ESCAPE_MAX + 1 bytes): bytes outside 0x21-0x7E, '"' and '\\' become
 * \xNN, and the result is cut at LOG_ESCAPE_MAX with a trailing "...".
 * Returns buf.
 */
const char *log_escape(char buf[LOG_ESCAPE_MAX + 1], const void *data, size_t len);

#endif
