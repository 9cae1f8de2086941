"""What a run writes as it goes: log.jsonl, the progress line, TensorBoard's event files."""

from __future__ import annotations

import json
from pathlib import Path

from fractalgen.files import atomic_write_bytes
from ipmix_cli.common.errors import OptionError

LOG_NAME, CURVES_NAME, SUMMARY_NAME = "log.jsonl", "curves.png", "summary.json"
TENSORBOARD_DIR = "tensorboard"


class RunLog:
    """The JSON-lines log (rank 0 writes); records also kept in memory for the curves."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None):
        self.path, self.enabled, self.records = path, enabled, []
        if enabled and keep_until_step is not None and path.exists():
            # Resuming: drop what was logged after the checkpoint, it will be redone.
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("step", 0) <= keep_until_step:
                    self.records.append(rec)
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in self.records).encode())
        elif enabled:
            atomic_write_bytes(path, b"")

    def write(self, record: dict) -> None:
        if self.enabled:
            self.records.append(record)
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def tensorboard_writer_class():
    """torch's SummaryWriter; IpmixError naming the package when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise OptionError("{tensorboard} needs the tensorboard package, which is not installed: "
                          "pip install tensorboard") from None
    return SummaryWriter


def format_step_line(record: dict, epochs: int) -> str:
    width = len(str(record["total_steps"]))
    return (f"step {record['step']:>{width}}/{record['total_steps']} (epoch {record['epoch'] + 1}/{epochs}) "
            f"loss {record['loss']:.4f} lr {record['lr']:.4g} {record['samples_per_s']:,.0f} samples/s "
            f"data-wait {100 * record['data_wait']:.1f}% eta {format_duration(record['eta_s'])}")


def format_duration(seconds: float) -> str:
    """h:mm:ss"""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
