/*
 * test_util.h - what the C test files share: the pass/fail counters and
 * CHECK, the test-local random numbers, the double-precision activations
 * and the allocation counter (with -DFL_COUNT_MALLOC).
 */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <stdio.h>

#include "fastlstm.h"

extern int n_passed, n_failed;
#ifdef FL_COUNT_MALLOC
extern long n_allocs;
#endif

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (cond) {                                                            \
            n_passed++;                                                        \
        } else {                                                               \
            n_failed++;                                                        \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                        \
            printf(__VA_ARGS__);                                               \
            printf("\n");                                                      \
        }                                                                      \
    } while (0)

/* Uniform in [0, 1); uniform in [-scale, scale]. */
double urand(void);
float nrand(float scale);

/* The activation in double precision. */
double act_ref(fl_activation a, double x);

/* test_layer.c: GRU and simple RNN layers against a double reference. */
void test_layers(void);

/* test_chain.c: one streaming step through a chain of stages. */
void test_chains(void);

#endif /* TEST_UTIL_H */
