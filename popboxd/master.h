/*
 * master.h — popboxd's master process.
 *
 * Runs as root (or as whoever started popboxd), speaks no protocol: it
 * binds the ports, loads the certificate, makes the sockets its children
 * talk over, and starts and restarts them:
 *   - one auth process (auth_user): the only reader of the passdb;
 *   - `workers` login processes (login_user, chrooted to an empty
 *     directory): accept, TLS, the AUTHORIZATION state;
 *   - `workers` mail processes (mail_user): TRANSACTION and UPDATE.
 * Every child has no-new-privileges set, is not dumpable, and dies with
 * the master (PR_SET_PDEATHSIG), so no orphan keeps a port.  A child that
 * dies is logged and replaced; the others keep serving.  SIGHUP reloads
 * the certificate and checks the passwd-file again for the SCRAM offer
 * (auth_mechanisms = auto): when either changed, new login processes take
 * over, the old ones finish their connections first.  SIGTERM stops everything.
 */
#ifndef POPBOX_MASTER_H
#define POPBOX_MASTER_H

#include "settings.h"

void master_run(const struct popboxd_settings *set) __attribute__((noreturn));

#endif
