/*
 * run.h — one popbox-fetch run for one account: connect, TLS, log in,
 * list, plan (fetch/plan.h), download into the sink with pipelining,
 * record, delete, QUIT.  This is the glue of the fetch/ modules; the
 * program (tools/popbox-fetch.c) runs one per account, several at once in
 * threads.
 *
 * The order of one run (each step only if the one before succeeded):
 *   1. open the UIDL file (its lock: one run per account at a time);
 *   2. connect; implicit TLS at once, or greeting, CAPA, STLS (required:
 *      a refusal or no STLS in CAPA is a permanent error, never a fall
 *      back to plain text), CAPA again;
 *   3. log in (sasl_client_choose: the configured method or the strongest
 *      offered; never a password in the clear unless tls = none; a
 *      refused SCRAM under auth = auto is followed by the next method);
 *   4. CAPA, STAT, LIST, UIDL (pipelined when the server has PIPELINING);
 *   5. plan_make, plan_prune_db;
 *   6. RETR/TOP within a window of RUN_WINDOW commands (1 without
 *      PIPELINING), each message streamed into a sink; at its end the
 *      octets are checked against LIST's size, then sink_commit, then
 *      uidl_db_record, and only then its DELE is queued; the DELEs of
 *      messages stored in earlier runs go in the same stream;
 *   7. QUIT: only its +OK makes the deletions real, so only then are they
 *      counted as deleted.
 * A message whose store or record fails is never deleted; after a failed
 * record no DELE at all is sent (the table is in trouble).
 *
 * Stopping (SIGINT, SIGTERM): run_request_stop() makes every run stop
 * sending, abort the message being downloaded (nothing of it stored) and
 * close without QUIT, so the server deletes nothing.
 */
#ifndef POPBOX_RUN_H
#define POPBOX_RUN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "account.h"

/* Commands in flight with PIPELINING.  RETR/TOP/DELE lines are under 25
   bytes: 128 of them, even each in its own TLS record (29 bytes more),
   stay under 7 KiB, less than the smallest send plus receive socket
   buffers (4 KiB each on Linux), so a blocking write never waits for a
   server that is itself blocked writing to us (pop3-client.h).  On a
   link with 40 ms round trips, 128 rather than 32 cut the time to fetch
   300 small messages by a third. */
#define RUN_WINDOW 128

enum run_status {
	RUN_OK,
	RUN_TEMPFAIL,     /* try again later: network, server busy, disk */
	RUN_PERMFAIL,     /* needs the user: login refused, certificate,
			     store refused, configuration against server */
	RUN_INTERRUPTED,  /* run_request_stop() */
};

enum run_line {
	RUN_LINE_ERROR,   /* stderr: an error of the account */
	RUN_LINE_WARN,    /* stderr: worth knowing, not an error */
	RUN_LINE_INFO,    /* stdout: -v, one line per message */
	RUN_LINE_LIST,    /* stdout: --list */
};

/* Where the run's lines go; called from the run's thread. */
struct run_output {
	void (*line)(void *ctx, enum run_line kind, const char *account,
		     const char *text);
	void *ctx;
};

/* Counters another thread may read at any time (the progress line). */
struct run_progress {
	atomic_bool started;          /* connected and listed */
	atomic_bool finished;
	atomic_uint_fast64_t total;   /* messages to download this run */
	atomic_uint_fast64_t total_bytes;
	atomic_uint_fast64_t done;    /* messages stored */
	atomic_uint_fast64_t bytes;   /* message bytes received */
};

struct run_options {
	bool list;               /* --list: plan and show, change nothing */
	bool verbose;            /* -v: one line per message */
	int64_t now;             /* seconds since the epoch */
	/* The password when the program has it (file or prompt); NULL:
	   password_command, run when a password is needed. */
	const char *password;
	const char *uidl_file;   /* the resolved path */
};

struct run_result {
	enum run_status status;
	uint64_t fetched;        /* messages stored (whole or header) */
	uint64_t fetched_bytes;
	uint64_t deleted;        /* confirmed by QUIT's +OK */
	uint64_t kept;           /* stored, now or before, left on server */
	uint64_t skipped;        /* left on the server, not stored */
	uint64_t errors;         /* error lines */
};

/*
 * Runs account a once.  Blocking; thread-safe (one call per thread, each
 * with its own account and UIDL file).  Always fills *result.
 */
void run_account(const struct account *a, const struct run_options *opt,
		 const struct run_output *out, struct run_progress *progress,
		 struct run_result *result);

/*
 * Asks every run, current and future, to stop at once (see above).  Safe
 * from any thread (not from a signal handler: it takes a mutex).
 */
void run_request_stop(void);
bool run_stop_requested(void);

#endif
