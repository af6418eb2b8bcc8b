/* tree.c: the metadata tree EC2 answers from (directories list their
 * children one a line, "name/" for a directory, in insertion order), the
 * answer helpers, and the md_instance reference count. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/metadata/md-internal.h"

struct md_instance *md_instance_new(void)
{
    struct md_instance *m = calloc(1, sizeof(*m));

    if (m) {
        m->hop_limit = 1;
        m->endpoint_enabled = true;
    }
    return m;
}

struct md_instance *md_instance_ref(struct md_instance *m)
{
    if (m)
        __atomic_add_fetch(&m->refs_, 1, __ATOMIC_RELAXED);
    return m;
}

void md_instance_free(struct md_instance *m)
{
    unsigned seen;

    if (!m)
        return;
    seen = __atomic_load_n(&m->refs_, __ATOMIC_ACQUIRE);
    while (seen > 0) {
        if (__atomic_compare_exchange_n(&m->refs_, &seen, seen - 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return;
    }
    free(m->name);
    free(m->hostname);
    free(m->availability_zone);
    free(m->instance_type);
    free(m->image_id);
    free(m->project_id);
    free(m->arch);
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
    free(m->user_data);
    for (size_t i = 0; i < m->n_ifaces; i++) {
        for (size_t j = 0; j < m->ifaces[i].n_dns; j++)
            free(m->ifaces[i].dns[j]);
        free(m->ifaces[i].dns);
    }
    free(m->ifaces);
    if (m->cache_) {
        md_cache_clear(m->cache_);
        free(m->cache_);
    }
    free(m);
}

void md_answer_release(struct md_answer *a)
{
    if (!a)
        return;
    free(a->body);
    a->body = NULL;
    a->len = 0;
}

int md_answer_bytes(struct md_answer *out, int status, const char *ctype, const void *data, size_t len)
{
    char *b = malloc(len + 1);

    if (!b)
        return -ENOMEM;
    if (len)
        memcpy(b, data, len);
    b[len] = '\0';
    out->status = status;
    out->content_type = ctype;
    out->body = b;
    out->len = len;
    return 0;
}

int md_answer_text(struct md_answer *out, int status, const char *text)
{
    return md_answer_bytes(out, status, "text/plain", text, strlen(text));
}

int md_answer_json(struct md_answer *out, json_t *doc)
{
    char *text;

    if (!doc)
        return -ENOMEM;
    text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    if (!text)
        return -ENOMEM;
    out->status = 200;
    out->content_type = "application/json";
    out->body = text;
    out->len = strlen(text);
    return 0;
}

static struct md_node *node_add(struct md_node *parent, const char *name)
{
    struct md_node *n = calloc(1, sizeof(*n));

    if (!n)
        return NULL;
    n->name = strdup(name ? name : "");
    if (!n->name) {
        free(n);
        return NULL;
    }
    if (parent) {
        struct md_node **p = &parent->child;
        while (*p)
            p = &(*p)->next;
        *p = n;
    }
    return n;
}

struct md_node *md_node_dir(struct md_node *parent, const char *name)
{
    struct md_node *n;

    if (parent && !parent->dir)
        return NULL;
    n = node_add(parent, name);
    if (n)
        n->dir = true;
    return n;
}

struct md_node *md_node_leaf(struct md_node *parent, const char *name, const char *data, size_t len)
{
    struct md_node *n;

    if (!parent || !parent->dir || !data)
        return NULL;
    if (len == (size_t)-1)
        len = strlen(data);
    n = node_add(parent, name);
    if (!n)
        return NULL;
    n->data = malloc(len + 1);
    if (!n->data)
        return NULL; /* n stays in the tree, freed with it */
    memcpy(n->data, data, len);
    n->data[len] = '\0';
    n->len = len;
    return n;
}

struct md_node *md_node_leaff(struct md_node *parent, const char *name, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return NULL;
    return md_node_leaf(parent, name, buf, (size_t)n);
}

void md_node_free(struct md_node *n)
{
    while (n) {
        struct md_node *next = n->next;
        md_node_free(n->child);
        free(n->name);
        free(n->list_name);
        free(n->data);
        free(n);
        n = next;
    }
}

static int node_listing(const struct md_node *d, struct md_answer *out)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (!f)
        return -ENOMEM;
    for (const struct md_node *c = d->child; c; c = c->next) {
        if (c != d->child)
            fputc('\n', f);
        if (c->list_name)
            fputs(c->list_name, f);
        else
            fprintf(f, "%s%s", c->name, c->dir ? "/" : "");
    }
    if (fclose(f) != 0) {
        free(text);
        return -ENOMEM;
    }
    out->status = 200;
    out->content_type = "text/plain";
    out->body = text;
    out->len = len;
    return 0;
}

int md_node_answer(const struct md_node *n, const char *rel, struct md_answer *out)
{
    const char *p = rel;

    while (*p) {
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        const struct md_node *c;

        if (l == 0) /* "a//b": an empty component names nothing */
            return md_answer_text(out, 404, "Not Found");
        if (!n->dir)
            return md_answer_text(out, 404, "Not Found");
        for (c = n->child; c; c = c->next)
            if (strlen(c->name) == l && !memcmp(c->name, p, l))
                break;
        if (!c)
            return md_answer_text(out, 404, "Not Found");
        n = c;
        if (!e)
            break;
        p = e + 1;
        if (!*p && !n->dir)
            return md_answer_text(out, 404, "Not Found");
    }
    if (n->dir)
        return node_listing(n, out);
    return md_answer_bytes(out, 200, n->content_type ? n->content_type : "text/plain", n->data, n->len);
}
