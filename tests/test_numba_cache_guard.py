"""Stale Numba cache files are dropped module by module: a module's cache goes when its own code
or that of a project module it imports (transitively) changes, and stays otherwise."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fractalgen import numba_cache as guard

# A package shaped like ipmix_cli/augment: what each module imports decides what a change drops.
MODULES = {
    "rng.py": "from numba import njit\n\n@njit(cache=True)\ndef uniform(s):\n    return s * 0.5\n",
    "policy.py": "TABLE = (1, 2, 3)\n",
    "ops.py": "from numba import njit\nfrom pkg.sub.policy import TABLE\nfrom pkg.sub.rng import uniform\n",
    "pixel_ops.py": "from numba import njit\nfrom .rng import uniform\n",
    "chains.py": "from numba import njit\nfrom pkg.sub.ops import TABLE\nfrom pkg.sub import pixel_ops\n",
    "views.py": "from numba import njit\n\ndef crop():\n    from pkg.sub.chains import TABLE\n",
    "resample.py": "import numba\n",
    "notes.py": "from pkg.sub.chains import TABLE\n",
}
KERNELS = ("rng", "ops", "pixel_ops", "chains", "views", "resample")


@pytest.fixture
def package(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    folder = tmp_path / "pkg" / "sub"
    folder.mkdir(parents=True)
    for name in ("pkg/__init__.py", "pkg/sub/__init__.py"):
        (tmp_path / name).write_text("")
    for name, text in MODULES.items():
        (folder / name).write_text(text)
    (folder / "__pycache__").mkdir()
    return folder


def fill(folder):
    for stem in KERNELS:
        (folder / "__pycache__" / f"{stem}.kernel-7.py311.nbi").write_bytes(b"index")
        (folder / "__pycache__" / f"{stem}.kernel-7.py311.1.nbc").write_bytes(b"code")


def cached(folder):
    """The modules that still have both cache files."""
    return {stem for stem in KERNELS
            if all((folder / "__pycache__" / f"{stem}.kernel-7.py311.{ext}").exists() for ext in ("nbi", "1.nbc"))}


def edit(folder, name, text):
    (folder / name).write_text((folder / name).read_text() + text)
    guard.drop_stale_cache(folder, "pkg.sub")


def test_a_change_drops_the_module_and_what_imports_it_only(package):
    fill(package)
    guard.drop_stale_cache(package, "pkg.sub")  # nothing recorded yet: all dropped, keys written
    assert cached(package) == set()
    assert {p.name for p in (package / "__pycache__").glob("*.sha256")} == {f"{s}.kernels.sha256" for s in KERNELS}
    fill(package)
    guard.drop_stale_cache(package, "pkg.sub")
    assert cached(package) == set(KERNELS)

    edit(package, "chains.py", "X = 1\n")  # views imports chains (inside a function)
    assert cached(package) == set(KERNELS) - {"chains", "views"}
    fill(package)
    edit(package, "policy.py", "TABLE2 = TABLE\n")  # constants a kernel module reads
    assert cached(package) == {"rng", "pixel_ops", "resample"}
    fill(package)
    edit(package, "rng.py", "Y = 2\n")  # everything that uses rng, through relative imports too
    assert cached(package) == {"resample"}
    fill(package)
    edit(package, "notes.py", "Z = 3\n")  # a module no kernel module imports
    assert cached(package) == set(KERNELS)


def test_comments_and_blank_lines_change_nothing_compiled(package):
    guard.drop_stale_cache(package, "pkg.sub")
    fill(package)
    (package / "__pycache__" / "unrelated.pyc").write_bytes(b"x")
    edit(package, "rng.py", "\n\n# a note on the generator\n")
    edit(package, "ops.py", "# another\n")
    assert cached(package) == set(KERNELS) and (package / "__pycache__" / "unrelated.pyc").exists()
    edit(package, "ops.py", "'''a docstring-like string is code'''\n")
    assert cached(package) == set(KERNELS) - {"ops", "chains", "views"}


def test_numba_cache_dir_is_where_numba_puts_the_files(package, monkeypatch, tmp_path):
    from numba.core.caching import _CacheLocator

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba-cache"))
    expected = tmp_path / "numba-cache" / _CacheLocator.get_suitable_cache_subpath(str(package / "rng.py"))
    assert guard.cache_dir(package) == expected
    guard.drop_stale_cache(package, "pkg.sub")
    assert (expected / "rng.kernels.sha256").is_file()


CALLER = """from numba import njit
from kpkg.callee import value


@njit(cache=True)
def twice():
    return 2 * value()
"""


@pytest.mark.kernels
def test_real_numba_never_serves_stale_inlined_code(tmp_path):
    """Two processes, real Numba caches: after the callee's module changes, the caller's cached
    machine code (which holds the old callee) is not used; after a comment-only edit it is."""
    package = tmp_path / "kpkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from pathlib import Path\nfrom fractalgen.numba_cache import drop_stale_cache\n"
        "drop_stale_cache(Path(__file__).resolve().parent, 'kpkg')\n")
    (package / "callee.py").write_text("from numba import njit\n\n\n@njit(cache=True, inline='always')\n"
                                       "def value():\n    return 1\n")
    (package / "caller.py").write_text(CALLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    env.pop("NUMBA_CACHE_DIR", None)

    def run():
        out = subprocess.run([sys.executable, "-c", "from kpkg.caller import twice; print(twice())"],
                             env=env, capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert run() == 2
    caller_code = next((package / "__pycache__").glob("caller.twice-*.nbc"))
    (package / "callee.py").write_text((package / "callee.py").read_text().replace("return 1", "return 21"))
    assert run() == 42
    kept = caller_code.stat().st_mtime_ns
    (package / "callee.py").write_text("# the callee, commented\n" + (package / "callee.py").read_text())
    assert run() == 42
    assert caller_code.stat().st_mtime_ns == kept  # the caller's cache was reused, not rebuilt



@pytest.mark.parametrize("package,modules", [
    ("fractalgen", ("escape", "ifs", "splitmix")),
    ("ipmix_cli.augment", ("rng", "ops", "chains", "views")),
    ("ipmix_cli.eval.corruptions", ("kernels",)),
])
def test_importing_a_package_with_kernels_records_their_keys(package, modules, tmp_path):
    """Each package with Numba kernels runs the guard when it is imported, so a stale cache is
    dropped before any of its kernels loads."""
    import importlib

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-c", f"import {package}"], env=env, check=True)
    folder = Path(importlib.import_module(package).__file__).resolve().parent
    root = folder.parents[len(package.split(".")) - 1]
    graph = guard._Graph(root)
    stamps = Path(env["NUMBA_CACHE_DIR"])
    for module in modules:
        stamp = next(stamps.glob(f"*/{module}.kernels.sha256"))
        assert stamp.read_text() == graph.key(folder / f"{module}.py"), module


def test_the_ifs_kernels_key_covers_the_generator_they_call(tmp_path):
    # A copy of fractalgen: an edit to splitmix.py changes the IFS kernels' key (their cache goes).
    import shutil

    import fractalgen

    copy = tmp_path / "fractalgen"
    shutil.copytree(Path(fractalgen.__file__).resolve().parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = guard._Graph(tmp_path).key(copy / "ifs.py")
    (copy / "splitmix.py").write_text((copy / "splitmix.py").read_text() + "\nEXTRA = 1\n")
    after = guard._Graph(tmp_path).key(copy / "ifs.py")
    assert after != before
    (copy / "escape.py").write_text((copy / "escape.py").read_text() + "\nEXTRA = 1\n")
    assert guard._Graph(tmp_path).key(copy / "ifs.py") == after  # a module ifs.py does not import


def test_sources_are_parsed_again_only_when_their_stamp_changes(package, monkeypatch):
    import ast

    parsed = []
    real_parse = ast.parse

    def counting_parse(source, filename="<unknown>", *args, **kwargs):
        parsed.append(Path(filename).name)
        return real_parse(source, filename, *args, **kwargs)

    monkeypatch.setattr(guard.ast, "parse", counting_parse)
    guard.drop_stale_cache(package, "pkg.sub")
    assert set(MODULES) - {"notes.py"} <= set(parsed)  # first start: every module is read
    parsed.clear()
    fill(package)
    guard.drop_stale_cache(package, "pkg.sub")
    assert parsed == [] and cached(package) == set(KERNELS)  # then the recorded facts serve
    edit(package, "chains.py", "X = 1\n")
    assert parsed == ["chains.py"] and cached(package) == set(KERNELS) - {"chains", "views"}
    # a recorded file that cannot be read back is parsed again, with the same outcome
    (package / "__pycache__" / guard.MEMO).write_text("not json")
    parsed.clear()
    fill(package)
    guard.drop_stale_cache(package, "pkg.sub")
    assert "chains.py" in parsed and cached(package) == set(KERNELS)
