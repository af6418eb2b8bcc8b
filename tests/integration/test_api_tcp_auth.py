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
    for scheme in ("bearer", "BEARER", "BeArEr"):
        with c.case(f"scheme '{scheme}' (case-insensitive, RFC 7235) with the token -> 200"):
            r = tcp().request("GET", "/v1/host", headers={"Authorization": f"{scheme} {token}"})
            assert r.status == 200, f"-> {r.status} {short(r.json)}"
    with c.case("'Bearer' and the token apart by two spaces -> 200"):
        r = tcp().request("GET", "/v1/host", headers={"Authorization": f"Bearer  {token}"})
        assert r.status == 200, f"-> {r.status} {short(r.json)}"
    # libmicrohttpd 0.9.75 ends a header value at a NUL byte (bytes after it never reach the
    # agent), so a NUL cannot shorten the compare: the part before it must be the whole token
    for what, value in (("the token cut by a NUL byte", f"Bearer {token[:-4]}\0{token[-4:]}"),
                        ("a NUL byte, then the token", f"Bearer \0{token}"),
                        ("the token, a space and junk", f"Bearer {token} junk"),
                        ("'Bearer' glued to the token", f"Bearer{token}")):
        with c.case(f"{what} -> 401 (the whole value is compared)"):
            r = tcp().request_raw("GET", "/v1/host", headers={"Authorization": value})
            expect_error((r.status, r.json), 401, "unauthorized", what=what)

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

    # --api-token-file: the token stays out of /proc/PID/cmdline
    tokfile = d / "token"
    tokfile.write_text(token + "\n")
    os.chmod(tokfile, 0o600)
    port3 = free_port()
    a3 = calib.Agent(d / "state3", hypervisor="test", api_listen=f"127.0.0.1:{port3}",
                     extra_args=["--api-token-file", str(tokfile)])
    c.agents.append(a3)
    with c.case("--api-token-file: the token from the file (its newline dropped) is required on TCP"):
        a3.start(timeout=30)
        cl3 = calib.Client(tcp=("127.0.0.1", port3), token=token)
        st, b = cl3.call("GET", "/v1/host")
        assert st == 200, f"-> {st} {short(b)}"
        expect_error(calib.Client(tcp=("127.0.0.1", port3)).call("GET", "/v1/host"), 401, "unauthorized",
                     what="no token")
    with c.case("--api-token-file: the token is not in /proc/PID/cmdline"):
        cmdline = open(f"/proc/{a3.proc.pid}/cmdline", "rb").read()
        assert token.encode() not in cmdline, "the token is readable from the command line"
    a3.stop(timeout=30)

    def refused(what, args, field, tag):
        ag = calib.Agent(d / f"state-{tag}", hypervisor="test", api_listen=f"127.0.0.1:{free_port()}",
                         extra_args=args)
        c.agents.append(ag)
        with c.case(f"{what}: refuses to start, naming {field}"):
            ag.start(wait=False)
            rc = ag.wait_exit(15)
            if rc is None:
                ag.kill()
                raise AssertionError("still running after 15 s")
            log = ag.log_path.read_text(errors="replace")
            assert rc != 0, "exited 0"
            assert field in log, f"the error does not name {field}: {log[-600:]}"

    short_tok = d / "short"
    short_tok.write_text("0123456789abcde\n")  # 15 bytes
    os.chmod(short_tok, 0o600)
    open_tok = d / "open"
    open_tok.write_text(token + "\n")
    os.chmod(open_tok, 0o644)
    refused("--api-token of 15 bytes", ["--api-token", "0123456789abcde"], "api.token", "short")
    refused("--api-token-file holding 15 bytes", ["--api-token-file", str(short_tok)], "api.token_file",
            "shortfile")
    refused("--api-token-file readable by every user", ["--api-token-file", str(open_tok)], "api.token_file",
            "open")
    refused("--api-token-file that does not exist", ["--api-token-file", str(d / "nope")], "api.token_file",
            "missing")
    refused("both --api-token and --api-token-file", ["--api-token", token, "--api-token-file", str(tokfile)],
            "api.token_file", "both")

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
