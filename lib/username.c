/*
 * username.c — what a user name may be (see username.h).
 */
#include "username.h"

bool username_valid(const char *name, size_t len)
{
	if (len == 0 || len > USERNAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' ||
			  c == '@' || c == '+' || c == '-';

		if (!ok || (c == '.' && i > 0 && name[i - 1] == '.'))
			return false;
	}
	return true;
}
