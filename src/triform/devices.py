"""The torch device a command is asked to run on, checked before anything loads onto it: a name
torch does not know, or a device this machine's torch cannot reach, is one line naming the option,
where torch would raise from deep inside the first tensor moved there."""

from __future__ import annotations

import torch

from triform.errors import TriformError


def usable_device(name: str, option: str = "--device") -> torch.device:
    """torch.device(name), where this process can use it."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise TriformError(f"{option} {name}: not a torch device; expected cpu, cuda, cuda:N, mps, ...") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise TriformError(f"{option} {name}: torch sees no CUDA device (torch {torch.__version__})")
        if device.index is not None and device.index >= count:
            raise TriformError(f"{option} {name}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "meta":  # shapes without data: nothing could be computed
        raise TriformError(f"{option} {name}: holds no data; expected cpu, cuda, cuda:N, mps, ...")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise TriformError(f"{option} {name}: torch sees no Apple GPU (mps) here")
    elif device.type not in ("cpu", "cuda", "mps") and not _reachable(device):
        raise TriformError(f"{option} {name}: torch cannot place a tensor there")
    return device


def _reachable(device: torch.device) -> bool:
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, NotImplementedError):
        return False
    return True
