/*
 * master.c — popboxd's master process (see master.h).
 *
 * It also resolves auth_mechanisms = auto, at start and on SIGHUP: the
 * login processes that offer the mechanisms are chrooted and never see the
 * passdb, so the master (root) asks passdb_file_can_scram() before forking
 * them and hands them the result in their server_params.
 */
#include "master.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth-server.h"
#include "conn-limits.h"
#include "ipc.h"
#include "log.h"
#include "passdb.h"
#include "sasl-mech.h"
#include "server.h"
#include "tls.h"
#include "userdb-socket.h"

#define MASTER_MAX_CHILDREN 512
#define MASTER_MAX_WORKERS 64
/* A child that dies sooner than this after its start is restarted only
   after the same pause, so a crash loop does not spin. */
#define MASTER_RESPAWN_PAUSE_S 1
/* On SIGTERM, children get this long before SIGKILL. */
#define MASTER_STOP_WAIT_MS 5000
/* Descriptor limit set when started as root (see raise_fd_limit). */
#define MASTER_FD_LIMIT 262144
/* The login processes' chroot (see prepare_empty_dir). */
#define MASTER_EMPTY_DIR "/run/popboxd-empty"

enum role { ROLE_AUTH, ROLE_LOGIN, ROLE_MAIL };

static const char *const role_names[] = { "auth", "login", "mail" };

struct role_user {
	const char *name;
	uid_t uid;
	gid_t gid;
};

struct child {
	pid_t pid;                 /* 0: slot free */
	enum role role;
	unsigned int mail_slot;    /* mail: which hand-over socket is its */
	unsigned int limits_index; /* its column in the connection counts */
	bool retiring;             /* a login process told to finish (SIGHUP) */
	time_t started;
};

struct pending {
	enum role role;
	unsigned int mail_slot;
	time_t when;
};

struct master {
	const struct popboxd_settings *set;
	struct server *server;
	struct tls_server *tls;
	unsigned int sasl_mechs;   /* what new login processes offer */
	pid_t pid;
	bool privileged;
	struct role_user users[3];
	int auth_fd;               /* listening SOCK_SEQPACKET */
	int userdb_fd;             /* at userdb_socket, for auth; or -1 */
	struct unix_listen_id userdb_id;
	/* One listening SOCK_STREAM per mail process slot, so login
	   processes spread hand-overs evenly (one shared socket let the
	   first mail process to wake take most of them). */
	int mail_fds[MASTER_MAX_WORKERS];
	char auth_name[64];
	char mail_names[MASTER_MAX_WORKERS][64];
	const char *mail_name_ptrs[MASTER_MAX_WORKERS];
	unsigned int spawning_slot;     /* a mail child's socket slot */
	char empty_dir[64];
	unsigned int workers;
	struct conn_limits *limits;     /* NULL: no connection caps */
	unsigned int limits_columns;
	bool limits_used[CONN_LIMITS_MAX_PROCESSES];
	unsigned int spawning_index;    /* what the next child gets */
	struct child children[MASTER_MAX_CHILDREN];
	struct pending pending[MASTER_MAX_CHILDREN];
	size_t pending_count;
};

/* ---- set-up, in the master ---- */

static void resolve_user(struct master *m, enum role role, const char *name)
{
	struct passwd *pw = getpwnam(name);

	m->users[role].name = name;
	if (!m->privileged)
		return;
	if (pw == NULL)
		fatal("event=startup error=\"%s_user '%s' does not exist\"",
		      role_names[role], name);
	if (pw->pw_uid == 0 || pw->pw_gid == 0)
		fatal("event=startup error=\"%s_user may not be root\"",
		      role_names[role]);
	m->users[role].uid = pw->pw_uid;
	m->users[role].gid = pw->pw_gid;
}

static void resolve_users(struct master *m)
{
	resolve_user(m, ROLE_AUTH, m->set->auth_user);
	resolve_user(m, ROLE_LOGIN, m->set->login_user);
	resolve_user(m, ROLE_MAIL, m->set->mail_user);
	if (!m->privileged)
		return;
	/* Each role its own uid, or one could reach another's secrets. */
	for (int a = 0; a < 3; a++) {
		for (int b = a + 1; b < 3; b++) {
			if (m->users[a].uid == m->users[b].uid)
				fatal("event=startup error=\"%s_user and %s_user must be "
				      "different users\"", role_names[a], role_names[b]);
		}
	}
}

/* A listening AF_UNIX socket in the abstract namespace under a random
   name: nothing on disk to clean up, reachable from the login chroot.
   Peers are checked by uid (SO_PEERCRED) on accept. */
static int listen_abstract(char *name, size_t size, const char *what, int type)
{
	uint8_t rnd[8];

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		fatal("event=startup error=\"getrandom failed\"");
	snprintf(name, size, "popboxd-%d-%02x%02x%02x%02x%02x%02x%02x%02x-%s",
		 (int)getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
		 rnd[6], rnd[7], what);
	int fd = ipc_listen_abstract(name, type);
	if (fd < 0)
		fatal("event=startup error=\"%s socket: %s\"", what, strerror(errno));
	return fd;
}

/* Writes the names of the mechanisms in mask, space-separated, into buf. */
static void sasl_mech_names(unsigned int mask, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < SASL_MECH_COUNT; i++) {
		if ((mask & (1u << i)) == 0)
			continue;
		int n = snprintf(buf + used, size - used, "%s%s",
				 used > 0 ? " " : "",
				 sasl_mech_name((enum sasl_mech)i));
		if (n < 0 || (size_t)n >= size - used)
			return;
		used += (size_t)n;
	}
}

/*
 * The SASL mechanisms login processes are to offer.  auth_mechanisms =
 * auto adds SCRAM-SHA-256 when some passdb entry can use it: a fact about
 * the site, so offering it to everyone reveals nothing about a user.  A
 * passwd-file that cannot be read gets SCRAM offered, as before auto.
 */
static unsigned int sasl_mechs_resolve(const struct popboxd_settings *set,
				       bool *from_auto_r)
{
	unsigned int mask;
	bool can_scram = false;
	const char *error;

	/* Checked when the config was loaded: cannot fail here. */
	if (settings_sasl_mechs(set->auth_mechanisms, &mask, from_auto_r) < 0)
		fatal("event=startup error=\"auth_mechanisms\"");
	if (!*from_auto_r)
		return mask;
	if (passdb_file_can_scram(set->passdb_file, &can_scram, &error) < 0) {
		log_warn("event=scram-check-failed passdb=%s error=\"%s\" "
			 "note=\"offering SCRAM-SHA-256\"", set->passdb_file,
			 error);
		can_scram = true;
	}
	return can_scram ? mask | 1u << SASL_MECH_SCRAM_SHA_256 : mask;
}

/* Sets m->sasl_mechs from the settings and the passdb; logs the offer at
   start and whenever it changes.  True if it changed. */
static bool sasl_mechs_update(struct master *m, bool startup)
{
	bool from_auto;
	unsigned int mask = sasl_mechs_resolve(m->set, &from_auto);
	char names[64];

	if (!startup && mask == m->sasl_mechs)
		return false;
	m->sasl_mechs = mask;
	sasl_mech_names(mask, names, sizeof(names));
	log_info("event=sasl-offer mechanisms=\"%s\" from=%s%s", names,
		 from_auto ? "auto" : "auth_mechanisms",
		 from_auto && (mask & 1u << SASL_MECH_SCRAM_SHA_256) == 0 ?
		 " note=\"no passdb_file entry can use SCRAM-SHA-256\"" : "");
	return true;
}

/* ---- in a new child ---- */

/* The one place a child's privileges change.  Login processes are also
   locked into an empty directory. */
static void child_drop_privileges(struct master *m, enum role role)
{
	const struct role_user *u = &m->users[role];

	if (m->privileged) {
		if (role == ROLE_LOGIN &&
		    (chroot(m->empty_dir) < 0 || chdir("/") < 0))
			fatal("event=startup role=login error=\"chroot: %s\"",
			      strerror(errno));
		if (setgroups(1, &u->gid) < 0 || setgid(u->gid) < 0 ||
		    setuid(u->uid) < 0)
			fatal("event=startup role=%s error=\"cannot drop privileges: %s\"",
			      role_names[role], strerror(errno));
		if (setuid(0) == 0 || getuid() != u->uid || geteuid() != u->uid ||
		    getgid() != u->gid || getegid() != u->gid)
			fatal("event=startup role=%s error=\"privileges were not dropped\"",
			      role_names[role]);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fatal("event=startup role=%s error=\"no_new_privs: %s\"",
		      role_names[role], strerror(errno));
	prctl(PR_SET_DUMPABLE, 0);
}

static void child_main(struct master *m, enum role role)
{
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGHUP, SIG_IGN);
	if (role != ROLE_LOGIN)
		server_close_listeners(m->server);
	/* LMTP hands over mail: only mail processes may hold its socket. */
	if (role != ROLE_MAIL)
		server_close_lmtp_listener(m->server);
	if (role != ROLE_AUTH)
		close(m->auth_fd);
	if (role != ROLE_AUTH && m->userdb_fd >= 0)
		close(m->userdb_fd);
	for (unsigned int i = 0; i < m->workers; i++) {
		if (role != ROLE_MAIL || i != m->spawning_slot)
			close(m->mail_fds[i]);
	}
	if (role == ROLE_AUTH)
		conn_limits_destroy(&m->limits);
	child_drop_privileges(m, role);
	/* No orphans: a child dies with the master.  (Set after the uid
	   change, which clears it; the master may already be gone.) */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != m->pid)
		_exit(0);

	struct server_params p = {
		.set = m->set,
		.tls = m->tls,
		.auth_socket = m->auth_name,
		.sasl_mechs = m->sasl_mechs,
		.mail_sockets = m->mail_name_ptrs,
		.mail_socket_count = m->workers,
		.mail_listen_fd = role == ROLE_MAIL ? m->mail_fds[m->spawning_slot] : -1,
		.workers = m->workers,
		.limits = m->limits,
		.limits_index = m->spawning_index,
		.uid_checks = m->privileged,
		.login_uid = m->users[ROLE_LOGIN].uid,
	};
	struct auth_server_params ap = {
		.set = m->set,
		.listen_fd = m->auth_fd,
		.userdb_fd = m->userdb_fd,
		.uid_checks = m->privileged,
		.login_uid = m->users[ROLE_LOGIN].uid,
		.mail_uid = m->users[ROLE_MAIL].uid,
	};
	switch (role) {
	case ROLE_AUTH:
		auth_server_run(&ap);
	case ROLE_LOGIN:
		server_run_login(m->server, &p);
	case ROLE_MAIL:
		server_run_mail(m->server, &p);
	}
	_exit(1);
}

/* ---- children, from the master ---- */

static void spawn(struct master *m, enum role role, unsigned int mail_slot)
{
	size_t slot = 0;

	while (slot < MASTER_MAX_CHILDREN && m->children[slot].pid != 0)
		slot++;
	if (slot == MASTER_MAX_CHILDREN) {
		log_error("event=spawn-failed role=%s error=\"too many children\"",
			  role_names[role]);
		return;
	}
	/* A column in the shared connection counts for login and mail
	   processes; none left (or no caps): the child counts nothing. */
	m->spawning_index = CONN_LIMITS_MAX_PROCESSES;
	if (m->limits != NULL && role != ROLE_AUTH) {
		for (unsigned int i = 0; i < m->limits_columns; i++) {
			if (!m->limits_used[i]) {
				m->spawning_index = i;
				break;
			}
		}
	}
	m->spawning_slot = mail_slot;
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		log_error("event=spawn-failed role=%s error=\"%s\"", role_names[role],
			  strerror(errno));
		if (m->pending_count < MASTER_MAX_CHILDREN)
			m->pending[m->pending_count++] = (struct pending){
				role, mail_slot, time(NULL) + MASTER_RESPAWN_PAUSE_S };
		return;
	}
	if (pid == 0)
		child_main(m, role);
	m->children[slot] = (struct child){ pid, role, mail_slot,
					    m->spawning_index, false, time(NULL) };
	if (m->spawning_index < m->limits_columns)
		m->limits_used[m->spawning_index] = true;
	log_info("event=spawned role=%s pid=%d", role_names[role], (int)pid);
}

static void describe_status(int status, char *buf, size_t size)
{
	if (WIFEXITED(status))
		snprintf(buf, size, "exit:%d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, size, "signal:%d", WTERMSIG(status));
	else
		snprintf(buf, size, "unknown");
}

static void reap(struct master *m, bool stopping)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct child *c = NULL;
		for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
			if (m->children[i].pid == pid)
				c = &m->children[i];
		}
		if (c == NULL)
			continue;
		char how[32];
		describe_status(status, how, sizeof(how));
		bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		bool expected = stopping || (c->retiring && clean);
		if (expected)
			log_info("event=child-exited role=%s pid=%d status=%s",
				 role_names[c->role], (int)pid, how);
		else
			log_error("event=child-died role=%s pid=%d status=%s",
				  role_names[c->role], (int)pid, how);
		if (!stopping && !c->retiring) {
			time_t now = time(NULL);
			time_t when = now - c->started < MASTER_RESPAWN_PAUSE_S ?
				      now + MASTER_RESPAWN_PAUSE_S : now;
			if (m->pending_count < MASTER_MAX_CHILDREN)
				m->pending[m->pending_count++] =
					(struct pending){ c->role, c->mail_slot, when };
		}
		/* Whatever the dead process had counted is dropped. */
		if (m->limits != NULL && c->limits_index < m->limits_columns) {
			conn_limits_reset_process(m->limits, c->limits_index);
			m->limits_used[c->limits_index] = false;
		}
		c->pid = 0;
	}
}

static void respawn_due(struct master *m)
{
	struct pending due[MASTER_MAX_CHILDREN];
	time_t now = time(NULL);
	size_t ndue = 0, kept = 0;

	for (size_t i = 0; i < m->pending_count; i++) {
		if (m->pending[i].when <= now)
			due[ndue++] = m->pending[i];
		else
			m->pending[kept++] = m->pending[i];
	}
	m->pending_count = kept;
	for (size_t i = 0; i < ndue; i++)
		spawn(m, due[i].role, due[i].mail_slot);
}

/* SIGHUP: a new certificate, or a new SASL offer (auth_mechanisms =
   auto), for new login processes; the old ones finish what they hold. */
static void reload(struct master *m)
{
	const char *error;
	bool mechs_changed = sasl_mechs_update(m, false);
	bool tls_reloaded = false;

	if (m->tls != NULL) {
		if (tls_server_reload(m->tls, &error) < 0)
			log_error("event=reload-failed error=\"TLS: %s\" "
				  "note=\"the old certificate stays in use\"",
				  error);
		else
			tls_reloaded = true;
	}
	if (!tls_reloaded && !mechs_changed) {
		if (m->tls == NULL)
			log_info("event=reload note=\"nothing to change; the "
				 "passwd-file reloads by itself\"");
		return;
	}
	unsigned int replaced = 0;
	for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
		struct child *c = &m->children[i];
		if (c->pid != 0 && c->role == ROLE_LOGIN && !c->retiring) {
			c->retiring = true;
			kill(c->pid, SIGUSR1);
			replaced++;
		}
	}
	for (unsigned int i = 0; i < m->workers; i++)
		spawn(m, ROLE_LOGIN, 0);
	log_info("event=reload tls=%s login_processes_replaced=%u",
		 tls_reloaded ? "reloaded" : m->tls != NULL ? "unchanged" : "none",
		 replaced);
}

static bool any_child(const struct master *m)
{
	for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
		if (m->children[i].pid != 0)
			return true;
	}
	return false;
}

static void signal_children(struct master *m, int sig)
{
	for (size_t i = 0; i < MASTER_MAX_CHILDREN; i++) {
		if (m->children[i].pid != 0)
			kill(m->children[i].pid, sig);
	}
}

/* Sessions that did not QUIT end without UPDATE: nothing is deleted, and
   the kernel drops every maildrop lock with its process. */
static void stop(struct master *m, int sig)
{
	struct timespec pause = { 0, 50 * 1000000 };

	log_info("event=stopping signal=%d", sig);
	signal_children(m, SIGTERM);
	for (int waited = 0; any_child(m) && waited < MASTER_STOP_WAIT_MS; waited += 50) {
		nanosleep(&pause, NULL);
		reap(m, true);
	}
	if (any_child(m)) {
		signal_children(m, SIGKILL);
		while (any_child(m) && waitpid(-1, NULL, 0) > 0)
			reap(m, true);
	}
	userdb_socket_unlink(m->set->userdb_socket, &m->userdb_id);
	fflush(stderr);
	_exit(0);
}

/* Descriptors: every connection needs one, a TLS one up to three (client,
   relay, mail side).  Raise the soft limit to what is allowed (as root,
   the hard one too), so max_connections is what limits, not EMFILE. */
static void raise_fd_limit(bool privileged)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rlim_t hard = rl.rlim_max;
	if (privileged && rl.rlim_max < MASTER_FD_LIMIT) {
		/* Needs CAP_SYS_RESOURCE, which a container may not give. */
		struct rlimit more = { MASTER_FD_LIMIT, MASTER_FD_LIMIT };
		if (setrlimit(RLIMIT_NOFILE, &more) == 0)
			return;
	}
	rl.rlim_cur = hard;
	rl.rlim_max = hard;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_warn("event=startup note=\"cannot raise the descriptor limit: %s\"",
			 strerror(errno));
}

/*
 * The login processes' root: one fixed, empty, root-owned, read-only
 * directory, shared by every popboxd on the machine and never removed
 * (a per-run directory would be left behind by a killed master).  An
 * existing one is made root's and 0555; one with anything in it is
 * refused.
 */
static void prepare_empty_dir(const char *path)
{
	struct stat st;

	if (mkdir(path, 0555) < 0 && errno != EEXIST)
		fatal("event=startup error=\"mkdir %s: %s\"", path, strerror(errno));
	if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		fatal("event=startup error=\"%s is not a directory\"", path);
	if ((st.st_uid != 0 || st.st_gid != 0) && chown(path, 0, 0) < 0)
		fatal("event=startup error=\"chown %s: %s\"", path, strerror(errno));
	if ((st.st_mode & 07777) != 0555 && chmod(path, 0555) < 0)
		fatal("event=startup error=\"chmod %s: %s\"", path, strerror(errno));
	DIR *d = opendir(path);
	if (d == NULL)
		fatal("event=startup error=\"%s: %s\"", path, strerror(errno));
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			fatal("event=startup error=\"%s is not empty\"", path);
	}
	closedir(d);
}

void master_run(const struct popboxd_settings *set)
{
	static struct master m;
	const char *error;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	sigset_t sigs;

	m.set = set;
	m.pid = getpid();
	m.privileged = geteuid() == 0;
	m.workers = set->workers > 0 ? set->workers : (unsigned int)(cores > 0 ? cores : 1);
	if (m.workers > MASTER_MAX_WORKERS)
		m.workers = MASTER_MAX_WORKERS;
	resolve_users(&m);
	raise_fd_limit(m.privileged);
	/* The key is read here, as root; children inherit the context. */
	if (set->tls_cert_file != NULL &&
	    tls_server_create(set->tls_cert_file, set->tls_key_file,
			      set->tls_min_version, &m.tls, &error) < 0)
		fatal("event=startup error=\"TLS: %s\"", error);
	if (server_bind(set, &m.server, &error) < 0)
		fatal("event=startup error=\"cannot listen: %s\"", error);
	if (set->max_connections > 0 || set->max_connections_per_address > 0) {
		/* Login and mail processes, and login processes retiring
		   after a reload. */
		m.limits_columns = 3 * m.workers;
		if (m.limits_columns > CONN_LIMITS_MAX_PROCESSES)
			m.limits_columns = CONN_LIMITS_MAX_PROCESSES;
		m.limits = conn_limits_create(set->max_connections_per_address,
					      set->max_connections,
					      m.limits_columns, &error);
		if (m.limits == NULL)
			fatal("event=startup error=\"connection limits: %s\"", error);
	}
	m.auth_fd = listen_abstract(m.auth_name, sizeof(m.auth_name), "auth",
				    SOCK_SEQPACKET);
	m.userdb_fd = userdb_socket_listen(set->userdb_socket, m.privileged,
					   m.users[ROLE_MAIL].uid,
					   m.users[ROLE_MAIL].gid, &m.userdb_id);
	for (unsigned int i = 0; i < m.workers; i++) {
		char what[16];
		snprintf(what, sizeof(what), "mail%u", i);
		m.mail_fds[i] = listen_abstract(m.mail_names[i], sizeof(m.mail_names[i]),
						what, SOCK_STREAM);
		m.mail_name_ptrs[i] = m.mail_names[i];
	}
	if (m.privileged) {
		snprintf(m.empty_dir, sizeof(m.empty_dir), "%s", MASTER_EMPTY_DIR);
		prepare_empty_dir(m.empty_dir);
	}
	if (!m.privileged)
		log_warn("event=startup note=\"not started as root: every process "
			 "runs as this user, without privilege separation\"");
	/* Once, here, not in each mail process that serves LMTP. */
	const char *warning = settings_lmtp_warning(set);
	if (warning != NULL)
		log_warn("event=config-warning text=\"%s\"", warning);

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGCHLD);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	(void)sasl_mechs_update(&m, true);
	spawn(&m, ROLE_AUTH, 0);
	for (unsigned int i = 0; i < m.workers; i++)
		spawn(&m, ROLE_MAIL, i);
	for (unsigned int i = 0; i < m.workers; i++)
		spawn(&m, ROLE_LOGIN, 0);
	log_info("event=started role=master workers=%u privileged=%s", m.workers,
		 m.privileged ? "yes" : "no");
	for (;;) {
		struct timespec tick = { 0, 200 * 1000000 };
		int sig = sigtimedwait(&sigs, NULL, &tick);
		if (sig == SIGTERM || sig == SIGINT)
			stop(&m, sig);
		if (sig == SIGHUP)
			reload(&m);
		reap(&m, false);
		respawn_due(&m);
	}
}
