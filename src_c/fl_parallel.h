/*
 * fl_parallel.h - running one batch row's steps on several threads.
 */
#ifndef FL_PARALLEL_H
#define FL_PARALLEL_H

#include "fl_gates.h"
#include "fl_packed.h"
#include "fl_pool.h"

/* Floats of workspace fl_parallel_run needs for `units` units. */
size_t fl_parallel_workspace_floats(int units);

/* Chunks of at least this many steps run on per-thread copies of Wh when
 * the workspace has room for them (fl_parallel_copy_floats). */
#define FL_PAR_COPY_MIN_STEPS 32

/* Floats of workspace for the threads' own contiguous copies of their
 * columns of Wh (H rows x 4H, split between `threads` threads; ps as in
 * fl_parallel_run, which decides the split). */
size_t fl_parallel_copy_floats(int units, int threads, size_t ps);

/* Makes the threads' copies of Wh in wcopy on the calling thread, in the
 * layout fl_parallel_run uses (for a call whose threads could not start
 * but whose caller keeps the workspace). */
void fl_parallel_fill_copies(const float *wh, int ldh, size_t ps, int units,
                             int threads, float *wcopy);

/* Rows of 4H floats the woven threads need in G: two chunks of gates and
 * each thread's FL_WOVEN_STEPS x I inputs. */
int fl_parallel_woven_rows(int units, int inputs, int threads);

/* A batch-1, projection-free call split between threads. */
typedef struct fl_parallel_job {
    const fl_weights *w; /* wx, wh (panels ps apart, or ps = 0), bias,
                            peepholes */
    const fl_gate_params *gp;
    const fl_run *run;
    float *G;  /* (chunk, 4H) scratch, row s = step t0 + s of the
                  chunk at t0; each thread fills its own columns.
                  Woven: two chunks of FL_WOVEN_STEPS, then each
                  thread's copy of the next chunk's inputs
                  (fl_parallel_woven_rows rows in all) */
    int chunk; /* steps per chunk, in the run's processing order */
    int woven; /* each thread weaves its columns of the next chunk's
                  projection into its recurrent products */
    int threads;
    float *ws;       /* fl_parallel_workspace_floats floats */
    float *wcopy;    /* fl_parallel_copy_floats floats for the threads'
                        copies of their Wh columns, or NULL */
    int make_copies; /* make them now (else an earlier call made them) */
    int input_size;
    int carry; /* FL_MASK_CARRY */
} fl_parallel_job;

/* Runs all steps of the job's call, input projections included. The
 * threads start once per call: a core left idle between chunks can take
 * milliseconds to come back under a hypervisor. Updates run->h, run->c,
 * run->y and *seen. Returns 1, or 0 (nothing done) if the threads could
 * not be started. */
int fl_parallel_run(const fl_parallel_job *job, uint8_t *seen);

#endif /* FL_PARALLEL_H */
