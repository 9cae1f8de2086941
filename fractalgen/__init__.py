"""fractalgen: render fractal pictures (escape-time and IFS) and ingest a user's own
pictures into a mixing set. A library: no CLI and no torch in here.

Public entry points (imported on first use, so `import fractalgen` stays cheap):
    render_set, render_one, render_from_params, read_manifest  (fractalgen.render)
    set_metrics                                                 (fractalgen.metrics)
    set_stats, preview_sheet                                    (fractalgen.summary)
"""

from pathlib import Path

from fractalgen import jit_startup
from fractalgen.errors import BadImage, FractalgenError
from fractalgen.numba_cache import drop_stale_cache

jit_startup.install()  # before any kernel loads: Numba's first load would probe SciPy and cffi

# Before any kernel module loads: ifs.py's cached kernels hold splitmix.py's code compiled in.
drop_stale_cache(Path(__file__).resolve().parent, __name__)

_LAZY = {
    "render_set": "fractalgen.render",
    "render_one": "fractalgen.render",
    "render_from_params": "fractalgen.render",
    "read_manifest": "fractalgen.render",
    "set_metrics": "fractalgen.metrics",
    "set_stats": "fractalgen.summary",
    "preview_sheet": "fractalgen.summary",
}

__all__ = ["BadImage", "FractalgenError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fractalgen' has no attribute {name!r}")
