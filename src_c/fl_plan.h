/*
 * fl_plan.h - the one place that decides how a forward call runs.
 *
 * fl_plan_make picks the call's path (fl_path in fastlstm.h), its chunking,
 * the copies it makes and where each buffer lies in the workspace; the
 * forward pass (fl_forward.c) only follows the plan.
 */
#ifndef FL_PLAN_H
#define FL_PLAN_H

#include "fl_packed.h"

/* Input projections of fewer rows (steps x batch rows of a chunk) stay off
 * AMX: splitting the weights into bfloat16 parts would cost more than it
 * saves. The plan asks it of a chunk, the forward pass of each product. */
#define FL_AMX_MIN_ROWS 128

typedef struct fl_plan {
    fl_path path;
    int chunk;         /* steps per input projection */
    int threads;       /* FL_PATH_THREADS: threads sharing each step */
    int thread_copies; /* FL_PATH_THREADS: each thread reads its own copy
                          of its Wh columns (wcopy) */
    int threads_woven; /* FL_PATH_THREADS: the threads weave each chunk's
                          input projection into their recurrent products */
    int amx;           /* input projections may run on AMX tiles (scratch
                          at amx_scratch) */
    int wh_copy;       /* batch 1, one thread: the call reads a copy of Wh
                          in panels made in the workspace (whc) */
    /* workspace regions, byte offsets from the first aligned address */
    size_t slabs;       /* FL_PATH_TILES: fl_batch_pack's copy of [Wx; Wh]
                           and the bias, in slabs of 16 units */
    size_t z;           /* FL_PATH_TILES: (FL_BATCH_GROUP, 64) pre-activations */
    size_t hnext;       /* FL_PATH_TILES: (B, H) the step's new h */
    size_t skip;        /* FL_PATH_TILES: (B,) bytes, each row's step status */
    size_t xrows;       /* FL_PATH_TILES: (B, I) one step's inputs */
    size_t gates;       /* (chunk, B, 4H) input projection + recurrent term;
                           two chunks when woven */
    size_t xt;          /* FL_PATH_WOVEN: the next chunk's inputs, as
                           fl_woven_x_fill lays them */
    size_t m;           /* (B, H) pre-projection output (projection only) */
    size_t hnew;        /* (B, P) projected output (projection only) */
    size_t seen;        /* (B) bytes, when the caller passes no `seen` */
    size_t rec;         /* (B, 4H) one step's recurrent product, contiguous
                           (batch-major batches, whose gate rows lie far
                           apart) */
    size_t par;         /* fl_parallel_run's buffers (batch 1, no projection) */
    size_t wcopy;       /* the threads' copies of their Wh columns */
    size_t xh;          /* (I + R): [x_t; h] of a one-step batch-1 chunk */
    size_t whc;         /* the call's copy of Wh in panels */
    size_t amx_scratch; /* fl_amx_gemm's scratch */
    size_t total;       /* bytes, with slack to align any base address */
} fl_plan;

/* The plan of `run` for a workspace of work_bytes (SIZE_MAX: the run's
 * own, largest plan). In a smaller workspace the plan drops, in turn, the
 * threads' weight copies, the AMX scratch and the woven projection.
 * FL_ERR_ARG if even the plainest plan does not fit. */
fl_status fl_plan_make(const fl_lstm *L, const fl_run *run, size_t work_bytes,
                       fl_plan *plan);

/* Workspace bytes of any run of this size whose chunk_steps is given,
 * on one thread, with or without the woven projection. */
fl_status fl_plan_size_any(const fl_lstm *L, int batch, int steps, int chunk_steps,
                           size_t *bytes);

#endif /* FL_PLAN_H */
