/*
 * conn-limits.c — connection counts shared by the login processes (see
 * conn-limits.h).
 *
 * Layout of the shared region:
 *   lock                      the robust, process-shared mutex
 *   keys[CONN_LIMITS_SLOTS]   the address each slot counts
 *   shares[processes]         per login process: its total, its connections
 *                             without a slot, and one count per slot
 * Slots form an 8-way set-associative table: a keyed hash of the address
 * (the seed is random, chosen at create time, so nobody outside can aim
 * many addresses at one bucket) picks a bucket of CONN_LIMITS_WAYS slots.
 * A slot is live while the sum of its counts over all processes is
 * non-zero; a slot whose counts are all zero is free, whatever its key.
 *
 * Every word of the region is read and written with relaxed atomics: the
 * master resets a dead process's share without the lock while the others
 * run (the lock orders the login processes among themselves), and nothing
 * read from the region is ever used as an index or a pointer.
 */
#include "conn-limits.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#include "auth-penalty.h"
#include "log.h"

#define CONN_LIMITS_WAYS 8
#define CONN_LIMITS_BUCKETS (CONN_LIMITS_SLOTS / CONN_LIMITS_WAYS)
#define NO_SLOT SIZE_MAX

/* One login process's share of the counts.  Only that process writes it
   while it lives; only the master (conn_limits_reset_process) once it has
   died. */
struct limits_share {
	_Atomic uint32_t total;     /* connections it holds */
	_Atomic uint32_t untracked; /* of which counted without a slot */
	_Atomic uint32_t slots[CONN_LIMITS_SLOTS];
};

struct limits_shared {
	pthread_mutex_t lock;
	_Atomic uint64_t keys[CONN_LIMITS_SLOTS][2];
	struct limits_share shares[];
};

/* Private to each process (copied by fork): nothing here comes from the
   shared region, so corrupt shared content cannot move an index. */
struct conn_limits {
	struct limits_shared *shared;
	size_t size;
	uint64_t seed;
	unsigned int max_per_address;
	unsigned int max_total;
	unsigned int processes;
	atomic_bool lock_warned; /* login processes may have threads */
};

static uint32_t load32(_Atomic uint32_t *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

static void store32(_Atomic uint32_t *p, uint32_t value)
{
	atomic_store_explicit(p, value, memory_order_relaxed);
}

/* +1, saturating: a corrupt UINT32_MAX must not wrap to "free". */
static void inc32(_Atomic uint32_t *p)
{
	uint32_t v = load32(p);
	if (v < UINT32_MAX)
		store32(p, v + 1);
}

/* -1, never below 0. */
static void dec32(_Atomic uint32_t *p)
{
	uint32_t v = load32(p);
	if (v > 0)
		store32(p, v - 1);
}

static unsigned int clamp_uint(uint64_t v)
{
	return v > UINT_MAX ? UINT_MAX : (unsigned int)v;
}

static int limits_init_lock(pthread_mutex_t *lock)
{
	pthread_mutexattr_t attr;
	int ret;

	if ((ret = pthread_mutexattr_init(&attr)) != 0)
		return ret;
	ret = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	if (ret == 0)
		ret = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	if (ret == 0)
		ret = pthread_mutex_init(lock, &attr);
	pthread_mutexattr_destroy(&attr);
	return ret;
}

struct conn_limits *conn_limits_create(unsigned int max_per_address,
				       unsigned int max_total,
				       unsigned int processes,
				       const char **error_r)
{
	struct conn_limits *l;
	int ret;

	if (processes == 0 || processes > CONN_LIMITS_MAX_PROCESSES) {
		*error_r = "login process count out of range";
		return NULL;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	if (getrandom(&l->seed, sizeof(l->seed), 0) != sizeof(l->seed)) {
		*error_r = strerror(errno);
		free(l);
		return NULL;
	}
	/* At most 64 shares of 16 KiB each: no overflow. */
	l->size = sizeof(struct limits_shared) +
		  (size_t)processes * sizeof(struct limits_share);
	l->shared = mmap(NULL, l->size, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (l->shared == MAP_FAILED) {
		*error_r = strerror(errno);
		free(l);
		return NULL;
	}
	/* The mapping is zero-filled: every count 0, every slot free. */
	if ((ret = limits_init_lock(&l->shared->lock)) != 0) {
		*error_r = strerror(ret);
		munmap(l->shared, l->size);
		free(l);
		return NULL;
	}
	l->max_per_address = max_per_address;
	l->max_total = max_total;
	l->processes = processes;
	return l;
}

void conn_limits_destroy(struct conn_limits **limits)
{
	struct conn_limits *l = *limits;

	if (l == NULL)
		return;
	/* No pthread_mutex_destroy: other processes still use the lock,
	   and the master must not touch it (see the header). */
	munmap(l->shared, l->size);
	free(l);
	*limits = NULL;
}

static void limits_key(const struct sockaddr *addr, uint64_t key_r[2])
{
	struct auth_penalty_key key;

	auth_penalty_key_from(addr, &key);
	memcpy(key_r, key.bytes, sizeof(key.bytes));
}

/* The first slot of key's bucket (auth-penalty.c's keyed hash). */
static size_t limits_bucket(const struct conn_limits *l, const uint64_t key[2])
{
	return (size_t)(auth_penalty_hash(l->seed, key) % CONN_LIMITS_BUCKETS) *
	       CONN_LIMITS_WAYS;
}

static bool slot_has_key(struct limits_shared *s, size_t slot,
			 const uint64_t key[2])
{
	return atomic_load_explicit(&s->keys[slot][0], memory_order_relaxed) ==
		       key[0] &&
	       atomic_load_explicit(&s->keys[slot][1], memory_order_relaxed) ==
		       key[1];
}

/* Connections counted in slot, over all processes. */
static uint64_t slot_sum(const struct conn_limits *l, size_t slot)
{
	uint64_t sum = 0;

	for (unsigned int p = 0; p < l->processes; p++)
		sum += load32(&l->shared->shares[p].slots[slot]);
	return sum;
}

/* The live slot holding key in the bucket starting at first, or NO_SLOT. */
static size_t limits_find(const struct conn_limits *l, const uint64_t key[2],
			  size_t first)
{
	for (size_t slot = first; slot < first + CONN_LIMITS_WAYS; slot++) {
		if (slot_has_key(l->shared, slot, key) && slot_sum(l, slot) > 0)
			return slot;
	}
	return NO_SLOT;
}

/* A free slot of the bucket, now keyed with key (its counts are all 0, so
   it stays free until the caller counts in it), or NO_SLOT. */
static size_t limits_claim(const struct conn_limits *l, const uint64_t key[2],
			   size_t first)
{
	for (size_t slot = first; slot < first + CONN_LIMITS_WAYS; slot++) {
		if (slot_sum(l, slot) != 0)
			continue;
		atomic_store_explicit(&l->shared->keys[slot][0], key[0],
				      memory_order_relaxed);
		atomic_store_explicit(&l->shared->keys[slot][1], key[1],
				      memory_order_relaxed);
		return slot;
	}
	return NO_SLOT;
}

static uint64_t limits_sum_totals(const struct conn_limits *l)
{
	uint64_t sum = 0;

	for (unsigned int p = 0; p < l->processes; p++)
		sum += load32(&l->shared->shares[p].total);
	return sum;
}

static void limits_lock_failed(struct conn_limits *l, int error)
{
	if (atomic_exchange(&l->lock_warned, true))
		return;
	log_warn("conn_limits: lock failed error=%s; connections not counted",
		 strerror(error));
}

/* Takes the lock within CONN_LIMITS_LOCK_TIMEOUT_MS.  false: not held. */
static bool limits_lock(struct conn_limits *l)
{
	pthread_mutex_t *lock = &l->shared->lock;
	struct timespec deadline;
	int ret;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += CONN_LIMITS_LOCK_TIMEOUT_MS / 1000;
	deadline.tv_nsec += (CONN_LIMITS_LOCK_TIMEOUT_MS % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	ret = pthread_mutex_clocklock(lock, CLOCK_MONOTONIC, &deadline);
	if (ret == EOWNERDEAD) {
		/* The holder died mid-update: at worst one of its counts is
		   off by one, and the master resets its share anyway. */
		log_warn("conn_limits: a login process died holding the lock");
		if ((ret = pthread_mutex_consistent(lock)) != 0)
			pthread_mutex_unlock(lock);
	}
	if (ret != 0) {
		limits_lock_failed(l, ret);
		return false;
	}
	return true;
}

static void limits_unlock(struct conn_limits *l)
{
	pthread_mutex_unlock(&l->shared->lock);
}

/* Under the lock: the caps, then the counting.  The slot count goes up
   before the total, so a crash in between leaves only a count that the
   master's reset drops. */
static enum conn_limit_result limits_admit(struct conn_limits *l,
					   unsigned int process,
					   const uint64_t key[2])
{
	struct limits_share *share = &l->shared->shares[process];
	size_t first = limits_bucket(l, key);
	size_t slot = limits_find(l, key, first);

	if (slot != NO_SLOT && l->max_per_address != 0 &&
	    slot_sum(l, slot) >= l->max_per_address)
		return CONN_LIMIT_ADDRESS;
	if (l->max_total != 0 && limits_sum_totals(l) >= l->max_total)
		return CONN_LIMIT_TOTAL;
	if (slot == NO_SLOT)
		slot = limits_claim(l, key, first);
	if (slot == NO_SLOT)
		inc32(&share->untracked); /* bucket full: fail open */
	else
		inc32(&share->slots[slot]);
	inc32(&share->total);
	return CONN_LIMIT_OK;
}

enum conn_limit_result conn_limits_acquire(struct conn_limits *l,
					   unsigned int process,
					   const struct sockaddr *addr)
{
	enum conn_limit_result result;
	uint64_t key[2];

	if (process >= l->processes)
		return CONN_LIMIT_OK;
	limits_key(addr, key);
	if (!limits_lock(l))
		return CONN_LIMIT_OK;
	result = limits_admit(l, process, key);
	limits_unlock(l);
	return result;
}

void conn_limits_release(struct conn_limits *l, unsigned int process,
			 const struct sockaddr *addr)
{
	uint64_t key[2];

	if (process >= l->processes)
		return;
	limits_key(addr, key);
	if (!limits_lock(l))
		return;

	struct limits_share *share = &l->shared->shares[process];
	size_t first = limits_bucket(l, key);
	bool held = false;

	/* This process's own count for key; failing that, one of its
	   connections that got no slot (the table was full then). */
	for (size_t slot = first; slot < first + CONN_LIMITS_WAYS; slot++) {
		if (slot_has_key(l->shared, slot, key) &&
		    load32(&share->slots[slot]) > 0) {
			dec32(&share->slots[slot]);
			held = true;
			break;
		}
	}
	if (!held && load32(&share->untracked) > 0) {
		dec32(&share->untracked);
		held = true;
	}
	/* Not held: a double release, or an acquire that could not lock. */
	if (held)
		dec32(&share->total);
	limits_unlock(l);
}

void conn_limits_reset_process(struct conn_limits *l, unsigned int process)
{
	if (process >= l->processes)
		return;

	struct limits_share *share = &l->shared->shares[process];

	/* No lock: nobody else writes this share (its owner is dead), and
	   zeroing a count can only turn a live slot into a free one, which
	   the lock holder then sees either way. */
	for (size_t slot = 0; slot < CONN_LIMITS_SLOTS; slot++)
		store32(&share->slots[slot], 0);
	store32(&share->untracked, 0);
	store32(&share->total, 0);
}

unsigned int conn_limits_count(struct conn_limits *l,
			       const struct sockaddr *addr)
{
	uint64_t key[2], sum = 0;
	size_t first;

	limits_key(addr, key);
	first = limits_bucket(l, key);
	for (size_t slot = first; slot < first + CONN_LIMITS_WAYS; slot++) {
		if (slot_has_key(l->shared, slot, key))
			sum += slot_sum(l, slot);
	}
	return clamp_uint(sum);
}

unsigned int conn_limits_total(struct conn_limits *l)
{
	return clamp_uint(limits_sum_totals(l));
}

unsigned int conn_limits_untracked(struct conn_limits *l)
{
	uint64_t sum = 0;

	for (unsigned int p = 0; p < l->processes; p++)
		sum += load32(&l->shared->shares[p].untracked);
	return clamp_uint(sum);
}

void *conn_limits_region(struct conn_limits *l, size_t *size_r,
			 size_t *table_offset_r)
{
	*size_r = l->size;
	*table_offset_r = offsetof(struct limits_shared, keys);
	return l->shared;
}
