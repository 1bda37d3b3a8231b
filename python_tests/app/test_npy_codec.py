"""The .npy codec of the endpoint protocol (remote.encode_array / decode_array): its shortcut for plain arrays
writes numpy's bytes exactly and reads back what np.load reads; every other body goes to numpy."""
from __future__ import annotations

import io

import numpy as np
import pytest

from zol2l_ext.remote import _decode_plain, decode_array, encode_array


def _np_save(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


PLAIN = [np.random.default_rng(0).random((264, 1, 8, 8), dtype=np.float32), np.zeros(()), np.arange(5),
         np.zeros((0, 3), np.float16), np.ones((2, 3), bool), np.arange(6, dtype=np.uint8).reshape(2, 3),
         np.arange(-3, 3, dtype=np.int8), np.zeros((1,) * 30, np.float32), np.zeros((10**6, 0))]
OTHER = [np.zeros(7, ">f4"), np.zeros((3, 4)).T, np.zeros(2, np.complex64), np.array(["ab"])]


@pytest.mark.parametrize("a", PLAIN + OTHER, ids=lambda a: f"{a.dtype.str}{a.shape if a.ndim < 5 else a.ndim}")
def test_encode_writes_numpys_bytes_and_decode_reads_them_back(a):
    body = encode_array(a)
    assert body == _np_save(a)
    back = decode_array(body)
    assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)
    assert back.flags.writeable  # as np.load's: a server may hand it to torch.from_numpy
    assert (_decode_plain(body) is not None) == any(a is p for p in PLAIN)


def test_bodies_that_are_not_exactly_an_array_go_to_numpy():
    body = encode_array(PLAIN[0])
    for bad in (body[:-1], body[:50], body.replace(b"'<f4'", b"'<f9'"), b"", b"{}"):
        assert _decode_plain(bad) is None
        with pytest.raises(ValueError, match="not an .npy array"):
            decode_array(bad)
    # a body with bytes after the data: numpy reads the array and ignores them, as before the shortcut
    assert _decode_plain(body + b"x") is None
    assert np.array_equal(decode_array(body + b"x"), PLAIN[0])
