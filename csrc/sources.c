/* sources.c - the incident beam as a list of point sources.
 *
 * Beam divergence is sampled on a grid of angles about the polarization
 * axis (vertical) and its normal (horizontal), optionally trimmed to an
 * ellipse; spectral dispersion adds wavelengths around lambda0.  A source
 * file replaces the grid.  Each source is stored as a unit vector from the
 * sample toward the source, and a wavelength.
 */
#include <stdlib.h>
#include "internal.h"
#include "stages.h"

/* sources sit 10 m upstream: only their direction matters in the far field */
static const double SOURCE_DISTANCE_M = 10.0;

static int alloc_sources(nb_setup *s, int n, char *err, size_t errlen)
{
    s->source_dir = calloc((size_t)n + 1, 3 * sizeof(double));
    s->source_weight = calloc((size_t)n + 1, sizeof(double));
    s->source_lambda_m = calloc((size_t)n + 1, sizeof(double));
    if (!s->source_dir || !s->source_weight || !s->source_lambda_m) {
        nb_set_error(err, errlen, "out of memory for %d sources", n);
        return NB_ENOMEM;
    }
    return NB_OK;
}

/* Outside the ellipse inscribed in the divergence grid?  For an even count
 * the grid straddles zero, so half a step is allowed for. */
static int outside_ellipse(const nb_setup *s, double hdiv, double vdiv)
{
    double h = (hdiv * hdiv - s->hdivstep_rad * s->hdivstep_rad / 4.0 * (1 - s->hdivsteps % 2)) / s->hdivrange_rad / s->hdivrange_rad;
    double v = (vdiv * vdiv - s->vdivstep_rad * s->vdivstep_rad / 4.0 * (1 - s->vdivsteps % 2)) / s->vdivrange_rad / s->vdivrange_rad;
    return (h + v) * 4.0 > 1.1;
}

static int divergence_grid(const nb_params *p, nb_setup *s, char *err, size_t errlen)
{
    int round_div = p->round_div;
    s->divsteps = 0;
    for (int ih = 0; ih < s->hdivsteps; ++ih)
        for (int iv = 0; iv < s->vdivsteps; ++iv) {
            double hdiv = s->hdivstep_rad * ih - s->hdivrange_rad / 2.0;
            double vdiv = s->vdivstep_rad * iv - s->vdivrange_rad / 2.0;
            if (round_div && outside_ellipse(s, hdiv, vdiv)) continue;
            ++s->divsteps;
            nb_log(s, "divergence deviation: %g %g\n", hdiv, vdiv);
        }
    for (int id = 0; id < s->dispsteps; ++id)
        nb_log(s, "lambda%d = %.15g\n", id, s->lambda0_m * (1.0 + s->dispstep * id - s->dispersion / 2.0));

    long n = (long)s->divsteps * s->dispsteps;
    if (n > 100000000L) {
        nb_set_error(err, errlen, "%ld sources is too many", n);
        return NB_EINVAL;
    }
    int rc = alloc_sources(s, (int)n, err, errlen);
    if (rc) return rc;
    double weight = n > 0 ? 1.0 / (double)n : 0.0;
    int k = 0;
    for (int ih = 0; ih < s->hdivsteps; ++ih)
        for (int iv = 0; iv < s->vdivsteps; ++iv) {
            double hdiv = s->hdivstep_rad * ih - s->hdivrange_rad / 2.0;
            double vdiv = s->vdivstep_rad * iv - s->vdivrange_rad / 2.0;
            if (round_div && outside_ellipse(s, hdiv, vdiv)) continue;
            double upstream[3], tilted[3];
            nb_scale(s->beam, -SOURCE_DISTANCE_M, upstream);
            nb_rotate_axis(upstream, tilted, s->polar_vec, vdiv);
            nb_rotate_axis(tilted, upstream, s->vert_vec, hdiv);
            for (int id = 0; id < s->dispsteps; ++id, ++k) {
                for (int i = 0; i < 3; ++i) s->source_dir[3 * k + i] = upstream[i];
                s->source_weight[k] = weight;
                s->source_lambda_m[k] = s->lambda0_m * (1.0 + s->dispstep * id - s->dispersion / 2.0);
            }
        }
    s->n_sources = k;
    return NB_OK;
}

static int sources_from_list(const nb_params *p, nb_setup *s, char *err, size_t errlen)
{
    int rc = alloc_sources(s, p->n_sources, err, errlen);
    if (rc) return rc;
    for (int k = 0; k < p->n_sources; ++k) {
        const double *row = p->sources + 5 * k;
        for (int i = 0; i < 3; ++i)
            s->source_dir[3 * k + i] = isnan(row[i]) ? -SOURCE_DISTANCE_M * s->beam[i] : row[i];
        s->source_weight[k] = isnan(row[3]) ? 1.0 : row[3];
        s->source_lambda_m[k] = isnan(row[4]) ? s->lambda0_m : row[4];
        if (!(s->source_lambda_m[k] > 0.0) || !isfinite(s->source_lambda_m[k])) {
            nb_set_error(err, errlen, "source %d has a non-positive wavelength (%g m)", k + 1, s->source_lambda_m[k]);
            return NB_EINVAL;
        }
    }
    s->n_sources = p->n_sources;
    s->divsteps = -1;             /* no divergence grid (the reference reports -1 too) */
    return NB_OK;
}

int nb_sources_setup(const nb_params *p, nb_setup *s, char *err, size_t errlen)
{
    int rc = p->n_sources > 0 ? sources_from_list(p, s, err, errlen) : divergence_grid(p, s, err, errlen);
    if (rc) return rc;
    if (s->n_sources == 0) {
        nb_set_error(err, errlen, "no sources: the divergence grid is empty");
        return NB_EINVAL;
    }
    nb_log(s, "  created a total of %d sources:\n", s->n_sources);
    for (int k = 0; k < s->n_sources; ++k) {
        double *d = s->source_dir + 3 * k;
        nb_log(s, "%g %g %g   %g %g\n", d[0], d[1], d[2], s->source_weight[k], s->source_lambda_m[k]);
        if (nb_unitize(d, d) == 0.0) {
            nb_set_error(err, errlen, "source %d is at the sample (zero direction)", k + 1);
            return NB_EINVAL;
        }
    }
    return NB_OK;
}
