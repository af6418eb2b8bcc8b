/* prom.h: a writer for Prometheus' text exposition format (version 0.0.4) on a
 * stdio stream, shared by the agent's /metrics renderers (agent/metrics.c,
 * agent/telemetry/prometheus.c).
 *
 * A family is its "# HELP" and "# TYPE" lines, then its series. A series is
 * the metric name, optional labels `{name="value",...}`, one space and the
 * value. Label values are escaped as the format says (backslash, double quote
 * and newline become \\, \" and \n); label names and metric names are the
 * caller's constants and are written as they are. Values: unsigned integers in
 * decimal, doubles with "%.9g" (so NaN and infinities print as nan/inf).
 *
 * Nothing here allocates; write errors are left on the stream for the caller
 * to read with ferror(). */
#ifndef CA_COMMON_PROM_H
#define CA_COMMON_PROM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One label; value NULL is written as "". */
struct prom_label {
    const char *name;
    const char *value;
};

/* "# HELP name help\n# TYPE name type\n" (type: counter, gauge, histogram...). */
void prom_family(FILE *f, const char *name, const char *type, const char *help);

/* s with \, " and newline escaped (a label value, without its quotes). */
void prom_label_value(FILE *f, const char *s);

/* The series' head: name, then {labels} when n > 0, then one space; follow it
 * with prom_u64() or prom_double(). */
void prom_series(FILE *f, const char *name, const struct prom_label *labels, size_t n);

/* A value and the end of its line. */
void prom_u64(FILE *f, uint64_t v);
void prom_double(FILE *f, double v);

/* A histogram's series: name_bucket{labels,le="B"} (cumulative counts) for
 * each of the nb bounds (ascending, printed with "%g") and for "+Inf", then
 * name_sum and name_count. buckets holds nb + 1 non-cumulative counts, the
 * last one above every bound. */
void prom_histogram(FILE *f, const char *name, const struct prom_label *labels, size_t n,
                    const double *bounds, size_t nb, const uint64_t *buckets, double sum,
                    uint64_t count);

#endif
