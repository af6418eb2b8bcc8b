#!/usr/bin/env python3
"""Every telemetry meter name the agent can emit is ceilometer's (read from the installed
python3-ceilometer: ceilometer_meters.py) or prefixed compute_agent. The names the agent
can emit are the list unit-telemetry holds it to (tests/unit/test_telemetry.c,
test_json_shape's `known`: that test fails on any meter not in it), and the same list is
what api-spec/asyncapi.yaml's telemetrySample summary names. The cheap meters ceilometer
polls from the same bulk stats call are among them."""

import os
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
import ceilometer_meters  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WANTED = ["disk.device.capacity", "disk.device.allocation", "disk.device.usage", "disk.root.size",
          "disk.ephemeral.size", "memory.swap.in", "memory.swap.out"]


def known_list():
    src = (ROOT / "tests" / "unit" / "test_telemetry.c").read_text()
    m = re.search(r"static const char \*const known\[\] = \{(.*?)\};", src, re.S)
    assert m, "test_json_shape's known[] not found in tests/unit/test_telemetry.c"
    return re.findall(r'"([^"]+)"', m.group(1))


def main(c: calib.Checks):
    got = ceilometer_meters.names()
    if got is None:
        calib.skip("python3-ceilometer is not installed (scripts/install-deps.sh)")
    ceilo, where = got
    calib.log(f"ceilometer's compute meters: {len(ceilo)} from {where}")
    known = known_list()
    with c.case("the agent's meter list is read", fatal=True):
        assert len(known) > 20, known
    with c.case("every meter is ceilometer's or prefixed compute_agent."):
        bad = ceilometer_meters.check(known, ceilo)
        assert not bad, f"not ceilometer's and not compute_agent.*: {bad}"
    with c.case("no compute_agent. meter shadows one ceilometer has"):
        dup = [m for m in known if m.startswith("compute_agent.") and m[len("compute_agent."):] in ceilo]
        assert not dup, dup
    with c.case("the cheap ceilometer meters from the bulk stats call are emitted"):
        missing = [m for m in WANTED if m not in known]
        assert not missing, missing
        assert all(m in ceilo for m in WANTED), [m for m in WANTED if m not in ceilo]
    with c.case("asyncapi.yaml's telemetrySample names every meter"):
        spec = (ROOT / "api-spec" / "asyncapi.yaml").read_text()
        summ = spec[spec.index("telemetrySample:"):spec.index("contentType", spec.index("telemetrySample:"))]
        words = set(re.findall(r"[a-z_]+(?:\.[a-z_]+)*", summ))
        # the summary shortens compute_agent.hardware.memory.* as ".avail, .buffer, ..."
        absent = [m for m in known if m not in words and not m.startswith("compute_agent.hardware.memory.")]
        assert not absent, absent


if __name__ == "__main__":
    calib.run("test_telemetry_meter_names", main)
