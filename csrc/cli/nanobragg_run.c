/*
 * nanobragg_run.c - the native half of the nanoBragg command.
 *
 *     nanobragg-run PLAN
 *
 * The Python front end (nanobragg/cli.py) parses the flags, reads the small
 * inputs and writes a plan file; this program reads the plan (and deletes
 * it), loads the structure factors and the mask, renders, prints what the
 * reference prints and writes the images.  The images live only here, so
 * the command's peak memory is this program's, not a Python process's with
 * NumPy loaded.
 *
 * Plan format (text, one record per line, tokens separated by one space;
 * TEXT/PATH tokens percent-encoded: bytes outside '!'..'~' and '%' as %XX):
 *
 *     nanobragg-plan 1
 *     field NAME V...          an nb_params field (params_table.c); numbers,
 *                              or an enum's name
 *     sources_name TEXT        how messages name the sources ("-sourcefile F")
 *     source X Y Z W LAMBDA N  a row of the -sourcefile (nan = missing), from line N
 *     hkl PATH                 structure factors, "h k l F" text
 *     fdump PATH               structure factors, an Fdump cache
 *     dump PATH                write the Fdump cache after reading hkl
 *     mask PATH                SMV mask: its zero pixels are skipped
 *     printout_pixel F S       checked against the detector (it has no effect)
 *     threads N                render threads (0 = all)
 *     note pre|mat|hkl TEXT    a front-end message, placed as the reference
 *     float|int|pgm|noise PATH outputs (int and float always; pgm and noise
 *                              when given)
 *     end
 *
 * The front end has checked the flags, read the small inputs and checked
 * that the outputs can be written; the order of the rest (setup, mask,
 * structure factors, Fdump cache, messages, render, outputs) and every
 * message are those of the in-process path (api.Run and cli.py).
 *
 * Errors: one line "nanoBragg: error: MESSAGE" on stderr, exit status 1
 * (2 for a usage mistake).  The images go to temporary files that replace
 * the old files together at the end: a failed or interrupted run leaves
 * them untouched.  Ctrl-C: "interrupted", status 130; SIGTERM while the
 * outputs are written: "terminated", 143.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nanobragg.h"
#include "runner_io.h"

#define PROG "nanoBragg"
#define BANNER "nanoBragg nanocrystal diffraction simulator - James Holton and Ken Frankel 5-17-17"
#define ERRLEN 2048

/* ------------------------------------------------------------- errors -- */

/* one line on stderr (white space runs collapsed, as the Python CLI), exit 1 */
static void vdie(int status, const char *fmt, va_list ap)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 0), noreturn))
#endif
    ;
static void vdie(int status, const char *fmt, va_list ap)
{
    char msg[ERRLEN], line[ERRLEN];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = 0;
    int space = 0;
    for (const char *p = msg; *p && n + 2 < sizeof line; p++) {
        int ws = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\v' || *p == '\f';
        if (ws) { space = n > 0; continue; }
        if (space) { line[n++] = ' '; space = 0; }
        line[n++] = *p;
    }
    line[n] = '\0';
    rio_discard();
    fflush(stdout);
    fprintf(stderr, "%s: error: %s\n", PROG, line);
    fflush(stderr);
    exit(status);
}

static void die(const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdie(1, fmt, ap);
}

/* a usage mistake (the Python CLI's UsageError): exit status 2 */
static void die_usage(const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdie(2, fmt, ap);
}

static void *xmalloc(size_t n, const char *what)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) die("out of memory (%zu bytes for %s)", n, what);
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n, "text"), s, n);
}

static volatile sig_atomic_t writing_outputs = 0;

static void say_raw(const char *msg, size_t n)
{
    ssize_t w = write(2, msg, n);
    (void)w;
}

/* Ctrl-C / kill: remove the temp files, then stop as the Python CLI does */
static void on_signal(int sig)
{
    if (rio_tmp_active) unlink(rio_tmp_path);
    for (int i = rio_nstaged; i > 0; i--) unlink(rio_staged_tmp[i - 1]);
    if (sig == SIGINT) {
        static const char msg[] = PROG ": error: interrupted\n";
        say_raw(msg, sizeof msg - 1);
        _exit(130);
    }
    if (sig == SIGTERM && writing_outputs) {
        static const char msg[] = PROG ": error: terminated\n";
        say_raw(msg, sizeof msg - 1);
        _exit(143);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_signals(void)
{
    signal(SIGPIPE, SIG_IGN);       /* nanoBragg ... | head: keep working, write the images */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    int sigs[] = { SIGINT, SIGTERM, SIGHUP };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
}

/* -------------------------------------------------------------- output -- */

/* printf to stdout; a reader that went away (EPIPE) is ignored */
static void say(const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    clearerr(stdout);
}

/* %g prints NaN as Python does ("nan", never "-nan") */
static double g(double x) { return isnan(x) ? fabs(x) : x; }

/* ------------------------------------------------------------ strings -- */

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static void sl_insert(strlist *l, size_t at, char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **grown = realloc(l->v, cap * sizeof *grown);
        if (grown == NULL) die("out of memory");
        l->v = grown;
        l->cap = cap;
    }
    if (at > l->n) at = l->n;
    memmove(l->v + at + 1, l->v + at, (l->n - at) * sizeof *l->v);
    l->v[at] = s;
    l->n++;
}

static void sl_push(strlist *l, char *s) { sl_insert(l, l->n, s); }

static char *fmt(const char *f, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    if (n < 0) die("cannot format a message");
    char *s = xmalloc((size_t)n + 1, "text");
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* first index i >= 0 whose line satisfies pred(line, arg), or -1 */
typedef int (*line_pred)(const char *line, const char *arg);
static long find_line(const strlist *l, line_pred pred, const char *arg)
{
    for (size_t i = 0; i < l->n; i++)
        if (pred(l->v[i], arg)) return (long)i;
    return -1;
}
static int p_starts(const char *line, const char *arg) { return starts_with(line, arg); }
static int p_ends(const char *line, const char *arg) { return ends_with(line, arg); }
static int p_contains(const char *line, const char *arg) { return strstr(line, arg) != NULL; }
static int p_xtal(const char *line, const char *arg)
{
    (void)arg;
    return starts_with(line, "  ") && strstr(line, " xtal: ") != NULL;
}

/* --------------------------------------------------------------- plan -- */

typedef struct {
    nb_params p;
    double *sources;
    long *source_lines;
    int n_sources, cap_sources;
    char *sources_name;
    int has_printout_pixel;
    long long printout_pixel[2];
    char *hkl, *fdump, *dump, *mask;
    int threads;
    strlist notes_pre, notes_mat, notes_hkl;
    char *out_float, *out_int, *out_pgm, *out_noise;
} plan;

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* percent-decoded copy of a token */
static char *decode(const char *tok, long lineno)
{
    size_t n = strlen(tok);
    char *out = xmalloc(n + 1, "text"), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (tok[i] != '%') { *o++ = tok[i]; continue; }
        int hi = i + 2 < n ? hexval((unsigned char)tok[i + 1]) : -1;
        int lo = hi >= 0 ? hexval((unsigned char)tok[i + 2]) : -1;
        if (hi < 0 || lo < 0) die("bad plan file: line %ld: bad %%-escape", lineno);
        *o++ = (char)(hi * 16 + lo);
        i += 2;
    }
    *o = '\0';
    if (strlen(out) != (size_t)(o - out)) die("bad plan file: line %ld: NUL byte in a text", lineno);
    return out;
}

static double number(const char *tok, long lineno)
{
    char *end;
    errno = 0;
    double v = strtod(tok, &end);
    if (end == tok || *end != '\0') die("bad plan file: line %ld: '%s' is not a number", lineno, tok);
    return v;
}

/* an integer token: exact when written as an integer, else an integral real */
static int integer(const char *tok, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(tok, &end, 10);
    if (end != tok && *end == '\0' && errno == 0) { *out = v; return 1; }
    errno = 0;
    double d = strtod(tok, &end);
    if (end == tok || *end != '\0' || !(d == floor(d)) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return 0;
    *out = (long long)d;
    return 1;
}

static void set_field(plan *pl, char **tok, int ntok, long lineno)
{
    const char *name = tok[1];
    const nb_field *f = nb_params_find(name);
    if (f == NULL) die("bad plan file: line %ld: unknown parameter '%s'", lineno, name);
    int n = ntok - 2;
    char err[ERRLEN] = "";
    int rc;
    if (n < 0 || n > 16) die("bad plan file: line %ld: %d values for '%s'", lineno, n, name);
    long long ints[16];
    int all_int = 1;
    for (int i = 0; i < n; i++) all_int &= integer(tok[2 + i], &ints[i]);
    if (f->kind == NB_FIELD_ENUM && n == 1 && !all_int) {
        char *text = decode(tok[2], lineno);
        rc = nb_params_set(&pl->p, name, NULL, 0, text, err, sizeof err);
        free(text);
    } else if (f->kind != NB_FIELD_DOUBLE) {
        if (!all_int) die("parameter '%s': expected integers", name);
        rc = nb_params_set_integers(&pl->p, name, ints, n, err, sizeof err);
    } else {
        double v[16];
        for (int i = 0; i < n; i++) v[i] = number(tok[2 + i], lineno);
        rc = nb_params_set(&pl->p, name, v, n, NULL, err, sizeof err);
    }
    if (rc != NB_OK) die("%s", err);
}

static void add_source(plan *pl, char **tok, int ntok, long lineno)
{
    if (ntok != 7) die("bad plan file: line %ld: a source has 5 columns and a line number", lineno);
    if (pl->n_sources == pl->cap_sources) {
        int cap = pl->cap_sources ? 2 * pl->cap_sources : 16;
        if (cap <= pl->cap_sources || cap > INT_MAX / 5) die("too many sources");
        double *grown = realloc(pl->sources, (size_t)cap * 5 * sizeof *grown);
        if (grown == NULL) die("out of memory for %d sources", cap);
        pl->sources = grown;
        long *lines = realloc(pl->source_lines, (size_t)cap * sizeof *lines);
        if (lines == NULL) die("out of memory for %d sources", cap);
        pl->source_lines = lines;
        pl->cap_sources = cap;
    }
    for (int i = 0; i < 5; i++) pl->sources[5 * pl->n_sources + i] = number(tok[1 + i], lineno);
    long long line;
    if (!integer(tok[6], &line)) die("bad plan file: line %ld: source line number", lineno);
    pl->source_lines[pl->n_sources] = (long)line;
    pl->n_sources++;
}

static void read_plan(const char *path, plan *pl)
{
    size_t len = 0;
    unsigned char *text = rio_read_file(path, &len);
    if (text == NULL) die("cannot read the plan file '%s': %s", path, strerror(errno));
    unlink(path);                  /* read once: the plan is ours to delete */

    memset(pl, 0, sizeof *pl);
    nb_params_init(&pl->p);
    /* the has_* fields are applied after the others, whatever their order */
    typedef struct { long lineno; char **tok; int ntok; } deferred;
    deferred flags[8];
    int nflags = 0;

    long lineno = 0;
    int ended = 0;
    char *line = (char *)text, *stop = (char *)text + len;
    char *tok[32];
    while (line < stop && !ended) {
        char *eol = memchr(line, '\n', (size_t)(stop - line));
        if (eol == NULL) eol = stop;
        *eol = '\0';
        ++lineno;
        int ntok = 0;
        for (char *t = line, *next; t != NULL && ntok < 32; t = next) {
            next = strchr(t, ' ');
            if (next) *next++ = '\0';
            tok[ntok++] = t;
        }
        const char *key = tok[0];
        if (lineno == 1) {
            if (ntok != 2 || strcmp(key, "nanobragg-plan") != 0 || strcmp(tok[1], "1") != 0)
                die("'%s' is not a nanobragg plan (version 1)", path);
        } else if (strcmp(key, "end") == 0) {
            ended = 1;
        } else if (strcmp(key, "field") == 0 && ntok >= 2) {
            if (starts_with(tok[1], "has_")) {
                if (nflags == 8) die("bad plan file: line %ld: too many has_ fields", lineno);
                char **copy = xmalloc(sizeof(char *) * (size_t)ntok, "plan");
                memcpy(copy, tok, sizeof(char *) * (size_t)ntok);
                flags[nflags++] = (deferred){ lineno, copy, ntok };
            } else {
                set_field(pl, tok, ntok, lineno);
            }
        } else if (strcmp(key, "source") == 0) {
            add_source(pl, tok, ntok, lineno);
        } else if (strcmp(key, "printout_pixel") == 0 && ntok == 3) {
            for (int i = 0; i < 2; i++)
                if (!integer(tok[1 + i], &pl->printout_pixel[i])) die("bad plan file: line %ld: printout_pixel", lineno);
            pl->has_printout_pixel = 1;
        } else if (strcmp(key, "threads") == 0 && ntok == 2) {
            long long t;
            if (!integer(tok[1], &t) || t < 0 || t > INT_MAX) die("bad plan file: line %ld: threads", lineno);
            pl->threads = (int)t;
        } else if (strcmp(key, "note") == 0 && ntok == 3) {
            strlist *l = strcmp(tok[1], "pre") == 0 ? &pl->notes_pre
                       : strcmp(tok[1], "mat") == 0 ? &pl->notes_mat
                       : strcmp(tok[1], "hkl") == 0 ? &pl->notes_hkl : NULL;
            if (l == NULL) die("bad plan file: line %ld: unknown note '%s'", lineno, tok[1]);
            sl_push(l, decode(tok[2], lineno));
        } else if (ntok == 2) {
            char **slot = strcmp(key, "hkl") == 0     ? &pl->hkl
                        : strcmp(key, "fdump") == 0   ? &pl->fdump
                        : strcmp(key, "dump") == 0    ? &pl->dump
                        : strcmp(key, "mask") == 0    ? &pl->mask
                        : strcmp(key, "sources_name") == 0 ? &pl->sources_name
                        : strcmp(key, "float") == 0   ? &pl->out_float
                        : strcmp(key, "int") == 0     ? &pl->out_int
                        : strcmp(key, "pgm") == 0     ? &pl->out_pgm
                        : strcmp(key, "noise") == 0   ? &pl->out_noise : NULL;
            if (slot == NULL) die("bad plan file: line %ld: unknown record '%s'", lineno, key);
            free(*slot);
            *slot = decode(tok[1], lineno);
        } else {
            die("bad plan file: line %ld: unknown record '%s'", lineno, key);
        }
        line = eol + 1;
    }
    if (!ended) die("bad plan file '%s': truncated (no end record)", path);
    if (pl->out_float == NULL || pl->out_int == NULL) die("bad plan file '%s': no float/int outputs", path);
    for (int i = 0; i < nflags; i++) {
        set_field(pl, flags[i].tok, flags[i].ntok, flags[i].lineno);
        free(flags[i].tok);
    }
    if (pl->n_sources > 0) {
        pl->p.sources = pl->sources;
        pl->p.n_sources = pl->n_sources;
    }
    /* every string we keep was decoded into its own copy */
    free(text);
}

/* ---------------------------------------------------------- the inputs -- */

static unsigned char *read_input(const char *path, const char *flag, size_t *len)
{
    unsigned char *data = rio_read_file(path, len);
    if (data == NULL) die("cannot read %s file '%s': %s", flag, path, strerror(errno));
    return data;
}

typedef struct {
    nb_hkl grid;
    int loaded;                    /* a grid was read (text or cache) */
    int from_text;
    long count;
    char *dump_message;
} hkl_input;

static void load_hkl(plan *pl, hkl_input *h)
{
    memset(h, 0, sizeof *h);
    char err[ERRLEN] = "";
    double default_F = pl->p.default_F;
    if (pl->hkl) {
        size_t len = 0;
        unsigned char *data = read_input(pl->hkl, "-hkl", &len);
        int rc = nb_hkl_parse_text((const char *)data, len, default_F, &h->grid, err, sizeof err);
        free(data);
        if (rc != NB_OK) die("-hkl %s: %s", pl->hkl, err[0] ? err : "nb_hkl_parse_text failed");
        h->loaded = h->from_text = 1;
        h->count = h->grid.count;
        sl_push(&pl->notes_hkl, fmt("counting entries in %s", pl->hkl));
        if (default_F != 0.0) {
            sl_push(&pl->notes_hkl, fmt("initializing to default_F = %g:", g(default_F)));
            sl_push(&pl->notes_hkl, xstrdup("done initializing:"));
        }
        sl_push(&pl->notes_hkl, fmt("re-reading %s", pl->hkl));
    } else if (pl->fdump) {
        size_t len = 0;
        unsigned char *data = read_input(pl->fdump, "-dump", &len);
        int rc = nb_fdump_parse(data, len, &h->grid, err, sizeof err);
        free(data);
        if (rc != NB_OK) die("-dump %s: %s", pl->fdump, err[0] ? err : "nb_fdump_parse failed");
        h->loaded = 1;
        h->count = h->grid.count;
        if (h->count == 0)   /* the reference reports h_range*k_range*l_range for a dump file */
            h->count = (long)(h->grid.h_max - h->grid.h_min + 1) * (h->grid.k_max - h->grid.k_min + 1)
                     * (h->grid.l_max - h->grid.l_min + 1);
        sl_push(&pl->notes_hkl, fmt("reading Fs from %s", pl->fdump));
    }
}

/* the reference's Fdump.bin cache of what -hkl read; failure is a warning */
static void write_dump(const plan *pl, hkl_input *h)
{
    const char *path = pl->dump ? pl->dump : "Fdump.bin";
    size_t n = nb_fdump_size(&h->grid);
    unsigned char *buf = xmalloc(n, "the Fdump cache");
    if (n) nb_fdump_encode(&h->grid, buf);
    rio_chunk c = { buf, n };
    char err[ERRLEN];
    if (rio_atomic_write(path, &c, 1, err, sizeof err) == 0)
        h->dump_message = fmt("writing dump file for next time: %s", path);
    else
        h->dump_message = fmt("WARNING: unable to open dump file: %s", path);
    free(buf);
}

/* ----------------------------------------------------------------- log -- */

/* The engine's log with the front end's messages where the reference
 * prints them (as Run.log_lines() in api.py). */
static void print_log(const plan *pl, const nb_setup *s, const hkl_input *h)
{
    strlist lines = { 0 };
    if (s->log && s->log[0]) {
        /* one entry per line, blank lines included; no entry after a final newline */
        char *copy = xstrdup(s->log);
        for (char *t = copy, *next; t != NULL; t = next) {
            next = strchr(t, '\n');
            if (next) *next++ = '\0';
            if (next == NULL && *t == '\0') break;
            sl_push(&lines, t);
        }
    }
    if (find_line(&lines, p_starts, "nanoBragg nanocrystal") < 0) {
        long i = find_line(&lines, p_ends, "convention selected.");
        sl_insert(&lines, i >= 0 ? (size_t)i : 0, BANNER);
    }
    if (pl->notes_mat.n) {
        long i = find_line(&lines, p_starts, "XDS incident beam");
        if (i < 0) {
            i = find_line(&lines, p_starts, "Unit Cell:");
            if (i < 0) i = (long)lines.n;
        } else {
            i++;
            if ((size_t)i < lines.n && starts_with(lines.v[i], "auto-selected") && strstr(lines.v[i], "interpolation"))
                i++;
        }
        for (size_t k = 0; k < pl->notes_mat.n; k++) sl_insert(&lines, (size_t)i + k, pl->notes_mat.v[k]);
    }
    size_t nhkl = pl->notes_hkl.n + (h->from_text ? 1 : 0);
    if (nhkl) {
        long i = find_line(&lines, p_starts, "approximate MW");
        i = i < 0 ? (long)lines.n : i + 1;
        for (size_t k = 0; k < pl->notes_hkl.n; k++) sl_insert(&lines, (size_t)i + k, pl->notes_hkl.v[k]);
        if (h->from_text) sl_insert(&lines, (size_t)i + pl->notes_hkl.n, h->dump_message);
    }
    if (find_line(&lines, p_contains, "initialized hkls") < 0) {
        long i = find_line(&lines, p_xtal, NULL);
        if (i >= 0)
            sl_insert(&lines, (size_t)i, fmt("  %ld initialized hkls (all others =%g)", h->count, g(pl->p.default_F)));
    }
    if (pl->mask && find_line(&lines, p_contains, "skipping zero-flagged") < 0) {
        long i = find_line(&lines, p_contains, "pixel oversample steps");
        i = i < 0 ? (long)lines.n : i + 1;
        sl_insert(&lines, (size_t)i, fmt("  skipping zero-flagged pixels in %s", pl->mask));
    }
    if (pl->out_noise && find_line(&lines, p_contains, "noise image paramters") < 0) {
        sl_push(&lines, "");
        sl_push(&lines, "  noise image paramters:");
        sl_push(&lines, fmt("  seed: %ld", s->seed));
        sl_push(&lines, fmt("  water droplet size: %g m", g(s->water_m)));
    }
    for (size_t i = 0; i < pl->notes_pre.n; i++) say("%s", pl->notes_pre.v[i]);
    for (size_t i = 0; i < lines.n; i++) say("%s", lines.v[i]);
    /* the strings are small and the process ends soon: not freed one by one */
    free(lines.v);
}

/* ---------------------------------------------------------------- main -- */

/* The engine's message about source k ("source K: ...") names the file and
 * line instead, as api.Run does; other messages are kept. */
static void die_setup(const plan *pl, const char *msg)
{
    if (!msg[0]) msg = "nb_setup_init failed";
    if (pl->sources_name == NULL || !starts_with(msg, "source ")) die("%s", msg);
    /* k: the second word, an integer; the rest: after the second single space */
    const char *p = msg + strlen("source ");
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\v' || *p == '\f') p++;
    char *end;
    errno = 0;
    long k = strtol(p, &end, 10);
    int ok = end != p && errno == 0 && (*end == '\0' || *end == ' ' || *end == '\t' || *end == '\n');
    const char *sp1 = strchr(msg, ' ');
    const char *rest = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    long i = k - 1;
    if (ok && i < 0) i += pl->n_sources;        /* Python's negative indexing */
    if (!ok || rest == NULL || i < 0 || i >= pl->n_sources) die("%s: %s", pl->sources_name, msg);
    die("%s: line %ld: the source %s", pl->sources_name, pl->source_lines[i], rest + 1);
}

static void stage_or_die(const char *path, const void *head, size_t head_len, const void *body, size_t body_len)
{
    rio_chunk c[2] = { { head, head_len }, { body, body_len } };
    char err[ERRLEN];
    if (rio_stage(path, c, 2, err, sizeof err) != 0) die("%s", err);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "%s: error: usage: nanobragg-run PLAN (the nanoBragg command runs this program)\n", PROG);
        return 1;
    }
    install_signals();

    plan pl;
    read_plan(argv[1], &pl);

    /* the setup first: its checks are cheap, the HKL read may not be */
    nb_setup s;
    memset(&s, 0, sizeof s);
    char err[ERRLEN] = "";
    if (nb_setup_init(&pl.p, &s, err, sizeof err) != NB_OK) die_setup(&pl, err);
    const size_t W = (size_t)(s.fpixels > 0 ? s.fpixels : 0), H = (size_t)(s.spixels > 0 ? s.spixels : 0);
    const size_t npix = W * H;

    nb_smv mask;
    memset(&mask, 0, sizeof mask);
    if (pl.mask) {
        size_t len = 0;
        unsigned char *data = read_input(pl.mask, "-mask", &len);
        int rc = nb_smv_parse(data, len, &mask, err, sizeof err);
        free(data);
        if (rc != NB_OK) die("-mask %s: %s", pl.mask, err[0] ? err : "nb_smv_parse failed");
        if ((size_t)mask.width != W || (size_t)mask.height != H)
            die("-mask: the mask is %dx%d pixels but the detector is %dx%d (fast x slow)", mask.width, mask.height,
                s.fpixels, s.spixels);
    }
    if (pl.has_printout_pixel) {
        long long f = pl.printout_pixel[0], sl = pl.printout_pixel[1];
        /* the reference prints every pixel for a negative fast index; otherwise it must be on the detector */
        if (f >= 0 && !(f < s.fpixels && 0 <= sl && sl < s.spixels))
            die_usage("-printout_pixel %lld %lld: outside the %d x %d pixel detector (0..%d, 0..%d)", f, sl,
                      s.fpixels, s.spixels, s.fpixels - 1, s.spixels - 1);
    }

    hkl_input h;
    load_hkl(&pl, &h);

    if (h.from_text) write_dump(&pl, &h);
    print_log(&pl, &s, &h);
    if (s.warn_pix0_ignored && !(s.log && strstr(s.log, "pix0_vector ignored")))
        say("WARNING: -pix0_vector ignored because custom detector vectors (-fdet/-sdet/-odet_vector) are given");
    fflush(stdout);
    clearerr(stdout);

    float *image = calloc(npix ? npix : 1, sizeof *image);
    if (image == NULL) die("out of memory for a %zux%zu float image", W, H);
    nb_stats st;
    memset(&st, 0, sizeof st);
    if (nb_render(&s, h.loaded ? &h.grid : NULL, pl.mask ? mask.data : NULL, image, &st, pl.threads, err,
                  sizeof err) != NB_OK)
        die("%s", err[0] ? err : "nb_render failed");
    /* the render's inputs are not needed any more: the output buffers reuse the room */
    nb_smv_free(&mask);
    nb_hkl_free(&h.grid);

    if (st.interpolation_fell_back) {
        say("WARNING: out of range for three point interpolation: h,k,l,h0,k0,l0: %g,%g,%g,%d,%d,%d ",
            g(st.fallback_hkl[0]), g(st.fallback_hkl[1]), g(st.fallback_hkl[2]), st.fallback_hkl0[0],
            st.fallback_hkl0[1], st.fallback_hkl0[2]);
        /* no newline, as the reference: the blank line below completes it */
        fputs("WARNING: further warnings will not be printed! ", stdout);
    }
    say("%s", "");
    double omega = st.omega_sum / (double)(s.steps ? s.steps : 1);
    say("solid angle subtended by detector = %g steradian ( %g%% sphere)", g(omega), g(100 * omega / 4 / M_PI));

    /* every image goes to a temporary file first; they replace the old files
     * together at the end, so a failed or interrupted run changes nothing */
    writing_outputs = 1;
    say("writing %s as %zu %d-byte floats", pl.out_float, npix, 4);
    stage_or_die(pl.out_float, NULL, 0, image, npix * sizeof *image);

    say("max_I = %g  at %g %g", g(st.max_I), g(st.max_I_x_m), g(st.max_I_y_m));
    say("mean= %g rms= %g rmsd= %g", g(st.mean), g(st.rms), g(st.rmsd));

    char header[1024];
    size_t hlen = nb_smv_header_text(&s, header, sizeof header);
    if (hlen > sizeof header) hlen = sizeof header;

    /* one 16-bit buffer serves the int, PGM and noise images in turn, as upstream reuses its */
    uint16_t *pixels = malloc((npix ? npix : 1) * sizeof *pixels);
    if (pixels == NULL) die("out of memory for a %zux%zu image", W, H);
    double int_scale = nb_int_image(&s, image, st.max_I, pixels);
    say("intfile_scale = %g", g(int_scale));
    say("writing %s as %d-byte integers", pl.out_int, 2);
    stage_or_die(pl.out_int, header, hlen, pixels, npix * sizeof *pixels);

    if (pl.out_pgm) {
        unsigned char *grey = (unsigned char *)pixels;
        double pgm_scale = nb_pgm_image(&s, image, int_scale, st.rmsd, grey);
        say("pgm_scale = %g", g(pgm_scale));
        say("writing %s as %d-byte integers", pl.out_pgm, 1);
        char pgm_head[256];
        size_t plen = nb_pgm_header(&s, pgm_scale, pgm_head, sizeof pgm_head);
        if (plen >= sizeof pgm_head) plen = sizeof pgm_head - 1;
        stage_or_die(pl.out_pgm, pgm_head, plen, grey, npix);
    }

    if (pl.out_noise) {
        double photons = 0.0;
        long overloads = 0;
        nb_noise_image(&s, image, s.seed, pixels, &photons, &overloads);
        say("%.0f photons on noise image (%ld overloads)", g(photons), overloads);
        say("writing %s as %d-byte integers", pl.out_noise, 2);
        stage_or_die(pl.out_noise, header, hlen, pixels, npix * sizeof *pixels);
    }
    if (rio_commit(err, sizeof err) != 0) die("%s", err);
    writing_outputs = 0;
    fflush(stdout);
    free(pixels);
    free(image);
    nb_setup_free(&s);
    return 0;
}
