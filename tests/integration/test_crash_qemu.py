#!/usr/bin/env python3
"""Crash at every fault point (COMPUTE_AGENT_CRASH_AT=<optype>:<step>) under a real libvirtd
(CA_LIBVIRT_URI, else skip), restart, and check that the interrupted operation settles with
the API and libvirt agreeing:

- the agent really died (SIGKILL) at the point;
- the instance exists exactly once in the API (a repeated launch request_id does not make
  a second one);
- its state matches libvirt: running <-> domain running, stopped <-> domain shut off (or no
  domain), terminated <-> no domain;
- no domain carrying our marks exists that the agent doesn't know;
- a crash in the middle of terminate ends terminated.
"""

import http.client
import os
import signal
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import domstate, short  # noqa: E402

BOOT_TIMEOUT = 120.0
OP_TIMEOUT = 180.0

LAUNCH_POINTS = ("launch:claimed", "launch:defined", "launch:started")


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    calib.require_agent_binary()
    d = calib.tmpdir("ca-crash-")
    prefix = calib.unique("ca-it-crash")
    created = set()
    agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri)
    c.agents.append(agent)
    try:
        body_of_test(c, uri, gdir, agent, prefix, created)
    finally:
        if agent.alive():
            agent.kill()
        removed = calib.cleanup_domains(uri, created, marker=prefix)
        if removed:
            print(f"     (cleanup: removed domains {sorted(removed)})")


def body_of_test(c, uri, gdir, agent, prefix, created):
    doms_before = calib.domain_uuids(uri)
    with c.case(f"agent starts with --hypervisor qemu --libvirt-uri {uri}", fatal=True):
        agent.start(timeout=180)
    spec_log = calib.SpecLog()
    cl = agent.client(timeout=60, spec_log=spec_log)
    boot = calib.guest_boot(gdir)

    def launch_body(name, rid=None):
        b = {"name": name, "flavor": {"vcpus": 1, "memory_mb": 128, "disk_gb": 0}, "kernel": boot}
        if rid:
            b["request_id"] = rid
        return b

    def known():
        return {i["id"]: i for i in cl.instances()}

    def check_consistent(iid, name=None):
        """API and libvirt agree about iid; no stray domains. Returns the instance."""
        insts = cl.instances()
        mine = [i for i in insts if i["id"] == iid]
        assert len(mine) == 1, f"instance {iid} listed {len(mine)} times"
        if name is not None:
            same = [i["id"] for i in insts if i["name"] == name]
            assert same == [iid], f"instances named {name}: {same}"
        inst = mine[0]
        ds = domstate(uri, iid)
        st = inst["state"]
        if st == "running":
            assert ds == "running", f"API running, libvirt {ds!r}"
        elif st == "stopped":
            assert ds in ("shut off", None), f"API stopped, libvirt {ds!r}"
        elif st == "terminated":
            assert ds is None, f"API terminated, libvirt still has the domain ({ds!r})"
        elif st == "error":
            assert ds != "running", f"API error, but libvirt runs the domain"
        else:
            raise AssertionError(f"instance not settled: {short(inst)}")
        check_no_strays()
        return inst

    def check_no_strays():
        live = {i["id"] for i in cl.instances() if i["state"] != "terminated"}
        for u in calib.domain_uuids(uri) - doms_before:
            if u in live:
                continue
            xml = calib.domain_xml(uri, u)
            if u in created or prefix in xml or "compute-agent" in xml.lower():
                raise AssertionError(f"domain {u} ({calib.domain_name(uri, u)}) exists but the agent "
                                     f"doesn't know it (or shows it terminated)")

    def crash_run(point, fn):
        """Restart the agent with COMPUTE_AGENT_CRASH_AT=point, run fn, assert it died by SIGKILL,
        restart it without the variable. Returns fn's result (None if the connection dropped)."""
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

    def wait_op_if(res):
        if res and res[0] == 202 and res[1]:
            op = cl.wait_operation(res[1]["operation"]["id"], timeout=OP_TIMEOUT)
            return op
        return None

    def ensure(iid, state):
        i = cl.wait_settled(iid, timeout=OP_TIMEOUT)
        if i["state"] == state:
            return
        action = {"running": "start", "stopped": "stop"}[state]
        extra = {"force": True} if action == "stop" else {}
        watch = calib.ConsoleWatch(i["console_log"])
        r = cl.action(iid, action, **extra)
        op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
        assert op["state"] == "succeeded", short(op)
        cl.wait_state(iid, state, timeout=60)
        if state == "running":
            watch.wait_boot(BOOT_TIMEOUT)

    def normal_launch(name):
        r = cl.launch(launch_body(name))
        created.add(r["instance"]["id"])
        watch = calib.ConsoleWatch(r["instance"]["console_log"])
        op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
        assert op["state"] == "succeeded", short(op)
        cl.wait_state(r["instance"]["id"], "running", timeout=60)
        watch.wait_boot(BOOT_TIMEOUT)  # so that a graceful stop/reboot is heard
        return r["instance"]["id"]

    # ---- launch fault points ----------------------------------------------------------
    for point in LAUNCH_POINTS:
        iid = None
        step = point.split(":")[1]
        name = f"{prefix}-launch-{step}"
        rid = f"{prefix}-rid-{step}"
        with c.case(f"{point}: agent dies, restart settles, API == libvirt, exactly one instance"):
            res = crash_run(point, lambda: cl.call("POST", "/v1/instances", launch_body(name, rid)))
            first_id = None
            if res and res[0] == 202:
                first_id = res[1]["instance"]["id"]
                created.add(first_id)
            # The client retries with the same request_id: must not make a second instance.
            st, r2 = cl.call("POST", "/v1/instances", launch_body(name, rid))
            assert st == 202, f"retry after restart -> {st} {short(r2)}"
            iid = r2["instance"]["id"]
            created.add(iid)
            if first_id:
                assert iid == first_id, f"retry with the same request_id gave {iid}, first answer {first_id}"
            op = wait_op_if((st, r2))
            inst = cl.wait_settled(iid, timeout=OP_TIMEOUT)
            inst = check_consistent(iid, name)
            print(f"     ({point}: instance {inst['state']}, operation {op['state'] if op else '?'}"
                  f"{', fault ' + inst['fault'] if inst['fault'] else ''})")
            if inst["state"] == "running":
                assert op is None or op["state"] == "succeeded", f"running but operation {short(op)}"
        with c.case(f"{point}: the recovered instance terminates cleanly"):
            assert iid, "no instance (see above)"
            i = cl.instance(iid)
            if i["state"] != "terminated":
                r = cl.terminate(iid)
                op = cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
                assert op["state"] == "succeeded", short(op)
                cl.wait_state(iid, "terminated", timeout=60)
            check_consistent(iid)

    # ---- stop / start / reboot fault points on one guest -----------------------------------
    a = None
    with c.case("launch guest A for stop/start/reboot crashes", fatal=True):
        a = normal_launch(f"{prefix}-a")

    for point, action, pre, extra in (("stop:requested", "stop", "running", {"timeout": 60}),
                                      ("start:requested", "start", "stopped", {}),
                                      ("reboot:requested", "reboot", "running", {})):
        with c.case(f"{point}: agent dies, restart settles, API == libvirt"):
            ensure(a, pre)
            res = crash_run(point, lambda: cl.call("POST", f"/v1/instances/{a}/actions",
                                                   {"action": action, **extra}))
            if res is not None:
                assert res[0] == 202, f"{action} -> {res[0]} {short(res[1])}"
            op = wait_op_if(res)
            cl.wait_settled(a, timeout=OP_TIMEOUT)
            inst = check_consistent(a)
            print(f"     ({point}: instance {inst['state']}, operation {op['state'] if op else '?'})")
            if point == "reboot:requested":
                assert inst["state"] == "running", f"after a reboot crash: {short(inst)}"

    # ---- terminate fault points ------------------------------------------------------------
    for point in ("terminate:destroyed", "terminate:undefined"):
        with c.case(f"{point}: agent dies, restart finishes the termination, no domain left"):
            iid = normal_launch(f"{prefix}-t-{point.split(':')[1]}")
            res = crash_run(point, lambda: cl.call("DELETE", f"/v1/instances/{iid}"))
            if res is not None:
                assert res[0] == 202, f"DELETE -> {res[0]} {short(res[1])}"
            op = wait_op_if(res)
            inst = cl.wait_settled(iid, timeout=OP_TIMEOUT)
            check_consistent(iid)
            assert inst["state"] == "terminated", f"after a crash in terminate: {short(inst)}"
            assert op is None or op["state"] == "succeeded", f"terminate operation {short(op)}"
            assert domstate(uri, iid) is None, "domain still defined"

    with c.case("end: no stray domains, every known instance agrees with libvirt"):
        for iid, inst in known().items():
            if iid in created:
                check_consistent(iid)
        check_no_strays()

    spec_log.check(c)

    with c.case("terminate guest A, agent exits 0 on SIGTERM"):
        if a and cl.instance(a)["state"] != "terminated":
            r = cl.terminate(a)
            cl.wait_operation(r["operation"]["id"], timeout=OP_TIMEOUT)
            cl.wait_state(a, "terminated", timeout=60)
            assert domstate(uri, a) is None, "domain still there"
        rc = agent.stop(timeout=60)
        assert rc == 0, f"exit code {rc}"


if __name__ == "__main__":
    calib.run("test_crash_qemu", main)
