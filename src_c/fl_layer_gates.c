/*
 * fl_layer_gates.c - gate loops of GRU and simple RNN rows.
 *
 * The common GRU (sigmoid gates, tanh candidate) runs as one fused pass,
 * with fl_math512.h's functions on AVX-512 and compiler-vectorized
 * fl_math.h elsewhere; other activations take a few short passes through
 * fl_act_apply. The new state is h' = c + z * (h - c) for candidate c,
 * i.e. z * h + (1 - z) * c with one rounding fewer. Each call covers one
 * range of units (all of them, or one thread's part).
 */
#include "fl_gates.h"
#include "fl_layer_gates.h"
#include "fl_math.h"
#include "fl_math512.h"

static int standard(const fl_layer *L) {
    return L->desc.recurrent_activation == FL_ACT_SIGMOID &&
           L->desc.activation == FL_ACT_TANH;
}

/* In every loop below, gate block k of a row starts k * H floats after
 * its block 0, and the loop covers n units of each block. */
FL_CLONES
static void gru_fused(size_t H, size_t n, const float *FL_RESTRICT b,
                      const float *FL_RESTRICT bhn, const float *FL_RESTRICT gx,
                      const float *FL_RESTRICT gh, float *FL_RESTRICT h) {
    for (size_t j = 0; j < n; j++) {
        const float z = fl_sigmoidf(gx[j] + gh[j] + b[j]);
        const float r = fl_sigmoidf(gx[H + j] + gh[H + j] + b[H + j]);
        const float c =
            fl_tanhf(gx[2 * H + j] + b[2 * H + j] + r * (gh[2 * H + j] + bhn[j]));
        h[j] = c + z * (h[j] - c);
    }
}

#ifdef FL_HAVE_MATH512
FL_TARGET_V4 static void gru_fused_v4(size_t H, size_t n, const float *FL_RESTRICT b,
                                      const float *FL_RESTRICT bhn,
                                      const float *FL_RESTRICT gx,
                                      const float *FL_RESTRICT gh,
                                      float *FL_RESTRICT h) {
    for (size_t j = 0; j < n; j += 16) {
        const __mmask16 m = fl_mask16(n - j);
#define FL_LD(p, k) _mm512_maskz_loadu_ps(m, (p) + (k) * H + j)
        const __m512 z = fl_sigmoid16(
            _mm512_add_ps(_mm512_add_ps(FL_LD(gx, 0), FL_LD(gh, 0)), FL_LD(b, 0)));
        const __m512 r = fl_sigmoid16(
            _mm512_add_ps(_mm512_add_ps(FL_LD(gx, 1), FL_LD(gh, 1)), FL_LD(b, 1)));
        const __m512 hn = _mm512_add_ps(FL_LD(gh, 2), FL_LD(bhn, 0));
        const __m512 c =
            fl_tanh16(_mm512_fmadd_ps(r, hn, _mm512_add_ps(FL_LD(gx, 2), FL_LD(b, 2))));
        const __m512 hp = FL_LD(h, 0);
#undef FL_LD
        _mm512_mask_storeu_ps(h + j, m, _mm512_fmadd_ps(z, _mm512_sub_ps(hp, c), c));
    }
}
#endif

/* gh[0:n] = gx[0:n] + gh[0:n] + b[0:n] */
FL_CLONES
static void add3(size_t n, const float *FL_RESTRICT gx, const float *FL_RESTRICT b,
                 float *FL_RESTRICT gh) {
    for (size_t j = 0; j < n; j++) gh[j] = gx[j] + gh[j] + b[j];
}

/* h = c + z * (h - c) */
FL_CLONES
static void blend(size_t n, const float *FL_RESTRICT z, const float *FL_RESTRICT c,
                  float *FL_RESTRICT h) {
    for (size_t j = 0; j < n; j++) h[j] = c[j] + z[j] * (h[j] - c[j]);
}

/* Blocks g0 .. g1-1 of gh: gx + gh + bias, then activation a. */
static void activate_blocks(const fl_layer *L, fl_units u, int g0, int g1,
                            const float *gx, float *gh, fl_activation a) {
    const size_t H = (size_t)L->desc.units;
    for (size_t g = (size_t)g0; g < (size_t)g1; g++) {
        const size_t o = g * H + u.u0;
        add3(u.n, gx + o, L->bias + o, gh + o);
        fl_act_apply(a, gh + o, u.n);
    }
}

void fl_gru_row(const fl_layer *L, fl_units u, const float *FL_RESTRICT gx,
                float *FL_RESTRICT gh, float *FL_RESTRICT h) {
    const size_t H = (size_t)L->desc.units, u0 = u.u0;
    if (standard(L)) {
#ifdef FL_HAVE_MATH512
        if (fl_cpu_has_avx512()) {
            gru_fused_v4(H, u.n, L->bias + u0, L->bhn + u0, gx + u0, gh + u0, h + u0);
            return;
        }
#endif
        gru_fused(H, u.n, L->bias + u0, L->bhn + u0, gx + u0, gh + u0, h + u0);
        return;
    }
    activate_blocks(L, u, 0, 2, gx, gh, L->desc.recurrent_activation);
    const float *z = gh + u0, *r = gh + H + u0;
    const float *bn = L->bias + 2 * H + u0, *bhn = L->bhn + u0, *xn = gx + 2 * H + u0;
    float *c = gh + 2 * H + u0;
    for (size_t j = 0; j < u.n; j++) c[j] = xn[j] + bn[j] + r[j] * (c[j] + bhn[j]);
    fl_act_apply(L->desc.activation, c, u.n);
    blend(u.n, z, c, h + u0);
}

void fl_gru_row_gates(const fl_layer *L, fl_units u, const float *FL_RESTRICT gx,
                      float *FL_RESTRICT gh, const float *FL_RESTRICT h,
                      float *FL_RESTRICT rh) {
    const size_t H = (size_t)L->desc.units, u0 = u.u0;
    activate_blocks(L, u, 0, 2, gx, gh, L->desc.recurrent_activation);
    for (size_t j = u0; j < u0 + u.n; j++) rh[j] = gh[H + j] * h[j];
}

void fl_gru_row_update(const fl_layer *L, fl_units u, const float *FL_RESTRICT gx,
                       float *FL_RESTRICT gh, float *FL_RESTRICT h) {
    const size_t H = (size_t)L->desc.units;
    activate_blocks(L, u, 2, 3, gx, gh, L->desc.activation);
    blend(u.n, gh + u.u0, gh + 2 * H + u.u0, h + u.u0);
}

void fl_simple_row(const fl_layer *L, fl_units u, const float *FL_RESTRICT gx,
                   float *FL_RESTRICT gh, float *FL_RESTRICT h) {
    activate_blocks(L, u, 0, 1, gx, gh, L->desc.activation);
    for (size_t j = u.u0; j < u.u0 + u.n; j++) h[j] = gh[j];
}
