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

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)

# Recorded with numpy 2.4.6, Pillow 13.0.0, numba 0.68.1, scikit-learn 1.9.1 (digits), Python 3.11.
GOLDEN = {
    "fractals": "9e188b286e72b01b23a9c6d461da696a5621f30f7e5c7c59e30db694bfa15d21",
    "32px-ipmix-v1": "defc9335518bffdaf1f90d9c4c71052e2e5eea651a6f39f1e0d5cd12753f7447",
    "32px-ipmix-v3": "9b5b10d80592f3443a488a69add160ba94eed3c2e5006ad096d1aadc22b7dff5",
    "32px-augmix-v1": "b175f9c0c7adb600e690bfa539c0f988dbce7f7e26e8a8671bc5ce5ea7b915bd",
    "32px-augmix-v3": "aba1cb1d9db1bc5fa039c7d725dff73a366c2c241e4f2922619ab28a27fb4996",
    "32px-pixmix-v1": "03f26beac94981f66ade9dea51f29ec1958bc5433b42299100852896433c74de",
    "32px-pixmix-v3": "96efb98ef503d9ae0bf5b6b0b86d18c02286216b01a181a7dc588aa61a27482d",
    "32px-none-v1": "bffc264f5b56973e8f8244040033fa81596258b3c0a16c2ee555fda2bead7991",
    "224px-ipmix-v1": "dbf868bbbd1614054be037168c1f02e002a18daabf675baac99d2ebae430ffe7",
    "224px-ipmix-v3": "674a97eb4058c356ca712610be1bf034f7ad4b3993afac50c52f4ab64352f2e9",
    "224px-augmix-v1": "d5bda9c8e7361b4de1686fa715168e96d86eea75c86a51f831deef68902c5f61",
    "224px-augmix-v3": "ae709461ec2feabac3b804ed5dfeb1cf322e3b1c11066f67bc2819f1709c5498",
    "224px-pixmix-v1": "8e2798e215f8a41f4c912558f66a3ad7814c63731476e3e325b40b9bd78bc0f1",
    "224px-pixmix-v3": "188cd1a7ced63799bb2dbff8b18721a94b9188dc1d1ab343664bb7ef79d15da2",
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
