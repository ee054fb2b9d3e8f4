/* kernel.c - the sum over sub-pixels, sensor layers, sources, phi steps and
 * mosaic domains that makes each pixel.
 *
 * For each sub-pixel and source the scattering vector S = (d - i)/lambda is
 * fixed; each crystal orientation (phi step x mosaic domain) then gives
 * fractional Miller indices h = a.S, k = b.S, l = c.S, the lattice transform
 * F_latt of an N-cell crystal and the unit-cell structure factor F_cell.
 * The pixel collects F_cell^2 F_latt^2 and is scaled by r_e^2 * fluence /
 * steps, the solid angle, polarization and the sensor's capture fraction.
 *
 * Two paths compute the same sum: a vector-friendly one for the usual
 * parallelepiped crystal with nearest-neighbour structure factors, and a
 * step-by-step one (the reference's order) for the other spot shapes and for
 * tricubic interpolation, whose fall-back depends on that order.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"
#include "stages.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* crystal orientations, phi-major then mosaic domain, as structure of arrays */
typedef struct {
    int n;
    double *ax, *ay, *az, *bx, *by, *bz, *cx, *cy, *cz;
    double *block;
} orientations;

static int orientations_build(const nb_setup *s, orientations *o)
{
    o->n = s->phisteps * s->mosaic_domains;
    o->block = malloc((size_t)o->n * 9 * sizeof(double));
    if (!o->block) return NB_ENOMEM;
    double **cols[9] = { &o->ax, &o->ay, &o->az, &o->bx, &o->by, &o->bz, &o->cx, &o->cy, &o->cz };
    for (int i = 0; i < 9; ++i) *cols[i] = o->block + (size_t)i * o->n;
    int k = 0;
    for (int t = 0; t < s->phisteps; ++t) {
        /* every step rotates from the unrotated crystal, including phi = 0 */
        double phi = s->phi0_rad + s->phistep_rad * t;
        double ap[3], bp[3], cp[3];
        memcpy(ap, s->a0, sizeof ap); memcpy(bp, s->b0, sizeof bp); memcpy(cp, s->c0, sizeof cp);
        if (phi != 0.0) {
            nb_rotate_axis(s->a0, ap, s->spindle, phi);
            nb_rotate_axis(s->b0, bp, s->spindle, phi);
            nb_rotate_axis(s->c0, cp, s->spindle, phi);
        }
        for (int d = 0; d < s->mosaic_domains; ++d, ++k) {
            double a[3], b[3], c[3];
            memcpy(a, ap, sizeof a); memcpy(b, bp, sizeof b); memcpy(c, cp, sizeof c);
            if (s->mosaic_spread_rad > 0.0) {
                const double *u = s->mosaic_umats + 9 * d;
                nb_rotate_umat(ap, a, u);
                nb_rotate_umat(bp, b, u);
                nb_rotate_umat(cp, c, u);
            }
            o->ax[k] = a[0]; o->ay[k] = a[1]; o->az[k] = a[2];
            o->bx[k] = b[0]; o->by[k] = b[1]; o->bz[k] = b[2];
            o->cx[k] = c[0]; o->cy[k] = c[1]; o->cz[k] = c[2];
        }
    }
    return NB_OK;
}

/* Scattering vectors of one or more pixels, each with the weight of the
 * per-step corrections that are oversampled (1 otherwise). */
typedef struct {
    int cap, n;
    double *Sx, *Sy, *Sz, *w, *acc, *latt_sqr, *node;   /* node: grid offset of the nearest node, -1 off grid */
} samples;

static int samples_alloc(samples *b, int cap)
{
    b->cap = cap;
    b->n = 0;
    b->Sx = malloc((size_t)cap * 7 * sizeof(double));
    if (!b->Sx) return NB_ENOMEM;
    b->Sy = b->Sx + cap; b->Sz = b->Sy + cap; b->w = b->Sz + cap; b->acc = b->w + cap; b->latt_sqr = b->acc + cap;
    b->node = b->latt_sqr + cap;
    return NB_OK;
}

/* The corrections applied once per pixel, each taken where the reference
 * takes it: solid angle at the first sub-pixel, polarization at the first
 * source that passes the resolution cut, capture fraction at the first
 * sub-pixel of the last sensor layer. */
typedef struct { double omega, polar, capture, omega_sum; } pixel_factors;

/* Sub-pixel centre in the lab frame (m). */
static void subpixel_position(const nb_setup *s, double Fdet, double Sdet, double Odet, double *pos)
{
    nb_detector_point(s->fdet, s->sdet, s->odet, s->pix0_m, s->beam, s->distance_m, s->curved_det,
                      Fdet, Sdet, Odet, pos);
}

/* Append the pixel's samples to b; returns its once-per-pixel factors. */
static pixel_factors sample_pixel(const nb_setup *s, int fpixel, int spixel, samples *b)
{
    pixel_factors pf = { 0.0, s->nopolar ? 1.0 : 0.0, 0.0, 0.0 };
    const int ov = s->oversample;
    const double sub = s->subpixel_m;
    for (int t = 0; t < s->thicksteps; ++t) {
        double Odet = t * s->thickstep_m;
        pf.capture = s->thick_m == 0.0 ? 1.0 : 0.0;
        for (int ss = 0; ss < ov; ++ss)
            for (int sf = 0; sf < ov; ++sf) {
                double Fdet = sub * (fpixel * ov + sf) + sub / 2.0;
                double Sdet = sub * (spixel * ov + ss) + sub / 2.0;
                double pos[3], d[3];
                subpixel_position(s, Fdet, Sdet, Odet, pos);
                double airpath = nb_unitize(pos, d);
                if (pf.omega == 0.0 || s->oversample_omega) {
                    /* (pixel/R)^2 times the obliquity cos = close_distance/R */
                    pf.omega = s->pixel_m * s->pixel_m / airpath / airpath * s->close_distance_m / airpath;
                    if (s->point_pixel) pf.omega = 1.0 / airpath / airpath;
                }
                pf.omega_sum += pf.omega;
                if (pf.capture == 0.0 || s->oversample_thick) {
                    /* Beer-Lambert absorption within this layer along the oblique path */
                    double parallax = nb_dot(d, s->odet);
                    pf.capture = exp(-t * s->thickstep_m * s->mu_per_m / parallax)
                               - exp(-(t + 1) * s->thickstep_m * s->mu_per_m / parallax);
                }
                for (int src = 0; src < s->n_sources; ++src) {
                    const double *dir = s->source_dir + 3 * src;
                    double incident[3] = { -dir[0], -dir[1], -dir[2] };
                    double lambda = s->source_lambda_m[src];
                    double S[3] = { (d[0] - incident[0]) / lambda, (d[1] - incident[1]) / lambda, (d[2] - incident[2]) / lambda };
                    double stol = 0.5 * nb_norm(S);
                    if (s->dmin_m > 0.0 && stol > 0.0 && s->dmin_m > 0.5 / stol) continue;
                    if (pf.polar == 0.0 || s->oversample_polar)
                        pf.polar = nb_polarization_factor(s->polarization, incident, d, s->polar_vec);
                    double w = 1.0;
                    if (s->oversample_thick) w *= pf.capture;
                    if (s->oversample_polar) w *= pf.polar;
                    if (s->oversample_omega) w *= pf.omega;
                    int j = b->n++;
                    b->Sx[j] = S[0]; b->Sy[j] = S[1]; b->Sz[j] = S[2]; b->w[j] = w;
                }
            }
    }
    return pf;
}

/* sin(pi x) for |x| <= 1/2: least-squares polynomial in x^2 on Chebyshev
 * nodes, within 7e-16 relative of sin(pi x) over the whole interval */
/* a*b + c, fused where the CPU has FMA: one rounding instead of two, and
 * the polynomial below is the kernel's hottest arithmetic */
#ifdef __FMA__
#define NB_MADD(a, b, c) fma((a), (b), (c))
#else
#define NB_MADD(a, b, c) ((a) * (b) + (c))
#endif

static inline double sinpi_reduced(double x)
{
    double x2 = x * x;
    double p = -2.11430466839432414e-05;
    p = NB_MADD(p, x2, 4.65995641506354087e-04);
    p = NB_MADD(p, x2, -7.37036746437713750e-03);
    p = NB_MADD(p, x2, 8.21458793916767654e-02);
    p = NB_MADD(p, x2, -5.99264528880760206e-01);
    p = NB_MADD(p, x2, 2.55016403986452644e+00);
    p = NB_MADD(p, x2, -5.16771278004983436e+00);
    p = NB_MADD(p, x2, 3.14159265358979178e+00);
    return x * p;
}

/* The grating transform of N cells is sin(N pi h) / sin(pi h).  With
 * t = h - round(h) it equals +-sin(pi u) / sin(pi t), u = N t - round(N t):
 * the reduced arguments keep full precision next to the Bragg peak, and as
 * only the square is used the sign is dropped.  At t = 0 the limit is N.
 * Numerator and denominator come back separately so that the three axes
 * share one division. */
typedef struct { double num, den; } ratio;

static inline ratio lattice_factor_parts(double h, double N)
{
    double t = h - rint(h);
    double u = N * t;
    u -= rint(u);
    double den = sinpi_reduced(t), num = sinpi_reduced(u);
    ratio r = { den != 0.0 ? num : N, den != 0.0 ? den : 1.0 };
    return r;
}

/* ceil(x - 0.5), the reference's rounding to the nearest Miller index, from
 * rint() so that the vectoriser can use it */
static inline double nearest_index(double x)
{
    double y = x - 0.5, r = rint(y);
    return r < y ? r + 1.0 : r;
}

/* Reference forms of the spot shapes. */
static double sincg(double x, double N) { return x == 0.0 ? N : sin(x * N) / sin(x); }
static double sinc3(double x) { return x == 0.0 ? 1.0 : 3.0 * (sin(x) / x - cos(x)) / (x * x); }

/* Cancellation and progress: every thread checks the cancel word before
 * each block of pixels; only the calling thread (OpenMP thread 0) calls the
 * poll callback, so a front end may run its own code (signal handlers,
 * progress bars) there. */
typedef struct row_result row_result;
typedef struct {
    const nb_render_opts *opts;
    int cancel;                   /* read and written with __atomic builtins */
    double next_poll_s;           /* thread 0 only */
    int rows_done_prefix;         /* thread 0 only: every row before it is finished */
    long fallback_at;             /* thread 0 only: raster index of the first interpolation fall-back, or -1 */
    unsigned char *row_done;      /* spixels flags, set once a row is finished */
    const row_result *rows;       /* the first pass's per-row results */
} render_ctl;

typedef struct {
    const nb_setup *s;
    const nb_hkl *hkl;
    const orientations *o;
    int have_grid;
    render_ctl *ctl;
} kernel_ctx;

static double nearest_F(const kernel_ctx *k, int h0, int k0, int l0)
{
    const nb_hkl *g = k->hkl;
    if (k->have_grid && h0 <= g->h_max && h0 >= g->h_min && k0 <= g->k_max && k0 >= g->k_min && l0 <= g->l_max && l0 >= g->l_min)
        return g->F[nb_hkl_index(g, h0, k0, l0)];
    return k->s->default_F;
}

/* 4-point Lagrange polynomial through (x0..x3, y0..y3) at x */
static double lagrange4(const double *xa, const double *ya, double x)
{
    double sum = 0.0;
    for (int i = 0; i < 4; ++i) {
        double term = ya[i];
        double num = 1.0, den = 1.0;
        for (int j = 0; j < 4; ++j)
            if (j != i) { num *= x - xa[j]; den *= xa[i] - xa[j]; }
        sum += num * term / den;
    }
    return sum;
}

/* Tricubic interpolation of F on the 4x4x4 grid points around (h,k,l):
 * along l first, then k, then h. */
static double tricubic_F(const kernel_ctx *k, double h, double kk, double l)
{
    const nb_hkl *g = k->hkl;
    int hf = (int)floor(h), kf = (int)floor(kk), lf = (int)floor(l);
    double hx[4], kx[4], lx[4], along_k[4], along_l[4], plane[4];
    for (int i = 0; i < 4; ++i) { hx[i] = hf - 1 + i; kx[i] = kf - 1 + i; lx[i] = lf - 1 + i; }
    for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) {
            for (int m = 0; m < 4; ++m) along_l[m] = g->F[nb_hkl_index(g, hf - 1 + i, kf - 1 + j, lf - 1 + m)];
            along_k[j] = lagrange4(lx, along_l, l);
        }
        plane[i] = lagrange4(kx, along_k, kk);
    }
    return lagrange4(hx, plane, h);
}

/* Does the interpolation stencil around (h,k,l) leave the grid? */
static int stencil_outside(const nb_hkl *g, double h, double k, double l)
{
    int hr = g->h_max - g->h_min + 1, kr = g->k_max - g->k_min + 1, lr = g->l_max - g->l_min + 1;
    return (h - g->h_min + 3) > hr || (h - 2) < g->h_min || (k - g->k_min + 3) > kr || (k - 2) < g->k_min ||
           (l - g->l_min + 3) > lr || (l - 2) < g->l_min;
}

typedef struct {
    int hit;
    double hkl[3];
    int hkl0[3];
} fallback_note;

/* The reference's step order: samples, then phi steps, then mosaic domains.
 * *interp turns off for good at the first stencil that leaves the grid. */
static double pixel_sum_in_order(const kernel_ctx *k, const samples *b, int *interp, fallback_note *fb)
{
    const nb_setup *s = k->s;
    const orientations *o = k->o;
    double I = s->I_bg;
    const double Na = s->Na, Nb = s->Nb, Nc = s->Nc;
    for (int j = 0; j < b->n; ++j) {
        for (int q = 0; q < o->n; ++q) {
            double h = o->ax[q] * b->Sx[j] + o->ay[q] * b->Sy[j] + o->az[q] * b->Sz[j];
            double kk = o->bx[q] * b->Sx[j] + o->by[q] * b->Sy[j] + o->bz[q] * b->Sz[j];
            double l = o->cx[q] * b->Sx[j] + o->cy[q] * b->Sy[j] + o->cz[q] * b->Sz[j];
            int h0 = (int)ceil(h - 0.5), k0 = (int)ceil(kk - 0.5), l0 = (int)ceil(l - 0.5);
            double F_latt = 1.0;
            if (s->xtal_shape == NB_SHAPE_SQUARE) {
                if (Na > 1) F_latt *= sincg(M_PI * h, Na);
                if (Nb > 1) F_latt *= sincg(M_PI * kk, Nb);
                if (Nc > 1) F_latt *= sincg(M_PI * l, Nc);
            } else {
                /* distance to the nearest node, in the unrotated reciprocal frame (1/A) */
                double dh = h - h0, dk = kk - k0, dl = l - l0;
                double dx = dh * s->a_star[0] + dk * s->b_star[0] + dl * s->c_star[0];
                double dy = dh * s->a_star[1] + dk * s->b_star[1] + dl * s->c_star[1];
                double dz = dh * s->a_star[2] + dk * s->b_star[2] + dl * s->c_star[2];
                double rad_star_sqr = (dx * dx + dy * dy + dz * dz) * Na * Na * Nb * Nb * Nc * Nc;
                if (s->xtal_shape == NB_SHAPE_ROUND) {
                    double hrad_sqr = dh * dh * Na * Na + dk * dk * Nb * Nb + dl * dl * Nc * Nc;
                    /* sphere transform, scaled to the cube's volume */
                    F_latt = Na * Nb * Nc * 0.723601254558268 * sinc3(M_PI * sqrt(hrad_sqr * s->fudge));
                } else if (s->xtal_shape == NB_SHAPE_GAUSS) {
                    F_latt = Na * Nb * Nc * exp(-(rad_star_sqr / 0.63 * s->fudge));
                } else {
                    F_latt = Na * Nb * Nc * (rad_star_sqr * s->fudge < 0.3969);
                }
            }
            if (F_latt == 0.0 && s->water_m == 0.0) continue;

            double F_cell;
            if (*interp && stencil_outside(k->hkl, h, kk, l)) {
                if (!fb->hit) {
                    fb->hit = 1;
                    fb->hkl[0] = h; fb->hkl[1] = kk; fb->hkl[2] = l;
                    fb->hkl0[0] = h0; fb->hkl0[1] = k0; fb->hkl0[2] = l0;
                }
                *interp = 0;
            }
            F_cell = *interp ? tricubic_F(k, h, kk, l) : nearest_F(k, h0, k0, l0);
            I += F_cell * F_cell * F_latt * F_latt * b->w[j];
        }
    }
    return I;
}

/* Nearest-node structure factor grid as seen by the vector loop. */
typedef struct {
    double hmin, hmax, kmin, kmax, lmin, lmax, hstride, kstride, default_F;
    const double *F;
} grid_view;

/* acc[j] += F_latt^2 F_cell^2 of one orientation for every sample j.  The
 * arithmetic runs as one vector loop; the structure-factor look-up, a
 * gather, runs as a second, scalar one. */
#ifdef __GNUC__
__attribute__((noinline))
#endif
static void accumulate_orientation(int n, const double *restrict Sx, const double *restrict Sy, const double *restrict Sz,
                                   const double *restrict abc, double Na, double Nb, double Nc,
                                   const grid_view *gv, double *restrict latt_sqr, double *restrict node,
                                   double *restrict acc)
{
    const double ax = abc[0], ay = abc[1], az = abc[2], bx = abc[3], by = abc[4], bz = abc[5];
    const double cx = abc[6], cy = abc[7], cz = abc[8];
    const double hmin = gv->hmin, hmax = gv->hmax, kmin = gv->kmin, kmax = gv->kmax, lmin = gv->lmin, lmax = gv->lmax;
    const double hstride = gv->hstride, kstride = gv->kstride;
    for (int j = 0; j < n; ++j) {
        double h = ax * Sx[j] + ay * Sy[j] + az * Sz[j];
        double kk = bx * Sx[j] + by * Sy[j] + bz * Sz[j];
        double l = cx * Sx[j] + cy * Sy[j] + cz * Sz[j];
        ratio fa = lattice_factor_parts(h, Na), fb = lattice_factor_parts(kk, Nb), fc = lattice_factor_parts(l, Nc);
        double latt = (fa.num * fb.num * fc.num) / (fa.den * fb.den * fc.den);
        double h0 = nearest_index(h), k0 = nearest_index(kk), l0 = nearest_index(l);
        int inside = (h0 >= hmin) & (h0 <= hmax) & (k0 >= kmin) & (k0 <= kmax) & (l0 >= lmin) & (l0 <= lmax);
        latt_sqr[j] = latt * latt;
        node[j] = inside ? (h0 - hmin) * hstride + (k0 - kmin) * kstride + (l0 - lmin) : -1.0;
    }
    const double *restrict F = gv->F;
    const double default_F = gv->default_F;
    for (int j = 0; j < n; ++j) {
        double Fc = node[j] >= 0 ? F[(long)node[j]] : default_F;
        acc[j] += latt_sqr[j] * Fc * Fc;
    }
}

/* F_latt^2 F_cell^2 summed over orientations, for every sample at once. */
static void accumulate_fast(const kernel_ctx *k, samples *b)
{
    const nb_setup *s = k->s;
    const orientations *o = k->o;
    const nb_hkl *g = k->hkl;
    grid_view gv = { 0, -1, 0, -1, 0, -1, 0, 0, s->default_F, &s->default_F };
    if (k->have_grid) {
        gv.hmin = g->h_min; gv.hmax = g->h_max; gv.kmin = g->k_min; gv.kmax = g->k_max;
        gv.lmin = g->l_min; gv.lmax = g->l_max;
        gv.kstride = (double)(g->l_max - g->l_min + 2);
        gv.hstride = (double)(g->k_max - g->k_min + 2) * gv.kstride;
        gv.F = g->F;
    }
    for (int j = 0; j < b->n; ++j) b->acc[j] = 0.0;
    for (int q = 0; q < o->n; ++q) {
        double abc[9] = { o->ax[q], o->ay[q], o->az[q], o->bx[q], o->by[q], o->bz[q], o->cx[q], o->cy[q], o->cz[q] };
        accumulate_orientation(b->n, b->Sx, b->Sy, b->Sz, abc, s->Na, s->Nb, s->Nc, &gv, b->latt_sqr, b->node, b->acc);
    }
}

static int use_fast_path(const nb_setup *s, int interp)
{
    return s->xtal_shape == NB_SHAPE_SQUARE && !interp;
}

static float pixel_value(const nb_setup *s, double I, const pixel_factors *pf)
{
    double v = NB_RE_SQR * s->fluence * I / (double)s->steps;
    if (!s->oversample_thick) v *= pf->capture;
    if (!s->oversample_polar) v *= pf->polar;
    if (!s->oversample_omega) v *= pf->omega;
    return (float)v;
}

static int pixel_wanted(const nb_setup *s, const uint16_t *mask, int fp, int sp)
{
    if (!nb_in_roi(s, fp, sp)) return 0;
    return !mask || mask[(size_t)sp * s->fpixels + fp] != 0;
}

struct row_result {
    int first_fallback_fp;        /* -1: none in this row */
    fallback_note note;
    double omega_sum;
};

static double wall_seconds(void)
{
#ifdef _OPENMP
    return omp_get_wtime();
#else
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
#endif
}

static int calling_thread(void)
{
#ifdef _OPENMP
    return omp_get_thread_num() == 0;
#else
    return 1;
#endif
}

/* Pixels finished in raster order.  The count stops at the first pixel
 * whose interpolation fell back until the render is over, so that a front
 * end reports progress up to there, then the fall-back, then the rest: the
 * order in which the reference prints them. */
static long pixels_done_in_order(const nb_setup *s, render_ctl *c)
{
    while (c->fallback_at < 0 && c->rows_done_prefix < s->spixels &&
           __atomic_load_n(&c->row_done[c->rows_done_prefix], __ATOMIC_ACQUIRE)) {
        int fp = c->rows[c->rows_done_prefix].first_fallback_fp;
        if (fp >= 0) c->fallback_at = (long)c->rows_done_prefix * s->fpixels + fp;
        else ++c->rows_done_prefix;
    }
    return c->fallback_at >= 0 ? c->fallback_at : (long)c->rows_done_prefix * s->fpixels;
}

/* Non-zero once the render is cancelled.  Cheap: one atomic load, and on
 * the calling thread a clock read. */
static int render_cancelled(const kernel_ctx *k)
{
    render_ctl *c = k->ctl;
    if (__atomic_load_n(&c->cancel, __ATOMIC_RELAXED)) return 1;
    if (!c->opts || !c->opts->poll || !calling_thread()) return 0;
    double now = wall_seconds();
    if (now < c->next_poll_s) return 0;
    c->next_poll_s = now + NB_POLL_INTERVAL_S;
    long total = (long)k->s->spixels * k->s->fpixels;
    if (c->opts->poll(c->opts->poll_ctx, pixels_done_in_order(k->s, c), total) != 0) {
        __atomic_store_n(&c->cancel, 1, __ATOMIC_RELAXED);
        return 1;
    }
    return 0;
}

/* Render pixels fp_start.. of one row.  interp0: interpolation on at entry. */
static void render_row(const kernel_ctx *k, const uint16_t *mask, int sp, int fp_start, int interp0,
                       int block, samples *b, pixel_factors *pfs, int *pix_n, float *image, row_result *rr)
{
    const nb_setup *s = k->s;
    const int fast = use_fast_path(s, interp0);
    for (int f0 = fp_start; f0 < s->fpixels; f0 += block) {
        if (render_cancelled(k)) return;
        int f1 = f0 + block < s->fpixels ? f0 + block : s->fpixels;
        b->n = 0;
        for (int fp = f0; fp < f1; ++fp) {
            int start = b->n;
            if (pixel_wanted(s, mask, fp, sp)) {
                pfs[fp - f0] = sample_pixel(s, fp, sp, b);
                rr->omega_sum += pfs[fp - f0].omega_sum;
                pix_n[fp - f0] = b->n - start;
            } else {
                pix_n[fp - f0] = -1;
            }
            if (!fast && pix_n[fp - f0] >= 0) {
                /* step-by-step path: one pixel at a time, in raster order */
                samples one = *b;
                one.Sx += start; one.Sy += start; one.Sz += start; one.w += start; one.acc += start;
                one.n = pix_n[fp - f0];
                int interp = interp0;
                fallback_note fb = { 0, { 0, 0, 0 }, { 0, 0, 0 } };
                double I = pixel_sum_in_order(k, &one, &interp, &fb);
                if (fb.hit && rr->first_fallback_fp < 0) {
                    rr->first_fallback_fp = fp;
                    rr->note = fb;
                }
                image[(size_t)sp * s->fpixels + fp] = pixel_value(s, I, &pfs[fp - f0]);
                b->n = 0;
            }
        }
        if (!fast) continue;
        accumulate_fast(k, b);
        int j = 0;
        for (int fp = f0; fp < f1; ++fp) {
            int m = pix_n[fp - f0];
            if (m < 0) continue;
            double I = s->I_bg;
            for (int e = 0; e < m; ++e, ++j) I += b->acc[j] * b->w[j];
            image[(size_t)sp * s->fpixels + fp] = pixel_value(s, I, &pfs[fp - f0]);
        }
    }
}

/* Waking a second thread costs more than a small image takes to render
 * (tens of microseconds, far more on a busy machine), so small jobs stay on
 * one; the image does not depend on the choice. */
static int threads_to_use(const nb_render_opts *opts, double work_steps)
{
#ifdef _OPENMP
    int n = opts && opts->nthreads > 0 ? opts->nthreads : omp_get_max_threads();
    /* more threads than processors buys nothing, and a runaway request
     * (OMP_NUM_THREADS=5000) can fail inside the OpenMP runtime */
    int cap = NB_MAX_THREADS_PER_CPU * omp_get_num_procs();
    if (n > cap) n = cap;
    if (n < 1) n = 1;
    return (work_steps < 2.0e5 && !(opts && opts->exact_threads)) ? 1 : n;
#else
    (void)opts; (void)work_steps;
    return 1;
#endif
}

/* Render rows [sp0, sp1): row sp0 from fp0 on, the others whole. */
static int render_rows(const kernel_ctx *k, const uint16_t *mask, int sp0, int fp0, int sp1, int interp0,
                       float *image, row_result *rows, const nb_render_opts *opts)
{
    const nb_setup *s = k->s;
    long per_pixel = (long)s->thicksteps * s->oversample * s->oversample * s->n_sources;
    int block = per_pixel >= 2048 ? 1 : (int)(2048 / per_pixel);
    if (block > 64) block = 64;
    int failed = 0;
    double work = (double)per_pixel * k->o->n * s->fpixels * (double)(sp1 - sp0);
#pragma omp parallel num_threads(threads_to_use(opts, work)) reduction(|:failed)
    {
        samples b;
        pixel_factors *pfs = malloc((size_t)block * sizeof *pfs);
        int *pix_n = malloc((size_t)block * sizeof *pix_n);
        int ok = samples_alloc(&b, (int)(per_pixel * block)) == NB_OK && pfs && pix_n;
        if (!ok) failed = 1;
#pragma omp for schedule(dynamic, 1)
        for (int sp = sp0; sp < sp1; ++sp) {
            if (ok && nb_in_roi(s, s->roi_xmin, sp)) {   /* the row crosses the ROI */
                render_row(k, mask, sp, sp == sp0 ? fp0 : 0, interp0, block, &b, pfs, pix_n, image, &rows[sp]);
                if (render_cancelled(k)) continue;
            }
            __atomic_store_n(&k->ctl->row_done[sp], 1, __ATOMIC_RELEASE);
        }
        free(b.Sx);
        free(pfs);
        free(pix_n);
    }
    if (failed) return NB_ENOMEM;
    return __atomic_load_n(&k->ctl->cancel, __ATOMIC_RELAXED) ? NB_ECANCELLED : NB_OK;
}

static void compute_stats(const nb_setup *s, const uint16_t *mask, const float *image, nb_stats *st)
{
    const int ov = s->oversample;
    double sum = 0.0, sumsqr = 0.0;
    long n = 0;
    st->max_I = 0.0;
    st->min_I = 0.0;
    for (int sp = 0; sp < s->spixels; ++sp)
        for (int fp = 0; fp < s->fpixels; ++fp) {
            if (!pixel_wanted(s, mask, fp, sp)) continue;
            double v = image[(size_t)sp * s->fpixels + fp];
            if (!isfinite(v)) ++st->nonfinite_pixels;
            if (n == 0 || v < st->min_I) st->min_I = v;
            if (v > st->max_I) {
                /* reported at the centre of the pixel's last sub-pixel */
                st->max_I = v;
                st->max_I_x_m = s->subpixel_m * (fp * ov + ov - 1) + s->subpixel_m / 2.0;
                st->max_I_y_m = s->subpixel_m * (sp * ov + ov - 1) + s->subpixel_m / 2.0;
            }
            sum += v;
            sumsqr += v * v;
            ++n;
        }
    st->pixels_rendered = n;
    long denom = n <= 0 ? 1 : n;
    st->mean = sum / denom;
    if (n <= 1) n = 2;
    st->rms = sqrt(sumsqr / (n - 1));
    /* the deviation runs over the whole ROI, masked pixels (zero) included */
    double dev = 0.0;
    long m = 0;
    for (int sp = 0; sp < s->spixels; ++sp)
        for (int fp = 0; fp < s->fpixels; ++fp) {
            if (!nb_in_roi(s, fp, sp)) continue;
            double d = image[(size_t)sp * s->fpixels + fp] - st->mean;
            dev += d * d;
            ++m;
        }
    if (m <= 1) m = 2;
    st->rmsd = sqrt(dev / (m - 1));
}

int nb_render(const nb_setup *s, const nb_hkl *hkl, const uint16_t *mask, float *image,
              nb_stats *stats, const nb_render_opts *opts, char *err, size_t errlen)
{
    memset(stats, 0, sizeof *stats);
    stats->fallback_pixel = -1;
    memset(image, 0, (size_t)s->fpixels * s->spixels * sizeof(float));
    orientations o;
    if (orientations_build(s, &o) != NB_OK) {
        nb_set_error(err, errlen, "out of memory for %d crystal orientations", s->phisteps * s->mosaic_domains);
        return NB_ENOMEM;
    }
    row_result *rows = calloc((size_t)s->spixels, sizeof *rows);
    if (!rows) {
        free(o.block);
        nb_set_error(err, errlen, "out of memory");
        return NB_ENOMEM;
    }
    for (int sp = 0; sp < s->spixels; ++sp) rows[sp].first_fallback_fp = -1;
    render_ctl ctl = { opts, 0, 0.0, 0, -1, calloc((size_t)s->spixels + 1, 1), rows };
    if (!ctl.row_done) {
        free(rows);
        free(o.block);
        nb_set_error(err, errlen, "out of memory");
        return NB_ENOMEM;
    }
    ctl.next_poll_s = wall_seconds() + NB_POLL_INTERVAL_S;

    kernel_ctx k = { s, hkl, &o, hkl && hkl->count > 0 && hkl->F, &ctl };
    int interp = s->interpolate && k.have_grid;
    int rc = render_rows(&k, mask, 0, 0, s->spixels, interp, image, rows, opts);

    /* Interpolation stays off after the first stencil that leaves the grid,
     * in raster order: re-render everything after that pixel without it. */
    int fallback_row = -1;
    for (int sp = 0; rc == NB_OK && sp < s->spixels && fallback_row < 0; ++sp)
        if (rows[sp].first_fallback_fp >= 0) fallback_row = sp;
    if (fallback_row >= 0) {
        row_result *r = &rows[fallback_row];
        stats->interpolation_fell_back = 1;
        stats->fallback_pixel = (long)fallback_row * s->fpixels + r->first_fallback_fp;
        for (int i = 0; i < 3; ++i) { stats->fallback_hkl[i] = r->note.hkl[i]; stats->fallback_hkl0[i] = r->note.hkl0[i]; }
        /* solid angles do not depend on interpolation: the first pass's sums stand */
        row_result *redo = calloc((size_t)s->spixels, sizeof *redo);
        if (!redo) rc = NB_ENOMEM;
        else {
            for (int sp = 0; sp < s->spixels; ++sp) redo[sp].first_fallback_fp = -1;
            rc = render_rows(&k, mask, fallback_row, r->first_fallback_fp + 1, s->spixels, 0, image, redo, opts);
            free(redo);
        }
    }
    for (int sp = 0; sp < s->spixels; ++sp) stats->omega_sum += rows[sp].omega_sum;
    free(rows);
    free(o.block);
    free(ctl.row_done);
    if (rc == NB_ECANCELLED) {
        nb_set_error(err, errlen, "render cancelled");
        return rc;
    }
    if (rc != NB_OK) {
        nb_set_error(err, errlen, "out of memory while rendering");
        return rc;
    }
    if (opts && opts->poll) {
        long total = (long)s->spixels * s->fpixels;
        long done = stats->interpolation_fell_back ? stats->fallback_pixel : total;
        if (opts->poll(opts->poll_ctx, done, total) != 0) {
            nb_set_error(err, errlen, "render cancelled");
            return NB_ECANCELLED;
        }
    }
    compute_stats(s, mask, image, stats);
    return NB_OK;
}
