/* ec2.c: the EC2 layout: "/" lists the versions, "/<version>/" holds
 * meta-data/ (the tree cloud-init and the AWS tools walk), user-data (raw
 * bytes; 404 when none) and dynamic/instance-identity/document. Every
 * version serves the same tree. Nothing is listed that does not answer. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/metadata/md-internal.h"

/* What EC2 lists at "/" (instancedata-data-retrieval), "latest" last. */
static const char *const ec2_versions[] = {
    "1.0",        "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
    "2008-02-01", "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12",
    "2014-02-25", "2014-11-05", "2015-10-20", "2016-04-19", "2016-06-30", "2016-09-02",
    "2018-03-28", "2018-08-17", "2018-09-24", "2019-10-01", "2020-10-27", "2021-01-03",
    "2021-03-23", "2021-07-15", "2022-09-24", "2024-04-11", "latest",
};

#define SERVICES_DOMAIN "localdomain"

bool md_ec2_version_known(const char *v, size_t len)
{
    for (size_t i = 0; i < ARRAY_SIZE(ec2_versions); i++)
        if (strlen(ec2_versions[i]) == len && !memcmp(ec2_versions[i], v, len))
            return true;
    return false;
}

const struct md_iface *md_primary_iface(const struct md_instance *m)
{
    const struct md_iface *best = NULL;

    for (size_t i = 0; i < m->n_ifaces; i++)
        if (!best || m->ifaces[i].device_number < best->device_number)
            best = &m->ifaces[i];
    return best;
}

bool md_ipv4_netmask(int prefix, char buf[16])
{
    struct in_addr a;

    if (prefix < 0 || prefix > 32)
        return false;
    a.s_addr = htonl(prefix ? 0xffffffffu << (32 - prefix) : 0);
    return inet_ntop(AF_INET, &a, buf, 16) != NULL;
}

bool md_ipv4_cidr(const char *ipv4, int prefix, char buf[19])
{
    struct in_addr a;
    char net[16];

    if (prefix < 0 || prefix > 32 || inet_pton(AF_INET, ipv4, &a) != 1)
        return false;
    a.s_addr &= htonl(prefix ? 0xffffffffu << (32 - prefix) : 0);
    if (!inet_ntop(AF_INET, &a, net, sizeof(net)))
        return false;
    snprintf(buf, 19, "%s/%d", net, prefix);
    return true;
}

static const char *or_default(const char *s, const char *d)
{
    return s && s[0] ? s : d;
}

static const char *instance_id(const struct md_instance *m)
{
    return m->ec2_id[0] ? m->ec2_id : m->uuid;
}

static const char *host_name(const struct md_instance *m)
{
    return or_default(m->hostname, or_default(m->name, instance_id(m)));
}

static void lower_mac(const char *mac, char out[18])
{
    size_t i;

    for (i = 0; i < 17 && mac[i]; i++)
        out[i] = (char)tolower((unsigned char)mac[i]);
    out[i] = '\0';
}

/* meta-data/network/interfaces/macs/<mac>/ */
static bool add_iface(struct md_node *macs, const struct md_instance *m, const struct md_iface *f)
{
    char mac[18], cidr[19];
    struct md_node *d;
    bool ok = true;

    lower_mac(f->mac, mac);
    d = md_node_dir(macs, mac);
    if (!d)
        return false;
    ok &= md_node_leaff(d, "device-number", "%d", f->device_number) != NULL;
    if (f->port_id[0])
        ok &= md_node_leaf(d, "interface-id", f->port_id, (size_t)-1) != NULL;
    ok &= md_node_leaf(d, "local-hostname", host_name(m), (size_t)-1) != NULL;
    if (f->ipv4[0])
        ok &= md_node_leaf(d, "local-ipv4s", f->ipv4, (size_t)-1) != NULL;
    ok &= md_node_leaf(d, "mac", mac, (size_t)-1) != NULL;
    ok &= md_node_leaf(d, "network-card", "0", (size_t)-1) != NULL;
    if (f->ipv4[0] && md_ipv4_cidr(f->ipv4, f->prefix, cidr))
        ok &= md_node_leaf(d, "subnet-ipv4-cidr-block", cidr, (size_t)-1) != NULL;
    return ok;
}

static bool add_network(struct md_node *md, const struct md_instance *m)
{
    struct md_node *macs, *n, *ifs;
    const struct md_iface **order;
    bool ok = true;

    if (!m->n_ifaces)
        return true; /* no empty network/ directory */
    n = md_node_dir(md, "network");
    ifs = n ? md_node_dir(n, "interfaces") : NULL;
    macs = ifs ? md_node_dir(ifs, "macs") : NULL;
    if (!macs)
        return false;
    /* listed in device order */
    order = calloc(m->n_ifaces ? m->n_ifaces : 1, sizeof(*order));
    if (!order)
        return false;
    for (size_t i = 0; i < m->n_ifaces; i++)
        order[i] = &m->ifaces[i];
    for (size_t i = 1; i < m->n_ifaces; i++)
        for (size_t j = i; j > 0 && order[j]->device_number < order[j - 1]->device_number; j--) {
            const struct md_iface *t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (size_t i = 0; i < m->n_ifaces && ok; i++)
        ok = add_iface(macs, m, order[i]);
    free(order);
    return ok;
}

static bool add_keys(struct md_node *md, const struct md_instance *m)
{
    struct md_node *pk;

    if (!m->n_keys)
        return true; /* EC2 has no public-keys/ without a key */
    pk = md_node_dir(md, "public-keys");
    if (!pk)
        return false;
    for (size_t i = 0; i < m->n_keys; i++) {
        char idx[24], shown[320];
        struct md_node *k;

        snprintf(idx, sizeof(idx), "%zu", i);
        snprintf(shown, sizeof(shown), "%zu=%s", i, or_default(m->keys[i].name, "key"));
        k = md_node_dir(pk, idx);
        if (!k || !(k->list_name = strdup(shown)) ||
            !md_node_leaf(k, "openssh-key", m->keys[i].data ? m->keys[i].data : "", (size_t)-1))
            return false;
    }
    return true;
}

static struct md_node *meta_data_tree(struct md_node *root, const struct md_instance *m)
{
    const struct md_iface *p = md_primary_iface(m);
    struct md_node *md = md_node_dir(root, "meta-data"), *d;
    bool ok;

    if (!md)
        return NULL;
    ok = md_node_leaf(md, "ami-id", or_default(m->image_id, "ami-00000000"), (size_t)-1) &&
         md_node_leaff(md, "ami-launch-index", "%d", m->launch_index) &&
         (d = md_node_dir(md, "block-device-mapping")) && md_node_leaf(d, "ami", "/dev/vda", (size_t)-1) &&
         md_node_leaf(d, "root", "/dev/vda", (size_t)-1) &&
         md_node_leaf(md, "hostname", host_name(m), (size_t)-1) &&
         md_node_leaf(md, "instance-id", instance_id(m), (size_t)-1) &&
         md_node_leaf(md, "instance-type", or_default(m->instance_type, "unknown"), (size_t)-1) &&
         md_node_leaf(md, "local-hostname", host_name(m), (size_t)-1);
    if (ok && p && p->ipv4[0])
        ok = md_node_leaf(md, "local-ipv4", p->ipv4, (size_t)-1) != NULL;
    if (ok && p) {
        char mac[18];
        lower_mac(p->mac, mac);
        ok = md_node_leaf(md, "mac", mac, (size_t)-1) != NULL;
    }
    ok = ok && add_network(md, m) && (d = md_node_dir(md, "placement")) &&
         md_node_leaf(d, "availability-zone", or_default(m->availability_zone, "nova"), (size_t)-1) &&
         add_keys(md, m) && (d = md_node_dir(md, "services")) &&
         md_node_leaf(d, "domain", SERVICES_DOMAIN, (size_t)-1) && md_node_leaf(d, "partition", "aws", (size_t)-1);
    return ok ? md : NULL;
}

static void region_of(const char *az, char out[64])
{
    size_t n = strlen(az);

    strscpy(out, az, 64);
    /* "us-east-1a" -> "us-east-1"; a zone without that shape is its own region */
    if (n >= 2 && n < 64 && islower((unsigned char)az[n - 1]) && isdigit((unsigned char)az[n - 2]))
        out[n - 1] = '\0';
}

json_t *md_ec2_identity(const struct md_instance *m)
{
    const struct md_iface *p = md_primary_iface(m);
    const char *az = or_default(m->availability_zone, "nova");
    char region[64], pending[32] = "";
    time_t t = (time_t)(m->created_ms / 1000);
    struct tm tm;

    region_of(az, region);
    if (gmtime_r(&t, &tm))
        strftime(pending, sizeof(pending), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_pack("{s:n, s:n, s:s, s:s?, s:s, s:s, s:n, s:s, s:s, s:s, s:s, s:n, s:n, s:s, s:s}",
                     "devpayProductCodes", "marketplaceProductCodes", "availabilityZone", az, "privateIp",
                     p && p->ipv4[0] ? p->ipv4 : NULL, "version", "2017-09-30", "instanceId",
                     instance_id(m), "billingProducts", "instanceType", or_default(m->instance_type, "unknown"),
                     "accountId", or_default(m->project_id, "000000000000"), "imageId",
                     or_default(m->image_id, "ami-00000000"), "pendingTime", pending, "kernelId", "ramdiskId",
                     "architecture", or_default(m->arch, "x86_64"), "region", region);
}

struct md_node *md_ec2_tree(const struct md_instance *m)
{
    struct md_node *root = md_node_dir(NULL, ""), *d;
    json_t *doc = NULL;
    char *text = NULL;
    bool ok;

    if (!root)
        return NULL;
    doc = md_ec2_identity(m);
    text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    /* "/latest/" lists its entries without "/" (as EC2 does) */
    ok = text && (d = md_node_dir(root, "dynamic")) && (d->list_name = strdup("dynamic")) &&
         (d = md_node_dir(d, "instance-identity")) && md_node_leaf(d, "document", text, (size_t)-1) &&
         (d = meta_data_tree(root, m)) && (d->list_name = strdup("meta-data"));
    free(text);
    if (ok && m->has_user_data) {
        struct md_node *u = md_node_leaf(root, "user-data", (const char *)(m->user_data ? m->user_data : (uint8_t *)""),
                                         m->user_data ? m->user_data_len : 0);
        if (u)
            u->content_type = "application/octet-stream";
        ok = u != NULL;
    }
    if (!ok) {
        md_node_free(root);
        return NULL;
    }
    return root;
}

static json_t *node_json(const struct md_node *n)
{
    json_t *o;

    if (!n->dir)
        return json_stringn(n->data, n->len);
    o = json_object();
    for (const struct md_node *c = n->child; c && o; c = c->next) {
        json_t *v = node_json(c);
        if (v && c->list_name && json_is_object(v))
            json_object_set_new(v, "_name", json_string(c->list_name));
        if (!v || json_object_set_new(o, c->name, v) < 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

json_t *md_ec2_meta_json(const struct md_instance *m)
{
    struct md_node *root = md_ec2_tree(m);
    json_t *j = NULL;

    for (struct md_node *c = root ? root->child : NULL; c; c = c->next)
        if (!strcmp(c->name, "meta-data"))
            j = node_json(c);
    md_node_free(root);
    return j;
}

int md_ec2_render(const struct md_instance *m, const char *path, struct md_node **tree, struct md_answer *out)
{
    const char *v = path + 1, *rest = strchr(v, '/');
    size_t vlen = rest ? (size_t)(rest - v) : strlen(v);
    struct md_node *root = tree ? *tree : NULL;
    int r;

    if (!md_ec2_version_known(v, vlen))
        return md_answer_text(out, 404, "Not Found");
    if (!root && !(root = md_ec2_tree(m)))
        return -ENOMEM;
    r = md_node_answer(root, rest ? rest + 1 : "", out);
    if (tree)
        *tree = root;
    else
        md_node_free(root);
    return r;
}

static int versions_list(struct md_answer *out)
{
    char buf[512];
    size_t n = 0;

    for (size_t i = 0; i < ARRAY_SIZE(ec2_versions); i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", i ? "\n" : "", ec2_versions[i]);
    return md_answer_text(out, 200, buf);
}

int md_render(const struct md_instance *m, const char *path, struct md_answer *out)
{
    return md_render_cached(m, path, NULL, out);
}

struct md_budget *md_budget_new(size_t total, size_t per_instance)
{
    struct md_budget *b = calloc(1, sizeof(*b));

    if (b) {
        b->total = total;
        b->per_instance = per_instance;
        b->refs = 1;
    }
    return b;
}

struct md_budget *md_budget_ref(struct md_budget *b)
{
    if (b)
        __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
    return b;
}

void md_budget_unref(struct md_budget *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(b);
}

/* May c keep n more bytes? Charged if so. */
static bool charge(struct md_cache *c, size_t n)
{
    struct md_budget *b = c->budget;
    size_t used;

    if (!b)
        return true;
    if (c->bytes + n > b->per_instance)
        return false;
    used = __atomic_load_n(&b->used, __ATOMIC_RELAXED);
    do {
        if (used + n > b->total)
            return false;
    } while (!__atomic_compare_exchange_n(&b->used, &used, used + n, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    c->bytes += n;
    return true;
}

/* What a tree holds (its names and bytes, and a node's own size). */
static size_t node_bytes(const struct md_node *n)
{
    size_t sum = 0;

    for (; n; n = n->next)
        sum += sizeof(*n) + strlen(n->name) + 1 + (n->list_name ? strlen(n->list_name) + 1 : 0) + n->len +
               node_bytes(n->child);
    return sum;
}

void md_cache_clear(struct md_cache *c)
{
    md_node_free(c->ec2);
    md_node_free(c->docs);
    c->ec2 = c->docs = NULL;
    if (c->budget) {
        __atomic_sub_fetch(&c->budget->used, c->bytes, __ATOMIC_RELAXED);
        md_budget_unref(c->budget);
        c->budget = NULL;
    }
    c->bytes = 0;
}

struct md_cache *md_instance_cache(struct md_instance *m, struct md_budget *budget)
{
    if (!m->cache_ && (m->cache_ = calloc(1, sizeof(*m->cache_))))
        m->cache_->budget = md_budget_ref(budget);
    return m->cache_;
}

static int os_cached(const struct md_instance *m, const char *path, struct md_cache *c, struct md_answer *out)
{
    struct md_node *n;
    int r;

    for (n = c->docs ? c->docs->child : NULL; n; n = n->next)
        if (!strcmp(n->name, path))
            return md_answer_bytes(out, 200, n->content_type, n->data, n->len);
    if ((r = md_os_render(m, path, out)) < 0 || out->status != 200)
        return r;
    if (!c->docs) {
        if (!charge(c, sizeof(*c->docs) + 1))
            return 0;
        c->docs = md_node_dir(NULL, "");
    }
    /* (a document that cannot be kept is answered all the same) */
    if (c->docs && charge(c, sizeof(*n) + strlen(path) + 1 + out->len) &&
        (n = md_node_leaf(c->docs, path, out->body, out->len)))
        n->content_type = out->content_type;
    return 0;
}

int md_render_cached(const struct md_instance *m, const char *path, struct md_cache *cache, struct md_answer *out)
{
    if (!path || path[0] != '/')
        return md_answer_text(out, 404, "Not Found");
    if (!strcmp(path, "/"))
        return versions_list(out);
    if (!strncmp(path, "/openstack", 10) && (path[10] == '\0' || path[10] == '/'))
        return cache ? os_cached(m, path, cache, out) : md_os_render(m, path, out);
    if (cache && !cache->ec2 && md_ec2_version_known(path + 1, strcspn(path + 1, "/"))) {
        struct md_node *tree = md_ec2_tree(m);
        if (!tree)
            return -ENOMEM;
        if (charge(cache, node_bytes(tree)))
            cache->ec2 = tree; /* kept */
        else {
            int r = md_ec2_render(m, path, &tree, out);
            md_node_free(tree);
            return r;
        }
    }
    return md_ec2_render(m, path, cache ? &cache->ec2 : NULL, out);
}
