/*
 * sink-mda.c — handing a spooled message to an MDA command (see sink.h
 * for the contract: what it gets, what its exit status means).
 *
 * posix_spawn (thread-safe, unlike fork + setenv in a threaded program)
 * runs "/bin/sh -c <command>" with stdin the spool file rewound to its
 * start, stdout and stderr into one pipe, every other descriptor closed,
 * an empty signal mask, the signals a parent may ignore back to default,
 * and a process group of its own (so a timeout kills everything it
 * started).  The environment is ours minus any POPBOX_FETCH_* plus the
 * message's.  Then the output is read (bounded) while waiting for the
 * exit, on a pidfd where the kernel has one; the deadline covers the
 * whole run.
 *
 * Caveat for the program: the MDA is reaped here with waitpid(pid); a
 * SIGCHLD handler that reaps every child (waitpid(-1)) would take its
 * status away (then the commit fails as temporary).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sink-private.h"

extern char **environ;

#define MDA_SHELL "/bin/sh"
#define MDA_ENV_PREFIX "POPBOX_FETCH_"
/* Our variables: UIDL, SENDER, ACCOUNT, SIZE. */
#define MDA_ENV_OWN 4
/* Without a pidfd the exit is checked this often. */
#define MDA_POLL_MS 50
/* The MDA's output line quoted in an error text, at most. */
#define MDA_LINE_MAX 200
/* sysexits.h: "temporary failure; user is invited to retry". */
#define MDA_EX_TEMPFAIL 75

struct mda_env {
	char **envp;               /* environ's pointers and own[] */
	char *own[MDA_ENV_OWN];
};

struct mda_run {
	struct sink_msg *m;
	pid_t pid;
	int out_fd;                /* read end of the output pipe */
	int pidfd;
	int64_t deadline_ms;
	bool timed_out;
	int wstatus;
	char output[SINK_MDA_OUTPUT_MAX + 1];
	size_t output_len;
};

/* ---- the environment ----------------------------------------------------- */

/* s if every byte is in [lo, 0x7E] (and it is not too long), else "". */
static const char *mda_env_value(const char *s, unsigned char lo)
{
	if (s == NULL || strlen(s) > 512)
		return "";
	for (const char *p = s; *p != '\0'; p++)
		if ((unsigned char)*p < lo || (unsigned char)*p > 0x7e)
			return "";
	return s;
}

static void mda_env_free(struct mda_env *env)
{
	for (size_t i = 0; i < MDA_ENV_OWN; i++)
		free(env->own[i]);
	free(env->envp);
	env->envp = NULL;
}

static int mda_env_make(struct mda_env *env, const struct sink_msg *m,
			const char *sender)
{
	size_t n = 0, k = 0;

	memset(env, 0, sizeof(*env));
	for (char **e = environ; e != NULL && *e != NULL; e++)
		n++;
	env->envp = calloc(n + MDA_ENV_OWN + 1, sizeof(char *));
	if (env->envp == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], MDA_ENV_PREFIX,
			    sizeof(MDA_ENV_PREFIX) - 1) != 0)
			env->envp[k++] = environ[i];
	if (asprintf(&env->own[0], MDA_ENV_PREFIX "UIDL=%s",
		     mda_env_value(m->uidl, 0x21)) < 0 ||
	    asprintf(&env->own[1], MDA_ENV_PREFIX "SENDER=%s",
		     mda_env_value(sender, 0x21)) < 0 ||
	    asprintf(&env->own[2], MDA_ENV_PREFIX "ACCOUNT=%s",
		     mda_env_value(m->account, 0x20)) < 0 ||
	    asprintf(&env->own[3], MDA_ENV_PREFIX "SIZE=%llu",
		     (unsigned long long)m->spool_size) < 0) {
		/* asprintf leaves its pointer undefined on failure. */
		for (size_t i = 0; i < MDA_ENV_OWN; i++)
			env->own[i] = NULL;
		mda_env_free(env);
		return -1;
	}
	for (size_t i = 0; i < MDA_ENV_OWN; i++)
		env->envp[k++] = env->own[i];
	return 0;
}

/* ---- start --------------------------------------------------------------- */

static void mda_spawn_attr(posix_spawnattr_t *attr)
{
	static const int signals[] = { SIGPIPE, SIGXFSZ, SIGINT, SIGQUIT,
				       SIGHUP, SIGTERM, SIGCHLD, SIGALRM,
				       SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN,
				       SIGTTOU };
	sigset_t none, dfl;

	sigemptyset(&none);
	sigemptyset(&dfl);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		sigaddset(&dfl, signals[i]);
	posix_spawnattr_init(attr);
	posix_spawnattr_setsigmask(attr, &none);
	posix_spawnattr_setsigdefault(attr, &dfl);
	posix_spawnattr_setpgroup(attr, 0);
	posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK |
				       POSIX_SPAWN_SETSIGDEF |
				       POSIX_SPAWN_SETPGROUP);
}

/* posix_spawn's result (0 or an errno value). */
static int mda_spawn(struct mda_run *r, int out_w, char **envp)
{
	char sh[] = "sh", dash_c[] = "-c";
	char *argv[] = { sh, dash_c, r->m->target, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int err;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, r->m->spool_fd, STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, out_w, STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, out_w, STDERR_FILENO);
	posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
	mda_spawn_attr(&attr);
	err = posix_spawn(&r->pid, MDA_SHELL, &fa, &attr, argv, envp);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	return err;
}

static int mda_start(struct mda_run *r, enum sink_status *status_r,
		     const char **error_r)
{
	char sender[MBOX_SENDER_MAX + 1];
	struct mda_env env;
	int pipe_fds[2], err;

	sink_spool_sender(r->m, sender);
	if (lseek(r->m->spool_fd, 0, SEEK_SET) < 0)
		return sink_fail_errno(SINK_TEMPFAIL, errno, status_r, error_r,
				       "rewind spool file");
	if (mda_env_make(&env, r->m, sender) < 0)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "out of memory");
	if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
		err = errno;
		mda_env_free(&env);
		return sink_fail_errno(SINK_TEMPFAIL, err, status_r, error_r,
				       "pipe");
	}
	err = mda_spawn(r, pipe_fds[1], env.envp);
	close(pipe_fds[1]);
	mda_env_free(&env);
	if (err != 0) {
		close(pipe_fds[0]);
		return sink_fail_errno(err == ENOENT || err == EACCES ?
				       SINK_PERMFAIL : SINK_TEMPFAIL, err,
				       status_r, error_r, "start " MDA_SHELL);
	}
	r->out_fd = pipe_fds[0];
	r->pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0);
	return 0;
}

/* ---- wait ---------------------------------------------------------------- */

/* One read of the output: the first SINK_MDA_OUTPUT_MAX bytes are kept,
   the rest dropped.  Closes the pipe at its end (or on an error). */
static void mda_read_output(struct mda_run *r)
{
	char scratch[4096];
	char *dst = scratch;
	size_t room = sizeof(scratch);
	ssize_t n;

	if (r->output_len < SINK_MDA_OUTPUT_MAX) {
		dst = r->output + r->output_len;
		room = SINK_MDA_OUTPUT_MAX - r->output_len;
	}
	n = read(r->out_fd, dst, room);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		close(r->out_fd);
		r->out_fd = -1;
		return;
	}
	if (dst != scratch)
		r->output_len += (size_t)n;
}

/* After the exit: what is in the pipe now, without waiting for a
   background process that may still hold it open. */
static void mda_drain_output(struct mda_run *r)
{
	if (r->out_fd < 0)
		return;
	(void)fcntl(r->out_fd, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 64 && r->out_fd >= 0; i++) {
		size_t before = r->output_len;
		int fd = r->out_fd;
		mda_read_output(r);
		if (r->out_fd == fd && r->output_len == before &&
		    r->output_len < SINK_MDA_OUTPUT_MAX)
			break; /* EAGAIN: nothing more for now */
	}
}

static void mda_kill(struct mda_run *r)
{
	(void)kill(-r->pid, SIGKILL);
	(void)kill(r->pid, SIGKILL);
	while (waitpid(r->pid, &r->wstatus, 0) < 0 && errno == EINTR)
		;
	r->timed_out = true;
}

/* 1 the MDA has exited (status in r->wstatus), 0 not yet, -1 error. */
static int mda_reap(struct mda_run *r)
{
	pid_t got = waitpid(r->pid, &r->wstatus, WNOHANG);

	if (got == r->pid)
		return 1;
	if (got < 0 && errno != EINTR)
		return -1;
	return 0;
}

static int mda_wait(struct mda_run *r, enum sink_status *status_r,
		    const char **error_r)
{
	for (;;) {
		struct pollfd pfd[2];
		nfds_t n = 0;
		int64_t left = r->deadline_ms - sink_now_ms();
		int reaped = mda_reap(r);

		if (reaped < 0)
			return sink_fail_errno(SINK_TEMPFAIL, errno, status_r,
					       error_r, "waitpid");
		if (reaped > 0) {
			mda_drain_output(r);
			return 0;
		}
		if (left <= 0) {
			mda_kill(r);
			return 0;
		}
		if (r->out_fd >= 0)
			pfd[n++] = (struct pollfd){ .fd = r->out_fd,
						    .events = POLLIN };
		if (r->pidfd >= 0)
			pfd[n++] = (struct pollfd){ .fd = r->pidfd,
						    .events = POLLIN };
		if (r->pidfd < 0 && left > MDA_POLL_MS)
			left = MDA_POLL_MS;
		if (poll(pfd, n, (int)(left > 60000 ? 60000 : left)) < 0 &&
		    errno != EINTR)
			return sink_fail_errno(SINK_TEMPFAIL, errno, status_r,
					       error_r, "poll");
		if (r->out_fd >= 0 && n > 0 && pfd[0].fd == r->out_fd &&
		    pfd[0].revents != 0)
			mda_read_output(r);
	}
}

/* ---- the verdict --------------------------------------------------------- */

/*
 * The first line of the output for the error text: printable ASCII and
 * spaces as they are, any other byte as \xNN (no terminal escapes from
 * the MDA reach the user's screen or log), cut at MDA_LINE_MAX bytes.
 */
static const char *mda_output_line(const struct mda_run *r,
				   char buf[MDA_LINE_MAX + 1])
{
	const char *lf = memchr(r->output, '\n', r->output_len);
	size_t len = lf == NULL ? r->output_len : (size_t)(lf - r->output);
	size_t n = 0;

	if (len == 0)
		return "(no output)";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)r->output[i];
		bool plain = c >= 0x20 && c < 0x7f && c != '\\';
		if (n + (plain ? 1 : 4) > MDA_LINE_MAX - 3) {
			memcpy(buf + n, "...", 3);
			n += 3;
			break;
		}
		if (plain)
			buf[n++] = (char)c;
		else
			n += (size_t)snprintf(buf + n, 5, "\\x%02x", c);
	}
	buf[n] = '\0';
	return buf;
}

static int mda_verdict(struct mda_run *r, enum sink_status *status_r,
		       const char **error_r)
{
	char line[MDA_LINE_MAX + 1];

	if (r->timed_out)
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "MDA timed out after %u ms and was killed: %s",
				 r->m->mda_timeout_ms, mda_output_line(r, line));
	if (WIFSIGNALED(r->wstatus))
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "MDA killed by signal %d: %s",
				 WTERMSIG(r->wstatus), mda_output_line(r, line));
	if (!WIFEXITED(r->wstatus))
		return sink_fail(SINK_TEMPFAIL, status_r, error_r,
				 "MDA ended oddly (status %#x)",
				 (unsigned int)r->wstatus);
	int code = WEXITSTATUS(r->wstatus);
	if (code == 0)
		return 0;
	return sink_fail(code == MDA_EX_TEMPFAIL ? SINK_TEMPFAIL :
		       SINK_PERMFAIL, status_r, error_r,
		       "MDA exited with status %d: %s", code,
		       mda_output_line(r, line));
}

int sink_mda_commit(struct sink_msg *m, enum sink_status *status_r,
		    const char **error_r)
{
	struct mda_run r = { .m = m, .pid = -1, .out_fd = -1, .pidfd = -1 };
	int ret;

	r.deadline_ms = sink_now_ms() + m->mda_timeout_ms;
	if (mda_start(&r, status_r, error_r) < 0)
		return -1;
	ret = mda_wait(&r, status_r, error_r);
	if (ret < 0) {
		/* waitpid failed: the MDA may still run; do not leave it. */
		(void)kill(-r.pid, SIGKILL);
	} else {
		ret = mda_verdict(&r, status_r, error_r);
	}
	if (r.out_fd >= 0)
		close(r.out_fd);
	if (r.pidfd >= 0)
		close(r.pidfd);
	return ret;
}
