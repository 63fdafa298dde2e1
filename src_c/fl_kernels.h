/*
 * fl_kernels.h - small dense kernels the core uses instead of BLAS where a
 * BLAS call's fixed cost would dominate (one batch row).
 */
#ifndef FL_KERNELS_H
#define FL_KERNELS_H

#include "fl_internal.h"

/* z[0:n] (+)= v[0:rows] @ W, W row-major (rows, n) with rows ld floats
 * apart (ld >= n; a column slice of a wider matrix). With accumulate = 0, z
 * is overwritten. `backward` walks the column blocks in reverse order (the
 * result is the same; alternating it between steps keeps more of a large W
 * in cache). Runtime-dispatched to AVX-512 / AVX2+FMA code. */
void fl_matvec(const float *FL_RESTRICT W, int rows, int n, int ld,
               const float *FL_RESTRICT v, float *FL_RESTRICT z,
               int accumulate, int backward);

/* The panel layout of a (rows, n) matrix: its columns in panels of
 * FL_PANEL_COLS (the last one n % FL_PANEL_COLS wide), panel p stored as a
 * contiguous row-major (rows, width) block at p * rows * FL_PANEL_COLS.
 * fl_matvec_panels reads each panel front to back in one stream. */
#define FL_PANEL_COLS 128

/* dst = the columns [j0, j0 + w) of W (rows, _; rows ld floats apart) as a
 * contiguous row-major (rows, w) block. */
void fl_pack_columns(const float *FL_RESTRICT W, int rows, int ld, int j0,
                     int w, float *FL_RESTRICT dst);

/* dst (rows * n floats) = W (rows, n; rows ld floats apart) in panels. */
void fl_panels_pack(const float *FL_RESTRICT W, int rows, int n, int ld,
                    float *FL_RESTRICT dst);

/* fl_matvec on a matrix in the panel layout; the same sums, bit for bit.
 * `backward` visits the panels in reverse order. */
void fl_matvec_panels(const float *FL_RESTRICT P, int rows, int n,
                      const float *FL_RESTRICT v, float *FL_RESTRICT z,
                      int accumulate, int backward);

/* Z(rows, n) (+)= A(rows, K) @ W(K, n); row-major with leading dimensions
 * lda (A), ldw (W) and ldz (Z). For the per-step recurrent product of a batch,
 * where a BLAS call's packing costs more than it saves. */
void fl_gemm(const float *FL_RESTRICT A, int rows, int K, int lda,
             const float *FL_RESTRICT W, int n, int ldw, float *FL_RESTRICT Z,
             int ldz, int accumulate);

#endif /* FL_KERNELS_H */
