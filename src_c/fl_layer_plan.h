/*
 * fl_layer_plan.h - how a GRU or simple RNN forward call runs: its
 * chunking, the kernel of each product (fl_plan_product) and the workspace
 * layout, decided in fl_plan.c with the LSTM's plan.
 */
#ifndef FL_LAYER_PLAN_H
#define FL_LAYER_PLAN_H

#include "fl_packed.h"

/* The kernel of a product of `rows` rows (fl_plan_product). */
typedef enum fl_product {
    FL_PRODUCT_MATVEC = 0, /* row by row on fl_matvec */
    FL_PRODUCT_GEMM = 1,   /* fl_gemm */
    FL_PRODUCT_BLAS = 2    /* BLAS sgemm */
} fl_product;

typedef struct fl_layer_plan {
    int chunk; /* steps per input projection */
    int parts; /* threads splitting each step's units (1: the caller's) */
    /* workspace regions, byte offsets from the first aligned address */
    size_t gates; /* (chunk, B, GH) input projections */
    size_t rec;   /* (B, GH) one step's recurrent products */
    size_t rh;    /* (B, H) r * h (GRU with reset_after 0) */
    size_t seen;  /* (B) bytes, when the caller passes no `seen` */
    size_t h2;    /* (B, H) the second state buffer, with parts */
    size_t seens; /* (parts - 1, B) bytes: the other parts' `seen` */
    size_t total; /* bytes, with slack to align any base address */
} fl_layer_plan;

/* The kernel for a product of `rows` rows: fl_matvec for one to a few rows
 * (a BLAS call's fixed cost would dominate), fl_gemm up to a few hundred
 * (measured faster than OpenBLAS there), BLAS above. */
fl_product fl_plan_product(int rows);

/* The plan of `run` (FL_ERR_SHAPE / FL_ERR_OVERFLOW for sizes out of
 * range). */
fl_status fl_layer_plan_make(const fl_layer *layer, const fl_run *run,
                             fl_layer_plan *plan);

#endif /* FL_LAYER_PLAN_H */
