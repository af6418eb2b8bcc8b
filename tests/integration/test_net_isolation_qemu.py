#!/usr/bin/env python3
"""Two guests on one network talk; a guest on another network cannot reach them (issue 10).
The agent runs inside the test network namespace with two networks:
 - vx: type vxlan (VNI 4201) over an underlay veth in the namespace whose peer is in a
   second namespace acting as a remote VTEP (its own vxlan device, same VNI, and an
   address in vx's CIDR), so traffic to the remote really is VXLAN-encapsulated;
 - br: type bridge, another CIDR.
Guests A and B on vx, C on br, booted together:
 - A pings B and the remote VTEP's address over the overlay; B pings A;
 - C pings its own gateway (control) but neither A nor B, with IPv4 forwarding ON in the
   namespace (as on a host running docker or libvirt's default network): the agent's
   table inet compute_agent drops routing between its networks (counter fwd_drop);
 - host side: the vxlan device has VNI 4201 and sits on vx's bridge; after terminate
   the agent's bridges and the vxlan device are gone.
SKIPs while the agent has no GET /v1/networks. Needs CA_NETNS* and CA_GUEST_DIR."""

import os
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import netenv  # noqa: E402
from netenv import calib  # noqa: E402
from calib import short  # noqa: E402

VNI = 4201
UL, UL_PEER = "ca-ul0", "ca-ul1"           # underlay veth (namespace side, remote side)
UL_IP, UL_REMOTE = "192.168.231.1", "192.168.231.2"
VX_BR, BR_BR = "ca-vxbr0", "ca-ibr0"
VX_CIDR, VX_GW = "10.93.1.0/24", "10.93.1.1"
BR_CIDR, BR_GW = "10.93.2.0/24", "10.93.2.1"
REMOTE_IP = "10.93.1.200"                  # the remote VTEP's address on the overlay
GA = {"ip": "10.93.1.10", "mac": "52:54:00:93:01:10"}
GB = {"ip": "10.93.1.11", "mac": "52:54:00:93:01:11"}
GC = {"ip": "10.93.2.10", "mac": "52:54:00:93:02:10"}
BOOT_TIMEOUT = 300


def remote_vtep(ns, rns):
    """Underlay veth UL (in ns) <-> UL_PEER (in rns); in rns a vxlan device, same VNI,
    unicast to UL_IP, with REMOTE_IP on it."""
    netenv.ip(ns, "link", "add", UL, "type", "veth", "peer", "name", UL_PEER, "netns", rns)
    netenv.ip(ns, "addr", "add", f"{UL_IP}/24", "dev", UL)
    netenv.ip(ns, "link", "set", UL, "up")
    netenv.ip(rns, "link", "set", "lo", "up")
    netenv.ip(rns, "addr", "add", f"{UL_REMOTE}/24", "dev", UL_PEER)
    netenv.ip(rns, "link", "set", UL_PEER, "up")
    netenv.ip(rns, "link", "add", "vx0", "type", "vxlan", "id", str(VNI), "local", UL_REMOTE,
              "remote", UL_IP, "dstport", "4789", "dev", UL_PEER)
    netenv.ip(rns, "addr", "add", f"{REMOTE_IP}/24", "dev", "vx0")
    netenv.ip(rns, "link", "set", "vx0", "up")


def main(c: calib.Checks):
    ns, uri, _ = netenv.env()
    gdir = os.environ.get("CA_GUEST_DIR")
    if not gdir or not (Path(gdir) / "vmlinuz").is_file():
        calib.skip(f"CA_GUEST_DIR ({gdir!r}) has no test guest (tests/env/build-guest.sh)")
    before = netenv.root_snapshot()
    d = calib.tmpdir("ca-netiso-")
    rns = f"{ns}-vtep"
    subprocess.run(["ip", "netns", "add", rns], check=True)
    agent = cl = None
    fwd_before = None
    ids = []
    prefix = calib.unique("ca-it-neti")
    try:
        with c.case("underlay veth + remote VTEP namespace", fatal=True):
            remote_vtep(ns, rns)
        with c.case("IPv4 forwarding on in the test namespace", fatal=True):
            fwd_before = forwarding(ns)
            forwarding(ns, "1")
            assert forwarding(ns) == "1"
        networks = {
            "vx": {"type": "vxlan", "vni": VNI, "parent": UL, "local": UL_IP, "remote": UL_REMOTE,
                   "bridge": VX_BR, "cidr": VX_CIDR, "gateway": VX_GW, "mtu": 1400},
            "br": {"type": "bridge", "bridge": BR_BR, "cidr": BR_CIDR, "gateway": BR_GW},
        }
        agent, cl, _ = netenv.start_agent(c, d, ns, uri, networks)
        body(c, ns, cl, gdir, prefix, ids)
    finally:
        if cl:
            netenv.cleanup_instances(cl, ids)
        if agent and agent.alive():
            agent.stop(timeout=60)
        calib.cleanup_domains(uri, ids, marker=prefix)
        netenv.del_link(ns, UL)
        subprocess.run(["ip", "netns", "del", rns])
        if fwd_before is not None:
            forwarding(ns, fwd_before)
    with c.case("the root network namespace is unchanged"):
        diff = netenv.snapshot_diff(before, netenv.root_snapshot())
        assert not diff, "host network changed:\n" + diff


def forwarding(ns, value=None):
    """net.ipv4.ip_forward of the namespace: read, or written (its /proc/sys, from inside it)."""
    path = "/proc/sys/net/ipv4/ip_forward"
    if value is None:
        return subprocess.run(["ip", "netns", "exec", ns, "cat", path], check=True, capture_output=True,
                              text=True).stdout.strip()
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", f"echo {value} > {path}"], check=True)
    return value


def nft_counter(ns, family, name):
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "counter", family, "compute_agent", name],
                         capture_output=True, text=True).stdout
    return int(out.split("packets")[1].split()[0]) if "packets" in out else -1


def body(c, ns, cl, gdir, prefix, ids):
    specs = (
        ("a", "vx", GA, (f"ca.net={GA['ip']}/24,{VX_GW}", f"ca.peer={GB['ip']},{REMOTE_IP}", "ca.imds=none")),
        ("b", "vx", GB, (f"ca.net={GB['ip']}/24,{VX_GW}", f"ca.peer={GA['ip']}", "ca.imds=none")),
        ("c", "br", GC, (f"ca.net={GC['ip']}/24,{BR_GW}", f"ca.peer={GA['ip']},{GB['ip']}", "ca.peerwait=10",
                         "ca.imds=none")),
    )
    with c.case("launch A, B on the vxlan network and C on the bridge network -> running", fatal=True):
        rs = []
        for tag, net, g, params in specs:
            r = cl.launch(netenv.launch_body(f"{prefix}-{tag}", gdir, params, [{"network": net, **g}]))
            ids.append(r["instance"]["id"])
            rs.append(r)
        for r in rs:
            op = cl.wait_operation(r["operation"]["id"], timeout=180)
            assert op["state"] == "succeeded", short(op)
    insts = [cl.instance(i) for i in ids]
    watches = [calib.ConsoleWatch(i["console_log"]) for i in insts]
    with c.case("host side: vxlan device with VNI 4201 on the vx bridge; taps on their bridges"):
        ln = netenv.links(ns)
        vx = [n for n, l in ln.items() if l["kind"] == "vxlan" and l["data"].get("id") == VNI]
        assert len(vx) == 1, f"vxlan devices with VNI {VNI}: {vx}"
        assert ln[vx[0]]["master"] == VX_BR, ln[vx[0]]
        for inst, br in zip(insts, (VX_BR, VX_BR, BR_BR)):
            dev = inst["interfaces"][0]["device"]
            assert ln.get(dev, {}).get("master") == br, f"{dev}: {ln.get(dev)}"
    for w in watches:
        netenv.wait_marker(w, r"^done$", timeout=BOOT_TIMEOUT)
    ma, mb, mc = (netenv.markers(w.text()) for w in watches)
    with c.case("A and B (same network) ping each other"):
        assert any(x.startswith(f"peer {GB['ip']} OK") for x in ma), ma
        assert any(x.startswith(f"peer {GA['ip']} OK") for x in mb), mb
    with c.case("A reaches the remote VTEP's address over VXLAN"):
        assert any(x.startswith(f"peer {REMOTE_IP} OK") for x in ma), ma
    with c.case("C (other network) reaches its gateway but neither A nor B"):
        assert f"ping gw {BR_GW} OK" in mc, mc
        assert any(x.startswith(f"peer {GA['ip']} FAIL") for x in mc), mc
        assert any(x.startswith(f"peer {GB['ip']} FAIL") for x in mc), mc
    with c.case("with forwarding on, it is the agent's inet table that stopped C (fwd_drop > 0)"):
        n = nft_counter(ns, "inet", "fwd_drop")
        assert n > 0, f"fwd_drop {n}"
    with c.case("terminate all: the agent's bridges, vxlan device and taps are gone"):
        for iid in ids:
            op = cl.wait_operation(cl.terminate(iid)["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
        ln = netenv.links(ns)
        left = [n for n, l in ln.items() if l["kind"] == "vxlan" or n in (VX_BR, BR_BR)
                or n in [i["interfaces"][0]["device"] for i in insts]]
        assert not left, left
        assert not netenv.leaks(ns, cl), netenv.leaks(ns, cl)
        assert UL in ln, "the underlay (not the agent's) was removed"


if __name__ == "__main__":
    calib.run("test_net_isolation_qemu", main)
