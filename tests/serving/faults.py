"""Network faults in front of a real server, for the runtime client's retry and timeout tests.

Pure stdlib. Everything listens on 127.0.0.1 only, is bounded in connections and lifetime,
and stops when its `with` block ends.

- `fault_proxy(upstream_port, ...)`: a TCP proxy that drops a deterministic share of
  requests (every k-th, or a seeded RNG), delays each response by N seconds, or cuts a
  response after N bytes.
- `stub_server(mode)`: a server that answers every request with 500, or accepts and never
  answers (a hung upstream).

The proxy counts HTTP requests, not TCP connections, without parsing HTTP: a request starts
where the client sends after the last response began (or on a new connection). Clients keep
connections alive (httpx, the openai client), so counting connections would drop almost
nothing. This assumes no pipelining, which HTTP clients do not do.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"


@dataclass
class ProxyStats:
    connections: int = 0  # accepted
    requests: int = 0  # seen, counted from 1 in the order they arrived
    dropped: int = 0
    forwarded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class FaultProxy:
    port: int
    base_url: str  # http://127.0.0.1:PORT/v1
    stats: ProxyStats


@contextlib.contextmanager
def fault_proxy(
    upstream_port: int,
    *,
    drop_every: int = 0,
    drop_share: float = 0.0,
    seed: int = 0,
    delay_s: float = 0.0,
    cut_after_bytes: int | None = None,
    max_connections: int = 1000,
    max_lifetime_s: float = 600.0,
) -> Iterator[FaultProxy]:
    """Proxy 127.0.0.1:<new port> to 127.0.0.1:upstream_port, with faults.

    drop_every=k drops requests k, 2k, 3k, ...: their connection is reset once the request
    arrived, and nothing reaches the upstream (the client sees ConnectionResetError, or its
    library's word for it); drop_share=p drops each with probability p from
    random.Random(seed), so a run is repeatable. delay_s holds back the first byte of each
    response that long (the request reaches the upstream at once). cut_after_bytes closes the
    connection after that many bytes of a response (a truncated body or stream).
    Past max_connections or max_lifetime_s it stops accepting.
    """
    rng = random.Random(seed)
    stats = ProxyStats()
    stop = threading.Event()
    listener = socket.create_server((HOST, 0))
    listener.settimeout(0.2)  # so the accept loop sees `stop` promptly
    port = listener.getsockname()[1]
    workers: list[threading.Thread] = []
    deadline = time.monotonic() + max_lifetime_s

    def drop_next_request() -> bool:
        with stats.lock:  # one decision at a time, in arrival order: deterministic
            stats.requests += 1
            drop = bool(drop_every and stats.requests % drop_every == 0)
            drop = drop or (drop_share > 0 and rng.random() < drop_share)
            stats.dropped += int(drop)
            stats.forwarded += int(not drop)
            return drop

    def accept_loop() -> None:
        while not stop.is_set() and time.monotonic() < deadline and stats.connections < max_connections:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # listener closed at exit
                return
            stats.connections += 1
            args = (client, upstream_port, stop, drop_next_request, delay_s, cut_after_bytes)
            t = threading.Thread(target=_pipe, args=args, daemon=True)
            t.start()
            workers.append(t)
        listener.close()  # past the bounds: refuse new clients rather than leave them queued

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield FaultProxy(port, f"http://{HOST}:{port}/v1", stats)
    finally:
        stop.set()
        listener.close()
        acceptor.join(timeout=2)
        for t in workers:
            t.join(timeout=2)


def _reset(sock: socket.socket) -> None:
    """Close with linger 0, which sends a reset: the client sees ConnectionResetError at its
    read every time. (A plain close with the request unread may or may not become a reset,
    and the client's error would depend on timing.)"""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _pipe(
    client: socket.socket,
    upstream_port: int,
    stop: threading.Event,
    drop_next_request: Callable[[], bool],
    delay_s: float,
    cut: int | None,
) -> None:
    """Copy bytes both ways until either side closes or the proxy stops, with the faults."""
    upstream: socket.socket | None = None  # connected on the first forwarded request
    phase = "idle"  # "request": the client is sending one; "response": the upstream answers
    sent_back = 0  # bytes of the current response
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ)
    try:
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                src = key.fileobj
                try:
                    data = src.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if src is client:
                    if phase != "request":  # the first bytes of a new request
                        if drop_next_request():
                            return _reset(client)
                        phase = "request"
                    if upstream is None:
                        try:
                            upstream = socket.create_connection((HOST, upstream_port), timeout=10)
                        except OSError:  # upstream down: the client sees a reset, as with a drop
                            return _reset(client)
                        sel.register(upstream, selectors.EVENT_READ)
                    dst = upstream
                else:
                    if phase == "request":  # the first bytes of its response
                        if delay_s > 0 and stop.wait(delay_s):  # `stop` rather than sleep: exit is prompt
                            return
                        phase, sent_back = "response", 0
                    if cut is not None:
                        data = data[: max(cut - sent_back, 0)]
                    sent_back += len(data)
                    dst = client
                try:
                    dst.sendall(data)
                except OSError:
                    return
                if cut is not None and src is not client and sent_back >= cut:
                    return
    finally:
        sel.close()
        client.close()
        if upstream is not None:
            upstream.close()


@dataclass
class StubServer:
    port: int
    base_url: str
    requests: list[str]  # "METHOD /path" for each request seen


@contextlib.contextmanager
def stub_server(mode: str = "500", *, hang_s: float = 120.0) -> Iterator[StubServer]:
    """mode "500": every request gets 500 with an OpenAI-style error body.
    mode "hang": requests are read and never answered (until hang_s or exit)."""
    if mode not in ("500", "hang"):
        raise ValueError(f"unknown stub mode {mode!r}")
    stop = threading.Event()
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if mode == "hang":
                stop.wait(hang_s)
                self.close_connection = True
                return
            body = b'{"error": {"message": "stub: internal error", "type": "InternalServerError", "code": 500}}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield StubServer(port, f"http://{HOST}:{port}/v1", seen)
    finally:
        stop.set()  # releases hung handlers first, so shutdown does not wait on them
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
