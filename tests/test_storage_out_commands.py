"""`fractals render` and `corrupt` with OUT at a URL, against a real S3 API (moto's server,
conftest.s3): the objects are the files a local OUT gets, manifest.json is uploaded last, and a
re-run over a complete set uploads nothing."""

import uuid

import pytest

from ipmix_cli.cli import main as cli


def new_bucket(s3) -> str:
    name = f"ipmix-{uuid.uuid4().hex[:12]}"
    s3.mkdir(name)
    return name


def local_files(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def objects(s3, prefix: str) -> dict:
    s3.invalidate_cache()
    return {n[len(prefix) + 1:]: s3.cat(n) for n in sorted(s3.find(prefix))}


def etags(s3, prefix: str) -> dict:
    s3.invalidate_cache()
    return {n: info["LastModified"] for n, info in s3.find(prefix, detail=True).items()}


@pytest.mark.kernels
def test_fractals_render_to_a_bucket_uploads_the_files_of_a_local_render(s3, tmp_path, capsys):
    args = ["--escape", "2", "--ifs", "2", "--size", "32", "--seed", "4", "--quiet"]
    assert cli.run(["fractals", "render", str(tmp_path / "local"), *args]) == 0
    name = new_bucket(s3)
    url = f"s3://{name}/fractals"
    assert cli.run(["fractals", "render", url, *args]) == 0
    local = local_files(tmp_path / "local")
    assert len([n for n in local if n.endswith(".png")]) == 4
    assert objects(s3, f"{name}/fractals") == local
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{url}: 2 escape-time, 2 IFS")
    before = etags(s3, f"{name}/fractals")
    assert cli.run(["fractals", "render", url, *args]) == 0  # complete already: nothing is uploaded again
    assert etags(s3, f"{name}/fractals") == before
    # --overwrite renders again (the same bytes); the marker went first and came back last
    assert cli.run(["fractals", "render", url, *args[:-1], "--overwrite", "--quiet"]) == 0
    assert objects(s3, f"{name}/fractals") == local


@pytest.mark.kernels
def test_corrupt_to_a_bucket_uploads_the_set_of_a_local_run_manifest_last(s3, tmp_path, capsys):
    args = ["--source", "digits:test", "--limit", "8", "--corruptions", "gaussian_noise,contrast", "--seed", "2"]
    assert cli.run(["corrupt", *args, "--out", str(tmp_path / "local")]) == 0
    name = new_bucket(s3)
    assert cli.run(["corrupt", *args, "--out", f"s3://{name}/c"]) == 0
    local = local_files(tmp_path / "local")
    assert {"manifest.json", "labels.npy", "gaussian_noise.npy", "contrast.npy"} <= set(local)
    assert objects(s3, f"{name}/c") == local
    capsys.readouterr()


def test_a_render_into_a_missing_bucket_is_one_line(s3, tmp_path, capsys):
    missing = f"ipmix-missing-{uuid.uuid4().hex[:8]}"
    assert cli.run(["fractals", "render", f"s3://{missing}/f", "--escape", "1", "--ifs", "0", "--size", "16",
                    "--quiet"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"Error: OUT s3://{missing}/f: listing failed: not found (bucket {missing} does not exist)"]
