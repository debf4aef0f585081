/*
 * sink.h — where popbox-fetch puts a downloaded message: a Maildir, an
 * mbox file, or an MDA command, streamed in pieces as it comes off the
 * wire.
 *
 *   sink_begin    one message starts (nothing visible yet)
 *   sink_write    message bytes as RETR/TOP gives them after dot-unstuffing
 *                 (CRLF line ends; any split); stored with LF line ends
 *   sink_commit   returns 0 only once the message is durably stored:
 *                   Maildir  fsynced in tmp/, renamed into new/, new/
 *                            fsynced (popboxd/deliver.c, the same path as
 *                            popbox-deliver, with no header added);
 *                   mbox     appended whole under both locks and fsynced
 *                            (see below);
 *                   MDA      the command read the message and exited 0
 *   sink_abort    forget the message (a dropped connection, a RETR error)
 *
 * Invariants: a message is visible in the destination only complete (a
 * Maildir file appears by one rename; an mbox append is cut back to the
 * old size on any error; an MDA is started only once the whole message is
 * in hand, so a dropped connection never feeds it half a message), and
 * success is never reported before the bytes are on disk.  The caller
 * records the UIDL and sends DELE only after sink_commit() returned 0
 * (fetch/plan.h explains the order).
 *
 * mbox and MDA messages go to an unlinked spool file first (O_TMPFILE
 * next to the mbox, else in spool_dir, $TMPDIR or /tmp), so the mbox locks
 * are held only for a local copy, never for a download, and the MDA gets
 * a seekable stdin.  An mbox append takes, in this order (SECURITY.md 4):
 * an fcntl write lock on the whole file (an OFD lock: it excludes other
 * processes' POSIX and OFD locks and, unlike a POSIX lock, our own other
 * threads), then the dot-lock "<mbox>.lock" (made by link() from a unique
 * file, which is safe on NFS too; one older than SINK_DOTLOCK_STALE_S is
 * left over from a crash and removed).  Both are tried again until
 * lock_timeout_ms has passed, then the commit fails with SINK_TEMPFAIL.
 * The message gets "From <sender> <date>", its lines quoted mboxrd style
 * (fetch/mbox-format.h), a final newline if it has none and the empty
 * separator line, written with one write() when the message is at most
 * 48 KiB (else the last write() carries the message's end); the file is
 * fsynced before the locks go.  Caveat: a SIGKILL or power loss in the
 * middle of the append leaves the part written (mbox has no atomic
 * append), a torn message at the end of the file; its pending record
 * (below) does not match it, so the next run fetches the message again
 * and appends it whole after the torn part, which stays (nothing can
 * tell for sure that those bytes are ours and nothing else's, so they are
 * never cut).  The program should ignore SIGXFSZ so that a file size
 * limit is a write error (then cut back), not a kill.
 *
 * The MDA: "/bin/sh -c <command>" (the command is the user's own
 * configuration; nothing from the message or the server is ever put into
 * it), in its own process group, stdin the spool file (LF line ends, no
 * "From " line), stdout and stderr captured (the first SINK_MDA_OUTPUT_MAX
 * bytes kept for the error text, the rest read and dropped), signals back
 * to their defaults.  Facts about the message are passed in the
 * environment, never in the command line:
 *   POPBOX_FETCH_UIDL     the server's unique-id (0x21-0x7E; untrusted,
 *                         quote it in shell: "$POPBOX_FETCH_UIDL")
 *   POPBOX_FETCH_SENDER   the Return-Path address, empty if none (same)
 *   POPBOX_FETCH_ACCOUNT  the account's name from the configuration
 *   POPBOX_FETCH_SIZE     bytes on stdin
 * Exit 0 = stored; 75 (EX_TEMPFAIL), a signal or the timeout (the process
 * group gets SIGKILL) = SINK_TEMPFAIL; any other status = SINK_PERMFAIL.
 *
 * Added headers: none unless the caller asks, so what is stored is byte
 * for byte what the server sent (CRLF -> LF only).  The choice: the
 * message's own Received lines already say how it reached the server,
 * the POP3 hop tells a reader nothing more, and an MDA (popbox-deliver,
 * procmail) adds its own Return-Path / Delivered-To.  For users who want
 * what mpop and fetchmail do (a "Received:" line for the POP3 hop), the
 * caller passes trace_header, e.g. from sink_format_received() behind an
 * option that is off by default; it goes before the message in all three
 * kinds.
 *
 * Blocking (disk I/O, fsync, waiting for locks and the MDA).  Thread-safe:
 * no globals; error texts are thread-local and valid until the next sink
 * call on the same thread.
 */
#ifndef POPBOX_SINK_H
#define POPBOX_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum sink_kind {
	SINK_MAILDIR,
	SINK_MBOX,
	SINK_MDA,
};

enum sink_status {
	SINK_OK = 0,
	SINK_TEMPFAIL, /* try again later: I/O error, locks busy, MDA 75 */
	SINK_PERMFAIL, /* needs the user: bad path, MDA refused the message */
};

/* How long an mbox append waits for its two locks by default. */
#define SINK_LOCK_TIMEOUT_MS_DEFAULT (60 * 1000)
/* A dot-lock older than this was left by a crash: the locks are held for
   a local copy only (seconds), and procmail's default is 17 minutes. */
#define SINK_DOTLOCK_STALE_S (10 * 60)
/* How long an MDA may run by default. */
#define SINK_MDA_TIMEOUT_MS_DEFAULT (10 * 60 * 1000)
/* Output of an MDA kept for the error text. */
#define SINK_MDA_OUTPUT_MAX 1024
/* Longest trace header line accepted (RFC 5322 2.1.1's line limit). */
#define SINK_TRACE_MAX 998

struct sink_config {
	enum sink_kind kind;
	/* The Maildir's directory, the mbox file, or the MDA's command. */
	const char *target;
	/* mbox: longest wait for both locks (0 = the default). */
	unsigned int lock_timeout_ms;
	/* mbox: fcntl lock only, no "<mbox>.lock" (for a directory where the
	   user may not create files, e.g. /var/mail without group mail). */
	bool no_dotlock;
	/* MDA: longest run, from start to exit (0 = the default). */
	unsigned int mda_timeout_ms;
	/* mbox, MDA: where the spool file goes if not next to the mbox
	   (NULL = $TMPDIR, else /tmp). */
	const char *spool_dir;
};

struct sink_msg_info {
	const char *uidl;         /* NULL if unknown (server without UIDL) */
	const char *account;      /* NULL if none */
	uint64_t size_hint;       /* LIST's size, 0 if unknown */
	/* A complete header line without line end, put before the message,
	   or NULL.  At most SINK_TRACE_MAX bytes, no control characters
	   except TAB, else sink_begin refuses it (SINK_PERMFAIL). */
	const char *trace_header;
};

struct sink_msg;

/*
 * Starts one message to cfg's destination.  Returns 0 with *msg_r, or -1
 * with *status_r and *error_r (nothing stored).  cfg and info are only
 * read during the call (copied as needed).
 */
int sink_begin(const struct sink_config *cfg, const struct sink_msg_info *info,
	       struct sink_msg **msg_r, enum sink_status *status_r,
	       const char **error_r);

/* Appends data[0..len).  -1 with *status_r and *error_r: only
   sink_abort() is left to call. */
int sink_write(struct sink_msg *msg, const void *data, size_t len,
	       enum sink_status *status_r, const char **error_r);

/*
 * Stores the message durably (see above).  Returns 0, or -1 with
 * *status_r and *error_r and nothing of the message left in the
 * destination.  Frees *msg and sets it to NULL either way.
 */
int sink_commit(struct sink_msg **msg, enum sink_status *status_r,
		const char **error_r);

/* Drops the message (nothing stored) and frees *msg; NULL is fine. */
void sink_abort(struct sink_msg **msg);

/*
 * ONE DESTINATION FOR MANY MESSAGES (a popbox-fetch run).  sink_open()
 * copies cfg; for a Maildir it opens (makes) the Maildir once, removes
 * tmp/ files a crash left more than 36 hours ago, and keeps tmp/ and new/
 * open, so that a message costs only its own file.  sink_begin_in() is
 * sink_begin() into it; sink_write/commit/abort work as above.
 *
 * PENDING RECORDS (sink_can_prepare: a Maildir or an mbox): instead of
 * sink_commit,
 *   sink_prepare   Maildir: the file whole and fsynced in tmp/; *name_r
 *                  is its unique name there (the start of its name in
 *                  new/).  mbox: both locks taken, nothing written; the
 *                  append's bytes are computed from the spool: *name_r is
 *                  "mbox.<off>.<len>.<key>.<hash>", the offset where they
 *                  will go (the file's size now), their number, a random
 *                  128-bit key (32 hex digits) and their SipHash-2-4
 *                  under it (16 hex digits); the locks stay held;
 *   (the caller makes a durable record naming it: uidl-db's pending
 *   records)
 *   sink_publish   Maildir: renames it into new/.  mbox: appends exactly
 *                  those bytes (refused, nothing written, if the file's
 *                  size changed in spite of the locks), fsync, cut back on
 *                  any error, unlocks.  Frees the message either way;
 *   sink_sync      Maildir: one fsync of new/ for every message published
 *                  before: only after it are they durable.  mbox: nothing.
 * sink_abort after sink_prepare: Maildir: the tmp/ file removed; mbox:
 * unlocked, nothing written.
 * A GROUP COMMIT (sink_can_batch: a Maildir) prepares the messages of one
 * read and publishes them together; an mbox holds its locks from prepare
 * to publish (an OFD lock: a second message of the same process could
 * not take it), so its messages go one at a time.
 * A crash between the steps leaves each Maildir message in tmp/ (whole)
 * or in new/ (maybe, before the sync), never half, and each mbox message
 * not appended, appended whole, or torn (above); sink_locate() tells
 * which.
 */
struct sink;

int sink_open(const struct sink_config *cfg, struct sink **sink_r,
	      enum sink_status *status_r, const char **error_r);
void sink_close(struct sink **sink);   /* NULL fine; sets *sink NULL */

int sink_begin_in(struct sink *sink, const struct sink_msg_info *info,
		  struct sink_msg **msg_r, enum sink_status *status_r,
		  const char **error_r);

/* True for a Maildir (of sink_open's) and an mbox: sink_prepare,
   sink_publish, sink_sync and sink_locate may be used. */
bool sink_can_prepare(const struct sink *sink);

/* True for a Maildir: several messages may be prepared before they are
   published (for an mbox: publish each before the next is prepared). */
bool sink_can_batch(const struct sink *sink);

/* 0 with *name_r (valid until the message is freed), or -1 with
   *status_r and *error_r (only sink_abort is left). */
int sink_prepare(struct sink_msg *msg, const char **name_r,
		 enum sink_status *status_r, const char **error_r);

/* After sink_prepare: 0, or -1 with nothing of it left in new/ or tmp/
   (Maildir) or in the mbox.  Frees *msg either way. */
int sink_publish(struct sink_msg **msg, enum sink_status *status_r,
		 const char **error_r);

/* fsync of new/ (nothing to do for other kinds). */
int sink_sync(struct sink *sink, enum sink_status *status_r,
	      const char **error_r);

/*
 * After a crash: for each names[i] (a name sink_prepare gave), was the
 * message stored?  Maildir: stored_r[i] true if it is in new/ or cur/ (a
 * mail reader may have moved it there), or still whole in tmp/ (then it
 * is moved into new/ and synced now: a file left in tmp/ would be removed
 * as stale one day, so it must not count as stored before); false when it
 * is nowhere (not stored: fetch it again).  mbox: true if the file has at
 * least off + len bytes and those from off on hash to the name's hash
 * under its key; false otherwise (never appended, torn, or moved by a
 * mail reader that rewrote the file: fetched again, a second copy in the
 * last case, never a loss: a position alone never counts), and when there
 * is no mbox.  Names of the other kind, or damaged, are "not stored"; so
 * is everything for an MDA.  0, or -1 with *status_r and *error_r.
 */
int sink_locate(struct sink *sink, const char *const *names, size_t n,
		bool *stored_r, enum sink_status *status_r,
		const char **error_r);

/*
 * Formats a trace line "Received: from <server> by <local host>
 * (popbox-fetch) with POP3 for <user>; <RFC 5322 date>" into buf.
 * server and user come from the configuration; bytes outside 0x21-0x7E
 * in them are written as '?'.  Returns the length, or 0 if buf is too
 * small (SINK_TRACE_MAX + 1 is always enough).
 */
size_t sink_format_received(char *buf, size_t size, const char *server,
			    const char *user, time_t now);

/* "maildir", "mbox", "mda". */
const char *sink_kind_name(enum sink_kind kind);

#endif
