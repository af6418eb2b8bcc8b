/* Unit tests: agent/metadata rendering (md_render): the EC2 versions list,
 * listings ("name/" on directories, no listed key that then fails, crawled
 * recursively for several instance shapes), leaves, user-data (404 when
 * none, raw bytes), public keys, the identity document, the OpenStack
 * versions, per-version file lists, meta_data.json and network_data.json;
 * and the instance's reference count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/metadata/md-internal.h"

static struct md_instance *fixture(size_t n_ifaces, size_t n_keys, bool user_data)
{
    struct md_instance *m = md_instance_new();

    assert_non_null(m);
    strscpy(m->uuid, "6a6a6a6a-0000-4000-8000-000000000001", sizeof(m->uuid));
    strscpy(m->ec2_id, "i-0000000000000a001", sizeof(m->ec2_id));
    m->name = strdup("vm one");
    m->hostname = strdup("vm1");
    m->availability_zone = strdup("eu-west-1b");
    m->instance_type = strdup("m1.small");
    m->project_id = strdup("p1");
    m->launch_index = 2;
    m->created_ms = 1764748800000;
    m->keys = calloc(n_keys + 1, sizeof(*m->keys));
    for (size_t i = 0; i < n_keys; i++) {
        char name[16], data[64];
        snprintf(name, sizeof(name), "key%hhu", (unsigned char)i);
        snprintf(data, sizeof(data), "ssh-ed25519 AAAA%zu user@host", i);
        m->keys[i].name = strdup(name);
        m->keys[i].type = strdup("ssh");
        m->keys[i].data = strdup(data);
    }
    m->n_keys = n_keys;
    m->meta = calloc(1, sizeof(*m->meta));
    m->meta[0].key = strdup("role");
    m->meta[0].value = strdup("web");
    m->n_meta = 1;
    if (user_data) {
        static const uint8_t ud[] = {'#', '!', '\0', 0xff, '\n'};
        m->user_data = malloc(sizeof(ud));
        memcpy(m->user_data, ud, sizeof(ud));
        m->user_data_len = sizeof(ud);
        m->has_user_data = true;
    }
    m->ifaces = calloc(n_ifaces + 1, sizeof(*m->ifaces));
    for (size_t i = 0; i < n_ifaces; i++) {
        struct md_iface *f = &m->ifaces[i];
        snprintf(f->mac, sizeof(f->mac), "52:54:00:AB:00:%02hhx", (unsigned char)i);
        snprintf(f->ipv4, sizeof(f->ipv4), "10.0.%hhu.5", (unsigned char)i);
        f->prefix = 24;
        snprintf(f->gateway, sizeof(f->gateway), "10.0.%hhu.1", (unsigned char)i);
        f->dns = calloc(2, sizeof(char *));
        f->dns[0] = strdup("10.0.0.1");
        f->n_dns = 1;
        f->mtu = 1450;
        snprintf(f->network, sizeof(f->network), "n%hhu", (unsigned char)i);
        snprintf(f->port_id, sizeof(f->port_id), "0c0c0c0c-0000-4000-8000-0000000000%02hhx", (unsigned char)i);
        f->device_number = (int)(n_ifaces - 1 - i); /* listed in device order, not array order */
    }
    m->n_ifaces = n_ifaces;
    return m;
}

static struct md_answer get(const struct md_instance *m, const char *path)
{
    struct md_answer a = {0};

    assert_int_equal(md_render(m, path, &a), 0);
    assert_non_null(a.body);
    return a;
}

static void expect(const struct md_instance *m, const char *path, int status, const char *body)
{
    struct md_answer a = get(m, path);

    if (a.status != status || (body && strcmp(a.body, body)))
        fail_msg("%s: %d '%s', want %d '%s'", path, a.status, a.body, status, body ? body : "(any)");
    md_answer_release(&a);
}

/* Every entry a listing shows answers 200; directories recursively. */
static size_t crawl(const struct md_instance *m, const char *base, int depth)
{
    struct md_answer a = get(m, base);
    size_t n = 0;
    char *rest, *line;

    if (a.status != 200)
        fail_msg("%s listed but answers %d", base, a.status);
    assert_true(depth < 12);
    rest = a.len ? a.body : NULL; /* an empty directory lists nothing */
    while ((line = strsep(&rest, "\n"))) {
        char path[512], *eq = strchr(line, '=');
        size_t l = strlen(line);
        if (!l)
            fail_msg("%s: an empty listing line", base);
        if (eq) /* public-keys: "0=name" addresses "0/" */
            snprintf(path, sizeof(path), "%s%.*s/", base, (int)(eq - line), line);
        else
            snprintf(path, sizeof(path), "%s%s", base, line);
        if (eq || line[l - 1] == '/') {
            n += crawl(m, path, depth + 1);
        } else {
            struct md_answer leaf = get(m, path);
            if (leaf.status != 200)
                fail_msg("%s listed but answers %d", path, leaf.status);
            md_answer_release(&leaf);
            n++;
        }
    }
    md_answer_release(&a);
    return n;
}

static void test_versions(void **state)
{
    struct md_instance *m = fixture(1, 1, true);
    struct md_answer a = get(m, "/");
    static const char *const probed[] = {"2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23", "latest"};

    (void)state;
    assert_int_equal(a.status, 200);
    assert_string_equal(a.content_type, "text/plain");
    assert_true(!strncmp(a.body, "1.0\n2007-01-19\n", 15));
    assert_true(strlen(a.body) > 6 && !strcmp(a.body + strlen(a.body) - 7, "\nlatest"));
    for (size_t i = 0; i < ARRAY_SIZE(probed); i++) {
        char p[64];
        assert_non_null(strstr(a.body, probed[i]));
        snprintf(p, sizeof(p), "/%s/meta-data/instance-id", probed[i]);
        expect(m, p, 200, "i-0000000000000a001");
    }
    md_answer_release(&a);
    expect(m, "/latest", 200, "dynamic\nmeta-data\nuser-data");
    expect(m, "/latest/", 200, "dynamic\nmeta-data\nuser-data");
    expect(m, "/2030-01-01/meta-data/instance-id", 404, NULL);
    expect(m, "/latestx/meta-data/", 404, NULL);
    expect(m, "", 404, NULL);
    expect(m, "latest", 404, NULL);
    md_instance_free(m);
}

static void test_meta_data(void **state)
{
    struct md_instance *m = fixture(2, 2, true);

    (void)state;
    expect(m, "/latest/meta-data/",
           200,
           "ami-id\nami-launch-index\nblock-device-mapping/\nhostname\ninstance-id\ninstance-type\n"
           "local-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\npublic-keys/\nservices/");
    expect(m, "/latest/meta-data", 200, NULL);
    expect(m, "/latest/meta-data/ami-launch-index", 200, "2");
    expect(m, "/latest/meta-data/ami-launch-index/", 404, NULL);
    expect(m, "/latest/meta-data/hostname", 200, "vm1");
    /* primary = lowest device number = the last array entry; MAC in lower case */
    expect(m, "/latest/meta-data/local-ipv4", 200, "10.0.1.5");
    expect(m, "/latest/meta-data/mac", 200, "52:54:00:ab:00:01");
    expect(m, "/latest/meta-data/network/interfaces/macs/", 200, "52:54:00:ab:00:01/\n52:54:00:ab:00:00/");
    expect(m, "/latest/meta-data/network/interfaces/macs/52:54:00:ab:00:00/",
           200,
           "device-number\ninterface-id\nlocal-hostname\nlocal-ipv4s\nmac\nnetwork-card\nsubnet-ipv4-cidr-block");
    expect(m, "/latest/meta-data/network/interfaces/macs/52:54:00:ab:00:00/device-number", 200, "1");
    expect(m, "/latest/meta-data/network/interfaces/macs/52:54:00:ab:00:00/subnet-ipv4-cidr-block", 200,
           "10.0.0.0/24");
    expect(m, "/latest/meta-data/public-keys/", 200, "0=key0\n1=key1");
    expect(m, "/latest/meta-data/public-keys/1/", 200, "openssh-key");
    expect(m, "/latest/meta-data/public-keys/1", 200, "openssh-key");
    expect(m, "/latest/meta-data/public-keys/1/openssh-key", 200, "ssh-ed25519 AAAA1 user@host");
    expect(m, "/latest/meta-data/public-keys/2/openssh-key", 404, NULL);
    expect(m, "/latest/meta-data/placement/availability-zone", 200, "eu-west-1b");
    expect(m, "/latest/meta-data/block-device-mapping/", 200, "ami\nroot");
    expect(m, "/latest/meta-data/services/domain", 200, NULL);
    expect(m, "/latest/meta-data//hostname", 404, NULL);
    expect(m, "/latest/meta-data/nothing", 404, NULL);
    md_instance_free(m);
}

static void test_listed_keys_answer(void **state)
{
    static const struct { size_t ifaces, keys; bool ud; } shapes[] = {
        {0, 0, false}, {1, 0, false}, {1, 1, true}, {3, 4, true}, {0, 2, true},
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(shapes); i++) {
        struct md_instance *m = fixture(shapes[i].ifaces, shapes[i].keys, shapes[i].ud);
        size_t n = crawl(m, "/latest/meta-data/", 0);
        assert_true(n >= 10);
        crawl(m, "/2009-04-04/", 0);
        crawl(m, "/latest/dynamic/", 0);
        crawl(m, "/openstack/", 0);
        for (size_t v = 0; v < md_os_n_versions; v++) {
            char p[64];
            snprintf(p, sizeof(p), "/openstack/%s/", md_os_versions[v]);
            crawl(m, p, 0);
        }
        if (!shapes[i].keys)
            expect(m, "/latest/meta-data/public-keys/", 404, NULL);
        md_instance_free(m);
    }
}

static void test_user_data(void **state)
{
    struct md_instance *m = fixture(1, 1, true), *none = fixture(1, 1, false);
    struct md_answer a = get(m, "/latest/user-data");

    (void)state;
    assert_int_equal(a.status, 200);
    assert_string_equal(a.content_type, "application/octet-stream");
    assert_int_equal(a.len, 5);
    assert_memory_equal(a.body, "#!\0\xff\n", 5);
    md_answer_release(&a);
    a = get(m, "/openstack/latest/user_data");
    assert_int_equal(a.status, 200);
    assert_int_equal(a.len, 5);
    md_answer_release(&a);
    expect(none, "/latest/user-data", 404, NULL);
    expect(none, "/2009-04-04/", 200, "dynamic\nmeta-data");
    expect(none, "/openstack/latest/user_data", 404, NULL);
    expect(none, "/openstack/latest", 200, "meta_data.json\nvendor_data.json\nnetwork_data.json\nvendor_data2.json");
    md_instance_free(m);
    md_instance_free(none);
}

static json_t *get_json(const struct md_instance *m, const char *path)
{
    struct md_answer a = get(m, path);
    json_error_t e;
    json_t *j;

    assert_int_equal(a.status, 200);
    j = json_loadb(a.body, a.len, 0, &e);
    if (!j)
        fail_msg("%s: not JSON: %s", path, e.text);
    md_answer_release(&a);
    return j;
}

static void test_identity(void **state)
{
    struct md_instance *m = fixture(1, 0, false);
    json_t *d = get_json(m, "/latest/dynamic/instance-identity/document");

    (void)state;
    assert_string_equal(json_string_value(json_object_get(d, "instanceId")), "i-0000000000000a001");
    assert_string_equal(json_string_value(json_object_get(d, "privateIp")), "10.0.0.5");
    assert_string_equal(json_string_value(json_object_get(d, "region")), "eu-west-1");
    assert_string_equal(json_string_value(json_object_get(d, "version")), "2017-09-30");
    assert_string_equal(json_string_value(json_object_get(d, "pendingTime")), "2025-12-03T08:00:00Z");
    assert_true(json_is_null(json_object_get(d, "kernelId")));
    json_decref(d);
    expect(m, "/latest/dynamic/", 200, "instance-identity/");
    expect(m, "/latest/dynamic/instance-identity/", 200, "document");
    md_instance_free(m);
}

static void test_openstack(void **state)
{
    struct md_instance *m = fixture(2, 2, true);
    json_t *md, *nd, *l, *n;

    (void)state;
    expect(m, "/openstack", 200, NULL);
    expect(m, "/openstack/2012-08-10", 200, "meta_data.json\nuser_data");
    expect(m, "/openstack/2015-10-15/", 200, "meta_data.json\nuser_data\nvendor_data.json\nnetwork_data.json");
    expect(m, "/openstack/2012-08-10/network_data.json", 404, NULL);
    expect(m, "/openstack/2099-01-01/meta_data.json", 404, NULL);
    expect(m, "/openstack/latest/password", 404, NULL);
    expect(m, "/openstack/latest/vendor_data.json", 200, "{}");
    expect(m, "/openstackx", 404, NULL);
    md = get_json(m, "/openstack/2012-08-10/meta_data.json");
    assert_null(json_object_get(md, "random_seed"));
    assert_null(json_object_get(md, "project_id"));
    assert_null(json_object_get(md, "devices"));
    json_decref(md);
    md = get_json(m, "/openstack/latest/meta_data.json");
    assert_string_equal(json_string_value(json_object_get(md, "uuid")), m->uuid);
    assert_string_equal(json_string_value(json_object_get(md, "name")), "vm one");
    assert_string_equal(json_string_value(json_object_get(md, "hostname")), "vm1");
    assert_int_equal(json_integer_value(json_object_get(md, "launch_index")), 2);
    assert_string_equal(json_string_value(json_object_get(md, "project_id")), "p1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "public_keys"), "key1")),
                        "ssh-ed25519 AAAA1 user@host");
    assert_int_equal(json_array_size(json_object_get(md, "keys")), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(md, "keys"), 0), "type")),
                        "ssh");
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "meta"), "role")), "web");
    assert_int_equal(strlen(json_string_value(json_object_get(md, "random_seed"))), 684); /* 512 bytes */
    json_decref(md);
    nd = get_json(m, "/openstack/latest/network_data.json");
    assert_int_equal(json_array_size(json_object_get(nd, "links")), 2);
    l = json_array_get(json_object_get(nd, "links"), 1);
    assert_string_equal(json_string_value(json_object_get(l, "ethernet_mac_address")), "52:54:00:AB:00:01");
    assert_int_equal(json_integer_value(json_object_get(l, "mtu")), 1450);
    n = json_array_get(json_object_get(nd, "networks"), 1);
    assert_string_equal(json_string_value(json_object_get(n, "link")), json_string_value(json_object_get(l, "id")));
    assert_string_equal(json_string_value(json_object_get(n, "ip_address")), "10.0.1.5");
    assert_string_equal(json_string_value(json_object_get(n, "netmask")), "255.255.255.0");
    assert_string_equal(json_string_value(json_object_get(n, "type")), "ipv4");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(n, "routes"), 0), "gateway")), "10.0.1.1");
    assert_int_equal(json_array_size(json_object_get(nd, "services")), 1); /* the same resolver once */
    json_decref(nd);
    md_instance_free(m);
}

static void test_no_ip_is_dhcp(void **state)
{
    struct md_instance *m = fixture(1, 0, false);
    json_t *nd, *n;

    (void)state;
    m->ifaces[0].ipv4[0] = '\0';
    nd = get_json(m, "/openstack/latest/network_data.json");
    n = json_array_get(json_object_get(nd, "networks"), 0);
    assert_string_equal(json_string_value(json_object_get(n, "type")), "ipv4_dhcp");
    assert_null(json_object_get(n, "ip_address"));
    json_decref(nd);
    expect(m, "/latest/meta-data/local-ipv4", 404, NULL);
    crawl(m, "/latest/meta-data/", 0);
    md_instance_free(m);
}

static void test_refcount(void **state)
{
    struct md_instance *m = fixture(1, 1, true);

    (void)state;
    assert_ptr_equal(md_instance_ref(m), m);
    assert_ptr_equal(md_instance_ref(m), m);
    md_instance_free(m);
    md_instance_free(m);
    assert_string_equal(m->uuid, "6a6a6a6a-0000-4000-8000-000000000001"); /* still there */
    md_instance_free(m);  /* the last: freed (ASan would see a leak otherwise) */
    md_instance_free(NULL);
}

static void test_ec2_meta_json(void **state)
{
    struct md_instance *m = fixture(1, 1, true);
    json_t *j = md_ec2_meta_json(m), *k;

    (void)state;
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "instance-id")), "i-0000000000000a001");
    k = json_object_get(json_object_get(j, "public-keys"), "0");
    assert_string_equal(json_string_value(json_object_get(k, "openssh-key")), "ssh-ed25519 AAAA0 user@host");
    assert_string_equal(json_string_value(json_object_get(k, "_name")), "0=key0");
    json_decref(j);
    md_instance_free(m);
}

/* Through a connection's cache: the same answers, twice; OpenStack documents
 * kept as first answered (meta_data.json's random_seed too), 404s not kept. */
static void test_cache(void **state)
{
    static const char *const paths[] = {"/latest/meta-data/", "/latest/meta-data/public-keys/0/openssh-key",
                                        "/latest/user-data", "/2009-04-04/meta-data/instance-id", "/nope",
                                        "/openstack", "/openstack/latest/network_data.json",
                                        "/openstack/latest/nothing", "/", "/latest/dynamic/instance-identity/document"};
    struct md_instance *m = fixture(2, 2, true);
    struct md_cache c = {0};
    struct md_answer a, b, x, y;

    (void)state;
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
            assert_int_equal(md_render_cached(m, paths[i], &c, &a), 0);
            b = get(m, paths[i]);
            assert_int_equal(a.status, b.status);
            assert_string_equal(a.content_type, b.content_type);
            if (strcmp(paths[i], "/latest/dynamic/instance-identity/document"))
                assert_memory_equal(a.body, b.body, a.len);
            md_answer_release(&a);
            md_answer_release(&b);
        }
    assert_int_equal(md_render_cached(m, "/openstack/latest/meta_data.json", &c, &x), 0);
    assert_int_equal(md_render_cached(m, "/openstack/latest/meta_data.json", &c, &y), 0);
    assert_int_equal(x.status, 200);
    assert_string_equal(x.content_type, "application/json");
    assert_string_equal(x.body, y.body);
    md_answer_release(&x);
    md_answer_release(&y);
    md_cache_clear(&c);
    md_cache_clear(&c);
    md_instance_free(m);
}

/* An instance's shared cache within a byte budget: what does not fit is
 * answered all the same (rendered per request) and not kept; the budget is
 * shared by every instance charging it and given back when they go; an
 * instance may outlive the budget's owner. */
static void test_cache_budget(void **state)
{
    static const char *const paths[] = {"/latest/meta-data/public-keys/0/openssh-key",
                                        "/openstack/latest/meta_data.json", "/openstack/2012-08-10/meta_data.json",
                                        "/openstack/latest/network_data.json"};
    struct md_instance *m1 = fixture(1, 2, true), *m2 = fixture(1, 2, true);
    struct md_budget *b;
    struct md_cache *c1, *c2;
    struct md_answer a, x;
    size_t one;

    (void)state;
    /* unbounded per instance: what one instance keeps */
    assert_non_null(b = md_budget_new(SIZE_MAX / 2, SIZE_MAX / 2));
    assert_non_null(c1 = md_instance_cache(m1, b));
    assert_ptr_equal(md_instance_cache(m1, b), c1); /* one per instance */
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
        assert_int_equal(md_render_cached(m1, paths[i], c1, &a), 0);
        assert_int_equal(a.status, 200);
        md_answer_release(&a);
    }
    one = c1->bytes;
    assert_true(one > 0 && b->used == one);
    md_instance_free(m1); /* gives it back */
    assert_int_equal(b->used, 0);
    md_budget_unref(b);

    /* room for about one instance's: the second keeps what is left, both answer */
    m1 = fixture(1, 2, true);
    assert_non_null(b = md_budget_new(one + one / 4, one));
    c1 = md_instance_cache(m1, b);
    c2 = md_instance_cache(m2, b);
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
            assert_int_equal(md_render_cached(m1, paths[i], c1, &a), 0); /* (m1 first: all kept) */
            assert_int_equal(md_render_cached(m2, paths[i], round ? c2 : NULL, &x), 0);
            assert_int_equal(a.status, 200);
            assert_int_equal(x.status, 200);
            if (!strstr(paths[i], "meta_data.json")) /* (random_seed differs) */
                assert_memory_equal(a.body, x.body, a.len);
            md_answer_release(&a);
            md_answer_release(&x);
        }
    assert_int_equal(c1->bytes, one);
    assert_true(c2->bytes > 0 && c2->bytes <= one / 4);
    assert_true(b->used <= b->total && b->used == c1->bytes + c2->bytes);
    md_budget_unref(b); /* the owner goes first: the instances keep it */
    md_instance_free(m2);
    assert_int_equal(b->used, one);
    md_instance_free(m1);

    /* nothing fits: every answer rendered, nothing kept */
    m1 = fixture(1, 2, true);
    assert_non_null(b = md_budget_new(16, 16));
    c1 = md_instance_cache(m1, b);
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
        assert_int_equal(md_render_cached(m1, paths[i], c1, &a), 0);
        assert_int_equal(a.status, 200);
        md_answer_release(&a);
    }
    assert_int_equal(c1->bytes, 0);
    assert_null(c1->ec2);
    assert_null(c1->docs);
    md_budget_unref(b);
    md_instance_free(m1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions),       cmocka_unit_test(test_meta_data),
        cmocka_unit_test(test_listed_keys_answer), cmocka_unit_test(test_user_data),
        cmocka_unit_test(test_identity),       cmocka_unit_test(test_openstack),
        cmocka_unit_test(test_no_ip_is_dhcp),  cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_ec2_meta_json), cmocka_unit_test(test_cache), cmocka_unit_test(test_cache_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
