/*
 * popbox-fetch — the POP3 client: downloads mail into a Maildir, an mbox
 * or an MDA, deletes it on the server only once it is stored and recorded
 * (or keeps it there, for ever or N days), never twice (docs/fetch.md).
 *
 *   popbox-fetch [-c FILE] [-a ACCOUNT]... [-l] [-q|-v] [-j N]
 *   popbox-fetch pop3s://USER@HOST[:PORT] --to DIR [options]
 *
 * Runs as: the invoking user, never with more rights (no set-id bits, no
 * privilege changes).
 * Touches: the config file (read), each account's UIDL file and its .lock
 * (read, rewritten), the destinations (Maildir, mbox, an MDA command),
 * /dev/tty for a password prompt; runs password_command,
 * oauth_token_command and MDA commands from the config through /bin/sh.
 * Trusts: the config (the user's own); nothing from the server: every
 * reply is parsed strictly (fetch/pop3-client), certificates are verified
 * (fetch/net), server text is escaped before it is printed.
 *
 * Threads: the main thread reads the config, asks for passwords, starts
 * up to -j workers (one account each at a time, fetch/run.c), draws the
 * progress line and prints the summary; one more thread waits for SIGINT
 * and SIGTERM (blocked everywhere else) and stops every run.
 *
 * Exit codes: 0 every account ok; 1 some account failed permanently;
 * 75 (EX_TEMPFAIL) temporary failures only, or interrupted; 2 usage or
 * configuration error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "account.h"
#include "file-read.h"
#include "run.h"
#include "secret.h"
#include "strnum.h"

#define EXIT_PERM 1
#define EXIT_USAGE 2
#define EXIT_TEMP 75
/* -j: accounts at once. */
#define JOBS_DEFAULT 4
#define JOBS_MAX 64
/* The progress line is redrawn this often. */
#define PROGRESS_INTERVAL_MS 250

static const char usage_text[] =
	"usage: popbox-fetch [options] [-a ACCOUNT]...\n"
	"       popbox-fetch pop3s://USER@HOST[:PORT] --to DIR [options]\n"
	"\n"
	"Fetches mail from POP3 accounts (docs/fetch.md).\n"
	"  -c FILE        config file (default $XDG_CONFIG_HOME/popbox/"
	"fetch.conf,\n"
	"                 else ~/.config/popbox/fetch.conf)\n"
	"  -a NAME        only this account (repeatable; default: all)\n"
	"  -l, --list     show what would be fetched, change nothing\n"
	"  -q             quiet: only errors\n"
	"  -v             one line per message, and always the summary\n"
	"  --progress, --no-progress\n"
	"                 the status line (default: when stderr is a "
	"terminal)\n"
	"  -j N           accounts fetched at once (default 4)\n"
	"Quick form (pop3s:// is implicit TLS, pop3:// STLS):\n"
	"  --to DIR | --mbox FILE | --mda CMD   where the mail goes\n"
	"  --password-command CMD  --ca-file FILE  --fingerprint SHA256\n"
	"  --auth METHOD  --keep no|yes|DAYS  --uidl-file FILE\n"
	"  --tls implicit|stls|none\n"
	"Exit: 0 ok, 1 an account failed, 75 temporary failure, 2 usage.\n";

enum long_only {
	OPT_PROGRESS = 256,
	OPT_NO_PROGRESS,
	OPT_TO,
	OPT_MBOX,
	OPT_MDA,
	OPT_PASSWORD_COMMAND,
	OPT_CA_FILE,
	OPT_FINGERPRINT,
	OPT_AUTH,
	OPT_KEEP,
	OPT_UIDL_FILE,
	OPT_TLS,
};

static const struct option long_options[] = {
	{ "list", no_argument, NULL, 'l' },
	{ "help", no_argument, NULL, 'h' },
	{ "progress", no_argument, NULL, OPT_PROGRESS },
	{ "no-progress", no_argument, NULL, OPT_NO_PROGRESS },
	{ "to", required_argument, NULL, OPT_TO },
	{ "mbox", required_argument, NULL, OPT_MBOX },
	{ "mda", required_argument, NULL, OPT_MDA },
	{ "password-command", required_argument, NULL, OPT_PASSWORD_COMMAND },
	{ "ca-file", required_argument, NULL, OPT_CA_FILE },
	{ "fingerprint", required_argument, NULL, OPT_FINGERPRINT },
	{ "auth", required_argument, NULL, OPT_AUTH },
	{ "keep", required_argument, NULL, OPT_KEEP },
	{ "uidl-file", required_argument, NULL, OPT_UIDL_FILE },
	{ "tls", required_argument, NULL, OPT_TLS },
	{ NULL, 0, NULL, 0 },
};

/* The quick form's options, as given. */
struct quick_options {
	const char *to, *mbox, *mda, *password_command, *ca_file;
	const char *fingerprint, *auth, *keep, *uidl_file, *tls;
};

struct args {
	const char *config;
	const char **names;       /* -a */
	size_t name_count;
	bool list, quiet, verbose;
	int progress;             /* -1 default, 0 off, 1 on */
	unsigned int jobs;
	const char *url;
	struct quick_options quick;
	bool any_quick;
};

/* One account's place in this run. */
struct job {
	struct account *account;
	char *password;           /* prompted; NULL otherwise */
	char *uidl_file;
	struct run_options opt;
	struct run_progress progress;
	struct run_result result;
	int64_t started_ms;       /* when the progress line first saw it */
};

struct state {
	struct args args;
	struct account_list list;     /* the config's, or the quick one */
	struct job *jobs;
	size_t job_count;
	atomic_size_t next_job;
	atomic_size_t jobs_done;
	bool show_progress;
	bool progress_drawn;          /* a status line is on the screen */
	pthread_mutex_t out_lock;
	pthread_mutex_t done_lock;
	pthread_cond_t done_cond;
	struct run_output output;
};

static void usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
	va_list args;

	fputs("popbox-fetch: ", stderr);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputs("\n(popbox-fetch --help for the options)\n", stderr);
	exit(EXIT_USAGE);
}

static void config_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void config_error(const char *fmt, ...)
{
	va_list args;

	fputs("popbox-fetch: ", stderr);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
	exit(EXIT_USAGE);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- arguments ------------------------------------------------------- */

static void add_name(struct args *a, const char *name)
{
	const char **names = realloc(a->names,
				     (a->name_count + 1) * sizeof(*names));

	if (names == NULL)
		config_error("out of memory");
	names[a->name_count++] = name;
	a->names = names;
}

static unsigned int parse_jobs(const char *s)
{
	uint64_t n;

	if (strnum_parse_u64(s, strlen(s), JOBS_MAX, &n) < 0 || n == 0)
		usage_error("-j: a number from 1 to %d", JOBS_MAX);
	return (unsigned int)n;
}

/* A quick-form option: stored, and noted. */
static bool quick_option(struct args *a, int c, const char *arg)
{
	const char **slot;

	switch (c) {
	case OPT_TO: slot = &a->quick.to; break;
	case OPT_MBOX: slot = &a->quick.mbox; break;
	case OPT_MDA: slot = &a->quick.mda; break;
	case OPT_PASSWORD_COMMAND: slot = &a->quick.password_command; break;
	case OPT_CA_FILE: slot = &a->quick.ca_file; break;
	case OPT_FINGERPRINT: slot = &a->quick.fingerprint; break;
	case OPT_AUTH: slot = &a->quick.auth; break;
	case OPT_KEEP: slot = &a->quick.keep; break;
	case OPT_UIDL_FILE: slot = &a->quick.uidl_file; break;
	case OPT_TLS: slot = &a->quick.tls; break;
	default: return false;
	}
	*slot = arg;
	a->any_quick = true;
	return true;
}

static void parse_args(int argc, char **argv, struct args *a)
{
	int c;

	memset(a, 0, sizeof(*a));
	a->progress = -1;
	a->jobs = JOBS_DEFAULT;
	while ((c = getopt_long(argc, argv, "c:a:lqvj:h", long_options,
				NULL)) != -1) {
		switch (c) {
		case 'c': a->config = optarg; break;
		case 'a': add_name(a, optarg); break;
		case 'l': a->list = true; break;
		case 'q': a->quiet = true; break;
		case 'v': a->verbose = true; break;
		case 'j': a->jobs = parse_jobs(optarg); break;
		case OPT_PROGRESS: a->progress = 1; break;
		case OPT_NO_PROGRESS: a->progress = 0; break;
		case 'h':
			fputs(usage_text, stdout);
			exit(0);
		default:
			if (!quick_option(a, c, optarg)) {
				/* getopt said which. */
				fputs("(popbox-fetch --help for the options)\n",
				      stderr);
				exit(EXIT_USAGE);
			}
		}
	}
	if (optind < argc)
		a->url = argv[optind++];
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (a->quiet && a->verbose)
		usage_error("-q and -v together");
	if (a->url != NULL && (a->config != NULL || a->name_count > 0))
		usage_error("a URL and -c or -a together");
	if (a->url == NULL && a->any_quick)
		usage_error("--to, --mbox, --mda, --password-command, "
			    "--ca-file, --fingerprint, --auth, --keep, "
			    "--uidl-file and --tls go with a URL");
}

/* ---- the quick form -------------------------------------------------- */

static void quick_deliver(const struct quick_options *q, struct account *a)
{
	int given = (q->to != NULL) + (q->mbox != NULL) + (q->mda != NULL);
	const char *spec = q->to != NULL ? "maildir:" :
			   q->mbox != NULL ? "mbox:" : "mda:";
	const char *target = q->to != NULL ? q->to :
			     q->mbox != NULL ? q->mbox : q->mda;
	const char *error;
	char *value;

	if (given != 1)
		usage_error("give one of --to DIR, --mbox FILE, --mda CMD");
	if (asprintf(&value, "%s%s", spec, target) < 0)
		config_error("out of memory");
	int ret = account_parse_deliver(value, &a->deliver_kind,
					&a->deliver_target, &error);
	free(value);
	if (ret < 0)
		usage_error("%s", error);
}

static char *dup_or_die(const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		config_error("out of memory");
	return d;
}

static void quick_connection(const struct quick_options *q,
			     struct account *a)
{
	if (q->tls != NULL && account_parse_tls(q->tls, &a->tls) < 0)
		usage_error("--tls: implicit, stls or none");
	if (q->auth != NULL &&
	    sasl_client_method_from_name(q->auth, &a->auth) < 0)
		usage_error("--auth: auto, scram-sha-256, apop, plain, login, "
			    "user (the OAuth methods need a config file)");
	if (a->auth == SASL_CLIENT_XOAUTH2 || a->auth == SASL_CLIENT_OAUTHBEARER)
		usage_error("--auth %s needs oauth_token_command: use a config "
			    "file", q->auth);
	if (q->ca_file != NULL)
		a->ca_file = dup_or_die(q->ca_file);
	if (q->fingerprint != NULL) {
		if (net_fingerprint_parse(q->fingerprint, a->fingerprint) < 0)
			usage_error("--fingerprint: 64 hex digits, with or "
				    "without colons");
		a->has_fingerprint = true;
	}
	if (q->password_command != NULL)
		a->password_command = dup_or_die(q->password_command);
	if (q->uidl_file != NULL)
		a->uidl_file = dup_or_die(q->uidl_file);
}

static void quick_account(struct args *args, struct account_list *list)
{
	const struct quick_options *q = &args->quick;
	struct account *a = calloc(1, sizeof(*a));
	const char *error;

	if (a == NULL)
		config_error("out of memory");
	/* In list before anything can fail: an exit leaves nothing
	   unreachable (LeakSanitizer would change the exit code). */
	list->accounts = a;
	list->count = 1;
	if (account_from_url(args->url, a, &error) < 0)
		usage_error("%s", error);
	quick_connection(q, a);
	if (q->keep != NULL &&
	    account_parse_keep(q->keep, &a->keep, &a->keep_days) < 0)
		usage_error("--keep: no, yes or a number of days");
	quick_deliver(q, a);
	if (account_set_quick_name(a) < 0)
		config_error("out of memory");
}

/* ---- the config file ------------------------------------------------- */

static char *default_config_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char *path = NULL;

	if (xdg != NULL && xdg[0] == '/') {
		if (asprintf(&path, "%s/popbox/fetch.conf", xdg) < 0)
			path = NULL;
	} else if (home != NULL && home[0] == '/') {
		if (asprintf(&path, "%s/.config/popbox/fetch.conf", home) < 0)
			path = NULL;
	} else {
		config_error("no config file: give -c FILE (HOME is not set)");
	}
	if (path == NULL)
		config_error("out of memory");
	return path;
}

/* The config's path, kept for error messages (and reachable at exit). */
static char *config_path;

static void load_config(const struct args *args, struct account_list *list)
{
	const char *error;
	unsigned int line;
	struct stat st;
	char *text;
	size_t len;
	int ret;

	config_path = args->config != NULL ? dup_or_die(args->config) :
		      default_config_path();
	if (file_read_all(AT_FDCWD, config_path, 0, ACCOUNT_FILE_MAX, &text,
			  &len, &st, &error) < 0)
		config_error("%s: %s", config_path, errno == ENOENT ?
			     "no such file (see docs/fetch.md)" : error);
	ret = account_parse_config(text, len, list, &line, &error);
	explicit_bzero(text, len);
	free(text);
	if (ret < 0 && line > 0)
		config_error("%s:%u: %s", config_path, line, error);
	if (ret < 0)
		config_error("%s: %s", config_path, error);
	if (list->count == 0)
		config_error("%s: no [account NAME] section", config_path);
	for (size_t i = 0; i < list->count; i++) {
		if (!args->quiet && list->accounts[i].password != NULL &&
		    (st.st_mode & 077) != 0) {
			fprintf(stderr, "popbox-fetch: warning: %s holds a "
				"password and others may read it (chmod 600 "
				"it)\n", config_path);
			break;
		}
	}
}

/* ---- jobs ------------------------------------------------------------ */

static bool needs_password(const struct account *a)
{
	return a->auth != SASL_CLIENT_XOAUTH2 &&
	       a->auth != SASL_CLIENT_OAUTHBEARER && a->password == NULL &&
	       a->password_command == NULL;
}

static void ask_password(struct job *j)
{
	const struct account *a = j->account;
	const char *error;
	bool interrupted;
	char prompt[512];

	if (!secret_can_prompt())
		config_error("account %s: no password, no password_command, "
			     "and no terminal to ask on", a->name);
	snprintf(prompt, sizeof(prompt), "Password for %s@%s (%s): ", a->user,
		 a->host, a->name);
	if (secret_prompt(prompt, &j->password, &interrupted, &error) < 0) {
		if (interrupted)
			exit(EXIT_TEMP);
		config_error("account %s: %s", a->name, error);
	}
}

static int64_t fetch_now(void)
{
	const char *s = getenv("POPBOX_FETCH_NOW");
	uint64_t v;

	if (s == NULL || s[0] == '\0')
		return (int64_t)time(NULL);
	if (strnum_parse_u64(s, strlen(s), (uint64_t)UIDL_DB_TIME_MAX, &v) < 0)
		config_error("POPBOX_FETCH_NOW: seconds since the epoch");
	return (int64_t)v;
}

static void prepare_job(struct state *st, struct job *j, struct account *a,
			int64_t now)
{
	const char *home = getenv("HOME");

	j->account = a;
	if (account_expand_home(a, home) < 0)
		config_error("account %s: a path starts with ~/ and HOME is "
			     "not set", a->name);
	j->uidl_file = a->uidl_file != NULL ? dup_or_die(a->uidl_file) :
		       account_default_uidl_file(a->name,
						 getenv("XDG_STATE_HOME"),
						 home);
	if (j->uidl_file == NULL)
		config_error("account %s: no uidl_file and HOME is not set",
			     a->name);
	if (needs_password(a))
		ask_password(j);
	j->opt.list = st->args.list;
	j->opt.verbose = st->args.verbose;
	j->opt.now = now;
	j->opt.password = a->password != NULL ? a->password : j->password;
	j->opt.uidl_file = j->uidl_file;
}

static void select_jobs(struct state *st)
{
	const struct args *args = &st->args;
	size_t n = args->name_count > 0 ? args->name_count : st->list.count;
	int64_t now = fetch_now();

	st->jobs = calloc(n, sizeof(*st->jobs));
	if (st->jobs == NULL)
		config_error("out of memory");
	for (size_t i = 0; i < n; i++) {
		struct account *a = &st->list.accounts[i];

		if (args->name_count > 0) {
			a = account_find(&st->list, args->names[i]);
			if (a == NULL)
				config_error("no account called '%s'",
					     args->names[i]);
			for (size_t k = 0; k < i; k++) {
				if (st->jobs[k].account == a)
					config_error("-a %s given twice",
						     a->name);
			}
		}
		prepare_job(st, &st->jobs[i], a, now);
	}
	st->job_count = n;
}

/* ---- output ---------------------------------------------------------- */

/* Under out_lock: removes the status line before other output. */
static void clear_progress(struct state *st)
{
	if (st->progress_drawn) {
		fputs("\r\033[K", stderr);
		st->progress_drawn = false;
	}
}

static void on_line(void *ctx, enum run_line kind, const char *account,
		    const char *text)
{
	struct state *st = ctx;
	FILE *f = kind == RUN_LINE_ERROR || kind == RUN_LINE_WARN ? stderr :
		  stdout;

	if (st->args.quiet && (kind == RUN_LINE_WARN || kind == RUN_LINE_INFO))
		return;
	pthread_mutex_lock(&st->out_lock);
	clear_progress(st);
	fprintf(f, "%s: %s%s\n", account,
		kind == RUN_LINE_WARN ? "warning: " : "", text);
	fflush(f);
	pthread_mutex_unlock(&st->out_lock);
}

/* "1.2 MB" style, into buf. */
static const char *human_bytes(char *buf, size_t size, double bytes)
{
	static const char *const units[] = { "B", "kB", "MB", "GB", "TB" };
	size_t u = 0;

	while (bytes >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
		bytes /= 1000;
		u++;
	}
	snprintf(buf, size, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
	return buf;
}

static size_t terminal_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10)
		return ws.ws_col;
	return 80;
}

/* One account's part of the status line. */
static size_t progress_part(struct job *j, int64_t now, char *buf,
			    size_t size)
{
	struct run_progress *p = &j->progress;
	uint64_t bytes = atomic_load(&p->bytes);
	double secs;
	char b[32], rate[32];
	int n;

	if (j->started_ms == 0)
		j->started_ms = now;
	secs = (double)(now - j->started_ms) / 1000.0;
	human_bytes(b, sizeof(b), (double)bytes);
	human_bytes(rate, sizeof(rate), secs > 0.2 ? (double)bytes / secs : 0);
	n = snprintf(buf, size, "%s: %" PRIuFAST64 "/%" PRIuFAST64
		     " messages, %s, %s/s", j->account->name,
		     atomic_load(&p->done), atomic_load(&p->total), b, rate);
	return n < 0 ? 0 : (size_t)n >= size ? size - 1 : (size_t)n;
}

static void draw_progress(struct state *st)
{
	char line[1024], part[256];
	size_t len = 0, width = terminal_width();
	int64_t now = now_ms();

	line[0] = '\0';
	for (size_t i = 0; i < st->job_count; i++) {
		struct job *j = &st->jobs[i];

		if (!atomic_load(&j->progress.started) ||
		    atomic_load(&j->progress.finished))
			continue;
		size_t n = progress_part(j, now, part, sizeof(part));
		if (len + n + 3 >= sizeof(line))
			break;
		len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s",
					len > 0 ? "; " : "", part);
	}
	if (len >= width)
		len = width - 1;
	line[len] = '\0';
	pthread_mutex_lock(&st->out_lock);
	if (len > 0) {
		fprintf(stderr, "\r%s\033[K", line);
		fflush(stderr);
		st->progress_drawn = true;
	} else {
		clear_progress(st);
	}
	pthread_mutex_unlock(&st->out_lock);
}

static bool failed(const struct run_result *r)
{
	return r->status != RUN_OK || r->errors > 0;
}

static void print_summaries(struct state *st)
{
	bool any_failed = false, show;

	for (size_t i = 0; i < st->job_count; i++)
		any_failed = any_failed || failed(&st->jobs[i].result);
	show = st->args.verbose ||
	       (!st->args.quiet && !st->args.list &&
		(isatty(STDOUT_FILENO) || any_failed));
	if (!show)
		return;
	for (size_t i = 0; i < st->job_count; i++) {
		const struct run_result *r = &st->jobs[i].result;

		printf("%s: fetched %" PRIu64 " (%" PRIu64 " bytes), deleted %"
		       PRIu64 ", kept %" PRIu64 ", skipped %" PRIu64,
		       st->jobs[i].account->name, r->fetched, r->fetched_bytes,
		       r->deleted, r->kept, r->skipped);
		if (r->errors > 0)
			printf(", errors %" PRIu64, r->errors);
		putchar('\n');
	}
	fflush(stdout);
}

static int exit_code(const struct state *st)
{
	bool perm = false, temp = false;

	for (size_t i = 0; i < st->job_count; i++) {
		switch (st->jobs[i].result.status) {
		case RUN_INTERRUPTED:
			return EXIT_TEMP;
		case RUN_PERMFAIL:
			perm = true;
			break;
		case RUN_TEMPFAIL:
			temp = true;
			break;
		case RUN_OK:
			break;
		}
	}
	return perm ? EXIT_PERM : temp ? EXIT_TEMP : 0;
}

/* ---- threads --------------------------------------------------------- */

static void *worker(void *arg)
{
	struct state *st = arg;

	for (;;) {
		size_t i = atomic_fetch_add(&st->next_job, 1);

		if (i >= st->job_count)
			return NULL;
		struct job *j = &st->jobs[i];
		run_account(j->account, &j->opt, &st->output, &j->progress,
			    &j->result);
		pthread_mutex_lock(&st->done_lock);
		atomic_fetch_add(&st->jobs_done, 1);
		pthread_cond_signal(&st->done_cond);
		pthread_mutex_unlock(&st->done_lock);
	}
}

/* Waits for SIGINT and SIGTERM (blocked in every thread): the first stops
   the runs, a second one ends the program at once. */
static void *signal_waiter(void *arg)
{
	sigset_t *set = arg;
	int sig, count = 0;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (++count > 1)
			_exit(EXIT_TEMP);
		run_request_stop();
	}
	return NULL;
}

static void start_signals(sigset_t *set)
{
	pthread_t t;

	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	if (pthread_create(&t, NULL, signal_waiter, set) != 0)
		config_error("cannot start a thread");
	pthread_detach(t);
}

/* Runs the jobs on up to -j threads; returns when all are done. */
static void run_jobs(struct state *st)
{
	size_t n = st->job_count < st->args.jobs ? st->job_count :
		   st->args.jobs;
	pthread_t threads[JOBS_MAX];
	size_t started = 0;

	for (; started < n; started++) {
		if (pthread_create(&threads[started], NULL, worker, st) != 0)
			break;
	}
	if (started == 0)
		worker(st);
	pthread_mutex_lock(&st->done_lock);
	while (atomic_load(&st->jobs_done) < st->job_count) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += PROGRESS_INTERVAL_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&st->done_cond, &st->done_lock, &until);
		if (st->show_progress) {
			pthread_mutex_unlock(&st->done_lock);
			draw_progress(st);
			pthread_mutex_lock(&st->done_lock);
		}
	}
	pthread_mutex_unlock(&st->done_lock);
	for (size_t i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	pthread_mutex_lock(&st->out_lock);
	clear_progress(st);
	pthread_mutex_unlock(&st->out_lock);
}

static void free_state(struct state *st)
{
	for (size_t i = 0; i < st->job_count; i++) {
		secret_free(&st->jobs[i].password);
		free(st->jobs[i].uidl_file);
	}
	free(st->jobs);
	account_list_free(&st->list);
	free(config_path);
	free(st->args.names);
}

int main(int argc, char **argv)
{
	static struct state st;
	sigset_t set;
	int code;

	parse_args(argc, argv, &st.args);
	if (st.args.url != NULL)
		quick_account(&st.args, &st.list);
	else
		load_config(&st.args, &st.list);
	select_jobs(&st);
	st.show_progress = st.args.progress == 1 ||
			   (st.args.progress == -1 && !st.args.quiet &&
			    !st.args.list && isatty(STDERR_FILENO));
	pthread_mutex_init(&st.out_lock, NULL);
	pthread_mutex_init(&st.done_lock, NULL);
	pthread_cond_init(&st.done_cond, NULL);
	st.output.line = on_line;
	st.output.ctx = &st;
	start_signals(&set);
	run_jobs(&st);
	print_summaries(&st);
	code = exit_code(&st);
	free_state(&st);
	return code;
}
