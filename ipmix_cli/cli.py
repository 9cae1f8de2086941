"""The `ipmix` command: a Click group whose subcommands are imported only when used,
so `ipmix shards build` never pays for importing torch."""

from __future__ import annotations

import errno
import importlib
import signal
import sys

import click

from fractalgen.errors import FractalgenError

# Exit codes: 1 user error, 2 usage error (Click), 130 interrupted (Ctrl-C).
EXIT_INTERRUPTED = 130


class LazyGroup(click.Group):
    """A group whose subcommands live in other modules, given as "module:attribute"."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup,
    lazy={
        "fractals": "ipmix_cli.commands.fractals:fractals",
        "augment": "ipmix_cli.commands.augment:augment",
        "shards": "ipmix_cli.commands.shards:shards",
        "train": "ipmix_cli.train:train_command",
        "eval": "ipmix_cli.commands.evaluate:eval_command",
        "corrupt": "ipmix_cli.commands.evaluate:corrupt_command",
        "bench": "ipmix_cli.cli:bench",
        "demo": "ipmix_cli.demo:demo_command",
    },
)
@click.version_option(package_name="ipmix")
def cli():
    """Render a fractal mixing set, pre-generate IPMix-augmented epochs as WebDataset
    shards, and stream them into training."""


@click.group(
    cls=LazyGroup,
    lazy={
        "fractals": "ipmix_cli.bench.fractals:bench_fractals",
        "augment": "ipmix_cli.bench.augment:bench_augment",
        "build": "ipmix_cli.bench.build:bench_build",
        "stream": "ipmix_cli.bench.stream:bench_stream",
    },
)
def bench():
    """Measure each stage's throughput on this machine (medians of several runs)."""


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
        click.echo(f"Error: {exc}", err=True)
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
