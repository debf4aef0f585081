/*
 * fuzz-pop3-parse.c — libFuzzer harness for the command-line splitter.
 * Invariants: never reads outside the line; arguments lie inside it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pop3-parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A heap copy of exactly size bytes, so ASan sees any over-read. */
	char *line = malloc(size + 1);
	struct pop3_command cmd;

	if (line == NULL)
		return 0;
	memcpy(line, data, size);
	if (pop3_parse_line(line, size, &cmd) == POP3_PARSE_OK) {
		if (cmd.argc > POP3_ARGS_MAX)
			abort();
		for (unsigned i = 0; i < cmd.argc && cmd.cmd != POP3_CMD_PASS; i++) {
			if (cmd.argv[i] < line || cmd.argv[i] + cmd.arglen[i] > line + size)
				abort();
		}
		if (cmd.rest < line || cmd.rest + cmd.rest_len > line + size)
			abort();
	}
	free(line);
	return 0;
}
