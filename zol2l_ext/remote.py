"""A classifier behind an HTTP endpoint, as a model the attacks call like any other (`RemoteModel`).

The wire protocol (served by `zol2l serve`, zol2l_ext/serve.py): ``POST URL`` with the images as one ``.npy``
array (float32 [n, C, H, W] in [0, 1], ``Content-Type: application/x-npy``); the answer is one ``.npy`` array of
class scores (float [n, K], logits or log-probabilities). Any other answer is an error whose JSON body
``{"error": "..."}`` says why. ``.npy`` rather than JSON: a step of an MNIST attack sends tens of megabytes, and
parsing that as text would cost more than the model.

A call of `RemoteModel` (one optimizer step: B x (q + 1) images) is cut into requests of at most ``batch_size``
images, ``concurrency`` of them in flight. Transient faults (connection refused or reset, a timeout, 429 and
5xx answers) are retried with exponential backoff by urllib3's ``Retry``; scoring is a pure function of the
images, so a retried POST is safe. urllib3 is used directly, without ``requests`` on top: the same connection
pool and retries, and 0.3-0.8 ms less per request (digits CNN, 264 images: 5.1 ms a request against 6.0), which
decides the throughput of a small model behind a local endpoint. Each image is counted once, when its scores arrive
(``stats()["answered_evaluations"]``), whatever the attempts it took; ``retried_requests`` and
``failed_requests`` say how many requests needed retries or were given up on. A request that still fails after
``retries`` retries, or that gets an answer no retry can fix (4xx, a malformed array), raises `EndpointError`
for the whole call, naming the endpoint and the cause.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import io
import json
import math
import re
import threading
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import Tensor, nn
import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError
from urllib3.util.retry import Retry

__all__ = ["EndpointError", "RemoteModel", "encode_array", "decode_array", "NPY_TYPE", "TRANSIENT_STATUS"]

NPY_TYPE = "application/x-npy"
#: answers that a later attempt may not get: rate limiting and server-side faults
TRANSIENT_STATUS = (429, 500, 502, 503, 504)


class EndpointError(ConnectionError):
    """The endpoint did not score a batch: down past the retry budget, or an answer no retry can fix."""


# The .npy header of version 1.0 as numpy writes it for a C-ordered array of a plain dtype. np.save and np.load
# format and parse it through repr and ast.literal_eval: 50-130 us a call on each side, about a tenth of a
# request's own work for a small model (digits CNN, 264 images), so both ends take this shortcut for the common
# case and leave every other array and body to numpy.
_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_NPY_HEADER = re.compile(rb"\{'descr': '([<|][fiub][1248])', 'fortran_order': False, "
                         rb"'shape': \(((?:\d+, )*(?:\d+,?)?)\), \} *\n")
_NPY_PLAIN_SIZES = ("1", "2", "4", "8")  # itemsizes of the dtypes the header pattern accepts


def encode_array(a: np.ndarray) -> bytes:
    """The bytes of ``np.save(a, allow_pickle=False)`` (bit for bit: the shortcut writes numpy's own header)."""
    descr = a.dtype.str
    if a.flags.c_contiguous and descr[:1] in "<|" and a.dtype.kind in "fiub" and descr[2:] in _NPY_PLAIN_SIZES:
        header = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, tuple(int(n) for n in a.shape))
        pad = -(len(_NPY_MAGIC) + 2 + len(header) + 1) % 64  # numpy aligns the data to 64 bytes
        header = (header + " " * pad + "\n").encode("latin1")
        if len(header) < 1 << 16:
            return b"".join((_NPY_MAGIC, len(header).to_bytes(2, "little"), header, a.reshape(-1).view(np.uint8)))
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _decode_plain(data: bytes) -> Optional[np.ndarray]:
    """The array of a version-1.0 ``.npy`` body with numpy's header for a C-ordered plain dtype and exactly its
    data, else None (numpy reads, or refuses, everything else)."""
    if len(data) < 10 or not data.startswith(_NPY_MAGIC):
        return None
    end = 10 + int.from_bytes(data[8:10], "little")
    m = _NPY_HEADER.fullmatch(data, 10, end)
    if m is None:
        return None
    dtype = np.dtype(m[1].decode("ascii"))
    shape = tuple(int(n) for n in m[2].split(b",") if n.strip())
    count = math.prod(shape)
    if len(data) - end != count * dtype.itemsize:
        return None
    return np.frombuffer(data, dtype, count, end).reshape(shape).copy()  # writable, as np.load's


# np.load parses the .npy header with ast.literal_eval, which CPython before 3.12 cannot run in two threads at once
# ("SystemError: AST constructor recursion depth mismatch", seen here with concurrent requests): one at a time.
_NPY_LOCK = threading.Lock()


def decode_array(data: bytes) -> np.ndarray:
    """The array of an ``.npy`` body; ValueError when it is not one (no pickles: a body is untrusted)."""
    plain = _decode_plain(data)
    if plain is not None:
        return plain
    try:
        with _NPY_LOCK:
            return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign body shows as any of several errors
        raise ValueError(f"not an .npy array ({type(e).__name__}: {e})") from None


def _error_text(resp: urllib3.BaseHTTPResponse) -> str:
    try:
        return str(json.loads(resp.data)["error"])
    except Exception:  # noqa: BLE001 - a body that is not our JSON error: show its start
        return resp.data[:200].decode("utf-8", "replace").strip() or "(empty body)"


class RemoteModel(nn.Module):
    """``model(images [n, C, H, W]) -> scores [n, K]`` computed by the HTTP endpoint ``url``.

    ``batch_size``: images per request. ``concurrency``: requests in flight at once. ``timeout``: seconds to
    wait for a connection and then for an answer, per attempt. ``retries``: retries of a request after a
    transient fault, with a backoff of ``backoff * 2**(k-1)`` seconds before retry k (at most ``backoff_max``;
    a 429's Retry-After is obeyed). The scores come back on the images' device, in float32."""

    def __init__(self, url: str, batch_size: int = 1024, concurrency: int = 4, timeout: float = 30.0,
                 retries: int = 5, backoff: float = 0.05, backoff_max: float = 5.0):
        super().__init__()
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {url!r}: give an http:// or https:// URL")
        for name, v in (("batch_size", batch_size), ("concurrency", concurrency)):
            if int(v) < 1:
                raise ValueError(f"RemoteModel: {name} must be >= 1, got {v}")
        if not timeout > 0 or retries < 0 or backoff < 0:
            raise ValueError(f"RemoteModel: need timeout > 0, retries >= 0, backoff >= 0 (got {timeout}, {retries}, "
                             f"{backoff})")
        self.url = url
        self.batch_size, self.concurrency = int(batch_size), int(concurrency)
        self.timeout, self.retries = float(timeout), int(retries)
        self.retry = Retry(total=self.retries, connect=self.retries, read=self.retries, status=self.retries,
                           other=self.retries, backoff_factor=float(backoff), backoff_max=float(backoff_max),
                           status_forcelist=TRANSIENT_STATUS, allowed_methods=None,  # POST too: scoring is pure
                           respect_retry_after_header=True, raise_on_status=True)
        self._http: Optional[urllib3.HTTPConnectionPool] = None  # thread-safe: `concurrency` kept-alive connections
        self._target = urllib3.util.parse_url(url).request_uri  # the path (and query) each POST goes to
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._stats = dict(requests=0, answered_evaluations=0, retried_requests=0, retries=0, failed_requests=0)
        self.eval()

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def stats(self) -> Dict[str, int]:
        """Counts so far: ``requests`` (attempted, each once however often retried), ``answered_evaluations``
        (images scored), ``retried_requests`` (requests that needed at least one retry), ``retries`` (extra
        attempts in all) and ``failed_requests`` (given up on)."""
        with self._lock:
            return dict(self._stats)

    def _count(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                self._stats[k] += int(v)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._http is not None:
            self._http.close()  # closes the kept-alive connections
            self._http = None

    def extra_repr(self) -> str:
        return f"url={self.url!r}, batch_size={self.batch_size}, concurrency={self.concurrency}"

    def __getstate__(self):  # a copy shares no thread pool, lock or connections with its original
        state = self.__dict__.copy()
        state.update(_http=None, _lock=None, _pool=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- the black box -------------------------------------------------------------------------------------
    def _connections(self) -> urllib3.HTTPConnectionPool:
        # The endpoint's own pool, not a PoolManager: one host needs no pool lookup, and skipping the manager's URL
        # parsing and key normalisation saves 0.1 ms of client CPU a request (a third of urllib3's share).
        with self._lock:
            if self._http is None:
                self._http = urllib3.connection_from_url(
                    self.url, maxsize=self.concurrency, retries=self.retry,
                    timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout))
            return self._http

    def _post(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        try:
            resp = self._connections().urlopen("POST", self._target, body=encode_array(x),
                                               headers={"Content-Type": NPY_TYPE})
        except HTTPError as e:
            spent = self.retries if isinstance(e, MaxRetryError) else 0
            self._count(requests=1, failed_requests=1, retries=spent, retried_requests=spent > 0)
            raise EndpointError(f"endpoint {self.url}: {n} images not scored after {self.retries} retries "
                                f"({_cause(e)})") from None
        history = getattr(resp.retries, "history", ()) or ()
        self._count(requests=1, retries=len(history), retried_requests=bool(history))
        if resp.status != 200:  # not retryable (a 4xx other than 429): the request itself is wrong
            self._count(failed_requests=1)
            raise EndpointError(f"endpoint {self.url}: HTTP {resp.status} for {n} images: {_error_text(resp)}")
        try:
            out = decode_array(resp.data)
        except ValueError as e:
            self._count(failed_requests=1)
            raise EndpointError(f"endpoint {self.url}: the answer to {n} images is {e}") from None
        if out.ndim != 2 or out.shape[0] != n or out.dtype.kind != "f":
            self._count(failed_requests=1)
            raise EndpointError(f"endpoint {self.url}: answered {out.dtype} {tuple(out.shape)} for {n} images; "
                                f"expected float scores [{n}, K]")
        self._count(answered_evaluations=n)
        return out

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4:
            raise ValueError(f"RemoteModel: images must be [n, C, H, W], got shape {tuple(images.shape)}")
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        chunks = [x[i:i + self.batch_size] for i in range(0, x.shape[0], self.batch_size)]
        if len(chunks) <= 1 or self.concurrency == 1:
            parts = [self._post(c) for c in chunks]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="zol2l-remote")
            futures = [self._pool.submit(self._post, c) for c in chunks]
            parts = [f.result() for f in futures]  # the first failure raises (later requests still finish)
        if not parts:
            return torch.zeros((0, 0), dtype=torch.float32, device=images.device)
        scores = parts[0] if len(parts) == 1 else np.concatenate(parts)
        out = torch.from_numpy(scores.astype(np.float32, copy=False))
        return out.to(images.device)


def _cause(e: BaseException) -> str:
    """The innermost reason of a urllib3 failure, in one line (``MaxRetryError`` wraps the last one)."""
    reason = getattr(e, "reason", None)
    text = str(reason if reason is not None else e)
    if "too many 429" in text or "429" in text:
        return "rate limited: too many 429 answers"
    if "too many 5" in text or "error responses" in text:
        return f"server errors: {text.split('(Caused by ')[-1].rstrip(')')}"
    return f"{type(reason or e).__name__}: {text}"[:300]


def endpoint_stats_json(stats: Dict[str, int], url: str) -> Dict[str, Any]:
    """What results.json records about the endpoint (JSON-able)."""
    return {"url": url, **{k: int(v) for k, v in stats.items()}}
