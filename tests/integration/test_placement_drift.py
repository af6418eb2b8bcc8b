#!/usr/bin/env python3
"""Usage drift against a real OpenStack Placement (CA_PLACEMENT_URL, else skip):
an instance running here without an allocation, and an allocation in
Placement for a consumer that does not run here, are both reported (log and a
placement.usage_drift event on the bus, checked against asyncapi.yaml), and
nothing is deleted from Placement."""

import json
import os
import sys
import time
import urllib.request
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

PH = {"X-Auth-Token": "admin", "OpenStack-API-Version": "placement 1.39", "Content-Type": "application/json"}


def placement(url, method, path, body=None):
    req = urllib.request.Request(url + path, method=method, headers=PH,
                                 data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def main(c: calib.Checks):
    purl = os.environ.get("CA_PLACEMENT_URL")
    if not purl:
        calib.skip("needs CA_PLACEMENT_URL (tests/run.sh starts Placement as root)")
    try:
        from confluent_kafka import Consumer
    except ImportError:
        calib.skip("python3-confluent-kafka is not installed")
    from test_bus_kafka import AsyncSpec
    aspec = AsyncSpec()
    calib.require_agent_binary()
    d = calib.tmpdir("ca-drift-")
    files = calib.make_fake_files(d)
    host = calib.unique("ca-drift")
    conf = d / "agent.conf"
    conf.write_text("[placement]\nusage_check_interval = 10\n")
    agent = calib.Agent(d / "state", hypervisor="test", log_level="info",
                        extra_args=["--config", str(conf), "--host-name", host, "--placement-url", purl,
                                    "--placement-token", "admin"])
    c.agents.append(agent)
    with c.case("agent starts and registers", fatal=True):
        agent.start()
        cl = agent.client()
        calib.wait_for(lambda: cl.host()["provider_uuid"], timeout=30, what="registration")
        rp = cl.host()["provider_uuid"]
        calib.wait_for(lambda: "VCPU" in placement(purl, "GET", f"/resource_providers/{rp}/inventories")
                       ["inventories"], timeout=30, what="inventories")
    with c.case("an instance runs here (no allocation in Placement)", fatal=True):
        r = cl.launch({"name": "drift", "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 0},
                       "kernel": {"path": files["kernel"]}})
        iid = r["instance"]["id"]
        assert cl.wait_operation(r["operation"]["id"])["state"] == "succeeded"
    ghost = str(uuid.uuid4())
    with c.case("an allocation for a consumer that does not run here", fatal=True):
        placement(purl, "PUT", f"/allocations/{ghost}", {
            "allocations": {rp: {"resources": {"VCPU": 1, "MEMORY_MB": 64}}},
            "project_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()),
            "consumer_generation": None, "consumer_type": "INSTANCE"})
    with c.case("a placement.usage_drift event names both, and matches asyncapi.yaml"):
        bs = cl.host()["bus"]["bootstrap_servers"]
        con = Consumer({"bootstrap.servers": bs, "group.id": f"drift-{host}", "auto.offset.reset": "earliest",
                        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 50})
        con.subscribe(["compute.events"])
        found = None
        deadline = time.time() + 60
        while not found and time.time() < deadline:
            for m in con.consume(100, 0.5):
                if m.error():
                    continue
                ev = json.loads(m.value())
                if ev["event"] == "placement.usage_drift" and ev["host"] == host and \
                        iid in ev["only_here"] and ghost in ev["only_in_placement"]:
                    aspec.check("{prefix}compute.events", ev, key=m.key().decode())
                    found = ev
        con.close()
        assert found, "no usage drift event naming both within 60 s"
        assert found["provider_uuid"] == rp, short(found)
    with c.case("the drift is in the log too"):
        with open(agent.log_path, "rb") as f:
            text = f.read().decode(errors="replace")
        assert f"consumer={ghost}" in text and f"instance={iid}" in text
    with c.case("nothing was deleted from Placement"):
        alloc = placement(purl, "GET", f"/allocations/{ghost}")
        assert rp in alloc["allocations"], short(alloc)
        placement(purl, "DELETE", f"/allocations/{ghost}")
    with c.case("agent stops cleanly"):
        assert agent.stop() == 0


if __name__ == "__main__":
    calib.run("test_placement_drift", main)
