"""The layers of the code base, as its imports show them (docs/architecture.md draws them).

A module may import from its own sub-package and from the sub-packages listed for it here; every
import counts, including those inside functions. `fractalgen` is a library of its own and knows
nothing of ipmix_cli; only `ipmix_cli.cli` imports click.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ALLOWED = {
    "common": set(),
    "data": {"common", "shardformat"},
    "augment": {"common"},
    "shardformat": {"common"},
    "shards": {"common", "data", "augment", "shardformat"},
    "stream": {"common", "data", "shardformat"},
    "train": {"common", "data", "shardformat", "stream"},
    "eval": {"common", "data", "shardformat", "stream", "train"},
    "bench": {"common", "data", "augment", "shardformat", "shards", "stream", "train", "eval"},
}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            if node.module == "ipmix_cli":  # `from ipmix_cli import x` names sub-package x
                for alias in node.names:
                    yield node.lineno, f"ipmix_cli.{alias.name}"


def layer_violations(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / "ipmix_cli").rglob("*.py")):
        parts = path.relative_to(root / "ipmix_cli").parts
        if len(parts) == 1:  # ipmix_cli/__init__.py and __main__.py
            continue
        layer = parts[0]
        for line, name in imported_modules(path):
            pieces = name.split(".")
            if name == "click" or name.startswith("click."):
                if layer != "cli":
                    found.append(f"{path.relative_to(root)}:{line} imports click (only ipmix_cli.cli may)")
                continue
            if pieces[0] != "ipmix_cli" or len(pieces) < 2 or pieces[1] == layer or layer == "cli":
                continue
            if pieces[1] not in ALLOWED.get(layer, set()):
                found.append(f"{path.relative_to(root)}:{line} imports {name} ({layer} may import "
                             f"{', '.join(sorted(ALLOWED.get(layer, ()))) or 'no other sub-package'})")
    for path in sorted((root / "fractalgen").rglob("*.py")):
        for line, name in imported_modules(path):
            if name.split(".")[0] in ("ipmix_cli", "click"):
                found.append(f"{path.relative_to(root)}:{line} imports {name} (fractalgen stands alone)")
    return found


def test_every_sub_package_has_a_layer():
    packages = {p.parent.name for p in (ROOT / "ipmix_cli").glob("*/__init__.py")}
    assert packages - set(ALLOWED) - {"cli"} == set()


def test_imports_follow_the_layers():
    assert layer_violations() == []


def test_the_rules_catch_bad_imports(tmp_path):
    # The checker itself, on a small tree with one import of each kind that breaks a rule.
    for folder, text in (("ipmix_cli/train", "def f():\n    from ipmix_cli.eval import evaluate\n    import click\n"),
                         ("ipmix_cli/common", "from ipmix_cli import shards\n"),
                         ("ipmix_cli/cli", "import click\nfrom ipmix_cli.eval import evaluate\n"),
                         ("fractalgen", "from ipmix_cli.common.errors import IpmixError\n")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "m.py").write_text(text)
    found = layer_violations(tmp_path)
    assert len(found) == 4, found
    assert [v.split(":")[0] for v in found] == ["ipmix_cli/common/m.py", "ipmix_cli/train/m.py",
                                                "ipmix_cli/train/m.py", "fractalgen/m.py"]
    assert "ipmix_cli.shards" in found[0] and "ipmix_cli.eval" in found[1] and "click" in found[2]
