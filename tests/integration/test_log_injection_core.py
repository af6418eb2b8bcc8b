#!/usr/bin/env python3
"""No client can forge a log line or write raw control bytes into the agent's log.

Hostile values go in every place a client controls that reaches a log line: the URL
path (%0A decoded by the server), a JSON key named in an unknown-field error, a
request_id in an action body, an Idempotency-Key header with ESC/BEL bytes, a bus
command's request_id, a name with a bidi override. Afterwards every line of the log
must parse as one event (ts=, level=, msg="...", then key=token or key="quoted"), no
line may hold a control byte, and the forged marker may appear only inside a quoted
value. Request ids follow one rule everywhere: `dup\\u0000A` and `dup\\u0000B` are
refused (they no longer collide as "dup").
"""

import json
import os
import re
import sys
import time
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import expect_error, short  # noqa: E402

FORGED = "FORGED-7d1e"
LINE_RE = re.compile(
    r'^ts=\S+ level=(debug|info|warn|error) msg="(?:[^"\\]|\\.)*"'
    r'(?: [a-z_][a-z0-9_]*=(?:[^\s"=\\]+|"(?:[^"\\]|\\.)*"))*$')
QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"')


def check_log(c, path):
    raw = path.read_bytes()
    with c.case("no control byte but the line ends in the log"):
        bad = sorted({b for b in raw if (b < 0x20 and b != 0x0a) or b == 0x7f})
        assert not bad, f"control bytes in the log: {bad}"
    text = raw.decode("utf-8", errors="strict")
    lines = text.splitlines()
    with c.case(f"every log line parses as one event ({len(lines)} lines)"):
        bad = [l for l in lines if not LINE_RE.match(l)]
        assert not bad, "lines that do not parse:\n  " + "\n  ".join(bad[:5])
    with c.case("the forged marker appears only inside quoted values"):
        seen = 0
        for l in lines:
            if FORGED not in l:
                continue
            seen += 1
            outside = QUOTED_RE.sub("", l)
            assert FORGED not in outside, f"forged text outside quotes: {l}"
            assert not re.search(r"(^| )level=error msg=\"" + FORGED, outside), l
        assert seen >= 3, f"the hostile values were logged {seen} times; expected at least 3"
    with c.case("no bidi override or C1 control written raw"):
        for ch in ("\u202e", "\u0085", "\u2028"):
            assert ch not in text, f"U+{ord(ch):04X} in the log"


def main(c: calib.Checks):
    calib.require_agent_binary()
    try:
        from confluent_kafka import Producer  # noqa: F401
        have_kafka = True
    except ImportError:
        have_kafka = False
    d = calib.tmpdir("ca-logi-")
    files = calib.make_fake_files(d)
    host = f"logi-{os.getpid()}"
    prefix = f"l{uuid.uuid4().hex[:6]}."
    agent = calib.Agent(d / "state", hypervisor="test", log_level="debug",
                        extra_args=["--host-name", host, "--bus-prefix", prefix])
    c.agents.append(agent)
    with c.case("agent starts", fatal=True):
        agent.start(timeout=30)
    cl = agent.client()
    forged = f"\nts=2026-01-01T00:00:00.000Z level=error msg=\"{FORGED}\" x=1"

    with c.case("URL path with %0A: 404, path logged quoted"):
        st, body = cl.get("/v1/instances/abc%0Ats=1%20level=error%20msg=" + FORGED)
        assert st in (400, 404), f"{st} {short(body)}"

    with c.case("unknown JSON key with a newline: 400 naming it"):
        b = {"name": calib.unique("logi"), "flavor": calib.small_flavor(),
             "image": {"path": files["image"]}, forged: 1}
        r = cl.request("POST", "/v1/instances", b)
        expect_error(r, 400, "unknown_field", field=forged)

    with c.case("name with a bidi override or C1 control: 400 naming name"):
        for name in ("evil\u202etxt.exe", "nl\u0085x", "ls\u2028x"):
            b = {"name": name, "flavor": calib.small_flavor(), "image": {"path": files["image"]}}
            expect_error(cl.request("POST", "/v1/instances", b), 400, "invalid_field", field="name")
        assert not cl.instances(), "an instance was created"

    ref = None
    with c.case("reference instance launches", fatal=True):
        r = cl.launch({"name": calib.unique("logi"), "flavor": calib.small_flavor(),
                       "image": {"path": files["image"]}})
        cl.wait_operation(r["operation"]["id"], timeout=30)
        ref = r["instance"]["id"]

    with c.case("request_id with a newline in an action body: 400 naming request_id"):
        r = cl.request("POST", f"/v1/instances/{ref}/actions", {"action": "reboot", "request_id": forged})
        expect_error(r, 400, "invalid_field", field="request_id")

    with c.case("request ids dup\\u0000A and dup\\u0000B are refused, not merged"):
        for rid in ("dup\u0000A", "dup\u0000B"):
            r = cl.request("POST", f"/v1/instances/{ref}/actions", {"action": "reboot", "request_id": rid})
            expect_error(r, 400, "invalid_field", field="request_id")

    with c.case("Idempotency-Key with ESC and BEL: 400 naming request_id"):
        r = cl.request_raw("POST", f"/v1/instances/{ref}/actions", {"action": "reboot"},
                           headers={"Idempotency-Key": f"k\x1b[2J\x07{FORGED}"})
        expect_error(r, 400, "invalid_field", field="request_id")
        r = cl.request_raw("DELETE", f"/v1/instances/{ref}", None,
                           headers={"Idempotency-Key": f"k\x1b]0;{FORGED}\x07"})
        expect_error(r, 400, "invalid_field", field="request_id")
        assert cl.instance(ref)["state"] == "running", "the instance changed"

    if have_kafka:
        from confluent_kafka import Producer
        with c.case("bus command with a forged request_id is rejected and logged quoted"):
            calib.wait_for(lambda: cl.host()["bus"]["up"], 30, what="bus up")
            bs = cl.host()["bus"]["bootstrap_servers"]
            p = Producer({"bootstrap.servers": bs, "linger.ms": 0})
            done = {}
            p.produce(f"{prefix}compute.{host}",
                      json.dumps({"op": "reboot", "request_id": forged + "\x1b\x07",
                                  "instance_id": ref}).encode(),
                      on_delivery=lambda err, m: done.setdefault("err", err))
            deadline = time.monotonic() + 15
            while "err" not in done and time.monotonic() < deadline:
                p.poll(0.1)
            assert done.get("err") is None and "err" in done, f"produce: {done}"

            def rejected():
                t = agent.log_path.read_text(errors="replace")
                return "bus command rejected" in t
            calib.wait_for(rejected, 30, what="the rejection in the log")
    else:
        c.check(True, "bus case skipped: python3-confluent-kafka missing")

    with c.case("agent stops cleanly", fatal=True):
        assert agent.stop() == 0
    check_log(c, agent.log_path)


if __name__ == "__main__":
    calib.run("log_injection", main)
