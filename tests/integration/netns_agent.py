"""An agent run inside a network namespace of the test's own (issue 10 tests of helper C).

`ip netns add` makes it; everything the agent plugs (bridges, taps, veths, filter rules)
lives there and goes with it. The namespace is deleted at exit, even on failure."""

import atexit
import os
import shutil
import subprocess

import calib


def have_netns():
    """None when network namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "no ip(8)"
    return None


class Netns:
    def __init__(self, prefix="cac"):
        self.name = f"{prefix}-{os.getpid()}-{calib.unique('n')[-6:]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        atexit.register(self.delete)
        self.run("ip", "link", "set", "lo", "up")
        # the bridges the configuration below names (type bridge: existing ones)
        for br in ("cacbr1", "cacbr2"):
            self.run("ip", "link", "add", br, "type", "bridge")
            self.run("ip", "link", "set", br, "up")

    def run(self, *argv, check=True):
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=check,
                              capture_output=True, text=True)

    def links(self):
        out = self.run("ip", "-o", "link", "show").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]

    def delete(self):
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


class NsAgent(calib.Agent):
    """calib.Agent whose process runs in netns (ip netns exec execs it: same pid)."""

    def __init__(self, netns, *a, **kw):
        self.netns = netns
        super().__init__(*a, **kw)

    def argv(self):
        return ["ip", "netns", "exec", self.netns.name] + super().argv()


NETWORKS_CONF = """
[agent]
host_name = {host}
[network n1]
type = bridge
bridge = cacbr1
cidr = 10.77.0.0/24
gateway = 10.77.0.1
dns = 10.77.0.1
mtu = 1450
[network n2]
type = vxlan
vni = 4242
cidr = 10.78.0.0/29
gateway = 10.78.0.1
[network flat]
type = bridge
bridge = cacbr2
"""


def netplug_is_stub():
    """The agent was built with helper C's stand-in for net-plug (dropped at merge)."""
    return (calib.ROOT / "net-plug" / "stub.c").exists()


def metadata_is_stub():
    return (calib.ROOT / "agent" / "metadata" / "stub.c").exists()


def write_conf(d, extra=""):
    p = d / "agent.conf"
    p.write_text(NETWORKS_CONF.format(host=calib.unique("cac-host")) + extra)
    return p
