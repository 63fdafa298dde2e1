/*
 * fl_pool.h - worker threads for calls that split each step (fl_pool.c).
 */
#ifndef FL_POOL_H
#define FL_POOL_H

#include <sched.h>
#include <stdatomic.h>
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

/* Runs fn(arg, k) for k < threads like fl_pool_run, on the pool's workers
 * when `pool` is given and free, else on threads started for this call
 * and joined before it returns (they run with FTZ/DAZ, as every caller
 * does). Returns 1 when all have finished; 0 (nothing run) if the threads
 * could not be started. */
int fl_team_run(fl_pool *pool, int threads, fl_job_fn fn, void *arg);

/* A spinning barrier for the threads of one job, reusable step after
 * step: each thread keeps its own generation count, starting at 0. */
typedef struct fl_barrier {
    atomic_uint arrived;
    atomic_uint generation;
} fl_barrier;

void fl_barrier_init(fl_barrier *b);

/* Waits until all n threads have arrived. */
void fl_barrier_wait(fl_barrier *b, unsigned *gen, int n);

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
