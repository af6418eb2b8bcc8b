#!/usr/bin/env python3
"""Guest interfaces on the test driver (issue 10), the agent in a network namespace of its own:

- launches with interfaces: the instance JSON shows each port (network, MAC fa:16:3e:..., the
  lowest free IP, device tap+port id, state), the launch journals `ports` before `defined`,
  the instance runs, its ports are `plugged`; with the real net-plug, the test driver's ports
  are veth pairs in the agent's netns (host end in the bridge, peer `<dev>p`);
- MACs and IPs stay unique across a graceful restart and a kill -9 (the test driver loses
  its domains with the process: the instances end in error, their ports stay reserved, their
  devices are removed by the reconcile's netplug_sync);
- terminate releases the ports (`unplugged` journaled; the IP is handed out again; the
  devices are gone);
- crash points launch:ports (between plug and define) and terminate:destroyed (between
  destroy and unplug): after a restart the launch ends running, the terminate terminated,
  nothing leaked (ports rows, devices);
- a config drive on the test driver: built by the metadata library (or, with its stub,
  the launch fails naming config_drive and rolls back: ports unplugged, kept reserved).
Without net-plug (helper C's stub) the plug is pretended (CA_NETPLUG_STUB_OK=1) and the
device checks are skipped."""

import os
import sqlite3
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
import netns_agent  # noqa: E402
from calib import short  # noqa: E402


def main(c: calib.Checks):
    calib.require_agent_binary()
    why = netns_agent.have_netns()
    if why:
        calib.skip(why)
    stub = netns_agent.netplug_is_stub()
    d = calib.tmpdir("cac-netports-")
    files = calib.make_fake_files(d)
    ns = netns_agent.Netns()
    conf = netns_agent.write_conf(d)
    agent = netns_agent.NsAgent(ns, d / "state", hypervisor="test", extra_args=["--config", str(conf)],
                                env={"CA_NETPLUG_STUB_OK": "1"})
    c.agents.append(agent)
    with c.case("agent starts in its netns", fatal=True):
        agent.start(timeout=30)
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)
    if stub:
        calib.log("net-plug is helper C's stub: plugs are pretended, device checks skipped")

    def body(name, ifaces, **over):
        b = {"name": name, "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
             "image": {"path": files["image"]}, "interfaces": ifaces}
        b.update(over)
        return b

    def launch_ok(name, ifaces, **over):
        r = cl.launch(body(name, ifaces, **over))
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "succeeded", short(op)
        return cl.wait_state(r["instance"]["id"], "running", timeout=30)

    def ports_rows():
        db = sqlite3.connect(f"file:{d / 'state' / 'agent.db'}?mode=ro", uri=True)
        try:
            return db.execute("SELECT instance_uuid, network, mac, ip, device, state FROM ports").fetchall()
        finally:
            db.close()

    def check_devices(inst, present=True):
        if stub:
            return
        links = ns.links()
        for i in inst["interfaces"]:
            if present:
                assert i["device"] in links and i["device"] + "p" in links, \
                    f"{i['device']} (+p) missing from the netns: {links}"
            else:
                assert i["device"] not in links and i["device"] + "p" not in links, \
                    f"{i['device']} still in the netns: {links}"

    seen_macs, seen_ips = set(), set()

    def check_unique(inst):
        for i in inst["interfaces"]:
            assert i["mac"] not in seen_macs, f"MAC {i['mac']} handed out twice"
            key = (i["network"], i["ip"])
            assert i["ip"] is None or key not in seen_ips, f"IP {key} handed out twice"
            seen_macs.add(i["mac"])
            if i["ip"]:
                seen_ips.add(key)

    a = b = None
    with c.case("launch A (n1 + n2, hostname, keys, metadata): ports in the JSON, plugged, running", fatal=True):
        a = launch_ok(calib.unique("a"), [{"network": "n1"}, {"network": "n2", "mtu": 1400}],
                      hostname="vm-a", metadata={"role": "web"}, availability_zone="az1",
                      public_keys={"k": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh1bnRlcjI= u@h"})
        ifs = a["interfaces"]
        assert [(i["network"], i["ip"], i["state"]) for i in ifs] == \
            [("n1", "10.77.0.2", "plugged"), ("n2", "10.78.0.2", "plugged")], short(ifs)
        for i in ifs:
            assert i["mac"].startswith("fa:16:3e:"), i["mac"]
            assert i["device"] == "tap" + i["port_id"][:11], i
        assert ifs[1]["mtu"] == 1400 and ifs[0]["mtu"] is None, short(ifs)
        assert (a["hostname"], a["availability_zone"], a["config_drive"]) == ("vm-a", "az1", False), short(a)
        assert a["metadata"] == {"role": "web"} and a["key_names"] == ["k"], short(a)
        check_unique(a)
        check_devices(a)

    with c.case("launch B with a given MAC and IP: used as given"):
        b = launch_ok(calib.unique("b"), [{"network": "n1", "mac": "02:ca:fe:00:00:01", "ip": "10.77.0.9"}])
        assert [(i["mac"], i["ip"]) for i in b["interfaces"]] == [("02:ca:fe:00:00:01", "10.77.0.9")], \
            short(b["interfaces"])
        check_unique(b)
        check_devices(b)

    with c.case("the launch journaled ports before defined (operation steps in the log)"):
        log = agent.log_path.read_text(errors="replace")
        i_ports = log.find(f"instance={a['id']}")
        assert "step=ports" in log and "step=defined" in log, "no ports/defined steps logged"
        assert log.find("step=ports", i_ports) < log.find("step=defined", i_ports), "ports after defined"

    with c.case("graceful restart: the ports stay reserved as they were; new ones unique"):
        agent.restart(graceful=True)
        # the test driver keeps its domains in the agent's process: after a restart they are
        # gone and the instances in error; their ports stay reserved (MACs and IPs held until
        # terminate), their devices are removed by the reconcile's sync
        a2 = cl.wait_state(a["id"], "error", timeout=30)
        assert a2["interfaces"] == a["interfaces"], f"{short(a['interfaces'])} -> {short(a2['interfaces'])}"
        c3 = launch_ok(calib.unique("c"), [{"network": "n1"}, {"network": "n1"}])
        assert [i["ip"] for i in c3["interfaces"]] == ["10.77.0.3", "10.77.0.4"], short(c3["interfaces"])
        check_unique(c3)
        check_devices(a2, present=False)
        check_devices(c3)

    with c.case("kill -9 and restart: still unique"):
        agent.restart(graceful=False)
        c4 = launch_ok(calib.unique("d"), [{"network": "n1"}, {"network": "n2"}])
        assert [i["ip"] for i in c4["interfaces"]] == ["10.77.0.5", "10.78.0.3"], short(c4["interfaces"])
        check_unique(c4)
        check_devices(c4)

    with c.case("terminate B: unplugged journaled, ports released, its IP handed out again"):
        r = cl.terminate(b["id"])
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "succeeded", short(op)
        t = cl.wait_state(b["id"], "terminated", timeout=30)
        assert t["interfaces"] == [], short(t)
        assert all(row[0] != b["id"] for row in ports_rows()), "B's ports still in the store"
        log = agent.log_path.read_text(errors="replace")
        assert "type=terminate step=unplugged" in log, "no unplugged step logged"
        check_devices(b, present=False)
        e = launch_ok(calib.unique("e"), [{"network": "n1", "ip": "10.77.0.9", "mac": "02:ca:fe:00:00:01"}])
        assert e["interfaces"][0]["ip"] == "10.77.0.9", short(e["interfaces"])

    def crash_run(point, fn):
        agent.restart(graceful=True, env={"COMPUTE_AGENT_CRASH_AT": point})
        res = None
        try:
            res = fn()
        except Exception as ex:  # noqa: BLE001 - the crash may cut the answer
            calib.log(f"     ({point}: request cut by the crash: {type(ex).__name__})")
        rc = agent.wait_exit(30)
        assert rc == -9, f"agent did not die at {point} (rc {rc})"
        agent.kill()
        agent.start(timeout=30)
        return res

    with c.case("crash at launch:ports (plugged, not defined): restart resumes, running, ports plugged"):
        name = calib.unique("crashp")
        crash_run("launch:ports", lambda: cl.launch(body(name, [{"network": "n1"}])))
        inst = [i for i in cl.instances() if i["name"] == name]
        assert len(inst) == 1, f"{len(inst)} instances named {name}"
        i = cl.wait_state(inst[0]["id"], "running", timeout=30)
        assert [p["state"] for p in i["interfaces"]] == ["plugged"], short(i["interfaces"])
        check_unique(i)
        check_devices(i)

    with c.case("crash at terminate:destroyed (destroyed, not unplugged): restart ends terminated, released"):
        target = cl.instance(a["id"])
        crash_run("terminate:destroyed", lambda: cl.terminate(a["id"]))
        t = cl.wait_state(a["id"], "terminated", timeout=30)
        assert t["interfaces"] == [], short(t)
        assert all(row[0] != a["id"] for row in ports_rows()), "A's ports leaked in the store"
        check_devices(target, present=False)

    with c.case("config drive on the test driver"):
        r = cl.launch(body(calib.unique("cd"), [{"network": "n1"}], config_drive=True))
        op = cl.wait_operation(r["operation"]["id"], timeout=60)
        inst = cl.instance(r["instance"]["id"])
        assert inst["config_drive"] is True, short(inst)
        if netns_agent.metadata_is_stub():
            assert op["state"] == "failed" and "config drive" in op["error"]["message"], short(op)
            assert inst["state"] == "error", short(inst)
            assert [p["state"] for p in inst["interfaces"]] == ["unplugged"], short(inst["interfaces"])
            check_devices(inst, present=False)
        else:
            assert op["state"] == "succeeded", short(op)
            assert (d / "state" / "instances" / inst["id"] / "config.iso").exists(), "no config.iso"

    with c.case("every port row belongs to a live or error instance; devices match the store"):
        live = {i["id"] for i in cl.instances() if i["state"] != "terminated"}
        rows = ports_rows()
        assert all(r[0] in live for r in rows), f"orphan ports: {rows}"
        if not stub:
            ok = {i["id"] for i in cl.instances() if i["state"] not in ("terminated", "error")}
            plugged = {r[4] for r in rows if r[5] == "plugged" and r[0] in ok}
            taps = {x for x in ns.links() if x.startswith("tap") and not x.endswith("p")}
            assert taps == plugged, f"devices {taps} != plugged ports {plugged}"

    with c.case("every answer matches api-spec/openapi.yaml"):
        spec_log.check(c)
    agent.stop()


if __name__ == "__main__":
    calib.run("test_net_ports_test_driver", main)
