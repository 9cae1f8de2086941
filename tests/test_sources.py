import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.data import safepickle
from ipmix_cli.data.sources import BadSourceImage, open_source

from _shards_build_helpers import (py2_pickle, smooth_picture, write_cifar_binary, write_cifar_python,
                                   write_image_folder)


def test_digits_split_and_upscale():
    from sklearn.datasets import load_digits

    train, test = open_source("digits"), open_source("digits:test")
    assert (len(train), len(test)) == (1437, 360)
    d = load_digits()
    assert np.array_equal(test.labels, d.target[::5])
    img = test.read(3)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], img[..., 2])
    # bilinear upscale of the 8x8 grey picture scaled 0..16 -> 0..255
    grey = np.rint(d.images[15] * 255 / 16).astype(np.uint8)
    ref = np.asarray(Image.fromarray(grey, "L").resize((32, 32), Image.BILINEAR))
    assert np.array_equal(img[..., 1], ref)
    assert train.classes == [str(i) for i in range(10)]
    counts = train.describe()["class_counts"]
    assert sum(counts.values()) == 1437 and set(counts) == set(train.classes)
    assert train.fingerprint != test.fingerprint
    assert pickle.loads(pickle.dumps(test)).read(3).tobytes() == img.tobytes()
    # the upscaled set is made once per process and not pickled; a block read gives read()'s pictures
    assert test._big is not None and pickle.loads(pickle.dumps(test))._big is None
    block = test.read_many([3, 0, 3, 359])
    assert block.shape == (4, 32, 32, 3) and all(np.array_equal(block[k], test.read(i)) for k, i in enumerate([3, 0, 3, 359]))


def test_py2_style_pickle_matches_stock_unpickler(tmp_path):
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    blob = py2_pickle({"labels": [3, 1], "data": data})
    ref = pickle.loads(blob, encoding="bytes")
    assert np.array_equal(ref[b"data"], data) and ref[b"labels"] == [3, 1]
    f = tmp_path / "b"
    f.write_bytes(blob)
    out = safepickle.load(f)
    assert out["labels"] == [3, 1]
    assert np.array_equal(np.asarray(out["data"].load(f)), data)


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_python3_pickles_of_arrays_load(tmp_path, protocol):
    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    f = tmp_path / "b"
    f.write_bytes(pickle.dumps({"labels": [0, 1, 2], "data": data}, protocol=protocol))
    out = safepickle.load(f)
    assert np.array_equal(np.asarray(out["data"].load(f)), data)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    evil = pickle.dumps({"labels": [0], "data": _Evil(marker)}, protocol=2)
    # sanity: the stock unpickler WOULD run it
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(evil)
    with pytest.raises(IpmixError, match=r"(system|posix).*refused"):
        open_source(f"cifar10:{tmp_path}")
    assert not marker.exists()
    with pytest.raises(safepickle.UnsafePickle):
        safepickle.load(folder / "data_batch_1")
    assert not marker.exists()


def test_pickle_with_builtins_eval_is_refused(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"\x80\x02cbuiltins\neval\nU\x041+1\x85R.")
    with pytest.raises(safepickle.UnsafePickle, match="builtins.eval"):
        safepickle.load(f)


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_python_batches(tmp_path, kind):
    folder, store = write_cifar_python(tmp_path, kind)
    train_names = [f"data_batch_{i}" for i in range(1, 6)] if kind == "cifar10" else ["train"]
    test_name = "test_batch" if kind == "cifar10" else "test"
    src = open_source(f"{kind}:{tmp_path}")
    imgs = np.concatenate([store[n][0] for n in train_names])
    labels = np.concatenate([store[n][1] for n in train_names])
    assert len(src) == len(imgs)
    assert np.array_equal(src.labels, labels)
    for i in (0, len(src) // 2 + 1, len(src) - 1):
        assert np.array_equal(src.read(i), imgs[i])
    assert src.classes[3] == ("c3" if kind == "cifar10" else "f3")
    # pointing at the extracted folder itself works too; pickled source reads the same
    src2 = pickle.loads(pickle.dumps(open_source(f"{kind}-test:{folder}")))
    assert np.array_equal(src2.read(2), store[test_name][0][2])
    assert np.array_equal(src2.labels, store[test_name][1])
    assert len(pickle.dumps(src)) < 20_000  # no pixels travel with the source


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_binary_batches(tmp_path, kind):
    folder, store = write_cifar_binary(tmp_path, kind)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if kind == "cifar10" else ["train.bin"]
    src = open_source(f"{kind}:{tmp_path}")
    imgs = np.concatenate([store[n][0] for n in names])
    assert np.array_equal(src.labels, np.concatenate([store[n][1] for n in names]))
    for i in range(len(src)):
        assert np.array_equal(src.read(i), imgs[i])
    some = [k % len(src) for k in (7, 0, 24, 3, 3, 11)]
    assert np.array_equal(src.read_many(some), imgs[some])
    assert src.describe()["format"] == "binary"
    test = open_source(f"{kind}-test:{folder}")
    assert len(test) == len(store["test_batch.bin" if kind == "cifar10" else "test.bin"][0])
    assert src.classes[5] == ("c5" if kind == "cifar10" else "f5")
    # a batch cut short after the source was opened: a clear error, not a crash reading the mapping
    last = folder / names[-1]
    last.write_bytes(last.read_bytes()[:-100])
    with pytest.raises(IpmixError, match="shorter than its batch header says"):
        src.read_many([len(src) - 1])
    assert np.array_equal(src.read_many([0]), imgs[:1])


def test_cifar_errors(tmp_path):
    with pytest.raises(IpmixError, match="source not found"):
        open_source(f"cifar10:{tmp_path / 'nope'}")
    with pytest.raises(IpmixError, match="no cifar10 train batches"):
        open_source(f"cifar10:{tmp_path}")
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(b"x" * 100)
    with pytest.raises(IpmixError, match="not a CIFAR binary batch"):
        open_source(f"cifar10:{tmp_path}")


def test_cifar_partial_copy_names_the_missing_batch(tmp_path):
    folder, _ = write_cifar_python(tmp_path, "cifar10")
    (folder / "data_batch_4").unlink()
    with pytest.raises(IpmixError, match=r"cifar-10-batches-py lacks data_batch_4 of the cifar10 train set"):
        open_source(f"cifar10:{tmp_path}")
    open_source(f"cifar10-test:{tmp_path}")  # the test split is whole: still readable


def test_image_folder_modes_and_exif(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    base = smooth_picture(24, 1)
    Image.fromarray(base).convert("L").save(root / "a" / "grey.png")
    Image.fromarray(base).convert("P").save(root / "a" / "palette.gif")
    Image.fromarray(base).convert("CMYK").save(root / "a" / "cmyk.jpg")
    Image.fromarray((base[..., 0].astype(np.uint16) * 257)).save(root / "b" / "deep.png")
    rgba = np.concatenate([base, np.full((24, 24, 1), 128, np.uint8)], 2)
    Image.fromarray(rgba, "RGBA").save(root / "b" / "alpha.png")
    tall = Image.fromarray(smooth_picture(30, 2)[:, :20])  # 30 high, 20 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    tall.save(root / "b" / "rotated.jpg", exif=exif.tobytes())
    (root / "b" / "notes.txt").write_text("not a picture")
    src = open_source(str(root))
    assert src.classes == ["a", "b"]
    assert len(src) == 6 and list(src.labels) == [0, 0, 0, 1, 1, 1]
    assert src.describe()["class_counts"] == {"a": 3, "b": 3}
    shapes = [src.read(i).shape for i in range(len(src))]
    assert all(s[2] == 3 for s in shapes)
    i_rot = [n.endswith("rotated.jpg") for n in src.files].index(True)
    assert shapes[i_rot] == (20, 30, 3)
    i_deep = [n.endswith("deep.png") for n in src.files].index(True)
    assert np.abs(src.read(i_deep)[..., 1].astype(int) - base[..., 0]).max() <= 1
    assert open_source(f"folder:{root}").fingerprint == src.fingerprint


def test_image_folder_errors(tmp_path):
    with pytest.raises(IpmixError, match="source not found"):
        open_source(str(tmp_path / "missing"))
    root = write_image_folder(tmp_path / "d", per_class=2)
    (root / "empty").mkdir()
    with pytest.raises(IpmixError, match=r"class folder .*empty holds no pictures"):
        open_source(str(root))
    (root / "empty").rmdir()
    (root / "cat" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    src = open_source(str(root))
    with pytest.raises(BadSourceImage, match=r"cat/001\.png"):
        src.read(1)
    with pytest.raises(IpmixError, match="unknown source kind"):
        open_source("imagenet:x")


def _write_wds(path, items, field="png"):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for key, img, label in items:
            buf = io.BytesIO()
            if field == "npy":
                np.save(buf, img)
            else:
                Image.fromarray(img).save(buf, format="PNG")
            for name, data in ((f"{key}.{field}", buf.getvalue()), (f"{key}.cls", str(label).encode()),
                               (f"{key}.txt", b"hello")):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


def test_webdataset_shards(tmp_path):
    imgs = [smooth_picture(16, i) for i in range(7)]
    _write_wds(tmp_path / "s-000.tar", [(f"k{i}", imgs[i], i % 3) for i in range(4)])
    _write_wds(tmp_path / "s-001.tar", [(f"dir/k{i}", imgs[i], i % 3) for i in range(4, 7)], field="npy")
    for spec in (f"wds:{tmp_path}/s-{{000..001}}.tar", f"wds:{tmp_path}/s-*.tar", f"wds:{tmp_path}"):
        src = open_source(spec)
        assert len(src) == 7
        assert list(src.labels) == [i % 3 for i in range(7)]
        assert src.classes == ["0", "1", "2"]
        for i in range(7):
            assert np.array_equal(src.read(i), imgs[i])
    src = pickle.loads(pickle.dumps(src))
    assert np.array_equal(src.read(5), imgs[5])
    with pytest.raises(IpmixError, match="source not found"):
        open_source(f"wds:{tmp_path}/none-*.tar")
    with pytest.raises(IpmixError, match="only local shard files"):
        open_source("wds:pipe:aws s3 cp s3://b/x.tar -")


def test_folder_broken_link_is_a_bad_image_not_a_scan_error(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "a" / "0.png")
    os.symlink(tmp_path / "gone.png", root / "a" / "1.png")  # a link to a file that was removed
    src = open_source(f"folder:{root}")  # listing works, so --skip-bad can replace the image later
    assert len(src) == 2 and src.read(0).shape == (8, 8, 3)
    with pytest.raises(BadSourceImage, match=r"a/1\.png: unreadable") as err:
        src.read(1)
    assert err.value.path.endswith("1.png")


def test_folder_file_names_that_are_not_utf8(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "a" / "0.png")
    odd = os.path.join(os.fsencode(root / "a"), b"caf\xe9.png")  # Latin-1 bytes, not UTF-8
    with open(odd, "wb") as f:
        Image.new("RGB", (8, 8), (9, 8, 7)).save(f, format="PNG")
    src = open_source(f"folder:{root}")
    assert len(src) == 2 and src.read(1)[0, 0].tolist() == [9, 8, 7]
    first = src.fingerprint
    os.rename(odd, os.path.join(os.fsencode(root / "a"), b"caf\xe8.png"))  # another name of the same size
    assert open_source(f"folder:{root}").fingerprint != first
    with open(os.path.join(os.fsencode(root / "a"), b"caf\xe8.png"), "wb") as f:
        f.write(b"not a picture")
    with pytest.raises(BadSourceImage) as err:
        open_source(f"folder:{root}").read(1)
    assert os.fsencode(err.value.path).endswith(b"caf\xe8.png")
