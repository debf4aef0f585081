/*
 * uidl-db.c — the downloaded-UIDL table and its file (see uidl-db.h).
 *
 * Memory: the records in an array in file order (88 bytes each, the UIDL
 * inline), and an open-addressing index of 32-bit slots (record index +
 * 1, 0 = empty) with linear probing, at most half full, found by SipHash
 * of the UIDL.  Records are never removed one by one: uidl_db_retain()
 * compacts the array and rebuilds the index, so there are no tombstones.
 *
 * The file is read whole (lib/file-read), parsed line by line, and
 * written by uidl_db_save() through a temp file; uidl_db_record()
 * appends to the file the last save produced, on the descriptor that
 * save wrote it with (so an append never lands in a file renamed away).
 */
#include "uidl-db.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file-read.h"
#include "siphash.h"
#include "strnum.h"

#define UIDL_DB_ERROR_MAX 512
/* Digits of the largest first-seen time and size (2^40, 2^48). */
#define UIDL_DB_TIME_DIGITS 13
#define UIDL_DB_SIZE_DIGITS 15
/* The index starts with this many slots (a power of two). */
#define UIDL_DB_SLOTS_MIN 64
/* Save buffer: a few large writes. */
#define UIDL_DB_WBUF (64 * 1024)

struct uidl_db_entry {
	int64_t first_seen;
	uint64_t size;
	uint8_t state;
	uint8_t len;
	char uidl[UIDL_DB_UIDL_MAX];
};

/* A pending record (uidl-db.h): what it becomes, and its file name. */
struct uidl_db_pending {
	struct uidl_db_rec rec;
	uint8_t len;
	char uidl[UIDL_DB_UIDL_MAX];
	char name[UIDL_DB_NAME_MAX + 1];
};

struct uidl_db {
	struct uidl_db_entry *entries;
	size_t count, cap;
	uint32_t *slots;
	size_t nslots;            /* a power of two, > 2 * count */
	uint8_t key[16];          /* SipHash key */

	char *path;               /* NULL: memory only */
	int lock_fd;
	int append_fd;            /* the file the last save wrote, or -1 */
	bool dirty;               /* changes only a full save writes */
	struct uidl_db_pending *pend;  /* not settled yet */
	size_t npend, pend_cap;
	bool settled;             /* the file has pending lines that are
				     settled in memory: a save is due */
};

static _Thread_local char uidl_db_errbuf[UIDL_DB_ERROR_MAX];

static int uidl_db_fail(const char **error_r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int uidl_db_fail(const char **error_r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(uidl_db_errbuf, sizeof(uidl_db_errbuf), fmt, ap);
	va_end(ap);
	*error_r = uidl_db_errbuf;
	return -1;
}

static int uidl_db_fail_errno(const char **error_r, const char *what,
			      const char *path, int err)
{
	char eb[128];

	return uidl_db_fail(error_r, "%s %s: %s", what, path,
			    strerror_r(err, eb, sizeof(eb)));
}

/* ---- the table ------------------------------------------------------------ */

bool uidl_db_uidl_valid(const char *uidl, size_t len)
{
	if (len == 0 || len > UIDL_DB_UIDL_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)uidl[i] < 0x21 ||
		    (unsigned char)uidl[i] > 0x7e)
			return false;
	return true;
}

static bool uidl_db_rec_valid(const struct uidl_db_rec *rec)
{
	return rec->first_seen >= 0 && rec->first_seen <= UIDL_DB_TIME_MAX &&
	       rec->size <= UIDL_DB_SIZE_MAX &&
	       (rec->state == UIDL_DB_FULL || rec->state == UIDL_DB_HEADERS);
}

/* The slot that holds uidl, or the empty slot where it would go. */
static size_t uidl_db_probe(const struct uidl_db *db, const char *uidl,
			    size_t len)
{
	size_t mask = db->nslots - 1;
	size_t s = (size_t)siphash24(db->key, uidl, len) & mask;

	for (;; s = (s + 1) & mask) {
		uint32_t idx = db->slots[s];
		if (idx == 0)
			return s;
		const struct uidl_db_entry *e = &db->entries[idx - 1];
		if (e->len == len && memcmp(e->uidl, uidl, len) == 0)
			return s;
	}
}

/* Rebuilds the index with nslots slots. */
static int uidl_db_reindex(struct uidl_db *db, size_t nslots)
{
	uint32_t *slots = calloc(nslots, sizeof(*slots));

	if (slots == NULL)
		return -1;
	free(db->slots);
	db->slots = slots;
	db->nslots = nslots;
	for (size_t i = 0; i < db->count; i++) {
		const struct uidl_db_entry *e = &db->entries[i];
		db->slots[uidl_db_probe(db, e->uidl, e->len)] = (uint32_t)(i + 1);
	}
	return 0;
}

/* Room for one more record: array and index. */
static int uidl_db_reserve(struct uidl_db *db)
{
	if (db->count == db->cap) {
		size_t cap = db->cap == 0 ? 256 : db->cap * 2;
		struct uidl_db_entry *e =
			reallocarray(db->entries, cap, sizeof(*e));
		if (e == NULL)
			return -1;
		db->entries = e;
		db->cap = cap;
	}
	/* At most half full: probes stay short.  count <= RECORDS_MAX, so
	   the doubling stays far below SIZE_MAX / 4. */
	if ((db->count + 1) * 2 > db->nslots)
		return uidl_db_reindex(db, db->nslots * 2);
	return 0;
}

struct uidl_db *uidl_db_new(void)
{
	struct uidl_db *db = calloc(1, sizeof(*db));

	if (db == NULL)
		return NULL;
	db->lock_fd = db->append_fd = -1;
	/* Without randomness the table still works, only predictably. */
	if (getrandom(db->key, sizeof(db->key), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(db->key)) {
		uintptr_t where = (uintptr_t)db;
		memcpy(db->key, &where, sizeof(where));
	}
	db->slots = calloc(UIDL_DB_SLOTS_MIN, sizeof(*db->slots));
	if (db->slots == NULL) {
		free(db);
		return NULL;
	}
	db->nslots = UIDL_DB_SLOTS_MIN;
	return db;
}

bool uidl_db_get(const struct uidl_db *db, const char *uidl, size_t len,
		 struct uidl_db_rec *rec_r)
{
	if (len == 0 || len > UIDL_DB_UIDL_MAX)
		return false;
	uint32_t idx = db->slots[uidl_db_probe(db, uidl, len)];
	if (idx == 0)
		return false;
	const struct uidl_db_entry *e = &db->entries[idx - 1];
	rec_r->first_seen = e->first_seen;
	rec_r->size = e->size;
	rec_r->state = (enum uidl_db_state)e->state;
	return true;
}

int uidl_db_set(struct uidl_db *db, const char *uidl, size_t len,
		const struct uidl_db_rec *rec, const char **error_r)
{
	struct uidl_db_entry *e;

	if (!uidl_db_uidl_valid(uidl, len))
		return uidl_db_fail(error_r, "invalid UIDL");
	if (!uidl_db_rec_valid(rec))
		return uidl_db_fail(error_r, "invalid record");
	uint32_t idx = db->slots[uidl_db_probe(db, uidl, len)];
	if (idx == 0) {
		if (db->count >= UIDL_DB_RECORDS_MAX)
			return uidl_db_fail(error_r, "more than %d records",
					    UIDL_DB_RECORDS_MAX);
		if (uidl_db_reserve(db) < 0)
			return uidl_db_fail(error_r, "out of memory");
		e = &db->entries[db->count++];
		e->len = (uint8_t)len;
		memcpy(e->uidl, uidl, len);
		db->slots[uidl_db_probe(db, uidl, len)] = (uint32_t)db->count;
	} else {
		e = &db->entries[idx - 1];
	}
	e->first_seen = rec->first_seen;
	e->size = rec->size;
	e->state = (uint8_t)rec->state;
	db->dirty = true;
	return 0;
}

size_t uidl_db_retain(struct uidl_db *db,
		      bool (*keep)(const char *uidl, size_t len,
				   const struct uidl_db_rec *rec, void *ctx),
		      void *ctx)
{
	size_t kept = 0, removed;

	for (size_t i = 0; i < db->count; i++) {
		const struct uidl_db_entry *e = &db->entries[i];
		struct uidl_db_rec rec = {
			.first_seen = e->first_seen, .size = e->size,
			.state = (enum uidl_db_state)e->state,
		};
		if (!keep(e->uidl, e->len, &rec, ctx))
			continue;
		if (kept != i)
			db->entries[kept] = *e;
		kept++;
	}
	removed = db->count - kept;
	if (removed == 0)
		return 0;
	db->count = kept;
	db->dirty = true;
	/* Same size: cannot fail for memory, only clear and refill. */
	memset(db->slots, 0, db->nslots * sizeof(*db->slots));
	for (size_t i = 0; i < db->count; i++) {
		const struct uidl_db_entry *e = &db->entries[i];
		db->slots[uidl_db_probe(db, e->uidl, e->len)] = (uint32_t)(i + 1);
	}
	return removed;
}

bool uidl_db_dirty(const struct uidl_db *db)
{
	return db->dirty || db->settled;
}

/* ---- pending records ------------------------------------------------------ */

bool uidl_db_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > UIDL_DB_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x21 ||
		    (unsigned char)name[i] > 0x7e || name[i] == '/')
			return false;
	return true;
}

/* Adds a pending record to the list (no checks of its fields here). */
static int uidl_db_pending_add(struct uidl_db *db, const char *uidl,
			       size_t len, const struct uidl_db_rec *rec,
			       const char *name, size_t name_len)
{
	struct uidl_db_pending *p;

	if (db->npend >= UIDL_DB_RECORDS_MAX)
		return -1;
	if (db->npend == db->pend_cap) {
		size_t cap = db->pend_cap == 0 ? 64 : db->pend_cap * 2;
		p = reallocarray(db->pend, cap, sizeof(*p));
		if (p == NULL)
			return -1;
		db->pend = p;
		db->pend_cap = cap;
	}
	p = &db->pend[db->npend++];
	p->rec = *rec;
	p->len = (uint8_t)len;
	memcpy(p->uidl, uidl, len);
	memcpy(p->name, name, name_len);
	p->name[name_len] = '\0';
	return 0;
}

size_t uidl_db_pending_count(const struct uidl_db *db)
{
	return db->npend;
}

void uidl_db_pending_at(const struct uidl_db *db, size_t i,
			const char **uidl_r, size_t *len_r,
			struct uidl_db_rec *rec_r, const char **name_r)
{
	const struct uidl_db_pending *p = &db->pend[i];

	*uidl_r = p->uidl;
	*len_r = p->len;
	*rec_r = p->rec;
	*name_r = p->name;
}

int uidl_db_settle_pending(struct uidl_db *db, const bool *stored,
			   const char **error_r)
{
	bool was_dirty = db->dirty;

	for (size_t i = 0; i < db->npend; i++) {
		const struct uidl_db_pending *p = &db->pend[i];

		if (stored[i] &&
		    uidl_db_set(db, p->uidl, p->len, &p->rec, error_r) < 0)
			return -1;
	}
	/* What the file's pending lines say once the lookup is done: not a
	   change only a save can write (an append after this is fine). */
	db->dirty = was_dirty;
	if (db->npend > 0)
		db->settled = true;
	db->npend = 0;
	return 0;
}

size_t uidl_db_count(const struct uidl_db *db)
{
	return db->count;
}

void uidl_db_at(const struct uidl_db *db, size_t i, const char **uidl_r,
		size_t *len_r, struct uidl_db_rec *rec_r)
{
	const struct uidl_db_entry *e = &db->entries[i];

	*uidl_r = e->uidl;
	*len_r = e->len;
	rec_r->first_seen = e->first_seen;
	rec_r->size = e->size;
	rec_r->state = (enum uidl_db_state)e->state;
}

/* Back to empty (after a failed parse). */
static void uidl_db_clear(struct uidl_db *db)
{
	db->count = 0;
	memset(db->slots, 0, db->nslots * sizeof(*db->slots));
	db->dirty = false;
	db->npend = 0;
	db->settled = false;
}

void uidl_db_free(struct uidl_db **dbp)
{
	struct uidl_db *db = *dbp;

	if (db == NULL)
		return;
	*dbp = NULL;
	if (db->append_fd >= 0)
		close(db->append_fd);
	if (db->lock_fd >= 0)
		close(db->lock_fd); /* drops the OFD lock */
	free(db->entries);
	free(db->slots);
	free(db->pend);
	free(db->path);
	free(db);
}

/* ---- parsing -------------------------------------------------------------- */

/* A decimal field of 1..digits digits (no more), at most max. */
static int uidl_db_number(const char *s, size_t len, size_t digits,
			  uint64_t max, uint64_t *value_r)
{
	if (len == 0 || len > digits)
		return -1;
	return strnum_parse_u64(s, len, max, value_r);
}

/* The next space-separated field of line[*pos..len). */
static bool uidl_db_field(const char *line, size_t len, size_t *pos,
			  const char **field_r, size_t *flen_r)
{
	const char *sp;

	if (*pos >= len)
		return false;
	*field_r = line + *pos;
	sp = memchr(*field_r, ' ', len - *pos);
	*flen_r = sp == NULL ? len - *pos : (size_t)(sp - *field_r);
	*pos += *flen_r + (sp != NULL);
	return true;
}

/* One record line (without its LF) into db; NULL or what is wrong. */
static const char *uidl_db_parse_line(struct uidl_db *db, const char *line,
				      size_t len)
{
	const char *f[3], *uidl, *name = NULL;
	size_t flen[3], pos = 0, ulen, nlen = 0;
	uint64_t t, size;
	const char *err;

	for (int i = 0; i < 3; i++)
		if (!uidl_db_field(line, len, &pos, &f[i], &flen[i]))
			return "too few fields";
	if (uidl_db_number(f[0], flen[0], UIDL_DB_TIME_DIGITS,
			   (uint64_t)UIDL_DB_TIME_MAX, &t) < 0)
		return "bad time";
	if (uidl_db_number(f[1], flen[1], UIDL_DB_SIZE_DIGITS,
			   UIDL_DB_SIZE_MAX, &size) < 0)
		return "bad size";
	bool pending = flen[2] == 2 && f[2][0] == UIDL_DB_PENDING;
	if (flen[2] != 1 && !pending)
		return "bad state";
	char state = f[2][flen[2] - 1];
	if (state != UIDL_DB_FULL && state != UIDL_DB_HEADERS)
		return "bad state";
	if (pending && (!uidl_db_field(line, len, &pos, &name, &nlen) ||
			!uidl_db_name_valid(name, nlen)))
		return "bad file name";
	if (pos >= len)
		return "too few fields";
	uidl = line + pos;
	ulen = len - pos;
	if (!uidl_db_uidl_valid(uidl, ulen))
		return "bad UIDL";
	struct uidl_db_rec rec = { .first_seen = (int64_t)t, .size = size,
				   .state = (enum uidl_db_state)state };
	if (pending)
		return uidl_db_pending_add(db, uidl, ulen, &rec, name, nlen) < 0 ?
		       "too many records, or out of memory" : NULL;
	/* Fields checked above: only the table's size or memory can fail
	   (err is not returned: it is in the buffer the caller formats
	   into). */
	if (uidl_db_set(db, uidl, ulen, &rec, &err) < 0)
		return "too many records, or out of memory";
	return NULL;
}

/* The header line text[0..len) (without LF); NULL or what is wrong. */
static const char *uidl_db_parse_header(const char *line, size_t len)
{
	static const char magic[] = "popbox-fetch-uidl ";
	const size_t mlen = sizeof(magic) - 1;

	if (len == sizeof(UIDL_DB_HEADER) - 2 &&
	    memcmp(line, UIDL_DB_HEADER, len) == 0)
		return NULL;
	if (len > mlen && memcmp(line, magic, mlen) == 0)
		return "a format version this popbox-fetch does not know "
		       "(written by a newer one?)";
	return "not a popbox-fetch UIDL file";
}

int uidl_db_parse(struct uidl_db *db, const char *text, size_t len,
		  struct uidl_db_load_info *info_r, const char **error_r)
{
	const char *p = text, *end = text + len, *lf;
	size_t lineno = 0;

	while ((lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		const char *err;
		lineno++;
		if (lineno == 1)
			err = uidl_db_parse_header(p, (size_t)(lf - p));
		else
			err = uidl_db_parse_line(db, p, (size_t)(lf - p));
		if (err != NULL) {
			uidl_db_clear(db);
			return uidl_db_fail(error_r, "line %zu: %s", lineno,
					    err);
		}
		p = lf + 1;
	}
	if (lineno == 0) {
		uidl_db_clear(db);
		return uidl_db_fail(error_r, "line 1: %s", len == 0 ?
				    "empty file" : "no complete header line");
	}
	db->dirty = false;
	if (info_r != NULL) {
		info_r->missing = false;
		info_r->records = db->count;
		info_r->pending = db->npend;
		info_r->torn_bytes = (size_t)(end - p);
	}
	return 0;
}

/* ---- the file ------------------------------------------------------------ */

static int uidl_db_lock(struct uidl_db *db, const char **error_r)
{
	char lock_path[4096];
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

	if ((size_t)snprintf(lock_path, sizeof(lock_path), "%s.lock",
			     db->path) >= sizeof(lock_path))
		return uidl_db_fail(error_r, "%s: name too long", db->path);
	db->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW |
				      O_NOCTTY | O_CLOEXEC, 0600);
	if (db->lock_fd < 0)
		return uidl_db_fail_errno(error_r, "open", lock_path, errno);
	if (fcntl(db->lock_fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES)
		return uidl_db_fail(error_r, "%s is in use by another "
				    "popbox-fetch run (%s is locked)",
				    db->path, lock_path);
	return uidl_db_fail_errno(error_r, "lock", lock_path, errno);
}

static int uidl_db_load(struct uidl_db *db, struct uidl_db_load_info *info,
			const char **error_r)
{
	char *text;
	size_t len;
	const char *err;
	int ret;

	memset(info, 0, sizeof(*info));
	if (file_read_all(AT_FDCWD, db->path, O_NOFOLLOW, UIDL_DB_FILE_MAX,
			  &text, &len, NULL, &err) < 0) {
		if (errno == ENOENT) {
			info->missing = true;
			return 0;
		}
		if (errno == ELOOP)
			err = "a symlink (saving would replace it)";
		return uidl_db_fail(error_r, "%s: %s; the file is left as it "
				    "is", db->path, err);
	}
	ret = uidl_db_parse(db, text, len, info, &err);
	free(text);
	if (ret < 0) {
		/* err is in the buffer the message goes into. */
		char what[128];
		snprintf(what, sizeof(what), "%s", err);
		return uidl_db_fail(error_r, "%s is damaged, %s; it is left as "
				    "it is: repair or remove it (without it, "
				    "every message kept on the server is "
				    "downloaded again)", db->path, what);
	}
	return 0;
}

int uidl_db_open(const char *path, struct uidl_db **db_r,
		 struct uidl_db_load_info *info_r, const char **error_r)
{
	struct uidl_db_load_info info;
	struct uidl_db *db = uidl_db_new();

	*db_r = NULL;
	if (db == NULL || (db->path = strdup(path)) == NULL) {
		uidl_db_free(&db);
		return uidl_db_fail(error_r, "out of memory");
	}
	if (uidl_db_lock(db, error_r) < 0 ||
	    uidl_db_load(db, &info, error_r) < 0) {
		uidl_db_free(&db);
		return -1;
	}
	if (info_r != NULL)
		*info_r = info;
	*db_r = db;
	return 0;
}

size_t uidl_db_format_line(char buf[UIDL_DB_LINE_MAX + 1], const char *uidl,
			   size_t len, const struct uidl_db_rec *rec)
{
	int n = snprintf(buf, UIDL_DB_LINE_MAX + 1, "%lld %llu %c %.*s\n",
			 (long long)rec->first_seen,
			 (unsigned long long)rec->size, (char)rec->state,
			 (int)len, uidl);

	/* Fits: the fields are checked on the way in (uidl_db_set). */
	return n < 0 || n > UIDL_DB_LINE_MAX ? 0 : (size_t)n;
}

size_t uidl_db_format_pending(char buf[UIDL_DB_PENDING_LINE_MAX + 1],
			      const char *uidl, size_t len,
			      const struct uidl_db_rec *rec, const char *name)
{
	int n = snprintf(buf, UIDL_DB_PENDING_LINE_MAX + 1,
			 "%lld %llu %c%c %s %.*s\n",
			 (long long)rec->first_seen,
			 (unsigned long long)rec->size, UIDL_DB_PENDING,
			 (char)rec->state, name, (int)len, uidl);

	return n < 0 || n > UIDL_DB_PENDING_LINE_MAX ? 0 : (size_t)n;
}

/* fsync of path's directory. */
static int uidl_db_fsync_dir(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	int fd, ret, err;

	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s",
			 slash == path ? 1 : (int)(slash - path), path);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ret = fsync(fd);
	err = errno;
	close(fd);
	errno = err;
	return ret;
}

static int uidl_db_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The header and every record into fd. */
static int uidl_db_write_table(const struct uidl_db *db, int fd)
{
	char *buf = malloc(UIDL_DB_WBUF);
	size_t used = sizeof(UIDL_DB_HEADER) - 1;
	int ret = 0;

	if (buf == NULL) {
		errno = ENOMEM;
		return -1;
	}
	memcpy(buf, UIDL_DB_HEADER, used);
	for (size_t i = 0; i < db->count && ret == 0; i++) {
		const struct uidl_db_entry *e = &db->entries[i];
		struct uidl_db_rec rec = {
			.first_seen = e->first_seen, .size = e->size,
			.state = (enum uidl_db_state)e->state,
		};
		if (UIDL_DB_WBUF - used < UIDL_DB_LINE_MAX + 1) {
			ret = uidl_db_write_all(fd, buf, used);
			used = 0;
		}
		used += uidl_db_format_line(buf + used, e->uidl, e->len, &rec);
	}
	/* The unsettled pending records: the next load looks them up. */
	for (size_t i = 0; i < db->npend && ret == 0; i++) {
		const struct uidl_db_pending *p = &db->pend[i];

		if (UIDL_DB_WBUF - used < UIDL_DB_PENDING_LINE_MAX + 1) {
			ret = uidl_db_write_all(fd, buf, used);
			used = 0;
		}
		used += uidl_db_format_pending(buf + used, p->uidl, p->len,
					       &p->rec, p->name);
	}
	if (ret == 0)
		ret = uidl_db_write_all(fd, buf, used);
	int err = errno;
	free(buf);
	errno = err;
	return ret;
}

/* Writes "<path>.tmp" and renames it over path; fd_r is left open on it.
   -1 with errno and *what_r. */
static int uidl_db_replace(struct uidl_db *db, const char *tmp, int *fd_r,
			   const char **what_r)
{
	int fd;

	*what_r = "create";
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NOCTTY |
		       O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	*fd_r = fd;
	*what_r = "write";
	if (uidl_db_write_table(db, fd) < 0)
		return -1;
	*what_r = "fsync";
	if (fsync(fd) < 0)
		return -1;
	*what_r = "rename";
	if (rename(tmp, db->path) < 0)
		return -1;
	*what_r = "fsync the directory of";
	if (uidl_db_fsync_dir(db->path) < 0)
		return -1;
	/* From now on records are appended to this file. */
	*what_r = "fcntl";
	return fcntl(fd, F_SETFL, O_APPEND);
}

int uidl_db_save(struct uidl_db *db, const char **error_r)
{
	char tmp[4096];
	const char *what;
	int fd = -1;

	if (db->path == NULL)
		return uidl_db_fail(error_r, "UIDL table has no file");
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", db->path) >=
	    sizeof(tmp))
		return uidl_db_fail(error_r, "%s: name too long", db->path);
	if (db->append_fd >= 0) {
		close(db->append_fd);
		db->append_fd = -1;
	}
	if (uidl_db_replace(db, tmp, &fd, &what) < 0) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		/* Before the rename the old file is untouched; after it
		   (the directory's fsync failed) the new one is in place
		   but perhaps not durable: either way an error, and the
		   temp file, if still there, is of no use. */
		(void)unlink(tmp);
		return uidl_db_fail_errno(error_r, what, tmp, err);
	}
	db->append_fd = fd;
	db->dirty = false;
	db->settled = false;
	return 0;
}

int uidl_db_record(struct uidl_db *db, const char *uidl, size_t len,
		   const struct uidl_db_rec *rec, const char **error_r)
{
	struct uidl_db_batch_item item = { .uidl = uidl, .len = len,
					   .rec = *rec };

	return uidl_db_record_batch(db, &item, 1, error_r);
}

/*
 * Appends the lines of items[0..n) (pending lines if names is not NULL)
 * with one write() and one fdatasync().  0 once they are on disk.
 */
static int uidl_db_append(struct uidl_db *db,
			  const struct uidl_db_batch_item *items,
			  const char *const *names, size_t n,
			  const char **error_r)
{
	size_t used = 0;
	char *lines;
	int ret;

	/* n <= UIDL_DB_BATCH_MAX lines of at most UIDL_DB_PENDING_LINE_MAX. */
	if ((lines = malloc(n * UIDL_DB_PENDING_LINE_MAX + 1)) == NULL)
		return uidl_db_fail(error_r, "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (names != NULL)
			used += uidl_db_format_pending(lines + used,
						       items[i].uidl,
						       items[i].len,
						       &items[i].rec, names[i]);
		else
			used += uidl_db_format_line(lines + used,
						    items[i].uidl, items[i].len,
						    &items[i].rec);
	}
	ret = uidl_db_write_all(db->append_fd, lines, used);
	int err = errno;
	free(lines);
	if (ret == 0 && fdatasync(db->append_fd) < 0) {
		ret = -1;
		err = errno;
	}
	if (ret < 0) {
		/* The file may end in part of these lines now: the next
		   record rewrites it whole. */
		close(db->append_fd);
		db->append_fd = -1;
		db->dirty = true;
		return uidl_db_fail_errno(error_r, "append to", db->path, err);
	}
	db->dirty = false;
	return 0;
}

int uidl_db_record_batch(struct uidl_db *db,
			 const struct uidl_db_batch_item *items, size_t n,
			 const char **error_r)
{
	bool was_dirty = db->dirty;

	if (n == 0 || n > UIDL_DB_BATCH_MAX)
		return uidl_db_fail(error_r, "%zu records in one batch", n);
	/* All or nothing: a bad item changes nothing in memory either. */
	for (size_t i = 0; i < n; i++) {
		const struct uidl_db_rec *r = &items[i].rec;

		if (!uidl_db_uidl_valid(items[i].uidl, items[i].len) ||
		    r->first_seen < 0 || r->first_seen > UIDL_DB_TIME_MAX ||
		    r->size > UIDL_DB_SIZE_MAX ||
		    (r->state != UIDL_DB_FULL && r->state != UIDL_DB_HEADERS))
			return uidl_db_fail(error_r, "invalid record in a "
					    "batch");
	}
	for (size_t i = 0; i < n; i++) {
		if (uidl_db_set(db, items[i].uidl, items[i].len,
				&items[i].rec, error_r) < 0)
			return -1;
	}
	if (was_dirty || db->append_fd < 0)
		return uidl_db_save(db, error_r);
	return uidl_db_append(db, items, NULL, n, error_r);
}

int uidl_db_record_pending(struct uidl_db *db,
			   const struct uidl_db_batch_item *items,
			   const char *const *names, size_t n,
			   const char **error_r)
{
	if (n == 0 || n > UIDL_DB_BATCH_MAX)
		return uidl_db_fail(error_r, "%zu records in one batch", n);
	if (db->path == NULL)
		return uidl_db_fail(error_r, "UIDL table has no file");
	for (size_t i = 0; i < n; i++) {
		if (!uidl_db_uidl_valid(items[i].uidl, items[i].len) ||
		    !uidl_db_rec_valid(&items[i].rec) ||
		    !uidl_db_name_valid(names[i], strlen(names[i])))
			return uidl_db_fail(error_r, "invalid pending record");
	}
	for (size_t i = 0; i < n; i++) {
		if (uidl_db_pending_add(db, items[i].uidl, items[i].len,
					&items[i].rec, names[i],
					strlen(names[i])) < 0)
			return uidl_db_fail(error_r, "too many pending records, "
					    "or out of memory");
	}
	if (db->dirty || db->append_fd < 0)
		return uidl_db_save(db, error_r);
	return uidl_db_append(db, items, names, n, error_r);
}
