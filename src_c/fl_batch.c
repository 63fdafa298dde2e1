/*
 * fl_batch.c - whole LSTM steps of a batch in one pass over packed slabs.
 *
 * For every block of FL_SLAB_UNITS units, a slab holds the columns of all
 * four gates of those units, [Wx; Wh] row after row, contiguous:
 *
 *   slab[k][q * 16 + j] = gate q (packed order i, f, o, g) of unit
 *                          16 * block + j, from row k of [Wx; Wh],
 *   followed by one row of bias in the same order.
 *
 * The weights are packed per call (into the caller's workspace, so the
 * model stays immutable and nothing allocates). Per step and block, a
 * register tile of TR batch rows x 64 columns starts from the bias and adds
 * x_t @ Wx and h @ Wh while the slab streams past (contiguous, prefetched).
 * i, f, o, g of each unit sit 16 columns apart in the tile, so the tile
 * holds whole units: its pre-activations go to a small buffer that stays
 * in L1 (one group of up to FL_BATCH_GROUP rows), and the gates run on it
 * right away. No (steps x batch x 4H) gate buffer is written or read, and
 * there is no separate input-projection GEMM.
 *
 * Measured, B=64 T=100 I=128 H=256 (AVX-512, 1 thread): 441 us per step
 * before (BLAS input GEMM + fl_gemm + gate loop) -> 294 us in the kernel;
 * the register tiles run at 80-90% of the core's FMA peak.
 */
#include "fl_batch.h"

#include <string.h>

#include "fl_math.h"
#include "fl_math512.h"

size_t fl_batch_slab_floats(int input_size, int units) {
    const size_t blocks = ((size_t)units + FL_SLAB_UNITS - 1) / FL_SLAB_UNITS;
    return blocks * ((size_t)input_size + (size_t)units + 1) * FL_SLAB_WIDTH;
}

/* One source row (4H columns, packed gate order, H apart; `row` as
 * fl_wcol takes it) into one slab row of block `blk`; units past H are
 * zeros. A block's 16 columns of a gate are adjacent in either layout (the
 * panel layout needs H % 16 == 0). */
static void pack_row(const float *row, size_t ps, int H, int blk, float *dst) {
    const int u0 = blk * FL_SLAB_UNITS;
    const int nu = H - u0 < FL_SLAB_UNITS ? H - u0 : FL_SLAB_UNITS;
    for (int q = 0; q < 4; q++) {
        float *d = dst + q * FL_SLAB_UNITS;
        memcpy(d, fl_wcol(row, ps, q * H + u0), (size_t)nu * sizeof(float));
        for (int j = nu; j < FL_SLAB_UNITS; j++) d[j] = 0.0f;
    }
}

void fl_batch_pack(const float *wx, int ldx, const float *wh, int ldh, size_t ps,
                   const float *bias, int input_size, int units, float *slabs) {
    const int I = input_size, H = units;
    const int blocks = (H + FL_SLAB_UNITS - 1) / FL_SLAB_UNITS;
    const size_t rows = (size_t)I + (size_t)H + 1;
    for (int blk = 0; blk < blocks; blk++) {
        float *p = slabs + (size_t)blk * rows * FL_SLAB_WIDTH;
        for (int k = 0; k < I; k++, p += FL_SLAB_WIDTH)
            pack_row(wx + (size_t)k * ldx, ps, H, blk, p);
        for (int k = 0; k < H; k++, p += FL_SLAB_WIDTH)
            pack_row(wh + (size_t)k * ldh, ps, H, blk, p);
        pack_row(bias, 0, H, blk, p);
    }
}

/* The gates of one batch row for nu units of a block, from its 64
 * pre-activations z = [i | f | o | g] (16 apart): the same formulas and
 * functions as fl_gates.c's sigmoid/tanh loop. */
static inline __attribute__((always_inline)) void gate_block(const float *FL_RESTRICT z,
                                                             int nu,
                                                             float *FL_RESTRICT c,
                                                             float *FL_RESTRICT h) {
    for (int j = 0; j < nu; j++) {
        float i = fl_sigmoidf(z[j]);
        float f = fl_sigmoidf(z[FL_SLAB_UNITS + j]);
        float o = fl_sigmoidf(z[2 * FL_SLAB_UNITS + j]);
        float g = fl_tanhf(z[3 * FL_SLAB_UNITS + j]);
        float cn = f * c[j] + i * g;
        c[j] = cn;
        h[j] = o * fl_tanhf(cn);
    }
}

#ifdef FL_HAVE_MATH512
/* gate_block with AVX-512 intrinsics: 16 units per vector, a masked load
 * and store for the last block of a layer whose H is not a multiple of 16. */
FL_TARGET_V4 __attribute__((always_inline)) static inline void
gate_block16(const float *FL_RESTRICT z, int nu, float *FL_RESTRICT c,
             float *FL_RESTRICT h) {
    fl_cell16(_mm512_loadu_ps(z), _mm512_loadu_ps(z + FL_SLAB_UNITS),
              _mm512_loadu_ps(z + 2 * FL_SLAB_UNITS),
              _mm512_loadu_ps(z + 3 * FL_SLAB_UNITS), c, h, fl_mask16((size_t)nu));
}
#endif

/* The slab row 8 rows ahead (4 cache lines) into L1: a slab of more than
 * ~150 rows does not stay in L1 between row tiles, and the hardware
 * prefetchers alone left the FMA units waiting. Prefetching past the end
 * of a slab is harmless (prefetches do not fault). */
#define FL_PREFETCH_ROW(w)                                                             \
    for (int q = 0; q < 4; q++)                                                        \
        __builtin_prefetch((w) + 8 * FL_SLAB_WIDTH + 16 * q, 0, 3);

/* acc[r] += a[r][k] * (slab row at w), k = 0 .. K-1, w advancing a row
 * per k: the x rows against Wx, then the h rows against Wh. */
#define FL_TILE_ROWS(TR, K)                                                            \
    for (int k = 0; k < (K); k++, w += FL_SLAB_WIDTH) {                                \
        FL_PREFETCH_ROW(w)                                                             \
        for (int r = 0; r < TR; r++) {                                                 \
            const float s = a[r][k];                                                   \
            for (int j = 0; j < FL_SLAB_WIDTH; j++) acc[r][j] += s * w[j];             \
        }                                                                              \
    }

/* Pre-activations of TR rows from r0 on: bias + x @ Wx + h @ Wh, into z
 * (64 floats per row). The accumulators (TR x 64 floats) stay in vector
 * registers for the whole K loop. */
#define FL_BATCH_TILE(TR)                                                              \
    for (; r0 + TR <= r1; r0 += TR) {                                                  \
        float acc[TR][FL_SLAB_WIDTH];                                                  \
        for (int r = 0; r < TR; r++)                                                   \
            for (int j = 0; j < FL_SLAB_WIDTH; j++) acc[r][j] = bias[j];               \
        const float *FL_RESTRICT w = slab;                                             \
        const float *a[TR];                                                            \
        for (int r = 0; r < TR; r++) a[r] = x + (size_t)(r0 + r) * ldxr;               \
        FL_TILE_ROWS(TR, I)                                                            \
        for (int r = 0; r < TR; r++) a[r] = h + (size_t)(r0 + r) * H;                  \
        FL_TILE_ROWS(TR, H)                                                            \
        for (int r = 0; r < TR; r++)                                                   \
            for (int j = 0; j < FL_SLAB_WIDTH; j++)                                    \
                z[(size_t)(r0 + r - g0) * FL_SLAB_WIDTH + j] = acc[r][j];              \
    }

#ifdef FL_HAVE_MATH512
/* FL_BATCH_TILE written with AVX-512 intrinsics for the AVX-512 build: the
 * same sums in the same order (bias, then k ascending), but with the row
 * pointers held in registers (GCC's version of the macro reloaded some from
 * the stack every k). Slab rows and z are 64-byte aligned. */
#define FL_TILE512_K(TR, A)                                                            \
    {                                                                                  \
        const __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16);              \
        const __m512 w2 = _mm512_load_ps(w + 32), w3 = _mm512_load_ps(w + 48);         \
        FL_PREFETCH_ROW(w)                                                             \
        for (int r = 0; r < TR; r++) {                                                 \
            const __m512 s = _mm512_set1_ps(A);                                        \
            acc[r][0] = _mm512_fmadd_ps(s, w0, acc[r][0]);                             \
            acc[r][1] = _mm512_fmadd_ps(s, w1, acc[r][1]);                             \
            acc[r][2] = _mm512_fmadd_ps(s, w2, acc[r][2]);                             \
            acc[r][3] = _mm512_fmadd_ps(s, w3, acc[r][3]);                             \
        }                                                                              \
        w += FL_SLAB_WIDTH;                                                            \
    }

#define FL_DEFINE_TILE512(TR)                                                          \
    FL_TARGET_V4 __attribute__((always_inline)) static inline void tile512_##TR(       \
        const float *FL_RESTRICT slab, const float *FL_RESTRICT bias, int I, int H,    \
        const float *FL_RESTRICT x, size_t ldxr, const float *FL_RESTRICT h,           \
        float *FL_RESTRICT zt) {                                                       \
        __m512 acc[TR][4];                                                             \
        for (int r = 0; r < TR; r++)                                                   \
            for (int q = 0; q < 4; q++) acc[r][q] = _mm512_load_ps(bias + 16 * q);     \
        const float *FL_RESTRICT w = slab;                                             \
        const float *a[TR];                                                            \
        for (int r = 0; r < TR; r++) a[r] = x + (size_t)r * ldxr;                      \
        for (int k = 0; k < I; k++) FL_TILE512_K(TR, a[r][k])                          \
        for (int r = 0; r < TR; r++) a[r] = h + (size_t)r * H;                         \
        for (int k = 0; k < H; k++) FL_TILE512_K(TR, a[r][k])                          \
        for (int r = 0; r < TR; r++)                                                   \
            for (int q = 0; q < 4; q++)                                                \
                _mm512_store_ps(zt + r * FL_SLAB_WIDTH + 16 * q, acc[r][q]);           \
    }
FL_DEFINE_TILE512(6)
FL_DEFINE_TILE512(4)

#define FL_BATCH_TILE512(TR)                                                           \
    for (; r0 + TR <= r1; r0 += TR)                                                    \
        tile512_##TR(slab, bias, I, H, x + (size_t)r0 * ldxr, ldxr,                    \
                     h + (size_t)r0 * H, z + (size_t)(r0 - g0) * FL_SLAB_WIDTH);

/* The gates of rows r0 .. r1-1 of a block with fl_cell16x4, four rows at a
 * time; a group with a skipped row, and the last r1 - r0 < 4 rows, go row by
 * row through gate_block16. */
FL_TARGET_V4 __attribute__((always_inline)) static inline void
gate_rows16(const float *FL_RESTRICT z, int r0, int r1, int nu, int H, int u0,
            float *FL_RESTRICT c, float *FL_RESTRICT h_out,
            const uint8_t *FL_RESTRICT skip) {
    const __mmask16 m = fl_mask16((size_t)nu);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        if (skip && (skip[r] | skip[r + 1] | skip[r + 2] | skip[r + 3])) {
            for (int q = r; q < r + 4; q++)
                if (!skip[q])
                    gate_block16(z + (size_t)(q - r0) * FL_SLAB_WIDTH, nu,
                                 c + (size_t)q * H + u0, h_out + (size_t)q * H + u0);
            continue;
        }
        __m512 zi[4], zf[4], zo[4], zg[4];
        float *cp[4], *hp[4];
        for (int q = 0; q < 4; q++) {
            const float *zq = z + (size_t)(r + q - r0) * FL_SLAB_WIDTH;
            zi[q] = _mm512_loadu_ps(zq);
            zf[q] = _mm512_loadu_ps(zq + FL_SLAB_UNITS);
            zo[q] = _mm512_loadu_ps(zq + 2 * FL_SLAB_UNITS);
            zg[q] = _mm512_loadu_ps(zq + 3 * FL_SLAB_UNITS);
            cp[q] = c + (size_t)(r + q) * H + u0;
            hp[q] = h_out + (size_t)(r + q) * H + u0;
        }
        fl_cell16x4(zi, zf, zo, zg, cp, hp, m);
    }
    for (; r < r1; r++)
        if (!skip || !skip[r])
            gate_block16(z + (size_t)(r - r0) * FL_SLAB_WIDTH, nu,
                         c + (size_t)r * H + u0, h_out + (size_t)r * H + u0);
}
#endif

/* The portable gates of rows r0 .. r1-1 of a block, row by row. */
static inline __attribute__((always_inline)) void
gate_rows(const float *FL_RESTRICT z, int r0, int r1, int nu, int H, int u0,
          float *FL_RESTRICT c, float *FL_RESTRICT h_out,
          const uint8_t *FL_RESTRICT skip) {
    for (int r = r0; r < r1; r++)
        if (!skip || !skip[r])
            gate_block(z + (size_t)(r - r0) * FL_SLAB_WIDTH, nu, c + (size_t)r * H + u0,
                       h_out + (size_t)r * H + u0);
}

#define FL_BATCH_ARGS                                                                  \
    const float *FL_RESTRICT slabs, int I, int H, const float *FL_RESTRICT x,          \
        size_t ldxr, const float *FL_RESTRICT h, int rows, float *FL_RESTRICT c,       \
        float *FL_RESTRICT h_out, const uint8_t *FL_RESTRICT skip,                     \
        float *FL_RESTRICT z

/* Unit blocks outside; inside, groups of up to FL_BATCH_GROUP rows: their
 * pre-activations (a 24 KB buffer that stays in L1), then their gates in
 * one tight loop, whose independent rows keep the vector units busy (the
 * gates right after each register tile ran 1.6x slower: 46 vs 29 us per
 * step at B=64, H=256). Each slab is read once per row tile while it is
 * still in L2; h_out never aliases h. */
#define FL_BATCH_BODY(TILES, GATES)                                                    \
    const int blocks = (H + FL_SLAB_UNITS - 1) / FL_SLAB_UNITS;                        \
    const size_t prow = (size_t)I + (size_t)H + 1;                                     \
    for (int blk = 0; blk < blocks; blk++) {                                           \
        const float *FL_RESTRICT slab = slabs + (size_t)blk * prow * FL_SLAB_WIDTH;    \
        const float *FL_RESTRICT bias = slab + (prow - 1) * FL_SLAB_WIDTH;             \
        const int u0 = blk * FL_SLAB_UNITS;                                            \
        const int nu = H - u0 < FL_SLAB_UNITS ? H - u0 : FL_SLAB_UNITS;                \
        for (int g0 = 0; g0 < rows; g0 += FL_BATCH_GROUP) {                            \
            const int r1 = rows - g0 < FL_BATCH_GROUP ? rows : g0 + FL_BATCH_GROUP;    \
            int r0 = g0;                                                               \
            TILES                                                                      \
            GATES(z, g0, r1, nu, H, u0, c, h_out, skip);                               \
        }                                                                              \
    }

/* Row tiles: AVX-512 6 rows (24 zmm accumulators), then 4, 2, 1; the
 * portable build 2 rows, then 1. */
#define FL_TILES_V4                                                                    \
    FL_BATCH_TILE512(6) FL_BATCH_TILE512(4) FL_BATCH_TILE(2) FL_BATCH_TILE(1)
#define FL_TILES_SMALL FL_BATCH_TILE(2) FL_BATCH_TILE(1)

#ifdef FL_HAVE_MATH512
FL_TARGET_V4 static void batch_step_v4(FL_BATCH_ARGS){
    FL_BATCH_BODY(FL_TILES_V4, gate_rows16)}
#define FL_HAVE_ISA_BATCH 1
#endif

static void batch_step_base(FL_BATCH_ARGS) {
    FL_BATCH_BODY(FL_TILES_SMALL, gate_rows)
}

int fl_batch_preferred(void) {
#ifdef FL_HAVE_ISA_BATCH
    /* AVX2 has 16 vector registers, too few for a register tile of several
     * rows x 64 columns: compiled for AVX2, 2-row tiles ran at 865 us per
     * step (B=64, H=256; 294 us with AVX-512), so AVX2 machines keep the
     * per-step fl_gemm (4 x 16 tiles) and gate loop */
    return fl_cpu_has_avx512();
#else
    return 1; /* a build without per-ISA kernels: portable code either way */
#endif
}

void fl_batch_step(FL_BATCH_ARGS) {
#ifdef FL_HAVE_ISA_BATCH
    if (fl_cpu_has_avx512()) {
        batch_step_v4(slabs, I, H, x, ldxr, h, rows, c, h_out, skip, z);
        return;
    }
#endif
    batch_step_base(slabs, I, H, x, ldxr, h, rows, c, h_out, skip, z);
}
