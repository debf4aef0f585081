/*
 * netmask.c — lists of networks (see netmask.h).
 */
#include "netmask.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "strnum.h"

/* Longest item: an IPv6 address in full plus "/128". */
#define NETMASK_ITEM_MAX (INET6_ADDRSTRLEN + 4)

static bool prefix_matches(const uint8_t *a, const uint8_t *net,
			   unsigned int prefix)
{
	unsigned int bytes = prefix / 8, bits = prefix % 8;

	if (memcmp(a, net, bytes) != 0)
		return false;
	if (bits == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - bits));
	return (a[bytes] & mask) == (net[bytes] & mask);
}

static int parse_item(const char *item, size_t len, struct netmask *net,
		      const char **error_r)
{
	char text[NETMASK_ITEM_MAX + 1];
	const char *slash;
	uint64_t prefix;

	if (len > NETMASK_ITEM_MAX) {
		*error_r = "network too long";
		return -1;
	}
	memcpy(text, item, len);
	text[len] = '\0';
	slash = strchr(text, '/');
	if (slash != NULL)
		text[slash - text] = '\0';
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, text, net->addr) == 1) {
		net->family = AF_INET;
		net->prefix = 32;
	} else if (inet_pton(AF_INET6, text, net->addr) == 1) {
		net->family = AF_INET6;
		net->prefix = 128;
	} else {
		*error_r = "not a numeric IPv4 or IPv6 address";
		return -1;
	}
	if (slash != NULL) {
		const char *p = slash + 1;
		if (strnum_parse_u64(p, strlen(p), net->prefix, &prefix) < 0) {
			*error_r = "bad prefix length";
			return -1;
		}
		net->prefix = (unsigned int)prefix;
	}
	/* Host bits must be clear: compare the address with itself masked. */
	uint8_t masked[16];
	memset(masked, 0, sizeof(masked));
	memcpy(masked, net->addr, net->prefix / 8);
	if (net->prefix % 8 != 0)
		masked[net->prefix / 8] = (uint8_t)(net->addr[net->prefix / 8] &
					   (0xff << (8 - net->prefix % 8)));
	if (memcmp(masked, net->addr, 16) != 0) {
		*error_r = "host bits set below the prefix length";
		return -1;
	}
	return 0;
}

int netmask_list_parse(const char *text, size_t len, struct netmask_list *list_r,
		       const char **error_r)
{
	size_t pos = 0;

	list_r->count = 0;
	if (len == 4 && memcmp(text, "none", 4) == 0)
		return 0;
	while (pos < len) {
		while (pos < len && text[pos] == ' ')
			pos++;
		if (pos == len)
			break;
		size_t start = pos;
		while (pos < len && text[pos] != ' ')
			pos++;
		if (list_r->count == NETMASK_LIST_MAX) {
			*error_r = "too many networks (max 32)";
			return -1;
		}
		if (parse_item(text + start, pos - start,
			       &list_r->nets[list_r->count], error_r) < 0)
			return -1;
		list_r->count++;
	}
	if (list_r->count == 0) {
		*error_r = "empty list (write \"none\" for no trusted network)";
		return -1;
	}
	return 0;
}

bool netmask_list_contains(const struct netmask_list *list,
			   const struct sockaddr *addr)
{
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	uint8_t a[16];
	int family;

	if (addr->sa_family == AF_INET) {
		family = AF_INET;
		memcpy(a, &((const struct sockaddr_in *)addr)->sin_addr, 4);
	} else if (addr->sa_family == AF_INET6) {
		const uint8_t *b = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
		if (memcmp(b, v4mapped, 12) == 0) {
			family = AF_INET;
			memcpy(a, b + 12, 4);
		} else {
			family = AF_INET6;
			memcpy(a, b, 16);
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < list->count; i++) {
		const struct netmask *n = &list->nets[i];
		if (n->family == family && prefix_matches(a, n->addr, n->prefix))
			return true;
	}
	return false;
}
