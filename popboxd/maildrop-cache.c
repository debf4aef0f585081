/*
 * maildrop-cache.c — the popbox.cache file (format in maildrop-cache.h).
 *
 * Invariants of the parser: it reads only buf[0..len); every length and
 * count it takes from the buffer is checked against what is left of the
 * buffer and against a named limit before it is used; allocations are sized
 * from a count already bounded by len / MAILDROP_CACHE_ENTRY_MIN and by
 * MAILDROP_CACHE_ENTRIES_MAX.  A cache that passes describes distinct base
 * names with valid Maildir file names; sizes are trusted as written.
 *
 * The reader only reads a file that could be our own: a regular file (not
 * a symlink, FIFO, device, socket or directory: looked at with fstatat
 * before the open, and with fstat after it), of the effective user, with
 * one link, within MAILDROP_CACHE_FILE_MAX.  The writer never opens the
 * cache itself, only a fresh temp file that it renames over it.
 */
#include "maildrop-cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* renameat */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir-name.h"

#define CACHE_MAGIC "popbox-cache 1\n"
/* Longest decimal uint64_t. */
#define CACHE_NUM_DIGITS_MAX 20
/* Wire sizes are bounded as in Maildir names: far from any overflow. */
#define CACHE_WIRE_SIZE_MAX MAILDIR_NAME_SIZE_MAX
/* Header numbers are int64_t nanoseconds or the count. */
#define CACHE_NS_MAX ((uint64_t)INT64_MAX)

/* Reads digits up to delim from *pp (which is advanced past delim). */
static int cache_number(const uint8_t **pp, const uint8_t *end, char delim,
			uint64_t max, uint64_t *value_r)
{
	const uint8_t *p = *pp;
	uint64_t v = 0;
	size_t n = 0;

	while (p < end && *p >= '0' && *p <= '9') {
		if (++n > CACHE_NUM_DIGITS_MAX)
			return -1;
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p++ - '0');
	}
	if (n == 0 || p == end || *p != (uint8_t)delim || v > max)
		return -1;
	*value_r = v;
	*pp = p + 1;
	return 0;
}

/* A word-at-a-time hash of a base name; only for the in-memory index.
   Not keyed: whoever can write names into the Maildir owns it anyway. */
static uint32_t cache_hash(const char *s, size_t len)
{
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ len, w;

	while (len >= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
		s += 8;
		len -= 8;
	}
	w = 0;
	memcpy(&w, s, len);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
	return (uint32_t)(h ^ (h >> 32));
}

static const char *cache_base(const struct maildrop_cache *c,
			      const struct maildrop_cache_entry *e)
{
	return (const char *)c->buf + e->name_off;
}

/*
 * Probes for base[0..len) whose cache_hash() is h.  Returns true with
 * *index_r if found; else false with *slot_r the empty slot where it goes.
 */
static bool cache_probe(const struct maildrop_cache *c, const char *base,
			size_t len, uint32_t h, size_t *index_r, size_t *slot_r)
{
	uint64_t tag = (uint64_t)h << 32, s;
	size_t i = h & c->slot_mask;

	while ((s = c->slots[i]) != 0) {
		const struct maildrop_cache_entry *e =
			&c->entries[(uint32_t)s - 1];

		if ((s & 0xffffffff00000000ULL) == tag && e->base_len == len &&
		    memcmp(cache_base(c, e), base, len) == 0) {
			*index_r = (uint32_t)s - 1;
			return true;
		}
		i = (i + 1) & c->slot_mask;
	}
	*slot_r = i;
	return false;
}

bool maildrop_cache_lookup(const struct maildrop_cache *c, const char *base,
			   size_t len, size_t *index_r)
{
	size_t slot;

	return c->slots != NULL &&
	       cache_probe(c, base, len, cache_hash(base, len), index_r, &slot);
}

/* How far ahead the index build prefetches slots: enough to overlap the
   cache misses of a table larger than the CPU caches. */
#define CACHE_PREFETCH_AHEAD 16

/* Indexes all entries; -1 if two share a base name. */
static int cache_index_build(struct maildrop_cache *c)
{
	size_t dummy, slot;

	for (size_t i = 0; i < c->count; i++) {
		const struct maildrop_cache_entry *e = &c->entries[i];

		if (i + CACHE_PREFETCH_AHEAD < c->count)
			__builtin_prefetch(&c->slots[
				c->entries[i + CACHE_PREFETCH_AHEAD].hash &
				c->slot_mask]);
		if (cache_probe(c, cache_base(c, e), e->base_len, e->hash,
				&dummy, &slot))
			return -1;
		/* i < MAILDROP_CACHE_ENTRIES_MAX: i + 1 fits in 32 bits. */
		c->slots[slot] = ((uint64_t)e->hash << 32) | (uint64_t)(i + 1);
	}
	return 0;
}

/* Parses the header lines; bounds the count; allocates entries and index. */
static int cache_parse_header(const uint8_t **pp, const uint8_t *end,
			      struct maildrop_cache *c, const char **error_r)
{
	const uint8_t *p = *pp;
	uint64_t v[4], slots = 16;
	size_t len = (size_t)(end - p);

	if ((size_t)(end - p) < sizeof(CACHE_MAGIC) - 1 ||
	    memcmp(p, CACHE_MAGIC, sizeof(CACHE_MAGIC) - 1) != 0) {
		*error_r = "bad magic or version";
		return -1;
	}
	p += sizeof(CACHE_MAGIC) - 1;
	for (int i = 0; i < 4; i++) {
		if (cache_number(&p, end, i == 3 ? '\n' : ' ', CACHE_NS_MAX,
				 &v[i]) < 0) {
			*error_r = "bad header numbers";
			return -1;
		}
	}
	if (v[3] > MAILDROP_CACHE_ENTRIES_MAX ||
	    v[3] > len / MAILDROP_CACHE_ENTRY_MIN) {
		*error_r = "entry count out of bounds";
		return -1;
	}
	c->hdr.new_mtime_ns = (int64_t)v[0];
	c->hdr.cur_mtime_ns = (int64_t)v[1];
	c->hdr.scan_ns = (int64_t)v[2];
	c->count = (size_t)v[3];
	/* count <= 10^6, so these products are small. */
	while (slots < 2 * v[3])
		slots *= 2;
	c->entries = calloc(c->count + 1, sizeof(*c->entries));
	c->slots = calloc(slots, sizeof(*c->slots));
	if (c->entries == NULL || c->slots == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	c->slot_mask = slots - 1;
	*pp = p;
	return 0;
}

/* True if name[0..len) could be a message file we list. */
static bool cache_name_ok(const uint8_t *name, size_t len)
{
	return len >= 1 && len <= MAILDROP_CACHE_NAME_MAX && name[0] != '.' &&
	       memchr(name, '/', len) == NULL && memchr(name, '\0', len) == NULL;
}

static int cache_parse_entry(const uint8_t **pp, const uint8_t *end,
			     struct maildrop_cache *c, size_t idx)
{
	struct maildrop_cache_entry *e = &c->entries[idx];
	const uint8_t *p = *pp, *colon;
	uint64_t size, nlen;

	if (end - p < 2 || (p[0] != 'N' && p[0] != 'C') || p[1] != ' ')
		return -1;
	e->dir = p[0] == 'N' ? MAILDROP_CACHE_DIR_NEW : MAILDROP_CACHE_DIR_CUR;
	p += 2;
	if (cache_number(&p, end, ' ', CACHE_WIRE_SIZE_MAX, &size) < 0 ||
	    cache_number(&p, end, ' ', MAILDROP_CACHE_NAME_MAX, &nlen) < 0)
		return -1;
	/* nlen <= 255 and end - p >= 0, so this comparison is exact. */
	if ((uint64_t)(end - p) <= nlen || p[nlen] != '\n' ||
	    !cache_name_ok(p, (size_t)nlen))
		return -1;
	e->wire_size = size;
	e->name_off = (uint32_t)(p - c->buf);
	e->name_len = (uint16_t)nlen;
	colon = memchr(p, ':', (size_t)nlen);
	e->base_len = (uint16_t)(colon == NULL ? nlen : (uint64_t)(colon - p));
	e->hash = cache_hash((const char *)p, e->base_len);
	*pp = p + nlen + 1;
	return 0;
}

int maildrop_cache_parse(const uint8_t *buf, size_t len,
			 struct maildrop_cache *cache_r, const char **error_r)
{
	const uint8_t *p = buf, *end = buf + len;
	uint64_t count;

	memset(cache_r, 0, sizeof(*cache_r));
	cache_r->buf = buf;
	if (len > MAILDROP_CACHE_FILE_MAX) {
		*error_r = "cache too large";
		return -1;
	}
	if (cache_parse_header(&p, end, cache_r, error_r) < 0)
		goto fail;
	for (size_t i = 0; i < cache_r->count; i++) {
		if (cache_parse_entry(&p, end, cache_r, i) < 0) {
			*error_r = "bad entry";
			goto fail;
		}
	}
	if (end - p < 4 || memcmp(p, "end ", 4) != 0) {
		*error_r = "missing end marker";
		goto fail;
	}
	p += 4;
	if (cache_number(&p, end, '\n', CACHE_NS_MAX, &count) < 0 ||
	    count != cache_r->count || p != end) {
		*error_r = "bad end marker";
		goto fail;
	}
	if (cache_index_build(cache_r) < 0) {
		*error_r = "duplicate base name";
		goto fail;
	}
	return 0;
fail:
	maildrop_cache_free(cache_r);
	cache_r->buf = buf;
	return -1;
}

void maildrop_cache_free(struct maildrop_cache *cache)
{
	free(cache->entries);
	free(cache->slots);
	memset(cache, 0, sizeof(*cache));
}

/* Appends the decimal form of v; returns the new end. */
static char *cache_put_u64(char *o, uint64_t v)
{
	char tmp[CACHE_NUM_DIGITS_MAX];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (n > 0)
		*o++ = tmp[--n];
	return o;
}

/* Bytes of one entry line beyond its name: "N " + 20 + " " + 3 + " " + "\n". */
#define CACHE_ENTRY_OVERHEAD (2 + CACHE_NUM_DIGITS_MAX + 1 + 3 + 1 + 1)
/* Magic, header line (4 numbers, 4 separators) and end marker. */
#define CACHE_FIXED_OVERHEAD \
	(sizeof(CACHE_MAGIC) + 4 * (CACHE_NUM_DIGITS_MAX + 1) + \
	 4 + CACHE_NUM_DIGITS_MAX + 1)

static uint64_t cache_ns_field(int64_t ns)
{
	return ns < 0 ? 0 : (uint64_t)ns;
}

int maildrop_cache_format(const struct maildrop_cache_header *hdr,
			  const struct maildrop_cache_item *items, size_t count,
			  uint8_t **buf_r, size_t *len_r, const char **error_r)
{
	char *buf, *o;

	if (count > MAILDROP_CACHE_ENTRIES_MAX) {
		*error_r = "too many entries for the cache";
		return -1;
	}
	/* count <= 10^6 and each line <= 255 + 28 bytes: no overflow. */
	buf = malloc(CACHE_FIXED_OVERHEAD +
		     count * (CACHE_ENTRY_OVERHEAD + MAILDROP_CACHE_NAME_MAX));
	if (buf == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	o = buf;
	memcpy(o, CACHE_MAGIC, sizeof(CACHE_MAGIC) - 1);
	o += sizeof(CACHE_MAGIC) - 1;
	o = cache_put_u64(o, cache_ns_field(hdr->new_mtime_ns));
	*o++ = ' ';
	o = cache_put_u64(o, cache_ns_field(hdr->cur_mtime_ns));
	*o++ = ' ';
	o = cache_put_u64(o, cache_ns_field(hdr->scan_ns));
	*o++ = ' ';
	o = cache_put_u64(o, count);
	*o++ = '\n';
	for (size_t i = 0; i < count; i++) {
		const struct maildrop_cache_item *it = &items[i];

		if (!cache_name_ok((const uint8_t *)it->name, it->name_len) ||
		    it->wire_size > CACHE_WIRE_SIZE_MAX) {
			free(buf);
			*error_r = "invalid cache item";
			return -1;
		}
		*o++ = it->dir == MAILDROP_CACHE_DIR_NEW ? 'N' : 'C';
		*o++ = ' ';
		o = cache_put_u64(o, it->wire_size);
		*o++ = ' ';
		o = cache_put_u64(o, it->name_len);
		*o++ = ' ';
		memcpy(o, it->name, it->name_len);
		o += it->name_len;
		*o++ = '\n';
	}
	memcpy(o, "end ", 4);
	o = cache_put_u64(o + 4, count);
	*o++ = '\n';
	*buf_r = (uint8_t *)buf;
	*len_r = (size_t)(o - buf);
	return 0;
}

/*
 * Checks what st says about a cache file: only a regular file that we
 * could have written ourselves counts.  We always create the cache afresh
 * (O_EXCL temp file, then rename), so it is ours and has one link; another
 * owner or a second link means someone else put it there.
 */
static int cache_check_stat(const struct stat *st, const char **error_r)
{
	if (!S_ISREG(st->st_mode)) {
		*error_r = "cache is not a regular file";
		return -1;
	}
	if (st->st_uid != geteuid()) {
		*error_r = "cache is owned by another user";
		return -1;
	}
	if (st->st_nlink != 1) {
		*error_r = "cache has more than one link";
		return -1;
	}
	if (st->st_size < 0 ||
	    (uint64_t)st->st_size > MAILDROP_CACHE_FILE_MAX) {
		*error_r = "cache is larger than the limit";
		return -1;
	}
	return 0;
}

/* Reads exactly size bytes (fewer if the file shrank: the parser then
   finds it truncated).  size <= MAILDROP_CACHE_FILE_MAX, so size + 1 does
   not wrap. */
static int cache_read_fd(int fd, size_t size, uint8_t **buf_r, size_t *len_r)
{
	uint8_t *buf = malloc(size + 1);
	size_t len = 0;

	if (buf == NULL)
		return -1;
	while (len < size) {
		ssize_t n = read(fd, buf + len, size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;

			free(buf);
			errno = err;
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*buf_r = buf;
	*len_r = len;
	return 0;
}

int maildrop_cache_read(int dir_fd, uint8_t **buf_r, size_t *len_r,
			const char **error_r)
{
	struct stat st;
	int fd, ret, err;

	/* Looked at before it is opened, so a device node or a FIFO is
	   never even opened; checked again on the descriptor below, which
	   is what counts (the name may change in between). */
	if (fstatat(dir_fd, MAILDROP_CACHE_FILE, &st,
		    AT_SYMLINK_NOFOLLOW) < 0) {
		*error_r = errno == ENOENT ? "no cache" : "cannot stat cache";
		return -1;
	}
	if (S_ISLNK(st.st_mode)) {
		*error_r = "cache is a symlink";
		errno = ELOOP;
		return -1;
	}
	if (cache_check_stat(&st, error_r) < 0) {
		errno = EINVAL;
		return -1;
	}
	/* O_NONBLOCK: if a FIFO slipped in since, open and read never wait. */
	fd = openat(dir_fd, MAILDROP_CACHE_FILE,
		    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		*error_r = errno == ELOOP ? "cache is a symlink" :
					    "cannot open cache";
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		*error_r = "cannot stat cache";
		ret = -1;
	} else if (cache_check_stat(&st, error_r) < 0) {
		errno = EINVAL;
		ret = -1;
	} else if ((ret = cache_read_fd(fd, (size_t)st.st_size, buf_r,
					len_r)) < 0) {
		*error_r = "cannot read cache";
	}
	err = errno;
	close(fd);
	errno = err;
	return ret;
}

static int cache_write_full(int fd, const uint8_t *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

/*
 * Removes dir_fd/name if it is anything but a non-empty directory: a
 * leftover temp file, a planted symlink or FIFO, or an empty directory in
 * the way.  A non-empty directory is never emptied: it is not ours.
 */
static int cache_remove(int dir_fd, const char *name)
{
	if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno == EISDIR && unlinkat(dir_fd, name, AT_REMOVEDIR) == 0)
		return 0;
	return -1;
}

int maildrop_cache_write(int dir_fd, const uint8_t *buf, size_t len,
			 const char **error_r)
{
	int fd;

	/* A leftover (or planted) temp file is removed, then created
	   exclusively, so we never write through a symlink. */
	if (cache_remove(dir_fd, MAILDROP_CACHE_TMP_FILE) < 0) {
		*error_r = "cannot remove old popbox.cache.tmp";
		return -1;
	}
	fd = openat(dir_fd, MAILDROP_CACHE_TMP_FILE,
		    O_WRONLY | O_CREAT | O_EXCL | O_TRUNC | O_NOFOLLOW |
			    O_CLOEXEC, 0600);
	if (fd < 0) {
		*error_r = "cannot create popbox.cache.tmp";
		return -1;
	}
	if (cache_write_full(fd, buf, len) < 0) {
		close(fd);
		(void)unlinkat(dir_fd, MAILDROP_CACHE_TMP_FILE, 0);
		*error_r = "cannot write popbox.cache.tmp";
		return -1;
	}
	if (close(fd) < 0) {
		(void)unlinkat(dir_fd, MAILDROP_CACHE_TMP_FILE, 0);
		*error_r = "cannot write popbox.cache.tmp";
		return -1;
	}
	/* rename() replaces a symlink, FIFO or file at the target without
	   following it; only a directory stands in its way. */
	if (renameat(dir_fd, MAILDROP_CACHE_TMP_FILE, dir_fd,
		     MAILDROP_CACHE_FILE) < 0 &&
	    (errno != EISDIR ||
	     unlinkat(dir_fd, MAILDROP_CACHE_FILE, AT_REMOVEDIR) < 0 ||
	     renameat(dir_fd, MAILDROP_CACHE_TMP_FILE, dir_fd,
		      MAILDROP_CACHE_FILE) < 0)) {
		*error_r = errno == ENOTEMPTY || errno == EEXIST ?
			   "popbox.cache is a non-empty directory" :
			   "cannot replace popbox.cache";
		(void)unlinkat(dir_fd, MAILDROP_CACHE_TMP_FILE, 0);
		return -1;
	}
	return 0;
}
