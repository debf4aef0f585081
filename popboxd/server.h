/*
 * server.h — popboxd's network side: listeners, one libevent loop per
 * thread, and the connection that joins a socket to a pop3_session.
 *
 * server_bind() runs before privileges are dropped (it may bind port 110);
 * server_run() runs after, starts the loops and never returns.
 */
#ifndef POPBOX_SERVER_H
#define POPBOX_SERVER_H

#include "tls.h"

#include "passdb.h"
#include "settings.h"

struct server;

/* Creates one listening socket per address, shared by all loop threads.
   A port of 0 is chosen by the kernel; the chosen address is logged as
   "event=listening addr=HOST:PORT". */
int server_bind(const struct popboxd_settings *set, struct server **server_r,
		const char **error_r);

/* Starts the job pool and the loop threads, then waits for SIGTERM or
   SIGINT and exits the process.  Open sessions end without UPDATE, so
   nothing is deleted.  tls (may be NULL) serves the implicit-TLS
   listeners and STLS on the plain ones; SIGHUP reloads its files. */
void server_run(struct server *server, struct passdb *passdb,
		struct tls_server *tls)
	__attribute__((noreturn));

#endif
