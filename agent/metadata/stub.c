/* stub.c: STUB (helper C). Stand-ins for helper B's metadata library so the
 * agent builds; the lead drops this file at merge. The instance object is
 * real (refcounted, freed); rendering, the config drive and the service
 * answer -ENOTSUP. */
#include "agent/metadata.h"

#include <errno.h>
#include <stdlib.h>

struct md_service {
    int unused;
};

static void free_keys(struct md_instance *m)
{
    for (size_t i = 0; i < m->n_keys; i++) {
        free(m->keys[i].name);
        free(m->keys[i].type);
        free(m->keys[i].data);
    }
    free(m->keys);
    for (size_t i = 0; i < m->n_meta; i++) {
        free(m->meta[i].key);
        free(m->meta[i].value);
    }
    free(m->meta);
    for (size_t i = 0; i < m->n_ifaces; i++) {
        for (size_t k = 0; k < m->ifaces[i].n_dns; k++)
            free(m->ifaces[i].dns[k]);
        free(m->ifaces[i].dns);
    }
    free(m->ifaces);
}

/* STUB: the agent allocates an md_instance with calloc (the contract names
 * no constructor) and frees it once; md_instance_ref() is the identity. */
void md_instance_free(struct md_instance *m)
{
    if (!m)
        return;
    free_keys(m);
    free(m->name);
    free(m->hostname);
    free(m->availability_zone);
    free(m->instance_type);
    free(m->image_id);
    free(m->project_id);
    free(m->arch);
    free(m->user_data);
    free(m);
}

struct md_instance *md_instance_ref(struct md_instance *m)
{
    return m;
}

int md_render(const struct md_instance *m, const char *path, struct md_answer *out)
{
    (void)m;
    (void)path;
    out->status = 404;
    out->content_type = "text/plain";
    out->body = NULL;
    out->len = 0;
    return -ENOTSUP;
}

void md_answer_release(struct md_answer *a)
{
    free(a->body);
    a->body = NULL;
}

int md_drive_build(const struct md_instance *m, enum md_drive_kind kind, const char *iso_path,
                   const char *xorriso, struct agent_error *err)
{
    (void)m;
    (void)kind;
    (void)iso_path;
    (void)xorriso;
    return agent_error_set(err, ENOTSUP, "not_supported", "config_drive",
                           "the config drive builder is not built in (stub)");
}

int md_service_new(uv_loop_t *loop, const struct md_service_config *cfg, md_lookup_fn lookup,
                   void *opaque, struct md_service **out)
{
    (void)loop;
    (void)cfg;
    (void)lookup;
    (void)opaque;
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : -ENOMEM;
}

int md_service_listen(struct md_service *s, const char *network, const char *bind_dev,
                      const char *addr, int port)
{
    (void)s;
    (void)network;
    (void)bind_dev;
    (void)addr;
    (void)port;
    return -ENOTSUP;
}

int md_service_unlisten(struct md_service *s, const char *network)
{
    (void)s;
    (void)network;
    return 0;
}

int md_service_metrics(struct md_service *s, FILE *out)
{
    (void)s;
    (void)out;
    return 0;
}

void md_service_free(struct md_service *s)
{
    free(s);
}
