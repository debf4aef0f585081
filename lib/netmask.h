/*
 * netmask.h — lists of networks ("127.0.0.0/8 ::1/128 10.1.2.3"), to tell
 * whether a client address is on a trusted network.
 *
 * Pure: parsing takes (text, length) and allocates nothing.  IPv4-mapped
 * IPv6 clients (::ffff:a.b.c.d) match IPv4 networks.
 */
#ifndef POPBOX_NETMASK_H
#define POPBOX_NETMASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Enough for any sane trusted_networks setting. */
#define NETMASK_LIST_MAX 32

struct netmask {
	int family;          /* AF_INET or AF_INET6 */
	uint8_t addr[16];    /* network address, host bits cleared */
	unsigned int prefix; /* 0..32 or 0..128 */
};

struct netmask_list {
	struct netmask nets[NETMASK_LIST_MAX];
	size_t count;
};

/*
 * Parses space-separated ADDR or ADDR/PREFIX items; "none" alone is the
 * empty list.  Host bits set below the prefix are an error (a typo such as
 * 10.0.0.1/8 is refused, not silently widened).  Returns 0, or -1 with
 * *error_r a static text.
 */
int netmask_list_parse(const char *text, size_t len, struct netmask_list *list_r,
		       const char **error_r);

/* True when addr (AF_INET or AF_INET6) lies in one of the networks. */
bool netmask_list_contains(const struct netmask_list *list,
			   const struct sockaddr *addr);

#endif
