#!/usr/bin/env python3
"""Chaos torture on libvirt's test driver (see chaos.py for the faults and the invariants).

The test driver's state lives in the process that opened test:///default, so with the driver
in the agent a kill -9 would empty the hypervisor. Here it is served by a private libvirtd of
this test (test+unix:///default?socket=...; libvirt 9.0's libvirtd serves the test driver to
remote clients) and a virsh shell holds a connection so that the domains outlive the agent's
connection. Killing that libvirtd does empty it: the agent must reconnect and then find its
domains gone, and the invariant is that every one of them is marked error (never running,
never doubled), pending launches define theirs again, and terminate of the vanished ones works.

Needs root (mount namespace), libvirtd, virsh, Placement (CA_PLACEMENT_URL), build/tests/mock_kafka
and python3-confluent-kafka; nginx (CA_NGINX_URL) for the image pulls. CI size: CA_CHAOS_ROUNDS
(default 6) x CA_CHAOS_STEPS (default 12); a long run: CA_CHAOS_MINUTES=15.
"""

import os
import shutil
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
import chaos  # noqa: E402


def requirements():
    purl = os.environ.get("CA_PLACEMENT_URL")
    if not purl:
        calib.skip("needs CA_PLACEMENT_URL (tests/run.sh starts Placement)")
    if os.geteuid() != 0:
        calib.skip("needs root: the private libvirtd runs in its own mount namespace")
    for tool in ("libvirtd", "virsh", "unshare"):
        if shutil.which(tool) is None:
            calib.skip(f"{tool} is not installed")
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        calib.skip("python3-confluent-kafka is not installed")
    calib.require_agent_binary()
    return purl


def main(c: calib.Checks):
    purl = requirements()
    mock_bin = calib.BUILD / "tests" / "mock_kafka"
    with c.case("build/tests/mock_kafka exists", fatal=True):
        assert mock_bin.exists(), f"{mock_bin} is missing (make tests)"
    d = calib.tmpdir("ca-chaos-core-")
    files = calib.make_fake_files(d / "files")
    boot = {"path": files["kernel"], "initrd": files["initrd"]}
    image = b"CA-CHAOS-IMAGE\n" + b"\0" * (1024 * 1024 - 15)
    t = chaos.Chaos(c, "core", rounds=6, steps=12, cap=5)
    try:
        with c.case("private libvirtd (test driver), mock_kafka, Placement proxy and the agent start", fatal=True):
            t.setup(d, purl, os.environ.get("CA_NGINX_URL"), os.environ.get("CA_NGINX_ROOT"), "test", boot, image)
        for point in ("stop:requested", "start:requested", "reboot:requested"):
            with c.case(f"{point}: agent killed there, libvirtd loses the domain meanwhile: the resumed "
                        f"operation leaves the instance error, never its old state"):
                t.vanished_under_operation(point)
        with c.case("start:requested: agent killed there, the domain started meanwhile: the resumed start "
                    "succeeds (already running is what it wanted)"):
            t.start_already_done()
        t.run(quiesce_timeout=60)
    finally:
        t.teardown()


if __name__ == "__main__":
    calib.run("test_chaos_core", main)
