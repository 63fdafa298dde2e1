/*
 * fl_packed.h - the packed layer (struct fl_lstm, opaque in fastlstm.h) and
 * the view of its weights the kernels read. Private to the core.
 */
#ifndef FL_PACKED_H
#define FL_PACKED_H

#include "fl_internal.h"

struct fl_lstm {
    fl_lstm_desc desc; /* weight_layout: the one chosen */
    int R;             /* width of h: P with a projection, else H */
    float *wx;         /* (I, 4H) packed gate order [i f o g], rows ldx apart */
    int ldx;
    float *wh;   /* (R, 4H) packed, rows ldh floats apart */
    int ldh;     /* row-major: 4H, padded off powers of two; in panels
                    FL_PANEL_COLS */
    size_t ps;   /* 0: row-major, Wh's rows right after Wx's. Else [Wx; Wh]
                    in the panel layout (fl_internal.h), panels ps = (I + R)
                    * FL_PANEL_COLS floats apart: panel p holds Wx's rows,
                    then Wh's (wh = wx + I * FL_PANEL_COLS) */
    float *bias; /* (4H) packed, zeros when the source had none */
    float *peep; /* (3H) [i f o], or NULL */
    float *proj; /* (H, P), or NULL */
    void *block; /* the one allocation holding all of the above */
};

/* The weights one pass reads: the layer's, except that a call may read a
 * copy of Wh it made in its workspace (wh, ldh, ps then describe the
 * copy, in panels of FL_PANEL_COLS columns, and wx is the layer's with
 * its own layout in wx_ps). */
typedef struct fl_weights {
    const float *wx;
    int ldx;
    size_t wx_ps;
    const float *wh;
    int ldh;
    size_t ps;
    const float *bias; /* (4H) packed */
    const float *peep; /* (3H) [i f o], or NULL */
} fl_weights;

/* Whether v[0:n] has no NaN or inf. */
int fl_all_finite(const float *v, size_t n);

static inline fl_weights fl_weights_of(const fl_lstm *L) {
    return (fl_weights){L->wx, L->ldx, L->ps, L->wh, L->ldh, L->ps, L->bias, L->peep};
}

#endif /* FL_PACKED_H */
