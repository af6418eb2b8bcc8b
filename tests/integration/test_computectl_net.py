#!/usr/bin/env python3
"""computectl's guest networking and metadata flags against a real agent (test driver), the
agent in a network namespace of its own (netns_agent: bridges and veths live there):

- `computectl networks` shows every configured network (name, type, bridge, cidr, gateway,
  dns, mtu, dhcp, metadata, the VXLAN details); `--json` prints GET /v1/networks as is;
- `computectl launch` with two --network (one with mac= and ip=, one with mtu=), --key
  (inline and NAME=@FILE), --meta, --hostname, --az, --http-tokens required, --hop-limit,
  --config-drive: GET /v1/instances/ID holds each value (the keys themselves in the store);
- `computectl show` lists the guest fields and the interfaces table (network, mac, ip,
  device, state);
- bad flags exit 2 naming the flag and nothing is launched; values only the agent can
  judge (unknown network, IP outside the cidr, a bad host name) exit 1 with the agent's
  error line as is, nothing launched;
- `computectl terminate --wait` releases the ports."""

import json
import os
import sqlite3
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
import netns_agent  # noqa: E402
from calib import short  # noqa: E402

CTL_BIN = calib.BUILD / "computectl"
KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh1bnRlcjI= one@cli"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 two@file"


def main(c: calib.Checks):
    calib.require_agent_binary()
    if not CTL_BIN.exists():
        calib.skip(f"{CTL_BIN} not built (make all)")
    why = netns_agent.have_netns()
    if why:
        calib.skip(why)
    d = calib.tmpdir("cac-ctlnet-")
    files = calib.make_fake_files(d)
    # a name concurrent runs leave out of their host network check (CA_HOSTNET_IGNORE_NETNS)
    ns = netns_agent.Netns(prefix=os.environ.get("CA_NETNS_NAME", "cac") + "-ctl")
    conf = netns_agent.write_conf(d)
    agent = netns_agent.NsAgent(ns, d / "state", hypervisor="test", extra_args=["--config", str(conf)],
                                env={"CA_NETPLUG_STUB_OK": "1"})
    c.agents.append(agent)
    with c.case("agent starts in its netns", fatal=True):
        agent.start(timeout=30)
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)

    def ctl(*args, expect=0):
        """computectl over the agent's unix socket; returns (stdout, stderr)."""
        p = subprocess.run([str(CTL_BIN), "--socket", str(agent.sock), *args], capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode == expect, \
            f"computectl {' '.join(args)} -> {p.returncode} (expected {expect})\n" \
            f"  stdout: {p.stdout.strip()[:600]}\n  stderr: {p.stderr.strip()[:600]}"
        return p.stdout, p.stderr

    def names():
        return {i["name"] for i in cl.instances()}

    with c.case("computectl networks: one row per network with its fields"):
        out, _ = ctl("networks")
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "TYPE", "BRIDGE", "CIDR", "GATEWAY", "DNS", "MTU", "DHCP",
                                    "METADATA", "DETAILS"], lines[0]
        rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
        assert set(rows) == {"n1", "n2", "flat"}, out
        assert rows["n1"][:7] == ["n1", "bridge", "cacbr1", "10.77.0.0/24", "10.77.0.1", "10.77.0.1", "1450"], out
        assert rows["n2"][1] == "vxlan" and rows["n2"][3] == "10.78.0.0/29", out
        assert "vni=4242" in out and "port=4789" in out, out
        assert rows["flat"][1:3] == ["bridge", "cacbr2"], out

    with c.case("computectl networks --json = GET /v1/networks"):
        out, _ = ctl("networks", "--json")
        st, body = cl.call("GET", "/v1/networks")
        assert st == 200 and json.loads(out) == body, f"{out[:300]} != {short(body)}"

    key_file = d / "k2.pub"
    key_file.write_text(KEY2 + "\n")
    name = calib.unique("ctl-net")
    inst = None
    with c.case("computectl launch with every guest flag --wait: succeeded, running", fatal=True):
        out, _ = ctl("--json", "launch", name, "--vcpus", "1", "--memory", "64", "--disk", "1",
                     "--image", files["image"],
                     "--network", "n1,mac=02:ca:fe:00:d0:01,ip=10.77.0.9",
                     "--network", "n2,mtu=1400",
                     "--key", f"k1={KEY1}", "--key", f"k2=@{key_file}",
                     "--meta", "role=web", "--meta", "tier=1",
                     "--hostname", "vm-cli", "--az", "az-cli",
                     "--http-tokens", "required", "--hop-limit", "2", "--config-drive",
                     "--wait", "--wait-timeout", "60")
        ans = json.loads(out)
        assert ans["operation"]["state"] == "succeeded", short(ans)
        inst = cl.wait_state(ans["instance"]["id"], "running", timeout=30)

    with c.case("GET /v1/instances/ID holds every value given on the command line"):
        st, i = cl.call("GET", f"/v1/instances/{inst['id']}")
        assert st == 200, short(i)
        ifs = [(p["network"], p["mac"], p["ip"], p["mtu"], p["state"]) for p in i["interfaces"]]
        assert ifs[0] == ("n1", "02:ca:fe:00:d0:01", "10.77.0.9", None, "plugged"), short(i["interfaces"])
        assert ifs[1][0] == "n2" and ifs[1][2] == "10.78.0.2" and ifs[1][3] == 1400, short(i["interfaces"])
        assert ifs[1][1].startswith("fa:16:3e:") and ifs[1][4] == "plugged", short(i["interfaces"])
        assert i["hostname"] == "vm-cli" and i["availability_zone"] == "az-cli", short(i)
        assert i["metadata"] == {"role": "web", "tier": "1"}, short(i)
        assert sorted(i["key_names"]) == ["k1", "k2"], short(i)
        assert i["metadata_options"].get("http_tokens") == "required", short(i)
        assert i["metadata_options"].get("http_put_response_hop_limit") == 2, short(i)
        assert i["config_drive"] is True, short(i)

    with c.case("the keys reached the agent as given (inline, and the .pub file's line)"):
        db = sqlite3.connect(f"file:{d / 'state' / 'agent.db'}?mode=ro", uri=True)
        try:
            extra = db.execute("SELECT extra FROM instances WHERE uuid = ?", (inst["id"],)).fetchone()[0]
        finally:
            db.close()
        assert json.loads(extra)["public_keys"] == {"k1": KEY1, "k2": KEY2}, extra

    with c.case("computectl show: guest fields and the interfaces table"):
        out, _ = ctl("show", inst["id"])
        assert "hostname:" in out and "vm-cli" in out and "az-cli" in out, out
        assert "http_tokens=required" in out and "role=web" in out, out
        hdr = next(ln for ln in out.splitlines() if ln.startswith("NETWORK"))
        assert hdr.split() == ["NETWORK", "MAC", "IP", "MTU", "DEVICE", "STATE"], hdr
        for p in inst["interfaces"]:
            row = next((ln.split() for ln in out.splitlines() if p["mac"] in ln), None)
            assert row is not None, f"{p['mac']} not in:\n{out}"
            assert row == [p["network"], p["mac"], p["ip"], str(p["mtu"]) if p["mtu"] else "-",
                           p["device"], p["state"]], f"{row} vs {short(p)}"

    before = names()
    bad = [
        (["--network", "n1,foo=1"], "--network: unknown option 'foo'"),
        (["--network", "n1,mac=zz:zz"], "--network: mac=zz:zz"),
        (["--network", "n1,ip=10.77.0.300"], "--network: ip=10.77.0.300"),
        (["--network", "n1,mtu=10"], "--network: mtu=10"),
        (["--key", "nokey"], "--key: 'nokey'"),
        (["--key", "k=@/nonexistent/key.pub"], "--key k: cannot open"),
        (["--meta", "a=1", "--meta", "a=2"], "--meta: 'a' given twice"),
        (["--http-tokens", "always"], "--http-tokens: 'always'"),
        (["--http-endpoint", "on"], "--http-endpoint: 'on'"),
        (["--hop-limit", "100"], "--hop-limit: '100'"),
        (["--config-drive=iso9660"], "--config-drive: 'iso9660'"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ]
    for flags, msg in bad:
        with c.case(f"bad flag {' '.join(flags)}: exit 2, names the flag, nothing launched"):
            _, err = ctl("launch", calib.unique("ctl-bad"), "--type", "t3.micro", "--image", files["image"],
                         *flags, expect=2)
            assert msg in err, f"{msg!r} not in {err!r}"
    agent_refused = [
        (["--network", "nosuch"], "interfaces[0].network"),
        (["--network", "n1", "--network", "n1,ip=10.99.0.5"], "interfaces[1].ip"),
        (["--hostname", "not_a_host!"], "hostname"),
        (["--key", "k=not a key at all"], "public_keys.k"),
    ]
    for flags, field in agent_refused:
        with c.case(f"agent refuses {' '.join(flags)}: exit 1, its error line as is ({field})"):
            bname = calib.unique("ctl-refused")
            body = {"name": bname, "instance_type": "t3.micro", "image": {"path": files["image"]}}
            _, err = ctl("launch", bname, "--type", "t3.micro", "--image", files["image"], *flags, expect=1)
            assert f"(field: {field})" in err and err.startswith("error: invalid_field: "), err
            # the same request straight to the API gives the same message
            for f in range(0, len(flags), 2):
                k, v = flags[f], flags[f + 1]
                if k == "--network":
                    net, _, opt = v.partition(",")
                    iface = {"network": net}
                    if opt:
                        iface[opt.split("=")[0]] = opt.split("=")[1]
                    body.setdefault("interfaces", []).append(iface)
                elif k == "--hostname":
                    body["hostname"] = v
                elif k == "--key":
                    body["public_keys"] = {v.split("=")[0]: v.split("=", 1)[1]}
            st, ans = cl.call("POST", "/v1/instances", body)
            assert st == 400, f"{st} {short(ans)}"
            want = f"error: {ans['error']['code']}: {ans['error']['message']} (field: {ans['error']['field']})"
            assert err.strip() == want, f"{err.strip()!r} != {want!r}"
    with c.case("no refused launch left an instance"):
        assert names() == before, f"new instances: {names() - before}"

    with c.case("computectl terminate --wait: terminated, ports released"):
        out, _ = ctl("--json", "terminate", inst["id"], "--wait")
        assert json.loads(out)["operation"]["state"] == "succeeded", out
        t = cl.wait_state(inst["id"], "terminated", timeout=30)
        assert t["interfaces"] == [], short(t)

    spec_log.check(c)
    with c.case("agent exits 0 on SIGTERM"):
        assert agent.stop(timeout=30) == 0


if __name__ == "__main__":
    calib.run("test_computectl_net", main)
