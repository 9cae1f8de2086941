"""`verify`: a good set passes; each kind of damage is found and named."""

import json
import os

import numpy as np
import pytest

from _shards_tools_helpers import encode, make_shards, read_tar_members, rewrite_shard
from fractalgen.files import atomic_write_json, sha256_file
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shards.verify import VerifyError, verify

SHARD0 = "epoch-0000/ipmix-e0000-00000.tar"
SHARD1 = "epoch-0000/ipmix-e0000-00001.tar"


@pytest.fixture
def shards(tmp_path):
    out = tmp_path / "out"
    return out, make_shards(out, epochs=2, shards=2, per_shard=3, pads=1)


def problems_of(out, deep=False):
    with pytest.raises(VerifyError) as info:
        verify(out, deep=deep, progress=False)
    return str(info.value), info.value.report["problems"]


def test_good_set_passes_with_counts(shards):
    out, m = shards
    report = verify(out, deep=True, progress=False)
    assert report["ok"] and report["problems"] == []
    assert (report["epochs"], report["shards"], report["samples"], report["pads"]) == (2, 4, 12, 2)
    assert report["bytes"] == sum(s["bytes"] for e in m["epochs"] for s in e["shards"])
    labels = [int(d) for s in ("epoch-0000", "epoch-0001") for i in (0, 1)
              for n, d in read_tar_members(out / s / f"ipmix-e{s[-4:]}-{i:05d}.tar") if n.endswith(".cls")]
    assert report["class_histogram"] == np.bincount(labels, minlength=3).tolist()


@pytest.mark.parametrize("views,fmt", [(3, "jpg"), (1, "npy"), (1, "webp")])
def test_other_layouts_pass_deep(tmp_path, views, fmt):
    make_shards(tmp_path, views=views, fmt=fmt, shards=1, per_shard=2, pads=0)
    assert verify(tmp_path, deep=True, progress=False)["samples"] == 2


def test_missing_shard(shards):
    out, _ = shards
    (out / SHARD1).unlink()
    message, problems = problems_of(out)
    assert SHARD1 in message and "missing" in message
    assert problems[0] == {"shard": SHARD1, "problem": "missing"}


def test_size_mismatch(shards):
    out, _ = shards
    with open(out / SHARD0, "ab") as f:
        f.write(b"\0" * 512)
    message, problems = problems_of(out)
    assert message.startswith(f"{out}/{SHARD0}: size")
    assert any("sha256" in p["problem"] for p in problems)


def test_sha_mismatch_same_size(shards):
    out, _ = shards
    data = bytearray((out / SHARD1).read_bytes())
    data[600] ^= 0xFF  # inside the first member's payload: the tar stays well formed
    (out / SHARD1).write_bytes(bytes(data))
    message, problems = problems_of(out)
    assert SHARD1 in message and "sha256" in message
    # the wids index records the old md5 too; nothing else is touched
    assert {p["shard"] for p in problems} == {SHARD1, "epoch-0000/wids-index.json"}


def test_truncated_tar(shards):
    out, m = shards
    path = out / SHARD0
    path.write_bytes(path.read_bytes()[:2000])
    m["epochs"][0]["shards"][0].update(bytes=2000, sha256=sha256_file(path))
    atomic_write_json(out / "manifest.json", m)
    message, _ = problems_of(out)
    assert SHARD0 in message and "truncated" in message


def test_corrupt_header_checksum(shards):
    out, m = shards
    path = out / SHARD0
    data = bytearray(path.read_bytes())
    data[0:1] = b"X"  # first member name changes, its stored checksum no longer matches
    path.write_bytes(bytes(data))
    m["epochs"][0]["shards"][0]["sha256"] = sha256_file(path)
    atomic_write_json(out / "manifest.json", m)
    message, _ = problems_of(out)
    assert SHARD0 in message and "checksum" in message


def test_duplicate_key_in_a_shard(shards):
    out, m = shards
    members = read_tar_members(out / SHARD0)
    first = members[:3]
    rewrite_shard(out, m, SHARD0, first + members[3:6] + first)
    message, _ = problems_of(out)
    assert SHARD0 in message and "duplicate key e0000s0000000" in message


def test_duplicate_key_across_shards(shards):
    out, m = shards
    members0 = read_tar_members(out / SHARD0)
    members1 = read_tar_members(out / SHARD1)
    renamed = [(n.replace("e0000s0000000", "e0000s0000003"), d) for n, d in members0[:3]]
    rewrite_shard(out, m, SHARD0, renamed + members0[3:])
    message, problems = problems_of(out)
    assert any("duplicate key e0000s0000003" in p["problem"] for p in problems)
    assert members1[0][0].startswith("e0000s0000003")


def test_non_adjacent_members(shards):
    out, m = shards
    members = read_tar_members(out / SHARD0)
    # sample 0's json moved after sample 1
    reordered = members[:2] + members[3:6] + [members[2]] + members[6:]
    rewrite_shard(out, m, SHARD0, reordered)
    message, problems = problems_of(out)
    assert SHARD0 in message  # a streaming reader first sees sample 0 without its json
    assert {"shard": SHARD0, "problem": "members of sample e0000s0000000 are not adjacent "
            "(member 'e0000s0000000.json')"} in problems


def test_missing_field(shards):
    out, m = shards
    members = [mb for mb in read_tar_members(out / SHARD1) if mb[0] != "e0000s0000004.cls"]
    rewrite_shard(out, m, SHARD1, members)
    message, _ = problems_of(out)
    assert SHARD1 in message and "e0000s0000004 lacks field 'cls'" in message


def test_members_out_of_order(shards):
    out, m = shards
    members = read_tar_members(out / SHARD1)
    rewrite_shard(out, m, SHARD1, [members[1], members[0]] + members[2:])
    message, _ = problems_of(out)
    assert "members are in order ['cls', 'png', 'json']" in message


def test_count_mismatch(shards):
    out, m = shards
    members = read_tar_members(out / SHARD1)
    rewrite_shard(out, m, SHARD1, members[:-3])
    message, _ = problems_of(out)
    assert SHARD1 in message and "holds 2 samples, manifest says 3" in message


def test_label_out_of_range_and_bad_json(shards):
    out, m = shards
    members = read_tar_members(out / SHARD0)
    members[1] = (members[1][0], b"7")
    members[5] = (members[5][0], b"{not json")
    rewrite_shard(out, m, SHARD0, members)
    _, problems = problems_of(out)
    texts = [p["problem"] for p in problems]
    assert any("label '7' is not in 0..2" in t for t in texts)
    assert any("e0000s0000001 json metadata is bad" in t for t in texts)


def test_undecodable_image_only_with_deep(shards):
    out, m = shards
    members = read_tar_members(out / SHARD1)
    members[3] = (members[3][0], b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    rewrite_shard(out, m, SHARD1, members)
    assert verify(out, deep=False, progress=False)["ok"]
    message, _ = problems_of(out, deep=True)
    assert SHARD1 in message and "e0000s0000004 field png" in message and "cannot decode" in message


def test_wrong_image_size_with_deep(shards):
    out, m = shards
    members = read_tar_members(out / SHARD0)
    members[0] = (members[0][0], encode(np.zeros((4, 8, 3), np.uint8), "png"))
    rewrite_shard(out, m, SHARD0, members)
    message, _ = problems_of(out, deep=True)
    assert "is 8x4, expected 8x8" in message


def test_manifest_problems(shards):
    out, m = shards
    bad = dict(m, schema_version=3)
    atomic_write_json(out / "manifest.json", bad)
    message, _ = problems_of(out)
    assert "schema_version 3 is not supported (this ipmix reads version 1, 2;" in message
    atomic_write_json(out / "manifest.json", dict(m, complete=False))
    message, _ = problems_of(out)
    assert "not complete" in message
    atomic_write_json(out / "manifest.json", {k: v for k, v in m.items() if k != "fields"})
    assert "lacks 'fields'" in problems_of(out)[0]


def test_not_a_shard_folder(tmp_path):
    with pytest.raises(IpmixError, match="no manifest.json"):
        verify(tmp_path, progress=False)
    with pytest.raises(IpmixError, match="does not exist"):
        verify(tmp_path / "nope", progress=False)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(IpmixError, match="cannot read"):
        verify(tmp_path, progress=False)


def test_stale_wids_index_is_reported(shards):
    out, m = shards
    index = out / "epoch-0001" / "wids-index.json"
    doc = json.loads(index.read_text())
    doc["shardlist"][1]["nsamples"] = 99
    index.write_text(json.dumps(doc))
    message, _ = problems_of(out)
    assert "epoch-0001/wids-index.json" in message and "nsamples 99" in message


def test_stale_dali_index_is_reported(shards):
    from ipmix_cli.shards.indexes import write_dali_index

    out, m = shards
    idx = write_dali_index(out / SHARD0)
    assert verify(out, progress=False)["ok"]
    idx.write_text(idx.read_text().replace(" 512 ", " 1024 ", 1))
    message, _ = problems_of(out)
    assert "DALI index ipmix-e0000-00000.idx does not match" in message


def test_verify_accepts_the_manifest_path_and_reports_strays(shards):
    out, m = shards
    (out / "epoch-0000" / "ipmix-e0000-00009.tar").write_bytes(b"")
    report = verify(out / "manifest.json", progress=False)
    assert report["ok"] and report["warnings"] == [os.path.join("epoch-0000", "ipmix-e0000-00009.tar") + " is not listed in the manifest"]


def test_problems_per_shard_are_capped(tmp_path):
    m = make_shards(tmp_path, shards=1, per_shard=8, pads=0)
    rel = "epoch-0000/ipmix-e0000-00000.tar"
    members = [(n, b"9" if n.endswith(".cls") else d) for n, d in read_tar_members(tmp_path / rel)]
    rewrite_shard(tmp_path, m, rel, members)
    message, problems = problems_of(tmp_path)
    assert len(problems) == 6 and problems[-1] == {"shard": rel, "problem": "... and 3 more problems"}
    assert message.endswith("(and 5 more problems)")


def test_keys_of_the_wrong_form_or_epoch(shards):
    out, m = shards
    members = read_tar_members(out / SHARD0)
    members = [(n.replace("e0000s0000000", "img7"), d) for n, d in members]
    members = [(n.replace("e0000s0000001", "e0001s0000001"), d) for n, d in members]
    rewrite_shard(out, m, SHARD0, members)
    _, problems = problems_of(out)
    texts = [p["problem"] for p in problems if p["shard"] == SHARD0]
    assert "key 'img7' is not of the form eEEEEsPPPPPPP" in texts
    assert "key e0001s0000001 belongs to epoch 1, found in epoch 0" in texts


def test_a_config_edited_after_the_build_is_a_problem(shards):
    out, m = shards
    edited = json.loads(json.dumps(m))
    edited["config"]["seed"] = 99  # the shards were drawn with another seed
    atomic_write_json(out / "manifest.json", edited)
    message, problems = problems_of(out)
    assert problems[0] == {"shard": "manifest.json", "problem": problems[0]["problem"]}
    assert "config_hash does not match its config" in message
    atomic_write_json(out / "manifest.json", m)
    assert verify(out, progress=False)["ok"]


def test_epoch_folders_the_manifest_does_not_list_are_warned_about(shards):
    import shutil

    out, m = shards
    shutil.copytree(out / "epoch-0001", out / "epoch-0002")  # an extra epoch on disk
    report = verify(out, progress=False)
    assert report["ok"] and report["warnings"] == [
        f"epoch-0002{os.sep} is an epoch folder the manifest does not list (left from another build? "
        f"readers that glob folders would read it)"]
    shutil.rmtree(out / "epoch-0002")
    atomic_write_json(out / "manifest.json", {**m, "epochs": m["epochs"][:1]})  # epoch 1 dropped from the manifest
    report = verify(out, progress=False)
    assert report["epochs"] == 1 and [w.split(os.sep)[0] for w in report["warnings"]] == ["epoch-0001"]


def test_a_deleted_dali_index_of_a_dali_build_is_a_problem(shards):
    from ipmix_cli.shards.indexes import write_dali_index

    out, m = shards
    m = {**m, "config": {**m["config"], "dali_index": True}}  # --dali-index is not hashed
    atomic_write_json(out / "manifest.json", m)
    for e in m["epochs"]:
        for s in e["shards"]:
            write_dali_index(out / s["path"])
    assert verify(out, progress=False)["ok"]
    (out / "epoch-0001" / "ipmix-e0001-00001.idx").unlink()
    message, problems = problems_of(out)
    assert problems == [{"shard": "epoch-0001/ipmix-e0001-00001.tar", "problem": "DALI index ipmix-e0001-00001.idx "
                         "missing (the build was made with --dali-index; `ipmix shards build --out OUT --dali-index` "
                         "writes it again)"}]
