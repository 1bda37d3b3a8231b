"""pytest configuration of the fused-op tests: makes python_tests/testing.py importable and reports the setup."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import testing  # noqa: E402


def pytest_report_header(config):
    cuda = "CUDA tests run" if not testing.CUDA_SKIP_REASON else f"CUDA tests skipped ({testing.CUDA_SKIP_REASON})"
    return f"zol2l_ext fused ops: torch {torch.__version__}, {torch.get_num_threads()} threads; {cuda}"
