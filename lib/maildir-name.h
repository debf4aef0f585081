/*
 * maildir-name.h — pure parsing of Maildir file names.
 *
 * A Maildir file name is "<base>[:<info>]".  The base name is fixed when the
 * message is delivered; readers append or change ":2,<flags>" when they move
 * the file from new/ to cur/, so the base name is what identifies a message.
 * Delivery agents may put ",S=<size>" (size on disk) and ",W=<wire size>"
 * (RFC 822 size, CRLF line ends) fields in the base name, as Dovecot and
 * Courier do.
 *
 * The UIDL of a message is derived from its base name alone, so it is stable
 * forever: the base name itself when it is 1..MAILDIR_NAME_UIDL_DIRECT_MAX
 * characters from [A-Za-z0-9._,=-], otherwise "~" and the first 40 hex digits
 * of SHA-256(base name).  '~' never occurs in the direct form, so the two
 * forms cannot collide.
 *
 * Nothing here does I/O; names are (pointer, length) and need not be
 * NUL-terminated, so any byte string is accepted.
 */
#ifndef POPBOX_MAILDIR_NAME_H
#define POPBOX_MAILDIR_NAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 1939 section 7: a unique-id is at most 70 characters. */
#define MAILDIR_NAME_UIDL_DIRECT_MAX 70
/* Hex digits of SHA-256 kept in the hashed form: 160 bits, no collisions
   in practice, and "~" + 40 fits well within the 70-character limit. */
#define MAILDIR_NAME_UIDL_HASH_HEX 40
/* Buffer size for any UIDL with its NUL. */
#define MAILDIR_NAME_UIDL_SIZE (MAILDIR_NAME_UIDL_DIRECT_MAX + 1)
/* ",S=" and ",W=" values above this are treated as absent: no real message
   is that large and it keeps sums of sizes far from overflow. */
#define MAILDIR_NAME_SIZE_MAX ((uint64_t)1 << 48)

struct maildir_name {
	size_t base_len;        /* name[0..base_len) is the base name */
	bool has_size;          /* a well-formed, unique ",S=" was found */
	bool has_wire_size;     /* a well-formed, unique ",W=" was found */
	uint64_t size;          /* ",S=": size on disk */
	uint64_t wire_size;     /* ",W=": size with CRLF line ends */
};

/*
 * Parses name[0..len).  Always succeeds: the base name is everything before
 * the first ':' (the whole name if there is none).  A ",S=" or ",W=" field
 * is used only if its value is 1 to 20 decimal digits not above
 * MAILDIR_NAME_SIZE_MAX and the field occurs once in the base name.
 */
void maildir_name_parse(const char *name, size_t len, struct maildir_name *r);

/* True if base[0..len) is its own UIDL (the direct form). */
bool maildir_name_uidl_is_direct(const char *base, size_t len);

/*
 * Writes the NUL-terminated UIDL of base name base[0..len) into uidl_r and
 * its length to *len_r (1..70).  Returns 0, or -1 if libcrypto failed (with
 * *error_r set); the direct form never fails.  (In maildir-uidl.c: the one
 * function here that links libcrypto.)
 */
int maildir_name_uidl(const char *base, size_t len,
		      char uidl_r[MAILDIR_NAME_UIDL_SIZE], size_t *len_r,
		      const char **error_r);

/*
 * The length of the UIDL maildir_name_uidl() produces for base[0..len),
 * without computing a hash.
 */
size_t maildir_name_uidl_len(const char *base, size_t len);

/* An upper bound of maildir_name_uidl_len() that only needs the length. */
#define MAILDIR_NAME_UIDL_LEN_BOUND(len) \
	((len) > MAILDIR_NAME_UIDL_DIRECT_MAX ? MAILDIR_NAME_UIDL_DIRECT_MAX : \
	 (len) > 1 + MAILDIR_NAME_UIDL_HASH_HEX ? (len) : \
	 1 + MAILDIR_NAME_UIDL_HASH_HEX)

#endif
