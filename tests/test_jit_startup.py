"""Numba's start-up probes for SciPy and cffi are skipped, and nothing else is (fractalgen.jit_startup)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernels  # its subprocess loads and compiles kernels

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = """
import sys
import numpy as np
import fractalgen  # installs the hook
from numba import njit
from ipmix_cli.augment import Augmenter, resolve_config

views = Augmenter(resolve_config(preset="cifar", recipe="none", views=1), None).make_views(
    np.zeros((2, 32, 32, 3), np.uint8), 1, 0, np.arange(2))
assert views.shape == (2, 1, 32, 32, 3)
import numba.np.arraymath
print("after a kernel:", "scipy.linalg" in sys.modules, "cffi" in sys.modules, numba.np.arraymath._HAVE_BLAS)

@njit
def dot(a, b):
    return np.dot(a, b)

a = np.arange(6.0).reshape(2, 3)
assert (dot(a, a.T) == a @ a.T).all()  # np.dot in a kernel still finds BLAS
import scipy.linalg
import cffi
print("later:", scipy.linalg.norm(np.full(4, 2.0)), cffi.FFI().sizeof("int"))
"""


def test_numba_starts_without_probing_scipy_and_cffi_which_still_import():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "after a kernel: False False False", lines
    assert lines[-1] == "later: 4.0 4", lines
