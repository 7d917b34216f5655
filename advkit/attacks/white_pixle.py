"""WhitePixle: the gradient-guided pixel rearrangement of the RGB/infrared paper, batched.

Pomponi, D'Antoni, Nicolosi, Scardapane, IEEE Access 2023 (code: github.com/jaryP/IR-RGB-domain-attack,
``attacks/white_pixle.py``: ``RandomWhitePixle`` is ``white-pixle``, ``WhitePixle`` is ``white-pixle-sorted``).

``white-pixle`` (methods.md section 2a). At the start of each restart, one forward and one backward pass give
the input gradient of the cross-entropy at the current image; its channel-mean magnitude ``g`` (H x W) sets
where pixels move. In ``htl`` mode, destinations are drawn with probability proportional to ``g`` (the
pixels that matter most) and sources with probability proportional to ``1 / g`` (the ones that matter least);
``lth`` swaps the two. In either mode a zero-gradient pixel weighs 0 in both draws: it is never a source or a
destination. Each candidate moves ``k`` pixels drawn without replacement, where ``pixels_per_iteration`` gives
k as an int, a fraction of H*W, or a (low, high) range drawn once per restart. Inside a restart the search is greedy: a candidate that lowers the true-class
probability becomes the current image at once. A candidate that misclassifies stops the attack (once the best
true-class probability is below the clean image's, the reference's ``acceptance_threshold`` of 1). A restart
that improves nothing ends the attack. Untargeted only, as in the paper.

Deliberate differences from the reference code (also in docs/methods.md):
  - every accepted candidate is recorded, in order, as a step of a move program (the reference keeps only
    the last improving move of each restart, so replaying it gives a subset of the perturbation);
  - a candidate reads its source values from the current image, the state just before its own step (the
    reference reads them from the image at the start of the restart). Each step then depends only on the
    image before it, so replaying a program reproduces x_adv exactly (a naive move-by-move replay of the
    reference's records reproduces x_adv on only 33-84% of images at 20+ pixels per move);
  - the loss of the restart's starting image comes from the gradient pass (no extra query), and the
    ``acceptance_threshold`` of the reference (always 1 in its configs) is fixed at 1;
  - all unfinished images advance together, one candidate per image per forward pass; sampling without
    replacement uses per-sample counter-based random streams (Gumbel top-k), so the random numbers do not
    depend on the batch. The results can, on rare images: a net's logits for an image differ in their last
    bits with the batch size, and a gradient-weighted draw near a tie then goes the other way (1 of 50
    MNIST-subset images at batch 3 vs 100; docs/methods.md, "Batch size and floating point").

Queries: one per restart for its gradient pass (restart 0's, on the clean image, is the clean query) and one
per candidate that changes the image (one whose sources all hold their destinations' values is an iteration
but no query; the reference queries it too).

``white-pixle-sorted`` walks the pixels by gradient rank instead of sampling. The gradient is taken once, on
the clean image. Step i copies the ``pixels_per_iteration`` next-least-important pixels onto the next
most-important ones (``htl``), reading from the current image, and queries the model. It stops at the first
misclassification or once it has moved ``attack_limit`` pixels.

    >>> import torch
    >>> from advkit.models import ModelWrapper, Preprocessing
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    >>> model = ModelWrapper(net, Preprocessing(channels=3, input_size=(8, 8)))
    >>> x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> y = model(x).argmax(1)
    >>> result = WhitePixle(pixels_per_iteration=2, restarts=3, max_iterations=5)(model, x, y)
    >>> all(torch.equal(p.apply(x[i]), result.x_adv[i]) for i, p in enumerate(result.moves))
    True
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.attacks.base import ATTACKS, Attack, PixelsOrFraction, RawResult, check_finite, pixels_or_fraction_range, positive_int
from advkit.attacks.moves import apply_moves, last_writer_mask
from advkit.attacks.pixle import _Moves
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper, QueryCounter
from advkit.rng import counter_uniform

MODES = ("htl", "lth")


def _pixel_count(value: PixelsOrFraction, name: str) -> PixelsOrFraction:
    """One pixel count (no range): an int >= 1 or a fraction in (0, 1] of H*W."""
    if not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be one int or fraction here (no (low, high) range), got {value!r}")
    return pixels_or_fraction_range(name, value, "the image's pixels")[0]


def _pixels(value: PixelsOrFraction, length: int) -> int:
    return min(length, max(1, value if isinstance(value, int) else int(value * length)))


def input_gradient(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-mean |d CE / d x| (N, H*W) and the probabilities (N, K) at x: one counted query per image. The
    gradient is taken in at least float32: in float16 small gradients underflow to 0 and their inverse weights
    overflow to inf, which left float16 images with no valid move."""
    with torch.enable_grad():
        image = x.detach().to(torch.promote_types(x.dtype, torch.float32)).requires_grad_(True)
        logits = model(image, rows)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), image)
    check_finite(logits, "the images whose gradient WhitePixle takes")
    return grad.abs().mean(1).flatten(1), torch.softmax(logits.detach(), 1)


def _weights(magnitude: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(destination, source) sampling weights from gradient magnitudes (N, L); a zero gradient weighs 0 in both."""
    high = magnitude
    low = torch.where(magnitude > 0, 1.0 / magnitude.clamp_min(1e-30), torch.zeros_like(magnitude))
    return (high, low) if mode == "htl" else (low, high)


def _sample_without_replacement(weights: torch.Tensor, count: torch.Tensor, keys: torch.Tensor, counters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel top-k: for rows of weights (N, L), draw ``count`` (N,) distinct positions with P proportional to weight.

    Returns positions (N, k_max) and a validity mask (fewer than count if fewer positions have weight > 0).
    """
    u = counter_uniform(keys, counters).clamp(1e-12, 1 - 1e-12)
    scores = torch.log(weights.double()) - torch.log(-torch.log(u))
    k_max = int(count.max())
    top, positions = scores.topk(k_max, dim=1)
    valid = (torch.arange(k_max, device=weights.device) < count.unsqueeze(1)) & torch.isfinite(top)
    return positions, valid


class WhitePixle(Attack):
    """Gradient-guided pixle (``white-pixle``); see the module docstring.

    Args:
        pixels_per_iteration: pixels moved per candidate: an int, a fraction of H*W, or a (low, high) range drawn
            per restart. Default 1 (the reference's), the transfer experiments use 1-10% of the pixels.
        mode: "htl" (move low-gradient values onto high-gradient pixels) or "lth".
        restarts: gradient evaluations (outer steps), default 20.
        max_iterations: candidates per restart, default 100.
    """

    name: ClassVar[str] = "white-pixle"
    supports_targeted: ClassVar[bool] = False

    def __init__(
        self,
        *,
        pixels_per_iteration: PixelsOrFraction | tuple[PixelsOrFraction, PixelsOrFraction] = 1,
        mode: str = "htl",
        restarts: int = 20,
        max_iterations: int = 100,
    ) -> None:
        self.pixels_per_iteration = pixels_or_fraction_range("pixels_per_iteration", pixels_per_iteration, "the image's pixels")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.restarts = positive_int("restarts", restarts)
        self.max_iterations = positive_int("max_iterations", max_iterations)

    @torch.no_grad()
    def run(self, model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, seeds: torch.Tensor) -> RawResult:
        n, c, h, w = x.shape
        length = h * w
        low, high = (_pixels(v, length) for v in self.pixels_per_iteration)
        if low > high:
            raise AdvkitError(f"pixels_per_iteration gives a range [{low}, {high}] on a {h}x{w} image")
        counter = model.counter or QueryCounter(n, device=x.device)
        keys = seeds.to(x.device)
        clean = x.flatten(2)  # (N, C, L)
        base = clean.clone()
        moves = _Moves.empty(n, self.restarts * self.max_iterations, high, x.device)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        first_loss = None
        going = torch.ones(n, dtype=torch.bool, device=x.device)
        done = torch.zeros_like(going)
        for restart in range(self.restarts):
            idx = (going & counter.affordable(1)).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            magnitude, probs = input_gradient(model, base[idx].view(-1, c, h, w), y[idx], idx)
            loss = probs.gather(1, y[idx, None]).squeeze(1)
            if first_loss is None:  # the clean image's loss: the gradient pass of restart 0 is its query
                first_loss = torch.ones(n, device=x.device, dtype=loss.dtype)
                first_loss[idx] = loss
                hit = probs.argmax(1) != y[idx]
                done[idx[hit]], going[idx[hit]] = True, False
                idx, magnitude, loss = idx[~hit], magnitude[~hit], loss[~hit]
                if len(idx) == 0:  # every image was already adversarial
                    break
            dst, src, valid = self._plan(restart, idx, keys, magnitude, low, high, length)
            improved_any = torch.zeros(len(idx), dtype=torch.bool, device=x.device)
            active = torch.ones_like(improved_any)
            for it in range(self.max_iterations):
                local = (active & counter.affordable(1)[idx]).nonzero().squeeze(1)
                if len(local) == 0:
                    break
                rows = idx[local]
                step = (dst[local, it], src[local, it], torch.zeros_like(valid[local, it]), valid[local, it])
                cand = apply_moves(base[rows], clean[rows], *step)
                iterations[rows] += 1
                # a candidate equal to its base (its sources hold the destinations' values) moves nothing: it is an
                # iteration but no query, as in Pixle, and never a step (a pass of another size could score it a
                # few bits lower, which made a no-op step depend on the batch size)
                moved = (cand != base[rows]).flatten(1).any(1).nonzero().squeeze(1)
                if len(moved) == 0:
                    continue
                local, rows, cand = local[moved], rows[moved], cand[moved]
                step = tuple(s[moved] for s in step)
                p = model.probabilities(cand.view(-1, c, h, w), rows)
                check_finite(p, "WhitePixle's candidates")
                cand_loss, success = p.gather(1, y[rows, None]).squeeze(1), p.argmax(1) != y[rows]
                better = cand_loss < loss[local]
                loss[local] = torch.minimum(cand_loss, loss[local])
                stop = success & (loss[local] < first_loss[rows])
                take = better | stop
                base[rows[take]] = cand[take]
                moves.append(rows[take], tuple(s[take] for s in step))
                improved_any[local[take]] = True
                done[rows[stop]] = True
                active[local[stop]] = False
            going[idx[~improved_any]] = False  # a restart without improvement ends the attack
            going &= ~done
        return RawResult(base.view(n, c, h, w), iterations, moves.programs(h, w, torch.ones_like(done)))

    def _plan(
        self, restart: int, idx: torch.Tensor, keys: torch.Tensor, magnitude: torch.Tensor, low: int, high: int, length: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All candidates of one restart for samples idx: dst, src (A, I, high) and validity."""
        a, iters = len(idx), self.max_iterations
        block = restart * (2 * iters + 1)  # counter blocks of `length` draws: k, then one per dst draw, one per src draw
        k = low + (counter_uniform(keys[idx], torch.full((a, 1), block * length, device=idx.device)).squeeze(1)
                   * (high - low + 1)).long().clamp(max=high - low)
        dst_w, src_w = _weights(magnitude, self.mode)
        draws = []
        for which, weights in enumerate((dst_w, src_w)):
            first = block + 1 + which * iters
            rows = weights.repeat_interleave(iters, 0)
            counters = (first + torch.arange(iters, device=idx.device)).repeat(a).unsqueeze(1) * length + torch.arange(length, device=idx.device)
            draws.append(_sample_without_replacement(rows, k.repeat_interleave(iters), keys[idx].repeat_interleave(iters), counters))
        (dst, dst_ok), (src, src_ok) = draws
        width = min(dst.shape[1], src.shape[1])
        dst, src, ok = dst[:, :width], src[:, :width], dst_ok[:, :width] & src_ok[:, :width]
        ok = last_writer_mask(dst, ok, length)
        pad = high - width  # records have a fixed width
        if pad:
            dst, src, ok = F.pad(dst, (0, pad)), F.pad(src, (0, pad)), F.pad(ok, (0, pad))
        return dst.view(a, iters, high), src.view(a, iters, high), ok.view(a, iters, high)


class SortedWhitePixle(Attack):
    """Deterministic gradient-ranked pixle (``white-pixle-sorted``, the reference's ``WhitePixle``).

    Args:
        pixels_per_iteration: pixels moved per step (int, or fraction of H*W), default 1.
        mode: "htl" (least-important values onto most-important pixels) or "lth".
        attack_limit: most pixels moved in total (int, or fraction of H*W, at most half of them), default 0.1.
        swap: also write the displaced values back into the source positions.
    """

    name: ClassVar[str] = "white-pixle-sorted"
    supports_targeted: ClassVar[bool] = False

    def __init__(self, *, pixels_per_iteration: PixelsOrFraction = 1, mode: str = "htl", attack_limit: PixelsOrFraction = 0.1, swap: bool = False) -> None:
        self.pixels_per_iteration = _pixel_count(pixels_per_iteration, "pixels_per_iteration")
        self.attack_limit = _pixel_count(attack_limit, "attack_limit")
        if isinstance(self.attack_limit, float) and self.attack_limit > 0.5:
            raise ValueError(f"attack_limit can move at most half of the pixels (0.5), got {attack_limit!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not isinstance(swap, bool):
            raise ValueError(f"swap must be true or false, got {swap!r}")
        self.mode, self.swap = mode, swap

    @torch.no_grad()
    def run(self, model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, seeds: torch.Tensor) -> RawResult:
        n, c, h, w = x.shape
        length = h * w
        k = _pixels(self.pixels_per_iteration, length)
        limit = _pixels(self.attack_limit, length)
        if limit > length // 2:  # sources and destinations would overlap
            raise AdvkitError(f"attack_limit {self.attack_limit} moves more than half of the {h}x{w} image's {length} "
                              f"pixels; use at most {length // 2} (or a fraction <= 0.5)")
        counter = model.counter or QueryCounter(n, device=x.device)
        everyone = torch.arange(n, device=x.device)
        magnitude, probs = input_gradient(model, x, y, everyone)  # the clean image's query
        done = probs.argmax(1) != y
        order = magnitude.argsort(dim=1, descending=self.mode == "htl", stable=True)  # (N, L) most important first
        clean, base = x.flatten(2), x.flatten(2).clone()
        steps = -(-limit // k)
        moves = _Moves.empty(n, steps, 2 * k if self.swap else k, x.device)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        for i in range(steps):
            rows = (~done & counter.affordable(1)).nonzero().squeeze(1)
            if len(rows) == 0:
                break
            size = min(k, limit - i * k)
            dst = order[rows, i * k : i * k + size]
            src = order[rows].flip(1)[:, i * k : i * k + size]
            clean_read = torch.zeros_like(dst, dtype=torch.bool)
            if self.swap:
                dst, src, clean_read = torch.cat([dst, src], 1), torch.cat([src, dst], 1), torch.cat([clean_read, clean_read], 1)
            valid = last_writer_mask(dst, torch.ones_like(clean_read), length)
            if dst.shape[1] < moves.dst.shape[2]:  # the last step may be narrower than the records
                pad = moves.dst.shape[2] - dst.shape[1]
                dst, src, clean_read, valid = (F.pad(t, (0, pad)) for t in (dst, src, clean_read, valid))
            step = (dst, src, clean_read, valid)
            base[rows] = apply_moves(base[rows], clean[rows], *step)
            moves.append(rows, step)
            iterations[rows] += 1
            p = model.probabilities(base[rows].view(-1, c, h, w), rows)
            check_finite(p, "WhitePixle's candidates")
            done[rows] = p.argmax(1) != y[rows]
        return RawResult(base.view(n, c, h, w), iterations, moves.programs(h, w, torch.ones_like(done)))


ATTACKS.add("white-pixle", WhitePixle, tags=("advkit", "white-box", "L0"))
ATTACKS.add("white-pixle-sorted", SortedWhitePixle, tags=("advkit", "white-box", "L0"))
