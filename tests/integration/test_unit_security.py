#!/usr/bin/env python3
"""The installed systemd unit is sandboxed: systemd-analyze's exposure below 5.0.

`make install DESTDIR=...` into a scratch directory, then `systemd-analyze security
--offline=true` on the unit it wrote (systemd need not run). Also checks the unit
keeps what the agent needs: the state directory writable and 0750, the devices it
opens, and a bounding set without CAP_SYS_ADMIN.
"""

import os
import re
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402


def main(c: calib.Checks):
    sa = shutil.which("systemd-analyze")
    if not sa:
        calib.skip("systemd-analyze is not installed")
    d = calib.tmpdir("ca-unit-")
    unit = None
    with c.case("make install writes the unit", fatal=True):
        r = subprocess.run(["make", "-s", "-C", str(calib.ROOT), f"BUILD={calib.BUILD}",
                            f"DESTDIR={d}", "PREFIX=/usr", "install"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        unit = d / "usr" / "lib" / "systemd" / "system" / "compute-agent.service"  # UNITDIR = $(PREFIX)/lib/systemd/system
        assert unit.exists(), f"{unit} missing"
    text = unit.read_text()
    with c.case("exposure level below 5.0"):
        r = subprocess.run([sa, "security", "--offline=true", "--no-pager", str(unit)],
                           capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
        assert m, f"no exposure level in:\n{out[-1500:]}"
        level = float(m.group(1))
        calib.log(f"    exposure {level}")
        assert level < 5.0, f"exposure {level}"
    with c.case("keeps what the agent needs"):
        for line in ("StateDirectory=compute-agent", "StateDirectoryMode=0750", "ProtectSystem=strict",
                     "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes", "KillMode=process",
                     "DeviceAllow=/dev/kvm rw", "DeviceAllow=/dev/net/tun rw"):
            assert re.search(rf"^{re.escape(line)}$", text, re.M), f"missing {line}"
        caps = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M)
        assert caps, "no CapabilityBoundingSet"
        have = set(caps.group(1).split())
        assert "CAP_NET_ADMIN" in have, "net-plug needs CAP_NET_ADMIN"
        assert not have & {"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SETUID"}, have
        assert re.search(r"^ReadWritePaths=.*/var/lib/compute-agent", text, re.M), "state dir not writable"


if __name__ == "__main__":
    calib.run("unit_security", main)
