"""The newcomer's path: every demo step chained through the real commands, on a tiny budget."""

import json

import pytest

from ipmix_cli.cli.demo import comparison_table, run_demo, versions

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def test_demo_runs_end_to_end_then_resumes_without_redoing_work(tmp_path, capsys):
    out = tmp_path / "demo"
    results = run_demo(out, seed=3, workers=1, train_epochs=1, materialized_epochs=1,
                       fractals_per_family=3, test_limit=40)
    assert list(results) == ["none", "ipmix", "ipmix-jsd"]
    for name, r in results.items():
        assert r["clean"]["samples"] == 40
        assert 0.0 <= r["clean"]["error"] <= 1.0
        assert set(r["corruption"]["per_corruption"]) and 0.0 <= r["corruption"]["error"] <= 1.0
        manifest = json.loads((out / f"shards-{name}" / "manifest.json").read_text())
        assert manifest["config"]["recipe"] == name.split("-")[0] and manifest["complete"]
        assert manifest["views"] == (3 if name == "ipmix-jsd" else 1)
        assert (out / f"run-{name}" / "curves.png").stat().st_size > 0
    table, environment = (out / "comparison.txt").read_text().split("\n\n")
    table = table.splitlines()
    assert [row.split()[0] for row in table[2:]] == ["none", "ipmix", "ipmix-jsd"]
    assert table[2].split()[1] == f"{100 * results['none']['clean']['error']:.2f}"
    waits = json.loads((out / "run-none" / "summary.json").read_text())["data_wait_per_epoch"]
    assert table[2].split()[5] == f"{100 * sum(waits) / len(waits):.1f}" and 0 <= float(table[2].split()[5]) <= 100
    assert environment.strip() == versions()
    err = capsys.readouterr().err
    assert f"versions: {versions()}" in err
    assert any(line.startswith("step ") and "data-wait" in line and " eta " in line for line in err.splitlines())

    stamp = (out / "run-ipmix" / "summary.json").stat().st_mtime_ns
    again = run_demo(out, seed=3, workers=1, train_epochs=1, materialized_epochs=1,
                     fractals_per_family=3, test_limit=40)
    assert again == results
    assert (out / "run-ipmix" / "summary.json").stat().st_mtime_ns == stamp
    assert "already done" in capsys.readouterr().err


def test_comparison_table_puts_each_figure_in_its_column():
    r = {"clean": {"error": 0.1234, "rms_calibration_error": 0.05},
         "corruption": {"error": 0.5, "rms_calibration_error": 0.25}}
    row = comparison_table({"ipmix": r}, {"ipmix": 0.0312}).splitlines()[2].split()
    assert row == ["ipmix", "12.34", "50.00", "5.00", "25.00", "3.1"]


def test_versions_name_every_package_the_table_depends_on():
    line = versions()
    for name in ("python", "numpy", "pillow", "numba", "llvmlite", "scikit-learn", "scipy", "scikit-image", "torch"):
        assert f"{name} " in line
    assert "(not installed)" not in line
