/*
 * pop3-client.c — the sans-I/O POP3 client core (see pop3-client.h): the
 * command queue and window, the reply parser with its dot-unstuffing
 * state machine, and the parsers of CAPA, STAT, LIST, UIDL and the APOP
 * timestamp.
 */
#include "pop3-client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strnum.h"

/* Queue slots allocated at first; doubled as needed up to
   POP3C_QUEUE_MAX (a power of two, so the doubling lands on it). */
#define QUEUE_INITIAL 16
/* Output buffer allocated at first; it grows to hold what the window lets
   out (at most POP3C_WINDOW_MAX command lines, or one SASL response). */
#define OUTPUT_INITIAL 1024
/* Longest response code taken from "[...]"; RFC 2449 gives no limit, and
   every registered code is far shorter. */
#define RESP_CODE_MAX 64

enum input_state {
	INPUT_STATUS,     /* reading a status line */
	INPUT_DATA,       /* reading the lines of a multi-line reply */
	INPUT_TLS_WAIT,   /* +OK to STLS: nothing until pop3c_tls_started() */
	INPUT_DONE,       /* QUIT answered: the rest is ignored */
	INPUT_FAILED,     /* protocol error: dead */
};

/* Where the data parser is within a line of a multi-line reply. */
enum data_state {
	DATA_LINE_START,  /* nothing of this line seen yet */
	DATA_DOT,         /* a leading '.': stuffing, or the terminator */
	DATA_DOT_CR,      /* ".\r": the terminator if LF follows */
	DATA_IN_LINE,     /* inside a line */
	DATA_CR,          /* inside a line, after a CR: a line end if LF
			     follows, else the CR was data */
};

struct queued {
	struct pop3c_command cmd;
	char *line;       /* text commands: the line with CRLF (wiped, freed) */
	size_t line_len;
};

struct pop3c {
	pop3c_event_fn *callback;
	void *context;

	/* Ring of commands: the first in_flight are sent, the rest wait. */
	struct queued *ring;
	size_t ring_cap, head, count, in_flight;
	unsigned int window;
	uint64_t next_id;
	bool quit_queued;
	bool sasl_awaiting;   /* a challenge awaits pop3c_sasl_respond() */
	bool in_callback;

	enum input_state state;
	enum data_state data_state;
	bool data_is_message; /* RETR, TOP: long lines go out in pieces */
	uint64_t data_bytes, data_lines, data_bare_lf;
	/* The current line; one more byte than the limit for a CR. */
	char line[POP3C_LINE_MAX + 1];
	size_t line_len;

	char *out;
	size_t out_len, out_cap;
	const char *error;
};

static const char *const cmd_names[POP3C_CMD_TYPE_COUNT] = {
	[POP3C_GREETING] = "greeting", [POP3C_CAPA] = "CAPA",
	[POP3C_STLS] = "STLS",         [POP3C_USER] = "USER",
	[POP3C_PASS] = "PASS",         [POP3C_APOP] = "APOP",
	[POP3C_AUTH] = "AUTH",         [POP3C_STAT] = "STAT",
	[POP3C_LIST] = "LIST",         [POP3C_LIST_ONE] = "LIST",
	[POP3C_UIDL] = "UIDL",         [POP3C_UIDL_ONE] = "UIDL",
	[POP3C_RETR] = "RETR",         [POP3C_TOP] = "TOP",
	[POP3C_DELE] = "DELE",         [POP3C_NOOP] = "NOOP",
	[POP3C_RSET] = "RSET",         [POP3C_QUIT] = "QUIT",
};

const char *pop3c_cmd_name(enum pop3c_cmd_type type)
{
	return (unsigned)type < POP3C_CMD_TYPE_COUNT ? cmd_names[type] : "?";
}

/* +OK to these is followed by lines and a "." (RFC 1939, RFC 2449). */
static bool cmd_is_multiline(enum pop3c_cmd_type type)
{
	return type == POP3C_CAPA || type == POP3C_LIST ||
	       type == POP3C_UIDL || type == POP3C_RETR || type == POP3C_TOP;
}

/* Commands that go out alone: nothing with them, nothing after them until
   their reply (authentication, TLS, and the greeting, before which the
   client says nothing). */
static bool cmd_goes_alone(enum pop3c_cmd_type type)
{
	switch (type) {
	case POP3C_GREETING:
	case POP3C_STLS:
	case POP3C_USER:
	case POP3C_PASS:
	case POP3C_APOP:
	case POP3C_AUTH:
		return true;
	default:
		return false;
	}
}

static bool cmd_takes_msg(enum pop3c_cmd_type type)
{
	return type == POP3C_LIST_ONE || type == POP3C_UIDL_ONE ||
	       type == POP3C_RETR || type == POP3C_TOP || type == POP3C_DELE;
}

static char ascii_upper(char c)
{
	if (c >= 'a' && c <= 'z')
		c = (char)(c - 'a' + 'A');
	return c;
}

/* Whether s[0..len) equals the upper-case word, ignoring case. */
static bool word_equals(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);

	if (len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (ascii_upper(s[i]) != word[i])
			return false;
	}
	return true;
}

/* ---------------------------------------------------------------- */
/* The queue                                                         */

static struct queued *queue_at(const struct pop3c *c, size_t i)
{
	return &c->ring[(c->head + i) % c->ring_cap];
}

static void queued_clear(struct queued *q)
{
	if (q->line != NULL) {
		explicit_bzero(q->line, q->line_len);
		free(q->line);
	}
	q->line = NULL;
	q->line_len = 0;
}

/* Makes room for one more command; -1 if the queue is full or no memory. */
static int queue_reserve(struct pop3c *c)
{
	if (c->count < c->ring_cap)
		return 0;
	if (c->ring_cap >= POP3C_QUEUE_MAX)
		return -1;
	size_t cap = c->ring_cap * 2;
	struct queued *ring = calloc(cap, sizeof(*ring));
	if (ring == NULL)
		return -1;
	for (size_t i = 0; i < c->count; i++)
		ring[i] = *queue_at(c, i);
	free(c->ring);
	c->ring = ring;
	c->ring_cap = cap;
	c->head = 0;
	return 0;
}

/* Removes the oldest command (in flight, now answered). */
static void queue_pop(struct pop3c *c)
{
	queued_clear(queue_at(c, 0));
	c->head = (c->head + 1) % c->ring_cap;
	c->count--;
	c->in_flight--;
}

static void fail(struct pop3c *c, const char *error)
{
	if (c->state != INPUT_FAILED) {
		c->state = INPUT_FAILED;
		c->error = error;
	}
}

struct pop3c *pop3c_new(pop3c_event_fn *callback, void *context)
{
	struct pop3c *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->ring = calloc(QUEUE_INITIAL, sizeof(*c->ring));
	c->out = malloc(OUTPUT_INITIAL);
	if (c->ring == NULL || c->out == NULL) {
		free(c->ring);
		free(c->out);
		free(c);
		return NULL;
	}
	c->ring_cap = QUEUE_INITIAL;
	c->out_cap = OUTPUT_INITIAL;
	c->callback = callback;
	c->context = context;
	c->window = 1;
	c->next_id = 1;
	c->state = INPUT_STATUS;
	/* The greeting is the first reply, in flight from the start. */
	c->ring[0].cmd.type = POP3C_GREETING;
	c->count = 1;
	c->in_flight = 1;
	return c;
}

void pop3c_free(struct pop3c **cp)
{
	struct pop3c *c = *cp;

	if (c == NULL)
		return;
	for (size_t i = 0; i < c->count; i++)
		queued_clear(queue_at(c, i));
	free(c->ring);
	explicit_bzero(c->out, c->out_cap);
	free(c->out);
	explicit_bzero(c->line, sizeof(c->line));
	free(c);
	*cp = NULL;
}

void pop3c_set_window(struct pop3c *c, unsigned int window)
{
	if (window < 1)
		window = 1;
	if (window > POP3C_WINDOW_MAX)
		window = POP3C_WINDOW_MAX;
	c->window = window;
}

/* Checks that the core can take a command; -1 with error_r if not. */
static int queue_check(struct pop3c *c, const char **error_r)
{
	if (c->state == INPUT_FAILED) {
		*error_r = c->error;
		return -1;
	}
	if (c->quit_queued || c->state == INPUT_DONE) {
		*error_r = "command queued after QUIT";
		return -1;
	}
	if (queue_reserve(c) < 0) {
		*error_r = "command queue full";
		return -1;
	}
	return 0;
}

/* Appends a command (its line owned by the queue from now on). */
static void queue_push(struct pop3c *c, struct pop3c_command cmd, char *line,
		       size_t line_len, uint64_t *id_r)
{
	struct queued *q = queue_at(c, c->count);

	cmd.id = c->next_id++;
	q->cmd = cmd;
	q->line = line;
	q->line_len = line_len;
	c->count++;
	if (cmd.type == POP3C_QUIT)
		c->quit_queued = true;
	if (id_r != NULL)
		*id_r = cmd.id;
}

int pop3c_queue(struct pop3c *c, enum pop3c_cmd_type type, uint32_t msg,
		uint32_t lines, uint64_t *id_r, const char **error_r)
{
	struct pop3c_command cmd = { .type = type };

	switch (type) {
	case POP3C_CAPA: case POP3C_STLS: case POP3C_STAT: case POP3C_LIST:
	case POP3C_UIDL: case POP3C_NOOP: case POP3C_RSET: case POP3C_QUIT:
	case POP3C_LIST_ONE: case POP3C_UIDL_ONE: case POP3C_RETR:
	case POP3C_DELE: case POP3C_TOP:
		break;
	default:
		*error_r = "command needs text arguments or cannot be queued";
		return -1;
	}
	if (cmd_takes_msg(type)) {
		if (msg == 0) {
			*error_r = "message numbers start at 1";
			return -1;
		}
		cmd.msg = msg;
	}
	if (type == POP3C_TOP)
		cmd.lines = lines;
	if (queue_check(c, error_r) < 0)
		return -1;
	queue_push(c, cmd, NULL, 0, id_r);
	return 0;
}

/* A user name: 1 or more bytes, none of them a control byte or a space
   (8-bit bytes pass: an internationalised address). */
static bool user_valid(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		unsigned char b = (unsigned char)*s;
		if (b <= ' ' || b == 0x7f)
			return false;
	}
	return true;
}

/* A password may hold anything but the line end (and NUL, which ends it). */
static bool password_valid(const char *s)
{
	return strpbrk(s, "\r\n") == NULL;
}

static bool hex_digest_valid(const char *s)
{
	size_t n = strlen(s);

	if (n != 32)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool digit = s[i] >= '0' && s[i] <= '9';
		if (!digit && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	}
	return true;
}

static bool mech_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

static bool mech_valid(const char *s, size_t len)
{
	if (len == 0 || len > POP3C_MECH_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!mech_char(s[i]))
			return false;
	}
	return true;
}

static bool base64_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '+' || ch == '/' ||
		      ch == '='))
			return false;
	}
	return true;
}

/*
 * Formats "KEYWORD a[ b]\r\n" into a new buffer and queues it.  The
 * length is checked against POP3C_COMMAND_MAX before anything is
 * allocated, so the sizes below cannot overflow.
 */
static int queue_text(struct pop3c *c, enum pop3c_cmd_type type,
		      const char *a, const char *b, uint64_t *id_r,
		      const char **error_r)
{
	const char *keyword = pop3c_cmd_name(type);
	size_t alen = strlen(a), blen = b != NULL ? strlen(b) : 0;

	if (alen > POP3C_COMMAND_MAX || blen > POP3C_COMMAND_MAX ||
	    strlen(keyword) + 1 + alen + (b != NULL ? 1 + blen : 0) + 2 >
		    POP3C_COMMAND_MAX) {
		*error_r = "command line too long";
		return -1;
	}
	if (queue_check(c, error_r) < 0)
		return -1;
	char *line = malloc(POP3C_COMMAND_MAX + 1);
	if (line == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	int n;
	if (b != NULL)
		n = snprintf(line, POP3C_COMMAND_MAX + 1, "%s %s %s\r\n",
			     keyword, a, b);
	else
		n = snprintf(line, POP3C_COMMAND_MAX + 1, "%s %s\r\n", keyword,
			     a);
	if (n < 0 || n > POP3C_COMMAND_MAX) {
		explicit_bzero(line, POP3C_COMMAND_MAX + 1);
		free(line);
		*error_r = "command line too long";
		return -1;
	}
	struct pop3c_command cmd = { .type = type };
	queue_push(c, cmd, line, (size_t)n, id_r);
	return 0;
}

int pop3c_queue_user(struct pop3c *c, const char *user, uint64_t *id_r,
		     const char **error_r)
{
	if (!user_valid(user)) {
		*error_r = "bad user name";
		return -1;
	}
	return queue_text(c, POP3C_USER, user, NULL, id_r, error_r);
}

int pop3c_queue_pass(struct pop3c *c, const char *password, uint64_t *id_r,
		     const char **error_r)
{
	if (!password_valid(password)) {
		*error_r = "password contains a line end";
		return -1;
	}
	return queue_text(c, POP3C_PASS, password, NULL, id_r, error_r);
}

int pop3c_queue_apop(struct pop3c *c, const char *user, const char *digest,
		     uint64_t *id_r, const char **error_r)
{
	if (!user_valid(user)) {
		*error_r = "bad user name";
		return -1;
	}
	if (!hex_digest_valid(digest)) {
		*error_r = "APOP digest is not 32 lower-case hex digits";
		return -1;
	}
	return queue_text(c, POP3C_APOP, user, digest, id_r, error_r);
}

int pop3c_queue_auth(struct pop3c *c, const char *mechanism,
		     const char *initial_response, uint64_t *id_r,
		     const char **error_r)
{
	char mech[POP3C_MECH_MAX + 1];
	size_t len = strlen(mechanism);

	if (!mech_valid(mechanism, len)) {
		*error_r = "bad SASL mechanism name";
		return -1;
	}
	for (size_t i = 0; i <= len; i++)
		mech[i] = ascii_upper(mechanism[i]);
	if (initial_response != NULL &&
	    (initial_response[0] == '\0' ||
	     !base64_valid(initial_response, strlen(initial_response)))) {
		*error_r = "initial response is not base64";
		return -1;
	}
	if (initial_response != NULL &&
	    strlen("AUTH ") + len + 1 + strlen(initial_response) + 2 >
		    POP3C_COMMAND_MAX) {
		*error_r = "initial response too long: send it at the first "
			   "challenge";
		return -1;
	}
	return queue_text(c, POP3C_AUTH, mech, initial_response, id_r, error_r);
}

/* ---------------------------------------------------------------- */
/* Output                                                            */

/* Makes room for len more bytes of output; -1 if no memory. */
static int output_reserve(struct pop3c *c, size_t len)
{
	if (len <= c->out_cap - c->out_len)
		return 0;
	size_t cap = c->out_cap;
	/* out_len + len is bounded by the window and the line limits
	   (well under 1 MiB), so neither sum nor doubling overflows. */
	while (cap - c->out_len < len)
		cap *= 2;
	char *out = malloc(cap);
	if (out == NULL)
		return -1;
	memcpy(out, c->out, c->out_len);
	explicit_bzero(c->out, c->out_cap);
	free(c->out);
	c->out = out;
	c->out_cap = cap;
	return 0;
}

static int output_append(struct pop3c *c, const char *data, size_t len)
{
	if (output_reserve(c, len) < 0)
		return -1;
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return 0;
}

/* The line of a command without text arguments. */
static int format_plain(const struct pop3c_command *cmd, char *buf,
			size_t size)
{
	const char *name = pop3c_cmd_name(cmd->type);

	if (cmd->type == POP3C_TOP)
		return snprintf(buf, size, "TOP %u %u\r\n", (unsigned)cmd->msg,
				(unsigned)cmd->lines);
	if (cmd_takes_msg(cmd->type))
		return snprintf(buf, size, "%s %u\r\n", name,
				(unsigned)cmd->msg);
	return snprintf(buf, size, "%s\r\n", name);
}

/* Whether the next waiting command may go out now. */
static bool may_send(const struct pop3c *c, const struct queued *next)
{
	if (c->state != INPUT_STATUS && c->state != INPUT_DATA)
		return false;
	if (c->in_flight >= c->window)
		return false;
	if (c->in_flight > 0 &&
	    (cmd_goes_alone(queue_at(c, 0)->cmd.type) ||
	     cmd_goes_alone(next->cmd.type)))
		return false;
	return true;
}

/* Moves waiting commands into the output as the window allows. */
static void output_fill(struct pop3c *c)
{
	while (c->in_flight < c->count) {
		struct queued *q = queue_at(c, c->in_flight);
		char buf[64];

		if (!may_send(c, q))
			return;
		if (q->line != NULL) {
			if (output_append(c, q->line, q->line_len) < 0)
				return;
			queued_clear(q);
		} else {
			int n = format_plain(&q->cmd, buf, sizeof(buf));
			if (n < 0 || (size_t)n >= sizeof(buf) ||
			    output_append(c, buf, (size_t)n) < 0)
				return;
		}
		c->in_flight++;
	}
}

const char *pop3c_output(struct pop3c *c, size_t *len_r)
{
	output_fill(c);
	*len_r = c->out_len;
	return c->out;
}

void pop3c_output_sent(struct pop3c *c, size_t len)
{
	if (len > c->out_len)
		len = c->out_len;
	size_t rest = c->out_len - len;
	memmove(c->out, c->out + len, rest);
	explicit_bzero(c->out + rest, len);
	c->out_len = rest;
}

static int sasl_line(struct pop3c *c, const char *data, size_t len,
		     const char **error_r)
{
	if (c->state == INPUT_FAILED) {
		*error_r = c->error;
		return -1;
	}
	if (!c->sasl_awaiting || c->in_flight == 0 ||
	    queue_at(c, 0)->cmd.type != POP3C_AUTH) {
		*error_r = "no SASL challenge awaits an answer";
		return -1;
	}
	if (output_reserve(c, len + 2) < 0) {
		*error_r = "out of memory";
		return -1;
	}
	memcpy(c->out + c->out_len, data, len);
	memcpy(c->out + c->out_len + len, "\r\n", 2);
	c->out_len += len + 2;
	c->sasl_awaiting = false;
	return 0;
}

int pop3c_sasl_respond(struct pop3c *c, const char *response, size_t len,
		       const char **error_r)
{
	if (len > POP3C_SASL_RESPONSE_MAX || !base64_valid(response, len)) {
		*error_r = "SASL response is not base64 or too long";
		return -1;
	}
	return sasl_line(c, response, len, error_r);
}

int pop3c_sasl_cancel(struct pop3c *c, const char **error_r)
{
	return sasl_line(c, "*", 1, error_r);
}

/* ---------------------------------------------------------------- */
/* Input                                                             */

static void emit(struct pop3c *c, const struct pop3c_event *event)
{
	c->in_callback = true;
	c->callback(c->context, event);
	c->in_callback = false;
}

/* The status line in c->line is complete: match it to its command. */
static void status_line_done(struct pop3c *c)
{
	struct pop3c_reply reply;
	struct pop3c_event event = { .type = POP3C_EVENT_REPLY };
	const struct queued *q = queue_at(c, 0);

	if (pop3c_parse_reply_line(c->line, c->line_len, &reply) < 0) {
		fail(c, "malformed status line");
		return;
	}
	event.cmd = q->cmd;
	event.reply = &reply;
	if (reply.status == POP3C_CONTINUE) {
		if (q->cmd.type != POP3C_AUTH) {
			fail(c, "challenge (\"+ \") to a command other than "
				"AUTH");
			return;
		}
		if (c->sasl_awaiting) {
			fail(c, "second challenge before the client answered");
			return;
		}
		c->sasl_awaiting = true;
		c->line_len = 0;
		emit(c, &event);
		return;
	}
	c->sasl_awaiting = false;
	c->line_len = 0;
	if (reply.status == POP3C_OK && cmd_is_multiline(q->cmd.type)) {
		reply.multiline = true;
		c->state = INPUT_DATA;
		c->data_state = DATA_LINE_START;
		c->data_is_message = q->cmd.type == POP3C_RETR ||
				     q->cmd.type == POP3C_TOP;
		c->data_bytes = c->data_lines = c->data_bare_lf = 0;
		emit(c, &event);
		return;
	}
	/* Single-line: complete before the event, so the callback sees the
	   window open again. */
	if (reply.status == POP3C_OK && q->cmd.type == POP3C_STLS)
		c->state = INPUT_TLS_WAIT;
	if (q->cmd.type == POP3C_QUIT)
		c->state = INPUT_DONE;
	queue_pop(c);
	emit(c, &event);
}

/* Takes bytes of a status line up to its LF; returns how many were used. */
static size_t feed_status(struct pop3c *c, const unsigned char *p, size_t len)
{
	if (c->in_flight == 0) {
		fail(c, "server sent a reply with no command in flight");
		return 0;
	}
	const unsigned char *lf = memchr(p, '\n', len);
	size_t take = lf != NULL ? (size_t)(lf - p) : len;
	/* The buffer holds POP3C_LINE_MAX bytes and a CR. */
	if (take > sizeof(c->line) - c->line_len) {
		fail(c, "status line too long");
		return 0;
	}
	memcpy(c->line + c->line_len, p, take);
	c->line_len += take;
	if (lf == NULL)
		return take;
	if (c->line_len > 0 && c->line[c->line_len - 1] == '\r')
		c->line_len--;
	if (c->line_len > POP3C_LINE_MAX) {
		fail(c, "status line too long");
		return take;
	}
	status_line_done(c);
	return take + 1;
}

/* Hands out the buffered line (or piece of a long message line). */
static void data_flush(struct pop3c *c, bool line_end)
{
	struct pop3c_event event = {
		.type = POP3C_EVENT_DATA,
		.cmd = queue_at(c, 0)->cmd,
		.data = c->line,
		.len = c->line_len,
		.line_end = line_end,
	};

	emit(c, &event);
	c->line_len = 0;
}

/* Adds data bytes to the current line; a full buffer is handed out as a
   piece for a message, an error for a listing. */
static void data_append(struct pop3c *c, const unsigned char *p, size_t len)
{
	while (len > 0 && c->state == INPUT_DATA) {
		if (c->line_len == POP3C_LINE_MAX) {
			if (!c->data_is_message) {
				fail(c, "listing line too long");
				return;
			}
			data_flush(c, false);
		}
		size_t room = POP3C_LINE_MAX - c->line_len;
		size_t n = len < room ? len : room;
		memcpy(c->line + c->line_len, p, n);
		c->line_len += n;
		c->data_bytes += n;
		p += n;
		len -= n;
	}
}

static void data_line_end(struct pop3c *c, bool bare_lf)
{
	c->data_lines++;
	if (bare_lf)
		c->data_bare_lf++;
	c->data_state = DATA_LINE_START;
	data_flush(c, true);
}

/* The terminating "." line: the reply and its command are complete. */
static void data_terminator(struct pop3c *c)
{
	struct pop3c_event event = {
		.type = POP3C_EVENT_END,
		.cmd = queue_at(c, 0)->cmd,
		.octets = c->data_bytes + 2 * c->data_lines,
		.lines = c->data_lines,
		.bare_lf_lines = c->data_bare_lf,
	};

	c->state = INPUT_STATUS;
	c->line_len = 0;
	queue_pop(c);
	emit(c, &event);
}

/* One byte inside a line (not after a held CR). */
static void data_in_line_byte(struct pop3c *c, unsigned char b)
{
	c->data_state = DATA_IN_LINE;
	if (b == '\n')
		data_line_end(c, true);
	else if (b == '\r')
		c->data_state = DATA_CR;
	else
		data_append(c, &b, 1);
}

/* A CR held back turned out to be data. */
static void data_cr_was_data(struct pop3c *c, unsigned char next)
{
	static const unsigned char cr = '\r';

	data_append(c, &cr, 1);
	if (c->state == INPUT_DATA)
		data_in_line_byte(c, next);
}

/* The byte-by-byte state machine: line starts, dots, CRs. */
static void data_byte(struct pop3c *c, unsigned char b)
{
	switch (c->data_state) {
	case DATA_LINE_START:
		if (b == '.')
			c->data_state = DATA_DOT;
		else
			data_in_line_byte(c, b);
		return;
	case DATA_DOT:
		/* RFC 1939 section 3: a leading dot followed by more is
		   stuffing, and is dropped; alone, it ends the reply. */
		if (b == '\n')
			data_terminator(c);
		else if (b == '\r')
			c->data_state = DATA_DOT_CR;
		else
			data_in_line_byte(c, b);
		return;
	case DATA_DOT_CR:
		if (b == '\n')
			data_terminator(c);
		else
			data_cr_was_data(c, b);
		return;
	case DATA_IN_LINE:
		data_in_line_byte(c, b);
		return;
	case DATA_CR:
		if (b == '\n')
			data_line_end(c, false);
		else
			data_cr_was_data(c, b);
		return;
	}
}

/* Takes bytes of a multi-line reply; returns how many were used (less
   than len once the reply ended or failed). */
static size_t feed_data(struct pop3c *c, const unsigned char *p, size_t len)
{
	size_t i = 0;

	while (i < len && c->state == INPUT_DATA) {
		if (c->data_state == DATA_IN_LINE) {
			/* The common case: copy a run of plain bytes. */
			size_t start = i;
			while (i < len && p[i] != '\r' && p[i] != '\n')
				i++;
			data_append(c, p + start, i - start);
			if (i == len || c->state != INPUT_DATA)
				break;
		}
		data_byte(c, p[i]);
		i++;
	}
	return i;
}

int pop3c_input(struct pop3c *c, const void *data, size_t len,
		const char **error_r)
{
	const unsigned char *p = data;
	size_t i = 0;

	if (c->in_callback) {
		*error_r = "pop3c_input called from its own callback";
		return -1;
	}
	while (i < len) {
		switch (c->state) {
		case INPUT_STATUS:
			i += feed_status(c, p + i, len - i);
			break;
		case INPUT_DATA:
			i += feed_data(c, p + i, len - i);
			break;
		case INPUT_TLS_WAIT:
			fail(c, "server sent data after +OK to STLS, before "
				"the TLS handshake");
			break;
		case INPUT_DONE:
			return 0;
		case INPUT_FAILED:
			break;
		}
		if (c->state == INPUT_FAILED) {
			*error_r = c->error;
			return -1;
		}
	}
	if (c->state == INPUT_FAILED) {
		*error_r = c->error;
		return -1;
	}
	return 0;
}

int pop3c_eof(struct pop3c *c, const char **error_r)
{
	if (c->in_callback) {
		*error_r = "pop3c_eof called from its own callback";
		return -1;
	}
	switch (c->state) {
	case INPUT_DONE:
		return 0;
	case INPUT_FAILED:
		break;
	case INPUT_TLS_WAIT:
		fail(c, "connection closed before the TLS handshake");
		break;
	case INPUT_DATA:
		fail(c, "connection closed in the middle of a multi-line "
			"reply");
		break;
	case INPUT_STATUS:
		if (c->in_flight == 0 && c->line_len == 0)
			return 0;
		fail(c, c->line_len > 0 ? "connection closed in the middle of "
					  "a status line"
					: "connection closed with replies "
					  "outstanding");
		break;
	}
	*error_r = c->error;
	return -1;
}

void pop3c_tls_started(struct pop3c *c)
{
	/* Never from the callback: the rest of the chunk being parsed came
	   before the handshake. */
	if (c->state == INPUT_TLS_WAIT && !c->in_callback) {
		c->state = INPUT_STATUS;
		c->line_len = 0;
	}
}

bool pop3c_wants_tls(const struct pop3c *c)
{
	return c->state == INPUT_TLS_WAIT;
}

bool pop3c_quit_done(const struct pop3c *c)
{
	return c->state == INPUT_DONE;
}

bool pop3c_failed(const struct pop3c *c)
{
	return c->state == INPUT_FAILED;
}

size_t pop3c_in_flight(const struct pop3c *c)
{
	return c->in_flight;
}

size_t pop3c_waiting(const struct pop3c *c)
{
	return c->count - c->in_flight;
}

/* ---------------------------------------------------------------- */
/* Pure parsers                                                      */

/* Length of the status keyword at the start of line, or 0. */
static size_t status_prefix(const char *line, size_t len,
			    enum pop3c_status *status_r)
{
	if (len >= 3 && line[0] == '+' && ascii_upper(line[1]) == 'O' &&
	    ascii_upper(line[2]) == 'K') {
		*status_r = POP3C_OK;
		return 3;
	}
	if (len >= 4 && line[0] == '-' && ascii_upper(line[1]) == 'E' &&
	    ascii_upper(line[2]) == 'R' && ascii_upper(line[3]) == 'R') {
		*status_r = POP3C_ERR;
		return 4;
	}
	if (len >= 1 && line[0] == '+' && (len == 1 || line[1] == ' ')) {
		*status_r = POP3C_CONTINUE;
		return 1;
	}
	return 0;
}

static enum pop3c_code code_lookup(const char *code, size_t len)
{
	static const struct {
		const char *name;
		enum pop3c_code code;
	} known[] = {
		{ "IN-USE", POP3C_CODE_IN_USE },
		{ "LOGIN-DELAY", POP3C_CODE_LOGIN_DELAY },
		{ "SYS/TEMP", POP3C_CODE_SYS_TEMP },
		{ "SYS/PERM", POP3C_CODE_SYS_PERM },
		{ "AUTH", POP3C_CODE_AUTH },
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		size_t n = strlen(known[i].name);
		/* The code itself or a sub-level of it ("SYS/TEMP/x"). */
		if (len >= n && word_equals(code, n, known[i].name) &&
		    (len == n || code[n] == '/'))
			return known[i].code;
	}
	return POP3C_CODE_OTHER;
}

/* Takes "[CODE]" off the start of the reply text, if it is well formed. */
static void take_resp_code(struct pop3c_reply *r)
{
	const char *t = r->text;
	size_t len = r->text_len, end;

	if (len < 3 || t[0] != '[')
		return;
	for (end = 1; end < len && t[end] != ']'; end++) {
		unsigned char b = (unsigned char)t[end];
		if (b < 0x21 || b > 0x7e || b == '[' || end > RESP_CODE_MAX)
			return;
	}
	if (end == len || end == 1 || (end + 1 < len && t[end + 1] != ' '))
		return;
	r->code_text = t + 1;
	r->code_len = end - 1;
	r->code = code_lookup(r->code_text, r->code_len);
	end++;
	while (end < len && t[end] == ' ')
		end++;
	r->text = t + end;
	r->text_len = len - end;
}

int pop3c_parse_reply_line(const char *line, size_t len,
			   struct pop3c_reply *reply_r)
{
	struct pop3c_reply r = { .code = POP3C_CODE_NONE };
	size_t pos = status_prefix(line, len, &r.status);

	if (pos == 0)
		return -1;
	/* One space separates the status from the text (lenient: "+OK"
	   glued to its text is taken as well). */
	if (pos < len && line[pos] == ' ')
		pos++;
	r.text = line + pos;
	r.text_len = len - pos;
	if (r.status != POP3C_CONTINUE)
		take_resp_code(&r);
	*reply_r = r;
	return 0;
}

/* Splits the next space-separated word off s[*pos..len). */
static bool next_word(const char *s, size_t len, size_t *pos,
		      const char **word_r, size_t *word_len_r)
{
	size_t i = *pos;

	while (i < len && s[i] == ' ')
		i++;
	if (i == len)
		return false;
	size_t start = i;
	while (i < len && s[i] != ' ')
		i++;
	*word_r = s + start;
	*word_len_r = i - start;
	*pos = i;
	return true;
}

static int parse_u32(const char *s, size_t len, uint32_t *value_r)
{
	uint64_t v;

	if (strnum_parse_u64(s, len, UINT32_MAX, &v) < 0)
		return -1;
	*value_r = (uint32_t)v;
	return 0;
}

/* "N [USER]" or, if never_ok, "NEVER [USER]" (EXPIRE, LOGIN-DELAY). */
static int parse_days_user(const char *s, size_t len, size_t pos,
			   bool never_ok, bool *never_r, uint32_t *value_r,
			   bool *per_user_r)
{
	const char *w;
	size_t wlen;

	*never_r = false;
	*value_r = 0;
	*per_user_r = false;
	if (!next_word(s, len, &pos, &w, &wlen))
		return -1;
	if (never_ok && word_equals(w, wlen, "NEVER"))
		*never_r = true;
	else if (parse_u32(w, wlen, value_r) < 0)
		return -1;
	if (next_word(s, len, &pos, &w, &wlen)) {
		if (!word_equals(w, wlen, "USER"))
			return -1;
		*per_user_r = true;
	}
	return next_word(s, len, &pos, &w, &wlen) ? -1 : 0;
}

/* Appends the well-formed mechanism names of a SASL line. */
static void capa_sasl(struct pop3c_caps *caps, const char *s, size_t len,
		      size_t pos)
{
	const char *w;
	size_t wlen;

	caps->sasl = true;
	while (next_word(s, len, &pos, &w, &wlen)) {
		char name[POP3C_MECH_MAX + 1] = { 0 };
		size_t used = strlen(caps->sasl_mechs);

		if (!mech_valid(w, wlen))
			continue;
		for (size_t i = 0; i < wlen; i++)
			name[i] = ascii_upper(w[i]);
		name[wlen] = '\0';
		if (pop3c_caps_has_mech(caps, name))
			continue;
		/* a space (if not first), the name, the NUL */
		if (used + (used > 0) + wlen + 1 > sizeof(caps->sasl_mechs))
			return;
		if (used > 0)
			caps->sasl_mechs[used++] = ' ';
		memcpy(caps->sasl_mechs + used, name, wlen + 1);
	}
}

static void capa_implementation(struct pop3c_caps *caps, const char *s,
				size_t len, size_t pos)
{
	size_t n = 0;

	while (pos < len && s[pos] == ' ')
		pos++;
	for (; pos < len && n < POP3C_IMPLEMENTATION_MAX; pos++) {
		unsigned char b = (unsigned char)s[pos];
		if (b < 0x20 || b > 0x7e)
			b = '?';
		caps->implementation[n++] = (char)b;
	}
	caps->implementation[n] = '\0';
}

/* A capability with no arguments that matter: sets its flag. */
static bool capa_flag(struct pop3c_caps *caps, const char *w, size_t wlen)
{
	const struct {
		const char *name;
		bool *flag;
	} flags[] = {
		{ "TOP", &caps->top },
		{ "USER", &caps->user },
		{ "UIDL", &caps->uidl },
		{ "PIPELINING", &caps->pipelining },
		{ "STLS", &caps->stls },
		{ "RESP-CODES", &caps->resp_codes },
		{ "AUTH-RESP-CODE", &caps->auth_resp_code },
	};

	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		if (word_equals(w, wlen, flags[i].name)) {
			*flags[i].flag = true;
			return true;
		}
	}
	return false;
}

int pop3c_parse_capa_line(struct pop3c_caps *caps, const char *line,
			  size_t len, const char **error_r)
{
	const char *w;
	size_t wlen, pos = 0;
	bool never, per_user;
	uint32_t value;

	if (!next_word(line, len, &pos, &w, &wlen))
		return 0;
	if (capa_flag(caps, w, wlen))
		return 0;
	if (word_equals(w, wlen, "SASL")) {
		capa_sasl(caps, line, len, pos);
	} else if (word_equals(w, wlen, "IMPLEMENTATION")) {
		capa_implementation(caps, line, len, pos);
	} else if (word_equals(w, wlen, "EXPIRE")) {
		if (parse_days_user(line, len, pos, true, &never, &value,
				    &per_user) < 0) {
			*error_r = "bad EXPIRE capability";
			return -1;
		}
		caps->expire = never ? POP3C_EXPIRE_NEVER : POP3C_EXPIRE_DAYS;
		caps->expire_days = value;
		caps->expire_per_user = per_user;
	} else if (word_equals(w, wlen, "LOGIN-DELAY")) {
		if (parse_days_user(line, len, pos, false, &never, &value,
				    &per_user) < 0) {
			*error_r = "bad LOGIN-DELAY capability";
			return -1;
		}
		caps->login_delay = true;
		caps->login_delay_seconds = value;
		caps->login_delay_per_user = per_user;
	}
	return 0;
}

bool pop3c_caps_has_mech(const struct pop3c_caps *caps, const char *mech)
{
	const char *list = caps->sasl_mechs;
	size_t len = strnlen(list, sizeof(caps->sasl_mechs));
	size_t pos = 0, mlen = strlen(mech), wlen;
	const char *w;

	while (next_word(list, len, &pos, &w, &wlen)) {
		if (wlen != mlen)
			continue;
		size_t i = 0;
		while (i < wlen && w[i] == ascii_upper(mech[i]))
			i++;
		if (i == wlen)
			return true;
	}
	return false;
}

/* "N SP M" at the start of s, then the end or a space; returns the
   position after M, or 0 on error. */
static size_t parse_two_numbers(const char *s, size_t len, uint64_t max1,
				uint64_t *a_r, uint64_t *b_r)
{
	size_t i = 0, start;

	while (i < len && s[i] >= '0' && s[i] <= '9')
		i++;
	if (strnum_parse_u64(s, i, max1, a_r) < 0 || i == len || s[i] != ' ')
		return 0;
	start = ++i;
	while (i < len && s[i] >= '0' && s[i] <= '9')
		i++;
	if (strnum_parse_u64(s + start, i - start, UINT64_MAX, b_r) < 0)
		return 0;
	if (i < len && s[i] != ' ')
		return 0;
	return i;
}

int pop3c_parse_stat(const char *text, size_t len, uint32_t *count_r,
		     uint64_t *size_r)
{
	uint64_t count, size;

	if (parse_two_numbers(text, len, UINT32_MAX, &count, &size) == 0)
		return -1;
	*count_r = (uint32_t)count;
	*size_r = size;
	return 0;
}

int pop3c_parse_scan_listing(const char *line, size_t len, uint32_t *msg_r,
			     uint64_t *size_r)
{
	uint64_t msg, size;

	if (parse_two_numbers(line, len, UINT32_MAX, &msg, &size) == 0 ||
	    msg == 0)
		return -1;
	*msg_r = (uint32_t)msg;
	*size_r = size;
	return 0;
}

int pop3c_parse_uid_listing(const char *line, size_t len, uint32_t *msg_r,
			    char *uid_r, size_t *uid_len_r)
{
	size_t i = 0, start, end;
	uint64_t msg;

	while (i < len && line[i] >= '0' && line[i] <= '9')
		i++;
	if (strnum_parse_u64(line, i, UINT32_MAX, &msg) < 0 || msg == 0 ||
	    i == len || line[i] != ' ')
		return -1;
	start = ++i;
	while (i < len && (unsigned char)line[i] >= 0x21 &&
	       (unsigned char)line[i] <= 0x7e)
		i++;
	end = i;
	while (i < len && line[i] == ' ')
		i++;
	if (i != len || end == start || end - start > POP3C_UID_MAX)
		return -1;
	memcpy(uid_r, line + start, end - start);
	uid_r[end - start] = '\0';
	*uid_len_r = end - start;
	*msg_r = (uint32_t)msg;
	return 0;
}

/* Whether text[start..end] ('<' to '>') is a plausible msg-id. */
static bool timestamp_valid(const char *text, size_t start, size_t end)
{
	bool at = false;

	if (end - start + 1 > POP3C_TIMESTAMP_MAX || end - start < 2)
		return false;
	for (size_t i = start + 1; i < end; i++) {
		unsigned char b = (unsigned char)text[i];
		if (b < 0x21 || b > 0x7e || b == '<')
			return false;
		if (b == '@')
			at = true;
	}
	return at;
}

int pop3c_apop_timestamp(const char *text, size_t len, size_t *start_r,
			 size_t *len_r)
{
	for (size_t start = 0; start < len; start++) {
		if (text[start] != '<')
			continue;
		const char *gt = memchr(text + start, '>', len - start);
		if (gt == NULL)
			return -1;
		size_t end = (size_t)(gt - text);
		if (timestamp_valid(text, start, end)) {
			*start_r = start;
			*len_r = end - start + 1;
			return 0;
		}
	}
	return -1;
}
