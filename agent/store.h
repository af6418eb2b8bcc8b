/* store.h: the agent's local state in SQLite (WAL) under the state directory:
 * instances, the operations journal, and small key/value facts. Every call
 * runs on the loop thread; a write returns once it is committed. */
#ifndef CA_AGENT_STORE_H
#define CA_AGENT_STORE_H

#include <sqlite3.h>
#include <stdbool.h>

#include "agent/instance.h"

/* One row of the operations journal. Strings are owned (request_id, error_message). */
struct op_record {
    char id[37];
    char type[16];          /* launch|start|stop|reboot|terminate */
    char instance_uuid[37];
    char *request_id;       /* NULL if none */
    char state[12];         /* pending|running|succeeded|failed */
    char step[24];          /* last step journaled, "" before the first */
    char error_code[32];    /* "" unless failed */
    char *error_message;    /* NULL unless failed */
    int64_t created_ms;
    int64_t updated_ms;
};

struct store;

/* Open (create) the store at path. sync_full selects synchronous=FULL.
 * 0 and *ret, or -errno with err filled. */
int store_open(const char *path, bool sync_full, struct store **ret, struct agent_error *err);
void store_free(struct store *s);

/* The SQLite handle, borrowed, for modules that keep their own tables
 * (image cache, outbox). Same thread rules apply. */
sqlite3 *store_db(struct store *s);

/* Transactions (nestable by depth: only the outermost commits). */
int store_begin(struct store *s);
int store_commit(struct store *s);
void store_rollback(struct store *s);

int store_instance_insert(struct store *s, const struct instance *inst);
int store_instance_update(struct store *s, const struct instance *inst);
/* By UUID or EC2 id; -ENOENT if none. Fills *inst (release it). */
int store_instance_get(struct store *s, const char *id, struct instance *inst);
/* Calls cb for every instance (terminated ones too if with_terminated);
 * stops early if cb returns non-zero. Returns 0 or -errno. */
int store_instance_foreach(struct store *s, bool with_terminated,
                           int (*cb)(const struct instance *inst, void *opaque), void *opaque);
/* Sum of the flavors of instances holding resources (not terminated/error). */
int store_allocated(struct store *s, struct flavor *sum, int64_t *count);
/* Delete terminated instances (and their operations) updated before ms. */
int store_purge_terminated(struct store *s, int64_t before_ms);

int store_op_insert(struct store *s, const struct op_record *op);
int store_op_update(struct store *s, const struct op_record *op);
int store_op_get(struct store *s, const char *id, struct op_record *op);
int store_op_find_request(struct store *s, const char *request_id, struct op_record *op);
/* The unfinished operation of an instance, if any (-ENOENT if none). */
int store_op_active_for(struct store *s, const char *instance_uuid, struct op_record *op);
/* Every unfinished operation, oldest first. */
int store_op_foreach_unfinished(struct store *s, int (*cb)(const struct op_record *op, void *opaque),
                                void *opaque);
void op_record_release(struct op_record *op);

/* Small facts (provider uuid, ...). get: -ENOENT if unset; *value owned. */
int store_meta_get(struct store *s, const char *key, char **value);
int store_meta_set(struct store *s, const char *key, const char *value);

#endif
