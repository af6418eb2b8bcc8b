#!/usr/bin/env python3
"""One agent on a real libvirtd (QEMU) joined to a real OpenStack Placement and
the bus (its embedded mock cluster), booting a real guest from an image
pulled from nginx into the image cache:
 - the guest boots from the overlay of the cached image (its console shows the
   disk's first bytes);
 - Placement holds the provider with the host's inventories and the
   CUSTOM_HYPERVISOR_QEMU trait; host disable puts COMPUTE_STATUS_DISABLED;
 - telemetry samples for the guest arrive on the telemetry topic keyed by the
   instance, with ceilometer meters, units and plausible values;
 - GET /metrics passes `promtool check metrics` and carries the guest's series.
Needs CA_LIBVIRT_URI, CA_GUEST_DIR, CA_PLACEMENT_URL, CA_NGINX_ROOT/URL
(tests/run.sh provides them as root), else skip."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

PH = {"X-Auth-Token": "admin", "OpenStack-API-Version": "placement 1.39"}


def placement(url, path):
    with urllib.request.urlopen(urllib.request.Request(url + path, headers=PH), timeout=10) as r:
        return json.load(r)


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    purl = os.environ.get("CA_PLACEMENT_URL")
    root, nurl = os.environ.get("CA_NGINX_ROOT"), os.environ.get("CA_NGINX_URL")
    if not purl or not root or not nurl:
        calib.skip("needs CA_PLACEMENT_URL and CA_NGINX_ROOT/CA_NGINX_URL (tests/run.sh starts them as root)")
    try:
        from confluent_kafka import Consumer
    except ImportError:
        calib.skip("python3-confluent-kafka is not installed")
    calib.require_agent_binary()
    from test_bus_kafka import AsyncSpec
    aspec = AsyncSpec()
    d = calib.tmpdir("ca-cloud-")
    prefix = calib.unique("ca-it-cloud")
    host = prefix
    shutil.copy(os.path.join(gdir, "disk.raw"), os.path.join(root, f"{prefix}.raw"))
    digest = "sha256:" + hashlib.sha256(open(os.path.join(gdir, "disk.raw"), "rb").read()).hexdigest()
    conf = d / "agent.conf"  # nginx is on loopback, refused unless allowed
    conf.write_text("[image_cache]\nallowed_networks = 127.0.0.0/8\n")
    agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri, log_level="info",
                        extra_args=["--config", str(conf), "--host-name", host, "--placement-url", purl,
                                    "--placement-token", "admin", "--telemetry-interval", "1"])
    c.agents.append(agent)
    created = set()
    try:
        with c.case("agent starts (qemu, Placement, embedded bus)", fatal=True):
            agent.start(timeout=180)
        cl = agent.client(timeout=60)
        boot = calib.guest_boot(gdir)
        with c.case("launch: kernel boot, disk = image pulled by url+digest -> running", fatal=True):
            r = cl.launch({"name": f"{prefix}-g", "flavor": {"vcpus": 1, "memory_mb": 128, "disk_gb": 1},
                           "kernel": boot, "image": {"url": f"{nurl}/{prefix}.raw", "digest": digest}})
            inst = r["instance"]
            created.add(inst["id"])
            op = cl.wait_operation(r["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
        with c.case("the guest reads the cached image's bytes from its disk"):
            watch = calib.ConsoleWatch(inst["console_log"])
            calib.wait_for(lambda: "first 16 bytes: CA-TEST-DISK-01" in watch.text(), timeout=120,
                           what="the guest to print its disk's first bytes")
        with c.case("the image is cached and in use by the instance"):
            imgs = cl.call("GET", "/v1/images")[1]["images"]
            mine = [i for i in imgs if i["digest"] == digest]
            assert mine and inst["id"] in mine[0]["in_use_by"], short(imgs)

        with c.case("Placement: provider with the host's inventories and CUSTOM_HYPERVISOR_QEMU"):
            h = cl.host()
            calib.wait_for(lambda: cl.host()["provider_uuid"], timeout=30, what="registration")
            rp = cl.host()["provider_uuid"]

            def inv_ok():
                inv = placement(purl, f"/resource_providers/{rp}/inventories")["inventories"]
                return inv.get("VCPU", {}).get("total") == h["capacity"]["vcpus"] and \
                    inv.get("MEMORY_MB", {}).get("total") == h["capacity"]["memory_mb"]
            calib.wait_for(inv_ok, timeout=30, what="inventories in Placement")
            calib.wait_for(lambda: "CUSTOM_HYPERVISOR_QEMU" in
                           placement(purl, f"/resource_providers/{rp}/traits")["traits"], timeout=30,
                           what="the hypervisor trait")
        with c.case("host disable -> COMPUTE_STATUS_DISABLED in Placement; enable -> gone"):
            cl.call("POST", "/v1/host/disable", {})
            calib.wait_for(lambda: "COMPUTE_STATUS_DISABLED" in
                           placement(purl, f"/resource_providers/{rp}/traits")["traits"], timeout=30,
                           what="the disabled trait")
            cl.call("POST", "/v1/host/enable", {})
            calib.wait_for(lambda: "COMPUTE_STATUS_DISABLED" not in
                           placement(purl, f"/resource_providers/{rp}/traits")["traits"], timeout=30,
                           what="the disabled trait to go")

        with c.case("telemetry: samples for the guest on the telemetry topic, keyed by instance, "
                    "matching asyncapi.yaml"):
            bs = cl.host()["bus"]["bootstrap_servers"]
            con = Consumer({"bootstrap.servers": bs, "group.id": f"t-{prefix}", "auto.offset.reset": "earliest",
                            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 50})
            con.subscribe(["telemetry"])
            meters = {}
            deadline = time.time() + 60
            while time.time() < deadline and not {"cpu", "cpu_util", "memory"} <= set(meters):
                for m in con.consume(100, 0.5):
                    if m.error() or m.key() != inst["id"].encode():
                        continue
                    msg = json.loads(m.value())
                    assert msg["ec2_id"] == inst["ec2_id"] and msg["host"] == host, short(msg)
                    aspec.check("{prefix}telemetry", msg, key=m.key().decode())
                    for s in msg["samples"]:
                        meters[s["meter"]] = s
            con.close()
            assert {"cpu", "cpu_util", "memory"} <= set(meters), sorted(meters)
            assert meters["cpu"]["unit"] == "ns" and meters["cpu"]["value"] > 0, short(meters["cpu"])
            assert 0 <= meters["cpu_util"]["value"] <= 100, short(meters["cpu_util"])
            assert meters["memory"]["value"] == 128, short(meters["memory"])

        with c.case("GET /metrics passes promtool and has the guest's series"):
            conn = calib.UnixHTTPConnection(str(agent.sock), timeout=10)
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            text = resp.read().decode()
            assert resp.status == 200 and inst["id"] in text, resp.status
            if shutil.which("promtool"):
                p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
                assert p.returncode == 0, p.stdout + p.stderr

        with c.case("terminate -> image released, no domain"):
            op = cl.wait_operation(cl.terminate(inst["id"])["operation"]["id"], timeout=60)
            assert op["state"] == "succeeded", short(op)
            created.discard(inst["id"])
            imgs = cl.call("GET", "/v1/images")[1]["images"]
            assert all(inst["id"] not in i["in_use_by"] for i in imgs), short(imgs)
    finally:
        if agent.alive():
            agent.stop()
        calib.cleanup_domains(uri, created, marker=prefix)


if __name__ == "__main__":
    calib.run("test_cloud_qemu", main)
