/*
 * nanobragg.h - public interface of the nanobragg engine.
 *
 * The engine simulates the diffraction image of a small crystal: a sum over
 * sub-pixels, sensor layers, sources, phi steps and mosaic domains of
 * |F_cell|^2 |F_latt|^2, scaled by the Thomson cross section, the fluence,
 * the pixel's solid angle, polarization and the sensor's capture fraction.
 *
 * Flow: nb_params (what the user typed, in the flags' units: mm, Angstrom,
 * degrees, microns, mrad, percent) -> nb_setup_init() -> nb_setup (SI units,
 * every default and convention resolved) -> nb_render() -> float image ->
 * nb_int_image() / nb_pgm_image() / nb_noise_image() -> SMV/PGM encoders.
 *
 * The engine never prints, never exits and never touches files: readers parse
 * memory buffers, encoders fill memory buffers, and messages go into the
 * caller-visible log of the setup.
 */
#ifndef NANOBRAGG_H
#define NANOBRAGG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif


typedef enum { NB_CONV_CUSTOM = 0, NB_CONV_ADXV, NB_CONV_MOSFLM, NB_CONV_XDS, NB_CONV_DIALS, NB_CONV_DENZO } nb_convention;
typedef enum { NB_PIVOT_BEAM = 0, NB_PIVOT_SAMPLE = 1 } nb_pivot;
typedef enum { NB_SHAPE_SQUARE = 0, NB_SHAPE_ROUND, NB_SHAPE_GAUSS, NB_SHAPE_TOPHAT } nb_shape;
typedef enum { NB_MISSET_NONE = 0, NB_MISSET_ANGLES = 1, NB_MISSET_RANDOM = 2 } nb_misset_mode;
typedef enum { NB_PIX0_NONE = 0, NB_PIX0_METRES = 1, NB_PIX0_MILLIMETRES = 2 } nb_pix0_units;

/* Error codes returned by the engine (0 = success). */
enum { NB_OK = 0, NB_EINVAL = 1, NB_ENOMEM = 2, NB_EFORMAT = 3, NB_ECANCELLED = 4 };

/*
 * User parameters, in the units of the command-line flags.  "Unset" values
 * are NAN for doubles and -1 for counts unless noted; nb_params_init() fills
 * the reference defaults.  Front ends (CLI, simulate(), C callers) fill this
 * left to right, so that the last flag wins, exactly as the reference does
 * for the pivot and the convention.
 */
typedef struct nb_params {
    /* --- crystal --- */
    int has_cell;                 /* -cell given */
    double cell[6];               /* a b c (Angstrom), alpha beta gamma (degrees); 0 = default */
    int has_amat;                 /* -mat given */
    double amat[9];               /* MOSFLM A matrix as in the file, row-major (3 lines of 3) */
    nb_misset_mode misset_mode;
    double misset_deg[3];         /* rotations about x, y, z (degrees) */
    long misset_seed;             /* -misset_seed as typed */
    int has_misset_seed;          /* 0: use seed */
    double Na, Nb, Nc;            /* unit cells along a, b, c */
    double xtal_size_mm[3];       /* crystal size along x, y, z (mm); 0 = derive from N */
    nb_shape xtal_shape;
    double fudge;
    double default_F;             /* structure factor for reflections not in the HKL grid */
    int interpolate;              /* -1 auto (from Na,Nb,Nc), 0 off, 1 on */

    /* --- beam --- */
    double lambda_A;              /* wavelength (Angstrom) */
    double dispersion_pct;        /* delta-lambda/lambda (percent) */
    int dispsteps;                /* -1 = auto */
    double hdivrange_mrad, vdivrange_mrad;   /* -1 = auto */
    double hdivstep_mrad, vdivstep_mrad;     /* -1 = auto */
    int hdivsteps, vdivsteps;                /* -1 = auto */
    int round_div;                /* 1: trim the divergence grid to an ellipse */
    double fluence;               /* photons/m^2 */
    double flux;                  /* photons/s; 0 = use fluence */
    double exposure_s;
    double beamsize_mm;
    double polarization;          /* Kahn factor */
    int nopolar;
    /* user sources: n rows of X Y Z weight lambda(m), NAN where a column is missing */
    const double *sources;
    int n_sources;

    /* --- detector --- */
    double distance_mm;           /* crystal to detector along the beam */
    double close_distance_mm;     /* NAN = unset */
    double pixel_mm;
    double detsize_f_mm, detsize_s_mm;
    int fpixels, spixels;         /* 0 = from detsize */
    double Xbeam_mm, Ybeam_mm;    /* NAN = unset */
    double Xclose_mm, Yclose_mm;  /* NAN = unset */
    double ORGX_px, ORGY_px;      /* NAN = unset */
    nb_pivot pivot;
    nb_convention convention;
    double fdet[3], sdet[3], odet[3], beam[3], polar_vec[3], spindle[3], twotheta_axis[3];
    int custom_basis;             /* one of -fdet/-sdet/-odet_vector was given */
    nb_pix0_units pix0_units;
    double pix0[3];               /* in pix0_units */
    double rot_deg[3];            /* detector rotations about x, y, z (degrees) */
    double twotheta_deg;
    int curved_det;
    int point_pixel;
    double detector_abs_um;       /* attenuation depth; NAN unset, 0 or INFINITY = no absorption */
    double detector_thick_um;
    int detector_thicksteps;      /* -1 = auto */
    int oversample;               /* <= 0 = auto */
    int oversample_thick, oversample_polar, oversample_omega;
    int roi[4];                   /* xmin xmax ymin ymax (pixels, inclusive); -1 = edge */
    double dmin_A;                /* 0 = no cut */
    double water_um;

    /* --- spindle and mosaicity --- */
    double phi_deg, osc_deg, phistep_deg;    /* osc/phistep -1 = auto */
    int phisteps;                 /* -1 = auto */
    double mosaic_deg;            /* -1 = unset */
    int mosaic_domains;           /* -1 = auto */
    long mosaic_seed;             /* as typed */

    /* --- noise and output scaling --- */
    long seed;                    /* -seed as typed */
    double adc_offset;
    double intfile_scale;         /* <= 0: auto-scale to 55000 */
    double pgm_scale;             /* <= 0: auto */
} nb_params;

void nb_params_init(nb_params *p);

/* The fields of nb_params by name (every field but `sources`/`n_sources`,
 * which come from an array): the one table front ends set them through. */
typedef enum { NB_FIELD_DOUBLE = 0, NB_FIELD_INT, NB_FIELD_LONG, NB_FIELD_ENUM } nb_field_kind;
typedef struct nb_field {
    const char *name;             /* as in struct nb_params */
    nb_field_kind kind;           /* NB_FIELD_ENUM: stored as int */
    int count;                    /* 1 for scalars, else the array length */
    const char *const *choices;   /* NB_FIELD_ENUM: value names indexed by value, NULL-terminated */
    const char *sets_flag;        /* the has_* field set to 1 along with this one, or NULL */
} nb_field;
int nb_params_nfields(void);
const nb_field *nb_params_field(int i);                     /* NULL outside 0..nfields-1 */
const nb_field *nb_params_find(const char *name);           /* NULL if unknown */
int nb_params_enum_value(const nb_field *f, const char *name);   /* case-insensitive; -1 if none */
const char *nb_params_enum_name(const nb_field *f, int value);  /* NULL if none */
/* Set one field (and its has_* flag) from count numbers, or an enum field
 * from its name (enum_text non-NULL; values ignored).  Integer and enum
 * fields take integral values in their range.  NB_OK, or NB_EINVAL with a
 * message "parameter 'name': ..." and *p unchanged. */
int nb_params_set(nb_params *p, const char *name, const double *values, int n, const char *enum_text,
                  char *err, size_t errlen);
/* The same from integers, exactly (seeds beyond 2^53). */
int nb_params_set_integers(nb_params *p, const char *name, const long long *values, int n,
                           char *err, size_t errlen);

/* The uniform generator shared by misset, mosaic and noise streams: one
 * shuffle table, each stream with its own state word, as the reference. */
typedef struct nb_rng {
    long iy;
    long iv[32];
} nb_rng;
float nb_ran1(nb_rng *rng, long *idum);

/* Structure factors on a dense grid with one padding plane per axis. */
typedef struct nb_hkl {
    int h_min, h_max, k_min, k_max, l_min, l_max;
    long count;                   /* reflections read; 0 = no grid (default_F everywhere) */
    double *F;                    /* (h_range+1)*(k_range+1)*(l_range+1) values */
    /* what reading left in the reference's variables, which its -printout
     * shows for steps no pixel has taken yet */
    int read_as;                  /* NB_HKL_ROWS (a caller's rows), NB_HKL_TEXT or NB_HKL_FDUMP */
    double last_row[4];           /* NB_HKL_TEXT: the last row, h k l F */
} nb_hkl;
#define NB_HKL_ROWS 0
#define NB_HKL_TEXT 1
#define NB_HKL_FDUMP 2

static inline size_t nb_hkl_index(const nb_hkl *g, int h, int k, int l) {
    size_t kr = (size_t)(g->k_max - g->k_min + 2), lr = (size_t)(g->l_max - g->l_min + 2);
    return ((size_t)(h - g->h_min) * kr + (size_t)(k - g->k_min)) * lr + (size_t)(l - g->l_min);
}

/* Text HKL ("h k l F" per line; '#' comments, blank lines and extra columns
 * allowed).  Grid cells not listed get default_F.  Returns NB_OK or an error
 * with a message naming the line. */
int nb_hkl_parse_text(const char *text, size_t len, double default_F, nb_hkl *out, char *err, size_t errlen);
/* Fdump.bin cache, in the reference's binary layout. */
int nb_fdump_parse(const unsigned char *buf, size_t len, nb_hkl *out, char *err, size_t errlen);
size_t nb_fdump_size(const nb_hkl *g);
void nb_fdump_encode(const nb_hkl *g, unsigned char *out);   /* out: nb_fdump_size() bytes */
/* Grid from n rows of h k l F (integral indices), as a caller's array;
 * n = 0 gives the empty grid (count 0, F NULL, nb_fdump_size() 0). */
int nb_hkl_from_rows(const double *rows, size_t n, double default_F, nb_hkl *out, char *err, size_t errlen);
void nb_hkl_free(nb_hkl *g);

/* Everything the kernel needs, in SI units, with all defaults resolved. */
typedef struct nb_setup {
    /* detector */
    int fpixels, spixels;
    double pixel_m, detsize_f_m, detsize_s_m;
    double distance_m, close_distance_m;
    double fdet[3], sdet[3], odet[3], pix0_m[3], beam[3], polar_vec[3], vert_vec[3], spindle[3], twotheta_axis[3];
    double Xbeam_m, Ybeam_m, Fbeam_m, Sbeam_m, Xclose_m, Yclose_m, Fclose_m, Sclose_m;
    double ORGX_px, ORGY_px, dials_origin_mm[3];
    double twotheta_rad;
    nb_convention convention;
    nb_pivot pivot;
    int curved_det, point_pixel;
    int roi_xmin, roi_xmax, roi_ymin, roi_ymax;
    int oversample, oversample_thick, oversample_polar, oversample_omega;
    double subpixel_m;
    int thicksteps;
    double thick_m, thickstep_m, mu_per_m;
    /* beam */
    double lambda0_m, fluence, flux, exposure_s, beamsize_m;
    double polarization;
    int nopolar;
    int n_sources, divsteps, dispsteps, hdivsteps, vdivsteps;
    double hdivrange_rad, vdivrange_rad, hdivstep_rad, vdivstep_rad, dispersion, dispstep;
    double *source_dir;           /* n_sources x 3, unit vectors from sample toward the source */
    double *source_weight;        /* n_sources (not used in the sum, as the reference) */
    double *source_lambda_m;      /* n_sources */
    /* crystal */
    double a0[3], b0[3], c0[3];   /* direct cell vectors at phi=0, mosaic=0 (m) */
    double a_star[3], b_star[3], c_star[3];   /* reciprocal vectors (1/Angstrom), unrotated */
    double cell[6];               /* a b c (A) alpha beta gamma (deg) */
    double V_cell_A3;
    double Na, Nb, Nc;
    nb_shape xtal_shape;
    double fudge;
    double default_F;
    int interpolate;              /* resolved; the render also turns it off with no HKL grid */
    double dmin_m;
    double water_m;
    double I_bg;                  /* water background per pixel before scaling */
    /* spindle and mosaicity */
    double phi0_rad, osc_rad, phistep_rad;
    int phisteps;
    double mosaic_spread_rad;
    int mosaic_domains;
    double *mosaic_umats;         /* mosaic_domains x 9 */
    double misset_rad[3];
    /* sampling */
    long steps;                   /* sources * domains * phisteps * oversample^2 */
    /* noise */
    long seed;                    /* reference-internal (negated) seed */
    nb_rng rng;                   /* generator state after misset and mosaic draws */
    double adc_offset, intfile_scale, pgm_scale;
    /* messages for the user, one per line, in the reference's order */
    char *log;
    size_t log_len, log_cap;
    int warn_pix0_ignored;        /* -pix0_vector given with a custom basis: ignored */
} nb_setup;

int nb_setup_init(const nb_params *p, nb_setup *s, char *err, size_t errlen);
void nb_setup_free(nb_setup *s);

typedef struct nb_stats {
    double max_I, max_I_x_m, max_I_y_m;
    double min_I;                 /* smallest rendered pixel (negative: the geometry or -polar is unphysical) */
    double mean, rms, rmsd;
    double omega_sum;             /* summed solid angle over sub-pixels (sr), before dividing by steps */
    long pixels_rendered;
    long nonfinite_pixels;        /* rendered pixels that are NaN or infinite */
    int interpolation_fell_back;  /* 1 if interpolation ran out of the HKL grid */
    long fallback_pixel;          /* raster index of the pixel where that happened */
    double fallback_hkl[3];
    int fallback_hkl0[3];
    const char *kernel_isa;       /* the compiled kernel that rendered: "baseline", "v3", "v4" (see NANOBRAGG_ISA) */
    long pixels_skipped;          /* pixels whose lattice sum was skipped (nb_render_opts.skip_negligible) */
} nb_stats;

/* Called by nb_render from the calling thread only, about every
 * NB_POLL_INTERVAL_S while it renders and once at the end, with the number
 * of pixels finished in raster order (every pixel before that index is
 * done).  A non-zero return cancels the render (NB_ECANCELLED). */
typedef int (*nb_poll_fn)(void *ctx, long pixels_done, long pixels_total);
#define NB_POLL_INTERVAL_S 0.02

typedef struct nb_noise_stream nb_noise_stream;   /* the noise image, drawn row by row (below) */

typedef struct nb_render_opts {
    int nthreads;                 /* <= 0: OpenMP's default; capped at NB_MAX_THREADS_PER_CPU per processor */
    int exact_threads;            /* non-zero: use nthreads even for an image too small to share (tests) */
    nb_poll_fn poll;              /* NULL: never called */
    void *poll_ctx;
    /* NULL, or a stream that draws the noise image of the rows as they are
     * final, on the calling thread while the others render; the caller
     * draws the rest (nb_noise_stream_draw) once nb_render returns */
    nb_noise_stream *noise;
    /* non-zero: a pixel whose lattice sum provably stays below
     * NB_SKIP_FRACTION of the image's peak gets only its background
     * (docs/skipping.md).  Only for images no noise is drawn from: a
     * skipped pixel moves by up to that fraction, and a noise image drawn
     * from it no longer follows the reference's.  Ignored with a noise
     * stream, with interpolation, and for a square crystal of a
     * non-integral number of cells. */
    int skip_negligible;
} nb_render_opts;
/* a tenth of the golden rule's absolute term (1e-6 of the peak) */
#define NB_SKIP_FRACTION 1e-7
#define NB_MAX_THREADS_PER_CPU 4

/* Render the float image (spixels x fpixels, fast index fastest).  mask may
 * be NULL; pixels where it is 0 are skipped.  hkl may be NULL or empty.
 * opts may be NULL (defaults).  The image does not depend on the number of
 * threads.  NB_ECANCELLED when the poll callback asked to stop: the image
 * is then incomplete. */
int nb_render(const nb_setup *s, const nb_hkl *hkl, const uint16_t *mask, float *image,
              nb_stats *stats, const nb_render_opts *opts, char *err, size_t errlen);

/* What the reference's per-pixel printout (-printout, -printout_pixel)
 * shows of one pixel: the values its last step left behind.  Values the
 * pixel never set (every source past -dmin; a lattice factor of 0 skips the
 * structure factor) are the previous rendered pixel's in raster order, as in
 * the single-threaded reference; before any pixel set them, the Miller
 * indices and factors are 0 and the axes are the unrotated crystal's. */
typedef struct nb_pixel_trace {
    long pixel;                   /* raster index: slow * fpixels + fast */
    double stol_per_m;            /* sin(theta)/lambda of the last sub-pixel and source (1/m) */
    double pixel_pos_m[3];        /* the last sub-pixel's centre, lab frame */
    double hkl[3];                /* fractional Miller indices of the last step */
    int hkl0[3];                  /* and the nearest node */
    double F_cell, F_latt;
    double I;                     /* the pixel's sum of F_cell^2 F_latt^2, before / steps and the factors */
    double polar, omega_sr, capture_fraction;
    double a_m[3], b_m[3], c_m[3];/* the last step's crystal axes */
    int orientation;              /* index of the last step's orientation (phi step x mosaic domain) */
} nb_pixel_trace;
#define NB_TRACE_STEP 1           /* hkl, hkl0, F_latt, orientation and axes */
#define NB_TRACE_F_CELL 2

/* The printout's values of the rendered pixels (inside the ROI, not
 * masked) with raster index first <= p < end, in raster order: *n_out
 * records in out (room for end - first).  fallback_pixel: the render's
 * nb_stats.fallback_pixel (-1: interpolation never fell back).  carry (may
 * be NULL): in, when carry->pixel >= 0, the record of a pixel before first
 * (the last of an earlier call), so that a dump can go range by range; out,
 * the last record.  Sums step by step on one thread, whatever rendered the
 * image. */
int nb_trace_pixels(const nb_setup *s, const nb_hkl *hkl, const uint16_t *mask, long fallback_pixel,
                    long first, long end, nb_pixel_trace *out, int *n_out, nb_pixel_trace *carry, char *err,
                    size_t errlen);

/* Output scaling, as the reference: only pixels inside the ROI are written. */
double nb_int_image(const nb_setup *s, const float *image, double max_I, uint16_t *out);          /* returns scale used */
double nb_pgm_image(const nb_setup *s, const float *image, double intfile_scale, double rmsd, unsigned char *out); /* returns scale used */
/* Poisson noise with the reference's generator and deviates; rng copied
 * from the setup.  NB_ENOMEM if out of memory. */
int nb_noise_image(const nb_setup *s, const float *image, long seed, uint16_t *out, double *photons, long *overloads);
/* The same image as one stream of draws in raster order, which can follow a
 * render: nb_noise_stream_draw() draws rows up to rows_end (exclusive) of
 * image, whose values there must be final; nb_noise_stream_follow() draws
 * the rows that row_done (one flag per row, set with release order by the
 * render) says are final, from the first not drawn up to rows_end;
 * nb_noise_stream_finish() gives the totals and frees the stream.
 * The draws do not depend on how they were split. */
nb_noise_stream *nb_noise_stream_new(const nb_setup *s, long seed, uint16_t *out);   /* NULL: out of memory */
void nb_noise_stream_draw(nb_noise_stream *ns, const float *image, int rows_end);
void nb_noise_stream_follow(nb_noise_stream *ns, const float *image, const unsigned char *row_done, int rows_end);
void nb_noise_stream_finish(nb_noise_stream *ns, double *photons, long *overloads);

/* Encoders and readers of the file formats (memory only). */
#define NB_SMV_HEADER_BYTES 512
void nb_smv_header(const nb_setup *s, char header[NB_SMV_HEADER_BYTES]);
/* The header exactly as the reference writes it: space-padded to 512 bytes,
 * or, when the text is longer (e.g. 4-digit pixel counts with long %g
 * values), that whole text unpadded while HEADER_BYTES still says 512.
 * Writes min(length, outlen) bytes, no NUL; returns the length (< 1024).
 * nb_smv_header() gives the first 512 bytes of it. */
size_t nb_smv_header_text(const nb_setup *s, char *out, size_t outlen);
size_t nb_pgm_header(const nb_setup *s, double pgm_scale, char *out, size_t outlen);
size_t nb_pgm_header_size(int width, int height, double pgm_scale, char *out, size_t outlen);
/* A header of the companion programs: HEADER_BYTES, DIM, BYTE_ORDER, TYPE,
 * then each "KEY=value;" (%g, or %d when integer), then DETECTOR_SN and
 * BEAMLINE; padded as nb_smv_header_text().  Returns the length. */
typedef struct nb_smv_field { const char *key; double value; int integer; } nb_smv_field;
size_t nb_smv_header_fields(const char *type, const nb_smv_field *fields, int nfields, char *out, size_t outlen);
typedef struct nb_smv {
    int header_bytes, width, height, swap_bytes;
    char *header;                 /* NUL-terminated header text */
    uint16_t *data;               /* width*height, host byte order */
} nb_smv;
int nb_smv_parse(const unsigned char *buf, size_t len, nb_smv *out, char *err, size_t errlen);
double nb_smv_value(const nb_smv *smv, const char *keyword);   /* NAN if absent */
void nb_smv_free(nb_smv *smv);


/* ---- detector response (noisify): photons -> counts -> ADU ------------ */
typedef enum { NB_PSF_NONE = 0, NB_PSF_GAUSS = 1, NB_PSF_FIBER = 2 } nb_psf_kind;
typedef struct nb_psf_info {
    double max_photons;           /* brightest pixel (automatic radius only) */
    int auto_radius;              /* radius chosen from it; 0 if given */
    int radius;                   /* kernel radius used (pixels) */
    int skipped;                  /* automatic radius and no photons: image left all zero */
    double lost_photons;          /* photons outside the radius, spread evenly */
} nb_psf_info;
/* Blur w x h photons with the detector's PSF (FWHM in pixels; radius <= 0:
 * automatic, per pixel); out must not alias in. */
int nb_psf_apply(const float *in, float *out, int w, int h, nb_psf_kind kind, double fwhm_px, int radius_px,
                 nb_psf_info *info, int nthreads, char *err, size_t errlen);

typedef struct nb_noisify_params {
    int width, height;
    double fluence_re2;           /* fluence (photons/m^2) x r_e^2 (m^2): 1 puts the input on a photon scale */
    double scale;                 /* multiplies every input value */
    double gain;                  /* ADU per photon */
    double adc_offset;            /* ADU added to every pixel */
    double readout;               /* read-out noise (ADU rms) */
    double flicker, calibration;  /* fractional rms: per shot, per pixel */
    long seed, calib_seed;        /* reference-internal (negated) seeds */
    nb_psf_kind psf;
    double psf_fwhm_px;
    int psf_radius;               /* pixels; 0 = automatic */
    int bits;                     /* 16 or 32 bits per output pixel */
    int noise;                    /* 0: only the noiseless images */
} nb_noisify_params;
typedef struct nb_noisify_stats {
    double max_input;             /* largest input value */
    long negative_pixels;
    double photons_before_psf;    /* Poisson counts summed */
    double photons;               /* signal summed after the PSF */
    long overloads;               /* noise-image pixels clipped */
    int psf_applied;
    nb_psf_info psf;
} nb_noisify_stats;
void nb_noisify_params_init(nb_noisify_params *p);
/* int_image/noise_image: width*height uint16 or uint32 (p->bits), either may
 * be NULL; pgm: width*height bytes or NULL.  noise_image is filled only when
 * p->noise. */
int nb_noisify(const nb_noisify_params *p, const float *image, void *int_image, uint8_t *pgm, void *noise_image,
               nb_noisify_stats *st, int nthreads, char *err, size_t errlen);

/* ---- amorphous scattering (nonBragg) ----------------------------------- */
typedef struct nb_amorphous_params {
    /* detector */
    int fpixels, spixels;
    double pixel_m, detsize_f_m, detsize_s_m;
    double distance_m;
    double close_distance_m;      /* NAN: ratio x distance */
    double Xbeam_m, Ybeam_m, Xclose_m, Yclose_m;   /* NAN: the defaults */
    nb_pivot pivot;
    double fdet[3], sdet[3], beam[3], polar_vec[3], twotheta_axis[3];
    double rot_rad[3], twotheta_rad;
    int curved_det, point_pixel, nopolar;
    int fmap;                     /* store F itself instead of the intensity */
    double polarization;          /* Kahn factor */
    int oversample;               /* <= 0: 1 */
    int roi[4];                   /* xmin xmax ymin ymax, inclusive; -1 = edge */
    /* beam */
    double lambda0_m, dispersion; /* dispersion: fraction */
    int dispsteps, hdivsteps, vdivsteps;          /* -1 = auto */
    double hdivrange_rad, vdivrange_rad, hdivstep_rad, vdivstep_rad;   /* -1 = auto */
    int round_div;
    double source_distance_m;
    const double *sources;        /* n_sources rows X Y Z (m) weight lambda (m); NAN = default */
    int n_sources;
    double fluence, flux, exposure_s, beamsize_m;  /* flux != 0: fluence = flux exposure / beamsize^2 */
    /* sample */
    double sample_m[3];           /* thickness (along the beam), width, height */
    double density_g_m3, molecular_weight;   /* g/m^3, g/mol */
    double molecules;             /* != 0: overrides the density */
    /* F against x (n_table rows x F; F NAN = 0); sin(theta)/lambda (1/m) = x * table_x_to_stol */
    const double *table;
    int n_table;
    double table_x_to_stol;
    /* output scaling */
    double adc_offset, intfile_scale, pgm_scale;
} nb_amorphous_params;
void nb_amorphous_params_init(nb_amorphous_params *p);

typedef struct nb_amorphous {
    nb_setup det;                 /* the placed detector, sources and output scaling (nb_int_image & co read it) */
    double *stol_of, *F_of, *coef;   /* padded table (1/m) and its interpolation weights */
    double *stol_max;             /* running maximum of stol_of (the interval search) */
    int n_points;
    double *source_weight, *incident;   /* per source: weight, unit vector toward the sample */
    double sample_m[3], density_g_m3, molecules;
    double clipped[2];            /* height, width before the beam clipped them (0: not clipped) */
    int fmap;
} nb_amorphous;
int nb_amorphous_init(const nb_amorphous_params *p, nb_amorphous *a, char *err, size_t errlen);
void nb_amorphous_free(nb_amorphous *a);

typedef struct nb_amorphous_stats {
    double max_I, max_I_x_m, max_I_y_m, mean, rms, rmsd, omega_sum;
    long n;                       /* pixels in the ROI */
} nb_amorphous_stats;
/* noise (may be NULL): a stream that draws the noise image of the rows as
 * they are finished, on the calling thread, while the others render; the
 * caller draws what is left once the render returns. */
int nb_amorphous_render(const nb_amorphous *a, float *image, nb_amorphous_stats *st, int nthreads,
                        nb_noise_stream *noise, char *err, size_t errlen);

/* ---- adding and describing float images (float_add) -------------------- */
typedef struct nb_float_add_params {
    float scale1, scale2, outscale, offset, outoffset;   /* floats, as the reference stores them */
    int normalize;                /* relative difference instead of the sum */
    int histogram, reject;
    float binsize;                /* <= 0: rmsd/3 */
    const float *ignore;          /* values marking invalid pixels */
    int n_ignore;
    size_t header_floats;         /* pixel j is at index header_floats + j */
    size_t pixels;
} nb_float_add_params;
typedef struct nb_float_add_stats {
    long valid, overflows, underflows;
    double xy_scale, xy_offset, yx_scale, yx_offset;
    double max, min, mean, rms, rmsd, skewness, kurtosis, CC;
    /* histogram */
    float hist_binsize;
    long hist_bins, hist_dropped;
    unsigned long *hist;          /* hist_bins + 1 counts; nb_float_add_stats_free(); NULL when
                                   * the bin count is not an int (the reference then prints none) */
    /* outlier rejection */
    float median, mad, median_max, median_min;
    long n_median, n_mean;
    double rej_max, rej_min, rej_mean, rej_rms, rej_rmsd, rej_skewness, rej_kurtosis;
} nb_float_add_stats;
/* a, out: header_floats + pixels floats; b may be NULL (zeros) */
int nb_float_add(const nb_float_add_params *p, const float *a, const float *b, float *out, nb_float_add_stats *st,
                 char *err, size_t errlen);
void nb_float_add_stats_free(nb_float_add_stats *st);

#ifdef __cplusplus
}
#endif
#endif
