"""Up to 10,000 concurrent client connections held and answered on this
2-core machine: each sends ApiVersions and Metadata and stays open until
every one has its answers, while a confluent-kafka producer keeps producing
through the same proxy. The proxy starts with a soft open-file limit far
below what its sockets need; raising it to the hard limit at start-up is what
lets them through.

The proxy holds two sockets per client (the client's and its upstream
connection), so a hard limit of H holds about (H - 100) / 2 clients. This
sandbox's hard limit is 20,000 and cannot be raised (no CAP_SYS_RESOURCE),
which caps the test at 9,850 connections; with a hard limit of 20,300 or
more it runs the full 10,000."""

import asyncio
import resource
import struct
import threading
import time
from pathlib import Path

import pytest

from conftest import Proxy, Tansu, serve

HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
# Two sockets per client in the proxy, and 150 descriptors for the rest.
CONNECTIONS = min(10_000, (HARD - 300) // 2)
SOFT = 1024


def request(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    client_id = b"many"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def one_client(i: int, port: int, opened: asyncio.Semaphore, all_answered: asyncio.Event, results: list):
    writer = None
    try:
        # `opened` bounds the clients between connecting and their answers,
        # and so the proxy's dials to the broker in progress: tansu accepts
        # on one loop, and a burst of thousands overflows its accept queue
        # (the kernel then resets the proxy's connections).
        async with opened:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            # ApiVersions v0 (empty body), then Metadata v1 for no topics.
            writer.write(request(18, 0, 2 * i, b"") + request(3, 1, 2 * i + 1, struct.pack(">i", 0)))
            await writer.drain()
            versions = await asyncio.wait_for(read_frame(reader), 120)
            metadata = await asyncio.wait_for(read_frame(reader), 120)
        ids = (struct.unpack(">i", versions[:4])[0], struct.unpack(">i", metadata[:4])[0])
        error_code = struct.unpack(">h", versions[4:6])[0]
        results.append((ids == (2 * i, 2 * i + 1)) and error_code == 0)
        # Held open until every client has its answers.
        await asyncio.wait_for(all_answered.wait(), 300)
    finally:
        if writer:
            writer.close()


async def many_clients(port: int, pid: int) -> tuple[list, float, dict]:
    """Opens every connection, waits for all answers, measures the proxy
    while all are held, then closes them."""
    opened = asyncio.Semaphore(50)
    all_answered = asyncio.Event()
    results: list = []
    started = time.monotonic()
    tasks = [asyncio.create_task(one_client(i, port, opened, all_answered, results)) for i in range(CONNECTIONS)]
    while len(results) < CONNECTIONS:
        done = [t for t in tasks if t.done() and t.exception()]
        if done:
            all_answered.set()
            raise done[0].exception()
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    held = {"fds": open_fds(pid), "rss_kib": rss_kib(pid)}
    all_answered.set()
    await asyncio.gather(*tasks)
    return results, elapsed, held


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@pytest.fixture(scope="module")
def crowd_proxy(workdir):
    own = resource.getrlimit(resource.RLIMIT_NOFILE)
    # This process and tansu each hold one socket per client.
    resource.setrlimit(resource.RLIMIT_NOFILE, (HARD, HARD))
    broker = Tansu(workdir)
    # The proxy inherits a low soft limit and must raise it itself.
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))
    try:
        proxy = Proxy(broker.address, workdir, capture=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (HARD, HARD))
    yield from serve(proxy)
    broker.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, own)


def test_thousands_of_connections_while_a_producer_is_served(crowd_proxy):
    assert CONNECTIONS >= 9_000, f"hard open-file limit {HARD} is too low for this test"
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    log = crowd_proxy.read_log()
    assert f"before={SOFT} now={HARD} hard={HARD}" in log, log

    admin = AdminClient({"bootstrap.servers": crowd_proxy.bootstrap})
    for f in admin.create_topics([NewTopic("crowd", 1, 1)]).values():
        f.result(15)
    stop = threading.Event()
    delivered, failed, produced = [], [], [0]

    def produce():
        producer = Producer({"bootstrap.servers": crowd_proxy.bootstrap, "linger.ms": 5,
                             "message.timeout.ms": 60000, "broker.address.family": "v4"})

        def report(err, msg):
            (failed if err else delivered).append(err or msg.offset())

        while not stop.is_set():
            producer.produce("crowd", value=b"x" * 100, on_delivery=report)
            produced[0] += 1
            producer.poll(0.01)
        producer.flush(60)

    # A daemon, stopped whatever the crowd does: a producer left running
    # after the proxy is gone would keep this process alive for ever.
    producing = threading.Thread(target=produce, daemon=True)
    producing.start()
    try:
        time.sleep(1)
        idle_rss = rss_kib(crowd_proxy.proc.pid)
        delivered_before = len(delivered)
        results, elapsed, held = asyncio.run(many_clients(crowd_proxy.port, crowd_proxy.proc.pid))
        delivered_during = len(delivered) - delivered_before
    finally:
        stop.set()
        producing.join(90)
    assert not producing.is_alive(), "the producer did not flush within 60 s"

    assert len(results) == CONNECTIONS and all(results), f"{results.count(False)} wrong answers"
    assert not failed, failed[:5]
    assert delivered_during > 0, "the producer was starved while the crowd connected"
    assert len(delivered) == produced[0]
    print(f"\n{CONNECTIONS} connections answered in {elapsed:.1f} s; "
          f"{delivered_during} records delivered meanwhile; proxy RSS {idle_rss} KiB idle, "
          f"{held['rss_kib']} KiB holding them ({(held['rss_kib'] - idle_rss) / CONNECTIONS:.1f} KiB per connection); "
          f"{held['fds']} open descriptors")
    assert held["fds"] >= 2 * CONNECTIONS, "every client held, with its upstream connection"
    assert crowd_proxy.proc.poll() is None
