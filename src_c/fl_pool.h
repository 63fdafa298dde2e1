/*
 * fl_pool.h - worker threads for calls that split each step (fl_pool.c).
 */
#ifndef FL_POOL_H
#define FL_POOL_H

#include <sched.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "fastlstm.h"

#define FL_MAX_THREADS 8

typedef void (*fl_job_fn)(void *arg, int k);

/* Runs fn(arg, k) for k < threads, k = 0 on the calling thread, and
 * returns 1 when all have finished; 0 (nothing run) if the pool is in use,
 * has fewer threads, or was inherited through fork() (a child process has
 * none of the parent's workers). */
int fl_pool_run(fl_pool *pool, int threads, fl_job_fn fn, void *arg);

/* One round of a spin-wait: pause, and after a while yield the core (an
 * oversubscribed machine must let the awaited thread run). */
static inline void fl_spin_pause(int *spins) {
#if defined(__SSE2__)
    _mm_pause();
#endif
    if (++*spins > 4000) {
        sched_yield();
        *spins = 0;
    }
}

#endif /* FL_POOL_H */
