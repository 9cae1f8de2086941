"""`ipmix augment preview` and `ipmix bench augment` end to end."""

import json

import pytest
from PIL import Image

from ipmix_cli.cli.main import run
from tests._augment_helpers import make_mixing_folder


@pytest.mark.kernels
def test_preview_writes_a_grid(tmp_path, capsys):
    mix = make_mixing_folder(tmp_path / "mix")
    inputs = make_mixing_folder(tmp_path / "in", n=3, size=40, seed=3)
    out = tmp_path / "grid.png"
    assert run(["augment", "preview", str(inputs), "--fractals", str(mix), "--out", str(out),
                "--n", "3", "--rows", "2", "--zoom", "2"]) == 0
    assert "2 row(s) x 3 ipmix view(s)" in capsys.readouterr().out
    grid = Image.open(out)
    assert grid.size == (5 * (64 + 2) + 2, 2 * (64 + 2 + 12) + 2)
    one = tmp_path / "one.png"
    assert run(["augment", "preview", str(inputs / "pic-00.png"), "--fractals", str(mix), "--out", str(one),
                "--recipe", "pixmix", "--n", "2"]) == 0
    assert Image.open(one).size[0] == 4 * (128 + 2) + 2


def test_preview_errors_are_one_line(tmp_path, capsys):
    mix = make_mixing_folder(tmp_path / "mix", n=1)
    out = tmp_path / "grid.png"
    assert run(["augment", "preview", str(mix), "--fractals", str(tmp_path / "missing"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "does not exist" in err and err.count("\n") == 1
    assert run(["augment", "preview", str(mix), "--fractals", str(mix), "--out", str(out), "--severity", "12"]) == 1
    assert "severity must be in (0, 10]" in capsys.readouterr().err
    assert not out.exists()
    assert run(["augment", "preview", str(mix), "--fractals", str(mix), "--out", str(out), "--beta", "0"]) == 1
    assert capsys.readouterr().err == "Error: beta must be greater than 0, not 0\n"
    nowhere = tmp_path / "no-such-folder" / "grid.png"
    assert run(["augment", "preview", str(mix), "--fractals", str(mix), "--out", str(nowhere)]) == 1
    err = capsys.readouterr().err
    assert err == f"Error: cannot write {nowhere}: {nowhere.parent} is not an existing folder\n"


@pytest.mark.kernels
def test_bench_augment_prints_one_json_object(capsys):
    assert run(["bench", "augment", "--json", "--quick", "--repeats", "1"]) == 0
    figures = json.loads(capsys.readouterr().out)
    cases = [("ipmix_32_view", "img"), ("ipmix_32_jsd", "samples"), ("ipmix_224_view", "img")]
    cases += [(f"{r}_{s}_view", "img") for r in ("augmix", "pixmix") for s in (32, 224)]
    for name, unit in cases:
        assert figures[f"{name}_{unit}_per_s"] > 0 and figures[f"{name}_baseline_{unit}_per_s"] > 0
        ratio = figures[f"{name}_{unit}_per_s"] / figures[f"{name}_baseline_{unit}_per_s"]
        assert abs(figures[f"{name}_speedup"] - ratio) <= 0.01 * ratio
    assert figures["baseline"] == "ipmix per-image reference"
    assert figures["ipmix_32_view_speedup"] > 0 and "numba_first_call_s" in figures
    assert figures["ipmix_32_view_repeat_s"] >= 0.1  # --quick repeats last 0.1 s, full ones 0.5 s


@pytest.mark.kernels
def test_preview_reads_class_folders_like_flat_ones(tmp_path, capsys):
    mix = make_mixing_folder(tmp_path / "mix")
    inputs = make_mixing_folder(tmp_path / "in", n=2, size=40, seed=3)
    nested_mix, nested_in = tmp_path / "mix-classes", tmp_path / "photos"
    for name in sorted(p.name for p in mix.iterdir()):
        (nested_mix / "fractal").mkdir(parents=True, exist_ok=True)
        (nested_mix / "fractal" / name).write_bytes((mix / name).read_bytes())
    (nested_in / "cat").mkdir(parents=True)
    for name in ("pic-00.png", "pic-01.png"):
        (nested_in / "cat" / name).write_bytes((inputs / name).read_bytes())
    flat_out, nested_out = tmp_path / "flat.png", tmp_path / "nested.png"
    cache = tmp_path / "cache"
    assert run(["augment", "preview", str(inputs), "--fractals", str(mix), "--out", str(flat_out),
                "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert f"mixing bank: 4 pictures at 36 px, cached in {cache}" in printed and " MB)" in printed
    assert run(["augment", "preview", str(nested_in), "--fractals", str(nested_mix), "--out", str(nested_out),
                "--cache-dir", str(cache)]) == 0
    assert "2 row(s)" in capsys.readouterr().out
    assert flat_out.read_bytes() == nested_out.read_bytes()
    assert sorted(p.name for p in mix.iterdir()) == [f"pic-{i:02d}.png" for i in range(4)]  # nothing written


def test_bench_augment_repeats_last_at_least_the_minimum():
    # a repeat is as many calls as it takes to reach min_seconds; the figure is per call.
    # No upper bound on any time: a busy machine may stretch every call.
    import time

    from ipmix_cli.bench.augment import _timed

    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)

    start = time.perf_counter()
    wall, cpu, repeat_s = _timed(fn, repeats=3, min_seconds=0.05)
    elapsed = time.perf_counter() - start
    assert repeat_s >= 0.05  # the median repeat lasted at least the minimum
    assert elapsed >= 0.002 + 3 * 0.05  # the warm-up call, then three such repeats
    assert wall >= 0.002 and cpu < wall  # per call: each sleeps 2 ms and spends almost no CPU
