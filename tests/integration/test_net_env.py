#!/usr/bin/env python3
"""The test network env and the test guest, without the agent (tests/env/netns.sh,
tests/env/build-guest.sh's ca.* behaviour):
 - in the test's own network namespace, a bridge with a gateway address and
   169.254.169.254/32, a fixed-answer HTTP server on 169.254.169.254:80 and a UDP listener;
 - a guest defined with plain libvirt XML on the private libvirtd (<interface type='bridge'>),
   booted with ca.net (static), ca.udp and ca.cd (a config-2 ISO made with xorriso);
 - from its serial log: it pinged the gateway, got a token with PUT, fetched the answer with
   the token, sent its UDP probe from its address, mounted the config drive and printed the
   uuid; the tap lives in the namespace, not in the root one;
 - a second guest takes its address by DHCP (ca.net=dhcp; dnsmasq in the namespace with a
   static entry for its MAC, when dnsmasq is installed), pings the first (ca.peer), then spoofs (ca.spoof=mac,ip,both) behind a
   filter the test puts in the namespace (nft bridge table, per-tap MAC and IP sets):
   nothing spoofed reaches the listener or the HTTP server, the drop counters rise, and
   after each phase the restored identity works again;
 - both guests make eth0.100 (ca.vlan: the guest kernel's 8021q) and ping each other over
   it (802.1Q frames forwarded by the bridge; the host kernel itself has no 802.1Q);
 - the root network namespace is unchanged.
Needs CA_NETNS* (tests/run.sh as root) and CA_GUEST_DIR, else skip."""

import os
import shutil
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import netenv  # noqa: E402
from netenv import calib  # noqa: E402

BR = "caenvbr0"
TAP = "caenvtap0"
GW = "10.77.0.1"
GUEST_IP = "10.77.0.10"
MAC = "52:54:00:77:00:10"
TAP2 = "caenvtap1"
GUEST2_IP = "10.77.0.11"
MAC2 = "52:54:00:77:00:11"
UDP_PORT = 23001
VLAN_IP1, VLAN_IP2 = "10.100.0.10", "10.100.0.11"
FILTER = f"""table bridge ca_envfilter {{
  set macs {{ type ifname . ether_addr; elements = {{ "{TAP}" . {MAC}, "{TAP2}" . {MAC2} }} }}
  set ips {{ type ifname . ipv4_addr; elements = {{ "{TAP}" . {GUEST_IP}, "{TAP2}" . {GUEST2_IP} }} }}
  chain pre {{
    type filter hook prerouting priority -200; policy accept;
    iifname != "caenvtap*" accept
    iifname . ether saddr != @macs counter drop
    ether type ip iifname . ip saddr @ips accept
    ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp dport 67 accept
    ether type vlan accept
    ether type arp iifname . arp saddr ether @macs iifname . arp saddr ip @ips accept
    counter drop
  }}
}}
"""


def main(c: calib.Checks):
    ns, uri, _ = netenv.env()
    gdir = os.environ.get("CA_GUEST_DIR")
    if not gdir or not (Path(gdir) / "vmlinuz").is_file():
        calib.skip(f"CA_GUEST_DIR ({gdir!r}) has no test guest (tests/env/build-guest.sh)")
    before = netenv.root_snapshot()
    d = calib.tmpdir("ca-netenv-")
    answer = f"smoke-{uuidlib.uuid4().hex[:12]}"
    name = calib.unique("ca-it-netenv")
    name2 = name + "-spoof"
    serial = d / "serial.log"
    serial2 = d / "serial2.log"
    procs = []
    try:
        with c.case("bridge with gateway + 169.254.169.254/32 in the namespace; HTTP server and "
                    "UDP listener there", fatal=True):
            netenv.make_bridge(ns, BR, [f"{GW}/24", "169.254.169.254/32"])
            procs.append(netenv.fixed_http_server(ns, "169.254.169.254", 80, answer, d))
            procs.append(netenv.udp_listener(ns, GW, UDP_PORT, d))
            netenv.ns_run(ns, "nft", "-f", "-", input=FILTER)
        dhcp = shutil.which("dnsmasq") is not None
        if dhcp:
            with c.case("dnsmasq on the bridge with a static entry for guest 2", fatal=True):
                procs.append(netenv.NsProcess(ns, [
                    "dnsmasq", "-k", "--conf-file=/dev/null", "--no-hosts", "--no-resolv", "--port=0",
                    "-u", "root", "--bind-interfaces", f"--interface={BR}", "--except-interface=lo",
                    f"--dhcp-range={GW},static,255.255.255.0,10m", f"--dhcp-host={MAC2},{GUEST2_IP}",
                    f"--dhcp-option=3,{GW}", f"--dhcp-option=121,169.254.169.254/32,{GW}",
                    f"--dhcp-leasefile={d / 'leases'}", f"--pid-file={d / 'dnsmasq.pid'}"], d / "dnsmasq.log"))
                calib.wait_for(lambda: (d / "dnsmasq.pid").exists() or not procs[-1].alive(), 15,
                               what="dnsmasq to start")
                assert procs[-1].alive(), procs[-1].log()
        http, udp = procs[:2]
        cd_xml = ""
        cd_uuid = str(uuidlib.uuid4())
        if shutil.which("xorriso"):
            src = d / "cd"
            (src / "openstack" / "latest").mkdir(parents=True)
            (src / "openstack" / "latest" / "meta_data.json").write_text(
                f'{{"uuid": "{cd_uuid}", "name": "{name}", "hostname": "{name}"}}\n')
            iso = d / "config2.iso"
            p = subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "config-2", "-J", "-R",
                                "-o", str(iso), str(src)], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            cd_xml = (f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
                      f"<source file='{iso}'/><target dev='hdc' bus='ide'/><readonly/></disk>")
        iface = (f"<interface type='bridge'><source bridge='{BR}'/><model type='virtio'/>"
                 f"<mac address='{MAC}'/><target dev='{TAP}'/></interface>")
        cmd = netenv.guest_cmdline(f"ca.net={GUEST_IP}/24,{GW}", f"ca.udp={GW}:{UDP_PORT}",
                                   "ca.cd=1" if cd_xml else "", f"ca.vlan=100,{VLAN_IP1}/24,{VLAN_IP2}")
        xml = d / "dom.xml"
        xml.write_text(netenv.domain_xml(name, gdir, cmd, serial, iface, cd_xml))
        iface2 = (f"<interface type='bridge'><source bridge='{BR}'/><model type='virtio'/>"
                  f"<mac address='{MAC2}'/><target dev='{TAP2}'/></interface>")
        cmd2 = netenv.guest_cmdline("ca.net=dhcp" if dhcp else f"ca.net={GUEST2_IP}/24,{GW}",
                                    f"ca.udp={GW}:{UDP_PORT}",
                                    f"ca.peer={GUEST_IP}", "ca.spoof=mac,ip,both",
                                    f"ca.vlan=100,{VLAN_IP2}/24,{VLAN_IP1}")
        xml2 = d / "dom2.xml"
        xml2.write_text(netenv.domain_xml(name2, gdir, cmd2, serial2, iface2))
        with c.case("define + start the guests on the namespace's libvirtd", fatal=True):
            calib.virsh(uri, "define", str(xml), check=True)
            calib.virsh(uri, "define", str(xml2), check=True)
            t0 = netenv.now()
            calib.virsh(uri, "start", name, check=True)
            calib.virsh(uri, "start", name2, check=True)
        watch = calib.ConsoleWatch(serial)
        watch2 = calib.ConsoleWatch(serial2)
        with c.case("the tap is in the namespace (on the bridge), not in the root namespace"):
            ln = netenv.links(ns)
            assert TAP in ln and ln[TAP]["master"] == BR, f"{TAP}: {ln.get(TAP)}"
            assert subprocess.run(["ip", "link", "show", TAP], capture_output=True).returncode != 0, \
                f"{TAP} exists in the root namespace"
        with c.case("the guest configures eth0 with its MAC and pings the gateway", fatal=True):
            netenv.wait_marker(watch, r"^ping gw ", timeout=120)
            m = netenv.markers(watch.text())
            assert f"eth0 mac={MAC}" in m, m
            assert f"net static ip={GUEST_IP}/24 gw={GW}" in m, m
            assert f"ping gw {GW} OK" in m, m
        with c.case("IMDSv2 token by PUT, then the answer fetched with the token header"):
            watch.wait_text("CA-NET-END openstack/latest/meta_data.json", timeout=120)
            print(f"     (start -> metadata fetched: {netenv.now() - t0:.1f} s)")
            m = netenv.markers(watch.text())
            assert "token OK len=11" in m, m
            b = netenv.blocks(watch.text())
            for path in ("latest/meta-data/instance-id", "latest/user-data", "openstack/latest/meta_data.json"):
                assert path in b, f"no block {path}: {sorted(b)}"
                rc, body, err = b[path]
                assert rc == 0 and body == answer.encode(), f"{path}: rc={rc} body={body!r} err={err}"
            reqs = http.requests()
            assert reqs and reqs[0]["method"] == "PUT" and reqs[0]["path"] == "/latest/api/token", reqs[:1]
            assert reqs[0]["headers"].get("X-aws-ec2-metadata-token-ttl-seconds") == "300", reqs[0]
            reqs = [r for r in reqs if r["src"] == GUEST_IP]
            gets = [r for r in reqs if r["method"] == "GET"]
            assert len(gets) == 3, reqs
            assert all(r["headers"].get("X-aws-ec2-metadata-token") == "smoke-token" for r in gets), gets
        with c.case("the guest's UDP probe reached the listener from its address"):
            got = udp.received()
            assert any(r["name"] == "ca-probe-own" and r["src"] == GUEST_IP for r in got), got
        if cd_xml:
            with c.case("config drive (IDE cdrom, config-2): found by label, mounted, uuid printed"):
                netenv.wait_marker(watch, r"^config-drive (uuid=|NONE)", timeout=60)
                m = netenv.markers(watch.text())
                assert any(x.startswith("config-drive dev=") and "label=config-2" in x for x in m), m
                assert f"config-drive uuid={cd_uuid}" in m, m
        else:
            print("     (xorriso not installed: config drive not checked)")
        if dhcp:
            with c.case("guest 2 gets its address and router by DHCP"):
                netenv.wait_marker(watch2, r"^net dhcp ", timeout=120)
                m = netenv.markers(watch2.text())
                assert f"net dhcp ip={GUEST2_IP}/24 gw={GW}" in m, m
                routes = next(x for x in m if x.startswith("routes "))
                assert f"default via {GW} dev eth0" in routes, routes
                assert f"169.254.169.254 via {GW} dev eth0" in routes, f"no option 121 route: {routes}"
        with c.case("guest 2 pings guest 1 (ca.peer)"):
            netenv.wait_marker(watch2, r"^peer ", timeout=120)
            assert f"peer {GUEST_IP} OK" in " ".join(netenv.markers(watch2.text())), netenv.markers(watch2.text())
        with c.case("guest 2 spoofs MAC, IP, both: dropped (no probe, no answer, drop counters up); "
                    "restored identity works after each"):
            netenv.wait_marker(watch2, r"^done$", timeout=180)
            print(f"     (start -> guest 2 done: {netenv.now() - t0:.1f} s)")
            m = netenv.markers(watch2.text())
            b = netenv.blocks(watch2.text())
            got = {r["name"] for r in udp.received() if r["src"] in (GUEST2_IP, "10.77.0.66")}
            for ph in ("mac", "ip", "both"):
                assert f"spoof {ph} ping gw {GW} FAIL" in m, (ph, m)
                assert f"restored {ph} ping gw {GW} OK" in m, (ph, m)
                assert f"ca-probe-spoof-{ph}" not in got, (ph, got)
                assert f"ca-probe-restored-{ph}" in got, (ph, got)
                rc, body, err = b[f"spoof-{ph}:latest/meta-data/instance-id"]
                assert rc != 0, (ph, rc, body)
                rc, body, err = b[f"restored-{ph}:latest/meta-data/instance-id"]
                assert rc == 0 and body == answer.encode(), (ph, rc, body, err)
            drops = sum(x[2] for x in netenv.nft_counters(ns, "ca_envfilter"))
            assert drops > 0, netenv.nft_counters(ns, "ca_envfilter")
            print(f"     (packets dropped by the test filter: {drops})")
        with c.case("in-guest VLAN: eth0.100 on both guests, they ping each other over it"):
            netenv.wait_marker(watch, r"^done$", timeout=120)
            m1, m2 = netenv.markers(watch.text()), netenv.markers(watch2.text())
            assert f"vlan eth0.100 ip={VLAN_IP1}/24" in m1 and f"vlan peer {VLAN_IP2} OK" in m1, m1
            assert f"vlan eth0.100 ip={VLAN_IP2}/24" in m2 and f"vlan peer {VLAN_IP1} OK" in m2, m2
        with c.case("destroy + undefine: the taps are gone"):
            calib.destroy_domain(uri, name)
            calib.destroy_domain(uri, name2)
            calib.wait_for(lambda: not {TAP, TAP2} & set(netenv.links(ns)), 30, what="the taps to go")
    finally:
        calib.destroy_domain(uri, name)
        calib.destroy_domain(uri, name2)
        netenv.ns_run(ns, "nft", "delete", "table", "bridge", "ca_envfilter", check=False)
        for p in procs:
            p.stop()
        netenv.del_link(ns, BR)
    with c.case("the root network namespace is unchanged"):
        diff = netenv.snapshot_diff(before, netenv.root_snapshot())
        assert not diff, "host network changed:\n" + diff


if __name__ == "__main__":
    calib.run("test_net_env", main)
