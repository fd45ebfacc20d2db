"""A counting TCP relay for PostgreSQL, to check the round-trip counts.

The event-based counts of ``roundtrips.py`` rely on knowing when the driver
talks to the server. This relay checks them on the wire: it sits between the
app and PostgreSQL on 127.0.0.1, forwards every byte unchanged, and parses
the client's side of the protocol. Every round trip the client starts ends
with one of two messages: ``Query`` (``Q``, the simple protocol: BEGIN,
COMMIT, ROLLBACK) or ``Sync`` (``S``, which closes an extended-protocol
Parse/Bind/Execute batch). Counting those two gives the round trips exactly.

The counting processes of ``requests.py`` use it as it is. With
``added_latency`` it also stands for a network between the app and the
server: each message that ends a round trip waits that long before it is
passed on, so every round trip costs that much more, as it would across a
real network (``requests.py --network-delay-ms``; this machine's kernel has
no ``netem``). The app must connect with ``sslmode=disable`` and ``gssencmode=disable`` so
that the stream stays readable.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress

#: Request codes a client may send before its real startup message.
_PRE_STARTUP_CODES = (80877103, 80877104)  # SSLRequest, GSSENCRequest


class CountingRelay:
    """Relays 127.0.0.1:<port> to a PostgreSQL server, counting round trips."""

    def __init__(self, server_host: str, server_port: int, added_latency: float = 0.0) -> None:
        self.server = (server_host, server_port)
        self.added_latency = added_latency
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.round_trips = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.round_trips = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.server)
            threading.Thread(target=self._client_to_server, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _client_to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        started = False
        ends_round_trip = False
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close(client, upstream)
                return
            buffer += data
            while True:
                if not started:
                    # Untyped messages: length (4 bytes, itself included), then a code.
                    if len(buffer) < 8:
                        break
                    length = int.from_bytes(buffer[:4], "big")
                    if len(buffer) < length:
                        break
                    code = int.from_bytes(buffer[4:8], "big")
                    started = code not in _PRE_STARTUP_CODES
                    buffer = buffer[length:]
                    continue
                # Typed messages: type (1 byte), length (4 bytes, itself included).
                if len(buffer) < 5:
                    break
                length = int.from_bytes(buffer[1:5], "big")
                if len(buffer) < 1 + length:
                    break
                if buffer[:1] in (b"Q", b"S"):
                    ends_round_trip = True
                    with self._lock:
                        self.round_trips += 1
                buffer = buffer[1 + length :]
            if ends_round_trip and self.added_latency:
                time.sleep(self.added_latency)
            ends_round_trip = False
            # Counted before forwarding, so the count is complete by the time
            # the client can have its answer.
            try:
                upstream.sendall(data)
            except OSError:
                self._close(client, upstream)
                return

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close(source, target)
                return
            try:
                target.sendall(data)
            except OSError:
                self._close(source, target)
                return

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
