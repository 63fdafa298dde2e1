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

/* A GRU or simple RNN layer (fastlstm.h), G gate blocks: 3 or 1. */
struct fl_layer {
    fl_layer_desc desc;
    int G;
    float *wx;   /* (I, GH) canonical order, rows ld floats apart */
    float *wh;   /* (H, GH), rows ld floats apart */
    int ld;
    float *bias; /* (GH): bias + recurrent_bias, except h_n's part of a
                    reset_after GRU, which r multiplies */
    float *bhn;  /* (H): that part (reset_after GRU), or NULL */
    void *block; /* the one allocation holding all of the above */
};

/* Row stride for a packed (rows, n) matrix: n rounded up to whole 64-byte
 * lines, then to an odd number of lines. Kernels read a block of columns
 * down all rows; with an even (worse, power-of-two) stride the rows of a
 * block crowd into a few cache sets and evict each other. */
static inline size_t fl_pad_stride(size_t n) {
    size_t ld = (n + 15) & ~(size_t)15;
    return ((ld / 16) % 2 == 0) ? ld + 16 : ld;
}

/* Whether activation a is one of fl_activation's values. */
static inline int fl_valid_activation(fl_activation a) {
    return (int)a >= 0 && (int)a < FL_ACT_COUNT;
}

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

/* A 64-byte aligned block for packed weights (2 MB pages where the OS
 * offers them, for large layers); released with free(). */
char *fl_alloc_weights(size_t bytes);

/* Whether v[0:n] has no NaN or inf. */
int fl_all_finite(const float *v, size_t n);

static inline fl_weights fl_weights_of(const fl_lstm *L) {
    return (fl_weights){L->wx, L->ldx, L->ps, L->wh, L->ldh, L->ps, L->bias, L->peep};
}

#endif /* FL_PACKED_H */
