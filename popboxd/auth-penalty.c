/*
 * auth-penalty.c — failed logins per address (see auth-penalty.h).
 *
 * An 8-way set-associative table: the key's hash (keyed with a random
 * per-process seed, so nobody can aim collisions at a victim's bucket
 * from outside) picks a bucket of AUTH_PENALTY_WAYS slots.
 */
#include "auth-penalty.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define AUTH_PENALTY_WAYS 8
#define AUTH_PENALTY_BUCKETS (AUTH_PENALTY_SLOTS / AUTH_PENALTY_WAYS)

struct penalty_slot {
	struct auth_penalty_key key;
	time_t last_failure;
	unsigned int failures;   /* 0: the slot is free */
};

struct auth_penalty {
	pthread_mutex_t lock;
	unsigned int max_delay_ms;
	uint64_t seed;
	struct penalty_slot slots[AUTH_PENALTY_SLOTS];
};

struct auth_penalty *auth_penalty_new(unsigned int max_delay_ms)
{
	struct auth_penalty *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	p->max_delay_ms = max_delay_ms;
	if (getrandom(&p->seed, sizeof(p->seed), 0) != sizeof(p->seed))
		p->seed = (uint64_t)(uintptr_t)p ^ (uint64_t)time(NULL);
	return p;
}

void auth_penalty_free(struct auth_penalty **penalty)
{
	if (*penalty == NULL)
		return;
	pthread_mutex_destroy(&(*penalty)->lock);
	free(*penalty);
	*penalty = NULL;
}

void auth_penalty_key_from(const struct sockaddr *addr,
			   struct auth_penalty_key *key_r)
{
	memset(key_r, 0, sizeof(*key_r));
	if (addr->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
		key_r->bytes[10] = 0xff;
		key_r->bytes[11] = 0xff;
		memcpy(key_r->bytes + 12, &in->sin_addr, 4);
	} else if (addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
		const uint8_t *b = in6->sin6_addr.s6_addr;
		static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
						      0, 0, 0xff, 0xff };
		/* A v4-mapped peer counts as its IPv4 address; any other
		   IPv6 peer as its /64. */
		memcpy(key_r->bytes, b, memcmp(b, v4mapped, 12) == 0 ? 16 : 8);
	}
}

uint64_t auth_penalty_hash(uint64_t seed, const uint64_t words[2])
{
	uint64_t h = seed;

	for (size_t i = 0; i < 2; i++) {
		h ^= words[i];
		h ^= h >> 33;
		h *= 0xff51afd7ed558ccdull;
		h ^= h >> 33;
		h *= 0xc4ceb9fe1a85ec53ull;
		h ^= h >> 33;
	}
	return h;
}

static size_t penalty_bucket(const struct auth_penalty *p,
			     const struct auth_penalty_key *key)
{
	uint64_t words[2];

	memcpy(words, key->bytes, sizeof(words));
	return (size_t)(auth_penalty_hash(p->seed, words) % AUTH_PENALTY_BUCKETS) *
	       AUTH_PENALTY_WAYS;
}

/* The live slot for key, or NULL.  A slot past its time is freed here. */
static struct penalty_slot *penalty_find(struct auth_penalty *p,
					 const struct auth_penalty_key *key,
					 time_t now)
{
	struct penalty_slot *bucket = &p->slots[penalty_bucket(p, key)];

	for (size_t i = 0; i < AUTH_PENALTY_WAYS; i++) {
		struct penalty_slot *s = &bucket[i];
		if (s->failures == 0 || memcmp(&s->key, key, sizeof(*key)) != 0)
			continue;
		if (now - s->last_failure > PENALTY_FORGET_SECONDS) {
			s->failures = 0;
			return NULL;
		}
		return s;
	}
	return NULL;
}

static unsigned int penalty_delay_for(unsigned int max_ms, unsigned int failures)
{
	if (failures <= AUTH_PENALTY_FREE_FAILURES)
		return 0;
	unsigned int doublings = failures - AUTH_PENALTY_FREE_FAILURES - 1;
	uint64_t ms = doublings >= 20 ? UINT64_MAX :
		      (uint64_t)AUTH_PENALTY_FIRST_MS << doublings;
	return ms > max_ms ? max_ms : (unsigned int)ms;
}

unsigned int auth_penalty_delay_ms(struct auth_penalty *p,
				   const struct auth_penalty_key *key,
				   time_t now)
{
	unsigned int failures = auth_penalty_failures(p, key, now);
	return penalty_delay_for(p->max_delay_ms, failures);
}

unsigned int auth_penalty_failures(struct auth_penalty *p,
				   const struct auth_penalty_key *key,
				   time_t now)
{
	unsigned int failures = 0;

	if (p->max_delay_ms == 0)
		return 0;
	pthread_mutex_lock(&p->lock);
	const struct penalty_slot *s = penalty_find(p, key, now);
	if (s != NULL)
		failures = s->failures;
	pthread_mutex_unlock(&p->lock);
	return failures;
}

void auth_penalty_failed(struct auth_penalty *p,
			 const struct auth_penalty_key *key, time_t now)
{
	if (p->max_delay_ms == 0)
		return;
	pthread_mutex_lock(&p->lock);
	struct penalty_slot *s = penalty_find(p, key, now);
	if (s == NULL) {
		/* A free slot, or else the one whose last failure is oldest. */
		struct penalty_slot *bucket = &p->slots[penalty_bucket(p, key)];
		s = &bucket[0];
		for (size_t i = 0; i < AUTH_PENALTY_WAYS; i++) {
			struct penalty_slot *t = &bucket[i];
			bool t_free = t->failures == 0 ||
				      now - t->last_failure > PENALTY_FORGET_SECONDS;
			if (t_free) {
				s = t;
				break;
			}
			if (t->last_failure < s->last_failure)
				s = t;
		}
		s->key = *key;
		s->failures = 0;
	}
	if (s->failures < UINT32_MAX)
		s->failures++;
	s->last_failure = now;
	pthread_mutex_unlock(&p->lock);
}
