/*
 * fl_run.h - the rules of a run (fl_run) that every layer kind follows:
 * argument checks, the finite-input check and what each step outputs.
 */
#ifndef FL_RUN_H
#define FL_RUN_H

#include "fl_internal.h"

/* FL_ERR_ARG for a missing BLAS, x or h (or c, when the layer has a cell
 * state) or an unknown mask_output; FL_ERR_SHAPE for a length outside
 * [0, steps]. */
fl_status fl_run_check(const fl_blas *blas, const fl_run *run, int needs_c);

/* Whether every valid step's input row (I floats) is finite. */
int fl_run_x_finite(const fl_run *run, size_t I);

/* One row's output of one step into dst (R floats): row b of h_rows, or
 * zeros, by fl_output_shows_h. */
void fl_run_write_output(const float *h_rows, int R, int status, int carry,
                         const uint8_t *seen, int b, float *dst);

/* After step t (output index k): marks the rows whose step was valid
 * seen and writes every row's output to y (if the run has one). */
void fl_run_step_outputs(const fl_run *run, int t, int k, int R, int masked, int carry,
                         uint8_t *seen);

/* The same for units u0 .. u0+n-1 of the rows of h_rows (batch x R): a
 * thread's part of a step split between threads. */
void fl_run_part_outputs(const fl_run *run, const float *h_rows, int t, int k, int R,
                         size_t u0, size_t n, int masked, int carry, uint8_t *seen);

/* y_last as fl_run defines it, from the final h in run->h. */
void fl_run_write_last(const fl_run *run, int R, int masked, int carry,
                       const uint8_t *seen);

#endif /* FL_RUN_H */
