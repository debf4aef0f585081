/*
 * jobs.c — the blocking-work thread pool (see jobs.h).
 *
 * A plain FIFO under one mutex and condition variable; the pool never
 * stops (the process exits instead), so there is no shutdown path to get
 * wrong.  Queue length is bounded by the callers: each connection has at
 * most one job in flight.
 */
#include "jobs.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>

struct jobs {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct job *head, *tail;
};

static void *jobs_thread(void *arg)
{
	struct jobs *jobs = arg;

	for (;;) {
		pthread_mutex_lock(&jobs->lock);
		while (jobs->head == NULL)
			pthread_cond_wait(&jobs->wake, &jobs->lock);
		struct job *job = jobs->head;
		jobs->head = job->next;
		if (jobs->head == NULL)
			jobs->tail = NULL;
		pthread_mutex_unlock(&jobs->lock);

		job->run(job);
		event_active(job->done_event, EV_TIMEOUT, 0);
	}
	return NULL;
}

int jobs_start(unsigned int threads, struct jobs **jobs_r, const char **error_r)
{
	struct jobs *jobs = calloc(1, sizeof(*jobs));

	if (jobs == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	pthread_mutex_init(&jobs->lock, NULL);
	pthread_cond_init(&jobs->wake, NULL);
	for (unsigned int i = 0; i < threads; i++) {
		pthread_t tid;
		if (pthread_create(&tid, NULL, jobs_thread, jobs) != 0) {
			*error_r = "pthread_create failed";
			return -1;
		}
		pthread_detach(tid);
	}
	*jobs_r = jobs;
	return 0;
}

static void job_done_callback(evutil_socket_t fd, short what, void *arg)
{
	struct job *job = arg;
	(void)fd;
	(void)what;
	job->done(job);
}

int job_init(struct job *job, struct event_base *base)
{
	job->next = NULL;
	job->done_event = event_new(base, -1, 0, job_done_callback, job);
	return job->done_event == NULL ? -1 : 0;
}

void job_deinit(struct job *job)
{
	if (job->done_event != NULL)
		event_free(job->done_event);
	job->done_event = NULL;
}

void jobs_submit(struct jobs *jobs, struct job *job)
{
	job->next = NULL;
	pthread_mutex_lock(&jobs->lock);
	if (jobs->tail != NULL)
		jobs->tail->next = job;
	else
		jobs->head = job;
	jobs->tail = job;
	pthread_cond_signal(&jobs->wake);
	pthread_mutex_unlock(&jobs->lock);
}
