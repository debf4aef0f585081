/*
 * popboxd — the POP3 server.
 *
 * Runs as: started as root, it binds its ports, opens the passwd-file and
 * then drops for good to mail_user (setgroups, setgid, setuid, all checked)
 * before it reads a byte from the network.  Started as another user, it
 * stays that user.
 * Reads the TLS key file once, before dropping privileges.
 * Touches: the Maildirs named by the passwd-file or mail_location (read,
 * unlink at UPDATE, a lock file and a cache file in each), the passwd-file
 * (read), stderr or syslog.
 * Trusts: its config file and the passwd-file (admin-owned); nothing from
 * the network; nothing in a Maildir (names, sizes, cache are all checked).
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"
#include "passdb.h"
#include "server.h"
#include "settings.h"
#include "tls.h"

#define POPBOXD_DEFAULT_CONFIG "/etc/popbox/popboxd.conf"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: popboxd [-c FILE] [-t] [-d]\n"
		"  -c FILE  configuration file (default " POPBOXD_DEFAULT_CONFIG ")\n"
		"  -t       check the configuration, print the effective settings, exit\n"
		"  -d       log debug records too\n"
		"popboxd runs in the foreground and logs to stderr or syslog.\n");
}

/* The one place privileges change. */
static void drop_privileges(const char *user_name)
{
	if (geteuid() != 0)
		return;
	struct passwd *pw = getpwnam(user_name);
	if (pw == NULL)
		fatal("event=startup error=\"mail_user '%s' does not exist\"",
		      user_name);
	if (pw->pw_uid == 0)
		fatal("event=startup error=\"mail_user may not be root\"");
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0)
		fatal("event=startup error=\"cannot drop privileges: %s\"",
		      strerror(errno));
	if (setuid(0) == 0 || getuid() != pw->pw_uid || geteuid() != pw->pw_uid ||
	    getgid() != pw->pw_gid || getegid() != pw->pw_gid)
		fatal("event=startup error=\"privileges were not dropped\"");
	/* setuid clears dumpability; keep it cleared. */
	prctl(PR_SET_DUMPABLE, 0);
	log_info("event=privileges-dropped user=%s uid=%u gid=%u", user_name,
		 (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
}

int main(int argc, char **argv)
{
	const char *config = POPBOXD_DEFAULT_CONFIG;
	struct popboxd_settings set;
	struct passdb *passdb;
	struct server *server;
	const char *error;
	bool check_only = false, debug = false;
	int opt;

	while ((opt = getopt(argc, argv, "c:tdh")) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 'd':
			debug = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 64;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 64;
	}
	log_init("popboxd", false);
	settings_init(&set);
	if (settings_load(&set, config, &error) < 0) {
		fprintf(stderr, "popboxd: %s\n", error);
		settings_free(&set);
		return 78;
	}
	if (check_only) {
		settings_print(&set, stdout);
		settings_free(&set);
		return 0;
	}
	log_init("popboxd", set.log_syslog);
	if (debug)
		log_set_level(LOG_LEVEL_DEBUG);
	if (passdb_open(set.passdb_file, &passdb, &error) < 0)
		fatal("event=startup passdb=%s error=\"%s\"", set.passdb_file, error);
	/* The key is read now, while still root; never again after. */
	struct tls_server *tls = NULL;
	if (set.tls_cert_file != NULL &&
	    tls_server_create(set.tls_cert_file, set.tls_key_file,
			      set.tls_min_version, &tls, &error) < 0)
		fatal("event=startup error=\"TLS: %s\"", error);
	if (server_bind(&set, &server, &error) < 0)
		fatal("event=startup error=\"cannot listen: %s\"", error);
	drop_privileges(set.mail_user);
	server_run(server, passdb, tls);
}
