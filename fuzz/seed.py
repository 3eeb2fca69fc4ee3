#!/usr/bin/env python3
"""Seeds each fuzz target's corpus from protocol-fixtures/ (frames captured
from real clients and tansu), in the input shape the target reads. Writes
fuzz/corpus/<target>/seed-*; the fuzzer adds its own files beside them."""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "protocol-fixtures"
CORPUS = ROOT / "fuzz" / "corpus"

# broker_responses: first byte picks the API (index into the target's APIS).
APIS = ["ApiVersions", "Metadata", "FindCoordinator", "DescribeCluster", "Produce", "Fetch",
        "ShareFetch", "ShareAcknowledge"]


def put(target: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)


def main() -> None:
    for path in sorted(FIXTURES.glob("*/*.bin")):
        kind, api, version = path.stem.split("-")
        version = int(version.lstrip("v"))
        body = path.read_bytes()
        if kind == "request":
            put("frame_reader", len(body).to_bytes(4, "big") + body)
            if api == "Produce":
                put("produce_rewrite", b"\x00" + body)
        else:
            if api == "Fetch":
                put("fetch_relay", version.to_bytes(2, "big") + body)
                put("fetch_rehydrate", version.to_bytes(2, "big") + body)
            if api in APIS:
                put("broker_responses", bytes([APIS.index(api)]) + version.to_bytes(2, "big") + body)
    # Built Produce requests, one per codec (the target builds them itself).
    for codec in range(5):
        put("produce_rewrite", bytes([0x80, codec, 5]) + bytes(range(96)))
    # Built Fetch responses, one per codec, envelopes and ordinary values.
    for codec in range(5):
        put("fetch_rehydrate", bytes([0x80, codec, 3]) + bytes([0x80, 0x01, 0x81, 0x82, 0x83, 0x10] * 4) + bytes(24))
    # Record policies: the example file, and built partitions, one per codec
    # (events that keep and break the policy; the second idempotent).
    example = (Path(__file__).parent.parent / "examples" / "policies" / "smart-cache-documents.yaml").read_bytes()
    put("record_policy", b"\x00" + example)
    for codec in range(5):
        put("record_policy", bytes([0x80, codec]) + bytes([0x00, 0x01, 0x08, 0x14, 0x20, 0x22, 0x0c, 0x30]))
    put("record_policy", bytes([0x80, 0]) + bytes([0x40, 0x01, 0x00]))
    put("sasl_server", b"\x00\x00alice\x00s3cret")
    put("sasl_server", b"\x01n,,n=alice,r=abcdef\xffc=biws,r=abcdef,p=AAAA")
    put("http_api", b"\x00\xff\xffapplication/json\xff" + b'{"topic":"t","content_type":"x","size_bytes":10}')
    put("http_api", b"\x03\xff\xffapplication/json\xff" + b'{"key":"fuzz/t/lfs/2026/01/01/obj-1","mode":"stream"}')
    put("http_api", b"\x01abc\xff1\xff\xffdata")


if __name__ == "__main__":
    main()
