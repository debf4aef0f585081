/*
 * net.h — popbox-fetch's connection to a POP3 server: blocking calls whose
 * every wait is bounded, over plain TCP or TLS (OpenSSL 3), with implicit
 * TLS (pop3s, port 995) and the in-place upgrade after STLS (RFC 2595).
 *
 * The protocol (fetch/pop3-client) is sans I/O; this module only moves
 * bytes.  net_read() hands over whatever has arrived (at least one byte)
 * into the caller's buffer, so the caller owns all buffered input; that is
 * why net_start_tls() must be told how many received bytes the caller has
 * not consumed yet (see there).
 *
 * Invariants:
 *   - Every wait (connect, read, write, handshake) is a poll() bounded by a
 *     timeout; the whole handshake is bounded too, so a server dripping
 *     bytes cannot hold a connection open without limit.  Name resolution
 *     (getaddrinfo) is bounded by the resolver's own timeouts only.
 *   - TLS is 1.2 or newer.  The server's certificate is verified, always:
 *     against the system CA store (or a CA file), with the host name (or
 *     IP address) checked; or, when a pin is given, by its SHA-256
 *     fingerprint alone (see struct net_tls_options).  There is no
 *     "don't verify" switch.
 *   - A failed TLS start leaves the connection unusable (every later read
 *     or write fails): there is no fallback to plain text, ever.
 *   - Bytes the server sends before the TLS handshake starts (after the
 *     +OK to STLS, or a greeting on a pop3s port) make net_start_tls()
 *     fail (NET_ERROR_INJECTION): they are never read as protocol data,
 *     before or after the handshake (the STARTTLS command-injection class,
 *     CVE-2011-0411).
 *   - Error texts are in a thread-local buffer: valid until the next call
 *     into this module from the same thread.  They may name the host and
 *     certificate details, never data the server sent over the connection.
 *
 * SIGPIPE: a write to a connection the server has closed raises SIGPIPE in
 * OpenSSL's socket writes (plain writes use MSG_NOSIGNAL).  The program
 * must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)); the module does not
 * change signal dispositions itself.
 */
#ifndef POPBOX_NET_H
#define POPBOX_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Defaults for a 0 in struct net_options. */
#define NET_CONNECT_TIMEOUT_DEFAULT_MS 30000   /* per address tried */
#define NET_IO_TIMEOUT_DEFAULT_MS 60000        /* per wait for the server */
/* Addresses of one host tried at most (each may cost a connect timeout). */
#define NET_ADDRESSES_MAX 16

/* SHA-256 of the certificate's DER form. */
#define NET_FINGERPRINT_LEN 32
/* "AB:CD:...:EF" and a NUL: 32 pairs of hex digits, 31 colons. */
#define NET_FINGERPRINT_TEXT_LEN (NET_FINGERPRINT_LEN * 3)

/* What kind of failure the last error of this thread was: lets the program
   choose an exit code and decide whether a retry can help. */
enum net_error_kind {
	NET_ERROR_NONE,
	NET_ERROR_USAGE,       /* bad argument, out of memory, unreadable CA
				  file: a local problem */
	NET_ERROR_RESOLVE,     /* the host name did not resolve */
	NET_ERROR_CONNECT,     /* no address accepted a connection */
	NET_ERROR_TIMEOUT,     /* a wait reached its bound */
	NET_ERROR_IO,          /* the connection broke (reset, refused...) */
	NET_ERROR_TLS,         /* TLS handshake or record-layer failure */
	NET_ERROR_TLS_VERIFY,  /* the certificate was refused: retrying with
				  the same settings will not help */
	NET_ERROR_INJECTION,   /* bytes before the TLS handshake (see above) */
};

struct net_options {
	unsigned int connect_timeout_ms;  /* 0: the default */
	unsigned int io_timeout_ms;       /* 0: the default; also bounds the
					     whole TLS handshake */
};

struct net_tls_options {
	/*
	 * The name the certificate must carry (DNS name, or an IPv4/IPv6
	 * address in text form, checked against the IP address entries);
	 * NULL means the host given to net_connect().  A DNS name is also
	 * sent as SNI; an address is not (RFC 6066 section 3).
	 */
	const char *verify_name;
	/* PEM file of the CAs to trust instead of the system store (NULL:
	   the system store, SSL_CTX_set_default_verify_paths()). */
	const char *ca_file;
	/*
	 * Pinning, like mpop's --tls-fingerprint: when has_pin, the server's
	 * certificate is accepted if and only if the SHA-256 of its DER form
	 * equals pin.  The pin REPLACES the CA trust: the certificate's
	 * issuer, names and dates are not checked (a self-signed certificate
	 * works); ca_file is then unused.  Any other certificate is refused,
	 * even one a CA vouches for.
	 */
	bool has_pin;
	uint8_t pin[NET_FINGERPRINT_LEN];
};

struct net_conn;

/*
 * Resolves host (a name or a numeric IPv4/IPv6 address without brackets)
 * and port (a number or a service name), then tries each address in the
 * resolver's order (at most NET_ADDRESSES_MAX), each bounded by the
 * connect timeout, until one accepts.  opt may be NULL (defaults).
 * Returns 0 and a plain connection in *conn_r, or -1 with *error_r (which
 * names every address that failed, up to its buffer's size).
 */
int net_connect(const char *host, const char *port,
		const struct net_options *opt, struct net_conn **conn_r,
		const char **error_r);

/*
 * Runs the TLS handshake on a plain connection and verifies the server as
 * tls says.  For implicit TLS call it right after net_connect(); after
 * STLS, once the "+OK" line has been read.
 *
 * unread_len is how many bytes the caller has received (net_read()) and
 * not consumed: after STLS, what followed the +OK line in its buffer (for
 * the fetch driver: the pop3-client core's unparsed input); 0 for implicit
 * TLS.  Anything but 0 is refused (NET_ERROR_INJECTION): those bytes came
 * in the clear after +OK and a man in the middle may have put them there.
 * Bytes already waiting on the socket are refused the same way (checked
 * before the ClientHello, which must come first in TLS); bytes that arrive
 * later break the handshake.  Either way the caller must discard its
 * buffer: nothing received before the handshake is ever valid.
 *
 * Returns 0 (the connection is now TLS), or -1 with *error_r: an error
 * text for each failure (expired, not yet valid, wrong host name, unknown
 * CA, pin mismatch, handshake failure, timeout).  After -1 the connection
 * is dead: close it; never go on in plain text.
 */
int net_start_tls(struct net_conn *conn, const struct net_tls_options *tls,
		  size_t unread_len, const char **error_r);

/*
 * Waits (bounded by the I/O timeout) until the server has sent something,
 * then reads what is available, at most size bytes (size >= 1), into buf.
 * Returns 0 and *len_r >= 1 bytes read, or 0 and *len_r == 0 at the end of
 * the stream (a plain FIN; over TLS, the server's close_notify), or -1
 * with *error_r (timeout, reset, TLS error, and over TLS a close without
 * close_notify, which may be a truncation).
 */
int net_read(struct net_conn *conn, void *buf, size_t size, size_t *len_r,
	     const char **error_r);

/*
 * Writes all of buf[0..len), each wait for buffer space bounded by the I/O
 * timeout.  Returns 0, or -1 with *error_r (then an unknown part of buf
 * may have been sent: the connection must be closed).
 */
int net_write_all(struct net_conn *conn, const void *buf, size_t len,
		  const char **error_r);

/* Sends a TLS close_notify (without waiting for the server's), closes
   the socket, frees, sets *conn to NULL.  NULL is fine. */
void net_close(struct net_conn **conn);

/*
 * Stops the connection from another thread (a signal handler's thread):
 * shutdown(2) both ways, so that a net_read() or net_write_all() blocked
 * in the owning thread fails at once instead of waiting for its timeout.
 * Touches nothing but the socket; the owner still calls net_close().  The
 * caller makes sure conn is not closed meanwhile (a lock around both).
 */
void net_interrupt(struct net_conn *conn);

/*
 * True if more input has arrived: decrypted bytes are buffered (TLS), or
 * the socket is readable (data -- over TLS perhaps the start of a record
 * whose rest is on its way --, end of stream or an error).  Never waits.  The fetch driver uses it to commit the messages
 * of everything that has arrived together, rather than per read.
 */
bool net_input_ready(struct net_conn *conn);

/* True once net_start_tls() has succeeded. */
bool net_conn_is_tls(const struct net_conn *conn);

/* The address connected to, as "127.0.0.1:995" or "[::1]:995". */
const char *net_conn_peer(const struct net_conn *conn);

/* The protocol and cipher, as "TLSv1.3 TLS_AES_256_GCM_SHA384"; "plain"
   before TLS.  Valid while the connection is open. */
const char *net_conn_tls_summary(const struct net_conn *conn, char *buf,
				 size_t size);

/* The SHA-256 fingerprint of the server's certificate (TLS only).
   Returns 0, or -1 before TLS. */
int net_conn_peer_fingerprint(const struct net_conn *conn,
			      uint8_t fp_r[NET_FINGERPRINT_LEN]);

/* The kind of this thread's last failure (NET_ERROR_NONE after a success
   of net_connect() or net_start_tls()). */
enum net_error_kind net_last_error_kind(void);

/*
 * Parses a fingerprint as users write it: 64 hex digits, either case,
 * either bare or in pairs separated by ':' (as `openssl x509 -fingerprint
 * -sha256` prints it, with or without its "SHA256 Fingerprint=" prefix).
 * Returns 0 and the 32 bytes in fp_r, or -1.  Pure.
 */
int net_fingerprint_parse(const char *text, uint8_t fp_r[NET_FINGERPRINT_LEN]);

/* Writes fp as "AB:CD:..." (upper case, NUL-terminated) into text. */
void net_fingerprint_format(const uint8_t fp[NET_FINGERPRINT_LEN],
			    char text[NET_FINGERPRINT_TEXT_LEN]);

#endif
