"""pytest configuration of python_tests/{ops,zo,app,reproduce}: makes the shared helpers (testing.py, zo_testing.py)
importable, gives every test its own empty user folder
($ZOL2L_USER_DIR: exported learned optimizers and shipped tunings) and reports the setup."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import testing  # noqa: E402


def pytest_report_header(config):
    cuda = "CUDA tests run" if not testing.CUDA_SKIP_REASON else f"CUDA tests skipped ({testing.CUDA_SKIP_REASON})"
    return f"zol2l_ext fused ops: torch {torch.__version__}, {torch.get_num_threads()} threads; {cuda}"


@pytest.fixture(autouse=True)
def _own_user_folder(tmp_path_factory, monkeypatch):
    """Your exports and tunings (`zol2l train --export`, `zol2l tune --ship`) come before the package's files of
    the same name: no test may see a developer's own, or another test's."""
    monkeypatch.setenv("ZOL2L_USER_DIR", str(tmp_path_factory.mktemp("user")))
