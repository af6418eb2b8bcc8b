#!/usr/bin/env python3
"""A repeated request_id (body field or Idempotency-Key header) returns the first instance
and operation and creates no second guest; also under concurrency and across a restart.
"""

import os
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402


def main(c: calib.Checks):
    calib.require_agent_binary()
    d = calib.tmpdir("ca-idem-")
    files = calib.make_fake_files(d)
    agent = calib.Agent(d / "state", hypervisor="test")
    c.agents.append(agent)
    with c.case("agent starts (test driver)", fatal=True):
        agent.start(timeout=30)
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)
    run_tag = calib.unique("idem")

    def body(name, **extra):
        return {"name": name, "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
                "image": {"path": files["image"]}, **extra}

    def count(name):
        return sum(1 for i in cl.instances() if i["name"] == name)

    first = {}

    def need(key):
        assert key in first, f"skipped: depends on the failed '{key}' check above"
        return first[key]

    with c.case("body request_id twice -> same instance and operation, one instance"):
        h0 = cl.host()
        rid = f"{run_tag}-body"
        n = f"{run_tag}-a"
        r1 = cl.launch(body(n, request_id=rid))
        r2 = cl.launch(body(n, request_id=rid))
        assert r1["instance"]["id"] == r2["instance"]["id"], f"{r1['instance']['id']} != {r2['instance']['id']}"
        assert r1["instance"]["ec2_id"] == r2["instance"]["ec2_id"], "ec2 ids differ"
        assert r1["operation"]["id"] == r2["operation"]["id"], f"{r1['operation']['id']} != {r2['operation']['id']}"
        assert r1["operation"]["request_id"] == rid, short(r1["operation"])
        assert count(n) == 1, f"{count(n)} instances named {n}"
        h1 = cl.host()
        assert h1["allocated"]["vcpus"] - h0["allocated"]["vcpus"] == 1, f"{short(h0['allocated'])} -> {short(h1['allocated'])}"
        first["body"] = (rid, n, r1)

    with c.case("Idempotency-Key header twice -> same instance and operation, one instance"):
        key = f"{run_tag}-hdr"
        n = f"{run_tag}-b"
        r1 = cl.launch(body(n), headers={"Idempotency-Key": key})
        r2 = cl.launch(body(n), headers={"Idempotency-Key": key})
        assert r1["instance"]["id"] == r2["instance"]["id"], f"{r1['instance']['id']} != {r2['instance']['id']}"
        assert r1["operation"]["id"] == r2["operation"]["id"], "operation ids differ"
        assert r1["operation"]["request_id"] == key, f"operation.request_id {r1['operation']['request_id']!r} != {key!r}"
        assert count(n) == 1, f"{count(n)} instances named {n}"
        first["hdr"] = (key, n, r1)

    with c.case("header key, then the same value as body request_id -> the same instance"):
        key, n, r1 = need("hdr")
        r3 = cl.launch(body(n, request_id=key))
        assert r3["instance"]["id"] == r1["instance"]["id"], "a body request_id equal to an earlier header key made a new instance"
        assert count(n) == 1, f"{count(n)} instances named {n}"

    with c.case("a different request_id -> a different instance"):
        n = f"{run_tag}-c"
        ra = cl.launch(body(n + "1", request_id=f"{run_tag}-c1"))
        rb = cl.launch(body(n + "2", request_id=f"{run_tag}-c2"))
        assert ra["instance"]["id"] != rb["instance"]["id"], "different request_ids gave the same instance"
        assert count(n + "1") == 1 and count(n + "2") == 1, "expected one instance each"

    with c.case("no request_id twice -> two instances"):
        n = f"{run_tag}-d"
        ra = cl.launch(body(n + "1"))
        rb = cl.launch(body(n + "2"))
        assert ra["instance"]["id"] != rb["instance"]["id"], "two launches without request_id gave one instance"
        assert count(n + "1") == 1 and count(n + "2") == 1, "expected one instance each"

    with c.case("request_id repeated after the launch finished -> the first instance and operation"):
        rid, n, r1 = need("body")
        cl.wait_operation(r1["operation"]["id"], timeout=30)
        cl.wait_state(r1["instance"]["id"], "running", timeout=30)
        r2 = cl.launch(body(n, request_id=rid))
        assert r2["instance"]["id"] == r1["instance"]["id"], "new instance for a finished request_id"
        assert r2["operation"]["id"] == r1["operation"]["id"], "new operation for a finished request_id"
        assert r2["operation"]["state"] == "succeeded", short(r2["operation"])
        assert count(n) == 1, f"{count(n)} instances named {n}"

    with c.case("8 concurrent launches with one request_id -> one instance, same ids for all"):
        rid = f"{run_tag}-conc"
        n = f"{run_tag}-e"
        results = [None] * 8

        def worker(k):
            try:
                results[k] = cl.call("POST", "/v1/instances", body(n, request_id=rid))
            except Exception as e:  # noqa: BLE001 - reported below
                results[k] = (None, repr(e))
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sts = [r[0] for r in results]
        assert all(s == 202 for s in sts), f"statuses {sts}: {[short(r[1], 200) for r in results if r[0] != 202][:2]}"
        iids = {r[1]["instance"]["id"] for r in results}
        oids = {r[1]["operation"]["id"] for r in results}
        assert len(iids) == 1 and len(oids) == 1, f"instance ids {iids}, operation ids {oids}"
        assert count(n) == 1, f"{count(n)} instances named {n}"

    with c.case("action request_id repeated -> the same operation"):
        rid, n, r1 = need("body")
        iid = r1["instance"]["id"]
        a1 = cl.action(iid, "stop", request_id=f"{run_tag}-stop", force=True)
        a2 = cl.action(iid, "stop", request_id=f"{run_tag}-stop", force=True)
        assert a1["operation"]["id"] == a2["operation"]["id"], \
            f"second stop with the same request_id got operation {a2['operation']['id']} != {a1['operation']['id']}"
        assert a1["operation"]["request_id"] == f"{run_tag}-stop", short(a1["operation"])
        cl.wait_operation(a1["operation"]["id"], timeout=30)
        cl.wait_state(iid, "stopped", timeout=30)

    with c.case("request_id still de-duplicated after an agent restart (same state dir)"):
        rid, n, r1 = need("body")
        rc = agent.stop(timeout=30)
        assert rc == 0, f"SIGTERM exit code {rc}"
        agent.start(timeout=30)
        r2 = cl.launch(body(n, request_id=rid))
        assert r2["instance"]["id"] == r1["instance"]["id"], \
            f"after restart a repeated request_id made instance {r2['instance']['id']} (first {r1['instance']['id']})"
        assert r2["operation"]["id"] == r1["operation"]["id"], "after restart: a different operation"
        assert count(n) == 1, f"{count(n)} instances named {n}"

    with c.case("launch with the controller's id: the instance has it, project/user shown"):
        import uuid as uuidlib
        want = str(uuidlib.uuid4())
        n = f"{run_tag}-id"
        r1 = cl.launch(body(n, id=want.upper(), request_id=f"{run_tag}-id", project_id="p-1", user_id="u-1"))
        assert r1["instance"]["id"] == want, f"id {r1['instance']['id']} != {want}"
        assert r1["instance"]["project_id"] == "p-1" and r1["instance"]["user_id"] == "u-1", short(r1["instance"])
        st, got = cl.get(f"/v1/instances/{want}")
        assert st == 200 and got["id"] == want, f"GET -> {st} {short(got)}"
        first["id"] = (want, n, r1)

    with c.case("same id and request_id again -> the same instance; same id, other request -> 409 id"):
        want, n, r1 = need("id")
        r2 = cl.launch(body(n, id=want, request_id=f"{run_tag}-id", project_id="p-1", user_id="u-1"))
        assert r2["operation"]["id"] == r1["operation"]["id"], "a repeated launch made a new operation"
        st, resp = cl.call("POST", "/v1/instances", body(n + "x", id=want, request_id=f"{run_tag}-id2"))
        assert st == 409 and resp["error"]["field"] == "id", f"{st} {short(resp)}"
        st, resp = cl.call("POST", "/v1/instances", body(n + "y", id=want))
        assert st == 409 and resp["error"]["field"] == "id", f"{st} {short(resp)}"
        import uuid as uuidlib
        st, resp = cl.call("POST", "/v1/instances", body(n, id=str(uuidlib.uuid4()), request_id=f"{run_tag}-id"))
        assert st == 409 and resp["error"]["field"] == "request_id", f"{st} {short(resp)}"
        assert count(n) == 1 and count(n + "x") == 0 and count(n + "y") == 0, "a refused launch made an instance"

    with c.case("a bad id -> 400 naming id, nothing made"):
        st, resp = cl.call("POST", "/v1/instances", body(f"{run_tag}-bad", id="i-123"))
        assert st == 400 and resp["error"]["field"] == "id", f"{st} {short(resp)}"
        assert count(f"{run_tag}-bad") == 0

    spec_log.check(c)

    with c.case("agent exits 0 on SIGTERM"):
        rc = agent.stop(timeout=30)
        assert rc == 0, f"exit code {rc}"


if __name__ == "__main__":
    calib.run("test_idempotency", main)
