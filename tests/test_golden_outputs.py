"""Golden digests: the bytes ipmix writes for a fixed set of commands.

Refactors and speed work must not change a single output byte. Each case renders or builds
something small and compares the sha256 of its output files (contents only, in sorted path
order, so a renamed shard file with the same bytes still matches) with the digest recorded here.

A change that alters bytes on purpose (a recipe fixed to follow its authors' code, say) updates
exactly the affected lines below in the same commit and says so in the commit message. Run
`python -m pytest tests/test_golden_outputs.py` and the failure message prints the new digest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from _shards_build_helpers import write_image_folder, write_mixing_folder

# Recorded with numpy 2.4.6, Pillow 13.0.0, numba 0.68.1, scikit-learn 1.9.1 (digits), Python 3.11.
GOLDEN = {
    "fractals": "9e188b286e72b01b23a9c6d461da696a5621f30f7e5c7c59e30db694bfa15d21",
    "32px-ipmix-v1": "defc9335518bffdaf1f90d9c4c71052e2e5eea651a6f39f1e0d5cd12753f7447",
    "32px-ipmix-v3": "9b5b10d80592f3443a488a69add160ba94eed3c2e5006ad096d1aadc22b7dff5",
    "32px-augmix-v1": "6e5d115823475d72a9421267fc40f2c9a47b3699162902ebffd902bed7e0b18c",
    "32px-augmix-v3": "12c63b79194f9f3c983bde9475dfdb5316b0162fa3f5a34375509f0785df4cca",
    "32px-pixmix-v1": "d2ed3e271be36110ca6d9a78298d520c9dc13c813e26e02670843a74fcfff511",
    "32px-pixmix-v3": "21f7002030a330a462e243e289bb6a1e6b60a2ec2ec82c0d5fb01333d94bfcfa",
    "32px-none-v1": "bffc264f5b56973e8f8244040033fa81596258b3c0a16c2ee555fda2bead7991",
    "224px-ipmix-v1": "dbf868bbbd1614054be037168c1f02e002a18daabf675baac99d2ebae430ffe7",
    "224px-ipmix-v3": "674a97eb4058c356ca712610be1bf034f7ad4b3993afac50c52f4ab64352f2e9",
    "224px-augmix-v1": "94c133ae0deb1819551768f7523f50d3e38eff985c38594d4464fae6008de903",
    "224px-augmix-v3": "298ee739cd000bd39da52dac470ac2be02cc3b34344961a10e1c3608be6fc2aa",
    "224px-pixmix-v1": "19918cef5e1ef707aac89e3aa66914d67ef346edcfa0c68aaa4ba1007fccf0de",
    "224px-pixmix-v3": "9843f9b181dc25834a80b8f391682e2b2adeee6bdf228b4bb7dd7c4ffe013548",
    "224px-none-v1": "1ef3dd72bc02e865f38e4f093ca48d384bad7170c579fc616fa8ffdaab7a58fd",
}

# every recipe with one view and the JSD triple (`none` makes no augmented views: one view only)
CASES = [(r, v) for r in ("ipmix", "augmix", "pixmix") for v in (1, 3)] + [("none", 1)]


def tree_digest(root: Path, pattern: str) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in Path(root).rglob(pattern) if p.is_file())
    assert files, f"no {pattern} under {root}"
    for p in files:
        h.update(p.read_bytes())
    return h.hexdigest()


def check(name: str, digest: str) -> None:
    assert digest == GOLDEN[name], f"output bytes of {name!r} changed: now {digest}"


@pytest.fixture(scope="module")
def fractal_set(tmp_path_factory):
    from fractalgen.render import render_set

    out = tmp_path_factory.mktemp("golden") / "mixing"
    render_set(out, escape=3, ifs=3, size=64, seed=11)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden-photos")
    folder = write_image_folder(root / "photos", per_class=3, size=236)
    mix = write_mixing_folder(root / "mix224", n=3, size=260)
    return folder, mix


def test_fractal_set_bytes(fractal_set):
    check("fractals", tree_digest(fractal_set, "*.png"))


@pytest.mark.parametrize("recipe,views", CASES)
def test_32px_build_bytes(tmp_path, fractal_set, recipe, views):
    from ipmix_cli.shards import build_shards

    out = tmp_path / "shards"
    build_shards(source="digits:test", fractals=fractal_set, out=out, epochs=2, shards=3, seed=7,
                 recipe=recipe, views=views, format="npy", progress=False)
    check(f"32px-{recipe}-v{views}", tree_digest(out, "*.tar"))


@pytest.mark.parametrize("recipe,views", CASES)
def test_224px_build_bytes(tmp_path, photos, recipe, views):
    from ipmix_cli.shards import build_shards

    folder, mix = photos
    out = tmp_path / "shards"
    build_shards(source=str(folder), fractals=mix, out=out, epochs=1, shards=2, seed=7, preset="imagenet",
                 recipe=recipe, views=views, progress=False)
    check(f"224px-{recipe}-v{views}", tree_digest(out, "*.tar"))
