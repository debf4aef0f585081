/*
 * fuzz-pop3-client.c — libFuzzer harness for the POP3 client core
 * (fetch/pop3-client): a hostile server's byte stream against a client
 * with commands queued.
 *
 * Input: byte 0 the window, byte 1 a command count n, then n bytes each
 * choosing a command (and its message number), one byte seeding the
 * random split, and the rest is what the server sends.  The stream is fed
 * three times to fresh cores: whole, one byte at a time, and in random
 * pieces.  The harness answers every SASL challenge and refills the output
 * from the callback, as a driver would.
 * Invariants checked:
 *   - the three runs report the same events (a digest over every field
 *     and byte), send the same bytes, and fail or not alike;
 *   - each final reply answers the oldest command sent, in queueing order,
 *     and there are never more replies than commands sent; a challenge
 *     only to AUTH; never more in flight than the window;
 *   - DATA comes only inside a multi-line reply, for its command, at most
 *     POP3C_LINE_MAX bytes, listing lines whole; END's octets are the
 *     DATA bytes plus 2 per line; all DATA bytes together never exceed
 *     the bytes received;
 *   - what the pure parsers return lies inside their input and keeps
 *     their promises (a uid of 1..70 bytes 0x21-0x7E, a timestamp "<..@..>");
 *   - pop3c_eof() is clean only with nothing in flight.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pop3-client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_COMMANDS 16

struct expected {
	enum pop3c_cmd_type type;
	uint32_t msg;
	uint64_t id;
};

struct run {
	struct pop3c *c;
	unsigned int window;
	struct expected cmds[MAX_COMMANDS + 1];   /* the greeting first */
	size_t ncmds, answered;
	bool in_data;              /* between a multi-line REPLY and its END */
	uint64_t data_bytes, data_lines, total_data;
	uint64_t digest, sent_digest;
	size_t input_len;
	struct pop3c_caps caps;
};

static void mix(uint64_t *h, const void *p, size_t len)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++) {
		*h ^= b[i];
		*h *= 1099511628211ULL;
	}
}

static void mix_u64(uint64_t *h, uint64_t v)
{
	mix(h, &v, sizeof(v));
}

/* Takes everything the core wants to send into the sent digest. */
static void drain_output(struct run *r)
{
	size_t n;
	const char *out = pop3c_output(r->c, &n);

	if (n > 0 && (memchr(out, '\n', n) == NULL || out[n - 1] != '\n'))
		abort();
	mix(&r->sent_digest, out, n);
	pop3c_output_sent(r->c, n);
	if (pop3c_in_flight(r->c) > r->window)
		abort();
}

static void check_timestamp(const char *text, size_t len)
{
	size_t start, tlen;

	if (pop3c_apop_timestamp(text, len, &start, &tlen) < 0)
		return;
	if (start > len || tlen > len - start || tlen < 3 ||
	    tlen > POP3C_TIMESTAMP_MAX || text[start] != '<' ||
	    text[start + tlen - 1] != '>' ||
	    memchr(text + start, '@', tlen) == NULL)
		abort();
}

static void check_reply(struct run *r, const struct pop3c_event *ev)
{
	const struct pop3c_reply *reply = ev->reply;
	const struct expected *want = &r->cmds[r->answered];
	const char *error;

	if (r->in_data || r->answered >= r->ncmds ||
	    ev->cmd.id != want->id || ev->cmd.type != want->type ||
	    ev->cmd.msg != want->msg)
		abort();
	if (reply->status == POP3C_CONTINUE) {
		if (ev->cmd.type != POP3C_AUTH || reply->multiline)
			abort();
		if (pop3c_sasl_respond(r->c, "AGEAYg==", 8, &error) < 0)
			abort();
	} else if (reply->multiline) {
		if (reply->status != POP3C_OK)
			abort();
		r->in_data = true;
		r->data_bytes = r->data_lines = 0;
	} else {
		r->answered++;
	}
	if ((reply->code == POP3C_CODE_NONE) != (reply->code_text == NULL))
		abort();
	mix_u64(&r->digest, (uint64_t)reply->status << 8 | reply->code);
	mix(&r->digest, reply->code_text, reply->code_len);
	mix(&r->digest, reply->text, reply->text_len);
	check_timestamp(reply->text, reply->text_len);
	uint32_t count;
	uint64_t size;
	(void)pop3c_parse_stat(reply->text, reply->text_len, &count, &size);
}

static void check_listing_line(struct run *r, const struct pop3c_event *ev)
{
	char uid[POP3C_UID_MAX + 1];
	size_t uid_len;
	uint32_t msg;
	uint64_t size;
	const char *error;

	if (!ev->line_end)
		abort();
	if (pop3c_parse_uid_listing(ev->data, ev->len, &msg, uid, &uid_len) == 0) {
		if (msg == 0 || uid_len == 0 || uid_len > POP3C_UID_MAX ||
		    uid[uid_len] != '\0' || uid_len > ev->len)
			abort();
		for (size_t i = 0; i < uid_len; i++) {
			if (uid[i] < 0x21 || uid[i] > 0x7e)
				abort();
		}
	}
	if (pop3c_parse_scan_listing(ev->data, ev->len, &msg, &size) == 0 &&
	    msg == 0)
		abort();
	(void)pop3c_parse_capa_line(&r->caps, ev->data, ev->len, &error);
	if (memchr(r->caps.sasl_mechs, '\0', sizeof(r->caps.sasl_mechs)) == NULL ||
	    memchr(r->caps.implementation, '\0',
		   sizeof(r->caps.implementation)) == NULL)
		abort();
	(void)pop3c_caps_has_mech(&r->caps, "PLAIN");
}

static void on_event(void *context, const struct pop3c_event *ev)
{
	struct run *r = context;

	mix_u64(&r->digest, (uint64_t)ev->type << 32 | ev->cmd.id);
	switch (ev->type) {
	case POP3C_EVENT_REPLY:
		check_reply(r, ev);
		break;
	case POP3C_EVENT_DATA:
		if (!r->in_data || ev->cmd.id != r->cmds[r->answered].id ||
		    ev->len > POP3C_LINE_MAX)
			abort();
		r->data_bytes += ev->len;
		r->total_data += ev->len;
		r->data_lines += ev->line_end;
		if (r->total_data > r->input_len)
			abort();
		mix(&r->digest, ev->data, ev->len);
		mix_u64(&r->digest, ev->line_end);
		if (ev->cmd.type != POP3C_RETR && ev->cmd.type != POP3C_TOP)
			check_listing_line(r, ev);
		break;
	case POP3C_EVENT_END:
		if (!r->in_data || ev->cmd.id != r->cmds[r->answered].id ||
		    ev->octets != r->data_bytes + 2 * r->data_lines ||
		    ev->lines != r->data_lines || ev->bare_lf_lines > ev->lines)
			abort();
		mix_u64(&r->digest, ev->octets);
		mix_u64(&r->digest, ev->bare_lf_lines);
		r->in_data = false;
		r->answered++;
		break;
	}
	drain_output(r);
}

static const enum pop3c_cmd_type choices[] = {
	POP3C_CAPA, POP3C_STAT, POP3C_LIST, POP3C_LIST_ONE, POP3C_UIDL,
	POP3C_UIDL_ONE, POP3C_RETR, POP3C_TOP, POP3C_DELE, POP3C_NOOP,
	POP3C_RSET, POP3C_QUIT, POP3C_STLS, POP3C_USER, POP3C_PASS,
	POP3C_AUTH, POP3C_APOP,
};

static int queue_one(struct pop3c *c, uint8_t b, uint64_t *id_r,
		     struct expected *e)
{
	const char *error;

	e->type = choices[b % (sizeof(choices) / sizeof(choices[0]))];
	e->msg = 0;
	switch (e->type) {
	case POP3C_USER:
		return pop3c_queue_user(c, "user", id_r, &error);
	case POP3C_PASS:
		return pop3c_queue_pass(c, "pass word", id_r, &error);
	case POP3C_APOP:
		return pop3c_queue_apop(c, "user", "0123456789abcdef0123456789abcdef",
					id_r, &error);
	case POP3C_AUTH:
		return pop3c_queue_auth(c, "PLAIN", (b & 0x80) ? "AGEAYg==" : NULL,
					id_r, &error);
	case POP3C_LIST_ONE: case POP3C_UIDL_ONE: case POP3C_RETR:
	case POP3C_TOP: case POP3C_DELE:
		e->msg = 1 + (b >> 5);
		break;
	default:
		break;
	}
	return pop3c_queue(c, e->type, e->msg, e->msg % 3, id_r, &error);
}

/* Sets up a run: the greeting expected first, then the commands. */
static bool run_init(struct run *r, const uint8_t *script, size_t n,
		     unsigned int window, size_t input_len)
{
	memset(r, 0, sizeof(*r));
	r->c = pop3c_new(on_event, r);
	if (r->c == NULL)
		return false;
	r->window = window;
	r->input_len = input_len;
	pop3c_set_window(r->c, window);
	r->cmds[0].type = POP3C_GREETING;
	r->ncmds = 1;
	for (size_t i = 0; i < n; i++) {
		struct expected *e = &r->cmds[r->ncmds];
		if (queue_one(r->c, script[i], &e->id, e) == 0)
			r->ncmds++;
	}
	drain_output(r);
	return true;
}

static uint64_t next_random(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Feeds the stream: chunk 0 whole, 1 byte-wise, else random pieces.
   Returns whether the core failed. */
static bool run_feed(struct run *r, const uint8_t *p, size_t len, int mode,
		     uint64_t seed)
{
	const char *error;
	size_t i = 0;

	while (i < len) {
		size_t n = len - i;
		if (mode == 1)
			n = 1;
		else if (mode == 2 && n > 1)
			n = 1 + next_random(&seed) % (n < 64 ? n : 64);
		if (pop3c_input(r->c, p + i, n, &error) < 0)
			return true;
		i += n;
	}
	return false;
}

static void run_finish(struct run *r, bool failed)
{
	const char *error;
	int eof = pop3c_eof(r->c, &error);

	if (!failed && eof == 0 && pop3c_in_flight(r->c) != 0 &&
	    !pop3c_quit_done(r->c))
		abort();
	if (failed && eof == 0)
		abort();
	pop3c_free(&r->c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run runs[3];
	bool failed[3];

	if (size < 3)
		return 0;
	unsigned int window = 1 + data[0] % 8;
	size_t n = data[1] % (MAX_COMMANDS + 1);
	if (size < 3 + n)
		return 0;
	const uint8_t *script = data + 2;
	uint64_t seed = 0x9e3779b97f4a7c15ULL ^ data[2 + n];
	const uint8_t *stream = data + 3 + n;
	size_t len = size - 3 - n;

	for (int mode = 0; mode < 3; mode++) {
		if (!run_init(&runs[mode], script, n, window, len))
			return 0;
		failed[mode] = run_feed(&runs[mode], stream, len, mode, seed);
	}
	for (int mode = 1; mode < 3; mode++) {
		if (failed[mode] != failed[0] ||
		    runs[mode].digest != runs[0].digest ||
		    runs[mode].sent_digest != runs[0].sent_digest ||
		    runs[mode].answered != runs[0].answered)
			abort();
	}
	for (int mode = 0; mode < 3; mode++)
		run_finish(&runs[mode], failed[mode]);
	return 0;
}
