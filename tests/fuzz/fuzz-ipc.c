/*
 * fuzz-ipc.c — libFuzzer harness for the inter-process message parser:
 * what the auth process and the mail processes read from a login process
 * that may be compromised.  Every parse must stay in bounds; whatever
 * parses is re-encoded field by field and must parse back to the same
 * fields; every getter is tried on every tag with several buffer sizes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ipc_writer w;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipc_msg msg, again;
	char str[300];
	uint8_t fixed[16];
	uint32_t v;

	if (ipc_parse(data, size, &msg) < 0)
		return 0;
	ipc_writer_init(&w, msg.type, msg.id);
	for (uint8_t tag = 0; tag < IPC_TAGS_MAX; tag++) {
		const struct ipc_field *f = &msg.fields[tag];
		if (f->present) {
			if (f->data < data || f->data + f->len > data + size)
				abort();
			ipc_put(&w, tag, f->data, f->len);
		}
		(void)ipc_get_str(&msg, tag, str, sizeof(str));
		(void)ipc_get_str(&msg, tag, str, 1 + tag % 8);
		(void)ipc_get_u32(&msg, tag, &v);
		(void)ipc_get_fixed(&msg, tag, fixed, sizeof(fixed));
	}
	if (w.overflow || ipc_parse(w.buf, w.len, &again) < 0 ||
	    again.type != msg.type || again.id != msg.id)
		abort();
	for (uint8_t tag = 0; tag < IPC_TAGS_MAX; tag++) {
		const struct ipc_field *a = &msg.fields[tag], *b = &again.fields[tag];
		if (a->present != b->present || a->len != b->len ||
		    (a->len > 0 && memcmp(a->data, b->data, a->len) != 0))
			abort();
	}
	return 0;
}
