/* Unit tests: domain XML for each driver as the drivers compose it from the
 * element writers (every value escaped, identity in our metadata namespace,
 * read back), from a guest described by agent/guest.c. The driver table
 * itself is tested in test_hv.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <libxml/parser.h>
#include <stdlib.h>
#include <string.h>

#include "agent/guest.h"
#include "agent/hypervisor/hv-internal.h"
#include "agent/ops/ops-internal.h"

/* A connection object (never connected) for a driver, with the domain type
 * its probe would set. */
static struct hv *hv_for(uv_loop_t *loop, const struct hv_driver *drv, const char *type)
{
    struct hv_config cfg = {.domain_type = "auto"};
    struct hv *hv = NULL;

    assert_int_equal(hv_new(loop, drv, &cfg, NULL, NULL, &hv), 0);
    hv_set_domain_type(hv, type, "unit test");
    return hv;
}

static void hv_done(uv_loop_t *loop, struct hv *hv)
{
    hv_free(hv);
    uv_run(loop, UV_RUN_DEFAULT);
}

/* The driver's XML for an instance (disk given or not), owner as given. */
static char *xml_of(struct hv *hv, const struct instance *i, const char *disk_format,
                    const char *console, const struct hv_owner *owner)
{
    struct instance copy;
    struct guest g;
    struct hv_guest hg;
    struct agent_error err;
    char *xml = NULL;

    assert_int_equal(instance_copy(&copy, i), 0);
    if (console)
        copy.console_log = strdup(console);
    hg = *guest_describe(&copy, disk_format, &g);
    hg.owner = owner;
    if (hv_driver(hv)->domain_xml(hv, &hg, &xml, &err) < 0)
        fail_msg("domain_xml: %s", err.message);
    instance_release(&copy);
    return xml;
}

static void make(struct instance *i, enum boot_kind kind)
{
    memset(i, 0, sizeof(*i));
    strscpy(i->uuid, "0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11", sizeof(i->uuid));
    strscpy(i->ec2_id, "i-0123456789abcdef0", sizeof(i->ec2_id));
    i->name = strdup("evil <name> & \"quotes\" ]]> '");
    i->flavor = (struct flavor){2, 512, 4};
    i->instance_type = strdup("t3.micro");
    i->boot.kind = kind;
    if (kind == BOOT_KERNEL) {
        i->boot.kernel = strdup("/k/vmlinuz");
        i->boot.initrd = strdup("/k/initrd.gz");
        i->boot.cmdline = strdup("console=ttyS0 x=\"<&>\"");
    } else {
        i->boot.image_path = strdup("/images/a&b.qcow2");
    }
}

/* Parse XML; return the text of the first element named name (owned). */
static char *first_text(const char *xml, const char *name)
{
    xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "d.xml", NULL, XML_PARSE_NONET);
    xmlNodePtr stack[64];
    int top = 0;
    char *r = NULL;

    assert_non_null(doc);
    stack[top++] = xmlDocGetRootElement(doc);
    while (top && !r) {
        xmlNodePtr n = stack[--top];
        for (; n; n = n->next) {
            if (n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name)) {
                xmlChar *t = xmlNodeGetContent(n);
                r = strdup((const char *)t);
                xmlFree(t);
                break;
            }
            if (n->children && top < 63)
                stack[top++] = n->children;
        }
    }
    xmlFreeDoc(doc);
    return r;
}

static int parse(const char *xml, struct instance *id, struct hv_owner *own, struct agent_error *err);

static void test_kvm_kernel(void **state)
{
    uv_loop_t loop;
    struct hv *hv;
    struct instance i, back;
    char *xml = NULL, *t, *meta;
    struct agent_error err;

    (void)state;
    uv_loop_init(&loop);
    hv = hv_for(&loop, &hv_driver_kvm, "qemu");
    make(&i, BOOT_KERNEL);
    xml = xml_of(hv, &i, NULL, "/var/lib/x/console.log", NULL);
    assert_non_null(strstr(xml, "<domain type=\"qemu\">"));
    t = first_text(xml, "title");
    assert_string_equal(t, i.name); /* escaped on the way in, same on the way out */
    free(t);
    t = first_text(xml, "cmdline");
    assert_string_equal(t, "console=ttyS0 x=\"<&>\"");
    free(t);
    t = first_text(xml, "name");
    assert_string_equal(t, "i-0123456789abcdef0");
    free(t);
    assert_non_null(strstr(xml, "<serial type=\"pty\">"));
    /* logged once, by the serial port (the console is its alias) */
    t = strstr(xml, "<log file=\"/var/lib/x/console.log\" append=\"on\"/>");
    assert_non_null(t);
    assert_true(t > strstr(xml, "<serial") && t < strstr(xml, "</serial>"));
    assert_null(strstr(t + 1, "<log "));
    assert_non_null(strstr(xml, "<type arch=\"x86_64\" machine=\"pc\">hvm</type>"));
    assert_non_null(strstr(xml, "<memory unit=\"MiB\">512</memory>"));
    assert_non_null(strstr(xml, "<vcpu placement=\"static\">2</vcpu>"));
    assert_null(strstr(xml, "currentMemory")); /* no headroom yet: max == current */
    assert_non_null(strstr(xml, "<memballoon model=\"virtio\"/>"));
    assert_null(strstr(xml, "<disk")); /* kernel boot without an image: no disk */
    assert_non_null(strstr(xml, CA_XMLNS_URI));
    /* the metadata element alone, as virDomainGetMetadata returns it */
    meta = strstr(xml, "<ca:instance");
    assert_non_null(meta);
    {
        char *end = strstr(meta, "</ca:instance>");
        size_t len = (size_t)(end - meta) + strlen("</ca:instance>");
        char *frag = strndup(meta, len);
        struct hv_owner own;
        assert_int_equal(parse(frag, &back, &own, &err), 0);
        assert_string_equal(own.host, ""); /* no owner given */
        assert_string_equal(back.uuid, i.uuid);
        assert_string_equal(back.ec2_id, i.ec2_id);
        assert_string_equal(back.name, i.name);
        assert_int_equal(back.flavor.memory_mb, 512);
        assert_string_equal(back.instance_type, "t3.micro");
        assert_int_equal(back.boot.kind, BOOT_KERNEL);
        assert_string_equal(back.boot.cmdline, i.boot.cmdline);
        instance_release(&back);
        free(frag);
    }
    free(xml);
    instance_release(&i);
    hv_done(&loop, hv);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Issue 10: NICs as existing taps (type ethernet, managed no, MAC, virtio,
 * MTU from the port or its network), the SMBIOS system block with
 * <os><smbios mode='sysinfo'/>, the config drive as a read-only IDE cdrom
 * on pc. */
static void test_kvm_net_sysinfo_config_drive(void **state)
{
    uv_loop_t loop;
    struct hv *hv;
    struct instance i;
    struct guest g;
    struct agent_error err;
    struct net_config nets[1] = {{.name = "n1", .mtu = 1450}};
    struct guest_env env = {.smbios_manufacturer = "compute-agent", .smbios_product = "OpenStack Nova",
                            .config_drive_path = "/s/instances/x/config.iso", .nets = nets, .n_nets = 1};
    char *xml = NULL, *t;

    (void)state;
    uv_loop_init(&loop);
    hv = hv_for(&loop, &hv_driver_kvm, "qemu");
    make(&i, BOOT_IMAGE);
    i.disk_path = strdup("/s/instances/x/disk.qcow2");
    i.config_drive = true;
    i.n_ports = 2;
    i.ports = calloc(2, sizeof(*i.ports));
    strscpy(i.ports[0].network, "n1", sizeof(i.ports[0].network));
    strscpy(i.ports[0].mac, "fa:16:3e:00:00:01", sizeof(i.ports[0].mac));
    strscpy(i.ports[0].device, "tap0a1441a4-53", sizeof(i.ports[0].device));
    strscpy(i.ports[1].network, "n1", sizeof(i.ports[1].network));
    strscpy(i.ports[1].mac, "fa:16:3e:00:00:02", sizeof(i.ports[1].mac));
    strscpy(i.ports[1].device, "tapb72941b9-d2", sizeof(i.ports[1].device));
    i.ports[1].mtu = 1400;
    i.ports[1].index = 1;
    uuid_generate_str(i.ports[0].port_id);
    uuid_generate_str(i.ports[1].port_id);
    strscpy(i.ports[0].ip, "10.0.0.5", sizeof(i.ports[0].ip));
    guest_describe(&i, "qcow2", &g);
    guest_describe_net(&i, &env, &g);
    assert_int_equal(g.hv.n_nics, 2);
    assert_int_equal(hv_driver(hv)->domain_xml(hv, &g.hv, &xml, &err), 0);
    assert_non_null(strstr(xml, "<interface type=\"ethernet\">"));
    assert_non_null(strstr(xml, "<mac address=\"fa:16:3e:00:00:01\"/>"));
    assert_non_null(strstr(xml, "<target dev=\"tap0a1441a4-53\" managed=\"no\"/>"));
    assert_non_null(strstr(xml, "<model type=\"virtio\"/>"));
    assert_non_null(strstr(xml, "<mtu size=\"1450\"/>")); /* the network's */
    assert_non_null(strstr(xml, "<mtu size=\"1400\"/>")); /* the port's */
    assert_non_null(strstr(xml, "<sysinfo type=\"smbios\">"));
    assert_non_null(strstr(xml, "<entry name=\"product\">OpenStack Nova</entry>"));
    assert_non_null(strstr(xml, "<entry name=\"manufacturer\">compute-agent</entry>"));
    assert_non_null(strstr(xml, "<entry name=\"uuid\">0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11</entry>"));
    assert_non_null(strstr(xml, "<entry name=\"serial\">0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11</entry>"));
    assert_non_null(strstr(xml, "<entry name=\"family\">Virtual Machine</entry>"));
    assert_non_null(strstr(xml, "<smbios mode=\"sysinfo\"/>"));
    assert_non_null(strstr(xml, "<disk type=\"file\" device=\"cdrom\">"));
    assert_non_null(strstr(xml, "<source file=\"/s/instances/x/config.iso\"/>"));
    assert_non_null(strstr(xml, "<target dev=\"hdc\" bus=\"ide\"/>"));
    assert_non_null(strstr(xml, "<readonly/>"));
    t = first_text(xml, "product");
    free(t);
    {
        /* the ports ride in our metadata: an adopted instance gets them back */
        char *m = strstr(xml, "<ca:instance"), *e = m ? strstr(m, "</ca:instance>") : NULL, *meta;
        struct instance back;
        struct hv_owner own;
        assert_non_null(e);
        meta = strndup(m, (size_t)(e - m) + strlen("</ca:instance>"));
        assert_int_equal(parse(meta, &back, &own, &err), 0);
        assert_int_equal(back.n_ports, 2);
        assert_string_equal(back.ports[0].mac, "fa:16:3e:00:00:01");
        assert_string_equal(back.ports[1].device, "tapb72941b9-d2");
        assert_int_equal(back.ports[1].mtu, 1400);
        assert_int_equal(back.ports[1].index, 1);
        assert_string_equal(back.ports[0].ip, "10.0.0.5");
        assert_string_equal(back.ports[1].ip, "");
        assert_string_equal(back.ports[0].port_id, i.ports[0].port_id);
        instance_release(&back);
        free(meta);
    }
    free(xml);
    xml = NULL;
    /* the test driver: the same NICs (its ports are veth pairs: nic_veth) */
    hv_done(&loop, hv);
    hv = hv_for(&loop, &hv_driver_test, "test");
    assert_true(hv_driver_test.features & HV_FEAT_BIT(HV_FEAT_NIC_VETH));
    assert_false(hv_driver_kvm.features & HV_FEAT_BIT(HV_FEAT_NIC_VETH));
    assert_int_equal(hv_driver(hv)->domain_xml(hv, &g.hv, &xml, &err), 0);
    assert_non_null(strstr(xml, "<target dev=\"tapb72941b9-d2\" managed=\"no\"/>"));
    assert_non_null(strstr(xml, "<smbios mode=\"sysinfo\"/>"));
    free(xml);
    instance_release(&i);
    hv_done(&loop, hv);
    uv_loop_close(&loop);
}

static void test_xen(void **state)
{
    uv_loop_t loop;
    struct hv *hv;
    struct instance i;
    char *xml = NULL, *t;

    (void)state;
    uv_loop_init(&loop);
    hv = hv_for(&loop, &hv_driver_xen, "xen");
    make(&i, BOOT_KERNEL);
    i.disk_path = strdup("/d&.qcow2");
    xml = xml_of(hv, &i, "qcow2", "/c.log", NULL);
    t = first_text(xml, "type");
    assert_string_equal(t, "xen"); /* PV */
    free(t);
    assert_non_null(strstr(xml, "dev=\"xvda\""));
    assert_non_null(strstr(xml, "file=\"/d&amp;.qcow2\""));
    assert_null(strstr(xml, "<acpi"));
    assert_non_null(strstr(xml, "<target type=\"xen\" port=\"0\"/>"));
    /* PV: the xen console (hvc0) is the one logged */
    t = strstr(xml, "<log file=\"/c.log\" append=\"on\"/>");
    assert_non_null(t);
    assert_true(t > strstr(xml, "<console type=\"pty\">") && t < strstr(xml, "</console>"));
    assert_null(strstr(t + 1, "<log "));
    assert_non_null(strstr(xml, "<memballoon model=\"xen\"/>"));
    free(xml);
    instance_release(&i);
    make(&i, BOOT_IMAGE);
    i.disk_path = strdup("/d&.qcow2");
    xml = xml_of(hv, &i, "qcow2", "/c.log", NULL);
    t = first_text(xml, "type");
    assert_string_equal(t, "hvm");
    free(t);
    assert_non_null(strstr(xml, "machine=\"xenfv\""));
    assert_non_null(strstr(xml, "<boot dev=\"hd\"/>"));
    /* libxl refuses a virtio balloon: HVM asks for Xen's */
    assert_null(strstr(xml, "virtio"));
    assert_non_null(strstr(xml, "<memballoon model=\"xen\"/>"));
    free(xml);
    instance_release(&i);
    hv_done(&loop, hv);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- metadata read back (outside input) ---- */

#define U "0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11"
#define HU "fa46402c-40dc-41fb-b44f-d3ad2f094442"
#define FLAVOR "<flavor vcpus=\"2\" memory_mb=\"512\" disk_gb=\"4\"/>"
#define KERNEL "<kernel path=\"/k/vmlinuz\" initrd=\"/k/initrd.gz\" cmdline=\"console=ttyS0\"/>"
#define IDENT "<uuid>" U "</uuid><ec2-id>i-0123456789abcdef0</ec2-id><name>web 1</name>"
/* What libvirt 9.0 returns for our element: no prefix, no namespace declaration. */
#define BARE(body) "<instance>\n  " body "\n</instance>\n"

/* What adoption does with it: the hypervisor layer reads the fields back
 * (hv_meta_parse), the agent makes them an instance (ops_instance_from_meta). */
static int parse(const char *xml, struct instance *id, struct hv_owner *own, struct agent_error *err)
{
    struct hv_meta m = {0};
    int r;

    memset(err, 0, sizeof(*err));
    r = hv_meta_parse(xml, &m, own, err);
    if (r == 0) {
        r = ops_instance_from_meta(&m, NULL, id, err);
        hv_meta_release(&m);
    }
    return r;
}

/* The element exactly as this libvirtd hands it back (no xmlns), and as we
 * write it (with ours); the owner comes back. */
static void test_metadata_namespaces(void **state)
{
    struct instance i, back;
    struct hv_owner self = {"node-7", HU}, own;
    struct agent_error err;
    char *xml = NULL, *m, *e, *frag;
    uv_loop_t loop;
    struct hv *hv;

    (void)state;
    assert_int_equal(parse(BARE(IDENT "<host name=\"node-7\" uuid=\"" HU "\"/>" FLAVOR KERNEL), &back,
                           &own, &err), 0);
    assert_string_equal(back.uuid, U);
    assert_string_equal(back.ec2_id, "i-0123456789abcdef0");
    assert_string_equal(back.name, "web 1");
    assert_int_equal(back.flavor.vcpus, 2);
    assert_int_equal(back.flavor.memory_mb, 512);
    assert_int_equal(back.flavor.disk_gb, 4);
    assert_null(back.instance_type);
    assert_int_equal(back.boot.kind, BOOT_KERNEL);
    assert_string_equal(back.boot.kernel, "/k/vmlinuz");
    assert_string_equal(own.host, "node-7");
    assert_string_equal(own.host_uuid, HU);
    instance_release(&back);

    /* written by the kvm driver: prefixed, declared, owner recorded */
    make(&i, BOOT_IMAGE);
    uv_loop_init(&loop);
    hv = hv_for(&loop, &hv_driver_kvm, "qemu");
    xml = xml_of(hv, &i, NULL, NULL, &self);
    hv_done(&loop, hv);
    assert_int_equal(uv_loop_close(&loop), 0);
    m = strstr(xml, "<ca:instance");
    e = strstr(xml, "</ca:instance>");
    assert_non_null(m);
    assert_non_null(e);
    frag = strndup(m, (size_t)(e - m) + strlen("</ca:instance>"));
    assert_non_null(strstr(frag, "<ca:host name=\"node-7\" uuid=\"" HU "\"/>"));
    assert_int_equal(parse(frag, &back, &own, &err), 0);
    assert_string_equal(own.host, "node-7");
    assert_string_equal(own.host_uuid, HU);
    assert_int_equal(back.boot.kind, BOOT_IMAGE);
    assert_string_equal(back.boot.image_path, "/images/a&b.qcow2");
    assert_string_equal(back.instance_type, "t3.micro");
    assert_string_equal(back.name, i.name);
    instance_release(&back);
    free(frag);
    free(xml);
    instance_release(&i);

    /* a default namespace that is ours is ours too */
    assert_int_equal(parse("<instance xmlns=\"" CA_XMLNS_URI "\">" IDENT FLAVOR KERNEL "</instance>",
                           &back, &own, &err), 0);
    assert_string_equal(own.host, ""); /* written before owners were recorded */
    instance_release(&back);
    /* another namespace is not */
    assert_int_equal(parse("<instance xmlns=\"urn:other\">" IDENT FLAVOR KERNEL "</instance>", &back,
                           &own, &err), -EINVAL);
    assert_int_equal(parse("<o:instance xmlns:o=\"urn:other\">" IDENT FLAVOR KERNEL "</o:instance>",
                           &back, &own, &err), -EINVAL);
    /* children of another namespace are not read: here that leaves no uuid */
    assert_int_equal(parse(BARE("<o:uuid xmlns:o=\"urn:other\">" U "</o:uuid><ec2-id>i-0123456789abcdef0"
                                "</ec2-id><name>n</name>" FLAVOR KERNEL), &back, &own, &err), -EINVAL);
    /* an unknown element from a newer writer is ignored */
    assert_int_equal(parse(BARE(IDENT "<future x=\"1\"/>" FLAVOR KERNEL), &back, &own, &err), 0);
    instance_release(&back);
}

/* A domain of another host parses (the caller decides not to adopt it). */
static void test_metadata_foreign_host(void **state)
{
    struct instance back;
    struct hv_owner own;
    struct agent_error err;

    (void)state;
    assert_int_equal(parse(BARE(IDENT "<host name=\"other-node\"/>" FLAVOR KERNEL), &back, &own, &err), 0);
    assert_string_equal(own.host, "other-node");
    assert_string_equal(own.host_uuid, "");
    instance_release(&back);
}

/* Garbage and invalid fields are refused as a whole, saying which field. */
static void test_metadata_refused(void **state)
{
    static const struct {
        const char *xml;
        const char *says;
    } bad[] = {
        {"", "well-formed"},
        {"<instance", "well-formed"},
        {"<x/>", "<instance>"},
        {"<!DOCTYPE instance [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><instance>" IDENT
         "<host name=\"&e;\"/>" FLAVOR KERNEL "</instance>", "metadata: "},
        {"<!DOCTYPE instance [<!ENTITY e \"x\">]><instance><uuid>" U "</uuid><ec2-id>i-0123456789abcdef0"
         "</ec2-id><name>&e;</name>" FLAVOR KERNEL "</instance>", "DTD"},
        {BARE("<uuid>not-a-uuid</uuid><ec2-id>i-0123456789abcdef0</ec2-id><name>n</name>" FLAVOR KERNEL), "uuid"},
        {BARE("<uuid>" U "</uuid><ec2-id>i-XYZ</ec2-id><name>n</name>" FLAVOR KERNEL), "ec2-id"},
        {BARE("<uuid>" U "</uuid><ec2-id>i-0123456789abcdef0</ec2-id><name></name>" FLAVOR KERNEL), "name"},
        {BARE("<uuid>" U "</uuid><ec2-id>i-0123456789abcdef0</ec2-id><name>a&#1;b</name>" FLAVOR KERNEL), "well-formed"},
        {BARE("<uuid>" U "</uuid><ec2-id>i-0123456789abcdef0</ec2-id>"
              "<name>0123456789012345678901234567890123456789012345678901234567890123</name>" FLAVOR KERNEL), "name"},
        {BARE("<uuid>" U "</uuid><ec2-id>i-0123456789abcdef0</ec2-id>" FLAVOR KERNEL), "missing"},
        {BARE(IDENT IDENT FLAVOR KERNEL), "twice"},
        {BARE(IDENT KERNEL), "flavor missing"},
        {BARE(IDENT "<flavor vcpus=\"lots\" memory_mb=\"512\" disk_gb=\"4\"/>" KERNEL), "vcpus"},
        {BARE(IDENT "<flavor vcpus=\"0\" memory_mb=\"512\" disk_gb=\"4\"/>" KERNEL), "vcpus"},
        {BARE(IDENT "<flavor vcpus=\"2\" memory_mb=\"-5\" disk_gb=\"4\"/>" KERNEL), "memory_mb"},
        {BARE(IDENT "<flavor vcpus=\"2\" memory_mb=\"512\"/>" KERNEL), "disk_gb"},
        {BARE(IDENT "<flavor vcpus=\"2\" memory_mb=\"512\" disk_gb=\"99999999999999999999\"/>" KERNEL), "disk_gb"},
        {BARE(IDENT FLAVOR), "boot source"},
        {BARE(IDENT FLAVOR "<kernel path=\"vmlinuz\"/>"), "path"},
        {BARE(IDENT FLAVOR "<kernel path=\"/k/../etc/x\"/>"), "path"},
        {BARE(IDENT FLAVOR "<kernel/>"), "path"},
        {BARE(IDENT FLAVOR "<kernel path=\"/k\" initrd=\"rel\"/>"), "initrd"},
        {BARE(IDENT FLAVOR "<image/>"), "image"},
        {BARE(IDENT FLAVOR "<image path=\"/a\" url=\"http://x/a\"/>"), "image"},
        {BARE(IDENT FLAVOR "<image id=\"c1\" digest=\"sha256:00\"/>"), "image"},
        {BARE(IDENT FLAVOR "<image path=\"/a\" id=\"c1\"/>"), "image"},
        {BARE(IDENT "<host name=\"\"/>" FLAVOR KERNEL), "host"},
        {BARE(IDENT "<host/>" FLAVOR KERNEL), "name"},
        {BARE(IDENT "<host name=\"n\" uuid=\"nope\"/>" FLAVOR KERNEL), "uuid"},
    };
    struct instance back;
    struct hv_owner own;
    struct agent_error err;

    (void)state;
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        memset(&back, 0x5a, sizeof(back));
        if (parse(bad[k].xml, &back, &own, &err) != -EINVAL || !strstr(err.message, bad[k].says))
            fail_msg("case %zu accepted or wrong reason (%s): %s", k, err.message, bad[k].xml);
        assert_int_equal(((unsigned char *)&back)[0], 0x5a); /* nothing written */
    }
    {
        /* too large: refused before parsing */
        size_t n = 70 * 1024;
        char *big = malloc(n + 1);
        memset(big, ' ', n);
        memcpy(big, "<instance>", 10);
        memcpy(big + n - 11, "</instance>", sizeof "</instance>");
        assert_int_equal(parse(big, &back, &own, &err), -EINVAL);
        assert_non_null(strstr(err.message, "too large"));
        free(big);
    }
}

/* The uuid in the metadata must be the domain's; <host> given twice is
 * refused by the hypervisor layer itself. */
static void test_metadata_domain_uuid(void **state)
{
    struct hv_meta m = {0};
    struct hv_owner own;
    struct instance back;
    struct agent_error err = {0};

    (void)state;
    assert_int_equal(hv_meta_parse(BARE(IDENT "<host name=\"n\"/>" FLAVOR KERNEL "<future a=\"1\" b=\"\"/>"),
                                   &m, &own, &err), 0);
    assert_int_equal(m.n, 6); /* host is the owner, not an item */
    assert_null(hv_meta_get(&m, "host", NULL));
    assert_string_equal(hv_meta_attr(hv_meta_get(&m, "future", NULL), "b"), "");
    assert_string_equal(hv_meta_get(&m, "name", NULL)->text, "web 1");
    assert_int_equal(ops_instance_from_meta(&m, "11111111-2222-4333-8444-555555555555", &back, &err), -EINVAL);
    assert_non_null(strstr(err.message, "does not match the domain's"));
    assert_int_equal(ops_instance_from_meta(&m, U, &back, &err), 0);
    assert_string_equal(back.uuid, U);
    instance_release(&back);
    hv_meta_release(&m);
    assert_int_equal(m.n, 0);
    assert_int_equal(hv_meta_parse(BARE(IDENT "<host name=\"n\"/><host name=\"n\"/>" FLAVOR KERNEL), &m, &own,
                                   &err), -EINVAL);
    assert_non_null(strstr(err.message, "host given twice"));
}

static void test_caps_host_uuid(void **state)
{
    char buf[37];

    (void)state;
    domxml_caps_host_uuid("<capabilities><host><uuid>" HU "</uuid><cpu/></host></capabilities>", buf);
    assert_string_equal(buf, HU);
    domxml_caps_host_uuid("<capabilities><host><cpu/></host></capabilities>", buf);
    assert_string_equal(buf, "");
    domxml_caps_host_uuid("<capabilities><host><uuid>junk</uuid></host></capabilities>", buf);
    assert_string_equal(buf, "");
    domxml_caps_host_uuid(NULL, buf);
    assert_string_equal(buf, "");
}

/* ---- headroom for live resize (issue 12) ---- */

/* The kvm driver's XML for the kernel-boot instance with these ceilings. */
static char *kvm_xml_with(struct hv *hv, unsigned maxv, uint64_t maxmem)
{
    struct instance i, copy;
    struct guest g;
    struct hv_guest hg;
    struct agent_error err;
    char *xml = NULL;

    make(&i, BOOT_KERNEL);
    assert_int_equal(instance_copy(&copy, &i), 0);
    hg = *guest_describe(&copy, NULL, &g);
    hg.max_vcpus = maxv;
    hg.max_memory_mib = maxmem;
    if (hv_driver(hv)->domain_xml(hv, &hg, &xml, &err) < 0)
        fail_msg("domain_xml: %s", err.message);
    instance_release(&copy);
    instance_release(&i);
    return xml;
}

static void expect_in(const char *xml, const char *s)
{
    if (!strstr(xml, s))
        fail_msg("missing %s in:\n%s", s, xml);
}

static void expect_not_in(const char *xml, const char *s)
{
    if (strstr(xml, s))
        fail_msg("unexpected %s in:\n%s", s, xml);
}

static void test_kvm_headroom(void **state)
{
    uv_loop_t loop;
    struct hv *hv;
    char *xml;

    (void)state;
    uv_loop_init(&loop);
    hv = hv_for(&loop, &hv_driver_kvm, "qemu");
    /* 2 of 4 vCPUs, 512 of 1024 MiB */
    xml = kvm_xml_with(hv, 4, 1024);
    expect_in(xml, "<vcpu placement=\"static\" current=\"2\">4</vcpu>");
    expect_in(xml, "<vcpus>");
    expect_in(xml, "<vcpu id=\"0\" enabled=\"yes\" hotpluggable=\"no\" order=\"1\"/>");
    expect_in(xml, "<vcpu id=\"1\" enabled=\"yes\" hotpluggable=\"yes\" order=\"2\"/>");
    expect_in(xml, "<vcpu id=\"2\" enabled=\"no\" hotpluggable=\"yes\"/>");
    expect_in(xml, "<vcpu id=\"3\" enabled=\"no\" hotpluggable=\"yes\"/>");
    expect_not_in(xml, "<vcpu id=\"4\"");
    expect_in(xml, "<maxMemory slots=\"1\" unit=\"MiB\">1024</maxMemory>");
    expect_in(xml, "<memory unit=\"MiB\">1024</memory>");
    expect_in(xml, "<currentMemory unit=\"MiB\">512</currentMemory>");
    expect_in(xml, "<cpu>");
    expect_in(xml, "<cell id=\"0\" cpus=\"0-3\" memory=\"512\" unit=\"MiB\"/>");
    expect_in(xml, "<memory model=\"virtio-mem\">");
    expect_in(xml, "<size unit=\"MiB\">512</size>");
    expect_in(xml, "<node>0</node>");
    expect_in(xml, "<block unit=\"KiB\">2048</block>");
    expect_in(xml, "<requested unit=\"MiB\">0</requested>");
    expect_in(xml, "<alias name=\"" DOMXML_VMEM_ALIAS "\"/>");
    expect_in(xml, "<memballoon model=\"virtio\"/>"); /* below the boot memory */
    /* the virtio-mem device is among the devices */
    assert_true(strstr(xml, "<memory model=\"virtio-mem\">") > strstr(xml, "<devices>"));
    free(xml);

    /* a ceiling that is not a whole block: the device rounds up to 2 MiB */
    xml = kvm_xml_with(hv, 2, 515);
    expect_in(xml, "<size unit=\"MiB\">4</size>");
    expect_in(xml, "<maxMemory slots=\"1\" unit=\"MiB\">516</maxMemory>");
    /* vCPUs without headroom: today's <vcpu>, no list */
    expect_in(xml, "<vcpu placement=\"static\">2</vcpu>");
    expect_not_in(xml, "<vcpus>");
    expect_in(xml, "<cell id=\"0\" cpus=\"0-1\" memory=\"512\" unit=\"MiB\"/>");
    free(xml);

    /* vCPU headroom only: the list, no memory devices, no NUMA cell */
    xml = kvm_xml_with(hv, 3, 512);
    expect_in(xml, "<vcpu placement=\"static\" current=\"2\">3</vcpu>");
    expect_in(xml, "<vcpu id=\"2\" enabled=\"no\" hotpluggable=\"yes\"/>");
    expect_in(xml, "<memory unit=\"MiB\">512</memory>");
    expect_not_in(xml, "maxMemory");
    expect_not_in(xml, "virtio-mem");
    expect_not_in(xml, "<numa>");
    expect_not_in(xml, "currentMemory");
    free(xml);

    /* no headroom (max == boot, or 0): exactly the elements of before */
    for (int k = 0; k < 2; k++) {
        xml = kvm_xml_with(hv, k ? 2 : 0, k ? 512 : 0);
        expect_in(xml, "<memory unit=\"MiB\">512</memory>");
        expect_in(xml, "<vcpu placement=\"static\">2</vcpu>");
        expect_in(xml, "<memballoon model=\"virtio\"/>");
        expect_not_in(xml, "currentMemory");
        expect_not_in(xml, "maxMemory");
        expect_not_in(xml, "<vcpus>");
        expect_not_in(xml, "<cpu>");
        expect_not_in(xml, "virtio-mem");
        free(xml);
    }
    hv_done(&loop, hv);

    /* the test driver: headroom as it always was (it only stores the rest) */
    hv = hv_for(&loop, &hv_driver_test, "test");
    xml = kvm_xml_with(hv, 4, 1024);
    expect_in(xml, "<vcpu placement=\"static\" current=\"2\">4</vcpu>");
    expect_in(xml, "<memory unit=\"MiB\">1024</memory>");
    expect_in(xml, "<currentMemory unit=\"MiB\">512</currentMemory>");
    expect_not_in(xml, "<vcpus>");
    expect_not_in(xml, "maxMemory");
    expect_not_in(xml, "virtio-mem");
    free(xml);
    assert_true(hv_driver_test.features & HV_FEAT_BIT(HV_FEAT_VCPU_UNPLUG));
    assert_false(hv_driver_kvm.features & HV_FEAT_BIT(HV_FEAT_VCPU_UNPLUG));
    assert_false(hv_driver_xen.features & HV_FEAT_BIT(HV_FEAT_VCPU_HOTPLUG));
    assert_string_equal(hv_feature_name(HV_FEAT_VCPU_UNPLUG), "vcpu_unplug");
    hv_done(&loop, hv);
    uv_loop_close(&loop);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "re");
    char *buf = calloc(1, 1 << 20);
    size_t n;

    if (!f)
        fail_msg("cannot open %s (run from the source tree)", path);
    assert_non_null(buf);
    n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* hv_get_size's reading of real libvirt 9.0 documents (tests/unit/data/dom-*.xml:
 * a running kvm guest with headroom, 2 of 4 vCPUs, 512 MiB boot + 188 MiB
 * plugged through virtio-mem, and its persistent definition; the test
 * driver's default domain). */
static void test_size_from_xml(void **state)
{
    struct hv_size s;
    struct hv_size_parts p;
    char *xml, *vmem = NULL;

    (void)state;
    xml = slurp("tests/unit/data/dom-kvm-live.xml");
    assert_int_equal(hv_size_from_xml(xml, true, &s, &p, 4096, &vmem), 0);
    assert_int_equal(s.vcpus, 2);
    assert_int_equal(s.max_vcpus, 4);
    assert_int_equal(s.memory_mib, 700);
    assert_int_equal(s.requested_mib, 700);
    assert_int_equal(s.max_memory_mib, 1024);
    assert_true(s.live_vcpus && s.live_memory);
    assert_int_equal(p.boot_kib, 512 * 1024);
    assert_int_equal(p.balloon_kib, 512 * 1024);
    assert_true(p.vmem);
    assert_int_equal(p.vmem_cur_kib, 188 * 1024);
    /* the element to send back: as dumpxml has it, <requested> replaced,
     * <current> gone, its alias and address kept (libvirt and QEMU find it
     * by them) */
    assert_non_null(vmem);
    expect_in(vmem, "<requested unit=\"KiB\">4096</requested>");
    expect_not_in(vmem, "<current");
    expect_in(vmem, "ua-ca-vmem0");
    expect_in(vmem, "<address type=\"pci\"");
    free(vmem);
    free(xml);

    xml = slurp("tests/unit/data/dom-kvm-inactive.xml");
    assert_int_equal(hv_size_from_xml(xml, false, &s, &p, 0, NULL), 0);
    assert_int_equal(s.vcpus, 2);
    assert_int_equal(s.memory_mib, 700); /* boots with what was requested */
    assert_int_equal(s.max_memory_mib, 1024);
    assert_int_equal(p.balloon_kib, 512 * 1024); /* persistent currentMemory: the balloon alone */
    free(xml);

    xml = slurp("tests/unit/data/dom-test.xml");
    assert_int_equal(hv_size_from_xml(xml, true, &s, NULL, 0, &vmem), 0);
    assert_null(vmem);
    assert_int_equal(s.vcpus, 2);
    assert_int_equal(s.max_vcpus, 2);
    assert_int_equal(s.memory_mib, 2048);
    assert_int_equal(s.max_memory_mib, 8192);
    assert_true(s.live_memory);
    free(xml);

    /* what is not a domain, or a size that is not one */
    assert_int_equal(hv_size_from_xml("<capabilities/>", true, &s, NULL, 0, NULL), -EINVAL);
    assert_int_equal(hv_size_from_xml("<domain", true, &s, NULL, 0, NULL), -EINVAL);
    assert_int_equal(hv_size_from_xml(NULL, true, &s, NULL, 0, NULL), -EINVAL);
    assert_int_equal(hv_size_from_xml("<domain><vcpu current='9'>x</vcpu><memory unit='parsec'>4</memory>"
                                      "<currentMemory>99999999999999999999999</currentMemory></domain>",
                                      true, &s, NULL, 0, NULL),
                     0);
    assert_int_equal(s.max_vcpus, 0);
    assert_int_equal(s.max_memory_mib, 0);
    assert_int_equal(s.memory_mib, 0);
    assert_int_equal(hv_size_from_xml("<domain><memory unit='GiB'>2</memory><currentMemory unit='MiB'>1536"
                                      "</currentMemory><vcpu>3</vcpu></domain>",
                                      false, &s, NULL, 0, NULL),
                     0);
    assert_int_equal(s.max_memory_mib, 2048);
    assert_int_equal(s.memory_mib, 1536);
    assert_int_equal(s.vcpus, 3);
    assert_false(s.live_vcpus); /* no hot-pluggable vCPU listed, not the test driver */
    assert_false(s.live_memory);
}

/* hv_set_metadata's element: naked (libvirt binds it to our namespace
 * itself and refuses one that declares its prefix), the same children. */
static void test_metadata_element(void **state)
{
    const struct hv_owner own = {.host = "node-1", .host_uuid = "00000000-0000-4000-8000-000000000001"};
    const struct hv_meta_item items[] = {
        {.name = "uuid", .text = "0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11"},
        {.name = "flavor", .attrs = {{"vcpus", "2"}, {"memory_mb", "<&>"}}},
    };
    const struct hv_guest g = {.meta = items, .n_meta = 2, .owner = &own};
    struct agent_error err;
    char *xml = NULL;

    (void)state;
    assert_int_equal(domxml_metadata_element(&g, &xml, &err), 0);
    expect_in(xml, "<instance>");
    expect_in(xml, "<uuid>0d8f7a34-8a47-4a59-9d3a-2b1e8c9b0f11</uuid>");
    expect_in(xml, "<flavor vcpus=\"2\" memory_mb=\"&lt;&amp;&gt;\"/>");
    expect_in(xml, "<host name=\"node-1\" uuid=\"00000000-0000-4000-8000-000000000001\"/>");
    expect_not_in(xml, "xmlns");
    expect_not_in(xml, "ca:");
    expect_not_in(xml, "<?xml");
    free(xml);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kvm_kernel),
        cmocka_unit_test(test_xen),
        cmocka_unit_test(test_kvm_net_sysinfo_config_drive),
        cmocka_unit_test(test_metadata_namespaces),
        cmocka_unit_test(test_metadata_foreign_host),
        cmocka_unit_test(test_metadata_refused),
        cmocka_unit_test(test_metadata_domain_uuid),
        cmocka_unit_test(test_caps_host_uuid),
        cmocka_unit_test(test_kvm_headroom),
        cmocka_unit_test(test_size_from_xml),
        cmocka_unit_test(test_metadata_element),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
