#ifndef FL_NAIVE_BLAS_H
#define FL_NAIVE_BLAS_H
void fl_naive_sgemm(char *transa, char *transb, int *m, int *n, int *k,
                    float *alpha, float *a, int *lda, float *b, int *ldb,
                    float *beta, float *c, int *ldc);
void fl_naive_sgemv(char *trans, int *m, int *n, float *alpha, float *a,
                    int *lda, float *x, int *incx, float *beta, float *y,
                    int *incy);
#endif
