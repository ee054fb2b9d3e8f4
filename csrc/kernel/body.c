/* kernel/body.c - the sum over sub-pixels, sensor layers, sources, phi steps
 * and mosaic domains that makes each pixel of one row.
 *
 * The build compiles this file once per instruction-set level (baseline
 * x86-64, x86-64-v3, x86-64-v4; once elsewhere), each copy exporting one
 * nb_kernel_isa table named by NB_ISA_SUFFIX; kernel.c picks one at run time.
 *
 * For each sub-pixel and source the scattering vector S = (d - i)/lambda is
 * fixed; each crystal orientation (phi step x mosaic domain) then gives
 * fractional Miller indices h = a.S, k = b.S, l = c.S, the lattice transform
 * F_latt of the crystal and the unit-cell structure factor F_cell.  The pixel
 * collects F_cell^2 F_latt^2 and is scaled by r_e^2 * fluence / steps, the
 * solid angle, polarization and the sensor's capture fraction.
 *
 * Two paths compute the same sum.  The vector path takes a block of pixels'
 * samples against one orientation at a time, for every spot shape and for
 * tricubic interpolation; it has no branches, so that the compiler
 * vectorises it (gathers for the structure factors).  The step-by-step path
 * (the reference's order) is kept for the pixel where interpolation falls
 * back, because what follows that step depends on the order.
 */
#include <stdlib.h>
#include <string.h>
#include "kernel_isa.h"
#include "stages.h"

#ifndef NB_ISA_SUFFIX
#error "compile with -DNB_ISA_SUFFIX=_name"
#endif
#ifndef NB_ISA_NAME
#error "compile with -DNB_ISA_NAME=\"name\""
#endif

/* a*b + c, fused where the CPU has FMA: one rounding instead of two; used
 * only in the polynomials below, the kernel's hottest arithmetic */
#ifdef __FMA__
#define NB_MADD(a, b, c) fma((a), (b), (c))
#else
#define NB_MADD(a, b, c) ((a) * (b) + (c))
#endif

#define NB_ALWAYS_INLINE static inline __attribute__((always_inline))

/* rint() and floor() in round-to-nearest.  Without SSE4.1 (baseline x86-64)
 * the compiler has no vector instruction for them; adding and subtracting
 * 1.5 * 2^52 rounds to an integer with the same result for |x| < 2^51
 * (larger doubles are integers already). */
#if defined(__x86_64__) && !defined(__SSE4_1__)
NB_ALWAYS_INLINE double nb_rint(double x)
{
    const double magic = 6755399441055744.0;
    double r = (x + magic) - magic;
    return fabs(x) < 2251799813685248.0 ? r : x;
}
#else
NB_ALWAYS_INLINE double nb_rint(double x) { return rint(x); }
#endif
NB_ALWAYS_INLINE double nb_floor(double x)
{
    double r = nb_rint(x);
    return r > x ? r - 1.0 : r;
}

/* ------------------------------------------------------ scalar functions --
 * Branch-free polynomial forms of sin, cos and exp, so that the loops using
 * them vectorise.  Each is within a few ulp of libm (far inside the golden
 * rule's 1e-5). */

/* sin(pi x) for |x| <= 1/2: least-squares polynomial in x^2 on Chebyshev
 * nodes, within 7e-16 relative of sin(pi x) over the whole interval */
NB_ALWAYS_INLINE double sinpi_reduced(double x)
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

/* sin and cos of x >= 0, x < NB_TRIG_MAX: Cody-Waite reduction by pi/2
 * (three-part pi/2, exact products for quadrant counts below 2^20) and
 * Taylor-Horner polynomials on |r| <= pi/4 (truncation < 2e-17). */
#define NB_TRIG_MAX 1.0e6
NB_ALWAYS_INLINE void sincos_poly(double x, double *sn, double *cs)
{
    const double pio2_1 = 1.57079632673412561417e+00, pio2_2 = 6.07710050650619224932e-11,
                 pio2_3 = 2.02226624879595063154e-21;
    double n = nb_rint(x * 0.63661977236758134308);
    double r = ((x - n * pio2_1) - n * pio2_2) - n * pio2_3;
    double r2 = r * r;
    double s = 1.0 / 6227020800.0;                 /* 1/13! */
    s = NB_MADD(s, -r2, 1.0 / 39916800.0);
    s = NB_MADD(s, -r2, 1.0 / 362880.0);
    s = NB_MADD(s, -r2, 1.0 / 5040.0);
    s = NB_MADD(s, -r2, 1.0 / 120.0);
    s = NB_MADD(s, -r2, 1.0 / 6.0);
    s = r - r * r2 * s;
    double c = 1.0 / 87178291200.0;                /* 1/14! */
    c = NB_MADD(c, -r2, 1.0 / 479001600.0);
    c = NB_MADD(c, -r2, 1.0 / 3628800.0);
    c = NB_MADD(c, -r2, 1.0 / 40320.0);
    c = NB_MADD(c, -r2, 1.0 / 720.0);
    c = NB_MADD(c, -r2, 1.0 / 24.0);
    c = 1.0 - 0.5 * r2 + r2 * r2 * c;
    /* quadrant q = n mod 4 */
    double q = n - 4.0 * nb_floor(n * 0.25);
    double s_q = q == 0.0 ? s : q == 1.0 ? c : q == 2.0 ? -s : -c;
    double c_q = q == 0.0 ? c : q == 1.0 ? -s : q == 2.0 ? -c : s;
    *sn = s_q;
    *cs = c_q;
}

/* The sphere's transform 3 (sin x - x cos x) / x^3.  Below x = 0.01 its
 * Taylor series (error < 1e-19): the direct form loses digits there to
 * cancellation (relative error ~ 1e-16 / x^2).  The vector path flags the
 * samples below SINC3_DIRECT_MIN, whose pixels are then summed step by step
 * with the reference's form and libm, to give the reference's value
 * (its error included); above it the two forms agree within ~1e-6. */
#define SINC3_DIRECT_MIN 1e-4
NB_ALWAYS_INLINE double sinc3_poly(double x)
{
    double sn, cs;
    sincos_poly(x, &sn, &cs);
    double x2 = x * x;
    double direct = 3.0 * (sn / x - cs) / x2;
    double series = 1.0 - x2 * (1.0 / 10.0 - x2 * (1.0 / 280.0 - x2 * (1.0 / 15120.0)));
    return x < 0.01 ? series : direct;
}

/* exp(y) for y <= 0: y = n ln2 + r, |r| <= ln2/2, Taylor-Horner to r^13
 * (truncation < 2e-17), 2^n assembled in the exponent bits.  Below -708
 * (where exp leaves the normal range) it returns 0: those values are < 4e-308
 * of the peak. */
NB_ALWAYS_INLINE double exp_poly(double y)
{
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double yc = y < -708.0 ? -708.0 : y;
    double n = nb_rint(yc * 1.44269504088896338700);
    double r = (yc - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0;
    p = NB_MADD(p, r, 1.0 / 479001600.0);
    p = NB_MADD(p, r, 1.0 / 39916800.0);
    p = NB_MADD(p, r, 1.0 / 3628800.0);
    p = NB_MADD(p, r, 1.0 / 362880.0);
    p = NB_MADD(p, r, 1.0 / 40320.0);
    p = NB_MADD(p, r, 1.0 / 5040.0);
    p = NB_MADD(p, r, 1.0 / 720.0);
    p = NB_MADD(p, r, 1.0 / 120.0);
    p = NB_MADD(p, r, 1.0 / 24.0);
    p = NB_MADD(p, r, 1.0 / 6.0);
    p = NB_MADD(p, r, 0.5);
    p = NB_MADD(p, r, 1.0);
    p = NB_MADD(p, r, 1.0);
    /* 2^n: n + 1023 lands in the low mantissa bits of 2^52 + 2^51 + (n + 1023) */
    double biased = (n + 1023.0) + 6755399441055744.0;
    uint64_t bits;
    memcpy(&bits, &biased, sizeof bits);
    bits <<= 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return y < -708.0 ? 0.0 : p * scale;
}

/* The grating transform of N cells is sin(N pi h) / sin(pi h).  With
 * t = h - round(h) it equals +-sin(pi u) / sin(pi t), u = N t - round(N t):
 * the reduced arguments keep full precision next to the Bragg peak, and as
 * only the square is used the sign is dropped.  At t = 0 the limit is N.
 * Numerator and denominator come back separately so that the three axes
 * share one division. */
typedef struct { double num, den; } ratio;

NB_ALWAYS_INLINE ratio lattice_factor_parts(double h, double N)
{
    double t = h - nb_rint(h);
    double u = N * t;
    u -= nb_rint(u);
    double den = sinpi_reduced(t), num = sinpi_reduced(u);
    ratio r = { den != 0.0 ? num : N, den != 0.0 ? den : 1.0 };
    return r;
}

/* ceil(x - 0.5), the reference's rounding to the nearest Miller index, from
 * nb_rint() so that the vectoriser can use it */
NB_ALWAYS_INLINE double nearest_index(double x)
{
    double y = x - 0.5, r = nb_rint(y);
    return r < y ? r + 1.0 : r;
}

/* Does the interpolation stencil around (h,k,l) leave the grid?  (hr, kr, lr:
 * the grid's extents in indices) */
NB_ALWAYS_INLINE int stencil_outside(const nb_hkl *g, double h, double k, double l)
{
    int hr = g->h_max - g->h_min + 1, kr = g->k_max - g->k_min + 1, lr = g->l_max - g->l_min + 1;
    return ((h - g->h_min + 3) > hr) | ((h - 2) < g->h_min) | ((k - g->k_min + 3) > kr) | ((k - 2) < g->k_min) |
           ((l - g->l_min + 3) > lr) | ((l - 2) < g->l_min);
}

/* Weights of the 4-point Lagrange polynomial through x0-1 .. x0+2 at x
 * (x0 = floor(x)): the products (x - x_j) over j != i, over the node
 * differences -6, 2, -2, 6 (as products: 1/6 rounds once more, ~1 ulp,
 * and a vector division costs as much as the rest of the weights) */
NB_ALWAYS_INLINE void lagrange4_weights(double x, double x0, double *w)
{
    const double sixth = 1.0 / 6.0;
    double d0 = x - (x0 - 1.0), d1 = x - x0, d2 = x - (x0 + 1.0), d3 = x - (x0 + 2.0);
    w[0] = d1 * d2 * d3 * -sixth;
    w[1] = d0 * d2 * d3 * 0.5;
    w[2] = d0 * d1 * d3 * -0.5;
    w[3] = d0 * d1 * d2 * sixth;
}

/* ----------------------------------------------- step-by-step (scalar) --
 * The reference's forms, in the reference's step order. */

static double sincg(double x, double N) { return x == 0.0 ? N : sin(x * N) / sin(x); }
static double sinc3(double x) { return x == 0.0 ? 1.0 : 3.0 * (sin(x) / x - cos(x)) / (x * x); }

static double nearest_F(const nb_kernel_ctx *k, int h0, int k0, int l0)
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
        double num = 1.0, den = 1.0;
        for (int j = 0; j < 4; ++j)
            if (j != i) { num *= x - xa[j]; den *= xa[i] - xa[j]; }
        sum += num * ya[i] / den;
    }
    return sum;
}

/* Tricubic interpolation of F on the 4x4x4 grid points around (h,k,l):
 * along l first, then k, then h. */
static double tricubic_F(const nb_kernel_ctx *k, double h, double kk, double l)
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

/* Scattering vectors of one or more pixels, each with the weight of the
 * per-step corrections that are oversampled (1 otherwise). */
typedef struct {
    int n;
    const double *Sx, *Sy, *Sz, *w;
} sample_view;

/* The reference's step order: samples, then phi steps, then mosaic domains.
 * *interp turns off for good at the first stencil that leaves the grid.
 * tr, when given, keeps what the last step left (-printout): its Miller
 * indices, lattice factor and orientation, and the last structure factor
 * looked up (a step whose lattice factor is 0 looks none up); tr_set says
 * which of the two it holds. */
static double pixel_sum_in_order(const nb_kernel_ctx *k, const sample_view *b, int *interp, nb_fallback_note *fb,
                                 nb_pixel_trace *tr, int *tr_set)
{
    const nb_setup *s = k->s;
    const nb_orientations *o = k->o;
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
            if (tr) {
                *tr_set |= NB_TRACE_STEP;
                tr->hkl[0] = h; tr->hkl[1] = kk; tr->hkl[2] = l;
                tr->hkl0[0] = h0; tr->hkl0[1] = k0; tr->hkl0[2] = l0;
                tr->F_latt = F_latt;
                tr->orientation = q;
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
            if (tr) {
                *tr_set |= NB_TRACE_F_CELL;
                tr->F_cell = F_cell;
            }
            I += F_cell * F_cell * F_latt * F_latt * b->w[j];
        }
    }
    return I;
}

/* ------------------------------------------------------------ vector path */

/* What the vector loop needs of the setup and the grid. */
typedef struct {
    double Na, Nb, Nc, NNN, fudge;
    double as0, as1, as2, bs0, bs1, bs2, cs0, cs1, cs2;   /* unrotated reciprocal axes */
    double hmin, hmax, kmin, kmax, lmin, lmax;             /* nearest-node bounds (empty: no grid) */
    double hstride, kstride, default_F;
    double hr, kr, lr;                                     /* grid extents, for the interpolation stencil test */
    int water;                                             /* water background: zero-lattice steps still count */
    const double *F;
} vec_consts;

/* the square shape with N = 1 on every axis: F_latt = 1 (as the fast
 * form gives exactly, num == den), with no work */
#define NB_SHAPE_UNIT 4

/* What the interpolating loop hands its second pass, per sample: the
 * lattice factor squared (0: skip), the grid offset of the stencil's first
 * node and the Lagrange weights along h, k and l. */
typedef struct {
    double *lw, *wh0, *wh1, *wh2, *wh3, *wk0, *wk1, *wk2, *wk3, *wl0, *wl1, *wl2, *wl3;
    int *base;
} interp_temp;

typedef double v4d __attribute__((vector_size(32)));

/* an unaligned 4-vector load (a macro: an inline function returning a
 * 32-byte vector draws an ABI warning on baseline x86-64) */
#define load4(p) __extension__({ v4d v_; memcpy(&v_, (p), sizeof v_); v_; })

/* acc[j] += lw[j] F^2, F interpolated on the 4x4x4 stencil: the four nodes
 * along l are contiguous in the grid, so each (h, k) row is one 4-vector;
 * rows are weighted along k, then h, and the result along l. */
static void tricubic_pass(int n, const vec_consts *restrict c, const double *restrict F, const interp_temp *restrict it,
                          double *restrict acc)
{
    const int hs = (int)c->hstride, ks = (int)c->kstride;
    for (int j = 0; j < n; ++j) {
        if (it->lw[j] == 0.0) continue;
        const double *p = F + it->base[j];
        const double wk[4] = { it->wk0[j], it->wk1[j], it->wk2[j], it->wk3[j] };
        const double wh[4] = { it->wh0[j], it->wh1[j], it->wh2[j], it->wh3[j] };
        v4d sum_h = { 0.0, 0.0, 0.0, 0.0 };
        for (int a = 0; a < 4; ++a) {
            const double *q = p + a * hs;
            v4d sum_k = wk[0] * load4(q) + wk[1] * load4(q + ks) + wk[2] * load4(q + 2 * ks) + wk[3] * load4(q + 3 * ks);
            sum_h += wh[a] * sum_k;
        }
        double Fi = it->wl0[j] * sum_h[0] + it->wl1[j] * sum_h[1] + it->wl2[j] * sum_h[2] + it->wl3[j] * sum_h[3];
        acc[j] += it->lw[j] * (Fi * Fi);
    }
}

/* acc[j] += F_latt^2 F_cell^2 of one orientation for every sample j, and
 * out[j] = 1 where the pixel must be redone step by step: with
 * interpolation, where a stencil left the grid at a step that counts; with
 * round spots, where the sphere transform is next to a node.  shape and interp are
 * constants at each call site, so each combination compiles to its own loop. */
NB_ALWAYS_INLINE void accumulate_orientation(const int shape, const int interp, int n,
                                             const double *restrict Sx, const double *restrict Sy,
                                             const double *restrict Sz, const double *restrict abc,
                                             const vec_consts *restrict c, const double *restrict F,
                                             double *restrict acc, double *restrict out,
                                             const interp_temp *restrict it)
{
    const double ax = abc[0], ay = abc[1], az = abc[2], bx = abc[3], by = abc[4], bz = abc[5];
    const double cx = abc[6], cy = abc[7], cz = abc[8];
    const double Na = c->Na, Nb = c->Nb, Nc = c->Nc, NNN = c->NNN, fudge = c->fudge;
    const double hmin = c->hmin, hmax = c->hmax, kmin = c->kmin, kmax = c->kmax, lmin = c->lmin, lmax = c->lmax;
    const double hstride = c->hstride, kstride = c->kstride, default_F = c->default_F;
    /* F is read-only and never aliases acc or out: the gathers carry no dependence */
#pragma GCC ivdep
    for (int j = 0; j < n; ++j) {
        double h = ax * Sx[j] + ay * Sy[j] + az * Sz[j];
        double kk = bx * Sx[j] + by * Sy[j] + bz * Sz[j];
        double l = cx * Sx[j] + cy * Sy[j] + cz * Sz[j];
        double h0 = nearest_index(h), k0 = nearest_index(kk), l0 = nearest_index(l);
        double latt_sqr;
        int counts;                     /* does this step reach the structure factor? */
        if (shape == NB_SHAPE_UNIT) {
            latt_sqr = 1.0;            /* one cell on every axis: the reference skips each factor */
            counts = 1;
        } else if (shape == NB_SHAPE_SQUARE) {
            ratio fa = lattice_factor_parts(h, Na), fb = lattice_factor_parts(kk, Nb), fc = lattice_factor_parts(l, Nc);
            double latt = (fa.num * fb.num * fc.num) / (fa.den * fb.den * fc.den);
            latt_sqr = latt * latt;
            counts = latt != 0.0;
        } else {
            double dh = h - h0, dk = kk - k0, dl = l - l0;
            if (shape == NB_SHAPE_ROUND) {
                double hrad_sqr = dh * dh * Na * Na + dk * dk * Nb * Nb + dl * dl * Nc * Nc;
                double x = M_PI * sqrt(hrad_sqr * fudge);
                double F_latt = NNN * 0.723601254558268 * sinc3_poly(x);
                latt_sqr = F_latt * F_latt;
                counts = F_latt != 0.0;
                /* next to a node the reference's direct form loses its
                 * digits (relative error ~1e-16/x^2): such a pixel is summed
                 * step by step with the reference's own form, to match it */
                out[j] = x < SINC3_DIRECT_MIN ? 1.0 : out[j];
            } else {
                double dx = dh * c->as0 + dk * c->bs0 + dl * c->cs0;
                double dy = dh * c->as1 + dk * c->bs1 + dl * c->cs1;
                double dz = dh * c->as2 + dk * c->bs2 + dl * c->cs2;
                double rad_star_sqr = (dx * dx + dy * dy + dz * dz) * Na * Na * Nb * Nb * Nc * Nc;
                if (shape == NB_SHAPE_GAUSS) {
                    double y = -(rad_star_sqr / 0.63 * fudge);
                    /* F_latt^2 = NNN^2 exp(2y): squaring NNN exp(y) would
                     * leave the normal range (slow subnormal arithmetic)
                     * long before exp(2y) reaches exp_poly's cut at -708 */
                    latt_sqr = NNN * NNN * exp_poly(2.0 * y);
                    counts = y >= -745.1332191019412;   /* where exp() is not yet 0 */
                } else {
                    int in = rad_star_sqr * fudge < 0.3969;
                    latt_sqr = in ? NNN * NNN : 0.0;
                    counts = in;
                }
            }
        }
        if (interp) {
            /* stencil_outside(), term by term, written as "not inside" so that
             * a NaN index (an absurd -mosaic) is outside and reads nothing */
            int outside = !(((h - hmin + 3) <= c->hr) & ((h - 2) >= hmin) & ((kk - kmin + 3) <= c->kr) &
                            ((kk - 2) >= kmin) & ((l - lmin + 3) <= c->lr) & ((l - 2) >= lmin));
            int fell = outside & (counts | c->water);
            out[j] = fell ? 1.0 : out[j];
            double hf = nb_floor(h), kf = nb_floor(kk), lf = nb_floor(l);
            double base = (hf - 1.0 - hmin) * hstride + (kf - 1.0 - kmin) * kstride + (lf - 1.0 - lmin);
            /* outside: weight 0, and the second loop reads nothing */
            it->lw[j] = outside ? 0.0 : latt_sqr;
            it->base[j] = (int)(outside ? 0.0 : base);
            double w[4];
            lagrange4_weights(h, hf, w);
            it->wh0[j] = w[0]; it->wh1[j] = w[1]; it->wh2[j] = w[2]; it->wh3[j] = w[3];
            lagrange4_weights(kk, kf, w);
            it->wk0[j] = w[0]; it->wk1[j] = w[1]; it->wk2[j] = w[2]; it->wk3[j] = w[3];
            lagrange4_weights(l, lf, w);
            it->wl0[j] = w[0]; it->wl1[j] = w[1]; it->wl2[j] = w[2]; it->wl3[j] = w[3];
        } else {
            /* the mask as a double: int masks next to doubles keep SSE2 from vectorising */
            double m = (h0 >= hmin && h0 <= hmax && k0 >= kmin && k0 <= kmax && l0 >= lmin && l0 <= lmax) ? 1.0 : 0.0;
            /* a select of the index, not of the load: off the grid (or NaN) reads F[0] */
            double off = (h0 - hmin) * hstride + (k0 - kmin) * kstride + (l0 - lmin);
            int idx = (int)(m != 0.0 ? off : 0.0);
            double Fg = F[idx];
            /* Fg or default_F exactly (F is finite); a product, not a select:
             * a select would let the compiler move the load under the
             * condition, and masked gathers do not vectorise */
            double Fc = Fg * m + default_F * (1.0 - m);
            acc[j] += latt_sqr * (Fc * Fc);
        }
    }
    if (interp) tricubic_pass(n, c, F, it, acc);
}

/* One loop per shape x interpolation, kept out of line so that each is
 * vectorised on its own. */
#define NB_ACC_FN(shape, interp, name)                                                                        \
    __attribute__((noinline)) static void name(int n, const double *restrict Sx, const double *restrict Sy,   \
                                               const double *restrict Sz, const double *restrict abc,         \
                                               const vec_consts *restrict c, double *restrict acc,            \
                                               double *restrict out, const interp_temp *restrict it)          \
    { accumulate_orientation(shape, interp, n, Sx, Sy, Sz, abc, c, c->F, acc, out, it); }
NB_ACC_FN(NB_SHAPE_SQUARE, 0, acc_square)
NB_ACC_FN(NB_SHAPE_ROUND, 0, acc_round)
NB_ACC_FN(NB_SHAPE_GAUSS, 0, acc_gauss)
NB_ACC_FN(NB_SHAPE_TOPHAT, 0, acc_tophat)
NB_ACC_FN(NB_SHAPE_UNIT, 0, acc_unit)
NB_ACC_FN(NB_SHAPE_SQUARE, 1, acc_square_interp)
NB_ACC_FN(NB_SHAPE_UNIT, 1, acc_unit_interp)
NB_ACC_FN(NB_SHAPE_ROUND, 1, acc_round_interp)
NB_ACC_FN(NB_SHAPE_GAUSS, 1, acc_gauss_interp)
NB_ACC_FN(NB_SHAPE_TOPHAT, 1, acc_tophat_interp)

typedef void (*acc_fn)(int, const double *restrict, const double *restrict, const double *restrict,
                       const double *restrict, const vec_consts *restrict, double *restrict, double *restrict,
                       const interp_temp *restrict);

static acc_fn pick_acc(const nb_setup *s, int interp)
{
    static const acc_fn table[2][5] = {
        { acc_square, acc_round, acc_gauss, acc_tophat, acc_unit },
        { acc_square_interp, acc_round_interp, acc_gauss_interp, acc_tophat_interp, acc_unit_interp },
    };
    int shape = s->xtal_shape;
    if (shape == NB_SHAPE_SQUARE && s->Na == 1.0 && s->Nb == 1.0 && s->Nc == 1.0) shape = NB_SHAPE_UNIT;
    return table[interp ? 1 : 0][shape];
}

/* The vector path needs int indices into the grid and, for round spots,
 * arguments within the trigonometric reduction's range. */
static int vector_path_ok(const nb_kernel_ctx *k)
{
    const nb_setup *s = k->s;
    if (k->steps_only) return 0;
    if (k->have_grid) {
        const nb_hkl *g = k->hkl;
        double cells = (double)(g->h_max - g->h_min + 2) * (g->k_max - g->k_min + 2) * (g->l_max - g->l_min + 2);
        if (cells >= 2147483647.0) return 0;
    }
    if (s->xtal_shape == NB_SHAPE_ROUND) {
        /* |h - h0| <= 1/2 on every axis */
        double hrad_max = 0.25 * (s->Na * s->Na + s->Nb * s->Nb + s->Nc * s->Nc);
        if (!(M_PI * sqrt(hrad_max * s->fudge) < NB_TRIG_MAX)) return 0;
    }
    return 1;
}

static vec_consts make_consts(const nb_kernel_ctx *k)
{
    const nb_setup *s = k->s;
    const nb_hkl *g = k->hkl;
    vec_consts c;
    memset(&c, 0, sizeof c);
    c.Na = s->Na; c.Nb = s->Nb; c.Nc = s->Nc;
    c.NNN = s->Na * s->Nb * s->Nc;
    c.fudge = s->fudge;
    c.as0 = s->a_star[0]; c.as1 = s->a_star[1]; c.as2 = s->a_star[2];
    c.bs0 = s->b_star[0]; c.bs1 = s->b_star[1]; c.bs2 = s->b_star[2];
    c.cs0 = s->c_star[0]; c.cs1 = s->c_star[1]; c.cs2 = s->c_star[2];
    c.hmin = 0; c.hmax = -1; c.kmin = 0; c.kmax = -1; c.lmin = 0; c.lmax = -1;
    c.default_F = s->default_F;
    c.F = &s->default_F;
    c.water = s->water_m != 0.0;
    if (k->have_grid) {
        c.hmin = g->h_min; c.hmax = g->h_max; c.kmin = g->k_min; c.kmax = g->k_max;
        c.lmin = g->l_min; c.lmax = g->l_max;
        c.kstride = (double)(g->l_max - g->l_min + 2);
        c.hstride = (double)(g->k_max - g->k_min + 2) * c.kstride;
        c.F = g->F;
        c.hr = g->h_max - g->h_min + 1; c.kr = g->k_max - g->k_min + 1; c.lr = g->l_max - g->l_min + 1;
    }
    return c;
}

/* ------------------------------------------------------------- samples -- */

/* per source: the incident direction, 1/lambda and the polarization frame */
typedef struct { double inc[3], inv_lambda, B[3], E[3]; } source_info;

/* The corrections applied once per pixel, each taken where the reference
 * takes it: solid angle at the first sub-pixel, polarization at the first
 * source that passes the resolution cut, capture fraction at the first
 * sub-pixel of the last sensor layer. */
typedef struct { double omega, polar, capture, omega_sum; } pixel_factors;

typedef struct {
    int cap, block, vector_ok;
    double *Sx, *Sy, *Sz, *w, *acc, *out;
    pixel_factors *pfs;
    double *pix_I;                /* per pixel of a block: its sum, then its scaled value */
    int *pix_n;
    signed char *pix_code;        /* NB_PASS_SKIP: each pixel's skip_code */
    source_info *src;
    double *src_ix, *src_iy, *src_iz, *src_il;   /* the same, as columns */
    interp_temp it;
    double *it_block;
    double *Fe, *Se, *Oe, *px, *py, *pz, *om, *par;   /* sub-pixels of a block */
    vec_consts c;
    acc_fn fn_plain, fn_interp;
} workspace;

/* Kahn polarization factor.  cos(2 psi) with psi = -atan2(y, x) is
 * (x^2 - y^2) / (x^2 + y^2): no trigonometric call (atan2(0, 0) = 0 gives 1). */
NB_ALWAYS_INLINE double polarization_factor(double kahn, const source_info *si, const double *d)
{
    double cos2t = nb_dot(si->inc, d);
    double cos2t_sqr = cos2t * cos2t, sin2t_sqr = 1 - cos2t_sqr, cos2psi = 1.0;
    if (kahn != 0.0) {
        double y = nb_dot(d, si->B), x = nb_dot(d, si->E), r2 = x * x + y * y;
        cos2psi = r2 > 0.0 ? (x * x - y * y) / r2 : 1.0;
    }
    return 0.5 * (1.0 + cos2t_sqr - kahn * cos2psi * sin2t_sqr);
}

/* Sub-pixel centre in the lab frame (m). */
static void subpixel_position(const nb_setup *s, double Fdet, double Sdet, double Odet, double *pos)
{
    for (int i = 0; i < 3; ++i) pos[i] = Fdet * s->fdet[i] + Sdet * s->sdet[i] + Odet * s->odet[i] + s->pix0_m[i];
    if (s->curved_det) {
        /* a sphere of radius distance: the flat coordinates become angles */
        double r[3], tmp[3];
        nb_scale(s->beam, s->distance_m, r);
        nb_rotate_axis(r, tmp, s->sdet, pos[1] / s->distance_m);
        nb_rotate_axis(tmp, pos, s->fdet, pos[2] / s->distance_m);
    }
}

/* The sub-pixels of a block of pixels (every sensor layer, sub-pixel row
 * and column of each wanted pixel, in that order): their positions, then in
 * one vector loop the unit vectors d, distances R, solid angles and
 * obliquities; sample_block then applies the reference's per-pixel rules. */
static void subpixel_geometry(const nb_setup *s, workspace *ws, int ne)
{
    double *restrict px = ws->px, *restrict py = ws->py, *restrict pz = ws->pz;
    double *restrict om = ws->om, *restrict par = ws->par;
    const double *restrict Fe = ws->Fe, *restrict Se = ws->Se, *restrict Oe = ws->Oe;
    if (s->curved_det) {
        for (int e = 0; e < ne; ++e) {
            double pos[3];
            subpixel_position(s, Fe[e], Se[e], Oe[e], pos);
            px[e] = pos[0]; py[e] = pos[1]; pz[e] = pos[2];
        }
    } else {
        const double f0 = s->fdet[0], f1 = s->fdet[1], f2 = s->fdet[2], s0 = s->sdet[0], s1 = s->sdet[1], s2 = s->sdet[2];
        const double o0 = s->odet[0], o1 = s->odet[1], o2 = s->odet[2];
        const double p0 = s->pix0_m[0], p1 = s->pix0_m[1], p2 = s->pix0_m[2];
        for (int e = 0; e < ne; ++e) {
            px[e] = Fe[e] * f0 + Se[e] * s0 + Oe[e] * o0 + p0;
            py[e] = Fe[e] * f1 + Se[e] * s1 + Oe[e] * o1 + p1;
            pz[e] = Fe[e] * f2 + Se[e] * s2 + Oe[e] * o2 + p2;
        }
    }
    const double pixel_sqr = s->pixel_m * s->pixel_m, close = s->close_distance_m;
    const double od0 = s->odet[0], od1 = s->odet[1], od2 = s->odet[2];
    const int point = s->point_pixel;
    for (int e = 0; e < ne; ++e) {
        /* nb_unitize(), the reference's solid angle and parallax */
        double m = sqrt(px[e] * px[e] + py[e] * py[e] + pz[e] * pz[e]);
        int nz = m != 0.0;
        double dm = nz ? m : 1.0;
        double dx = nz ? px[e] / dm : 0.0, dy = nz ? py[e] / dm : 0.0, dz = nz ? pz[e] / dm : 0.0;
        px[e] = dx; py[e] = dy; pz[e] = dz;
        /* (pixel/R)^2 times the obliquity cos = close_distance/R */
        om[e] = point ? 1.0 / m / m : pixel_sqr / m / m * close / m;
        par[e] = dx * od0 + dy * od1 + dz * od2;
    }
}

/* a component of S = (d - i) / lambda */
NB_ALWAYS_INLINE double scattering_component(double d, double inc, double inv_lambda) { return (d - inc) * inv_lambda; }

/* S = (d - i) / lambda for every source, into samples n.. */
NB_ALWAYS_INLINE void scattering_vectors(workspace *ws, int nsrc, const double *d, double w, int n)
{
    const double d0 = d[0], d1 = d[1], d2 = d[2];
    const double *restrict ix = ws->src_ix, *restrict iy = ws->src_iy, *restrict iz = ws->src_iz;
    const double *restrict il = ws->src_il;
    double *restrict Sx = ws->Sx + n, *restrict Sy = ws->Sy + n, *restrict Sz = ws->Sz + n, *restrict W = ws->w + n;
    for (int i = 0; i < nsrc; ++i) {
        Sx[i] = scattering_component(d0, ix[i], il[i]);
        Sy[i] = scattering_component(d1, iy[i], il[i]);
        Sz[i] = scattering_component(d2, iz[i], il[i]);
        W[i] = w;
    }
}

/* with one source: S of sub-pixels 0..ne-1 into samples 0..ne-1, weight 1 */
static void one_source_vectors(workspace *ws, int ne)
{
    const double ix = ws->src_ix[0], iy = ws->src_iy[0], iz = ws->src_iz[0], il = ws->src_il[0];
    const double *restrict dx = ws->px, *restrict dy = ws->py, *restrict dz = ws->pz;
    double *restrict Sx = ws->Sx, *restrict Sy = ws->Sy, *restrict Sz = ws->Sz, *restrict W = ws->w;
    for (int q = 0; q < ne; ++q) {
        Sx[q] = scattering_component(dx[q], ix, il);
        Sy[q] = scattering_component(dy[q], iy, il);
        Sz[q] = scattering_component(dz[q], iz, il);
        W[q] = 1.0;
    }
}

/* Is the pixel summed in this pass? */
NB_ALWAYS_INLINE int pixel_in_pass(const nb_kernel_ctx *k, const uint16_t *mask, int fp, int sp)
{
    const nb_setup *s = k->s;
    if (!nb_pixel_wanted(s, mask, fp, sp)) return 0;
    if (k->pass == NB_PASS_PROBE) return nb_probed(fp) && nb_probed(sp);
    if (k->pass == NB_PASS_REDO) {
        signed char c = k->skip_code[(size_t)sp * s->fpixels + fp];
        return c != NB_SKIP_SUMMED && c > k->redo_code[nb_stage_of_row(sp)];
    }
    return 1;
}

/* Is pixel_in_pass() 1 for every pixel f0..f1-1 of row sp?  (No mask, the
 * block inside the ROI, and a pass that takes every wanted pixel.) */
NB_ALWAYS_INLINE int block_wholly_in_pass(const nb_kernel_ctx *k, const uint16_t *mask, int sp, int f0, int f1)
{
    return !mask && k->pass != NB_PASS_PROBE && k->pass != NB_PASS_REDO && nb_in_roi(k->s, f0, sp) &&
           nb_in_roi(k->s, f1 - 1, sp);
}

/* Fill the samples of pixels f0..f1-1 of row sp; pix_n[i] = -1 for a pixel
 * not wanted (or not in this pass).  Returns the number of samples. */
static int sample_block(const nb_kernel_ctx *k, workspace *ws, const uint16_t *mask, int sp, int f0, int f1,
                        nb_row_result *rr)
{
    const nb_setup *s = k->s;
    const int ov = s->oversample;
    const double sub = s->subpixel_m;
    int ne = 0;
    const int one_subpixel = ov == 1 && s->thicksteps == 1;
    const pixel_factors no_pixel = { 0.0, 0.0, 0.0, 0.0 };    /* pixels_scaled reads every pixel's */
    if (one_subpixel) {
        /* one sub-pixel per pixel: the values of the general loop below */
        const double Se0 = sub * sp + sub / 2.0, Oe0 = 0 * s->thickstep_m;
        const int every = block_wholly_in_pass(k, mask, sp, f0, f1);     /* then one vector loop */
        for (int fp = f0; every && fp < f1; ++fp) {
            ws->pix_n[fp - f0] = 0;
            ws->Fe[fp - f0] = sub * fp + sub / 2.0;
            ws->Se[fp - f0] = Se0;
            ws->Oe[fp - f0] = Oe0;
        }
        if (every) ne = f1 - f0;
        for (int fp = f0; !every && fp < f1; ++fp) {
            int in = pixel_in_pass(k, mask, fp, sp);
            ws->pix_n[fp - f0] = in ? 0 : -1;
            if (!in) ws->pfs[fp - f0] = no_pixel;
            ws->Fe[ne] = sub * fp + sub / 2.0;
            ws->Se[ne] = Se0;
            ws->Oe[ne] = Oe0;
            ne += in;
        }
    }
    for (int fp = f0; fp < f1 && !one_subpixel; ++fp) {
        if (!pixel_in_pass(k, mask, fp, sp)) { ws->pix_n[fp - f0] = -1; ws->pfs[fp - f0] = no_pixel; continue; }
        ws->pix_n[fp - f0] = 0;
        for (int t = 0; t < s->thicksteps; ++t)
            for (int ss = 0; ss < ov; ++ss)
                for (int sf = 0; sf < ov; ++sf, ++ne) {
                    ws->Fe[ne] = sub * (fp * ov + sf) + sub / 2.0;
                    ws->Se[ne] = sub * (sp * ov + ss) + sub / 2.0;
                    ws->Oe[ne] = t * s->thickstep_m;
                }
    }
    subpixel_geometry(s, ws, ne);
    const int check_dmin = s->dmin_m > 0.0;
    int n = 0, e = 0;
    if (one_subpixel && s->thick_m == 0.0 && !check_dmin && !s->oversample_polar &&
        !s->oversample_omega && !s->oversample_thick && s->n_sources > 0) {
        /* one sub-pixel per pixel, every source counting: the rules of the
         * loop below reduce to the first source's polarization (a loop of
         * its own, into par, which a sensor of no thickness does not use),
         * the sub-pixel's solid angle and a weight of 1 */
        double *restrict polar = ws->par;
        if (!s->nopolar)
            for (int q = 0; q < ne; ++q) {
                const double d[3] = { ws->px[q], ws->py[q], ws->pz[q] };
                polar[q] = polarization_factor(s->polarization, ws->src, d);
            }
        if (s->n_sources == 1) one_source_vectors(ws, ne);
        double omega_lane[4] = { 0.0, 0.0, 0.0, 0.0 };   /* the sum in 4 interleaved parts: no serial chain */
        for (int fp = f0; fp < f1; ++fp, ++e) {
            if (ws->pix_n[fp - f0] < 0) { --e; continue; }
            if (s->n_sources != 1) {
                const double d[3] = { ws->px[e], ws->py[e], ws->pz[e] };
                scattering_vectors(ws, s->n_sources, d, 1.0, n);
            }
            n += s->n_sources;
            pixel_factors pf = { ws->om[e], s->nopolar ? 1.0 : polar[e], 1.0, 0.0 + ws->om[e] };
            ws->pfs[fp - f0] = pf;
            omega_lane[e & 3] += pf.omega_sum;
            ws->pix_n[fp - f0] = s->n_sources;
        }
        rr->omega_sum += (omega_lane[0] + omega_lane[1]) + (omega_lane[2] + omega_lane[3]);
        return n;
    }
    for (int fp = f0; fp < f1; ++fp) {
        if (ws->pix_n[fp - f0] < 0) continue;
        int start = n;
        pixel_factors pf = { 0.0, s->nopolar ? 1.0 : 0.0, 0.0, 0.0 };
        for (int t = 0; t < s->thicksteps; ++t) {
            pf.capture = s->thick_m == 0.0 ? 1.0 : 0.0;
            for (int q = 0; q < ov * ov; ++q, ++e) {
                const double d[3] = { ws->px[e], ws->py[e], ws->pz[e] };
                if (pf.omega == 0.0 || s->oversample_omega) pf.omega = ws->om[e];
                pf.omega_sum += pf.omega;
                if (pf.capture == 0.0 || s->oversample_thick) {
                    /* Beer-Lambert absorption within this layer along the oblique path */
                    double parallax = ws->par[e];
                    pf.capture = exp(-t * s->thickstep_m * s->mu_per_m / parallax)
                               - exp(-(t + 1) * s->thickstep_m * s->mu_per_m / parallax);
                }
                if (!check_dmin && !s->oversample_polar && s->n_sources > 0) {
                    /* every source counts: polarization from the first, one
                     * weight, and the scattering vectors in a vector loop */
                    if (pf.polar == 0.0) pf.polar = polarization_factor(s->polarization, ws->src, d);
                    double w = 1.0;
                    if (s->oversample_thick) w *= pf.capture;
                    if (s->oversample_omega) w *= pf.omega;
                    scattering_vectors(ws, s->n_sources, d, w, n);
                    n += s->n_sources;
                    continue;
                }
                for (int src = 0; src < s->n_sources; ++src) {
                    const source_info *si = ws->src + src;
                    double S[3] = { scattering_component(d[0], si->inc[0], si->inv_lambda),
                                    scattering_component(d[1], si->inc[1], si->inv_lambda),
                                    scattering_component(d[2], si->inc[2], si->inv_lambda) };
                    if (check_dmin) {
                        double stol = 0.5 * nb_norm(S);
                        if (stol > 0.0 && s->dmin_m > 0.5 / stol) continue;
                    }
                    if (pf.polar == 0.0 || s->oversample_polar) pf.polar = polarization_factor(s->polarization, si, d);
                    double w = 1.0;
                    if (s->oversample_thick) w *= pf.capture;
                    if (s->oversample_polar) w *= pf.polar;
                    if (s->oversample_omega) w *= pf.omega;
                    ws->Sx[n] = S[0]; ws->Sy[n] = S[1]; ws->Sz[n] = S[2]; ws->w[n] = w;
                    ++n;
                }
            }
        }
        ws->pfs[fp - f0] = pf;
        rr->omega_sum += pf.omega_sum;
        ws->pix_n[fp - f0] = n - start;
    }
    return n;
}

/* The pixels 0..count-1 of a block: v[i], each one's sum I, becomes
 * r_e^2 fluence I / steps times the factors applied once per pixel (a
 * factor not applied is a product with 1); one vector loop. */
static void pixels_scaled(const nb_setup *s, const pixel_factors *restrict pfs, int count, double *restrict v)
{
    const double c = NB_RE_SQR * s->fluence, steps = (double)s->steps;
    const int thick = !s->oversample_thick, polar = !s->oversample_polar, omega = !s->oversample_omega;
    for (int i = 0; i < count; ++i) {
        double x = c * v[i] / steps;
        x *= thick ? pfs[i].capture : 1.0;
        x *= polar ? pfs[i].polar : 1.0;
        x *= omega ? pfs[i].omega : 1.0;
        v[i] = x;
    }
}

static void workspace_free(void *p)
{
    workspace *ws = p;
    if (!ws) return;
    free(ws->Sx);
    free(ws->pfs);
    free(ws->pix_I);
    free(ws->pix_n);
    free(ws->pix_code);
    free(ws->src);
    free(ws->src_ix);
    free(ws->it_block);
    free(ws);
}

static void *workspace_new(const nb_kernel_ctx *k)
{
    const nb_setup *s = k->s;
    workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return NULL;
    long per_pixel = (long)s->thicksteps * s->oversample * s->oversample * s->n_sources;
    /* pixels per block: a few hundred samples, so that the block's arrays
     * stay in the L1/L2 cache while every orientation passes over them */
    int block = per_pixel >= 512 ? 1 : (int)(512 / per_pixel);
    if (block > 256) block = 256;
    ws->block = block;
    ws->cap = (int)(per_pixel * block);
    ws->Sx = malloc((size_t)ws->cap * 6 * sizeof(double));
    ws->pfs = malloc((size_t)block * sizeof *ws->pfs);
    ws->pix_I = calloc((size_t)block, sizeof *ws->pix_I);   /* pixels_scaled reads every entry */
    ws->pix_n = malloc((size_t)block * sizeof *ws->pix_n);
    ws->pix_code = malloc((size_t)block);
    ws->src = malloc((size_t)(s->n_sources > 0 ? s->n_sources : 1) * sizeof *ws->src);
    ws->src_ix = malloc((size_t)(s->n_sources > 0 ? s->n_sources : 1) * 4 * sizeof(double));
    /* 13 doubles and an int per sample for the interpolation's second pass */
    size_t sub_cap = (size_t)block * s->thicksteps * s->oversample * s->oversample;
    ws->it_block = malloc(((size_t)ws->cap * 14 + sub_cap * 8) * sizeof(double));
    if (!ws->Sx || !ws->pfs || !ws->pix_I || !ws->pix_n || !ws->pix_code || !ws->src || !ws->src_ix || !ws->it_block) {
        workspace_free(ws);
        return NULL;
    }
    ws->Sy = ws->Sx + ws->cap; ws->Sz = ws->Sy + ws->cap; ws->w = ws->Sz + ws->cap;
    ws->acc = ws->w + ws->cap; ws->out = ws->acc + ws->cap;
    double **cols[13] = { &ws->it.lw, &ws->it.wh0, &ws->it.wh1, &ws->it.wh2, &ws->it.wh3, &ws->it.wk0, &ws->it.wk1,
                          &ws->it.wk2, &ws->it.wk3, &ws->it.wl0, &ws->it.wl1, &ws->it.wl2, &ws->it.wl3 };
    for (int i = 0; i < 13; ++i) *cols[i] = ws->it_block + (size_t)i * ws->cap;
    ws->it.base = (int *)(ws->it_block + (size_t)13 * ws->cap);
    double **sub[8] = { &ws->Fe, &ws->Se, &ws->Oe, &ws->px, &ws->py, &ws->pz, &ws->om, &ws->par };
    for (int i = 0; i < 8; ++i) *sub[i] = ws->it_block + (size_t)14 * ws->cap + (size_t)i * sub_cap;
    for (int i = 0; i < s->n_sources; ++i) {
        source_info *si = ws->src + i;
        const double *dir = s->source_dir + 3 * i;
        for (int a = 0; a < 3; ++a) si->inc[a] = -dir[a];
        si->inv_lambda = 1.0 / s->source_lambda_m[i];
        nb_cross(s->polar_vec, si->inc, si->B);
        nb_unitize(si->B, si->B);
        nb_cross(si->inc, si->B, si->E);
        nb_unitize(si->E, si->E);
    }
    int ns = s->n_sources > 0 ? s->n_sources : 1;
    ws->src_iy = ws->src_ix + ns; ws->src_iz = ws->src_iy + ns; ws->src_il = ws->src_iz + ns;
    for (int i = 0; i < s->n_sources; ++i) {
        ws->src_ix[i] = ws->src[i].inc[0]; ws->src_iy[i] = ws->src[i].inc[1]; ws->src_iz[i] = ws->src[i].inc[2];
        ws->src_il[i] = ws->src[i].inv_lambda;
    }
    ws->vector_ok = vector_path_ok(k);
    ws->c = make_consts(k);
    ws->fn_plain = pick_acc(s, 0);
    ws->fn_interp = pick_acc(s, 1);
    return ws;
}

/* F_latt^2 F_cell^2 summed over orientations, for every sample of the block. */
static void accumulate_block(const nb_kernel_ctx *k, workspace *ws, int n, int interp)
{
    const nb_orientations *o = k->o;
    acc_fn fn = interp ? ws->fn_interp : ws->fn_plain;
    for (int j = 0; j < n; ++j) { ws->acc[j] = 0.0; ws->out[j] = 0.0; }
    for (int q = 0; q < o->n; ++q) {
        double abc[9] = { o->ax[q], o->ay[q], o->az[q], o->bx[q], o->by[q], o->bz[q], o->cx[q], o->cy[q], o->cz[q] };
        fn(n, ws->Sx, ws->Sy, ws->Sz, abc, &ws->c, ws->acc, ws->out, &ws->it);
    }
}

/* The pixel's sum step by step; notes the row's first fall-back. */
static double pixel_in_order(const nb_kernel_ctx *k, const workspace *ws, int start, int m, int interp0, int fp,
                             nb_row_result *rr)
{
    sample_view v = { m, ws->Sx + start, ws->Sy + start, ws->Sz + start, ws->w + start };
    int interp = interp0;
    nb_fallback_note fb = { 0, { 0, 0, 0 }, { 0, 0, 0 } };
    double I = pixel_sum_in_order(k, &v, &interp, &fb, NULL, NULL);
    if (fb.hit && rr->first_fallback_fp < 0) {
        rr->first_fallback_fp = fp;
        rr->note = fb;
    }
    return I;
}

/* ---------------------------------------------------------- skipping --
 * The bound of docs/skipping.md: for each block of orientations, h lies
 * within rh of the block centre's hc on every step, so |F_latt| is bounded
 * through t, the distance of that interval from the nearest integer (for
 * the square crystal the product of min(N, 1/sin(pi t)) over the axes), and
 * |F_cell| <= the largest |F| of the nodes it can round to. */

/* the least distance of [hc - r, hc + r] from the integers (0 if it holds
 * one); NaN stays NaN, so that such a pixel is summed */
NB_ALWAYS_INLINE double node_distance(double hc, double r)
{
    double t = fabs(hc - nb_rint(hc)) - r;
    return t > 0.0 ? t : (t != t ? t : 0.0);
}

/* max(1/N, sin(pi t)) with t = node_distance <= 1/2: the axis bound
 * min(N, 1/sin(pi t)) is its reciprocal (1 for one cell, an axis the
 * reference skips), so that three axes cost one division; NaN stays NaN */
NB_ALWAYS_INLINE double axis_denominator(double hc, double r, double inv_N)
{
    double sn = sinpi_reduced(node_distance(hc, r));
    return sn != sn ? sn : (sn > inv_N ? sn : inv_N);
}

/* an upper bound of F_latt^2 for one sample and block, by spot shape (see
 * accumulate_orientation for the forms it bounds) */
NB_ALWAYS_INLINE double lattice_sqr_bound(const int shape, double h, double kk, double l, double rh, double rk,
                                          double rl, double Na, double Nb, double Nc, double fudge, double gram_min)
{
    if (shape == NB_SHAPE_SQUARE) {
        /* 1e-12 covers the polynomial's 7e-16 and the roundings of 1/N and the product */
        double lat = (1.0 + 1e-12) / (axis_denominator(h, rh, 1.0 / Na) * axis_denominator(kk, rk, 1.0 / Nb) *
                                      axis_denominator(l, rl, 1.0 / Nc));
        return lat * lat;
    }
    const double NNN = Na * Nb * Nc;
    double th = node_distance(h, rh), tk = node_distance(kk, rk), tl = node_distance(l, rl);
    if (shape == NB_SHAPE_ROUND) {
        /* |3 (sin x - x cos x) / x^3| <= min(1, 3 (1 + x) / x^3); the
         * kernel's forms are within 1e-9 of it */
        double x = M_PI * sqrt((th * th * Na * Na + tk * tk * Nb * Nb + tl * tl * Nc * Nc) * fudge);
        double env = 3.0 * (1.0 + x) / (x * x * x);
        double f = NNN * 0.723601254558268 * (env < 1.0 ? env : 1.0) * (1.0 + 1e-9);
        return x != x ? x : f * f;
    }
    /* the reciprocal distance squared, at least gram_min |t|^2 */
    double rad = gram_min * (th * th + tk * tk + tl * tl) * (NNN * NNN) * fudge;
    if (shape == NB_SHAPE_GAUSS) return NNN * NNN * exp_poly(-2.0 * rad / 0.63) * (1.0 + 1e-9);
    return rad != rad ? rad : rad < 0.3969 ? NNN * NNN : 0.0;
}

/* U[e] >= the sum over every orientation of F_latt^2 F_cell^2 of sample e */
NB_ALWAYS_INLINE void lattice_bounds_shape(const int shape, const nb_kernel_ctx *k, const workspace *ws, int n,
                                           double *restrict U)
{
    const nb_setup *s = k->s;
    const nb_skip_tables *t = k->skip;
    const double Na = s->Na, Nb = s->Nb, Nc = s->Nc, fudge = s->fudge, gram_min = t->gram_min;
    const double h_lo = t->h_lo, h_hi = t->h_hi, k_lo = t->k_lo, k_hi = t->k_hi, l_lo = t->l_lo, l_hi = t->l_hi;
    const double h_stride = t->h_stride, k_stride = t->k_stride, dF = t->abs_default_F, F_max = t->F_max;
    const double *restrict pair = t->pair_F;
    const vec_consts *restrict g = &ws->c;             /* the grid, for a single node */
    const double *restrict F = g->F;
    const double hmin = g->hmin, hmax = g->hmax, kmin = g->kmin, kmax = g->kmax, lmin = g->lmin, lmax = g->lmax;
    const double hstride = g->hstride, kstride = g->kstride;
    const double *restrict Sx = ws->Sx, *restrict Sy = ws->Sy, *restrict Sz = ws->Sz;
    for (int e = 0; e < n; ++e) U[e] = 0.0;
    for (int b = 0; b < t->n_blocks; ++b) {
        const double *c = t->centre + 9 * b, *r = t->radius + 3 * b;
        const double ra = r[0], rb = r[1], rc = r[2], count = t->count[b];
        const double a0 = c[0], a1 = c[1], a2 = c[2], b0 = c[3], b1 = c[4], b2 = c[5], c0 = c[6], c1 = c[7], c2 = c[8];
#pragma GCC ivdep
        for (int e = 0; e < n; ++e) {
            double len = sqrt(Sx[e] * Sx[e] + Sy[e] * Sy[e] + Sz[e] * Sz[e]);
            double h = a0 * Sx[e] + a1 * Sy[e] + a2 * Sz[e];
            double kk = b0 * Sx[e] + b1 * Sy[e] + b2 * Sz[e];
            double l = c0 * Sx[e] + c1 * Sy[e] + c2 * Sz[e];
            /* each step's own dot products round differently: 1e-9 (1 + |h|) covers that */
            double rh = ra * len + 1e-9 * (1.0 + fabs(h)), rk = rb * len + 1e-9 * (1.0 + fabs(kk));
            double rl = rc * len + 1e-9 * (1.0 + fabs(l));
            double lat_sqr = lattice_sqr_bound(shape, h, kk, l, rh, rk, rl, Na, Nb, Nc, fudge, gram_min);
            /* an interval narrower than 1 rounds to at most two nodes per
             * axis, n0 and n0 + 1; to one where it holds no half-integer */
            double h0 = nearest_index(h - rh), k0 = nearest_index(kk - rk), l0 = nearest_index(l - rl);
            double one = (h0 == nearest_index(h + rh) && k0 == nearest_index(kk + rk) && l0 == nearest_index(l + rl))
                             ? 1.0 : 0.0;
            double in = (h0 >= h_lo && h0 <= h_hi && k0 >= k_lo && k0 <= k_hi && l0 >= l_lo && l0 <= l_hi) ? 1.0 : 0.0;
            double off = (h0 - h_lo) * h_stride + (k0 - k_lo) * k_stride + (l0 - l_lo);
            int idx = (int)(in != 0.0 ? off : 0.0);
            double on_grid = (h0 >= hmin && h0 <= hmax && k0 >= kmin && k0 <= kmax && l0 >= lmin && l0 <= lmax) ? 1.0 : 0.0;
            double node_off = (h0 - hmin) * hstride + (k0 - kmin) * kstride + (l0 - lmin);
            int node = (int)(on_grid != 0.0 ? node_off : 0.0);
            /* products, not selects, as in accumulate_orientation: a select
             * would move the loads under the condition, which does not vectorise */
            double narrow = (rh < 0.5 && rk < 0.5 && rl < 0.5) ? 1.0 : 0.0;
            double F_pair = pair[idx] * in + dF * (1.0 - in);
            double F_one = fabs(F[node]) * on_grid + dF * (1.0 - on_grid);
            double Fb = ((F_one * one + F_pair * (1.0 - one)) * narrow + F_max * (1.0 - narrow));
            U[e] += count * lat_sqr * (Fb * Fb);
        }
    }
}

/* one loop per shape, each vectorised on its own */
#define NB_BOUNDS_FN(shape, name)                                                                        \
    __attribute__((noinline)) static void name(const nb_kernel_ctx *k, const workspace *ws, int n,       \
                                               double *restrict U)                                      \
    { lattice_bounds_shape(shape, k, ws, n, U); }
NB_BOUNDS_FN(NB_SHAPE_SQUARE, bounds_square)
NB_BOUNDS_FN(NB_SHAPE_ROUND, bounds_round)
NB_BOUNDS_FN(NB_SHAPE_GAUSS, bounds_gauss)
NB_BOUNDS_FN(NB_SHAPE_TOPHAT, bounds_tophat)

static void lattice_bounds(const nb_kernel_ctx *k, const workspace *ws, int n, double *restrict U)
{
    switch (k->s->xtal_shape) {
    case NB_SHAPE_ROUND: bounds_round(k, ws, n, U); break;
    case NB_SHAPE_GAUSS: bounds_gauss(k, ws, n, U); break;
    case NB_SHAPE_TOPHAT: bounds_tophat(k, ws, n, U); break;
    default: bounds_square(k, ws, n, U); break;
    }
}

/* the code (kernel_isa.h) of x in [0, 1]: its binary exponent and the top
 * three bits of its mantissa (kernel.c allows for x's own rounding) */
static signed char skip_code_of(double x)
{
    if (!(x >= ldexp(1.0, NB_SKIP_MIN_EXPONENT))) return NB_SKIP_TINY;   /* folded at compile time */
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int e = (int)((bits >> 52) & 0x7ff) - 1023, m = (int)((bits >> 49) & 7);
    return (signed char)(8 * e + m);
}

/* does every pixel of the block have exactly one sample? */
static int one_sample_each(const workspace *ws, int count)
{
    int all = 1;
    for (int i = 0; i < count; ++i) all &= ws->pix_n[i] == 1;
    return all;
}

/* bound[i] >= |the pixel f0+i's sum, scaled like the pixel| (NaN: unknown) */
static void pixel_bounds(const nb_kernel_ctx *k, workspace *ws, int f0, int f1, int n, double *bound)
{
    lattice_bounds(k, ws, n, ws->out);
    int j = 0;
    if (one_sample_each(ws, f1 - f0)) {
        for (int i = 0; i < f1 - f0; ++i) bound[i] = ws->out[i] * fabs(ws->w[i]);
    } else {
        for (int fp = f0; fp < f1; ++fp) {
            int m = ws->pix_n[fp - f0];
            double U = 0.0;
            for (int e = 0; e < m; ++e) U += ws->out[j + e] * fabs(ws->w[j + e]);
            bound[fp - f0] = U;
            j += m > 0 ? m : 0;
        }
    }
    pixels_scaled(k->s, ws->pfs, f1 - f0, bound);
    for (int i = 0; i < f1 - f0; ++i) bound[i] = ws->pix_n[i] < 0 ? 0.0 : fabs(bound[i]);
}

/* NB_PASS_SKIP: a pixel whose bound is <= skip_tau is skipped (pix_code:
 * its bound's code); the samples of the others move to the front, in
 * order.  Returns their count. */
static int skip_negligible(const nb_kernel_ctx *k, workspace *ws, int sp, int f0, int f1, int n)
{
    double *bound = ws->acc;      /* free until accumulate_block */
    pixel_bounds(k, ws, f0, f1, n, bound);
    if (k->first_stage_bound)     /* what the next stage would skip: does skipping pay? */
        for (int fp = f0; fp < f1; ++fp)
            if (ws->pix_n[fp - f0] >= 0) k->first_stage_bound[(size_t)(sp / NB_STAGE_STRIDE) * k->s->fpixels + fp] = (float)bound[fp - f0];
    const double tau = k->skip_tau, inv_tau = 1.0 / k->skip_tau;
    int j = 0, kept = 0;
    for (int fp = f0; fp < f1; ++fp) {
        int m = ws->pix_n[fp - f0];
        if (m < 0) continue;
        if (bound[fp - f0] <= tau) {          /* NaN: summed */
            ws->pix_code[fp - f0] = skip_code_of(bound[fp - f0] * inv_tau);
        } else {
            ws->pix_code[fp - f0] = NB_SKIP_SUMMED;
            for (int e = 0; e < m && kept != j; ++e) {
                ws->Sx[kept + e] = ws->Sx[j + e]; ws->Sy[kept + e] = ws->Sy[j + e];
                ws->Sz[kept + e] = ws->Sz[j + e]; ws->w[kept + e] = ws->w[j + e];
            }
            kept += m;
        }
        j += m;
    }
    return kept;
}

/* a whole number of the widest vectors (8 doubles) */
#define NB_PAD_SAMPLES 8

static void render_row(const nb_kernel_ctx *k, void *wsp, const uint16_t *mask, int sp, int fp_start, int interp0,
                       float *image, nb_row_result *rr)
{
    workspace *ws = wsp;
    const nb_setup *s = k->s;
    const int block = ws->block;
    for (int f0 = fp_start; f0 < s->fpixels; f0 += block) {
        if (nb_render_cancelled(k)) return;
        int f1 = f0 + block < s->fpixels ? f0 + block : s->fpixels;
        int n = sample_block(k, ws, mask, sp, f0, f1, rr);
        /* a skip threshold needs the vector path's sums (the step path
         * stands for the reference's order, and interpolation's fall-back
         * needs every step looked at) */
        const int skipping = k->pass == NB_PASS_SKIP && ws->vector_ok && !interp0;
        if (skipping) n = skip_negligible(k, ws, sp, f0, f1, n);
        if (ws->vector_ok) {
            /* skipping leaves a few samples: pad them to whole vectors
             * (S = 0, weight 0, results unused), where a scalar tail
             * would cost as much as the vectors before it */
            int padded = skipping ? (n + NB_PAD_SAMPLES - 1) / NB_PAD_SAMPLES * NB_PAD_SAMPLES : n;
            if (padded > ws->cap) padded = n;
            for (int j = n; j < padded; ++j) { ws->Sx[j] = 0.0; ws->Sy[j] = 0.0; ws->Sz[j] = 0.0; ws->w[j] = 0.0; }
            accumulate_block(k, ws, padded, interp0);
        }
        int j = 0;
        double *restrict I = ws->pix_I;
        for (int fp = f0; fp < f1; ++fp) {
            int m = ws->pix_n[fp - f0];
            if (m < 0) continue;
            size_t idx = (size_t)sp * s->fpixels + fp;
            signed char code = skipping ? ws->pix_code[fp - f0] : NB_SKIP_SUMMED;
            if (k->skip_code) k->skip_code[idx] = code;
            if (code != NB_SKIP_SUMMED) {            /* skipped: the background alone */
                I[fp - f0] = s->I_bg;
                continue;
            }
            int redo = !ws->vector_ok;
            /* a stencil left the grid (what follows that step depends on the
             * order) or a round spot's transform is next to a node */
            const int flagged = interp0 || s->xtal_shape == NB_SHAPE_ROUND;
            for (int e = 0; !redo && flagged && e < m; ++e) redo |= ws->out[j + e] != 0.0;
            if (redo) {
                I[fp - f0] = pixel_in_order(k, ws, j, m, interp0, fp, rr);
            } else {
                double sum = s->I_bg;
                for (int e = 0; e < m; ++e) sum += ws->acc[j + e] * ws->w[j + e];
                I[fp - f0] = sum;
            }
            j += m;
        }
        pixels_scaled(s, ws->pfs, f1 - f0, I);
        float *restrict row = image + (size_t)sp * s->fpixels;
        float peak = rr->peak;
        for (int fp = f0; fp < f1; ++fp) {
            if (ws->pix_n[fp - f0] < 0) continue;
            float v = (float)I[fp - f0];
            row[fp] = v;
            peak = v > peak ? v : peak;
        }
        rr->peak = peak;
    }
}

/* One pixel as the reference's printout sees it: its own samples summed step
 * by step.  Returns which groups of values this pixel set (NB_TRACE_*); the
 * others are left as they were.  -1: the pixel is not rendered. */
static int trace_pixel(const nb_kernel_ctx *k, void *wsp, const uint16_t *mask, int fp, int sp, int interp0,
                       nb_pixel_trace *t)
{
    workspace *ws = wsp;
    const nb_setup *s = k->s;
    nb_row_result rr = { -1, { 0, { 0, 0, 0 }, { 0, 0, 0 } }, 0.0 };
    int n = sample_block(k, ws, mask, sp, fp, fp + 1, &rr);
    if (ws->pix_n[0] < 0) return -1;
    const pixel_factors *pf = &ws->pfs[0];
    t->polar = pf->polar;
    t->omega_sr = pf->omega;
    t->capture_fraction = pf->capture;
    /* the last sub-pixel (last sensor layer) and, for sin(theta)/lambda, the
     * last source: the reference computes it before the -dmin cut */
    int last = s->thicksteps * s->oversample * s->oversample - 1;
    subpixel_position(s, ws->Fe[last], ws->Se[last], ws->Oe[last], t->pixel_pos_m);
    t->stol_per_m = 0.0;
    if (s->n_sources > 0) {
        const source_info *si = ws->src + s->n_sources - 1;
        const double d[3] = { ws->px[last], ws->py[last], ws->pz[last] };
        double S[3];
        for (int i = 0; i < 3; ++i) S[i] = scattering_component(d[i], si->inc[i], si->inv_lambda);
        t->stol_per_m = 0.5 * nb_norm(S);
    }
    sample_view v = { n, ws->Sx, ws->Sy, ws->Sz, ws->w };
    int interp = interp0, set = 0;
    nb_fallback_note fb = { 0, { 0, 0, 0 }, { 0, 0, 0 } };
    t->I = pixel_sum_in_order(k, &v, &interp, &fb, t, &set);
    if (set & NB_TRACE_STEP) {
        const nb_orientations *o = k->o;
        int q = t->orientation;
        t->a_m[0] = o->ax[q]; t->a_m[1] = o->ay[q]; t->a_m[2] = o->az[q];
        t->b_m[0] = o->bx[q]; t->b_m[1] = o->by[q]; t->b_m[2] = o->bz[q];
        t->c_m[0] = o->cx[q]; t->c_m[1] = o->cy[q]; t->c_m[2] = o->cz[q];
    }
    return set;
}

const nb_kernel_isa NB_ISA_CAT(nb_kernel, NB_ISA_SUFFIX) = { NB_ISA_NAME, workspace_new, workspace_free, render_row,
                                                             trace_pixel };
