"""fractalgen: render fractal pictures (escape-time and IFS) and ingest a user's own
pictures into a mixing set. A library: no CLI and no torch in here.

Public entry points (imported on first use, so `import fractalgen` stays cheap):
    render_set, render_one, render_from_params, read_manifest  (fractalgen.render)
    set_metrics                                                 (fractalgen.metrics)
    set_stats, preview_sheet                                    (fractalgen.summary)
"""

from fractalgen.errors import BadImage, FractalgenError

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
