/*
 * wait.c: when an operation or an instance is where we want it, and the polling
 * loops that get there (100 ms doubling to 1 s, until a deadline).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* asprintf */
#endif
#include <errno.h>
#include <string.h>
#include <time.h>

#include "cli-internal.h"

static const char *const instance_states[] = {
        "pending", "running", "stopping", "stopped", "shutting-down", "terminated", "error", "resized", NULL,
};

bool ctl_instance_state_valid(const char *state) {
        if (!state)
                return false;
        for (size_t i = 0; instance_states[i]; i++)
                if (strcmp(state, instance_states[i]) == 0)
                        return true;
        return false;
}

static bool streq_null(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

enum ctl_progress ctl_operation_progress(const json_t *op) {
        const char *state = json_string_value(json_object_get(op, "state"));

        if (streq_null(state, "succeeded"))
                return CTL_PROGRESS_DONE;
        if (streq_null(state, "failed"))
                return CTL_PROGRESS_FAILED;
        return CTL_PROGRESS_PENDING;
}

enum ctl_progress ctl_instance_progress(const json_t *inst, const char *want_state) {
        const char *state = json_string_value(json_object_get(inst, "state"));
        const json_t *task = json_object_get(inst, "task_state");
        /* verify_resize: a cold resize waits for confirm or revert, nothing runs */
        bool idle = !task || json_is_null(task) || streq_null(json_string_value(task), "verify_resize");

        if (!state)
                return CTL_PROGRESS_PENDING;
        if (!want_state) {
                if (strcmp(state, "error") == 0 && idle)
                        return CTL_PROGRESS_FAILED;
                return strcmp(state, "pending") != 0 && idle ? CTL_PROGRESS_DONE : CTL_PROGRESS_PENDING;
        }
        if (strcmp(state, want_state) == 0) {
                bool transitional = strcmp(want_state, "pending") == 0 ||
                                    strcmp(want_state, "stopping") == 0 ||
                                    strcmp(want_state, "shutting-down") == 0;

                return idle || transitional ? CTL_PROGRESS_DONE : CTL_PROGRESS_PENDING;
        }
        if (strcmp(state, "error") == 0 || strcmp(state, "terminated") == 0)
                return CTL_PROGRESS_FAILED;
        return CTL_PROGRESS_PENDING;
}

long ctl_backoff_next(long interval_ms) {
        if (interval_ms < CTL_POLL_FIRST_MS)
                return CTL_POLL_FIRST_MS;
        if (interval_ms >= CTL_POLL_MAX_MS / 2)
                return CTL_POLL_MAX_MS;
        return interval_ms * 2;
}

static long now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Polling state: when to give up, how long to sleep next, what went wrong last. */
struct poller {
        long deadline_ms;               /* CLOCK_MONOTONIC */
        long interval_ms;               /* next sleep */
        long timeout_ms;                /* as given, for the message */
        struct ctl_error problem;       /* last transient failure, "" if none */
};

static void poller_init(struct poller *p, long timeout_ms) {
        *p = (struct poller) {
                .deadline_ms = now_ms() + timeout_ms,
                .interval_ms = CTL_POLL_FIRST_MS,
                .timeout_ms = timeout_ms,
        };
}

/* Sleeps until the next poll; false once the deadline has passed. */
static bool poller_sleep(struct poller *p) {
        long left = p->deadline_ms - now_ms();
        long ms = p->interval_ms < left ? p->interval_ms : left;
        struct timespec ts;

        if (left <= 0)
                return false;
        ts = (struct timespec) { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        p->interval_ms = ctl_backoff_next(p->interval_ms);
        return true;
}

/* Reports why polling stopped: r from poll_get(), resp its answer. */
static void print_poll_failure(struct ctl_ctx *ctx, int r, const struct ctl_response *resp) {
        _cleanup_ctl_free_ char *line = NULL;

        if (r == -ENOMEM) {
                fprintf(ctx->err, "error: out of memory\n");
                return;
        }
        if (r == -EBADMSG) {
                fprintf(ctx->err, "error: the agent's answer is not the expected JSON object\n");
                return;
        }

        if (ctl_format_api_error(resp->status, resp->body, resp->raw, &line) < 0)
                fprintf(ctx->err, "error: HTTP %ld\n", resp->status);
        else
                fprintf(ctx->err, "%s\n", line);
}

static void print_timeout(struct ctl_ctx *ctx, const struct poller *p, const char *what,
                          const char *id, const json_t *last) {
        const char *state = json_string_value(json_object_get(last, "state"));
        const char *detail = json_string_value(json_object_get(last, "step"));
        const char *detail_name = "step";

        if (!detail) {
                detail = json_string_value(json_object_get(last, "task_state"));
                detail_name = "task";
        }
        fprintf(ctx->err, "error: timed out after %g s waiting for %s %s", p->timeout_ms / 1000.0,
                what, id);
        if (state) {
                fprintf(ctx->err, " (state: %s", state);
                if (detail)
                        fprintf(ctx->err, ", %s: %s", detail_name, detail);
                fputc(')', ctx->err);
        }
        if (p->problem.message[0])
                fprintf(ctx->err, "; last error: %s", p->problem.message);
        fputc('\n', ctx->err);
}

/*
 * One GET of a polled resource. Returns 1 with *ret_body (new reference) on 200,
 * 0 when the poll should simply be retried (transport failure, 503), or -status
 * / -errno when waiting must stop, with resp left for the caller to report.
 */
static int poll_get(struct ctl_ctx *ctx, struct poller *p, const char *path,
                    struct ctl_response *resp, json_t **ret_body) {
        int r = ctl_client_request(ctx->client, "GET", path, NULL, NULL, resp, &p->problem);

        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return 0;       /* the agent may be restarting: keep trying until the deadline */
        if (resp->status == 200 && json_is_object(resp->body)) {
                *ret_body = json_incref(resp->body);
                p->problem.message[0] = '\0';
                return 1;
        }
        if (resp->status == 503) {
                _cleanup_ctl_free_ char *line = NULL;

                if (ctl_format_api_error(resp->status, resp->body, resp->raw, &line) == 0)
                        ctl_error_set(&p->problem, "%s", line);
                return 0;
        }
        return resp->status == 200 ? -EBADMSG : -(int) resp->status;
}

static void print_operation_failure(struct ctl_ctx *ctx, const json_t *op) {
        const json_t *error = json_object_get(op, "error");
        const char *type = json_string_value(json_object_get(op, "type"));
        const char *code = json_string_value(json_object_get(error, "code"));
        const char *message = json_string_value(json_object_get(error, "message"));

        fprintf(ctx->err, "error: operation %s (%s) failed: %s: %s\n",
                json_string_value(json_object_get(op, "id")) ?: "?", type ?: "?",
                code ?: "failed", message ?: "no details");
}

static void print_instance_failure(struct ctl_ctx *ctx, const json_t *inst) {
        const char *state = json_string_value(json_object_get(inst, "state"));
        const char *fault = json_string_value(json_object_get(inst, "fault"));

        fprintf(ctx->err, "error: instance %s is %s%s%s\n",
                json_string_value(json_object_get(inst, "id")) ?: "?", state ?: "?",
                fault ? ": " : "", fault ?: "");
}

int ctl_wait_operation(struct ctl_ctx *ctx, const char *op_id, long timeout_ms, json_t **ret_op) {
        _cleanup_ctl_free_ char *path = NULL;
        json_auto_t *last = NULL;
        struct ctl_progress_view view = {};
        struct poller p;
        int exit_code;

        if (ret_op)
                *ret_op = NULL;
        if (asprintf(&path, "/v1/operations/%s", op_id) < 0) {
                path = NULL;
                return CTL_EXIT_FAILURE;
        }
        poller_init(&p, timeout_ms);
        for (;;) {
                struct ctl_response resp = {};
                json_t *op = NULL;
                int r = poll_get(ctx, &p, path, &resp, &op);

                if (r < 0) {
                        ctl_progress_end(ctx, &view);
                        print_poll_failure(ctx, r, &resp);
                        ctl_response_release(&resp);
                        exit_code = CTL_EXIT_FAILURE;
                        break;
                }
                ctl_response_release(&resp);
                if (r > 0) {
                        enum ctl_progress progress = ctl_operation_progress(op);

                        json_decref(last);
                        last = op;
                        /* a launch downloading its image: bytes, rate, ETA */
                        ctl_progress_show(ctx, &view, json_object_get(op, "progress"));
                        if (progress == CTL_PROGRESS_DONE) {
                                exit_code = CTL_EXIT_OK;
                                break;
                        }
                        if (progress == CTL_PROGRESS_FAILED) {
                                ctl_progress_end(ctx, &view);
                                print_operation_failure(ctx, last);
                                exit_code = CTL_EXIT_FAILURE;
                                break;
                        }
                }
                if (!poller_sleep(&p)) {
                        ctl_progress_end(ctx, &view);
                        print_timeout(ctx, &p, "operation", op_id, last);
                        exit_code = CTL_EXIT_TIMEOUT;
                        break;
                }
        }
        ctl_progress_end(ctx, &view);
        if (ret_op)
                *ret_op = TAKE_PTR(last);
        return exit_code;
}

int ctl_wait_instance(struct ctl_ctx *ctx, const char *id, const char *want_state,
                      long timeout_ms, json_t **ret_inst) {
        _cleanup_ctl_free_ char *path = NULL;
        json_auto_t *last = NULL;
        struct poller p;
        int exit_code;

        if (ret_inst)
                *ret_inst = NULL;
        if (asprintf(&path, "/v1/instances/%s", id) < 0) {
                path = NULL;
                return CTL_EXIT_FAILURE;
        }
        poller_init(&p, timeout_ms);
        for (;;) {
                struct ctl_response resp = {};
                json_t *inst = NULL;
                int r = poll_get(ctx, &p, path, &resp, &inst);

                if (r == -404 && streq_null(want_state, "terminated")) {
                        ctl_response_release(&resp);
                        json_decref(TAKE_PTR(last));    /* what we saw last is stale now */
                        exit_code = CTL_EXIT_OK;        /* gone is as terminated as it gets */
                        break;
                }
                if (r < 0) {
                        print_poll_failure(ctx, r, &resp);
                        ctl_response_release(&resp);
                        exit_code = CTL_EXIT_FAILURE;
                        break;
                }
                ctl_response_release(&resp);
                if (r > 0) {
                        enum ctl_progress progress = ctl_instance_progress(inst, want_state);

                        json_decref(last);
                        last = inst;
                        if (progress == CTL_PROGRESS_DONE) {
                                exit_code = CTL_EXIT_OK;
                                break;
                        }
                        if (progress == CTL_PROGRESS_FAILED) {
                                print_instance_failure(ctx, last);
                                exit_code = CTL_EXIT_FAILURE;
                                break;
                        }
                }
                if (!poller_sleep(&p)) {
                        print_timeout(ctx, &p, "instance", id, last);
                        exit_code = CTL_EXIT_TIMEOUT;
                        break;
                }
        }
        if (ret_inst)
                *ret_inst = TAKE_PTR(last);
        return exit_code;
}
