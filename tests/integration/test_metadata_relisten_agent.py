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
Namespaces are deleted at exit (also on failure); nothing is made in the root namespace."""

import json
import os
import shutil
import signal
import subprocess
import sys

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

    with c.case("the agent said it listens again (bridge made again), and exits cleanly"):
        log = agent.log_path.read_text(errors="replace")
        assert log.count("metadata service listening again") >= 1, "no re-listen logged"
        terminate(prev)
        agent.stop()


if __name__ == "__main__":
    calib.run("test_metadata_relisten_agent", main)
