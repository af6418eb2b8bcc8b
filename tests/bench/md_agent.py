#!/usr/bin/env python3
"""The real agent as bench-metadata.sh's metadata server (issue 10's benchmark).

usage: md_agent.py BUILD_DIR OUT_FILE [RATE BURST]

Sets up what tests/integration/test_metadata_cloudinit_agent.py does: compute-agent on the
libvirt test driver in a network namespace of its own (cab-mdag-*), network n1 on a bridge
the agent makes (it puts the gateway and 169.254.169.254 on it and serves metadata there on
:80), one instance launched with one interface, and that port's veth peer moved into a
client namespace (cab-mdcli-*) with the port's MAC and IP and a default route: the guest.
The agent's metadata.rate and metadata.burst are RATE and BURST (default: their maximum,
1000000), since the default (50/s per source) would answer a benchmark 503.

When ready, OUT_FILE is written (atomically) as shell assignments: AGENT_NS, CLIENT_NS,
BRIDGE, GUEST_IP, GUEST_MAC, AGENT_PID, INSTANCE, EC2_ID, MD_RATE, MD_BURST, and beside it
OUT_FILE.fixture.json: the same instance as a tests/bench/md_server fixture. Then it waits for
EOF on stdin (or SIGTERM/SIGINT), stops the agent, and deletes both namespaces and its
temporary directory. Exit 77 with "SKIP: reason" on stderr when something is missing."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
if len(sys.argv) not in (3, 5):
    sys.exit(__doc__.split("\n\n")[1])
os.environ["BUILD"] = str(Path(sys.argv[1]).resolve())
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import atexit  # noqa: E402
import calib  # noqa: E402
import netns_agent  # noqa: E402

OUT = Path(sys.argv[2])
RATE, BURST = (sys.argv[3], sys.argv[4]) if len(sys.argv) == 5 else ("1000000", "1000000")
BRIDGE = "cabmdbr1"
GW = "10.79.0.1"
CONF = f"""
[agent]
host_name = {{host}}
[network n1]
type = bridge
bridge = {BRIDGE}
cidr = 10.79.0.0/24
gateway = {GW}
dns = {GW}
mtu = 1500
[metadata]
rate = {RATE}
burst = {BURST}
"""


def skip(why):
    print(f"SKIP: {why}", file=sys.stderr, flush=True)
    sys.exit(77)


def run(ns, *argv):
    r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"in {ns}: {' '.join(argv)}: {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def main():
    if not calib.AGENT_BIN.is_file():
        skip(f"{calib.AGENT_BIN} is not built")
    why = netns_agent.have_netns()
    if why:
        skip(why)
    if not shutil.which("nft"):
        skip("nft is not installed (the agent's port filter)")
    if netns_agent.netplug_is_stub() or netns_agent.metadata_is_stub():
        skip("net-plug or the metadata service is a stub in this build")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # atexit still cleans up
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

    d = calib.tmpdir("cab-mdag-")
    files = calib.make_fake_files(d)
    ns = netns_agent.Netns(prefix="cab-mdag")
    cli = f"cab-mdcli-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", cli], check=True, capture_output=True)
    atexit.register(subprocess.run, ["ip", "netns", "delete", cli], capture_output=True)
    run(cli, "ip", "link", "set", "lo", "up")
    run(cli, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    run(cli, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")

    conf = d / "agent.conf"
    conf.write_text(CONF.format(host=calib.unique("cab-mdag-host")))
    agent = netns_agent.NsAgent(ns, d / "state", hypervisor="test", log_level="info",
                                extra_args=["--config", str(conf)])
    agent.start(timeout=30)
    cl = agent.client()
    body = {"name": calib.unique("mdbench"), "hostname": "bench", "public_keys": {"k": "ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIBENCHBENCHBENCHBENCHBENCHBENCHBENCHBENCHBEN bench@host"},
            "metadata": {"role": "bench"}, "user_data": calib.b64(b"#cloud-config\n"),
            "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
            "image": {"path": files["image"]}, "interfaces": [{"network": "n1"}]}
    r = cl.launch(body)
    op = cl.wait_operation(r["operation"]["id"], timeout=30)
    if op["state"] != "succeeded":
        raise RuntimeError(f"launch: {calib.short(op)}")
    inst = cl.wait_state(r["instance"]["id"], "running", timeout=30)
    p = inst["interfaces"][0]
    dev = p["device"] + "p"
    run(ns.name, "ip", "link", "set", dev, "netns", cli)
    run(cli, "ip", "addr", "add", p["ip"] + "/24", "dev", dev)
    run(cli, "ip", "link", "set", dev, "up")
    run(cli, "ip", "route", "add", "default", "via", GW)

    # the same instance as a tests/bench/md_server fixture (the library with a fake lookup)
    fixture = {"instances": [{
        "uuid": inst["id"], "ec2_id": inst["ec2_id"], "name": inst["name"], "hostname": inst["hostname"],
        "availability_zone": inst["availability_zone"], "instance_type": inst.get("instance_type") or "custom",
        "keys": body["public_keys"], "meta": body["metadata"], "user_data": "#cloud-config\n",
        "interfaces": [{"mac": p["mac"], "ip": p["ip"], "prefix": 24, "gateway": GW, "dns": [GW],
                        "mtu": 1500, "network": "n1", "port_id": p["port_id"]}]}]}
    OUT.with_name(OUT.name + ".fixture.json").write_text(json.dumps(fixture))
    tmp = OUT.with_name(OUT.name + ".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in (
        ("AGENT_NS", ns.name), ("CLIENT_NS", cli), ("BRIDGE", BRIDGE), ("GUEST_IP", p["ip"]),
        ("GUEST_MAC", p["mac"]), ("AGENT_PID", agent.proc.pid), ("INSTANCE", inst["id"]),
        ("EC2_ID", inst["ec2_id"]), ("MD_RATE", RATE), ("MD_BURST", BURST))))
    tmp.rename(OUT)
    sys.stdin.read()  # until the benchmark is done with it (EOF)
    rc = agent.stop()
    if rc != 0:
        print(f"agent exit {rc}; log tail:\n{agent.log_tail()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (AssertionError, RuntimeError, OSError, subprocess.CalledProcessError) as e:
        print(f"md_agent: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
