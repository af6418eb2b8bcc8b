#!/usr/bin/env python3
"""compute_agent_libvirt_up and compute_agent_placement_up on GET /metrics follow the
connections: the agent reaches libvirtd and Placement through relays this test owns
(sockproxy.py: a unix socket in front of libvirtd's, a loopback port in front of
CA_PLACEMENT_URL); cutting a relay turns its gauge to 0 within a deadline, restoring it
turns it back to 1. Without CA_PLACEMENT_URL only the libvirt half runs."""

import os
import sys
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
import promtext  # noqa: E402
import sockproxy  # noqa: E402

LIBVIRT_SOCK = "/run/libvirt/libvirt-sock"


def metrics(agent):
    conn = calib.UnixHTTPConnection(str(agent.sock), timeout=10)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    text = r.read().decode()
    assert r.status == 200, r.status
    return promtext.parse(text)


def gauge(agent, name):
    return metrics(agent).get(name)


def main(c: calib.Checks):
    uri, _ = calib.libvirt_env()
    if uri != "qemu:///system" or not os.path.exists(LIBVIRT_SOCK):
        calib.skip(f"needs libvirtd on qemu:///system ({LIBVIRT_SOCK}); CA_LIBVIRT_URI={uri}")
    calib.require_agent_binary()
    purl = os.environ.get("CA_PLACEMENT_URL")
    d = calib.tmpdir("ca-up-")
    lv = sockproxy.Proxy(LIBVIRT_SOCK, listen_path=str(d / "libvirt-relay.sock")).start()
    extra = ["--host-name", calib.unique("ca-it-up")]
    pl = None
    if purl:
        u = urllib.parse.urlsplit(purl)
        pl = sockproxy.Proxy((u.hostname, u.port or 80)).start()
        relayed = f"{u.scheme}://127.0.0.1:{pl.port}{u.path}"
        extra += ["--placement-url", relayed, "--placement-token", "admin"]
    agent = calib.Agent(d / "state", hypervisor="qemu",
                        libvirt_uri=f"qemu+unix:///system?socket={d / 'libvirt-relay.sock'}",
                        log_level="info", extra_args=extra)
    c.agents.append(agent)
    try:
        with c.case("agent starts through the relays", fatal=True):
            agent.start(timeout=120)
        with c.case("libvirt connected -> compute_agent_libvirt_up 1"):
            calib.wait_for(lambda: gauge(agent, "compute_agent_libvirt_up") == 1, timeout=30,
                           what="libvirt_up 1")
        with c.case("libvirtd gone (relay cut) -> compute_agent_libvirt_up 0 within 30 s"):
            lv.stop()
            calib.wait_for(lambda: gauge(agent, "compute_agent_libvirt_up") == 0, timeout=30,
                           what="libvirt_up 0")
            assert agent.client().host()["libvirt"]["connected"] is False
        with c.case("libvirtd back -> compute_agent_libvirt_up 1 within 60 s"):
            lv.start()
            calib.wait_for(lambda: gauge(agent, "compute_agent_libvirt_up") == 1, timeout=60,
                           what="libvirt_up 1 again")
        if pl is None:
            c.check(gauge(agent, "compute_agent_placement_up") is None,
                    "no Placement configured -> no compute_agent_placement_up series")
            calib.log("Placement half skipped: CA_PLACEMENT_URL is not set")
            return
        cl = agent.client()
        with c.case("Placement answering -> compute_agent_placement_up 1"):
            calib.wait_for(lambda: cl.host()["provider_uuid"], timeout=60, what="registration")
            calib.wait_for(lambda: gauge(agent, "compute_agent_placement_up") == 1, timeout=30,
                           what="placement_up 1")
        with c.case("Placement gone (relay cut, a trait change to send) -> placement_up 0 within 30 s"):
            pl.stop()
            cl.call("POST", "/v1/host/disable", {})
            calib.wait_for(lambda: gauge(agent, "compute_agent_placement_up") == 0, timeout=30,
                           what="placement_up 0")
        with c.case("Placement back -> compute_agent_placement_up 1 within 60 s"):
            pl.start()
            calib.wait_for(lambda: gauge(agent, "compute_agent_placement_up") == 1, timeout=60,
                           what="placement_up 1 again")
            cl.call("POST", "/v1/host/enable", {})
        with c.case("agent stops cleanly"):
            assert agent.stop() == 0
    finally:
        lv.stop()
        if pl:
            pl.stop()


if __name__ == "__main__":
    calib.run("test_metrics_up_qemu", main)
