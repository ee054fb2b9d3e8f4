/* kernel.c - the render: crystal orientations, rows spread over threads,
 * the interpolation fall-back in raster order, the image statistics, and the
 * choice of the compiled kernel (kernel/body.c) for this CPU.
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kernel_isa.h"
#include "stages.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* crystal orientations, phi-major then mosaic domain, as structure of arrays */
static int orientations_build(const nb_setup *s, nb_orientations *o)
{
    o->n = s->phisteps * s->mosaic_domains;
    o->block = malloc((size_t)o->n * 9 * sizeof(double));
    if (!o->block) return NB_ENOMEM;
    double **cols[9] = { &o->ax, &o->ay, &o->az, &o->bx, &o->by, &o->bz, &o->cx, &o->cy, &o->cz };
    for (int i = 0; i < 9; ++i) *cols[i] = o->block + (size_t)i * o->n;
    int k = 0;
    for (int t = 0; t < s->phisteps; ++t) {
        /* every step rotates from the unrotated crystal, including phi = 0 */
        double phi = s->phi0_rad + s->phistep_rad * t;
        double ap[3], bp[3], cp[3];
        memcpy(ap, s->a0, sizeof ap); memcpy(bp, s->b0, sizeof bp); memcpy(cp, s->c0, sizeof cp);
        if (phi != 0.0) {
            nb_rotate_axis(s->a0, ap, s->spindle, phi);
            nb_rotate_axis(s->b0, bp, s->spindle, phi);
            nb_rotate_axis(s->c0, cp, s->spindle, phi);
        }
        for (int d = 0; d < s->mosaic_domains; ++d, ++k) {
            double a[3], b[3], c[3];
            memcpy(a, ap, sizeof a); memcpy(b, bp, sizeof b); memcpy(c, cp, sizeof c);
            if (s->mosaic_spread_rad > 0.0) {
                const double *u = s->mosaic_umats + 9 * d;
                nb_rotate_umat(ap, a, u);
                nb_rotate_umat(bp, b, u);
                nb_rotate_umat(cp, c, u);
            }
            o->ax[k] = a[0]; o->ay[k] = a[1]; o->az[k] = a[2];
            o->bx[k] = b[0]; o->by[k] = b[1]; o->bz[k] = b[2];
            o->cx[k] = c[0]; o->cy[k] = c[1]; o->cz[k] = c[2];
        }
    }
    return NB_OK;
}

/* Cancellation and progress: every thread checks the cancel word before
 * each block of pixels; only the calling thread (OpenMP thread 0) calls the
 * poll callback, so a front end may run its own code (signal handlers,
 * progress bars) there. */
struct nb_render_ctl {
    const nb_render_opts *opts;
    int cancel;                   /* read and written with __atomic builtins */
    double next_poll_s;           /* thread 0 only */
    int rows_done_prefix;         /* thread 0 only: every row before it is finished */
    long fallback_at;             /* thread 0 only: raster index of the first interpolation fall-back, or -1 */
    unsigned char *row_done;      /* spixels flags, set once a row is finished */
    const nb_row_result *rows;    /* the first pass's per-row results */
    int staged;                   /* rows come in stages (skipping): progress counts the rows done */
    int rows_done;                /* __atomic: rows finished, when staged */
};

static double wall_seconds(void)
{
#ifdef _OPENMP
    return omp_get_wtime();
#else
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
#endif
}

/* Pixels finished in raster order.  The count stops at the first pixel
 * whose interpolation fell back until the render is over, so that a front
 * end reports progress up to there, then the fall-back, then the rest: the
 * order in which the reference prints them. */
static long pixels_done_in_order(const nb_setup *s, nb_render_ctl *c)
{
    if (c->staged) return (long)__atomic_load_n(&c->rows_done, __ATOMIC_RELAXED) * s->fpixels;
    while (c->fallback_at < 0 && c->rows_done_prefix < s->spixels &&
           __atomic_load_n(&c->row_done[c->rows_done_prefix], __ATOMIC_ACQUIRE)) {
        int fp = c->rows[c->rows_done_prefix].first_fallback_fp;
        if (fp >= 0) c->fallback_at = (long)c->rows_done_prefix * s->fpixels + fp;
        else ++c->rows_done_prefix;
    }
    return c->fallback_at >= 0 ? c->fallback_at : (long)c->rows_done_prefix * s->fpixels;
}

int nb_render_cancelled(const nb_kernel_ctx *k)
{
    nb_render_ctl *c = k->ctl;
    if (__atomic_load_n(&c->cancel, __ATOMIC_RELAXED)) return 1;
    if (!c->opts || !c->opts->poll || !nb_calling_thread()) return 0;
    double now = wall_seconds();
    if (now < c->next_poll_s) return 0;
    c->next_poll_s = now + NB_POLL_INTERVAL_S;
    long total = (long)k->s->spixels * k->s->fpixels;
    if (c->opts->poll(c->opts->poll_ctx, pixels_done_in_order(k->s, c), total) != 0) {
        __atomic_store_n(&c->cancel, 1, __ATOMIC_RELAXED);
        return 1;
    }
    return 0;
}

/* Waking a second thread costs more than a small image takes to render
 * (tens of microseconds, far more on a busy machine), so small jobs stay on
 * one; the image does not depend on the choice. */
static int threads_to_use(const nb_render_opts *opts, double work_steps)
{
#ifdef _OPENMP
    int n = opts && opts->nthreads > 0 ? opts->nthreads : omp_get_max_threads();
    /* more threads than processors buys nothing, and a runaway request
     * (OMP_NUM_THREADS=5000) can fail inside the OpenMP runtime */
    int cap = NB_MAX_THREADS_PER_CPU * omp_get_num_procs();
    if (n > cap) n = cap;
    if (n < 1) n = 1;
    return (work_steps < 2.0e5 && !(opts && opts->exact_threads)) ? 1 : n;
#else
    (void)opts; (void)work_steps;
    return 1;
#endif
}

/* does row sp hold a pixel the redo pass sums? (skip_code is
 * NB_SKIP_SUMMED, below every redo code, for every pixel summed or not
 * wanted) */
static int row_has_redo(const nb_kernel_ctx *k, int sp)
{
    const signed char *c = k->skip_code + (size_t)sp * k->s->fpixels;
    const signed char limit = k->redo_code[nb_stage_of_row(sp)];
    int any = 0;
    for (int fp = 0; fp < k->s->fpixels; ++fp) any |= c[fp] > limit;
    return any;
}

/* Render rows [sp0, sp1): row sp0 from fp0 on, the others whole; noise (may
 * be NULL) follows the rows that are final (the first pass only). */
static int render_rows(const nb_kernel_isa *isa, const nb_kernel_ctx *k, const uint16_t *mask, int sp0, int fp0,
                       int sp1, int interp0, float *image, nb_row_result *rows, const nb_render_opts *opts,
                       nb_noise_stream *noise)
{
    const nb_setup *s = k->s;
    long per_pixel = (long)s->thicksteps * s->oversample * s->oversample * s->n_sources;
    int failed = 0;
    double work = (double)per_pixel * k->o->n * s->fpixels * (double)(sp1 - sp0);
#pragma omp parallel num_threads(threads_to_use(opts, work)) reduction(|:failed)
    {
        void *ws = isa->workspace_new(k);
        if (!ws) failed = 1;
#pragma omp for schedule(dynamic, 1)
        for (int sp = sp0; sp < sp1; ++sp) {
            if (k->pass == NB_PASS_PROBE && !nb_probed(sp)) continue;
            if (!nb_row_in_stage(sp, k->stage)) continue;
            if (k->pass == NB_PASS_REDO && !row_has_redo(k, sp)) continue;
            if (ws && nb_in_roi(s, s->roi_xmin, sp)) {   /* the row crosses the ROI */
                isa->render_row(k, ws, mask, sp, sp == sp0 ? fp0 : 0, interp0, image, &rows[sp]);
                if (nb_render_cancelled(k)) continue;
            }
            /* the passes before and after the skip pass leave no row final */
            if (k->pass == NB_PASS_PROBE || k->pass == NB_PASS_REDO) continue;
            __atomic_store_n(&k->ctl->row_done[sp], 1, __ATOMIC_RELEASE);
            __atomic_add_fetch(&k->ctl->rows_done, 1, __ATOMIC_RELAXED);
            /* the noise stream is sequential: the calling thread draws the
             * final rows between its own, the others render on.  Only up to
             * a row whose interpolation fell back: what follows it is
             * rendered again. */
            if (noise && nb_calling_thread()) {
                pixels_done_in_order(s, k->ctl);
                nb_noise_stream_follow(noise, image, k->ctl->row_done, k->ctl->rows_done_prefix);
            }
        }
        if (ws) isa->workspace_free(ws);
    }
    if (failed) return NB_ENOMEM;
    return __atomic_load_n(&k->ctl->cancel, __ATOMIC_RELAXED) ? NB_ECANCELLED : NB_OK;
}

/* the largest pixel a pass wrote in the rows of a stage, or of the probe's
 * rows (NaN ignored): every pixel so far is a lower bound of its full sum,
 * so the largest is a lower bound of the peak; a maximum depends neither on
 * the order nor on the team */
static double stage_peak(const nb_setup *s, const nb_row_result *rows, int stage, int probe_rows)
{
    float peak = 0.0f;
    for (int sp = 0; sp < s->spixels; ++sp) {
        if (probe_rows ? !nb_probed(sp) : !nb_row_in_stage(sp, stage)) continue;
        peak = rows[sp].peak > peak ? rows[sp].peak : peak;
    }
    return peak;
}

/* How far above the peak known so far each stage guesses the true one: a
 * guess too high costs a larger redo pass, never a wrong pixel.  The first
 * stage knows the probe alone, which misses the cores of sharp spots (on
 * pilatus6m its peak is 1/70 of the true one); each later one knows more
 * whole rows. */
static const double skip_guess[NB_STAGE_LAST + 1] = { 0.0, 64.0, 1.0 };

/* Is skipping worth its cost?  A pixel's bound costs about what one step
 * of each orientation block costs, the bookkeeping about one more; a
 * skipped pixel saves all its steps.  skippable: the fraction of the first
 * stage's pixels the second would skip. */
static int skipping_pays(double skippable, const nb_orientations *o, const nb_skip_tables *t)
{
    return skippable * o->n > 2.0 * (t->n_blocks + 1);
}

/* the largest code whose bound (with room for the rounding of bound / tau)
 * stays within limit */
static signed char redo_code_for(double tau, double limit)
{
    signed char code = NB_SKIP_SUMMED;
    for (int c = NB_SKIP_TINY; c <= 0; c = c == NB_SKIP_TINY ? 8 * NB_SKIP_MIN_EXPONENT : c + 1) {
        if (!(nb_skip_code_bound(c) * tau * (1.0 + 1e-9) <= limit)) break;
        code = (signed char)c;
    }
    return code;
}

/* A render that skips (docs/skipping.md).  The probe sums one pixel in 64
 * in full: their largest is a lower bound of the peak.  The skip pass
 * takes the rows in two stages; each skips a pixel whose bound is within
 * NB_SKIP_FRACTION of a guess of the peak from what is known before it, and
 * keeps its bound.  The first stage's bounds say whether skipping pays for
 * the second (if not, that one sums every pixel).  The redo pass sums the
 * skipped pixels whose bound exceeds NB_SKIP_FRACTION of the peak now
 * known (a lower bound of the true one).  Every decision depends on a
 * pixel's own values and on maxima over whole passes: the image does not
 * depend on the thread count. */
static int render_skipping(const nb_kernel_isa *isa, nb_kernel_ctx *k, const uint16_t *mask, float *image,
                           nb_row_result *rows, const nb_render_opts *opts, long *skipped)
{
    const nb_setup *s = k->s;
    const size_t pixels = (size_t)s->fpixels * s->spixels;
    const size_t first_cells = (size_t)(s->spixels / NB_STAGE_STRIDE + 1) * (size_t)s->fpixels;
    nb_row_result *scratch = calloc((size_t)s->spixels, sizeof *scratch);
    double stage_tau[NB_STAGE_LAST + 1] = { 0.0 };
    k->skip_code = malloc(pixels);
    k->first_stage_bound = malloc(first_cells * sizeof *k->first_stage_bound);
    *skipped = 0;
    if (!scratch || !k->skip_code || !k->first_stage_bound) {   /* no room to skip: sum every pixel */
        free(scratch); free(k->skip_code); free(k->first_stage_bound);
        k->skip_code = NULL;
        k->first_stage_bound = NULL;
        return render_rows(isa, k, mask, 0, 0, s->spixels, 0, image, rows, opts, NULL);
    }
    k->ctl->staged = 1;
    /* in parallel: the first touch of their pages */
#pragma omp parallel num_threads(threads_to_use(opts, (double)pixels)) if (pixels > 1000000)
    {
#pragma omp for schedule(static) nowait
        for (long i = 0; i < (long)first_cells; ++i) k->first_stage_bound[i] = NAN;
#pragma omp for schedule(static)
        for (int sp = 0; sp < s->spixels; ++sp)
            memset(k->skip_code + (size_t)sp * s->fpixels, (unsigned char)NB_SKIP_SUMMED, (size_t)s->fpixels);
    }
    k->pass = NB_PASS_PROBE;
    int rc = render_rows(isa, k, mask, 0, 0, s->spixels, 0, image, scratch, opts, NULL);
    double peak = stage_peak(s, scratch, NB_STAGE_ALL, 1);
    if (rc == NB_OK) {
        k->skip_tau = stage_tau[NB_STAGE_FIRST] = skip_guess[NB_STAGE_FIRST] * NB_SKIP_FRACTION * peak;
        k->pass = NB_PASS_SKIP;
        k->stage = NB_STAGE_FIRST;
        rc = render_rows(isa, k, mask, 0, 0, s->spixels, 0, image, rows, opts, NULL);
        double p = stage_peak(s, rows, NB_STAGE_FIRST, 0);
        if (p > peak) peak = p;
    }
    if (rc == NB_OK) {
        double tau = skip_guess[NB_STAGE_LAST] * NB_SKIP_FRACTION * peak;
        long wanted = 0, below = 0;
        for (size_t i = 0; i < first_cells; ++i) {
            wanted += !isnan(k->first_stage_bound[i]);
            below += k->first_stage_bound[i] <= tau;
        }
        int pays = wanted > 0 && skipping_pays((double)below / (double)wanted, k->o, k->skip);
        free(k->first_stage_bound);
        k->first_stage_bound = NULL;
        k->skip_tau = stage_tau[NB_STAGE_LAST] = pays ? tau : 0.0;
        k->pass = pays ? NB_PASS_SKIP : NB_PASS_ALL;
        k->stage = NB_STAGE_LAST;
        rc = render_rows(isa, k, mask, 0, 0, s->spixels, 0, image, rows, opts, NULL);
        double p = stage_peak(s, rows, NB_STAGE_LAST, 0);
        if (p > peak) peak = p;
    }
    if (rc == NB_OK) {
        double limit = NB_SKIP_FRACTION * peak;
        for (int stage = NB_STAGE_FIRST; stage <= NB_STAGE_LAST; ++stage)
            k->redo_code[stage] = redo_code_for(stage_tau[stage], limit);
        k->pass = NB_PASS_REDO;
        k->stage = NB_STAGE_ALL;
        memset(scratch, 0, (size_t)s->spixels * sizeof *scratch);
        rc = render_rows(isa, k, mask, 0, 0, s->spixels, 0, image, scratch, opts, NULL);
    }
    long count = 0;             /* a count: the same on any team */
#pragma omp parallel for schedule(static) reduction(+ : count) num_threads(threads_to_use(opts, (double)pixels)) \
    if (pixels > 1000000)
    for (long i = 0; i < (long)pixels; ++i) count += k->skip_code[i] != NB_SKIP_SUMMED;
    *skipped = count;
    free(scratch);
    free(k->first_stage_bound);
    free(k->skip_code);
    k->first_stage_bound = NULL;
    k->skip_code = NULL;
    k->pass = NB_PASS_ALL;
    k->stage = NB_STAGE_ALL;
    return rc;
}

/* NANOBRAGG_KERNEL_PATH=steps renders every pixel step by step in the
 * reference's order with libm (the vector path's independent check, for
 * tests); unset or "vector": the usual choice. */
static int steps_only(void)
{
    const char *v = getenv("NANOBRAGG_KERNEL_PATH");
    return v && strcmp(v, "steps") == 0;
}

/* The kernel for this CPU: the highest x86-64 level it supports, or the one
 * NANOBRAGG_ISA names (baseline, v3, v4; auto or unset: the highest).  Read
 * at every render, so that tests and benchmarks can switch in one process. */
static int pick_kernel(const nb_kernel_isa **isa, char *err, size_t errlen)
{
    const char *want = getenv("NANOBRAGG_ISA");
    if (want && !*want) want = NULL;
    const nb_kernel_isa *best = &nb_kernel_baseline;
#if defined(NB_HAVE_X86_LEVELS)
    __builtin_cpu_init();
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    int v3 = __builtin_cpu_supports("x86-64-v3") != 0, v4 = __builtin_cpu_supports("x86-64-v4") != 0;
#else
    int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
             __builtin_cpu_supports("bmi2");
    int v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
#endif
    if (v4) best = &nb_kernel_v4;
    else if (v3) best = &nb_kernel_v3;
    if (want && strcmp(want, "v3") == 0) {
        if (!v3) {
            nb_set_error(err, errlen, "NANOBRAGG_ISA=v3: this CPU lacks x86-64-v3 (AVX2, FMA)");
            return NB_EINVAL;
        }
        *isa = &nb_kernel_v3;
        return NB_OK;
    }
    if (want && strcmp(want, "v4") == 0) {
        if (!v4) {
            nb_set_error(err, errlen, "NANOBRAGG_ISA=v4: this CPU lacks x86-64-v4 (AVX-512)");
            return NB_EINVAL;
        }
        *isa = &nb_kernel_v4;
        return NB_OK;
    }
#endif
    if (!want || strcmp(want, "auto") == 0) *isa = best;
    else if (strcmp(want, "baseline") == 0) *isa = &nb_kernel_baseline;
    else {
#if defined(NB_HAVE_X86_LEVELS)
        nb_set_error(err, errlen, "NANOBRAGG_ISA=%.32s: expected baseline, v3, v4 or auto", want);
#else
        nb_set_error(err, errlen, "NANOBRAGG_ISA=%.32s: this build has one kernel: expected baseline or auto", want);
#endif
        return NB_EINVAL;
    }
    return NB_OK;
}

/* One row's share of the image statistics.  The rows are summed in
 * parallel and combined in row order, so the result does not depend on
 * the team; min and max keep the serial scan's rules (the first wanted
 * pixel starts the minimum, NaN included; a maximum is the first pixel
 * above 0 and above every pixel before it). */
typedef struct {
    long n, nonfinite, roi_n;
    double sum, sumsqr, dev;
    double first, min_serial;     /* the first wanted pixel; the serial minimum from it */
    double min_numbers;           /* the smallest non-NaN pixel (first of equals) */
    int has_number;
    double max;                   /* 0 if none above 0 */
    int max_fp;
} row_stats;

/* the serial scan: any mask, any values */
static void row_stats_serial(const nb_setup *s, const uint16_t *mask, const float *row, int sp, row_stats *r)
{
    memset(r, 0, sizeof *r);
    r->max_fp = -1;
    for (int fp = 0; fp < s->fpixels; ++fp) {
        if (!nb_pixel_wanted(s, mask, fp, sp)) continue;
        double v = row[fp];
        if (!isfinite(v)) ++r->nonfinite;
        if (r->n == 0) r->first = r->min_serial = v;
        else if (v < r->min_serial) r->min_serial = v;
        if (v == v && (!r->has_number || v < r->min_numbers)) { r->min_numbers = v; r->has_number = 1; }
        if (v > r->max) { r->max = v; r->max_fp = fp; }
        r->sum += v;
        r->sumsqr += v * v;
        ++r->n;
    }
}

/* Sums of x and x^2 over row[lo..hi] in STATS_LANES interleaved partial
 * sums (a fixed order, so the result is the same on every team), with the
 * row's float extremes; returns 0 if a value is not finite. */
#define STATS_LANES 8
static int row_sums_finite(const float *row, int lo, int hi, double *sum, double *sumsqr, float *min, float *max)
{
    double s[STATS_LANES] = { 0 }, q[STATS_LANES] = { 0 };
    float mn = row[lo], mx = row[lo];
    int bad = 0, fp = lo;
    for (; fp + STATS_LANES - 1 <= hi; fp += STATS_LANES)
        for (int j = 0; j < STATS_LANES; ++j) {
            float v = row[fp + j];
            bad |= !(fabsf(v) <= FLT_MAX);
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
            s[j] += v;
            q[j] += (double)v * v;
        }
    for (int j = 0; fp <= hi; ++fp, ++j) {
        float v = row[fp];
        bad |= !(fabsf(v) <= FLT_MAX);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        s[j] += v;
        q[j] += (double)v * v;
    }
    double ts = 0.0, tq = 0.0;
    for (int j = 0; j < STATS_LANES; ++j) { ts += s[j]; tq += q[j]; }
    *sum = ts; *sumsqr = tq; *min = mn; *max = mx;
    return !bad;
}

/* With no mask and finite values, the serial scan's rules reduce to the
 * row's extremes (the maximum at its first pixel); otherwise it runs. */
static void row_stats_scan(const nb_setup *s, const uint16_t *mask, const float *image, int sp, row_stats *r)
{
    const float *row = image + (size_t)sp * s->fpixels;
    int lo, hi;
    nb_roi_columns(s, sp, &lo, &hi);
    float mn, mx;
    if (mask || lo > hi || !row_sums_finite(row, lo, hi, &r->sum, &r->sumsqr, &mn, &mx)) {
        row_stats_serial(s, mask, row, sp, r);
        return;
    }
    r->n = hi - lo + 1;
    r->nonfinite = 0;
    r->first = row[lo];
    r->min_serial = r->min_numbers = mn;
    r->has_number = 1;
    r->max = 0.0;
    r->max_fp = -1;
    if (mx > 0.0f) {
        r->max = mx;
        for (r->max_fp = lo; row[r->max_fp] != mx; ++r->max_fp) {}
    }
}

/* the row's share of the deviation from the mean, over the ROI (masked
 * pixels, zero, included), in interleaved partial sums as above */
static void row_deviation(const nb_setup *s, const float *image, int sp, double mean, row_stats *r)
{
    const float *row = image + (size_t)sp * s->fpixels;
    int lo, hi;
    nb_roi_columns(s, sp, &lo, &hi);
    double d2[STATS_LANES] = { 0 };
    int fp = lo;
    for (; fp + STATS_LANES - 1 <= hi; fp += STATS_LANES)
        for (int j = 0; j < STATS_LANES; ++j) {
            double d = row[fp + j] - mean;
            d2[j] += d * d;
        }
    for (int j = 0; fp <= hi; ++fp, ++j) {
        double d = row[fp] - mean;
        d2[j] += d * d;
    }
    r->dev = 0.0;
    for (int j = 0; j < STATS_LANES; ++j) r->dev += d2[j];
    r->roi_n = hi >= lo ? hi - lo + 1 : 0;
}

static void compute_stats(const nb_setup *s, const uint16_t *mask, const float *image, nb_stats *st)
{
    const int ov = s->oversample;
    row_stats *rows = malloc((size_t)s->spixels * sizeof *rows);
    row_stats one;
    const int parallel = rows != NULL && (double)s->fpixels * s->spixels > 1e6;
#pragma omp parallel for schedule(static) if (parallel)
    for (int sp = 0; sp < (rows ? s->spixels : 0); ++sp) row_stats_scan(s, mask, image, sp, &rows[sp]);
    double sum = 0.0, sumsqr = 0.0;
    long n = 0;
    st->max_I = 0.0;
    st->min_I = 0.0;
    for (int sp = 0; sp < s->spixels; ++sp) {
        row_stats *r = rows ? &rows[sp] : &one;
        if (!rows) row_stats_scan(s, mask, image, sp, r);
        if (r->n == 0) continue;
        st->nonfinite_pixels += r->nonfinite;
        if (n == 0) st->min_I = r->min_serial;
        else if (r->has_number && r->min_numbers < st->min_I) st->min_I = r->min_numbers;
        if (r->max > st->max_I) {
            /* reported at the centre of the pixel's last sub-pixel */
            st->max_I = r->max;
            st->max_I_x_m = s->subpixel_m * (r->max_fp * ov + ov - 1) + s->subpixel_m / 2.0;
            st->max_I_y_m = s->subpixel_m * (sp * ov + ov - 1) + s->subpixel_m / 2.0;
        }
        sum += r->sum;
        sumsqr += r->sumsqr;
        n += r->n;
    }
    st->pixels_rendered = n;
    long denom = n <= 0 ? 1 : n;
    st->mean = sum / denom;
    if (n <= 1) n = 2;
    st->rms = sqrt(sumsqr / (n - 1));
    const double mean = st->mean;
#pragma omp parallel for schedule(static) if (parallel)
    for (int sp = 0; sp < (rows ? s->spixels : 0); ++sp) row_deviation(s, image, sp, mean, &rows[sp]);
    double dev = 0.0;
    long m = 0;
    for (int sp = 0; sp < s->spixels; ++sp) {
        row_stats *r = rows ? &rows[sp] : &one;
        if (!rows) row_deviation(s, image, sp, mean, r);
        dev += r->dev;
        m += r->roi_n;
    }
    free(rows);
    if (m <= 1) m = 2;
    st->rmsd = sqrt(dev / (m - 1));
}

int nb_render(const nb_setup *s, const nb_hkl *hkl, const uint16_t *mask, float *image,
              nb_stats *stats, const nb_render_opts *opts, char *err, size_t errlen)
{
    memset(stats, 0, sizeof *stats);
    stats->fallback_pixel = -1;
    const nb_kernel_isa *isa;
    if (pick_kernel(&isa, err, errlen) != NB_OK) return NB_EINVAL;
    stats->kernel_isa = isa->name;
    /* in parallel: on a fresh buffer this is the first touch of its pages */
#pragma omp parallel for schedule(static) num_threads(threads_to_use(opts, (double)s->fpixels * s->spixels)) if ((double)s->fpixels * s->spixels > 1e6)
    for (int sp = 0; sp < s->spixels; ++sp) memset(image + (size_t)sp * s->fpixels, 0, (size_t)s->fpixels * sizeof(float));
    nb_orientations o;
    if (orientations_build(s, &o) != NB_OK) {
        nb_set_error(err, errlen, "out of memory for %d crystal orientations", s->phisteps * s->mosaic_domains);
        return NB_ENOMEM;
    }
    nb_row_result *rows = calloc((size_t)s->spixels, sizeof *rows);
    if (!rows) {
        free(o.block);
        nb_set_error(err, errlen, "out of memory");
        return NB_ENOMEM;
    }
    for (int sp = 0; sp < s->spixels; ++sp) rows[sp].first_fallback_fp = -1;
    nb_render_ctl ctl = { opts, 0, 0.0, 0, -1, calloc((size_t)s->spixels + 1, 1), rows };
    if (!ctl.row_done) {
        free(rows);
        free(o.block);
        nb_set_error(err, errlen, "out of memory");
        return NB_ENOMEM;
    }
    ctl.next_poll_s = wall_seconds() + NB_POLL_INTERVAL_S;
    nb_kernel_ctx k = { s, hkl, &o, hkl && hkl->count > 0 && hkl->F, steps_only(), &ctl };
    int interp = s->interpolate && k.have_grid;
    int rc;
    nb_skip_tables skip;
    int skipping = opts && opts->skip_negligible && !opts->noise && !interp && !k.steps_only &&
                   nb_skip_tables_build(s, hkl, k.have_grid, &o, &skip) == NB_OK;
    if (skipping && !skipping_pays(1.0, &o, &skip)) {     /* too few steps, whatever it skips */
        nb_skip_tables_free(&skip);
        skipping = 0;
    }
    if (skipping) {
        k.skip = &skip;
        rc = render_skipping(isa, &k, mask, image, rows, opts, &stats->pixels_skipped);
        nb_skip_tables_free(&skip);
    } else {
        rc = render_rows(isa, &k, mask, 0, 0, s->spixels, interp, image, rows, opts, opts ? opts->noise : NULL);
    }

    /* Interpolation stays off after the first stencil that leaves the grid,
     * in raster order: re-render everything after that pixel without it. */
    int fallback_row = -1;
    for (int sp = 0; rc == NB_OK && sp < s->spixels && fallback_row < 0; ++sp)
        if (rows[sp].first_fallback_fp >= 0) fallback_row = sp;
    if (fallback_row >= 0) {
        nb_row_result *r = &rows[fallback_row];
        stats->interpolation_fell_back = 1;
        stats->fallback_pixel = (long)fallback_row * s->fpixels + r->first_fallback_fp;
        for (int i = 0; i < 3; ++i) { stats->fallback_hkl[i] = r->note.hkl[i]; stats->fallback_hkl0[i] = r->note.hkl0[i]; }
        /* solid angles do not depend on interpolation: the first pass's sums stand */
        nb_row_result *redo = calloc((size_t)s->spixels, sizeof *redo);
        if (!redo) rc = NB_ENOMEM;
        else {
            for (int sp = 0; sp < s->spixels; ++sp) redo[sp].first_fallback_fp = -1;
            rc = render_rows(isa, &k, mask, fallback_row, r->first_fallback_fp + 1, s->spixels, 0, image, redo, opts,
                             NULL);
            free(redo);
        }
    }
    for (int sp = 0; sp < s->spixels; ++sp) stats->omega_sum += rows[sp].omega_sum;
    free(rows);
    free(o.block);
    free(ctl.row_done);
    if (rc == NB_ECANCELLED) {
        nb_set_error(err, errlen, "render cancelled");
        return rc;
    }
    if (rc != NB_OK) {
        nb_set_error(err, errlen, "out of memory while rendering");
        return rc;
    }
    if (opts && opts->poll) {
        long total = (long)s->spixels * s->fpixels;
        long done = stats->interpolation_fell_back ? stats->fallback_pixel : total;
        if (opts->poll(opts->poll_ctx, done, total) != 0) {
            nb_set_error(err, errlen, "render cancelled");
            return NB_ECANCELLED;
        }
    }
    compute_stats(s, mask, image, stats);
    return NB_OK;
}

/* ------------------------------------------------------------ printout -- */

/* copy the groups of values `which` (NB_TRACE_*) from one trace to another */
static void take_groups(nb_pixel_trace *to, const nb_pixel_trace *from, int which)
{
    if (which & NB_TRACE_STEP) {
        memcpy(to->hkl, from->hkl, sizeof to->hkl);
        memcpy(to->hkl0, from->hkl0, sizeof to->hkl0);
        to->F_latt = from->F_latt;
        to->orientation = from->orientation;
        memcpy(to->a_m, from->a_m, sizeof to->a_m);
        memcpy(to->b_m, from->b_m, sizeof to->b_m);
        memcpy(to->c_m, from->c_m, sizeof to->c_m);
    }
    if (which & NB_TRACE_F_CELL) to->F_cell = from->F_cell;
}

/* Before any step the reference's variables hold what its setup left: the
 * unrotated crystal; from a text HKL file its last row (h k l F as read;
 * h0 and k0 then run one past the grid while the Fdump cache is written, l0
 * keeps the row's l), from an Fdump cache h0 and k0 likewise; h0 and k0 end
 * at 6 once the interpolation stencil is allocated.  What it leaves
 * uninitialised is 0 here. */
static void untouched_groups(const nb_setup *s, const nb_hkl *hkl, nb_pixel_trace *t, int which)
{
    nb_pixel_trace z;
    memset(&z, 0, sizeof z);
    z.orientation = -1;
    memcpy(z.a_m, s->a0, sizeof z.a_m);
    memcpy(z.b_m, s->b0, sizeof z.b_m);
    memcpy(z.c_m, s->c0, sizeof z.c_m);
    int grid = hkl && hkl->count > 0 && hkl->F;
    if (grid && hkl->read_as != NB_HKL_ROWS) {
        z.hkl0[0] = hkl->h_max - hkl->h_min + 2;
        z.hkl0[1] = hkl->k_max - hkl->k_min + 2;
    }
    if (grid && hkl->read_as == NB_HKL_TEXT) {
        for (int i = 0; i < 3; ++i) z.hkl[i] = hkl->last_row[i];
        z.hkl0[2] = (int)hkl->last_row[2];
        z.F_cell = hkl->last_row[3];
    }
    if (grid && s->interpolate) z.hkl0[0] = z.hkl0[1] = 6;
    take_groups(t, &z, which);
}

static int trace_at(const nb_kernel_isa *isa, const nb_kernel_ctx *k, void *ws, const uint16_t *mask,
                    long fallback_pixel, long p, nb_pixel_trace *t)
{
    const nb_setup *s = k->s;
    int interp = s->interpolate && k->have_grid && (fallback_pixel < 0 || p <= fallback_pixel);
    t->pixel = p;
    return isa->trace_pixel(k, ws, mask, (int)(p % s->fpixels), (int)(p / s->fpixels), interp, t);
}

int nb_trace_pixels(const nb_setup *s, const nb_hkl *hkl, const uint16_t *mask, long fallback_pixel,
                    long first, long end, nb_pixel_trace *out, int *n_out, nb_pixel_trace *carry, char *err,
                    size_t errlen)
{
    const long total = (long)s->fpixels * s->spixels;
    *n_out = 0;
    if (first < 0 || end > total || first > end || end - first > 2147483647L) {
        nb_set_error(err, errlen, "printout: raster range %ld..%ld is not within the %ld pixels", first, end, total);
        return NB_EINVAL;
    }
    if (carry && carry->pixel >= first) {
        nb_set_error(err, errlen, "printout: raster range %ld..%ld does not follow pixel %ld", first, end, carry->pixel);
        return NB_EINVAL;
    }
    const nb_kernel_isa *isa;
    if (pick_kernel(&isa, err, errlen) != NB_OK) return NB_EINVAL;
    nb_orientations o;
    if (orientations_build(s, &o) != NB_OK) {
        nb_set_error(err, errlen, "out of memory for %d crystal orientations", s->phisteps * s->mosaic_domains);
        return NB_ENOMEM;
    }
    nb_render_ctl ctl = { NULL, 0, 0.0, 0, -1, NULL, NULL };
    nb_kernel_ctx k = { s, hkl, &o, hkl && hkl->count > 0 && hkl->F, 1, &ctl };
    void *ws = isa->workspace_new(&k);
    if (!ws) {
        free(o.block);
        nb_set_error(err, errlen, "out of memory");
        return NB_ENOMEM;
    }
    int n = 0;
    for (long p = first; p < end; ++p) {
        if (!nb_pixel_wanted(s, mask, (int)(p % s->fpixels), (int)(p / s->fpixels))) continue;
        int i = n++;
        nb_pixel_trace *t = &out[i];
        memset(t, 0, sizeof *t);
        int missing = (NB_TRACE_STEP | NB_TRACE_F_CELL) & ~trace_at(isa, &k, ws, mask, fallback_pixel, p, t);
        /* what this pixel did not set, the pixels before it left */
        long q = p;
        while (missing) {
            do --q; while (q >= 0 && !nb_pixel_wanted(s, mask, (int)(q % s->fpixels), (int)(q / s->fpixels)));
            if (q < 0) {
                untouched_groups(s, hkl, t, missing);
                break;
            }
            const nb_pixel_trace *prev = i > 0 ? &out[i - 1] : carry && carry->pixel >= 0 ? carry : NULL;
            if (prev && q == prev->pixel) {        /* complete already */
                take_groups(t, prev, missing);
                break;
            }
            nb_pixel_trace before;
            memset(&before, 0, sizeof before);
            int got = trace_at(isa, &k, ws, mask, fallback_pixel, q, &before);
            take_groups(t, &before, missing & got);
            missing &= ~got;
        }
    }
    *n_out = n;
    if (carry && n > 0) *carry = out[n - 1];
    isa->workspace_free(ws);
    free(o.block);
    return NB_OK;
}
