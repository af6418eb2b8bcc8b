#!/usr/bin/env python3
"""Migration refusals (issue 13): every way a migration is refused or given up
before anything moves leaves the guest running on its source, unchanged, and the
target with nothing of it. Three real agents on one mock Kafka cluster
(build/tests/mock_kafka): the source A (qemu, a running TCG guest on the private
libvirtd), B (qemu on the same libvirtd, no memory to spare) and C (the test driver,
which cannot take a live migration).

- bad requests over REST and the bus: 4xx naming the field, nothing changed;
- B answers the prepare with its refusal (capacity): the operation fails with B's
  error and field, A's guest still runs, B recorded nothing;
- C refuses (its driver cannot take a live migration);
- a target no agent answers for: the source gives up after [migration]
  prepare_timeout;
- abort_migration while the source waits for the target's answer;
- migration.failed / migration.aborted events on A, the operation's result says
  where the guest is.
"""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

PREPARE_TIMEOUT = 3


def events_of(cl, iid, name):
    st, body = cl.get(f"/v1/events?instance={iid}&type={name}&limit=1000")
    assert st == 200, short(body)
    return [e["message"] for e in body["events"]]


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    calib.require_agent_binary()
    if not calib.MOCK_KAFKA_BIN.exists():
        calib.skip(f"{calib.MOCK_KAFKA_BIN} is missing (make tests)")
    d = calib.tmpdir("ca-migr-")
    tag = calib.unique("migr")
    hosts = {k: f"{tag}-{k}" for k in ("a", "b", "c")}
    prefix = f"{tag}."
    topics = [f"{prefix}compute.{h}:1" for h in hosts.values()] + [
        f"{prefix}compute.events:4", f"{prefix}compute.heartbeat:1", f"{prefix}telemetry:4"]
    mock = calib.MockKafka(d, topics)
    conf = d / "agent.conf"
    conf.write_text(f"[migration]\nprepare_timeout = {PREPARE_TIMEOUT}\n"
                    "libvirt_uri = qemu+tcp://192.0.2.1/system\n")
    conf_b = d / "agent-b.conf"
    conf_b.write_text(conf.read_text() + "[resources]\nreserved_host_memory_mb = 1099511627776\n")

    def agent(k, hv, cf):
        a = calib.Agent(d / f"state-{k}", hypervisor=hv, libvirt_uri=uri if hv != "test" else None,
                        extra_args=["--config", str(cf), "--host-name", hosts[k], "--bus-prefix", prefix,
                                    "--bus-brokers", mock.bs])
        c.agents.append(a)
        return a

    A, B, C = agent("a", "qemu", conf), agent("b", "qemu", conf_b), agent("c", "test", conf)
    iid = None
    try:
        with c.case("three agents start on one mock Kafka cluster", fatal=True):
            A.start(timeout=180)
            B.start(timeout=180)
            C.start(timeout=60)
        ca, cb, cc = A.client(timeout=60), B.client(), C.client()
        (d / "images").mkdir(exist_ok=True)
        with c.case("a guest runs on A", fatal=True):
            r = ca.launch({"name": f"{tag}-g", "flavor": {"vcpus": 1, "memory_mb": 128, "disk_gb": 0},
                           "kernel": calib.guest_boot(gdir)})
            iid = r["instance"]["id"]
            assert ca.wait_operation(r["operation"]["id"], timeout=180)["state"] == "succeeded"
            watch = calib.ConsoleWatch(r["instance"]["console_log"])
            watch.wait_boot(120)

        def unchanged(what):
            i = ca.instance(iid)
            assert i["state"] == "running" and i["task_state"] is None, f"{what}: {short(i)}"
            assert calib.domstate(uri, iid) == "running", f"{what}: domain {calib.domstate(uri, iid)}"

        with c.case("bad requests: 4xx naming the field, nothing changed"):
            bad = [({}, 400, "missing_field", "target"),
                   ({"target": "a b"}, 400, "invalid_field", "target"),
                   ({"target": hosts["a"]}, 400, "invalid_field", "target"),
                   ({"target": hosts["b"], "mode": "auto"}, 400, "invalid_field", "mode"),
                   ({"target": hosts["b"], "postcopy": "maybe"}, 400, "invalid_field", "postcopy"),
                   ({"target": hosts["b"], "max_downtime_ms": 1}, 400, "invalid_field", "max_downtime_ms"),
                   ({"target": hosts["b"], "completion_timeout_s": 99999999}, 400, "invalid_field",
                    "completion_timeout_s"),
                   ({"target": hosts["b"], "flavor": {"vcpus": 1, "memory_mb": 128}}, 400, "invalid_field",
                    "flavor"),
                   ({"target": hosts["b"], "mode": "cold", "max_downtime_ms": 300}, 400, "invalid_field",
                    "max_downtime_ms")]
            for body, status, code, field in bad:
                calib.expect_error(ca.call("POST", f"/v1/instances/{iid}/actions", {"action": "migrate", **body}),
                                   status, code, field=field, what=short(body))
            calib.expect_error(ca.call("POST", f"/v1/instances/{iid}/actions", {"action": "abort_migration"}),
                               409, "conflict", field="action", what="abort without a migration")
            calib.expect_error(ca.call("POST", f"/v1/instances/{iid}/actions", {"action": "stop", "target": "x"}),
                               400, "invalid_field", field="target", what="stop with a target")
            unchanged("after the bad requests")

        def migrate(target, **extra):
            t0 = time.monotonic()
            r = ca.action(iid, "migrate", target=target, **extra)
            assert r["instance"]["task_state"] == "migrating", short(r)
            op = ca.wait_operation(r["operation"]["id"], timeout=60)
            return op, time.monotonic() - t0

        with c.case("B has no room: its refusal fails the migration with B's error; nothing moved"):
            op, took = migrate(hosts["b"])
            assert op["state"] == "failed", short(op)
            assert op["error"]["code"] == "insufficient_resources", short(op)
            assert op["result"]["outcome"] == "failed" and op["result"]["peer"] == hosts["b"], short(op)
            unchanged("after B's refusal")
            calib.expect_error(cb.call("GET", f"/v1/instances/{iid}"), 404, "not_found", field=..., what="on B")
            assert events_of(ca, iid, "migration.failed"), "no migration.failed event on A"
            calib.log(f"B refused in {took:.2f}s: {op['error']['message']}")

        with c.case("C's driver cannot take a live migration: refused, named 'mode'"):
            op, _ = migrate(hosts["c"])
            assert op["state"] == "failed" and op["error"]["code"] == "not_supported", short(op)
            unchanged("after C's refusal")
            calib.expect_error(cc.call("GET", f"/v1/instances/{iid}"), 404, "not_found", field=..., what="on C")

        with c.case(f"a target nobody answers for: given up after prepare_timeout ({PREPARE_TIMEOUT} s)"):
            op, took = migrate(f"{tag}-nobody")
            assert op["state"] == "failed" and op["error"]["code"] == "peer_timeout", short(op)
            assert "did not answer" in op["error"]["message"], short(op)
            assert took >= PREPARE_TIMEOUT - 0.5, f"gave up after {took:.2f}s"
            unchanged("after the silent target")

        with c.case("abort_migration while the source waits for the prepare: aborted, nothing moved"):
            r = ca.action(iid, "migrate", target=f"{tag}-nobody")
            a = ca.action(iid, "abort_migration")
            assert a["operation"]["id"] == r["operation"]["id"], short(a)
            op = ca.wait_operation(r["operation"]["id"], timeout=30)
            assert op["state"] == "failed" and op["error"]["code"] == "aborted", short(op)
            assert op["result"]["outcome"] == "aborted", short(op)
            assert events_of(ca, iid, "migration.aborted"), "no migration.aborted event"
            unchanged("after the abort")

        with c.case("a stopped guest cannot migrate live (409); the stop itself is untouched"):
            op = ca.wait_operation(ca.action(iid, "stop", force=True)["operation"]["id"], timeout=60)
            assert op["state"] == "succeeded", short(op)
            calib.expect_error(ca.call("POST", f"/v1/instances/{iid}/actions",
                                       {"action": "migrate", "target": hosts["b"]}),
                               409, "conflict", field="action", what="stopped")
            assert ca.instance(iid)["state"] == "stopped"
    finally:
        if iid:
            try:
                ca.terminate(iid)
                ca.wait_state(iid, "terminated", timeout=60)
            except Exception as e:  # noqa: BLE001
                calib.log(f"cleanup: {e}")
        for a in (A, B, C):
            a.stop()
        mock.stop()


if __name__ == "__main__":
    calib.run("test_migrate_refusals_qemu", main)
