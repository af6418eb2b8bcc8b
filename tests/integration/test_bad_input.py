#!/usr/bin/env python3
"""Bad requests are refused with the right 4xx, code and field, and change nothing.

After every bad request the instance list, the host's allocated figures and instance
count, and the state of a reference instance must be exactly as before. Valid but
unusual input (names with <, &, quotes, non-ASCII; boundary sizes) must be accepted
and shown back exactly.
"""

import json
import os
import sys
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import expect_error, short  # noqa: E402

DROP = object()


def main(c: calib.Checks):
    calib.require_agent_binary()
    d = calib.tmpdir("ca-badinput-")
    files = calib.make_fake_files(d)
    agent = calib.Agent(d / "state", hypervisor="test")
    c.agents.append(agent)
    with c.case("agent starts (test driver)", fatal=True):
        agent.start(timeout=30)
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)

    def body(**over):
        b = {"name": calib.unique("bad"), "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
             "image": {"path": files["image"]}}
        for k, v in over.items():
            if v is DROP:
                b.pop(k, None)
            else:
                b[k] = v
        return b

    def flavor(**over):
        f = {"vcpus": 1, "memory_mb": 64, "disk_gb": 1}
        for k, v in over.items():
            if v is DROP:
                f.pop(k, None)
            else:
                f[k] = v
        return f

    ref = None
    with c.case("reference instance launches and runs", fatal=True):
        r = cl.launch(body(name=calib.unique("ref")))
        cl.wait_operation(r["operation"]["id"], timeout=30)
        ref = cl.wait_state(r["instance"]["id"], "running", timeout=30)

    def snapshot():
        insts = cl.instances()
        h = cl.host()
        me = cl.instance(ref["id"])
        return {"ids": sorted(i["id"] for i in insts), "allocated": h["allocated"],
                "instances": h["instances"], "ref": (me["state"], me["task_state"])}

    # (what, method, path, body, headers, status, codes, field)
    L = "/v1/instances"
    A = f"/v1/instances/{ref['id']}/actions"
    too_long_path = "/" + "a" * 4096
    cases = [
        ("malformed JSON", "POST", L, '{"name": "x", "flavor": {', None, 400, "invalid_json", None),
        ("empty body", "POST", L, "", None, 400, "invalid_json", None),
        ("trailing garbage after the object", "POST", L, json.dumps(body()) + " xyz", None, 400, "invalid_json", None),
        ("body is a JSON array", "POST", L, "[]", None, 400, ("invalid_json", "invalid_field"), ...),
        ("body is a JSON string", "POST", L, '"hello"', None, 400, ("invalid_json", "invalid_field"), ...),
        ("unknown top-level field", "POST", L, body(bogus=1), None, 400, "unknown_field", "bogus"),
        ("unknown field in flavor", "POST", L, body(flavor=flavor(gpus=1)), None, 400, "unknown_field", "flavor.gpus"),
        ("unknown field in image", "POST", L, body(image={"path": files["image"], "format": "raw"}), None,
         400, "unknown_field", "image.format"),
        ("missing name", "POST", L, body(name=DROP), None, 400, "missing_field", "name"),
        ("name empty", "POST", L, body(name=""), None, 400, "invalid_field", "name"),
        ("name 64 characters", "POST", L, body(name="n" * 64), None, 400, "invalid_field", "name"),
        ("name is a number", "POST", L, body(name=5), None, 400, "invalid_field", "name"),
        ("name is null", "POST", L, body(name=None), None, 400, ("invalid_field", "missing_field"), "name"),
        ("name with \\u0001", "POST", L, body(name="bad\u0001name"), None, 400, "invalid_field", "name"),
        ("name with newline", "POST", L, body(name="bad\nname"), None, 400, "invalid_field", "name"),
        ("name with tab", "POST", L, body(name="bad\tname"), None, 400, "invalid_field", "name"),
        ("name with \\u0000", "POST", L, body(name="bad\u0000name"), None, 400, "invalid_field", "name"),
        ("vcpus as string", "POST", L, body(flavor=flavor(vcpus="2")), None, 400, "invalid_field", "flavor.vcpus"),
        ("vcpus -1", "POST", L, body(flavor=flavor(vcpus=-1)), None, 400, "invalid_field", "flavor.vcpus"),
        ("vcpus 0", "POST", L, body(flavor=flavor(vcpus=0)), None, 400, "invalid_field", "flavor.vcpus"),
        ("vcpus 257", "POST", L, body(flavor=flavor(vcpus=257)), None, 400, "invalid_field", "flavor.vcpus"),
        ("vcpus 1.5", "POST", L, body(flavor=flavor(vcpus=1.5)), None, 400, "invalid_field", "flavor.vcpus"),
        ("vcpus true", "POST", L, body(flavor=flavor(vcpus=True)), None, 400, "invalid_field", "flavor.vcpus"),
        ("vcpus null", "POST", L, body(flavor=flavor(vcpus=None)), None, 400,
         ("invalid_field", "missing_field"), "flavor.vcpus"),
        ("vcpus beyond int64", "POST", L,
         json.dumps(body()).replace('"vcpus": 1', '"vcpus": 123456789012345678901234567890'), None,
         400, ("invalid_field", "invalid_json"), ("flavor.vcpus", None)),
        ("memory_mb 1e12", "POST", L, json.dumps(body()).replace('"memory_mb": 64', '"memory_mb": 1e12'), None,
         400, "invalid_field", "flavor.memory_mb"),
        ("memory_mb 1000000000000", "POST", L, body(flavor=flavor(memory_mb=10 ** 12)), None,
         400, "invalid_field", "flavor.memory_mb"),
        ("memory_mb 15", "POST", L, body(flavor=flavor(memory_mb=15)), None, 400, "invalid_field", "flavor.memory_mb"),
        ("memory_mb 4194305", "POST", L, body(flavor=flavor(memory_mb=4194305)), None,
         400, "invalid_field", "flavor.memory_mb"),
        ("memory_mb -64", "POST", L, body(flavor=flavor(memory_mb=-64)), None, 400, "invalid_field", "flavor.memory_mb"),
        ("disk_gb -1", "POST", L, body(flavor=flavor(disk_gb=-1)), None, 400, "invalid_field", "flavor.disk_gb"),
        ("disk_gb 65537", "POST", L, body(flavor=flavor(disk_gb=65537)), None, 400, "invalid_field", "flavor.disk_gb"),
        ("flavor missing vcpus", "POST", L, body(flavor=flavor(vcpus=DROP)), None, 400, "missing_field", "flavor.vcpus"),
        ("flavor is a string", "POST", L, body(flavor="small"), None, 400, "invalid_field", "flavor"),
        ("both flavor and instance_type", "POST", L, body(instance_type="t3.micro"), None,
         400, "invalid_field", ("flavor", "instance_type")),
        ("neither flavor nor instance_type", "POST", L, body(flavor=DROP), None,
         400, "missing_field", ("flavor", "instance_type")),
        ("unknown instance_type", "POST", L, body(flavor=DROP, instance_type="t9.gigantic"), None,
         400, "invalid_field", "instance_type"),
        ("instance_type is a number", "POST", L, body(flavor=DROP, instance_type=3), None,
         400, "invalid_field", "instance_type"),
        ("user_data not base64", "POST", L, body(user_data="this is not base64!!"), None,
         400, "invalid_field", "user_data"),
        ("user_data 16385 bytes decoded", "POST", L, body(user_data=calib.b64(b"x" * 16385)), None,
         400, "invalid_field", "user_data"),
        ("user_data is a number", "POST", L, body(user_data=12), None, 400, "invalid_field", "user_data"),
        ("relative image path", "POST", L, body(image={"path": "images/base.raw"}), None,
         400, "invalid_field", "image.path"),
        ("empty image path", "POST", L, body(image={"path": ""}), None, 400, "invalid_field", "image.path"),
        ("image path 4097 characters", "POST", L, body(image={"path": too_long_path}), None,
         400, "invalid_field", "image.path"),
        ("image without path", "POST", L, body(image={}), None, 400, "missing_field", "image.path"),
        ("image path is a number", "POST", L, body(image={"path": 7}), None, 400, "invalid_field", "image.path"),
        ("kernel with a bad image (image is then the disk)", "POST", L,
         body(image={"path": "disk.raw"}, kernel={"path": files["kernel"]}), None,
         400, "invalid_field", "image.path"),
        ("neither image nor kernel", "POST", L, body(image=DROP), None, 400, "missing_field", ("image", "kernel")),
        ("relative kernel path", "POST", L, body(image=DROP, kernel={"path": "vmlinuz"}), None,
         400, "invalid_field", "kernel.path"),
        ("relative initrd path", "POST", L,
         body(image=DROP, kernel={"path": files["kernel"], "initrd": "initrd.gz"}), None,
         400, "invalid_field", "kernel.initrd"),
        ("cmdline 2049 characters", "POST", L,
         body(image=DROP, kernel={"path": files["kernel"], "cmdline": "x" * 2049}), None,
         400, "invalid_field", "kernel.cmdline"),
        ("unknown field in kernel", "POST", L,
         body(image=DROP, kernel={"path": files["kernel"], "dtb": "/x"}), None, 400, "unknown_field", "kernel.dtb"),
        ("request_id is a number", "POST", L, body(request_id=5), None, 400, "invalid_field", "request_id"),
        ("body of 65537 bytes", "POST", L, None, None, 413, "payload_too_large", ...),
        ("body of 200000 bytes", "POST", L, body(user_data="A" * 200000), None, 413, "payload_too_large", ...),
        ("Content-Type text/plain", "POST", L, json.dumps(body()), {"Content-Type": "text/plain"},
         (400, 415), None, ...),
        ("Content-Type application/x-www-form-urlencoded", "POST", L, json.dumps(body()),
         {"Content-Type": "application/x-www-form-urlencoded"}, (400, 415), None, ...),
        # the media type is parsed exactly: a longer type that starts the same is not JSON
        ("Content-Type application/jsonfoo", "POST", L, json.dumps(body()),
         {"Content-Type": "application/jsonfoo"}, 415, "unsupported_media_type", ...),
        ("Content-Type application/json-patch+json", "POST", L, json.dumps(body()),
         {"Content-Type": "application/json-patch+json"}, 415, "unsupported_media_type", ...),
        ("Content-Type application/json/x", "POST", L, json.dumps(body()),
         {"Content-Type": "application/json/x"}, 415, "unsupported_media_type", ...),
        ("Content-Type application/json; charset=latin1", "POST", L, json.dumps(body()),
         {"Content-Type": "application/json; charset=latin1"}, 415, "unsupported_media_type", ...),
        ("Content-Type application/json junk", "POST", L, json.dumps(body()),
         {"Content-Type": "application/json junk"}, 415, "unsupported_media_type", ...),
        # actions
        ("action: malformed JSON", "POST", A, '{"action": ', None, 400, "invalid_json", None),
        ("action: missing action", "POST", A, {}, None, 400, "missing_field", "action"),
        ("action: unknown action", "POST", A, {"action": "explode"}, None, 400, "invalid_field", "action"),
        ("action: action is a number", "POST", A, {"action": 1}, None, 400, "invalid_field", "action"),
        ("action: unknown field", "POST", A, {"action": "stop", "bogus": True}, None, 400, "unknown_field", "bogus"),
        ("action: timeout as string", "POST", A, {"action": "stop", "timeout": "5"}, None,
         400, "invalid_field", "timeout"),
        ("action: timeout -1", "POST", A, {"action": "stop", "timeout": -1}, None, 400, "invalid_field", "timeout"),
        ("action: force as string", "POST", A, {"action": "stop", "force": "yes"}, None,
         400, "invalid_field", "force"),
        ("action: request_id is a number", "POST", A, {"action": "stop", "request_id": 9}, None,
         400, "invalid_field", "request_id"),
        ("action: body over 64 KiB", "POST", A, {"action": "stop", "request_id": "r" * 70000}, None,
         413, "payload_too_large", ...),
        ("action: Content-Type text/plain", "POST", A, json.dumps({"action": "stop"}),
         {"Content-Type": "text/plain"}, (400, 415), None, ...),
        ("action on unknown uuid", "POST", f"/v1/instances/{uuid.uuid4()}/actions", {"action": "stop"}, None,
         404, "not_found", ...),
        ("action on unknown ec2 id", "POST", "/v1/instances/i-0123456789abcdef0/actions", {"action": "stop"}, None,
         404, "not_found", ...),
        # unknown ids
        ("GET unknown uuid", "GET", f"/v1/instances/{uuid.uuid4()}", None, None, 404, "not_found", ...),
        ("GET unknown ec2 id", "GET", "/v1/instances/i-0123456789abcdef0", None, None, 404, "not_found", ...),
        ("GET malformed id", "GET", "/v1/instances/not-an-id", None, None, 404, "not_found", ...),
        ("GET upper-case ec2 id of nothing", "GET", "/v1/instances/I-0123456789ABCDEF0", None, None,
         404, "not_found", ...),
        ("DELETE unknown uuid", "DELETE", f"/v1/instances/{uuid.uuid4()}", None, None, 404, "not_found", ...),
        ("DELETE unknown ec2 id", "DELETE", "/v1/instances/i-0123456789abcdef0", None, None, 404, "not_found", ...),
        ("GET unknown operation", "GET", f"/v1/operations/{uuid.uuid4()}", None, None, 404, "not_found", ...),
        ("GET malformed operation id", "GET", "/v1/operations/zzz", None, None, 404, "not_found", ...),
        ("GET operation by an instance id", "GET", f"/v1/operations/{ref['id']}", None, None, 404, "not_found", ...),
        ("GET unknown path", "GET", "/v2/instances", None, None, 404, "not_found", ...),
        ("PUT /v1/instances", "PUT", L, body(), None, 405, "method_not_allowed", ...),
        ("POST /v1/host", "POST", "/v1/host", {}, None, 405, "method_not_allowed", ...),
        ("POST /v1/instances/{id}", "POST", f"/v1/instances/{ref['id']}", body(), None,
         405, "method_not_allowed", ...),
        ("GET /v1/instances/{id}/actions", "GET", A, None, None, 405, "method_not_allowed", ...),
    ]

    before = None
    with c.case("snapshot of the API state", fatal=True):
        before = snapshot()

    for (what, method, path, b, headers, status, codes, field) in cases:
        with c.case(f"{what}: {method} -> {status if isinstance(status, int) else '/'.join(map(str, status))} "
                    f"{codes if isinstance(codes, str) or codes is None else '/'.join(codes)}"
                    f"{'' if field is ... else ' field=' + str(field)}; nothing changed"):
            before = snapshot()  # per case, so that one failure does not spill into the next
            if what == "body of 65537 bytes":
                # A valid-looking object padded with spaces to 65537 bytes.
                raw = json.dumps(body())
                b = raw[:-1] + " " * (65537 - len(raw)) + "}"
                assert len(b.encode()) == 65537
            if status == 413:
                r = cl.request_raw(method, path, b, headers=headers)
            else:
                r = cl.request(method, path, b, headers=headers)
            expect_error((r.status, r.json), status, codes, field, what=what)
            after = snapshot()
            assert after == before, f"API state changed: before {short(before)} after {short(after)}"

    with c.case("a 65536-byte body is not refused as too large (unknown_field, not 413)"):
        before = snapshot()
        raw = json.dumps(body(bogus=1))
        b = raw[:-1] + " " * (65536 - len(raw)) + "}"
        assert len(b.encode()) == 65536
        expect_error(cl.call("POST", L, b), 400, "unknown_field", "bogus", what="65536 bytes")
        assert snapshot() == before, "API state changed"

    with c.case("insufficient resources: 409 insufficient_resources field flavor*, nothing changed"):
        before = snapshot()
        h = cl.host()
        mem = h["free"]["memory_mb"] + 1024
        if mem <= 4194304:
            fl = flavor(memory_mb=mem)
        else:
            fl = flavor(vcpus=min(256, h["free"]["vcpus"] + 1))
        st, rb = cl.call("POST", L, body(flavor=fl))
        err = expect_error((st, rb), 409, "insufficient_resources", what=f"flavor {fl} on free {h['free']}")
        assert err["field"] is not None and (err["field"] == "flavor" or err["field"].startswith("flavor.")), \
            f"field {err['field']!r} should name the flavor"
        assert snapshot() == before, "API state changed"

    # ---- valid but unusual input --------------------------------------------------------------
    launched = []

    def launch_ok(what, b, headers=None, check=None):
        with c.case(what):
            st, r = cl.call("POST", L, b, headers=headers)
            assert st == 202, f"POST {short(b, 200)} -> {st} {short(r)}"
            launched.append(r["instance"]["id"])
            op = cl.wait_operation(r["operation"]["id"], timeout=30)
            assert op["state"] == "succeeded", f"launch failed: {short(op)}"
            inst = cl.wait_state(r["instance"]["id"], "running", timeout=30)
            if check:
                check(r["instance"], inst)
            return inst

    def name_back(n):
        def chk(first, inst):
            assert first["name"] == n, f"launch answer name {first['name']!r} != {n!r}"
            assert inst["name"] == n, f"GET name {inst['name']!r} != {n!r}"
            listed = [i["name"] for i in cl.instances() if i["id"] == inst["id"]]
            assert listed == [n], f"list shows {listed!r}, expected [{n!r}]"
        return chk

    for n in ('<b>&amp; "quoted" \'single\'</b>', "]]><!-- x' or '1'='1 --", "naïve-名前-🚀",
              "a/b\\c d%s%n${x}", "n" * 63, "&lt;", "x"):
        launch_ok(f"valid name {n!r} launches and shows back exactly", body(name=n), check=name_back(n))

    def has_user_data(first, inst):
        assert first["has_user_data"] is True and inst["has_user_data"] is True, short(inst)

    def cmdline_back(first, inst):
        got = inst["boot"].get("kernel", {}).get("cmdline")
        assert got == "c" * 2048, f"cmdline shown back differs ({len(got or '')} chars): {short(inst['boot'])}"

    launch_ok("user_data of exactly 16384 bytes decoded is accepted",
              body(user_data=calib.b64(bytes(range(256)) * 64)), check=has_user_data)
    launch_ok("Content-Type 'application/json; charset=utf-8' is accepted", json.dumps(body()),
              headers={"Content-Type": "application/json; charset=utf-8"})
    for ct in ("Application/JSON", "application/json;charset=UTF-8", 'application/json; charset="utf-8"',
               "application/json ; foo=bar"):
        launch_ok(f"Content-Type {ct!r} is accepted", json.dumps(body()), headers={"Content-Type": ct})
    launch_ok("flavor at the small bounds (memory_mb 16, disk_gb 0) is accepted",
              body(flavor=flavor(memory_mb=16, disk_gb=0)))
    launch_ok("kernel cmdline of exactly 2048 characters is accepted and shown back",
              body(image=DROP, kernel={"path": files["kernel"], "cmdline": "c" * 2048}), check=cmdline_back)

    with c.case("the reference instance is untouched (running, no task)"):
        me = cl.instance(ref["id"])
        assert (me["state"], me["task_state"]) == ("running", None), short(me)

    spec_log.check(c)

    with c.case("agent still alive and exits 0 on SIGTERM"):
        assert agent.alive(), "agent died"
        rc = agent.stop(timeout=30)
        assert rc == 0, f"exit code {rc}"


if __name__ == "__main__":
    calib.run("test_bad_input", main)
