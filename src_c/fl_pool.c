/*
 * fl_pool.c - a caller-owned pool of worker threads that sleep on a
 * condition variable between jobs; a job runs fn(arg, k) on k threads, the
 * caller's own being k = 0. Nothing runs or spins between jobs.
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "fl_pool.h"

typedef struct worker {
    struct fl_pool *pool;
    int k; /* 1 .. threads-1; the caller is 0 */
} worker;

struct fl_pool {
    int threads;
    pthread_t tids[FL_MAX_THREADS];
    worker workers[FL_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t wake;
    /* guarded by mu */
    unsigned gen; /* bumped once per job */
    int stop, job_threads;
    fl_job_fn fn;
    void *arg;
    pid_t pid; /* the process whose threads these are (not a fork child) */
    /* lock-free */
    atomic_int pending; /* workers still inside the current job */
    atomic_int busy;    /* a call owns the pool */
};

static void *worker_main(void *arg) {
    worker *w = (worker *)arg;
    fl_pool *pool = w->pool;
#if defined(__SSE2__)
    _mm_setcsr(_mm_getcsr() | 0x8040u); /* FTZ | DAZ, as in every caller */
#endif
    unsigned seen = 0;
    for (;;) {
        pthread_mutex_lock(&pool->mu);
        while (!pool->stop && pool->gen == seen)
            pthread_cond_wait(&pool->wake, &pool->mu);
        if (pool->stop) {
            pthread_mutex_unlock(&pool->mu);
            return NULL;
        }
        seen = pool->gen;
        const int take = w->k < pool->job_threads;
        const fl_job_fn fn = pool->fn;
        void *job_arg = pool->arg;
        pthread_mutex_unlock(&pool->mu);
        if (take) {
            fn(job_arg, w->k);
            atomic_fetch_sub(&pool->pending, 1);
        }
    }
}

fl_status fl_pool_create(int threads, fl_pool **out) {
    if (!out) return FL_ERR_ARG;
    *out = NULL;
    if (threads < 2 || threads > FL_MAX_THREADS) return FL_ERR_ARG;
    fl_pool *pool = (fl_pool *)calloc(1, sizeof *pool);
    if (!pool) return FL_ERR_NOMEM;
    if (pthread_mutex_init(&pool->mu, NULL) != 0) {
        free(pool);
        return FL_ERR_NOMEM;
    }
    if (pthread_cond_init(&pool->wake, NULL) != 0) {
        pthread_mutex_destroy(&pool->mu);
        free(pool);
        return FL_ERR_NOMEM;
    }
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->busy, 0);
    pool->pid = getpid();
    pool->threads = 1;
    for (int k = 1; k < threads; k++) {
        pool->workers[k].pool = pool;
        pool->workers[k].k = k;
        if (pthread_create(&pool->tids[k], NULL, worker_main, &pool->workers[k]) != 0) {
            fl_pool_free(pool);
            return FL_ERR_NOMEM;
        }
        pool->threads++;
    }
    *out = pool;
    return FL_OK;
}

void fl_pool_free(fl_pool *pool) {
    if (!pool) return;
    if (pool->pid != getpid()) { /* a fork child: the workers are not here */
        free(pool);
        return;
    }
    pthread_mutex_lock(&pool->mu);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (int k = 1; k < pool->threads; k++) pthread_join(pool->tids[k], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
}

int fl_pool_run(fl_pool *pool, int threads, fl_job_fn fn, void *arg) {
    if (threads > pool->threads || pool->pid != getpid() ||
        atomic_exchange(&pool->busy, 1))
        return 0;
    atomic_store(&pool->pending, threads - 1);
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->arg = arg;
    pool->job_threads = threads;
    pool->gen++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    fn(arg, 0);
    int spins = 0;
    while (atomic_load(&pool->pending) > 0) fl_spin_pause(&spins);
    atomic_store(&pool->busy, 0);
    return 1;
}

/* ---- jobs on threads started per call ------------------------------------ */

typedef struct starter {
    fl_job_fn fn;
    void *arg;
    int k;
    atomic_int *go; /* 0 wait, 1 run, -1 abort (a thread could not start) */
} starter;

static void *starter_main(void *arg) {
    const starter *s = (const starter *)arg;
#if defined(__SSE2__)
    _mm_setcsr(_mm_getcsr() | 0x8040u); /* FTZ | DAZ, as in the caller */
#endif
    int go;
    while ((go = atomic_load(s->go)) == 0) sched_yield();
    if (go > 0) s->fn(s->arg, s->k);
    return NULL;
}

int fl_team_run(fl_pool *pool, int threads, fl_job_fn fn, void *arg) {
    if (threads > FL_MAX_THREADS) return 0;
    if (pool && fl_pool_run(pool, threads, fn, arg)) return 1;
    /* all threads start before any runs: a job's barriers would otherwise
     * wait forever for a thread that never came */
    atomic_int go;
    atomic_init(&go, 0);
    pthread_t tids[FL_MAX_THREADS];
    starter st[FL_MAX_THREADS];
    int started = 1;
    for (int k = 1; k < threads; k++) {
        st[k] = (starter){.fn = fn, .arg = arg, .k = k, .go = &go};
        if (pthread_create(&tids[k], NULL, starter_main, &st[k]) != 0) break;
        started++;
    }
    atomic_store(&go, started < threads ? -1 : 1);
    if (started == threads) fn(arg, 0);
    for (int k = 1; k < started; k++) pthread_join(tids[k], NULL);
    return started == threads;
}

void fl_barrier_init(fl_barrier *b) {
    atomic_init(&b->arrived, 0);
    atomic_init(&b->generation, 0);
}

void fl_barrier_wait(fl_barrier *b, unsigned *gen, int n) {
    unsigned g = *gen;
    if ((int)atomic_fetch_add(&b->arrived, 1) == n - 1) {
        atomic_store(&b->arrived, 0);
        atomic_store(&b->generation, g + 1);
    } else {
        int spins = 0;
        while (atomic_load(&b->generation) == g) fl_spin_pause(&spins);
    }
    *gen = g + 1;
}
