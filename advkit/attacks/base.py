"""The attack interface: settings in the constructor, inputs at call time, results re-verified.

Subclasses implement :meth:`Attack.run`; :meth:`Attack.__call__` checks the inputs, counts queries through the
model wrapper, clips to [0, 1], and decides success with an independent forward pass: an attack's own claim of
success is never trusted.

    >>> import torch
    >>> from advkit.models import ModelWrapper, Preprocessing
    >>> class Blank(Attack):
    ...     name = "blank"
    ...     def run(self, model, x, y, target, seeds):
    ...         model(torch.zeros_like(x))
    ...         return RawResult(torch.zeros_like(x))
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> result = Blank()(ModelWrapper(net, Preprocessing()), torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]))
    >>> result.queries.tolist(), result.l0.tolist()[0] > 0
    ([1, 1, 1], True)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from advkit.attacks.sanity import input_gradient, uses_gradients
from advkit.errors import AdvkitError, SettingsError
from advkit.models import ModelWrapper, QueryCounter
from advkit.registry import Registry, check_settings


@dataclass
class RawResult:
    """What an attack's ``run`` returns: adversarial images and, when it knows them, iterations per sample."""

    x_adv: torch.Tensor
    iterations: torch.Tensor | None = None
    moves: list[Any] | None = None


@dataclass
class AttackResult:
    """Per-sample outcome of an attack on a batch of B images.

    Attributes:
        x_adv: (B, C, H, W) the images the attack ended on, in [0, 1]; where it failed, the clean image or a
            perturbed one that does not fool the model (the norms below measure it either way).
        success: (B,) bool, re-verified: prediction != label (untargeted) or == target (targeted).
        adv_pred: (B,) int64 prediction on ``x_adv``.
        queries: (B,) int64 model evaluations spent on each sample by the attack.
        iterations: (B,) int64 attack iterations per sample (-1 when the attack does not report them).
        l0: (B,) int64 pixels changed (a pixel counts once whatever its channels).
        l2, linf: (B,) float32 norms of x_adv - x over all channels.
        moves: pixel-move records, for attacks that rearrange pixels.
        params: the attack's settings.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    adv_pred: torch.Tensor
    queries: torch.Tensor
    iterations: torch.Tensor
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    moves: list[Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L0 in changed pixels, L2, Linf) per sample for (B, C, H, W) images."""
    delta = (x_adv - x).flatten(2)  # (B, C, H*W)
    l0 = (delta.abs() > 0).any(dim=1).sum(dim=1)
    flat = delta.flatten(1)
    return l0, flat.norm(dim=1), flat.abs().amax(dim=1) if flat.shape[1] else torch.zeros(len(x))


PixelsOrFraction = int | float  # an int counts pixels (>= 1), a float in (0, 1] is a fraction of a size


def pixels_or_fraction_range(name: str, value: PixelsOrFraction | tuple[PixelsOrFraction, PixelsOrFraction]
                             | list[PixelsOrFraction], of: str) -> tuple[PixelsOrFraction, PixelsOrFraction]:
    """A size as (low, high) from one value or a pair: ints (NumPy's too) count pixels (>= 1), floats in (0, 1] are
    fractions of ``of`` (resolved on the image). ValueError naming ``name`` otherwise."""
    pair = (value, value) if isinstance(value, numbers.Real) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be one value or a (low, high) pair, got {value!r}")
    low, high = (_pixels_or_fraction(name, v, of) for v in pair)
    if type(low) is type(high) and low > high:  # pixels against a fraction: known on the image only
        raise ValueError(f"{name} is a (low, high) range, got low > high: {value!r}")
    return low, high


def _pixels_or_fraction(name: str, v: object, of: str) -> PixelsOrFraction:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError(f"{name} values must be ints (pixels) or floats in (0, 1] (fractions of {of}), got {v!r}")
    if isinstance(v, numbers.Integral):
        if v < 1:
            raise ValueError(f"{name} pixel counts must be >= 1, got {v}")
        return int(v)
    if not 0 < v <= 1:
        raise ValueError(f"{name} fractions (of {of}) must lie in (0, 1], got {v}")
    return float(v)


def positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1 (NumPy's integers too, as ints); ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def check_linf_budget(owner: str, key: str, value: float) -> None:
    """SettingsError for an L-inf budget above 1: on [0, 1] pixels a budget of 1 already allows any image, so a larger
    one is almost always a budget meant in 0-255 levels (8 for 8/255), which would report every model as broken."""
    if value > 1:
        raise SettingsError(f"{owner}: {key} must be <= 1 for an L-inf budget on [0, 1] pixels (1 already allows any "
                            f"image), got {value:g}; a budget in 0-255 levels is written {value:g}/255")


def madry_step(eps: float, steps: int) -> float:
    """Madry et al.'s PGD step, ``2.5 * eps / steps`` (https://arxiv.org/abs/1706.06083): the steps can cover 2.5
    times the eps-ball's radius."""
    return 2.5 * eps / steps


def check_inputs(x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
    """Shapes, dtype and range of an attack's inputs; one-line errors."""
    for what, value in (("images", x), ("labels", y), ("targets", target)):
        if value is not None and not isinstance(value, torch.Tensor):
            raise AdvkitError(f"attack {what} must be a torch.Tensor, got {type(value).__name__} (torch.as_tensor converts it)")
    if x.dim() != 4 or 0 in x.shape:
        raise AdvkitError(f"attack inputs must be a non-empty (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise AdvkitError(f"attack inputs must be float images in [0, 1], got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise AdvkitError("attack inputs contain NaN or infinite values")
    low, high = float(x.detach().min()), float(x.detach().max())
    if low < 0 or high > 1:
        raise AdvkitError(f"attack inputs must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    for what, labels in (("labels", y), ("targets", target)):
        if labels is None:
            continue
        if labels.shape != (x.shape[0],):
            raise AdvkitError(f"{what} must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise AdvkitError(f"{what} must be integer class indices, got dtype {labels.dtype}")
        if int(labels.min()) < 0:
            raise AdvkitError(f"{what} must be class indices >= 0, got {int(labels.min())}")


def check_finite(outputs: torch.Tensor, on: str) -> None:
    """One line when a model's outputs (logits or probabilities) hold NaN or infinities: an attack that read them
    as scores would report a wrong result, not fail (one host sync)."""
    if not bool(torch.isfinite(outputs).all()):
        raise AdvkitError(f"the model returned NaN or infinite outputs on {on}")


def check_seeds(seeds: Any, n: int) -> torch.Tensor:
    """Per-sample seeds as a (n,) int64 CPU tensor; one-line errors for anything else."""
    if not isinstance(seeds, torch.Tensor) or seeds.is_floating_point() or seeds.is_complex() or seeds.dtype == torch.bool:
        kind = seeds.dtype if isinstance(seeds, torch.Tensor) else type(seeds).__name__
        raise AdvkitError(f"seeds must be an integer tensor of shape ({n},), got {kind}")
    if seeds.shape != (n,):
        raise AdvkitError(f"seeds must have shape ({n},), one per sample, got {tuple(seeds.shape)}")
    return seeds.cpu().long()


def _output_classes(model: ModelWrapper, x: torch.Tensor) -> int:
    """Classes the model outputs, from one uncounted forward of ``x[:1]`` (its checkpoint does not say)."""
    with torch.no_grad(), model.evaluating():
        return int(model.logits(x[:1]).shape[1])


def require_input_gradients(model: ModelWrapper, x: torch.Tensor, what: str,
                            instead: str = "a gradient-free attack such as pixle or square") -> None:
    """One-line error when the logits have no autograd path back to the input (a forward that detaches or runs
    without autograd), probed with one uncounted forward and backward pass on ``x[:1]``.

    Gradients that are merely zero pass: that is gradient masking, which the sanity flags report instead.
    """
    if input_gradient(model, x[:1]) is None:
        raise AdvkitError(f"{what} needs the model's input gradients, but its output does not depend on the input "
                          f"through autograd (the forward detaches it or runs without gradients); use {instead}")


class Attack:
    """Base class. Subclasses set ``name`` and implement ``run``; constructors take keyword-only settings."""

    name: ClassVar[str] = "attack"
    supports_targeted: ClassVar[bool] = True
    # whether per-sample results are the same at any batch size (per-sample seeds); reports record the batch size
    # of attacks that are not, so a replay or resume runs the same attack
    batch_invariant: ClassVar[bool] = True

    def params(self) -> dict[str, Any]:
        """The attack's settings (recorded in reports)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def run(
        self, model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, seeds: torch.Tensor
    ) -> RawResult:
        raise NotImplementedError

    def check_applicable(self, model: ModelWrapper, x: torch.Tensor, targeted: bool) -> None:
        """One line for inputs this attack cannot run on, before any work: images like ``x`` (B, C, H, W) on
        ``model``, targeted or not. Callers that run several attacks check them all before the first runs."""
        if targeted and not self.supports_targeted:
            raise AdvkitError(f"attack {self.name} has no targeted mode")

    def __call__(
        self,
        model: ModelWrapper,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
        seeds: torch.Tensor | None = None,
        max_queries: int | None = None,
    ) -> AttackResult:
        """Attack the batch ``x`` (B, C, H, W) in [0, 1] with labels ``y`` (B,).

        ``target`` (B,) makes the attack targeted; ``seeds`` (B,) int64 gives each sample its own random
        stream (default: the sample's position); ``max_queries`` caps model evaluations per sample.
        """
        if not isinstance(model, ModelWrapper):  # a bare net has no preprocessing, query counter or device
            raise AdvkitError(f"attacks take an advkit ModelWrapper, got {type(model).__name__}; wrap the net: "
                              "ModelWrapper(net, Preprocessing(...))")
        check_inputs(x, y, target)
        seeds = torch.arange(len(x)) if seeds is None else check_seeds(seeds, len(x))
        self.check_applicable(model, x, target is not None)
        device = model.device
        x, y = x.to(device), y.to(device, torch.long)  # any integer labels; the attacks index with int64
        target = None if target is None else target.to(device, torch.long)
        counter = QueryCounter(len(x), max_queries, device)
        classes = model.preprocessing.num_classes or _output_classes(model, x)
        if classes < 2:  # every attack would fail and report the model perfectly robust
            raise AdvkitError(f"the model has {classes} class: no input can change its prediction, so there is nothing to attack")
        for what, labels in (("label", y), ("target", target)):
            if labels is not None and int(labels.max()) >= classes:
                raise AdvkitError(f"{what} {int(labels.max())} is not a class of this model (0-{classes - 1})")
        if target is not None and bool((target == y).any()):
            first = int((target == y).nonzero()[0, 0])
            raise AdvkitError(f"sample {first} of the batch has its own label {int(y[first])} as target: a targeted attack "
                              "needs another class")
        with model.evaluating(), model.counting(counter):
            try:
                raw = self.run(model, x, y, target, seeds)
            except AdvkitError:
                raise
            except Exception:
                # autograd's error (or a None gradient) deep inside the attack becomes one line. Probed only after a
                # failure, so a working attack spends no uncounted evaluation; the CLI probes before attacking.
                if self.name in ATTACKS and uses_gradients(self.name):
                    require_input_gradients(model, x, f"attack {self.name}")
                raise
            return self._verify(model, x, y, target, raw, counter)

    def _verify(
        self,
        model: ModelWrapper,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        raw: RawResult,
        counter: QueryCounter,
    ) -> AttackResult:
        if raw.x_adv.shape != x.shape:
            raise RuntimeError(f"{self.name} returned shape {tuple(raw.x_adv.shape)} for inputs {tuple(x.shape)}")
        # in the inputs' own memory layout: clamp() turns 1-channel NHWC strides into NCHW ones, on which oneDNN
        # runs the re-check forward about twice as slowly
        x_adv = torch.empty_like(x).copy_(raw.x_adv.detach()).clamp_(0, 1)
        with torch.no_grad():
            logits = model.logits(x_adv)  # independent check, not charged to the attack
        check_finite(logits, f"{self.name}'s adversarial images")
        adv_pred = logits.argmax(1)
        success = adv_pred.eq(target) if target is not None else adv_pred.ne(y)
        l0, l2, linf = perturbation_norms(x.detach(), x_adv)  # numbers, not part of an input's autograd graph
        iterations = raw.iterations if raw.iterations is not None else torch.full((len(x),), -1)
        return AttackResult(
            x_adv, success, adv_pred, counter.counts.clone(), iterations.to(torch.long), l0, l2.float(), linf.float(),
            raw.moves, self.params(),
        )


ATTACKS: Registry[Attack] = Registry("attack")
"""Every attack by name (``advkit list attacks``); ``ATTACKS.create(name, **settings)``."""


def _register_all() -> None:
    from advkit.attacks import pixle, torchattacks_adapter, white_pixle  # noqa: F401  (importing registers the entries)


def create_attack(name: str, **settings: Any) -> Attack:
    """Build a registered attack; bad settings fail with one line naming them."""
    _register_all()
    check_settings(ATTACKS.entry(name).factory, settings, name)
    try:
        return ATTACKS.create(name, **settings)
    except SettingsError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name}: {exc}") from None


def attack_names() -> list[str]:
    _register_all()
    return ATTACKS.names()
