#!/usr/bin/env python3
"""The hypervisor layer's live resize on a real libvirtd + QEMU (issue 12).

BUILD/tests/hv_resize_probe (tests/tools/hv_resize_probe.c) defines and starts the busybox
test guest through the hv layer with headroom (1 of 4 vCPUs, 256 of 512 MiB: a <vcpus> list,
a NUMA cell, <maxMemory> and a virtio-mem device, the balloon), then, one command at a time:
 - hv_set_vcpus 1 -> 2 (LIVE|CONFIG): the guest's "COMPUTE-AGENT-GUEST: size cpus=0-1" line;
 - hv_set_memory 512 (virtio-mem <requested> 256 MiB): MemTotal up by exactly 256 MiB; the
   persistent definition keeps both (a reboot would boot that size);
 - hv_set_memory 256 (virtio-mem back to 0) and 192 (the balloon below the boot memory), then
   256 again: MemTotal back to where it started, 64 MiB below it, and back;
 - hv_get_size follows each step (vcpus, memory_mib, requested_mib, ceilings, live_*);
 - a restart (destroy + start: a new QEMU from the persistent definition) boots with what
   LIVE|CONFIG set;
 - refused, nothing changed: memory above the ceiling (-ERANGE), vCPUs above it (-ERANGE),
   a live vCPU decrease on kvm (-ENOTSUP: kvm.c says why: QEMU 7.2's unplug);
 - hv_set_metadata rewrites our <metadata> (read back through hv_list, owner kept);
 - in the same run, on the same guest, the raw calls for the benchmark's baseline:
   `virsh setvcpus --live`, `virsh update-device --live` of the virtio-mem element and
   `virsh setmem --live`, each timed to the guest seeing it, printed beside the hv layer's
   (and hv_set_vcpus 3 -> 4 after the raw 2 -> 3: a guest's first hot-plugged vCPU takes
   ~0.5 s longer to come online than later ones, so 1 -> 2 is not the raw call's peer).
Every wait is on the guest's serial log with a deadline (calib.ConsoleWatch/wait_for).
Needs CA_LIBVIRT_URI and CA_GUEST_DIR (tests/run.sh provides them as root), else SKIP."""

import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402

PROBE = calib.BUILD / "tests" / "hv_resize_probe"
SIZE_RE = re.compile(r"COMPUTE-AGENT-GUEST: size cpus=(\S+) memtotal_kb=(\d+)")
VDA_RE = re.compile(r"COMPUTE-AGENT-GUEST: vda size_bytes=(\d+)")
VMEM_RE = re.compile(r"<memory model='virtio-mem'>.*?</memory>", re.S)
BOOT, MAXMEM, MAXV = 256, 512, 4
SEE = 60.0  # seconds for the guest to show a change (TCG)


class Probe:
    def __init__(self, uri, gdir, work):
        self.p = subprocess.Popen([str(PROBE), uri, str(gdir), str(work)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.p.stdout, selectors.EVENT_READ)

    def line(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sel.select(max(0.0, deadline - time.monotonic())):
                out = self.p.stdout.readline()
                if not out:
                    raise AssertionError(f"the probe ended: {self.p.stderr.read()[-1000:]}")
                if out.startswith("CA-RESIZE: "):
                    return out[len("CA-RESIZE: "):].strip()
        raise AssertionError("the probe did not answer in time")

    def cmd(self, text, timeout=60.0):
        """(ok, fields dict, message, errno) for one command."""
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()
        ans = self.line(timeout)
        parts = ans.split(" ")
        if parts[0] == "ok":
            return True, dict(p.split("=", 1) for p in parts[1:] if "=" in p), "", 0
        assert parts[0] == "err", ans
        return False, {}, " ".join(parts[3:]), int(parts[1])

    def close(self):
        """End the probe (EOF on its stdin); its exit status (a sanitizer's report fails it)."""
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        return self.p.returncode


def last_size(watch):
    m = SIZE_RE.findall(watch.text())
    return (m[-1][0], int(m[-1][1])) if m else (None, None)


def wait_guest(watch, t0, cpus=None, memtotal=None, timeout=SEE):
    """Seconds from t0 until the guest's last size line shows cpus/memtotal."""
    def seen():
        c, mt = last_size(watch)
        return (cpus is None or c == cpus) and (memtotal is None or mt == memtotal)
    calib.wait_for(seen, timeout, interval=0.02, what=f"guest size cpus={cpus} memtotal_kb={memtotal}",
                   last=lambda: repr(last_size(watch)))
    return time.monotonic() - t0


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    d = calib.tmpdir("ca-hvresize-")
    name = calib.unique("ca-it-hvresize")
    watch = calib.ConsoleWatch(d / "serial.log")
    timings = []
    probe = None
    try:
        with c.case(f"the probe is built ({PROBE}) and connects to {uri}", fatal=True):
            assert PROBE.is_file() and os.access(PROBE, os.X_OK), f"{PROBE} missing: make tests"
            probe = Probe(uri, gdir, d)
            ready = probe.line(120)
            assert ready.startswith("ready driver=kvm"), ready
        ok, f, msg, _ = probe.cmd("features")
        kvm_unplug = f.get("vcpu_unplug") == "1"
        c.check(ok and f.get("vcpu_hotplug") == "1" and f.get("memory_hotplug") == "1",
                "the kvm driver declares vcpu_hotplug and memory_hotplug", str(f))
        with c.case(f"define + start through the hv layer: {1}/{MAXV} vCPUs, {BOOT}/{MAXMEM} MiB", fatal=True):
            ok, f, msg, _ = probe.cmd(f"define {name} 1 {MAXV} {BOOT} {MAXMEM}", timeout=120)
            assert ok, msg
            uuid = f["uuid"]
        with c.case("the domain XML has the headroom (vcpus list, NUMA cell, maxMemory, virtio-mem, balloon)",
                    fatal=True):
            rc, xml, err = calib.virsh(uri, "dumpxml", uuid)
            assert rc == 0, err
            for s in ("current='1'>4</vcpu>", "<vcpu id='0' enabled='yes' hotpluggable='no' order='1'/>",
                      "<vcpu id='3' enabled='no' hotpluggable='yes'/>", "<maxMemory slots='1' unit='KiB'>524288",
                      "<cell id='0' cpus='0-3' memory='262144' unit='KiB'/>", "<memory model='virtio-mem'>",
                      "<alias name='ua-ca-vmem0'/>", "<memballoon model='virtio'>"):
                assert s in xml, f"{s!r} not in the live XML"
        with c.case("the guest boots and reports its size (cpus, MemTotal) and its disk", fatal=True):
            watch.wait_text(calib.BOOT_MARKER, 120)
            wait_guest(watch, time.monotonic(), cpus="0")
            base = last_size(watch)[1]
            calib.wait_for(lambda: VDA_RE.search(watch.text()), 30, what="the vda size line")
            assert VDA_RE.search(watch.text()).group(1) == str(16 << 20), VDA_RE.search(watch.text()).group(0)
            calib.log(f"     (guest at boot: cpus=0 memtotal_kb={base})")

        def size():
            ok, f, msg, _ = probe.cmd("size")
            assert ok, msg
            return {k: int(v) for k, v in f.items() if k != "ms"}

        with c.case("hv_get_size at boot: 1 of 4 vCPUs, 256 of 512 MiB, both live-changeable"):
            s = size()
            assert s == {"vcpus": 1, "max_vcpus": 4, "memory_mib": BOOT, "requested_mib": BOOT,
                         "max_memory_mib": MAXMEM, "live_vcpus": 1, "live_memory": 1}, s

        with c.case("hv_set_vcpus 1 -> 2 (LIVE|CONFIG): the guest has cpus 0-1 online"):
            t0 = time.monotonic()
            ok, f, msg, _ = probe.cmd("vcpus 2")
            assert ok, msg
            seen = wait_guest(watch, t0, cpus="0-1")
            timings.append(("hv_set_vcpus 1->2", float(f["ms"]), seen))
            assert size()["vcpus"] == 2
        with c.case("hv_set_memory 512 (virtio-mem +256 MiB): MemTotal up by exactly 256 MiB"):
            t0 = time.monotonic()
            ok, f, msg, _ = probe.cmd(f"mem {MAXMEM}")
            assert ok, msg
            seen = wait_guest(watch, t0, memtotal=base + (MAXMEM - BOOT) * 1024)
            timings.append(("hv_set_memory 256->512 (virtio-mem)", float(f["ms"]), seen))
            calib.wait_for(lambda: size()["memory_mib"] == MAXMEM, 30, what="hv_get_size memory_mib 512")
            s = size()
            assert s["requested_mib"] == MAXMEM and s["vcpus"] == 2, s
        with c.case("the persistent definition keeps 2 vCPUs and the plugged 256 MiB (a reboot keeps them)"):
            rc, xml, err = calib.virsh(uri, "dumpxml", "--inactive", uuid)
            assert rc == 0, err
            assert "current='2'>4</vcpu>" in xml, re.search(r"<vcpu .*?</vcpu>", xml).group(0)
            m = VMEM_RE.search(xml)
            assert m and "<requested unit='KiB'>262144</requested>" in m.group(0), m and m.group(0)
        with c.case("hv_set_memory 256 (virtio-mem back to 0): MemTotal back to the boot figure"):
            t0 = time.monotonic()
            ok, f, msg, _ = probe.cmd(f"mem {BOOT}")
            assert ok, msg
            seen = wait_guest(watch, t0, memtotal=base)
            timings.append(("hv_set_memory 512->256 (virtio-mem)", float(f["ms"]), seen))
        with c.case("hv_set_memory 192 (the balloon, below the boot memory): MemTotal 64 MiB lower"):
            t0 = time.monotonic()
            ok, f, msg, _ = probe.cmd("mem 192")
            assert ok, msg
            seen = wait_guest(watch, t0, memtotal=base - 64 * 1024)
            timings.append(("hv_set_memory 256->192 (balloon)", float(f["ms"]), seen))
            calib.wait_for(lambda: size()["memory_mib"] == 192, 30, what="hv_get_size memory_mib 192")
        with c.case("hv_set_memory 256: the balloon gives it back"):
            t0 = time.monotonic()
            ok, f, msg, _ = probe.cmd(f"mem {BOOT}")
            assert ok, msg
            wait_guest(watch, t0, memtotal=base)

        with c.case("memory above the ceiling: -ERANGE naming it, nothing changed"):
            ok, _, msg, e = probe.cmd("mem 1024")
            assert not ok and e == 34 and "ceiling of 512 MiB" in msg, (e, msg)
        with c.case("vCPUs above the ceiling: -ERANGE naming it, nothing changed"):
            ok, _, msg, e = probe.cmd("vcpus 8")
            assert not ok and e == 34 and "ceiling of 4" in msg, (e, msg)
        if not kvm_unplug:
            with c.case("a live vCPU decrease on kvm: -ENOTSUP (QEMU 7.2's unplug, kvm.c), nothing changed"):
                ok, _, msg, e = probe.cmd("vcpus 1")
                assert not ok and e == 95 and "cold resize" in msg, (e, msg)
        with c.case("after the refusals: still 2 vCPUs and 256 MiB, in hv_get_size and in the guest"):
            s = size()
            assert (s["vcpus"], s["memory_mib"]) == (2, BOOT), s
            assert last_size(watch) == ("0-1", base), last_size(watch)

        with c.case("hv_set_metadata rewrites our <metadata> (LIVE|CONFIG), hv_list reads it, owner kept"):
            ok, f, msg, _ = probe.cmd("meta m5.large")
            assert ok, msg
            assert f.get("flavor") == "m5.large" and f.get("host") == "resize-probe", f
            rc, xml, _ = calib.virsh(uri, "dumpxml", "--inactive", uuid)
            assert "<ca:flavor>m5.large</ca:flavor>" in xml, "not in the persistent definition"

        # the raw calls on the same guest, for the benchmark's baseline
        with c.case("raw `virsh setvcpus --live` 2 -> 3: the guest has cpus 0-2"):
            t0 = time.monotonic()
            calib.virsh(uri, "setvcpus", uuid, "3", "--live", check=True)
            call = (time.monotonic() - t0) * 1e3
            timings.append(("raw virsh setvcpus --live 2->3", call, wait_guest(watch, t0, cpus="0-2")))
        with c.case("hv_set_vcpus 3 -> 4 after the raw call (the same kind of step, for the comparison)"):
            t0 = time.monotonic()
            ok, f, msg, _ = probe.cmd("vcpus 4")
            assert ok, msg
            timings.append(("hv_set_vcpus 3->4", float(f["ms"]), wait_guest(watch, t0, cpus="0-3")))
        with c.case("raw `virsh update-device --live` of the virtio-mem element (+256 MiB) and back"):
            rc, xml, err = calib.virsh(uri, "dumpxml", uuid)
            elem = re.sub(r"\s*<current [^>]*>[^<]*</current>", "", VMEM_RE.search(xml).group(0))
            for kib, mt, what in ((262144, base + 262144, "+256"), (0, base, "-256")):
                f = d / f"vmem-{kib}.xml"
                f.write_text(re.sub(r"<requested [^>]*>\d+</requested>",
                                    f"<requested unit='KiB'>{kib}</requested>", elem))
                t0 = time.monotonic()
                calib.virsh(uri, "update-device", uuid, str(f), "--live", check=True)
                call = (time.monotonic() - t0) * 1e3
                timings.append((f"raw virsh update-device virtio-mem {what} MiB", call,
                                wait_guest(watch, t0, memtotal=mt)))
        with c.case("raw `virsh setmem --live` 192 MiB (the balloon): MemTotal 64 MiB lower"):
            t0 = time.monotonic()
            calib.virsh(uri, "setmem", uuid, "192M", "--live", check=True)
            call = (time.monotonic() - t0) * 1e3
            timings.append(("raw virsh setmem --live 256->192", call,
                            wait_guest(watch, t0, memtotal=base - 64 * 1024)))

        with c.case("a restart from the persistent definition boots with what LIVE|CONFIG set "
                    "(4 vCPUs, 512 MiB through virtio-mem)"):
            ok, f, msg, _ = probe.cmd(f"mem {MAXMEM}")
            assert ok, msg
            calib.virsh(uri, "destroy", uuid, check=True)
            watch.mark()
            calib.virsh(uri, "start", uuid, check=True)
            watch.wait_text(calib.BOOT_MARKER, 120)
            want = base + (MAXMEM - BOOT) * 1024

            def booted_size():
                m = SIZE_RE.findall(watch.since_mark())
                return m and m[-1][0] == "0-3" and abs(int(m[-1][1]) - want) <= 4096
            calib.wait_for(booted_size, SEE, interval=0.2, what=f"cpus=0-3 memtotal_kb~{want} after the restart",
                           last=lambda: repr(SIZE_RE.findall(watch.since_mark())[-1:]))
            calib.wait_for(lambda: size()["memory_mib"] == MAXMEM, 30, what="hv_get_size memory_mib 512")
            s = size()
            assert (s["vcpus"], s["requested_mib"]) == (4, MAXMEM), s
        calib.log("     live resize timings (call = the call's own time; seen = request to the guest's "
                  "serial line, its onliner polls every 0.3 s):")
        for what, call_ms, seen_s in timings:
            calib.log(f"       {what:<44} call {call_ms:8.1f} ms   seen {seen_s * 1e3:8.1f} ms")
        with c.case("hv_destroy + hv_undefine through the probe"):
            ok, _, msg, _ = probe.cmd("destroy", timeout=90)
            assert ok, msg
            assert calib.domstate(uri, uuid) is None
        with c.case("the probe exits 0 (under ASan: no leak, no error report)"):
            rc = probe.close()
            assert rc == 0, f"exit {rc}: {probe.p.stderr.read()[-3000:]}"
    finally:
        if probe:
            probe.close()
        calib.destroy_domain(uri, name)


if __name__ == "__main__":
    calib.run("test_hv_live_resize_qemu", main)
