/*
 * maildrop-cache.h — the popbox.cache file of a Maildir: format, parse, write.
 *
 * The cache remembers, per message, its current file name, the directory it
 * is in (new/ or cur/) and its wire size, in the maildrop's stable order,
 * plus the mtimes of new/ and cur/ when they were scanned and the time of
 * that scan.  It is only a cache: whoever deletes or damages it costs one
 * directory scan, never a wrong listing.
 *
 * File format (text; names are length-prefixed because a file name may hold
 * any byte but '/' and NUL, newlines included):
 *
 *   popbox-cache 1\n
 *   <new/ mtime ns> <cur/ mtime ns> <scan time ns> <count>\n
 *   <N|C> <wire size> <name length> <name>\n        (count times)
 *   end <count>\n
 *
 * Numbers are plain decimal digits.  The end marker must be the last bytes,
 * so a truncated file is detected.  A recorded mtime of 0 means "unknown"
 * and never matches a directory.
 *
 * The parser is a pure function of (buffer, length) so it can be fuzzed; it
 * rejects anything malformed, including duplicate base names, names with '/'
 * or NUL or starting with '.', and never allocates from an unchecked length.
 */
#ifndef POPBOX_MAILDROP_CACHE_H
#define POPBOX_MAILDROP_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAILDROP_CACHE_FILE "popbox.cache"
#define MAILDROP_CACHE_TMP_FILE "popbox.cache.tmp"
/* A cache larger than this is not read: 1,000,000 entries of 255-byte names
   need about 290 MB, so a bigger file is hostile or broken. */
#define MAILDROP_CACHE_FILE_MAX ((size_t)512 * 1024 * 1024)
/* Messages per maildrop (SECURITY.md rule 8): also the most a cache holds. */
#define MAILDROP_CACHE_ENTRIES_MAX 1000000
/* NAME_MAX on Linux and the BSDs: no directory entry is longer. */
#define MAILDROP_CACHE_NAME_MAX 255
/* The shortest possible entry line, "N 0 1 x\n": bounds count by length. */
#define MAILDROP_CACHE_ENTRY_MIN 8

enum maildrop_cache_dir {
	MAILDROP_CACHE_DIR_NEW = 0,
	MAILDROP_CACHE_DIR_CUR = 1,
};

struct maildrop_cache_header {
	int64_t new_mtime_ns;  /* mtime of new/ before it was scanned; 0 unknown */
	int64_t cur_mtime_ns;  /* same for cur/ */
	int64_t scan_ns;       /* wall-clock time just before the scan */
};

/* One parsed entry; its name is buf[name_off .. name_off + name_len). */
struct maildrop_cache_entry {
	uint64_t wire_size;
	uint32_t name_off;
	uint32_t hash;         /* of the base name, for the index */
	uint16_t name_len;     /* 1..MAILDROP_CACHE_NAME_MAX */
	uint16_t base_len;     /* the part before the first ':' */
	uint8_t dir;           /* enum maildrop_cache_dir */
};

struct maildrop_cache {
	struct maildrop_cache_header hdr;
	size_t count;
	struct maildrop_cache_entry *entries;
	/* Open-addressing index on base names: a slot holds the name's
	   32-bit hash in its high half (to skip most compares) and entry
	   index + 1 in its low half; 0 is an empty slot. */
	uint64_t *slots;
	size_t slot_mask;
	const uint8_t *buf;    /* borrowed: the buffer that was parsed */
};

/* One message to write, in order. */
struct maildrop_cache_item {
	const char *name;      /* 1..255 bytes, no '/' or NUL */
	size_t name_len;
	uint64_t wire_size;
	uint8_t dir;
};

/*
 * Parses buf[0..len).  Returns 0 with *cache_r filled (entries point into
 * buf, which must outlive the cache), or -1 with *error_r saying what is
 * wrong and *cache_r left empty (safe to free).
 */
int maildrop_cache_parse(const uint8_t *buf, size_t len,
			 struct maildrop_cache *cache_r, const char **error_r);

/* Frees what parse allocated; the cache is empty afterwards. */
void maildrop_cache_free(struct maildrop_cache *cache);

/*
 * Looks up base name base[0..len).  Returns true with *index_r set if the
 * cache has an entry with that base name.
 */
bool maildrop_cache_lookup(const struct maildrop_cache *cache,
			   const char *base, size_t len, size_t *index_r);

/*
 * Formats a cache file.  Returns 0 with a malloc'd *buf_r of *len_r bytes,
 * or -1 (too many items, a bad name, out of memory) with *error_r set.
 */
int maildrop_cache_format(const struct maildrop_cache_header *hdr,
			  const struct maildrop_cache_item *items, size_t count,
			  uint8_t **buf_r, size_t *len_r, const char **error_r);

/*
 * Reads dir_fd/popbox.cache if it is a regular file (never a symlink, a
 * FIFO, a device or a directory: those are not even opened, and the open
 * descriptor is checked again), owned by the effective user, with a single
 * link, of at most MAILDROP_CACHE_FILE_MAX bytes.  Returns 0 with a
 * malloc'd *buf_r of *len_r bytes, or -1 with *error_r set and errno ENOENT
 * if there is no cache (anything else is worth a log line).  Never blocks.
 */
int maildrop_cache_read(int dir_fd, uint8_t **buf_r, size_t *len_r,
			const char **error_r);

/*
 * Replaces dir_fd/popbox.cache with buf[0..len) through popbox.cache.tmp
 * (created exclusively, never written through a link) and rename(), which
 * also replaces a symlink, FIFO or empty directory in the cache's place; a
 * non-empty directory is left alone (-1).  No fsync: losing it in a crash
 * only costs a rescan.  The caller must hold the maildrop lock (the temp
 * file name is fixed).
 */
int maildrop_cache_write(int dir_fd, const uint8_t *buf, size_t len,
			 const char **error_r);

#endif
