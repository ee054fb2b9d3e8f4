/* runner_io.h - files for nanobragg-run: whole-file reads, writability
 * checks and atomic writes (temp file in the same folder + rename). */
#ifndef NANOBRAGG_RUNNER_IO_H
#define NANOBRAGG_RUNNER_IO_H

#include <stddef.h>

/* The whole file in a malloc'ed buffer (NUL-terminated, *len without the
 * NUL).  NULL with errno set on failure. */
unsigned char *rio_read_file(const char *path, size_t *len);

/* os.path.dirname(os.path.abspath(path)) into out; 0 on success. */
int rio_abs_dirname(const char *path, char *out, size_t outlen);

typedef struct rio_chunk {
    const void *data;
    size_t len;
} rio_chunk;

/* Write the chunks to path atomically: a temp file ".NAME.XXXXXXXXXXXX.tmp"
 * in the same folder, renamed over path once complete.  On failure the temp
 * file is removed, an existing file is left untouched, and the message is
 * "cannot write 'PATH': REASON".  0 or -1. */
int rio_atomic_write(const char *path, const rio_chunk *chunks, int n, char *err, size_t errlen);

/* Several outputs published together: rio_stage() writes each to its temp
 * file; rio_commit() renames them all into place, in order (on a failure the
 * rest are removed and the message names the file); rio_discard() removes
 * them all.  A failed or interrupted run leaves existing files untouched. */
#define RIO_MAX_STAGED 8
int rio_stage(const char *path, const rio_chunk *chunks, int n, char *err, size_t errlen);
int rio_commit(char *err, size_t errlen);
void rio_discard(void);

/* For a signal handler: the temp file being written (valid while
 * rio_tmp_active is non-zero) and the staged ones (rio_nstaged of them). */
#define RIO_PATH_MAX 8192
extern char rio_tmp_path[];
extern volatile int rio_tmp_active;
extern char rio_staged_tmp[RIO_MAX_STAGED][RIO_PATH_MAX + 64];
extern volatile int rio_nstaged;

#endif
