/*
 * cli-internal.h: the pieces of computectl shared between its source files
 * and its unit tests (tests/unit/test_cli.c). Not an installed header: nothing
 * outside cli/ and the cli unit test includes it.
 *
 * Layout:
 *   args.c      option parser, number/seconds parsing, global configuration
 *   request.c   id classification, request bodies, user-data base64
 *   format.c    aligned tables and the text renderings of API objects
 *   http.c      the libcurl client (unix socket or TCP)
 *   wait.c      progress predicates, backoff and the polling loops
 *   commands.c  the command table and the commands themselves
 *   dispatch.c  argv to command: options, help, ctl_main()
 *   console.c   the console command: the log (--follow) and --attach (libvirt)
 *   computectl.c main()
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#ifndef CTL_VERSION
#ifdef CA_VERSION
#define CTL_VERSION CA_VERSION          /* the Makefile's -DCA_VERSION */
#else
#define CTL_VERSION "0.1.0"
#endif
#endif

#define CTL_DEFAULT_SOCKET "/var/lib/compute-agent/api.sock"
#define CTL_DEFAULT_TIMEOUT_MS 30000L          /* per HTTP request */
#define CTL_DEFAULT_WAIT_TIMEOUT_MS 300000L    /* --wait / wait */
#define CTL_USER_DATA_MAX 16384                /* decoded bytes, as the agent enforces */
#define CTL_POLL_FIRST_MS 100L
#define CTL_POLL_MAX_MS 1000L

/* ---- cleanup helpers (systemd style; kept local so cli/ depends on nothing else) ---- */
#ifndef _cleanup_
#define _cleanup_(f) __attribute__((cleanup(f)))
#endif

static inline void ctl_freep(void *p) {
        free(*(void **) p);
}

static inline void ctl_fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}

#define _cleanup_ctl_free_ _cleanup_(ctl_freep)
#define _cleanup_ctl_fclose_ _cleanup_(ctl_fclosep)

#ifndef TAKE_PTR
#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) _take_ = (p);     \
                (p) = NULL;                     \
                _take_;                         \
        })
#endif

/* ---- exit codes of computectl ---- */
enum ctl_exit {
        CTL_EXIT_OK = 0,        /* success */
        CTL_EXIT_FAILURE = 1,   /* API error, failed operation, transport error */
        CTL_EXIT_USAGE = 2,     /* bad command line */
        CTL_EXIT_TIMEOUT = 3,   /* a wait (or a request) ran out of time */
};

/* A message for the user; filled by the function that fails, printed by the caller. */
struct ctl_error {
        char message[512];
};

/* Formats into err->message (err may be NULL). Returns nothing: callers return their own code. */
void ctl_error_set(struct ctl_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ======================= args.c ======================= */

/* Every option any command knows; values are looked up by key in struct ctl_args. */
enum ctl_opt_key {
        CTL_OPT_NONE = 0,
        /* global */
        CTL_OPT_SOCKET,
        CTL_OPT_URL,
        CTL_OPT_TOKEN,
        CTL_OPT_JSON,
        CTL_OPT_TIMEOUT,
        CTL_OPT_HELP,
        CTL_OPT_VERSION,
        /* launch */
        CTL_OPT_TYPE,
        CTL_OPT_VCPUS,
        CTL_OPT_MEMORY,
        CTL_OPT_DISK,
        CTL_OPT_IMAGE,
        CTL_OPT_KERNEL,
        CTL_OPT_INITRD,
        CTL_OPT_CMDLINE,
        CTL_OPT_USER_DATA_FILE,
        CTL_OPT_NETWORK,                /* repeatable */
        CTL_OPT_KEY,                    /* repeatable */
        CTL_OPT_META,                   /* repeatable */
        CTL_OPT_HOSTNAME,
        CTL_OPT_AZ,
        CTL_OPT_HTTP_TOKENS,
        CTL_OPT_HTTP_ENDPOINT,
        CTL_OPT_HOP_LIMIT,
        CTL_OPT_CONFIG_DRIVE,
        /* mutating commands */
        CTL_OPT_REQUEST_ID,
        CTL_OPT_WAIT,
        CTL_OPT_WAIT_TIMEOUT,
        /* stop */
        CTL_OPT_FORCE,
        CTL_OPT_STOP_TIMEOUT,
        /* image pull */
        CTL_OPT_SOURCE,
        CTL_OPT_DIGEST,
        CTL_OPT_GLANCE_ID,
        /* wait */
        CTL_OPT_STATE,
        CTL_OPT_WAIT_FOR_TIMEOUT,       /* "wait --timeout", distinct from the global --timeout */
        /* launch: the image sources (with CTL_OPT_DIGEST, CTL_OPT_GLANCE_ID) */
        CTL_OPT_IMAGE_URL,
        /* list: --name (and --state, CTL_OPT_STATE) */
        CTL_OPT_NAME,
        /* console */
        CTL_OPT_TAIL,
        CTL_OPT_FOLLOW,
        CTL_OPT_ATTACH,
        CTL_OPT_CONNECT,
        /* events */
        /* (and CTL_OPT_FOLLOW, console's) */
        CTL_OPT_INSTANCE,
        CTL_OPT_EVENT_TYPE,
        CTL_OPT_AFTER,
        /* resize (with the launch sizing options, CTL_OPT_STOP_TIMEOUT, the wait ones) */
        CTL_OPT_LIVE,
        CTL_OPT_COLD,
        _CTL_OPT_MAX,
};

/* One long option; tables end with an entry whose name is NULL. */
struct ctl_option {
        const char *name;       /* without the leading "--" */
        char short_name;        /* e.g. 'h', or 0 */
        enum ctl_opt_key key;   /* where the value lands in struct ctl_args */
        const char *arg;        /* metavariable for help ("PATH"); NULL = flag without value */
        const char *help;       /* one line for --help */
        bool repeat;            /* every occurrence is kept (ctl_args_nth), in order */
        bool optional_value;    /* with arg: "--name" alone (value "") or "--name=VALUE" only */
};

#define CTL_ARGS_MAX_POSITIONAL 8
#define CTL_ARGS_MAX_REPEATED 256       /* occurrences of repeatable options, all keys together */

/* Result of parsing; strings are borrowed from argv. */
struct ctl_args {
        const char *value[_CTL_OPT_MAX];        /* NULL if absent, "" for a given flag */
        const char *positional[CTL_ARGS_MAX_POSITIONAL];
        size_t n_positional;
        struct {
                enum ctl_opt_key key;
                const char *value;
        } repeated[CTL_ARGS_MAX_REPEATED];      /* options marked repeat, in command line order */
        size_t n_repeated;
        int next;                               /* index of the first argv entry not consumed */
};

/* The n-th (from 0) value given for a repeatable option key, or NULL past the last. */
const char *ctl_args_nth(const struct ctl_args *args, enum ctl_opt_key key, size_t n);

extern const struct ctl_option ctl_global_options[];

/*
 * Parses argv[start..argc) into args (which the caller zeroes once; later calls add
 * to it, a repeated option keeps the last value in value[]; an option marked repeat
 * also keeps every value, see ctl_args_nth()). Options are looked up in each
 * NULL-terminated table of tables in order, so the first table wins on a clash.
 * Accepts "--name value", "--name=value", "-h" style short flags and "--" (the rest
 * is positional). With stop_at_positional, stops at the first positional argument
 * and leaves args->next there; otherwise positionals are collected wherever they are.
 * Returns 0, or -EINVAL with err set for an unknown option, a missing or unexpected
 * value, or too many positional arguments.
 */
int ctl_args_parse(struct ctl_args *args, const struct ctl_option *const *tables,
                   int argc, char *const *argv, int start, bool stop_at_positional,
                   struct ctl_error *err);

/* Parses a decimal integer in [0, max] without sign, spaces or suffix. 0 or -EINVAL/-ERANGE. */
int ctl_parse_uint(const char *s, uint64_t max, uint64_t *ret);

/* Parses non-negative seconds, fractions allowed ("2", "0.5"), into milliseconds. 0 or -EINVAL/-ERANGE. */
int ctl_parse_seconds(const char *s, long *ret_ms);

/* How computectl reaches the agent. Strings are borrowed (argv or environment). */
struct ctl_config {
        const char *socket_path;        /* used when url is NULL */
        const char *url;                /* TCP base URL, or NULL for the unix socket */
        const char *token;              /* bearer token or NULL */
        bool json;                      /* print raw JSON answers */
        long timeout_ms;                /* per request, 0 = no limit */
};

/*
 * Fills cfg from the environment (COMPUTE_AGENT_SOCKET, COMPUTE_AGENT_URL,
 * COMPUTE_AGENT_TOKEN, read through getenv_fn) overridden by the global options in
 * args. --socket and --url on one command line exclude each other; --socket on the
 * command line wins over COMPUTE_AGENT_URL. Returns 0 or -EINVAL with err set;
 * cfg is written only on success.
 */
int ctl_config_load(struct ctl_config *cfg, const struct ctl_args *args,
                    char *(*getenv_fn)(const char *name), struct ctl_error *err);

/* ======================= request.c ======================= */

enum ctl_id_kind {
        CTL_ID_INVALID = 0,
        CTL_ID_UUID,    /* 8-4-4-4-12 hex: an instance or an operation */
        CTL_ID_EC2,     /* "i-" + 17 hex: always an instance */
};

/* Classifies an id given on the command line. */
enum ctl_id_kind ctl_id_classify(const char *id);

/*
 * Base64 (RFC 4648, with padding, no line breaks) of len bytes. *ret is a new
 * NUL-terminated string the caller frees. Returns 0 or -ENOMEM.
 */
int ctl_base64_encode(const void *data, size_t len, char **ret);

/*
 * Reads the file at path ("-" = stdin), at most max bytes. *ret_data (caller frees,
 * NUL-terminated for convenience) and *ret_len are written only on success.
 * Returns 0, -EFBIG when the file is larger than max, or -errno, with err set.
 */
int ctl_file_read_limited(const char *path, size_t max, char **ret_data, size_t *ret_len,
                          struct ctl_error *err);

/*
 * Builds the POST /v1/instances body from a parsed launch command line
 * (positional[0] = NAME, the launch options). Reads and base64-encodes the
 * --user-data-file, refusing files over CTL_USER_DATA_MAX bytes. The guest
 * fields: --network (repeatable, "interfaces" in order), --key (repeatable,
 * "public_keys"; NAME=@FILE reads an OpenSSH .pub file), --meta (repeatable,
 * "metadata"), --hostname, --az, --http-tokens/--http-endpoint/--hop-limit
 * ("metadata_options"), --config-drive[=FORMAT]. Errors name the flag. *ret is a
 * new reference. Returns 0, or -EINVAL (usage: conflicting/missing options, bad
 * numbers or values, user data too large) or another -errno (unreadable file),
 * err set.
 */
int ctl_launch_body(const struct ctl_args *args, json_t **ret, struct ctl_error *err);

/*
 * Builds the POST /v1/instances/{id}/actions body for action ("start", "stop",
 * "reboot", "confirm_resize", "revert_resize") from args (--request-id; for stop also --force, --stop-timeout).
 * *ret is a new reference. Returns 0 or -EINVAL with err set.
 */
int ctl_action_body(const char *action, const struct ctl_args *args, json_t **ret,
                    struct ctl_error *err);

/*
 * Builds the POST /v1/instances/{id}/actions body of a resize from args:
 * {"action":"resize"} with "instance_type" (--type T) or "flavor" (--vcpus N
 * --memory MB [--disk GB]; no disk_gb: the agent keeps the current one), "mode"
 * "live" or "cold" (--live, --cold; neither: the agent's "auto"), "request_id",
 * "timeout" (--stop-timeout, a cold resize's graceful shutdown). Refuses both
 * --type and a flavor option, neither, --vcpus without --memory (or the other
 * way), --live with --cold, --live with --stop-timeout; the agent checks the
 * figures themselves. *ret is a new reference. Returns 0, -EINVAL with err set
 * (naming the flags), or -ENOMEM.
 */
int ctl_resize_body(const struct ctl_args *args, json_t **ret, struct ctl_error *err);

/*
 * Parses one --network value "NET[,mac=MAC][,ip=IP][,mtu=N]" into a new
 * {"network", "mac"?, "ip"?, "mtu"?} object (*ret). Checks the shapes the agent
 * would refuse anyway (MAC aa:bb:cc:dd:ee:ff, dotted-quad IP, MTU 68..65535, an
 * option given twice, an unknown option). 0, -EINVAL with err naming --network,
 * or -ENOMEM.
 */
int ctl_network_spec_parse(const char *s, json_t **ret, struct ctl_error *err);

/* Checks a --request-id value: 1..128 printable ASCII characters (the agent's limit; it
 * may travel in the Idempotency-Key header). 0 or -EINVAL with err set. */
int ctl_request_id_check(const char *id, struct ctl_error *err);

/*
 * "/v1/instances" with the list filters --state STATE and --name NAME as query
 * arguments (percent-encoded). *ret is new (caller frees). 0, -EINVAL with err
 * set for a state that is not one of the contract's or an empty name, -ENOMEM.
 */
int ctl_list_path(const struct ctl_args *args, char **ret, struct ctl_error *err);

/* ======================= format.c ======================= */

struct ctl_table;

/*
 * Creates a table with ncols columns. headers (may be NULL for a table without a
 * header line) holds ncols strings; right_align (may be NULL) says which columns
 * are right-aligned (numbers). Strings are copied. Returns 0 or -ENOMEM.
 */
int ctl_table_new(size_t ncols, const char *const *headers, const bool *right_align,
                  struct ctl_table **ret);

/* Frees the table; accepts NULL. Returns NULL. */
struct ctl_table *ctl_table_free(struct ctl_table *t);

static inline void ctl_table_freep(struct ctl_table **t) {
        ctl_table_free(*t);
}
#define _cleanup_ctl_table_ _cleanup_(ctl_table_freep)

/* Adds a row of ncols cells (NULL cell prints "-"). Cells are copied with control
 * characters replaced by '?'. Returns 0 or -ENOMEM. */
int ctl_table_add_row(struct ctl_table *t, const char *const *cells);

/*
 * Renders the table: columns separated by two spaces, padded to the widest cell
 * (counted in UTF-8 characters), no trailing spaces, one '\n' per line. *ret is a
 * new string the caller frees. Returns 0 or -ENOMEM.
 */
int ctl_table_render(const struct ctl_table *t, char **ret);

/* Renders and writes to f. Returns 0 or -errno. */
int ctl_table_print(const struct ctl_table *t, FILE *f);

/*
 * Text of a JSON scalar for a table cell: strings as is, integers in decimal,
 * reals with %g ("%.1f" when whole, e.g. "16.0"), booleans "yes"/"no", NULL/null/missing/containers "-".
 * *ret is a new string. Returns 0 or -ENOMEM.
 */
int ctl_json_cell(const json_t *v, char **ret);

/* The `list` table of a {"instances":[...]} body. *ret: new string. 0, -EBADMSG or -ENOMEM. */
int ctl_format_instance_list(const json_t *body, char **ret);

/* The `show` key: value lines of an Instance (with its guest fields, its
 * live-resize ceilings and resize block (resize.mode, resize.pending,
 * resize.old_instance_type, resize.resized_at, resize.old_flavor; "resize: -"
 * when none is pending) and an interfaces table when the answer has them).
 * *ret: new string. 0, -EBADMSG or -ENOMEM. */
int ctl_format_instance(const json_t *inst, char **ret);

/* The `operation` key: value lines of an Operation (with a "result:" line when it has
 * one: a resize's outcome and figures). *ret: new string. 0, -EBADMSG or -ENOMEM. */
int ctl_format_operation(const json_t *op, char **ret);

/*
 * The `networks` table of a {"networks":[...]} body (GET /v1/networks): NAME, TYPE,
 * BRIDGE, CIDR, GATEWAY, DNS, MTU, DHCP, METADATA and DETAILS (the other fields,
 * e.g. "vlan_id=100 parent=eth0"). *ret: new string. 0, -EBADMSG or -ENOMEM.
 */
int ctl_format_network_list(const json_t *body, char **ret);

/* The `host` summary and resource table of a /v1/host body. *ret: new string. */
int ctl_format_host(const json_t *host, char **ret);

/*
 * Summary of an accepted request (launch, actions, terminate): instance (may be
 * NULL) and operation (may be NULL; its error and result, when set, as
 * operation_error and operation_result lines). *ret: new string. 0 or -ENOMEM.
 */
int ctl_format_accepted(const json_t *inst, const json_t *op, char **ret);

/*
 * The stderr line for an API error answer, without trailing newline:
 * "error: <code>: <message> (field: <field>)" (field part only when set), or
 * "error: HTTP <status>: <text>" when the body is not an API error object.
 * body may be NULL; raw (may be NULL) is the undecoded body. *ret: new string.
 */
int ctl_format_api_error(long status, const json_t *body, const char *raw, char **ret);

/* ======================= http.c ======================= */

struct ctl_client;

/* An HTTP answer. */
struct ctl_response {
        long status;            /* HTTP status */
        json_t *body;           /* decoded JSON body (owned), NULL when empty or not JSON */
        char *raw;              /* the body as received, NUL-terminated (owned), never NULL on success */
};

/* Releases what r owns and zeroes it; safe on a zeroed or already-released response. */
void ctl_response_release(struct ctl_response *r);

/*
 * Creates a client for cfg (copied). Returns 0 or -ENOMEM/-EIO with err set;
 * *ret written only on success. Call curl_global_init() first.
 */
int ctl_client_new(const struct ctl_config *cfg, struct ctl_client **ret, struct ctl_error *err);

/* Frees the client; accepts NULL. Returns NULL. */
struct ctl_client *ctl_client_free(struct ctl_client *c);

static inline void ctl_client_freep(struct ctl_client **c) {
        ctl_client_free(*c);
}
#define _cleanup_ctl_client_ _cleanup_(ctl_client_freep)

/*
 * Sends method path (e.g. "GET", "/v1/host") with an optional JSON body (borrowed)
 * and optional Idempotency-Key (NULL = none). On any HTTP answer returns 0 and
 * fills *ret (caller releases), whatever the status. On transport failure returns
 * -ETIMEDOUT (request timeout), -ECONNREFUSED/-ENOENT (agent not there), -EFBIG
 * (answer too large) or -EIO, with err describing it; *ret is then zeroed.
 */
int ctl_client_request(struct ctl_client *c, const char *method, const char *path,
                       const json_t *body, const char *idempotency_key,
                       struct ctl_response *ret, struct ctl_error *err);

/* Where the client connects, for messages ("unix:/path" or the URL). Borrowed. */
const char *ctl_client_endpoint(const struct ctl_client *c);

/* ======================= wait.c ======================= */

enum ctl_progress {
        CTL_PROGRESS_PENDING,   /* keep polling */
        CTL_PROGRESS_DONE,      /* reached what we wait for */
        CTL_PROGRESS_FAILED,    /* will not get there: failed operation, instance in error */
};

/* An Operation is DONE when succeeded, FAILED when failed, else PENDING (also when malformed). */
enum ctl_progress ctl_operation_progress(const json_t *op);

/*
 * An Instance against want_state: with want_state NULL, DONE once the state is not
 * "pending" and task_state is null (or "verify_resize": a resized instance waiting
 * for confirm or revert is settled). With want_state, DONE when state equals it and
 * (task_state is null or want_state is transitional: pending, stopping,
 * shutting-down). FAILED when the instance is in "error" or "terminated" and that is
 * not what is wanted.
 */
enum ctl_progress ctl_instance_progress(const json_t *inst, const char *want_state);

/* True for the instance states of the contract. */
bool ctl_instance_state_valid(const char *state);

/* Next poll interval: doubles from CTL_POLL_FIRST_MS, capped at CTL_POLL_MAX_MS. */
long ctl_backoff_next(long interval_ms);

/* Everything a command needs. */
struct ctl_ctx {
        struct ctl_config cfg;
        struct ctl_client *client;      /* borrowed */
        FILE *out;                      /* normally stdout */
        FILE *err;                      /* normally stderr */
        bool err_tty;                   /* err is a terminal: progress bars, not lines */
};

/* ======================= progress.c ======================= */

/* A download's progress shown while polling (zero it before the first call). */
struct ctl_progress_view {
        bool shown;             /* something was printed (a bar is on the line, on a tty) */
        long last_ms;           /* CLOCK_MONOTONIC of the last plain line */
};

/* "512 B", "1.5 KiB", "12.3 MiB", ... into buf. */
void ctl_format_bytes(double bytes, char *buf, size_t size);

/*
 * One progress line into buf: done bytes of total (total < 0: unknown) at rate_bps
 * (< 0: unknown), with the percentage and ETA when they can be told. bar: the
 * terminal form "[####....]  45%  ..."; else the plain "downloading: 45%, ..." line.
 */
void ctl_progress_format(char *buf, size_t size, int64_t done, int64_t total, double rate_bps, bool bar);

/*
 * Shows progress (a {"bytes_done","bytes_total","rate_bps"} object; anything else
 * is ignored) on ctx->err: redraws the bar on a terminal, else prints a plain line
 * at most every 2 s. Nothing with --json.
 */
void ctl_progress_show(struct ctl_ctx *ctx, struct ctl_progress_view *v, const json_t *progress);

/* Ends the bar's line on a terminal (if one was drawn). */
void ctl_progress_end(struct ctl_ctx *ctx, struct ctl_progress_view *v);

/*
 * Polls GET /v1/operations/{op_id} until the operation succeeds or fails or
 * timeout_ms passes; transport errors and 503 answers are retried until then.
 * On return *ret_op (if not NULL) holds the last Operation seen (new reference,
 * may be NULL). Returns CTL_EXIT_OK, CTL_EXIT_FAILURE (failed operation or API
 * error, already printed) or CTL_EXIT_TIMEOUT (printed).
 */
int ctl_wait_operation(struct ctl_ctx *ctx, const char *op_id, long timeout_ms, json_t **ret_op);

/*
 * Polls GET /v1/instances/{id} until ctl_instance_progress() says DONE/FAILED or
 * timeout_ms passes; transport errors and 503 answers are retried until then. A
 * 404 counts as DONE when waiting for "terminated" (then *ret_inst is NULL: the
 * instance is gone). Otherwise *ret_inst as for ctl_wait_operation(). Returns a
 * CTL_EXIT_* code; failures and timeouts already printed.
 */
int ctl_wait_instance(struct ctl_ctx *ctx, const char *id, const char *want_state,
                      long timeout_ms, json_t **ret_inst);

/* ======================= commands.c ======================= */

struct ctl_command {
        const char *name;
        int (*run)(struct ctl_ctx *ctx, const struct ctl_args *args);  /* returns CTL_EXIT_* */
        const char *usage;                      /* synopsis after "computectl NAME" */
        const char *summary;                    /* one line for --help */
        const struct ctl_option *options;       /* command options (NULL-terminated) or NULL */
        size_t min_args, max_args;              /* positional arguments after NAME */
};

/* The command table, terminated by an entry whose name is NULL. */
extern const struct ctl_command ctl_commands[];

/* Finds a command by name, NULL if unknown. */
const struct ctl_command *ctl_command_find(const char *name);

/* ======================= console.c ======================= */

/* `computectl console ID [--tail N] [--follow] | --attach [--connect URI]`. CTL_EXIT_*. */
int ctl_cmd_console(struct ctl_ctx *ctx, const struct ctl_args *args);

/*
 * Decodes padded base64 (RFC 4648) into a new buffer *ret of *ret_len bytes
 * (caller frees). Returns 0, -EINVAL for malformed input or -ENOMEM.
 */
int ctl_base64_decode(const char *in, unsigned char **ret, size_t *ret_len);
/* ======================= events.c ======================= */

/* computectl events: GET /v1/events (--follow: long-polls until interrupted). */
int ctl_cmd_events(struct ctl_ctx *ctx, const struct ctl_args *args);
extern const struct ctl_option ctl_events_options[];
/* One `events` line of an event object {"seq", "key", "message"}: seq,
 * timestamp, event, instance id and a detail (instance name and task state,
 * operation id and type, refusal code and field), control characters
 * replaced by '?'. *ret: new string ending in '\n'. 0 or -ENOMEM. */
int ctl_format_event_line(const json_t *ev, char **ret);

/* ======================= dispatch.c ======================= */

/* Prints the global help (synopsis, options, commands) to f. */
void ctl_print_help(FILE *f);

/* Prints a command's usage and options to f. */
void ctl_print_command_help(FILE *f, const struct ctl_command *cmd);

/*
 * Runs computectl with argv: global options, then the command and its options
 * (global options are accepted after the command too, the command's own win on a
 * name clash), then the command. The whole program but curl_global_init(). Output
 * goes to out/err; getenv_fn supplies the environment. Returns a CTL_EXIT_* code.
 */
int ctl_main(int argc, char *const *argv, FILE *out, FILE *err,
             char *(*getenv_fn)(const char *name));
