/*
 * hkl.c - structure factors on a dense (h, k, l) grid, from text or rows,
 * and the Fdump.bin cache.
 *
 * The grid spans [h_min, h_max] x [k_min, k_max] x [l_min, l_max] plus one
 * extra plane at the high end of every axis (the reference allocates it and
 * it stays 0); nb_hkl_index() gives the layout, l fastest.  Fdump.bin is an
 * ASCII line "h_min h_max k_min k_max l_min l_max\n\f" followed by the whole
 * grid, padding included, as native doubles.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* refuse grids of more cells than this (8.6 GB of doubles): a range of
 * about 1000 indices along every axis, far beyond any real data set, and
 * small enough that a typo in one index cannot exhaust the memory */
#define HKL_MAX_CELLS 1073741824.0
/* Miller indices beyond this cannot be meant (and keep int arithmetic safe) */
#define HKL_MAX_INDEX 1000000000.0

void nb_hkl_free(nb_hkl *g)
{
    if (g == NULL) return;
    free(g->F);
    memset(g, 0, sizeof *g);
}

/* cells along each axis, padding plane included (0 if the range is empty) */
static double padded_cells(const nb_hkl *g)
{
    double nh = (double)g->h_max - g->h_min + 2.0;
    double nk = (double)g->k_max - g->k_min + 2.0;
    double nl = (double)g->l_max - g->l_min + 2.0;
    if (nh <= 1.0 || nk <= 1.0 || nl <= 1.0) return 0.0;
    return nh * nk * nl;
}

/* allocate the grid for the bounds in g; interior cells get default_F when
 * it is non-zero, the padding planes stay 0 */
static int alloc_grid(nb_hkl *g, double default_F, char *err, size_t errlen)
{
    double cells = padded_cells(g);
    if (cells > HKL_MAX_CELLS) {
        nb_set_error(err, errlen, "HKL grid h %d..%d, k %d..%d, l %d..%d needs %.0f cells (%.3g GB): too large "
                     "(at most %.0f cells)", g->h_min, g->h_max, g->k_min, g->k_max, g->l_min, g->l_max, cells,
                     cells * 8e-9, HKL_MAX_CELLS);
        return NB_EINVAL;
    }
    g->F = calloc((size_t)cells, sizeof *g->F);
    if (g->F == NULL) {
        nb_set_error(err, errlen, "HKL grid: cannot allocate %.0f cells (%.3g GB)", cells, cells * 8e-9);
        return NB_ENOMEM;
    }
    if (default_F != 0.0) {
        for (int h = g->h_min; h <= g->h_max; h++)
            for (int k = g->k_min; k <= g->k_max; k++) {
                double *row = g->F + nb_hkl_index(g, h, k, g->l_min);
                for (int l = 0; l <= g->l_max - g->l_min; l++) row[l] = default_F;
            }
    }
    return NB_OK;
}

static int is_miller_index(double x)
{
    return x == floor(x) && fabs(x) <= HKL_MAX_INDEX;
}

int nb_hkl_from_rows(const double *rows, size_t n, double default_F, nb_hkl *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (n == 0) return NB_OK;           /* no grid: default_F everywhere */
    if (rows == NULL) {
        nb_set_error(err, errlen, "HKL: %zu rows but no data", n);
        return NB_EINVAL;
    }
    int lo[3] = { INT_MAX, INT_MAX, INT_MAX }, hi[3] = { INT_MIN, INT_MIN, INT_MIN };
    for (size_t r = 0; r < n; r++) {
        for (int a = 0; a < 3; a++) {
            double x = rows[4 * r + a];
            if (!is_miller_index(x)) {
                nb_set_error(err, errlen, "HKL row %zu: %c = %g is not an integral Miller index",
                             r + 1, "hkl"[a], x);
                return NB_EINVAL;
            }
            int i = (int)x;
            if (i < lo[a]) lo[a] = i;
            if (i > hi[a]) hi[a] = i;
        }
        if (!isfinite(rows[4 * r + 3])) {
            nb_set_error(err, errlen, "HKL row %zu: F = %g is not a finite number", r + 1, rows[4 * r + 3]);
            return NB_EINVAL;
        }
    }
    out->h_min = lo[0]; out->h_max = hi[0];
    out->k_min = lo[1]; out->k_max = hi[1];
    out->l_min = lo[2]; out->l_max = hi[2];
    int rc = alloc_grid(out, default_F, err, errlen);
    if (rc != NB_OK) { memset(out, 0, sizeof *out); return rc; }
    for (size_t r = 0; r < n; r++) {     /* a repeated hkl: the last one wins */
        const double *row = rows + 4 * r;
        out->F[nb_hkl_index(out, (int)row[0], (int)row[1], (int)row[2])] = row[3];
    }
    out->count = (long)n;
    return NB_OK;
}

/* ------------------------------------------------------------ text ------ */

static int ends_number(char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* A plain decimal of at most 15 digits ([+-]digits[.digits]) is an exact
 * integer over an exact power of ten, so one division rounds it as strtod
 * does (Clinger's fast path); anything else is left to strtod.  Returns
 * the characters read, 0 if not such a number. */
#define FAST_DIGITS 15
static size_t plain_decimal(const char *p, double *value)
{
    static const double pow10[FAST_DIGITS + 1] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7,
                                                   1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15 };
    const char *q = p;
    int neg = *q == '-';
    if (*q == '-' || *q == '+') ++q;
    long long mantissa = 0;
    int digits = 0, frac = -1;
    for (;; ++q) {
        if (*q >= '0' && *q <= '9') {
            if (++digits > FAST_DIGITS) return 0;
            mantissa = 10 * mantissa + (*q - '0');
            if (frac >= 0) ++frac;
        } else if (*q == '.' && frac < 0) {
            frac = 0;
        } else {
            break;
        }
    }
    if (digits == 0 || !ends_number(*q)) return 0;
    double v = (double)mantissa;
    if (frac > 0) v /= pow10[frac];
    *value = neg ? -v : v;
    return (size_t)(q - p);
}

/* one number of a data line; it must end at white space or the line end */
static int take_number(const char **p, double *value)
{
    size_t fast = plain_decimal(*p, value);
    if (fast) {
        *p += fast;
        return 1;
    }
    char *end;
    errno = 0;
    *value = strtod(*p, &end);
    if (end == *p) return 0;
    if (!ends_number(*end)) return 0;
    *p = end;
    return 1;
}

static const char *skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\v' || *p == '\f') p++;
    return p;
}

/* parse "h k l F [ignored...]" from one NUL-terminated line into row[4];
 * returns 1 for data, 0 for blank/comment, -1 (message set) for bad input */
static int parse_line(const char *line, long lineno, double row[4], char *err, size_t errlen)
{
    static const char *const names[4] = { "h", "k", "l", "F" };
    const char *p = skip_blanks(line);
    if (*p == '\0' || *p == '#') return 0;
    for (int c = 0; c < 4; c++) {
        p = skip_blanks(p);
        if (*p == '\0') {
            nb_set_error(err, errlen, "line %ld: expected 4 numbers (h k l F), found %d", lineno, c);
            return -1;
        }
        if (!take_number(&p, &row[c])) {
            nb_set_error(err, errlen, "line %ld: %s is not a number", lineno, names[c]);
            return -1;
        }
        if (c < 3 && !is_miller_index(row[c])) {
            nb_set_error(err, errlen, "line %ld: %s = %g is not an integral Miller index",
                         lineno, names[c], row[c]);
            return -1;
        }
        if (c == 3 && !isfinite(row[c])) {
            nb_set_error(err, errlen, "line %ld: F = %g is not a finite number", lineno, row[c]);
            return -1;
        }
    }
    return 1;
}

/* growable n x 4 array of rows */
typedef struct { double *v; size_t n, cap; } row_list;

static int push_row(row_list *rl, const double row[4])
{
    if (rl->n == rl->cap) {
        size_t cap = rl->cap ? 2 * rl->cap : 1024;
        double *v = realloc(rl->v, cap * 4 * sizeof *v);
        if (v == NULL) return 0;
        rl->v = v; rl->cap = cap;
    }
    memcpy(rl->v + 4 * rl->n, row, 4 * sizeof *row);
    rl->n++;
    return 1;
}

/* walk the text line by line (copied so that strtod sees a terminator);
 * a line ends at LF, CR LF or a lone CR (old Mac files: the reference's
 * fscanf reads those too, CR being white space to it) */
static int collect_rows(char *text, size_t len, row_list *rl, char *err, size_t errlen)
{
    long lineno = 0;
    char *line = text, *stop = text + len;
    while (line < stop) {
        char *eol = line;
        while (eol < stop && *eol != '\n' && *eol != '\r') eol++;
        char *next = eol + 1;
        if (eol < stop && *eol == '\r' && next < stop && *next == '\n') next++;
        *eol = '\0';                  /* text[len] exists: the copy is terminated */
        ++lineno;
        if (strlen(line) != (size_t)(eol - line)) {
            nb_set_error(err, errlen, "line %ld: unexpected NUL byte (binary file?)", lineno);
            return NB_EFORMAT;
        }
        double row[4];
        int kind = parse_line(line, lineno, row, err, errlen);
        if (kind < 0) return NB_EFORMAT;
        if (kind > 0 && !push_row(rl, row)) {
            nb_set_error(err, errlen, "line %ld: out of memory", lineno);
            return NB_ENOMEM;
        }
        line = next;
    }
    return NB_OK;
}

int nb_hkl_parse_text(const char *text, size_t len, double default_F, nb_hkl *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        nb_set_error(err, errlen, "HKL: out of memory for %zu bytes of text", len);
        return NB_ENOMEM;
    }
    if (len) memcpy(copy, text, len);
    copy[len] = '\0';
    row_list rl = { NULL, 0, 0 };
    int rc = collect_rows(copy, len, &rl, err, errlen);
    free(copy);
    if (rc == NB_OK && rl.n == 0) {
        nb_set_error(err, errlen, "HKL: no reflections (expected lines of h k l F)");
        rc = NB_EFORMAT;
    }
    if (rc == NB_OK) rc = nb_hkl_from_rows(rl.v, rl.n, default_F, out, err, errlen);
    if (rc == NB_OK) {
        out->read_as = NB_HKL_TEXT;
        memcpy(out->last_row, rl.v + 4 * (rl.n - 1), sizeof out->last_row);
    }
    free(rl.v);
    return rc;
}

/* ------------------------------------------------------------ Fdump ----- */

static int fdump_header(const nb_hkl *g, char *buf, size_t cap)
{
    return snprintf(buf, cap, "%d %d %d %d %d %d\n\f",
                    g->h_min, g->h_max, g->k_min, g->k_max, g->l_min, g->l_max);
}

/* an empty grid (no reflections, no array) has no cache: size 0 */
size_t nb_fdump_size(const nb_hkl *g)
{
    if (g->F == NULL) return 0;
    char head[96];
    int n = fdump_header(g, head, sizeof head);
    return (size_t)(n > 0 ? n : 0) + (size_t)padded_cells(g) * sizeof(double);
}

void nb_fdump_encode(const nb_hkl *g, unsigned char *out)
{
    if (g->F == NULL) return;
    char head[96];
    int n = fdump_header(g, head, sizeof head);
    if (n < 0) n = 0;
    memcpy(out, head, (size_t)n);
    size_t bytes = (size_t)padded_cells(g) * sizeof(double);
    memcpy(out + n, g->F, bytes);
}

/* the six bounds: integers separated by blanks, then exactly "\n\f" */
static int parse_fdump_header(const unsigned char *buf, size_t len, int bound[6], size_t *data_at)
{
    char head[128];
    size_t n = len < sizeof head - 1 ? len : sizeof head - 1;
    memcpy(head, buf, n);
    head[n] = '\0';
    const char *p = head;
    for (int i = 0; i < 6; i++) {
        while (*p == ' ' || *p == '\t') p++;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno != 0 || v < -HKL_MAX_INDEX || v > HKL_MAX_INDEX) return 0;
        if (i < 5 && *end != ' ' && *end != '\t') return 0;
        bound[i] = (int)v;
        p = end;
    }
    if (p[0] != '\n' || p[1] != '\f') return 0;
    *data_at = (size_t)(p - head) + 2;
    return 1;
}

int nb_fdump_parse(const unsigned char *buf, size_t len, nb_hkl *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int b[6];
    size_t data_at = 0;
    if (buf == NULL || !parse_fdump_header(buf, len, b, &data_at)) {
        nb_set_error(err, errlen, "Fdump: not an Fdump.bin file (expected \"h_min h_max k_min k_max l_min l_max\" then a form feed)");
        return NB_EFORMAT;
    }
    if (b[1] < b[0] || b[3] < b[2] || b[5] < b[4]) {
        nb_set_error(err, errlen, "Fdump: inverted index ranges h %d..%d, k %d..%d, l %d..%d",
                     b[0], b[1], b[2], b[3], b[4], b[5]);
        return NB_EFORMAT;
    }
    nb_hkl g = { b[0], b[1], b[2], b[3], b[4], b[5], 0, NULL };
    double cells = padded_cells(&g);
    if (cells > HKL_MAX_CELLS) {
        nb_set_error(err, errlen, "Fdump: grid h %d..%d, k %d..%d, l %d..%d of %.0f cells (%.3g GB) is too large "
                     "(at most %.0f cells)", b[0], b[1], b[2], b[3], b[4], b[5], cells, cells * 8e-9, HKL_MAX_CELLS);
        return NB_EFORMAT;
    }
    size_t want = (size_t)cells * sizeof(double);
    if (len - data_at != want) {
        nb_set_error(err, errlen, "Fdump: %zu data bytes for a grid that needs %zu (truncated or foreign file)",
                     len - data_at, want);
        return NB_EFORMAT;
    }
    g.F = malloc(want);
    if (g.F == NULL) {
        nb_set_error(err, errlen, "Fdump: cannot allocate %zu bytes", want);
        return NB_ENOMEM;
    }
    memcpy(g.F, buf + data_at, want);
    /* the reference counts the interior cells as reflections */
    g.count = (long)(g.h_max - g.h_min + 1) * (g.k_max - g.k_min + 1) * (g.l_max - g.l_min + 1);
    g.read_as = NB_HKL_FDUMP;
    *out = g;
    return NB_OK;
}
