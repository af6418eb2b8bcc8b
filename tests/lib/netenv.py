"""Helpers for the tests that run in the test network namespace (tests/env/netns.sh).

tests/run.sh starts the env for tests named test_net_* (or marked "# needs: netns") and
exports CA_NETNS (the network namespace), CA_NETNS_LIBVIRT_URI (the private libvirtd inside
it, a qemu+unix socket URI usable from anywhere) and CA_NETNS_DIR (its state dir).

What is here:
- env(): those three, or skip().
- ns_argv()/ns_run(): a command inside the namespace (`ip netns exec NS ...`). That is all
  a client, server or agent needs: libvirt is reached through the socket URI. Only what
  must see the private /run/libvirt & co under their usual paths needs
  `tests/env/netns.sh enter DIR ...` (nsenter into libvirtd's mount namespace too).
- Bridge / veth / address set-up in the namespace (with `ip`: this is the test's side);
  ClientNetns: a client in a namespace of its own, on a veth into a bridge of the env.
- Background helpers in the namespace: a fixed-answer HTTP server (env smoke test only),
  a UDP listener that records what it receives.
- NetnsAgent: calib.Agent run inside the namespace.
- Serial-log parsing for the test guest's CA-NET markers (tests/env/build-guest.sh).
- nft counters of a bridge-family table, a root-netns snapshot.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import calib  # noqa: E402

NETNS_SH = ROOT / "tests" / "env" / "netns.sh"


def env():
    """(ns, uri, dir) of the netns env, or skip()."""
    ns, uri, d = (os.environ.get(k) for k in ("CA_NETNS", "CA_NETNS_LIBVIRT_URI", "CA_NETNS_DIR"))
    if not ns or not uri or not d:
        calib.skip("no test network namespace (CA_NETNS/CA_NETNS_LIBVIRT_URI unset: tests/run.sh "
                   "starts tests/env/netns.sh as root for test_net_* tests)")
    if not Path(f"/run/netns/{ns}").exists():
        raise AssertionError(f"CA_NETNS={ns} does not exist")
    return ns, uri, Path(d)


def ns_argv(ns, *argv):
    return ["ip", "netns", "exec", ns, *map(str, argv)]


def ns_run(ns, *argv, check=True, timeout=30, input=None):
    """Run argv in the namespace; returns stdout (str). check: raise with stderr on failure."""
    p = subprocess.run(ns_argv(ns, *argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"in {ns}: {' '.join(map(str, argv))} -> {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def ip(ns, *args, check=True):
    return ns_run(ns, "ip", *args, check=check)


def links(ns):
    """{name: {"kind":..., "master":..., "alias":..., "mtu":...}} of the namespace (ip -j -d link)."""
    out = json.loads(ip(ns, "-j", "-d", "link", "show") or "[]")
    res = {}
    for l in out:
        info = l.get("linkinfo", {})
        res[l["ifname"]] = {"kind": info.get("info_kind"), "master": l.get("master"),
                            "alias": l.get("ifalias"), "mtu": l.get("mtu"),
                            "address": l.get("address"), "data": info.get("info_data", {}),
                            "operstate": l.get("operstate")}
    return res


def make_bridge(ns, name, addrs=()):
    ip(ns, "link", "add", name, "type", "bridge")
    for a in addrs:
        ip(ns, "addr", "add", a, "dev", name)
    ip(ns, "link", "set", name, "up")


def del_link(ns, name):
    ip(ns, "link", "del", name, check=False)


class NsProcess:
    """A background process inside the namespace (killed by pid at stop())."""

    def __init__(self, ns, argv, log_path):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(ns_argv(ns, *argv), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


_HTTP_SERVER = r'''
import http.server, json, sys
addr, port, body, reqlog = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        with open(reqlog, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "src": self.client_address[0],
                                "headers": dict(self.headers)}) + "\n")
        b = body
        if self.command == "PUT":
            b = b"smoke-token"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    do_GET = do_PUT = answer
    def log_message(self, *a):
        pass
http.server.HTTPServer.allow_reuse_address = True
srv = http.server.HTTPServer((addr, port), H)
print("listening", flush=True)
srv.serve_forever()
'''


def fixed_http_server(ns, addr, port, body, workdir):
    """Env smoke test only: answers every GET with `body` (PUT: a fixed token); requests in
    workdir/http-requests.jsonl. Waits until it listens."""
    reqlog = Path(workdir) / "http-requests.jsonl"
    reqlog.write_text("")
    p = NsProcess(ns, [sys.executable, "-c", _HTTP_SERVER, addr, port, body, reqlog], Path(workdir) / "http.log")
    calib.wait_for(lambda: "listening" in p.log() or not p.alive(), 15, what="the HTTP server to listen")
    assert p.alive(), f"HTTP server exited: {p.log()}"
    p.requests = lambda: [json.loads(l) for l in reqlog.read_text().splitlines() if l.strip()]
    return p


_UDP_LISTENER = r'''
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
with open(sys.argv[3], "a") as f:
    while True:
        data, (src, sport) = s.recvfrom(2048)
        # a tftp read request: opcode 1, file name, 0, mode, 0
        name = data[2:].split(b"\0", 1)[0].decode(errors="replace") if data[:2] == b"\0\1" else ""
        f.write(json.dumps({"src": src, "sport": sport, "name": name, "len": len(data)}) + "\n")
        f.flush()
'''


def udp_listener(ns, addr, port, workdir, tag="udp"):
    """Records every datagram to addr:port (the guest's `ca.udp` probes): .received() ->
    [{"src", "sport", "name", "len"}]."""
    path = Path(workdir) / f"{tag}-received.jsonl"
    path.write_text("")
    p = NsProcess(ns, [sys.executable, "-c", _UDP_LISTENER, addr, port, path], Path(workdir) / f"{tag}.log")
    calib.wait_for(lambda: "listening" in p.log() or not p.alive(), 15, what="the UDP listener to listen")
    assert p.alive(), f"UDP listener exited: {p.log()}"
    p.received = lambda: [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return p


class ClientNetns:
    """A client on a bridge of the env's namespace, in a namespace of its own (a veth pair:
    host end `dev` on `bridge` in `ns`, peer `dev`+"p" as eth0 in the client namespace
    `name`, with `ip` (IP/PREFIX) and optionally a default route via `gw` and the given
    MAC). Everything it sends enters the bridge like a guest's frames. Use as a context
    manager; run commands with .run(argv) / .argv(argv)."""

    def __init__(self, ns, bridge, name, dev, ip, gw=None, mac=None):
        self.ns, self.bridge, self.name, self.dev = ns, bridge, name, dev
        self.ip_, self.gw, self.mac = ip, gw, mac

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            peer = self.dev + "p"
            ip(self.ns, "link", "add", self.dev, "type", "veth", "peer", "name", peer, "netns", self.name)
            ip(self.ns, "link", "set", self.dev, "master", self.bridge)
            ip(self.ns, "link", "set", self.dev, "up")
            ip(self.name, "link", "set", "lo", "up")
            ip(self.name, "link", "set", peer, "name", "eth0")
            if self.mac:
                ip(self.name, "link", "set", "eth0", "address", self.mac)
            ip(self.name, "addr", "add", self.ip_, "dev", "eth0")
            ip(self.name, "link", "set", "eth0", "up")
            if self.gw:
                ip(self.name, "route", "add", "default", "via", self.gw)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        del_link(self.ns, self.dev)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        return False

    def argv(self, *argv):
        return ns_argv(self.name, *argv)

    def run(self, *argv, check=True, timeout=30):
        return ns_run(self.name, *argv, check=check, timeout=timeout)


class NetnsAgent(calib.Agent):
    """The agent run inside the test network namespace: its netlink calls, nft tables and
    metadata listeners are the namespace's; libvirt is the private one (socket URI)."""

    def __init__(self, ns, *a, **kw):
        self.ns = ns
        super().__init__(*a, **kw)

    def argv(self):
        return ns_argv(self.ns, *super().argv())


# ------------------------------------------------------------------ guest serial log

BLOCK_RE = re.compile(r"CA-NET-B64 (\S+) ([A-Za-z0-9+/=]*)\r?\n(?:.*\n)??CA-NET-END \1 rc=(\d+)(?: err=([^\r\n]*))?")


def blocks(text):
    """{NAME: (rc, body bytes, err)} of the CA-NET-BEGIN/B64/END blocks in a serial log (last wins)."""
    res = {}
    for m in BLOCK_RE.finditer(text):
        res[m.group(1)] = (int(m.group(3)), base64.b64decode(m.group(2)), (m.group(4) or "").strip())
    return res


def markers(text):
    """The 'CA-NET: ...' lines (without the prefix), in order."""
    return [l.split("CA-NET: ", 1)[1].strip() for l in text.splitlines() if "CA-NET: " in l]


def wait_marker(watch, rx, timeout=120.0):
    """Wait until a CA-NET marker matches regex rx in the console (calib.ConsoleWatch); the match."""
    r = re.compile(rx)

    def find():
        for m in markers(watch.text()):
            mm = r.search(m)
            if mm:
                return mm
        return None
    return calib.wait_for(find, timeout, interval=0.2, what=f"CA-NET marker /{rx}/ in {watch.path}",
                          last=lambda: " | ".join(markers(watch.text())[-6:]) or repr(watch.text()[-300:]))


def guest_cmdline(*params):
    return "console=ttyS0 panic=-1 quiet " + " ".join(p for p in params if p)


def domain_xml(name, gdir, cmdline, serial, interfaces_xml="", extra_devices="", machine="pc", memory_mb=160):
    """A TCG domain with direct kernel boot of the test guest (plain libvirt, no agent)."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mb}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='{machine}'>hvm</type>
    <kernel>{gdir}/vmlinuz</kernel><initrd>{gdir}/initrd.gz</initrd>
    <cmdline>{cmdline}</cmdline></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {interfaces_xml}
    {extra_devices}
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
    <console type='file'><source path='{serial}'/><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


# ------------------------------------------------------------------ nft, host snapshot

def _nft_json(ns, table, family):
    p = subprocess.run(ns_argv(ns, "nft", "-j", "list", "table", family, table), capture_output=True,
                       text=True, timeout=30)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout).get("nftables", [])


def _counter_of(expr_counter, named):
    """(key, packets, bytes) of a rule's counter: anonymous ({"packets",..}) or a named
    counter's reference (its name, looked up in the table's counter objects)."""
    if isinstance(expr_counter, str):
        c = named.get(expr_counter, {})
        return expr_counter, int(c.get("packets", 0)), int(c.get("bytes", 0))
    if isinstance(expr_counter, dict) and "packets" in expr_counter:
        return None, int(expr_counter.get("packets", 0)), int(expr_counter.get("bytes", 0))
    return None, 0, 0


def nft_counters(ns, table="compute_agent", family="bridge"):
    """[(chain, comment or counter name, packets, bytes, handle)] for every rule counter of
    the table (anonymous or named); [] if the table is absent."""
    items = _nft_json(ns, table, family) or []
    named = {i["counter"]["name"]: i["counter"] for i in items if isinstance(i.get("counter"), dict)}
    res = []
    for item in items:
        rule = item.get("rule")
        if not rule:
            continue
        for e in rule.get("expr", []):
            if isinstance(e, dict) and "counter" in e:
                key, pk, by = _counter_of(e["counter"], named)
                res.append((rule.get("chain"), key or rule.get("comment", ""), pk, by, rule.get("handle")))
    return res


def nft_drops(ns, table="compute_agent", family="bridge"):
    """Packets counted by the table's dropping rules (a named counter shared by several
    rules counts once); None if the table is absent."""
    items = _nft_json(ns, table, family)
    if items is None:
        return None
    named = {i["counter"]["name"]: i["counter"] for i in items if isinstance(i.get("counter"), dict)}
    n, seen = 0, set()
    for item in items:
        rule = item.get("rule")
        if not rule:
            continue
        exprs = rule.get("expr", [])
        if not any(isinstance(e, dict) and "drop" in e for e in exprs):
            continue
        for e in exprs:
            if isinstance(e, dict) and "counter" in e:
                key, pk, _ = _counter_of(e["counter"], named)
                if key is not None:
                    if key in seen:
                        continue
                    seen.add(key)
                n += pk
    return n


def root_snapshot():
    """The root network namespace as tests/run.sh compares it (volatile fields left out)."""
    cmds = [["ip", "-o", "link"], ["ip", "-o", "addr"], ["ip", "route"], ["ip", "-6", "route"],
            ["ip", "rule"], ["nft", "-s", "list", "ruleset"]]
    out = []
    for c in cmds:
        p = subprocess.run(c, capture_output=True, text=True, timeout=30)
        txt = re.sub(r" +valid_lft \S+ preferred_lft \S+", "", p.stdout)
        txt = re.sub(r" expires \S+", "", txt)
        out.append("## " + " ".join(c) + "\n" + txt)
    return "\n".join(out)


def snapshot_diff(before, after):
    import difflib
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "before", "after"))


def wait_gone(pred, timeout=30.0, what="condition"):
    return calib.wait_for(pred, timeout, what=what)


def now():
    return time.monotonic()


# ------------------------------------------------------------------ the agent in the namespace

NO_NETWORKS = ("the agent has no guest networking yet (GET /v1/networks -> 404; needs issue 10's "
               "net-plug, metadata and agent integration merged)")


def config_text(networks, metadata=None, extra=""):
    """INI text: [network NAME] sections from {name: {key: value}}, a [metadata] section."""
    out = []
    for name, keys in networks.items():
        out.append(f"[network {name}]")
        for k, v in keys.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, (list, tuple)):
                v = ",".join(v)
            out.append(f"{k} = {v}")
        out.append("")
    if metadata:
        out.append("[metadata]")
        out += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in metadata.items()]
        out.append("")
    return "\n".join(out) + extra


def start_agent(c, d, ns, uri, networks, metadata=None, timeout=180, extra=""):
    """A qemu agent inside the namespace with these [network] sections, on the private
    libvirtd; returns (agent, client, {name: network JSON}). SKIPs when GET /v1/networks
    404s (the agent does not have the feature yet)."""
    calib.require_agent_binary()
    conf = Path(d) / "agent.conf"
    conf.write_text(config_text(networks, metadata, extra))
    agent = NetnsAgent(ns, Path(d) / "state", hypervisor="qemu", libvirt_uri=uri, log_level="debug",
                       extra_args=["--config", str(conf), "--host-name", calib.unique("ca-it-net")])
    c.agents.append(agent)
    try:
        agent.start(timeout=timeout)
    except calib.AgentExited as e:
        if re.search(r"unknown (key|section) \[?network", str(e)):
            calib.skip(NO_NETWORKS.replace("GET /v1/networks -> 404", "[network NAME] sections refused"))
        with c.case("agent starts inside the test network namespace (qemu, private libvirtd)", fatal=True):
            raise
    c.check(True, "agent starts inside the test network namespace (qemu, private libvirtd)")
    cl = agent.client(timeout=60)
    st, body = cl.get("/v1/networks")
    if st == 404:
        agent.stop()
        calib.skip(NO_NETWORKS)
    with c.case("GET /v1/networks lists the configured networks", fatal=True):
        assert st == 200, f"GET /v1/networks -> {st} {calib.short(body)}"
        nets = {n["name"]: n for n in body["networks"]}
        assert set(nets) == set(networks), f"{sorted(nets)} != {sorted(networks)}"
        for name, keys in networks.items():
            for k in ("type", "cidr", "gateway"):
                if k in keys:
                    assert nets[name].get(k) == keys[k], f"{name}.{k}: {nets[name].get(k)!r} != {keys[k]!r}"
    return agent, cl, nets


def launch_body(name, gdir, params=(), interfaces=(), **extra):
    boot = calib.guest_boot(Path(gdir))
    boot["cmdline"] = guest_cmdline(*params)
    b = {"name": name, "flavor": {"vcpus": 1, "memory_mb": 160, "disk_gb": 0}, "kernel": boot,
         "interfaces": list(interfaces)}
    b.update(extra)
    return b


def static_params(ip, prefix, gw, *more):
    return (f"ca.net={ip}/{prefix},{gw}", *more)


def agent_devices(cl, states=None):
    """{device: instance id} of the interfaces of the instances in `states` (None: every
    instance not terminated)."""
    res = {}
    for i in cl.instances():
        if i["state"] == "terminated" or (states is not None and i["state"] not in states):
            continue
        for itf in i.get("interfaces") or []:
            if itf.get("device"):
                res[itf["device"]] = i["id"]
    return res


def ours(link):
    return (link.get("alias") or "").startswith("compute-agent")


def nft_text(ns, table="compute_agent", family="bridge"):
    p = subprocess.run(ns_argv(ns, "nft", "list", "table", family, table), capture_output=True, text=True,
                       timeout=30)
    return p.stdout if p.returncode == 0 else ""


def leaks(ns, cl):
    """What is left over or missing in the namespace compared with the agent's instances:
    a list of problems (empty = none). Taps/veths marked compute-agent that no instance
    (not terminated) has; running instances' devices missing or on no bridge; nft set
    elements naming a device no instance has; the agent's bridges with no port left."""
    probs = []
    ln = links(ns)
    devs = agent_devices(cl)                       # may exist (stopped, error: either way)
    running = agent_devices(cl, states=("running",))  # must exist
    for name, l in ln.items():
        if ours(l) and l["kind"] in ("tun", "veth", None) and name not in devs:
            probs.append(f"device {name} ({l['alias']}) is marked as the agent's but no instance has it")
    for dev, iid in running.items():
        if dev not in ln:
            probs.append(f"running instance {iid}'s device {dev} is missing")
        elif not ln[dev]["master"]:
            probs.append(f"running instance {iid}'s device {dev} is on no bridge")
    text = nft_text(ns)
    for dev in sorted(set(re.findall(r'"([^"\s]{1,15})" \. ', text))):
        if dev not in devs:
            probs.append(f"nft table bridge compute_agent still names device {dev!r}")
    used = {l["master"] for l in ln.values() if l["master"]}
    for name, l in ln.items():
        if l["kind"] == "bridge" and ours(l) and name not in used:
            probs.append(f"bridge {name} ({l['alias']}) made by the agent has no port left")
    return probs


def cleanup_instances(cl, ids, timeout=120):
    """Terminate (best effort) the instances the test made; wait for each."""
    for iid in ids:
        try:
            inst = cl.instance(iid)
            if inst["state"] == "terminated":
                continue
            st, r = cl.call("DELETE", f"/v1/instances/{iid}")
            if st == 202:
                cl.wait_operation(r["operation"]["id"], timeout=timeout)
        except Exception as e:  # noqa: BLE001 - best effort
            print(f"     (cleanup of {iid}: {e})")
