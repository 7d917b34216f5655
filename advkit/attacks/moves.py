"""Move programs: the ordered pixel moves that turned an image into its adversarial version.

A program is a list of steps on an H x W grid. In a step every move ``dst <- src`` reads its value either
from the *clean* image the program is applied to, or from the image *as it was before the step*, and all
writes of a step happen at once. Pixle copies from the clean image; its ``swap`` variant also writes the
displaced values back (read before the step); replaying a program on the aligned image of another domain
moves that image's own pixels in the same way.

Attacks build their candidates with :func:`apply_moves`, the same function :meth:`MoveProgram.apply` uses,
so replaying a recorded program on the attacked image reproduces ``x_adv`` exactly.

    >>> import torch
    >>> image = torch.arange(4.0).view(1, 2, 2)                 # one channel, pixels 0 1 / 2 3
    >>> program = MoveProgram(2, 2, [Step.copy([0], [3])])     # top-left <- bottom-right, from the clean image
    >>> program.apply(image).view(-1).tolist()
    [3.0, 1.0, 2.0, 3.0]
    >>> program.n_moves, program.changed_positions().tolist()
    (1, [0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from advkit.errors import AdvkitError


@dataclass(frozen=True)
class Step:
    """One simultaneous set of moves: ``dst[i] <- src[i]`` (flat positions ``row * W + col``).

    ``from_clean[i]`` says whether the value is read from the clean image (True) or from the image as it
    was before this step (False). Destinations within a step are unique.
    """

    dst: np.ndarray
    src: np.ndarray
    from_clean: np.ndarray

    def __post_init__(self) -> None:  # lengths only: steps are built by the thousand; positions are checked on replay
        if not len(self.dst) == len(self.src) == len(self.from_clean):
            raise AdvkitError(f"a move step needs as many sources and from_clean flags as destinations, got "
                              f"{len(self.dst)} dst, {len(self.src)} src, {len(self.from_clean)} from_clean")

    @staticmethod
    def copy(dst: Sequence[int] | np.ndarray, src: Sequence[int] | np.ndarray) -> Step:
        """Moves reading from the clean image (Pixle)."""
        dst_arr = np.asarray(dst, np.int64)
        return Step(dst_arr, np.asarray(src, np.int64), np.ones(len(dst_arr), bool))

    @staticmethod
    def snapshot(dst: Sequence[int] | np.ndarray, src: Sequence[int] | np.ndarray) -> Step:
        """Moves reading from the image as it was before the step."""
        dst_arr = np.asarray(dst, np.int64)
        return Step(dst_arr, np.asarray(src, np.int64), np.zeros(len(dst_arr), bool))


def apply_moves(
    current: torch.Tensor, clean: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, from_clean: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """One batched step: (N, C, L) images, (N, M) moves; invalid moves are ignored. Returns a new tensor.

    ``L`` is H*W. Later valid moves win over earlier ones with the same destination (callers dedupe so that
    this never depends on scatter order).
    """
    n, c, length = current.shape
    values = _move_values(current, clean, src, from_clean)
    # invalid moves write into a scratch column that is dropped afterwards
    target = torch.where(valid, dst, torch.full_like(dst, length)).unsqueeze(1).expand(n, c, -1)
    out = torch.cat([current, current.new_zeros(n, c, 1)], dim=2)
    out.scatter_(2, target, values)
    return out[:, :, :length].contiguous()


def idle_moves(
    current: torch.Tensor, clean: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, from_clean: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """(N, M) True where a move changes nothing: invalid, or writing the value its destination already holds.

    Same arguments as :func:`apply_moves`; a step whose moves are all idle leaves ``current`` unchanged.
    """
    n, c, length = current.shape
    held = current.gather(2, dst.clamp(0, length - 1).unsqueeze(1).expand(n, c, -1))
    return ~valid | (_move_values(current, clean, src, from_clean) == held).all(1)


def _move_values(current: torch.Tensor, clean: torch.Tensor, src: torch.Tensor, from_clean: torch.Tensor) -> torch.Tensor:
    """(N, C, M) values the moves write: read from the clean image or from ``current`` before any move."""
    n, c, length = current.shape
    idx_src = src.clamp(0, length - 1).unsqueeze(1).expand(n, c, -1)  # (N, M) -> (N, C, M)
    return torch.where(from_clean.unsqueeze(1), clean.gather(2, idx_src), current.gather(2, idx_src))


def last_writer_mask(dst: torch.Tensor, valid: torch.Tensor, length: int) -> torch.Tensor:
    """(N, M) mask keeping, for each destination, only the last valid move that writes it."""
    order = torch.arange(dst.shape[1], device=dst.device).expand_as(dst)
    winner = torch.full((dst.shape[0], length + 1), -1, dtype=torch.long, device=dst.device)
    target = torch.where(valid, dst, torch.full_like(dst, length))
    winner.scatter_reduce_(1, target, torch.where(valid, order, -1), reduce="amax")
    return valid & (winner.gather(1, target) == order)


@dataclass
class MoveProgram:
    """An ordered list of :class:`Step` on an ``height`` x ``width`` grid; apply it to any image of that size."""

    height: int
    width: int
    steps: list[Step]

    @property
    def n_moves(self) -> int:
        return sum(len(s.dst) for s in self.steps)

    def changed_positions(self) -> np.ndarray:
        """Sorted flat positions some step writes (a superset of the pixels that actually change)."""
        if not self.steps:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate([s.dst for s in self.steps]))

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """Replay on a (C, H, W) or (B, C, H, W) image with the program's H x W; returns a new tensor."""
        if image.dim() not in (3, 4):
            raise AdvkitError(f"move programs replay on (C, H, W) or (B, C, H, W) images, got shape {tuple(image.shape)}")
        if image.shape[-2:] != (self.height, self.width):
            raise AdvkitError(
                f"this move program is for {self.height}x{self.width} images, got {image.shape[-2]}x{image.shape[-1]}"
            )
        batched = image.dim() == 4
        x = image if batched else image.unsqueeze(0)
        clean = x.flatten(2)  # (B, C, H, W) -> (B, C, H*W)
        out = clean
        if self.steps:
            _check_positions(np.concatenate([a for step in self.steps for a in (step.dst, step.src)]), self.height, self.width)
        for step in self.steps:
            moves = [torch.as_tensor(a, device=x.device).expand(x.shape[0], -1) for a in (step.dst, step.src, step.from_clean)]
            out = apply_moves(out, clean, moves[0], moves[1], moves[2], torch.ones_like(moves[2]))
        out = out.view_as(x)
        return out if batched else out[0]

    # ---- flat arrays for HDF5 (one program per sample) ----------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """``step_sizes`` (S,), ``dst``/``src`` (M,) int64 and ``from_clean`` (M,) bool, steps concatenated."""
        return {
            "step_sizes": np.array([len(s.dst) for s in self.steps], np.int64),
            "dst": np.concatenate([s.dst for s in self.steps]) if self.steps else np.zeros(0, np.int64),
            "src": np.concatenate([s.src for s in self.steps]) if self.steps else np.zeros(0, np.int64),
            "from_clean": np.concatenate([s.from_clean for s in self.steps]) if self.steps else np.zeros(0, bool),
        }

    @classmethod
    def from_arrays(cls, height: int, width: int, arrays: dict[str, np.ndarray]) -> MoveProgram:
        bounds = np.concatenate([[0], np.cumsum(arrays["step_sizes"])]).astype(np.int64)
        if bounds[-1] != len(arrays["dst"]) or len(arrays["dst"]) != len(arrays["src"]):
            raise AdvkitError("move program arrays are inconsistent (step sizes do not match the moves)")
        _check_positions(np.concatenate([arrays["dst"], arrays["src"]]), height, width)
        steps = [
            Step(arrays["dst"][a:b].astype(np.int64), arrays["src"][a:b].astype(np.int64), arrays["from_clean"][a:b].astype(bool))
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
        return cls(height, width, steps)


def moves_table(index: np.ndarray, programs: list[MoveProgram]) -> dict[str, np.ndarray]:
    """Programs as one flat table: a row per move with its sample (dataset index), step number, dst, src, from_clean."""
    rows: dict[str, list[np.ndarray]] = {"sample": [], "step": [], "dst": [], "src": [], "from_clean": []}
    for sample, program in zip(index.tolist(), programs):
        for number, step in enumerate(program.steps):
            rows["sample"].append(np.full(len(step.dst), sample, np.int64))
            rows["step"].append(np.full(len(step.dst), number, np.int64))
            rows["dst"].append(step.dst)
            rows["src"].append(step.src)
            rows["from_clean"].append(step.from_clean)
    empty = {"sample": np.int64, "step": np.int64, "dst": np.int64, "src": np.int64, "from_clean": bool}
    return {k: np.concatenate(v) if v else np.zeros(0, empty[k]) for k, v in rows.items()}


def _check_positions(positions: np.ndarray, height: int, width: int) -> None:
    if len(positions) and (positions.min() < 0 or positions.max() >= height * width):
        raise AdvkitError(f"move program has positions outside a {height}x{width} image")


def programs_from_table(table: dict[str, np.ndarray], sample: int, height: int, width: int) -> MoveProgram:
    """Rebuild one sample's program from :func:`moves_table` rows (as read back from a report)."""
    mine = table["sample"] == sample
    _check_positions(np.concatenate([table["dst"][mine], table["src"][mine]]), height, width)
    steps_of = table["step"][mine]
    steps = [
        Step(table["dst"][mine][steps_of == s], table["src"][mine][steps_of == s], table["from_clean"][mine][steps_of == s].astype(bool))
        for s in np.unique(steps_of)
    ]
    return MoveProgram(height, width, steps)
