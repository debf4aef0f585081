/*
 * listen-addr.c — parsing listen addresses (see listen-addr.h).
 */
#include "listen-addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "strnum.h"

static int port_parse(const char *s, uint16_t *port_r)
{
	uint64_t port;
	size_t len = strlen(s);

	if ((len > 1 && s[0] == '0') ||
	    strnum_parse_u64(s, len, 65535, &port) < 0)
		return -1;
	*port_r = (uint16_t)port;
	return 0;
}

int listen_addr_parse(const char *spec, struct sockaddr_storage *ss,
		      socklen_t *len_r, const char **error_r)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *start = spec;
	bool bracketed = spec[0] == '[';
	uint16_t port;

	*error_r = "expected IPv4:port, [IPv6]:port or *:port (port 0..65535)";
	if (bracketed) {
		const char *close = strchr(spec, ']');
		if (close == NULL || close[1] != ':')
			return -1;
		start = spec + 1;
		colon = close + 1;
	} else if ((colon = strrchr(spec, ':')) == NULL) {
		return -1;
	}
	size_t hostlen = (size_t)(colon - start) - (bracketed ? 1 : 0);
	if (hostlen == 0 || hostlen >= sizeof(host) ||
	    port_parse(colon + 1, &port) < 0)
		return -1;
	memcpy(host, start, hostlen);
	host[hostlen] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (!bracketed && strcmp(host, "*") == 0) {
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_any;
		in6->sin6_port = htons(port);
		*len_r = sizeof(*in6);
	} else if (!bracketed && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		*len_r = sizeof(*in4);
	} else if (bracketed && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		*len_r = sizeof(*in6);
	} else {
		return -1;
	}
	return 0;
}
