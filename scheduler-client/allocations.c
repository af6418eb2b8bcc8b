/* allocations.c: consumers' allocations written, removed and moved on
 * Placement (placement_put_allocation, placement_delete_allocation,
 * placement_move_allocations): a FIFO of work, one request at a time after
 * the provider's own sync (pipeline.c).
 *
 * A PUT replaces everything the consumer holds, so sending it again (after
 * a timeout whose answer was lost, after a restart) never doubles it. A
 * 409 placement.concurrent_update (consumer generation) re-reads the
 * consumer (GET /allocations/{c}) and sends again with its generation, a
 * bounded number of times in a row before backing off like a transient
 * failure; transient failures (pipeline.c) keep the head where it is, so
 * nothing queued is lost while Placement is away.
 *
 * A move (nova's move_allocations, for a resize) writes two consumers in
 * one POST /allocations: both are read first (their generations, and
 * whether they already hold what is wanted: then nothing is sent), then
 * the POST carries both generations, so Placement applies all of it or
 * none. A 409 concurrent_update, or a POST whose answer was lost, reads
 * both again before anything is resent. */
#include "scheduler-client/placement-private.h"

static void side_release(struct placement_alloc_side *s)
{
    free(s->project_id);
    free(s->user_id);
    free(s->consumer_type);
}

static void op_release(struct alloc_op *op)
{
    side_release(&op->side[0]);
    side_release(&op->side[1]);
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

static size_t op_consumers(const struct alloc_op *op)
{
    return op->kind == ALLOC_MOVE ? 2 : 1;
}

static bool op_has(const struct alloc_op *op, const char *consumer)
{
    for (size_t i = 0; i < op_consumers(op); i++)
        if (!strcmp(op->side[i].consumer, consumer))
            return true;
    return false;
}

/* Every consumer old touches, newer sets too: newer makes old moot. */
static bool op_covers(const struct alloc_op *newer, const struct alloc_op *old)
{
    for (size_t i = 0; i < op_consumers(old); i++)
        if (!op_has(newer, old->side[i].consumer))
            return false;
    return true;
}

static bool op_shares(const struct alloc_op *a, const struct alloc_op *b)
{
    for (size_t i = 0; i < op_consumers(b); i++)
        if (op_has(a, b->side[i].consumer))
            return true;
    return false;
}

/* Queue op (taken over). Queued ops it covers are dropped (the head is
 * kept while its request is out): it takes the first one's place unless a
 * later queued op shares a consumer with it, else it goes last, so the
 * consumers' writes keep their order. */
static int enqueue(struct placement *p, struct alloc_op *op)
{
    size_t at = SIZE_MAX, i = p->inflight ? 1 : 0;

    while (i < p->n_allocs) {
        struct alloc_op *old = &p->allocs[i];
        if (!op_covers(op, old)) {
            i++;
            continue;
        }
        if (at == SIZE_MAX)
            at = i;
        /* a put keeps the generation a replaced put of its consumer read */
        if (op->kind == ALLOC_PUT && old->kind == ALLOC_PUT) {
            op->side[0].have_gen = old->side[0].have_gen;
            op->side[0].gen = old->side[0].gen;
        }
        op_release(old);
        memmove(old, old + 1, (p->n_allocs - i - 1) * sizeof(*old));
        p->n_allocs--;
    }
    for (i = at; at != SIZE_MAX && i < p->n_allocs; i++)
        if (op_shares(op, &p->allocs[i]))
            at = SIZE_MAX;
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
    if (at == SIZE_MAX)
        at = p->n_allocs;
    memmove(p->allocs + at + 1, p->allocs + at, (p->n_allocs - at) * sizeof(*p->allocs));
    p->allocs[at] = *op;
    p->n_allocs++;
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

static bool alloc_ok(const struct placement_allocation *a)
{
    return a && id_ok(a->project_id) && id_ok(a->user_id) && a->vcpus >= 0 && a->memory_mb >= 0 &&
           a->disk_gb >= 0 && (a->vcpus || a->memory_mb || a->disk_gb) &&
           (!a->consumer_type || placement_name_valid(a->consumer_type));
}

/* side = consumer holding a (NULL: nothing, owners from owner). */
static int side_set(struct placement_alloc_side *s, const char *consumer, const struct placement_allocation *a,
                    const struct placement_allocation *owner)
{
    lower_uuid(consumer, s->consumer);
    if (a) {
        s->vcpus = a->vcpus;
        s->memory_mb = a->memory_mb;
        s->disk_gb = a->disk_gb;
    }
    owner = a ? a : owner;
    s->project_id = strdup(owner->project_id);
    s->user_id = strdup(owner->user_id);
    if (a && a->consumer_type)
        s->consumer_type = strdup(a->consumer_type);
    if (!s->project_id || !s->user_id || (a && a->consumer_type && !s->consumer_type))
        return -ENOMEM;
    return 0;
}

int placement_put_allocation(struct placement *p, const char *consumer,
                             const struct placement_allocation *a)
{
    struct alloc_op op = {.kind = ALLOC_PUT};

    if (!p || !uuid_is_valid(consumer) || !alloc_ok(a))
        return -EINVAL;
    if (side_set(&op.side[0], consumer, a, a) < 0) {
        op_release(&op);
        return -ENOMEM;
    }
    return enqueue(p, &op);
}

int placement_delete_allocation(struct placement *p, const char *consumer)
{
    struct alloc_op op = {.kind = ALLOC_DELETE};

    if (!p || !uuid_is_valid(consumer))
        return -EINVAL;
    lower_uuid(consumer, op.side[0].consumer);
    return enqueue(p, &op);
}

int placement_move_allocations(struct placement *p, const char *from, const char *to,
                               const struct placement_allocation *from_alloc,
                               const struct placement_allocation *to_alloc)
{
    struct alloc_op op = {.kind = ALLOC_MOVE};

    if (!p || !uuid_is_valid(from) || !uuid_is_valid(to) || !strcasecmp(from, to) || !alloc_ok(to_alloc) ||
        (from_alloc && !alloc_ok(from_alloc)))
        return -EINVAL;
    if (side_set(&op.side[0], from, from_alloc, to_alloc) < 0 || side_set(&op.side[1], to, to_alloc, to_alloc) < 0) {
        op_release(&op);
        return -ENOMEM;
    }
    return enqueue(p, &op);
}

static bool mv_at_least(const char *mv, int want)
{
    int major = 1, minor = 0;

    if (mv)
        placement_microversion_parse(mv, &major, &minor);
    return major > 1 || minor >= want;
}

static json_t *resources_json(int64_t vcpus, int64_t memory_mb, int64_t disk_gb)
{
    json_t *res = json_object();

    if (!res)
        return NULL;
    if (vcpus > 0)
        json_object_set_new(res, "VCPU", json_integer(vcpus));
    if (memory_mb > 0)
        json_object_set_new(res, "MEMORY_MB", json_integer(memory_mb));
    if (disk_gb > 0)
        json_object_set_new(res, "DISK_GB", json_integer(disk_gb));
    return res;
}

json_t *placement_allocation_body(const char *provider, const char *mv, int64_t vcpus,
                                  int64_t memory_mb, int64_t disk_gb, const char *project_id,
                                  const char *user_id, bool have_gen, int64_t gen)
{
    json_t *res = resources_json(vcpus, memory_mb, disk_gb), *body;

    if (!res)
        return NULL;
    body = json_pack("{s:{s:{s:o}}, s:s, s:s}", "allocations", provider, "resources", res, "project_id",
                     project_id, "user_id", user_id);
    if (!body)
        return NULL;
    if (mv_at_least(mv, 28))
        json_object_set_new(body, "consumer_generation", have_gen ? json_integer(gen) : json_null());
    if (mv_at_least(mv, 38))
        json_object_set_new(body, "consumer_type", json_string("INSTANCE"));
    return body;
}

static bool side_empty(const struct placement_alloc_side *s)
{
    return !s->vcpus && !s->memory_mb && !s->disk_gb;
}

json_t *placement_move_body(const char *provider, const char *mv, const struct placement_alloc_side sides[],
                            size_t n)
{
    json_t *body;

    if (!mv_at_least(mv, 28) || !provider || !(body = json_object()))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const struct placement_alloc_side *s = &sides[i];
        json_t *allocs = json_object(), *one;
        if (allocs && !side_empty(s)) {
            json_t *res = resources_json(s->vcpus, s->memory_mb, s->disk_gb);
            if (!res || json_object_set_new(allocs, provider, json_pack("{s:o}", "resources", res)) < 0) {
                json_decref(allocs);
                allocs = NULL;
            }
        }
        one = allocs ? json_pack("{s:o, s:s, s:s, s:o}", "allocations", allocs, "project_id",
                                 s->project_id ? s->project_id : "", "user_id", s->user_id ? s->user_id : "",
                                 "consumer_generation", s->have_gen ? json_integer(s->gen) : json_null())
                     : NULL;
        if (one && mv_at_least(mv, 38))
            json_object_set_new(one, "consumer_type",
                                json_string(s->consumer_type ? s->consumer_type : "INSTANCE"));
        if (!one || json_object_set_new(body, s->consumer, one) < 0) {
            json_decref(body);
            return NULL;
        }
    }
    return body;
}

/* resources (Placement's {"VCPU": n, ...}) are exactly side's. */
static bool resources_equal(const struct placement_alloc_side *s, const json_t *resources)
{
    const struct {
        const char *rc;
        int64_t want;
    } want[] = {{"VCPU", s->vcpus}, {"MEMORY_MB", s->memory_mb}, {"DISK_GB", s->disk_gb}};
    size_t n = 0;

    if (!json_is_object(resources))
        return false;
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        const json_t *v = json_object_get(resources, want[i].rc);
        if (!want[i].want)
            continue;
        if (!json_is_integer(v) || json_integer_value(v) != want[i].want)
            return false;
        n++;
    }
    return json_object_size(resources) == n;
}

int placement_alloc_side_read(struct placement_alloc_side *side, const char *provider, const json_t *body)
{
    const json_t *allocs = json_object_get(body, "allocations");
    const json_t *g = json_object_get(body, "consumer_generation");
    const json_t *t = json_object_get(body, "consumer_type");
    const json_t *mine;

    if (!json_is_object(allocs))
        return -EINVAL;
    side->have_gen = json_is_integer(g);
    side->gen = side->have_gen ? json_integer_value(g) : 0;
    side->holds_none = json_object_size(allocs) == 0;
    mine = provider ? json_object_get(allocs, provider) : NULL;
    if (side_empty(side))
        side->holds_wanted = side->holds_none;
    else
        side->holds_wanted = json_object_size(allocs) == 1 && json_is_object(mine) &&
                             resources_equal(side, json_object_get(mine, "resources"));
    /* an emptied source keeps the type it has */
    if (!side->consumer_type && json_is_string(t) && placement_name_valid(json_string_value(t))) {
        side->consumer_type = strdup(json_string_value(t));
        if (!side->consumer_type)
            return -ENOMEM;
    }
    return 0;
}

/* The head move: read both sides, then POST what differs. */
static void sync_move(struct placement *p, struct alloc_op *op)
{
    struct placement_alloc_side sides[2];
    size_t n = 0;
    char path[80];
    json_t *body;

    if (op->posted) { /* its answer was lost: what landed is unknown */
        op->posted = false;
        op->reads = 0;
    }
    if (op->reads < 2) {
        snprintf(path, sizeof(path), "/allocations/%s", op->side[op->reads].consumer);
        placement_send_request(p, "GET", path, NULL, NULL, "allocations", placement_on_move_get, false);
        return;
    }
    /* the source stays out of the body when it is to hold nothing and holds
     * nothing (Placement would make an empty consumer of it) */
    if (!side_empty(&op->side[0]) || !op->side[0].holds_none)
        sides[n++] = op->side[0];
    sides[n++] = op->side[1];
    body = placement_move_body(p->uuid, p->microversion, sides, n);
    if (!body) {
        placement_retry_later(p, "unavailable", "allocations", "out of memory");
        return;
    }
    op->posted = true;
    placement_send_json(p, "POST", "/allocations", body, "allocations", placement_on_move_post);
    json_decref(body);
}

static void finish_head(struct placement *p, int status, const char *what);

bool placement_sync_allocations(struct placement *p)
{
    struct alloc_op *op;
    char path[80];
    json_t *body;

    if (!p->n_allocs)
        return false;
    op = &p->allocs[0];
    if (op->kind == ALLOC_MOVE) {
        if (!mv_at_least(p->microversion, 28)) {
            /* without consumer generations a move cannot be made safe */
            finish_head(p, -EPROTO, "moving allocations needs Placement microversion 1.28 or later");
            return false;
        }
        sync_move(p, op);
        return true;
    }
    snprintf(path, sizeof(path), "/allocations/%s", op->side[0].consumer);
    if (op->kind == ALLOC_PUT && op->need_gen) {
        placement_send_request(p, "GET", path, NULL, NULL, "allocations", placement_on_alloc_get, false);
        return true;
    }
    if (op->kind == ALLOC_DELETE) {
        placement_send_request(p, "DELETE", path, NULL, NULL, "allocations", placement_on_alloc_delete, true);
        return true;
    }
    body = placement_allocation_body(p->uuid, p->microversion, op->side[0].vcpus, op->side[0].memory_mb,
                                     op->side[0].disk_gb, op->side[0].project_id, op->side[0].user_id,
                                     op->side[0].have_gen, op->side[0].gen);
    if (body && op->side[0].consumer_type && mv_at_least(p->microversion, 38))
        json_object_set_new(body, "consumer_type", json_string(op->side[0].consumer_type));
    if (!body) {
        placement_retry_later(p, "unavailable", "allocations", "out of memory");
        return true;
    }
    placement_send_json(p, "PUT", path, body, "allocations", placement_on_alloc_put);
    json_decref(body);
    return true;
}

/* The head is done (status 0) or refused for good: pop it, then report,
 * once per consumer (p may be freed from inside a callback). */
static void finish_head(struct placement *p, int status, const char *what)
{
    static const char *const verbs[] = {[ALLOC_PUT] = "PUT", [ALLOC_DELETE] = "DELETE", [ALLOC_MOVE] = "move"};
    struct alloc_op op;
    struct agent_error err = {0};

    if (!p->n_allocs)
        return;
    op = p->allocs[0];
    memmove(p->allocs, p->allocs + 1, (p->n_allocs - 1) * sizeof(*p->allocs));
    p->n_allocs--;
    if (status < 0)
        agent_error_set(&err, -status, "rejected", "allocations", "%s %s%s%s: %s", verbs[op.kind],
                        op.side[0].consumer, op.kind == ALLOC_MOVE ? " -> " : "",
                        op.kind == ALLOC_MOVE ? op.side[1].consumer : "", what);
    for (size_t i = 0; i < op_consumers(&op); i++) {
        bool removed = op.kind == ALLOC_DELETE || (op.kind == ALLOC_MOVE && side_empty(&op.side[i]));
        if (p->cb.on_allocation && !p->closing)
            p->cb.on_allocation(p, op.side[i].consumer, removed, status, status < 0 ? &err : NULL, p->opaque);
    }
    op_release(&op);
}

void placement_on_alloc_put(struct placement *p, struct placement_request *r)
{
    char code[96], what[512];

    if (!p->n_allocs || p->allocs[0].kind == ALLOC_MOVE)
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

    if (!p->n_allocs || p->allocs[0].kind == ALLOC_MOVE)
        return;
    if (r->status != 200) {
        placement_describe(r, what, sizeof(what));
        finish_head(p, -EPROTO, what);
        return;
    }
    body = placement_request_json(r);
    g = json_object_get(body, "consumer_generation");
    p->allocs[0].need_gen = false;
    p->allocs[0].side[0].have_gen = json_is_integer(g);
    p->allocs[0].side[0].gen = json_is_integer(g) ? json_integer_value(g) : 0;
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

void placement_on_move_get(struct placement *p, struct placement_request *r)
{
    struct alloc_op *op = p->n_allocs ? &p->allocs[0] : NULL;
    json_t *body;
    char what[512];
    int e;

    if (!op || op->kind != ALLOC_MOVE || op->reads >= 2)
        return;
    if (r->status != 200) {
        placement_describe(r, what, sizeof(what));
        finish_head(p, -EPROTO, what);
        return;
    }
    body = placement_request_json(r);
    e = placement_alloc_side_read(&op->side[op->reads], p->uuid, body);
    json_decref(body);
    if (e == -ENOMEM) {
        placement_retry_later(p, "unavailable", "allocations", "out of memory");
        return;
    }
    if (e < 0) {
        finish_head(p, -EPROTO, "unreadable allocations");
        return;
    }
    if (++op->reads == 2 && op->side[0].holds_wanted && op->side[1].holds_wanted)
        finish_head(p, 0, NULL); /* already there (an earlier move landed): nothing to write */
}

void placement_on_move_post(struct placement *p, struct placement_request *r)
{
    struct alloc_op *op = p->n_allocs ? &p->allocs[0] : NULL;
    char code[96], what[512];

    if (!op || op->kind != ALLOC_MOVE)
        return;
    op->posted = false; /* answered: Placement applied all of it or none */
    if (r->status == 204 || r->status == 200) {
        finish_head(p, 0, NULL);
        return;
    }
    placement_request_error_code(r, code, sizeof(code));
    if (r->status == 409 && !strcmp(code, "placement.concurrent_update")) {
        /* a generation moved under us (another writer, or our own earlier
         * POST whose answer was lost): read both again, then decide */
        op->reads = 0;
        if (++op->conflicts > p->conflict_retries) {
            op->conflicts = 0;
            placement_retry_later(p, "conflict", "allocations", "consumer generation conflicts in a row");
        }
        return;
    }
    placement_describe(r, what, sizeof(what));
    finish_head(p, -EPROTO, what);
}
