/*
 * secret.h — where popbox-fetch gets a password or an OAuth2 access token
 * that is not in its configuration file: the first line of a command's
 * output (a secret store: `pass show mail/work`, `secret-tool lookup ...`,
 * an OAuth2 helper that refreshes the token), or a prompt on the terminal
 * with echo off.
 *
 * The command is the user's own configuration, run as "/bin/sh -c CMD"
 * with stdin and stderr inherited (a secret store may ask for its own
 * passphrase) and signals back to their defaults; only its stdout is
 * read, at most SECRET_MAX bytes of it kept (the rest read and dropped),
 * and only that one child is waited for (never all children: the MDA
 * code waits for its own).  A command still running after
 * SECRET_COMMAND_TIMEOUT_MS is killed.
 *
 * Every buffer that held the secret is wiped before it is freed or
 * returned to the caller, who wipes its own copy (explicit_bzero).
 */
#ifndef POPBOX_SECRET_H
#define POPBOX_SECRET_H

#include <stdbool.h>
#include <stddef.h>

/* Longest secret: an OAuth2 access token (a JWT) runs to a few KiB;
   as sasl-client.h's SASL_CLIENT_SECRET_MAX. */
#define SECRET_MAX 8192
/* A secret store may wait for its own passphrase prompt. */
#define SECRET_COMMAND_TIMEOUT_MS (5 * 60 * 1000)

/*
 * Runs command and returns the first line of its output (without the line
 * end) as a malloc'ed string in *secret_r.  Returns 0, or -1 with
 * *error_r (thread-local) and *temporary_r: true when the command exited
 * with 75 (EX_TEMPFAIL: "try later"), false for any other failure (a
 * non-zero status, a signal, the timeout, an empty first line, a first
 * line longer than SECRET_MAX or holding a control byte).
 */
int secret_from_command(const char *command, char **secret_r,
			bool *temporary_r, const char **error_r);

/*
 * Asks for a secret on /dev/tty with echo off: writes prompt, reads one
 * line.  Only when both stdin and /dev/tty are terminals (never under
 * cron or in a pipeline).  Returns 0 and a malloc'ed string in *secret_r,
 * or -1 with *error_r (no terminal, end of input, interrupted by a
 * signal: then *interrupted_r is true).
 */
int secret_prompt(const char *prompt, char **secret_r, bool *interrupted_r,
		  const char **error_r);

/* True if a prompt is possible: stdin is a terminal and /dev/tty opens. */
bool secret_can_prompt(void);

/* Wipes and frees *secret, sets it to NULL; NULL is fine. */
void secret_free(char **secret);

#endif
