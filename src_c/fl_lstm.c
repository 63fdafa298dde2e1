/*
 * fl_lstm.c - create (canonical -> packed), free, getters, workspace sizes.
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
#include "fl_packed.h"
#include "fl_plan.h"

/* Canonical block order is i, f, g, o; packed block k takes canonical block
 * kCanonicalOf[k] so that the packed order is i, f, o, g. */
static const int kCanonicalOf[4] = {0, 1, 3, 2};

/* Whether v[0:n] has no NaN or inf: a float is finite unless its exponent
 * bits are all ones. Branch-free over blocks so the loop vectorizes (the
 * per-element isfinite with an early exit cost ~1 ms per call on a 3 MB
 * batch input, 3% of that call). */
FL_CLONES
int fl_all_finite(const float *v, size_t n) {
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
 * default (FL_LAYOUT_AUTO): where a batch-1 step streams the weights from
 * L3 panels read faster, and from 256 KB they still help batch-1 calls a
 * little while leaving batches about even. Not on AMX CPUs, whose input
 * projection reads Wx row-major (and whose 2 MB L2 showed no gain). */
#define FL_PANELS_MIN_BYTES ((size_t)256 << 10)

/* Whether the layer stores its weights in panels (fl_weight_layout). */
static int layout_panels(const fl_lstm_desc *d, size_t I, size_t R, size_t H) {
    if (d->weight_layout != FL_LAYOUT_AUTO) return d->weight_layout == FL_LAYOUT_PANELS;
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

char *fl_alloc_weights(size_t bytes) {
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
    if (d->input_size < 1 || d->units < 1 || d->proj_size < 0) return FL_ERR_SHAPE;
    if (d->input_size > FL_MAX_DIM || d->units > FL_MAX_DIM ||
        d->proj_size > FL_MAX_DIM)
        return FL_ERR_OVERFLOW;
    if (!fl_valid_activation(d->activation) || !fl_valid_activation(d->recurrent_activation))
        return FL_ERR_UNSUPPORTED;
    if (d->use_cell_clip && !(d->cell_clip > 0.0f && isfinite(d->cell_clip)))
        return FL_ERR_ARG;
    if (d->use_proj_clip &&
        (d->proj_size == 0 || !(d->proj_clip > 0.0f && isfinite(d->proj_clip))))
        return FL_ERR_ARG;
    if ((int)d->weight_layout < FL_LAYOUT_AUTO ||
        (int)d->weight_layout > FL_LAYOUT_PANELS)
        return FL_ERR_ARG;
    /* a block of 16 units' gate columns must not straddle two panels */
    if (d->weight_layout == FL_LAYOUT_PANELS && d->units % 16 != 0)
        return FL_ERR_UNSUPPORTED;
    return FL_OK;
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
    const size_t ldh = panels ? FL_PANEL_COLS : fl_pad_stride(4 * H), ldx = ldh;
    if (!fl_mul_size(I, ldx, &n_wx) || !fl_mul_size(R, ldh, &n_wh) ||
        !fl_mul_size(H, P, &n_proj))
        return FL_ERR_OVERFLOW;
    if (panels) { /* one region: the panels of [Wx; Wh] */
        ps = n_wx + n_wh;
        if (!fl_mul_size((4 * H + FL_PANEL_COLS - 1) / FL_PANEL_COLS, ps, &n_wx))
            return FL_ERR_OVERFLOW;
        n_wh = 0;
    }

    if (!fl_all_finite(kernel, I * 4 * H) ||
        !fl_all_finite(recurrent_kernel, R * 4 * H) ||
        (bias && !fl_all_finite(bias, 4 * H)) ||
        (peepholes && !fl_all_finite(peepholes, 3 * H)) ||
        (projection && !fl_all_finite(projection, n_proj)))
        return FL_ERR_NONFINITE;

    size_t total = 0, at_wx, at_wh = 0, at_bias, at_peep = 0, at_proj = 0;
    if (!fl_region_add(&total, n_wx, &at_wx) ||
        (n_wh && !fl_region_add(&total, n_wh, &at_wh)) ||
        !fl_region_add(&total, 4 * H, &at_bias) ||
        (peepholes && !fl_region_add(&total, 3 * H, &at_peep)) ||
        (projection && !fl_region_add(&total, n_proj, &at_proj)))
        return FL_ERR_OVERFLOW;

    fl_lstm *m = (fl_lstm *)calloc(1, sizeof *m);
    if (!m) return FL_ERR_NOMEM;
    char *block = fl_alloc_weights(total);
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

fl_status fl_lstm_get_desc(const fl_lstm *lstm, fl_lstm_desc *out) {
    if (!lstm || !out) return FL_ERR_ARG;
    *out = lstm->desc;
    return FL_OK;
}

fl_status fl_lstm_workspace_size(const fl_lstm *lstm, int batch, int steps,
                                 int chunk_steps, size_t *out_bytes) {
    if (!lstm || !out_bytes) return FL_ERR_ARG;
    return fl_plan_size_any(lstm, batch, steps, chunk_steps, out_bytes);
}

fl_status fl_lstm_run_workspace_size(const fl_lstm *lstm, const fl_run *run,
                                     size_t *out_bytes) {
    if (!lstm || !run || !out_bytes) return FL_ERR_ARG;
    fl_plan plan;
    fl_status st = fl_plan_make(lstm, run, SIZE_MAX, &plan);
    if (st == FL_OK) *out_bytes = plan.total;
    return st;
}
