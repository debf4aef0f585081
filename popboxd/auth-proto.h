/*
 * auth-proto.h — the messages of popboxd's authentication protocol (the
 * lib/ipc.h codec over SOCK_SEQPACKET), and of the hand-over of a logged-in
 * connection from a login process to a mail process.
 *
 *   login -> auth   AUTH_PASS, AUTH_APOP, AUTH_SASL (one step), AUTH_FORGET
 *   auth  -> login  AUTH_REPLY: CONTINUE (+ challenge) or the end; on OK a
 *                   one-time token and the user name, nothing else
 *   login -> mail   HANDOVER (stream socket, length-prefixed): the token,
 *                   the client address, the session id, the input the client
 *                   pipelined after its login; the client socket itself
 *                   (plain) or nothing (TLS: this stream carries the
 *                   decrypted bytes, relayed by the login process)
 *   mail  -> auth   TOKEN_CHECK; auth -> mail TOKEN_REPLY: the user's
 *                   record (name, uid, gid, home, mail, policy) from the passdb
 *   mail, deliver -> auth   USERDB_LOOKUP (USER): a recipient's record, no
 *                   password involved (LMTP RCPT, popbox-deliver); auth ->
 *                   USERDB_REPLY: STATUS OK with USER, UID, GID, HOME,
 *                   [MAIL], POLICY; FAIL for an unknown user; TEMPFAIL.
 *                   Only peers running as mail_user may ask.
 *
 * The token is what keeps a compromised login process from opening any
 * maildrop it likes: only auth makes tokens, each names the user that
 * authenticated, is good once and for TOKEN_TTL seconds, and the mail
 * process takes the user's record from auth, never from the login side.
 */
#ifndef POPBOX_AUTH_PROTO_H
#define POPBOX_AUTH_PROTO_H

#include <stdint.h>

enum auth_msg_type {
	AUTH_MSG_PASS = 1,
	AUTH_MSG_APOP,
	AUTH_MSG_SASL,
	AUTH_MSG_FORGET,        /* the client left mid-exchange: drop its state */
	AUTH_MSG_REPLY,
	AUTH_MSG_TOKEN_CHECK,
	AUTH_MSG_TOKEN_REPLY,
	AUTH_MSG_HANDOVER,
	AUTH_MSG_USERDB_LOOKUP,
	AUTH_MSG_USERDB_REPLY,
};

enum auth_tag {
	AUTH_TAG_USER = 0,
	AUTH_TAG_PASSWORD,
	AUTH_TAG_TIMESTAMP,     /* APOP: the greeting's <...> */
	AUTH_TAG_DIGEST,        /* APOP: 32 hex digits */
	AUTH_TAG_RIP,           /* the client's address, for the penalty and logs */
	AUTH_TAG_CONN,          /* login's connection number: names an exchange */
	AUTH_TAG_MECH,          /* u32 enum sasl_mech */
	AUTH_TAG_FIRST,         /* present on an exchange's first step */
	AUTH_TAG_DATA,          /* SASL client message (absent: no initial response) */
	AUTH_TAG_STATUS,        /* u32 enum auth_status */
	AUTH_TAG_CHALLENGE,
	AUTH_TAG_TOKEN,
	AUTH_TAG_UID,
	AUTH_TAG_GID,
	AUTH_TAG_HOME,
	AUTH_TAG_MAIL,
	AUTH_TAG_SESSION,       /* the session id, for logs across processes */
	AUTH_TAG_INPUT,         /* HANDOVER: bytes the client sent after login */
	AUTH_TAG_TLS,           /* HANDOVER: present if the client is on TLS */
	AUTH_TAG_POLICY,        /* TOKEN_REPLY, USERDB_REPLY: struct user_policy
				   (user-policy.h), the passwd-file's overrides */
};

enum auth_status {
	AUTH_STATUS_OK = 0,
	AUTH_STATUS_CONTINUE,
	AUTH_STATUS_FAIL,        /* [AUTH] */
	AUTH_STATUS_MALFORMED,   /* the SASL exchange broke the mechanism */
	AUTH_STATUS_TEMPFAIL,    /* [SYS/TEMP] */
};

#define AUTH_TOKEN_LEN 16
/* Seconds a token stays good after the login it stands for. */
#define AUTH_TOKEN_TTL 30
#endif
