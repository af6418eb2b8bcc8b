#!/usr/bin/env python3
"""cloud-init's own code against the REAL agent's metadata service (issue 10).

test_metadata_cloudinit.py runs cloud-init against tests/bench/md_server (the metadata
library with a fixture and a fake lookup). Here the agent itself serves, and its own lookup
(agent/netmap.c: network + source IP -> the port in the store -> netplug_peer(): the bridge's
neighbour MAC and FDB port -> netplug_port_filtered() -> a live instance) decides who asks.

The agent runs in a network namespace of its own (ca-netns-mdag-*) on the libvirt test driver
(HV_FEAT_NIC_VETH: a port is a veth pair, host end in the network's bridge, peer `<dev>p`),
network n1 on an agent-made bridge (10.77.0.1/24 and 169.254.169.254/32 on it, the metadata
service bound to it on :80). Each "guest" is a client namespace of its own holding its port's
veth peer (the port's MAC and IP, a default route via 10.77.0.1), and cloud-init
(Debian's, through cloudinit_probe.py: the resolv.conf trick, every HTTP answer counted)
runs there:
 - helpers.ec2 crawl with IMDSv1 and with a token PUT (IMDSv2); DataSourceEc2.crawl_metadata
   as non-AWS (IMDSv1), and as AWS (IMDSv2) on an instance launched with
   metadata_options.http_tokens=required (where plain GETs get 401, and so cloud-init as
   non-AWS, which never PUTs, gets nothing);
 - openstack MetadataReader.read_v2 and DataSourceOpenStack's own crawl;
 every value compared with GET /v1/instances/<id> and the launch body.
Refusals through the real lookup: A's port with another MAC (dropped by the anti-spoofing
filter: no answer), B's IP and an IP nobody holds from A's port (dropped: no answer), and
from a port of the test's own in the bridge with no filter (a "rogue"): an IP no port holds
(404: no port) and A's IP with another MAC (404: the neighbour MAC is not the port's).
Every case asserts the exact delta of the service's counters on GET /metrics
(compute_agent_metadata_requests_total{code=...}, _lookup_failures_total,
_tokens_issued_total, _lookups_total{result=...}) against what the client saw; /metrics
parses strictly (promtext.py) and passes `promtool check metrics` where installed.
Rate limit: the agent restarted with metadata.rate = 2, burst = 8: one source gets exactly
`burst` 200s and then 503 (Retry-After: 1), a second source is served meanwhile, and the first
is served again once its bucket refills (waited for with a deadline); 503s are counted.
Namespaces are deleted at exit (also on failure); nothing is made in the root namespace."""

import base64
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
import promtext  # noqa: E402
from calib import short  # noqa: E402

BRIDGE = "camdbr1"         # made by the agent (not there before): it gets the gateway and 169.254.169.254
GW = "10.77.0.1"
NOBODY_IP = "10.77.0.99"
ROGUE_MAC = "02:00:5e:77:00:99"
SPOOF_MAC = "02:00:5e:77:00:42"
RATE, BURST = 2, 8
CODES = ("200", "400", "401", "403", "404", "405", "500", "503", "other")
RESULTS = ("ok", "no_port", "peer_mismatch", "unfiltered", "not_live")  # the lookup's, netmap.c

CONF = """
[agent]
host_name = {host}
[network n1]
type = bridge
bridge = {bridge}
cidr = 10.77.0.0/24
gateway = 10.77.0.1
dns = 10.77.0.1
mtu = 1450
[metadata]
{md}
"""

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh1aGVsbG8gd29ybGQgZnJvbSB0ZXN0 a@host"
KEY_C = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj c@host"
UD_A = "#cloud-config\nhostname: vm-a\nruncmd: [echo \u00e9t\u00e9]\n".encode()
UD_C = b"#!/bin/sh\necho required\n"


class ClientNs:
    """A client ("guest") network namespace; deleted at exit."""

    def __init__(self, tag):
        self.name = f"ca-netns-mdag-{os.getpid()}-{tag}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        atexit.register(self.delete)
        self.run("ip", "link", "set", "lo", "up")
        # no IPv6 chatter (router solicitations) through the filter: its counters stay ours
        self.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        self.run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        self.dev = None

    def run(self, *argv, check=True):
        r = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"in {self.name}: {' '.join(argv)}: {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def delete(self):
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)

    def reachable(self):
        """A TCP SYN to the gateway's port 9 is answered (RST): ARP and IP both pass."""
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
        out = self.run(cp.PY, "-c", code, check=False).strip()
        return out in ("refused", "open")


def main(c: calib.Checks):
    calib.require_agent_binary()
    why = netns_agent.have_netns()
    if why:
        calib.skip(why)
    for tool in ("ip", "unshare", "nft", "sysctl"):
        if not shutil.which(tool):
            calib.skip(f"{tool} is not installed")
    if not os.path.isdir(cp.CLOUDINIT_DIR):
        calib.skip("Debian's cloud-init is not installed (python3 cloudinit package)")
    if netns_agent.netplug_is_stub() or netns_agent.metadata_is_stub():
        calib.skip("net-plug or the metadata service is a stub in this build")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # atexit still deletes the namespaces

    d = calib.tmpdir("cac-mdag-")
    files = calib.make_fake_files(d)
    tmp = str(d)
    cp.write_resolv(tmp)
    ns = netns_agent.Netns(prefix="ca-netns-mdag")
    host = calib.unique("cac-mdag-host")

    def write_conf(md):
        p = d / "agent.conf"
        p.write_text(CONF.format(host=host, bridge=BRIDGE, md=md))
        return p

    conf = write_conf("rate = 1000\nburst = 1000\n")
    agent = netns_agent.NsAgent(ns, d / "state", hypervisor="test", extra_args=["--config", str(conf)])
    c.agents.append(agent)
    with c.case("agent starts in its own netns (test driver, network n1, metadata on)", fatal=True):
        agent.start(timeout=30)
    cl = agent.client()

    # ------------------------------------------------------------------ helpers
    def metrics_text():
        conn = calib.UnixHTTPConnection(str(agent.sock), timeout=10)
        try:
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            text = r.read().decode()
            assert r.status == 200, f"GET /metrics -> {r.status}"
            assert r.getheader("Content-Type", "").startswith("text/plain"), r.getheader("Content-Type")
        finally:
            conn.close()
        return text

    def counters():
        m = promtext.parse(metrics_text())
        out = {}
        for code in CODES:
            v = m.get("compute_agent_metadata_requests_total", code=code)
            assert v is not None, f'no compute_agent_metadata_requests_total{{code="{code}"}}'
            out[code] = v
        for k, name in (("lookup_failures", "compute_agent_metadata_lookup_failures_total"),
                        ("tokens", "compute_agent_metadata_tokens_issued_total")):
            out[k] = m.get(name)
            assert out[k] is not None, f"no {name}"
        for res in RESULTS:
            out[res] = m.get("compute_agent_metadata_lookups_total", result=res)
            assert out[res] is not None, f'no compute_agent_metadata_lookups_total{{result="{res}"}}'
        return out

    def expect_delta(before, want, conns=None):
        """The counters moved by exactly want ({"200": n, "tokens": k, "no_port": f, ...}; the
        rest 0). conns: the connections whose lookup succeeded (result="ok"); None: a client
        (cloud-init) whose connection reuse the test does not know: any number, as many as
        the answers at most."""
        after = counters()
        got = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        ok = got.pop("ok", 0)
        want = {k: v for k, v in want.items() if v}
        assert got == want, f"counter deltas {got} != {want}"
        answered = sum(want.get(k, 0) for k in CODES)
        if conns is None:
            assert 1 <= ok <= answered, f"{ok} lookups found the instance for {answered} answers"
        else:
            assert ok == conns, f"{ok} lookups found the instance, not {conns}"
        refused = sum(want.get(k, 0) for k in RESULTS if k != "ok")
        assert want.get("lookup_failures", 0) == refused, f"lookup failures {want} != the refusals by reason"

    def from_tally(tally):
        """Expected deltas from a probe's count of the answers it received."""
        want = {}
        for k, n in tally.items():
            method, status = k.split()
            assert status != "error", f"cloud-init saw transport errors: {tally}"
            code = status if status in CODES else "other"
            want[code] = want.get(code, 0) + n
            if method == "PUT" and status == "200":
                want["tokens"] = want.get("tokens", 0) + n
        return want

    def nft_counter(name):
        out = ns.run("nft", "-j", "list", "counter", "bridge", "compute_agent", name).stdout
        for x in json.loads(out)["nftables"]:
            if "counter" in x:
                return x["counter"]["packets"]
        raise AssertionError(f"no nft counter {name}: {out[:300]}")

    def launch(name, **over):
        b = {"name": name, "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
             "image": {"path": files["image"]}, "interfaces": [{"network": "n1"}]}
        b.update(over)
        r = cl.launch(b)
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "succeeded", short(op)
        return cl.wait_state(r["instance"]["id"], "running", timeout=30)

    def attach(cli, inst):
        """The instance's veth peer into cli, as the guest would configure it."""
        p = inst["interfaces"][0]
        dev = p["device"] + "p"
        ns.run("ip", "link", "set", dev, "netns", cli.name)
        got = json.loads(cli.run("ip", "-j", "link", "show", dev))[0]["address"]
        assert got == p["mac"], f"{dev} has MAC {got}, the port {p['mac']}"
        cli.run("ip", "addr", "add", p["ip"] + "/24", "dev", dev)
        cli.run("ip", "link", "set", dev, "up")
        cli.run("ip", "route", "add", "default", "via", GW)
        cli.dev = dev
        calib.wait_for(cli.reachable, 10, what=f"{cli.name} reaches the gateway")

    def http(cli, code):
        return cp.in_ns(cli.name, code)

    def probe(cli, mode, **kw):
        r = cp.run_probe_full(tmp, mode, cli.name, **kw)
        calib.log(f"     {mode}: {sum(r['http'].values())} answers {r['http']} in {r['seconds']} s")
        return r

    def check_ec2_md(md, inst, keys):
        assert md, "cloud-init crawled nothing (a listed key failed?)"
        p = inst["interfaces"][0]
        want = {"instance-id": inst["ec2_id"], "hostname": inst["hostname"], "local-hostname": inst["hostname"],
                "local-ipv4": p["ip"], "mac": p["mac"],
                "placement": {"availability-zone": inst["availability_zone"]}}
        for k, v in want.items():
            assert md.get(k) == v, f"meta-data {k}: {md.get(k)!r} != {v!r}"
        if keys:
            (name, key), = keys.items()
            assert md["public-keys"] in ({name: [key]}, {name: key}), md["public-keys"]
        else:
            assert "public-keys" not in md, md.get("public-keys")
        nic = md["network"]["interfaces"]["macs"][p["mac"]]
        assert nic["local-ipv4s"] == p["ip"] and nic["mac"] == p["mac"] and nic["device-number"] == "0", nic
        assert nic["subnet-ipv4-cidr-block"] == "10.77.0.0/24" and nic["interface-id"] == p["port_id"], nic

    # ------------------------------------------------------------------ instances and guests
    a = b = cc = None
    cli_a, cli_b, cli_c = ClientNs("a"), ClientNs("b"), ClientNs("c")
    with c.case("launch A (hostname, keys, metadata, zone, user-data), B, C (http_tokens=required)", fatal=True):
        a = launch(calib.unique("mda"), hostname="vm-a", public_keys={"ka": KEY_A},
                   metadata={"role": "web", "tier": "1"}, availability_zone="az-md",
                   user_data=base64.b64encode(UD_A).decode())
        b = launch(calib.unique("mdb"), hostname="vm-b")
        cc = launch(calib.unique("mdc"), hostname="vm-c", public_keys={"kc": KEY_C},
                    user_data=base64.b64encode(UD_C).decode(), metadata_options={"http_tokens": "required"})
        assert (a["hostname"], a["availability_zone"], a["key_names"]) == ("vm-a", "az-md", ["ka"]), short(a)
        assert a["metadata"] == {"role": "web", "tier": "1"} and a["has_user_data"] is True, short(a)
        assert cc["metadata_options"]["http_tokens"] == "required", short(cc)
        nets = cl.get("/v1/networks")[1]["networks"]
        assert [n["bridge"] for n in nets if n["name"] == "n1"] == [BRIDGE], short(nets)

    with c.case("each guest netns holds its port's veth peer (MAC, IP, route) and reaches the gateway", fatal=True):
        for cli, inst in ((cli_a, a), (cli_b, b), (cli_c, cc)):
            attach(cli, inst)
        addrs = ns.run("ip", "-o", "addr", "show", "dev", BRIDGE).stdout
        assert "10.77.0.1/24" in addrs and "169.254.169.254/32" in addrs, addrs
        log = agent.log_path.read_text(errors="replace")
        assert "metadata service listening" in log and f"bridge={BRIDGE}" in log, "no listener logged"

    with c.case("/metrics parses strictly; the metadata families have HELP, TYPE counter, every code label"):
        text = metrics_text()
        m = promtext.parse(text)
        for fam in ("compute_agent_metadata_requests_total", "compute_agent_metadata_lookup_failures_total",
                    "compute_agent_metadata_tokens_issued_total", "compute_agent_metadata_lookups_total"):
            f = m.families.get(fam)
            assert f and f["type"] == "counter" and f["help"], (fam, f and {k: f[k] for k in ("type", "help")})
        codes = sorted(dict(lab)["code"] for lab in m.values("compute_agent_metadata_requests_total"))
        assert codes == sorted(CODES), codes
        results = sorted(dict(lab)["result"] for lab in m.values("compute_agent_metadata_lookups_total"))
        assert results == sorted(RESULTS), results
        assert m.families["compute_agent_metadata_connections"]["type"] == "gauge"
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            assert p.returncode == 0, (p.stdout + p.stderr)[-1500:]

    # ------------------------------------------------------------------ cloud-init crawls
    with c.case("helpers.ec2 (IMDSv1) from A: every key crawled, values = the instance's; counters exact"):
        before = counters()
        r = probe(cli_a, "ec2-helper")
        res = r["result"]
        assert res["user-data"].encode() == UD_A, res["user-data"]
        check_ec2_md(res["meta-data"], a, {"ka": KEY_A})
        idoc = res["identity"]["document"]
        assert idoc["instanceId"] == a["ec2_id"] and idoc["privateIp"] == a["interfaces"][0]["ip"], idoc
        assert idoc["availabilityZone"] == "az-md", idoc
        assert set(r["http"]) == {"GET 200"}, r["http"]
        expect_delta(before, from_tally(r["http"]))

    with c.case("helpers.ec2 after a token PUT (IMDSv2) from A: the same tree; one token issued"):
        before = counters()
        r = probe(cli_a, "ec2-helper-v2")
        res = r["result"]
        assert res["token_len"] == 54, res["token_len"]
        assert res["user-data"].encode() == UD_A
        check_ec2_md(res["meta-data"], a, {"ka": KEY_A})
        assert r["http"].get("PUT 200") == 1 and set(r["http"]) == {"PUT 200", "GET 200"}, r["http"]
        expect_delta(before, from_tally(r["http"]))

    with c.case("DataSourceEc2.crawl_metadata as non-AWS (IMDSv1) from A: version 2021-03-23, tree, user-data"):
        before = counters()
        r = probe(cli_a, "ec2-ds-v1")
        res = r["result"]
        assert res["api_version"] == "2021-03-23" and not res["token"], (res["api_version"], res["token"])
        assert res["user-data"].encode() == UD_A
        check_ec2_md(res["meta-data"], a, {"ka": KEY_A})
        # the version probe asks for dated versions newer than the service lists: 404s are expected
        expect_delta(before, from_tally(r["http"]))

    with c.case("OpenStack MetadataReader.read_v2 from A: meta_data.json, user_data, network_data = the instance"):
        before = counters()
        r = probe(cli_a, "os-helper")
        res = r["result"]
        md, p = res["metadata"], a["interfaces"][0]
        assert res["version"] == 2, res["version"]
        assert (md["uuid"], md["name"], md["hostname"]) == (a["id"], a["name"], "vm-a"), md
        assert md["availability_zone"] == "az-md" and md["public_keys"] == {"ka": KEY_A}, md
        assert md["meta"] == {"role": "web", "tier": "1"}, md["meta"]
        assert md["keys"] == [{"name": "ka", "type": "ssh", "data": KEY_A}], md["keys"]
        assert res["userdata"].encode() == UD_A, res["userdata"]
        nd = res["networkdata"]
        assert nd["links"][0]["ethernet_mac_address"] == p["mac"] and nd["links"][0]["mtu"] == 1450, nd
        net = nd["networks"][0]
        assert net["ip_address"] == p["ip"] and net["netmask"] == "255.255.255.0", net
        assert net["routes"] == [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": GW}], net
        assert nd["services"] == [{"type": "dns", "address": GW}], nd
        check_ec2_md(res["ec2-metadata"], a, {"ka": KEY_A})
        expect_delta(before, from_tally(r["http"]))

    with c.case("DataSourceOpenStack wait_for_metadata_service + _crawl_metadata from A"):
        before = counters()
        r = probe(cli_a, "os-ds")
        res = r["result"]
        assert res["found"] and res["metadata_address"] == cp.MD, res
        assert res["uuid"] == a["id"] and res["userdata"].encode() == UD_A, res
        assert res["ec2-instance-id"] == a["ec2_id"] and res["links"] == [a["interfaces"][0]["mac"]], res
        expect_delta(before, from_tally(r["http"]))

    with c.case("B is B: its own instance-id and meta_data.json uuid from its own guest"):
        before = counters()
        ip_b = b["interfaces"][0]["ip"]
        r = http(cli_b, f'''
print(json.dumps([req("{ip_b}", "GET", "/latest/meta-data/instance-id"),
                  req("{ip_b}", "GET", "/openstack/latest/meta_data.json"),
                  req("{ip_b}", "GET", "/latest/user-data")]))''')
        assert r[0][:2] == [200, b["ec2_id"]], r[0]
        assert r[1][0] == 200 and json.loads(r[1][1])["uuid"] == b["id"], r[1][:2]
        assert r[2][0] == 404, r[2][:2]  # no user-data
        expect_delta(before, {"200": 2, "404": 1}, conns=3)

    with c.case("C (http_tokens=required): plain GETs and a bad token 401; DataSourceEc2 as AWS crawls all"):
        before = counters()
        ip_c = cc["interfaces"][0]["ip"]
        r = http(cli_c, f'''
print(json.dumps([req("{ip_c}", "GET", "/latest/meta-data/instance-id"),
                  req("{ip_c}", "GET", "/openstack/latest/meta_data.json"),
                  req("{ip_c}", "GET", "/latest/meta-data/instance-id", {{"X-aws-ec2-metadata-token": "AAAA"}})]))''')
        assert [x[0] for x in r] == [401, 401, 401], r
        expect_delta(before, {"401": 3}, conns=3)
        before = counters()
        r = probe(cli_c, "ec2-ds-v2")
        res = r["result"]
        assert res["cloud_name"] == "aws" and res["token"], (res["cloud_name"], res["token"])
        check_ec2_md(res["meta-data"], cc, {"kc": KEY_C})
        assert res["user-data"].encode() == UD_C
        assert res["dynamic"]["instance-identity"]["document"]["instanceId"] == cc["ec2_id"], res["dynamic"]
        assert r["http"].get("PUT 200", 0) >= 1 and "GET 401" not in r["http"], r["http"]
        expect_delta(before, from_tally(r["http"]))

    with c.case("C (http_tokens=required): DataSourceEc2 as non-AWS (no PUT) gets nothing, every answer 401"):
        before = counters()
        r = probe(cli_c, "ec2-ds-v1", clean=False, max_wait=2)
        assert not r["result"]["meta-data"] and not r["result"]["user-data"], short(r["result"])
        assert set(r["http"]) == {"GET 401"}, r["http"]
        expect_delta(before, from_tally(r["http"]))

    # ------------------------------------------------------------------ refusals
    ip_a, mac_a, ip_b = a["interfaces"][0]["ip"], a["interfaces"][0]["mac"], b["interfaces"][0]["ip"]
    quiet = '''
print(json.dumps([req(SRC, "GET", "/latest/meta-data/instance-id", timeout=2)]))'''

    with c.case("A's port with another MAC: dropped by the filter (mac_drop), no answer, nothing counted"):
        before, drops = counters(), nft_counter("mac_drop")
        dev = cli_a.dev
        cli_a.run("ip", "link", "set", dev, "down")
        cli_a.run("ip", "link", "set", dev, "address", SPOOF_MAC)
        cli_a.run("ip", "link", "set", dev, "up")
        cli_a.run("ip", "route", "replace", "default", "via", GW)  # gone with the link
        try:
            r = http(cli_a, quiet.replace("SRC", json.dumps(ip_a)))
        finally:
            cli_a.run("ip", "link", "set", dev, "down")
            cli_a.run("ip", "link", "set", dev, "address", mac_a)
            cli_a.run("ip", "link", "set", dev, "up")
            cli_a.run("ip", "route", "replace", "default", "via", GW)
        # no answer: the socket's timeout, or the ARP for the gateway failing first
        assert r[0][0] in ("timeout", "error"), r
        assert nft_counter("mac_drop") > drops, "mac_drop did not count"
        expect_delta(before, {}, conns=0)
        calib.wait_for(cli_a.reachable, 10, what="A reaches the gateway again")

    with c.case("B's IP and an IP nobody holds, from A's port: dropped (ip_drop), no answer, nothing counted"):
        before, drops = counters(), nft_counter("ip_drop")
        dev = cli_a.dev
        for ip in (ip_b, NOBODY_IP):
            cli_a.run("ip", "addr", "add", ip + "/32", "dev", dev)
        try:
            r = http(cli_a, f'''
print(json.dumps([req("{ip_b}", "GET", "/latest/meta-data/instance-id", timeout=2),
                  req("{NOBODY_IP}", "GET", "/latest/meta-data/instance-id", timeout=2)]))''')
        finally:
            for ip in (ip_b, NOBODY_IP):
                cli_a.run("ip", "addr", "del", ip + "/32", "dev", dev)
        assert [x[0] in ("timeout", "error") for x in r] == [True, True], r
        assert nft_counter("ip_drop") > drops, "ip_drop did not count"
        expect_delta(before, {}, conns=0)

    rogue = ClientNs("r")
    with c.case("a rogue port without filter (the test's own veth in the bridge) at an IP no port holds: 404"):
        ns.run("ip", "link", "add", "camdrogue", "type", "veth", "peer", "name", "camdroguep",
               "netns", rogue.name)
        ns.run("ip", "link", "set", "camdrogue", "master", BRIDGE, "up")
        rogue.run("ip", "link", "set", "camdroguep", "address", ROGUE_MAC)
        rogue.run("ip", "addr", "add", NOBODY_IP + "/24", "dev", "camdroguep")
        rogue.run("ip", "link", "set", "camdroguep", "up")
        rogue.run("ip", "route", "add", "default", "via", GW)
        calib.wait_for(rogue.reachable, 10, what="the rogue reaches the gateway")
        before = counters()
        r = http(rogue, f'''
print(json.dumps([req("{NOBODY_IP}", "GET", "/latest/meta-data/instance-id"),
                  req("{NOBODY_IP}", "GET", "/openstack/latest/meta_data.json"),
                  req("{NOBODY_IP}", "PUT", "/latest/api/token", {{"X-aws-ec2-metadata-token-ttl-seconds": "60"}})]))''')
        assert [x[0] for x in r] == [404, 404, 404], r
        for inst in (a, b, cc):
            assert inst["id"] not in json.dumps(r) and inst["ec2_id"] not in json.dumps(r), r
        expect_delta(before, {"404": 3, "lookup_failures": 3, "no_port": 3}, conns=0)

    with c.case("the rogue at A's IP (another MAC, A idle): the neighbour MAC is not A's port's: 404"):
        rogue.run("ip", "addr", "flush", "dev", "camdroguep")
        rogue.run("ip", "addr", "add", ip_a + "/24", "dev", "camdroguep")
        rogue.run("ip", "route", "replace", "default", "via", GW)
        calib.wait_for(rogue.reachable, 10, what="the rogue reaches the gateway")
        before = counters()
        r = http(rogue, f'''
print(json.dumps([req("{ip_a}", "GET", "/latest/meta-data/instance-id"),
                  req("{ip_a}", "GET", "/latest/user-data")]))''')
        assert [x[0] for x in r] == [404, 404], r
        assert a["ec2_id"] not in json.dumps(r) and "cloud-config" not in json.dumps(r), r
        expect_delta(before, {"404": 2, "lookup_failures": 2, "peer_mismatch": 2}, conns=0)
        log = agent.log_path.read_text(errors="replace")
        assert "source does not match its port" in log and f"mac={ROGUE_MAC}" in log, "refusal not logged"

    with c.case("rogue gone: A is served again (its neighbour entry relearnt)"):
        ns.run("ip", "link", "del", "camdrogue")
        rogue.delete()
        ns.run("ip", "neigh", "flush", "dev", BRIDGE)
        calib.wait_for(cli_a.reachable, 10, what="A reaches the gateway")
        before = counters()
        r = http(cli_a, f'''
print(json.dumps([req("{ip_a}", "GET", "/latest/meta-data/instance-id")]))''')
        assert r[0][:2] == [200, a["ec2_id"]], r
        expect_delta(before, {"200": 1}, conns=1)

    # ------------------------------------------------------------------ rate limit
    with c.case(f"terminate A, B, C; restart with metadata.rate = {RATE}, burst = {BURST}", fatal=True):
        for inst in (a, b, cc):
            op = cl.wait_operation(cl.terminate(inst["id"])["operation"]["id"], timeout=30)
            assert op["state"] == "succeeded", short(op)
        for cli in (cli_a, cli_b, cli_c):
            assert cli.dev not in cli.run("ip", "-o", "link"), f"{cli.dev} left in {cli.name}"
        rc = agent.stop()
        assert rc == 0, f"agent exit {rc}"
        write_conf(f"rate = {RATE}\nburst = {BURST}\n")
        agent.start(timeout=30)
        r1 = launch(calib.unique("mdr1"))
        r2 = launch(calib.unique("mdr2"))
        attach(cli_a, r1)
        attach(cli_b, r2)

    ip1, ip2 = r1["interfaces"][0]["ip"], r2["interfaces"][0]["ip"]
    # One process in the first guest's netns; the second source's connection is made in the
    # second guest's netns (setns around its connect), so that the burst, the second source
    # and the empty bucket are seen within milliseconds, not process start-ups apart.
    rate_code = f'''
import ctypes, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
def conn_in(netns, src):
    c = http.client.HTTPConnection("169.254.169.254", 80, timeout=5, source_address=(src, 0))
    if netns:
        own, other = open("/proc/self/ns/net"), open(netns)
        assert libc.setns(other.fileno(), 0x40000000) == 0, ctypes.get_errno()
        try:
            c.connect()
        finally:
            assert libc.setns(own.fileno(), 0x40000000) == 0, ctypes.get_errno()
            own.close(); other.close()
    return c
def get(c):
    c.request("GET", "/latest/meta-data/instance-id")
    x = c.getresponse()
    return x.status, x.read().decode(), x.getheader("Retry-After")
c1 = conn_in(None, "{ip1}")
c2 = conn_in("/run/netns/{cli_b.name}", "{ip2}")
out = {{"burst": []}}
t0 = time.monotonic()
while len(out["burst"]) < {BURST} + 20:
    st, body, retry = get(c1)
    out["burst"].append(st)
    if st == 503:
        out["retry_after"] = retry
        break
out["burst_s"] = time.monotonic() - t0
out["second"] = [get(c2)[:2] for _ in range(3)]
out["first_again"] = get(c1)[0]
out["window_s"] = time.monotonic() - t0
t1, deadline, waits = time.monotonic(), time.monotonic() + 10, []
while time.monotonic() < deadline:
    st, body, retry = get(c1)
    waits.append(st)
    if st == 200:
        out["served_again"] = body
        break
    time.sleep(0.05)  # the poll interval of a wait with a deadline
out["waits"], out["refill_s"] = waits, time.monotonic() - t1
print(json.dumps(out))'''
    rr = {}
    with c.case(f"one source: exactly {BURST} answers 200, then 503 with Retry-After: 1; a second source served"):
        before = counters()
        rr = http(cli_a, rate_code)
        burst = rr["burst"]
        n200 = burst.index(503) if 503 in burst else len(burst)
        calib.log(f"     {n200} x 200 in {rr['burst_s'] * 1000:.1f} ms, then 503 (burst {BURST}, rate {RATE}/s); "
                  f"second source {[x[0] for x in rr['second']]}, first again {rr['first_again']}, "
                  f"all within {rr['window_s'] * 1000:.1f} ms")
        # the bucket refills RATE tokens a second: within 1/RATE s of its first request exactly
        # BURST pass, and the first source is still refused after the second one's requests
        assert rr["window_s"] < 1.0 / RATE, f"took {rr['window_s']:.3f} s: too slow to count exactly"
        assert burst == [200] * BURST + [503], burst
        assert rr["retry_after"] == "1", rr.get("retry_after")
        assert rr["second"] == [[200, r2["ec2_id"]]] * 3, rr["second"]
        assert rr["first_again"] == 503, rr["first_again"]

    with c.case("the first source is served again once its bucket refills (waited for, with a deadline)"):
        waits = rr["waits"]
        calib.log(f"     served again after {rr['refill_s'] * 1000:.0f} ms of waiting ({len(waits) - 1} x 503)")
        assert waits and waits[-1] == 200 and rr["served_again"] == r1["ec2_id"], rr
        assert set(waits[:-1]) <= {503}, waits
        # not sooner than one token takes to come back (uv_now() has millisecond steps)
        assert rr["window_s"] + rr["refill_s"] >= 1.0 / RATE - 0.01, rr

    with c.case("the rate-limited answers are counted exactly on /metrics (503 and 200)"):
        n503 = 2 + len(rr["waits"]) - 1
        # two connections, each looked up on its first answered request
        expect_delta(before, {"200": BURST + 3 + 1, "503": n503}, conns=2)

    with c.case("/metrics still parses and passes promtool after all that"):
        text = metrics_text()
        promtext.parse(text)
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            assert p.returncode == 0, (p.stdout + p.stderr)[-1500:]

    with c.case("the agent stops cleanly"):
        rc = agent.stop()
        assert rc == 0, f"exit {rc}"


if __name__ == "__main__":
    calib.run("test_metadata_cloudinit_agent", main)
