"""Stale Numba cache files are dropped when a kernel source changes, kept otherwise."""

from ipmix_cli.augment import _numba_cache as guard


def test_cache_is_dropped_only_when_a_kernel_changes(tmp_path, monkeypatch):
    for name in guard.KERNEL_MODULES:
        (tmp_path / name).write_text(f"# {name}\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    monkeypatch.setattr(guard, "_HERE", tmp_path)

    def fill():
        for stem in ("ops.apply_op-1.py311", "chains.chain_view-9.py311"):
            (cache / f"{stem}.nbi").write_bytes(b"index")
            (cache / f"{stem}.1.nbc").write_bytes(b"code")

    fill()
    guard.drop_stale_cache()  # no stamp yet: cleared, stamp written
    assert not list(cache.glob("*.nb?")) and (cache / "ipmix-kernels.sha256").is_file()
    fill()
    guard.drop_stale_cache()  # nothing changed: kept
    assert len(list(cache.glob("*.nb?"))) == 4
    (tmp_path / "ops.py").write_text("# ops, edited\n")
    guard.drop_stale_cache()  # a callee changed: every kernel's cache goes
    assert not list(cache.glob("*.nb?"))
    (cache / "unrelated.pyc").write_bytes(b"x")
    fill()
    guard.drop_stale_cache()
    assert len(list(cache.glob("*.nb?"))) == 4 and (cache / "unrelated.pyc").exists()
