/*
 * fl_kernels.c - register-blocked matrix-vector product for one batch row.
 *
 * z = v @ W with W row-major (rows, n): for each block of FL_MV_BLOCK output
 * columns, the partial sums stay in vector registers while every row of W
 * streams past once (an axpy per row, fused multiply-add). Compiled once per
 * instruction set and picked at load time (GCC target_clones), so the default
 * build needs no -march flag.
 */
#include "fl_kernels.h"

#include <string.h>

/* Column blocks: 128 wide while the matrix is cache-resident (8 zmm / 16 ymm
 * of partial sums; each row visit reads 8 consecutive cache lines), 64 wide
 * for larger ones, then the last n % 64 columns: wide blocks help resident
 * matrices, but one streamed from L3 got slower with them, hence
 * FL_MV_WIDE_MAX_BYTES. The sums are the same either way: every output
 * adds its rows in the same order. */
#define FL_MV_WIDE_MAX_BYTES (1u << 20)

/* z[j0 : j0+NB] (+)= v @ W[:, j0 : j0+NB], the NB partial sums in registers */
#define FL_MV_BLOCK(NB, j0)                                                            \
    {                                                                                  \
        float acc[NB];                                                                 \
        for (int j = 0; j < NB; j++) acc[j] = accumulate ? z[j0 + j] : 0.0f;           \
        for (int k = 0; k < rows; k++) {                                               \
            const float s = v[k];                                                      \
            const float *FL_RESTRICT w = W + (size_t)k * (size_t)ld + j0;              \
            for (int j = 0; j < NB; j++) acc[j] += s * w[j];                           \
        }                                                                              \
        for (int j = 0; j < NB; j++) z[j0 + j] = acc[j];                               \
    }

/* Columns [0, n_wide) go in 128-wide blocks, [n_wide, n_main) in 64-wide
 * ones, the last n % 64 in a plain loop. `backward` visits the same blocks
 * in the opposite order: a caller that alternates it from step to step
 * starts each step on the blocks the previous one read last, which are
 * still in cache. A matrix larger than L2 then comes partly from L2 instead
 * of wholly from L3 (cyclic reads of more than the cache size miss on every
 * line). Each output's sum is the same either way. */
FL_CLONES
void fl_matvec(const float *FL_RESTRICT W, int rows, int n, int ld,
               const float *FL_RESTRICT v, float *FL_RESTRICT z, int accumulate,
               int backward) {
    const int n_main = n - n % 64;
    const int wide = (size_t)rows * (size_t)n * sizeof(float) <= FL_MV_WIDE_MAX_BYTES;
    const int n_wide = wide ? n_main - n_main % 128 : 0;
    if (!backward) {
        for (int j0 = 0; j0 < n_wide; j0 += 128) FL_MV_BLOCK(128, j0)
        for (int j0 = n_wide; j0 < n_main; j0 += 64) FL_MV_BLOCK(64, j0)
    }
    if (n_main < n) {
        if (!accumulate)
            for (int j = n_main; j < n; j++) z[j] = 0.0f;
        for (int k = 0; k < rows; k++) { /* the last n % 64 columns */
            const float s = v[k];
            const float *FL_RESTRICT w = W + (size_t)k * (size_t)ld;
            for (int j = n_main; j < n; j++) z[j] += s * w[j];
        }
    }
    if (backward) {
        for (int j0 = n_main - 64; j0 >= n_wide; j0 -= 64) FL_MV_BLOCK(64, j0)
        for (int j0 = n_wide - 128; j0 >= 0; j0 -= 128) FL_MV_BLOCK(128, j0)
    }
}

size_t fl_panels_floats(int rows, int n) {
    const size_t np = ((size_t)n + FL_PANEL_COLS - 1) / FL_PANEL_COLS;
    return np * (size_t)rows * FL_PANEL_COLS;
}

void fl_panels_pack(const float *FL_RESTRICT W, int rows, int n, int ld,
                    float *FL_RESTRICT dst) {
    const size_t ps = (size_t)rows * FL_PANEL_COLS;
    for (int j0 = 0; j0 < n; j0 += FL_PANEL_COLS) {
        const int w = n - j0 < FL_PANEL_COLS ? n - j0 : FL_PANEL_COLS;
        float *d = dst + (size_t)(j0 / FL_PANEL_COLS) * ps;
        for (int k = 0; k < rows; k++)
            memcpy(d + (size_t)k * FL_PANEL_COLS, W + (size_t)k * (size_t)ld + j0,
                   (size_t)w * sizeof(float));
    }
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) &&                 \
    !defined(FL_NO_CLONES)
#define FL_HAVE_ISA_KERNELS 1
#endif

#ifdef FL_HAVE_ISA_KERNELS
/* Two whole panels at once, A's columns into za and B's into zb: 16 zmm
 * of partial sums, each row visit reading from two sequential streams.
 * Streamed from L3 that keeps more lines in flight than one panel at a
 * time; from L2 it makes no difference. */
FL_TARGET_V4 static void matvec_pair_v4(const float *FL_RESTRICT A,
                                        const float *FL_RESTRICT B, int rows,
                                        const float *FL_RESTRICT v,
                                        float *FL_RESTRICT za, float *FL_RESTRICT zb,
                                        int accumulate) {
    float a[FL_PANEL_COLS], b[FL_PANEL_COLS];
    for (int j = 0; j < FL_PANEL_COLS; j++) {
        a[j] = accumulate ? za[j] : 0.0f;
        b[j] = accumulate ? zb[j] : 0.0f;
    }
    for (int k = 0; k < rows; k++) {
        const float s = v[k];
        const float *FL_RESTRICT wa = A + (size_t)k * FL_PANEL_COLS;
        const float *FL_RESTRICT wb = B + (size_t)k * FL_PANEL_COLS;
        for (int j = 0; j < FL_PANEL_COLS; j++) a[j] += s * wa[j];
        for (int j = 0; j < FL_PANEL_COLS; j++) b[j] += s * wb[j];
    }
    for (int j = 0; j < FL_PANEL_COLS; j++) {
        za[j] = a[j];
        zb[j] = b[j];
    }
}
#endif

/* Each panel is one fl_matvec over a (rows, width) matrix whose rows are
 * adjacent: the block's lines arrive as one sequential stream, which the
 * prefetchers follow better than 8 lines per row, one row stride apart
 * (weights of 1 MB and more; no change for small ones). With AVX-512,
 * whole panels go two at a time (matvec_pair_v4). */
void fl_matvec_panels(const float *FL_RESTRICT P, int rows, int n, size_t ps,
                      const float *FL_RESTRICT v, float *FL_RESTRICT z, int accumulate,
                      int backward) {
    const int np = (n + FL_PANEL_COLS - 1) / FL_PANEL_COLS;
    const int nfull = n / FL_PANEL_COLS;
#ifdef FL_HAVE_ISA_KERNELS
    const int pairs = fl_cpu_has_avx512();
#else
    const int pairs = 0;
#endif
    for (int q = 0; q < np;) {
        const int p = backward ? np - 1 - q : q, j0 = p * FL_PANEL_COLS;
        const int p2 = backward ? p - 1 : p + 1; /* the next one visited */
#ifdef FL_HAVE_ISA_KERNELS
        if (pairs && q + 1 < np && p < nfull && p2 < nfull) {
            matvec_pair_v4(P + (size_t)p * ps, P + (size_t)p2 * ps, rows, v, z + j0,
                           z + p2 * FL_PANEL_COLS, accumulate);
            q += 2;
            continue;
        }
#else
        (void)pairs, (void)p2, (void)nfull;
#endif
        const int w = n - j0 < FL_PANEL_COLS ? n - j0 : FL_PANEL_COLS;
        fl_matvec(P + (size_t)p * ps, rows, w, FL_PANEL_COLS, v, z + j0, accumulate, 0);
        q++;
    }
}

/*
 * Z(rows, n) (+)= A(rows, K) @ W(K, n), all row-major with leading dimensions
 * lda, ldw, ldz. Register tiles of TR rows x TC columns stay in vector
 * registers across the whole K loop; each W row segment is loaded once per
 * tile and reused for TR rows. Rows left over take 4-row tiles, then single
 * rows; columns left over (n % TC) a plain loop. Tile sizes per instruction
 * set: AVX-512 12 x 32 (24 zmm accumulators), AVX2 4 x 16 (8 ymm), baseline
 * 4 x 8.
 */
#define FL_GEMM_TILE(TR, TC)                                                           \
    for (; r0 + TR <= rows; r0 += TR) {                                                \
        float acc[TR][TC];                                                             \
        for (int r = 0; r < TR; r++)                                                   \
            for (int j = 0; j < TC; j++)                                               \
                acc[r][j] = accumulate ? Z[(size_t)(r0 + r) * ldz + j0 + j] : 0.0f;    \
        for (int k = 0; k < K; k++) {                                                  \
            const float *FL_RESTRICT w = W + (size_t)k * ldw + j0;                     \
            for (int r = 0; r < TR; r++) {                                             \
                const float s = A[(size_t)(r0 + r) * lda + k];                         \
                for (int j = 0; j < TC; j++) acc[r][j] += s * w[j];                    \
            }                                                                          \
        }                                                                              \
        for (int r = 0; r < TR; r++)                                                   \
            for (int j = 0; j < TC; j++)                                               \
                Z[(size_t)(r0 + r) * ldz + j0 + j] = acc[r][j];                        \
    }

#define FL_GEMM_BODY(TR, TC)                                                           \
    int j0 = 0;                                                                        \
    for (; j0 + TC <= n; j0 += TC) {                                                   \
        int r0 = 0;                                                                    \
        FL_GEMM_TILE(TR, TC)                                                           \
        FL_GEMM_TILE(4, TC)                                                            \
        FL_GEMM_TILE(1, TC)                                                            \
    }                                                                                  \
    for (int r = 0; r < rows && j0 < n; r++) { /* leftover columns */                  \
        float *FL_RESTRICT z = Z + (size_t)r * ldz;                                    \
        if (!accumulate)                                                               \
            for (int j = j0; j < n; j++) z[j] = 0.0f;                                  \
        for (int k = 0; k < K; k++) {                                                  \
            const float s = A[(size_t)r * lda + k];                                    \
            const float *FL_RESTRICT w = W + (size_t)k * ldw;                          \
            for (int j = j0; j < n; j++) z[j] += s * w[j];                             \
        }                                                                              \
    }

#define FL_GEMM_ARGS                                                                   \
    const float *FL_RESTRICT A, int rows, int K, int lda, const float *FL_RESTRICT W,  \
        int n, int ldw, float *FL_RESTRICT Z, int ldz, int accumulate

#ifdef FL_HAVE_ISA_KERNELS
FL_TARGET_V4 static void gemm_v4(FL_GEMM_ARGS){FL_GEMM_BODY(12, 32)} FL_TARGET_V3
    static void gemm_v3(FL_GEMM_ARGS) {
    FL_GEMM_BODY(4, 16)
}
#endif

static void gemm_base(FL_GEMM_ARGS) {
    FL_GEMM_BODY(4, 8)
}

void fl_gemm(FL_GEMM_ARGS) {
#ifdef FL_HAVE_ISA_KERNELS
    if (fl_cpu_has_avx512()) {
        gemm_v4(A, rows, K, lda, W, n, ldw, Z, ldz, accumulate);
        return;
    }
    if (fl_cpu_has_avx2()) {
        gemm_v3(A, rows, K, lda, W, n, ldw, Z, ldz, accumulate);
        return;
    }
#endif
    gemm_base(A, rows, K, lda, W, n, ldw, Z, ldz, accumulate);
}

void fl_gemm_cols(const float *A, int rows, int K, int lda, const float *W, int ldw,
                  size_t ps, int c0, int c1, float *Z, int ldz, int accumulate) {
    for (int j = c0; j < c1; j = fl_wrun_end(ps, j, c1))
        fl_gemm(A, rows, K, lda, fl_wcol(W, ps, j), fl_wrun_end(ps, j, c1) - j, ldw,
                Z + j, ldz, accumulate);
}
