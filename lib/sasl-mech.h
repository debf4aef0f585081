/*
 * sasl-mech.h — the SASL mechanisms popbox knows, by name (RFC 4422
 * section 3.1: names are case-insensitive on the wire).
 *
 * The names alone, apart from the mechanisms themselves (popboxd/sasl.c,
 * fetch/sasl-client.c): the config parser checks auth_mechanisms with
 * them, and a program that only reads the config (popbox-deliver) then
 * links no SASL code and no OpenSSL.
 */
#ifndef POPBOX_SASL_MECH_H
#define POPBOX_SASL_MECH_H

#include <stdbool.h>
#include <stddef.h>

enum sasl_mech {
	SASL_MECH_PLAIN,
	SASL_MECH_LOGIN,
	SASL_MECH_SCRAM_SHA_256,
	SASL_MECH_COUNT
};

/* Case-insensitive lookup of name[0..len); false if unknown. */
bool sasl_mech_from_name(const char *name, size_t len, enum sasl_mech *mech_r);
/* The canonical upper-case name ("SCRAM-SHA-256"); "UNKNOWN" if out of
   range. */
const char *sasl_mech_name(enum sasl_mech mech);

#endif
