#!/usr/bin/env python3
"""A gate in front of a real broker for tests: TLS (Python's ssl, i.e.
OpenSSL) and/or SASL verified with an independent implementation (scramp
for SCRAM-SHA-256/512, plain comparison for PLAIN). After a successful login
it splices bytes to the broker unchanged. No broker available here verifies
SCRAM or speaks TLS, so this stands in for a production listener.

With `--lifetime-ms`, the login answer carries a session lifetime
(KIP-368); a request arriving after it ends closes the connection, as a
broker does, and a SaslHandshake on a logged-in connection starts a new
login, answered by the gate itself.

Every event is a line on stdout: `AUTH_OK <mech> <user>`, `REAUTH_OK <mech>
<user>`, `AUTH_FAIL <why>`, `UNAUTHENTICATED_REQUEST api=<key>`,
`EXPIRED_CLOSE`, `CONNECTED`.

Usage: broker_gate.py --listen HOST:PORT --upstream HOST:PORT
       [--mechanism M --user U --password P] [--lifetime-ms N]
       [--tls-cert F --tls-key F [--tls-client-ca F]]
"""

import argparse
import asyncio
import ssl
import struct
import sys
import time

import scramp

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18


def log(*parts):
    print(*parts, flush=True)


async def read_frame(reader):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def parse_header(body: bytes):
    api_key, api_version, correlation_id = struct.unpack(">hhi", body[:8])
    (client_len,) = struct.unpack(">h", body[8:10])
    offset = 10 + max(client_len, 0)
    return api_key, api_version, correlation_id, offset


class Gate:
    def __init__(self, args):
        self.args = args
        self.scram = None
        if args.mechanism and args.mechanism.startswith("SCRAM"):
            mech = scramp.ScramMechanism(args.mechanism)
            self.scram = (mech, mech.make_auth_info(args.password, iteration_count=4096))

    async def handle(self, reader, writer):
        log("CONNECTED")
        try:
            host, port = self.args.upstream.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError as e:
            log("UPSTREAM_FAIL", e)
            writer.close()
            return
        try:
            if not self.args.mechanism:
                await asyncio.gather(self.pipe(reader, up_writer), self.pipe(up_reader, writer))
                return
            state = {"expires": None}  # this connection's session end
            if not await self.login(reader, writer, up_reader, up_writer, state):
                return
            await asyncio.gather(self.requests(reader, writer, up_reader, up_writer, state),
                                 self.pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            for w in (writer, up_writer):
                try:
                    w.close()
                except Exception:
                    pass

    async def pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            try:
                writer.write_eof()
            except Exception:
                pass

    async def requests(self, reader, writer, up_reader, up_writer, state):
        """After login: forward requests, enforce the session lifetime, and
        answer a new login on the same connection."""
        try:
            while True:
                body = await read_frame(reader)
                api_key = struct.unpack(">h", body[:2])[0]
                if api_key == SASL_HANDSHAKE:
                    if not await self.login(reader, writer, up_reader, up_writer, state, first=body, again=True):
                        return
                    continue
                if state["expires"] and time.monotonic() > state["expires"]:
                    log("EXPIRED_CLOSE")
                    return
                up_writer.write(frame(body))
                await up_writer.drain()
        finally:
            writer.close()
            up_writer.close()

    async def login(self, reader, writer, up_reader, up_writer, state, first=None, again=False) -> bool:
        server = None
        while True:
            body, first = (first, None) if first is not None else (await read_frame(reader), None)
            api_key, version, cid, offset = parse_header(body)
            if api_key == API_VERSIONS:
                up_writer.write(frame(body))
                await up_writer.drain()
                writer.write(frame(await read_frame(up_reader)))
                await writer.drain()
            elif api_key == SASL_HANDSHAKE:
                (n,) = struct.unpack(">h", body[offset:offset + 2])
                mechanism = body[offset + 2:offset + 2 + n].decode()
                ok = mechanism == self.args.mechanism
                name = self.args.mechanism.encode()
                resp = struct.pack(">ihi", cid, 0 if ok else 33, 1) + struct.pack(">h", len(name)) + name
                writer.write(frame(resp))
                await writer.drain()
                if not ok:
                    log("AUTH_FAIL mechanism", mechanism)
                    return False
            elif api_key == SASL_AUTHENTICATE and version in (0, 1):
                (n,) = struct.unpack(">i", body[offset:offset + 4])
                token = body[offset + 4:offset + 4 + n]
                reply, error, done = self.step(token, server)
                if isinstance(reply, tuple):
                    server, reply = reply
                lifetime = self.args.lifetime_ms if done else 0
                resp = struct.pack(">ih", cid, 58 if error else 0)
                if error:
                    msg = error.encode()
                    resp += struct.pack(">h", len(msg)) + msg
                else:
                    resp += struct.pack(">h", -1)
                resp += struct.pack(">i", len(reply)) + reply
                if version >= 1:
                    resp += struct.pack(">q", lifetime)
                writer.write(frame(resp))
                await writer.drain()
                if error:
                    log("AUTH_FAIL", error)
                    return False
                if done:
                    log("REAUTH_OK" if again else "AUTH_OK", self.args.mechanism, self.args.user)
                    state["expires"] = time.monotonic() + lifetime / 1000 if lifetime else None
                    return True
            else:
                log(f"UNAUTHENTICATED_REQUEST api={api_key}")
                return False

    def step(self, token: bytes, server):
        """Returns (reply or (server, reply), error, done)."""
        if self.args.mechanism == "PLAIN":
            parts = token.split(b"\0")
            if len(parts) == 3 and parts[1].decode() == self.args.user and parts[2].decode() == self.args.password:
                return b"", None, True
            return b"", "Invalid username or password", False
        mech, auth_info = self.scram
        try:
            if server is None:
                users = {self.args.user: auth_info}
                server = mech.make_server(lambda u: users[u])
                server.set_client_first(token.decode())
                return (server, server.get_server_first().encode()), None, False
            server.set_client_final(token.decode())
            return server.get_server_final().encode(), None, True
        except (scramp.ScramException, KeyError) as e:
            return b"", f"Authentication failed: {e}", False


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--mechanism")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--lifetime-ms", type=int, default=0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-client-ca")
    args = p.parse_args()
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            context.load_verify_locations(args.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    gate = Gate(args)
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(gate.handle, host, int(port), ssl=context,
                                        ssl_handshake_timeout=10 if context else None)
    log("LISTENING")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
