#!/usr/bin/env python3
"""A guest whose disk went missing while it was stopped (an operator's rm, a
lost volume) does not wedge its start: the start operation fails at once with
the reason, the instance stays stopped, and after the disk is back a start
works. Real libvirtd (QEMU); the harness provides CA_LIBVIRT_URI/CA_GUEST_DIR."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    calib.require_agent_binary()
    d = calib.tmpdir("ca-nodisk-")
    prefix = calib.unique("ca-it-nodisk")
    agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri, log_level="info")
    c.agents.append(agent)
    with c.case("agent starts on the real libvirtd", fatal=True):
        agent.start(timeout=180)
    cl = agent.client(timeout=60)
    st = {}
    try:
        cases(c, cl, d, gdir, prefix, st)
    finally:
        calib.cleanup_domains(uri, {st["id"]} if "id" in st else set(), marker=prefix)


def cases(c, cl, d, gdir, prefix, st):
    with c.case("a disk guest launched and stopped", fatal=True):
        r = cl.launch({"name": f"{prefix}-g", "flavor": {"vcpus": 1, "memory_mb": 128, "disk_gb": 1},
                       "image": {"path": os.path.join(gdir, "disk.raw")}})
        st["id"] = r["instance"]["id"]
        op = cl.wait_operation(r["operation"]["id"], timeout=120)
        assert op["state"] == "succeeded", short(op)
        a = cl.action(st["id"], "stop", force=True)
        op = cl.wait_operation(a["operation"]["id"], timeout=60)
        assert op["state"] == "succeeded", short(op)
        cl.wait_state(st["id"], "stopped", timeout=30)
        disk = d / "state" / "instances" / st["id"] / "disk.qcow2"
        assert disk.exists(), f"no overlay at {disk}: {list(disk.parent.iterdir())}"
        st["disk"] = disk
        st["kept"] = d / "disk.qcow2.kept"
        os.rename(disk, st["kept"])

    with c.case("start with the disk gone: the operation fails within 30 s, naming the disk"):
        a = cl.action(st["id"], "start")
        op = cl.wait_operation(a["operation"]["id"], timeout=30)
        assert op["state"] == "failed", short(op)
        msg = (op.get("error") or {}).get("message", "")
        assert "disk" in msg or "No such file" in msg or "storage" in msg, short(op)
        calib.log(f"     (error: {msg[:160]})")

    with c.case("the instance is stopped (not error, not running) and the API still answers"):
        i = cl.instance(st["id"])
        assert i["state"] == "stopped", short(i)
        assert cl.call("GET", "/healthz")[0] == 200

    with c.case("the disk back: start works"):
        os.rename(st["kept"], st["disk"])
        a = cl.action(st["id"], "start")
        op = cl.wait_operation(a["operation"]["id"], timeout=120)
        assert op["state"] == "succeeded", short(op)
        cl.wait_state(st["id"], "running", timeout=30)

    with c.case("terminate"):
        t = cl.call("DELETE", f"/v1/instances/{st['id']}")
        assert t[0] == 202, short(t)
        cl.wait_operation(t[1]["operation"]["id"], timeout=60)
        cl.wait_state(st["id"], "terminated", timeout=60)


if __name__ == "__main__":
    calib.run("test_start_missing_disk_qemu", main)
