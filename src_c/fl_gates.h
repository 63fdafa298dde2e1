/*
 * fl_gates.h - the per-step gate computation of one batch row.
 */
#ifndef FL_GATES_H
#define FL_GATES_H

#include "fl_internal.h"

typedef struct fl_gate_params {
    int units;          /* H */
    fl_activation act;  /* g and act(c) */
    fl_activation ract; /* i, f, o */
    const float *bias;  /* (4H) packed order [i f o g] */
    const float *peep;  /* (3H) packed [i f o], or NULL */
    int use_cell_clip;
    float cell_clip;
} fl_gate_params;

/* One row of one step. z (4H, packed [i f o g]) holds x@W + h@U without the
 * bias and is used as scratch; c (H) is updated in place; out (H) receives
 * m = o * act(c). z, c and out must not overlap. */
void fl_gates_row(const fl_gate_params *p, float *FL_RESTRICT z, float *FL_RESTRICT c,
                  float *FL_RESTRICT out);

/* v[k] = act(v[k]) for k < n, the vectorized loops the kernel uses. */
void fl_act_apply(fl_activation act, float *FL_RESTRICT v, size_t n);

#endif /* FL_GATES_H */
