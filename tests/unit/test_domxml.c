/* Unit tests: domain XML for each driver (every value escaped, identity in
 * our metadata namespace, read back), and the driver table's -ENOTSUP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <libxml/parser.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hypervisor/hv-internal.h"

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

static void test_kvm_kernel(void **state)
{
    struct instance i, back;
    struct hv_guest g = {.inst = &i, .console_log = "/var/lib/x/console.log"};
    const struct domxml_opts o = {.domain_type = "qemu", .os = DOMXML_OS_HVM, .machine = "pc",
                                  .serial_file = true, .balloon = true, .disk_bus = "virtio",
                                  .disk_dev = "vda"};
    char *xml = NULL, *t, *meta;
    struct agent_error err;

    (void)state;
    make(&i, BOOT_KERNEL);
    assert_int_equal(domxml_build(&g, &o, &xml, &err), 0);
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
    assert_non_null(strstr(xml, "<serial type=\"file\">"));
    assert_non_null(strstr(xml, CA_XMLNS_URI));
    /* the metadata element alone, as virDomainGetMetadata returns it */
    meta = strstr(xml, "<ca:instance");
    assert_non_null(meta);
    {
        char *end = strstr(meta, "</ca:instance>");
        size_t len = (size_t)(end - meta) + strlen("</ca:instance>");
        char *frag = strndup(meta, len);
        assert_int_equal(domxml_parse_metadata(frag, &back), 0);
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
    assert_int_not_equal(domxml_parse_metadata("<x/>", &back), 0);
    assert_int_not_equal(domxml_parse_metadata("<instance xmlns=\"urn:other\"><uuid>u</uuid></instance>", &back), 0);
    free(xml);
    instance_release(&i);
}

static void test_xen(void **state)
{
    struct instance i;
    struct hv_guest g = {.inst = &i, .console_log = "/c.log", .disk_path = "/d&.qcow2", .disk_format = "qcow2"};
    struct domxml_opts pv = {.domain_type = "xen", .os = DOMXML_OS_XEN_PV, .serial_file = true,
                             .balloon = true, .disk_bus = "xen", .disk_dev = "xvda"};
    char *xml = NULL, *t;
    struct agent_error err;

    (void)state;
    make(&i, BOOT_KERNEL);
    assert_int_equal(domxml_build(&g, &pv, &xml, &err), 0);
    t = first_text(xml, "type");
    assert_string_equal(t, "xen"); /* PV */
    free(t);
    assert_non_null(strstr(xml, "dev=\"xvda\""));
    assert_non_null(strstr(xml, "file=\"/d&amp;.qcow2\""));
    assert_null(strstr(xml, "<acpi"));
    free(xml);
    instance_release(&i);
    make(&i, BOOT_IMAGE);
    pv.os = DOMXML_OS_HVM;
    pv.machine = "xenfv";
    assert_int_equal(domxml_build(&g, &pv, &xml, &err), 0);
    t = first_text(xml, "type");
    assert_string_equal(t, "hvm");
    free(t);
    assert_non_null(strstr(xml, "machine=\"xenfv\""));
    assert_non_null(strstr(xml, "<boot dev=\"hd\"/>"));
    free(xml);
    instance_release(&i);
}

static void test_driver_table(void **state)
{
    (void)state;
    assert_ptr_equal(hv_driver_find("kvm"), &hv_driver_kvm);
    assert_ptr_equal(hv_driver_find("qemu"), &hv_driver_kvm);
    assert_ptr_equal(hv_driver_find("xen"), &hv_driver_xen);
    assert_ptr_equal(hv_driver_find("test"), &hv_driver_test);
    assert_null(hv_driver_find("vmware"));
    /* the test driver has no reset: the table says so */
    assert_null(hv_driver_test.reset);
    assert_non_null(hv_driver_kvm.reset);
    assert_string_equal(hv_driver_xen.default_uri, "xen:///system");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kvm_kernel),
        cmocka_unit_test(test_xen),
        cmocka_unit_test(test_driver_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
