/*
 * pop3-client.h — the sans-I/O core of popbox-fetch's POP3 conversation:
 * the bytes to send for each command, and the server's replies parsed and
 * matched to the commands they answer.  No sockets, no files, no clock:
 * the driver moves bytes between this core and a connection (fetch/net),
 * and acts on the events it reports.
 *
 * Three parts:
 *   - a command queue (pop3c_queue*): commands wait there until the window
 *     lets them out (pop3c_output), then are "in flight" until their reply
 *     is complete.  Window 1 is plain POP3; a larger window is RFC 2449
 *     PIPELINING, only when the server's CAPA lists it.
 *   - a reply parser (pop3c_input) fed with the server's bytes in chunks of
 *     any size.  It reports, through one callback, for each in-flight
 *     command in order: a REPLY event (its status line), and for +OK to a
 *     multi-line command (CAPA, LIST, UIDL, RETR, TOP) DATA events (each
 *     line dot-unstuffed, streamed: never a whole message in memory) and
 *     one END event (the terminating "." line, with the octet count).
 *   - pure parsers of what replies carry: status line and response code,
 *     CAPA lines, STAT, scan and unique-id listings, the APOP timestamp.
 *
 * Invariants (the unit tests and the fuzzer check them):
 *   - Replies are matched to commands in the order they were sent; a
 *     status line when no command is in flight is a protocol error, so
 *     there are never more replies than commands sent.
 *   - Each sent command gets exactly one final REPLY (+OK or -ERR); AUTH
 *     may get "+ " continuations before it.  A command is complete at its
 *     REPLY, or at its END when the REPLY was +OK to a multi-line command.
 *     -ERR is always single-line.
 *   - The events are the same, byte for byte, however the input is split
 *     into chunks (one byte at a time or all at once).
 *   - Every line is bounded: a status line or a listing line (CAPA, LIST,
 *     UIDL) longer than POP3C_LINE_MAX is a protocol error; a message line
 *     (RETR, TOP) of any length is passed on in pieces of at most
 *     POP3C_LINE_MAX bytes.  Memory use does not depend on what the server
 *     sends.
 *   - DATA bytes are the server's bytes minus line ends and stuffing dots,
 *     so never more than were received.  END's octets is the message size
 *     as LIST counts it: the DATA bytes plus 2 (CRLF) per line.
 *   - A line ends at LF; a CR just before it is part of the line end (CRLF,
 *     or a bare LF from a sloppy server, counts as one line end).  A CR
 *     elsewhere is data.
 *   - After a protocol error the core is dead: every later call fails with
 *     the same error, and no further events come.
 *   - A reply that did not end (connection closed in the middle: see
 *     pop3c_eof) never produces an END, so a truncated message is never
 *     reported as complete.  The driver commits a message only at END.
 *   - After +OK to STLS, no byte is accepted until pop3c_tls_started():
 *     bytes the server sent after that +OK (in the clear, before the
 *     handshake) are a protocol error, never taken as replies (the
 *     STARTTLS command-injection class).
 *   - Passwords and SASL responses are wiped from the output buffer once
 *     sent, and from the queue when freed.
 */
#ifndef POPBOX_POP3_CLIENT_H
#define POPBOX_POP3_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * RFC 2449 section 4: a reply line (status, or a line of a listing) is at
 * most 512 octets with its CRLF.  Real servers put long texts in greetings
 * and error replies, so we accept up to 4 KiB without the line end; longer
 * is a protocol error (never buffered without bound).  Message lines
 * (RETR, TOP) have no limit; they are passed on in pieces of this size.
 */
#define POP3C_LINE_MAX 4096
/* RFC 2449 section 4: a command line is at most 255 octets with its CRLF. */
#define POP3C_COMMAND_MAX 255
/* A client response inside an AUTH exchange is not a command line; an
   OAuth2 token (XOAUTH2, OAUTHBEARER) runs to a few KiB of base64. */
#define POP3C_SASL_RESPONSE_MAX 16384
/* RFC 1939 section 7: a unique-id is 1 to 70 characters 0x21-0x7E. */
#define POP3C_UID_MAX 70
/* Commands waiting or in flight at once; the driver queues as it goes. */
#define POP3C_QUEUE_MAX 65536
/* The largest pipelining window.  Keep the commands in flight within a
   socket buffer (64 commands are well under 1 KiB), so a driver with
   blocking writes cannot deadlock against a server blocked on its own
   writes (RFC 2449 section 6.6). */
#define POP3C_WINDOW_MAX 1024

enum pop3c_cmd_type {
	POP3C_GREETING,   /* the first line: in flight from the start */
	POP3C_CAPA,
	POP3C_STLS,
	POP3C_USER,
	POP3C_PASS,
	POP3C_APOP,
	POP3C_AUTH,
	POP3C_STAT,
	POP3C_LIST,       /* LIST: the scan listing of every message */
	POP3C_LIST_ONE,   /* LIST msg: one scan listing in the +OK line */
	POP3C_UIDL,       /* UIDL: the unique-id listing of every message */
	POP3C_UIDL_ONE,   /* UIDL msg */
	POP3C_RETR,
	POP3C_TOP,        /* TOP msg lines */
	POP3C_DELE,
	POP3C_NOOP,
	POP3C_RSET,
	POP3C_QUIT,
	POP3C_CMD_TYPE_COUNT
};

/* A command as the events name it (a copy: keep it as long as needed). */
struct pop3c_command {
	enum pop3c_cmd_type type;
	uint32_t msg;       /* RETR, TOP, DELE, LIST_ONE, UIDL_ONE; else 0 */
	uint32_t lines;     /* TOP; else 0 */
	uint64_t id;        /* 1, 2, ... in queueing order; the greeting is 0 */
};

enum pop3c_status {
	POP3C_OK,           /* +OK */
	POP3C_ERR,          /* -ERR */
	POP3C_CONTINUE,     /* "+ " challenge inside AUTH (RFC 5034) */
};

/* RFC 2449 section 8 and RFC 3206 response codes, from "[CODE]" right
   after the status.  Hierarchical codes match their prefix
   ("SYS/TEMP/DISK" is SYS_TEMP). */
enum pop3c_code {
	POP3C_CODE_NONE,
	POP3C_CODE_OTHER,        /* a well-formed code we do not know */
	POP3C_CODE_IN_USE,       /* maildrop locked by another session */
	POP3C_CODE_LOGIN_DELAY,  /* logged in too recently */
	POP3C_CODE_SYS_TEMP,     /* temporary server problem: retry later */
	POP3C_CODE_SYS_PERM,     /* permanent server problem */
	POP3C_CODE_AUTH,         /* the credentials are wrong */
};

/* One status line, parsed.  Pointers are into the line (during an event:
   into the core's buffer, valid only until the callback returns).  text
   is untrusted and may hold any byte but LF: escape it before logging. */
struct pop3c_reply {
	enum pop3c_status status;
	enum pop3c_code code;
	const char *code_text;   /* inside the brackets; NULL if no code */
	size_t code_len;
	const char *text;        /* after the status, the code, their spaces */
	size_t text_len;
	bool multiline;          /* set by the core: DATA and END follow */
};

enum pop3c_event_type {
	POP3C_EVENT_REPLY,   /* a status line: reply */
	POP3C_EVENT_DATA,    /* a line, or a piece of a long message line */
	POP3C_EVENT_END,     /* the "." that ends a multi-line reply */
};

struct pop3c_event {
	enum pop3c_event_type type;
	struct pop3c_command cmd;        /* the command this answers */
	const struct pop3c_reply *reply; /* REPLY */
	/*
	 * DATA: bytes of the line, unstuffed, without its line end.  A
	 * listing line (CAPA, LIST, UIDL) always comes whole (line_end set);
	 * a message line (RETR, TOP) longer than POP3C_LINE_MAX comes in
	 * pieces, the last with line_end set.  The message as on the wire is
	 * the DATA bytes with CRLF added after each line_end piece.
	 */
	const char *data;
	size_t len;
	bool line_end;
	/* END: octets = DATA bytes + 2 per line (what LIST says the message
	   size is); lines ended with a bare LF, for diagnostics. */
	uint64_t octets;
	uint64_t lines;
	uint64_t bare_lf_lines;
};

/*
 * Called for each event, in order.  It may call pop3c_queue*(),
 * pop3c_output(), pop3c_sasl_respond() and the query functions; not
 * pop3c_input(), pop3c_eof() or pop3c_free() (and pop3c_tls_started()
 * does nothing there: the handshake comes after pop3c_input returns).
 */
typedef void pop3c_event_fn(void *context, const struct pop3c_event *event);

struct pop3c;

/* A new core with the greeting in flight and window 1.  NULL if out of
   memory. */
struct pop3c *pop3c_new(pop3c_event_fn *callback, void *context);
/* Frees the core (wiping queued secrets) and sets *c to NULL. */
void pop3c_free(struct pop3c **c);

/* The number of commands that may be in flight at once: 1 (the default)
   without PIPELINING; 1..POP3C_WINDOW_MAX. */
void pop3c_set_window(struct pop3c *c, unsigned int window);

/*
 * Queues a command without text arguments: CAPA, STLS, STAT, LIST, UIDL,
 * NOOP, RSET, QUIT, and with msg: LIST_ONE, UIDL_ONE, RETR, DELE, and with
 * msg and lines: TOP.  msg must be >= 1 where it is used and is ignored
 * elsewhere, like lines.  Returns 0 and the command's id in *id_r (may be
 * NULL), or -1 with error_r: a wrong type or msg, the queue full, QUIT
 * already queued, or the core dead.
 *
 * USER, PASS, APOP, AUTH, STLS, and the greeting go out alone: nothing is
 * sent with them nor after them before their reply is complete (and after
 * STLS, before pop3c_tls_started()).
 */
int pop3c_queue(struct pop3c *c, enum pop3c_cmd_type type, uint32_t msg,
		uint32_t lines, uint64_t *id_r, const char **error_r);

/*
 * The commands with text arguments.  Strings are NUL-terminated and may
 * not contain CR or LF (nor a space, except the password); the command
 * line must fit POP3C_COMMAND_MAX.  For AUTH, initial_response (base64,
 * "=" for an empty one, or NULL for none) goes on the command line only if
 * it fits: otherwise queue "AUTH mech" alone and send it with
 * pop3c_sasl_respond() at the first (empty) challenge (RFC 5034 section 4).
 * Same return as pop3c_queue().
 */
int pop3c_queue_user(struct pop3c *c, const char *user, uint64_t *id_r,
		     const char **error_r);
int pop3c_queue_pass(struct pop3c *c, const char *password, uint64_t *id_r,
		     const char **error_r);
/* digest: the 32 lower-case hex digits of MD5(timestamp password). */
int pop3c_queue_apop(struct pop3c *c, const char *user, const char *digest,
		     uint64_t *id_r, const char **error_r);
int pop3c_queue_auth(struct pop3c *c, const char *mechanism,
		     const char *initial_response, uint64_t *id_r,
		     const char **error_r);

/*
 * Answers the "+ " challenge just reported for the AUTH in flight:
 * response[0..len) (base64, no CR or LF, at most POP3C_SASL_RESPONSE_MAX)
 * goes out as one line.  pop3c_sasl_cancel() sends "*" instead (RFC 5034:
 * the server then answers -ERR).  -1 with error_r if no challenge awaits
 * an answer or the response is bad.
 */
int pop3c_sasl_respond(struct pop3c *c, const char *response, size_t len,
		       const char **error_r);
int pop3c_sasl_cancel(struct pop3c *c, const char **error_r);

/*
 * The bytes to send now: moves queued commands into the output as far as
 * the window allows, and returns the unsent output (*len_r 0 if none).
 * The pointer is valid until the next call into the core.
 */
const char *pop3c_output(struct pop3c *c, size_t *len_r);
/* len bytes of the output were sent: they are dropped (and wiped). */
void pop3c_output_sent(struct pop3c *c, size_t len);

/*
 * Feeds data[0..len) received from the server; reports events through the
 * callback.  Returns 0, or -1 with error_r (static text; it names no
 * server bytes) on a protocol error: a malformed or over-long line, a
 * reply with no command in flight, a challenge to anything but AUTH,
 * bytes after +OK to STLS.  Bytes after the reply to QUIT are ignored.
 */
int pop3c_input(struct pop3c *c, const void *data, size_t len,
		const char **error_r);

/*
 * The server closed the connection.  Returns 0 if that was clean: no reply
 * is outstanding and no partial line is buffered (normally: after QUIT's
 * reply).  Otherwise -1 with error_r, and the core is dead.
 */
int pop3c_eof(struct pop3c *c, const char **error_r);

/*
 * After +OK to STLS the core waits (pop3c_wants_tls()) until the driver
 * has completed the TLS handshake and calls this.  Every capability must
 * then be asked again (RFC 2595 section 4).
 */
void pop3c_tls_started(struct pop3c *c);

bool pop3c_wants_tls(const struct pop3c *c);
/* The reply to QUIT has come: the session is over. */
bool pop3c_quit_done(const struct pop3c *c);
/* Dead after a protocol error (or a bad pop3c_eof). */
bool pop3c_failed(const struct pop3c *c);
/* Commands sent and not yet answered completely. */
size_t pop3c_in_flight(const struct pop3c *c);
/* Commands queued and not yet moved into the output. */
size_t pop3c_waiting(const struct pop3c *c);

/* The keyword of a command type ("RETR"; "greeting" for the greeting). */
const char *pop3c_cmd_name(enum pop3c_cmd_type type);

/* ---- pure parsers: (bytes, length) in, typed result out ---- */

/*
 * Parses a status line (without its line end): "+OK" or "-ERR" (case
 * insensitive) alone or followed by a space and text (text glued to the
 * status, as sloppy servers send it, is taken too), or "+" alone or
 * followed by a space and a SASL challenge.  A well-formed "[CODE]" at the
 * start of the text of +OK or -ERR is taken out of it.  Returns 0 and
 * fills *reply_r (multiline false), or -1.
 */
int pop3c_parse_reply_line(const char *line, size_t len,
			   struct pop3c_reply *reply_r);

/* RFC 4422 section 3.1: a mechanism name is 1-20 of A-Z 0-9 - _. */
#define POP3C_MECH_MAX 20
/* Room for the SASL mechanism list (more is ignored). */
#define POP3C_MECHS_MAX 256
/* Room for the IMPLEMENTATION text, cut there (informational only). */
#define POP3C_IMPLEMENTATION_MAX 64

/* EXPIRE (RFC 2449 section 6.7): how long the server keeps messages. */
enum pop3c_expire {
	POP3C_EXPIRE_UNKNOWN,   /* not announced */
	POP3C_EXPIRE_NEVER,
	POP3C_EXPIRE_DAYS,      /* expire_days; 0: deleted once retrieved,
				   whether or not the client sends DELE */
};

/* What CAPA said; start from all zero.  Before authentication, the
   "USER" flags say the value may differ per user: ask again after. */
struct pop3c_caps {
	bool top, user, uidl, pipelining, stls, resp_codes, auth_resp_code;
	bool sasl;                 /* a SASL line was seen */
	/* space-separated upper-case names of the well-formed mechanisms */
	char sasl_mechs[POP3C_MECHS_MAX];
	enum pop3c_expire expire;
	uint32_t expire_days;
	bool expire_per_user;
	bool login_delay;          /* LOGIN-DELAY announced */
	uint32_t login_delay_seconds;
	bool login_delay_per_user;
	/* printable ASCII (others became '?'), NUL-terminated */
	char implementation[POP3C_IMPLEMENTATION_MAX + 1];
};

/*
 * Adds one CAPA listing line to *caps.  Capability names are case
 * insensitive; unknown ones are ignored (0).  A known capability with bad
 * arguments ("EXPIRE soon") returns -1 with error_r and leaves *caps as it
 * was: the driver may log it and go on.
 */
int pop3c_parse_capa_line(struct pop3c_caps *caps, const char *line,
			  size_t len, const char **error_r);

/* Whether caps lists SASL mechanism mech (case insensitive). */
bool pop3c_caps_has_mech(const struct pop3c_caps *caps, const char *mech);

/*
 * The text of +OK to STAT: "count size", more text allowed after a space.
 * Returns 0 or -1.
 */
int pop3c_parse_stat(const char *text, size_t len, uint32_t *count_r,
		     uint64_t *size_r);

/*
 * A scan listing (a line of LIST, or the text of +OK to LIST msg):
 * "msg size", msg >= 1, more text allowed after a space (RFC 1939
 * section 5).  Returns 0 or -1.  For LIST msg, the caller checks that
 * msg is the one asked (event.cmd.msg); likewise for UIDL msg.
 */
int pop3c_parse_scan_listing(const char *line, size_t len, uint32_t *msg_r,
			     uint64_t *size_r);

/*
 * A unique-id listing (a line of UIDL, or the text of +OK to UIDL msg):
 * "msg uid", msg >= 1, uid 1..POP3C_UID_MAX bytes of 0x21-0x7E, trailing
 * spaces tolerated, nothing else.  uid_r must hold POP3C_UID_MAX + 1 bytes
 * and gets the uid NUL-terminated.  Returns 0 or -1 (a uid out of spec is
 * refused, never cut or mapped: it names the message to delete).
 */
int pop3c_parse_uid_listing(const char *line, size_t len, uint32_t *msg_r,
			    char *uid_r, size_t *uid_len_r);

/* Longest APOP timestamp accepted, brackets included. */
#define POP3C_TIMESTAMP_MAX 255

/*
 * Finds the APOP timestamp in the greeting's text (RFC 1939 section 7):
 * "<...>" of printable ASCII without spaces, with an '@', as a msg-id is.
 * The strict form is the defence against chosen-prefix MD5 attacks on APOP
 * (Leurent, 2007).  Returns 0 and the timestamp's place in text (brackets
 * included), or -1 if there is none.
 */
int pop3c_apop_timestamp(const char *text, size_t len, size_t *start_r,
			 size_t *len_r);

#endif
