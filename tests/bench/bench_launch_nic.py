#!/usr/bin/env python3
"""Issue 10's benchmark: the launch of a real guest with a NIC beside one without
(target: added time < 50 ms). In a test network of its own (tests/env/netns.sh start:
a network namespace with a private libvirtd; stopped at the end, nothing left), the agent
runs with the QEMU driver and one bridge network; N launches (default 5) of each kind,
alternating, of the test guest (tests/env/build-guest.sh), each timed from the API's
launch call until its operation succeeded (long-poll), the instance is `running` and the
domain active; each guest terminated after. Baseline in the same run: raw `virsh create`
of the agent's own domain XML of each kind (the NIC's <interface> as libvirt plugs it:
type='bridge' on the same bridge), until it returns (domain active). One guest with a NIC
stays up throughout, so the bridge exists (steady state: the first port of a network
also makes its bridge). Prints each, the
medians and the differences, and where the NIC's time goes: the agent's journal steps
(debug log `operation step`, the time until the next step) with vs without.
Usage: bench_launch_nic.py BUILD_DIR [N]. Not root / no guest / no QEMU: SKIP, exit 0."""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import shutil
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 5
os.environ["BUILD"] = BUILD
NETNS_SH = ROOT / "tests" / "env" / "netns.sh"
NET, BR, CIDR, GW = "bn", "ca-bnic0", "10.93.0.0/24", "10.93.0.1"


def skip(why):
    print(f"bench_launch_nic: SKIP ({why})")
    sys.exit(0)


if os.geteuid() != 0:
    skip("needs root for a network namespace and a private libvirtd")
if not shutil.which("qemu-system-x86_64") or not shutil.which("virsh"):
    skip("no qemu-system-x86_64 or virsh")
GDIR = Path(os.environ.get("CA_GUEST_DIR") or
            Path(os.environ.get("CA_CACHE_DIR") or Path.home() / ".cache/compute-agent-tests") / "guest")
if not (GDIR / "vmlinuz").is_file():
    r = subprocess.run([str(ROOT / "tests/env/build-guest.sh"), str(GDIR)], capture_output=True, text=True)
    if r.returncode != 0 or not (GDIR / "vmlinuz").is_file():
        skip(f"no test guest in {GDIR} and tests/env/build-guest.sh failed")
os.environ["CA_GUEST_DIR"] = str(GDIR)

sys.path.insert(0, str(ROOT / "tests" / "lib"))
import netenv  # noqa: E402
from netenv import calib  # noqa: E402


def med(v):
    return statistics.median(v) if v else float("nan")


def ms(v):
    return " ".join(f"{x * 1e3:.0f}" for x in v)


def virsh(uri, *args, check=True, timeout=120):
    p = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def launch_once(cl, uri, name, nic):
    body = netenv.launch_body(name, GDIR, (), [{"network": NET}] if nic else [])
    t0 = time.monotonic()
    r = cl.launch(body)
    iid, oid = r["instance"]["id"], r["operation"]["id"]
    op = None
    while op is None or op["state"] not in ("succeeded", "failed"):   # long-poll, the agent answers at the end
        st, op = cl.get(f"/v1/operations/{oid}?wait=120")
        assert st == 200, f"GET operation -> {st} {op}"
    t1 = time.monotonic()
    assert op["state"] == "succeeded", calib.short(op)
    inst = cl.instance(iid)
    assert inst["state"] == "running", calib.short(inst)
    assert virsh(uri, "domstate", iid).strip() == "running"
    return iid, oid, t1 - t0


def terminate(cl, iid):
    st, op = cl.call("DELETE", f"/v1/instances/{iid}")
    assert st == 202, f"DELETE -> {st} {op}"
    oid = op["operation"]["id"]
    while op.get("state") not in ("succeeded", "failed"):
        st, op = cl.get(f"/v1/operations/{oid}?wait=120")
    assert op["state"] == "succeeded", calib.short(op)


LINE_RE = re.compile(r'^ts=(\S+) .* op=(\S+) type=launch step=(\S+)')


def step_times(log_text, oid):
    """[(step, seconds)] from the agent's log: each step is journaled when the job that
    reaches it returns ("ports" after the plug, "defined" after the define, "started" with
    the end), so the time from the line before is that step's work."""
    pts = []
    for line in log_text.splitlines():
        m = LINE_RE.match(line)
        if m and m.group(2) == oid:
            pts.append((m.group(3), datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()))
    return [(st, t2 - t) for (_, t), (st, t2) in zip(pts, pts[1:])]


def raw_xml(uri, iid, nic, d):
    """The agent's domain XML, renamed, new uuid, no agent metadata; the NIC as libvirt plugs it."""
    root = ET.fromstring(virsh(uri, "dumpxml", "--inactive", iid))
    name = f"ca-bench-raw-{uuid.uuid4().hex[:8]}"
    root.find("name").text = name
    for tag in ("uuid", "metadata"):
        e = root.find(tag)
        if e is not None:
            root.remove(e)
    for sysinfo in root.findall("sysinfo"):   # its uuid would have to be the domain's
        for system in sysinfo.findall("system"):
            for e in list(system):
                if e.get("name") == "uuid":
                    system.remove(e)
    devs = root.find("devices")
    for itf in devs.findall("interface"):
        devs.remove(itf)
        if nic:
            n = ET.SubElement(devs, "interface", {"type": "bridge"})
            ET.SubElement(n, "source", {"bridge": BR})
            mac = itf.find("mac")
            if mac is not None:
                ET.SubElement(n, "mac", {"address": "52:54:00:93:ff:" + uuid.uuid4().hex[:2]})
            ET.SubElement(n, "model", {"type": "virtio"})
    for s in root.iter("source"):   # the serial log: a file of the raw run's own
        if s.get("path", "").endswith(".log"):
            s.set("path", f"{d}/{name}.log")
    return name, ET.tostring(root, encoding="unicode")


def raw_once(uri, xml, d, name):
    f = Path(d) / f"{name}.xml"
    f.write_text(xml)
    try:
        t0 = time.monotonic()
        virsh(uri, "create", str(f))
        t = time.monotonic() - t0
        assert virsh(uri, "domstate", name).strip() == "running"
        return t
    finally:
        virsh(uri, "destroy", name, check=False)
        for p in Path(d).glob(f"{name}*.log"):
            p.unlink()


def main():
    d = Path(tempfile.mkdtemp(prefix="ca-bench-ln-"))
    env = dict(os.environ)
    env.setdefault("CA_NETNS_NAME", f"ca-netns-bl-{os.getpid()}")
    p = subprocess.run([str(NETNS_SH), "start", str(d / "netns")], env=env, capture_output=True, text=True,
                       timeout=300)
    vals = dict(re.findall(r"^(CA_NETNS\w*)='?([^'\n]*)'?$", p.stdout, re.M))
    agent = None
    try:
        if p.returncode != 0 or "CA_NETNS" not in vals:
            skip("tests/env/netns.sh start failed: " + (p.stderr.strip().splitlines() or ["?"])[-1])
        ns, uri = vals["CA_NETNS"], vals["CA_NETNS_LIBVIRT_URI"]
        conf = d / "agent.conf"
        conf.write_text(netenv.config_text({NET: {"type": "bridge", "bridge": BR, "cidr": CIDR, "gateway": GW}},
                                           None))
        agent = netenv.NetnsAgent(ns, d / "state", hypervisor="qemu", libvirt_uri=uri, log_level="debug",
                                  local_image_dirs=[GDIR],
                                  extra_args=["--config", str(conf), "--host-name", calib.unique("ca-bench-ln")])
        agent.start(timeout=180)
        cl = agent.client(timeout=150)
        # one of each first, not counted (QEMU warm); the NIC one stays up to the end, so
        # the bridge (made by the first port, deleted with the last) is there for every
        # measured launch and for the raw baseline: the steady state of a host
        res, raw, ops, xml = {True: [], False: []}, {True: [], False: []}, {True: [], False: []}, {}
        keep, _, _ = launch_once(cl, uri, "bln-keep", True)
        xml[True] = raw_xml(uri, keep, True, d)
        iid, _, _ = launch_once(cl, uri, "bln-warm", False)
        xml[False] = raw_xml(uri, iid, False, d)
        terminate(cl, iid)
        for k in range(N):   # alternating order; the raw baseline in the same rounds
            for nic in (False, True) if k % 2 == 0 else (True, False):
                iid, oid, t = launch_once(cl, uri, f"bln-{'nic' if nic else 'none'}-{k}", nic)
                res[nic].append(t)
                ops[nic].append(oid)
                terminate(cl, iid)
                name, x = xml[nic]
                raw[nic].append(raw_once(uri, x.replace(name, f"{name}-{k}"), d, f"{name}-{k}"))
        terminate(cl, keep)
        log_text = agent.log_path.read_text(errors="replace")
    finally:
        if agent is not None and agent.alive():
            agent.stop(timeout=60)
        subprocess.run([str(NETNS_SH), "stop", str(d / "netns")], env=env, capture_output=True, timeout=300)
        shutil.rmtree(d, ignore_errors=True)

    a_nic, a_none, r_nic, r_none = med(res[True]), med(res[False]), med(raw[True]), med(raw[False])
    print(f"bench_launch_nic: {N} launches each, alternating, TCG test guest, private libvirtd in a netns")
    print(f"  load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
          f"(a shared machine: the least disturbed run, min, is shown beside the median)")
    for label, v in (("agent, launch -> running, no NIC: ", res[False]), ("agent, launch -> running, one NIC:", res[True]),
                     ("virsh create, no NIC:             ", raw[False]), ("virsh create, one NIC (bridge):   ", raw[True])):
        print(f"  {label} median {med(v) * 1e3:6.0f} ms, min {min(v) * 1e3:5.0f} ms  (each: {ms(v)})")
    print(f"  added by the NIC, min: agent {(min(res[True]) - min(res[False])) * 1e3:+.0f} ms, "
          f"virsh {(min(raw[True]) - min(raw[False])) * 1e3:+.0f} ms")
    added, raw_added = a_nic - a_none, r_nic - r_none
    print(f"  added by the NIC, medians: agent {added * 1e3:+.0f} ms, virsh {raw_added * 1e3:+.0f} ms; "
          f"agent/virsh launch ratio: no NIC {a_none / r_none:.2f}x, NIC {a_nic / r_nic:.2f}x")
    # where the time goes: median per journal step, with vs without
    per = {}
    for nic in (False, True):
        for oid in ops[nic]:
            for st, t in step_times(log_text, oid):
                per.setdefault(st, {True: [], False: []})[nic].append(t)
    what = {"ports": "ports (the plug job)", "defined": "defined (the define job)",
            "started": "started (the start job)"}
    if per:
        print("  journal steps, median ms of the job reaching each (agent log): no NIC / NIC / added")
        for st, v in per.items():
            no, yes = (med(v[False]) if v[False] else 0.0), med(v[True])
            print(f"    {what.get(st, st):28s} {no * 1e3:7.1f} / {yes * 1e3:7.1f} / {(yes - no) * 1e3:+7.1f}")
    # the agent's own part: each launch's time less its start job (libvirt + QEMU, whose
    # NIC cost the virsh rows measure): far less noisy than the whole
    own = {}
    for nic in (False, True):
        own[nic] = []
        for t, oid in zip(res[nic], ops[nic]):
            start = [x for st, x in step_times(log_text, oid) if st == "started"]
            if start:
                own[nic].append(t - start[0])
    if own[False] and own[True]:
        print(f"  the agent's own part (launch less the start job): no NIC median {med(own[False]) * 1e3:.1f} ms, "
              f"NIC {med(own[True]) * 1e3:.1f} ms: the NIC adds {(med(own[True]) - med(own[False])) * 1e3:+.1f} ms")
    pairs = [b - a for a, b in zip(res[False], res[True])]
    rpairs = [b - a for a, b in zip(raw[False], raw[True])]
    print(f"  paired rounds (NIC - none, ms): agent {' '.join(f'{x * 1e3:+.0f}' for x in pairs)}, "
          f"median {med(pairs) * 1e3:+.0f}; virsh {' '.join(f'{x * 1e3:+.0f}' for x in rpairs)}, "
          f"median {med(rpairs) * 1e3:+.0f}")
    print(f"  added by the NIC to the agent's launch, median of the paired rounds: {med(pairs) * 1e3:+.0f} ms "
          f"(target < 50 ms: {'met' if med(pairs) < 0.05 else 'MISSED'})")
    print(f"  the agent's NIC cost beyond libvirt's (added by the agent minus added by virsh): "
          f"{(added - raw_added) * 1e3:+.0f} ms (medians), {(med(pairs) - med(rpairs)) * 1e3:+.0f} ms (paired); "
          f"spread of one kind alone: {(max(res[False]) - min(res[False])) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
