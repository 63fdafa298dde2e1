/*
 * fl_parallel.h - running one batch row's steps on several threads.
 */
#ifndef FL_PARALLEL_H
#define FL_PARALLEL_H

#include "fl_gates.h"

#define FL_MAX_THREADS 8

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

/* Runs all steps of a batch-1, projection-free layer on `threads` threads,
 * in chunks of `chunk` steps (in the run's processing order), input
 * projections included (G: (chunk, 4H) scratch, row s = step t0 + s of the
 * chunk at t0; each thread fills its own columns). The threads start once
 * per call: a core left idle between chunks can take milliseconds to come
 * back under a hypervisor. With overlap (fl_overlap_available(); G then
 * holds fl_parallel_overlap_rows rows), chunks are FL_OVERLAP_STEPS steps
 * and each thread weaves its columns of the next chunk's projection into
 * its recurrent products (G: two chunks, then each thread's copy of the
 * next chunk's inputs). wx / wh / bias / peep are the packed weights (wx
 * and wh in the panel layout with panels ps floats apart, or ps = 0).
 * wcopy (or NULL) holds fl_parallel_copy_floats floats for the threads' copies of Wh, made
 * by this call if make_copies, else already there from an earlier one.
 * Updates run->h, run->c, run->y and *seen. Returns 1, or 0 (nothing done)
 * if the threads could not be started. */
/* Rows of 4H floats the overlap needs in G: two chunks of gates and each
 * thread's FL_OVERLAP_STEPS x I inputs. */
int fl_parallel_overlap_rows(int units, int inputs, int threads);

int fl_parallel_run(const fl_lstm *L, const fl_gate_params *gp,
                    const float *wx, int ldx, const float *wh, int ldh,
                    size_t ps, const float *bias, const float *peep,
                    const fl_lstm_run *run, float *G, int chunk, int overlap,
                    int threads, float *ws, float *wcopy, int make_copies,
                    uint8_t *seen);

/* The layer's input size (fl_lstm is opaque outside fl_lstm.c). */
int fl_lstm_input_size(const fl_lstm *L);

#endif /* FL_PARALLEL_H */
