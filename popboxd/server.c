/*
 * server.c — the loop of a login or a mail process (see server.h).
 *
 * Every login process watches the same listening sockets; a new
 * connection goes to the process that accepts it first.  No SO_REUSEPORT:
 * a second popboxd on the same port must fail to start, not share it.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth-client.h"
#include "conn.h"
#include "handover.h"
#include "jobs.h"
#include "listen-addr.h"
#include "lmtp-conn.h"
#include "log.h"
#include "unix-listen.h"

/* Pending connections per listening socket. */
#define SERVER_BACKLOG 1024
/* After EMFILE, accepting pauses this long instead of spinning. */
#define SERVER_EMFILE_PAUSE_MS 100

struct listener {
	bool tls;                     /* implicit TLS (RFC 8314) */
	bool lmtp;                    /* mail process: the MTA's LMTP socket */
	struct evconnlistener *ev;
	struct event *resume;
	struct loop *loop;
};

struct server {
	struct server_context ctx;
	int fds[2 * SETTINGS_MAX_LISTEN];   /* plain addresses first, then TLS */
	bool fd_tls[2 * SETTINGS_MAX_LISTEN];
	size_t fd_count;
	struct listener *listeners[2 * SETTINGS_MAX_LISTEN];
	int lmtp_fd;                  /* lmtp_listen, or -1 */
	struct listener *lmtp_listener;
	unsigned int open;            /* connections and relays */
	bool retiring;                /* SIGUSR1: exit when open reaches 0 */
	struct event *sigusr1;
	char hostname[256];
};

static int bind_one(const struct sockaddr_storage *ss, socklen_t len,
		    const char **error_r)
{
	int one = 1, zero = 0;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	/* SO_REUSEADDR only: a second server on the same port must fail. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, (const struct sockaddr *)ss, len) < 0 ||
	    listen(fd, SERVER_BACKLOG) < 0) {
		*error_r = strerror(errno);
		close(fd);
		return -1;
	}
	return fd;
}

/* proto: "" for POP3, " proto=lmtp" for the LMTP listener. */
static void log_bound(int fd, const char *proto)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";

	memset(&ss, 0, sizeof(ss));
	unsigned port = 0;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
		port = ntohs(in4->sin_port);
		log_info("event=listening%s addr=%s:%u", proto, host, port);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		log_info("event=listening%s addr=[%s]:%u", proto, host, port);
	}
}

/* Binds one address; port 0 becomes the kernel's choice. */
static int bind_address(struct server *server, const char *spec, bool tls,
			const char **error_r)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (listen_addr_parse(spec, &ss, &len, error_r) < 0)
		return -1;
	int fd = bind_one(&ss, len, error_r);
	if (fd < 0)
		return -1;
	log_bound(fd, "");
	server->fds[server->fd_count] = fd;
	server->fd_tls[server->fd_count++] = tls;
	return 0;
}

/*
 * The LMTP socket file, mode 0666 (as Dovecot's lmtp socket): who may hand
 * over mail is decided by the directory's permissions.  Made the safe way
 * (lib/unix-listen.h): the directory is often the MTA's, writable by a
 * user that is not root.
 */
static int bind_unix(const char *path, const char **error_r)
{
	const struct unix_listen_params params = {
		.type = SOCK_STREAM,
		.mode = 0666,
		.backlog = SERVER_BACKLOG,
	};
	struct unix_listen_id id;
	int fd = unix_listen(path, &params, &id, error_r);

	if (fd >= 0)
		log_info("event=listening proto=lmtp path=%s", path);
	return fd;
}

/* lmtp_listen: "unix:/path" or an address the POP3 listeners take. */
static int bind_lmtp(struct server *server, const char *spec,
		     const char **error_r)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;

	if (strncmp(spec, "unix:", 5) == 0) {
		fd = bind_unix(spec + 5, error_r);
	} else {
		if (listen_addr_parse(spec, &ss, &len, error_r) < 0)
			return -1;
		fd = bind_one(&ss, len, error_r);
		if (fd >= 0)
			log_bound(fd, " proto=lmtp");
	}
	if (fd < 0)
		return -1;
	server->lmtp_fd = fd;
	return 0;
}

int server_bind(const struct popboxd_settings *set, struct server **server_r,
		const char **error_r)
{
	struct server *server = calloc(1, sizeof(*server));

	if (server == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	server->ctx.set = set;
	server->lmtp_fd = -1;
	for (size_t i = 0; i < set->listen_count; i++) {
		if (bind_address(server, set->listen[i], false, error_r) < 0)
			goto fail;
	}
	for (size_t i = 0; i < set->tls_listen_count; i++) {
		if (bind_address(server, set->tls_listen[i], true, error_r) < 0)
			goto fail;
	}
	if (set->lmtp_listen != NULL && bind_lmtp(server, set->lmtp_listen,
						  error_r) < 0)
		goto fail;
	*server_r = server;
	return 0;
fail:
	server_close_listeners(server);
	server_close_lmtp_listener(server);
	free(server);
	return -1;
}

void server_close_listeners(struct server *server)
{
	for (size_t i = 0; i < server->fd_count; i++)
		close(server->fds[i]);
	server->fd_count = 0;
}

void server_close_lmtp_listener(struct server *server)
{
	if (server->lmtp_fd >= 0)
		close(server->lmtp_fd);
	server->lmtp_fd = -1;
}

static void accept_callback(struct evconnlistener *ev, evutil_socket_t fd,
			    struct sockaddr *addr, int addrlen, void *arg)
{
	struct listener *l = arg;
	(void)ev;
	if (l->lmtp)
		lmtp_conn_accept(l->loop, fd, addr, (socklen_t)addrlen);
	else
		conn_accept(l->loop, fd, addr, (socklen_t)addrlen, l->tls);
}

static void resume_callback(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	(void)fd;
	(void)what;
	evconnlistener_enable(l->ev);
}

/* Out of descriptors: pause accepting instead of spinning on the error. */
static void accept_error_callback(struct evconnlistener *ev, void *arg)
{
	struct listener *l = arg;
	int error = EVUTIL_SOCKET_ERROR();

	if (error != EMFILE && error != ENFILE && error != ENOBUFS &&
	    error != ENOMEM)
		return;
	log_warn("event=accept-paused error=\"%s\"", strerror(error));
	evconnlistener_disable(ev);
	struct timeval tv = { 0, SERVER_EMFILE_PAUSE_MS * 1000 };
	evtimer_add(l->resume, &tv);
}

/* ---- the process's count of open connections ---- */

static void server_check_retired(struct server *server)
{
	if (server->retiring && server->open == 0) {
		log_info("event=stopped role=login reason=retired");
		_exit(0);
	}
}

static void server_conn_started(void *context)
{
	struct server *server = context;
	server->open++;
}

static void server_conn_ended(void *context)
{
	struct server *server = context;
	server->open--;
	server_check_retired(server);
}

/* SIGUSR1 (login): stop accepting; the master has started a replacement
   (new certificate); go when the last connection has. */
static void sigusr1_callback(evutil_socket_t fd, short what, void *arg)
{
	struct server *server = arg;
	(void)fd;
	(void)what;
	if (server->retiring)
		return;
	server->retiring = true;
	for (size_t i = 0; i < server->fd_count; i++) {
		if (server->listeners[i] != NULL) {
			evconnlistener_free(server->listeners[i]->ev);
			event_free(server->listeners[i]->resume);
			free(server->listeners[i]);
			server->listeners[i] = NULL;
		}
	}
	server->fd_count = 0;
	log_info("event=retiring role=login open=%u", server->open);
	server_check_retired(server);
}

static struct loop *loop_create(struct server *server)
{
	struct loop *loop = calloc(1, sizeof(*loop));

	if (loop == NULL || (loop->base = event_base_new()) == NULL)
		fatal("event=startup error=\"cannot create event loop\"");
	loop->ctx = &server->ctx;
	loop->index = 0;
	return loop;
}

static struct listener *listener_create(struct loop *loop, int fd, bool tls,
					bool lmtp)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (l == NULL)
		fatal("event=startup error=\"out of memory\"");
	l->loop = loop;
	l->tls = tls;
	l->lmtp = lmtp;
	l->resume = evtimer_new(loop->base, resume_callback, l);
	l->ev = evconnlistener_new(loop->base, accept_callback, l,
				   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
				   0, fd);
	if (l->ev == NULL || l->resume == NULL)
		fatal("event=startup error=\"cannot create listener\"");
	evconnlistener_set_error_cb(l->ev, accept_error_callback);
	return l;
}

static void listeners_create(struct server *server, struct loop *loop)
{
	for (size_t i = 0; i < server->fd_count; i++)
		server->listeners[i] = listener_create(loop, server->fds[i],
						       server->fd_tls[i], false);
}

static void context_init(struct server *server, const struct server_params *p,
			 struct loop *loop, enum conn_role role)
{
	const struct popboxd_settings *set = p->set;
	const char *error;

	server->ctx.set = set;
	server->ctx.role = role;
	server->ctx.tls = p->tls;
	server->ctx.mail_sockets = p->mail_sockets;
	server->ctx.mail_socket_count = p->mail_socket_count;
	server->ctx.conn_started = server_conn_started;
	server->ctx.conn_ended = server_conn_ended;
	server->ctx.conn_context = server;
	server->ctx.limits = p->limits;
	server->ctx.limits_index = p->limits_index;
	/* The pre-auth pool is shared out among the login processes. */
	server->ctx.preauth_limit = set->max_preauth_connections /
				    (p->workers > 0 ? p->workers : 1);
	if (server->ctx.preauth_limit == 0)
		server->ctx.preauth_limit = 1;
	server->ctx.auth = auth_client_new(loop->base, p->auth_socket);
	if (server->ctx.auth == NULL)
		fatal("event=startup error=\"out of memory\"");
	if (set->hostname != NULL && set->hostname[0] != '\0')
		snprintf(server->hostname, sizeof(server->hostname), "%s", set->hostname);
	else if (gethostname(server->hostname, sizeof(server->hostname) - 1) < 0)
		snprintf(server->hostname, sizeof(server->hostname), "localhost");
	server->ctx.hostname = server->hostname;
	server->ctx.pop3 = (struct pop3_config){
		.apop = set->apop,
		.login_delay = set->login_delay,
		.expire_days = set->expire_days,
		.max_auth_failures = set->max_auth_failures,
		.max_bad_commands = set->max_bad_commands,
		.sasl_mechs = p->sasl_mechs,
		.implementation = "popbox",
	};
	server->ctx.maildrop.login_delay = set->login_delay;
	if (netmask_list_parse(set->trusted_networks, strlen(set->trusted_networks),
			       &server->ctx.trusted, &error) < 0)
		fatal("event=startup error=\"trusted_networks: %s\"", error);
}

void server_run_login(struct server *server, const struct server_params *p)
{
	struct loop *loop = loop_create(server);

	signal(SIGPIPE, SIG_IGN);
	context_init(server, p, loop, CONN_ROLE_LOGIN);
	listeners_create(server, loop);
	server->sigusr1 = evsignal_new(loop->base, SIGUSR1, sigusr1_callback, server);
	if (server->sigusr1 == NULL || event_add(server->sigusr1, NULL) < 0)
		fatal("event=startup error=\"cannot watch signals\"");
	log_info("event=started role=login");
	event_base_dispatch(loop->base);
	fatal("event=stopped role=login error=\"event loop ended\"");
}

static struct loop *mail_loop;

static void handover_arrived(int fd, struct handover *h, void *context)
{
	(void)context;
	conn_adopt(mail_loop, fd, h);
}

void server_run_mail(struct server *server, const struct server_params *p)
{
	const char *error;

	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	mail_loop = loop_create(server);
	context_init(server, p, mail_loop, CONN_ROLE_MAIL);
	if (jobs_start(p->set->auth_workers, &server->ctx.jobs, &error) < 0)
		fatal("event=startup role=mail error=\"%s\"", error);
	if (handover_listen(mail_loop->base, p->mail_listen_fd, p->uid_checks,
			    p->login_uid, handover_arrived, NULL) == NULL)
		fatal("event=startup role=mail error=\"cannot listen\"");
	/* Every mail process accepts the MTA's LMTP connections. */
	if (server->lmtp_fd >= 0) {
		lmtp_conn_setup(mail_loop);
		server->lmtp_listener = listener_create(mail_loop, server->lmtp_fd,
							false, true);
	}
	log_info("event=started role=mail workers=%u", p->set->auth_workers);
	event_base_dispatch(mail_loop->base);
	fatal("event=stopped role=mail error=\"event loop ended\"");
}
