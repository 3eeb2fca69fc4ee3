"""A Produce whose records length does not match its bytes, as librdkafka
2.16 writes one for a record batch of 256 MiB or more at Produce v9+ (a
zero length, then the batch): the proxy answers CORRUPT_MESSAGE for that
partition, names the client in its log, forwards nothing, and keeps the
connection open. Sent as raw frames (the batch is a real one, built by
kafka-python), since making librdkafka write one takes a 256 MiB value."""

import socket
import struct

from kafka.record.default_records import DefaultRecordBatchBuilder

from test_lfs import consume

CORRUPT_MESSAGE = 2


def uvarint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_uvarint(buf, pos):
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def batch():
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    b.append(0, timestamp=None, key=b"k", value=b"v" * 100, headers=[])
    return bytes(b.build())


def produce_v9(correlation_id, topic, partitions):
    """partitions: [(index, records length field or None for the true length)]."""
    body = b"\x00" + struct.pack(">hi", -1, 30000) + uvarint(2)
    body += uvarint(len(topic) + 1) + topic.encode() + uvarint(len(partitions) + 1)
    records = batch()
    for index, length in partitions:
        body += struct.pack(">i", index)
        body += uvarint(len(records) + 1 if length is None else length) + records + b"\x00"
    body += b"\x00\x00"
    client = b"framing-check"
    header = struct.pack(">hhih", 0, 9, correlation_id, len(client)) + client + b"\x00"
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def api_versions_v0(correlation_id):
    frame = struct.pack(">hhih", 18, 0, correlation_id, -1)
    return struct.pack(">i", len(frame)) + frame


def read_frame(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the proxy closed the connection"
            data += chunk
        return data

    (size,) = struct.unpack(">i", exactly(4))
    return exactly(size)


def partition_errors(frame):
    """(correlation id, [(partition, error code, error message)]) of a
    Produce v9 response."""
    (correlation_id,) = struct.unpack(">i", frame[:4])
    pos = 5  # correlation id, empty header tagged fields
    topics, pos = read_uvarint(frame, pos)
    out = []
    for _ in range(topics - 1):
        n, pos = read_uvarint(frame, pos)
        pos += n - 1
        parts, pos = read_uvarint(frame, pos)
        for _ in range(parts - 1):
            index, code = struct.unpack(">ih", frame[pos:pos + 6])
            pos += 6 + 24  # base offset, log append time, log start offset
            errors, pos = read_uvarint(frame, pos)
            assert errors == 1, "no record errors"
            n, pos = read_uvarint(frame, pos)
            message = frame[pos:pos + n - 1].decode() if n else None
            pos += max(n - 1, 0)
            tags, pos = read_uvarint(frame, pos)
            assert tags == 0
            out.append((index, code, message))
        tags, pos = read_uvarint(frame, pos)
    return correlation_id, out


def test_a_zero_records_length_is_corrupt_message_on_an_open_connection(proxy, topic):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
        # Partition 0 as librdkafka writes a 256 MiB batch; partition 1 well formed.
        sock.sendall(produce_v9(7, topic, [(0, 0), (1, None)]))
        correlation_id, answers = partition_errors(read_frame(sock))
        assert correlation_id == 7
        assert sorted(a[:2] for a in answers) == [(0, CORRUPT_MESSAGE), (1, CORRUPT_MESSAGE)]
        by_partition = {a[0]: a[2] for a in answers}
        assert "records length does not match" in by_partition[0]
        assert "could not be decoded" in by_partition[1]
        # The connection is still served.
        sock.sendall(api_versions_v0(8))
        assert struct.unpack(">i", read_frame(sock)[:4]) == (8,)
    log = proxy.read_log()
    assert "Produce refused: CORRUPT_MESSAGE" in log and "framing-check" in log
    assert consume(proxy.bootstrap, topic, 1, partitions=3, timeout=3) == [], "nothing was forwarded"
