#!/usr/bin/env python3
"""net-plug's VLAN path inside a TCG guest whose kernel has 802.1Q (issue 10).

These machines' kernel has no 802.1Q (test_net_vlan.py SKIPs for that), the test guest's
Debian kernel has 8021q. So the test guest is built (tests/env/build-guest.sh, into
BUILD/tests/guest-netplug: its own cache, as its initramfs differs) with
BUILD/tests/netplug_vlan_probe (tests/tools/netplug_vlan_probe.c: net-plug's public API
as the agent calls it for a `type = vlan` network, in a namespace of its own in the guest)
and booted, without a NIC, on the test namespace's private libvirtd with
ca.mods=netplug (8021q, bridge, tun, veth, nf_tables, nft_objref, nft_meta_bridge) and
ca.exec=netplug_vlan_probe. From its serial log: the modules loaded, every "CA-VLAN: ok"
line (the VLAN device with its id on the parent, in the agent-made bridge with both ports;
tagged frames across it, another id and a spoofed MAC not; refcounted removal; foreign
devices left alone), none "CA-VLAN: FAIL", and "CA-VLAN: done pass=24 fail=0".
Needs CA_NETNS* and CA_GUEST_DIR (tests/run.sh as root), else SKIP."""

import os
import re
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import netenv  # noqa: E402
from netenv import calib  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROBE = "netplug_vlan_probe"
EXPECTED_PASS = 24   # the probe's checks (tests/tools/netplug_vlan_probe.c)
DONE_RE = re.compile(r"CA-VLAN: done pass=(\d+) fail=(\d+)")


def vlan_lines(text):
    """The probe's 'CA-VLAN: ...' lines (without the prefix)."""
    return [l.split("CA-VLAN: ", 1)[1].strip() for l in text.splitlines() if "CA-VLAN: " in l]


def build_guest(probe, out):
    p = subprocess.run([str(ROOT / "tests" / "env" / "build-guest.sh"), str(out), str(probe)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0 and (out / "initrd.gz").is_file(), \
        f"build-guest.sh {out} {probe} -> {p.returncode}: {p.stderr[-2000:]}"


def main(c: calib.Checks):
    ns, uri, _ = netenv.env()
    if not os.environ.get("CA_GUEST_DIR"):
        calib.skip("CA_GUEST_DIR unset: tests/run.sh could not build the test guest (needs root and apt)")
    build = Path(os.environ.get("BUILD", ROOT / "build"))
    probe = build / "tests" / PROBE
    before = netenv.root_snapshot()
    gdir = build / "tests" / "guest-netplug"
    d = calib.tmpdir("ca-netvlanguest-")
    serial = d / "serial.log"
    name = calib.unique("ca-it-netvlg")
    try:
        with c.case(f"the probe is built ({probe}) and the guest with it ({gdir})", fatal=True):
            assert probe.is_file() and os.access(probe, os.X_OK), f"{probe} missing: make tests"
            build_guest(probe, gdir)
        cmd = netenv.guest_cmdline("ca.mods=netplug", f"ca.exec={PROBE}", "ca.end=poweroff")
        xml = d / "dom.xml"
        xml.write_text(netenv.domain_xml(name, gdir, cmd, serial, memory_mb=256))
        with c.case("define + start the guest (no NIC) on the namespace's libvirtd", fatal=True):
            calib.virsh(uri, "define", str(xml), check=True)
            t0 = netenv.now()
            calib.virsh(uri, "start", name, check=True)
        watch = calib.ConsoleWatch(serial)
        with c.case("the guest loads net-plug's modules (8021q, bridge, tun, veth, nf_tables, nft_objref, "
                    "nft_meta_bridge)", fatal=True):
            m = netenv.wait_marker(watch, r"^modules netplug ", timeout=120)
            assert m.string == "modules netplug loaded", m.string
        with c.case("the probe runs to its end", fatal=True):
            m = netenv.wait_marker(watch, rf"^exec {PROBE} rc=(\d+)$", timeout=90)
            calib.log(f"     (probe done {netenv.now() - t0:.1f}s after start)")
        text = watch.text()
        lines = vlan_lines(text)
        calib.log("     guest: " + "\n     guest: ".join(lines))
        asked = [x for x in netenv.markers(text) if x.startswith("kernel requested module")]
        if asked:  # a module missing from the guest's netplug set shows here
            calib.log("     guest: " + "\n     guest: ".join(asked))
        oks = [l for l in lines if l.startswith("ok ")]
        fails = [l for l in lines if l.startswith("FAIL ")]
        done = DONE_RE.search(text)
        with c.case("every CA-VLAN check passed (none FAIL)"):
            assert not fails, "\n".join(fails)
        for l in oks:
            c.check(True, "guest: " + l[3:])
        with c.case(f"CA-VLAN: done pass={EXPECTED_PASS} fail=0, and the probe exited 0"):
            assert done, "no 'CA-VLAN: done' line"
            assert (int(done.group(1)), int(done.group(2))) == (EXPECTED_PASS, 0), done.group(0)
            assert len(oks) == EXPECTED_PASS, f"{len(oks)} ok lines"
            assert m.group(1) == "0", f"rc={m.group(1)}"
        with c.case("the guest powers off when done"):
            calib.wait_for(lambda: calib.domstate(uri, name) in ("shut off", None), 60,
                           what=f"{name} to power off")
    finally:
        calib.destroy_domain(uri, name)
    with c.case("the root network namespace is unchanged"):
        diff = netenv.snapshot_diff(before, netenv.root_snapshot())
        assert not diff, "host network changed:\n" + diff


if __name__ == "__main__":
    calib.run("test_net_vlan_guest_qemu", main)
