/*
 * commands.c: computectl's commands and the table that lists them. Adding a
 * command is one ctl_commands[] entry plus its run function (and, if it takes
 * options, its option table).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* asprintf */
#endif
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "cli-internal.h"

/* ---------------- output helpers ---------------- */

static void print_json(struct ctl_ctx *ctx, const json_t *v) {
        json_dumpf(v, ctx->out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', ctx->out);
}

static int usage_error(struct ctl_ctx *ctx, const char *command, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Prints "computectl: <message>" and a hint; returns CTL_EXIT_USAGE. */
static int usage_error(struct ctl_ctx *ctx, const char *command, const char *fmt, ...) {
        va_list ap;

        fputs("computectl: ", ctx->err);
        va_start(ap, fmt);
        vfprintf(ctx->err, fmt, ap);
        va_end(ap);
        fprintf(ctx->err, "\nTry 'computectl %s --help'.\n", command);
        return CTL_EXIT_USAGE;
}

/* Exit code for a -errno from the request builders: out of memory is not the user's fault. */
static int builder_failure(struct ctl_ctx *ctx, const char *command, int r, const struct ctl_error *e) {
        if (r == -ENOMEM) {
                fprintf(ctx->err, "error: out of memory\n");
                return CTL_EXIT_FAILURE;
        }
        return usage_error(ctx, command, "%s", e->message);
}

/* Prints "text" (a formatter's output) or reports a malformed answer. */
static int print_formatted(struct ctl_ctx *ctx, int r, const char *text) {
        if (r == -ENOMEM) {
                fprintf(ctx->err, "error: out of memory\n");
                return CTL_EXIT_FAILURE;
        }
        if (r < 0) {
                fprintf(ctx->err, "error: unexpected answer from the agent (use --json to see it)\n");
                return CTL_EXIT_FAILURE;
        }
        fputs(text, ctx->out);
        return CTL_EXIT_OK;
}

/*
 * Sends a request. Returns CTL_EXIT_OK with *resp filled (caller releases) when
 * the agent answered 2xx with a JSON object, or 204 with no body (resp->body
 * NULL); otherwise reports the failure (the
 * error line on stderr, and with --json the error body on stdout) and returns
 * CTL_EXIT_FAILURE or CTL_EXIT_TIMEOUT, resp released.
 */
static int call(struct ctl_ctx *ctx, const char *method, const char *path, const json_t *body,
                const char *idempotency_key, struct ctl_response *resp) {
        struct ctl_error e = {};
        _cleanup_ctl_free_ char *line = NULL;
        int r;

        r = ctl_client_request(ctx->client, method, path, body, idempotency_key, resp, &e);
        if (r < 0) {
                fprintf(ctx->err, "error: %s\n", r == -ENOMEM ? "out of memory" : e.message);
                return r == -ETIMEDOUT ? CTL_EXIT_TIMEOUT : CTL_EXIT_FAILURE;
        }
        if (resp->status >= 200 && resp->status < 300 && json_is_object(resp->body))
                return CTL_EXIT_OK;
        if (resp->status == 204 && resp->raw[0] == '\0')
                return CTL_EXIT_OK;     /* No Content (image delete): resp->body is NULL */

        if (resp->status >= 200 && resp->status < 300)
                fprintf(ctx->err, "error: the agent's answer to %s %s is not a JSON object\n",
                        method, path);
        else if (ctl_format_api_error(resp->status, resp->body, resp->raw, &line) == 0)
                fprintf(ctx->err, "%s\n", line);
        else
                fprintf(ctx->err, "error: HTTP %ld\n", resp->status);
        if (ctx->cfg.json && resp->body)
                print_json(ctx, resp->body);
        ctl_response_release(resp);
        return CTL_EXIT_FAILURE;
}

/* GETs path and prints the answer: raw JSON, or format()'s text. */
static int get_and_print(struct ctl_ctx *ctx, const char *path,
                         int (*format)(const json_t *v, char **ret)) {
        struct ctl_response resp = {};
        _cleanup_ctl_free_ char *text = NULL;
        int exit_code, r;

        exit_code = call(ctx, "GET", path, NULL, NULL, &resp);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        if (ctx->cfg.json) {
                print_json(ctx, resp.body);
                exit_code = CTL_EXIT_OK;
        } else {
                r = format(resp.body, &text);
                exit_code = print_formatted(ctx, r, text);
        }
        ctl_response_release(&resp);
        return exit_code;
}

/* ---------------- argument helpers ---------------- */

/* Checks that id names an instance (UUID or ec2 id). */
static int instance_id_check(struct ctl_ctx *ctx, const char *command, const char *id) {
        if (ctl_id_classify(id) == CTL_ID_INVALID)
                return usage_error(ctx, command,
                                   "'%s' is not an instance id (a UUID, or i- and 17 hex digits)", id);
        return CTL_EXIT_OK;
}

/* --wait-timeout (which implies --wait), in ms; -1 when not waiting. */
static int wait_timeout_get(struct ctl_ctx *ctx, const char *command, const struct ctl_args *args,
                            long *ret_ms) {
        const char *v = args->value[CTL_OPT_WAIT_TIMEOUT];
        long ms = CTL_DEFAULT_WAIT_TIMEOUT_MS;

        if (v && ctl_parse_seconds(v, &ms) < 0)
                return usage_error(ctx, command, "--wait-timeout: '%s' is not a number of seconds", v);
        *ret_ms = args->value[CTL_OPT_WAIT] || v ? ms : -1;
        return CTL_EXIT_OK;
}

/* ---------------- accepted requests (202) ---------------- */

/* The latest Instance, or NULL (e.g. a terminated instance already gone). New reference. */
static json_t *instance_refetch(struct ctl_ctx *ctx, const char *id) {
        struct ctl_response resp = {};
        _cleanup_ctl_free_ char *path = NULL;
        struct ctl_error e = {};
        json_t *inst = NULL;

        if (!id || asprintf(&path, "/v1/instances/%s", id) < 0)
                return NULL;
        if (ctl_client_request(ctx->client, "GET", path, NULL, NULL, &resp, &e) == 0 &&
            resp.status == 200 && json_is_object(resp.body))
                inst = json_incref(resp.body);
        ctl_response_release(&resp);
        return inst;
}

static int print_accepted(struct ctl_ctx *ctx, const json_t *inst, const json_t *op) {
        _cleanup_ctl_free_ char *text = NULL;
        int r;

        if (ctx->cfg.json) {
                json_auto_t *both = json_pack("{s:O?,s:O?}", "instance", inst, "operation", op);

                if (!both) {
                        fprintf(ctx->err, "error: out of memory\n");
                        return CTL_EXIT_FAILURE;
                }
                print_json(ctx, both);
                return CTL_EXIT_OK;
        }
        r = ctl_format_accepted(inst, op, &text);
        return print_formatted(ctx, r, text);
}

/*
 * What a finished resize leaves the user to know, on stderr (not with --json: the
 * answer says it): a live change the guest took only in part, a cold resize that
 * now waits for confirm or revert.
 */
static void print_resize_notes(struct ctl_ctx *ctx, const json_t *inst, const json_t *op) {
        const json_t *result = json_object_get(op, "result");
        const char *outcome = json_string_value(json_object_get(result, "outcome"));
        const char *type = json_string_value(json_object_get(op, "type"));
        const char *state = json_string_value(json_object_get(inst, "state"));
        const char *id = json_string_value(json_object_get(inst, "id"));

        if (ctx->cfg.json || !type || strcmp(type, "resize") != 0)
                return;
        if (outcome && strcmp(outcome, "partial") == 0)
                fprintf(ctx->err, "warning: the guest did not take the whole live resize in time "
                                  "(see operation_result); its definition holds the new flavor\n");
        if (state && id && strcmp(state, "resized") == 0)
                fprintf(ctx->err, "note: %s waits in state resized: 'computectl confirm-resize %s' keeps "
                                  "the new flavor, 'computectl revert-resize %s' restores the old one\n",
                        id, id, id);
}

/*
 * Finishes a request the agent accepted ({"instance","operation"}): prints it, or
 * with --wait polls the operation to its end and prints the final instance and
 * operation. wait_ms < 0: do not wait.
 */
static int finish_accepted(struct ctl_ctx *ctx, const json_t *answer, long wait_ms) {
        const json_t *inst = json_object_get(answer, "instance");
        const json_t *op = json_object_get(answer, "operation");
        const char *op_id = json_string_value(json_object_get(op, "id"));
        json_auto_t *final_op = NULL, *final_inst = NULL;
        int exit_code, r;

        if (wait_ms < 0) {
                if (ctx->cfg.json) {
                        print_json(ctx, answer);
                        return CTL_EXIT_OK;
                }
                return print_accepted(ctx, inst, op);
        }
        if (!op_id) {
                fprintf(ctx->err, "error: the agent's answer names no operation to wait for\n");
                return CTL_EXIT_FAILURE;
        }

        exit_code = ctl_wait_operation(ctx, op_id, wait_ms, &final_op);
        if (exit_code == CTL_EXIT_TIMEOUT)
                return exit_code;
        /* a terminated instance may be gone: then show the operation alone, not a stale instance */
        final_inst = instance_refetch(ctx, json_string_value(json_object_get(inst, "id")));
        r = print_accepted(ctx, final_inst, final_op ? final_op : op);
        if (exit_code == CTL_EXIT_OK)
                print_resize_notes(ctx, final_inst, final_op);
        return exit_code != CTL_EXIT_OK ? exit_code : r;
}

/* ---------------- commands ---------------- */

static int cmd_host(struct ctl_ctx *ctx, const struct ctl_args *args) {
        const char *sub = args->n_positional > 0 ? args->positional[0] : NULL;
        struct ctl_response resp = {};
        _cleanup_ctl_free_ char *text = NULL;
        json_t *empty;
        int exit_code, r;

        if (!sub)
                return get_and_print(ctx, "/v1/host", ctl_format_host);
        if (strcmp(sub, "disable") != 0 && strcmp(sub, "enable") != 0)
                return usage_error(ctx, "host", "'%s' is not disable or enable", sub);
        /* POST /v1/host/disable|enable answers with the host */
        empty = json_object();
        exit_code = call(ctx, "POST", !strcmp(sub, "disable") ? "/v1/host/disable" : "/v1/host/enable",
                         empty, NULL, &resp);
        json_decref(empty);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        if (ctx->cfg.json) {
                print_json(ctx, resp.body);
        } else {
                r = ctl_format_host(resp.body, &text);
                exit_code = print_formatted(ctx, r, text);
        }
        ctl_response_release(&resp);
        return exit_code;
}

/* One image as a table row (borrowed strings; "-" for null). */
static const char *str_or_dash(const json_t *v) {
        return json_is_string(v) ? json_string_value(v) : "-";
}

static void print_image_row(struct ctl_ctx *ctx, const json_t *img) {
        const json_t *users = json_object_get(img, "in_use_by");
        const json_t *src = json_object_get(img, "source");
        const char *from = json_is_string(json_object_get(src, "url")) ? json_string_value(json_object_get(src, "url"))
                           : str_or_dash(json_object_get(src, "glance_id"));
        char size[32] = "-";

        if (json_is_integer(json_object_get(img, "size")))
                snprintf(size, sizeof(size), "%lld", (long long)json_integer_value(json_object_get(img, "size")));
        fprintf(ctx->out, "%-36s  %-11s  %-6s  %12s  %6zu  %.20s  %s\n", str_or_dash(json_object_get(img, "id")),
                str_or_dash(json_object_get(img, "state")), str_or_dash(json_object_get(img, "format")), size,
                json_array_size(users), str_or_dash(json_object_get(img, "digest")), from);
}

static void print_image_header(struct ctl_ctx *ctx) {
        fprintf(ctx->out, "%-36s  %-11s  %-6s  %12s  %6s  %-20s  %s\n", "ID", "STATE", "FORMAT", "SIZE",
                "IN_USE", "DIGEST", "SOURCE");
}

/* image list | show ID | pull (--source URL --digest D | --glance-id ID) [--wait] | delete ID */
static int cmd_image(struct ctl_ctx *ctx, const struct ctl_args *args) {
        const char *sub = args->positional[0], *id = args->n_positional > 1 ? args->positional[1] : NULL;
        struct ctl_response resp = {};
        _cleanup_ctl_free_ char *path = NULL;
        int exit_code;

        if (!strcmp(sub, "list") || !strcmp(sub, "show")) {
                if (!strcmp(sub, "show") && (!id || ctl_id_classify(id) != CTL_ID_UUID))
                        return usage_error(ctx, "image", "image show needs an image id (a UUID)");
                if (id && asprintf(&path, "/v1/images/%s", id) < 0)
                        return CTL_EXIT_FAILURE;
                exit_code = call(ctx, "GET", path ? path : "/v1/images", NULL, NULL, &resp);
                if (exit_code != CTL_EXIT_OK)
                        return exit_code;
                if (ctx->cfg.json) {
                        print_json(ctx, resp.body);
                } else {
                        size_t i;
                        json_t *img;
                        print_image_header(ctx);
                        if (path)
                                print_image_row(ctx, resp.body);
                        else
                                json_array_foreach(json_object_get(resp.body, "images"), i, img)
                                        print_image_row(ctx, img);
                }
                ctl_response_release(&resp);
                return CTL_EXIT_OK;
        }
        if (!strcmp(sub, "delete")) {
                if (!id || ctl_id_classify(id) != CTL_ID_UUID)
                        return usage_error(ctx, "image", "image delete needs an image id (a UUID)");
                if (asprintf(&path, "/v1/images/%s", id) < 0)
                        return CTL_EXIT_FAILURE;
                exit_code = call(ctx, "DELETE", path, NULL, NULL, &resp);
                ctl_response_release(&resp);
                if (exit_code == CTL_EXIT_OK && !ctx->cfg.json)
                        fprintf(ctx->out, "deleted %s\n", id);
                return exit_code;
        }
        if (!strcmp(sub, "pull")) {
                const char *url = args->value[CTL_OPT_SOURCE], *digest = args->value[CTL_OPT_DIGEST];
                const char *glance = args->value[CTL_OPT_GLANCE_ID];
                bool wait = args->value[CTL_OPT_WAIT] || args->value[CTL_OPT_WAIT_TIMEOUT];
                long timeout_ms = 600000, interval = CTL_POLL_FIRST_MS;
                struct ctl_progress_view view = {};
                json_t *body;
                const char *img_id;

                if (!!url + !!glance != 1 || (url && !digest) || (glance && digest))
                        return usage_error(ctx, "image", "image pull takes --source URL --digest sha256:HEX, or --glance-id ID");
                if (args->value[CTL_OPT_WAIT_TIMEOUT] && ctl_parse_seconds(args->value[CTL_OPT_WAIT_TIMEOUT], &timeout_ms) < 0)
                        return usage_error(ctx, "image", "--wait-timeout needs seconds");
                body = url ? json_pack("{s:s, s:s}", "url", url, "digest", digest)
                           : json_pack("{s:s}", "glance_id", glance);
                exit_code = call(ctx, "POST", "/v1/images", body, NULL, &resp);
                json_decref(body);
                if (exit_code != CTL_EXIT_OK)
                        return exit_code;
                img_id = json_string_value(json_object_get(resp.body, "id"));
                if (!wait || !img_id) {
                        if (ctx->cfg.json)
                                print_json(ctx, resp.body);
                        else {
                                print_image_header(ctx);
                                print_image_row(ctx, resp.body);
                        }
                        ctl_response_release(&resp);
                        return CTL_EXIT_OK;
                }
                if (asprintf(&path, "/v1/images/%s", img_id) < 0) {
                        ctl_response_release(&resp);
                        return CTL_EXIT_FAILURE;
                }
                ctl_response_release(&resp);
                /* the cache has no operation for a pre-cache: follow the image's state
                 * (and its "progress" while it downloads) */
                for (long waited = 0;; waited += interval, interval = ctl_backoff_next(interval)) {
                        const char *state;
                        exit_code = call(ctx, "GET", path, NULL, NULL, &resp);
                        if (exit_code != CTL_EXIT_OK) {
                                ctl_progress_end(ctx, &view);
                                return exit_code;
                        }
                        state = json_string_value(json_object_get(resp.body, "state"));
                        ctl_progress_show(ctx, &view, json_object_get(resp.body, "progress"));
                        if (state && strcmp(state, "downloading") != 0) {
                                bool ok = !strcmp(state, "cached");

                                ctl_progress_end(ctx, &view);
                                if (ctx->cfg.json)
                                        print_json(ctx, resp.body);
                                else {
                                        print_image_header(ctx);
                                        print_image_row(ctx, resp.body);
                                        if (!ok)
                                                fprintf(ctx->err, "error: %s\n",
                                                        str_or_dash(json_object_get(json_object_get(resp.body, "error"), "message")));
                                }
                                ctl_response_release(&resp);
                                return ok ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
                        }
                        ctl_response_release(&resp);
                        if (waited >= timeout_ms) {
                                ctl_progress_end(ctx, &view);
                                fprintf(ctx->err, "error: timed out waiting for image %s\n",
                                path + strlen("/v1/images/"));
                                return CTL_EXIT_TIMEOUT;
                        }
                        usleep((useconds_t)interval * 1000);
                }
        }
        return usage_error(ctx, "image", "'%s' is not list, show, pull or delete", sub);
}

static int cmd_list(struct ctl_ctx *ctx, const struct ctl_args *args) {
        _cleanup_ctl_free_ char *path = NULL;
        struct ctl_error e = {};
        int r;

        r = ctl_list_path(args, &path, &e);
        if (r < 0)
                return builder_failure(ctx, "list", r, &e);
        return get_and_print(ctx, path, ctl_format_instance_list);
}

static int cmd_networks(struct ctl_ctx *ctx, const struct ctl_args *args) {
        (void) args;
        return get_and_print(ctx, "/v1/networks", ctl_format_network_list);
}

static int cmd_show(struct ctl_ctx *ctx, const struct ctl_args *args) {
        _cleanup_ctl_free_ char *path = NULL;
        const char *id = args->positional[0];
        int r;

        r = instance_id_check(ctx, "show", id);
        if (r != CTL_EXIT_OK)
                return r;
        if (asprintf(&path, "/v1/instances/%s", id) < 0) {
                path = NULL;
                return CTL_EXIT_FAILURE;
        }
        return get_and_print(ctx, path, ctl_format_instance);
}

static int cmd_operation(struct ctl_ctx *ctx, const struct ctl_args *args) {
        _cleanup_ctl_free_ char *path = NULL;
        const char *id = args->positional[0];

        if (ctl_id_classify(id) != CTL_ID_UUID)
                return usage_error(ctx, "operation", "'%s' is not an operation id (a UUID)", id);
        if (asprintf(&path, "/v1/operations/%s", id) < 0) {
                path = NULL;
                return CTL_EXIT_FAILURE;
        }
        return get_and_print(ctx, path, ctl_format_operation);
}

static int cmd_launch(struct ctl_ctx *ctx, const struct ctl_args *args) {
        json_auto_t *body = NULL;
        struct ctl_response resp = {};
        struct ctl_error e = {};
        long wait_ms;
        int exit_code, r;

        exit_code = wait_timeout_get(ctx, "launch", args, &wait_ms);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        r = ctl_launch_body(args, &body, &e);
        if (r < 0)
                return builder_failure(ctx, "launch", r, &e);

        exit_code = call(ctx, "POST", "/v1/instances", body, NULL, &resp);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        exit_code = finish_accepted(ctx, resp.body, wait_ms);
        ctl_response_release(&resp);
        return exit_code;
}

/*
 * start, stop, reboot, resize, confirm-resize, revert-resize: POST
 * /v1/instances/{id}/actions. command names the command in messages; action is
 * the body's "action" (resize: ctl_resize_body()).
 */
static int run_action(struct ctl_ctx *ctx, const struct ctl_args *args, const char *command,
                      const char *action) {
        _cleanup_ctl_free_ char *path = NULL;
        json_auto_t *body = NULL;
        struct ctl_response resp = {};
        struct ctl_error e = {};
        const char *id = args->positional[0];
        long wait_ms;
        int exit_code, r;

        exit_code = instance_id_check(ctx, command, id);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        exit_code = wait_timeout_get(ctx, command, args, &wait_ms);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        r = strcmp(action, "resize") == 0 ? ctl_resize_body(args, &body, &e)
                                           : ctl_action_body(action, args, &body, &e);
        if (r < 0)
                return builder_failure(ctx, command, r, &e);
        if (asprintf(&path, "/v1/instances/%s/actions", id) < 0) {
                path = NULL;
                return CTL_EXIT_FAILURE;
        }

        exit_code = call(ctx, "POST", path, body, NULL, &resp);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        exit_code = finish_accepted(ctx, resp.body, wait_ms);
        ctl_response_release(&resp);
        return exit_code;
}

static int cmd_start(struct ctl_ctx *ctx, const struct ctl_args *args) {
        return run_action(ctx, args, "start", "start");
}

static int cmd_stop(struct ctl_ctx *ctx, const struct ctl_args *args) {
        return run_action(ctx, args, "stop", "stop");
}

static int cmd_reboot(struct ctl_ctx *ctx, const struct ctl_args *args) {
        return run_action(ctx, args, "reboot", "reboot");
}

static int cmd_resize(struct ctl_ctx *ctx, const struct ctl_args *args) {
        return run_action(ctx, args, "resize", "resize");
}

static int cmd_confirm_resize(struct ctl_ctx *ctx, const struct ctl_args *args) {
        return run_action(ctx, args, "confirm-resize", "confirm_resize");
}

static int cmd_revert_resize(struct ctl_ctx *ctx, const struct ctl_args *args) {
        return run_action(ctx, args, "revert-resize", "revert_resize");
}

/* DELETE has no body: a --request-id travels as the Idempotency-Key header. */
static int cmd_terminate(struct ctl_ctx *ctx, const struct ctl_args *args) {
        _cleanup_ctl_free_ char *path = NULL;
        struct ctl_response resp = {};
        struct ctl_error e = {};
        const char *id = args->positional[0], *request_id = args->value[CTL_OPT_REQUEST_ID];
        long wait_ms;
        int exit_code;

        exit_code = instance_id_check(ctx, "terminate", id);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        exit_code = wait_timeout_get(ctx, "terminate", args, &wait_ms);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        if (request_id && ctl_request_id_check(request_id, &e) < 0)
                return usage_error(ctx, "terminate", "%s", e.message);
        if (asprintf(&path, "/v1/instances/%s", id) < 0) {
                path = NULL;
                return CTL_EXIT_FAILURE;
        }

        exit_code = call(ctx, "DELETE", path, NULL, request_id, &resp);
        if (exit_code != CTL_EXIT_OK)
                return exit_code;
        exit_code = finish_accepted(ctx, resp.body, wait_ms);
        ctl_response_release(&resp);
        return exit_code;
}

/* Prints the outcome of `wait` for id: the object with --json, else one line. v NULL: gone. */
static void print_wait_result(struct ctl_ctx *ctx, const char *what, const char *id, const json_t *v) {
        const char *state = json_string_value(json_object_get(v, "state"));

        if (ctx->cfg.json) {
                if (v)
                        print_json(ctx, v);
                return;
        }
        if (!v)
                fprintf(ctx->out, "%s %s: gone (terminated)\n", what, id);
        else
                fprintf(ctx->out, "%s %s: %s\n", what, id, state ? state : "?");
}

/*
 * wait ID: a UUID may be an operation (asked first) or an instance; an ec2 id
 * or --state means an instance. The first request fails fast if the agent is not
 * there; later polls ride out restarts until the deadline.
 */
static int cmd_wait(struct ctl_ctx *ctx, const struct ctl_args *args) {
        _cleanup_ctl_free_ char *path = NULL;
        json_auto_t *final = NULL;
        struct ctl_response resp = {};
        struct ctl_error e = {};
        const char *id = args->positional[0], *state = args->value[CTL_OPT_STATE];
        const char *v = args->value[CTL_OPT_WAIT_FOR_TIMEOUT];
        enum ctl_id_kind kind = ctl_id_classify(id);
        long timeout_ms = CTL_DEFAULT_WAIT_TIMEOUT_MS;
        int exit_code, r;

        if (kind == CTL_ID_INVALID)
                return usage_error(ctx, "wait", "'%s' is not an instance or operation id", id);
        if (state && !ctl_instance_state_valid(state))
                return usage_error(ctx, "wait",
                                   "--state: '%s' is not one of pending, running, stopping, stopped, shutting-down, terminated, error, resized",
                                   state);
        if (v && ctl_parse_seconds(v, &timeout_ms) < 0)
                return usage_error(ctx, "wait", "--timeout: '%s' is not a number of seconds", v);

        if (kind == CTL_ID_UUID && !state) {
                if (asprintf(&path, "/v1/operations/%s", id) < 0) {
                        path = NULL;
                        return CTL_EXIT_FAILURE;
                }
                r = ctl_client_request(ctx->client, "GET", path, NULL, NULL, &resp, &e);
                if (r < 0) {
                        fprintf(ctx->err, "error: %s\n", r == -ENOMEM ? "out of memory" : e.message);
                        return r == -ETIMEDOUT ? CTL_EXIT_TIMEOUT : CTL_EXIT_FAILURE;
                }
                if (resp.status != 404) {
                        ctl_response_release(&resp);
                        exit_code = ctl_wait_operation(ctx, id, timeout_ms, &final);
                        if (exit_code == CTL_EXIT_OK)
                                print_wait_result(ctx, "operation", id, final);
                        return exit_code;
                }
                ctl_response_release(&resp);
        }

        /* an instance: one plain request first, so a missing agent fails now */
        free(path);
        if (asprintf(&path, "/v1/instances/%s", id) < 0) {
                path = NULL;
                return CTL_EXIT_FAILURE;
        }
        r = ctl_client_request(ctx->client, "GET", path, NULL, NULL, &resp, &e);
        if (r < 0) {
                fprintf(ctx->err, "error: %s\n", r == -ENOMEM ? "out of memory" : e.message);
                return r == -ETIMEDOUT ? CTL_EXIT_TIMEOUT : CTL_EXIT_FAILURE;
        }
        ctl_response_release(&resp);

        exit_code = ctl_wait_instance(ctx, id, state, timeout_ms, &final);
        if (exit_code == CTL_EXIT_OK)
                print_wait_result(ctx, "instance", id, final);
        return exit_code;
}

static int cmd_help(struct ctl_ctx *ctx, const struct ctl_args *args) {
        const struct ctl_command *cmd;

        if (args->n_positional == 0) {
                ctl_print_help(ctx->out);
                return CTL_EXIT_OK;
        }
        cmd = ctl_command_find(args->positional[0]);
        if (!cmd)
                return usage_error(ctx, "help", "unknown command '%s'", args->positional[0]);
        ctl_print_command_help(ctx->out, cmd);
        return CTL_EXIT_OK;
}

/* ---------------- option tables ---------------- */

#define WAIT_OPTIONS                                                                    \
        { .name = "request-id", .key = CTL_OPT_REQUEST_ID, .arg = "ID",                 \
          .help = "idempotency key: repeating it returns the first operation" },        \
        { .name = "wait", .key = CTL_OPT_WAIT,                                          \
          .help = "wait until the operation has succeeded or failed" },                 \
        { .name = "wait-timeout", .key = CTL_OPT_WAIT_TIMEOUT, .arg = "S",              \
          .help = "give up waiting after S seconds (default 300; implies --wait)" }

static const struct ctl_option launch_options[] = {
        { .name = "type", .key = CTL_OPT_TYPE, .arg = "T", .help = "instance type, e.g. t3.micro" },
        { .name = "vcpus", .key = CTL_OPT_VCPUS, .arg = "N", .help = "virtual CPUs (instead of --type)" },
        { .name = "memory", .key = CTL_OPT_MEMORY, .arg = "MB", .help = "memory in MiB (with --vcpus)" },
        { .name = "disk", .key = CTL_OPT_DISK, .arg = "GB", .help = "root disk in GiB (with --vcpus)" },
        { .name = "image", .key = CTL_OPT_IMAGE, .arg = "PATH|ID",
          .help = "boot from this disk image: an absolute path on the host,\n"
                  "or the id of an image in the cache ('computectl image list')" },
        { .name = "image-url", .key = CTL_OPT_IMAGE_URL, .arg = "URL",
          .help = "boot from the image at this http(s) URL (downloaded into the cache;\n"
                  "needs --digest)" },
        { .name = "digest", .key = CTL_OPT_DIGEST, .arg = "ALGO:HEX",
          .help = "the --image-url image's digest, sha256:HEX or sha512:HEX" },
        { .name = "glance-id", .key = CTL_OPT_GLANCE_ID, .arg = "ID",
          .help = "boot from this OpenStack Glance image (downloaded into the cache)" },
        { .name = "kernel", .key = CTL_OPT_KERNEL, .arg = "PATH",
          .help = "boot this kernel directly (with an image source: the image is the disk)" },
        { .name = "initrd", .key = CTL_OPT_INITRD, .arg = "PATH", .help = "initrd for --kernel" },
        { .name = "cmdline", .key = CTL_OPT_CMDLINE, .arg = "STR", .help = "kernel command line for --kernel" },
        { .name = "user-data-file", .key = CTL_OPT_USER_DATA_FILE, .arg = "FILE",
          .help = "user data for the guest (at most 16384 bytes; '-' reads stdin)" },
        { .name = "network", .key = CTL_OPT_NETWORK, .arg = "SPEC", .repeat = true,
          .help = "a NIC: NET[,mac=MAC][,ip=IP][,mtu=N], NET a configured network\n"
                  "('computectl networks'); repeat for more, in device order;\n"
                  "MAC and IP default to free ones" },
        { .name = "key", .key = CTL_OPT_KEY, .arg = "NAME=KEY", .repeat = true,
          .help = "an OpenSSH public key for the guest (NAME=@FILE reads a .pub file);\n"
                  "repeatable" },
        { .name = "meta", .key = CTL_OPT_META, .arg = "KEY=VALUE", .repeat = true,
          .help = "instance metadata (meta_data.json \"meta\"); repeatable" },
        { .name = "hostname", .key = CTL_OPT_HOSTNAME, .arg = "NAME",
          .help = "the guest's host name (RFC 1123; default NAME when it is one,\n"
                  "else the EC2 id)" },
        { .name = "az", .key = CTL_OPT_AZ, .arg = "ZONE",
          .help = "availability zone the metadata service reports" },
        { .name = "http-tokens", .key = CTL_OPT_HTTP_TOKENS, .arg = "MODE",
          .help = "metadata service: optional, or required = IMDSv2 token on every GET\n"
                  "(cloud-init off AWS reads IMDSv1 only: keep optional for it)" },
        { .name = "http-endpoint", .key = CTL_OPT_HTTP_ENDPOINT, .arg = "STATE",
          .help = "metadata service for this guest: enabled or disabled" },
        { .name = "hop-limit", .key = CTL_OPT_HOP_LIMIT, .arg = "N",
          .help = "IP TTL of the IMDSv2 token answer, 1..64 (default 1)" },
        { .name = "config-drive", .key = CTL_OPT_CONFIG_DRIVE, .arg = "FORMAT", .optional_value = true,
          .help = "attach a config drive; FORMAT config-2 (OpenStack)\n"
                  "or nocloud (cidata); default: the agent's metadata.config_drive_format" },
        WAIT_OPTIONS,
        {},
};

static const struct ctl_option action_options[] = {
        WAIT_OPTIONS,
        {},
};

static const struct ctl_option stop_options[] = {
        { .name = "force", .key = CTL_OPT_FORCE, .help = "power off at once, no graceful shutdown" },
        { .name = "stop-timeout", .key = CTL_OPT_STOP_TIMEOUT, .arg = "S",
          .help = "seconds of graceful shutdown before powering off" },
        WAIT_OPTIONS,
        {},
};

static const struct ctl_option resize_options[] = {
        { .name = "type", .key = CTL_OPT_TYPE, .arg = "T", .help = "the new instance type, e.g. m5.large" },
        { .name = "vcpus", .key = CTL_OPT_VCPUS, .arg = "N", .help = "the new virtual CPUs (instead of --type)" },
        { .name = "memory", .key = CTL_OPT_MEMORY, .arg = "MB", .help = "the new memory in MiB (with --vcpus)" },
        { .name = "disk", .key = CTL_OPT_DISK, .arg = "GB",
          .help = "the new root disk in GiB (with --vcpus; default the current one;\n"
                  "a disk only grows, and growing it is a cold resize)" },
        { .name = "live", .key = CTL_OPT_LIVE,
          .help = "resize the running guest in place, or fail (409) naming what\n"
                  "cannot be live; never stops it" },
        { .name = "cold", .key = CTL_OPT_COLD,
          .help = "stop, redefine, grow the disk, start; then confirm-resize or\n"
                  "revert-resize (default: live when all of it can be, else cold)" },
        { .name = "stop-timeout", .key = CTL_OPT_STOP_TIMEOUT, .arg = "S",
          .help = "cold: seconds of graceful shutdown before powering off" },
        WAIT_OPTIONS,
        {},
};

static const struct ctl_option wait_options[] = {
        { .name = "state", .key = CTL_OPT_STATE, .arg = "STATE",
          .help = "wait for this instance state (default: not pending and no task running)" },
        { .name = "timeout", .key = CTL_OPT_WAIT_FOR_TIMEOUT, .arg = "S",
          .help = "give up after S seconds (default 300)\n"
                  "(the global per-request --timeout goes before 'wait')" },
        {},
};

#define WAIT_USAGE "[--request-id ID] [--wait] [--wait-timeout S]"

static const struct ctl_option image_options[] = {
        { .name = "source", .key = CTL_OPT_SOURCE, .arg = "URL", .help = "pull: http(s) URL of the image" },
        { .name = "digest", .key = CTL_OPT_DIGEST, .arg = "ALGO:HEX", .help = "pull: expected digest, sha256:HEX or sha512:HEX" },
        { .name = "glance-id", .key = CTL_OPT_GLANCE_ID, .arg = "ID", .help = "pull: an OpenStack Glance image id" },
        { .name = "wait", .key = CTL_OPT_WAIT, .help = "pull: wait until the image is cached (or failed)" },
        { .name = "wait-timeout", .key = CTL_OPT_WAIT_TIMEOUT, .arg = "S", .help = "pull: wait at most S seconds (implies --wait)" },
        {},
};

static const struct ctl_option list_options[] = {
        { .name = "state", .key = CTL_OPT_STATE, .arg = "STATE",
          .help = "only instances in this state (pending, running, stopping, stopped,\n"
                  "shutting-down, terminated, error, resized)" },
        { .name = "name", .key = CTL_OPT_NAME, .arg = "NAME", .help = "only instances with exactly this name" },
        {},
};

static const struct ctl_option console_options[] = {
        { .name = "tail", .key = CTL_OPT_TAIL, .arg = "N", .help = "the log's last N bytes (default 65536, at most 1048576)" },
        { .name = "follow", .short_name = 'f', .key = CTL_OPT_FOLLOW, .help = "then print what the guest writes, until interrupted" },
        { .name = "attach", .key = CTL_OPT_ATTACH, .help = "interactive: the guest's serial console through libvirt;\n^] detaches" },
        { .name = "connect", .key = CTL_OPT_CONNECT, .arg = "URI",
          .help = "attach: libvirt URI (default: the agent's, from GET /v1/host)" },
        {},
};

const struct ctl_command ctl_commands[] = {
        { .name = "host", .run = cmd_host, .usage = "[disable|enable]", .max_args = 1,
          .summary = "Show the host: hypervisor, capacity, allocation, free resources;\n"
                     "      disable (no new launches, COMPUTE_STATUS_DISABLED in Placement) or enable it." },
        { .name = "image", .run = cmd_image, .options = image_options, .min_args = 1, .max_args = 2,
          .usage = "list | show ID | pull (--source URL --digest D | --glance-id ID) [--wait] | delete ID",
          .summary = "The host's image cache: list, show, pre-cache (pull) or delete images." },
        { .name = "list", .run = cmd_list, .options = list_options, .usage = "[--state STATE] [--name NAME]",
          .summary = "List the instances (all, or those with this state and name)." },
        { .name = "networks", .run = cmd_networks, .usage = "",
          .summary = "List the host's networks (the [network NAME] sections of its configuration)." },
        { .name = "show", .run = cmd_show, .usage = "ID", .min_args = 1, .max_args = 1,
          .summary = "Show one instance (ID: UUID or i-xxxxxxxxxxxxxxxxx)." },
        { .name = "launch", .run = cmd_launch, .options = launch_options, .min_args = 1, .max_args = 1,
          .usage = "NAME (--type T | --vcpus N --memory MB [--disk GB])\n"
                   "[--image PATH|ID | --image-url URL --digest D | --glance-id ID]\n"
                   "[--kernel PATH [--initrd PATH] [--cmdline STR]] (an image, a kernel or both)\n"
                   "[--user-data-file FILE] [--network NET[,mac=MAC][,ip=IP][,mtu=N]]...\n"
                   "[--key NAME=KEY|NAME=@FILE]... [--meta KEY=VALUE]... [--hostname NAME]\n"
                   "[--az ZONE] [--http-tokens optional|required] [--http-endpoint enabled|disabled]\n"
                   "[--hop-limit N] [--config-drive[=config-2|nocloud]] " WAIT_USAGE,
          .summary = "Create and boot an instance." },
        { .name = "start", .run = cmd_start, .options = action_options, .min_args = 1, .max_args = 1,
          .usage = "ID " WAIT_USAGE, .summary = "Start a stopped instance." },
        { .name = "stop", .run = cmd_stop, .options = stop_options, .min_args = 1, .max_args = 1,
          .usage = "ID [--force] [--stop-timeout S] " WAIT_USAGE,
          .summary = "Stop an instance (graceful shutdown, then power off)." },
        { .name = "reboot", .run = cmd_reboot, .options = action_options, .min_args = 1, .max_args = 1,
          .usage = "ID " WAIT_USAGE, .summary = "Reboot a running instance." },
        { .name = "resize", .run = cmd_resize, .options = resize_options, .min_args = 1, .max_args = 1,
          .usage = "ID (--type T | --vcpus N --memory MB [--disk GB]) [--live|--cold]\n"
                   "[--stop-timeout S] " WAIT_USAGE,
          .summary = "Change an instance's flavor: live (hot-plug) when it can, else cold (stop,\n"
                     "      redefine, start; then confirm-resize or revert-resize)." },
        { .name = "confirm-resize", .run = cmd_confirm_resize, .options = action_options,
          .min_args = 1, .max_args = 1, .usage = "ID " WAIT_USAGE,
          .summary = "Keep the new flavor of a resized instance (state resized)." },
        { .name = "revert-resize", .run = cmd_revert_resize, .options = action_options,
          .min_args = 1, .max_args = 1, .usage = "ID " WAIT_USAGE,
          .summary = "Go back to the old flavor of a resized instance (a grown disk stays grown)." },
        { .name = "terminate", .run = cmd_terminate, .options = action_options, .min_args = 1, .max_args = 1,
          .usage = "ID " WAIT_USAGE, .summary = "Destroy an instance and its disks." },
        { .name = "wait", .run = cmd_wait, .options = wait_options, .min_args = 1, .max_args = 1,
          .usage = "ID [--state STATE] [--timeout S]",
          .summary = "Wait for an operation to end, or an instance to settle or reach STATE." },
        { .name = "operation", .run = cmd_operation, .usage = "ID", .min_args = 1, .max_args = 1,
          .summary = "Show an operation." },
        { .name = "console", .run = ctl_cmd_console, .options = console_options, .min_args = 1, .max_args = 1,
          .usage = "ID [--tail N] [--follow] | ID --attach [--connect URI]",
          .summary = "Print an instance's console log (and follow it), or attach to its serial console." },
        { .name = "events", .run = ctl_cmd_events, .options = ctl_events_options,
          .usage = "[--follow] [--instance ID] [--type T] [--after SEQ]",
          .summary = "Print the agent's recent events (what it sends to the bus), one a line;\n"
                     "      --follow waits for more until interrupted." },
        { .name = "help", .run = cmd_help, .usage = "[COMMAND]", .max_args = 1,
          .summary = "Show help for computectl or one command." },
        {},
};

const struct ctl_command *ctl_command_find(const char *name) {
        for (const struct ctl_command *c = ctl_commands; c->name; c++)
                if (strcmp(c->name, name) == 0)
                        return c;
        return NULL;
}
