/*
 * fuzz-account.c — popbox-fetch's configuration parser and quick-form URL
 * parser (fetch/account.h) on arbitrary bytes.  The file is the user's,
 * but a parser must not crash or leak on any input, and what it accepts
 * must be what the program relies on.
 *
 * Checks (abort on violation):
 *   - a refused file leaves the list empty, with an error text and a line
 *     number no larger than the number of lines;
 *   - an accepted file gives accounts with a valid name (unique), host,
 *     user, delivery target, timeout in range, a port that is never 0,
 *     and an OAuth method exactly when a token command is set;
 *   - the input as a URL: refused with everything left empty, or accepted
 *     with a user and a host free of spaces and control bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"

static size_t count_lines(const uint8_t *data, size_t size)
{
	size_t n = 1;

	for (size_t i = 0; i < size; i++)
		n += data[i] == '\n';
	return n;
}

static int clean_text(const char *s)
{
	if (s == NULL || *s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	}
	return 1;
}

static void check_account(const struct account *a)
{
	int oauth = a->auth == SASL_CLIENT_XOAUTH2 ||
		    a->auth == SASL_CLIENT_OAUTHBEARER;

	if (a->name == NULL || strlen(a->name) == 0 ||
	    strlen(a->name) > ACCOUNT_NAME_MAX || strchr(a->name, '/') ||
	    a->name[0] == '.')
		abort();
	if (!clean_text(a->host) || strchr(a->host, ' ') ||
	    !clean_text(a->user) || strchr(a->user, ' ') ||
	    !clean_text(a->deliver_target) || account_port(a) == 0)
		abort();
	if (a->timeout_s == 0 || a->timeout_s > ACCOUNT_TIMEOUT_MAX ||
	    a->size_limit > ACCOUNT_SIZE_MAX ||
	    a->keep_days > PLAN_KEEP_DAYS_MAX)
		abort();
	if (oauth != (a->oauth_token_command != NULL))
		abort();
}

static void fuzz_config(const uint8_t *data, size_t size)
{
	struct account_list list;
	unsigned int line = 0;
	const char *error = NULL;

	if (account_parse_config((const char *)data, size, &list, &line,
				 &error) < 0) {
		if (list.count != 0 || list.accounts != NULL || error == NULL ||
		    line > count_lines(data, size))
			abort();
		return;
	}
	for (size_t i = 0; i < list.count; i++) {
		check_account(&list.accounts[i]);
		if (account_find(&list, list.accounts[i].name) !=
		    &list.accounts[i])
			abort();
	}
	account_list_free(&list);
}

static void fuzz_url(const uint8_t *data, size_t size)
{
	char *url = malloc(size + 1);
	struct account a = { 0 };
	const char *error = NULL;

	if (url == NULL)
		abort();
	memcpy(url, data, size);
	url[size] = '\0';
	if (account_from_url(url, &a, &error) < 0) {
		if (error == NULL || a.user != NULL || a.host != NULL ||
		    a.name != NULL)
			abort();
	} else {
		if (!clean_text(a.user) || strchr(a.user, ' ') ||
		    !clean_text(a.host) || strchr(a.host, ' ') ||
		    a.name == NULL || account_port(&a) == 0)
			abort();
		account_clear(&a);
	}
	free(url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_config(data, size);
	fuzz_url(data, size);
	return 0;
}
