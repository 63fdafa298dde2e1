/*
 * test_chain.c - fl_chain_step against the same layers run one call at a
 * time (masking and the dense, affine, activation and softmax stages in
 * double precision), with masked steps, threads on a pool, a failed step
 * that must leave the state as it was, and the argument errors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "naive_blas.h"
#include "test_util.h"

enum { F = 6, H1 = 40, H2 = 24, D = 12, O = 5, T = 12, N_STAGES = 8 };

typedef struct chain_fixture {
    fl_lstm *lstm;
    fl_layer *gru;
    float *dk, *db, *scale, *shift, *ok;
    fl_run runs[2];
    float *h1, *c1, *h2;
    unsigned char seen1[8], seen2[8];
    void *works[2];
    fl_stage st[N_STAGES];
} chain_fixture;

static float *rand_array(size_t n, float scale) {
    float *a = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = nrand(scale);
    return a;
}

static void make_layers(chain_fixture *f) {
    fl_lstm_desc ld = {.input_size = F,
                       .units = H1,
                       .activation = FL_ACT_TANH,
                       .recurrent_activation = FL_ACT_SIGMOID};
    float *W = rand_array((size_t)F * 4 * H1, 0.3f);
    float *U = rand_array((size_t)H1 * 4 * H1, 0.2f), *b = rand_array(4 * H1, 0.1f);
    fl_lstm_create(&ld, W, U, b, NULL, NULL, &f->lstm);
    free(W), free(U), free(b);
    fl_layer_desc gd = {.kind = FL_LAYER_GRU,
                        .input_size = H1,
                        .units = H2,
                        .activation = FL_ACT_TANH,
                        .recurrent_activation = FL_ACT_SIGMOID,
                        .reset_after = 1};
    W = rand_array((size_t)H1 * 3 * H2, 0.3f),
    U = rand_array((size_t)H2 * 3 * H2, 0.2f);
    b = rand_array(3 * H2, 0.1f);
    float *rb = rand_array(3 * H2, 0.1f);
    fl_layer_create(&gd, W, U, b, rb, &f->gru);
    free(W), free(U), free(b), free(rb);
    f->dk = rand_array((size_t)H2 * D, 0.4f), f->db = rand_array(D, 0.1f);
    f->scale = rand_array(D, 1.0f), f->shift = rand_array(D, 0.5f);
    f->ok = rand_array((size_t)D * O, 0.5f);
}

/* The stages; recurrent state zeroed, runs on `threads` (pool or NULL). */
static void make_chain(chain_fixture *f, int B, int threads, fl_pool *pool) {
    f->h1 = calloc((size_t)B * H1, sizeof(float));
    f->c1 = calloc((size_t)B * H1, sizeof(float));
    f->h2 = calloc((size_t)B * H2, sizeof(float));
    memset(f->seen1, 0, sizeof f->seen1), memset(f->seen2, 0, sizeof f->seen2);
    memset(f->runs, 0, sizeof f->runs);
    f->runs[0] = (fl_run){.batch = B,
                          .steps = 1,
                          .batch_major = 1,
                          .h = f->h1,
                          .c = f->c1,
                          .seen = f->seen1,
                          .check_finite = 1,
                          .threads = threads,
                          .pool = pool,
                          .keep_copies = threads > 1};
    f->runs[1] = (fl_run){.batch = B,
                          .steps = 1,
                          .batch_major = 1,
                          .h = f->h2,
                          .seen = f->seen2,
                          .mask_output = FL_MASK_ZERO,
                          .check_finite = 1};
    size_t bytes[2];
    float probe;
    f->runs[0].y = &probe;
    fl_lstm_run_workspace_size(f->lstm, &f->runs[0], &bytes[0]);
    f->runs[1].y_last = &probe;
    fl_layer_workspace_size(f->gru, &f->runs[1], &bytes[1]);
    f->runs[0].y = f->runs[1].y_last = NULL;
    for (int k = 0; k < 2; k++)
        f->works[k] = aligned_alloc(64, (bytes[k] + 63) / 64 * 64);
    fl_stage *s = f->st;
    memset(s, 0, sizeof f->st);
    s[0] = (fl_stage){
        .kind = FL_STAGE_MASKING, .in_size = F, .out_size = F, .mask_value = 0.5f};
    s[1] = (fl_stage){.kind = FL_STAGE_LSTM,
                      .in_size = F,
                      .out_size = H1,
                      .lstm = f->lstm,
                      .run = &f->runs[0],
                      .work = f->works[0],
                      .work_bytes = bytes[0],
                      .masked = 1,
                      .sequence_output = 1};
    s[2] = (fl_stage){.kind = FL_STAGE_LAYER,
                      .in_size = H1,
                      .out_size = H2,
                      .layer = f->gru,
                      .run = &f->runs[1],
                      .work = f->works[1],
                      .work_bytes = bytes[1],
                      .masked = 1};
    s[3] = (fl_stage){.kind = FL_STAGE_DENSE,
                      .in_size = H2,
                      .out_size = D,
                      .kernel = f->dk,
                      .bias = f->db,
                      .activation = FL_ACT_TANH};
    s[4] = (fl_stage){.kind = FL_STAGE_AFFINE,
                      .in_size = D,
                      .out_size = D,
                      .scale = f->scale,
                      .shift = f->shift};
    s[5] = (fl_stage){.kind = FL_STAGE_ACTIVATION,
                      .in_size = D,
                      .out_size = D,
                      .activation = FL_ACT_SIGMOID};
    s[6] = (fl_stage){.kind = FL_STAGE_DENSE,
                      .in_size = D,
                      .out_size = O,
                      .kernel = f->ok,
                      .activation = FL_ACT_LINEAR};
    s[7] = (fl_stage){.kind = FL_STAGE_SOFTMAX, .in_size = O, .out_size = O};
}

static void free_chain(chain_fixture *f) {
    free(f->h1), free(f->c1), free(f->h2), free(f->works[0]), free(f->works[1]);
}

static void free_layers(chain_fixture *f) {
    fl_lstm_free(f->lstm), fl_layer_free(f->gru);
    free(f->dk), free(f->db), free(f->scale), free(f->shift), free(f->ok);
}

/* The same step, one layer call at a time, on the states in `r` (a chain
 * fixture used only for its states, runs and workspaces). */
static void by_hand(chain_fixture *r, const fl_blas *blas, int B, const float *x,
                    double *out) {
    float xm[8 * F], y1[8 * H1], y2[8 * H2];
    unsigned char mask[8];
    for (int b = 0; b < B; b++) {
        int valid = 0;
        for (int j = 0; j < F; j++) valid |= x[b * F + j] != 0.5f;
        mask[b] = (unsigned char)valid;
        for (int j = 0; j < F; j++) xm[b * F + j] = valid ? x[b * F + j] : 0.0f;
    }
    fl_run a = r->runs[0], g = r->runs[1];
    a.steps = g.steps = 1, a.batch_major = g.batch_major = 1;
    a.x = xm, a.mask = mask, a.y = y1;
    g.x = y1, g.mask = mask, g.y_last = y2;
    fl_lstm_forward(r->lstm, blas, &a, r->works[0], r->st[1].work_bytes);
    fl_layer_forward(r->gru, blas, &g, r->works[1], r->st[2].work_bytes);
    r->runs[0].keep_copies = r->runs[0].keep_copies ? 2 : 0;
    for (int b = 0; b < B; b++) {
        double d[D], sum = 0, top = -INFINITY;
        for (int j = 0; j < D; j++) {
            double s = r->db[j];
            for (int i = 0; i < H2; i++) s += (double)y2[b * H2 + i] * r->dk[i * D + j];
            s = tanh(s) * r->scale[j] + r->shift[j];
            d[j] = 1.0 / (1.0 + exp(-s));
        }
        for (int j = 0; j < O; j++) {
            double s = 0;
            for (int i = 0; i < D; i++) s += d[i] * r->ok[i * O + j];
            out[b * O + j] = s, top = s > top ? s : top;
        }
        for (int j = 0; j < O; j++) sum += out[b * O + j] = exp(out[b * O + j] - top);
        for (int j = 0; j < O; j++) out[b * O + j] /= sum;
    }
}

/* Row b of step t: random, or all mask_value (a masked step). */
static void step_input(float *x, int B, int t) {
    for (int b = 0; b < B; b++)
        for (int j = 0; j < F; j++)
            x[b * F + j] = (t + b) % 4 == 3 ? 0.5f : nrand(1.0f);
}

static void run_against_by_hand(chain_fixture *f, int B, int threads, fl_pool *pool) {
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    chain_fixture r = *f;
    make_chain(f, B, threads, pool);
    make_chain(&r, B, 1, NULL);
    size_t bytes = 0;
    CHECK(fl_chain_workspace_size(f->st, N_STAGES, B, &bytes) == FL_OK, "size");
    void *work = malloc(bytes);
    float x[8 * F], out[8 * O];
    double want[8 * O], err = 0;
    for (int t = 0; t < T; t++) {
        step_input(x, B, t);
        int failed = 7;
#ifdef FL_COUNT_MALLOC
        long before = n_allocs;
#endif
        fl_status st = fl_chain_step(f->st, N_STAGES, &blas, B, x, out,
                                     (char *)work + (t & 1), bytes - 1, &failed);
#ifdef FL_COUNT_MALLOC
        CHECK(n_allocs == before, "chain step allocated %ld times", n_allocs - before);
#endif
        CHECK(st == FL_OK && failed == -1, "chain step %d: %d", t, (int)st);
        by_hand(&r, &blas, B, x, want);
        for (int i = 0; i < B * O; i++) err = fmax(err, fabs(out[i] - want[i]));
    }
    CHECK(err < 2e-6, "chain vs layer by layer (B=%d, threads %d): %g", B, threads,
          err);
    CHECK(!memcmp(f->h1, r.h1, sizeof(float) * B * H1) &&
              !memcmp(f->c1, r.c1, sizeof(float) * B * H1) &&
              !memcmp(f->h2, r.h2, sizeof(float) * B * H2) &&
              !memcmp(f->seen2, r.seen2, (size_t)B),
          "chain states equal the layers' own");
    free(work);
    free_chain(&r);
    free_chain(f);
}

/* A step whose input has a NaN in a valid row fails at the LSTM stage and
 * leaves every state as it was. */
static void test_failed_step_keeps_state(chain_fixture *f) {
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    const int B = 3;
    make_chain(f, B, 1, NULL);
    size_t bytes = 0;
    fl_chain_workspace_size(f->st, N_STAGES, B, &bytes);
    void *work = malloc(bytes);
    float x[3 * F], out[3 * O], h1[3 * H1], c1[3 * H1], h2[3 * H2];
    for (int t = 0; t < 3; t++) {
        step_input(x, B, t);
        fl_chain_step(f->st, N_STAGES, &blas, B, x, out, work, bytes, NULL);
    }
    memcpy(h1, f->h1, sizeof h1), memcpy(c1, f->c1, sizeof c1);
    memcpy(h2, f->h2, sizeof h2);
    x[F + 2] = NAN;
    int failed = -1;
    fl_status st =
        fl_chain_step(f->st, N_STAGES, &blas, B, x, out, work, bytes, &failed);
    CHECK(st == FL_ERR_NONFINITE && failed == 1, "NaN input: %d at stage %d", (int)st,
          failed);
    CHECK(!memcmp(h1, f->h1, sizeof h1) && !memcmp(c1, f->c1, sizeof c1) &&
              !memcmp(h2, f->h2, sizeof h2),
          "a failed step leaves the state as it was");
    free(work);
    free_chain(f);
}

static void test_chain_errors(chain_fixture *f) {
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    make_chain(f, 2, 1, NULL);
    size_t bytes = 0;
    fl_chain_workspace_size(f->st, N_STAGES, 2, &bytes);
    void *work = malloc(bytes);
    float x[2 * F] = {0}, out[2 * O];
    CHECK(fl_chain_step(f->st, N_STAGES, &blas, 2, x, out, work, bytes - 65, NULL) ==
              FL_ERR_ARG,
          "small workspace");
    CHECK(fl_chain_step(f->st, N_STAGES, &blas, 3, x, out, work, bytes, NULL) ==
              FL_ERR_SHAPE,
          "batch other than the runs'");
    CHECK(fl_chain_step(f->st + 1, N_STAGES - 1, &blas, 2, x, out, work, bytes, NULL) ==
              FL_ERR_ARG,
          "a masked stage with no masking stage before it");
    CHECK(fl_chain_step(f->st, 0, &blas, 2, x, out, work, bytes, NULL) == FL_ERR_ARG,
          "no stages");
    CHECK(fl_chain_step(f->st, N_STAGES, &blas, 2, NULL, out, work, bytes, NULL) ==
              FL_ERR_ARG,
          "no input");
    f->st[3].in_size = H2 + 1;
    CHECK(fl_chain_workspace_size(f->st, N_STAGES, 2, &bytes) == FL_ERR_SHAPE,
          "sizes that do not chain");
    f->st[3].in_size = H2;
    f->st[5].activation = (fl_activation)99;
    CHECK(fl_chain_workspace_size(f->st, N_STAGES, 2, &bytes) == FL_ERR_UNSUPPORTED,
          "unknown activation");
    f->st[5].activation = FL_ACT_SIGMOID;
    f->st[4].scale = NULL;
    CHECK(fl_chain_workspace_size(f->st, N_STAGES, 2, &bytes) == FL_ERR_ARG,
          "affine without scale");
    free(work);
    free_chain(f);
}

/* Token ids to table rows, id 0 masked with mask_zero (the LSTM then
 * carries its state: zeros before a row's first valid step); ids outside
 * the table fail at the embedding stage. */
static void test_embedding(chain_fixture *f) {
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    const int B = 3, V = 7;
    float *table = rand_array((size_t)V * F, 1.0f);
    make_chain(f, B, 1, NULL);
    fl_stage st[2] = {
        {.kind = FL_STAGE_EMBEDDING,
         .in_size = 1,
         .out_size = F,
         .kernel = table,
         .vocab = V,
         .mask_zero = 1},
        f->st[1],
    };
    size_t bytes = 0;
    CHECK(fl_chain_workspace_size(st, 2, B, &bytes) == FL_OK, "embedding chain");
    void *work = malloc(bytes);
    float ids[3] = {0.0f, 3.0f, 6.9f}, out[3 * H1];
    CHECK(fl_chain_step(st, 2, &blas, B, ids, out, work, bytes, NULL) == FL_OK,
          "embedding step");
    int zero_row = 1;
    for (int j = 0; j < H1; j++) zero_row &= out[j] == 0.0f;
    CHECK(zero_row && f->seen1[0] == 0 && f->seen1[1] == 1 && f->seen1[2] == 1,
          "id 0 is a masked step");
    /* the LSTM step of rows 1 and 2 is that of their table rows, 3 and 6 */
    float xs[3 * F];
    memcpy(xs, table, F * sizeof(float));
    memcpy(xs + F, table + 3 * F, F * sizeof(float));
    memcpy(xs + 2 * F, table + 6 * F, F * sizeof(float));
    chain_fixture r = *f;
    make_chain(&r, B, 1, NULL);
    unsigned char mask[3] = {0, 1, 1};
    float y[3 * H1];
    fl_run run = r.runs[0];
    run.x = xs, run.mask = mask, run.y = y;
    fl_lstm_forward(r.lstm, &blas, &run, r.works[0], r.st[1].work_bytes);
    CHECK(!memcmp(out + H1, y + H1, 2 * H1 * sizeof(float)), "rows by token id");
    const float bad[3][3] = {{0, 7, 1}, {-1, 0, 0}, {0, NAN, 0}};
    for (int k = 0; k < 3; k++) {
        int failed = -1;
        CHECK(fl_chain_step(st, 2, &blas, B, bad[k], out, work, bytes, &failed) ==
                      FL_ERR_ARG &&
                  failed == 0,
              "id case %d outside the table", k);
    }
    st[0].mask_zero = 0;
    CHECK(fl_chain_workspace_size(st, 2, B, &bytes) == FL_ERR_ARG,
          "a masked stage after an embedding without mask_zero");
    free(work), free(table);
    free_chain(&r);
    free_chain(f);
}

/* Layer normalization over each row against a double reference, centred
 * or by root mean square, with and without scale and shift. */
static void test_layer_norm(void) {
    fl_blas blas = {fl_naive_sgemm, fl_naive_sgemv};
    enum { B = 3, N = 20 };
    float x[B * N], out[B * N], gamma[N], beta[N];
    for (int i = 0; i < B * N; i++) x[i] = nrand(2.0f) + 0.5f;
    for (int j = 0; j < N; j++) gamma[j] = nrand(1.0f), beta[j] = nrand(1.0f);
    for (int rms = 0; rms < 2; rms++)
        for (int affine = 0; affine < 2; affine++) {
            fl_stage st = {.kind = FL_STAGE_LAYER_NORM,
                           .in_size = N,
                           .out_size = N,
                           .scale = affine ? gamma : NULL,
                           .shift = affine ? beta : NULL,
                           .epsilon = 1e-3f,
                           .rms_scaling = rms};
            size_t bytes = 0;
            fl_chain_workspace_size(&st, 1, B, &bytes);
            void *work = malloc(bytes);
            CHECK(fl_chain_step(&st, 1, &blas, B, x, out, work, bytes, NULL) == FL_OK,
                  "layer norm step");
            double err = 0;
            for (int b = 0; b < B; b++) {
                double mean = 0, sq = 0;
                for (int j = 0; j < N; j++) mean += rms ? 0 : x[b * N + j] / (double)N;
                for (int j = 0; j < N; j++)
                    sq += (x[b * N + j] - mean) * (x[b * N + j] - mean) / N;
                for (int j = 0; j < N; j++) {
                    double v = (x[b * N + j] - mean) / sqrt(sq + 1e-3);
                    if (affine) v = v * gamma[j] + beta[j];
                    err = fmax(err, fabs(out[b * N + j] - v));
                }
            }
            CHECK(err < 1e-6, "layer norm (rms %d, affine %d): %g", rms, affine, err);
            free(work);
        }
    fl_stage bad = {
        .kind = FL_STAGE_LAYER_NORM, .in_size = N, .out_size = N, .epsilon = -1.0f};
    size_t bytes;
    CHECK(fl_chain_workspace_size(&bad, 1, B, &bytes) == FL_ERR_ARG,
          "negative epsilon");
}

void test_chains(void) {
    chain_fixture f;
    make_layers(&f);
    run_against_by_hand(&f, 1, 1, NULL);
    run_against_by_hand(&f, 5, 1, NULL);
    fl_pool *pool = NULL;
    if (fl_pool_create(2, &pool) == FL_OK) {
        run_against_by_hand(&f, 1, 2, pool);
        fl_pool_free(pool);
    }
    run_against_by_hand(&f, 1, 2, NULL);
    test_failed_step_keeps_state(&f);
    test_chain_errors(&f);
    test_embedding(&f);
    test_layer_norm();
    free_layers(&f);
}
