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
               const float *FL_RESTRICT v, float *FL_RESTRICT z, int accumulate,
               int backward);

/* Floats of a (rows, n) matrix in the panel layout with panels rows *
 * FL_PANEL_COLS floats apart (see fl_internal.h). */
size_t fl_panels_floats(int rows, int n);

/* dst (fl_panels_floats) = W (rows, n; rows ld floats apart) in the panel
 * layout, panels rows * FL_PANEL_COLS floats apart. */
void fl_panels_pack(const float *FL_RESTRICT W, int rows, int n, int ld,
                    float *FL_RESTRICT dst);

/* fl_matvec on a matrix in the panel layout (panels ps floats apart); the
 * same sums, bit for bit. `backward` visits the panels in reverse order. */
void fl_matvec_panels(const float *FL_RESTRICT P, int rows, int n, size_t ps,
                      const float *FL_RESTRICT v, float *FL_RESTRICT z, int accumulate,
                      int backward);

/* Z(rows, n) (+)= A(rows, K) @ W(K, n); row-major with leading dimensions
 * lda (A), ldw (W) and ldz (Z) (of a matrix in the panel layout, W is a run
 * of columns within one panel). For the per-step recurrent product of a
 * batch, where a BLAS call's packing costs more than it saves. */
/* Z[:, c0:c1] (+)= A(rows, K) @ W[:, c0:c1] for W row-major (ps = 0) or
 * in the panel layout (panels ps floats apart), rows ldw floats apart;
 * column c of Z at Z + c. One fl_gemm per run of adjacent columns. */
void fl_gemm_cols(const float *A, int rows, int K, int lda, const float *W, int ldw,
                  size_t ps, int c0, int c1, float *Z, int ldz, int accumulate);

void fl_gemm(const float *FL_RESTRICT A, int rows, int K, int lda,
             const float *FL_RESTRICT W, int n, int ldw, float *FL_RESTRICT Z, int ldz,
             int accumulate);

#endif /* FL_KERNELS_H */
