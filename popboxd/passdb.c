/*
 * passdb.c — the passwd-file password database (see passdb.h).
 *
 * The whole file is parsed into an immutable table (a chained hash table of
 * passwd-file entries plus the dummy hash for unknown users).  Each lookup
 * stat()s the file; when (st_dev, st_ino, st_size, st_mtim) changed, a new
 * table is built and swapped in.  A file that no longer loads leaves the
 * last good table serving, with one warning.
 *
 * passdb_file_can_scram() builds the same table once, quietly, asks of
 * each kept entry what passdb_scram_lookup() would, and frees it.
 *
 * Locking: `lock` guards the table pointer and the file identities; it is
 * held only to swap a table or to copy one entry out.  `reload_lock`
 * serialises reloads so concurrent lookups do not all re-read the file.
 * Password hashing always runs with neither held.
 *
 * Timing: every plain verification runs exactly one slow hash (the real
 * entry when it is crypt or SCRAM, else the dummy: for an unknown user or a
 * plaintext entry); every APOP verification runs MD5 exactly once; every
 * SCRAM lookup runs PBKDF2 exactly once (deriving a {PLAIN} user's keys,
 * or a throw-away run beside stored or fake keys).
 */
#include "passdb.h"

#include "file-read.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "log.h"
#include "passwd-file.h"
#include "password.h"

/* APOP digest: MD5 as hex (RFC 1939 section 7). */
#define PASSDB_APOP_HEX_LEN 32

/* Key for the HMAC that makes stable per-user SCRAM salts. */
#define PASSDB_SALT_KEY_LEN 32

struct passdb_entry {
	struct passdb_entry *next;
	struct passwd_file_entry e;
};

struct passdb_table {
	struct passdb_entry **buckets;
	size_t nbuckets; /* a power of two */
	char *dummy;     /* "{SCHEME}hash" of a password nobody knows */
};

struct passdb_file_id {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim;
};

struct passdb {
	char *path;
	pthread_mutex_t lock;
	pthread_mutex_t reload_lock;
	struct passdb_table *table;      /* never NULL after passdb_open() */
	struct passdb_file_id id;        /* of the file table was read from */
	struct passdb_file_id failed_id; /* last version that failed to load */
	bool failed_valid;
	bool missing_warned;             /* stat() failure already logged */
	/* Drawn at open, never changed: read without the lock. */
	uint8_t salt_key[PASSDB_SALT_KEY_LEN];
};

/* What one lookup copies out of the table, so hashing runs unlocked. */
struct passdb_lookup {
	bool found;
	struct passwd_file_entry e;
	char *dummy;
};

/* FNV-1a: names in the table come from the admin, so no flooding concern. */
static size_t passdb_hash(const char *s)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)h;
}

static void passdb_table_free(struct passdb_table **tablep)
{
	struct passdb_table *t = *tablep;

	if (t == NULL)
		return;
	/* buckets is NULL when its allocation failed (nbuckets already set). */
	for (size_t i = 0; t->buckets != NULL && i < t->nbuckets; i++) {
		struct passdb_entry *ent = t->buckets[i], *next;

		for (; ent != NULL; ent = next) {
			next = ent->next;
			passwd_file_entry_free(&ent->e);
			free(ent);
		}
	}
	free(t->buckets);
	free(t->dummy);
	free(t);
	*tablep = NULL;
}

static struct passdb_entry *passdb_table_find(const struct passdb_table *t,
					      const char *user)
{
	struct passdb_entry *ent = t->buckets[passdb_hash(user) & (t->nbuckets - 1)];

	for (; ent != NULL; ent = ent->next) {
		if (strcmp(ent->e.user, user) == 0)
			return ent;
	}
	return NULL;
}

/*
 * Takes over *e; a duplicate user keeps the first line.  *added_r is the
 * new table entry, or NULL for a duplicate.  -1: out of memory.
 */
static int passdb_table_add(struct passdb_table *t, struct passwd_file_entry *e,
			    const char *path, unsigned int lineno, bool report,
			    const struct passdb_entry **added_r)
{
	struct passdb_entry *ent;

	*added_r = NULL;
	if (passdb_table_find(t, e->user) != NULL) {
		if (report)
			log_warn("passdb file=%s line=%u: duplicate user, line "
				 "ignored", path, lineno);
		passwd_file_entry_free(e);
		return 0;
	}
	if ((ent = calloc(1, sizeof(*ent))) == NULL) {
		passwd_file_entry_free(e);
		return -1;
	}
	ent->e = *e;
	memset(e, 0, sizeof(*e));
	size_t b = passdb_hash(ent->e.user) & (t->nbuckets - 1);
	ent->next = t->buckets[b];
	t->buckets[b] = ent;
	*added_r = ent;
	return 0;
}

/* Buckets for a file of size bytes: about one per 32-byte line. */
static size_t passdb_bucket_count(size_t size)
{
	size_t n = 64;

	while (n < size / 32)
		n *= 2;
	return n;
}

/*
 * Parses the whole text into a new table.  Bad lines are skipped, and
 * logged if report is set.  *model_r is the password of the first slow
 * (crypt or SCRAM) entry in file order (owned by the table), the model for
 * the dummy hash, or NULL.
 */
static int passdb_table_build(const char *path, const char *text, size_t len,
			      bool report, struct passdb_table **table_r,
			      const char **model_r, const char **error_r)
{
	struct passdb_table *t = calloc(1, sizeof(*t));
	unsigned int lineno = 0;
	size_t pos = 0;

	*model_r = NULL;
	if (t == NULL)
		goto nomem;
	t->nbuckets = passdb_bucket_count(len);
	/* An array of pointers: sizeof(a pointer) is meant.
	   NOLINTNEXTLINE(bugprone-sizeof-expression) */
	if ((t->buckets = calloc(t->nbuckets, sizeof(*t->buckets))) == NULL)
		goto nomem;
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t linelen = nl != NULL ? (size_t)(nl - text) - pos : len - pos;
		struct passwd_file_entry e;
		enum passwd_file_error err;

		lineno++;
		int r = passwd_file_parse_line(text + pos, linelen, &e, &err);
		pos += linelen + 1;
		if (r < 0 && err == PASSWD_FILE_ERR_NOMEM)
			goto nomem;
		if (r < 0 && report)
			log_warn("passdb file=%s line=%u: %s, line ignored", path,
				 lineno, passwd_file_strerror(err));
		if (r <= 0)
			continue;
		const struct passdb_entry *added;
		if (passdb_table_add(t, &e, path, lineno, report, &added) < 0)
			goto nomem;
		if (added != NULL && *model_r == NULL &&
		    password_is_slow(added->e.password))
			*model_r = added->e.password;
	}
	*table_r = t;
	return 0;
nomem:
	passdb_table_free(&t);
	*error_r = "out of memory";
	return -1;
}


static void passdb_id_from_stat(const struct stat *st, struct passdb_file_id *id)
{
	memset(id, 0, sizeof(*id));
	id->dev = st->st_dev;
	id->ino = st->st_ino;
	id->size = st->st_size;
	id->mtim = st->st_mtim;
}

static bool passdb_id_equal(const struct passdb_file_id *a,
			    const struct passdb_file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtim.tv_sec == b->mtim.tv_sec &&
	       a->mtim.tv_nsec == b->mtim.tv_nsec;
}

/* Reads a regular file of at most PASSWD_FILE_SIZE_MAX bytes into *text_r. */
static int passdb_read_file(const char *path, char **text_r, size_t *len_r,
			    struct passdb_file_id *id_r, const char **error_r)
{
	struct stat st;

	/* Not O_NOFOLLOW: admins may symlink the file. */
	if (file_read_all(AT_FDCWD, path, 0, PASSWD_FILE_SIZE_MAX, text_r, len_r,
			  &st, error_r) < 0) {
		if (errno == EFBIG)
			*error_r = "file larger than 64 MiB";
		return -1;
	}
	passdb_id_from_stat(&st, id_r);
	return 0;
}

/* Reads and parses the file into a table without its dummy hash; the
   text read is wiped.  *model_r as passdb_table_build(). */
static int passdb_load_table(const char *path, bool report,
			     struct passdb_table **table_r,
			     struct passdb_file_id *id_r, const char **model_r,
			     const char **error_r)
{
	char *text;
	size_t len;
	int ret;

	if (passdb_read_file(path, &text, &len, id_r, error_r) < 0)
		return -1;
	ret = passdb_table_build(path, text, len, report, table_r, model_r,
				 error_r);
	explicit_bzero(text, len);
	free(text);
	return ret;
}

static int passdb_load(const char *path, struct passdb_table **table_r,
		       struct passdb_file_id *id_r, const char **error_r)
{
	const char *model;
	int ret = passdb_load_table(path, true, table_r, id_r, &model, error_r);

	/* Same scheme, cost and salt form as a real entry, so an unknown user
	   costs what a real one does.  A file without slow entries (all
	   {PLAIN}) gets a {PLAIN} dummy: no login there runs a slow hash, the
	   unknown user's neither, and none is spent for nothing. */
	if (ret == 0 &&
	    (model != NULL ?
	     password_dummy_setting(model, &(*table_r)->dummy, error_r) :
	     password_dummy_plain(&(*table_r)->dummy, error_r)) < 0) {
		passdb_table_free(table_r);
		ret = -1;
	}
	return ret;
}

/* Swaps in a freshly loaded table (called with reload_lock held). */
static void passdb_reload(struct passdb *db, const struct passdb_file_id *seen)
{
	struct passdb_table *table = NULL;
	struct passdb_file_id id;
	const char *error;

	if (passdb_load(db->path, &table, &id, &error) < 0) {
		log_warn("passdb file=%s: cannot reload (%s), keeping the "
			 "previous version", db->path, error);
		pthread_mutex_lock(&db->lock);
		db->failed_id = *seen;
		db->failed_valid = true;
		pthread_mutex_unlock(&db->lock);
		return;
	}
	pthread_mutex_lock(&db->lock);
	struct passdb_table *old = db->table;
	db->table = table;
	db->id = id;
	db->failed_valid = false;
	db->missing_warned = false;
	pthread_mutex_unlock(&db->lock);
	passdb_table_free(&old);
	log_info("passdb file=%s: reloaded", db->path);
}

/* True if the file on disk is the one loaded (or one that failed to load). */
static bool passdb_is_current(struct passdb *db, const struct passdb_file_id *now)
{
	pthread_mutex_lock(&db->lock);
	bool same = passdb_id_equal(&db->id, now) ||
		    (db->failed_valid && passdb_id_equal(&db->failed_id, now));
	pthread_mutex_unlock(&db->lock);
	return same;
}

/* Reloads the file if it changed; stat() is cheap enough for every login. */
static void passdb_refresh(struct passdb *db)
{
	struct passdb_file_id now;
	struct stat st;

	if (stat(db->path, &st) < 0) {
		pthread_mutex_lock(&db->lock);
		bool warn = !db->missing_warned;
		db->missing_warned = true;
		pthread_mutex_unlock(&db->lock);
		if (warn)
			log_warn("passdb file=%s: %s, keeping the previous "
				 "version", db->path, strerror(errno));
		return;
	}
	passdb_id_from_stat(&st, &now);
	if (passdb_is_current(db, &now))
		return;
	pthread_mutex_lock(&db->reload_lock);
	if (!passdb_is_current(db, &now))
		passdb_reload(db, &now);
	pthread_mutex_unlock(&db->reload_lock);
}

int passdb_open(const char *path, struct passdb **db_r, const char **error_r)
{
	struct passdb *db = calloc(1, sizeof(*db));
	static _Thread_local char errbuf[512];

	if (db == NULL || (db->path = strdup(path)) == NULL) {
		free(db);
		*error_r = "out of memory";
		return -1;
	}
	if (getrandom(db->salt_key, sizeof(db->salt_key), 0) !=
	    (ssize_t)sizeof(db->salt_key)) {
		*error_r = "no entropy for the SCRAM salt key";
		free(db->path);
		free(db);
		return -1;
	}
	if (passdb_load(path, &db->table, &db->id, error_r) < 0) {
		snprintf(errbuf, sizeof(errbuf), "%s: %s", path, *error_r);
		*error_r = errbuf;
		free(db->path);
		free(db);
		return -1;
	}
	pthread_mutex_init(&db->lock, NULL);
	pthread_mutex_init(&db->reload_lock, NULL);
	*db_r = db;
	return 0;
}

void passdb_close(struct passdb **dbp)
{
	struct passdb *db = *dbp;

	if (db == NULL)
		return;
	passdb_table_free(&db->table);
	pthread_mutex_destroy(&db->lock);
	pthread_mutex_destroy(&db->reload_lock);
	free(db->path);
	explicit_bzero(db->salt_key, sizeof(db->salt_key));
	free(db);
	*dbp = NULL;
}

static void passdb_lookup_clear(struct passdb_lookup *lk)
{
	passwd_file_entry_free(&lk->e);
	free(lk->dummy);
	lk->dummy = NULL;
}

static char *passdb_strdup_null(const char *s)
{
	return s == NULL ? NULL : strdup(s);
}

/*
 * Copies user's entry (if any) and the dummy hash out of the current table.
 * An invalid name is simply not found.  Returns -1 only when out of memory.
 */
static int passdb_lookup(struct passdb *db, const char *user,
			 struct passdb_lookup *lk)
{
	bool nomem = false;

	memset(lk, 0, sizeof(*lk));
	passdb_refresh(db);
	pthread_mutex_lock(&db->lock);
	const struct passdb_entry *ent = NULL;
	if (username_valid(user, strnlen(user, USERNAME_MAX + 1)))
		ent = passdb_table_find(db->table, user);
	lk->dummy = strdup(db->table->dummy);
	if (ent != NULL) {
		lk->found = true;
		lk->e.user = strdup(ent->e.user);
		lk->e.password = strdup(ent->e.password);
		lk->e.home = strdup(ent->e.home);
		lk->e.mail = passdb_strdup_null(ent->e.mail);
		lk->e.uid = ent->e.uid;
		lk->e.gid = ent->e.gid;
		lk->e.policy = ent->e.policy;
		nomem = lk->e.user == NULL || lk->e.password == NULL ||
			lk->e.home == NULL ||
			(ent->e.mail != NULL && lk->e.mail == NULL);
	}
	pthread_mutex_unlock(&db->lock);
	if (nomem || lk->dummy == NULL) {
		passdb_lookup_clear(lk);
		return -1;
	}
	return 0;
}

/* Fills user_r from a found entry; TEMPFAIL when out of memory. */
static enum passdb_result passdb_user_fill(const struct passdb_lookup *lk,
					   struct passdb_user *user_r)
{
	return passdb_user_from_entry(&lk->e, user_r) == 0 ? PASSDB_OK
							   : PASSDB_TEMPFAIL;
}

enum passdb_result passdb_verify_plain(struct passdb *db, const char *user,
				       const char *password,
				       struct passdb_user *user_r)
{
	struct passdb_lookup lk;
	enum passdb_result result = PASSDB_FAIL;

	memset(user_r, 0, sizeof(*user_r));
	if (strnlen(password, PASSWORD_MAX + 1) > PASSWORD_MAX)
		return PASSDB_FAIL; /* decided before any lookup: leaks nothing */
	if (passdb_lookup(db, user, &lk) < 0)
		return PASSDB_TEMPFAIL;
	/* Exactly one slow hash per attempt: the dummy stands in for an
	   unknown user and runs beside a plaintext or unusable entry. */
	if (!lk.found || !password_is_slow(lk.e.password))
		(void)password_verify(lk.dummy, password);
	if (lk.found) {
		int r = password_verify(lk.e.password, password);

		if (r < 0) {
			char esc[LOG_ESCAPE_MAX + 1];
			log_warn("passdb user=%s: unusable password entry",
				 log_escape(esc, lk.e.user, strlen(lk.e.user)));
		}
		if (r == 1)
			result = passdb_user_fill(&lk, user_r);
	}
	passdb_lookup_clear(&lk);
	return result;
}

/* hex_r = lowercase hex MD5(timestamp || secret).  -1 if OpenSSL fails. */
static int passdb_apop_digest(const char *timestamp, const char *secret,
			      char hex_r[PASSDB_APOP_HEX_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) &&
		 EVP_DigestUpdate(ctx, timestamp, strlen(timestamp)) &&
		 EVP_DigestUpdate(ctx, secret, strlen(secret)) &&
		 EVP_DigestFinal_ex(ctx, md, &mdlen) &&
		 mdlen * 2 == PASSDB_APOP_HEX_LEN;

	EVP_MD_CTX_free(ctx);
	for (unsigned int i = 0; ok && i < mdlen; i++)
		snprintf(hex_r + 2 * i, 3, "%02x", md[i]);
	explicit_bzero(md, sizeof(md));
	return ok ? 0 : -1;
}

/* Lowercases a client digest; false unless exactly 32 hex digits. */
static bool passdb_apop_normalise(const char *digest,
				  char out[PASSDB_APOP_HEX_LEN + 1])
{
	size_t len = strnlen(digest, PASSDB_APOP_HEX_LEN + 1);

	memset(out, 0, PASSDB_APOP_HEX_LEN + 1);
	if (len != PASSDB_APOP_HEX_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = digest[i];

		if (c >= 'A' && c <= 'F')
			c = (char)(c - 'A' + 'a');
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
		out[i] = c;
	}
	return true;
}

enum passdb_result passdb_verify_apop(struct passdb *db, const char *user,
				      const char *timestamp, const char *digest,
				      struct passdb_user *user_r)
{
	char want[PASSDB_APOP_HEX_LEN + 1] = "", got[PASSDB_APOP_HEX_LEN + 1];
	struct passdb_lookup lk;
	enum passdb_result result = PASSDB_FAIL;

	memset(user_r, 0, sizeof(*user_r));
	if (passdb_lookup(db, user, &lk) < 0)
		return PASSDB_TEMPFAIL;
	const char *secret = lk.found ? password_plain_secret(lk.e.password)
				      : NULL;
	/* One MD5 whatever the user: the dummy hash stands in as a secret. */
	int r = passdb_apop_digest(timestamp, secret != NULL ? secret : lk.dummy,
				   want);
	bool wellformed = passdb_apop_normalise(digest, got);
	if (r < 0)
		result = PASSDB_TEMPFAIL;
	else if (CRYPTO_memcmp(want, got, PASSDB_APOP_HEX_LEN) == 0 &&
		 wellformed && secret != NULL)
		result = passdb_user_fill(&lk, user_r);
	explicit_bzero(want, sizeof(want));
	passdb_lookup_clear(&lk);
	return result;
}

/* The salt and iterations of {PLAIN}-derived and fake SCRAM credentials:
   the first PASSWORD_SCRAM_SALT_LEN bytes of HMAC-SHA-256(salt_key, user),
   stable per user while the process lives, unrelated across users. */
static int passdb_scram_shape(const struct passdb *db, const char *user,
			      struct password_scram *shape_r)
{
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	_Static_assert(PASSWORD_SCRAM_SALT_LEN <= 32, "salt from SHA-256");
	memset(shape_r, 0, sizeof(*shape_r));
	if (HMAC(EVP_sha256(), db->salt_key, (int)sizeof(db->salt_key),
		 (const unsigned char *)user, strlen(user), mac, &len) == NULL ||
	    len < PASSWORD_SCRAM_SALT_LEN)
		return -1;
	memcpy(shape_r->salt, mac, PASSWORD_SCRAM_SALT_LEN);
	shape_r->salt_len = PASSWORD_SCRAM_SALT_LEN;
	shape_r->iter = PASSWORD_SCRAM_ITER_DEFAULT;
	return 0;
}

/* One PBKDF2 run whose result is thrown away: keeps the cost of a lookup
   the same when no derivation is needed. */
static int passdb_scram_balance(const struct password_scram *shape)
{
	struct password_scram scratch;
	int ret = password_scram_derive("", shape->salt, shape->salt_len,
					shape->iter, &scratch);

	explicit_bzero(&scratch, sizeof(scratch));
	return ret;
}

/* The plaintext secret SCRAM keys can be derived from, or NULL: a
   {PLAIN}/{CLEAR} entry whose secret is not longer than PASSWORD_MAX. */
static const char *passdb_scram_secret(const char *stored)
{
	const char *secret = password_plain_secret(stored);

	if (secret == NULL || strnlen(secret, PASSWORD_MAX + 1) > PASSWORD_MAX)
		return NULL;
	return secret;
}

/* True if passdb_scram_fill() gives usable credentials for this stored
   password: a valid {SCRAM-SHA-256} entry, or a usable plaintext one. */
static bool passdb_serves_scram(const char *stored)
{
	struct password_scram scratch;
	bool stored_keys = password_scram_parse(stored, &scratch) == 0;

	explicit_bzero(&scratch, sizeof(scratch));
	return stored_keys || passdb_scram_secret(stored) != NULL;
}

/*
 * Fills *cred from the looked-up entry: its stored keys, keys derived from
 * its plaintext secret with shape's salt and iterations, or shape with
 * random keys.  Exactly one PBKDF2 run.  Returns 1 if usable, 0 if fake,
 * -1 on failure.  Usable exactly when passdb_serves_scram() says so.
 */
static int passdb_scram_fill(const struct passdb_lookup *lk,
			     const struct password_scram *shape,
			     struct password_scram *cred)
{
	const char *secret = lk->found ? passdb_scram_secret(lk->e.password)
				       : NULL;

	if (lk->found && password_scram_parse(lk->e.password, cred) == 0)
		return passdb_scram_balance(shape) == 0 ? 1 : -1;
	if (secret != NULL)
		return password_scram_derive(secret, shape->salt,
					     shape->salt_len, shape->iter,
					     cred) == 0 ? 1 : -1;
	*cred = *shape;
	if (RAND_bytes(cred->stored_key, sizeof(cred->stored_key)) != 1 ||
	    RAND_bytes(cred->server_key, sizeof(cred->server_key)) != 1)
		return -1;
	return passdb_scram_balance(shape) == 0 ? 0 : -1;
}

enum passdb_result passdb_scram_lookup(struct passdb *db, const char *user,
				       struct password_scram *cred_r,
				       bool *usable_r)
{
	struct password_scram shape;
	struct passdb_lookup lk;
	int r = -1;

	memset(cred_r, 0, sizeof(*cred_r));
	*usable_r = false;
	if (passdb_lookup(db, user, &lk) < 0)
		return PASSDB_TEMPFAIL;
	if (passdb_scram_shape(db, user, &shape) == 0)
		r = passdb_scram_fill(&lk, &shape, cred_r);
	passdb_lookup_clear(&lk);
	if (r < 0) {
		explicit_bzero(cred_r, sizeof(*cred_r));
		return PASSDB_TEMPFAIL;
	}
	*usable_r = r == 1;
	return PASSDB_OK;
}

enum passdb_result passdb_user_lookup(struct passdb *db, const char *user,
				      struct passdb_user *user_r)
{
	struct passdb_lookup lk;
	enum passdb_result result = PASSDB_FAIL;

	memset(user_r, 0, sizeof(*user_r));
	if (passdb_lookup(db, user, &lk) < 0)
		return PASSDB_TEMPFAIL;
	if (lk.found)
		result = passdb_user_fill(&lk, user_r);
	passdb_lookup_clear(&lk);
	return result;
}

/* True if any entry of the table serves SCRAM. */
static bool passdb_table_serves_scram(const struct passdb_table *t)
{
	for (size_t i = 0; i < t->nbuckets; i++) {
		for (const struct passdb_entry *ent = t->buckets[i]; ent != NULL;
		     ent = ent->next) {
			if (passdb_serves_scram(ent->e.password))
				return true;
		}
	}
	return false;
}

int passdb_file_can_scram(const char *path, bool *can_r, const char **error_r)
{
	struct passdb_table *table = NULL;
	struct passdb_file_id id;
	const char *model;

	*can_r = false;
	if (passdb_load_table(path, false, &table, &id, &model, error_r) < 0)
		return -1;
	*can_r = passdb_table_serves_scram(table);
	passdb_table_free(&table);
	return 0;
}
