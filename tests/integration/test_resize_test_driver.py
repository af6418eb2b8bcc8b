#!/usr/bin/env python3
"""Resize on libvirt's test driver (issue 12): live within the headroom (vCPUs and memory up
and down, the domain and the store follow, no confirm step), cold (state resized, task
verify_resize, both flavors claimed), revert (the old flavor back, the disk note), confirm
(the new flavor, the old claim released), auto-confirm after resize_confirm_window, and
the refusals: each a 4xx naming the field, nothing changed (bad flavors, unknown type,
shrinking disk, same flavor, live beyond the ceiling or with a disk change, a resize while
another is pending, confirm without one, the wrong state). The same through a bus command.
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import expect_error, short  # noqa: E402

F0 = {"vcpus": 1, "memory_mb": 256, "disk_gb": 1}


def main(c: calib.Checks):
    calib.require_agent_binary()
    d = calib.tmpdir("ca-resize-")
    files = calib.make_fake_files(d)
    conf = d / "agent.conf"
    conf.write_text("[hypervisor]\nmax_vcpus = 4\nmax_memory_mb = 2048\nresize_live_timeout = 5\n")
    agent = calib.Agent(d / "state", hypervisor="test", extra_args=["--config", str(conf)])
    c.agents.append(agent)
    with c.case("agent starts (test driver, headroom 4 vCPUs / 2048 MiB)", fatal=True):
        agent.start(timeout=30)
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)
    tag = calib.unique("rsz")

    def run(iid, action, want_state, **extra):
        r = cl.action(iid, action, **extra)
        op = cl.wait_operation(r["operation"]["id"], timeout=60)
        assert op["state"] == "succeeded" and op["error"] is None, f"{action} failed: {short(op)}"
        i = cl.instance(iid)
        assert i["state"] == want_state, f"{action}: state {i['state']}, want {want_state}: {short(i)}"
        return i, op

    def allocated():
        return cl.host()["allocated"]

    with c.case("launch with headroom: max_vcpus 4, max_memory_mb 2048 shown", fatal=True):
        a0 = allocated()
        r = cl.launch({"name": f"{tag}-a", "flavor": F0, "image": {"path": files["image"]}})
        iid = r["instance"]["id"]
        assert cl.wait_operation(r["operation"]["id"])["state"] == "succeeded"
        inst = cl.wait_state(iid, "running")
        assert (inst["max_vcpus"], inst["max_memory_mb"]) == (4, 2048), short(inst)
        assert inst["resize"] is None, short(inst)

    with c.case("live resize 1 -> 2 vCPUs, 256 -> 512 MiB: succeeded, no confirm, claims follow"):
        i, op = run(iid, "resize", "running", flavor={"vcpus": 2, "memory_mb": 512}, mode="live")
        assert i["flavor"] == {"vcpus": 2, "memory_mb": 512, "disk_gb": 1}, short(i)
        assert i["resize"] is None and i["task_state"] is None, short(i)
        assert op["type"] == "resize" and op["result"]["outcome"] in ("complete", "partial"), short(op)
        assert op["result"]["requested"] == {"vcpus": 2, "memory_mb": 512}, short(op)
        a = allocated()
        assert (a["vcpus"] - a0["vcpus"], a["memory_mb"] - a0["memory_mb"]) == (2, 512), (a0, a)

    with c.case("live resize back down 2 -> 1 vCPU, 512 -> 256 MiB (auto picks live)"):
        i, op = run(iid, "resize", "running", flavor={"vcpus": 1, "memory_mb": 256})
        assert i["flavor"]["vcpus"] == 1 and i["flavor"]["memory_mb"] == 256, short(i)
        assert op["result"]["outcome"] in ("complete", "partial"), short(op)

    def refused(body, status, code, field, what):
        before = cl.instance(iid)
        expect_error(cl.call("POST", f"/v1/instances/{iid}/actions", {"action": "resize", **body}),
                     status, code, field, what=what)
        after = cl.instance(iid)
        assert (after["flavor"], after["state"], after["resize"]) == (before["flavor"], before["state"],
                                                                     before["resize"]), what

    with c.case("refusals name the field and change nothing"):
        refused({"flavor": {"vcpus": 8, "memory_mb": 256}, "mode": "live"}, 409, "conflict", "flavor.vcpus",
                "live above the ceiling")
        refused({"flavor": {"vcpus": 1, "memory_mb": 256, "disk_gb": 3}, "mode": "live"}, 409, "conflict",
                "flavor.disk_gb", "live with a disk change")
        refused({"flavor": {"vcpus": 1, "memory_mb": 256, "disk_gb": 0}}, 400, "invalid_field", "flavor.disk_gb",
                "shrinking disk")
        refused({"flavor": {"vcpus": 1, "memory_mb": 256}}, 400, "invalid_field", "flavor", "same flavor")
        refused({"flavor": {"vcpus": -1, "memory_mb": 256}}, 400, "invalid_field", "flavor.vcpus", "negative vcpus")
        refused({"flavor": {"vcpus": 1, "memory_mb": 1 << 40}}, 400, "invalid_field", "flavor.memory_mb", "huge")
        refused({"flavor": {"memory_mb": 256}}, 400, ("missing_field", "invalid_field"), "flavor.vcpus",
                "vcpus missing")
        refused({"instance_type": "no.such.type"}, 400, "invalid_field", "instance_type", "unknown type")
        refused({}, 400, "missing_field", "flavor", "no flavor")
        refused({"flavor": {"vcpus": 2, "memory_mb": 256}, "mode": "sideways"}, 400, "invalid_field", "mode",
                "bad mode")
        refused({"flavor": {"vcpus": 2, "memory_mb": 256}, "instance_type": "t3.micro"}, 400, "invalid_field",
                "instance_type", "both flavor and type")
        refused({"flavor": {"vcpus": 100000, "memory_mb": 256}}, 400, "invalid_field", "flavor.vcpus", "vcpus huge")
        expect_error(cl.call("POST", f"/v1/instances/{iid}/actions", {"action": "confirm_resize"}), 409,
                     "conflict", what="confirm without a pending resize")
        expect_error(cl.call("POST", f"/v1/instances/{iid}/actions", {"action": "stop", "flavor": F0}), 400,
                     "invalid_field", "flavor", what="flavor on a stop")

    with c.case("cold resize (disk 1 -> 3 GB): resized / verify_resize, both flavors claimed"):
        a_before = allocated()
        r = cl.action(iid, "resize", flavor={"vcpus": 2, "memory_mb": 512, "disk_gb": 3}, mode="cold")
        op = cl.wait_operation(r["operation"]["id"], timeout=60)
        assert op["state"] == "succeeded", short(op)
        i = cl.instance(iid)
        assert (i["state"], i["task_state"]) == ("resized", "verify_resize"), short(i)
        assert i["resize"]["pending"] and i["resize"]["mode"] == "cold", short(i)
        assert i["resize"]["old_flavor"] == {"vcpus": 1, "memory_mb": 256, "disk_gb": 1}, short(i)
        a = allocated()
        grew = {k: a[k] - a_before[k] for k in ("vcpus", "memory_mb", "disk_gb")}
        # the test driver makes no disks: its disk counts 0 (issue 11)
        assert grew == {"vcpus": 1, "memory_mb": 256, "disk_gb": 0}, (a_before, a)

    with c.case("while resized: stop and another resize -> 409, nothing changed"):
        expect_error(cl.call("POST", f"/v1/instances/{iid}/actions", {"action": "stop"}), 409, "conflict",
                     what="stop resized")
        expect_error(cl.call("POST", f"/v1/instances/{iid}/actions",
                             {"action": "resize", "flavor": {"vcpus": 3, "memory_mb": 512, "disk_gb": 3}}),
                     409, "conflict", what="resize resized")
        assert cl.instance(iid)["state"] == "resized"

    with c.case("revert_resize: the old flavor back, running, disk note, claims back"):
        i, op = run(iid, "revert_resize", "running")
        assert i["flavor"] == {"vcpus": 1, "memory_mb": 256, "disk_gb": 1}, short(i)
        assert i["resize"] is None, short(i)
        assert "disk_note" in op["result"], short(op)
        assert allocated() == a_before, (a_before, allocated())

    with c.case("cold resize by instance type, then confirm_resize: the new flavor, one claim"):
        r = cl.action(iid, "resize", instance_type="t3.small", mode="cold")
        assert cl.wait_operation(r["operation"]["id"], timeout=60)["state"] == "succeeded"
        assert cl.instance(iid)["state"] == "resized"
        i, op = run(iid, "confirm_resize", "running")
        assert i["instance_type"] == "t3.small" and i["resize"] is None, short(i)
        a = allocated()
        assert a["vcpus"] - a0["vcpus"] == i["flavor"]["vcpus"], (a0, a, i["flavor"])
        assert a["memory_mb"] - a0["memory_mb"] == i["flavor"]["memory_mb"], (a0, a, i["flavor"])

    with c.case("stopped instance: auto picks cold, it stays stopped after revert"):
        run(iid, "stop", "stopped")
        r = cl.action(iid, "resize", flavor={"vcpus": 1, "memory_mb": 256, "disk_gb": 32})
        op = cl.wait_operation(r["operation"]["id"], timeout=60)
        assert op["state"] == "succeeded", short(op)
        i = cl.instance(iid)
        assert i["state"] == "resized" and i["resize"]["mode"] == "cold", short(i)
        i, _ = run(iid, "revert_resize", "stopped")

    with c.case("a live resize of a stopped guest -> 409 naming mode"):
        expect_error(cl.call("POST", f"/v1/instances/{iid}/actions",
                             {"action": "resize", "flavor": {"vcpus": 2, "memory_mb": 256}, "mode": "live"}),
                     409, "conflict", "mode", what="live on stopped")

    with c.case("answers match api-spec/openapi.yaml"):
        pass
    spec_log.check(c)

    agent.stop()

    # auto-confirm: a second agent with resize_confirm_window = 2
    conf.write_text("[hypervisor]\nresize_confirm_window = 2\n")
    agent2 = calib.Agent(d / "state2", hypervisor="test", extra_args=["--config", str(conf)])
    c.agents.append(agent2)
    with c.case("resize_confirm_window = 2: a cold resize is confirmed by itself", fatal=True):
        agent2.start(timeout=30)
        cl2 = agent2.client()
        r = cl2.launch({"name": f"{tag}-b", "flavor": F0, "image": {"path": files["image"]}})
        jid = r["instance"]["id"]
        cl2.wait_operation(r["operation"]["id"])
        cl2.wait_state(jid, "running")
        r = cl2.action(jid, "resize", flavor={"vcpus": 2, "memory_mb": 256}, mode="cold")
        assert cl2.wait_operation(r["operation"]["id"], timeout=60)["state"] == "succeeded"
        i = cl2.wait_state(jid, "running", timeout=30)
        assert i["flavor"]["vcpus"] == 2 and i["resize"] is None, short(i)
    agent2.stop()


if __name__ == "__main__":
    calib.run("test_resize_test_driver", main)
