/* internal.h - helpers shared by the engine's source files (not installed). */
#ifndef NANOBRAGG_INTERNAL_H
#define NANOBRAGG_INTERNAL_H

#include <math.h>
#include <stdarg.h>
#include "nanobragg.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Is this the thread that called into the engine (OpenMP thread 0)?  Only
 * it runs callbacks and draws a noise stream during a render. */
static inline int nb_calling_thread(void)
{
#ifdef _OPENMP
    return omp_get_thread_num() == 0;
#else
    return 1;
#endif
}

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#ifndef M_1_PI
#define M_1_PI 0.31830988618379067154
#endif
#define NB_RTD (180.0 * M_1_PI)

/* 3-vectors */
static inline double nb_dot(const double *x, const double *y) { return x[0]*y[0] + x[1]*y[1] + x[2]*y[2]; }
static inline double nb_norm(const double *v) { return sqrt(v[0]*v[0] + v[1]*v[1] + v[2]*v[2]); }
static inline void nb_cross(const double *x, const double *y, double *z) {
    double t0 = x[1]*y[2] - x[2]*y[1], t1 = x[2]*y[0] - x[0]*y[2], t2 = x[0]*y[1] - x[1]*y[0];
    z[0] = t0; z[1] = t1; z[2] = t2;
}
static inline void nb_scale(const double *v, double s, double *out) { out[0] = s*v[0]; out[1] = s*v[1]; out[2] = s*v[2]; }
/* normalise in place or into out; returns the old length (zero vector -> zeros) */
static inline double nb_unitize(const double *v, double *out) {
    double m = nb_norm(v);
    if (m != 0.0) { out[0] = v[0]/m; out[1] = v[1]/m; out[2] = v[2]/m; }
    else { out[0] = out[1] = out[2] = 0.0; }
    return m;
}

/* the region of interest (inclusive pixel bounds, resolved by geometry.c) */
static inline int nb_in_roi(const nb_setup *s, int fast, int slow) {
    return fast >= s->roi_xmin && fast <= s->roi_xmax && slow >= s->roi_ymin && slow <= s->roi_ymax;
}

/* the columns lo..hi of row slow inside the ROI (none: lo > hi) */
static inline void nb_roi_columns(const nb_setup *s, int slow, int *lo, int *hi) {
    *lo = s->roi_xmin > 0 ? s->roi_xmin : 0;
    *hi = s->roi_xmax < s->fpixels - 1 ? s->roi_xmax : s->fpixels - 1;
    if (slow < s->roi_ymin || slow > s->roi_ymax) *hi = *lo - 1;
}

/* rotations (geometry.c) */
void nb_rotate_xyz(const double *v, double *out, double rx, double ry, double rz);
void nb_rotate_axis(const double *v, double *out, const double *axis, double phi);
void nb_rotate_umat(const double *v, double *out, const double *umat);

/* Kahn polarization factor for an incident and a diffracted unit vector:
 * 0.5 (1 + cos^2 2theta - K cos 2psi sin^2 2theta), psi the azimuth of the
 * diffracted ray about the incident E-vector.  Inline: the renderers call
 * it per sample. */
static inline double nb_polarization_factor(double kahn, const double *incident, const double *diffracted,
                                            const double *axis)
{
    double cos2t = nb_dot(incident, diffracted);
    double cos2t_sqr = cos2t * cos2t, sin2t_sqr = 1 - cos2t_sqr, psi = 0.0;
    if (kahn != 0.0) {
        double B_in[3], E_in[3];
        nb_cross(axis, incident, B_in);
        nb_unitize(B_in, B_in);
        nb_cross(incident, B_in, E_in);
        nb_unitize(E_in, E_in);
        psi = -atan2(nb_dot(diffracted, B_in), nb_dot(diffracted, E_in));
    }
    return 0.5 * (1.0 + cos2t_sqr - kahn * cos(2 * psi) * sin2t_sqr);
}

/* A point of the detector at (F, S, O) along its axes from pix0 (m); on a
 * curved detector the flat coordinates become angles on a sphere of radius
 * distance.  Inline: the renderers call it per sub-pixel. */
static inline void nb_detector_point(const double *fdet, const double *sdet, const double *odet, const double *pix0,
                                     const double *beam, double distance_m, int curved, double F, double S,
                                     double O, double *pos)
{
    for (int i = 0; i < 3; ++i) pos[i] = F * fdet[i] + S * sdet[i] + O * odet[i] + pix0[i];
    if (curved) {
        /* a sphere of radius distance: the flat coordinates become angles */
        double r[3], tmp[3];
        nb_scale(beam, distance_m, r);
        nb_rotate_axis(r, tmp, sdet, pos[1] / distance_m);
        nb_rotate_axis(tmp, pos, fdet, pos[2] / distance_m);
    }
}


/* The uniform generator, Numerical Recipes' ran1 (see rng.c): inline, as
 * the noise draws call it tens of millions of times in one serial stream. */
#define NB_LEHMER_MUL   16807L
#define NB_LEHMER_MOD   2147483647L      /* 2^31 - 1, a Mersenne prime */
#define NB_SCHRAGE_Q    127773L          /* NB_LEHMER_MOD / NB_LEHMER_MUL */
#define NB_SCHRAGE_R    2836L            /* NB_LEHMER_MOD % NB_LEHMER_MUL */
#define NB_SHUFFLE_SLOTS 32
#define NB_WARMUP_STEPS  8
/* width of the range of states that maps onto one table slot */
#define NB_SLOT_WIDTH   (1L + (NB_LEHMER_MOD - 1L) / NB_SHUFFLE_SLOTS)
/* largest value handed out: keeps the deviate strictly below 1 in float */
#define NB_UNIFORM_MAX  (1.0 - 1.2e-7)

/* x -> 16807 x mod (2^31-1) by Schrage's factorisation, exact for
 * 0 <= x <= 2^31-1 without needing more than 32-bit intermediates. */
static inline long nb_lehmer_step(long x)
{
    long quot = x / NB_SCHRAGE_Q;
    long next = NB_LEHMER_MUL * (x - quot * NB_SCHRAGE_Q) - NB_SCHRAGE_R * quot;
    return next < 0 ? next + NB_LEHMER_MOD : next;
}

/* Bring a state word back into [0, 2^31-1].  Inside that range this is the
 * identity; outside it the reference's arithmetic would leave the table's
 * index range, so we use the mathematically equivalent residue instead. */
static inline long nb_fold_state(long x)
{
    if (x >= 0 && x <= NB_LEHMER_MOD) return x;
    unsigned long mag = x < 0 ? 0UL - (unsigned long)x : (unsigned long)x;
    return (long)(mag % (unsigned long)NB_LEHMER_MOD);
}

/* (Re)load the shuffle table from a state word (rng.c) */
void nb_rng_load_table(nb_rng *rng, long *state);

static inline float nb_ran1_inline(nb_rng *rng, long *idum)
{
    if (*idum <= 0 || rng->iy == 0) nb_rng_load_table(rng, idum);
    else *idum = nb_fold_state(*idum);

    *idum = nb_lehmer_step(*idum);
    /* the previous output picks the slot; the mask only matters for a
     * caller-corrupted table and keeps the index in bounds */
    int slot = (int)((rng->iy < 0 ? 0L : rng->iy) / NB_SLOT_WIDTH) & (NB_SHUFFLE_SLOTS - 1);
    rng->iy = rng->iv[slot];
    rng->iv[slot] = *idum;

    /* scale by the reciprocal (not a division) and round to float, as the
     * reference does, then clamp away from 1 */
    float u = (float)((1.0 / NB_LEHMER_MOD) * (double)rng->iy);
    if (u > NB_UNIFORM_MAX) return (float)NB_UNIFORM_MAX;
    return u;
}


/* random orientations (rng.c): a rotation drawn uniformly within a
 * spherical cap of the given angular radius, as the reference draws it
 * (single-precision spread, three uniform deviates per matrix). */
void nb_mosaic_umat(float mosaicity_rad, double umat[9], nb_rng *rng, long *idum);
/* rotation matrix -> rotations about x, y, z (radians) */
void nb_umat_to_misset(const double umat[9], double misset_rad[3]);
/* deviates used by the noise image */
typedef struct nb_deviates {
    nb_rng *rng;
    long *idum;
    int gauss_has_spare; float gauss_spare;   /* Box-Muller keeps one deviate */
    float pois_oldm, pois_sq, pois_alxm, pois_g;
    float *lgamma_int;            /* optional cache of ln Gamma(k+1), NAN = not yet computed */
    size_t lgamma_n;
    int lgamma_grow;              /* 1: the cache grows to each candidate it meets */
} nb_deviates;
void nb_deviates_init(nb_deviates *d, nb_rng *rng, long *idum);
/* cache ln Gamma(k+1) for k < n (the rejection method's integer candidates);
 * the same values, computed once; returns 0 if out of memory (no cache) */
int nb_deviates_cache(nb_deviates *d, size_t n);
void nb_deviates_free(nb_deviates *d);
/* the cache sized for means up to max_mean (none if the rejection method is not used) */
void nb_deviates_cache_for(nb_deviates *d, double max_mean);
float nb_poidev(nb_deviates *d, float mean);
float nb_gaussdev(nb_deviates *d);
/* What nb_poidev computes from the mean alone, ahead of the stream (in
 * parallel): nb_poidev_prepared() then draws the same deviate as nb_poidev. */
typedef struct { float sq, alxm, g; } nb_poisson_pre;
void nb_poisson_prepare(float mean, nb_poisson_pre *pre);
float nb_poidev_prepared(nb_deviates *d, float mean, const nb_poisson_pre *pre);

/* One sampled dimension (phi, divergence, dispersion, sensor depth): the
 * reference fills in whichever of range, step and count the user left out
 * (config.c, the one copy of the rules, also used by the amorphous renderer);
 * a sweep other than phi with no extent collapses to one sample.  The count
 * is a double until the caller has bounded it. */
typedef struct { double range, step, count; } nb_sweep;
typedef enum { NB_SWEEP_PHI, NB_SWEEP_DIV, NB_SWEEP_DISP, NB_SWEEP_THICK } nb_sweep_kind;
void nb_resolve_sweep(nb_sweep *w, nb_sweep_kind kind);

/* the error message and the setup's log (log.c) */
void nb_log(nb_setup *s, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void nb_set_error(char *err, size_t errlen, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
