/*
 * fuzz-netmask.c — libFuzzer harness for trusted-network lists: any text
 * parses or fails cleanly; a parsed list has sane prefixes and matching an
 * address against it never misbehaves.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netmask.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct netmask_list list;
	const char *error;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	if (netmask_list_parse(text, size, &list, &error) == 0) {
		struct sockaddr_in6 a;
		if (list.count > NETMASK_LIST_MAX)
			abort();
		for (size_t i = 0; i < list.count; i++) {
			unsigned max = list.nets[i].family == AF_INET ? 32 : 128;
			if (list.nets[i].prefix > max)
				abort();
		}
		memset(&a, 0, sizeof(a));
		a.sin6_family = AF_INET6;
		memcpy(&a.sin6_addr, data, size < 16 ? size : 16);
		(void)netmask_list_contains(&list, (struct sockaddr *)&a);
	}
	free(text);
	return 0;
}
