/*
 * fl_amx.h - float32 GEMM on AMX tiles (three-way bfloat16 split), for the
 * input projection on CPUs that have AMX-BF16 (Sapphire Rapids and later).
 */
#ifndef FL_AMX_H
#define FL_AMX_H

#include <stddef.h>
#include <stdint.h>

#include "fastlstm.h" /* fl_amx_available */

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 &&                      \
    defined(__x86_64__) && defined(__linux__)
#define FL_HAVE_AMX 1
#else
#define FL_HAVE_AMX 0
#endif

/* Scratch bytes fl_amx_gemm needs for K columns of X and up to `rows` rows
 * (any alignment; 0 in builds without AMX). */
size_t fl_amx_scratch_bytes(int K, int rows);

/* C(M, N) = X(M, K) @ W(K, N), all row-major with leading dimensions ldx,
 * ldw, ldc (in floats). Returns 1 when done, 0 when it could not run (no
 * AMX in this build, or a NaN, infinity or |value| >= 2^100 in X or W); C
 * is then partly written and must be computed another way. */
int fl_amx_gemm(const float *x, int M, int K, size_t ldx, const float *W, int N,
                size_t ldw, float *C, size_t ldc, void *scratch);

#endif /* FL_AMX_H */
