/*
 * naive_blas.c - a tiny reference sgemm/sgemv with the Fortran BLAS ABI, so
 * the C tests (and C users without a BLAS) can run the core.
 */
#include "naive_blas.h"

static int is_t(const char *c) { return *c == 'T' || *c == 't' || *c == 'C' || *c == 'c'; }

void fl_naive_sgemm(char *transa, char *transb, int *m, int *n, int *k,
                    float *alpha, float *a, int *lda, float *b, int *ldb,
                    float *beta, float *c, int *ldc) {
    for (int j = 0; j < *n; j++)
        for (int i = 0; i < *m; i++) {
            double acc = 0.0;
            for (int p = 0; p < *k; p++) {
                float av = is_t(transa) ? a[p + (long)i * *lda] : a[i + (long)p * *lda];
                float bv = is_t(transb) ? b[j + (long)p * *ldb] : b[p + (long)j * *ldb];
                acc += (double)av * (double)bv;
            }
            float *cij = &c[i + (long)j * *ldc];
            *cij = (float)(*alpha * acc + (*beta == 0.0f ? 0.0 : (double)*beta * *cij));
        }
}

void fl_naive_sgemv(char *trans, int *m, int *n, float *alpha, float *a,
                    int *lda, float *x, int *incx, float *beta, float *y,
                    int *incy) {
    int rows = is_t(trans) ? *n : *m, cols = is_t(trans) ? *m : *n;
    for (int i = 0; i < rows; i++) {
        double acc = 0.0;
        for (int p = 0; p < cols; p++) {
            float av = is_t(trans) ? a[p + (long)i * *lda] : a[i + (long)p * *lda];
            acc += (double)av * (double)x[(long)p * *incx];
        }
        float *yi = &y[(long)i * *incy];
        *yi = (float)(*alpha * acc + (*beta == 0.0f ? 0.0 : (double)*beta * *yi));
    }
}
