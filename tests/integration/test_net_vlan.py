#!/usr/bin/env python3
"""A VLAN network on the host (issue 10): [network v] type vlan on a parent device, the
agent makes the 802.1Q sub-interface and its bridge; a guest on it pings the gateway;
after terminate both are gone and the parent is untouched.
Needs 802.1Q in the host kernel: probed by making a VLAN on a scratch veth inside the test
network namespace; these machines' kernel has CONFIG_VLAN_8021Q unset, so here it SKIPs
with that reason: net-plug's VLAN code path is tested inside a TCG guest whose kernel has
8021q by test_net_vlan_guest_qemu.py (tests/tools/netplug_vlan_probe.c in the guest).
Needs CA_NETNS* and CA_GUEST_DIR; SKIPs while the agent has no GET /v1/networks."""

import os
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import netenv  # noqa: E402
from netenv import calib  # noqa: E402
from calib import short  # noqa: E402

PARENT, PEER = "ca-vlp0", "ca-vlp1"
VID = 105
CIDR, PREFIX, GW = "10.95.0.0/24", 24, "10.95.0.1"
G = {"ip": "10.95.0.10", "mac": "52:54:00:95:00:10"}


def host_has_8021q(ns):
    p = subprocess.run(netenv.ns_argv(ns, "ip", "link", "add", "link", PARENT, "name", "ca-vlprobe",
                                      "type", "vlan", "id", "7"), capture_output=True, text=True)
    if p.returncode == 0:
        netenv.del_link(ns, "ca-vlprobe")
        return True, ""
    return False, p.stderr.strip()


def main(c: calib.Checks):
    ns, uri, _ = netenv.env()
    gdir = os.environ.get("CA_GUEST_DIR")
    if not gdir or not (Path(gdir) / "vmlinuz").is_file():
        calib.skip(f"CA_GUEST_DIR ({gdir!r}) has no test guest (tests/env/build-guest.sh)")
    before = netenv.root_snapshot()
    netenv.ip(ns, "link", "add", PARENT, "type", "veth", "peer", "name", PEER)
    agent = cl = None
    ids = []
    prefix = calib.unique("ca-it-netv")
    try:
        ok, why = host_has_8021q(ns)
        if not ok:
            calib.skip(f"no 802.1Q in the host kernel (CONFIG_VLAN_8021Q unset: 'ip link add ... type vlan' "
                       f"says: {why}); net-plug's VLAN path is tested inside a TCG guest by "
                       f"test_net_vlan_guest_qemu.py")
        netenv.ip(ns, "link", "set", PARENT, "up")
        netenv.ip(ns, "link", "set", PEER, "up")
        d = calib.tmpdir("ca-netvlan-")
        networks = {"v": {"type": "vlan", "parent": PARENT, "vlan_id": VID, "cidr": CIDR, "gateway": GW}}
        agent, cl, _ = netenv.start_agent(c, d, ns, uri, networks)
        with c.case("launch a guest on the vlan network -> running", fatal=True):
            r = cl.launch(netenv.launch_body(f"{prefix}-g", gdir,
                                             netenv.static_params(G["ip"], PREFIX, GW, "ca.imds=none"),
                                             [{"network": "v", **G}]))
            ids.append(r["instance"]["id"])
            op = cl.wait_operation(r["operation"]["id"], timeout=180)
            assert op["state"] == "succeeded", short(op)
        inst = cl.instance(ids[0])
        with c.case(f"host side: a VLAN {VID} device on {PARENT}, on the network's bridge with the tap"):
            ln = netenv.links(ns)
            vl = [n for n, l in ln.items() if l["kind"] == "vlan" and l["data"].get("id") == VID]
            assert len(vl) == 1, f"vlan devices with id {VID}: {vl}"
            br = ln[vl[0]]["master"]
            assert br and ln.get(inst["interfaces"][0]["device"], {}).get("master") == br, (vl, ln.get(vl[0]))
        with c.case("the guest pings the gateway over the VLAN network's bridge"):
            w = calib.ConsoleWatch(inst["console_log"])
            netenv.wait_marker(w, r"^done$", timeout=240)
            assert f"ping gw {GW} OK" in netenv.markers(w.text()), netenv.markers(w.text())
        with c.case("terminate: VLAN device and bridge gone, the parent untouched"):
            op = cl.wait_operation(cl.terminate(ids[0])["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
            ln = netenv.links(ns)
            assert not [n for n, l in ln.items() if l["kind"] == "vlan"], ln
            assert PARENT in ln and not ln[PARENT]["master"], ln.get(PARENT)
            assert not netenv.leaks(ns, cl), netenv.leaks(ns, cl)
    finally:
        if cl:
            netenv.cleanup_instances(cl, ids)
        if agent and agent.alive():
            agent.stop(timeout=60)
        if ids:
            calib.cleanup_domains(uri, ids, marker=prefix)
        netenv.del_link(ns, PARENT)
    with c.case("the root network namespace is unchanged"):
        diff = netenv.snapshot_diff(before, netenv.root_snapshot())
        assert not diff, "host network changed:\n" + diff


if __name__ == "__main__":
    calib.run("test_net_vlan", main)
