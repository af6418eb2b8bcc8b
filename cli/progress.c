/*
 * progress.c: a download's progress as the agent reports it ({"bytes_done",
 * "bytes_total", "rate_bps"}: an operation's "progress" during a launch that
 * downloads its image, an image's "progress" during a pull), shown on stderr:
 * a bar redrawn in place on a terminal, plain lines (one every few seconds)
 * otherwise.
 */
#include <string.h>
#include <time.h>

#include "cli-internal.h"

#define PLAIN_EVERY_MS 2000L    /* at most one plain line this often */
#define BAR_WIDTH 24

static long mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ctl_format_bytes(double bytes, char *buf, size_t size) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
        size_t u = 0;

        while (bytes >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
                bytes /= 1024.0;
                u++;
        }
        if (u == 0)
                snprintf(buf, size, "%.0f B", bytes);
        else
                snprintf(buf, size, "%.1f %s", bytes, units[u]);
}

/* "m:ss" or "h:mm:ss"; "--:--" when unknown (secs < 0). */
static void format_eta(double secs, char *buf, size_t size) {
        long s;

        if (secs < 0 || secs > 359999.0) {
                snprintf(buf, size, "--:--");
                return;
        }
        s = (long) (secs + 0.5);
        if (s >= 3600)
                snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
        else
                snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

void ctl_progress_format(char *buf, size_t size, int64_t done, int64_t total, double rate_bps, bool bar) {
        char d[32], t[32], r[40] = "", eta[32];
        double eta_s = -1;
        int pct = -1;

        if (done < 0)
                done = 0;
        ctl_format_bytes((double) done, d, sizeof(d));
        if (total > 0) {
                ctl_format_bytes((double) total, t, sizeof(t));
                /* in double: done * 100 would overflow int64 for an absurd answer */
                pct = done >= total ? 100 : (int) ((double) done * 100.0 / (double) total);
                if (rate_bps > 0)
                        eta_s = (double) (total > done ? total - done : 0) / rate_bps;
        }
        if (rate_bps > 0) {
                char rb[32];

                ctl_format_bytes(rate_bps, rb, sizeof(rb));
                snprintf(r, sizeof(r), "%s/s", rb);
        }
        format_eta(eta_s, eta, sizeof(eta));

        if (bar) {
                char cells[BAR_WIDTH + 1];
                int fill = pct < 0 ? 0 : pct * BAR_WIDTH / 100;

                for (int i = 0; i < BAR_WIDTH; i++)
                        cells[i] = pct < 0 ? '?' : i < fill ? '#' : '.';
                cells[BAR_WIDTH] = '\0';
                if (pct >= 0)
                        snprintf(buf, size, "[%s] %3d%%  %s / %s  %s  ETA %s", cells, pct, d, t,
                                 r[0] ? r : "-", eta);
                else
                        snprintf(buf, size, "[%s]  %s  %s", cells, d, r[0] ? r : "-");
                return;
        }
        if (pct >= 0)
                snprintf(buf, size, "downloading: %d%%, %s of %s, %s, ETA %s", pct, d, t,
                         r[0] ? r : "rate unknown", eta);
        else
                snprintf(buf, size, "downloading: %s (size unknown), %s", d, r[0] ? r : "rate unknown");
}

void ctl_progress_show(struct ctl_ctx *ctx, struct ctl_progress_view *v, const json_t *progress) {
        const json_t *jd = json_object_get(progress, "bytes_done");
        const json_t *jt = json_object_get(progress, "bytes_total");
        const json_t *jr = json_object_get(progress, "rate_bps");
        char line[160];
        long now = mono_ms();

        if (!json_is_object(progress) || !json_is_integer(jd) || ctx->cfg.json)
                return;
        ctl_progress_format(line, sizeof(line), json_integer_value(jd),
                            json_is_integer(jt) ? json_integer_value(jt) : -1,
                            json_is_number(jr) ? json_number_value(jr) : -1, ctx->err_tty);
        if (ctx->err_tty) {
                /* \r and clear to the end of the line: a shorter line leaves nothing behind */
                fprintf(ctx->err, "\r%s\033[K", line);
                fflush(ctx->err);
                v->shown = true;
                return;
        }
        if (v->shown && now - v->last_ms < PLAIN_EVERY_MS)
                return;
        fprintf(ctx->err, "%s\n", line);
        fflush(ctx->err);
        v->shown = true;
        v->last_ms = now;
}

void ctl_progress_end(struct ctl_ctx *ctx, struct ctl_progress_view *v) {
        if (v->shown && ctx->err_tty)
                fputc('\n', ctx->err);
        v->shown = false;
}
