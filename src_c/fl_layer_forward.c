/*
 * fl_layer_forward.c - the forward pass of GRU and simple RNN layers.
 *
 * Per chunk of steps, the input projection of all its rows is one product
 * (x @ Wx into the gate buffer); per step, the recurrent product h @ Wh of
 * all rows is one product, then each valid row's gate loop updates its h.
 * A GRU without reset_after needs r before its candidate's product, so its
 * step is two products: h @ [U_z U_r], then (r * h) @ U_n.
 *
 * With threads, each thread (a part) owns a range of units: its columns of
 * every gate block, in the projections, the products and the gate loops
 * alike. The parts read the whole old h and write their units of the new
 * one into a second buffer, and meet at a barrier after each step (and
 * before a GRU's second product, which reads all of r * h). A part's
 * columns of Wh stay in its own core's cache from step to step.
 */
#include <string.h>

#include "fl_kernels.h"
#include "fl_layer_gates.h"
#include "fl_layer_plan.h"
#include "fl_pool.h"
#include "fl_run.h"

/* One call in progress, shared by its parts. */
typedef struct lpass {
    const fl_layer *L;
    const fl_blas *blas;
    const fl_run *run;
    const fl_layer_plan *plan;
    char *base;  /* the aligned workspace */
    float *h[2]; /* the state buffers: run->h, and h2 with parts */
    int masked, carry, parts;
    fl_barrier bar;
} lpass;

/* One part: a thread's range of units. */
typedef struct lpart {
    lpass *ps;
    fl_units u;
    uint8_t *seen; /* this part's copy of the rows' `seen` */
    int cur;       /* which of ps->h holds the current state */
    unsigned gen;  /* barrier generation */
} lpart;

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

/* Gate blocks g0 .. g1-1 of Z = A @ W restricted to the part's columns:
 * one product when the part has every unit, else one per block (in
 * reverse order when backward). W and Z point at column 0. */
static void part_product(const lpart *p, const float *A, int rows, int K, int lda,
                         const float *W, int g0, int g1, float *Z, int backward) {
    const fl_layer *L = p->ps->L;
    const int H = L->desc.units, ld = L->ld, GH = L->G * H;
    if (p->u.n == (size_t)H) {
        product(p->ps->blas, A, rows, K, lda, W + (size_t)g0 * H, ld, (g1 - g0) * H,
                Z + (size_t)g0 * H, GH, backward);
        return;
    }
    for (int q = g0; q < g1; q++) {
        const size_t col = (size_t)(backward ? g1 - 1 - (q - g0) : q) * H + p->u.u0;
        product(p->ps->blas, A, rows, K, lda, W + col, ld, (int)p->u.n, Z + col, GH,
                backward);
    }
}

/* The part's input projections of steps t0 .. t0+n-1 into G; row (s, b)
 * of the chunk lands at G + (s * *g_t + b * *g_b) * GH. */
static void project_chunk(const lpart *p, int t0, int n, float *G, size_t *g_t,
                          size_t *g_b) {
    const fl_layer *L = p->ps->L;
    const fl_run *run = p->ps->run;
    const int B = run->batch, T = run->steps, I = L->desc.input_size;
    const size_t GH = (size_t)L->G * (size_t)L->desc.units;
    if (!run->batch_major || B == 1) { /* the chunk's rows are contiguous */
        *g_t = (size_t)B, *g_b = 1;
        part_product(p, run->x + (size_t)t0 * B * I, n * B, I, I, L->wx, 0, L->G, G, 0);
        return;
    }
    *g_t = 1, *g_b = (size_t)n; /* a row's chunk steps are contiguous */
    for (int b = 0; b < B; b++)
        part_product(p, run->x + ((size_t)b * T + t0) * I, n, I, I, L->wx, 0, L->G,
                     G + (size_t)b * n * GH, 0);
}

static int row_runs(const lpass *ps, int t, int b) {
    return !ps->masked || fl_step_status(ps->run, t, b) == FL_STEP_VALID;
}

static void meet(lpart *p) {
    if (p->ps->parts > 1) fl_barrier_wait(&p->ps->bar, &p->gen, p->ps->parts);
}

/* The part's half of a GRU step without reset_after, up to the second
 * product: z, and r * h into rh, for every row. */
static void gru_first_half(lpart *p, int t, const float *Gt, size_t g_b, float *rec,
                           float *hn, int backward) {
    const lpass *ps = p->ps;
    const fl_layer *L = ps->L;
    const int B = ps->run->batch, H = L->desc.units, GH = L->G * H;
    float *rh = (float *)(ps->base + ps->plan->rh);
    for (int b = 0; b < B; b++) {
        float *rhb = rh + (size_t)b * H;
        if (row_runs(ps, t, b))
            fl_gru_row_gates(L, p->u, Gt + b * g_b * GH, rec + (size_t)b * GH,
                             hn + (size_t)b * H, rhb);
        else /* defined values: the product reads every row */
            memset(rhb + p->u.u0, 0, p->u.n * sizeof(float));
    }
    meet(p); /* the second product reads every part's r * h */
    part_product(p, rh, B, H, H, L->wh, 2, 3, rec, backward);
}

/* One step t (output index k) of the part's units: products, then the
 * gates of every valid row, then its columns of the outputs. Gt: the
 * step's input projections, rows g_b * GH floats apart. */
static void run_step(lpart *p, int t, int k, const float *Gt, size_t g_b,
                     int backward) {
    const lpass *ps = p->ps;
    const fl_layer *L = ps->L;
    const fl_run *run = ps->run;
    const int B = run->batch, H = L->desc.units, GH = L->G * H;
    const size_t u0 = p->u.u0;
    float *rec = (float *)(ps->base + ps->plan->rec);
    const float *hp = ps->h[p->cur];
    float *hn = ps->h[ps->parts > 1 ? p->cur ^ 1 : p->cur];
    if (hn != hp) /* the new state starts as the old (rows the mask skips) */
        for (int b = 0; b < B; b++)
            memcpy(hn + (size_t)b * H + u0, hp + (size_t)b * H + u0,
                   p->u.n * sizeof(float));
    const int two_phase = L->desc.kind == FL_LAYER_GRU && !L->desc.reset_after;
    part_product(p, hp, B, H, H, L->wh, 0, two_phase ? 2 : L->G, rec, backward);
    if (two_phase) gru_first_half(p, t, Gt, g_b, rec, hn, backward);
    for (int b = 0; b < B; b++) {
        if (!row_runs(ps, t, b)) continue; /* the state carries over */
        const float *gx = Gt + b * g_b * GH;
        float *gh = rec + (size_t)b * GH, *hb = hn + (size_t)b * H;
        if (L->desc.kind == FL_LAYER_SIMPLE)
            fl_simple_row(L, p->u, gx, gh, hb);
        else if (two_phase)
            fl_gru_row_update(L, p->u, gx, gh, hb);
        else
            fl_gru_row(L, p->u, gx, gh, hb);
    }
    fl_run_part_outputs(run, hn, t, k, H, u0, p->u.n, ps->masked, ps->carry, p->seen);
    meet(p); /* the next step reads every part's new state */
    if (ps->parts > 1) p->cur ^= 1;
}

static void forward_chunks(lpart *p) {
    const lpass *ps = p->ps;
    const fl_run *run = ps->run;
    const int T = run->steps, chunk = ps->plan->chunk;
    const int n_chunks = (T + chunk - 1) / chunk;
    const size_t GH = (size_t)ps->L->G * (size_t)ps->L->desc.units;
    float *G = (float *)(ps->base + ps->plan->gates);
    for (int ci = 0; ci < n_chunks; ci++) {
        const int t0 = (run->reverse ? n_chunks - 1 - ci : ci) * chunk;
        const int n = t0 + chunk <= T ? chunk : T - t0;
        size_t g_t, g_b;
        /* each part writes and reads only its own columns of G: no part
         * waits for another between chunks */
        project_chunk(p, t0, n, G, &g_t, &g_b);
        for (int s = 0; s < n; s++) {
            const int t = run->reverse ? t0 + n - 1 - s : t0 + s;
            const int k = run->reverse ? T - 1 - t : t; /* output index */
            /* alternate the direction the weights are read in: each step
             * starts on the columns the previous one read last */
            run_step(p, t, k, G + (size_t)(t - t0) * g_t * GH, g_b,
                     (k + run->sweep) & 1);
        }
    }
}

static void part_job(void *arg, int k) {
    forward_chunks((lpart *)arg + k);
}

/* The parts of the call: units split at multiples of 16 (whole vectors
 * for the gate loops), every part's seen starting as the run's. */
static void make_parts(lpass *ps, uint8_t *seen, lpart *parts) {
    const int H = ps->L->desc.units, B = ps->run->batch;
    uint8_t *copies = (uint8_t *)(ps->base + ps->plan->seens);
    for (int k = 0; k < ps->parts; k++) {
        const int u0 = fl_part_start(H, k, ps->parts, 1);
        const int u1 = fl_part_start(H, k + 1, ps->parts, 1);
        parts[k] = (lpart){.ps = ps, .u = {(size_t)u0, (size_t)(u1 - u0)}};
        parts[k].seen = k ? copies + (size_t)(k - 1) * B : seen;
        if (k) memcpy(parts[k].seen, seen, (size_t)B);
    }
}

/* Runs the parts; falls back to one part when their threads cannot start
 * (nothing has run then). Returns the buffer holding the final state. */
static float *run_parts(lpass *ps, uint8_t *seen) {
    lpart parts[FL_MAX_THREADS];
    if (ps->parts > 1) {
        fl_barrier_init(&ps->bar);
        make_parts(ps, seen, parts);
        if (fl_team_run(ps->run->pool, ps->parts, part_job, parts))
            return ps->h[parts[0].cur];
        ps->parts = 1;
    }
    make_parts(ps, seen, parts);
    forward_chunks(&parts[0]);
    return ps->h[0];
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
    lpass ps = {.L = L, .blas = blas, .run = run, .plan = &plan, .parts = plan.parts};
    ps.base = (char *)(((uintptr_t)work + (FL_ALIGN - 1)) & ~(uintptr_t)(FL_ALIGN - 1));
    ps.h[0] = run->h;
    ps.h[1] = plan.parts > 1 ? (float *)(ps.base + plan.h2) : run->h;
    ps.masked = run->mask != NULL || run->lengths != NULL;
    ps.carry = run->mask_output == FL_MASK_CARRY;
    uint8_t *seen = run->seen;
    if (!seen) {
        seen = (uint8_t *)(ps.base + plan.seen);
        memset(seen, 0, (size_t)run->batch);
    }
    const float *h = run_parts(&ps, seen);
    if (h != run->h)
        memcpy(run->h, h, (size_t)run->batch * (size_t)L->desc.units * sizeof(float));
    if (run->y_last) fl_run_write_last(run, L->desc.units, ps.masked, ps.carry, seen);
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
