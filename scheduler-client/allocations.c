/* allocations.c: instances' allocations written and removed on Placement
 * (placement_put_allocation, placement_delete_allocation): a FIFO of work,
 * one request at a time after the provider's own sync (pipeline.c).
 *
 * A PUT replaces everything the consumer holds, so sending it again (after
 * a timeout whose answer was lost, after a restart) never doubles it. A
 * 409 placement.concurrent_update (consumer generation) re-reads the
 * consumer (GET /allocations/{c}) and sends again with its generation, a
 * bounded number of times in a row before backing off like a transient
 * failure; transient failures (pipeline.c) keep the head where it is, so
 * nothing queued is lost while Placement is away. */
#include "scheduler-client/placement-private.h"

static void op_release(struct alloc_op *op)
{
    free(op->project_id);
    free(op->user_id);
    memset(op, 0, sizeof(*op));
}

void placement_allocs_clear(struct placement *p)
{
    for (size_t i = 0; i < p->n_allocs; i++)
        op_release(&p->allocs[i]);
    free(p->allocs);
    p->allocs = NULL;
    p->n_allocs = p->cap_allocs = 0;
}

size_t placement_allocations_pending(const struct placement *p)
{
    return p ? p->n_allocs : 0;
}

static void lower_uuid(const char *in, char out[37])
{
    for (size_t i = 0; i < 36; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'F') ? (char)(in[i] - 'A' + 'a') : in[i];
    out[36] = '\0';
}

/* Queue op (taken over): it replaces a queued one for the same consumer
 * unless that one is in flight (the head while a request is out). */
static int enqueue(struct placement *p, struct alloc_op *op)
{
    for (size_t i = 0; i < p->n_allocs; i++) {
        if (strcmp(p->allocs[i].consumer, op->consumer))
            continue;
        if (i == 0 && p->inflight)
            continue; /* in flight: the new one goes after it */
        op->have_gen = p->allocs[i].have_gen;
        op->gen = p->allocs[i].gen;
        op_release(&p->allocs[i]);
        p->allocs[i] = *op;
        placement_kick(p);
        return 0;
    }
    if (p->n_allocs == p->cap_allocs) {
        size_t ncap = p->cap_allocs ? p->cap_allocs * 2 : 16;
        struct alloc_op *nv = realloc(p->allocs, ncap * sizeof(*nv));
        if (!nv) {
            op_release(op);
            return -ENOMEM;
        }
        p->allocs = nv;
        p->cap_allocs = ncap;
    }
    p->allocs[p->n_allocs++] = *op;
    placement_kick(p);
    return 0;
}

static bool id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (!n || n > 255)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

int placement_put_allocation(struct placement *p, const char *consumer,
                             const struct placement_allocation *a)
{
    struct alloc_op op = {0};

    if (!p || !a || !uuid_is_valid(consumer) || !id_ok(a->project_id) || !id_ok(a->user_id) ||
        a->vcpus < 0 || a->memory_mb < 0 || a->disk_gb < 0 ||
        (a->vcpus == 0 && a->memory_mb == 0 && a->disk_gb == 0))
        return -EINVAL;
    lower_uuid(consumer, op.consumer);
    op.put = true;
    op.vcpus = a->vcpus;
    op.memory_mb = a->memory_mb;
    op.disk_gb = a->disk_gb;
    op.project_id = strdup(a->project_id);
    op.user_id = strdup(a->user_id);
    if (!op.project_id || !op.user_id) {
        op_release(&op);
        return -ENOMEM;
    }
    return enqueue(p, &op);
}

int placement_delete_allocation(struct placement *p, const char *consumer)
{
    struct alloc_op op = {0};

    if (!p || !uuid_is_valid(consumer))
        return -EINVAL;
    lower_uuid(consumer, op.consumer);
    return enqueue(p, &op);
}

json_t *placement_allocation_body(const char *provider, const char *mv, int64_t vcpus,
                                  int64_t memory_mb, int64_t disk_gb, const char *project_id,
                                  const char *user_id, bool have_gen, int64_t gen)
{
    int major = 1, minor = 0;
    json_t *res = json_object(), *body;

    if (!res)
        return NULL;
    if (mv)
        placement_microversion_parse(mv, &major, &minor);
    if (vcpus > 0)
        json_object_set_new(res, "VCPU", json_integer(vcpus));
    if (memory_mb > 0)
        json_object_set_new(res, "MEMORY_MB", json_integer(memory_mb));
    if (disk_gb > 0)
        json_object_set_new(res, "DISK_GB", json_integer(disk_gb));
    body = json_pack("{s:{s:{s:o}}, s:s, s:s}", "allocations", provider, "resources", res, "project_id",
                     project_id, "user_id", user_id);
    if (!body)
        return NULL;
    if (major > 1 || minor >= 28)
        json_object_set_new(body, "consumer_generation", have_gen ? json_integer(gen) : json_null());
    if (major > 1 || minor >= 38)
        json_object_set_new(body, "consumer_type", json_string("INSTANCE"));
    return body;
}

bool placement_sync_allocations(struct placement *p)
{
    struct alloc_op *op;
    char path[80];
    json_t *body;

    if (!p->n_allocs)
        return false;
    op = &p->allocs[0];
    snprintf(path, sizeof(path), "/allocations/%s", op->consumer);
    if (op->put && op->need_gen) {
        placement_send_request(p, "GET", path, NULL, NULL, "allocations", placement_on_alloc_get, false);
        return true;
    }
    if (!op->put) {
        placement_send_request(p, "DELETE", path, NULL, NULL, "allocations", placement_on_alloc_delete, true);
        return true;
    }
    body = placement_allocation_body(p->uuid, p->microversion, op->vcpus, op->memory_mb, op->disk_gb,
                                     op->project_id, op->user_id, op->have_gen, op->gen);
    if (!body) {
        placement_retry_later(p, "unavailable", "allocations", "out of memory");
        return true;
    }
    placement_send_json(p, "PUT", path, body, "allocations", placement_on_alloc_put);
    json_decref(body);
    return true;
}

/* The head is done (status 0) or refused for good: pop it, then report. */
static void finish_head(struct placement *p, int status, const char *what)
{
    struct alloc_op op;
    struct agent_error err = {0};

    if (!p->n_allocs)
        return;
    op = p->allocs[0];
    memmove(p->allocs, p->allocs + 1, (p->n_allocs - 1) * sizeof(*p->allocs));
    p->n_allocs--;
    if (status < 0)
        agent_error_set(&err, -status, "rejected", "allocations", "%s %s: %s", op.put ? "PUT" : "DELETE",
                        op.consumer, what);
    if (p->cb.on_allocation && !p->closing)
        p->cb.on_allocation(p, op.consumer, !op.put, status, status < 0 ? &err : NULL, p->opaque);
    op_release(&op);
}

void placement_on_alloc_put(struct placement *p, struct placement_request *r)
{
    char code[96], what[512];

    if (!p->n_allocs)
        return;
    if (r->status == 204 || r->status == 200) {
        p->allocs[0].conflicts = 0;
        finish_head(p, 0, NULL);
        return;
    }
    placement_request_error_code(r, code, sizeof(code));
    if (r->status == 409 && !strcmp(code, "placement.concurrent_update")) {
        /* someone else wrote this consumer (or our earlier PUT landed and
         * its answer was lost): read its generation and send again */
        struct alloc_op *op = &p->allocs[0];
        op->need_gen = true; /* the pipeline sends the GET next */
        if (++op->conflicts > p->conflict_retries) {
            op->conflicts = 0;
            placement_retry_later(p, "conflict", "allocations", "consumer generation conflicts in a row");
        }
        return;
    }
    placement_describe(r, what, sizeof(what));
    finish_head(p, -EPROTO, what);
}

void placement_on_alloc_get(struct placement *p, struct placement_request *r)
{
    json_t *body, *g;
    char what[512];

    if (!p->n_allocs)
        return;
    if (r->status != 200) {
        placement_describe(r, what, sizeof(what));
        finish_head(p, -EPROTO, what);
        return;
    }
    body = placement_request_json(r);
    g = json_object_get(body, "consumer_generation");
    p->allocs[0].need_gen = false;
    p->allocs[0].have_gen = json_is_integer(g);
    p->allocs[0].gen = json_is_integer(g) ? json_integer_value(g) : 0;
    json_decref(body);
}

void placement_on_alloc_delete(struct placement *p, struct placement_request *r)
{
    char what[512];

    if (!p->n_allocs)
        return;
    if (r->status == 204 || r->status == 200 || r->status == 404) {
        finish_head(p, 0, NULL);
        return;
    }
    placement_describe(r, what, sizeof(what));
    finish_head(p, -EPROTO, what);
}
