/*
 * fl_chain.c - one streaming step through a chain of stages (a model's
 * layers run one time step at a time): masking, recurrent layers, dense
 * layers, activations, softmax, per-feature affine maps and layer
 * normalization.
 */
#include <math.h>
#include <string.h>

#include "fl_gates.h"
#include "fl_packed.h"

/* State sizes (floats) of a recurrent stage: h, then c (LSTM only). */
static fl_status state_sizes(const fl_stage *s, int batch, size_t *h, size_t *c) {
    *h = *c = 0;
    if (s->kind == FL_STAGE_LSTM) {
        fl_lstm_desc d;
        fl_status st = fl_lstm_get_desc(s->lstm, &d);
        if (st != FL_OK) return st;
        const int R = d.proj_size ? d.proj_size : d.units;
        if (R != s->out_size) return FL_ERR_SHAPE;
        *h = (size_t)batch * (size_t)R;
        *c = (size_t)batch * (size_t)d.units;
        return d.input_size == s->in_size ? FL_OK : FL_ERR_SHAPE;
    }
    fl_layer_desc d;
    fl_status st = fl_layer_get_desc(s->layer, &d);
    if (st != FL_OK) return st;
    *h = (size_t)batch * (size_t)d.units;
    return d.input_size == s->in_size && d.units == s->out_size ? FL_OK : FL_ERR_SHAPE;
}

static int recurrent(const fl_stage *s) {
    return s->kind == FL_STAGE_LSTM || s->kind == FL_STAGE_LAYER;
}

static fl_status check_recurrent(const fl_stage *s, int batch) {
    const fl_run *r = s->run;
    if (s->kind == FL_STAGE_LSTM ? !s->lstm : !s->layer) return FL_ERR_ARG;
    if (!r || !r->h || (s->kind == FL_STAGE_LSTM && !r->c) || !s->work)
        return FL_ERR_ARG;
    if (r->batch != batch) return FL_ERR_SHAPE;
    return FL_OK;
}

/* Checks one stage against the features it receives. */
static fl_status check_stage(const fl_stage *s, int batch, int features, int masking) {
    if (s->in_size != features || s->in_size < 1 || s->out_size < 1 ||
        s->out_size > FL_MAX_DIM)
        return FL_ERR_SHAPE;
    switch (s->kind) {
    case FL_STAGE_MASKING:
    case FL_STAGE_SOFTMAX:
        return s->out_size == s->in_size ? FL_OK : FL_ERR_SHAPE;
    case FL_STAGE_LSTM:
    case FL_STAGE_LAYER:
        if (s->masked && !masking) return FL_ERR_ARG;
        return check_recurrent(s, batch);
    case FL_STAGE_DENSE:
        if (!s->kernel) return FL_ERR_ARG;
        return fl_valid_activation(s->activation) ? FL_OK : FL_ERR_UNSUPPORTED;
    case FL_STAGE_ACTIVATION:
        if (s->out_size != s->in_size) return FL_ERR_SHAPE;
        return fl_valid_activation(s->activation) ? FL_OK : FL_ERR_UNSUPPORTED;
    case FL_STAGE_AFFINE:
        if (s->out_size != s->in_size) return FL_ERR_SHAPE;
        return s->scale && s->shift ? FL_OK : FL_ERR_ARG;
    case FL_STAGE_LAYER_NORM:
        if (s->out_size != s->in_size) return FL_ERR_SHAPE;
        return s->epsilon >= 0.0f && s->epsilon <= 1e30f ? FL_OK : FL_ERR_ARG;
    case FL_STAGE_EMBEDDING:
        if (s->in_size != 1 || s->vocab < 1 || s->vocab > (1 << 24))
            return FL_ERR_SHAPE;
        return s->kernel ? FL_OK : FL_ERR_ARG;
    }
    return FL_ERR_UNSUPPORTED;
}

/* The workspace layout: two (batch, widest) buffers, the mask, then every
 * recurrent stage's h, c and seen, copied before the step. */
typedef struct chain_layout {
    size_t at_a, at_b, at_mask, at_saved, total;
    size_t width;
} chain_layout;

static fl_status layout(const fl_stage *stages, int n, int batch, chain_layout *L) {
    if (!stages || n < 1 || batch < 1 || batch > FL_MAX_DIM) return FL_ERR_ARG;
    size_t width = 0, saved = 0;
    int features = stages[0].in_size, masking = 0;
    for (int k = 0; k < n; k++) {
        const fl_stage *s = &stages[k];
        fl_status st = check_stage(s, batch, features, masking);
        if (st != FL_OK) return st;
        masking |= s->kind == FL_STAGE_MASKING ||
                   (s->kind == FL_STAGE_EMBEDDING && s->mask_zero);
        features = s->out_size;
        if ((size_t)s->out_size > width) width = (size_t)s->out_size;
        if (recurrent(s)) {
            size_t h, c;
            st = state_sizes(s, batch, &h, &c);
            if (st != FL_OK) return st;
            saved += h + c + (size_t)batch; /* seen: a float's room per row */
        }
    }
    size_t cells;
    if (!fl_mul_size(width, (size_t)batch, &cells)) return FL_ERR_OVERFLOW;
    L->width = width;
    L->total = 0;
    if (!fl_region_add(&L->total, cells, &L->at_a) ||
        !fl_region_add(&L->total, cells, &L->at_b) ||
        !fl_region_add(&L->total, (size_t)batch, &L->at_mask) ||
        !fl_region_add(&L->total, saved, &L->at_saved))
        return FL_ERR_OVERFLOW;
    return FL_OK;
}

fl_status fl_chain_workspace_size(const fl_stage *stages, int n_stages, int batch,
                                  size_t *out_bytes) {
    if (!out_bytes) return FL_ERR_ARG;
    chain_layout L;
    fl_status st = layout(stages, n_stages, batch, &L);
    if (st != FL_OK) return st;
    if (L.total > SIZE_MAX - FL_ALIGN) return FL_ERR_OVERFLOW;
    *out_bytes = L.total + FL_ALIGN; /* room to align the start */
    return FL_OK;
}

/* Copies every recurrent state into (save = 1) or back from the workspace. */
static void keep_states(const fl_stage *stages, int n, int batch, char *saved,
                        int save) {
    for (int k = 0; k < n; k++) {
        const fl_stage *s = &stages[k];
        if (!recurrent(s)) continue;
        size_t h, c;
        state_sizes(s, batch, &h, &c);
        void *parts[3] = {s->run->h, s->run->c, s->run->seen};
        const size_t bytes[3] = {h * sizeof(float), c * sizeof(float),
                                 s->run->seen ? (size_t)batch : 0};
        for (int p = 0; p < 3; p++) {
            if (!bytes[p]) continue;
            if (save)
                memcpy(saved, parts[p], bytes[p]);
            else
                memcpy(parts[p], saved, bytes[p]);
            saved += bytes[p];
        }
    }
}

static void masking(const fl_stage *s, int batch, const float *x, float *y,
                    uint8_t *mask) {
    const size_t F = (size_t)s->in_size;
    for (int b = 0; b < batch; b++) {
        const float *xr = x + (size_t)b * F;
        float *yr = y + (size_t)b * F;
        int valid = 0;
        for (size_t j = 0; j < F && !valid; j++) valid = xr[j] != s->mask_value;
        mask[b] = (uint8_t)valid;
        for (size_t j = 0; j < F; j++)
            yr[j] = valid ? xr[j] : s->keep_nan ? xr[j] * 0.0f : 0.0f;
    }
}

static fl_status embedding(const fl_stage *s, int batch, const float *x, float *y,
                           uint8_t *mask) {
    const size_t D = (size_t)s->out_size;
    for (int b = 0; b < batch; b++) {
        const float v = x[b];
        if (!(v > -1.0f && v < (float)s->vocab)) return FL_ERR_ARG; /* NaN too */
        const size_t id = (size_t)(long long)v;
        memcpy(y + (size_t)b * D, s->kernel + id * D, D * sizeof(float));
        if (s->mask_zero) mask[b] = id != 0;
    }
    return FL_OK;
}

/* Each row normalized over its features, in double. */
static void layer_norm(const fl_stage *s, int batch, const float *x, float *y) {
    const size_t F = (size_t)s->in_size;
    for (int b = 0; b < batch; b++) {
        const float *xr = x + (size_t)b * F;
        float *yr = y + (size_t)b * F;
        double mean = 0.0, sq = 0.0;
        if (!s->rms_scaling) {
            for (size_t j = 0; j < F; j++) mean += xr[j];
            mean /= (double)F;
        }
        for (size_t j = 0; j < F; j++) sq += (xr[j] - mean) * (xr[j] - mean);
        const double inv = 1.0 / sqrt(sq / (double)F + (double)s->epsilon);
        for (size_t j = 0; j < F; j++) {
            double v = (xr[j] - mean) * inv;
            if (s->scale) v *= s->scale[j];
            if (s->shift) v += s->shift[j];
            yr[j] = (float)v;
        }
    }
}

static fl_status step_recurrent(const fl_stage *s, const fl_blas *blas, const float *x,
                                float *y, const uint8_t *mask) {
    fl_run *r = s->run;
    r->steps = 1;
    r->batch_major = 1;
    r->x = x;
    r->mask = s->masked ? mask : NULL;
    r->lengths = NULL;
    r->reverse = 0;
    r->chunk_steps = 0;
    r->y = s->sequence_output ? y : NULL;
    r->y_last = s->sequence_output ? NULL : y;
    fl_status st = s->kind == FL_STAGE_LSTM
                       ? fl_lstm_forward(s->lstm, blas, r, s->work, s->work_bytes)
                       : fl_layer_forward(s->layer, blas, r, s->work, s->work_bytes);
    if (st != FL_OK) return st;
    r->sweep ^= 1; /* the next step starts on the weights this one read last */
    if (r->keep_copies == 1) r->keep_copies = 2;
    return FL_OK;
}

static void dense(const fl_stage *s, const fl_blas *blas, int batch, const float *x,
                  float *y) {
    int m = s->out_size, nb = batch, k = s->in_size;
    float one = 1.0f, zero = 0.0f;
    char no = 'N';
    /* column-major: y^T (O, B) = kernel^T (O, I) @ x^T (I, B) */
    blas->sgemm(&no, &no, &m, &nb, &k, &one, (float *)s->kernel, &m, (float *)x, &k,
                &zero, y, &m);
    const size_t O = (size_t)s->out_size;
    if (s->bias)
        for (int b = 0; b < batch; b++)
            for (size_t j = 0; j < O; j++) y[(size_t)b * O + j] += s->bias[j];
    if (s->activation != FL_ACT_LINEAR) fl_act_apply(s->activation, y, O * batch);
}

static void softmax(int batch, size_t F, const float *x, float *y) {
    for (int b = 0; b < batch; b++) {
        const float *xr = x + (size_t)b * F;
        float *yr = y + (size_t)b * F;
        float top = xr[0];
        for (size_t j = 1; j < F; j++) top = xr[j] > top ? xr[j] : top;
        for (size_t j = 0; j < F; j++) yr[j] = xr[j] - top;
        fl_act_apply(FL_ACT_EXPONENTIAL, yr, F);
        double sum = 0.0;
        for (size_t j = 0; j < F; j++) sum += yr[j];
        for (size_t j = 0; j < F; j++) yr[j] = (float)(yr[j] / sum);
    }
}

static fl_status run_stage(const fl_stage *s, const fl_blas *blas, int batch,
                           const float *x, float *y, uint8_t *mask) {
    const size_t F = (size_t)s->in_size, n = F * (size_t)batch;
    switch (s->kind) {
    case FL_STAGE_MASKING:
        masking(s, batch, x, y, mask);
        return FL_OK;
    case FL_STAGE_LSTM:
    case FL_STAGE_LAYER:
        return step_recurrent(s, blas, x, y, mask);
    case FL_STAGE_DENSE:
        dense(s, blas, batch, x, y);
        return FL_OK;
    case FL_STAGE_ACTIVATION:
        memcpy(y, x, n * sizeof(float));
        fl_act_apply(s->activation, y, n);
        return FL_OK;
    case FL_STAGE_SOFTMAX:
        softmax(batch, F, x, y);
        return FL_OK;
    case FL_STAGE_AFFINE:
        for (size_t i = 0; i < n; i++) y[i] = x[i] * s->scale[i % F] + s->shift[i % F];
        return FL_OK;
    case FL_STAGE_EMBEDDING:
        return embedding(s, batch, x, y, mask);
    case FL_STAGE_LAYER_NORM:
        layer_norm(s, batch, x, y);
        return FL_OK;
    }
    return FL_ERR_UNSUPPORTED;
}

fl_status fl_chain_step(const fl_stage *stages, int n_stages, const fl_blas *blas,
                        int batch, const float *x, float *out, void *work,
                        size_t work_bytes, int *failed_stage) {
    if (failed_stage) *failed_stage = -1;
    if (!blas || !blas->sgemm || !x || !out || !work) return FL_ERR_ARG;
    chain_layout L;
    fl_status st = layout(stages, n_stages, batch, &L);
    if (st != FL_OK) return st;
    char *base =
        (char *)(((uintptr_t)work + (FL_ALIGN - 1)) & ~(uintptr_t)(FL_ALIGN - 1));
    if (work_bytes < L.total + (size_t)(base - (char *)work)) return FL_ERR_ARG;
    float *bufs[2] = {(float *)(base + L.at_a), (float *)(base + L.at_b)};
    uint8_t *mask = (uint8_t *)(base + L.at_mask);
    keep_states(stages, n_stages, batch, base + L.at_saved, 1);
    const float *cur = x;
    for (int k = 0; k < n_stages; k++) {
        float *y = k == n_stages - 1 ? out : bufs[k & 1];
        st = run_stage(&stages[k], blas, batch, cur, y, mask);
        if (st != FL_OK) {
            keep_states(stages, n_stages, batch, base + L.at_saved, 0);
            if (failed_stage) *failed_stage = k;
            return st;
        }
        cur = y;
    }
    return FL_OK;
}
