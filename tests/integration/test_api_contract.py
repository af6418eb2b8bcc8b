#!/usr/bin/env python3
"""Every endpoint's real answer (libvirt test driver) validates against api-spec/openapi.yaml.

Covers: /healthz, /v1/host, /v1/networks (none configured; with networks:
test_computectl_net.py and test_net_ports_test_driver.py), list, launch (flavor+image,
instance_type+kernel+user_data, kernel without initrd/cmdline), show by UUID and by EC2 id,
stop/start/reboot, terminate, operations, and the error answers (404, 405, 400, unknown path).
"""

import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import EC2_RE, UUID_RE, short  # noqa: E402


def api(cl, method, path, body=None, expect=200, **kw):
    """Call and assert the status; return the body. (The client's SpecLog checks every answer
    against openapi.yaml; the test ends with one check per endpoint and status.)"""
    st, resp = cl.call(method, path, body, **kw)
    assert st == expect, f"{method} {path} -> {st} {short(resp)} (expected {expect})"
    return resp


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def main(c: calib.Checks):
    calib.require_agent_binary()
    d = calib.tmpdir("ca-contract-")
    files = calib.make_fake_files(d)
    agent = calib.Agent(d / "state", hypervisor="test")
    c.agents.append(agent)

    with c.case("openapi.yaml loads and every component converts to a valid JSON Schema", fatal=True):
        sp = calib.spec()
        for name in sp.definitions:
            import jsonschema
            jsonschema.Draft7Validator.check_schema(sp.schema_for(name))
        try:
            from openapi_spec_validator import validate as oas_validate  # optional (not in Debian)
        except ImportError:
            oas_validate = None
        if oas_validate is not None:
            oas_validate(sp.doc)

    with c.case("openapi.yaml under a strict OAS 3.0.3 reading (nullable with a type beside it, ...)"):
        problems = calib.strict_oas303_problems(calib.spec().doc)
        assert not problems, "; ".join(problems[:10])
    with c.case("the strict reading refuses what redocly's nullable-type-sibling refuses"):
        bad = {"components": {"schemas": {"A": {"type": "object", "properties": {
            "x": {"allOf": [{"$ref": "#/components/schemas/B"}], "nullable": True},
            "y": {"nullable": True},
            "z": {"type": "string", "enum": ["a"], "nullable": True}}}}},
            "paths": {"/p": {"get": {"parameters": [{"name": "q", "in": "query",
                                                      "schema": {"nullable": True}}]}}}}
        got = calib.strict_oas303_problems(bad)
        assert len(got) == 4, got
        try:
            calib._convert({"allOf": [{"$ref": "#/components/schemas/B"}], "nullable": True})
            raise AssertionError("_convert took nullable without type")
        except ValueError:
            pass
    # `redocly lint` itself where it is installed (CA_REDOCLY=path, or on PATH): not a
    # dependency of the suite (npm at test time is neither cheap nor robust offline); the
    # check above fails on the same nullable mistakes without it.
    redocly = os.environ.get("CA_REDOCLY") or shutil.which("redocly")
    with c.case(f"redocly lint api-spec/openapi.yaml ({redocly or 'not installed: skipped'})"):
        if redocly:
            p = subprocess.run([redocly, "lint", "--config", str(calib.ROOT / "api-spec/redocly.yaml"),
                                str(calib.SPEC_PATH), "--format=stylish"], capture_output=True, text=True,
                               timeout=300)
            assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]

    with c.case("agent starts with --hypervisor test and answers /healthz", fatal=True):
        agent.start(timeout=30)
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)

    with c.case("GET /healthz -> 200 {status: ok}"):
        body = api(cl, "GET", "/healthz")
        assert body == {"status": "ok"}, short(body)

    with c.case("GET /v1/networks -> 200 NetworkList (none configured: empty)"):
        body = api(cl, "GET", "/v1/networks")
        assert body == {"networks": []}, short(body)

    host0 = None
    with c.case("GET /v1/host -> 200 Host", fatal=True):
        host0 = api(cl, "GET", "/v1/host")
    with c.case("host: hypervisor test, libvirt test:///default connected, enabled"):
        assert host0["hypervisor"] == "test", short(host0)
        assert host0["libvirt_uri"] == "test:///default", short(host0)
        assert host0["libvirt"]["connected"] is True, short(host0)
        assert host0["state"] == "enabled", short(host0)

    with c.case("GET /v1/instances -> 200 InstanceList"):
        lst = api(cl, "GET", "/v1/instances")
        base_ids = {i["id"] for i in lst["instances"]}

    # -- launch: flavor + image ------------------------------------------------
    name1 = calib.unique("contract-img")
    flavor = {"vcpus": 1, "memory_mb": 64, "disk_gb": 1}
    r1 = None
    with c.case("POST /v1/instances (flavor + image) -> 202", fatal=True):
        r1 = cl.launch({"name": name1, "flavor": flavor, "image": {"path": files["image"]}})
    inst1, op1 = r1["instance"], r1["operation"]
    with c.case("launch answer: ids, ec2_id ^i-[0-9a-f]{17}$, echo of name/flavor/boot, launch op"):
        assert UUID_RE.match(inst1["id"]), inst1["id"]
        assert EC2_RE.match(inst1["ec2_id"]), inst1["ec2_id"]
        assert inst1["name"] == name1, short(inst1)
        assert inst1["flavor"] == flavor, short(inst1)
        assert inst1["boot"] == {"image": {"path": files["image"]}}, short(inst1["boot"])
        assert inst1["instance_type"] is None, short(inst1)
        assert inst1["has_user_data"] is False, short(inst1)
        assert inst1["state"] in ("pending", "running"), short(inst1)
        assert op1["type"] == "launch" and op1["instance_id"] == inst1["id"], short(op1)
        assert UUID_RE.match(op1["id"]) and op1["id"] != inst1["id"], short(op1)
        assert ts(inst1["updated_at"]) >= ts(inst1["created_at"]), short(inst1)

    with c.case("console_log: null under the test driver (it keeps no console)"):
        # the test driver keeps no serial console; real drivers give an absolute path
        # (test_restart_core.py reads the guest's boot marker from it)
        assert inst1["console_log"] is None or os.path.isabs(inst1["console_log"]), \
            f"console_log {inst1['console_log']!r}"

    with c.case("GET /v1/operations/{id} -> 200 Operation (launch)"):
        op = api(cl, "GET", f"/v1/operations/{op1['id']}")
        assert op["id"] == op1["id"] and op["type"] == "launch", short(op)

    with c.case("launch operation succeeds, instance running"):
        op = cl.wait_operation(op1["id"], timeout=30)
        assert op["state"] == "succeeded" and op["error"] is None, short(op)
        inst = cl.wait_state(inst1["id"], "running", timeout=30)

    with c.case("GET /v1/instances/{uuid} -> 200 Instance"):
        inst = api(cl, "GET", f"/v1/instances/{inst1['id']}")
        assert inst["id"] == inst1["id"] and inst["ec2_id"] == inst1["ec2_id"], short(inst)
        assert inst["name"] == name1 and inst["fault"] is None, short(inst)

    with c.case("GET /v1/instances/{ec2_id} -> 200 the same Instance"):
        inst = api(cl, "GET", f"/v1/instances/{inst1['ec2_id']}")
        assert inst["id"] == inst1["id"], short(inst)

    # -- launch: instance_type + kernel + user_data ---------------------------------
    name2 = calib.unique("contract-kern")
    kern = {"path": files["kernel"], "initrd": files["initrd"], "cmdline": "console=ttyS0 panic=-1 quiet"}
    r2 = None
    with c.case("POST /v1/instances (instance_type t3.micro + kernel + user_data) -> 202"):
        r2 = api(cl, "POST", "/v1/instances",
                 {"name": name2, "instance_type": "t3.micro", "kernel": kern,
                  "user_data": calib.b64(b"#!/bin/sh\necho hello\n")}, expect=202)
        i2 = r2["instance"]
        assert i2["instance_type"] == "t3.micro", short(i2)
        assert i2["boot"] == {"kernel": kern}, short(i2["boot"])
        assert i2["has_user_data"] is True, short(i2)
        assert EC2_RE.match(i2["ec2_id"]) and i2["ec2_id"] != inst1["ec2_id"], short(i2)
        assert i2["id"] != inst1["id"], short(i2)
    if r2:
        with c.case("t3.micro instance reaches running with its catalogue flavor"):
            cl.wait_operation(r2["operation"]["id"], timeout=30)
            i2 = cl.wait_state(r2["instance"]["id"], "running", timeout=30)
            assert i2["flavor"]["vcpus"] >= 1 and i2["flavor"]["memory_mb"] >= 16, short(i2)

    name3 = calib.unique("contract-kern-min")
    with c.case("POST /v1/instances (kernel without initrd/cmdline) -> 202, shows initrd/cmdline null"):
        r3 = api(cl, "POST", "/v1/instances",
                 {"name": name3, "flavor": {"vcpus": 1, "memory_mb": 32, "disk_gb": 0},
                  "kernel": {"path": files["kernel"]}}, expect=202)
        b = r3["instance"]["boot"]
        assert b == {"kernel": {"path": files["kernel"], "initrd": None, "cmdline": None}}, short(b)
        cl.wait_operation(r3["operation"]["id"], timeout=30)

    with c.case("GET /v1/instances lists the new instances, each validating"):
        lst = api(cl, "GET", "/v1/instances")
        ids = [i["id"] for i in lst["instances"]]
        assert inst1["id"] in ids, f"{inst1['id']} not in {ids}"
        if r2:
            assert r2["instance"]["id"] in ids, f"{r2['instance']['id']} not in {ids}"
        assert len(ids) == len(set(ids)), f"duplicate ids in list: {ids}"
        assert len(set(ids) - base_ids) == 3, f"expected 3 new instances, got {set(ids) - base_ids}"

    with c.case("GET /v1/host after launches: allocated grew by the flavors"):
        h = api(cl, "GET", "/v1/host")
        grew_vcpus = h["allocated"]["vcpus"] - host0["allocated"]["vcpus"]
        grew_mem = h["allocated"]["memory_mb"] - host0["allocated"]["memory_mb"]
        exp_vcpus = 1 + 1 + (r2["instance"]["flavor"]["vcpus"] if r2 else 0)
        exp_mem = 64 + 32 + (r2["instance"]["flavor"]["memory_mb"] if r2 else 0)
        assert grew_vcpus == exp_vcpus, f"allocated.vcpus grew by {grew_vcpus}, expected {exp_vcpus}: {short(h)}"
        assert grew_mem == exp_mem, f"allocated.memory_mb grew by {grew_mem}, expected {exp_mem}: {short(h)}"
        assert h["instances"] == host0["instances"] + 3, f"instances {host0['instances']} -> {h['instances']}"

    # -- actions ------------------------------------------------------------
    iid = inst1["id"]
    for action, want, task in (("stop", "stopped", "stopping"), ("start", "running", "starting"),
                               ("reboot", "running", "rebooting")):
        with c.case(f"POST /v1/instances/{{id}}/actions {action} -> 202, op {action} succeeds, state {want}"):
            body = {"action": action}
            if action == "stop":
                body["timeout"] = 5
            r = api(cl, "POST", f"/v1/instances/{iid}/actions", body, expect=202)
            op = r["operation"]
            assert op["type"] == action and op["instance_id"] == iid, short(op)
            assert r["instance"]["id"] == iid, short(r["instance"])
            assert r["instance"]["task_state"] in (task, None), short(r["instance"])
            op = cl.wait_operation(op["id"], timeout=60)
            assert op["state"] == "succeeded", short(op)
            inst = cl.wait_state(iid, want, timeout=30)
            assert ts(inst["updated_at"]) >= ts(inst["created_at"]), short(inst)

    with c.case("POST actions stop with force=true -> 202, stopped; then start"):
        r = api(cl, "POST", f"/v1/instances/{iid}/actions", {"action": "stop", "force": True}, expect=202)
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "succeeded", short(op)
        cl.wait_state(iid, "stopped", timeout=30)
        r = api(cl, "POST", f"/v1/instances/{iid}/actions", {"action": "start"}, expect=202)
        cl.wait_operation(r["operation"]["id"], timeout=30)
        cl.wait_state(iid, "running", timeout=30)

    # -- terminate ------------------------------------------------------------
    with c.case("DELETE /v1/instances/{id} -> 202, op terminate succeeds, state terminated"):
        r = api(cl, "DELETE", f"/v1/instances/{iid}", expect=202)
        assert r["operation"]["type"] == "terminate" and r["instance"]["id"] == iid, short(r)
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "succeeded", short(op)
        inst = cl.wait_state(iid, "terminated", timeout=30)

    with c.case("DELETE by ec2 id -> 202 and terminated"):
        if not r2:
            raise AssertionError("no second instance (its launch failed above)")
        i2 = r2["instance"]
        r = api(cl, "DELETE", f"/v1/instances/{i2['ec2_id']}", expect=202)
        assert r["instance"]["id"] == i2["id"], short(r)
        cl.wait_operation(r["operation"]["id"], timeout=30)
        cl.wait_state(i2["id"], "terminated", timeout=30)

    # -- errors ------------------------------------------------------------------
    missing = str(uuid.uuid4())
    with c.case("GET /v1/instances/<unknown uuid> -> 404 not_found (Error)"):
        st, b = cl.call("GET", f"/v1/instances/{missing}")
        calib.expect_error((st, b), 404, "not_found", what="unknown instance")
    with c.case("GET /v1/operations/<unknown uuid> -> 404 not_found (Error)"):
        st, b = cl.call("GET", f"/v1/operations/{missing}")
        calib.expect_error((st, b), 404, "not_found", what="unknown operation")
    with c.case("GET /v1/nothing-here -> 404 not_found (Error)"):
        calib.expect_error(cl.call("GET", "/v1/nothing-here"), 404, "not_found", what="unknown path")
    with c.case("PUT /v1/host -> 405 method_not_allowed (Error)"):
        calib.expect_error(cl.call("PUT", "/v1/host", {}), 405, "method_not_allowed", what="PUT /v1/host")
    with c.case("PATCH /v1/instances -> 405 method_not_allowed (Error)"):
        calib.expect_error(cl.call("PATCH", "/v1/instances", {}), 405, "method_not_allowed",
                           what="PATCH /v1/instances")
    with c.case("POST /v1/instances with broken JSON -> 400 invalid_json (documented)"):
        st, b = cl.call("POST", "/v1/instances", '{"name": ')
        calib.expect_error((st, b), 400, "invalid_json", field=None, what="broken JSON")
    with c.case("actions on a terminated instance -> 409 conflict (documented)"):
        st, b = cl.call("POST", f"/v1/instances/{iid}/actions", {"action": "start"})
        calib.expect_error((st, b), 409, "conflict", what="start terminated")

    with c.case("GET /v1/host at the end: allocated holds only the third launch"):
        h = api(cl, "GET", "/v1/host")
        assert h["allocated"]["vcpus"] - host0["allocated"]["vcpus"] == 1, short(h)
        assert h["allocated"]["memory_mb"] - host0["allocated"]["memory_mb"] == 32, short(h)

    spec_log.check_endpoints(c)

    with c.case("agent exits 0 on SIGTERM"):
        rc = agent.stop(timeout=30)
        assert rc == 0, f"exit code {rc}"


if __name__ == "__main__":
    calib.run("test_api_contract", main)
