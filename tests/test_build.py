"""Build-level behaviour: what a user sees without a compiled extension."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pyattn


def test_import_without_extension_says_how_to_build(tmp_path):
    # A copy of the Python package with no compiled pyattn._C next to it.
    src = os.path.dirname(pyattn.__file__)
    shutil.copytree(src, tmp_path / "pyattn", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYATTN_JIT",)}
    env["PYTHONPATH"] = str(tmp_path)
    # An editable install of the checkout would still resolve pyattn._C: drop its finder.
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
            "if '__editable__' not in getattr(f, '__module__', '')]; import pyattn")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "pip install --no-build-isolation -e ." in proc.stderr
    assert "PYATTN_JIT=1" in proc.stderr
