/*
 * server.h — the event loop of a login or a mail process.
 *
 * server_bind() runs in the master, as root (it may bind port 110): one
 * listening socket per address.  A login process then accepts on all of
 * them (every login process on the same sockets: whichever wakes first
 * takes a connection); a mail process accepts hand-overs from login
 * processes instead and, when lmtp_listen is set, the MTA's connections on
 * the one LMTP socket (lmtp-conn.h).  Each process runs one loop; a mail
 * process also has a pool of threads for maildrop scans, deliveries and
 * fsync.
 */
#ifndef POPBOX_SERVER_H
#define POPBOX_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

#include "settings.h"
#include "tls.h"

struct server;
struct conn_limits;

/* Creates one listening socket per address.  A port of 0 is chosen by the
   kernel; the chosen address is logged as "event=listening addr=HOST:PORT". */
int server_bind(const struct popboxd_settings *set, struct server **server_r,
		const char **error_r);
/* Closes the listening sockets (in processes that do not accept). */
void server_close_listeners(struct server *server);
/* Closes the LMTP listening socket (lmtp_listen), which only the mail
   processes accept on; server_close_listeners() leaves it open. */
void server_close_lmtp_listener(struct server *server);

struct server_params {
	const struct popboxd_settings *set;
	struct tls_server *tls;        /* login: NULL if no TLS configured */
	const char *auth_socket;       /* abstract name of auth's socket */
	/* login: the SASL mechanisms offered, bit (1u << enum sasl_mech):
	   auth_mechanisms as the master resolved it ("auto" against the
	   passdb, which a login process cannot read) */
	unsigned int sasl_mechs;
	const char *const *mail_sockets;  /* login: one per mail process */
	unsigned int mail_socket_count;
	int mail_listen_fd;            /* mail: where hand-overs arrive */
	unsigned int workers;          /* login processes (they share the pool) */
	struct conn_limits *limits;    /* shared connection counts, or NULL */
	unsigned int limits_index;     /* this process's column in them */
	bool uid_checks;               /* mail: accept hand-overs from ... */
	uid_t login_uid;               /* ... this uid only */
};

/* A login process: accepts until SIGUSR1 (then finishes its open
   connections and exits) or SIGTERM. */
void server_run_login(struct server *server, const struct server_params *params)
	__attribute__((noreturn));
/* A mail process: serves hand-overs until SIGTERM. */
void server_run_mail(struct server *server, const struct server_params *params)
	__attribute__((noreturn));

#endif
