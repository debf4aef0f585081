/*
 * maildir-name.c — pure parsing of Maildir file names (see maildir-name.h).
 *
 * Invariants: no I/O, no allocation, never reads outside name[0..len).
 * Numbers are parsed strictly here rather than with strtoull (which accepts
 * signs, spaces and "0x" and needs a NUL): a name is hostile input.
 * The hashed UIDL form is in maildir-uidl.c, the one part that needs
 * libcrypto, so a program that only parses names does not link it.
 */
#include "maildir-name.h"

#include <string.h>

/* 2^48 has 15 digits; more than 20 digits cannot fit in uint64_t anyway. */
#define MAILDIR_NAME_NUM_DIGITS_MAX 20

/* Parses s[0..len) as digits only; -1 if empty, not digits or too large. */
static int maildir_name_number(const char *s, size_t len, uint64_t *value_r)
{
	uint64_t v = 0;

	if (len == 0 || len > MAILDIR_NAME_NUM_DIGITS_MAX)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		/* v <= 2^48 before this step, so v * 10 + 9 cannot overflow. */
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > MAILDIR_NAME_SIZE_MAX)
			return -1;
	}
	*value_r = v;
	return 0;
}

/*
 * One ",X=value" field f[0..len) (without the comma).  *seen counts the
 * occurrences of the key so a duplicated field can be rejected.
 */
static void maildir_name_field(const char *f, size_t len, char key,
			       unsigned int *seen, bool *ok, uint64_t *value)
{
	if (len < 2 || f[0] != key || f[1] != '=')
		return;
	(*seen)++;
	*ok = *seen == 1 && maildir_name_number(f + 2, len - 2, value) == 0;
}

void maildir_name_parse(const char *name, size_t len, struct maildir_name *r)
{
	const char *colon = memchr(name, ':', len);
	const char *p, *end, *comma;
	unsigned int seen_s = 0, seen_w = 0;

	memset(r, 0, sizeof(*r));
	r->base_len = colon == NULL ? len : (size_t)(colon - name);
	end = name + r->base_len;
	p = memchr(name, ',', r->base_len);
	while (p != NULL) {
		p++; /* past the comma */
		comma = memchr(p, ',', (size_t)(end - p));
		const char *fend = comma == NULL ? end : comma;
		maildir_name_field(p, (size_t)(fend - p), 'S', &seen_s,
				   &r->has_size, &r->size);
		maildir_name_field(p, (size_t)(fend - p), 'W', &seen_w,
				   &r->has_wire_size, &r->wire_size);
		p = comma;
	}
	if (seen_s > 1)
		r->has_size = false;
	if (seen_w > 1)
		r->has_wire_size = false;
}

/*
 * [A-Za-z0-9._,=-]: readable, safe in any POP3 client, never '~'.  A table
 * because this runs for every message on every open.
 */
#define D1(c) [c] = true
static const bool maildir_name_direct[256] = {
	D1('.'), D1('_'), D1(','), D1('='), D1('-'),
	D1('0'), D1('1'), D1('2'), D1('3'), D1('4'),
	D1('5'), D1('6'), D1('7'), D1('8'), D1('9'),
	D1('A'), D1('B'), D1('C'), D1('D'), D1('E'), D1('F'), D1('G'),
	D1('H'), D1('I'), D1('J'), D1('K'), D1('L'), D1('M'), D1('N'),
	D1('O'), D1('P'), D1('Q'), D1('R'), D1('S'), D1('T'), D1('U'),
	D1('V'), D1('W'), D1('X'), D1('Y'), D1('Z'),
	D1('a'), D1('b'), D1('c'), D1('d'), D1('e'), D1('f'), D1('g'),
	D1('h'), D1('i'), D1('j'), D1('k'), D1('l'), D1('m'), D1('n'),
	D1('o'), D1('p'), D1('q'), D1('r'), D1('s'), D1('t'), D1('u'),
	D1('v'), D1('w'), D1('x'), D1('y'), D1('z'),
};
#undef D1

bool maildir_name_uidl_is_direct(const char *base, size_t len)
{
	const unsigned char *p = (const unsigned char *)base;
	bool ok = true;

	if (len == 0 || len > MAILDIR_NAME_UIDL_DIRECT_MAX)
		return false;
	/* No early exit: the loop stays branch-free and vectorisable. */
	for (size_t i = 0; i < len; i++)
		ok &= maildir_name_direct[p[i]];
	return ok;
}

size_t maildir_name_uidl_len(const char *base, size_t len)
{
	return maildir_name_uidl_is_direct(base, len) ?
		       len : 1 + MAILDIR_NAME_UIDL_HASH_HEX;
}
