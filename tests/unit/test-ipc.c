/*
 * test-ipc.c — the inter-process message codec and descriptor passing:
 * round trips, every malformed form the parser must refuse (what a
 * compromised login process could send), the getters' checks, and
 * sendmsg/recvmsg with a descriptor over a socketpair.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "ipc.h"

static struct ipc_writer w;

static void test_round_trip(void **state)
{
	struct ipc_msg msg;
	char str[16];
	uint32_t v;
	uint8_t fixed[4];

	(void)state;
	ipc_writer_init(&w, 0x0102, 0xa1b2c3d4);
	ipc_put_str(&w, 0, "alice");
	ipc_put_u32(&w, 5, 0xdeadbeef);
	ipc_put(&w, 31, "", 0);
	ipc_put(&w, 7, "\x00\x01\x02\x03", 4);
	assert_false(w.overflow);
	assert_int_equal(ipc_parse(w.buf, w.len, &msg), 0);
	assert_int_equal(msg.type, 0x0102);
	assert_int_equal(msg.id, 0xa1b2c3d4);
	assert_true(ipc_get_str(&msg, 0, str, sizeof(str)));
	assert_string_equal(str, "alice");
	assert_true(ipc_get_u32(&msg, 5, &v));
	assert_int_equal(v, 0xdeadbeef);
	assert_true(msg.fields[31].present);
	assert_int_equal(msg.fields[31].len, 0);
	assert_true(ipc_get_fixed(&msg, 7, fixed, 4));
	assert_memory_equal(fixed, "\x00\x01\x02\x03", 4);
	/* Absent fields. */
	assert_false(ipc_get_str(&msg, 1, str, sizeof(str)));
	assert_false(ipc_get_u32(&msg, 2, &v));
	assert_false(msg.fields[30].present);
}

static void test_getters_check_form(void **state)
{
	struct ipc_msg msg;
	char small[4], str[16];
	uint32_t v;
	uint8_t fixed[8];

	(void)state;
	ipc_writer_init(&w, 1, 1);
	ipc_put_str(&w, 0, "toolong");
	ipc_put(&w, 1, "a\0b", 3);
	ipc_put(&w, 2, "abc", 3);
	assert_int_equal(ipc_parse(w.buf, w.len, &msg), 0);
	assert_false(ipc_get_str(&msg, 0, small, sizeof(small)));   /* too long */
	assert_true(ipc_get_str(&msg, 0, str, sizeof(str)));
	assert_false(ipc_get_str(&msg, 1, str, sizeof(str)));       /* NUL inside */
	assert_false(ipc_get_u32(&msg, 2, &v));                     /* 3 bytes */
	assert_false(ipc_get_fixed(&msg, 2, fixed, 8));              /* wrong size */
	assert_false(ipc_get_str(&msg, 40, str, sizeof(str)));       /* no such tag */
}

static void test_writer_overflow(void **state)
{
	static uint8_t big[70000];

	(void)state;
	ipc_writer_init(&w, 1, 1);
	ipc_put(&w, 32, "x", 1);                 /* tag out of range */
	assert_true(w.overflow);
	ipc_writer_init(&w, 1, 1);
	ipc_put(&w, 0, big, sizeof(big));        /* over UINT16_MAX */
	assert_true(w.overflow);
	ipc_writer_init(&w, 1, 1);
	ipc_put(&w, 0, big, 65535);
	assert_false(w.overflow);
	ipc_put(&w, 1, big, 65535);              /* past IPC_MSG_MAX */
	assert_true(w.overflow);
}

struct bad_case {
	const char *name;
	const uint8_t *data;
	size_t len;
};

static void test_malformed_refused(void **state)
{
	static const uint8_t short_header[] = { 0, 1, 0, 0, 0 };
	static const uint8_t partial_field[] = { 0, 1, 0, 0, 0, 1, 3, 0 };
	static const uint8_t len_past_end[] = { 0, 1, 0, 0, 0, 1, 3, 0, 5, 'a', 'b' };
	static const uint8_t tag_too_big[] = { 0, 1, 0, 0, 0, 1, 32, 0, 0 };
	static const uint8_t tag_twice[] = { 0, 1, 0, 0, 0, 1, 3, 0, 1, 'a', 3, 0, 1, 'b' };
	static const struct bad_case bad[] = {
		{ "empty", short_header, 0 },
		{ "short header", short_header, sizeof(short_header) },
		{ "partial field header", partial_field, sizeof(partial_field) },
		{ "length past the end", len_past_end, sizeof(len_past_end) },
		{ "tag out of range", tag_too_big, sizeof(tag_too_big) },
		{ "tag given twice", tag_twice, sizeof(tag_twice) },
	};
	struct ipc_msg msg;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ipc_parse(bad[i].data, bad[i].len, &msg) == 0)
			fail_msg("accepted: %s", bad[i].name);
	}
	/* Longer than IPC_MSG_MAX. */
	static uint8_t huge[IPC_MSG_MAX + 1];
	assert_int_equal(ipc_parse(huge, sizeof(huge), &msg), -1);
	/* The header alone is a valid empty message. */
	static const uint8_t header_only[] = { 0, 1, 0, 0, 0, 9 };
	assert_int_equal(ipc_parse(header_only, sizeof(header_only), &msg), 0);
	assert_int_equal(msg.id, 9);
}

static void test_descriptor_passing(void **state)
{
	int sp[2], pipefd[2], got = -1;
	char buf[64];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
	assert_int_equal(pipe(pipefd), 0);
	assert_int_equal(ipc_send(sp[0], "hello", 5, pipefd[1]), 5);
	close(pipefd[1]);
	assert_int_equal(ipc_recv(sp[1], buf, sizeof(buf), &got), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_true(got >= 0);
	/* The passed descriptor is the pipe's write end. */
	assert_int_equal(write(got, "x", 1), 1);
	assert_int_equal(read(pipefd[0], buf, 1), 1);
	close(got);
	/* No descriptor: -1. */
	assert_int_equal(ipc_send(sp[0], "a", 1, -1), 1);
	assert_int_equal(ipc_recv(sp[1], buf, sizeof(buf), &got), 1);
	assert_int_equal(got, -1);
	/* A packet bigger than the buffer is an error, not a silent cut. */
	assert_int_equal(ipc_send(sp[0], "0123456789", 10, -1), 10);
	assert_int_equal(ipc_recv(sp[1], buf, 4, &got), -1);
	assert_int_equal(got, -1);
	close(pipefd[0]);
	close(sp[0]);
	close(sp[1]);
}

static void test_abstract_sockets(void **state)
{
	char name[64];
	int l, c, a;

	(void)state;
	snprintf(name, sizeof(name), "popbox-test-ipc-%d", (int)getpid());
	l = ipc_listen_abstract(name, SOCK_SEQPACKET);
	assert_true(l >= 0);
	/* The same name twice: refused. */
	assert_int_equal(ipc_listen_abstract(name, SOCK_SEQPACKET), -1);
	c = ipc_connect_abstract(name, SOCK_SEQPACKET);
	assert_true(c >= 0);
	a = accept(l, NULL, NULL);
	assert_true(a >= 0);
	close(a);
	close(c);
	close(l);
	assert_int_equal(ipc_connect_abstract(name, SOCK_SEQPACKET), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_getters_check_form),
		cmocka_unit_test(test_writer_overflow),
		cmocka_unit_test(test_malformed_refused),
		cmocka_unit_test(test_descriptor_passing),
		cmocka_unit_test(test_abstract_sockets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
