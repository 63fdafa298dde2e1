/*
 * fl_forward.c - the forward pass: follows the call's plan (fl_plan.c).
 *
 * Row-major products through column-major BLAS: a row-major (r, c) matrix
 * is a column-major (c, r) one, so Y(rows, n) = X(rows, k) @ W(k, n) is
 * computed as Y^T = W^T X^T, i.e. sgemm("N", "N", n, rows, k, W, n, X, k,
 * Y, n) with the operands swapped.
 */
#include <string.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "fl_amx.h"
#include "fl_batch.h"
#include "fl_gates.h"
#include "fl_kernels.h"
#include "fl_layer_plan.h"
#include "fl_woven.h"
#include "fl_parallel.h"
#include "fl_plan.h"
#include "fl_run.h"

/* Outputs of at least this many bytes are written with non-temporal
 * stores on the batch-tile path: they bypass the caches, which saves
 * reading every output line in before writing it. Smaller outputs stay
 * cached for the caller. */
#define FL_STREAM_OUT_MIN_BYTES (4u << 20)

/* One call in progress: the layer, the run, its plan and its buffers. */
typedef struct pass {
    const fl_lstm *L;
    const fl_blas *blas;
    const fl_run *run;
    const fl_plan *plan;
    char *base; /* the aligned workspace */
    fl_weights w;
    fl_gate_params gp;
    uint8_t *seen;
    int masked, carry;
} pass;

/* ---- products ------------------------------------------------------------ */

/* Z(rows, 4H) (+)= A(rows, K) @ W for W = L->wx or L->wh (K of its rows),
 * on fl_gemm (one call per panel in the panel layout). */
static void gemm_weights(const fl_lstm *L, const float *A, int rows, int K, int lda,
                         const float *W, int ldw, float *Z, int ldz, int accumulate) {
    fl_gemm_cols(A, rows, K, lda, W, ldw, L->ps, 0, 4 * L->desc.units, Z, ldz,
                 accumulate);
}

/* The same on BLAS: Z = A @ W (beta 0) or Z += A @ W (beta 1), A's rows K
 * floats apart. */
static void sgemm_weights(const fl_lstm *L, const fl_blas *blas, const float *A,
                          int rows, int K, const float *W, int ldw, float *Z, int ldz,
                          float beta) {
    const int n4h = 4 * L->desc.units;
    float one = 1.0f;
    char N = 'N';
    for (int j = 0; j < n4h; j = fl_wrun_end(L->ps, j, n4h)) {
        int w = fl_wrun_end(L->ps, j, n4h) - j;
        blas->sgemm(&N, &N, &w, &rows, &K, &one, (float *)fl_wcol(W, L->ps, j), &ldw,
                    (float *)A, &K, &beta, Z + j, &ldz);
    }
}

/* z[0:n] (+)= v[0:rows] @ W, W's rows ld floats apart, row-major (ps = 0)
 * or in panels ps floats apart. */
static void matvec_any(const float *W, int rows, int n, int ld, size_t ps,
                       const float *v, float *z, int accumulate, int backward) {
    if (ps)
        fl_matvec_panels(W, rows, n, ps, v, z, accumulate, backward);
    else
        fl_matvec(W, rows, n, ld, v, z, accumulate, backward);
}

/* G(rows, 4H) = X(rows, I) @ Wx; on AMX tiles when the plan laid out
 * their scratch (amx, else NULL) and the product is large enough. */
static void input_projection(const fl_lstm *L, const fl_blas *blas, const float *x,
                             int rows, float *G, void *amx) {
    const int n4h = 4 * L->desc.units, k = L->desc.input_size;
    if (amx && rows >= FL_AMX_MIN_ROWS &&
        fl_amx_gemm(x, rows, k, (size_t)k, L->wx, n4h, (size_t)L->ldx, G, (size_t)n4h,
                    amx))
        return; /* else (a value out of AMX's range) BLAS redoes all of G */
    if (fl_plan_product(rows) == FL_PRODUCT_MATVEC) {
        for (int r = 0; r < rows; r++)
            matvec_any(L->wx, k, n4h, L->ldx, L->ps, x + (size_t)r * k,
                       G + (size_t)r * n4h, 0, 0);
        return;
    }
    sgemm_weights(L, blas, x, rows, k, L->wx, L->ldx, G, n4h, 0.0f);
}

/* G rows (B of them, ldg floats apart) += h(B, R) @ Wh; a matrix-vector
 * product from the pass's view of Wh when B == 1 (its column blocks walked
 * backward if asked). */
static void recurrent_product(const pass *ps, const float *h, int batch, float *G,
                              int ldg, int backward) {
    const fl_lstm *L = ps->L;
    const int n4h = 4 * L->desc.units, r = L->R;
    if (batch == 1)
        matvec_any(ps->w.wh, r, n4h, ps->w.ldh, ps->w.ps, h, G, 1, backward);
    else if (fl_plan_product(batch) != FL_PRODUCT_BLAS)
        gemm_weights(L, h, batch, r, r, L->wh, L->ldh, G, ldg, 1);
    else
        sgemm_weights(L, ps->blas, h, batch, r, L->wh, L->ldh, G, ldg, 1.0f);
}

/* dst[0:n] = src[0:n] with non-temporal stores where dst allows it
 * (16-byte aligned, n a multiple of 4). */
static void copy_row_streaming(float *dst, const float *src, int n) {
#if defined(__SSE2__)
    if (((uintptr_t)dst & 15) == 0 && n % 4 == 0) {
        for (int j = 0; j < n; j += 4) _mm_stream_ps(dst + j, _mm_loadu_ps(src + j));
        return;
    }
#endif
    memcpy(dst, src, (size_t)n * sizeof(float));
}

/* ---- FL_PATH_TILES ------------------------------------------------------------ */

/* Carries skipped rows' state, marks rows seen and writes the step's
 * outputs from next (the step's new h). */
static void tiles_outputs(const pass *ps, int s, const float *cur, float *next,
                          const uint8_t *skip, int streaming) {
    const fl_run *run = ps->run;
    const int H = ps->L->desc.units;
    for (int b = 0; b < run->batch; b++) {
        const int status = ps->masked ? skip[b] : FL_STEP_VALID;
        if (status == FL_STEP_VALID)
            ps->seen[b] = 1;
        else /* the state is carried over a skipped step */
            memcpy(next + (size_t)b * H, cur + (size_t)b * H,
                   (size_t)H * sizeof(float));
        float *dst = run->y ? run->y + fl_tb_index(run, s, b) * (size_t)H : NULL;
        if (dst && streaming && status == FL_STEP_VALID)
            copy_row_streaming(dst, next + (size_t)b * H, H);
        else if (dst)
            fl_run_write_output(next, H, status, ps->carry, ps->seen, b, dst);
    }
}

/* Every step on batch tiles: per step one fused pass (input product,
 * recurrent product, gates) per slab of 16 units; h alternates between
 * run->h and the workspace's hnext. */
static void forward_tiles(const pass *ps) {
    const fl_lstm *L = ps->L;
    const fl_run *run = ps->run;
    const int B = run->batch, T = run->steps, I = L->desc.input_size;
    const int H = L->desc.units;
    float *slabs = (float *)(ps->base + ps->plan->slabs);
    float *z = (float *)(ps->base + ps->plan->z);
    uint8_t *skip = ps->masked ? (uint8_t *)(ps->base + ps->plan->skip) : NULL;
    fl_batch_pack(L->wx, L->ldx, L->wh, L->ldh, L->ps, L->bias, I, H, slabs);
    /* a batch-major run's rows of one step lie T*I floats apart, often a
     * multiple of 4 KB that maps them to the same cache sets: they are
     * gathered into xrows */
    const size_t t_stride = run->batch_major ? (size_t)I : (size_t)B * I;
    float *xrows = (float *)(ps->base + ps->plan->xrows);
    float *cur = run->h, *next = (float *)(ps->base + ps->plan->hnext);
    const int streaming = (size_t)B * T * H * sizeof(float) >= FL_STREAM_OUT_MIN_BYTES;
    for (int s = 0; s < T; s++) {
        const int t = run->reverse ? T - 1 - s : s;
        if (ps->masked) /* fl_batch_step leaves rows with a nonzero status */
            for (int b = 0; b < B; b++) skip[b] = (uint8_t)fl_step_status(run, t, b);
        const float *xt = run->x + (size_t)t * t_stride;
        if (run->batch_major) {
            for (int b = 0; b < B; b++)
                memcpy(xrows + (size_t)b * I, xt + (size_t)b * T * I,
                       (size_t)I * sizeof(float));
            xt = xrows;
        }
        fl_batch_step(slabs, I, H, xt, (size_t)I, cur, B, run->c, next, skip, z);
        tiles_outputs(ps, s, cur, next, skip, streaming);
        float *tmp = cur;
        cur = next;
        next = tmp;
    }
#if defined(__SSE2__)
    if (streaming) _mm_sfence(); /* order the streamed outputs before return */
#endif
    if (cur != run->h) memcpy(run->h, cur, (size_t)B * H * sizeof(float));
}

/* ---- FL_PATH_THREADS ------------------------------------------------------------ */

/* Returns 1 when the threads ran the call; 0 when they could not start
 * (the call then runs on the chunked path). */
static int forward_threads(const pass *ps) {
    const fl_lstm *L = ps->L;
    const fl_run *run = ps->run;
    const fl_plan *plan = ps->plan;
    float *wcopy = plan->thread_copies ? (float *)(ps->base + plan->wcopy) : NULL;
    fl_parallel_job job = {
        .w = &ps->w,
        .gp = &ps->gp,
        .run = run,
        .G = (float *)(ps->base + plan->gates),
        .chunk = plan->chunk,
        .woven = plan->threads_woven,
        .threads = plan->threads,
        .ws = (float *)(ps->base + plan->par),
        .wcopy = wcopy,
        .make_copies = run->keep_copies != 2,
        .input_size = L->desc.input_size,
        .carry = ps->carry,
    };
    if (fl_parallel_run(&job, ps->seen)) return 1;
    /* a caller that keeps the workspace (keep_copies 1) must still find the
     * copies there on its next call */
    if (wcopy && run->keep_copies == 1)
        fl_parallel_fill_copies(L->wh, L->ldh, L->ps, L->desc.units, plan->threads,
                                wcopy);
    return 0;
}

/* ---- FL_PATH_CHUNKED, _STEPWISE and _WOVEN: one chunk loop ------------------------
 */

/* Where a chunk's pre-activations lie: row (s, b) at G + (s * g_t + b * g_b)
 * * 4H; and, woven, the next chunk's projection being made meanwhile. */
typedef struct chunk_view {
    float *G;
    size_t g_t, g_b;
    int fused;           /* one step of one row: [x; h] @ [Wx; Wh] done */
    fl_woven_gemm *side; /* woven: the next chunk's projection, or NULL */
} chunk_view;

/* The woven path's projections: this chunk's (unless the previous chunk's
 * products made it) and the description of the next one's. */
static void project_woven(const pass *ps, int ci, int n_chunks, int t0, int n,
                          chunk_view *cv, fl_woven_gemm *side, int *next_ready) {
    const fl_lstm *L = ps->L;
    const fl_run *run = ps->run;
    const int chunk = ps->plan->chunk, I = L->desc.input_size;
    const size_t row4 = 4 * (size_t)L->desc.units;
    float *G = (float *)(ps->base + ps->plan->gates);
    cv->g_t = cv->g_b = 1; /* batch 1: both layouts agree */
    if (!*next_ready)
        input_projection(L, ps->blas, run->x + (size_t)t0 * I, n, cv->G, NULL);
    const int nt0 = run->reverse ? t0 - chunk : t0 + chunk;
    const int on = ci + 1 < n_chunks && nt0 + chunk <= run->steps;
    cv->side = NULL;
    if (on) {
        float *xt = (float *)(ps->base + ps->plan->xt);
        fl_woven_x_fill(run->x + (size_t)nt0 * I, chunk, I, I, xt);
        *side =
            (fl_woven_gemm){.xt = xt,
                            .rows = chunk,
                            .k = I,
                            .w = L->wx,
                            .ps = L->ps,
                            .n = (int)row4,
                            .ldw = L->ldx,
                            .out = G + (size_t)((ci + 1) & 1) * (size_t)chunk * row4,
                            .ldo = (int)row4,
                            .prefetch = (size_t)L->R * row4 * sizeof(float) >
                                        FL_WOVEN_PREFETCH_MIN_BYTES};
        cv->side = side;
    }
    *next_ready = on;
}

/* The input projection of steps t0 .. t0+n-1 (not woven). */
static void project_chunk(const pass *ps, int t0, int n, chunk_view *cv) {
    const fl_lstm *L = ps->L;
    const fl_run *run = ps->run;
    const int B = run->batch, T = run->steps, I = L->desc.input_size;
    const size_t row4 = 4 * (size_t)L->desc.units;
    void *amx = ps->plan->amx ? ps->base + ps->plan->amx_scratch : NULL;
    if (!run->batch_major) {
        cv->g_t = (size_t)B, cv->g_b = 1;
        input_projection(L, ps->blas, run->x + (size_t)t0 * B * I, n * B, cv->G, amx);
    } else if (B > 1 && fl_plan_product(B) != FL_PRODUCT_BLAS && n < 64 &&
               (size_t)T * I <= (size_t)INT32_MAX) {
        /* batch-major batches in short chunks: one product per step over its
         * B rows (T*I floats apart) into a time-major gate buffer, faster
         * than BLAS on short per-row pieces */
        cv->g_t = (size_t)B, cv->g_b = 1;
        for (int s = 0; s < n; s++)
            gemm_weights(L, run->x + (size_t)(t0 + s) * I, B, I, T * I, L->wx, L->ldx,
                         cv->G + (size_t)s * B * row4, (int)row4, 0);
    } else if (n == T) {
        cv->g_t = 1, cv->g_b = (size_t)T;
        input_projection(L, ps->blas, run->x, T * B, cv->G, amx);
    } else { /* a row's chunk steps are contiguous, rows are not */
        cv->g_t = 1, cv->g_b = (size_t)n;
        for (int b = 0; b < B; b++)
            input_projection(L, ps->blas, run->x + ((size_t)b * T + t0) * I, n,
                             cv->G + (size_t)b * n * row4, amx);
    }
}

/* One step of one row (batch 1, a chunk of one step): Wx and Wh rows are
 * stored back to back with one stride, so z = [x; h] @ [Wx; Wh] is a
 * single pass. */
static void project_fused(const pass *ps, int t0, chunk_view *cv) {
    const fl_lstm *L = ps->L;
    const int I = L->desc.input_size;
    float *xh = (float *)(ps->base + ps->plan->xh);
    memcpy(xh, ps->run->x + (size_t)t0 * I, (size_t)I * sizeof(float));
    memcpy(xh + I, ps->run->h, (size_t)L->R * sizeof(float));
    matvec_any(L->wx, I + L->R, 4 * L->desc.units, L->ldx, L->ps, xh, cv->G, 0,
               (t0 + ps->run->sweep) & 1);
    cv->g_t = cv->g_b = 1;
    cv->fused = 1;
}

/* h(B, P) = clip(m(B, H) @ proj) for the rows whose step is valid. */
static void step_projection(const pass *ps, int t) {
    const fl_lstm *L = ps->L;
    const fl_run *run = ps->run;
    const int B = run->batch;
    int p = L->desc.proj_size, k = L->desc.units, n = B;
    float *m = (float *)(ps->base + ps->plan->m);
    float *hnew = (float *)(ps->base + ps->plan->hnew);
    float one = 1.0f, zero = 0.0f, clip = L->desc.proj_clip;
    char N = 'N';
    ps->blas->sgemm(&N, &N, &p, &n, &k, &one, L->proj, &p, m, &k, &zero, hnew, &p);
    for (int b = 0; b < B; b++) {
        if (ps->masked && fl_step_status(run, t, b) != FL_STEP_VALID) continue;
        const float *src = hnew + (size_t)b * p;
        float *dst = run->h + (size_t)b * p;
        for (int j = 0; j < p; j++) {
            float v = src[j];
            if (L->desc.use_proj_clip) {
                v = v < -clip ? -clip : v;
                v = v > clip ? clip : v;
            }
            dst[j] = v;
        }
    }
}

/* The gates of every row of step t from its pre-activations Gt; without
 * projection m is h itself, with projection m goes to scratch first. */
static void step_gates(const pass *ps, int t, float *Gt, size_t g_b, int scratch) {
    const fl_run *run = ps->run;
    const size_t H = (size_t)ps->L->desc.units, row4 = 4 * H;
    const int P = ps->L->desc.proj_size, R = ps->L->R;
    float *m = P ? (float *)(ps->base + ps->plan->m) : NULL;
    float *rec = (float *)(ps->base + ps->plan->rec);
    for (int b = 0; b < run->batch; b++) {
        float *mb = P ? m + (size_t)b * H : run->h + (size_t)b * R;
        if (ps->masked && fl_step_status(run, t, b) != FL_STEP_VALID) {
            if (P) memset(mb, 0, H * sizeof(float));
            continue;
        }
        float *zb = Gt + (size_t)b * g_b * row4;
        if (scratch) {
            float *rb = rec + (size_t)b * row4;
            for (size_t j = 0; j < row4; j++) rb[j] += zb[j];
            zb = rb;
        }
        fl_gates_row(&ps->gp, zb, run->c + (size_t)b * H, mb);
    }
}

/* Steps t0 .. t0+n-1 of a chunk whose projections cv describes. */
static void run_chunk_steps(const pass *ps, int t0, int n, const chunk_view *cv) {
    const fl_lstm *L = ps->L;
    const fl_run *run = ps->run;
    const int B = run->batch, T = run->steps, R = L->R;
    const size_t row4 = 4 * (size_t)L->desc.units;
    float *rec = (float *)(ps->base + ps->plan->rec);
    /* gate rows of batch-major batches lie T*4H floats apart: the recurrent
     * product goes to a contiguous scratch instead (a large power-of-two
     * stride would alias in the caches), the input part added per row */
    const int scratch = B > 1 && cv->g_b > 1;
    for (int s = 0; s < n; s++) {
        const int t = run->reverse ? t0 + n - 1 - s : t0 + s;
        const int k = run->reverse ? T - 1 - t : t; /* output index */
        float *Gt = cv->G + (size_t)(t - t0) * cv->g_t * row4;
        const int backward = (k + run->sweep) & 1;
        if (scratch)
            gemm_weights(L, run->h, B, R, R, L->wh, L->ldh, rec, (int)row4, 0);
        else if (ps->plan->path == FL_PATH_WOVEN && !cv->fused)
            fl_matvec_woven(ps->w.wh, R, (int)row4, ps->w.ldh, ps->w.ps, run->h, Gt,
                            backward, cv->side, s, n);
        else if (!cv->fused)
            recurrent_product(ps, run->h, B, Gt, (int)(cv->g_b * row4), backward);
        step_gates(ps, t, Gt, cv->g_b, scratch);
        if (L->desc.proj_size) step_projection(ps, t);
        fl_run_step_outputs(run, t, k, R, ps->masked, ps->carry, ps->seen);
    }
}

/* All chunks, in processing order (and the steps within them). */
static void forward_chunks(const pass *ps) {
    const fl_run *run = ps->run;
    const int T = run->steps, chunk = ps->plan->chunk;
    const int woven = ps->plan->path == FL_PATH_WOVEN;
    const size_t row4 = 4 * (size_t)ps->L->desc.units;
    const int n_chunks = (T + chunk - 1) / chunk;
    float *G = (float *)(ps->base + ps->plan->gates);
    fl_woven_gemm side = {0};
    int next_ready = 0;
    for (int ci = 0; ci < n_chunks; ci++) {
        const int cidx = run->reverse ? n_chunks - 1 - ci : ci;
        const int t0 = cidx * chunk;
        const int n = (t0 + chunk <= T) ? chunk : T - t0;
        /* woven: chunks alternate between the halves of G */
        chunk_view cv = {.G = woven ? G + (size_t)(ci & 1) * (size_t)chunk * row4 : G};
        if (run->batch == 1 && n == 1) {
            project_fused(ps, t0, &cv);
            next_ready = 0;
        } else if (woven) {
            project_woven(ps, ci, n_chunks, t0, n, &cv, &side, &next_ready);
        } else {
            project_chunk(ps, t0, n, &cv);
        }
        run_chunk_steps(ps, t0, n, &cv);
    }
}

/* ---- the entry point ---------------------------------------------------------- */

/* A pass over the plan's buffers; the call's copy of Wh made if planned. */
static pass start_pass(const fl_lstm *L, const fl_blas *blas, const fl_run *run,
                       const fl_plan *plan, void *work) {
    pass ps = {.L = L, .blas = blas, .run = run, .plan = plan};
    ps.base = (char *)(((uintptr_t)work + (FL_ALIGN - 1)) & ~(uintptr_t)(FL_ALIGN - 1));
    ps.w = fl_weights_of(L);
    if (plan->wh_copy) {
        float *whc = (float *)(ps.base + plan->whc);
        fl_panels_pack(L->wh, L->R, 4 * L->desc.units, L->ldh, whc);
        ps.w.wh = whc;
        ps.w.ldh = FL_PANEL_COLS;
        ps.w.ps = (size_t)L->R * FL_PANEL_COLS;
    }
    ps.gp = (fl_gate_params){
        .units = L->desc.units,
        .act = L->desc.activation,
        .ract = L->desc.recurrent_activation,
        .bias = L->bias,
        .peep = L->peep,
        .use_cell_clip = L->desc.use_cell_clip,
        .cell_clip = L->desc.cell_clip,
    };
    ps.masked = run->mask != NULL || run->lengths != NULL;
    ps.carry = run->mask_output == FL_MASK_CARRY;
    ps.seen = run->seen;
    if (!ps.seen) {
        ps.seen = (uint8_t *)(ps.base + plan->seen);
        memset(ps.seen, 0, (size_t)run->batch);
    }
    return ps;
}

static fl_status forward(const fl_lstm *L, const fl_blas *blas, const fl_run *run,
                         void *work, size_t work_bytes) {
    if (!L) return FL_ERR_ARG;
    fl_status st = fl_run_check(blas, run, 1);
    if (st != FL_OK) return st;
    fl_plan plan;
    st = fl_plan_make(L, run, work ? work_bytes : 0, &plan);
    if (st != FL_OK) return st;
    if (run->check_finite && !fl_run_x_finite(run, (size_t)L->desc.input_size))
        return FL_ERR_NONFINITE;
    const pass ps = start_pass(L, blas, run, &plan, work);
    switch (plan.path) {
    case FL_PATH_TILES:
        forward_tiles(&ps);
        break;
    case FL_PATH_THREADS:
        if (forward_threads(&ps)) break;
        forward_chunks(&ps); /* the threads could not start */
        break;
    case FL_PATH_WOVEN:
    case FL_PATH_STEPWISE:
    case FL_PATH_CHUNKED:
        forward_chunks(&ps);
        break;
    }
    if (run->y_last) fl_run_write_last(run, L->R, ps.masked, ps.carry, ps.seen);
    return FL_OK;
}

/* Denormals are flushed to zero inside (fl_ftz_enter). */
fl_status fl_lstm_forward(const fl_lstm *L, const fl_blas *blas, const fl_run *run,
                          void *work, size_t work_bytes) {
    const unsigned int saved = fl_ftz_enter();
    fl_status st = forward(L, blas, run, work, work_bytes);
    fl_ftz_leave(saved);
    return st;
}

fl_status fl_lstm_plan(const fl_lstm *L, const fl_run *run, size_t work_bytes,
                       fl_plan_info *out) {
    if (!L || !run || !out) return FL_ERR_ARG;
    fl_plan plan;
    fl_status st = fl_plan_make(L, run, work_bytes, &plan);
    if (st != FL_OK) return st;
    *out = (fl_plan_info){
        .path = plan.path,
        .chunk_steps = plan.chunk,
        .amx = plan.amx,
        .wh_copy = plan.wh_copy,
        .thread_copies = plan.thread_copies,
        .threads_woven = plan.threads_woven,
        .workspace_bytes = plan.total,
    };
    return FL_OK;
}
