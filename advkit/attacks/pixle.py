"""Pixle: a black-box L0 attack that rearranges a few pixels of the image, batched and with exact query counts.

Pomponi, Scardapane, Uncini, "Pixle: a fast and effective black-box attack based on rearranging pixels",
IJCNN 2022, https://arxiv.org/abs/2202.02236 (reference code: github.com/jaryP/PixleAttack; torchattacks.Pixle).

Each iteration samples a patch of the *clean* image (a random top-left corner and a size drawn from
``x_dimensions`` x ``y_dimensions``) and copies its pixels to destinations chosen by ``pixel_mapping`` in the
current base image; a candidate that lowers the loss (true-class probability, or 1 - target probability) is
remembered, one that succeeds stops the attack. At the end of each restart the best candidate so far becomes
the base. ``update_each_iteration=True`` is the greedy variant: the base changes at every improvement and only
``max_iterations`` iterations run (restarts are not used, as in the reference code).

What advkit does differently from torchattacks (methods.md section 1):
  - all unfinished images of a batch advance together; ``candidates_per_pass`` candidates of each image are
    scored in one forward pass (by default 1 at first, more in later restarts, where only hard images are
    left); a sample leaves the batch at the end of the pass in which it succeeds or runs out of budget; a
    pass larger than both the batch and 2**24 input elements (64 MB of float32) is fed to the net in even
    parts, so k candidates of large images do not need k times the memory the caller sized the batch for;
    a pass is padded with copies of its last candidate up to :func:`~advkit.models.padded_batch` rows (at
    most 12.5% more), which are neither counted nor read: oneDNN builds its kernels per batch shape, and the
    passes of a search take almost every size as images leave the batch;
  - one query per candidate (the reference evaluates each candidate twice, for the loss and for success)
    plus one for the clean image; every evaluated candidate is counted, including candidates of a pass that
    come after the one that succeeded (they do not change the result);
  - a candidate identical to its base (every moved pixel already holds the value it would receive, such as
    black moved onto black) is not sent to the model: it can neither lower the loss nor succeed, so the
    result is the same; it counts as an iteration, not as a query (the reference queries it twice);
  - coordinates are (row, column) everywhere, so non-square images work (the reference indexes rows with x
    and can go out of range when W > H), and the similarity/distance mappings pick the pixel they score
    (the reference transposes it);
  - if two moves of one candidate write the same pixel, the later one wins, on every device;
  - random numbers come from per-sample counter-based streams (:func:`advkit.rng.counter_bits`), so a
    sample's attack is the same whatever the batch it is in (up to the net's floating point, docs/methods.md);
  - an image that is already adversarial is returned unchanged after one query, and an image the attack
    never improved is returned clean (the reference returns its last random candidate);
  - the moves are recorded as a :class:`~advkit.attacks.moves.MoveProgram`, so they can be replayed.
  Kept from the reference on purpose: while no candidate has improved the loss, a restart's base becomes its
  last random candidate (a random walk that the paper's code relies on); source pixels always come from the
  clean image; patch corners and random destinations are ``int(u * (side - 1))``, so the last row and column
  are never picked (on digit-like images this keeps moves off the empty border, and changing it made the
  attack need about 10% more iterations). ``swap=True`` (the paper's swap variant, PixleAttack only) also writes the displaced
  destination values back into the source patch.

Shapes and ranges: x (B, C, H, W) in [0, 1], any C (1-channel IR works) and any H x W.

    >>> import torch
    >>> from advkit.models import ModelWrapper, Preprocessing
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 5, 3))
    >>> model = ModelWrapper(net, Preprocessing(channels=2, input_size=(6, 5)))
    >>> x = torch.rand(4, 2, 6, 5, generator=torch.Generator().manual_seed(0))
    >>> y = model(x).argmax(1)
    >>> result = Pixle(x_dimensions=1, y_dimensions=1, restarts=5, max_iterations=4)(model, x, y)
    >>> bool((result.queries <= 1 + 5 * 4).all()), result.x_adv.shape
    (True, torch.Size([4, 2, 6, 5]))
    >>> all(torch.equal(p.apply(x[i]), result.x_adv[i]) for i, p in enumerate(result.moves))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.base import ATTACKS, Attack, PixelsOrFraction, RawResult, check_finite, pixels_or_fraction_range, positive_int
from advkit.attacks.moves import MoveProgram, Step, apply_moves, idle_moves, last_writer_mask
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper, QueryCounter, padded_batch
from advkit.rng import bits_to_randint, bits_to_uniform, counter_bits

PIXEL_MAPPINGS = ("random", "similarity", "similarity_random", "distance", "distance_random")
_CORNER_SLOTS = 4  # random draws per candidate before the per-pixel ones: corner row, corner col, height, width
_MAPPING_ELEMENTS = 2**24  # memory cap (elements) for scoring destinations of similarity/distance mappings at once
_CANDIDATE_ELEMENTS = 2**24  # memory cap (elements) for the candidate images built, and fed to the net, at once
_ONE_HASH_ELEMENTS = 2**14  # random slots of a draw below which all are hashed in one call (fewer tensor ops)
_AUTO_WASTE = 8  # candidates_per_pass="auto": a success may waste at most 1/8 of the candidates tried before


def _resolve(pair: tuple[PixelsOrFraction, PixelsOrFraction], side: int, name: str) -> tuple[int, int]:
    low, high = (max(1, d if isinstance(d, int) else round(side * d)) for d in pair)
    low, high = min(low, side), min(high, side)
    if low > high:
        raise AdvkitError(f"{name} gives a patch side range [{low}, {high}] on a {side}-pixel side")
    return low, high


@dataclass
class _Moves:
    """Per-sample move records on the device: (N, S, M) positions/flags and (N,) step counts.

    The records start with room for a few steps and double when a sample needs more: an attack allowed
    thousands of steps (WhitePixle's restarts x max_iterations) usually succeeds within a handful, and
    reserving them all would take gigabytes on large batches."""

    dst: torch.Tensor
    src: torch.Tensor
    from_clean: torch.Tensor
    valid: torch.Tensor
    count: torch.Tensor
    bound: int = 0  # >= count.max(), known without a host sync

    _FIRST_STEPS: ClassVar[int] = 16

    @classmethod
    def empty(cls, n: int, steps: int, width: int, device: torch.device) -> _Moves:
        """Records for n samples of up to ``steps`` steps of ``width`` moves each."""
        room = min(steps, cls._FIRST_STEPS)
        zeros = torch.zeros(n, room, width, dtype=torch.long, device=device)
        flags = torch.zeros(n, room, width, dtype=torch.bool, device=device)
        return cls(zeros, zeros.clone(), flags, flags.clone(), torch.zeros(n, dtype=torch.long, device=device))

    def append(self, rows: torch.Tensor, step: tuple[torch.Tensor, ...]) -> None:
        """Add one step (dst, src, from_clean, valid), each (R, M), to the records of ``rows``."""
        if self.bound >= self.dst.shape[1]:  # maybe full: one host sync tells
            self.bound = int(self.count.max())
            if self.bound >= self.dst.shape[1]:
                self.dst, self.src, self.from_clean, self.valid = (
                    torch.cat([t, torch.zeros_like(t)], 1) for t in (self.dst, self.src, self.from_clean, self.valid))
        n = self.count[rows]
        for record, new in zip((self.dst, self.src, self.from_clean, self.valid), step):
            record[rows, n] = new
        self.count[rows] = n + 1
        self.bound += 1

    def programs(self, height: int, width: int, keep: torch.Tensor) -> list[MoveProgram]:
        """One MoveProgram per sample (empty where ``keep`` is False)."""
        dst, src, clean, valid, count, keep_np = (t.cpu().numpy() for t in (self.dst, self.src, self.from_clean, self.valid, self.count, keep))
        programs = []
        for i in range(len(count)):
            steps = [Step(dst[i, s][valid[i, s]], src[i, s][valid[i, s]], clean[i, s][valid[i, s]])
                     for s in range(int(count[i]))] if keep_np[i] else []
            programs.append(MoveProgram(height, width, steps))
        return programs


class Pixle(Attack):
    """Pixle (IJCNN 2022), batched; see the module docstring for the algorithm and the deliberate changes.

    Args:
        x_dimensions, y_dimensions: patch width and height as pixels (int >= 1) or fractions of the image side
            (float in (0, 1]); one value or a (low, high) range drawn per candidate. Default (2, 10).
        pixel_mapping: where patch pixels go: "random", "similarity", "similarity_random", "distance",
            "distance_random" (the *_random ones sample, the others take the best-scoring pixel).
        restarts: outer steps (int >= 1); the base image is updated after each.
        max_iterations: candidates per restart (greedy variant: in total).
        update_each_iteration: the greedy variant.
        swap: also move the displaced destination values back into the source patch.
        candidates_per_pass: candidates of one image scored per forward pass, an int >= 1 or "auto". More per
            pass means fewer, fuller passes, but a successful image may have paid for up to this many - 1
            candidates scored after its success; the adversarial images do not depend on it (without a query
            budget). "auto" scores max(1, r * max_iterations // 8) per pass in restart r (0-based): what an
            image can waste stays below an eighth of the candidates it had already tried, and the hard images,
            which fill the last, nearly empty passes of a batch, get fewer of them. Greedy mode uses 1.
    """

    name: ClassVar[str] = "pixle"

    def __init__(
        self,
        *,
        x_dimensions: PixelsOrFraction | tuple[PixelsOrFraction, PixelsOrFraction] = (2, 10),
        y_dimensions: PixelsOrFraction | tuple[PixelsOrFraction, PixelsOrFraction] = (2, 10),
        pixel_mapping: str = "random",
        restarts: int = 20,
        max_iterations: int = 10,
        update_each_iteration: bool = False,
        swap: bool = False,
        candidates_per_pass: int | str = "auto",
    ) -> None:
        self.x_dimensions = pixels_or_fraction_range("x_dimensions", x_dimensions, "the image width")
        self.y_dimensions = pixels_or_fraction_range("y_dimensions", y_dimensions, "the image height")
        if pixel_mapping not in PIXEL_MAPPINGS:
            raise ValueError(f"pixel_mapping must be one of {', '.join(PIXEL_MAPPINGS)}, got {pixel_mapping!r}")
        restarts, max_iterations = positive_int("restarts", restarts), positive_int("max_iterations", max_iterations)
        if candidates_per_pass != "auto":
            try:
                candidates_per_pass = positive_int("candidates_per_pass", candidates_per_pass)
            except ValueError:
                raise ValueError(f'candidates_per_pass must be an int >= 1 or "auto", got {candidates_per_pass!r}') from None
        for key, flag in (("update_each_iteration", update_each_iteration), ("swap", swap)):
            if not isinstance(flag, bool):
                raise ValueError(f"{key} must be true or false, got {flag!r}")
        self.pixel_mapping = pixel_mapping
        self.restarts = restarts
        self.max_iterations = max_iterations
        self.update_each_iteration = update_each_iteration
        self.swap = swap
        self.candidates_per_pass = 1 if update_each_iteration else candidates_per_pass

    def per_pass(self, restart: int) -> int:
        """Candidates of one image scored per forward pass in restart ``restart`` (0-based)."""
        if self.candidates_per_pass == "auto":  # waste below 1/8 of the restart * max_iterations candidates so far
            return min(max(1, restart * self.max_iterations // _AUTO_WASTE), self.max_iterations)
        return min(int(self.candidates_per_pass), self.max_iterations)

    # ---- one batch of candidates -----------------------------------------------------------------------------
    def _draw(
        self, keys: torch.Tensor, draw: torch.Tensor, clean: torch.Tensor | None, base: torch.Tensor | None,
        shape: tuple[int, int], bounds: tuple[tuple[int, int], tuple[int, int]],
    ) -> tuple[torch.Tensor, ...]:
        """Moves of N candidates: (N, M) dst, src, from_clean, valid. ``draw`` (N,) numbers the candidate per sample;
        ``clean`` and ``base`` (N, C, L) are needed by the similarity and distance mappings only."""
        (h, w), ((lo_y, hi_y), (lo_x, hi_x)) = shape, bounds
        patch = hi_y * hi_x
        slots = _CORNER_SLOTS + 2 * patch  # a candidate's random numbers: its corner and size, then 2 per patch pixel
        first = draw.unsqueeze(1) * slots  # (N, 1) counter of each candidate's first slot
        # as in the reference, corners and random destinations are int(u * (side - 1)): the last row and column
        # are never picked (a 1-pixel side still gives row/column 0)
        highs = torch.tensor([max(h - 1, 1), max(w - 1, 1), hi_y - lo_y + 1, hi_x - lo_x + 1], device=draw.device)
        if first.numel() * slots <= _ONE_HASH_ELEMENTS:  # small draws: one hash call for every slot costs less than two
            bits = counter_bits(keys, first + torch.arange(slots, device=draw.device))
            corner, pixel_bits = bits_to_randint(bits[:, :_CORNER_SLOTS], highs), lambda: bits[:, _CORNER_SLOTS:]
        else:  # large patches: hash the per-pixel slots of the pixels inside each patch only
            corner = bits_to_randint(counter_bits(keys, first + torch.arange(_CORNER_SLOTS, device=draw.device)), highs)
            pixel_bits = lambda: _pixel_bits(keys, first, valid)  # noqa: E731
        row, col = corner[:, 0:1], corner[:, 1:2]
        ph = torch.minimum(lo_y + corner[:, 2:3], h - row)  # clipped to the image, as in the reference
        pw = torch.minimum(lo_x + corner[:, 3:4], w - col)
        offset = torch.arange(patch, device=draw.device)
        dr, dc = offset // hi_x, offset % hi_x  # patch pixels in row-major order
        valid = (dr < ph) & (dc < pw)
        src = (row + dr) * w + (col + dc)
        dst = self._destinations(pixel_bits, clean, base, src, (h, w))
        from_clean = torch.ones_like(valid)
        if self.swap:  # the displaced destination values go back into the patch, read before the move
            dst, src = torch.cat([dst, src], 1), torch.cat([src, dst], 1)
            from_clean = torch.cat([from_clean, ~from_clean], 1)
            valid = torch.cat([valid, valid], 1)
        return dst, src, from_clean, last_writer_mask(dst, valid, h * w)

    def _destinations(
        self, pixel_bits: Callable[[], torch.Tensor], clean: torch.Tensor | None, base: torch.Tensor | None,
        src: torch.Tensor, shape: tuple[int, int],
    ) -> torch.Tensor:
        """(N, P) destinations of the patch pixels src (N, P); ``pixel_bits()`` gives their (N, 2P) random numbers,
        hashed only by the mappings that draw."""
        patch, (h, w) = src.shape[1], shape
        length = h * w
        if self.pixel_mapping == "random":
            bits = pixel_bits()
            rows = bits_to_randint(bits[:, :patch], max(h - 1, 1))
            cols = bits_to_randint(bits[:, patch:], max(w - 1, 1))
            return rows * w + cols
        if clean is None or base is None:
            raise ValueError(f"the {self.pixel_mapping} mapping needs the clean and base images")
        values = clean.gather(2, src.clamp(max=length - 1).unsqueeze(1).expand(-1, clean.shape[1], -1))  # (N, C, P)
        diff = (base.unsqueeze(2) - values.unsqueeze(3)).abs().mean(1)  # (N, P, L): distance of every pixel to each source
        if self.pixel_mapping.startswith("similarity"):
            score = 1.0 / (1.0 + diff)
            score = score.masked_fill(score == 1, 0.0)  # identical pixels are not worth moving onto
        else:
            score = diff
        score = score.scatter(2, src.clamp(max=length - 1).unsqueeze(2), float("-inf"))  # never the pixel itself
        if not self.pixel_mapping.endswith("_random"):
            return score.argmax(2)
        cdf = torch.softmax(score.double(), 2).cumsum(2)
        u = bits_to_uniform(pixel_bits()[:, patch:]).unsqueeze(2) * cdf[:, :, -1:]
        return torch.searchsorted(cdf, u).squeeze(2).clamp(max=length - 1)

    # ---- the attack ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(
        self, model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, seeds: torch.Tensor
    ) -> RawResult:
        n, c, h, w = x.shape
        bounds = (_resolve(self.y_dimensions, h, "y_dimensions"), _resolve(self.x_dimensions, w, "x_dimensions"))
        counter = model.counter or QueryCounter(n, device=x.device)
        state = _Search(self, model, counter, x, target if target is not None else y, target is not None, seeds.to(x.device), bounds)
        if self.update_each_iteration:
            state.greedy()
        else:
            state.restarts()
        return state.result()


class _Search:
    """The mutable state of one Pixle run on a batch; all tensors stay on the model's device.

    ``base`` is the image candidates are built on. Once any candidate has improved the loss, ``base`` is
    always the best image found (the reference copies the best candidate into the base at each restart's
    end); before that it is the last random candidate of the previous restart.
    """

    def __init__(
        self, attack: Pixle, model: ModelWrapper, counter: QueryCounter, x: torch.Tensor, goal: torch.Tensor, targeted: bool,
        keys: torch.Tensor, bounds: tuple[tuple[int, int], tuple[int, int]],
    ) -> None:
        self.attack, self.model, self.counter = attack, model, counter
        self.n, self.c, self.h, self.w = x.shape
        self.goal, self.targeted, self.keys, self.bounds = goal, targeted, keys, bounds
        self.clean = x.flatten(2)  # (N, C, H*W)
        self.base = self.clean.clone()
        self.nhwc = x.stride(1) == 1 and x.stride(3) == self.c  # feed candidates in the images' own memory layout
        self.has_best = torch.zeros(self.n, dtype=torch.bool, device=x.device)
        steps = attack.max_iterations if attack.update_each_iteration else attack.restarts
        self.moves = _Moves.empty(self.n, steps, bounds[0][1] * bounds[1][1] * (2 if attack.swap else 1), x.device)
        self.iterations = torch.zeros(self.n, dtype=torch.long, device=x.device)
        probs = model.probabilities(x, torch.arange(self.n, device=x.device))  # the clean image: one query each
        check_finite(probs, "clean images")
        self.best_loss = self._loss(probs, goal)
        self.done = self._success(probs, goal)  # already adversarial: nothing to do
        self.classes = probs.shape[1]

    def _loss(self, probs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """True-class probability (untargeted) or 1 - target probability, for probs (..., K) and goal (...)."""
        p = probs.gather(-1, goal.unsqueeze(-1)).squeeze(-1)
        return 1 - p if self.targeted else p

    def _success(self, probs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        predicted = probs.argmax(-1)
        return predicted == goal if self.targeted else predicted != goal

    def _draw(self, idx: torch.Tensor, first_draw: int, count: int) -> tuple[torch.Tensor, ...]:
        """Moves of ``count`` consecutive candidates of each sample in idx, built on its current base: 4 x (A, count, M)."""
        rows = idx.repeat_interleave(count)
        draw = first_draw + torch.arange(count, device=idx.device).repeat(len(idx))
        if self.attack.pixel_mapping == "random":  # destinations ignore the images: no copies of them
            parts = [self.attack._draw(self.keys[rows], draw, None, None, (self.h, self.w), self.bounds)]
        else:  # similarity mappings score every pixel for every patch pixel: bounded chunks
            chunk = max(1, _MAPPING_ELEMENTS // (self.c * self.h * self.w * self.bounds[0][1] * self.bounds[1][1]))
            parts = [
                self.attack._draw(self.keys[r], d, self.clean[r], self.base[r], (self.h, self.w), self.bounds)
                for r, d in zip(rows.split(chunk), draw.split(chunk))
            ]
        return tuple((torch.cat(ms) if len(ms) > 1 else ms[0]).view(len(idx), count, -1) for ms in zip(*parts))

    def _probabilities(self, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Query candidates (R, C, L) of the samples in rows (R,): probabilities (R, K). The pass is padded with
        copies of its last candidate to :func:`padded_batch` rows, neither counted nor returned (fewer shapes)."""
        images = candidates.view(len(rows), self.c, self.h, self.w)
        padding = padded_batch(len(rows)) - len(rows)
        if padding:
            images = torch.cat([images, images[-1:].expand(padding, -1, -1, -1)])
        return self.model.probabilities(_nhwc(images) if self.nhwc else images, rows, padding=padding)

    def _query(self, rows: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query candidates (R, C, L) of the samples in rows (R,): loss and success (R,)."""
        probs, goal = self._probabilities(rows, candidates), self.goal[rows]
        check_finite(probs, "Pixle's candidates")
        return self._loss(probs, goal), self._success(probs, goal)

    def _build(self, idx: torch.Tensor, plan: tuple[torch.Tensor, ...], start: int, stop: int) -> torch.Tensor:
        """Candidates start..stop of the samples in idx on their bases, in one call: (A, stop - start, C, L)."""
        a, b = len(idx), stop - start
        current, clean = (t[idx].unsqueeze(1).expand(-1, b, -1, -1).reshape(a * b, self.c, -1) for t in (self.base, self.clean))
        return apply_moves(current, clean, *(m[:, start:stop].reshape(a * b, -1) for m in plan)).view(a, b, self.c, -1)

    def _build_at(self, idx: torch.Tensor, plan: tuple[torch.Tensor, ...], local: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
        """Candidate ``draw`` (R,) of each sample idx[local] (R,), on its base: (R, C, L)."""
        rows = idx[local]
        return apply_moves(self.base[rows], self.clean[rows], *(m[local, draw] for m in plan))

    def _live(self, idx: torch.Tensor, plan: tuple[torch.Tensor, ...], built: torch.Tensor | None) -> torch.Tensor:
        """(A, I) True for the candidates (moves plan, 4 x (A, I, M)) that differ from their base: one identical to
        it can neither lower the loss nor succeed, so it is not queried. Candidates already ``built`` (A, I, C, L)
        are compared whole, in fewer tensor operations than checking every move."""
        if built is not None:
            return (built != self.base[idx].unsqueeze(1)).flatten(2).any(2)
        a, i = plan[0].shape[:2]
        return ~idle_moves(self.base[idx], self.clean[idx], *(m.flatten(1) for m in plan)).view(a, i, -1).all(2)

    def _adopt(self, rows: torch.Tensor, images: torch.Tensor, step: tuple[torch.Tensor, ...]) -> None:
        """The candidates (R, C, L) built on the base of rows with moves step (R, M) become their new base."""
        self.base[rows] = images
        self.moves.append(rows, step)

    def restarts(self) -> None:
        attack, n_it = self.attack, self.attack.max_iterations
        budgeted = self.counter.budget is not None
        for restart in range(attack.restarts):
            idx = (~self.done).nonzero().squeeze(1)
            if budgeted:
                idx = idx[self.counter.affordable(1)[idx]]
            if len(idx) == 0:
                break
            a, goal, k_max = len(idx), self.goal[idx], attack.per_pass(restart)
            plan = self._draw(idx, restart * n_it, n_it)  # the base is fixed for the whole restart: draw all its candidates
            # a pass only queries, stores the probabilities and marks successes: as few tensor operations as
            # possible, since on a small net they cost as much as the forward; _end_restart does the bookkeeping
            probs = torch.full((a, n_it, self.classes), -1.0, dtype=self.best_loss.dtype, device=idx.device)  # -1: not queried
            hits = torch.zeros(a, dtype=torch.int32, device=idx.device)  # successes so far in this restart
            tried = torch.zeros((a, n_it), dtype=torch.bool, device=idx.device) if budgeted else None
            # candidates are built a block of whole passes at a time (the whole restart unless memory says
            # otherwise); 0: too large for one pass, so each pass builds only the candidates it asks for
            block = _CANDIDATE_ELEMENTS // (a * k_max * self.c * self.h * self.w) * k_max
            rows_cap = max(self.n, _CANDIDATE_ELEMENTS // (self.c * self.h * self.w))  # rows per forward pass
            whole = block >= n_it
            built = self._build(idx, plan, 0, n_it) if whole else None
            live = self._live(idx, plan, built)
            for it in range(0, n_it, k_max):
                k = min(k_max, n_it - it)
                going, window = hits == 0, live[:, it : it + k]
                if tried is None:
                    want = going.unsqueeze(1) & window
                else:  # a pass takes only the candidates a sample can still pay for (idle ones are free)
                    remaining = self.counter.remaining()[idx]
                    going &= remaining > 0
                    ahead = window.cumsum(1) - window.long()  # live candidates before each one in the pass
                    tried[:, it : it + k] = going.unsqueeze(1) & (ahead < remaining.unsqueeze(1))
                    want = tried[:, it : it + k] & window
                ask, pick = want.nonzero().unbind(1)  # the one host sync of a pass
                if len(ask) == 0 and not bool(going.any()):
                    break
                if block and not whole and it % block == 0:
                    built = self._build(idx, plan, it, min(it + block, n_it))
                for part, at in _row_parts(ask, pick, rows_cap):
                    candidates = built[:, it % block : it % block + k][part, at] if block else self._build_at(idx, plan, part, it + at)
                    p = self._probabilities(idx[part], candidates)
                    probs[:, it : it + k][part, at] = p
                    hits.index_add_(0, part, self._success(p, goal[part]).int())
            self._end_restart(idx, plan, probs, tried, built if whole else None)

    def _end_restart(
        self, idx: torch.Tensor, plan: tuple[torch.Tensor, ...], probs: torch.Tensor, tried: torch.Tensor | None,
        built: torch.Tensor | None,
    ) -> None:
        """Book a restart of samples idx from its (A, I, K) candidate probabilities (-1 where not queried) and
        (A, I) tried flags (None: every candidate up to a sample's first success), with its (A, I, C, L)
        candidates where they were all built at once (else None), then move the base: to the
        first successful candidate, else to the best improving one, else (before any improvement) to the last
        candidate tried. As in the reference, candidates after the first success do not count."""
        check_finite(probs, "Pixle's candidates")  # once per restart: NaN must not pass for a score
        queried = probs[..., 0] >= 0
        goal = self.goal[idx].unsqueeze(1).expand(queried.shape)
        loss = self._loss(probs, goal).masked_fill(~queried, float("inf"))
        success = self._success(probs, goal) & queried
        order = torch.arange(loss.shape[1], device=idx.device)
        first_hit = torch.where(success, order, loss.shape[1]).amin(1)
        hit = first_hit < loss.shape[1]
        counted = order <= first_hit.unsqueeze(1)
        if tried is not None:
            counted &= tried
        low, arg = loss.masked_fill(~counted, float("inf")).min(1)
        improved = (low < self.best_loss[idx]) | hit
        self.best_loss[idx] = torch.minimum(low, self.best_loss[idx])
        self.iterations[idx] += counted.sum(1)
        self.done[idx] |= hit
        last = torch.where(counted, order, -1).amax(1)
        keep = torch.where(hit, first_hit, torch.where(improved, arg, torch.where(self.has_best[idx], -1, last)))
        self.has_best[idx] |= improved
        local = (keep >= 0).nonzero().squeeze(1)
        if len(local) == 0:
            return
        rows, pick = idx[local], keep[local]
        step = tuple(m[local, pick] for m in plan)
        images = apply_moves(self.base[rows], self.clean[rows], *step) if built is None else built[local, pick]
        self._adopt(rows, images, step)

    def greedy(self) -> None:
        n_it = self.attack.max_iterations
        everyone = torch.arange(self.n, device=self.clean.device)
        plan = self._draw(everyone, 0, n_it) if self.attack.pixel_mapping == "random" else None
        for it in range(n_it):
            local = (~self.done & self.counter.affordable(1)).nonzero().squeeze(1)
            if len(local) == 0:
                break
            step = tuple(m[local, it] for m in plan) if plan else tuple(m[:, 0] for m in self._draw(local, it, 1))
            ask = self._live(local, tuple(m.unsqueeze(1) for m in step), None)[:, 0]
            rows, step = local[ask], tuple(m[ask] for m in step)
            self.iterations[local] += 1
            if len(rows) == 0:
                continue
            cands = apply_moves(self.base[rows], self.clean[rows], *step)
            loss, success = self._query(rows, cands)
            take = (loss < self.best_loss[rows]) | success
            self.best_loss[rows] = torch.minimum(loss, self.best_loss[rows])
            self._adopt(rows[take], cands[take], tuple(m[take] for m in step))
            self.has_best[rows[take]] = True
            self.done[rows[success]] = True

    def result(self) -> RawResult:
        keep = self.has_best
        x_adv = torch.where(keep.view(-1, 1, 1), self.base, self.clean).view(self.n, self.c, self.h, self.w)
        return RawResult(x_adv, self.iterations, self.moves.programs(self.h, self.w, keep))


def _pixel_bits(keys: torch.Tensor, first: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, 2P) random bits of the patch pixels: slots first + 4 + j (row) and first + 4 + P + j (column) of pixel j,
    hashed only where ``valid`` (N, P) says the pixel is in the patch (a third of them for (2, 10) patches; the
    others are never read and stay 0). ``first`` (N, 1) is each candidate's first counter."""
    n, patch = valid.shape
    row, j = valid.nonzero().unbind(1)  # one host sync per draw
    counter = first[row, 0] + _CORNER_SLOTS + j
    bits = counter_bits(keys[row], torch.stack([counter, counter + patch], 1))  # (V, 2)
    out = torch.zeros(n, 2, patch, dtype=bits.dtype, device=bits.device)
    out[row, :, j] = bits
    return out.view(n, 2 * patch)


def _row_parts(ask: torch.Tensor, pick: torch.Tensor, cap: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sample, candidate) pairs (R,) of one pass in even parts of at most ``cap`` rows each."""
    if len(ask) <= cap:
        return [(ask, pick)] if len(ask) else []
    parts = -(-len(ask) // cap)
    return list(zip(ask.tensor_split(parts), pick.tensor_split(parts)))


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """The same values with NHWC strides. oneDNN runs channels-last inputs much faster on CPU (18,596 vs 8,799
    forwards/s for the MNIST benchmark CNN); for C == 1, ``contiguous(channels_last)`` keeps stride(1) = H*W, so the
    strides are set explicitly (the memory is already NHWC)."""
    x = x.contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    return x.as_strided(x.shape, (c * h * w, 1, w * c, c))


ATTACKS.add("pixle", Pixle, tags=("advkit", "black-box", "L0"))
