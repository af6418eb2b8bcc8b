"""Ceilometer's compute meter names, read from the installed python3-ceilometer (not a
copy): the compute pollsters (entry point group ceilometer.poll.compute) and the literal
names of data/meters.d/meters.yaml (notification meters: memory, vcpus, disk.root.size,
compute.node.cpu.*, ...). names() -> (set of names, where they were read) or None when
ceilometer is not installed."""

import importlib.metadata
import importlib.util
import os

import yaml


def names():
    spec = importlib.util.find_spec("ceilometer")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = list(spec.submodule_search_locations)[0]
    out = set()
    for ep in importlib.metadata.entry_points(group="ceilometer.poll.compute"):
        out.add(ep.name)
    path = os.path.join(pkg, "data", "meters.d", "meters.yaml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    for m in doc.get("metric", []):
        n = m.get("name")
        if isinstance(n, str) and not n.startswith("$") and "+" not in n:
            out.add(n)
    if not any(n.startswith("disk.device.") for n in out):
        return None  # not the package we think
    return out, f"{pkg} (entry points ceilometer.poll.compute, {path})"


def check(meters, ceilo):
    """The emitted meter names that are neither ceilometer's nor prefixed compute_agent."""
    return sorted(m for m in meters if m not in ceilo and not m.startswith("compute_agent."))
