/*
 * test-net.c — popbox-fetch's connection module against a real TLS server:
 * a forked child on a loopback port (the listening socket is made before
 * the fork, so there is no start-up race) running OpenSSL's server side
 * with certificates made here, in memory, by a throwaway CA: valid,
 * expired, not yet valid, self-signed, from an unrelated CA.
 *
 * Checked: verification with a CA file (by name and by IP address, SNI
 * sent only for names), wrong host name, unknown CA (CA file and system
 * store), expired and not-yet-valid certificates, pinning (a matching pin
 * accepts a self-signed certificate, a wrong pin refuses a CA-valid one),
 * the STLS upgrade, bytes after +OK to STLS refused (buffered by the
 * caller, or still on the socket), a non-TLS peer, TLS below 1.2 refused,
 * read and handshake timeouts, close_notify versus truncation, connection
 * refused, IPv6, fingerprint parsing, and that a failed connection stays
 * dead.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net.h"
#include "sasl-client.h"

#define DAY (24L * 3600L)
/* A child that is still running after this is killed by its alarm. */
#define CHILD_ALARM_SECONDS 20

/* ---- certificates ---- */

struct pki {
	char dir[64];
	char ca_file[96];        /* our CA, PEM */
	char other_ca_file[96];  /* an unrelated CA, PEM */
	EVP_PKEY *ca_key, *other_key, *key;
	X509 *ca, *other_ca;
	X509 *leaf;        /* by our CA: localhost, 127.0.0.1, ::1 */
	X509 *expired;     /* by our CA, ended yesterday */
	X509 *notyet;      /* by our CA, starts tomorrow */
	X509 *self;        /* self-signed, localhost */
	X509 *other_leaf;  /* by the unrelated CA, localhost */
};

static struct pki pki;
static long next_serial = 1;

static void add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);

	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A certificate for key, valid from from_days to to_days around now,
   signed by issuer/issuer_key (NULL: self-signed). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer,
		       EVP_PKEY *issuer_key, long from_days, long to_days,
		       const char *san, int ca)
{
	X509 *x = X509_new();
	X509_NAME *name;
	X509V3_CTX v3;

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), next_serial++);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from_days * DAY));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), to_days * DAY));
	assert_int_equal(X509_set_pubkey(x, key), 1);
	name = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
						    (const unsigned char *)cn,
						    -1, -1, 0), 1);
	assert_int_equal(X509_set_issuer_name(x, issuer != NULL ?
					      X509_get_subject_name(issuer) :
					      name), 1);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	add_ext(x, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" :
						    "CA:FALSE");
	if (ca)
		add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
	add_ext(x, &v3, NID_subject_key_identifier, "hash");
	if (issuer != NULL)
		add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
	if (san != NULL)
		add_ext(x, &v3, NID_subject_alt_name, san);
	assert_true(X509_sign(x, issuer_key != NULL ? issuer_key : key,
			      EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *path, X509 *cert)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, cert), 1);
	assert_int_equal(fclose(f), 0);
}

#define LEAF_SAN "DNS:localhost,IP:127.0.0.1,IP:::1"

static int pki_setup(void **state)
{
	(void)state;
	strcpy(pki.dir, "/tmp/test-net-XXXXXX");
	if (mkdtemp(pki.dir) == NULL)
		return -1;
	snprintf(pki.ca_file, sizeof(pki.ca_file), "%s/ca.pem", pki.dir);
	snprintf(pki.other_ca_file, sizeof(pki.other_ca_file), "%s/other.pem",
		 pki.dir);
	pki.ca_key = EVP_EC_gen("P-256");
	pki.other_key = EVP_EC_gen("P-256");
	pki.key = EVP_EC_gen("P-256");
	if (pki.ca_key == NULL || pki.other_key == NULL || pki.key == NULL)
		return -1;
	pki.ca = make_cert(pki.ca_key, "popbox test CA", NULL, NULL, -1, 30,
			   NULL, 1);
	pki.other_ca = make_cert(pki.other_key, "unrelated CA", NULL, NULL, -1,
				 30, NULL, 1);
	pki.leaf = make_cert(pki.key, "localhost", pki.ca, pki.ca_key, -1, 30,
			     LEAF_SAN, 0);
	pki.expired = make_cert(pki.key, "localhost", pki.ca, pki.ca_key, -10,
				-1, LEAF_SAN, 0);
	pki.notyet = make_cert(pki.key, "localhost", pki.ca, pki.ca_key, 1, 30,
			       LEAF_SAN, 0);
	pki.self = make_cert(pki.key, "localhost", NULL, NULL, -1, 30,
			     LEAF_SAN, 0);
	pki.other_leaf = make_cert(pki.key, "localhost", pki.other_ca,
				   pki.other_key, -1, 30, LEAF_SAN, 0);
	write_pem(pki.ca_file, pki.ca);
	write_pem(pki.other_ca_file, pki.other_ca);
	return 0;
}

static int pki_teardown(void **state)
{
	(void)state;
	unlink(pki.ca_file);
	unlink(pki.other_ca_file);
	rmdir(pki.dir);
	X509_free(pki.ca);
	X509_free(pki.other_ca);
	X509_free(pki.leaf);
	X509_free(pki.expired);
	X509_free(pki.notyet);
	X509_free(pki.self);
	X509_free(pki.other_leaf);
	EVP_PKEY_free(pki.ca_key);
	EVP_PKEY_free(pki.other_key);
	EVP_PKEY_free(pki.key);
	return 0;
}

static void fingerprint_of(X509 *cert, uint8_t fp[NET_FINGERPRINT_LEN])
{
	unsigned int len = 0;

	assert_int_equal(X509_digest(cert, EVP_sha256(), fp, &len), 1);
	assert_int_equal(len, NET_FINGERPRINT_LEN);
}

/* ---- the server child ---- */

enum behaviour {
	SRV_TLS_GREET,      /* TLS; "+OK hello"; expects "QUIT"; "+OK bye";
			       close_notify */
	SRV_STLS,           /* plain greeting, STLS, +OK, TLS, "+OK tls" */
	SRV_STLS_INJECT,    /* +OK to STLS and more in the same write */
	SRV_SILENT,         /* accepts, says nothing, waits for EOF */
	SRV_NOT_TLS,        /* answers the ClientHello in plain text */
	SRV_TLS11,          /* offers TLS 1.1 at most */
	SRV_TLS_TRUNCATE,   /* TLS; "+OK" then close without close_notify */
	SRV_PLAIN_BYE,      /* plain "+OK" then close */
	SRV_GREET_FIRST,    /* writes a plain greeting on a pop3s port */
};

struct server {
	pid_t pid;
	int port;
	enum behaviour how;
	X509 *cert;
	const char *want_sni;   /* for SRV_TLS_GREET; NULL: no SNI */
};

/* Child exit codes. */
enum { CHILD_OK = 0, CHILD_IO = 2, CHILD_TLS = 3, CHILD_SNI = 4,
       CHILD_PROTO = 5 };

static int srv_read_line(SSL *ssl, int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		char c;
		int r = ssl != NULL ? SSL_read(ssl, &c, 1) :
			(int)read(fd, &c, 1);
		if (r <= 0)
			return -1;
		buf[n++] = c;
		if (c == '\n')
			break;
	}
	buf[n] = '\0';
	return 0;
}

static int srv_write(SSL *ssl, int fd, const char *s)
{
	int len = (int)strlen(s);

	if (ssl != NULL)
		return SSL_write(ssl, s, len) == len ? 0 : -1;
	return write(fd, s, (size_t)len) == len ? 0 : -1;
}

static SSL *srv_tls(const struct server *s, int fd, int max_version)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	SSL *ssl;

	if (ctx == NULL || SSL_CTX_use_certificate(ctx, s->cert) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, pki.key) != 1)
		return NULL;
	if (max_version != 0) {
		SSL_CTX_set_security_level(ctx, 0);
		SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
		SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
		SSL_CTX_set_max_proto_version(ctx, max_version);
	}
	ssl = SSL_new(ctx);
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1)
		return NULL;
	return ssl;
}

static int srv_tls_greet(const struct server *s, int fd)
{
	char line[64];
	SSL *ssl = srv_tls(s, fd, 0);
	const char *sni;

	if (ssl == NULL)
		return CHILD_TLS;
	sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if ((s->want_sni == NULL) != (sni == NULL) ||
	    (sni != NULL && strcmp(sni, s->want_sni) != 0))
		return CHILD_SNI;
	if (srv_write(ssl, fd, "+OK hello\r\n") < 0 ||
	    srv_read_line(ssl, fd, line, sizeof(line)) < 0)
		return CHILD_IO;
	if (strcmp(line, "QUIT\r\n") != 0)
		return CHILD_PROTO;
	if (srv_write(ssl, fd, "+OK bye\r\n") < 0)
		return CHILD_IO;
	SSL_shutdown(ssl);
	return CHILD_OK;
}

static int srv_stls(const struct server *s, int fd, bool inject)
{
	char line[64];
	SSL *ssl;

	if (srv_write(NULL, fd, "+OK plain\r\n") < 0 ||
	    srv_read_line(NULL, fd, line, sizeof(line)) < 0)
		return CHILD_IO;
	if (strcmp(line, "STLS\r\n") != 0)
		return CHILD_PROTO;
	if (inject) {
		/* One write: the client gets the injected bytes with the +OK
		   or right behind it on the socket. */
		(void)srv_write(NULL, fd, "+OK begin\r\nUSER evil\r\n");
		/* The client must not start a handshake: it sends nothing
		   more and closes (a reset if it left our bytes unread). */
		return read(fd, line, sizeof(line)) <= 0 ? CHILD_OK : CHILD_PROTO;
	}
	if (srv_write(NULL, fd, "+OK begin\r\n") < 0)
		return CHILD_IO;
	ssl = srv_tls(s, fd, 0);
	if (ssl == NULL)
		return CHILD_TLS;
	if (srv_write(ssl, fd, "+OK tls\r\n") < 0)
		return CHILD_IO;
	SSL_shutdown(ssl);
	return CHILD_OK;
}

static int srv_run(const struct server *s, int fd)
{
	char buf[512];
	SSL *ssl;

	switch (s->how) {
	case SRV_TLS_GREET:
		return srv_tls_greet(s, fd);
	case SRV_STLS:
	case SRV_STLS_INJECT:
		return srv_stls(s, fd, s->how == SRV_STLS_INJECT);
	case SRV_SILENT:
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		return CHILD_OK;
	case SRV_NOT_TLS:
		if (read(fd, buf, sizeof(buf)) <= 0)
			return CHILD_IO;
		(void)srv_write(NULL, fd, "+OK I do not speak TLS\r\n");
		return CHILD_OK;
	case SRV_TLS11:
		return srv_tls(s, fd, TLS1_1_VERSION) == NULL ? CHILD_OK :
							       CHILD_TLS;
	case SRV_TLS_TRUNCATE:
		ssl = srv_tls(s, fd, 0);
		if (ssl == NULL || srv_write(ssl, fd, "+OK\r\n") < 0)
			return CHILD_TLS;
		return CHILD_OK;   /* exit closes the socket: no close_notify */
	case SRV_PLAIN_BYE:
	case SRV_GREET_FIRST:
		return srv_write(NULL, fd, "+OK hello\r\n") < 0 ? CHILD_IO :
								  CHILD_OK;
	}
	return CHILD_PROTO;
}

/* Listens on addr (127.0.0.1 or ::1), forks the child.  Returns 0, or -1
   if the address family is not available here. */
static int server_start(struct server *s, enum behaviour how, X509 *cert,
			const char *want_sni, int family)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, family == AF_INET6 ?
		 sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) < 0 ||
	    listen(fd, 1) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		close(fd);
		return -1;
	}
	s->port = ntohs(family == AF_INET6 ?
			((struct sockaddr_in6 *)&ss)->sin6_port :
			((struct sockaddr_in *)&ss)->sin_port);
	s->how = how;
	s->cert = cert;
	s->want_sni = want_sni;
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		int conn;

		alarm(CHILD_ALARM_SECONDS);
		conn = accept(fd, NULL, NULL);
		if (conn < 0)
			_exit(CHILD_IO);
		_exit(srv_run(s, conn));
	}
	close(fd);
	return 0;
}

/* The child's exit code. */
static int server_wait(struct server *s)
{
	int status = 0;

	assert_int_equal(waitpid(s->pid, &status, 0), s->pid);
	if (!WIFEXITED(status))
		fail_msg("server child died: status %#x", status);
	return WEXITSTATUS(status);
}

/* ---- client helpers ---- */

static struct net_conn *connect_port(const char *host, int port,
				     unsigned int io_ms)
{
	struct net_options opt = { .connect_timeout_ms = 5000,
				   .io_timeout_ms = io_ms };
	struct net_conn *conn = NULL;
	const char *error = NULL;
	char portstr[16];

	snprintf(portstr, sizeof(portstr), "%d", port);
	if (net_connect(host, portstr, &opt, &conn, &error) < 0)
		fail_msg("net_connect %s: %s", host, error);
	assert_int_equal(net_last_error_kind(), NET_ERROR_NONE);
	return conn;
}

/* Reads until buf holds a whole line (or EOF); returns its length. */
static size_t read_line(struct net_conn *conn, char *buf, size_t size)
{
	size_t used = 0;
	const char *error;

	while (used + 1 < size) {
		size_t n = 0;

		if (net_read(conn, buf + used, size - 1 - used, &n, &error) < 0)
			fail_msg("net_read: %s", error);
		if (n == 0)
			break;
		used += n;
		if (memchr(buf, '\n', used) != NULL)
			break;
	}
	buf[used] = '\0';
	return used;
}

static struct net_tls_options ca_trust(const char *verify_name)
{
	struct net_tls_options tls = { .verify_name = verify_name,
				       .ca_file = pki.ca_file };
	return tls;
}

/* Connects to a server with cert and tries TLS; returns net_start_tls()'s
   result, the error in *error_r and closes. */
static int try_tls(X509 *cert, enum behaviour how,
		   const struct net_tls_options *tls, const char *host,
		   const char **error_r, int *child_r)
{
	struct server s;
	struct net_conn *conn;
	int r;

	assert_int_equal(server_start(&s, how, cert, "localhost", AF_INET), 0);
	conn = connect_port(host, s.port, 5000);
	*error_r = NULL;
	r = net_start_tls(conn, tls, 0, error_r);
	net_close(&conn);
	*child_r = server_wait(&s);
	return r;
}

/* A TLS start that must fail with kind and an error containing text. */
static void expect_refused(X509 *cert, const struct net_tls_options *tls,
			   enum net_error_kind kind, const char *text)
{
	const char *error;
	int child;

	assert_int_equal(try_tls(cert, SRV_TLS_GREET, tls, "127.0.0.1", &error,
				 &child), -1);
	assert_non_null(error);
	if (strstr(error, text) == NULL)
		fail_msg("error '%s' lacks '%s'", error, text);
	assert_int_equal(net_last_error_kind(), kind);
	/* The server never got to greet. */
	assert_int_equal(child, CHILD_TLS);
}

/* ---- verification ---- */

/* The whole conversation over verified TLS; checks SNI and EOF. */
static void greet_and_quit(const char *host, int family,
			   const struct net_tls_options *tls,
			   const char *want_sni)
{
	struct server s;
	struct net_conn *conn;
	const char *error = NULL;
	char line[128], summary[128];
	uint8_t fp[NET_FINGERPRINT_LEN], want_fp[NET_FINGERPRINT_LEN];
	size_t n = 99;

	assert_int_equal(server_start(&s, SRV_TLS_GREET, pki.leaf, want_sni,
				      family), 0);
	conn = connect_port(host, s.port, 5000);
	assert_false(net_conn_is_tls(conn));
	assert_string_equal(net_conn_tls_summary(conn, summary, sizeof(summary)),
			    "plain");
	assert_int_equal(net_conn_peer_fingerprint(conn, fp), -1);
	if (net_start_tls(conn, tls, 0, &error) < 0)
		fail_msg("net_start_tls: %s", error);
	assert_true(net_conn_is_tls(conn));
	assert_int_equal(strncmp(net_conn_tls_summary(conn, summary,
						      sizeof(summary)),
				 "TLSv1.", 6), 0);
	assert_int_equal(net_conn_peer_fingerprint(conn, fp), 0);
	fingerprint_of(pki.leaf, want_fp);
	assert_memory_equal(fp, want_fp, sizeof(fp));
	read_line(conn, line, sizeof(line));
	assert_string_equal(line, "+OK hello\r\n");
	assert_int_equal(net_write_all(conn, "QUIT\r\n", 6, &error), 0);
	read_line(conn, line, sizeof(line));
	assert_string_equal(line, "+OK bye\r\n");
	/* The server's close_notify is a clean end of stream. */
	assert_int_equal(net_read(conn, line, sizeof(line), &n, &error), 0);
	assert_int_equal(n, 0);
	net_close(&conn);
	assert_null(conn);
	assert_int_equal(server_wait(&s), CHILD_OK);
}

static void test_verify_ok_by_name(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");

	(void)state;
	greet_and_quit("127.0.0.1", AF_INET, &tls, "localhost");
}

/* No verify_name: the host itself, an IP address, is checked against the
   certificate's IP entries, and no SNI is sent. */
static void test_verify_ok_by_ip(void **state)
{
	struct net_tls_options tls = ca_trust(NULL);

	(void)state;
	greet_and_quit("127.0.0.1", AF_INET, &tls, NULL);
}

static void test_verify_ok_ipv6(void **state)
{
	struct net_tls_options tls = ca_trust(NULL);
	struct server s;
	struct net_conn *conn;
	char want[32];

	(void)state;
	if (server_start(&s, SRV_PLAIN_BYE, NULL, NULL, AF_INET6) < 0)
		skip();
	conn = connect_port("::1", s.port, 5000);
	snprintf(want, sizeof(want), "[::1]:%d", s.port);
	assert_string_equal(net_conn_peer(conn), want);
	net_close(&conn);
	server_wait(&s);
	greet_and_quit("::1", AF_INET6, &tls, NULL);
}

/* "localhost" may resolve to ::1 first; the server is on 127.0.0.1 only,
   so the next address is tried. */
static void test_connect_by_name(void **state)
{
	struct net_tls_options tls = ca_trust(NULL);

	(void)state;
	greet_and_quit("localhost", AF_INET, &tls, "localhost");
}

static void test_wrong_host(void **state)
{
	struct net_tls_options tls = ca_trust("mail.example.org");

	(void)state;
	expect_refused(pki.leaf, &tls, NET_ERROR_TLS_VERIFY, "wrong host");
	tls.verify_name = "127.0.0.2";
	expect_refused(pki.leaf, &tls, NET_ERROR_TLS_VERIFY, "wrong host");
	/* No partial wildcards, no suffix match. */
	tls.verify_name = "host.localhost";
	expect_refused(pki.leaf, &tls, NET_ERROR_TLS_VERIFY, "wrong host");
}

static void test_unknown_ca(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");

	(void)state;
	/* Signed by a CA we were not told to trust. */
	tls.ca_file = pki.other_ca_file;
	expect_refused(pki.leaf, &tls, NET_ERROR_TLS_VERIFY, "unknown CA");
	tls.ca_file = pki.ca_file;
	expect_refused(pki.other_leaf, &tls, NET_ERROR_TLS_VERIFY, "unknown CA");
	/* Self-signed, and the system store knows nothing of our CA. */
	expect_refused(pki.self, &tls, NET_ERROR_TLS_VERIFY, "unknown CA");
	tls.ca_file = NULL;
	expect_refused(pki.leaf, &tls, NET_ERROR_TLS_VERIFY, "unknown CA");
	expect_refused(pki.leaf, &tls, NET_ERROR_TLS_VERIFY, "fingerprint");
}

static void test_expired(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");

	(void)state;
	expect_refused(pki.expired, &tls, NET_ERROR_TLS_VERIFY, "expired");
	expect_refused(pki.notyet, &tls, NET_ERROR_TLS_VERIFY, "not valid yet");
}

static void test_bad_ca_file(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");
	const char *error;
	int child;

	(void)state;
	tls.ca_file = "/nonexistent/ca.pem";
	assert_int_equal(try_tls(pki.leaf, SRV_SILENT, &tls, "127.0.0.1",
				 &error, &child), -1);
	assert_int_equal(net_last_error_kind(), NET_ERROR_USAGE);
	assert_non_null(strstr(error, "/nonexistent/ca.pem"));
}

/* ---- pinning ---- */

static void test_pin_match_without_ca(void **state)
{
	struct net_tls_options tls = { .verify_name = "localhost",
				       .has_pin = true };
	const char *error;
	int child;

	(void)state;
	/* Self-signed: no CA vouches for it; the pin alone does. */
	fingerprint_of(pki.self, tls.pin);
	if (try_tls(pki.self, SRV_TLS_GREET, &tls, "127.0.0.1", &error,
		    &child) < 0)
		fail_msg("pinned self-signed refused: %s", error);
	/* The pin replaces every check, name and dates included (as
	   mpop's --tls-fingerprint does). */
	tls.verify_name = "mail.example.org";
	assert_int_equal(try_tls(pki.self, SRV_TLS_GREET, &tls, "127.0.0.1",
				 &error, &child), 0);
	fingerprint_of(pki.expired, tls.pin);
	assert_int_equal(try_tls(pki.expired, SRV_TLS_GREET, &tls, "127.0.0.1",
				 &error, &child), 0);
	/* Its own CA file is not needed, nor consulted. */
	tls.ca_file = "/nonexistent/ca.pem";
	assert_int_equal(try_tls(pki.expired, SRV_TLS_GREET, &tls, "127.0.0.1",
				 &error, &child), 0);
}

static void test_pin_mismatch(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");

	(void)state;
	/* CA-valid, right name, but not the pinned certificate. */
	tls.has_pin = true;
	fingerprint_of(pki.self, tls.pin);
	expect_refused(pki.leaf, &tls, NET_ERROR_TLS_VERIFY, "pin mismatch");
	memset(tls.pin, 0, sizeof(tls.pin));
	expect_refused(pki.self, &tls, NET_ERROR_TLS_VERIFY, "pin mismatch");
}

/* ---- STLS ---- */

/* Plain greeting, STLS, +OK: returns the connection ready for the TLS
   start, with nothing of the server's buffered. */
static struct net_conn *stls_prelude(struct server *s, enum behaviour how,
				     size_t read_size)
{
	struct net_conn *conn;
	const char *error;
	char line[128];
	size_t n = 0;

	assert_int_equal(server_start(s, how, pki.leaf, "localhost", AF_INET),
			 0);
	conn = connect_port("127.0.0.1", s->port, 5000);
	read_line(conn, line, sizeof(line));
	assert_string_equal(line, "+OK plain\r\n");
	assert_int_equal(net_write_all(conn, "STLS\r\n", 6, &error), 0);
	if (read_size == 0)
		return conn;
	assert_int_equal(net_read(conn, line, read_size, &n, &error), 0);
	assert_true(n > 0 && n <= read_size);
	assert_memory_equal(line, "+OK begin\r\n", n < 11 ? n : 11);
	return conn;
}

static void test_stls_ok(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");
	struct server s;
	struct net_conn *conn = stls_prelude(&s, SRV_STLS, 11);
	const char *error;
	char line[64];

	(void)state;
	if (net_start_tls(conn, &tls, 0, &error) < 0)
		fail_msg("STLS handshake: %s", error);
	read_line(conn, line, sizeof(line));
	assert_string_equal(line, "+OK tls\r\n");
	net_close(&conn);
	assert_int_equal(server_wait(&s), CHILD_OK);
}

/* The caller's buffer held bytes after +OK: refused before any
   handshake. */
static void test_stls_injection_buffered(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");
	struct server s;
	struct net_conn *conn = stls_prelude(&s, SRV_STLS_INJECT, 64);
	const char *error = NULL;
	size_t n;
	char buf[8];

	(void)state;
	/* Whatever this read got beyond "+OK begin\r\n" is unconsumed; say
	   at least 1 (if the read stopped at the line, the rest is on the
	   socket and the next test's path applies too). */
	assert_int_equal(net_start_tls(conn, &tls, 10, &error), -1);
	assert_int_equal(net_last_error_kind(), NET_ERROR_INJECTION);
	assert_non_null(strstr(error, "10 byte(s)"));
	/* Dead: no plain-text fallback. */
	assert_int_equal(net_read(conn, buf, sizeof(buf), &n, &error), -1);
	assert_int_equal(net_write_all(conn, "USER x\r\n", 8, &error), -1);
	assert_int_equal(net_start_tls(conn, &tls, 0, &error), -1);
	net_close(&conn);
	assert_int_equal(server_wait(&s), CHILD_OK);
}

/* The caller read exactly the +OK line; the injected bytes wait on the
   socket, and net_start_tls() finds them there. */
static void test_stls_injection_on_socket(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");
	struct server s;
	struct net_conn *conn = stls_prelude(&s, SRV_STLS_INJECT, 11);
	const char *error = NULL;

	(void)state;
	assert_int_equal(net_start_tls(conn, &tls, 0, &error), -1);
	assert_int_equal(net_last_error_kind(), NET_ERROR_INJECTION);
	assert_non_null(strstr(error, "before the TLS handshake"));
	net_close(&conn);
	assert_int_equal(server_wait(&s), CHILD_OK);
}

/* A plain greeting on a pop3s port: refused (injection, or a broken
   handshake if it arrives after our ClientHello), never read. */
static void test_implicit_tls_server_speaks_first(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");
	const char *error;
	int child;

	(void)state;
	assert_int_equal(try_tls(pki.leaf, SRV_GREET_FIRST, &tls, "127.0.0.1",
				 &error, &child), -1);
	assert_true(net_last_error_kind() == NET_ERROR_INJECTION ||
		    net_last_error_kind() == NET_ERROR_TLS);
}

/* ---- handshake failures, timeouts, endings ---- */

static void test_not_tls(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");
	const char *error;
	int child;

	(void)state;
	assert_int_equal(try_tls(pki.leaf, SRV_NOT_TLS, &tls, "127.0.0.1",
				 &error, &child), -1);
	assert_int_equal(net_last_error_kind(), NET_ERROR_TLS);
	assert_non_null(strstr(error, "handshake"));
}

static void test_tls11_refused(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");
	const char *error;
	int child;

	(void)state;
	assert_int_equal(try_tls(pki.leaf, SRV_TLS11, &tls, "127.0.0.1",
				 &error, &child), -1);
	assert_int_equal(net_last_error_kind(), NET_ERROR_TLS);
	assert_non_null(strstr(error, "handshake"));
	assert_int_equal(child, CHILD_OK);
}

static long elapsed_ms(const struct timespec *since)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - since->tv_sec) * 1000 +
	       (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* The last call failed by the I/O timeout (300 ms) in reasonable time. */
static void assert_timed_out(const char *error, const struct timespec *t0)
{
	assert_int_equal(net_last_error_kind(), NET_ERROR_TIMEOUT);
	assert_non_null(strstr(error, "timed out"));
	assert_true(elapsed_ms(t0) >= 250);
	assert_true(elapsed_ms(t0) < 5000);
}

static void test_read_timeout(void **state)
{
	struct server s;
	struct net_conn *conn;
	struct timespec t0;
	const char *error = NULL;
	char buf[16];
	size_t n;

	(void)state;
	assert_int_equal(server_start(&s, SRV_SILENT, NULL, NULL, AF_INET), 0);
	conn = connect_port("127.0.0.1", s.port, 300);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(net_read(conn, buf, sizeof(buf), &n, &error), -1);
	assert_timed_out(error, &t0);
	net_close(&conn);
	assert_int_equal(server_wait(&s), CHILD_OK);
}

static void test_handshake_timeout(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");
	struct server s;
	struct net_conn *conn;
	struct timespec t0;
	const char *error = NULL;

	(void)state;
	assert_int_equal(server_start(&s, SRV_SILENT, NULL, NULL, AF_INET), 0);
	conn = connect_port("127.0.0.1", s.port, 300);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(net_start_tls(conn, &tls, 0, &error), -1);
	assert_timed_out(error, &t0);
	net_close(&conn);
	assert_int_equal(server_wait(&s), CHILD_OK);
}

static void test_tls_truncation(void **state)
{
	struct net_tls_options tls = ca_trust("localhost");
	struct server s;
	struct net_conn *conn;
	const char *error = NULL;
	char buf[64];
	size_t n;

	(void)state;
	assert_int_equal(server_start(&s, SRV_TLS_TRUNCATE, pki.leaf,
				      "localhost", AF_INET), 0);
	conn = connect_port("127.0.0.1", s.port, 5000);
	assert_int_equal(net_start_tls(conn, &tls, 0, &error), 0);
	read_line(conn, buf, sizeof(buf));
	assert_string_equal(buf, "+OK\r\n");
	assert_int_equal(net_read(conn, buf, sizeof(buf), &n, &error), -1);
	assert_int_equal(net_last_error_kind(), NET_ERROR_IO);
	assert_non_null(strstr(error, "close_notify"));
	net_close(&conn);
	assert_int_equal(server_wait(&s), CHILD_OK);
}

static void test_plain_eof(void **state)
{
	struct server s;
	struct net_conn *conn;
	const char *error = NULL;
	char buf[64];
	size_t n = 99;

	(void)state;
	assert_int_equal(server_start(&s, SRV_PLAIN_BYE, NULL, NULL, AF_INET),
			 0);
	conn = connect_port("127.0.0.1", s.port, 5000);
	read_line(conn, buf, sizeof(buf));
	assert_string_equal(buf, "+OK hello\r\n");
	assert_int_equal(net_read(conn, buf, sizeof(buf), &n, &error), 0);
	assert_int_equal(n, 0);
	/* A zero-size read is a usage error. */
	assert_int_equal(net_read(conn, buf, 0, &n, &error), -1);
	net_close(&conn);
	assert_int_equal(server_wait(&s), CHILD_OK);
}

static void test_connect_refused(void **state)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	struct net_conn *conn = NULL;
	const char *error = NULL;
	char port[16];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	(void)state;
	/* A port that was free a moment ago and has no listener. */
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	snprintf(port, sizeof(port), "%d", ntohs(a.sin_port));
	assert_int_equal(net_connect("127.0.0.1", port, NULL, &conn, &error), -1);
	assert_null(conn);
	assert_int_equal(net_last_error_kind(), NET_ERROR_CONNECT);
	assert_non_null(strstr(error, "127.0.0.1:"));
	assert_non_null(strstr(error, strerror(ECONNREFUSED)));
	assert_int_equal(net_connect("", port, NULL, &conn, &error), -1);
	assert_int_equal(net_last_error_kind(), NET_ERROR_USAGE);
	assert_int_equal(net_connect("127.0.0.1", "no-such-service-x", NULL,
				     &conn, &error), -1);
	assert_int_equal(net_last_error_kind(), NET_ERROR_RESOLVE);
	net_close(&conn);
}

/* ---- fingerprints ---- */

static void test_fingerprint_text(void **state)
{
	static const char hex[] =
		"00112233445566778899aabbccddeeff"
		"FFEEDDCCBBAA99887766554433221100";
	static const char colons[] =
		"00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
		"FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11:00";
	static const char *const bad[] = {
		"",
		"00112233445566778899aabbccddeeffFFEEDDCCBBAA9988776655443322110",
		"00112233445566778899aabbccddeeffFFEEDDCCBBAA998877665544332211000",
		"0g112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100",
		"00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
		"FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11-00",
		"00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
		"FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11:00:",
		" 00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100",
		"00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100\n",
	};
	uint8_t fp[NET_FINGERPRINT_LEN], fp2[NET_FINGERPRINT_LEN];
	char text[NET_FINGERPRINT_TEXT_LEN], prefixed[160];

	(void)state;
	assert_int_equal(net_fingerprint_parse(hex, fp), 0);
	assert_int_equal(fp[0], 0x00);
	assert_int_equal(fp[10], 0xaa);
	assert_int_equal(fp[31], 0x00);
	net_fingerprint_format(fp, text);
	assert_string_equal(text, colons);
	assert_int_equal(net_fingerprint_parse(colons, fp2), 0);
	assert_memory_equal(fp, fp2, sizeof(fp));
	snprintf(prefixed, sizeof(prefixed), "SHA256 Fingerprint=%s", colons);
	assert_int_equal(net_fingerprint_parse(prefixed, fp2), 0);
	assert_memory_equal(fp, fp2, sizeof(fp));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (net_fingerprint_parse(bad[i], fp2) != -1)
			fail_msg("accepted '%s'", bad[i]);
	}
}

/* ---- interop mode: a minimal POP3 login against a real server ---- */

/*
 * `test-net --interop MODE HOST PORT CAFILE NAME USER PASSWORD METHOD`,
 * run by tests/integration/test_fetch_net.py against popboxd: connects
 * (MODE "implicit": TLS at once; "stls": STLS after the greeting), reads
 * CAPA, lets sasl_client_choose() pick (METHOD "auto" or a name) and logs
 * in, falling back past a method the server refused, then STAT and QUIT.
 * Prints "OK method=M tls=T stat=N" and exits 0, or "FAIL reason" and
 * exits 1.  The line buffering is what a driver does: all input is ours,
 * so what follows +OK to STLS is handed to net_start_tls().
 */
struct pop {
	struct net_conn *conn;
	char buf[8192];
	size_t len;            /* received, not yet consumed */
};

static void die(const char *what, const char *why)
{
	printf("FAIL %s: %s\n", what, why);
	exit(1);
}

/* The next line without CRLF into line. */
static void pop_line(struct pop *p, char *line, size_t size)
{
	const char *error;

	for (;;) {
		char *nl = memchr(p->buf, '\n', p->len);
		size_t n = 0;

		if (nl != NULL) {
			size_t len = (size_t)(nl - p->buf) + 1;
			size_t text = len >= 2 && nl[-1] == '\r' ? len - 2 : len - 1;

			if (text >= size)
				die("read", "line too long");
			memcpy(line, p->buf, text);
			line[text] = '\0';
			memmove(p->buf, p->buf + len, p->len - len);
			p->len -= len;
			return;
		}
		if (p->len == sizeof(p->buf))
			die("read", "line too long");
		if (net_read(p->conn, p->buf + p->len, sizeof(p->buf) - p->len,
			     &n, &error) < 0)
			die("read", error);
		if (n == 0)
			die("read", "connection closed");
		p->len += n;
	}
}

static void pop_send(struct pop *p, const char *a, const char *b)
{
	char line[16384];
	const char *error;
	int n = snprintf(line, sizeof(line), "%s%s%s\r\n", a,
			 b != NULL ? " " : "", b != NULL ? b : "");

	if (n < 0 || (size_t)n >= sizeof(line))
		die("send", "line too long");
	if (net_write_all(p->conn, line, (size_t)n, &error) < 0)
		die("send", error);
}

static bool is_ok(const char *line)
{
	return strncmp(line, "+OK", 3) == 0;
}

/* AUTH with a struct sasl_client; true when logged in. */
static bool pop_auth(struct pop *p, enum sasl_client_method m,
		     const char *user, const char *password)
{
	struct sasl_client *c;
	const char *out, *error;
	char line[8192];

	if (sasl_client_new(m, user, password, &c, &error) < 0 ||
	    sasl_client_start(c, &out, &error) < 0)
		die("sasl", error);
	/* "AUTH MECH ir", or "AUTH MECH" when the client has no initial
	   response or it would not fit the line. */
	snprintf(line, sizeof(line), "%s%s%s", sasl_client_method_name(m),
		 out != NULL ? " " : "", out != NULL ? out : "");
	pop_send(p, "AUTH", line);
	for (;;) {
		pop_line(p, line, sizeof(line));
		if (line[0] == '+' && (line[1] == ' ' || line[1] == '\0')) {
			const char *ch = line[1] == '\0' ? "" : line + 2;

			if (sasl_client_step(c, ch, strlen(ch), &out, &error) < 0) {
				printf("note: %s\n", error);
				pop_send(p, "*", NULL);
				continue;
			}
			pop_send(p, out, NULL);
			continue;
		}
		if (is_ok(line) && !sasl_client_done(c))
			die("auth", "+OK before the exchange was complete");
		sasl_client_free(&c);
		return is_ok(line);
	}
}

static bool pop_login(struct pop *p, enum sasl_client_method m,
		      const char *greeting, const char *user,
		      const char *password)
{
	char line[1024], digest[SASL_CLIENT_APOP_DIGEST_LEN + 1], arg[600];
	const char *ts = strchr(greeting, '<'), *end, *error;

	if (sasl_client_method_is_sasl(m))
		return pop_auth(p, m, user, password);
	if (m == SASL_CLIENT_USER) {
		pop_send(p, "USER", user);
		pop_line(p, line, sizeof(line));
		if (!is_ok(line))
			return false;
		pop_send(p, "PASS", password);
		pop_line(p, line, sizeof(line));
		return is_ok(line);
	}
	end = ts != NULL ? strchr(ts, '>') : NULL;
	if (end == NULL || sasl_client_apop_digest(ts, (size_t)(end - ts) + 1,
						   password, digest, &error) < 0)
		die("apop", "no usable timestamp");
	snprintf(arg, sizeof(arg), "%s %s", user, digest);
	pop_send(p, "APOP", arg);
	pop_line(p, line, sizeof(line));
	return is_ok(line);
}

/* CAPA: what the server offers. */
static void pop_capa(struct pop *p, const char *greeting,
		     struct sasl_client_offer *offer)
{
	char line[1024];

	memset(offer, 0, sizeof(*offer));
	offer->tls = net_conn_is_tls(p->conn);
	offer->apop = strchr(greeting, '<') != NULL;
	pop_send(p, "CAPA", NULL);
	pop_line(p, line, sizeof(line));
	if (!is_ok(line)) {
		offer->user = true;
		return;
	}
	for (;;) {
		pop_line(p, line, sizeof(line));
		if (strcmp(line, ".") == 0)
			return;
		if (strncasecmp(line, "SASL ", 5) == 0)
			offer->sasl = sasl_client_parse_mechs(line + 5,
							      strlen(line + 5));
		if (strcasecmp(line, "USER") == 0)
			offer->user = true;
	}
}

static int interop(char **argv)
{
	const char *mode = argv[0], *host = argv[1], *port = argv[2];
	struct net_tls_options tls = { .ca_file = argv[3],
				       .verify_name = argv[4] };
	const char *user = argv[5], *password = argv[6], *error;
	struct sasl_client_policy policy = { .method = SASL_CLIENT_AUTO };
	struct sasl_client_offer offer;
	enum sasl_client_method m = SASL_CLIENT_AUTO;
	struct pop p = { 0 };
	char greeting[1024], line[1024], summary[128];
	bool logged_in = false;

	if (sasl_client_method_from_name(argv[7], &policy.method) < 0)
		die("usage", "unknown method");
	if (net_connect(host, port, NULL, &p.conn, &error) < 0)
		die("connect", error);
	if (strcmp(mode, "implicit") == 0 &&
	    net_start_tls(p.conn, &tls, 0, &error) < 0)
		die("tls", error);
	pop_line(&p, greeting, sizeof(greeting));
	if (strcmp(mode, "stls") == 0) {
		pop_send(&p, "STLS", NULL);
		pop_line(&p, line, sizeof(line));
		if (!is_ok(line))
			die("stls", line);
		if (net_start_tls(p.conn, &tls, p.len, &error) < 0)
			die("tls", error);
	}
	pop_capa(&p, greeting, &offer);
	for (int attempt = 0; attempt < 3 && !logged_in; attempt++) {
		if (sasl_client_choose(&offer, &policy, &m, &error) < 0)
			die("choose", error);
		logged_in = pop_login(&p, m, greeting, user, password);
		if (!logged_in) {
			printf("note: %s refused\n", sasl_client_method_name(m));
			policy.exclude |= SASL_CLIENT_BIT(m);
		}
	}
	if (!logged_in)
		die("login", "every method refused");
	pop_send(&p, "STAT", NULL);
	pop_line(&p, line, sizeof(line));
	if (!is_ok(line))
		die("stat", line);
	printf("OK method=%s tls=%s stat=%s\n", sasl_client_method_name(m),
	       net_conn_tls_summary(p.conn, summary, sizeof(summary)), line + 4);
	pop_send(&p, "QUIT", NULL);
	pop_line(&p, greeting, sizeof(greeting));
	net_close(&p.conn);
	return is_ok(greeting) ? 0 : 1;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verify_ok_by_name),
		cmocka_unit_test(test_verify_ok_by_ip),
		cmocka_unit_test(test_verify_ok_ipv6),
		cmocka_unit_test(test_connect_by_name),
		cmocka_unit_test(test_wrong_host),
		cmocka_unit_test(test_unknown_ca),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_bad_ca_file),
		cmocka_unit_test(test_pin_match_without_ca),
		cmocka_unit_test(test_pin_mismatch),
		cmocka_unit_test(test_stls_ok),
		cmocka_unit_test(test_stls_injection_buffered),
		cmocka_unit_test(test_stls_injection_on_socket),
		cmocka_unit_test(test_implicit_tls_server_speaks_first),
		cmocka_unit_test(test_not_tls),
		cmocka_unit_test(test_tls11_refused),
		cmocka_unit_test(test_read_timeout),
		cmocka_unit_test(test_handshake_timeout),
		cmocka_unit_test(test_tls_truncation),
		cmocka_unit_test(test_plain_eof),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_fingerprint_text),
	};

	/* net.h: the program ignores SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	if (argc == 10 && strcmp(argv[1], "--interop") == 0)
		return interop(argv + 2);
	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
