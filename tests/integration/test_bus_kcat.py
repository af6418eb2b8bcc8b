#!/usr/bin/env python3
"""The bus as an operator reaches it, with kcat (Debian's kcat, librdkafka inside) and nothing
of ours on the client side (issue 11: "kcat for the bus").

The agent (test driver) runs its embedded mock cluster; its address comes from GET /v1/host
(bus.bootstrap_servers), as an operator would read it with computectl host. Then, with kcat only:
- `kcat -L -J`: the four topics of asyncapi.yaml exist, commands and heartbeat 1 partition,
  events and telemetry 4;
- `kcat -C -J -u -o beginning` left following <P>compute.events (as `kcat -C ... | jq` would);
- `kcat -P` a launch command (the test driver), then a stop (keyed by the instance), a start and
  a terminate: each one's result event is seen by the follower, in order per instance, keyed
  by the instance UUID;
- a command that is not JSON, produced by kcat: one command.rejected invalid_json;
- `kcat -C -e` on events reads the same messages as the follower, to the end, and exits 0;
- `kcat -C -e -f '%k\\t%s\\n'` on heartbeat and telemetry (lz4): keyed by host / instance;
- every message read is the documented JSON: exactly one message of its channel in
  api-spec/asyncapi.yaml, its key matching the message's Kafka binding; every command sent
  matches the Command schema.
SKIPs when kcat is not installed, or (saying why) when kcat cannot reach the mock cluster."""

import json
import os
import shutil
import subprocess
import sys
import uuid as uuidlib

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
# librdkafka 2.0.2's mock cluster answers a fetch only when its wait expires: keep it short
FAST = ["-X", "fetch.wait.max.ms=100", "-X", "socket.timeout.ms=10000"]


def kcat(args, inp=None, timeout=60):
    """Run kcat with args; (rc, stdout, stderr)."""
    p = subprocess.run([KCAT, *args], input=inp, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def parse_json_lines(text):
    """kcat -J output: one JSON envelope per line (topic, partition, offset, key, payload)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            env = json.loads(line)
            env["json"] = json.loads(env["payload"]) if env.get("payload") is not None else None
            out.append(env)
    return out


class Follower:
    """`kcat -C -J -u -o beginning -t TOPIC` in the background, its stdout in a file."""

    def __init__(self, bs, topic, path):
        self.path = path
        self.out = open(path, "wb")
        self.err_path = str(path) + ".err"
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([KCAT, "-C", "-b", bs, "-t", topic, "-J", "-u", "-o", "beginning",
                                      "-q", *FAST], stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.err, start_new_session=True)

    def msgs(self):
        text = self.path.read_text(errors="replace")
        # a line being written may be incomplete: only whole lines
        return parse_json_lines(text[:text.rfind("\n") + 1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.out.close()
        self.err.close()
        return self.proc.returncode


def main(c: calib.Checks):
    if not KCAT:
        calib.skip("kcat is not installed (Debian package kcat)")
    calib.require_agent_binary()
    try:
        from test_bus_kafka import AsyncSpec  # noqa: E402  (JSON Schemas of asyncapi.yaml)
    except ImportError as e:
        calib.skip(f"test_bus_kafka's AsyncSpec cannot be imported: {e}")
    spec = AsyncSpec()
    d = calib.tmpdir("ca-kcat-")
    files = calib.make_fake_files(d)
    host = f"kcat-{os.getpid()}"
    prefix = f"k{uuidlib.uuid4().hex[:6]}."
    conf = d / "agent.conf"
    conf.write_text("[bus]\nheartbeat_interval = 1\n")
    agent = calib.Agent(d / "state", hypervisor="test",
                        extra_args=["--config", str(conf), "--host-name", host, "--bus-prefix", prefix,
                                    "--telemetry-interval", "1"])
    c.agents.append(agent)
    t_cmd, t_ev, t_hb, t_tm = (f"{prefix}compute.{host}", f"{prefix}compute.events",
                               f"{prefix}compute.heartbeat", f"{prefix}telemetry")
    follower = None
    try:
        with c.case("agent starts (test driver, embedded mock cluster); bus.up", fatal=True):
            agent.start(timeout=30)
            cl = agent.client()
            calib.wait_for(lambda: cl.host()["bus"]["up"], 30, what="bus.up", last=lambda: short(cl.host()["bus"]))
        bs = cl.host()["bus"]["bootstrap_servers"]
        calib.log(f"     (bootstrap servers {bs}, {KCAT} {kcat(['-V'])[1].splitlines()[3].strip()})")

        with c.case("kcat -L -J: the four topics, with the partitions asyncapi.yaml documents", fatal=True):
            rc, out, err = kcat(["-L", "-J", "-b", bs, "-m", "15"], timeout=40)
            if rc != 0:
                calib.skip(f"kcat cannot reach the mock cluster at {bs}: kcat -L exit {rc}: {err.strip()[-400:]}")
            md = json.loads(out)
            parts = {t["topic"]: len(t["partitions"]) for t in md["topics"]}
            want = {t_cmd: 1, t_hb: 1, t_ev: 4, t_tm: 4}
            assert {t: parts.get(t) for t in want} == want, f"topics {parts}"
            brokers = md.get("brokers") or []
            assert brokers, short(md)

        follower = Follower(bs, t_ev, d / "events.jsonl")
        sent = []

        def produce(cmd, key=None):
            """kcat -P one message (a JSON line, or raw bytes); kcat's exit 0 = delivered."""
            raw = cmd if isinstance(cmd, bytes) else json.dumps(cmd).encode()
            args = ["-P", "-b", bs, "-t", t_cmd, "-X", "enable.idempotence=true"]
            if key:
                args += ["-k", key]
            rc, _, err = kcat(args, inp=raw + b"\n", timeout=40)
            assert rc == 0 and "ERROR" not in err.upper(), f"kcat -P exit {rc}: {err.strip()[-300:]}"
            if isinstance(cmd, dict):
                sent.append(cmd)

        def result(rid, timeout=30):
            def find():
                for m in follower.msgs():
                    j = m["json"]
                    if isinstance(j, dict) and j.get("request_id") == rid and \
                            str(j.get("event", "")).startswith("operation."):
                        return j
                return None
            return calib.wait_for(find, timeout, interval=0.1, what=f"the result event of {rid} (kcat -C)",
                                  last=lambda: short([m["json"].get("event") for m in follower.msgs()][-8:]))

        tag = calib.unique("kcat")
        iid = None
        with c.case("kcat -P a launch command -> the follower sees instance.pending, instance.running, "
                    "operation.succeeded, keyed by the instance UUID", fatal=True):
            rid = f"{tag}-L"
            produce({"op": "launch", "request_id": rid,
                     "instance": {"name": f"{tag}-1", "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 0},
                                  "image": {"path": files["image"]}}})
            ev = result(rid)
            assert ev["event"] == "operation.succeeded", short(ev)
            iid = ev["instance_id"]
            mine = [m for m in follower.msgs() if m["json"].get("instance_id") == iid]
            seq = [(m["json"]["event"], m["json"]["request_id"]) for m in mine]
            assert seq == [("instance.pending", rid), ("instance.running", rid), ("operation.succeeded", rid)], seq
            assert all(m["key"] == iid for m in mine), [m["key"] for m in mine]
            assert len({m["partition"] for m in mine}) == 1, "one instance's events on several partitions"
            assert cl.instance(iid)["state"] == "running"

        with c.case("kcat -P stop (keyed by the instance, by EC2 id), start, terminate -> each result, "
                    "events in order"):
            ec2 = cl.instance(iid)["ec2_id"]
            for op, ref, extra in (("stop", ec2, {"force": True}), ("start", iid, {}), ("terminate", iid, {})):
                rid = f"{tag}-{op}"
                produce({"op": op, "request_id": rid, "instance_id": ref, **extra}, key=iid)
                ev = result(rid)
                assert ev["event"] == "operation.succeeded" and ev["operation"]["type"] == op, short(ev)
            seq = [(m["json"]["event"], m["json"]["request_id"]) for m in follower.msgs()
                   if m["json"].get("instance_id") == iid][3:]
            assert seq == [("instance.stopping", f"{tag}-stop"), ("instance.stopped", f"{tag}-stop"),
                           ("operation.succeeded", f"{tag}-stop"),
                           ("instance.pending", f"{tag}-start"), ("instance.running", f"{tag}-start"),
                           ("operation.succeeded", f"{tag}-start"),
                           ("instance.shutting-down", f"{tag}-terminate"),
                           ("instance.terminated", f"{tag}-terminate"),
                           ("operation.succeeded", f"{tag}-terminate")], seq
            assert cl.instance(iid)["state"] == "terminated"

        with c.case("kcat -P a line that is not JSON -> one command.rejected invalid_json, keyed by host"):
            n = len(cl.instances())
            produce(b"stop " + iid.encode())

            def rej():
                r = [m for m in follower.msgs() if m["json"].get("event") == "command.rejected"]
                return r or None
            r = calib.wait_for(rej, 30, interval=0.1, what="command.rejected")
            assert len(r) == 1, short([m["json"] for m in r])
            e = r[0]["json"]["error"]
            assert (e["code"], e["field"]) == ("invalid_json", None), short(e)
            assert r[0]["key"] == host, r[0]["key"]
            assert len(cl.instances()) == n

        # a second guest, running, for telemetry samples of an instance
        with c.case("a second guest launched by kcat -P is running", fatal=True):
            rid = f"{tag}-L2"
            produce({"op": "launch", "request_id": rid,
                     "instance": {"name": f"{tag}-2", "instance_type": "t3.micro",
                                  "image": {"path": files["image"]}}})
            iid2 = result(rid)["instance_id"]
            cl.wait_state(iid2, "running")

        with c.case("kcat -C -J -e on events: exits 0 at the end, the same messages as the follower"):
            calib.wait_for(lambda: cl.host()["bus"]["outbox"]["pending"] == 0, 30, what="outbox empty")
            want = {(m["partition"], m["offset"]) for m in follower.msgs()}
            rc, out, err = kcat(["-C", "-b", bs, "-t", t_ev, "-J", "-e", "-o", "beginning", "-q", *FAST])
            assert rc == 0, f"kcat -C -e exit {rc}: {err[-300:]}"
            got = parse_json_lines(out)
            where = [(m["partition"], m["offset"]) for m in got]
            assert len(where) == len(set(where)), "a message read twice"
            calib.wait_for(lambda: {(m["partition"], m["offset"]) for m in follower.msgs()} >= set(where), 10,
                           what="the follower to have every message kcat -e read")
            assert set(where) >= want, f"kcat -e missed {sorted(want - set(where))[:5]}"
            evs = got
            calib.log(f"     ({len(got)} events read by kcat -e)")

        with c.case("every event read by kcat matches asyncapi.yaml (one message of the channel, its key)"):
            kinds, problems = {}, []
            for m in evs:
                try:
                    name = spec.check("{prefix}compute.events", m["json"], key=m["key"])
                    kinds[name] = kinds.get(name, 0) + 1
                except AssertionError as e:
                    problems.append(str(e))
            assert not problems, "\n      ".join(problems[:5])
            assert set(kinds) == {"instanceEvent", "operationEvent", "commandRejected"}, kinds
            calib.log(f"     ({kinds})")

        def read_fmt(topic, need, what, timeout=30):
            """kcat -C -e -f '%k<TAB>%s' from the beginning, again until need(rows) holds."""
            rows = []

            def pred():
                rc, out, err = kcat(["-C", "-b", bs, "-t", topic, "-e", "-o", "beginning", "-q", "-f", "%k\t%s\n",
                                     *FAST])
                assert rc == 0, f"kcat exit {rc}: {err[-300:]}"
                rows[:] = [(k, json.loads(v)) for k, v in
                           (line.split("\t", 1) for line in out.splitlines() if "\t" in line)]
                return need(rows)
            calib.wait_for(pred, timeout, interval=0.5, what=what, last=lambda: f"{len(rows)} messages")
            return rows

        with c.case("kcat -f '%k\\t%s' on heartbeat: keyed by host, the documented JSON"):
            hb = read_fmt(t_hb, lambda r: len(r) >= 2, "two heartbeats")
            for k, j in hb:
                spec.check("{prefix}compute.heartbeat", j, key=k)
                assert k == host and j["host"] == host and j["hypervisor"] == "test", (k, short(j))

        with c.case("kcat -f '%k\\t%s' on telemetry (lz4 batches): samples of the running guest, "
                    "keyed by instance, the documented JSON"):
            tm = read_fmt(t_tm, lambda r: any(k == iid2 for k, _ in r), f"a telemetry sample of {iid2}", 40)
            for k, j in tm:
                spec.check("{prefix}telemetry", j, key=k)
            mine = [j for k, j in tm if k == iid2]
            assert all(j.get("instance_id") == iid2 for j in mine), short(mine[0])
            calib.log(f"     ({len(tm)} telemetry messages, {len(mine)} of the guest; meters "
                      f"{sorted({s['meter'] for j in mine for s in j['samples']})[:6]}...)")

        with c.case("every command kcat sent matches the Command schema"):
            cmd_schema = spec.channel_messages("{prefix}compute.{host}")[0][1]["payload"]
            for cmd in sent:
                errs = spec.errors(cmd, cmd_schema)
                assert not errs, f"{short(cmd, 200)}: {errs[:3]}"

    finally:
        if follower:
            rc = follower.stop()
            calib.log(f"     (kcat follower exit {rc})")
    with c.case("agent exits 0 on SIGTERM"):
        assert agent.stop(timeout=30) == 0


if __name__ == "__main__":
    calib.run("test_bus_kcat", main)
