/* runner_io.c - files for nanobragg-run (see runner_io.h). */
#include "runner_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


char rio_tmp_path[RIO_PATH_MAX + 64];
volatile int rio_tmp_active = 0;

unsigned char *rio_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    size_t cap = 0, n = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) cap = (size_t)st.st_size;
    if (cap == 0) cap = 65536;
    unsigned char *buf = malloc(cap + 1);
    if (buf == NULL) { close(fd); errno = ENOMEM; return NULL; }
    for (;;) {
        if (n == cap) {                    /* grew since fstat, or not a regular file */
            size_t ncap = cap * 2;
            unsigned char *grown = ncap > cap ? realloc(buf, ncap + 1) : NULL;
            if (grown == NULL) { free(buf); close(fd); errno = ENOMEM; return NULL; }
            buf = grown;
            cap = ncap;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(buf);
            close(fd);
            errno = e;
            return NULL;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ------------------------------------------------------ path arithmetic -- */

/* os.path.normpath of a POSIX path, in place into out */
static int normpath(const char *path, char *out, size_t outlen)
{
    size_t plen = strlen(path);
    if (plen == 0) { if (outlen < 2) return -1; strcpy(out, "."); return 0; }
    int initial = 0;
    if (path[0] == '/') initial = (path[1] == '/' && path[2] != '/') ? 2 : 1;
    /* components, as offsets into a copy */
    char *copy = malloc(plen + 1);
    const char **comps = malloc((plen / 2 + 2) * sizeof *comps);
    if (copy == NULL || comps == NULL) { free(copy); free(comps); return -1; }
    memcpy(copy, path, plen + 1);
    size_t nc = 0;
    for (char *tok = copy, *next; tok != NULL; tok = next) {
        next = strchr(tok, '/');
        if (next) *next++ = '\0';
        if (*tok == '\0' || strcmp(tok, ".") == 0) continue;
        if (strcmp(tok, "..") != 0 || (!initial && (nc == 0 || strcmp(comps[nc - 1], "..") == 0)))
            comps[nc++] = tok;
        else if (nc > 0)
            nc--;
    }
    size_t n = 0;
    int rc = 0;
    for (int i = 0; i < initial; i++) {
        if (n + 1 >= outlen) { rc = -1; break; }
        out[n++] = '/';
    }
    for (size_t i = 0; rc == 0 && i < nc; i++) {
        size_t cl = strlen(comps[i]);
        if (n + cl + 2 >= outlen) { rc = -1; break; }
        if (i > 0) out[n++] = '/';
        memcpy(out + n, comps[i], cl);
        n += cl;
    }
    if (rc == 0) {
        if (n == 0) out[n++] = '.';
        out[n] = '\0';
    }
    free(copy);
    free(comps);
    return rc;
}

int rio_abs_dirname(const char *path, char *out, size_t outlen)
{
    char *joined = malloc(RIO_PATH_MAX * 2 + 2);
    if (joined == NULL) return -1;
    if (path[0] == '/') {
        snprintf(joined, RIO_PATH_MAX * 2 + 2, "%s", path);
    } else {
        char cwd[RIO_PATH_MAX];
        if (getcwd(cwd, sizeof cwd) == NULL) { free(joined); return -1; }
        snprintf(joined, RIO_PATH_MAX * 2 + 2, "%s/%s", cwd, path);
    }
    int rc = normpath(joined, out, outlen);
    free(joined);
    if (rc != 0) return -1;
    /* dirname: up to the last '/', trailing slashes stripped unless all slashes */
    char *slash = strrchr(out, '/');
    if (slash == NULL) { out[0] = '\0'; return 0; }
    slash[1] = '\0';
    size_t n = strlen(out);
    size_t k = 0;
    while (k < n && out[k] == '/') k++;
    if (k < n)
        while (n > 0 && out[n - 1] == '/') out[--n] = '\0';
    return 0;
}

/* ------------------------------------------------------- atomic writes -- */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

/* 12 hex digits that differ between calls and processes */
static void random_hex(char out[13])
{
    static uint64_t counter = 0;
    uint64_t seed = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed) seed = 0;
        close(fd);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = mix(seed ^ ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ++counter);
    snprintf(out, 13, "%012llx", (unsigned long long)(seed & 0xffffffffffffULL));
}

static int write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        size_t step = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t w = write(fd, p, step);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* write the chunks to a new temp file next to path; its name stays in
 * rio_tmp_path (rio_tmp_active set) until the caller takes it over */
static int write_temp(const char *path, const rio_chunk *chunks, int n, char *err, size_t errlen)
{
    char dir[RIO_PATH_MAX];
    if (rio_abs_dirname(path, dir, sizeof dir) != 0) {
        snprintf(err, errlen, "cannot write '%s': path too long", path);
        return -1;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        char hex[13];
        random_hex(hex);
        rio_tmp_active = 0;
        /* DIR/.NAME.HEX.tmp, as the Python writer names it */
        int k = snprintf(rio_tmp_path, sizeof rio_tmp_path, "%s%s.%s.%s.tmp",
                         dir, strcmp(dir, "/") == 0 ? "" : "/", base, hex);
        if (k < 0 || (size_t)k >= sizeof rio_tmp_path) {
            snprintf(err, errlen, "cannot write '%s': path too long", path);
            return -1;
        }
        fd = open(rio_tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);   /* the umask applies */
        if (fd >= 0) rio_tmp_active = 1;
        else if (errno != EEXIST) break;
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    int rc = 0, e = 0;
    for (int i = 0; rc == 0 && i < n; i++)
        if (chunks[i].len && write_all(fd, chunks[i].data, chunks[i].len) != 0) { rc = -1; e = errno; }
    if (close(fd) != 0 && rc == 0) { rc = -1; e = errno; }
    if (rc != 0) {
        rio_tmp_active = 0;
        unlink(rio_tmp_path);
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(e));
    }
    return rc;
}

int rio_atomic_write(const char *path, const rio_chunk *chunks, int n, char *err, size_t errlen)
{
    if (write_temp(path, chunks, n, err, errlen) != 0) return -1;
    int rc = 0;
    if (rename(rio_tmp_path, path) != 0) {
        int e = errno;
        rio_tmp_active = 0;
        unlink(rio_tmp_path);
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(e));
        rc = -1;
    }
    rio_tmp_active = 0;
    return rc;
}

/* ------------------------------------------------------ staged outputs -- */

char rio_staged_tmp[RIO_MAX_STAGED][RIO_PATH_MAX + 64];
static const char *staged_dest[RIO_MAX_STAGED];
volatile int rio_nstaged = 0;

int rio_stage(const char *path, const rio_chunk *chunks, int n, char *err, size_t errlen)
{
    if (rio_nstaged >= RIO_MAX_STAGED) {
        snprintf(err, errlen, "cannot write '%s': too many outputs", path);
        return -1;
    }
    if (write_temp(path, chunks, n, err, errlen) != 0) return -1;
    int i = rio_nstaged;
    memcpy(rio_staged_tmp[i], rio_tmp_path, sizeof rio_tmp_path);
    staged_dest[i] = path;
    rio_nstaged = i + 1;              /* now the signal handler knows it */
    rio_tmp_active = 0;
    return 0;
}

void rio_discard(void)
{
    while (rio_nstaged > 0) {
        int i = rio_nstaged - 1;
        unlink(rio_staged_tmp[i]);
        rio_nstaged = i;
    }
}

int rio_commit(char *err, size_t errlen)
{
    int rc = 0;
    int i;
    for (i = 0; i < rio_nstaged; i++) {
        if (rename(rio_staged_tmp[i], staged_dest[i]) != 0) {
            snprintf(err, errlen, "cannot write '%s': %s", staged_dest[i], strerror(errno));
            rc = -1;
            break;
        }
    }
    /* the ones not renamed are removed; the renamed ones are in place */
    for (int j = i; j < rio_nstaged; j++) unlink(rio_staged_tmp[j]);
    rio_nstaged = 0;
    return rc;
}
