"""This process's place in a ``torchrun`` run and the few collectives training needs: a barrier,
the mean of logged values, agreement on whether a step's loss is finite, gathering the random
generators' states for a checkpoint; and those ``propose`` needs: rank 0's work list to every
rank, every rank's results to rank 0. Without torchrun (world size 1) each is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from model.devices import choose_device


@dataclass(frozen=True)
class Distributed:
    """Where this process stands under ``torchrun`` (world size 1 without it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_environment() -> Distributed:
        return Distributed(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )

    def device(self, requested: str) -> torch.device:
        """This rank's device for ``requested`` (``model.devices.choose_device``); ``auto`` never
        picks MPS for training."""
        return choose_device(requested, local_rank=self.local_rank if self.enabled else None, mps=False)

    def init(self, device: torch.device, backend: str | None = None) -> None:
        """Joins the run's process group: NCCL on CUDA, gloo on the CPU, unless ``backend`` says
        (a run that only sends Python objects takes gloo, which needs no GPU memory for them)."""
        if self.enabled and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Each value averaged over the ranks (every rank passes the same keys in the same order)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.world_size).tolist()))

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on every rank: all ranks get the same answer."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return bool(tensor.item())

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order (any picklable object)."""
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def gather_to_main(self, value: Any) -> list[Any] | None:
        """``value`` of every rank, in rank order, on rank 0 only (the others get None): what only
        rank 0 keeps need not travel to every rank."""
        if not self.enabled:
            return [value]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object; the other ranks pass None)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


class RunStopped(RuntimeError):
    """Another process of a ``torchrun`` run ended (its own error says why), so this one stops."""


# What the process-group backends say when a peer process has gone: gloo raises a plain
# RuntimeError, NCCL and the store torch.distributed's own error types.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker", "Broken pipe")


def peer_gone(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process of the run has ended."""
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(text in str(error) for text in _PEER_GONE)
    )


@contextmanager
def run_stopped_if_a_peer_ends(distributed: Distributed) -> Iterator[None]:
    """Inside, a collective that fails because another process of the run ended raises
    ``RunStopped`` (one line; the other process's own error says why) instead of the backend's
    error with its traceback. Every other error passes as it is."""
    try:
        yield
    except Exception as error:
        if distributed.enabled and peer_gone(error):
            message = f"rank {distributed.rank}: stopped because another process of the run ended (its error says why)"
            raise RunStopped(message) from None
        raise
