/*
 * fuzz-settings.c — settings_parse() on arbitrary bytes.
 *
 * Beyond "no crash, no leak": whatever parses must print as a config that
 * parses again to the same printed text (the round trip settings_print()
 * promises), and a parsed mail_location must expand without trouble.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "settings.h"

static char *fuzz_print(const struct popboxd_settings *set)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	if (f == NULL)
		abort();
	settings_print(set, f);
	fclose(f);
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct popboxd_settings a, b;
	const char *error;
	char *path = NULL;

	settings_init(&a);
	if (settings_parse(&a, (const char *)data, size, &error) == 0) {
		char *out_a = fuzz_print(&a);

		settings_init(&b);
		if (settings_parse(&b, out_a, strlen(out_a), &error) < 0)
			abort(); /* printed config does not load again */
		char *out_b = fuzz_print(&b);
		if (strcmp(out_a, out_b) != 0)
			abort(); /* round trip changed a value */
		free(out_a);
		free(out_b);
		settings_free(&b);
		if (settings_expand_mail_location(a.mail_location, "u@d.example",
						  "/home/u", &path, &error) == 0) {
			if (path[0] != '/')
				abort();
			free(path);
		}
	}
	settings_free(&a);
	return 0;
}
