/* store.h: the agent's local state in SQLite (WAL) under the state directory:
 * instances, the operations journal, and small key/value facts. Every call
 * runs on the loop thread; a write returns once it is committed.
 *
 * Schema: store_open() migrates every table of the file before anything uses
 * it, through common/sqlite.h's registry (numbered migrations per module,
 * PRAGMA user_version for the layout): "store" (instances, operations, meta,
 * here), "outbox" (the events outbox, here; agent/events.c writes and reads
 * it) and "images" (images, image_users: the image cache's, in
 * image-cache/index.c). A file from before the registry is upgraded in place
 * without loss; a file from a newer build is refused with both versions in
 * the message. To change a table, append a migration to its module's list.
 *
 * The loop is never frozen by SQLite. Who holds what:
 *   - The loop's connection (store_db()) is used by the loop thread alone. It
 *     holds the WAL write lock from store_begin() to store_commit() or
 *     store_rollback() (or for one statement outside a transaction), and a
 *     read snapshot only while a call runs (every statement is reset before
 *     the call returns). It never checkpoints (wal_autocheckpoint off).
 *   - When another connection holds the write lock (an operator's sqlite3
 *     shell, a backup tool; no second agent: main.c locks the state
 *     directory), a write waits at most STORE_BUSY_TIMEOUT_MS and returns
 *     -EBUSY, as does store_begin(), which then leaves no transaction open.
 *     store_error() turns it into 503 "unavailable" ("store busy") for the
 *     API; internal writers decide to retry, fail or park. WAL readers do not
 *     wait for writers.
 *   - WAL checkpoints run on their own thread with their own connection
 *     (common/sqlite.h, sqlite_checkpointer): PASSIVE, once the WAL passes
 *     1000 pages (the commit hook on the loop tells it) or 10 s after a
 *     commit. A passive checkpoint takes SQLite's checkpoint lock, never the
 *     write lock, and waits for nobody; the loop never waits for it. Its
 *     mutex is held by the loop only for the few instructions of the commit
 *     hook, never across a SQLite call. store_free() stops it first, then
 *     closes the loop's connection (which checkpoints what is left, at exit).
 */
#ifndef CA_AGENT_STORE_H
#define CA_AGENT_STORE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/instance.h"

/* How long a write on the loop waits for a lock another connection holds
 * before it returns -EBUSY. */
#define STORE_BUSY_TIMEOUT_MS 50

/* One row of the operations journal. Strings are owned (request_id, error_message). */
struct op_record {
    char id[37];
    char type[16];          /* launch|start|stop|reboot|terminate|resize|confirm_resize|revert_resize */
    char instance_uuid[37];
    char *request_id;       /* NULL if none */
    char state[12];         /* pending|running|succeeded|failed */
    char step[24];          /* last step journaled, "" before the first */
    char error_code[32];    /* "" unless failed */
    char *error_message;    /* NULL unless failed */
    int64_t created_ms;
    int64_t updated_ms;
    char *result;           /* JSON text (a resize's outcome), NULL if none */
};

struct store;

/* Open (create) the store at path and migrate its tables to the current
 * versions. sync_full selects synchronous=FULL. 0 and *ret, or -errno with
 * err filled (-EPROTO: the file is from a newer build; err names the file,
 * the module and both versions). */
int store_open(const char *path, bool sync_full, struct store **ret, struct agent_error *err);
/* Stops the checkpointer, closes the connection. Accepts NULL. */
void store_free(struct store *s);

/* The schemas store_open() migrates, in order (borrowed, static), and their
 * number in *n: for tools and tests that check a file's versions. */
struct sqlite_schema;
const struct sqlite_schema *const *store_schemas(size_t *n);

/* How many WAL checkpoints the checkpointer's thread has completed (0 for an
 * in-memory store). */
uint64_t store_checkpoints(struct store *s);

/* Fill err for a store call that returned rc < 0 and return rc: -EBUSY gives
 * code "unavailable" (HTTP 503) "store busy: <what>; retry"; anything else
 * code "internal" "<what>: <strerror>". */
int store_error(int rc, struct agent_error *err, const char *what);

/* The SQLite handle, borrowed, for modules that keep their own tables
 * (image cache, outbox). Same thread rules apply. */
sqlite3 *store_db(struct store *s);

/* Transactions (nestable by depth: only the outermost commits). A
 * store_begin() that fails (-EBUSY) opens nothing: do not commit it; a
 * store_rollback() after it does nothing. */
int store_begin(struct store *s);
int store_commit(struct store *s);
void store_rollback(struct store *s);

int store_instance_insert(struct store *s, const struct instance *inst);
int store_instance_update(struct store *s, const struct instance *inst);
/* Insert inst (exists false), or write it over the row of an instance that
 * left this host (its old ports replaced by inst's): issue 13's incoming
 * migration of an instance this host once had. */
int store_instance_upsert(struct store *s, const struct instance *inst, bool exists);
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

/* ---- ports (issue 10) ----
 * An instance's interfaces are rows of the ports table: store_instance_insert()
 * writes inst->ports with the instance (same transaction), the store's
 * UNIQUE constraints keep a MAC and a device unique on the host and an IP
 * unique in its network (-EEXIST... as SQLite's constraint: -EINVAL/-EEXIST
 * from sqlite_errno), store_instance_update() writes their states,
 * store_instance_get()/foreach() read them back in index order. */

/* Who holds mac: 0 with owner (instance uuid), -ENOENT, -errno. */
int store_port_mac_owner(struct store *s, const char *mac, char owner[37]);
/* The port holding ip in network: 0 with *p and owner, -ENOENT, -errno. */
int store_port_by_ip(struct store *s, const char *network, const char *ip, struct port *p, char owner[37]);
/* Where a network's addresses come from (host byte order): net/mask, the
 * gateway (0: none), and the allocation range lo..hi inside it (0/0: the
 * whole cidr). A range lets the nodes that share one overlay network (a
 * VXLAN VNI) hand out disjoint addresses: each allocator only sees its own
 * host's store. */
struct ip_pool {
    uint32_t net, mask, gw, lo, hi;
};
/* The lowest host address of the pool that no port of network holds (rows
 * written in the open transaction included), never the network, broadcast
 * or gateway address, never outside lo..hi. 0 with *out, -ENOSPC when the
 * pool is full, -errno. */
int store_ip_allocate(struct store *s, const char *network, const struct ip_pool *pool, uint32_t *out);
/* The same, also never one of except[n_except] (0 entries ignored): the
 * addresses a request gives or took already. */
int store_ip_allocate_except(struct store *s, const char *network, const struct ip_pool *pool,
                             const uint32_t *except, size_t n_except, uint32_t *out);
/* The pure part of it (taken is sorted in place). */
int ip_lowest_free(const struct ip_pool *pool, uint32_t *taken, size_t n, uint32_t *out);
/* Forget an instance's ports (terminated): its MACs and IPs are free again. */
int store_ports_release(struct store *s, const char *instance_uuid);
/* Every port that should be plugged: not unplugged, of an instance neither
 * terminated nor in error. *ports and *owners (instance uuids) are arrays
 * of *n (caller frees both). */
int store_ports_live(struct store *s, struct port **ports, char (**owners)[37], size_t *n);

/* Small facts (provider uuid, ...). get: -ENOENT if unset; *value owned. */
int store_meta_get(struct store *s, const char *key, char **value);
int store_meta_set(struct store *s, const char *key, const char *value);

#endif
