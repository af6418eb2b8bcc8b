#!/usr/bin/env python3
"""Bytes that are not UTF-8, or an error detail cut short in the middle of a character, still
get a JSON error answer (400, the code, the field), and change nothing.

Found by fuzzing (tests/fuzz/fuzz_action): jansson quotes the bad bytes in its error text, and
an error body holding them could not be made into JSON, so the API closed the connection
without answering.
"""

import os
import sys
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import expect_error, short  # noqa: E402


def main(c: calib.Checks):
    calib.require_agent_binary()
    d = calib.tmpdir("ca-badutf8-")
    agent = calib.Agent(d / "state", hypervisor="test")
    c.agents.append(agent)
    with c.case("agent starts (test driver)", fatal=True):
        agent.start(timeout=30)
    cl = agent.client()
    some = str(uuid.uuid4())
    long_key = "\u00e9" * 100  # 200 bytes: any cut at an odd byte splits a character
    cases = [
        # jansson quotes the bad escape in its error text, with the lone byte 0xcd after it
        ("invalid escape before a byte that is not UTF-8", "/v1/instances",
         b'{"name":"w","instance_type":"t3.micro","image":{"path":"/\\\xcd\x9e-\x9d}}',
         "invalid_json", None),
        ("a string that is not UTF-8", "/v1/instances", b'{"name":"\xff\xfe"}', "invalid_json", None),
        ("unknown field of 100 non-ASCII letters", "/v1/instances",
         ('{"%s": 1}' % long_key).encode(), "unknown_field", ...),
        ("action body with an unknown field of 100 non-ASCII letters", f"/v1/instances/{some}/actions",
         ('{"action": "stop", "%s": 1}' % long_key).encode(), "unknown_field", ...),
    ]
    for what, path, body, code, field in cases:
        with c.case(f"{what}: 400 {code}, a JSON answer, nothing changed"):
            before = cl.instances()
            r = cl.request("POST", path, body)
            err = expect_error((r.status, r.json), 400, code, field, what=what)
            assert isinstance(err["message"], str) and err["message"], short(err)
            if field is ...:
                assert err["field"] and long_key.startswith(err["field"].rstrip("?")), short(err)
            assert cl.instances() == before, "instances changed"

    with c.case("agent still alive and exits 0 on SIGTERM"):
        assert agent.alive(), "agent died"
        rc = agent.stop(timeout=30)
        assert rc == 0, f"exit code {rc}"


if __name__ == "__main__":
    calib.run("test_bad_utf8", main)
