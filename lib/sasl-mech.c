/*
 * sasl-mech.c — the SASL mechanisms popbox knows, by name (see
 * sasl-mech.h).
 */
#include "sasl-mech.h"

#include <string.h>
#include <strings.h>

static const char *const sasl_mech_names[SASL_MECH_COUNT] = {
	[SASL_MECH_PLAIN] = "PLAIN",
	[SASL_MECH_LOGIN] = "LOGIN",
	[SASL_MECH_SCRAM_SHA_256] = "SCRAM-SHA-256",
};

bool sasl_mech_from_name(const char *name, size_t len, enum sasl_mech *mech_r)
{
	for (size_t i = 0; i < SASL_MECH_COUNT; i++) {
		if (strlen(sasl_mech_names[i]) == len &&
		    strncasecmp(sasl_mech_names[i], name, len) == 0) {
			*mech_r = (enum sasl_mech)i;
			return true;
		}
	}
	return false;
}

const char *sasl_mech_name(enum sasl_mech mech)
{
	return (unsigned int)mech < SASL_MECH_COUNT ? sasl_mech_names[mech]
						    : "UNKNOWN";
}
