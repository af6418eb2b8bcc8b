"""Helpers for compute-agent's Python integration tests.

Each tests/integration/test_*.py is a standalone script (exit 0 pass, 1 fail, 77 skip)
that imports this module. It needs Python 3.11's stdlib plus Debian's python3-jsonschema
(4.10) and python3-yaml; newer jsonschema releases work too.

What is here:
- Agent: start the daemon as a subprocess (stderr to a log file), wait until its API
  answers (bounded retry loop against a deadline), stop it gracefully (SIGTERM) or
  crash it (SIGKILL), restart it on the same state directory.
- Client: HTTP/1.1 over the agent's unix socket (or TCP with a bearer token);
  call() returns (status, json).
- validate()/validate_response(): check JSON against api-spec/openapi.yaml. The
  OpenAPI 3.0 components are turned into one JSON Schema (draft 7) document with
  `definitions`, translating `nullable: true` into type lists.
- wait_for(): poll a predicate until it holds or a deadline passes.
- Checks: one printed line per check, a closing "N passed, N failed" line, exit code.
- virsh helpers for the tests that run against a real libvirtd.
"""

from __future__ import annotations

import atexit
import base64
import copy
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid as uuidlib
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "api-spec" / "openapi.yaml"
BUILD = Path(os.environ.get("BUILD") or (ROOT / "build")).resolve()
AGENT_BIN = Path(os.environ.get("CA_AGENT_BIN") or (BUILD / "compute-agent"))

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EC2_RE = re.compile(r"^i-[0-9a-f]{17}$")

SKIP = 77

# Instance states in which no operation is under way.
SETTLED_STATES = ("running", "stopped", "terminated", "error", "resized")


def log(msg: str) -> None:
    print(msg, flush=True)


def skip(reason: str) -> None:
    """Print why the test is skipped and exit 77."""
    log(f"SKIP: {reason}")
    sys.stdout.flush()
    sys.exit(SKIP)


def require_agent_binary() -> None:
    if not AGENT_BIN.exists() or not os.access(AGENT_BIN, os.X_OK):
        log(f"FAIL: agent binary {AGENT_BIN} missing (run make; BUILD={BUILD})")
        sys.exit(1)


# ---------------------------------------------------------------------------
# OpenAPI -> JSON Schema

_SCHEMA_KEYS_DICT = ("properties", "patternProperties", "definitions", "$defs")
_SCHEMA_KEYS_ONE = ("items", "additionalProperties", "not", "additionalItems", "contains",
                    "propertyNames", "if", "then", "else")
_SCHEMA_KEYS_LIST = ("allOf", "anyOf", "oneOf")
_OPENAPI_ONLY = ("nullable", "discriminator", "readOnly", "writeOnly", "xml",
                 "externalDocs", "example", "deprecated")


def strict_oas303_problems(doc):
    """Where doc breaks a strict reading of OAS 3.0.3's Schema Object, as `redocly lint`
    does (its nullable-type-sibling rule) and more: `nullable` only with a `type` beside
    it (3.0.3: nullable adds null to the type given in the same object, and does nothing
    without one); a nullable `enum` lists null itself; `type` is one string (no lists:
    that is 3.1); nothing beside a `$ref` (ignored there). Every schema: components and
    the inline ones of parameters, bodies and responses. Returns ["path: problem"]."""
    problems = []

    def schema(node, path):
        if not isinstance(node, dict):
            return
        if "$ref" in node and len(node) > 1:
            problems.append(f"{path}: {sorted(set(node) - {'$ref'})} beside $ref (ignored)")
        if "type" in node and not isinstance(node["type"], str):
            problems.append(f"{path}: type {node['type']!r} is not one string")
        if "nullable" in node:
            if not isinstance(node["nullable"], bool):
                problems.append(f"{path}: nullable is not a boolean")
            elif node["nullable"] and "type" not in node:
                problems.append(f"{path}: nullable without a type beside it")
            elif node["nullable"] and "enum" in node and None not in node["enum"]:
                problems.append(f"{path}: nullable enum without null in it (null would not validate)")
        for k in ("properties", "patternProperties"):
            for name, sub in (node.get(k) or {}).items():
                schema(sub, f"{path}/{k}/{name}")
        for k in ("items", "additionalProperties", "not"):
            if isinstance(node.get(k), dict):
                schema(node[k], f"{path}/{k}")
        for k in ("allOf", "anyOf", "oneOf"):
            for i, sub in enumerate(node.get(k) or []):
                schema(sub, f"{path}/{k}[{i}]")

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "schema" and isinstance(v, dict):
                    schema(v, f"{path}/schema")
                elif not (path == "/components" and k == "schemas"):
                    walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    for name, s in (doc.get("components", {}).get("schemas") or {}).items():
        schema(s, f"/components/schemas/{name}")
    walk(doc, "")
    return problems


def _convert(node):
    """One OpenAPI 3.0 schema object -> a draft-7 JSON Schema object (strict 3.0.3: a
    `nullable` without a `type` beside it is refused, see strict_oas303_problems())."""
    if not isinstance(node, dict):
        return node
    if node.get("nullable") is True and "type" not in node:
        raise ValueError(f"nullable without a type beside it (OAS 3.0.3): {sorted(node)}")
    out = {}
    for key, val in node.items():
        if key in _OPENAPI_ONLY:
            continue
        if key == "$ref":
            if not val.startswith("#/components/schemas/"):
                raise ValueError(f"unsupported $ref {val}")
            out[key] = "#/definitions/" + val.rsplit("/", 1)[1]
        elif key in _SCHEMA_KEYS_DICT and isinstance(val, dict):
            out[key] = {k: _convert(v) for k, v in val.items()}
        elif key in _SCHEMA_KEYS_ONE and isinstance(val, dict):
            out[key] = _convert(val)
        elif key in _SCHEMA_KEYS_LIST:
            out[key] = [_convert(v) for v in val]
        else:
            out[key] = copy.deepcopy(val)
    # OpenAPI 3.0 (draft 4 style) boolean exclusive bounds -> draft 7 numbers.
    for excl, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(excl), bool):
            if out[excl] and bound in out:
                out[excl] = out.pop(bound)
            else:
                del out[excl]
    if node.get("nullable") is True:
        # 3.0.3: null joins the type; an enum allows null only when it lists it
        t = out["type"]
        out["type"] = (t if isinstance(t, list) else [t]) + ["null"]
    return out


class Spec:
    """api-spec/openapi.yaml as JSON Schema, plus lookup of documented responses."""

    def __init__(self, path: Path = SPEC_PATH):
        with open(path, encoding="utf-8") as f:
            self.doc = yaml.safe_load(f)
        comps = self.doc.get("components", {}).get("schemas", {})
        self.definitions = {name: _convert(s) for name, s in comps.items()}
        self._validators = {}
        self._paths = []
        for tmpl in self.doc.get("paths", {}):
            rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(tmpl)) + "$"
            self._paths.append((re.compile(rx), tmpl))

    def schema_for(self, fragment):
        """A self-contained JSON Schema for an OpenAPI schema object (or component name)."""
        if isinstance(fragment, str):
            if fragment not in self.definitions:
                raise KeyError(f"no schema {fragment!r} in {SPEC_PATH}")
            fragment = {"$ref": "#/components/schemas/" + fragment}
        return {"allOf": [_convert(fragment)], "definitions": self.definitions}

    def errors(self, instance, fragment):
        key = fragment if isinstance(fragment, str) else json.dumps(fragment, sort_keys=True)
        v = self._validators.get(key)
        if v is None:
            schema = self.schema_for(fragment)
            jsonschema.Draft7Validator.check_schema(schema)
            v = jsonschema.Draft7Validator(schema)
            self._validators[key] = v
        errs = sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                for e in errs]

    def template(self, path: str):
        path = path.split("?", 1)[0]
        for rx, tmpl in self._paths:
            if rx.match(path):
                return tmpl
        return None

    def response_schema(self, method: str, path: str, status: int):
        """The documented JSON schema of `method path` answering `status`, or raise."""
        tmpl = self.template(path)
        if tmpl is None:
            raise AssertionError(f"{path} matches no path in openapi.yaml")
        op = self.doc["paths"][tmpl].get(method.lower())
        if op is None:
            raise AssertionError(f"{method} {tmpl} is not in openapi.yaml")
        resp = op.get("responses", {}).get(str(status)) or op.get("responses", {}).get("default")
        if resp is None:
            raise AssertionError(f"{method} {tmpl}: status {status} is not documented")
        if "$ref" in resp:
            resp = self.doc["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
        content = resp.get("content", {}).get("application/json")
        return None if content is None else content["schema"]


_SPEC = None


def spec() -> Spec:
    global _SPEC
    if _SPEC is None:
        _SPEC = Spec()
    return _SPEC


def validate(resp_json, schema_name) -> None:
    """Assert that resp_json matches components/schemas/<schema_name> (or a schema object)."""
    errs = spec().errors(resp_json, schema_name)
    assert not errs, (f"does not match schema {schema_name if isinstance(schema_name, str) else '<inline>'}: "
                      + "; ".join(errs[:5]) + f" -- body {short(resp_json)}")


def validate_response(method: str, path: str, status: int, body) -> None:
    """Assert that (status, body) is a documented answer of `method path` and matches its schema."""
    schema = spec().response_schema(method, path, status)
    if schema is None:
        return
    errs = spec().errors(body, schema)
    assert not errs, (f"{method} {path} -> {status}: body does not match openapi.yaml: "
                      + "; ".join(errs[:5]) + f" -- body {short(body)}")


def short(obj, n: int = 400) -> str:
    try:
        s = json.dumps(obj, sort_keys=True)
    except (TypeError, ValueError):
        s = repr(obj)
    return s if len(s) <= n else s[:n] + "..."


# ---------------------------------------------------------------------------
# HTTP client


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, sock_path: str, timeout: float = 30.0):
        super().__init__("localhost", timeout=timeout)
        self.sock_path = sock_path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.sock_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Response:
    """status, parsed JSON (None if the body is not JSON), raw body, headers."""

    def __init__(self, status, body, raw, headers):
        self.status = status
        self.json = body
        self.raw = raw
        self.headers = headers

    def __iter__(self):  # status, body = client.call(...)
        return iter((self.status, self.json))

    def __repr__(self):
        return f"<{self.status} {short(self.json) if self.json is not None else self.raw[:200]!r}>"


class SpecLog:
    """Every answer a Client gets is checked against openapi.yaml; mismatches are kept here
    (one entry per distinct problem) so that a test can report them in one check at its end
    without the mismatch stopping the functional checks."""

    def __init__(self):
        self.seen = 0
        self.problems = {}  # problem (without the body) -> first full message
        self.endpoints = {}  # "METHOD /template STATUS" -> [answers, {problem: message}]

    def record(self, method, path, status, body):
        self.seen += 1
        sp = spec()
        tmpl = sp.template(path)
        documented = tmpl is not None and method.lower() in sp.doc["paths"][tmpl]
        if not documented:
            # Unknown paths and methods are not in the spec; their answers are still errors.
            tmpl = tmpl or "<unknown path>"
            errs = [] if status >= 400 and not sp.errors(body, "Error") else \
                [f"expected an Error answer, got {status}: " + "; ".join(sp.errors(body, "Error"))]
        else:
            try:
                schema = sp.response_schema(method, path, status)
                errs = [] if schema is None else sp.errors(body, schema)
            except AssertionError as e:
                errs = [str(e).replace(path, tmpl)]
        key = f"{method} {tmpl} {status}"
        ep = self.endpoints.setdefault(key, [0, {}])
        ep[0] += 1
        for e in errs:
            norm = re.sub(r"/\d+/", "/*/", e)
            full = f"{key}: {norm} -- e.g. body {short(body, 300)}"
            self.problems.setdefault((key, norm), full)
            ep[1].setdefault(norm, full)

    def check_endpoints(self, checks):
        """One check per (method, path, status) seen: its answers match openapi.yaml."""
        for key in sorted(self.endpoints):
            n, probs = self.endpoints[key]
            with checks.case(f"{key}: {n} answer(s) match openapi.yaml"):
                assert not probs, "\n      ".join(probs.values())

    def check(self, checks, what="every answer seen matches api-spec/openapi.yaml"):
        with checks.case(f"{what} ({self.seen} answers)"):
            assert not self.problems, f"{len(self.problems)} distinct problem(s):\n      " + \
                "\n      ".join(self.problems.values())


class Client:
    def __init__(self, sock_path=None, tcp=None, token=None, timeout=30.0, spec_log=None):
        self.sock_path = str(sock_path) if sock_path else None
        self.tcp = tcp  # (host, port)
        self.token = token
        self.timeout = timeout
        self.spec_log = spec_log

    def _conn(self):
        if self.sock_path:
            return UnixHTTPConnection(self.sock_path, timeout=self.timeout)
        host, port = self.tcp
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def request(self, method, path, body=None, headers=None, token=None,
                content_type="application/json") -> Response:
        """Send one request on a fresh connection. body: dict/list -> JSON; str/bytes -> as is."""
        hdrs = {"Accept": "application/json", "Connection": "close"}
        tok = token if token is not None else self.token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = None
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                data = bytes(body)
            elif isinstance(body, str):
                data = body.encode("utf-8")
            else:
                data = json.dumps(body).encode("utf-8")
            if content_type is not None:
                hdrs["Content-Type"] = content_type
        if headers:
            for k, v in headers.items():
                if v is None:
                    hdrs.pop(k, None)
                else:
                    hdrs[k] = v
        conn = self._conn()
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
            rh = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        if self.spec_log is not None:
            self.spec_log.record(method, path, status, parsed)
        return Response(status, parsed, raw, rh)

    def request_raw(self, method, path, body=None, headers=None, content_type="application/json") -> Response:
        """Like request(), on a plain socket that keeps going when the server answers early and
        closes (as for 413): stops sending on EPIPE/ECONNRESET and reads what was answered."""
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body or b""
        hdrs = {"Host": "localhost", "Connection": "close", "Content-Length": str(len(data))}
        if content_type and data:
            hdrs["Content-Type"] = content_type
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        hdrs.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        if self.sock_path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr = self.sock_path
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            addr = tuple(self.tcp)
        s.settimeout(self.timeout)
        try:
            s.connect(addr)
            payload = head.encode() + data
            try:
                s.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
            chunks = []
            while True:
                try:
                    ch = s.recv(65536)
                except ConnectionResetError:
                    break
                if not ch:
                    break
                chunks.append(ch)
        finally:
            s.close()
        raw = b"".join(chunks)
        if not raw:
            raise AssertionError(f"{method} {path}: connection closed without an answer")
        head_b, _, rest = raw.partition(b"\r\n\r\n")
        lines = head_b.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        rh = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            rh[k.strip().lower()] = v.strip()
        if "content-length" in rh:
            rest = rest[:int(rh["content-length"])]
        elif rh.get("transfer-encoding", "").lower() == "chunked":
            out, buf = b"", rest
            while buf:
                size_s, _, buf = buf.partition(b"\r\n")
                size = int(size_s.split(b";")[0] or b"0", 16)
                if size == 0:
                    break
                out += buf[:size]
                buf = buf[size + 2:]
            rest = out
        try:
            parsed = json.loads(rest) if rest else None
        except ValueError:
            parsed = None
        if self.spec_log is not None:
            self.spec_log.record(method, path, status, parsed)
        return Response(status, parsed, rest, rh)

    def call(self, method, path, body=None, **kw):
        """(status, json)"""
        r = self.request(method, path, body, **kw)
        return r.status, r.json

    # conveniences -------------------------------------------------------
    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def instances(self):
        st, body = self.get("/v1/instances")
        assert st == 200, f"GET /v1/instances -> {st} {short(body)}"
        return body["instances"]

    def instance(self, iid):
        st, body = self.get(f"/v1/instances/{iid}")
        assert st == 200, f"GET /v1/instances/{iid} -> {st} {short(body)}"
        return body

    def operation(self, oid):
        st, body = self.get(f"/v1/operations/{oid}")
        assert st == 200, f"GET /v1/operations/{oid} -> {st} {short(body)}"
        return body

    def host(self):
        st, body = self.get("/v1/host")
        assert st == 200, f"GET /v1/host -> {st} {short(body)}"
        return body

    def launch(self, body, expect=202, headers=None):
        st, resp = self.call("POST", "/v1/instances", body, headers=headers)
        assert st == expect, f"POST /v1/instances {short(body, 200)} -> {st} {short(resp)} (expected {expect})"
        return resp

    def action(self, iid, action, expect=202, **extra):
        body = {"action": action, **extra}
        st, resp = self.call("POST", f"/v1/instances/{iid}/actions", body)
        assert st == expect, f"POST /v1/instances/{iid}/actions {short(body)} -> {st} {short(resp)} (expected {expect})"
        return resp

    def terminate(self, iid, expect=202):
        st, resp = self.call("DELETE", f"/v1/instances/{iid}")
        assert st == expect, f"DELETE /v1/instances/{iid} -> {st} {short(resp)} (expected {expect})"
        return resp

    def wait_operation(self, oid, timeout=30.0):
        """Wait until the operation is succeeded or failed; return it."""
        return wait_for(lambda: (lambda op: op if op["state"] in ("succeeded", "failed") else None)(
            self.operation(oid)), timeout, what=f"operation {oid} to finish",
            last=lambda: short(self.operation(oid)))

    def wait_state(self, iid, state, timeout=30.0):
        """Wait until the instance is in `state` with no task under way; return it."""
        def pred():
            inst = self.instance(iid)
            return inst if inst["state"] == state and _idle(inst) else None
        return wait_for(pred, timeout, what=f"instance {iid} to be {state}",
                        last=lambda: short(self.instance(iid)))

    def wait_settled(self, iid, timeout=30.0):
        def pred():
            inst = self.instance(iid)
            return inst if inst["state"] in SETTLED_STATES and _idle(inst) else None
        return wait_for(pred, timeout, what=f"instance {iid} to settle",
                        last=lambda: short(self.instance(iid)))


def _idle(inst):
    """No operation under way: no task, or a resized one waiting for confirm/revert."""
    return inst["task_state"] is None or (inst["state"] == "resized" and inst["task_state"] == "verify_resize")


def expect_error(resp, status, code=None, field=..., what=""):
    """Assert an error answer: HTTP status (int or tuple), a body matching Error, the code, the field.

    field=... means "don't check"; None means must be null; a str or tuple of str: one of them.
    """
    st, body = resp
    statuses = status if isinstance(status, tuple) else (status,)
    assert st in statuses, f"{what}: expected HTTP {'/'.join(map(str, statuses))}, got {st} {short(body)}"
    assert body is not None, f"{what}: HTTP {st} without a JSON body"
    validate(body, "Error")
    err = body["error"]
    if code is not None:
        codes = code if isinstance(code, tuple) else (code,)
        assert err["code"] in codes, f"{what}: expected code {'/'.join(codes)}, got {short(err)}"
    if field is not ...:
        fields = field if isinstance(field, tuple) else (field,)
        assert err["field"] in fields, f"{what}: expected field {' or '.join(map(str, fields))}, got {short(err)}"
    return err


# ---------------------------------------------------------------------------
# Waiting


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition", last=None):
    """Poll predicate() until it returns a truthy value (returned) or `timeout` s pass (AssertionError).

    Exceptions from predicate count as "not yet" (the last one is reported on timeout).
    """
    deadline = time.monotonic() + timeout
    err = None
    delay = interval
    while True:
        try:
            v = predicate()
            if v:
                return v
            err = None
        except (OSError, http.client.HTTPException, AssertionError, KeyError, ValueError) as e:
            err = e
        if time.monotonic() >= deadline:
            detail = ""
            if last is not None:
                try:
                    detail = f"; last: {last()}"
                except Exception as e:  # noqa: BLE001 - only for the message
                    detail = f"; last: <{e}>"
            if err is not None:
                detail += f"; last error: {err}"
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)


# ---------------------------------------------------------------------------
# The agent process

_AGENTS = []


def _cleanup_agents():
    for a in list(_AGENTS):
        try:
            a.kill()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_cleanup_agents)


class AgentExited(AssertionError):
    pass


class Agent:
    """One compute-agent process on a state directory; can be restarted on the same directory."""

    def __init__(self, state_dir, hypervisor="test", libvirt_uri=None, api_listen=None,
                 api_token=None, extra_args=(), env=None, socket_path=None, log_level="debug",
                 local_image_dirs=None):
        """local_image_dirs: the directories local guest files may come from
        (--local-image-dirs); None: the harness's own, the `images` directory beside the
        state directory (make_fake_files) and CA_GUEST_DIR; () for none."""
        self.state_dir = Path(state_dir)
        if local_image_dirs is None:
            local_image_dirs = [self.state_dir.parent / "images"]
            if os.environ.get("CA_GUEST_DIR"):
                local_image_dirs.append(os.environ["CA_GUEST_DIR"])
        self.local_image_dirs = [str(p) for p in local_image_dirs]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.hypervisor = hypervisor
        self.libvirt_uri = libvirt_uri
        self.api_listen = api_listen
        self.api_token = api_token
        self.extra_args = list(extra_args)
        if not any(x in ("--host-name", "--config") for x in self.extra_args):
            # an agent adopts the guests whose metadata names its host: agents of tests
            # running side by side on one libvirtd must not share the machine's hostname
            self.extra_args += ["--host-name", unique("ca-it-host")]
        self.env = dict(env or {})
        self.sock = Path(socket_path) if socket_path else self.state_dir / "api.sock"
        self.log_level = log_level
        self.proc = None
        self.starts = 0
        self.log_path = None
        self._log_file = None

    def argv(self):
        a = [str(AGENT_BIN), "--state-dir", str(self.state_dir), "--hypervisor", self.hypervisor,
             "--api-socket", str(self.sock), "--log-level", self.log_level]
        if self.libvirt_uri:
            a += ["--libvirt-uri", self.libvirt_uri]
        if self.api_listen:
            a += ["--api-listen", self.api_listen]
        if self.api_token is not None:
            a += ["--api-token", self.api_token]
        if self.local_image_dirs:
            a += ["--local-image-dirs", ":".join(self.local_image_dirs)]
        return a + self.extra_args

    def client(self, **kw):
        return Client(self.sock, **kw)

    def start(self, wait=True, timeout=30.0, env=None):
        """Start the process (env: extra variables for this run only); wait for /healthz."""
        assert self.proc is None or self.proc.poll() is not None, "agent already running"
        self.starts += 1
        self.log_path = self.state_dir / f"agent.{self.starts}.log"
        self._log_file = open(self.log_path, "wb")
        e = dict(os.environ)
        e.pop("COMPUTE_AGENT_CRASH_AT", None)
        e.update(self.env)
        if env:
            e.update(env)
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=e, start_new_session=True)
        _AGENTS.append(self)
        if wait:
            self.wait_ready(timeout)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=30.0):
        """Bounded retry: the socket accepts and GET /healthz answers 200."""
        deadline = time.monotonic() + timeout
        cl = Client(self.sock, timeout=5.0)
        last = "socket not there yet"
        delay = 0.02
        while time.monotonic() < deadline:
            if not self.alive():
                raise AgentExited(f"agent exited with {self.proc.returncode} before answering "
                                  f"(argv {' '.join(self.argv())}); log tail:\n{self.log_tail()}")
            if self.sock.exists():
                try:
                    st, body = cl.get("/healthz")
                    if st == 200:
                        return
                    last = f"/healthz -> {st} {short(body)}"
                except (OSError, http.client.HTTPException) as e:
                    last = f"{type(e).__name__}: {e}"
            if self.api_listen and self.api_token:
                host, _, port = self.api_listen.rpartition(":")
                try:
                    st, body = Client(tcp=(host.strip("[]"), int(port)), token=self.api_token,
                                      timeout=5.0).get("/healthz")
                    if st == 200:
                        return
                    last = f"TCP /healthz -> {st} {short(body)}"
                except (OSError, http.client.HTTPException) as e:
                    last = f"TCP: {type(e).__name__}: {e}"
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        raise AssertionError(f"agent not ready within {timeout:g}s ({last}); log tail:\n{self.log_tail()}")

    def wait_exit(self, timeout=30.0):
        """Return the exit code (negative = killed by that signal) or None if still running."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.proc.poll() is not None:
                self._close_log()

    def stop(self, timeout=30.0):
        """Graceful stop: SIGTERM and wait; SIGKILL if it is still there at the deadline. Returns the exit code."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.kill()
            raise AssertionError(f"agent did not exit within {timeout:g}s of SIGTERM; log tail:\n{self.log_tail()}")
        return rc

    def kill(self):
        """Crash: SIGKILL and reap."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close_log()
        if self in _AGENTS:
            _AGENTS.remove(self)
        return self.proc.returncode if self.proc else None

    def restart(self, graceful=True, timeout=30.0, env=None):
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start(timeout=timeout, env=env)

    def _close_log(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, n=30):
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join("    " + l for l in lines[-n:])


# ---------------------------------------------------------------------------
# Checks: one line each, a closing summary, the exit code


class Checks:
    """with checks.case("what"): plain asserts inside; one ok/FAIL line per case."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = []
        self.agents = []  # agents whose log tails are shown on failure

    class _Case:
        def __init__(self, checks, what, fatal):
            self.checks = checks
            self.what = what
            self.fatal = fatal

        def __enter__(self):
            return self

        def __exit__(self, et, ev, tb):
            if et is None:
                self.checks.passed += 1
                log(f"ok   - {self.what}")
                return False
            if issubclass(et, SystemExit):
                return False
            if issubclass(et, AssertionError):
                msg = str(ev)
            else:
                msg = "".join(traceback.format_exception(et, ev, tb)).rstrip()
            self.checks.failed.append(self.what)
            log(f"FAIL - {self.what}: {msg}")
            if self.fatal:
                raise _Fatal(self.what)
            return True

    def case(self, what, fatal=False):
        """fatal=True: a failure ends the test (later cases depend on this one)."""
        return Checks._Case(self, what, fatal)

    def check(self, cond, what, detail=""):
        with self.case(what):
            assert cond, detail or "condition false"
        return cond

    def finish(self):
        n_fail = len(self.failed)
        if n_fail:
            for a in self.agents:
                if a.log_path:
                    log(f"--- {a.log_path} (tail) ---\n{a.log_tail(40)}")
        log(f"{self.name}: {self.passed} passed, {n_fail} failed")
        sys.exit(1 if n_fail else 0)


class _Fatal(Exception):
    pass


def run(name, body):
    """Run body(checks) and exit with the right code; a fatal case or crash ends the test failed."""
    checks = Checks(name)
    try:
        body(checks)
    except _Fatal as e:
        log(f"{name}: stopping after fatal failure in '{e}'")
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - any crash is a failure with its traceback
        checks.failed.append("unexpected exception")
        log("FAIL - unexpected exception:\n" + traceback.format_exc().rstrip())
    checks.finish()


# ---------------------------------------------------------------------------
# Fixtures


def tmpdir(prefix="ca-it-"):
    """A temporary directory removed at exit (kept when CA_KEEP_TMP=1)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("CA_KEEP_TMP") != "1":
        atexit.register(shutil.rmtree, d, True)
    return d


def make_fake_files(d: Path):
    """Small files that stand in for an image, a kernel and an initrd (test driver runs)."""
    img = d / "images" / "base.raw"
    img.parent.mkdir(parents=True, exist_ok=True)
    with open(img, "wb") as f:
        f.write(b"CA-TEST-DISK-01\n")
        f.truncate(1024 * 1024)
    kern = d / "images" / "vmlinuz"
    kern.write_bytes(b"\0" * 4096)
    initrd = d / "images" / "initrd.gz"
    initrd.write_bytes(b"\0" * 4096)
    return {"image": str(img), "kernel": str(kern), "initrd": str(initrd)}


def unique(prefix="ca-it"):
    return f"{prefix}-{os.getpid()}-{uuidlib.uuid4().hex[:8]}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def small_flavor():
    return {"vcpus": 1, "memory_mb": 128, "disk_gb": 1}


# ---------------------------------------------------------------------------
# virsh (real libvirtd tests)


def virsh(uri, *args, timeout=60, check=False):
    """Run virsh -c uri args...; returns (rc, stdout, stderr)."""
    p = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)} failed: {p.stderr.strip()}")
    return p.returncode, p.stdout, p.stderr


def domstate(uri, dom_uuid):
    """libvirt's state word(s) for the domain ('running', 'shut off', ...) or None if no such domain."""
    rc, out, err = virsh(uri, "domstate", dom_uuid)
    if rc != 0:
        if "ailed to get domain" in err or "no domain with matching" in err.lower() or "not found" in err.lower():
            return None
        raise AssertionError(f"virsh domstate {dom_uuid}: {err.strip()}")
    return out.strip()


def domain_uuids(uri):
    rc, out, err = virsh(uri, "list", "--all", "--uuid")
    assert rc == 0, f"virsh list --all --uuid: {err.strip()}"
    return {l.strip() for l in out.splitlines() if l.strip()}


def domain_xml(uri, dom):
    rc, out, _ = virsh(uri, "dumpxml", dom)
    return out if rc == 0 else ""


def domain_name(uri, dom_uuid):
    rc, out, _ = virsh(uri, "domname", dom_uuid)
    return out.strip() if rc == 0 else None


def destroy_domain(uri, dom):
    virsh(uri, "destroy", dom)
    rc, _, err = virsh(uri, "undefine", "--managed-save", "--snapshots-metadata", "--nvram", dom)
    if rc != 0:
        virsh(uri, "undefine", dom)


def cleanup_domains(uri, uuids=(), marker=None):
    """Destroy/undefine domains with these UUIDs, or whose name starts with / XML contains `marker`."""
    removed = []
    try:
        have = domain_uuids(uri)
    except Exception as e:  # noqa: BLE001
        log(f"cleanup: cannot list domains: {e}")
        return removed
    for u in have:
        hit = u in uuids
        if not hit and marker:
            name = domain_name(uri, u) or ""
            hit = name.startswith(marker) or marker in domain_xml(uri, u)
        if hit:
            destroy_domain(uri, u)
            removed.append(u)
    return removed


def libvirt_env():
    """(uri, guest_dir) for the real-libvirtd tests, or skip()."""
    uri = os.environ.get("CA_LIBVIRT_URI")
    if not uri:
        skip("CA_LIBVIRT_URI is not set (no real libvirtd for this run)")
    if shutil.which("virsh") is None:
        skip("virsh is not installed")
    gdir = os.environ.get("CA_GUEST_DIR")
    if not gdir or not all((Path(gdir) / f).is_file() for f in ("vmlinuz", "initrd.gz")):
        skip(f"CA_GUEST_DIR ({gdir!r}) has no vmlinuz + initrd.gz (tests/env/build-guest.sh)")
    rc, _, err = virsh(uri, "version", timeout=120)
    assert rc == 0, f"CA_LIBVIRT_URI={uri} does not answer: {err.strip()}"
    return uri, Path(gdir)


def guest_boot(gdir: Path):
    cmdline = "console=ttyS0 panic=-1 quiet"
    return {"path": str(gdir / "vmlinuz"), "initrd": str(gdir / "initrd.gz"), "cmdline": cmdline}


BOOT_MARKER = "COMPUTE-AGENT-GUEST: booted"
# The test guest prints one of these once it can (or cannot) handle the ACPI power button;
# graceful stop/reboot sent before that are lost, so tests wait for it.
ACPI_MARKERS = ("COMPUTE-AGENT-GUEST: acpid ready", "COMPUTE-AGENT-GUEST: no input event device")


class ConsoleWatch:
    """Follow an instance's console_log file across reboots (the file may be truncated or appended)."""

    def __init__(self, path):
        self.path = Path(path)
        self.mark()

    def _read(self):
        try:
            return self.path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def text(self):
        return self._read()

    def mark(self):
        """Remember what is there now; later waits look for what comes after it."""
        text = self._read()
        self.size = len(text)
        self.head = text[:256]

    def since_mark(self):
        """The text written since mark() (all of it if the file was truncated or rewritten)."""
        text = self._read()
        if len(text) < self.size or (self.head and not text.startswith(self.head)):
            return text
        return text[self.size:]

    def wait_text(self, markers, timeout=120.0):
        if isinstance(markers, str):
            markers = (markers,)
        found = wait_for(lambda: next((m for m in markers if m in self.since_mark()), None),
                         timeout, interval=0.2, what=f"{' or '.join(map(repr, markers))} in {self.path}",
                         last=lambda: repr(self._read()[-300:]))
        return found

    def wait_boot(self, timeout=120.0, acpi=True):
        """Wait for a boot after mark() (and, with acpi, for the guest's power-button handler); mark again."""
        deadline = time.monotonic() + timeout
        self.wait_text(BOOT_MARKER, timeout)
        if acpi:
            found = self.wait_text(ACPI_MARKERS, max(1.0, deadline - time.monotonic()))
            if found != ACPI_MARKERS[0]:
                log(f"     (guest says: {found}; graceful stop/reboot will not work)")
        self.mark()


# ---- a standalone mock Kafka cluster (build/tests/mock_kafka) ----

MOCK_KAFKA_BIN = BUILD / "tests" / "mock_kafka"


class MockKafka:
    def __init__(self, d, topics):
        self.d = d
        self.bs_file = d / "bootstrap"
        self.out_path = d / "mock_kafka.out"
        self.err_path = d / "mock_kafka.err"
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([str(MOCK_KAFKA_BIN), str(self.bs_file), *topics], stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=self.err, start_new_session=True)
        self.bs = wait_for(lambda: self._bootstrap(), 15, what="mock_kafka's bootstrap file",
                                 last=lambda: self.err_path.read_text(errors="replace")[-300:])

    def _bootstrap(self):
        assert self.proc.poll() is None, f"mock_kafka exited with {self.proc.returncode}"
        if self.bs_file.exists():
            return self.bs_file.read_text().strip() or None
        return None

    def lines(self):
        return self.out_path.read_text(errors="replace").splitlines()

    def signal(self, sig, confirm):
        n = self.lines().count(confirm)
        self.proc.send_signal(sig)
        wait_for(lambda: self.lines().count(confirm) > n, 10, what=f"mock_kafka to say {confirm!r}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.out.close()
        self.err.close()
        return self.proc.returncode
