#!/usr/bin/env python3
"""computectl resize, confirm-resize and revert-resize against a real agent (test driver):

- client-side refusals (both --type and --vcpus, neither, --live with --cold, --vcpus without
  --memory, --live with --stop-timeout): exit 2, the flags named, no request sent (the
  instance and its operations unchanged); confirm-resize takes no sizing option;
- until the agent has the resize action (issue 12), SKIP: a probe `{"action": "resize"}`
  without a flavor answers 400 naming `action` on an agent without it (`flavor` on one with);
- live: `resize ID --vcpus 2 --memory 256 --live --wait` -> the new flavor, state running, no
  resize pending, the operation's result complete (or partial, with the figures), within the
  ceilings `max_vcpus`/`max_memory_mb`; over the ceiling with --live: 409 naming vcpus, nothing
  changed;
- cold with disk growth: `--disk 2 --cold --wait` -> state resized, task verify_resize, the
  resize block (mode cold, the old flavor) in `show --json` and in `show`'s text, a note on
  stderr; `confirm-resize --wait` -> running, no resize; confirm again -> 409;
- cold by instance type, then `revert-resize --wait` -> the old flavor back, instance_type
  null again, the result's disk_note (the disk keeps its grown size);
- a stopped guest: auto is cold (the text --wait notes what to do next), it stays stopped
  through resized and confirm;
- bad input through computectl: a smaller disk (400, flavor.disk_gb, "cannot shrink"), an
  unknown type (400, instance_type), the flavor it has (400), more memory than the host has
  (409 insufficient_resources, flavor.memory_mb): exit 1, nothing changed;
- every `--json` answer and every answer the test reads itself match api-spec/openapi.yaml.
"""

import json
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

CTL_BIN = calib.BUILD / "computectl"
WAIT = "120"


def main(c: calib.Checks):
    calib.require_agent_binary()
    if not CTL_BIN.exists():
        calib.skip(f"{CTL_BIN} not built (make all)")
    d = calib.tmpdir("ca-ctlrsz-")
    files = calib.make_fake_files(d)
    agent = calib.Agent(d / "state", hypervisor="test")
    c.agents.append(agent)
    with c.case("agent starts (test driver)", fatal=True):
        agent.start(timeout=30)
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)
    sp = calib.spec()

    def ctl(*args, expect=0, timeout=180):
        p = subprocess.run([str(CTL_BIN), "--socket", str(agent.sock), *args], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert p.returncode == expect, \
            f"computectl {' '.join(args)} -> {p.returncode} (expected {expect})\n" \
            f"  stdout: {p.stdout.strip()[:1500]}\n  stderr: {p.stderr.strip()[:1500]}"
        return p.stdout, p.stderr

    def ctl_json(*args, schema=None, expect=0):
        out, err = ctl("--json", *args, expect=expect)
        body = json.loads(out)
        if schema:
            errs = sp.errors(body, schema)
            assert not errs, f"computectl --json {' '.join(args)}: not a {schema}: {errs[:5]} -- {short(body)}"
        return body, err

    def show(iid):
        return ctl_json("show", iid, schema="Instance")[0]

    # -- an instance --------------------------------------------------------------
    iid = None
    with c.case("computectl launch --vcpus 1 --memory 128 --disk 1 --wait -> running", fatal=True):
        body, _ = ctl_json("launch", calib.unique("rsz"), "--vcpus", "1", "--memory", "128", "--disk", "1",
                           "--image", files["image"], "--wait-timeout", WAIT, schema="InstanceOperation")
        iid = body["instance"]["id"]
        inst = cl.wait_state(iid, "running", timeout=60)
        assert inst["flavor"] == {"vcpus": 1, "memory_mb": 128, "disk_gb": 1}, short(inst)

    # -- client-side refusals: exit 2, nothing sent ------------------------------------
    before = cl.instance(iid)
    refusals = [
        (["resize", iid, "--type", "t3.nano", "--vcpus", "2"], "not both"),
        (["resize", iid], "resize needs --type T, or --vcpus N and --memory MB"),
        (["resize", iid, "--vcpus", "2", "--memory", "256", "--live", "--cold"],
         "--live and --cold exclude each other"),
        (["resize", iid, "--vcpus", "2"], "--vcpus needs --memory too"),
        (["resize", iid, "--type", "t3.nano", "--live", "--stop-timeout", "5"], "--stop-timeout"),
        (["resize", iid, "--vcpus", "two", "--memory", "256"], "--vcpus: 'two'"),
        (["confirm-resize", iid, "--vcpus", "2"], "unknown option --vcpus"),
        (["revert-resize", "web1"], "'web1' is not an instance id"),
    ]
    for argv, msg in refusals:
        with c.case(f"computectl {' '.join(argv[:1] + argv[2:])}: exit 2, '{msg}'"):
            _, err = ctl(*argv, expect=2)
            assert msg in err, err
    with c.case("the refused command lines changed nothing (same instance, same updated_at)"):
        after = cl.instance(iid)
        assert after == before, f"{short(before)} -> {short(after)}"

    # -- does the agent have the resize action? -----------------------------------------
    st, b = cl.call("POST", f"/v1/instances/{iid}/actions", {"action": "resize"})
    field = (b or {}).get("error", {}).get("field") if isinstance(b, dict) else None
    if st == 400 and field == "action":
        calib.skip(f"the agent has no resize action yet (400 on action: {short(b, 200)})")
    with c.case("probe {action: resize} without a flavor: 400 naming flavor or instance_type"):
        calib.expect_error((st, b), 400, field=("flavor", "instance_type"), what="resize without flavor")

    # -- live ----------------------------------------------------------------------------
    live_ok = False
    with c.case("resize --vcpus 2 --memory 256 --live --wait: the new flavor, running, no resize pending"):
        body, err = ctl_json("resize", iid, "--vcpus", "2", "--memory", "256", "--live",
                             "--request-id", calib.unique("rsz-live"), "--wait-timeout", WAIT,
                             schema="InstanceOperation")
        op = body["operation"]
        assert op["type"] == "resize" and op["state"] == "succeeded", short(op)
        res = op.get("result") or {}
        assert res.get("outcome") in ("complete", "partial"), short(op)
        if res["outcome"] == "partial":
            assert res.get("seen") is not None and res.get("requested") == {"vcpus": 2, "memory_mb": 256}, short(res)
        inst = show(iid)
        assert inst["flavor"] == {"vcpus": 2, "memory_mb": 256, "disk_gb": 1}, short(inst)
        assert inst["state"] == "running" and inst["task_state"] is None, short(inst)
        assert inst.get("resize") is None, short(inst)
        mv, mm = inst.get("max_vcpus"), inst.get("max_memory_mb")
        assert mv is not None and mm is not None and mv >= 2 and mm >= 256, short(inst)
        live_ok = True
    with c.case("computectl operation shows the live resize's result line"):
        if not live_ok:
            raise AssertionError("no live resize above")
        out, _ = ctl("operation", op["id"])
        assert re.search(r"^type: +resize$", out, re.M), out
        assert re.search(r"^result: +" + res["outcome"], out, re.M), out

    with c.case("resize --live over the ceiling: exit 1, 409 naming vcpus, nothing changed"):
        inst = show(iid)
        mv = inst.get("max_vcpus")
        if mv is None or mv >= 256:
            raise AssertionError(f"no vCPU ceiling to go over: {short(inst)}")
        _, err = ctl("resize", iid, "--vcpus", str(mv + 1), "--memory", str(inst["flavor"]["memory_mb"]),
                     "--live", expect=1)
        assert err.startswith("error: conflict: ") and "vcpus" in err, err
        after = show(iid)
        assert after["flavor"] == inst["flavor"] and after["state"] == "running", short(after)
        assert after.get("resize") is None, short(after)

    # -- cold with disk growth, confirm ----------------------------------------------------
    with c.case("resize --vcpus 1 --memory 128 --disk 2 --cold --wait: resized, verify_resize, a note"):
        cur = show(iid)["flavor"]
        body, _ = ctl_json("resize", iid, "--vcpus", "1", "--memory", "128", "--disk", "2", "--cold",
                           "--stop-timeout", "5", "--wait-timeout", WAIT, schema="InstanceOperation")
        assert body["operation"]["type"] == "resize" and body["operation"]["state"] == "succeeded", short(body)
        inst = show(iid)
        assert inst["state"] == "resized" and inst["task_state"] == "verify_resize", short(inst)
        assert inst["flavor"] == {"vcpus": 1, "memory_mb": 128, "disk_gb": 2}, short(inst)
        rz = inst["resize"]
        assert rz["pending"] is True and rz["mode"] == "cold" and rz["old_flavor"] == cur, short(rz)
        assert rz["resized_at"] is not None, short(rz)
    with c.case("show (text) prints the resize block"):
        out, _ = ctl("show", iid)
        assert re.search(r"^state: +resized$", out, re.M), out
        for line in ("resize.mode:", "resize.pending:", "resize.old_flavor:", "resize.resized_at:"):
            assert line in out, f"{line} missing:\n{out}"
        assert "vcpus=2, memory_mb=256, disk_gb=1" in out, out
    with c.case("computectl wait ID: a resized instance (verify_resize) counts as settled"):
        out, _ = ctl("wait", iid, "--timeout", "10")
        assert out.strip() == f"instance {iid}: resized", out
        out, _ = ctl("list", "--state", "resized")
        assert iid in out and "verify_resize" in out, out
    with c.case("confirm-resize --wait: running, the new flavor kept, no resize pending"):
        out, err = ctl("confirm-resize", iid, "--wait-timeout", WAIT)
        assert re.search(r"^operation_type: +confirm_resize$", out, re.M), out
        assert re.search(r"^operation_state: +succeeded$", out, re.M), out
        inst = show(iid)
        assert inst["state"] == "running" and inst["task_state"] is None, short(inst)
        assert inst["flavor"] == {"vcpus": 1, "memory_mb": 128, "disk_gb": 2}, short(inst)
        assert inst.get("resize") is None, short(inst)
    with c.case("confirm-resize again: exit 1, 409 conflict (no resize waits)"):
        _, err = ctl("confirm-resize", iid, expect=1)
        assert err.startswith("error: conflict: "), err
        _, err = ctl("revert-resize", iid, expect=1)
        assert err.startswith("error: conflict: "), err

    # -- bad input through computectl: nothing changed ------------------------------------------
    with c.case("resize --disk smaller than now: exit 1, 400 flavor.disk_gb 'cannot shrink'"):
        before = cl.instance(iid)
        _, err = ctl("resize", iid, "--vcpus", "1", "--memory", "128", "--disk", "1", expect=1)
        assert "invalid_field" in err and "cannot shrink" in err and "(field: flavor.disk_gb)" in err, err
        assert cl.instance(iid) == before, short(cl.instance(iid))
    with c.case("resize --type nope.huge: exit 1, 400 naming instance_type"):
        _, err = ctl("resize", iid, "--type", "nope.huge", expect=1)
        assert "invalid_field" in err and "(field: instance_type)" in err, err
        assert cl.instance(iid) == before, short(cl.instance(iid))
    with c.case("resize to the flavor it has: exit 1, 400 naming flavor"):
        _, err = ctl("resize", iid, "--vcpus", "1", "--memory", "128", expect=1)
        assert "invalid_field" in err and "(field: flavor)" in err, err
        assert cl.instance(iid) == before, short(cl.instance(iid))
    with c.case("resize --memory 4194304 (more than the host has): exit 1, 409 insufficient_resources"):
        _, err = ctl("resize", iid, "--vcpus", "1", "--memory", "4194304", "--cold", expect=1)
        assert err.startswith("error: insufficient_resources: ") and "(field: flavor.memory_mb)" in err, err
        assert cl.instance(iid) == before, short(cl.instance(iid))

    # -- cold by type, revert -----------------------------------------------------------------
    with c.case("resize --type t3.nano --cold --wait, then revert-resize --wait: the old flavor back"):
        body, _ = ctl_json("resize", iid, "--type", "t3.nano", "--cold", "--wait-timeout", WAIT,
                           schema="InstanceOperation")
        inst = show(iid)
        assert inst["state"] == "resized" and inst["instance_type"] == "t3.nano", short(inst)
        assert inst["resize"]["old_instance_type"] is None, short(inst["resize"])
        grown = inst["flavor"]["disk_gb"]
        body, _ = ctl_json("revert-resize", iid, "--wait-timeout", WAIT, schema="InstanceOperation")
        op = body["operation"]
        assert op["type"] == "revert_resize" and op["state"] == "succeeded", short(op)
        inst = show(iid)
        assert inst["state"] == "running" and inst["task_state"] is None, short(inst)
        assert inst["flavor"] == {"vcpus": 1, "memory_mb": 128, "disk_gb": 2}, short(inst)
        assert inst["instance_type"] is None and inst.get("resize") is None, short(inst)
        if grown > 2:
            note = (op.get("result") or {}).get("disk_note", "")
            assert "grown" in note, short(op)

    # -- a stopped guest: auto is cold and it stays stopped ----------------------------------------
    with c.case("stopped: resize --vcpus 2 --memory 256 --wait (auto) -> resized, confirm -> stopped"):
        ctl("stop", iid, "--force", "--wait-timeout", WAIT)
        cl.wait_state(iid, "stopped", timeout=60)
        out, err = ctl("resize", iid, "--vcpus", "2", "--memory", "256", "--wait-timeout", WAIT)
        assert re.search(r"^state: +resized$", out, re.M), out
        assert f"note: {iid} waits in state resized: 'computectl confirm-resize {iid}'" in err, err
        inst = show(iid)
        assert inst["state"] == "resized" and inst["resize"]["mode"] == "cold", short(inst)
        ctl("confirm-resize", iid, "--wait-timeout", WAIT)
        inst = show(iid)
        assert inst["state"] == "stopped" and inst["flavor"]["vcpus"] == 2, short(inst)

    with c.case("terminate --wait"):
        ctl("terminate", iid, "--wait-timeout", WAIT)

    spec_log.check(c)
    with c.case("agent exits 0 on SIGTERM"):
        rc = agent.stop(timeout=30)
        assert rc == 0, f"exit code {rc}"


if __name__ == "__main__":
    calib.run("test_computectl_resize", main)
