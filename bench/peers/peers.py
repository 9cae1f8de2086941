"""`make bench-peers`: ipmix's shard writer and reader beside the ones users would pick instead.

Run with the peers' own environment (bench/peers/requirements.txt; never the project's):

    .venv-peers/bin/python bench/peers/peers.py --ipmix-python .venv/bin/python

Every writer is a whole process (imports and data loading included) pinned to one core, and
writes the same samples: N raw 32x32x3 pictures with their labels (a CIFAR-10 binary file)
for 2 epochs. The floor is plain Python: one f.write per sample, then one fsync. Readers are
timed on their loop only, on one core. Rounds are interleaved; medians are reported with the
load average seen during the run. A last part times JPEG decode/encode at the 224 px preset's
settings with Pillow, simplejpeg and OpenCV (the codecs the 224 px build spends most time in).
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata as md
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
RECORD = 3073  # CIFAR-10 binary: label byte + 3072 planar pixel bytes


# --------------------------------------------------------------------------- data

def write_source(folder: Path, n: int) -> Path:
    """A CIFAR-10-binary-shaped source of n pictures (smooth colour waves plus noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32] / 32.0
    base = np.empty((64, 32, 32, 3), np.uint8)
    for i in range(64):
        f, g, ph = rng.uniform(2, 9, 3), rng.uniform(2, 9, 3), rng.uniform(0, 6.3, 3)
        wave = 128 + 100 * np.sin(f * x[..., None] + g * y[..., None] + ph)
        base[i] = np.clip(wave + rng.normal(0, 10, wave.shape), 0, 255)
    idx = np.arange(n) % 64
    planar = base[idx].transpose(0, 3, 1, 2).reshape(n, 3072)
    labels = (np.arange(n) % 10).astype(np.uint8)
    d = folder / "cifar-10-batches-bin"
    d.mkdir(parents=True, exist_ok=True)
    per = -(-n // 5)
    for b in range(5):
        sl = slice(b * per, min(n, (b + 1) * per))
        (d / f"data_batch_{b + 1}.bin").write_bytes(np.concatenate([labels[sl, None], planar[sl]], 1).tobytes())
    (d / "batches.meta.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    return folder


def load_source(folder: Path):
    """(pictures [n, 32, 32, 3] uint8, labels) from the CIFAR-10 binary batches."""
    files = sorted(glob.glob(str(folder / "cifar-10-batches-bin" / "data_batch_*.bin")))
    recs = np.concatenate([np.fromfile(f, np.uint8).reshape(-1, RECORD) for f in files])
    return np.ascontiguousarray(recs[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), recs[:, 0].astype(int)


def import_streaming():
    """MosaicML Streaming's writer and dataset. `import streaming` imports torchvision, which
    fails beside a CPU torch of another build, so the package's __init__ is skipped."""
    try:
        import streaming  # noqa: F401
    except Exception:
        import importlib.util
        import types

        for name in [m for m in sys.modules if m == "streaming" or m.startswith("streaming.")]:
            del sys.modules[name]
        spec = importlib.util.find_spec("streaming")
        pkg = types.ModuleType("streaming")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["streaming"] = pkg
    from streaming.base.dataset import StreamingDataset
    from streaming.base.format.mds.writer import MDSWriter

    return MDSWriter, StreamingDataset


# --------------------------------------------------------------------------- writers (child processes)

def write_floor(src: Path, out: Path, epochs: int) -> None:
    files = sorted(glob.glob(str(src / "cifar-10-batches-bin" / "data_batch_*.bin")))
    data = b"".join(Path(f).read_bytes() for f in files)
    rows = [data[i:i + RECORD] for i in range(0, len(data), RECORD)]
    out.mkdir(parents=True)
    with open(out / "floor.bin", "wb") as f:
        for _ in range(epochs):
            for r in rows:
                f.write(r)
        f.flush()
        os.fsync(f.fileno())


def write_mds(src: Path, out: Path, epochs: int) -> None:
    MDSWriter, _ = import_streaming()
    pics, labels = load_source(src)
    with MDSWriter(out=str(out), columns={"image": "bytes", "label": "int"}, compression=None) as w:
        for _ in range(epochs):
            for p, y in zip(pics, labels):
                w.write({"image": p.tobytes(), "label": int(y)})


class LitdataSamples:
    """LitData's `fn`: sample i as a dict; the pictures are loaded once in each of its workers."""

    def __init__(self, src: Path):
        self.src, self.data = str(src), None

    def __getstate__(self):
        return {"src": self.src, "data": None}

    def __call__(self, i):
        if self.data is None:
            self.data = load_source(Path(self.src))
        pics, labels = self.data
        return {"image": pics[i % len(pics)], "label": int(labels[i % len(labels)])}


def write_litdata(src: Path, out: Path, epochs: int) -> None:
    from litdata import optimize

    n = len(load_source(src)[1])
    optimize(fn=LitdataSamples(src), inputs=list(range(epochs * n)), output_dir=str(out), chunk_bytes="64MB",
             num_workers=1)


def write_wds(src: Path, out: Path, epochs: int) -> None:
    import webdataset as wds

    pics, labels = load_source(src)
    out.mkdir(parents=True)
    with wds.ShardWriter(str(out / "shard-%05d.tar"), maxcount=10_000, verbose=0) as w:
        k = 0
        for _ in range(epochs):
            for p, y in zip(pics, labels):
                w.write({"__key__": f"{k:08d}", "npy": p, "cls": int(y)})
                k += 1


WRITERS = {"floor": write_floor, "mds": write_mds, "litdata": write_litdata, "wds": write_wds}


# --------------------------------------------------------------------------- readers (child processes)

def _loop(ds) -> tuple[int, float, float]:
    """(samples, wall seconds, CPU seconds) of one pass over `ds`."""
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for _ in ds:
        n += 1
    return n, time.perf_counter() - t0, time.process_time() - c0


def read_litdata(folder: Path) -> tuple[int, float, float]:
    from litdata import StreamingDataset

    ds = StreamingDataset(str(folder))
    return _loop(ds)


def read_mds(folder: Path) -> tuple[int, float, float]:
    _, StreamingDataset = import_streaming()
    ds = StreamingDataset(local=str(folder), batch_size=256, shuffle=False)
    return _loop(ds)


def read_wds(folder: Path) -> tuple[int, float, float]:
    import webdataset as wds

    urls = sorted(glob.glob(str(folder / "epoch-0000" / "*.tar")))
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    return _loop(ds)


_IPMIX_READER = """
import sys, time, json
from ipmix_cli.stream import ShardLoader
loader = ShardLoader(sys.argv[1], 256, num_workers=0, world_size=1, rank=0)
n = 0
for _ in loader:  # warm: compiled decoders, page cache
    pass
loader.set_epoch(1)
t0, c0 = time.perf_counter(), time.process_time()
for images, labels in loader:
    n += len(labels)
print(json.dumps([n, time.perf_counter() - t0, time.process_time() - c0]))
"""

READERS = {"litdata": read_litdata, "mds": read_mds, "wds_over_ipmix": read_wds}


# --------------------------------------------------------------------------- JPEG codecs at the 224 px settings

def jpeg_codecs(photos: Path, repeats: int = 3) -> list[dict]:
    """Per picture: decode the source JPEGs, encode 224x224 q95 4:4:4, with each codec present."""
    from PIL import Image
    import io

    files = sorted(photos.glob("*/*.jpg"))
    blobs = [f.read_bytes() for f in files]
    crops = [np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))[:224, :224]) for b in blobs]

    def pil_dec(b):
        with Image.open(io.BytesIO(b)) as im:
            return np.asarray(im.convert("RGB"))

    def pil_enc(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=95, subsampling=0)
        return buf.getvalue()

    codecs = {"pillow": (pil_dec, pil_enc)}
    try:
        import simplejpeg

        codecs["simplejpeg"] = (lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB"),
                                lambda a: simplejpeg.encode_jpeg(a, quality=95, colorspace="RGB", colorsubsampling="444"))
    except ImportError:
        pass
    try:
        import cv2

        cv2.setNumThreads(1)
        codecs["opencv"] = (lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR),
                            lambda a: cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 95,
                                                               cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                               cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])[1].tobytes())
    except ImportError:
        pass
    rows = []
    for name, (dec, enc) in codecs.items():
        d, e = [], []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            for b in blobs:
                dec(b)
            t1 = time.perf_counter()
            for a in crops:
                enc(a)
            t2 = time.perf_counter()
            d.append((t1 - t0) / len(blobs))
            e.append((t2 - t1) / len(crops))
        rows.append({"codec": name, "version": _version({"pillow": "pillow", "simplejpeg": "simplejpeg",
                                                          "opencv": "opencv-python-headless"}[name]),
                     "decode_source_us": round(1e6 * statistics.median(d[1:]), 1),
                     "encode_224_q95_us": round(1e6 * statistics.median(e[1:]), 1)})
    return rows


# --------------------------------------------------------------------------- the orchestrator

def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "-"


def _pin0():
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _run(cmd) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its children, stdout) of one pinned run."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin0)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{res.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), res.stdout


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def markdown(fig: dict) -> str:
    """The tables the README shows."""
    names = {"floor": "floor: plain `f.write` per sample + fsync", "ipmix_none": "ipmix `--recipe none`",
             "mds": "MosaicML Streaming `MDSWriter`", "litdata": "LitData `optimize`", "wds": "WebDataset `ShardWriter`"}
    reader_names = {"ipmix_ShardLoader": "ipmix `ShardLoader` (batch 256)", "litdata": "LitData `StreamingDataset`",
                    "mds": "MosaicML `StreamingDataset` (batch 256)", "wds_over_ipmix": "`webdataset` over ipmix shards"}
    fsyncs = {"floor": "yes", "ipmix_none": "yes"}
    w, c, b = fig["writers_samples_per_s"], fig["writers_cpu_samples_per_s"], fig["writers_bytes_per_sample"]
    lines = ["| writer | samples/s, one core | per CPU-second | fsyncs? | bytes/sample |", "|---|---|---|---|---|"]
    for k in sorted(w, key=w.get, reverse=True):
        lines.append(f"| {names[k]} | {w[k]:,} | {c[k]:,} | {fsyncs.get(k, 'no')} | {b[k]:,} |")
    r, rc = fig["readers_samples_per_s"], fig["readers_cpu_samples_per_s"]
    lines += ["", "| reader (loop only) | samples/s, one core | per CPU-second |", "|---|---|---|"]
    for k in sorted(r, key=r.get, reverse=True):
        lines.append(f"| {reader_names[k]} | {r[k]:,} | {rc[k]:,} |")
    lines += ["", "| JPEG codec | decode a source photo (µs) | encode 224² q95 4:4:4 (µs) |", "|---|---|---|"]
    for row in fig["jpeg_224"]:
        lines.append(f"| {row['codec']} {row['version']} | {row['decode_source_us']:,} | {row['encode_224_q95_us']:,} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipmix-python", required=True, help="The project's venv python (runs ipmix).")
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=None, help="Scratch folder [default: a temporary one].")
    ap.add_argument("--json", default=None, help="Also write the figures here.")
    ap.add_argument("child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # a child process: write or read once
        kind, name, *paths = args.child
        if kind == "write":
            WRITERS[name](Path(paths[0]), Path(paths[1]), args.epochs)
        else:
            print(json.dumps(READERS[name](Path(paths[0]))))
        return

    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="ipmix-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    src = write_source(work / "src", args.samples)
    total = args.samples * args.epochs
    me = [sys.executable, str(HERE), "--ipmix-python", args.ipmix_python, "--epochs", str(args.epochs)]
    ipmix_build = [args.ipmix_python, "-m", "ipmix_cli", "shards", "build", "--source", f"cifar10:{src}",
                   "--epochs", str(args.epochs), "--recipe", "none", "--seed", "3", "--quiet", "--out"]
    writers = {"floor": lambda o: me + ["write", "floor", str(src), str(o)],
               "ipmix_none": lambda o: ipmix_build + [str(o)],
               "mds": lambda o: me + ["write", "mds", str(src), str(o)],
               "litdata": lambda o: me + ["write", "litdata", str(src), str(o)],
               "wds": lambda o: me + ["write", "wds", str(src), str(o)]}
    rates = {k: [] for k in writers}
    cpu_rates = {k: [] for k in writers}
    size = {}
    loads = []
    # ipmix's modules byte-compiled, as pip compiled the peers' when it installed them
    _run([args.ipmix_python, "-c", "from ipmix_cli.bench.build import cache_bytecode; cache_bytecode()"])
    _run(ipmix_build + [str(work / "warm")])  # the project's first process loads its compiled kernels
    for r in range(args.rounds):
        for name, cmd in writers.items():
            out = work / f"w-{name}"
            shutil.rmtree(out, ignore_errors=True)
            dt, cpu, _ = _run(cmd(out))
            rates[name].append(total / dt)
            cpu_rates[name].append(total / cpu)
            size[name] = _folder_bytes(out) / total
            if r < args.rounds - 1 or name == "floor":
                shutil.rmtree(out, ignore_errors=True)
        loads.append(os.getloadavg()[0])
        print(f"writers round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()), file=sys.stderr)

    readers = {"ipmix_ShardLoader": [args.ipmix_python, "-c", _IPMIX_READER, str(work / "w-ipmix_none")],
               "litdata": me + ["read", "litdata", str(work / "w-litdata")],
               "mds": me + ["read", "mds", str(work / "w-mds")],
               "wds_over_ipmix": me + ["read", "wds_over_ipmix", str(work / "w-ipmix_none")]}
    read_rates = {k: [] for k in readers}
    read_cpu = {k: [] for k in readers}
    for r in range(args.rounds):
        for name, cmd in readers.items():
            _, _, out = _run(cmd)
            n, dt, cpu = json.loads(out.strip().splitlines()[-1])
            read_rates[name].append(n / dt)
            read_cpu[name].append(n / cpu)
        loads.append(os.getloadavg()[0])
        print(f"readers round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in read_rates.items()),
              file=sys.stderr)

    photos = work / "photos"
    if not photos.is_dir():
        subprocess.run([args.ipmix_python, "-c", "import sys; from pathlib import Path; "
                        "from ipmix_cli.bench.build import write_photo_folder; write_photo_folder(Path(sys.argv[1]), 60)",
                        str(photos)], check=True)
    _pin0()
    codecs = jpeg_codecs(photos)

    ipmix_version = subprocess.run([args.ipmix_python, "-c", "import importlib.metadata as m; print(m.version('ipmix'))"],
                                   capture_output=True, text=True).stdout.strip()
    fig = {
        "samples": total, "rounds": args.rounds, "load_average_median": round(statistics.median(loads), 2),
        "versions": {"ipmix": ipmix_version, "litdata": _version("litdata"), "mosaicml-streaming": _version("mosaicml-streaming"),
                     "webdataset": _version("webdataset"), "torch": _version("torch"), "numpy": _version("numpy")},
        "writers_samples_per_s": {k: round(statistics.median(v)) for k, v in rates.items()},
        "writers_cpu_samples_per_s": {k: round(statistics.median(v)) for k, v in cpu_rates.items()},
        "writers_bytes_per_sample": {k: round(v) for k, v in size.items()},
        "readers_samples_per_s": {k: round(statistics.median(v)) for k, v in read_rates.items()},
        "readers_cpu_samples_per_s": {k: round(statistics.median(v)) for k, v in read_cpu.items()},
        "jpeg_224": codecs,
        "command": "make bench-peers",
    }
    fig["ratio_ipmix_none_to_floor"] = round(fig["writers_samples_per_s"]["ipmix_none"] / fig["writers_samples_per_s"]["floor"], 3)
    fig["ratio_ipmix_none_to_mds"] = round(fig["writers_samples_per_s"]["ipmix_none"] / fig["writers_samples_per_s"]["mds"], 2)
    print(json.dumps(fig, indent=1))
    print(markdown(fig), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
