/* workers.c: the hypervisor layer's own threads. n worker threads take
 * short libvirt calls from one queue; one long-job thread takes migrations
 * (and their monitors) from another, so a long job never holds a worker.
 * Finished work is handed to the loop through a locked list and uv_async;
 * every accepted submission gets its done callback exactly once, on the
 * loop: status 0 after its work ran, -ECANCELED if the pool stopped first.
 *
 * Not libuv's pool (uv_queue_work): that one is shared by the whole process
 * (image downloads, hashing, fsync), and a libvirtd that stops answering
 * would take its threads one by one. */
#include <stdlib.h>

#include "agent/hypervisor/hv-internal.h"

struct hv_job {
    hv_work_fn work;
    hv_done_fn done;
    void *arg;
    int status;
    struct hv_job *next;
};

struct job_queue {
    struct hv_job *head, *tail;
};

struct hv_workers {
    struct hv *hv;
    pthread_mutex_t lock;      /* guards the queues and stopping */
    pthread_cond_t cond;       /* work queued, or stopping */
    struct job_queue shortq;   /* for the workers */
    struct job_queue longq;    /* for the long-job thread */
    struct job_queue doneq;    /* finished, for the loop */
    bool stopping;             /* no new work; threads exit when idle */
    pthread_t *threads;        /* n_threads workers, then the long-job thread */
    size_t n_threads;          /* started (joined in free) */
    uv_async_t async;          /* wakes the loop for doneq */
};

struct thread_arg {
    struct hv_workers *w;
    bool long_job;
};

static void push(struct job_queue *q, struct hv_job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static struct hv_job *pop(struct job_queue *q)
{
    struct hv_job *j = q->head;

    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
    }
    return j;
}

/* Move every job of q to doneq as cancelled. Lock held. */
static void cancel_all(struct hv_workers *w, struct job_queue *q)
{
    struct hv_job *j;

    while ((j = pop(q))) {
        j->status = -ECANCELED;
        push(&w->doneq, j);
    }
}

static void *thread_main(void *p)
{
    struct thread_arg ta = *(struct thread_arg *)p;
    struct hv_workers *w = ta.w;
    struct job_queue *q = ta.long_job ? &w->longq : &w->shortq;

    free(p);
    pthread_mutex_lock(&w->lock);
    for (;;) {
        struct hv_job *j;
        while (!w->stopping && !q->head)
            pthread_cond_wait(&w->cond, &w->lock);
        if (!(j = pop(q)))
            break; /* stopping and nothing left (stop cancels the queue) */
        pthread_mutex_unlock(&w->lock);
        j->work(w->hv, j->arg);
        j->status = 0;
        pthread_mutex_lock(&w->lock);
        push(&w->doneq, j);
        uv_async_send(&w->async);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* Run the done callbacks of finished work. Loop thread. */
static void deliver(struct hv_workers *w)
{
    struct hv_job *j;

    pthread_mutex_lock(&w->lock);
    j = w->doneq.head;
    w->doneq.head = w->doneq.tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (j) {
        struct hv_job *next = j->next;
        j->done(w->hv, j->arg, j->status);
        free(j);
        j = next;
    }
}

static void on_async(uv_async_t *a)
{
    deliver(a->data);
}

static int start_thread(struct hv_workers *w, bool long_job)
{
    struct thread_arg *ta = malloc(sizeof(*ta));
    int r;

    if (!ta)
        return -ENOMEM;
    ta->w = w;
    ta->long_job = long_job;
    r = pthread_create(&w->threads[w->n_threads], NULL, thread_main, ta);
    if (r != 0) {
        free(ta);
        return -r;
    }
    w->n_threads++;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct hv_workers *w = h->data;

    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w->threads);
    free(w);
}

int hv_workers_new(uv_loop_t *loop, struct hv *hv, unsigned n, struct hv_workers **ret)
{
    struct hv_workers *w = calloc(1, sizeof(*w));
    int r = 0;

    if (!w || !(w->threads = calloc((size_t)n + 1, sizeof(*w->threads)))) {
        free(w);
        return -ENOMEM;
    }
    w->hv = hv;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    if ((r = uv_async_init(loop, &w->async, on_async)) < 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        free(w->threads);
        free(w);
        return r;
    }
    w->async.data = w;
    /* pending work keeps nothing alive: its owner (ops) does */
    uv_unref((uv_handle_t *)&w->async);
    for (unsigned i = 0; i < n && r == 0; i++)
        r = start_thread(w, false);
    if (r == 0)
        r = start_thread(w, true);
    if (r < 0) {
        hv_workers_free(w);
        return r;
    }
    *ret = w;
    return 0;
}

int hv_workers_submit(struct hv_workers *w, bool long_job, hv_work_fn work, hv_done_fn done,
                      void *arg)
{
    struct hv_job *j;

    if (!w || !work || !done)
        return -EINVAL;
    if (!(j = calloc(1, sizeof(*j))))
        return -ENOMEM;
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        free(j);
        return -ESHUTDOWN;
    }
    push(long_job ? &w->longq : &w->shortq, j);
    /* broadcast: the long-job thread and the workers wait on one cond */
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void hv_workers_stop(struct hv_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    if (!w->stopping) {
        w->stopping = true;
        cancel_all(w, &w->shortq);
        cancel_all(w, &w->longq);
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->async);
}

void hv_workers_free(struct hv_workers *w)
{
    if (!w)
        return;
    hv_workers_stop(w);
    for (size_t i = 0; i < w->n_threads; i++)
        pthread_join(w->threads[i], NULL);
    w->n_threads = 0;
    deliver(w); /* what finished or was cancelled and not yet seen */
    uv_close((uv_handle_t *)&w->async, on_closed);
}
