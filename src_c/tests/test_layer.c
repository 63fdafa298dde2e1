/*
 * test_layer.c - GRU and simple RNN layers (fl_layer_*) against a naive
 * double-precision reference written from the equations in fastlstm.h,
 * over random shapes, options, masks, lengths and chunkings; and their
 * argument errors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "naive_blas.h"
#include "test_util.h"

typedef struct lconfig {
    fl_layer_kind kind;
    int I, H, B, T, reset_after;
    fl_activation act, ract;
    int bias, rbias, reverse, masked, lengths, zero_out, batch_major, chunk;
    int with_seen, with_y;
    int threads;  /* fl_run.threads */
    fl_pool *pool; /* or NULL: threads start per call */
} lconfig;

enum { VALID, MASKED, PAST };

static int status_of(const lconfig *cf, const unsigned char *mask, const int *len,
                     int t, int b) {
    if (len && t >= len[b]) return PAST;
    size_t i = cf->batch_major ? (size_t)b * cf->T + t : (size_t)t * cf->B + b;
    if (mask && !mask[i]) return MASKED;
    return VALID;
}

/* One row's step in double: h (H) updated from x (I). */
static void ref_step(const lconfig *cf, const float *W, const float *U,
                     const float *bx, const float *bh, const float *x, double *h,
                     double *scratch) {
    const int I = cf->I, H = cf->H, G = cf->kind == FL_LAYER_GRU ? 3 : 1;
    double *gx = scratch, *gh = scratch + G * H, *rh = scratch + 2 * G * H;
    for (int j = 0; j < G * H; j++) {
        double sx = bx ? bx[j] : 0, sh = bh ? bh[j] : 0;
        for (int i = 0; i < I; i++) sx += (double)x[i] * W[(size_t)i * G * H + j];
        for (int i = 0; i < H; i++) sh += h[i] * U[(size_t)i * G * H + j];
        gx[j] = sx, gh[j] = sh;
    }
    if (cf->kind == FL_LAYER_SIMPLE) {
        for (int j = 0; j < H; j++) h[j] = act_ref(cf->act, gx[j] + gh[j]);
        return;
    }
    for (int j = 0; j < H; j++) rh[j] = act_ref(cf->ract, gx[H + j] + gh[H + j]) * h[j];
    double *hn = rh + H;
    for (int j = 0; j < H; j++) {
        double r = act_ref(cf->ract, gx[H + j] + gh[H + j]), s = bh ? bh[2 * H + j] : 0;
        if (cf->reset_after) {
            hn[j] = act_ref(cf->act, gx[2 * H + j] + r * gh[2 * H + j]);
            continue;
        }
        for (int i = 0; i < H; i++) s += rh[i] * U[(size_t)i * 3 * H + 2 * H + j];
        hn[j] = act_ref(cf->act, gx[2 * H + j] + s);
    }
    for (int j = 0; j < H; j++) {
        double z = act_ref(cf->ract, gx[j] + gh[j]);
        h[j] = z * h[j] + (1 - z) * hn[j];
    }
}

/* The reference run: h (B, H) in/out, y (T, B, H) in the run's layout and
 * processing order, ylast (B, H). */
static void reference(const lconfig *cf, const float *W, const float *U,
                      const float *bx, const float *bh, const float *x,
                      const unsigned char *mask, const int *len, double *h, double *y,
                      double *ylast) {
    const int I = cf->I, H = cf->H, B = cf->B, T = cf->T;
    double *scratch = calloc((size_t)8 * H, sizeof(double));
    int *seen = calloc((size_t)B, sizeof(int));
    const int carry = !cf->zero_out;
    for (int s = 0; s < T; s++) {
        const int t = cf->reverse ? T - 1 - s : s;
        for (int b = 0; b < B; b++) {
            const int st = status_of(cf, mask, len, t, b);
            size_t xi = cf->batch_major ? (size_t)b * T + t : (size_t)t * B + b;
            size_t yi = cf->batch_major ? (size_t)b * T + s : (size_t)s * B + b;
            if (st == VALID) {
                ref_step(cf, W, U, bx, bh, x + xi * I, h + (size_t)b * H, scratch);
                seen[b] = 1;
            }
            const int show = st == VALID || (st == MASKED && carry && seen[b]);
            for (int j = 0; j < H; j++) y[yi * H + j] = show ? h[(size_t)b * H + j] : 0;
        }
    }
    const int t_last = cf->reverse ? 0 : T - 1;
    for (int b = 0; b < B; b++) {
        const int st = status_of(cf, mask, len, t_last, b);
        const int show = st == VALID || (st == MASKED && carry && seen[b]) ||
                         (st == PAST && seen[b]);
        for (int j = 0; j < H; j++) ylast[(size_t)b * H + j] = show ? h[(size_t)b * H + j] : 0;
    }
    free(scratch);
    free(seen);
}

static float *random_floats(size_t n, float scale) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t k = 0; k < n; k++) v[k] = nrand(scale);
    return v;
}

static void run_lconfig(const lconfig *cf) {
    const int I = cf->I, H = cf->H, B = cf->B, T = cf->T;
    const int G = cf->kind == FL_LAYER_GRU ? 3 : 1;
    /* well-conditioned weights: errors do not grow over the steps */
    float *W = random_floats((size_t)I * G * H, 1.0f / sqrtf((float)I));
    float *U = random_floats((size_t)H * G * H, 1.0f / sqrtf((float)H));
    float *bx = cf->bias ? random_floats((size_t)G * H, 0.5f) : NULL;
    float *bh = cf->rbias ? random_floats((size_t)G * H, 0.5f) : NULL;
    float *x = random_floats((size_t)T * B * I, 1.0f);
    float *h = random_floats((size_t)B * H, 0.5f);
    unsigned char *mask = malloc((size_t)T * B);
    int *len = malloc(sizeof(int) * B);
    for (size_t k = 0; k < (size_t)T * B; k++) mask[k] = urand() < 0.7;
    for (int b = 0; b < B; b++) len[b] = (int)(urand() * (T + 1));
    double *hr = malloc(sizeof(double) * B * H), *yr = malloc(sizeof(double) * T * B * H);
    double *ylr = malloc(sizeof(double) * B * H);
    for (int k = 0; k < B * H; k++) hr[k] = h[k];
    float *y = malloc(sizeof(float) * T * B * H), *ylast = malloc(sizeof(float) * B * H);
    unsigned char *seen = calloc((size_t)B, 1);

    fl_layer_desc d = {cf->kind, I, H, cf->act, cf->ract, cf->reset_after};
    fl_layer *L = NULL;
    fl_status st = fl_layer_create(&d, W, U, bx, bh, &L);
    CHECK(st == FL_OK, "layer create: %s", fl_status_message(st));
    if (st != FL_OK) goto done;
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    fl_run run = {.batch = B, .steps = T, .batch_major = cf->batch_major, .x = x,
                  .mask = cf->masked ? mask : NULL, .lengths = cf->lengths ? len : NULL,
                  .reverse = cf->reverse,
                  .mask_output = cf->zero_out ? FL_MASK_ZERO : FL_MASK_CARRY,
                  .check_finite = 1, .h = h, .seen = cf->with_seen ? seen : NULL,
                  .y = cf->with_y ? y : NULL, .y_last = ylast,
                  .chunk_steps = cf->chunk, .threads = cf->threads, .pool = cf->pool};
    size_t wb = 0;
    st = fl_layer_workspace_size(L, &run, &wb);
    CHECK(st == FL_OK, "layer workspace: %s", fl_status_message(st));
    void *work = aligned_alloc(64, (wb + 63) / 64 * 64);
#ifdef FL_COUNT_MALLOC
    long before = n_allocs;
#endif
    st = fl_layer_forward(L, &blas, &run, work, wb);
#ifdef FL_COUNT_MALLOC
    /* threads started per call may allocate (the C library's thread
     * records); a pool's workers never do */
    CHECK(n_allocs == before || (cf->threads > 1 && !cf->pool),
          "layer forward allocated %ld times", n_allocs - before);
#endif
    CHECK(st == FL_OK, "layer forward: %s", fl_status_message(st));
    reference(cf, W, U, bx, bh, x, cf->masked ? mask : NULL, cf->lengths ? len : NULL,
              hr, yr, ylr);
    double err = 0;
    if (cf->with_y)
        for (size_t k = 0; k < (size_t)T * B * H; k++) err = fmax(err, fabs(y[k] - yr[k]));
    for (int k = 0; k < B * H; k++) err = fmax(err, fabs(h[k] - hr[k]));
    for (int k = 0; k < B * H; k++) err = fmax(err, fabs(ylast[k] - ylr[k]));
    const int loose = cf->act == FL_ACT_EXPONENTIAL || cf->act == FL_ACT_RELU ||
                      cf->act == FL_ACT_LINEAR || cf->act == FL_ACT_SELU ||
                      cf->act == FL_ACT_ELU || cf->act == FL_ACT_SOFTPLUS;
    CHECK(err < (loose ? 1e-4 : 2e-5),
          "kind=%d reset_after=%d I=%d H=%d B=%d T=%d act=%d ract=%d rev=%d mask=%d "
          "len=%d zero=%d bm=%d chunk=%d threads=%d pool=%d: max err %.3g",
          cf->kind, cf->reset_after, I, H, B, T, cf->act, cf->ract, cf->reverse,
          cf->masked, cf->lengths, cf->zero_out, cf->batch_major, cf->chunk,
          cf->threads, cf->pool != NULL, err);
    free(work);
    fl_layer_free(L);
done:
    free(W), free(U), free(bx), free(bh), free(x), free(h), free(mask), free(len);
    free(hr), free(yr), free(ylr), free(y), free(ylast), free(seen);
}

static void test_layer_configs(void) {
    static const int widths[] = {1, 5, 16, 17, 33, 64, 100, 130};
    fl_pool *pool = NULL;
    CHECK(fl_pool_create(4, &pool) == FL_OK, "pool create");
    for (int rep = 0; rep < 200; rep++) {
        lconfig cf;
        memset(&cf, 0, sizeof cf);
        cf.kind = urand() < 0.7 ? FL_LAYER_GRU : FL_LAYER_SIMPLE;
        cf.reset_after = urand() < 0.5;
        cf.I = 1 + (int)(urand() * 9);
        cf.H = widths[(int)(urand() * 8)];
        const double u = urand();
        cf.B = u < 0.4 ? 1 : u < 0.7 ? 2 + (int)(urand() * 4) : u < 0.97 ? 6 + (int)(urand() * 20) : 300;
        cf.T = 1 + (int)(urand() * (cf.B > 100 ? 3 : 12));
        if (cf.B > 100 && cf.H > 17) cf.H = 17; /* keeps valgrind runs short */
        cf.act = urand() < 0.6 ? FL_ACT_TANH : (fl_activation)(int)(urand() * FL_ACT_COUNT);
        cf.ract = urand() < 0.6 ? FL_ACT_SIGMOID : (fl_activation)(int)(urand() * 4);
        if (cf.act == FL_ACT_EXPONENTIAL || cf.act == FL_ACT_RELU ||
            cf.act == FL_ACT_LINEAR || cf.act == FL_ACT_SELU)
            cf.T = cf.T > 3 ? 3 : cf.T; /* unbounded: keep the values small */
        cf.bias = urand() < 0.8;
        cf.rbias = urand() < 0.7;
        cf.reverse = urand() < 0.3;
        cf.masked = urand() < 0.4;
        cf.lengths = urand() < 0.3;
        cf.zero_out = urand() < 0.5;
        cf.batch_major = urand() < 0.5;
        cf.chunk = urand() < 0.4 ? 1 + (int)(urand() * 4) : urand() < 0.5 ? FL_CHUNK_AUTO : 0;
        cf.with_seen = urand() < 0.5;
        cf.with_y = urand() < 0.8;
        /* threads split units 32 or more at a time: H >= 64 takes them */
        cf.threads = urand() < 0.4 ? 2 + (int)(urand() * 3) : 1;
        cf.pool = cf.threads > 1 && urand() < 0.5 ? pool : NULL;
        run_lconfig(&cf);
    }
    fl_pool_free(pool);
}

static void test_layer_errors(void) {
    float w[12] = {0}, u[36] = {0}, x[4] = {0}, h[3] = {0}, bad[12] = {0};
    fl_layer_desc d = {FL_LAYER_GRU, 1, 3, FL_ACT_TANH, FL_ACT_SIGMOID, 1};
    fl_layer *L = NULL;
    CHECK(fl_layer_create(NULL, w, u, NULL, NULL, &L) == FL_ERR_ARG, "NULL desc");
    CHECK(fl_layer_create(&d, NULL, u, NULL, NULL, &L) == FL_ERR_ARG, "NULL kernel");
    CHECK(fl_layer_create(&d, w, u, NULL, NULL, NULL) == FL_ERR_ARG, "NULL out");
    fl_layer_desc e = d;
    e.kind = (fl_layer_kind)7;
    CHECK(fl_layer_create(&e, w, u, NULL, NULL, &L) == FL_ERR_ARG, "bad kind");
    e = d, e.activation = (fl_activation)99;
    CHECK(fl_layer_create(&e, w, u, NULL, NULL, &L) == FL_ERR_UNSUPPORTED, "bad act");
    e = d, e.units = 0;
    CHECK(fl_layer_create(&e, w, u, NULL, NULL, &L) == FL_ERR_SHAPE, "zero units");
    e = d, e.input_size = FL_MAX_DIM + 1;
    CHECK(fl_layer_create(&e, w, u, NULL, NULL, &L) == FL_ERR_OVERFLOW, "huge input");
    bad[5] = NAN;
    CHECK(fl_layer_create(&d, w, u, bad, NULL, &L) == FL_ERR_NONFINITE, "NaN bias");
    CHECK(L == NULL, "no layer after a failed create");
    fl_status st = fl_layer_create(&d, w, u, NULL, NULL, &L);
    CHECK(st == FL_OK && L, "create");
    if (!L) return;
    fl_layer_desc got;
    CHECK(fl_layer_get_desc(L, &got) == FL_OK && got.units == 3 && got.reset_after == 1,
          "get_desc");
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    int len[1] = {5};
    fl_run run = {.batch = 1, .steps = 4, .x = x, .h = h, .check_finite = 1};
    size_t wb = 0;
    CHECK(fl_layer_workspace_size(L, &run, &wb) == FL_OK && wb > 0, "workspace");
    void *work = aligned_alloc(64, (wb + 63) / 64 * 64);
    CHECK(fl_layer_forward(L, &blas, &run, work, wb - 64) == FL_ERR_ARG, "small work");
    CHECK(fl_layer_forward(L, NULL, &run, work, wb) == FL_ERR_ARG, "NULL blas");
    run.lengths = len;
    CHECK(fl_layer_forward(L, &blas, &run, work, wb) == FL_ERR_SHAPE, "long length");
    run.lengths = NULL;
    x[2] = INFINITY;
    CHECK(fl_layer_forward(L, &blas, &run, work, wb) == FL_ERR_NONFINITE, "inf x");
    run.check_finite = 0;
    CHECK(fl_layer_forward(L, &blas, &run, work, wb) == FL_OK, "unchecked inf x");
    run.steps = 0;
    CHECK(fl_layer_workspace_size(L, &run, &wb) == FL_ERR_SHAPE, "zero steps");
    free(work);
    fl_layer_free(L);
    fl_layer_free(NULL);
}

/* The plan takes threads only where parts of 32+ units fit: its workspace
 * then holds the second state buffer. */
static void test_layer_thread_plan(void) {
    const int I = 3, H = 128;
    float *W = random_floats((size_t)I * 3 * H, 0.1f), *U = random_floats((size_t)H * 3 * H, 0.1f);
    fl_layer_desc d = {FL_LAYER_GRU, I, H, FL_ACT_TANH, FL_ACT_SIGMOID, 1};
    fl_layer *L = NULL;
    CHECK(fl_layer_create(&d, W, U, NULL, NULL, &L) == FL_OK, "create");
    fl_run run = {.batch = 200, .steps = 1, .threads = 1};
    size_t one = 0, two = 0, eight = 0;
    fl_layer_workspace_size(L, &run, &one);
    run.threads = 2;
    fl_layer_workspace_size(L, &run, &two);
    run.threads = 8; /* at most H / 32 = 4 parts */
    fl_layer_workspace_size(L, &run, &eight);
    CHECK(two >= one + 200 * H * sizeof(float), "2 threads: workspace %zu vs %zu", two,
          one);
    /* the other parts' copies of seen: 1 (2 threads) or 3 (8) rows of 200 */
    CHECK(eight >= two + 300 && eight < two + 600, "8 threads: workspace %zu vs %zu",
          eight, two);
    fl_layer_free(L);
    free(W), free(U);
}

void test_layers(void) {
    test_layer_thread_plan();
    test_layer_configs();
    test_layer_errors();
}
