#!/usr/bin/env python3
"""One agent per state directory, and api.socket only ever replaces a stale socket.

- A second agent on the same state directory exits at once, non-zero, saying the directory
  is in use by the first one's pid; the first still answers on its socket and its running
  instance is unchanged (the second neither removed the socket nor touched the store).
- --api-socket naming a regular file: the agent refuses to start (error names api.socket)
  and the file is left intact. Naming another agent's live socket: refused too, and that
  agent still answers.
- A stale socket (left by an agent killed with SIGKILL) is replaced on restart.
"""

import os
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402


def exits_at_once(agent, timeout=10.0):
    """Start agent; it must exit non-zero within timeout. Returns its log."""
    t0 = time.monotonic()
    agent.start(wait=False)
    rc = agent.wait_exit(timeout)
    el = time.monotonic() - t0
    if rc is None:
        agent.kill()
        raise AssertionError(f"still running after {timeout:g}s; log:\n{agent.log_tail()}")
    assert rc != 0, f"exited 0; log:\n{agent.log_tail()}"
    return agent.log_path.read_text(errors="replace"), el


def main(c: calib.Checks):
    calib.require_agent_binary()
    d = calib.tmpdir("ca-lock-")
    files = calib.make_fake_files(d)
    state = d / "state"
    first = calib.Agent(state, hypervisor="test")
    c.agents.append(first)
    with c.case("first agent starts", fatal=True):
        first.start(timeout=30)
    cl = first.client()
    with c.case("an instance runs under the first agent", fatal=True):
        b = cl.launch({"name": "locked", "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 0},
                       "image": {"path": files["image"]}})
        iid = b["instance"]["id"]
        before = cl.wait_state(iid, "running")
    with c.case("the lock file holds the first agent's pid"):
        text = (state / "agent.lock").read_text().strip()
        assert text == str(first.proc.pid), f"agent.lock holds {text!r}, pid is {first.proc.pid}"

    second = calib.Agent(state, hypervisor="test")
    c.agents.append(second)
    with c.case("a second agent on the same state directory exits at once, naming the holder's pid"):
        log, el = exits_at_once(second)
        want = f"is in use by pid {first.proc.pid}"
        assert want in log, f"no '{want}' in its output:\n{log[-2000:]}"
        assert "agent.state_dir" in log, f"the error does not name agent.state_dir:\n{log[-2000:]}"
        print(f"     (exited in {el:.2f}s)")
    with c.case("the first agent still answers on its socket; its instance is unchanged"):
        assert first.sock.is_socket(), f"{first.sock} is gone"
        st, body = cl.get("/healthz")
        assert st == 200, f"/healthz -> {st} {short(body)}"
        after = cl.instance(iid)
        assert after == before, f"instance changed:\n  before {short(before)}\n  after  {short(after)}"

    # --api-socket at a regular file
    other = d / "not-a-socket"
    other.write_bytes(b"precious\n")
    a3 = calib.Agent(d / "state3", hypervisor="test", socket_path=other)
    c.agents.append(a3)
    with c.case("--api-socket naming a regular file: refused (api.socket), the file intact"):
        log, _ = exits_at_once(a3, timeout=30)
        assert "api.socket" in log and "not a socket" in log, f"no clear error:\n{log[-2000:]}"
        assert other.read_bytes() == b"precious\n", "the file was changed or removed"

    # --api-socket at the first agent's live socket, from another state directory
    a4 = calib.Agent(d / "state4", hypervisor="test", socket_path=first.sock)
    c.agents.append(a4)
    with c.case("--api-socket naming another agent's live socket: refused, that agent still answers"):
        log, _ = exits_at_once(a4, timeout=30)
        assert "api.socket" in log and "in use" in log, f"no clear error:\n{log[-2000:]}"
        assert cl.get("/healthz")[0] == 200, "the first agent no longer answers"

    with c.case("a stale socket (agent killed) is replaced on restart"):
        first.kill()
        assert first.sock.is_socket(), "the socket of a killed agent should still be there (stale)"
        first.start(timeout=30)
        assert cl.get("/healthz")[0] == 200

    with c.case("the agent removes its socket when it stops, and the lock is free after"):
        assert first.stop(timeout=30) == 0
        assert not first.sock.exists(), f"{first.sock} left behind"
        again = calib.Agent(state, hypervisor="test")
        c.agents.append(again)
        again.start(timeout=30)
        assert again.stop(timeout=30) == 0


if __name__ == "__main__":
    calib.run("test_state_lock", main)
