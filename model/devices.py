"""The one place where ``--device auto`` (and the app's "auto") becomes a torch device.

``auto`` is CUDA when there is a GPU, then Apple's MPS where inference asks for it, then the CPU.
Under ``torchrun`` each process takes the GPU of its ``LOCAL_RANK``, for ``auto`` and for a bare
``cuda`` alike, so that N processes on one machine use N GPUs.
"""

from __future__ import annotations

import torch


def choose_device(
    requested: str | torch.device = "auto", *, local_rank: int | None = None, mps: bool = True
) -> torch.device:
    """The device for ``requested`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``).

    ``local_rank``: this process's GPU under torchrun (None outside it). ``mps``: whether ``auto``
    may choose Apple's MPS (inference does; training does not: several of its ops fall back to
    the CPU there).
    """
    if str(requested) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        if mps and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None and local_rank is not None:
        return torch.device("cuda", local_rank)
    return device


def device_choices() -> list[str]:
    """What a person can pick in the app: ``auto``, ``cpu``, each CUDA GPU, and MPS where there is one."""
    choices = ["auto", "cpu"]
    choices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append("mps")
    return choices
