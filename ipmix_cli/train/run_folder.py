"""Where a run's files go. A local `--out` is written in place. A URL `--out` (s3://bucket/runs/x)
is written in a local staging folder that starts as a copy of what the prefix holds (so a
`--resume` finds its checkpoint) and is mirrored to the prefix by rank 0: after each checkpoint
the changed files with checkpoint.pt last, at the end the changed files with summary.json last.

Why checkpoint.pt last: a resume cuts log.jsonl back to the checkpoint's step, so a log newer
than the checkpoint is harmless, while a checkpoint newer than its log would lose records. The
old checkpoint object stays until the new one replaces it (one PUT), so the prefix always holds
one to resume from."""

from __future__ import annotations

from pathlib import Path

from ipmix_cli.common.objstore import StagedOut, is_store_url
from ipmix_cli.train.checkpoint import CHECKPOINT_NAME
from ipmix_cli.train.logs import SUMMARY_NAME


class RunFolder:
    """`path` is the local folder the loop writes; `shown` is the --out the user gave, which
    messages and summary.json name."""

    def __init__(self, out, storage_options: dict | None = None, staging_root=None, uploads: bool = True):
        self.shown = str(out)
        self.staged = None
        self.uploads = uploads  # only rank 0 mirrors the folder
        if is_store_url(out):
            self.shown = self.shown.rstrip("/")
            self.staged = StagedOut(self.shown, "--out", storage_options, staging_root)
            self.path = self.staged.pull()
        else:
            self.path = Path(out)

    def name(self, rel: str) -> str:
        """How messages name the file `rel` of the run folder."""
        return f"{self.shown}/{rel}" if self.staged else str(self.path / rel)

    def after_checkpoint(self) -> None:
        if self.staged and self.uploads:
            self.staged.publish(CHECKPOINT_NAME, replace_marker=True)

    def at_end(self) -> None:
        if self.staged and self.uploads:
            self.staged.publish(SUMMARY_NAME)

    def close(self) -> None:
        if self.staged:
            self.staged.cleanup()
