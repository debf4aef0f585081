/*
 * jobs.h — a pool of threads for blocking work: password hashing, maildrop
 * scans, fsync at UPDATE.  Event loops never block on these.
 *
 * A job runs job->run(job) on a pool thread, then job->done(job) on the
 * event loop (event_base) that submitted it, via an event made active from
 * the pool thread (libevent with pthreads support is thread-safe for that).
 * The submitter keeps the job alive until done runs.
 */
#ifndef POPBOX_JOBS_H
#define POPBOX_JOBS_H

struct event_base;
struct event;
struct jobs;

struct job {
	void (*run)(struct job *job);   /* on a pool thread */
	void (*done)(struct job *job);  /* on the submitting loop */
	struct event *done_event;       /* owned by jobs.c */
	struct job *next;               /* queue link, owned by jobs.c */
};

/* Starts threads pool threads. */
int jobs_start(unsigned int threads, struct jobs **jobs_r, const char **error_r);
/* Prepares a job to be submitted from loop base (once per job object). */
int job_init(struct job *job, struct event_base *base);
/* Frees what job_init allocated; the job must not be queued or running. */
void job_deinit(struct job *job);
/* Queues the job; never blocks on the job itself. */
void jobs_submit(struct jobs *jobs, struct job *job);

#endif
