/*
 * fl_parallel.h - running one batch row's steps on several threads.
 */
#ifndef FL_PARALLEL_H
#define FL_PARALLEL_H

#include "fl_gates.h"

#define FL_MAX_THREADS 8

/* Floats of workspace fl_parallel_chunk needs for `units` units. */
size_t fl_parallel_workspace_floats(int units);

/* Runs steps t0 .. t0+n-1 (in the run's processing order) of a batch-1,
 * projection-free layer on `threads` threads. G holds the chunk's input
 * projections (row s = step t0 + s), wh / bias / peep the packed weights.
 * Updates run->h, run->c, run->y and *seen. Returns 1, or 0 (nothing done)
 * if the threads could not be started. */
int fl_parallel_chunk(const fl_lstm *L, const fl_gate_params *gp,
                      const float *wh, int ldh, const float *bias,
                      const float *peep,
                      const fl_lstm_run *run, const float *G, int t0, int n,
                      int threads, float *ws, uint8_t *seen);

#endif /* FL_PARALLEL_H */
