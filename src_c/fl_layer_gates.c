/*
 * fl_layer_gates.c - gate loops of GRU and simple RNN rows.
 *
 * The common GRU (sigmoid gates, tanh candidate) runs as one fused pass,
 * with fl_math512.h's functions on AVX-512 and compiler-vectorized
 * fl_math.h elsewhere; other activations take a few short passes through
 * fl_act_apply. The new state is h' = n + z * (h - n), i.e.
 * z * h + (1 - z) * n with one rounding fewer.
 */
#include "fl_gates.h"
#include "fl_layer_gates.h"
#include "fl_math.h"
#include "fl_math512.h"

static int standard(const fl_layer *L) {
    return L->desc.recurrent_activation == FL_ACT_SIGMOID &&
           L->desc.activation == FL_ACT_TANH;
}

FL_CLONES
static void gru_fused(size_t H, const float *FL_RESTRICT b,
                      const float *FL_RESTRICT bhn, const float *FL_RESTRICT gx,
                      const float *FL_RESTRICT gh, float *FL_RESTRICT h) {
    for (size_t j = 0; j < H; j++) {
        const float z = fl_sigmoidf(gx[j] + gh[j] + b[j]);
        const float r = fl_sigmoidf(gx[H + j] + gh[H + j] + b[H + j]);
        const float n =
            fl_tanhf(gx[2 * H + j] + b[2 * H + j] + r * (gh[2 * H + j] + bhn[j]));
        h[j] = n + z * (h[j] - n);
    }
}

#ifdef FL_HAVE_MATH512
FL_TARGET_V4 static void gru_fused_v4(size_t H, const float *FL_RESTRICT b,
                                      const float *FL_RESTRICT bhn,
                                      const float *FL_RESTRICT gx,
                                      const float *FL_RESTRICT gh,
                                      float *FL_RESTRICT h) {
    for (size_t j = 0; j < H; j += 16) {
        const __mmask16 m = fl_mask16(H - j);
#define FL_LD(p, k) _mm512_maskz_loadu_ps(m, (p) + (k) * H + j)
        const __m512 z = fl_sigmoid16(
            _mm512_add_ps(_mm512_add_ps(FL_LD(gx, 0), FL_LD(gh, 0)), FL_LD(b, 0)));
        const __m512 r = fl_sigmoid16(
            _mm512_add_ps(_mm512_add_ps(FL_LD(gx, 1), FL_LD(gh, 1)), FL_LD(b, 1)));
        const __m512 hn = _mm512_add_ps(FL_LD(gh, 2), FL_LD(bhn, 0));
        const __m512 n =
            fl_tanh16(_mm512_fmadd_ps(r, hn, _mm512_add_ps(FL_LD(gx, 2), FL_LD(b, 2))));
        const __m512 hp = FL_LD(h, 0);
#undef FL_LD
        _mm512_mask_storeu_ps(h + j, m, _mm512_fmadd_ps(z, _mm512_sub_ps(hp, n), n));
    }
}
#endif

/* gh[0:n] = gx[0:n] + gh[0:n] + b[0:n] */
FL_CLONES
static void add3(size_t n, const float *FL_RESTRICT gx, const float *FL_RESTRICT b,
                 float *FL_RESTRICT gh) {
    for (size_t j = 0; j < n; j++) gh[j] = gx[j] + gh[j] + b[j];
}

/* h = n + z * (h - n) */
FL_CLONES
static void blend(size_t H, const float *FL_RESTRICT z, const float *FL_RESTRICT n,
                  float *FL_RESTRICT h) {
    for (size_t j = 0; j < H; j++) h[j] = n[j] + z[j] * (h[j] - n[j]);
}

void fl_gru_row(const fl_layer *L, const float *FL_RESTRICT gx, float *FL_RESTRICT gh,
                float *FL_RESTRICT h) {
    const size_t H = (size_t)L->desc.units;
    if (standard(L)) {
#ifdef FL_HAVE_MATH512
        if (fl_cpu_has_avx512()) {
            gru_fused_v4(H, L->bias, L->bhn, gx, gh, h);
            return;
        }
#endif
        gru_fused(H, L->bias, L->bhn, gx, gh, h);
        return;
    }
    add3(2 * H, gx, L->bias, gh);
    fl_act_apply(L->desc.recurrent_activation, gh, 2 * H);
    const float *r = gh + H;
    float *n = gh + 2 * H;
    for (size_t j = 0; j < H; j++)
        n[j] = gx[2 * H + j] + L->bias[2 * H + j] + r[j] * (n[j] + L->bhn[j]);
    fl_act_apply(L->desc.activation, n, H);
    blend(H, gh, n, h);
}

void fl_gru_row_gates(const fl_layer *L, const float *FL_RESTRICT gx,
                      float *FL_RESTRICT gh, const float *FL_RESTRICT h,
                      float *FL_RESTRICT rh) {
    const size_t H = (size_t)L->desc.units;
    add3(2 * H, gx, L->bias, gh);
    fl_act_apply(L->desc.recurrent_activation, gh, 2 * H);
    for (size_t j = 0; j < H; j++) rh[j] = gh[H + j] * h[j];
}

void fl_gru_row_update(const fl_layer *L, const float *FL_RESTRICT gx,
                       float *FL_RESTRICT gh, float *FL_RESTRICT h) {
    const size_t H = (size_t)L->desc.units;
    float *n = gh + 2 * H;
    add3(H, gx + 2 * H, L->bias + 2 * H, n);
    fl_act_apply(L->desc.activation, n, H);
    blend(H, gh, n, h);
}

void fl_simple_row(const fl_layer *L, const float *FL_RESTRICT gx,
                   float *FL_RESTRICT gh, float *FL_RESTRICT h) {
    const size_t H = (size_t)L->desc.units;
    add3(H, gx, L->bias, gh);
    fl_act_apply(L->desc.activation, gh, H);
    for (size_t j = 0; j < H; j++) h[j] = gh[j];
}
