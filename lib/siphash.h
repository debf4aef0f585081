/*
 * siphash.h — SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit
 * hash, for hash tables keyed with data others choose (the UIDL table:
 * UIDLs come from a server) and for naming bytes others could try to
 * imitate (an mbox append: its key is random per append).  Fed in pieces
 * of any size; the same bytes give the same hash however they are split.
 */
#ifndef POPBOX_SIPHASH_H
#define POPBOX_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct siphash {
	uint64_t v[4];
	uint64_t total;        /* bytes fed */
	uint8_t tail[8];       /* the last total % 8 of them */
};

/* key: 16 bytes (k0, k1 little-endian, as in the paper). */
void siphash_init(struct siphash *s, const uint8_t key[16]);
void siphash_update(struct siphash *s, const void *data, size_t len);
/* The hash of everything fed; s may be fed more afterwards. */
uint64_t siphash_final(const struct siphash *s);

/* All three at once. */
uint64_t siphash24(const uint8_t key[16], const void *data, size_t len);

#endif
