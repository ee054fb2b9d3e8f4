/*
 * smv.c - SMV (ADSC-style) and PGM headers, and a bounds-checked SMV reader.
 *
 * An SMV file is a text header of HEADER_BYTES bytes, "{\nKEY=value;\n...}\f"
 * padded with spaces, followed by width*height unsigned 16-bit pixels in the
 * byte order named by BYTE_ORDER.  The writer reproduces the reference's
 * header byte for byte; the reader looks keywords up as the reference does
 * (last occurrence wins) but treats every inconsistency as an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#ifndef M_1_PI
#define M_1_PI 0.318309886183790671537767526745028724
#endif

#define SMV_MAGIC "{\nHEADER_BYTES="
/* sanity limits for a header we will read */
#define SMV_MAX_HEADER_BYTES (1 << 20)
#define SMV_MAX_DIMENSION 1000000

static const char *host_byte_order(void)
{
    const uint16_t probe = 1;
    unsigned char first;
    memcpy(&first, &probe, 1);
    return first ? "little_endian" : "big_endian";
}

/* ------------------------------------------------------------ writer ---- */

/* append printf-style text, never past cap (len keeps counting) */
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = *len < cap ? cap - *len : 0;
    int n = vsnprintf(room ? buf + *len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) *len += (size_t)n;
}

/* the first keys of every header the programs write */
static void put_prologue(char *text, size_t cap, size_t *n, const char *type)
{
    put(text, cap, n, "{\nHEADER_BYTES=%d;\nDIM=2;\nBYTE_ORDER=%s;\nTYPE=%s;\n",
        NB_SMV_HEADER_BYTES, host_byte_order(), type);
}

/* the closing keys, then spaces up to the nominal size (a longer text
 * stays unpadded, as the reference's fprintf loop leaves it) */
static size_t finish_header(char *text, size_t cap, size_t n, char *out, size_t outlen)
{
    put(text, cap, &n, "DETECTOR_SN=000;\nBEAMLINE=fake;\n}\f");
    if (n >= cap) n = cap - 1;      /* cannot happen with %g fields; stay in bounds */
    size_t total = n < NB_SMV_HEADER_BYTES ? NB_SMV_HEADER_BYTES : n;
    for (size_t i = 0; i < outlen && i < total; i++) out[i] = i < n ? text[i] : ' ';
    return total;
}

size_t nb_smv_header_text(const nb_setup *s, char *out, size_t outlen)
{
    const double mm = 1000.0, deg = NB_RTD;
    const double px = s->pixel_m;
    char text[2048];
    size_t n = 0, cap = sizeof text;

    put_prologue(text, cap, &n, "unsigned_short");
    put(text, cap, &n, "SIZE1=%d;\nSIZE2=%d;\n", s->fpixels, s->spixels);
    put(text, cap, &n, "PIXEL_SIZE=%g;\nDISTANCE=%g;\n", px * mm, s->distance_m * mm);
    put(text, cap, &n, "WAVELENGTH=%g;\n", s->lambda0_m * 1e10);
    put(text, cap, &n, "BEAM_CENTER_X=%g;\nBEAM_CENTER_Y=%g;\n", s->Xbeam_m * mm, s->Ybeam_m * mm);
    put(text, cap, &n, "ADXV_CENTER_X=%g;\nADXV_CENTER_Y=%g;\n",
        s->Fbeam_m * mm, (s->detsize_s_m - s->Sbeam_m) * mm);
    put(text, cap, &n, "MOSFLM_CENTER_X=%g;\nMOSFLM_CENTER_Y=%g;\n",
        (s->Sbeam_m - 0.5 * px) * mm, (s->Fbeam_m - 0.5 * px) * mm);
    put(text, cap, &n, "DENZO_X_BEAM=%g;\nDENZO_Y_BEAM=%g;\n", s->Sbeam_m * mm, s->Fbeam_m * mm);
    /* no semicolon on this line, as in the reference */
    put(text, cap, &n, "DIALS_ORIGIN=%g,%g,%g\n",
        s->dials_origin_mm[0], s->dials_origin_mm[1], s->dials_origin_mm[2]);
    put(text, cap, &n, "XDS_ORGX=%g;\nXDS_ORGY=%g;\n", s->ORGX_px, s->ORGY_px);
    put(text, cap, &n, "CLOSE_DISTANCE=%g;\n", s->close_distance_m * mm);
    put(text, cap, &n, "PHI=%g;\nOSC_START=%g;\nOSC_RANGE=%g;\n",
        s->phi0_rad * deg, s->phi0_rad * deg, s->osc_rad * deg);
    put(text, cap, &n, "TWOTHETA=%g;\n", s->twotheta_rad * deg);
    return finish_header(text, cap, n, out, outlen);
}

size_t nb_smv_header_fields(const char *type, const nb_smv_field *fields, int nfields, char *out, size_t outlen)
{
    char text[4096];
    size_t n = 0, cap = sizeof text;
    put_prologue(text, cap, &n, type);
    for (int i = 0; i < nfields; i++) {
        if (fields[i].integer) put(text, cap, &n, "%s=%d;\n", fields[i].key, (int)fields[i].value);
        else put(text, cap, &n, "%s=%g;\n", fields[i].key, fields[i].value);
    }
    return finish_header(text, cap, n, out, outlen);
}

void nb_smv_header(const nb_setup *s, char header[NB_SMV_HEADER_BYTES])
{
    nb_smv_header_text(s, header, NB_SMV_HEADER_BYTES);
}

size_t nb_pgm_header_size(int width, int height, double pgm_scale, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "P5\n%d %d\n# pixels scaled by %g\n255\n", width, height, pgm_scale);
    return n > 0 ? (size_t)n : 0;
}

size_t nb_pgm_header(const nb_setup *s, double pgm_scale, char *out, size_t outlen)
{
    return nb_pgm_header_size(s->fpixels, s->spixels, pgm_scale, out, outlen);
}

/* ------------------------------------------------------------ reader ---- */

/* keyword lookup in a NUL-terminated header: the last (non-overlapping)
 * occurrence, then the number after the next '='.  Absent: NAN; no '='
 * after it: 0, as the reference. */
static double header_value(const char *text, const char *keyword)
{
    size_t klen = strlen(keyword);
    if (klen == 0) return NAN;
    const char *after = NULL, *hit = text;
    while ((hit = strstr(hit, keyword)) != NULL) {
        hit += klen;
        after = hit;
    }
    if (after == NULL) return NAN;
    const char *eq = strchr(after, '=');
    if (eq == NULL) return 0.0;
    return atof(eq + 1);
}

double nb_smv_value(const nb_smv *smv, const char *keyword)
{
    if (smv == NULL || smv->header == NULL || keyword == NULL) return NAN;
    return header_value(smv->header, keyword);
}

/* copy the first n bytes as a C string (an embedded NUL ends the text, as
 * the reference's string functions would) */
static char *header_text(const unsigned char *buf, size_t n)
{
    char *t = malloc(n + 1);
    if (t == NULL) return NULL;
    memcpy(t, buf, n);
    t[n] = '\0';
    return t;
}

/* a header number that must be a positive count no larger than limit */
static int count_value(double v, double limit, int *out)
{
    if (!(v >= 1.0 && v <= limit)) return 0;
    *out = (int)v;                  /* truncation, as the reference's cast */
    return 1;
}

/* HEADER_BYTES, looked up in the first 512 bytes as the reference does */
static int read_header_size(const unsigned char *buf, size_t len, int *size, char *err, size_t errlen)
{
    size_t probe = len < NB_SMV_HEADER_BYTES ? len : NB_SMV_HEADER_BYTES;
    char *t = header_text(buf, probe);
    if (t == NULL) { nb_set_error(err, errlen, "SMV: out of memory"); return NB_ENOMEM; }
    double v = header_value(t, "HEADER_BYTES");
    free(t);
    if (!count_value(v, SMV_MAX_HEADER_BYTES, size) || (size_t)*size < strlen(SMV_MAGIC)) {
        nb_set_error(err, errlen, "SMV: invalid HEADER_BYTES (%g)", v);
        return NB_EFORMAT;
    }
    if ((size_t)*size > len) {
        nb_set_error(err, errlen, "SMV: file is %zu bytes, shorter than its %d-byte header", len, *size);
        return NB_EFORMAT;
    }
    return NB_OK;
}

/* byte order from the last BYTE_ORDER=; swap unless it names the host's */
static int read_byte_order(const char *text, int *swap, char *err, size_t errlen)
{
    static const char key[] = "BYTE_ORDER=";
    const char *value = NULL, *hit = text;
    while ((hit = strstr(hit, key)) != NULL) {
        hit += sizeof key - 1;
        value = hit;
    }
    if (value == NULL) {
        nb_set_error(err, errlen, "SMV: header has no BYTE_ORDER");
        return NB_EFORMAT;
    }
    /* the reference compares 10 characters: "little_end" / "big_endian" */
    *swap = strncmp(host_byte_order(), value, 10) != 0;
    return NB_OK;
}

/* SIZE1 x SIZE2, or DETECTOR_DIMENSIONS for both when SIZE1 is 0/absent */
static int read_dimensions(const char *text, int *width, int *height, char *err, size_t errlen)
{
    double w = header_value(text, "SIZE1"), h = header_value(text, "SIZE2");
    if (isnan(w) || (w >= 0.0 && w < 1.0)) {
        w = h = header_value(text, "DETECTOR_DIMENSIONS");
    }
    if (!count_value(w, SMV_MAX_DIMENSION, width) || !count_value(h, SMV_MAX_DIMENSION, height)) {
        nb_set_error(err, errlen, "SMV: invalid image size %g x %g (SIZE1/SIZE2)", w, h);
        return NB_EFORMAT;
    }
    return NB_OK;
}

static void copy_pixels(const unsigned char *src, size_t count, int swap, uint16_t *dst)
{
    for (size_t i = 0; i < count; i++) {
        unsigned char b0 = src[2 * i], b1 = src[2 * i + 1];
        if (swap) { unsigned char t = b0; b0 = b1; b1 = t; }
        uint16_t v;
        unsigned char pair[2] = { b0, b1 };
        memcpy(&v, pair, 2);
        dst[i] = v;
    }
}

int nb_smv_parse(const unsigned char *buf, size_t len, nb_smv *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t magic_len = strlen(SMV_MAGIC);
    if (buf == NULL || len < magic_len || memcmp(buf, SMV_MAGIC, magic_len) != 0) {
        nb_set_error(err, errlen, "SMV: not an SMV/ADSC image (no \"{ HEADER_BYTES=\" at the start)");
        return NB_EFORMAT;
    }
    int rc = read_header_size(buf, len, &out->header_bytes, err, errlen);
    if (rc != NB_OK) return rc;
    out->header = header_text(buf, (size_t)out->header_bytes);
    if (out->header == NULL) {
        nb_set_error(err, errlen, "SMV: out of memory");
        return NB_ENOMEM;
    }
    rc = read_byte_order(out->header, &out->swap_bytes, err, errlen);
    if (rc == NB_OK) rc = read_dimensions(out->header, &out->width, &out->height, err, errlen);
    if (rc != NB_OK) { nb_smv_free(out); return rc; }

    /* pixels start at the header size rounded down to whole 16-bit words */
    size_t offset = (size_t)out->header_bytes / 2 * 2;
    size_t pixels = (size_t)out->width * (size_t)out->height;
    if ((len - offset) / 2 < pixels) {
        nb_set_error(err, errlen, "SMV: %d x %d image needs %zu data bytes, file has %zu",
                     out->width, out->height, 2 * pixels, len - offset);
        nb_smv_free(out);
        return NB_EFORMAT;
    }
    out->data = malloc(pixels * sizeof *out->data);
    if (out->data == NULL) {
        nb_set_error(err, errlen, "SMV: out of memory for %zu pixels", pixels);
        nb_smv_free(out);
        return NB_ENOMEM;
    }
    copy_pixels(buf + offset, pixels, out->swap_bytes, out->data);
    return NB_OK;
}

void nb_smv_free(nb_smv *smv)
{
    if (smv == NULL) return;
    free(smv->header);
    free(smv->data);
    memset(smv, 0, sizeof *smv);
}
