/*
 * mailmsg.h — the POP3 view of one message, shared by storage and protocol.
 *
 * The protocol core needs only a message's wire size (see lib/wire.h) and
 * its unique-id; the storage backend owns the memory and keeps both valid
 * until the maildrop is closed.
 */
#ifndef POPBOX_MAILMSG_H
#define POPBOX_MAILMSG_H

#include <stdint.h>

/* RFC 1939 section 7: a unique-id is 1 to 70 characters in 0x21-0x7E. */
#define MAILMSG_UIDL_MAX 70

struct mailmsg {
	uint64_t wire_size;  /* octets on the wire, before byte-stuffing */
	const char *uidl;    /* NUL-terminated, 1..70 chars in 0x21-0x7E */
};

#endif
