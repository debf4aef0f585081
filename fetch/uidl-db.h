/*
 * uidl-db.h — per account, the durable record of which messages were
 * already downloaded: the server's unique-id (UIDL, RFC 1939 section 7)
 * of each, with the time it was first downloaded (for "keep on the server
 * N days, then delete"), its size on the server, and whether it was
 * stored whole or only its header (TOP).
 *
 * The file (text, one record per line, LF line ends):
 *
 *   popbox-fetch-uidl 1
 *   <first seen> <size> <state> <uidl>
 *   ...
 *
 * <first seen> is seconds since the epoch (decimal, at most
 * UIDL_DB_TIME_MAX), <size> the size LIST gave (decimal, at most
 * UIDL_DB_SIZE_MAX), <state> 'F' (whole message stored) or 'H' (header
 * only), <uidl> 1..70 characters 0x21-0x7E.  Fields are separated by one
 * space; the UIDL, which cannot contain a space, is the rest of the line.
 * A later line for a UIDL replaces an earlier one (records are appended
 * as messages are stored; a full save writes each UIDL once).
 *
 * PENDING RECORDS close the one window in which a crash would give a
 * second copy (fetch/plan.h): a message going into a Maildir is written
 * and fsynced in tmp/, then its pending line is made durable, and only
 * then is it renamed into new/ (for an mbox: the append is named under
 * the locks, the pending line made durable, then the append written):
 *
 *   <first seen> <size> P<state> <name> <uidl>
 *
 * <state> is the record it becomes once stored ('F' or 'H'), <name>
 * (1..UIDL_DB_NAME_MAX characters 0x21-0x7E except '/') the file's unique
 * name in tmp/ (in new/ or cur/ the name starts with it), or an mbox
 * append's name (fetch/sink.h, sink_prepare).  A pending line says "this
 * message may be stored under this name": the next load hands such
 * records to the caller (uidl_db_pending_*), which looks the names up in
 * the destination (sink_locate: stored: the record it names; a file still
 * in tmp/: it is whole, it may be moved into new/; nowhere: not stored,
 * fetch it again) and settles them (uidl_db_settle_pending) before it plans
 * anything.  Pending lines do not touch the record of the same UIDL, if
 * one exists; a save writes the unsettled ones again.
 *
 * Writing:
 *   uidl_db_save()    the whole table into "<path>.tmp", fsync, rename
 *                     over <path>, fsync the directory: the file is
 *                     always either the old or the new one, whole;
 *   uidl_db_record()  one new record: appended with one write() and
 *                     fdatasync(), so that storing N messages costs N
 *                     small appends, not N rewrites of a file of 100,000
 *                     records (the first record of a run, or any after
 *                     the table changed otherwise, is a full save).
 * A crash during an append can leave a partial last line; it is the
 * record of a message whose DELE was not sent yet (the caller sends DELE
 * only after uidl_db_record() returned), so on load everything after the
 * last LF is ignored and counted in torn_bytes, and the next save drops
 * it.
 *
 * Loading: a missing file is an empty table (the first run).  Any other
 * defect (wrong header or version, a bad line, a symlink, a file over
 * UIDL_DB_FILE_MAX) is an error naming the line: the file is left
 * untouched and never silently emptied, since an empty table would
 * download again every message kept on the server.  The user fixes or
 * removes the file.
 *
 * uidl_db_open() also takes an OFD write lock on "<path>.lock" (created
 * if missing, never removed) for as long as the table is open: two runs
 * for one account at once (cron and a manual run, or two threads) would
 * each download and DELE the same messages.
 *
 * The table is a hash table keyed with SipHash-2-4 under a random key (a
 * server chooses the UIDLs, so it must not be able to make them collide);
 * lookups and inserts are O(1), 100,000 records load in milliseconds.
 * Not thread-safe: one table per account, used by one thread at a time.
 */
#ifndef POPBOX_UIDL_DB_H
#define POPBOX_UIDL_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 1939 section 7: a unique-id is 1 to 70 characters 0x21-0x7E. */
#define UIDL_DB_UIDL_MAX 70
/* first seen: up to about the year 36812; keeps day arithmetic far from
   overflow. */
#define UIDL_DB_TIME_MAX ((int64_t)1 << 40)
/* size: as lib/maildir-name.h, larger than any real message. */
#define UIDL_DB_SIZE_MAX ((uint64_t)1 << 48)
/* Records in one table: popboxd caps a maildrop at 1,000,000 messages;
   twice that for any server. */
#define UIDL_DB_RECORDS_MAX 2000000
/* The file: UIDL_DB_RECORDS_MAX lines of at most UIDL_DB_LINE_MAX. */
#define UIDL_DB_LINE_MAX (13 + 1 + 15 + 1 + 1 + 1 + UIDL_DB_UIDL_MAX + 1)
#define UIDL_DB_FILE_MAX \
	((size_t)UIDL_DB_RECORDS_MAX * UIDL_DB_PENDING_LINE_MAX)
/* A pending record's file name (a Maildir base name). */
#define UIDL_DB_NAME_MAX 127
/* A pending line: two more fields. */
#define UIDL_DB_PENDING_LINE_MAX (UIDL_DB_LINE_MAX + 1 + 1 + UIDL_DB_NAME_MAX)
#define UIDL_DB_HEADER "popbox-fetch-uidl 1\n"

enum uidl_db_state {
	UIDL_DB_FULL = 'F',    /* the whole message is stored */
	UIDL_DB_HEADERS = 'H', /* only its header (TOP), the body is not */
};

/* The state letter that starts a pending line's state field. */
#define UIDL_DB_PENDING 'P'

struct uidl_db_rec {
	int64_t first_seen;    /* 0..UIDL_DB_TIME_MAX */
	uint64_t size;         /* 0..UIDL_DB_SIZE_MAX */
	enum uidl_db_state state;
};

struct uidl_db_load_info {
	bool missing;          /* there was no file: an empty table */
	size_t records;        /* distinct UIDLs loaded */
	size_t pending;        /* pending records loaded (not settled) */
	size_t torn_bytes;     /* bytes after the last LF, ignored */
};

struct uidl_db;

/* An empty table in memory, with no file (uidl_db_save() refuses).
   NULL if out of memory. */
struct uidl_db *uidl_db_new(void);

/*
 * Locks "<path>.lock" and loads path (see above).  Returns 0 with *db_r
 * (and *info_r if not NULL), or -1 with *error_r: locked by another run,
 * unreadable, or damaged (with the line number and what is wrong).
 */
int uidl_db_open(const char *path, struct uidl_db **db_r,
		 struct uidl_db_load_info *info_r, const char **error_r);

/*
 * Parses text[0..len) (a whole file) into db, which must be empty.
 * Pure apart from filling db; the parser of untrusted bytes that
 * tests/fuzz/fuzz-uidl-db.c runs.  Returns 0 (with *info_r if not NULL),
 * or -1 with *error_r ("line N: ...") and db emptied again.
 */
int uidl_db_parse(struct uidl_db *db, const char *text, size_t len,
		  struct uidl_db_load_info *info_r, const char **error_r);

/* True if uidl[0..len) is a unique-id RFC 1939 allows. */
bool uidl_db_uidl_valid(const char *uidl, size_t len);

/* Looks uidl[0..len) up; true with *rec_r if it is recorded. */
bool uidl_db_get(const struct uidl_db *db, const char *uidl, size_t len,
		 struct uidl_db_rec *rec_r);

/*
 * Adds or replaces the record of uidl[0..len), in memory only.  Returns
 * 0, or -1 with *error_r (an invalid UIDL or field, the table full, out of
 * memory).
 */
int uidl_db_set(struct uidl_db *db, const char *uidl, size_t len,
		const struct uidl_db_rec *rec, const char **error_r);

/*
 * uidl_db_set(), then makes the record durable (an fdatasync'ed append,
 * or a full save).  Returns 0 only once it is on disk; -1 with *error_r
 * otherwise (the record stays in memory and goes to disk with the next
 * successful save; the caller must not send DELE for it).
 */
int uidl_db_record(struct uidl_db *db, const char *uidl, size_t len,
		   const struct uidl_db_rec *rec, const char **error_r);

/* One record of a group commit (uidl_db_record_batch). */
struct uidl_db_batch_item {
	const char *uidl;
	size_t len;
	struct uidl_db_rec rec;
};

/* Records in one group commit, at most. */
#define UIDL_DB_BATCH_MAX 1024

/*
 * uidl_db_record() for items[0..n) (1 <= n <= UIDL_DB_BATCH_MAX) with one
 * write() and one fdatasync() for them all: a group commit of the
 * messages that completed in one read from the server.  Returns 0 only
 * once all are on disk; -1 with *error_r otherwise (none may be counted
 * durable: no DELE for any of them; those set in memory go to disk with
 * the next successful save).
 */
int uidl_db_record_batch(struct uidl_db *db,
			 const struct uidl_db_batch_item *items, size_t n,
			 const char **error_r);

/* True if name[0..len) may be a pending record's file name. */
bool uidl_db_name_valid(const char *name, size_t len);

/*
 * Makes pending records (see above) for items[0..n) (1 <= n <=
 * UIDL_DB_BATCH_MAX; names[i] is item i's file name) durable: one write()
 * and one fdatasync() for them all (a full save if the table has changes
 * only a save writes).  Returns 0 only once they are on disk: then, and
 * only then, may the files be renamed into new/.  -1 with *error_r (none
 * may be renamed; the records stay pending in memory and a later save
 * writes them: a lookup finds the files in tmp/ or nowhere).  They join
 * the pending list in memory.
 */
int uidl_db_record_pending(struct uidl_db *db,
			   const struct uidl_db_batch_item *items,
			   const char *const *names, size_t n,
			   const char **error_r);

/* Pending records: those loaded from the file and not settled, and
   those uidl_db_record_pending() made since the last settle. */
size_t uidl_db_pending_count(const struct uidl_db *db);

/* The i-th pending record: its UIDL (not NUL-terminated), the record it
   becomes once stored, and its file name (NUL-terminated). */
void uidl_db_pending_at(const struct uidl_db *db, size_t i,
			const char **uidl_r, size_t *len_r,
			struct uidl_db_rec *rec_r, const char **name_r);

/*
 * Settles every pending record: stored[i] true puts pending record i's
 * record into the table (as uidl_db_set), false drops it.  The pending
 * list is empty afterwards.  Nothing is written: the file's pending
 * lines say the same to a crash's next load (the files are where the
 * lookup finds them), and the next save replaces them with plain
 * records; uidl_db_dirty() says a save is due.  0, or -1 with *error_r
 * (out of memory, the table full: the list is left as it was).
 */
int uidl_db_settle_pending(struct uidl_db *db, const bool *stored,
			   const char **error_r);

/*
 * Keeps only the records for which keep() returns true, in memory (the
 * next save writes the result).  Returns how many were removed.
 */
size_t uidl_db_retain(struct uidl_db *db,
		      bool (*keep)(const char *uidl, size_t len,
				   const struct uidl_db_rec *rec, void *ctx),
		      void *ctx);

/* Writes the whole table durably (see above).  0, or -1 with *error_r and
   the file as it was. */
int uidl_db_save(struct uidl_db *db, const char **error_r);

/* True if the table has changes that only a full save puts on disk, or
   the file has pending lines that are settled in memory. */
bool uidl_db_dirty(const struct uidl_db *db);

/* Number of records. */
size_t uidl_db_count(const struct uidl_db *db);

/*
 * The i-th record (0 <= i < uidl_db_count(), in file order; indexes
 * change when uidl_db_retain() removes records): *uidl_r (not
 * NUL-terminated), *len_r, *rec_r.
 */
void uidl_db_at(const struct uidl_db *db, size_t i, const char **uidl_r,
		size_t *len_r, struct uidl_db_rec *rec_r);

/*
 * The record's line "<first seen> <size> <state> <uidl>\n" into buf
 * (UIDL_DB_LINE_MAX + 1 bytes).  Returns its length.
 */
size_t uidl_db_format_line(char buf[UIDL_DB_LINE_MAX + 1], const char *uidl,
			   size_t len, const struct uidl_db_rec *rec);

/* A pending record's line "<first seen> <size> P<state> <name> <uidl>\n"
   into buf.  Returns its length. */
size_t uidl_db_format_pending(char buf[UIDL_DB_PENDING_LINE_MAX + 1],
			      const char *uidl, size_t len,
			      const struct uidl_db_rec *rec, const char *name);

/* Frees *db (dropping its lock, not saving) and sets it to NULL; NULL is
   fine. */
void uidl_db_free(struct uidl_db **db);

#endif
