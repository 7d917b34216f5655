"""Conformance of every registered attack (advkit and torchattacks): bounds, re-verified success, budget,
seeds and settings; plus the torchattacks adapter's exact query accounting."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from advkit.attacks import attack_names, create_attack
from advkit.attacks.runner import select_samples
from advkit.attacks.torchattacks_adapter import CHOICES, RANGES, TORCHATTACKS_NAMES, UNCHECKED, _defaults, _torchattacks_class
from advkit.datasets import ImageDataset
from advkit.errors import AdvkitError, SettingsError
from advkit.models import ModelWrapper
from advkit.training import fit_preprocessing

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
    assert result.x_adv.stride() == x.stride()  # the inputs' memory layout (1-channel NHWC: oneDNN's fast path)
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



@pytest.mark.parametrize("name", ["pixle", "white-pixle", "square", "pgd"])
def test_labels_seeds_and_budgets_are_checked_before_the_attack(name: str, digits_model: ModelWrapper,
                                                               batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Found by a sweep of the library API: without class names a label past the logits gave Square "success"
    and the others a deep IndexError; int32 labels crashed; target == label was an instant "success"."""
    x, y = batch
    attack = create_attack(name, **FAST.get(name, {}))
    nameless = ModelWrapper(digits_model.net, replace(digits_model.preprocessing, class_names=()))
    with pytest.raises(AdvkitError, match=r"^label 12 is not a class of this model \(0-9\)$"):
        attack(nameless, x, torch.tensor([0, 1, 12]))
    with pytest.raises(AdvkitError, match="its own label .* as target" if attack.supports_targeted else "no targeted mode"):
        attack(digits_model, x, y, target=y)
    for seeds, message in [(torch.arange(2), r"shape \(3,\)"), (torch.arange(3.0), "integer tensor"), ([1, 2, 3], "integer tensor")]:
        with pytest.raises(AdvkitError, match=message):
            attack(digits_model, x, y, seeds=seeds)
    for budget in (2.5, "5", True, 0):
        with pytest.raises(ValueError, match="query budget must be an int >= 1"):
            attack(digits_model, x, y, max_queries=budget)
    seeds = torch.tensor([7, 8, 9])
    reference = attack(nameless, x, y, seeds=seeds)
    for labels in (y.int(), y.to(torch.uint8), y.short()):  # any integer dtype, the same result
        assert torch.equal(attack(nameless, x, labels, seeds=seeds).x_adv, reference.x_adv)


def test_attacks_see_the_net_in_eval_mode_and_leave_its_mode_and_statistics(digits: ImageDataset) -> None:
    """A net switched to train mode after wrapping (a training loop) is attacked as deployed; nothing of it changes."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 10))
    model = ModelWrapper(net, replace(fit_preprocessing(digits), class_names=()))
    x, y = digits.batch(digits.indices("test")[:4])
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for name in ("pixle", "white-pixle", "pgd"):
        create_attack(name, **FAST.get(name, {}))(model, x.requires_grad_(False), y)
        assert net.training, name
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items()), f"{name} changed the BatchNorm statistics"


TORCHATTACKS = sorted(TORCHATTACKS_NAMES)


@pytest.mark.parametrize("name", TORCHATTACKS)
def test_every_numeric_torchattacks_setting_has_a_range(name: str) -> None:
    defaults = _defaults(_torchattacks_class(TORCHATTACKS_NAMES[name]))
    numeric = [k for k, v in defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    unchecked = [k for k in numeric if k not in RANGES and k not in UNCHECKED]
    assert not unchecked, f"{name}: no range for {unchecked}"


@pytest.mark.parametrize("name", TORCHATTACKS)
def test_torchattacks_settings_out_of_range_are_value_errors(name: str) -> None:
    defaults = _defaults(_torchattacks_class(TORCHATTACKS_NAMES[name]))
    for key in (k for k in defaults if k in RANGES):
        bad = RANGES[key].bad
        # integer settings get the integral bad value as an int (-1.0 -> -1)
        with pytest.raises(ValueError, match=rf"^{re.escape(name)}: {key} must be .*, got {re.escape(format(bad, 'g'))}(\.0)?$"):
            create_attack(name, **{key: bad})
        create_attack(name, **{key: defaults[key]})  # the default itself is in range
    for key, per_attack in CHOICES.items():
        if name in per_attack:
            with pytest.raises(ValueError, match=f"{key} must be one of .*, got 'nonsense'"):
                create_attack(name, **{key: "nonsense"})
            create_attack(name, **{key: defaults[key]})


@pytest.mark.parametrize(("name", "settings", "message"), [
    ("pgd", {"eps": -1}, "eps must be >= 0, got -1"),
    ("fgsm", {"eps": "-8/255"}, "eps must be >= 0, got -0.031"),
    ("pgd", {"steps": -1}, "steps must be an integer >= 1, got -1"),
    ("pgd", {"steps": 2.5}, "steps must be an integer >= 1, got 2.5"),
    ("pgd", {"alpha": 0}, "alpha must be > 0, got 0"),
    ("square", {"p_init": -3}, r"p_init must be in \(0, 1\], got -3"),
    ("square", {"n_queries": 0}, "n_queries must be an integer >= 1, got 0"),
    ("cw", {"steps": 0}, "steps must be an integer >= 1, got 0"),
    ("cw", {"c": 0}, "c must be > 0, got 0"),
    ("cw", {"kappa": -1}, "kappa must be >= 0, got -1"),
    ("pgd", {"eps": float("inf")}, "eps must be a finite number, got inf"),
    ("pgd", {"eps": [0.1]}, r"eps must be a finite number, got \[0.1\]"),
    ("fab", {"norm": "L7"}, "norm must be one of Linf, L2, L1, got 'L7'"),
    ("white-pixle-sorted", {"pixels_per_iteration": [1, 5]}, r"pixels_per_iteration must be one int or fraction here"),  # was 1
    ("white-pixle-sorted", {"attack_limit": (4, 8)}, r"attack_limit must be one int or fraction here"),
    ("white-pixle-sorted", {"attack_limit": 0}, r"attack_limit pixel counts must be >= 1, got 0"),
])
def test_settings_the_audit_found_accepted_are_refused(name: str, settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_attack(name, **settings)


def test_torchattacks_failures_on_user_settings_are_one_line(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    # in range for advkit's table, but DI-FGSM resizes the 8x8 digits to 0x0 and torch raises inside torchattacks
    with pytest.raises(SettingsError) as caught:
        create_attack("difgsm", resize_rate=0.1)(digits_model, *batch)
    assert "\n" not in str(caught.value) and "resize_rate=0.1" in str(caught.value)
    with pytest.raises(SettingsError, match="x_dimensions=\\(5, 2\\)"):  # torchattacks' own check, raised at run time
        create_attack("ta-pixle", x_dimensions=[5, 2], restarts=1, max_iterations=1)(digits_model, *batch)


def test_torchattacks_failures_with_default_settings_stay_tracebacks(
    digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchattacks

    def broken(self: object, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a bug inside the attack")

    monkeypatch.setattr(torchattacks.FGSM, "forward", broken)
    with pytest.raises(RuntimeError, match="a bug inside the attack") as caught:
        create_attack("fgsm")(digits_model, *batch)  # nothing the user set can be blamed
    assert not isinstance(caught.value, SettingsError)


def test_least_likely_targets_are_never_the_label(digits: ImageDataset, digits_model: ModelWrapper) -> None:
    """With misclassified samples attacked too, the least likely class can be the label; the target is the next one."""
    plan = select_samples(digits_model, digits, n=300, seed=0, only_correct=False, target="least-likely")
    labels = digits.labels[plan.attack_index]
    assert plan.target is not None and len(plan.target) == 300 and not (plan.target == labels).any()
    x, _ = digits.batch(plan.attack_index)
    with torch.no_grad():
        logits = digits_model.logits(x)
    masked = logits.scatter(1, torch.from_numpy(labels).unsqueeze(1), float("inf"))
    assert plan.target.tolist() == masked.argmin(1).tolist()


def test_transfer_of_no_pairs_is_one_line(digits: ImageDataset, digits_model: ModelWrapper) -> None:
    import numpy as np

    from advkit.attacks.transfer import run_direction

    with pytest.raises(AdvkitError, match=r"no pairs to transfer \(empty index\)"):  # was an IndexError
        run_direction(create_attack("pixle"), digits_model, digits_model, digits, digits, np.zeros(0, np.int64))
