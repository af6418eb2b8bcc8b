#!/usr/bin/env python3
"""Slow and half-open clients cannot take the API away, on the unix socket and on TCP.

1. 2000 connections that each send half a request head and wait: a fresh (authenticated)
   client is served within 2 s while they are held (on TCP they come from 127.0.0.1 and the
   fresh client from 127.0.0.2: the per-address limit keeps all but api.per_address_limit of
   them out), they are closed at api.header_timeout, and a fresh client is served within 1 s
   after they are cut or after they close.
2. A client trickling its request head a byte at a time is closed at api.header_timeout
   (MHD's own timeout is an idle timeout which such a client never meets); one trickling its
   body is closed at api.request_timeout. A long-poll (?wait=) longer than request_timeout
   is answered, not cut.
3. The listener is never lost: an agent at its connection limit (api.max_connections) whose
   connections all close at once, or are all cut at their deadline in one go, answers a
   fresh client within 1 s. (libmicrohttpd takes its listen socket out of its epoll set at
   the limit and puts it back only at the start of a later run; the agent used to run it
   no more, and never accepted again.)
"""

import hashlib
import os
import resource
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

N = 2000            # half-open connections held
HEADER_TIMEOUT = 4  # api.header_timeout of the agent under test
REQUEST_TIMEOUT = 7  # api.request_timeout
PER_ADDRESS = 64    # api.per_address_limit
LIMIT = 32          # api.max_connections of the agent at its limit
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        calib.skip(f"RLIMIT_NOFILE hard limit {hard} < {need} descriptors this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else need, hard))


def family(addr):
    return socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET


def open_half(addr, n, deadline_s=20.0, patience=None):
    """n connections to addr that each sent HALF_HEAD (non-blocking afterwards).
    patience: stop after that many connects in a row time out (a full accept queue)."""
    socks, misses = [], 0
    end = time.monotonic() + deadline_s
    while len(socks) < n:
        assert time.monotonic() < end, f"only {len(socks)} of {n} connections to {addr} within {deadline_s:g}s"
        s = socket.socket(family(addr), socket.SOCK_STREAM)
        s.settimeout(0.5 if patience else 3.0)
        try:
            s.connect(addr)
        except OSError:
            s.close()
            misses += 1
            if patience and misses >= patience:
                break
            continue
        misses = 0
        try:
            s.sendall(HALF_HEAD)
        except OSError:
            pass  # refused by a limit; still a connection the client made
        s.setblocking(False)
        socks.append(s)
    return socks


def is_open(s):
    """Our end still sees the connection open (no EOF, no reset from the agent)."""
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def count_open(socks):
    return sum(1 for s in socks if is_open(s))


def close_all(socks):
    for s in socks:
        s.close()
    socks.clear()


def connect_waiting(s, addr, timeout):
    """connect as a blocking client does. A socket with a timeout is non-blocking inside
    Python, and a non-blocking AF_UNIX connect says EAGAIN at once while the listen backlog
    is full, where a blocking one waits for room. So connect blocking, bounded by
    SO_SNDTIMEO (which a blocking AF_UNIX connect obeys), then restore the timeout."""
    if family(addr) != socket.AF_UNIX:
        s.connect(addr)
        return
    s.setblocking(True)
    sec = int(timeout)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                 struct.pack("ll", sec, int((timeout - sec) * 1e6)))
    s.connect(addr)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))
    s.settimeout(timeout)


def raw_get(addr, path, token=None, src=None, timeout=5.0):
    """GET path on a fresh connection (from source address src on TCP); the status."""
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if src:
            s.bind((src, 0))
        connect_waiting(s, addr, timeout)
        head = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        s.sendall((head + "\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            ch = s.recv(4096)
            if not ch:
                break
            data += ch
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 "), f"GET {path}: no HTTP answer ({data[:80]!r})"
    return int(data.split()[1])


def served_within(what, fn, limit_s):
    """fn() -> status; assert 200 within limit_s (the client gives up at limit_s + 3)."""
    t0 = time.monotonic()
    try:
        st = fn(limit_s + 3)
    except OSError as e:
        raise AssertionError(f"{what}: {type(e).__name__} {e} after {time.monotonic() - t0:.2f}s")
    el = time.monotonic() - t0
    assert st == 200, f"{what}: status {st}"
    assert el <= limit_s, f"{what}: served after {el:.2f}s (limit {limit_s:g}s)"
    return el


def trickle(addr, payload_head, trickle_bytes, every=0.5, give_up=30.0):
    """Send payload_head, then one byte of trickle_bytes every `every` s until the agent closes
    the connection; seconds from connect to the close (or give_up)."""
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(addr)
    t0 = time.monotonic()
    try:
        if payload_head:
            s.sendall(payload_head)
        s.setblocking(False)
        i = 0
        while time.monotonic() - t0 < give_up:
            if not is_open(s):
                return time.monotonic() - t0
            try:
                s.send(trickle_bytes[i % len(trickle_bytes):i % len(trickle_bytes) + 1])
            except OSError:
                return time.monotonic() - t0
            i += 1
            # wait `every` s, or less if the agent closes first
            end = time.monotonic() + every
            while time.monotonic() < end:
                if not is_open(s):
                    return time.monotonic() - t0
                time.sleep(0.02)
        return give_up
    finally:
        s.close()


class Staller:
    """An HTTP 'image server' that accepts and never answers: a launch from it stays running."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.t.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


def write_config(path, **api):
    path.write_text("[api]\n" + "".join(f"{k} = {v}\n" for k, v in api.items())
                    + "[image_cache]\nstall_timeout = 60\n"
                    # the long-poll case pulls from a server on loopback
                    + "allowed_networks = 127.0.0.0/8\n")
    return path


def main(c: calib.Checks):
    calib.require_agent_binary()
    raise_nofile(3 * N + 500)
    d = calib.tmpdir("ca-slow-")
    token = "slowloris-" + calib.unique("tok")
    tokfile = d / "token"
    tokfile.write_text(token + "\n")
    os.chmod(tokfile, 0o600)
    port = free_port()
    conf = write_config(d / "agent.conf", header_timeout=HEADER_TIMEOUT, request_timeout=REQUEST_TIMEOUT,
                        per_address_limit=PER_ADDRESS, token_file=tokfile)
    agent = calib.Agent(d / "state", hypervisor="test", api_listen=f"127.0.0.1:{port}", log_level="info",
                        extra_args=["--config", str(conf)])
    c.agents.append(agent)
    with c.case("agent starts (unix socket + TCP, token from api.token_file)", fatal=True):
        agent.start(timeout=30)
        assert raw_get(("127.0.0.1", port), "/v1/host", token) == 200
    sock = str(agent.sock)
    tcp = ("127.0.0.1", port)

    def fresh_unix(t):
        return raw_get(sock, "/healthz", timeout=t)

    def fresh_tcp(t):
        return raw_get(tcp, "/v1/host", token, src="127.0.0.2", timeout=t)

    for kind, addr, fresh in (("unix", sock, fresh_unix), ("TCP", tcp, fresh_tcp)):
        socks = []
        try:
            with c.case(f"{kind}: {N} half-open connections held; a fresh client is served within 2 s"):
                t_open = time.monotonic()
                socks = open_half(addr, N)
                t_opened = time.monotonic()
                el = served_within(f"{kind} fresh client", fresh, 2.0)
                held = count_open(socks)
                since = time.monotonic() - t_opened
                assert since < HEADER_TIMEOUT, f"the check took {since:.1f}s: past the header deadline"
                if kind == "unix":
                    assert held == N, f"only {held} of {N} still open when the fresh client was served"
                print(f"     (opened {N} in {t_opened - t_open:.2f}s; fresh client served in {el:.3f}s; "
                      f"{held} still open)")
            if kind == "TCP":
                with c.case(f"TCP: at most api.per_address_limit ({PER_ADDRESS}) of them stay open"):
                    calib.wait_for(lambda: count_open(socks) <= PER_ADDRESS, timeout=2,
                                   what="the agent to refuse the connections over the per-address limit",
                                   last=lambda: f"{count_open(socks)} open")
                    held = count_open(socks)
                    assert held >= PER_ADDRESS // 2, f"only {held} held: the attack did not take its slots"
            with c.case(f"{kind}: they are closed at the header deadline ({HEADER_TIMEOUT}s)"):
                calib.wait_for(lambda: count_open(socks) == 0, timeout=HEADER_TIMEOUT + 3,
                               what="the half-open connections to be closed",
                               last=lambda: f"{count_open(socks)} still open")
                late = time.monotonic() - t_opened
                assert late <= HEADER_TIMEOUT + 1.5, f"the last was closed {late:.2f}s after the last opened"
            with c.case(f"{kind}: a fresh client is served within 1 s after they are cut"):
                served_within(f"{kind} fresh client after the cut", fresh, 1.0)
            with c.case(f"{kind}: {N} half-open connections close: a fresh client is served within 1 s"):
                close_all(socks)
                socks = open_half(addr, N)
                close_all(socks)
                el = served_within(f"{kind} fresh client after the close", fresh, 1.0)
                print(f"     (served {el:.3f}s after the close)")
        finally:
            close_all(socks)

        with c.case(f"{kind}: a request head trickled a byte every 0.5 s is closed at the header deadline"):
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
            el = trickle(addr, b"", head)
            assert HEADER_TIMEOUT - 0.5 <= el <= HEADER_TIMEOUT + 1.0, \
                f"closed after {el:.2f}s (header deadline {HEADER_TIMEOUT}s)"
        with c.case(f"{kind}: a whole request, then a half-close (shutdown SHUT_WR), is still answered"):
            s2 = socket.socket(family(addr), socket.SOCK_STREAM)
            s2.settimeout(5)
            try:
                s2.connect(addr)
                auth = f"Authorization: Bearer {token}\r\n" if kind == "TCP" else ""
                s2.sendall(f"GET /v1/host HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
                s2.shutdown(socket.SHUT_WR)
                data = b""
                while True:
                    ch = s2.recv(65536)
                    if not ch:
                        break
                    data += ch
            finally:
                s2.close()
            assert data.startswith(b"HTTP/1.1 200"), f"answer {data[:80]!r}"
        with c.case(f"{kind}: a body trickled a byte every 0.5 s is closed at the request deadline"):
            auth = f"Authorization: Bearer {token}\r\n" if kind == "TCP" else ""
            head = (f"POST /v1/instances HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                    "Content-Length: 500\r\n\r\n").encode()
            el = trickle(addr, head, b" ")
            assert REQUEST_TIMEOUT - 0.5 <= el <= REQUEST_TIMEOUT + 1.0, \
                f"closed after {el:.2f}s (request deadline {REQUEST_TIMEOUT}s)"

    staller = Staller()
    try:
        with c.case(f"a long-poll (?wait={REQUEST_TIMEOUT + 2}) outlives the request deadline and is answered"):
            cl = agent.client()
            digest = "sha256:" + hashlib.sha256(b"never sent").hexdigest()
            st, b = cl.call("POST", "/v1/instances", {
                "name": "stalled", "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
                "image": {"url": f"http://127.0.0.1:{staller.port}/img.raw", "digest": digest}})
            assert st == 202, f"launch -> {st} {short(b)}"
            op = b["operation"]["id"]
            wait = REQUEST_TIMEOUT + 2
            t0 = time.monotonic()
            st, body = calib.Client(agent.sock, timeout=wait + 10).get(f"/v1/operations/{op}?wait={wait}")
            el = time.monotonic() - t0
            assert st == 200, f"long-poll -> {st} {short(body)}"
            assert body["state"] in ("pending", "running"), f"the operation ended: {short(body)}"
            assert wait - 0.5 <= el <= wait + 2, f"answered after {el:.2f}s (wait {wait})"
    finally:
        staller.close()

    with c.case("agent exits 0 on SIGTERM"):
        assert agent.stop(timeout=30) == 0

    # 3. The listener at its connection limit.
    port2 = free_port()
    conf2 = write_config(d / "limit.conf", header_timeout=3, max_connections=LIMIT, per_address_limit=1000,
                         token_file=tokfile)
    lim = calib.Agent(d / "state-limit", hypervisor="test", api_listen=f"127.0.0.1:{port2}", log_level="info",
                      extra_args=["--config", str(conf2)])
    c.agents.append(lim)
    with c.case(f"agent with api.max_connections = {LIMIT} starts", fatal=True):
        lim.start(timeout=30)
    sock2 = str(lim.sock)
    tcp2 = ("127.0.0.1", port2)
    for kind, addr, fresh in (("unix", sock2, lambda t: raw_get(sock2, "/healthz", timeout=t)),
                              ("TCP", tcp2, lambda t: raw_get(tcp2, "/v1/host", token, timeout=t))):
        socks = []
        try:
            with c.case(f"{kind}: at the connection limit, every connection cut at the deadline at once: "
                        "a fresh client is served within 1 s"):
                # exactly the limit: all accepted, then all cut in one sweep
                socks = open_half(addr, LIMIT)
                calib.wait_for(lambda: count_open(socks) == 0, timeout=3 + 3,
                               what="the connections to be cut at the header deadline",
                               last=lambda: f"{count_open(socks)} still open")
                served_within(f"{kind} fresh client after the cut at the limit", fresh, 1.0)
            with c.case(f"{kind}: at the connection limit with a full queue, all close at once: "
                        "a fresh client is served within 1 s"):
                socks = open_half(addr, 2000, patience=3)  # the limit, then the accept queue
                assert len(socks) > LIMIT + 50, f"only {len(socks)} connections: the limit was not reached"
                close_all(socks)
                served_within(f"{kind} fresh client after the close at the limit", fresh, 1.0)
        finally:
            close_all(socks)
    with c.case("agent at its limit exits 0 on SIGTERM"):
        assert lim.stop(timeout=30) == 0


if __name__ == "__main__":
    calib.run("test_api_slowloris", main)
