#!/usr/bin/env python3
"""The image cache through the agent's API, against a real nginx on loopback
(CA_NGINX_ROOT / CA_NGINX_URL from tests/run.sh, else skip): pre-cache, launch
by image id and by url+digest (test driver), one download shared by 32
concurrent requests (counted in nginx's access log), delete refused while an
instance uses the image, released on terminate; bad references refused with
the field named and nothing created; a digest mismatch fails the launch with
both digests and leaves nothing cached. Every answer is checked against
api-spec/openapi.yaml."""

import hashlib
import os
import sys
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calib  # noqa: E402
from calib import short  # noqa: E402


def main(c: calib.Checks):
    root, url = os.environ.get("CA_NGINX_ROOT"), os.environ.get("CA_NGINX_URL")
    if not root or not url:
        calib.skip("no nginx (CA_NGINX_ROOT/CA_NGINX_URL unset; tests/run.sh starts one as root)")
    calib.require_agent_binary()
    access_log = os.path.join(os.path.dirname(root), "access.log")
    tag = calib.unique("img")
    data = os.urandom(3 << 20)
    name = f"{tag}.raw"
    with open(os.path.join(root, name), "wb") as f:
        f.write(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    src = f"{url}/{name}"

    def gets(n):
        try:
            with open(access_log) as f:
                return sum(1 for line in f if f"GET /{n}" in line)
        except FileNotFoundError:
            return 0

    d = calib.tmpdir("ca-images-")
    agent = calib.Agent(d / "state", hypervisor="test")
    c.agents.append(agent)
    with c.case("agent starts", fatal=True):
        agent.start()
    spec_log = calib.SpecLog()
    cl = agent.client(spec_log=spec_log)
    flavor = {"vcpus": 1, "memory_mb": 64, "disk_gb": 1}

    with c.case("POST /v1/images url+digest -> 202 downloading (or 200 cached), then cached", fatal=True):
        st, img = cl.call("POST", "/v1/images", {"url": src, "digest": digest})
        assert st in (200, 202), f"{st} {short(img)}"
        iid = img["id"]
        calib.wait_for(lambda: cl.call("GET", f"/v1/images/{iid}")[1]["state"] == "cached", timeout=30,
                       what="the image to be cached")
        img = cl.call("GET", f"/v1/images/{iid}")[1]
        assert img["digest"] == digest and img["format"] == "raw" and img["size"] == len(data), short(img)

    with c.case("the same pre-cache again: 200 cached, no second download"):
        st, again = cl.call("POST", "/v1/images", {"url": src, "digest": digest})
        assert st == 200 and again["id"] == iid, f"{st} {short(again)}"
        assert gets(name) == 1, f"{gets(name)} GETs in the access log"

    insts = []
    with c.case("launch by image.id and by image.url: both run, one image in use by both"):
        for img_ref in ({"id": iid}, {"url": src, "digest": digest}):
            r = cl.launch({"name": "from-cache", "flavor": flavor, "image": img_ref})
            op = cl.wait_operation(r["operation"]["id"], timeout=30)
            assert op["state"] == "succeeded", short(op)
            insts.append(r["instance"]["id"])
        img = cl.call("GET", f"/v1/images/{iid}")[1]
        assert sorted(img["in_use_by"]) == sorted(insts), short(img)
        assert gets(name) == 1, f"{gets(name)} GETs in the access log"

    with c.case("DELETE an image in use -> 409 conflict, image still cached"):
        st, e = cl.call("DELETE", f"/v1/images/{iid}")
        assert st == 409 and e["error"]["code"] == "conflict", f"{st} {short(e)}"
        assert cl.call("GET", f"/v1/images/{iid}")[1]["state"] == "cached"

    with c.case("terminate both -> the image is released -> DELETE 204 -> GET 404"):
        for i in insts:
            op = cl.wait_operation(cl.terminate(i)["operation"]["id"], timeout=30)
            assert op["state"] == "succeeded", short(op)
        assert cl.call("GET", f"/v1/images/{iid}")[1]["in_use_by"] == []
        st, _ = cl.call("DELETE", f"/v1/images/{iid}")
        assert st == 204, st
        st, _ = cl.call("GET", f"/v1/images/{iid}")
        assert st == 404, st

    with c.case("32 concurrent pre-caches of a new image -> one download"):
        name2 = f"{tag}-b.raw"
        data2 = os.urandom(8 << 20)
        with open(os.path.join(root, name2), "wb") as f:
            f.write(data2)
        d2 = "sha256:" + hashlib.sha256(data2).hexdigest()
        ids, errs = [], []

        def one():
            try:
                st, body = agent.client().call("POST", "/v1/images", {"url": f"{url}/{name2}", "digest": d2})
                ids.append(body["id"]) if st in (200, 202) else errs.append((st, body))
            except Exception as e:  # noqa: BLE001
                errs.append(repr(e))
        th = [threading.Thread(target=one) for _ in range(32)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        assert not errs and len(set(ids)) == 1, f"{errs[:2]} ids={set(ids)}"
        calib.wait_for(lambda: cl.call("GET", f"/v1/images/{ids[0]}")[1]["state"] == "cached", timeout=30,
                       what="the shared download")
        assert gets(name2) == 1, f"{gets(name2)} GETs of {name2} in the access log"

    before = len(cl.instances())
    bad = [
        ("file:// URL", {"url": "file:///etc/passwd", "digest": digest}, "image.url"),
        ("gopher:// URL", {"url": "gopher://127.0.0.1/x", "digest": digest}, "image.url"),
        ("md5 digest", {"url": src, "digest": "md5:" + "0" * 32}, "image.digest"),
        ("digest not hex", {"url": src, "digest": "sha256:xyz"}, "image.digest"),
        ("unknown image id", {"id": "00000000-0000-4000-8000-000000000000"}, "image.id"),
    ]
    for what, ref, field in bad:
        with c.case(f"launch with {what} -> 400 naming {field}, no instance"):
            st, e = cl.call("POST", "/v1/instances", {"name": "bad", "flavor": flavor, "image": ref})
            assert st == 400 and e["error"]["field"] == field, f"{st} {short(e)}"
            assert len(cl.instances()) == before
    with c.case("POST /v1/images with a file:// URL -> 400 naming url"):
        st, e = cl.call("POST", "/v1/images", {"url": "file:///etc/shadow", "digest": digest})
        assert st == 400 and e["error"]["field"] == "url", f"{st} {short(e)}"

    with c.case("launch with a wrong digest -> operation failed (digest_mismatch, both digests), nothing cached"):
        wrong = "sha256:" + "0" * 64
        r = cl.launch({"name": "wrong", "flavor": flavor, "image": {"url": src, "digest": wrong}})
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "failed" and op["error"]["code"] == "digest_mismatch", short(op)
        assert wrong in op["error"]["message"] and digest in op["error"]["message"], short(op)
        inst = cl.instance(r["instance"]["id"])
        assert inst["state"] == "error" and inst["fault"], short(inst)
        cached = [i for i in cl.call("GET", "/v1/images")[1]["images"] if i["state"] == "cached"]
        assert all(i["digest"] != wrong for i in cached), short(cached)

    spec_log.check(c)
    with c.case("agent stops cleanly"):
        assert agent.stop() == 0


if __name__ == "__main__":
    calib.run("test_images_api", main)
