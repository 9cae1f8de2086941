"""The mixing bank's picture listing (class sub-folders) and its cache folder (never an input)."""

import contextlib
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from ipmix_cli.augment import MixingBank, resolve_config
from ipmix_cli.common.cachedir import default_cache_dir
from ipmix_cli.common.errors import IpmixError
from tests._augment_helpers import make_mixing_folder

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@contextlib.contextmanager
def read_only(folder):
    """`folder` made truly read-only: a read-only bind mount for root (who ignores permission
    bits), the write bits removed for anyone else."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
    else:
        for p in [folder, *folder.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")  # the folder really refuses writes
        yield folder
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


def test_default_cache_dir_honours_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ipmix"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "ipmix"


def test_bank_cache_goes_to_the_cache_dir_never_into_the_folder(tmp_path, monkeypatch):
    mix = make_mixing_folder(tmp_path / "mix", n=3)
    before = _tree(mix)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    bank = MixingBank.from_folder(mix, resolve_config("cifar"))
    assert _tree(mix) == before
    assert bank.path.startswith(str(tmp_path / "xdg" / "ipmix" / "bank-"))
    described = bank.describe()
    assert bank.path in described and f"({os.path.getsize(bank.path) / 1e6:.1f} MB)" in described
    given = MixingBank.from_folder(mix, resolve_config("cifar"), cache_dir=tmp_path / "mine")
    assert given.path.startswith(str(tmp_path / "mine" / "bank-")) and _tree(mix) == before
    assert np.array_equal(given.pixels, bank.pixels)
    with pytest.raises(IpmixError, match="inside the mixing folder"):
        MixingBank.from_folder(mix, resolve_config("cifar"), cache_dir=mix / "cache")
    assert _tree(mix) == before


def test_a_read_only_mixing_folder_builds_a_cached_bank(tmp_path):
    mix = make_mixing_folder(tmp_path / "mix", n=3)
    expected = MixingBank.from_folder(mix, resolve_config("cifar"), cache_dir=tmp_path / "first").pixels
    with read_only(mix):
        bank = MixingBank.from_folder(mix, resolve_config("cifar"), cache_dir=tmp_path / "cache")
        assert bank.path is not None and bank.path.startswith(str(tmp_path / "cache"))
        assert np.array_equal(bank.pixels, expected)
        assert len(pickle.dumps(bank)) < 2000  # shared with workers as a file, not pixels


def test_an_unwritable_cache_dir_keeps_the_bank_in_memory(tmp_path):
    mix = make_mixing_folder(tmp_path / "mix", n=2)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    bank = MixingBank.from_folder(mix, resolve_config("cifar"), cache_dir=blocked)
    assert bank.path is None and "kept in memory" in bank.describe() and str(blocked) in bank.describe()
    clone = pickle.loads(pickle.dumps(bank))
    assert np.array_equal(clone.pixels, bank.pixels)


def test_class_sub_folders_are_read_in_imagefolder_order(tmp_path):
    flat = make_mixing_folder(tmp_path / "flat", n=4)
    classes = tmp_path / "classes"
    # class "a" holds pic-02, pic-03; class "b" pic-00, pic-01: ImageFolder order is a/*, b/*
    for name, cls in (("pic-00.png", "b"), ("pic-01.png", "b"), ("pic-02.png", "a"), ("pic-03.png", "a")):
        (classes / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(flat / name, classes / cls / name)
    (classes / ".hidden").mkdir()
    shutil.copy(flat / "pic-00.png", classes / ".hidden" / "pic-09.png")
    cfg = resolve_config("cifar")
    flat_bank = MixingBank.from_folder(flat, cfg, cache_dir=tmp_path / "cache")
    nested = MixingBank.from_folder(classes, cfg, cache_dir=tmp_path / "cache")
    assert len(nested) == 4
    assert np.array_equal(nested.pixels, flat_bank.pixels[[2, 3, 0, 1]])


def test_a_folder_without_pictures_anywhere_is_refused(tmp_path):
    (tmp_path / "mix" / "a").mkdir(parents=True)
    (tmp_path / "mix" / "a" / "notes.txt").write_text("x")
    Image.new("RGB", (8, 8)).save(tmp_path / "mix" / ".thumb.png")
    with pytest.raises(IpmixError, match="holds no pictures"):
        MixingBank.from_folder(tmp_path / "mix", resolve_config("cifar"), cache_dir=tmp_path / "cache")


def test_a_build_reads_a_read_only_class_folder_root_and_says_where_its_cache_is(tmp_path, capsys):
    from ipmix_cli.cli.main import run

    flat = make_mixing_folder(tmp_path / "flat", n=4)
    root = tmp_path / "fractals"  # the layout of the PixMix/IPMix fractal downloads
    for i, name in enumerate(sorted(p.name for p in flat.iterdir())):
        (root / f"class-{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(flat / name, root / f"class-{i % 2}" / name)
    reordered = tmp_path / "reordered"  # the same pictures, flat, in ImageFolder order
    reordered.mkdir()
    for j, p in enumerate(sorted(root.rglob("*.png"), key=lambda p: p.relative_to(root).parts)):
        shutil.copy(p, reordered / f"{j:02d}.png")
    before = _tree(root)
    cache = tmp_path / "cache"
    with read_only(root):
        assert run(["shards", "build", "--source", "digits:test", "--fractals", str(root), "--cache-dir",
                    str(cache), "--out", str(tmp_path / "nested"), "--shards", "1", "--format", "npy"]) == 0
    err = capsys.readouterr().err
    assert f"mixing bank: 4 pictures at 36 px, cached in {cache}" in err
    assert _tree(root) == before
    assert run(["shards", "build", "--source", "digits:test", "--fractals", str(reordered), "--cache-dir",
                str(cache), "--out", str(tmp_path / "flat-build"), "--shards", "1", "--format", "npy"]) == 0
    tars = sorted((tmp_path / "nested").rglob("*.tar"))
    assert tars and [p.relative_to(tmp_path / "nested") for p in tars] == \
        [p.relative_to(tmp_path / "flat-build") for p in sorted((tmp_path / "flat-build").rglob("*.tar"))]
    for tar in tars:
        assert tar.read_bytes() == (tmp_path / "flat-build" / tar.relative_to(tmp_path / "nested")).read_bytes()
