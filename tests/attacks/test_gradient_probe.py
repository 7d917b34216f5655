"""Gradient attacks on a model without input gradients fail in one AdvkitError line before attacking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.attacks import attack_names, create_attack
from advkit.attacks.base import require_input_gradients
from advkit.attacks.sanity import uses_gradients
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper

GRADIENT_ATTACKS = [name for name in attack_names() if uses_gradients(name)]


class _Detached(nn.Module):
    """The forward cuts the input from autograd, as a user's preprocessing in numpy would."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.detach())


class _NoGrad(_Detached):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x)


class _Masked(_Detached):
    """Zero input gradient on every image (gradient masking), but the input is still in the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.ones(len(x), 1, dtype=torch.bool), self.net(x.detach()), self.net(x))


def _wrap(net: nn.Module, like: ModelWrapper) -> ModelWrapper:
    return ModelWrapper(net, like.preprocessing)


@pytest.fixture
def batch(digits) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    return digits.batch(digits.indices("test")[:4])


def test_the_probe_list_is_not_empty() -> None:
    assert {"pgd", "fgsm", "white-pixle", "white-pixle-sorted", "autoattack"} <= set(GRADIENT_ATTACKS)


@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
def test_no_gradient_attack_crashes_with_autograd_on_a_detaching_model(name: str, digits_model: ModelWrapper,
                                                                      batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """An attack that fails on it fails with the one line; a few torchattacks attacks (cw, ead, jitter) run on
    without a gradient, which the CLI refuses before attacking (tests/cli/test_model_checks.py)."""
    try:
        create_attack(name)(_wrap(_Detached(digits_model.net), digits_model), *batch)
    except AdvkitError as exc:
        assert "needs the model's input gradients" in str(exc) or "3-channel images only" in str(exc), str(exc)


@pytest.mark.parametrize("name", ["pgd", "fgsm", "white-pixle", "white-pixle-sorted", "deepfool", "autoattack"])
def test_the_usual_gradient_attacks_fail_in_one_line(name: str, digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(AdvkitError, match=rf"^attack {name} needs the model's input gradients, .*; use a gradient-free attack"):
        create_attack(name)(_wrap(_Detached(digits_model.net), digits_model), *batch)


def test_a_working_attack_spends_no_extra_evaluation(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The probe runs only after a failure: counted queries + the one check pass are all the net sees."""
    calls = []
    hook = digits_model.net.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    try:
        result = create_attack("pgd", eps=0.1, steps=3)(digits_model, *batch)
    finally:
        hook.remove()
    assert sum(calls) == int(result.queries.sum()) + len(batch[0])


def test_a_forward_under_no_grad_is_refused_too(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(AdvkitError, match="needs the model's input gradients"):
        create_attack("white-pixle", restarts=1, max_iterations=1)(_wrap(_NoGrad(digits_model.net), digits_model), *batch)


def test_gradient_free_attacks_still_run_on_it(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    result = create_attack("pixle", restarts=2, max_iterations=2)(_wrap(_NoGrad(digits_model.net), digits_model), *batch)
    assert result.queries.min() >= 1


def test_zero_gradients_are_not_refused(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Masked gradients are the sanity flags' business: the attack runs (and cannot move the images)."""
    masked = _wrap(_Masked(digits_model.net), digits_model)
    require_input_gradients(masked, batch[0], "fgsm")
    result = create_attack("fgsm", eps=0.3)(masked, *batch)
    assert float(result.linf.max()) == 0.0
