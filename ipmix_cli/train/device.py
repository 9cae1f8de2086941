"""The torch device a run asks for (`auto` picks CUDA when there is one)."""

from __future__ import annotations

import torch

from ipmix_cli.common.errors import IpmixError


def resolve_device(device: str = "auto") -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise IpmixError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise IpmixError(f"device {device} asked for, but CUDA is not available")
    return dev
