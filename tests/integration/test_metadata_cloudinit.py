#!/usr/bin/env python3
"""The metadata service (agent/metadata) with cloud-init's OWN code as the client.

The service runs in md_server (tests/bench/md_server.c: md_service on a loop, instances from a
fixture, a lookup that accepts a peer only at a fixture interface's IP on its network) inside
netns cab-srv: bridge cabbr0 with 10.77.0.1/24 and 169.254.169.254/32, the service bound to
cabbr0 on 169.254.169.254:80. A veth puts the "guest" into netns cab-cli: MAC 52:54:00:77:00:10,
10.77.0.10 (instance A), 10.77.0.11 (instance B), 10.77.0.99 (nobody), default route via
10.77.0.1. cloud-init (Debian's, /usr/lib/python3/dist-packages/cloudinit) runs in cab-cli (cloudinit_probe.py), in
a private mount namespace whose /etc/resolv.conf names 127.0.0.1 (without a resolver each
datasource first loses 30 s in is_resolvable_url()).

1. cloudinit.sources.helpers.ec2 get_instance_userdata/metadata/identity: every key crawled
   (a listed key that fails makes cloud-init return {}), values equal to the fixture.
2. DataSourceEc2.crawl_metadata() as on a non-AWS platform (IMDSv1, the version probe picks
   2021-03-23), and with cloud name "aws" (IMDSv2: token PUT first, then every GET with it)
   against instance A switched to http_tokens=required.
3. cloudinit.sources.helpers.openstack.MetadataReader.read_v2(): meta_data.json (uuid, name,
   hostname, keys, meta...), user_data, vendor data, network_data.json, and the EC2 tree;
   DataSourceOpenStack's own wait_for_metadata_service() and _crawl_metadata().
4. ConfigDriveReader.read_v2() over a config-2 ISO made by md_drive_build() (extracted with
   xorriso -osirrox: the host kernel has no ISO 9660), and the NoCloud variant read by
   cloud-init's util.read_seeded().
5. Refusals: a client at another IP gets 404 (and the lookup failure is counted); a PUT with
   X-Forwarded-For is 403; a token PUT with a bad TTL is 400, on a dated path 403; instance A's
   token does not work for instance B (401); without a token where required: 401; the token's
   answer leaves with IP TTL = hop limit (1) and later answers on the same connection with the
   default again (nft counters in cab-cli); a "container" netns one hop behind the guest
   (cab-ctr, masqueraded by cab-cli) gets no token with hop limit 1 and gets one with 2.
6. Every path of the metadata-service tag in api-spec/openapi.yaml (EC2 and OpenStack
   listings, documents, user data, vendor data, the token path's GET) answers a status and
   content type documented there, JSON bodies matching their schema.
Everything lives in the two namespaces, which are deleted at the end (also on failure).
"""

import json
import os
import shutil
import signal
import subprocess
import sys

sys.dont_write_bytecode = True
MD = "http://169.254.169.254"
SRV, CLI, CTR = "cab-srv", "cab-cli", "cab-ctr"
MAC = "52:54:00:77:00:10"
IP_A, IP_B, IP_X = "10.77.0.10", "10.77.0.11", "10.77.0.99"
PY = "/usr/bin/python3"

INST_A = {
    "uuid": "6a6a6a6a-0000-4000-8000-0000000000a1", "ec2_id": "i-00000000000000a01", "name": "cab-vm-a",
    "hostname": "cabvma", "availability_zone": "nova-b", "instance_type": "m1.small",
    "image_id": "ami-0000000a", "project_id": "proj-b", "launch_index": 0,
    "keys": {"bkey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh1aGVsbG8gd29ybGQgZnJvbSB0ZXN0 b@host"},
    "meta": {"role": "web", "tier": "1"},
    "user_data": "#cloud-config\nhostname: cabvma\nruncmd: [echo hi]\n",
    "http_tokens": "optional", "hop_limit": 1,
    "interfaces": [{"mac": MAC, "ip": IP_A, "prefix": 24, "gateway": "10.77.0.1", "dns": ["10.77.0.1"],
                    "mtu": 1450, "network": "n1", "port_id": "0c0c0c0c-0000-4000-8000-0000000000a1"}],
}
INST_B = {
    "uuid": "6a6a6a6a-0000-4000-8000-0000000000b2", "ec2_id": "i-00000000000000b02", "name": "cab-vm-b",
    "hostname": "cabvmb", "availability_zone": "nova-b", "instance_type": "m1.tiny",
    "launch_index": 1, "keys": {}, "meta": {},
    "http_tokens": "optional", "hop_limit": 1,
    "interfaces": [{"mac": MAC, "ip": IP_B, "prefix": 24, "gateway": "10.77.0.1", "network": "n1"}],
}


# --------------------------------------------------------------------------- the test (root ns)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
import cloudinit_probe  # noqa: E402
from cloudinit_probe import HTTP_CLIENT  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD") or os.path.join(ROOT, "build")
SERVER = os.path.join(BUILD, "tests", "md_server")


def sh(*argv, check=True, ns=None, **kw):
    if ns:
        argv = ("ip", "netns", "exec", ns) + argv
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return r


def netns_down():
    for ns in (CTR, CLI, SRV):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def netns_up():
    netns_down()
    for ns in (SRV, CLI):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
    sh("ip", "link", "add", "cabbr0", "type", "bridge", ns=SRV)
    sh("ip", "addr", "add", "10.77.0.1/24", "dev", "cabbr0", ns=SRV)
    sh("ip", "addr", "add", "169.254.169.254/32", "dev", "cabbr0", ns=SRV)
    sh("ip", "link", "set", "cabbr0", "up", ns=SRV)
    sh("ip", "link", "add", "cabv0", "type", "veth", "peer", "name", "cabv0p", "netns", CLI, ns=SRV)
    sh("ip", "link", "set", "cabv0", "master", "cabbr0", "up", ns=SRV)
    sh("ip", "link", "set", "cabv0p", "address", MAC, ns=CLI)
    for ip in (IP_A, IP_B, IP_X):
        sh("ip", "addr", "add", ip + "/24", "dev", "cabv0p", ns=CLI)
    sh("ip", "link", "set", "cabv0p", "up", ns=CLI)
    sh("ip", "route", "add", "default", "via", "10.77.0.1", "src", IP_A, ns=CLI)
    # a "container" one hop behind the guest, masqueraded to the guest's address (what Docker does)
    sh("ip", "netns", "add", CTR)
    sh("ip", "link", "set", "lo", "up", ns=CTR)
    sh("ip", "link", "add", "cabv2", "type", "veth", "peer", "name", "cabv2p", "netns", CTR, ns=CLI)
    sh("ip", "addr", "add", "10.79.0.1/24", "dev", "cabv2", ns=CLI)
    sh("ip", "link", "set", "cabv2", "up", ns=CLI)
    sh("ip", "addr", "add", "10.79.0.2/24", "dev", "cabv2p", ns=CTR)
    sh("ip", "link", "set", "cabv2p", "up", ns=CTR)
    sh("ip", "route", "add", "default", "via", "10.79.0.1", ns=CTR)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=CLI)
    sh("nft", "-f", "-", ns=CLI, input="""
table ip cabnat {
  chain post { type nat hook postrouting priority 100; ip saddr 10.79.0.0/24 oifname "cabv0p" masquerade; }
}""")


class Server:
    def __init__(self, tmp):
        self.tmp = tmp
        self.proc = None

    def start(self, instances):
        rc = self.stop()
        assert rc in (None, 0), f"md_server exited {rc}: {self.log_tail()}"
        fx = os.path.join(self.tmp, "fixture.json")
        ready = os.path.join(self.tmp, "ready")
        with open(fx, "w") as f:
            json.dump({"instances": instances}, f)
        if os.path.exists(ready):
            os.unlink(ready)
        self.log = open(os.path.join(self.tmp, "md_server.log"), "a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", SRV, SERVER, "--fixture", fx, "--listen", "169.254.169.254", "--port", "80",
             "--network", "n1", "--bind-dev", "cabbr0", "--rate", "1000", "--burst", "1000",
             "--metrics", os.path.join(self.tmp, "metrics.txt"), "--ready", ready],
            stdout=self.log, stderr=self.log)
        calib.wait_for(lambda: os.path.exists(ready) or self.proc.poll() is not None, 10, what="md_server ready")
        assert self.proc.poll() is None, f"md_server exited {self.proc.returncode}"

    def metrics(self):
        path = os.path.join(self.tmp, "metrics.txt")
        if os.path.exists(path):
            os.unlink(path)
        self.proc.send_signal(signal.SIGUSR1)
        calib.wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 5, what="metrics file")
        out = {}
        for line in open(path).read().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def stop(self):
        """Stops md_server; its exit status (0: every handle closed, no sanitizer report)."""
        rc = None
        if self.proc:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            rc = self.proc.returncode
            self.log.close()
        self.proc = None
        return rc

    def log_tail(self):
        with open(os.path.join(self.tmp, "md_server.log")) as f:
            return f.read()[-3000:]


def run_probe(tmp, mode, arg=None, ns=CLI):
    return cloudinit_probe.run_probe(tmp, mode, ns, arg)


def in_cli(code):
    """Runs python code in cab-cli (HTTP_CLIENT's req() defined); its stdout (JSON) parsed."""
    return cloudinit_probe.in_ns(CLI, code)


def expected_md(inst):
    f = inst["interfaces"][0]
    return {
        "instance-id": inst["ec2_id"], "ami-id": inst.get("image_id", "ami-00000000"),
        "ami-launch-index": str(inst["launch_index"]), "instance-type": inst["instance_type"],
        "hostname": inst["hostname"], "local-hostname": inst["hostname"], "local-ipv4": f["ip"], "mac": f["mac"],
        "placement": {"availability-zone": inst["availability_zone"]},
        "block-device-mapping": {"ami": "/dev/vda", "root": "/dev/vda"},
        "services": {"domain": "localdomain", "partition": "aws"},
    }


def check_ec2_md(md, inst):
    assert md, "cloud-init crawled nothing (a listed key failed?)"
    for k, v in expected_md(inst).items():
        assert md.get(k) == v, f"meta-data {k}: {md.get(k)!r} != {v!r}"
    (name, key), = inst["keys"].items()
    assert md["public-keys"] == {name: [key]} or md["public-keys"] == {name: key}, md["public-keys"]
    nic = md["network"]["interfaces"]["macs"][MAC]
    f = inst["interfaces"][0]
    assert nic["local-ipv4s"] == f["ip"] and nic["mac"] == MAC and nic["device-number"] == "0", nic
    assert nic["subnet-ipv4-cidr-block"] == "10.77.0.0/24" and nic["interface-id"] == f["port_id"], nic


def body(checks):
    if os.geteuid() != 0:
        calib.skip("needs root (network namespaces)")
    for tool in ("ip", "unshare", "xorriso", "nft"):
        if not shutil.which(tool):
            calib.skip(f"{tool} is not installed")
    if not os.path.isdir("/usr/lib/python3/dist-packages/cloudinit"):
        calib.skip("Debian's cloud-init is not installed")
    if not os.access(SERVER, os.X_OK):
        calib.skip(f"{SERVER} is not built (make tests)")
    # a timeout's SIGTERM still runs the finally below (namespaces deleted, md_server stopped)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = str(calib.tmpdir("cab-md-"))
    cloudinit_probe.write_resolv(tmp)
    srv = Server(tmp)
    try:
        with checks.case("netns cab-srv (bridge, 169.254.169.254) + cab-cli (guest veth)", fatal=True):
            netns_up()
        with checks.case("md_server listens on 169.254.169.254:80 bound to cabbr0", fatal=True):
            srv.start([INST_A, INST_B])
        cases(checks, tmp, srv)
    finally:
        srv.stop()
        netns_down()


def cases(checks, tmp, srv):
    with checks.case("ec2 helpers: get_instance_userdata/metadata/identity crawl every key, values match"):
        r = run_probe(tmp, "ec2-helper")
        assert r["user-data"] == INST_A["user_data"], r["user-data"]
        check_ec2_md(r["meta-data"], INST_A)
        idoc = r["identity"]["document"]
        assert idoc["instanceId"] == INST_A["ec2_id"] and idoc["privateIp"] == IP_A, idoc
        assert idoc["availabilityZone"] == "nova-b" and idoc["imageId"] == "ami-0000000a", idoc
        calib.log(f"     ec2 helper crawl: {len(r['meta-data'])} top-level keys")

    with checks.case("DataSourceEc2 non-AWS (IMDSv1): version 2021-03-23, whole tree, user-data"):
        r = run_probe(tmp, "ec2-ds-v1")
        assert r["api_version"] == "2021-03-23", r["api_version"]
        assert not r["token"], "IMDSv1 path fetched a token"
        assert r["user-data"] == INST_A["user_data"]
        check_ec2_md(r["meta-data"], INST_A)

    with checks.case("OpenStack MetadataReader.read_v2(): meta_data, user_data, vendor data, network_data"):
        r = run_probe(tmp, "os-helper")
        md = r["metadata"]
        assert r["version"] == 2, r["version"]  # read_v2() format
        assert md["uuid"] == INST_A["uuid"] and md["name"] == INST_A["name"], md
        assert md["hostname"] == INST_A["hostname"] and md["availability_zone"] == "nova-b", md
        assert md["public_keys"] == INST_A["keys"] and md["meta"] == INST_A["meta"], md
        assert md["keys"] == [{"name": "bkey", "type": "ssh", "data": INST_A["keys"]["bkey"]}], md["keys"]
        assert md["project_id"] == "proj-b" and md["launch_index"] == 0 and md["devices"] == [], md
        assert r["seed_len"] == 512, r["seed_len"]
        assert r["userdata"] == INST_A["user_data"], r["userdata"]
        nd = r["networkdata"]
        assert nd["links"][0]["ethernet_mac_address"] == MAC and nd["links"][0]["mtu"] == 1450, nd
        net = nd["networks"][0]
        assert net["ip_address"] == IP_A and net["netmask"] == "255.255.255.0" and net["type"] == "ipv4", net
        assert net["routes"] == [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.77.0.1"}], net
        assert nd["services"] == [{"type": "dns", "address": "10.77.0.1"}], nd
        check_ec2_md(r["ec2-metadata"], INST_A)

    with checks.case("DataSourceOpenStack: wait_for_metadata_service() + _crawl_metadata()"):
        r = run_probe(tmp, "os-ds")
        assert r["found"] and r["metadata_address"] == MD, r
        assert r["uuid"] == INST_A["uuid"] and r["userdata"] == INST_A["user_data"], r
        assert r["ec2-instance-id"] == INST_A["ec2_id"] and r["links"] == [MAC], r

    with checks.case("config drive (config-2) by md_drive_build: ConfigDriveReader reads it all"):
        iso = os.path.join(tmp, "config2.iso")
        sh(SERVER, "--fixture", os.path.join(tmp, "fixture.json"), "--drive", iso)
        lab = sh("xorriso", "-indev", iso, "-pvd_info").stdout + sh("xorriso", "-indev", iso, "-pvd_info").stderr
        assert "Volume Id    : config-2" in lab, lab[-600:]
        assert not [n for n in os.listdir(tmp) if n.startswith("config2.iso.")], os.listdir(tmp)
        d = os.path.join(tmp, "cd")
        sh("xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", d)
        r = run_probe(tmp, "cd-reader", d, ns=None)
        assert r["metadata"]["uuid"] == INST_A["uuid"] and r["userdata"] == INST_A["user_data"], r
        assert r["networkdata"]["networks"][0]["ip_address"] == IP_A, r["networkdata"]
        assert r["ec2-metadata"]["instance-id"] == INST_A["ec2_id"], r["ec2-metadata"]
        assert os.path.exists(os.path.join(d, "openstack", "2012-08-10", "meta_data.json"))
        assert os.path.exists(os.path.join(d, "ec2", "latest", "user-data"))

    with checks.case("config drive (NoCloud cidata): meta-data, user-data, network-config v2"):
        iso = os.path.join(tmp, "cidata.iso")
        sh(SERVER, "--fixture", os.path.join(tmp, "fixture.json"), "--drive", iso, "--drive-kind", "nocloud")
        d = os.path.join(tmp, "nc")
        sh("xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", d)
        lab = sh("xorriso", "-indev", iso, "-pvd_info")
        assert "Volume Id    : cidata" in lab.stdout + lab.stderr
        r = run_probe(tmp, "nocloud", d, ns=None)
        assert r["meta-data"]["instance-id"] == INST_A["uuid"], r
        assert r["meta-data"]["local-hostname"] == "cabvma" and r["user-data"] == INST_A["user_data"], r
        eth = r["network"]["ethernets"]["nic0"]
        assert r["network"]["version"] == 2 and eth["match"]["macaddress"] == MAC, r["network"]
        assert eth["addresses"] == [IP_A + "/24"] and eth["routes"][0]["via"] == "10.77.0.1", eth

    with checks.case("raw answers match api-spec/openapi.yaml (identity, meta_data.json, network_data.json)"):
        r = in_cli(f'''
print(json.dumps([req("{IP_A}", "GET", "/latest/dynamic/instance-identity/document"),
                  req("{IP_A}", "GET", "/openstack/2018-08-27/meta_data.json"),
                  req("{IP_A}", "GET", "/openstack/latest/network_data.json")]))''')
        assert [x[0] for x in r] == [200, 200, 200], r
        assert r[1][2]["Content-Type"] == "application/json", r[1][2]
        for (status, text, hdrs), schema in zip(r, ("MetadataIdentityDocument", "OpenStackMetaData",
                                                    "OpenStackNetworkData")):
            calib.validate(json.loads(text), schema)

    with checks.case("every metadata path answers a status, content type and body openapi.yaml documents"):
        paths = ["/", "/latest/", "/latest/meta-data/", "/latest/meta-data/instance-id",
                 "/latest/meta-data/hostname", "/latest/user-data",
                 "/latest/dynamic/instance-identity/document", "/latest/api/token", "/openstack",
                 "/openstack/latest/", "/openstack/2012-08-10/", "/openstack/latest/meta_data.json",
                 "/openstack/latest/network_data.json", "/openstack/latest/vendor_data.json",
                 "/openstack/latest/vendor_data2.json", "/openstack/latest/user_data",
                 "/openstack/2012-08-10/network_data.json", "/openstack/1999-01-01/meta_data.json",
                 "/latest/meta-data/no-such-key"]
        calls = [("GET", IP_A, p) for p in paths] + [("GET", IP_X, "/latest/meta-data/"),
                                                     ("GET", IP_A, "/openstack/latest/vendor_data.json")]
        r = in_cli(HTTP_CLIENT + f'''
calls = {json.dumps(calls)}
out = [req(src, m, p) for m, src, p in calls]
out.append(req("{IP_A}", "PUT", "/latest/api/token", {{"X-aws-ec2-metadata-token-ttl-seconds": "60"}}))
out.append(req("{IP_A}", "GET", "/openstack/latest/meta_data.json", {{"X-aws-ec2-metadata-token": "bad"}}))
print(json.dumps(out))''')
        calls += [("PUT", IP_A, "/latest/api/token"), ("GET", IP_A, "/openstack/latest/meta_data.json")]
        sp = calib.spec()
        statuses = {}
        for (method, _src, path), (status, text, hdrs) in zip(calls, r):
            tmpl = sp.template(path)
            assert tmpl and method.lower() in sp.doc["paths"][tmpl], f"{method} {path}: not in openapi.yaml"
            resp = sp.doc["paths"][tmpl][method.lower()]["responses"].get(str(status))
            assert resp is not None, f"{method} {path} -> {status}: status not documented for {tmpl}"
            ctype = hdrs.get("Content-Type", "").split(";")[0]
            assert ctype in resp.get("content", {}), f"{method} {path} -> {status} {ctype}: not documented"
            schema = resp["content"][ctype]["schema"]
            if ctype == "application/json" or "$ref" in schema:
                errs = sp.errors(json.loads(text), schema)
                assert not errs, f"{method} {path} -> {status}: {errs[:3]}"
            statuses[path] = statuses.get(path, []) + [status]
        assert statuses["/latest/api/token"] == [405, 200], statuses  # GET 405, then the PUT
        assert statuses["/openstack/latest/meta_data.json"] == [200, 401], statuses  # a bad token
        assert 404 in statuses["/latest/meta-data/"] and statuses["/openstack/1999-01-01/meta_data.json"] == [404]
        assert statuses["/openstack/2012-08-10/network_data.json"] == [404], statuses

    with checks.case("a client at another IP (no instance) gets 404; the lookup failure is counted"):
        before = srv.metrics().get("compute_agent_metadata_lookup_failures_total", 0)
        r = in_cli(f'''
print(json.dumps([req("{IP_X}", "GET", "/latest/meta-data/instance-id"),
                  req("{IP_X}", "GET", "/openstack/latest/meta_data.json"),
                  req("{IP_X}", "PUT", "/latest/api/token", {{"X-aws-ec2-metadata-token-ttl-seconds": "60"}})]))''')
        assert [x[0] for x in r] == [404, 404, 404], r
        assert INST_A["uuid"] not in json.dumps(r) and INST_A["ec2_id"] not in json.dumps(r)
        after = srv.metrics()["compute_agent_metadata_lookup_failures_total"]
        assert after == before + 3, (before, after)

    with checks.case("token PUT: XFF 403, bad TTL 400, dated path 403; A's token is refused for B (401)"):
        r = in_cli(f'''
ttl = {{"X-aws-ec2-metadata-token-ttl-seconds": "60"}}
out = {{}}
out["xff"] = req("{IP_A}", "PUT", "/latest/api/token", dict(ttl, **{{"X-Forwarded-For": "{IP_B}"}}))
out["ttl0"] = req("{IP_A}", "PUT", "/latest/api/token", {{"X-aws-ec2-metadata-token-ttl-seconds": "0"}})
out["ttl_big"] = req("{IP_A}", "PUT", "/latest/api/token", {{"X-aws-ec2-metadata-token-ttl-seconds": "21601"}})
out["no_ttl"] = req("{IP_A}", "PUT", "/latest/api/token")
out["dated"] = req("{IP_A}", "PUT", "/2021-03-23/api/token", ttl)
a = req("{IP_A}", "PUT", "/latest/api/token", ttl)
out["a"] = a
out["a_use"] = req("{IP_A}", "GET", "/latest/meta-data/instance-id", {{"X-aws-ec2-metadata-token": a[1]}})
out["b_use"] = req("{IP_B}", "GET", "/latest/meta-data/instance-id", {{"X-aws-ec2-metadata-token": a[1]}})
out["b_v1"] = req("{IP_B}", "GET", "/latest/meta-data/instance-id")
print(json.dumps(out))''')
        assert r["xff"][0] == 403 and r["dated"][0] == 403, r
        assert r["ttl0"][0] == 400 and r["ttl_big"][0] == 400 and r["no_ttl"][0] == 400, r
        assert r["a"][0] == 200 and r["a"][2].get("X-aws-ec2-metadata-token-ttl-seconds") == "60", r["a"]
        assert r["a_use"][:2] == [200, INST_A["ec2_id"]], r["a_use"]
        assert r["b_use"][0] == 401, r["b_use"]
        assert r["b_v1"][:2] == [200, INST_B["ec2_id"]], r["b_v1"]

    with checks.case("the token's answer leaves with IP TTL 1 (hop limit), the next answers with the default"):
        sh("nft", "-f", "-", ns=CLI, input="""
table ip cabttl {
  chain input {
    type filter hook input priority 0;
    ip saddr 169.254.169.254 tcp sport 80 tcp flags & (syn|fin|rst) == 0 ip ttl 1 meta length > 60 counter
    ip saddr 169.254.169.254 tcp sport 80 tcp flags & (syn|fin|rst) == 0 ip ttl 64 meta length > 60 counter
  }
}""")
        r = in_cli(f'''
c = http.client.HTTPConnection("169.254.169.254", 80, timeout=5, source_address=("{IP_A}", 0))
c.request("PUT", "/latest/api/token", headers={{"X-aws-ec2-metadata-token-ttl-seconds": "30"}})
r = c.getresponse(); tok = r.read().decode()
c.request("GET", "/latest/meta-data/instance-id", headers={{"X-aws-ec2-metadata-token": tok}})
r2 = c.getresponse(); body = r2.read().decode()
c.close()
print(json.dumps([r.status, r2.status, body]))''')
        assert r == [200, 200, INST_A["ec2_id"]], r
        rules = sh("nft", "-j", "list", "table", "ip", "cabttl", ns=CLI).stdout
        counts = [x["rule"]["expr"][-1]["counter"]["packets"] for x in json.loads(rules)["nftables"]
                  if "rule" in x]
        sh("nft", "delete", "table", "ip", "cabttl", ns=CLI)
        assert counts[0] >= 1 and counts[1] >= 1, f"data packets with ttl 1 / 64: {counts}"

    ctr_code = HTTP_CLIENT + r'''
def attempt(method, path, headers):
    try:
        c = http.client.HTTPConnection("169.254.169.254", 80, timeout=3)
        c.request(method, path, headers=headers)
        r = c.getresponse()
        return [r.status, r.read().decode()]
    except (socket.timeout, TimeoutError, OSError) as e:
        return ["timeout", type(e).__name__]
print(json.dumps([attempt("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}),
                  attempt("GET", "/latest/meta-data/instance-id", {})]))'''
    with checks.case("hop limit 1: a container behind the guest gets no token (its answer dies), v1 GET works"):
        r = json.loads(sh(PY, "-c", ctr_code, ns=CTR, timeout=60).stdout)
        assert r[0][0] == "timeout", r
        assert r[1] == [200, INST_A["ec2_id"]], r

    with checks.case("hop limit 2: the same container gets its token"):
        srv.start([dict(INST_A, hop_limit=2), INST_B])
        r = json.loads(sh(PY, "-c", ctr_code, ns=CTR, timeout=60).stdout)
        assert r[0][0] == 200 and len(r[0][1]) == 54, r

    with checks.case("http_endpoint disabled: 403 for everything"):
        srv.start([dict(INST_A, endpoint=False), INST_B])
        r = in_cli(f'''
print(json.dumps([req("{IP_A}", "GET", "/latest/meta-data/"), req("{IP_A}", "GET", "/openstack"),
                  req("{IP_A}", "PUT", "/latest/api/token", {{"X-aws-ec2-metadata-token-ttl-seconds": "60"}})]))''')
        assert [x[0] for x in r] == [403, 403, 403], r

    with checks.case("http_tokens=required: DataSourceEc2 as on AWS (IMDSv2) crawls everything; v1 gets 401"):
        srv.start([dict(INST_A, http_tokens="required"), INST_B])
        r = in_cli(f'''
print(json.dumps([req("{IP_A}", "GET", "/latest/meta-data/instance-id"),
                  req("{IP_A}", "GET", "/openstack/latest/meta_data.json"),
                  req("{IP_A}", "GET", "/latest/meta-data/instance-id", {{"X-aws-ec2-metadata-token": "AAAA"}})]))''')
        assert [x[0] for x in r] == [401, 401, 401], r
        r = run_probe(tmp, "ec2-ds-v2")
        assert r["cloud_name"] == "aws" and r["token"], r
        check_ec2_md(r["meta-data"], INST_A)
        assert r["user-data"] == INST_A["user_data"]
        assert r["dynamic"]["instance-identity"]["document"]["instanceId"] == INST_A["ec2_id"], r["dynamic"]
        m = srv.metrics()
        assert m['compute_agent_metadata_tokens_issued_total'] >= 1, m
        assert m['compute_agent_metadata_requests_total{code="401"}'] == 3, m

    with checks.case("md_server stops cleanly on SIGTERM (exit 0: handles closed, no sanitizer report)"):
        rc = srv.stop()
        assert rc == 0, f"exit {rc}: {srv.log_tail()}"


if __name__ == "__main__":
    calib.run("test_metadata_cloudinit", body)
