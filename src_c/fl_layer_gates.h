/*
 * fl_layer_gates.h - the per-step gate loops of GRU and simple RNN layers,
 * one batch row at a time.
 */
#ifndef FL_LAYER_GATES_H
#define FL_LAYER_GATES_H

#include "fl_packed.h"

/* A range of units: u0 .. u0+n-1 of every gate block. */
typedef struct fl_units {
    size_t u0, n;
} fl_units;

/* Each function updates units u of one row; its pointers are the row's
 * starts (unit 0), and it touches only u's columns of them.
 *
 * A reset_after GRU row: gx (3H) holds x @ Wx, gh (3H) h @ Wh, neither with
 * a bias; h (H) is updated in place. gh is used as scratch. */
void fl_gru_row(const fl_layer *L, fl_units u, const float *FL_RESTRICT gx, float *FL_RESTRICT gh,
                float *FL_RESTRICT h);

/* First half of a GRU row without reset_after: from gx and gh's z and r
 * blocks, z into gh's z block and rh = r * h. */
void fl_gru_row_gates(const fl_layer *L, fl_units u, const float *FL_RESTRICT gx,
                      float *FL_RESTRICT gh, const float *FL_RESTRICT h,
                      float *FL_RESTRICT rh);

/* Second half: gh's n block holds (r * h) @ U_n; h updated in place. */
void fl_gru_row_update(const fl_layer *L, fl_units u, const float *FL_RESTRICT gx,
                       float *FL_RESTRICT gh, float *FL_RESTRICT h);

/* A simple RNN row: h = act(gx + gh + bias); gh is used as scratch. */
void fl_simple_row(const fl_layer *L, fl_units u, const float *FL_RESTRICT gx,
                   float *FL_RESTRICT gh, float *FL_RESTRICT h);

#endif /* FL_LAYER_GATES_H */
