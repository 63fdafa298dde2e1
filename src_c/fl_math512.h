/*
 * fl_math512.h - fl_math.h's sigmoid and tanh on 16 floats at a time with
 * AVX-512 intrinsics, for the gate loops of the AVX-512 kernels.
 *
 * Same reductions, polynomial coefficients and branch choices as
 * fl_math.h, with two instructions the portable C cannot name: vrndscaleps
 * rounds x/ln2 to an integer and vscalefps applies 2^n (it saturates to 0
 * and inf by itself). The exp polynomial is evaluated in Estrin's form, not
 * Horner's: a batch-1 step of a small layer waits on the gate chain (two
 * exps deep), and the shorter chain took I=H=32, T=1000 from 0.296 to 0.289
 * us per step (C). Results below FLT_MIN flush to zero under the kernels'
 * FTZ, as fl_expf's do. Measured error against float64: sigmoid 1.5e-7,
 * tanh 1.4e-7 relative (tests/test_math.py runs both through
 * fl_activation_apply).
 *
 * Include only from code compiled for x86-64-v4 (FL_HAVE_MATH512).
 */
#ifndef FL_MATH512_H
#define FL_MATH512_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) &&                 \
    !defined(FL_NO_CLONES)
#define FL_HAVE_MATH512 1
#include <immintrin.h>

#include "fl_internal.h"

#define FL_V4 FL_TARGET_V4 __attribute__((always_inline)) static inline

/* e^x for x <= 100 (NaN propagates); 0 below -103.97, and inf above
 * 88.72 (vscalefps saturates). */
FL_V4 __m512 fl_exp16(__m512 x) {
    /* max(min_x, x) keeps a NaN x (the second operand wins on NaN) */
    const __m512 xc = _mm512_max_ps(_mm512_set1_ps(-103.97208404541016f), x);
    const __m512 nf =
        _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(-2.12194440e-4f), r);
    /* the degree-5 polynomial in Estrin's form: three independent pairs,
     * then two steps in r^2 (a shorter dependency chain than Horner's) */
    const __m512 r2 = _mm512_mul_ps(r, r);
    const __m512 a = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), r,
                                     _mm512_set1_ps(1.3981999507e-3f));
    const __m512 b = _mm512_fmadd_ps(_mm512_set1_ps(8.3334519073e-3f), r,
                                     _mm512_set1_ps(4.1665795894e-2f));
    const __m512 c = _mm512_fmadd_ps(_mm512_set1_ps(1.6666665459e-1f), r,
                                     _mm512_set1_ps(5.0000001201e-1f));
    const __m512 p = _mm512_fmadd_ps(_mm512_fmadd_ps(a, r2, b), r2, c);
    const __m512 er = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(er, nf);
}

FL_V4 __m512 fl_abs16(__m512 x) {
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}

/* 1 / (1 + e^-x). Unlike fl_sigmoidf this needs no branch on the sign:
 * for x < 0, e^-x is large but exact to an ulp, and so is 1 over it (e^-x
 * is capped at e^100 = inf, so x = -inf gives 0, not inf - inf). */
FL_V4 __m512 fl_sigmoid16(__m512 x) {
    /* min(cap, -x) keeps a NaN (the second operand wins on NaN) */
    const __m512 nx =
        _mm512_min_ps(_mm512_set1_ps(100.0f), _mm512_sub_ps(_mm512_setzero_ps(), x));
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, fl_exp16(nx)));
}

/* tanh as fl_tanhf: an odd polynomial below |x| = 0.625, (1-e)/(1+e) with
 * e = exp(-2|x|) above; the sign of x restored. */
FL_V4 __m512 fl_tanh16(__m512 x) {
    const __m512 ax = fl_abs16(x);
    const __m512 z = _mm512_mul_ps(ax, ax);
    __m512 p = _mm512_set1_ps(-5.70498872745e-3f);
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.06390887954e-2f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.37397155531e-2f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.33314422036e-1f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33332819422e-1f));
    const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), ax, ax);
    const __m512 e = fl_exp16(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 large = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    /* ax < 0.625 is false for NaN, which keeps `large` (NaN) */
    const __mmask16 lo = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
    const __m512 t = _mm512_mask_blend_ps(lo, large, small);
    /* copy the sign bit of x */
    return _mm512_castsi512_ps(
        _mm512_ternarylogic_epi32(_mm512_castps_si512(t), _mm512_castps_si512(x),
                                  _mm512_set1_epi32(0x7fffffff), 0xe4));
}

/* sigmoid(a) * tanh(b) as one division: with ea = e^-a and eb = e^-2b,
 *   1 / (1 + ea) * (1 - eb) / (1 + eb) = (1 - eb) / ((1 + ea) (1 + eb)).
 * The cell needs this product twice (i * tanh(g) and o * tanh(c)): two
 * divisions instead of four, and without fl_tanh16's polynomial near 0 and
 * its blend and sign steps. Both exponents are capped at 40 so the product
 * of the denominators stays finite (e^80 < FLT_MAX): sigmoid(a < -40) is
 * then 4e-18 instead of smaller, tanh(b < -20) is -1 either way. The error
 * is absolute: at most 2.5e-7 against float64 (1.3e-7 for tanh alone);
 * relative precision near b = 0 is lost where the result is far below the
 * rounding error of the cell sum it joins; LSTM outputs move < 1e-6. */
FL_V4 __m512 fl_sig_tanh16(__m512 a, __m512 b) {
    const __m512 cap = _mm512_set1_ps(40.0f), one = _mm512_set1_ps(1.0f);
    /* min(cap, -x) keeps a NaN (the second operand wins on NaN) */
    const __m512 ea =
        fl_exp16(_mm512_min_ps(cap, _mm512_sub_ps(_mm512_setzero_ps(), a)));
    const __m512 eb =
        fl_exp16(_mm512_min_ps(cap, _mm512_mul_ps(b, _mm512_set1_ps(-2.0f))));
    return _mm512_div_ps(_mm512_sub_ps(one, eb),
                         _mm512_mul_ps(_mm512_add_ps(one, ea), _mm512_add_ps(one, eb)));
}

/* Lanes 0 .. n-1 of a 16-float vector (all of them for n >= 16). */
static inline __mmask16 fl_mask16(size_t n) {
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* The LSTM cell on one vector of 16 units, from the pre-activations of
 * gates i, f, o, g (bias included):
 *   c = sigmoid(f) * c + sigmoid(i) * tanh(g),  h = sigmoid(o) * tanh(c)
 * (i * tanh(g) and o * tanh(c) by fl_sig_tanh16)
 * (lanes outside m are neither read nor written). */
FL_V4 void fl_cell16(__m512 zi, __m512 zf, __m512 zo, __m512 zg, float *c, float *h,
                     __mmask16 m) {
    const __m512 cn = _mm512_fmadd_ps(fl_sigmoid16(zf), _mm512_maskz_loadu_ps(m, c),
                                      fl_sig_tanh16(zi, zg));
    _mm512_mask_storeu_ps(c, m, cn);
    _mm512_mask_storeu_ps(h, m, fl_sig_tanh16(zo, cn));
}

/* fl_cell16 on four independent vectors of 16 units at once (c[q], h[q]
 * per vector; lanes outside m neither read nor written). Four at a time because
 * each vector is one long dependency chain (exp, divide, exp again): with
 * four interleaved the vector units stay busy (24 vs 33 ns per vector of 16
 * units for one at a time). */
FL_V4 void fl_cell16x4(const __m512 *zi, const __m512 *zf, const __m512 *zo,
                       const __m512 *zg, float *const *c, float *const *h,
                       __mmask16 m) {
    __m512 ig[4], f[4], cn[4];
    for (int q = 0; q < 4; q++) ig[q] = fl_sig_tanh16(zi[q], zg[q]);
    for (int q = 0; q < 4; q++) f[q] = fl_sigmoid16(zf[q]);
    for (int q = 0; q < 4; q++) {
        cn[q] = _mm512_fmadd_ps(f[q], _mm512_maskz_loadu_ps(m, c[q]), ig[q]);
        _mm512_mask_storeu_ps(c[q], m, cn[q]);
    }
    for (int q = 0; q < 4; q++)
        _mm512_mask_storeu_ps(h[q], m, fl_sig_tanh16(zo[q], cn[q]));
}

#undef FL_V4
#endif
#endif /* FL_MATH512_H */
