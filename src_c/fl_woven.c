/*
 * fl_woven.c - the batch-1 recurrent product with the next chunk's input
 * projection woven into it.
 *
 * At batch 1 the recurrent product z += h @ U reads every element of U once
 * per step: it waits on the cache (L2 or L3) and leaves the FMA units about
 * half idle. The input projection X @ Wx of a chunk of steps is the
 * opposite: a GEMM limited by the FMA units. Here each row of U that
 * streams past is followed by one k-step of a projection tile (16 rows =
 * the next chunk's 16 steps, x 16 gate columns), so the out-of-order core
 * runs both at once; the projection adds Wx / 16 of reads per step.
 *
 * Sums are in the same order as fl_matvec (each output adds the rows of U
 * in order, from its starting value) and as a GEMM that adds k in order
 * (OpenBLAS's own order for k up to a few hundred: the outputs there are
 * bit-identical to the BLAS path).
 */
#include "fl_woven.h"

#include "fl_kernels.h"

/* the panel layout's panels are this kernel's 128-column blocks */
_Static_assert(FL_PANEL_COLS == 128, "fl_matvec_woven reads 128-wide panels");

/* Rows of a projection tile: the chunk's steps (its columns: one vector). */
#define TR FL_WOVEN_STEPS

/* The tile's Wx rows are ldw floats apart, often in L3: where the caller
 * asks (fl_woven_gemm.prefetch), each is asked for this many k-steps ahead:
 * without it, weaving lost to the plain path for weights in L3. */
#define WX_PREFETCH_ROWS 24

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FL_HAVE_WOVEN 1
#include <immintrin.h>
#endif

void fl_woven_x_fill(const float *FL_RESTRICT x, int rows, int k, int ldx,
                     float *FL_RESTRICT xt) {
    /* k-step kk of row r at xt[kk * TR + r]; rows past `rows` repeat the
     * last one (their sums are computed but not stored) */
    for (int kk = 0; kk < k; kk++)
        for (int r = 0; r < TR; r++) {
            const int row = r < rows ? r : rows - 1;
            xt[(size_t)kk * TR + (size_t)r] = x[(size_t)row * (size_t)ldx + (size_t)kk];
        }
}

#ifdef FL_HAVE_WOVEN
#define FL_AVX512 __attribute__((target("avx512f,avx512vl,fma")))

/* The tiles of one call, in order; tile t covers the columns
 * [16 t, 16 t + 16). The tile in flight reads its 16 x values of k-step kk
 * at xt + kk * 16 and its Wx row at w + kk * ldw. */
typedef struct tile_state {
    const fl_woven_gemm *g;
    int tile, tile_end;
    int left; /* k-steps still to do in the tile in flight (0: none) */
    int c0;
    const float *w;
    __mmask16 cmask; /* the tile's valid columns */
} tile_state;

static void tile_start(tile_state *t) {
    const fl_woven_gemm *g = t->g;
    if (t->tile >= t->tile_end) {
        t->left = 0;
        return;
    }
    t->c0 = t->tile * 16;
    t->w = fl_wcol(g->w, g->ps, g->col + t->c0);
    const int nc = g->n - t->c0 < 16 ? g->n - t->c0 : 16;
    t->cmask = (__mmask16)((1u << nc) - 1u);
    t->left = g->k;
}

FL_AVX512 static void tile_finish(tile_state *t, __m512 *s) {
    const fl_woven_gemm *g = t->g;
    for (int r = 0; r < TR; r++) {
        if (r < g->rows)
            _mm512_mask_storeu_ps(g->out + (size_t)r * g->ldo + t->c0, t->cmask, s[r]);
        s[r] = _mm512_setzero_ps();
    }
    t->tile++;
    tile_start(t);
}

/* acc (NZ vectors, the last one masked by m) += v[k] * row k of the block */
#define MV_ROW(NZ)                                                                     \
    {                                                                                  \
        const __m512 hb = _mm512_set1_ps(v[k]);                                        \
        const float *wr = Wb + (size_t)k * ldb;                                        \
        for (int i = 0; i < NZ; i++)                                                   \
            acc[i] = _mm512_fmadd_ps(                                                  \
                hb, _mm512_maskz_loadu_ps(i == NZ - 1 ? m : 0xffff, wr + 16 * i),      \
                acc[i]);                                                               \
    }

/* one k-step of the tile in flight: s_r += x[r][kk] * Wx[kk, c0 : c0+16] */
#define TILE_KSTEP                                                                     \
    {                                                                                  \
        const __m512 wv = _mm512_maskz_loadu_ps(cm, wt);                               \
        if (wx_prefetch)                                                               \
            _mm_prefetch((const char *)(wt + WX_PREFETCH_ROWS * ldw), _MM_HINT_T0);    \
        s0 = _mm512_fmadd_ps(_mm512_set1_ps(xt[0]), wv, s0);                           \
        s1 = _mm512_fmadd_ps(_mm512_set1_ps(xt[1]), wv, s1);                           \
        s2 = _mm512_fmadd_ps(_mm512_set1_ps(xt[2]), wv, s2);                           \
        s3 = _mm512_fmadd_ps(_mm512_set1_ps(xt[3]), wv, s3);                           \
        s4 = _mm512_fmadd_ps(_mm512_set1_ps(xt[4]), wv, s4);                           \
        s5 = _mm512_fmadd_ps(_mm512_set1_ps(xt[5]), wv, s5);                           \
        s6 = _mm512_fmadd_ps(_mm512_set1_ps(xt[6]), wv, s6);                           \
        s7 = _mm512_fmadd_ps(_mm512_set1_ps(xt[7]), wv, s7);                           \
        s8 = _mm512_fmadd_ps(_mm512_set1_ps(xt[8]), wv, s8);                           \
        s9 = _mm512_fmadd_ps(_mm512_set1_ps(xt[9]), wv, s9);                           \
        s10 = _mm512_fmadd_ps(_mm512_set1_ps(xt[10]), wv, s10);                        \
        s11 = _mm512_fmadd_ps(_mm512_set1_ps(xt[11]), wv, s11);                        \
        s12 = _mm512_fmadd_ps(_mm512_set1_ps(xt[12]), wv, s12);                        \
        s13 = _mm512_fmadd_ps(_mm512_set1_ps(xt[13]), wv, s13);                        \
        s14 = _mm512_fmadd_ps(_mm512_set1_ps(xt[14]), wv, s14);                        \
        s15 = _mm512_fmadd_ps(_mm512_set1_ps(xt[15]), wv, s15);                        \
        xt += TR;                                                                      \
        wt += ldw;                                                                     \
    }

/* Rows k0 .. k1 of a block with the tile in flight, one of its k-steps
 * after every row (PAIR 0) or every second row (PAIR 1); the tile's sums
 * live in s0..s15 here, in s[] between segments. */
#define SEGMENT(NZ, PAIR)                                                              \
    {                                                                                  \
        const int avail = (rows - k0) >> PAIR;                                         \
        const int nk = avail < ts.left ? avail : ts.left;                              \
        const int k1 = k0 + (nk << PAIR);                                              \
        const float *xt = g->xt + (size_t)(g->k - ts.left) * TR;                       \
        const float *wt = ts.w + (size_t)(g->k - ts.left) * ldw;                       \
        const __mmask16 cm = ts.cmask;                                                 \
        __m512 s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];                             \
        __m512 s4 = s[4], s5 = s[5], s6 = s[6], s7 = s[7];                             \
        __m512 s8 = s[8], s9 = s[9], s10 = s[10], s11 = s[11];                         \
        __m512 s12 = s[12], s13 = s[13], s14 = s[14], s15 = s[15];                     \
        for (int k = k0; k < k1; k++) {                                                \
            MV_ROW(NZ)                                                                 \
            if (PAIR) {                                                                \
                k++;                                                                   \
                MV_ROW(NZ)                                                             \
            }                                                                          \
            TILE_KSTEP                                                                 \
        }                                                                              \
        s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;                                    \
        s[4] = s4, s[5] = s5, s[6] = s6, s[7] = s7;                                    \
        s[8] = s8, s[9] = s9, s[10] = s10, s[11] = s11;                                \
        s[12] = s12, s[13] = s13, s[14] = s14, s[15] = s15;                            \
        ts.left -= nk;                                                                 \
        if (ts.left == 0) tile_finish(&ts, s);                                         \
        k0 = k1;                                                                       \
    }

/* z[j0 : j0 + 16*NZ] += v @ (block's rows) with the sums in registers;
 * while a tile is in flight, its k-steps go with the rows (segments end
 * where a tile does) */
#define BLOCK(NZ)                                                                      \
    {                                                                                  \
        __m512 acc[NZ];                                                                \
        for (int i = 0; i < NZ; i++)                                                   \
            acc[i] = _mm512_maskz_loadu_ps(i == NZ - 1 ? m : 0xffff, z + j0 + 16 * i); \
        int k0 = 0;                                                                    \
        while (k0 < rows) {                                                            \
            if (ts.left > 0 && pair && rows - k0 >= 2) {                               \
                SEGMENT(NZ, 1)                                                         \
            } else if (ts.left > 0) {                                                  \
                SEGMENT(NZ, 0)                                                         \
            } else {                                                                   \
                for (int k = k0; k < rows; k++) MV_ROW(NZ)                             \
                k0 = rows;                                                             \
            }                                                                          \
        }                                                                              \
        for (int i = 0; i < NZ; i++)                                                   \
            _mm512_mask_storeu_ps(z + j0 + 16 * i, i == NZ - 1 ? m : 0xffff, acc[i]);  \
    }

/* The k-steps of the tiles still to do that the rows could not carry (and
 * a masked step's: rows = 0), the tile's sums in registers as in SEGMENT
 * rather than in s[] per k-step. A function of its own, called only when
 * many are left: inlined, or called on every step, it cost the woven
 * loops of I=H layers a few percent (their register allocation). */
FL_AVX512 __attribute__((noinline)) static void tiles_rest(tile_state *t, __m512 *s) {
    const int wx_prefetch = t->g && t->g->prefetch;
    while (t->left > 0) { /* (no tile in flight: g may be NULL) */
        const fl_woven_gemm *g = t->g;
        const size_t ldw = (size_t)g->ldw;
        const float *xt = g->xt + (size_t)(g->k - t->left) * TR;
        const float *wt = t->w + (size_t)(g->k - t->left) * ldw;
        const __mmask16 cm = t->cmask;
        __m512 s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
        __m512 s4 = s[4], s5 = s[5], s6 = s[6], s7 = s[7];
        __m512 s8 = s[8], s9 = s[9], s10 = s[10], s11 = s[11];
        __m512 s12 = s[12], s13 = s[13], s14 = s[14], s15 = s[15];
        for (int kk = t->left; kk > 0; kk--) TILE_KSTEP
        t->left = 0;
        s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
        s[4] = s4, s[5] = s5, s[6] = s6, s[7] = s7;
        s[8] = s8, s[9] = s9, s[10] = s10, s[11] = s11;
        s[12] = s12, s[13] = s13, s[14] = s14, s[15] = s15;
        tile_finish(t, s);
    }
}

/* One body, compiled twice: with and without the Wx prefetch (a run-time
 * test inside the woven loops cost I=H=512 8%). */
FL_AVX512 static inline __attribute__((always_inline)) void
matvec_side_body(const float *W, int rows, int n, int ld, size_t ps, const float *v,
                 float *z, int backward, const fl_woven_gemm *g, int tile0, int tile1,
                 const int wx_prefetch) {
    tile_state ts = {.g = g, .tile = tile0, .tile_end = tile1, .left = 0};
    const size_t ldw = g ? (size_t)g->ldw : 0;
    __m512 s[TR];
    for (int r = 0; r < TR; r++) s[r] = _mm512_setzero_ps();
    if (g) tile_start(&ts);
    /* one tile k-step per two rows when the rows are at least twice the
     * k-steps: the FMAs then spread evenly over the cache-bound rows */
    const long long ksteps = g ? (long long)(tile1 - tile0) * g->k : 0;
    const int pair = (long long)rows * ((n + 127) / 128) >= 2 * ksteps;
    /* blocks of 128 columns, then one of the rest (up to 127, in vectors
     * of 16, the last one masked); in the panel layout block b is panel b */
    const int nfull = n / 128, rest = n % 128;
    const int nblocks = nfull + (rest > 0);
    for (int q = 0; q < nblocks; q++) {
        const int b = backward ? nblocks - 1 - q : q;
        const int j0 = b * 128;
        const float *Wb = ps ? W + (size_t)b * ps : W + j0;
        const size_t ldb = (size_t)ld;
        if (b < nfull) {
            const __mmask16 m = 0xffff;
            BLOCK(8)
        } else {
            const int nz = (rest + 15) / 16;
            const __mmask16 m =
                (__mmask16)(rest % 16 ? (1u << (rest % 16)) - 1u : 0xffffu);
            switch (nz) { /* NZ must be a constant for registers */
            case 1:
                BLOCK(1) break;
            case 2:
                BLOCK(2) break;
            case 3:
                BLOCK(3) break;
            case 4:
                BLOCK(4) break;
            case 5:
                BLOCK(5) break;
            case 6:
                BLOCK(6) break;
            case 7:
                BLOCK(7) break;
            default:
                BLOCK(8) break;
            }
        }
    }
    if (ts.left > 16 || (ts.left > 0 && rows == 0))
        tiles_rest(&ts, s); /* many k-steps left over */
    while (ts.left > 0) {   /* a few k-steps the rows could not carry */
        const float *xt = g->xt + (size_t)(g->k - ts.left) * TR;
        const float *wt = ts.w + (size_t)(g->k - ts.left) * ldw;
        for (; ts.left > 0; ts.left--, xt += TR, wt += ldw) {
            const __m512 wv = _mm512_maskz_loadu_ps(ts.cmask, wt);
            for (int r = 0; r < TR; r++)
                s[r] = _mm512_fmadd_ps(_mm512_set1_ps(xt[r]), wv, s[r]);
        }
        tile_finish(&ts, s);
    }
}

FL_AVX512 static void matvec_side_plain(const float *W, int rows, int n, int ld,
                                        size_t ps, const float *v, float *z,
                                        int backward, const fl_woven_gemm *g, int tile0,
                                        int tile1) {
    matvec_side_body(W, rows, n, ld, ps, v, z, backward, g, tile0, tile1, 0);
}

FL_AVX512 static void matvec_side_prefetch(const float *W, int rows, int n, int ld,
                                           size_t ps, const float *v, float *z,
                                           int backward, const fl_woven_gemm *g,
                                           int tile0, int tile1) {
    matvec_side_body(W, rows, n, ld, ps, v, z, backward, g, tile0, tile1, 1);
}
#endif /* FL_HAVE_WOVEN */

int fl_woven_available(void) {
#ifdef FL_HAVE_WOVEN
    return fl_cpu_has_avx512();
#else
    return 0;
#endif
}

void fl_matvec_woven(const float *FL_RESTRICT W, int rows, int n, int ld, size_t ps,
                     const float *FL_RESTRICT v, float *FL_RESTRICT z, int backward,
                     const fl_woven_gemm *side, int step, int steps) {
#ifdef FL_HAVE_WOVEN
    /* the tiles (16 columns each) spread evenly over the steps */
    const long long tiles = side ? (side->n + 15) / 16 : 0;
    const int tile0 = (int)(tiles * step / steps);
    const int tile1 = (int)(tiles * (step + 1) / steps);
    if (tile0 < tile1 && side->prefetch)
        matvec_side_prefetch(W, rows, n, ld, ps, v, z, backward, side, tile0, tile1);
    else
        matvec_side_plain(W, rows, n, ld, ps, v, z, backward,
                          tile0 < tile1 ? side : NULL, tile0, tile1);
#else
    (void)W, (void)rows, (void)n, (void)ld, (void)ps, (void)v, (void)z, (void)backward;
    (void)side, (void)step, (void)steps;
#endif
}
