#!/usr/bin/env python3
"""Adoption from libvirt metadata after a lost store, on a real libvirtd (CA_LIBVIRT_URI,
else skip) with QEMU/TCG guests:

 - agent A (host name A) launches a kernel-boot guest and a disk-boot guest; agent B
   (host name B, its own state dir and socket, the same libvirtd) launches one guest;
 - A is killed with SIGKILL and its store (agent.db, -wal, -shm) deleted; restarted, it
   takes back both guests from their <metadata>: same id, ec2_id, name, flavor and boot
   source, running, counted in GET /v1/host allocated; B's guest is not listed, counted
   only as foreign usage;
 - domains this test defines by hand with metadata A must refuse are left alone: one
   written before the owner was recorded (no host), one naming host A but another
   libvirt host UUID, one with an invalid flavor;
 - the same for B: after its own wiped store it sees only its guest; neither agent
   marks the other's guests as error.
Every guest is terminated through the API; the hand-made domains are undefined.
"""

import os
import shutil
import sys
import uuid as uuidlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import domstate, short  # noqa: E402

OP_TIMEOUT = 120.0
NS = "http://compute-agent.org/xmlns/instance/1.0"


def wipe_store(state_dir):
    for suffix in ("", "-wal", "-shm"):
        p = state_dir / f"agent.db{suffix}"
        if p.exists():
            p.unlink()
    assert not (state_dir / "agent.db").exists()


def handmade_domain(uri, d, name, meta):
    """Define (not start) a domain carrying `meta` as our metadata; returns its uuid."""
    u = str(uuidlib.uuid4())
    xml = (f"<domain type='qemu'><name>{name}</name><uuid>{u}</uuid>"
           f"<metadata>{meta.replace('UUID', u)}</metadata>"
           "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
           "<os><type arch='x86_64'>hvm</type></os></domain>")
    f = d / f"{name}.xml"
    f.write_text(xml)
    calib.virsh(uri, "define", str(f), check=True)
    return u


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    calib.require_agent_binary()
    d = calib.tmpdir("ca-adopt-")
    prefix = calib.unique("ca-it-adopt")
    host_a, host_b = f"{prefix}-ha", f"{prefix}-hb"
    a = calib.Agent(d / "a", hypervisor="qemu", libvirt_uri=uri, extra_args=["--host-name", host_a])
    b = calib.Agent(d / "b", hypervisor="qemu", libvirt_uri=uri, extra_args=["--host-name", host_b])
    c.agents += [a, b]
    created = set()
    try:
        body_of_test(c, uri, gdir, d, prefix, a, b, created)
    finally:
        for ag in (a, b):
            if ag.alive():
                ag.kill()
        removed = calib.cleanup_domains(uri, created, marker=prefix)
        if removed:
            print(f"     (cleanup: removed domains {sorted(removed)})")


def launch(cl, body, created):
    r = cl.launch(body)
    inst = r["instance"]
    created.add(inst["id"])
    op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
    assert op["state"] == "succeeded", short(op)
    return cl.wait_state(inst["id"], "running", timeout=60)


def identity(i):
    return {k: i[k] for k in ("id", "ec2_id", "name", "flavor", "instance_type", "boot", "console_log")}


def body_of_test(c, uri, gdir, d, prefix, a, b, created):
    host_a, host_b = f"{prefix}-ha", f"{prefix}-hb"
    with c.case("agents A and B start on the same libvirtd with different host names", fatal=True):
        a.start(timeout=180)
        b.start(timeout=180)
    spec_log = calib.SpecLog()
    ca = a.client(timeout=60, spec_log=spec_log)
    cb = b.client(timeout=60, spec_log=spec_log)
    with c.case("libvirt's host UUID is known (virsh capabilities)", fatal=True):
        caps = calib.virsh(uri, "capabilities", check=True)[1]
        host_uuid = caps.split("<uuid>", 1)[1].split("</uuid>", 1)[0].strip()
        assert len(host_uuid) == 36, host_uuid

    boot = calib.guest_boot(gdir)
    disk = d / "images" / f"{prefix}.raw"  # images/ beside the state dirs: a listed local_image_dir
    disk.parent.mkdir(exist_ok=True)
    shutil.copy(gdir / "disk.raw", disk)
    mine = {}
    with c.case("A launches a kernel-boot guest and a disk-boot guest -> running", fatal=True):
        g1 = launch(ca, {"name": f"{prefix}-k", "flavor": {"vcpus": 1, "memory_mb": 128, "disk_gb": 0},
                         "kernel": boot}, created)
        g2 = launch(ca, {"name": f"{prefix}-d", "flavor": {"vcpus": 1, "memory_mb": 96, "disk_gb": 1},
                         "image": {"path": str(disk)}}, created)
        mine = {g1["id"]: identity(g1), g2["id"]: identity(g2)}
    with c.case("B launches a kernel-boot guest -> running", fatal=True):
        g3 = launch(cb, {"name": f"{prefix}-b", "flavor": {"vcpus": 1, "memory_mb": 112, "disk_gb": 0},
                         "kernel": boot}, created)
    theirs = {g3["id"]: identity(g3)}

    with c.case("the domain metadata records the owning host (name and libvirt host UUID)"):
        for iid, name in ((g1["id"], host_a), (g2["id"], host_a), (g3["id"], host_b)):
            xml = calib.domain_xml(uri, iid)
            assert f'name="{name}"' in xml and f'uuid="{host_uuid}"' in xml, xml[:1500]

    with c.case("domains A must refuse, defined by hand (shut off): no host, other libvirt host, bad flavor"):
        old = handmade_domain(uri, d, f"{prefix}-old", (
            f'<ca:instance xmlns:ca="{NS}"><ca:uuid>UUID</ca:uuid><ca:ec2-id>i-0123456789abcdef0</ca:ec2-id>'
            f'<ca:name>{prefix}-old</ca:name><ca:flavor vcpus="1" memory_mb="64" disk_gb="0"/>'
            f'<ca:kernel path="/boot/vmlinuz"/></ca:instance>'))
        other = handmade_domain(uri, d, f"{prefix}-other", (
            f'<ca:instance xmlns:ca="{NS}"><ca:uuid>UUID</ca:uuid><ca:ec2-id>i-0123456789abcdef1</ca:ec2-id>'
            f'<ca:name>{prefix}-other</ca:name><ca:host name="{prefix}-ha" uuid="{uuidlib.uuid4()}"/>'
            f'<ca:flavor vcpus="1" memory_mb="64" disk_gb="0"/>'
            f'<ca:kernel path="/boot/vmlinuz"/></ca:instance>'))
        bad = handmade_domain(uri, d, f"{prefix}-bad", (
            f'<ca:instance xmlns:ca="{NS}"><ca:uuid>UUID</ca:uuid><ca:ec2-id>i-0123456789abcdef2</ca:ec2-id>'
            f'<ca:name>{prefix}-bad</ca:name><ca:host name="{prefix}-ha" uuid="{host_uuid}"/>'
            f'<ca:flavor vcpus="lots" memory_mb="64" disk_gb="0"/>'
            f'<ca:kernel path="/boot/vmlinuz"/></ca:instance>'))
        created.update((old, other, bad))

    with c.case("SIGKILL A, delete its store, restart: both guests are back with their identity", fatal=True):
        a.kill()
        wipe_store(a.state_dir)
        a.start(timeout=180)
        got = {i["id"]: i for i in ca.instances()}
        assert set(got) == set(mine), f"listed {sorted(got)}, want {sorted(mine)}"
        for iid, want in mine.items():
            i = ca.wait_settled(iid, timeout=60)
            assert identity(i) == want, f"{short(identity(i), 900)} != {short(want, 900)}"
            assert i["state"] == "running", short(i)
            assert domstate(uri, iid) == "running", f"domstate {domstate(uri, iid)!r}"
    with c.case("A's GET /v1/host counts the adopted guests as allocated, B's as foreign"):
        h = ca.host()
        assert h["instances"] == 2, short(h)
        assert h["allocated"] == {"vcpus": 2, "memory_mb": 224, "disk_gb": 1}, short(h["allocated"])
        f = h["foreign"]
        # B's guest and the two well-formed hand-made domains (other agents' guests may add more)
        assert f["domains"] >= 3 and f["vcpus"] >= 3 and f["memory_mb"] >= 112 + 64 + 64, short(f)
        free = h["free"]
        assert free["memory_mb"] <= h["capacity"]["memory_mb"] - 224 - 240, short(h)
    with c.case("A's log names why each refused domain was left alone"):
        text = a.log_path.read_text(errors="replace")
        for u, why in ((old, "no owning host"), (other, "another libvirt host"), (bad, "flavor")):
            line = next((l for l in text.splitlines() if u in l and "left alone" in l), "")
            assert line and why in line, f"{u}: {line or 'no line'}"
        assert g3["id"] in text and host_b in text, "B's guest not logged as owned by host B"
    with c.case("the refused domains are untouched (still defined, shut off)"):
        for u in (old, other, bad):
            assert domstate(uri, u) == "shut off", f"{u}: {domstate(uri, u)!r}"

    with c.case("SIGKILL B, delete its store, restart: only B's guest is back, A's untouched"):
        b.kill()
        wipe_store(b.state_dir)
        b.start(timeout=180)
        got = {i["id"]: i for i in cb.instances()}
        assert set(got) == set(theirs), f"B lists {sorted(got)}, want {sorted(theirs)}"
        i = cb.wait_settled(g3["id"], timeout=60)
        assert identity(i) == theirs[g3["id"]] and i["state"] == "running", short(i)
        hb = cb.host()
        assert hb["instances"] == 1 and hb["allocated"]["memory_mb"] == 112, short(hb)
    with c.case("neither agent marks the other's guests: A's still running in A, B's in B"):
        for iid in mine:
            i = ca.instance(iid)
            assert i["state"] == "running" and not i["fault"], short(i)
            assert domstate(uri, iid) == "running"
        assert domstate(uri, g3["id"]) == "running"

    with c.case("terminate every guest through its own agent -> no domain left"):
        for cl, ids in ((ca, list(mine)), (cb, [g3["id"]])):
            for iid in ids:
                r = cl.terminate(iid)
                op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
                assert op["state"] == "succeeded", short(op)
                assert domstate(uri, iid) is None, f"{iid} still there"
        for u in (old, other, bad):
            calib.destroy_domain(uri, u)
            assert domstate(uri, u) is None

    spec_log.check(c)
    with c.case("both agents exit 0 on SIGTERM"):
        assert a.stop(timeout=60) == 0 and b.stop(timeout=60) == 0


if __name__ == "__main__":
    calib.run("test_adopt_core", main)
