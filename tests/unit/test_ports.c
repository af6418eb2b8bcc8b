/* Unit tests (issue 10): [network NAME] sections (keys, errors naming the
 * key), the IP allocator (lowest free, never network/broadcast/gateway,
 * full networks, across a reopen of the store), the ports table's UNIQUE
 * constraints, release, the live ports a reconcile keeps, and
 * ops_ports_reserve(): interfaces checked against the host (unknown
 * network, IP outside the cidr or special, MTU above the network's, MAC or
 * IP in use) with the field named, MACs generated locally administered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "agent/config.h"
#include "agent/metadata.h"
#include "agent/netmap.h"
#include "agent/ops.h"
#include "agent/request.h"
#include "agent/store.h"

static char dir[] = "/tmp/ca-ports-XXXXXX";

static int write_conf(const char *text, char *path, size_t n)
{
    FILE *f;

    snprintf(path, n, "%s/agent.conf", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fputs(text, f);
    fclose(f);
    return 0;
}

static int load(const char *text, struct agent_config *cfg, struct agent_error *err)
{
    char path[128];
    int r;

    config_init_defaults(cfg);
    assert_int_equal(write_conf(text, path, sizeof(path)), 0);
    if ((r = config_load_file(cfg, path, err)) < 0)
        return r;
    free(cfg->state_dir);
    cfg->state_dir = strdup("/tmp");
    return config_finish(cfg, err);
}

#define NETS                                                                                       \
    "[network n1]\ntype = bridge\nbridge = br-test\ncidr = 10.9.0.0/24\ngateway = 10.9.0.1\n"     \
    "dns = 10.9.0.1, 9.9.9.9\nmtu = 1450\n"                                                        \
    "[network tiny]\ntype = vxlan\nvni = 42\ncidr = 10.8.0.0/29\ngateway = 10.8.0.6\n"            \
    "[network flat]\ntype = bridge\nbridge = br-flat\n"

static void expect_conf_error(const char *text, const char *field)
{
    struct agent_config cfg;
    struct agent_error err = {0};

    if (load(text, &cfg, &err) == 0)
        fail_msg("expected an error on %s for:\n%s", field, text);
    if (strcmp(err.field, field))
        fail_msg("expected field %s, got %s (%s)", field, err.field, err.message);
    config_release(&cfg);
}

static void test_config_networks(void **state)
{
    struct agent_config cfg;
    struct agent_error err = {0};
    const struct net_config *n;

    (void)state;
    if (load(NETS "[metadata]\nport = 8775\nhttp_tokens = required\nconfig_drive = true\n", &cfg, &err) < 0)
        fail_msg("%s", err.message);
    assert_int_equal(cfg.n_networks, 3);
    assert_non_null(n = config_network(&cfg, "n1"));
    assert_int_equal(n->kind, NET_BRIDGE);
    assert_int_equal(n->prefix, 24);
    assert_int_equal(n->net, 0x0a090000u);
    assert_int_equal(n->gw, 0x0a090001u);
    assert_int_equal(n->n_dns, 2);
    assert_int_equal(n->dns_addr[1], 0x09090909u);
    assert_int_equal(n->mtu, 1450);
    assert_true(n->metadata);
    assert_non_null(n = config_network(&cfg, "tiny"));
    assert_int_equal(n->kind, NET_VXLAN);
    assert_int_equal(n->vni, 42);
    assert_null(config_network(&cfg, "nope"));
    assert_int_equal(cfg.md_port, 8775);
    assert_string_equal(cfg.md_http_tokens, "required");
    assert_true(cfg.md_config_drive);
    assert_true(cfg.md_enabled);
    assert_string_equal(cfg.md_product, "OpenStack Nova");
    assert_string_equal(cfg.dhcp_dnsmasq, "dnsmasq");
    assert_string_equal(cfg.dhcp_user, "root");
    config_release(&cfg);

    expect_conf_error("[network n1]\ntype = vxlan\n", "network.n1.vni");
    expect_conf_error("[network n1]\ntype = vxlan\nvni = 0\n", "network.n1.vni");
    expect_conf_error("[network n1]\ntype = vxlan\nvni = 16777216\n", "network.n1.vni");
    expect_conf_error("[network n1]\ntype = vxlan\nvni = 5\nremote = 10.0.0.1\ngroup = 239.1.1.1\n", "network.n1.group");
    expect_conf_error("[network n1]\ntype = vxlan\nvni = 5\ngroup = 10.0.0.1\n", "network.n1.group");
    expect_conf_error("[network n1]\ntype = vlan\nparent = eth0\n", "network.n1.vlan_id");
    expect_conf_error("[network n1]\ntype = vlan\nvlan_id = 5\n", "network.n1.parent");
    expect_conf_error("[network n1]\ntype = vlan\nparent = eth0\nvlan_id = 4095\n", "network.n1.vlan_id");
    expect_conf_error("[network n1]\ntype = bridge\n", "network.n1.bridge");
    expect_conf_error("[network n1]\ntype = hub\n", "network.n1.type");
    expect_conf_error("[network n1]\nbridge = b\ncidr = 10.0.0.1/24\n", "network.n1.cidr");
    expect_conf_error("[network n1]\nbridge = b\ncidr = 10.0.0.0/31\n", "network.n1.cidr");
    expect_conf_error("[network n1]\nbridge = b\ncidr = 10.0.0.0/24\ngateway = 10.0.1.1\n", "network.n1.gateway");
    expect_conf_error("[network n1]\nbridge = b\ncidr = 10.0.0.0/24\ngateway = 10.0.0.255\n", "network.n1.gateway");
    expect_conf_error("[network n1]\nbridge = b\ngateway = 10.0.0.1\n", "network.n1.gateway");
    expect_conf_error("[network n1]\nbridge = b\ndns = 1.2.3\n", "network.n1.dns");
    expect_conf_error("[network n1]\nbridge = b\nmtu = 67\n", "network.n1.mtu");
    expect_conf_error("[network n1]\nbridge = b\ndhcp = maybe\n", "network.n1.dhcp");
    expect_conf_error("[network n1]\nbridge = b\ndhcp = true\n", "network.n1.dhcp");
    expect_conf_error("[network n1]\nbridge = b\ncidr = 10.0.0.0/24\ndhcp = true\n", "network.n1.dhcp");
    expect_conf_error("[network n1]\nbridge = b\nmtu = 1500\nmtu = 1400\n", "network.n1.mtu");
    expect_conf_error("[network n1]\nbridge = b\ncolour = red\n", "network");
    expect_conf_error("[network n1]\nbridge = b\n[network n1]\nbridge = c\n", "network");
    expect_conf_error("[network bad/name]\nbridge = b\n", "network");
    expect_conf_error("[network n1]\nbridge = 0123456789abcdef\n", "network.n1.bridge");
    expect_conf_error("[metadata]\naddress = 169.254.169\n", "metadata.address");
    expect_conf_error("[metadata]\nhttp_tokens = maybe\n", "metadata.http_tokens");
    expect_conf_error("[metadata]\nhop_limit = 65\n", "metadata.hop_limit");
    expect_conf_error("[metadata]\nconfig_drive_format = vfat\n", "metadata.config_drive_format");
    expect_conf_error("[metadata]\nenabled = sometimes\n", "metadata.enabled");
    {
        struct agent_config c2;
        struct agent_error e2 = {0};
        if (load("[network n1]\nbridge = br0\ncidr = 10.0.0.0/24\nip_range = 10.0.0.100-10.0.0.149\n", &c2, &e2) < 0)
            fail_msg("%s", e2.message);
        assert_int_equal(c2.networks[0].range_lo, 0x0a000064);
        assert_int_equal(c2.networks[0].range_hi, 0x0a000095);
        config_release(&c2);
    }
    expect_conf_error("[network n1]\nbridge = br0\nip_range = 10.0.0.5-10.0.0.9\n", "network.n1.ip_range");
    expect_conf_error("[network o1]\ntype = ovs\nbridge = br-int\nmetadata = true\n", "network.o1.metadata");
    {
        struct agent_config c3;
        struct agent_error e3 = {0};
        if (load("[network o1]\ntype = ovs\nbridge = br-int\n", &c3, &e3) < 0)
            fail_msg("%s", e3.message);
        assert_false(c3.networks[0].metadata); /* off by default on ovs */
        config_release(&c3);
    }
    expect_conf_error("[network n1]\nbridge = br0\ncidr = 10.0.0.0/24\nip_range = 10.0.0.5\n", "network.n1.ip_range");
    expect_conf_error("[network n1]\nbridge = br0\ncidr = 10.0.0.0/24\nip_range = 10.0.0.5-10.0.1.9\n", "network.n1.ip_range");
    expect_conf_error("[network n1]\nbridge = br0\ncidr = 10.0.0.0/24\nip_range = 10.0.0.0-10.0.0.9\n", "network.n1.ip_range");
    expect_conf_error("[network n1]\nbridge = br0\ncidr = 10.0.0.0/24\nip_range = 10.0.0.9-10.0.0.5\n", "network.n1.ip_range");
    expect_conf_error("[network n1]\nbridge = br0\ncidr = 10.0.0.0/24\ngateway = 10.0.0.1\nip_range = 10.0.0.1-10.0.0.1\n",
                      "network.n1.ip_range");
    expect_conf_error("[network n1]\nbridge = br0\ncidr = 10.0.0.0/24\nip_range = 10.0.0.9-10.0.0.2x\n", "network.n1.ip_range");
}

static void test_lowest_free(void **state)
{
    uint32_t net = 0x0a000000, mask = 0xffffff00, out = 0;
    uint32_t taken[4] = {0x0a000003, 0x0a000002, 0x0a000005};

    (void)state;
    assert_int_equal(ip_lowest_free(&(struct ip_pool){net, mask, 0x0a000001, 0, 0}, NULL, 0, &out), 0);
    assert_int_equal(out, 0x0a000002); /* .0 network, .1 gateway */
    assert_int_equal(ip_lowest_free(&(struct ip_pool){net, mask, 0, 0, 0}, NULL, 0, &out), 0);
    assert_int_equal(out, 0x0a000001);
    assert_int_equal(ip_lowest_free(&(struct ip_pool){net, mask, 0x0a000001, 0, 0}, taken, 3, &out), 0);
    assert_int_equal(out, 0x0a000004);
    /* /30: .1 and .2 are the hosts; gateway .1, .2 taken: full */
    taken[0] = 0x0a000002;
    assert_int_equal(ip_lowest_free(&(struct ip_pool){net, 0xfffffffc, 0x0a000001, 0, 0}, taken, 1, &out), -ENOSPC);
    assert_int_equal(ip_lowest_free(&(struct ip_pool){net, 0xfffffffc, 0, 0, 0}, taken, 1, &out), 0);
    assert_int_equal(out, 0x0a000001);
    /* never the broadcast address */
    {
        uint32_t t2[2] = {0x0a000001, 0x0a000002};
        assert_int_equal(ip_lowest_free(&(struct ip_pool){net, 0xfffffffc, 0, 0, 0}, t2, 2, &out), -ENOSPC);
    }
    assert_int_equal(ip_lowest_free(&(struct ip_pool){0, 0, 0, 0, 0}, NULL, 0, &out), -ENOSPC);
    /* an ip_range: only lo..hi, still never the gateway inside it */
    {
        uint32_t t3[3] = {0x0a000014, 0x0a000016, 0};
        struct ip_pool p = {net, mask, 0x0a000015, 0x0a000014, 0x0a000017};
        assert_int_equal(ip_lowest_free(&p, t3, 2, &out), 0);
        assert_int_equal(out, 0x0a000017); /* .20 and .22 taken, .21 the gateway */
        t3[2] = 0x0a000017;
        assert_int_equal(ip_lowest_free(&p, t3, 3, &out), -ENOSPC); /* .23 was the last of the range */
        p.lo = 0x0a0000fe;
        p.hi = 0x0a0000fe;
        assert_int_equal(ip_lowest_free(&p, NULL, 0, &out), 0);
        assert_int_equal(out, 0x0a0000fe);
        p.lo = 0x0b000001; /* outside the cidr: nothing */
        p.hi = 0x0b000009;
        assert_int_equal(ip_lowest_free(&p, NULL, 0, &out), -ENOSPC);
    }
}

static void make_inst(struct instance *i, const char *name)
{
    memset(i, 0, sizeof(*i));
    uuid_generate_str(i->uuid);
    ec2_id_generate(i->ec2_id);
    i->name = strdup(name);
    strscpy(i->state, "running", sizeof(i->state));
    i->flavor = (struct flavor){1, 64, 0};
    i->boot.kind = BOOT_KERNEL;
    i->boot.kernel = strdup("/k");
    i->created_ms = i->updated_ms = now_wall_ms();
}

static struct ops *engine(struct store *s, const struct agent_config *cfg)
{
    static uv_loop_t loop;
    struct ops_deps d = {.store = s, .np = (struct netplug *)&loop /* never called here */};
    struct ops_config oc = {.instances_dir = "/nonexistent", .networks = cfg->networks,
                            .n_networks = cfg->n_networks};
    struct ops *o;

    assert_int_equal(ops_new(&loop, &d, &oc, NULL, NULL, &o), 0);
    return o;
}

static int reserve(struct ops *o, const char *body, struct port **ports, size_t *n, struct agent_error *err)
{
    static struct catalog *cat;
    json_t *j = json_loads(body, 0, NULL);
    struct launch_spec spec;
    int r;

    if (!cat)
        catalog_builtin(&cat);
    assert_non_null(j);
    r = launch_spec_parse(j, cat, &spec, err);
    json_decref(j);
    if (r < 0)
        fail_msg("bad test body %s: %s", body, err->message);
    r = ops_ports_reserve(o, &spec, ports, err);
    *n = spec.n_ifaces;
    launch_spec_release(&spec);
    return r;
}

#define B(ifaces) "{\"name\":\"a\",\"flavor\":{\"vcpus\":1,\"memory_mb\":64,\"disk_gb\":0}," \
                  "\"kernel\":{\"path\":\"/k\"},\"interfaces\":" ifaces "}"

/* Reserve and record an instance with those interfaces; its uuid in uuid. */
static void record(struct store *s, struct ops *o, const char *ifaces_body, char uuid[37], struct instance *keep)
{
    struct instance inst;
    struct agent_error err = {0};
    struct port *ports = NULL;
    size_t n = 0;

    if (reserve(o, ifaces_body, &ports, &n, &err) < 0)
        fail_msg("reserve %s: %s (%s)", ifaces_body, err.message, err.field);
    make_inst(&inst, "p");
    inst.ports = ports;
    inst.n_ports = n;
    assert_int_equal(store_instance_insert(s, &inst), 0);
    strscpy(uuid, inst.uuid, 37);
    if (keep)
        *keep = inst;
    else
        instance_release(&inst);
}

static void expect_refused(struct ops *o, const char *body, const char *code, const char *field)
{
    struct agent_error err = {0};
    struct port *ports = NULL;
    size_t n;

    if (reserve(o, body, &ports, &n, &err) == 0)
        fail_msg("expected %s on %s for %s", code, field, body);
    assert_null(ports);
    if (strcmp(err.field, field) || strcmp(err.code, code))
        fail_msg("for %s expected %s/%s, got %s/%s: %s", body, code, field, err.code, err.field, err.message);
}

static void test_reserve_and_allocate(void **state)
{
    struct agent_config cfg;
    struct agent_error err = {0};
    struct store *s;
    struct ops *o;
    struct instance a, got;
    char ua[37], ub[37], uc[37], path[128], owner[37];
    struct port p;
    uint8_t mac[6];

    (void)state;
    assert_int_equal(load(NETS, &cfg, &err), 0);
    snprintf(path, sizeof(path), "%s/agent.db", dir);
    assert_int_equal(store_open(path, false, &s, &err), 0);
    o = engine(s, &cfg);

    /* allocated: lowest free, never .0/.1(gw); MAC fa:16:3e, locally administered unicast */
    record(s, o, B("[{\"network\":\"n1\"},{\"network\":\"n1\",\"mtu\":1400},{\"network\":\"flat\"}]"), ua, &a);
    assert_int_equal(a.n_ports, 3);
    assert_string_equal(a.ports[0].ip, "10.9.0.2");
    assert_string_equal(a.ports[1].ip, "10.9.0.3");
    assert_string_equal(a.ports[2].ip, ""); /* no cidr: no IP */
    assert_int_equal(a.ports[1].mtu, 1400);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(request_mac_parse(a.ports[i].mac, NULL, mac), 0);
        assert_int_equal(strncmp(a.ports[i].mac, "fa:16:3e:", 9), 0);
        assert_int_equal(strlen(a.ports[i].device), 14);
        assert_int_equal(strncmp(a.ports[i].device, "tap", 3), 0);
        assert_int_equal(strncmp(a.ports[i].device + 3, a.ports[i].port_id, 11), 0);
        assert_int_equal(a.ports[i].index, (int)i);
    }
    assert_string_not_equal(a.ports[0].mac, a.ports[1].mac);
    /* a given IP is used as given; the next allocated skips it */
    record(s, o, B("[{\"network\":\"n1\",\"ip\":\"10.9.0.4\",\"mac\":\"02:00:00:00:00:01\"},{\"network\":\"n1\"}]"),
           ub, &got);
    assert_string_equal(got.ports[0].ip, "10.9.0.4");
    assert_string_equal(got.ports[0].mac, "02:00:00:00:00:01");
    assert_string_equal(got.ports[1].ip, "10.9.0.5");
    instance_release(&got);

    /* refusals, each naming its field; nothing reserved by them */
    expect_refused(o, B("[{\"network\":\"n1\"},{\"network\":\"nope\"}]"), "invalid_field", "interfaces[1].network");
    expect_refused(o, B("[{\"network\":\"n1\",\"ip\":\"10.9.1.5\"}]"), "invalid_field", "interfaces[0].ip");
    expect_refused(o, B("[{\"network\":\"n1\",\"ip\":\"10.9.0.0\"}]"), "invalid_field", "interfaces[0].ip");
    expect_refused(o, B("[{\"network\":\"n1\",\"ip\":\"10.9.0.255\"}]"), "invalid_field", "interfaces[0].ip");
    expect_refused(o, B("[{\"network\":\"n1\",\"ip\":\"10.9.0.1\"}]"), "invalid_field", "interfaces[0].ip");
    expect_refused(o, B("[{\"network\":\"flat\",\"ip\":\"10.9.0.9\"}]"), "invalid_field", "interfaces[0].ip");
    expect_refused(o, B("[{\"network\":\"n1\",\"mtu\":1451}]"), "invalid_field", "interfaces[0].mtu");
    expect_refused(o, B("[{\"network\":\"n1\",\"ip\":\"10.9.0.2\"}]"), "conflict", "interfaces[0].ip");
    expect_refused(o, B("[{\"network\":\"n1\"},{\"network\":\"n1\",\"mac\":\"02:00:00:00:00:01\"}]"), "conflict",
                   "interfaces[1].mac");
    {
        /* the same MAC again at the store: the UNIQUE constraint refuses */
        struct instance dup;
        make_inst(&dup, "dup");
        dup.ports = calloc(1, sizeof(*dup.ports));
        dup.n_ports = 1;
        dup.ports[0] = a.ports[0];
        uuid_generate_str(dup.ports[0].port_id);
        strscpy(dup.ports[0].ip, "10.9.0.77", sizeof(dup.ports[0].ip));
        strscpy(dup.ports[0].device, "tapdup", sizeof(dup.ports[0].device));
        assert_int_equal(store_begin(s), 0);
        assert_true(store_instance_insert(s, &dup) < 0);
        store_rollback(s);
        instance_release(&dup);
    }

    /* across a reopen (a restart): the reservations hold */
    ops_free(o);
    store_free(s);
    assert_int_equal(store_open(path, false, &s, &err), 0);
    o = engine(s, &cfg);
    record(s, o, B("[{\"network\":\"n1\"}]"), uc, &got);
    assert_string_equal(got.ports[0].ip, "10.9.0.6");
    instance_release(&got);
    assert_int_equal(store_instance_get(s, ua, &got), 0);
    assert_int_equal(got.n_ports, 3);
    assert_string_equal(got.ports[1].ip, "10.9.0.3");
    assert_string_equal(got.ports[0].mac, a.ports[0].mac);
    assert_string_equal(got.ports[0].state, "reserved");
    /* state written with the instance */
    strscpy(got.ports[0].state, "plugged", sizeof(got.ports[0].state));
    assert_int_equal(store_instance_update(s, &got), 0);
    instance_release(&got);
    assert_int_equal(store_instance_get(s, ua, &got), 0);
    assert_string_equal(got.ports[0].state, "plugged");
    instance_release(&got);
    assert_int_equal(store_port_by_ip(s, "n1", "10.9.0.3", &p, owner), 0);
    assert_string_equal(owner, ua);
    assert_int_equal(store_port_mac_owner(s, a.ports[2].mac, owner), 0);
    assert_string_equal(owner, ua);
    {
        struct port *live;
        char(*owners)[37];
        size_t n;
        assert_int_equal(store_ports_live(s, &live, &owners, &n), 0);
        assert_int_equal(n, 3 + 2 + 1); /* unplugged ones and dead instances' excluded */
        free(live);
        free(owners);
    }

    /* released (terminate): its MACs and IPs free again; the lowest comes back */
    assert_int_equal(store_ports_release(s, ua), 0);
    assert_int_equal(store_port_by_ip(s, "n1", "10.9.0.3", &p, owner), -ENOENT);
    assert_int_equal(store_port_mac_owner(s, a.ports[0].mac, owner), -ENOENT);
    record(s, o, B("[{\"network\":\"n1\"}]"), uc, &got);
    assert_string_equal(got.ports[0].ip, "10.9.0.2");
    instance_release(&got);

    /* a full network: /29 hosts .1-.6, gateway .6: five, then none */
    for (int i = 0; i < 5; i++)
        record(s, o, B("[{\"network\":\"tiny\"}]"), uc, NULL);
    expect_refused(o, B("[{\"network\":\"tiny\"}]"), "conflict", "interfaces[0].ip");
    assert_int_equal(store_port_by_ip(s, "tiny", "10.8.0.5", &p, owner), 0);
    assert_int_equal(store_port_by_ip(s, "tiny", "10.8.0.6", &p, owner), -ENOENT);

    instance_release(&a);
    ops_free(o);
    store_free(s);
    config_release(&cfg);
}

static uint64_t fake_now = 1000;

static uint64_t fake_now_ms(void)
{
    return fake_now;
}

/* The metadata of an instance (what the service and the config drive
 * serve), and the lookup's refusals short of net-plug. */
static void test_netmap(void **state)
{
    struct agent_config cfg;
    struct agent_error err = {0};
    struct netmap_defaults def = {.http_tokens = "required", .hop_limit = 3};
    struct instance inst;
    struct md_instance *m;
    struct store *s;
    struct netmap *nm;
    struct netmap_counts cnt;
    struct sockaddr_in peer = {.sin_family = AF_INET};

    (void)state;
    assert_int_equal(load(NETS, &cfg, &err), 0);
    make_inst(&inst, "web");
    inst.hostname = strdup("web-1");
    inst.availability_zone = strdup("az1");
    inst.user_data = strdup("aGVsbG8="); /* hello */
    inst.public_keys = json_pack("{s:s}", "k", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI u@h");
    inst.metadata = json_pack("{s:s}", "role", "web");
    inst.n_ports = 1;
    inst.ports = calloc(1, sizeof(*inst.ports));
    strscpy(inst.ports[0].network, "n1", sizeof(inst.ports[0].network));
    strscpy(inst.ports[0].mac, "fa:16:3e:00:00:07", sizeof(inst.ports[0].mac));
    strscpy(inst.ports[0].ip, "10.9.0.7", sizeof(inst.ports[0].ip));
    strscpy(inst.ports[0].device, "tap12345678-9a", sizeof(inst.ports[0].device));
    strscpy(inst.ports[0].state, "plugged", sizeof(inst.ports[0].state));
    uuid_generate_str(inst.ports[0].port_id);
    assert_non_null(m = netmap_md_instance(&inst, cfg.networks, cfg.n_networks, &def));
    assert_string_equal(m->uuid, inst.uuid);
    assert_string_equal(m->ec2_id, inst.ec2_id);
    assert_string_equal(m->hostname, "web-1");
    assert_string_equal(m->availability_zone, "az1");
    assert_true(m->has_user_data);
    assert_int_equal(m->user_data_len, 5);
    assert_memory_equal(m->user_data, "hello", 5);
    assert_int_equal(m->n_keys, 1);
    assert_string_equal(m->keys[0].name, "k");
    assert_string_equal(m->keys[0].type, "ssh");
    assert_int_equal(m->n_meta, 1);
    assert_string_equal(m->meta[0].value, "web");
    assert_int_equal(m->n_ifaces, 1);
    assert_string_equal(m->ifaces[0].ipv4, "10.9.0.7");
    assert_int_equal(m->ifaces[0].prefix, 24);
    assert_string_equal(m->ifaces[0].gateway, "10.9.0.1");
    assert_int_equal(m->ifaces[0].n_dns, 2);
    assert_string_equal(m->ifaces[0].dns[1], "9.9.9.9");
    assert_int_equal(m->ifaces[0].mtu, 1450); /* the network's */
    assert_int_equal(m->http_tokens, MD_TOKENS_REQUIRED);
    assert_int_equal(m->hop_limit, 3);
    assert_true(m->endpoint_enabled);
    md_instance_free(m);
    /* the instance's own options win */
    strscpy(inst.md_opts.http_tokens, "optional", sizeof(inst.md_opts.http_tokens));
    strscpy(inst.md_opts.http_endpoint, "disabled", sizeof(inst.md_opts.http_endpoint));
    inst.md_opts.hop_limit = 9;
    assert_non_null(m = netmap_md_instance(&inst, cfg.networks, cfg.n_networks, &def));
    assert_int_equal(m->http_tokens, MD_TOKENS_OPTIONAL);
    assert_int_equal(m->hop_limit, 9);
    assert_false(m->endpoint_enabled);
    md_instance_free(m);

    /* the lookup: no port with that IP -> refused; a port but no net-plug to
     * confirm MAC and device -> refused; never from the IP alone */
    assert_int_equal(store_open(":memory:", false, &s, &err), 0);
    assert_int_equal(store_instance_insert(s, &inst), 0);
    {
        struct netmap_deps nd = {.store = s, .np = NULL, .nets = cfg.networks, .n_nets = cfg.n_networks,
                                 .now_ms = fake_now_ms};
        assert_int_equal(netmap_new(&nd, &nm), 0);
    }
    assert_int_equal(inet_pton(AF_INET, "10.9.0.8", &peer.sin_addr), 1);
    assert_int_equal(netmap_lookup(nm, "n1", &peer, &m), -ENOENT);
    assert_null(m);
    assert_int_equal(inet_pton(AF_INET, "10.9.0.7", &peer.sin_addr), 1);
    assert_int_equal(netmap_lookup(nm, "tiny", &peer, &m), -ENOENT); /* another network */
    assert_int_equal(netmap_lookup(nm, "n1", &peer, &m), -ENOENT);   /* unconfirmed */
    assert_null(m);
    netmap_counts(nm, &cnt);
    assert_int_equal(cnt.no_port, 2);
    assert_int_equal(cnt.peer_mismatch, 1);
    assert_int_equal(cnt.ok, 0);
    {
        /* the same on /metrics: one series per result, each counted */
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        assert_non_null(f);
        assert_int_equal(netmap_metrics(nm, f), 0);
        assert_int_equal(fclose(f), 0);
        assert_non_null(strstr(text, "# TYPE compute_agent_metadata_lookups_total counter\n"));
        assert_non_null(strstr(text, "\ncompute_agent_metadata_lookups_total{result=\"no_port\"} 2\n"));
        assert_non_null(strstr(text, "\ncompute_agent_metadata_lookups_total{result=\"peer_mismatch\"} 1\n"));
        assert_non_null(strstr(text, "\ncompute_agent_metadata_lookups_total{result=\"ok\"} 0\n"));
        assert_non_null(strstr(text, "\ncompute_agent_metadata_lookups_total{result=\"unfiltered\"} 0\n"));
        assert_non_null(strstr(text, "\ncompute_agent_metadata_lookups_total{result=\"not_live\"} 0\n"));
        free(text);
    }
    /* a flood of refusals from one source: counted exactly, logged once a
     * minute (the next line says how many were not) */
    for (int i = 0; i < 99; i++)
        assert_int_equal(netmap_lookup(nm, "n1", &peer, &m), -ENOENT);
    netmap_counts(nm, &cnt);
    assert_int_equal(cnt.peer_mismatch, 100);
    assert_int_equal(cnt.refusals_logged, 1);
    assert_int_equal(cnt.refusals_unlogged, 99);
    fake_now += 59999;
    assert_int_equal(netmap_lookup(nm, "n1", &peer, &m), -ENOENT);
    netmap_counts(nm, &cnt);
    assert_int_equal(cnt.refusals_logged, 1);
    fake_now += 1;
    assert_int_equal(netmap_lookup(nm, "n1", &peer, &m), -ENOENT); /* "suppressed=100" */
    netmap_counts(nm, &cnt);
    assert_int_equal(cnt.peer_mismatch, 102);
    assert_int_equal(cnt.refusals_logged, 2);
    assert_int_equal(cnt.refusals_unlogged, 100);
    /* another source on the same network is logged in its own right */
    assert_int_equal(netmap_lookup(nm, "tiny", &peer, &m), -ENOENT); /* no port: never logged */
    netmap_counts(nm, &cnt);
    assert_int_equal(cnt.refusals_logged + cnt.refusals_unlogged, cnt.peer_mismatch + cnt.unfiltered);
    {
        /* one md_instance per unchanged instance, shared by its lookups (and
         * so one render cache for all its connections); a change makes another */
        struct md_instance *m1, *m2, *m3;
        assert_non_null(m1 = netmap_md_shared(nm, &inst));
        assert_non_null(m2 = netmap_md_shared(nm, &inst));
        assert_ptr_equal(m1, m2);
        json_object_set_new(inst.metadata, "role", json_string("db"));
        assert_non_null(m3 = netmap_md_shared(nm, &inst));
        assert_ptr_not_equal(m3, m1);
        assert_string_equal(m3->meta[0].value, "db");
        assert_string_equal(m1->meta[0].value, "web"); /* a connection holding the old one keeps it */
        netmap_counts(nm, &cnt);
        assert_int_equal(cnt.shared, 1);
        md_instance_free(m1);
        md_instance_free(m2);
        md_instance_free(m3);
    }
    netmap_free(nm);
    store_free(s);
    instance_release(&inst);
    config_release(&cfg);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char p[160];

    (void)state;
    snprintf(p, sizeof(p), "%s/agent.conf", dir);
    unlink(p);
    for (const char *sfx = ""; sfx; sfx = !*sfx ? "-wal" : !strcmp(sfx, "-wal") ? "-shm" : NULL) {
        snprintf(p, sizeof(p), "%s/agent.db%s", dir, sfx);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_networks),
        cmocka_unit_test(test_lowest_free),
        cmocka_unit_test(test_reserve_and_allocate),
        cmocka_unit_test(test_netmap),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
