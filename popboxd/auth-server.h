/*
 * auth-server.h — the auth process: the only popboxd process that reads
 * the password database.
 *
 * It listens on an abstract AF_UNIX SOCK_SEQPACKET socket made by the
 * master.  Login processes (by uid) may ask it to verify USER/PASS, APOP
 * and SASL steps; mail processes (by uid) may only redeem a login token
 * for the user's record, and look a recipient up (USERDB_LOOKUP), which
 * popbox-deliver may also do over the filesystem socket userdb_socket.
 * It trusts nothing it is sent: every message is parsed as hostile, every
 * field bounded, and the state a peer can make it hold (open SASL
 * exchanges, tokens) is capped.  Failed logins are
 * throttled here: the per-address penalty before verification and the
 * fixed failure delay before the answer.
 */
#ifndef POPBOX_AUTH_SERVER_H
#define POPBOX_AUTH_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

#include "settings.h"

struct auth_server_params {
	const struct popboxd_settings *set;
	int listen_fd;          /* listening SOCK_SEQPACKET socket */
	/* The listening socket at userdb_socket (popbox-deliver), or -1.
	   Its peers may only ask USERDB_LOOKUP, and only if they run as
	   mail_uid (with uid_checks) or as this process's user (without). */
	int userdb_fd;
	/* With uid_checks, a peer's role comes from its uid (SO_PEERCRED);
	   without (popboxd not started as root), every peer may do all. */
	bool uid_checks;
	uid_t login_uid;
	uid_t mail_uid;
};

/* Opens the passdb and serves until the process is told to stop. */
void auth_server_run(const struct auth_server_params *params)
	__attribute__((noreturn));

#endif
