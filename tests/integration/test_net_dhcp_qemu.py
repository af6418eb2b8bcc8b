#!/usr/bin/env python3
"""DHCP on a `dhcp = true` network (issue 10): the agent supervises a real dnsmasq on the
network's bridge, inside the test network namespace, with real QEMU guests (TCG):
 - an agent with dhcp.dnsmasq naming no program starts, and GET /v1/networks says why
   the network has no DHCP server;
 - guest 1 boots with ca.net=dhcp (busybox udhcpc) and gets exactly the IP the API gave
   its port, with the gateway as router; its metadata fetch (over the option 121 route)
   gives its instance-id; the leases file names its MAC, dnsmasq's pid file is the pid
   GET /v1/networks shows;
 - kill -9 of dnsmasq: the agent restarts it (a new pid, waited for with a deadline);
 - kill -9 of the agent: the next agent stops the dnsmasq the first one left (recognised
   by its pid file and command line) and starts its own, with the hosts file rebuilt
   from the store; guest 2, launched then, gets its lease;
 - terminate guest 2: its hosts entry is gone; stop the agent (guest 1 running): no
   dnsmasq left (by pid); start it again: dnsmasq back; terminate guest 1: the agent-made
   bridge goes and dnsmasq with it;
 - the root network namespace is unchanged.
Needs CA_NETNS* (tests/run.sh), CA_GUEST_DIR, dnsmasq."""

import os
import shutil
import signal
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import netenv  # noqa: E402
from netenv import calib  # noqa: E402
from calib import short  # noqa: E402

NET = "d1"
BR = "ca-dbr0"
CIDR, PREFIX, GW = "10.93.0.0/24", 24, "10.93.0.1"
G1 = {"ip": "10.93.0.20", "mac": "52:54:00:93:00:20"}
G2 = {"ip": "10.93.0.21", "mac": "52:54:00:93:00:21"}
BOOT_TIMEOUT = 240
NETWORKS = {NET: {"type": "bridge", "bridge": BR, "cidr": CIDR, "gateway": GW, "dns": GW, "dhcp": True}}


def pid_alive(pid):
    """pid is a live process (not a zombie)."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def dnsmasq_pids(ddir):
    """Live dnsmasq processes whose command line names this network directory's pid file."""
    want = f"--pid-file={ddir}/dnsmasq.pid".encode()
    res = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and want in cmdline(p.name) and pid_alive(p.name):
            res.append(int(p.name))
    return res


def dhcp_state(cl):
    st, body = cl.get("/v1/networks")
    assert st == 200, f"GET /v1/networks -> {st} {short(body)}"
    calib.validate_response("GET", "/v1/networks", st, body)
    n = {x["name"]: x for x in body["networks"]}[NET]
    assert n["dhcp"] is True, short(n)
    return n.get("dhcp_server")


def running_pid(cl):
    s = dhcp_state(cl)
    return s["pid"] if s and s.get("running") else None


def main(c: calib.Checks):
    ns, uri, _ = netenv.env()
    gdir = os.environ.get("CA_GUEST_DIR")
    if not gdir or not (Path(gdir) / "vmlinuz").is_file():
        calib.skip(f"CA_GUEST_DIR ({gdir!r}) has no test guest (tests/env/build-guest.sh)")
    if not shutil.which("dnsmasq") and not Path("/usr/sbin/dnsmasq").exists():
        calib.skip("dnsmasq is not installed (Debian dnsmasq-base)")
    before = netenv.root_snapshot()
    d = calib.tmpdir("ca-netdhcp-")
    ddir = Path(d) / "state" / "dhcp" / NET
    seen = set()
    ids = []
    agent = None
    try:
        missing_binary(c, d, ns, uri)
        agent, cl, _ = netenv.start_agent(c, d, ns, uri, NETWORKS)
        agent = body(c, d, ns, uri, agent, cl, gdir, ddir, ids, seen)
    finally:
        if agent is not None and agent.alive():
            try:
                netenv.cleanup_instances(agent.client(timeout=60), ids)
            finally:
                agent.stop(timeout=60)
        calib.cleanup_domains(uri, ids, marker="ca-it-netd")
        # never leave a dnsmasq of this test behind (ours: it names our directory)
        for pid in dnsmasq_pids(ddir):
            os.kill(pid, signal.SIGKILL)
    with c.case("the root network namespace is unchanged"):
        diff = netenv.snapshot_diff(before, netenv.root_snapshot())
        assert not diff, "host network changed:\n" + diff


def missing_binary(c, d, ns, uri):
    """dhcp.dnsmasq names nothing: the agent runs, the network says why it has no DHCP."""
    md = Path(d) / "nodnsmasq"
    md.mkdir()
    conf = md / "agent.conf"
    conf.write_text(netenv.config_text(NETWORKS, extra="\n[dhcp]\ndnsmasq = /nonexistent/dnsmasq\n"))
    agent = netenv.NetnsAgent(ns, md / "state", hypervisor="qemu", libvirt_uri=uri, log_level="debug",
                              extra_args=["--config", str(conf), "--host-name", calib.unique("ca-it-net")])
    c.agents.append(agent)
    try:
        with c.case("no dnsmasq program: the agent starts, GET /v1/networks shows the dhcp error"):
            agent.start(timeout=180)
            cl = agent.client(timeout=30)
            s = dhcp_state(cl)
            assert s and s["enabled"] is True and s["running"] is False and s["pid"] is None, short(s)
            assert "/nonexistent/dnsmasq" in (s.get("error") or ""), short(s)
            st, _ = cl.get("/v1/instances")
            assert st == 200, st
            assert "dnsmasq not found" in agent.log_path.read_text(errors="replace"), agent.log_tail()
    finally:
        agent.stop(timeout=60)


def launch(c, cl, name, g, ids):
    b = netenv.launch_body(name, os.environ["CA_GUEST_DIR"], ("ca.net=dhcp",), [{"network": NET, **g}])
    r = cl.launch(b)
    ids.append(r["instance"]["id"])
    op = cl.wait_operation(r["operation"]["id"], timeout=180)
    assert op["state"] == "succeeded", short(op)
    return cl.instance(r["instance"]["id"])


def check_lease(c, inst, g, what):
    w = calib.ConsoleWatch(inst["console_log"])
    with c.case(f"{what}: udhcpc got exactly the port's IP from dnsmasq, the gateway as router", fatal=True):
        itf = inst["interfaces"][0]
        assert itf["ip"] == g["ip"] and itf["mac"] == g["mac"], short(itf)
        netenv.wait_marker(w, r"^net dhcp ", timeout=BOOT_TIMEOUT)
        m = netenv.markers(w.text())
        assert f"net dhcp ip={g['ip']}/{PREFIX} gw={GW}" in m, m
    return w


def body(c, d, ns, uri, agent, cl, gdir, ddir, ids, seen):
    prefix = calib.unique("ca-it-netd")
    with c.case("before any plug: dhcp enabled, not running (the agent's bridge does not exist yet)"):
        s = dhcp_state(cl)
        assert s and s["enabled"] is True and s["running"] is False and s["error"] is None, short(s)
        assert ddir.is_dir() and (ddir.stat().st_mode & 0o777) == 0o700, oct(ddir.stat().st_mode)

    with c.case("launch guest 1 (ca.net=dhcp) -> running", fatal=True):
        i1 = launch(c, cl, f"{prefix}-1", G1, ids)
    w1 = check_lease(c, i1, G1, "guest 1")
    with c.case("guest 1's DHCP went through its anti-spoofing filter (the tap's nft elements)"):
        dev = i1["interfaces"][0]["device"]
        text = netenv.nft_text(ns)
        assert f'"{dev}" . {G1["mac"]}' in text and f'"{dev}" . {G1["ip"]}' in text, text
    with c.case("guest 1: the metadata fetch over DHCP's routes gives its instance-id"):
        netenv.wait_marker(w1, r"^done$", timeout=120)
        m = netenv.markers(w1.text())
        assert any("169.254.169.254" in x for x in m if x.startswith("routes ")), m
        rc, got, err = netenv.blocks(w1.text())["latest/meta-data/instance-id"]
        assert rc == 0 and got.decode() == i1["ec2_id"], f"rc={rc} {got!r} {err} (API {i1['ec2_id']})"
    with c.case("state dir: hosts names guest 1, leases has its MAC, dnsmasq.pid = the API's pid", fatal=True):
        pid1 = running_pid(cl)
        assert pid1, short(dhcp_state(cl))
        seen.add(pid1)
        assert f"{G1['mac']},{G1['ip']}" in (ddir / "hosts").read_text()
        assert G1["mac"] in (ddir / "leases").read_text(), (ddir / "leases").read_text()
        assert int((ddir / "dnsmasq.pid").read_text().strip()) == pid1
        assert dnsmasq_pids(ddir) == [pid1], dnsmasq_pids(ddir)
        opts = (ddir / "opts").read_text()
        assert f"classless-static-route,169.254.169.254/32,{GW},0.0.0.0/0,{GW}" in opts, opts
        assert f"--interface={BR}".encode() in cmdline(pid1), cmdline(pid1)

    with c.case("kill -9 dnsmasq: logged and restarted (a new pid)", fatal=True):
        os.kill(pid1, signal.SIGKILL)
        pid2 = calib.wait_for(lambda: (p := running_pid(cl)) and p != pid1 and p, 30,
                              what="a new dnsmasq", last=lambda: short(dhcp_state(cl)))
        seen.add(pid2)
        s = dhcp_state(cl)
        assert s["restarts"] >= 1, short(s)
        assert not pid_alive(pid1) and dnsmasq_pids(ddir) == [pid2], dnsmasq_pids(ddir)
        assert "dnsmasq exited; restarting" in agent.log_path.read_text(errors="replace")

    with c.case("kill -9 the agent, start it again: the stale dnsmasq is stopped, a new one runs", fatal=True):
        agent.kill()
        assert pid_alive(pid2), "dnsmasq died with the agent"
        agent.start(timeout=180)
        cl = agent.client(timeout=60)
        pid3 = calib.wait_for(lambda: (p := running_pid(cl)) and p != pid2 and p, 60,
                              what="the new agent's dnsmasq", last=lambda: short(dhcp_state(cl)))
        seen.add(pid3)
        assert not pid_alive(pid2), f"stale dnsmasq {pid2} still runs"
        assert dnsmasq_pids(ddir) == [pid3], dnsmasq_pids(ddir)
        assert f"{G1['mac']},{G1['ip']}" in (ddir / "hosts").read_text()

    with c.case("launch guest 2 after the restart -> running", fatal=True):
        i2 = launch(c, cl, f"{prefix}-2", G2, ids)
        assert f"{G2['mac']},{G2['ip']}" in (ddir / "hosts").read_text()
    check_lease(c, i2, G2, "guest 2")

    with c.case("terminate guest 2: its hosts entry is gone, dnsmasq keeps running"):
        op = cl.wait_operation(cl.terminate(i2["id"])["operation"]["id"], timeout=120)
        assert op["state"] == "succeeded", short(op)
        hosts = (ddir / "hosts").read_text()
        assert G2["mac"] not in hosts and G1["mac"] in hosts, hosts
        assert running_pid(cl) == pid3, short(dhcp_state(cl))
    with c.case("stop the agent (SIGTERM) with guest 1 running: no dnsmasq is left (by pid)", fatal=True):
        rc = agent.stop(timeout=60)
        assert rc == 0, f"agent exit status {rc}:\n{agent.log_tail()}"
        left = [p for p in seen if pid_alive(p)] + dnsmasq_pids(ddir)
        assert not left, f"dnsmasq left: {left}"
    with c.case("start the agent again: dnsmasq runs for guest 1's bridge", fatal=True):
        agent.start(timeout=180)
        cl = agent.client(timeout=60)
        pid4 = calib.wait_for(lambda: running_pid(cl), 60, what="dnsmasq after the restart",
                              last=lambda: short(dhcp_state(cl)))
        seen.add(pid4)
        assert dnsmasq_pids(ddir) == [pid4], dnsmasq_pids(ddir)
    with c.case("terminate guest 1: the agent's bridge goes, and its dnsmasq with it"):
        op = cl.wait_operation(cl.terminate(i1["id"])["operation"]["id"], timeout=120)
        assert op["state"] == "succeeded", short(op)
        assert BR not in netenv.links(ns), "bridge left"
        calib.wait_for(lambda: not pid_alive(pid4), 15, what=f"dnsmasq {pid4} to stop")
        s = dhcp_state(cl)
        assert s["running"] is False and s["pid"] is None, short(s)
        assert G1["mac"] not in (ddir / "hosts").read_text()
    with c.case("nothing leaked in the namespace; the agent stops with no dnsmasq left"):
        ln = netenv.links(ns)
        assert BR not in ln and not [n for n, l in ln.items() if netenv.ours(l)], short(ln)
        assert not netenv.leaks(ns, cl), netenv.leaks(ns, cl)
        rc = agent.stop(timeout=60)
        assert rc == 0, f"agent exit status {rc}:\n{agent.log_tail()}"
        left = [p for p in seen if pid_alive(p)] + dnsmasq_pids(ddir)
        assert not left, f"dnsmasq left: {left}"
    return agent


if __name__ == "__main__":
    calib.run("test_net_dhcp_qemu", main)
