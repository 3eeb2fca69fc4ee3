"""Every client produces records with headers through the proxy and reads
them back through the proxy: keys, values and headers must be identical."""

import asyncio
import subprocess
from pathlib import Path

from conftest import REPO, aiokafka_consume_assigned, confluent_consume_assigned, records

N = 30


def as_set(rows):
    return sorted((k, v, tuple((hk, bytes(hv)) for hk, hv in (h or []))) for k, v, h in rows)


def test_confluent_kafka_idempotent_compressed_roundtrip(proxy, topic):
    from confluent_kafka import Producer

    sent = records(N, "confluent")
    errors = []
    p = Producer({"bootstrap.servers": proxy.bootstrap, "enable.idempotence": True,
                  "compression.type": "gzip", "linger.ms": 5})
    for k, v, h in sent:
        p.produce(topic, key=k, value=v, headers=h, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0
    assert errors == []
    assert as_set(confluent_consume_assigned(proxy.bootstrap, topic, N)) == as_set(sent)


def test_kafka_python_roundtrip(proxy, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    sent = records(N, "kafka-python")
    p = KafkaProducer(bootstrap_servers=proxy.bootstrap, acks="all")
    futures = [p.send(topic, key=k, value=v, headers=h) for k, v, h in sent]
    for f in futures:
        f.get(timeout=30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=proxy.bootstrap, enable_auto_commit=False, consumer_timeout_ms=20000)
    c.assign([TopicPartition(topic, p) for p in range(3)])
    c.seek_to_beginning()
    got = []
    for m in c:
        got.append((m.key, m.value, m.headers))
        if len(got) == N:
            break
    c.close()
    assert as_set(got) == as_set(sent)


def test_aiokafka_roundtrip(proxy, topic):
    from aiokafka import AIOKafkaProducer

    sent = records(N, "aiokafka")

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=proxy.bootstrap)
        await p.start()
        try:
            for k, v, h in sent:
                await p.send_and_wait(topic, value=v, key=k, headers=h)
        finally:
            await p.stop()
        return await aiokafka_consume_assigned(proxy.bootstrap, topic, N)

    assert as_set(asyncio.run(run())) == as_set(sent)


def test_kafkajs_roundtrip_with_consumer_group(proxy, topic):
    script = Path(__file__).parent / "node" / "roundtrip.js"
    out = subprocess.run(["node", str(script), proxy.bootstrap, topic, str(N)],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"verified {N}" in out.stdout, out.stdout


def test_rdkafka_rust_roundtrip(proxy, topic):
    binary = REPO / "target" / "debug" / "examples" / "rdkafka_roundtrip"
    out = subprocess.run([str(binary), proxy.bootstrap, topic, str(N)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"verified {N}" in out.stdout, out.stdout


def test_debian_kcat_roundtrip(proxy, topic):
    """Debian's kcat is librdkafka 2.0.2: it cannot parse tansu's own
    ApiVersions reply, so this passes only through the proxy's re-encoding."""
    lines = [f"key{i}:value-{i}" for i in range(N)]
    prod = subprocess.run(["kcat", "-P", "-b", proxy.bootstrap, "-t", topic, "-K:", "-H", "trace-id=kcat"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert prod.returncode == 0, prod.stderr
    cons = subprocess.run(["kcat", "-C", "-b", proxy.bootstrap, "-t", topic, "-o", "beginning", "-e",
                           "-f", "%k|%s|%h\\n"], capture_output=True, text=True, timeout=60)
    assert cons.returncode == 0, cons.stderr
    got = sorted(line for line in cons.stdout.splitlines() if line)
    assert got == sorted(f"key{i}|value-{i}|trace-id=kcat" for i in range(N))


def test_kcat_fails_against_tansu_directly(tansu):
    """The control for the test above: without the proxy kcat cannot talk to tansu."""
    out = subprocess.run(["kcat", "-L", "-b", tansu.address, "-m", "3"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "ApiVersionRequest failed" in out.stderr or "Failed to acquire metadata" in out.stderr
