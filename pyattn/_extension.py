"""Loads the compiled extension ``pyattn._C`` (or, with PYATTN_JIT=1, builds it with ninja).

Importing it registers the ``torch.ops.pyattn.*`` ops.
"""

from __future__ import annotations

import importlib
import os

_BUILD_HELP = (
    "pyattn's compiled extension (pyattn._C) is not built. From the source checkout run\n"
    "    pip install --no-build-isolation -e .\n"
    "(torch must be installed first), or set PYATTN_JIT=1 to compile it on import with\n"
    "torch.utils.cpp_extension.load (needs ninja and a C++ compiler)."
)


def load():
    if os.environ.get("PYATTN_JIT", "").strip() in ("1", "true", "yes"):
        from pyattn import jit

        return jit.load()
    try:
        return importlib.import_module("pyattn._C")
    except ImportError as e:
        if getattr(e, "name", None) != "pyattn._C":
            raise  # the extension exists but could not load (e.g. a torch ABI mismatch): show why
        raise ImportError(_BUILD_HELP) from e
