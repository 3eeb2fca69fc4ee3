"""A fault-injecting TCP relay for e2e tests: put it between the proxy and
S3 (or a broker) to slow the link to a fixed rate, stall it (bytes stop
flowing, connections stay open), or cut every connection."""

import socket
import threading
import time


class RateLimit:
    """One pace for all connections together: n bytes may pass every n/rate s."""

    def __init__(self, bytes_per_s: float):
        self.rate = bytes_per_s
        self.next_free = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / self.rate
        delay = start - now
        if delay > 0:
            time.sleep(delay)


class Relay:
    """Listens on 127.0.0.1:<port> and relays to target (host, port).
    `upload_rate`: bytes/s from clients to the target (None: unlimited)."""

    def __init__(self, target_host: str, target_port: int, upload_rate: float | None = None):
        self.target = (target_host, target_port)
        self.limit = RateLimit(upload_rate) if upload_rate else None
        self.stalled = threading.Event()
        self.closed = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    def cut(self) -> None:
        """Closes every open connection (new ones are still accepted)."""
        with self.lock:
            socks, self.sockets = self.sockets, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.stalled.is_set() and not self.closed:
                    time.sleep(0.05)
                if upload and self.limit:
                    self.limit.take(len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
