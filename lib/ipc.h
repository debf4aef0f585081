/*
 * ipc.h — messages between popboxd's processes: a tag-length-value codec
 * and sendmsg/recvmsg with descriptor passing.
 *
 * A message is: type (u16), id (u32), then fields: tag (u8), length (u16),
 * bytes; all integers big-endian.  The parser is written for hostile
 * input, since a compromised login process may send anything: it checks
 * every length against what is left, refuses tags >= IPC_TAGS_MAX and a
 * tag given twice, and never copies (fields point into the buffer).
 * Getters then check each field's form (a string has no NUL and fits the
 * caller's buffer; a u32 is exactly 4 bytes).
 *
 * Pure except ipc_send()/ipc_recv(), which wrap one sendmsg()/recvmsg() on
 * a SOCK_SEQPACKET (one message per packet) or a stream socket.
 */
#ifndef POPBOX_IPC_H
#define POPBOX_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Largest message: room for a login's pending input (see conn.c) and the
   longest SASL message, with headroom. */
#define IPC_MSG_MAX (72 * 1024)
/* Tags are 0..IPC_TAGS_MAX-1. */
#define IPC_TAGS_MAX 32
/* Bytes before the first field. */
#define IPC_HEADER_LEN 6

struct ipc_writer {
	uint8_t buf[IPC_MSG_MAX];
	size_t len;
	bool overflow;      /* a field did not fit: the message is unusable */
};

struct ipc_field {
	const uint8_t *data;
	uint16_t len;
	bool present;
};

struct ipc_msg {
	uint16_t type;
	uint32_t id;
	struct ipc_field fields[IPC_TAGS_MAX];
};

void ipc_writer_init(struct ipc_writer *w, uint16_t type, uint32_t id);
/* Appends a field (len <= UINT16_MAX and within IPC_MSG_MAX, else
   overflow is set and nothing is written). */
void ipc_put(struct ipc_writer *w, uint8_t tag, const void *data, size_t len);
void ipc_put_str(struct ipc_writer *w, uint8_t tag, const char *s);
void ipc_put_u32(struct ipc_writer *w, uint8_t tag, uint32_t value);

/* Parses buf[0..len).  Returns 0, or -1 for anything malformed. */
int ipc_parse(const uint8_t *buf, size_t len, struct ipc_msg *msg_r);

/* The field as a NUL-terminated string in out (size bytes, so at most
   size - 1 long); false if absent, containing a NUL, or too long. */
bool ipc_get_str(const struct ipc_msg *msg, uint8_t tag, char *out, size_t size);
/* False if absent or not exactly 4 bytes. */
bool ipc_get_u32(const struct ipc_msg *msg, uint8_t tag, uint32_t *value_r);
/* False if absent or not exactly len bytes. */
bool ipc_get_fixed(const struct ipc_msg *msg, uint8_t tag, void *out, size_t len);

/*
 * Sends len bytes in one sendmsg(); with pass_fd >= 0 the descriptor goes
 * along (SCM_RIGHTS).  Returns what sendmsg() returns (errno as set).
 */
ssize_t ipc_send(int sock, const void *buf, size_t len, int pass_fd);
/*
 * Receives into buf with one recvmsg().  A descriptor that came along is
 * returned in *fd_r (close-on-exec), else -1; any extra descriptors are
 * closed.  A truncated message or control data is an error (-1, errno
 * EMSGSIZE, nothing returned in *fd_r).
 */
ssize_t ipc_recv(int sock, void *buf, size_t size, int *fd_r);

/* A close-on-exec AF_UNIX socket of type (SOCK_STREAM, SOCK_SEQPACKET)
   connected to the abstract name (given without its leading NUL), or -1. */
int ipc_connect_abstract(const char *name, int type);
/* Binds a listening one; -1 with errno on failure. */
int ipc_listen_abstract(const char *name, int type);

#endif
