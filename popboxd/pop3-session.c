/*
 * pop3-session.c — the POP3 protocol core (see pop3-session.h).
 *
 * One row per command in pop3_commands[]: the states it is allowed in, its
 * argument count, its handler.  State changes go through session_set_state()
 * only.  Handlers return true for a +OK and false for a -ERR caused by the
 * client, which counts towards max_bad_commands in a row.
 */
#include "pop3-session.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "log.h"
#include "pop3-parse.h"
#include "reply-line.h"
#include "strnum.h"

/* A user name never needs more; longer ones are refused at USER. */
#define POP3_USER_MAX 255
/* APOP digest: MD5 in hex (RFC 1939 section 7). */
#define POP3_APOP_DIGEST_LEN 32
/* Listing output is staged in chunks of this size, not one write a line. */
#define POP3_OUT_CHUNK 4096

struct pop3_session {
	const struct pop3_config *cfg;
	pop3_output_fn *output;
	void *context;
	enum pop3_state state;
	struct pop3_action action;
	bool discarding;       /* inside an over-long line */
	bool have_user;        /* USER was accepted, PASS may follow */
	bool message_begun;    /* SEND_MESSAGE's +OK line is out */
	bool tls_active;       /* implicit TLS, or STLS done */
	bool user_allowed;     /* USER/PASS accepted: TLS or cleartext_ok */
	bool in_auth;          /* AUTH exchange open: lines are answers */
	uint8_t *sasl_buf;     /* SASL_CLIENT_MAX, during AUTH only; wiped */
	enum sasl_mech auth_mech;
	enum pop3_cmd sending; /* RETR or TOP, while SEND_MESSAGE is pending */
	unsigned int bad_commands;
	bool own_expire;       /* user_expire_days was set at login */
	int user_expire_days;  /* the account's EXPIRE, -1 = NEVER */
	const struct mailmsg *msgs;
	size_t count;
	uint8_t *deleted;      /* count bytes, set by DELE */
	size_t live_count;     /* messages not marked deleted */
	uint64_t live_octets;
	struct pop3_session_stats stats;
	char user[POP3_USER_MAX + 1];
	char secret[POP3_LINE_MAX]; /* pending password or digest; wiped */
};

/* ---- output ---- */

static void out_write(struct pop3_session *s, const char *data, size_t len)
{
	s->output(s->context, data, len);
}

static void out_printf(struct pop3_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void out_printf(struct pop3_session *s, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	reply_line_vprintf(s->output, s->context, fmt, args);
	va_end(args);
}

/* Staging for multi-line listings: one output call per few KiB. */
struct out_chunk {
	char buf[POP3_OUT_CHUNK];
	size_t used;
};

static void chunk_flush(struct pop3_session *s, struct out_chunk *c)
{
	if (c->used > 0)
		out_write(s, c->buf, c->used);
	c->used = 0;
}

static void chunk_line(struct pop3_session *s, struct out_chunk *c,
		       const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void chunk_line(struct pop3_session *s, struct out_chunk *c,
		       const char *fmt, ...)
{
	va_list args;
	int n;

	/* A listing line is at most "n uidl\r\n": 20 + 1 + 70 + 2 octets. */
	if (sizeof(c->buf) - c->used < 128)
		chunk_flush(s, c);
	va_start(args, fmt);
	n = vsnprintf(c->buf + c->used, sizeof(c->buf) - c->used - 2, fmt, args);
	va_end(args);
	if (n < 0 || (size_t)n >= sizeof(c->buf) - c->used - 2)
		return;
	c->used += (size_t)n;
	memcpy(c->buf + c->used, "\r\n", 2);
	c->used += 2;
}

/* ---- state ---- */

const char *pop3_state_name(enum pop3_state state)
{
	static const char *const names[] = {
		"AUTHORIZATION", "TRANSACTION", "UPDATE", "CLOSED"
	};
	return state <= POP3_STATE_CLOSED ? names[state] : "?";
}

static void session_set_state(struct pop3_session *s, enum pop3_state state)
{
	log_debug("pop3 state %s -> %s", pop3_state_name(s->state),
		  pop3_state_name(state));
	s->state = state;
}

static void session_close(struct pop3_session *s)
{
	session_set_state(s, POP3_STATE_CLOSED);
	memset(&s->action, 0, sizeof(s->action));
	s->action.type = POP3_ACTION_CLOSE;
}

static void session_wipe_secret(struct pop3_session *s)
{
	explicit_bzero(s->secret, sizeof(s->secret));
	s->action.password = NULL;
	s->action.apop_digest = NULL;
}

/* Ends an AUTH exchange however it ended; its decoded data is wiped. */
static void auth_end(struct pop3_session *s)
{
	if (s->sasl_buf != NULL) {
		explicit_bzero(s->sasl_buf, SASL_CLIENT_MAX);
		free(s->sasl_buf);
		s->sasl_buf = NULL;
	}
	s->in_auth = false;
	s->action.sasl_data = NULL;
}

static void bad_command(struct pop3_session *s, const char *text)
{
	out_printf(s, "-ERR %s", text);
	if (++s->bad_commands >= s->cfg->max_bad_commands)
		session_close(s);
}

/* ---- message numbers ---- */

/* Parses a message number argument; on failure writes the -ERR. */
static bool msg_arg(struct pop3_session *s, const char *arg, size_t len,
		    size_t *index_r)
{
	uint64_t n;

	if (strnum_parse_u64(arg, len, SIZE_MAX, &n) < 0) {
		bad_command(s, "invalid message number");
		return false;
	}
	if (n == 0 || n > s->count) {
		bad_command(s, "no such message");
		return false;
	}
	if (s->deleted[n - 1]) {
		bad_command(s, "message already deleted");
		return false;
	}
	*index_r = (size_t)(n - 1);
	return true;
}

/* ---- AUTHORIZATION ---- */

static bool cmd_user(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (!s->user_allowed) {
		/* Refused before PASS, so the password is never sent. */
		bad_command(s, s->cfg->stls ?
			    "[AUTH] plaintext login refused here: use STLS first" :
			    "[AUTH] plaintext login refused here: use TLS");
		return false;
	}
	if (cmd->arglen[0] > POP3_USER_MAX) {
		bad_command(s, "user name too long");
		return false;
	}
	memcpy(s->user, cmd->argv[0], cmd->arglen[0]);
	s->user[cmd->arglen[0]] = '\0';
	s->have_user = true;
	out_printf(s, "+OK send PASS");
	return true;
}

static void start_login(struct pop3_session *s)
{
	memset(&s->action, 0, sizeof(s->action));
	s->action.type = POP3_ACTION_LOGIN;
	s->action.user = s->user;
}

static bool cmd_pass(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (!s->have_user) {
		bad_command(s, "send USER first");
		return false;
	}
	/* rest_len < POP3_LINE_MAX: the line fit in the line limit. */
	memcpy(s->secret, cmd->rest, cmd->rest_len);
	s->secret[cmd->rest_len] = '\0';
	start_login(s);
	s->action.password = s->secret;
	return true;
}

static bool is_hex(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		      (c >= 'A' && c <= 'F')))
			return false;
	}
	return true;
}

static bool cmd_apop(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (!s->cfg->apop) {
		bad_command(s, "APOP is not enabled here");
		return false;
	}
	if (cmd->arglen[0] > POP3_USER_MAX) {
		bad_command(s, "user name too long");
		return false;
	}
	if (cmd->arglen[1] != POP3_APOP_DIGEST_LEN ||
	    !is_hex(cmd->argv[1], cmd->arglen[1])) {
		bad_command(s, "APOP digest must be 32 hex digits");
		return false;
	}
	memcpy(s->user, cmd->argv[0], cmd->arglen[0]);
	s->user[cmd->arglen[0]] = '\0';
	memcpy(s->secret, cmd->argv[1], POP3_APOP_DIGEST_LEN);
	s->secret[POP3_APOP_DIGEST_LEN] = '\0';
	s->have_user = false;
	start_login(s);
	s->action.apop_digest = s->secret;
	return true;
}

/* ---- AUTH (RFC 5034) ---- */

/* PLAIN and LOGIN carry the password itself: they follow the rules of
   USER/PASS.  SCRAM proves knowledge of it without sending it. */
static bool mech_sends_password(enum sasl_mech mech)
{
	return mech == SASL_MECH_PLAIN || mech == SASL_MECH_LOGIN;
}

static bool mech_offered(const struct pop3_session *s, enum sasl_mech mech)
{
	return (s->cfg->sasl_mechs & (1u << mech)) != 0 &&
	       (s->user_allowed || !mech_sends_password(mech));
}

/* Writes the offered mechanism names, space-separated, into buf. */
static void mech_list(const struct pop3_session *s, char *buf, size_t size,
		      const char *sep)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int m = 0; m < SASL_MECH_COUNT; m++) {
		if (!mech_offered(s, (enum sasl_mech)m))
			continue;
		int n = snprintf(buf + used, size - used, "%s%s",
				 used > 0 ? sep : "", sasl_mech_name((enum sasl_mech)m));
		if (n < 0 || (size_t)n >= size - used)
			break;
		used += (size_t)n;
	}
}

/* Decodes one base64 client message into sasl_buf and raises AUTH_STEP.
   False (and the -ERR written) when it is not canonical base64. */
static bool auth_step(struct pop3_session *s, const char *b64, size_t len)
{
	size_t decoded = 0;
	size_t pad = (len > 0 && b64[len - 1] == '=') + (len > 1 && b64[len - 2] == '=');

	if (len % 4 == 0 && len / 4 * 3 - pad > SASL_CLIENT_MAX) {
		auth_end(s);
		bad_command(s, "authentication answer too long");
		return false;
	}
	if (base64_decode(b64, len, s->sasl_buf, SASL_CLIENT_MAX, &decoded) < 0) {
		auth_end(s);
		bad_command(s, "invalid base64 in authentication exchange");
		return false;
	}
	s->action.type = POP3_ACTION_AUTH_STEP;
	s->action.sasl_data = s->sasl_buf;
	s->action.sasl_len = decoded;
	return true;
}

static bool cmd_auth(struct pop3_session *s, const struct pop3_command *cmd)
{
	char names[128];
	enum sasl_mech mech;

	if (cmd->argc == 0) {
		/* The mechanism list many clients ask for before CAPA
		   existed (RFC 1734 era); the same as CAPA's SASL line. */
		struct out_chunk c;
		c.used = 0;
		chunk_line(s, &c, "+OK supported mechanisms follow");
		mech_list(s, names, sizeof(names), "\r\n");
		if (names[0] != '\0')
			chunk_line(s, &c, "%s", names);
		chunk_line(s, &c, ".");
		chunk_flush(s, &c);
		return true;
	}
	if (!sasl_mech_from_name(cmd->argv[0], cmd->arglen[0], &mech) ||
	    (s->cfg->sasl_mechs & (1u << mech)) == 0) {
		bad_command(s, "unsupported authentication mechanism");
		return false;
	}
	if (!mech_offered(s, mech)) {
		bad_command(s, s->cfg->stls ?
			    "[AUTH] plaintext authentication refused here: use STLS first" :
			    "[AUTH] plaintext authentication refused here: use TLS");
		return false;
	}
	s->sasl_buf = malloc(SASL_CLIENT_MAX);
	if (s->sasl_buf == NULL) {
		out_printf(s, "-ERR [SYS/TEMP] out of memory, try later");
		return true;
	}
	s->have_user = false;
	s->in_auth = true;
	s->auth_mech = mech;
	memset(&s->action, 0, sizeof(s->action));
	s->action.sasl_mech = mech;
	s->action.sasl_first = true;
	if (cmd->argc == 1) {
		s->action.type = POP3_ACTION_AUTH_STEP;
		return true;
	}
	/* RFC 5034 section 4: "=" is an empty initial response. */
	if (cmd->arglen[1] == 1 && cmd->argv[1][0] == '=')
		return auth_step(s, "", 0);
	return auth_step(s, cmd->argv[1], cmd->arglen[1]);
}

/* A line inside an AUTH exchange: "*" cancels, anything else is base64. */
static void auth_answer(struct pop3_session *s, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		auth_end(s);
		bad_command(s, "authentication cancelled");
		return;
	}
	memset(&s->action, 0, sizeof(s->action));
	s->action.sasl_mech = s->auth_mech;
	if (auth_step(s, line, len))
		s->bad_commands = 0;
}

/*
 * RFC 2449 section 6.7 (EXPIRE; "possible differences: yes", so the two
 * states may announce different values) and section 9, where USER may
 * follow a number and never NEVER.  Before login the account is unknown
 * and its passwd-file entry may carry its own expire_days, so a numeric
 * site default goes out as "EXPIRE n USER": the client asks again after
 * login.  A default of NEVER has no USER form and goes out as is; it is
 * the site's policy for every account without its own expire_days.  After
 * login: the account's own value, exactly, without USER.
 */
static void capa_expire(struct pop3_session *s, struct out_chunk *c)
{
	bool before_login = s->state == POP3_STATE_AUTHORIZATION;
	int days = !before_login && s->own_expire ? s->user_expire_days :
		   s->cfg->expire_days;

	if (days < 0)
		chunk_line(s, c, "EXPIRE NEVER");
	else if (before_login)
		chunk_line(s, c, "EXPIRE %d USER", days);
	else
		chunk_line(s, c, "EXPIRE %d", days);
}

static bool cmd_capa(struct pop3_session *s, const struct pop3_command *cmd)
{
	struct out_chunk c;
	(void)cmd;

	c.used = 0;
	chunk_line(s, &c, "+OK capability list follows");
	chunk_line(s, &c, "TOP");
	if (s->user_allowed)
		chunk_line(s, &c, "USER");
	if (s->state == POP3_STATE_AUTHORIZATION) {
		char names[128];
		mech_list(s, names, sizeof(names), " ");
		if (names[0] != '\0')
			chunk_line(s, &c, "SASL %s", names);
	}
	chunk_line(s, &c, "UIDL");
	chunk_line(s, &c, "RESP-CODES");
	chunk_line(s, &c, "AUTH-RESP-CODE");
	chunk_line(s, &c, "PIPELINING");
	/* RFC 2595 section 4: only where STLS would be accepted. */
	if (s->cfg->stls && !s->tls_active &&
	    s->state == POP3_STATE_AUTHORIZATION)
		chunk_line(s, &c, "STLS");
	capa_expire(s, &c);
	if (s->cfg->login_delay > 0)
		chunk_line(s, &c, "LOGIN-DELAY %u", s->cfg->login_delay);
	chunk_line(s, &c, "IMPLEMENTATION %s", s->cfg->implementation);
	chunk_line(s, &c, ".");
	chunk_flush(s, &c);
	return true;
}

static bool cmd_quit(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	if (s->state == POP3_STATE_AUTHORIZATION) {
		out_printf(s, "+OK popbox signing off");
		session_close(s);
		return true;
	}
	s->stats.marked = (unsigned int)(s->count - s->live_count);
	if (s->stats.marked == 0) {
		out_printf(s, "+OK popbox signing off (%zu messages left)",
			   s->count);
		session_close(s);
		return true;
	}
	session_set_state(s, POP3_STATE_UPDATE);
	memset(&s->action, 0, sizeof(s->action));
	s->action.type = POP3_ACTION_COMMIT;
	s->action.deleted = s->deleted;
	s->action.count = s->count;
	return true;
}

static bool cmd_stls(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	if (!s->cfg->stls) {
		bad_command(s, "STLS is not available here");
		return false;
	}
	if (s->tls_active) {
		bad_command(s, "TLS is already active");
		return false;
	}
	out_printf(s, "+OK begin TLS negotiation");
	s->have_user = false;
	memset(&s->action, 0, sizeof(s->action));
	s->action.type = POP3_ACTION_START_TLS;
	return true;
}

/* ---- TRANSACTION ---- */

static bool cmd_stat(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	out_printf(s, "+OK %zu %" PRIu64, s->live_count, s->live_octets);
	return true;
}

static bool cmd_list_or_uidl(struct pop3_session *s,
			     const struct pop3_command *cmd, bool uidl)
{
	struct out_chunk c;
	size_t i;

	if (cmd->argc == 1) {
		if (!msg_arg(s, cmd->argv[0], cmd->arglen[0], &i))
			return false;
		if (uidl)
			out_printf(s, "+OK %zu %s", i + 1, s->msgs[i].uidl);
		else
			out_printf(s, "+OK %zu %" PRIu64, i + 1,
				   s->msgs[i].wire_size);
		return true;
	}
	c.used = 0;
	if (uidl)
		chunk_line(s, &c, "+OK unique-id listing follows");
	else
		chunk_line(s, &c, "+OK %zu messages (%" PRIu64 " octets)",
			   s->live_count, s->live_octets);
	for (i = 0; i < s->count; i++) {
		if (s->deleted[i])
			continue;
		if (uidl)
			chunk_line(s, &c, "%zu %s", i + 1, s->msgs[i].uidl);
		else
			chunk_line(s, &c, "%zu %" PRIu64, i + 1,
				   s->msgs[i].wire_size);
	}
	chunk_line(s, &c, ".");
	chunk_flush(s, &c);
	return true;
}

static bool cmd_list(struct pop3_session *s, const struct pop3_command *cmd)
{
	return cmd_list_or_uidl(s, cmd, false);
}

static bool cmd_uidl(struct pop3_session *s, const struct pop3_command *cmd)
{
	return cmd_list_or_uidl(s, cmd, true);
}

static void start_send(struct pop3_session *s, enum pop3_cmd which,
		       size_t index, int64_t max_body_lines)
{
	memset(&s->action, 0, sizeof(s->action));
	s->action.type = POP3_ACTION_SEND_MESSAGE;
	s->action.index = index;
	s->action.max_body_lines = max_body_lines;
	s->sending = which;
	s->message_begun = false;
}

static bool cmd_retr(struct pop3_session *s, const struct pop3_command *cmd)
{
	size_t i;

	if (!msg_arg(s, cmd->argv[0], cmd->arglen[0], &i))
		return false;
	start_send(s, POP3_CMD_RETR, i, -1);
	return true;
}

static bool cmd_top(struct pop3_session *s, const struct pop3_command *cmd)
{
	uint64_t lines;
	size_t i;

	if (!msg_arg(s, cmd->argv[0], cmd->arglen[0], &i))
		return false;
	if (strnum_parse_u64(cmd->argv[1], cmd->arglen[1], INT64_MAX, &lines) < 0) {
		bad_command(s, "invalid line count");
		return false;
	}
	start_send(s, POP3_CMD_TOP, i, (int64_t)lines);
	return true;
}

static bool cmd_dele(struct pop3_session *s, const struct pop3_command *cmd)
{
	size_t i;

	if (!msg_arg(s, cmd->argv[0], cmd->arglen[0], &i))
		return false;
	s->deleted[i] = 1;
	s->live_count--;
	s->live_octets -= s->msgs[i].wire_size;
	out_printf(s, "+OK message %zu deleted", i + 1);
	return true;
}

static void count_live(struct pop3_session *s)
{
	s->live_count = 0;
	s->live_octets = 0;
	for (size_t i = 0; i < s->count; i++) {
		if (s->deleted[i])
			continue;
		s->live_count++;
		s->live_octets += s->msgs[i].wire_size;
	}
}

static bool cmd_rset(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	memset(s->deleted, 0, s->count);
	count_live(s);
	out_printf(s, "+OK maildrop has %zu messages (%" PRIu64 " octets)",
		   s->live_count, s->live_octets);
	return true;
}

static bool cmd_noop(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	out_printf(s, "+OK");
	return true;
}

/* ---- the command table ---- */

#define IN_AUTH (1u << POP3_STATE_AUTHORIZATION)
#define IN_TRANS (1u << POP3_STATE_TRANSACTION)

struct pop3_command_row {
	unsigned int states;
	unsigned int min_args, max_args;
	bool (*handler)(struct pop3_session *s, const struct pop3_command *cmd);
};

static const struct pop3_command_row pop3_commands[POP3_CMD_COUNT] = {
	[POP3_CMD_USER] = { IN_AUTH, 1, 1, cmd_user },
	[POP3_CMD_PASS] = { IN_AUTH, 1, 1, cmd_pass },
	[POP3_CMD_APOP] = { IN_AUTH, 2, 2, cmd_apop },
	[POP3_CMD_CAPA] = { IN_AUTH | IN_TRANS, 0, 0, cmd_capa },
	[POP3_CMD_QUIT] = { IN_AUTH | IN_TRANS, 0, 0, cmd_quit },
	[POP3_CMD_STLS] = { IN_AUTH, 0, 0, cmd_stls },
	[POP3_CMD_AUTH] = { IN_AUTH, 0, 2, cmd_auth },
	[POP3_CMD_STAT] = { IN_TRANS, 0, 0, cmd_stat },
	[POP3_CMD_LIST] = { IN_TRANS, 0, 1, cmd_list },
	[POP3_CMD_UIDL] = { IN_TRANS, 0, 1, cmd_uidl },
	[POP3_CMD_RETR] = { IN_TRANS, 1, 1, cmd_retr },
	[POP3_CMD_TOP] = { IN_TRANS, 2, 2, cmd_top },
	[POP3_CMD_DELE] = { IN_TRANS, 1, 1, cmd_dele },
	[POP3_CMD_RSET] = { IN_TRANS, 0, 0, cmd_rset },
	[POP3_CMD_NOOP] = { IN_TRANS, 0, 0, cmd_noop },
};

static void handle_line(struct pop3_session *s, const char *line, size_t len)
{
	struct pop3_command cmd;
	enum pop3_parse_error error = pop3_parse_line(line, len, &cmd);

	if (error != POP3_PARSE_OK) {
		bad_command(s, pop3_parse_error_text(error));
		return;
	}
	const struct pop3_command_row *row = &pop3_commands[cmd.cmd];
	if ((row->states & (1u << s->state)) == 0) {
		bad_command(s, s->state == POP3_STATE_AUTHORIZATION ?
			    "command not valid before login" :
			    "command not valid after login");
		return;
	}
	if (cmd.argc < row->min_args || cmd.argc > row->max_args) {
		bad_command(s, "wrong number of arguments");
		return;
	}
	if (row->handler(s, &cmd))
		s->bad_commands = 0;
}

/* ---- public ---- */

static struct pop3_session *session_alloc(const struct pop3_config *cfg,
					   pop3_output_fn *output, void *context)
{
	struct pop3_session *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->cfg = cfg;
	s->output = output;
	s->context = context;
	s->state = POP3_STATE_AUTHORIZATION;
	s->tls_active = cfg->tls;
	return s;
}

struct pop3_session *pop3_session_new(const struct pop3_config *cfg,
				      pop3_output_fn *output, void *context)
{
	struct pop3_session *s = session_alloc(cfg, output, context);

	if (s == NULL)
		return NULL;
	s->user_allowed = cfg->tls || cfg->cleartext_ok;
	if (cfg->apop && cfg->apop_timestamp != NULL)
		out_printf(s, "+OK popbox ready %s", cfg->apop_timestamp);
	else
		out_printf(s, "+OK popbox ready");
	return s;
}

struct pop3_session *pop3_session_new_authenticated(const struct pop3_config *cfg,
						   pop3_output_fn *output,
						   void *context)
{
	struct pop3_session *s = session_alloc(cfg, output, context);

	if (s == NULL)
		return NULL;
	s->user_allowed = true;
	s->action.type = POP3_ACTION_LOGIN;
	return s;
}

void pop3_session_free(struct pop3_session **session)
{
	struct pop3_session *s = *session;

	if (s == NULL)
		return;
	explicit_bzero(s->secret, sizeof(s->secret));
	auth_end(s);
	free(s->deleted);
	free(s);
	*session = NULL;
}

size_t pop3_session_input(struct pop3_session *s, const void *data, size_t len)
{
	const char *p = data;
	const char *lf;
	size_t limit = s->in_auth ? POP3_SASL_LINE_MAX : POP3_LINE_MAX;

	if (s->action.type != POP3_ACTION_NONE || s->state == POP3_STATE_CLOSED)
		return 0;
	if (s->discarding) {
		lf = memchr(p, '\n', len);
		if (lf == NULL)
			return len;
		s->discarding = false;
		if (s->in_auth) {
			auth_end(s);
			bad_command(s, "authentication answer too long");
		} else {
			bad_command(s, "line too long");
		}
		return (size_t)(lf - p) + 1;
	}
	lf = memchr(p, '\n', len < limit ? len : limit);
	if (lf == NULL) {
		if (len < limit)
			return 0;
		/* No end within the limit: drop the first `limit` bytes, and
		   the rest of the line as it arrives.  Never more: the bytes
		   after the line's end are the next commands. */
		s->discarding = true;
		return limit;
	}
	size_t line_len = (size_t)(lf - p);
	if (line_len > 0 && p[line_len - 1] == '\r')
		line_len--;
	if (s->in_auth)
		auth_answer(s, p, line_len);
	else
		handle_line(s, p, line_len);
	return (size_t)(lf - p) + 1;
}

const struct pop3_action *pop3_session_action(const struct pop3_session *s)
{
	return &s->action;
}

static void login_succeeded(struct pop3_session *s, const struct mailmsg *msgs,
			    size_t count)
{
	/* One byte more so that an empty maildrop still gets a pointer. */
	s->deleted = calloc(count + 1, 1);
	if (s->deleted == NULL) {
		out_printf(s, "-ERR [SYS/TEMP] out of memory, try later");
		session_close(s);
		return;
	}
	s->msgs = msgs;
	s->count = count;
	count_live(s);
	session_set_state(s, POP3_STATE_TRANSACTION);
	out_printf(s, "+OK maildrop has %zu messages (%" PRIu64 " octets)",
		   s->live_count, s->live_octets);
}

/* RFC 3206 [AUTH]: the credential, or what it may be used for. */
static const char *login_failure_text(enum pop3_login_result result)
{
	switch (result) {
	case POP3_LOGIN_MALFORMED:
		return "-ERR [AUTH] authentication exchange failed";
	case POP3_LOGIN_DISABLED:
		return "-ERR [AUTH] POP access is disabled for this account";
	default:
		return "-ERR [AUTH] invalid user name or password";
	}
}

void pop3_session_set_expire(struct pop3_session *s, int expire_days)
{
	s->own_expire = true;
	s->user_expire_days = expire_days < 0 ? -1 : expire_days;
}

void pop3_session_login_done(struct pop3_session *s,
			     enum pop3_login_result result,
			     const struct mailmsg *msgs, size_t count)
{
	session_wipe_secret(s);
	s->have_user = false;
	memset(&s->action, 0, sizeof(s->action));
	switch (result) {
	case POP3_LOGIN_OK:
		login_succeeded(s, msgs, count);
		return;
	case POP3_LOGIN_AUTH_FAILED:
	case POP3_LOGIN_MALFORMED:
	case POP3_LOGIN_DISABLED:
		out_printf(s, "%s", login_failure_text(result));
		if (++s->stats.auth_failures >= s->cfg->max_auth_failures)
			session_close(s);
		return;
	case POP3_LOGIN_IN_USE:
		out_printf(s, "-ERR [IN-USE] maildrop is in use by another session");
		return;
	case POP3_LOGIN_DELAYED:
		out_printf(s, "-ERR [LOGIN-DELAY] logged in too recently, wait %u seconds",
			   s->cfg->login_delay);
		return;
	case POP3_LOGIN_SYS_TEMP:
		out_printf(s, "-ERR [SYS/TEMP] maildrop temporarily unavailable, try later");
		return;
	case POP3_LOGIN_SYS_PERM:
		out_printf(s, "-ERR [SYS/PERM] maildrop unavailable, contact the administrator");
		return;
	}
}

void pop3_session_auth_challenge(struct pop3_session *s, const void *challenge,
				 size_t len)
{
	size_t b64_len = base64_encoded_len(len);
	char *line = malloc(b64_len + 4);

	explicit_bzero(s->sasl_buf, SASL_CLIENT_MAX);
	memset(&s->action, 0, sizeof(s->action));
	if (line == NULL) {
		auth_end(s);
		out_printf(s, "-ERR [SYS/TEMP] out of memory, try later");
		return;
	}
	line[0] = '+';
	line[1] = ' ';
	base64_encode(challenge, len, line + 2);
	memcpy(line + 2 + b64_len, "\r\n", 2);
	out_write(s, line, b64_len + 4);
	free(line);
}

void pop3_session_auth_done(struct pop3_session *s,
			    enum pop3_login_result result, const char *user,
			    const struct mailmsg *msgs, size_t count)
{
	auth_end(s);
	if (result == POP3_LOGIN_OK) {
		size_t len = user != NULL ? strlen(user) : 0;
		if (len > POP3_USER_MAX)
			len = POP3_USER_MAX;
		memcpy(s->user, user != NULL ? user : "", len);
		s->user[len] = '\0';
	}
	pop3_session_login_done(s, result, msgs, count);
}

bool pop3_session_in_auth(const struct pop3_session *s)
{
	return s->in_auth;
}

void pop3_session_message_begin(struct pop3_session *s)
{
	const struct mailmsg *m = &s->msgs[s->action.index];

	s->message_begun = true;
	if (s->sending == POP3_CMD_RETR)
		out_printf(s, "+OK %" PRIu64 " octets", m->wire_size);
	else
		out_printf(s, "+OK top of message follows");
}

void pop3_session_message_done(struct pop3_session *s,
			       enum pop3_send_result result)
{
	bool begun = s->message_begun;

	memset(&s->action, 0, sizeof(s->action));
	s->message_begun = false;
	if (begun && result == POP3_SEND_OK) {
		s->stats.retrieved++;
		return;
	}
	if (begun || result == POP3_SEND_ABORTED || result == POP3_SEND_OK) {
		/* A response cut short cannot be repaired: close. */
		session_close(s);
		return;
	}
	if (result == POP3_SEND_GONE)
		out_printf(s, "-ERR [SYS/PERM] message was removed by another program");
	else
		out_printf(s, "-ERR [SYS/TEMP] message could not be read, try later");
}

void pop3_session_commit_done(struct pop3_session *s, bool ok, size_t removed)
{
	s->stats.removed = removed;
	if (ok)
		out_printf(s, "+OK popbox signing off (%zu messages deleted)",
			   removed);
	else
		out_printf(s, "-ERR [SYS/TEMP] some deleted messages were not removed");
	session_close(s);
}

void pop3_session_tls_started(struct pop3_session *s)
{
	memset(&s->action, 0, sizeof(s->action));
	s->tls_active = true;
	s->user_allowed = true;
	s->have_user = false;
}

void pop3_session_abort(struct pop3_session *s, const char *reason)
{
	if (s->state == POP3_STATE_CLOSED)
		return;
	session_wipe_secret(s);
	auth_end(s);
	if (reason != NULL)
		out_printf(s, "-ERR %s", reason);
	session_close(s);
}

enum pop3_state pop3_session_state(const struct pop3_session *s)
{
	return s->state;
}

const char *pop3_session_user(const struct pop3_session *s)
{
	return s->deleted != NULL ? s->user : NULL;
}

const struct pop3_session_stats *pop3_session_stats(const struct pop3_session *s)
{
	return &s->stats;
}
