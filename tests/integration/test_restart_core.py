#!/usr/bin/env python3
"""A real guest under a real libvirtd (CA_LIBVIRT_URI, else skip), booted from CA_GUEST_DIR's
vmlinuz + initrd.gz: launch -> booted marker on the console log -> stop -> start -> reboot;
the agent stopped with SIGTERM (and crashed with SIGKILL) leaves the guest running and a
restarted agent adopts it with the same ids; a guest shut off while the agent was down is
seen as stopped; terminate leaves no domain.
"""

import os
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import domstate, short  # noqa: E402

BOOT_TIMEOUT = 120.0
OP_TIMEOUT = 120.0


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    calib.require_agent_binary()
    d = calib.tmpdir("ca-restart-")
    prefix = calib.unique("ca-it-restart")
    created = set()
    agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri)
    c.agents.append(agent)
    try:
        body_of_test(c, uri, gdir, agent, prefix, created)
    finally:
        if agent.alive():
            agent.kill()
        removed = calib.cleanup_domains(uri, created, marker=prefix)
        if removed:
            print(f"     (cleanup: removed domains {sorted(removed)})")


def body_of_test(c, uri, gdir, agent, prefix, created):
    with c.case(f"agent starts with --hypervisor qemu --libvirt-uri {uri}", fatal=True):
        agent.start(timeout=180)
    spec_log = calib.SpecLog()
    cl = agent.client(timeout=60, spec_log=spec_log)

    with c.case("host: hypervisor qemu, domain_type qemu, libvirt connected"):
        h = cl.host()
        assert h["hypervisor"] == "qemu" and h["domain_type"] == "qemu", short(h)
        assert h["libvirt_uri"] == uri and h["libvirt"]["connected"] is True, short(h)

    boot = calib.guest_boot(gdir)
    inst = None
    watch = None
    with c.case("launch a 1-vCPU 128 MiB kernel-boot guest -> op succeeded, running", fatal=True):
        r = cl.launch({"name": f"{prefix}-g1", "flavor": {"vcpus": 1, "memory_mb": 128, "disk_gb": 0},
                       "kernel": boot})
        inst = r["instance"]
        created.add(inst["id"])
        watch = calib.ConsoleWatch(inst["console_log"])
        op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
        assert op["state"] == "succeeded", short(op)
        cl.wait_state(inst["id"], "running", timeout=60)
    iid = inst["id"]

    with c.case("libvirt has a running domain with the instance's UUID (1 vCPU, 128 MiB, type qemu)"):
        assert domstate(uri, iid) == "running", f"domstate {domstate(uri, iid)!r}"
        xml = calib.domain_xml(uri, iid)
        assert "type='qemu'" in xml or 'type="qemu"' in xml, "domain type is not qemu"
        assert "<memory unit='KiB'>131072</memory>" in xml, "memory is not 128 MiB"
        # the vCPUs the guest has: <vcpu current='1'>MAX</vcpu> with resize headroom (issue 12)
        assert ">1</vcpu>" in xml or re.search(r"<vcpu[^>]*current=['\"]1['\"]", xml), "vcpus is not 1"

    with c.case(f"console_log shows '{calib.BOOT_MARKER}' (deadline {BOOT_TIMEOUT:g} s)", fatal=True):
        watch.wait_boot(BOOT_TIMEOUT)
    with c.case("the guest saw the requested kernel cmdline"):
        text = open(inst["console_log"], errors="replace").read()
        assert f"COMPUTE-AGENT-GUEST: cmdline {boot['cmdline']}" in text, text[-500:]

    def act(action, want, dom_want, **extra):
        r = cl.action(iid, action, **extra)
        op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
        assert op["state"] == "succeeded", short(op)
        i = cl.wait_state(iid, want, timeout=60)
        ds = domstate(uri, iid)
        assert ds in dom_want, f"after {action}: libvirt says {ds!r}, expected {dom_want}"
        return i

    with c.case("stop (graceful, timeout 60) -> stopped, domain shut off"):
        watch.mark()
        act("stop", "stopped", ("shut off", None), timeout=60)
    with c.case("that stop was graceful: the guest got the ACPI power button"):
        assert "COMPUTE-AGENT-GUEST: power button, powering off" in watch.since_mark(), \
            "no power-button line on the console: the guest was destroyed, not shut down " \
            "(domain XML without <features><acpi/>?)"
    with c.case("start -> running, domain running, guest boots again"):
        watch.mark()
        act("start", "running", ("running",))
        watch.wait_boot(BOOT_TIMEOUT)
    with c.case("reboot -> running, guest boots again"):
        watch.mark()
        act("reboot", "running", ("running",))
        watch.wait_boot(BOOT_TIMEOUT)

    with c.case("SIGTERM the agent: exits 0, the guest keeps running"):
        rc = agent.stop(timeout=60)
        assert rc == 0, f"exit code {rc}"
        assert domstate(uri, iid) == "running", f"domstate {domstate(uri, iid)!r}"
        ticks = open(inst["console_log"], errors="replace").read().count("COMPUTE-AGENT-GUEST: tick")
        calib.wait_for(lambda: open(inst["console_log"], errors="replace").read()
                       .count("COMPUTE-AGENT-GUEST: tick") > ticks, timeout=30,
                       what="the guest to keep ticking while the agent is down")

    with c.case("restarted agent adopts the guest: running, same id and ec2_id, listed once"):
        agent.start(timeout=180)
        i = cl.wait_settled(iid, timeout=60)
        assert i["state"] == "running", short(i)
        assert i["id"] == iid and i["ec2_id"] == inst["ec2_id"], short(i)
        assert [x["id"] for x in cl.instances()].count(iid) == 1, "not listed exactly once"
        assert domstate(uri, iid) == "running", f"domstate {domstate(uri, iid)!r}"

    with c.case("SIGKILL the agent: the guest keeps running; restart adopts it"):
        agent.kill()
        assert domstate(uri, iid) == "running", f"domstate {domstate(uri, iid)!r}"
        agent.start(timeout=180)
        i = cl.wait_settled(iid, timeout=60)
        assert i["state"] == "running" and i["ec2_id"] == inst["ec2_id"], short(i)

    with c.case("guest destroyed while the agent is down -> restarted agent shows it stopped"):
        agent.stop(timeout=60)
        calib.virsh(uri, "destroy", iid, check=True)
        agent.start(timeout=180)
        i = cl.wait_settled(iid, timeout=60)
        assert i["state"] == "stopped", f"state {i['state']!r} but libvirt says {domstate(uri, iid)!r}: {short(i)}"

    with c.case("start after that -> running again"):
        watch.mark()
        act("start", "running", ("running",))
        watch.wait_boot(BOOT_TIMEOUT)

    with c.case("terminate -> terminated, no domain left"):
        r = cl.terminate(iid)
        op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
        assert op["state"] == "succeeded", short(op)
        cl.wait_state(iid, "terminated", timeout=60)
        assert domstate(uri, iid) is None, f"domain still there: {domstate(uri, iid)!r}"

    spec_log.check(c)

    with c.case("agent exits 0 on SIGTERM"):
        rc = agent.stop(timeout=60)
        assert rc == 0, f"exit code {rc}"


if __name__ == "__main__":
    calib.run("test_restart_core", main)
