/*
 * detector_noise.c - from photons per pixel to detector counts (noisify).
 *
 * Steps, in the reference's order: photons = (fluence r_e^2) scale value;
 * the noiseless integer image (blurred by the PSF when no noise is drawn);
 * then per pixel in raster order beam flicker, calibration error and a
 * Poisson count; the point-spread function spreads the counts; gain, ADC
 * offset and read-out noise make ADUs.  The deviates are one sequential
 * stream (nb_deviates, Numerical Recipes), so the noise loop is serial;
 * the passes around it are parallel per pixel.  The PSF is parallel over
 * bands of target rows, each band adding its contributions in the serial
 * order; after a noise draw it instead follows the draw row by row on a
 * second thread (one band), so the result never depends on the thread
 * count.
 */
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
static int team_size(int nthreads) { return nthreads > 0 ? nthreads : omp_get_max_threads(); }
static int thread_num(void) { return omp_get_thread_num(); }
#else
static int team_size(int nthreads) { (void)nthreads; return 1; }
static int thread_num(void) { return 0; }
#endif

/* below this many pixels a second thread costs more than it saves */
#define PARALLEL_PIXELS 65536

/* the largest of v[0..n-1] above 0 (0 if none; NaN never counts): a
 * maximum, so the same whatever the team */
static double largest(const float *v, size_t n, int nthreads)
{
    double best = 0.0;
#pragma omp parallel num_threads(team_size(nthreads)) if (n > PARALLEL_PIXELS)
    {
        double mine = 0.0;
#pragma omp for schedule(static) nowait
        for (long i = 0; i < (long)n; i++) if (mine < v[i]) mine = v[i];
#pragma omp critical
        if (best < mine) best = mine;
    }
    return best;
}

/* photons per pixel below which an error is "lost": sqrt(N) / this */
#define PSF_LOSS_FACTOR 10.0
/* fiber PSF: g = this * FWHM (FWHM = 2 g sqrt(2^(2/3) - 1)) */
#define FIBER_G_PER_FWHM 0.652383013252053
#define INT31_MAX 2147483647.0

/* ---- PSF kernels: the normalised profile integrated over one pixel ---- */

/* cumulative 2D Gaussian of unit FWHM (erf in x and y) */
static double gauss_cdf2(double x, double y)
{
    return 0.125 * (erf(2 * x * sqrt(log(2))) * erf(y * sqrt(log(16))) * sqrt(log(16) / log(2)));
}

static double gauss_pixel(double dx, double dy, double fwhm)
{
    double x = dx / fwhm, y = dy / fwhm, h = 1.0 / fwhm / 2.;
    return gauss_cdf2(x + h, y + h) - gauss_cdf2(x + h, y - h) - gauss_cdf2(x - h, y + h) + gauss_cdf2(x - h, y - h);
}

/* cumulative fiber profile g / (2 pi (g^2 + r^2)^(3/2)) */
static double fiber_cdf2(double x, double y, double g)
{
    return atan((x * y) / (g * sqrt(g * g + x * x + y * y))) / 2.0 / M_PI;
}

static double fiber_pixel(double x, double y, double g)
{
    const double h = 1.0 / 2.;
    return fiber_cdf2(x + h, y + h, g) - fiber_cdf2(x + h, y - h, g) - fiber_cdf2(x - h, y + h, g)
         + fiber_cdf2(x - h, y - h, g);
}

/* radius (pixels) beyond which fewer than sqrt(v)/10 of v photons land;
 * `from_max` picks the reference's spelling of the Gaussian formula used
 * for the brightest pixel (ln4*2 instead of ln16: it rounds differently) */
static int auto_radius(nb_psf_kind kind, double v, double fwhm_px, double g, int from_max)
{
    double lost = sqrt(v) / PSF_LOSS_FACTOR;
    double r;
    if (kind == NB_PSF_GAUSS) {
        r = from_max ? 1 + ceil(sqrt(-log(lost / v) / log(4) / 2) * fwhm_px)
                     : 1 + ceil(sqrt(-log(lost / v) / log(16)) * fwhm_px);
    } else {
        r = 1 + ceil(g * (v / lost));
    }
    /* v < 0.01 photons makes the Gaussian radius undefined (NaN) in the
     * reference; the smallest radius is the physical answer */
    if (!(r >= 1.0)) return 1;
    if (r > 1e9) return 1000000000;
    return (int)r;
}

static int cap_radius(int r, int w, int h)
{
    int maxwidth = w > h ? w : h;
    if (r == 0) r = 1;
    return r > maxwidth ? maxwidth : r;
}

/* The fraction of a pixel's photons outside radius r depends on r alone:
 * Gaussian exp(-ln16 (r/w)^2), fiber
 * g / sqrt(g^2 + r^2).  lost_factor() is the part computed once per radius;
 * lost_outside() completes it for v photons in the reference's order. */
static double lost_factor(nb_psf_kind kind, int r, double fwhm_px, double g)
{
    if (kind == NB_PSF_GAUSS) {
        double q = (double)r / fwhm_px;
        return exp(-log(16) * (q * q));
    }
    return sqrt(g * g + (double)r * r);
}

static double lost_outside(nb_psf_kind kind, double v, double factor, double g)
{
    return kind == NB_PSF_GAUSS ? v * factor : v * g / factor;
}

/* half-width of the kernel row dy within radius r: the largest dx with
 * dx^2 + dy^2 <= r^2 (exact in double for the radii allowed), -1 if none */
static int span_half(int r, int dy)
{
    long q = (long)r * r - (long)dy * dy;
    if (q < 0) return -1;
    long hw = (long)sqrt((double)q);
    while (hw * hw > q) --hw;
    while ((hw + 1) * (hw + 1) <= q) ++hw;
    return (int)hw;
}

/* What a blur needs beyond its input: the kernel of radius kr (weights
 * inside the kr circle; a weight does not depend on kr), each source's
 * radius and lost photons, the half-widths of the kernel rows per radius. */
typedef struct {
    nb_psf_kind kind;
    int w, h;                     /* image (pixels) */
    int kr, ks;                   /* kernel radius (pixels) and side, 2 kr + 1 */
    int user_radius;              /* > 0: every source's radius (pixels); else automatic */
    int max_r, capped;            /* the largest source radius used (pixels); a source's radius was above kr */
    double fwhm_px, g;            /* FWHM and the fiber profile's g (pixels) */
    double *kernel, *lost, *factor;
    int *radius;
    int **half;
} psf_plan;

static void psf_plan_free(psf_plan *pl)
{
    if (pl->half)
        for (int r = 0; r <= pl->kr; r++) free(pl->half[r]);
    free(pl->half); free(pl->kernel); free(pl->lost); free(pl->radius); free(pl->factor);
    memset(pl, 0, sizeof *pl);
}

static int psf_plan_init(psf_plan *pl, int w, int h, nb_psf_kind kind, double fwhm_px, int user_radius, int kr)
{
    size_t pixels = (size_t)w * (size_t)h;
    memset(pl, 0, sizeof *pl);
    pl->kind = kind; pl->w = w; pl->h = h; pl->kr = kr; pl->ks = 2 * kr + 1; pl->user_radius = user_radius;
    pl->fwhm_px = fwhm_px; pl->g = fwhm_px * FIBER_G_PER_FWHM;
    pl->kernel = calloc((size_t)pl->ks * (size_t)pl->ks, sizeof *pl->kernel);
    pl->lost = malloc(pixels * sizeof *pl->lost);
    pl->radius = malloc(pixels * sizeof *pl->radius);
    pl->factor = malloc(sizeof(double) * ((size_t)kr + 1));
    pl->half = calloc((size_t)kr + 1, sizeof *pl->half);
    if (!pl->kernel || !pl->lost || !pl->radius || !pl->factor || !pl->half) {
        psf_plan_free(pl);
        return NB_ENOMEM;
    }
    for (int dy = -kr; dy <= kr; ++dy)
        for (int dx = -kr; dx <= kr; ++dx) {
            if ((float)(dx * dx + dy * dy) > (float)kr * (float)kr) continue;
            pl->kernel[(size_t)pl->ks * (size_t)(kr + dy) + (size_t)(kr + dx)] =
                kind == NB_PSF_GAUSS ? gauss_pixel(dx, dy, fwhm_px) : fiber_pixel(dx, dy, pl->g);
        }
    for (int r = 0; r <= kr; r++) pl->factor[r] = lost_factor(kind, r, fwhm_px, pl->g);
    return NB_OK;
}

/* each source pixel's radius and lost photons, rows y0..y1-1 (independent
 * per pixel, so rows may run in parallel).  Returns the largest radius
 * used (pixels), and sets *capped if a source's radius exceeded the
 * kernel's: the kernel radius comes from the brightest pixel by the
 * reference's other spelling of the formula, which can round one lower. */
static int psf_sources(const psf_plan *pl, const float *in, long y0, long y1, int *capped)
{
    int max_r = 0;
    for (size_t i = (size_t)y0 * (size_t)pl->w; i < (size_t)y1 * (size_t)pl->w; i++) {
        double v = in[i];
        if (!(v > 0.0)) { pl->radius[i] = 0; pl->lost[i] = 0.0; continue; }
        int r = pl->user_radius > 0 ? pl->user_radius : auto_radius(pl->kind, v, pl->fwhm_px, pl->g, 0);
        r = cap_radius(r, pl->w, pl->h);
        if (r > pl->kr) { r = pl->kr; *capped = 1; }
        if (r > max_r) max_r = r;
        pl->radius[i] = r;
        pl->lost[i] = lost_outside(pl->kind, v, pl->factor[r], pl->g);
    }
    return max_r;
}

/* the half-widths of the kernel rows of every radius rows y0..y1-1 use */
static int psf_spans(psf_plan *pl, long y0, long y1)
{
    for (size_t i = (size_t)y0 * (size_t)pl->w; i < (size_t)y1 * (size_t)pl->w; i++) {
        int r = pl->radius[i];
        if (r == 0 || pl->half[r] != NULL) continue;
        pl->half[r] = malloc(sizeof(int) * (size_t)(2 * r + 1));
        if (pl->half[r] == NULL) return NB_ENOMEM;
        for (int dy = -r; dy <= r; dy++) pl->half[r][dy + r] = span_half(r, dy);
    }
    return NB_OK;
}

/* The sources of rows s0..s1-1, in raster order, added to the targets of
 * rows ya..yb-1: each target sums in the serial order. */
static void psf_scatter(const psf_plan *pl, const float *in, float *out, long s0, long s1, long ya, long yb)
{
    const int w = pl->w, h = pl->h, kr = pl->kr, ks = pl->ks;
    const double *kernel = pl->kernel;
    size_t ja = (size_t)ya * (size_t)w, jb = (size_t)yb * (size_t)w;
    for (long y0 = s0; y0 < s1; y0++) {
        for (int x0 = 0; x0 < w; x0++) {
            size_t i = (size_t)y0 * (size_t)w + (size_t)x0;
            int r = pl->radius[i];
            if (r == 0) continue;
            double v = in[i];
            int interior = x0 - r >= 0 && x0 + r < w && y0 - r >= ya && y0 + r < yb;
            if (interior && isfinite(v)) {
                /* row by row: every target of this source is distinct, so
                 * the order of the taps does not matter (and adding v * 0
                 * changes nothing) */
                const int *hr = pl->half[r] + r;
                for (int dy = -r; dy <= r; dy++) {
                    int hw = hr[dy];
                    float *o = out + (ptrdiff_t)i + (ptrdiff_t)dy * w - hw;
                    const double *ws = kernel + (size_t)ks * (size_t)(kr + dy) + (size_t)(kr - hw);
                    for (int e = 0; e <= 2 * hw; e++) o[e] = (float)(o[e] + v * ws[e]);
                }
                continue;
            }
            /* near an edge: the reference's loop (dx outer, dy inner; a
             * target column of w lands in column 0 of the next row) */
            float rr = (float)r * (float)r;
            for (int dx = -r; dx <= r; dx++) {
                for (int dy = -r; dy <= r; dy++) {
                    double kw = kernel[(size_t)ks * (size_t)(kr + dy) + (size_t)(kr + dx)];
                    if (kw == 0.0) continue;
                    if ((float)(dx * dx + dy * dy) > rr) continue;
                    long x = x0 + dx, y = y0 + dy;
                    if (x < 0 || x > w || y < 0 || y > h) continue;
                    size_t j = (size_t)y * (size_t)w + (size_t)x;
                    if (j < ja || j >= jb) continue;   /* another band's, or past the image */
                    out[j] += v * kw;
                }
            }
        }
    }
}

/* the blur with kernel radius kr done: the photons outside every source's
 * radius spread evenly (their sum in raster order) */
static void psf_finish(const psf_plan *pl, int kr, float *out, nb_psf_info *info, int nthreads)
{
    size_t pixels = (size_t)pl->w * (size_t)pl->h;
    info->radius = kr;
    double total_lost = 0.0;
    for (size_t i = 0; i < pixels; i++) total_lost += pl->lost[i];
    info->lost_photons = total_lost;
    double share = total_lost / (double)pixels;
#pragma omp parallel for schedule(static) num_threads(team_size(nthreads)) if (pixels > PARALLEL_PIXELS)
    for (long i = 0; i < (long)pixels; i++) out[i] += share;
}

/* the kernel radius: the user's, or from the brightest pixel (0: no photons) */
static int psf_kernel_radius(const float *in, size_t pixels, int w, int h, nb_psf_kind kind, double fwhm_px,
                             int user_radius, nb_psf_info *info, int nthreads)
{
    int kr = user_radius;
    if (kr <= 0) {
        double max_I = largest(in, pixels, nthreads);
        info->max_photons = max_I;
        if (max_I <= 0.0) return 0;
        kr = auto_radius(kind, max_I, fwhm_px, fwhm_px * FIBER_G_PER_FWHM, 1);
        info->auto_radius = kr;
    }
    return cap_radius(kr, w, h);
}

int nb_psf_apply(const float *in, float *out, int w, int h, nb_psf_kind kind, double fwhm_px, int user_radius,
                 nb_psf_info *info, int nthreads, char *err, size_t errlen)
{
    size_t pixels = (size_t)w * (size_t)h;
    nb_psf_info local;
    if (info == NULL) info = &local;
    memset(info, 0, sizeof *info);
    if (kind == NB_PSF_NONE || pixels == 0 || !(fwhm_px > 0.0)) {
        memcpy(out, in, pixels * sizeof *out);
        return NB_OK;
    }
    memset(out, 0, pixels * sizeof *out);
    int kr = psf_kernel_radius(in, pixels, w, h, kind, fwhm_px, user_radius, info, nthreads);
    if (kr == 0) { info->skipped = 1; return NB_OK; }   /* nothing to blur: all zero */
    psf_plan pl;
    if (psf_plan_init(&pl, w, h, kind, fwhm_px, user_radius, kr) != NB_OK) {
        nb_set_error(err, errlen, "PSF: out of memory for a radius of %d pixels", kr);
        return NB_ENOMEM;
    }
#pragma omp parallel for schedule(static) num_threads(team_size(nthreads)) if (pixels > PARALLEL_PIXELS)
    for (long y = 0; y < h; y++) {
        int capped = 0;          /* capping is the blur's rule here: nothing to check */
        psf_sources(&pl, in, y, y + 1, &capped);
    }
    int rc = psf_spans(&pl, 0, h);
    if (rc == NB_OK) {
        /* bands of target rows; every band visits the sources that can reach
         * it in raster order.  A target column of w lands in column 0 of
         * the next row (the reference's bound test), hence the extra source
         * row above. */
        int nbands = pixels < PARALLEL_PIXELS ? 1 : team_size(nthreads);
        if (nbands > h) nbands = h;
#pragma omp parallel for schedule(static, 1) num_threads(nbands)
        for (int b = 0; b < nbands; b++) {
            long ya = (long)h * b / nbands, yb = (long)h * (b + 1) / nbands;
            long s0 = ya - kr - 1, s1 = yb + kr;
            if (s0 < 0) s0 = 0;
            if (s1 > h) s1 = h;
            psf_scatter(&pl, in, out, s0, s1, ya, yb);
        }
        psf_finish(&pl, kr, out, info, nthreads);
    } else {
        nb_set_error(err, errlen, "PSF: out of memory for a radius of %d pixels", kr);
    }
    psf_plan_free(&pl);
    return rc;
}

/* ---- pixel conversions ------------------------------------------------ */

/* (unsigned T)(double) as x86-64 gcc does it: a 64-bit truncation whose
 * low bits are kept (out-of-range and NaN give the "indefinite" value) */
static int64_t trunc_like_x86(double v)
{
    if (!(v > -9223372036854775808.0 && v < 9223372036854775808.0)) return INT64_MIN;
    return (int64_t)v;
}

static void store_pixel(void *out, int bits, size_t i, double adu)
{
    if (bits == 32) ((uint32_t *)out)[i] = (uint32_t)trunc_like_x86(adu);
    else ((uint16_t *)out)[i] = (uint16_t)(int32_t)trunc_like_x86(adu);
}

void nb_noisify_params_init(nb_noisify_params *p)
{
    memset(p, 0, sizeof *p);
    p->fluence_re2 = 1.0;
    p->scale = 1.0;
    p->gain = 1.0;
    p->adc_offset = 40.0;
    p->calibration = 0.03;
    p->calib_seed = 123456789;
    p->psf = NB_PSF_NONE;
    p->psf_fwhm_px = 0.0;
    p->bits = 16;
    p->noise = 1;
}

/* Can the blur of the noisy photons follow their draw, row by row, on a
 * second thread?  The kernel radius comes from the brightest count, known
 * only at the end; its weights do not depend on it, so the stream blurs
 * with a kernel large enough for any count up to 4x the brightest mean
 * (plus 1000), and noise_psf_stream_done() checks that no source needed
 * more than the radius the brightest count gives.  A small kernel only. */
#define PSF_STREAM_MAX_RADIUS_PX 64
static int noise_psf_streams(const nb_noisify_params *p, double max_mean, int nthreads, psf_plan *pl)
{
    if (team_size(nthreads) < 2 || p->psf == NB_PSF_NONE || !(p->psf_fwhm_px > 0.0)) return 0;
    int kr = p->psf_radius;
    if (kr <= 0) {
        if (!(max_mean <= 1e12)) return 0;
        kr = auto_radius(p->psf, 4.0 * max_mean + 1000.0, p->psf_fwhm_px, p->psf_fwhm_px * FIBER_G_PER_FWHM, 0) + 1;
    }
    kr = cap_radius(kr, p->width, p->height);
    if (kr > PSF_STREAM_MAX_RADIUS_PX) return 0;
    return psf_plan_init(pl, p->width, p->height, p->psf, p->psf_fwhm_px, p->psf_radius, kr) == NB_OK;
}

/* the streamed blur is the blur nb_psf_apply() makes if no source's radius
 * exceeds the kernel radius of the brightest count: then finish it */
static int noise_psf_stream_done(const nb_noisify_params *p, const float *counts, size_t pixels, const psf_plan *pl,
                                 float *out, nb_psf_info *info, int nthreads)
{
    memset(info, 0, sizeof *info);
    int kr = psf_kernel_radius(counts, pixels, p->width, p->height, p->psf, p->psf_fwhm_px, p->psf_radius, info, nthreads);
    if (pl->capped || pl->max_r > kr) return 0;
    if (kr == 0) { info->skipped = 1; return 1; }       /* nothing blurred: all zero */
    psf_finish(pl, kr, out, info, nthreads);
    return 1;
}

int nb_noisify(const nb_noisify_params *p, const float *image, void *int_image, uint8_t *pgm, void *noise_image,
               nb_noisify_stats *st, int nthreads, char *err, size_t errlen)
{
    size_t pixels = (size_t)p->width * (size_t)p->height;
    nb_noisify_stats local;
    if (st == NULL) st = &local;
    memset(st, 0, sizeof *st);
    if (p->width <= 0 || p->height <= 0) {
        nb_set_error(err, errlen, "noisify: image size %d x %d must be positive", p->width, p->height);
        return NB_EINVAL;
    }
    if (p->bits != 16 && p->bits != 32) {
        nb_set_error(err, errlen, "noisify: -bits must be 16 or 32, got %d", p->bits);
        return NB_EINVAL;
    }
    float *photons = malloc(pixels * sizeof *photons);
    float *blurred = p->psf != NB_PSF_NONE && p->psf_fwhm_px > 0.0 ? malloc(pixels * sizeof *blurred) : NULL;
    if (photons == NULL || (p->psf != NB_PSF_NONE && p->psf_fwhm_px > 0.0 && blurred == NULL)) {
        free(photons); free(blurred);
        nb_set_error(err, errlen, "noisify: out of memory for %zu pixels", pixels);
        return NB_ENOMEM;
    }
    long negative = 0;
#pragma omp parallel for schedule(static) reduction(+ : negative) num_threads(team_size(nthreads)) if (pixels > PARALLEL_PIXELS)
    for (long i = 0; i < (long)pixels; i++) {
        double I = image[i];
        if (I < 0.0) negative++;
        photons[i] = (float)((p->fluence_re2 * p->scale) * I);
    }
    st->max_input = largest(image, pixels, nthreads);
    st->negative_pixels = negative;
    int rc = NB_OK;

    const float *noiseless = photons;
    if (!p->noise && blurred != NULL) {
        rc = nb_psf_apply(photons, blurred, p->width, p->height, p->psf, p->psf_fwhm_px, p->psf_radius,
                          &st->psf, nthreads, err, errlen);
        noiseless = blurred;
        st->psf_applied = 1;
    }
    if (rc == NB_OK) {
#pragma omp parallel for schedule(static) num_threads(team_size(nthreads)) if (pixels > PARALLEL_PIXELS)
        for (long i = 0; i < (long)pixels; i++) {
            double adu = noiseless[i] * p->gain + p->adc_offset;
            if (adu > INT31_MAX) adu = INT31_MAX;
            if (adu > 65535.0) adu = 65535.0;
            if (int_image) store_pixel(int_image, p->bits, i, adu);
            if (pgm) {
                /* the PGM shows the 16-bit pixel, clipped to 255 */
                uint16_t v16 = (uint16_t)(int32_t)trunc_like_x86(adu);
                pgm[i] = (uint8_t)(v16 > 255 ? 255 : v16);
            }
        }
    }
    if (rc != NB_OK || !p->noise || noise_image == NULL) {
        free(photons); free(blurred);
        return rc;
    }

    /* one uniform stream; the calibration draws use their own state word
     * but share the table and the Box-Muller spare, as the reference */
    nb_rng rng;
    memset(&rng, 0, sizeof rng);
    long seed = p->seed, calib_seed = p->calib_seed;
    nb_deviates dev;
    nb_deviates_init(&dev, &rng, &seed);
    /* flicker and calibration scale the photons by gaussians: room for the
     * largest of them in the ln Gamma cache */
    double max_mean = largest(photons, pixels, nthreads);
    nb_deviates_cache_for(&dev, max_mean * (1.0 + 6.0 * (p->flicker + p->calibration)));
    /* without them the means are known ahead: prepare them in parallel */
    nb_poisson_pre *pre = NULL;
    if (p->flicker <= 0.0 && p->calibration <= 0.0) {
        pre = malloc(pixels * sizeof *pre);
        if (pre) {
#pragma omp parallel for schedule(static) num_threads(team_size(nthreads)) if (pixels > 100000)
            for (long i = 0; i < (long)pixels; i++) nb_poisson_prepare(photons[i], &pre[i]);
        }
    }
    /* the blur follows the draw row by row on a second thread */
    psf_plan stream;
    int streaming = noise_psf_streams(p, max_mean, nthreads, &stream);
    if (streaming) memset(blurred, 0, pixels * sizeof *blurred);
    long rows_drawn = 0;
    int blur_followed = 0;
    double sum = 0.0;
#pragma omp parallel num_threads(2) if (streaming)
    {
        if (thread_num() == 1) {
            blur_followed = 1;
            for (long y = 0; y < p->height; y++) {
                while (__atomic_load_n(&rows_drawn, __ATOMIC_ACQUIRE) <= y) {
                    const struct timespec nap = { 0, 20000 };    /* 20 us */
                    nanosleep(&nap, NULL);
                }
                int r = psf_sources(&stream, photons, y, y + 1, &stream.capped);
                if (r > stream.max_r) stream.max_r = r;
                if (psf_spans(&stream, y, y + 1) != NB_OK) stream.capped = 1;   /* no memory: blur again below */
                else psf_scatter(&stream, photons, blurred, y, y + 1, 0, p->height);
            }
        }
        if (thread_num() == 0) {
            for (size_t i = 0, y = 0; y < (size_t)p->height; y++) {
                for (int x = 0; x < p->width; x++, i++) {
                    if (pre) {
                        photons[i] = nb_poidev_prepared(&dev, photons[i], &pre[i]);
                    } else {
                        double n = photons[i];
                        if (p->flicker > 0.0) n *= (1.0 + p->flicker * nb_gaussdev(&dev));
                        if (p->calibration > 0.0) {
                            dev.idum = &calib_seed;
                            n *= (1.0 + p->calibration * nb_gaussdev(&dev));
                            dev.idum = &seed;
                        }
                        photons[i] = nb_poidev(&dev, (float)n);
                    }
                    sum += photons[i];
                }
                __atomic_store_n(&rows_drawn, (long)y + 1, __ATOMIC_RELEASE);
            }
        }
    }
    free(pre);
    st->photons_before_psf = sum;
    const float *signal = photons;
    if (blurred != NULL) {
        if (!streaming || !blur_followed || !noise_psf_stream_done(p, photons, pixels, &stream, blurred, &st->psf, nthreads))
            rc = nb_psf_apply(photons, blurred, p->width, p->height, p->psf, p->psf_fwhm_px, p->psf_radius,
                              &st->psf, nthreads, err, errlen);
        if (streaming) psf_plan_free(&stream);
        signal = blurred;
        st->psf_applied = 1;
    }
    if (rc == NB_OK) {
        long overloads = 0;
        sum = 0.0;
        for (size_t i = 0; i < pixels; i++) {
            sum += signal[i];
            double adu = signal[i] * p->gain + p->adc_offset;
            if (p->readout > 0.0) adu += p->readout * nb_gaussdev(&dev);
            if (adu > INT31_MAX) { adu = INT31_MAX; if (p->bits == 32) ++overloads; }
            if (p->bits == 16 && adu > 65535.0) { adu = 65535.0; ++overloads; }
            store_pixel(noise_image, p->bits, i, adu);
        }
        st->photons = sum;
        st->overloads = overloads;
    }
    nb_deviates_free(&dev);
    free(photons); free(blurred);
    return rc;
}
