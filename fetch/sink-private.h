/*
 * sink-private.h — what sink.c shares with the mbox (sink-mbox.c) and
 * MDA (sink-mda.c) halves of the sink: the message in flight, its spool
 * file, the error convention.  Not for other modules: use sink.h.
 */
#ifndef POPBOX_SINK_PRIVATE_H
#define POPBOX_SINK_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mail-lines.h"
#include "mbox-format.h"
#include "sink.h"

struct deliver;
struct deliver_dir;
struct mbox_append;

/* Spool and copy buffers: a few large writes instead of one per line. */
#define SINK_BUF_SIZE (64 * 1024)
/* The start of a message searched for its Return-Path. */
#define SINK_HEAD_MAX (8 * 1024)
#define SINK_ERROR_MAX 512

struct sink_msg {
	enum sink_kind kind;
	char *target;              /* Maildir, mbox path or MDA command */
	unsigned int lock_timeout_ms;
	unsigned int mda_timeout_ms;
	bool no_dotlock;
	char *uidl, *account;      /* for the MDA's environment; may be NULL */

	struct deliver *deliver;   /* Maildir */
	struct deliver_dir *dir;   /* Maildir opened by sink_open (borrowed),
				      or NULL */
	bool prepared;             /* sink_prepare done */
	struct mbox_append *mbox;  /* mbox: prepared, both locks held until
				      sink_publish or sink_free */
	int spool_fd;              /* mbox, MDA: unlinked, LF line ends */
	uint64_t spool_size;
	struct mail_lines lines;   /* CRLF -> LF into the spool */
	uint8_t *buf;              /* SINK_BUF_SIZE bytes */

	bool failed;               /* a write failed: only abort is left */
	enum sink_status fail_status;
	char fail_error[SINK_ERROR_MAX];
};

/* Sets *status_r and *error_r (a thread-local text made from fmt) and
   returns -1. */
int sink_fail(enum sink_status status, enum sink_status *status_r,
	      const char **error_r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* sink_fail() with ": <strerror(err)>" after the text. */
int sink_fail_errno(enum sink_status status, int err,
		    enum sink_status *status_r, const char **error_r,
		    const char *what);

/* The status for an error opening or creating something the user named:
   permissions and missing directories need the user, the rest may pass. */
enum sink_status sink_open_status(int err);

/* Writes buf[0..len) whole (EINTR retried).  0, or -1 with errno. */
int sink_write_all(int fd, const void *buf, size_t len);

/* Reads up to SINK_HEAD_MAX bytes from the start of the spool and takes
   the sender from its Return-Path into sender_r ("" if none). */
void sink_spool_sender(const struct sink_msg *m,
		       char sender_r[MBOX_SENDER_MAX + 1]);

/* Milliseconds on the monotonic clock. */
int64_t sink_now_ms(void);

/*
 * Sleeps for the next step of a bounded wait (10 ms, doubling up to
 * 250 ms, never past deadline_ms).  Returns false, without sleeping, if
 * the deadline has passed.
 */
bool sink_wait_step(int64_t deadline_ms, unsigned int *step_ms);

/* The two halves: each returns 0 when the message is stored, else -1
   with nothing of it left in the destination. */
int sink_mbox_commit(struct sink_msg *m, enum sink_status *status_r,
		     const char **error_r);
int sink_mda_commit(struct sink_msg *m, enum sink_status *status_r,
		    const char **error_r);

/*
 * The mbox's pending-record steps (sink.h, sink_prepare):
 *   sink_mbox_prepare  both locks taken, the append's bytes computed but
 *                      not written: *name_r (valid until m is freed) is
 *                      "mbox.<off>.<len>.<key>.<hash>" (SINK_MBOX_NAME_MAX
 *                      characters at most): the append will put len bytes
 *                      at offset off, whose SipHash-2-4 under the random
 *                      128-bit key (32 hex digits) is hash (16 hex digits);
 *   sink_mbox_publish  writes exactly those bytes, fsync (cut back to off
 *                      on any error), unlocks;
 *   sink_mbox_release  unlocks and forgets a prepared append (nothing
 *                      written); NULL m->mbox is fine;
 *   sink_mbox_locate   for each name: are those bytes at that place in
 *                      the mbox at path?  Any name not of that form is
 *                      "not stored".
 * Each returns 0, or -1 with *status_r and *error_r.
 */
#define SINK_MBOX_NAME_MAX (5 + 20 + 1 + 20 + 1 + 32 + 1 + 16)
int sink_mbox_prepare(struct sink_msg *m, const char **name_r,
		      enum sink_status *status_r, const char **error_r);
int sink_mbox_publish(struct sink_msg *m, enum sink_status *status_r,
		      const char **error_r);
void sink_mbox_release(struct sink_msg *m);
int sink_mbox_locate(const char *path, const char *const *names, size_t n,
		     bool *stored_r, enum sink_status *status_r,
		     const char **error_r);


#endif
