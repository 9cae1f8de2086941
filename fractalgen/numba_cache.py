"""Drop stale Numba cache files of a package's kernels, module by module.

Numba keys a cached kernel on its own source file only: after an edit to `ops.py`, the cached
`chains.py` kernels would still hold the old op code compiled in (and after an edit to
`fractalgen/splitmix.py`, the cached IFS kernels the old generator), and two processes could
produce different bytes for the same seed. Each package with kernels calls `drop_stale_cache`
from its `__init__` (fractalgen, ipmix_cli.augment, ipmix_cli.eval.corruptions). Before the kernels are imported, this gives each
module a key made of its own code and that of every project module it imports, transitively,
and drops the module's cache files when the key recorded beside them differs. Editing
`chains.py` thus drops `chains` and `views` (which calls it) but keeps `rng` and `ops`.

A module's code is read as its syntax tree without positions, so an edit to comments or blank
lines changes no key: the compiled code of the modules that import it cannot differ. (Numba
itself still recompiles the edited module, whose file stamp changed.)

Parsing every module costs a process about 50 ms at each start, so what a module's source
gives (its digest, its imports, whether it has kernels) is kept beside the cache files under
the file's stamp (modification time in ns and size), the stamp Numba itself trusts for a
module's own kernels; a source is parsed again only when its stamp changes.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

MEMO = "kernels-sources.json"  # in the cache folder: rel path -> [mtime_ns, size, digest, imports, kernels]

def _module_file(root: Path, name: str) -> Path | None:
    """The project file that defines module `name` (dotted), or None outside `root`."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(tree: ast.Module, package: str) -> set[str]:
    """Dotted names of the modules, and of the possible submodules, a module imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


class _Graph:
    """The project modules and their code digests, read once per call (or from `memo`)."""

    def __init__(self, root: Path, memo: dict | None = None):
        self.root = root
        self.memo = memo if memo is not None else {}
        self.memo_changed = False
        self._digest: dict[Path, str] = {}
        self._imports: dict[Path, set[Path]] = {}
        self._kernels: dict[Path, bool] = {}

    def _read(self, path: Path) -> None:
        rel = path.relative_to(self.root).as_posix()
        st = path.stat()
        stamp = [st.st_mtime_ns, st.st_size]
        known = self.memo.get(rel)
        if isinstance(known, list) and len(known) == 5 and known[:2] == stamp:
            self._digest[path], imports, self._kernels[path] = known[2], known[3], known[4]
            self._imports[path] = {self.root / r for r in imports}
            return
        tree = ast.parse(path.read_bytes(), filename=str(path))
        self._digest[path] = hashlib.sha256(ast.dump(tree).encode()).hexdigest()
        package = ".".join(path.relative_to(self.root).with_suffix("").parts[:-1])
        names = _imported_names(tree, package)
        found = (_module_file(self.root, name) for name in names)
        self._imports[path] = {f for f in found if f is not None and f != path}
        self._kernels[path] = any(name == "numba" or name.startswith("numba.") for name in names)
        self.memo[rel] = [*stamp, self._digest[path],
                          sorted(f.relative_to(self.root).as_posix() for f in self._imports[path]), self._kernels[path]]
        self.memo_changed = True

    def has_kernels(self, path: Path) -> bool:
        """Whether the module imports numba (only such modules have cache files to guard)."""
        if path not in self._kernels:
            self._read(path)
        return self._kernels[path]

    def key(self, path: Path) -> str:
        """A digest of the code of `path` and of every project module it imports, transitively."""
        seen, todo = set(), [path]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            if current not in self._digest:
                self._read(current)
            todo.extend(self._imports[current])
        h = hashlib.sha256()
        for module in sorted(seen):
            h.update(f"{module.relative_to(self.root).as_posix()}\0{self._digest[module]}\0".encode())
        return h.hexdigest()


def cache_dir(package_dir: Path) -> Path:
    """Where Numba caches the kernels of `package_dir`: NUMBA_CACHE_DIR/<folder>_<sha1 of its
    path> when that variable is set (Numba's own naming), else the package's __pycache__."""
    custom = os.environ.get("NUMBA_CACHE_DIR")
    if not custom:
        return package_dir / "__pycache__"
    folder = os.path.abspath(package_dir)
    return Path(custom) / f"{os.path.basename(folder)}_{hashlib.sha1(folder.encode()).hexdigest()}"


def drop_stale_cache(package_dir: Path, package: str) -> None:
    """Drop the cache files of each module of `package_dir` whose key changed since recorded."""
    root = package_dir.parents[len(package.split(".")) - 1]
    cache = cache_dir(package_dir)
    graph = _Graph(root, _load_memo(cache / MEMO))
    try:
        modules = [path for path in sorted(package_dir.glob("*.py")) if graph.has_kernels(path)]
        keys = {path.stem: graph.key(path) for path in modules}
    except (OSError, SyntaxError, ValueError):
        return  # an unreadable or broken source: its import fails with the real error
    if graph.memo_changed:
        _save_memo(cache, graph.memo)
    for stem, key in keys.items():
        stamp = cache / f"{stem}.kernels.sha256"
        try:
            if stamp.read_text() == key:
                continue
        except OSError:
            pass
        try:
            for path in list(cache.glob(f"{stem}.*.nbi")) + list(cache.glob(f"{stem}.*.nbc")):
                try:
                    path.unlink()
                except OSError:
                    pass
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f".{stem}.kernels.{os.getpid()}.tmp"
            tmp.write_text(key)
            os.replace(tmp, stamp)
        except OSError:
            pass  # an unwritable cache folder: Numba then caches elsewhere or not at all


def _load_memo(path: Path) -> dict:
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _save_memo(cache: Path, memo: dict) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{MEMO}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(memo, sort_keys=True))
        os.replace(tmp, cache / MEMO)
    except OSError:
        pass  # an unwritable cache folder: the sources are parsed at every start
