/*
 * popboxd — the POP3 server.
 *
 * Runs as: a master (root, or whoever started it) that binds the ports,
 * reads the TLS key and starts its children: one auth process
 * (auth_user), login processes (login_user, chrooted to an empty
 * directory) and mail processes (mail_user); see master.h.  Started as
 * another user, every process stays that user.
 * Touches: the Maildirs named by the passwd-file or mail_location (read,
 * unlink at UPDATE, a lock file and a cache file in each: mail processes),
 * the passwd-file (read: auth process), stderr or syslog.
 * Trusts: its config file and the passwd-file (admin-owned); nothing from
 * the network; nothing in a Maildir (names, sizes, cache are all checked).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "master.h"
#include "settings.h"

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

int main(int argc, char **argv)
{
	const char *config = POPBOXD_DEFAULT_CONFIG;
	struct popboxd_settings set;
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
	master_run(&set);
}
