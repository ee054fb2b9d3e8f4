/*
 * float_stats.c - add two float images and describe the result (float_add).
 *
 * r = outscale (s1 (a - off) + s2 (b - off)), or the relative difference
 * with `normalize`; the output is (float)(r + outoffset).  The statistics
 * (least-squares fits of b on a and a on b, mean, rms, moments, CC, a
 * histogram, and outlier rejection by median/MAD then mean/rmsd) are the
 * reference's, summed in the same order and precision: the rejection works
 * in float on a 1-based array with the reference's extra element, and the
 * printed skewness changes in the 4th digit if summed otherwise.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define HIST_MAX_BINS 100000

/* Numerical Recipes' quickselect of element (n+1)/2 of arr[1..n]; it
 * scrambles arr */
static float select_median(unsigned int n, float *arr)
{
    unsigned int l = 1, ir = n, k = (n + 1) / 2;
    float a, t;
#define SWAPF(x, y) do { t = (x); (x) = (y); (y) = t; } while (0)
    for (;;) {
        if (ir <= l + 1) {
            if (ir == l + 1 && arr[ir] < arr[l]) SWAPF(arr[l], arr[ir]);
            return arr[k];
        }
        unsigned int mid = (l + ir) >> 1;
        SWAPF(arr[mid], arr[l + 1]);
        if (arr[l + 1] > arr[ir]) SWAPF(arr[l + 1], arr[ir]);
        if (arr[l] > arr[ir]) SWAPF(arr[l], arr[ir]);
        if (arr[l + 1] > arr[l]) SWAPF(arr[l + 1], arr[l]);
        unsigned int i = l + 1, j = ir;
        a = arr[l];
        for (;;) {
            do i++; while (arr[i] < a);
            do j--; while (arr[j] > a);
            if (j < i) break;
            SWAPF(arr[i], arr[j]);
        }
        arr[l] = arr[j];
        arr[j] = a;
        if (j >= k) ir = j - 1;
        if (j <= k) l = i;
    }
#undef SWAPF
}

/* median of |arr[1..n] - m|, built in arr[n+1..2n] */
static float median_abs_dev(unsigned int n, float *arr, float m)
{
    for (unsigned int i = 1; i <= n; i++) arr[i + n] = (float)fabs(arr[i] - m);
    return select_median(n, arr + n);
}

/* passes of median/MAD rejection: a value further than cut MADs from the
 * median is replaced by the last one (which this pass does not re-check) */
static float median_reject(unsigned int n, float *arr, float cut, float *mad_out, unsigned int *n_out)
{
    float med = 0.0f, mad = 0.0f;
    int done = 0;
    while (!done) {
        med = select_median(n, arr);
        mad = median_abs_dev(n, arr, med);
        done = 1;
        for (unsigned int i = 1; i <= n; ++i) {
            float dev = (float)fabs(arr[i] - med);
            if (dev > cut * mad) {
                if (i != n) arr[i] = arr[n];
                --n;
                done = 0;
            }
        }
    }
    *mad_out = mad;
    *n_out = n;
    return med;
}

/* mean/rmsd rejection on arr[0..points-1], in float: the worst point
 * beyond cut rmsd goes to arr[points], one at a time */
static float mean_reject(unsigned int start, float *arr, float cut, double *rmsd_out, unsigned int *n_out)
{
    unsigned int points = start;
    int rejection = 1;
    float avg = 0.0f, rmsd = 0.0f;
    while (rejection && points > start / 2.0) {
        float sum = 0.0f, sumd = 0.0f;
        for (unsigned int i = 0; i < points; ++i) sum += arr[i];
        avg = sum / points;
        long worst = -1;
        float worst_dev = -1.0f;
        for (unsigned int i = 0; i < points; ++i) {
            float dev = (float)fabs(arr[i] - avg);
            if (dev > worst_dev) { worst = i; worst_dev = dev; }
            sumd += dev * dev;
        }
        rmsd = sqrtf(sumd / points);
        rejection = 0;
        if (worst_dev > cut * rmsd) {
            rejection = 1;
            float t = arr[worst]; arr[worst] = arr[points]; arr[points] = t;
            --points;
        }
    }
    *rmsd_out = rmsd;
    *n_out = points;
    return avg;
}

int nb_float_add(const nb_float_add_params *p, const float *a, const float *b, float *out, nb_float_add_stats *st,
                 char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    size_t np = p->pixels, h = p->header_floats;
    float *med = calloc(2 * np + 4, sizeof *med);
    unsigned char *invalid = calloc(np + 1, 1);
    if (med == NULL || invalid == NULL) {
        free(med); free(invalid);
        nb_set_error(err, errlen, "float_add: out of memory for %zu pixels", np);
        return NB_ENOMEM;
    }
    double sum = 0, sumsq = 0, max = NAN, min = NAN;
    double sx = 0, sy = 0, sxy = 0, sxx = 0, syy = 0;
    long valid = 0;
    for (size_t j = 0; j < np; j++) {
        size_t i = j + h;
        double f1 = a[i], f2 = b ? b[i] : 0.0;
        double r;
        if (p->normalize) {
            double avg = (p->scale1 * (f1 - p->offset) + p->scale2 * (f2 - p->offset)) / 2.0;
            double diff = p->scale1 * (f1 - p->offset) - p->scale2 * (f2 - p->offset);
            r = p->outscale * (diff / avg);
        } else {
            r = p->outscale * (p->scale1 * (f1 - p->offset) + p->scale2 * (f2 - p->offset));
        }
        float o = (float)(r + p->outoffset);
        if (isnan(o)) invalid[j] = 1;
        if (!isnormal(o)) {
            if (isinf(o)) ++st->overflows;
            if (!isfinite(o)) ++st->underflows;
        }
        out[i] = o;
        for (int k = 0; k < p->n_ignore; k++) {
            if (a[i] == p->ignore[k] || (b && b[i] == p->ignore[k])) {
                out[i] = p->ignore[k];
                invalid[j] = 1;
                break;
            }
        }
        if (invalid[j]) continue;
        ++valid;
        med[valid] = (float)r;
        sum += r;
        sumsq += r * r;
        if (r > max || isnan(max)) max = r;
        if (r < min || isnan(min)) min = r;
        sx += f1; sy += f2; sxy += f1 * f2; sxx += f1 * f1; syy += f2 * f2;
    }
    st->valid = valid;
    double n = (double)valid;
    st->mean = sum / n;
    st->rms = sqrt(sumsq / n);
    double den = sxx * n - sx * sx;
    if (den != 0 && valid >= 2) {
        st->xy_scale = (sxy * n - sx * sy) / den;
        st->xy_offset = (sxx * sy - sx * sxy) / den;
    }
    den = syy * n - sy * sy;
    if (den != 0 && valid >= 2) {
        st->yx_scale = (sxy * n - sx * sy) / den;
        st->yx_offset = (syy * sx - sy * sxy) / den;
    }
    double sd2 = 0, sd3 = 0, sd4 = 0;
    for (size_t j = 0; j < np; j++) {
        if (invalid[j]) continue;
        double d = (float)(out[j + h] - p->outoffset) - st->mean;
        sd2 += d * d;
        sd3 += d * d * d;
        sd4 += d * d * d * d;
    }
    st->rmsd = sqrt(sd2 / n);
    st->skewness = sd3 / n / (st->rmsd * st->rmsd * st->rmsd);
    st->kurtosis = sd4 / n / (st->rmsd * st->rmsd * st->rmsd * st->rmsd);
    st->max = max;
    st->min = min;

    /* the reference keeps the bin count in an int: a NaN, infinite or
     * larger count becomes INT_MIN there, its allocation fails and no
     * histogram is printed (hist stays NULL) */
    double hist_count = 0.0;
    if (p->histogram) {
        float size = p->binsize;
        if (size <= 0) size = (float)(st->rmsd / 3.0);
        if (size <= 0) size = 1.0f;
        st->hist_binsize = size;
        hist_count = ceil((max - min + 2) / size);
    }
    if (p->histogram && hist_count >= 0 && hist_count < 2147483648.0) {
        float size = st->hist_binsize;
        long bins = hist_count > HIST_MAX_BINS ? HIST_MAX_BINS : (long)hist_count;
        st->hist = calloc((size_t)bins + 1, sizeof *st->hist);
        if (st->hist == NULL) {
            free(med); free(invalid);
            nb_set_error(err, errlen, "float_add: out of memory for %ld histogram bins", bins);
            return NB_ENOMEM;
        }
        st->hist_bins = bins;
        for (long i = 1; i <= valid; ++i) {
            double bin = ceil((med[i] - min) / size) - 0.5;
            long k = (long)bin;
            if (k < 0) k = 0;
            if (k > bins) { ++st->hist_dropped; continue; }   /* past the reference's 100000 bins */
            ++st->hist[k];
        }
    }
    if (p->reject) {
        unsigned int nmed = 0, nmean = 0;
        /* the reference's n+1: the 0 after the last valid value takes part */
        st->median = median_reject((unsigned int)valid + 1, med, 6.0f, &st->mad, &nmed);
        for (unsigned int j = 1; j <= nmed; ++j) {
            float v = med[j] - p->outoffset;
            if (j == 1) st->median_max = st->median_min = v;
            if (v > st->median_max) st->median_max = v;
            if (v < st->median_min) st->median_min = v;
        }
        st->n_median = nmed;
        double rmsd_rej;
        double avg = mean_reject(nmed, med, 6.0f, &rmsd_rej, &nmean);
        double s2 = 0, d1 = 0, d2 = 0, d3 = 0, d4 = 0;
        for (unsigned int j = 1; j <= nmean; ++j) {
            float v = med[j] - p->outoffset;
            if (j == 1) st->rej_max = st->rej_min = v;
            if (v > st->rej_max) st->rej_max = v;
            if (v < st->rej_min) st->rej_min = v;
            s2 += v * v;
            double d = v - avg;
            d1 += d; d2 += d * d; d3 += d * d * d; d4 += d * d * d * d;
        }
        st->n_mean = nmean;
        st->rej_mean = avg;
        st->rej_rms = sqrt(s2 / nmean);
        st->rej_rmsd = sqrt(d2 / nmean);
        st->rej_skewness = d3 / nmean / (st->rej_rmsd * st->rej_rmsd * st->rej_rmsd);
        st->rej_kurtosis = d4 / nmean / (st->rej_rmsd * st->rej_rmsd * st->rej_rmsd * st->rej_rmsd);
    }

    double ax = sx / n, ay = sy / n, axy = sxy / n, axx = sxx / n, ayy = syy / n;
    if (ayy < ay * ay) ayy = ay * ay;
    st->CC = axx < ax * ax ? 0.0 : (axy - ax * ay) / (sqrt(axx - ax * ax) * sqrt(ayy - ay * ay));
    free(med);
    free(invalid);
    return NB_OK;
}

void nb_float_add_stats_free(nb_float_add_stats *st)
{
    free(st->hist);
    st->hist = NULL;
}
