/*
 * net.c — popbox-fetch's connection to a POP3 server (see net.h).
 *
 * The socket is non-blocking from the start; "blocking" calls loop over
 * the I/O call and a poll() bounded by a deadline, for plain and TLS
 * alike (OpenSSL's WANT_READ / WANT_WRITE tell which way to wait).
 */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Room for an error text: a connect failure names each address tried. */
#define NET_ERROR_TEXT_MAX 1024
/* "[" IPv6 "]:" port and a NUL. */
#define NET_PEER_MAX (INET6_ADDRSTRLEN + 9)

struct net_conn {
	int fd;
	unsigned int io_timeout_ms;
	char *host;                   /* as given to net_connect() */
	char peer[NET_PEER_MAX];
	SSL_CTX *ctx;
	SSL *ssl;
	bool tls;                     /* handshake done and verified */
	bool dead;                    /* a failure: no more I/O */
	/* Pinning, for the verify callback. */
	bool has_pin;
	bool pin_mismatch;            /* the callback saw another leaf */
	uint8_t pin[NET_FINGERPRINT_LEN];
	uint8_t seen_fp[NET_FINGERPRINT_LEN];
};

static _Thread_local char net_errbuf[NET_ERROR_TEXT_MAX];
static _Thread_local enum net_error_kind net_errkind;

/* Records a failure of kind and returns its text (thread-local). */
static const char *net_fail(enum net_error_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static const char *net_fail(enum net_error_kind kind, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(net_errbuf, sizeof(net_errbuf), fmt, args);
	va_end(args);
	net_errkind = kind;
	return net_errbuf;
}

enum net_error_kind net_last_error_kind(void)
{
	return net_errkind;
}

/* The first queued OpenSSL error as text (the queue is cleared), or
   fallback when the queue is empty. */
static const char *net_openssl_error(char *buf, size_t size,
				     const char *fallback)
{
	unsigned long code = ERR_get_error();

	if (code == 0)
		snprintf(buf, size, "%s", fallback);
	else
		ERR_error_string_n(code, buf, size);
	ERR_clear_error();
	return buf;
}

/* ---- bounded waits ---- */

static int64_t net_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline (net_now_ms() clock)
   passes.  Returns 1 when ready (or in error: the next I/O call tells),
   0 at the deadline, -1 if poll() fails (errno). */
static int net_wait(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - net_now_ms();
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, left <= 0 ? 0 : left > INT_MAX ? INT_MAX :
						     (int)left);

		if (n > 0)
			return 1;
		if (n == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

/* ---- connecting ---- */

static void net_format_addr(const struct sockaddr *sa, socklen_t len,
			    char out[NET_PEER_MAX])
{
	char host[INET6_ADDRSTRLEN], serv[8];

	if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(out, NET_PEER_MAX, "?");
		return;
	}
	snprintf(out, NET_PEER_MAX, sa->sa_family == AF_INET6 ? "[%s]:%s" :
			"%s:%s", host, serv);
}

/* Connects a new non-blocking socket to ai within timeout_ms.  Returns the
   socket, or -1 with *errno_r (ETIMEDOUT at the bound). */
static int net_connect_one(const struct addrinfo *ai, unsigned int timeout_ms,
			   int *errno_r)
{
	int fd = socket(ai->ai_family,
			ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);
	int err = 0, one = 1;
	socklen_t err_len = sizeof(err);

	if (fd < 0) {
		*errno_r = errno;
		return -1;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		int w;

		if (errno != EINPROGRESS && errno != EINTR)
			goto fail;
		w = net_wait(fd, POLLOUT, net_now_ms() + timeout_ms);
		if (w == 0)
			errno = ETIMEDOUT;
		if (w <= 0)
			goto fail;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) < 0)
			goto fail;
		if (err != 0) {
			errno = err;
			goto fail;
		}
	}
	/* Commands are small and often wait for an answer: no Nagle delay. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
fail:
	*errno_r = errno;
	close(fd);
	return -1;
}

static struct net_conn *net_conn_new(int fd, const char *host,
				     const struct addrinfo *ai,
				     unsigned int io_timeout_ms)
{
	struct net_conn *conn = calloc(1, sizeof(*conn));

	if (conn == NULL || (conn->host = strdup(host)) == NULL) {
		free(conn);
		return NULL;
	}
	conn->fd = fd;
	conn->io_timeout_ms = io_timeout_ms;
	net_format_addr(ai->ai_addr, ai->ai_addrlen, conn->peer);
	return conn;
}

/* Appends "addr: reason; " to the list of failed attempts. */
static void net_note_attempt(char *tried, size_t size,
			     const struct addrinfo *ai, int err)
{
	char addr[NET_PEER_MAX];
	size_t used = strlen(tried);

	if (used + 1 >= size)
		return;
	net_format_addr(ai->ai_addr, ai->ai_addrlen, addr);
	snprintf(tried + used, size - used, "%s%s: %s", used > 0 ? "; " : "",
		 addr, strerror(err));
}

int net_connect(const char *host, const char *port,
		const struct net_options *opt, struct net_conn **conn_r,
		const char **error_r)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	unsigned int connect_ms = opt != NULL && opt->connect_timeout_ms > 0 ?
				  opt->connect_timeout_ms :
				  NET_CONNECT_TIMEOUT_DEFAULT_MS;
	unsigned int io_ms = opt != NULL && opt->io_timeout_ms > 0 ?
			     opt->io_timeout_ms : NET_IO_TIMEOUT_DEFAULT_MS;
	char tried[NET_ERROR_TEXT_MAX - 128] = "";
	bool all_timed_out = true;
	int rc, n = 0;

	*conn_r = NULL;
	if (host == NULL || port == NULL || host[0] == '\0' || port[0] == '\0') {
		*error_r = net_fail(NET_ERROR_USAGE, "no host or port to connect to");
		return -1;
	}
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		*error_r = net_fail(NET_ERROR_RESOLVE, "cannot resolve %s port %s: %s",
				    host, port, rc == EAI_SYSTEM ? strerror(errno) :
				    gai_strerror(rc));
		return -1;
	}
	for (const struct addrinfo *ai = res; ai != NULL && n < NET_ADDRESSES_MAX;
	     ai = ai->ai_next, n++) {
		int err = 0, fd = net_connect_one(ai, connect_ms, &err);

		if (fd < 0) {
			all_timed_out = all_timed_out && err == ETIMEDOUT;
			net_note_attempt(tried, sizeof(tried), ai, err);
			continue;
		}
		*conn_r = net_conn_new(fd, host, ai, io_ms);
		freeaddrinfo(res);
		if (*conn_r == NULL) {
			close(fd);
			*error_r = net_fail(NET_ERROR_USAGE, "out of memory");
			return -1;
		}
		net_errkind = NET_ERROR_NONE;
		return 0;
	}
	freeaddrinfo(res);
	*error_r = net_fail(all_timed_out && n > 0 ? NET_ERROR_TIMEOUT :
			    NET_ERROR_CONNECT, "cannot connect to %s port %s: %s",
			    host, port, n > 0 ? tried : "no address");
	return -1;
}

/* ---- TLS: set-up and verification ---- */

static bool net_is_ip_literal(const char *name)
{
	struct in6_addr addr;

	return inet_pton(AF_INET, name, &addr) == 1 ||
	       inet_pton(AF_INET6, name, &addr) == 1;
}

/*
 * Verify callback when a pin is set: only the leaf (depth 0) matters, and
 * it passes if and only if its fingerprint is the pin, whatever errors the
 * chain had (the pin replaces the CA trust).  Certificates above the leaf
 * pass: they are irrelevant once the leaf is pinned.
 */
static int net_pin_verify(int preverify_ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(
		store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct net_conn *conn = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
	X509 *cert = X509_STORE_CTX_get_current_cert(store);
	unsigned int len = 0;

	(void)preverify_ok;
	if (conn == NULL)
		return 0;
	if (X509_STORE_CTX_get_error_depth(store) != 0)
		return 1;
	if (cert != NULL &&
	    X509_digest(cert, EVP_sha256(), conn->seen_fp, &len) == 1 &&
	    len == NET_FINGERPRINT_LEN &&
	    CRYPTO_memcmp(conn->seen_fp, conn->pin, NET_FINGERPRINT_LEN) == 0)
		return 1;
	conn->pin_mismatch = true;
	X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

/* Trust settings on a new context: the pin, a CA file or the system
   store. */
static int net_ctx_trust(SSL_CTX *ctx, const struct net_tls_options *tls,
			 const char **error_r)
{
	char detail[256];

	if (tls->has_pin) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, net_pin_verify);
		return 0;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (tls->ca_file != NULL) {
		if (SSL_CTX_load_verify_file(ctx, tls->ca_file) != 1) {
			*error_r = net_fail(NET_ERROR_USAGE,
					    "cannot load the CA file %s: %s",
					    tls->ca_file,
					    net_openssl_error(detail, sizeof(detail),
							      "no certificate"));
			return -1;
		}
		return 0;
	}
	if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		*error_r = net_fail(NET_ERROR_USAGE,
				    "cannot use the system CA store: %s",
				    net_openssl_error(detail, sizeof(detail),
						      "unknown error"));
		return -1;
	}
	return 0;
}

/* The SSL for conn: TLS 1.2 floor, trust, SNI and the name to verify. */
static int net_tls_setup(struct net_conn *conn,
			 const struct net_tls_options *tls, const char *name,
			 const char **error_r)
{
	bool ip = net_is_ip_literal(name);
	char detail[256];

	conn->ctx = SSL_CTX_new(TLS_client_method());
	if (conn->ctx == NULL)
		goto openssl_failed;
	SSL_CTX_set_min_proto_version(conn->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(conn->ctx, SSL_OP_NO_COMPRESSION |
				       SSL_OP_NO_RENEGOTIATION);
	/* Writes may return part of the buffer, so a slow reader that still
	   makes progress restarts the write timeout. */
	SSL_CTX_set_mode(conn->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
	if (net_ctx_trust(conn->ctx, tls, error_r) < 0)
		return -1;
	conn->ssl = SSL_new(conn->ctx);
	if (conn->ssl == NULL || SSL_set_fd(conn->ssl, conn->fd) != 1)
		goto openssl_failed;
	SSL_set_app_data(conn->ssl, conn);
	if (!ip && SSL_set_tlsext_host_name(conn->ssl, name) != 1)
		goto bad_name;
	if (tls->has_pin)
		return 0;
	if (ip) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(conn->ssl),
						  name) != 1)
			goto bad_name;
	} else {
		SSL_set_hostflags(conn->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(conn->ssl, name) != 1)
			goto bad_name;
	}
	return 0;
bad_name:
	ERR_clear_error();
	*error_r = net_fail(NET_ERROR_USAGE,
			    "cannot verify a certificate for the name '%s'", name);
	return -1;
openssl_failed:
	*error_r = net_fail(NET_ERROR_USAGE, "TLS set-up failed: %s",
			    net_openssl_error(detail, sizeof(detail),
					      "out of memory"));
	return -1;
}

/* A certificate time as "2025-01-31 12:00:00 UTC". */
static void net_format_time(const ASN1_TIME *t, char *buf, size_t size)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, size, "an unreadable date");
}

/* The fingerprint of the server's certificate as text, or "unknown". */
static void net_peer_fp_text(const struct net_conn *conn,
			     char text[NET_FINGERPRINT_TEXT_LEN])
{
	uint8_t fp[NET_FINGERPRINT_LEN];

	if (net_conn_peer_fingerprint(conn, fp) == 0)
		net_fingerprint_format(fp, text);
	else
		snprintf(text, NET_FINGERPRINT_TEXT_LEN, "unknown");
}

/* The error text for a certificate the chain verification refused. */
static const char *net_verify_error(const struct net_conn *conn, long code,
				    const char *name)
{
	X509 *cert = SSL_get0_peer_certificate(conn->ssl);
	char when[64], fp[NET_FINGERPRINT_TEXT_LEN];

	switch (code) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		net_format_time(cert != NULL ? X509_get0_notAfter(cert) : NULL,
				when, sizeof(when));
		return net_fail(NET_ERROR_TLS_VERIFY,
				"the server's certificate has expired "
				"(valid until %s)", when);
	case X509_V_ERR_CERT_NOT_YET_VALID:
		net_format_time(cert != NULL ? X509_get0_notBefore(cert) : NULL,
				when, sizeof(when));
		return net_fail(NET_ERROR_TLS_VERIFY,
				"the server's certificate is not valid yet "
				"(valid from %s)", when);
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		return net_fail(NET_ERROR_TLS_VERIFY,
				"wrong host: the server's certificate is not "
				"valid for %s", name);
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		net_peer_fp_text(conn, fp);
		return net_fail(NET_ERROR_TLS_VERIFY,
				"the server's certificate is not trusted: "
				"unknown CA (%s); its SHA-256 fingerprint is %s",
				X509_verify_cert_error_string(code), fp);
	default:
		return net_fail(NET_ERROR_TLS_VERIFY,
				"the server's certificate was refused: %s",
				X509_verify_cert_error_string(code));
	}
}

/* The error text for a failed SSL_connect() (ssl_err from
   SSL_get_error()). */
static const char *net_handshake_error(struct net_conn *conn, int ssl_err,
				       const char *name)
{
	int saved_errno = errno;
	long verify = SSL_get_verify_result(conn->ssl);
	char detail[256], fp[NET_FINGERPRINT_TEXT_LEN];

	if (conn->pin_mismatch) {
		ERR_clear_error();
		net_fingerprint_format(conn->seen_fp, fp);
		return net_fail(NET_ERROR_TLS_VERIFY,
				"pin mismatch: the server's certificate has the "
				"SHA-256 fingerprint %s, not the pinned one", fp);
	}
	if (verify != X509_V_OK) {
		ERR_clear_error();
		return net_verify_error(conn, verify, name);
	}
	if (ssl_err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
		return net_fail(NET_ERROR_TLS, "TLS handshake with %s failed: %s",
				name, saved_errno == 0 ?
				"the server closed the connection" :
				strerror(saved_errno));
	return net_fail(NET_ERROR_TLS, "TLS handshake with %s failed: %s", name,
			net_openssl_error(detail, sizeof(detail),
					  "protocol error"));
}

/* SSL_connect() until done, the whole bounded by the I/O timeout. */
static int net_handshake(struct net_conn *conn, const char *name,
			 const char **error_r)
{
	int64_t deadline = net_now_ms() + conn->io_timeout_ms;

	for (;;) {
		int r, err, w;

		ERR_clear_error();
		errno = 0;
		r = SSL_connect(conn->ssl);
		if (r == 1)
			return 0;
		err = SSL_get_error(conn->ssl, r);
		if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
			*error_r = net_handshake_error(conn, err, name);
			return -1;
		}
		w = net_wait(conn->fd, err == SSL_ERROR_WANT_READ ? POLLIN :
				       POLLOUT, deadline);
		if (w == 0) {
			*error_r = net_fail(NET_ERROR_TIMEOUT,
					    "TLS handshake with %s timed out "
					    "after %u ms", name,
					    conn->io_timeout_ms);
			return -1;
		}
		if (w < 0) {
			*error_r = net_fail(NET_ERROR_IO, "poll: %s",
					    strerror(errno));
			return -1;
		}
	}
}

/* After the handshake: the certificate really is the pinned one, or the
   chain really verified.  (The handshake already enforces both; this is
   the belt to those braces.) */
static int net_check_peer(struct net_conn *conn, bool pinned,
			  const char *name, const char **error_r)
{
	uint8_t fp[NET_FINGERPRINT_LEN];
	long verify;

	if (SSL_get0_peer_certificate(conn->ssl) == NULL) {
		*error_r = net_fail(NET_ERROR_TLS_VERIFY,
				    "the server sent no certificate");
		return -1;
	}
	if (pinned) {
		if (net_conn_peer_fingerprint(conn, fp) == 0 &&
		    CRYPTO_memcmp(fp, conn->pin, NET_FINGERPRINT_LEN) == 0)
			return 0;
		memcpy(conn->seen_fp, fp, sizeof(fp));
		conn->pin_mismatch = true;
		*error_r = net_handshake_error(conn, SSL_ERROR_SSL, name);
		return -1;
	}
	verify = SSL_get_verify_result(conn->ssl);
	if (verify != X509_V_OK) {
		*error_r = net_verify_error(conn, verify, name);
		return -1;
	}
	return 0;
}

/* Nothing may wait on the socket before our ClientHello: in TLS the
   client speaks first. */
static int net_check_quiet(struct net_conn *conn, const char **error_r)
{
	char byte;
	ssize_t n = recv(conn->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n > 0) {
		*error_r = net_fail(NET_ERROR_INJECTION,
				    "the server sent data before the TLS "
				    "handshake: refused (a man in the middle may "
				    "have injected it; CVE-2011-0411 class)");
		return -1;
	}
	if (n == 0) {
		*error_r = net_fail(NET_ERROR_IO, "the server closed the "
				    "connection before the TLS handshake");
		return -1;
	}
	if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		*error_r = net_fail(NET_ERROR_IO, "%s", strerror(errno));
		return -1;
	}
	return 0;
}

int net_start_tls(struct net_conn *conn, const struct net_tls_options *tls,
		  size_t unread_len, const char **error_r)
{
	const char *name;

	if (conn == NULL || tls == NULL || conn->dead || conn->ssl != NULL) {
		*error_r = net_fail(NET_ERROR_USAGE, conn != NULL && conn->dead ?
				    "the connection failed earlier" :
				    "TLS cannot be started on this connection");
		return -1;
	}
	name = tls->verify_name != NULL ? tls->verify_name : conn->host;
	conn->has_pin = tls->has_pin;
	memcpy(conn->pin, tls->pin, sizeof(conn->pin));
	conn->dead = true;   /* until the handshake succeeds */
	if (unread_len > 0) {
		*error_r = net_fail(NET_ERROR_INJECTION,
				    "the server sent %zu byte(s) after its +OK, "
				    "before the TLS handshake: refused (a man in "
				    "the middle may have injected them; "
				    "CVE-2011-0411 class)", unread_len);
		return -1;
	}
	if (net_check_quiet(conn, error_r) < 0 ||
	    net_tls_setup(conn, tls, name, error_r) < 0 ||
	    net_handshake(conn, name, error_r) < 0 ||
	    net_check_peer(conn, tls->has_pin, name, error_r) < 0)
		return -1;
	conn->dead = false;
	conn->tls = true;
	net_errkind = NET_ERROR_NONE;
	return 0;
}

/* ---- reading and writing ---- */

/* Why conn can do no I/O, or NULL if it can. */
static const char *net_unusable(const struct net_conn *conn)
{
	if (conn == NULL)
		return net_fail(NET_ERROR_USAGE, "no connection");
	if (conn->dead)
		return net_fail(NET_ERROR_IO, "the connection failed earlier");
	return NULL;
}

static const char *net_timeout_error(const struct net_conn *conn,
				     const char *what)
{
	return net_fail(NET_ERROR_TIMEOUT,
			"timed out after %u ms %s the server %s",
			conn->io_timeout_ms, what, conn->peer);
}

static int net_read_plain(struct net_conn *conn, void *buf, size_t size,
			  size_t *len_r, const char **error_r)
{
	int64_t deadline = net_now_ms() + conn->io_timeout_ms;

	for (;;) {
		ssize_t n = recv(conn->fd, buf, size, 0);
		int w;

		if (n >= 0) {
			*len_r = (size_t)n;
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			break;
		w = net_wait(conn->fd, POLLIN, deadline);
		if (w == 0) {
			*error_r = net_timeout_error(conn, "waiting for");
			return -1;
		}
		if (w < 0)
			break;
	}
	*error_r = net_fail(NET_ERROR_IO, "reading from %s: %s", conn->peer,
			    strerror(errno));
	return -1;
}

/*
 * What to do after a TLS read or write returned ssl_err: 1 when the wait
 * it asked for is over (call again), 0 for a clean close_notify (reads),
 * -1 with *error_r on a failure.
 */
static int net_tls_retry(struct net_conn *conn, int ssl_err, int64_t deadline,
			 const char *what, const char **error_r)
{
	char detail[256];
	int w;

	switch (ssl_err) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		w = net_wait(conn->fd, ssl_err == SSL_ERROR_WANT_READ ? POLLIN :
				       POLLOUT, deadline);
		if (w > 0)
			return 1;
		*error_r = w == 0 ? net_timeout_error(conn, what) :
			   net_fail(NET_ERROR_IO, "poll: %s", strerror(errno));
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			*error_r = net_fail(NET_ERROR_IO, "connection to %s: %s",
					    conn->peer, errno == 0 ?
					    "closed without TLS close_notify" :
					    strerror(errno));
			return -1;
		}
		break;
	default:
		break;
	}
	if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
		ERR_clear_error();
		*error_r = net_fail(NET_ERROR_IO, "the server %s closed the "
				    "connection without TLS close_notify "
				    "(the data may be truncated)", conn->peer);
		return -1;
	}
	*error_r = net_fail(NET_ERROR_TLS, "TLS error with %s: %s", conn->peer,
			    net_openssl_error(detail, sizeof(detail),
					      "protocol error"));
	return -1;
}

static int net_read_tls(struct net_conn *conn, void *buf, size_t size,
			size_t *len_r, const char **error_r)
{
	int64_t deadline = net_now_ms() + conn->io_timeout_ms;

	for (;;) {
		size_t n = 0;
		int r;

		ERR_clear_error();
		errno = 0;
		if (SSL_read_ex(conn->ssl, buf, size, &n) == 1) {
			*len_r = n;
			return 0;
		}
		r = net_tls_retry(conn, SSL_get_error(conn->ssl, 0), deadline,
				  "waiting for", error_r);
		if (r == 0) {
			*len_r = 0;
			return 0;
		}
		if (r < 0)
			return -1;
	}
}

int net_read(struct net_conn *conn, void *buf, size_t size, size_t *len_r,
	     const char **error_r)
{
	int r;

	*len_r = 0;
	if ((*error_r = net_unusable(conn)) != NULL)
		return -1;
	if (size == 0) {
		*error_r = net_fail(NET_ERROR_USAGE, "read into an empty buffer");
		return -1;
	}
	r = conn->tls ? net_read_tls(conn, buf, size, len_r, error_r) :
		       net_read_plain(conn, buf, size, len_r, error_r);
	if (r < 0)
		conn->dead = true;
	return r;
}

bool net_input_ready(struct net_conn *conn)
{
	struct pollfd pfd = { .fd = conn->fd, .events = POLLIN };

	if (conn->dead)
		return false;
	if (conn->tls && SSL_pending(conn->ssl) > 0)
		return true;
	return poll(&pfd, 1, 0) > 0;
}

/* One write call: how many bytes went out (0 after a wait or an
   interruption: call again), or -1 with *error_r. */
static ssize_t net_write_some(struct net_conn *conn, const uint8_t *p,
			      size_t len, int64_t deadline,
			      const char **error_r)
{
	if (conn->tls) {
		size_t n = 0;
		int r;

		ERR_clear_error();
		errno = 0;
		if (SSL_write_ex(conn->ssl, p, len, &n) == 1)
			return (ssize_t)n;
		r = net_tls_retry(conn, SSL_get_error(conn->ssl, 0), deadline,
				  "writing to", error_r);
		if (r == 0)
			*error_r = net_fail(NET_ERROR_IO, "the server %s closed "
					    "the TLS connection", conn->peer);
		return r > 0 ? 0 : -1;
	}
	ssize_t n = send(conn->fd, p, len, MSG_NOSIGNAL);
	if (n >= 0)
		return n;
	if (errno == EINTR)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		int w = net_wait(conn->fd, POLLOUT, deadline);
		if (w > 0)
			return 0;
		*error_r = w == 0 ? net_timeout_error(conn, "writing to") :
			   net_fail(NET_ERROR_IO, "poll: %s", strerror(errno));
		return -1;
	}
	*error_r = net_fail(NET_ERROR_IO, "writing to %s: %s", conn->peer,
			    strerror(errno));
	return -1;
}

int net_write_all(struct net_conn *conn, const void *buf, size_t len,
		  const char **error_r)
{
	const uint8_t *p = buf;
	int64_t deadline;

	if ((*error_r = net_unusable(conn)) != NULL)
		return -1;
	deadline = net_now_ms() + conn->io_timeout_ms;
	while (len > 0) {
		ssize_t n = net_write_some(conn, p, len, deadline, error_r);

		if (n < 0) {
			conn->dead = true;
			return -1;
		}
		if (n > 0) {
			/* Progress: the next wait gets the full timeout. */
			p += n;
			len -= (size_t)n;
			deadline = net_now_ms() + conn->io_timeout_ms;
		}
	}
	return 0;
}

void net_close(struct net_conn **connp)
{
	struct net_conn *conn = *connp;

	if (conn == NULL)
		return;
	*connp = NULL;
	if (conn->ssl != NULL) {
		/* One non-blocking attempt: the server's answer is not
		   awaited (POP3 ends with QUIT's reply). */
		if (conn->tls && !conn->dead)
			(void)SSL_shutdown(conn->ssl);
		SSL_free(conn->ssl);
	}
	SSL_CTX_free(conn->ctx);
	ERR_clear_error();
	close(conn->fd);
	free(conn->host);
	free(conn);
}

void net_interrupt(struct net_conn *conn)
{
	/* fd is set once at creation: reading it here races with nothing. */
	(void)shutdown(conn->fd, SHUT_RDWR);
}

/* ---- queries ---- */

bool net_conn_is_tls(const struct net_conn *conn)
{
	return conn->tls;
}

const char *net_conn_peer(const struct net_conn *conn)
{
	return conn->peer;
}

const char *net_conn_tls_summary(const struct net_conn *conn, char *buf,
				 size_t size)
{
	if (!conn->tls)
		snprintf(buf, size, "plain");
	else
		snprintf(buf, size, "%s %s", SSL_get_version(conn->ssl),
			 SSL_get_cipher_name(conn->ssl));
	return buf;
}

int net_conn_peer_fingerprint(const struct net_conn *conn,
			      uint8_t fp_r[NET_FINGERPRINT_LEN])
{
	X509 *cert = conn->ssl != NULL ? SSL_get0_peer_certificate(conn->ssl) :
					 NULL;
	unsigned int len = 0;

	if (cert == NULL || X509_digest(cert, EVP_sha256(), fp_r, &len) != 1 ||
	    len != NET_FINGERPRINT_LEN) {
		memset(fp_r, 0, NET_FINGERPRINT_LEN);
		return -1;
	}
	return 0;
}

/* ---- fingerprints as text ---- */

static int net_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int net_fingerprint_parse(const char *text, uint8_t fp_r[NET_FINGERPRINT_LEN])
{
	static const char prefix[] = "SHA256 Fingerprint=";
	bool colons;

	if (strncasecmp(text, prefix, sizeof(prefix) - 1) == 0)
		text += sizeof(prefix) - 1;
	colons = strlen(text) == NET_FINGERPRINT_TEXT_LEN - 1;
	if (!colons && strlen(text) != NET_FINGERPRINT_LEN * 2)
		return -1;
	for (size_t i = 0; i < NET_FINGERPRINT_LEN; i++) {
		const char *pair = text + i * (colons ? 3 : 2);
		int hi = net_hex_value(pair[0]), lo = net_hex_value(pair[1]);

		if (hi < 0 || lo < 0 ||
		    (colons && i + 1 < NET_FINGERPRINT_LEN && pair[2] != ':'))
			return -1;
		fp_r[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

void net_fingerprint_format(const uint8_t fp[NET_FINGERPRINT_LEN],
			    char text[NET_FINGERPRINT_TEXT_LEN])
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < NET_FINGERPRINT_LEN; i++) {
		text[i * 3] = hex[fp[i] >> 4];
		text[i * 3 + 1] = hex[fp[i] & 15];
		text[i * 3 + 2] = ':';
	}
	text[NET_FINGERPRINT_TEXT_LEN - 1] = '\0';
}
