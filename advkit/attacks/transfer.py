"""Cross-domain transfer: attack one domain of aligned RGB-IR pairs and replay the pixel moves on the other.

Protocol of the IEEE Access 2023 paper (methods.md section 2f), per direction (e.g. RGB -> IR):
  1. keep the test pairs that both models classify correctly, each in its own domain;
  2. attack the source image with the source model (a pixel-moving attack: pixle, white-pixle, ...);
  3. replay the recorded move program on the aligned target image: the target's own pixels move the same way,
     nothing is tuned and the target model is never queried while attacking;
  4. count source success, transfer (target fooled) and both fooled, over the kept pairs.
Two controls run on the same pairs:
  - random moves: for each pair, a program with the same steps and the same number of moves per step, at
    random positions, replayed on the target;
  - additive attacks (FGSM and PGD on the source model): the same delta added to the target image (the
    channel mean of an RGB delta for a 1-channel IR target, a 1-channel delta replicated for an RGB target).

    >>> import torch
    >>> from advkit.attacks.moves import MoveProgram, Step
    >>> program = MoveProgram(2, 2, [Step.copy([0, 1], [3, 2])])
    >>> shuffled = random_program_like(program, seed=0)
    >>> [len(s.dst) for s in shuffled.steps], shuffled.height
    ([2], 2)
    >>> tuple(transfer_delta(torch.ones(1, 3, 2, 2), 1).shape)
    (1, 1, 2, 2)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from advkit.attacks.base import Attack
from advkit.attacks.moves import MoveProgram, Step, moves_table
from advkit.attacks.runner import sample_seeds
from advkit.datasets import ImageDataset
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper
from advkit.rng import derive_seed, generator
from advkit.runtime import ProgressEvent, ProgressFn, no_progress


def random_program_like(program: MoveProgram, seed: int) -> MoveProgram:
    """Same steps, same number of moves per step and read modes, at random positions (distinct destinations)."""
    rng = np.random.default_rng(seed)
    length = program.height * program.width
    steps = [
        Step(rng.choice(length, len(s.dst), replace=False).astype(np.int64), rng.integers(0, length, len(s.src)), s.from_clean.copy())
        for s in program.steps
    ]
    return MoveProgram(program.height, program.width, steps)


def transfer_delta(delta: torch.Tensor, channels: int) -> torch.Tensor:
    """An additive perturbation (B, C, H, W) carried to ``channels`` channels: channel mean, or replication."""
    if delta.shape[1] == channels:
        return delta
    if channels == 1:
        return delta.mean(1, keepdim=True)
    if delta.shape[1] == 1:
        return delta.expand(-1, channels, -1, -1)
    raise AdvkitError(f"cannot carry a {delta.shape[1]}-channel perturbation to {channels} channels")


@torch.no_grad()
def predictions(model: ModelWrapper, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Uncounted predicted labels (evaluation, not attack queries) of the net as deployed (eval mode)."""
    with model.evaluating():
        return torch.cat([model.logits(x[i : i + batch_size].to(model.device)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def select_pairs(source: ModelWrapper, target: ModelWrapper, src: ImageDataset, tgt: ImageDataset, *, split: str, n: int | None, seed: int) -> np.ndarray:
    """Dataset indices of ``split`` pairs both models classify correctly, in a seeded order, at most n."""
    pool = src.indices(split, required=True)
    order = pool[torch.randperm(len(pool), generator=generator(seed, "transfer-selection")).numpy()]
    xs, y = src.batch(order)
    xt, _ = tgt.batch(order)
    both = (predictions(source, xs) == y) & (predictions(target, xt) == y)
    kept = order[both.numpy()]
    if len(kept) == 0:
        raise AdvkitError(f"no {split} pair is classified correctly by both models")
    return kept[:n] if n else kept


@dataclass
class DirectionResult:
    """Per-pair columns, the flat table of source move programs, and the summary of one direction."""

    columns: dict[str, np.ndarray]
    moves: dict[str, np.ndarray]
    summary: dict[str, float | int | str] = field(default_factory=dict)


def run_direction(
    attack: Attack,
    source: ModelWrapper,
    target: ModelWrapper,
    src: ImageDataset,
    tgt: ImageDataset,
    index: np.ndarray,
    *,
    seed: int = 0,
    batch_size: int = 64,
    controls: dict[str, Attack] | None = None,
    progress: ProgressFn = no_progress,
) -> DirectionResult:
    """Attack ``index`` pairs on the source domain, replay on the target, and run the controls."""
    parts = list(direction_batches(attack, source, target, src, tgt, index, seed=seed, batch_size=batch_size,
                                   controls=controls, progress=progress))
    columns = {k: np.concatenate([c[k] for c, _ in parts]) for k in parts[0][0]}
    moves = {k: np.concatenate([m[k] for _, m in parts]) for k in parts[0][1]}
    return DirectionResult(columns, moves, direction_summary(columns, list(controls or {})))


def direction_batches(
    attack: Attack,
    source: ModelWrapper,
    target: ModelWrapper,
    src: ImageDataset,
    tgt: ImageDataset,
    index: np.ndarray,
    *,
    seed: int = 0,
    batch_size: int = 64,
    controls: dict[str, Attack] | None = None,
    progress: ProgressFn = no_progress,
    done: int = 0,
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """:func:`run_direction` a batch at a time: (per-pair columns, rows of the moves table) of each batch, so a
    caller can journal them. Every pair's moves depend on its seed only, not on its batch; the PGD control is
    torchattacks' PGD, whose random start depends on the batch (docs/methods.md). ``done`` pairs counted before
    (a resumed run) start the progress."""
    if len(index) == 0 and not done:
        raise AdvkitError("no pairs to transfer (empty index)")
    task, total, hits = f"{src.domain} -> {tgt.domain}", done + len(index), []
    for start in range(0, len(index), batch_size):
        idx = index[start : start + batch_size]
        xs, y = src.batch(idx)
        xt, _ = tgt.batch(idx)
        result = attack(source, xs, y, seeds=sample_seeds(seed, attack.name, idx))
        if result.moves is None:
            raise AdvkitError(f"{attack.name} does not record pixel moves; transfer needs pixle, white-pixle or white-pixle-sorted")
        replayed = torch.stack([p.apply(xt[i]) for i, p in enumerate(result.moves)])
        shuffled = torch.stack([random_program_like(p, derive_seed(seed, "random-control", int(i))).apply(xt[j])
                                for j, (i, p) in enumerate(zip(idx, result.moves))])
        labels = y.numpy()
        columns = {
            "index": idx, "label": labels, "src_success": result.success.cpu().numpy(),
            "src_adv_pred": result.adv_pred.cpu().numpy(), "queries": result.queries.cpu().numpy(),
            "iterations": result.iterations.cpu().numpy(), "l0": result.l0.cpu().numpy(),
            "n_moves": np.array([p.n_moves for p in result.moves], np.int64),
            "tgt_adv_pred": predictions(target, replayed).numpy(),
            "random_tgt_pred": predictions(target, shuffled).numpy(),
        }
        for name, control in (controls or {}).items():
            additive = control(source, xs, y, seeds=sample_seeds(seed, name, idx))
            delta = transfer_delta(additive.x_adv.cpu() - xs, xt.shape[1])
            columns[f"{name}_src_success"] = additive.success.cpu().numpy()
            columns[f"{name}_tgt_pred"] = predictions(target, (xt + delta).clamp(0, 1)).numpy()
        for name, pred in (("tgt", "tgt_adv"), ("random_tgt", "random_tgt"), *((f"{c}_tgt", f"{c}_tgt") for c in controls or {})):
            columns[f"{name}_success"] = columns[f"{pred}_pred"] != labels
        hits.append(columns["src_success"])
        progress(ProgressEvent(task, done + start + len(idx), total, {"source success": float(np.mean(np.concatenate(hits)))}))
        yield columns, moves_table(idx, result.moves)


def direction_summary(columns: dict[str, np.ndarray], controls: list[str]) -> dict[str, float | int | str]:
    """Rates over the kept pairs: source success, transfer, both fooled; the same for each control."""
    src, tgt = columns["src_success"], columns["tgt_success"]
    summary: dict[str, float | int | str] = {
        "pairs": len(src),
        "source_success_rate": float(src.mean()),
        "transfer_rate": float(tgt.mean()),
        "both_fooled_rate": float((src & tgt).mean()),
        "moves_mean": float(columns["n_moves"][src].mean()) if src.any() else float("nan"),
        "l0_mean": float(columns["l0"][src].mean()) if src.any() else float("nan"),
        "queries_mean": float(columns["queries"].mean()),
        "random.transfer_rate": float(columns["random_tgt_success"].mean()),
    }
    for name in controls:
        s, t = columns[f"{name}_src_success"], columns[f"{name}_tgt_success"]
        summary.update({f"{name}.source_success_rate": float(s.mean()), f"{name}.transfer_rate": float(t.mean()),
                        f"{name}.both_fooled_rate": float((s & t).mean())})
    return summary
