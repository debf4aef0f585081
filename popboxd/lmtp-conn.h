/*
 * lmtp-conn.h — one LMTP connection from the MTA, in a mail process: a
 * socket and its timers joined to an lmtp_session (the protocol core),
 * carrying out its actions.
 *
 * Every mail process accepts on the lmtp_listen socket (bound by the
 * master).  A recipient is looked up with the auth process
 * (USERDB_LOOKUP, userdb-lookup.h) over the mail process's own auth line;
 * its delivery is opened (deliver_begin: quota checked, tmp/ file made) on
 * the job pool, so an unknown user or a full mailbox is refused at RCPT.
 * The message goes to the pool in pieces of at most LMTP_CHUNK_MAX bytes,
 * one deliver_write per recipient each, and the socket is not read while a
 * piece is being written: memory per connection is bounded whatever the
 * message size.  Open copies (DELIVER_OPEN_FDS descriptors each) are
 * capped per process at a quarter of the descriptor limit, so a client
 * that opens recipient after recipient cannot starve POP3 of descriptors:
 * past the cap, RCPT gets 451 4.3.0 and the MTA retries those recipients
 * later.  After the final dot each recipient's copy is committed
 * (fsync, rename into new/, fsync new/) in its own job and answered as soon
 * as it is durable, in RCPT order; a copy that failed is answered with its
 * failure.  A connection that ends before the final dot leaves nothing in
 * new/; one that ends during the commits leaves the copies already
 * committed (the one in flight included) and aborts the others.
 *
 * Who may connect.  LMTP has no authentication (RFC 2033), so a TCP peer
 * is served only from a loopback address or from trusted_networks; any
 * other gets one 421 4.7.0 line, is closed and logged (event=lmtp-refused
 * reason=untrusted-address).  421, not 554: RFC 5321 section 3.1 lets a
 * server close at once only after a 421 (a 554 greeting obliges it to
 * stay and answer 503 until QUIT), and a 4xx makes a misconfigured MTA
 * keep the mail queued rather than bounce it.  A unix-socket peer is
 * always served: the socket file's mode says who may connect.
 */
#ifndef POPBOX_LMTP_CONN_H
#define POPBOX_LMTP_CONN_H

#include <stdbool.h>
#include <sys/socket.h>

struct loop;
struct netmask_list;

/* Idle time allowed between two commands or two pieces of a message
   (RFC 5321 section 4.5.3.2.7: a server waits at least 5 minutes). */
#define LMTP_IDLE_TIMEOUT_S 300
/* Open LMTP connections per mail process; more are refused with 421 (an
   MTA opens a few: Postfix's default destination concurrency is 20). */
#define LMTP_CONN_MAX 256

/* Readies the module for loop's process (hostname, size limit); once,
   before the first accept. */
void lmtp_conn_setup(struct loop *loop);
/* Whether the peer at addr may use LMTP: a unix-socket peer, a loopback
   address (127.0.0.0/8, ::1, IPv4-mapped 127.x) or one in trusted.  Pure;
   any other address family is refused. */
bool lmtp_peer_allowed(const struct sockaddr *addr,
		       const struct netmask_list *trusted);
/* Takes over fd, a connection accepted on the LMTP listener. */
void lmtp_conn_accept(struct loop *loop, int fd, const struct sockaddr *addr,
		      socklen_t addrlen);

#endif
