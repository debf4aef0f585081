/*
 * fuzz-maildrop-cache.c — libFuzzer harness for the popbox.cache parser.
 *
 * The parser must reject or accept any bytes without reading outside them
 * (ASan checks that: the input is copied to an exact-size buffer).  When it
 * accepts, every entry must be a valid Maildir name inside the buffer,
 * findable by its base name, and formatting the entries again must give a
 * file that parses to the same entries.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "maildrop-cache.h"

static void check_accepted(const struct maildrop_cache *c, const uint8_t *buf,
			   size_t len)
{
	struct maildrop_cache_item *items = calloc(c->count + 1, sizeof(*items));
	struct maildrop_cache c2;
	const char *error;
	uint8_t *out;
	size_t olen, idx;

	if (items == NULL)
		abort();
	for (size_t i = 0; i < c->count; i++) {
		const struct maildrop_cache_entry *e = &c->entries[i];
		const char *name = (const char *)buf + e->name_off;

		if ((size_t)e->name_off + e->name_len > len || e->name_len == 0 ||
		    e->base_len > e->name_len || name[0] == '.' ||
		    memchr(name, '/', e->name_len) != NULL ||
		    memchr(name, '\0', e->name_len) != NULL)
			abort();
		if (!maildrop_cache_lookup(c, name, e->base_len, &idx) ||
		    idx != i)
			abort();
		items[i] = (struct maildrop_cache_item){ name, e->name_len,
							 e->wire_size, e->dir };
	}
	if (maildrop_cache_format(&c->hdr, items, c->count, &out, &olen,
				  &error) < 0)
		abort();
	if (maildrop_cache_parse(out, olen, &c2, &error) < 0 ||
	    c2.count != c->count)
		abort();
	for (size_t i = 0; i < c->count; i++) {
		if (c2.entries[i].wire_size != c->entries[i].wire_size ||
		    c2.entries[i].name_len != c->entries[i].name_len ||
		    c2.entries[i].dir != c->entries[i].dir ||
		    memcmp(out + c2.entries[i].name_off,
			   buf + c->entries[i].name_off,
			   c->entries[i].name_len) != 0)
			abort();
	}
	maildrop_cache_free(&c2);
	free(out);
	free(items);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size + 1);
	struct maildrop_cache c;
	const char *error;

	if (buf == NULL)
		abort();
	memcpy(buf, data, size);
	if (maildrop_cache_parse(buf, size, &c, &error) == 0) {
		check_accepted(&c, buf, size);
		maildrop_cache_free(&c);
	}
	free(buf);
	return 0;
}
