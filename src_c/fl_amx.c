/*
 * fl_amx.c - the input projection C = X @ W (float32) on AMX tiles.
 *
 * AMX multiplies bfloat16 (8 significant bits) into float32 sums, 16x16x32
 * per instruction, about 16 times the rate of AVX-512 float32 FMAs. Float32
 * accuracy comes from splitting every operand into three bfloat16 parts,
 * v = v0 + v1 + v2 (v1, v2 the rounding residuals; 24 bits in all), and
 * summing the six products of parts whose orders add up to at most 2:
 *     x.w ~ x0.w0 + x0.w1 + x1.w0 + x0.w2 + x1.w1 + x2.w0
 * The dropped terms are below 2^-24 of |x||w|, the size of float32's own
 * rounding, so results stay within float32 GEMM error (tests bound it).
 * Six bfloat16 products still run faster than OpenBLAS's float32 sgemm
 * on AMX cores (benchmarks/results/design_notes.md).
 *
 * Layouts, all in the caller's scratch:
 *   X parts: for each block of 32 rows and each k-block of 32, the parts
 *     0, 1, 2, each as two 16x32 tiles (rows 0-15, 16-31): one contiguous
 *     6 KB run, read front to back;
 *   W parts: one panel of 32 columns at a time, parts 0, 1, 2, each as two
 *     column tiles of Kp/32 k-blocks in the VNNI layout AMX reads (row r of
 *     a tile holds the pairs (W[2r][n], W[2r+1][n]) for its 16 columns).
 * K is padded with zeros to a multiple of 32, rows and columns to 32.
 */
#define _GNU_SOURCE /* syscall() */
#include "fl_amx.h"
#include "fl_internal.h"

#include <string.h>

#if FL_HAVE_AMX
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* Rows of X split per block: the parts of one block stay near L2 size
 * (768 KB), at most 512 rows. */
static int block_rows(int kp) {
    int rows = (int)((768u << 10) / (6u * (unsigned)kp)) / 32 * 32;
    return rows < 32 ? 32 : rows > 512 ? 512 : rows;
}

static int pad32(int n) {
    return (n + 31) / 32 * 32;
}

/* Rows of X split per block for a product of `rows` rows. */
static int split_rows(int kp, int rows) {
    const int mb = block_rows(kp);
    return pad32(rows) < mb ? pad32(rows) : mb;
}

int fl_amx_available(void) {
    if (FL_MAX_ISA < 4) return 0;
    if (!(__builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
          __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512bf16")))
        return 0;
    /* Linux hands out the tile state only on request (once per process;
     * repeating it is harmless) */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

size_t fl_amx_scratch_bytes(int K, int rows) {
    const int kp = pad32(K), mb = split_rows(kp, rows);
    return (size_t)mb * (size_t)kp * 6 + (size_t)kp * 32 * 6 + 32 * 32 * 4 + 64;
}

#define FL_AMX_TARGET                                                                  \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Finite values below 2^100 split and multiply safely (no part or
 * product overflows); anything else goes to BLAS. */
#define SPLIT_LIMIT 1.2676506e30f

/* The three bfloat16 parts of 16 floats; returns a nonzero mask for
 * elements outside the safe range (or NaN). */
FL_AMX_TARGET static inline __mmask16 split16(__m512 v, __m256i *p0, __m256i *p1,
                                              __m256i *p2) {
    const __mmask16 bad =
        _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(SPLIT_LIMIT), _CMP_NLT_UQ);
    __m256i a = (__m256i)_mm512_cvtneps_pbh(v);
    __m512 r = _mm512_sub_ps(
        v, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(a), 16)));
    __m256i b = (__m256i)_mm512_cvtneps_pbh(r);
    r = _mm512_sub_ps(
        r, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16)));
    *p0 = a;
    *p1 = b;
    *p2 = (__m256i)_mm512_cvtneps_pbh(r);
    return bad;
}

static __mmask16 lanes(int n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

/* Rows [0, rows) of X (K wide, ldx apart) into the tiled parts at xs
 * (pad32(rows) rows). Returns 0 if a value is out of range. */
FL_AMX_TARGET static int split_x(const float *x, int rows, int K, size_t ldx, int kp,
                                 uint16_t *xs) {
    const int kb = kp / 32, mp = pad32(rows);
    __mmask16 bad = 0;
    for (int i = 0; i < mp; i++) {
        const float *xr = x + (size_t)i * ldx;
        /* row i: block i/32, tile (i%32)/16, tile row i%16 */
        uint16_t *row = xs + (size_t)(i / 32) * kb * 3072 +
                        (size_t)((i % 32) / 16) * 512 + (size_t)(i % 16) * 32;
        for (int k = 0; k < kp; k += 16) {
            const __m512 v = i < rows ? _mm512_maskz_loadu_ps(lanes(K - k), xr + k)
                                      : _mm512_setzero_ps();
            __m256i p0, p1, p2;
            bad |= split16(v, &p0, &p1, &p2);
            uint16_t *o = row + (size_t)(k / 32) * 3072 + (k % 32);
            _mm256_store_si256((__m256i *)o, p0);
            _mm256_store_si256((__m256i *)(o + 1024), p1);
            _mm256_store_si256((__m256i *)(o + 2048), p2);
        }
    }
    return bad == 0;
}

/* Columns [n0, n0+32) of W (K rows, ldw apart, N columns) into the VNNI
 * parts at ws: part p, column tile j, k-block q at ws + ((p*2 + j)*kb + q)*512.
 * Returns 0 if a value is out of range. */
FL_AMX_TARGET static int split_w(const float *W, int K, int N, size_t ldw, int n0,
                                 int kp, uint16_t *ws) {
    /* interleaves two rows' 16 bf16 each into 16 (row k, row k+1) pairs */
    const __m512i pairs =
        _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                         23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const int kb = kp / 32;
    __mmask16 bad = 0;
    for (int j = 0; j < 2; j++) {
        const int c0 = n0 + 16 * j;
        const __mmask16 cols = lanes(N - c0);
        for (int k = 0; k < kp; k += 2) {
            const __m512 r0 =
                k < K ? _mm512_maskz_loadu_ps(cols, W + (size_t)k * ldw + c0)
                      : _mm512_setzero_ps();
            const __m512 r1 =
                k + 1 < K ? _mm512_maskz_loadu_ps(cols, W + (size_t)(k + 1) * ldw + c0)
                          : _mm512_setzero_ps();
            __m256i a[3], b[3];
            bad |= split16(r0, &a[0], &a[1], &a[2]);
            bad |= split16(r1, &b[0], &b[1], &b[2]);
            for (int p = 0; p < 3; p++) {
                uint16_t *o = ws + ((size_t)(p * 2 + j) * kb + (size_t)(k / 32)) * 512 +
                              (size_t)(k % 32) / 2 * 32;
                const __m512i both =
                    _mm512_inserti64x4(_mm512_castsi256_si512(a[p]), b[p], 1);
                _mm512_store_si512(o, _mm512_permutexvar_epi16(pairs, both));
            }
        }
    }
    return bad == 0;
}

/* C tiles 0-3 += A tiles 4, 5 (rows) x B tiles 6, 7 (columns) */
#define FL_AMX_4()                                                                     \
    _tile_dpbf16ps(0, 4, 6);                                                           \
    _tile_dpbf16ps(1, 4, 7);                                                           \
    _tile_dpbf16ps(2, 5, 6);                                                           \
    _tile_dpbf16ps(3, 5, 7)
#define FL_AMX_A(ap)                                                                   \
    _tile_loadd(4, ap, 64);                                                            \
    _tile_loadd(5, (ap) + tile, 64)
#define FL_AMX_B(bp)                                                                   \
    _tile_loadd(6, bp, 64);                                                            \
    _tile_loadd(7, (bp) + col, 64);                                                    \
    FL_AMX_4()

/* C tiles 0-3 (rows 0-15 / 16-31 x columns 0-15 / 16-31 of a 32x32 block)
 * += the six part products over all k-blocks. a: the block's X parts; b:
 * the panel's W parts (kb k-blocks per column tile). */
FL_AMX_TARGET static void block_product(const uint16_t *a, const uint16_t *b, int kb) {
    const size_t tile = 512, col = (size_t)kb * tile, part = 2 * col;
    for (int q = 0; q < kb; q++) {
        const uint16_t *a0 = a + (size_t)q * 6 * tile, *a1 = a0 + 2 * tile,
                       *a2 = a0 + 4 * tile;
        const uint16_t *b0 = b + (size_t)q * tile, *b1 = b0 + part, *b2 = b1 + part;
        FL_AMX_A(a0); /* x0 with w0, w1, w2 */
        FL_AMX_B(b0);
        FL_AMX_B(b1);
        FL_AMX_B(b2);
        FL_AMX_A(a1); /* x1 with w1, w0 */
        FL_AMX_B(b1);
        FL_AMX_B(b0);
        FL_AMX_A(a2); /* x2 with w0, still in tiles 6 and 7 */
        FL_AMX_4();
    }
}
#undef FL_AMX_A
#undef FL_AMX_B
#undef FL_AMX_4

FL_AMX_TARGET int fl_amx_gemm(const float *x, int M, int K, size_t ldx, const float *W,
                              int N, size_t ldw, float *C, size_t ldc, void *scratch) {
    const int kp = pad32(K), kb = kp / 32, mb = split_rows(kp, M);
    char *s = (char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    uint16_t *xs = (uint16_t *)s;
    uint16_t *ws = xs + (size_t)mb * kp * 3;
    float *edge = (float *)(ws + (size_t)kp * 32 * 3); /* a 32x32 C block */
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    /* a value out of range stops the product half-way (the caller then
     * computes all of C again elsewhere) */
    int ok = 1;
    _tile_loadconfig(&cfg);
    for (int m0 = 0; ok && m0 < M; m0 += mb) {
        const int rows = M - m0 < mb ? M - m0 : mb;
        ok = split_x(x + (size_t)m0 * ldx, rows, K, ldx, kp, xs);
        for (int n0 = 0; ok && n0 < N; n0 += 32) {
            ok = split_w(W, K, N, ldw, n0, kp, ws);
            if (!ok) break;
            for (int r0 = 0; r0 < rows; r0 += 32) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                block_product(xs + (size_t)(r0 / 32) * kb * 3072, ws, kb);
                const int full = r0 + 32 <= rows && n0 + 32 <= N;
                float *c = full ? C + (size_t)(m0 + r0) * ldc + n0 : edge;
                const size_t ld = full ? ldc : 32;
                _tile_stored(0, c, ld * 4);
                _tile_stored(1, c + 16, ld * 4);
                _tile_stored(2, c + 16 * ld, ld * 4);
                _tile_stored(3, c + 16 * ld + 16, ld * 4);
                if (!full) {
                    const int nr = rows - r0 < 32 ? rows - r0 : 32;
                    const int nc = N - n0 < 32 ? N - n0 : 32;
                    for (int i = 0; i < nr; i++)
                        memcpy(C + (size_t)(m0 + r0 + i) * ldc + n0,
                               edge + (size_t)i * 32, (size_t)nc * sizeof(float));
                }
            }
        }
    }
    _tile_release();
    return ok;
}

#else /* no AMX in this build */

int fl_amx_available(void) {
    return 0;
}
size_t fl_amx_scratch_bytes(int K, int rows) {
    (void)K;
    (void)rows;
    return 0;
}
int fl_amx_gemm(const float *x, int M, int K, size_t ldx, const float *W, int N,
                size_t ldw, float *C, size_t ldc, void *scratch) {
    (void)x, (void)M, (void)K, (void)ldx, (void)W, (void)N, (void)ldw, (void)C,
        (void)ldc, (void)scratch;
    return 0;
}

#endif
