#!/usr/bin/env python3
"""Bad guest-network and metadata input to a launch (issue 10): every case answers 4xx with
the code and the exact field (`interfaces[1].ip`, `public_keys.mykey`, ...), and changes
nothing: no instance recorded, no port reserved (the next allocation still gets the lowest
address), nothing plugged in the agent's network namespace. The agent runs on the test
driver inside a network namespace of its own; the same checks run through the bus parser
in unit-request."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
import netns_agent  # noqa: E402
from calib import expect_error, short  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh1bnRlcjIgaHVudGVyMg== user@host"


def main(c: calib.Checks):
    calib.require_agent_binary()
    why = netns_agent.have_netns()
    if why:
        calib.skip(why)
    d = calib.tmpdir("cac-netbad-")
    files = calib.make_fake_files(d)
    ns = netns_agent.Netns()
    conf = netns_agent.write_conf(d)
    agent = netns_agent.NsAgent(ns, d / "state", hypervisor="test", extra_args=["--config", str(conf)],
                                env={"CA_NETPLUG_STUB_OK": "1"})
    c.agents.append(agent)
    with c.case("agent starts in its netns with three networks", fatal=True):
        agent.start(timeout=30)
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)
    links0 = sorted(ns.links())

    def body(**over):
        b = {"name": calib.unique("bad"), "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
             "image": {"path": files["image"]}}
        b.update(over)
        return b

    with c.case("GET /v1/networks lists the three networks"):
        st, nets = cl.call("GET", "/v1/networks")
        assert st == 200, short(nets)
        names = [n["name"] for n in nets["networks"]]
        assert names == ["n1", "n2", "flat"], names
        n1 = nets["networks"][0]
        assert (n1["type"], n1["cidr"], n1["gateway"], n1["mtu"], n1["dns"]) == \
            ("bridge", "10.77.0.0/24", "10.77.0.1", 1450, ["10.77.0.1"]), short(n1)
        assert nets["networks"][1]["vni"] == 4242, short(nets["networks"][1])

    # a reference instance holding 10.77.0.2 and a known MAC
    with c.case("reference launch holds 10.77.0.2 and fa:16:3e:aa:bb:cc", fatal=True):
        r = cl.launch(body(interfaces=[{"network": "n1", "mac": "fa:16:3e:aa:bb:cc"}]))
        ref = r["instance"]
        assert [(i["ip"], i["mac"]) for i in ref["interfaces"]] == [("10.77.0.2", "fa:16:3e:aa:bb:cc")], \
            short(ref["interfaces"])

    def snapshot():
        insts = cl.instances()
        h = cl.host()
        return (sorted(i["id"] for i in insts), h["instances"], h["allocated"])

    # a host device's MAC: an operator's bridge in the agent's netns, given an
    # address of its own (cacbr1's is now its port's host end, fe:16:3e:aa:bb:cc)
    br_mac = "02:ca:fe:00:00:02"
    ns.run("ip", "link", "set", "cacbr2", "address", br_mac)
    before = snapshot()
    n1 = lambda **k: dict(network="n1", **k)  # noqa: E731
    cases = [
        # (what, body overrides, status, code, field)
        ("interfaces not an array", {"interfaces": {"network": "n1"}}, 400, "invalid_field", "interfaces"),
        ("nine interfaces", {"interfaces": [n1()] * 9}, 400, "invalid_field", "interfaces"),
        ("interface not an object", {"interfaces": [n1(), "n1"]}, 400, "invalid_field", "interfaces[1]"),
        ("interface without network", {"interfaces": [{}]}, 400, "missing_field", "interfaces[0].network"),
        ("unknown interface key", {"interfaces": [n1(vlan=5)]}, 400, "unknown_field", "interfaces[0].vlan"),
        ("unknown network", {"interfaces": [n1(), {"network": "nope"}]}, 400, "invalid_field",
         "interfaces[1].network"),
        ("malformed MAC", {"interfaces": [n1(mac="fa:16:3e:zz:00:01")]}, 400, "invalid_field",
         "interfaces[0].mac"),
        ("short MAC", {"interfaces": [n1(mac="fa:16:3e:00:01")]}, 400, "invalid_field", "interfaces[0].mac"),
        ("multicast MAC", {"interfaces": [n1(mac="01:00:5e:00:00:01")]}, 400, "invalid_field",
         "interfaces[0].mac"),
        ("broadcast MAC", {"interfaces": [n1(mac="ff:ff:ff:ff:ff:ff")]}, 400, "invalid_field",
         "interfaces[0].mac"),
        ("zero MAC", {"interfaces": [n1(mac="00:00:00:00:00:00")]}, 400, "invalid_field", "interfaces[0].mac"),
        ("MAC twice in the request", {"interfaces": [n1(mac="02:00:00:00:00:09"), n1(mac="02:00:00:00:00:09")]},
         400, "invalid_field", "interfaces[1].mac"),
        ("MAC of a port's host end (fe:...)", {"interfaces": [n1(mac="fe:16:3e:aa:bb:cc")]}, 400, "invalid_field",
         "interfaces[0].mac"),
        ("MAC of a host device (the bridge)", {"interfaces": [n1(mac=br_mac)]}, 409, "conflict",
         "interfaces[0].mac"),
        ("MAC in use on the host", {"interfaces": [n1(), n1(mac="FA:16:3E:AA:BB:CC")]}, 409, "conflict",
         "interfaces[1].mac"),
        ("malformed IP", {"interfaces": [n1(ip="10.77.0.300")]}, 400, "invalid_field", "interfaces[0].ip"),
        ("IP with a leading zero", {"interfaces": [n1(ip="10.77.0.05")]}, 400, "invalid_field",
         "interfaces[0].ip"),
        ("IP twice in the request", {"interfaces": [n1(ip="10.77.0.9"), n1(ip="10.77.0.9")]}, 400,
         "invalid_field", "interfaces[1].ip"),
        ("IP outside the cidr", {"interfaces": [n1(ip="10.77.1.5")]}, 400, "invalid_field", "interfaces[0].ip"),
        ("IP = network address", {"interfaces": [n1(ip="10.77.0.0")]}, 400, "invalid_field", "interfaces[0].ip"),
        ("IP = broadcast", {"interfaces": [n1(ip="10.77.0.255")]}, 400, "invalid_field", "interfaces[0].ip"),
        ("IP = gateway", {"interfaces": [n1(), n1(ip="10.77.0.1")]}, 400, "invalid_field", "interfaces[1].ip"),
        ("IP on a network without cidr", {"interfaces": [{"network": "flat", "ip": "10.77.0.9"}]}, 400,
         "invalid_field", "interfaces[0].ip"),
        ("IP in use on the host", {"interfaces": [n1(ip="10.77.0.2")]}, 409, "conflict", "interfaces[0].ip"),
        ("MTU 67", {"interfaces": [n1(mtu=67)]}, 400, "invalid_field", "interfaces[0].mtu"),
        ("MTU 65536", {"interfaces": [n1(mtu=65536)]}, 400, "invalid_field", "interfaces[0].mtu"),
        ("MTU a string", {"interfaces": [n1(mtu="1400")]}, 400, "invalid_field", "interfaces[0].mtu"),
        ("MTU above the network's 1450", {"interfaces": [n1(mtu=1451)]}, 400, "invalid_field",
         "interfaces[0].mtu"),
        ("public_keys not an object", {"public_keys": [KEY]}, 400, "invalid_field", "public_keys"),
        ("public key not OpenSSH", {"public_keys": {"mykey": "hello"}}, 400, "invalid_field", "public_keys.mykey"),
        ("public key not a string", {"public_keys": {"mykey": 1}}, 400, "invalid_field", "public_keys.mykey"),
        ("public key over 16 KiB", {"public_keys": {"mykey": "ssh-rsa " + "A" * 16384}}, 400, "invalid_field",
         "public_keys.mykey"),
        ("public key name over 255", {"public_keys": {"k" * 256: KEY}}, 400, "invalid_field",
         ("public_keys." + "k" * 256)[:95]),
        ("33 public keys", {"public_keys": {f"k{i}": KEY for i in range(33)}}, 400, "invalid_field",
         "public_keys"),
        ("metadata not an object", {"metadata": "role=web"}, 400, "invalid_field", "metadata"),
        ("metadata value not a string", {"metadata": {"role": 5}}, 400, "invalid_field", "metadata.role"),
        ("metadata value over 255", {"metadata": {"role": "w" * 256}}, 400, "invalid_field", "metadata.role"),
        ("metadata value with a control character", {"metadata": {"role": "a\u0007"}}, 400, "invalid_field",
         "metadata.role"),
        ("metadata key over 255", {"metadata": {"k" * 256: "v"}}, 400, "invalid_field",
         ("metadata." + "k" * 256)[:95]),
        ("129 metadata items", {"metadata": {f"k{i}": "v" for i in range(129)}}, 400, "invalid_field",
         "metadata"),
        ("empty availability_zone", {"availability_zone": ""}, 400, "invalid_field", "availability_zone"),
        ("availability_zone over 255", {"availability_zone": "z" * 256}, 400, "invalid_field",
         "availability_zone"),
        ("hostname with _", {"hostname": "bad_host"}, 400, "invalid_field", "hostname"),
        ("hostname label over 63", {"hostname": "h" * 64}, 400, "invalid_field", "hostname"),
        ("hostname ending in -", {"hostname": "vm-"}, 400, "invalid_field", "hostname"),
        ("http_tokens maybe", {"metadata_options": {"http_tokens": "maybe"}}, 400, "invalid_field",
         "metadata_options.http_tokens"),
        ("http_endpoint on", {"metadata_options": {"http_endpoint": "on"}}, 400, "invalid_field",
         "metadata_options.http_endpoint"),
        ("hop limit 65", {"metadata_options": {"http_put_response_hop_limit": 65}}, 400, "invalid_field",
         "metadata_options.http_put_response_hop_limit"),
        ("unknown metadata option", {"metadata_options": {"tags": "on"}}, 400, "unknown_field",
         "metadata_options.tags"),
        ("config_drive a string", {"config_drive": "yes"}, 400, "invalid_field", "config_drive"),
        ("config_drive_format vfat", {"config_drive_format": "vfat"}, 400, "invalid_field",
         "config_drive_format"),
    ]
    for what, over, status, code, field in cases:
        with c.case(f"{what}: {status} {code} {field}"):
            err = expect_error(cl.call("POST", "/v1/instances", body(**over)), status, code, field, what=what)
            assert field.split("[")[0].split(".")[0] in err["message"] or field in err["message"] or \
                len(field) > 90, f"message does not name the field: {short(err)}"
            after = snapshot()
            assert after == before, f"{what}: something changed: {before} -> {after}"

    with c.case("nothing reserved by the refusals: the next launch gets 10.77.0.3 and 10.78.0.2"):
        r = cl.launch(body(interfaces=[{"network": "n1"}, {"network": "n2"}]))
        got = [i["ip"] for i in r["instance"]["interfaces"]]
        assert got == ["10.77.0.3", "10.78.0.2"], got
        cl.wait_operation(r["operation"]["id"], timeout=30)

    with c.case("nothing plugged by the refusals (links in the agent's netns)"):
        links = sorted(ns.links())
        new = [x for x in links if x not in links0]
        # the successful launches' devices only
        allowed = {i["device"] for inst in cl.instances() for i in inst["interfaces"]} | {"cacbr1", "cacbr2"}
        # the networks' own devices (bridge, VXLAN), made by the first plug
        allowed |= {x for x in new if x.startswith(("cabr-", "cavx-"))}
        allowed |= {d + "p" for d in list(allowed)}
        extra = [x for x in new if x not in allowed]
        assert not extra, f"unexpected devices: {extra} (new: {new})"

    with c.case("every answer matches api-spec/openapi.yaml"):
        spec_log.check(c)

    agent.stop()


if __name__ == "__main__":
    calib.run("test_net_bad_input", main)
