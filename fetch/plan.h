/*
 * plan.h — the pure decision of one popbox-fetch run for one account:
 * given what the server lists (LIST: number and size; UIDL: number and
 * unique-id, if the server has UIDL), what was downloaded before (the
 * UIDL table, fetch/uidl-db.h), the time, and the account's policy, what
 * to do with each message: RETR (and store), TOP (store the header only),
 * DELE, or nothing.  No I/O: the program executes the plan.
 *
 * The policies:
 *   delete   (the POP3 default) a message is DELEted once it is stored;
 *   keep     never DELE;
 *   keep N days after the first download, then DELE (N = 0: as delete);
 *   new only (default) a message whose UIDL is recorded is not fetched
 *            again; fetch_all fetches every listed message (a deliberate
 *            second copy, e.g. into a new mailbox);
 *   size limit: a larger message is skipped, or only its header is
 *            stored (TOP n top_lines; 0 = header only); such a message is
 *            recorded as header-only, never DELEted, and fetched whole
 *            once it fits the limit (the limit raised);
 *   at most K messages fetched (RETR or TOP) per run, the lowest numbers
 *            first; DELEs of messages stored earlier do not count.
 *
 * Without UIDL the server gives no way to know what was downloaded
 * before, so the only safe policy is "fetch everything and delete it":
 * plan_make() refuses keep, keep N days and header-only with such a
 * server, and stores nothing in the table.
 *
 * THE ORDER THAT MAKES CRASHES SAFE.  For each message the program does
 *   1. RETR, streamed into the sink (fetch/sink.h);
 *   2. sink_commit() returns 0: the message is durable (fsync) locally;
 *   3. uidl_db_record() returns 0: its record is durable (fdatasync);
 *   4. DELE (only if the action says dele_after);
 *   5. QUIT, whose UPDATE state is the only place a server deletes.
 * Steps 1-4 may be pipelined across messages (RETR n+1 sent before n is
 * stored; DELEs sent in batches), as long as each message's DELE is sent
 * after its own 2 and 3.  If 2 or 3 fails, no DELE for that message; if 3
 * fails the run should end (QUIT), since later records would fail too.
 * What a crash (or a dropped connection) at each point leaves, and what
 * the next run does:
 *   - during 1 or 2: nothing visible locally (tmp/ file, spool, mbox cut
 *     back, MDA not started), nothing recorded, nothing deleted: the next
 *     run fetches the message: once.
 *   - after 2, before 3 completes: stored, not recorded, not deleted: the
 *     next run fetches it again, A SECOND COPY (between two fsyncs,
 *     milliseconds; only a crash of this process or the machine, never a
 *     network fault, since 3 is local).  Never a loss.  For an MDA this
 *     window stays.  A Maildir and an mbox close it by doing 3 in the
 *     middle of 2, with a durable PENDING record (uidl-db.h) naming the
 *     message before it can be seen:
 *       Maildir: the file fsynced in tmp/, the pending record naming it,
 *       the rename into new/, the fsync of new/ (the messages of one read
 *       together: one fdatasync, one fsync of new/);
 *       mbox: both locks taken, the append's bytes computed from the
 *       spool but not written, the pending record naming them
 *       ("mbox.<offset>.<length>.<key>.<SipHash>"), the append and its
 *       fsync, the unlock (one message at a time: the lock is held from
 *       the name to the append).
 *     The next run looks the pending names up (fetch/run.c recover,
 *     sink_locate): the file in new/, cur/ or tmp/, or exactly those
 *     bytes at that offset of the mbox; each message is stored or not
 *     stored, never both.  A crash in the middle of an mbox append leaves
 *     a torn message at the end of the file: not stored, fetched again
 *     and appended whole after it; the torn part stays (sink.h).
 *   - after 3, before 5 completes: recorded, maybe DELE-marked, not
 *     deleted (a server deletes only in UPDATE after QUIT): the next run
 *     finds the record and does not fetch it again; under delete (or
 *     keep N days, when due) it sends DELE again.  Once.
 *   - after 5: gone from the server; the next run drops its record
 *     (plan_prune_db) once the server no longer lists it.
 * And nothing is ever deleted that is not stored: a DELE goes out only
 * (a) after 2 and 3 in this run (dele_after), or (b) for a message with a
 * whole-message record ('F') loaded from the table, and records are
 * written only after step 2.  A record is trusted for a DELE only if the
 * server's size still equals the recorded size (a server that reuses
 * UIDLs must not make us delete a new message unseen: with another size
 * the message counts as new), and never when the server lists the UIDL
 * twice (such messages are skipped: which one was stored is unknowable).
 * Message numbers come from this session's listings, which RFC 1939 keeps
 * fixed for the session.
 *
 * Without UIDL: RETR, commit, DELE; a crash after the commit and before
 * QUIT completes gives a second copy next run (nothing can tell), never a
 * loss.
 */
#ifndef POPBOX_PLAN_H
#define POPBOX_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uidl-db.h"

#define PLAN_DAY_SECONDS 86400
/* Bounds of the policy's numbers (ten years of days; a TOP line count). */
#define PLAN_KEEP_DAYS_MAX 3650
#define PLAN_TOP_LINES_MAX 1000000

/* One line of the LIST (scan) listing. */
struct plan_scan {
	uint32_t num;          /* message number, >= 1 */
	uint64_t size;         /* octets, as the server counts them */
};

/* One line of the UIDL listing. */
struct plan_uid {
	uint32_t num;
	const char *uidl;      /* not NUL-terminated; kept by the caller */
	size_t len;
};

struct plan_input {
	const struct plan_scan *scan;
	size_t scan_count;
	bool have_uidl;        /* the server answered UIDL */
	const struct plan_uid *uids;
	size_t uid_count;
	const struct uidl_db *db;  /* may be NULL without UIDL */
	int64_t now;           /* seconds since the epoch */
};

enum plan_keep {
	PLAN_DELETE = 0,       /* DELE once stored (the default) */
	PLAN_KEEP,             /* never DELE */
	PLAN_KEEP_DAYS,        /* DELE keep_days after the first download */
};

enum plan_oversize {
	PLAN_OVERSIZE_SKIP = 0,    /* leave it on the server, untouched */
	PLAN_OVERSIZE_HEADERS,     /* store its header (TOP), keep it there */
};

struct plan_policy {
	enum plan_keep keep;
	uint32_t keep_days;          /* PLAN_KEEP_DAYS: 0..PLAN_KEEP_DAYS_MAX */
	bool fetch_all;              /* also messages downloaded before */
	uint64_t size_limit;         /* 0 = none */
	enum plan_oversize oversize;
	uint32_t top_lines;          /* body lines with the header (TOP n) */
	uint32_t max_messages;       /* RETR + TOP per run; 0 = no limit */
};

enum plan_op {
	PLAN_OP_SKIP = 0,      /* nothing to do */
	PLAN_OP_RETR,          /* fetch whole, store, record, maybe DELE */
	PLAN_OP_TOP,           /* fetch header, store, record as 'H' */
	PLAN_OP_DELE,          /* stored in an earlier run: only DELE */
};

enum plan_reason {
	PLAN_R_NEW = 0,        /* RETR/TOP: not downloaded before */
	PLAN_R_SIZE_CHANGED,   /* RETR/TOP: recorded, but with another size */
	PLAN_R_NOW_FITS,       /* RETR: header stored before, now fits */
	PLAN_R_FETCH_ALL,      /* RETR/TOP: downloaded before, fetch_all */
	PLAN_R_STORED,         /* DELE: stored before (delete policy) */
	PLAN_R_EXPIRED,        /* DELE: kept N days, now due */
	PLAN_R_KEPT,           /* SKIP: stored before, kept on the server */
	PLAN_R_HEADERS_KEPT,   /* SKIP: header stored before, still too big */
	PLAN_R_TOO_BIG,        /* SKIP: over the size limit */
	PLAN_R_RUN_LIMIT,      /* SKIP: max_messages reached this run */
	PLAN_R_NO_UIDL,        /* SKIP: listed without a (valid) UIDL */
	PLAN_R_DUP_UIDL,       /* SKIP: its UIDL is listed more than once */
	PLAN_R_NO_SIZE,        /* SKIP: in the UIDL listing only, not LIST */
};

struct plan_action {
	uint32_t num;
	uint64_t size;             /* LIST's size (0 for PLAN_R_NO_SIZE) */
	enum plan_op op;
	enum plan_reason reason;
	uint32_t top_lines;        /* PLAN_OP_TOP: n in "TOP msg n" */
	bool dele_after;           /* PLAN_OP_RETR: DELE after steps 2 and 3 */
	const char *uidl;          /* into the input's listing; NULL without */
	size_t uidl_len;
	/* RETR and TOP with a UIDL: what uidl_db_record() gets after the
	   commit (first_seen kept from an earlier download where that is
	   the policy's clock). */
	struct uidl_db_rec record;
};

struct plan {
	struct plan_action *actions;   /* one per listed message, by number */
	size_t count;
	size_t fetch_count;            /* RETR + TOP */
	uint64_t fetch_bytes;          /* their LIST sizes */
	size_t dele_count;             /* DELE ops + RETRs with dele_after */
	size_t skip_count;
};

/*
 * Makes the plan.  Returns 0 with *plan_r (free it with plan_free), or -1
 * with *error_r: a listing the server got wrong (a message number 0 or
 * listed twice in one listing), a policy that needs UIDL when the server
 * has none, a policy value out of range, out of memory.
 */
int plan_make(const struct plan_input *in, const struct plan_policy *pol,
	      struct plan *plan_r, const char **error_r);

void plan_free(struct plan *plan);

/*
 * Drops from db the records whose UIDL the server no longer lists (the
 * messages are gone, deleted by us or by someone else), so that the
 * table does not grow forever.  Call with the same (complete, valid)
 * listing plan_make() accepted; does nothing without UIDL.  Returns the
 * number removed (in memory: the next save or record writes it).
 */
size_t plan_prune_db(struct uidl_db *db, const struct plan_input *in);

/* A short word for an op ("retr", "top", "dele", "skip") and a reason
   ("new", "too-big", ...), for --list and logs. */
const char *plan_op_name(enum plan_op op);
const char *plan_reason_name(enum plan_reason reason);

#endif
