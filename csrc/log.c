/* log.c - the engine's two ways of speaking: an error message for the
 * caller (a fixed buffer) and the setup's log of messages for the user
 * (grown as needed, best effort).  Every stage of the setup writes through
 * these, so they live apart from the stages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

void nb_set_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void nb_log(nb_setup *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0) return;
    if (s->log_len + (size_t)need + 1 > s->log_cap) {
        size_t cap = s->log_cap ? s->log_cap : 4096;
        while (cap < s->log_len + (size_t)need + 1) cap *= 2;
        char *grown = realloc(s->log, cap);
        if (!grown) return;          /* messages are best effort */
        s->log = grown;
        s->log_cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(s->log + s->log_len, s->log_cap - s->log_len, fmt, ap);
    va_end(ap);
    s->log_len += (size_t)need;
}
