/*
 * maildir-uidl.c — the UIDL of a Maildir base name (maildir_name_uidl(),
 * declared in maildir-name.h with the rest of the name functions).
 *
 * Apart from maildir-name.c because the hashed form needs libcrypto's
 * SHA-256: a program that only parses names (popbox-deliver, through
 * deliver.c) then does not link OpenSSL and start it up for every
 * message.  The rule itself is in maildir-name.h.
 */
#include "maildir-name.h"

#include <string.h>
#include <openssl/sha.h>

int maildir_name_uidl(const char *base, size_t len,
		      char uidl_r[MAILDIR_NAME_UIDL_SIZE], size_t *len_r,
		      const char **error_r)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA256_DIGEST_LENGTH];

	if (maildir_name_uidl_is_direct(base, len)) {
		memcpy(uidl_r, base, len);
		uidl_r[len] = '\0';
		*len_r = len;
		return 0;
	}
	if (SHA256((const unsigned char *)base, len, md) == NULL) {
		*error_r = "SHA256() failed";
		return -1;
	}
	uidl_r[0] = '~';
	for (size_t i = 0; i < MAILDIR_NAME_UIDL_HASH_HEX / 2; i++) {
		uidl_r[1 + 2 * i] = hex[md[i] >> 4];
		uidl_r[2 + 2 * i] = hex[md[i] & 0x0f];
	}
	uidl_r[1 + MAILDIR_NAME_UIDL_HASH_HEX] = '\0';
	*len_r = 1 + MAILDIR_NAME_UIDL_HASH_HEX;
	return 0;
}
