/*
 * siphash.c — SipHash-2-4 (Aumasson and Bernstein, 2012), fed in pieces
 * of any size (see siphash.h).
 */
#include "siphash.h"

#include <string.h>

static uint64_t sip_rotl(uint64_t x, unsigned int b)
{
	return (x << b) | (x >> (64 - b));
}

static void sip_round(uint64_t v[4])
{
	v[0] += v[1];
	v[1] = sip_rotl(v[1], 13) ^ v[0];
	v[0] = sip_rotl(v[0], 32);
	v[2] += v[3];
	v[3] = sip_rotl(v[3], 16) ^ v[2];
	v[0] += v[3];
	v[3] = sip_rotl(v[3], 21) ^ v[0];
	v[2] += v[1];
	v[1] = sip_rotl(v[1], 17) ^ v[2];
	v[2] = sip_rotl(v[2], 32);
}

/* Eight bytes, little-endian. */
static uint64_t sip_le64(const uint8_t *p)
{
	uint64_t x = 0;

	for (int i = 7; i >= 0; i--)
		x = x << 8 | p[i];
	return x;
}

static void sip_compress(uint64_t v[4], uint64_t m)
{
	v[3] ^= m;
	sip_round(v);
	sip_round(v);
	v[0] ^= m;
}

void siphash_init(struct siphash *s, const uint8_t key[16])
{
	uint64_t k0 = sip_le64(key), k1 = sip_le64(key + 8);

	s->v[0] = k0 ^ 0x736f6d6570736575ULL;
	s->v[1] = k1 ^ 0x646f72616e646f6dULL;
	s->v[2] = k0 ^ 0x6c7967656e657261ULL;
	s->v[3] = k1 ^ 0x7465646279746573ULL;
	s->total = 0;
}

void siphash_update(struct siphash *s, const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t have = (size_t)(s->total % 8);

	s->total += len;
	if (have > 0) {
		size_t take = 8 - have < len ? 8 - have : len;
		memcpy(s->tail + have, p, take);
		p += take;
		len -= take;
		if (have + take < 8)
			return;
		sip_compress(s->v, sip_le64(s->tail));
	}
	for (; len >= 8; p += 8, len -= 8)
		sip_compress(s->v, sip_le64(p));
	memcpy(s->tail, p, len);
}

uint64_t siphash_final(const struct siphash *s)
{
	uint64_t v[4] = { s->v[0], s->v[1], s->v[2], s->v[3] };
	uint64_t b = s->total << 56;

	for (size_t i = 0; i < s->total % 8; i++)
		b |= (uint64_t)s->tail[i] << (8 * i);
	sip_compress(v, b);
	v[2] ^= 0xff;
	for (int i = 0; i < 4; i++)
		sip_round(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

uint64_t siphash24(const uint8_t key[16], const void *data, size_t len)
{
	struct siphash s;

	siphash_init(&s, key);
	siphash_update(&s, data, len);
	return siphash_final(&s);
}
