/*
 * test_core.c - C-only tests of the fastlstm core against a naive double
 * precision LSTM written from the equations, with the naive BLAS.
 *
 * Build (tests/test_c_core.py does this, also with -fsanitize=address,undefined):
 *   cc -std=c11 -O1 -g -Isrc_c src_c/fl_*.c src_c/tests/[a-z]*.c -lm
 *      -DFL_COUNT_MALLOC -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc,--wrap=pthread_create
 * Prints "N passed, M failed" and exits non-zero on any failure.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastlstm.h"
#include "fl_amx.h"
#include "fl_batch.h"
#include "fl_gates.h"
#include "naive_blas.h"
#include "test_util.h"

int n_passed = 0, n_failed = 0;

/* ---- allocation counting (active when linked with --wrap) ---- */
#ifdef FL_COUNT_MALLOC
long n_allocs = 0;
void *__real_malloc(size_t);
void *__real_calloc(size_t, size_t);
void *__real_realloc(void *, size_t);
void *__real_aligned_alloc(size_t, size_t);
void *__wrap_malloc(size_t n) { n_allocs++; return __real_malloc(n); }
void *__wrap_calloc(size_t a, size_t b) { n_allocs++; return __real_calloc(a, b); }
void *__wrap_realloc(void *p, size_t n) { n_allocs++; return __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { n_allocs++; return __real_aligned_alloc(a, n); }
/* thread starts that fail on demand (--wrap=pthread_create) */
static int fail_thread_starts = 0;
int __real_pthread_create(pthread_t *, const pthread_attr_t *, void *(*)(void *),
                          void *);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*f)(void *), void *arg) {
    if (fail_thread_starts) return EAGAIN;
    return __real_pthread_create(t, a, f, arg);
}
#endif

/* ---- deterministic random numbers (no global state in the core; this
 * generator is test-local) ---- */
static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
double urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
float nrand(float scale) { return (float)((urand() * 2.0 - 1.0) * scale); }

/* A tanh/sigmoid layer without bias from random weights: kernel entries
 * within +-0.3, then recurrent ones within +-u_scale. */
static fl_lstm *random_layer(int I, int H, float u_scale) {
    float *W = malloc(sizeof(float) * I * 4 * H), *U = malloc(sizeof(float) * H * 4 * H);
    for (int k = 0; k < I * 4 * H; k++) W[k] = nrand(0.3f);
    for (int k = 0; k < H * 4 * H; k++) U[k] = nrand(u_scale);
    fl_lstm_desc d = {I, H, 0, FL_ACT_TANH, FL_ACT_SIGMOID, 0, 0, 0, 0, FL_LAYOUT_AUTO};
    fl_lstm *L = NULL;
    fl_status st = fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L);
    CHECK(st == FL_OK, "create: %s", fl_status_message(st));
    free(W);
    free(U);
    return L;
}

double act_ref(fl_activation a, double x) {
    switch (a) {
    case FL_ACT_TANH: return tanh(x);
    case FL_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case FL_ACT_HARD_SIGMOID_K2: return fmin(fmax(0.2 * x + 0.5, 0.0), 1.0);
    case FL_ACT_HARD_SIGMOID_K3: return fmin(fmax(x / 6.0 + 0.5, 0.0), 1.0);
    case FL_ACT_RELU: return x > 0 ? x : 0.0;
    case FL_ACT_LINEAR: return x;
    case FL_ACT_SOFTSIGN: return x / (1.0 + fabs(x));
    case FL_ACT_ELU: return x > 0 ? x : expm1(x);
    case FL_ACT_SELU:
        return 1.0507009873554805 * (x > 0 ? x : 1.6732632423543772 * expm1(x));
    case FL_ACT_SOFTPLUS: return log1p(exp(x));
    case FL_ACT_EXPONENTIAL: return exp(x);
    }
    return NAN;
}

typedef struct config {
    int I, H, P, B, T;
    fl_activation act, ract;
    int peep, bias, cell_clip, proj_clip, reverse, masked, lengths, zero_out;
    int batch_major;
    int chunk;
    int panels; /* weights in the panel layout (H % 16 == 0) */
    int threads;
    int want_path; /* the path the plan must choose (fl_path + 1), or 0 */
    int want_amx;  /* with want_path: whether the plan uses AMX */
} config;

/* Naive reference in double, canonical layout (gate order i, f, g, o). */
static void reference(const config *cf, const float *W, const float *U,
                      const float *bias, const float *peep, const float *proj,
                      const float *x, const unsigned char *mask,
                      const int *len, double *h, double *c, double *y,
                      double *ylast) {
    int I = cf->I, H = cf->H, R = cf->P ? cf->P : cf->H, B = cf->B, T = cf->T;
    double *z = calloc((size_t)4 * H, sizeof(double));
    double *m = calloc((size_t)H, sizeof(double));
    int *seen = calloc((size_t)B, sizeof(int));
#define TB(t, b) (cf->batch_major ? (size_t)(b) * T + (t) : (size_t)(t) * B + (b))
    for (int s = 0; s < T; s++) {
        int t = cf->reverse ? T - 1 - s : s;
        for (int b = 0; b < B; b++) {
            double *hb = h + (size_t)b * R, *cb = c + (size_t)b * H;
            int past = len && t >= len[b];
            int valid = (!mask || mask[TB(t, b)]) && !past;
            double *yo = y + TB(s, b) * R;
            if (!valid) {
                for (int j = 0; j < R; j++)
                    yo[j] = (!past && !cf->zero_out && seen[b]) ? hb[j] : 0.0;
                if (s == T - 1)
                    for (int j = 0; j < R; j++)
                        ylast[(size_t)b * R + j] =
                            (past || !cf->zero_out) && seen[b] ? hb[j] : 0.0;
                continue;
            }
            seen[b] = 1;
            for (int g = 0; g < 4 * H; g++) {
                double acc = bias ? bias[g] : 0.0;
                for (int k = 0; k < I; k++) acc += (double)x[TB(t, b) * I + k] * W[(size_t)k * 4 * H + g];
                for (int k = 0; k < R; k++) acc += hb[k] * U[(size_t)k * 4 * H + g];
                z[g] = acc;
            }
            for (int j = 0; j < H; j++) {
                double pi = peep ? peep[j] * cb[j] : 0, pf = peep ? peep[H + j] * cb[j] : 0;
                double i = act_ref(cf->ract, z[j] + pi);
                double f = act_ref(cf->ract, z[H + j] + pf);
                double g = act_ref(cf->act, z[2 * H + j]);
                double cn = f * cb[j] + i * g;
                if (cf->cell_clip) cn = fmin(fmax(cn, -0.7), 0.7);
                double o = act_ref(cf->ract, z[3 * H + j] + (peep ? peep[2 * H + j] * cn : 0));
                cb[j] = cn;
                m[j] = o * act_ref(cf->act, cn);
            }
            for (int j = 0; j < R; j++) {
                double v = cf->P ? 0.0 : m[j];
                if (cf->P) {
                    for (int k = 0; k < H; k++) v += m[k] * proj[(size_t)k * cf->P + j];
                    if (cf->proj_clip) v = fmin(fmax(v, -0.3), 0.3);
                }
                hb[j] = v;
                yo[j] = v;
                if (s == T - 1) ylast[(size_t)b * R + j] = v;
            }
        }
    }
    free(z);
    free(m);
    free(seen);
}

static void run_config(const config *cf) {
    int I = cf->I, H = cf->H, P = cf->P, R = P ? P : H, B = cf->B, T = cf->T;
    size_t nW = (size_t)I * 4 * H, nU = (size_t)R * 4 * H;
    float *W = malloc(nW * sizeof(float)), *U = malloc(nU * sizeof(float));
    float *bias = malloc((size_t)4 * H * sizeof(float));
    float *peep = malloc((size_t)3 * H * sizeof(float));
    float *proj = malloc((size_t)(P ? H * P : 1) * sizeof(float));
    float *x = malloc((size_t)T * B * I * sizeof(float));
    unsigned char *mask = malloc((size_t)T * B);
    int *len = malloc((size_t)B * sizeof(int));
    float sw = 0.5f / sqrtf((float)(I + R));
    for (size_t k = 0; k < nW; k++) W[k] = nrand(sw);
    for (size_t k = 0; k < nU; k++) U[k] = nrand(sw);
    for (int k = 0; k < 4 * H; k++) bias[k] = nrand(0.3f);
    for (int k = 0; k < 3 * H; k++) peep[k] = nrand(0.3f);
    for (int k = 0; k < (P ? H * P : 1); k++) proj[k] = nrand(1.0f / sqrtf((float)H));
    for (size_t k = 0; k < (size_t)T * B * I; k++) x[k] = nrand(1.0f);
    for (size_t k = 0; k < (size_t)T * B; k++) mask[k] = urand() < 0.7;
    for (int b = 0; b < B; b++) len[b] = (int)(urand() * (T + 1));

    fl_lstm_desc d = {I, H, P, cf->act, cf->ract, cf->cell_clip, 0.7f,
                      cf->proj_clip, 0.3f,
                      cf->panels ? FL_LAYOUT_PANELS : FL_LAYOUT_AUTO};
    fl_lstm *L = NULL;
    fl_status st = fl_lstm_create(&d, W, U, cf->bias ? bias : NULL,
                                  cf->peep ? peep : NULL, P ? proj : NULL, &L);
    CHECK(st == FL_OK, "create: %s", fl_status_message(st));
    if (st != FL_OK) goto done;

    float *h = calloc((size_t)B * R, sizeof(float)), *c = calloc((size_t)B * H, sizeof(float));
    float *y = calloc((size_t)T * B * R, sizeof(float)), *ylast = calloc((size_t)B * R, sizeof(float));
    double *hr = calloc((size_t)B * R, sizeof(double)), *cr = calloc((size_t)B * H, sizeof(double));
    double *yr = calloc((size_t)T * B * R, sizeof(double));
    double *ylr = calloc((size_t)B * R, sizeof(double));
    for (int k = 0; k < B * R; k++) hr[k] = h[k] = nrand(0.5f);
    for (int k = 0; k < B * H; k++) cr[k] = c[k] = nrand(0.5f);

    size_t wb = 0;
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    fl_run run = {.batch = B, .steps = T, .batch_major = cf->batch_major,
                       .x = x, .mask = cf->masked ? mask : NULL,
                       .lengths = cf->lengths ? len : NULL, .reverse = cf->reverse,
                       .mask_output = cf->zero_out ? FL_MASK_ZERO : FL_MASK_CARRY,
                       .check_finite = 1, .h = h, .c = c, .y = y, .y_last = ylast,
                       .chunk_steps = cf->chunk, .threads = cf->threads};
    st = cf->threads > 1 ? fl_lstm_run_workspace_size(L, &run, &wb)
                         : fl_lstm_workspace_size(L, B, T, cf->chunk, &wb);
    CHECK(st == FL_OK, "workspace_size");
    void *work = malloc(wb);
    if (cf->want_path) {
        fl_plan_info info;
        CHECK(fl_lstm_plan(L, &run, wb, &info) == FL_OK, "plan");
        CHECK((int)info.path == cf->want_path - 1 && info.amx == cf->want_amx,
              "I=%d H=%d B=%d T=%d threads=%d: path %d amx %d, expected %d amx %d",
              I, H, B, T, cf->threads, (int)info.path, info.amx, cf->want_path - 1,
              cf->want_amx);
    }
#ifdef FL_COUNT_MALLOC
    long before = n_allocs;
#endif
    st = fl_lstm_forward(L, &blas, &run, work, wb);
#ifdef FL_COUNT_MALLOC
    CHECK(n_allocs == before, "forward allocated %ld times", n_allocs - before);
#endif
    CHECK(st == FL_OK, "forward: %s", fl_status_message(st));
    reference(cf, W, U, cf->bias ? bias : NULL, cf->peep ? peep : NULL, proj, x,
              cf->masked ? mask : NULL, cf->lengths ? len : NULL, hr, cr, yr, ylr);
    double err = 0;
    for (size_t k = 0; k < (size_t)T * B * R; k++) err = fmax(err, fabs(y[k] - yr[k]));
    for (int k = 0; k < B * R; k++) err = fmax(err, fabs(h[k] - hr[k]));
    for (int k = 0; k < B * H; k++) err = fmax(err, fabs(c[k] - cr[k]));
    for (int k = 0; k < B * R; k++) err = fmax(err, fabs(ylast[k] - ylr[k]));
    double tol = (cf->act == FL_ACT_EXPONENTIAL || cf->act == FL_ACT_RELU ||
                  cf->act == FL_ACT_LINEAR) ? 1e-4 : 2e-5;
    CHECK(err < tol,
          "I=%d H=%d P=%d B=%d T=%d act=%d ract=%d peep=%d clip=%d/%d rev=%d "
          "mask=%d len=%d zero=%d chunk=%d bm=%d panels=%d: max err %.3g",
          I, H, P, B, T, cf->act, cf->ract, cf->peep, cf->cell_clip,
          cf->proj_clip, cf->reverse, cf->masked, cf->lengths, cf->zero_out,
          cf->chunk, cf->batch_major, cf->panels, err);
    free(work);
    free(h); free(c); free(y); free(ylast); free(hr); free(cr); free(yr); free(ylr);
    fl_lstm_free(L);
done:
    free(W); free(U); free(bias); free(peep); free(proj); free(x); free(mask); free(len);
}

/* The run options of a random config (cf->P already set): peepholes,
 * bias, clips, direction, masks, lengths, output at masked steps, chunks
 * of up to max_chunk steps, layout. */
static void random_options(config *cf, int max_chunk) {
    cf->peep = urand() < 0.3;
    cf->bias = urand() < 0.8;
    cf->cell_clip = urand() < 0.2;
    cf->proj_clip = cf->P && urand() < 0.5;
    cf->reverse = urand() < 0.3;
    cf->masked = urand() < 0.4;
    cf->lengths = urand() < 0.3;
    cf->zero_out = urand() < 0.5;
    cf->chunk = urand() < 0.4 ? 1 + (int)(urand() * max_chunk) : 0;
    cf->batch_major = urand() < 0.5;
}

static void test_configs(void) {
    for (int rep = 0; rep < 200; rep++) {
        config cf;
        memset(&cf, 0, sizeof cf);
        cf.I = 1 + (int)(urand() * 9);
        cf.H = 1 + (int)(urand() * 12);
        cf.P = urand() < 0.3 ? 1 + (int)(urand() * 5) : 0;
        cf.B = urand() < 0.3 ? 1 : 1 + (int)(urand() * (urand() < 0.3 ? 20 : 5));
        cf.T = 1 + (int)(urand() * 12);
        cf.act = urand() < 0.5 ? FL_ACT_TANH : (fl_activation)(int)(urand() * FL_ACT_COUNT);
        cf.ract = urand() < 0.5 ? FL_ACT_SIGMOID : (fl_activation)(int)(urand() * 4);
        random_options(&cf, 4);
        if (cf.act == FL_ACT_EXPONENTIAL && cf.T > 3) cf.T = 3; /* c grows as e^e^.. */
        run_config(&cf);
    }
}

/* Each path of the plan (fl_plan.c) is chosen where it should be and
 * matches the double reference: batch tiles, threads, woven, stepwise,
 * chunked on BLAS and on AMX. Paths this CPU lacks (batch tiles and the
 * woven projection need AVX-512, AMX needs AMX) are expected off, and the
 * calls then take the path the plan falls back to. */
static void test_every_path(void) {
    const int tiles = fl_batch_preferred(), woven = fl_woven_available();
    const int amx = fl_amx_available();
    const struct {
        int I, H, B, T, threads, peep, chunk;
        fl_path want;
        int want_amx;
    } cases[] = {
        {5, 16, 8, 16, 1, 0, 0, tiles ? FL_PATH_TILES : FL_PATH_CHUNKED, 0},
        {8, 128, 1, 40, 2, 0, 0, FL_PATH_THREADS, 0},
        {8, 16, 1, 40, 1, 0, 0, woven ? FL_PATH_WOVEN : FL_PATH_STEPWISE, 0},
        {8, 16, 1, 10, 1, 0, 0, FL_PATH_STEPWISE, 0},
        {8, 64, 1, 10, 1, 0, 1, FL_PATH_STEPWISE, 0},
        {8, 16, 3, 10, 1, 1, 0, FL_PATH_CHUNKED, 0},
        {64, 32, 8, 40, 1, 1, 0, FL_PATH_CHUNKED, amx},
    };
    if (!tiles) printf("note: no AVX-512 here; batch tiles are not planned\n");
    if (!woven) printf("note: no AVX-512 here; the woven projection is not planned\n");
    if (!amx) printf("note: no AMX here; AMX projections are not planned\n");
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        for (int masked = 0; masked < 2; masked++) {
            config cf;
            memset(&cf, 0, sizeof cf);
            cf.I = cases[k].I, cf.H = cases[k].H, cf.B = cases[k].B;
            cf.T = cases[k].T, cf.threads = cases[k].threads;
            cf.peep = cases[k].peep, cf.chunk = cases[k].chunk, cf.bias = 1;
            cf.act = FL_ACT_TANH, cf.ract = FL_ACT_SIGMOID;
            cf.masked = masked, cf.reverse = masked;
            cf.want_path = (int)cases[k].want + 1;
            cf.want_amx = cases[k].want_amx;
            run_config(&cf);
        }
    }
}

/* Batches with the standard gates and at least 64 rows x steps run on the
 * batch-tile path (fl_batch.c): unit counts around the 16-unit slabs,
 * batch sizes that use every row tile (6, 4, 2, 1) and cross the 96-row
 * group, masks, lengths, both layouts, both directions. */
static void test_batch_panels(void) {
    const int Hs[] = {1, 15, 16, 17, 40};
    const int Bs[] = {2, 7, 13, 64, 97, 101};
    for (int rep = 0; rep < 40; rep++) {
        config cf;
        memset(&cf, 0, sizeof cf);
        cf.I = 1 + (int)(urand() * 20);
        cf.H = Hs[rep % 5];
        cf.B = Bs[(rep / 5) % 6];
        cf.T = (64 + cf.B - 1) / cf.B + (int)(urand() * 6);
        cf.act = FL_ACT_TANH;
        cf.ract = FL_ACT_SIGMOID;
        cf.bias = urand() < 0.8;
        cf.reverse = urand() < 0.3;
        cf.masked = urand() < 0.4;
        cf.lengths = urand() < 0.3;
        cf.zero_out = urand() < 0.5;
        cf.batch_major = urand() < 0.5;
        run_config(&cf);
    }
}

/* Weights in the panel layout (FL_LAYOUT_PANELS) on every path, against
 * the double reference: 16 to 48 units (4H = 192: a last panel half
 * used), batch 1 (fused single steps, matrix-vector products, the woven
 * projection from 32 steps), small batches (fl_gemm), the fused batch path
 * and over 256 rows (BLAS); projections, peepholes, clips, masks. */
static void test_panel_layout(void) {
    const int Hs[] = {16, 32, 48};
    const int Bs[] = {1, 1, 1, 3, 9, 260};
    for (int rep = 0; rep < 60; rep++) {
        config cf;
        memset(&cf, 0, sizeof cf);
        cf.panels = 1;
        cf.H = Hs[rep % 3];
        cf.B = Bs[(rep / 3) % 6];
        cf.I = 1 + (int)(urand() * (urand() < 0.2 ? 130 : 60));
        cf.P = urand() < 0.25 ? 8 + (int)(urand() * 30) : 0;
        cf.T = cf.B == 1 ? 1 + (int)(urand() * 70) : 1 + (int)(urand() * 6);
        if (cf.B == 260) cf.T = 1 + (int)(urand() * 2);
        cf.act = FL_ACT_TANH;
        cf.ract = urand() < 0.8 ? FL_ACT_SIGMOID : FL_ACT_HARD_SIGMOID_K2;
        random_options(&cf, 9);
        run_config(&cf);
    }
}

/* Batch 1 on 1, 2 and 3 threads (units split into 16-unit blocks: slices
 * of 4H = 576 columns that straddle panels), chunks that read Wh in place
 * and chunks that weave the projection into per-thread copies: the panel
 * layout gives what the row-major one gives, within rounding (the sums
 * are in the same order; a sanitizer build adds them with different
 * instructions). */
static void test_panels_agree(void) {
    const int I = 40, H = 144, T = 70;
    float *W = malloc(sizeof(float) * I * 4 * H), *U = malloc(sizeof(float) * H * 4 * H);
    float *bias = malloc(sizeof(float) * 4 * H), *x = malloc(sizeof(float) * T * I);
    for (int k = 0; k < I * 4 * H; k++) W[k] = nrand(0.2f);
    for (int k = 0; k < H * 4 * H; k++) U[k] = nrand(0.1f);
    for (int k = 0; k < 4 * H; k++) bias[k] = nrand(0.3f);
    for (int k = 0; k < T * I; k++) x[k] = nrand(1.0f);
    unsigned char mask[70];
    for (int k = 0; k < T; k++) mask[k] = urand() < 0.8;
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    fl_lstm *L[2];
    for (int lay = 0; lay < 2; lay++) {
        fl_lstm_desc d = {I, H, 0, FL_ACT_TANH, FL_ACT_SIGMOID, 0, 0, 0, 0,
                          lay ? FL_LAYOUT_PANELS : FL_LAYOUT_ROWS};
        CHECK(fl_lstm_create(&d, W, U, bias, NULL, NULL, &L[lay]) == FL_OK, "create");
        fl_lstm_desc got;
        fl_lstm_get_desc(L[lay], &got);
        CHECK(got.weight_layout == d.weight_layout, "layout %d reported as %d",
              (int)d.weight_layout, (int)got.weight_layout);
    }
    static float y[2][70 * 144], h[2][144], c[2][144];
    for (int variant = 0; variant < 48; variant++) {
        const int threads = 1 + variant % 3, chunk = (variant / 3) % 2 ? 0 : 5;
        const int masked = (variant / 6) % 2, reverse = (variant / 12) % 2;
        const int no_copies = variant >= 24; /* a workspace without them */
        for (int lay = 0; lay < 2; lay++) {
            memset(h[lay], 0, sizeof h[lay]);
            memset(c[lay], 0, sizeof c[lay]);
            fl_run run = {.batch = 1, .steps = T, .x = x,
                               .mask = masked ? mask : NULL, .reverse = reverse,
                               .h = h[lay], .c = c[lay], .y = y[lay],
                               .chunk_steps = chunk, .threads = threads,
                               .sweep = variant & 1};
            size_t wb;
            if (no_copies)
                fl_lstm_workspace_size(L[lay], 1, T, chunk, &wb);
            else
                fl_lstm_run_workspace_size(L[lay], &run, &wb);
            void *work = malloc(wb);
            fl_status st = fl_lstm_forward(L[lay], &blas, &run, work, wb);
            CHECK(st == FL_OK, "forward: %s", fl_status_message(st));
            free(work);
        }
        double err = 0;
        for (int k = 0; k < T * H; k++) err = fmax(err, fabs(y[0][k] - y[1][k]));
        for (int k = 0; k < H; k++) err = fmax(err, fabs(c[0][k] - c[1][k]));
        CHECK(err < 1e-6,
              "panels vs rows, %d threads chunk %d mask %d reverse %d copies %d: %.3g",
              threads, chunk, masked, reverse, !no_copies, err);
    }
    /* one step at a time (a stream): rows on one thread against panels on
     * one thread (the fused [x; h] product) and on two, whose pool keeps
     * each thread's copy of its columns in the workspace */
    fl_pool *pool = NULL;
    CHECK(fl_pool_create(2, &pool) == FL_OK, "pool");
    for (int threads = 1; threads <= 2; threads++) {
        for (int lay = 0; lay < 2; lay++) {
            memset(h[lay], 0, sizeof h[lay]);
            memset(c[lay], 0, sizeof c[lay]);
            const int th = lay ? threads : 1;
            fl_run run = {.batch = 1, .steps = 1, .h = h[lay], .c = c[lay],
                               .threads = th, .pool = th > 1 ? pool : NULL,
                               .keep_copies = th > 1};
            size_t wb;
            fl_lstm_run_workspace_size(L[lay], &run, &wb);
            void *work = malloc(wb);
            for (int t = 0; t < T; t++) {
                run.x = x + t * I;
                run.y = y[lay] + t * H;
                run.sweep = t & 1;
                CHECK(fl_lstm_forward(L[lay], &blas, &run, work, wb) == FL_OK, "step");
                if (run.keep_copies == 1) run.keep_copies = 2;
            }
            free(work);
        }
        double err = 0;
        for (int k = 0; k < T * H; k++) err = fmax(err, fabs(y[0][k] - y[1][k]));
        CHECK(err < 1e-6, "panels (%d threads) vs rows, one step per call: %.3g",
              threads, err);
    }
    fl_pool_free(pool);
    fl_lstm_free(L[0]);
    fl_lstm_free(L[1]);
    free(W); free(U); free(bias); free(x);
}

static void test_errors(void) {
    float W[8] = {0}, U[4] = {0};
    fl_lstm *L = (fl_lstm *)1;
    fl_lstm_desc d = {2, 1, 0, FL_ACT_TANH, FL_ACT_SIGMOID, 0, 0, 0, 0, FL_LAYOUT_AUTO};
    CHECK(fl_lstm_create(&d, NULL, U, NULL, NULL, NULL, &L) == FL_ERR_ARG && L == NULL,
          "NULL kernel");
    CHECK(fl_lstm_create(NULL, W, U, NULL, NULL, NULL, &L) == FL_ERR_ARG, "NULL desc");
    d.units = 0;
    CHECK(fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L) == FL_ERR_SHAPE, "zero units");
    d.units = FL_MAX_DIM + 1;
    CHECK(fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L) == FL_ERR_OVERFLOW, "huge units");
    d.units = 1;
    d.activation = (fl_activation)99;
    CHECK(fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L) == FL_ERR_UNSUPPORTED, "bad activation");
    d.activation = FL_ACT_TANH;
    d.use_cell_clip = 1;
    d.cell_clip = -1.0f;
    CHECK(fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L) == FL_ERR_ARG, "negative clip");
    d.use_cell_clip = 0;
    d.use_proj_clip = 1;
    d.proj_clip = 1.0f;
    CHECK(fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L) == FL_ERR_ARG, "proj_clip without projection");
    d.use_proj_clip = 0;
    W[3] = NAN;
    CHECK(fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L) == FL_ERR_NONFINITE, "NaN weight");
    W[3] = 0.5f;
    d.weight_layout = FL_LAYOUT_PANELS; /* needs units % 16 == 0 */
    CHECK(fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L) == FL_ERR_UNSUPPORTED,
          "panels with 1 unit");
    d.weight_layout = (fl_weight_layout)7;
    CHECK(fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L) == FL_ERR_ARG, "bad layout");
    d.weight_layout = FL_LAYOUT_AUTO;
    CHECK(fl_lstm_create(&d, W, U, NULL, NULL, NULL, &L) == FL_OK, "create ok");
    fl_lstm_desc got;
    CHECK(fl_lstm_get_desc(L, &got) == FL_OK && got.weight_layout == FL_LAYOUT_ROWS,
          "a small layer is stored in rows");

    float x[6] = {1, 2, 3, 4, NAN, 6}, h[1] = {0}, c[1] = {0}, y[3];
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    size_t wb = 0;
    CHECK(fl_lstm_workspace_size(L, 1, 3, 0, &wb) == FL_OK && wb > 0, "ws");
    CHECK(fl_lstm_workspace_size(L, 0, 3, 0, &wb) == FL_ERR_SHAPE, "ws batch 0");
    CHECK(fl_lstm_workspace_size(L, FL_MAX_DIM, FL_MAX_DIM, 0, &wb) == FL_ERR_OVERFLOW,
          "ws overflow");
    fl_lstm_workspace_size(L, 1, 3, 0, &wb);
    void *work = malloc(wb);
    fl_run run = {.batch = 1, .steps = 3, .x = x, .check_finite = 1,
                       .h = h, .c = c, .y = y};
    CHECK(fl_lstm_forward(L, &blas, &run, work, wb) == FL_ERR_NONFINITE, "NaN input");
    unsigned char mask[3] = {1, 1, 0}; /* the NaN row (t=2) is masked: accepted */
    run.mask = mask;
    CHECK(fl_lstm_forward(L, &blas, &run, work, wb) == FL_OK, "masked NaN input");
    CHECK(fl_lstm_forward(L, &blas, &run, work, wb - 1) == FL_ERR_ARG, "small workspace");
    int32_t len[1] = {4};
    run.lengths = len;
    CHECK(fl_lstm_forward(L, &blas, &run, work, wb) == FL_ERR_SHAPE, "length > steps");
    run.lengths = NULL;
    run.mask_output = (fl_mask_output)7;
    CHECK(fl_lstm_forward(L, &blas, &run, work, wb) == FL_ERR_ARG, "bad mask_output");
    run.mask_output = FL_MASK_CARRY;
    fl_blas noblas = {NULL, NULL};
    CHECK(fl_lstm_forward(L, &noblas, &run, work, wb) == FL_ERR_ARG, "NULL blas");
    run.h = NULL;
    CHECK(fl_lstm_forward(L, &blas, &run, work, wb) == FL_ERR_ARG, "NULL h");
    CHECK(fl_activation_apply((fl_activation)-1, y, 1) == FL_ERR_UNSUPPORTED, "apply bad act");
    for (int s = 0; s <= FL_ERR_OVERFLOW; s++)
        CHECK(strlen(fl_status_message((fl_status)s)) > 1, "message %d", s);
    free(work);
    fl_lstm_free(L);
    fl_lstm_free(NULL);
}

/* Chunked processing and state hand-over: running T steps at once equals
 * running them in two calls that pass h, c (and seen) along. */
static void test_split_equals_whole(void) {
    const int I = 3, H = 5, B = 2, T = 9, T1 = 4;
    float W[3 * 20], U[5 * 20], bias[20], x[9 * 2 * 3];
    unsigned char mask[9 * 2];
    for (int k = 0; k < 60; k++) W[k] = nrand(0.4f);
    for (int k = 0; k < 100; k++) U[k] = nrand(0.4f);
    for (int k = 0; k < 20; k++) bias[k] = nrand(0.4f);
    for (int k = 0; k < 54; k++) x[k] = nrand(1.0f);
    for (int k = 0; k < 18; k++) mask[k] = urand() < 0.6;
    fl_lstm_desc d = {I, H, 0, FL_ACT_TANH, FL_ACT_SIGMOID, 0, 0, 0, 0, FL_LAYOUT_AUTO};
    fl_lstm *L;
    fl_lstm_create(&d, W, U, bias, NULL, NULL, &L);
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    size_t wb;
    fl_lstm_workspace_size(L, B, T, 0, &wb);
    void *work = malloc(wb);
    float h1[10] = {0}, c1[10] = {0}, y1[9 * 2 * 5], h2[10] = {0}, c2[10] = {0}, y2[9 * 2 * 5];
    unsigned char seen[2] = {0, 0};
    fl_run whole = {.batch = B, .steps = T, .x = x, .mask = mask,
                         .h = h1, .c = c1, .y = y1};
    fl_lstm_forward(L, &blas, &whole, work, wb);
    fl_run a = {.batch = B, .steps = T1, .x = x, .mask = mask,
                     .h = h2, .c = c2, .seen = seen, .y = y2};
    fl_lstm_forward(L, &blas, &a, work, wb);
    fl_run b = {.batch = B, .steps = T - T1, .x = x + T1 * B * I,
                     .mask = mask + T1 * B, .h = h2, .c = c2, .seen = seen,
                     .y = y2 + T1 * B * H};
    fl_lstm_forward(L, &blas, &b, work, wb);
    double err = 0;
    for (int k = 0; k < T * B * H; k++) err = fmax(err, fabs(y1[k] - y2[k]));
    for (int k = 0; k < B * H; k++) err = fmax(err, fabs(h1[k] - h2[k]) + fabs(c1[k] - c2[k]));
    CHECK(err == 0.0, "split run differs from whole run by %g", err);
    free(work);
    fl_lstm_free(L);
}

/* fl_run.sweep only changes the order in which batch-1 steps read the
 * weight blocks: each unit count below has 128- and 64-wide blocks and a
 * tail (4H = 200, 1200), on 1 and 2 threads, whole runs and step by step
 * with the sweep flipped per call; all bit-identical to sweep = 0. */
static void test_sweep_same_result(void) {
    const int I = 7, T = 6, Hs[2] = {50, 300};
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    for (int hi = 0; hi < 2; hi++) {
        const int H = Hs[hi];
        fl_lstm *L = random_layer(I, H, 0.1f);
        float *x = malloc(sizeof(float) * T * I);
        for (int k = 0; k < T * I; k++) x[k] = nrand(1.0f);
        size_t wb;
        fl_lstm_workspace_size(L, 1, T, 0, &wb);
        void *work = malloc(wb);
        float *y[2], *h = malloc(sizeof(float) * H), *c = malloc(sizeof(float) * H);
        y[0] = malloc(sizeof(float) * T * H);
        y[1] = malloc(sizeof(float) * T * H);
        for (int variant = 0; variant < 3; variant++) { /* 1 thread, 2, steps */
            const int threads = variant == 1 ? 2 : 1, stepwise = variant == 2;
            for (int sweep = 0; sweep < 2; sweep++) {
                memset(h, 0, sizeof(float) * H);
                memset(c, 0, sizeof(float) * H);
                fl_run run = {.batch = 1, .steps = stepwise ? 1 : T, .x = x,
                                   .h = h, .c = c, .y = y[sweep],
                                   .threads = threads, .sweep = sweep};
                for (int t = 0; t < (stepwise ? T : 1); t++) {
                    run.x = x + (size_t)t * I;
                    run.y = y[sweep] + (size_t)t * H;
                    CHECK(fl_lstm_forward(L, &blas, &run, work, wb) == FL_OK,
                          "sweep run");
                    run.sweep ^= 1;
                }
            }
            CHECK(memcmp(y[0], y[1], sizeof(float) * T * H) == 0,
                  "H=%d variant %d: sweep 1 differs from sweep 0", H, variant);
        }
        free(y[0]); free(y[1]); free(h); free(c); free(work); free(x);
        fl_lstm_free(L);
    }
}

/* A multi-thread batch-1 run with room for the threads' own copies of Wh
 * (fl_lstm_run_workspace_size) gives bit-identical results to one without
 * (fl_lstm_workspace_size), for 2 and 3 threads. */
static void test_thread_copies(void) {
    const int I = 7, H = 300, T = 70;
    fl_lstm *L = random_layer(I, H, 0.05f);
    float *x = malloc(sizeof(float) * T * I);
    for (int k = 0; k < T * I; k++) x[k] = nrand(1.0f);
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    static float y[2][70 * 300], h[2][300], c[2][300];
    for (int threads = 2; threads <= 3; threads++) {
        size_t sizes[2];
        for (int copies = 0; copies < 2; copies++) {
            memset(h[copies], 0, sizeof h[copies]);
            memset(c[copies], 0, sizeof c[copies]);
            /* 3 threads: chunks of 33, 33 and 4 steps (the copies made in
             * the first, reused in the second, not used by the third) */
            const int chunk = threads == 3 ? 33 : 0;
            fl_run run = {.batch = 1, .steps = T, .x = x, .h = h[copies],
                               .c = c[copies], .y = y[copies], .threads = threads,
                               .chunk_steps = chunk};
            if (copies)
                CHECK(fl_lstm_run_workspace_size(L, &run, &sizes[1]) == FL_OK, "run ws");
            else
                CHECK(fl_lstm_workspace_size(L, 1, T, chunk, &sizes[0]) == FL_OK, "ws");
            void *work = malloc(sizes[copies]);
            CHECK(fl_lstm_forward(L, &blas, &run, work, sizes[copies]) == FL_OK,
                  "forward, copies=%d", copies);
            free(work);
        }
        CHECK(sizes[1] >= sizes[0] + sizeof(float) * 4 * H * H,
              "no room for the copies: %zu vs %zu", sizes[1], sizes[0]);
        /* one step per call, the copies kept in the workspace (keep_copies
         * 1, then 2), against the whole run with copies: a step's fused
         * path differs, so compare with plain steps (keep_copies 0) */
        static float ys[2][70 * 300], hs[2][300], cs[2][300];
        fl_pool *pool = NULL; /* single steps run on threads only with a pool */
        CHECK(fl_pool_create(threads, &pool) == FL_OK, "pool");
        for (int keep = 0; keep < 2; keep++) {
            memset(hs[keep], 0, sizeof hs[keep]);
            memset(cs[keep], 0, sizeof cs[keep]);
            fl_run run = {.batch = 1, .steps = 1, .h = hs[keep], .c = cs[keep],
                               .threads = threads, .pool = pool,
                               .keep_copies = keep};
            size_t wb;
            CHECK(fl_lstm_run_workspace_size(L, &run, &wb) == FL_OK, "step ws");
            void *work = malloc(wb);
            for (int t = 0; t < T; t++) {
                run.x = x + (size_t)t * I;
                run.y = ys[keep] + (size_t)t * H;
                CHECK(fl_lstm_forward(L, &blas, &run, work, wb) == FL_OK, "step");
                if (keep) run.keep_copies = 2;
            }
            free(work);
        }
        fl_pool_free(pool);
        CHECK(memcmp(ys[0], ys[1], sizeof ys[0]) == 0 && memcmp(cs[0], cs[1], sizeof cs[0]) == 0,
              "%d threads: steps on kept copies differ", threads);
        CHECK(memcmp(y[0], y[1], sizeof y[0]) == 0 && memcmp(h[0], h[1], sizeof h[0]) == 0 &&
                  memcmp(c[0], c[1], sizeof c[0]) == 0,
              "%d threads: the copies changed the results", threads);
    }
    free(x);
    fl_lstm_free(L);
}

/* Two review findings, kept as regressions:
 * - a batch run streams its outputs from h, and the caller's h has no
 *   alignment requirement (h one float past an aligned address used to
 *   fault on the second step);
 * - a keep_copies = 1 call whose threads cannot start still leaves the
 *   copies in the workspace for the keep_copies = 2 calls after it (they
 *   used to read whatever the buffer held). */
static void test_review_regressions(void) {
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    {   /* outputs of 4 MB: the streamed-output path */
        const int I = 8, H = 256, B = 64, T = 64;
        fl_lstm *L = random_layer(I, H, 0.05f);
        float *x = malloc(sizeof(float) * B * T * I);
        for (int k = 0; k < B * T * I; k++) x[k] = nrand(1.0f);
        size_t wb;
        fl_lstm_workspace_size(L, B, T, 0, &wb);
        void *work = malloc(wb);
        float *y[2], *hbuf = aligned_alloc(64, sizeof(float) * (B * H + 16));
        float *c = malloc(sizeof(float) * B * H);
        for (int off = 0; off < 2; off++) { /* h aligned, then 4 bytes past */
            float *h = hbuf + off;
            y[off] = aligned_alloc(64, sizeof(float) * B * T * H);
            memset(h, 0, sizeof(float) * B * H);
            memset(c, 0, sizeof(float) * B * H);
            fl_run run = {.batch = B, .steps = T, .batch_major = 1, .x = x,
                               .h = h, .c = c, .y = y[off]};
            CHECK(fl_lstm_forward(L, &blas, &run, work, wb) == FL_OK, "forward");
        }
        CHECK(memcmp(y[0], y[1], sizeof(float) * B * T * H) == 0,
              "an unaligned h changed the outputs");
        free(y[0]); free(y[1]); free(hbuf); free(c); free(work); free(x);
        fl_lstm_free(L);
    }
#ifdef FL_COUNT_MALLOC
    {
        const int I = 4, H = 256, T = 2;
        fl_lstm *L = random_layer(I, H, 0.05f);
        float x[2 * 4];
        for (int k = 0; k < 2 * 4; k++) x[k] = nrand(1.0f);
        static float y[2][2 * 256], h[2][256], c[2][256];
        for (int keep = 0; keep < 2; keep++) {
            memset(h[keep], 0, sizeof h[keep]);
            memset(c[keep], 0, sizeof c[keep]);
            fl_run run = {.batch = 1, .steps = T, .x = x, .h = h[keep], .c = c[keep],
                               .y = y[keep], .threads = 2, .keep_copies = keep};
            size_t wb;
            fl_lstm_run_workspace_size(L, &run, &wb);
            char *work = malloc(wb);
            memset(work, 0x7f, wb); /* stale contents */
            for (int call = 0; call < 4; call++) {
                fail_thread_starts = call == 0;
                CHECK(fl_lstm_forward(L, &blas, &run, work, wb) == FL_OK, "call %d", call);
                if (keep) run.keep_copies = 2;
            }
            fail_thread_starts = 0;
            free(work);
        }
        CHECK(memcmp(h[0], h[1], sizeof h[0]) == 0 && memcmp(y[0], y[1], sizeof y[0]) == 0,
              "copies kept after a call whose threads could not start are wrong");
        fl_lstm_free(L);
    }
#endif
}

/* Several threads on one batch row: thread counts agree bit for bit (each
 * output element is summed in the same order), and agree with the serial
 * path (which takes the input projection from BLAS) to float rounding. */
static void test_threads_agree(void) {
    const int I = 7, H = 300, T = 23;
    float *W = malloc(sizeof(float) * I * 4 * H), *U = malloc(sizeof(float) * H * 4 * H);
    float *bias = malloc(sizeof(float) * 4 * H), *peep = malloc(sizeof(float) * 3 * H);
    float *x = malloc(sizeof(float) * T * I);
    for (int k = 0; k < I * 4 * H; k++) W[k] = nrand(0.3f);
    for (int k = 0; k < H * 4 * H; k++) U[k] = nrand(0.05f);
    for (int k = 0; k < 4 * H; k++) bias[k] = nrand(0.3f);
    for (int k = 0; k < 3 * H; k++) peep[k] = nrand(0.3f);
    for (int k = 0; k < T * I; k++) x[k] = nrand(1.0f);
    unsigned char mask[23];
    for (int k = 0; k < T; k++) mask[k] = urand() < 0.7;
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    static float h[3][300], c[3][300], y[3][23 * 300], yl[3][300];
    const int counts[3] = {1, 2, 3};
    for (int variant = 0; variant < 8; variant++) {
        int use_peep = variant & 1, reverse = (variant >> 1) & 1, masked = variant >> 2;
        fl_lstm_desc d = {I, H, 0, FL_ACT_TANH, FL_ACT_SIGMOID, 0, 0, 0, 0, FL_LAYOUT_AUTO};
        fl_lstm *L;
        fl_lstm_create(&d, W, U, bias, use_peep ? peep : NULL, NULL, &L);
        size_t wb;
        fl_lstm_workspace_size(L, 1, T, 5, &wb);
        void *work = malloc(wb);
        for (int i = 0; i < 3; i++) {
            memset(h[i], 0, sizeof h[i]);
            memset(c[i], 0, sizeof c[i]);
            fl_run run = {.batch = 1, .steps = T, .x = x,
                               .mask = masked ? mask : NULL, .reverse = reverse,
                               .h = h[i], .c = c[i], .y = y[i], .y_last = yl[i],
                               .chunk_steps = 5, .threads = counts[i]};
            fl_status st = fl_lstm_forward(L, &blas, &run, work, wb);
            CHECK(st == FL_OK, "threaded forward: %s", fl_status_message(st));
        }
        CHECK(memcmp(y[1], y[2], sizeof y[1]) == 0 && memcmp(h[1], h[2], sizeof h[1]) == 0 &&
                  memcmp(c[1], c[2], sizeof c[1]) == 0 && memcmp(yl[1], yl[2], sizeof yl[1]) == 0,
              "3 threads differ from 2 (peep=%d reverse=%d masked=%d)", use_peep, reverse, masked);
        double err = 0;
        for (int k = 0; k < T * H; k++) err = fmax(err, fabs(y[0][k] - y[1][k]));
        for (int k = 0; k < H; k++) err = fmax(err, fabs(c[0][k] - c[1][k]));
        CHECK(err < 1e-5, "2 threads vs 1: max diff %g", err);
        free(work);
        fl_lstm_free(L);
    }
    free(W); free(U); free(bias); free(peep); free(x);
}

/* A pool of sleeping workers gives what threads started per call give, bit
 * for bit, for whole runs and for single steps; two callers sharing one
 * pool both get right answers (the second starts its own threads). */
typedef struct pool_case {
    const fl_lstm *L;
    fl_pool *pool;
    const float *x;
    int T, H, by_step;
    float *h, *c, *y;
    void *work;
    size_t wb;
    fl_status st;
} pool_case;

static void *pool_case_run(void *arg) {
    pool_case *pc = (pool_case *)arg;
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    const int I = 7;
    memset(pc->h, 0, sizeof(float) * pc->H);
    memset(pc->c, 0, sizeof(float) * pc->H);
    pc->st = FL_OK;
    for (int rep = 0; rep < 20 && pc->st == FL_OK; rep++) {
        memset(pc->h, 0, sizeof(float) * pc->H);
        memset(pc->c, 0, sizeof(float) * pc->H);
        if (!pc->by_step) {
            fl_run run = {.batch = 1, .steps = pc->T, .x = pc->x, .h = pc->h,
                               .c = pc->c, .y = pc->y, .threads = 2, .pool = pc->pool};
            pc->st = fl_lstm_forward(pc->L, &blas, &run, pc->work, pc->wb);
            continue;
        }
        for (int t = 0; t < pc->T && pc->st == FL_OK; t++) {
            fl_run run = {.batch = 1, .steps = 1, .x = pc->x + t * I, .h = pc->h,
                               .c = pc->c, .y_last = pc->y + (size_t)t * pc->H,
                               .threads = 2, .pool = pc->pool};
            pc->st = fl_lstm_forward(pc->L, &blas, &run, pc->work, pc->wb);
        }
    }
    return NULL;
}

static void test_pool(void) {
    fl_pool *pool = (fl_pool *)1;
    CHECK(fl_pool_create(1, &pool) == FL_ERR_ARG && pool == NULL, "pool of 1 thread accepted");
    CHECK(fl_pool_create(9, &pool) == FL_ERR_ARG, "pool of 9 threads accepted");
    CHECK(fl_pool_create(2, NULL) == FL_ERR_ARG, "NULL out accepted");
    fl_pool_free(NULL);

    const int I = 7, H = 256, T = 16;
    fl_lstm *L = random_layer(I, H, 0.05f);
    float *x = malloc(sizeof(float) * T * I);
    for (int k = 0; k < T * I; k++) x[k] = nrand(1.0f);
    fl_status st = fl_pool_create(3, &pool);
    CHECK(st == FL_OK && pool, "pool create: %s", fl_status_message(st));

    /* reference: threads started for the call */
    size_t wb;
    fl_lstm_workspace_size(L, 1, T, 0, &wb);
    static float h0[256], c0[256], y0[16 * 256];
    void *w0 = malloc(wb);
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    fl_run run = {.batch = 1, .steps = T, .x = x, .h = h0, .c = c0, .y = y0,
                       .threads = 2};
    st = fl_lstm_forward(L, &blas, &run, w0, wb);
    CHECK(st == FL_OK, "threaded forward: %s", fl_status_message(st));

    static float h[4][256], c[4][256], y[4][16 * 256];
    pool_case pc[4];
    for (int i = 0; i < 4; i++) {
        pc[i] = (pool_case){L, pool, x, T, H, i & 1, h[i], c[i], y[i], NULL, wb, FL_OK};
        pc[i].work = malloc(wb);
    }
    /* one caller at a time: sequence, then steps */
    for (int i = 0; i < 2; i++) {
        pool_case_run(&pc[i]);
        CHECK(pc[i].st == FL_OK, "pool forward: %s", fl_status_message(pc[i].st));
        CHECK(memcmp(y[i], y0, sizeof y0) == 0 && memcmp(c[i], c0, sizeof c0) == 0,
              "pool run (by_step=%d) differs from threads started per call", i);
    }
    /* two callers sharing the pool at once */
    pthread_t tid;
    memset(y[2], 0, sizeof y[2]);
    memset(y[3], 0, sizeof y[3]);
    pthread_create(&tid, NULL, pool_case_run, &pc[3]);
    pool_case_run(&pc[2]);
    pthread_join(tid, NULL);
    for (int i = 2; i < 4; i++) {
        CHECK(pc[i].st == FL_OK, "shared pool forward: %s", fl_status_message(pc[i].st));
        CHECK(memcmp(y[i], y0, sizeof y0) == 0 && memcmp(c[i], c0, sizeof c0) == 0,
              "shared pool caller %d differs", i);
    }
    for (int i = 0; i < 4; i++) free(pc[i].work);
    fl_pool_free(pool);
    free(w0);
    fl_lstm_free(L);
    free(x);
}

/* A long batch-1 run on one thread reads Wh in the panel layout (its
 * workspace has room for the copy, fl_matvec_panels); its results are
 * bit-identical to the same steps run in calls too short for the copy
 * (fewer than 128 steps each), plain and reversed with a mask and the sweep
 * on. H = 200: 4H = 800 columns, six full 128-column panels and a 32-wide
 * one; Wh (640 KB) is within the 45% memory share of this call. */
static void test_wh_panels(void) {
    const int I = 400, H = 200, T = 256, pieces[3] = {100, 100, 56};
    fl_lstm *L = random_layer(I, H, 0.1f);
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    float *x = malloc(sizeof(float) * T * I);
    for (int k = 0; k < T * I; k++) x[k] = nrand(1.0f);
    unsigned char mask[256];
    for (int t = 0; t < T; t++) mask[t] = urand() < 0.8;
    size_t ws_long = 0, ws_short = 0;
    fl_lstm_workspace_size(L, 1, T, 0, &ws_long);
    fl_lstm_workspace_size(L, 1, 127, 0, &ws_short);
    CHECK(ws_long >= ws_short + sizeof(float) * (4 * (size_t)H * H + (size_t)(T - 127) * 4 * H),
          "no room for the panel copy of Wh: %zu vs %zu bytes", ws_long, ws_short);
    void *work = malloc(ws_long);
    float *y[2], h[2][200], c[2][200];
    y[0] = malloc(sizeof(float) * T * H);
    y[1] = malloc(sizeof(float) * T * H);
    for (int variant = 0; variant < 2; variant++) {
        for (int split = 0; split < 2; split++) {
            memset(h[split], 0, sizeof h[split]);
            memset(c[split], 0, sizeof c[split]);
            unsigned char seen = 0;
            int done = 0; /* steps processed so far */
            for (int p = 0; p < (split ? 3 : 1); p++) {
                const int n = split ? pieces[p] : T;
                /* processing order: a reversed run starts at the end */
                const int t0 = variant ? T - done - n : done;
                fl_run run = {.batch = 1, .steps = n, .x = x + (size_t)t0 * I,
                                   .mask = variant ? mask + t0 : NULL,
                                   .reverse = variant, .sweep = variant,
                                   .h = h[split], .c = c[split], .seen = &seen,
                                   .y = y[split] + (size_t)done * H,
                                   /* as the short calls; the woven path's
                                    * chunks would start at each call */
                                   .no_amx = 1, .no_woven = 1};
                CHECK(fl_lstm_forward(L, &blas, &run, work, ws_long) == FL_OK,
                      "panel run");
                done += n;
            }
        }
        CHECK(memcmp(y[0], y[1], sizeof(float) * T * H) == 0 &&
                  memcmp(h[0], h[1], sizeof h[0]) == 0 &&
                  memcmp(c[0], c[1], sizeof c[0]) == 0,
              "variant %d: the run on panels differs from short calls", variant);
    }
    free(y[0]); free(y[1]); free(work); free(x);
    fl_lstm_free(L);
}

/* fl_amx_gemm against a double product, over shapes with partial 32-row,
 * 32-column and 32-deep blocks, row blocks past the split size (K = 1024:
 * 128 rows per block) and leading dimensions wider than the matrices: every
 * element within 3e-7 of its sum of |x w| (float32 GEMM's own rounding is
 * of that size), columns past N untouched. NaN, inf or a huge value makes
 * it decline (the caller then uses BLAS). */
/* Batch-1 runs on one thread with each chunk's input projection woven into
 * the recurrent products (fl_matvec_woven) agree with the plain BLAS path
 * within float32 rounding: rows in place and in panels, a partial last
 * column block (4H = 400), steps that are no multiple of 16, reversed with
 * a mask and the sweep on, a projection (R = P), and peepholes. The plan
 * really differs (its gate buffer is two 16-step chunks). */
static void test_woven(void) {
    if (!fl_woven_available()) {
        printf("note: no AVX-512 here; the woven path is not tested\n");
        return;
    }
    static const struct {
        int I, H, P, T, peep;
    } cases[] = {{48, 100, 0, 257, 0}, {400, 200, 0, 300, 0},
                 {64, 96, 40, 77, 1}, {128, 128, 0, 33, 0}};
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int I = cases[ci].I, H = cases[ci].H, P = cases[ci].P, T = cases[ci].T;
        const int R = P ? P : H;
        float *W = malloc(sizeof(float) * I * 4 * H), *U = malloc(sizeof(float) * R * 4 * H);
        float *proj = P ? malloc(sizeof(float) * H * P) : NULL, peep[3 * 200], b[4 * 200];
        for (int k = 0; k < I * 4 * H; k++) W[k] = nrand(0.1f);
        for (int k = 0; k < R * 4 * H; k++) U[k] = nrand(0.1f);
        for (int k = 0; P && k < H * P; k++) proj[k] = nrand(0.1f);
        for (int k = 0; k < 3 * H; k++) peep[k] = nrand(0.1f);
        for (int k = 0; k < 4 * H; k++) b[k] = nrand(0.1f);
        fl_lstm_desc d = {I, H, P, FL_ACT_TANH, FL_ACT_SIGMOID, 0, 0, 0, 0, FL_LAYOUT_AUTO};
        fl_lstm *L = NULL;
        CHECK(fl_lstm_create(&d, W, U, b, cases[ci].peep ? peep : NULL, proj, &L) == FL_OK,
              "create woven case %zu", ci);
        float *x = malloc(sizeof(float) * T * I);
        for (int k = 0; k < T * I; k++) x[k] = nrand(1.0f);
        unsigned char mask[300];
        for (int t = 0; t < T; t++) mask[t] = urand() < 0.85;
        for (int variant = 0; variant < 2; variant++) {
            /* runs [threads][plain]: 1 or 2 threads (2 split the units; not
             * with a projection), woven or plain */
            float *y[2][2] = {{NULL}}, h[2][2][200], c[2][2][200];
            size_t ws[2][2];
            for (int th = 0; th < (P ? 1 : 2); th++)
                for (int plain = 0; plain < 2; plain++) {
                    y[th][plain] = malloc(sizeof(float) * T * R);
                    memset(h[th][plain], 0, sizeof h[th][plain]);
                    memset(c[th][plain], 0, sizeof c[th][plain]);
                    fl_run run = {.batch = 1, .steps = T, .x = x,
                                       .mask = variant ? mask : NULL,
                                       .reverse = variant, .sweep = variant,
                                       .h = h[th][plain], .c = c[th][plain],
                                       .y = y[th][plain], .no_woven = plain,
                                       .threads = th + 1, .chunk_steps = th ? 64 : 0};
                    CHECK(fl_lstm_run_workspace_size(L, &run, &ws[th][plain]) == FL_OK,
                          "size");
                    void *work = malloc(ws[th][plain]);
                    CHECK(fl_lstm_forward(L, &blas, &run, work, ws[th][plain]) == FL_OK,
                          "woven case %zu run, %d threads", ci, th + 1);
                    free(work);
                }
            CHECK(ws[0][0] != ws[0][1], "case %zu: the woven path was not planned", ci);
            for (int th = 0; th < (P ? 1 : 2); th++) {
                double dmax = 0; /* each against the one-thread plain run */
                for (int k = 0; k < T * R; k++)
                    for (int plain = 0; plain < 2; plain++)
                        dmax = fmax(dmax, fabs(y[th][plain][k] - y[0][1][k]));
                for (int k = 0; k < H; k++) dmax = fmax(dmax, fabs(c[th][0][k] - c[0][1][k]));
                CHECK(dmax < 2e-6, "case %zu variant %d, %d threads: woven run %.2g off",
                      ci, variant, th + 1, dmax);
            }
            for (int th = 0; th < 2; th++) free(y[th][0]), free(y[th][1]);
        }
        free(W); free(U); free(proj); free(x);
        fl_lstm_free(L);
    }
}

static void test_amx_gemm(void) {
    if (!fl_amx_available()) {
        printf("note: no AMX on this CPU; its kernel is not tested here\n");
        return;
    }
    const int shapes[][3] = {{1, 16, 1},     {33, 20, 33},   {64, 80, 64},
                             {130, 100, 100}, {300, 512, 128}, {7, 36, 300},
                             {600, 64, 1024}, {257, 1000, 48}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        const size_t ldx = (size_t)K + 3, ldw = (size_t)N + 5, ldc = (size_t)N + 7;
        float *x = malloc(sizeof(float) * M * ldx), *w = malloc(sizeof(float) * K * ldw);
        float *C = malloc(sizeof(float) * M * ldc);
        void *scratch = malloc(fl_amx_scratch_bytes(K, M));
        for (size_t i = 0; i < (size_t)M * ldx; i++) x[i] = nrand(2.0f);
        for (size_t i = 0; i < (size_t)K * ldw; i++) w[i] = nrand(0.3f);
        for (size_t i = 0; i < (size_t)M * ldc; i++) C[i] = 7.0f;
        CHECK(fl_amx_gemm(x, M, K, ldx, w, N, ldw, C, ldc, scratch) == 1,
              "M=%d N=%d K=%d: declined", M, N, K);
        double worst = 0;
        int untouched = 1;
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                double sum = 0, mag = 0;
                for (int k = 0; k < K; k++) {
                    const double p = (double)x[i * ldx + k] * w[k * ldw + j];
                    sum += p;
                    mag += fabs(p);
                }
                const double e = fabs(C[i * ldc + j] - sum) / (mag + 1e-30);
                if (e > worst) worst = e;
            }
            for (size_t j = N; j < ldc; j++) untouched &= C[i * ldc + j] == 7.0f;
        }
        CHECK(worst <= 3e-7, "M=%d N=%d K=%d: error %.3g of sum |x w|", M, N, K, worst);
        CHECK(untouched, "M=%d N=%d K=%d: wrote past N", M, N, K);
        const float bad[3] = {NAN, INFINITY, 3e30f};
        for (int b = 0; b < 3; b++) {
            const float keep = x[(M - 1) * ldx + K - 1];
            x[(M - 1) * ldx + K - 1] = bad[b];
            CHECK(fl_amx_gemm(x, M, K, ldx, w, N, ldw, C, ldc, scratch) == 0,
                  "M=%d N=%d K=%d: accepted %g in x", M, N, K, bad[b]);
            x[(M - 1) * ldx + K - 1] = keep;
            w[(K - 1) * ldw + N - 1] = bad[b];
            CHECK(fl_amx_gemm(x, M, K, ldx, w, N, ldw, C, ldc, scratch) == 0,
                  "M=%d N=%d K=%d: accepted %g in W", M, N, K, bad[b]);
            w[(K - 1) * ldw + N - 1] = 0.1f;
        }
        free(x); free(w); free(C); free(scratch);
    }
}

/* A layer's long run with the input projection on AMX: within 2e-6 of the
 * same run on BLAS (no_amx) and its workspace holds the AMX scratch; an
 * infinity in x (check_finite off) sends the projection back to BLAS, so
 * that run is bit-identical to the BLAS one. no_woven: a batch-1 run
 * would otherwise weave its projection into the recurrent products. */
static void test_amx_forward(void) {
    if (!fl_amx_available()) return;
    const int I = 96, H = 64, T = 300;
    fl_lstm *L = random_layer(I, H, 0.1f);
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    float *x = malloc(sizeof(float) * T * I), *y[2];
    for (int k = 0; k < T * I; k++) x[k] = nrand(1.0f);
    y[0] = malloc(sizeof(float) * T * H);
    y[1] = malloc(sizeof(float) * T * H);
    for (int with_inf = 0; with_inf < 2; with_inf++) {
        if (with_inf) x[5 * I + 7] = INFINITY;
        size_t ws[2];
        for (int no_amx = 0; no_amx < 2; no_amx++) {
            float h[64] = {0}, c[64] = {0};
            fl_run run = {.batch = 1, .steps = T, .x = x, .h = h, .c = c,
                               .y = y[no_amx], .no_amx = no_amx,
                               .no_woven = 1};
            fl_lstm_run_workspace_size(L, &run, &ws[no_amx]);
            void *work = malloc(ws[no_amx]);
            CHECK(fl_lstm_forward(L, &blas, &run, work, ws[no_amx]) == FL_OK, "amx run");
            free(work);
        }
        CHECK(ws[0] >= ws[1] + fl_amx_scratch_bytes(I, T) - 64,
              "no room for the AMX scratch: %zu vs %zu bytes", ws[0], ws[1]);
        double worst = 0;
        for (int k = 0; k < T * H; k++)
            if (fabs(y[0][k] - y[1][k]) > worst || y[0][k] != y[0][k])
                worst = y[0][k] != y[0][k] ? 1.0 : fabs(y[0][k] - y[1][k]);
        if (with_inf)
            CHECK(memcmp(y[0], y[1], sizeof(float) * T * H) == 0,
                  "an infinity in x did not send the projection to BLAS");
        else
            CHECK(worst <= 2e-6, "AMX run differs from BLAS by %.3g", worst);
    }
    free(y[0]); free(y[1]); free(x);
    fl_lstm_free(L);
}

/* The activations inside the cell (fl_gates_row), read back through c:
 * with z_f = -120 (f = 0) and z_i = z_o = 30 (i = o = 1), c = tanh(z_g) and
 * h = tanh(c); with z_g = 30 (g = 1) instead, c = sigmoid(z_i). With
 * AVX-512 the cell's tanh is accurate in absolute terms (fl_math512.h,
 * fl_sig_tanh16: 1.3e-7), its sigmoid in relative ones; both over whole
 * vectors and a masked tail. */
static void test_cell_activations(void) {
    enum { H = 1000, ROUNDS = 40 };
    float *z = malloc(sizeof(float) * 4 * H), *c = malloc(sizeof(float) * H);
    float *h = malloc(sizeof(float) * H), *bias = calloc(4 * H, sizeof(float));
    const fl_gate_params gp = {.units = H, .act = FL_ACT_TANH,
                               .ract = FL_ACT_SIGMOID, .bias = bias};
    double tanh_abs = 0, tanh_h_abs = 0, sig_rel = 0;
    int special_ok = 1;
    float xs[H]; /* the round's arguments (z is scratch for fl_gates_row) */
    for (int r = 0; r < 2 * ROUNDS; r++) {
        const int sig = r >= ROUNDS; /* second half: sigmoid */
        for (int j = 0; j < H; j++) {
            /* x from -20 to 20 over all rounds, plus a random offset */
            const float x = -20.0f + 40.0f * (float)((r % ROUNDS) * H + j) /
                                         (ROUNDS * H) + nrand(1e-3f);
            xs[j] = x;
            z[j] = sig ? x : 30.0f;            /* i */
            z[H + j] = -120.0f;                /* f */
            z[2 * H + j] = 30.0f;              /* o */
            z[3 * H + j] = sig ? 30.0f : x;    /* g */
            c[j] = nrand(5.0f);
        }
        fl_gates_row(&gp, z, c, h);
        for (int j = 0; j < H; j++) {
            if (sig) {
                const double want = 1.0 / (1.0 + exp(-(double)xs[j]));
                const double e = fabs(c[j] - want) / want;
                if (e > sig_rel) sig_rel = e;
            } else {
                const double e = fabs(c[j] - tanh((double)xs[j]));
                const double eh = fabs(h[j] - tanh((double)c[j]));
                if (e > tanh_abs) tanh_abs = e;
                if (eh > tanh_h_abs) tanh_h_abs = eh;
            }
        }
    }
    CHECK(tanh_abs <= 2e-7, "cell tanh(g) off by %.3g", tanh_abs);
    CHECK(tanh_h_abs <= 2e-7, "cell tanh(c) off by %.3g", tanh_h_abs);
    CHECK(sig_rel <= 2.5e-7, "cell sigmoid off by %.3g (relative)", sig_rel);
    /* NaN goes through; infinities and large values saturate */
    const float special[] = {NAN, INFINITY, -INFINITY, 100.0f, -100.0f, 1e30f, -1e30f};
    const float want[] = {NAN, 1.0f, -1.0f, 1.0f, -1.0f, 1.0f, -1.0f};
    fl_gate_params g7 = gp;
    g7.units = 7; /* rows of 7 units: one masked vector */
    for (int j = 0; j < 7; j++) {
        z[j] = 30.0f, z[7 + j] = -120.0f, z[14 + j] = 30.0f;
        z[21 + j] = special[j];
        c[j] = 0.0f;
    }
    fl_gates_row(&g7, z, c, h);
    for (int j = 0; j < 7; j++)
        if (!(want[j] != want[j] ? c[j] != c[j] : c[j] == want[j])) special_ok = 0;
    CHECK(special_ok, "cell tanh of NaN / inf / large values");
    free(z), free(c), free(h), free(bias);
}

int main(void) {
    test_cell_activations();
    test_pool();
    test_threads_agree();
    test_configs();
    test_every_path();
    test_batch_panels();
    test_sweep_same_result();
    test_wh_panels();
    test_panel_layout();
    test_panels_agree();
    test_woven();
    test_thread_copies();
    test_review_regressions();
    test_errors();
    test_split_equals_whole();
    test_amx_gemm();
    test_amx_forward();
    test_layers();
    test_chains();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
