"""A reference scoring server: a classifier behind HTTP, with faults to inject (`ScoringServer`, `zol2l serve`).

It speaks the protocol of zol2l_ext/remote.py (``POST /predict`` with an ``.npy`` batch of images, an ``.npy``
batch of scores back) on the standard library's ThreadingHTTPServer (HTTP/1.1, keep-alive, one thread per
connection): no dependency, and a socket we can drop at will. ``GET /health`` describes the model;
``GET /stats`` counts requests, answered evaluations and the faults injected.

Faults (`Faults`), drawn per request from one seeded generator, in this order: rate limiting (a token bucket of
``rate_limit`` requests per second, burst ``rate_burst``: a 429 with Retry-After), a dropped connection (the
socket is closed with no answer: the client sees a reset), an error (a 503), then an added latency (uniform in
[0, latency] seconds) before the answer. Only requests answered with scores count as answered evaluations.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import math
import random
import socket
import sys
import threading
import time
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from .malloc_tuning import keep_freed_memory_once
from .remote import NPY_TYPE, decode_array, encode_array

__all__ = ["Faults", "ScoringServer"]


@dataclass
class Faults:
    """What the server does wrong, on purpose. Rates are probabilities per request; ``latency`` in seconds."""

    latency: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    rate_limit: Optional[float] = None  # requests per second; None: no limit
    rate_burst: int = 4
    seed: int = 0

    def __post_init__(self):
        for name in ("error_rate", "drop_rate"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {v}")
        if not self.latency >= 0.0:
            raise ValueError(f"latency must be >= 0, got {self.latency}")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise ValueError(f"rate_limit must be > 0 requests per second, got {self.rate_limit}")

    def describe(self) -> str:
        parts = [f"latency up to {self.latency:g} s" if self.latency else "",
                 f"{100 * self.error_rate:g}% errors" if self.error_rate else "",
                 f"{100 * self.drop_rate:g}% dropped connections" if self.drop_rate else "",
                 f"rate limit {self.rate_limit:g}/s" if self.rate_limit else ""]
        return ", ".join(p for p in parts if p) or "none"


class _Bucket:
    """Token bucket: ``take()`` returns 0 when a request may pass, else the seconds until one may."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, max(1, int(burst))
        self.tokens, self.t = float(self.burst), time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class ScoringServer:
    """``model`` (images [n, C, H, W] in [0, 1] -> scores [n, K]) served on ``host:port`` (port 0: any free one).

    ``input_shape`` (C, H, W), when given, is checked on every request (a 400 otherwise). ``start()`` serves from
    a background thread (tests), ``serve_forever()`` from this one (the CLI); ``url`` is the scoring URL.
    ``threads``: torch threads of each forward (None: this thread's count when the server is built); the thread
    count can change a forward's rounding, so a server that must answer bit for bit like a local model uses its
    thread count."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], host: str = "127.0.0.1", port: int = 0,
                 faults: Optional[Faults] = None, input_shape: Optional[Tuple[int, int, int]] = None,
                 name: str = "model", device: str | torch.device = "cpu", threads: Optional[int] = None):
        self.model, self.name, self.device = model, name, torch.device(device)
        self.faults = faults or Faults()
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        self._rng = random.Random(self.faults.seed)
        self._bucket = None if self.faults.rate_limit is None else _Bucket(self.faults.rate_limit,
                                                                          self.faults.rate_burst)
        self._lock = threading.Lock()
        self.threads = int(threads) if threads else torch.get_num_threads()
        self._local = threading.local()
        self.counts = dict(requests=0, answered_requests=0, answered_evaluations=0, injected_errors=0,
                           dropped_connections=0, rate_limited=0, bad_requests=0, client_gone=0)
        self.httpd = _QuietServer((host, int(port)), _handler_for(self))
        self.httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/predict"

    def stats(self) -> dict:
        with self._lock:
            return dict(self.counts)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def draw_fault(self) -> Tuple[str, float]:
        """(kind, value) for the next request: ("limit", retry_after s), ("drop", 0), ("error", 0) or
        ("ok", added latency s)."""
        f = self.faults
        with self._lock:
            if self._bucket is not None:
                wait = self._bucket.take()
                if wait > 0:
                    return "limit", wait
            u = self._rng.random()
            if u < f.drop_rate:
                return "drop", 0.0
            if u < f.drop_rate + f.error_rate:
                return "error", 0.0
            return "ok", self._rng.uniform(0.0, f.latency) if f.latency else 0.0

    def score(self, x: np.ndarray) -> np.ndarray:
        # A server is a loop of same-sized forwards, like an attack: without this, glibc trims each handler
        # thread's arena on every free and the next request page-faults it in again (digits CNN, 264 images:
        # 8.8 ms a request instead of 6.2). What the estimator applies at the first black-box call.
        keep_freed_memory_once()
        # OpenMP keeps its thread count per calling thread: a handler thread starts at the machine's core count,
        # not at the torch.set_num_threads of the thread that built the server (zol2l serve --threads)
        if getattr(self._local, "threads", None) != self.threads:
            torch.set_num_threads(self.threads)
            self._local.threads = self.threads
        with torch.no_grad():
            out = self.model(torch.from_numpy(x).to(self.device))
        return out.detach().to("cpu", torch.float32).numpy()

    def start(self) -> "ScoringServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="zol2l-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up (its timeout, a dropped connection) is routine here: no traceback for it."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(server: ScoringServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a connection per client thread, not per request
        disable_nagle_algorithm = True  # headers and body are two writes: Nagle + delayed ACK would add 40 ms
        # buffered: the headers and a body of up to 64 KiB leave in one send at the end of the request (two
        # unbuffered sends of a 264-image answer cost 0.5 ms together, as much as the rest of the request's I/O)
        wbufsize = 1 << 16

        def log_message(self, fmt, *args):  # one line per request would drown the attack's own output
            pass

        def _send(self, code: int, body: bytes, ctype: str, headers: Optional[dict] = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: dict, headers: Optional[dict] = None) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json", headers)

        def do_GET(self):
            if self.path == "/health":
                self._json(200, {"model": server.name, "input_shape": server.input_shape,
                                 "faults": asdict(server.faults)})
            elif self.path == "/stats":
                self._json(200, server.stats())
            else:
                self._json(404, {"error": f"no such path {self.path}; POST /predict, GET /health or /stats"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)  # read in full first, so that a refusal leaves the connection usable
            if self.path != "/predict":
                return self._json(404, {"error": f"no such path {self.path}; POST images to /predict"})
            server.count("requests")
            kind, value = server.draw_fault()
            if kind == "limit":
                server.count("rate_limited")
                return self._json(429, {"error": "rate limited"}, {"Retry-After": str(max(1, math.ceil(value)))})
            if kind == "drop":
                server.count("dropped_connections")
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return None
            if kind == "error":
                server.count("injected_errors")
                return self._json(503, {"error": "injected fault"})
            try:
                x = decode_array(body)
                if x.ndim != 4 or x.dtype.kind != "f" or (server.input_shape and x.shape[1:] != server.input_shape):
                    want = "[n, " + ", ".join(map(str, server.input_shape)) + "]" if server.input_shape else \
                        "[n, C, H, W]"
                    raise ValueError(f"images must be a float array {want}, got {x.dtype} {tuple(x.shape)}")
            except ValueError as e:
                server.count("bad_requests")
                return self._json(400, {"error": f"bad request body: {e}"})
            try:
                out = server.score(x.astype(np.float32, copy=False))
            except Exception as e:  # noqa: BLE001 - the model failing is the server's fault, said in one line
                return self._json(500, {"error": f"model failed: {type(e).__name__}: {e}"})
            if value:
                time.sleep(value)
            try:
                self._send(200, encode_array(out), NPY_TYPE)
            except ConnectionError:  # the client gave up (its timeout): nothing was answered
                server.count("client_gone")
                self.close_connection = True
                return None
            server.count("answered_requests")
            server.count("answered_evaluations", int(x.shape[0]))

    return Handler
