"""Optional dependencies: which extra brings each package, and the one line a user sees when a
command needs one that is missing."""

from __future__ import annotations

from ipmix_cli.common.errors import IpmixError

# import name → (package, pip extra, what needs it)
EXTRAS = {
    "torch": ("torch", "train", "training and evaluation need"),
    "sklearn": ("scikit-learn", "demo", "the digits source (and `ipmix bench build`'s sample photos) needs"),
    "scipy": ("scipy", "eval", "`ipmix corrupt` needs"),
    "skimage": ("scikit-image", "eval", "`ipmix corrupt` needs"),
}
# The oldest torch the code runs on: torch.amp.GradScaler(device, ...) appeared in torch 2.3.
TORCH_FLOOR = (2, 3)


def missing_package_message(exc: ImportError) -> str | None:
    """`Error:` text for an optional package that is not installed; None for anything else."""
    top = (getattr(exc, "name", None) or "").split(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or top not in EXTRAS:
        return None
    package, extra, needed_by = EXTRAS[top]
    return f"{needed_by} {package}, which is not installed: pip install 'ipmix[{extra}]'"


def check_torch_version(version: str) -> None:
    """IpmixError when `version` (torch.__version__) is older than TORCH_FLOOR."""
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    if tuple(parts) < TORCH_FLOOR:
        floor = ".".join(map(str, TORCH_FLOOR))
        raise IpmixError(f"torch {version} is older than {floor}, the oldest ipmix runs on: "
                         f"pip install 'torch>={floor}'")
