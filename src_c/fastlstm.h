/*
 * fastlstm.h - the only public header of the fastlstm C core.
 *
 * fastlstm/_core.pxd mirrors this file one to one: change both together
 * (tests/test_api.py checks that the enum values agree).
 *
 * Conventions
 *   - Canonical weights (what fl_lstm_create takes) use Keras' layout, gate
 *     blocks in the order i, f, g (cell candidate), o:
 *       kernel            (I, 4H) row-major    z += x @ kernel
 *       recurrent_kernel  (R, 4H) row-major    z += h @ recurrent_kernel
 *       bias              (4H)                 NULL means zeros
 *       peepholes         (3, H)  rows w_i, w_f, w_o; NULL means none
 *       projection        (H, P)  h = m @ projection; NULL means none
 *     R = P when there is a projection, else H.
 *   - The core packs its own copy; the caller's arrays may be freed after
 *     fl_lstm_create returns. The packed model is immutable, so one fl_lstm
 *     may be used by any number of threads at once, each with its own state
 *     and workspace.
 *   - Every fallible function returns an fl_status. Nothing prints, aborts
 *     or touches global state. Nothing allocates after fl_lstm_create.
 *   - BLAS is supplied by the caller as Fortran-ABI function pointers
 *     (LP64 int), e.g. from scipy.linalg.cython_blas or any libblas.
 */
#ifndef FASTLSTM_H
#define FASTLSTM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FL_VERSION_MAJOR 0
#define FL_VERSION_MINOR 1

/* Largest accepted value for any one dimension (I, H, P, batch, steps). */
#define FL_MAX_DIM (1 << 24)

typedef enum fl_status {
    FL_OK = 0,
    FL_ERR_ARG = 1,         /* NULL pointer or invalid option value */
    FL_ERR_SHAPE = 2,       /* a size is zero, negative or inconsistent */
    FL_ERR_NOMEM = 3,       /* allocation failed (fl_lstm_create only) */
    FL_ERR_NONFINITE = 4,   /* NaN or inf in weights, or in a checked input */
    FL_ERR_UNSUPPORTED = 5, /* unknown activation or option */
    FL_ERR_OVERFLOW = 6     /* sizes whose product overflows */
} fl_status;

/* Activation functions. hard_sigmoid has two definitions in the wild:
 * Keras 1/2 and tf.keras use clip(0.2 x + 0.5, 0, 1), Keras 3 uses
 * clip(x / 6 + 0.5, 0, 1). */
typedef enum fl_activation {
    FL_ACT_TANH = 0,
    FL_ACT_SIGMOID = 1,
    FL_ACT_HARD_SIGMOID_K2 = 2,
    FL_ACT_HARD_SIGMOID_K3 = 3,
    FL_ACT_RELU = 4,
    FL_ACT_LINEAR = 5,
    FL_ACT_SOFTSIGN = 6,
    FL_ACT_ELU = 7,
    FL_ACT_SELU = 8,
    FL_ACT_SOFTPLUS = 9,
    FL_ACT_EXPONENTIAL = 10
} fl_activation;
#define FL_ACT_COUNT 11

/* What a masked (or past-the-length) step writes to the output sequence.
 * The state (h, c) is always carried unchanged over such a step. */
typedef enum fl_mask_output {
    FL_MASK_CARRY = 0, /* the previous step's output; zeros before the first
                          valid step of a row (see fl_run.seen) */
    FL_MASK_ZERO = 1   /* zeros */
} fl_mask_output;

/* Fortran BLAS (column-major, arguments by pointer, LP64 int). */
typedef void (*fl_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                            float *alpha, float *a, int *lda, float *b, int *ldb,
                            float *beta, float *c, int *ldc);
typedef void (*fl_sgemv_fn)(char *trans, int *m, int *n, float *alpha, float *a,
                            int *lda, float *x, int *incx, float *beta, float *y,
                            int *incy);

typedef struct fl_blas {
    fl_sgemm_fn sgemm;
    fl_sgemv_fn sgemv;
} fl_blas;

/* How fl_lstm_create stores [kernel; recurrent_kernel]. Row-major, or in
 * panels of 128 columns, each panel's rows contiguous: a batch-1 step reads
 * weights that stream from L3 faster that way. Results are the same
 * either way. */
typedef enum fl_weight_layout {
    FL_LAYOUT_AUTO = 0, /* panels from 256 KB of weights (units a
                           multiple of 16) when the CPU has no AMX, else
                           rows */
    FL_LAYOUT_ROWS = 1,
    FL_LAYOUT_PANELS = 2 /* needs units % 16 == 0 (else FL_ERR_UNSUPPORTED) */
} fl_weight_layout;

/* Shape and options of one LSTM layer (one direction). Zero-initialize it
 * (`= {0}` or designated initializers): a field left zero takes its default
 * (weight_layout: FL_LAYOUT_AUTO). */
typedef struct fl_lstm_desc {
    int input_size;                     /* I */
    int units;                          /* H */
    int proj_size;                      /* P; 0 = no projection */
    fl_activation activation;           /* cell candidate g and act(c) */
    fl_activation recurrent_activation; /* gates i, f, o */
    int use_cell_clip;                  /* clip c to [-cell_clip, cell_clip] */
    float cell_clip;
    int use_proj_clip; /* clip projected h to [-proj_clip, proj_clip] */
    float proj_clip;
    fl_weight_layout weight_layout; /* fl_lstm_get_desc reports the one
                                       chosen (never FL_LAYOUT_AUTO) */
} fl_lstm_desc;

typedef struct fl_lstm fl_lstm; /* opaque, immutable after create */

/* Worker threads that sleep between calls (on a condition variable: no
 * spinning), for callers that make many short calls, such as one streaming
 * step at a time, where starting threads per call would cost more than it
 * saves. Owned by the caller and named in fl_run.pool. One forward
 * call uses a pool at a time; a call that finds it in use starts its own
 * threads instead, so sharing a pool is safe, only slower. */
typedef struct fl_pool fl_pool;

/* One forward pass over `steps` time steps of `batch` rows.
 * All arrays are C-contiguous float32 unless said otherwise. With
 * batch_major = 0, x, mask and y are indexed [t][b]; with batch_major = 1
 * (the Keras layout) they are indexed [b][t]. */
typedef struct fl_run {
    int batch;
    int steps;
    int batch_major;
    const float *x;             /* (steps, batch, I) or (batch, steps, I),
                                   time in input order */
    const uint8_t *mask;        /* (steps, batch) or (batch, steps), nonzero =
                                   valid; or NULL */
    const int32_t *lengths;     /* (batch,): step t is valid iff t < lengths[b];
                                   or NULL. Steps past a row's length output
                                   zeros whatever mask_output says. */
    int reverse;                /* process t = steps-1 down to 0 */
    fl_mask_output mask_output; /* output at steps the mask excludes */
    int check_finite;           /* FL_ERR_NONFINITE if a valid x row has NaN/inf */
    float *h;                   /* (batch, R): initial state in, final out */
    float *c;                   /* (batch, H): initial state in, final out;
                                   LSTM only (fl_layer runs ignore it) */
    uint8_t *seen;              /* (batch,) nonzero once a row had a valid step;
                                   a row's carried output is h once seen, zeros
                                   before. In/out; NULL = all rows unseen. */
    float *y;                   /* outputs, (steps, batch, R) or (batch, steps,
                                   R), in processing order (y[k] is input step
                                   steps-1-k when reverse), or NULL */
    float *y_last;              /* (batch, R): the output of the last processed
                                   step; for a row past its length there, its
                                   output at its own last valid step. Or NULL */
    int chunk_steps;            /* time steps per input-projection GEMM;
                                   0 = all steps in one GEMM; FL_CHUNK_AUTO =
                                   as many as keep the call's peak memory
                                   near 1.4x its weights, inputs and outputs */
    int threads;                /* LSTM: threads for batch 1 without
                                   projection; GRU and simple RNN: any
                                   batch, parts of 32+ units. Each thread
                                   keeps its share of the recurrent weights
                                   in its own cache. 0 or 1 = the calling
                                   thread only. At most 8. */
    fl_pool *pool;              /* run those threads on this pool's workers
                                   (if it has enough), or NULL: start threads
                                   for this call and join them before it
                                   returns */
    int sweep;                  /* 0 or 1: the order in which the first step
                                   of a batch-1 call reads the recurrent
                                   weights; later steps alternate. Results do
                                   not depend on it. A caller running one step
                                   per call should flip it every call, so each
                                   step starts on the weights the previous one
                                   read last, still in cache (a 4 MB layer:
                                   ~1.5x faster per step). */
    int keep_copies;            /* batch 1 on several threads, where each
                                   thread reads its own copy of its recurrent
                                   weights from the workspace (made per call
                                   for runs of 32+ steps). For a caller that
                                   keeps one workspace for many short calls of
                                   this layer with the same batch, steps and
                                   threads (a stream): 1 = make the copies in
                                   it now, 2 = they are there from an earlier
                                   call with 1, use them. 0 = neither. Size
                                   the workspace with fl_lstm_run_workspace_size
                                   and this field set. */
    int no_amx;                 /* 1: never run the input projection on AMX
                                   tiles (see fl_amx_available); 0 = use them
                                   where the CPU has them. */
    int no_woven;             /* 1: never weave the input projection into
                                   the recurrent products (batch 1, one thread,
                                   AVX-512; see src_c/fl_woven.c); 0 = do
                                   where it applies. For tests and timing. */
} fl_run;

fl_status fl_lstm_create(const fl_lstm_desc *desc, const float *kernel,
                         const float *recurrent_kernel, const float *bias,
                         const float *peepholes, const float *projection,
                         fl_lstm **out);
void fl_lstm_free(fl_lstm *lstm);

/* Copy of the descriptor the layer was created with, its weight_layout
 * the one in use. */
fl_status fl_lstm_get_desc(const fl_lstm *lstm, fl_lstm_desc *out);

/* Bytes of workspace fl_lstm_forward needs for this batch and chunk length
 * (chunk_steps as in fl_run; 0 means `steps`). For a long batch-1 run
 * on one thread this includes room for a copy of the recurrent weights in
 * a layout the step reads faster (when the copy is at most a quarter of the
 * run's weights, inputs and outputs). */
fl_status fl_lstm_workspace_size(const fl_lstm *lstm, int batch, int steps,
                                 int chunk_steps, size_t *out_bytes);

/* Bytes of workspace for this run (its batch, steps, chunk_steps and
 * threads, keep_copies). A batch-1 run on several threads of 32 or more
 * steps (or with keep_copies) gets room for each thread's own contiguous
 * copy of its share of the recurrent weights, which it reads faster; a
 * workspace of fl_lstm_workspace_size bytes also works, without them. */
fl_status fl_lstm_run_workspace_size(const fl_lstm *lstm, const fl_run *run,
                                     size_t *out_bytes);

/* The path a forward call takes; fl_lstm_plan says which, and why. */
typedef enum fl_path {
    FL_PATH_TILES = 0,    /* batches: each step one fused pass per tile of
                             16 units over a per-call copy of the weights */
    FL_PATH_THREADS = 1,  /* batch 1: each step split between threads */
    FL_PATH_WOVEN = 2,    /* batch 1: each chunk's input projection woven
                             into the previous chunk's recurrent products */
    FL_PATH_STEPWISE = 3, /* batch 1, small weights: one [x; h] @ [Wx; Wh]
                             product per step */
    FL_PATH_CHUNKED = 4   /* input projection per chunk (BLAS or AMX), then
                             a recurrent product per step */
} fl_path;

#define FL_CHUNK_AUTO (-1)

typedef struct fl_plan_info {
    fl_path path;
    int chunk_steps;        /* steps per input projection */
    int amx;                /* input projections may run on AMX tiles */
    int wh_copy;            /* the call reads a copy of Wh in panels */
    int thread_copies;      /* threads read their own copies of Wh */
    int threads_woven;      /* threads weave the input projection */
    size_t workspace_bytes; /* what the plan lays out */
} fl_plan_info;

/* How fl_lstm_forward would run `run` in a workspace of work_bytes
 * (SIZE_MAX: its own size). FL_ERR_ARG if the workspace is too small. */
fl_status fl_lstm_plan(const fl_lstm *lstm, const fl_run *run, size_t work_bytes,
                       fl_plan_info *out);

/* Runs the layer. `work` must hold fl_lstm_workspace_size bytes (or
 * fl_lstm_run_workspace_size's) and be aligned to 64 bytes. On error
 * nothing is guaranteed about h, c, y. */
fl_status fl_lstm_forward(const fl_lstm *lstm, const fl_blas *blas,
                          const fl_run *run, void *work, size_t work_bytes);

/* ---- GRU and simple RNN layers -------------------------------------------
 * Canonical weights, G gate blocks of H columns (GRU: G = 3 in the order
 * z (update), r (reset), n (candidate), as Keras and ONNX store them;
 * simple RNN: G = 1):
 *   kernel            (I, GH) row-major    x @ kernel
 *   recurrent_kernel  (H, GH) row-major    h @ recurrent_kernel
 *   bias              (GH) added to x @ kernel; NULL means zeros
 *   recurrent_bias    (GH) added to h @ recurrent_kernel; NULL means zeros
 * GRU, with x_k = (x @ kernel + bias)_k and h_k = (h @ recurrent_kernel +
 * recurrent_bias)_k:
 *   z = ract(x_z + h_z)    r = ract(x_r + h_r)
 *   n = act(x_n + r * h_n)                         reset_after = 1
 *   n = act(x_n + (r * h) @ U_n + recurrent_bias_n)  reset_after = 0
 *   h' = z * h + (1 - z) * n
 * Simple RNN: h' = act(x @ kernel + bias + h @ recurrent_kernel +
 * recurrent_bias).
 * Runs take an fl_run as the LSTM does, without c; they use one thread
 * (threads, pool, keep_copies, no_amx and no_woven are ignored). */
typedef enum fl_layer_kind { FL_LAYER_GRU = 0, FL_LAYER_SIMPLE = 1 } fl_layer_kind;

typedef struct fl_layer_desc {
    fl_layer_kind kind;
    int input_size;                     /* I */
    int units;                          /* H */
    fl_activation activation;           /* GRU: n; simple RNN: h' */
    fl_activation recurrent_activation; /* GRU: z and r; simple RNN: unused */
    int reset_after;                    /* GRU: 1 = r multiplies h_n (PyTorch,
                                           Keras reset_after=True, ONNX
                                           linear_before_reset=1) */
} fl_layer_desc;

typedef struct fl_layer fl_layer; /* opaque, immutable after create */

fl_status fl_layer_create(const fl_layer_desc *desc, const float *kernel,
                          const float *recurrent_kernel, const float *bias,
                          const float *recurrent_bias, fl_layer **out);
void fl_layer_free(fl_layer *layer);
fl_status fl_layer_get_desc(const fl_layer *layer, fl_layer_desc *out);

/* Bytes of workspace fl_layer_forward needs for this run (its batch,
 * steps, chunk_steps and threads). */
fl_status fl_layer_workspace_size(const fl_layer *layer, const fl_run *run,
                                  size_t *out_bytes);

/* Runs the layer as fl_lstm_forward does (h updated in place; y, y_last
 * and seen as fl_run says; threads on run->pool or started for the call,
 * the calling thread alone if they cannot start). `work` holds
 * fl_layer_workspace_size bytes, aligned to 64 bytes. */
fl_status fl_layer_forward(const fl_layer *layer, const fl_blas *blas,
                           const fl_run *run, void *work, size_t work_bytes);

/* ---- Chains: one streaming step through a model's layers ------------------
 * A chain is a model that runs one time step at a time as a sequence of
 * stages, each feeding the next: the per-step path of a model stream, so
 * that layers after a recurrent one cost no interpreter time. The stages
 * and the runs they point to are the caller's; a step allocates nothing. */
typedef enum fl_stage_kind {
    FL_STAGE_MASKING = 0,   /* the step's mask: a row is valid unless all its
                               features equal mask_value; invalid rows'
                               features become 0 (x * 0 with keep_nan) */
    FL_STAGE_LSTM = 1,      /* one step of an fl_lstm over `run` */
    FL_STAGE_LAYER = 2,     /* one step of an fl_layer (GRU, simple RNN) */
    FL_STAGE_DENSE = 3,     /* activation(x @ kernel + bias) */
    FL_STAGE_ACTIVATION = 4,
    FL_STAGE_SOFTMAX = 5,   /* softmax over the features */
    FL_STAGE_AFFINE = 6,    /* x * scale + shift, per feature */
    FL_STAGE_EMBEDDING = 7, /* the row of `kernel` (vocab, out_size) of each
                               row's token id x[b] (in_size 1; a float,
                               truncated as a cast to an integer);
                               FL_ERR_ARG for an id outside [0, vocab).
                               With mask_zero, the step's mask is id != 0 */
    FL_STAGE_LAYER_NORM = 8 /* (x - mean) / sqrt(var + epsilon) over each
                               row's features (x / sqrt(mean(x^2) + epsilon)
                               with rms_scaling), then * scale + shift
                               (each may be NULL) */
} fl_stage_kind;

typedef struct fl_stage {
    fl_stage_kind kind;
    int in_size;  /* features in */
    int out_size; /* features out (in_size but for LSTM, LAYER, DENSE) */
    /* FL_STAGE_MASKING */
    float mask_value;
    int keep_nan;
    /* FL_STAGE_LSTM, FL_STAGE_LAYER: the layer, and a run whose batch, h,
     * c, seen, mask_output, check_finite, threads, pool, sweep and
     * keep_copies are set (as for a one-step, batch-major call); a step sets
     * its x, mask, y and y_last, then flips sweep and turns keep_copies 1
     * into 2. `work` holds that run's workspace. */
    const fl_lstm *lstm;
    const fl_layer *layer;
    fl_run *run;
    void *work;
    size_t work_bytes;
    int masked;          /* the mask of the last masking stage applies */
    int sequence_output; /* write the step's output as fl_run.y (what a
                            layer returning sequences gives at a masked
                            step), not y_last */
    /* FL_STAGE_DENSE: kernel (in_size, out_size) row-major, bias (out_size)
     * or NULL; FL_STAGE_DENSE and FL_STAGE_ACTIVATION: activation;
     * FL_STAGE_EMBEDDING: kernel (vocab, out_size), vocab <= 2^24 (ids
     * arrive as floats), mask_zero */
    const float *kernel;
    const float *bias;
    fl_activation activation;
    /* FL_STAGE_AFFINE and FL_STAGE_LAYER_NORM: (out_size) each */
    const float *scale;
    const float *shift;
    int vocab;
    int mask_zero;
    /* FL_STAGE_LAYER_NORM */
    float epsilon;
    int rms_scaling;
} fl_stage;

/* Bytes of workspace fl_chain_step needs for this batch: two buffers for
 * the widest stage and a copy of every recurrent state (restored when a
 * step fails, so a failed step leaves the state as it was). */
fl_status fl_chain_workspace_size(const fl_stage *stages, int n_stages, int batch,
                                  size_t *out_bytes);

/* Runs one step: x (batch, stages[0].in_size) -> out (batch, last out_size).
 * On an error from stage k (*failed_stage = k, else -1), every recurrent
 * state is as before the step. `work` holds fl_chain_workspace_size
 * bytes (any alignment). */
fl_status fl_chain_step(const fl_stage *stages, int n_stages, const fl_blas *blas,
                        int batch, const float *x, float *out, void *work,
                        size_t work_bytes, int *failed_stage);

/* Starts threads - 1 sleeping workers (2 <= threads <= 8); the caller's
 * own thread is the first of `threads`. FL_ERR_NOMEM if a thread cannot be
 * started. */
fl_status fl_pool_create(int threads, fl_pool **out);
/* Stops and joins the workers. No call may be using the pool. */
void fl_pool_free(fl_pool *pool);

/* 1 if this CPU and OS run the input projection on AMX tiles (AMX-BF16,
 * e.g. Sapphire Rapids; asks Linux for the tile state), else 0. There,
 * every operand is split into three bfloat16 parts and six of their
 * products are summed in float32: float32 accuracy at 1.5-1.9x the rate of
 * float32 FMAs. Products of fewer than 128 rows, and inputs with NaN, inf
 * or |x| >= 2^100, use BLAS. */
int fl_amx_available(void);

/* 1 if batch-1 runs on one thread can weave each chunk's input projection
 * into the previous chunk's recurrent products (GCC build, AVX-512 CPU),
 * else 0. Used for runs of 32+ steps whose input size is at most twice the
 * recurrent width, unless fl_run.no_woven is set. */
int fl_woven_available(void);

/* A static, human readable description of a status. */
const char *fl_status_message(fl_status status);

/* The core's version, "major.minor.patch" (the Python package's). It is
 * the one symbol the Python extension exports besides its init function,
 * so that tools scanning loaded libraries (threadpoolctl) can tell
 * fastlstm's module from other modules named _core. */
#define FL_VERSION "0.1.0"
#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
const char *fl_version(void);

/* v[k] = act(v[k]) for k < n, with the kernel's own vectorized code
 * (tests measure its error against libm through this). */
fl_status fl_activation_apply(fl_activation act, float *v, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* FASTLSTM_H */
