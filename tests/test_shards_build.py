"""Single-process builds: output layout, readers, sources, resume, refusals and bad input."""

import io
import json
import os
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image

from ipmix_cli.cli import main as cli
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shards import build_shards
from ipmix_cli.shards import build as build_mod

from _shards_build_helpers import write_cifar_python, write_image_folder, write_mixing_folder

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    return write_mixing_folder(tmp_path_factory.mktemp("mix") / "fractals")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("src") / "data", per_class=6, classes=("cat", "dog", "eel"))


def shard_bytes(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("epoch-*/*.tar"))}


def run_cli(args, capsys=None):
    code = cli.run(["shards", "build", "--quiet", *map(str, args)])
    return code


def test_build_layout_manifest_and_stock_readers(tmp_path, mix, folder):
    out = tmp_path / "out"
    m = build_shards(source=str(folder), fractals=mix, out=out, epochs=2, shards=4, seed=5, format="png",
                     progress=False)
    assert m["complete"] and m["schema"] == "ipmix-shards" and m["schema_version"] == 2
    assert (m["samples_per_epoch"], m["shards_per_epoch"], m["samples_per_shard"]) == (20, 4, 5)
    assert m["pads_per_epoch"] == 2 and m["classes"] == ["cat", "dog", "eel"] and m["fields"] == ["png"]
    assert m["source"]["class_counts"] == {"cat": 6, "dog": 6, "eel": 6}
    assert m["mixing_set"]["fingerprint"] and m["config"]["augment"]["image_size"] == 32
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["config_hash"] == m["config_hash"] and on_disk["complete"]
    assert (out / "README.md").is_file() and (out / "epoch-0001" / "wids-index.json").is_file()
    import hashlib

    for e, entry in enumerate(on_disk["epochs"]):
        assert entry["epoch"] == e and entry["index"] == f"epoch-{e:04d}/wids-index.json"
        for s, rec in enumerate(entry["shards"]):
            data = (out / rec["path"]).read_bytes()
            assert rec["path"] == f"epoch-{e:04d}/ipmix-e{e:04d}-{s:05d}.tar"
            assert (rec["count"], rec["bytes"], rec["sha256"]) == (5, len(data), hashlib.sha256(data).hexdigest())

    # plain tar: ustar, integer mtime, members of a sample adjacent, key order
    tar = out / "epoch-0000" / "ipmix-e0000-00000.tar"
    listing = subprocess.run(["tar", "tvf", str(tar)], capture_output=True, text=True, check=True).stdout.split("\n")
    assert len([l for l in listing if l.strip()]) == 15
    with tarfile.open(tar) as tf:
        names = tf.getnames()
        assert all(i.mtime == 0 and not i.pax_headers for i in tf.getmembers())
    assert names[:3] == [f"{names[0].split('.')[0]}.{f}" for f in ("png", "cls", "json")]

    # stock webdataset
    import webdataset as wds

    urls = [str(out / r["path"]) for r in on_disk["epochs"][1]["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert len(samples) == 20
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == 20 and all(k.startswith("e0001s") and "." not in k for k in keys)
    for s in samples:
        assert s["png"].shape == (32, 32, 3) and s["png"].dtype == np.uint8
        assert s["cls"] in (0, 1, 2)
    pads = [s["json"]["pad"] for s in samples]
    assert sum(pads) == 2
    real = sorted(s["json"]["index"] for s in samples if not s["json"]["pad"])
    assert real == list(range(18))
    src_labels = [0] * 6 + [1] * 6 + [2] * 6
    assert all(s["cls"] == src_labels[s["json"]["index"]] for s in samples)

    # wids
    import wids

    ds = wids.ShardListDataset(str(out / "epoch-0000" / "wids-index.json"))
    assert len(ds) == 20
    sample = ds[7]
    assert ".png" in sample and ".cls" in sample

    # epochs are independent draws: same source image, different augmentation and order
    e0 = list(wds.WebDataset([str(out / r["path"]) for r in on_disk["epochs"][0]["shards"]],
                             shardshuffle=False).decode("rgb8"))
    by_index0 = {s["json"]["index"]: s["png"] for s in e0 if not s["json"]["pad"]}
    by_index1 = {s["json"]["index"]: s["png"] for s in samples if not s["json"]["pad"]}
    assert sum(not np.array_equal(by_index0[i], by_index1[i]) for i in range(18)) >= 12
    assert [s["json"]["index"] for s in e0] != [s["json"]["index"] for s in samples]


def test_wids_with_one_cache_dir_reads_each_epoch_not_epoch_0(tmp_path, mix, folder):
    # wids names its cached copy of a shard after the shard's file name; with names that repeat
    # across epochs, epochs 1 and 2 were silently epoch 0's samples
    import wids

    out = tmp_path / "out"
    m = build_shards(source=str(folder), fractals=mix, out=out, epochs=3, shards=2, format="png", progress=False)
    names = [os.path.basename(s["path"]) for e in m["epochs"] for s in e["shards"]]
    assert len(set(names)) == len(names) == 6
    cache = tmp_path / "wids-cache"
    for e in range(3):
        ds = wids.ShardListDataset(str(out / f"epoch-{e:04d}" / "wids-index.json"), cache_dir=str(cache))
        keys = {ds[i]["__key__"] for i in range(len(ds))}
        assert len(keys) == m["samples_per_epoch"] and all(k.startswith(f"e{e:04d}s") for k in keys)


def test_a_build_of_the_previous_schema_is_read_but_not_resumed(tmp_path, mix, folder, capsys):
    out = tmp_path / "out"
    build_shards(source=str(folder), fractals=mix, out=out, shards=2, format="png", progress=False)
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**m, "schema_version": 1}))
    from ipmix_cli.shards.verify import verify

    assert verify(out, progress=False)["ok"]
    assert run_cli(["--out", out]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: ") and "schema version 1, this ipmix writes 2" in err[-1]
    assert "use --overwrite to rebuild" in err[-1]


def test_views3_digits_and_npy(tmp_path, mix):
    out = tmp_path / "o"
    m = build_shards(source="digits:test", fractals=mix, out=out, views=3, format="npy", shards=8, progress=False)
    assert m["fields"] == ["clean.npy", "aug1.npy", "aug2.npy"] and m["samples_per_epoch"] == 360
    import webdataset as wds

    s = next(iter(wds.WebDataset(str(out / "epoch-0000" / "ipmix-e0000-00003.tar"), shardshuffle=False).decode()))
    clean, a1, a2 = s["clean.npy"], s["aug1.npy"], s["aug2.npy"]
    assert clean.shape == a1.shape == (32, 32, 3)
    assert not np.array_equal(a1, a2)
    from ipmix_cli.data.sources import open_source

    assert s["cls"] == int(open_source("digits:test").labels[s["json"]["index"]])


def test_cifar_source_and_wds_round_trip(tmp_path, mix):
    write_cifar_python(tmp_path / "c", "cifar10", per_batch=4)
    out = tmp_path / "o1"
    m = build_shards(source=f"cifar10:{tmp_path / 'c'}", fractals=mix, out=out, recipe="none", shards=4,
                     progress=False)
    assert m["samples_per_epoch"] == 20 and m["classes"][0] == "c0" and m["source"]["kind"] == "cifar10"
    # our own shards are a source again (image + cls)
    out2 = tmp_path / "o2"
    m2 = build_shards(source=f"wds:{out}/epoch-0000/*.tar", fractals=mix, out=out2, shards=2, progress=False)
    assert m2["source_samples"] == 20 and m2["classes"] == m["classes"]


def test_imagenet_preset_folder_gets_jpeg(tmp_path, mix, folder):
    out = tmp_path / "o"
    big_mix = write_mixing_folder(tmp_path / "bigmix", n=2, size=260)
    m = build_shards(source=str(folder), fractals=big_mix, out=out, preset="imagenet", shards=2, progress=False)
    assert (m["format"], m["quality"], m["image_size"]) == ("jpg", 95, 224)
    with tarfile.open(out / "epoch-0000" / "ipmix-e0000-00001.tar") as tf:
        member = tf.getmembers()[0]
        assert member.name.endswith(".jpg")
        img = Image.open(io.BytesIO(tf.extractfile(member).read()))
        assert img.size == (224, 224)


def test_imagenet_build_crops_decoded_pictures_like_the_array_path(tmp_path, folder):
    # the build crops each decoded picture in place (Pillow's storage, 4 bytes a pixel); the
    # views must be those of make_views on the same pictures as plain arrays
    from fractalgen.images import load_rgb
    from ipmix_cli.augment import Augmenter, MixingBank, resolve_config

    big_mix = write_mixing_folder(tmp_path / "bigmix", n=2, size=260)
    out = tmp_path / "o"
    m = build_shards(source=str(folder), fractals=big_mix, out=out, preset="imagenet", views=3, format="png",
                     shards=2, seed=9, progress=False)
    cfg = resolve_config("imagenet", views=3)
    aug = Augmenter(cfg, MixingBank.from_folder(big_mix, cfg))
    files = sorted(p for p in folder.glob("*/*") if p.is_file())
    n = len(files)
    checked = 0
    for shard in sorted(out.glob("epoch-0000/*.tar")):
        with tarfile.open(shard) as tf:
            blobs = {mem.name: tf.extractfile(mem).read() for mem in tf.getmembers()}
        for name in sorted(k for k in blobs if k.endswith(".json")):
            key = name[:-len(".json")]
            meta = json.loads(blobs[name])
            views = [np.asarray(Image.open(io.BytesIO(blobs[f"{key}.{f}"]))) for f in m["fields"]]
            idx = meta["index"] + n * int(meta["pad"])
            expected = aug.make_views([load_rgb(files[meta["index"]])], 9, 0, [idx])[0]
            assert np.array_equal(np.stack(views), expected), key
            checked += 1
    assert checked == m["samples_per_epoch"] == 18


def test_dry_run_writes_nothing(tmp_path, mix, capsys):
    out = tmp_path / "never"
    assert run_cli(["--source", "digits", "--fractals", mix, "--out", out, "--epochs", "3", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "bytes on disk" in text and "time estimate" in text and "32 x 45" in text
    assert not out.exists()
    (tmp_path / "file").write_text("x")  # an OUT the real run could not create fails the dry run too
    assert run_cli(["--source", "digits", "--fractals", mix, "--out", tmp_path / "file" / "o", "--dry-run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: cannot write to") and "is a file" in err[0]


def test_json_for_the_dry_run_plan_and_the_build_result(tmp_path, mix, capsys):
    import re

    out = tmp_path / "o"
    args = ["shards", "build", "--source", "digits:test", "--fractals", str(mix), "--out", str(out), "--shards", "4"]
    assert cli.run([*args, "--dry-run", "--json", "--workers", "64"]) == 0  # progress lines stay on stderr
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] and (plan["epochs"], plan["shards_per_epoch"], plan["tasks_this_node"]) == (1, 4, 4)
    assert plan["parallel_workers"] == min(64, os.cpu_count()) and plan["startup_seconds"] > 0
    # start-up counted once, the work shared by the workers that run at once
    work = plan["pilot_seconds"] / plan["pilot_samples"] * 360 / plan["parallel_workers"]
    assert plan["estimated_seconds"] == pytest.approx(plan["startup_seconds"] + work)
    assert not out.exists()
    assert cli.run([*args, "--dry-run"]) == 0
    estimate = [l for l in capsys.readouterr().out.splitlines() if l.startswith("time estimate")][0]
    assert re.match(r"time estimate +\d+:\d\d:\d\d \(h:mm:ss\) for 4 shard\(s\)", estimate), estimate
    assert cli.run([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    m = json.loads((out / "manifest.json").read_text())
    assert result["complete"] and result["out"] == str(out) and result["config_hash"] == m["config_hash"]
    assert result["totals"] == m["totals"] and result["stats"]["shards_built"] == 4 and result["bad_samples"] == []


def test_dry_run_estimates_only_the_shards_left_to_build(tmp_path, mix, folder, capsys):
    out = tmp_path / "o"
    build_shards(source=str(folder), fractals=mix, out=out, epochs=1, shards=2, progress=False)
    before = shard_bytes(out)
    capsys.readouterr()
    assert run_cli(["--out", out, "--extend-epochs", "2", "--dry-run"]) == 0
    assert "for 4 shard(s) to build" in capsys.readouterr().out  # not the 6 of the whole build
    assert run_cli(["--out", out, "--dry-run"]) == 0
    assert "for 0 shard(s) to build" in capsys.readouterr().out
    assert run_cli(["--out", out, "--source", folder, "--fractals", mix, "--shards", "2", "--overwrite",
                    "--dry-run"]) == 0
    assert "for 2 shard(s) to build" in capsys.readouterr().out  # --overwrite rebuilds everything
    assert shard_bytes(out) == before


def test_resume_rebuilds_only_damaged_shards(tmp_path, mix, folder, monkeypatch):
    out = tmp_path / "o"
    build_shards(source=str(folder), fractals=mix, out=out, epochs=2, shards=3, progress=False)
    before = shard_bytes(out)
    victim = out / "epoch-0001" / "ipmix-e0001-00002.tar"
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF  # same size, wrong hash
    victim.write_bytes(bytes(data))
    built = []
    real = build_mod.write_shard
    monkeypatch.setattr(build_mod, "write_shard", lambda ctx, e, s: built.append((e, s)) or real(ctx, e, s))
    m = build_shards(out=out, progress=False)  # everything else from the manifest
    assert built == [(1, 2)]
    assert shard_bytes(out) == before and m["complete"]


def test_interrupt_exits_130_and_resume_is_identical(tmp_path, mix, folder, monkeypatch, capsys):
    ref = tmp_path / "ref"
    build_shards(source=str(folder), fractals=mix, out=ref, epochs=2, shards=3, progress=False)
    out = tmp_path / "o"
    real, calls = build_mod.write_shard, []

    def flaky(ctx, e, s):
        calls.append((e, s))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(ctx, e, s)

    monkeypatch.setattr(build_mod, "write_shard", flaky)
    args = ["--source", folder, "--fractals", mix, "--out", out, "--epochs", "2", "--shards", "3"]
    assert run_cli(args) == 130
    assert "resume" in capsys.readouterr().err
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    monkeypatch.setattr(build_mod, "write_shard", real)
    assert run_cli(args) == 0
    assert shard_bytes(out) == shard_bytes(ref)
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (out, ref))
    assert a["epochs"] == b["epochs"] and a["config_hash"] == b["config_hash"]


def test_changed_configuration_is_refused(tmp_path, mix, folder, capsys):
    out = tmp_path / "o"
    base = ["--source", folder, "--fractals", mix, "--out", out, "--shards", "2"]
    assert run_cli(base) == 0
    before = shard_bytes(out)
    assert run_cli(base + ["--seed", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different configuration" in err[0] and "seed" in err[0] and "--overwrite" in err[0]
    assert run_cli(base + ["--epochs", "3"]) == 1
    assert "--extend-epochs 2" in capsys.readouterr().err
    assert shard_bytes(out) == before
    assert run_cli(base + ["--seed", "1", "--overwrite"]) == 0
    assert shard_bytes(out) != before
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1


def test_extend_epochs_keeps_old_bytes_and_matches_a_longer_build(tmp_path, mix, folder):
    one, two = tmp_path / "one", tmp_path / "two"
    build_shards(source=str(folder), fractals=mix, out=one, epochs=1, shards=2, progress=False)
    first = shard_bytes(one)
    m = build_shards(out=one, extend_epochs=1, progress=False)
    assert m["num_epochs"] == 2 and len(m["epochs"]) == 2 and m["complete"]
    build_shards(source=str(folder), fractals=mix, out=two, epochs=2, shards=2, progress=False)
    assert shard_bytes(one) == shard_bytes(two)
    assert {k: v for k, v in shard_bytes(one).items() if k.startswith("epoch-0000")} == first
    with pytest.raises(IpmixError, match="give one of them"):  # not "needs an existing build"
        build_shards(out=one, extend_epochs=1, overwrite=True, progress=False)
    assert shard_bytes(one) == shard_bytes(two)


def test_corrupt_source_image_fails_or_is_skipped(tmp_path, mix, folder, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(folder, src)
    bad = src / "dog" / "002.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    out = tmp_path / "o"
    assert run_cli(["--source", src, "--fractals", mix, "--out", out, "--shards", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "--skip-bad" in err[0]
    assert not list(out.glob("epoch-*/*.tar")) or not json.loads((out / "manifest.json").read_text())["complete"]
    assert run_cli(["--source", src, "--fractals", mix, "--out", out, "--shards", "2", "--skip-bad"]) == 1  # differs
    capsys.readouterr()
    assert run_cli(["--source", src, "--fractals", mix, "--out", out, "--shards", "2", "--skip-bad",
                    "--overwrite"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and [b["name"] for b in m["bad_samples"]] == [str(bad)]
    import webdataset as wds

    samples = list(wds.WebDataset(sorted(str(p) for p in out.glob("epoch-0000/*.tar")), shardshuffle=False))
    metas = [json.loads(s["json"]) for s in samples]
    assert len(samples) == 18
    bad_index = m["bad_samples"][0]["index"]
    assert [x.get("replaces") for x in metas if "replaces" in x] == [bad_index]
    assert bad_index not in [x["index"] for x in metas]


def test_a_file_name_that_is_not_utf8_is_an_image_like_any_other(tmp_path, mix, folder, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(folder, src)
    odd = os.path.join(os.fsencode(src / "dog"), b"\xff\xfe-odd.png")
    with open(odd, "wb") as f:
        f.write(b"\x89PNG truncated")
    args = ["--source", src, "--fractals", mix, "--shards", "2"]
    assert run_cli([*args, "--out", tmp_path / "o1"]) == 1  # named, like any unreadable picture
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and "\\xff\\xfe-odd.png" in err[0]
    assert run_cli([*args, "--out", tmp_path / "o2", "--skip-bad"]) == 0
    m = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert m["complete"] and [os.fsencode(b["name"]) for b in m["bad_samples"]] == [odd]
    assert (tmp_path / "o2" / "README.md").is_file()
    with open(odd, "wb") as f:  # a readable picture under that name is used
        Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(f, format="PNG")
    assert run_cli([*args, "--out", tmp_path / "o3"]) == 0
    assert json.loads((tmp_path / "o3" / "manifest.json").read_text())["source_samples"] == 19


def test_corrupt_source_image_at_224_px_names_it_or_is_replaced(tmp_path, folder, capsys):
    # the ImageNet preset reads decoded pictures and crops them at once: same failure and skip
    import shutil

    src = tmp_path / "src"
    shutil.copytree(folder, src)
    bad = src / "eel" / "001.png"
    bad.write_bytes(bad.read_bytes()[:80])
    big_mix = write_mixing_folder(tmp_path / "bigmix", n=2, size=260)
    args = ["--source", src, "--fractals", big_mix, "--preset", "imagenet", "--shards", "2"]
    assert run_cli([*args, "--out", tmp_path / "o1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    assert run_cli([*args, "--out", tmp_path / "o2", "--skip-bad", "--workers", "2"]) == 0
    m = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert m["complete"] and [b["name"] for b in m["bad_samples"]] == [str(bad)]
    assert run_cli([*args, "--out", tmp_path / "o3", "--skip-bad"]) == 0
    assert shard_bytes(tmp_path / "o2") == shard_bytes(tmp_path / "o3")  # 1 or 2 workers


@pytest.mark.parametrize("case", ["empty-class", "missing-source", "no-pictures", "unwritable", "not-empty",
                                  "foreign-manifest", "source-is-a-file", "fractals-is-a-file"])
def test_bad_inputs_give_one_line(tmp_path, mix, folder, capsys, case):
    import shutil

    src, fractals, out = str(folder), str(mix), tmp_path / "o"
    if case == "empty-class":
        shutil.copytree(folder, tmp_path / "s")
        (tmp_path / "s" / "zebra").mkdir()
        src, expect = str(tmp_path / "s"), "holds no pictures"
    elif case == "missing-source":
        src, expect = str(tmp_path / "nowhere"), "source not found"
    elif case == "no-pictures":
        (tmp_path / "emptymix").mkdir()
        (tmp_path / "emptymix" / "readme.txt").write_text("x")
        fractals, expect = str(tmp_path / "emptymix"), "holds no pictures"
    elif case == "unwritable":
        (tmp_path / "file").write_text("x")
        out, expect = tmp_path / "file" / "o", "file"
    elif case == "source-is-a-file":
        (tmp_path / "data.tar").write_bytes(b"x")
        src, expect = str(tmp_path / "data.tar"), "is a file, not an image folder; for WebDataset shards write wds:"
    elif case == "fractals-is-a-file":
        (tmp_path / "mix.png").write_bytes(b"x")
        fractals, expect = str(tmp_path / "mix.png"), "is a file; give the folder of mixing pictures"
    elif case == "not-empty":
        out.mkdir()
        (out / "thesis.tex").write_text("x")
        expect = "not empty"
    else:
        out.mkdir()
        (out / "manifest.json").write_text('{"name": "someone else\'s"}')
        expect = "not an ipmix shards manifest"
    extra = ["--overwrite"] if case == "foreign-manifest" else []
    assert run_cli(["--source", src, "--fractals", fractals, "--out", out, *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and expect in err[0], err
    if case == "not-empty":
        assert (out / "thesis.tex").read_text() == "x"
    if case == "foreign-manifest":
        assert "someone else" in (out / "manifest.json").read_text()


def test_combine_reports_missing_parts(tmp_path, mix, folder, capsys):
    out = tmp_path / "o"
    m = build_shards(source=str(folder), fractals=mix, out=out, shards=3, num_nodes=2, node_rank=0, progress=False)
    assert not m["complete"]
    assert cli.run(["shards", "combine", str(out)]) == 1
    assert "not built yet" in capsys.readouterr().err
    with pytest.raises(IpmixError, match="no manifest"):
        build_mod.combine_parts(tmp_path)


def test_combine_names_a_part_built_with_other_options(tmp_path, mix, folder, capsys):
    import shutil

    p0, p1 = tmp_path / "p0", tmp_path / "p1"  # parts on different disks, copied together
    build_shards(source=str(folder), fractals=mix, out=p0, shards=3, num_nodes=2, node_rank=0, progress=False)
    build_shards(source=str(folder), fractals=mix, out=p1, shards=3, num_nodes=2, node_rank=1, seed=1,
                 progress=False)
    shutil.copytree(p1 / "epoch-0000", p0 / "epoch-0000", dirs_exist_ok=True)
    shutil.copytree(p1 / ".records", p0 / ".records", dirs_exist_ok=True)
    capsys.readouterr()
    assert cli.run(["shards", "combine", str(p0)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 shard(s) were built with a different configuration" in err[0]
    assert "epoch-0000/ipmix-e0000-00001.tar" in err[0]
    build_shards(source=str(folder), fractals=mix, out=p0, shards=3, num_nodes=2, node_rank=1, progress=False)
    assert json.loads((p0 / "manifest.json").read_text())["complete"]  # the part run again fixes it


def test_dali_index_and_context_travels_small(tmp_path, mix, folder):
    out = tmp_path / "o"
    m = build_shards(source=str(folder), fractals=mix, out=out, shards=2, dali_index=True, workers=1,
                     progress=False)
    from ipmix_cli.shards.indexes import parse_dali_index

    for rec in m["epochs"][0]["shards"]:
        idx = out / rec["path"].replace(".tar", ".idx")
        samples = parse_dali_index(idx)
        assert len(samples) == rec["count"]
        data = (out / rec["path"]).read_bytes()
        ext, offset, size, name = samples[0][0]
        assert name.endswith("." + ext) and data[offset:offset + size][:6] == b"\x93NUMPY"
    from ipmix_cli.shards.spec import BuildRequest, RunOptions

    run = RunOptions(out=out)
    ctx = build_mod.prepare(build_mod.resolve(BuildRequest(), run), run).ctx  # the build in OUT, resolved again
    from ipmix_cli.shards import distributed

    ctx_path = distributed.write_context(ctx)
    # the mixing bank travels as the path of its memory-mapped file, not as pixels
    assert os.path.getsize(ctx_path) < 8_000 < ctx.bank.pixels.nbytes
    assert distributed.load_context(ctx_path).bank.fingerprint == ctx.bank.fingerprint


def test_dali_index_can_be_added_to_a_finished_build(tmp_path, mix, folder):
    out = tmp_path / "o"
    m = build_shards(source=str(folder), fractals=mix, out=out, shards=2, progress=False)
    assert not list(out.glob("epoch-*/*.idx"))
    before = shard_bytes(out)
    m2 = build_shards(out=out, dali_index=True, progress=False)
    assert m2["config_hash"] == m["config_hash"] and m2["config"]["dali_index"]
    assert len(list(out.glob("epoch-0000/*.idx"))) == 2 and shard_bytes(out) == before


def test_wids_index_from_records_equals_the_tools_writer(tmp_path, mix, folder):
    from ipmix_cli.shards.indexes import wids_index_document

    out = tmp_path / "o"
    m = build_shards(source=str(folder), fractals=mix, out=out, epochs=2, shards=3, progress=False)
    for entry in m["epochs"]:
        mine = json.loads((out / entry["index"]).read_text())
        # a build to a folder computes no md5: its index lists none, and its records hold none
        assert mine == wids_index_document(out, entry, mine["name"], md5=False)
        assert all("md5" not in s for s in entry["shards"])


def test_seed_beyond_2_63_is_a_usage_error_before_anything_is_written(tmp_path, mix, capsys):
    out = tmp_path / "o"
    assert run_cli(["--source", "digits:test", "--fractals", mix, "--out", out, "--seed", str(2**63)]) == 2
    assert "--seed" in capsys.readouterr().err and not out.exists()


def test_augmentation_options_reach_the_build_and_are_kept_on_resume(tmp_path, mix):
    kw = dict(source="digits:test", fractals=str(mix), epochs=1, shards=2, progress=False)
    plain = build_shards(out=tmp_path / "plain", **kw)
    paper = build_shards(out=tmp_path / "paper", augment={"min_ops": "1", "overflow": "wrap"}, **kw)
    assert paper["config"]["augment"]["min_ops"] == 1 and paper["config"]["augment"]["overflow"] == "wrap"
    assert plain["config"]["augment"]["min_ops"] == 0
    assert paper["config_hash"] != plain["config_hash"]
    assert paper["epochs"][0]["shards"][0]["sha256"] != plain["epochs"][0]["shards"][0]["sha256"]
    # resuming without the options keeps them; asking for other ones is refused
    again = build_shards(out=tmp_path / "paper", progress=False)
    assert again["config_hash"] == paper["config_hash"]
    with pytest.raises(IpmixError, match="augment"):
        build_shards(out=tmp_path / "paper", augment={"severity": "5"}, progress=False)


def test_cli_aug_option_parsing_and_node_rank_requirement(tmp_path, capsys):
    run = cli.run
    assert run(["shards", "build", "--source", "digits", "--out", str(tmp_path / "o"), "--aug", "min_ops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert run(["shards", "build", "--source", "digits", "--out", str(tmp_path / "o"), "--aug", "nope=3"]) == 1
    assert "unknown augmentation option" in capsys.readouterr().err
    assert run(["shards", "build", "--source", "digits", "--out", str(tmp_path / "o"), "--num-nodes", "2"]) == 2
    assert "--node-rank" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_augmix_needs_no_mixing_set_and_ignores_one(tmp_path, mix):
    kw = dict(source="digits:test", epochs=1, shards=2, recipe="augmix", progress=False)
    without = build_shards(out=tmp_path / "a", **kw)
    with_mix = build_shards(out=tmp_path / "b", fractals=str(mix), **kw)
    assert without["mixing_set"]["fingerprint"] is None
    assert [s["sha256"] for s in without["epochs"][0]["shards"]] == \
        [s["sha256"] for s in with_mix["epochs"][0]["shards"]]
    with pytest.raises(IpmixError, match="give the mixing set with fractals DIR"):
        build_shards(out=tmp_path / "c", **{**kw, "recipe": "pixmix"})


def test_the_workers_write_dali_indexes_with_their_shards_and_combine_writes_only_missing_ones(tmp_path, mix,
                                                                                                folder, monkeypatch):
    from ipmix_cli.shards import indexes
    from ipmix_cli.shards.manifest import read_record

    out = tmp_path / "o"
    build_shards(source=str(folder), fractals=mix, out=out, epochs=2, shards=3, dali_index=True, workers=2,
                 progress=False)
    assert all(read_record(out, e, s)["dali_index"] for e in range(2) for s in range(3))
    made = {p: p.read_bytes() for p in sorted(out.glob("epoch-*/*.idx"))}
    assert len(made) == 6 and all(data == ("\n".join(indexes.dali_index_lines(p.with_suffix(".tar"))) + "\n").encode()
                                  for p, data in made.items())
    written = []
    real = indexes.write_dali_index
    monkeypatch.setattr(indexes, "write_dali_index", lambda tar: written.append(tar) or real(tar))
    lost = sorted(made)[4]
    lost.unlink()
    build_mod.combine_parts(out)  # rereads only the shard whose index went missing
    assert written == [lost.with_suffix(".tar")]
    assert {p: p.read_bytes() for p in sorted(out.glob("epoch-*/*.idx"))} == made
