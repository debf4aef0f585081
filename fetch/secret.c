/*
 * secret.c — passwords and tokens from a command or a terminal prompt
 * (see secret.h).
 */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static _Thread_local char secret_errbuf[256];

static const char *secret_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static const char *secret_error(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(secret_errbuf, sizeof(secret_errbuf), fmt, args);
	va_end(args);
	return secret_errbuf;
}

void secret_free(char **secret)
{
	if (*secret != NULL) {
		explicit_bzero(*secret, strlen(*secret));
		free(*secret);
		*secret = NULL;
	}
}

/* The first line of buf[0..len) as a new string; NULL (with *error_r) if
   empty, too long, or with a control byte. */
static char *first_line(const char *buf, size_t len, bool cut,
			const char **error_r)
{
	const char *nl = memchr(buf, '\n', len);
	size_t n = nl != NULL ? (size_t)(nl - buf) : len;
	char *out;

	if (nl == NULL && cut) {
		*error_r = "its first line is longer than 8192 bytes";
		return NULL;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n == 0) {
		*error_r = "its first line is empty";
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f) {
			*error_r = "its first line has a control character";
			return NULL;
		}
	}
	if ((out = malloc(n + 1)) == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	memcpy(out, buf, n);
	out[n] = '\0';
	return out;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads fd to its end (or the deadline), keeping the first size bytes in
   buf.  Returns 0 at the end, -1 at the deadline or on an error. */
static int read_all(int fd, char *buf, size_t size, size_t *len_r,
		    bool *cut_r)
{
	int64_t deadline = now_ms() + SECRET_COMMAND_TIMEOUT_MS;
	char drop[4096];

	*len_r = 0;
	*cut_r = false;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - now_ms();
		ssize_t n;

		if (left <= 0)
			return -1;
		if (poll(&p, 1, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (*len_r < size)
			n = read(fd, buf + *len_r, size - *len_r);
		else
			n = read(fd, drop, sizeof(drop));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			return 0;
		if (*len_r < size)
			*len_r += (size_t)n;
		else
			*cut_r = true;
	}
}

/* posix_spawn attributes: default signal handling, nothing blocked
   (the program's threads block SIGINT and SIGTERM). */
static int spawn_setup(posix_spawnattr_t *attr)
{
	sigset_t def, none;

	sigemptyset(&none);
	sigemptyset(&def);
	sigaddset(&def, SIGPIPE);
	sigaddset(&def, SIGXFSZ);
	sigaddset(&def, SIGINT);
	sigaddset(&def, SIGTERM);
	sigaddset(&def, SIGCHLD);
	if (posix_spawnattr_init(attr) != 0)
		return -1;
	if (posix_spawnattr_setsigdefault(attr, &def) != 0 ||
	    posix_spawnattr_setsigmask(attr, &none) != 0 ||
	    posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF |
					   POSIX_SPAWN_SETSIGMASK) != 0) {
		posix_spawnattr_destroy(attr);
		return -1;
	}
	return 0;
}

/* Starts "/bin/sh -c command" with stdout on a pipe. */
static int spawn_command(const char *command, pid_t *pid_r, int *fd_r)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int fds[2], err;
	char *argv[] = { "sh", "-c", (char *)command, NULL };

	if (pipe2(fds, O_CLOEXEC) < 0)
		return errno != 0 ? errno : EIO;
	if (spawn_setup(&attr) < 0) {
		close(fds[0]);
		close(fds[1]);
		return ENOMEM;
	}
	err = posix_spawn_file_actions_init(&fa);
	if (err == 0) {
		err = posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
		if (err == 0)
			err = posix_spawn(pid_r, "/bin/sh", &fa, &attr, argv,
					  environ);
		posix_spawn_file_actions_destroy(&fa);
	}
	posix_spawnattr_destroy(&attr);
	close(fds[1]);
	if (err != 0) {
		close(fds[0]);
		return err;
	}
	*fd_r = fds[0];
	return 0;
}

/* Waits for pid (only that one); kills it first when kill_it. */
static int wait_child(pid_t pid, bool kill_it)
{
	int status = 0;

	if (kill_it)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return status;
}

int secret_from_command(const char *command, char **secret_r,
			bool *temporary_r, const char **error_r)
{
	char *buf = malloc(SECRET_MAX + 1);
	size_t len = 0;
	bool cut = false, timed_out;
	pid_t pid = -1;
	int fd = -1, status, err;
	const char *why = "failed";

	*secret_r = NULL;
	*temporary_r = false;
	if (buf == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	if ((err = spawn_command(command, &pid, &fd)) != 0) {
		free(buf);
		*error_r = secret_error("cannot start /bin/sh: %s",
					strerror(err));
		return -1;
	}
	timed_out = read_all(fd, buf, SECRET_MAX + 1, &len, &cut) < 0;
	close(fd);
	status = wait_child(pid, timed_out);
	if (timed_out) {
		why = "did not finish in time (killed)";
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		/* Output beyond SECRET_MAX and no line end: too long. */
		cut = cut || len > SECRET_MAX;
		*secret_r = first_line(buf, len, cut, &why);
	} else if (WIFEXITED(status)) {
		*temporary_r = WEXITSTATUS(status) == 75;
		why = secret_error("exited with status %d",
				   WEXITSTATUS(status));
	} else {
		why = secret_error("was killed by signal %d",
				   WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	}
	explicit_bzero(buf, SECRET_MAX + 1);
	free(buf);
	if (*secret_r != NULL)
		return 0;
	/* why may be the thread-local buffer: copy it through. */
	*error_r = why == secret_errbuf ? why : secret_error("%s", why);
	return -1;
}

/* ---- the prompt ------------------------------------------------------ */

static volatile sig_atomic_t secret_interrupted;

static void on_signal(int sig)
{
	(void)sig;
	secret_interrupted = 1;
}

bool secret_can_prompt(void)
{
	int fd;

	if (!isatty(STDIN_FILENO))
		return false;
	fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* Reads one line from fd into buf (at most size - 1 bytes kept). */
static int read_line(int fd, char *buf, size_t size, size_t *len_r)
{
	size_t len = 0;

	for (;;) {
		char c;
		ssize_t n = read(fd, &c, 1);

		if (n < 0 && errno == EINTR && !secret_interrupted)
			continue;
		if (n <= 0)
			return -1;
		if (c == '\n')
			break;
		if (len + 1 < size)
			buf[len++] = c;
	}
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	*len_r = len;
	return 0;
}

int secret_prompt(const char *prompt, char **secret_r, bool *interrupted_r,
		  const char **error_r)
{
	struct sigaction sa = { .sa_handler = on_signal }, old[3];
	static const int sigs[3] = { SIGINT, SIGTERM, SIGHUP };
	struct termios saved, quiet;
	char buf[1024];
	size_t len = 0;
	int fd, ret;

	*secret_r = NULL;
	*interrupted_r = false;
	if (!isatty(STDIN_FILENO) ||
	    (fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		*error_r = "no terminal to ask for the password on";
		return -1;
	}
	if (tcgetattr(fd, &saved) < 0) {
		close(fd);
		*error_r = "no terminal to ask for the password on";
		return -1;
	}
	secret_interrupted = 0;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &sa, &old[i]);
	quiet = saved;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	tcsetattr(fd, TCSAFLUSH, &quiet);
	(void)!write(fd, prompt, strlen(prompt));
	ret = read_line(fd, buf, sizeof(buf), &len);
	tcsetattr(fd, TCSAFLUSH, &saved);
	(void)!write(fd, "\n", 1);
	close(fd);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &old[i], NULL);
	if (secret_interrupted) {
		*interrupted_r = true;
		*error_r = "interrupted";
		ret = -1;
	} else if (ret < 0 || len == 0) {
		*error_r = "no password given";
		ret = -1;
	} else if ((*secret_r = strndup(buf, len)) == NULL) {
		*error_r = "out of memory";
		ret = -1;
	}
	explicit_bzero(buf, sizeof(buf));
	return ret;
}
