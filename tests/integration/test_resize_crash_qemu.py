#!/usr/bin/env python3
"""Resize under kill -9 (issue 12): a real QEMU guest on the private libvirtd, the agent
killed (COMPUTE_AGENT_CRASH_AT=<type>:<step>) right after each journaled step of a cold
resize, a revert, a confirm and a live resize, then restarted. Each time the interrupted
operation settles, and then:

- the instance has exactly one of its two flavors, and the domain's definition says the
  same (its vCPU count and our metadata's flavor, read with virsh dumpxml --inactive);
- its state matches libvirt (resized or running <-> domain running, stopped <-> shut off);
- the claim is whole: GET /v1/host's allocated equals the instance's flavor (the larger
  of the two while a resize waits for confirm), never both added, never none;
- the disk never shrank (qemu-img info: virtual size >= the flavor's disk_gb).
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import domstate, short  # noqa: E402

OP_TIMEOUT = 180.0
# The graceful part of each stop is bounded at 5 s: the guest has just booted again after
# each resize, before its acpid listens (the forced stop after it is what a cloud does too).
F1 = {"vcpus": 1, "memory_mb": 128, "disk_gb": 1}

COLD_POINTS = ("resize:requested", "resize:powered-off", "resize:disk", "resize:defined", "resize:started")
REVERT_POINTS = ("revert_resize:requested", "revert_resize:powered-off", "revert_resize:defined")


def inactive_figures(uri, uuid):
    """(vcpus, metadata flavor vcpus, metadata flavor memory_mb) of the persistent definition."""
    xml = subprocess.run(["virsh", "-c", uri, "dumpxml", "--inactive", uuid], capture_output=True, text=True,
                         timeout=30).stdout
    m = re.search(r"<vcpu([^>]*)>(\d+)</vcpu>", xml)
    cur = re.search(r"current=['\"](\d+)['\"]", m.group(1)) if m else None
    vcpus = int(cur.group(1) if cur else m.group(2)) if m else None
    f = re.search(r"<[\w-]*:?flavor ([^>]*)/?>", xml)
    attrs = dict(re.findall(r"(\w+)=['\"]([^'\"]*)['\"]", f.group(1))) if f else {}
    return vcpus, int(attrs.get("vcpus", -1)), int(attrs.get("memory_mb", -1))


def disk_vsize(path):
    p = subprocess.run(["qemu-img", "info", "--force-share", "--output=json", path], capture_output=True,
                       text=True, timeout=30)
    return json.loads(p.stdout)["virtual-size"] if p.returncode == 0 else None


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    calib.require_agent_binary()
    d = calib.tmpdir("ca-rszcrash-")
    prefix = calib.unique("ca-it-rszc")
    created = set()
    conf = d / "agent.conf"
    conf.write_text("[hypervisor]\nmax_vcpus = 2\nmax_memory_mb = 256\nresize_live_timeout = 20\n")
    agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri,
                        extra_args=["--config", str(conf), "--host-name", prefix])
    c.agents.append(agent)
    try:
        body(c, uri, gdir, d, agent, prefix, created)
    finally:
        if agent.alive():
            agent.kill()
        calib.cleanup_domains(uri, created, marker=prefix)


def body(c, uri, gdir, d, agent, prefix, created):
    with c.case("agent starts (qemu)", fatal=True):
        agent.start(timeout=180)
    cl = agent.client(timeout=60)
    h0 = cl.host()["allocated"]

    def crash_run(point, fn):
        agent.stop(timeout=60)
        agent.start(timeout=180, env={"COMPUTE_AGENT_CRASH_AT": point})
        res = None
        try:
            res = fn()
        except (OSError, http.client.HTTPException) as e:
            print(f"     ({point}: request cut by the crash: {type(e).__name__})")
        rc = agent.wait_exit(timeout=120)
        if rc is None:
            agent.kill()
            agent.start(timeout=180)
            raise AssertionError(f"no crash at {point}; answer {short(res)}")
        agent.start(timeout=180)
        assert rc == -signal.SIGKILL, f"agent exited with {rc}, expected SIGKILL"
        return res

    def settle(iid):
        def done():
            i = cl.instance(iid)
            return i if i["task_state"] in (None, "verify_resize") else None
        return calib.wait_for(done, OP_TIMEOUT, what=f"{iid} to settle", last=lambda: short(cl.instance(iid)))

    def consistent(iid, disk):
        i = settle(iid)
        f = i["flavor"]
        ds = domstate(uri, iid)
        if i["state"] in ("running", "resized"):
            assert ds == "running", f"API {i['state']}, libvirt {ds!r}"
        elif i["state"] == "stopped":
            assert ds in ("shut off", None), f"API stopped, libvirt {ds!r}"
        else:
            raise AssertionError(f"unexpected state: {short(i)}")
        vc, mv, mm = inactive_figures(uri, iid)
        assert (vc, mv, mm) == (f["vcpus"], f["vcpus"], f["memory_mb"]), \
            f"definition vcpus={vc} metadata vcpus={mv} memory_mb={mm}, store {f}"
        a = cl.host()["allocated"]
        want = dict(f)
        if i["resize"]:
            for k in want:
                want[k] = max(want[k], i["resize"]["old_flavor"][k])
        got = {k: a[k] - h0[k] for k in ("vcpus", "memory_mb", "disk_gb")}
        assert got == want, f"claimed {got}, instance {short(i)}"
        vs = disk_vsize(disk)
        assert vs is not None and vs >= f["disk_gb"] << 30, f"disk virtual size {vs} < {f['disk_gb']} GiB"
        return i

    (d / "images").mkdir(exist_ok=True)
    img = d / "images" / "disk.raw"
    shutil.copy(gdir / "disk.raw", img)
    iid = None
    with c.case("launch a guest with a 1 GB disk", fatal=True):
        r = cl.launch({"name": f"{prefix}-g", "flavor": F1, "kernel": calib.guest_boot(gdir),
                       "image": {"path": str(img)}})
        iid = r["instance"]["id"]
        created.add(iid)
        op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
        assert op["state"] == "succeeded", short(op)
        watch = calib.ConsoleWatch(r["instance"]["console_log"])
        watch.wait_boot(120)
    disk = cl.instance(iid)["disk_path"] if "disk_path" in cl.instance(iid) else None
    disk = disk or str(d / "state" / "instances" / iid / "disk.qcow2")

    size = [1]

    def next_flavor():
        size[0] += 1
        return {"vcpus": 2, "memory_mb": 256, "disk_gb": size[0]}

    for point in COLD_POINTS:
        with c.case(f"{point}: kill -9, restart: the resize settles, one flavor, definition == store"):
            res = crash_run(point, lambda: cl.call("POST", f"/v1/instances/{iid}/actions",
                                                   {"action": "resize", "flavor": next_flavor(), "mode": "cold", "timeout": 5}))
            i = consistent(iid, disk)
            print(f"     ({point}: {i['state']} {i['flavor']})")
            assert i["state"] in ("resized", "running"), short(i)
        with c.case(f"{point}: then revert_resize gives the old flavor back, consistent"):
            i = settle(iid)
            if i["state"] == "resized":
                r = cl.action(iid, "revert_resize", timeout=5)
                op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
                assert op["state"] == "succeeded", short(op)
            i = consistent(iid, disk)
            assert i["state"] == "running" and i["flavor"]["vcpus"] == 1, short(i)

    for point in REVERT_POINTS:
        with c.case(f"{point}: kill -9 during a revert, restart: back on the old flavor, consistent"):
            r = cl.action(iid, "resize", flavor=next_flavor(), mode="cold", timeout=5)
            assert cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)["state"] == "succeeded"
            crash_run(point, lambda: cl.call("POST", f"/v1/instances/{iid}/actions", {"action": "revert_resize", "timeout": 5}))
            i = consistent(iid, disk)
            assert i["state"] == "running" and i["flavor"]["vcpus"] == 1, short(i)

    with c.case("confirm_resize:requested: kill -9, restart: confirmed, the new flavor alone claimed"):
        r = cl.action(iid, "resize", flavor=next_flavor(), mode="cold", timeout=5)
        assert cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)["state"] == "succeeded"
        crash_run("confirm_resize:requested",
                  lambda: cl.call("POST", f"/v1/instances/{iid}/actions", {"action": "confirm_resize"}))
        i = consistent(iid, disk)
        assert i["state"] == "running" and i["resize"] is None and i["flavor"]["vcpus"] == 2, short(i)

    with c.case("resize:applied (live 128 -> 256 MiB): kill -9, restart: settles live, consistent"):
        i = cl.instance(iid)
        want = {"vcpus": i["flavor"]["vcpus"], "memory_mb": 256 if i["flavor"]["memory_mb"] != 256 else 192}
        crash_run("resize:applied", lambda: cl.call("POST", f"/v1/instances/{iid}/actions",
                                                    {"action": "resize", "mode": "live", "flavor": want}))
        i = consistent(iid, disk)
        assert i["state"] == "running" and i["flavor"]["memory_mb"] == want["memory_mb"], short(i)
        assert i["resize"] is None, short(i)

    with c.case("terminate; agent exits 0"):
        r = cl.terminate(iid)
        cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
        cl.wait_state(iid, "terminated", timeout=60)
        assert domstate(uri, iid) is None
        assert agent.stop(timeout=60) == 0


if __name__ == "__main__":
    calib.run("test_resize_crash_qemu", main)
