"""torch's CPU thread count for the duration of a command, restored afterwards."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None or 0: leave it as is), then restore it."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
