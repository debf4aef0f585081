/*
 * popbox — the admin command.
 *
 *   popbox passwd [-s SCHEME]     hash a password for the passwd-file
 *   popbox check-config [-c FILE] load a config, print effective settings
 *
 * Runs as whoever calls it, needs no privileges, touches no mail and opens
 * only the config file it is given and the terminal.  A password read here
 * is wiped from memory as soon as it is hashed.  Exit codes: sysexits.h.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>

#include "password.h"
#include "settings.h"

/* Where popboxd looks for its config unless told otherwise. */
#define POPBOX_DEFAULT_CONFIG "/etc/popbox/popboxd.conf"

static const char popbox_usage[] =
	"usage: popbox passwd [-s SCHEME]\n"
	"       popbox check-config [-c FILE]\n"
	"       popbox --help\n"
	"\n"
	"passwd        read a password (twice from a terminal, or one line\n"
	"              from stdin) and print \"{SCHEME}hash\" for the\n"
	"              passwd-file.  SCHEME: YESCRYPT (default), SHA512-CRYPT,\n"
	"              SHA256-CRYPT, BLF-CRYPT, SCRAM-SHA-256 (needed for\n"
	"              AUTH SCRAM-SHA-256), PLAIN (needed only for APOP)\n"
	"check-config  load FILE (default " POPBOX_DEFAULT_CONFIG ") and print\n"
	"              the effective settings, like `popboxd -t`\n";

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

static int popbox_check_config(int argc, char **argv)
{
	const char *path = POPBOX_DEFAULT_CONFIG, *error;
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
	settings_init(&set);
	if (settings_load(&set, path, &error) < 0) {
		fprintf(stderr, "popbox: %s\n", error);
		settings_free(&set);
		return EX_CONFIG;
	}
	settings_print(&set, stdout);
	settings_free(&set);
	return EX_OK;
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
