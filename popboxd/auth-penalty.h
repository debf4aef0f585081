/*
 * auth-penalty.h — slowing down repeated failed logins from one address.
 *
 * Every failed login is counted against the client's address (IPv4 /32,
 * IPv6 /64: one host usually owns a whole /64).  A later login attempt
 * from that address waits before its credentials are even checked, so a
 * guesser cannot speed up by giving up on slow answers:
 *   failures 0..2: no wait (typos happen)
 *   then 1 s, 2 s, 4 s, ... doubling, capped at max_delay_ms.
 * The count is per address, never per user, so an attacker slows only
 * himself and never locks a real user out; a real user sharing the
 * attacker's address waits at most max_delay_ms.  An address is forgiven
 * PENALTY_FORGET_SECONDS after its last failure.
 *
 * Memory is fixed: a table of AUTH_PENALTY_SLOTS entries; when a bucket
 * is full the entry with the oldest failure is replaced.  Thread-safe.
 * Time is passed in (monotonic seconds), so tests drive it.
 */
#ifndef POPBOX_AUTH_PENALTY_H
#define POPBOX_AUTH_PENALTY_H

#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#define AUTH_PENALTY_SLOTS 4096
#define AUTH_PENALTY_FREE_FAILURES 2
#define AUTH_PENALTY_FIRST_MS 1000
#define PENALTY_FORGET_SECONDS (15 * 60)

/* The address an attempt is counted against: 16 bytes (IPv4 as ::ffff:a.b.c.d). */
struct auth_penalty_key {
	uint8_t bytes[16];
};

struct auth_penalty;

/* max_delay_ms 0 turns the penalty off.  NULL when out of memory. */
struct auth_penalty *auth_penalty_new(unsigned int max_delay_ms);
void auth_penalty_free(struct auth_penalty **penalty);

/* A keyed hash of an address key given as two 64-bit words (memcpy of
   the 16 bytes): each word through MurmurHash3's fmix64 finaliser, so every
   input bit reaches the low bits.  Shared with conn-limits.c. */
uint64_t auth_penalty_hash(uint64_t seed, const uint64_t words[2]);

/* The key for a peer address (AF_INET or AF_INET6; others all share one). */
void auth_penalty_key_from(const struct sockaddr *addr,
			   struct auth_penalty_key *key_r);

/* Milliseconds an attempt from key must wait before it is verified. */
unsigned int auth_penalty_delay_ms(struct auth_penalty *penalty,
				   const struct auth_penalty_key *key,
				   time_t now);
/* A login from key failed at now. */
void auth_penalty_failed(struct auth_penalty *penalty,
			 const struct auth_penalty_key *key, time_t now);
/* How many failures key has on record (for tests and logs). */
unsigned int auth_penalty_failures(struct auth_penalty *penalty,
				   const struct auth_penalty_key *key,
				   time_t now);

#endif
