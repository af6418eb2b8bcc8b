#!/usr/bin/env python3
"""Issue 11: a kernel-only launch with disk_gb > 0 gets that disk (a blank qcow2 of disk_gb GiB, as
nova's ephemeral disk) on the real libvirtd+QEMU: the domain has it, `qemu-img info` shows its size and
no backing file; counted disk is disk that exists. Terminate removes the domain."""

import json
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    calib.require_agent_binary()
    d = calib.tmpdir("ca-ephem-")
    prefix = calib.unique("ca-it-ephem")
    agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri, log_level="info")
    c.agents.append(agent)
    created = set()
    try:
        with c.case("agent starts on the real libvirtd", fatal=True):
            agent.start(timeout=180)
        cl = agent.client(timeout=60)
        boot = calib.guest_boot(gdir)
        with c.case("kernel-only launch with disk_gb 1 -> running", fatal=True):
            r = cl.launch({"name": f"{prefix}-g", "flavor": {"vcpus": 1, "memory_mb": 128, "disk_gb": 1},
                           "kernel": boot})
            iid = r["instance"]["id"]
            created.add(iid)
            op = cl.wait_operation(r["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
        with c.case("the domain has a 1 GiB qcow2 disk with no backing file"):
            xml = subprocess.run(["virsh", "-c", uri, "dumpxml", iid], capture_output=True, text=True,
                                 check=True).stdout
            m = re.search(r"<disk type='file' device='disk'>.*?<source file='([^']+)'", xml, re.S)
            assert m, f"no file disk in the domain:\n{xml[:2000]}"
            info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", m.group(1)],
                                             capture_output=True, text=True, check=True).stdout)
            assert info["format"] == "qcow2" and info["virtual-size"] == 1 << 30, short(info)
            assert "backing-filename" not in info, short(info)
        with c.case("terminate -> no domain left"):
            r = cl.terminate(iid)
            op = cl.wait_operation(r["operation"]["id"], timeout=60)
            assert op["state"] == "succeeded", short(op)
            out = subprocess.run(["virsh", "-c", uri, "domstate", iid], capture_output=True, text=True)
            assert out.returncode != 0, f"domain still there: {out.stdout}"
            created.discard(iid)
    finally:
        if agent.alive():
            agent.stop()
        calib.cleanup_domains(uri, created, marker=prefix)


if __name__ == "__main__":
    calib.run("test_lifecycle_ephemeral_qemu", main)
