"""Conformance of every registered attack (advkit and torchattacks): bounds, re-verified success, budget,
seeds and settings; plus the torchattacks adapter's exact query accounting."""

from __future__ import annotations

import pytest
import torch

from advkit.attacks import attack_names, create_attack
from advkit.attacks.runner import select_samples
from advkit.datasets import ImageDataset
from advkit.errors import AdvkitError
from advkit.models import ModelWrapper

# small settings so every attack finishes quickly on 8x8 digits
FAST = {
    "pixle": {"restarts": 3, "max_iterations": 5, "x_dimensions": [1, 2], "y_dimensions": [1, 2]},
    "white-pixle": {"restarts": 3, "max_iterations": 5, "pixels_per_iteration": 2}, "white-pixle-sorted": {"attack_limit": 8},
    "square": {"n_queries": 30, "eps": 0.3}, "onepixel": {"steps": 2, "popsize": 4}, "ta-pixle": {"restarts": 2, "max_iterations": 3},
    "autoattack": {"eps": 0.3}, "eadl1": {"max_iterations": 10, "binary_search_steps": 2},
    "eaden": {"max_iterations": 10, "binary_search_steps": 2}, "cw": {"steps": 10}, "deepfool": {"steps": 5},
    "sparsefool": {"steps": 2}, "spsa": {"nb_sample": 8, "max_batch_size": 8}, "fab": {"steps": 3},
    "pgdrs": {"noise_batch_size": 2}, "pgdrsl2": {"noise_batch_size": 2}, "tifgsm": {"len_kernel": 3},
}
RGB_ONLY = {"tifgsm", "pifgsm", "pifgsmpp"}
NO_MODEL_QUERIES = {"gn"}  # Gaussian noise never looks at the model


@pytest.fixture(scope="module")
def batch(digits: ImageDataset, digits_model: ModelWrapper) -> tuple[torch.Tensor, torch.Tensor]:
    plan = select_samples(digits_model, digits, n=3, seed=0)
    return digits.batch(plan.attack_index)


@pytest.mark.parametrize("name", [n for n in attack_names() if n not in RGB_ONLY])
def test_every_attack_conforms(name: str, digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    seeds = torch.tensor([7, 8, 9])
    attack = create_attack(name, **FAST.get(name, {}))
    result = attack(digits_model, x, y, seeds=seeds)
    again = attack(digits_model, x, y, seeds=seeds)
    assert torch.equal(result.x_adv, again.x_adv), f"{name} is not reproducible for a fixed seed"
    capped = attack(digits_model, x, y, seeds=seeds, max_queries=3)
    assert int(capped.queries.max()) <= 3
    with pytest.raises(ValueError, match="no setting"):
        create_attack(name, no_such_setting=1)
    assert result.x_adv.shape == x.shape and float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
    with torch.no_grad():
        independent = digits_model.logits(result.x_adv).argmax(1)
    assert torch.equal(result.success, independent.ne(y))
    if name in NO_MODEL_QUERIES:
        assert result.queries.tolist() == [0, 0, 0]
    else:
        assert bool((result.queries >= 1).all()), f"{name} spent no queries: {result.queries.tolist()}"
    changed = (result.x_adv != x).flatten(1).any(1)
    assert torch.equal(result.l0 > 0, changed)


@pytest.mark.parametrize("name", sorted(RGB_ONLY))
def test_rgb_only_attacks_refuse_gray_images_in_one_line(name: str, digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(AdvkitError, match="3-channel images only"):
        create_attack(name)(digits_model, *batch)


def test_pgd_breaks_digits_and_counts_steps(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    result = create_attack("pgd", eps=0.3, steps=10, alpha=0.05)(digits_model, x, y)
    assert bool(result.success.all())
    assert float(result.linf.max()) <= 0.3 + 1e-6
    # torchattacks PGD: 10 gradient steps, each one forward pass of the whole batch
    assert result.queries.tolist() == [10, 10, 10]


def test_population_attacks_fall_back_to_exact_per_sample_counts(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    result = create_attack("ta-pixle", restarts=2, max_iterations=3)(digits_model, x, y)
    # torchattacks' Pixle: 1 query for the initial loss, then 2 per iteration (loss + success test)
    assert all(1 <= q <= 1 + 2 * 2 * 3 for q in result.queries.tolist())


def test_budget_stops_an_attack_on_the_sample(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    result = create_attack("pgd", eps=0.3, steps=10)(digits_model, x, y, max_queries=5)
    assert result.queries.tolist() == [5, 5, 5]
    assert not bool(result.success.any()) and torch.equal(result.x_adv, x)


def test_same_seed_same_result(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    attack = create_attack("square", n_queries=20, eps=0.2)
    seeds = torch.tensor([11, 12, 13])
    a = attack(digits_model, x, y, seeds=seeds)
    b = attack(digits_model, x, y, seeds=seeds)
    assert torch.equal(a.x_adv, b.x_adv)


def test_settings_are_validated() -> None:
    with pytest.raises(AdvkitError, match="has no setting epss; did you mean eps"):
        create_attack("fgsm", epss=0.1)
    with pytest.raises(AdvkitError, match="must be a number"):
        create_attack("pgd", eps="a lot")
    with pytest.raises(AdvkitError, match="did you mean"):
        create_attack("pgdd")
    assert create_attack("pgd", eps="8/255", steps=20.0).settings == {"eps": 8 / 255, "steps": 20}


def test_bad_inputs_are_one_line_errors(digits_model: ModelWrapper) -> None:
    attack = create_attack("fgsm")
    y = torch.tensor([0])
    for x, message in [
        (torch.full((1, 1, 8, 8), 2.0), r"lie in \[0, 1\]"),
        (torch.full((1, 1, 8, 8), float("nan")), "NaN"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), "float images"),
        (torch.zeros(0, 1, 8, 8), "non-empty"),
    ]:
        with pytest.raises(AdvkitError, match=message):
            attack(digits_model, x, y)
