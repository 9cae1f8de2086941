"""Evaluation metrics on plain NumPy arrays (no torch): error, RMS calibration, corruption error."""

from __future__ import annotations

import numpy as np


def error_rate(pred, labels) -> float:
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.shape != labels.shape or pred.size == 0:
        raise ValueError("predictions and labels must be non-empty and of equal shape")
    return float(np.mean(pred != labels))


def rms_calibration_error(confidence, correct, bin_size: int = 100) -> float:
    """RMS calibration error with adaptive bins (Hendrycks et al.).

    Sort by confidence, cut into consecutive bins of `bin_size` samples (the remainder joins the
    last bin), and return sqrt(Σ_b n_b/N · (mean confidence_b − accuracy_b)²). Unlike the
    reference code, the last bin is included. Fewer than `bin_size` samples make one bin.
    """
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    n = confidence.size
    if n == 0 or correct.size != n:
        raise ValueError("confidence and correct must be non-empty and of equal length")
    order = np.argsort(confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    edges = list(range(0, n, bin_size))[: max(1, n // bin_size)] + [n]
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        gap = confidence[lo:hi].mean() - correct[lo:hi].mean()
        total += (hi - lo) / n * gap * gap
    return float(np.sqrt(total))


def corruption_summary(errors: dict[str, list[float]], normalise_by: dict[str, float] | None = None) -> dict:
    """Per corruption the mean over its severities, in the benchmark's order (noise, blur,
    weather, digital, then the extras); `error` is the mean over the benchmark corruptions
    present (the CIFAR-10-C figure; over all of them if none of the 15 is there), `extra_error`
    the mean over the others. With `normalise_by` (AlexNet's errors), `mce_normalised` is
    ImageNet-C's mCE: the mean of error / AlexNet's error over the benchmark corruptions."""
    from ipmix_cli.eval.corruptions.tables import ALL, BENCHMARK

    if not errors:
        raise ValueError("no corruptions")
    order = sorted(errors, key=lambda n: (ALL.index(n) if n in ALL else len(ALL), n))
    per = {name: float(np.mean(errors[name])) for name in order}
    bench = [n for n in order if n in BENCHMARK]
    extra = [n for n in order if n not in BENCHMARK]
    out = {"error": float(np.mean([per[n] for n in (bench or extra)])), "benchmark_corruptions": bench,
           "extra_error": float(np.mean([per[n] for n in extra])) if extra else None, "per_corruption": per}
    if normalise_by is not None:
        known = [n for n in bench if n in normalise_by]
        out["mce_normalised"] = float(np.mean([per[n] / normalise_by[n] for n in known])) if known else None
    return out
