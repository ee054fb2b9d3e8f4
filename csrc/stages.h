/* stages.h - the setup stages called in order by nb_setup_init (not installed). */
#ifndef NANOBRAGG_STAGES_H
#define NANOBRAGG_STAGES_H
#include "nanobragg.h"

/* Thomson cross section of the electron, r_e^2 (m^2) */
#define NB_RE_SQR 7.94079248018965e-30

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
