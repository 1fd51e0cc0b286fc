"""The hot path's integration tests once more, with the pure-Python fast path (QG_NO_EXTENSIONS=1):
the twin must give the same answers on the wire as the compiled module the main run uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from quota_gateway import fastpath

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not fastpath.COMPILED, reason="this run already uses the pure-Python fast path")
def test_validate_suite_passes_with_the_pure_python_fast_path():
    env = {**os.environ, "QG_NO_EXTENSIONS": "1"}
    check = subprocess.run([sys.executable, "-c", "from quota_gateway import fastpath; print(fastpath.COMPILED)"],
                           env=env, capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "False"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(TESTS / "apilicense" / "test_validate.py")],
                         env=env, cwd=TESTS.parent, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
