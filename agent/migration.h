/* migration.h: what two agents say to each other to move an instance
 * (issue 13), as pure data: the messages, their JSON, and the instance as
 * it travels. No transport, no operations: agent/ops/migrate.c acts on
 * them; the bus carries them as commands on the peer's compute.<host>
 * topic (asyncapi.yaml, "migration_*" ops).
 *
 *   source -> target  migration_prepare   {instance, mode}: claim, image, ports, disk
 *   target -> source  migration_prepared  {ok | error, libvirt_uri, migrate_uri, instances_dir}
 *   source -> target  migration_commit    {action: live_done | cold_start | abort}
 *   target -> source  migration_committed {action, ok | error}
 *   target -> source  migration_settle    {action: confirm | revert} (a cold one's verify ended)
 *   source -> target  migration_settled   {action, ok | error}
 *
 * Every message names its migration (migration_id), its instance
 * (instance_id) and the host that sent it (from). A message is parsed
 * whole or refused with the field at fault (nothing kept); every repeat
 * of a message is harmless (the receiver keys its work on migration_id). */
#ifndef CA_AGENT_MIGRATION_H
#define CA_AGENT_MIGRATION_H

#include <jansson.h>
#include <stdbool.h>

#include "agent/instance.h"
#include "common/util.h"

enum mig_kind {
    MIG_PREPARE,
    MIG_PREPARED,
    MIG_COMMIT,
    MIG_COMMITTED,
    MIG_SETTLE,
    MIG_SETTLED,
    MIG_KIND_COUNT
};

enum mig_action {
    MIG_ACT_NONE,
    MIG_ACT_LIVE_DONE,  /* commit: the domain runs on the target now */
    MIG_ACT_COLD_START, /* commit: the source's copy is off; define (and start) yours */
    MIG_ACT_ABORT,      /* commit: the migration failed; the guest stays on the source */
    MIG_ACT_CONFIRM,    /* settle: the source deletes its copy */
    MIG_ACT_REVERT,     /* settle: the target has deleted its copy; the source takes it back */
    MIG_ACT_COUNT
};

#define MIG_URI_MAX 256

struct mig_msg {
    enum mig_kind kind;
    char migration_id[37];
    char instance_id[37];
    char from[65];                  /* the sender's host name */
    char mode[8];                   /* prepare: live|cold */
    struct instance inst;           /* prepare: the instance (owned; mig_msg_release) */
    bool power_on;                  /* prepare: the guest runs (cold: start it on the target) */
    enum mig_action action;         /* commit, committed, settle, settled */
    bool ok;                        /* prepared, committed, settled */
    struct agent_error error;       /* when !ok */
    char libvirt_uri[MIG_URI_MAX];  /* prepared: the target's libvirt for a peer-to-peer migration */
    char migrate_uri[MIG_URI_MAX];  /* prepared: where QEMU's stream goes ("" libvirt's choice) */
    char instances_dir[1024];       /* prepared: the target's instances directory */
    char image_dir[1024];           /* prepared: the target's base image's directory ("" none) */
};

const char *mig_kind_name(enum mig_kind k);   /* "migration_prepare", ... */
const char *mig_action_name(enum mig_action a); /* "live_done", ... ("" none) */
/* The op names a command may carry: true for every migration_* one. */
bool mig_is_peer_op(const char *op);

/* Parse a peer message (a command's JSON object). 0 and *out filled
 * (release with mig_msg_release), or -EINVAL with err naming the field. */
int mig_msg_parse(const json_t *j, struct mig_msg *out, struct agent_error *err);
/* The message as JSON (new reference; NULL on ENOMEM). */
json_t *mig_msg_to_json(const struct mig_msg *m);
void mig_msg_release(struct mig_msg *m);

/* The instance as it travels (the store's fields the target needs: no
 * state, no paths of the source's but the boot source's). */
json_t *mig_instance_to_json(const struct instance *inst);
/* And back, every field checked; 0, or -EINVAL with err naming
 * "instance.<field>" (nothing kept). */
int mig_instance_from_json(const json_t *j, struct instance *out, struct agent_error *err);

#endif
