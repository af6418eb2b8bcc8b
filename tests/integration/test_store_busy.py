#!/usr/bin/env python3
"""The store's busy path through the API (test driver): while another connection holds
agent.db's write lock (an operator's sqlite3 shell), a launch and an action answer at once
with 503 unavailable "store busy" (an Error per api-spec/openapi.yaml) and create nothing;
reads (list, show, /healthz) still answer 200; once the lock is released the same launch
is accepted and succeeds. The agent is not stalled meanwhile: each refused write answers
well within a second.
"""

import os
import sqlite3
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import expect_error, short  # noqa: E402


def main(c: calib.Checks):
    calib.require_agent_binary()
    d = calib.tmpdir("ca-busy-")
    files = calib.make_fake_files(d)
    agent = calib.Agent(d / "state", hypervisor="test")
    c.agents.append(agent)
    with c.case("agent starts (test driver)", fatal=True):
        agent.start(timeout=30)
    cl = agent.client()
    flavor = {"vcpus": 1, "memory_mb": 64, "disk_gb": 1}
    body = {"name": calib.unique("busy"), "flavor": flavor, "image": {"path": files["image"]}}
    with c.case("a first instance runs", fatal=True):
        r = cl.launch(dict(body, name=calib.unique("busy-first")))
        first = r["instance"]["id"]
        assert cl.wait_operation(r["operation"]["id"])["state"] == "succeeded"
        cl.wait_state(first, "running")
    n_before = len(cl.instances())

    lock = sqlite3.connect(str(d / "state" / "agent.db"), isolation_level=None, timeout=5)
    try:
        with c.case("another connection takes the write lock", fatal=True):
            lock.execute("BEGIN IMMEDIATE")
        with c.case("launch -> 503 unavailable 'store busy', answered at once"):
            t0 = time.monotonic()
            st, e = cl.call("POST", "/v1/instances", body)
            took = time.monotonic() - t0
            expect_error((st, e), 503, "unavailable", what="launch while the store is busy")
            assert "store busy" in e["error"]["message"], short(e)
            assert took < 1.0, f"took {took:.2f}s"
        with c.case("stop -> 503 unavailable 'store busy'"):
            st, e = cl.call("POST", f"/v1/instances/{first}/actions", {"action": "stop"})
            expect_error((st, e), 503, "unavailable", what="stop while the store is busy")
            assert "store busy" in e["error"]["message"], short(e)
        with c.case("reads still answer: /healthz, list, show"):
            assert cl.get("/healthz")[0] == 200
            assert len(cl.instances()) == n_before
            i = cl.instance(first)
            assert (i["state"], i["task_state"]) == ("running", None), short(i)
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    with c.case("lock released: the same launch is accepted and succeeds"):
        r = cl.launch(body)
        assert cl.wait_operation(r["operation"]["id"])["state"] == "succeeded"
        assert len(cl.instances()) == n_before + 1
    with c.case("and the stop"):
        r = cl.action(first, "stop")
        assert cl.wait_operation(r["operation"]["id"])["state"] == "succeeded"
    with c.case("agent stops cleanly"):
        assert agent.stop() == 0


if __name__ == "__main__":
    calib.run("test_store_busy", main)
