"""Every torchattacks attack by name, behind advkit's Attack interface.

torchattacks (Kim, arXiv:2010.01950; github.com/Harry24k/adversarial-attacks-pytorch) attacks a model that
takes [0, 1] images; advkit hands it the model wrapper, which owns normalisation and counts queries.

Query accounting: an attack whose forward passes cover the whole batch is run batched. Attacks that evaluate
subsets or populations (Square, OnePixel, Pixle, DeepFool, AutoAttack, ...) cannot be attributed sample by
sample in a batch, so advkit notices the first such pass and attacks those samples one at a time instead,
which makes every count exact. torchattacks draws from the global torch/NumPy generators: advkit seeds them
from the per-sample seed inside a forked RNG state and restores them afterwards. Randomised attacks run
batched (PGD's random start; APGD or Square when no pass evaluates a subset) therefore depend on the
batch composition; advkit's own attacks do not.

Differences from torchattacks: untargeted JSMA aims at class (y + 1) % K of the model's K classes (torchattacks
hard-codes % 10); ``n_classes`` (FAB, APGDT, AutoAttack) comes from the model. Refused with one line: targeted FAB
(torchattacks' targeted FAB stops at any wrong class), ta-pixle on non-square images (torchattacks' Pixle swaps x and
y), DIFGSM/TIFGSM on non-square images or, on a fixed-size model, with resize_rate > 1 (their input diversity
resizes to W x W), EADL1/EADEN with max_iterations < 10 and abort_early (a modulo by zero), and DLR-loss attacks
(APGDT, AutoAttack, APGD/UPGD with loss=dlr) on models with fewer classes than the logits that loss reads. float16
images are attacked in float32 (in float16, most input-gradient entries underflow to 0 and FGSM/PGD move a fraction of
the pixels, reporting a robustness the model does not have); the result is rounded back to float16, so its L-inf
distance can exceed eps by half a float16 step. EADL1/EADEN attack float64 images in float32 too (torchattacks
keeps their best distances in float32 and fails on float64 ones).

    >>> attack = create_torchattack("fgsm", eps="8/255")
    >>> round(attack.settings["eps"], 4)
    0.0314
"""

from __future__ import annotations

import functools
import inspect
import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from advkit.attacks.base import ATTACKS, Attack, RawResult, _output_classes, check_linf_budget
from advkit.errors import AdvkitError, QueryBudgetExceeded, SettingsError
from advkit.models import ModelWrapper, QueryCounter, UnattributedQuery
from advkit.registry import suggest
from advkit.rng import seeded_globals

# advkit name -> torchattacks class name; torchattacks' Pixle is "ta-pixle" (advkit's own is "pixle")
TORCHATTACKS_NAMES = {
    "gn": "GN", "fgsm": "FGSM", "bim": "BIM", "rfgsm": "RFGSM", "pgd": "PGD", "eotpgd": "EOTPGD", "ffgsm": "FFGSM",
    "tpgd": "TPGD", "mifgsm": "MIFGSM", "upgd": "UPGD", "apgd": "APGD", "apgdt": "APGDT", "difgsm": "DIFGSM",
    "tifgsm": "TIFGSM", "jitter": "Jitter", "nifgsm": "NIFGSM", "pgdrs": "PGDRS", "sinifgsm": "SINIFGSM",
    "vmifgsm": "VMIFGSM", "vnifgsm": "VNIFGSM", "spsa": "SPSA", "jsma": "JSMA", "eadl1": "EADL1", "eaden": "EADEN",
    "pifgsm": "PIFGSM", "pifgsmpp": "PIFGSMPP", "cw": "CW", "pgdl2": "PGDL2", "deepfool": "DeepFool",
    "pgdrsl2": "PGDRSL2", "sparsefool": "SparseFool", "onepixel": "OnePixel", "ta-pixle": "Pixle", "fab": "FAB",
    "autoattack": "AutoAttack", "square": "Square",
}
_NUM_CLASSES_PARAM = "n_classes"
_FILLED_IN = frozenset({_NUM_CLASSES_PARAM, "seed"})  # _build passes these from the model and the sample
RGB_ONLY = {"tifgsm", "pifgsm", "pifgsmpp"}  # torchattacks builds 3-channel kernels for these
INPUT_DIVERSITY = {"difgsm", "tifgsm"}  # torchattacks resizes their inputs to x.shape[-1] squared
FLOAT32_ONLY = {"eadl1", "eaden"}  # torchattacks keeps their best L1 distances in float32 (torch.Tensor(list))
# what torchattacks raises on settings it cannot run with (bad shapes, math domain errors, failed asserts)
THIRD_PARTY_ERRORS = (ValueError, TypeError, RuntimeError, ArithmeticError, IndexError, AssertionError, NotImplementedError)


def _torchattacks_class(class_name: str) -> type:
    import torchattacks

    return getattr(torchattacks, class_name)


def _defaults(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "model")}


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """CLI strings like "8/255" become numbers where torchattacks expects numbers; NumPy scalars become Python's."""
    if isinstance(value, np.generic):
        value = value.item()
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if numeric and isinstance(value, str):
        try:
            value = float(Fraction(value))
        except (ValueError, ZeroDivisionError):
            raise SettingsError(f"{name}: {key} must be a number, got {value!r}") from None
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(default, bool) and not isinstance(value, bool):
        hint = " (write true or false)" if isinstance(value, str) and value.lower() in ("true", "false") else ""
        raise SettingsError(f"{name}: {key} must be true or false, got {value!r}{hint}")
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value.is_integer():
        value = int(value)
    return value


@dataclass(frozen=True)
class Rule:
    """The range a numeric setting must lie in: ``test`` on the value, ``wanted`` for the message, ``bad`` an example
    outside it (the conformance suite feeds it to every attack that has the setting)."""

    test: Callable[[float], bool]
    wanted: str
    bad: float


_NON_NEGATIVE = Rule(lambda v: v >= 0, ">= 0", -1.0)
_POSITIVE = Rule(lambda v: v > 0, "> 0", 0.0)
_COUNT = Rule(lambda v: isinstance(v, int) and v >= 1, "an integer >= 1", 0)
_FRACTION = Rule(lambda v: 0 < v <= 1, "in (0, 1]", 1.5)
_PROBABILITY = Rule(lambda v: 0 <= v <= 1, "in [0, 1]", -0.5)

# torchattacks checks almost none of these: out of range they fail deep inside (PGD eps < 0, Square p_init < 0) or run
# and mean nothing (FGSM eps < 0 steps towards the label, CW steps=0 returns the clean image)
RANGES: dict[str, Rule] = {
    **dict.fromkeys(("eps", "max_epsilon", "std", "noise_sd", "kappa", "decay", "momentum", "overshoot", "beta",
                     "amplification", "project_factor"), _NON_NEGATIVE),
    **dict.fromkeys(("alpha", "lr", "c", "delta", "initial_const", "lam", "nsig", "scale", "resize_rate", "eta",
                     "alpha_max", "eps_for_division"), _POSITIVE),
    **dict.fromkeys(("steps", "n_queries", "n_restarts", "restarts", "max_iterations", "binary_search_steps", "eot_iter",
                     "noise_batch_size", "batch_max", "nb_iter", "nb_sample", "max_batch_size", "inf_batch", "popsize",
                     "pixels", "N", "m", "num_iter_set", "len_kernel"), _COUNT),
    **dict.fromkeys(("p_init", "rho", "gamma"), _FRACTION),
    **dict.fromkeys(("diversity_prob", "prob"), _PROBABILITY),
    "n_classes": Rule(lambda v: isinstance(v, int) and v >= 2, "an integer >= 2", 1),
}
UNCHECKED = frozenset({"theta", "seed"})
"""Numeric settings with no range: JSMA's theta may be negative, any seed is fine."""

# string settings torchattacks branches on; an unknown value fails late or is silently ignored (FAB's norm)
CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "norm": {"fab": ("Linf", "L2", "L1"), "apgd": ("Linf", "L2"), "apgdt": ("Linf", "L2"), "square": ("Linf", "L2"),
             "autoattack": ("Linf", "L2")},
    "loss": {"apgd": ("ce", "dlr"), "square": ("ce", "margin"), "upgd": ("ce", "dlr", "margin")},
    "version": {"autoattack": ("standard", "plus", "rand")},
    "noise_type": {"pgdrs": ("guassian", "uniform"), "pgdrsl2": ("guassian", "uniform")},  # torchattacks' spelling
    "kernel_name": {"tifgsm": ("gaussian", "linear", "uniform")},
}


L2_BUDGETS = frozenset({"pgdl2", "pgdrsl2"})  # their eps is an L2 radius, often above 1; every other eps is L-inf


def check_setting(name: str, key: str, value: Any) -> None:
    """SettingsError (a ValueError) naming ``key`` and ``value`` when a setting of attack ``name`` is out of range."""
    choices = CHOICES.get(key, {}).get(name)
    if choices is not None and value not in choices:
        raise SettingsError(f"{name}: {key} must be one of {', '.join(choices)}, got {value!r}")
    rule = RANGES.get(key)
    if rule is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{name}: {key} must be a finite number, got {value!r}")
    if not rule.test(value):
        raise SettingsError(f"{name}: {key} must be {rule.wanted}, got {value!r}")


class TorchattacksAttack(Attack):
    """A torchattacks attack run through advkit (see the module docstring for accounting and seeding)."""

    batch_invariant = False  # randomised attacks run batched draw from one seed per batch

    def __init__(self, *, name: str, class_name: str, settings: dict[str, Any]) -> None:
        self.name = name  # type: ignore[misc]
        self.class_name = class_name
        self.settings = settings

    def params(self) -> dict[str, Any]:
        """Every setting the torchattacks class runs with, defaults included (recorded in reports).

        ``seed`` and ``n_classes`` appear only when set: otherwise ``_build`` fills in each sample's seed and the
        model's class count, and recording torchattacks' defaults (0, 10) would make a replay run something else.
        """
        defaults = {k: v for k, v in _defaults(_torchattacks_class(self.class_name)).items()
                    if isinstance(v, (int, float, str, bool, tuple)) and k not in _FILLED_IN}
        return {"torchattacks": self.class_name, **defaults, **self.settings}

    def _setting(self, key: str) -> Any:
        return self.settings.get(key, _defaults(_torchattacks_class(self.class_name)).get(key))

    def _build(self, model: ModelWrapper, target: torch.Tensor | None, seed: int, classes: int | None) -> Any:
        cls = _torchattacks_class(self.class_name)
        settings = dict(self.settings)
        defaults = _defaults(cls)
        if _NUM_CLASSES_PARAM in defaults and classes is not None:
            settings[_NUM_CLASSES_PARAM] = classes
        if "seed" in defaults and "seed" not in settings:  # AutoAttack's default seed=None means "the clock"
            settings["seed"] = seed % 2**31
        # torchattacks prints "Failed to set device automatically" for a net without parameters (a black box behind
        # a module); its device stays None, which its .to(self.device) calls take as "where the input is"
        quiet = redirect_stdout(io.StringIO()) if next(model.parameters(), None) is None else nullcontext()
        with self._settings_blamed(), quiet:
            atk = cls(model, **settings)
        if target is not None:
            try:
                atk.set_mode_targeted_by_label(quiet=True)
            except ValueError:
                raise AdvkitError(f"torchattacks {self.class_name} has no targeted mode") from None
        return atk

    @property
    def supports_targeted(self) -> bool:  # type: ignore[override]
        """Whether torchattacks offers a targeted mode for this attack, so callers can refuse one before any work.

        FAB's does not count: it reads the target as the label, finds the image "misclassified" and returns it
        clean, and given the true label instead it stops at any wrong class, not at the target."""
        return self.name != "fab" and _has_targeted_mode(self.class_name)

    def check_applicable(self, model: ModelWrapper, x: torch.Tensor, targeted: bool) -> None:
        """Also refuses what torchattacks fails on deep inside (image shapes), before any of it runs."""
        super().check_applicable(model, x, targeted)
        h, w = x.shape[2], x.shape[3]
        if self.name in RGB_ONLY and x.shape[1] != 3:
            raise AdvkitError(f"torchattacks {self.class_name} works on 3-channel images only, got {x.shape[1]} channel(s)")
        if self.name == "ta-pixle" and h != w:  # it swaps x and y (docs/methods.md)
            raise AdvkitError(f"ta-pixle: torchattacks Pixle works on square images only, got {h}x{w}; "
                              "use advkit's pixle (any H x W)")
        if self.name in INPUT_DIVERSITY and self._setting("diversity_prob") > 0:
            if h != w:
                raise AdvkitError(f"{self.name}: torchattacks {self.class_name} works on square images only, got {h}x{w}: "
                                  "its input diversity resizes to W x W (diversity_prob=0 turns it off)")
            size, rate = model.preprocessing.input_size, self._setting("resize_rate")
            if size is not None and rate > 1:
                raise SettingsError(f"{self.name}: resize_rate must be <= 1 for a model with a fixed input size "
                                    f"({size[0]}x{size[1]}), got {rate:g}")
        needed = self._min_classes(targeted)
        if needed > 2:
            classes = model.preprocessing.num_classes or _output_classes(model, x)
            if classes < needed:
                instead = "loss=ce" if self.name in ("apgd", "upgd") else "apgd with loss=ce"
                raise AdvkitError(f"{self.name}: torchattacks {self.class_name}'s DLR loss needs a model with at least "
                                  f"{needed} classes, this one has {classes}; {instead} avoids it")

    def _min_classes(self, targeted: bool) -> int:
        """Classes torchattacks' DLR losses need: they read the 3rd largest logit, the targeted one the 4th."""
        if self.name == "apgdt":
            return 4
        if self.name == "autoattack":  # every version but rand runs APGDT
            return 3 if self._setting("version") == "rand" else 4
        if self.name in ("apgd", "upgd") and self._setting("loss") == "dlr":
            return 4 if targeted else 3
        return 2

    def _classes(self, model: ModelWrapper, x: torch.Tensor, target: torch.Tensor | None) -> int | None:
        """The model's class count where torchattacks needs it (n_classes, untargeted JSMA), else None."""
        jsma_untargeted = self.name == "jsma" and target is None
        if _NUM_CLASSES_PARAM not in _defaults(_torchattacks_class(self.class_name)) and not jsma_untargeted:
            return None
        classes = model.preprocessing.num_classes or _output_classes(model, x)
        given = self.settings.get(_NUM_CLASSES_PARAM)
        if given is not None and given != classes:
            raise AdvkitError(f"{self.name}: n_classes={given}, but the model has {classes} classes")
        return classes

    def run(
        self, model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, seeds: torch.Tensor
    ) -> RawResult:
        classes = self._classes(model, x, target)
        if self.name == "jsma" and target is None and classes:  # torchattacks aims at (y + 1) % 10; success stays untargeted
            target = (y + 1) % classes
        counter = model.counter
        if counter is None:  # Attack.__call__ always counts; direct run() calls get a private counter
            counter = QueryCounter(len(x))
        # float16 gradients underflow; EAD's float32 bookkeeping cannot take float64 costs (module docstring)
        in_float32 = x.dtype == torch.float16 or (self.name in FLOAT32_ONLY and x.dtype == torch.float64)
        # contiguous: torchattacks .view()s its inputs (PGDL2, JSMA, PGDRS fail on channels_last), and its
        # random draws (empty_like(x).uniform_()) land on pixels in memory order
        images = (x.float() if in_float32 else x).contiguous()
        try:
            with seeded_globals(int(seeds[0])):
                return RawResult(self._call(model, images, y, target, int(seeds[0]), classes).to(x.dtype))
        except (UnattributedQuery, QueryBudgetExceeded):
            counter.counts.zero_()  # the aborted batched attempt is not the attack's cost
        return RawResult(self._per_sample(model, images, y, target, seeds, counter, classes).to(x.dtype))

    def _call(self, model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, seed: int,
              classes: int | None) -> torch.Tensor:
        atk = self._build(model, target, seed, classes)
        with self._settings_blamed():
            return atk(x, target if target is not None else y).detach()

    @contextmanager
    def _settings_blamed(self) -> Iterator[None]:
        """An exception torchattacks raises on the user's settings becomes one SettingsError line naming them.

        With no user settings the defaults ran (the conformance suite runs them all), so it stays a traceback: a bug.
        advkit's own errors and the accounting signals (UnattributedQuery) pass through. Inputs and models torchattacks
        is known to fail on (shapes, class counts) are refused before it runs, so they are never blamed on settings.
        """
        try:
            yield
        except (AdvkitError, UnattributedQuery):
            raise
        except THIRD_PARTY_ERRORS as exc:
            if not self.settings:
                raise
            given = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
            raise SettingsError(f"{self.name}: torchattacks {self.class_name} failed with {given}: "
                                f"{' '.join(str(exc).split()) or type(exc).__name__}; check these settings") from exc

    def _per_sample(
        self,
        model: ModelWrapper,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        seeds: torch.Tensor,
        counter: QueryCounter,
        classes: int | None,
    ) -> torch.Tensor:
        x_adv = x.clone()
        for i in range(len(x)):
            one = QueryCounter(1, counter.budget, counter.device)
            try:
                with model.counting(one), seeded_globals(int(seeds[i])):
                    one_target = None if target is None else target[i : i + 1]
                    x_adv[i : i + 1] = self._call(model, x[i : i + 1], y[i : i + 1], one_target, int(seeds[i]), classes)
            except QueryBudgetExceeded:
                x_adv[i] = x[i]  # out of budget: the attack failed on this sample
            counter.counts[i] = one.counts[0]
        return x_adv


@functools.cache
def _has_targeted_mode(class_name: str) -> bool:
    """torchattacks lists an attack's modes on its instances only: read them off one built on a stand-in net."""
    return "targeted" in _torchattacks_class(class_name)(torch.nn.Linear(1, 2)).supported_mode


def create_torchattack(name: str, **settings: Any) -> TorchattacksAttack:
    """Build the torchattacks attack registered as ``name`` with validated settings."""
    class_name = TORCHATTACKS_NAMES[name]
    defaults = _defaults(_torchattacks_class(class_name))
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise SettingsError(f"{name} has no setting {', '.join(unknown)}{suggest(unknown[0], list(defaults))}")
    clean = {k: _coerce(name, k, v, defaults[k]) for k, v in settings.items()}
    for key, value in clean.items():
        check_setting(name, key, value)
    if name not in L2_BUDGETS and clean.get("norm", defaults.get("norm", "Linf")) == "Linf":
        for key in ("eps", "max_epsilon"):
            if key in clean:
                check_linf_budget(name, key, clean[key])
    if name in ("eadl1", "eaden"):  # torchattacks checks for progress every max_iterations // 10 steps
        steps = clean.get("max_iterations", defaults["max_iterations"])
        if clean.get("abort_early", defaults["abort_early"]) and steps < 10:
            raise SettingsError(f"{name}: max_iterations must be >= 10 when abort_early is true, got {steps}")
    return TorchattacksAttack(name=name, class_name=class_name, settings=clean)


def _register() -> None:
    for name, class_name in TORCHATTACKS_NAMES.items():
        def factory(name: str = name, **settings: Any) -> Attack:
            return create_torchattack(name, **settings)

        factory.__doc__ = f"torchattacks.{class_name}" + (" (torchattacks' per-image Pixle)" if name == "ta-pixle" else "")
        ATTACKS.add(name, factory, tags=("torchattacks",))


_register()
