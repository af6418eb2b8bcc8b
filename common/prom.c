/* prom.c: see prom.h. */
#include <inttypes.h>

#include "common/prom.h"

void prom_family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void prom_label_value(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\')
            fputs("\\\\", f);
        else if (*s == '"')
            fputs("\\\"", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

/* The labels without their braces, each followed by a comma but the last. */
static void labels_body(FILE *f, const struct prom_label *labels, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s%s=\"", i ? "," : "", labels[i].name);
        prom_label_value(f, labels[i].value);
        fputc('"', f);
    }
}

/* name + suffix, {labels} when n > 0, one space. */
static void head(FILE *f, const char *name, const char *suffix, const struct prom_label *labels,
                 size_t n)
{
    fprintf(f, "%s%s", name, suffix);
    if (n) {
        fputc('{', f);
        labels_body(f, labels, n);
        fputc('}', f);
    }
    fputc(' ', f);
}

void prom_series(FILE *f, const char *name, const struct prom_label *labels, size_t n)
{
    head(f, name, "", labels, n);
}

void prom_u64(FILE *f, uint64_t v) { fprintf(f, "%" PRIu64 "\n", v); }

void prom_double(FILE *f, double v) { fprintf(f, "%.9g\n", v); }

void prom_histogram(FILE *f, const char *name, const struct prom_label *labels, size_t n,
                    const double *bounds, size_t nb, const uint64_t *buckets, double sum,
                    uint64_t count)
{
    uint64_t cum = 0;

    for (size_t i = 0; i <= nb; i++) {
        cum += buckets[i];
        fprintf(f, "%s_bucket{", name);
        labels_body(f, labels, n);
        if (i < nb)
            fprintf(f, "%sle=\"%g\"} ", n ? "," : "", bounds[i]);
        else
            fprintf(f, "%sle=\"+Inf\"} ", n ? "," : "");
        prom_u64(f, cum);
    }
    head(f, name, "_sum", labels, n);
    prom_double(f, sum);
    head(f, name, "_count", labels, n);
    prom_u64(f, count);
}
