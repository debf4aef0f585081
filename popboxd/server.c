/*
 * server.c — listeners and loop threads (see server.h).
 *
 * Each loop thread owns one event_base and, for every configured address,
 * a descriptor of the one listening socket; a new connection goes to the
 * loop that accepts it first.  No SO_REUSEPORT: a second popboxd on the
 * same port must fail to start, not share the port.
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

#include "auth-penalty.h"
#include "conn.h"
#include "jobs.h"
#include "listen-addr.h"
#include "log.h"

/* Pending connections per listening socket. */
#define SERVER_BACKLOG 1024
/* Upper bound on loop threads (settings allow up to this many). */
#define SERVER_MAX_LOOPS 256
/* After EMFILE, accepting pauses this long instead of spinning. */
#define SERVER_EMFILE_PAUSE_MS 100

struct listener {
	bool tls;                     /* implicit TLS (RFC 8314) */
	struct evconnlistener *ev;
	struct event *resume;
	struct loop *loop;
};

struct server {
	struct server_context ctx;
	unsigned int loop_count;
	struct loop *loops[SERVER_MAX_LOOPS];
	/* fds[loop][address] until the loops take them over: the plain
	   addresses first, then the implicit-TLS ones */
	int fds[SERVER_MAX_LOOPS][2 * SETTINGS_MAX_LISTEN];
	bool fd_tls[2 * SETTINGS_MAX_LISTEN];
	size_t fd_count;
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

static void log_bound(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN];
	unsigned port = 0;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
		port = ntohs(in4->sin_port);
		log_info("event=listening addr=%s:%u", host, port);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		log_info("event=listening addr=[%s]:%u", host, port);
	}
}

/* Binds one address on every loop; port 0 becomes the kernel's choice. */
static int bind_address(struct server *server, size_t index, const char *spec,
			const char **error_r)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (listen_addr_parse(spec, &ss, &len, error_r) < 0)
		return -1;
	int fd = bind_one(&ss, len, error_r);
	if (fd < 0)
		return -1;
	log_bound(fd);
	/* Every loop accepts on the same socket, each through its own
	   descriptor; whichever loop wakes first takes the connection. */
	server->fds[0][index] = fd;
	for (unsigned int i = 1; i < server->loop_count; i++) {
		server->fds[i][index] = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (server->fds[i][index] < 0) {
			*error_r = strerror(errno);
			return -1;
		}
	}
	return 0;
}

int server_bind(const struct popboxd_settings *set, struct server **server_r,
		const char **error_r)
{
	struct server *server = calloc(1, sizeof(*server));
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	if (server == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	server->loop_count = set->workers > 0 ? set->workers :
			     (unsigned int)(cores > 0 ? cores : 1);
	if (server->loop_count > SERVER_MAX_LOOPS)
		server->loop_count = SERVER_MAX_LOOPS;
	server->ctx.set = set;
	for (size_t i = 0; i < set->listen_count; i++) {
		if (bind_address(server, server->fd_count, set->listen[i], error_r) < 0)
			return -1;
		server->fd_tls[server->fd_count++] = false;
	}
	for (size_t i = 0; i < set->tls_listen_count; i++) {
		if (bind_address(server, server->fd_count, set->tls_listen[i], error_r) < 0)
			return -1;
		server->fd_tls[server->fd_count++] = true;
	}
	*server_r = server;
	return 0;
}

static void accept_callback(struct evconnlistener *ev, evutil_socket_t fd,
			    struct sockaddr *addr, int addrlen, void *arg)
{
	struct listener *l = arg;
	(void)ev;
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

static void *loop_thread(void *arg)
{
	struct loop *loop = arg;
	event_base_dispatch(loop->base);
	return NULL;
}

static struct loop *loop_create(struct server *server, unsigned int index)
{
	struct loop *loop = calloc(1, sizeof(*loop));

	if (loop == NULL || (loop->base = event_base_new()) == NULL)
		fatal("event=startup error=\"cannot create event loop\"");
	loop->ctx = &server->ctx;
	loop->index = index;
	for (size_t i = 0; i < server->fd_count; i++) {
		struct listener *l = calloc(1, sizeof(*l));
		if (l == NULL)
			fatal("event=startup error=\"out of memory\"");
		l->loop = loop;
		l->tls = server->fd_tls[i];
		l->resume = evtimer_new(loop->base, resume_callback, l);
		l->ev = evconnlistener_new(loop->base, accept_callback, l,
					   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
					   0, server->fds[index][i]);
		if (l->ev == NULL || l->resume == NULL)
			fatal("event=startup error=\"cannot create listener\"");
		evconnlistener_set_error_cb(l->ev, accept_error_callback);
	}
	return loop;
}

static void context_init(struct server *server, struct passdb *passdb,
			 struct tls_server *tls)
{
	const struct popboxd_settings *set = server->ctx.set;
	const char *error;

	server->ctx.passdb = passdb;
	server->ctx.tls = tls;
	if (jobs_start(set->auth_workers, &server->ctx.jobs, &error) < 0)
		fatal("event=startup error=\"%s\"", error);
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
		.implementation = "popbox",
	};
	/* Checked when the config was loaded: cannot fail here. */
	if (settings_sasl_mechs(set->auth_mechanisms,
				&server->ctx.pop3.sasl_mechs) < 0)
		fatal("event=startup error=\"auth_mechanisms\"");
	server->ctx.penalty = auth_penalty_new(set->auth_penalty_max_ms);
	if (server->ctx.penalty == NULL)
		fatal("event=startup error=\"out of memory\"");
	server->ctx.maildrop.login_delay = set->login_delay;
	/* Checked when the config was loaded: cannot fail here. */
	if (netmask_list_parse(set->trusted_networks, strlen(set->trusted_networks),
			       &server->ctx.trusted, &error) < 0)
		fatal("event=startup error=\"trusted_networks: %s\"", error);
}

/* SIGHUP: new certificate and key for new connections; open sessions keep
   theirs.  The passwd-file needs no signal: it reloads when it changes. */
static void server_reload(struct server *server)
{
	const char *error;

	if (server->ctx.tls == NULL) {
		log_info("event=reload note=\"no TLS configured; the passwd-file "
			 "reloads by itself\"");
		return;
	}
	if (tls_server_reload(server->ctx.tls, &error) < 0)
		log_error("event=reload-failed error=\"TLS: %s\" "
			  "note=\"the old certificate stays in use\"", error);
	else
		log_info("event=reload tls=reloaded");
}

void server_run(struct server *server, struct passdb *passdb,
		struct tls_server *tls)
{
	sigset_t stop;
	int sig;

	evthread_use_pthreads();
	context_init(server, passdb, tls);
	/* Signals go to this thread only, via sigwait below. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	for (unsigned int i = 0; i < server->loop_count; i++) {
		pthread_t tid;
		server->loops[i] = loop_create(server, i);
		if (pthread_create(&tid, NULL, loop_thread, server->loops[i]) != 0)
			fatal("event=startup error=\"cannot start thread\"");
		pthread_detach(tid);
	}
	log_info("event=started loops=%u auth_workers=%u", server->loop_count,
		 server->ctx.set->auth_workers);
	for (;;) {
		if (sigwait(&stop, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			server_reload(server);
			continue;
		}
		break;
	}
	/* Sessions that did not QUIT end without UPDATE: nothing is deleted,
	   and the kernel drops every maildrop lock with the process. */
	log_info("event=stopping signal=%d", sig);
	fflush(stderr);
	_exit(0);
}
