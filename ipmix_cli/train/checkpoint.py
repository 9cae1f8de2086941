"""Training checkpoints: one torch file per run, written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from fractalgen.files import atomic_write_bytes
from ipmix_cli.common.errors import IpmixError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "ipmix-checkpoint"


def checkpoint_path(run_or_file) -> Path:
    """A run directory → its checkpoint file; a file path → itself."""
    path = Path(run_or_file)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def save_checkpoint(path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": 1, **state}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_checkpoint(run_or_file, map_location="cpu") -> dict:
    """Load a checkpoint written by `ipmix train`; one-line IpmixError if it is missing or not one."""
    path = checkpoint_path(run_or_file)
    if not path.is_file():
        raise IpmixError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, foreign pickle
        # torch's own messages are long or bare numbers (a pickle opcode): name the kind only
        raise IpmixError(f"cannot read checkpoint {path}: not a complete torch checkpoint "
                         f"({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise IpmixError(f"{path} is not an ipmix training checkpoint")
    return state
