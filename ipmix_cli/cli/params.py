"""Option types shared by the commands: a seed, a bounded count, an image format that takes
`jpeg` as another spelling of `jpg` without listing it twice, and data paths that must be local
(a URL is one `Error:` line, never a folder named `s3:`)."""

from __future__ import annotations

import click

from ipmix_cli.common import storage
from ipmix_cli.shardformat.fields import FORMATS, canonical

MAX_SEED = 2**63 - 1


class SeedType(click.ParamType):
    name = "seed"

    def get_metavar(self, param, ctx=None) -> str:
        return "0..2^63-1"

    def convert(self, value, param, ctx):
        try:
            seed = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number", param, ctx)
        if not 0 <= seed <= MAX_SEED:
            self.fail(f"{value} is not in 0..2^63-1", param, ctx)
        return seed


class Count(click.IntRange):
    """A whole number in min..max whose help shows the range as `1..N`, not `1<=x<=N`."""

    def __init__(self, min: int, max: int):
        super().__init__(min, max)

    def _describe_range(self) -> str:
        return f"{self.min}..{self.max}"

    def get_metavar(self, param, ctx=None) -> str:
        return "N"


class ImageFormat(click.Choice):
    """png, npy, jpg or webp; `jpeg` is accepted as `jpg`."""

    def __init__(self, choices=tuple(FORMATS)):
        super().__init__(list(choices), case_sensitive=False)

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            value = canonical(value)
        return super().convert(value, param, ctx)


SEED = SeedType()


def _option_name(param) -> str:
    if param is None:
        return "path"
    return param.opts[0] if isinstance(param, click.Option) else param.human_readable_name


class LocalPath(click.Path):
    """A click.Path that refuses URLs and pipe: commands (one `Error:` line, before the command
    runs, so nothing is written): `role` says what must be local, `keep` what passes as given."""

    def __init__(self, role: str, *, keep: tuple[str, ...] = (), remote: bool = False, **path_options):
        super().__init__(**path_options)
        self.role = role
        self.keep = keep
        self.remote = remote  # a URL of an installed store passes as given (the command reads it)

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            local = storage.require_local(value, _option_name(param), self.role, keep=self.keep, remote=self.remote)
            if storage.classify(local).kind != "local":
                return local  # a kept URL or pipe: command, as the user gave it
            value = local
        return super().convert(value, param, ctx)


class SourceSpec(click.ParamType):
    """A source spec (digits, cifar10:PATH, folder:PATH, wds:PATTERN, PATH) whose path is local."""

    name = "source"

    def __init__(self, role: str, *, remote_folders: bool = False, remote_kinds: tuple[str, ...] = ("folder",)):
        self.role = role
        self.remote_folders = remote_folders
        self.remote_kinds = remote_kinds

    def convert(self, value, param, ctx):
        return storage.require_local_source(str(value), _option_name(param), self.role,
                                            remote_folders=self.remote_folders, remote_kinds=self.remote_kinds)


def storage_option(command=None, *, what: str = "a URL OUT"):
    """The repeatable --storage-option KEY=VALUE of the commands that touch object storage
    (`what` names the path it is for in the help)."""
    def decorate(command):
        return click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
                            help=f"An fsspec option for {what}, repeatable (e.g. endpoint_url=http://host:9000, "
                                 "client_kwargs.region_name=eu-west-1); added to what AWS_ENDPOINT_URL, AWS_* "
                                 "and FSSPEC_<PROTOCOL>_<OPTION> variables give.")(command)
    return decorate(command) if command is not None else decorate
