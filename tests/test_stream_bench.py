"""`ipmix bench stream` runs end to end and reports consistent figures (no timing asserted)."""

from __future__ import annotations

import json
import os

import pytest

from ipmix_cli.cli.main import run

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def test_bench_stream_quick_json(capsys):
    cores = os.sched_getaffinity(0)
    assert run(["bench", "stream", "--quick", "--repeats", "1", "--json"]) == 0
    # measured on one core, then the test session gets its cores back
    assert os.sched_getaffinity(0) == cores
    figures = json.loads(capsys.readouterr().out)
    for name in ("32_single_png", "32_single_npy", "32_triple_png", "32_triple_npy", "224_single_jpg"):
        assert figures[f"stream_{name}_samples_per_s"] > 0
        assert figures[f"shard_bytes_per_sample_{name}"] > 0
    for name in ("32_single", "32_triple", "224_single"):
        assert figures[f"online_{name}_samples_per_s"] > 0
    ratio = figures["stream_32_single_png_samples_per_s"] / figures["online_32_single_samples_per_s"]
    assert abs(figures["speedup_32_single"] - round(ratio, 1)) < 0.051
    # the triple carries three pictures per sample, npy is raw pixels
    assert figures["shard_bytes_per_sample_32_triple_npy"] > figures["shard_bytes_per_sample_32_single_npy"]
    assert figures["goal_speedup_32"] == 15.0
    # the 224 px shards also streamed from a local S3 server, beside the same shards on disk
    assert_s3_figures(figures)


def assert_s3_figures(figures):
    # shards uploaded as a build uploads them, and the first set again without S3's checksums
    for name in ("224_jpg_2_shards", "224_single_jpg", "224_jpg_2_shards_no_store_sha256"):
        s3, local = figures[f"stream_{name}_s3_samples_per_s"], figures[f"stream_{name}_local_paired_samples_per_s"]
        assert s3 > 0 and local > 0 and abs(figures[f"s3_vs_local_{name}"] - round(s3 / local, 3)) < 0.0011
        s3, local = figures[f"stream_{name}_s3_samples_per_cpu_s"], figures[f"stream_{name}_local_paired_samples_per_cpu_s"]
        assert s3 > 0 and local > 0 and abs(figures[f"s3_vs_local_cpu_{name}"] - round(s3 / local, 3)) < 0.0011
    assert figures["goal_met_s3"] == (figures["s3_vs_local_224_jpg_2_shards"] >= figures["goal_s3_vs_local"] == 0.9)


def test_bench_stream_only_s3_measures_the_object_store_case_alone(capsys):
    assert run(["bench", "stream", "--quick", "--repeats", "1", "--json", "--only", "s3"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert_s3_figures(figures)
    assert not [k for k in figures if k.startswith(("online_", "speedup_", "goal_met_png"))]
    assert "stream_224_single_jpg_samples_per_s" not in figures  # the disk part alone was not run

