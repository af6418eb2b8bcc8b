#!/usr/bin/env python3
"""The metadata service after its network's bridge is remade (issue 10, audit item 1).

The service's socket on a network is bound to the network's bridge by interface index. When
the last port of a network whose bridge the agent made leaves, the agent deletes the bridge;
the next launch makes a new one under the same name (another index), which the old socket
never hears. The agent must bind again (at the plug, and by itself within a second).

The agent runs in a network namespace of its own on the libvirt test driver (a port is a veth
pair, host end in the bridge, peer `<dev>p`), network n1 on an agent-made bridge. A "guest"
is a client namespace holding its port's veth peer. Path: launch A, A's guest fetches its
instance-id; terminate A (the bridge is deleted); launch B, B's guest fetches its instance-id
at once (then also from a third launch, C, after B is gone too, the bridge remade twice).
Config drive leftovers (audit item 5): a terminate removes config.iso with what a build
killed midway left (config.iso.d.XXXXXX holding user-data, config.iso.tmp), and a restart's
reconcile removes such leftovers once old, in any instance's directory.
Namespaces are deleted at exit (also on failure); nothing is made in the root namespace."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import atexit  # noqa: E402
import calib  # noqa: E402
import cloudinit_probe as cp  # noqa: E402
import netns_agent  # noqa: E402
from calib import short  # noqa: E402

BRIDGE = "camrbr1"  # made by the agent: deleted when its last port leaves
GW = "10.79.0.1"

CONF = """
[agent]
host_name = {host}
[network n1]
type = bridge
bridge = {bridge}
cidr = 10.79.0.0/24
gateway = 10.79.0.1
dns = 10.79.0.1
[metadata]
rate = 1000
burst = 1000
"""


class ClientNs:
    """A client ("guest") network namespace; deleted at exit."""

    def __init__(self, tag):
        self.name = f"ca-netns-mdre-{os.getpid()}-{tag}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        atexit.register(self.delete)
        self.run("ip", "link", "set", "lo", "up")
        self.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        self.run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")

    def run(self, *argv, check=True):
        r = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"in {self.name}: {' '.join(argv)}: {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def delete(self):
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)

    def reachable(self):
        code = f'''
import socket
s = socket.socket(); s.settimeout(0.5)
try:
    s.connect(("{GW}", 9)); print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("no: " + type(e).__name__)
'''
        return self.run(cp.PY, "-c", code, check=False).strip() in ("refused", "open")


def main(c: calib.Checks):
    calib.require_agent_binary()
    why = netns_agent.have_netns()
    if why:
        calib.skip(why)
    for tool in ("ip", "sysctl"):
        if not shutil.which(tool):
            calib.skip(f"{tool} is not installed")
    if netns_agent.netplug_is_stub() or netns_agent.metadata_is_stub():
        calib.skip("net-plug or the metadata service is a stub in this build")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # atexit still deletes the namespaces

    d = calib.tmpdir("cac-mdre-")
    files = calib.make_fake_files(d)
    ns = netns_agent.Netns(prefix="ca-netns-mdre")
    conf = d / "agent.conf"
    conf.write_text(CONF.format(host=calib.unique("cac-mdre-host"), bridge=BRIDGE))
    agent = netns_agent.NsAgent(ns, d / "state", hypervisor="test", extra_args=["--config", str(conf)])
    c.agents.append(agent)
    with c.case("agent starts in its own netns (test driver, network n1 on an agent-made bridge)", fatal=True):
        agent.start(timeout=30)
    cl = agent.client()

    def launch(name):
        b = {"name": name, "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
             "image": {"path": files["image"]}, "interfaces": [{"network": "n1"}]}
        r = cl.launch(b)
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "succeeded", short(op)
        return cl.wait_state(r["instance"]["id"], "running", timeout=30)

    def terminate(inst):
        r = cl.terminate(inst["id"])
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "succeeded", short(op)
        cl.wait_state(inst["id"], "terminated", timeout=30)

    def attach(cli, inst):
        p = inst["interfaces"][0]
        dev = p["device"] + "p"
        ns.run("ip", "link", "set", dev, "netns", cli.name)
        cli.run("ip", "addr", "add", p["ip"] + "/24", "dev", dev)
        cli.run("ip", "link", "set", dev, "up")
        cli.run("ip", "route", "add", "default", "via", GW)
        calib.wait_for(cli.reachable, 10, what=f"{cli.name} reaches the gateway")

    def instance_id(cli, inst):
        ip = inst["interfaces"][0]["ip"]
        return cp.in_ns(cli.name, f'''
print(json.dumps(req("{ip}", "GET", "/latest/meta-data/instance-id", timeout=3)))''')

    def bridge_index():
        out = ns.run("ip", "-j", "link", "show", "dev", BRIDGE, check=False)
        return json.loads(out.stdout)[0]["ifindex"] if out.returncode == 0 else None

    seen = []
    a = None
    with c.case("launch A; A's guest gets its instance-id from 169.254.169.254", fatal=True):
        a = launch(calib.unique("mdra"))
        idx = bridge_index()
        assert idx, f"{BRIDGE} not made"
        seen.append(idx)
        cli = ClientNs("a")
        attach(cli, a)
        r = instance_id(cli, a)
        assert r[:2] == [200, a["ec2_id"]], r[:2]

    prev = a
    for tag in ("b", "c"):
        with c.case(f"terminate the last instance: the agent-made bridge is deleted; launch {tag.upper()}, "
                    "its guest is answered at once on the remade bridge", fatal=True):
            terminate(prev)
            calib.wait_for(lambda: bridge_index() is None, 10, what=f"{BRIDGE} deleted with its last port")
            inst = launch(calib.unique("mdr" + tag))
            idx = bridge_index()
            assert idx and idx not in seen, f"{BRIDGE} index {idx}, before {seen}"
            seen.append(idx)
            cli = ClientNs(tag)
            attach(cli, inst)
            r = instance_id(cli, inst)
            assert r[:2] == [200, inst["ec2_id"]], f"{r[:2]} (bridge indexes {seen})"
            prev = inst

    with c.case("the agent said it listens again (bridge made again)"):
        log = agent.log_path.read_text(errors="replace")
        assert log.count("metadata service listening again") >= 1, "no re-listen logged"

    inst_dir = d / "state" / "instances"

    def plant(where, age_s):
        """What a config drive build killed midway leaves: a temp dir holding user-data, ISO.tmp."""
        where.mkdir(parents=True, exist_ok=True)
        t = where / "config.iso.d.Ab12Cd"
        t.mkdir()
        (t / "user-data").write_text("#cloud-config\npassword: secret\n")
        (where / "config.iso.tmp").write_bytes(b"half")
        if age_s:
            old = time.time() - age_s
            for p in (t / "user-data", t, where / "config.iso.tmp"):
                os.utime(p, (old, old))
        return [t, where / "config.iso.tmp"]

    if shutil.which("xorriso"):
        with c.case("config drive: terminate removes config.iso and what a crashed build left"):
            r = cl.launch({"name": calib.unique("mdrcd"), "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
                           "image": {"path": files["image"]}, "interfaces": [{"network": "n1"}],
                           "config_drive": True})
            op = cl.wait_operation(r["operation"]["id"], timeout=60)
            assert op["state"] == "succeeded", short(op)
            cd = cl.wait_state(r["instance"]["id"], "running", timeout=30)
            here = inst_dir / cd["id"]
            assert (here / "config.iso").exists(), "no config.iso"
            planted = plant(here, 0)
            terminate(cd)
            left = [p.name for p in [here / "config.iso", *planted] if p.exists()]
            assert not left, f"left after terminate: {left}"
    else:
        calib.log("xorriso is not installed: the config drive terminate case is not run")

    with c.case("a restart's reconcile removes old leftovers of interrupted builds, keeps fresh ones"):
        terminate(prev)
        old = plant(inst_dir / "6a6a6a6a-0000-4000-8000-00000000dead", 3600)
        fresh = plant(inst_dir / "6a6a6a6a-0000-4000-8000-00000000beef", 0)
        agent.stop()
        agent.start(timeout=30)
        calib.wait_for(lambda: "removed what interrupted config drive builds left" in
                       agent.log_path.read_text(errors="replace"), 15, what="the reconcile's sweep")
        assert not [p for p in old if p.exists()], f"old leftovers kept: {old}"
        assert all(p.exists() for p in fresh), "fresh leftovers (maybe a build under way) removed"

    with c.case("the agent exits cleanly"):
        assert agent.stop() == 0


if __name__ == "__main__":
    calib.run("test_metadata_relisten_agent", main)
