#!/usr/bin/env python3
"""The guest console (issue 11) on a real libvirtd (QEMU) with the busybox test guest:
 - the serial port is a pty whose output libvirt appends to the instance's console.log;
 - GET /v1/instances/{id}/console shows the boot markers (base64 JSON), honours
   tail_bytes and offset, refuses bad values naming them, 404s an unknown instance, and
   every answer matches api-spec/openapi.yaml;
 - after a reboot and after a stop + start (a new QEMU process) the log still holds the
   first boot's lines (append);
 - `computectl console ID --tail N` prints the log's last N bytes, `--follow` sees new lines;
 - `virsh console` and `computectl console --attach`, each driven through a pty by an
   expect script, see the guest's ticks, and ^] detaches (exit 0, the terminal's settings
   restored).
Needs CA_LIBVIRT_URI and CA_GUEST_DIR (tests/run.sh provides them as root) and expect,
else skip."""

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402

CTL_BIN = calib.BUILD / "computectl"
TICK = re.compile(rb"COMPUTE-AGENT-GUEST: tick (\d+)")


def expect_script(argv, timeout=60):
    """An expect(1) script: spawn argv in a pty (through sh, printing `stty -g` before and
    after), wait for a guest tick, send ^], wait for the end; prints the exit status."""
    cmd = " ".join("'" + a.replace("'", "'\\''") + "'" for a in argv)
    sh = f"stty -g; {cmd}; echo CA-RC=$?; stty -g"
    return f"""
set timeout {timeout}
log_user 1
spawn -noecho sh -c {{{sh}}}
expect {{
    -re {{COMPUTE-AGENT-GUEST: tick [0-9]+}} {{}}
    timeout {{ puts "\\nCA-EXPECT: no tick"; exit 2 }}
    eof {{ puts "\\nCA-EXPECT: ended before a tick"; exit 3 }}
}}
send "\\x1d"
expect {{
    -re {{CA-RC=([0-9]+)}} {{}}
    timeout {{ puts "\\nCA-EXPECT: ^] did not detach"; exit 4 }}
}}
expect eof
exit 0
"""


def run_expect(argv, timeout=60):
    p = subprocess.run(["expect", "-c", expect_script(argv, timeout)], capture_output=True,
                       timeout=timeout * 2 + 30, stdin=subprocess.DEVNULL)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, f"expect -> {p.returncode}\n{out[-1500:]}\n{p.stderr.decode()[-500:]}"
    m = re.search(r"CA-RC=(\d+)", out)
    assert m and m.group(1) == "0", f"the console command's status: {m and m.group(1)}\n{out[-1500:]}"
    stty = [ln.strip() for ln in out.splitlines() if re.fullmatch(r"[0-9a-f]+(:[0-9a-f]+){10,}", ln.strip())]
    assert len(stty) == 2 and stty[0] == stty[1], f"terminal settings not restored: {stty}\n{out[-1500:]}"
    return out


def main(c: calib.Checks):
    uri, gdir = calib.libvirt_env()
    if shutil.which("expect") is None:
        calib.skip("expect is not installed (scripts/install-deps.sh)")
    calib.require_agent_binary()
    d = calib.tmpdir("ca-console-")
    prefix = calib.unique("ca-it-console")
    agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri, log_level="info")
    c.agents.append(agent)
    created = set()
    spec_log = calib.SpecLog()

    def console(iid, query="", expect=200):
        st, body = agent.client(timeout=30, spec_log=spec_log).call("GET", f"/v1/instances/{iid}/console{query}")
        assert st == expect, f"GET console{query}: {st} {short(body)}"
        return body

    def log_bytes(iid):
        b = console(iid, "?tail_bytes=1048576")
        out = base64.b64decode(b["output"], validate=True)
        assert b["encoding"] == "base64" and b["length"] == len(out) and b["offset"] + len(out) == b["size"], \
            short({k: v for k, v in b.items() if k != "output"})
        return out

    def ticks(data):
        return [int(n) for n in TICK.findall(data)]

    def ctl(*args, timeout=60):
        return subprocess.run([str(CTL_BIN), "--socket", str(agent.sock), *args], capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    try:
        with c.case("agent starts (qemu)", fatal=True):
            agent.start(timeout=180)
        cl = agent.client(timeout=60)
        with c.case("launch a kernel-boot guest -> running", fatal=True):
            r = cl.launch({"name": f"{prefix}-g", "flavor": {"vcpus": 1, "memory_mb": 128},
                           "kernel": calib.guest_boot(gdir)})
            inst = r["instance"]
            iid = inst["id"]
            created.add(iid)
            op = cl.wait_operation(r["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)

        with c.case("the domain's serial port is a pty logged to console.log (append)"):
            rc, xml, err = calib.virsh(uri, "dumpxml", iid)
            assert rc == 0, err
            assert re.search(r"<serial type=['\"]pty['\"]>", xml), xml
            assert re.search(r"<log file=['\"]%s['\"] append=['\"]on['\"]/>" % re.escape(inst["console_log"]), xml), xml

        with c.case("GET console shows the boot markers", fatal=True):
            calib.wait_for(lambda: calib.BOOT_MARKER.encode() in log_bytes(iid) and ticks(log_bytes(iid)),
                           timeout=120, what="the boot marker and a tick in GET console")
            b = console(iid)
            assert b["instance_id"] == iid and b["ec2_instance_id"] == inst["ec2_id"], short(b)
            assert b["timestamp"], short(b)

        with c.case("tail_bytes is honoured; offset reads from a byte on; both by EC2 id too"):
            whole = log_bytes(iid)
            b = console(inst["ec2_id"], "?tail_bytes=16")
            out = base64.b64decode(b["output"])
            assert len(out) == 16 and b["length"] == 16 and b["offset"] == b["size"] - 16, short(b)
            now = log_bytes(iid)
            assert now.startswith(whole) and out in now[len(whole) - 16:], (out, now[-64:])
            b = console(iid, "?tail_bytes=%31%30")  # percent-decoded once, by the server
            assert b["length"] == 10, short(b)
            b = console(iid, "?offset=0&tail_bytes=27")
            assert base64.b64decode(b["output"]) == whole[:27] and b["next_offset"] == 27, short(b)

        with c.case("bad tail_bytes / offset -> 400 naming them; unknown instance -> 404"):
            for q, field in (("?tail_bytes=0", "tail_bytes"), ("?tail_bytes=abc", "tail_bytes"),
                             ("?tail_bytes=1048577", "tail_bytes"), ("?offset=-1", "offset"),
                             ("?tail_bytes", "tail_bytes"), ("?tail_bytes=5%00", "tail_bytes"),
                             ("?offset=1&tail_bytes=%2B5", "tail_bytes")):
                body = console(iid, q, expect=400)
                assert body["error"]["field"] == field, short(body)
            body = console("00000000-0000-4000-8000-000000000000", expect=404)
            assert body["error"]["code"] == "not_found", short(body)

        with c.case("computectl console --tail N prints the log's last N bytes"):
            p = ctl("console", iid, "--tail", "40")
            assert p.returncode == 0 and len(p.stdout) == 40, (p.returncode, p.stdout, p.stderr)
            assert p.stdout in log_bytes(iid), p.stdout
            p = ctl("console", iid)
            assert p.returncode == 0 and calib.BOOT_MARKER.encode() in p.stdout, (p.returncode, p.stderr)
            p = ctl("console", iid, "--tail", "0")
            assert p.returncode == 2, (p.returncode, p.stderr)

        with c.case("computectl console --follow prints the lines the guest writes next"):
            last = max(ticks(log_bytes(iid)))
            f = subprocess.Popen([str(CTL_BIN), "--socket", str(agent.sock), "console", iid, "--tail", "1",
                                  "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL)
            os.set_blocking(f.stdout.fileno(), False)
            got = bytearray()

            def newer_tick():
                try:
                    chunk = f.stdout.read()
                except BlockingIOError:
                    chunk = None
                if chunk:
                    got.extend(chunk)
                assert f.poll() is None, f"--follow ended: {f.returncode} {f.stderr.read()!r}"
                return any(n >= last + 2 for n in ticks(bytes(got)))
            try:
                calib.wait_for(newer_tick, timeout=60, what=f"--follow to print tick {last + 2}")
            finally:
                f.send_signal(signal.SIGINT)
                rc = f.wait(timeout=10)
            assert rc == 0, rc

        with c.case("virsh console through a pty: the guest's ticks, ^] detaches"):
            run_expect(["virsh", "-c", uri, "console", iid, "--force"])

        with c.case("computectl console --attach through a pty: the guest's ticks, ^] detaches"):
            out = run_expect([str(CTL_BIN), "--socket", str(agent.sock), "console", iid, "--attach"])
            assert "Escape character is ^]" in out, out[-800:]

        with c.case("computectl console --attach --connect with a bad URI fails cleanly"):
            p = ctl("console", iid, "--attach", "--connect", "test:///nowhere-such")
            assert p.returncode == 1 and b"error:" in p.stderr, (p.returncode, p.stderr)

        with c.case("after a reboot the log still holds the first boot's lines"):
            first = log_bytes(iid)
            calib.wait_for(lambda: any(m.encode() in log_bytes(iid) for m in calib.ACPI_MARKERS), timeout=60,
                           what="the guest's ACPI handler")
            op = cl.wait_operation(cl.action(iid, "reboot")["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
            calib.wait_for(lambda: log_bytes(iid).count(calib.BOOT_MARKER.encode()) >= 2, timeout=120,
                           what="a second boot in the log")
            assert log_bytes(iid).startswith(first), "the log lost its start"

        with c.case("after stop + start (a new QEMU process) the log is appended to, not replaced"):
            before = log_bytes(iid)
            boots = before.count(calib.BOOT_MARKER.encode())
            op = cl.wait_operation(cl.action(iid, "stop", force=True)["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
            op = cl.wait_operation(cl.action(iid, "start")["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
            calib.wait_for(lambda: log_bytes(iid).count(calib.BOOT_MARKER.encode()) > boots, timeout=120,
                           what="the boot after start in the log")
            assert log_bytes(iid).startswith(before), "the start replaced the log"

        with c.case("terminate"):
            op = cl.wait_operation(cl.terminate(iid)["operation"]["id"], timeout=60)
            assert op["state"] == "succeeded", short(op)
            created.discard(iid)
        spec_log.check(c, "every GET console answer matches api-spec/openapi.yaml")
    finally:
        if agent.alive():
            agent.stop()
        calib.cleanup_domains(uri, created, marker=prefix)


if __name__ == "__main__":
    calib.run("test_console_qemu", main)
