#!/usr/bin/env python3
"""The Kafka bus, driven by an independent client (python3-confluent-kafka).

Part 1, the agent's embedded mock cluster (no --bus-brokers; its address from GET /v1/host):
- launch, stop/start/reboot and terminate guests by commands on <P>compute.<host>; the events
  on <P>compute.events come in the expected order per instance, keyed by instance UUID;
- bad commands (not JSON, wrong types, unknown op, missing or unknown fields, > 1 MiB, ...)
  each produce exactly one command.rejected event naming the field and nothing else: the
  instance list does not change, later good commands still run, the offsets get committed;
- a repeated command (same request_id) does not run twice;
- heartbeats arrive on <P>compute.heartbeat;
- every message read (and every command sent) is checked against api-spec/asyncapi.yaml.

Part 2, a standalone mock cluster (build/tests/mock_kafka, --bus-brokers pointing to it):
- (a) the agent is killed (COMPUTE_AGENT_CRASH_AT=launch:claimed) between journaling a launch
  command and committing its offset: after a restart the command is consumed again (its
  offset gets committed) but the guest exists once, reaches running, and the launch ran once;
- (b) broker outage (SIGUSR1 = broker down, SIGUSR2 = up) while operations run through the
  REST API: the events wait in the outbox and then arrive exactly once each, in order per
  instance (counted, nothing de-duplicated here).

All waits are polls against deadlines.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid as uuidlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

try:
    import jsonschema  # noqa: E402
    import yaml  # noqa: E402
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
    from confluent_kafka import OFFSET_INVALID  # noqa: E402
except ImportError as e:  # pragma: no cover - environment
    calib.skip(f"python3-confluent-kafka (or jsonschema/yaml) is not installed: {e}")

ASYNCAPI_PATH = calib.ROOT / "api-spec" / "asyncapi.yaml"
MOCK_BIN = calib.BUILD / "tests" / "mock_kafka"
MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# AsyncAPI -> JSON Schema


def _refs_to_definitions(node):
    """AsyncAPI schema objects (JSON Schema draft 7 here) with #/components/schemas refs -> #/definitions."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                if not v.startswith("#/components/schemas/"):
                    raise ValueError(f"unsupported $ref {v}")
                out[k] = "#/definitions/" + v.rsplit("/", 1)[1]
            elif k in ("discriminator", "externalDocs", "deprecated", "examples"):
                continue
            else:
                out[k] = _refs_to_definitions(v)
        return out
    if isinstance(node, list):
        return [_refs_to_definitions(v) for v in node]
    return node


class AsyncSpec:
    """api-spec/asyncapi.yaml: channels, messages and their payload/key schemas as JSON Schema."""

    def __init__(self, path=ASYNCAPI_PATH):
        with open(path, encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)
        comps = self.doc.get("components", {})
        self.definitions = {n: _refs_to_definitions(s) for n, s in comps.get("schemas", {}).items()}
        self.messages = comps.get("messages", {})
        self._validators = {}

    def _message(self, ref_or_obj):
        if "$ref" in ref_or_obj:
            ref = ref_or_obj["$ref"]
            assert ref.startswith("#/components/messages/"), f"unsupported message $ref {ref}"
            name = ref.rsplit("/", 1)[1]
            return name, self.messages[name]
        return ref_or_obj.get("name", "<inline>"), ref_or_obj

    def channel_messages(self, template):
        """[(message name, message object)] of a channel's publish or subscribe operation."""
        ch = self.doc["channels"][template]
        ops = [ch[k] for k in ("publish", "subscribe") if k in ch]
        assert len(ops) == 1, f"channel {template}: expected one operation"
        msg = ops[0]["message"]
        if "oneOf" in msg:
            return [self._message(m) for m in msg["oneOf"]]
        return [self._message(msg)]

    def validator(self, schema):
        key = json.dumps(schema, sort_keys=True)
        v = self._validators.get(key)
        if v is None:
            full = {"allOf": [_refs_to_definitions(schema)], "definitions": self.definitions}
            jsonschema.Draft7Validator.check_schema(full)
            v = jsonschema.Draft7Validator(full)
            self._validators[key] = v
        return v

    def errors(self, instance, schema):
        errs = sorted(self.validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errs]

    def check(self, template, payload, key=...):
        """Assert payload matches exactly one message of the channel (and the key that
        message's Kafka binding describes, unless key is ...). Returns the message name."""
        matched, why = [], {}
        for name, msg in self.channel_messages(template):
            errs = self.errors(payload, msg["payload"])
            if errs:
                why[name] = errs
            else:
                matched.append((name, msg))
        assert len(matched) == 1, (
            f"{template}: payload matches {len(matched)} messages of asyncapi.yaml "
            f"({[m[0] for m in matched]}); " + "; ".join(f"{n}: {e[:3]}" for n, e in why.items())
            + f" -- payload {short(payload, 300)}")
        name, msg = matched[0]
        kschema = msg.get("bindings", {}).get("kafka", {}).get("key")
        if key is not ... and kschema is not None:
            errs = self.errors(key, kschema)
            assert not errs, f"{template} {name}: key {key!r} does not match its binding: {errs[:3]}"
        return name


# ---------------------------------------------------------------------------
# Kafka client side


def consumer_conf(bs, group=None, **extra):
    conf = {
        "bootstrap.servers": bs,
        "group.id": group or f"ca-test-{uuidlib.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # librdkafka 2.0.2's mock cluster: a departed member lingers until its session ends,
        # and a fetch is answered only when its wait expires.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 100,
    }
    conf.update(extra)
    return conf


class Msg:
    __slots__ = ("topic", "partition", "offset", "key", "value", "json", "seq")

    def __init__(self, m, seq):
        self.topic = m.topic()
        self.partition = m.partition()
        self.offset = m.offset()
        k = m.key()
        self.key = k.decode("utf-8", "replace") if k is not None else None
        self.value = m.value()
        try:
            self.json = json.loads(self.value) if self.value is not None else None
        except ValueError:
            self.json = None
        self.seq = seq

    def __repr__(self):
        return f"<{self.topic}[{self.partition}]@{self.offset} key={self.key} {short(self.json, 200)}>"


class Reader:
    """A consumer in a group of its own that keeps every message it reads, in reading order.

    Nothing is de-duplicated: a message read twice at the same offset is kept twice and
    also listed in `rereads`."""

    def __init__(self, bs, topics):
        self.bs = bs
        self.topics = list(topics)
        self.c = Consumer(consumer_conf(bs))
        self.c.subscribe(self.topics)
        self.msgs = []
        self.next_offset = {}  # (topic, partition) -> offset after the last one read
        self.seen = set()
        self.rereads = []
        self.errors = []

    def close(self):
        try:
            self.c.close()
        except (KafkaException, RuntimeError):
            pass

    def pump(self, timeout=0.2):
        m = self.c.poll(timeout)
        while m is not None:
            if m.error():
                self.errors.append(str(m.error()))
            else:
                msg = Msg(m, len(self.msgs))
                where = (msg.topic, msg.partition, msg.offset)
                if where in self.seen:
                    self.rereads.append(where)
                self.seen.add(where)
                self.msgs.append(msg)
                tp = (msg.topic, msg.partition)
                self.next_offset[tp] = max(self.next_offset.get(tp, 0), msg.offset + 1)
            m = self.c.poll(0)

    def wait(self, pred, timeout, what, last=None):
        """Read until pred() is truthy (returned) or the deadline passes (AssertionError)."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            left = deadline - time.monotonic()
            if left <= 0:
                detail = f"; last: {last()}" if last else ""
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
            self.pump(min(0.2, left))

    def drained(self, topic):
        """Whether everything on every partition of topic, up to its high watermark now, was read."""
        md = self.c.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return False
        for p in t.partitions:
            _, high = self.c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
            if high > 0 and self.next_offset.get((topic, p), 0) < high:
                return False
        return True

    def drain(self, topic, timeout=30.0):
        self.wait(lambda: self.drained(topic), timeout, f"reading {topic} to its end")

    # views -------------------------------------------------------------
    def of(self, topic, since=0):
        return [m for m in self.msgs[since:] if m.topic == topic]

    def events(self, topic, since=0, **match):
        out = []
        for m in self.of(topic, since):
            j = m.json
            if isinstance(j, dict) and all(j.get(k) == v for k, v in match.items()):
                out.append(m)
        return out


class Sender:
    """A producer; send() returns (partition, offset) once the broker acknowledged it."""

    def __init__(self, bs):
        self.p = Producer({"bootstrap.servers": bs, "message.max.bytes": 4 * MiB, "linger.ms": 0,
                           "enable.idempotence": True})

    def send(self, topic, value, key=None, timeout=15.0):
        res = {}

        def cb(err, msg):
            res["err"] = err
            if err is None:
                res["where"] = (msg.partition(), msg.offset())

        if isinstance(value, (dict, list)):
            value = json.dumps(value).encode()
        elif isinstance(value, str):
            value = value.encode()
        self.p.produce(topic, value=value, key=key, on_delivery=cb)
        deadline = time.monotonic() + timeout
        while "err" not in res and time.monotonic() < deadline:
            self.p.poll(0.1)
        assert "err" in res, f"producing to {topic}: no delivery report within {timeout:g}s"
        assert res["err"] is None, f"producing to {topic}: {res['err']}"
        return res["where"]


def committed_offset(bs, group, topic, partition=0):
    """The group's committed offset on topic/partition (OFFSET_INVALID if none); joins nothing."""
    c = Consumer(consumer_conf(bs, group=group))
    try:
        tps = c.committed([TopicPartition(topic, partition)], timeout=10)
        return tps[0].offset
    finally:
        c.close()


def instance_events(evs, iid):
    return [(m.json["event"], m.json["request_id"]) for m in evs if m.json.get("instance_id") == iid]


def launch_cmd(rid, name, files, **extra):
    body = {"name": name, "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
            "image": {"path": files["image"]}}
    body.update(extra)
    return {"op": "launch", "request_id": rid, "instance": body}


def write_config(path, heartbeat_s=1):
    path.write_text(f"[bus]\nheartbeat_interval = {heartbeat_s}\n")
    return path


# ---------------------------------------------------------------------------
# Part 1: the embedded mock cluster


def part_embedded(c, spec, d, files):
    host = f"bus-{os.getpid()}"
    prefix = f"t{uuidlib.uuid4().hex[:6]}."
    conf = write_config(d / "agent.conf")
    agent = calib.Agent(d / "state1", hypervisor="test",
                        extra_args=["--config", str(conf), "--host-name", host, "--bus-prefix", prefix])
    c.agents.append(agent)
    with c.case("agent starts with the embedded mock cluster", fatal=True):
        agent.start(timeout=30)
    cl = agent.client()
    t_cmd, t_ev, t_hb = f"{prefix}compute.{host}", f"{prefix}compute.events", f"{prefix}compute.heartbeat"
    bus = {}

    with c.case("GET /v1/host: bus.bootstrap_servers, topics and group named as asyncapi.yaml says",
                fatal=True):
        h = cl.host()
        bus.update(h.get("bus") or {})
        bs = bus.get("bootstrap_servers")
        assert isinstance(bs, str) and ":" in bs, f"bus.bootstrap_servers {bs!r}"
        want = {"commands": t_cmd, "events": t_ev, "heartbeat": t_hb, "telemetry": f"{prefix}telemetry"}
        assert bus.get("topics") == want, f"bus.topics {short(bus.get('topics'))}, expected {want}"
        assert bus.get("group_id") == f"{prefix}compute-agent.{host}", f"group_id {bus.get('group_id')!r}"
        rendered = sorted(t.replace("{prefix}", prefix).replace("{host}", host) for t in spec.doc["channels"])
        assert rendered == sorted(want.values()), f"asyncapi channels render to {rendered}"
        calib.wait_for(lambda: cl.host()["bus"]["up"], 30, what="bus.up",
                       last=lambda: short(cl.host().get("bus")))
    bs = bus["bootstrap_servers"]
    rd = Reader(bs, [t_ev, t_hb])
    snd = Sender(bs)
    sent_ok = []  # good commands sent (checked against the Command schema)

    def send(cmd, key=None):
        return snd.send(t_cmd, cmd, key=key)

    def op_done(rid):
        evs = [m for m in rd.of(t_ev) if m.json and m.json.get("request_id") == rid
               and m.json.get("event", "").startswith("operation.")]
        return evs[0] if evs else None

    def wait_op(rid, timeout=30):
        m = rd.wait(lambda: op_done(rid), timeout, f"operation event for request {rid}",
                    last=lambda: short([x.json.get("event") for x in rd.of(t_ev)][-10:]))
        assert m.json["event"] == "operation.succeeded", f"{rid}: {short(m.json)}"
        return m.json

    # -- launch and terminate by commands -------------------------------------------
    tag = calib.unique("bus")
    inst = {}
    with c.case("launch command -> instance.pending, instance.running, operation.succeeded (keyed by uuid)",
                fatal=True):
        cmd = launch_cmd(f"{tag}-L1", f"{tag}-1", files)
        sent_ok.append(cmd)
        send(cmd)
        ev = wait_op(f"{tag}-L1")
        iid = ev["instance_id"]
        inst["1"] = iid
        evs = rd.events(t_ev, instance_id=iid)
        seq = instance_events(evs, iid)
        assert seq == [("instance.pending", f"{tag}-L1"), ("instance.running", f"{tag}-L1"),
                       ("operation.succeeded", f"{tag}-L1")], seq
        assert all(m.key == iid for m in evs), [m.key for m in evs]
        assert len({m.partition for m in evs}) == 1, "one instance's events on several partitions"
        op = ev["operation"]
        assert op["type"] == "launch" and op["instance_id"] == iid, short(op)
        assert ev["host"] == host and calib.EC2_RE.match(ev["ec2_id"]), short(ev)
        i = cl.instance(iid)
        assert i["state"] == "running" and i["name"] == f"{tag}-1", short(i)
        assert cl.operation(op["id"])["state"] == "succeeded"

    with c.case("stop (force) / start / reboot (timeout) commands by EC2 id -> events in order"):
        iid = inst["1"]
        ec2 = cl.instance(iid)["ec2_id"]
        for rid, cmd in ((f"{tag}-S1", {"op": "stop", "instance_id": ec2, "force": True}),
                         (f"{tag}-ST1", {"op": "start", "instance_id": iid}),
                         (f"{tag}-RB1", {"op": "reboot", "instance_id": ec2, "timeout": 5})):
            cmd["request_id"] = rid
            sent_ok.append(cmd)
            send(cmd)
            wait_op(rid)
        seq = instance_events(rd.events(t_ev, instance_id=iid), iid)[3:]
        assert seq == [("instance.stopping", f"{tag}-S1"), ("instance.stopped", f"{tag}-S1"),
                       ("operation.succeeded", f"{tag}-S1"),
                       ("instance.pending", f"{tag}-ST1"), ("instance.running", f"{tag}-ST1"),
                       ("operation.succeeded", f"{tag}-ST1"),
                       ("operation.succeeded", f"{tag}-RB1")], seq
        assert cl.instance(iid)["state"] == "running"

    with c.case("terminate command -> instance.shutting-down, instance.terminated, operation.succeeded"):
        iid = inst["1"]
        cmd = {"op": "terminate", "request_id": f"{tag}-T1", "instance_id": iid}
        sent_ok.append(cmd)
        send(cmd)
        ev = wait_op(f"{tag}-T1")
        assert ev["operation"]["type"] == "terminate", short(ev)
        seq = instance_events(rd.events(t_ev, instance_id=iid), iid)[-3:]
        assert seq == [("instance.shutting-down", f"{tag}-T1"), ("instance.terminated", f"{tag}-T1"),
                       ("operation.succeeded", f"{tag}-T1")], seq
        i = cl.instance(iid)
        assert i["state"] == "terminated", short(i)

    # a running guest that bad commands aim at (they must not touch it)
    with c.case("a second guest launched by command is running", fatal=True):
        cmd = launch_cmd(f"{tag}-L2", f"{tag}-2", files, instance_type="t3.micro")
        del cmd["instance"]["flavor"]
        sent_ok.append(cmd)
        send(cmd)
        inst["2"] = wait_op(f"{tag}-L2")["instance_id"]
        cl.wait_state(inst["2"], "running")

    # -- bad commands ----------------------------------------------------------------
    target = inst["2"]
    good_body = launch_cmd("x", f"{tag}-bad", files)["instance"]
    big_pad = "x" * (MiB + 4096)
    bad = [
        # (what, raw value or JSON object, code, field)
        ("not JSON", b"this is not json", "invalid_json", None),
        ("empty message", b"", "invalid_json", None),
        ("a JSON array", b"[1, 2]", "invalid_json", None),
        ("truncated JSON", b'{"op": "launch", "request_id": "x"', "invalid_json", None),
        ("duplicate keys", b'{"op": "stop", "op": "start"}', "invalid_json", None),
        ("invalid UTF-8", b'{"op": "st\xffop", "request_id": "u"}', "invalid_json", None),
        ("op of a wrong type", {"op": 5, "request_id": f"{tag}-b1", "instance_id": target},
         "invalid_field", "op"),
        ("unknown op", {"op": "explode", "request_id": f"{tag}-b2", "instance_id": target},
         "invalid_field", "op"),
        ("no op", {"request_id": f"{tag}-b3", "instance_id": target}, "missing_field", "op"),
        ("no request_id", {"op": "stop", "instance_id": target}, "missing_field", "request_id"),
        ("request_id a number", {"op": "stop", "request_id": 7, "instance_id": target},
         "invalid_field", "request_id"),
        ("request_id empty", {"op": "stop", "request_id": "", "instance_id": target},
         "invalid_field", "request_id"),
        ("request_id of 129 characters", {"op": "stop", "request_id": "r" * 129, "instance_id": target},
         "invalid_field", "request_id"),
        ("launch without instance", {"op": "launch", "request_id": f"{tag}-b4"}, "missing_field", "instance"),
        ("launch with instance a string", {"op": "launch", "request_id": f"{tag}-b5", "instance": "web"},
         "invalid_field", "instance"),
        ("launch with instance_id", {"op": "launch", "request_id": f"{tag}-b6", "instance_id": target,
                                     "instance": good_body}, "invalid_field", "instance_id"),
        ("launch with vcpus a string",
         {"op": "launch", "request_id": f"{tag}-b7",
          "instance": {**good_body, "flavor": {"vcpus": "2", "memory_mb": 64, "disk_gb": 1}}},
         "invalid_field", "instance.flavor.vcpus"),
        ("launch without a name",
         {"op": "launch", "request_id": f"{tag}-b8", "instance": {k: v for k, v in good_body.items() if k != "name"}},
         "missing_field", "instance.name"),
        ("launch with a relative image path",
         {"op": "launch", "request_id": f"{tag}-b9", "instance": {**good_body, "image": {"path": "rel.raw"}}},
         "invalid_field", "instance.image.path"),
        ("launch with an unknown field in instance",
         {"op": "launch", "request_id": f"{tag}-b10", "instance": {**good_body, "colour": "red"}},
         "unknown_field", "instance.colour"),
        ("launch whose instance.request_id differs",
         {"op": "launch", "request_id": f"{tag}-b11", "instance": {**good_body, "request_id": "other"}},
         "invalid_field", "instance.request_id"),
        ("stop without instance_id", {"op": "stop", "request_id": f"{tag}-b12"}, "missing_field", "instance_id"),
        ("stop with instance_id a number", {"op": "stop", "request_id": f"{tag}-b13", "instance_id": 123},
         "invalid_field", "instance_id"),
        ("stop with timeout a string",
         {"op": "stop", "request_id": f"{tag}-b14", "instance_id": target, "timeout": "5"},
         "invalid_field", "timeout"),
        ("stop with timeout -1",
         {"op": "stop", "request_id": f"{tag}-b15", "instance_id": target, "timeout": -1},
         "invalid_field", "timeout"),
        ("stop with force a string",
         {"op": "stop", "request_id": f"{tag}-b16", "instance_id": target, "force": "yes"},
         "invalid_field", "force"),
        ("stop with instance",
         {"op": "stop", "request_id": f"{tag}-b17", "instance_id": target, "instance": good_body},
         "invalid_field", "instance"),
        ("unknown field", {"op": "stop", "request_id": f"{tag}-b18", "instance_id": target, "bogus": 1},
         "unknown_field", "bogus"),
        ("oversized (> 1 MiB; would otherwise be unknown_field)",
         {"op": "stop", "request_id": f"{tag}-b19", "instance_id": target, "pad": big_pad},
         "payload_too_large", None),
    ]
    with c.case("the Command schema of asyncapi.yaml refuses every bad JSON command used below"):
        cmd_schema = spec.channel_messages("{prefix}compute.{host}")[0][1]["payload"]
        for what, val, _, _ in bad:
            # JSON Schema cannot compare two fields (instance.request_id against request_id)
            if isinstance(val, dict) and what != "launch whose instance.request_id differs":
                assert spec.errors(val, cmd_schema), f"{what}: the Command schema accepts {short(val, 200)}"

    before = None
    sentinel = {}
    with c.case(f"{len(bad)} bad commands, then a good one: exactly one command.rejected each, "
                "naming the field", fatal=True):
        before = sorted((i["id"], i["state"], i["updated_at"]) for i in cl.instances())
        mark = len(rd.msgs)
        offsets = {}
        for what, val, code, field in bad:
            part, off = send(val)
            offsets[off] = (what, val, code, field)
        cmd = launch_cmd(f"{tag}-G1", f"{tag}-good", files)
        sent_ok.append(cmd)
        _, sentinel["offset"] = send(cmd)

        def all_there():
            rej = {m.json["command"]["offset"] for m in rd.events(t_ev, since=mark, event="command.rejected")
                   if isinstance(m.json.get("command"), dict)}
            return op_done(f"{tag}-G1") and set(offsets) <= rej

        rd.wait(all_there, 60, "a command.rejected for every bad command and the good one's result",
                last=lambda: short(sorted(m.json["command"]["offset"] for m in rd.events(
                    t_ev, since=mark, event="command.rejected")), 300))
        rejected = {}
        for m in rd.events(t_ev, since=mark, event="command.rejected"):
            rejected.setdefault(m.json["command"]["offset"], []).append(m.json)
        problems = []
        for off, (what, val, code, field) in sorted(offsets.items()):
            got = rejected.get(off, [])
            if len(got) != 1:
                problems.append(f"{what}: {len(got)} command.rejected events")
                continue
            ev = got[0]
            if (ev["error"]["code"], ev["error"]["field"]) != (code, field):
                problems.append(f"{what}: expected {code}/{field}, got {ev['error']['code']}/"
                                f"{ev['error']['field']} ({ev['error']['message']})")
            rid = val.get("request_id") if isinstance(val, dict) else None
            want_rid = rid if isinstance(rid, str) and code != "payload_too_large" else None
            if ev["request_id"] != want_rid:
                problems.append(f"{what}: request_id {ev['request_id']!r}, expected {want_rid!r}")
            if ev["host"] != host or ev["ec2_id"] is not None or ev["command"]["partition"] != part:
                problems.append(f"{what}: {short(ev, 200)}")
        extra = set(rejected) - set(offsets)
        if extra:
            problems.append(f"rejections for offsets not sent as bad: {sorted(extra)}")
        assert not problems, "\n      ".join(problems)

    with c.case("bad commands changed nothing: no other events for them, same instance list, target running"):
        bad_rids = {v.get("request_id") for _, v, _, _ in bad if isinstance(v, dict)} - {None}
        others = [m for m in rd.of(t_ev, since=mark) if m.json.get("event") != "command.rejected"
                  and (m.json.get("request_id") in bad_rids or m.json.get("instance_id") == target)]
        assert not others, f"events for bad commands: {others[:3]}"
        good_iid = op_done(f"{tag}-G1").json["instance_id"]
        new_inst = {m.json.get("instance_id") for m in rd.of(t_ev, since=mark)
                    if m.json.get("event", "").startswith("instance.")}
        assert new_inst == {good_iid}, f"instance events since the bad batch for {new_inst}"
        after = sorted((i["id"], i["state"], i["updated_at"]) for i in cl.instances() if i["id"] != good_iid)
        assert after == before, f"instances changed:\n      before {before}\n      after  {after}"
        assert not any(i["name"] == f"{tag}-bad" for i in cl.instances()), "a bad launch created a guest"

    with c.case("later good command ran (queue not blocked); its offset and the bad ones' are committed"):
        g = op_done(f"{tag}-G1").json
        assert g["event"] == "operation.succeeded", short(g)
        cl.wait_state(g["instance_id"], "running")
        group = bus["group_id"]
        calib.wait_for(lambda: committed_offset(bs, group, t_cmd) == sentinel["offset"] + 1, 30,
                       what=f"group {group} committed offset {sentinel['offset'] + 1}",
                       last=lambda: committed_offset(bs, group, t_cmd))

    with c.case("a tombstone (null value) -> one command.rejected invalid_json (field null), nothing runs"):
        mark2 = len(rd.msgs)
        n_inst = len(cl.instances())
        _, off = snd.send(t_cmd, None)
        m = rd.wait(lambda: next((x for x in rd.events(t_ev, since=mark2, event="command.rejected")
                                  if x.json["command"]["offset"] == off), None), 30,
                    f"command.rejected for offset {off}")
        assert len(cl.instances()) == n_inst, "the instance list changed"
        e = m.json["error"]
        assert (e["code"], e["field"]) == ("invalid_json", None), \
            f"expected invalid_json/null, got {e['code']}/{e['field']} ({e['message']})"

    with c.case("commands the host refuses name the command's field: unknown instance -> not_found "
                "instance_id; start of a running guest -> conflict op; request_id reused for another op "
                "-> conflict request_id; too big a flavor -> insufficient_resources instance.flavor.memory_mb"):
        mark3 = len(rd.msgs)
        cases = [
            ({"op": "stop", "request_id": f"{tag}-r1", "instance_id": str(uuidlib.uuid4())},
             "not_found", "instance_id"),
            ({"op": "start", "request_id": f"{tag}-r2", "instance_id": target}, "conflict", "op"),
            ({"op": "terminate", "request_id": f"{tag}-L2", "instance_id": target}, "conflict", "request_id"),
            (launch_cmd(f"{tag}-r3", f"{tag}-huge", files,
                        flavor={"vcpus": 1, "memory_mb": cl.host()["free"]["memory_mb"] + 1024, "disk_gb": 0}),
             "insufficient_resources", "instance.flavor.memory_mb"),
        ]
        offs = {}
        for cmd, code, field in cases:
            offs[send(cmd)[1]] = (cmd, code, field)
        rd.wait(lambda: set(offs) <= {m.json["command"]["offset"] for m in rd.events(
            t_ev, since=mark3, event="command.rejected")}, 30, "the rejections")
        problems = []
        for m in rd.events(t_ev, since=mark3, event="command.rejected"):
            cmd, code, field = offs[m.json["command"]["offset"]]
            e = m.json["error"]
            if (e["code"], e["field"]) != (code, field):
                problems.append(f"{short(cmd, 120)}: expected {code}/{field}, got {e['code']}/{e['field']} "
                                f"({e['message']})")
        assert cl.instance(target)["state"] == "running", "target changed"
        assert not any(i["name"] == f"{tag}-huge" for i in cl.instances()), "the too-big launch made a guest"
        assert not problems, "\n      ".join(problems)

    # -- repeated commands -------------------------------------------------------------
    with c.case("a repeated command (same request_id) does not run twice"):
        rid = f"{tag}-D1"
        cmd = launch_cmd(rid, f"{tag}-dup", files)
        sent_ok.append(cmd)
        send(cmd)
        send(cmd)  # at once, while the first may still run
        wait_op(rid)
        send(cmd)  # again after it finished
        srid = f"{tag}-D2"
        stop = {"op": "stop", "request_id": srid, "instance_id": target, "force": True}
        sent_ok.append(stop)
        send(stop)
        send(stop)
        wait_op(srid)
        # commands of one host are handled in order: once this one's result is back, every
        # repeat above was handled too
        fin = {"op": "start", "request_id": f"{tag}-D3", "instance_id": target}
        sent_ok.append(fin)
        send(fin)
        wait_op(f"{tag}-D3")
        named = [i for i in cl.instances() if i["name"] == f"{tag}-dup"]
        assert len(named) == 1, f"{len(named)} instances named {tag}-dup"
        for r in (rid, srid):
            evs = [m.json["event"] for m in rd.events(t_ev, request_id=r)]
            assert evs.count("operation.succeeded") == 1 and "operation.failed" not in evs, f"{r}: {evs}"
            assert "command.rejected" not in evs, f"{r}: {evs}"
        seq = [e for e, _ in instance_events(rd.events(t_ev, request_id=rid), named[0]["id"])]
        assert seq == ["instance.pending", "instance.running", "operation.succeeded"], seq
        seq = [e for e, _ in instance_events(rd.events(t_ev, request_id=srid), target)]
        assert seq == ["instance.stopping", "instance.stopped", "operation.succeeded"], seq

    # -- heartbeats ------------------------------------------------------------------
    with c.case("heartbeats arrive on compute.heartbeat, keyed by host, and match asyncapi.yaml"):
        hb = rd.wait(lambda: (lambda l: l if len(l) >= 3 else None)(rd.of(t_hb)), 30, "three heartbeats")
        for m in hb:
            spec.check("{prefix}compute.heartbeat", m.json, key=m.key)
            assert m.key == host and m.json["host"] == host, repr(m)
            assert m.json["hypervisor"] == "test" and m.json["state"] == "enabled", short(m.json)
        ts = [m.json["timestamp"] for m in hb]
        assert ts == sorted(ts) and len(set(ts)) == len(ts), f"timestamps {ts}"
        n = cl.host()["instances"]
        last = rd.wait(lambda: (lambda l: l[-1] if l and l[-1].json["instances"] == n else None)(
            rd.of(t_hb)), 15, f"a heartbeat with instances={n}")
        assert last.json["version"] == cl.host()["version"], short(last.json)

    with c.case("every event read matches asyncapi.yaml (exactly one message of the channel, with its key)"):
        evs = rd.of(t_ev)
        assert evs, "no events read"
        problems = []
        kinds = {}
        for m in evs:
            try:
                name = spec.check("{prefix}compute.events", m.json, key=m.key)
                kinds[name] = kinds.get(name, 0) + 1
            except AssertionError as e:
                problems.append(str(e))
        assert not problems, f"{len(problems)} of {len(evs)}:\n      " + "\n      ".join(problems[:5])
        assert set(kinds) == {"instanceEvent", "operationEvent", "commandRejected"}, kinds
        calib.log(f"     ({len(evs)} events: {kinds})")

    with c.case("every good command sent matches the Command schema"):
        cmd_schema = spec.channel_messages("{prefix}compute.{host}")[0][1]["payload"]
        for cmd in sent_ok:
            errs = spec.errors(cmd, cmd_schema)
            assert not errs, f"{short(cmd, 200)}: {errs[:3]}"

    with c.case("no message read twice, no consumer errors"):
        assert not rd.rereads, f"re-read {rd.rereads[:5]}"

    rd.close()
    with c.case("agent exits 0 on SIGTERM"):
        rc = agent.stop(timeout=30)
        assert rc == 0, f"exit code {rc}"


# ---------------------------------------------------------------------------
# Part 2: a standalone mock cluster


MockKafka = calib.MockKafka


def part_standalone(c, spec, d, files):
    if not MOCK_BIN.exists():
        with c.case("build/tests/mock_kafka exists"):
            raise AssertionError(f"{MOCK_BIN} is missing (make tests)")
        return
    host = f"busx-{os.getpid()}"
    prefix = f"s{uuidlib.uuid4().hex[:6]}."
    t_cmd, t_ev, t_hb = f"{prefix}compute.{host}", f"{prefix}compute.events", f"{prefix}compute.heartbeat"
    group = f"{prefix}compute-agent.{host}"
    mock = None
    with c.case("mock_kafka starts and prints its bootstrap servers", fatal=True):
        mock = MockKafka(d, [f"{t_cmd}:1", f"{t_ev}:4", f"{t_hb}:1", f"{prefix}telemetry:4"])
        out = calib.wait_for(lambda: mock.lines(), 5, what="mock_kafka's stdout")
        assert out[0] == mock.bs, f"stdout {out[0]!r} vs file {mock.bs!r}"
    try:
        _standalone_cases(c, spec, d, files, mock, host, prefix, t_cmd, t_ev, t_hb, group)
    finally:
        rc = mock.stop()
        with c.case("mock_kafka exits 0 on SIGTERM"):
            assert rc == 0, f"exit code {rc}; stderr {mock.err_path.read_text(errors='replace')[-300:]}"


def _standalone_cases(c, spec, d, files, mock, host, prefix, t_cmd, t_ev, t_hb, group):
    bs = mock.bs
    conf = write_config(d / "agent2.conf")
    agent = calib.Agent(d / "state2", hypervisor="test",
                        extra_args=["--config", str(conf), "--host-name", host, "--bus-prefix", prefix,
                                    "--bus-brokers", bs])
    c.agents.append(agent)
    snd = Sender(bs)
    tag = calib.unique("busx")
    cl = agent.client()

    # -- (a) killed between journaling and committing ---------------------------------------
    crash = {}
    with c.case("agent with COMPUTE_AGENT_CRASH_AT=launch:claimed uses the outside brokers", fatal=True):
        agent.start(timeout=30, env={"COMPUTE_AGENT_CRASH_AT": "launch:claimed"})
        b = cl.host()["bus"]
        assert b["bootstrap_servers"] == bs, short(b)
        calib.wait_for(lambda: cl.host()["bus"]["up"], 30, what="bus.up", last=lambda: short(cl.host()["bus"]))

    with c.case("a launch command kills it right after journaling (SIGKILL), offset not committed",
                fatal=True):
        cmd = launch_cmd(f"{tag}-C1", f"{tag}-crash", files)
        _, crash["offset"] = snd.send(t_cmd, cmd)
        rc = agent.wait_exit(timeout=30)
        assert rc == -signal.SIGKILL, f"agent exit {rc} (expected killed by SIGKILL); log:\n{agent.log_tail()}"
        assert "crash point reached" in agent.log_path.read_text(errors="replace"), "no crash point in the log"
        co = committed_offset(bs, group, t_cmd)
        assert co == OFFSET_INVALID or co <= crash["offset"], \
            f"committed offset {co} already past the launch command at {crash['offset']}"

    with c.case("restart without the fault: the guest exists once and reaches running", fatal=True):
        agent.start(timeout=30)
        inst = calib.wait_for(lambda: [i for i in cl.instances() if i["name"] == f"{tag}-crash"], 30,
                              what="the crashed launch's instance")
        assert len(inst) == 1, f"{len(inst)} instances: {short(inst)}"
        crash["iid"] = inst[0]["id"]
        cl.wait_state(crash["iid"], "running", timeout=30)

    with c.case("the command was consumed again (its offset is committed now) but not run twice"):
        calib.wait_for(lambda: committed_offset(bs, group, t_cmd) == crash["offset"] + 1, 40,
                       what=f"committed offset {crash['offset'] + 1}",
                       last=lambda: committed_offset(bs, group, t_cmd))
        assert len([i for i in cl.instances() if i["name"] == f"{tag}-crash"]) == 1
        calib.wait_for(lambda: cl.host()["bus"]["outbox"]["pending"] == 0, 30, what="outbox empty")
        rd = Reader(bs, [t_ev])
        try:
            rd.drain(t_ev, 40)
            evs = rd.events(t_ev, request_id=f"{tag}-C1")
            names = [m.json["event"] for m in evs]
            assert names.count("operation.succeeded") == 1 and "operation.failed" not in names, names
            assert "command.rejected" not in names, names
            assert names.count("instance.running") == 1, names
            # instance.pending was journaled before the kill: sent then or after the restart,
            # once either way (the restart reads the topic back before resending)
            assert names.count("instance.pending") == 1, names
            assert all(m.json["instance_id"] == crash["iid"] for m in evs), short([m.json for m in evs])
            op = [m.json["operation"] for m in evs if m.json["event"] == "operation.succeeded"][0]
            assert op["type"] == "launch" and op["step"] == "started", short(op)
            for m in evs:
                spec.check("{prefix}compute.events", m.json, key=m.key)
            calib.log(f"     (events of the crashed launch: {names})")
        finally:
            rd.close()

    # -- (a2) killed after Kafka took an event, before its outbox row went -------------------
    with c.case("COMPUTE_AGENT_CRASH_AT=events:acked: the first acknowledged event kills the agent",
                fatal=True):
        agent.stop(timeout=30)
        # the command waits on the topic; the launch's first event (or one of
        # the start itself) is acknowledged first, maybe before the API answers
        snd.send(t_cmd, launch_cmd(f"{tag}-A1", f"{tag}-acked", files))
        try:
            agent.start(timeout=30, env={"COMPUTE_AGENT_CRASH_AT": "events:acked"})
        except calib.AgentExited:  # killed at the crash point before it answered
            pass
        rc = agent.wait_exit(timeout=30)
        assert rc == -signal.SIGKILL, f"agent exit {rc} (expected killed by SIGKILL); log:\n{agent.log_tail()}"
        assert "point=events:acked" in agent.log_path.read_text(errors="replace"), "no crash point in the log"

    with c.case("restart: the event Kafka already had is not sent again (read back), the rest follow once"):
        agent.start(timeout=30)
        inst = calib.wait_for(lambda: [i for i in cl.instances() if i["name"] == f"{tag}-acked"], 30,
                              what="the launch's instance")
        cl.wait_state(inst[0]["id"], "running", timeout=30)
        calib.wait_for(lambda: cl.host()["bus"]["outbox"]["pending"] == 0, 30, what="outbox empty")
        log = agent.log_path.read_text(errors="replace")
        assert "events topic read back" in log and "already_delivered=1" in log, \
            "no readback line saying one event was already delivered:\n" + \
            "\n".join(l for l in log.splitlines() if "read back" in l)
        rd = Reader(bs, [t_ev])
        try:
            rd.drain(t_ev, 40)
            evs = rd.events(t_ev, request_id=f"{tag}-A1")
            names = [m.json["event"] for m in evs]
            assert names == ["instance.pending", "instance.running", "operation.succeeded"], names
            calib.log(f"     (events since the crash: {[m.json['event'] for m in rd.of(t_ev)][-6:]})")
            ids = [m.json.get("event_id") for m in rd.of(t_ev)]
            assert all(ids) and len(ids) == len(set(ids)), "event_id missing or repeated on the topic"
            for m in evs:
                spec.check("{prefix}compute.events", m.json, key=m.key)
        finally:
            rd.close()

    # -- (b) broker outage ------------------------------------------------------------------
    o = {}
    rids = {}

    def rid(name):
        rids[name] = f"{tag}-{name}"
        return rids[name]

    with c.case("broker outage: operations go on through the REST API, events wait in the outbox",
                fatal=True):
        r = cl.launch({"name": f"{tag}-o1", "flavor": calib.small_flavor(), "image": {"path": files["image"]},
                       "request_id": rid("o1-launch")})
        o["1"] = r["instance"]["id"]
        cl.wait_operation(r["operation"]["id"])
        # launched just before the broker goes down: its events may be in flight at that moment
        r = cl.launch({"name": f"{tag}-o2", "flavor": calib.small_flavor(), "kernel": {"path": files["kernel"]},
                       "request_id": rid("o2-launch")})
        o["2"] = r["instance"]["id"]
        mock.signal(signal.SIGUSR1, "broker 1 down")
        calib.wait_for(lambda: not cl.host()["bus"]["up"], 30, what="the agent to see the bus down",
                       last=lambda: short(cl.host()["bus"]))
        cl.wait_operation(r["operation"]["id"])
        pending0 = cl.host()["bus"]["outbox"]["pending"]
        for name, iid, action, extra in (("o1-stop", o["1"], "stop", {"force": True}),
                                         ("o1-start", o["1"], "start", {}),
                                         ("o1-reboot", o["1"], "reboot", {"timeout": 5}),
                                         ("o2-stop", o["2"], "stop", {"timeout": 5})):
            a = cl.action(iid, action, request_id=rid(name), **extra)
            op = cl.wait_operation(a["operation"]["id"])
            assert op["state"] == "succeeded", short(op)
        t = cl.call("DELETE", f"/v1/instances/{o['2']}", headers={"Idempotency-Key": rid("o2-terminate")})
        assert t[0] == 202, short(t)
        cl.wait_operation(t[1]["operation"]["id"])
        cl.wait_state(o["2"], "terminated")
        pending = cl.host()["bus"]["outbox"]["pending"]
        # 3 (stop) + 3 (start) + 1 (reboot) + 3 (stop) + 3 (terminate) events at least
        assert pending >= pending0 + 13, f"outbox pending {pending0} -> {pending} while the broker is down"
        assert not cl.host()["bus"]["up"]

    with c.case("broker back: the outbox empties"):
        mock.signal(signal.SIGUSR2, "broker 1 up")
        calib.wait_for(lambda: cl.host()["bus"]["outbox"]["pending"] == 0, 60, what="outbox empty",
                       last=lambda: short(cl.host()["bus"]))

    with c.case("every event arrived exactly once, in order per instance (counted, nothing de-duplicated)"):
        rd = Reader(bs, [t_ev])
        try:
            expect = {
                o["1"]: [("instance.pending", rids["o1-launch"]), ("instance.running", rids["o1-launch"]),
                         ("operation.succeeded", rids["o1-launch"]),
                         ("instance.stopping", rids["o1-stop"]), ("instance.stopped", rids["o1-stop"]),
                         ("operation.succeeded", rids["o1-stop"]),
                         ("instance.pending", rids["o1-start"]), ("instance.running", rids["o1-start"]),
                         ("operation.succeeded", rids["o1-start"]),
                         ("operation.succeeded", rids["o1-reboot"])],
                o["2"]: [("instance.pending", rids["o2-launch"]), ("instance.running", rids["o2-launch"]),
                         ("operation.succeeded", rids["o2-launch"]),
                         ("instance.stopping", rids["o2-stop"]), ("instance.stopped", rids["o2-stop"]),
                         ("operation.succeeded", rids["o2-stop"]),
                         ("instance.shutting-down", rids["o2-terminate"]),
                         ("instance.terminated", rids["o2-terminate"]),
                         ("operation.succeeded", rids["o2-terminate"])],
            }
            rd.wait(lambda: all(len(instance_events(rd.of(t_ev), i)) >= len(s) for i, s in expect.items()), 40,
                    "every expected event", last=lambda: {i: len(instance_events(rd.of(t_ev), i)) for i in expect})
            rd.drain(t_ev, 40)
            problems = []
            for iid, want in expect.items():
                mine = [m for m in rd.of(t_ev) if m.json.get("instance_id") == iid]
                got = [(m.json["event"], m.json["request_id"]) for m in mine]
                if got != want:
                    problems.append(f"instance {iid}:\n        got  {got}\n        want {want}")
                parts = {m.partition for m in mine}
                if len(parts) != 1:
                    problems.append(f"instance {iid}: events on partitions {parts}")
                offs = [m.offset for m in mine]
                if offs != sorted(offs):
                    problems.append(f"instance {iid}: offsets out of order {offs}")
                ups = [m.json["instance"]["updated_at"] for m in mine if "instance" in m.json]
                if ups != sorted(ups):
                    problems.append(f"instance {iid}: instance.updated_at goes back {ups}")
                for m in mine:
                    try:
                        spec.check("{prefix}compute.events", m.json, key=m.key)
                    except AssertionError as e:
                        problems.append(str(e))
            payloads = [m.value for m in rd.of(t_ev)]
            dups = len(payloads) - len(set(payloads))
            if dups:
                problems.append(f"{dups} byte-identical event(s) on the topic")
            if rd.rereads:
                problems.append(f"messages read twice by the test consumer: {rd.rereads[:5]}")
            assert not problems, "\n      ".join(problems)
            calib.log(f"     ({len(payloads)} events on {t_ev}, {sum(len(s) for s in expect.values())} "
                      f"of the two instances)")
        finally:
            rd.close()

    with c.case("heartbeats from the outside brokers match asyncapi.yaml"):
        rd = Reader(bs, [t_hb])
        try:
            hb = rd.wait(lambda: (lambda l: l if len(l) >= 2 else None)(rd.of(t_hb)), 30, "two heartbeats")
            for m in hb:
                spec.check("{prefix}compute.heartbeat", m.json, key=m.key)
                assert m.json["host"] == host, short(m.json)
        finally:
            rd.close()

    with c.case("agent exits 0 on SIGTERM"):
        rc = agent.stop(timeout=30)
        assert rc == 0, f"exit code {rc}"


# ---------------------------------------------------------------------------


def main(c):
    calib.require_agent_binary()
    spec = None
    with c.case("api-spec/asyncapi.yaml: AsyncAPI 2.6, every channel and message, valid JSON Schemas",
                fatal=True):
        spec = AsyncSpec()
        assert str(spec.doc.get("asyncapi", "")).startswith("2.6"), spec.doc.get("asyncapi")
        chans = spec.doc["channels"]
        assert set(chans) == {"{prefix}compute.{host}", "{prefix}compute.events", "{prefix}compute.heartbeat",
                              "{prefix}telemetry"}, sorted(chans)
        used = set()
        for tmpl, ch in chans.items():
            params = set(ch.get("parameters", {}))
            named = {p.strip("{}") for p in re.findall(r"\{[^}]+\}", tmpl)}
            assert params == named, f"{tmpl}: parameters {params}, name uses {named}"
            for name, msg in spec.channel_messages(tmpl):
                used.add(name)
                spec.validator(msg["payload"])  # check_schema
                k = msg.get("bindings", {}).get("kafka", {}).get("key")
                if k is not None:
                    spec.validator(k)
                for ex in msg.get("examples", []):
                    assert not spec.errors(ex["payload"], msg["payload"]), f"{name} example {ex.get('name')}"
        assert used == set(spec.messages), f"messages not on a channel: {set(spec.messages) - used}"
        assert {"command", "instanceEvent", "operationEvent", "commandRejected", "heartbeat",
                "telemetrySample"} <= used, used
    d = calib.tmpdir("ca-bus-")
    files = calib.make_fake_files(d)
    part_embedded(c, spec, d, files)
    part_standalone(c, spec, d, files)


if __name__ == "__main__":
    calib.run("test_bus_kafka", main)
