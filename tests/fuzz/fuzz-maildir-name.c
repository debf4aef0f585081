/*
 * fuzz-maildir-name.c — libFuzzer harness for Maildir name parsing and UIDLs.
 *
 * Invariants: the base name is a prefix without ':' ending at ':' or the
 * end; parsed sizes are within MAILDIR_NAME_SIZE_MAX; the UIDL is 1..70
 * characters in 0x21-0x7E, its length is what maildir_name_uidl_len()
 * predicts, it is the base itself iff the direct form applies (and then has
 * no '~'), and it is a pure function of the base name.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "maildir-name.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *name = (const char *)data, *error;
	char uidl[MAILDIR_NAME_UIDL_SIZE], again[MAILDIR_NAME_UIDL_SIZE];
	struct maildir_name mn;
	size_t ulen, ulen2;

	maildir_name_parse(name, size, &mn);
	if (mn.base_len > size || memchr(name, ':', mn.base_len) != NULL ||
	    (mn.base_len < size && name[mn.base_len] != ':'))
		abort();
	if ((mn.has_size && mn.size > MAILDIR_NAME_SIZE_MAX) ||
	    (mn.has_wire_size && mn.wire_size > MAILDIR_NAME_SIZE_MAX))
		abort();
	if (maildir_name_uidl(name, mn.base_len, uidl, &ulen, &error) < 0)
		return 0;
	if (ulen < 1 || ulen > 70 || strlen(uidl) != ulen ||
	    ulen != maildir_name_uidl_len(name, mn.base_len))
		abort();
	for (size_t i = 0; i < ulen; i++) {
		if (uidl[i] < 0x21 || uidl[i] > 0x7e)
			abort();
	}
	if (maildir_name_uidl_is_direct(name, mn.base_len)) {
		if (ulen != mn.base_len || memcmp(uidl, name, ulen) != 0 ||
		    memchr(uidl, '~', ulen) != NULL)
			abort();
	} else if (uidl[0] != '~' || ulen != 41) {
		abort();
	}
	if (maildir_name_uidl(name, mn.base_len, again, &ulen2, &error) < 0 ||
	    ulen2 != ulen || memcmp(uidl, again, ulen) != 0)
		abort();
	return 0;
}
