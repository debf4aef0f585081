/*
 * fuzz-mbox-name.c — the mbox pending names (fetch/sink.h sink_locate;
 * "mbox.<off>.<len>.<key>.<hash>", read back from the user's UIDL file)
 * on arbitrary bytes, against a small real mbox: parsing, the bounds of
 * the offset and length, the bounded reads.
 *
 * Setup: one mbox made by the sink itself (two messages appended by the
 * prepare/publish path), whose two pending names are remembered.
 * Checks (abort on violation):
 *   - sink_locate never fails on a name (an mbox that is a file);
 *   - a name not starting with "mbox." is never stored;
 *   - the two real names are stored, and stay stored when looked up
 *     together with the fuzzed one (no state leaks between names);
 *   - a name that differs from a real one only in its last byte (the
 *     hash) is not stored.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sink.h"

static struct sink *sink;
static char real[2][160];
static char path[] = "/tmp/fuzz-mbox-name.XXXXXX";

static void remove_mbox(void)
{
	(void)unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

static void make_mbox(void)
{
	struct sink_config cfg = { .kind = SINK_MBOX };
	enum sink_status st;
	const char *err, *name;
	int fd = mkstemp(path);

	if (fd < 0)
		abort();
	close(fd);
	atexit(remove_mbox);
	cfg.target = path;
	if (sink_open(&cfg, &sink, &st, &err) < 0)
		abort();
	for (int i = 0; i < 2; i++) {
		struct sink_msg *m;
		const char *text = i == 0 ? "Subject: a\r\n\r\nFrom me\r\n" :
				   "Subject: b\r\n\r\nbody\r\n";

		if (sink_begin_in(sink, NULL, &m, &st, &err) < 0 ||
		    sink_write(m, text, strlen(text), &st, &err) < 0 ||
		    sink_prepare(m, &name, &st, &err) < 0)
			abort();
		snprintf(real[i], sizeof(real[i]), "%s", name);
		if (sink_publish(&m, &st, &err) < 0)
			abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	make_mbox();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[256];
	const char *names[3] = { real[0], name, real[1] };
	bool stored[3];
	enum sink_status st;
	const char *err;

	if (size >= sizeof(name))
		size = sizeof(name) - 1;
	memcpy(name, data, size);
	name[size] = '\0';
	if (sink_locate(sink, names, 3, stored, &st, &err) < 0)
		abort();
	if (!stored[0] || !stored[2])
		abort();
	if (strncmp(name, "mbox.", 5) != 0 && stored[1])
		abort();
	/* The real name with its hash's last digit changed. */
	snprintf(name, sizeof(name), "%s", real[size % 2]);
	size_t n = strlen(name);
	name[n - 1] = name[n - 1] == '0' ? '1' : '0';
	if (sink_locate(sink, names + 1, 1, stored, &st, &err) < 0 ||
	    stored[0])
		abort();
	return 0;
}
