/*
 * fuzz-userdb-reply.c — libFuzzer harness for the decoding of a
 * USERDB_REPLY (userdb-lookup.h): what popbox-deliver and the LMTP
 * listener believe about a recipient.
 *
 * Input: one IPC message as it comes off the socket.  Invariants checked
 * (abort on violation): no crash or leak; PASSDB_OK only with a name that
 * passes username_valid, a home no longer than USERDB_PATH_MAX - 1, and a
 * policy user_policy_ipc_get accepted; anything else leaves the record
 * empty.  A record that decoded is encoded again and must decode to the
 * same thing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth-proto.h"
#include "ipc.h"
#include "passdb.h"
#include "userdb-lookup.h"

static struct ipc_writer again;

static void check_same(const struct passdb_user *a, const struct passdb_user *b)
{
	if (strcmp(a->name, b->name) != 0 || strcmp(a->home, b->home) != 0 ||
	    a->uid != b->uid || a->gid != b->gid ||
	    (a->mail == NULL) != (b->mail == NULL) ||
	    (a->mail != NULL && strcmp(a->mail, b->mail) != 0) ||
	    a->policy.quota_storage != b->policy.quota_storage ||
	    a->policy.quota_messages != b->policy.quota_messages ||
	    a->policy.keep_days != b->policy.keep_days ||
	    a->policy.expire_days != b->policy.expire_days ||
	    a->policy.pop3 != b->policy.pop3)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct passdb_user u, v;
	struct ipc_msg msg;

	if (ipc_parse(data, size, &msg) < 0)
		return 0;
	enum passdb_result r = userdb_lookup_reply_get(&msg, &u);
	if (r != PASSDB_OK) {
		if (u.name != NULL || u.home != NULL || u.mail != NULL)
			abort();
		return 0;
	}
	if (u.name == NULL || u.home == NULL ||
	    !username_valid(u.name, strlen(u.name)) ||
	    strlen(u.home) >= USERDB_PATH_MAX)
		abort();
	userdb_lookup_reply_put(&again, msg.id, AUTH_STATUS_OK, &u);
	if (again.overflow || ipc_parse(again.buf, again.len, &msg) < 0 ||
	    userdb_lookup_reply_get(&msg, &v) != PASSDB_OK)
		abort();
	check_same(&u, &v);
	passdb_user_clear(&u);
	passdb_user_clear(&v);
	return 0;
}
