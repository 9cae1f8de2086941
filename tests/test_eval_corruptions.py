import numpy as np
import pytest

from _shards_build_helpers import smooth_picture
from ipmix_cli.eval.corruptions import CORRUPTIONS, corrupt_image, make_corrupted_set
from ipmix_cli.common.errors import IpmixError

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _colourful(seed):
    rng = np.random.default_rng(seed)
    base = smooth_picture(32, seed).astype(int)
    base[8:20, 10:22] = rng.integers(0, 256, 3)  # a sharp-edged patch so blurs and warps show
    return np.clip(base, 0, 255).astype(np.uint8)


def test_at_least_ten_corruptions_each_changing_the_image_more_with_severity():
    assert len(CORRUPTIONS) >= 10
    images = [_colourful(s) for s in range(6)]
    for name in CORRUPTIONS:
        diffs = [np.mean([np.abs(corrupt_image(im, name, s, 0, i).astype(int) - im).mean()
                          for i, im in enumerate(images)]) for s in (1, 5)]
        assert diffs[0] > 0, name
        # CIFAR-10-C's saturate washes out then overdoes; its elastic severity 1 is a large affine warp
        if name not in ("saturate", "elastic_transform"):
            assert diffs[1] > diffs[0], name
    # saturate follows CIFAR-10-C's extra set: severities 1-2 wash colours out, 3-5 overdo them.
    chroma = lambda im: (im.max(2).astype(int) - im.min(2)).mean()  # noqa: E731
    im = images[0]
    assert chroma(corrupt_image(im, "saturate", 2, 0, 0)) < chroma(corrupt_image(im, "saturate", 1, 0, 0)) < chroma(im)
    assert chroma(im) < chroma(corrupt_image(im, "saturate", 3, 0, 0)) < chroma(corrupt_image(im, "saturate", 5, 0, 0))


def test_corruption_is_deterministic_per_seed_and_index():
    im = _colourful(1)
    a = corrupt_image(im, "gaussian_noise", 3, seed=7, index=4)
    assert np.array_equal(a, corrupt_image(im, "gaussian_noise", 3, seed=7, index=4))
    assert not np.array_equal(a, corrupt_image(im, "gaussian_noise", 3, seed=8, index=4))
    assert not np.array_equal(a, corrupt_image(im, "gaussian_noise", 3, seed=7, index=5))
    assert a.dtype == np.uint8 and a.shape == im.shape


def test_corrupted_set_layout_and_subset_independence(tmp_path):
    full = make_corrupted_set("digits:test", tmp_path / "all", seed=3, limit=6)
    assert full["corruptions"] == list(CORRUPTIONS) and full["samples"] == 6
    labels = np.load(tmp_path / "all" / "labels.npy")
    assert labels.shape == (30,) and np.array_equal(labels[:6], labels[6:12])
    fog = np.load(tmp_path / "all" / "fog.npy")
    assert fog.shape == (30, 32, 32, 3) and fog.dtype == np.uint8
    make_corrupted_set("digits:test", tmp_path / "two", seed=3, limit=6, corruptions="fog,contrast")
    assert sorted(p.name for p in (tmp_path / "two").glob("*.npy")) == ["contrast.npy", "fog.npy", "labels.npy"]
    assert np.array_equal(np.load(tmp_path / "two" / "fog.npy"), fog)


def test_corrupt_errors_are_one_line(tmp_path, capsys):
    from ipmix_cli.cli.main import run

    assert run(["corrupt", "--source", "digits:test", "--out", str(tmp_path / "x"), "--corruptions", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown corruption" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    make_corrupted_set("digits:test", tmp_path / "y", limit=2, corruptions="fog")
    with pytest.raises(IpmixError, match="already holds a different"):
        make_corrupted_set("digits:test", tmp_path / "y", limit=3, corruptions="fog")
    (tmp_path / "w").mkdir()
    np.save(tmp_path / "w" / "fog.npy", np.zeros(3))  # somebody's own data: never overwritten silently
    with pytest.raises(IpmixError, match="already holds .npy files"):
        make_corrupted_set("digits:test", tmp_path / "w", limit=2, corruptions="fog")
    assert make_corrupted_set("digits:test", tmp_path / "w", limit=2, corruptions="fog", overwrite=True)
    assert run(["corrupt", "--source", "nosuchkind:abc", "--out", str(tmp_path / "z")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert run(["corrupt", "--source", "digits:test", "--out", str(tmp_path / "s"), "--seed", "-1"]) == 1
    assert "seed must be" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_repeating_a_request_is_a_no_op_and_an_interrupted_one_resumes(tmp_path, monkeypatch):
    import ipmix_cli.eval.corruptions as corruptions

    out = tmp_path / "c"
    make_corrupted_set("digits:test", out, limit=3, corruptions="fog,contrast,pixelate")
    fog_before = (out / "fog.npy").stat().st_mtime_ns
    again = make_corrupted_set("digits:test", out, limit=3, corruptions="fog,contrast,pixelate")
    assert again["corruptions"] == ["fog", "contrast", "pixelate"]
    assert (out / "fog.npy").stat().st_mtime_ns == fog_before

    # Interrupt a run after its first corruption file; the rerun makes only what is missing.
    out2 = tmp_path / "c2"
    real = corruptions.corrupt_image

    def failing(image, name, *args):
        if name == "contrast":
            raise KeyboardInterrupt
        return real(image, name, *args)

    monkeypatch.setattr(corruptions, "corrupt_image", failing)
    with pytest.raises(KeyboardInterrupt):
        make_corrupted_set("digits:test", out2, limit=3, corruptions="fog,contrast,pixelate")
    assert (out2 / "fog.npy").exists() and not (out2 / "contrast.npy").exists()
    assert not (out2 / "manifest.json").exists() and not list(out2.glob(".*.tmp"))
    monkeypatch.setattr(corruptions, "corrupt_image", real)
    fog_mtime = (out2 / "fog.npy").stat().st_mtime_ns
    make_corrupted_set("digits:test", out2, limit=3, corruptions="fog,contrast,pixelate")
    assert (out2 / "fog.npy").stat().st_mtime_ns == fog_mtime and (out2 / "manifest.json").exists()
    for name in ("fog", "contrast", "pixelate"):
        assert np.array_equal(np.load(out2 / f"{name}.npy"), np.load(out / f"{name}.npy"))


def test_corrupt_never_writes_into_a_shard_build_or_a_dataset(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text('{"schema": "ipmix-shards"}')
    for overwrite in (False, True):  # --overwrite must not delete another tool's manifest
        with pytest.raises(IpmixError, match="not a corrupted test set"):
            make_corrupted_set("digits:test", shards, limit=2, corruptions="fog", overwrite=overwrite)
    assert sorted(p.name for p in shards.iterdir()) == ["manifest.json"]
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    with pytest.raises(IpmixError, match=r"holds other files \(found cat\)"):
        make_corrupted_set("digits:test", data, limit=2, corruptions="fog")
    assert sorted(p.name for p in data.iterdir()) == ["cat"]
    assert make_corrupted_set("digits:test", data, limit=2, corruptions="fog", overwrite=True)
    assert (data / "cat").is_dir() and (data / "fog.npy").is_file()


def test_bad_test_image_is_named_without_the_build_hint(tmp_path):
    from PIL import Image

    root = tmp_path / "t"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(root / "a" / "0.png")
    (root / "a" / "1.png").write_bytes(b"garbage")
    with pytest.raises(IpmixError, match=r"bad test image .*1\.png: not-an-image") as err:
        make_corrupted_set(f"folder:{root}", tmp_path / "c", corruptions="fog", image_size=8)
    assert "--skip-bad" not in str(err.value)  # ipmix corrupt has no such option
    assert not (tmp_path / "c" / "fog.npy").exists()


def test_the_severity_table_follows_the_image_side_unless_a_profile_is_given(tmp_path, capsys):
    from ipmix_cli.cli.main import run

    small, large = _colourful(2), np.kron(_colourful(3), np.ones((7, 7, 1), np.uint8))  # 32 and 224 px
    for image, native, other in ((small, "cifar", "imagenet"), (large, "imagenet", "cifar")):
        default = corrupt_image(image, "contrast", 2, 0, 0)
        assert np.array_equal(default, corrupt_image(image, "contrast", 2, 0, 0, native))
        assert not np.array_equal(default, corrupt_image(image, "contrast", 2, 0, 0, other))
    with pytest.raises(IpmixError, match="unknown profile"):
        corrupt_image(small, "contrast", 2, 0, 0, "tiny")
    assert run(["corrupt", "--source", "digits:test", "--out", str(tmp_path / "c"), "--limit", "3",
                "--corruptions", "contrast,benchmark", "--profile", "imagenet"]) == 0
    out = capsys.readouterr().out
    assert "15 corruptions x 5 severities of 3 images (32 px, imagenet severities)" in out
    manifest = __import__("json").loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["profile"] == "imagenet" and manifest["corruptions"][:3] == ["gaussian_noise", "shot_noise",
                                                                                  "impulse_noise"]
