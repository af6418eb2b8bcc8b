#!/usr/bin/env python3
"""Anti-spoofing, end to end (issue 10): the agent inside the test network namespace with a
bridge network; a victim guest V and an attacker guest A on it. A first fetches its own
metadata (the control), then takes V's MAC, then V's IP, then both (ca.spoof=mac,ip,both,
ca.spoofmac/ca.spoofip = V's), each time pinging the gateway, sending a UDP probe to a
listener in the namespace and asking the metadata service for instance-id; after each phase
it restores its own identity and does the same again.
Asserted from the host side: the listener receives A's own and restored probes and none of
the spoofed ones; the drop counters of table bridge compute_agent rise; the metadata
service never answers a spoofed request (no token, no instance-id: neither V's nor A's).
SKIPs while the agent has no GET /v1/networks. Needs CA_NETNS* and CA_GUEST_DIR."""

import os
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import netenv  # noqa: E402
from netenv import calib  # noqa: E402
from calib import short  # noqa: E402

NET = "n1"
BR = "ca-sbr0"
CIDR, PREFIX, GW = "10.92.0.0/24", 24, "10.92.0.1"
A = {"ip": "10.92.0.10", "mac": "52:54:00:92:00:10"}
V = {"ip": "10.92.0.20", "mac": "52:54:00:92:00:20"}
UDP_PORT = 23002
PHASES = ("mac", "ip", "both")
BOOT_TIMEOUT = 240


def main(c: calib.Checks):
    ns, uri, _ = netenv.env()
    gdir = os.environ.get("CA_GUEST_DIR")
    if not gdir or not (Path(gdir) / "vmlinuz").is_file():
        calib.skip(f"CA_GUEST_DIR ({gdir!r}) has no test guest (tests/env/build-guest.sh)")
    before = netenv.root_snapshot()
    d = calib.tmpdir("ca-netspoof-")
    networks = {NET: {"type": "bridge", "bridge": BR, "cidr": CIDR, "gateway": GW}}
    # the listener is a host service on the gateway: with the agent's host firewall on,
    # guests could not reach it at all (not even honestly); this test is about the
    # bridge filter, so the host firewall is off here (test_netplug covers it)
    agent, cl, _ = netenv.start_agent(c, d, ns, uri, networks, extra="[netplug]\nhost_firewall = false\n")
    prefix = calib.unique("ca-it-nets")
    ids = []
    udp = None
    try:
        # 0.0.0.0: the gateway address only exists once the agent has made the bridge
        udp = netenv.udp_listener(ns, "0.0.0.0", UDP_PORT, d)
        body(c, ns, cl, gdir, prefix, ids, udp)
    finally:
        if udp:
            udp.stop()
        netenv.cleanup_instances(cl, ids)
        if agent.alive():
            agent.stop(timeout=60)
        calib.cleanup_domains(uri, ids, marker=prefix)
    with c.case("the root network namespace is unchanged"):
        diff = netenv.snapshot_diff(before, netenv.root_snapshot())
        assert not diff, "host network changed:\n" + diff


def body(c, ns, cl, gdir, prefix, ids, udp):
    bv = netenv.launch_body(f"{prefix}-victim", gdir, netenv.static_params(V["ip"], PREFIX, GW, "ca.imds=none"),
                            [{"network": NET, **V}])
    ba = netenv.launch_body(f"{prefix}-attacker", gdir,
                            netenv.static_params(A["ip"], PREFIX, GW, f"ca.udp={GW}:{UDP_PORT}",
                                                 "ca.spoof=" + ",".join(PHASES), f"ca.spoofmac={V['mac']}",
                                                 f"ca.spoofip={V['ip']}/{PREFIX}"),
                            [{"network": NET, **A}])
    with c.case("launch victim and attacker -> running", fatal=True):
        rv = cl.launch(bv)
        ids.append(rv["instance"]["id"])
        ra = cl.launch(ba)
        ids.append(ra["instance"]["id"])
        for r in (rv, ra):
            op = cl.wait_operation(r["operation"]["id"], timeout=180)
            assert op["state"] == "succeeded", short(op)
    vi, ai = cl.instance(ids[0]), cl.instance(ids[1])
    drops0 = netenv.nft_drops(ns)
    with c.case("the ports are filtered: table bridge compute_agent has both taps"):
        text = netenv.nft_text(ns)
        assert text, "no table bridge compute_agent in the namespace"
        for inst in (vi, ai):
            assert f'"{inst["interfaces"][0]["device"]}"' in text, f"no element for {inst['interfaces'][0]}"
    wa = calib.ConsoleWatch(ai["console_log"])
    with c.case("control: the attacker's own identity pings, probes and gets its own instance-id", fatal=True):
        netenv.wait_marker(wa, r"^spoof mac mac=", timeout=BOOT_TIMEOUT)
        m = netenv.markers(wa.text())
        assert f"ping gw {GW} OK" in m, m
        rc, got, err = netenv.blocks(wa.text())["latest/meta-data/instance-id"]
        assert rc == 0 and got.decode() == ai["ec2_id"], f"rc={rc} {got!r} {err} (API {ai['ec2_id']})"
        calib.wait_for(lambda: any(r["name"] == "ca-probe-own" and r["src"] == A["ip"] for r in udp.received()),
                       10, what="the attacker's own UDP probe", last=udp.received)
    with c.case("the attacker finishes its spoof phases", fatal=True):
        netenv.wait_marker(wa, r"^done$", timeout=180)
    m = netenv.markers(wa.text())
    b = netenv.blocks(wa.text())
    got = udp.received()
    for ph in PHASES:
        with c.case(f"spoof {ph}: the gateway does not answer, the listener receives nothing"):
            assert f"spoof {ph} ping gw {GW} FAIL" in m, m
            bad = [r for r in got if r["name"] == f"ca-probe-spoof-{ph}"]
            assert not bad, f"spoofed probe received: {bad}"
        with c.case(f"spoof {ph}: the metadata service answers nothing (neither V's nor A's identity)"):
            rc, body_, err = b[f"spoof-{ph}:latest/meta-data/instance-id"]
            assert body_.decode(errors="replace") not in (vi["ec2_id"], ai["ec2_id"]), body_
            assert rc != 0, f"rc={rc} body={body_!r}"
        with c.case(f"restored after {ph}: pings, probes and its own instance-id again"):
            assert f"restored {ph} ping gw {GW} OK" in m, m
            assert any(r["name"] == f"ca-probe-restored-{ph}" and r["src"] == A["ip"] for r in got), got
            rc, body_, err = b[f"restored-{ph}:latest/meta-data/instance-id"]
            assert rc == 0 and body_.decode() == ai["ec2_id"], f"rc={rc} {body_!r} {err}"
    with c.case("host side: the filter's drop counters rose"):
        drops = netenv.nft_drops(ns)
        assert drops is not None and drops > (drops0 or 0), \
            f"drops before {drops0}, after {drops}: {netenv.nft_counters(ns)}"
        print(f"     (packets dropped by table bridge compute_agent: {drops - (drops0 or 0)})")
    with c.case("nothing was ever received from the victim's address except from the victim"):
        assert not [r for r in got if r["src"] == V["ip"]], [r for r in got if r["src"] == V["ip"]]

    with c.case("terminate both: taps and filter elements gone, nothing leaked"):
        for iid in ids:
            op = cl.wait_operation(cl.terminate(iid)["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
        assert not netenv.leaks(ns, cl), netenv.leaks(ns, cl)


if __name__ == "__main__":
    calib.run("test_net_spoof_qemu", main)
