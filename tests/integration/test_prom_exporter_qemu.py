#!/usr/bin/env python3
"""[telemetry] libvirt_exporter_names = true against the real thing: Debian's
prometheus-libvirt-exporter and the agent both watch the same private libvirtd and guest,
Debian's prometheus server (own config, port and storage in a scratch directory, stopped
after) scrapes both, and the same PromQL queries give the same figures: every exporter
series of the guest exists on the agent with the same name and labels, libvirt_up is 1 on
both, the block counters are equal, and the rates of CPU time and of block read/write bytes
agree within a tolerance. Also: the agent's /metrics passes `promtool check metrics`, and
the meters the guest's samples carry on the bus are ceilometer's or compute_agent.*.

The guest makes the traffic compared (tests/env/build-guest.sh): ca.io= reads and writes its
disk all along (O_DIRECT, about 256 KiB/s each way), so the block rates are > 0 on both; with
the test network namespace (CA_NETNS, run.sh starts it: "needs: netns" below) the agent, the
exporter and prometheus run inside it, the guest has a NIC on a [network] bridge and pings its
gateway (ca.iopeer=), and the interface byte rates (receive, transmit) are compared too.
Without the namespace the NIC checks are left out (said in the log)."""
# needs: netns

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
import ceilometer_meters  # noqa: E402
from calib import short  # noqa: E402

sys.path.insert(0, str(calib.ROOT / "tests" / "lib"))
import netenv  # noqa: E402

EXPORTER = "/usr/bin/prometheus-libvirt-exporter"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
WINDOW = "20s"
NET, BR = "pe", "ca-pebr0"
CIDR, GW = "10.93.0.0/24", "10.93.0.1"
GUEST = {"ip": "10.93.0.10", "mac": "52:54:00:93:00:10"}
IO_SECONDS = 900   # longer than the test: the guest is terminated at its end

# where the exporter, prometheus and the agent run: the test network namespace, or here
NS = None


def argv_in(argv):
    return netenv.ns_argv(NS, *argv) if NS else list(argv)


def free_ports(n, lo=26500, hi=26999):
    """n distinct free loopback ports from helper M's range (each bound until all are found,
    then released), starting at a pid-dependent offset so that concurrent runs differ."""
    span = hi - lo
    start = os.getpid() % span
    held, out = [], []
    try:
        for i in range(span):
            p = lo + (start + i) % span
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                s.close()
                continue
            held.append(s)
            out.append(p)
            if len(out) == n:
                return out
    finally:
        for s in held:
            s.close()
    raise AssertionError(f"no {n} free ports in [{lo}, {hi})")


def http_get(url, timeout=10):
    """GET url (inside the namespace with curl when there is one)."""
    if NS:
        p = subprocess.run(argv_in(["curl", "-sS", "-f", "-m", str(timeout), url]), capture_output=True,
                           timeout=timeout + 5)
        if p.returncode != 0:
            raise OSError(f"curl {url}: exit {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
        return p.stdout.decode()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def promql(port, q, at):
    """{job: float} of an instant query at time at."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": f"{at:.3f}"})
    doc = json.loads(http_get(url))
    assert doc["status"] == "success", short(doc)
    out = {}
    for r in doc["data"]["result"]:
        out[r["metric"].get("job", "")] = float(r["value"][1])
    return out


def series_labels(port, match, at):
    """{(name, frozenset of labels without job/instance), ...} of the series matching match."""
    url = f"http://127.0.0.1:{port}/api/v1/series?" + urllib.parse.urlencode(
        {"match[]": match, "start": f"{at - 5:.3f}", "end": f"{at:.3f}"})
    doc = json.loads(http_get(url))
    assert doc["status"] == "success", short(doc)
    by_job = {}
    for m in doc["data"]:
        job = m.pop("job", "")
        m.pop("instance", None)
        name = m.pop("__name__")
        by_job.setdefault(job, set()).add((name, frozenset(m.items())))
    return by_job


def close(a, b, rel, absolute):
    return abs(a - b) <= absolute + rel * max(abs(a), abs(b))


# the guest's telemetry meters, read from the bus in a process of its own (inside the
# namespace when there is one: the embedded mock cluster listens on its loopback)
_METERS = r'''
import json, sys, time
from confluent_kafka import Consumer
bs, iid, want = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
con = Consumer({"bootstrap.servers": bs, "group.id": "promexp-" + iid, "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 50})
topics = [t for t in con.list_topics(timeout=10).topics if t.endswith("telemetry")]
meters = set()
if topics:
    con.subscribe(topics)
    deadline = time.time() + 30
    while time.time() < deadline and not want <= meters:
        for m in con.consume(100, 0.5):
            if m.error():
                continue
            doc = json.loads(m.value())
            if doc.get("instance_id") == iid:
                meters |= {s["meter"] for s in doc["samples"]}
con.close()
print(json.dumps({"topics": topics, "meters": sorted(meters)}))
'''


def main(c: calib.Checks):
    global NS
    ns, nuri = os.environ.get("CA_NETNS"), os.environ.get("CA_NETNS_LIBVIRT_URI")
    if ns and nuri and os.path.exists(f"/run/netns/{ns}"):
        NS, uri = ns, nuri
        gdir = os.environ.get("CA_GUEST_DIR")
        if not gdir or not all((Path(gdir) / f).is_file() for f in ("vmlinuz", "initrd.gz", "disk.raw")):
            calib.skip(f"CA_GUEST_DIR ({gdir!r}) has no test guest (tests/env/build-guest.sh)")
        gdir = Path(gdir)
        calib.log(f"     (in the test network namespace {ns}: a guest NIC on bridge {BR}, interface rates "
                  "compared)")
    else:
        uri, gdir = calib.libvirt_env()
        calib.log("     (no test network namespace: the guest has no NIC; interface rates not compared)")
    for b in (EXPORTER, PROMETHEUS):
        if not os.access(b, os.X_OK):
            calib.skip(f"{b} is not installed (Debian packages prometheus, prometheus-libvirt-exporter)")
    calib.require_agent_binary()
    try:
        import confluent_kafka  # noqa: F401  (the meters' reader, _METERS)
    except ImportError:
        calib.skip("python3-confluent-kafka is not installed")
    ceilo = ceilometer_meters.names()
    d = calib.tmpdir("ca-promexp-")
    p_agent, p_exp, p_prom = free_ports(3)
    conf = d / "agent.conf"
    tele = f"[telemetry]\nlibvirt_exporter_names = true\nmetrics_listen = 127.0.0.1:{p_agent}\n"
    args = ["--config", str(conf), "--host-name", calib.unique("ca-it-promexp"), "--telemetry-interval", "1"]
    if NS:
        conf.write_text(netenv.config_text({NET: {"type": "bridge", "bridge": BR, "cidr": CIDR, "gateway": GW}},
                                           extra=tele))
        agent = netenv.NetnsAgent(NS, d / "state", hypervisor="qemu", libvirt_uri=uri, log_level="info",
                                  extra_args=args)
    else:
        conf.write_text(tele)
        agent = calib.Agent(d / "state", hypervisor="qemu", libvirt_uri=uri, log_level="info", extra_args=args)
    c.agents.append(agent)
    procs = []
    iid = None
    try:
        with c.case("agent starts (qemu, exporter names on)", fatal=True):
            agent.start(timeout=180)
        cl = agent.client(timeout=60)
        with c.case("launch a guest with a disk (and a NIC) that reads and writes its disk (and pings "
                    "its gateway) -> running, booted, I/O started", fatal=True):
            boot = calib.guest_boot(gdir)
            body = {"name": "promexp", "flavor": {"vcpus": 1, "memory_mb": 128, "disk_gb": 1}, "kernel": boot,
                    "image": {"path": str(gdir / "disk.raw")}}
            params = [f"ca.io={IO_SECONDS}"]
            if NS:
                params += [f"ca.net={GUEST['ip']}/24,{GW}", "ca.imds=none", f"ca.iopeer={GW}"]
                body["interfaces"] = [{"network": NET, **GUEST}]
            boot["cmdline"] += " " + " ".join(params)
            r = cl.launch(body)
            iid = r["instance"]["id"]
            op = cl.wait_operation(r["operation"]["id"], timeout=120)
            assert op["state"] == "succeeded", short(op)
            watch = calib.ConsoleWatch(r["instance"]["console_log"])
            calib.wait_for(lambda: calib.BOOT_MARKER in watch.text(), timeout=120, what="guest boot")
            calib.wait_for(lambda: "CA-IO: start" in watch.text() or "CA-IO: no vda" in watch.text(), timeout=60,
                           what="CA-IO: start (a guest built by this tests/env/build-guest.sh)",
                           last=lambda: watch.text()[-300:])
            assert f"CA-IO: start seconds={IO_SECONDS}" in watch.text(), watch.text()[-500:]
            if NS:
                netenv.wait_marker(watch, r"^ping gw ", timeout=120)
                assert f"ping gw {GW} OK" in netenv.markers(watch.text()), netenv.markers(watch.text())
        with c.case("prometheus-libvirt-exporter and prometheus start", fatal=True):
            ex_log = open(d / "exporter.log", "wb")
            procs.append(subprocess.Popen(argv_in([EXPORTER, f"--web.listen-address=127.0.0.1:{p_exp}",
                                                   f"--libvirt.uri={uri}"]), stdout=ex_log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            (d / "prometheus.yml").write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n"
                f"  - job_name: agent\n    static_configs:\n      - targets: ['127.0.0.1:{p_agent}']\n"
                f"  - job_name: exporter\n    static_configs:\n      - targets: ['127.0.0.1:{p_exp}']\n")
            pr_log = open(d / "prometheus.log", "wb")
            procs.append(subprocess.Popen(argv_in([PROMETHEUS, f"--config.file={d / 'prometheus.yml'}",
                                                   f"--storage.tsdb.path={d / 'prom-data'}",
                                                   f"--web.listen-address=127.0.0.1:{p_prom}", "--log.level=warn"]),
                                          stdout=pr_log, stderr=subprocess.STDOUT, start_new_session=True))

            def ready():
                try:
                    http_get(f"http://127.0.0.1:{p_exp}/metrics")
                    return "Ready" in http_get(f"http://127.0.0.1:{p_prom}/-/ready")
                except OSError:
                    return False
            calib.wait_for(ready, timeout=60, what="exporter and prometheus to answer")

        sel = f'uuid="{iid}"'
        with c.case("prometheus holds 20 samples (30 s) of the guest from both jobs", fatal=True):
            calib.wait_for(lambda: all(v >= 20 for v in promql(
                p_prom, f"count_over_time(libvirt_domain_info_cpu_time_seconds_total{{{sel}}}[30s])",
                time.time()).values()) and len(promql(
                    p_prom, f"count_over_time(libvirt_domain_info_cpu_time_seconds_total{{{sel}}}[30s])",
                    time.time())) == 2, timeout=90, interval=1, what="samples from both jobs")
        at = time.time() - 2
        with c.case("libvirt_up is 1 on both"):
            up = promql(p_prom, "libvirt_up", at)
            assert up == {"agent": 1.0, "exporter": 1.0}, up
        with c.case("every exporter series of the guest is on the agent, same name and labels"):
            by_job = series_labels(p_prom, f'{{__name__=~"libvirt_domain_.*",{sel}}}', at)
            exp, ours = by_job.get("exporter", set()), by_job.get("agent", set())
            assert exp, by_job.keys()
            missing = sorted((n, sorted(lab)) for n, lab in exp - ours)
            assert not missing, short(missing, 2000)
            calib.log(f"{len(exp)} exporter series of the guest, all on the agent")
        with c.case("the same instant figures: vCPUs, memory, state; block counters (moving: the two "
                    "read them up to ~2 s apart) within 3 s of their rate"):
            for q in ("libvirt_domain_info_virtual_cpus", "libvirt_domain_info_maximum_memory_bytes",
                      "libvirt_domain_info_memory_usage_bytes", "libvirt_domain_state_code"):
                v = promql(p_prom, f'{q}{{{sel}}}', at)
                assert len(v) == 2 and v["agent"] == v["exporter"], (q, v)
            for q in ("libvirt_domain_block_stats_read_bytes_total", "libvirt_domain_block_stats_write_requests_total"):
                v = promql(p_prom, f'{q}{{{sel},target_device="vda"}}', at)
                rate = promql(p_prom, f'rate({q}{{{sel},target_device="vda"}}[{WINDOW}])', at)
                slack = 3 * max(rate.values(), default=0) + 1
                assert len(v) == 2 and abs(v["agent"] - v["exporter"]) <= slack, (q, v, f"slack {slack:.0f}")
        with c.case(f"rate(CPU time[{WINDOW}]) agrees within 10 % + 0.002 s/s"):
            v = promql(p_prom, f"rate(libvirt_domain_info_cpu_time_seconds_total{{{sel}}}[{WINDOW}])", at)
            calib.log(f"rate of CPU time: {v}")
            assert len(v) == 2 and v["exporter"] > 0, v
            assert close(v["agent"], v["exporter"], 0.10, 0.002), v
        for what in ("read", "write"):
            with c.case(f"rate(block {what} bytes[{WINDOW}]) > 16 KiB/s on both (the guest's ca.io) and "
                        "agrees within 15 % + 512 B/s"):
                v = promql(p_prom, f"sum by (job) (rate(libvirt_domain_block_stats_{what}_bytes_total"
                                   f"{{{sel}}}[{WINDOW}]))", at)
                calib.log(f"rate of block {what} bytes: {v}")
                assert len(v) == 2 and min(v.values()) > 16384, v
                assert close(v["agent"], v["exporter"], 0.15, 512), v
        if not NS:
            calib.log("     (no NIC without the test network namespace: interface rates not compared)")
        for what in ("receive", "transmit") if NS else ():
            with c.case(f"rate(interface {what} bytes[{WINDOW}]) > 1 KiB/s on both (pings) and agrees "
                        "within 15 % + 512 B/s"):
                v = promql(p_prom, f"sum by (job) (rate(libvirt_domain_interface_stats_{what}_bytes_total"
                                   f"{{{sel}}}[{WINDOW}]))", at)
                calib.log(f"rate of interface {what} bytes: {v}")
                assert len(v) == 2 and min(v.values()) > 1024, v
                assert close(v["agent"], v["exporter"], 0.15, 512), v
        with c.case("the agent's /metrics passes promtool check metrics"):
            text = http_get(f"http://127.0.0.1:{p_agent}/metrics")
            assert "libvirt_domain_info_cpu_time_seconds_total{" in text
            if shutil.which("promtool"):
                p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
                assert p.returncode == 0, p.stdout + p.stderr
        with c.case("the guest's meters on the bus are ceilometer's or compute_agent.*"):
            if ceilo is None:
                calib.log("python3-ceilometer not installed: name check skipped")
            else:
                bs = cl.host()["bus"]["bootstrap_servers"]
                p = subprocess.run(argv_in([sys.executable, "-c", _METERS, bs, iid, "disk.device.capacity,cpu_util"]),
                                   capture_output=True, text=True, timeout=90)
                assert p.returncode == 0, p.stderr[-500:]
                got = json.loads(p.stdout.strip().splitlines()[-1])
                assert got["topics"], "no telemetry topic"
                meters = set(got["meters"])
                calib.log(f"meters of the guest: {sorted(meters)}")
                for want in ("cpu", "cpu_util", "disk.device.read.bytes", "disk.device.capacity",
                             "disk.device.allocation", "disk.device.usage", "disk.root.size",
                             "disk.ephemeral.size"):
                    assert want in meters, (want, sorted(meters))
                bad = ceilometer_meters.check(meters, ceilo[0])
                assert not bad, bad
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if iid:
            try:
                cl.wait_operation(cl.terminate(iid)["operation"]["id"], timeout=60)
            except Exception as e:  # noqa: BLE001 - best effort, the agent's cleanup follows
                calib.log(f"terminate: {e}")
    with c.case("agent stops cleanly"):
        assert agent.stop() == 0


if __name__ == "__main__":
    calib.run("test_prom_exporter_qemu", main)
