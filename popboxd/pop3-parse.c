/*
 * pop3-parse.c — splitting one POP3 command line (see pop3-parse.h).
 */
#include "pop3-parse.h"

#include <stdbool.h>
#include <string.h>

static const char *const pop3_cmd_names[POP3_CMD_COUNT] = {
	[POP3_CMD_USER] = "USER", [POP3_CMD_PASS] = "PASS",
	[POP3_CMD_APOP] = "APOP", [POP3_CMD_QUIT] = "QUIT",
	[POP3_CMD_STAT] = "STAT", [POP3_CMD_LIST] = "LIST",
	[POP3_CMD_RETR] = "RETR", [POP3_CMD_DELE] = "DELE",
	[POP3_CMD_NOOP] = "NOOP", [POP3_CMD_RSET] = "RSET",
	[POP3_CMD_TOP] = "TOP",   [POP3_CMD_UIDL] = "UIDL",
	[POP3_CMD_CAPA] = "CAPA", [POP3_CMD_STLS] = "STLS",
	[POP3_CMD_AUTH] = "AUTH",
};

const char *pop3_cmd_name(enum pop3_cmd cmd)
{
	return cmd < POP3_CMD_COUNT ? pop3_cmd_names[cmd] : "?";
}

const char *pop3_parse_error_text(enum pop3_parse_error error)
{
	switch (error) {
	case POP3_PARSE_OK:
		return "ok";
	case POP3_PARSE_EMPTY:
		return "empty command";
	case POP3_PARSE_BAD_BYTE:
		return "invalid byte in command";
	case POP3_PARSE_UNKNOWN:
		return "unknown command";
	case POP3_PARSE_TOO_MANY_ARGS:
		return "too many arguments";
	case POP3_PARSE_ARG_TOO_LONG:
		return "argument too long";
	}
	return "bad command";
}

static int keyword_lookup(const char *word, size_t len, enum pop3_cmd *cmd_r)
{
	char upper[POP3_KEYWORD_MAX];

	if (len == 0 || len > POP3_KEYWORD_MAX)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = word[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c < 'A' || c > 'Z')
			return -1;
		upper[i] = c;
	}
	for (unsigned i = 0; i < POP3_CMD_COUNT; i++) {
		const char *name = pop3_cmd_names[i];
		if (strlen(name) == len && memcmp(name, upper, len) == 0) {
			*cmd_r = (enum pop3_cmd)i;
			return 0;
		}
	}
	return -1;
}

/* Control bytes other than TAB never belong in a command; 8-bit bytes may
   (a UTF-8 password), and are left to each command to judge. */
static int line_has_bad_byte(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 1;
	}
	return 0;
}

/* USER and APOP names may exceed RFC 1939's 40 (addresses), and so may
   AUTH's base64 initial response; the line limit bounds them.  Every other
   argument may not.  Called for the argument about to be argv[argc]. */
static bool arg_may_be_long(const struct pop3_command *cmd)
{
	return cmd->cmd == POP3_CMD_USER ||
	       (cmd->cmd == POP3_CMD_APOP && cmd->argc == 0) ||
	       (cmd->cmd == POP3_CMD_AUTH && cmd->argc == 1);
}

enum pop3_parse_error pop3_parse_line(const char *line, size_t len,
				      struct pop3_command *cmd_r)
{
	size_t pos = 0, start;

	memset(cmd_r, 0, sizeof(*cmd_r));
	if (line_has_bad_byte(line, len))
		return POP3_PARSE_BAD_BYTE;
	while (pos < len && line[pos] == ' ')
		pos++;
	if (pos == len)
		return POP3_PARSE_EMPTY;
	start = pos;
	while (pos < len && line[pos] != ' ')
		pos++;
	if (keyword_lookup(line + start, pos - start, &cmd_r->cmd) < 0)
		return POP3_PARSE_UNKNOWN;

	if (pos < len)
		pos++; /* the one space that separates keyword and argument */
	cmd_r->rest = line + pos;
	cmd_r->rest_len = len - pos;
	if (cmd_r->cmd == POP3_CMD_PASS) {
		cmd_r->argc = cmd_r->rest_len > 0 ? 1 : 0;
		return POP3_PARSE_OK;
	}
	for (;;) {
		while (pos < len && line[pos] == ' ')
			pos++;
		if (pos == len)
			break;
		if (cmd_r->argc == POP3_ARGS_MAX)
			return POP3_PARSE_TOO_MANY_ARGS;
		start = pos;
		while (pos < len && line[pos] != ' ')
			pos++;
		if (pos - start > POP3_ARG_MAX && !arg_may_be_long(cmd_r))
			return POP3_PARSE_ARG_TOO_LONG;
		cmd_r->argv[cmd_r->argc] = line + start;
		cmd_r->arglen[cmd_r->argc] = pos - start;
		cmd_r->argc++;
	}
	return POP3_PARSE_OK;
}
