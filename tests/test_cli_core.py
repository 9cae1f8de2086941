import errno
import os

import numpy as np
import pytest
from PIL import Image

from fractalgen.files import atomic_write_bytes, sha256_file
from fractalgen.images import load_rgb
from fractalgen.errors import BadImage
from ipmix_cli.cli import main as cli


def test_help_lists_every_command(capsys):
    assert cli.run(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fractals", "shards", "train", "eval", "bench", "augment", "demo"):
        assert name in out


def test_every_listed_command_imports_and_help_does_not_load_torch():
    import subprocess
    import sys

    import click

    for name in cli.cli.lazy:
        assert isinstance(cli.cli.get_command(None, name), click.Command), name
    bench = cli.cli.get_command(None, "bench")
    assert set(bench.commands) == {"fractals", "augment", "build", "stream", "corrupt"}
    for argv in (["--help"], ["bench", "--help"]):
        code = f"import sys; from ipmix_cli.cli.main import run; run({argv!r}); print('torch' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "False", argv


def test_unknown_option_is_a_usage_error(capsys):
    assert cli.run(["--no-such-option"]) == 2
    assert "no such option" in capsys.readouterr().err.lower()


def test_os_errors_become_one_line(monkeypatch, capsys):
    def boom():
        raise OSError(errno.ENOSPC, "No space left on device", "/x/shard.tar")

    monkeypatch.setattr(cli.cli, "main", lambda **kw: boom())
    assert cli.run([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["Error: no space left on device: /x/shard.tar"]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"old")
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(errno.ENOSPC, "full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new contents")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    import hashlib

    assert sha256_file(target) == hashlib.sha256(b"old").hexdigest()


@pytest.mark.parametrize(
    "mode,maker",
    [
        ("L", lambda: Image.new("L", (9, 7), 200)),
        ("CMYK", lambda: Image.new("CMYK", (9, 7), (0, 255, 0, 0))),
        ("I;16", lambda: Image.fromarray(np.full((7, 9), 65535, np.uint16))),
        ("RGBA", lambda: Image.new("RGBA", (9, 7), (255, 0, 0, 0))),
    ],
)
def test_load_rgb_converts_modes(tmp_path, mode, maker):
    path = tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg"
    maker().save(path)
    arr = load_rgb(path)
    assert arr.shape == (7, 9, 3) and arr.dtype == np.uint8
    if mode == "I;16":
        assert arr.min() == 255
    if mode == "RGBA":  # fully transparent red composites to black
        assert arr.max() == 0


def test_load_rgb_rejects_truncated_and_non_images(tmp_path):
    good = tmp_path / "g.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    trunc = tmp_path / "t.png"
    trunc.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "n.png"
    text.write_bytes(b"<html>not a picture</html>")
    with pytest.raises(BadImage) as e1:
        load_rgb(trunc)
    with pytest.raises(BadImage) as e2:
        load_rgb(text)
    assert e1.value.reason == "truncated" and e2.value.reason == "not-an-image"


def test_atomic_write_publishes_with_the_usual_mode(tmp_path):
    from fractalgen import files

    atomic_write_bytes(tmp_path / "m.json", b"{}", fsync=False)
    # mkstemp alone would leave 0600: files on shared storage must stay readable as umask allows
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~files._UMASK


def test_writable_dir_names_a_file_in_the_way(tmp_path):
    from fractalgen.errors import FractalgenError
    from fractalgen.files import ensure_writable_dir

    (tmp_path / "f").write_text("x")
    with pytest.raises(FractalgenError, match="is a file, not a folder"):
        ensure_writable_dir(tmp_path / "f")
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()


def test_help_shows_ranges_and_choices_a_reader_can_use(capsys):
    assert cli.run(["shards", "build", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "9223372036854775807" not in text and "--seed 0..2^63-1" in text
    assert "--views [1|3]" in text and "--format [png|npy|jpg|webp]" in text and "[1..1000]" in text
    assert cli.run(["fractals", "render", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed 0..2^63-1" in text and "[default: 3000; 0..1000000]" in text


@pytest.mark.parametrize("args,expect", [
    (["--views", "2"], "'2' is not one of '1', '3'"),
    (["--seed", str(2**63)], "is not in 0..2^63-1"),
    (["--seed", "-1"], "is not in 0..2^63-1"),
    (["--workers", "100000"], "100000 is not in the range 1..1024"),
    (["--epochs", "99999999999"], "is not in the range 1..1000"),
    (["--extend-epochs", "0"], "is not in the range 1..1000"),
    (["--shards", "1000000"], "is not in the range 1..65536"),
    (["--num-nodes", "100000"], "is not in the range 1..10000"),
])
def test_shards_build_counts_are_bounded_with_one_line(tmp_path, capsys, args, expect):
    out = tmp_path / "o"
    assert cli.run(["shards", "build", "--source", "digits:test", "--out", str(out), "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err and not out.exists()


def test_format_takes_jpeg_as_jpg():
    from ipmix_cli.cli.params import ImageFormat

    assert ImageFormat().convert("jpeg", None, None) == ImageFormat().convert("JPG", None, None) == "jpg"


@pytest.mark.parametrize("kw,expect", [
    ({"workers": 100_000}, "workers must be a whole number in 1..1,024"),
    ({"epochs": 10**6}, "epochs must be a whole number in 1..1,000"),
    ({"shards": 10**6}, "shards must be a whole number in 1..65,536"),
    ({"num_nodes": 10**5}, "num_nodes must be a whole number in 1..10,000"),
    ({"seed": 2**63}, "seed must be a whole number in 0..9,223,372,036,854,775,807"),
    ({"epochs": 1000, "shards": 1001, "recipe": "none"}, "1000 epochs x 1001 shards is more than 1,000,000 shards"),
])
def test_build_shards_bounds_every_count_before_writing(tmp_path, kw, expect):
    from ipmix_cli.common.errors import IpmixError
    from ipmix_cli.shards import build_shards

    out = tmp_path / "o"
    with pytest.raises(IpmixError, match="^" + expect.replace(".", r"\.").replace("^", r"\^")):
        build_shards(source="digits", out=out, dry_run=True, progress=False, **kw)
    assert not out.exists()


def test_option_errors_name_the_parameter_in_the_library_and_the_flag_in_the_cli(tmp_path, capsys):
    import pickle

    from ipmix_cli.common.errors import IpmixError, OptionError
    from ipmix_cli.shards import build_shards

    out = tmp_path / "o"
    with pytest.raises(OptionError) as caught:
        build_shards(source="digits", out=out, num_nodes=2, node_rank=3, dry_run=True, progress=False)
    assert str(caught.value) == "node_rank must be in 0..1 (got 3)"
    again = pickle.loads(pickle.dumps(caught.value))  # as a worker process hands it back
    assert isinstance(again, IpmixError) and str(again) == str(caught.value)
    with pytest.raises(OptionError, match="^extend_epochs adds to the build in OUT and overwrite deletes it"):
        build_shards(source="digits", out=out, extend_epochs=1, overwrite=True, progress=False)

    assert cli.run(["shards", "build", "--source", "digits", "--out", str(out), "--num-nodes", "2",
                    "--node-rank", "3", "--dry-run"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == ["Error: --node-rank must be in 0..1 (got 3)"]
    assert cli.run(["shards", "build", "--source", "digits", "--out", str(out), "--extend-epochs", "1",
                    "--overwrite"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "Error: --extend-epochs adds to the build in OUT and --overwrite deletes it: give one of them"]
    assert not out.exists()


@pytest.mark.parametrize("kw,expect", [
    ({"escape": 10**7}, "--escape and --ifs must be in 0..1,000,000"),
    ({"workers": 5000}, "--workers must be in 1..1024"),
    ({"seed": 2**64}, "--seed must be in 0..2^63-1"),
])
def test_render_set_bounds_every_count_before_writing(tmp_path, kw, expect):
    from fractalgen.errors import FractalgenError
    from fractalgen.render import render_set

    args = {"escape": 1, "ifs": 1, **kw}
    with pytest.raises(FractalgenError, match=expect.replace(".", r"\.").replace("^", r"\^")):
        render_set(tmp_path / "o", **args)
    assert not (tmp_path / "o").exists()


def test_durations_are_h_mm_ss_and_the_eta_uses_them():
    import io

    from ipmix_cli.common.progress import Progress, hms

    assert [hms(s) for s in (0, 0.2, 59, 61, 3725, 36000)] == \
        ["0:00:00", "0:00:01", "0:00:59", "0:01:01", "1:02:05", "10:00:00"]
    stream = io.StringIO()
    bar = Progress(100, "render", stream=stream, every_s=0)
    bar.start -= 50  # 10 of 100 done in 50 s: 450 s left
    bar.update(10)
    assert "render: 10/100 (10%) 0.2/s eta 0:07:3" in stream.getvalue()


def test_numba_cache_warmth_is_read_from_the_cache_files(tmp_path, monkeypatch):
    from ipmix_cli.common.progress import numba_cache_is_warm

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    assert not numba_cache_is_warm(pkg, ("ops", "chains"))
    (pkg / "__pycache__" / "ops.hsv_to_rgb-91.py311.nbi").write_bytes(b"")
    assert not numba_cache_is_warm(pkg, ("ops", "chains"))  # chains still compiles
    (pkg / "__pycache__" / "chains.run_chains-40.py311.nbi").write_bytes(b"")
    assert numba_cache_is_warm(pkg, ("ops", "chains"))
    custom = tmp_path / "numba-cache"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(custom))  # Numba then looks only there
    assert not numba_cache_is_warm(pkg, ("ops",))
    (custom / "pkg_abc").mkdir(parents=True)
    (custom / "pkg_abc" / "ops.hsv_to_rgb-91.py311.nbi").write_bytes(b"")
    assert numba_cache_is_warm(pkg, ("ops",))
