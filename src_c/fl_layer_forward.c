/*
 * fl_layer_forward.c - the forward pass of GRU and simple RNN layers.
 *
 * Per chunk of steps, the input projection of all its rows is one product
 * (x @ Wx into the gate buffer); per step, the recurrent product h @ Wh of
 * all rows is one product, then each valid row's gate loop updates its h.
 * A GRU without reset_after needs r before its candidate's product, so its
 * step is two products: h @ [U_z U_r], then (r * h) @ U_n.
 */
#include <string.h>

#include "fl_kernels.h"
#include "fl_layer_gates.h"
#include "fl_layer_plan.h"
#include "fl_run.h"

/* One call in progress. */
typedef struct lpass {
    const fl_layer *L;
    const fl_blas *blas;
    const fl_run *run;
    const fl_layer_plan *plan;
    char *base; /* the aligned workspace */
    uint8_t *seen;
    int masked, carry;
} lpass;

/* Z(rows, n) = A(rows, K) @ W(K, n), row-major with leading dimensions
 * lda, ldw and ldz, on the kernel fl_plan_product picks for `rows`. */
static void product(const fl_blas *blas, const float *A, int rows, int K, int lda,
                    const float *W, int ldw, int n, float *Z, int ldz, int backward) {
    switch (fl_plan_product(rows)) {
    case FL_PRODUCT_MATVEC:
        for (int r = 0; r < rows; r++)
            fl_matvec(W, K, n, ldw, A + (size_t)r * lda, Z + (size_t)r * ldz, 0,
                      backward);
        return;
    case FL_PRODUCT_GEMM:
        fl_gemm(A, rows, K, lda, W, n, ldw, Z, ldz, 0);
        return;
    case FL_PRODUCT_BLAS: {
        /* row-major through column-major BLAS: Z^T = W^T A^T */
        float one = 1.0f, zero = 0.0f;
        char N = 'N';
        blas->sgemm(&N, &N, &n, &rows, &K, &one, (float *)W, &ldw, (float *)A, &lda,
                    &zero, Z, &ldz);
        return;
    }
    }
}

/* The input projection of steps t0 .. t0+n-1 into G; row (s, b) of the
 * chunk lands at G + (s * *g_t + b * *g_b) * GH. */
static void project_chunk(const lpass *ps, int t0, int n, float *G, size_t *g_t,
                          size_t *g_b) {
    const fl_layer *L = ps->L;
    const fl_run *run = ps->run;
    const int B = run->batch, T = run->steps, I = L->desc.input_size;
    const int GH = L->G * L->desc.units;
    if (!run->batch_major || B == 1) { /* the chunk's rows are contiguous */
        *g_t = (size_t)B, *g_b = 1;
        product(ps->blas, run->x + (size_t)t0 * B * I, n * B, I, I, L->wx, L->ld, GH, G,
                GH, 0);
        return;
    }
    *g_t = 1, *g_b = (size_t)n; /* a row's chunk steps are contiguous */
    for (int b = 0; b < B; b++)
        product(ps->blas, run->x + ((size_t)b * T + t0) * I, n, I, I, L->wx, L->ld, GH,
                G + (size_t)b * n * GH, GH, 0);
}

static int row_runs(const lpass *ps, int t, int b) {
    return !ps->masked || fl_step_status(ps->run, t, b) == FL_STEP_VALID;
}

/* One step t: products, then the gates of every valid row. Gt: the step's
 * input projections, rows g_b * GH floats apart. */
static void run_step(const lpass *ps, int t, const float *Gt, size_t g_b,
                     int backward) {
    const fl_layer *L = ps->L;
    const fl_run *run = ps->run;
    const int B = run->batch, H = L->desc.units, GH = L->G * H;
    float *rec = (float *)(ps->base + ps->plan->rec);
    float *h = run->h;
    const int two_phase = L->desc.kind == FL_LAYER_GRU && !L->desc.reset_after;
    product(ps->blas, h, B, H, H, L->wh, L->ld, two_phase ? 2 * H : GH, rec, GH,
            backward);
    if (two_phase) {
        float *rh = (float *)(ps->base + ps->plan->rh);
        for (int b = 0; b < B; b++) {
            float *rhb = rh + (size_t)b * H;
            if (row_runs(ps, t, b))
                fl_gru_row_gates(L, Gt + b * g_b * GH, rec + (size_t)b * GH,
                                 h + (size_t)b * H, rhb);
            else /* defined values: the product reads every row */
                memset(rhb, 0, (size_t)H * sizeof(float));
        }
        product(ps->blas, rh, B, H, H, L->wh + 2 * H, L->ld, H, rec + 2 * H, GH,
                backward);
    }
    for (int b = 0; b < B; b++) {
        if (!row_runs(ps, t, b)) continue; /* the state carries over */
        const float *gx = Gt + b * g_b * GH;
        float *gh = rec + (size_t)b * GH, *hb = h + (size_t)b * H;
        if (L->desc.kind == FL_LAYER_SIMPLE)
            fl_simple_row(L, gx, gh, hb);
        else if (two_phase)
            fl_gru_row_update(L, gx, gh, hb);
        else
            fl_gru_row(L, gx, gh, hb);
    }
}

static void forward_chunks(const lpass *ps) {
    const fl_run *run = ps->run;
    const int T = run->steps, chunk = ps->plan->chunk;
    const int n_chunks = (T + chunk - 1) / chunk;
    const size_t GH = (size_t)ps->L->G * (size_t)ps->L->desc.units;
    float *G = (float *)(ps->base + ps->plan->gates);
    for (int ci = 0; ci < n_chunks; ci++) {
        const int t0 = (run->reverse ? n_chunks - 1 - ci : ci) * chunk;
        const int n = t0 + chunk <= T ? chunk : T - t0;
        size_t g_t, g_b;
        project_chunk(ps, t0, n, G, &g_t, &g_b);
        for (int s = 0; s < n; s++) {
            const int t = run->reverse ? t0 + n - 1 - s : t0 + s;
            const int k = run->reverse ? T - 1 - t : t; /* output index */
            /* alternate the direction the weights are read in: each step
             * starts on the columns the previous one read last */
            run_step(ps, t, G + (size_t)(t - t0) * g_t * GH, g_b, (k + run->sweep) & 1);
            fl_run_step_outputs(run, t, k, ps->L->desc.units, ps->masked, ps->carry,
                                ps->seen);
        }
    }
}

static fl_status forward(const fl_layer *L, const fl_blas *blas, const fl_run *run,
                         void *work, size_t work_bytes) {
    if (!L || !work) return FL_ERR_ARG;
    fl_status st = fl_run_check(blas, run, 0);
    if (st != FL_OK) return st;
    fl_layer_plan plan;
    st = fl_layer_plan_make(L, run, &plan);
    if (st != FL_OK) return st;
    if (work_bytes < plan.total) return FL_ERR_ARG;
    if (run->check_finite && !fl_run_x_finite(run, (size_t)L->desc.input_size))
        return FL_ERR_NONFINITE;
    lpass ps = {.L = L, .blas = blas, .run = run, .plan = &plan};
    ps.base = (char *)(((uintptr_t)work + (FL_ALIGN - 1)) & ~(uintptr_t)(FL_ALIGN - 1));
    ps.masked = run->mask != NULL || run->lengths != NULL;
    ps.carry = run->mask_output == FL_MASK_CARRY;
    ps.seen = run->seen;
    if (!ps.seen) {
        ps.seen = (uint8_t *)(ps.base + plan.seen);
        memset(ps.seen, 0, (size_t)run->batch);
    }
    forward_chunks(&ps);
    if (run->y_last)
        fl_run_write_last(run, L->desc.units, ps.masked, ps.carry, ps.seen);
    return FL_OK;
}

/* Denormals are flushed to zero inside (fl_ftz_enter). */
fl_status fl_layer_forward(const fl_layer *L, const fl_blas *blas, const fl_run *run,
                           void *work, size_t work_bytes) {
    const unsigned int saved = fl_ftz_enter();
    fl_status st = forward(L, blas, run, work, work_bytes);
    fl_ftz_leave(saved);
    return st;
}
