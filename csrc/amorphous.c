/*
 * amorphous.c - scattering of amorphous material (water, air, ice) onto a
 * flat or curved detector (nonBragg).
 *
 * Each molecule scatters r_e^2 |F(s)|^2 per steradian, F a tabulated
 * function of s = sin(theta)/lambda = |d - i| / (2 lambda) for unit incident
 * and diffracted directions i, d.  A pixel collects that times its solid
 * angle, the Kahn polarization factor, the incident fluence and the number
 * of molecules in the illuminated volume, averaged over sub-pixels and
 * sources.  A negative F (a table that rings) gives a negative intensity,
 * as the reference.  Pixels are independent: the render is parallel over
 * rows and its result does not depend on the thread count.
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "stages.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define AVOGADRO 6.02214179e23
/* guard abscissae padding the table, two at each end */
#define GUARD_FAR 1e99
#define GUARD_NEAR 1e98

void nb_amorphous_params_init(nb_amorphous_params *p)
{
    memset(p, 0, sizeof *p);
    p->pixel_m = 0.1e-3;
    p->detsize_f_m = p->detsize_s_m = 102.4e-3;
    p->distance_m = 100.0e-3;
    p->close_distance_m = p->Xbeam_m = p->Ybeam_m = p->Xclose_m = p->Yclose_m = NAN;
    p->pivot = NB_PIVOT_BEAM;
    double f[3] = { 0, 0, 1 }, s[3] = { 0, -1, 0 }, b[3] = { 1, 0, 0 }, pol[3] = { 0, 0, 1 }, tt[3] = { 0, 1, 0 };
    memcpy(p->fdet, f, sizeof f); memcpy(p->sdet, s, sizeof s); memcpy(p->beam, b, sizeof b);
    memcpy(p->polar_vec, pol, sizeof pol); memcpy(p->twotheta_axis, tt, sizeof tt);
    p->oversample = -1;
    p->roi[0] = p->roi[1] = p->roi[2] = p->roi[3] = -1;
    p->lambda0_m = 1.0e-10;
    p->dispsteps = p->hdivsteps = p->vdivsteps = -1;
    p->hdivrange_rad = p->vdivrange_rad = p->hdivstep_rad = p->vdivstep_rad = -1.0;
    p->round_div = 1;
    p->source_distance_m = 10.0;
    p->fluence = 125932015286227086360700780544.0;
    p->exposure_s = 1.0;
    p->beamsize_m = 1e-4;
    p->sample_m[0] = p->sample_m[1] = p->sample_m[2] = 1e-4;
    p->density_g_m3 = 1.0e6;
    p->molecular_weight = 18.0;
    p->table_x_to_stol = 1e10;
    p->adc_offset = 40.0;
}

/* detector placement: the pivot keeps the beam spot (BEAM) or the point of
 * closest approach (SAMPLE) where the user put it; every centre is then
 * re-derived from the placed origin */
static void place_detector(const nb_amorphous_params *p, nb_setup *d)
{
    double f[3], s[3], o[3], v[3], pix0[3];
    nb_unitize(p->fdet, f);
    nb_unitize(p->sdet, s);
    nb_cross(f, s, o);                 /* the normal is always fast x slow */
    nb_unitize(o, o);
    nb_unitize(p->beam, d->beam);
    nb_unitize(p->polar_vec, d->polar_vec);
    nb_cross(d->beam, d->polar_vec, d->vert_vec);
    nb_unitize(d->vert_vec, d->vert_vec);
    for (int i = 0; i < 3; i++) d->twotheta_axis[i] = p->twotheta_axis[i];

    double px = p->pixel_m;
    double Xclose = p->Xclose_m, Yclose = p->Yclose_m;
    if (isnan(Xclose)) Xclose = (d->detsize_f_m - px) / 2.0;
    if (isnan(Yclose)) Yclose = (d->detsize_s_m + px) / 2.0;
    double Xbeam = isnan(p->Xbeam_m) ? Xclose : p->Xbeam_m;
    double Ybeam = isnan(p->Ybeam_m) ? Yclose : p->Ybeam_m;

    const double rx = p->rot_rad[0], ry = p->rot_rad[1], rz = p->rot_rad[2];
    nb_rotate_xyz(o, v, rx, ry, rz);
    double ratio = nb_dot(d->beam, v);
    if (ratio == 0.0) ratio = DBL_MIN;
    double close = isnan(p->close_distance_m) ? ratio * p->distance_m : p->close_distance_m;
    double distance = close / ratio;

    if (p->pivot == NB_PIVOT_SAMPLE) {
        for (int i = 0; i < 3; i++) pix0[i] = -Xclose * f[i] - Yclose * s[i] + close * o[i];
        nb_rotate_xyz(pix0, pix0, rx, ry, rz);
        nb_rotate_axis(pix0, pix0, d->twotheta_axis, p->twotheta_rad);
    }
    double *axes[3] = { f, s, o };
    for (int k = 0; k < 3; k++) {
        nb_rotate_xyz(axes[k], axes[k], rx, ry, rz);
        nb_rotate_axis(axes[k], axes[k], d->twotheta_axis, p->twotheta_rad);
    }
    if (p->pivot == NB_PIVOT_BEAM)
        for (int i = 0; i < 3; i++) pix0[i] = -Xbeam * f[i] - Ybeam * s[i] + distance * d->beam[i];

    memcpy(d->fdet, f, sizeof f); memcpy(d->sdet, s, sizeof s); memcpy(d->odet, o, sizeof o);
    memcpy(d->pix0_m, pix0, sizeof pix0);
    d->Xclose_m = -nb_dot(pix0, f);
    d->Yclose_m = -nb_dot(pix0, s);
    d->close_distance_m = nb_dot(pix0, o);
    double hit[3];
    for (int i = 0; i < 3; i++) hit[i] = d->close_distance_m / ratio * d->beam[i] - pix0[i];
    d->Xbeam_m = nb_dot(f, hit);
    d->Ybeam_m = nb_dot(s, hit);
    d->distance_m = d->close_distance_m / ratio;
    d->ORGX_px = d->Xclose_m / px;
    d->ORGY_px = d->Yclose_m / px;
    d->twotheta_rad = p->twotheta_rad;
}

/* incident directions and wavelengths, by nanoBragg's rules (sources.c) */
static int make_sources(const nb_amorphous_params *p, nb_setup *d, double **weight, char *err, size_t errlen)
{
    nb_sweep hdiv = { p->hdivrange_rad, p->hdivstep_rad, p->hdivsteps };
    nb_sweep vdiv = { p->vdivrange_rad, p->vdivstep_rad, p->vdivsteps };
    nb_sweep disp = { p->dispersion, -1.0, p->dispsteps };
    nb_resolve_sweep(&hdiv, NB_SWEEP_DIV);
    nb_resolve_sweep(&vdiv, NB_SWEEP_DIV);
    nb_resolve_sweep(&disp, NB_SWEEP_DISP);
    if (hdiv.count * vdiv.count * disp.count > NB_MAX_SOURCES) {
        nb_set_error(err, errlen, "%.0f x %.0f divergence x %.0f dispersion steps make %.3g sources: too many "
                     "(at most %.0f)", hdiv.count, vdiv.count, disp.count, hdiv.count * vdiv.count * disp.count,
                     NB_MAX_SOURCES);
        return NB_EINVAL;
    }
    d->hdivrange_rad = hdiv.range; d->hdivstep_rad = hdiv.step; d->hdivsteps = (int)hdiv.count;
    d->vdivrange_rad = vdiv.range; d->vdivstep_rad = vdiv.step; d->vdivsteps = (int)vdiv.count;
    d->dispersion = disp.range; d->dispstep = disp.step; d->dispsteps = (int)disp.count;
    d->lambda0_m = p->lambda0_m;

    nb_params q;
    nb_params_init(&q);
    q.round_div = p->round_div;
    double *rows = NULL;
    if (p->n_sources > 0) {
        /* missing positions sit source_distance upstream */
        rows = malloc(sizeof(double) * 5 * (size_t)p->n_sources);
        if (rows == NULL) { nb_set_error(err, errlen, "out of memory for %d sources", p->n_sources); return NB_ENOMEM; }
        for (int k = 0; k < p->n_sources; k++)
            for (int c = 0; c < 5; c++) {
                double v = p->sources[5 * k + c];
                if (c < 3 && isnan(v)) v = -p->source_distance_m * d->beam[c];
                rows[5 * k + c] = v;
            }
        q.sources = rows;
        q.n_sources = p->n_sources;
    }
    int rc = nb_sources_setup(&q, d, err, errlen);
    free(rows);
    if (rc != NB_OK) return rc;
    /* the grid's sources weigh 1 each here (nanoBragg spreads 1 over them) */
    *weight = malloc(sizeof(double) * (size_t)d->n_sources);
    if (*weight == NULL) { nb_set_error(err, errlen, "out of memory for %d sources", d->n_sources); return NB_ENOMEM; }
    for (int k = 0; k < d->n_sources; k++) (*weight)[k] = p->n_sources > 0 ? d->source_weight[k] : 1.0;
    return NB_OK;
}

/* the table in 1/m with two guard points at each end; a missing F is 0,
 * the guards carry the first and last F given */
static int make_table(const nb_amorphous_params *p, nb_amorphous *a, char *err, size_t errlen)
{
    int n = p->n_table;
    if (n <= 0) { nb_set_error(err, errlen, "the F table is empty"); return NB_EINVAL; }
    a->n_points = n + 4;
    a->stol_of = malloc(sizeof(double) * (size_t)a->n_points);
    a->F_of = malloc(sizeof(double) * (size_t)a->n_points);
    a->coef = malloc(sizeof(double) * 4 * (size_t)a->n_points);
    a->stol_max = malloc(sizeof(double) * (size_t)a->n_points);
    if (!a->stol_of || !a->F_of || !a->coef || !a->stol_max) { nb_set_error(err, errlen, "out of memory for the F table"); return NB_ENOMEM; }
    double F_low = NAN, F_high = NAN;
    for (int i = 0; i < n; i++) {
        double x = p->table[2 * i] * p->table_x_to_stol, F = p->table[2 * i + 1];
        if (!isfinite(x)) { nb_set_error(err, errlen, "F table row %d: x is not a finite number", i + 1); return NB_EINVAL; }
        a->stol_of[i + 2] = x;
        if (!isnan(F)) {
            if (isnan(F_low)) F_low = F;
            F_high = F;
        } else {
            F = 0.0;
        }
        a->F_of[i + 2] = F;
    }
    a->stol_of[0] = -GUARD_FAR; a->stol_of[1] = -GUARD_NEAR;
    a->stol_of[n + 2] = GUARD_NEAR; a->stol_of[n + 3] = GUARD_FAR;
    a->F_of[0] = a->F_of[1] = F_low;
    a->F_of[n + 2] = a->F_of[n + 3] = F_high;
    /* Lagrange weights y_k / prod_{m != k} (x_k - x_m) of each 4-point window */
    for (int i = 1; i + 2 < a->n_points; i++) {
        const double *x = a->stol_of + i - 1, *y = a->F_of + i - 1;
        double *c = a->coef + 4 * i;
        c[0] = y[0] / ((x[0] - x[1]) * (x[0] - x[2]) * (x[0] - x[3]));
        c[1] = y[1] / ((x[1] - x[0]) * (x[1] - x[2]) * (x[1] - x[3]));
        c[2] = y[2] / ((x[2] - x[0]) * (x[2] - x[1]) * (x[2] - x[3]));
        c[3] = y[3] / ((x[3] - x[0]) * (x[3] - x[1]) * (x[3] - x[2]));
        for (int k = 0; k < 4; k++)
            if (!isfinite(c[k])) {
                int row = i - 3 + k;    /* 1-based row of the table */
                nb_set_error(err, errlen, "F table: rows near %d have the same x (%g): the interpolation "
                             "needs distinct x in every 4 rows", row < 1 ? 1 : row, x[k] / p->table_x_to_stol);
                return NB_EINVAL;
            }
    }
    a->stol_max[0] = a->stol_of[0];
    for (int i = 1; i < a->n_points; i++)
        a->stol_max[i] = a->stol_of[i] > a->stol_max[i - 1] ? a->stol_of[i] : a->stol_max[i - 1];
    return NB_OK;
}

int nb_amorphous_init(const nb_amorphous_params *p, nb_amorphous *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    nb_setup *d = &a->det;
    if (!(p->pixel_m > 0.0) || p->fpixels <= 0 || p->spixels <= 0) {
        nb_set_error(err, errlen, "detector of %d x %d pixels of %g mm: both must be positive", p->fpixels,
                     p->spixels, p->pixel_m * 1000);
        return NB_EINVAL;
    }
    if ((double)p->fpixels * (double)p->spixels > NB_MAX_PIXELS) {
        nb_set_error(err, errlen, "%d x %d pixels is more than %.0f", p->fpixels, p->spixels, NB_MAX_PIXELS);
        return NB_EINVAL;
    }
    if (!(p->lambda0_m > 0.0)) { nb_set_error(err, errlen, "the wavelength must be positive"); return NB_EINVAL; }
    if (p->oversample > NB_MAX_OVERSAMPLE) {
        nb_set_error(err, errlen, "oversample %d is more than %d", p->oversample, NB_MAX_OVERSAMPLE);
        return NB_EINVAL;
    }
    d->fpixels = p->fpixels; d->spixels = p->spixels;
    d->pixel_m = p->pixel_m;
    d->detsize_f_m = p->detsize_f_m; d->detsize_s_m = p->detsize_s_m;
    d->pivot = p->pivot;
    d->curved_det = p->curved_det; d->point_pixel = p->point_pixel;
    d->nopolar = p->nopolar; d->polarization = p->polarization;
    d->oversample = p->oversample <= 0 ? 1 : p->oversample;
    d->subpixel_m = p->pixel_m / d->oversample;
    d->roi_xmin = p->roi[0] < 0 ? 0 : p->roi[0];
    d->roi_xmax = p->roi[1] < 0 ? p->fpixels : p->roi[1];
    d->roi_ymin = p->roi[2] < 0 ? 0 : p->roi[2];
    d->roi_ymax = p->roi[3] < 0 ? p->spixels : p->roi[3];
    d->adc_offset = p->adc_offset; d->intfile_scale = p->intfile_scale; d->pgm_scale = p->pgm_scale;
    place_detector(p, d);

    int rc = make_sources(p, d, &a->source_weight, err, errlen);
    if (rc == NB_OK) rc = make_table(p, a, err, errlen);
    if (rc != NB_OK) { nb_amorphous_free(a); return rc; }
    d->steps = (long)d->n_sources * d->oversample * d->oversample;
    /* incident directions: from the source toward the sample */
    a->incident = malloc(sizeof(double) * 3 * (size_t)d->n_sources);
    if (a->incident == NULL) {
        nb_set_error(err, errlen, "out of memory for %d sources", d->n_sources);
        nb_amorphous_free(a);
        return NB_ENOMEM;
    }
    for (int k = 0; k < 3 * d->n_sources; k++) a->incident[k] = -d->source_dir[k];

    /* beam and sample */
    d->fluence = p->fluence;
    d->flux = p->flux; d->exposure_s = p->exposure_s; d->beamsize_m = p->beamsize_m;
    if (p->flux != 0.0 && p->exposure_s > 0.0 && p->beamsize_m >= 0)
        d->fluence = p->flux * p->exposure_s / p->beamsize_m / p->beamsize_m;
    for (int i = 0; i < 3; i++) a->sample_m[i] = p->sample_m[i];
    if (p->beamsize_m >= 0) {
        if (p->beamsize_m < a->sample_m[1]) { a->clipped[0] = a->sample_m[1]; a->sample_m[1] = p->beamsize_m; }
        if (p->beamsize_m < a->sample_m[2]) { a->clipped[1] = a->sample_m[2]; a->sample_m[2] = p->beamsize_m; }
    }
    double volume = a->sample_m[0] * a->sample_m[1] * a->sample_m[2];
    a->density_g_m3 = p->density_g_m3;
    if (p->molecules != 0) a->density_g_m3 = p->molecules / volume / AVOGADRO * p->molecular_weight;
    a->molecules = volume * a->density_g_m3 * AVOGADRO / p->molecular_weight;
    a->fmap = p->fmap;
    return NB_OK;
}

void nb_amorphous_free(nb_amorphous *a)
{
    nb_setup_free(&a->det);
    free(a->stol_of); free(a->F_of); free(a->coef); free(a->stol_max); free(a->source_weight); free(a->incident);
    a->stol_of = a->F_of = a->coef = a->stol_max = a->source_weight = a->incident = NULL;
}

/* The interval of s: i = j - 1 for the first j >= 2 with x_j > s, found on
 * the running maximum P_j = max(x_2..x_j), which never decreases, so that
 * the walk from any hint lands on the same j.  For an increasing table this
 * is the largest i with x_i <= s; for one that is not (shortwater.stol) it
 * is where the reference's walk lands coming from smaller s. */
static int find_interval(const double *P, int n, double s, int hint)
{
    int j = hint + 1;
    if (j < 2) j = 2;
    if (j > n - 2) j = n - 2;
    while (j < n - 2 && P[j] <= s) ++j;
    while (j > 2 && P[j - 1] > s) --j;
    return j - 1;
}

static double interpolate_F(const nb_amorphous *a, double s, int *hint)
{
    int i = find_interval(a->stol_max, a->n_points, s, *hint);
    *hint = i;
    const double *x = a->stol_of + i - 1, *c = a->coef + 4 * i;
    double d0 = s - x[0], d1 = s - x[1], d2 = s - x[2], d3 = s - x[3];
    return d1 * d2 * d3 * c[0] + d0 * d2 * d3 * c[1] + d0 * d1 * d3 * c[2] + d0 * d1 * d2 * c[3];
}

/* Per-thread buffers for one row of sub-pixels. */
typedef struct { double *dx, *dy, *dz, *omega, *stol, *c2t; } row_buffers;

static int buffers_alloc(row_buffers *b, size_t n)
{
    double *all = malloc(sizeof(double) * 6 * n);
    if (all == NULL) return NB_ENOMEM;
    b->dx = all; b->dy = all + n; b->dz = all + 2 * n; b->omega = all + 3 * n;
    b->stol = all + 4 * n; b->c2t = all + 5 * n;
    return NB_OK;
}

/* One row of pixels, one row of sub-pixels at a time: the geometry of every
 * sub-pixel of the row in straight loops (which the compiler vectorises;
 * IEEE operations give the same bits either way), then the table look-up
 * and the sum per pixel.  Each pixel sums sub-pixel rows, then sources, then
 * sub-pixel columns: a fixed order, whatever the thread count.  Returns the
 * row's summed solid angle in *omega_out. */
static int render_row(const nb_amorphous *a, int spixel, float *row, const row_buffers *b, double *omega_out)
{
    const nb_setup *d = &a->det;
    const int ov = d->oversample;
    const double sub = d->subpixel_m, px = d->pixel_m, close = d->close_distance_m;
    const double *f = d->fdet, *sv = d->sdet, *o = d->odet, *p0 = d->pix0_m;
    double omega_sum = 0.0;
    *omega_out = 0.0;
    for (int fp = 0; fp < d->fpixels; fp++) row[fp] = 0.0f;
    if (spixel < d->roi_ymin || spixel > d->roi_ymax) return NB_OK;
    int c0 = d->roi_xmin, c1 = d->roi_xmax < d->fpixels - 1 ? d->roi_xmax : d->fpixels - 1;
    if (c0 > c1) return NB_OK;
    const int m0 = c0 * ov, n = (c1 - c0 + 1) * ov;      /* sub-pixel columns m0 .. m0+n-1 */
    double *dx = b->dx, *dy = b->dy, *dz = b->dz, *om = b->omega, *st = b->stol, *c2 = b->c2t;
    int hint = 1;
    double *acc = calloc(2 * (size_t)(c1 - c0 + 1), sizeof *acc);
    if (acc == NULL) return NB_ENOMEM;
    double *lastF = acc + (c1 - c0 + 1);     /* -Fmap: F of each pixel's last sub-pixel and source */
    for (int subS = 0; subS < ov; subS++) {
        const double Sdet = sub * (spixel * ov + subS) + sub / 2.0;
        if (d->curved_det) {
            for (int m = 0; m < n; m++) {
                double pos[3];
                nb_detector_point(f, sv, o, p0, d->beam, d->distance_m, 1, sub * (m0 + m) + sub / 2.0, Sdet, 0.0, pos);
                dx[m] = pos[0]; dy[m] = pos[1]; dz[m] = pos[2];
            }
        } else {
            for (int m = 0; m < n; m++) {
                double Fdet = sub * (m0 + m) + sub / 2.0;
                dx[m] = Fdet * f[0] + Sdet * sv[0] + 0.0 * o[0] + p0[0];
                dy[m] = Fdet * f[1] + Sdet * sv[1] + 0.0 * o[1] + p0[1];
                dz[m] = Fdet * f[2] + Sdet * sv[2] + 0.0 * o[2] + p0[2];
            }
        }
        /* unit vectors toward the sub-pixels, and their solid angles */
        for (int m = 0; m < n; m++) {
            double r = sqrt(dx[m] * dx[m] + dy[m] * dy[m] + dz[m] * dz[m]);
            dx[m] /= r; dy[m] /= r; dz[m] /= r;
            om[m] = d->point_pixel ? 1.0 / r / r : px * px / r / r * close / r;
        }
        for (int m = 0; m < n; m++) omega_sum += om[m];
        for (int k = 0; k < d->n_sources; k++) {
            const double *inc = a->incident + 3 * k;
            const double lam = d->source_lambda_m[k], w = a->source_weight[k];
            for (int m = 0; m < n; m++) {
                double qx = (dx[m] - inc[0]) / lam, qy = (dy[m] - inc[1]) / lam, qz = (dz[m] - inc[2]) / lam;
                st[m] = 0.5 * sqrt(qx * qx + qy * qy + qz * qz);
                c2[m] = inc[0] * dx[m] + inc[1] * dy[m] + inc[2] * dz[m];
            }
            const int last = subS == ov - 1 && k == d->n_sources - 1;
            for (int m = 0; m < n; m++) {
                double F = interpolate_F(a, st[m], &hint);
                if (last && m % ov == ov - 1) lastF[m / ov] = F;
                double sign = F < 0.0 ? -1.0 : 1.0;
                double polar = 1.0;
                if (!d->nopolar) {
                    if (d->polarization == 0.0) {
                        polar = 0.5 * (1.0 + c2[m] * c2[m] - 0.0);
                    } else {
                        double dif[3] = { dx[m], dy[m], dz[m] };
                        polar = nb_polarization_factor(d->polarization, inc, dif, d->polar_vec);
                    }
                }
                acc[m / ov] += sign * F * F * polar * om[m] * w;
            }
        }
    }
    for (int c = c0; c <= c1; c++)
        row[c] = a->fmap ? (float)lastF[c - c0] : (float)(acc[c - c0] * NB_RE_SQR * d->fluence * a->molecules / d->steps);
    free(acc);
    *omega_out = omega_sum;
    return NB_OK;
}

int nb_amorphous_render(const nb_amorphous *a, float *image, nb_amorphous_stats *st, int nthreads,
                        nb_noise_stream *noise, char *err, size_t errlen)
{
    const nb_setup *d = &a->det;
    double *row_omega = malloc(sizeof(double) * (size_t)d->spixels);
    unsigned char *row_done = noise ? calloc((size_t)d->spixels, 1) : NULL;
    if (row_omega == NULL || (noise && row_done == NULL)) {
        free(row_omega); free(row_done);
        nb_set_error(err, errlen, "out of memory");
        return NB_ENOMEM;
    }
    int team = 1;
#ifdef _OPENMP
    team = nthreads > 0 ? nthreads : omp_get_max_threads();
#else
    (void)nthreads;
#endif
    if ((long)d->fpixels * d->spixels * d->steps < 200000) team = 1;
    int failed = 0;
#pragma omp parallel num_threads(team) reduction(|: failed)
    {
        row_buffers b;
        int ok = buffers_alloc(&b, (size_t)d->fpixels * (size_t)d->oversample) == NB_OK;
#pragma omp for schedule(dynamic, 1)
        for (int sp = 0; sp < d->spixels; sp++) {
            if (!ok || render_row(a, sp, image + (size_t)sp * (size_t)d->fpixels, &b, &row_omega[sp]) != NB_OK)
                failed = 1;
            if (noise) {
                __atomic_store_n(&row_done[sp], 1, __ATOMIC_RELEASE);
                /* the noise stream is sequential: the calling thread draws
                 * the finished rows between its own, the others render on */
                if (nb_calling_thread()) nb_noise_stream_follow(noise, image, row_done, d->spixels);
            }
        }
        if (ok) free(b.dx);
    }
    free(row_done);
    if (failed) { free(row_omega); nb_set_error(err, errlen, "out of memory"); return NB_ENOMEM; }

    /* statistics over the ROI in raster order, as the reference */
    nb_amorphous_stats s;
    memset(&s, 0, sizeof s);
    for (int sp = 0; sp < d->spixels; sp++) s.omega_sum += row_omega[sp];
    free(row_omega);
    double sum = 0.0, sumsqr = 0.0;
    long n = 0;
    size_t pixels = (size_t)d->fpixels * (size_t)d->spixels;
    const double sub = d->subpixel_m;
    for (int sp = 0; sp < d->spixels; sp++)
        for (int fp = 0; fp < d->fpixels; fp++) {
            if (fp < d->roi_xmin || fp > d->roi_xmax || sp < d->roi_ymin || sp > d->roi_ymax) continue;
            float v = image[(size_t)sp * d->fpixels + fp];
            if (v > s.max_I) {
                s.max_I = v;
                /* the last sub-pixel's position, as the reference reports it */
                s.max_I_x_m = sub * (fp * d->oversample + d->oversample - 1) + sub / 2.0;
                s.max_I_y_m = sub * (sp * d->oversample + d->oversample - 1) + sub / 2.0;
            }
            sum += v;
            sumsqr += v * v;           /* a float product, as the reference */
            ++n;
        }
    s.n = n;
    long nn = n <= 0 ? 1 : n;
    s.mean = sum / nn;
    if (nn <= 1) nn = 2;
    s.rms = sqrt(sumsqr / (nn - 1));
    /* the reference's deviation pass reads the next pixel in memory (the
     * last one reads 0) while testing the current one against the ROI */
    sumsqr = 0.0;
    n = 0;
    size_t j = 0;
    for (int sp = 0; sp < d->spixels; sp++)
        for (int fp = 0; fp < d->fpixels; fp++) {
            ++j;
            if (fp < d->roi_xmin || fp > d->roi_xmax || sp < d->roi_ymin || sp > d->roi_ymax) continue;
            double t = (j < pixels ? (double)image[j] : 0.0) - s.mean;
            sumsqr += t * t;
            ++n;
        }
    if (n <= 1) n = 2;
    s.rmsd = sqrt(sumsqr / (n - 1));
    if (st) *st = s;
    return NB_OK;
}
