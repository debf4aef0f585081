/*
 * lmtp-session.c — the LMTP protocol core (see lmtp-session.h).
 *
 * One row per command in lmtp_commands[]: its name, the states it is
 * allowed in, its handler.  State changes go through session_set_state()
 * only.  Handlers return true when the command was acceptable and false
 * for an error the client caused, which counts towards max_bad_commands
 * in a row.  In DATA, a small scanner (enum data_scan) undoes the dot
 * stuffing byte by byte, so a line of any length costs no memory.
 */
#include "lmtp-session.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "passdb.h"
#include "reply-line.h"
#include "strnum.h"

/* Where the data scanner is within a line of the message. */
enum data_scan {
	SCAN_LINE_START,  /* after a LF (or at the start) */
	SCAN_DOT,         /* a '.' at the start of a line: held back */
	SCAN_DOT_CR,      /* ".\r" at the start of a line: held back */
	SCAN_MIDDLE,      /* anywhere else */
};

struct lmtp_session {
	const struct lmtp_config *cfg;
	lmtp_output_fn *output;
	void *context;
	enum lmtp_state state;
	struct lmtp_action action;
	bool discarding;       /* inside an over-long command line */
	unsigned int bad_commands;
	/* The transaction: MAIL's reverse path, the accepted recipients. */
	char sender[LMTP_ADDRESS_MAX + 1];
	uint64_t size_hint;
	char *rcpts[LMTP_MAX_RECIPIENTS];
	size_t rcpt_count;
	/* RCPT being looked up: its address (moved to rcpts[] when accepted)
	   and the user names to try. */
	char *pending_rcpt;
	char candidates[LMTP_CANDIDATES_MAX][LMTP_ADDRESS_MAX + 1];
	size_t candidate_count, candidate_next;
	/* DATA */
	uint8_t *chunk;        /* LMTP_CHUNK_MAX bytes, during DATA only */
	size_t chunk_len;
	uint64_t data_size;    /* message bytes so far, unstuffed */
	enum data_scan scan;
	bool data_ended;       /* the final "." was seen */
	bool too_big;          /* over size_limit: read on, pass nothing on */
	size_t results_given;  /* DATA_END: recipients answered so far */
};

/* ---- output ---- */

static void out_printf(struct lmtp_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* One reply line (lib/reply-line.h): over-long text is cut, and the only
   client text in a reply is a checked address, which fits. */
static void out_printf(struct lmtp_session *s, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	reply_line_vprintf(s->output, s->context, fmt, args);
	va_end(args);
}

/* ---- state ---- */

const char *lmtp_state_name(enum lmtp_state state)
{
	static const char *const names[] = {
		"GREETED", "READY", "MAIL", "DATA", "CLOSED"
	};
	return state <= LMTP_STATE_CLOSED ? names[state] : "?";
}

static void session_set_state(struct lmtp_session *s, enum lmtp_state state)
{
	log_debug("lmtp state %s -> %s", lmtp_state_name(s->state),
		  lmtp_state_name(state));
	s->state = state;
}

static void action_clear(struct lmtp_session *s)
{
	memset(&s->action, 0, sizeof(s->action));
}

static void data_buffer_free(struct lmtp_session *s)
{
	free(s->chunk);
	s->chunk = NULL;
	s->chunk_len = 0;
}

/* Forgets the transaction; true if recipients were accepted (then the
   caller has deliveries open, which a RESET action makes it drop). */
static bool transaction_clear(struct lmtp_session *s)
{
	bool had_recipients = s->rcpt_count > 0;

	for (size_t i = 0; i < s->rcpt_count; i++)
		free(s->rcpts[i]);
	s->rcpt_count = 0;
	free(s->pending_rcpt);
	s->pending_rcpt = NULL;
	s->sender[0] = '\0';
	s->size_hint = 0;
	s->results_given = 0;
	data_buffer_free(s);
	return had_recipients;
}

/* Ends the transaction and, if the caller holds deliveries, raises RESET. */
static void transaction_reset(struct lmtp_session *s)
{
	bool had_recipients = transaction_clear(s);

	if (s->state != LMTP_STATE_GREETED)
		session_set_state(s, LMTP_STATE_READY);
	action_clear(s);
	if (had_recipients)
		s->action.type = LMTP_ACTION_RESET;
}

static void session_close(struct lmtp_session *s)
{
	session_set_state(s, LMTP_STATE_CLOSED);
	action_clear(s);
	s->action.type = LMTP_ACTION_CLOSE;
}

static bool bad_command(struct lmtp_session *s, const char *reply)
{
	out_printf(s, "%s", reply);
	if (++s->bad_commands >= s->cfg->max_bad_commands) {
		out_printf(s, "421 4.7.0 %s too many errors, closing",
			   s->cfg->hostname);
		session_close(s);
	}
	return false;
}

/* ---- addresses ---- */

/* RFC 5321 section 4.1.2, loosely: any printable ASCII but the brackets
   (no SMTPUTF8, no spaces: a quoted local part with spaces is refused). */
static bool address_byte_ok(char c)
{
	return c > ' ' && c < 0x7f && c != '<' && c != '>';
}

/*
 * Parses "<path>" at p[0..len): the address (a source route "@a,@b:" is
 * dropped, RFC 5321 section 4.1.2) into addr_r, and in *rest_r the offset
 * of what follows the '>'.  Returns false for bad syntax.
 */
static bool parse_path(const char *p, size_t len, char addr_r[LMTP_ADDRESS_MAX + 1],
		       size_t *rest_r)
{
	const char *end;
	size_t start = 1, alen;

	if (len < 2 || p[0] != '<')
		return false;
	end = memchr(p, '>', len);
	if (end == NULL)
		return false;
	alen = (size_t)(end - p);
	for (size_t i = 1; i < alen; i++) {
		if (!address_byte_ok(p[i]))
			return false;
	}
	if (alen > 1 && p[1] == '@') {
		const char *colon = memchr(p + 1, ':', alen - 1);
		if (colon == NULL)
			return false;
		start = (size_t)(colon - p) + 1;
	}
	if (alen - start > LMTP_ADDRESS_MAX)
		return false;
	memcpy(addr_r, p + start, alen - start);
	addr_r[alen - start] = '\0';
	*rest_r = alen + 1;
	return true;
}

static bool candidate_add(char names[][LMTP_ADDRESS_MAX + 1], size_t *count,
			  const char *name, size_t len)
{
	if (!username_valid(name, len))
		return false;
	for (size_t i = 0; i < *count; i++) {
		if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
			return false;
	}
	memcpy(names[*count], name, len);
	names[*count][len] = '\0';
	(*count)++;
	return true;
}

size_t lmtp_user_candidates(const char *address,
			    char names[][LMTP_ADDRESS_MAX + 1])
{
	char buf[LMTP_ADDRESS_MAX + 1];
	size_t len = strnlen(address, LMTP_ADDRESS_MAX + 1);
	size_t count = 0;

	if (len > LMTP_ADDRESS_MAX)
		return 0;
	const char *at = strrchr(address, '@');
	size_t local_len = at != NULL ? (size_t)(at - address) : len;
	const char *plus = memchr(address, '+', local_len);
	size_t base_len = plus != NULL ? (size_t)(plus - address) : local_len;

	/* 1. the whole address, 2. without +detail (domain kept) */
	if (at != NULL) {
		candidate_add(names, &count, address, len);
		if (plus != NULL && base_len > 0) {
			size_t dom_len = len - local_len;
			memcpy(buf, address, base_len);
			memcpy(buf + base_len, at, dom_len);
			candidate_add(names, &count, buf, base_len + dom_len);
		}
	}
	/* 3. the local part, 4. without +detail */
	candidate_add(names, &count, address, local_len);
	if (plus != NULL && base_len > 0)
		candidate_add(names, &count, address, base_len);
	return count;
}

/* ---- LHLO, RSET, NOOP, QUIT, VRFY ---- */

static bool cmd_lhlo(struct lmtp_session *s, const char *args, size_t len)
{
	(void)args;
	if (len == 0)
		return bad_command(s, "501 5.5.4 LHLO needs a host name");
	out_printf(s, "250-%s", s->cfg->hostname);
	out_printf(s, "250-PIPELINING");
	out_printf(s, "250-8BITMIME");
	out_printf(s, "250-ENHANCEDSTATUSCODES");
	if (s->cfg->size_limit > 0)
		out_printf(s, "250 SIZE %" PRIu64, s->cfg->size_limit);
	else
		out_printf(s, "250 SIZE");
	/* RFC 5321 section 4.1.4: like RSET, and the session is known. */
	if (s->state == LMTP_STATE_GREETED)
		session_set_state(s, LMTP_STATE_READY);
	transaction_reset(s);
	return true;
}

static bool cmd_rset(struct lmtp_session *s, const char *args, size_t len)
{
	(void)args;
	if (len > 0)
		return bad_command(s, "501 5.5.4 RSET takes no arguments");
	out_printf(s, "250 2.0.0 OK");
	transaction_reset(s);
	return true;
}

static bool cmd_noop(struct lmtp_session *s, const char *args, size_t len)
{
	(void)args;
	(void)len;
	out_printf(s, "250 2.0.0 OK");
	return true;
}

static bool cmd_quit(struct lmtp_session *s, const char *args, size_t len)
{
	(void)args;
	(void)len;
	out_printf(s, "221 2.0.0 %s closing connection", s->cfg->hostname);
	transaction_clear(s);
	session_close(s);
	return true;
}

static bool cmd_vrfy(struct lmtp_session *s, const char *args, size_t len)
{
	(void)args;
	if (len == 0)
		return bad_command(s, "501 5.5.4 VRFY needs an argument");
	out_printf(s, "252 2.0.0 cannot VRFY, but will take a message and try");
	return true;
}

/* ---- MAIL ---- */

/* Skips "KEYWORD:" (case-insensitive) and any spaces after it. */
static bool skip_keyword(const char **p, size_t *len, const char *keyword)
{
	size_t klen = strlen(keyword);

	if (*len < klen || strncasecmp(*p, keyword, klen) != 0)
		return false;
	*p += klen;
	*len -= klen;
	while (*len > 0 && **p == ' ') {
		(*p)++;
		(*len)--;
	}
	return true;
}

enum param_result { PARAM_OK, PARAM_SYNTAX, PARAM_UNKNOWN };

/* One MAIL parameter, "KEY=VALUE" (RFC 1870 SIZE, RFC 6152 BODY). */
static enum param_result mail_param(struct lmtp_session *s, const char *p,
				    size_t len, bool *seen_size, bool *seen_body)
{
	const char *eq = memchr(p, '=', len);
	size_t klen = eq != NULL ? (size_t)(eq - p) : len;
	const char *v = eq != NULL ? eq + 1 : NULL;
	size_t vlen = eq != NULL ? len - klen - 1 : 0;

	if (klen == 4 && strncasecmp(p, "SIZE", 4) == 0) {
		if (*seen_size || v == NULL ||
		    strnum_parse_u64(v, vlen, UINT64_MAX, &s->size_hint) < 0)
			return PARAM_SYNTAX;
		*seen_size = true;
		return PARAM_OK;
	}
	if (klen == 4 && strncasecmp(p, "BODY", 4) == 0) {
		if (*seen_body || v == NULL ||
		    !((vlen == 4 && strncasecmp(v, "7BIT", 4) == 0) ||
		      (vlen == 8 && strncasecmp(v, "8BITMIME", 8) == 0)))
			return PARAM_SYNTAX;
		*seen_body = true;
		return PARAM_OK;
	}
	return PARAM_UNKNOWN;
}

/* The parameters after MAIL's path, separated by spaces. */
static bool mail_params(struct lmtp_session *s, const char *p, size_t len)
{
	bool seen_size = false, seen_body = false;

	while (len > 0) {
		if (*p == ' ') {
			p++;
			len--;
			continue;
		}
		const char *sp = memchr(p, ' ', len);
		size_t plen = sp != NULL ? (size_t)(sp - p) : len;
		switch (mail_param(s, p, plen, &seen_size, &seen_body)) {
		case PARAM_OK:
			break;
		case PARAM_SYNTAX:
			return bad_command(s, "501 5.5.4 bad MAIL parameter");
		case PARAM_UNKNOWN:
			return bad_command(s, "555 5.5.4 MAIL parameter not supported");
		}
		p += plen;
		len -= plen;
	}
	return true;
}

static bool cmd_mail(struct lmtp_session *s, const char *args, size_t len)
{
	size_t rest;

	if (!skip_keyword(&args, &len, "FROM:"))
		return bad_command(s, "501 5.5.4 syntax: MAIL FROM:<address>");
	if (!parse_path(args, len, s->sender, &rest))
		return bad_command(s, "501 5.1.7 bad sender address syntax");
	if (rest < len && args[rest] != ' ') {
		s->sender[0] = '\0';
		return bad_command(s, "501 5.1.7 bad sender address syntax");
	}
	s->size_hint = 0;
	if (!mail_params(s, args + rest, len - rest)) {
		s->sender[0] = '\0';
		s->size_hint = 0;
		return false;
	}
	/* RFC 1870 section 6.1: a declared size over the fixed limit. */
	if (s->cfg->size_limit > 0 && s->size_hint > s->cfg->size_limit) {
		out_printf(s, "552 5.3.4 message size exceeds the fixed maximum of %"
			   PRIu64 " bytes", s->cfg->size_limit);
		s->sender[0] = '\0';
		s->size_hint = 0;
		return true;
	}
	out_printf(s, "250 2.1.0 sender <%s> OK", s->sender);
	session_set_state(s, LMTP_STATE_MAIL);
	return true;
}

/* ---- RCPT ---- */

static void rcpt_raise(struct lmtp_session *s)
{
	action_clear(s);
	s->action.type = LMTP_ACTION_RCPT;
	s->action.sender = s->sender;
	s->action.address = s->pending_rcpt;
	s->action.user = s->candidates[s->candidate_next++];
	s->action.index = s->rcpt_count;
	s->action.size_hint = s->size_hint;
}

static bool cmd_rcpt(struct lmtp_session *s, const char *args, size_t len)
{
	char addr[LMTP_ADDRESS_MAX + 1];
	size_t rest;

	if (!skip_keyword(&args, &len, "TO:"))
		return bad_command(s, "501 5.5.4 syntax: RCPT TO:<address>");
	if (!parse_path(args, len, addr, &rest) || addr[0] == '\0' ||
	    (rest < len && args[rest] != ' '))
		return bad_command(s, "501 5.1.3 bad recipient address syntax");
	for (size_t i = rest; i < len; i++) {
		if (args[i] != ' ')
			return bad_command(s, "555 5.5.4 RCPT parameters not supported");
	}
	if (s->rcpt_count >= LMTP_MAX_RECIPIENTS) {
		out_printf(s, "452 4.5.3 too many recipients");
		return true;
	}
	s->candidate_count = lmtp_user_candidates(addr, s->candidates);
	s->candidate_next = 0;
	if (s->candidate_count == 0) {
		out_printf(s, "550 5.1.1 <%s> no such user here", addr);
		return true;
	}
	s->pending_rcpt = strdup(addr);
	if (s->pending_rcpt == NULL) {
		out_printf(s, "451 4.3.0 <%s> out of memory, try later", addr);
		return true;
	}
	rcpt_raise(s);
	return true;
}

/* The reply for one recipient, at RCPT (rcpt) or after DATA. */
static void result_reply(struct lmtp_session *s, const char *addr,
			 enum lmtp_result result, bool rcpt)
{
	switch (result) {
	case LMTP_RESULT_OK:
		if (rcpt)
			out_printf(s, "250 2.1.5 <%s> recipient OK", addr);
		else
			out_printf(s, "250 2.0.0 <%s> delivered", addr);
		return;
	case LMTP_RESULT_UNKNOWN_USER:
		out_printf(s, "550 5.1.1 <%s> no such user here", addr);
		return;
	case LMTP_RESULT_OVER_QUOTA:
		out_printf(s, "452 4.2.2 <%s> mailbox full", addr);
		return;
	case LMTP_RESULT_TOO_BIG:
		out_printf(s, "552 5.2.2 <%s> message larger than the mailbox quota",
			   addr);
		return;
	case LMTP_RESULT_CONFIG:
		out_printf(s, "451 4.3.5 <%s> mailbox unavailable, try later", addr);
		return;
	case LMTP_RESULT_TEMPFAIL:
	default:
		out_printf(s, "451 4.3.0 <%s> temporary failure, try later", addr);
		return;
	}
}

void lmtp_session_rcpt_done(struct lmtp_session *s, enum lmtp_result result)
{
	if (s->state == LMTP_STATE_CLOSED || s->action.type != LMTP_ACTION_RCPT)
		return;
	if (result == LMTP_RESULT_UNKNOWN_USER &&
	    s->candidate_next < s->candidate_count) {
		rcpt_raise(s);
		return;
	}
	action_clear(s);
	result_reply(s, s->pending_rcpt, result, true);
	if (result == LMTP_RESULT_OK) {
		s->rcpts[s->rcpt_count++] = s->pending_rcpt;
		s->pending_rcpt = NULL;
	} else {
		free(s->pending_rcpt);
		s->pending_rcpt = NULL;
	}
}

/* ---- DATA ---- */

static bool cmd_data(struct lmtp_session *s, const char *args, size_t len)
{
	(void)args;
	if (len > 0)
		return bad_command(s, "501 5.5.4 DATA takes no arguments");
	if (s->rcpt_count == 0)
		return bad_command(s, "503 5.5.1 no valid recipients");
	s->chunk = malloc(LMTP_CHUNK_MAX);
	if (s->chunk == NULL) {
		out_printf(s, "451 4.3.0 out of memory, try later");
		return true;
	}
	s->chunk_len = 0;
	s->data_size = 0;
	s->scan = SCAN_LINE_START;
	s->data_ended = false;
	s->too_big = false;
	/* RFC 2034 section 4: 3xx replies carry no enhanced code. */
	out_printf(s, "354 send the message, end with <CRLF>.<CRLF>");
	session_set_state(s, LMTP_STATE_DATA);
	action_clear(s);
	s->action.type = LMTP_ACTION_DATA_BEGIN;
	s->action.sender = s->sender;
	return true;
}

static void chunk_raise(struct lmtp_session *s)
{
	action_clear(s);
	s->action.type = LMTP_ACTION_DATA_CHUNK;
	s->action.data = s->chunk;
	s->action.len = s->chunk_len;
}

/* The whole message is in and passed on: commit, or refuse it. */
static void data_finish(struct lmtp_session *s)
{
	data_buffer_free(s);
	if (s->too_big) {
		for (size_t i = 0; i < s->rcpt_count; i++)
			out_printf(s, "552 5.3.4 <%s> message exceeds the fixed "
				   "maximum of %" PRIu64 " bytes", s->rcpts[i],
				   s->cfg->size_limit);
		transaction_reset(s);
		return;
	}
	action_clear(s);
	s->action.type = LMTP_ACTION_DATA_END;
	s->action.sender = s->sender;
	s->action.count = s->rcpt_count;
	s->action.size = s->data_size;
	s->results_given = 0;
}

/* Message bytes after unstuffing: counted, kept unless over the limit. */
static void data_emit(struct lmtp_session *s, const void *p, size_t len)
{
	s->data_size += len;
	if (s->cfg->size_limit > 0 && s->data_size > s->cfg->size_limit)
		s->too_big = true;
	if (s->too_big) {
		s->chunk_len = 0;
		return;
	}
	memcpy(s->chunk + s->chunk_len, p, len);
	s->chunk_len += len;
}

/* One byte at the start of a line, or after a held-back dot. */
static void data_scan_byte(struct lmtp_session *s, char c)
{
	switch (s->scan) {
	case SCAN_LINE_START:
		if (c == '.') {
			s->scan = SCAN_DOT;
			return;
		}
		break;
	case SCAN_DOT:
		if (c == '\r') {
			s->scan = SCAN_DOT_CR;
			return;
		}
		if (c == '\n') {
			s->data_ended = true;   /* ".\n": tolerated */
			return;
		}
		break;              /* the dot was stuffing: dropped */
	case SCAN_DOT_CR:
		if (c == '\n') {
			s->data_ended = true;
			return;
		}
		data_emit(s, "\r", 1);  /* ".\rX": the dot was stuffing */
		break;
	case SCAN_MIDDLE:
		break;
	}
	data_emit(s, &c, 1);
	s->scan = c == '\n' ? SCAN_LINE_START : SCAN_MIDDLE;
}

/* Consumes message bytes until the piece is full or the message ends. */
static size_t data_input(struct lmtp_session *s, const char *p, size_t len)
{
	size_t used = 0;

	while (used < len && !s->data_ended &&
	       LMTP_CHUNK_MAX - s->chunk_len >= 2) {
		if (s->scan != SCAN_MIDDLE) {
			data_scan_byte(s, p[used++]);
			continue;
		}
		/* The rest of the line in one copy, as far as there is room. */
		size_t room = LMTP_CHUNK_MAX - s->chunk_len;
		size_t n = len - used < room ? len - used : room;
		const char *lf = memchr(p + used, '\n', n);
		if (lf != NULL) {
			n = (size_t)(lf - (p + used)) + 1;
			s->scan = SCAN_LINE_START;
		}
		data_emit(s, p + used, n);
		used += n;
	}
	if (s->data_ended) {
		if (s->chunk_len > 0)
			chunk_raise(s);
		else
			data_finish(s);
	} else if (LMTP_CHUNK_MAX - s->chunk_len < 2) {
		chunk_raise(s);
	}
	return used;
}

void lmtp_session_action_done(struct lmtp_session *s)
{
	if (s->state == LMTP_STATE_CLOSED)
		return;
	switch (s->action.type) {
	case LMTP_ACTION_DATA_CHUNK:
		s->chunk_len = 0;
		if (s->data_ended) {
			data_finish(s);
			return;
		}
		action_clear(s);
		return;
	case LMTP_ACTION_DATA_BEGIN:
	case LMTP_ACTION_RESET:
		action_clear(s);
		return;
	default:
		return;
	}
}

void lmtp_session_data_result(struct lmtp_session *s, enum lmtp_result result)
{
	if (s->state == LMTP_STATE_CLOSED ||
	    s->action.type != LMTP_ACTION_DATA_END ||
	    s->results_given >= s->rcpt_count)
		return;
	/* Unknown users were refused at RCPT: here it is a failure. */
	if (result == LMTP_RESULT_UNKNOWN_USER)
		result = LMTP_RESULT_TEMPFAIL;
	result_reply(s, s->rcpts[s->results_given++], result, false);
	if (s->results_given == s->rcpt_count) {
		transaction_clear(s);
		session_set_state(s, LMTP_STATE_READY);
		action_clear(s);
	}
}

/* ---- the command table ---- */

#define IN_GREETED (1u << LMTP_STATE_GREETED)
#define IN_READY (1u << LMTP_STATE_READY)
#define IN_MAIL (1u << LMTP_STATE_MAIL)
#define IN_ANY (IN_GREETED | IN_READY | IN_MAIL)

struct lmtp_command_row {
	const char *name;
	unsigned int states;
	bool (*handler)(struct lmtp_session *s, const char *args, size_t len);
};

static const struct lmtp_command_row lmtp_commands[] = {
	{ "LHLO", IN_ANY, cmd_lhlo },
	{ "MAIL", IN_READY, cmd_mail },
	{ "RCPT", IN_MAIL, cmd_rcpt },
	{ "DATA", IN_MAIL, cmd_data },
	{ "RSET", IN_ANY, cmd_rset },
	{ "NOOP", IN_ANY, cmd_noop },
	{ "QUIT", IN_ANY, cmd_quit },
	{ "VRFY", IN_ANY, cmd_vrfy },
};

/* SMTP commands this server knows of but does not offer. */
static const char *const lmtp_not_offered[] = {
	"EXPN", "HELP", "TURN", "ETRN", "BDAT", "AUTH", "SEND", "SOML", "SAML",
	"STARTTLS",
};

static bool sequence_error(struct lmtp_session *s,
			   const struct lmtp_command_row *row)
{
	if (s->state == LMTP_STATE_GREETED)
		return bad_command(s, "503 5.5.1 send LHLO first");
	if (strcmp(row->name, "MAIL") == 0)
		return bad_command(s, "503 5.5.1 MAIL already given");
	return bad_command(s, "503 5.5.1 send MAIL first");
}

static bool line_bytes_ok(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (line[i] < ' ' || line[i] >= 0x7f)
			return false;
	}
	return true;
}

static bool unknown_command(struct lmtp_session *s, const char *verb,
			    size_t vlen)
{
	if ((vlen == 4 && strncasecmp(verb, "HELO", 4) == 0) ||
	    (vlen == 4 && strncasecmp(verb, "EHLO", 4) == 0))
		return bad_command(s, "500 5.5.1 this is LMTP: use LHLO");
	for (size_t i = 0; i < sizeof(lmtp_not_offered) / sizeof(lmtp_not_offered[0]); i++) {
		const char *name = lmtp_not_offered[i];
		if (strlen(name) == vlen && strncasecmp(verb, name, vlen) == 0)
			return bad_command(s, "502 5.5.1 command not implemented");
	}
	return bad_command(s, "500 5.5.1 command not recognized");
}

static void handle_line(struct lmtp_session *s, const char *line, size_t len)
{
	if (!line_bytes_ok(line, len)) {
		bad_command(s, "500 5.5.2 invalid character in command");
		return;
	}
	while (len > 0 && line[len - 1] == ' ')
		len--;
	const char *sp = memchr(line, ' ', len);
	size_t vlen = sp != NULL ? (size_t)(sp - line) : len;
	const char *args = line + vlen;
	size_t alen = len - vlen;
	while (alen > 0 && *args == ' ') {
		args++;
		alen--;
	}
	for (size_t i = 0; i < sizeof(lmtp_commands) / sizeof(lmtp_commands[0]); i++) {
		const struct lmtp_command_row *row = &lmtp_commands[i];
		if (vlen != 4 || strncasecmp(line, row->name, 4) != 0)
			continue;
		bool ok = (row->states & (1u << s->state)) == 0 ?
			  sequence_error(s, row) : row->handler(s, args, alen);
		if (ok)
			s->bad_commands = 0;
		return;
	}
	unknown_command(s, line, vlen);
}

/* ---- public ---- */

struct lmtp_session *lmtp_session_new(const struct lmtp_config *cfg,
				      lmtp_output_fn *output, void *context)
{
	struct lmtp_session *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->cfg = cfg;
	s->output = output;
	s->context = context;
	s->state = LMTP_STATE_GREETED;
	out_printf(s, "220 %s LMTP popbox ready", cfg->hostname);
	return s;
}

void lmtp_session_free(struct lmtp_session **session)
{
	struct lmtp_session *s = *session;

	if (s == NULL)
		return;
	transaction_clear(s);
	free(s);
	*session = NULL;
}

/* A command line: at most one, or the discarded part of a long one. */
static size_t command_input(struct lmtp_session *s, const char *p, size_t len)
{
	const char *lf;

	if (s->discarding) {
		lf = memchr(p, '\n', len);
		if (lf == NULL)
			return len;
		s->discarding = false;
		bad_command(s, "500 5.5.2 line too long");
		return (size_t)(lf - p) + 1;
	}
	lf = memchr(p, '\n', len < LMTP_LINE_MAX ? len : LMTP_LINE_MAX);
	if (lf == NULL) {
		if (len < LMTP_LINE_MAX)
			return 0;
		/* No end within the limit: drop what came, and the rest of
		   the line as it arrives; the next line is the next command. */
		s->discarding = true;
		return LMTP_LINE_MAX;
	}
	size_t line_len = (size_t)(lf - p);
	if (line_len > 0 && p[line_len - 1] == '\r')
		line_len--;
	handle_line(s, p, line_len);
	return (size_t)(lf - p) + 1;
}

size_t lmtp_session_input(struct lmtp_session *s, const void *data, size_t len)
{
	if (s->action.type != LMTP_ACTION_NONE || s->state == LMTP_STATE_CLOSED ||
	    len == 0)
		return 0;
	if (s->state == LMTP_STATE_DATA)
		return data_input(s, data, len);
	return command_input(s, data, len);
}

const struct lmtp_action *lmtp_session_action(const struct lmtp_session *s)
{
	return &s->action;
}

void lmtp_session_abort(struct lmtp_session *s, const char *reason)
{
	if (s->state == LMTP_STATE_CLOSED)
		return;
	if (reason != NULL)
		out_printf(s, "421 %s", reason);
	/* The transaction is freed with the session: a piece of the message
	   may still be in the caller's hands. */
	session_close(s);
}

enum lmtp_state lmtp_session_state(const struct lmtp_session *s)
{
	return s->state;
}
