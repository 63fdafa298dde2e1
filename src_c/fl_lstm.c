/*
 * fl_lstm.c - create (canonical -> packed), forward pass, free.
 *
 * Row-major products through column-major BLAS: a row-major (r, c) matrix
 * is a column-major (c, r) one, so Y(rows, n) = X(rows, k) @ W(k, n) is
 * computed as Y^T = W^T X^T, i.e. sgemm("N", "N", n, rows, k, W, n, X, k,
 * Y, n) with the operands swapped.
 */
#define _DEFAULT_SOURCE /* madvise and MADV_HUGEPAGE under -std=c11 */
#include <math.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "fl_amx.h"
#include "fl_batch.h"
#include "fl_gates.h"
#include "fl_internal.h"
#include "fl_kernels.h"
#include "fl_overlap.h"
#include "fl_parallel.h"

struct fl_lstm {
    fl_lstm_desc desc; /* weight_layout: the one chosen */
    int R;       /* width of h: P with a projection, else H */
    float *wx;   /* (I, 4H) packed gate order [i f o g], rows ldx apart */
    int ldx;
    float *wh;   /* (R, 4H) packed, rows ldh floats apart */
    int ldh;     /* row-major: 4H, padded off powers of two (see
                    pad_stride); in panels FL_PANEL_COLS */
    size_t ps;   /* 0: row-major, Wh's rows right after Wx's. Else [Wx; Wh]
                    in the panel layout (fl_internal.h), panels ps = (I + R)
                    * FL_PANEL_COLS floats apart: panel p holds Wx's rows,
                    then Wh's (wh = wx + I * FL_PANEL_COLS) */
    float *bias; /* (4H) packed, zeros when the source had none */
    float *peep; /* (3H) [i f o], or NULL */
    float *proj; /* (H, P), or NULL */
    void *block; /* the one allocation holding all of the above */
};

/* Canonical block order is i, f, g, o; packed block k takes canonical block
 * kCanonicalOf[k] so that the packed order is i, f, o, g. */
static const int kCanonicalOf[4] = {0, 1, 3, 2};

static int valid_activation(fl_activation a) {
    return (int)a >= 0 && (int)a < FL_ACT_COUNT;
}

/* Whether v[0:n] has no NaN or inf: a float is finite unless its exponent
 * bits are all ones. Branch-free over blocks so the loop vectorizes (the
 * per-element isfinite with an early exit cost ~1 ms per call on a 3 MB
 * batch input, 3% of that call). */
FL_CLONES
static int all_finite(const float *v, size_t n) {
    for (size_t k0 = 0; k0 < n; k0 += 1024) {
        const size_t k1 = n - k0 < 1024 ? n : k0 + 1024;
        uint32_t bad = 0;
        for (size_t k = k0; k < k1; k++) {
            uint32_t u;
            memcpy(&u, v + k, sizeof u);
            bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
        if (bad) return 0;
    }
    return 1;
}

/* Row stride for a packed (rows, n) matrix: n rounded up to whole 64-byte
 * lines, then to an odd number of lines. Kernels read a block of columns
 * down all rows; with an even (worse, power-of-two) stride the rows of a
 * block crowd into a few cache sets and evict each other. */
static size_t pad_stride(size_t n) {
    size_t ld = (n + 15) & ~(size_t)15;
    return ((ld / 16) % 2 == 0) ? ld + 16 : ld;
}

/* dst (rows, 4H) packed (rows ld floats apart; in panels ps floats apart
 * unless ps is 0) from src (rows, 4H) canonical. */
static void pack_gate_columns(float *dst, size_t ld, size_t ps, const float *src,
                              size_t rows, size_t H) {
    const int h = (int)H;
    for (size_t r = 0; r < rows; r++) {
        const float *s = src + r * 4 * H;
        float *d = dst + r * ld;
        for (int k = 0; k < 4; k++) {
            const float *from = s + (size_t)kCanonicalOf[k] * H;
            for (int j = k * h; j < (k + 1) * h; j = fl_wrun_end(ps, j, (k + 1) * h))
                memcpy((float *)fl_wcol(d, ps, j), from + (j - k * h),
                       (size_t)(fl_wrun_end(ps, j, (k + 1) * h) - j) * sizeof(float));
        }
    }
}

/* Layers whose [Wx; Wh] takes at least this much store it in panels by
 * default (FL_LAYOUT_AUTO). Beyond a Zen 4 core's L2, where a batch-1 step
 * streams the weights from L3, panels read faster (I=64: H=256 13.3 ->
 * 12.6 us per product, H=512 60 -> 48); from 256 KB, with Wh in L2, they
 * still help batch-1 calls a little (Python, I=H=128, T=1000: 3.54 -> 3.38
 * us per step; a step at I=64, H=128 4.11 -> 4.00) and leave batches of
 * 2-32 within 1-2% (one B=4 case 6% slower). Not on AMX CPUs, whose input
 * projection reads Wx row-major (and Sapphire Rapids' 2 MB L2 showed no
 * gain from panels). */
#define FL_PANELS_MIN_BYTES ((size_t)256 << 10)

/* Whether the layer stores its weights in panels (fl_weight_layout). */
static int layout_panels(const fl_lstm_desc *d, size_t I, size_t R, size_t H) {
    if (d->weight_layout != FL_LAYOUT_AUTO)
        return d->weight_layout == FL_LAYOUT_PANELS;
    /* dimensions are at most 2^24: no overflow */
    return H % 16 == 0 && (I + R) * 4 * H * sizeof(float) >= FL_PANELS_MIN_BYTES &&
           !fl_amx_available();
}

/* The packed weights. From FL_HUGE_MIN_BYTES on they get whole 2 MB pages
 * where the OS offers them (Linux transparent huge pages, on request):
 * with 4 KB pages the physical placement of the pages, and so which L2
 * sets the weights share, changes from process to process, and a step that
 * streams them from L2 varied with it (batch 1, H=128, T=1000: 3.0-4.0 us
 * per step over runs, 2.9-3.0 with huge pages). Costs at most 2 MB of
 * rounding per layer. */
#define FL_HUGE_PAGE ((size_t)2 << 20)
#define FL_HUGE_MIN_BYTES ((size_t)256 << 10)

static char *alloc_weights(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= FL_HUGE_MIN_BYTES && bytes <= SIZE_MAX - FL_HUGE_PAGE) {
        const size_t rounded = (bytes + FL_HUGE_PAGE - 1) & ~(FL_HUGE_PAGE - 1);
        char *p = (char *)aligned_alloc(FL_HUGE_PAGE, rounded);
        if (p) {
            (void)madvise(p, rounded, MADV_HUGEPAGE); /* a hint: may fail */
            return p;
        }
    }
#endif
    return (char *)aligned_alloc(FL_ALIGN, bytes);
}

static fl_status check_desc(const fl_lstm_desc *d) {
    if (d->input_size < 1 || d->units < 1 || d->proj_size < 0)
        return FL_ERR_SHAPE;
    if (d->input_size > FL_MAX_DIM || d->units > FL_MAX_DIM ||
        d->proj_size > FL_MAX_DIM)
        return FL_ERR_OVERFLOW;
    if (!valid_activation(d->activation) ||
        !valid_activation(d->recurrent_activation))
        return FL_ERR_UNSUPPORTED;
    if (d->use_cell_clip && !(d->cell_clip > 0.0f && isfinite(d->cell_clip)))
        return FL_ERR_ARG;
    if (d->use_proj_clip &&
        (d->proj_size == 0 || !(d->proj_clip > 0.0f && isfinite(d->proj_clip))))
        return FL_ERR_ARG;
    if ((int)d->weight_layout < FL_LAYOUT_AUTO || (int)d->weight_layout > FL_LAYOUT_PANELS)
        return FL_ERR_ARG;
    /* a block of 16 units' gate columns must not straddle two panels */
    if (d->weight_layout == FL_LAYOUT_PANELS && d->units % 16 != 0)
        return FL_ERR_UNSUPPORTED;
    return FL_OK;
}

/* Adds an aligned region of n floats to a layout; returns 0 on overflow. */
static int layout_add(size_t *offset, size_t n_floats, size_t *at) {
    size_t bytes, rounded;
    if (!fl_mul_size(n_floats, sizeof(float), &bytes)) return 0;
    if (!fl_round_up(bytes, &rounded)) return 0;
    if (*offset > SIZE_MAX - rounded) return 0;
    *at = *offset;
    *offset += rounded;
    return 1;
}

fl_status fl_lstm_create(const fl_lstm_desc *desc, const float *kernel,
                         const float *recurrent_kernel, const float *bias,
                         const float *peepholes, const float *projection,
                         fl_lstm **out) {
    if (!out) return FL_ERR_ARG;
    *out = NULL;
    if (!desc || !kernel || !recurrent_kernel) return FL_ERR_ARG;
    if ((desc->proj_size > 0) != (projection != NULL)) return FL_ERR_ARG;
    fl_status st = check_desc(desc);
    if (st != FL_OK) return st;

    const size_t I = (size_t)desc->input_size, H = (size_t)desc->units;
    const size_t P = (size_t)desc->proj_size, R = P ? P : H;
    size_t n_wx, n_wh, n_proj = 0, ps = 0;
    const int panels = layout_panels(desc, I, R, H);
    const size_t ldh = panels ? FL_PANEL_COLS : pad_stride(4 * H), ldx = ldh;
    if (!fl_mul_size(I, ldx, &n_wx) || !fl_mul_size(R, ldh, &n_wh) ||
        !fl_mul_size(H, P, &n_proj))
        return FL_ERR_OVERFLOW;
    if (panels) { /* one region: the panels of [Wx; Wh] */
        ps = n_wx + n_wh;
        if (!fl_mul_size((4 * H + FL_PANEL_COLS - 1) / FL_PANEL_COLS, ps, &n_wx))
            return FL_ERR_OVERFLOW;
        n_wh = 0;
    }

    if (!all_finite(kernel, I * 4 * H) || !all_finite(recurrent_kernel, R * 4 * H) ||
        (bias && !all_finite(bias, 4 * H)) ||
        (peepholes && !all_finite(peepholes, 3 * H)) ||
        (projection && !all_finite(projection, n_proj)))
        return FL_ERR_NONFINITE;

    size_t total = 0, at_wx, at_wh = 0, at_bias, at_peep = 0, at_proj = 0;
    if (!layout_add(&total, n_wx, &at_wx) ||
        (n_wh && !layout_add(&total, n_wh, &at_wh)) ||
        !layout_add(&total, 4 * H, &at_bias) ||
        (peepholes && !layout_add(&total, 3 * H, &at_peep)) ||
        (projection && !layout_add(&total, n_proj, &at_proj)))
        return FL_ERR_OVERFLOW;

    fl_lstm *m = (fl_lstm *)calloc(1, sizeof *m);
    if (!m) return FL_ERR_NOMEM;
    char *block = alloc_weights(total);
    if (!block) {
        free(m);
        return FL_ERR_NOMEM;
    }
    m->desc = *desc;
    m->desc.weight_layout = panels ? FL_LAYOUT_PANELS : FL_LAYOUT_ROWS;
    m->R = (int)R;
    m->block = block;
    m->ps = ps;
    m->wx = (float *)(block + at_wx);
    m->wh = panels ? m->wx + I * FL_PANEL_COLS : (float *)(block + at_wh);
    /* the fused one-step product reads [Wx; Wh] as one matrix: the regions
     * are adjacent because each row is a whole number of 64-byte lines */
    if (!panels && m->wh != m->wx + n_wx) {
        free(block);
        free(m);
        return FL_ERR_ARG;
    }
    m->bias = (float *)(block + at_bias);
    m->ldh = (int)ldh;
    m->ldx = (int)ldx;
    memset(m->wx, 0, n_wx * sizeof(float)); /* the padding too */
    pack_gate_columns(m->wx, ldx, ps, kernel, I, H);
    memset(m->wh, 0, n_wh * sizeof(float)); /* the padding too */
    pack_gate_columns(m->wh, ldh, ps, recurrent_kernel, R, H);
    if (bias)
        pack_gate_columns(m->bias, 4 * H, 0, bias, 1, H);
    else
        memset(m->bias, 0, 4 * H * sizeof(float));
    if (peepholes) { /* canonical rows w_i, w_f, w_o already match [i f o] */
        m->peep = (float *)(block + at_peep);
        memcpy(m->peep, peepholes, 3 * H * sizeof(float));
    }
    if (projection) {
        m->proj = (float *)(block + at_proj);
        memcpy(m->proj, projection, n_proj * sizeof(float));
    }
    *out = m;
    return FL_OK;
}

void fl_lstm_free(fl_lstm *lstm) {
    if (!lstm) return;
    free(lstm->block);
    free(lstm);
}

int fl_lstm_input_size(const fl_lstm *L) { return L->desc.input_size; }

fl_status fl_lstm_get_desc(const fl_lstm *lstm, fl_lstm_desc *out) {
    if (!lstm || !out) return FL_ERR_ARG;
    *out = lstm->desc;
    return FL_OK;
}

/* Workspace regions, byte offsets from the first aligned address. */
typedef struct ws_layout {
    int panels_used; /* the steps run on fl_batch_step (then only panels,
                        z, hnext, skip and seen are laid out) */
    size_t panels;   /* fl_batch_pack's copy of [Wx; Wh] and the bias */
    size_t z;        /* (FL_BATCH_GROUP, 64) pre-activations of one group */
    size_t hnext;    /* (B, H) the step's new h */
    size_t skip;     /* (B,) bytes: each row's step status (FL_STEP_*;
                        nonzero: the step leaves the row alone) */
    size_t xrows;    /* (B, I) one step's inputs of a batch-major run */
    size_t gates; /* (chunk, B, 4H) input projection + recurrent term */
    size_t m;     /* (B, H) pre-projection output (projection only) */
    size_t hnew;  /* (B, P) projected output (projection only) */
    size_t seen;  /* (B) bytes, when the caller passes no `seen` */
    size_t rec;   /* (B, 4H) recurrent product of one step, contiguous
                     (batch-major batches, whose gate rows lie far apart) */
    size_t par;   /* fl_parallel_run's buffers (batch 1, no projection) */
    size_t wcopy; /* its threads' own copies of Wh, or 0 (not laid out) */
    size_t xh;    /* (I + R): [x_t; h] of a one-step batch-1 call */
    size_t whp;   /* (R, 4H) Wh in the panel layout (fl_panels_pack) for
                     a batch-1 call on one thread, or 0 (not laid out) */
    size_t amx;   /* fl_amx_gemm's scratch for the input projection, or 0
                     (not laid out: no AMX, or products too small) */
    int overlap;  /* batch 1 in chunks of FL_OVERLAP_STEPS, each chunk's
                     input projection woven into the previous chunk's
                     recurrent products (fl_matvec_side); gates then holds
                     two chunks */
    size_t xt;    /* the next chunk's inputs, as fl_side_xt_fill lays them */
    size_t total;
} ws_layout;

/* Batches run on fl_batch_step (packed panels, gates fused) when the layer
 * has the standard gates and the call has enough rows x steps to repay
 * packing the panels (a copy of the weights, made per call in the
 * workspace). */
#define FL_PANELS_MIN_ROW_STEPS 64

static int panels_used(const fl_lstm *L, int batch, int steps) {
    const fl_lstm_desc *d = &L->desc;
    return batch >= 2 &&
           (size_t)batch * (size_t)steps >= FL_PANELS_MIN_ROW_STEPS &&
           d->proj_size == 0 && !L->peep && !d->use_cell_clip &&
           d->recurrent_activation == FL_ACT_SIGMOID &&
           d->activation == FL_ACT_TANH && fl_batch_preferred();
}

static fl_status plan_panels(const fl_lstm *lstm, int batch, ws_layout *w) {
    const size_t B = (size_t)batch, H = (size_t)lstm->desc.units;
    size_t off = 0, n_h;
    w->panels_used = 1;
    /* the panels come first: z after them keeps fl_batch_step's prefetch
     * of 8 rows past a panel's end inside the workspace */
    if (!fl_mul_size(B, H, &n_h) ||
        !layout_add(&off, fl_batch_panel_floats(lstm->desc.input_size, (int)H),
                    &w->panels) ||
        !layout_add(&off, (size_t)FL_BATCH_GROUP * FL_PANEL_WIDTH, &w->z) ||
        !layout_add(&off, n_h, &w->hnext) ||
        !layout_add(&off, B * (size_t)lstm->desc.input_size, &w->xrows) ||
        !layout_add(&off, (B + sizeof(float) - 1) / sizeof(float), &w->skip) ||
        !layout_add(&off, (B + sizeof(float) - 1) / sizeof(float), &w->seen))
        return FL_ERR_OVERFLOW;
    if (off > SIZE_MAX - FL_ALIGN) return FL_ERR_OVERFLOW;
    w->total = off + FL_ALIGN;
    return FL_OK;
}

/* Batch-1 calls of at least FL_WH_PANELS_MIN_STEPS steps (in chunks of 2
 * or more) on one thread read a copy of Wh in the panel layout, made once
 * per call (fl_matvec_panels), when Wh is between these sizes: below, it
 * made no difference. Wh streamed from L3 gained nothing on Sapphire
 * Rapids but 12% on AMD Zen 4 (512 x 2048: 50 -> 44 us per product), hence
 * the 16 MB ceiling. The copy (~60 us for 1 MB) pays for itself within ~100
 * steps. It is
 * made only while it and a minimal gate buffer (256 KB) take at most 45% of
 * the call's own data (weights, inputs, outputs), which keeps the call's
 * peak memory under 1.5x of that. */
#define FL_WH_PANELS_MIN_STEPS 128
#define FL_WH_PANELS_MIN_BYTES ((size_t)512 << 10)
#define FL_WH_PANELS_MAX_BYTES ((size_t)16 << 20)

/* Whether a batch-1 call runs on several threads (fl_parallel_run). */
static int split_threads(const fl_lstm *L, int batch, int threads) {
    return threads > 1 && batch == 1 && L->desc.proj_size == 0 &&
           L->desc.units >= 128;
}

/* with_y: the call writes every step's output (else only the last) */
static int wh_panels_used(const fl_lstm *L, int batch, int steps, int chunk,
                          int threads, int with_y) {
    const size_t I = (size_t)L->desc.input_size, R = (size_t)L->R;
    const size_t H4 = 4 * (size_t)L->desc.units, T = (size_t)steps;
    if (batch != 1 || steps < FL_WH_PANELS_MIN_STEPS || chunk < 2 ||
        split_threads(L, batch, threads))
        return 0;
    /* sizes are bounded by FL_MAX_DIM and batch == 1: no overflow */
    if (L->ps) return 0; /* Wh is in panels already */
    const size_t wh = R * H4 * sizeof(float);
    const size_t data = ((I + R) * H4 + T * I + (with_y ? T * R : R)) * sizeof(float);
    return wh >= FL_WH_PANELS_MIN_BYTES && wh <= FL_WH_PANELS_MAX_BYTES &&
           (wh + ((size_t)256 << 10)) * 20 <= data * 9;
}

/* Input projections of at least this many rows (steps x batch rows of a
 * chunk) run on AMX where the CPU has it; with fewer, splitting the
 * weights into bfloat16 parts costs more than it saves. */
#define FL_AMX_MIN_ROWS 128

/* Batch-1 layers whose [Wx; Wh] is at most this size run every step as one
 * fused matrix-vector product (the weights stay in the nearest caches). */
#define FL_FUSED_MAX_BYTES (160 * 1024)

/* Whether a call runs every step as one fused [x; h] product (chunks of one
 * step, no separate input GEMM): batch 1 with small weights (measured:
 * H=32 0.46 -> 0.36 us per step; from H=128 on, the GEMM wins). */
static int fused_steps(const fl_lstm *L, int batch) {
    const size_t I = (size_t)L->desc.input_size, R = (size_t)L->R;
    const size_t H4 = 4 * (size_t)L->desc.units; /* floats per row, stored: */
    const size_t row = L->ps ? (H4 + FL_PANEL_COLS - 1) / FL_PANEL_COLS * FL_PANEL_COLS
                             : (size_t)L->ldx;
    return batch == 1 && (I + R) * row * sizeof(float) <= FL_FUSED_MAX_BYTES;
}

/* Whether a call's input projections may run on fl_amx_gemm (given AMX):
 * products of at least FL_AMX_MIN_ROWS rows, 32 inputs and 64 columns,
 * on the paths that have a separate input GEMM. */
static int amx_used(const fl_lstm *L, int batch, int chunk) {
    return !L->ps && !fused_steps(L, batch) &&
           (size_t)chunk * (size_t)batch >= FL_AMX_MIN_ROWS &&
           L->desc.input_size >= 32 && L->desc.units >= 16;
}

/* Batch-1 calls of at least two chunks on one thread run in chunks of
 * FL_OVERLAP_STEPS steps, each chunk's input projection computed in the
 * idle FMA slots of the previous chunk's recurrent products
 * (fl_matvec_side), where the CPU runs it. Small layers too: it beats the
 * fused [x; h] product (Zen 4, I=H: 32 0.32 -> 0.30 us per step, 64 1.33
 * -> 0.95). Only while the rows of the recurrent products can carry that
 * work (I <= 2R: one projection k-step per row of Wh); with wider inputs
 * the projection outweighs the recurrent product and BLAS does it better
 * (H=128, I=1024: 13.9 -> 24 us per step woven in). */
static int overlap_used(const fl_lstm *L, int batch, int steps, int threads,
                        int allowed) {
    return allowed && batch == 1 && steps >= 2 * FL_OVERLAP_STEPS &&
           L->desc.input_size <= 2 * L->R &&
           !split_threads(L, batch, threads) && fl_overlap_available();
}

/* keep_copies as in fl_lstm_run, or -1: lay out no weight copies */
static fl_status plan_workspace(const fl_lstm *lstm, int batch, int steps,
                                int chunk_steps, int threads, int keep_copies,
                                int with_y, int amx, int overlap, int *chunk_out,
                                ws_layout *w) {
    if (batch < 1 || steps < 1) return FL_ERR_SHAPE;
    if (batch > FL_MAX_DIM || steps > FL_MAX_DIM) return FL_ERR_OVERFLOW;
    int chunk = (chunk_steps <= 0 || chunk_steps > steps) ? steps : chunk_steps;
    /* BLAS sizes are ints: sgemm's n = chunk * batch, and the leading
     * dimension chunk * 4H of a batch-major gate buffer */
    if ((size_t)chunk * (size_t)batch > (size_t)INT32_MAX ||
        (size_t)chunk * 4 * (size_t)lstm->desc.units > (size_t)INT32_MAX)
        return FL_ERR_OVERFLOW;

    memset(w, 0, sizeof *w);
    if (panels_used(lstm, batch, steps)) {
        *chunk_out = chunk;
        return plan_panels(lstm, batch, w);
    }
    const size_t B = (size_t)batch, H = (size_t)lstm->desc.units;
    const size_t P = (size_t)lstm->desc.proj_size;
    size_t n_gates, off = 0;
    w->overlap = overlap_used(lstm, batch, steps, threads, overlap);
    if (w->overlap) { /* two chunks of gates: this one's, the next one's */
        chunk = FL_OVERLAP_STEPS;
        if (!layout_add(&off, 2 * (size_t)chunk * 4 * H, &w->gates) ||
            !layout_add(&off, (size_t)lstm->desc.input_size * FL_OVERLAP_STEPS,
                        &w->xt))
            return FL_ERR_OVERFLOW;
    } else if (!fl_mul_size((size_t)chunk * B, 4 * H, &n_gates) ||
               !layout_add(&off, n_gates, &w->gates)) {
        return FL_ERR_OVERFLOW;
    }
    *chunk_out = chunk;
    if (P) {
        if (!layout_add(&off, B * H, &w->m) || !layout_add(&off, B * P, &w->hnew))
            return FL_ERR_OVERFLOW;
    }
    if (!layout_add(&off, (B + sizeof(float) - 1) / sizeof(float), &w->seen))
        return FL_ERR_OVERFLOW;
    if (B > 1 && !layout_add(&off, B * 4 * H, &w->rec)) return FL_ERR_OVERFLOW;
    if (B == 1 && !P &&
        !layout_add(&off, fl_parallel_workspace_floats((int)H), &w->par))
        return FL_ERR_OVERFLOW;
    if (B == 1 && !layout_add(&off, (size_t)lstm->desc.input_size + (P ? P : H),
                              &w->xh))
        return FL_ERR_OVERFLOW;
    if (split_threads(lstm, batch, threads) &&
        keep_copies >= 0 && (chunk >= FL_PAR_COPY_MIN_STEPS || keep_copies) &&
        !layout_add(&off, fl_parallel_copy_floats((int)H, threads, lstm->ps),
                    &w->wcopy))
        return FL_ERR_OVERFLOW;
    if (wh_panels_used(lstm, batch, steps, chunk, threads, with_y) &&
        !layout_add(&off, fl_panels_floats(lstm->R, (int)(4 * H)), &w->whp))
        return FL_ERR_OVERFLOW;
    if (amx && !w->overlap && amx_used(lstm, batch, chunk) && fl_amx_available() &&
        !layout_add(&off,
                    fl_amx_scratch_bytes(lstm->desc.input_size, chunk * batch) /
                            sizeof(float) + 1,
                    &w->amx))
        return FL_ERR_OVERFLOW;
    if (off > SIZE_MAX - FL_ALIGN) return FL_ERR_OVERFLOW;
    w->total = off + FL_ALIGN; /* slack so any base address can be aligned */
    return FL_OK;
}

fl_status fl_lstm_workspace_size(const fl_lstm *lstm, int batch, int steps,
                                 int chunk_steps, size_t *out_bytes) {
    if (!lstm || !out_bytes) return FL_ERR_ARG;
    ws_layout w, plain;
    int chunk;
    /* enough with or without the overlap (a run may set no_overlap) */
    fl_status st =
        plan_workspace(lstm, batch, steps, chunk_steps, 1, 0, 1, 1, 1, &chunk, &w);
    if (st == FL_OK)
        st = plan_workspace(lstm, batch, steps, chunk_steps, 1, 0, 1, 1, 0, &chunk,
                            &plain);
    if (st == FL_OK) *out_bytes = w.total > plain.total ? w.total : plain.total;
    return st;
}

fl_status fl_lstm_run_workspace_size(const fl_lstm *lstm, const fl_lstm_run *run,
                                     size_t *out_bytes) {
    if (!lstm || !run || !out_bytes) return FL_ERR_ARG;
    ws_layout w;
    int chunk;
    fl_status st = plan_workspace(lstm, run->batch, run->steps, run->chunk_steps,
                                  run->threads, run->keep_copies, run->y != NULL,
                                  !run->no_amx, !run->no_overlap, &chunk, &w);
    if (st == FL_OK) *out_bytes = w.total;
    return st;
}

/* Up to this batch size the per-step recurrent product runs on fl_gemm
 * (measured faster than OpenBLAS sgemm for these shapes on AVX-512). */
#define FL_OWN_GEMM_MAX_BATCH 256

/* Below this many rows a product runs on fl_matvec, row by row: a BLAS
 * call's fixed cost would dominate. */
#define FL_SMALL_ROWS 4

/* Z(rows, 4H) (+)= A(rows, K) @ W for W = L->wx or L->wh (K of its rows),
 * on fl_gemm (one call per panel in the panel layout). */
static void gemm_weights(const fl_lstm *L, const float *A, int rows, int K,
                         int lda, const float *W, int ldw, float *Z, int ldz,
                         int accumulate) {
    fl_gemm_cols(A, rows, K, lda, W, ldw, L->ps, 0, 4 * L->desc.units, Z, ldz,
                 accumulate);
}

/* The same on BLAS: Z = A @ W (beta 0) or Z += A @ W (beta 1), A's rows K
 * floats apart. */
static void sgemm_weights(const fl_lstm *L, const fl_blas *blas, const float *A,
                          int rows, int K, const float *W, int ldw, float *Z,
                          int ldz, float beta) {
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

/* z[0:4H] (+)= v[0:rows] @ W for W = L->wx (rows = I, or I + R: [Wx; Wh]
 * as one matrix) or L->wh, either layout. */
static void matvec_weights(const fl_lstm *L, const float *W, int rows,
                           const float *v, float *z, int accumulate, int backward) {
    matvec_any(W, rows, 4 * L->desc.units, L->ldx, L->ps, v, z, accumulate, backward);
}

/* The Wh a batch-1 call's recurrent products read: the layer's, or the
 * call's copy of it in panels (whp, ps = R * FL_PANEL_COLS). */
typedef struct wh_view {
    const float *w;
    int ld;
    size_t ps;
} wh_view;

/* G(rows, 4H) = X(rows, I) @ Wx; on AMX tiles when the call laid out
 * their scratch (amx, else NULL) and the product is large enough. */
static void input_projection(const fl_lstm *L, const fl_blas *blas,
                             const float *x, int rows, float *G, void *amx) {
    const int n4h = 4 * L->desc.units, k = L->desc.input_size;
    if (amx && rows >= FL_AMX_MIN_ROWS &&
        fl_amx_gemm(x, rows, k, (size_t)k, L->wx, n4h, (size_t)L->ldx, G,
                    (size_t)n4h, amx))
        return; /* else (a value out of AMX's range) BLAS redoes all of G */
    if (rows <= FL_SMALL_ROWS) {
        for (int r = 0; r < rows; r++)
            matvec_weights(L, L->wx, k, x + (size_t)r * k, G + (size_t)r * n4h, 0, 0);
        return;
    }
    sgemm_weights(L, blas, x, rows, k, L->wx, L->ldx, G, n4h, 0.0f);
}

/* G rows (B of them, ldg floats apart) += h(B, R) @ Wh; a matrix-vector
 * product from the call's view of Wh when B == 1 (its column blocks walked
 * backward if asked). */
static void recurrent_product(const fl_lstm *L, const fl_blas *blas,
                              const float *h, int batch, float *G, int ldg,
                              const wh_view *wh, int backward) {
    const int n4h = 4 * L->desc.units, r = L->R;
    if (batch == 1)
        matvec_any(wh->w, r, n4h, wh->ld, wh->ps, h, G, 1, backward);
    else if (batch <= FL_OWN_GEMM_MAX_BATCH)
        gemm_weights(L, h, batch, r, r, L->wh, L->ldh, G, ldg, 1);
    else
        sgemm_weights(L, blas, h, batch, r, L->wh, L->ldh, G, ldg, 1.0f);
}

/* hnew(B, P) = m(B, H) @ proj */
static void projection_product(const fl_lstm *L, const fl_blas *blas,
                               const float *m, int batch, float *hnew) {
    int p = L->desc.proj_size, k = L->desc.units, n = batch;
    float one = 1.0f, zero = 0.0f;
    char N = 'N';
    blas->sgemm(&N, &N, &p, &n, &k, &one, L->proj, &p, (float *)m, &k, &zero,
                hnew, &p);
}

/* What a row outputs at a step: h when valid; zeros past its length; at a
 * masked step the previous output (FL_MASK_CARRY: h once the row was seen,
 * zeros before) or zeros (FL_MASK_ZERO). */
static void write_output(const float *h_rows, int R, int status, int carry,
                         const uint8_t *seen, int b, float *dst) {
    const float *h = h_rows + (size_t)b * (size_t)R;
    int show_h = status == FL_STEP_VALID ||
                 (status == FL_STEP_MASKED && carry && seen[b]);
    if (show_h)
        memcpy(dst, h, (size_t)R * sizeof(float));
    else
        memset(dst, 0, (size_t)R * sizeof(float));
}

static fl_status check_run(const fl_lstm *L, const fl_blas *blas,
                           const fl_lstm_run *run) {
    if (!L || !blas || !run || !blas->sgemm || !blas->sgemv) return FL_ERR_ARG;
    if (!run->x || !run->h || !run->c) return FL_ERR_ARG;
    if (run->mask_output != FL_MASK_CARRY && run->mask_output != FL_MASK_ZERO)
        return FL_ERR_ARG;
    if (run->lengths)
        for (int b = 0; b < run->batch; b++)
            if (run->lengths[b] < 0 || run->lengths[b] > run->steps)
                return FL_ERR_SHAPE;
    return FL_OK;
}

static int valid_rows_finite(const fl_lstm_run *run, size_t I) {
    if (!run->mask && !run->lengths) /* every row: one scan (B=1, T=1000,
                                        I=32: 6.4 -> 1.5 us) */
        return all_finite(run->x, (size_t)run->steps * (size_t)run->batch * I);
    for (int t = 0; t < run->steps; t++)
        for (int b = 0; b < run->batch; b++)
            if (fl_step_status(run, t, b) == FL_STEP_VALID &&
                !all_finite(run->x + fl_tb_index(run, t, b) * I, I))
                return 0;
    return 1;
}

static fl_status forward(const fl_lstm *L, const fl_blas *blas,
                         const fl_lstm_run *run, void *work, size_t work_bytes);

/* y_last as the run defines it, from the final h in run->h. */
static void write_last(const fl_lstm_run *run, int R, int masked, int carry,
                       const uint8_t *seen) {
    const int T = run->steps, t_last = run->reverse ? 0 : T - 1;
    for (int b = 0; b < run->batch; b++) {
        int status = masked ? fl_step_status(run, t_last, b) : FL_STEP_VALID;
        /* a row that ended early reports its own last valid output */
        if (status == FL_STEP_PAST_LENGTH) status = FL_STEP_MASKED;
        write_output(run->h, R, status,
                     carry || (run->lengths && t_last >= run->lengths[b]), seen,
                     b, run->y_last + (size_t)b * R);
    }
}

/* Outputs of at least this many bytes are written with non-temporal
 * stores on the fl_batch_step path: they bypass the caches, which saves
 * reading every output line in before writing it (B=64, T=100, H=256: 15
 * -> 5 us per step). Smaller outputs stay cached for the caller. */
#define FL_STREAM_OUT_MIN_BYTES (4u << 20)

/* dst[0:n] = src[0:n] with non-temporal stores where dst allows it
 * (16-byte aligned, n a multiple of 4). src is either the workspace or the
 * caller's h, which has no alignment requirement: unaligned loads. */
static void copy_row_streaming(float *dst, const float *src, int n) {
#if defined(__SSE2__)
    if (((uintptr_t)dst & 15) == 0 && n % 4 == 0) {
        for (int j = 0; j < n; j += 4) _mm_stream_ps(dst + j, _mm_loadu_ps(src + j));
        return;
    }
#endif
    memcpy(dst, src, (size_t)n * sizeof(float));
}

/* The whole run on fl_batch_step: per step one fused pass (input product,
 * recurrent product, gates) per block of 16 units; h alternates between
 * run->h and the workspace's hnext. */
static void forward_panels(const fl_lstm *L, const fl_lstm_run *run,
                           char *base, const ws_layout *w, uint8_t *seen) {
    const int B = run->batch, T = run->steps, I = L->desc.input_size;
    const int H = L->desc.units;
    const int masked = run->mask != NULL || run->lengths != NULL;
    const int carry = run->mask_output == FL_MASK_CARRY;
    float *panels = (float *)(base + w->panels);
    float *z = (float *)(base + w->z);
    uint8_t *skip = masked ? (uint8_t *)(base + w->skip) : NULL;
    fl_batch_pack(L->wx, L->ldx, L->wh, L->ldh, L->ps, L->bias, I, H, panels);
    /* x rows of one step: (t, b) at x + t * t_stride + b * ldxr. In a
     * batch-major run they lie T*I floats apart, often a multiple of 4 KB
     * that puts every row in the same cache sets, where they evict each
     * other between unit blocks; they are gathered into xrows instead
     * (B=64, T=1000, I=128, H=512: a 512 KB stride; 1076 -> 1035 us per
     * step). */
    const size_t t_stride = run->batch_major ? (size_t)I : (size_t)B * I;
    float *xrows = (float *)(base + w->xrows);
    float *cur = run->h, *next = (float *)(base + w->hnext);
    const int streaming = (size_t)B * T * H * sizeof(float) >= FL_STREAM_OUT_MIN_BYTES;
    for (int s = 0; s < T; s++) {
        const int t = run->reverse ? T - 1 - s : s;
        if (masked) /* fl_batch_step leaves rows with a nonzero status */
            for (int b = 0; b < B; b++)
                skip[b] = (uint8_t)fl_step_status(run, t, b);
        const float *xt = run->x + (size_t)t * t_stride;
        if (run->batch_major) {
            for (int b = 0; b < B; b++)
                memcpy(xrows + (size_t)b * I, xt + (size_t)b * T * I,
                       (size_t)I * sizeof(float));
            xt = xrows;
        }
        fl_batch_step(panels, I, H, xt, (size_t)I, cur, B, run->c, next, skip, z);
        for (int b = 0; b < B; b++) {
            const int status = masked ? skip[b] : FL_STEP_VALID;
            if (status == FL_STEP_VALID)
                seen[b] = 1;
            else /* the state is carried over a skipped step */
                memcpy(next + (size_t)b * H, cur + (size_t)b * H,
                       (size_t)H * sizeof(float));
            float *dst = run->y ? run->y + fl_tb_index(run, s, b) * (size_t)H : NULL;
            if (dst && streaming && status == FL_STEP_VALID)
                copy_row_streaming(dst, next + (size_t)b * H, H);
            else if (dst)
                write_output(next, H, status, carry, seen, b, dst);
        }
        float *tmp = cur;
        cur = next;
        next = tmp;
    }
#if defined(__SSE2__)
    if (streaming) _mm_sfence(); /* order the streamed outputs before return */
#endif
    if (cur != run->h) memcpy(run->h, cur, (size_t)B * H * sizeof(float));
    if (run->y_last) write_last(run, H, masked, carry, seen);
}

/* Denormals are flushed to zero inside the kernel (FTZ/DAZ set on entry and
 * the caller's setting restored on exit): a state that decays towards zero
 * would otherwise slow every operation on it by ~100x. */
fl_status fl_lstm_forward(const fl_lstm *L, const fl_blas *blas,
                          const fl_lstm_run *run, void *work,
                          size_t work_bytes) {
#if defined(__SSE2__)
    const unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    fl_status st = forward(L, blas, run, work, work_bytes);
    _mm_setcsr(saved);
    return st;
#else
    return forward(L, blas, run, work, work_bytes);
#endif
}

static fl_status forward(const fl_lstm *L, const fl_blas *blas,
                         const fl_lstm_run *run, void *work,
                         size_t work_bytes) {
    fl_status st = check_run(L, blas, run);
    if (st != FL_OK) return st;
    ws_layout w;
    int chunk;
    /* the run's own layout; in a smaller workspace (one sized by
     * fl_lstm_workspace_size) first without the threads' weight copies,
     * then without the AMX scratch too, then without the overlap (whose
     * two chunks of 16 steps can outgrow a short chunk_steps' buffer) */
    static const struct {
        int copies, amx, overlap;
    } tries[] = {{1, 1, 1}, {0, 1, 1}, {0, 0, 1}, {0, 0, 0}};
    for (int i = 0; i < 4; i++) {
        const int own = tries[i].copies; /* keep_copies -1: none laid out */
        st = plan_workspace(L, run->batch, run->steps, run->chunk_steps,
                            run->threads, own ? run->keep_copies : -1,
                            run->y != NULL, tries[i].amx && !run->no_amx,
                            tries[i].overlap && !run->no_overlap, &chunk, &w);
        if (st != FL_OK) return st;
        if (work && work_bytes >= w.total) break;
    }
    if (!work || work_bytes < w.total) return FL_ERR_ARG;

    const int B = run->batch, T = run->steps, R = L->R;
    const size_t H = (size_t)L->desc.units, I = (size_t)L->desc.input_size;
    const size_t P = (size_t)L->desc.proj_size;
    const size_t row4 = 4 * H;
    const int masked = run->mask != NULL || run->lengths != NULL;
    const int carry = run->mask_output == FL_MASK_CARRY;
    if (run->check_finite && !valid_rows_finite(run, I)) return FL_ERR_NONFINITE;

    char *base = (char *)(((uintptr_t)work + (FL_ALIGN - 1)) &
                          ~(uintptr_t)(FL_ALIGN - 1));
    float *G = (float *)(base + w.gates);
    float *m = P ? (float *)(base + w.m) : NULL;
    float *hnew = P ? (float *)(base + w.hnew) : NULL;
    float *rec = B > 1 ? (float *)(base + w.rec) : NULL;
    void *amx = w.amx ? base + w.amx : NULL;
    uint8_t *seen = run->seen;
    if (!seen) {
        seen = (uint8_t *)(base + w.seen);
        memset(seen, 0, (size_t)B);
    }
    if (w.panels_used) {
        forward_panels(L, run, base, &w, seen);
        return FL_OK;
    }
    const fl_gate_params gp = {
        .units = (int)H,
        .act = L->desc.activation,
        .ract = L->desc.recurrent_activation,
        .bias = L->bias,
        .peep = L->peep,
        .use_cell_clip = L->desc.use_cell_clip,
        .cell_clip = L->desc.cell_clip,
    };
    const float pclip = L->desc.proj_clip;

    if (fused_steps(L, B) && !w.overlap) chunk = 1; /* steps fused one by one */
    const int n_chunks = (T + chunk - 1) / chunk;
    const int par = split_threads(L, B, run->threads);
    wh_view wh = {L->wh, L->ldh, L->ps};
    if (w.whp && !par) {
        fl_panels_pack(L->wh, R, (int)row4, L->ldh, (float *)(base + w.whp));
        wh = (wh_view){(const float *)(base + w.whp), FL_PANEL_COLS,
                       (size_t)R * FL_PANEL_COLS};
    }
    /* batch 1 on several threads, each computing its own columns, the
     * whole call in one session of the threads (a lone step without a
     * pool runs serially, fused: starting threads would cost more) */
    if (par && !(T == 1 && !run->pool)) {
        float *wcopy = w.wcopy ? (float *)(base + w.wcopy) : NULL;
        /* the threads weave each chunk's projection into the previous
         * chunk's recurrent products where the gate buffer has room for
         * two chunks and their inputs (C, 2 threads, T=1000, I=H: 256
         * 8.25 -> 7.25 us per step, 512 35.7 -> 30.7) */
        const int weave =
            !run->no_overlap && fl_overlap_available() && T >= 2 * FL_OVERLAP_STEPS &&
            (int)I <= 2 * R &&
            chunk >= fl_parallel_overlap_rows((int)H, (int)I, run->threads);
        if (fl_parallel_run(L, &gp, L->wx, L->ldx, L->wh, L->ldh, L->ps, L->bias,
                            L->peep,
                            run, G, chunk, weave, run->threads,
                            (float *)(base + w.par), wcopy, run->keep_copies != 2,
                            seen)) {
            if (run->y_last) write_last(run, R, masked, carry, seen);
            return FL_OK;
        }
        /* the threads could not start: the call runs serially below, but a
         * caller that keeps the workspace (keep_copies 1) must still find
         * the copies there on its next call */
        if (wcopy && run->keep_copies == 1)
            fl_parallel_fill_copies(L->wh, L->ldh, L->ps, (int)H, run->threads,
                                    wcopy);
    }
    /* overlap: the chunk's projections are in G + (ci & 1) * chunk * 4H;
     * side is the next chunk's, made by this chunk's recurrent products */
    fl_side_gemm side = {0};
    int side_on = 0, next_ready = 0;
    float *xt = w.overlap ? (float *)(base + w.xt) : NULL;
    for (int ci = 0; ci < n_chunks; ci++) {
        /* chunks (and steps within them) in processing order */
        const int cidx = run->reverse ? n_chunks - 1 - ci : ci;
        const int t0 = cidx * chunk;
        const int n = (t0 + chunk <= T) ? chunk : T - t0;
        float *Gc = w.overlap ? G + (size_t)(ci & 1) * (size_t)chunk * row4 : G;
        /* G holds the chunk's pre-activations in the input's own layout:
         * row (s, b) at G + (s * g_t + b * g_b) * 4H. */
        /* one step of one row (streaming): Wx and Wh rows are stored back to
         * back with one stride, so z = [x; h] @ [Wx; Wh] is a single pass */
        const int fused = B == 1 && n == 1;
        if (fused) {
            float *xh = (float *)(base + w.xh);
            memcpy(xh, run->x + (size_t)t0 * I, I * sizeof(float));
            memcpy(xh + I, run->h, (size_t)R * sizeof(float));
            matvec_weights(L, L->wx, (int)I + R, xh, Gc, 0, (t0 + run->sweep) & 1);
        }
        size_t g_t, g_b;
        if (fused) {
            g_t = 1, g_b = 1;
            side_on = next_ready = 0;
        } else if (w.overlap) { /* batch 1: both layouts agree */
            g_t = 1, g_b = 1;
            if (!next_ready)
                input_projection(L, blas, run->x + (size_t)t0 * I, n, Gc, NULL);
            const int nt0 = run->reverse ? t0 - chunk : t0 + chunk;
            side_on = ci + 1 < n_chunks && nt0 + chunk <= T;
            if (side_on) {
                fl_side_xt_fill(run->x + (size_t)nt0 * I, chunk, (int)I, (int)I, xt);
                side = (fl_side_gemm){
                    .xt = xt, .rows = chunk, .k = (int)I, .w = L->wx,
                    .ps = L->ps, .n = (int)row4, .ldw = L->ldx,
                    .out = G + (size_t)((ci + 1) & 1) * (size_t)chunk * row4,
                    .ldo = (int)row4,
                    .prefetch = (size_t)R * row4 * sizeof(float) >
                                FL_OVERLAP_PREFETCH_MIN_BYTES};
            }
            next_ready = side_on;
        } else if (!run->batch_major) {
            g_t = (size_t)B, g_b = 1;
            input_projection(L, blas, run->x + (size_t)t0 * B * I, n * B, Gc, amx);
        } else if (B > 1 && B <= FL_OWN_GEMM_MAX_BATCH && n < 64 &&
                   (size_t)T * I <= (size_t)INT32_MAX) {
            /* batch-major batches in short chunks: one product per step over
             * its B rows (T*I floats apart), into a time-major gate buffer
             * whose rows the recurrent product then updates in place. Faster
             * than BLAS on short per-row pieces (no repacking, no strided
             * gate rows); long chunks keep BLAS below (measured). */
            g_t = (size_t)B, g_b = 1;
            for (int s = 0; s < n; s++)
                gemm_weights(L, run->x + (size_t)(t0 + s) * I, B, (int)I, T * (int)I,
                             L->wx, L->ldx, Gc + (size_t)s * B * row4, (int)row4, 0);
        } else if (n == T) {
            g_t = 1, g_b = (size_t)T;
            input_projection(L, blas, run->x, T * B, Gc, amx);
        } else { /* a row's chunk steps are contiguous, rows are not */
            g_t = 1, g_b = (size_t)n;
            for (int b = 0; b < B; b++)
                input_projection(L, blas, run->x + ((size_t)b * T + t0) * I, n,
                                 Gc + (size_t)b * n * row4, amx);
        }


        for (int s = 0; s < n; s++) {
            const int t = run->reverse ? t0 + n - 1 - s : t0 + s;
            const int k = run->reverse ? T - 1 - t : t; /* output index */
            float *Gt = Gc + (size_t)(t - t0) * g_t * row4;
            /* gate rows of batch-major batches lie T*4H floats apart: the
             * recurrent product goes to a contiguous scratch instead (a
             * large power-of-two stride would alias in the caches), and the
             * input part is added row by row below */
            const int scratch = B > 1 && g_b > 1;
            if (scratch)
                gemm_weights(L, run->h, B, R, R, L->wh, L->ldh, rec, (int)row4, 0);
            else if (w.overlap && !fused)
                fl_matvec_side(wh.w, R, (int)row4, wh.ld, wh.ps, run->h, Gt,
                               (k + run->sweep) & 1, side_on ? &side : NULL, s, n);
            else if (!fused)
                recurrent_product(L, blas, run->h, B, Gt, (int)(g_b * row4), &wh,
                                  (k + run->sweep) & 1);

            /* gates; without projection m is h itself (Gt no longer needs
             * the old h), with projection m goes to scratch first */
            for (int b = 0; b < B; b++) {
                float *mb = P ? m + (size_t)b * H : run->h + (size_t)b * R;
                if (masked && fl_step_status(run, t, b) != FL_STEP_VALID) {
                    if (P) memset(mb, 0, H * sizeof(float));
                    continue;
                }
                float *zb = Gt + (size_t)b * g_b * row4;
                if (scratch) {
                    float *rb = rec + (size_t)b * row4;
                    for (size_t j = 0; j < row4; j++) rb[j] += zb[j];
                    zb = rb;
                }
                fl_gates_row(&gp, zb, run->c + (size_t)b * H, mb);
            }
            if (P) {
                projection_product(L, blas, m, B, hnew);
                for (int b = 0; b < B; b++) {
                    if (masked && fl_step_status(run, t, b) != FL_STEP_VALID) continue;
                    const float *src = hnew + (size_t)b * P;
                    float *dst = run->h + (size_t)b * P;
                    for (size_t j = 0; j < P; j++) {
                        float v = src[j];
                        if (L->desc.use_proj_clip) {
                            v = v < -pclip ? -pclip : v;
                            v = v > pclip ? pclip : v;
                        }
                        dst[j] = v;
                    }
                }
            }
            for (int b = 0; b < B; b++) {
                int status = masked ? fl_step_status(run, t, b) : FL_STEP_VALID;
                if (status == FL_STEP_VALID) seen[b] = 1;
                if (run->y)
                    write_output(run->h, R, status, carry, seen, b,
                                 run->y + fl_tb_index(run, k, b) * (size_t)R);
            }
        }
    }
    if (run->y_last) write_last(run, R, masked, carry, seen);
    return FL_OK;
}
