#!/usr/bin/env python3
"""Issue 12's QEMU benchmark (bench-resize.sh runs it): a real TCG guest's resize beside
libvirt driven by hand in the same run, on the private libvirtd the integration tests use
(tests/env/libvirtd.sh, shared, stopped by its last user).

- Live: N rounds (default 3) of vCPUs 1 -> 2 and memory 256 -> 512 -> 256 MiB through
  the agent (POST .../actions resize mode=live), each timed from the request to the guest
  seeing it (its serial marker `COMPUTE-AGENT-GUEST: size cpus=... memtotal_kb=...`, from
  tests/env/build-guest.sh's onliner) when the guest prints that marker; a guest that does
  not (an older build-guest.sh) is timed to the operation's end, and the output says so.
  Baseline: a domain defined the same way (the agent's own domain XML, renamed, its own
  copy of the disk), `virsh setvcpus --live` / `virsh setmem --live` timed the same way
  (to the marker, or to virsh's return; the time until `virsh vcpucount` / `dommemstat`
  show the new size is printed too). Target <= 1.2x.
- Cold: at the end of each round back to 1 vCPU (the test guest cannot give a vCPU back
  live: QEMU's unplug request times out), mode cold, request to the operation's end (the
  guest shut down, redefined, started), then confirm_resize (not timed); beside `virsh shutdown`
  (until shut off) + `virsh define` + `virsh start` of the raw domain. The guest's own
  shutdown time (the raw shutdown part) is shown. Target <= 1.1x plus that shutdown time.
Usage: bench_resize_qemu.py BUILD_DIR [N]. Not root, no QEMU, no guest: SKIP, exit 0."""

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3
os.environ["BUILD"] = BUILD
SIZE_RE = re.compile(r"COMPUTE-AGENT-GUEST: size cpus=(\S+) memtotal_kb=(\d+)")
SEEN_TIMEOUT = 60.0
# the guest's MemTotal at 256 / 512 MiB is some tens of MiB under each (the kernel's own)
MEM_LOW, MEM_HIGH = 300 * 1024, 400 * 1024


def skip(why):
    print(f"bench_resize_qemu: SKIP ({why})")
    sys.exit(0)


if os.geteuid() != 0:
    skip("needs root for the private libvirtd")
if not shutil.which("qemu-system-x86_64") or not shutil.which("virsh"):
    skip("no qemu-system-x86_64 or virsh")
GDIR = Path(os.environ.get("CA_GUEST_DIR") or
            Path(os.environ.get("CA_CACHE_DIR") or Path.home() / ".cache/compute-agent-tests") / "guest")
if not (GDIR / "vmlinuz").is_file():
    r = subprocess.run([str(ROOT / "tests/env/build-guest.sh"), str(GDIR)], capture_output=True, text=True)
    if r.returncode != 0 or not (GDIR / "vmlinuz").is_file():
        skip(f"no test guest in {GDIR} and tests/env/build-guest.sh failed")
os.environ["CA_GUEST_DIR"] = str(GDIR)

sys.path.insert(0, str(ROOT / "tests" / "integration"))
import calib  # noqa: E402


def med(v):
    return statistics.median(v) if v else float("nan")


def ncpus(spec):
    n = 0
    for part in spec.split(","):
        a, _, b = part.partition("-")
        n += (int(b) - int(a) + 1) if b else 1
    return n


def virsh(uri, *args, check=True, timeout=120):
    p = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


class Guest:
    """A guest's serial log: its last size marker."""

    def __init__(self, log):
        self.watch = calib.ConsoleWatch(log)

    def size(self):
        m = SIZE_RE.findall(self.watch.text())
        return (ncpus(m[-1][0]), int(m[-1][1])) if m else None

    def wait(self, pred, what, timeout=SEEN_TIMEOUT):
        return calib.wait_for(lambda: (lambda s: s if s and pred(s) else None)(self.size()), timeout,
                              interval=0.02, what=what, last=self.size)


def op_wait(cl, oid):
    op = None
    while op is None or op["state"] not in ("succeeded", "failed"):   # long-poll: answered at the end
        st, op = cl.get(f"/v1/operations/{oid}?wait=120")
        assert st == 200, f"GET operation -> {st} {op}"
    assert op["state"] == "succeeded", calib.short(op)
    return op


def raw_xml(uri, iid, d):
    """The agent's domain XML, renamed, a new uuid, no agent metadata, its own disk copy and log."""
    root = ET.fromstring(virsh(uri, "dumpxml", "--inactive", iid))
    name = f"ca-bench-rsz-raw-{uuid.uuid4().hex[:8]}"
    root.find("name").text = name
    for tag in ("uuid", "metadata"):
        e = root.find(tag)
        if e is not None:
            root.remove(e)
    for sysinfo in root.findall("sysinfo"):
        for system in sysinfo.findall("system"):
            for e in list(system):
                if e.get("name") == "uuid":
                    system.remove(e)
    for disk in root.iter("disk"):
        src, drv = disk.find("source"), disk.find("driver")
        if src is not None and src.get("file"):
            copy = d / f"{name}-disk.raw"
            shutil.copy(GDIR / "disk.raw", copy)
            src.set("file", str(copy))
            if drv is not None:
                drv.set("type", "raw")
            bs = disk.find("backingStore")
            if bs is not None:
                disk.remove(bs)
    log = d / f"{name}.log"
    for e in root.iter():
        for attr in ("path", "file"):
            if e.tag in ("source", "log") and e.get(attr, "").endswith(".log"):
                e.set(attr, str(log))
    f = d / f"{name}.xml"
    f.write_text(ET.tostring(root, encoding="unicode"))
    return name, f, log


def main():
    d = calib.tmpdir("ca-bench-rszq-")
    envdir = d / "libvirtd"
    env = dict(os.environ, CA_LIBVIRTD_USER_PID=str(os.getpid()))
    p = subprocess.run([str(ROOT / "tests/env/libvirtd.sh"), "start", str(envdir)], env=env,
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        skip("tests/env/libvirtd.sh start failed: " + (p.stderr.strip().splitlines() or ["?"])[-1])
    uri = "qemu:///system"
    agent, raw_name = None, None
    res = {k: [] for k in ("cpu_up", "mem_up", "mem_down", "cold")}
    raw = {k: [] for k in res}
    raw_shutdown = []
    marker = False
    try:
        conf = d / "agent.conf"
        conf.write_text("[hypervisor]\nmax_vcpus = 2\nmax_memory_mb = 512\nresize_live_timeout = 60\n")
        prefix = calib.unique("ca-bench-rszq")
        agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri, log_level="info",
                            extra_args=["--config", str(conf), "--host-name", prefix])
        agent.start(timeout=180)
        cl = agent.client(timeout=150)
        (d / "images").mkdir(exist_ok=True)
        shutil.copy(GDIR / "disk.raw", d / "images" / "disk.raw")
        r = cl.launch({"name": f"{prefix}-g", "flavor": {"vcpus": 1, "memory_mb": 256, "disk_gb": 1},
                       "kernel": calib.guest_boot(GDIR), "image": {"path": str(d / "images" / "disk.raw")}})
        iid = r["instance"]["id"]
        g = Guest(r["instance"]["console_log"])
        op_wait(cl, r["operation"]["id"])
        g.watch.wait_boot(180)
        try:
            g.wait(lambda s: True, "a size marker", timeout=15)
            marker = True
        except AssertionError:
            marker = False

        # the raw domain, defined the same way, booted
        raw_name, raw_file, raw_log = raw_xml(uri, iid, d)
        virsh(uri, "define", str(raw_file))
        x = ET.parse(raw_file).getroot()   # its uuid, for the redefines of the cold rounds
        ET.SubElement(x, "uuid").text = virsh(uri, "domuuid", raw_name).strip()
        raw_file.write_text(ET.tostring(x, encoding="unicode"))
        rg = Guest(raw_log)
        virsh(uri, "start", raw_name)
        rg.watch.wait_boot(180)
        if marker:
            rg.wait(lambda s: True, "the raw guest's size marker", timeout=30)
        vmem = None   # the agent's domain has a virtio-mem device: the raw one resizes that
        for m in ET.parse(raw_file).getroot().iter("memory"):
            if m.get("model") == "virtio-mem":
                req = m.find("target/requested")
                vmem = 256 - int(req.text) // (1024 if req.get("unit", "KiB") in ("KiB", "k") else 1)

        def setmem(mib):
            if vmem is None:
                return ("setmem", raw_name, f"{mib}M", "--live")
            return ("update-memory-device", raw_name, "--requested-size", f"{mib - vmem}MiB", "--live")

        # memory by the marker only if both guests' MemTotal follows the balloon: both brought
        # to 256 MiB first (a raw guest boots with all of <memory> before its balloon inflates)
        mem_marker = marker
        if marker:
            virsh(uri, *setmem(256))
            try:
                rg.wait(lambda s: s[1] <= MEM_LOW, "the raw guest's MemTotal at 256 MiB", timeout=30)
                g.wait(lambda s: s[1] <= MEM_LOW, "the guest's MemTotal at 256 MiB", timeout=30)
            except AssertionError:
                mem_marker = False

        def agent_live(vcpus, mem, pred, use_marker):
            t0 = time.monotonic()
            r = cl.action(iid, "resize", flavor={"vcpus": vcpus, "memory_mb": mem}, mode="live")
            op = op_wait(cl, r["operation"]["id"])
            if use_marker:
                g.wait(pred, f"the guest to see {vcpus} vCPUs / {mem} MiB")
            return time.monotonic() - t0, op["result"].get("outcome")

        def raw_live(args, pred, hv_seen, use_marker):
            """(the time measured against the agent's, the time until libvirt shows the size)"""
            t0 = time.monotonic()
            virsh(uri, *args)
            t1 = time.monotonic()
            if use_marker:
                rg.wait(pred, f"the raw guest to see {args}")
                t1 = time.monotonic()
            calib.wait_for(hv_seen, SEEN_TIMEOUT, interval=0.02, what=f"libvirt to show {args}")
            return t1 - t0, time.monotonic() - t0

        def raw_vcpus():
            return int(virsh(uri, "vcpucount", raw_name, "--live", "--active").strip() or 0)

        def raw_actual_mib():
            if vmem is not None:
                x = ET.fromstring(virsh(uri, "dumpxml", raw_name))
                cur = [m.find("target/current") for m in x.iter("memory") if m.get("model") == "virtio-mem"]
                return vmem + int(cur[0].text) // 1024 if cur and cur[0] is not None else 0
            st = dict(line.split()[:2] for line in virsh(uri, "dommemstat", raw_name).splitlines() if line.strip())
            return int(st.get("actual", 0)) // 1024

        outcomes = []
        shown = {k: [] for k in res}

        def raw_add(k, ts):
            raw[k].append(ts[0])
            shown[k].append(ts[1])

        def cold_round(vcpus, mem):
            """The agent's guest and the raw one cold to vcpus/mem; the agent's confirmed after."""
            g.watch.mark()
            t0 = time.monotonic()
            r = cl.action(iid, "resize", flavor={"vcpus": vcpus, "memory_mb": mem}, mode="cold")
            op_wait(cl, r["operation"]["id"])
            res["cold"].append(time.monotonic() - t0)
            op_wait(cl, cl.action(iid, "confirm_resize")["operation"]["id"])
            # raw: shutdown (until shut off), define the new size, start
            x = ET.parse(raw_file).getroot()
            x.find("vcpu").set("current", str(vcpus))
            for v in x.iter("vcpus"):   # a per-vCPU list would have to match the count
                x.remove(v)
            cm = x.find("currentMemory")
            if cm is None:
                cm = ET.SubElement(x, "currentMemory")
            cm.set("unit", "MiB")
            cm.text = str(mem)
            raw_file.write_text(ET.tostring(x, encoding="unicode"))
            rg.watch.mark()
            t0 = time.monotonic()
            virsh(uri, "shutdown", raw_name)
            calib.wait_for(lambda: virsh(uri, "domstate", raw_name).strip() == "shut off", 180, interval=0.02,
                           what="the raw guest to shut off")
            t1 = time.monotonic()
            virsh(uri, "define", str(raw_file))
            virsh(uri, "start", raw_name)
            raw["cold"].append(time.monotonic() - t0)
            raw_shutdown.append(t1 - t0)
            g.watch.wait_boot(180)
            rg.watch.wait_boot(180)

        # each round: live vCPUs 1 -> 2, live memory 256 -> 512 -> 256 MiB, then cold back to
        # 1 vCPU (this guest cannot give a vCPU back live: QEMU's unplug request times out)
        for k in range(N):
            t, o = agent_live(2, 256, lambda s: s[0] == 2, marker)
            res["cpu_up"].append(t)
            outcomes.append(o)
            raw_add("cpu_up", raw_live(("setvcpus", raw_name, "2", "--live"), lambda s: s[0] == 2,
                                          lambda: raw_vcpus() == 2, marker))
            t, o = agent_live(2, 512, lambda s: s[1] >= MEM_HIGH, mem_marker)
            res["mem_up"].append(t)
            outcomes.append(o)
            raw_add("mem_up", raw_live(setmem(512),
                                          lambda s: s[1] >= MEM_HIGH, lambda: raw_actual_mib() == 512, mem_marker))
            t, o = agent_live(2, 256, lambda s: s[1] <= MEM_LOW, mem_marker)
            res["mem_down"].append(t)
            outcomes.append(o)
            raw_add("mem_down", raw_live(setmem(256),
                                            lambda s: s[1] <= MEM_LOW, lambda: raw_actual_mib() == 256, mem_marker))
            cold_round(1, 256)
        cl.terminate(iid)
    finally:
        if raw_name:
            virsh(uri, "destroy", raw_name, check=False)
            virsh(uri, "undefine", raw_name, check=False)
        if agent is not None and agent.alive():
            agent.stop(timeout=60)
        subprocess.run([str(ROOT / "tests/env/libvirtd.sh"), "stop", str(envdir)], env=env, capture_output=True,
                       timeout=300)

    to = "the guest's size marker" if marker else \
        ("the operation's end (agent) / virsh's return (raw): this guest prints no size marker "
         "(tests/env/build-guest.sh without the onliner)")
    print(f"bench_resize_qemu: {N} rounds, TCG test guest, private libvirtd; live timed to {to}")
    if marker and not mem_marker:
        print("  memory rows: the guests' MemTotal did not follow the balloon down to 256 MiB, so they are "
              "timed to the operation's end / virsh's return")
    print(f"  load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"  {'figure (median s; each)':44s} {'agent':>8s} {'raw':>8s} {'ratio':>7s}  target")
    mem_cmd = "setmem" if vmem is None else "upd-mem-dev"
    rows = (("live vCPUs 1 -> 2 (raw: virsh setvcpus --live)", "cpu_up"),
            ("live memory 256 -> 512 MiB (raw: " + mem_cmd + ")", "mem_up"),
            ("live memory 512 -> 256 MiB (raw: " + mem_cmd + ")", "mem_down"))
    for label, k in rows:
        a, b = med(res[k]), med(raw[k])
        print(f"  {label:44s} {a:8.3f} {b:8.3f} {a / b:7.2f}  <= 1.2x: {'met' if a <= 1.2 * b else 'MISSED'}"
              f"   (agent {' '.join(f'{x:.2f}' for x in res[k])}; raw {' '.join(f'{x:.2f}' for x in raw[k])})")
    print("  raw, until libvirt shows the new size (virsh vcpucount --live / dommemstat actual or the virtio-mem "
          "device's <current>, polled; the agent's operation waits for its own read of that): "
          + "; ".join(f"{k} median {med(v):.3f} s" for k, v in shown.items() if v))
    a, b, sd = med(res["cold"]), med(raw["cold"]), med(raw_shutdown)
    print(f"  {'cold 2 -> 1 vCPUs (raw: shutdown+define+start)':44s} {a:8.3f} {b:8.3f} {a / b:7.2f}  "
          f"<= 1.1x + shutdown ({1.1 * b + sd:.2f} s): {'met' if a <= 1.1 * b + sd else 'MISSED'}"
          f"   (agent {' '.join(f'{x:.2f}' for x in res['cold'])}; raw {' '.join(f'{x:.2f}' for x in raw['cold'])})")
    print(f"  the guest's own shutdown (raw, virsh shutdown -> shut off): median {sd:.3f} s "
          f"({' '.join(f'{x:.2f}' for x in raw_shutdown)}); cold ratio without it: "
          f"{(a - sd) / (b - sd):.2f}x")
    print(f"  live results (outcome): {' '.join(str(o) for o in outcomes)}")


if __name__ == "__main__":
    main()
