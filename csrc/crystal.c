/* crystal.c - unit cell, orientation, crystal size and mosaic domains.
 *
 * The cell is built in reciprocal space (from -cell via the standard
 * triclinic relations, or from a MOSFLM A matrix, which carries 1/lambda),
 * misset, then turned into direct-space vectors a, b, c.  Miller indices of
 * a scattering vector S are then simply h = a.S, k = b.S, l = c.S.
 */
#include <float.h>
#include <stdlib.h>
#include <limits.h>
#include "internal.h"
#include "stages.h"

static double clamp_unit(double v) { return v > 1.0 ? 1.0 : (v < -1.0 ? -1.0 : v); }

/* The reference resets any cosine whose square exceeds one to +1. */
static double clamp_cos(double v) { return v * v > 1.0 ? 1.0 : v; }

static int out_of_unit(double v) { return v > 1.0000001 || v < -1.0000001; }

/* Reciprocal basis from cell lengths and angles, a* along x, b* in the x-y plane. */
static void reciprocal_from_cell(nb_setup *s, const double len[3], const double ang[3],
                                 double *V_cell, double astar[3], double bstar[3], double cstar[3])
{
    double half_sum = (ang[0] + ang[1] + ang[2]) / 2;
    double skew = fabs(sin(half_sum) * sin(half_sum - ang[0]) * sin(half_sum - ang[1]) * sin(half_sum - ang[2]));
    double V = 2.0 * len[0] * len[1] * len[2] * sqrt(skew);
    if (V <= 0.0) {
        nb_log(s, "WARNING: impossible unit cell volume: %g\n", V);
        V = DBL_MIN;
    }
    double Vs = 1.0 / V;
    double la = len[1] * len[2] * sin(ang[0]) * Vs;
    double lb = len[2] * len[0] * sin(ang[1]) * Vs;
    double lc = len[0] * len[1] * sin(ang[2]) * Vs;
    if (la <= 0.0 || lb <= 0.0 || lc <= 0.0) {
        nb_log(s, "WARNING: impossible reciprocal cell lengths: %g %g %g\n", la, lb, lc);
        la = fabs(la); lb = fabs(lb); lc = fabs(lc);
        if (la <= 0.0) la = DBL_MIN;
        if (lb <= 0.0) lb = DBL_MIN;
        if (lc <= 0.0) lc = DBL_MIN;
    }
    double sin_as = len[0] * Vs / lb / lc, sin_bs = len[1] * Vs / la / lc, sin_gs = len[2] * Vs / la / lb;
    double cos_as = (cos(ang[1]) * cos(ang[2]) - cos(ang[0])) / (sin(ang[1]) * sin(ang[2]));
    double cos_bs = (cos(ang[2]) * cos(ang[0]) - cos(ang[1])) / (sin(ang[2]) * sin(ang[0]));
    double cos_gs = (cos(ang[0]) * cos(ang[1]) - cos(ang[2])) / (sin(ang[0]) * sin(ang[1]));
    if (out_of_unit(sin_as) || out_of_unit(sin_bs) || out_of_unit(sin_gs) ||
        out_of_unit(cos_as) || out_of_unit(cos_bs) || out_of_unit(cos_gs))
        nb_log(s, "WARNING: oddball reciprocal cell angles: sin %.25g %.25g %.25g cos %.25g %.25g %.25g\n",
               sin_as, sin_bs, sin_gs, cos_as, cos_bs, cos_gs);
    sin_gs = clamp_unit(sin_gs);
    cos_as = clamp_cos(cos_as); cos_bs = clamp_cos(cos_bs); cos_gs = clamp_cos(cos_gs);

    astar[0] = la;           astar[1] = 0.0;                astar[2] = 0.0;
    bstar[0] = lb * cos_gs;  bstar[1] = lb * sin_gs;        bstar[2] = 0.0;
    cstar[0] = lc * cos_bs;
    cstar[1] = lc * (cos_as - cos_bs * cos_gs) / sin_gs;
    cstar[2] = lc * V / (len[0] * len[1] * len[2] * sin_gs);
    *V_cell = V;
}

static void set_length(double *v, double length)
{
    double old = nb_norm(v);
    if (old <= 0.0) old = 1.0;
    nb_scale(v, length / old, v);
}

/* angle between two vectors from its sine and cosine, clamped as the reference */
static double cell_angle(double sine, double cosine) { return atan2(clamp_unit(sine), clamp_cos(cosine)); }

static void log_vectors(nb_setup *s, const char *title, const char *names[3], const double *x, const double *y, const double *z)
{
    nb_log(s, "%s\n", title);
    nb_log(s, "     %-10s  %-10s  %-10s\n", names[0], names[1], names[2]);
    nb_log(s, "X: %11.8f %11.8f %11.8f\n", x[0], y[0], z[0]);
    nb_log(s, "Y: %11.8f %11.8f %11.8f\n", x[1], y[1], z[1]);
    nb_log(s, "Z: %11.8f %11.8f %11.8f\n", x[2], y[2], z[2]);
}

static int auto_oversample(const nb_params *p, nb_setup *s, double xtal_max_m, char *err, size_t errlen)
{
    double reciprocal_pixel_m = s->lambda0_m * s->distance_m / s->pixel_m;
    /* in double first: an absurd ratio must not overflow the int */
    double wanted = ceil(3.0 * xtal_max_m / reciprocal_pixel_m);
    int recommended = !(wanted >= 1.0) ? 1 : wanted > INT_MAX ? INT_MAX : (int)wanted;
    s->oversample = p->oversample;
    if (s->oversample <= 0) {
        s->oversample = recommended;
        nb_log(s, "auto-selected %d-fold oversampling\n", s->oversample);
    }
    if (s->oversample < recommended) {
        nb_log(s, "WARNING: maximum dimension of sample is %g A\n", xtal_max_m * 1e10);
        nb_log(s, "         but reciprocal pixel size is %g A\n", reciprocal_pixel_m * 1e10);
        nb_log(s, "         intensity may vary significantly across a pixel!\n");
        nb_log(s, "         recommend -oversample %d to work around this\n", recommended);
    }

    /* the render keeps every sample of a pixel (sensor layers x sub-pixels x
     * sources) in memory, per thread: refuse what would not fit sensibly */
    double sources = p->n_sources > 0 ? (double)p->n_sources
                                      : (double)s->hdivsteps * s->vdivsteps * s->dispsteps;
    double per_subpixel = (s->thicksteps > 0 ? s->thicksteps : 1) * (sources > 0 ? sources : 1);
    double samples = per_subpixel * (double)s->oversample * s->oversample;
    if (samples > NB_MAX_PIXEL_SAMPLES || s->oversample > NB_MAX_OVERSAMPLE) {
        int most = (int)floor(sqrt(NB_MAX_PIXEL_SAMPLES / per_subpixel));
        if (most > NB_MAX_OVERSAMPLE) most = NB_MAX_OVERSAMPLE;
        if (p->oversample <= 0)
            nb_set_error(err, errlen, "automatic oversampling would be %d-fold (crystal %g um across, reciprocal "
                         "pixel %g A), %.3g samples per pixel needing %.1f GB per render thread: give -oversample "
                         "(at most %d here)", s->oversample, xtal_max_m * 1e6, reciprocal_pixel_m * 1e10, samples,
                         samples * 56 / 1e9, most < 1 ? 1 : most);
        else
            nb_set_error(err, errlen, "-oversample %d with %.0f sensor layers and %.0f sources makes %.3g samples "
                         "per pixel needing %.1f GB per render thread: too many (-oversample at most %d here)",
                         s->oversample, (double)(s->thicksteps > 0 ? s->thicksteps : 1), sources, samples,
                         samples * 56 / 1e9, most < 1 ? 1 : most);
        return NB_EINVAL;
    }
    return NB_OK;
}

int nb_crystal_setup(const nb_params *p, nb_setup *s, long *misset_seed, double sample_m[3], char *err, size_t errlen)
{
    double astar[3] = { 0, 0, 0 }, bstar[3] = { 0, 0, 0 }, cstar[3] = { 0, 0, 0 };
    double V_cell = 0.0, len[3] = { 0, 0, 0 };
    if (p->has_cell) {
        len[0] = p->cell[0];
        len[1] = p->cell[1] > 0.0 ? p->cell[1] : len[0];
        len[2] = p->cell[2] > 0.0 ? p->cell[2] : len[0];
        double ang[3];
        for (int i = 0; i < 3; ++i) ang[i] = p->cell[3 + i] / NB_RTD > 0.0 ? p->cell[3 + i] / NB_RTD : M_PI / 2;
        reciprocal_from_cell(s, len, ang, &V_cell, astar, bstar, cstar);
    }
    if (p->has_amat) {
        /* the A matrix's columns are a*, b*, c* scaled by the wavelength */
        double per_lambda = 1e-10 / s->lambda0_m;
        for (int i = 0; i < 3; ++i) {
            astar[i] = p->amat[3 * i + 0] * per_lambda;
            bstar[i] = p->amat[3 * i + 1] * per_lambda;
            cstar[i] = p->amat[3 * i + 2] * per_lambda;
        }
    }

    double misset[3] = { p->misset_deg[0] / NB_RTD, p->misset_deg[1] / NB_RTD, p->misset_deg[2] / NB_RTD };
    int apply_misset = p->misset_mode == NB_MISSET_ANGLES;
    if (p->misset_mode == NB_MISSET_RANDOM) {
        /* a cap of 90 "degrees" handed over as radians covers the whole sphere */
        double umat[9];
        nb_mosaic_umat(90.0f, umat, &s->rng, misset_seed);
        nb_umat_to_misset(umat, misset);
        nb_log(s, "random orientation misset angles: %f %f %f deg\n", misset[0] * NB_RTD, misset[1] * NB_RTD, misset[2] * NB_RTD);
        apply_misset = 1;
    }
    if (apply_misset) {
        nb_rotate_xyz(astar, astar, misset[0], misset[1], misset[2]);
        nb_rotate_xyz(bstar, bstar, misset[0], misset[1], misset[2]);
        nb_rotate_xyz(cstar, cstar, misset[0], misset[1], misset[2]);
        for (int i = 0; i < 3; ++i) s->misset_rad[i] = misset[i];
    }

    /* direct cell: a = (b* x c*) V, with the user's lengths enforced */
    double bc[3], ca[3], ab[3];
    nb_cross(bstar, cstar, bc);
    nb_cross(cstar, astar, ca);
    nb_cross(astar, bstar, ab);
    double V_star = nb_dot(astar, bc);
    if (p->has_cell) {
        set_length(bc, len[0] / V_cell);
        set_length(ca, len[1] / V_cell);
        set_length(ab, len[2] / V_cell);
        V_star = 1.0 / V_cell;
    }
    V_cell = 1.0 / V_star;
    if (!isfinite(V_cell) || V_cell == 0.0) {
        nb_set_error(err, errlen, "the orientation matrix is singular: no unit cell volume");
        return NB_EINVAL;
    }
    double a[3], b[3], c[3];
    nb_scale(bc, V_cell, a);
    nb_scale(ca, V_cell, b);
    nb_scale(ab, V_cell, c);
    nb_cross(b, c, bc); nb_scale(bc, V_star, astar);
    nb_cross(c, a, ca); nb_scale(ca, V_star, bstar);
    nb_cross(a, b, ab); nb_scale(ab, V_star, cstar);

    double la = nb_norm(a), lb = nb_norm(b), lc = nb_norm(c);
    double las = nb_norm(astar), lbs = nb_norm(bstar), lcs = nb_norm(cstar);
    double sin_a = las * V_cell / lb / lc, sin_b = lbs * V_cell / la / lc, sin_g = lcs * V_cell / la / lb;
    double cos_a = nb_dot(b, c) / lb / lc, cos_b = nb_dot(a, c) / la / lc, cos_g = nb_dot(a, b) / la / lb;
    if (out_of_unit(sin_a) || out_of_unit(sin_b) || out_of_unit(sin_g) ||
        out_of_unit(cos_a) || out_of_unit(cos_b) || out_of_unit(cos_g))
        nb_log(s, "WARNING: oddball cell angles: sin %.25g %.25g %.25g cos %.25g %.25g %.25g\n",
               sin_a, sin_b, sin_g, cos_a, cos_b, cos_g);
    double alpha = cell_angle(sin_a, cos_a), beta = cell_angle(sin_b, cos_b), gamma = cell_angle(sin_g, cos_g);
    double alpha_s = cell_angle(la * V_star / lbs / lcs, nb_dot(bstar, cstar) / lbs / lcs);
    double beta_s = cell_angle(lb * V_star / las / lcs, nb_dot(astar, cstar) / las / lcs);
    double gamma_s = cell_angle(lc * V_star / las / lbs, nb_dot(astar, bstar) / las / lbs);

    nb_log(s, "Unit Cell: %g %g %g %g %g %g\n", la, lb, lc, alpha * NB_RTD, beta * NB_RTD, gamma * NB_RTD);
    nb_log(s, "Recp Cell: %g %g %g %g %g %g\n", las, lbs, lcs, alpha_s * NB_RTD, beta_s * NB_RTD, gamma_s * NB_RTD);
    nb_log(s, "volume = %g A^3\n", V_cell);
    static const char *direct_names[3] = { "a", "b", "c" }, *recip_names[3] = { "a_star", "b_star", "c_star" };
    log_vectors(s, "real-space cell vectors (Angstrom):", direct_names, a, b, c);
    log_vectors(s, "reciprocal-space cell vectors (Angstrom^-1):", recip_names, astar, bstar, cstar);

    s->cell[0] = la; s->cell[1] = lb; s->cell[2] = lc;
    s->cell[3] = alpha * NB_RTD; s->cell[4] = beta * NB_RTD; s->cell[5] = gamma * NB_RTD;
    s->V_cell_A3 = V_cell;
    for (int i = 0; i < 3; ++i) {
        s->a0[i] = a[i] * 1e-10; s->b0[i] = b[i] * 1e-10; s->c0[i] = c[i] * 1e-10;
        s->a_star[i] = astar[i]; s->b_star[i] = bstar[i]; s->c_star[i] = cstar[i];
    }

    /* crystal size in whole cells, from -xtalsize when given */
    /* the edge lengths of the vectors already in metres, not the lengths in A
     * times 1e-10: they differ in the last bit, and a size that is an exact
     * multiple of an edge must round up or not as the reference's does */
    double la_m = nb_norm(s->a0), lb_m = nb_norm(s->b0), lc_m = nb_norm(s->c0);
    s->Na = p->Na; s->Nb = p->Nb; s->Nc = p->Nc;
    if (sample_m[0] > 0) s->Na = ceil(sample_m[0] / la_m);
    if (sample_m[1] > 0) s->Nb = ceil(sample_m[1] / lb_m);
    if (sample_m[2] > 0) s->Nc = ceil(sample_m[2] / lc_m);
    if (s->Na <= 1.0) s->Na = 1.0;
    if (s->Nb <= 1.0) s->Nb = 1.0;
    if (s->Nc <= 1.0) s->Nc = 1.0;
    double size_a = la_m * s->Na, size_b = lb_m * s->Nb, size_c = lc_m * s->Nc;
    nb_log(s, "crystal is %g x %g x %g microns\n", size_a * 1e6, size_b * 1e6, size_c * 1e6);
    double size_max = fmax(size_a, fmax(size_b, size_c));
    int rc = auto_oversample(p, s, size_max, err, errlen);
    if (rc) return rc;
    double molecular_weight = size_a * size_b * size_c * 1.2e6 * 6.02214179e23 / (s->Na * s->Nb * s->Nc);
    nb_log(s, "approximate MW = %g\n", molecular_weight);
    return NB_OK;
}

int nb_mosaic_setup(nb_setup *s, long *mosaic_seed, char *err, size_t errlen)
{
    s->mosaic_umats = calloc((size_t)s->mosaic_domains, 9 * sizeof(double));
    if (!s->mosaic_umats) {
        nb_set_error(err, errlen, "out of memory for %d mosaic domains", s->mosaic_domains);
        return NB_ENOMEM;
    }
    for (int d = 0; d < s->mosaic_domains; ++d) {
        double *u = s->mosaic_umats + 9 * d;
        nb_mosaic_umat((float)s->mosaic_spread_rad, u, &s->rng, mosaic_seed);
        if (d == 0) {
            /* the first domain keeps the crystal's own orientation (the draw is still consumed) */
            for (int i = 0; i < 9; ++i) u[i] = (i % 4 == 0) ? 1.0 : 0.0;
        }
    }
    nb_log(s, "  created a total of %d mosaic domains\n", s->mosaic_domains);
    return NB_OK;
}
