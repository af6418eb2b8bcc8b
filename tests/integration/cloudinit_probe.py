"""cloud-init's own code as a metadata client, for the metadata tests.

Shared by test_metadata_cloudinit.py (against tests/bench/md_server) and
test_metadata_cloudinit_agent.py (against the real agent). The probe runs as a program of
its own inside the client network namespace, in a private mount namespace (`unshare -m`)
whose /etc/resolv.conf names 127.0.0.1: without a resolver each datasource first loses
30 s in is_resolvable_url(). It prints one JSON line: {"seconds", "result", "http"}, where
"http" counts every answer cloud-init received, by method and status ("GET 200": n), from
requests' transport (retries included), so a test can compare the service's counters with
what the client saw.

    python3 cloudinit_probe.py MODE [ARG]     (CAB_TMP: a scratch dir; CAB_MD: the URL)

MODE: ec2-helper (helpers.ec2, IMDSv1), ec2-helper-v2 (the same after a token PUT, the token
on every GET), ec2-ds-v1 (DataSourceEc2.crawl_metadata as on a non-AWS platform), ec2-ds-v2
(cloud name "aws": IMDSv2), os-helper (openstack.MetadataReader.read_v2), os-ds
(DataSourceOpenStack.wait_for_metadata_service + _crawl_metadata), cd-reader DIR
(ConfigDriveReader.read_v2), nocloud DIR (util.read_seeded)."""

import ctypes
import json
import os
import subprocess
import sys
import time

MD = os.environ.get("CAB_MD", "http://169.254.169.254")
PY = "/usr/bin/python3"
CLOUDINIT_DIR = "/usr/lib/python3/dist-packages/cloudinit"

# Python run in a client namespace (in_ns): req(src, method, path, headers) -> [status, body, headers],
# or ["timeout", ...] when nothing answered in time, ["error", message] for any other failure
HTTP_CLIENT = r'''
import http.client, json, socket, sys
def req(src, method, path, headers=None, timeout=5):
    c = http.client.HTTPConnection("169.254.169.254", 80, timeout=timeout, source_address=(src, 0))
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read().decode(errors="replace")
    except (socket.timeout, TimeoutError) as e:
        return ["timeout", type(e).__name__, {}]
    except OSError as e:
        return ["error", str(e), {}]
    finally:
        c.close()
    return [r.status, body, dict(r.getheaders())]
'''


def private_resolv(path):
    """In the private mount namespace unshare(1) made: path over /etc/resolv.conf."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0 or \
            libc.mount(path.encode(), b"/etc/resolv.conf", None, MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")


def _count_http(tally):
    """Counts every answer requests' transport hands cloud-init (retries too)."""
    import requests.adapters
    send = requests.adapters.HTTPAdapter.send

    def counting_send(self, request, *a, **kw):
        try:
            r = send(self, request, *a, **kw)
        except Exception:
            key = f"{request.method} error"
            tally[key] = tally.get(key, 0) + 1
            raise
        key = f"{request.method} {r.status_code}"
        tally[key] = tally.get(key, 0) + 1
        return r
    requests.adapters.HTTPAdapter.send = counting_send


def probe(mode, arg):
    import logging
    from cloudinit import helpers, url_helper, util
    from cloudinit.distros import debian
    from cloudinit.sources import DataSourceEc2
    from cloudinit.sources.helpers import ec2, openstack

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if mode not in ("cd-reader", "nocloud"):
        private_resolv(arg)
    tally = {}
    _count_http(tally)
    paths = helpers.Paths({"cloud_dir": os.environ["CAB_TMP"] + "/ci/cloud",
                           "run_dir": os.environ["CAB_TMP"] + "/ci/run"})
    distro = debian.Distro("debian", {}, paths)
    wait = int(os.environ.get("CAB_MAX_WAIT", "10"))
    sys_cfg = {"datasource": {"Ec2": {"metadata_urls": [MD], "max_wait": wait, "timeout": 5, "retries": 1},
                              "OpenStack": {"metadata_urls": [MD], "max_wait": wait, "timeout": 5, "retries": 1}}}
    t0 = time.time()
    if mode in ("ec2-helper", "ec2-helper-v2"):
        kw = {"metadata_address": MD, "retries": 1}
        token = None
        if mode == "ec2-helper-v2":
            r = url_helper.readurl(MD + "/latest/api/token", request_method="PUT", timeout=5, retries=1,
                                   headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
            token = r.contents.decode()
            kw["headers_cb"] = lambda url: {"X-aws-ec2-metadata-token": token}
        out = {"user-data": ec2.get_instance_userdata(**kw).decode(),
               "meta-data": ec2.get_instance_metadata(**kw),
               "identity": ec2.get_instance_identity(**kw), "token_len": len(token or "")}
    elif mode in ("ec2-ds-v1", "ec2-ds-v2"):
        ds = DataSourceEc2.DataSourceEc2(sys_cfg, distro, paths)
        ds._cloud_name = "aws" if mode == "ec2-ds-v2" else DataSourceEc2.identify_platform()
        r = ds.crawl_metadata()
        out = {"cloud_name": ds.cloud_name, "api_version": r.get("_metadata_api_version"),
               "meta-data": r.get("meta-data"), "user-data": (r.get("user-data") or b"").decode(),
               "dynamic": r.get("dynamic"), "token": bool(getattr(ds, "_api_token", None))}
    elif mode == "os-helper":
        r = openstack.MetadataReader(MD, timeout=5, retries=1).read_v2()
        out = {k: r.get(k) for k in ("metadata", "version", "networkdata", "ec2-metadata", "vendordata",
                                     "vendordata2")}
        out["userdata"] = r["userdata"].decode() if isinstance(r.get("userdata"), bytes) else r.get("userdata")
        out["seed_len"] = len(out["metadata"].pop("random_seed", b""))  # read_v2() decoded it
    elif mode == "os-ds":
        from cloudinit.sources import DataSourceOpenStack
        ds = DataSourceOpenStack.DataSourceOpenStack(sys_cfg, distro, paths)
        found = ds.wait_for_metadata_service()
        r = ds._crawl_metadata()
        out = {"found": found, "metadata_address": ds.metadata_address, "uuid": r["metadata"].get("uuid"),
               "userdata": r["userdata"].decode() if isinstance(r.get("userdata"), bytes) else r.get("userdata"),
               "ec2-instance-id": (r.get("ec2-metadata") or {}).get("instance-id"),
               "links": [x["ethernet_mac_address"] for x in r["networkdata"]["links"]]}
    elif mode == "cd-reader":
        r = openstack.ConfigDriveReader(arg).read_v2()
        out = {k: r.get(k) for k in ("metadata", "version", "networkdata", "ec2-metadata")}
        out["userdata"] = r["userdata"].decode() if isinstance(r.get("userdata"), bytes) else r.get("userdata")
    elif mode == "nocloud":
        md, ud, vd = util.read_seeded(base=arg.rstrip("/") + "/")
        with open(os.path.join(arg, "network-config")) as f:
            net = util.load_yaml(f.read())
        out = {"meta-data": md, "user-data": ud.decode() if isinstance(ud, bytes) else ud, "network": net}
    else:
        raise SystemExit("unknown probe mode " + mode)
    print(json.dumps({"seconds": round(time.time() - t0, 3), "result": out, "http": tally}, default=str))


def write_resolv(tmp):
    """The resolv.conf the probes mount over /etc/resolv.conf (a resolver that answers at once)."""
    path = os.path.join(tmp, "resolv.conf")
    with open(path, "w") as f:
        f.write("nameserver 127.0.0.1\n")
    return path


def run_probe_full(tmp, mode, ns, arg=None, clean=True, max_wait=10):
    """Runs the probe MODE in network namespace ns (None: here, for the file readers);
    its whole answer {"seconds", "result", "http"}. Fails on a non-zero exit, and (clean)
    when cloud-init logged a traceback or a failed fetch (it logs those and returns {}).
    max_wait: the datasources' max_wait (s) for the service to answer."""
    argv = [PY, os.path.abspath(__file__), mode, arg or os.path.join(tmp, "resolv.conf")]
    if ns:
        argv = ["ip", "netns", "exec", ns, "unshare", "-m"] + argv
    env = dict(os.environ, CAB_TMP=tmp, CAB_MD=MD, CAB_MAX_WAIT=str(max_wait))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, f"probe {mode}: exit {r.returncode}: {r.stderr[-1500:]}"
    errors = [ln for ln in r.stderr.splitlines() if "Traceback" in ln or "Failed fetching" in ln]
    assert not (clean and errors), f"probe {mode}: cloud-init reported: {r.stderr[-1500:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_probe(tmp, mode, ns, arg=None):
    """run_probe_full()'s "result"."""
    return run_probe_full(tmp, mode, ns, arg)["result"]


def in_ns(ns, code, timeout=60):
    """Runs python code (HTTP_CLIENT + code) in network namespace ns; its stdout parsed as JSON."""
    r = subprocess.run(["ip", "netns", "exec", ns, PY, "-c", HTTP_CLIENT + code], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"in {ns}: exit {r.returncode}: {r.stderr.strip()[-800:]}"
    return json.loads(r.stdout)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    probe(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
