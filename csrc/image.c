/*
 * image.c - scale the float image into the 16-bit SMV and 8-bit PGM images.
 *
 * Both follow the reference exactly: the product of the float pixel with
 * the double scale is rounded the same way, and only pixels inside the
 * region of interest receive a value (the rest are 0).
 */
#include "internal.h"

/* full scale of the auto-scaled integer image: leaves headroom below 65535 */
#define INT_AUTO_FULL_SCALE 55000.0
/* the PGM maps 5 rms deviations onto 250 grey levels */
#define PGM_LEVELS 250.0
#define PGM_SIGMAS 5.0
/* below this many pixels a second thread costs more than it saves */
#define PARALLEL_PIXELS 262144L

/* (unsigned short)/(unsigned char) of a floating value as x86-64 does it:
 * truncate to a 32-bit int (NaN and out-of-range give INT_MIN) and keep the
 * low bits.  Spelled out so that the conversion is defined C. */
static long trunc_like_x86(double v)
{
    if (!(v > -2147483649.0 && v < 2147483648.0)) return (long)(-2147483647L - 1L);
    return (long)v;
}

double nb_int_image(const nb_setup *s, const float *image, double max_I, uint16_t *out)
{
    double scale = s->intfile_scale;
    if (scale <= 0.0) {
        scale = 1.0;
        if (max_I > 0.0) scale = INT_AUTO_FULL_SCALE / max_I;
    }
    /* every pixel on its own: rows in parallel on a big image */
#pragma omp parallel for schedule(static) if ((long)s->spixels * s->fpixels > PARALLEL_PIXELS)
    for (int slow = 0; slow < s->spixels; slow++) {
        const size_t row = (size_t)slow * (size_t)s->fpixels;
        int lo, hi;
        nb_roi_columns(s, slow, &lo, &hi);
        for (int fast = 0; fast < s->fpixels; fast++) out[row + fast] = 0;
        for (int fast = lo; fast <= hi; fast++) {
            double adu = image[row + fast] * scale + s->adc_offset;
            if (adu > 65535.0) adu = 65535.0;
            if (adu < 0.0) adu = 0.0;
            /* round half up in single precision, as the reference's floorf:
             * adu + 0.5 is NaN or in [0.5, 65535.5], where truncation is
             * floor; NaN truncates to INT_MIN on x86, whose low bits are 0 */
            float up = (float)(adu + 0.5);
            out[row + fast] = (uint16_t)(int32_t)(up == up ? up : 0.0f);
        }
    }
    return scale;
}

double nb_pgm_image(const nb_setup *s, const float *image, double intfile_scale, double rmsd,
                    unsigned char *out)
{
    double scale = s->pgm_scale;
    if (scale <= 0.0) {
        scale = intfile_scale;
        if (rmsd > 0.0) scale = PGM_LEVELS / (PGM_SIGMAS * rmsd);
    }
#pragma omp parallel for schedule(static) if ((long)s->spixels * s->fpixels > PARALLEL_PIXELS)
    for (int slow = 0; slow < s->spixels; slow++) {
        size_t idx = (size_t)slow * (size_t)s->fpixels;
        for (int fast = 0; fast < s->fpixels; fast++, idx++) {
            if (!nb_in_roi(s, fast, slow)) { out[idx] = 0; continue; }
            double grey = image[idx] * scale;
            if (grey > 255.0) grey = 255.0;
            /* no lower clip in the reference: negatives wrap as on x86 */
            out[idx] = (unsigned char)trunc_like_x86(grey);
        }
    }
    return scale;
}
