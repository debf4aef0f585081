/*
 * tlsload.c — a POP3 load generator for the benchmarks in bench/ (see
 * docs/performance.md).  One process, one libevent loop, OpenSSL 3
 * bufferevents; no thread per connection.
 *
 *   tlsload hold      [options] HOST PORT
 *   tlsload handshake [options] HOST PORT
 *   tlsload churn     [options] HOST PORT
 *   tlsload bulk      [options] HOST PORT
 *
 * hold: opens -n connections (implicit TLS, or --plain or --stls), at most
 *   -c of them being set up at once; each reads the greeting, logs in (USER/PASS,
 *   or --auth) as its own user (-u pattern with the connection's number, -p password for
 *   all), checks that every reply is +OK, then stays idle.  When every
 *   connection is up or has failed it prints one "ready" line (failures
 *   counted by reason).  It then holds them until SIGTERM/SIGINT, the end
 *   of standard input (--until-eof) or -t seconds, sends QUIT on each,
 *   checks the +OK and exits.  A held connection the server closes counts
 *   as "lost".  With --no-login the connections stay in the AUTHORIZATION
 *   state after the greeting (TLS set up, nobody logged in).
 * handshake: for -t seconds, -c workers each repeatedly connect, do a full
 *   TLS handshake (a fresh SSL every time: no session cache, no tickets, so
 *   no resumption), read and check the +OK greeting and close (with
 *   close_notify).  Prints handshakes per second, errors and latency.
 * churn: for -t seconds, -c workers each run whole POP3 sessions, one
 *   after another, as their own user (worker w is user -f + w, so no two
 *   sessions want the same maildrop lock): connect (plain, or implicit TLS
 *   with --tls, or --stls, a full handshake each time), the login (USER/PASS,
 *   or --auth), STAT, UIDL, LIST,
 *   RETR of every message, QUIT.  Every reply is checked: STAT's count and
 *   total against UIDL and LIST, a UIDL for every message (1..70 printable
 *   characters, no two alike), each RETR's octets after un-stuffing equal
 *   to LIST's size (--allow-added-crlf: or 2 more, counted), the QUIT +OK.  At the end of -t no session is started;
 *   those in flight run to their QUIT ("drained": counted in the CPU per
 *   session, not in the rate).  Prints sessions per second, session
 *   latency (connect to QUIT's +OK), errors by reason, and the load
 *   generator's own CPU per session.
 * bulk: a download: -c connections at once, each one session as in churn
 *   (its own user -f + w, the same checks: each RETR's octets after
 *   un-stuffing equal to LIST's size), then the run ends.  Prints the
 *   bytes retrieved (un-stuffed octets), the time from the first connect
 *   to the last QUIT's +OK, bytes per second and MB/s (10^6), and the load
 *   generator's CPU; -t is only a bound (default 600 s): sessions still
 *   running then are cut and counted as errors.
 *
 * Connections: plain, implicit TLS (--tls) or STLS (--stls: plain connect,
 * greeting, CAPA (its listing must name STLS), STLS, no byte may follow the
 * +OK before the handshake, a full handshake, then the login; CAPA is not
 * asked again after it).  Logins (--auth): USER/PASS (user, the default),
 * AUTH PLAIN with an initial response (plain), or AUTH SCRAM-SHA-256 with
 * an initial response (scram, RFC 5802/7677/5034: the server's nonce must
 * extend ours, its signature "v=" is checked, then an empty answer and
 * +OK).  SCRAM's PBKDF2 result is kept per user and salt, as RFC 5802
 * allows a client to, so a server that keeps a user's salt costs the load
 * generator one PBKDF2 per user, not per login.
 *
 * Every step has a timeout (--timeout); every line the server sends is
 * checked.  At the end the program's own CPU time (getrusage) is printed,
 * to show that it is not the bottleneck.  Output lines are "tlsload: EVENT
 * key=value ..." so scripts can pick the figures.  Exit status: 0 when
 * nothing failed, 1 when some connection failed, 2 on a usage or set-up
 * error.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <fcntl.h>

#include "base64.h"

/* Longest reply line accepted (RFC 2449: 512 octets with CRLF). */
#define TL_MAX_LINE 1024

enum tl_mode { TL_HOLD, TL_HANDSHAKE, TL_CHURN };

/* churn: the longest message line accepted (servers do not fold lines). */
#define TL_MAX_DATA_LINE 65536
/* churn: the most messages a maildrop may list. */
#define TL_MAX_MSGS 1000000

enum tl_state {
	ST_CONNECT,     /* TCP connect in progress */
	ST_HANDSHAKE,   /* TLS handshake in progress */
	ST_GREETING,    /* waiting for the +OK greeting */
	ST_USER,        /* USER sent, waiting for +OK */
	ST_PASS,        /* PASS sent, waiting for +OK */
	ST_IDLE,        /* logged in, held */
	ST_QUIT,        /* QUIT sent, waiting for +OK */
	ST_STAT,        /* churn: STAT sent */
	ST_UIDL,        /* churn: UIDL sent, waiting for +OK */
	ST_UIDL_DATA,   /* churn: reading the UIDL listing */
	ST_LIST,        /* churn: LIST sent, waiting for +OK */
	ST_LIST_DATA,   /* churn: reading the LIST listing */
	ST_RETR,        /* churn: RETR sent, waiting for +OK */
	ST_RETR_DATA,   /* churn: reading a message */
	ST_CAPA,        /* --stls: CAPA sent, waiting for +OK */
	ST_CAPA_DATA,   /* --stls: reading the capability listing */
	ST_STLS,        /* --stls: STLS sent, waiting for +OK */
	ST_AUTH,        /* AUTH PLAIN sent, waiting for +OK */
	ST_SCRAM_FIRST, /* SCRAM: client-first sent, waiting for "+ " */
	ST_SCRAM_FINAL, /* SCRAM: client-final sent, waiting for "+ v=" */
	ST_SCRAM_DONE,  /* SCRAM: empty answer sent, waiting for +OK */
};

/* How a connection logs in (--auth). */
enum tl_auth { AUTH_USER, AUTH_PLAIN, AUTH_SCRAM };
static const char *const tl_auth_name[] = { "user", "plain", "scram" };

/* SCRAM-SHA-256: what one exchange keeps between its steps. */
struct tl_scram {
	char bare[320];            /* client-first-message-bare */
	char nonce[64];            /* our nonce, base64 */
	char verifier[64];         /* "v=" + the ServerSignature we expect */
};

/* Why a connection failed; each is counted and the first detail kept. */
enum tl_reason {
	R_SOCKET,       /* socket() failed here (fd limit?) */
	R_CONNECT,      /* TCP connect refused or failed */
	R_TLS,          /* TLS handshake or record error */
	R_TIMEOUT,      /* a step took longer than --timeout */
	R_EOF,          /* the server closed during a step */
	R_GREETING,     /* the greeting was not +OK */
	R_USER,         /* USER was not answered +OK */
	R_PASS,         /* PASS was not answered +OK */
	R_QUIT,         /* QUIT was not answered +OK */
	R_LOST,         /* a held connection was closed by the server */
	R_UNEXPECTED,   /* data arrived while idle, or a line was too long */
	R_STAT,         /* churn: STAT not +OK, or its figures disagree */
	R_UIDL,         /* churn: UIDL not +OK, a bad or missing UIDL */
	R_LIST,         /* churn: LIST not +OK, or a bad listing */
	R_RETR,         /* churn: RETR not +OK, or a malformed message */
	R_SIZE,         /* churn: RETR's octets differ from LIST's size */
	R_CAPA,         /* --stls: CAPA not +OK, or no STLS in it */
	R_STLS,         /* --stls: STLS not +OK, or bytes after its +OK */
	R_AUTH,         /* AUTH not +OK, or a bad SCRAM challenge */
	R_COUNT
};

static const char *const tl_reason_name[R_COUNT] = {
	"socket", "connect", "tls", "timeout", "eof", "bad-greeting",
	"bad-user", "bad-pass", "bad-quit", "lost", "unexpected",
	"bad-stat", "bad-uidl", "bad-list", "bad-retr", "bad-size",
	"bad-capa", "bad-stls", "bad-auth",
};

static const char *const tl_state_name[] = {
	"connect", "handshake", "greeting", "user", "pass", "idle", "quit",
	"stat", "uidl", "uidl-data", "list", "list-data", "retr", "retr-data",
	"capa", "capa-data", "stls", "auth", "scram-first", "scram-final",
	"scram-done",
};

struct tl_conn {
	struct bufferevent *bev;
	struct event *ev;          /* connect wait, then the step timer */
	int fd;
	unsigned idx;              /* user number (hold) or worker (handshake) */
	enum tl_state state;
	double t_start;            /* when connect() was called, ms */
	/* churn: the maildrop as STAT, UIDL and LIST describe it */
	unsigned long nmsgs, nlisted, cur;
	unsigned long long total, octets;
	unsigned long *sizes;      /* LIST's size of message k at [k - 1] */
	char (*uidls)[72];         /* UIDL of message k at [k - 1] */
	unsigned long cap;         /* entries sizes and uidls have room for */
	bool upgraded;             /* --stls: STLS answered, TLS set up */
	bool capa_stls;            /* --stls: the CAPA listing named STLS */
	struct tl_scram *scram;    /* SCRAM: the exchange in progress */
};

/* SCRAM: a user's SaltedPassword for the salt and iterations last seen. */
struct tl_scram_key {
	uint8_t salt[128];
	size_t salt_len;
	unsigned long iter;
	uint8_t salted[SHA256_DIGEST_LENGTH];
};

/* Everything the program knows: options, counters, the loop. */
static struct {
	enum tl_mode mode;
	enum tl_auth auth;         /* --auth */
	bool plain, until_eof, no_login;
	bool stls;                 /* --stls: plain connect, then STLS */
	bool bulk;                 /* bulk: churn, one session per worker */
	bool bulk_launched;        /* bulk: every worker started */
	unsigned n, conc, first;
	unsigned scram_keys_len;
	double seconds, timeout;
	struct tl_scram_key *scram_keys;   /* by user number - first */
	unsigned long pbkdf2_runs; /* SCRAM: PBKDF2 computed (not cached) */
	const char *user_prefix, *user_suffix;
	int user_width;
	bool user_zero;
	const char *password;
	const char *cafile, *sni;
	int tls_version;           /* 0: 1.2 or 1.3; else the only one */
	struct sockaddr_in addr;

	struct event_base *base;
	SSL_CTX *ctx;
	struct tl_conn **conns;    /* hold: index by user number */

	/* hold */
	unsigned launched, inflight, held, quit_ok, quit_pending;
	unsigned long lost;
	bool ready, stopping, quitting;
	double t0, t_ready;
	/* handshake and churn */
	unsigned long ok;
	/* churn */
	unsigned long ok_in_time;  /* sessions finished before -t ran out */
	unsigned long active;      /* connections open */
	unsigned long long msgs, bytes;
	bool allow_added_crlf;     /* --allow-added-crlf */
	unsigned long added_crlf;  /* messages 2 octets longer than LIST said */
	double t_end;
	double *lat;
	size_t lat_len, lat_cap;
	char proto[64], cert[64];

	unsigned long fail[R_COUNT];
	char fail_detail[R_COUNT][160];
} g;

static void tl_start(unsigned idx);
static void tl_hold_stop(void);
static void tl_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void tl_fail_note(enum tl_reason r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void tl_send(struct tl_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void tl_hold_stop_cb(evutil_socket_t fd, short what, void *arg);
static bool tl_line(struct tl_conn *c, const char *line);
static void tl_churn_done(struct tl_conn *c);
static void tl_lat_add(double ms);
static void tl_churn_read(struct tl_conn *c, struct evbuffer *in);
static void tl_read_cb(struct bufferevent *bev, void *arg);
static void tl_event_cb(struct bufferevent *bev, short what, void *arg);
static bool tl_parse_ul(const char *s, const char *end, unsigned long *out);

/* ---- small helpers ---- */

static double tl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void tl_die(const char *fmt, ...)
{
	va_list ap;

	fputs("tlsload: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static struct timeval tl_tv(double seconds)
{
	struct timeval tv;

	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	return tv;
}

static void tl_user_name(char *buf, size_t cap, unsigned idx)
{
	if (g.user_zero)
		snprintf(buf, cap, "%s%0*u%s", g.user_prefix, g.user_width,
			 idx, g.user_suffix);
	else
		snprintf(buf, cap, "%s%*u%s", g.user_prefix, g.user_width,
			 idx, g.user_suffix);
}

/* Keeps the first detail of each failure reason; printable bytes only. */
static void tl_fail_note(enum tl_reason r, const char *fmt, ...)
{
	va_list ap;

	g.fail[r]++;
	if (g.fail_detail[r][0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(g.fail_detail[r], sizeof(g.fail_detail[r]), fmt, ap);
	va_end(ap);
	for (char *p = g.fail_detail[r]; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e ||
		    *p == '"')
			*p = '?';
}

static unsigned long tl_failed_total(void)
{
	unsigned long t = 0;

	for (int r = 0; r < R_COUNT; r++)
		t += g.fail[r];
	return t;
}

static void tl_print_failures(void)
{
	if (tl_failed_total() == 0)
		return;
	printf("tlsload: failures");
	for (int r = 0; r < R_COUNT; r++)
		if (g.fail[r] > 0)
			printf(" %s=%lu", tl_reason_name[r], g.fail[r]);
	printf("\n");
	for (int r = 0; r < R_COUNT; r++)
		if (g.fail[r] > 0)
			printf("tlsload: failure reason=%s first=\"%s\"\n",
			       tl_reason_name[r], g.fail_detail[r]);
}

static void tl_print_cpu(const char *event)
{
	struct rusage ru;
	double u, s;

	getrusage(RUSAGE_SELF, &ru);
	u = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
	s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	printf("tlsload: %s cpu_user_s=%.3f cpu_sys_s=%.3f cpu_s=%.3f "
	       "maxrss_kb=%ld\n", event, u, s, u + s, ru.ru_maxrss);
}

/* ---- connections ---- */

static void tl_conn_free(struct tl_conn *c)
{
	if (c->ev != NULL)
		event_free(c->ev);
	if (c->bev != NULL) {
		SSL *ssl = g.plain ? NULL : bufferevent_openssl_get_ssl(c->bev);

		/* A clean close: close_notify, written straight to the
		   socket (never blocks: it is a few bytes). */
		if (ssl != NULL && SSL_is_init_finished(ssl))
			SSL_shutdown(ssl);
		bufferevent_free(c->bev);   /* closes the socket, frees the SSL */
	} else if (c->fd >= 0) {
		close(c->fd);
	}
	if (g.mode == TL_HOLD && g.conns[c->idx - g.first] == c)
		g.conns[c->idx - g.first] = NULL;
	g.active--;
	free(c->sizes);
	free(c->uidls);
	free(c->scram);
	free(c);
}

static void tl_arm(struct tl_conn *c)
{
	struct timeval tv = tl_tv(g.timeout);

	event_add(c->ev, &tv);
}

/* hold: all connections are set up (or failed): say so. */
static void tl_ready(void)
{
	double secs;

	g.ready = true;
	g.t_ready = tl_now_ms();
	secs = (g.t_ready - g.t0) / 1e3;
	printf("tlsload: ready conns=%u ok=%u failed=%lu secs=%.2f rate=%.1f\n",
	       g.n, g.held, tl_failed_total(), secs,
	       secs > 0 ? g.held / secs : 0.0);
	tl_print_failures();
	tl_print_cpu("ready-cpu");
	fflush(stdout);
	if (g.stopping) {
		tl_hold_stop();
	} else if (g.seconds > 0) {
		struct timeval tv = tl_tv(g.seconds);

		event_base_once(g.base, -1, EV_TIMEOUT, tl_hold_stop_cb, NULL, &tv);
	}
}

/* hold: starts connections while fewer than -c are being set up.  A start
   that fails at once comes back here; the guard keeps that from
   recursing, the outer loop carries on. */
static void tl_launch(void)
{
	static bool busy;

	if (busy)
		return;
	busy = true;
	while (!g.stopping && g.inflight < g.conc && g.launched < g.n) {
		g.launched++;
		g.inflight++;
		tl_start(g.first + g.launched - 1);
	}
	busy = false;
	if (!g.ready && g.inflight == 0 && (g.launched == g.n || g.stopping))
		tl_ready();
}

/* hold: one connection finished its set-up, logged in or failed. */
static void tl_setup_done(void)
{
	g.inflight--;
	tl_launch();
}

static void tl_restart_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	if (!g.stopping)
		tl_start((unsigned)(uintptr_t)arg);
}

/* A connection ended, either way: account for it, start the next one. */
static void tl_after(struct tl_conn *c, bool success)
{
	unsigned idx = c->idx;
	enum tl_state state = c->state;

	tl_conn_free(c);
	if (g.bulk) {
		/* One session per worker: the last to end ends the run. */
		if (g.active == 0 && g.bulk_launched) {
			g.t_end = tl_now_ms();
			event_base_loopexit(g.base, NULL);
		}
		return;
	}
	if (g.mode == TL_CHURN && g.stopping) {
		/* Draining: the last session to end ends the run. */
		if (g.active == 0)
			event_base_loopexit(g.base, NULL);
		return;
	}
	if (g.mode == TL_HANDSHAKE || g.mode == TL_CHURN) {
		if (g.stopping)
			return;
		if (success) {
			tl_start(idx);
		} else {
			/* Not at once: a failure that repeats (no fds, no
			   server) must not spin or recurse. */
			struct timeval tv = { 0, 10000 };

			event_base_once(g.base, -1, EV_TIMEOUT, tl_restart_cb,
					(void *)(uintptr_t)idx, &tv);
		}
		return;
	}
	switch (state) {
	case ST_QUIT:
		if (g.quit_pending > 0 && --g.quit_pending == 0)
			event_base_loopexit(g.base, NULL);
		return;
	case ST_IDLE:          /* lost while held */
		g.lost++;
		return;
	default:               /* failed during set-up */
		tl_setup_done();
		return;
	}
}

static void tl_fail(struct tl_conn *c, enum tl_reason r, const char *detail)
{
	/* handshake: connections cut at the end are no failures; churn:
	   sessions in flight at the end run on to their QUIT and count. */
	if (!(g.mode == TL_HANDSHAKE && g.stopping))
		tl_fail_note(r, "state=%s %s", tl_state_name[c->state], detail);
	tl_after(c, false);
}

static void tl_send(struct tl_conn *c, const char *fmt, ...)
{
	char line[TL_MAX_LINE];
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (len < 0 || (size_t)len >= sizeof(line))
		len = 0;
	bufferevent_write(c->bev, line, (size_t)len);
}

static void tl_note_session(struct tl_conn *c)
{
	SSL *ssl;
	X509 *x;

	if (g.plain || g.proto[0] != '\0')
		return;
	ssl = bufferevent_openssl_get_ssl(c->bev);
	if (ssl == NULL)
		return;
	snprintf(g.proto, sizeof(g.proto), "%s/%s", SSL_get_version(ssl),
		 SSL_get_cipher_name(ssl));
	x = SSL_get1_peer_certificate(ssl);
	if (x != NULL) {
		EVP_PKEY *k = X509_get0_pubkey(x);

		if (k != NULL)
			snprintf(g.cert, sizeof(g.cert), "%s-%d",
				 EVP_PKEY_get0_type_name(k), EVP_PKEY_get_bits(k));
		X509_free(x);
	}
}


/* ---- churn: one whole session ---- */

/* A strict decimal number that fills [s, end): no sign, no blanks. */
static bool tl_parse_ul(const char *s, const char *end, unsigned long *out)
{
	unsigned long v = 0;

	if (s == end || end - s > 19)
		return false;
	for (const char *p = s; p < end; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (unsigned long)(*p - '0');
	}
	*out = v;
	return true;
}

/* Parses "A B" (two numbers, one space) from a listing line or after
   "+OK ".  Anything after B must start with a space (RFC 1939 allows
   more text after STAT's figures only in replies, never in listings). */
static bool tl_two_numbers(const char *s, bool trailing_ok,
			   unsigned long *a, unsigned long *b)
{
	const char *sp = strchr(s, ' '), *end;

	if (sp == NULL || !tl_parse_ul(s, sp, a))
		return false;
	end = strchr(sp + 1, ' ');
	if (end == NULL)
		end = sp + 1 + strlen(sp + 1);
	else if (!trailing_ok)
		return false;
	return tl_parse_ul(sp + 1, end, b);
}

/* The maildrop has n messages: room for their sizes and UIDLs. */
static bool tl_churn_room(struct tl_conn *c, unsigned long n)
{
	if (n <= c->cap)
		return true;
	if (n > TL_MAX_MSGS)
		return false;
	free(c->sizes);
	free(c->uidls);
	c->sizes = calloc(n, sizeof(*c->sizes));
	c->uidls = calloc(n, sizeof(*c->uidls));
	if (c->sizes == NULL || c->uidls == NULL)
		tl_die("out of memory");
	c->cap = n;
	return true;
}

static void tl_churn_retr_next(struct tl_conn *c)
{
	c->cur++;
	if (c->cur > c->nmsgs) {
		tl_send(c, "QUIT\r\n");
		c->state = ST_QUIT;
	} else {
		tl_send(c, "RETR %lu\r\n", c->cur);
		c->state = ST_RETR;
		c->octets = 0;
	}
	tl_arm(c);
}

static void tl_lat_add(double ms)
{
	if (g.lat_len == g.lat_cap) {
		g.lat_cap = g.lat_cap ? g.lat_cap * 2 : 65536;
		g.lat = realloc(g.lat, g.lat_cap * sizeof(*g.lat));
		if (g.lat == NULL)
			tl_die("out of memory");
	}
	g.lat[g.lat_len++] = ms;
}

/* QUIT answered +OK: one whole session done. */
static void tl_churn_done(struct tl_conn *c)
{
	g.ok++;
	if (!g.stopping)
		g.ok_in_time++;
	tl_lat_add(tl_now_ms() - c->t_start);
	tl_after(c, true);
}

/* One line of a churn session (CRLF gone); len is its full length, line
   holds at most TL_MAX_LINE bytes of it.  Returns false when the
   connection is gone. */
static bool tl_churn_line(struct tl_conn *c, const char *line, size_t len)
{
	bool ok = strncmp(line, "+OK", 3) == 0 &&
		  (line[3] == '\0' || line[3] == ' ');
	unsigned long a, b;

	if (c->state != ST_RETR_DATA && len > TL_MAX_LINE) {
		tl_fail(c, R_UNEXPECTED, "reply line too long");
		return false;
	}
	switch (c->state) {
	case ST_STAT:
		if (!ok || line[3] != ' ' ||
		    !tl_two_numbers(line + 4, true, &a, &b)) {
			tl_fail(c, R_STAT, line);
			return false;
		}
		if (!tl_churn_room(c, a)) {
			tl_fail(c, R_STAT, "too many messages");
			return false;
		}
		c->nmsgs = a;
		c->total = b;
		c->nlisted = 0;
		tl_send(c, "UIDL\r\n");
		c->state = ST_UIDL;
		tl_arm(c);
		return true;
	case ST_UIDL:
	case ST_LIST:
	case ST_RETR:
		if (!ok) {
			tl_fail(c, c->state == ST_UIDL ? R_UIDL :
				   c->state == ST_LIST ? R_LIST : R_RETR, line);
			return false;
		}
		c->state = c->state == ST_UIDL ? ST_UIDL_DATA :
			   c->state == ST_LIST ? ST_LIST_DATA : ST_RETR_DATA;
		c->nlisted = 0;
		return true;
	case ST_UIDL_DATA:
		if (strcmp(line, ".") == 0) {
			if (c->nlisted != c->nmsgs) {
				tl_fail(c, R_UIDL, "fewer UIDLs than STAT's count");
				return false;
			}
			tl_send(c, "LIST\r\n");
			c->state = ST_LIST;
			tl_arm(c);
			return true;
		} else {
			const char *sp = strchr(line, ' ');
			size_t ulen;

			if (sp == NULL || !tl_parse_ul(line, sp, &a) ||
			    a != c->nlisted + 1 || a > c->nmsgs) {
				tl_fail(c, R_UIDL, line);
				return false;
			}
			ulen = strlen(sp + 1);
			if (ulen < 1 || ulen > 70) {
				tl_fail(c, R_UIDL, line);
				return false;
			}
			for (const char *p = sp + 1; *p != '\0'; p++)
				if (*p < 0x21 || *p > 0x7e) {
					tl_fail(c, R_UIDL, line);
					return false;
				}
			for (unsigned long k = 0; k < c->nlisted; k++)
				if (strcmp(c->uidls[k], sp + 1) == 0) {
					tl_fail(c, R_UIDL, "two messages with one UIDL");
					return false;
				}
			memcpy(c->uidls[c->nlisted], sp + 1, ulen + 1);
			c->nlisted++;
			return true;
		}
	case ST_LIST_DATA:
		if (strcmp(line, ".") == 0) {
			unsigned long long sum = 0;

			for (unsigned long k = 0; k < c->nlisted; k++)
				sum += c->sizes[k];
			if (c->nlisted != c->nmsgs || sum != c->total) {
				tl_fail(c, R_LIST, "LIST disagrees with STAT");
				return false;
			}
			c->cur = 0;
			tl_churn_retr_next(c);
			return true;
		}
		if (!tl_two_numbers(line, false, &a, &b) ||
		    a != c->nlisted + 1 || a > c->nmsgs) {
			tl_fail(c, R_LIST, line);
			return false;
		}
		c->sizes[c->nlisted++] = b;
		return true;
	case ST_RETR_DATA:
		if (len == 1 && line[0] == '.') {
			if (g.allow_added_crlf &&
			    c->octets == c->sizes[c->cur - 1] + 2) {
				/* The server added a CRLF to a message that
				   lacks a final newline and left it out of
				   LIST's size (Dovecot does).  Counted. */
				g.added_crlf++;
			} else if (c->octets != c->sizes[c->cur - 1]) {
				char detail[96];

				snprintf(detail, sizeof(detail),
					 "message %lu: %llu octets, LIST said %lu",
					 c->cur, c->octets, c->sizes[c->cur - 1]);
				tl_fail(c, R_SIZE, detail);
				return false;
			}
			g.msgs++;
			g.bytes += c->octets;
			tl_churn_retr_next(c);
			return true;
		}
		if (line[0] == '.') {
			/* Byte-stuffed: the leading dot is not the message's. */
			if (line[1] != '.') {
				tl_fail(c, R_RETR, "a line starting with one dot");
				return false;
			}
			len--;
		}
		c->octets += len + 2;
		return true;
	default:
		return tl_line(c, line);
	}
}

/* churn: reads whole lines straight out of the input buffer (no copy of
   message lines beyond their first bytes, no allocation per line). */
static void tl_churn_read(struct tl_conn *c, struct evbuffer *in)
{
	char buf[TL_MAX_LINE + 1];

	tl_arm(c);   /* the step timeout runs from the last bytes received */
	for (;;) {
		size_t eol_len = 0, len, take;
		struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len,
							      EVBUFFER_EOL_CRLF_STRICT);

		if (eol.pos < 0) {
			size_t have = evbuffer_get_length(in);

			if (have > TL_MAX_DATA_LINE ||
			    (c->state != ST_RETR_DATA && have > TL_MAX_LINE))
				tl_fail(c, R_UNEXPECTED, "line too long");
			return;
		}
		len = (size_t)eol.pos;
		take = len < TL_MAX_LINE ? len : TL_MAX_LINE;
		if (evbuffer_copyout(in, buf, take) != (ev_ssize_t)take)
			tl_die("evbuffer_copyout failed");
		buf[take] = '\0';
		if (memchr(buf, '\0', take) != NULL) {
			tl_fail(c, R_UNEXPECTED, "NUL in a line");
			return;
		}
		evbuffer_drain(in, len + eol_len);
		if (!tl_churn_line(c, buf, len))
			return;
	}
}

/* ---- logins: USER/PASS, AUTH PLAIN, AUTH SCRAM-SHA-256 ---- */

/* The login was answered +OK: the session (churn) or holding (hold). */
static void tl_logged_in(struct tl_conn *c)
{
	if (g.mode == TL_CHURN) {
		tl_send(c, "STAT\r\n");
		c->state = ST_STAT;
		tl_arm(c);
		return;
	}
	c->state = ST_IDLE;
	event_del(c->ev);      /* no timeout while held */
	g.held++;
	tl_setup_done();
}

/* STLS was answered +OK: nothing may follow it before the handshake
   (RFC 2595: a client must discard it; a server that sends it is wrong).
   The plain bufferevent goes (it closes its descriptor once libevent is
   done with it); a TLS one takes over a duplicate of the socket. */
static void tl_stls_upgrade(struct tl_conn *c)
{
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	int nfd;
	SSL *ssl;

	if (evbuffer_get_length(bufferevent_get_input(c->bev)) != 0) {
		tl_fail(c, R_STLS, "bytes after STLS's +OK");
		return;
	}
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (nfd < 0) {
		tl_fail(c, R_SOCKET, strerror(errno));
		return;
	}
	bufferevent_free(c->bev);
	ssl = SSL_new(g.ctx);
	if (ssl == NULL)
		tl_die("SSL_new failed");
	if (g.sni != NULL)
		SSL_set_tlsext_host_name(ssl, g.sni);
	c->bev = bufferevent_openssl_socket_new(g.base, nfd, ssl,
			BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL)
		tl_die("cannot make a bufferevent");
	c->upgraded = true;
	c->state = ST_HANDSHAKE;
	bufferevent_setcb(c->bev, tl_read_cb, NULL, tl_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	tl_arm(c);
}

/* Sends "PREFIX" + base64(data) + CRLF. */
static void tl_send_b64(struct tl_conn *c, const char *prefix,
			const void *data, size_t len)
{
	char b64[TL_MAX_LINE];

	if (base64_encoded_len(len) >= sizeof(b64) - strlen(prefix) - 3)
		tl_die("a SASL message too long to send");
	base64_encode(data, len, b64);
	tl_send(c, "%s%s\r\n", prefix, b64);
}

/* RFC 5802 saslname: ',' and '=' escaped as =2C and =3D. */
static bool tl_saslname(char *out, size_t cap, const char *name)
{
	size_t n = 0;

	for (const char *p = name; *p != '\0'; p++) {
		const char *rep = *p == ',' ? "=2C" : *p == '=' ? "=3D" : NULL;
		size_t k = rep ? 3 : 1;

		if (n + k >= cap)
			return false;
		memcpy(out + n, rep ? rep : p, k);
		n += k;
	}
	out[n] = '\0';
	return true;
}

/* Starts the login the way --auth says. */
static void tl_login_start(struct tl_conn *c)
{
	char user[128], msg[512];
	int len;

	tl_user_name(user, sizeof(user), c->idx);
	switch (g.auth) {
	case AUTH_USER:
		tl_send(c, "USER %s\r\n", user);
		c->state = ST_USER;
		break;
	case AUTH_PLAIN:
		/* authzid (empty) NUL authcid NUL password */
		len = snprintf(msg, sizeof(msg), "%c%s%c%s", 0, user, 0,
			       g.password);
		if (len < 0 || (size_t)len >= sizeof(msg))
			tl_die("user name or password too long");
		tl_send_b64(c, "AUTH PLAIN ", msg, (size_t)len);
		c->state = ST_AUTH;
		break;
	case AUTH_SCRAM: {
		uint8_t raw[18];
		char name[240];
		struct tl_scram *x = calloc(1, sizeof(*x));

		if (x == NULL)
			tl_die("out of memory");
		free(c->scram);
		c->scram = x;
		if (RAND_bytes(raw, sizeof(raw)) != 1)
			tl_die("RAND_bytes failed");
		base64_encode(raw, sizeof(raw), x->nonce);   /* no '=' or ',' */
		if (!tl_saslname(name, sizeof(name), user))
			tl_die("user name too long");
		snprintf(x->bare, sizeof(x->bare), "n=%s,r=%s", name, x->nonce);
		len = snprintf(msg, sizeof(msg), "n,,%s", x->bare);
		tl_send_b64(c, "AUTH SCRAM-SHA-256 ", msg, (size_t)len);
		c->state = ST_SCRAM_FIRST;
		break;
	}
	}
	tl_arm(c);
}

/* The SaltedPassword for this user, salt and iteration count: computed
   (PBKDF2-HMAC-SHA-256), or the one kept from this user's last login when
   the salt and count are the same. */
static void tl_scram_salted(unsigned idx, const uint8_t *salt, size_t salt_len,
			    unsigned long iter, uint8_t *out)
{
	struct tl_scram_key *k = NULL;

	if (idx >= g.first && idx - g.first < g.scram_keys_len)
		k = &g.scram_keys[idx - g.first];
	if (k != NULL && k->iter == iter && k->salt_len == salt_len &&
	    memcmp(k->salt, salt, salt_len) == 0) {
		memcpy(out, k->salted, SHA256_DIGEST_LENGTH);
		return;
	}
	if (PKCS5_PBKDF2_HMAC(g.password, (int)strlen(g.password), salt,
			      (int)salt_len, (int)iter, EVP_sha256(),
			      SHA256_DIGEST_LENGTH, out) != 1)
		tl_die("PKCS5_PBKDF2_HMAC failed");
	g.pbkdf2_runs++;
	if (k != NULL && salt_len <= sizeof(k->salt)) {
		memcpy(k->salt, salt, salt_len);
		k->salt_len = salt_len;
		k->iter = iter;
		memcpy(k->salted, out, SHA256_DIGEST_LENGTH);
	}
}

static void tl_hmac(const uint8_t *key, const void *data, size_t len,
		    uint8_t *out)
{
	unsigned int n = 0;

	if (HMAC(EVP_sha256(), key, SHA256_DIGEST_LENGTH, data, len, out,
		 &n) == NULL || n != SHA256_DIGEST_LENGTH)
		tl_die("HMAC failed");
}

/* Decodes the base64 after "+ " into buf (NUL-terminated, no NUL inside);
   false if the line is no such challenge. */
static bool tl_challenge(const char *line, char *buf, size_t cap)
{
	size_t n;

	if (line[0] != '+' || line[1] != ' ' ||
	    base64_decode(line + 2, strlen(line + 2), (uint8_t *)buf, cap - 1,
			  &n) != 0 || memchr(buf, '\0', n) != NULL)
		return false;
	buf[n] = '\0';
	return true;
}

/* server-first "r=NONCE,s=SALT,i=ITER[,ext]": answers with client-final.
   False (and the connection failed) when the challenge is bad. */
static bool tl_scram_first(struct tl_conn *c, const char *line)
{
	struct tl_scram *x = c->scram;
	char sf[512], *r, *sv, *iv, *end, wo[600], msg[720], am[1500];
	char proof_b64[64];
	uint8_t salt[128], salted[32], ckey[32], skey[32], stored[32], csig[32];
	uint8_t ssig[32], proof[32];
	size_t salt_len, nl = strlen(x->nonce);
	unsigned long iter;

	if (!tl_challenge(line, sf, sizeof(sf)) || strncmp(sf, "r=", 2) != 0) {
		tl_fail(c, R_AUTH, line);
		return false;
	}
	r = sf + 2;
	sv = strstr(r, ",s=");
	iv = sv ? strstr(sv + 3, ",i=") : NULL;
	if (sv == NULL || iv == NULL || (size_t)(sv - r) <= nl ||
	    strncmp(r, x->nonce, nl) != 0) {
		tl_fail(c, R_AUTH, "server-first: no nonce that extends ours, salt or count");
		return false;
	}
	end = strchr(iv + 3, ',');
	if (!tl_parse_ul(iv + 3, end ? end : iv + 3 + strlen(iv + 3), &iter) ||
	    iter < 1 || iter > 10000000 ||
	    base64_decode(sv + 3, (size_t)(iv - sv - 3), salt, sizeof(salt),
			  &salt_len) != 0 || salt_len == 0) {
		tl_fail(c, R_AUTH, "server-first: bad salt or iteration count");
		return false;
	}
	/* client-final-without-proof: no channel binding ("n,," = biws). */
	snprintf(wo, sizeof(wo), "c=biws,r=%.*s", (int)(sv - r), r);
	snprintf(am, sizeof(am), "%s,%s,%s", x->bare, sf, wo);
	tl_scram_salted(c->idx, salt, salt_len, iter, salted);
	tl_hmac(salted, "Client Key", 10, ckey);
	tl_hmac(salted, "Server Key", 10, skey);
	SHA256(ckey, sizeof(ckey), stored);
	tl_hmac(stored, am, strlen(am), csig);
	tl_hmac(skey, am, strlen(am), ssig);
	for (size_t i = 0; i < sizeof(proof); i++)
		proof[i] = ckey[i] ^ csig[i];
	base64_encode(proof, sizeof(proof), proof_b64);
	memcpy(x->verifier, "v=", 2);
	base64_encode(ssig, sizeof(ssig), x->verifier + 2);
	int len = snprintf(msg, sizeof(msg), "%s,p=%s", wo, proof_b64);

	tl_send_b64(c, "", msg, (size_t)len);
	c->state = ST_SCRAM_FINAL;
	tl_arm(c);
	return true;
}

/* One reply line arrived in state c->state.  Returns false when the
   connection is gone. */
static bool tl_line(struct tl_conn *c, const char *line)
{
	bool ok = strncmp(line, "+OK", 3) == 0 &&
		  (line[3] == '\0' || line[3] == ' ');

	switch (c->state) {
	case ST_GREETING:
		if (!ok) {
			tl_fail(c, R_GREETING, line);
			return false;
		}
		tl_note_session(c);
		if (g.mode == TL_HANDSHAKE) {
			SSL *ssl = g.plain ? NULL
					   : bufferevent_openssl_get_ssl(c->bev);

			if (ssl != NULL && SSL_session_reused(ssl)) {
				tl_fail(c, R_TLS, "session resumed");
				return false;
			}
			g.ok++;
			tl_lat_add(tl_now_ms() - c->t_start);
			tl_after(c, true);
			return false;
		}
		if (g.stls) {
			tl_send(c, "CAPA\r\n");
			c->state = ST_CAPA;
			tl_arm(c);
			return true;
		}
		if (g.no_login) {
			c->state = ST_IDLE;
			event_del(c->ev);
			g.held++;
			tl_setup_done();
			return true;
		}
		tl_login_start(c);
		return true;
	case ST_CAPA:
		if (!ok) {
			tl_fail(c, R_CAPA, line);
			return false;
		}
		c->state = ST_CAPA_DATA;
		return true;
	case ST_CAPA_DATA:
		if (strcmp(line, ".") != 0) {
			if (strcasecmp(line, "STLS") == 0)
				c->capa_stls = true;
			return true;
		}
		if (!c->capa_stls) {
			tl_fail(c, R_CAPA, "CAPA does not name STLS");
			return false;
		}
		tl_send(c, "STLS\r\n");
		c->state = ST_STLS;
		tl_arm(c);
		return true;
	case ST_STLS:
		if (!ok) {
			tl_fail(c, R_STLS, line);
			return false;
		}
		tl_stls_upgrade(c);
		return false;   /* the plain bufferevent is gone: stop reading it */
	case ST_AUTH:
	case ST_SCRAM_DONE:
		if (!ok) {
			tl_fail(c, R_AUTH, line);
			return false;
		}
		tl_logged_in(c);
		return true;
	case ST_SCRAM_FIRST:
		return tl_scram_first(c, line);
	case ST_SCRAM_FINAL: {
		char sf[128];

		if (!tl_challenge(line, sf, sizeof(sf)) ||
		    strcmp(sf, c->scram->verifier) != 0) {
			tl_fail(c, R_AUTH, ok ? "+OK without the server's signature"
					      : line);
			return false;
		}
		tl_send(c, "\r\n");
		c->state = ST_SCRAM_DONE;
		tl_arm(c);
		return true;
	}
	case ST_USER:
		if (!ok) {
			tl_fail(c, R_USER, line);
			return false;
		}
		tl_send(c, "PASS %s\r\n", g.password);
		c->state = ST_PASS;
		tl_arm(c);
		return true;
	case ST_PASS:
		if (!ok) {
			tl_fail(c, R_PASS, line);
			return false;
		}
		tl_logged_in(c);
		return true;
	case ST_QUIT:
		if (ok && g.mode == TL_CHURN) {
			tl_churn_done(c);
			return false;
		}
		if (ok) {
			g.quit_ok++;
			tl_after(c, true);
		} else {
			tl_fail(c, R_QUIT, line);
		}
		return false;
	default:               /* idle, or a line during the handshake */
		tl_fail(c, R_UNEXPECTED, line);
		return false;
	}
}

static void tl_read_cb(struct bufferevent *bev, void *arg)
{
	struct tl_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	if (g.mode == TL_CHURN) {
		tl_churn_read(c, in);
		return;
	}
	for (;;) {
		size_t len;
		char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF_STRICT);
		bool alive;

		if (line == NULL) {
			if (evbuffer_get_length(in) > TL_MAX_LINE)
				tl_fail(c, R_UNEXPECTED, "reply line too long");
			return;
		}
		if (len > TL_MAX_LINE) {
			free(line);
			tl_fail(c, R_UNEXPECTED, "reply line too long");
			return;
		}
		alive = tl_line(c, line);
		free(line);
		if (!alive || evbuffer_get_length(in) == 0)
			return;
	}
}

static void tl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tl_conn *c = arg;
	char detail[160];

	if (what & BEV_EVENT_CONNECTED) {
		if (c->upgraded) {
			/* STLS: the handshake is done; now the login. */
			tl_note_session(c);
			if (g.no_login) {
				c->state = ST_IDLE;
				event_del(c->ev);
				g.held++;
				tl_setup_done();
				return;
			}
			tl_login_start(c);
			return;
		}
		/* TLS handshake done: now the greeting. */
		c->state = ST_GREETING;
		tl_arm(c);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		tl_fail(c, c->state == ST_IDLE ? R_LOST : R_EOF,
			"closed by the server");
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		unsigned long e = g.plain ? 0 : bufferevent_get_openssl_error(bev);
		int err = EVUTIL_SOCKET_ERROR();

		if (e != 0)
			ERR_error_string_n(e, detail, sizeof(detail));
		else
			snprintf(detail, sizeof(detail), "%s",
				 err ? strerror(err) : "error");
		if (c->state == ST_IDLE)
			tl_fail(c, R_LOST, detail);
		else
			tl_fail(c, e != 0 || c->state == ST_HANDSHAKE ? R_TLS
								      : R_EOF,
				detail);
	}
}

static void tl_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tl_fail(arg, R_TIMEOUT, "no reply in time");
}

/* The TCP connect finished (or timed out): set up the bufferevent. */
static void tl_connected_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tl_conn *c = arg;
	int err = 0;
	socklen_t len = sizeof(err);

	if (what & EV_TIMEOUT) {
		tl_fail(c, R_TIMEOUT, "connect timed out");
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		tl_fail(c, R_CONNECT, strerror(err));
		return;
	}
	event_free(c->ev);
	c->ev = evtimer_new(g.base, tl_timeout_cb, c);
	if (c->ev == NULL)
		tl_die("out of memory");
	if (g.plain || g.stls) {
		c->bev = bufferevent_socket_new(g.base, fd, BEV_OPT_CLOSE_ON_FREE);
		c->state = ST_GREETING;
	} else {
		SSL *ssl = SSL_new(g.ctx);

		if (ssl == NULL)
			tl_die("SSL_new failed");
		if (g.sni != NULL)
			SSL_set_tlsext_host_name(ssl, g.sni);
		c->bev = bufferevent_openssl_socket_new(g.base, fd, ssl,
				BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
		if (c->bev == NULL)
			SSL_free(ssl);
		c->state = ST_HANDSHAKE;
	}
	if (c->bev == NULL)
		tl_die("cannot make a bufferevent");
	c->fd = -1;   /* the bufferevent owns it now */
	bufferevent_setcb(c->bev, tl_read_cb, NULL, tl_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	tl_arm(c);
}

/* Opens one connection; idx is the user number (hold) or the worker. */
static void tl_start(unsigned idx)
{
	struct tl_conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (c == NULL)
		tl_die("out of memory");
	c->idx = idx;
	c->state = ST_CONNECT;
	c->t_start = tl_now_ms();
	g.active++;
	if (g.mode == TL_HOLD)
		g.conns[idx - g.first] = c;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		/* Not the server's fault (out of descriptors?), but the
		   connection failed all the same.  tl_launch's guard and
		   tl_after's delayed restart keep this from recursing. */
		char detail[128];

		snprintf(detail, sizeof(detail), "%s", strerror(errno));
		tl_fail(c, R_SOCKET, detail);
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->ev = event_new(g.base, c->fd, EV_WRITE, tl_connected_cb, c);
	if (c->ev == NULL)
		tl_die("out of memory");
	if (connect(c->fd, (struct sockaddr *)&g.addr, sizeof(g.addr)) < 0 &&
	    errno != EINPROGRESS) {
		char detail[128];

		snprintf(detail, sizeof(detail), "%s", strerror(errno));
		tl_fail(c, R_CONNECT, detail);
		return;
	}
	tl_arm(c);
}

/* ---- hold: stopping ---- */

/* Sends QUIT on every held connection; the loop ends when all are done. */
static void tl_hold_stop(void)
{
	unsigned idle = 0;

	g.stopping = true;
	if (!g.ready || g.quitting)
		return;   /* tl_ready calls again once set-up is over */
	g.quitting = true;
	for (unsigned i = 0; i < g.n; i++)
		if (g.conns[i] != NULL && g.conns[i]->state == ST_IDLE)
			idle++;
	printf("tlsload: stopping held=%u lost=%lu\n", idle, g.lost);
	fflush(stdout);
	g.quit_pending = idle;
	if (idle == 0) {
		event_base_loopexit(g.base, NULL);
		return;
	}
	for (unsigned i = 0; i < g.n; i++) {
		struct tl_conn *c = g.conns[i];

		if (c == NULL || c->state != ST_IDLE)
			continue;
		tl_send(c, "QUIT\r\n");
		c->state = ST_QUIT;
		tl_arm(c);
	}
}

static void tl_hold_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	tl_hold_stop();
}

static void tl_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (g.mode == TL_HOLD) {
		if (g.quitting) {
			/* Second signal: give up at once. */
			event_base_loopexit(g.base, NULL);
			return;
		}
		fprintf(stderr, "tlsload: signal %d: stopping\n", (int)sig);
		tl_hold_stop();
	} else {
		g.stopping = true;
		event_base_loopexit(g.base, NULL);
	}
}

static void tl_stdin_cb(evutil_socket_t fd, short what, void *arg)
{
	char buf[512];
	ssize_t r = read(fd, buf, sizeof(buf));

	(void)what;
	if (r > 0)
		return;
	event_del((struct event *)arg);
	tl_hold_stop();
}

/* ---- handshake: the end ---- */

static void tl_handshake_end(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	g.stopping = true;
	g.t_end = tl_now_ms();
	event_base_loopexit(g.base, NULL);
}

/* churn: -t is over.  No new sessions; those in flight run to their
   QUIT, for at most --timeout more seconds. */
static void tl_drain_cap(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fprintf(stderr, "tlsload: %lu sessions still open after the drain time: "
		"cut\n", g.active);
	event_base_loopexit(g.base, NULL);
}

static void tl_churn_end(evutil_socket_t fd, short what, void *arg)
{
	struct timeval tv = tl_tv(g.timeout);

	(void)fd;
	(void)what;
	(void)arg;
	g.stopping = true;
	g.t_end = tl_now_ms();
	if (g.active == 0) {
		event_base_loopexit(g.base, NULL);
		return;
	}
	event_base_once(g.base, -1, EV_TIMEOUT, tl_drain_cap, NULL, &tv);
}

static int tl_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double tl_pct(double p)
{
	if (g.lat_len == 0)
		return 0;
	size_t i = (size_t)(p * (double)(g.lat_len - 1) + 0.5);

	return g.lat[i];
}

/* ---- set-up ---- */

/* How connections start: plain, implicit TLS or STLS. */
static const char *tl_start_name(void)
{
	return g.stls ? "stls" : g.plain ? "plain" : "tls";
}

static void tl_usage(void)
{
	fprintf(stderr,
"usage: tlsload hold      [options] HOST PORT\n"
"       tlsload handshake [options] HOST PORT\n"
"       tlsload churn     [options] HOST PORT\n"
"       tlsload bulk      [options] HOST PORT\n"
"  -n N            hold: connections to open (default 100)\n"
"  -c N            hold: most connections being set up at once (default 200);\n"
"                  handshake, churn, bulk: concurrent workers (default 8)\n"
"  -t SECONDS      handshake, churn: how long (default 10); bulk: the most\n"
"                  time allowed (default 600); hold: how long\n"
"                  to hold after set-up (default: until SIGTERM/SIGINT)\n"
"  -u PATTERN      user names: a %%d with optional 0 and width (default u%%05d)\n"
"  -f N            first user number (default 0); churn: worker w is\n"
"                  user N + w\n"
"  -p PASSWORD     password for every user (default: $TLSLOAD_PASSWORD)\n"
"  --plain         no TLS (the default for churn)\n"
"  --tls           implicit TLS (the default for hold and handshake)\n"
"  --stls          plain connect, CAPA, STLS, a full handshake (hold, churn,\n"
"                  bulk)\n"
"  --auth MECH     login: user (USER/PASS, the default), plain (AUTH PLAIN\n"
"                  with an initial response) or scram (AUTH SCRAM-SHA-256)\n"
"  --tls-version V 1.2 or 1.3 only (default: either, the server picks)\n"
"  --cafile FILE   verify the server certificate against FILE\n"
"  --sni NAME      server name to send\n"
"  --timeout S     per-step timeout in seconds (default 30)\n"
"  --until-eof     hold: stop also when standard input ends\n"
"  --no-login      hold: stay in AUTHORIZATION after the greeting\n"
"  --allow-added-crlf  churn: accept a message exactly 2 octets longer\n"
"                  than LIST said (a CRLF added to a message without a\n"
"                  final newline and not counted); counted as added_crlf\n");
	exit(2);
}

static void tl_parse_pattern(const char *pat)
{
	static char prefix[128], suffix[128];
	const char *pc = strchr(pat, '%');
	const char *p;
	int width = 0;

	if (pc == NULL || (size_t)(pc - pat) >= sizeof(prefix))
		tl_die("-u: the pattern needs one %%d");
	memcpy(prefix, pat, (size_t)(pc - pat));
	prefix[pc - pat] = '\0';
	p = pc + 1;
	g.user_zero = *p == '0';
	while (*p >= '0' && *p <= '9')
		width = width * 10 + (*p++ - '0');
	if (*p != 'd' || width > 20 || strchr(p + 1, '%') != NULL ||
	    strlen(p + 1) >= sizeof(suffix))
		tl_die("-u: the pattern needs one %%d (e.g. u%%05d)");
	strcpy(suffix, p + 1);
	g.user_prefix = prefix;
	g.user_suffix = suffix;
	g.user_width = width;
}

static double tl_num(const char *s, const char *what)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || v < 0)
		tl_die("bad %s: %s", what, s);
	return v;
}

static void tl_raise_fd_limit(unsigned need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < need) {
		struct rlimit more = { need, need > rl.rlim_max ? need : rl.rlim_max };

		if (setrlimit(RLIMIT_NOFILE, &more) == 0)
			rl = more;
	}
	if (rl.rlim_cur < need)
		fprintf(stderr, "tlsload: warning: open files limit %lu < %u "
			"needed (ulimit -n)\n", (unsigned long)rl.rlim_cur, need);
}

static void tl_tls_setup(void)
{
	g.ctx = SSL_CTX_new(TLS_client_method());
	if (g.ctx == NULL)
		tl_die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(g.ctx, g.tls_version ? g.tls_version
							   : TLS1_2_VERSION);
	if (g.tls_version)
		SSL_CTX_set_max_proto_version(g.ctx, g.tls_version);
	/* Never resume: every handshake is a full one. */
	SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(g.ctx, SSL_OP_NO_TICKET);
	/* 10,000 idle connections need no record buffers here either. */
	SSL_CTX_set_mode(g.ctx, SSL_MODE_RELEASE_BUFFERS);
	if (g.cafile != NULL) {
		if (SSL_CTX_load_verify_locations(g.ctx, g.cafile, NULL) != 1)
			tl_die("cannot load %s", g.cafile);
		SSL_CTX_set_verify(g.ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);
	}
}

int main(int argc, char **argv)
{
	enum { O_PLAIN = 256, O_TLS, O_TLS_VERSION, O_CAFILE, O_SNI, O_TIMEOUT,
	       O_EOF, O_NO_LOGIN, O_ADDED_CRLF, O_STLS, O_AUTH };
	static const struct option longopts[] = {
		{ "plain", no_argument, NULL, O_PLAIN },
		{ "tls", no_argument, NULL, O_TLS },
		{ "tls-version", required_argument, NULL, O_TLS_VERSION },
		{ "cafile", required_argument, NULL, O_CAFILE },
		{ "sni", required_argument, NULL, O_SNI },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "until-eof", no_argument, NULL, O_EOF },
		{ "no-login", no_argument, NULL, O_NO_LOGIN },
		{ "allow-added-crlf", no_argument, NULL, O_ADDED_CRLF },
		{ "stls", no_argument, NULL, O_STLS },
		{ "auth", required_argument, NULL, O_AUTH },
		{ NULL, 0, NULL, 0 },
	};
	bool conc_set = false, tls_set = false, plain_set = false;
	struct event *sigterm, *sigint, *ev_stdin = NULL;
	int opt;

	if (argc < 2)
		tl_usage();
	if (strcmp(argv[1], "hold") == 0)
		g.mode = TL_HOLD;
	else if (strcmp(argv[1], "handshake") == 0)
		g.mode = TL_HANDSHAKE;
	else if (strcmp(argv[1], "churn") == 0)
		g.mode = TL_CHURN;
	else if (strcmp(argv[1], "bulk") == 0) {
		g.mode = TL_CHURN;
		g.bulk = true;
	} else
		tl_usage();
	argv++;
	argc--;

	g.n = 100;
	g.conc = 200;
	g.timeout = 30;
	g.seconds = -1;
	g.password = getenv("TLSLOAD_PASSWORD");
	tl_parse_pattern("u%05d");
	while ((opt = getopt_long(argc, argv, "n:c:t:u:f:p:", longopts,
				  NULL)) != -1) {
		switch (opt) {
		case 'n': g.n = (unsigned)tl_num(optarg, "-n"); break;
		case 'c': g.conc = (unsigned)tl_num(optarg, "-c"); conc_set = true; break;
		case 't': g.seconds = tl_num(optarg, "-t"); break;
		case 'u': tl_parse_pattern(optarg); break;
		case 'f': g.first = (unsigned)tl_num(optarg, "-f"); break;
		case 'p': g.password = optarg; break;
		case O_PLAIN: plain_set = true; break;
		case O_TLS: tls_set = true; break;
		case O_TLS_VERSION:
			if (strcmp(optarg, "1.2") == 0)
				g.tls_version = TLS1_2_VERSION;
			else if (strcmp(optarg, "1.3") == 0)
				g.tls_version = TLS1_3_VERSION;
			else
				tl_die("--tls-version: 1.2 or 1.3");
			break;
		case O_CAFILE: g.cafile = optarg; break;
		case O_SNI: g.sni = optarg; break;
		case O_TIMEOUT: g.timeout = tl_num(optarg, "--timeout"); break;
		case O_EOF: g.until_eof = true; break;
		case O_NO_LOGIN: g.no_login = true; break;
		case O_ADDED_CRLF: g.allow_added_crlf = true; break;
		case O_STLS: g.stls = true; break;
		case O_AUTH:
			if (strcmp(optarg, "user") == 0)
				g.auth = AUTH_USER;
			else if (strcmp(optarg, "plain") == 0)
				g.auth = AUTH_PLAIN;
			else if (strcmp(optarg, "scram") == 0)
				g.auth = AUTH_SCRAM;
			else
				tl_die("--auth: user, plain or scram");
			break;
		default: tl_usage();
		}
	}
	if (argc - optind != 2)
		tl_usage();
	if (g.timeout <= 0)
		tl_die("--timeout must be more than 0");
	if (tls_set && plain_set)
		tl_die("--tls and --plain: one or the other");
	if (g.mode == TL_HANDSHAKE && plain_set)
		tl_die("handshake is TLS only");
	if (g.stls && (tls_set || plain_set || g.mode == TL_HANDSHAKE))
		tl_die("--stls: not with --tls, --plain or handshake");
	g.plain = !g.stls && (plain_set || (g.mode == TL_CHURN && !tls_set));
	if (g.mode == TL_HANDSHAKE || g.mode == TL_CHURN) {
		if (!conc_set)
			g.conc = 8;
		if (g.seconds <= 0)
			g.seconds = g.bulk ? 600 : 10;
	}
	if (g.conc == 0 || (g.mode == TL_HOLD && g.n == 0))
		tl_die("-n and -c must be at least 1");
	if ((g.mode == TL_HOLD || g.mode == TL_CHURN) && g.password == NULL &&
	    !g.no_login)
		tl_die("hold and churn need a password (-p or $TLSLOAD_PASSWORD)");
	if (g.mode == TL_CHURN && g.no_login)
		tl_die("--no-login is for hold");
	memset(&g.addr, 0, sizeof(g.addr));
	g.addr.sin_family = AF_INET;
	if (inet_pton(AF_INET, argv[optind], &g.addr.sin_addr) != 1)
		tl_die("HOST must be an IPv4 address: %s", argv[optind]);
	double port = tl_num(argv[optind + 1], "PORT");
	if (port < 1 || port > 65535)
		tl_die("bad PORT %s", argv[optind + 1]);
	g.addr.sin_port = htons((uint16_t)port);

	signal(SIGPIPE, SIG_IGN);
	tl_raise_fd_limit((g.mode == TL_HOLD ? g.n : g.conc) + 64);
	if (!g.plain)
		tl_tls_setup();
	if (g.auth == AUTH_SCRAM) {
		g.scram_keys_len = g.mode == TL_HOLD ? g.n : g.conc;
		g.scram_keys = calloc(g.scram_keys_len, sizeof(*g.scram_keys));
		if (g.scram_keys == NULL)
			tl_die("out of memory");
	}
	g.base = event_base_new();
	if (g.base == NULL)
		tl_die("cannot make an event loop");
	sigterm = evsignal_new(g.base, SIGTERM, tl_signal_cb, NULL);
	sigint = evsignal_new(g.base, SIGINT, tl_signal_cb, NULL);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);

	g.t0 = tl_now_ms();
	if (g.mode == TL_HOLD) {
		g.conns = calloc(g.n, sizeof(*g.conns));
		if (g.conns == NULL)
			tl_die("out of memory");
		if (g.until_eof) {
			ev_stdin = event_new(g.base, STDIN_FILENO, EV_READ | EV_PERSIST,
					     tl_stdin_cb, event_self_cbarg());
			event_add(ev_stdin, NULL);
		}
		/* The first -c; the rest follow as these finish. */
		tl_launch();
		event_base_dispatch(g.base);
		printf("tlsload: done conns=%u logged_in=%u quit_ok=%u lost=%lu "
		       "failed=%lu\n", g.n, g.held, g.quit_ok, g.lost,
		       tl_failed_total());
		tl_print_failures();
		tl_print_cpu("cpu");
	} else if (g.mode == TL_CHURN) {
		struct timeval tv = tl_tv(g.seconds);
		struct rusage ru;
		double secs, cpu;

		event_base_once(g.base, -1, EV_TIMEOUT,
				g.bulk ? tl_handshake_end : tl_churn_end, NULL, &tv);
		for (unsigned w = 0; w < g.conc; w++)
			tl_start(g.first + w);
		g.bulk_launched = true;
		if (!g.bulk || g.active > 0)
			event_base_dispatch(g.base);
		if (g.t_end == 0)
			g.t_end = tl_now_ms();
		secs = (g.t_end - g.t0) / 1e3;
		getrusage(RUSAGE_SELF, &ru);
		cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		      (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
		if (g.bulk) {
			unsigned long cut = g.conc > g.ok ? g.conc - g.ok : 0;

			if (cut > 0 && tl_failed_total() < cut)
				tl_fail_note(R_UNEXPECTED, "%lu sessions cut at -t",
					     cut - tl_failed_total());
			printf("tlsload: bulk secs=%.3f conc=%u sessions=%lu "
			       "messages=%llu bytes=%llu bytes_per_s=%.0f "
			       "mb_per_s=%.2f errors=%lu added_crlf=%lu "
			       "client_cpu_s=%.3f tls=%s cert=%s start=%s auth=%s\n", secs, g.conc,
			       g.ok, g.msgs, g.bytes,
			       secs > 0 ? (double)g.bytes / secs : 0.0,
			       secs > 0 ? (double)g.bytes / secs / 1e6 : 0.0,
			       tl_failed_total(), g.added_crlf, cpu,
			       g.plain ? "none" : (g.proto[0] ? g.proto : "?"),
			       g.plain ? "none" : (g.cert[0] ? g.cert : "?"),
			       tl_start_name(), tl_auth_name[g.auth]);
			tl_print_failures();
			tl_print_cpu("cpu");
			goto out;
		}
		qsort(g.lat, g.lat_len, sizeof(*g.lat), tl_cmp_double);
		/* sessions: finished before -t ran out (the rate); total:
		   with the drained ones (what the CPU figures divide by). */
		printf("tlsload: churn secs=%.2f conc=%u sessions=%lu total=%lu "
		       "rate=%.1f errors=%lu p50_ms=%.2f p99_ms=%.2f messages=%llu "
		       "bytes=%llu added_crlf=%lu client_cpu_s=%.3f "
		       "client_cpu_us_per_session=%.1f tls=%s cert=%s start=%s "
		       "auth=%s pbkdf2=%lu\n", secs,
		       g.conc, g.ok_in_time, g.ok,
		       secs > 0 ? (double)g.ok_in_time / secs : 0.0,
		       tl_failed_total(), tl_pct(0.5), tl_pct(0.99), g.msgs,
		       g.bytes, g.added_crlf, cpu,
		       g.ok ? cpu * 1e6 / (double)g.ok : 0.0,
		       g.plain ? "none" : (g.proto[0] ? g.proto : "?"),
		       g.plain ? "none" : (g.cert[0] ? g.cert : "?"),
		       tl_start_name(), tl_auth_name[g.auth], g.pbkdf2_runs);
		tl_print_failures();
		tl_print_cpu("cpu");
	} else {
		struct timeval tv = tl_tv(g.seconds);

		event_base_once(g.base, -1, EV_TIMEOUT, tl_handshake_end, NULL, &tv);
		for (unsigned w = 0; w < g.conc; w++)
			tl_start(w);
		event_base_dispatch(g.base);
		if (g.t_end == 0)
			g.t_end = tl_now_ms();
		double secs = (g.t_end - g.t0) / 1e3;
		struct rusage ru;

		getrusage(RUSAGE_SELF, &ru);
		double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
			     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
		qsort(g.lat, g.lat_len, sizeof(*g.lat), tl_cmp_double);
		printf("tlsload: handshake secs=%.2f conc=%u ok=%lu rate=%.1f "
		       "errors=%lu p50_ms=%.2f p99_ms=%.2f client_cpu_us_per_hs=%.1f "
		       "tls=%s cert=%s\n", secs, g.conc, g.ok,
		       secs > 0 ? (double)g.ok / secs : 0.0, tl_failed_total(),
		       tl_pct(0.5), tl_pct(0.99),
		       g.ok ? cpu * 1e6 / (double)g.ok : 0.0,
		       g.plain ? "none" : (g.proto[0] ? g.proto : "?"),
		       g.plain ? "none" : (g.cert[0] ? g.cert : "?"));
		tl_print_failures();
		tl_print_cpu("cpu");
	}
out:
	fflush(stdout);
	/* Connections still open (a second signal, handshake workers) go
	   with the process; no need to free them one by one. */
	if (ev_stdin != NULL)
		event_free(ev_stdin);
	event_free(sigterm);
	event_free(sigint);
	return tl_failed_total() == 0 ? 0 : 1;
}
