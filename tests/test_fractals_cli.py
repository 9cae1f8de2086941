"""`ipmix fractals ...` through the CLI entry point: outputs and one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

from ipmix_cli.cli import main as cli

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _error_lines(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return [ln for ln in err if ln.strip()]


def test_render_stats_preview(tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(pics / f"p{i}.png")
    (pics / "broken.png").write_bytes(b"\x89PNG nope")
    out = tmp_path / "set"
    code = cli.run(["fractals", "render", str(out), "--escape", "3", "--ifs", "3", "--size", "64", "--seed", "2",
                    "--include", str(pics), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "3 escape-time, 3 IFS, 2 own pictures, 1 skipped" in captured.out
    assert len(list(out.glob("*.png"))) == 8

    assert cli.run(["fractals", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert set(stats) == {"escape", "ifs", "user", "all"}
    assert stats["escape"]["count"] == 3 and stats["all"]["files"] == 8
    assert 0.0 <= stats["ifs"]["near_empty_fraction"] <= 1.0

    assert cli.run(["fractals", "stats", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[0] == "family" and len(table) == 5

    sheet = tmp_path / "sheet.png"
    assert cli.run(["fractals", "preview", str(out), "--out", str(sheet), "--thumb", "32", "--cols", "4"]) == 0
    assert Image.open(sheet).size[0] == 4 * (32 + 2) + 2
    assert cli.run(["fractals", "preview", str(out)]) == 0  # default: beside the folder, not in it
    assert (tmp_path / "set-preview.png").is_file()
    assert len(list(out.glob("*.png"))) == 8


def test_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.run(["fractals", "render", str(blocker / "set"), "--escape", "1", "--ifs", "0"]) == 1
    lines = _error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write to")


def test_bad_option_is_a_usage_error(tmp_path, capsys):
    assert cli.run(["fractals", "render", str(tmp_path / "s"), "--size", "5"]) == 2
    assert "Invalid value for '--size'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_empty_include_source_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = cli.run(["fractals", "render", str(tmp_path / "s"), "--escape", "1", "--ifs", "0",
                    "--include", str(tmp_path / "empty")])
    assert code == 1
    assert _error_lines(capsys) == [f"Error: include folder {tmp_path / 'empty'} holds no files"]


def test_stats_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert cli.run(["fractals", "stats", str(tmp_path / "none")]) == 1
    assert _error_lines(capsys) == [f"Error: {tmp_path / 'none'} is not a folder"]


def test_preview_shows_an_unreadable_picture_as_a_dark_tile(tmp_path, capsys):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(folder / "a.png")
    # a decompression bomb: its header announces 30000 x 30000 pixels
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    sheet = tmp_path / "sheet.png"
    assert cli.run(["fractals", "preview", str(folder), "--out", str(sheet), "--thumb", "16"]) == 0, capsys.readouterr().err
    tiles = np.asarray(Image.open(sheet))
    assert tiles[2:18, 2:18].min() == 200 and tiles[2:18, 20:36].max() == 0


def test_preview_of_the_current_folder_goes_beside_it(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(folder / "a.png")
    monkeypatch.chdir(folder)
    assert cli.run(["fractals", "preview", "."]) == 0, capsys.readouterr().err
    assert (tmp_path / "mine-preview.png").is_file()
    assert [p.name for p in folder.iterdir()] == ["a.png"]


def test_stats_measure_pictures_of_any_size(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i, (h, w) in enumerate(((40, 40), (30, 50), (64, 64))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    assert cli.run(["fractals", "stats", str(folder), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["other"]["files"] == 3 and stats["other"]["count"] == 3


def test_a_failed_write_names_the_file_asked_for(tmp_path, monkeypatch, capsys):
    import errno
    import os
    import tempfile

    folder = tmp_path / "mine"
    folder.mkdir()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(folder / "a.png")

    def full_disk(prefix="", suffix="", dir=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(dir, prefix + "x1y2" + suffix))

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
    sheet = tmp_path / "sheet.png"
    assert cli.run(["fractals", "preview", str(folder), "--out", str(sheet)]) == 1
    assert _error_lines(capsys) == [f"Error: no space left on device: {sheet}"]


def test_render_json_result(tmp_path, capsys):
    out = tmp_path / "set"
    assert cli.run(["fractals", "render", str(out), "--escape", "2", "--ifs", "1", "--size", "32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    m = json.loads((out / "manifest.json").read_text())
    assert result == {"out": str(out), "complete": True, "seed": 0, "size": 32, "counts": m["counts"],
                      "pictures": 3, "skipped": []}
    assert m["counts"]["escape"] == 2 and m["counts"]["ifs"] == 1
