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

#define FL_MV_BLOCK 64


FL_CLONES
void fl_matvec(const float *FL_RESTRICT W, int rows, int n,
               const float *FL_RESTRICT v, float *FL_RESTRICT z,
               int accumulate) {
    int j0 = 0;
    for (; j0 + FL_MV_BLOCK <= n; j0 += FL_MV_BLOCK) {
        float acc[FL_MV_BLOCK];
        for (int j = 0; j < FL_MV_BLOCK; j++) acc[j] = accumulate ? z[j0 + j] : 0.0f;
        for (int k = 0; k < rows; k++) {
            const float s = v[k];
            const float *FL_RESTRICT w = W + (size_t)k * (size_t)n + j0;
            for (int j = 0; j < FL_MV_BLOCK; j++) acc[j] += s * w[j];
        }
        for (int j = 0; j < FL_MV_BLOCK; j++) z[j0 + j] = acc[j];
    }
    if (j0 == n) return;
    if (!accumulate)
        for (int j = j0; j < n; j++) z[j] = 0.0f;
    for (int k = 0; k < rows; k++) { /* the last n % 64 columns */
        const float s = v[k];
        const float *FL_RESTRICT w = W + (size_t)k * (size_t)n;
        for (int j = j0; j < n; j++) z[j] += s * w[j];
    }
}
