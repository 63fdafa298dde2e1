/*
 * fl_woven.h - the batch-1 recurrent product with the next chunk's input
 * projection computed in its idle FMA slots (AVX-512 builds of GCC).
 */
#ifndef FL_WOVEN_H
#define FL_WOVEN_H

#include "fl_internal.h"

/* Steps per chunk: the projection of a chunk is FL_WOVEN_STEPS rows. */
#define FL_WOVEN_STEPS 16

/* out(rows, n) = x(rows, k) @ w[:, col : col + n] for rows <=
 * FL_WOVEN_STEPS; w rows ldw floats apart, row-major (ps = 0) or in the
 * panel layout (panels ps floats apart; col then a multiple of 16), out
 * row-major with leading dimension ldo; x is given as xt, filled by
 * fl_woven_x_fill (k * FL_WOVEN_STEPS floats). Computed in tiles of 16
 * columns, tile t covering columns [16 t, 16 t + 16) of out. */
typedef struct fl_woven_gemm {
    const float *xt;
    int rows, k;
    const float *w;
    size_t ps;
    int col, n, ldw;
    float *out;
    int ldo;
    int prefetch; /* 1: prefetch the tiles' Wx rows a few k-steps ahead */
} fl_woven_gemm;

/* Single-thread calls ask for that prefetch above this many bytes of Wh:
 * where the weights stream from L3 it pays, where Wh still fits L2 it
 * only costs (set for a 1 MB L2). */
#define FL_WOVEN_PREFETCH_MIN_BYTES (3u << 19)

/* xt = x (rows, k; rows ldx floats apart), each k-step's values of the
 * rows side by side, as the tiles read them. */
void fl_woven_x_fill(const float *FL_RESTRICT x, int rows, int k, int ldx,
                     float *FL_RESTRICT xt);

/* Whether fl_matvec_woven runs here (GCC on x86-64, CPU with AVX-512). */
int fl_woven_available(void);

/* z[0:n] += v[0:rows] @ W with fl_matvec's sums, W's rows ld floats apart,
 * row-major (ps = 0) or in the panel layout (panels ps floats apart, ld =
 * FL_PANEL_COLS); with side, also step `step`'s share (of `steps` steps) of the side
 * product's tiles, woven into the same pass. rows = 0 makes just the
 * tiles (a step that skips its product). Only where
 * fl_woven_available(). */
void fl_matvec_woven(const float *FL_RESTRICT W, int rows, int n, int ld, size_t ps,
                     const float *FL_RESTRICT v, float *FL_RESTRICT z, int backward,
                     const fl_woven_gemm *side, int step, int steps);

#endif /* FL_WOVEN_H */
