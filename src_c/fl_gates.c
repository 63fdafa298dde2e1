/*
 * fl_gates.c - fused gate loop of one LSTM step for one batch row.
 *
 * Row layout (packed by fl_lstm_create): z = [z_i | z_f | z_o | z_g], each H
 * wide, so the three recurrent-activation gates are contiguous.
 *
 *   i = ract(z_i + b_i + p_i*c_prev)     f = ract(z_f + b_f + p_f*c_prev)
 *   g = act(z_g + b_g)                   c = clip(f*c_prev + i*g)
 *   o = ract(z_o + b_o + p_o*c)          m = o * act(c)
 *
 * (peephole terms only with peepholes; the output gate sees the new c).
 */
#include <math.h>

#include "fl_gates.h"
#include "fl_math.h"
#include "fl_math512.h"

/* SELU constants as Keras/TF define them. */
#define FL_SELU_ALPHA 1.67326324235437728481704299167f
#define FL_SELU_SCALE 1.05070098735548049341933498529f

static inline float fl_clipf(float v, float lo, float hi) {
    v = v < lo ? lo : v; /* NaN fails both tests and passes through */
    return v > hi ? hi : v;
}

static inline float fl_act_scalar(fl_activation act, float x) {
    switch (act) {
    case FL_ACT_TANH:
        return fl_tanhf(x);
    case FL_ACT_SIGMOID:
        return fl_sigmoidf(x);
    case FL_ACT_HARD_SIGMOID_K2:
        return fl_clipf(0.2f * x + 0.5f, 0.0f, 1.0f);
    case FL_ACT_HARD_SIGMOID_K3:
        return fl_clipf(x / 6.0f + 0.5f, 0.0f, 1.0f);
    case FL_ACT_RELU:
        return x < 0.0f ? 0.0f : x;
    case FL_ACT_LINEAR:
        return x;
    case FL_ACT_SOFTSIGN:
        return x / (1.0f + fabsf(x));
    case FL_ACT_ELU:
        return x > 0.0f ? x : expm1f(x);
    case FL_ACT_SELU:
        return FL_SELU_SCALE * (x > 0.0f ? x : FL_SELU_ALPHA * expm1f(x));
    case FL_ACT_SOFTPLUS: /* log(1 + e^x) without overflow */
        return (x > 0.0f ? x : 0.0f) + log1pf(fl_expf(-fabsf(x)));
    case FL_ACT_EXPONENTIAL:
        return fl_expf(x);
    }
    return x; /* unreachable: activations are validated at create */
}

/* One loop per activation so each loop body is branch-free and vectorizes;
 * the switch is outside the loops. */
#define FL_ACT_LOOP(expr)                                                              \
    for (size_t k = 0; k < n; k++) {                                                   \
        float x = v[k];                                                                \
        v[k] = (expr);                                                                 \
    }                                                                                  \
    return

#ifdef FL_HAVE_MATH512
/* Sigmoid and tanh loops with fl_math512.h's AVX-512 functions (the last
 * n % 16 elements through a masked load and store). */
#define FL_ACT512_LOOP(fn)                                                             \
    for (size_t k = 0; k < n; k += 16) {                                               \
        const __mmask16 m = fl_mask16(n - k);                                          \
        _mm512_mask_storeu_ps(v + k, m, fn(_mm512_maskz_loadu_ps(m, v + k)));          \
    }

FL_TARGET_V4 static void act_sigmoid_v4(float *FL_RESTRICT v, size_t n){
    FL_ACT512_LOOP(fl_sigmoid16)} FL_TARGET_V4
    static void act_tanh_v4(float *FL_RESTRICT v, size_t n){FL_ACT512_LOOP(fl_tanh16)}
#endif

FL_CLONES
    static void act_apply_portable(fl_activation act, float *FL_RESTRICT v, size_t n);

void fl_act_apply(fl_activation act, float *FL_RESTRICT v, size_t n) {
#ifdef FL_HAVE_MATH512
    if (act == FL_ACT_SIGMOID && fl_cpu_has_avx512()) {
        act_sigmoid_v4(v, n);
        return;
    }
    if (act == FL_ACT_TANH && fl_cpu_has_avx512()) {
        act_tanh_v4(v, n);
        return;
    }
#endif
    act_apply_portable(act, v, n);
}

FL_CLONES
static void act_apply_portable(fl_activation act, float *FL_RESTRICT v, size_t n) {
    switch (act) {
    case FL_ACT_TANH:
        FL_ACT_LOOP(fl_tanhf(x));
    case FL_ACT_SIGMOID:
        FL_ACT_LOOP(fl_sigmoidf(x));
    case FL_ACT_HARD_SIGMOID_K2:
        FL_ACT_LOOP(fl_clipf(0.2f * x + 0.5f, 0.0f, 1.0f));
    case FL_ACT_HARD_SIGMOID_K3:
        FL_ACT_LOOP(fl_clipf(x / 6.0f + 0.5f, 0.0f, 1.0f));
    case FL_ACT_RELU:
        FL_ACT_LOOP(x < 0.0f ? 0.0f : x);
    case FL_ACT_LINEAR:
        return;
    default: /* rare activations that call libm: scalar loop */
        for (size_t k = 0; k < n; k++) v[k] = fl_act_scalar(act, v[k]);
        return;
    }
}

fl_status fl_activation_apply(fl_activation act, float *v, size_t n) {
    if ((int)act < 0 || (int)act >= FL_ACT_COUNT) return FL_ERR_UNSUPPORTED;
    if (!v && n) return FL_ERR_ARG;
    fl_act_apply(act, v, n);
    return FL_OK;
}

/* The common case (sigmoid gates, tanh cell, no peepholes, no clip) in one
 * pass: every element is read and written once. */
FL_CLONES
static void gates_sigmoid_tanh(int units, const float *FL_RESTRICT bias,
                               float *FL_RESTRICT z, float *FL_RESTRICT c,
                               float *FL_RESTRICT out) {
    const size_t H = (size_t)units;
    const float *FL_RESTRICT zi = z;
    const float *FL_RESTRICT zf = z + H;
    const float *FL_RESTRICT zo = z + 2 * H;
    const float *FL_RESTRICT zg = z + 3 * H;
    const float *FL_RESTRICT bi = bias;
    const float *FL_RESTRICT bf = bias + H;
    const float *FL_RESTRICT bo = bias + 2 * H;
    const float *FL_RESTRICT bg = bias + 3 * H;
    for (size_t j = 0; j < H; j++) {
        float i = fl_sigmoidf(zi[j] + bi[j]);
        float f = fl_sigmoidf(zf[j] + bf[j]);
        float o = fl_sigmoidf(zo[j] + bo[j]);
        float g = fl_tanhf(zg[j] + bg[j]);
        float cn = f * c[j] + i * g;
        c[j] = cn;
        out[j] = o * fl_tanhf(cn);
    }
}

/* Every other combination: a few short passes over the row, each a simple
 * loop. The row (4H floats) stays in L1 between passes. */
FL_CLONES
static void gates_general(const fl_gate_params *p, float *FL_RESTRICT z,
                          float *FL_RESTRICT c, float *FL_RESTRICT out) {
    const size_t H = (size_t)p->units;
    float *FL_RESTRICT zi = z;
    float *FL_RESTRICT zf = z + H;
    float *FL_RESTRICT zo = z + 2 * H;
    float *FL_RESTRICT zg = z + 3 * H;
    const float *FL_RESTRICT b = p->bias;

    for (size_t j = 0; j < 4 * H; j++) z[j] += b[j];
    if (p->peep) {
        const float *FL_RESTRICT pi = p->peep;
        const float *FL_RESTRICT pf = p->peep + H;
        for (size_t j = 0; j < H; j++) {
            zi[j] += pi[j] * c[j];
            zf[j] += pf[j] * c[j];
        }
        fl_act_apply(p->ract, z, 2 * H);
    } else {
        fl_act_apply(p->ract, z, 3 * H);
    }
    fl_act_apply(p->act, zg, H);
    for (size_t j = 0; j < H; j++) c[j] = zf[j] * c[j] + zi[j] * zg[j];
    if (p->use_cell_clip) {
        const float lim = p->cell_clip;
        for (size_t j = 0; j < H; j++) c[j] = fl_clipf(c[j], -lim, lim);
    }
    if (p->peep) {
        const float *FL_RESTRICT po = p->peep + 2 * H;
        for (size_t j = 0; j < H; j++) zo[j] += po[j] * c[j];
        fl_act_apply(p->ract, zo, H);
    }
    for (size_t j = 0; j < H; j++) out[j] = c[j];
    fl_act_apply(p->act, out, H);
    for (size_t j = 0; j < H; j++) out[j] *= zo[j];
}

#ifdef FL_HAVE_MATH512
/* gates_sigmoid_tanh with fl_math512.h: 64 units at a time as four
 * interleaved vectors, then 16 at a time (a masked load and store for the
 * last H % 16). */
FL_TARGET_V4 static void gates_sigmoid_tanh_v4(int units, const float *FL_RESTRICT bias,
                                               const float *FL_RESTRICT z,
                                               float *FL_RESTRICT c,
                                               float *FL_RESTRICT out) {
    const size_t H = (size_t)units;
    size_t j = 0;
    for (; j + 64 <= H; j += 64) { /* 4 x 16 units, interleaved */
        __m512 zi[4], zf[4], zo[4], zg[4];
        float *cp[4], *hp[4];
        for (size_t q = 0; q < 4; q++) {
            const size_t u = j + 16 * q;
#define FL_PRE(g)                                                                      \
    _mm512_add_ps(_mm512_loadu_ps(z + (g) * H + u), _mm512_loadu_ps(bias + (g) * H + u))
            zi[q] = FL_PRE(FL_GATE_I);
            zf[q] = FL_PRE(FL_GATE_F);
            zo[q] = FL_PRE(FL_GATE_O);
            zg[q] = FL_PRE(FL_GATE_G);
#undef FL_PRE
            cp[q] = c + u;
            hp[q] = out + u;
        }
        fl_cell16x4(zi, zf, zo, zg, cp, hp, (__mmask16)0xffff);
    }
    for (; j < H; j += 16) {
        const __mmask16 m = fl_mask16(H - j);
#define FL_PRE(q)                                                                      \
    _mm512_add_ps(_mm512_maskz_loadu_ps(m, z + (q) * H + j),                           \
                  _mm512_maskz_loadu_ps(m, bias + (q) * H + j))
        fl_cell16(FL_PRE(FL_GATE_I), FL_PRE(FL_GATE_F), FL_PRE(FL_GATE_O),
                  FL_PRE(FL_GATE_G), c + j, out + j, m);
#undef FL_PRE
    }
}
#endif

void fl_gates_row(const fl_gate_params *p, float *FL_RESTRICT z, float *FL_RESTRICT c,
                  float *FL_RESTRICT out) {
    if (p->ract == FL_ACT_SIGMOID && p->act == FL_ACT_TANH && !p->peep &&
        !p->use_cell_clip) {
#ifdef FL_HAVE_MATH512
        if (fl_cpu_has_avx512()) {
            gates_sigmoid_tanh_v4(p->units, p->bias, z, c, out);
            return;
        }
#endif
        gates_sigmoid_tanh(p->units, p->bias, z, c, out);
    } else {
        gates_general(p, z, c, out);
    }
}
