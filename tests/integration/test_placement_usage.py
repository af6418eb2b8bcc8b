#!/usr/bin/env python3
"""Placement usage that is true (issue 11), against a real Placement (CA_PLACEMENT_URL, else skip),
read back with the operators' own tool: `openstack` + osc-placement.

With [placement] allocations = agent: usage follows launches (consumer = the launch's id, owner =
its project_id/user_id) and terminates; a kill -9 right after a launch was journaled (crash point
launch:claimed) still ends with exactly one allocation; launches and a terminate during a
Placement outage (a proxy whose port is closed) end with the right usage once it is back; never a
doubled allocation. usage_heal = fix removes the allocation of an instance terminated here that
someone put back, and leaves an unknown consumer alone. Then allocations = scheduler: a launch
whose allocation is missing is reported at once (drift event/log, metric), and its terminate
removes the scheduler's allocation."""

import json
import os
import shutil
import subprocess
import sys
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402
from chaos import PlacementProxy, placement  # noqa: E402

PROJECT = "6f1f0c5e9a1b4c3d8e7f6a5b4c3d2e1f"
USER = "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"


def osc(purl, *args):
    """`openstack ... -f json` against Placement with noauth2 (token admin at the endpoint)."""
    cmd = ["openstack", "--os-auth-type", "admin_token", "--os-endpoint", purl, "--os-token", "admin",
           "--os-placement-api-version", "1.38", *args, "-f", "json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"{' '.join(args)} -> {p.returncode}: {p.stderr.strip()[-400:]}"
    return json.loads(p.stdout) if p.stdout.strip() else None


def usage(purl, rp):
    """{resource_class: used} of the provider, as `openstack resource provider usage show` says."""
    return {r["resource_class"]: r["usage"] for r in osc(purl, "resource", "provider", "usage", "show", rp)}


def consumer_allocs(purl, consumer):
    """`openstack resource provider allocation show CONSUMER`: [{resource_provider, resources, ...}]."""
    return osc(purl, "resource", "provider", "allocation", "show", consumer)


def main(c: calib.Checks):
    purl = os.environ.get("CA_PLACEMENT_URL")
    if not purl:
        calib.skip("needs CA_PLACEMENT_URL (tests/run.sh starts Placement as root)")
    if not shutil.which("openstack"):
        calib.skip("the openstack client is not installed (python3-openstackclient, python3-osc-placement)")
    calib.require_agent_binary()
    d = calib.tmpdir("ca-pusage-")
    files = calib.make_fake_files(d)
    host = calib.unique("ca-pusage")
    proxy = PlacementProxy(purl)
    conf = d / "agent.conf"
    conf.write_text("[placement]\nusage_check_interval = 10\nallocations = agent\nusage_heal = fix\n"
                    "[bus]\nheartbeat_interval = 5\n")
    args = ["--config", str(conf), "--host-name", host, "--placement-url", proxy.url, "--placement-token",
            "admin"]
    agent = calib.Agent(d / "state", hypervisor="test", log_level="info", extra_args=args)
    c.agents.append(agent)
    st = {}

    def body(name, iid, mem=64, disk=0, **extra):
        return {"name": name, "id": iid, "flavor": {"vcpus": 1, "memory_mb": mem, "disk_gb": disk},
                "kernel": {"path": files["kernel"]}, **extra}

    def want_usage(vcpu, mem):
        got = {}

        def ok():
            got.update(usage(purl, st["rp"]))
            return got.get("VCPU", 0) == vcpu and got.get("MEMORY_MB", 0) == mem
        calib.wait_for(ok, 40, what=f"usage VCPU={vcpu} MEMORY_MB={mem}", last=lambda: short(got))

    with c.case("agent (allocations = agent) starts and registers", fatal=True):
        agent.start(timeout=30)
        cl = agent.client()
        st["rp"] = calib.wait_for(lambda: cl.host()["placement"]["synced"] and cl.host()["provider_uuid"], 40,
                                  what="registration")
        assert usage(purl, st["rp"]).get("VCPU", 0) == 0

    with c.case("traits: COMPUTE_NODE, the arch, image types, storage bus; every standard one in os-traits"):
        want = {"COMPUTE_NODE", "COMPUTE_IMAGE_TYPE_QCOW2", "COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_STORAGE_BUS_VIRTIO"}
        got = set()

        def have():
            got.clear()
            got.update(t["name"] for t in osc(purl, "resource", "provider", "trait", "list", st["rp"]))
            return want <= got
        calib.wait_for(have, 30, what=f"traits {sorted(want)}", last=lambda: sorted(got))
        # the test driver's fake host is i686, which os-traits has no trait for: at most one arch
        assert len([t for t in got if t.startswith("COMPUTE_ARCH_")]) <= 1, sorted(got)
        assert "COMPUTE_NET_VIF_MODEL_VIRTIO" not in got, "a NIC model trait on a host with no networks"
        std = [t for t in got if not t.startswith("CUSTOM_")]
        # os-traits is Debian's python3-os-traits, in the system python
        p = subprocess.run(["/usr/bin/python3", "-c", "import os_traits, sys; known = set(os_traits.get_traits()); "
                            "print(' '.join(t for t in sys.argv[1:] if t not in known))", *std],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"os_traits (python3-os-traits) not importable: {p.stderr.strip()[-200:]}"
        assert not p.stdout.strip(), f"not os-traits names: {p.stdout.strip()}"

    with c.case("one memory figure: Placement MEMORY_MB total, GET /v1/host capacity, /metrics host total"):
        def metric_mb():
            for x in cl.request_raw("GET", "/metrics").raw.decode().splitlines():
                if x.startswith("compute_agent_host_memory_total_bytes"):
                    return int(float(x.split()[-1])) // (1024 * 1024)
            return None
        m_mb = calib.wait_for(metric_mb, 40, what="compute_agent_host_memory_total_bytes")
        inv = osc(purl, "resource", "provider", "inventory", "list", st["rp"])
        p_mb = [i["total"] for i in inv if i["resource_class"] == "MEMORY_MB"][0]
        h_mb = cl.host()["capacity"]["memory_mb"]
        assert p_mb == h_mb == m_mb, f"Placement {p_mb} MiB, /v1/host {h_mb} MiB, /metrics {m_mb} MiB"

    ids = [str(uuid.uuid4()) for _ in range(3)]
    with c.case("three launches with the controller's ids: usage 3 VCPU, 64+96+128 MB", fatal=True):
        for k, iid in enumerate(ids):
            # the second asks for disk_gb 2, which the test driver does not make: not counted
            r = cl.launch(body(f"u{k}", iid, mem=64 + 32 * k, disk=2 if k == 1 else 0, project_id=PROJECT,
                               user_id=USER))
            assert r["instance"]["id"] == iid
            assert cl.wait_operation(r["operation"]["id"])["state"] == "succeeded"
        want_usage(3, 64 + 96 + 128)

    with c.case("each allocation: consumer = instance id, its resources, the launch's project and user"):
        a = consumer_allocs(purl, ids[1])
        assert len(a) == 1 and a[0]["resource_provider"] == st["rp"], short(a)
        # its flavor's disk_gb 2 is not there (the test driver makes no disk): no DISK_GB
        assert a[0]["resources"] == {"VCPU": 1, "MEMORY_MB": 96}, short(a)
        assert usage(purl, st["rp"]).get("DISK_GB", 0) == 0, short(usage(purl, st["rp"]))
        assert cl.instance(ids[1])["flavor"]["disk_gb"] == 2
        raw = placement(purl, "GET", f"/allocations/{ids[1]}")
        raw = raw[1] if isinstance(raw, tuple) else raw
        assert raw["project_id"] == PROJECT and raw["user_id"] == USER, short(raw)

    with c.case("terminate removes the instance's allocation"):
        r = cl.terminate(ids[0])
        cl.wait_operation(r["operation"]["id"])
        want_usage(2, 96 + 128)
        assert consumer_allocs(purl, ids[0]) == [], short(consumer_allocs(purl, ids[0]))

    with c.case("Placement down: two launches and a terminate; back up: the usage is right, nothing doubled"):
        proxy.set_mode("down")
        more = [str(uuid.uuid4()) for _ in range(2)]
        for k, iid in enumerate(more):
            r = cl.launch(body(f"o{k}", iid))
            assert cl.wait_operation(r["operation"]["id"])["state"] == "succeeded"
        r = cl.terminate(ids[1])
        cl.wait_operation(r["operation"]["id"])
        assert usage(purl, st["rp"]).get("VCPU", 0) == 2, "usage changed while Placement was unreachable"
        proxy.set_mode("pass")
        want_usage(3, 128 + 64 + 64)
        for iid in more:
            a = consumer_allocs(purl, iid)
            assert len(a) == 1 and a[0]["resources"] == {"VCPU": 1, "MEMORY_MB": 64}, short(a)
        st["live"] = [ids[2]] + more

    with c.case("kill -9 right after a launch was journaled: after the restart one allocation, no double"):
        assert agent.stop() == 0
        agent.start(timeout=30, env={"COMPUTE_AGENT_CRASH_AT": "launch:claimed"})
        crash = str(uuid.uuid4())
        try:
            cl.call("POST", "/v1/instances", body("crash", crash))
        except Exception:  # noqa: BLE001 - the agent dies before it answers
            pass
        rc = agent.wait_exit(timeout=30)
        assert rc < 0, f"agent exit {rc}, expected a kill at the crash point"
        agent.start(timeout=30)
        cl = agent.client()
        cl.wait_state(crash, "running", timeout=30)
        # the test driver's domains die with the agent's process: the others come back in error,
        # holding nothing here, so (allocations = agent) their allocations go too
        errs = [i["id"] for i in cl.instances() if i["state"] == "error"]
        assert set(errs) == set(st["live"]), f"in error {errs}, expected {st['live']}"
        want_usage(1, 64)
        a = consumer_allocs(purl, crash)
        assert len(a) == 1 and a[0]["resources"] == {"VCPU": 1, "MEMORY_MB": 64}, short(a)
        st["live"] = [crash]

    ghost = str(uuid.uuid4())
    with c.case("usage_heal = fix: a terminated instance's allocation put back is removed; a stranger's kept"):
        for iid, mem in ((ids[0], 64), (ghost, 32)):
            placement(purl, "PUT", f"/allocations/{iid}", {
                "allocations": {st["rp"]: {"resources": {"VCPU": 1, "MEMORY_MB": mem}}},
                "project_id": PROJECT, "user_id": USER, "consumer_generation": None, "consumer_type": "INSTANCE"})
        calib.wait_for(lambda: consumer_allocs(purl, ids[0]) == [], 40, what="the terminated one's allocation gone")
        assert len(consumer_allocs(purl, ghost)) == 1, "an unknown consumer's allocation was touched"
        placement(purl, "DELETE", f"/allocations/{ghost}")

    with c.case("after everything: Placement's consumers on this provider are exactly the live instances"):
        al = placement(purl, "GET", f"/resource_providers/{st['rp']}/allocations")
        al = al[1] if isinstance(al, tuple) else al
        assert set(al["allocations"]) == set(st["live"]), f"{sorted(al['allocations'])} != {sorted(st['live'])}"
        for iid in st["live"]:
            cl.terminate(iid)
        want_usage(0, 0)

    with c.case("allocations = scheduler: a launch without an allocation is reported at once"):
        assert agent.stop() == 0
        conf.write_text("[placement]\nusage_check_interval = 600\n[bus]\nheartbeat_interval = 5\n")
        agent.start(timeout=30)
        cl = agent.client()
        iid = str(uuid.uuid4())
        r = cl.launch(body("sched", iid))
        calib.wait_for(lambda: any("no allocation in Placement" in x and f"instance={iid}" in x
                                   for x in agent.log_path.read_text(errors="replace").splitlines()), 20,
                       what="the missing allocation in the log (interval is 600 s)")
        m = cl.request_raw("GET", "/metrics")
        line = [x for x in m.raw.decode().splitlines()
                if x.startswith("compute_agent_placement_allocations_missing_total ")]
        assert line and float(line[0].split()[1]) >= 1, f"metric: {line}"
        assert cl.wait_operation(r["operation"]["id"])["state"] == "succeeded"
        assert usage(purl, st["rp"]).get("VCPU", 0) == 0, "with scheduler the agent wrote an allocation"
        st["sched"] = iid

    with c.case("allocations = scheduler: terminate removes the scheduler's allocation"):
        iid = st["sched"]
        placement(purl, "PUT", f"/allocations/{iid}", {
            "allocations": {st["rp"]: {"resources": {"VCPU": 1, "MEMORY_MB": 64}}},
            "project_id": PROJECT, "user_id": USER, "consumer_generation": None, "consumer_type": "INSTANCE"})
        want_usage(1, 64)
        r = cl.terminate(iid)
        cl.wait_operation(r["operation"]["id"])
        want_usage(0, 0)

    with c.case("agent stops cleanly"):
        assert agent.stop() == 0
    proxy.close()


if __name__ == "__main__":
    calib.run("test_placement_usage", main)
