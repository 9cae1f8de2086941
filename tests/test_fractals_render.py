"""render_set: the folder and manifest it writes, determinism across workers, resume."""

import io
import json

import numpy as np
import pytest

from fractalgen.errors import FractalgenError
from fractalgen.files import sha256_file
from fractalgen.images import load_rgb
from fractalgen.render import render_from_params, render_set

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _folder_bytes(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "set"
    manifest = render_set(out, escape=6, ifs=6, size=64, seed=3, workers=1)
    return out, manifest


def test_manifest_describes_every_picture(reference):
    out, manifest = reference
    assert manifest["complete"] is True
    assert manifest["counts"] == {"escape": 6, "ifs": 6, "user": 0}
    assert manifest["config"]["seed"] == 3 and manifest["config"]["size"] == 64
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [e["file"] for e in manifest["images"]]
    for e in manifest["images"]:
        assert sha256_file(out / e["file"]) == e["sha256"]
        rgb = load_rgb(out / e["file"])
        assert rgb.shape == (64, 64, 3)
        assert np.array_equal(render_from_params(e["family"], e["params"], 64), rgb)


def test_png_encoder_round_trips_through_pillow(reference):
    from PIL import Image

    from fractalgen.render import encode_png

    out, manifest = reference
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((1, 1), (7, 13), (64, 5))]
    arrays += [load_rgb(out / e["file"]) for e in manifest["images"][:4]]
    for rgb in arrays:
        data = encode_png(rgb)
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.mode == "RGB" and img.size == (rgb.shape[1], rgb.shape[0])
        assert np.array_equal(np.asarray(img), rgb)


def test_same_bytes_for_any_worker_count(reference, tmp_path, monkeypatch):
    import fractalgen.render

    monkeypatch.setattr(fractalgen.render, "BATCH", 2)  # six batches shared by two processes
    out, _ = reference
    other = tmp_path / "two-workers"
    render_set(other, escape=6, ifs=6, size=64, seed=3, workers=2)
    assert _folder_bytes(other) == _folder_bytes(out)


def test_another_seed_gives_other_pictures(reference, tmp_path):
    out, manifest = reference
    m = render_set(tmp_path / "s4", escape=2, ifs=2, size=64, seed=4)
    first = {e["file"]: e["sha256"] for e in manifest["images"]}
    assert all(first[e["file"]] != e["sha256"] for e in m["images"])


def test_resume_completes_an_interrupted_render(reference, tmp_path, monkeypatch):
    import fractalgen.render

    monkeypatch.setattr(fractalgen.render, "BATCH", 2)
    out, _ = reference
    target = tmp_path / "resume"
    calls = []

    def stop_after_first_batch(stage, done, total):
        calls.append((stage, done))
        if stage == "render" and done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_set(target, escape=6, ifs=6, size=64, seed=3, progress=stop_after_first_batch)
    partial = sorted(p.name for p in target.glob("*.png"))
    assert len(partial) == 2
    assert json.loads((target / "manifest.json").read_text())["complete"] is False
    # a damaged picture and a stray temporary file from the interruption
    (target / partial[0]).write_bytes(b"torn")
    (target / f".{partial[-1]}.999.tmp").write_bytes(b"x")
    rendered = []
    render_set(target, escape=6, ifs=6, size=64, seed=3,
               progress=lambda s, d, t: rendered.append((s, d, t)))
    assert _folder_bytes(target) == _folder_bytes(out)
    # the pictures that verified were not rendered again
    assert [d for s, d, t in rendered if s == "render"][0] == 1
    assert json.loads((target / "manifest.json").read_text())["complete"] is True


def test_rerun_skips_everything_and_overwrite_starts_afresh(reference, tmp_path):
    target = tmp_path / "again"
    render_set(target, escape=3, ifs=3, size=64, seed=3)
    before = {p.name: p.stat().st_mtime_ns for p in target.glob("*.png")}
    seen = []
    render_set(target, escape=3, ifs=3, size=64, seed=3, progress=lambda s, d, t: seen.append((s, d, t)))
    assert ("render", 6, 6) in seen and not any(s == "render" and d < 6 for s, d, t in seen)
    assert {p.name: p.stat().st_mtime_ns for p in target.glob("*.png")} == before
    (target / "notes.txt").write_text("mine")
    render_set(target, escape=2, ifs=1, size=64, seed=3, overwrite=True)
    assert sorted(p.name for p in target.glob("*.png")) == ["escape-00000.png", "escape-00001.png", "ifs-00000.png"]
    assert (target / "notes.txt").read_text() == "mine"


def test_fewer_pictures_removes_the_surplus(tmp_path):
    target = tmp_path / "shrink"
    render_set(target, escape=3, ifs=2, size=64, seed=1)
    m = render_set(target, escape=1, ifs=2, size=64, seed=1)
    assert sorted(p.name for p in target.glob("*.png")) == ["escape-00000.png", "ifs-00000.png", "ifs-00001.png"]
    assert m["counts"]["escape"] == 1


def test_other_options_on_an_existing_set_are_refused(tmp_path):
    target = tmp_path / "set"
    render_set(target, escape=1, ifs=1, size=64, seed=1)
    with pytest.raises(FractalgenError, match="different seed"):
        render_set(target, escape=1, ifs=1, size=64, seed=2)
    with pytest.raises(FractalgenError, match="different size"):
        render_set(target, escape=1, ifs=1, size=96, seed=1)


@pytest.mark.parametrize("kwargs,message", [
    ({"escape": 0, "ifs": 0}, "nothing to render"),
    ({"escape": -1, "ifs": 1}, r"--escape and --ifs must be in 0\.\.1,000,000"),
    ({"escape": 1, "ifs": 1, "size": 8}, "out of range"),
    ({"escape": 1, "ifs": 1, "workers": 0}, r"--workers must be in 1\.\.1024"),
    ({"escape": 1, "ifs": 1, "seed": -3}, r"--seed must be in 0\.\.2\^63-1"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(FractalgenError, match=message):
        render_set(tmp_path / "x", **kwargs)


def test_overwrite_never_deletes_a_foreign_manifest(tmp_path):
    target = tmp_path / "shards"
    target.mkdir()
    (target / "manifest.json").write_text('{"schema": "ipmix-shards"}')
    with pytest.raises(FractalgenError, match="not a fractal-set manifest"):
        render_set(target, escape=1, ifs=0, size=64, seed=1, overwrite=True)
    assert (target / "manifest.json").read_text() == '{"schema": "ipmix-shards"}'


def test_a_set_inside_its_include_folder_does_not_ingest_itself(tmp_path):
    from PIL import Image

    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)).save(pics / "a.png")
    first = render_set(pics / "set", escape=2, ifs=0, size=64, seed=1, include=pics)
    again = render_set(pics / "set", escape=2, ifs=0, size=64, seed=1, include=pics)
    assert first["counts"] == again["counts"] == {"escape": 2, "ifs": 0, "user": 1}
    assert again["skipped"] == [] and again["images"] == first["images"]
    with pytest.raises(FractalgenError, match="is the output folder itself"):
        render_set(pics, escape=1, ifs=0, size=64, seed=1, include=pics)


def test_ctrl_c_while_the_kernels_load_is_held_until_they_are_in(tmp_path, monkeypatch):
    import signal

    import fractalgen.render

    loaded = []

    def warm():  # Ctrl-C arrives while Numba loads its kernels
        # raise_signal returns only after the handler has run, in this (the main) thread; os.kill
        # may leave it pending in another thread until after the render has finished
        signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # held, not raised
        loaded.append(True)

    monkeypatch.setattr(fractalgen.render, "_warm_kernels", warm)
    with pytest.raises(KeyboardInterrupt):
        render_set(tmp_path / "set", escape=2, ifs=0, size=64, seed=1)
    assert loaded == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert json.loads((tmp_path / "set" / "manifest.json").read_text())["complete"] is False


def test_ctrl_c_inside_numbas_cache_loader_is_an_interrupt(tmp_path, monkeypatch):
    import fractalgen.render

    def batch(*args):  # what a Numba dispatcher raises when Ctrl-C lands in its unpickler
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                raise SystemError("_numba_unpickle returned a result with an exception set") from exc
        except SystemError as exc:
            raise SystemError("CPUDispatcher returned a result with an exception set") from exc

    monkeypatch.setattr(fractalgen.render, "_render_batch", batch)
    with pytest.raises(KeyboardInterrupt):
        render_set(tmp_path / "set", escape=2, ifs=0, size=64, seed=1)
