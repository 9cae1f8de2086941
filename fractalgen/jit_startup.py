"""Keep two optional-library probes out of Numba's start-up.

The first kernel a process loads makes Numba import its NumPy implementations, and two of
those modules probe for optional libraries our kernels never use:
- `numba.np.arraymath` imports `scipy.linalg` once, when it is first imported, to see whether
  BLAS is there. scipy.linalg pulls in `numpy.f2py` and more: about 0.2 CPU-seconds, a fifth
  of a build process's whole start-up. The answer only picks `np.vdot`'s implementation (a
  plain loop instead of BLAS; no kernel of ours calls it): `np.dot` and `np.linalg` in a
  kernel ask for SciPy themselves when they are compiled, and get it;
- `numba.core.typing.cffi_utils` imports cffi and its C parser, to type cffi functions.

`install()` adds an import hook that answers "not installed" to exactly those two imports
when they come from those two Numba probes, and to nothing else: SciPy and cffi import as
usual for every other caller in the same process, before or after.
"""

from __future__ import annotations

import os
import sys

# module the probe imports -> (file of the probing Numba module, function doing the import)
_PROBES = {
    "scipy.linalg": (os.path.join("numba", "np", "arraymath.py"), "_check_blas"),
    "cffi": (os.path.join("numba", "core", "typing", "cffi_utils.py"), "<module>"),
}


class _SkipNumbaProbes:
    """A meta path finder that refuses the probes' imports and defers on all others."""

    def find_spec(self, fullname, path=None, target=None):
        probe = _PROBES.get(fullname)
        if probe is None:
            return None
        filename, function = probe
        frame = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if code.co_name == function and code.co_filename.endswith(filename):
                raise ModuleNotFoundError(f"{fullname} is not probed by Numba here", name=fullname)
            frame = frame.f_back
        return None


def install() -> None:
    """Add the hook once (it costs nothing until one of the two modules is imported)."""
    if not any(isinstance(f, _SkipNumbaProbes) for f in sys.meta_path):
        sys.meta_path.insert(0, _SkipNumbaProbes())
