/*
 * popbox-deliver — the local delivery agent: one message on stdin into a
 * user's Maildir, for an MTA (Postfix pipe(8) or local(8)'s
 * mailbox_command; docs/delivery.md).
 *
 *   popbox-deliver [-c FILE] [-f SENDER] [-a ADDRESS] [-n] USER
 *
 * Runs as: mail_user, who owns every Maildir.  Started as root, it becomes
 * mail_user (initgroups, setgid, setuid, checked) before it reads anything
 * but the config file.
 * Touches: the config file, the user's Maildir (deliver.h: tmp/, new/),
 * and passdb_file if it may read it, else popboxd's userdb_socket.
 * Trusts: the config and the passwd-file (the admin's); the auth process's
 * reply is checked all the same (userdb-lookup.h); the message is data.
 * Links: libc alone.  It starts once per message, and OpenSSL's start-up
 * would double what a delivery costs, so nothing it uses may pull in
 * password, SASL or TLS code (`readelf -d` shows no libcrypto).
 *
 * The message: a first line starting "From " (the mbox envelope line that
 * local(8) and pipe(8) with flag F put first) is dropped; everything else
 * is stored as it comes, CRLF turned into LF.  Return-Path: <SENDER> (-f;
 * "" or "<>" is the null sender) and Delivered-To: ADDRESS (-a, default
 * USER) are added on top; -n adds neither (the MTA already did).
 *
 * Exit codes (sysexits.h, as MTAs read them).  A failure prints one line
 * on stderr that starts with an RFC 3463 status code, which Postfix takes
 * over the exit code; 0 means stored durably (file fsynced, renamed into
 * new/, new/ fsynced), never less.
 *   EX_USAGE     64  bad arguments
 *   EX_DATAERR   65  larger than message_size_limit (5.3.4) or than the
 *                    whole quota (5.2.3): retrying cannot help
 *   EX_NOUSER    67  no such user (5.1.1)
 *   EX_CANTCREAT 73  the Maildir cannot be made or used (5.2.0)
 *   EX_TEMPFAIL  75  over quota (4.2.2), full disk, I/O error, auth
 *                    process not reachable, any transient fault (4.3.0);
 *                    the config does not load, no such mail_user, no
 *                    Maildir path from mail_location (4.3.5): the admin's
 *                    to fix, and meanwhile the MTA keeps the mail (also an
 *                    MTA that goes by the exit code alone, such as Exim's
 *                    pipe transport, which would bounce on EX_CONFIG)
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "deliver.h"
#include "log.h"
#include "passdb-user.h"
#include "settings.h"
#include "user-policy.h"
#include "userdb-lookup.h"
#include "username.h"

#define PD_DEFAULT_CONFIG "/etc/popbox/popboxd.conf"
#define PD_READ_SIZE (64 * 1024)
/* The mbox "From " line is short; RFC 5322 2.1.1 bounds any line at 998
   octets plus CRLF.  A longer one is not an envelope line. */
#define PD_FROM_LINE_MAX 1000

static const char pd_usage[] =
	"usage: popbox-deliver [-c FILE] [-f SENDER] [-a ADDRESS] [-n] USER\n"
	"\n"
	"Stores the message on stdin in USER's Maildir.\n"
	"  -c FILE     popboxd's config (default " PD_DEFAULT_CONFIG ")\n"
	"  -f SENDER   envelope sender, for Return-Path (\"\" or \"<>\": null)\n"
	"  -a ADDRESS  recipient address, for Delivered-To (default USER)\n"
	"  -n          add no Return-Path or Delivered-To (the MTA did)\n";

/* Records also go to syslog (log = syslog): stderr is for the MTA. */
static bool pd_syslog;

struct pd_args {
	const char *config;
	const char *sender;       /* NULL: no -f */
	const char *address;      /* NULL: no -a */
	bool no_headers;
	const char *user;
};

/* Prints the one status line: "<code> popbox-deliver: <text>". */
static int pd_fail(int ex, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int pd_fail(int ex, const char *code, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s popbox-deliver: %s\n", code, text);
	if (pd_syslog)
		log_error("event=deliver-failed status=%s error=\"%s\"", code,
			  text);
	return ex;
}

static int pd_parse_args(int argc, char **argv, struct pd_args *a)
{
	int opt;

	memset(a, 0, sizeof(*a));
	a->config = PD_DEFAULT_CONFIG;
	while ((opt = getopt(argc, argv, "c:f:a:n")) != -1) {
		switch (opt) {
		case 'c': a->config = optarg; break;
		case 'f': a->sender = optarg; break;
		case 'a': a->address = optarg; break;
		case 'n': a->no_headers = true; break;
		default: return -1;
		}
	}
	if (optind != argc - 1)
		return -1;
	a->user = argv[optind];
	return 0;
}

/* ---- privileges and the user ------------------------------------------- */

/* Root becomes mail_user; anyone else stays who they are. */
static int pd_drop_privileges(const struct popboxd_settings *set)
{
	struct passwd *pw;

	if (geteuid() != 0)
		return EX_OK;
	pw = getpwnam(set->mail_user);
	if (pw == NULL)
		return pd_fail(EX_TEMPFAIL, "4.3.5", "mail_user '%s' does not exist",
			       set->mail_user);
	if (pw->pw_uid == 0 || pw->pw_gid == 0)
		return pd_fail(EX_TEMPFAIL, "4.3.5", "mail_user may not be root");
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	if (initgroups(pw->pw_name, gid) < 0 || setgid(gid) < 0 ||
	    setuid(uid) < 0)
		return pd_fail(EX_TEMPFAIL, "4.3.0",
			       "cannot become mail_user: %s", strerror(errno));
	if (setuid(0) == 0 || getuid() != uid || geteuid() != uid ||
	    getgid() != gid || getegid() != gid)
		return pd_fail(EX_TEMPFAIL, "4.3.0",
			       "privileges were not dropped");
	return EX_OK;
}

/* The user's record: from the passwd-file if readable (popboxd not run as
   root, or a single-user set-up), else from the auth process over
   userdb_socket.  Either way nothing is verified and no hash is run. */
static int pd_lookup(const struct popboxd_settings *set, const char *user,
		     struct passdb_user *user_r)
{
	const char *error = "lookup failed";
	enum passdb_result r;
	int fd;

	if (!username_valid(user, strlen(user)))
		return pd_fail(EX_NOUSER, "5.1.1", "no such user");
	fd = open(set->passdb_file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0) {
		close(fd);
		r = userdb_lookup_file(set->passdb_file, user, user_r, &error);
	} else {
		r = userdb_lookup_socket(set->userdb_socket, user,
					 USERDB_TIMEOUT_MS, user_r, &error);
	}
	if (r == PASSDB_FAIL)
		return pd_fail(EX_NOUSER, "5.1.1", "%s: no such user", user);
	if (r != PASSDB_OK)
		return pd_fail(EX_TEMPFAIL, "4.3.0", "user lookup: %s", error);
	return EX_OK;
}

/* ---- the message -------------------------------------------------------- */

/* Reads into buf[*len..size) until it holds min bytes or input ends. */
static int pd_read_some(uint8_t *buf, size_t size, size_t *len, size_t min,
			bool *eof_r)
{
	*eof_r = false;
	while (*len < min && *len < size) {
		ssize_t n = read(STDIN_FILENO, buf + *len, size - *len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			*eof_r = true;
			break;
		}
		*len += (size_t)n;
	}
	return 0;
}

/*
 * The first bytes of the message into buf[0..*len), without a leading
 * "From " line.  *start_r is where the message begins.  Returns EX_OK or
 * an exit code.
 */
static int pd_read_first(uint8_t *buf, size_t size, size_t *len,
			 size_t *start_r, bool *eof_r)
{
	uint8_t *lf;

	*len = 0;
	*start_r = 0;
	if (pd_read_some(buf, size, len, 5, eof_r) < 0)
		return pd_fail(EX_TEMPFAIL, "4.3.0", "read: %s", strerror(errno));
	if (*len < 5 || memcmp(buf, "From ", 5) != 0)
		return EX_OK;
	while ((lf = memchr(buf, '\n', *len)) == NULL) {
		if (*eof_r || *len > PD_FROM_LINE_MAX)
			break;
		if (pd_read_some(buf, size, len, *len + 1, eof_r) < 0)
			return pd_fail(EX_TEMPFAIL, "4.3.0", "read: %s",
				       strerror(errno));
	}
	/* The limit holds however much the reads brought in at once. */
	if (lf == NULL || (size_t)(lf - buf) > PD_FROM_LINE_MAX)
		return pd_fail(EX_DATAERR, "5.6.0", "the first line starts "
			       "with \"From \" but does not end within %d bytes",
			       PD_FROM_LINE_MAX);
	*start_r = (size_t)(lf - buf) + 1;
	return EX_OK;
}

static int pd_status_exit(enum deliver_status status, const char *user,
			  const char *error)
{
	switch (status) {
	case DELIVER_OK:
		return EX_OK;
	case DELIVER_OVER_QUOTA:
		return pd_fail(EX_TEMPFAIL, "4.2.2", "%s: %s", user, error);
	case DELIVER_TOO_BIG:
		return pd_fail(EX_DATAERR, strstr(error, "quota") != NULL ?
				       "5.2.3" : "5.3.4", "%s: %s", user, error);
	case DELIVER_PERMFAIL:
		return pd_fail(EX_CANTCREAT, "5.2.0", "%s: %s", user, error);
	case DELIVER_TEMPFAIL:
	default:
		return pd_fail(EX_TEMPFAIL, "4.3.0", "%s: %s", user, error);
	}
}

/* Copies stdin (after the first bytes in buf) into d until it ends. */
static int pd_copy(struct deliver *d, uint8_t *buf, size_t len, size_t start,
		   bool eof, const char *user)
{
	enum deliver_status status;
	const char *error;

	if (len > start &&
	    deliver_write(d, buf + start, len - start, &status, &error) < 0)
		return pd_status_exit(status, user, error);
	while (!eof) {
		ssize_t n = read(STDIN_FILENO, buf, PD_READ_SIZE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return pd_fail(EX_TEMPFAIL, "4.3.0", "read: %s",
				       strerror(errno));
		if (n == 0)
			break;
		if (deliver_write(d, buf, (size_t)n, &status, &error) < 0)
			return pd_status_exit(status, user, error);
	}
	return EX_OK;
}

static int pd_deliver(const struct popboxd_settings *set, const char *path,
		      const struct deliver_envelope *env,
		      const struct user_policy *policy, const char *user)
{
	enum deliver_status status;
	const char *error;
	struct deliver *d = NULL;
	uint8_t *buf = malloc(PD_READ_SIZE);
	size_t len, start;
	char *name = NULL;
	bool eof;
	int ex;

	if (buf == NULL)
		return pd_fail(EX_TEMPFAIL, "4.3.0", "out of memory");
	ex = pd_read_first(buf, PD_READ_SIZE, &len, &start, &eof);
	if (ex == EX_OK &&
	    deliver_begin(path, env, policy, 0, set->message_size_limit, &d,
			  &status, &error) < 0)
		ex = pd_status_exit(status, user, error);
	if (ex == EX_OK)
		ex = pd_copy(d, buf, len, start, eof, user);
	if (ex == EX_OK) {
		if (deliver_commit(&d, &name, &status, &error) < 0)
			ex = pd_status_exit(status, user, error);
		else
			log_info("event=delivered user=%s file=%s", user,
				 name != NULL ? name : "?");
	}
	deliver_abort(&d);
	free(name);
	free(buf);
	return ex;
}

/* ---- main --------------------------------------------------------------- */

static int pd_run(const struct pd_args *a, struct popboxd_settings *set)
{
	struct passdb_user user;
	struct user_policy policy;
	const char *error;
	char *path = NULL;
	int ex;

	memset(&user, 0, sizeof(user));
	if ((ex = pd_drop_privileges(set)) != EX_OK ||
	    (ex = pd_lookup(set, a->user, &user)) != EX_OK)
		return ex;
	if (settings_user_maildir(set, user.name, user.home, user.mail, &path,
				  &error) < 0) {
		ex = strcmp(error, "out of memory") == 0 ?
		     pd_fail(EX_TEMPFAIL, "4.3.0", "out of memory") :
		     pd_fail(EX_TEMPFAIL, "4.3.5", "%s: Maildir: %s", user.name,
			     error);
		passdb_user_clear(&user);
		return ex;
	}
	user_policy_resolve(&user.policy, set, &policy);
	struct deliver_envelope env = {
		.return_path = a->no_headers ? NULL : a->sender,
		.delivered_to = a->no_headers ? NULL :
				a->address != NULL ? a->address : a->user,
	};
	ex = pd_deliver(set, path, &env, &policy, user.name);
	free(path);
	passdb_user_clear(&user);
	return ex;
}

int main(int argc, char **argv)
{
	struct popboxd_settings set;
	struct pd_args a;
	const char *error;
	int ex;

	signal(SIGPIPE, SIG_IGN);
	if (pd_parse_args(argc, argv, &a) < 0) {
		fputs(pd_usage, stderr);
		return EX_USAGE;
	}
	settings_init(&set);
	if (settings_load(&set, a.config, &error) < 0) {
		ex = pd_fail(EX_TEMPFAIL, "4.3.5", "%s: %s", a.config, error);
		settings_free(&set);
		return ex;
	}
	/* On stderr (what the MTA shows the sender) only errors, so the
	   status line comes first; with syslog, a line per delivery. */
	pd_syslog = set.log_syslog;
	log_init("popbox-deliver", set.log_syslog);
	if (!set.log_syslog)
		log_set_level(LOG_LEVEL_ERROR);
	struct deliver_envelope env = { a.sender, a.address };
	if (!deliver_envelope_valid(&env)) {
		ex = pd_fail(EX_USAGE, "5.5.4", "-f or -a: address too long or "
			     "with control characters");
	} else {
		ex = pd_run(&a, &set);
	}
	settings_free(&set);
	return ex;
}
