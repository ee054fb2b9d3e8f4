/*
 * noise.c - Poisson and Gaussian deviates and the noisy detector image.
 *
 * The deviates follow Numerical Recipes (poidev, gasdev, gammln) in single
 * precision, as the reference does; the float/double mix of every
 * expression is kept on purpose so that the same seed gives the same
 * photon counts bit for bit.  State the reference keeps in function-local
 * statics lives in nb_deviates instead.
 */
#include "internal.h"

/* above this mean the rejection method gets slow: use the normal limit */
#define POISSON_GAUSS_LIMIT 1.0e6
/* below this mean count exponential waiting times directly */
#define POISSON_DIRECT_LIMIT 12.0

void nb_deviates_init(nb_deviates *d, nb_rng *rng, long *idum)
{
    d->rng = rng;
    d->idum = idum;
    d->gauss_has_spare = 0;
    d->gauss_spare = 0.0f;
    d->pois_oldm = -1.0f;            /* no mean cached yet */
    d->pois_sq = d->pois_alxm = d->pois_g = 0.0f;
}

static float uniform(nb_deviates *d) { return nb_ran1(d->rng, d->idum); }

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

/* larger means: rejection from a Lorentzian envelope centred on the mean,
 * width sqrt(2 mean), scaled by 0.9 so that it always lies above */
static float poisson_rejection(nb_deviates *d, float mean)
{
    if (mean != d->pois_oldm) {
        d->pois_oldm = mean;
        d->pois_sq = sqrt(2.0 * mean);
        d->pois_alxm = log(mean);
        d->pois_g = mean * d->pois_alxm - log_gamma(mean + 1.0);
    }
    float k, accept, lor;
    do {
        do {
            lor = tan(M_PI * uniform(d));
            k = d->pois_sq * lor + mean;
        } while (k < 0.0);
        k = floor(k);
        /* ratio of the Poisson probability at k to the envelope */
        accept = 0.9 * (1.0 + lor * lor)
                 * exp(k * d->pois_alxm - log_gamma(k + 1.0) - d->pois_g);
    } while (uniform(d) > accept);
    return k;
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

void nb_noise_image(const nb_setup *s, const float *image, long seed, uint16_t *out,
                    double *photons, long *overloads)
{
    nb_rng rng = s->rng;             /* table as left by the misset/mosaic draws */
    long idum = seed;
    nb_deviates dev;
    nb_deviates_init(&dev, &rng, &idum);

    double total = 0.0;
    long clipped = 0;
    size_t idx = 0;
    for (int slow = 0; slow < s->spixels; slow++) {
        for (int fast = 0; fast < s->fpixels; fast++, idx++) {
            if (!nb_in_roi(s, fast, slow)) { out[idx] = 0; continue; }
            double counts = nb_poidev(&dev, image[idx]);
            total += counts;
            counts += s->adc_offset;
            if (counts > 65535.0) { counts = 65535.0; ++clipped; }
            out[idx] = to_u16_like_x86(counts);
        }
    }
    if (photons) *photons = total;
    if (overloads) *overloads = clipped;
}
