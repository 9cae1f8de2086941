"""Derived indexes beside the shards: wids' JSON shard list and DALI's per-tar `.idx` files.

wids (``wids.ShardListDataset(path_to_json)``) reads a ``wids-shard-index-v1`` document and
resolves each shard ``url`` relative to the directory of the JSON file, so the indexes stay
valid when OUT is moved or copied.

DALI's ``fn.readers.webdataset(paths=[...], index_paths=[...], ext=[...])`` reads one text
index per tar (the format its ``wds2idx`` tool writes, version ``v1.2``):

    v1.2 <number of samples>
    <ext> <data offset> <size> <member name> [<ext> <offset> <size> <name> ...]   (one line per sample)

``offset`` is where the member's DATA starts (a multiple of 512: the byte after its header),
``size`` the payload length, ``ext`` the part of the member name after the key's first dot
(``png``, ``cls``, ``clean.png``...). Samples are listed in archive order.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fractalgen.files import atomic_write_bytes, atomic_write_json
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.shardformat.tario import iter_entries, split_name

WIDS_KIND = "wids-shard-index-v1"
DALI_VERSION = "v1.2"


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def wids_index_document(out_dir, epoch_entry: dict, name: str, md5: bool = True) -> dict:
    """The wids-shard-index-v1 document of one epoch (shards must exist on disk); with `md5`,
    each shard's `md5sum` (read from the file)."""
    out_dir = Path(out_dir)
    index_path = out_dir / epoch_entry["index"]
    shardlist = []
    for shard in epoch_entry["shards"]:
        path = out_dir / shard["path"]
        if not path.is_file():
            raise IpmixError(f"cannot index epoch {epoch_entry['epoch']}: shard {path} is missing")
        shardlist.append(
            {
                "url": os.path.relpath(path, index_path.parent).replace(os.sep, "/"),
                **({"md5sum": md5_file(path)} if md5 else {}),
                "nsamples": int(shard["count"]),
                "filesize": path.stat().st_size,
            }
        )
    return {"__kind__": WIDS_KIND, "wids_version": 1, "name": name, "shardlist": shardlist}


def write_wids_index(out_dir, epoch_entry: dict, name: str) -> Path:
    """Write ``OUT/<epoch_entry["index"]>`` (normally ``epoch-XXXX/wids-index.json``) atomically.

    ``epoch_entry`` is one element of the manifest's ``epochs`` list; urls are relative to
    the index file. Returns the index path.
    """
    out_dir = Path(out_dir)
    index_path = out_dir / epoch_entry.get("index", f"epoch-{int(epoch_entry['epoch']):04d}/wids-index.json")
    entry = dict(epoch_entry, index=str(index_path.relative_to(out_dir)))
    document = wids_index_document(out_dir, entry, name)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(index_path, document)
    return index_path


def dali_index_lines(tar_path) -> list[str]:
    """The lines of DALI's v1.2 index for one tar, header line first."""
    with open(tar_path, "rb") as f:
        return dali_lines(iter_entries(f), tar_path)


def dali_lines(entries, where="") -> list[str]:
    """DALI index lines from an iterable of ``TarEntry`` (or ``(name, offset, size)``)."""
    samples: list[list[str]] = []
    last_key = None
    for entry in entries:
        name, offset, size = entry[0], entry[1], entry[2]
        key, ext = split_name(name)
        if not key or key.endswith("/"):
            continue
        if any(c.isspace() for c in name) or not ext:
            raise IpmixError(f"{where}: member {name!r} cannot be listed in a DALI index")
        part = f"{ext} {offset} {size} {name}"
        if key != last_key:
            samples.append([part])
            last_key = key
        else:
            samples[-1].append(part)
    if not samples:
        raise IpmixError(f"{where}: no samples to index")
    return [f"{DALI_VERSION} {len(samples)}"] + [" ".join(parts) for parts in samples]


def dali_index_path(tar_path) -> Path:
    tar_path = Path(tar_path) if isinstance(tar_path, str) else tar_path  # a Path or a StorePath
    return tar_path.with_name(tar_path.name.split(".", 1)[0] + ".idx")


def write_dali_index(tar_path) -> Path:
    """Write ``shard-NNNNN.idx`` beside ``shard-NNNNN.tar`` atomically; return its path."""
    idx_path = dali_index_path(tar_path)
    atomic_write_bytes(idx_path, ("\n".join(dali_index_lines(tar_path)) + "\n").encode("ascii"))
    return idx_path


def parse_dali_index(idx_path) -> list[list[tuple[str, int, int, str]]]:
    """Read a v1.2 index back: per sample a list of (ext, offset, size, name)."""
    lines = Path(idx_path).read_text(encoding="ascii").splitlines()
    if not lines:
        raise IpmixError(f"{idx_path}: empty DALI index")
    version, _, count = lines[0].partition(" ")
    if version != DALI_VERSION or not count.strip().isdigit():
        raise IpmixError(f"{idx_path}: not a {DALI_VERSION} DALI index")
    samples = []
    for line in lines[1 : 1 + int(count)]:
        tokens = line.split()
        if not tokens or len(tokens) % 4:
            raise IpmixError(f"{idx_path}: malformed line {line[:60]!r}")
        samples.append(
            [(tokens[i], int(tokens[i + 1]), int(tokens[i + 2]), tokens[i + 3]) for i in range(0, len(tokens), 4)]
        )
    if len(samples) != int(count):
        raise IpmixError(f"{idx_path}: header says {count} samples, found {len(samples)}")
    return samples
