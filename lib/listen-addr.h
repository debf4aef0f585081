/*
 * listen-addr.h — the one parser of listen addresses: "IPv4:port",
 * "[IPv6]:port" or "*:port" (every address, IPv4 and IPv6).  The config
 * check and the listener both use it, so what the config accepts is
 * exactly what the server can bind.
 */
#ifndef POPBOX_LISTEN_ADDR_H
#define POPBOX_LISTEN_ADDR_H

#include <sys/socket.h>

/*
 * Parses spec into *ss (an AF_INET or AF_INET6 address, port set) and its
 * length.  Ports are 0..65535 without leading zeros (0: any free port).
 * Returns 0, or -1 with *error_r a static text.
 */
int listen_addr_parse(const char *spec, struct sockaddr_storage *ss,
		      socklen_t *len_r, const char **error_r);

#endif
