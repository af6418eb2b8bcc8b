#!/usr/bin/env python3
"""TCP API (--api-listen) needs `Authorization: Bearer <token>`: none or a wrong one -> 401
unauthorized (Error body), the right one -> 200. Without --api-token the TCP API must not
serve anything unauthenticated (the agent refuses to start, or answers 401).
"""

import os
import socket
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import expect_error, short  # noqa: E402


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main(c: calib.Checks):
    calib.require_agent_binary()
    d = calib.tmpdir("ca-tcp-")
    files = calib.make_fake_files(d)
    token = "s3cret-" + calib.unique("tok")
    port = free_port()
    agent = calib.Agent(d / "state", hypervisor="test", api_listen=f"127.0.0.1:{port}", api_token=token)
    c.agents.append(agent)
    with c.case(f"agent starts with --api-listen 127.0.0.1:{port} --api-token", fatal=True):
        agent.start(timeout=30)

    spec_log = calib.SpecLog()

    def tcp(tok=None):
        return calib.Client(tcp=("127.0.0.1", port), token=tok, spec_log=spec_log)

    with c.case("TCP port accepts connections", fatal=True):
        calib.wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close() or True,
                       timeout=15, what=f"127.0.0.1:{port} to accept")

    for path in ("/v1/host", "/v1/instances"):
        with c.case(f"GET {path} without a token -> 401 unauthorized"):
            expect_error(tcp().call("GET", path), 401, "unauthorized", what="no token")
        with c.case(f"GET {path} with a wrong token -> 401 unauthorized"):
            expect_error(tcp("wrong").call("GET", path), 401, "unauthorized", what="wrong token")
        with c.case(f"GET {path} with the right token -> 200"):
            st, b = tcp(token).call("GET", path)
            assert st == 200, f"-> {st} {short(b)}"

    with c.case("token prefix / token plus a suffix -> 401"):
        expect_error(tcp(token[:-1]).call("GET", "/v1/host"), 401, "unauthorized", what="prefix")
        expect_error(tcp(token + "x").call("GET", "/v1/host"), 401, "unauthorized", what="suffix")
    with c.case("Basic scheme with the token -> 401"):
        r = tcp().request("GET", "/v1/host", headers={"Authorization": f"Basic {token}"})
        expect_error((r.status, r.json), 401, "unauthorized", what="Basic")
    with c.case("'Bearer' with an empty token -> 401"):
        r = tcp().request("GET", "/v1/host", headers={"Authorization": "Bearer "})
        expect_error((r.status, r.json), 401, "unauthorized", what="empty bearer")

    with c.case("POST /v1/instances without a token -> 401 and nothing is created"):
        before = tcp(token).instances()
        st, b = tcp().call("POST", "/v1/instances", {"name": "no-auth", "flavor": {"vcpus": 1, "memory_mb": 64,
                                                                                    "disk_gb": 0},
                                                     "image": {"path": files["image"]}})
        expect_error((st, b), 401, "unauthorized", what="unauthenticated launch")
        assert tcp(token).instances() == before, "instance list changed"

    with c.case("POST /v1/instances with the right token -> 202"):
        st, b = tcp(token).call("POST", "/v1/instances", {"name": "auth-ok", "flavor": {"vcpus": 1, "memory_mb": 64,
                                                                                        "disk_gb": 0},
                                                          "image": {"path": files["image"]}})
        assert st == 202, f"-> {st} {short(b)}"

    with c.case("/healthz over TCP: 200 with the token"):
        st, b = tcp(token).call("GET", "/healthz")
        assert st == 200 and b == {"status": "ok"}, f"-> {st} {short(b)}"
    st, b = tcp().call("GET", "/healthz")
    print(f"     (info) /healthz over TCP without a token -> {st}")

    spec_log.check(c)

    with c.case("agent exits 0 on SIGTERM"):
        rc = agent.stop(timeout=30)
        assert rc == 0, f"exit code {rc}"

    # --api-listen without --api-token
    port2 = free_port()
    a2 = calib.Agent(d / "state2", hypervisor="test", api_listen=f"127.0.0.1:{port2}")
    c.agents.append(a2)
    with c.case("--api-listen without --api-token: refuses to start, or answers 401 to everything"):
        a2.start(wait=False)

        def outcome():
            if not a2.alive():
                return ("exited", a2.proc.returncode)
            try:
                st, b = tcp().call("GET", "/v1/host")
                return ("answered", st, b)
            except OSError:
                return None
        res = calib.wait_for(outcome, timeout=30, what="the agent to exit or answer on TCP")
        if res[0] == "exited":
            assert res[1] != 0, "exited 0"
            print(f"     (agent refused to start, exit code {res[1]}; log: {a2.log_tail(3).strip()})")
        else:
            assert res[1] == 401, f"unauthenticated GET /v1/host over TCP -> {res[1]} {short(res[2])}"
            a2.stop(timeout=30)


if __name__ == "__main__":
    calib.run("test_api_tcp_auth", main)
