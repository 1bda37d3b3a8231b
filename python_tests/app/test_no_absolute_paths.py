"""No tracked file names a machine's own folders: results, docs and code record paths relative to the repository
(or to their output folder), so a checkout reads the same on every machine and leaks no build machine's layout.

Scans every file `git ls-files` lists (text files; binary ones such as PNGs and weights are skipped) for a word
that starts with a home, work or temporary folder followed by a path. System tools named in a documented
command (a compiler under /usr/bin, a toolkit under /usr/local) are advice, not a machine's record, and are not
matched. ALLOWED lists the few (file, text) pairs that may stay.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Folders of one machine or one user: the work tree, homes (Linux, macOS, root's) and temporary folders.
MACHINE_DIRS = ("work", "home", "Users", "root", "tmp", "var/tmp", "private/var/folders")
# A path starts a word: at the line start or after a space, a quote, a bracket, "=", ":" or ",", or right after
# a compiler flag such as -I or -L (-I/x/include). A slash inside a relative path (runs/tmp/x) or a URL does not.
PATH_RE = re.compile(r"(?:^|(?<=[\s\"'`(\[{<=:,])|(?<=[\s\"'`]-[A-Za-z])|(?<=^-[A-Za-z]))/(?:"
                     + "|".join(re.escape(d) for d in MACHINE_DIRS) + r")/[\w.$~-]")
ALLOWED: set[tuple[str, str]] = set()  # (repository path, the matched line stripped) that may stay


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"not a git checkout ({type(e).__name__})")
    return [p for p in out.stdout.decode().split("\0") if p]


def _text(path: str) -> str | None:
    try:
        with open(os.path.join(ROOT, path), "rb") as f:
            data = f.read()
    except OSError:  # listed but deleted in the work tree
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def absolute_machine_paths(text: str):
    """(line number, line) of every line of ``text`` that names a machine's folder."""
    for i, line in enumerate(text.splitlines(), 1):
        if PATH_RE.search(line):
            yield i, line


# "@" stands for the leading "/" so that this file does not name the folders it looks for
@pytest.mark.parametrize("line, hit", [
    ("-I@work/main/csrc -I$TORCH/include", True),
    ('"extension": "@home/me/zol2l/zol2l_ext/_C.so"', True),
    ("   -o @tmp/FILE.o", True),
    ("cd @root/zol2l && make", True),
    ("PYTHONPATH=@work/main:$PYTHONPATH", True),
    ("staged checkpoint ../shared/data/models/mnist_cnn.pt", False),
    ("CC=@usr/bin/gcc CXX=@usr/bin/g++ python setup.py build_ext", False),  # a system tool: advice
    ("runs/tmp/x.json and benchmarks/results/ops_cpu.json", False),
    ("https://example.org/home/index.html", False),
    ('assert "@tmp/" not in c', False),  # the folder's name alone, no path after it
])
def test_the_pattern_tells_machine_paths_from_relative_ones(line, hit):
    assert bool(PATH_RE.search(line.replace("@", "/"))) is hit


def test_no_tracked_file_names_a_machine_folder():
    found = []
    for path in _tracked_files():
        text = _text(path)
        if text is None:
            continue
        for n, line in absolute_machine_paths(text):
            if (path, line.strip()) not in ALLOWED:
                found.append(f"{path}:{n}: {line.strip()[:160]}")
    assert not found, ("absolute paths of a machine (write them relative to the repository root or to the "
                       "output folder):\n" + "\n".join(found))
