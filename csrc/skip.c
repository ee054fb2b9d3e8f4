/*
 * skip.c - the tables behind the bound of a pixel's lattice sum, with which
 * a render skips the pixels that provably stay below NB_SKIP_FRACTION of
 * the peak (docs/skipping.md; the bound itself is evaluated in
 * kernel/body.c, the passes are run by kernel.c).
 *
 * For the square crystal |sin(N pi h) / sin(pi h)| <= min(N, 1/sin(pi t)),
 * t the distance of h from the nearest integer; this holds for integral N
 * only.  The other
 * shapes depend on the offsets t from the nearest node: round spots through
 * |3 (sin x - x cos x) / x^3| <= min(1, 3 (1 + x) / x^3), Gaussian and
 * tophat ones through the reciprocal distance, at least the smallest
 * eigenvalue of the reciprocal axes' Gram matrix times |t|^2.  Over a
 * block of orientations h moves within radius |S| of the block centre's
 * a_c.S, and the structure factor is one of at most two nodes per axis.
 */
#include <stdlib.h>
#include <string.h>
#include "kernel_isa.h"

/* orientations per block: the bound costs about 1/ORIENT_BLOCK of the sum;
 * smaller blocks give tighter bounds (a smaller radius) */
#define ORIENT_BLOCK 16
/* the pair table stays below this many cells (8 bytes each) */
#define PAIR_CELLS_MAX 67108864.0

static int integral_cells(double N) { return N >= 1.0 && N == floor(N) && N < 1e9; }

static int build_blocks(const nb_orientations *o, nb_skip_tables *t)
{
    int nb = (o->n + ORIENT_BLOCK - 1) / ORIENT_BLOCK;
    t->n_blocks = nb;
    t->count = malloc(sizeof(double) * (size_t)nb);
    t->centre = malloc(sizeof(double) * 9 * (size_t)nb);
    t->radius = malloc(sizeof(double) * 3 * (size_t)nb);
    if (!t->count || !t->centre || !t->radius) return NB_ENOMEM;
    const double *col[9] = { o->ax, o->ay, o->az, o->bx, o->by, o->bz, o->cx, o->cy, o->cz };
    for (int b = 0; b < nb; ++b) {
        int q0 = b * ORIENT_BLOCK, q1 = q0 + ORIENT_BLOCK < o->n ? q0 + ORIENT_BLOCK : o->n;
        double *c = t->centre + 9 * b, *r = t->radius + 3 * b;
        t->count[b] = q1 - q0;
        for (int i = 0; i < 9; ++i) {
            double sum = 0.0;
            for (int q = q0; q < q1; ++q) sum += col[i][q];
            c[i] = sum / (q1 - q0);
        }
        for (int v = 0; v < 3; ++v) {
            double rmax = 0.0;
            for (int q = q0; q < q1; ++q) {
                double d0 = col[3 * v][q] - c[3 * v], d1 = col[3 * v + 1][q] - c[3 * v + 1];
                double d2 = col[3 * v + 2][q] - c[3 * v + 2];
                double d = sqrt(d0 * d0 + d1 * d1 + d2 * d2);
                if (d > rmax) rmax = d;
            }
            /* the rounding of the distance, and of the centre's dot product
             * against each step's, is covered here and in the kernel */
            r[v] = rmax * (1.0 + 1e-9);
        }
    }
    return NB_OK;
}

/* a NaN structure factor makes its bounds NaN: nothing near it is skipped */
static double max_or_nan(double x, double y) { return x != x || y != y ? NAN : x > y ? x : y; }

/* dst[o][i][c] = max(src[o][i][c], src[o][i+1][c]): an (outer, n, inner)
 * array becomes (outer, n-1, inner) */
static void pair_max_along(const double *src, double *dst, long outer, long n, long inner)
{
    for (long o = 0; o < outer; ++o)
        for (long i = 0; i + 1 < n; ++i)
            for (long c = 0; c < inner; ++c)
                dst[(o * (n - 1) + i) * inner + c] = max_or_nan(src[(o * n + i) * inner + c], src[(o * n + i + 1) * inner + c]);
}

/* the largest |F| of each 2x2x2 cell of nodes, off-grid nodes at
 * |default_F|: one pass of pairwise maxima per axis */
static int build_pairs(const nb_setup *s, const nb_hkl *g, int have_grid, nb_skip_tables *t)
{
    double dF = fabs(s->default_F);
    t->abs_default_F = dF;
    t->F_max = dF;
    if (!have_grid) {
        /* an empty box: every node is off the grid */
        t->h_lo = t->k_lo = t->l_lo = 1.0;
        t->h_hi = t->k_hi = t->l_hi = 0.0;
        t->h_stride = t->k_stride = 0.0;
        t->pair_F = calloc(1, sizeof(double));
        return t->pair_F ? NB_OK : NB_ENOMEM;
    }
    /* nodes h_min-1 .. h_max+1 (likewise k, l): the grid with a ring of default_F */
    long nh = g->h_max - g->h_min + 3, nk = g->k_max - g->k_min + 3, nl = g->l_max - g->l_min + 3;
    if ((double)nh * nk * nl > PAIR_CELLS_MAX) return NB_EINVAL;
    double *a = malloc(sizeof(double) * (size_t)(nh * nk * nl));
    double *b = malloc(sizeof(double) * (size_t)(nh * nk * nl));
    if (!a || !b) {
        free(a); free(b);
        return NB_ENOMEM;
    }
    for (long i = 0; i < nh; ++i)
        for (long j = 0; j < nk; ++j)
            for (long m = 0; m < nl; ++m) {
                int h = g->h_min - 1 + (int)i, k = g->k_min - 1 + (int)j, l = g->l_min - 1 + (int)m;
                int in = h >= g->h_min && h <= g->h_max && k >= g->k_min && k <= g->k_max && l >= g->l_min &&
                         l <= g->l_max;
                double f = in ? fabs(g->F[nb_hkl_index(g, h, k, l)]) : dF;
                a[(i * nk + j) * nl + m] = f;
                t->F_max = max_or_nan(t->F_max, f);
            }
    /* pairwise maxima along l, then k, then h: (nh, nk, nl) -> (nh-1, nk-1, nl-1) */
    pair_max_along(a, b, nh * nk, nl, 1);
    pair_max_along(b, a, nh, nk, nl - 1);
    pair_max_along(a, b, 1, nh, (nk - 1) * (nl - 1));
    free(a);
    t->pair_F = b;
    t->h_lo = g->h_min - 1; t->h_hi = g->h_max;
    t->k_lo = g->k_min - 1; t->k_hi = g->k_max;
    t->l_lo = g->l_min - 1; t->l_hi = g->l_max;
    t->k_stride = (double)(nl - 1);
    t->h_stride = (double)(nk - 1) * (double)(nl - 1);
    return NB_OK;
}

/* the smallest eigenvalue of the symmetric 3x3 matrix g (the closed form
 * for three real roots), less a margin for its rounding; 0 if not positive */
static double smallest_eigenvalue(const double g[3][3])
{
    double p1 = g[0][1] * g[0][1] + g[0][2] * g[0][2] + g[1][2] * g[1][2];
    double q = (g[0][0] + g[1][1] + g[2][2]) / 3.0;
    double p2 = (g[0][0] - q) * (g[0][0] - q) + (g[1][1] - q) * (g[1][1] - q) + (g[2][2] - q) * (g[2][2] - q) + 2 * p1;
    double p = sqrt(p2 / 6.0);
    double lo;
    if (p == 0.0) {
        lo = q;                   /* a multiple of the identity */
    } else {
        double b[3][3];
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) b[i][j] = (g[i][j] - (i == j ? q : 0.0)) / p;
        double det = b[0][0] * (b[1][1] * b[2][2] - b[1][2] * b[2][1]) - b[0][1] * (b[1][0] * b[2][2] - b[1][2] * b[2][0])
                   + b[0][2] * (b[1][0] * b[2][1] - b[1][1] * b[2][0]);
        double r = det / 2.0;
        double phi = r <= -1.0 ? M_PI / 3.0 : r >= 1.0 ? 0.0 : acos(r) / 3.0;
        lo = q + 2.0 * p * cos(phi + 2.0 * M_PI / 3.0);
    }
    /* the closed form loses ~1e-16 of the largest eigenvalue (<= 3 q) */
    lo -= 1e-9 * 3.0 * fabs(q);
    return lo > 0.0 ? lo : 0.0;
}

int nb_skip_tables_build(const nb_setup *s, const nb_hkl *hkl, int have_grid, const nb_orientations *o,
                         nb_skip_tables *t)
{
    memset(t, 0, sizeof *t);
    if (o->n <= 0) return NB_EINVAL;
    if (s->xtal_shape == NB_SHAPE_SQUARE) {
        if (!integral_cells(s->Na) || !integral_cells(s->Nb) || !integral_cells(s->Nc)) return NB_EINVAL;
        /* one cell on every axis: F_latt = 1, nothing to gain */
        if (s->Na == 1.0 && s->Nb == 1.0 && s->Nc == 1.0) return NB_EINVAL;
    } else if (!(s->fudge > 0.0) || !(s->Na > 0.0 && s->Nb > 0.0 && s->Nc > 0.0)) {
        return NB_EINVAL;
    }
    const double *ax[3] = { s->a_star, s->b_star, s->c_star };
    double g[3][3];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g[i][j] = ax[i][0] * ax[j][0] + ax[i][1] * ax[j][1] + ax[i][2] * ax[j][2];
    t->gram_min = smallest_eigenvalue(g);
    int rc = build_blocks(o, t);
    if (rc == NB_OK) rc = build_pairs(s, hkl, have_grid, t);
    if (rc != NB_OK) nb_skip_tables_free(t);
    return rc;
}

void nb_skip_tables_free(nb_skip_tables *t)
{
    free(t->count);
    free(t->centre);
    free(t->radius);
    free(t->pair_F);
    memset(t, 0, sizeof *t);
}
