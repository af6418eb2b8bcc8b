#!/usr/bin/env python3
"""bench_metadata_memory.py BUILD_DIR: the metadata service's memory under one tenant's worst
case (issue 10, audit item 2).

tests/bench/md_server (agent/metadata on a loop of its own) serves one instance with the
most a launch may give: 32 public keys of 16 KB (agent/instance.h), so meta_data.json is
about 1 MB (each key twice). CONNS keep-alive connections (64: the per-source cap) from
127.0.0.1 each fetch /openstack/, every version's meta_data.json and one EC2 public key,
and stay open; the server's VmRSS (and VmHWM) is read from /proc before and after. Before
the fix each connection kept every document it was served (~10 MB a connection); now
one instance's documents are rendered once and shared, within a byte budget.

Loopback only (127.0.0.1, a port the kernel picks); nothing else is touched. Env: CONNS (64),
ROUNDS (each connection fetches everything ROUNDS times, 1)."""

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

B = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__))
SERVER = os.path.join(B, "tests", "md_server")
CONNS = int(os.environ.get("CONNS", "64"))
ROUNDS = int(os.environ.get("ROUNDS", "1"))


def rss_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def main():
    if not os.access(SERVER, os.X_OK):
        print(f"SKIP: {SERVER} is not built (make tests)")
        return 0
    t = tempfile.mkdtemp(prefix="h-bench-mdmem-")
    keys = {f"k{i:02d}": "ssh-ed25519 " + ("A" * (16 * 1024 - 40)) + f" user{i}@host" for i in range(32)}
    fx = {"instances": [{"uuid": "6a6a6a6a-0000-4000-8000-0000000000be", "ec2_id": "i-000000000000000be",
                         "name": "bench", "hostname": "bench", "availability_zone": "nova",
                         "instance_type": "m1.small", "keys": keys, "meta": {"role": "bench"},
                         "user_data": "#cloud-config\n",
                         "interfaces": [{"mac": "52:54:00:78:00:10", "ip": "127.0.0.1", "prefix": 8,
                                         "network": "n1"}]}]}
    with open(os.path.join(t, "fixture.json"), "w") as f:
        json.dump(fx, f)
    ready = os.path.join(t, "ready")
    p = subprocess.Popen([SERVER, "--fixture", os.path.join(t, "fixture.json"), "--listen", "127.0.0.1",
                          "--port", "0", "--network", "n1", "--rate", "1e9", "--burst", "1000000000",
                          "--ready", ready], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (os.path.exists(ready) and open(ready).read().strip()):
            if time.monotonic() > deadline or p.poll() is not None:
                print("FAIL: md_server did not start")
                return 1
            time.sleep(0.02)
        port = int(open(ready).read())
        before = rss_kb(p.pid)
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(CONNS)]

        def get(c, path):
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            assert r.status == 200, (path, r.status)
            return body

        served = 0
        t0 = time.monotonic()
        for _ in range(ROUNDS):
            for c in conns:
                versions = get(c, "/openstack/").decode().split()
                for v in versions:
                    served += len(get(c, f"/openstack/{v}/meta_data.json"))
                served += len(get(c, "/latest/meta-data/public-keys/0/openssh-key"))
        took = time.monotonic() - t0
        after = rss_kb(p.pid)
        print(f"connections={CONNS} rounds={ROUNDS} versions={len(versions)} served_mb={served / 1e6:.1f} "
              f"seconds={took:.2f}")
        print(f"md_server VmRSS before={before['VmRSS'] / 1024:.1f} MB after={after['VmRSS'] / 1024:.1f} MB "
              f"VmHWM={after['VmHWM'] / 1024:.1f} MB "
              f"per_connection={(after['VmRSS'] - before['VmRSS']) / 1024 / CONNS:.2f} MB")
        for c in conns:
            c.close()
        return 0
    finally:
        p.terminate()
        p.wait(timeout=10)
        for n in os.listdir(t):
            os.unlink(os.path.join(t, n))
        os.rmdir(t)


if __name__ == "__main__":
    sys.exit(main())
