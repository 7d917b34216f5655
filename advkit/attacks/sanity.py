"""AutoAttack-style sanity checks of a model under attack: signs that robustness numbers may be wrong.

Croce & Hein (AutoAttack, ICML 2020, ``autoattack/checks.py``) list the usual ways an evaluation overestimates
robustness; advkit records four of them in every attack run's summary (keys ``sanity.*``, docs/report-format.md)
and the CLI prints a warning for each flag that is set:

- ``sanity.softmax_output``: the model already outputs probabilities (rows non-negative, summing to 1), so
  losses computed on them as logits (cross-entropy of a softmax) have vanishing gradients;
- ``sanity.randomized``: two forward passes of the same clean batch differ, so a single evaluation of an
  adversarial image is not a verdict (use an expectation over randomness, e.g. EOT-PGD);
- ``sanity.zero_gradients``: some clean images have an input gradient of the cross-entropy that is exactly zero
  (``sanity.zero_gradient_fraction`` of them), so gradient attacks cannot move them (gradient masking);
- ``sanity.black_box_beats_white_box`` (worst-case runs of several attacks): a gradient-free attack leaves a
  lower robust accuracy than every gradient attack of the same threat model (norm and eps), the classic
  symptom of gradient masking.

    >>> import torch
    >>> from advkit.models import ModelWrapper, Preprocessing
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    >>> flags = model_flags(ModelWrapper(net, Preprocessing()), torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
    >>> flags["sanity.softmax_output"], flags["sanity.randomized"]
    (True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from advkit.models import ModelWrapper

# attacks that never use the model's gradient (the rest of the registry does, or is an ensemble that does)
GRADIENT_FREE = frozenset({"pixle", "ta-pixle", "square", "onepixel", "spsa", "gn"})

MESSAGES = {
    "sanity.softmax_output": "the model's outputs are already probabilities (non-negative rows summing to 1); "
                             "attacks treat them as logits, so gradient attacks may underestimate the risk",
    "sanity.randomized": "two forward passes of the same images differ: the model is randomised, so one "
                         "evaluation per adversarial image is not a verdict (consider eotpgd)",
    "sanity.zero_gradients": "{fraction:.0%} of the clean images have an all-zero input gradient: gradient "
                             "attacks cannot move them (gradient masking?)",
    "sanity.black_box_beats_white_box": "gradient-free {black_attack} left robust accuracy {black:.3g}, below the "
                                        "{white:.3g} of {white_attack}, the best gradient attack of the same threat "
                                        "model ({threat}): a sign of gradient masking",
}


def uses_gradients(attack_name: str) -> bool:
    """Whether the registered attack ``attack_name`` follows the model's gradient."""
    return attack_name not in GRADIENT_FREE


def model_flags(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, *, gradients: bool = True) -> dict[str, Any]:
    """Sanity flags of ``model`` on a clean batch x (B, C, H, W) in [0, 1] with labels y (B,); uncounted passes.

    ``gradients=False`` skips the zero-gradient check (no gradient attack will run).
    """
    x, y = x.to(model.device), y.to(model.device)
    with torch.no_grad():
        first, second = model.logits(x), model.logits(x)
    scale = first.abs().amax().clamp_min(1e-12)
    flags: dict[str, Any] = {
        "sanity.softmax_output": bool((first >= 0).all() and (first.sum(1) - 1).abs().amax() < 1e-4),
        # relative difference: GPU kernels may differ in the last bits, a random layer differs far more
        "sanity.randomized": bool(((first - second).abs().amax() / scale) > 1e-5),
    }
    if gradients:
        fraction = _zero_gradient_fraction(model, x, y)
        flags["sanity.zero_gradients"] = fraction > 0
        flags["sanity.zero_gradient_fraction"] = fraction
    return flags


def input_gradient(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor | None:
    """The gradient (B, C, H, W) of the summed cross-entropy with labels y (of the summed logits without y) with
    respect to the images x, from one uncounted forward and backward pass; None when the logits have no autograd
    path back to the input (a forward that detaches it or runs without gradients)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model.logits(x)
        if not logits.requires_grad:
            return None
        loss = logits.sum() if y is None else F.cross_entropy(logits, y, reduction="sum")
        return torch.autograd.grad(loss, x, allow_unused=True)[0]


def _zero_gradient_fraction(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the images whose cross-entropy input gradient is exactly zero (1.0 if the model has none)."""
    grad = input_gradient(model, x, y)
    if grad is None:
        return 1.0
    zero = grad.flatten(1).abs().amax(1) == 0
    return float(zero.float().mean())


def threat_model(attack_name: str, params: Mapping[str, Any] | None = None) -> tuple[str, Any] | None:
    """(norm, eps) an attack is bounded by, so that only comparable attacks are compared; None if unknown.

    ``params`` are the attack's recorded settings (``norm`` for square/apgd/fab/autoattack, ``eps``).
    """
    params = params or {}
    if attack_name in _L0:
        return ("l0", None)
    if attack_name in _L2:
        norm = "l2"
    elif attack_name in _L1:
        norm = "l1"
    elif attack_name in _NORM_PARAM:
        norm = str(params.get("norm", "Linf")).lower()
    elif attack_name in _UNBOUNDED:
        return None
    else:
        norm = "linf"
    eps = params.get("eps")
    return (norm, round(float(eps), 8) if isinstance(eps, (int, float)) else eps)


_L0 = frozenset({"pixle", "ta-pixle", "onepixel", "white-pixle", "white-pixle-sorted", "jsma", "sparsefool"})
# attack_mix_flags compares the pixel-moving ones only (pixel_budget): the other L0 attacks change pixel values
# under budgets of their own (JSMA's share gamma, OnePixel's pixel count, SparseFool's none)
_L2 = frozenset({"pgdl2", "pgdrsl2", "cw", "deepfool"})
_L1 = frozenset({"eadl1", "eaden"})
_NORM_PARAM = frozenset({"square", "apgd", "apgdt", "fab", "autoattack"})
_UNBOUNDED = frozenset({"gn"})  # random noise: no budget to compare


def attack_mix_flags(robust_accuracy: Mapping[str, float],
                     params: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Flags of several attacks run on the same samples, from each attack's robust accuracy.

    Attacks are compared within one threat model (:func:`threat_model`: same norm and eps), as AutoAttack
    compares Square with APGD at the same budget: ``sanity.black_box_beats_white_box`` is set when, in some
    threat model, the best gradient-free attack leaves strictly lower robust accuracy than the best gradient
    attack. It is only recorded when some threat model has attacks of both kinds.

        >>> attack_mix_flags({"square": 0.2, "pgd": 0.5}, {"square": {"eps": 0.03}, "pgd": {"eps": 0.03}})["sanity.black_box_beats_white_box"]
        True
        >>> attack_mix_flags({"pixle": 0.0, "fgsm": 0.7})  # an L0 attack and an L-inf one are not comparable
        {}
    """
    params = params or {}
    groups: dict[tuple[str, Any], tuple[dict[str, float], dict[str, float]]] = {}
    for name, value in robust_accuracy.items():
        key = threat_model(name, params.get(name))
        if key is not None and key[0] == "l0":  # only pixel movers with the same pixel budget compare
            budget = pixel_budget(name, params.get(name) or {})
            key = None if budget is None else ("l0", budget)
        if key is not None:
            groups.setdefault(key, ({}, {}))[0 if uses_gradients(name) else 1][name] = float(value)
    compared = [(key, min(black.items(), key=lambda kv: kv[1]), min(white.items(), key=lambda kv: kv[1]))
                for key, (white, black) in groups.items() if white and black]
    if not compared:
        return {}
    (norm, eps), black, white = min(compared, key=lambda group: group[1][1] - group[2][1])
    if norm == "l0":
        norm, eps = f"l0 <= {eps} pixels", None
    return {
        "sanity.black_box_beats_white_box": bool(black[1] < white[1]),
        "sanity.black_box_robust_accuracy": black[1],
        "sanity.white_box_robust_accuracy": white[1],
        "sanity.black_box_attack": black[0],
        "sanity.white_box_attack": white[0],
        "sanity.threat_model": norm if eps is None else f"{norm} eps {eps}",
    }


def pixel_budget(attack_name: str, params: Mapping[str, Any]) -> int | None:
    """Most pixels a pixel-moving attack may change in an image, from its recorded settings; None when the
    attack moves no pixels or a setting is a fraction of the image (the budget then depends on its size).

    Pixle keeps one patch per restart (its greedy variant one per iteration; ``swap`` also rewrites the
    sources); WhitePixle ``pixels_per_iteration`` per accepted candidate over every restart; the sorted variant
    up to ``attack_limit``. Two L0 attacks compare only at the same budget, as L-inf attacks at the same eps.

        >>> pixel_budget("pixle", {"x_dimensions": [1, 2], "y_dimensions": [1, 2], "restarts": 10, "max_iterations": 5})
        40
        >>> pixel_budget("white-pixle", {"pixels_per_iteration": [1, 1], "restarts": 2, "max_iterations": 5})
        10
    """
    def count(key: str, default: Any) -> int | None:
        value = params.get(key, default)
        value = value[-1] if isinstance(value, (list, tuple)) else value
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    if attack_name in ("pixle", "ta-pixle"):
        steps = ("max_iterations", 10) if params.get("update_each_iteration") else ("restarts", 20)
        x, y, patches = count("x_dimensions", 10), count("y_dimensions", 10), count(*steps)
        if x is None or y is None or patches is None:
            return None
        return x * y * patches * (2 if params.get("swap") else 1)
    if attack_name == "white-pixle":
        factors = [count("pixels_per_iteration", 1), count("restarts", 20), count("max_iterations", 100)]
        return None if None in factors else factors[0] * factors[1] * factors[2]  # type: ignore[operator]
    if attack_name == "white-pixle-sorted":
        limit = count("attack_limit", None)
        return None if limit is None else limit * (2 if params.get("swap") else 1)
    return None


def warnings_for(summary: Mapping[str, Any], attack_names: Iterable[str] = ()) -> list[str]:
    """One line per flag set in a run summary; zero gradients only matter if a gradient attack ran."""
    names = list(attack_names)
    lines = []
    for key, template in MESSAGES.items():
        if not summary.get(key):
            continue
        if key == "sanity.zero_gradients" and names and not any(uses_gradients(n) for n in names):
            continue
        lines.append(template.format(fraction=float(summary.get("sanity.zero_gradient_fraction", 1.0)),
                                     black=float(summary.get("sanity.black_box_robust_accuracy", float("nan"))),
                                     white=float(summary.get("sanity.white_box_robust_accuracy", float("nan"))),
                                     black_attack=summary.get("sanity.black_box_attack", "a gradient-free attack"),
                                     white_attack=summary.get("sanity.white_box_attack", "every gradient attack"),
                                     threat=summary.get("sanity.threat_model", "same norm and eps")))
    return lines
