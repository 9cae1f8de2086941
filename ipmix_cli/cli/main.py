"""The `ipmix` command: a Click group whose subcommands are imported only when used,
so `ipmix shards build` never pays for importing torch."""

from __future__ import annotations

import errno
import importlib
import signal
import sys

import click

from fractalgen.errors import FractalgenError
from ipmix_cli.common.errors import OptionError
from ipmix_cli.common.optional import missing_package_message

# Exit codes: 1 user error, 2 usage error (Click), 130 interrupted (Ctrl-C).
EXIT_INTERRUPTED = 130


class LazyGroup(click.Group):
    """A group whose subcommands live in other modules, given as name → ("module:attribute",
    one-line help). The help lines let `--help` list commands without importing them."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module_name, attr = self.lazy[name][0].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, self.lazy[name][1]) for name in self.list_commands(ctx) if name in self.lazy]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy={
        "fractals": ("ipmix_cli.cli.fractals:fractals", "Render the fractal mixing set; preview it, print its quality."),
        "augment": ("ipmix_cli.cli.augment:augment", "See what IPMix (or AugMix, PixMix) does to your pictures."),
        "shards": ("ipmix_cli.cli.shards:shards", "Build augmented epochs as WebDataset shards; verify, inspect, preview."),
        "train": ("ipmix_cli.cli.train:train_command", "Train a classifier on shards (one process, or several under torchrun)."),
        "eval": ("ipmix_cli.cli.evaluate:eval_command", "Clean, corruption and calibration error (and PGD) of a checkpoint."),
        "corrupt": ("ipmix_cli.cli.evaluate:corrupt_command", "Make a CIFAR-10-C-style corrupted copy of a test set."),
        "bench": ("ipmix_cli.cli.bench:bench", "Measure each stage's throughput on this machine."),
        "demo": ("ipmix_cli.cli.demo:demo_command", "The whole job end to end on the digits dataset."),
    },
)
@click.version_option(package_name="ipmix")
def cli():
    """Render a fractal mixing set, pre-generate IPMix-augmented epochs as WebDataset
    shards, and stream them into training."""


_OS_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file size limit reached)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
}


def cli_flag(option: str) -> str:
    """The flag of a library option (`node_rank` → `--node-rank`) in an OptionError's message."""
    return "--" + option.replace("_", "-")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; errors a user can cause become one line."""
    try:
        result = cli.main(args=argv, prog_name="ipmix", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("\nInterrupted: run the same command again to resume.", err=True)
        return EXIT_INTERRUPTED
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except FractalgenError as exc:
        click.echo(f"Error: {exc.spelled(cli_flag) if isinstance(exc, OptionError) else exc}", err=True)
        return 1
    except ModuleNotFoundError as exc:  # an optional package (torch, scikit-learn) is not installed
        message = missing_package_message(exc)
        if message is None:
            raise
        click.echo(f"Error: {message}", err=True)
        return 1
    except OSError as exc:
        if exc.errno not in _OS_ERRORS:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"Error: {_OS_ERRORS[exc.errno]}{where}", err=True)
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    # With a file size limit (ulimit -f), let writes fail with EFBIG instead of killing us.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    sys.exit(run())


if __name__ == "__main__":
    main()
