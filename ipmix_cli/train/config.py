"""TrainConfig: one training run as asked for, each field marked with its rule on resume."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.train.logs import tensorboard_writer_class
from ipmix_cli.train.models import check_model_name

MUST_MATCH, MAY_CHANGE = "must match", "may change"  # a field's rule when a run is resumed


def _setting(default=MISSING, *, resume: str):
    return field(default=default, metadata={"resume": resume})


@dataclass(frozen=True)
class TrainConfig:
    """One training run as asked for (see `train`). On resume, the fields marked MUST_MATCH must
    equal the checkpoint's (they shape the stream or the schedule; `model` and `lr` as resolved);
    those marked MAY_CHANGE may differ from one launch to the next."""

    shards: object = _setting(resume=MAY_CHANGE)  # the same shards may be read from another place
    model: str = _setting("auto", resume=MUST_MATCH)
    batch_size: int = _setting(128, resume=MUST_MATCH)
    epochs: int = _setting(1, resume=MUST_MATCH)
    lr: float | None = _setting(None, resume=MUST_MATCH)
    weight_decay: float = _setting(5e-4, resume=MUST_MATCH)
    momentum: float = _setting(0.9, resume=MUST_MATCH)
    seed: int = _setting(0, resume=MUST_MATCH)
    jsd_weight: float = _setting(12.0, resume=MUST_MATCH)
    out: Path | str = _setting(Path("run"), resume=MAY_CHANGE)  # a str when it is a URL
    resume: bool = _setting(False, resume=MAY_CHANGE)
    num_workers: int = _setting(2, resume=MAY_CHANGE)
    max_steps: int | None = _setting(None, resume=MAY_CHANGE)
    device: str = _setting("auto", resume=MAY_CHANGE)
    precision: str = _setting("auto", resume=MAY_CHANGE)
    test: str | None = _setting(None, resume=MAY_CHANGE)
    log_every: int = _setting(50, resume=MAY_CHANGE)
    checkpoint_every: int = _setting(0, resume=MAY_CHANGE)
    threads: int | None = _setting(None, resume=MAY_CHANGE)
    tensorboard: bool = _setting(False, resume=MAY_CHANGE)
    cache_dir: Path | None = _setting(None, resume=MAY_CHANGE)  # with cache_limit: a local cache of
    cache_limit: int | str | None = _setting(None, resume=MAY_CHANGE)  # shards read from object storage
    storage_options: dict | None = _setting(None, resume=MAY_CHANGE)  # fsspec options for --shards URLs

    def validate(self) -> None:
        """Bad values end here, before any process group starts or any file is written."""
        for name, value, low in (("epochs", self.epochs, 1), ("batch size", self.batch_size, 1),
                                 ("log every", self.log_every, 1), ("workers", self.num_workers, 0),
                                 ("checkpoint every", self.checkpoint_every, 0)):
            if int(value) < low:
                raise IpmixError(f"{name} must be at least {low}, got {value}")
        if self.threads is not None and self.threads < 1:
            raise IpmixError(f"threads must be at least 1, got {self.threads}")
        if self.max_steps is not None and self.max_steps < 1:
            raise IpmixError(f"max steps must be at least 1, got {self.max_steps}")
        if not 0 <= int(self.seed) < 2**63:
            raise IpmixError(f"seed must be in 0..2**63-1, got {self.seed}")
        for name, value in (("learning rate", self.lr), ("weight decay", self.weight_decay),
                            ("momentum", self.momentum), ("JSD weight", self.jsd_weight)):
            if value is None:
                continue
            positive = name == "learning rate"
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                kind = "positive" if positive else "non-negative"
                raise IpmixError(f"{name} must be a finite {kind} number, got {value}")
        if (self.cache_dir is None) != (self.cache_limit is None):
            raise OptionError("a shard cache needs both {cache_dir} and {cache_limit}")
        self.cache_bytes()  # a bad size is an error here
        if self.model != "auto":
            check_model_name(self.model)
        if self.tensorboard:
            tensorboard_writer_class()  # a missing package is an error before any work starts

    def cache_bytes(self) -> int | None:
        if self.cache_limit is None:
            return None
        from ipmix_cli.stream.cache import parse_size

        return parse_size(self.cache_limit)


# The run settings a resume compares with the checkpoint's: the MUST_MATCH fields, then what the
# shards fix.
RESUME_KEYS = tuple(f.name for f in fields(TrainConfig) if f.metadata["resume"] == MUST_MATCH) + \
    ("shards_config_hash", "views", "image_size", "num_classes")
