/*
 * pop3-parse.h — splitting one POP3 command line into keyword and arguments.
 *
 * Pure: (bytes, length) in, a typed command or a typed error out; no I/O,
 * no allocation, no globals.  The result points into the caller's line.
 */
#ifndef POPBOX_POP3_PARSE_H
#define POPBOX_POP3_PARSE_H

#include <stddef.h>
#include <stdint.h>

/*
 * RFC 2449 section 4: a command line is at most 255 octets with its CRLF.
 * We accept twice that as slack for sloppy clients; anything longer is
 * refused whole (never truncated into another command).
 */
#define POP3_LINE_MAX 512
/* RFC 2449 section 4: keywords are at most 40 characters; ours are 4. */
#define POP3_KEYWORD_MAX 4
/* RFC 1939 section 3: arguments are at most 40 characters. */
#define POP3_ARG_MAX 40
/* No command takes more than two arguments (TOP msg n, APOP name digest,
   AUTH mechanism initial-response). */
#define POP3_ARGS_MAX 2

enum pop3_cmd {
	POP3_CMD_USER,
	POP3_CMD_PASS,
	POP3_CMD_APOP,
	POP3_CMD_QUIT,
	POP3_CMD_STAT,
	POP3_CMD_LIST,
	POP3_CMD_RETR,
	POP3_CMD_DELE,
	POP3_CMD_NOOP,
	POP3_CMD_RSET,
	POP3_CMD_TOP,
	POP3_CMD_UIDL,
	POP3_CMD_CAPA,
	POP3_CMD_STLS,
	POP3_CMD_AUTH,
	POP3_CMD_COUNT
};

enum pop3_parse_error {
	POP3_PARSE_OK,
	POP3_PARSE_EMPTY,           /* empty line */
	POP3_PARSE_BAD_BYTE,        /* NUL or another control byte */
	POP3_PARSE_UNKNOWN,         /* not a command we know */
	POP3_PARSE_TOO_MANY_ARGS,
	POP3_PARSE_ARG_TOO_LONG,
};

struct pop3_command {
	enum pop3_cmd cmd;
	unsigned int argc;                 /* words after the keyword */
	const char *argv[POP3_ARGS_MAX];
	size_t arglen[POP3_ARGS_MAX];
	/* Everything after "KEYWORD ": PASS takes it whole, spaces included
	   (RFC 1939 section 7 allows a password with spaces). */
	const char *rest;
	size_t rest_len;
};

/*
 * Parses line[0..len) (without CRLF).  Keywords are case-insensitive;
 * words are separated by one or more spaces.  The word-count check is done
 * for every command but PASS, whose argument is the rest of the line.
 * Arguments are at most POP3_ARG_MAX bytes, except the user name of USER
 * and APOP (an address may be longer) and AUTH's initial response (base64,
 * bounded by the line limit only: RFC 5034 section 4).
 */
enum pop3_parse_error pop3_parse_line(const char *line, size_t len,
				      struct pop3_command *cmd_r);

/* Human text for an error, for an -ERR line. */
const char *pop3_parse_error_text(enum pop3_parse_error error);

/* The upper-case keyword of a command. */
const char *pop3_cmd_name(enum pop3_cmd cmd);

#endif
