"""Evaluate a trained checkpoint: clean error, corruption error (CIFAR-10-C-style folder), RMS
calibration error and, optionally, PGD-20 adversarial error (spec §7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fractalgen.files import atomic_write_json
from ipmix_cli.common import storage
from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.common.objstore import Prefix, is_store_url
from ipmix_cli.eval.corruptions.tables import ALEXNET_ERRORS, ALL as CORRUPTIONS, FAMILY, profile_for
from ipmix_cli.eval.metrics import corruption_summary, rms_calibration_error
from ipmix_cli.train.device import resolve_device
from ipmix_cli.train.models import build_model, normalise

PGD_EPSILON = 2 / 255
PGD_STEP = 0.5 / 255
PGD_STEPS = 20


def load_trained_model(checkpoint, device="cpu"):
    """(model in eval mode on `device`, config dict) from a run directory, its checkpoint.pt, or a
    model.pt with its model.json beside it."""
    from ipmix_cli.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from ipmix_cli.train.models import INFO_NAME, WEIGHTS_NAME, load_trained, load_weights

    path = Path(checkpoint)
    weights_only = (path / WEIGHTS_NAME).is_file() if path.is_dir() else \
        (path.name != CHECKPOINT_NAME and (path.parent / INFO_NAME).is_file())
    if weights_only:
        model, info = load_trained(path, device)
        return model, info
    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    model = build_model(cfg["model"], cfg["num_classes"], cfg["image_size"])
    load_weights(model, state["model"], checkpoint)
    return model.to(device).eval(), cfg


def _batches(n: int, batch_size: int):
    for lo in range(0, n, batch_size):
        yield lo, min(n, lo + batch_size)


def _to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """uint8 [B, S, S, 3] (NumPy, possibly memory-mapped) → uint8 [B, 3, S, S] on device."""
    # np.array copies: the input may be a read-only memory map.
    return torch.from_numpy(np.array(images, dtype=np.uint8)).to(device).permute(0, 3, 1, 2)


@torch.no_grad()
def predict_probs(model, images: np.ndarray, mean, std, device, batch_size: int = 256) -> np.ndarray:
    """Softmax outputs (float64 [N, K]) for uint8 images [N, S, S, 3]."""
    model.eval()
    out = []
    for lo, hi in _batches(len(images), batch_size):
        x = normalise(_to_tensor(images[lo:hi], device), mean, std)
        out.append(F.softmax(model(x).float(), dim=1).double().cpu().numpy())
    return np.concatenate(out)


def score(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Error, RMS calibration error and mean negative log-likelihood of softmax outputs."""
    labels = np.asarray(labels, dtype=np.int64)
    pred = probs.argmax(1)
    correct = pred == labels
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean()
    return {"error": float(1.0 - correct.mean()), "rms_calibration_error": rms_calibration_error(probs.max(1), correct),
            "nll": float(nll), "samples": int(len(labels))}


def pgd_attack(model, x01: torch.Tensor, labels: torch.Tensor, mean, std, *, epsilon: float = PGD_EPSILON,
               step: float = PGD_STEP, steps: int = PGD_STEPS, generator=None) -> torch.Tensor:
    """L∞ PGD with a uniform random start, in [0, 1] pixel space (the model sees normalised input)."""
    noise = torch.rand(x01.shape, generator=generator, device=x01.device, dtype=x01.dtype)
    x_adv = (x01 + (noise * 2 - 1) * epsilon).clamp(0, 1)
    m = torch.tensor(mean, device=x01.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x01.device).view(1, 3, 1, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model((x_adv - m) / s), labels)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + step * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x01 - epsilon), x01 + epsilon).clamp(0, 1)
    return x_adv.detach()


def pgd_error(model, batches, mean, std, device, *, seed: int = 0, epsilon: float = PGD_EPSILON,
              step: float = PGD_STEP, steps: int = PGD_STEPS) -> float:
    """Error under PGD over an iterable of (uint8 images [b, S, S, 3], labels [b]) batches."""
    model.eval()
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    wrong = total = 0
    for images, labels in batches:
        x01 = _to_tensor(images, device).float() / 255.0
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        x_adv = pgd_attack(model, x01, y, mean, std, epsilon=epsilon, step=step, steps=steps, generator=gen)
        with torch.no_grad():
            wrong += int((model((x_adv - m) / s).argmax(1) != y).sum())
        total += len(y)
    return wrong / total


def read_corrupted_folder(folder, image_size: int, num_classes: int, classes=None):
    """(corruption names in the benchmark's order, labels of one severity [N], arrays by name
    [5·N, S, S, 3] with severity 1 first, facts) of a corrupted test set in one of the layouts
    it is published in: CIFAR-10-C / CIFAR-100-C and ipmix's own (`<name>.npy` + `labels.npy`),
    or ImageNet-C (`<name>/<severity>/<class>/*.JPEG`, decoded batch by batch). `facts` holds
    the layout, the severity profile (cifar / imagenet) and, for a set made by `ipmix corrupt`,
    the count of images each corruption left unchanged. One-line IpmixError on anything malformed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IpmixError(f"corrupted test folder {folder} does not exist")
    if (folder / "labels.npy").is_file():
        return _read_npy_layout(folder, image_size, num_classes)
    if any((folder / name / "1").is_dir() for name in CORRUPTIONS):
        return _read_imagenet_c_layout(folder, image_size, num_classes, classes)
    raise IpmixError(f"{folder} has no labels.npy (CIFAR-10-C layout) and no <corruption>/<severity>/<class>/ "
                     "folders (ImageNet-C layout)")


def _read_npy_layout(folder: Path, image_size: int, num_classes: int):
    names = _benchmark_order(p.stem for p in folder.glob("*.npy") if p.name != "labels.npy")
    if not names:
        raise IpmixError(f"{folder} holds no <corruption>.npy files")
    try:
        labels = np.load(folder / "labels.npy").astype(np.int64).ravel()
        arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in names}
    except (ValueError, OSError) as exc:
        raise IpmixError(f"cannot read {folder}: {exc}") from None
    for name, arr in arrays.items():
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
            raise IpmixError(f"{name}.npy must be uint8 [5*N, H, W, 3], got {arr.dtype} {list(arr.shape)}")
        if arr.shape[1:3] != (image_size, image_size):
            raise IpmixError(f"{name}.npy holds {arr.shape[2]}x{arr.shape[1]} images; the model takes {image_size} px")
    n_total = len(arrays[names[0]])
    if any(len(a) != n_total for a in arrays.values()) or n_total % 5:
        raise IpmixError(f"the .npy files in {folder} must all hold 5*N images (severities 1-5 stacked)")
    n = n_total // 5
    if len(labels) == n_total:
        labels = labels[:n]  # CIFAR-10-C repeats the labels for each severity
    if len(labels) != n:
        raise IpmixError(f"labels.npy holds {len(labels)} labels, expected {n} or {n_total}")
    _check_labels(labels, num_classes, f"labels.npy of {folder}")
    made = _ipmix_manifest(folder)
    facts = {"layout": "ipmix" if made else "cifar-c",
             "profile": (made or {}).get("profile") or profile_for(image_size),
             "unchanged": (made or {}).get("unchanged") or {}}
    return names, labels, arrays, facts


def _ipmix_manifest(folder: Path):
    try:
        made = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None  # a published CIFAR-10-C folder has no manifest
    return made if isinstance(made, dict) and made.get("schema") == "ipmix-corrupted" else None


def _benchmark_order(names) -> list[str]:
    names = set(names)
    return [n for n in CORRUPTIONS if n in names] + sorted(names - set(CORRUPTIONS))


def _check_labels(labels, num_classes: int, where: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise IpmixError(f"{where} has labels outside 0..{num_classes - 1}")


class PictureStack:
    """Picture files read as one uint8 array [len, S, S, 3], decoded slice by slice (the model's
    evaluation transform applied), so an ImageNet-C corruption never sits in memory whole."""

    def __init__(self, files, size: int):
        self.files, self.size = list(files), int(size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, part: slice) -> np.ndarray:
        from fractalgen.errors import BadImage
        from fractalgen.images import open_rgb
        from ipmix_cli.data.testset import eval_transform

        picked = self.files[part]
        out = np.empty((len(picked), self.size, self.size, 3), np.uint8)
        for j, path in enumerate(picked):
            try:
                out[j] = eval_transform(np.asarray(open_rgb(path)), self.size)
            except BadImage as exc:
                raise IpmixError(f"bad corrupted test image {path}: {exc}") from None
        return out


def _read_imagenet_c_layout(folder: Path, image_size: int, num_classes: int, classes=None):
    from fractalgen.images import picture_files

    names = _benchmark_order(p.name for p in folder.iterdir() if (p / "1").is_dir())
    first = folder / names[0] / "1"
    found = sorted(p.name for p in first.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise IpmixError(f"{first} has no class folders (expected <corruption>/<severity>/<class>/*.JPEG)")
    trained = list(classes or [])
    if trained and set(found) - set(trained):
        raise IpmixError(f"class folders of {folder} ({found[0]}, ...) are not the model's classes")
    if not trained and len(found) != num_classes:
        raise IpmixError(f"{folder} has {len(found)} class folders; the model was trained on {num_classes}")
    label_of = {c: (trained.index(c) if trained else i) for i, c in enumerate(found)}
    def pictures(part: Path):
        return [(c, p.relative_to(part / c).as_posix()) for c in found for p in picture_files(part / c)]

    listing = pictures(first)
    if not listing:
        raise IpmixError(f"{first} holds no pictures")
    labels = np.array([label_of[c] for c, _ in listing], dtype=np.int64)
    arrays = {}
    for name in names:
        files = []
        for severity in range(1, 6):
            part = folder / name / str(severity)
            here = pictures(part) if part.is_dir() else []
            if here != listing:
                raise IpmixError(f"{part} does not hold the same class/picture names as {first} "
                                 "(every corruption and severity must hold the same test set)")
            files += [part / c / f for c, f in here]
        arrays[name] = PictureStack(files, image_size)
    return names, labels, arrays, {"layout": "imagenet-c", "profile": "imagenet", "unchanged": {}}


def evaluate_corrupted(model, folder, mean, std, device, image_size, num_classes, batch_size=256,
                       progress=None, contents=None) -> dict:
    names, labels, arrays, facts = contents or read_corrupted_folder(folder, image_size, num_classes)
    n = len(labels)
    errors, per = {}, {}
    for name in names:
        probs = predict_probs(model, arrays[name], mean, std, device, batch_size)
        sev = [score(probs[k * n:(k + 1) * n], labels)["error"] for k in range(5)]
        whole = score(probs, np.tile(labels, 5))
        errors[name] = sev
        per[name] = {"family": FAMILY.get(name, "other"), "error": float(np.mean(sev)), "severity_errors": sev,
                     "rms_calibration_error": whole["rms_calibration_error"]}
        if any(facts["unchanged"].get(name, [])):
            per[name]["unchanged_images"] = facts["unchanged"][name]  # per severity, of n
        if progress:
            progress(name)
    summary = corruption_summary(errors, ALEXNET_ERRORS if facts["profile"] == "imagenet" else None)
    counted = summary["benchmark_corruptions"] or names
    result = {"folder": str(folder), "layout": facts["layout"], "profile": facts["profile"],
              "samples_per_severity": n, "corruptions": list(names), "error": summary["error"],
              "benchmark_corruptions": len(summary["benchmark_corruptions"]), "extra_error": summary["extra_error"],
              "rms_calibration_error": float(np.mean([p["rms_calibration_error"] for p in per.values()])),
              "severity_errors": [float(np.mean([errors[c][k] for c in counted])) for k in range(5)],
              "per_corruption": per}
    if "mce_normalised" in summary:
        result["mce_alexnet_normalised"] = summary["mce_normalised"]
    return result


def evaluate(checkpoint, test: str, *, corrupted=None, pgd: bool = False, out=None, batch_size: int = 256,
             device: str = "auto", limit: int | None = None, pgd_limit: int | None = None, seed: int = 0,
             progress=None) -> dict:
    """Evaluate a checkpoint on a test source spec (contracts C) and optionally a corrupted folder.

    Returns the result dict (errors are fractions in [0, 1]); writes it as JSON to `out` if given.
    The checkpoint, the test set's folder and the corrupted folder may be object-store URLs: they
    are copied into the user's cache folder first (once per unchanged prefix), then read as today.
    """
    from ipmix_cli.data.sources import open_source
    from ipmix_cli.data.testset import bad_test_image_error, check_classes, iter_test_batches

    if batch_size < 1:
        raise OptionError("{batch_size} must be at least 1")
    given = {"checkpoint": str(checkpoint), "test": test, "corrupted": str(corrupted)}
    checkpoint, test, corrupted = local_copies(checkpoint, test, corrupted)
    dev = resolve_device(device)
    model, cfg = load_trained_model(checkpoint, dev)
    size, k = int(cfg["image_size"]), int(cfg["num_classes"])
    mean, std = cfg["mean"], cfg["std"]
    src = open_source(test)
    if len(src.classes) != k:
        raise IpmixError(f"test set {test} has {len(src.classes)} classes; the model was trained on {k}")
    check_classes(src.classes, cfg.get("classes"), test)
    # Check everything a user could have got wrong before the long work starts.
    contents = read_corrupted_folder(corrupted, size, k, cfg.get("classes")) if corrupted else None
    if corrupted:
        # A set made by `ipmix corrupt` records its source's classes: refuse one whose labels
        # mean other classes (say, corrupted from another dataset) instead of scoring nonsense.
        try:
            made = json.loads((Path(corrupted) / "manifest.json").read_text())
        except (OSError, ValueError):
            made = None  # a real CIFAR-10-C folder has no manifest
        if isinstance(made, dict) and made.get("schema") == "ipmix-corrupted":
            made_classes = (made.get("source_description") or {}).get("classes")
            if made_classes:
                check_classes(made_classes, cfg.get("classes"),
                              f"of --corrupted {corrupted} (made from {made.get('source')})")
    if out:
        write_result = _result_writer(out)
    n_clean = len(src) if limit is None else min(len(src), int(limit))
    if n_clean == 0:
        raise IpmixError(f"test set {test} holds no samples")
    probs, labels = [], []
    with bad_test_image_error():
        for images, batch_labels in iter_test_batches(src, size, batch_size, np.arange(n_clean)):
            probs.append(predict_probs(model, images, mean, std, dev, batch_size))
            labels.append(batch_labels)
    clean = score(np.concatenate(probs), np.concatenate(labels))
    result = {"checkpoint": str(checkpoint), "model": cfg["model"], "test": test, "image_size": size,
              "num_classes": k, "device": str(dev), "clean": clean}
    if corrupted:
        result["corruption"] = evaluate_corrupted(model, corrupted, mean, std, dev, size, k, batch_size, progress,
                                                  contents)
    if pgd:
        n = n_clean if pgd_limit is None else min(n_clean, int(pgd_limit))
        batches = iter_test_batches(src, size, batch_size, np.arange(n))
        result["pgd"] = {"error": pgd_error(model, batches, mean, std, dev, seed=seed),
                         "epsilon": PGD_EPSILON, "step_size": PGD_STEP, "steps": PGD_STEPS, "samples": n}
    result.update(checkpoint=given["checkpoint"], test=given["test"])  # as given, not the local copies
    if corrupted:
        result["corruption"]["folder"] = given["corrupted"]
    if out:
        write_result(json.loads(json.dumps(result)))
    return result


def _result_writer(out):
    """A function writing the result JSON to `out` (a file, or an object at a URL), made after
    checking what a user could have got wrong, before the long work starts."""
    if is_store_url(out):
        url = str(out).rstrip("/")
        folder, _, name = url.rpartition("/")
        if "/" not in url.split("://", 1)[-1]:
            raise IpmixError(f"cannot write {out}: give an object name, e.g. {url}/eval.json")
        prefix = Prefix(folder, "--out")
        prefix.check_bucket()
        return lambda result: prefix.put_bytes(name, (json.dumps(result, indent=1, sort_keys=True) + "\n").encode())
    if not Path(out).parent.is_dir():
        raise IpmixError(f"cannot write {out}: folder {Path(out).parent} does not exist")
    if Path(out).is_dir():
        raise IpmixError(f"cannot write {out}: it is a folder; give a file name, e.g. {Path(out) / 'eval.json'}")
    if Path(out).exists() and Path(out).suffix.lower() != ".json":  # the checkpoint, say
        raise OptionError("{path} exists and is not a .json file: not overwritten; give another {out}", path=str(out))
    return lambda result: atomic_write_json(out, result)


def local_copies(checkpoint, test: str, corrupted):
    """Eval's inputs with each object-store URL replaced by a local copy (storage.fetch_folder):
    a run folder or checkpoint file, the folder of a test source spec, a corrupted folder."""
    from ipmix_cli.common.cachedir import default_cache_dir

    cache = default_cache_dir()
    return (storage.localize(checkpoint, cache, "--checkpoint"),
            storage.localize_source(test, cache, "--test", kinds=storage.FOLDER_SOURCE_KINDS),
            storage.localize(corrupted, cache, "--corrupted"))


def format_report(result: dict) -> str:
    """A plain-text table of an evaluation result (percentages)."""
    pct = lambda v: f"{100 * v:6.2f}"  # noqa: E731
    c = result["clean"]
    lines = [f"model {result['model']} on {result['test']} ({c['samples']} samples, {result['image_size']} px)",
             f"{'metric':<28}{'value %':>8}",
             f"{'clean error':<28}{pct(c['error']):>8}",
             f"{'clean RMS calibration error':<28}{pct(c['rms_calibration_error']):>8}"]
    cr = result.get("corruption")
    if cr:
        lines.append(f"{'corruption error (mCE)':<28}{pct(cr['error']):>8}   "
                     f"mean over {cr['benchmark_corruptions']} benchmark corruptions")
        if cr.get("mce_alexnet_normalised") is not None:
            lines.append(f"{'mCE, AlexNet-normalised':<28}{pct(cr['mce_alexnet_normalised']):>8}")
        if cr.get("extra_error") is not None:
            lines.append(f"{'extra corruptions error':<28}{pct(cr['extra_error']):>8}   not in the mCE")
        lines.append(f"{'corruption RMS calib. error':<28}{pct(cr['rms_calibration_error']):>8}")
    if "pgd" in result:
        lines.append(f"{'PGD-20 error (eps 2/255)':<28}{pct(result['pgd']['error']):>8}")
    if cr:
        severities = {"cifar": "CIFAR-10-C's", "imagenet": "ImageNet-C's"}.get(cr["profile"], cr["profile"])
        header = "".join(f"{'s' + str(s):>8}" for s in range(1, 6))
        lines += ["", f"corrupted set: {cr['layout']} layout, {severities} severities",
                  f"{'corruption':<20}{'family':<9}{header}{'mean':>8}{'calib':>8}"]
        for name, p in cr["per_corruption"].items():
            flag = "  * unchanged images" if p.get("unchanged_images") else ""
            lines.append(f"{name:<20}{p['family']:<9}" + "".join(f"{pct(e):>8}" for e in p["severity_errors"])
                         + f"{pct(p['error']):>8}{pct(p['rms_calibration_error']):>8}{flag}")
        lines.append(f"{'mean':<29}" + "".join(f"{pct(e):>8}" for e in cr["severity_errors"])
                     + f"{pct(cr['error']):>8}{pct(cr['rms_calibration_error']):>8}")
        if any(p.get("unchanged_images") for p in cr["per_corruption"].values()):
            lines.append("* the corruption left some images exactly as they were (e.g. saturate on grey "
                         "images); see unchanged_images in the JSON")
    return "\n".join(lines)
