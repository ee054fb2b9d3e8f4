/* stages.h - the setup stages called in order by nb_setup_init (not installed). */
#ifndef NANOBRAGG_STAGES_H
#define NANOBRAGG_STAGES_H
#include "nanobragg.h"

/* Thomson cross section of the electron, r_e^2 (m^2) */
#define NB_RE_SQR 7.94079248018965e-30

/* Resource limits (checked by nb_setup_init before anything is allocated):
 * inputs beyond these would need more memory than is sensible, or would
 * overflow the engine's int counters.  They are errors, never clamps. */
#define NB_MAX_PIXELS        268435456.0  /* 2^28 detector pixels: 1 GiB per float image */
#define NB_MAX_SWEEP_STEPS   1000000.0    /* steps of any one sweep: phi, divergence, dispersion, sensor layers */
#define NB_MAX_SOURCES       1000000.0    /* incident directions x wavelengths */
#define NB_MAX_ORIENTATIONS  10000000.0   /* phi steps x mosaic domains (72 bytes each) */
#define NB_MAX_OVERSAMPLE    1000         /* sub-pixels per pixel edge */
#define NB_MAX_PIXEL_SAMPLES 4194304.0    /* sensor layers x oversample^2 x sources: 56 bytes each per render thread */

/* geometry.c: beam centre defaults, convention frame, unit vectors */
void nb_detector_frame(const nb_params *p, nb_setup *s);
/* geometry.c: pivot, rotations and the derived beam centres and origins */
void nb_detector_place(const nb_params *p, nb_setup *s);
/* crystal.c: cell vectors, orientation, size in cells, oversampling */
int nb_crystal_setup(const nb_params *p, nb_setup *s, long *misset_seed, double sample_m[3], char *err, size_t errlen);
/* sources.c: the list of incident directions and wavelengths */
int nb_sources_setup(const nb_params *p, nb_setup *s, char *err, size_t errlen);
/* crystal.c: one rotation per mosaic domain */
int nb_mosaic_setup(nb_setup *s, long *mosaic_seed, char *err, size_t errlen);

#endif
