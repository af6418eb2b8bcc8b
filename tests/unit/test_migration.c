/* Unit tests for agent/migration.c (issue 13): every message kind through
 * its JSON and back; the instance as it travels, field by field; each
 * refusal naming its field, with nothing kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/migration.h"

#define MID "11111111-2222-4333-8444-555555555555"
#define IID "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
#define PID "99999999-8888-4777-8666-555555555555"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &jerr);

    if (!j)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return j;
}

static void fill_instance(struct instance *in)
{
    memset(in, 0, sizeof(*in));
    strcpy(in->uuid, IID);
    strcpy(in->ec2_id, "i-0123456789abcdef0");
    in->name = strdup("web-1");
    in->flavor = (struct flavor){2, 512, 10};
    in->instance_type = strdup("t3.small");
    in->boot.kind = BOOT_IMAGE;
    in->boot.image_url = strdup("http://images.example/cirros.qcow2");
    in->boot.image_digest = strdup("sha256:0000000000000000000000000000000000000000000000000000000000000000");
    in->user_data = strdup("aGVsbG8=");
    in->hostname = strdup("web-1");
    in->availability_zone = strdup("az1");
    in->metadata = json_pack("{s:s}", "role", "web");
    in->max_vcpus = 4;
    in->max_memory_mb = 1024;
    in->ports = calloc(1, sizeof(*in->ports));
    in->n_ports = 1;
    strcpy(in->ports[0].port_id, PID);
    strcpy(in->ports[0].network, "tenant");
    strcpy(in->ports[0].mac, "fa:16:3e:00:00:01");
    strcpy(in->ports[0].ip, "10.0.0.5");
    strcpy(in->ports[0].device, "tap99999999-88");
    in->ports[0].mtu = 1400;
    strcpy(in->resize.mode, "live"); /* the source's own: never travels */
    in->resize.pending = true;
    in->created_ms = 1700000000000;
}

static void test_prepare_roundtrip(void **state)
{
    struct mig_msg m = {.kind = MIG_PREPARE, .power_on = true}, back;
    struct agent_error err = {0};
    json_t *j;

    (void)state;
    strcpy(m.migration_id, MID);
    strcpy(m.instance_id, IID);
    strcpy(m.from, "host-a");
    strcpy(m.mode, "live");
    fill_instance(&m.inst);
    j = mig_msg_to_json(&m);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "op")), "migration_prepare");
    assert_null(json_object_get(json_object_get(json_object_get(j, "instance"), "extra"), "resize"));
    assert_int_equal(mig_msg_parse(j, &back, &err), 0);
    assert_int_equal(back.kind, MIG_PREPARE);
    assert_string_equal(back.migration_id, MID);
    assert_string_equal(back.from, "host-a");
    assert_true(back.power_on);
    assert_string_equal(back.inst.uuid, IID);
    assert_string_equal(back.inst.name, "web-1");
    assert_int_equal(back.inst.flavor.memory_mb, 512);
    assert_string_equal(back.inst.instance_type, "t3.small");
    assert_string_equal(back.inst.boot.image_url, m.inst.boot.image_url);
    assert_string_equal(back.inst.user_data, "aGVsbG8=");
    assert_string_equal(back.inst.hostname, "web-1");
    assert_int_equal(back.inst.max_memory_mb, 1024);
    assert_false(back.inst.resize.pending);
    assert_int_equal(back.inst.n_ports, 1);
    assert_string_equal(back.inst.ports[0].mac, "fa:16:3e:00:00:01");
    assert_string_equal(back.inst.ports[0].ip, "10.0.0.5");
    assert_int_equal(back.inst.ports[0].mtu, 1400);
    assert_string_equal(back.inst.ports[0].state, "reserved");
    assert_string_equal(json_string_value(json_object_get(back.inst.metadata, "role")), "web");
    mig_msg_release(&back);
    json_decref(j);
    mig_msg_release(&m);
}

static void test_answers_roundtrip(void **state)
{
    struct mig_msg m = {.kind = MIG_PREPARED, .ok = true}, back;
    struct agent_error err = {0};
    json_t *j;

    (void)state;
    strcpy(m.migration_id, MID);
    strcpy(m.instance_id, IID);
    strcpy(m.from, "host-b");
    strcpy(m.libvirt_uri, "qemu+tcp://10.77.0.2/system");
    strcpy(m.instances_dir, "/var/lib/compute-agent/instances");
    strcpy(m.image_dir, "/var/lib/compute-agent/images");
    j = mig_msg_to_json(&m);
    assert_int_equal(mig_msg_parse(j, &back, &err), 0);
    assert_true(back.ok);
    assert_string_equal(back.libvirt_uri, m.libvirt_uri);
    assert_string_equal(back.instances_dir, m.instances_dir);
    assert_string_equal(back.image_dir, m.image_dir);
    assert_string_equal(back.migrate_uri, "");
    json_decref(j);
    /* a refusal carries its error, field included */
    m.ok = false;
    agent_error_set(&m.error, ENOSPC, "insufficient_capacity", "instance.flavor", "no room for 512 MiB");
    j = mig_msg_to_json(&m);
    assert_int_equal(mig_msg_parse(j, &back, &err), 0);
    assert_false(back.ok);
    assert_string_equal(back.error.code, "insufficient_capacity");
    assert_string_equal(back.error.field, "instance.flavor");
    assert_string_equal(back.error.message, "no room for 512 MiB");
    json_decref(j);
    /* commit and committed */
    m = (struct mig_msg){.kind = MIG_COMMIT, .action = MIG_ACT_LIVE_DONE};
    strcpy(m.migration_id, MID);
    strcpy(m.instance_id, IID);
    strcpy(m.from, "host-a");
    j = mig_msg_to_json(&m);
    assert_int_equal(mig_msg_parse(j, &back, &err), 0);
    assert_int_equal(back.action, MIG_ACT_LIVE_DONE);
    json_decref(j);
    m.kind = MIG_COMMITTED;
    m.ok = true;
    m.action = MIG_ACT_ABORT;
    j = mig_msg_to_json(&m);
    assert_int_equal(mig_msg_parse(j, &back, &err), 0);
    assert_int_equal(back.kind, MIG_COMMITTED);
    assert_int_equal(back.action, MIG_ACT_ABORT);
    assert_true(back.ok);
    json_decref(j);
    assert_true(mig_is_peer_op("migration_commit"));
    assert_false(mig_is_peer_op("migrate"));
    assert_false(mig_is_peer_op(NULL));
}

static void expect(const char *text, const char *code, const char *field)
{
    struct mig_msg m;
    struct agent_error err = {0};
    json_t *j = parse(text);
    int r = mig_msg_parse(j, &m, &err);

    json_decref(j);
    if (r == 0) {
        mig_msg_release(&m);
        fail_msg("accepted: %s", text);
    }
    assert_string_equal(err.code, code);
    assert_string_equal(err.field, field);
}

#define HDR "\"migration_id\":\"" MID "\",\"instance_id\":\"" IID "\",\"from\":\"host-a\""
#define INST                                                                                                   \
    "\"instance\":{\"uuid\":\"" IID "\",\"ec2_id\":\"i-0123456789abcdef0\",\"name\":\"a\",\"flavor\":{\"vcpus\":1," \
    "\"memory_mb\":64,\"disk_gb\":0},\"boot\":{\"kernel\":{\"path\":\"/k\"}}"

static void test_refusals(void **state)
{
    (void)state;
    expect("[]", "invalid_json", "");
    expect("{\"op\":\"migration_x\"," HDR "}", "invalid_field", "op");
    expect("{\"op\":\"migration_commit\",\"instance_id\":\"" IID "\",\"from\":\"a\",\"action\":\"abort\"}",
           "missing_field", "migration_id");
    expect("{\"op\":\"migration_commit\",\"migration_id\":\"x\",\"instance_id\":\"" IID "\",\"from\":\"a\"}",
           "invalid_field", "migration_id");
    expect("{\"op\":\"migration_commit\",\"migration_id\":\"" MID "\",\"instance_id\":\"" IID "\",\"from\":\"a b\","
           "\"action\":\"abort\"}",
           "invalid_field", "from");
    expect("{\"op\":\"migration_commit\"," HDR "}", "missing_field", "action");
    expect("{\"op\":\"migration_commit\"," HDR ",\"action\":\"confirm\"}", "invalid_field", "action");
    expect("{\"op\":\"migration_commit\"," HDR ",\"action\":\"abort\",\"ok\":true}", "invalid_field", "ok");
    expect("{\"op\":\"migration_commit\"," HDR ",\"action\":\"abort\",\"colour\":1}", "unknown_field", "colour");
    expect("{\"op\":\"migration_prepared\"," HDR "}", "missing_field", "ok");
    expect("{\"op\":\"migration_prepared\"," HDR ",\"ok\":false}", "missing_field", "error");
    expect("{\"op\":\"migration_prepared\"," HDR ",\"ok\":true,\"instances_dir\":\"/i\"}", "missing_field",
           "libvirt_uri");
    expect("{\"op\":\"migration_prepared\"," HDR ",\"ok\":true,\"libvirt_uri\":\"q\",\"instances_dir\":\"rel\"}",
           "invalid_field", "instances_dir");
    expect("{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"live\"}", "missing_field", "instance");
    expect("{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"warp\"," INST "}}", "invalid_field", "mode");
    expect("{\"op\":\"migration_commit\"," HDR ",\"action\":\"abort\",\"mode\":\"live\"}", "invalid_field", "mode");
    /* the instance, field by field */
    expect("{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"live\",\"instance\":{\"uuid\":\"x\"}}", "invalid_field",
           "instance.uuid");
    expect("{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"live\"," INST ",\"x\":1}}", "unknown_field",
           "instance.x");
    expect("{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"live\"," INST ",\"user_data\":\"!!\"}}",
           "invalid_field", "instance.user_data");
    expect("{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"live\"," INST
           ",\"ports\":[{\"port_id\":\"" PID "\",\"index\":0,\"network\":\"n\",\"mac\":\"01:00:00:00:00:01\","
           "\"device\":\"tap9\"}]}}",
           "invalid_field", "instance.ports[0].mac");
    expect("{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"live\"," INST
           ",\"ports\":[{\"port_id\":\"" PID "\",\"index\":0,\"network\":\"n\",\"mac\":\"fa:16:3e:00:00:01\","
           "\"device\":\"eth0; rm\"}]}}",
           "invalid_field", "instance.ports[0].device");
    expect("{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"live\"," INST ",\"extra\":{\"hostname\":\"-x\"}}}",
           "invalid_field", "instance.extra.hostname");
    expect("{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"live\"," INST ",\"extra\":{\"resize\":{}}}}",
           "unknown_field", "instance.extra.resize");
    expect("{\"op\":\"migration_prepare\",\"migration_id\":\"" MID
           "\",\"instance_id\":\"bbbbbbbb-bbbb-4ccc-8ddd-eeeeeeeeeeee\",\"from\":\"host-a\",\"mode\":\"live\"," INST "}}",
           "invalid_field", "instance.uuid");
    {
        /* the flavor out of bounds */
        char buf[1024];
        snprintf(buf, sizeof(buf),
                 "{\"op\":\"migration_prepare\"," HDR ",\"mode\":\"live\",\"instance\":{\"uuid\":\"" IID
                 "\",\"ec2_id\":\"i-0123456789abcdef0\",\"name\":\"a\",\"flavor\":{\"vcpus\":0,\"memory_mb\":64,"
                 "\"disk_gb\":0},\"boot\":{\"kernel\":{\"path\":\"/k\"}}}}");
        expect(buf, "invalid_field", "instance.flavor.vcpus");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepare_roundtrip),
        cmocka_unit_test(test_answers_roundtrip),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
