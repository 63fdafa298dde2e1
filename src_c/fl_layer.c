/*
 * fl_layer.c - GRU and simple RNN layers: create (canonical -> packed),
 * free, getters and workspace sizes. The forward pass is in
 * fl_layer_forward.c.
 */
#include <stdlib.h>
#include <string.h>

#include "fl_layer_plan.h"

static fl_status check_desc(const fl_layer_desc *d) {
    if (d->kind != FL_LAYER_GRU && d->kind != FL_LAYER_SIMPLE) return FL_ERR_ARG;
    if (d->input_size < 1 || d->units < 1) return FL_ERR_SHAPE;
    if (d->input_size > FL_MAX_DIM || d->units > FL_MAX_DIM) return FL_ERR_OVERFLOW;
    if (!fl_valid_activation(d->activation) ||
        (d->kind == FL_LAYER_GRU && !fl_valid_activation(d->recurrent_activation)))
        return FL_ERR_UNSUPPORTED;
    if (d->reset_after != 0 && d->reset_after != 1) return FL_ERR_ARG;
    return FL_OK;
}

/* dst (rows, n) rows ld floats apart, the padding zeroed, from src. */
static void pack_rows(float *dst, size_t ld, const float *src, size_t rows, size_t n) {
    memset(dst, 0, rows * ld * sizeof(float));
    for (size_t r = 0; r < rows; r++)
        memcpy(dst + r * ld, src + r * n, n * sizeof(float));
}

/* The packed biases: every part that is simply added is summed into
 * bias; a reset_after GRU keeps h_n's own part apart (bhn). */
static void pack_bias(fl_layer *m, const float *bias, const float *rbias) {
    const size_t H = (size_t)m->desc.units, GH = (size_t)m->G * H;
    for (size_t j = 0; j < GH; j++) {
        const float b = bias ? bias[j] : 0.0f, rb = rbias ? rbias[j] : 0.0f;
        m->bias[j] = m->bhn && j >= 2 * H ? b : b + rb;
    }
    if (m->bhn)
        for (size_t j = 0; j < H; j++) m->bhn[j] = rbias ? rbias[2 * H + j] : 0.0f;
}

fl_status fl_layer_create(const fl_layer_desc *desc, const float *kernel,
                          const float *recurrent_kernel, const float *bias,
                          const float *recurrent_bias, fl_layer **out) {
    if (!out) return FL_ERR_ARG;
    *out = NULL;
    if (!desc || !kernel || !recurrent_kernel) return FL_ERR_ARG;
    fl_status st = check_desc(desc);
    if (st != FL_OK) return st;
    const size_t I = (size_t)desc->input_size, H = (size_t)desc->units;
    const int G = desc->kind == FL_LAYER_GRU ? 3 : 1;
    const size_t GH = (size_t)G * H, ld = fl_pad_stride(GH);
    const int split = desc->kind == FL_LAYER_GRU && desc->reset_after;
    size_t n_wx, n_wh;
    if (!fl_mul_size(I, ld, &n_wx) || !fl_mul_size(H, ld, &n_wh) || GH > INT32_MAX)
        return FL_ERR_OVERFLOW;
    if (!fl_all_finite(kernel, I * GH) || !fl_all_finite(recurrent_kernel, H * GH) ||
        (bias && !fl_all_finite(bias, GH)) ||
        (recurrent_bias && !fl_all_finite(recurrent_bias, GH)))
        return FL_ERR_NONFINITE;
    size_t total = 0, at_wx, at_wh, at_bias, at_bhn = 0;
    if (!fl_region_add(&total, n_wx, &at_wx) || !fl_region_add(&total, n_wh, &at_wh) ||
        !fl_region_add(&total, GH, &at_bias) ||
        (split && !fl_region_add(&total, H, &at_bhn)))
        return FL_ERR_OVERFLOW;
    fl_layer *m = (fl_layer *)calloc(1, sizeof *m);
    if (!m) return FL_ERR_NOMEM;
    char *block = fl_alloc_weights(total);
    if (!block) {
        free(m);
        return FL_ERR_NOMEM;
    }
    m->desc = *desc;
    m->desc.reset_after = split;
    m->G = G;
    m->ld = (int)ld;
    m->block = block;
    m->wx = (float *)(block + at_wx);
    m->wh = (float *)(block + at_wh);
    m->bias = (float *)(block + at_bias);
    m->bhn = split ? (float *)(block + at_bhn) : NULL;
    pack_rows(m->wx, ld, kernel, I, GH);
    pack_rows(m->wh, ld, recurrent_kernel, H, GH);
    pack_bias(m, bias, recurrent_bias);
    *out = m;
    return FL_OK;
}

void fl_layer_free(fl_layer *layer) {
    if (!layer) return;
    free(layer->block);
    free(layer);
}

fl_status fl_layer_get_desc(const fl_layer *layer, fl_layer_desc *out) {
    if (!layer || !out) return FL_ERR_ARG;
    *out = layer->desc;
    return FL_OK;
}

fl_status fl_layer_workspace_size(const fl_layer *layer, const fl_run *run,
                                  size_t *out_bytes) {
    if (!layer || !run || !out_bytes) return FL_ERR_ARG;
    fl_layer_plan plan;
    fl_status st = fl_layer_plan_make(layer, run, &plan);
    if (st != FL_OK) return st;
    *out_bytes = plan.total;
    return FL_OK;
}
