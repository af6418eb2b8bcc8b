#!/usr/bin/env python3
"""A lost libvirtd connection (dropped by the daemon with `virt-admin
client-disconnect`) is noticed from libvirt's close callback, re-opened with
backoff and the state re-reconciled: a guest shut off while the agent was
disconnected is seen as stopped afterwards. Also: SIGHUP reloads the log
level and refuses a broken configuration without changing anything."""

import os
import re
import signal
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402


def agent_clients():
    """Client ids libvirtd serves now."""
    out = subprocess.run(["virt-admin", "srv-clients-list", "libvirtd"], capture_output=True, text=True)
    if out.returncode != 0:
        calib.skip(f"virt-admin cannot reach libvirtd's admin socket: {out.stderr.strip()}")
    return {int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+unix", out.stdout, re.M)}


def log_text(agent):
    with open(agent.log_path, "rb") as f:
        return f.read().decode(errors="replace")


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    calib.require_agent_binary()
    d = calib.tmpdir("ca-reconnect-")
    prefix = calib.unique("ca-it-reconn")
    conf = d / "agent.conf"
    conf.write_text("[agent]\nlog_level = info\n")
    before = agent_clients()
    agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri,
                        extra_args=["--config", str(conf)], log_level="info")
    c.agents.append(agent)
    created = set()
    try:
        with c.case("agent starts on the real libvirtd", fatal=True):
            agent.start(timeout=180)
        cl = agent.client(timeout=60)
        mine = agent_clients() - before
        with c.case("the agent holds one libvirtd client connection", fatal=True):
            assert mine, f"no new client among {agent_clients()} (before {before})"
        boot = calib.guest_boot(gdir)
        with c.case("launch a guest -> running", fatal=True):
            r = cl.launch({"name": f"{prefix}-g", "flavor": {"vcpus": 1, "memory_mb": 128, "disk_gb": 0},
                           "kernel": boot})
            iid = r["instance"]["id"]
            created.add(iid)
            op = cl.wait_operation(r["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)

        with c.case("libvirtd drops the agent's connection -> agent sees it and reconnects"):
            n_reconciled = log_text(agent).count("reconciled with the hypervisor")
            for cid in mine:
                subprocess.run(["virt-admin", "client-disconnect", "libvirtd", str(cid)], check=True,
                               capture_output=True)
            # the guest stops while the agent is (briefly) disconnected
            subprocess.run(["virsh", "-c", uri, "destroy", iid], capture_output=True)
            calib.wait_for(lambda: "hypervisor connection lost" in log_text(agent), timeout=30,
                           what="the agent to notice the lost connection")
            calib.wait_for(lambda: log_text(agent).count("reconciled with the hypervisor") > n_reconciled,
                           timeout=60, what="a reconcile after the reconnect")
            assert cl.host()["libvirt"]["connected"] is True

        with c.case("after the reconnect the guest shut off meanwhile shows as stopped"):
            cl.wait_state(iid, "stopped", timeout=30)

        with c.case("SIGHUP reloads the log level (debug lines appear)"):
            conf.write_text("[agent]\nlog_level = debug\n")
            agent.proc.send_signal(signal.SIGHUP)
            calib.wait_for(lambda: "configuration reloaded" in log_text(agent), timeout=10,
                           what="the reload")
            cl.host()
            calib.wait_for(lambda: "level=debug" in log_text(agent), timeout=10, what="a debug line")

        with c.case("SIGHUP with a broken file is refused and nothing changes"):
            conf.write_text("[agent]\nlog_level = loud\n")
            agent.proc.send_signal(signal.SIGHUP)
            calib.wait_for(lambda: "reload refused" in log_text(agent), timeout=10, what="the refusal")
            assert agent.alive(), "the agent died on a bad reload"
            assert cl.host()["libvirt"]["connected"] is True

        with c.case("terminate -> no domain left"):
            r = cl.terminate(iid)
            op = cl.wait_operation(r["operation"]["id"], timeout=60)
            assert op["state"] == "succeeded", short(op)
            out = subprocess.run(["virsh", "-c", uri, "domstate", iid], capture_output=True, text=True)
            assert out.returncode != 0, f"domain still there: {out.stdout}"
            created.discard(iid)
    finally:
        if agent.alive():
            agent.stop()
        calib.cleanup_domains(uri, created, marker=prefix)


if __name__ == "__main__":
    calib.run("test_reconnect_qemu", main)
