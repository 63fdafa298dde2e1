/*
 * fl_parallel.c - one batch row on several threads.
 *
 * At batch 1 a step is a matrix-vector product that streams all of U
 * (16*H*H bytes) from cache; at H = 512 that is 4 MB, more than one core's
 * L2. Splitting the H units into one contiguous range per thread splits the
 * columns of U (each thread reads the i, f, o, g columns of its own units),
 * so each core keeps its part of U in its own L2 and the two halves are
 * read in parallel. Each thread then runs the gates of its units, writes its
 * part of the new h into a second buffer (the other threads may still be
 * reading the old h), and waits at a barrier before the next step.
 *
 * Threads are either started for one chunk of steps and joined before
 * returning, or taken from a caller-owned fl_pool whose workers sleep on a
 * condition variable between calls. Either way nothing runs or spins
 * between calls; the barrier spins (with pause, then yields) only while a
 * call is in progress.
 */
#include <string.h>

#include "fl_gates.h"
#include "fl_kernels.h"
#include "fl_woven.h"
#include "fl_parallel.h"

typedef struct shared {
    const fl_run *run;
    const float *wh; /* (H, 4H) packed [i f o g], rows ldh apart */
    int ldh;
    const float *wx; /* (I, 4H) packed, rows ldx apart */
    int ldx;
    size_t ps;   /* both in panels this far apart, or 0 */
    float *G;    /* one chunk's input projections, row s = step
                    t0 + s; each thread fills and reads only
                    its own columns */
    float *h[2]; /* double-buffered h (H) */
    int units, input_size, carry, nparts;
    int chunk, n_chunks; /* the call's steps in chunks of `chunk` */
    int woven;           /* chunks of FL_WOVEN_STEPS, G holding two:
                              each part weaves its columns of the next
                              chunk's projection into its recurrent
                              products (fl_matvec_woven) */
    int make_copies;     /* the parts copy their Wh columns first */
    fl_barrier bar;
} shared;

typedef struct part {
    shared *sh;
    float *wown;       /* this part's copy of its Wh columns: gate g is an
                          (H, w) row-major block at wown + g*H*w; or NULL */
    fl_gate_params gp; /* units = this part's width, bias/peep sliced */
    float *z;          /* (4w) pre-activations of this part's units */
    float *xt;         /* (I * FL_WOVEN_STEPS) the next chunk's inputs
                          for fl_matvec_woven (woven only) */
    int u0, w;
    int cur; /* which h buffer holds the current h */
    uint8_t seen;
    unsigned gen;
} part;

/* The Wh columns of units [u0, u0+w) into dst: gate g as an (H, w)
 * row-major block at dst + g*H*w. */
static void copy_columns(const float *wh, int ldh, size_t ps, int units, int u0, int w,
                         float *dst) {
    for (int g = 0; g < 4; g++) {
        const int c0 = g * units + u0, c1 = c0 + w;
        float *d = dst + (size_t)g * (size_t)units * (size_t)w;
        for (int j = c0; j < c1; j = fl_wrun_end(ps, j, c1))
            for (int k = 0; k < units; k++)
                memcpy(d + (size_t)k * (size_t)w + (size_t)(j - c0),
                       fl_wcol(wh + (size_t)k * (size_t)ldh, ps, j),
                       (size_t)(fl_wrun_end(ps, j, c1) - j) * sizeof(float));
    }
}

/* Units of part k of `threads` (the same split everywhere). For weights
 * in the panel layout (ps != 0) the parts are whole blocks of 16 units,
 * the boundaries rounded to the nearest block, so that a part's
 * projection tiles (16 columns) never straddle two panels. The callers
 * split 128 or more units between at most 8 threads: every part has some
 * (boundaries are 16 or more units apart before rounding). */
static int part_start(int units, int k, int threads, size_t ps) {
    return fl_part_start(units, k, threads, ps != 0);
}

/* The start of the run of columns that ends at j (from j0 on): the
 * counterpart of fl_wrun_end for walking runs backward. */
static int run_start(size_t ps, int j0, int j) {
    const int s = (j - 1) / FL_PANEL_COLS * FL_PANEL_COLS;
    return ps && s > j0 ? s : j0;
}

/* z[0:w] += h @ Wh[:, col : col + w], Wh read in place: one product per
 * run of adjacent columns (one run in row-major, one per panel crossed in
 * panels; in reverse order when backward), the side tiles (or NULL) woven
 * into the first. */
static void product_in_place(const shared *sh, int col, int w, const float *h, float *z,
                             int backward, const fl_woven_gemm *side, int s, int n) {
    const int H = sh->units, end = col + w;
    for (int q = 0, j = backward ? end : col; backward ? j > col : j < end; q++) {
        const int j0 = backward ? run_start(sh->ps, col, j) : j;
        const int j1 = backward ? j : fl_wrun_end(sh->ps, j, end);
        const float *W = fl_wcol(sh->wh, sh->ps, j0);
        if (sh->woven)
            fl_matvec_woven(W, H, j1 - j0, sh->ldh, 0, h, z + (j0 - col), backward,
                            q == 0 ? side : NULL, s, n);
        else
            fl_matvec(W, H, j1 - j0, sh->ldh, h, z + (j0 - col), 1, backward);
        j = backward ? j0 : j1;
    }
}

/* Size of a part's copy block, rounded to whole 64-byte lines. */
static size_t copy_block_floats(int units, int w) {
    return (4 * (size_t)units * (size_t)w + 15) & ~(size_t)15;
}

/* Steps t0 .. t0+n-1 of one chunk, in the run's processing order, its
 * projections in G (made here unless `ready`). Woven, the
 * recurrent products also make this part's columns of the next chunk's
 * projections (the chunk at nt0, if whole) in the other half of sh->G.
 * Returns whether they did. */
static int run_chunk(part *p, int t0, int n, float *G, int ready, int nt0) {
    shared *sh = p->sh;
    const fl_run *run = sh->run;
    const size_t H = (size_t)sh->units, row4 = 4 * H, w = (size_t)p->w;
    const int T = run->steps;
    const int I = sh->input_size;
    /* input projection of this part's gate columns for every step of the
     * chunk (columns are disjoint between parts: no sharing, and a part
     * may start the next chunk's while others finish this one's) */
    const float *x = run->x + (size_t)t0 * (size_t)I; /* batch 1: both
                                                          layouts agree */
    for (size_t g = 0; g < 4 && !ready; g++) {
        const int c0 = (int)(g * H) + p->u0;
        fl_gemm_cols(x, n, I, I, sh->wx, sh->ldx, sh->ps, c0, c0 + (int)w, G, (int)row4,
                     0);
    }
    fl_woven_gemm side[4];
    const int woven = sh->woven && nt0 >= 0 && nt0 + sh->chunk <= T;
    if (woven) {
        float *Gn = sh->G + (G == sh->G ? (size_t)sh->chunk * row4 : 0);
        fl_woven_x_fill(run->x + (size_t)nt0 * (size_t)I, sh->chunk, I, I, p->xt);
        for (size_t g = 0; g < 4; g++) {
            const size_t col = g * H + (size_t)p->u0;
            side[g] = (fl_woven_gemm){.xt = p->xt,
                                      .rows = sh->chunk,
                                      .k = I,
                                      .w = sh->wx,
                                      .ps = sh->ps,
                                      .col = (int)col,
                                      .n = (int)w,
                                      .ldw = sh->ldx,
                                      .out = Gn + col,
                                      .ldo = (int)row4,
                                      .prefetch = 1};
        }
    }
    for (int s = 0; s < n; s++) {
        const int t = run->reverse ? t0 + n - 1 - s : t0 + s;
        const int k = run->reverse ? T - 1 - t : t;
        const float *hp = sh->h[p->cur];
        float *hn = sh->h[p->cur ^ 1];
        const int status = fl_step_status(run, t, 0);
        const float *Gt = G + (size_t)(t - t0) * row4;
        if (status == FL_STEP_VALID) {
            /* this part's columns of each gate; every other step reads
             * them in reverse order (see fl_matvec) */
            const int backward = (k + run->sweep) & 1;
            for (size_t q = 0; q < 4; q++) {
                const size_t g = backward ? 3 - q : q;
                const size_t col = g * H + (size_t)p->u0;
                memcpy(p->z + g * w, Gt + col, w * sizeof(float));
                const fl_woven_gemm *sg = woven ? &side[g] : NULL;
                if (!p->wown)
                    product_in_place(sh, (int)col, (int)w, hp, p->z + g * w, backward,
                                     sg, s, n);
                else if (sh->woven)
                    fl_matvec_woven(p->wown + g * H * w, (int)H, (int)w, (int)w, 0, hp,
                                    p->z + g * w, backward, sg, s, n);
                else
                    fl_matvec(p->wown + g * H * w, (int)H, (int)w, (int)w, hp,
                              p->z + g * w, 1, backward);
            }
            fl_gates_row(&p->gp, p->z, run->c + p->u0, hn + p->u0);
            p->seen = 1;
        } else {
            memcpy(hn + p->u0, hp + p->u0, w * sizeof(float));
            for (size_t g = 0; g < 4 && woven; g++) /* the step's tiles still */
                fl_matvec_woven(sh->wh, 0, (int)w, 0, 0, hp, p->z + g * w, 0, &side[g],
                                s, n);
        }
        if (run->y) {
            float *dst = run->y + fl_tb_index(run, k, 0) * H + (size_t)p->u0;
            if (fl_output_shows_h(status, sh->carry, p->seen))
                memcpy(dst, hn + p->u0, w * sizeof(float));
            else
                memset(dst, 0, w * sizeof(float));
        }
        fl_barrier_wait(&sh->bar, &p->gen, sh->nparts);
        p->cur ^= 1;
    }
    return woven;
}

/* All of the call's chunks, in processing order. */
static void run_part(part *p) {
    shared *sh = p->sh;
    const int T = sh->run->steps;
    /* Each thread copies its own columns of Wh into one contiguous block
     * (on its own core, so they land in its caches). Read in place, a
     * thread's columns are four 1 KB pieces of every 8 KB row (H=512);
     * contiguous, the prefetchers keep up and more of them stay in L2. */
    if (p->wown && sh->make_copies)
        copy_columns(sh->wh, sh->ldh, sh->ps, sh->units, p->u0, p->w, p->wown);
    int ready = 0; /* this chunk's projections were woven in before */
    for (int ci = 0; ci < sh->n_chunks; ci++) {
        const int cidx = sh->run->reverse ? sh->n_chunks - 1 - ci : ci;
        const int t0 = cidx * sh->chunk;
        const int nt0 = sh->run->reverse ? t0 - sh->chunk : t0 + sh->chunk;
        /* woven, chunks alternate between the halves of G */
        float *G =
            sh->G +
            (sh->woven && (ci & 1) ? (size_t)sh->chunk * 4 * (size_t)sh->units : 0);
        ready = run_chunk(p, t0, t0 + sh->chunk <= T ? sh->chunk : T - t0, G, ready,
                          ci + 1 < sh->n_chunks ? nt0 : -1);
    }
}

/* ---- one chunk on several threads -------------------------------------- */

static void part_job(void *arg, int k) {
    run_part((part *)arg + k);
}

size_t fl_parallel_workspace_floats(int units) {
    /* h double buffer + per part z (4w), bias (4w), peepholes (3w), each
     * rounded up to 16 floats */
    return 2 * (size_t)units + 11 * (size_t)units + 3 * 16 * FL_MAX_THREADS + 16;
}

int fl_parallel_woven_rows(int units, int inputs, int threads) {
    if (threads > FL_MAX_THREADS) threads = FL_MAX_THREADS;
    const long long xt = (long long)threads * inputs * FL_WOVEN_STEPS;
    return 2 * FL_WOVEN_STEPS + (int)((xt + 4LL * units - 1) / (4LL * units));
}

size_t fl_parallel_copy_floats(int units, int threads, size_t ps) {
    if (threads > FL_MAX_THREADS) threads = FL_MAX_THREADS;
    size_t total = 0; /* the parts' blocks, each on a 64-byte boundary */
    for (int k = 0; k < threads; k++)
        total += copy_block_floats(units, part_start(units, k + 1, threads, ps) -
                                              part_start(units, k, threads, ps));
    return total;
}

void fl_parallel_fill_copies(const float *wh, int ldh, size_t ps, int units,
                             int threads, float *wcopy) {
    if (threads > FL_MAX_THREADS) threads = FL_MAX_THREADS;
    for (int k = 0; k < threads; k++) {
        const int u0 = part_start(units, k, threads, ps);
        const int w = part_start(units, k + 1, threads, ps) - u0;
        copy_columns(wh, ldh, ps, units, u0, w, wcopy);
        wcopy += copy_block_floats(units, w);
    }
}

int fl_parallel_run(const fl_parallel_job *job, uint8_t *seen) {
    const fl_gate_params *gp = job->gp;
    const fl_run *run = job->run;
    const size_t ps = job->w->ps;
    const float *bias = job->w->bias, *peep = job->w->peep;
    float *G = job->G, *ws = job->ws, *wcopy = job->wcopy;
    int threads = job->threads;
    const int H = gp->units;
    if (threads > FL_MAX_THREADS) threads = FL_MAX_THREADS;
    shared sh;
    memset(&sh, 0, sizeof sh);
    sh.run = run;
    sh.wh = job->w->wh;
    sh.ldh = job->w->ldh;
    sh.wx = job->w->wx;
    sh.ldx = job->w->ldx;
    sh.ps = ps;
    sh.input_size = job->input_size;
    sh.G = G;
    sh.units = H;
    sh.woven = job->woven;
    sh.chunk = job->chunk;
    sh.n_chunks = (run->steps + sh.chunk - 1) / sh.chunk;
    sh.carry = job->carry;
    sh.nparts = threads;
    sh.make_copies = job->make_copies;
    sh.h[0] = ws;
    sh.h[1] = ws + H;
    memcpy(sh.h[0], run->h, (size_t)H * sizeof(float));
    fl_barrier_init(&sh.bar);

    part parts[FL_MAX_THREADS];
    float *next = ws + 2 * (size_t)H;
    for (int k = 0; k < threads; k++) {
        part *p = &parts[k];
        const int u0 = part_start(H, k, threads, ps);
        const int u1 = part_start(H, k + 1, threads, ps);
        const size_t w = (size_t)(u1 - u0);
        p->sh = &sh;
        p->u0 = u0;
        p->w = (int)w;
        p->wown = wcopy;
        if (wcopy) wcopy += copy_block_floats(H, (int)w);
        p->cur = 0;
        p->gen = 0;
        p->seen = *seen;
        p->z = next;
        float *pb = next + ((4 * w + 15) & ~(size_t)15);
        float *pp = pb + ((4 * w + 15) & ~(size_t)15);
        next = pp + ((3 * w + 15) & ~(size_t)15);
        p->xt = job->woven ? G + (size_t)(2 * FL_WOVEN_STEPS) * 4 * (size_t)H +
                                 (size_t)k * (size_t)sh.input_size * FL_WOVEN_STEPS
                           : NULL;
        for (size_t g = 0; g < 4; g++)
            memcpy(pb + g * w, bias + g * (size_t)H + u0, w * sizeof(float));
        p->gp = *gp;
        p->gp.units = (int)w;
        p->gp.bias = pb;
        p->gp.peep = NULL;
        if (peep) {
            for (size_t g = 0; g < 3; g++)
                memcpy(pp + g * w, peep + g * (size_t)H + u0, w * sizeof(float));
            p->gp.peep = pp;
        }
    }
    if (!fl_team_run(run->pool, threads, part_job, parts)) return 0;
    memcpy(run->h, sh.h[parts[0].cur], (size_t)H * sizeof(float));
    *seen = parts[0].seen;
    return 1;
}
