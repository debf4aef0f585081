/*
 * test-conn-limits.c — the connection caps shared by the login processes:
 * per-address and total caps, release, IPv6 /64 grouping, v4-mapped
 * peers, resetting a dead process's share, real processes counting in one
 * table, a process killed while holding the lock, a lock held too long,
 * a full table (fail open), and a region full of garbage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "conn-limits.h"

/* A peer address in the form accept() hands over. */
struct peer {
	struct sockaddr_storage ss;
};

static struct peer peer(const char *text)
{
	struct peer p;

	memset(&p, 0, sizeof(p));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&p.ss;
		sin6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&p.ss;
		sin->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &sin->sin_addr), 1);
	}
	return p;
}

static const struct sockaddr *sa(const struct peer *p)
{
	return (const struct sockaddr *)&p->ss;
}

/* 10.x.y.z, a distinct IPv4 address for each i < 2^24. */
static struct peer numbered(unsigned int i)
{
	char text[32];

	snprintf(text, sizeof(text), "10.%u.%u.%u", (i >> 16) & 255,
		 (i >> 8) & 255, i & 255);
	return peer(text);
}

/* In a child: dies with the parent, and after CHILD_LIFETIME seconds at
   most, so a failed assertion in the parent never leaves it hanging. */
#define CHILD_LIFETIME 30

static void child_setup(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(CHILD_LIFETIME);
}

static struct conn_limits *create(unsigned int per_address, unsigned int total,
				  unsigned int processes)
{
	const char *error = NULL;
	struct conn_limits *l =
		conn_limits_create(per_address, total, processes, &error);

	if (l == NULL)
		fail_msg("conn_limits_create: %s", error);
	return l;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_per_address_cap(void **state)
{
	(void)state;
	struct conn_limits *l = create(3, 0, 2);
	struct peer a = peer("192.0.2.7"), b = peer("192.0.2.8");

	for (int i = 0; i < 3; i++)
		assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_ADDRESS);
	/* The cap is the address's, over all login processes. */
	assert_int_equal(conn_limits_acquire(l, 1, sa(&a)), CONN_LIMIT_ADDRESS);
	/* Another address is not affected. */
	assert_int_equal(conn_limits_acquire(l, 1, sa(&b)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_count(l, sa(&a)), 3);
	assert_int_equal(conn_limits_count(l, sa(&b)), 1);
	assert_int_equal(conn_limits_total(l), 4);
	assert_int_equal(conn_limits_untracked(l), 0);
	conn_limits_destroy(&l);
	assert_null(l);
	conn_limits_destroy(&l);
}

static void test_global_cap(void **state)
{
	(void)state;
	struct conn_limits *l = create(0, 5, 3);

	for (unsigned int i = 0; i < 5; i++) {
		struct peer p = numbered(i);
		assert_int_equal(conn_limits_acquire(l, i % 3, sa(&p)),
				 CONN_LIMIT_OK);
	}
	struct peer extra = numbered(100), first = numbered(0);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&extra)), CONN_LIMIT_TOTAL);
	assert_int_equal(conn_limits_acquire(l, 2, sa(&extra)), CONN_LIMIT_TOTAL);
	assert_int_equal(conn_limits_total(l), 5);
	/* One closes: one more fits. */
	conn_limits_release(l, 0, sa(&first));
	assert_int_equal(conn_limits_total(l), 4);
	assert_int_equal(conn_limits_acquire(l, 2, sa(&extra)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 1, sa(&extra)), CONN_LIMIT_TOTAL);
	conn_limits_destroy(&l);
}

/* Both caps reached: the address's own cap is reported. */
static void test_address_checked_before_total(void **state)
{
	(void)state;
	struct conn_limits *l = create(2, 2, 1);
	struct peer a = peer("198.51.100.1"), b = peer("198.51.100.2");

	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_ADDRESS);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&b)), CONN_LIMIT_TOTAL);
	conn_limits_destroy(&l);
}

static void test_release(void **state)
{
	(void)state;
	struct conn_limits *l = create(2, 0, 2);
	struct peer a = peer("203.0.113.9"), b = peer("203.0.113.10");

	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 1, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_ADDRESS);
	conn_limits_release(l, 1, sa(&a));
	assert_int_equal(conn_limits_count(l, sa(&a)), 1);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_count(l, sa(&a)), 2);
	/* Releasing what a process does not hold changes nothing: not
	   another process's count, not the total, never below zero. */
	conn_limits_release(l, 1, sa(&a));
	conn_limits_release(l, 0, sa(&b));
	assert_int_equal(conn_limits_count(l, sa(&a)), 2);
	assert_int_equal(conn_limits_total(l), 2);
	conn_limits_release(l, 0, sa(&a));
	conn_limits_release(l, 0, sa(&a));
	conn_limits_release(l, 0, sa(&a));
	assert_int_equal(conn_limits_count(l, sa(&a)), 0);
	assert_int_equal(conn_limits_total(l), 0);
	/* The slot is free again and usable by any address. */
	assert_int_equal(conn_limits_acquire(l, 1, sa(&b)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_count(l, sa(&b)), 1);
	conn_limits_destroy(&l);
}

static void test_ipv6_counts_per_64(void **state)
{
	(void)state;
	struct conn_limits *l = create(2, 0, 1);
	struct peer one = peer("2001:db8:1:2::1");
	struct peer same64 = peer("2001:db8:1:2:ffff::9");
	struct peer third = peer("2001:db8:1:2:abcd:ef01:2345:6789");
	struct peer other64 = peer("2001:db8:1:3::1");

	assert_int_equal(conn_limits_acquire(l, 0, sa(&one)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&same64)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&third)), CONN_LIMIT_ADDRESS);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&other64)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_count(l, sa(&third)), 2);
	assert_int_equal(conn_limits_count(l, sa(&other64)), 1);
	/* Released through another address of the same /64. */
	conn_limits_release(l, 0, sa(&third));
	assert_int_equal(conn_limits_count(l, sa(&one)), 1);
	conn_limits_destroy(&l);
}

static void test_v4_mapped_is_ipv4(void **state)
{
	(void)state;
	struct conn_limits *l = create(1, 0, 2);
	struct peer v4 = peer("192.0.2.77"), mapped = peer("::ffff:192.0.2.77");
	struct peer v6 = peer("2001:db8::c000:24d");

	assert_int_equal(conn_limits_acquire(l, 0, sa(&v4)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 1, sa(&mapped)),
			 CONN_LIMIT_ADDRESS);
	assert_int_equal(conn_limits_count(l, sa(&mapped)), 1);
	/* The mapped form gives it back. */
	conn_limits_release(l, 0, sa(&mapped));
	assert_int_equal(conn_limits_count(l, sa(&v4)), 0);
	assert_int_equal(conn_limits_acquire(l, 1, sa(&mapped)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&v6)), CONN_LIMIT_OK);
	conn_limits_destroy(&l);
}

static void test_reset_process(void **state)
{
	(void)state;
	struct conn_limits *l = create(0, 0, 3);
	struct peer a = peer("192.0.2.1"), b = peer("192.0.2.2");

	for (int i = 0; i < 2; i++)
		assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 1, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 1, sa(&b)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 2, sa(&b)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_total(l), 5);

	conn_limits_reset_process(l, 1);
	assert_int_equal(conn_limits_count(l, sa(&a)), 2);
	assert_int_equal(conn_limits_count(l, sa(&b)), 1);
	assert_int_equal(conn_limits_total(l), 3);
	/* The replacement starts from nothing; a stale release from the
	   dead process's number takes nothing from the others. */
	conn_limits_release(l, 1, sa(&a));
	assert_int_equal(conn_limits_count(l, sa(&a)), 2);
	assert_int_equal(conn_limits_total(l), 3);

	conn_limits_reset_process(l, 0);
	conn_limits_reset_process(l, 2);
	assert_int_equal(conn_limits_count(l, sa(&a)), 0);
	assert_int_equal(conn_limits_count(l, sa(&b)), 0);
	assert_int_equal(conn_limits_total(l), 0);
	/* Out of range: ignored. */
	conn_limits_reset_process(l, 3);
	conn_limits_reset_process(l, CONN_LIMITS_MAX_PROCESSES + 5);
	conn_limits_destroy(&l);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	const char *error = NULL;
	struct peer a = peer("192.0.2.1");

	assert_null(conn_limits_create(1, 1, 0, &error));
	assert_non_null(error);
	error = NULL;
	assert_null(conn_limits_create(1, 1, CONN_LIMITS_MAX_PROCESSES + 1,
				       &error));
	assert_non_null(error);

	struct conn_limits *l = create(1, 2, CONN_LIMITS_MAX_PROCESSES);
	assert_int_equal(conn_limits_acquire(l, CONN_LIMITS_MAX_PROCESSES - 1,
					     sa(&a)),
			 CONN_LIMIT_OK);
	/* A process number out of range counts nothing. */
	assert_int_equal(conn_limits_acquire(l, CONN_LIMITS_MAX_PROCESSES,
					     sa(&a)),
			 CONN_LIMIT_OK);
	conn_limits_release(l, CONN_LIMITS_MAX_PROCESSES, sa(&a));
	assert_int_equal(conn_limits_total(l), 1);
	/* Families without an address all share one key. */
	struct sockaddr_storage unix_peer = { .ss_family = AF_UNIX };
	const struct sockaddr *u = (const struct sockaddr *)&unix_peer;
	assert_int_equal(conn_limits_acquire(l, 0, u), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 1, u), CONN_LIMIT_ADDRESS);
	assert_int_equal(conn_limits_count(l, u), 1);
	conn_limits_destroy(&l);
}

/* Far more addresses than slots: every slot ends up used, the rest are
   served anyway (fail open) and counted in the total and as untracked;
   the total cap still holds; releasing everything empties the table. */
static void test_table_full(void **state)
{
	(void)state;
	/* 32 addresses per bucket on average: every bucket fills. */
	const unsigned int n = 8 * CONN_LIMITS_SLOTS;
	struct conn_limits *l = create(1, n, 2);
	unsigned int tracked = 0, with_slot = n, without_slot[2] = { n, n };

	for (unsigned int i = 0; i < n; i++) {
		struct peer p = numbered(i);
		assert_int_equal(conn_limits_acquire(l, i % 2, sa(&p)),
				 CONN_LIMIT_OK);
	}
	assert_int_equal(conn_limits_total(l), n);
	assert_int_equal(conn_limits_untracked(l), n - CONN_LIMITS_SLOTS);

	struct peer over = numbered(n);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&over)), CONN_LIMIT_TOTAL);
	for (unsigned int i = 0; i < n; i++) {
		struct peer p = numbered(i);
		unsigned int count = conn_limits_count(l, sa(&p));
		assert_true(count <= 1);
		tracked += count;
		if (count == 1)
			with_slot = i;
		else if (without_slot[0] == n)
			without_slot[0] = i;
		else
			without_slot[1] = i;
	}
	assert_int_equal(tracked, CONN_LIMITS_SLOTS);
	assert_true(with_slot < n && without_slot[1] < n);

	/* Room in the total again (no slot freed): an address with a slot
	   is still held to its cap; one without is not (the per-address cap
	   fails open), but is counted in the total. */
	struct peer gone = numbered(without_slot[0]);
	struct peer p_with = numbered(with_slot);
	struct peer p_without = numbered(without_slot[1]);
	conn_limits_release(l, without_slot[0] % 2, sa(&gone));
	assert_int_equal(conn_limits_total(l), n - 1);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&p_with)),
			 CONN_LIMIT_ADDRESS);
	unsigned int untracked = conn_limits_untracked(l);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&p_without)),
			 CONN_LIMIT_OK);
	assert_int_equal(conn_limits_untracked(l), untracked + 1);
	assert_int_equal(conn_limits_total(l), n);
	conn_limits_release(l, 0, sa(&p_without));

	for (unsigned int i = 0; i < n; i++) {
		struct peer p = numbered(i);
		if (i != without_slot[0])
			conn_limits_release(l, i % 2, sa(&p));
	}
	assert_int_equal(conn_limits_total(l), 0);
	assert_int_equal(conn_limits_untracked(l), 0);
	conn_limits_destroy(&l);
}

/* Children, as login processes 0..CHILDREN-1, race on one address (a
   lost update would show in the counts), then
   hold i+1 connections from it and one from their own address while the
   parent looks.  Two give theirs back, two are killed and reset. */
#define CHILDREN 4
#define CHILD_ROUNDS 20000

static int child_run(struct conn_limits *l, unsigned int process,
		     int start_fd, int ready_fd, int go_fd)
{
	struct peer shared = peer("192.0.2.200"), own = numbered(process);
	char byte = 'r';

	/* All start together, to race. */
	if (read(start_fd, &byte, 1) != 1)
		return 9;
	for (int i = 0; i < CHILD_ROUNDS; i++) {
		if (conn_limits_acquire(l, process, sa(&shared)) != CONN_LIMIT_OK)
			return 10;
		if (conn_limits_acquire(l, process, sa(&own)) != CONN_LIMIT_OK)
			return 11;
		conn_limits_release(l, process, sa(&shared));
		conn_limits_release(l, process, sa(&own));
	}
	for (unsigned int i = 0; i <= process; i++) {
		if (conn_limits_acquire(l, process, sa(&shared)) != CONN_LIMIT_OK)
			return 12;
	}
	if (conn_limits_acquire(l, process, sa(&own)) != CONN_LIMIT_OK)
		return 13;
	if (write(ready_fd, &byte, 1) != 1 || read(go_fd, &byte, 1) != 1)
		return 14;
	for (unsigned int i = 0; i <= process; i++)
		conn_limits_release(l, process, sa(&shared));
	conn_limits_release(l, process, sa(&own));
	return 0;
}

static void test_cross_process(void **state)
{
	(void)state;
	/* 1+2+3+4 = 10 from the shared address; the parent is number 4. */
	struct conn_limits *l = create(10, 0, CHILDREN + 1);
	struct peer shared = peer("192.0.2.200");
	int start[2], ready[2], go[2];
	pid_t pids[CHILDREN];
	char byte;

	assert_int_equal(pipe(start), 0);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	for (unsigned int i = 0; i < CHILDREN; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			child_setup();
			close(start[1]);
			close(ready[0]);
			close(go[1]);
			_exit(child_run(l, i, start[0], ready[1], go[0]));
		}
	}
	close(ready[1]);
	byte = 's';
	for (unsigned int i = 0; i < CHILDREN; i++)
		assert_int_equal(write(start[1], &byte, 1), 1);
	for (unsigned int i = 0; i < CHILDREN; i++)
		assert_int_equal(read(ready[0], &byte, 1), 1);

	/* No update lost in the race; the cap counts every process. */
	assert_int_equal(conn_limits_count(l, sa(&shared)), 10);
	assert_int_equal(conn_limits_total(l), 10 + CHILDREN);
	assert_int_equal(conn_limits_acquire(l, CHILDREN, sa(&shared)),
			 CONN_LIMIT_ADDRESS);

	/* Children 2 and 3 die holding their connections. */
	for (unsigned int i = 2; i < CHILDREN; i++) {
		int status;
		assert_int_equal(kill(pids[i], SIGKILL), 0);
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFSIGNALED(status));
	}
	assert_int_equal(conn_limits_count(l, sa(&shared)), 10);
	conn_limits_reset_process(l, 2);
	conn_limits_reset_process(l, 3);
	assert_int_equal(conn_limits_count(l, sa(&shared)), 1 + 2);
	assert_int_equal(conn_limits_total(l), 1 + 2 + 2);

	/* Children 0 and 1 close theirs. */
	byte = 'g';
	for (unsigned int i = 0; i < 2; i++)
		assert_int_equal(write(go[1], &byte, 1), 1);
	for (unsigned int i = 0; i < 2; i++) {
		int status;
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(conn_limits_count(l, sa(&shared)), 0);
	assert_int_equal(conn_limits_total(l), 0);
	assert_int_equal(conn_limits_acquire(l, CHILDREN, sa(&shared)),
			 CONN_LIMIT_OK);
	close(start[0]);
	close(start[1]);
	close(ready[0]);
	close(go[0]);
	close(go[1]);
	conn_limits_destroy(&l);
}

/* Children race for an address capped at one connection: whoever gets
   it must be alone with it (a check-then-count outside the lock, or two
   slots claimed for one address, would let two in). */
static int child_contend(struct conn_limits *l, unsigned int process,
			 _Atomic int *holders, int start_fd)
{
	struct peer a = peer("198.51.100.77");
	char byte;

	if (read(start_fd, &byte, 1) != 1)
		return 9;
	for (int i = 0; i < CHILD_ROUNDS; i++) {
		enum conn_limit_result r = conn_limits_acquire(l, process, sa(&a));
		if (r == CONN_LIMIT_ADDRESS)
			continue;
		if (r != CONN_LIMIT_OK)
			return 10;
		if (atomic_fetch_add(holders, 1) != 0)
			return 20;
		atomic_fetch_sub(holders, 1);
		conn_limits_release(l, process, sa(&a));
	}
	return 0;
}

static void test_cross_process_cap_is_exact(void **state)
{
	(void)state;
	struct conn_limits *l = create(1, 0, CHILDREN);
	_Atomic int *holders = mmap(NULL, sizeof(*holders),
				    PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct peer a = peer("198.51.100.77");
	pid_t pids[CHILDREN];
	int start[2];
	char byte = 's';

	assert_true(holders != MAP_FAILED);
	assert_int_equal(pipe(start), 0);
	for (unsigned int i = 0; i < CHILDREN; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			child_setup();
			close(start[1]);
			_exit(child_contend(l, i, holders, start[0]));
		}
	}
	for (unsigned int i = 0; i < CHILDREN; i++)
		assert_int_equal(write(start[1], &byte, 1), 1);
	for (unsigned int i = 0; i < CHILDREN; i++) {
		int status;
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(conn_limits_count(l, sa(&a)), 0);
	assert_int_equal(conn_limits_total(l), 0);
	close(start[0]);
	close(start[1]);
	munmap(holders, sizeof(*holders));
	conn_limits_destroy(&l);
}

/* A child that takes the lock itself, says so, then waits to be killed. */
static pid_t child_holding_lock(struct conn_limits *l)
{
	size_t size, table_offset;
	pthread_mutex_t *lock = conn_limits_region(l, &size, &table_offset);
	int ready[2];
	char byte = 'l';
	pid_t pid;

	assert_true(table_offset >= sizeof(*lock));
	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		child_setup();
		if (pthread_mutex_lock(lock) != 0 ||
		    write(ready[1], &byte, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &byte, 1), 1);
	close(ready[0]);
	return pid;
}

static void kill_and_reap(pid_t pid)
{
	int status;

	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
}

static void test_killed_holding_lock(void **state)
{
	(void)state;
	struct conn_limits *l = create(2, 0, 2);
	struct peer a = peer("192.0.2.50");

	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
	kill_and_reap(child_holding_lock(l));

	/* The robust lock passes to the next taker at once, which counts
	   (a fail-open acquire after the timeout would not). */
	double start = now_seconds();
	assert_int_equal(conn_limits_acquire(l, 1, sa(&a)), CONN_LIMIT_OK);
	assert_true(now_seconds() - start < CONN_LIMITS_LOCK_TIMEOUT_MS / 2000.0);
	assert_int_equal(conn_limits_count(l, sa(&a)), 2);
	assert_int_equal(conn_limits_acquire(l, 1, sa(&a)), CONN_LIMIT_ADDRESS);
	conn_limits_release(l, 0, sa(&a));
	assert_int_equal(conn_limits_count(l, sa(&a)), 1);
	/* And again: the lock is healthy, not merely recovered once. */
	kill_and_reap(child_holding_lock(l));
	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_count(l, sa(&a)), 2);
	conn_limits_destroy(&l);
}

/* A holder that never lets go (stopped, or a compromised process): the
   others wait CONN_LIMITS_LOCK_TIMEOUT_MS, then serve uncounted; the
   master's calls never wait. */
static void test_lock_held_too_long(void **state)
{
	(void)state;
	struct conn_limits *l = create(1, 0, 2);
	struct peer a = peer("192.0.2.60");
	const double timeout = CONN_LIMITS_LOCK_TIMEOUT_MS / 1000.0;

	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
	pid_t pid = child_holding_lock(l);

	double start = now_seconds();
	assert_int_equal(conn_limits_acquire(l, 1, sa(&a)), CONN_LIMIT_OK);
	double waited = now_seconds() - start;
	assert_true(waited >= timeout * 0.9 && waited < timeout * 3);
	assert_int_equal(conn_limits_count(l, sa(&a)), 1);

	start = now_seconds();
	conn_limits_reset_process(l, 0);
	assert_int_equal(conn_limits_total(l), 0);
	assert_true(now_seconds() - start < timeout / 2);

	kill_and_reap(pid);
	assert_int_equal(conn_limits_acquire(l, 1, sa(&a)), CONN_LIMIT_OK);
	assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_ADDRESS);
	conn_limits_destroy(&l);
}

static void scribble(unsigned char *p, size_t len, unsigned int *seed,
		     int pattern)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pattern >= 0 ? (unsigned char)pattern
				    : (unsigned char)rand_r(seed);
}

/* Every call a process makes, on whatever the region holds. */
static void exercise(struct conn_limits *l, unsigned int processes,
		     bool locking)
{
	for (unsigned int i = 0; i < 64; i++) {
		struct peer p = i % 2 ? numbered(i) : peer("2001:db8::1");
		unsigned int process = i % (processes + 1);
		if (locking) {
			(void)conn_limits_acquire(l, process, sa(&p));
			conn_limits_release(l, process, sa(&p));
			conn_limits_release(l, process, sa(&p));
		}
		(void)conn_limits_count(l, sa(&p));
	}
	(void)conn_limits_total(l);
	(void)conn_limits_untracked(l);
}

/* Garbage anywhere in the table (keys, counts, totals): every call
   returns, and once the master has reset every process the table works
   as new.  Garbage in the mutex too: the master's calls (which never
   lock) still return. */
static void test_corrupt_region(void **state)
{
	(void)state;
	const unsigned int processes = 3;
	static const int patterns[] = { -1, -1, -1, 0xff, 0x00, 0x80, 0x01 };

	for (unsigned int round = 0;
	     round < sizeof(patterns) / sizeof(patterns[0]); round++) {
		unsigned int seed = round + 1;
		struct conn_limits *l = create(2, 100, processes);
		size_t size, table_offset;
		unsigned char *region = conn_limits_region(l, &size, &table_offset);
		struct peer a = peer("192.0.2.99");

		for (unsigned int i = 0; i < 10; i++) {
			struct peer p = numbered(i);
			(void)conn_limits_acquire(l, i % processes, sa(&p));
		}
		scribble(region + table_offset, size - table_offset, &seed,
			 patterns[round]);
		exercise(l, processes, true);
		for (unsigned int p = 0; p <= processes; p++)
			conn_limits_reset_process(l, p);
		assert_int_equal(conn_limits_total(l), 0);
		assert_int_equal(conn_limits_untracked(l), 0);
		assert_int_equal(conn_limits_count(l, sa(&a)), 0);
		assert_int_equal(conn_limits_acquire(l, 0, sa(&a)), CONN_LIMIT_OK);
		assert_int_equal(conn_limits_acquire(l, 1, sa(&a)), CONN_LIMIT_OK);
		assert_int_equal(conn_limits_acquire(l, 2, sa(&a)),
				 CONN_LIMIT_ADDRESS);
		assert_int_equal(conn_limits_total(l), 2);

		scribble(region, size, &seed, patterns[round]);
		exercise(l, processes, false);
		for (unsigned int p = 0; p <= processes; p++)
			conn_limits_reset_process(l, p);
		assert_int_equal(conn_limits_total(l), 0);
		conn_limits_destroy(&l);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_per_address_cap),
		cmocka_unit_test(test_global_cap),
		cmocka_unit_test(test_address_checked_before_total),
		cmocka_unit_test(test_release),
		cmocka_unit_test(test_ipv6_counts_per_64),
		cmocka_unit_test(test_v4_mapped_is_ipv4),
		cmocka_unit_test(test_reset_process),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_table_full),
		cmocka_unit_test(test_cross_process),
		cmocka_unit_test(test_cross_process_cap_is_exact),
		cmocka_unit_test(test_killed_holding_lock),
		cmocka_unit_test(test_lock_held_too_long),
		cmocka_unit_test(test_corrupt_region),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
