#!/usr/bin/env python3
"""Crashes around plugging and unplugging (issue 10): the agent inside the test network
namespace (bridge network, the agent makes the bridge), killed with SIGKILL at
COMPUTE_AGENT_CRASH_AT points
 - between plug and define: launch:ports (and launch:config-drive with a config drive),
 - between destroy and unplug: terminate:destroyed (and terminate:unplugged, terminate:undefined
   where the agent has them),
then restarted on the same state. After each recovery:
 - the instance settles (launch: running or error; terminate: terminated) and libvirt agrees;
 - nothing leaked: no tap, bridge or nft element of the agent's that no live instance has;
 - nothing lost: a running instance still has its tap on the bridge and its filter, and
   its IP stays taken (a launch asking for it is refused naming interfaces[0].ip); once the
   instance is gone the same IP and MAC can be launched again.
The step names come from agent/ops/engine.c's step table (override with
CA_NET_CRASH_POINTS="launch:ports terminate:destroyed ..."); a point the agent does not
have is a failure, not a skip. SKIPs while the agent has no GET /v1/networks."""

import http.client
import os
import re
import signal
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import netenv  # noqa: E402
from netenv import calib  # noqa: E402
from calib import domstate, short  # noqa: E402

NET = "n1"
BR = "ca-cbr0"
CIDR, PREFIX, GW = "10.94.0.0/24", 24, "10.94.0.1"
OP_TIMEOUT = 180.0


def crash_points():
    env = os.environ.get("CA_NET_CRASH_POINTS")
    if env:
        return env.split()
    src = (calib.ROOT / "agent" / "ops" / "engine.c").read_text(errors="replace")
    names = set(re.findall(r'\[STEP_[A-Z_]+\]\s*=\s*"([a-z-]+)"', src))
    pts = []
    for p in ("launch:ports", "launch:config-drive", "terminate:destroyed", "terminate:unplugged",
              "terminate:undefined"):
        if p.split(":")[1] in names:
            pts.append(p)
    assert "launch:ports" in pts, (f"agent/ops/engine.c has no 'ports' step (steps: {sorted(names)}); "
                                   "set CA_NET_CRASH_POINTS to the plug step's crash point")
    return pts


def main(c: calib.Checks):
    ns, uri, _ = netenv.env()
    gdir = os.environ.get("CA_GUEST_DIR")
    if not gdir or not (Path(gdir) / "vmlinuz").is_file():
        calib.skip(f"CA_GUEST_DIR ({gdir!r}) has no test guest (tests/env/build-guest.sh)")
    before = netenv.root_snapshot()
    d = calib.tmpdir("ca-netcrash-")
    networks = {NET: {"type": "bridge", "bridge": BR, "cidr": CIDR, "gateway": GW}}
    agent, cl, _ = netenv.start_agent(c, d, ns, uri, networks)
    prefix = calib.unique("ca-it-netc")
    ids = []
    try:
        points = crash_points()
        print(f"     (crash points: {' '.join(points)})")
        body(c, ns, uri, gdir, agent, cl, prefix, ids, points)
    finally:
        if not agent.alive():
            try:
                agent.start(timeout=180)
            except Exception as e:  # noqa: BLE001 - best effort
                print(f"     (cleanup: agent restart failed: {e})")
        if agent.alive():
            netenv.cleanup_instances(cl, ids)
            agent.stop(timeout=60)
        calib.cleanup_domains(uri, ids, marker=prefix)
    with c.case("the root network namespace is unchanged"):
        diff = netenv.snapshot_diff(before, netenv.root_snapshot())
        assert not diff, "host network changed:\n" + diff


def body(c, ns, uri, gdir, agent, cl, prefix, ids, points):
    n = [0]

    def port(i):
        return {"network": NET, "ip": f"10.94.0.{10 + i}", "mac": f"52:54:00:94:00:{10 + i:02x}"}

    def launch_body(tag, itf, rid=None, **extra):
        b = netenv.launch_body(f"{prefix}-{tag}", gdir, netenv.static_params(itf["ip"], PREFIX, GW, "ca.imds=none"),
                               [itf], **extra)
        if rid:
            b["request_id"] = rid
        return b

    def crash_run(point, fn):
        agent.stop(timeout=60)
        agent.start(timeout=180, env={"COMPUTE_AGENT_CRASH_AT": point})
        res = None
        try:
            res = fn()
        except (OSError, http.client.HTTPException) as e:
            print(f"     ({point}: request cut by the crash: {type(e).__name__})")
        rc = agent.wait_exit(timeout=90)
        if rc is None:
            agent.kill()
            agent.start(timeout=180)
            raise AssertionError(f"agent still alive 90 s after the operation (no crash at {point}); "
                                 f"answer was {short(res)}")
        agent.start(timeout=180)
        assert rc == -signal.SIGKILL, f"agent exited with {rc}, expected death by SIGKILL"
        return res

    def no_leaks(what):
        probs = netenv.leaks(ns, cl)
        assert not probs, f"{what}: " + "; ".join(probs)

    def agrees(iid):
        inst = cl.instance(iid)
        ds = domstate(uri, iid)
        if inst["state"] == "running":
            assert ds == "running", f"API running, libvirt {ds!r}"
        elif inst["state"] == "terminated":
            assert ds is None, f"API terminated, libvirt {ds!r}"
        else:
            assert ds != "running", f"API {inst['state']}, libvirt running"
        return inst

    def plugged(inst):
        dev = inst["interfaces"][0]["device"]
        ln = netenv.links(ns)
        assert dev in ln and ln[dev]["master"] == BR, f"{dev}: {ln.get(dev)}"
        assert f'"{dev}"' in netenv.nft_text(ns), f"no filter element for {dev}"

    def ip_taken(itf):
        other = dict(itf, mac="52:54:00:94:ff:ff")
        st, body_ = cl.call("POST", "/v1/instances", launch_body("taken", other))
        if st == 202:
            ids.append(body_["instance"]["id"])
        calib.expect_error((st, body_), (400, 409, 422), field="interfaces[0].ip",
                           what=f"a launch asking for {itf['ip']} while it is in use")

    def ip_free(itf):
        n[0] += 1
        r = cl.launch(launch_body(f"free{n[0]}", itf))
        ids.append(r["instance"]["id"])
        op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
        assert op["state"] == "succeeded", f"relaunch with {itf}: {short(op)}"
        plugged(cl.instance(r["instance"]["id"]))
        op = cl.wait_operation(cl.terminate(r["instance"]["id"])["operation"]["id"], timeout=OP_TIMEOUT)
        assert op["state"] == "succeeded", short(op)

    def terminate(iid):
        if cl.instance(iid)["state"] != "terminated":
            op = cl.wait_operation(cl.terminate(iid)["operation"]["id"], timeout=OP_TIMEOUT)
            assert op["state"] == "succeeded", short(op)

    k = 0
    for point in [p for p in points if p.startswith("launch:")]:
        k += 1
        itf = port(k)
        step = point.split(":")[1]
        extra = {"config_drive": True} if step == "config-drive" else {}
        iid = None
        with c.case(f"{point}: agent dies; after restart the launch settles, API == libvirt, nothing leaked"):
            rid = f"{prefix}-rid-{step}"
            res = crash_run(point, lambda: cl.call("POST", "/v1/instances", launch_body(step, itf, rid, **extra)))
            st, r2 = cl.call("POST", "/v1/instances", launch_body(step, itf, rid, **extra))
            assert st == 202, f"retry with the same request_id -> {st} {short(r2)}"
            iid = r2["instance"]["id"]
            ids.append(iid)
            if res and res[0] == 202:
                assert res[1]["instance"]["id"] == iid, "the retry made a second instance"
            inst = cl.wait_settled(iid, timeout=OP_TIMEOUT)
            inst = agrees(iid)
            print(f"     ({point}: instance {inst['state']}{', fault ' + str(inst.get('fault')) if inst.get('fault') else ''})")
            no_leaks(point)
        with c.case(f"{point}: nothing lost: a running instance keeps its tap, filter and IP"):
            assert iid, "no instance (see above)"
            inst = cl.instance(iid)
            if inst["state"] == "running":
                plugged(inst)
                ip_taken(itf)
            else:
                dev = (inst.get("interfaces") or [{}])[0].get("device")
                assert not dev or dev not in netenv.links(ns), \
                    f"instance {inst['state']} after the rollback but its device {dev} is still there"
        with c.case(f"{point}: terminate; then nothing left and the IP and MAC launch again"):
            assert iid, "no instance (see above)"
            terminate(iid)
            agrees(iid)
            no_leaks(f"after terminating the {point} instance")
            ip_free(itf)
            no_leaks("after the relaunch and its terminate")

    for point in [p for p in points if p.startswith("terminate:")]:
        k += 1
        itf = port(k)
        step = point.split(":")[1]
        iid = None
        with c.case(f"{point}: agent dies; after restart the instance is terminated, tap, filter and lease gone"):
            r = cl.launch(launch_body(f"t-{step}", itf))
            iid = r["instance"]["id"]
            ids.append(iid)
            op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
            assert op["state"] == "succeeded", short(op)
            inst = cl.instance(iid)
            plugged(inst)
            dev = inst["interfaces"][0]["device"]
            res = crash_run(point, lambda: cl.call("DELETE", f"/v1/instances/{iid}"))
            if res is not None:
                assert res[0] == 202, f"DELETE -> {res[0]} {short(res[1])}"
            inst = cl.wait_settled(iid, timeout=OP_TIMEOUT)
            assert inst["state"] == "terminated", short(inst)
            agrees(iid)
            assert dev not in netenv.links(ns), f"{dev} left after the terminate"
            assert f'"{dev}"' not in netenv.nft_text(ns), f"filter element for {dev} left"
            no_leaks(point)
        with c.case(f"{point}: the IP and MAC launch again"):
            assert iid, "no instance (see above)"
            ip_free(itf)
            no_leaks("after the relaunch and its terminate")

    with c.case("end: no instance left running, the agent's bridge is gone, agent exits 0"):
        for iid in ids:
            terminate(iid)
        no_leaks("end")
        assert BR not in netenv.links(ns), f"bridge {BR} left with no instance"
        rc = agent.stop(timeout=60)
        assert rc == 0, f"exit code {rc}"


if __name__ == "__main__":
    calib.run("test_net_crash_qemu", main)
