#!/usr/bin/env python3
"""The image cache through the agent's API, against a real nginx on loopback
(CA_NGINX_ROOT / CA_NGINX_URL from tests/run.sh, else skip): pre-cache, launch
by image id and by url+digest (test driver), one download shared by 32
concurrent requests (counted in nginx's access log), delete refused while an
instance uses the image, released on terminate; bad references refused with
the field named and nothing created; a digest mismatch fails the launch with
both digests and leaves nothing cached, and is logged once (warn, image and
reason). nginx is on loopback, which the agent refuses by default: this agent
allows 127.0.0.0/8 ([image_cache] allowed_networks); a second agent with the
default configuration refuses the same URL (source_forbidden, nothing asked
of nginx, nothing cached). A URL with credentials (user:secret@) works and
'secret' shows nowhere: not in /v1/images, the instance, the operation's
error, nor the agent's log. Every answer is checked against
api-spec/openapi.yaml."""

import hashlib
import json
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
    conf = d / "agent.conf"
    conf.write_text("[image_cache]\nallowed_networks = 127.0.0.0/8\n")
    agent = calib.Agent(d / "state", hypervisor="test", extra_args=["--config", str(conf)])
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

    with c.case("the failed pull is logged once: level warn, the image and the reason"):
        failed = [i for i in cl.call("GET", "/v1/images")[1]["images"] if i["digest"] == wrong]
        assert len(failed) == 1 and failed[0]["state"] == "failed", short(failed)
        fid = failed[0]["id"]
        lines = [ln for ln in agent.log_path.read_text(errors="replace").splitlines()
                 if 'msg="image pull failed"' in ln]
        mine = [ln for ln in lines if f"image={fid}" in ln]
        assert len(mine) == 1, f"{len(mine)} lines for {fid}: {lines}"
        assert "level=warn" in mine[0] and "reason=digest_mismatch" in mine[0], mine[0]
        assert src in mine[0], mine[0]

    secret = calib.unique("s3cr3t")
    with c.case("a URL with credentials: pulled, and the password shows nowhere"):
        name3 = f"{tag}-c.raw"
        data3 = os.urandom(1 << 20)
        with open(os.path.join(root, name3), "wb") as f:
            f.write(data3)
        d3 = "sha256:" + hashlib.sha256(data3).hexdigest()
        host = url.split("://", 1)[1]
        cred = f"http://user:{secret}@{host}/{name3}"
        r = cl.launch({"name": "cred", "flavor": flavor, "image": {"url": cred, "digest": d3}})
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "succeeded", short(op)
        inst = cl.instance(r["instance"]["id"])
        assert inst["boot"]["image"]["url"] == f"http://***@{host}/{name3}", short(inst)
        # and a failing pull with credentials: the error names the URL without them
        r = cl.launch({"name": "cred-bad", "flavor": flavor,
                       "image": {"url": cred + "?x-token=t0k&X-Amz-Signature=abc", "digest": wrong}})
        op = cl.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "failed" and op["error"]["code"] == "digest_mismatch", short(op)
        assert f"http://***@{host}/{name3}?x-token=***&X-Amz-Signature=***" in op["error"]["message"], short(op)
        shown = [json.dumps(cl.call("GET", "/v1/images")[1]), json.dumps(op),
                 json.dumps(cl.call("GET", "/v1/instances")[1]),
                 json.dumps(cl.call("GET", f"/v1/instances/{r['instance']['id']}")[1])]
        for i in cl.call("GET", "/v1/images")[1]["images"]:
            shown.append(json.dumps(cl.call("GET", f"/v1/images/{i['id']}")[1]))
        assert not [s for s in shown if secret in s or "t0k" in s], [s for s in shown if secret in s][:1]
        assert "***@" in shown[0], shown[0][:400]

    spec_log.check(c)
    with c.case("agent stops cleanly"):
        assert agent.stop() == 0
    with c.case("the agent's log does not hold the password"):
        text = agent.log_path.read_text(errors="replace")
        assert secret not in text and "t0k" not in text, [ln for ln in text.splitlines() if secret in ln][:2]

    plain = calib.Agent(d / "state-default", hypervisor="test")
    c.agents.append(plain)
    with c.case("default configuration: agent starts", fatal=True):
        plain.start()
    pc = plain.client(spec_log=spec_log)
    with c.case("default configuration: a loopback URL is refused, the launch fails cleanly, nothing asked or cached"):
        name4 = f"{tag}-d.raw"
        data4 = os.urandom(1 << 20)
        with open(os.path.join(root, name4), "wb") as f:
            f.write(data4)
        d4 = "sha256:" + hashlib.sha256(data4).hexdigest()
        r = pc.launch({"name": "loopback", "flavor": flavor, "image": {"url": f"{url}/{name4}", "digest": d4}})
        op = pc.wait_operation(r["operation"]["id"], timeout=30)
        assert op["state"] == "failed" and op["error"]["code"] == "source_forbidden", short(op)
        assert "loopback" in op["error"]["message"] and "allowed_networks" in op["error"]["message"], short(op)
        inst = pc.instance(r["instance"]["id"])
        assert inst["state"] == "error" and inst["fault"], short(inst)
        imgs = pc.call("GET", "/v1/images")[1]["images"]
        assert [i["state"] for i in imgs] == ["failed"] and imgs[0]["in_use_by"] == [], short(imgs)
        assert gets(name4) == 0, f"{gets(name4)} GETs of {name4} in nginx's access log"
        cache_files = [p for p in (d / "state-default" / "images").rglob("*") if p.is_file()]
        assert cache_files == [], cache_files
    spec_log.check(c, "the default-configuration agent's answers match api-spec/openapi.yaml")
    with c.case("default configuration: agent stops cleanly"):
        assert plain.stop() == 0

    with c.case("a bad allowed_networks: the agent refuses to start, naming the key and the entry"):
        bad_conf = d / "bad.conf"
        bad_conf.write_text("[image_cache]\nallowed_networks = 127.0.0.0/8, metadata\n")
        bad = calib.Agent(d / "state-bad", hypervisor="test", extra_args=["--config", str(bad_conf)])
        bad.start(wait=False)
        rc = bad.wait_exit(timeout=20)
        text = bad.log_path.read_text(errors="replace")
        assert rc not in (None, 0), f"rc={rc}"
        assert "field=image_cache.allowed_networks" in text and "metadata" in text, text


if __name__ == "__main__":
    calib.run("test_images_api", main)
