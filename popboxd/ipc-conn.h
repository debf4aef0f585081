/*
 * ipc-conn.h — one SOCK_SEQPACKET connection between popboxd processes,
 * driven by a libevent loop: each received packet is handed to a callback
 * whole; sends never block (packets wait in a bounded queue while the
 * peer is slow).  Used by the auth process and its clients.
 */
#ifndef POPBOX_IPC_CONN_H
#define POPBOX_IPC_CONN_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct ipc_conn;

/* A packet arrived (buf is valid during the call only). */
typedef void ipc_conn_packet_fn(struct ipc_conn *conn, const uint8_t *buf,
				size_t len, void *context);
/* The peer is gone or broke the rules; the owner frees the conn (not
   from inside this call is fine too: nothing more is delivered). */
typedef void ipc_conn_closed_fn(struct ipc_conn *conn, void *context);

/* Packets queued before the connection is given up as stuck. */
#define IPC_CONN_QUEUE_MAX 65536

/* Takes over fd (made non-blocking).  NULL when out of memory (fd closed). */
struct ipc_conn *ipc_conn_new(struct event_base *base, int fd,
			      ipc_conn_packet_fn *on_packet,
			      ipc_conn_closed_fn *on_closed, void *context);
/* Queues one packet.  -1 if the connection is closed or its queue full. */
int ipc_conn_send(struct ipc_conn *conn, const void *buf, size_t len);
int ipc_conn_fd(const struct ipc_conn *conn);
/* Closes and frees; safe from inside a callback of this conn. */
void ipc_conn_free(struct ipc_conn *conn);

#endif
