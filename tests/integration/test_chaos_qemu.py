#!/usr/bin/env python3
"""Chaos torture on real QEMU guests (TCG, direct kernel boot of the test guest from CA_GUEST_DIR;
launches with an image pulled from nginx get a qcow2 overlay on it). See chaos.py for the faults and
the invariants.

The guests run under a private libvirtd of this test (its own mount namespace and sockets in a
scratch dir, qemu+unix:///system?socket=...), not the harness's shared one, so killing it -9 harms
no other test; QEMU processes survive that kill and the restarted libvirtd finds them again.

Needs root, libvirtd/virsh, the test guest (CA_GUEST_DIR), Placement (CA_PLACEMENT_URL),
build/tests/mock_kafka and python3-confluent-kafka; nginx (CA_NGINX_URL) for the image pulls.
CI size: CA_CHAOS_ROUNDS (default 4) x CA_CHAOS_STEPS (default 10); a long run: CA_CHAOS_MINUTES=15.
"""

import os
import shutil
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
import chaos  # noqa: E402


def main(c: calib.Checks):
    purl = os.environ.get("CA_PLACEMENT_URL")
    if not purl:
        calib.skip("needs CA_PLACEMENT_URL (tests/run.sh starts Placement)")
    if os.geteuid() != 0:
        calib.skip("needs root: the private libvirtd runs in its own mount namespace")
    for tool in ("libvirtd", "virsh", "unshare", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            calib.skip(f"{tool} is not installed")
    gdir = os.environ.get("CA_GUEST_DIR")
    if not gdir or not all((Path(gdir) / f).is_file() for f in ("vmlinuz", "initrd.gz", "disk.raw")):
        calib.skip(f"CA_GUEST_DIR ({gdir!r}) has no vmlinuz + initrd.gz + disk.raw (tests/env/build-guest.sh)")
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        calib.skip("python3-confluent-kafka is not installed")
    calib.require_agent_binary()
    mock_bin = calib.BUILD / "tests" / "mock_kafka"
    with c.case("build/tests/mock_kafka exists", fatal=True):
        assert mock_bin.exists(), f"{mock_bin} is missing (make tests)"
    d = calib.tmpdir("ca-chaos-qemu-")
    boot = calib.guest_boot(Path(gdir))
    image = (Path(gdir) / "disk.raw").read_bytes()
    # CI runs a fixed seed: the one that found the rollback that removed a defined
    # domain's disk. Random seeds (CA_CHAOS_SEED=random) still find open bugs under
    # TCG (a domain left paused by a libvirtd killed mid-start): see the issue note.
    t = chaos.Chaos(c, "qemu", rounds=4, steps=10, cap=3, default_seed=431285500)
    try:
        with c.case("private libvirtd (QEMU), mock_kafka, Placement proxy and the agent start", fatal=True):
            t.setup(d, purl, os.environ.get("CA_NGINX_URL"), os.environ.get("CA_NGINX_ROOT"), "qemu", boot, image)
        t.run(quiesce_timeout=180)
    finally:
        t.teardown()


if __name__ == "__main__":
    calib.run("test_chaos_qemu", main)
