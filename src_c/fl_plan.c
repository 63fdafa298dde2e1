/*
 * fl_plan.c - how a forward call runs: its path, chunking, copies and
 * workspace layout, decided here and nowhere else.
 */
#include <string.h>

#include "fl_amx.h"
#include "fl_batch.h"
#include "fl_kernels.h"
#include "fl_woven.h"
#include "fl_parallel.h"
#include "fl_layer_plan.h"
#include "fl_plan.h"

/* Batches run on batch tiles (fl_batch_step, weights re-laid per call)
 * when the layer has the standard gates and the call has enough rows x
 * steps to repay that copy of the weights. */
#define FL_TILES_MIN_ROW_STEPS 64

/* Batch-1 calls of at least FL_WH_COPY_MIN_STEPS steps (in chunks of 2 or
 * more) on one thread read a copy of Wh in panels made per call, for Wh
 * between these sizes: smaller Wh stays in L2 either way, and streaming a
 * larger one from memory gains nothing from the layout. The copy is made
 * only while it and a minimal gate buffer take at most 45% of the call's
 * own data, which keeps the call's peak memory under 1.5x of that. */
#define FL_WH_COPY_MIN_STEPS 128
#define FL_WH_COPY_MIN_BYTES ((size_t)512 << 10)
#define FL_WH_COPY_MAX_BYTES ((size_t)16 << 20)

/* Batch-1 layers whose [Wx; Wh] fits this size run every step as one
 * fused matrix-vector product (the weights stay in the nearest caches). */
#define FL_FUSED_MAX_BYTES (160 * 1024)

/* FL_CHUNK_AUTO: the input projection of all steps is one GEMM when its
 * gate buffer (4H floats per row and step) fits 40% of the call's own
 * weights, inputs and outputs, less the weight copies the call makes,
 * within [FL_GATE_BUFFER_MIN, FL_GATE_BUFFER_MAX]; otherwise it runs in
 * chunks of whole steps. That keeps a call's peak memory near 1.4x its
 * data. */
#define FL_GATE_BUFFER_MIN ((size_t)256 << 10)
#define FL_GATE_BUFFER_MAX ((size_t)64 << 20)

/* Products of up to FL_SMALL_ROWS rows run on fl_matvec row by row, up to
 * FL_OWN_GEMM_MAX_ROWS on fl_gemm, larger ones on BLAS. */
#define FL_SMALL_ROWS 4
#define FL_OWN_GEMM_MAX_ROWS 256

/* ---- the rules ---------------------------------------------------------- */

static int tiles_used(const fl_lstm *L, int batch, int steps) {
    const fl_lstm_desc *d = &L->desc;
    return batch >= 2 && (size_t)batch * (size_t)steps >= FL_TILES_MIN_ROW_STEPS &&
           d->proj_size == 0 && !L->peep && !d->use_cell_clip &&
           d->recurrent_activation == FL_ACT_SIGMOID && d->activation == FL_ACT_TANH &&
           fl_batch_preferred();
}

/* Whether a batch-1 call splits each step between threads. */
static int threads_used(const fl_lstm *L, int batch, int threads) {
    return threads > 1 && batch == 1 && L->desc.proj_size == 0 && L->desc.units >= 128;
}

/* Bytes of the call's own weights, inputs and outputs (with_y: every
 * step's output, else only the last); sizes are bounded by FL_MAX_DIM. */
static size_t data_bytes(const fl_lstm *L, int batch, int steps, int with_y) {
    const size_t I = (size_t)L->desc.input_size, R = (size_t)L->R;
    const size_t H4 = 4 * (size_t)L->desc.units, B = (size_t)batch;
    const size_t T = (size_t)steps;
    return ((I + R) * H4 + B * T * I + B * R * (with_y ? T : 1)) * sizeof(float);
}

static size_t wh_bytes(const fl_lstm *L) {
    return (size_t)L->R * 4 * (size_t)L->desc.units * sizeof(float);
}

/* Whether the call's Wh copy in panels would pay, chunking aside. */
static int wh_copy_wanted(const fl_lstm *L, int batch, int steps, int threads,
                          int with_y) {
    if (batch != 1 || steps < FL_WH_COPY_MIN_STEPS || L->ps ||
        threads_used(L, batch, threads))
        return 0;
    const size_t wh = wh_bytes(L);
    return wh >= FL_WH_COPY_MIN_BYTES && wh <= FL_WH_COPY_MAX_BYTES &&
           (wh + FL_GATE_BUFFER_MIN) * 20 <= data_bytes(L, batch, steps, with_y) * 9;
}

static int fused_steps(const fl_lstm *L, int batch) {
    const size_t I = (size_t)L->desc.input_size, R = (size_t)L->R;
    const size_t H4 = 4 * (size_t)L->desc.units; /* floats per row, stored: */
    const size_t row = L->ps ? (H4 + FL_PANEL_COLS - 1) / FL_PANEL_COLS * FL_PANEL_COLS
                             : (size_t)L->ldx;
    return batch == 1 && (I + R) * row * sizeof(float) <= FL_FUSED_MAX_BYTES;
}

static int amx_wanted(const fl_lstm *L, int batch, int chunk) {
    return (size_t)chunk * (size_t)batch >= FL_AMX_MIN_ROWS && !L->ps &&
           L->desc.input_size >= 32 && L->desc.units >= 16 && !fused_steps(L, batch) &&
           fl_amx_available();
}

/* Batch-1 calls of two chunks or more on one thread weave each chunk's
 * input projection into the previous chunk's recurrent products, while
 * the rows of those products can carry it (I <= 2R); wider inputs
 * outweigh the recurrent product and BLAS does them better. */
static int woven_wanted(const fl_lstm *L, int batch, int steps, int threads) {
    return batch == 1 && steps >= 2 * FL_WOVEN_STEPS &&
           L->desc.input_size <= 2 * L->R && !threads_used(L, batch, threads) &&
           fl_woven_available();
}

/* Steps per chunk whose gate buffer (per_step bytes a step) fits
 * `share` bytes less `copies`, within [FL_GATE_BUFFER_MIN,
 * FL_GATE_BUFFER_MAX]; at least `least`. */
static int chunk_within(size_t share, size_t copies, size_t per_step, int steps,
                        size_t least) {
    size_t budget = share > copies ? share - copies : 0;
    budget = budget < FL_GATE_BUFFER_MIN ? FL_GATE_BUFFER_MIN : budget;
    budget = budget > FL_GATE_BUFFER_MAX ? FL_GATE_BUFFER_MAX : budget;
    if (per_step * (size_t)steps <= budget) return steps;
    const size_t fit = budget / per_step;
    return (int)(fit > least ? fit : least);
}

/* Steps per input projection for FL_CHUNK_AUTO (see FL_GATE_BUFFER_MIN). */
static int auto_chunk(const fl_lstm *L, int batch, int steps, int threads, int with_y) {
    const size_t data = data_bytes(L, batch, steps, with_y);
    size_t copies = 0;
    if (threads_used(L, batch, threads))
        copies = wh_bytes(L);
    else if (wh_copy_wanted(L, batch, steps, threads, with_y))
        copies = fl_panels_floats(L->R, 4 * L->desc.units) * sizeof(float);
    const size_t per_step = (size_t)batch * 4 * (size_t)L->desc.units * sizeof(float);
    return chunk_within(data / 5 * 2, copies, per_step, steps,
                        copies ? FL_PAR_COPY_MIN_STEPS : 1);
}

/* ---- the workspace ---------------------------------------------------------- */

static size_t byte_floats(size_t n) {
    return (n + sizeof(float) - 1) / sizeof(float);
}

static fl_status lay_out_tiles(const fl_lstm *L, int batch, fl_plan *p) {
    const size_t B = (size_t)batch, H = (size_t)L->desc.units;
    size_t off = 0;
    /* the slabs come first: z after them keeps fl_batch_step's prefetch
     * of 8 rows past a slab's end inside the workspace */
    if (!fl_region_add(&off, fl_batch_slab_floats(L->desc.input_size, (int)H),
                       &p->slabs) ||
        !fl_region_add(&off, (size_t)FL_BATCH_GROUP * FL_SLAB_WIDTH, &p->z) ||
        !fl_region_add(&off, B * H, &p->hnext) ||
        !fl_region_add(&off, B * (size_t)L->desc.input_size, &p->xrows) ||
        !fl_region_add(&off, byte_floats(B), &p->skip) ||
        !fl_region_add(&off, byte_floats(B), &p->seen) || off > SIZE_MAX - FL_ALIGN)
        return FL_ERR_OVERFLOW;
    p->path = FL_PATH_TILES;
    p->chunk = 1; /* each step projects its own inputs */
    p->total = off + FL_ALIGN;
    return FL_OK;
}

/* Which extras a layout may include (a smaller workspace drops them). */
typedef struct extras {
    int copies; /* the threads' Wh copies */
    int amx;
    int woven;
} extras;

/* The gate buffer and the buffers every non-tile path needs. */
static int lay_out_gates(const fl_lstm *L, int batch, fl_plan *p, size_t *off) {
    const size_t B = (size_t)batch, H = (size_t)L->desc.units;
    const size_t P = (size_t)L->desc.proj_size, I = (size_t)L->desc.input_size;
    size_t n_gates;
    if (p->path == FL_PATH_WOVEN) { /* two chunks: this one's, the next one's */
        if (!fl_region_add(off, 2 * (size_t)p->chunk * 4 * H, &p->gates) ||
            !fl_region_add(off, I * FL_WOVEN_STEPS, &p->xt))
            return 0;
    } else if (!fl_mul_size((size_t)p->chunk * B, 4 * H, &n_gates) ||
               !fl_region_add(off, n_gates, &p->gates)) {
        return 0;
    }
    if (P &&
        (!fl_region_add(off, B * H, &p->m) || !fl_region_add(off, B * P, &p->hnew)))
        return 0;
    if (!fl_region_add(off, byte_floats(B), &p->seen)) return 0;
    if (B > 1 && !fl_region_add(off, B * 4 * H, &p->rec)) return 0;
    if (B == 1 && !P &&
        !fl_region_add(off, fl_parallel_workspace_floats((int)H), &p->par))
        return 0;
    if (B == 1 && !fl_region_add(off, I + (P ? P : H), &p->xh)) return 0;
    return 1;
}

static fl_status lay_out(const fl_lstm *L, const fl_run *run, int with_y,
                         extras ex, fl_plan *p) {
    const int B = run->batch, T = run->steps;
    memset(p, 0, sizeof *p);
    if (B < 1 || T < 1 || run->chunk_steps < FL_CHUNK_AUTO) return FL_ERR_SHAPE;
    if (B > FL_MAX_DIM || T > FL_MAX_DIM) return FL_ERR_OVERFLOW;
    int chunk = run->chunk_steps == FL_CHUNK_AUTO
                    ? auto_chunk(L, B, T, run->threads, with_y)
                : (run->chunk_steps == 0 || run->chunk_steps > T) ? T
                                                                  : run->chunk_steps;
    /* BLAS sizes are ints: sgemm's n = chunk * batch, and the leading
     * dimension chunk * 4H of a batch-major gate buffer */
    if ((size_t)chunk * (size_t)B > (size_t)INT32_MAX ||
        (size_t)chunk * 4 * (size_t)L->desc.units > (size_t)INT32_MAX)
        return FL_ERR_OVERFLOW;
    p->chunk = chunk;
    if (tiles_used(L, B, T)) return lay_out_tiles(L, B, p);

    const int threads = threads_used(L, B, run->threads);
    p->path = FL_PATH_CHUNKED;
    if (threads && !(T == 1 && !run->pool)) {
        p->path = FL_PATH_THREADS;
        p->threads = run->threads;
    } else if (ex.woven && !run->no_woven && woven_wanted(L, B, T, run->threads)) {
        p->path = FL_PATH_WOVEN;
        p->chunk = FL_WOVEN_STEPS;
    } else if (fused_steps(L, B)) {
        p->path = FL_PATH_STEPWISE;
    }
    size_t off = 0;
    if (!lay_out_gates(L, B, p, &off)) return FL_ERR_OVERFLOW;
    if (p->path == FL_PATH_STEPWISE) p->chunk = 1; /* the gates hold `chunk` */
    if (p->path == FL_PATH_CHUNKED && B == 1 && p->chunk == 1)
        p->path = FL_PATH_STEPWISE; /* chunks of one step run fused too */
    const int keep = ex.copies ? run->keep_copies : -1;
    if (threads && keep >= 0 && (p->chunk >= FL_PAR_COPY_MIN_STEPS || keep)) {
        p->thread_copies = 1;
        if (!fl_region_add(&off,
                           fl_parallel_copy_floats(L->desc.units, run->threads, L->ps),
                           &p->wcopy))
            return FL_ERR_OVERFLOW;
    }
    if (wh_copy_wanted(L, B, T, run->threads, with_y) && p->chunk >= 2) {
        p->wh_copy = 1;
        if (!fl_region_add(&off, fl_panels_floats(L->R, 4 * L->desc.units), &p->whc))
            return FL_ERR_OVERFLOW;
    }
    if (ex.amx && !run->no_amx && p->path != FL_PATH_WOVEN &&
        amx_wanted(L, B, p->chunk)) {
        p->amx = 1;
        const size_t bytes = fl_amx_scratch_bytes(L->desc.input_size, p->chunk * B);
        if (!fl_region_add(&off, bytes / sizeof(float) + 1, &p->amx_scratch))
            return FL_ERR_OVERFLOW;
    }
    if (off > SIZE_MAX - FL_ALIGN) return FL_ERR_OVERFLOW;
    p->total = off + FL_ALIGN; /* slack so any base address can be aligned */
    return FL_OK;
}

/* Whether the threads weave: the woven rule, with room in the gate buffer
 * for two chunks and each thread's inputs. */
static int threads_woven_wanted(const fl_lstm *L, const fl_run *run, int chunk) {
    return !run->no_woven && fl_woven_available() && run->steps >= 2 * FL_WOVEN_STEPS &&
           L->desc.input_size <= 2 * L->R &&
           chunk >=
               fl_parallel_woven_rows(L->desc.units, L->desc.input_size, run->threads);
}

fl_status fl_plan_make(const fl_lstm *L, const fl_run *run, size_t work_bytes,
                       fl_plan *plan) {
    static const extras tries[] = {{1, 1, 1}, {0, 1, 1}, {0, 0, 1}, {0, 0, 0}};
    const int with_y = run->y != NULL;
    fl_status st = FL_ERR_ARG;
    for (size_t i = 0; i < sizeof tries / sizeof *tries; i++) {
        st = lay_out(L, run, with_y, tries[i], plan);
        if (st != FL_OK) return st;
        if (work_bytes >= plan->total) break;
    }
    if (work_bytes < plan->total) return FL_ERR_ARG;
    if (plan->path == FL_PATH_THREADS && threads_woven_wanted(L, run, plan->chunk)) {
        plan->threads_woven = 1;
        plan->chunk = FL_WOVEN_STEPS;
    }
    return FL_OK;
}

fl_status fl_plan_size_any(const fl_lstm *L, int batch, int steps, int chunk_steps,
                           size_t *bytes) {
    fl_run run;
    memset(&run, 0, sizeof run);
    run.batch = batch;
    run.steps = steps;
    run.chunk_steps = chunk_steps;
    run.threads = 1;
    fl_plan woven, plain;
    fl_status st = lay_out(L, &run, 1, (extras){0, 1, 1}, &woven);
    if (st == FL_OK) st = lay_out(L, &run, 1, (extras){0, 1, 0}, &plain);
    if (st == FL_OK) *bytes = woven.total > plain.total ? woven.total : plain.total;
    return st;
}

/* ---- GRU and simple RNN layers ------------------------------------------------ */

/* A GRU or simple RNN call splits each step's units between its threads
 * in parts of at least this many units (fewer would not repay the
 * barrier each step waits at). */
#define FL_LAYER_MIN_PART_UNITS 32

static int layer_parts(const fl_layer *layer, const fl_run *run) {
    int parts = run->threads < FL_MAX_THREADS ? run->threads : FL_MAX_THREADS;
    if (parts > layer->desc.units / FL_LAYER_MIN_PART_UNITS)
        parts = layer->desc.units / FL_LAYER_MIN_PART_UNITS;
    return parts > 1 ? parts : 1;
}

fl_product fl_plan_product(int rows) {
    return rows <= FL_SMALL_ROWS          ? FL_PRODUCT_MATVEC
           : rows <= FL_OWN_GEMM_MAX_ROWS ? FL_PRODUCT_GEMM
                                          : FL_PRODUCT_BLAS;
}

fl_status fl_layer_plan_make(const fl_layer *layer, const fl_run *run,
                             fl_layer_plan *plan) {
    const int B = run->batch, T = run->steps;
    memset(plan, 0, sizeof *plan);
    if (B < 1 || T < 1 || run->chunk_steps < FL_CHUNK_AUTO) return FL_ERR_SHAPE;
    if (B > FL_MAX_DIM || T > FL_MAX_DIM) return FL_ERR_OVERFLOW;
    const size_t I = (size_t)layer->desc.input_size, H = (size_t)layer->desc.units;
    const size_t GH = (size_t)layer->G * H, Bs = (size_t)B, Ts = (size_t)T;
    int chunk = run->chunk_steps == 0 || run->chunk_steps > T ? T : run->chunk_steps;
    if (run->chunk_steps == FL_CHUNK_AUTO) {
        const size_t data = ((I + H) * GH + Bs * Ts * I +
                             Bs * H * (run->y ? Ts : 1)) * sizeof(float);
        chunk = chunk_within(data / 5 * 2, 0, Bs * GH * sizeof(float), T, 1);
    }
    /* BLAS sizes are ints: n = chunk * batch rows, leading dimension GH */
    if ((size_t)chunk * Bs > (size_t)INT32_MAX || (size_t)chunk * GH > INT32_MAX)
        return FL_ERR_OVERFLOW;
    plan->chunk = chunk;
    plan->parts = layer_parts(layer, run);
    const size_t others = (size_t)plan->parts - 1;
    size_t off = 0, n_gates;
    const int rh = layer->desc.kind == FL_LAYER_GRU && !layer->desc.reset_after;
    if (!fl_mul_size((size_t)chunk * Bs, GH, &n_gates) ||
        !fl_region_add(&off, n_gates, &plan->gates) ||
        !fl_region_add(&off, Bs * GH, &plan->rec) ||
        (rh && !fl_region_add(&off, Bs * H, &plan->rh)) ||
        !fl_region_add(&off, byte_floats(Bs), &plan->seen) ||
        (others && (!fl_region_add(&off, Bs * H, &plan->h2) ||
                    !fl_region_add(&off, byte_floats(others * Bs), &plan->seens))) ||
        off > SIZE_MAX - FL_ALIGN)
        return FL_ERR_OVERFLOW;
    plan->total = off + FL_ALIGN;
    return FL_OK;
}
