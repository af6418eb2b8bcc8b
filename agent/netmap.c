/* netmap.c: see netmap.h. */
#include "agent/netmap.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "agent/log.h"
#include "agent/request.h"
#include "agent/store.h"
#include "common/prom.h"
#include "net-plug/netplug.h"

/* Refusal logs: the first refusal of a source (network, address) in a
 * window is logged, the rest of that window only counted, and the next line
 * of that source says how many were not logged (suppressed=N); overall at
 * most LOG_LINES_PER_WINDOW lines a window. A fixed table: a source whose
 * slot is taken by another starts over (its count not logged, still in the
 * counters, which are exact whatever is logged). */
#define LOG_SOURCES 256
#define LOG_WINDOW_MS 60000
#define LOG_LINES_PER_WINDOW 100

struct log_source {
    uint32_t net, ip;        /* hash of the network's name, address (network order) */
    bool used;
    uint64_t since_ms;       /* start of its window */
    uint64_t suppressed;     /* refusals not logged since its last line */
};

/* The md_instance of each instance recently served, shared by all its
 * connections (and so its render cache: one tenant's 64 connections hold
 * one copy, not 64), while what it is built from is unchanged (a SHA-256
 * of those fields). A fixed table, least recently used out. */
#define MD_SHARED 32

struct md_shared {
    char uuid[37];
    uint8_t fp[32];
    struct md_instance *m;    /* one reference (NULL: free slot) */
    uint64_t used;
};

struct netmap {
    struct netmap_deps d;
    struct md_shared shared[MD_SHARED];
    uint64_t tick;
    struct netmap_counts counts;
    struct log_source src[LOG_SOURCES];
    bool lines_started;
    uint64_t lines_since_ms;  /* the overall window */
    unsigned lines;
};

static uint64_t mono_ms(void)
{
    return now_mono_ns() / 1000000;
}

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* May a refusal from (network, ip) be logged now? *suppressed: how many of
 * that source's were not logged before this one. */
static bool refusal_loggable(struct netmap *m, const char *network, uint32_t ip, uint64_t *suppressed)
{
    uint64_t now = m->d.now_ms ? m->d.now_ms() : mono_ms();
    uint32_t net = name_hash(network);
    struct log_source *e = &m->src[(net ^ (ip * 2654435761u)) % LOG_SOURCES];

    *suppressed = 0;
    if (!e->used || e->net != net || e->ip != ip) {
        *e = (struct log_source){.net = net, .ip = ip, .used = true, .since_ms = now};
    } else if (now - e->since_ms >= LOG_WINDOW_MS) {
        *suppressed = e->suppressed;
        e->since_ms = now;
        e->suppressed = 0;
    } else {
        e->suppressed++;
        m->counts.refusals_unlogged++;
        return false;
    }
    if (!m->lines_started || now - m->lines_since_ms >= LOG_WINDOW_MS) {
        m->lines_started = true;
        m->lines_since_ms = now;
        m->lines = 0;
    }
    if (m->lines >= LOG_LINES_PER_WINDOW) {
        e->suppressed += *suppressed + 1; /* said at its next line */
        m->counts.refusals_unlogged++;
        return false;
    }
    m->lines++;
    m->counts.refusals_logged++;
    return true;
}

static const struct net_config *net_of(const struct net_config *nets, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(nets[i].name, name))
            return &nets[i];
    return NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int fill_keys(const struct instance *inst, struct md_instance *m)
{
    const char *k;
    json_t *v;
    size_t n = inst->public_keys ? json_object_size(inst->public_keys) : 0;

    if (n && !(m->keys = calloc(n, sizeof(*m->keys))))
        return -ENOMEM;
    json_object_foreach(inst->public_keys, k, v) {
        struct md_key *key = &m->keys[m->n_keys++];
        if (!(key->name = strdup(k)) || !(key->type = strdup("ssh")) ||
            !(key->data = strdup(json_string_value(v))))
            return -ENOMEM;
    }
    n = inst->metadata ? json_object_size(inst->metadata) : 0;
    if (n && !(m->meta = calloc(n, sizeof(*m->meta))))
        return -ENOMEM;
    json_object_foreach(inst->metadata, k, v) {
        struct md_kv *kv = &m->meta[m->n_meta++];
        if (!(kv->key = strdup(k)) || !(kv->value = strdup(json_string_value(v))))
            return -ENOMEM;
    }
    return 0;
}

static int fill_ifaces(const struct instance *inst, const struct net_config *nets, size_t n_nets,
                       struct md_instance *m)
{
    if (inst->n_ports && !(m->ifaces = calloc(inst->n_ports, sizeof(*m->ifaces))))
        return -ENOMEM;
    for (size_t i = 0; i < inst->n_ports; i++) {
        const struct port *p = &inst->ports[i];
        const struct net_config *net = net_of(nets, n_nets, p->network);
        struct md_iface *f = &m->ifaces[m->n_ifaces++];
        strscpy(f->mac, p->mac, sizeof(f->mac));
        strscpy(f->ipv4, p->ip, sizeof(f->ipv4));
        strscpy(f->network, p->network, sizeof(f->network));
        strscpy(f->port_id, p->port_id, sizeof(f->port_id));
        f->device_number = p->index;
        f->mtu = p->mtu;
        if (!net)
            continue;
        if (!f->mtu)
            f->mtu = (int)net->mtu;
        f->prefix = net->prefix;
        if (net->gw)
            net_format_ipv4(net->gw, f->gateway);
        if (net->n_dns && !(f->dns = calloc(net->n_dns, sizeof(*f->dns))))
            return -ENOMEM;
        for (size_t k = 0; k < net->n_dns; k++) {
            char a[16];
            net_format_ipv4(net->dns_addr[k], a);
            if (!(f->dns[f->n_dns++] = strdup(a)))
                return -ENOMEM;
        }
    }
    return 0;
}

struct md_instance *netmap_md_instance(const struct instance *inst, const struct net_config *nets,
                                       size_t n_nets, const struct netmap_defaults *def)
{
    struct md_instance *m = calloc(1, sizeof(*m));
    const char *tokens;

    if (!m)
        return NULL;
    strscpy(m->uuid, inst->uuid, sizeof(m->uuid));
    strscpy(m->ec2_id, inst->ec2_id, sizeof(m->ec2_id));
    m->name = dup_or_null(inst->name);
    m->hostname = dup_or_null(inst->hostname ? inst->hostname : inst->ec2_id);
    m->availability_zone = dup_or_null(inst->availability_zone ? inst->availability_zone : "nova");
    m->instance_type = dup_or_null(inst->instance_type ? inst->instance_type : "custom");
    m->image_id = dup_or_null(inst->boot.image_id);
    m->arch = dup_or_null(def && def->arch ? def->arch : NULL);
    m->created_ms = inst->created_ms;
    if (!m->name || !m->hostname || !m->availability_zone || !m->instance_type ||
        (inst->boot.image_id && !m->image_id) || fill_keys(inst, m) < 0 ||
        fill_ifaces(inst, nets, n_nets, m) < 0)
        goto fail;
    if (inst->user_data) {
        ssize_t n = base64_decode(inst->user_data, NULL, 0);
        if (n >= 0 && (m->user_data = malloc((size_t)n + 1)) &&
            base64_decode(inst->user_data, m->user_data, (size_t)n) == n) {
            m->user_data_len = (size_t)n;
            m->has_user_data = true;
        } else if (n >= 0) {
            goto fail;
        }
    }
    tokens = inst->md_opts.http_tokens[0] ? inst->md_opts.http_tokens
             : def && def->http_tokens    ? def->http_tokens
                                          : "optional";
    m->http_tokens = !strcmp(tokens, "required") ? MD_TOKENS_REQUIRED : MD_TOKENS_OPTIONAL;
    m->hop_limit = inst->md_opts.hop_limit ? inst->md_opts.hop_limit : def && def->hop_limit ? def->hop_limit : 1;
    m->endpoint_enabled = strcmp(inst->md_opts.http_endpoint, "disabled") != 0;
    return m;
fail:
    md_instance_free(m);
    return NULL;
}

int netmap_new(const struct netmap_deps *deps, struct netmap **out)
{
    struct netmap *m = calloc(1, sizeof(*m));

    if (!m)
        return -ENOMEM;
    m->d = *deps;
    *out = m;
    return 0;
}

void netmap_free(struct netmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < MD_SHARED; i++)
        md_instance_free(m->shared[i].m);
    free(m);
}

static void fp_str(EVP_MD_CTX *c, const char *s)
{
    static const uint8_t none[2] = {0xff, 0};

    if (s)
        EVP_DigestUpdate(c, s, strlen(s) + 1);
    else
        EVP_DigestUpdate(c, none, sizeof(none));
}

static void fp_json(EVP_MD_CTX *c, json_t *o)
{
    const char *k;
    json_t *v;
    char n[32];

    snprintf(n, sizeof(n), "%zu", o ? json_object_size(o) : (size_t)0);
    fp_str(c, n);
    json_object_foreach(o, k, v) {
        fp_str(c, k);
        fp_str(c, json_string_value(v));
    }
}

/* A digest of what netmap_md_instance() reads from inst (the networks and
 * defaults do not change while the agent runs). false: cannot (then not shared). */
static bool fingerprint(const struct instance *inst, uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    char n[96];
    bool ok;

    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c);
        return false;
    }
    fp_str(c, inst->uuid);
    fp_str(c, inst->ec2_id);
    fp_str(c, inst->name);
    fp_str(c, inst->hostname);
    fp_str(c, inst->availability_zone);
    fp_str(c, inst->instance_type);
    fp_str(c, inst->boot.image_id);
    fp_str(c, inst->user_data);
    fp_json(c, inst->public_keys);
    fp_json(c, inst->metadata);
    snprintf(n, sizeof(n), "%lld %d %zu", (long long)inst->created_ms, inst->md_opts.hop_limit, inst->n_ports);
    fp_str(c, n);
    fp_str(c, inst->md_opts.http_tokens);
    fp_str(c, inst->md_opts.http_endpoint);
    for (size_t i = 0; i < inst->n_ports; i++) {
        const struct port *p = &inst->ports[i];
        snprintf(n, sizeof(n), "%d %d", p->index, p->mtu);
        fp_str(c, n);
        fp_str(c, p->port_id);
        fp_str(c, p->network);
        fp_str(c, p->mac);
        fp_str(c, p->ip);
    }
    ok = EVP_DigestFinal_ex(c, out, NULL) == 1;
    EVP_MD_CTX_free(c);
    return ok;
}

static void shared_drop(struct netmap *m, const char *uuid)
{
    for (size_t i = 0; i < MD_SHARED; i++)
        if (m->shared[i].m && !strcmp(m->shared[i].uuid, uuid)) {
            md_instance_free(m->shared[i].m);
            m->shared[i].m = NULL;
        }
}

struct md_instance *netmap_md_shared(struct netmap *m, const struct instance *inst)
{
    struct md_shared *slot = NULL;
    uint8_t fp[32];
    struct md_instance *mi;

    if (!fingerprint(inst, fp))
        return netmap_md_instance(inst, m->d.nets, m->d.n_nets, &m->d.def);
    for (size_t i = 0; i < MD_SHARED; i++) {
        struct md_shared *e = &m->shared[i];
        if (e->m && !strcmp(e->uuid, inst->uuid)) {
            if (!memcmp(e->fp, fp, sizeof(fp))) {
                e->used = ++m->tick;
                m->counts.shared++;
                return md_instance_ref(e->m);
            }
            slot = e; /* changed: replaced */
        }
    }
    if (!(mi = netmap_md_instance(inst, m->d.nets, m->d.n_nets, &m->d.def)))
        return NULL;
    if (!slot) { /* a free slot, else the least recently used */
        slot = &m->shared[0];
        for (size_t i = 0; i < MD_SHARED && slot->m; i++)
            if (!m->shared[i].m || m->shared[i].used < slot->used)
                slot = &m->shared[i];
    }
    md_instance_free(slot->m); /* (connections still holding it keep it) */
    strscpy(slot->uuid, inst->uuid, sizeof(slot->uuid));
    memcpy(slot->fp, fp, sizeof(fp));
    slot->m = md_instance_ref(mi);
    slot->used = ++m->tick;
    return mi;
}

void netmap_counts(const struct netmap *m, struct netmap_counts *out)
{
    *out = m->counts;
}

int netmap_metrics(const struct netmap *m, FILE *f)
{
    static const char *name = "compute_agent_metadata_lookups_total";
    const struct {
        const char *result;
        uint64_t n;
    } rows[] = {
        {"ok", m->counts.ok},
        {"no_port", m->counts.no_port},             /* no port holds the source IP on that network */
        {"peer_mismatch", m->counts.peer_mismatch}, /* the bridge's MAC or port of that IP: unknown or not the port's */
        {"unfiltered", m->counts.unfiltered},       /* the port has no anti-spoofing entries */
        {"not_live", m->counts.not_live},           /* its instance is gone, terminated or in error */
    };

    prom_family(f, name, "counter",
                "metadata instance lookups (one per connection), by result: ok or the reason refused");
    for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
        struct prom_label l = {"result", rows[i].result};
        prom_series(f, name, &l, 1);
        prom_u64(f, rows[i].n);
    }
    return ferror(f) ? -EIO : 0;
}

/* A lookup that could not be decided now: the service answers 503 and asks
 * again on the connection's next request. Counted apart from the results. */
static int transient(struct netmap *m, const char *network, const char *ip, const char *what, int r)
{
    m->counts.transient++;
    log_debug("metadata lookup not decided now", "network=%s ip=%s step=%s error=%s", network, ip, what,
              strerror(-r));
    return r;
}

int netmap_lookup(void *opaque, const char *network, const struct sockaddr_in *peer, struct md_instance **out)
{
    struct netmap *m = opaque;
    char ip[16], owner[37], dev[16] = "", mac_text[18];
    uint8_t mac[6] = {0}, want[6] = {0};
    struct instance inst;
    struct port p;
    uint64_t unlogged;
    int r;

    *out = NULL;
    if (!peer || peer->sin_family != AF_INET || !inet_ntop(AF_INET, &peer->sin_addr, ip, sizeof(ip)))
        return -EINVAL;
    /* 1. the port with that IP on that network */
    if ((r = store_port_by_ip(m->d.store, network, ip, &p, owner)) < 0) {
        if (r != -ENOENT)
            return transient(m, network, ip, "store", r); /* busy, out of memory: not "nobody" */
        m->counts.no_port++;
        return -ENOENT;
    }
    /* 2. the bridge's view: the MAC of that IP, the device of that MAC */
    r = m->d.np ? netplug_peer(m->d.np, network, peer->sin_addr.s_addr, mac, dev) : -ENOTSUP;
    if (r == -EINTR || r == -EAGAIN || r == -ENOMEM || r == -ENOBUFS || r == -EBUSY || r == -ETIMEDOUT)
        return transient(m, network, ip, "neighbour", r); /* a dump interrupted (NLE_DUMP_INTR), ... */
    if (r < 0 || request_mac_parse(p.mac, NULL, want) < 0 || memcmp(mac, want, 6) ||
        strcmp(dev, p.device)) {
        snprintf(mac_text, sizeof(mac_text), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                 mac[4], mac[5]);
        m->counts.peer_mismatch++;
        if (refusal_loggable(m, network, peer->sin_addr.s_addr, &unlogged))
            log_warn("metadata request refused: source does not match its port", "network=%s ip=%s port=%s "
                     "error=%d mac=%s dev=%s suppressed=%llu", network, ip, p.device, r, r < 0 ? "-" : mac_text,
                     r < 0 ? "-" : dev, (unsigned long long)unlogged);
        return -ENOENT;
    }
    /* 3. only behind the anti-spoofing filter */
    if (!netplug_port_filtered(m->d.np, p.device)) {
        m->counts.unfiltered++;
        if (refusal_loggable(m, network, peer->sin_addr.s_addr, &unlogged))
            log_warn("metadata request refused: port not filtered", "network=%s ip=%s port=%s suppressed=%llu",
                     network, ip, p.device, (unsigned long long)unlogged);
        return -ENOENT;
    }
    /* 4. a live instance */
    if ((r = store_instance_get(m->d.store, owner, &inst)) < 0) {
        if (r != -ENOENT)
            return transient(m, network, ip, "store", r);
        return m->counts.not_live++, -ENOENT;
    }
    if (instance_is_gone(&inst) || !strcmp(inst.state, "error")) {
        shared_drop(m, inst.uuid);
        instance_release(&inst);
        m->counts.not_live++;
        return -ENOENT;
    }
    *out = netmap_md_shared(m, &inst);
    instance_release(&inst);
    if (!*out)
        return -ENOMEM;
    m->counts.ok++;
    return 0;
}
