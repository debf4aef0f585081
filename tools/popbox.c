/*
 * popbox — the admin command.
 *
 *   popbox passwd [-s SCHEME]     hash a password for the passwd-file
 *   popbox check-config [-c FILE] load a config, print effective settings
 *   popbox expire [-c FILE] [-n] [-v]   apply the retention policy
 *
 * passwd and check-config run as whoever calls them, need no privileges,
 * touch no mail and open only the config file they are given and the
 * terminal.  A password read here is wiped from memory as soon as it is
 * hashed.  Exit codes: sysexits.h.
 *
 * expire is for cron or a systemd timer (docs/retention.md).  It reads the
 * config and the passwd-file, so it runs as root or as the passwd-file's
 * owner; as root it becomes mail_user right after reading them, before it
 * touches any Maildir.  For every account (the first line of a user, as
 * popboxd), with the account's resolved policy (user-policy.h): messages
 * in the maildrop older than expire_days are unlinked, and messages in
 * .Kept whose keep_days have passed are unlinked (retention.h decides).
 * Each maildrop is taken with its lock, as a POP3 session would, through
 * the same commit path (crash-safe, cache kept true); a maildrop locked by
 * a session is skipped and reported, never waited for.  Exit 0 when every
 * maildrop was done or skipped because in use, 1 when any failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "file-read.h"
#include "maildrop.h"
#include "passdb.h"
#include "passwd-file.h"
#include "password.h"
#include "retention.h"
#include "settings.h"
#include "user-policy.h"

/* Where popboxd looks for its config unless told otherwise. */
#define POPBOX_DEFAULT_CONFIG "/etc/popbox/popboxd.conf"
/* The largest passwd-file read, as popboxd's passdb. */
#define POPBOX_PASSWD_FILE_MAX (64 * 1024 * 1024)

static const char popbox_usage[] =
	"usage: popbox passwd [-s SCHEME]\n"
	"       popbox check-config [-c FILE]\n"
	"       popbox expire [-c FILE] [-n] [-v]\n"
	"       popbox --help\n"
	"\n"
	"passwd        read a password (twice from a terminal, or one line\n"
	"              from stdin) and print \"{SCHEME}hash\" for the\n"
	"              passwd-file.  SCHEME: YESCRYPT (default), SHA512-CRYPT,\n"
	"              SHA256-CRYPT, BLF-CRYPT, SCRAM-SHA-256 (needed for\n"
	"              AUTH SCRAM-SHA-256; the first such entry needs a\n"
	"              SIGHUP to popboxd), PLAIN (needed only for APOP)\n"
	"check-config  load FILE (default " POPBOX_DEFAULT_CONFIG ") and print\n"
	"              the effective settings, like `popboxd -t`\n"
	"expire        remove what the retention policy no longer keeps:\n"
	"              messages older than expire_days, kept (DELEted)\n"
	"              messages older than keep_days; one line per account\n"
	"              with removals, then a summary.  -n: dry run, remove\n"
	"              nothing; -v: a line for every account.  Run as root\n"
	"              (it becomes mail_user) or as the passwd-file's owner\n";

static struct termios popbox_saved_tty;
static volatile sig_atomic_t popbox_tty_changed;

static void popbox_restore_tty(void)
{
	if (popbox_tty_changed)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &popbox_saved_tty);
	popbox_tty_changed = 0;
}

static void popbox_on_signal(int sig)
{
	popbox_restore_tty();
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * Reads one line from stdin into buf (size + 2 bytes), without its
 * newline; at most size bytes.  Returns 0, or -1 at end of input or for a
 * longer line.
 */
static int popbox_read_line(char *buf, size_t size)
{
	size_t len;

	if (fgets(buf, (int)size + 2, stdin) == NULL)
		return -1;
	len = strlen(buf);
	if (len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	else if (!feof(stdin))
		return -1; /* longer than PASSWORD_MAX */
	if (len > 0 && buf[len - 1] == '\r')
		buf[--len] = '\0';
	return 0;
}

/* Prompts on stderr and reads a line from the terminal with echo off. */
static int popbox_prompt(const char *prompt, char *buf, size_t size)
{
	struct termios t = popbox_saved_tty;
	int ret;

	fputs(prompt, stderr);
	fflush(stderr);
	t.c_lflag &= ~(tcflag_t)ECHO;
	t.c_lflag |= ECHONL;
	popbox_tty_changed = 1;
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) < 0)
		return -1;
	ret = popbox_read_line(buf, size);
	popbox_restore_tty();
	return ret;
}

/* Reads the new password into buf; an exit code (EX_OK on success). */
static int popbox_get_password(char *buf, char *again, size_t size)
{
	if (!isatty(STDIN_FILENO)) {
		if (popbox_read_line(buf, size) < 0) {
			fprintf(stderr, "popbox: no password on stdin, or "
				"longer than %d bytes\n", PASSWORD_MAX);
			return EX_DATAERR;
		}
		return EX_OK;
	}
	if (tcgetattr(STDIN_FILENO, &popbox_saved_tty) < 0) {
		fprintf(stderr, "popbox: terminal: %s\n", strerror(errno));
		return EX_IOERR;
	}
	signal(SIGINT, popbox_on_signal);
	signal(SIGTERM, popbox_on_signal);
	signal(SIGHUP, popbox_on_signal);
	if (popbox_prompt("New password: ", buf, size) < 0 ||
	    popbox_prompt("Retype new password: ", again, size) < 0) {
		fprintf(stderr, "popbox: could not read the password\n");
		return EX_DATAERR;
	}
	if (strcmp(buf, again) != 0) {
		fprintf(stderr, "popbox: passwords do not match\n");
		return EX_DATAERR;
	}
	return EX_OK;
}

static int popbox_passwd(int argc, char **argv)
{
	const char *scheme = PASSWORD_DEFAULT_SCHEME, *error;
	char pw[PASSWORD_MAX + 2], again[PASSWORD_MAX + 2];
	char *hash = NULL;
	int opt, ret;

	while ((opt = getopt(argc, argv, "s:")) != -1) {
		if (opt != 's') {
			fputs(popbox_usage, stderr);
			return EX_USAGE;
		}
		scheme = optarg;
	}
	if (optind != argc) {
		fputs(popbox_usage, stderr);
		return EX_USAGE;
	}
	ret = popbox_get_password(pw, again, PASSWORD_MAX);
	if (ret == EX_OK && pw[0] == '\0') {
		fprintf(stderr, "popbox: empty password refused\n");
		ret = EX_DATAERR;
	}
	if (ret == EX_OK && password_hash(scheme, pw, &hash, &error) < 0) {
		fprintf(stderr, "popbox: %s: %s\n", scheme, error);
		ret = EX_USAGE;
	}
	explicit_bzero(pw, sizeof(pw));
	explicit_bzero(again, sizeof(again));
	if (hash != NULL) {
		printf("%s\n", hash);
		explicit_bzero(hash, strlen(hash));
		free(hash);
	}
	return ret;
}

/* Loads the config at path into *set (settings_free it afterwards), or
   says why not and returns EX_CONFIG. */
static int popbox_load_config(const char *path, struct popboxd_settings *set)
{
	const char *error;

	settings_init(set);
	if (settings_load(set, path, &error) < 0) {
		fprintf(stderr, "popbox: %s\n", error);
		settings_free(set);
		return EX_CONFIG;
	}
	return EX_OK;
}

static int popbox_check_config(int argc, char **argv)
{
	const char *path = POPBOX_DEFAULT_CONFIG;
	struct popboxd_settings set;
	int opt;

	while ((opt = getopt(argc, argv, "c:")) != -1) {
		if (opt != 'c') {
			fputs(popbox_usage, stderr);
			return EX_USAGE;
		}
		path = optarg;
	}
	if (optind != argc) {
		fputs(popbox_usage, stderr);
		return EX_USAGE;
	}
	if (popbox_load_config(path, &set) != EX_OK)
		return EX_CONFIG;
	settings_print(&set, stdout);
	settings_free(&set);
	return EX_OK;
}

/* ---- popbox expire ------------------------------------------------------ */

struct expire_run {
	const struct popboxd_settings *set;
	int64_t now;
	bool dry_run;
	bool verbose;
	/* The summary. */
	size_t accounts, with_removals, skipped, failed, messages;
	uint64_t bytes;
};

/* What one account had removed (or, in a dry run, would have). */
struct expire_removed {
	size_t expired;          /* from the maildrop: expire_days */
	uint64_t expired_bytes;
	size_t kept;             /* from .Kept: keep_days */
	uint64_t kept_bytes;
};

enum expire_outcome {
	EXPIRE_DONE,
	EXPIRE_NO_MAILDIR,       /* never got mail: nothing to do */
	EXPIRE_IN_USE,           /* a POP3 session holds it: skipped */
	EXPIRE_FAILED,
};

/* The passwd-file's accounts, in file order, one per user. */
struct expire_accounts {
	struct passwd_file_entry *e;
	size_t count, cap;
};

static void expire_accounts_free(struct expire_accounts *a)
{
	for (size_t i = 0; i < a->count; i++)
		passwd_file_entry_free(&a->e[i]);
	free(a->e);
	memset(a, 0, sizeof(*a));
}

static int expire_accounts_add(struct expire_accounts *a,
			       struct passwd_file_entry *e)
{
	if (a->count == a->cap) {
		size_t ncap = a->cap == 0 ? 64 : a->cap * 2;
		struct passwd_file_entry *n = realloc(a->e, ncap * sizeof(*n));

		if (n == NULL)
			return -1;
		a->e = n;
		a->cap = ncap;
	}
	a->e[a->count++] = *e;
	return 0;
}

/* Index order by user name, then line, for finding repeated users. */
static int expire_by_name(const void *x, const void *y, void *ctx)
{
	const struct passwd_file_entry *e = ctx;
	size_t a = *(const size_t *)x, b = *(const size_t *)y;
	int c = strcmp(e[a].user, e[b].user);

	return c != 0 ? c : (a > b) - (a < b);
}

/* A user on several lines: popboxd uses the first, and so does expire.
   The later ones are dropped (keeping file order). */
static int expire_accounts_dedup(struct expire_accounts *a)
{
	size_t *order = calloc(a->count + 1, sizeof(*order));
	bool *dup = calloc(a->count + 1, sizeof(*dup));
	size_t n = 0;

	if (order == NULL || dup == NULL) {
		free(order);
		free(dup);
		return -1;
	}
	for (size_t i = 0; i < a->count; i++)
		order[i] = i;
	qsort_r(order, a->count, sizeof(*order), expire_by_name, a->e);
	for (size_t k = 1; k < a->count; k++) {
		if (strcmp(a->e[order[k]].user, a->e[order[k - 1]].user) == 0)
			dup[order[k]] = true;
	}
	for (size_t i = 0; i < a->count; i++) {
		if (dup[i])
			passwd_file_entry_free(&a->e[i]);
		else
			a->e[n++] = a->e[i];
	}
	a->count = n;
	free(order);
	free(dup);
	return 0;
}

/* Reads the passwd-file as popboxd's passdb does: bad lines are reported
   and skipped (popboxd ignores them too: no login, no expiry). */
static int expire_load_accounts(const char *path, struct expire_accounts *a)
{
	const char *error;
	char *text;
	size_t len, pos = 0;
	unsigned int lineno = 0;

	if (file_read_all(AT_FDCWD, path, 0, POPBOX_PASSWD_FILE_MAX, &text,
			  &len, NULL, &error) < 0) {
		fprintf(stderr, "popbox: %s: %s\n", path, error);
		return EX_NOINPUT;
	}
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t linelen = nl != NULL ? (size_t)(nl - text) - pos : len - pos;
		struct passwd_file_entry e;
		enum passwd_file_error err;
		int r = passwd_file_parse_line(text + pos, linelen, &e, &err);

		lineno++;
		pos += linelen + 1;
		if (r < 0 && err != PASSWD_FILE_ERR_NOMEM)
			fprintf(stderr, "popbox: %s line %u: %s, line ignored\n",
				path, lineno, passwd_file_strerror(err));
		if ((r < 0 && err == PASSWD_FILE_ERR_NOMEM) ||
		    (r > 0 && expire_accounts_add(a, &e) < 0)) {
			if (r > 0)
				passwd_file_entry_free(&e);
			explicit_bzero(text, len);
			free(text);
			fprintf(stderr, "popbox: out of memory\n");
			return EX_OSERR;
		}
	}
	explicit_bzero(text, len);
	free(text);
	if (expire_accounts_dedup(a) < 0) {
		fprintf(stderr, "popbox: out of memory\n");
		return EX_OSERR;
	}
	return EX_OK;
}

/* As root: become mail_user, whose the Maildirs are, before touching one.
   As anyone else: stay (popboxd run unprivileged owns everything). */
static int expire_become_mail_user(const struct popboxd_settings *set)
{
	const struct passwd *pw;

	if (geteuid() != 0)
		return EX_OK;
	if ((pw = getpwnam(set->mail_user)) == NULL) {
		fprintf(stderr, "popbox: mail_user '%s' does not exist\n",
			set->mail_user);
		return EX_NOUSER;
	}
	if (pw->pw_uid == 0 || pw->pw_gid == 0) {
		fprintf(stderr, "popbox: mail_user may not be root\n");
		return EX_CONFIG;
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	if (setgroups(1, &gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0 ||
	    setuid(0) == 0 || geteuid() != uid || getegid() != gid) {
		fprintf(stderr, "popbox: cannot become mail_user '%s': %s\n",
			set->mail_user, strerror(errno));
		return EX_OSERR;
	}
	return EX_OK;
}

/* Marks and (unless a dry run) unlinks the listed messages that
   expire_days no longer keeps.  0, or -1 with *error_r. */
static int expire_listed(const struct expire_run *run, struct maildrop *md,
			 const struct user_policy *eff, struct expire_removed *r,
			 const char **error_r)
{
	struct maildrop_file_info *info;
	uint8_t *marked;
	size_t count, due = 0, removed;
	uint64_t bytes = 0;
	int ret = -1;

	(void)maildrop_list(md, &count);
	info = calloc(count + 1, sizeof(*info));
	marked = calloc(count + 1, 1);
	if (info == NULL || marked == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	if (maildrop_file_info(md, info, error_r) < 0)
		goto out;
	for (size_t i = 0; i < count; i++) {
		if (!info[i].present ||
		    !retention_due(RETENTION_MAILDROP, info[i].mtime, run->now,
				   eff))
			continue;
		marked[i] = 1;
		due++;
		bytes += info[i].size;
	}
	if (due > 0 && !run->dry_run &&
	    maildrop_commit(md, marked, &removed, error_r) < 0) {
		r->expired = removed; /* bytes unknown: not counted */
		goto out;
	}
	r->expired = due;
	r->expired_bytes = bytes;
	ret = 0;
out:
	free(info);
	free(marked);
	return ret;
}

/* Could the policy remove anything from this Maildir? */
static bool expire_may_remove(const char *path, const struct user_policy *eff)
{
	char kept[4096];
	struct stat st;

	if (eff->expire_days != USER_POLICY_NEVER)
		return true;
	/* Only .Kept: worth the lock only if the folder is there. */
	if ((size_t)snprintf(kept, sizeof(kept), "%s/%s", path,
			     RETENTION_KEPT_FOLDER) >= sizeof(kept))
		return true;
	return lstat(kept, &st) == 0 || errno != ENOENT;
}

static enum expire_outcome expire_maildir(const struct expire_run *run,
					  const char *path,
					  const struct user_policy *eff,
					  struct expire_removed *r,
					  const char **error_r)
{
	const struct maildrop_settings mset = { .login_delay = 0, .admin = true };
	struct maildrop_kept_counts kc;
	enum maildrop_status status;
	struct maildrop *md;
	struct stat st;
	int ret = 0;

	if (stat(path, &st) < 0) {
		int err = errno;

		*error_r = strerror(err);
		return err == ENOENT ? EXPIRE_NO_MAILDIR : EXPIRE_FAILED;
	}
	if (!expire_may_remove(path, eff))
		return EXPIRE_DONE;
	if (maildrop_open(path, &mset, &md, &status, error_r) < 0)
		return status == MAILDROP_IN_USE ? EXPIRE_IN_USE : EXPIRE_FAILED;
	if (eff->expire_days != USER_POLICY_NEVER)
		ret = expire_listed(run, md, eff, r, error_r);
	if (ret == 0) {
		ret = maildrop_expire_kept(md, run->now, eff->keep_days,
					   run->dry_run, &kc, error_r);
		r->kept = kc.messages;
		r->kept_bytes = kc.bytes;
	}
	maildrop_close(&md);
	return ret == 0 ? EXPIRE_DONE : EXPIRE_FAILED;
}

static void expire_report(struct expire_run *run, const char *user,
			  enum expire_outcome outcome,
			  const struct expire_removed *r, const char *error)
{
	size_t n = r->expired + r->kept;
	uint64_t bytes = r->expired_bytes + r->kept_bytes;

	run->accounts++;
	run->messages += n;
	run->bytes += bytes;
	if (n > 0)
		run->with_removals++;
	if (n > 0 || (run->verbose && outcome == EXPIRE_DONE))
		printf("%s: %zu messages, %" PRIu64 " bytes %s (%zu expired, "
		       "%zu kept)\n", user, n, bytes,
		       run->dry_run ? "would be removed" : "removed",
		       r->expired, r->kept);
	if (outcome == EXPIRE_NO_MAILDIR && run->verbose)
		printf("%s: no Maildir\n", user);
	if (outcome == EXPIRE_IN_USE) {
		run->skipped++;
		fprintf(stderr, "popbox: expire: %s: maildrop in use by a POP3 "
			"session, skipped\n", user);
	}
	if (outcome == EXPIRE_FAILED) {
		run->failed++;
		fprintf(stderr, "popbox: expire: %s: %s\n", user, error);
	}
}

static void expire_account(struct expire_run *run,
			   const struct passwd_file_entry *e)
{
	struct expire_removed r = { 0, 0, 0, 0 };
	enum expire_outcome outcome = EXPIRE_FAILED;
	const char *error = "?";
	struct user_policy eff;
	char *path = NULL;

	user_policy_resolve(&e->policy, run->set, &eff);
	if (e->policy.expire_days != USER_POLICY_UNSET &&
	    e->policy.expire_days != eff.expire_days)
		fprintf(stderr, "popbox expire: %s: its expire_days is ignored: "
			"the site's expire_days is never (docs/retention.md)\n",
			e->user);
	if (settings_user_maildir(run->set, e->user, e->home, e->mail, &path,
				  &error) == 0)
		outcome = expire_maildir(run, path, &eff, &r, &error);
	free(path);
	expire_report(run, e->user, outcome, &r, error);
}

static int popbox_expire(int argc, char **argv)
{
	const char *path = POPBOX_DEFAULT_CONFIG;
	struct expire_accounts accounts = { NULL, 0, 0 };
	struct expire_run run;
	struct popboxd_settings set;
	int opt, ret;

	memset(&run, 0, sizeof(run));
	while ((opt = getopt(argc, argv, "c:nv")) != -1) {
		if (opt == 'c')
			path = optarg;
		else if (opt == 'n')
			run.dry_run = true;
		else if (opt == 'v')
			run.verbose = true;
		else {
			fputs(popbox_usage, stderr);
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		fputs(popbox_usage, stderr);
		return EX_USAGE;
	}
	if (popbox_load_config(path, &set) != EX_OK)
		return EX_CONFIG;
	ret = expire_load_accounts(set.passdb_file, &accounts);
	if (ret == EX_OK)
		ret = expire_become_mail_user(&set);
	if (ret == EX_OK) {
		run.set = &set;
		run.now = (int64_t)time(NULL);
		for (size_t i = 0; i < accounts.count; i++)
			expire_account(&run, &accounts.e[i]);
		printf("expire: %zu accounts, %zu with removals: %zu messages, "
		       "%" PRIu64 " bytes %s; %zu skipped (in use), %zu failed\n",
		       run.accounts, run.with_removals, run.messages, run.bytes,
		       run.dry_run ? "would be removed (dry run)" : "removed",
		       run.skipped, run.failed);
		ret = run.failed > 0 ? 1 : EX_OK;
	}
	expire_accounts_free(&accounts);
	settings_free(&set);
	return ret;
}

int main(int argc, char **argv)
{
	int ret;

	if (argc < 2) {
		fputs(popbox_usage, stderr);
		return EX_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(popbox_usage, stdout);
		return EX_OK;
	}
	if (strcmp(argv[1], "passwd") == 0)
		ret = popbox_passwd(argc - 1, argv + 1);
	else if (strcmp(argv[1], "check-config") == 0)
		ret = popbox_check_config(argc - 1, argv + 1);
	else if (strcmp(argv[1], "expire") == 0)
		ret = popbox_expire(argc - 1, argv + 1);
	else {
		fprintf(stderr, "popbox: unknown command '%s'\n", argv[1]);
		fputs(popbox_usage, stderr);
		return EX_USAGE;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "popbox: write error on stdout\n");
		return EX_IOERR;
	}
	return ret;
}
