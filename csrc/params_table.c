/*
 * params_table.c - the fields of struct nb_params by name.
 *
 * The one table of parameter names: the Python binding (a dict of fields
 * -> nb_params) and the nanobragg-run program (a plan file -> nb_params)
 * both set fields through it.  Every field is here but the `sources`
 * pointer and its count n_sources, which come from an array.
 */
#include <ctype.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "internal.h"

/* names of the enum values, indexed by value (the enums count from 0) */
static const char *const conv_names[] = { "custom", "adxv", "mosflm", "xds", "dials", "denzo", NULL };
static const char *const pivot_names[] = { "beam", "sample", NULL };
static const char *const shape_names[] = { "square", "round", "gauss", "tophat", NULL };
static const char *const misset_names[] = { "none", "angles", "random", NULL };
static const char *const pix0_names[] = { "none", "m", "mm", NULL };

typedef struct {
    nb_field pub;
    size_t offset;
    size_t flag_offset;            /* (size_t)-1: none */
} field_entry;

#define NOFLAG ((size_t)-1)
#define F_(f, kind, n, choices, flag, flag_off) \
    { { #f, kind, n, choices, flag }, offsetof(nb_params, f), flag_off }
#define D(f)      F_(f, NB_FIELD_DOUBLE, 1, NULL, NULL, NOFLAG)
#define DN(f, n)  F_(f, NB_FIELD_DOUBLE, n, NULL, NULL, NOFLAG)
#define I(f)      F_(f, NB_FIELD_INT, 1, NULL, NULL, NOFLAG)
#define IN(f, n)  F_(f, NB_FIELD_INT, n, NULL, NULL, NOFLAG)
#define L(f)      F_(f, NB_FIELD_LONG, 1, NULL, NULL, NOFLAG)
#define E(f, c)   F_(f, NB_FIELD_ENUM, 1, c, NULL, NOFLAG)
#define FLAGGED(f, kind, n, flag) F_(f, kind, n, NULL, #flag, offsetof(nb_params, flag))

static const field_entry fields[] = {
    /* crystal */
    I(has_cell), FLAGGED(cell, NB_FIELD_DOUBLE, 6, has_cell), I(has_amat),
    FLAGGED(amat, NB_FIELD_DOUBLE, 9, has_amat), E(misset_mode, misset_names), DN(misset_deg, 3),
    FLAGGED(misset_seed, NB_FIELD_LONG, 1, has_misset_seed), I(has_misset_seed), D(Na), D(Nb), D(Nc),
    DN(xtal_size_mm, 3), E(xtal_shape, shape_names), D(fudge), D(default_F), I(interpolate),
    /* beam */
    D(lambda_A), D(dispersion_pct), I(dispsteps), D(hdivrange_mrad), D(vdivrange_mrad),
    D(hdivstep_mrad), D(vdivstep_mrad), I(hdivsteps), I(vdivsteps), I(round_div), D(fluence),
    D(flux), D(exposure_s), D(beamsize_mm), D(polarization), I(nopolar),
    /* detector */
    D(distance_mm), D(close_distance_mm), D(pixel_mm), D(detsize_f_mm), D(detsize_s_mm), I(fpixels),
    I(spixels), D(Xbeam_mm), D(Ybeam_mm), D(Xclose_mm), D(Yclose_mm), D(ORGX_px), D(ORGY_px),
    E(pivot, pivot_names), E(convention, conv_names), DN(fdet, 3), DN(sdet, 3), DN(odet, 3), DN(beam, 3),
    DN(polar_vec, 3), DN(spindle, 3), DN(twotheta_axis, 3), I(custom_basis), E(pix0_units, pix0_names),
    DN(pix0, 3), DN(rot_deg, 3), D(twotheta_deg), I(curved_det), I(point_pixel), D(detector_abs_um),
    D(detector_thick_um), I(detector_thicksteps), I(oversample), I(oversample_thick),
    I(oversample_polar), I(oversample_omega), IN(roi, 4), D(dmin_A), D(water_um),
    /* spindle and mosaicity */
    D(phi_deg), D(osc_deg), D(phistep_deg), I(phisteps), D(mosaic_deg), I(mosaic_domains),
    L(mosaic_seed),
    /* noise and output scaling */
    L(seed), D(adc_offset), D(intfile_scale), D(pgm_scale),
};
#undef F_
#undef D
#undef DN
#undef I
#undef IN
#undef L
#undef E
#undef FLAGGED

#define NFIELDS ((int)(sizeof fields / sizeof fields[0]))

/* enums are stored through int pointers */
typedef char enum_is_int_[(sizeof(nb_convention) == sizeof(int) && sizeof(nb_pivot) == sizeof(int)
                           && sizeof(nb_shape) == sizeof(int) && sizeof(nb_misset_mode) == sizeof(int)
                           && sizeof(nb_pix0_units) == sizeof(int)) ? 1 : -1];

int nb_params_nfields(void) { return NFIELDS; }

const nb_field *nb_params_field(int i)
{
    return i >= 0 && i < NFIELDS ? &fields[i].pub : NULL;
}

static const field_entry *find(const char *name)
{
    if (name == NULL) return NULL;
    for (int i = 0; i < NFIELDS; i++)
        if (strcmp(fields[i].pub.name, name) == 0) return &fields[i];
    return NULL;
}

const nb_field *nb_params_find(const char *name)
{
    const field_entry *f = find(name);
    return f ? &f->pub : NULL;
}

int nb_params_enum_value(const nb_field *f, const char *text)
{
    if (f == NULL || f->kind != NB_FIELD_ENUM || text == NULL) return -1;
    for (int v = 0; f->choices[v] != NULL; v++) {
        const char *a = f->choices[v], *b = text;
        while (*a && *b && tolower((unsigned char)*b) == *a) { a++; b++; }
        if (*a == '\0' && *b == '\0') return v;
    }
    return -1;
}

const char *nb_params_enum_name(const nb_field *f, int value)
{
    if (f == NULL || f->kind != NB_FIELD_ENUM || value < 0) return NULL;
    for (int v = 0; f->choices[v] != NULL; v++)
        if (v == value) return f->choices[v];
    return NULL;
}

static void choices_text(const nb_field *f, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int v = 0; f->choices[v] != NULL && n < cap; v++) {
        int k = snprintf(buf + n, cap - n, "%s%s", v ? "|" : "", f->choices[v]);
        if (k < 0) break;
        n += (size_t)k;
    }
}

static size_t elem_size(nb_field_kind k)
{
    return k == NB_FIELD_DOUBLE ? sizeof(double) : k == NB_FIELD_LONG ? sizeof(long) : sizeof(int);
}

/* the integer as the field stores it, or an error */
static int check_integer(const field_entry *fe, long long v, int index, char *err, size_t errlen)
{
    const nb_field *f = &fe->pub;
    char where[16] = "";
    if (f->count > 1) snprintf(where, sizeof where, "[%d]", index);
    if (f->kind == NB_FIELD_INT && (v < INT_MIN || v > INT_MAX)) {
        nb_set_error(err, errlen, "parameter '%s%s': integer out of range", f->name, where);
        return NB_EINVAL;
    }
    if (f->kind == NB_FIELD_LONG && (v < LONG_MIN || v > LONG_MAX)) {
        nb_set_error(err, errlen, "parameter '%s%s': integer out of range", f->name, where);
        return NB_EINVAL;
    }
    if (f->kind == NB_FIELD_ENUM && nb_params_enum_name(f, v < INT_MIN || v > INT_MAX ? -1 : (int)v) == NULL) {
        char choices[128];
        choices_text(f, choices, sizeof choices);
        nb_set_error(err, errlen, "parameter '%s': expected one of %s, got %lld", f->name, choices, v);
        return NB_EINVAL;
    }
    return NB_OK;
}

static int check_count(const nb_field *f, int n, char *err, size_t errlen)
{
    if (n == f->count) return NB_OK;
    if (f->count == 1)
        nb_set_error(err, errlen, "parameter '%s': expected 1 value, got %d", f->name, n);
    else
        nb_set_error(err, errlen, "parameter '%s': expected %d values, got %d", f->name, f->count, n);
    return NB_EINVAL;
}

static void store(nb_params *p, const field_entry *fe, const unsigned char *tmp)
{
    memcpy((char *)p + fe->offset, tmp, elem_size(fe->pub.kind) * (size_t)fe->pub.count);
    if (fe->flag_offset != NOFLAG) *(int *)((char *)p + fe->flag_offset) = 1;
}

/* the field called name, or NULL with the message */
static const field_entry *find_field(const char *name, char *err, size_t errlen)
{
    const field_entry *fe = find(name);
    if (fe == NULL) nb_set_error(err, errlen, "unknown parameter '%s'", name ? name : "(null)");
    return fe;
}

/* n values, and some given at all */
static int check_values(const nb_field *f, int have_values, int n, char *err, size_t errlen)
{
    int rc = check_count(f, n, err, errlen);
    if (rc != NB_OK) return rc;
    if (!have_values) {
        nb_set_error(err, errlen, "parameter '%s': no values", f->name);
        return NB_EINVAL;
    }
    return NB_OK;
}

static void put_integer(nb_field_kind k, long long v, unsigned char *dst)
{
    if (k == NB_FIELD_LONG) { long x = (long)v; memcpy(dst, &x, sizeof x); }
    else { int x = (int)v; memcpy(dst, &x, sizeof x); }
}

int nb_params_set_integers(nb_params *p, const char *name, const long long *values, int n,
                           char *err, size_t errlen)
{
    const field_entry *fe = find_field(name, err, errlen);
    if (fe == NULL) return NB_EINVAL;
    const nb_field *f = &fe->pub;
    int rc = check_values(f, values != NULL, n, err, errlen);
    if (rc != NB_OK) return rc;
    unsigned char tmp[16 * sizeof(double)];     /* the largest field: 9 doubles */
    for (int i = 0; i < n; i++) {
        if (f->kind == NB_FIELD_DOUBLE) {
            double d = (double)values[i];
            memcpy(tmp + i * sizeof d, &d, sizeof d);
            continue;
        }
        rc = check_integer(fe, values[i], i, err, errlen);
        if (rc != NB_OK) return rc;
        put_integer(f->kind, values[i], tmp + (size_t)i * elem_size(f->kind));
    }
    store(p, fe, tmp);
    return NB_OK;
}

int nb_params_set(nb_params *p, const char *name, const double *values, int n, const char *enum_text,
                  char *err, size_t errlen)
{
    const field_entry *fe = find_field(name, err, errlen);
    if (fe == NULL) return NB_EINVAL;
    const nb_field *f = &fe->pub;
    if (enum_text != NULL) {
        if (f->kind != NB_FIELD_ENUM) {
            nb_set_error(err, errlen, "parameter '%s': expected a number, got '%s'", f->name, enum_text);
            return NB_EINVAL;
        }
        int v = nb_params_enum_value(f, enum_text);
        if (v < 0) {
            char choices[128];
            choices_text(f, choices, sizeof choices);
            nb_set_error(err, errlen, "parameter '%s': expected one of %s, got '%s'", f->name, choices, enum_text);
            return NB_EINVAL;
        }
        unsigned char tmp[sizeof(int)];
        put_integer(NB_FIELD_ENUM, v, tmp);
        store(p, fe, tmp);
        return NB_OK;
    }
    int rc = check_values(f, values != NULL, n, err, errlen);
    if (rc != NB_OK) return rc;
    if (f->kind == NB_FIELD_DOUBLE) {
        unsigned char tmp[16 * sizeof(double)];
        memcpy(tmp, values, (size_t)n * sizeof(double));
        store(p, fe, tmp);
        return NB_OK;
    }
    /* integer fields: integral values only, converted exactly */
    long long ints[16];
    for (int i = 0; i < n; i++) {
        double d = values[i];
        if (!(d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
            char where[16] = "";
            if (f->count > 1) snprintf(where, sizeof where, "[%d]", i);
            nb_set_error(err, errlen, "parameter '%s%s': expected an integer, got %g", f->name, where, d);
            return NB_EINVAL;
        }
        ints[i] = (long long)d;
    }
    return nb_params_set_integers(p, name, ints, n, err, errlen);
}
