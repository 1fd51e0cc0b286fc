"""The build compiles the Cython fast path when it can and falls back cleanly when it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _copy_project(dest: Path) -> Path:
    shutil.copy(ROOT / "setup.py", dest / "setup.py")
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    return dest


def _which_impl(src: Path, **env: str) -> str:
    code = "from quota_gateway import fastpath; print(fastpath._impl.__name__)"
    environ = {k: v for k, v in os.environ.items() if k != "QG_NO_EXTENSIONS"}
    environ.update(env, PYTHONPATH=str(src))
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.slow
def test_build_without_a_compiler_falls_back_to_pure_python(tmp_path):
    project = _copy_project(tmp_path)
    result = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=project,
                            env={**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false"},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "using the pure-Python fast path" in result.stderr
    assert not list((project / "src" / "quota_gateway").glob("_fastpath*.so"))
    assert _which_impl(project / "src") == "quota_gateway._fastpath_py"


@pytest.mark.slow
def test_build_with_a_compiler_uses_the_compiled_module(tmp_path):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    project = _copy_project(tmp_path)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=project, check=True,
                   capture_output=True)
    assert list((project / "src" / "quota_gateway").glob("_fastpath*.so"))
    assert _which_impl(project / "src") == "quota_gateway._fastpath"
    assert _which_impl(project / "src", QG_NO_EXTENSIONS="1") == "quota_gateway._fastpath_py"
