"""A TCP proxy between the app and PostgreSQL that cuts connections at COMMIT.

Killing backends cannot be aimed at the instant of a COMMIT, so on its own
it never produces the case the 502 exists for: a COMMIT the server applied
whose answer the app never got. The proxy produces both halves of that case
on purpose. For a chosen fraction of the COMMITs it sees, it either

- closes the connection *before* passing the COMMIT on: the server never
  sees it and rolls the transaction back (the key must be absent), or
- passes the COMMIT on, waits for the server's answer, drops it and closes
  the connection: the server has committed (the key must be present).

The app cannot tell the two apart; both must be answered 502, "commit
outcome unknown", and the runner counts the keys as present or absent.

It reads the client's side of the PostgreSQL protocol just enough to spot a
simple-query ``COMMIT`` (psycopg sends its commits that way, alone or first
in a batch), so the app's connections through it must not use TLS
(``sslmode=disable``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import socket
import threading
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection

#: Codes of the untyped requests a client may send before its startup message.
_PRE_STARTUP_CODES = {80877103, 80877104}  # SSLRequest, GSSENCRequest


@dataclass
class CutCounts:
    commits: int = 0
    cut_before: int = 0
    cut_after: int = 0
    #: Of the COMMITs cut after their answer, those the server answered with
    #: "COMMIT" (rather than an error, or "ROLLBACK" for a failed transaction):
    #: each of their keys must be stored.
    cut_after_committed: int = 0


class CutterProcess:
    """Runs a :class:`CommitCutter` in a process of its own, so that its
    byte pumping does not compete for the GIL with the runner's clients."""

    def __init__(self, upstream: tuple[str, int], probability: float, seed: int) -> None:
        self.counts = CutCounts()
        self._pipe, child = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(child, upstream, probability, seed), name="commit-cutter", daemon=True
        )
        self.port = 0

    def start(self) -> None:
        self._process.start()
        self.port = self._pipe.recv()

    def stop(self) -> None:
        """Stop the proxy; its counts are then in :attr:`counts`."""
        self._pipe.send("stop")
        self.counts = CutCounts(**self._pipe.recv())
        self._process.join(timeout=10)


def _serve(pipe: Connection, upstream: tuple[str, int], probability: float, seed: int) -> None:
    cutter = CommitCutter(upstream, probability, seed)
    cutter.start()
    pipe.send(cutter.port)
    pipe.recv()
    cutter.stop()
    pipe.send(asdict(cutter.counts))


class CommitCutter:
    """Listens on a free 127.0.0.1 port and forwards to ``upstream``."""

    def __init__(self, upstream: tuple[str, int], probability: float, seed: int) -> None:
        self.upstream = upstream
        self.probability = probability
        self.counts = CutCounts()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="commit-cutter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close every connection still open."""
        self._stopped.set()
        self._thread.join()
        self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
            self._sockets.clear()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=3)
            except OSError:
                _close(client)  # the server is down: the app sees a refused connection
                continue
            for sock in (client, server):
                sock.settimeout(None)
                # Messages are passed on one by one: without this, Nagle's
                # algorithm holds the small ones back for tens of milliseconds.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, server))
            link = _Link(self, client, server)
            threading.Thread(target=link.client_to_server, daemon=True).start()
            threading.Thread(target=link.server_to_client, daemon=True).start()

    def _decide(self) -> str | None:
        """For one COMMIT: None to pass it, "before" or "after" to cut."""
        with self._lock:
            self.counts.commits += 1
            if self._rng.random() >= self.probability:
                return None
            if self._rng.random() < 0.5:
                self.counts.cut_before += 1
                return "before"
            self.counts.cut_after += 1
            return "after"

    def _confirmed(self) -> None:
        with self._lock:
            self.counts.cut_after_committed += 1

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._sockets.discard(sock)
                _close(sock)


class _Link:
    """One app connection and its server connection, pumped by two threads."""

    def __init__(self, cutter: CommitCutter, client: socket.socket, server: socket.socket) -> None:
        self.cutter = cutter
        self.client = client
        self.server = server
        #: Set just before a COMMIT that is to be cut after its answer goes to the server.
        self.cut_after_answer = threading.Event()

    def close(self) -> None:
        self.cutter._forget(self.client, self.server)

    def client_to_server(self) -> None:
        try:
            while True:  # untyped messages: optional SSL/GSS requests, then the startup
                head = _read_exact(self.client, 8)
                length = int.from_bytes(head[:4], "big")
                self.server.sendall(head + _read_exact(self.client, length - 8))
                if int.from_bytes(head[4:8], "big") not in _PRE_STARTUP_CODES:
                    break
            while True:
                head = _read_exact(self.client, 5)
                body = _read_exact(self.client, int.from_bytes(head[1:5], "big") - 4)
                if head[:1] == b"Q" and _is_commit(body):
                    decision = self.cutter._decide()
                    if decision == "before":
                        return
                    if decision == "after":
                        self.cut_after_answer.set()
                self.server.sendall(head + body)
        except OSError:
            pass
        finally:
            if not self.cut_after_answer.is_set():
                self.close()

    def server_to_client(self) -> None:
        try:
            while data := self.server.recv(65536):
                if self.cut_after_answer.is_set():
                    # The server answered the COMMIT: note whether it
                    # committed, and let the app never hear it.
                    if data[:1] == b"C" and data[5:11] == b"COMMIT":
                        self.cutter._confirmed()
                    return
                self.client.sendall(data)
        except OSError:
            pass
        finally:
            self.close()


def _is_commit(query: bytes) -> bool:
    """A simple query that commits: ``COMMIT`` alone, or first in a batch (an
    app with replicas sends ``COMMIT; SELECT pg_current_wal_insert_lsn()``)."""
    text = query.rstrip(b"\0").strip().upper()
    return text == b"COMMIT" or text.startswith(b"COMMIT;")


def _read_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = sock.recv(min(size, 65536))
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
