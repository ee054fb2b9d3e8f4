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

typedef struct {
    const nb_setup *s;
    const nb_hkl *hkl;
    const nb_orientations *o;
    int have_grid;
    int steps_only;               /* 1: every pixel step by step (a test of the vector path) */
    nb_render_ctl *ctl;
} nb_kernel_ctx;

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
