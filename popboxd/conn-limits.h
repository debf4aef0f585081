/*
 * conn-limits.h — connection caps per client address and in total, shared
 * by every login process.
 *
 * The master creates the table before it forks the login processes; they
 * all accept on the same sockets, so the counts live in one anonymous
 * MAP_SHARED region that every login process updates.  A client is
 * counted against its address (IPv4 /32, IPv6 /64, a v4-mapped IPv6 peer
 * as its IPv4 address: the key of auth-penalty.h).
 *
 * Crash safety.  Each count is kept per login process ("process" is the
 * login process's slot number, 0 .. processes-1): a slot of the table
 * holds the address and one count per process, and each process has its
 * own running total.  When a login process dies, whatever it held is
 * dropped by zeroing its share (conn_limits_reset_process), so a crash
 * never leaks counts.  A slot is in use exactly while one of its counts is
 * non-zero; there is no other bookkeeping, so a process killed in the
 * middle of an update leaves at worst one count off by one (healed when
 * that process is reset), never a broken table.  Updates are serialised
 * by a process-shared robust mutex: a process that dies holding it does
 * not block the others (EOWNERDEAD, then pthread_mutex_consistent).
 *
 * Trust.  The region is writable by every login process, which talks to
 * strangers, so its content is untrusted: all indexes come from private
 * memory (the process count, the hash seed), every loop is bounded, sums
 * are computed in 64 bits, and garbage yields wrong numbers, never a crash
 * or an endless loop.  The master never takes the mutex: glibc's robust
 * mutexes keep list pointers inside the mutex and unlocking writes through
 * them, so a login process that scribbled on the mutex could make its
 * unlocker write where it chose.  conn_limits_reset_process(),
 * conn_limits_count() and conn_limits_total() therefore work without the
 * lock, on relaxed atomics: resetting touches only the dead process's own
 * share, which nobody else writes.  Processes other than login processes
 * should conn_limits_destroy() their copy right after fork().
 *
 * Fail open.  The caps are abuse limits, not accounting: when the table
 * has no room for a new address (every slot of its bucket holds another
 * live address) the connection is still accepted if the total allows it,
 * counted in the total but not per address; conn_limits_untracked() says
 * how many such connections are open.  (Such connections are not counted
 * against their address later either, when it gets a slot.)  When the mutex cannot be taken
 * within CONN_LIMITS_LOCK_TIMEOUT_MS (a stuck or corrupt lock) the
 * connection is accepted uncounted and one warning is logged per process.
 *
 * Memory is fixed at create time: CONN_LIMITS_SLOTS keys plus one count
 * per slot per process (about 64 KiB + 16 KiB per process).
 */
#ifndef POPBOX_CONN_LIMITS_H
#define POPBOX_CONN_LIMITS_H

#include <stddef.h>
#include <sys/socket.h>

/* Addresses tracked at once; beyond that, see "Fail open" above. */
#define CONN_LIMITS_SLOTS 4096
/* Processes that count (login and mail, including retiring ones). */
#define CONN_LIMITS_MAX_PROCESSES 192
/* Longest wait for the lock: it is held for a few hundred instructions,
   so a second means its holder is stopped or the lock is corrupt. */
#define CONN_LIMITS_LOCK_TIMEOUT_MS 1000

enum conn_limit_result {
	/* Accepted and counted (or accepted uncounted: "Fail open"). */
	CONN_LIMIT_OK,
	/* The address already has max_per_address connections. */
	CONN_LIMIT_ADDRESS,
	/* max_total connections are open. */
	CONN_LIMIT_TOTAL,
};

struct conn_limits;

/*
 * Maps and initialises the shared table for login process slots
 * 0 .. processes-1 (1 .. CONN_LIMITS_MAX_PROCESSES).  A cap of 0 means
 * unlimited.  Call it before fork(); every child inherits the table.
 * Returns NULL with *error_r set on a bad argument or when out of memory.
 */
struct conn_limits *conn_limits_create(unsigned int max_per_address,
				       unsigned int max_total,
				       unsigned int processes,
				       const char **error_r);
/* Unmaps this process's view (the others keep theirs), clears *limits. */
void conn_limits_destroy(struct conn_limits **limits);

/*
 * Login process `process` got a connection from addr (AF_INET or
 * AF_INET6; any other family shares one key).  Checks the per-address cap
 * first, then the total; on CONN_LIMIT_OK the connection is counted and
 * must be given back with conn_limits_release() exactly once.  Also
 * CONN_LIMIT_OK for a process number out of range (nothing counted).
 */
enum conn_limit_result conn_limits_acquire(struct conn_limits *limits,
					   unsigned int process,
					   const struct sockaddr *addr);
/* A connection that conn_limits_acquire() accepted has closed, whatever
   its state.  Same process and address as the acquire. */
void conn_limits_release(struct conn_limits *limits, unsigned int process,
			 const struct sockaddr *addr);

/*
 * For the master, once login process `process` has died and before its
 * replacement starts: drops every count that process held.  Takes no lock
 * (see "Trust"); safe while the other login processes run.
 */
void conn_limits_reset_process(struct conn_limits *limits,
			       unsigned int process);

/* Snapshots without the lock, for tests and logs: open connections
   counted against addr's key, in total, and in total without a slot. */
unsigned int conn_limits_count(struct conn_limits *limits,
			       const struct sockaddr *addr);
unsigned int conn_limits_total(struct conn_limits *limits);
unsigned int conn_limits_untracked(struct conn_limits *limits);

/* For tests: the shared region (*size_r bytes); the mutex is its first
   *table_offset_r bytes, the counts and keys the rest. */
void *conn_limits_region(struct conn_limits *limits, size_t *size_r,
			 size_t *table_offset_r);

#endif
