/*
 * noise.c - Poisson and Gaussian deviates and the noisy detector image.
 *
 * The deviates follow Numerical Recipes (poidev, gasdev, gammln) in single
 * precision, as the reference does; the float/double mix of every
 * expression is kept on purpose so that the same seed gives the same
 * photon counts bit for bit.  State the reference keeps in function-local
 * statics lives in nb_deviates instead.
 */
#include <stdlib.h>
#include "internal.h"

/* above this mean the rejection method gets slow: use the normal limit */
#define POISSON_GAUSS_LIMIT 1.0e6
/* below this mean count exponential waiting times directly */
#define POISSON_DIRECT_LIMIT 12.0
/* a growing ln Gamma cache stops at 4 M entries (16 MB) */
#define LGAMMA_GROW_MAX 4194304.0f

void nb_deviates_init(nb_deviates *d, nb_rng *rng, long *idum)
{
    d->rng = rng;
    d->idum = idum;
    d->gauss_has_spare = 0;
    d->gauss_spare = 0.0f;
    d->pois_oldm = -1.0f;            /* no mean cached yet */
    d->pois_sq = d->pois_alxm = d->pois_g = 0.0f;
    d->lgamma_int = NULL;
    d->lgamma_n = 0;
    d->lgamma_grow = 0;
}

int nb_deviates_cache(nb_deviates *d, size_t n)
{
    free(d->lgamma_int);
    d->lgamma_int = malloc(n * sizeof *d->lgamma_int);
    d->lgamma_n = d->lgamma_int ? n : 0;
    for (size_t i = 0; i < d->lgamma_n; i++) d->lgamma_int[i] = NAN;
    return d->lgamma_int != NULL;
}

void nb_deviates_free(nb_deviates *d)
{
    free(d->lgamma_int);
    d->lgamma_int = NULL;
    d->lgamma_n = 0;
}

static float uniform(nb_deviates *d) { return nb_ran1_inline(d->rng, d->idum); }

/* ln Gamma(x) by Lanczos' series (gamma = 5, six terms; NR's gammln) */
static float log_gamma(float x_in)
{
    static const double lanczos[6] = {
        76.18009172947146, -86.50532032941677, 24.01409824083091,
        -1.231739572450155, 0.1208650973866179e-2, -0.5395239384953e-5
    };
    double x = x_in, denom = x_in;
    double base = x + 5.5;
    base -= (x + 0.5) * log(base);
    double series = 1.000000000190015;
    for (int i = 0; i < 6; i++) series += lanczos[i] / ++denom;
    return (float)(-base + log(2.5066282746310005 * series / x));   /* sqrt(2 pi) */
}

/* unit normal deviate: polar Box-Muller, which yields two per accepted
 * point; the second is kept for the next call */
float nb_gaussdev(nb_deviates *d)
{
    if (d->gauss_has_spare) {
        d->gauss_has_spare = 0;
        return d->gauss_spare;
    }
    float x, y, r2;
    do {                               /* uniform point inside the unit disc */
        x = 2.0 * uniform(d) - 1.0;
        y = 2.0 * uniform(d) - 1.0;
        r2 = x * x + y * y;
    } while (r2 >= 1.0 || r2 == 0);
    float factor = sqrt(-2.0 * log(r2) / r2);
    d->gauss_spare = x * factor;
    d->gauss_has_spare = 1;
    return y * factor;
}

/* small means: the count of unit-rate arrivals before time `mean`, i.e. the
 * number of uniforms whose running product stays above exp(-mean) */
static float poisson_direct(nb_deviates *d, float mean)
{
    if (mean != d->pois_oldm) {
        d->pois_oldm = mean;
        d->pois_g = exp(-mean);
    }
    float count = -1, product = 1.0;
    do {
        ++count;
        product *= uniform(d);
    } while (product > d->pois_g);
    return count;
}

/* grow the cache to cover k (a noise image drawn while its render runs
 * does not know its largest mean ahead); out of memory: no growth, the
 * value is computed, the same */
static void cache_grow(nb_deviates *d, float k)
{
    size_t n = (size_t)k + 64;
    if (n < 2 * d->lgamma_n) n = 2 * d->lgamma_n;
    float *grown = realloc(d->lgamma_int, n * sizeof *grown);
    if (!grown) return;
    for (size_t i = d->lgamma_n; i < n; i++) grown[i] = NAN;
    d->lgamma_int = grown;
    d->lgamma_n = n;
}

/* ln Gamma(k + 1) of an integral candidate k >= 0, from the cache when it
 * covers k (a float holds integers exactly below 2^24) */
static float log_gamma_count(nb_deviates *d, float k)
{
    if (d->lgamma_grow && k >= (float)d->lgamma_n && k < LGAMMA_GROW_MAX) cache_grow(d, k);
    if (k < (float)d->lgamma_n) {
        size_t i = (size_t)k;
        float v = d->lgamma_int[i];
        if (v != v) d->lgamma_int[i] = v = log_gamma(k + 1.0);
        return v;
    }
    return log_gamma(k + 1.0);
}

/* the constants of the rejection method for this mean */
static void rejection_constants(float mean, float *sq, float *alxm, float *g)
{
    *sq = sqrt(2.0 * mean);
    *alxm = log(mean);
    *g = mean * *alxm - log_gamma(mean + 1.0);
}

/* larger means: rejection from a Lorentzian envelope centred on the mean,
 * width sqrt(2 mean), scaled by 0.9 so that it always lies above */
static float poisson_rejection_with(nb_deviates *d, float mean, float sq, float alxm, float g)
{
    float k, accept, lor;
    do {
        do {
            lor = tan(M_PI * uniform(d));
            k = sq * lor + mean;
        } while (k < 0.0);
        k = floor(k);
        /* ratio of the Poisson probability at k to the envelope */
        accept = 0.9 * (1.0 + lor * lor)
                 * exp(k * alxm - log_gamma_count(d, k) - g);
    } while (uniform(d) > accept);
    return k;
}

static float poisson_rejection(nb_deviates *d, float mean)
{
    if (mean != d->pois_oldm) {
        d->pois_oldm = mean;
        rejection_constants(mean, &d->pois_sq, &d->pois_alxm, &d->pois_g);
    }
    return poisson_rejection_with(d, mean, d->pois_sq, d->pois_alxm, d->pois_g);
}

void nb_poisson_prepare(float mean, nb_poisson_pre *pre)
{
    pre->sq = pre->alxm = pre->g = 0.0f;
    if (mean > POISSON_GAUSS_LIMIT) return;
    if (mean < POISSON_DIRECT_LIMIT) { pre->g = exp(-mean); return; }
    rejection_constants(mean, &pre->sq, &pre->alxm, &pre->g);
}

float nb_poidev_prepared(nb_deviates *d, float mean, const nb_poisson_pre *pre)
{
    if (mean > POISSON_GAUSS_LIMIT) return mean + sqrt(mean) * nb_gaussdev(d);
    /* leave the cache as nb_poidev would have left it */
    d->pois_oldm = mean;
    d->pois_g = pre->g;
    if (mean < POISSON_DIRECT_LIMIT) {
        float count = -1, product = 1.0;
        do {
            ++count;
            product *= uniform(d);
        } while (product > pre->g);
        return count;
    }
    d->pois_sq = pre->sq;
    d->pois_alxm = pre->alxm;
    return poisson_rejection_with(d, mean, pre->sq, pre->alxm, pre->g);
}

float nb_poidev(nb_deviates *d, float mean)
{
    if (mean > POISSON_GAUSS_LIMIT) return mean + sqrt(mean) * nb_gaussdev(d);
    if (mean < POISSON_DIRECT_LIMIT) return poisson_direct(d, mean);
    return poisson_rejection(d, mean);
}

/* (unsigned short) of a double as x86-64 does it: truncate to a 32-bit int
 * (NaN and out-of-range give INT_MIN), keep the low 16 bits.  Written out
 * so that the conversion is defined C. */
static uint16_t to_u16_like_x86(double v)
{
    if (!(v > -2147483649.0 && v < 2147483648.0)) return 0;
    return (uint16_t)(long)v;
}

/* cache ln Gamma for integer candidates up to a bit past the largest mean */
void nb_deviates_cache_for(nb_deviates *dev, double max_mean)
{
    if (max_mean >= POISSON_DIRECT_LIMIT && max_mean <= POISSON_GAUSS_LIMIT)
        nb_deviates_cache(dev, (size_t)(1.25 * max_mean) + 64);
}

/* The noise image is one stream of deviates in raster order; the stream
 * can follow a render, drawing each row once every row before it is final. */
struct nb_noise_stream {
    const nb_setup *s;
    uint16_t *out;
    nb_rng rng;
    long idum;
    nb_deviates dev;
    nb_poisson_pre *pre;          /* a band of rows: what each deviate needs from its mean alone */
    int band_rows, next_row;
    double photons;
    long overloads;
};

nb_noise_stream *nb_noise_stream_new(const nb_setup *s, long seed, uint16_t *out)
{
    nb_noise_stream *ns = calloc(1, sizeof *ns);
    if (!ns) return NULL;
    ns->s = s;
    ns->out = out;
    ns->rng = s->rng;             /* table as left by the misset/mosaic draws */
    ns->idum = seed;
    nb_deviates_init(&ns->dev, &ns->rng, &ns->idum);
    ns->dev.lgamma_grow = 1;
    /* bands of whole rows, about 64k pixels each (a few hundred kB, not a
     * second image); without the buffer each deviate computes its own */
    ns->band_rows = s->fpixels >= 65536 ? 1 : 65536 / s->fpixels;
    size_t band = (size_t)ns->band_rows * (size_t)s->fpixels;
    size_t pixels = (size_t)s->fpixels * (size_t)s->spixels;
    ns->pre = malloc((pixels < band ? pixels : band) * sizeof *ns->pre);
    return ns;
}

void nb_noise_stream_draw(nb_noise_stream *ns, const float *image, int rows_end)
{
    const nb_setup *s = ns->s;
    if (rows_end > s->spixels) rows_end = s->spixels;
    while (ns->next_row < rows_end) {
        int slow0 = ns->next_row;
        int slow1 = slow0 + ns->band_rows < rows_end ? slow0 + ns->band_rows : rows_end;
        size_t start = (size_t)slow0 * (size_t)s->fpixels, end = (size_t)slow1 * (size_t)s->fpixels;
        nb_poisson_pre *pre = ns->pre;
        if (pre) {
            /* in parallel when called alone; inside a render's team, on this thread */
#pragma omp parallel for schedule(static) if (end - start > 16384 && !omp_in_parallel())
            for (long i = (long)start; i < (long)end; i++) nb_poisson_prepare(image[i], &pre[i - start]);
        }
        size_t idx = start;
        for (int slow = slow0; slow < slow1; slow++) {
            for (int fast = 0; fast < s->fpixels; fast++, idx++) {
                if (!nb_in_roi(s, fast, slow)) { ns->out[idx] = 0; continue; }
                double counts = pre ? nb_poidev_prepared(&ns->dev, image[idx], &pre[idx - start])
                                    : nb_poidev(&ns->dev, image[idx]);
                ns->photons += counts;
                counts += s->adc_offset;
                if (counts > 65535.0) { counts = 65535.0; ++ns->overloads; }
                ns->out[idx] = to_u16_like_x86(counts);
            }
        }
        ns->next_row = slow1;
    }
}

void nb_noise_stream_follow(nb_noise_stream *ns, const float *image, const unsigned char *row_done, int rows_end)
{
    int end = ns->next_row;
    while (end < rows_end && __atomic_load_n(&row_done[end], __ATOMIC_ACQUIRE)) ++end;
    nb_noise_stream_draw(ns, image, end);
}

void nb_noise_stream_finish(nb_noise_stream *ns, double *photons, long *overloads)
{
    if (!ns) return;
    if (photons) *photons = ns->photons;
    if (overloads) *overloads = ns->overloads;
    free(ns->pre);
    nb_deviates_free(&ns->dev);
    free(ns);
}

int nb_noise_image(const nb_setup *s, const float *image, long seed, uint16_t *out, double *photons,
                   long *overloads)
{
    nb_noise_stream *ns = nb_noise_stream_new(s, seed, out);
    if (!ns) return NB_ENOMEM;
    nb_noise_stream_draw(ns, image, s->spixels);
    nb_noise_stream_finish(ns, photons, overloads);
    return NB_OK;
}

