/* config.c - user parameters (flag units) -> simulation setup (SI units).
 *
 * Every unit conversion of the engine happens here, once: millimetres,
 * Angstrom, degrees, microns, mrad and percent become metres, radians and
 * fractions.  The stages follow the reference's order, because later
 * defaults depend on earlier ones (detector size -> beam centre ->
 * convention -> pivot -> crystal -> sampling).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"
#include "stages.h"

static void set3(double *v, double x, double y, double z) { v[0] = x; v[1] = y; v[2] = z; }

void nb_params_init(nb_params *p)
{
    memset(p, 0, sizeof *p);
    p->Na = p->Nb = p->Nc = 1.0;
    p->xtal_shape = NB_SHAPE_SQUARE;
    p->fudge = 1.0;
    p->interpolate = -1;
    p->lambda_A = 1.0;
    p->dispsteps = -1;
    p->hdivrange_mrad = p->vdivrange_mrad = -1.0;
    p->hdivstep_mrad = p->vdivstep_mrad = -1.0;
    p->hdivsteps = p->vdivsteps = -1;
    p->round_div = 1;
    p->fluence = 125932015286227086360700780544.0;
    p->exposure_s = 1.0;
    p->beamsize_mm = 0.1;
    p->distance_mm = 100.0;
    p->close_distance_mm = NAN;
    p->pixel_mm = 0.1;
    p->detsize_f_mm = p->detsize_s_mm = 102.4;
    p->Xbeam_mm = p->Ybeam_mm = NAN;
    p->Xclose_mm = p->Yclose_mm = NAN;
    p->ORGX_px = p->ORGY_px = NAN;
    p->pivot = NB_PIVOT_BEAM;
    p->convention = NB_CONV_MOSFLM;
    /* MOSFLM's frame: beam along +x, fast axis +z, slow axis -y */
    set3(p->fdet, 0, 0, 1);
    set3(p->sdet, 0, -1, 0);
    set3(p->odet, 1, 0, 0);
    set3(p->beam, 1, 0, 0);
    set3(p->polar_vec, 0, 0, 1);
    set3(p->spindle, 0, 0, 1);
    /* the reference's starting two-theta axis: every named convention sets
     * its own, so only CUSTOM (without -twotheta_axis) keeps this one */
    set3(p->twotheta_axis, 0, 1, 0);
    p->detector_abs_um = NAN;
    p->detector_thicksteps = -1;
    p->oversample = -1;
    p->roi[0] = p->roi[1] = p->roi[2] = p->roi[3] = -1;
    p->osc_deg = p->phistep_deg = -1.0;
    p->phisteps = -1;
    p->mosaic_deg = -1.0;
    p->mosaic_domains = -1;
    p->mosaic_seed = 12345678;
    p->seed = (long)time(NULL);
    p->adc_offset = 40.0;
}

/* One sampled dimension (phi, divergence, dispersion, sensor depth): the
 * reference fills in whichever of range, step and count the user left out.
 * The count stays a double until validate() has bounded it, so that an
 * absurd range/step ratio is inf, never undefined behaviour. */
enum { SWEEP_H, SWEEP_V, SWEEP_D, SWEEP_T, SWEEP_P, NSWEEPS };

void nb_resolve_sweep(nb_sweep *w, nb_sweep_kind kind)
{
    /* the range a count alone spans; the thickness is split in two by default */
    const double range_if_only_count = kind == NB_SWEEP_PHI ? 1.0 / NB_RTD : kind == NB_SWEEP_THICK ? 0.5e-6 : 1.0;
    if (kind == NB_SWEEP_PHI && w->count < 0) {
        /* phi: an osc with no step makes two steps of half the range */
        if (w->range < 0.0) {
            if (w->step <= 0.0) { w->count = 1; w->range = 0.0; w->step = 0.0; }
            else { w->range = w->step; w->count = 2; }
        } else if (w->step <= 0.0) { w->count = 2; w->step = w->range / 2.0; }
        else w->count = ceil(w->range / w->step);
        return;
    }
    if (kind == NB_SWEEP_PHI && w->count == 0) w->count = 1;
    if (w->count <= 0) {
        if (w->range < 0.0) {
            if (w->step <= 0.0) { w->count = 1; w->range = 0.0; w->step = 0.0; }
            else { w->range = w->step; w->count = 2; }
        } else if (w->step <= 0.0) {
            if (kind == NB_SWEEP_THICK) { w->count = 2; w->step = w->range / w->count; }
            else { w->step = w->range; w->count = 2; }
        } else {
            w->count = ceil(w->range / w->step);
        }
    } else {
        if (w->range < 0.0) {
            if (w->step <= 0.0) { w->range = range_if_only_count; w->step = w->range / w->count; }
            else { w->range = w->step; w->count = 2; }
        } else if (w->step <= 0.0 && kind != NB_SWEEP_PHI) {
            if (w->count <= 1) w->count = 2;
            w->step = w->range / (w->count - 1);
        } else if (w->step < 0.0) {
            w->step = w->range / w->count;
        }
    }
    /* a sweep other than phi with no extent collapses to one sample */
    if (kind != NB_SWEEP_PHI && (w->range <= 0.0 || w->step <= 0.0 || w->count <= 0)) {
        w->count = 1; w->range = 0.0; w->step = 0.0;
    }
}

/* Every sweep in SI units (radians, fractions, metres), resolved: the one
 * place both validate() and sampling() take their step counts from. */
static void resolve_sweeps(const nb_params *p, nb_sweep w[NSWEEPS])
{
    w[SWEEP_H] = (nb_sweep){ p->hdivrange_mrad / 1000.0, p->hdivstep_mrad / 1000.0, p->hdivsteps };
    w[SWEEP_V] = (nb_sweep){ p->vdivrange_mrad / 1000.0, p->vdivstep_mrad / 1000.0, p->vdivsteps };
    w[SWEEP_D] = (nb_sweep){ p->dispersion_pct / 100.0, -1.0, p->dispsteps };
    w[SWEEP_T] = (nb_sweep){ p->detector_thick_um * 1e-6, -1.0, p->detector_thicksteps };
    w[SWEEP_P] = (nb_sweep){ p->osc_deg / NB_RTD, p->phistep_deg / NB_RTD, p->phisteps };
    nb_resolve_sweep(&w[SWEEP_H], NB_SWEEP_DIV);
    nb_resolve_sweep(&w[SWEEP_V], NB_SWEEP_DIV);
    nb_resolve_sweep(&w[SWEEP_D], NB_SWEEP_DISP);
    nb_resolve_sweep(&w[SWEEP_T], NB_SWEEP_THICK);
    nb_resolve_sweep(&w[SWEEP_P], NB_SWEEP_PHI);
}

/* Reject values that would make the simulation meaningless, crash, or need
 * more memory than is sensible.  Only the parameters are known here: the
 * automatic oversampling is bounded in crystal.c, once the crystal is. */
static int validate(const nb_params *p, char *err, size_t errlen)
{
#define REQUIRE(cond, ...) do { if (!(cond)) { nb_set_error(err, errlen, __VA_ARGS__); return NB_EINVAL; } } while (0)
    /* one parameter out of its range: the message starts with the nb_params
     * field, so that a front end can name the flag or keyword that set it */
    REQUIRE(isfinite(p->lambda_A) && p->lambda_A > 0, "lambda_A: the wavelength must be > 0, got %g A", p->lambda_A);
    REQUIRE(isfinite(p->pixel_mm) && p->pixel_mm > 0, "pixel_mm: the pixel size must be > 0, got %g mm", p->pixel_mm);
    REQUIRE(p->fpixels >= 0 && p->spixels >= 0, "detector pixel counts must be positive");
    REQUIRE(isfinite(p->detsize_f_mm) && isfinite(p->detsize_s_mm), "detector size must be finite");
    REQUIRE(isfinite(p->distance_mm) && p->distance_mm > 0, "distance_mm: the detector distance must be > 0, got %g mm",
            p->distance_mm);
    REQUIRE(isnan(p->close_distance_mm) || (isfinite(p->close_distance_mm) && p->close_distance_mm > 0),
            "close_distance_mm: the detector distance must be > 0, got %g mm", p->close_distance_mm);
    REQUIRE(p->has_cell || p->has_amat, "no unit cell: give -cell or -mat");
    REQUIRE(!p->has_cell || (p->cell[0] > 0 && p->cell[1] > 0 && p->cell[2] > 0),
            "cell: the cell lengths must be > 0, got %g %g %g A", p->cell[0], p->cell[1], p->cell[2]);
    REQUIRE(!p->has_cell || (p->cell[3] > 0 && p->cell[3] < 180 && p->cell[4] > 0 && p->cell[4] < 180 &&
                             p->cell[5] > 0 && p->cell[5] < 180),
            "cell: the cell angles must be between 0 and 180 degrees, got %g %g %g", p->cell[3], p->cell[4], p->cell[5]);
    REQUIRE(p->Na >= 0, "Na: the number of unit cells must be >= 0, got %g", p->Na);
    REQUIRE(p->Nb >= 0, "Nb: the number of unit cells must be >= 0, got %g", p->Nb);
    REQUIRE(p->Nc >= 0, "Nc: the number of unit cells must be >= 0, got %g", p->Nc);
    REQUIRE(p->n_sources >= 0 && (p->n_sources == 0 || p->sources), "source list is inconsistent");
    REQUIRE(p->oversample <= NB_MAX_OVERSAMPLE, "oversample %d is too large (at most %d)", p->oversample,
            NB_MAX_OVERSAMPLE);
    REQUIRE(p->mosaic_domains <= 1000000, "mosaic_domains %d is too large (at most 1000000)", p->mosaic_domains);
    REQUIRE(!(p->dispersion_pct >= 200.0), "dispersion of %g%% would make wavelengths <= 0 (must be < 200%%)",
            p->dispersion_pct);
    REQUIRE(!(p->flux != 0.0 && p->exposure_s > 0.0 && p->beamsize_mm == 0.0),
            "-flux with -beamsize 0 gives an infinite fluence: give a positive -beamsize");

    /* detector: pixel counts as detector_size() will round them */
    double f = p->fpixels ? (double)p->fpixels : ceil(p->detsize_f_mm / p->pixel_mm - 0.5);
    double sl = p->spixels ? (double)p->spixels : ceil(p->detsize_s_mm / p->pixel_mm - 0.5);
    REQUIRE(f >= 1 && sl >= 1, "detector has no pixels (%g x %g)", f, sl);
    REQUIRE(f * sl <= NB_MAX_PIXELS, "detector of %.0f x %.0f pixels needs %.1f GB per image: too large "
            "(at most %.0f pixels)", f, sl, f * sl * sizeof(float) / 1e9, NB_MAX_PIXELS);

    /* region of interest: -1 (any negative) is the detector's edge, as the reference */
    double xmin = p->roi[0] < 0 ? 0 : p->roi[0], xmax = p->roi[1] < 0 ? f : p->roi[1];
    double ymin = p->roi[2] < 0 ? 0 : p->roi[2], ymax = p->roi[3] < 0 ? sl : p->roi[3];
    REQUIRE(xmin <= xmax && ymin <= ymax, "roi: %d %d %d %d is inverted (needs xmin <= xmax and ymin <= ymax)",
            p->roi[0], p->roi[1], p->roi[2], p->roi[3]);
    REQUIRE(xmin < f && ymin < sl, "-roi %d %d %d %d lies outside the %.0f x %.0f pixel detector",
            p->roi[0], p->roi[1], p->roi[2], p->roi[3], f, sl);

    /* sampling: every sweep, the sources and the crystal orientations */
    nb_sweep w[NSWEEPS];
    resolve_sweeps(p, w);
    double phi = w[SWEEP_P].count, hdiv = w[SWEEP_H].count, vdiv = w[SWEEP_V].count;
    double disp = w[SWEEP_D].count, thick = w[SWEEP_T].count;
    REQUIRE(!(phi > NB_MAX_SWEEP_STEPS), "%.3g phi steps (-osc %g, -phistep %g, -phisteps %d): too many (at most %.0f)",
            phi, p->osc_deg, p->phistep_deg, p->phisteps, NB_MAX_SWEEP_STEPS);
    REQUIRE(!(hdiv > NB_MAX_SWEEP_STEPS), "%.3g horizontal divergence steps (-hdivrange %g, -hdivstep %g, -hdivsteps %d): "
            "too many (at most %.0f)", hdiv, p->hdivrange_mrad, p->hdivstep_mrad, p->hdivsteps, NB_MAX_SWEEP_STEPS);
    REQUIRE(!(vdiv > NB_MAX_SWEEP_STEPS), "%.3g vertical divergence steps (-vdivrange %g, -vdivstep %g, -vdivsteps %d): "
            "too many (at most %.0f)", vdiv, p->vdivrange_mrad, p->vdivstep_mrad, p->vdivsteps, NB_MAX_SWEEP_STEPS);
    REQUIRE(!(disp > NB_MAX_SWEEP_STEPS), "%d wavelength steps (-dispsteps): too many (at most %.0f)", p->dispsteps,
            NB_MAX_SWEEP_STEPS);
    REQUIRE(!(thick > NB_MAX_SWEEP_STEPS), "%d sensor layers (-detector_thicksteps): too many (at most %.0f)",
            p->detector_thicksteps, NB_MAX_SWEEP_STEPS);
    if (p->n_sources > 0)
        REQUIRE(p->n_sources <= NB_MAX_SOURCES, "%d sources in the source list: too many (at most %.0f)",
                p->n_sources, NB_MAX_SOURCES);
    else
        REQUIRE(hdiv * vdiv * disp <= NB_MAX_SOURCES, "%.0f x %.0f divergence x %.0f dispersion steps make %.3g sources: "
                "too many (at most %.0f)", hdiv, vdiv, disp, hdiv * vdiv * disp, NB_MAX_SOURCES);
    double domains = p->mosaic_domains > 0 ? p->mosaic_domains : 10;   /* auto: 1, or 10 with a spread */
    REQUIRE(phi * domains <= NB_MAX_ORIENTATIONS, "%.0f phi steps x %.0f mosaic domains make %.3g crystal orientations "
            "(%.1f GB): too many (at most %.0f)", phi, domains, phi * domains, phi * domains * 72 / 1e9,
            NB_MAX_ORIENTATIONS);
#undef REQUIRE
    return NB_OK;
}

/* Detector size in pixels and metres, as the reference rounds it. */
static int detector_size(const nb_params *p, nb_setup *s, char *err, size_t errlen)
{
    s->pixel_m = p->pixel_mm / 1000.0;
    s->detsize_f_m = p->detsize_f_mm / 1000.0;
    s->detsize_s_m = p->detsize_s_mm / 1000.0;
    if (p->fpixels) s->detsize_f_m = s->pixel_m * p->fpixels;
    if (p->spixels) s->detsize_s_m = s->pixel_m * p->spixels;
    double f = ceil(s->detsize_f_m / s->pixel_m - 0.5), sl = ceil(s->detsize_s_m / s->pixel_m - 0.5);
    if (!(f >= 1 && sl >= 1)) {
        nb_set_error(err, errlen, "detector has no pixels (%g x %g)", f, sl);
        return NB_EINVAL;
    }
    if (f * sl > 2.0e9) {
        nb_set_error(err, errlen, "detector of %.0f x %.0f pixels needs %.1f GB per image: too large",
                     f, sl, f * sl * 4 / 1e9);
        return NB_EINVAL;
    }
    s->fpixels = (int)f;
    s->spixels = (int)sl;
    return NB_OK;
}

/* Fluence from flux, and the beam clipping the sample, as the reference. */
static void beam_intensity(const nb_params *p, nb_setup *s, double sample_m[3])
{
    s->fluence = p->fluence;
    s->flux = p->flux;
    s->exposure_s = p->exposure_s;
    s->beamsize_m = p->beamsize_mm / 1000.0;
    if (s->flux != 0.0 && s->exposure_s > 0.0 && s->beamsize_m >= 0)
        s->fluence = s->flux * s->exposure_s / s->beamsize_m / s->beamsize_m;
    if (s->beamsize_m >= 0) {
        if (s->beamsize_m < sample_m[1]) {
            nb_log(s, "WARNING: clipping sample (%lg m high) with beam (%lg m)\n", sample_m[1], s->beamsize_m);
            sample_m[1] = s->beamsize_m;
        }
        if (s->beamsize_m < sample_m[2]) {
            nb_log(s, "WARNING: clipping sample (%lg m wide) with beam (%lg m)\n", sample_m[2], s->beamsize_m);
            sample_m[2] = s->beamsize_m;
        }
    }
    if (s->exposure_s > 0.0) s->flux = s->fluence / s->exposure_s * s->beamsize_m * s->beamsize_m;
}

static void sampling(const nb_params *p, nb_setup *s)
{
    nb_sweep w[NSWEEPS];
    resolve_sweeps(p, w);       /* counts bounded by validate(): they fit an int */
    const nb_sweep phi = w[SWEEP_P], hdiv = w[SWEEP_H], vdiv = w[SWEEP_V], disp = w[SWEEP_D], thick = w[SWEEP_T];
    s->osc_rad = phi.range; s->phistep_rad = phi.step; s->phisteps = (int)phi.count;
    s->phi0_rad = p->phi_deg / NB_RTD;

    if (isnan(p->detector_abs_um)) s->mu_per_m = -1.0;
    else if (isinf(p->detector_abs_um) || p->detector_abs_um == 0.0) s->mu_per_m = 0.0;
    else s->mu_per_m = 1.0 / (p->detector_abs_um * 1e-6);
    if (thick.range > 0.0 && s->mu_per_m < 0.0) {
        s->mu_per_m = 1.0 / thick.range;
        nb_log(s, "WARNING: setting detector attenuation depth to %g m\n", s->mu_per_m);
    }

    s->mosaic_spread_rad = p->mosaic_deg / NB_RTD;
    s->mosaic_domains = p->mosaic_domains;
    if (s->mosaic_domains <= 0) {
        if (s->mosaic_spread_rad < 0.0) { s->mosaic_domains = 1; s->mosaic_spread_rad = 0.0; }
        else if (s->mosaic_spread_rad == 0.0) s->mosaic_domains = 1;
        else {
            nb_log(s, "WARNING: finite mosaicity with only one domain! upping to 10 mosaic domains\n");
            s->mosaic_domains = 10;
        }
    } else if (s->mosaic_spread_rad < 0.0) {
        nb_log(s, "WARNING: no mosaic spread specified.  setting mosaic_domains = 1\n");
        s->mosaic_spread_rad = 0.0;
        s->mosaic_domains = 1;
    } else if (s->mosaic_spread_rad == 0.0) {
        nb_log(s, "WARNING: zero mosaic spread specified.  setting mosaic_domains = 1\n");
        s->mosaic_domains = 1;
    }

    s->hdivrange_rad = hdiv.range; s->hdivstep_rad = hdiv.step; s->hdivsteps = (int)hdiv.count;
    s->vdivrange_rad = vdiv.range; s->vdivstep_rad = vdiv.step; s->vdivsteps = (int)vdiv.count;
    s->dispersion = disp.range; s->dispstep = disp.step; s->dispsteps = (int)disp.count;
    s->thick_m = thick.range; s->thickstep_m = thick.step; s->thicksteps = (int)thick.count;
}

static const char *convention_name(nb_convention c)
{
    switch (c) {
    case NB_CONV_ADXV: return "adxv";
    case NB_CONV_MOSFLM: return "mosflm";
    case NB_CONV_XDS: return "xds";
    case NB_CONV_DIALS: return "dials";
    case NB_CONV_DENZO: return "denzo";
    default: return "custom";
    }
}

static void log_summary(nb_setup *s)
{
    static const char *shape_names[] = { "parallelpiped", "ellipsoidal", "gaussian", "tophat-spot" };
    nb_log(s, "  %s xtal: %.0fx%.0fx%.0f cells\n", shape_names[s->xtal_shape], s->Na, s->Nb, s->Nc);
    nb_log(s, "  wave=%g meters +/- %g%% in %d steps\n", s->lambda0_m, s->dispersion * 100, s->dispsteps);
    if (s->nopolar) nb_log(s, "  polarization effect disabled\n");
    else nb_log(s, "  Kahn polarization factor: %f\n", s->polarization);
    if (s->curved_det) nb_log(s, "  curved detector: all pixels same distance from origin\n");
    if (s->point_pixel) nb_log(s, "  pixel obliquity effect disabled\n");
    nb_log(s, "  incident fluence: %lg photons/m^2\n", s->fluence);
    nb_log(s, "  distance=%lg detsize=%lgx%lg  pixel=%lg meters (%dx%d pixels)\n", s->distance_m,
           s->detsize_f_m, s->detsize_s_m, s->pixel_m, s->fpixels, s->spixels);
    nb_log(s, "  sensor is %lg m thick in %d layers with mu= %lg\n", s->thick_m, s->thicksteps, s->mu_per_m);
    nb_log(s, "  Xbeam=%lg Ybeam=%lg\n", s->Xbeam_m, s->Ybeam_m);
    nb_log(s, "  Fbeam=%lg Sbeam=%lg\n", s->Fbeam_m, s->Sbeam_m);
    nb_log(s, "  Xclose=%lg Yclose=%lg\n", s->Xclose_m, s->Yclose_m);
    nb_log(s, "  Fclose=%lg Sclose=%lg\n", s->Fclose_m, s->Sclose_m);
    nb_log(s, "  DIRECTION_OF_DETECTOR_X-AXIS= %g %g %g\n", s->fdet[0], s->fdet[1], s->fdet[2]);
    nb_log(s, "  DIRECTION_OF_DETECTOR_Y-AXIS= %g %g %g\n", s->sdet[0], s->sdet[1], s->sdet[2]);
    nb_log(s, "  DIRECTION_OF_DETECTOR_Z-AXIS= %g %g %g\n", s->odet[0], s->odet[1], s->odet[2]);
    nb_log(s, "  INCIDENT_BEAM_DIRECTION= %g %g %g\n", s->beam[0], s->beam[1], s->beam[2]);
    nb_log(s, "  spindle ROTATION_AXIS= %g %g %g\n", s->spindle[0], s->spindle[1], s->spindle[2]);
    double normal[3];
    nb_cross(s->beam, s->polar_vec, normal);
    nb_log(s, "  POLARIZATION_PLANE_NORMAL= %g %g %g\n", normal[0], normal[1], normal[2]);
    nb_log(s, "  dials origin= %g %g %g\n", s->dials_origin_mm[0], s->dials_origin_mm[1], s->dials_origin_mm[2]);
    nb_log(s, "  roi: %d < x < %d && %d < y < %d\n", s->roi_xmin, s->roi_xmax, s->roi_ymin, s->roi_ymax);
    nb_log(s, "  hdivrange=%g hdivstep=%g  radians\n", s->hdivrange_rad, s->hdivstep_rad);
    nb_log(s, "  vdivrange=%g vdivstep=%g  radians\n", s->vdivrange_rad, s->vdivstep_rad);
    nb_log(s, "  %d divergence steps\n", s->divsteps);
    nb_log(s, "  %d sources\n", s->n_sources);
    nb_log(s, "  %d mosaic domains over mosaic spread of %g degrees\n", s->mosaic_domains, s->mosaic_spread_rad * NB_RTD);
    nb_log(s, "  %d phi steps from %g to %g degrees\n", s->phisteps, s->phi0_rad * NB_RTD, (s->phi0_rad + s->osc_rad) * NB_RTD);
    nb_log(s, "  %dx%d pixel oversample steps%s%s%s\n", s->oversample, s->oversample,
           s->oversample_thick ? " +thick" : "", s->oversample_polar ? " +polar" : "", s->oversample_omega ? " +omega" : "");
}

int nb_setup_init(const nb_params *p, nb_setup *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    int rc = validate(p, err, errlen);
    if (rc) return rc;
    if ((rc = detector_size(p, s, err, errlen))) return rc;

    double sample_m[3] = { p->xtal_size_mm[0] / 1000, p->xtal_size_mm[1] / 1000, p->xtal_size_mm[2] / 1000 };
    beam_intensity(p, s, sample_m);

    s->lambda0_m = p->lambda_A / 1e10;
    s->polarization = p->polarization;
    s->nopolar = p->nopolar;
    s->curved_det = p->curved_det;
    s->point_pixel = p->point_pixel;
    s->oversample_thick = p->oversample_thick;
    s->oversample_polar = p->oversample_polar;
    s->oversample_omega = p->oversample_omega;
    s->dmin_m = p->dmin_A * 1e-10;
    s->water_m = p->water_um / 1e6;
    s->default_F = p->default_F;
    s->xtal_shape = p->xtal_shape;
    s->fudge = p->fudge;
    s->adc_offset = p->adc_offset;
    s->intfile_scale = p->intfile_scale;
    s->pgm_scale = p->pgm_scale;
    s->seed = -p->seed;

    nb_detector_frame(p, s);
    sampling(p, s);
    nb_log(s, "%s convention selected.\n", convention_name(s->convention));
    nb_detector_place(p, s);

    /* interpolation is chosen from the cell counts as typed, before -xtalsize */
    s->interpolate = p->interpolate;
    if (s->interpolate < 0) {
        if (p->Na <= 2 || p->Nb <= 2 || p->Nc <= 2) {
            nb_log(s, "auto-selected tricubic interpolation of structure factors\n");
            s->interpolate = 1;
        } else {
            nb_log(s, "auto-selected no interpolation\n");
            s->interpolate = 0;
        }
    }

    long misset_seed = -(p->has_misset_seed ? p->misset_seed : p->seed);
    if ((rc = nb_crystal_setup(p, s, &misset_seed, sample_m, err, errlen))) { nb_setup_free(s); return rc; }

    for (int t = 0; t < s->thicksteps; ++t) nb_log(s, "thick%d = %g um\n", t, s->thickstep_m * t * 1e6);
    for (int t = 0; t < s->phisteps; ++t) nb_log(s, "phi%d = %g\n", t, (s->phi0_rad + s->phistep_rad * t) * NB_RTD);

    if ((rc = nb_sources_setup(p, s, err, errlen))) { nb_setup_free(s); return rc; }
    long mosaic_seed = -p->mosaic_seed;
    if ((rc = nb_mosaic_setup(s, &mosaic_seed, err, errlen))) { nb_setup_free(s); return rc; }

    if (s->oversample <= 0) s->oversample = 1;
    s->steps = (long)s->n_sources * s->mosaic_domains * s->phisteps * s->oversample * s->oversample;
    s->subpixel_m = s->pixel_m / s->oversample;

    log_summary(s);

    /* diffuse background of a water layer of the given thickness (density 1, F=2.57 forward) */
    const double water_F = 2.57, water_MW = 18.0, avogadro = 6.02214179e23;
    s->I_bg = water_F * water_F * NB_RE_SQR * s->fluence * s->water_m * s->water_m * s->water_m * 1e6 * avogadro / water_MW;
    return NB_OK;
}

void nb_setup_free(nb_setup *s)
{
    if (!s) return;
    free(s->source_dir);
    free(s->source_weight);
    free(s->source_lambda_m);
    free(s->mosaic_umats);
    free(s->log);
    s->source_dir = s->source_weight = s->source_lambda_m = s->mosaic_umats = NULL;
    s->log = NULL;
    s->log_len = s->log_cap = 0;
}
