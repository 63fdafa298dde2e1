/*
 * fl_run.c - the rules of a run every layer kind follows (fl_run.h).
 */
#include <string.h>

#include "fl_packed.h"
#include "fl_run.h"

fl_status fl_run_check(const fl_blas *blas, const fl_run *run, int needs_c) {
    if (!blas || !run || !blas->sgemm || !blas->sgemv) return FL_ERR_ARG;
    if (!run->x || !run->h || (needs_c && !run->c)) return FL_ERR_ARG;
    if (run->mask_output != FL_MASK_CARRY && run->mask_output != FL_MASK_ZERO)
        return FL_ERR_ARG;
    if (run->lengths)
        for (int b = 0; b < run->batch; b++)
            if (run->lengths[b] < 0 || run->lengths[b] > run->steps)
                return FL_ERR_SHAPE;
    return FL_OK;
}

int fl_run_x_finite(const fl_run *run, size_t I) {
    if (!run->mask && !run->lengths) /* every row: one scan */
        return fl_all_finite(run->x, (size_t)run->steps * (size_t)run->batch * I);
    for (int t = 0; t < run->steps; t++)
        for (int b = 0; b < run->batch; b++)
            if (fl_step_status(run, t, b) == FL_STEP_VALID &&
                !fl_all_finite(run->x + fl_tb_index(run, t, b) * I, I))
                return 0;
    return 1;
}

void fl_run_write_output(const float *h_rows, int R, int status, int carry,
                         const uint8_t *seen, int b, float *dst) {
    const float *h = h_rows + (size_t)b * (size_t)R;
    if (fl_output_shows_h(status, carry, seen[b]))
        memcpy(dst, h, (size_t)R * sizeof(float));
    else
        memset(dst, 0, (size_t)R * sizeof(float));
}

void fl_run_part_outputs(const fl_run *run, const float *h_rows, int t, int k, int R,
                         size_t u0, size_t n, int masked, int carry, uint8_t *seen) {
    for (int b = 0; b < run->batch; b++) {
        const int status = masked ? fl_step_status(run, t, b) : FL_STEP_VALID;
        if (status == FL_STEP_VALID) seen[b] = 1;
        if (!run->y) continue;
        float *dst = run->y + fl_tb_index(run, k, b) * (size_t)R + u0;
        if (fl_output_shows_h(status, carry, seen[b]))
            memcpy(dst, h_rows + (size_t)b * (size_t)R + u0, n * sizeof(float));
        else
            memset(dst, 0, n * sizeof(float));
    }
}

void fl_run_step_outputs(const fl_run *run, int t, int k, int R, int masked, int carry,
                         uint8_t *seen) {
    fl_run_part_outputs(run, run->h, t, k, R, 0, (size_t)R, masked, carry, seen);
}

void fl_run_write_last(const fl_run *run, int R, int masked, int carry,
                       const uint8_t *seen) {
    const int T = run->steps, t_last = run->reverse ? 0 : T - 1;
    for (int b = 0; b < run->batch; b++) {
        int status = masked ? fl_step_status(run, t_last, b) : FL_STEP_VALID;
        /* a row that ended early reports its own last valid output */
        if (status == FL_STEP_PAST_LENGTH) status = FL_STEP_MASKED;
        fl_run_write_output(run->h, R, status,
                            carry || (run->lengths && t_last >= run->lengths[b]), seen,
                            b, run->y_last + (size_t)b * R);
    }
}
