#!/usr/bin/env python3
"""Issue 4 benchmark, in one run:
 1. launch+terminate round trips per second through Kafka (command in on
    compute.<host>, instance.running / instance.terminated events out), beside
    the same through the REST API (202, then the operation long-polled);
 2. 50 agents (separate processes, test driver, distinct host names) against
    one Placement and one mock Kafka cluster: time until every agent is
    registered (provider with inventories in Placement) and heartbeating, and
    Placement requests per agent per idle minute.
Usage: bench_fleet.py BUILD_DIR [N_ROUNDTRIPS] [N_AGENTS] [IDLE_SECONDS]"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import calib  # noqa: E402

try:
    from confluent_kafka import Consumer, Producer
except ImportError:
    print("SKIP: python3-confluent-kafka is not installed")
    sys.exit(77)

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
AGENTS = int(sys.argv[3]) if len(sys.argv) > 3 else 50
IDLE = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
CONF = "[resources]\ncpu_allocation_ratio = 1000\nram_allocation_ratio = 1000\n[agent]\nlog_level = warn\n"


def consumer(bs, topics, group):
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                  "fetch.wait.max.ms": 10})
    c.subscribe(topics)
    return c


def kafka_roundtrips(agent, bs, host, n, kernel):
    """Pipelined: n launch commands, wait for n running events; n terminates, n terminated."""
    p = Producer({"bootstrap.servers": bs, "linger.ms": 2})
    c = consumer(bs, ["compute.events"], f"bench-{time.time()}")
    # wait until the consumer is assigned and at the end of the topic
    deadline = time.time() + 30
    while not c.assignment() and time.time() < deadline:
        c.poll(0.1)
    body = {"name": "bench", "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 0}, "kernel": {"path": kernel}}
    t0 = time.time()
    for i in range(n):
        p.produce(f"compute.{host}", json.dumps({"op": "launch", "request_id": f"kl-{t0}-{i}",
                                                  "instance": body}).encode())
        p.poll(0)
    p.flush(30)
    running, terminated, ids, last_ts = 0, 0, [], None
    deadline = time.time() + 120
    tag_l = f'"kl-{t0}-'.encode()
    while running < n and time.time() < deadline:
        for m in c.consume(1000, 0.05):
            v = m.value() if not m.error() else b""
            if b'"instance.running"' in v and tag_l in v:
                running += 1
                ids.append(json.loads(v)["instance_id"])
    t1 = time.time()
    for i, iid in enumerate(ids):
        p.produce(f"compute.{host}", json.dumps({"op": "terminate", "request_id": f"kt-{t0}-{i}",
                                                  "instance_id": iid}).encode())
        p.poll(0)
    p.flush(30)
    deadline = time.time() + 120
    tag_t = f'"kt-{t0}-'.encode()
    while terminated < len(ids) and time.time() < deadline:
        for m in c.consume(1000, 0.05):
            v = m.value() if not m.error() else b""
            if b'"instance.terminated"' in v and tag_t in v:
                terminated += 1
                last_ts = json.loads(v)["timestamp"]
    t2 = time.time()
    c.close()
    # the agent's own view: first command produced -> last terminated event created
    agent_s = (datetime.strptime(last_ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
               - t0) if last_ts else float("nan")
    return running, terminated, t2 - t0, t1 - t0, agent_s


def rest_roundtrips(agent, n, kernel, threads=8):
    """The same through REST: launch (202), long-poll its operation, terminate, long-poll."""
    done = [0]
    lock = threading.Lock()
    body = {"name": "bench", "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 0}, "kernel": {"path": kernel}}

    def worker(k):
        cl = agent.client(timeout=60)
        for _ in range(k):
            r = cl.launch(body)
            op = cl.call("GET", f"/v1/operations/{r['operation']['id']}?wait=60")[1]
            if op["state"] != "succeeded":
                continue
            st, t = cl.call("DELETE", f"/v1/instances/{r['instance']['id']}")
            op = cl.call("GET", f"/v1/operations/{t['operation']['id']}?wait=60")[1]
            if op["state"] == "succeeded":
                with lock:
                    done[0] += 1
    t0 = time.time()
    ths = [threading.Thread(target=worker, args=(n // threads + (1 if k < n % threads else 0),))
           for k in range(threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return done[0], time.time() - t0


def placement_providers(url):
    req = urllib.request.Request(f"{url}/resource_providers",
                                 headers={"X-Auth-Token": "admin", "OpenStack-API-Version": "placement 1.39"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["resource_providers"]


def placement_inventory_ok(url, uuid):
    req = urllib.request.Request(f"{url}/resource_providers/{uuid}/inventories",
                                 headers={"X-Auth-Token": "admin", "OpenStack-API-Version": "placement 1.39"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return "VCPU" in json.load(r)["inventories"]


def main():
    work = tempfile.mkdtemp(prefix="ca-bench-fleet-")
    started_placement = False
    env_dir = os.path.join(HERE, "..", "env")
    try:
        # ---- 1. round trips through Kafka and REST, one agent, embedded mock cluster
        d = os.path.join(work, "rt")
        os.makedirs(d)
        open(os.path.join(d, "c.conf"), "w").write(CONF)
        agent = calib.Agent(os.path.join(d, "state"), hypervisor="test", log_level="warn",
                            extra_args=["--config", os.path.join(d, "c.conf"), "--host-name", "bench-rt"])
        agent.start(timeout=60)
        bs = agent.client().host()["bus"]["bootstrap_servers"]
        kernel = calib.make_fake_files(Path(d))["kernel"]  # in the harness's allowed directory
        kr, kt, ktime, klaunch, kagent = kafka_roundtrips(agent, bs, "bench-rt", N, kernel)
        rd, rtime = rest_roundtrips(agent, N, kernel)
        agent.stop()
        print(f"== launch+terminate round trips, {N} instances, test driver ==")
        print(f"{'path':<44}{'done':>8}{'seconds':>10}{'per s':>10}")
        print(f"{'Kafka, as the Python client sees it':<44}{min(kr, kt):>8}{ktime:>10.2f}{min(kr, kt) / ktime:>10.0f}")
        print(f"{'Kafka, by the events own timestamps':<44}{min(kr, kt):>8}{kagent:>10.2f}{min(kr, kt) / kagent:>10.0f}")
        print(f"{'REST (202 + long-poll), 8 clients':<44}{rd:>8}{rtime:>10.2f}{rd / rtime:>10.0f}")
        print(f"{'ratio Kafka (client view) / REST':<44}{'':>8}{'':>10}{(min(kr, kt) / ktime) / (rd / rtime):>10.2f}")
        print(f"{'Kafka launches alone (running events)':<44}{kr:>8}{klaunch:>10.2f}{kr / klaunch:>10.0f}")
        print("target: >= 500 round trips/s")

        # ---- 2. a fleet of agents against one Placement and one mock cluster
        url = os.environ.get("CA_PLACEMENT_URL")
        if not url:
            pdir = os.path.join(work, "placement")
            os.makedirs(pdir)
            env = dict(os.environ, PLACEMENT_PORT=os.environ.get("PLACEMENT_PORT", "8797"))
            url = subprocess.run([os.path.join(env_dir, "placement.sh"), "start", pdir], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            started_placement = True
        # one mock cluster for the fleet: agent 0's embedded one serves the others
        fbs = None
        t0 = time.time()
        agents = []
        for i in range(AGENTS):
            ad = os.path.join(work, f"a{i}")
            os.makedirs(ad)
            open(os.path.join(ad, "c.conf"), "w").write(CONF)
            args = ["--config", os.path.join(ad, "c.conf"), "--host-name", f"fleet-{i:03d}",
                    "--placement-url", url, "--placement-token", "admin"]
            if fbs:
                args += ["--bus-brokers", fbs]
            a = calib.Agent(os.path.join(ad, "state"), hypervisor="test", log_level="warn", extra_args=args)
            a.start(wait=(i == 0), timeout=60)
            if i == 0:
                fbs = a.client().host()["bus"]["bootstrap_servers"]
            agents.append(a)
        hb = consumer(fbs, ["compute.heartbeat"], f"bench-hb-{time.time()}")
        want = {f"fleet-{i:03d}" for i in range(AGENTS)}
        seen_hb = set()
        registered = set()
        t_reg = t_hb = None
        deadline = time.time() + 300
        while (t_reg is None or t_hb is None) and time.time() < deadline:
            m = hb.poll(0.2)
            if m is not None and not m.error():
                seen_hb.add(json.loads(m.value())["host"])
                if t_hb is None and want <= seen_hb:
                    t_hb = time.time() - t0
            if t_reg is None:
                provs = {p["name"]: p["uuid"] for p in placement_providers(url) if p["name"] in want}
                for name, uuid in provs.items():
                    if name not in registered and placement_inventory_ok(url, uuid):
                        registered.add(name)
                if registered == want:
                    t_reg = time.time() - t0
        hb.close()
        for a in agents:
            a.wait_ready(timeout=60)
        def placement_requests():
            return sum(a.client().host()["placement"]["requests"] for a in agents)
        r0 = placement_requests()
        time.sleep(IDLE)  # the measurement itself: an idle period of fixed length
        r1 = placement_requests()
        per_agent_min = (r1 - r0) / AGENTS / (IDLE / 60.0)
        for a in reversed(agents):  # agent 0 holds the mock cluster: last
            a.stop()
        print()
        print(f"== {AGENTS} agents, one Placement, one mock Kafka cluster ==")
        print(f"{'figure':<56}{'value':>10}")
        print(f"{'seconds until all registered (provider + inventories)':<56}"
              f"{(t_reg if t_reg is not None else float('nan')):>10.2f}")
        print(f"{'seconds until all heartbeating':<56}{(t_hb if t_hb is not None else float('nan')):>10.2f}")
        print(f"{'agents registered / heartbeating':<56}{len(registered):>5}/{len(seen_hb & want):<4}")
        print(f"{'  (timed from the first agent start; agent 0 starts first, its mock cluster serves all)':<56}")
        print(f"{'Placement requests per agent per idle minute':<56}{per_agent_min:>10.2f}")
        print(f"{'  (baseline: nova-compute sends its resource tracker update every 60 s: >= 1)':<56}")
        print("target: no requests beyond what a change causes (0 when idle)")
        ok = t_reg is not None and t_hb is not None and min(kr, kt) == N and rd == N
        return 0 if ok else 1
    finally:
        if started_placement:
            subprocess.run([os.path.join(env_dir, "placement.sh"), "stop", os.path.join(work, "placement")],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
