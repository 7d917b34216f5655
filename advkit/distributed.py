"""torchrun support: who am I, which samples are mine, and bringing results back to rank 0.

``torchrun --nproc_per_node=N -m advkit attack ...`` starts N processes with RANK/WORLD_SIZE set; each
attacks every N-th planned sample and rank 0 merges the per-sample rows into one report. A mistake met by one
rank stops every rank with one message (:meth:`World.together`), instead of leaving the others to fail in the
next collective. Without torchrun everything below is a no-op for a world of one.

    >>> world = World()
    >>> world.size, world.is_root, shard(np.arange(5), World(rank=1, size=2)).tolist()
    (1, True, [1, 3])
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from advkit.errors import AdvkitError, one_line

T = TypeVar("T")
_END = object()
_joined = False  # this process has joined a torchrun process group


class RankFailed(AdvkitError):
    """A mistake met by some torchrun rank, raised on every rank so that all of them stop together; the CLI
    prints it on rank 0 only (the other ranks exit 1 quietly)."""


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes (1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None on the other ranks."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        bucket: list[Any] | None = [None] * self.size if self.is_root else None
        dist.gather_object(obj, bucket, dst=0)
        return bucket

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def together(self) -> Iterator[None]:
        """A block every rank runs with no collective inside: a mistake (AdvkitError, OSError) raised in it on any
        rank is raised on every rank after the block, as :class:`RankFailed` with the first failing rank's message,
        so the others stop too instead of waiting for it in the next collective; every rank has then left the
        process group. A no-op for a world of one."""
        if self.size == 1:
            yield
            return
        import torch.distributed as dist

        mine: AdvkitError | OSError | None = None
        try:
            yield
        except (AdvkitError, OSError) as exc:
            mine = exc
        messages: list[str | None] = [None] * self.size
        dist.all_gather_object(messages, None if mine is None else one_line(mine))
        failed = next((rank for rank, message in enumerate(messages) if message is not None), None)
        if failed is not None:  # no collective can follow: leave the group now (a process exiting in it aborts)
            self.close()
            raise RankFailed(messages[failed] if failed == 0 else f"rank {failed}: {messages[failed]}") from mine

    def lockstep(self, items: Iterator[T]) -> Iterator[T]:
        """``items`` (the same number on every rank) advanced together: an item that fails on one rank stops all."""
        while True:
            with self.together():
                item = next(items, _END)
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def close(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def init_world(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as exc:
        raise AdvkitError(f"cannot join the torchrun process group ({backend}): {exc}") from None
    global _joined
    _joined = True
    return World(dist.get_rank(), dist.get_world_size())


def world_rank() -> int:
    """This process's torchrun rank, read from the environment (0 without torchrun)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def prints_errors(exc: BaseException) -> bool:
    """Whether this process should print ``exc``: rank 0 always; another torchrun rank only for a mistake of its own
    that rank 0 cannot have printed. A mistake before joining the group comes from the command line, which every
    rank shares, and a :class:`RankFailed` is printed by rank 0."""
    return world_rank() == 0 or (_joined and not isinstance(exc, RankFailed))


def rank_device(device: torch.device) -> torch.device:
    """On CUDA under torchrun, each rank uses the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % max(torch.cuda.device_count(), 1))
    return device


def shard(indices: np.ndarray, world: World) -> np.ndarray:
    """This rank's share: every size-th item starting at its rank (balanced across ranks)."""
    return indices[world.rank :: world.size]


def merge_columns(parts: list[dict[str, np.ndarray] | None]) -> dict[str, np.ndarray] | None:
    """Concatenate per-rank column dicts (ranks with nothing to report send None)."""
    present = [p for p in parts if p]
    if not present:
        return None
    return {key: np.concatenate([p[key] for p in present]) for key in present[0]}
