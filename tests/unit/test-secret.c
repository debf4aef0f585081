/*
 * test-secret.c — passwords and tokens from a command (fetch/secret.h):
 * the first line only, CR LF and LF, exit 75 is temporary and other
 * failures permanent, an empty or over-long first line and control bytes
 * are refused, output beyond the limit is drained, and the command's
 * child is the only one waited for.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "secret.h"

static void expect_secret(const char *command, const char *want)
{
	char *s = NULL;
	bool temporary = true;
	const char *error = NULL;

	if (secret_from_command(command, &s, &temporary, &error) != 0)
		fail_msg("'%s' failed: %s", command, error);
	assert_string_equal(s, want);
	secret_free(&s);
	assert_null(s);
}

static void expect_failure(const char *command, bool temporary_wanted,
			   const char *error_part)
{
	char *s = NULL;
	bool temporary = !temporary_wanted;
	const char *error = NULL;

	if (secret_from_command(command, &s, &temporary, &error) != -1)
		fail_msg("'%s' succeeded", command);
	assert_null(s);
	assert_int_equal(temporary, temporary_wanted);
	if (error == NULL || strstr(error, error_part) == NULL)
		fail_msg("'%s': error '%s' lacks '%s'", command,
			 error != NULL ? error : "(null)", error_part);
}

static void test_first_line(void **state)
{
	(void)state;
	expect_secret("echo s3cret", "s3cret");
	expect_secret("printf 'a b  c\\nsecond\\n'", "a b  c");
	expect_secret("printf 'crlf\\r\\n'", "crlf");
	expect_secret("printf 'no newline'", "no newline");
	/* Only stdout is read. */
	expect_secret("echo noise 2>/dev/null >&2; echo tok", "tok");
}

static void test_failures(void **state)
{
	(void)state;
	expect_failure("exit 75", true, "status 75");
	expect_failure("echo x; exit 1", false, "status 1");
	expect_failure("true", false, "empty");
	expect_failure("printf '\\n'", false, "empty");
	expect_failure("printf 'a\\tb\\n'", false, "control");
	expect_failure("kill -9 $$", false, "signal 9");
	expect_failure("/nonexistent/command 2>/dev/null", false,
		       "status 127");
}

static void test_long_output(void **state)
{
	char command[128];

	(void)state;
	/* A first line of exactly SECRET_MAX bytes, then a lot more. */
	snprintf(command, sizeof(command),
		 "head -c %d /dev/zero | tr '\\0' x; echo; "
		 "head -c 1000000 /dev/zero", SECRET_MAX);
	{
		char *s = NULL;
		bool temporary;
		const char *error;

		assert_int_equal(secret_from_command(command, &s, &temporary,
						     &error), 0);
		assert_int_equal(strlen(s), SECRET_MAX);
		secret_free(&s);
	}
	snprintf(command, sizeof(command),
		 "head -c %d /dev/zero | tr '\\0' x", SECRET_MAX + 1);
	expect_failure(command, false, "longer");
}

static void test_other_children_left_alone(void **state)
{
	pid_t other = fork();
	int status;

	(void)state;
	assert_true(other >= 0);
	if (other == 0) {
		pause();
		_exit(0);
	}
	expect_secret("echo ok", "ok");
	/* The other child was not reaped by secret_from_command. */
	assert_int_equal(waitpid(other, &status, WNOHANG), 0);
	kill(other, SIGKILL);
	assert_int_equal(waitpid(other, &status, 0), other);
}

static void test_no_prompt_without_terminal(void **state)
{
	char *s = NULL;
	bool interrupted = true;
	const char *error = NULL;

	(void)state;
	/* Under the test runner stdin is not a terminal (or made not one). */
	if (isatty(STDIN_FILENO))
		skip();
	assert_false(secret_can_prompt());
	assert_int_equal(secret_prompt("pw: ", &s, &interrupted, &error), -1);
	assert_null(s);
	assert_false(interrupted);
	assert_non_null(error);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_line),
		cmocka_unit_test(test_failures),
		cmocka_unit_test(test_long_output),
		cmocka_unit_test(test_other_children_left_alone),
		cmocka_unit_test(test_no_prompt_without_terminal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
