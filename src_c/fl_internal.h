/*
 * fl_internal.h - private helpers shared by the core's .c files.
 */
#ifndef FL_INTERNAL_H
#define FL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fastlstm.h"

#if defined(__GNUC__) || defined(__clang__)
#define FL_RESTRICT __restrict__
#else
#define FL_RESTRICT
#endif

/* The widest instruction set the core may use: 4 AVX-512 (the default),
 * 3 AVX2 + FMA, 1 baseline x86-64. The narrower settings let the tests run
 * the narrower paths on a CPU that has the wider ones. */
#ifndef FL_MAX_ISA
#define FL_MAX_ISA 4
#endif

/* Hot loops are compiled once per instruction set (AVX-512, AVX2+FMA,
 * baseline) and the best is picked at load time; no -march flag needed. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) &&                 \
    !defined(FL_NO_CLONES) && !defined(__SANITIZE_ADDRESS__) && FL_MAX_ISA >= 3
#if FL_MAX_ISA >= 4
#define FL_CLONES                                                                      \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
#else
#define FL_CLONES
#endif

/* The targets of the explicitly dispatched kernels. A build that already
 * targets a superset (FASTLSTM_NATIVE=1's -march=native on an AVX-512 CPU)
 * keeps its own: a narrower target on a function makes GCC refuse to
 * inline the build's intrinsics into it. */
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) &&          \
    defined(__AVX512DQ__) && defined(__AVX512CD__)
#define FL_TARGET_V4
#else
#define FL_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#endif
#if defined(__AVX2__) && defined(__FMA__) && defined(__BMI2__)
#define FL_TARGET_V3
#else
#define FL_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#endif

/* Whether this CPU runs the explicitly dispatched AVX-512 kernels (they
 * need AVX-512 F and VL; __builtin_cpu_supports reads what libgcc detected
 * at load time). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
static inline int fl_cpu_has_avx512(void) {
    return FL_MAX_ISA >= 4 && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl");
}

/* Whether this CPU runs the explicitly dispatched AVX2 + FMA kernels. */
static inline int fl_cpu_has_avx2(void) {
    return FL_MAX_ISA >= 3 && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
}
#endif

/* Alignment of every packed array and workspace region, in bytes. */
#define FL_ALIGN 64

/* The panel layout of a (rows, n) matrix: its columns in panels of
 * FL_PANEL_COLS, panel p a row-major (rows, FL_PANEL_COLS) block ps floats
 * after panel p - 1 (the last panel's columns past n unused). Kernels take
 * such a matrix as rows ld = FL_PANEL_COLS floats apart plus the panel
 * stride ps; ps = 0 means plain row-major (rows ld apart). */
#define FL_PANEL_COLS 128

/* Column j of row `row` (a pointer to the row's first element in panel 0,
 * or of the row-major row). */
static inline const float *fl_wcol(const float *row, size_t ps, int j) {
    return ps ? row + (size_t)(j / FL_PANEL_COLS) * ps + (size_t)(j % FL_PANEL_COLS)
              : row + j;
}

/* End of the run of columns from j (up to j1) that are adjacent in every
 * row: all of them in row-major, the rest of j's panel in panels. */
static inline int fl_wrun_end(size_t ps, int j, int j1) {
    const int e = (j / FL_PANEL_COLS + 1) * FL_PANEL_COLS;
    return ps && e < j1 ? e : j1;
}

/* Packed gate order: the three sigmoid gates first, contiguous, then the
 * cell candidate. Canonical (Keras/PyTorch) order is i, f, g, o. */
enum { FL_GATE_I = 0, FL_GATE_F = 1, FL_GATE_O = 2, FL_GATE_G = 3 };

/* a * b into *out; returns 0 on size_t overflow. */
static inline int fl_mul_size(size_t a, size_t b, size_t *out) {
#if defined(__GNUC__) || defined(__clang__)
    return !__builtin_mul_overflow(a, b, out); /* no division per call */
#else
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
#endif
}

/* Rounds n bytes up to a multiple of FL_ALIGN; returns 0 on overflow. */
static inline int fl_round_up(size_t n, size_t *out) {
    if (n > SIZE_MAX - (FL_ALIGN - 1)) return 0;
    *out = (n + (FL_ALIGN - 1)) & ~(size_t)(FL_ALIGN - 1);
    return 1;
}

/* Adds an aligned region of n floats at *offset (bytes), its start to *at;
 * returns 0 on overflow. */
static inline int fl_region_add(size_t *offset, size_t n_floats, size_t *at) {
    size_t bytes, rounded;
    if (!fl_mul_size(n_floats, sizeof(float), &bytes)) return 0;
    if (!fl_round_up(bytes, &rounded)) return 0;
    if (*offset > SIZE_MAX - rounded) return 0;
    *at = *offset;
    *offset += rounded;
    return 1;
}

/* Where part k of `parts` begins when `units` units are split evenly
 * between them (k = parts: the end), rounded to a multiple of 16 when
 * align16 (so that 16-column tiles and 128-column panels never straddle
 * two parts). */
static inline int fl_part_start(int units, int k, int parts, int align16) {
    if (k >= parts) return units;
    const int u = (int)((long long)units * k / parts);
    return align16 ? (u + 8) & ~15 : u;
}

/* Index of (t, b) in the run's [t][b] or [b][t] arrays. */
static inline size_t fl_tb_index(const fl_run *run, int t, int b) {
    return run->batch_major ? (size_t)b * (size_t)run->steps + (size_t)t
                            : (size_t)t * (size_t)run->batch + (size_t)b;
}

enum { FL_STEP_VALID = 0, FL_STEP_MASKED = 1, FL_STEP_PAST_LENGTH = 2 };

static inline int fl_step_status(const fl_run *run, int t, int b) {
    if (run->lengths && t >= run->lengths[b]) return FL_STEP_PAST_LENGTH;
    if (run->mask && !run->mask[fl_tb_index(run, t, b)]) return FL_STEP_MASKED;
    return FL_STEP_VALID;
}

/* The output rule of every path: a row outputs h at a valid step; zeros
 * past its length; at a masked step its previous output (FL_MASK_CARRY:
 * h once the row was seen, zeros before) or zeros (FL_MASK_ZERO). */
static inline int fl_output_shows_h(int status, int carry, int seen) {
    return status == FL_STEP_VALID || (status == FL_STEP_MASKED && carry && seen);
}

/* Denormals are flushed to zero inside the kernels (FTZ and DAZ set on
 * entry, the caller's setting restored on exit): a state that decays
 * towards zero would otherwise slow every operation on it by ~100x. */
#if defined(__SSE2__)
#include <xmmintrin.h>
static inline unsigned int fl_ftz_enter(void) {
    const unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return saved;
}
static inline void fl_ftz_leave(unsigned int saved) {
    _mm_setcsr(saved);
}
#else
static inline unsigned int fl_ftz_enter(void) {
    return 0;
}
static inline void fl_ftz_leave(unsigned int saved) {
    (void)saved;
}
#endif

#endif /* FL_INTERNAL_H */
