"""`ipmix eval` end to end: train a tiny model on digit shards, corrupt a slice of digits:test,
score both; plus the folder checks that must fail in one line."""

import json

import numpy as np
import pytest

from _train_helpers import make_digit_shards
from ipmix_cli.cli.main import run
from ipmix_cli.eval.corruptions import BENCHMARK, CORRUPTIONS, EXTRA, make_corrupted_set
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.eval.evaluate import evaluate, read_corrupted_folder

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    make_digit_shards(root / "shards", views=1, epochs=1, shards=4)
    code = run(["train", "--shards", str(root / "shards"), "--model", "small-cnn", "--epochs", "3",
                "--out", str(root / "run"), "--batch-size", "64", "--workers", "1", "--test", "digits:test"])
    assert code == 0
    return root


def test_eval_end_to_end_on_a_tiny_corrupted_set(trained, tmp_path, capsys):
    capsys.readouterr()
    assert run(["corrupt", "--source", "digits:test", "--out", str(tmp_path / "c"), "--limit", "40"]) == 0
    out = tmp_path / "eval.json"
    assert run(["eval", "--checkpoint", str(trained / "run"), "--test", "digits:test", "--corrupted",
                str(tmp_path / "c"), "--pgd", "--pgd-limit", "40", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result) >= {"checkpoint", "model", "test", "clean", "corruption", "pgd"}
    clean = result["clean"]
    assert clean["samples"] == 360
    assert clean["error"] < 0.5  # three epochs on digits: far better than chance (0.9)
    assert 0 <= clean["rms_calibration_error"] <= 1
    # The held-out score during training saw the same model on the same images.
    summary = json.loads((trained / "run" / "summary.json").read_text())
    assert summary["test_error"] == pytest.approx(clean["error"], abs=1e-9)

    cor = result["corruption"]
    # the JSON file's objects have sorted keys; `corruptions` keeps the benchmark's order
    assert cor["corruptions"] == list(CORRUPTIONS) and sorted(cor["per_corruption"]) == sorted(CORRUPTIONS)
    assert cor["samples_per_severity"] == 40
    assert cor["profile"] == "cifar" and cor["layout"] == "ipmix" and "mce_alexnet_normalised" not in cor
    for name, entry in cor["per_corruption"].items():
        assert len(entry["severity_errors"]) == 5
        assert entry["error"] == pytest.approx(np.mean(entry["severity_errors"]))
    # the mCE is over the 15 benchmark corruptions; the four extras are reported apart
    assert cor["benchmark_corruptions"] == 15
    assert cor["error"] == pytest.approx(np.mean([cor["per_corruption"][n]["error"] for n in BENCHMARK]))
    assert cor["extra_error"] == pytest.approx(np.mean([cor["per_corruption"][n]["error"] for n in EXTRA]))
    # digits are grey: saturate's severities 1-3 only scale the saturation (0 stays 0) and leave
    # every image as it was, 4-5 add 0.1 / 0.2 to it; the table and JSON say so
    assert cor["per_corruption"]["saturate"]["unchanged_images"] == [40, 40, 40, 0, 0]
    assert "saturate" in table and "* unchanged images" in table
    assert cor["error"] >= clean["error"] - 0.05
    assert result["pgd"]["epsilon"] == pytest.approx(2 / 255) and result["pgd"]["steps"] == 20
    assert 0 <= result["pgd"]["error"] <= 1
    rows = [line.split()[0] for line in table.splitlines() if line.split() and line.split()[0] in CORRUPTIONS]
    assert rows == list(CORRUPTIONS)  # the table in the benchmark's order (noise, blur, weather, digital)
    assert "clean error" in table and "PGD-20" in table


def test_corrupt_json_prints_the_manifest_it_wrote(tmp_path, capsys):
    out = tmp_path / "c"
    capsys.readouterr()
    assert run(["corrupt", "--source", "digits:test", "--out", str(out), "--limit", "6",
                "--corruptions", "fog,saturate", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout holds nothing but the object
    manifest = json.loads((out / "manifest.json").read_text())
    assert printed == {"out": str(out), **manifest}
    assert printed["corruptions"] == ["fog", "saturate"] and printed["samples"] == 6


def test_corrupted_folder_problems_are_one_line(trained, tmp_path, capsys):
    folder = tmp_path / "bad"
    make_corrupted_set("digits:test", folder, limit=4, corruptions="fog")
    names, labels, arrays, facts = read_corrupted_folder(folder, 32, 10)
    assert names == ["fog"] and len(labels) == 4 and arrays["fog"].shape == (20, 32, 32, 3)
    with pytest.raises(IpmixError, match="model takes 64 px"):
        read_corrupted_folder(folder, 64, 10)
    np.save(folder / "short.npy", np.zeros((7, 32, 32, 3), np.uint8))
    with pytest.raises(IpmixError, match="5\\*N"):
        read_corrupted_folder(folder, 32, 10)
    (folder / "short.npy").unlink()
    np.save(folder / "labels.npy", labels)  # one label per image of a severity is accepted too
    assert np.array_equal(read_corrupted_folder(folder, 32, 10)[1], labels)
    (folder / "labels.npy").unlink()
    capsys.readouterr()
    code = run(["eval", "--checkpoint", str(trained / "run"), "--test", "digits:test", "--corrupted", str(folder)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("Error:") and "labels.npy" in err and len(err.splitlines()) == 1


def test_missing_or_foreign_checkpoint_is_one_line(tmp_path, capsys):
    assert run(["eval", "--checkpoint", str(tmp_path), "--test", "digits:test"]) == 1
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert run(["eval", "--checkpoint", str(tmp_path / "junk.pt"), "--test", "digits:test"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("Error:") for line in lines)


def test_library_evaluate_limits_the_clean_set(trained):
    result = evaluate(trained / "run", "digits:test", limit=50)
    assert result["clean"]["samples"] == 50 and "corruption" not in result and "pgd" not in result


def test_test_set_with_reordered_classes_is_refused():
    from ipmix_cli.data.testset import check_classes

    check_classes(["0", "1", "2"], ["0", "1", "2"], "x")
    check_classes(["a", "b"], [], "x")  # nothing recorded: nothing to compare
    with pytest.raises(IpmixError, match="orders its classes differently"):
        check_classes(["cat", "dog"], ["dog", "cat"], "folder:t")
    with pytest.raises(IpmixError, match="3 classes"):
        check_classes(["a", "b", "c"], ["a", "b"], "folder:t")


def test_eval_transform_resizes_and_centre_crops():
    from ipmix_cli.data.testset import eval_transform

    square = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    assert np.array_equal(eval_transform(square, 32), square)  # already S x S: used as it is
    wide = np.zeros((300, 400, 3), np.uint8)
    wide[:, 150:250] = 255  # a white band in the middle survives the centre crop
    out = eval_transform(wide, 224)  # shorter side to 256, then the central 224
    assert out.shape == (224, 224, 3)
    assert out[112, 112].tolist() == [255, 255, 255] and out[112, 0].tolist() == [0, 0, 0]
    small = eval_transform(wide, 32)
    assert small.shape == (32, 32, 3) and small[16, 16, 0] == 255


def test_corrupted_set_made_from_other_classes_is_refused(trained, tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "src"
    for c in ("cat", "dog"):
        (src / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(src / c / f"{i}.png")
    make_corrupted_set(f"folder:{src}", tmp_path / "c", corruptions="fog")
    capsys.readouterr()
    code = run(["eval", "--checkpoint", str(trained / "run"), "--test", "digits:test",
                "--corrupted", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("Error:") and "2 classes" in err and "trained on 10" in err


def test_out_that_is_a_folder_is_one_line_before_scoring(trained, capsys):
    capsys.readouterr()
    assert run(["eval", "--checkpoint", str(trained / "run"), "--test", "digits:test", "--limit", "8",
                "--out", str(trained / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error:") and "is a folder" in err
    assert (trained / "run").is_dir()
    ckpt = trained / "run" / "checkpoint.pt"
    before = ckpt.read_bytes()
    assert run(["eval", "--checkpoint", str(trained / "run"), "--test", "digits:test", "--limit", "8",
                "--out", str(ckpt)]) == 1
    assert "not overwritten" in capsys.readouterr().err and ckpt.read_bytes() == before


def test_bad_image_in_the_test_set_is_one_line_without_the_build_hint(trained, tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "t"
    for c in range(10):
        (root / str(c)).mkdir(parents=True)
        Image.new("RGB", (32, 32), (20 * c, 0, 0)).save(root / str(c) / "0.png")
    (root / "3" / "1.png").write_bytes(b"garbage")
    capsys.readouterr()
    assert run(["eval", "--checkpoint", str(trained / "run"), "--test", f"folder:{root}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: bad test image") and "--skip-bad" not in err


def test_a_file_that_is_not_a_checkpoint_is_one_clear_line(tmp_path, capsys):
    from ipmix_cli.cli.main import run

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage\n")
    assert run(["eval", "--checkpoint", str(junk), "--test", "digits:test"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a complete torch checkpoint" in err[0] and "junk.pt" in err[0]


def test_imagenet_c_layout_scores_like_the_same_pictures_in_npy_files(trained, tmp_path, capsys):
    from PIL import Image

    from ipmix_cli.eval.corruptions import ALEXNET_ERRORS

    npy = tmp_path / "npy"
    make_corrupted_set("digits:test", npy, limit=30, corruptions="contrast,snow,speckle_noise")
    labels = np.load(npy / "labels.npy")[:30]
    layout = tmp_path / "imagenet-c"  # <corruption>/<severity>/<class>/<picture>, as ImageNet-C ships
    for name in ("contrast", "snow", "speckle_noise"):
        stack = np.load(npy / f"{name}.npy")
        for severity in range(1, 6):
            for i in range(30):
                folder = layout / name / str(severity) / str(labels[i])
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(stack[(severity - 1) * 30 + i]).save(folder / f"img{i:03d}.png")
    for extra in ("labels.npy", "manifest.json"):
        assert not (layout / extra).exists()
    kw = dict(pgd=False, limit=10)
    from_npy = evaluate(trained / "run", "digits:test", corrupted=npy, **kw)["corruption"]
    from_dirs = evaluate(trained / "run", "digits:test", corrupted=layout, **kw)["corruption"]
    assert from_dirs["layout"] == "imagenet-c" and from_dirs["profile"] == "imagenet"
    assert from_dirs["corruptions"] == ["snow", "contrast", "speckle_noise"]  # benchmark order
    for name in from_dirs["corruptions"]:
        assert from_dirs["per_corruption"][name]["severity_errors"] == pytest.approx(
            from_npy["per_corruption"][name]["severity_errors"], abs=1e-12)
    # ImageNet-C also gets AlexNet's normalisation, over the benchmark corruptions only
    per = from_dirs["per_corruption"]
    assert from_dirs["mce_alexnet_normalised"] == pytest.approx(
        (per["snow"]["error"] / ALEXNET_ERRORS["snow"] + per["contrast"]["error"] / ALEXNET_ERRORS["contrast"]) / 2)
    # a severity folder missing a picture is one clear line
    (layout / "snow" / "3" / str(labels[0]) / "img000.png").unlink()
    capsys.readouterr()
    assert run(["eval", "--checkpoint", str(trained / "run"), "--test", "digits:test", "--corrupted",
                str(layout), "--limit", "10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "snow/3" in err and len(err.strip().splitlines()) == 1
