"""The HTTP sidecar against tansu and real S3 (SeaweedFS): a 64 MiB upload
through /lfs/produce and through an upload session come back byte-identical;
objects overwritten behind the proxy's back are refused; presigned URLs are
signed for the public endpoint; S3 going away is a precise error and /readyz
says so."""

import hashlib
import json
import os
import time
from datetime import datetime, timezone

import pytest
import requests

from conftest import Proxy
from test_lfs import consume, create_topic

TTL = 60


@pytest.fixture(scope="module")
def api(tansu, workdir, s3):
    public = s3.endpoint.replace("127.0.0.1", "localhost")
    p = Proxy(tansu.address, workdir, capture=False, env={
        **s3.proxy_env(),
        "KAFSCALE_LFS_PROXY_PRESIGN_ENABLED": "true",
        "KAFSCALE_LFS_PROXY_S3_PUBLIC_ENDPOINT": public,
        "KAFSCALE_LFS_PROXY_DOWNLOAD_TTL_SEC": str(TTL),
        "KAFSCALE_LFS_PROXY_DOWNLOAD_TEMP_DIR": str(workdir / "s3-download-temp"),
    })
    (workdir / "s3-download-temp").mkdir(exist_ok=True)
    p.wait_ready()
    p.url = f"http://127.0.0.1:{p.http_port}"
    p.public = public
    yield p
    log = p.read_log()
    p.stop()
    assert "panicked" not in log


def no_multipart_leftovers(s3):
    return not [k for k in s3.keys() if "/.uploads/" in k or k.startswith(".uploads")]


def download(api, env, **extra):
    body = {"bucket": env["bucket"], "key": env["key"],
            "integrity": {"sha256": env["sha256"], "checksum_alg": "sha256", "size": env["size"]}, **extra}
    return requests.post(f"{api.url}/lfs/download", json=body, timeout=120)


def test_64_mib_produce_consume_download(api, s3):
    topic = create_topic(api.bootstrap)
    payload = os.urandom(64 * 1024 * 1024)
    r = requests.post(f"{api.url}/lfs/produce", data=payload,
                      headers={"X-Kafka-Topic": topic, "Content-Type": "video/mp4"}, timeout=300)
    assert r.status_code == 200, r.text
    env = r.json()
    assert env["bucket"] == s3.BUCKET and env["size"] == len(payload)
    assert env["sha256"] == hashlib.sha256(payload).hexdigest()

    [m] = consume(api.bootstrap, topic, 1)
    assert json.loads(m.value()) == env, "the envelope consumed from Kafka is the one returned"
    assert s3.keys(f"default/{topic}/") == [env["key"]]
    assert no_multipart_leftovers(s3)

    d = download(api, env)
    assert d.status_code == 200
    assert len(d.content) == len(payload) and d.content == payload


def test_upload_session_with_several_parts(api, s3):
    topic = create_topic(api.bootstrap)
    part = 5 * 1024 * 1024
    payload = os.urandom(2 * part + 123_456)
    s = requests.post(f"{api.url}/lfs/uploads", json={
        "topic": topic, "content_type": "application/dicom", "size_bytes": len(payload),
        "checksum": hashlib.sha256(payload).hexdigest(), "checksum_alg": "sha256"}, timeout=30).json()
    assert s["part_size"] == part
    etags = []
    for n, offset in enumerate(range(0, len(payload), part), start=1):
        r = requests.put(f"{api.url}/lfs/uploads/{s['upload_id']}/parts/{n}", data=payload[offset:offset + part],
                         timeout=60)
        assert r.status_code == 200, r.text
        etags.append(r.json()["etag"])
    assert len(etags) == 3
    assert s3.keys(f"default/{topic}/") == [], "nothing visible before complete"
    done = requests.post(f"{api.url}/lfs/uploads/{s['upload_id']}/complete",
                         json={"parts": [{"part_number": i + 1, "etag": e} for i, e in enumerate(etags)]},
                         timeout=60)
    assert done.status_code == 200, done.text
    env = done.json()
    [m] = consume(api.bootstrap, topic, 1)
    assert json.loads(m.value()) == env
    assert s3.keys(f"default/{topic}/") == [env["key"]] == [s["s3_key"]]
    assert s3.get(env["key"]) == payload
    assert download(api, env).content == payload
    assert no_multipart_leftovers(s3)


def test_aborted_session_leaves_no_parts_in_s3(api, s3):
    topic = create_topic(api.bootstrap)
    s = requests.post(f"{api.url}/lfs/uploads", json={"topic": topic, "content_type": "a/b",
                                                      "size_bytes": 12 * 1024 * 1024}, timeout=30).json()
    r = requests.put(f"{api.url}/lfs/uploads/{s['upload_id']}/parts/1", data=os.urandom(5 * 1024 * 1024), timeout=60)
    assert r.status_code == 200
    assert requests.delete(f"{api.url}/lfs/uploads/{s['upload_id']}", timeout=30).status_code == 204
    uploads = s3.client().list_multipart_uploads(Bucket=s3.BUCKET, Prefix=f"default/{topic}/").get("Uploads", [])
    assert uploads == []
    assert s3.keys(f"default/{topic}/") == [] and no_multipart_leftovers(s3)


@pytest.mark.parametrize("tamper", ["same size", "larger", "smaller"])
def test_object_overwritten_in_s3_is_refused_with_no_payload(api, s3, tamper):
    topic = create_topic(api.bootstrap)
    payload = os.urandom(6 * 1024 * 1024 if tamper != "smaller" else 300_000)
    env = requests.post(f"{api.url}/lfs/produce", data=payload, headers={"X-Kafka-Topic": topic}, timeout=60).json()
    assert download(api, env).content == payload
    evil = {"same size": os.urandom(len(payload)), "larger": payload + os.urandom(4096),
            "smaller": payload[:-1]}[tamper]
    s3.client().put_object(Bucket=s3.BUCKET, Key=env["key"], Body=evil)
    r = download(api, env)
    assert r.status_code == 502, r.status_code
    body = r.json()
    assert body["code"] == "integrity_failure"
    assert len(r.content) < 1000 and evil[:32] not in r.content and payload[:32] not in r.content


def test_presigned_url_is_for_the_public_endpoint_and_capped(api, s3):
    topic = create_topic(api.bootstrap)
    payload = os.urandom(200_000)
    env = requests.post(f"{api.url}/lfs/produce", data=payload, headers={"X-Kafka-Topic": topic}, timeout=60).json()
    r = download(api, env, mode="presign", expires_seconds=86400)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "presign" and body["integrity"]["sha256"] == env["sha256"]
    assert body["url"].startswith(api.public + "/"), body["url"]
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert (expires - datetime.now(timezone.utc)).total_seconds() <= TTL + 2, "lifetime capped"
    assert f"X-Amz-Expires={TTL}" in body["url"]
    fetched = requests.get(body["url"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == payload
    other = requests.post(f"{api.url}/lfs/produce", data=b"other", headers={"X-Kafka-Topic": topic}, timeout=60).json()
    forged = requests.get(body["url"].replace(env["key"], other["key"]), timeout=30)
    assert forged.status_code == 403, "the signature covers the key"


def test_s3_down_gives_precise_errors_and_readiness(api, s3):
    topic = create_topic(api.bootstrap)
    env = requests.post(f"{api.url}/lfs/produce", data=b"kept", headers={"X-Kafka-Topic": topic}, timeout=60).json()
    s3.kill()
    try:
        deadline = time.time() + 10
        while time.time() < deadline and requests.get(f"{api.url}/readyz", timeout=5).status_code == 200:
            time.sleep(0.2)
        ready = requests.get(f"{api.url}/readyz", timeout=5)
        assert ready.status_code == 503 and "storage" in ready.text
        up = requests.post(f"{api.url}/lfs/produce", data=b"x" * 1000, headers={"X-Kafka-Topic": topic}, timeout=60)
        assert up.status_code == 502 and up.json()["code"] == "s3_upload_failed"
        assert s3.endpoint not in up.text, "storage error text is logged, not returned"
        down = download(api, env)
        assert down.status_code == 502 and down.json()["code"] == "s3_get_failed"
        assert consume(api.bootstrap, topic, 2, timeout=3).__len__() == 1, "no envelope for the failed upload"
    finally:
        s3.start()
    deadline = time.time() + 15
    while time.time() < deadline and requests.get(f"{api.url}/readyz", timeout=5).status_code != 200:
        time.sleep(0.2)
    assert requests.get(f"{api.url}/readyz", timeout=5).status_code == 200
    assert download(api, env).content == b"kept"


def test_a_spill_that_cannot_be_made_is_500_temp_storage_failed(api, workdir):
    """S3 objects above 4 MiB are spilled while verified; without the temp
    dir the answer is 500 temp_storage_failed, and 200 once it is back."""
    topic = create_topic(api.bootstrap)
    payload = os.urandom(5 * 1024 * 1024)
    env = requests.post(f"{api.url}/lfs/produce", data=payload, headers={"X-Kafka-Topic": topic}, timeout=60).json()
    temp = workdir / "s3-download-temp"
    temp.rename(workdir / "s3-download-temp-gone")
    try:
        r = download(api, env)
        assert r.status_code == 500 and r.json()["code"] == "temp_storage_failed", r.text
    finally:
        (workdir / "s3-download-temp-gone").rename(temp)
    r = download(api, env)
    assert r.status_code == 200 and r.content == payload
