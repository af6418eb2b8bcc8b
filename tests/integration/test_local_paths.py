#!/usr/bin/env python3
"""Local guest files (image.path, kernel.path, kernel.initrd) come only from the directories
the operator lists in hypervisor.local_image_dirs, and a local image is inspected like a
cached one.

- With no directory listed, any local path is refused (400 naming the field and the setting).
- A path outside the listed directories (a host file, a sibling directory sharing the prefix,
  a trailing '..', a symlink inside pointing out) is refused; so is anything not a regular file
  (FIFO, directory, device node, symlink to /dev/zero). Refusals leave no instance and no
  instance directory behind.
- A local qcow2 with a backing file or an external data file is refused when the launch runs
  (unsafe_image), before anything is defined.
- Under a real libvirtd (CA_LIBVIRT_URI): a raw file whose first bytes are "QFI\\xfb" is used
  as raw (the overlay names raw as its backing format, the guest runs), a real qcow2 as qcow2,
  and the refused images leave no domain.
"""

import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import expect_error, short  # noqa: E402

SETTING = "hypervisor.local_image_dirs"


def qemu_img(*args):
    p = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"qemu-img {' '.join(args)}: {p.stderr.strip()}"
    return p.stdout


def make_files(d):
    """The allowed directory and its neighbours, with every kind of file the checks need."""
    img = d / "img"
    img.mkdir()
    (d / "img2").mkdir()  # shares img's prefix, not listed
    f = {}
    f["raw"] = img / "good.raw"
    with open(f["raw"], "wb") as fh:
        fh.write(b"CA-TEST-DISK-01\n")
        fh.truncate(1 << 20)
    # looks like qcow2 to a four-byte sniff, is raw to qemu-img (version 0 is no qcow2)
    f["qfi"] = img / "qfi.raw"
    with open(f["qfi"], "wb") as fh:
        fh.write(b"QFI\xfb" + b"\0" * 28)
        fh.truncate(1 << 20)
    f["qcow2"] = img / "good.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(f["qcow2"]), "1M")
    f["backing"] = img / "backing.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(f["backing"]), "1M")
    f["datafile"] = img / "datafile.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={d / 'img2' / 'data.bin'}",
             str(f["datafile"]), "1M")
    f["sibling"] = d / "img2" / "x.raw"
    f["sibling"].write_bytes(b"\0" * 4096)
    f["kernel"] = img / "vmlinuz"
    f["kernel"].write_bytes(b"\0" * 4096)
    f["initrd"] = img / "initrd.gz"
    f["initrd"].write_bytes(b"\0" * 4096)
    f["link_out"] = img / "hostname.raw"
    os.symlink("/etc/hostname", f["link_out"])
    f["link_sibling"] = img / "sibling.raw"
    os.symlink("../img2/x.raw", f["link_sibling"])
    f["link_in"] = img / "alias.raw"
    os.symlink("good.raw", f["link_in"])
    f["fifo"] = img / "fifo.raw"
    os.mkfifo(f["fifo"])
    f["dir"] = img / "sub"
    f["dir"].mkdir()
    f["zero"] = img / "zero.raw"
    os.symlink("/dev/zero", f["zero"])
    f["devnode"] = None
    if os.geteuid() == 0:
        f["devnode"] = img / "null.raw"
        os.mknod(f["devnode"], 0o600 | 0o020000, os.makedev(1, 3))  # a character device
    return {k: (str(v) if v is not None else None) for k, v in f.items()}


def main(c: calib.Checks):
    calib.require_agent_binary()
    if subprocess.run(["sh", "-c", "command -v qemu-img"], capture_output=True).returncode != 0:
        calib.skip("qemu-img is not installed")
    d = calib.tmpdir("ca-paths-")
    f = make_files(d)
    flavor = {"vcpus": 1, "memory_mb": 64, "disk_gb": 0}
    tag = calib.unique("paths")

    # ---- no directory listed: every local path refused ----
    bare = calib.Agent(d / "state0", hypervisor="test", local_image_dirs=())
    c.agents.append(bare)
    with c.case("agent starts with no local_image_dirs", fatal=True):
        bare.start(timeout=30)
    cl0 = bare.client()
    for field, body in (("image.path", {"image": {"path": f["raw"]}}),
                        ("kernel.path", {"kernel": {"path": f["kernel"]}})):
        with c.case(f"no directory listed: {field} in a would-be directory -> 400 naming {field} and {SETTING}"):
            st, resp = cl0.call("POST", "/v1/instances", {"name": f"{tag}-0", "flavor": flavor, **body})
            expect_error((st, resp), 400, "invalid_field", field)
            assert SETTING in resp["error"]["message"], short(resp)
            assert cl0.instances() == [], short(cl0.instances())
    bare.stop()

    # ---- one directory listed (test driver) ----
    agent = calib.Agent(d / "state", hypervisor="test", local_image_dirs=[d / "img"])
    c.agents.append(agent)
    with c.case(f"agent starts with --local-image-dirs {d / 'img'}", fatal=True):
        agent.start(timeout=30)
    cl = agent.client()
    inst_dir = d / "state" / "instances"

    def refused(what, field, body):
        with c.case(f"{what} -> 400 {field}, nothing created"):
            before = cl.instances()
            dirs_before = sorted(os.listdir(inst_dir))
            st, resp = cl.call("POST", "/v1/instances", {"name": f"{tag}-r", "flavor": flavor, **body})
            expect_error((st, resp), 400, "invalid_field", field)
            msg = resp["error"]["message"]
            assert field in msg, f"message does not name {field}: {msg}"
            assert cl.instances() == before, "the instance list changed"
            assert sorted(os.listdir(inst_dir)) == dirs_before, "an instance directory appeared"
            return msg

    msg = refused("image.path=/etc/shadow", "image.path", {"image": {"path": "/etc/shadow"}})
    with c.case(f"the refusal of a path outside names {SETTING}"):
        assert msg and SETTING in msg, msg
    refused("image.path in a sibling directory sharing the prefix (img2 vs img)", "image.path",
            {"image": {"path": f["sibling"]}})
    refused("image.path = the allowed directory + '/..'", "image.path", {"image": {"path": str(d / "img") + "/.."}})
    refused("image.path through '..' to a sibling", "image.path",
            {"image": {"path": str(d / "img") + "/../img2/x.raw"}})
    refused("image.path: a symlink inside pointing at /etc/hostname", "image.path", {"image": {"path": f["link_out"]}})
    refused("image.path: a symlink inside pointing at the sibling directory", "image.path",
            {"image": {"path": f["link_sibling"]}})
    refused("image.path: a FIFO", "image.path", {"image": {"path": f["fifo"]}})
    refused("image.path: a directory", "image.path", {"image": {"path": f["dir"]}})
    refused("image.path: the allowed directory itself", "image.path", {"image": {"path": str(d / "img")}})
    refused("image.path: a symlink to /dev/zero", "image.path", {"image": {"path": f["zero"]}})
    if f["devnode"]:
        refused("image.path: a character device node inside the directory", "image.path",
                {"image": {"path": f["devnode"]}})
    refused("image.path: a missing file inside the directory", "image.path",
            {"image": {"path": str(d / "img" / "missing.raw")}})
    refused("kernel.path=/etc/shadow", "kernel.path", {"kernel": {"path": "/etc/shadow"}})
    refused("kernel.path: a symlink inside pointing out", "kernel.path", {"kernel": {"path": f["link_out"]}})
    refused("kernel.initrd=/etc/shadow", "kernel.initrd",
            {"kernel": {"path": f["kernel"], "initrd": "/etc/shadow"}})
    refused("kernel.initrd: a FIFO", "kernel.initrd", {"kernel": {"path": f["kernel"], "initrd": f["fifo"]}})
    refused("kernel boot with image.path outside (the image is then the disk)", "image.path",
            {"kernel": {"path": f["kernel"]}, "image": {"path": "/etc/shadow"}})

    def launch_fails(what, path, code="unsafe_image"):
        with c.case(f"{what} -> the launch fails with {code}, instance in error"):
            r = cl.launch({"name": f"{tag}-u", "flavor": flavor, "image": {"path": path}})
            op = cl.wait_operation(r["operation"]["id"], timeout=60)
            assert op["state"] == "failed", short(op)
            assert op["error"]["code"] == code, short(op)
            inst = cl.wait_state(r["instance"]["id"], "error", timeout=30)
            return inst

    launch_fails("a local qcow2 whose backing file is /etc/hostname", f["backing"])
    launch_fails("a local qcow2 with an external data file", f["datafile"])

    def launch_ok(what, body):
        with c.case(f"{what} -> running"):
            r = cl.launch({"name": f"{tag}-ok", "flavor": flavor, **body})
            op = cl.wait_operation(r["operation"]["id"], timeout=60)
            assert op["state"] == "succeeded", short(op)
            inst = cl.wait_state(r["instance"]["id"], "running", timeout=30)
            return inst

    launch_ok("a local raw image in the directory", {"image": {"path": f["raw"]}})
    launch_ok("a local qcow2 image in the directory", {"image": {"path": f["qcow2"]}})
    inst = launch_ok("kernel + initrd in the directory", {"kernel": {"path": f["kernel"], "initrd": f["initrd"]}})
    inst = launch_ok("a symlink inside pointing inside", {"image": {"path": f["link_in"]}})
    with c.case("a symlink inside the directory is recorded as the file it resolved to"):
        assert inst and inst["boot"]["image"]["path"] == f["raw"], short(inst and inst["boot"])
    agent.stop()

    qemu_part(c, d, f, tag)


def qemu_part(c, d, f, tag):
    uri = os.environ.get("CA_LIBVIRT_URI")
    gdir = os.environ.get("CA_GUEST_DIR")
    if not uri or not gdir or not os.path.isfile(os.path.join(gdir, "vmlinuz")):
        print("     (no CA_LIBVIRT_URI / CA_GUEST_DIR: the real-libvirtd checks are not run)")
        return
    uri, gdir = calib.libvirt_env()
    agent = calib.Agent(d / "stateq", hypervisor="qemu", libvirt_uri=uri,
                        local_image_dirs=[d / "img", gdir])
    c.agents.append(agent)
    created = set()
    try:
        with c.case("qemu agent starts", fatal=True):
            agent.start(timeout=180)
        cl = agent.client(timeout=60)
        boot = calib.guest_boot(gdir)
        flavor = {"vcpus": 1, "memory_mb": 128, "disk_gb": 0}

        def backing_format(iid):
            disk = d / "stateq" / "instances" / iid / "disk.qcow2"
            info = json.loads(qemu_img("info", "--output=json", "-U", str(disk)))
            return info.get("backing-filename-format"), info.get("backing-filename")

        for what, key, want in (("a raw file starting with QFI\\xfb", "qfi", "raw"),
                                ("a real qcow2", "qcow2", "qcow2")):
            with c.case(f"qemu: {what} as the disk of a kernel-boot guest -> running, overlay backed by {want}"):
                r = cl.launch({"name": f"{tag}-q", "flavor": flavor, "kernel": boot, "image": {"path": f[key]}})
                iid = r["instance"]["id"]
                created.add(iid)
                op = cl.wait_operation(r["operation"]["id"], timeout=180)
                assert op["state"] == "succeeded", short(op)
                cl.wait_state(iid, "running", timeout=60)
                assert calib.domstate(uri, iid) == "running", calib.domstate(uri, iid)
                assert backing_format(iid) == (want, f[key]), backing_format(iid)
                xml = calib.domain_xml(uri, iid)
                assert "type='qcow2'" in xml or 'type="qcow2"' in xml, xml
        for what, key in (("backing file /etc/hostname", "backing"), ("external data file", "datafile")):
            with c.case(f"qemu: a local qcow2 with a {what} -> launch fails unsafe_image, no domain, no disk"):
                r = cl.launch({"name": f"{tag}-u", "flavor": flavor, "kernel": boot, "image": {"path": f[key]}})
                iid = r["instance"]["id"]
                created.add(iid)
                op = cl.wait_operation(r["operation"]["id"], timeout=180)
                assert op["state"] == "failed" and op["error"]["code"] == "unsafe_image", short(op)
                assert calib.domstate(uri, iid) is None, calib.domstate(uri, iid)
                assert not (d / "stateq" / "instances" / iid / "disk.qcow2").exists(), "a disk was made"
        with c.case("qemu: terminate the guests -> no domain left"):
            for iid in sorted(created):
                op = cl.terminate(iid)["operation"]
                assert cl.wait_operation(op["id"], timeout=120)["state"] == "succeeded", iid
            for iid in created:
                assert calib.domstate(uri, iid) is None, iid
    finally:
        if agent.alive():
            agent.stop()
        calib.cleanup_domains(uri, created)


if __name__ == "__main__":
    calib.run("test_local_paths", main)
