/* kernel_isa.h - what kernel.c (orchestration, threads, run-time ISA choice)
 * shares with kernel/body.c (the per-row sums), which the build compiles once
 * per instruction-set level with its own symbol suffix (not installed). */
#ifndef NANOBRAGG_KERNEL_ISA_H
#define NANOBRAGG_KERNEL_ISA_H
#include <stdint.h>
#include "internal.h"

/* crystal orientations, phi-major then mosaic domain, as structure of arrays */
typedef struct {
    int n;
    double *ax, *ay, *az, *bx, *by, *bz, *cx, *cy, *cz;
    double *block;
} nb_orientations;

typedef struct nb_render_ctl nb_render_ctl;   /* cancel and progress (kernel.c) */

/* What the bound of a pixel's lattice sum needs (skip.c builds it,
 * docs/skipping.md derives it).  Orientations come in blocks of
 * consecutive ones; over block b every a_q lies within radius[3b] of
 * centre[9b..9b+2] (likewise b and c), so h_q = a_q.S lies within
 * radius |S| of a_c.S. */
typedef struct {
    int n_blocks;
    double *count;                /* orientations in each block */
    double *centre;               /* 9 per block: the mean a, b and c */
    double *radius;               /* 3 per block: the largest |a_q - a_c|, |b_q - b_c|, |c_q - c_c| (m) */
    /* pair_F[(h-h_lo)*h_stride + (k-k_lo)*k_stride + (l-l_lo)]: the largest
     * |F| of the nodes {h,h+1} x {k,k+1} x {l,l+1} (default_F off the grid),
     * for h in [h_lo, h_hi] and likewise; outside that box every node is off
     * the grid.  F_max: the largest |F| anywhere. */
    double *pair_F;
    double h_lo, h_hi, k_lo, k_hi, l_lo, l_hi, h_stride, k_stride;
    double abs_default_F, F_max;
    /* gauss and tophat spots: a lower bound of |dh a* + dk b* + dl c*|^2 /
     * (dh^2 + dk^2 + dl^2), the smallest eigenvalue of the reciprocal
     * axes' Gram matrix (1/A^2) */
    double gram_min;
} nb_skip_tables;

/* the passes of a render (kernel.c runs them, body.c's render_row obeys) */
enum {
    NB_PASS_ALL,                  /* every wanted pixel summed in full */
    NB_PASS_PROBE,                /* the nb_probed() pixels of the nb_probed() rows in full, their bounds kept */
    NB_PASS_SKIP,                 /* every wanted pixel: skipped when its bound <= skip_tau, else in full */
    NB_PASS_REDO                  /* the skipped pixels whose code exceeds their row's row_redo_code, in full */
};
/* The skip pass takes the rows in two stages (kernel.c): every 8th row,
 * then the rest; each stage's threshold comes from the peak of what is
 * known before it.  NB_STAGE_ALL: every row. */
enum { NB_STAGE_ALL = 0, NB_STAGE_FIRST = 1, NB_STAGE_LAST = 2 };
#define NB_STAGE_STRIDE 8         /* the first stage's rows: every 8th */
static inline int nb_stage_of_row(int sp) { return sp % NB_STAGE_STRIDE == 0 ? NB_STAGE_FIRST : NB_STAGE_LAST; }
static inline int nb_row_in_stage(int sp, int stage) { return stage == NB_STAGE_ALL || nb_stage_of_row(sp) == stage; }
/* the probe sums one pixel in NB_PROBE_STRIDE^2 in full */
#define NB_PROBE_STRIDE 8
static inline int nb_probed(int index) { return index % NB_PROBE_STRIDE == NB_PROBE_STRIDE / 2; }
/* A skipped pixel keeps its bound x = bound / skip_tau (in [0, 1]) in one
 * byte: code 8e + m for x in [2^e (1 + m/8), 2^e (1 + (m+1)/8)), e >= -15;
 * NB_SKIP_TINY below 2^-15; NB_SKIP_SUMMED for a pixel summed in full (or
 * not wanted).  nb_skip_code_bound() is the code's upper end. */
#define NB_SKIP_SUMMED (-128)
#define NB_SKIP_TINY (-127)
#define NB_SKIP_MIN_EXPONENT (-15)
static inline double nb_skip_code_bound(int code)
{
    if (code == NB_SKIP_TINY) return ldexp(1.0, NB_SKIP_MIN_EXPONENT);
    int e = code >= 0 ? code / 8 : -((-code + 7) / 8);      /* floor(code / 8) */
    return ldexp(1.0 + (code - 8 * e + 1) / 8.0, e);
}

typedef struct {
    const nb_setup *s;
    const nb_hkl *hkl;
    const nb_orientations *o;
    int have_grid;
    int steps_only;               /* 1: every pixel step by step (a test of the vector path) */
    nb_render_ctl *ctl;
    int pass;                     /* NB_PASS_* */
    int stage;                    /* NB_PASS_SKIP: its rows (NB_STAGE_*) */
    const nb_skip_tables *skip;   /* the bound's tables (all passes but NB_PASS_ALL) */
    double skip_tau;              /* NB_PASS_SKIP: skip a pixel whose bound (scaled like the pixel) is <= this */
    signed char redo_code[NB_STAGE_LAST + 1];  /* NB_PASS_REDO: redo a skipped pixel of a row of stage i whose skip_code is > [i] */
    signed char *skip_code;       /* per pixel (NB_SKIP_*) */
    /* the first stage's skip pass: the bound of each pixel (NaN: not
     * wanted), row sp at (sp / NB_STAGE_STRIDE) * fpixels */
    float *first_stage_bound;
} nb_kernel_ctx;

/* skip.c: the tables of the bound, or non-zero when the render cannot skip
 * (another spot shape, a non-integral N, no memory: then it sums in full) */
int nb_skip_tables_build(const nb_setup *s, const nb_hkl *hkl, int have_grid, const nb_orientations *o,
                         nb_skip_tables *t);
void nb_skip_tables_free(nb_skip_tables *t);

/* Non-zero once the render is cancelled; checked before each block of
 * pixels.  On the calling thread it also runs the poll callback every
 * NB_POLL_INTERVAL_S (kernel.c). */
int nb_render_cancelled(const nb_kernel_ctx *k);

typedef struct {
    int hit;
    double hkl[3];
    int hkl0[3];
} nb_fallback_note;

typedef struct {
    int first_fallback_fp;        /* -1: none in this row */
    nb_fallback_note note;
    double omega_sum;
    float peak;                   /* the largest pixel the pass wrote (0 if none above 0; NaN ignored) */
} nb_row_result;

/* Is the pixel inside the ROI and not masked?  (used by the sums and the stats) */
static inline int nb_pixel_wanted(const nb_setup *s, const uint16_t *mask, int fp, int sp)
{
    if (!nb_in_roi(s, fp, sp)) return 0;
    return !mask || mask[(size_t)sp * s->fpixels + fp] != 0;
}

/* One compiled copy of kernel/body.c.  The workspace belongs to one thread. */
typedef struct {
    const char *name;             /* "baseline", "v3", "v4" */
    void *(*workspace_new)(const nb_kernel_ctx *k);
    void (*workspace_free)(void *ws);
    /* pixels fp_start.. of row sp; interp0: tricubic interpolation on at entry */
    void (*render_row)(const nb_kernel_ctx *k, void *ws, const uint16_t *mask, int sp, int fp_start,
                       int interp0, float *image, nb_row_result *rr);
    /* the printout's values of one pixel; returns the NB_TRACE_* groups it
     * set (t->orientation: the index of the last step's), -1 if the pixel
     * is not rendered */
    int (*trace_pixel)(const nb_kernel_ctx *k, void *ws, const uint16_t *mask, int fp, int sp, int interp0,
                       nb_pixel_trace *t);
} nb_kernel_isa;

#define NB_ISA_CAT2(a, b) a##b
#define NB_ISA_CAT(a, b) NB_ISA_CAT2(a, b)
extern const nb_kernel_isa nb_kernel_baseline;
#if defined(NB_HAVE_X86_LEVELS)
extern const nb_kernel_isa nb_kernel_v3;
extern const nb_kernel_isa nb_kernel_v4;
#endif

#endif
