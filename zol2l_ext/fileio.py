"""Atomic file writes: a temporary file beside the target, then os.replace, so that an interrupted run never
leaves a half-written results or log file behind (the temporary file is removed on failure); and the numbers
that go into the JSON files (`json_number`: None where a value is not finite, which strict JSON cannot hold)."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_write_file", "atomic_torch_save", "load_torch_file",
           "first_line", "check_output_folder", "OutputFolderError", "json_number", "json_numbers"]


def json_number(x: Any, nd: Optional[int] = None, sig: Optional[int] = None) -> Optional[float]:
    """``x`` as a JSON number: None for None, NaN and inf; rounded to ``nd`` decimals, or to ``sig`` significant
    digits (files stay short where small values must keep their precision), when given."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    if sig is not None:
        return float(f"{x:.{sig}g}")
    return round(x, nd) if nd is not None else x


def json_numbers(values: Any, nd: Optional[int] = None, sig: Optional[int] = None) -> list:
    """`json_number` of every value of a tensor (taken to the CPU in float64), an array or a list, flattened."""
    if hasattr(values, "detach"):  # a torch tensor (fileio does not import torch: most writers need no tensors)
        values = values.detach().double().cpu().numpy()
    return [json_number(v, nd, sig) for v in np.asarray(values, dtype=float).reshape(-1)]


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` to ``path`` atomically (creating its folder); returns the path."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_write_file(path, write)


def atomic_write_file(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """``write(tmp)`` (e.g. a figure's savefig) into a temporary file beside ``path`` with the same extension, then
    rename it to ``path``; a write that fails (a full disk) leaves no half file, and its OSError becomes an
    `OutputFolderError` naming the file. Returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext}"  # the extension kept: savefig picks the format from it
    try:
        if folder:
            os.makedirs(folder, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputFolderError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_json(obj: Any, path: str | os.PathLike) -> str:
    """``obj`` as indented JSON (non-finite floats are an error: pass None instead), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save(obj)`` written atomically (see `atomic_write_file`): a kill or a full disk mid-write leaves the
    previous file, never half of one."""
    import torch

    def write(tmp: str) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch's zip writer reports a failed write (ENOSPC, EFBIG) as a RuntimeError
            raise OSError(first_line(e)) from None

    return atomic_write_file(path, write)


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (torch's messages on a damaged file run over many lines)."""
    return (str(e).strip().splitlines() or [""])[0][:limit]


def load_torch_file(path: str | os.PathLike, what: str, map_location: Any = "cpu", hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)``; a truncated, corrupt or foreign file raises a one-line ValueError
    naming it and ``what`` it should have been (``hint`` appended), a missing one FileNotFoundError."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many kinds on a damaged file: one line for all
        raise ValueError(f"{path}: not a readable {what} ({type(e).__name__}: {first_line(e)}){hint}") from None


class OutputFolderError(ValueError):
    """The output folder cannot be created or written (said before a run spends anything)."""


def check_output_folder(path: str | os.PathLike) -> str:
    """Create ``path`` if needed and write a probe file there, so that a folder that cannot take the outputs
    (read-only, a file in the way, no permission) is refused in one line before the work starts."""
    path = os.fspath(path)
    probe = os.path.join(path, f".write-probe{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
    except OSError as e:
        raise OutputFolderError(f"cannot write the output folder {path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(probe):
            os.remove(probe)
    return path


def portable_path(path: Optional[str | os.PathLike], start: str | os.PathLike = ".",
                  far: str = "absolute") -> Optional[str]:
    """``path`` as a results file records it, so that no machine's absolute folders end up in files people share
    or commit: relative to ``start`` (the current folder) with "/" separators when inside it or beside it (a data
    root next to the checkout becomes ../shared/data/...); a path farther away stays absolute (``far``
    "absolute": a user's own file stays identifiable) or keeps its last component only (``far`` "name": for
    files that go into the repository, such as benchmark results)."""
    if path is None:
        return None
    path = os.path.abspath(os.fspath(path))
    try:
        rel = os.path.relpath(path, os.path.abspath(start)).replace(os.sep, "/")
    except ValueError:  # another drive (Windows): no relative path exists
        rel = "../../"
    if rel == "../.." or rel.startswith("../../"):
        return os.path.basename(path) if far == "name" else path
    return rel


def portable_argv(argv) -> list[str]:
    """A recorded command line: the absolute paths among ``argv`` (also as --flag=PATH) made `portable_path`."""
    def one(a: str) -> str:
        flag, eq, value = a.partition("=")
        if eq and flag.startswith("-") and os.path.isabs(value):
            return f"{flag}={portable_path(value)}"
        return portable_path(a) if os.path.isabs(a) else a
    return [one(str(a)) for a in argv]
