#!/usr/bin/env python3
"""The man pages and the bash completion say what --help says, and make install installs them.

- computectl(1) (docs/man/computectl.1): the global options (section GLOBAL OPTIONS) are
  those of `computectl --help`; each command has a `.SS COMMAND` section whose options
  (`.TP` items) are exactly those of `computectl COMMAND --help`; every command of --help
  has a section and no section names a command --help lacks.
- compute-agent(8) (docs/man/compute-agent.8): the OPTIONS items are those of
  `compute-agent --help`.
- completions/computectl.bash: run in bash, `_computectl_commands`, `_computectl_global`
  and `_computectl_opts COMMAND` are the same sets; completing `computectl launch --ima`
  offers --image and --image-url, `computectl list --state r` offers running and resized.
- `make install DESTDIR=tmp PREFIX=/usr` installs the expected files (binaries, etc/,
  docs with asyncapi.yaml and architecture.md, man pages, completion, and the unit under
  /usr/lib/systemd/system), and no other.
"""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402

ROOT = calib.ROOT
CTL = calib.BUILD / "computectl"
OPT_RE = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])")


def help_text(*argv):
    p = subprocess.run(list(argv) + ["--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"{argv} --help: exit {p.returncode}: {p.stderr}"
    return p.stdout


def option_lines(text, start, stop=None):
    """Options named at the start of the option lines (two-space indent) of a --help section."""
    out, on = set(), False
    for line in text.splitlines():
        if line.startswith(start):
            on = True
            continue
        if on and stop and line.startswith(stop):
            break
        if on and re.match(r"^  -", line):
            head = line.split("  ")[1] if line.startswith("  ") else line
            out.update(OPT_RE.findall(head.split(" ", 2)[0] + " " + (head.split(" ", 2)[1] if
                                                                         re.match(r"^-[a-zA-Z],", head) else "")))
    return out


def help_commands(text):
    cmds, on = [], False
    for line in text.splitlines():
        if line.startswith("Commands:"):
            on = True
            continue
        if on and not line.strip():
            break
        m = re.match(r"^  ([a-z][a-z-]*)\b", line)
        if on and m:
            cmds.append(m.group(1))
    return cmds


def roff_sections(path):
    """{section title: set of options of its .TP items}; .SH and .SS both start a section."""
    secs, cur, after_tp = {}, None, False
    for line in path.read_text().splitlines():
        if line.startswith(".SH ") or line.startswith(".SS "):
            cur = line[4:].strip().strip('"')
            secs.setdefault(cur, set())
            after_tp = False
            continue
        if line.startswith(".TP"):
            after_tp = True
            continue
        if after_tp and cur is not None:
            text = line.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\fI", "")
            # the item's head: the options before the first argument
            secs[cur].update(o for o in OPT_RE.findall(text.split(" ")[0] + " " + " ".join(
                w for w in text.split(" ")[1:] if w.startswith("-"))))
        after_tp = False
    return secs


def bash(script):
    p = subprocess.run(["bash", "-c", f"source {ROOT / 'completions/computectl.bash'}\n{script}"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def complete(*words):
    """COMPREPLY for the command line words (the last one being completed)."""
    arr = " ".join(f"'{w}'" for w in words)
    return set(bash(f"COMP_WORDS=({arr}); COMP_CWORD={len(words) - 1}; _computectl; "
                    "printf '%s\\n' \"${COMPREPLY[@]}\"").split())


def main(c: calib.Checks):
    if not CTL.exists():
        calib.log(f"FAIL: {CTL} missing (run make; BUILD={calib.BUILD})")
        sys.exit(1)
    calib.require_agent_binary()
    top = help_text(str(CTL))
    commands = help_commands(top)
    glob = option_lines(top, "Options", "Commands:")
    per_cmd = {}
    for cmd in commands:
        t = help_text(str(CTL), cmd)
        per_cmd[cmd] = option_lines(t, "Options:", "Global options:") if "\nOptions:" in t else set()

    with c.case("--help lists commands and options (parser sanity)", fatal=True):
        assert "launch" in commands and "list" in commands, commands
        assert {"--socket", "--json", "--help", "-h", "--version"} <= glob, glob
        assert {"--image", "--image-url", "--glance-id", "--kernel"} <= per_cmd["launch"], per_cmd["launch"]
        assert per_cmd["list"] == {"--state", "--name"}, per_cmd["list"]

    man1 = roff_sections(ROOT / "docs/man/computectl.1")
    with c.case("computectl(1): GLOBAL OPTIONS == computectl --help's options"):
        assert man1.get("GLOBAL OPTIONS") == glob, \
            f"man only: {man1.get('GLOBAL OPTIONS', set()) - glob}, --help only: {glob - man1.get('GLOBAL OPTIONS', set())}"
    cmd_secs = {t.split(" ")[0]: opts for t, opts in man1.items() if t.split(" ")[0].islower()}
    with c.case("computectl(1): one section per command of --help, none more"):
        assert set(cmd_secs) == set(commands), \
            f"man only: {set(cmd_secs) - set(commands)}, --help only: {set(commands) - set(cmd_secs)}"
    for cmd in commands:
        with c.case(f"computectl(1): '{cmd}' options == computectl {cmd} --help"):
            got = cmd_secs.get(cmd, set())
            assert got == per_cmd[cmd], f"man only: {got - per_cmd[cmd]}, --help only: {per_cmd[cmd] - got}"

    agent_help = help_text(str(calib.AGENT_BIN))
    agent_opts = set()
    for line in agent_help.splitlines():
        m = re.match(r"^  (--[a-z][a-z0-9-]*)", line)
        if m:
            agent_opts.add(m.group(1))
    man8 = roff_sections(ROOT / "docs/man/compute-agent.8")
    with c.case("compute-agent(8): OPTIONS == compute-agent --help's options"):
        assert len(agent_opts) > 10, agent_opts
        got = man8.get("OPTIONS", set())
        assert got == agent_opts, f"man only: {got - agent_opts}, --help only: {agent_opts - got}"

    with c.case("completion: commands and global options == --help"):
        assert set(bash("echo $_computectl_commands").split()) == set(commands)
        assert set(bash("echo $_computectl_global").split()) == glob
    for cmd in commands:
        with c.case(f"completion: '{cmd}' options == computectl {cmd} --help"):
            got = set(bash(f"_computectl_opts {cmd}").split())
            assert got == per_cmd[cmd], f"completion only: {got - per_cmd[cmd]}, --help only: {per_cmd[cmd] - got}"
    with c.case("completion: completes commands, options and values"):
        assert complete("computectl", "la") == {"launch"}
        assert complete("computectl", "launch", "--ima") == {"--image", "--image-url"}
        assert complete("computectl", "--json", "list", "--state", "r") == {"running", "resized"}
        assert complete("computectl", "wait", "x", "--state", "res") == {"resized"}
        assert complete("computectl", "res") == {"resize"}
        assert complete("computectl", "resize", "x", "--li") == {"--live"}
        assert complete("computectl", "image", "") == {"list", "show", "pull", "delete"}
        assert complete("computectl", "launch", "x", "--config-drive=n") == {"nocloud"}

    with c.case("make install DESTDIR=tmp PREFIX=/usr installs the expected files"):
        dest = calib.tmpdir("ca-install-")
        p = subprocess.run(["make", "-C", str(ROOT), f"BUILD={calib.BUILD}", "install", f"DESTDIR={dest}",
                            "PREFIX=/usr"], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        got = sorted(str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file())
        want = sorted([
            "etc/compute-agent/compute-agent.conf", "etc/compute-agent/instance-types.conf",
            "usr/bin/computectl", "usr/sbin/compute-agent",
            "usr/lib/systemd/system/compute-agent.service",
            "usr/share/bash-completion/completions/computectl",
            "usr/share/doc/compute-agent/README.md", "usr/share/doc/compute-agent/architecture.md",
            "usr/share/doc/compute-agent/asyncapi.yaml", "usr/share/doc/compute-agent/openapi.yaml",
            "usr/share/man/man1/computectl.1", "usr/share/man/man8/compute-agent.8",
        ])
        assert got == want, f"extra: {set(got) - set(want)}, missing: {set(want) - set(got)}"
        unit = (dest / "usr/lib/systemd/system/compute-agent.service").read_text()
        assert "/usr/sbin/compute-agent" in unit and "@PREFIX@" not in unit, unit


if __name__ == "__main__":
    calib.run("test_computectl_docs", main)
