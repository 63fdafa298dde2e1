/*
 * fl_kernels.h - small dense kernels the core uses instead of BLAS where a
 * BLAS call's fixed cost would dominate (one batch row).
 */
#ifndef FL_KERNELS_H
#define FL_KERNELS_H

#include "fl_internal.h"

/* z[0:n] (+)= v[0:rows] @ W, W row-major (rows, n). With accumulate = 0, z
 * is overwritten. Runtime-dispatched to AVX-512 / AVX2+FMA code. */
void fl_matvec(const float *FL_RESTRICT W, int rows, int n,
               const float *FL_RESTRICT v, float *FL_RESTRICT z,
               int accumulate);

#endif /* FL_KERNELS_H */
