/*
 * rng.c - the uniform generator's table load and the random rotations
 * drawn from it (the generator's step itself is inline, in internal.h).
 *
 * The generator is the Park-Miller "minimal standard" Lehmer sequence
 * x -> 16807 x mod (2^31 - 1), whose output order is scrambled by a
 * Bays-Durham shuffle table of 32 entries (Numerical Recipes' ran1).  One
 * table is shared by every stream (misset, mosaic, noise); each stream owns
 * its state word.  Every float/double conversion below is deliberate: the
 * deviates must agree bit for bit with the reference program.
 */
#include "internal.h"

/* (Re)load the shuffle table.  A non-negative word (including any positive
 * seed met with an empty table) restarts the sequence from 1; a negative
 * word -s restarts it from s. */
void nb_rng_load_table(nb_rng *rng, long *state)
{
    long x = (*state >= 0) ? 1L : nb_fold_state(*state);
    for (int i = 0; i < NB_WARMUP_STEPS; i++) x = nb_lehmer_step(x);
    for (int slot = NB_SHUFFLE_SLOTS - 1; slot >= 0; slot--) {
        x = nb_lehmer_step(x);
        rng->iv[slot] = x;
    }
    rng->iy = rng->iv[0];
    *state = x;
}

float nb_ran1(nb_rng *rng, long *idum) { return nb_ran1_inline(rng, idum); }

/*
 * Random rotation for a mosaic domain: the axis is uniform on the unit
 * sphere (z = r2 uniform on [-1,1], azimuth pi*r1), the angle is the spread
 * times (1 - r3^2)^(1/3).  The angle is formed in single precision, as the
 * reference (float spread, powf); the matrix is Rodrigues' formula
 * R = cos(t) I + (1 - cos(t)) w w^T + sin(t) [w]x.
 */
void nb_mosaic_umat(float mosaicity_rad, double umat[9], nb_rng *rng, long *idum)
{
    double r1 = (double)2.0 * nb_ran1(rng, idum) - 1.0;
    double r2 = (double)2.0 * nb_ran1(rng, idum) - 1.0;
    double r3 = (double)2.0 * nb_ran1(rng, idum) - 1.0;

    double ring = sqrt(1.0 - r2 * r2);             /* radius of the z = r2 circle */
    float shrink = powf((float)(1.0 - r3 * r3), (float)(1.0 / 3.0));
    double angle_rad = mosaicity_rad * shrink;     /* float product, widened */

    double w[3] = { ring * sin(M_PI * r1), ring * cos(M_PI * r1), r2 };
    double c = cos(angle_rad), s = sin(angle_rad), omc = 1.0 - c;

    for (int i = 0; i < 3; i++) {
        umat[4 * i] = c + omc * (w[i] * w[i]);
    }
    /* off-diagonal pairs (i<j): symmetric part (omc*w_i)*w_j, antisymmetric
     * part sin*w_k with the sign of the cross-product matrix */
    static const int pair[3][3] = { {0, 1, 2}, {0, 2, 1}, {1, 2, 0} };
    static const double upper_sign[3] = { -1.0, +1.0, -1.0 };
    for (int p = 0; p < 3; p++) {
        int i = pair[p][0], j = pair[p][1], k = pair[p][2];
        double sym = (omc * w[i]) * w[j];
        double anti = s * w[k];
        umat[3 * i + j] = upper_sign[p] > 0 ? sym + anti : sym - anti;
        umat[3 * j + i] = upper_sign[p] > 0 ? sym - anti : sym + anti;
    }
}

/* ---- rotation matrix -> rotations about x, y, z ---------------------- */

/* divide by the length only when it is positive (zero/NaN rows stay put) */
static void scale_to_unit(double v[3], double len)
{
    if (len > 0) { v[0] /= len; v[1] /= len; v[2] /= len; }
}

/* cross products of the rows taken cyclically, each made unit length */
static void row_normals(double u[3][3], double n[3][3])
{
    for (int r = 0; r < 3; r++) {
        nb_cross(u[r], u[(r + 1) % 3], n[r]);
        scale_to_unit(n[r], nb_norm(n[r]));
    }
}

/* a missing (zero) row is replaced by the normal of the other two */
static void fill_missing_rows(double u[3][3], const double len[3])
{
    double n[3][3];
    row_normals(u, n);
    for (int r = 0; r < 3; r++) {
        if (len[r] <= 0) {
            const double *src = n[(r + 1) % 3];
            u[r][0] = src[0]; u[r][1] = src[1]; u[r][2] = src[2];
        }
    }
}

void nb_umat_to_misset(const double umat[9], double misset_rad[3])
{
    double u[3][3], len[3];
    for (int r = 0; r < 3; r++) {
        u[r][0] = umat[3 * r]; u[r][1] = umat[3 * r + 1]; u[r][2] = umat[3 * r + 2];
        len[r] = nb_norm(u[r]);
        scale_to_unit(u[r], len[r]);
    }
    /* with only one usable row, the other two fall back to the identity */
    for (int keep = 0; keep < 3; keep++) {
        int a = (keep + 1) % 3, b = (keep + 2) % 3;
        if (len[keep] >= 0 && len[a] <= 0 && len[b] <= 0) {
            for (int c = 0; c < 3; c++) {
                u[a][c] = (a == c); u[b][c] = (b == c);
            }
        }
    }
    /* twice: a second pass repairs a row built from a repaired row */
    fill_missing_rows(u, len);
    fill_missing_rows(u, len);
    for (int r = 0; r < 3; r++) scale_to_unit(u[r], nb_norm(u[r]));

    /* R = Rz Ry Rx: read the Euler angles off the last row and first column */
    if (u[2][0] * u[2][0] < 1.0) {
        misset_rad[0] = atan2(u[2][1], u[2][2]);
        misset_rad[1] = atan2(-u[2][0], sqrt(u[2][1] * u[2][1] + u[2][2] * u[2][2]));
        misset_rad[2] = atan2(u[1][0], u[0][0]);
    } else {                        /* gimbal lock */
        misset_rad[0] = M_PI;
        misset_rad[1] = M_PI / 2.0;
        misset_rad[2] = atan2(u[0][1], -u[1][1]);
    }
}
