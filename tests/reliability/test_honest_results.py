"""Honest results: success re-verified by an independent forward pass, AutoAttack-style sanity flags recorded and
shown, query budgets enforced and every model evaluation counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from advkit.attacks import create_attack
from advkit.attacks.runner import select_samples
from advkit.attacks.sanity import attack_mix_flags, model_flags, pixel_budget, threat_model, warnings_for
from advkit.datasets import ImageDataset
from advkit.models import ModelWrapper, load_checkpoint
from advkit.report import Report
from tests.reliability.conftest import write_module


@pytest.fixture(scope="module")
def batch(digits: ImageDataset, digits_model: ModelWrapper) -> tuple[torch.Tensor, torch.Tensor]:
    plan = select_samples(digits_model, digits, n=12, seed=3)
    return digits.batch(plan.attack_index)


def _wrap(net: nn.Module, like: ModelWrapper) -> ModelWrapper:
    return ModelWrapper(net, like.preprocessing)


class _Softmaxed(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


class _Noisy(nn.Module):
    """Randomised: Gaussian noise on the input at every call (a 'defence' by randomness)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.1 * torch.randn_like(x))


class _PartlyDetached(nn.Module):
    """Input gradient cut for images whose mean pixel is above a threshold (a per-sample gradient mask)."""

    def __init__(self, net: nn.Module, threshold: float) -> None:
        super().__init__()
        self.net, self.threshold = net, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masked = x.flatten(1).mean(1) > self.threshold
        return torch.where(masked[:, None], self.net(x.detach()), self.net(x))


def test_a_plain_classifier_raises_no_flag(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    flags = model_flags(digits_model, *batch)
    assert flags == {"sanity.softmax_output": False, "sanity.randomized": False, "sanity.zero_gradients": False,
                     "sanity.zero_gradient_fraction": 0.0}


def test_softmax_outputs_are_flagged(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    flags = model_flags(_wrap(_Softmaxed(digits_model.net), digits_model), *batch)
    assert flags["sanity.softmax_output"] and not flags["sanity.randomized"]


def test_randomised_models_are_flagged(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    flags = model_flags(_wrap(_Noisy(digits_model.net), digits_model), *batch)
    assert flags["sanity.randomized"] and not flags["sanity.softmax_output"]


def test_zero_gradients_are_flagged_per_sample(digits_model: ModelWrapper, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    means = digits_model.normalise(x).flatten(1).mean(1)  # what the net sees
    threshold = float(means.median())
    expected = float((means > threshold).float().mean())
    assert 0 < expected < 1  # the mask really splits the batch
    flags = model_flags(_wrap(_PartlyDetached(digits_model.net, threshold), digits_model), x, y)
    assert flags["sanity.zero_gradients"] and flags["sanity.zero_gradient_fraction"] == pytest.approx(expected)
    everything = model_flags(_wrap(_PartlyDetached(digits_model.net, -1.0), digits_model), x, y)
    assert everything["sanity.zero_gradient_fraction"] == 1.0
    assert "sanity.zero_gradients" not in model_flags(digits_model, x, y, gradients=False)


def test_black_box_beating_white_box_is_judged_within_a_threat_model() -> None:
    same = {"square": {"eps": 0.1, "norm": "Linf"}, "pgd": {"eps": 0.1}}
    assert attack_mix_flags({"square": 0.2, "pgd": 0.5}, same)["sanity.black_box_beats_white_box"] is True
    assert attack_mix_flags({"square": 0.6, "pgd": 0.5}, same)["sanity.black_box_beats_white_box"] is False
    assert attack_mix_flags({"square": 0.5, "pgd": 0.5}, same)["sanity.black_box_beats_white_box"] is False
    # different budgets, or an L0 attack against an L-inf one, are not comparable: no flag at all
    assert attack_mix_flags({"square": 0.2, "pgd": 0.5}, {"square": {"eps": 0.3}, "pgd": {"eps": 0.1}}) == {}
    assert attack_mix_flags({"pixle": 0.0, "fgsm": 0.9}) == {}
    # pixel movers compare only at the same pixel budget (the demo's pixle moves up to 300 pixels, white-pixle 10)
    ten = {"pixle": {"x_dimensions": [1, 1], "y_dimensions": [1, 1], "restarts": 10}, "white-pixle": {"restarts": 2, "max_iterations": 5}}
    assert attack_mix_flags({"pixle": 0.0, "white-pixle": 0.4}, ten)["sanity.black_box_beats_white_box"] is True
    demo = {"pixle": {"x_dimensions": [2, 10], "y_dimensions": [2, 10], "restarts": 3, "max_iterations": 4},
            "white-pixle": {"pixels_per_iteration": [1, 1], "restarts": 2, "max_iterations": 5}}
    assert attack_mix_flags({"pixle": 0.0, "white-pixle": 0.5}, demo) == {}
    assert attack_mix_flags({"pixle": 0.0, "white-pixle": 0.4}, {"pixle": {"x_dimensions": [0.1, 0.2]}}) == {}  # a fraction: no budget
    assert pixel_budget("pixle", {"x_dimensions": [1, 3], "y_dimensions": [2, 2], "restarts": 4, "max_iterations": 7, "update_each_iteration": True, "swap": True}) == 84
    assert pixel_budget("white-pixle-sorted", {"attack_limit": 0.1}) is None and pixel_budget("jsma", {}) is None
    # L0 attacks that change pixel values have budgets of their own: pixle beating jsma says nothing of masking
    assert attack_mix_flags({"pixle": 0.0, "jsma": 0.3}) == {} and attack_mix_flags({"onepixel": 0.1, "sparsefool": 0.5}) == {}
    assert threat_model("square", {"norm": "L2", "eps": 0.5}) == threat_model("pgdl2", {"eps": 0.5})
    # the warning names the two attacks it compared and their threat model, not only the numbers
    flags = attack_mix_flags({"pixle": 0.0, "white-pixle": 0.1, "pgd": 0.0, "square": 0.3}, {**same, **ten})
    assert (flags["sanity.black_box_attack"], flags["sanity.white_box_attack"], flags["sanity.threat_model"]) == ("pixle", "white-pixle", "l0 <= 10 pixels")
    assert warnings_for(flags) == ["gradient-free pixle left robust accuracy 0, below the 0.1 of white-pixle, the best "
                                   "gradient attack of the same threat model (l0 <= 10 pixels): a sign of gradient masking"]
    assert attack_mix_flags({"square": 0.2, "pgd": 0.5}, same)["sanity.threat_model"] == "linf eps 0.1"


class _Liar(nn.Module):
    """Claims every image is a '1-off' class for its first ``lies`` calls, then tells the truth."""

    def __init__(self, net: nn.Module, lies: int) -> None:
        super().__init__()
        self.net, self.lies, self.calls = net, lies, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = self.net(x)
        return logits.roll(1, dims=1) if self.calls <= self.lies else logits


@pytest.mark.parametrize("name", ["pixle", "white-pixle", "fgsm"])
def test_success_comes_from_an_independent_forward_pass(name: str, digits_model: ModelWrapper,
                                                        batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A model that fools the attack while it queries is caught by the base's own check afterwards."""
    x, y = batch
    settings = {"pixle": {"restarts": 2, "max_iterations": 2}, "white-pixle": {"restarts": 2, "max_iterations": 2}}
    attack = create_attack(name, **settings.get(name, {}))
    probe = _Liar(digits_model.net, lies=10**9)
    attack(_wrap(probe, digits_model), x, y)
    liar = _Liar(digits_model.net, lies=probe.calls - 1)  # lies on every call the attack makes, not on the check
    result = attack(_wrap(liar, digits_model), x, y)
    assert liar.calls == probe.calls
    with torch.no_grad():
        honest = digits_model.logits(result.x_adv).argmax(1)
    assert torch.equal(result.adv_pred, honest)
    assert torch.equal(result.success, honest.ne(y))


def test_cli_flags_are_recorded_and_shown(cli, digits_checkpoint: Path, factories: Path, tmp_path: Path) -> None:
    write_module(factories, "suspicious_models", f"""
        import torch
        from advkit.models import load_checkpoint

        class NoisySoftmax(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return torch.softmax(self.net(x + 0.05 * torch.randn_like(x)), dim=1)

        def build():
            loaded = load_checkpoint({str(digits_checkpoint)!r})
            net = NoisySoftmax(loaded.net)
            net.advkit_preprocessing = loaded.preprocessing
            return net
    """)
    common = ["--data", "digits", "--n", "8", "--param", "pixle.restarts=2", "--param", "pixle.max_iterations=2"]
    flagged = cli("attack", "pixle", "fgsm", "--model", "suspicious_models:build", *common, "--out", "flagged.h5")
    assert flagged.code == 0, flagged.stderr
    warnings = [line for line in flagged.stderr.splitlines() if line.startswith("warning:")]
    assert any("already probabilities" in w for w in warnings) and any("randomised" in w for w in warnings)
    assert len(warnings) == len(set(warnings))  # each flag once, not once per attack
    for run in ("attack-pixle", "attack-fgsm"):
        summary = Report(tmp_path / "flagged.h5").read(run).summary
        assert summary["sanity.softmax_output"] is True and summary["sanity.randomized"] is True
    clean = cli("attack", "pixle", "fgsm", "--model", digits_checkpoint, *common, "--out", "clean.h5")
    assert clean.code == 0, clean.stderr
    assert "warning:" not in clean.stderr
    summary = Report(tmp_path / "clean.h5").read("attack-fgsm").summary
    assert (summary["sanity.softmax_output"], summary["sanity.randomized"], summary["sanity.zero_gradients"]) == (False, False, False)
    worst = Report(tmp_path / "clean.h5").read("attack-worst-case").summary
    assert not any(k.startswith("sanity.black_box") for k in worst)  # pixle (L0) and fgsm (L-inf): not comparable


def test_cli_reports_what_an_independent_forward_pass_sees(cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    """Recompute every stored adversarial image's prediction with the checkpoint: the report must agree."""
    result = cli("attack", "pixle", "pgd", "--model", digits_checkpoint, "--data", "digits", "--n", "24", "--include-misclassified",
                 "--param", "pixle.restarts=1", "--param", "pixle.max_iterations=1", "--param", "pgd.eps=0.1",
                 "--param", "pgd.steps=4", "--save-images", "--out", "r.h5")
    assert result.code == 0, result.stderr
    loaded = load_checkpoint(digits_checkpoint)
    model = ModelWrapper(loaded.net, loaded.preprocessing)
    for run in ("attack-pixle", "attack-pgd"):  # PGD's images are off the k/255 grid: float16 storage once flipped one
        samples = Report(tmp_path / "r.h5").read(run, images=True).samples
        assert samples["adv_images"].dtype == np.float32
        with torch.no_grad():
            pred = model.logits(torch.from_numpy(samples["adv_images"])).argmax(1).numpy()
        np.testing.assert_array_equal(pred, samples["adv_pred"])
        np.testing.assert_array_equal(samples["success"], samples["attacked"] & (pred != samples["label"]))
        assert samples["success"].any() and not samples["success"].all()  # both outcomes were checked


class _RowCounter(nn.Module):
    """Counts every input row the net evaluates, behind the wrapper's back."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.net(x)


@pytest.mark.parametrize("name, settings", [
    ("pixle", {"restarts": 6, "max_iterations": 6}),
    ("white-pixle", {"restarts": 3, "max_iterations": 6}),
    ("white-pixle-sorted", {"attack_limit": 8}),
])
@pytest.mark.parametrize("budget", [None, 4])
def test_every_model_evaluation_is_counted_and_budgets_hold(name: str, settings: dict, budget: int | None, digits_model: ModelWrapper,
                                                            batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    counter = _RowCounter(digits_model.net)
    result = create_attack(name, **settings)(_wrap(counter, digits_model), x, y, max_queries=budget)
    assert counter.rows == int(result.queries.sum()) + len(x)  # + the uncounted verification pass
    if budget is not None:
        assert int(result.queries.max()) <= budget
        unlimited = create_attack(name, **settings)(digits_model, x, y)
        assert bool((unlimited.queries > budget).any()), "the budget must bind for the test to mean anything"
        assert bool((result.queries == budget).any())


def test_cli_query_budget(cli, digits_checkpoint: Path, tmp_path: Path) -> None:
    args = ["--model", digits_checkpoint, "--data", "digits", "--n", "12", "--targeted", "random",
            "--param", "pixle.restarts=10", "--param", "pixle.max_iterations=10", "--param", "square.n_queries=50"]
    free = cli("attack", "pixle", "square", *args, "--out", "free.h5")
    capped = cli("attack", "pixle", "square", *args, "--max-queries", "6", "--out", "capped.h5")
    assert free.code == 0 and capped.code == 0, capped.stderr
    for run in ("attack-pixle", "attack-square"):
        unlimited = Report(tmp_path / "free.h5").read(run).samples["queries"]
        queries = Report(tmp_path / "capped.h5").read(run).samples["queries"]
        assert unlimited.max() > 6, run  # the budget binds
        assert queries.max() <= 6, run
