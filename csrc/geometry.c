/* geometry.c - rotations and the detector's placement in the lab frame.
 *
 * The detector is a plane spanned by the fast (fdet) and slow (sdet) pixel
 * axes with normal odet; pix0 is the vector from the crystal to the corner
 * of the first pixel.  Each convention (MOSFLM, XDS, ...) fixes the lab
 * frame and how the user's beam centre maps onto the fast/slow axes.  The
 * pivot decides what stays put when the detector rotates: the direct-beam
 * spot (BEAM) or the point of closest approach to the sample (SAMPLE).
 */
#include <float.h>
#include <string.h>
#include "internal.h"
#include "stages.h"

/* Rotate about x, then y, then z (right-handed); a zero angle is skipped. */
void nb_rotate_xyz(const double *v, double *out, double rx, double ry, double rz)
{
    double x = v[0], y = v[1], z = v[2];
    if (rx != 0) {
        double c = cos(rx), s = sin(rx), ny = y*c - z*s, nz = y*s + z*c;
        y = ny; z = nz;
    }
    if (ry != 0) {
        double c = cos(ry), s = sin(ry), nx = x*c + z*s, nz = -x*s + z*c;
        x = nx; z = nz;
    }
    if (rz != 0) {
        double c = cos(rz), s = sin(rz), nx = x*c - y*s, ny = x*s + y*c;
        x = nx; y = ny;
    }
    out[0] = x; out[1] = y; out[2] = z;
}

/* Rodrigues' rotation of v by phi about a unit axis. */
void nb_rotate_axis(const double *v, double *out, const double *axis, double phi)
{
    double s = sin(phi), c = cos(phi);
    double along = (axis[0]*v[0] + axis[1]*v[1] + axis[2]*v[2]) * (1.0 - c);
    double r0 = axis[0]*along + v[0]*c + (axis[1]*v[2] - axis[2]*v[1])*s;
    double r1 = axis[1]*along + v[1]*c + (axis[2]*v[0] - axis[0]*v[2])*s;
    double r2 = axis[2]*along + v[2]*c + (axis[0]*v[1] - axis[1]*v[0])*s;
    out[0] = r0; out[1] = r1; out[2] = r2;
}

void nb_rotate_umat(const double *v, double *out, const double *u)
{
    double r0 = u[0]*v[0] + u[1]*v[1] + u[2]*v[2];
    double r1 = u[3]*v[0] + u[4]*v[1] + u[5]*v[2];
    double r2 = u[6]*v[0] + u[7]*v[1] + u[8]*v[2];
    out[0] = r0; out[1] = r1; out[2] = r2;
}

/* The lab-frame axes of a convention: beam, fast, slow, normal, 2theta axis,
 * polarization and spindle. */
typedef struct { double beam[3], f[3], s[3], o[3], twotheta[3], polar[3], spindle[3]; } frame;

static const frame FRAME_ADXV = { {0,0,1}, {1,0,0}, {0,-1,0}, {0,0,1}, {-1,0,0}, {1,0,0}, {1,0,0} };
static const frame FRAME_MOSFLM = { {1,0,0}, {0,0,1}, {0,-1,0}, {1,0,0}, {0,0,-1}, {0,0,1}, {0,0,1} };
static const frame FRAME_XDS = { {0,0,1}, {1,0,0}, {0,1,0}, {0,0,1}, {1,0,0}, {1,0,0}, {1,0,0} };
static const frame FRAME_DIALS = { {0,0,1}, {1,0,0}, {0,1,0}, {0,0,1}, {0,1,0}, {0,1,0}, {0,1,0} };

static void use_frame(nb_setup *s, const frame *fr)
{
    memcpy(s->beam, fr->beam, sizeof s->beam);
    memcpy(s->fdet, fr->f, sizeof s->fdet);
    memcpy(s->sdet, fr->s, sizeof s->sdet);
    memcpy(s->odet, fr->o, sizeof s->odet);
    memcpy(s->twotheta_axis, fr->twotheta, sizeof s->twotheta_axis);
    memcpy(s->polar_vec, fr->polar, sizeof s->polar_vec);
    memcpy(s->spindle, fr->spindle, sizeof s->spindle);
}

static double or_default(double v, double fallback) { return isnan(v) ? fallback : v; }

void nb_detector_frame(const nb_params *p, nb_setup *s)
{
    const double pix = s->pixel_m;
    s->Fclose_m = isnan(p->ORGX_px) ? s->detsize_f_m / 2.0 : (p->ORGX_px - 0.5) * pix;
    s->Sclose_m = isnan(p->ORGY_px) ? s->detsize_s_m / 2.0 : (p->ORGY_px - 0.5) * pix;
    s->Xclose_m = or_default(p->Xclose_mm / 1000.0, s->Fclose_m);
    s->Yclose_m = or_default(p->Yclose_mm / 1000.0, s->Sclose_m);
    s->Fbeam_m = s->Fclose_m;
    s->Sbeam_m = s->Sclose_m;
    s->Xbeam_m = p->Xbeam_mm / 1000.0;
    s->Ybeam_m = p->Ybeam_mm / 1000.0;

    s->roi_xmin = p->roi[0] < 0 ? 0 : p->roi[0];
    s->roi_xmax = p->roi[1] < 0 ? s->fpixels : p->roi[1];
    s->roi_ymin = p->roi[2] < 0 ? 0 : p->roi[2];
    s->roi_ymax = p->roi[3] < 0 ? s->spixels : p->roi[3];

    /* the user's vectors; a named convention replaces them all below */
    frame user;
    memcpy(user.beam, p->beam, sizeof user.beam);
    memcpy(user.f, p->fdet, sizeof user.f);
    memcpy(user.s, p->sdet, sizeof user.s);
    memcpy(user.o, p->odet, sizeof user.o);
    memcpy(user.twotheta, p->twotheta_axis, sizeof user.twotheta);
    memcpy(user.polar, p->polar_vec, sizeof user.polar);
    memcpy(user.spindle, p->spindle, sizeof user.spindle);
    use_frame(s, &user);
    s->convention = p->convention;
    s->pivot = p->pivot;

    switch (s->convention) {
    case NB_CONV_ADXV:   /* first pixel at (0,0); the image's y runs up */
        s->Xbeam_m = or_default(s->Xbeam_m, (s->detsize_f_m + pix) / 2.0);
        s->Ybeam_m = or_default(s->Ybeam_m, (s->detsize_s_m - pix) / 2.0);
        use_frame(s, &FRAME_ADXV);
        s->Fbeam_m = s->Xbeam_m;
        s->Sbeam_m = s->detsize_s_m - s->Ybeam_m;
        s->pivot = NB_PIVOT_BEAM;
        break;
    case NB_CONV_MOSFLM: /* beam centre measured to pixel centres: half a pixel shift */
    case NB_CONV_DENZO:  /* as MOSFLM without the half-pixel shift */
    {
        double shift = s->convention == NB_CONV_MOSFLM ? 0.5 * pix : 0.0;
        s->Xbeam_m = or_default(s->Xbeam_m, (s->detsize_s_m + pix) / 2.0);
        s->Ybeam_m = or_default(s->Ybeam_m, (s->detsize_f_m + pix) / 2.0);
        use_frame(s, &FRAME_MOSFLM);
        s->Fbeam_m = s->Ybeam_m + shift;
        s->Sbeam_m = s->Xbeam_m + shift;
        s->pivot = NB_PIVOT_BEAM;
        break;
    }
    case NB_CONV_XDS:
    case NB_CONV_DIALS:
        s->Xbeam_m = or_default(s->Xbeam_m, s->Xclose_m);
        s->Ybeam_m = or_default(s->Ybeam_m, s->Yclose_m);
        use_frame(s, s->convention == NB_CONV_XDS ? &FRAME_XDS : &FRAME_DIALS);
        s->Fbeam_m = s->Xbeam_m;
        s->Sbeam_m = s->Ybeam_m;
        s->pivot = NB_PIVOT_SAMPLE;
        break;
    default:             /* CUSTOM: the user's vectors, beam centre on the fast/slow axes */
        s->Xbeam_m = or_default(s->Xbeam_m, s->Xclose_m);
        s->Ybeam_m = or_default(s->Ybeam_m, s->Yclose_m);
        s->Fbeam_m = s->Fclose_m = s->Xbeam_m;
        s->Sbeam_m = s->Sclose_m = s->Ybeam_m;
        break;
    }

    nb_unitize(s->beam, s->beam);
    nb_unitize(s->fdet, s->fdet);
    nb_unitize(s->sdet, s->sdet);
    /* a normal that was not already of unit length is rebuilt from the plane's axes */
    if (nb_unitize(s->odet, s->odet) != 1.0) {
        nb_log(s, "WARNING: auto-generating odet_vector\n");
        nb_cross(s->fdet, s->sdet, s->odet);
        nb_unitize(s->odet, s->odet);
    }
    nb_unitize(s->polar_vec, s->polar_vec);
    nb_unitize(s->spindle, s->spindle);
    nb_cross(s->beam, s->polar_vec, s->vert_vec);
    nb_unitize(s->vert_vec, s->vert_vec);
}

static void rotate_detector_vector(const nb_params *p, double *v, double twotheta_rad, const double *axis)
{
    nb_rotate_xyz(v, v, p->rot_deg[0] / NB_RTD, p->rot_deg[1] / NB_RTD, p->rot_deg[2] / NB_RTD);
    nb_rotate_axis(v, v, axis, twotheta_rad);
}

void nb_detector_place(const nb_params *p, nb_setup *s)
{
    const double rx = p->rot_deg[0] / NB_RTD, ry = p->rot_deg[1] / NB_RTD, rz = p->rot_deg[2] / NB_RTD;
    s->twotheta_rad = p->twotheta_deg / NB_RTD;

    /* cosine between the beam and the rotated detector normal */
    double normal[3];
    nb_rotate_xyz(s->odet, normal, rx, ry, rz);
    double ratio = nb_dot(s->beam, normal);
    if (ratio == 0.0) ratio = DBL_MIN;
    double distance = p->distance_mm / 1000.0;
    double close = p->close_distance_mm / 1000.0;
    if (isnan(close)) close = fabs(ratio * distance);
    distance = close / ratio;

    if (s->pivot == NB_PIVOT_SAMPLE) {
        nb_log(s, "pivoting detector around sample\n");
        for (int i = 0; i < 3; ++i)
            s->pix0_m[i] = -s->Fclose_m * s->fdet[i] - s->Sclose_m * s->sdet[i] + close * s->odet[i];
        rotate_detector_vector(p, s->pix0_m, s->twotheta_rad, s->twotheta_axis);
    }
    rotate_detector_vector(p, s->fdet, s->twotheta_rad, s->twotheta_axis);
    rotate_detector_vector(p, s->sdet, s->twotheta_rad, s->twotheta_axis);
    rotate_detector_vector(p, s->odet, s->twotheta_rad, s->twotheta_axis);
    if (s->pivot == NB_PIVOT_BEAM) {
        nb_log(s, "pivoting detector around direct beam spot\n");
        for (int i = 0; i < 3; ++i)
            s->pix0_m[i] = -s->Fbeam_m * s->fdet[i] - s->Sbeam_m * s->sdet[i] + distance * s->beam[i];
    }

    /* An explicit first-pixel position wins, unless the user also gave the
     * detector axes: then the axes define the frame and pix0 is ignored. */
    int pix0_given = p->pix0_units != NB_PIX0_NONE;
    if (pix0_given && p->custom_basis) {
        s->warn_pix0_ignored = 1;
        nb_log(s, "WARNING: -pix0_vector ignored because custom detector vectors (-fdet/-sdet/-odet_vector) are given\n");
    } else if (pix0_given) {
        double to_m = p->pix0_units == NB_PIX0_MILLIMETRES ? 1e-3 : 1.0;
        for (int i = 0; i < 3; ++i) s->pix0_m[i] = p->pix0[i] * to_m;
    }

    /* closest approach, direct-beam spot and distance in the final frame */
    s->Fclose_m = -nb_dot(s->pix0_m, s->fdet);
    s->Sclose_m = -nb_dot(s->pix0_m, s->sdet);
    s->close_distance_m = nb_dot(s->pix0_m, s->odet);
    double to_spot[3];
    for (int i = 0; i < 3; ++i) to_spot[i] = s->close_distance_m / ratio * s->beam[i] - s->pix0_m[i];
    s->Fbeam_m = nb_dot(s->fdet, to_spot);
    s->Sbeam_m = nb_dot(s->sdet, to_spot);
    s->distance_m = s->close_distance_m / ratio;
    if (pix0_given && !p->custom_basis) {
        /* the header's beam centre follows the placed detector (CUSTOM: X=F, Y=S) */
        s->Xbeam_m = s->Fbeam_m;
        s->Ybeam_m = s->Sbeam_m;
    }

    s->ORGX_px = s->Fclose_m / s->pixel_m + 0.5;
    s->ORGY_px = s->Sclose_m / s->pixel_m + 0.5;
    /* the first pixel in DIALS's lab axes, which are our z, y and -x */
    s->dials_origin_mm[0] = 1000.0 * s->pix0_m[2];
    s->dials_origin_mm[1] = 1000.0 * s->pix0_m[1];
    s->dials_origin_mm[2] = 1000.0 * -s->pix0_m[0];

    nb_log(s, "XDS incident beam: %g %g %g\n", nb_dot(s->beam, s->fdet), nb_dot(s->beam, s->sdet), nb_dot(s->beam, s->odet));
}
