/*
 * fl_batch.h - whole steps of a batch (sigmoid/tanh gates, no peepholes,
 * clip or projection) as one fused pass per block of units: input product,
 * recurrent product and gates, from slabs packed into the workspace.
 */
#ifndef FL_BATCH_H
#define FL_BATCH_H

#include "fl_internal.h"

#define FL_SLAB_UNITS 16                  /* units per slab */
#define FL_SLAB_WIDTH (4 * FL_SLAB_UNITS) /* i, f, o, g of each unit */

/* Whether fl_batch_step is the faster batch path on this machine (AVX-512,
 * or a build without per-ISA kernels). */
int fl_batch_preferred(void);

/* Floats of the slabs of a layer with I inputs and H units. */
size_t fl_batch_slab_floats(int input_size, int units);

/* Packs [Wx; Wh] (packed gate order, rows ldx / ldh floats apart; in the
 * panel layout when ps != 0, see fl_internal.h) and the bias (4H) into
 * slabs (fl_batch_slab_floats floats). */
void fl_batch_pack(const float *wx, int ldx, const float *wh, int ldh, size_t ps,
                   const float *bias, int input_size, int units, float *slabs);

/* Rows whose pre-activations are buffered at a time (a multiple of the
 * 6-row AVX-512 tile): the caller's scratch z holds FL_BATCH_GROUP *
 * FL_SLAB_WIDTH floats. */
#define FL_BATCH_GROUP 96

/* One step of `rows` batch rows: x rows ldxr floats apart (I wide), h and
 * h_out (rows, H), c (rows, H) updated in place. Rows with skip[r] nonzero
 * are computed but neither c nor h_out is written for them; skip may be
 * NULL. h_out must not overlap h. */
void fl_batch_step(const float *FL_RESTRICT slabs, int I, int H,
                   const float *FL_RESTRICT x, size_t ldxr, const float *FL_RESTRICT h,
                   int rows, float *FL_RESTRICT c, float *FL_RESTRICT h_out,
                   const uint8_t *FL_RESTRICT skip, float *FL_RESTRICT z);

#endif /* FL_BATCH_H */
