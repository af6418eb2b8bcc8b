/* request.h: what the agent is asked from outside, parsed once, whoever
 * carries it (the REST API, bus commands): JSON in, a struct out, or an
 * error naming the field at fault as the caller's document names it
 * ("flavor.vcpus", "image.url", "timeout", "instance.kernel.path" in a bus
 * command). No transport here: no HTTP, no Kafka; callers hand in the
 * parsed JSON (and a header's value where one stands for a field).
 *
 * Errors: -EINVAL (-ENOMEM when out of memory) with err->code one of
 * invalid_json, missing_field, invalid_field, unknown_field; err->field the
 * path (NULL/"" for the document as a whole). On failure nothing is kept.
 *
 * The operations engine (ops_launch, ops_action) names the fields it
 * refuses as the REST documents do; request_field_for_command() renames
 * them for a bus command, in this one place. */
#ifndef CA_AGENT_REQUEST_H
#define CA_AGENT_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/instance.h"
#include "common/util.h"

/* Request ids (body field, Idempotency-Key header, bus command), one rule
 * everywhere: 1 to REQUEST_ID_MAX bytes of printable ASCII (0x20-0x7e), no
 * NUL inside (len is the JSON string's or header's own length). 0, or
 * -EINVAL with err naming field. */
#define REQUEST_ID_MAX 128
int request_id_check(const char *s, size_t len, const char *field, struct agent_error *err);

/* The request id of a REST request: the body's "request_id" (body may be
 * NULL; null counts as absent) and the Idempotency-Key header (may be
 * NULL) must agree; each follows request_id_check(). *out is borrowed from
 * body or header (NULL if neither gives one). Errors name "request_id". */
int request_id_resolve(const json_t *body, const char *header, const char **out,
                       struct agent_error *err);

/* A JSON object from text (duplicate keys refused, NUL in strings kept
 * for the field checks). 0 and *out (new reference), or -EINVAL with
 * invalid_json (empty text, malformed JSON with its line and column, not
 * an object). */
int request_json_object(const char *text, size_t len, json_t **out, struct agent_error *err);

/* Parse and validate a launch body (POST /v1/instances; a bus command's
 * "instance"). On success fills *spec (release with launch_spec_release).
 * Field paths as in the body: name, flavor, flavor.vcpus, instance_type,
 * image, image.path, image.url, kernel.initrd, user_data, request_id... */
int launch_spec_parse(const json_t *body, const struct catalog *cat,
                      struct launch_spec *spec, struct agent_error *err);

/* The launch's guest fields (issue 10) are checked here as far as the body
 * alone allows (their shapes, bounds, a MAC or IP twice in one request);
 * what needs the host (the network exists, the IP is in its cidr and free,
 * the MAC is free, the MTU fits the network) is checked by ops_launch(),
 * with the same field names (interfaces[1].ip). Fields:
 *   interfaces: at most IFACE_MAX of {"network", "mac"?, "ip"?, "mtu"?};
 *     mac a unicast aa:bb:cc:dd:ee:ff (lowercased); ip a dotted quad; mtu
 *     68..65535
 *   public_keys: {name: "TYPE BASE64 [comment]"}, at most PUBLIC_KEYS_MAX,
 *     names 1..KEY_NAME_MAX, keys at most PUBLIC_KEY_MAX bytes
 *   metadata: {key: value}, at most METADATA_ITEMS_MAX, keys 1..255,
 *     values 0..255
 *   availability_zone: 1..AZ_MAX; hostname: RFC 1123
 *   metadata_options: {"http_tokens": optional|required, "http_endpoint":
 *     enabled|disabled, "http_put_response_hop_limit": 1..64}
 *   config_drive: boolean; config_drive_format: config-2|nocloud */

/* A MAC as text into lowercase out[18] (may be NULL) and bytes (may be
 * NULL): unicast, not all zero. 0 or -EINVAL. */
int request_mac_parse(const char *s, char out[18], uint8_t bytes[6]);

/* A dotted-quad IPv4 address in canonical form (no leading zeros, no
 * spaces). 0 or -EINVAL. */
int request_ipv4_check(const char *s);

enum request_action {
    REQUEST_START,
    REQUEST_STOP,
    REQUEST_REBOOT,
    REQUEST_TERMINATE,
    REQUEST_RESIZE,         /* issue 12 */
    REQUEST_CONFIRM_RESIZE,
    REQUEST_REVERT_RESIZE,
    REQUEST_MIGRATE,        /* issue 13 */
    REQUEST_ABORT_MIGRATION,
};

/* "start", "stop", "reboot", "terminate", "resize", "confirm_resize",
 * "revert_resize": ops_action()'s action names. */
const char *request_action_name(enum request_action a);

/* An action on an instance. Strings are borrowed from the parsed JSON. */
struct action_request {
    enum request_action action;
    int64_t timeout_s;          /* stop/reboot: graceful timeout, -1: configured */
    bool force;                 /* stop: skip the graceful part; reboot: hard */
    const char *request_id;     /* NULL if none */
    /* resize: the new flavor (disk_gb -1: keep the instance's), its type
     * (NULL: given directly; borrowed) and the mode (NULL: auto) */
    struct flavor flavor;
    const char *instance_type;
    const char *mode;           /* resize: auto|live|cold; migrate: live|cold (NULL: live) */
    /* migrate (issue 13): the target host (borrowed), the downtime the
     * switch-over may take at most (0: [migration] max_downtime), the
     * completion timeout per GiB-free total (0: configured, -1: none) and
     * post-copy (NULL: [migration] postcopy) */
    const char *target;
    int64_t max_downtime_ms;
    int64_t completion_timeout_s;
    const char *postcopy;
};

/* Bounds of a migration's fields. */
#define MIGRATE_DOWNTIME_MIN_MS 10
#define MIGRATE_DOWNTIME_MAX_MS 60000
#define MIGRATE_COMPLETION_MAX_S 86400
#define HOST_NAME_MAX_LEN 64
/* A host name as the bus names hosts ([A-Za-z0-9._-], 1 to 64). */
bool request_host_name_valid(const char *s, size_t len);

/* A migration's fields (target, mode, max_downtime_ms, completion_timeout_s,
 * postcopy) from obj into out, the same for REST and the bus; only a
 * migrate takes them. */
int request_migrate_fields(const json_t *obj, struct action_request *out, struct agent_error *err);

/* The options an action takes, wherever they are written: "timeout"
 * (integer 0 to 3600) and "force" (boolean), both optional, from obj into
 * out->timeout_s and out->force (untouched when absent). */
int request_action_options(const json_t *obj, struct action_request *out, struct agent_error *err);

/* POST /v1/instances/{id}/actions: {"action": "start"|"stop"|"reboot"|
 * "resize"|"confirm_resize"|"revert_resize", "timeout", "force",
 * "request_id"}, and for resize "flavor" {"vcpus", "memory_mb", "disk_gb"
 * (optional)} or "instance_type" (in cat; NULL: none known), and "mode"
 * ("auto"|"live"|"cold"); no other field. The request id is resolved with the
 * Idempotency-Key header idem (may be NULL) as in request_id_resolve(). */
int request_action_parse(const json_t *body, const char *idem, const struct catalog *cat,
                         struct action_request *out, struct agent_error *err);
/* A resize's fields (flavor or instance_type, mode) from obj into out; the
 * same for REST and the bus. */
int request_resize_fields(const json_t *obj, const struct catalog *cat, struct action_request *out,
                          struct agent_error *err);

/* A bus command (commands.h): {"op", "request_id" (required),
 * "instance_id" (not for launch), "instance" (launch only: the launch
 * body), "timeout", "force"}. Errors name the command's fields
 * ("instance_id", "op", "instance.flavor.vcpus"). */
struct command_request {
    bool launch;                /* op "launch": spec is filled */
    struct launch_spec spec;    /* owned (its request_id is the command's) */
    struct action_request action; /* otherwise (request_id borrowed) */
    const char *request_id;     /* borrowed from the command */
    const char *instance_id;    /* borrowed; NULL for a launch */
};
int request_command_parse(const json_t *cmd, const struct catalog *cat, struct command_request *out,
                          struct agent_error *err);
void request_command_release(struct command_request *c);

/* Rename the field err names (as the operations engine names it, after
 * the REST documents) for a bus command: "id" -> "instance_id", "action"
 * -> "op"; in a launch, any field but request_id goes under "instance.". */
void request_field_for_command(struct agent_error *err, bool launch);

#endif
