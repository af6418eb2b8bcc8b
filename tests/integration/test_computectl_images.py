#!/usr/bin/env python3
"""computectl against a real agent (test driver) and a throttled image server of the test's
own on loopback (port 0; about 1 MiB/s, so a 4 MiB image takes seconds):

- `image pull --wait` without a terminal: plain "downloading: N%, ..." lines on stderr
  (from GET /v1/images/{id}'s progress), the cached row on stdout, exit 0;
- the same under a pty (`script`): the bar redrawn in place ("\\r[###...]  NN%", bytes, rate,
  ETA) and one final newline;
- `launch --image-url URL --digest D --wait`: the operation's progress as plain lines, the
  instance running; `launch --image ID` (a cached id) and `--kernel` with `--image` accepted;
- `list --state/--name` filter on the agent (a name with a space), and GET /v1/instances with a
  bad state or an empty name is 400 naming it;
- `image delete ID` exits 0 on the agent's 204 and the image is gone.
Every answer the test reads itself is checked against api-spec/openapi.yaml."""

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

CTL_BIN = calib.BUILD / "computectl"
RATE = 1 << 20          # bytes per second the server sends
SIZE = 4 << 20


class Throttled(BaseHTTPRequestHandler):
    files = {}          # path -> bytes

    def log_message(self, *a):
        pass

    def do_GET(self):
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        step = RATE // 10
        try:
            for off in range(start, len(data), step):
                self.wfile.write(data[off:off + step])
                self.wfile.flush()
                time.sleep(0.1)  # the throttle itself (what is tested waits on the CLI's exit)
        except (BrokenPipeError, ConnectionResetError):
            pass


def main(c: calib.Checks):
    calib.require_agent_binary()
    if not CTL_BIN.exists():
        calib.skip(f"{CTL_BIN} not built (make all)")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Throttled)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    images = {}
    for n in ("pull", "tty", "launch"):
        data = os.urandom(SIZE)
        Throttled.files[f"/{n}.raw"] = data
        images[n] = (f"{base}/{n}.raw", "sha256:" + hashlib.sha256(data).hexdigest())

    d = calib.tmpdir("ca-ctlimg-")
    files = calib.make_fake_files(d)
    conf = d / "agent.conf"
    conf.write_text("[image_cache]\nallowed_networks = 127.0.0.0/8\n")
    agent = calib.Agent(d / "state", hypervisor="test", extra_args=["--config", str(conf)])
    c.agents.append(agent)
    with c.case("agent starts", fatal=True):
        agent.start(timeout=30)
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)

    def ctl(*args, expect=0, timeout=120):
        p = subprocess.run([str(CTL_BIN), "--socket", str(agent.sock), *args], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert p.returncode == expect, \
            f"computectl {' '.join(args)} -> {p.returncode} (expected {expect})\n" \
            f"  stdout: {p.stdout.strip()[:800]}\n  stderr: {p.stderr.strip()[:800]}"
        return p.stdout, p.stderr

    pulled = None
    with c.case("image pull --wait, not a terminal: plain progress lines, then the cached image"):
        url, dg = images["pull"]
        out, err = ctl("image", "pull", "--source", url, "--digest", dg, "--wait")
        lines = [ln for ln in err.splitlines() if ln]
        assert lines and all(ln.startswith("downloading: ") for ln in lines), err
        assert any(re.match(r"downloading: \d+%, [\d.]+ [KM]iB of 4\.0 MiB, ", ln) for ln in lines), err
        assert "\r" not in err and "\033" not in err, repr(err)
        rows = out.splitlines()
        assert rows[0].split()[:2] == ["ID", "STATE"] and rows[1].split()[1] == "cached", out
        pulled = rows[1].split()[0]
        img = cl.call("GET", f"/v1/images/{pulled}")[1]
        assert img["state"] == "cached" and img["size"] == SIZE, short(img)

    with c.case("image pull --wait on a terminal (script's pty): a bar with %, bytes, rate and ETA"):
        if not shutil.which("script"):
            raise AssertionError("script (util-linux) is not installed")
        url, dg = images["tty"]
        cmd = " ".join(shlex.quote(a) for a in [str(CTL_BIN), "--socket", str(agent.sock), "image", "pull",
                                                "--source", url, "--digest", dg, "--wait"])
        p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        text = p.stdout.decode(errors="replace")
        assert p.returncode == 0, text[-800:]
        bars = re.findall(r"\r\[([#.]{24})\] +(\d+)%  ([\d.]+ \w+) / 4\.0 MiB  (\S+ \S+|-)  ETA (\S+)", text)
        assert bars, repr(text[-800:])
        assert "\033[K" in text and "downloading:" not in text, repr(text[-800:])
        assert any(b[3] != "-" for b in bars), f"no rate in {bars}"

    inst = None
    with c.case("launch --image-url --digest --wait: the operation's progress as plain lines, running"):
        url, dg = images["launch"]
        out, err = ctl("launch", "from-url", "--vcpus", "1", "--memory", "64", "--disk", "1",
                       "--image-url", url, "--digest", dg, "--wait")
        lines = [ln for ln in err.splitlines() if ln]
        assert lines and all(ln.startswith("downloading: ") for ln in lines), err
        m = re.search(r"^instance: +(\S+)", out, re.M)
        assert m and re.search(r"^state: +running", out, re.M), out
        inst = m.group(1)

    with c.case("launch --image ID (cached) and --kernel with --image: accepted, running"):
        assert pulled, "no pulled image"
        out, _ = ctl("launch", "by id", "--vcpus", "1", "--memory", "64", "--image", pulled, "--wait")
        assert re.search(r"^state: +running", out, re.M), out
        out, _ = ctl("launch", "kern-disk", "--vcpus", "1", "--memory", "64", "--kernel", str(files["kernel"]),
                     "--image", pulled, "--wait")
        assert re.search(r"^state: +running", out, re.M), out

    with c.case("list --state/--name filter on the agent; a bad value -> 400 naming it"):
        out, _ = ctl("list", "--name", "by id")
        assert len(out.splitlines()) == 2 and "by id" in out, out
        out, _ = ctl("--json", "list", "--state", "running")
        names = sorted(re.findall(r'"name": "([^"]+)"', out))
        assert names == ["by id", "from-url", "kern-disk"], out
        out, _ = ctl("--json", "list", "--state", "stopped", "--name", "by id")
        assert '"instances": []' in out, out
        for q, field in (("state=up", "state"), ("name=", "name")):
            st, e = cl.call("GET", f"/v1/instances?{q}")
            calib.expect_error((st, e), 400, "invalid_field", field=field, what=q)

    with c.case("image delete ID: exit 0 on the agent's 204, the image gone"):
        for i in [x["id"] for x in cl.instances()]:
            op = cl.wait_operation(cl.terminate(i)["operation"]["id"], timeout=30)
            assert op["state"] == "succeeded", short(op)
        out, err = ctl("image", "delete", pulled)
        assert out == f"deleted {pulled}\n" and err == "", (out, err)
        st, _ = cl.call("GET", f"/v1/images/{pulled}")
        assert st == 404, st

    srv.shutdown()
    with c.case("agent exits 0 on SIGTERM"):
        assert agent.stop(timeout=30) == 0
    _ = inst


if __name__ == "__main__":
    calib.run("test_computectl_images", main)
