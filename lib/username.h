/*
 * username.h — what a user name may be.
 *
 * User names are data, never paths: they end up in Maildir paths
 * (mail_location's %u), log lines and IPC messages, so only a small safe
 * alphabet is accepted, and every lookup (passdb, userdb, LMTP, delivery)
 * checks a name before it uses it.  On its own so that a program that only
 * checks names (popbox-deliver) does not link the password code.
 */
#ifndef POPBOX_USERNAME_H
#define POPBOX_USERNAME_H

#include <stdbool.h>
#include <stddef.h>

/* Longest user name, in bytes. */
#define USERNAME_MAX 64

/*
 * True if name[0..len) is 1..USERNAME_MAX bytes of [A-Za-z0-9._@+-], does
 * not start with '.' or '-' and has no "..".  name need not be
 * NUL-terminated; a NUL inside the length makes it invalid.
 */
bool username_valid(const char *name, size_t len);

#endif
