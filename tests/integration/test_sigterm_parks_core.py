#!/usr/bin/env python3
"""SIGTERM parks operations, it does not roll them back (test driver): a launch by
image url waits on its image, held half-sent by a loopback HTTP server of this test;
the agent gets SIGTERM and exits cleanly; the launch is still journaled as running at
step "claimed" (not failed, no error), nothing was rolled back, and the log says it
was parked; after a restart, with the image now served whole, the same operation
resumes and succeeds and the instance runs. The agent allows 127.0.0.0/8 for image
sources ([image_cache] allowed_networks)."""

import hashlib
import http.server
import os
import socketserver
import sqlite3
import sys
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

HOLD_S = 120.0  # a held response gives up after this (the test is long over by then)


class HeldImage:
    """Serves one image at /image.raw; while `hold` is set, a GET gets the headers and
    half the body, then waits (bounded) for `hold` to clear before the rest."""

    def __init__(self, data):
        self.data = data
        self.gets = 0
        self.hold = threading.Event()
        self.release = threading.Event()
        self.got = threading.Event()
        srv = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path != "/image.raw":
                    self.send_error(404)
                    return
                srv.gets += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(srv.data)))
                self.end_headers()
                half = len(srv.data) // 2
                try:
                    if srv.hold.is_set():
                        self.wfile.write(srv.data[:half])
                        self.wfile.flush()
                        srv.got.set()
                        srv.release.wait(HOLD_S)
                        self.wfile.write(srv.data[half:])
                    else:
                        self.wfile.write(srv.data)
                except OSError:
                    self.close_connection = True  # the agent went away mid-download

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.srv = S(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/image.raw"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


def journal_row(db_path, op_id):
    """The operation's row as the store has it (read with the agent stopped)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        row = con.execute("SELECT * FROM operations WHERE id = ?", (op_id,)).fetchone()
        return dict(row) if row else None
    finally:
        con.close()


def main(c: calib.Checks):
    calib.require_agent_binary()
    d = calib.tmpdir("ca-sigterm-")
    conf = d / "agent.conf"
    conf.write_text("[image_cache]\nallowed_networks = 127.0.0.0/8\n")
    data = os.urandom(4 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    img = HeldImage(data)
    agent = calib.Agent(d / "state", hypervisor="test", extra_args=["--config", str(conf)])
    c.agents.append(agent)
    try:
        body_of_test(c, agent, img, digest)
    finally:
        img.close()


def body_of_test(c, agent, img, digest):
    with c.case("agent starts (test driver)", fatal=True):
        agent.start(timeout=30)
    cl = agent.client()
    img.hold.set()
    r = None
    with c.case("launch by image url -> 202; the image download starts and is held", fatal=True):
        r = cl.launch({"name": calib.unique("parked"), "flavor": {"vcpus": 1, "memory_mb": 64, "disk_gb": 1},
                       "image": {"url": img.url, "digest": digest}})
        assert img.got.wait(30), "the agent never asked for the image"
        op = cl.operation(r["operation"]["id"])
        assert op["state"] == "running" and op["step"] == "claimed", short(op)
    op_id, iid = r["operation"]["id"], r["instance"]["id"]

    with c.case("SIGTERM while the launch waits on its image -> the agent exits 0", fatal=True):
        rc = agent.stop(timeout=30)
        assert rc == 0, f"exit code {rc}; log tail:\n{agent.log_tail()}"

    with c.case("the launch is parked: journaled running at step claimed, no error"):
        row = journal_row(agent.state_dir / "agent.db", op_id)
        assert row is not None, "the operation's row is gone"
        assert row["state"] == "running" and row["step"] == "claimed", short(row)
        assert not row.get("error_code"), short(row)
        log = agent.log_path.read_text(errors="replace")
        assert "operation parked until the next start" in log, agent.log_tail()
        assert "operation failed" not in log, agent.log_tail()
        assert "rolling back" not in log, agent.log_tail()

    img.hold.clear()
    img.release.set()
    with c.case("restart -> the same operation resumes and succeeds; the instance runs", fatal=True):
        agent.start(timeout=30)
        cl = agent.client()
        op = cl.wait_operation(op_id, timeout=60)
        assert op["state"] == "succeeded" and op["error"] is None, short(op)
        inst = cl.wait_state(iid, "running", timeout=30)
        assert inst["fault"] is None, short(inst)
        assert img.gets >= 2, f"{img.gets} GETs of the image"

    with c.case("terminate -> succeeded; SIGTERM -> exit 0"):
        op = cl.wait_operation(cl.terminate(iid)["operation"]["id"], timeout=30)
        assert op["state"] == "succeeded", short(op)
        assert agent.stop(timeout=30) == 0


if __name__ == "__main__":
    calib.run("sigterm_parks_core", main)
