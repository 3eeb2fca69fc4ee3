#!/usr/bin/env python3
"""Records protocol-fixtures/ from real clients and a real broker.

Each client runs its e2e round trip through its own proxy (capture on) in
front of tansu; one frame per (kind, API, version) is kept:

  protocol-fixtures/<client>/request-<Api>-v<N>.bin   as the client sent it
  protocol-fixtures/<client>/response-<Api>-v<N>.bin  as the client got it
  protocol-fixtures/tansu/upstream-<Api>-v<N>.bin     as tansu sent it

Files are frame bodies (no length prefix). Run: .venv/bin/python scripts/record-fixtures.py
"""

import shutil
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import conftest  # noqa: E402
import test_clients  # noqa: E402

API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit", 9: "OffsetFetch",
    10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
    15: "DescribeGroups", 16: "ListGroups", 17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics",
    20: "DeleteTopics", 22: "InitProducerId", 32: "DescribeConfigs", 60: "DescribeCluster",
    71: "GetTelemetrySubscriptions", 72: "PushTelemetry",
}


def describe_cluster(proxy, topic):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": proxy.bootstrap})
    admin.describe_cluster(request_timeout=10).result(15)


def kafka_python_admin(proxy, topic):
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=proxy.bootstrap)
    admin.describe_cluster()
    admin.list_topics()
    admin.close()


CLIENTS = {
    "librdkafka-2.16": [test_clients.test_confluent_kafka_idempotent_compressed_roundtrip, describe_cluster],
    "kafka-python-3.0": [test_clients.test_kafka_python_roundtrip, kafka_python_admin],
    "aiokafka-0.14": [test_clients.test_aiokafka_roundtrip],
    "kafkajs-2.2": [test_clients.test_kafkajs_roundtrip_with_consumer_group],
    "rdkafka-rust-0.39": [test_clients.test_rdkafka_rust_roundtrip],
    "kcat-librdkafka-2.0": [test_clients.test_debian_kcat_roundtrip],
}


def create_topic(tansu):
    from confluent_kafka.admin import AdminClient, NewTopic

    name = "fixture-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": tansu.address})
    for f in admin.create_topics([NewTopic(name, 3, 1)]).values():
        f.result(15)
    return name


def select(capture_dir: Path, out_dir: Path, kinds: set[str]) -> int:
    kept = 0
    for f in sorted(capture_dir.iterdir()):
        _conn, _seq, kind, key, version = f.stem.split("-")
        api = API_NAMES.get(int(key[1:]), f"Api{key[1:]}")
        if kind not in kinds:
            continue
        target = out_dir / f"{kind}-{api}-{version}.bin"
        if not target.exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
            kept += 1
    return kept


def main():
    out = REPO / "protocol-fixtures"
    work = Path(tempfile.mkdtemp(prefix="fixtures-"))
    tansu = conftest.Tansu(work)
    try:
        for client, actions in CLIENTS.items():
            proxy = conftest.Proxy(tansu.address, work)
            proxy.wait_ready()
            try:
                topic = create_topic(tansu)
                for action in actions:
                    action(proxy, topic)
            finally:
                proxy.stop()
            n = select(proxy.capture_dir, out / client, {"request", "response"})
            n += select(proxy.capture_dir, out / "tansu-0.6", {"upstream"})
            print(f"{client}: {n} new fixtures")
    finally:
        tansu.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
