#!/usr/bin/env python3
"""A guest on the network, end to end (issue 10): the agent runs inside the test network
namespace (tests/env/netns.sh) with a [network] bridge network (cidr, gateway; the agent
makes the bridge), on the namespace's private libvirtd, and launches two busybox guests
with one interface each (MAC and IP given, like a Neutron port), user_data, public_keys,
metadata and a hostname:
 - guest 1 (http_tokens optional) configures eth0, pings the gateway, gets an IMDSv2 token
   (PUT) and fetches instance-id, user-data and /openstack/latest/meta_data.json with it;
   each is compared with the API's answer; its SMBIOS says OpenStack Nova with the
   instance uuid;
 - guest 2 (http_tokens required, config_drive true) is refused without a token and finds
   its config drive (config-2), whose meta_data.json uuid is the instance's;
 - the host side: the tap is on the bridge with its filter, the bridge carries the gateway
   and 169.254.169.254; after terminate nothing is left; the root namespace is unchanged.
SKIPs while the agent has no GET /v1/networks. Needs CA_NETNS* and CA_GUEST_DIR."""

import base64
import json
import os
import struct
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import netenv  # noqa: E402
from netenv import calib  # noqa: E402
from calib import short  # noqa: E402

NET = "n1"
BR = "ca-gbr0"
CIDR, PREFIX, GW = "10.91.0.0/24", 24, "10.91.0.1"
G1 = {"ip": "10.91.0.10", "mac": "52:54:00:91:00:10"}
G2 = {"ip": "10.91.0.11", "mac": "52:54:00:91:00:11"}
BOOT_TIMEOUT = 240


def ssh_key(comment):
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def main(c: calib.Checks):
    ns, uri, _ = netenv.env()
    gdir = os.environ.get("CA_GUEST_DIR")
    if not gdir or not (Path(gdir) / "vmlinuz").is_file():
        calib.skip(f"CA_GUEST_DIR ({gdir!r}) has no test guest (tests/env/build-guest.sh)")
    before = netenv.root_snapshot()
    d = calib.tmpdir("ca-netguest-")
    networks = {NET: {"type": "bridge", "bridge": BR, "cidr": CIDR, "gateway": GW}}
    agent, cl, nets = netenv.start_agent(c, d, ns, uri, networks)
    prefix = calib.unique("ca-it-netg")
    ids = []
    try:
        body(c, ns, cl, gdir, prefix, ids)
    finally:
        netenv.cleanup_instances(cl, ids)
        if agent.alive():
            agent.stop(timeout=60)
        calib.cleanup_domains(uri, ids, marker=prefix)
    with c.case("the root network namespace is unchanged"):
        diff = netenv.snapshot_diff(before, netenv.root_snapshot())
        assert not diff, "host network changed:\n" + diff


def body(c, ns, cl, gdir, prefix, ids):
    key = ssh_key("ca-test@net")
    ud = f"#cloud-config\n# {prefix} user-data\n".encode()
    common = {"user_data": base64.b64encode(ud).decode(), "public_keys": {"mykey": key},
              "metadata": {"role": "web"}}
    b1 = netenv.launch_body(f"{prefix}-1", gdir, netenv.static_params(G1["ip"], PREFIX, GW),
                            [{"network": NET, **G1}], hostname="vm-net-1", **common)
    b2 = netenv.launch_body(f"{prefix}-2", gdir,
                            netenv.static_params(G2["ip"], PREFIX, GW, "ca.imds=v1", "ca.cd=1"),
                            [{"network": NET, **G2}], hostname="vm-net-2", config_drive=True,
                            metadata_options={"http_tokens": "required"}, **common)
    with c.case("launch two guests with one interface each (mac + ip given) -> running", fatal=True):
        r1 = cl.launch(b1)
        ids.append(r1["instance"]["id"])
        r2 = cl.launch(b2)
        ids.append(r2["instance"]["id"])
        for r in (r1, r2):
            op = cl.wait_operation(r["operation"]["id"], timeout=180)
            assert op["state"] == "succeeded", short(op)
    i1, i2 = cl.instance(ids[0]), cl.instance(ids[1])
    w1, w2 = calib.ConsoleWatch(i1["console_log"]), calib.ConsoleWatch(i2["console_log"])
    with c.case("instance JSON: interfaces (network, mac, ip, device, port_id), hostname, config_drive"):
        for inst, g, h, cd in ((i1, G1, "vm-net-1", False), (i2, G2, "vm-net-2", True)):
            itf = inst["interfaces"]
            assert len(itf) == 1, short(itf)
            assert itf[0]["network"] == NET and itf[0]["mac"] == g["mac"] and itf[0]["ip"] == g["ip"], short(itf)
            assert itf[0]["device"] and itf[0]["port_id"], short(itf)
            dev = itf[0]["device"]   # "tap" + the port id, cut to fit IFNAMSIZ
            assert dev.startswith("tap" + itf[0]["port_id"][:8]) and len(dev) <= 15, short(itf)
            assert inst["hostname"] == h and inst["config_drive"] is cd, short(inst)
    with c.case("host side: the taps are on the bridge (marked, filtered); the bridge has the gateway "
                "and 169.254.169.254/32"):
        ln = netenv.links(ns)
        for inst in (i1, i2):
            dev = inst["interfaces"][0]["device"]
            assert dev in ln and ln[dev]["master"] == BR, f"{dev}: {ln.get(dev)}"
            assert ln[dev]["alias"] == f"compute-agent:{inst['id']}", ln[dev]
            assert f'"{dev}"' in netenv.nft_text(ns), f"no nft element for {dev}"
        addrs = netenv.ip(ns, "-o", "addr", "show", "dev", BR)
        assert f"{GW}/{PREFIX}" in addrs and "169.254.169.254/32" in addrs, addrs

    with c.case("guest 1: eth0 with the MAC and IP of its interface, pings the gateway", fatal=True):
        netenv.wait_marker(w1, r"^ping gw ", timeout=BOOT_TIMEOUT)
        m = netenv.markers(w1.text())
        assert f"eth0 mac={G1['mac']}" in m and f"ping gw {GW} OK" in m, m
    with c.case("guest 1: SMBIOS says OpenStack Nova, serial and uuid = the instance uuid"):
        m = netenv.markers(w1.text())
        for want in ("dmi product_name=OpenStack Nova", "dmi sys_vendor=compute-agent",
                     f"dmi product_serial={i1['id']}", "dmi product_family=Virtual Machine"):
            assert want in m, f"{want!r} not in {m}"
        assert f"dmi product_uuid={i1['id']}" in [x.lower() for x in m], m
    with c.case("guest 1: IMDSv2 token (PUT), then instance-id, user-data, meta_data.json match the API"):
        netenv.wait_marker(w1, r"^done$", timeout=120)
        m = netenv.markers(w1.text())
        assert any(x.startswith("token OK") for x in m), m
        b = netenv.blocks(w1.text())
        rc, got, err = b["latest/meta-data/instance-id"]
        assert rc == 0 and got.decode() == i1["ec2_id"], f"instance-id: rc={rc} {got!r} {err} (API {i1['ec2_id']})"
        rc, got, err = b["latest/user-data"]
        assert rc == 0 and got == ud, f"user-data: rc={rc} {got!r} {err}"
        rc, got, err = b["openstack/latest/meta_data.json"]
        assert rc == 0, f"meta_data.json: rc={rc} {err}"
        md = json.loads(got)
        assert md["uuid"] == i1["id"], short(md)
        assert md.get("hostname", "").split(".")[0] == "vm-net-1", short(md)
        assert md.get("name") == i1["name"], short(md)
        assert md.get("public_keys") == {"mykey": key}, short(md)
        assert md.get("meta") == {"role": "web"}, short(md)
        assert md.get("availability_zone") == i1.get("availability_zone", "nova"), short(md)

    with c.case("guest 2 (http_tokens required): IMDSv1 GET refused with 401"):
        netenv.wait_marker(w2, r"^done$", timeout=BOOT_TIMEOUT)
        b = netenv.blocks(w2.text())
        rc, got, err = b["latest/meta-data/instance-id"]
        assert rc != 0 and "401" in err, f"rc={rc} body={got!r} err={err}"
    with c.case("guest 2: config drive labelled config-2 mounted, meta_data.json uuid = the instance's"):
        m = netenv.markers(w2.text())
        assert any(x.startswith("config-drive dev=") and "label=config-2" in x for x in m), m
        assert f"config-drive uuid={i2['id']}" in m, m
        b = netenv.blocks(w2.text())
        md = json.loads(b["cd:openstack/latest/meta_data.json"][1])
        assert md["uuid"] == i2["id"] and md.get("public_keys") == {"mykey": key}, short(md)
        if "cd:openstack/latest/user_data" in b:
            assert b["cd:openstack/latest/user_data"][1] == ud, b["cd:openstack/latest/user_data"]

    with c.case("terminate both: taps, filter elements and the agent's bridge are gone"):
        devs = [i["interfaces"][0]["device"] for i in (i1, i2)]
        for iid in ids:
            op = cl.wait_operation(cl.terminate(iid)["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
        ln = netenv.links(ns)
        assert not [x for x in devs if x in ln], f"left: {[x for x in devs if x in ln]}"
        assert BR not in ln, f"bridge {BR} left: {ln.get(BR)}"
        text = netenv.nft_text(ns)
        assert not [x for x in devs if f'"{x}"' in text], text
        assert not netenv.leaks(ns, cl), netenv.leaks(ns, cl)


if __name__ == "__main__":
    calib.run("test_net_guest_qemu", main)
